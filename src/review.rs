//! The approver's review (SPEC 4): reading the ids an approver pastes, and the customers kept out
//! of a pending report (who kept each, when and why). Keeping and putting back are decisions,
//! taken in `decision`. Kept customers are never touched by the report, get the outcome `kept`
//! when it is applied, and are not selected again for `approval.keep_for`.

use anyhow::Result;

/// The most ids one request may name.
pub const MAX_IDS: usize = 100_000;

/// A list of ids that could not be read; nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadIds(pub String);

/// Customer ids from a text box or form field: separated by commas, spaces or new lines (as
/// pasted from the CSV), duplicates dropped. A word that is not an id is named.
pub fn parse_ids(text: &str) -> Result<Vec<i64>, BadIds> {
    let mut ids = Vec::new();
    for word in text
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let id = word.parse::<i64>().map_err(|_| {
            let shown: String = word.chars().take(40).collect();
            BadIds(format!(
                "{shown:?} is not a customer id; nothing was changed"
            ))
        })?;
        ids.push(id);
        if ids.len() > MAX_IDS {
            return Err(BadIds(format!(
                "at most {MAX_IDS} ids at once; nothing was changed"
            )));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(BadIds("no customer id given; nothing was changed".into()));
    }
    Ok(ids)
}

pub use crate::store::items::forget_keep_reasons;
pub use crate::store::listing::{kept_list, KeptCustomer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_commas_spaces_and_lines() {
        assert_eq!(parse_ids("3, 1\n2 2\t7;9").unwrap(), vec![1, 2, 3, 7, 9]);
        assert_eq!(
            parse_ids("1, two, 3").unwrap_err(),
            BadIds("\"two\" is not a customer id; nothing was changed".into())
        );
        assert!(matches!(parse_ids(" , \n"), Err(BadIds(_))));
        let many: String = (0..=MAX_IDS).map(|i| format!("{i},")).collect();
        assert!(matches!(parse_ids(&many), Err(BadIds(m)) if m.contains("at most")));
    }
}
