//! `retentiond check --suggest`: a proposal instead of a blank page. For every unclassified
//! column of the customers table (anonymise venues) and of each linked table whose rows stay, a
//! ready-to-paste TOML line with a proposed strategy and why, judged from the column's name and
//! type and from a sample of its values, which are read but never printed.

use crate::check::{unclassified_columns, unclassified_reference_columns};
use crate::config::Config;
use crate::db::{Db, Ident};
use crate::introspect::{self, ColumnInfo};
use crate::policy::Action;
use anyhow::Result;

/// The proposed strategy of one column and the reason, in words.
pub fn propose(column: &ColumnInfo, sample: &[String]) -> (String, &'static str) {
    let name = column.name.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
    let share = |test: &dyn Fn(&str) -> bool| {
        if sample.is_empty() {
            0.0
        } else {
            sample.iter().filter(|v| test(v)).count() as f64 / sample.len() as f64
        }
    };
    let emails = share(&|v| v.contains('@') && v.contains('.') && !v.contains(' '));
    let phones = share(&|v| {
        let digits = v.chars().filter(char::is_ascii_digit).count();
        (7..=15).contains(&digits) && v.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c))
    });
    let textual = column.is_textual();
    // Where times are kept as text (SQLite), its declared type or its values say whether it is one.
    let looks_like_time = |v: &str| {
        crate::db::parse_time_text(v).is_ok()
            || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
    };
    let temporal = if column.kind.time_as_text {
        column.data_type.contains("date")
            || column.data_type.contains("time")
            || (!sample.is_empty() && sample.iter().all(|v| looks_like_time(v)))
    } else {
        column.is_temporal()
    };
    // A NOT NULL column cannot be emptied: its text is redacted instead.
    let remove = || if column.not_null { "redact" } else { "null" }.to_string();
    if has(&["birth", "dob", "born"]) && temporal {
        return ("year".into(), "a date of birth: only the year is kept");
    }
    if textual && (has(&["email", "e_mail", "mail"]) || emails > 0.8) {
        return (
            "hash".into(),
            "email addresses: replaced by a keyed hash (needs secrets.hash_key)",
        );
    }
    // A date or time is kept before any guess from its digits: "2027-03-14" has a phone
    // number's digits, and redacting a performance date destroys it.
    if temporal {
        return ("keep".into(), "a date or time: kept");
    }
    if has(&["phone", "mobile", "tel", "fax"]) || (textual && phones > 0.8) {
        return (
            remove(),
            "phone numbers: removed (too few digits to hash safely)",
        );
    }
    if textual && has(&["postcode", "post_code", "postal", "zip"]) {
        return (
            "prefix:4".into(),
            "a postcode: only its district (first 4 characters) is kept",
        );
    }
    if !textual || temporal {
        return ("keep".into(), "an id, amount, flag or time: kept");
    }
    if name == "id" || name.ends_with("_id") || name.ends_with("_type") || name.ends_with("_status")
    {
        return ("keep".into(), "an id or code: kept");
    }
    (remove(), "free text (names, addresses, notes): removed")
}

async fn lines(
    db: &Db,
    table: &Ident,
    columns: &[ColumnInfo],
    unclassified: &[String],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in unclassified {
        let Some(info) = columns.iter().find(|c| &c.name == name) else {
            continue;
        };
        let values = introspect::sample(db, table, name, introspect::SAMPLE).await?;
        let (strategy, why) = propose(info, &values);
        out.push(format!("{name} = \"{strategy}\"   # {why}"));
    }
    Ok(out)
}

/// The proposal: comment headers saying where to paste, each followed by its lines.
pub async fn suggest(db: &Db, config: &Config) -> Result<Vec<String>> {
    let s = &config.schema;
    let mut out = Vec::new();
    let customers = introspect::columns(db, &s.customers)
        .await?
        .unwrap_or_default();
    for (i, venue) in config.venues.iter().enumerate() {
        if !venue.actions().contains(&Action::Anonymise) {
            continue;
        }
        let unclassified = unclassified_columns(config, venue, &customers);
        if !unclassified.is_empty() {
            if !venue.anonymise_written {
                out.push(format!(
                    "# add to venues[{i}] ({}), after its other keys:",
                    venue.name
                ));
                out.push("[venues.anonymise]".into());
            } else {
                out.push(format!(
                    "# add under [venues.anonymise] of venues[{i}] ({}):",
                    venue.name
                ));
            }
            out.extend(lines(db, &s.customers, &customers, &unclassified).await?);
        }
    }
    for (i, r) in s.references.iter().enumerate() {
        let actions: Vec<&str> = config
            .venues
            .iter()
            .flat_map(|v| v.actions())
            .filter(|a| r.rows_stay(*a))
            .map(|a| a.as_str())
            .collect();
        if actions.is_empty() {
            continue;
        }
        let columns = introspect::columns(db, &r.table).await?.unwrap_or_default();
        let unclassified = unclassified_reference_columns(r, &columns);
        if !unclassified.is_empty() {
            out.push(format!(
                "# add under [schema.references.columns] of schema.references[{i}] ({}):",
                r.table
            ));
            out.extend(lines(db, &r.table, &columns, &unclassified).await?);
        }
    }
    out.extend(unlisted_references(db, config).await?);
    Ok(out)
}

/// Paste-ready `[[schema.references]]` entries for the foreign keys into the customers table,
/// or into a linked table whose rows are deleted, that the configuration does not list (a
/// delete would otherwise fail on them). What happens to their rows is the operator's choice:
/// the proposal names both options and picks the one that loses nothing by surprise.
async fn unlisted_references(db: &Db, config: &Config) -> Result<Vec<String>> {
    let s = &config.schema;
    let mut out = Vec::new();
    let listed = |t: &str, c: &str| {
        s.references
            .iter()
            .any(|r| r.table.name() == t && r.column.name() == c)
    };
    if introspect::columns(db, &s.customers).await?.is_some() {
        for (table, column) in introspect::foreign_keys_to(db, &s.customers).await? {
            if table == s.customers.name() || listed(&table, &column) {
                continue;
            }
            out.push(format!(
                "# add to [schema]: foreign key {table}.{column} points at {} but is not listed",
                s.customers
            ));
            out.push("[[schema.references]]".into());
            out.push(format!("table = \"{table}\""));
            out.push(format!("column = \"{column}\""));
            out.push("on_delete = \"delete\"       # its rows go with the customer (on anonymise too); or \"reassign\" to keep them on the Unknown Customer, classifying its columns".into());
        }
    }
    for r in s.references.iter().filter(|r| r.via.is_none()) {
        if introspect::columns(db, &r.table).await?.is_none() {
            continue;
        }
        for (table, column) in introspect::foreign_keys_to(db, &r.table).await? {
            if table == r.table.name() || listed(&table, &column) {
                continue;
            }
            out.push(format!(
                "# add to [schema]: foreign key {table}.{column} points at {} but is not listed",
                r.table
            ));
            out.push("[[schema.references]]".into());
            out.push(format!("table = \"{table}\""));
            out.push(format!("column = \"{column}\""));
            out.push(format!("via = \"{}\"", r.table.name()));
            out.push(format!(
                "via_key = \"id\"            # the {} column that {table}.{column} holds",
                r.table.name()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::TypeKind;

    fn column(name: &str, data_type: &str, kind: TypeKind) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            not_null: false,
            has_default: false,
            primary_key: false,
            kind,
        }
    }

    fn sqlite_text() -> TypeKind {
        TypeKind {
            textual: true,
            time_as_text: true,
            ..TypeKind::default()
        }
    }

    #[test]
    fn a_date_is_kept_not_taken_for_a_phone_number() {
        let dates = vec!["2027-03-14".to_string(), "2026-12-01".to_string()];
        let declared = column("performance_date", "date", sqlite_text());
        assert_eq!(propose(&declared, &dates).0, "keep");
        let undeclared = column("performance_on", "text", sqlite_text());
        assert_eq!(propose(&undeclared, &dates).0, "keep");
        let times = vec!["2026-12-01 19:30:00".to_string()];
        assert_eq!(propose(&undeclared, &times).0, "keep");
    }

    #[test]
    fn phone_numbers_and_birth_dates_are_still_found() {
        let phones = vec!["07700 900123".to_string(), "+44 20 7946 0958".to_string()];
        assert_eq!(
            propose(&column("contact", "text", sqlite_text()), &phones).0,
            "null"
        );
        let births = vec!["1980-05-17".to_string()];
        assert_eq!(
            propose(&column("date_of_birth", "date", sqlite_text()), &births).0,
            "year"
        );
        let emails = vec!["a@b.example".to_string()];
        let (strategy, why) = propose(&column("contact_email", "text", sqlite_text()), &emails);
        assert_eq!(strategy, "hash");
        assert!(why.contains("secrets.hash_key"), "{why}");
    }
}
