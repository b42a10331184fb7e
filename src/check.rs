//! `retentiond check`: the configuration against the live database. Each problem is one line
//! naming the table, column or key; the anonymise guard reuses the unclassified-column test.

use crate::config::{Config, OnDelete, VenueConfig};
use crate::db::{Db, Ident};
use crate::introspect::{self, ColumnInfo};
use crate::migrate;
use crate::policy::{Action, Strategy};
use anyhow::Result;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct CheckReport {
    /// Would make a cycle fail or do the wrong thing.
    pub problems: Vec<String>,
    /// Worth fixing, but not blocking (e.g. a missing index).
    pub warnings: Vec<String>,
}

/// Customers columns that an anonymise venue leaves unclassified (SPEC 3).
pub fn unclassified_columns(
    config: &Config,
    venue: &VenueConfig,
    columns: &[ColumnInfo],
) -> Vec<String> {
    let structural: Vec<&str> = config
        .schema
        .structural_columns()
        .iter()
        .map(|c| c.name())
        .collect();
    columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| {
            !structural.contains(name)
                && !venue.anonymise.iter().any(|(col, _)| col.name() == *name)
        })
        .map(str::to_string)
        .collect()
}

/// An anonymise venue's configuration does not classify every customers column: a
/// configuration error found against the live database.
#[derive(Debug, thiserror::Error)]
#[error("{file}: venues.anonymise of venue {venue_id}: anonymise refused: unclassified customers column(s) {columns}")]
pub struct UnclassifiedColumns {
    pub file: String,
    pub venue_id: i64,
    pub columns: String,
}

/// Fails with [`UnclassifiedColumns`] when the customers table has a column that an anonymise
/// venue does not classify (a column added by someone else must not silently keep personal data).
pub async fn ensure_all_classified(db: &Db, config: &Config, venue: &VenueConfig) -> Result<()> {
    if venue.action != Action::Anonymise {
        return Ok(());
    }
    let columns = introspect::columns(db, &config.schema.customers)
        .await?
        .unwrap_or_default();
    let unclassified = unclassified_columns(config, venue, &columns);
    if !unclassified.is_empty() {
        return Err(UnclassifiedColumns {
            file: config.file.clone(),
            venue_id: venue.id,
            columns: unclassified.join(", "),
        }
        .into());
    }
    Ok(())
}

pub async fn run(db: &Db, config: &Config) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let backend = db.backend();
    let s = &config.schema;

    let version = migrate::current_version(db).await?;
    if version != migrate::latest_version() {
        report.problems.push(format!(
            "retentiond tables are at version {version}, this build needs {}: run `retentiond migrate`",
            migrate::latest_version()
        ));
    }

    let mut tables: HashMap<String, Option<Vec<ColumnInfo>>> = HashMap::new();
    let mut wanted: Vec<(&str, &Ident, &Ident)> = vec![
        ("schema.customer_id", &s.customers, &s.customer_id),
        ("schema.customer_venue", &s.customers, &s.customer_venue),
        (
            "schema.customer_created_at",
            &s.customers,
            &s.customer_created_at,
        ),
        ("schema.order_customer", &s.orders, &s.order_customer),
        ("schema.order_placed_at", &s.orders, &s.order_placed_at),
    ];
    if let Some(hold) = &s.legal_hold {
        wanted.push(("schema.legal_hold", &s.customers, hold));
    }
    for c in &s.customer_activity {
        wanted.push(("schema.customer_activity", &s.customers, c));
    }
    for c in &s.display_name {
        wanted.push(("schema.display_name", &s.customers, c));
    }
    if let Some(c) = &s.display_email {
        wanted.push(("schema.display_email", &s.customers, c));
    }
    for r in &s.references {
        wanted.push(("schema.references", &r.table, &r.column));
    }
    for (key, table, _) in &wanted {
        if !tables.contains_key(table.name()) {
            let cols = introspect::columns(db, table).await?;
            if cols.is_none() {
                report
                    .problems
                    .push(format!("{key}: table {table} does not exist"));
            }
            tables.insert(table.name().to_string(), cols);
        }
    }
    let column = |table: &Ident, column: &Ident| -> Option<ColumnInfo> {
        tables
            .get(table.name())?
            .as_ref()?
            .iter()
            .find(|c| c.name == column.name())
            .cloned()
    };
    for (key, table, col) in &wanted {
        if tables.get(table.name()).is_some_and(Option::is_some) && column(table, col).is_none() {
            report
                .problems
                .push(format!("{key}: column {table}.{col} does not exist"));
        }
    }
    let mut temporal = vec![
        (
            "schema.customer_created_at",
            &s.customers,
            &s.customer_created_at,
        ),
        ("schema.order_placed_at", &s.orders, &s.order_placed_at),
    ];
    temporal.extend(
        s.customer_activity
            .iter()
            .map(|c| ("schema.customer_activity", &s.customers, c)),
    );
    for (key, table, col) in temporal {
        if let Some(info) = column(table, col) {
            if !info.is_temporal(backend) {
                report.problems.push(format!(
                    "{key}: column {table}.{col} has type {}, expected a date or timestamp",
                    info.data_type
                ));
            }
        }
    }
    if let Some(hold) = &s.legal_hold {
        if let Some(info) = column(&s.customers, hold) {
            if !info.is_flag(backend) {
                report.problems.push(format!(
                    "schema.legal_hold: column {}.{hold} has type {}, expected a boolean",
                    s.customers, info.data_type
                ));
            }
        }
    }

    if tables.get(s.customers.name()).is_some_and(Option::is_some) {
        let references_listed = |t: &str, c: &str| {
            s.references
                .iter()
                .any(|r| r.table.name() == t && r.column.name() == c)
        };
        for (table, col) in introspect::foreign_keys_to(db, &s.customers).await? {
            if table != s.customers.name() && !references_listed(&table, &col) {
                report.problems.push(format!(
                    "schema.references: foreign key {table}.{col} points at {} but is not listed; deleting a customer it references would fail",
                    s.customers
                ));
            }
        }
        let any_delete = config.venues.iter().any(|v| v.action == Action::Delete);
        if any_delete
            && !s.references.iter().any(|r| {
                r.table == s.orders
                    && r.column == s.order_customer
                    && r.on_delete == OnDelete::Reassign
            })
        {
            report.problems.push(format!(
                "schema.references: {}.{} is not listed with on_delete = \"reassign\"; a delete venue would lose order history",
                s.orders, s.order_customer
            ));
        }
        let customers_columns = tables
            .get(s.customers.name())
            .cloned()
            .flatten()
            .unwrap_or_default();
        for (i, venue) in config.venues.iter().enumerate() {
            check_venue(db, config, i, venue, &customers_columns, &mut report).await?;
        }
    }
    if tables.get(s.orders.name()).is_some_and(Option::is_some) {
        let leading = introspect::index_leading_columns(db, &s.orders).await?;
        if !leading.iter().any(|c| c == s.order_customer.name()) {
            report.warnings.push(format!(
                "schema.orders: no index on {}({}, {}); selection will scan the orders table",
                s.orders, s.order_customer, s.order_placed_at
            ));
        }
    }
    for (i, r) in s.references.iter().enumerate() {
        if r.table == s.orders || !tables.get(r.table.name()).is_some_and(Option::is_some) {
            continue;
        }
        let leading = introspect::index_leading_columns(db, &r.table).await?;
        if !leading.iter().any(|c| c == r.column.name()) {
            report.warnings.push(format!(
                "schema.references[{i}]: no index on {}({}); each deleted customer makes the database scan {}",
                r.table, r.column, r.table
            ));
        }
    }
    Ok(report)
}

async fn check_venue(
    db: &Db,
    config: &Config,
    i: usize,
    venue: &VenueConfig,
    columns: &[ColumnInfo],
    report: &mut CheckReport,
) -> Result<()> {
    let backend = db.backend();
    let s = &config.schema;
    if venue.action == Action::Anonymise {
        let unclassified = unclassified_columns(config, venue, columns);
        if !unclassified.is_empty() {
            report.problems.push(format!(
                "venues[{i}].anonymise: unclassified column(s) of {}: {} (classify each as keep, null, redact, hash, year or prefix:N)",
                s.customers,
                unclassified.join(", ")
            ));
        }
        for (column, strategy) in &venue.anonymise {
            let key = format!("venues[{i}].anonymise.{column}");
            let Some(info) = columns.iter().find(|c| c.name == column.name()) else {
                report.problems.push(format!(
                    "{key}: column {}.{column} does not exist",
                    s.customers
                ));
                continue;
            };
            match strategy {
                Strategy::Null if info.not_null => report.problems.push(format!(
                    "{key}: column {}.{column} is NOT NULL, so \"null\" would fail",
                    s.customers
                )),
                Strategy::Year if !info.is_temporal(backend) => report.problems.push(format!(
                    "{key}: \"year\" needs a date column, {}.{column} has type {}",
                    s.customers, info.data_type
                )),
                Strategy::Hash | Strategy::Prefix(_) | Strategy::Redact(_)
                    if !info.is_textual(backend) =>
                {
                    report.problems.push(format!(
                        "{key}: \"{strategy}\" needs a text column, {}.{column} has type {}",
                        s.customers, info.data_type
                    ))
                }
                _ => {}
            }
        }
    }
    if let Some(id) = venue.unknown_customer_id {
        let q = crate::selection::customer_of_venue(s, venue.id, id);
        if db.fetch_one(&q).await?.i64(0)? != 1 {
            report.problems.push(format!(
                "venues[{i}].unknown_customer_id: customer {id} is not a customer of venue {}",
                venue.id
            ));
        }
    }
    Ok(())
}
