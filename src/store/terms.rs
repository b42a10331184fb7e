//! A pending report's search index (SPEC 4, "a search within the report"): when a report is
//! made, the keyed hash of each of its customers' name columns and email, lowercased, is written
//! to `retention_report_terms`. A search for a whole first name, last name or email address (or
//! for several whole names, "Jane Smith") then finds its customers anywhere in the report through
//! the index, at the cost of a page, however large the report. Anything else (part of a name)
//! is searched a window of the report at a time, as before (`web::pages`).
//!
//! The hashes are computed by the database with the same keyed hash as anonymisation
//! (`Backend::keyed_hash_sql`, `secrets.hash_key`), for the stored names and for the searched
//! text alike, so both are lowercased by the same `lower()`. They are pseudonymised personal data:
//! a report's terms are deleted in the transaction that moves it out of pending and approved
//! (`crate::transition::change_state`, as `policy::TRANSITIONS` says), before any of its
//! customers is touched. Without a `hash_key` no index
//! is written and every search reads windows.

use crate::config::SchemaConfig;
use crate::db::{Backend, Db, Query, Tx};
use anyhow::Result;

/// The SQL of the term of `expr`: the first 16 hex digits (64 bits) of its keyed hash,
/// lowercased and trimmed.
fn term_sql(
    backend: Backend,
    key: &[u8],
    expr: &str,
    bind: &mut dyn FnMut(String) -> String,
) -> String {
    let hashed = backend.keyed_hash_sql(key, &format!("lower(trim({expr}))"), bind);
    format!("substr({hashed}, 1, 16)")
}

/// Writes the terms of every customer of `report_id` (its items are already frozen), in the
/// report's own transaction. Returns how many terms were written.
pub async fn index_report(
    tx: &mut Tx<'_>,
    schema: &SchemaConfig,
    key: &[u8],
    report_id: i64,
) -> Result<u64> {
    let backend = tx.backend();
    let columns: Vec<_> = schema
        .display_name
        .iter()
        .chain(schema.display_email.iter())
        .collect();
    if columns.is_empty() {
        return Ok(0);
    }
    let mut q =
        Query::new("INSERT INTO retention_report_terms (report_id, term, customer_id) SELECT ");
    q.bind(report_id).push(", t.term, t.customer_id FROM (");
    for (n, column) in columns.iter().enumerate() {
        if n > 0 {
            // UNION, not UNION ALL: a customer whose first and last names are one word has
            // that term once.
            q.push(" UNION ");
        }
        let value = backend.cast_text(&format!("c.{}", column.q()));
        let term = term_sql(backend, key, &value, &mut |v| q.param(v));
        q.push(&format!(
            "SELECT i.customer_id, {term} AS term FROM retention_report_items i JOIN {} c ON c.{} = i.customer_id WHERE i.report_id = ",
            schema.customers.q(),
            schema.customer_id.q()
        ))
        .bind(report_id)
        .push(&format!(" AND {value} IS NOT NULL AND {value} <> ''"));
    }
    // In the index's order: each insert lands next to the one before, instead of anywhere in
    // the primary key's tree.
    q.push(") t ORDER BY t.term, t.customer_id");
    tx.execute(&q).await
}

/// Deletes the terms of `report_id` (it no longer shows its customers, or is about to touch
/// them).
pub async fn forget_report(tx: &mut Tx<'_>, report_id: i64) -> Result<()> {
    let mut q = Query::new("DELETE FROM retention_report_terms WHERE report_id = ");
    q.bind(report_id);
    tx.execute(&q).await?;
    Ok(())
}

/// What a search text looks up: the whole text, and each distinct word of it when it has more
/// than one ("Jane Smith" finds customers named Jane Smith as well as a last name "Jane Smith").
pub fn lookups(text: &str) -> (String, Vec<String>) {
    let whole = text.trim().to_string();
    let mut words: Vec<String> = Vec::new();
    for word in whole.split_whitespace() {
        if !words
            .iter()
            .any(|w| w.to_lowercase() == word.to_lowercase())
        {
            words.push(word.to_string());
        }
    }
    if words.len() < 2 {
        words.clear();
    }
    (whole, words)
}

/// Ids of the customers of `report_id` after `after_id`, in id order, at most `limit`, whose
/// name or email is the search `text` as a whole (or who have every word of it as a whole name);
/// `None` when the index knows no customer of the report for it at all, so the caller searches
/// within names instead.
pub async fn find(
    db: &Db,
    key: &[u8],
    report_id: i64,
    text: &str,
    after_id: i64,
    limit: u32,
) -> Result<Option<Vec<i64>>> {
    let backend = db.backend();
    let (whole, words) = lookups(text);
    // The terms of the searched text, hashed by the database as the stored ones were.
    let mut q = Query::new("SELECT ");
    for (n, text) in std::iter::once(&whole).chain(&words).enumerate() {
        if n > 0 {
            q.push(", ");
        }
        let placeholder = q.param(text.clone());
        let term = term_sql(backend, key, &placeholder, &mut |v| q.param(v));
        q.push(&term);
    }
    let row = db.fetch_one(&q).await?;
    let terms: Vec<String> = (0..1 + words.len())
        .map(|i| row.text(i))
        .collect::<Result<_>>()?;
    let ids = matching(db, report_id, &terms, after_id, limit).await?;
    if ids.is_empty()
        && after_id != i64::MIN
        && !matching(db, report_id, &terms, i64::MIN, 1)
            .await?
            .is_empty()
    {
        // A later page of an indexed search, past its last match.
        return Ok(Some(ids));
    }
    Ok((!ids.is_empty()).then_some(ids))
}

/// The customers of `report_id` after `after_id` with the term `terms[0]`, or with every one of
/// `terms[1..]`.
async fn matching(
    db: &Db,
    report_id: i64,
    terms: &[String],
    after_id: i64,
    limit: u32,
) -> Result<Vec<i64>> {
    let mut q = Query::new("SELECT customer_id FROM retention_report_terms WHERE report_id = ");
    q.bind(report_id);
    if terms.len() == 1 {
        q.push(" AND term = ")
            .bind(terms[0].clone())
            .push(" AND customer_id > ")
            .bind(after_id);
    } else {
        q.push(" AND term IN (");
        for (n, term) in terms.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.bind(term.clone());
        }
        q.push(") AND customer_id > ")
            .bind(after_id)
            .push(" GROUP BY customer_id HAVING MAX(CASE WHEN term = ")
            .bind(terms[0].clone())
            .push(" THEN 1 ELSE 0 END) = 1 OR COUNT(*) >= ")
            .bind((terms.len() - 1) as i64);
    }
    q.push(" ORDER BY customer_id LIMIT ")
        .bind(i64::from(limit));
    db.fetch_all(&q).await?.iter().map(|r| r.i64(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::lookups;

    #[test]
    fn a_search_looks_up_the_whole_text_and_its_distinct_words() {
        assert_eq!(lookups("  Smith "), ("Smith".to_string(), vec![]));
        assert_eq!(
            lookups("Jane  Smith"),
            (
                "Jane  Smith".to_string(),
                vec!["Jane".to_string(), "Smith".to_string()]
            )
        );
        assert_eq!(
            lookups("Smith smith"),
            ("Smith smith".to_string(), vec![]),
            "one word twice is one word"
        );
    }
}
