//! `retentiond check`: the configuration against the live database. Each problem is one line
//! naming the table, column or key; the anonymise guard reuses the unclassified-column test.

use crate::config::{Config, OnDelete, Reference, VenueConfig};
use crate::db::{Db, Ident};
use crate::introspect::{self, ColumnInfo};
use crate::migrate;
use crate::policy::{Action, Strategy};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};

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

/// Columns of a linked table whose rows stay that `[schema.references.columns]` does not
/// classify: every column other than the primary key and the reference column (SPEC 3).
pub fn unclassified_reference_columns(
    reference: &Reference,
    columns: &[ColumnInfo],
) -> Vec<String> {
    columns
        .iter()
        .filter(|c| !c.primary_key && !reference.is_reference_column(&c.name))
        .map(|c| c.name.as_str())
        .filter(|name| !reference.columns.iter().any(|(col, _)| col.name() == *name))
        .map(str::to_string)
        .collect()
}

/// A venue's configuration does not classify every column that would keep personal data (the
/// customers table on anonymise, linked tables whose rows stay on either action): a
/// configuration error found against the live database.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {action} of venue {venue_id} refused: unclassified column(s) {columns}")]
pub struct UnclassifiedColumns {
    pub file: String,
    pub key: String,
    pub action: &'static str,
    pub venue_id: i64,
    /// `table.column`, comma-separated.
    pub columns: String,
}

/// The time columns selection compares (customers' created-at and activity columns, orders'
/// placed-at) checked by type and, where the backend keeps times as text (SQLite), by a sample
/// of their values: text such as "02/12/2022" or a Unix time in a text column would be compared
/// wrongly with the cutoff. Values are never printed. Judged on the tables' columns read before
/// ([`read_catalogue`]).
async fn time_column_problems(
    db: &Db,
    config: &Config,
    columns_of: &BTreeMap<String, Vec<ColumnInfo>>,
) -> Result<Vec<String>> {
    let s = &config.schema;
    let mut temporal = vec![
        (
            "schema.customer_created_at".to_string(),
            &s.customers,
            &s.customer_created_at,
        ),
        (
            "schema.order_placed_at".to_string(),
            &s.orders,
            &s.order_placed_at,
        ),
    ];
    temporal.extend(
        s.customer_activity
            .iter()
            .map(|c| ("schema.customer_activity".to_string(), &s.customers, c)),
    );
    temporal.extend(
        s.activity
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("schema.activity[{i}].at"), &a.table, &a.at)),
    );
    let mut problems = Vec::new();
    for (key, table, col) in temporal {
        let Some(info) = columns_of
            .get(table.name())
            .into_iter()
            .flatten()
            .find(|c| c.name == col.name())
        else {
            continue; // a missing column is named by `check` elsewhere
        };
        if !info.is_temporal() {
            problems.push(format!(
                "{key}: column {table}.{col} has type {}, expected a date or timestamp",
                info.data_type
            ));
        } else if info.kind.time_as_text {
            let sample = introspect::sample(db, table, col.name(), introspect::SAMPLE).await?;
            let unreadable = sample
                .iter()
                .filter(|v| crate::db::parse_time_text(v).is_err())
                .count();
            if unreadable > 0 {
                problems.push(format!(
                    "{key}: column {table}.{col} holds times retentiond cannot read ({unreadable} of {} sampled values); expected UTC text as YYYY-MM-DD HH:MM:SS",
                    sample.len()
                ));
            }
        }
    }
    Ok(problems)
}

/// What a column of `info`'s type should be compared with, when `value` does not suit it.
fn literal_misfit(value: &crate::holds::Literal, info: &ColumnInfo) -> Option<&'static str> {
    use crate::holds::Literal;
    let numeric = info.is_integer()
        || ["numeric", "decimal", "real", "float", "double", "money"]
            .iter()
            .any(|t| info.data_type.contains(t));
    let fits = match value {
        Literal::None => true,
        Literal::Int(_) | Literal::Float(_) => numeric,
        Literal::Text(_) => info.is_textual() || info.is_temporal(),
        Literal::Bool(_) => info.is_flag(),
    };
    if fits {
        return None;
    }
    Some(if info.is_flag() {
        "true or false"
    } else if numeric {
        "a number"
    } else {
        "'text'"
    })
}

/// The customer tables retentiond writes to: customers, orders and every linked table.
fn customer_tables(config: &Config) -> Vec<&Ident> {
    let s = &config.schema;
    let mut tables = vec![&s.customers, &s.orders];
    for r in &s.references {
        if !tables.contains(&&r.table) {
            tables.push(&r.table);
        }
    }
    tables
}

/// Every table a night reads: the customer tables (above), each activity table and each hold's
/// table, each once.
fn tables_read_at_night(config: &Config) -> Vec<&Ident> {
    let s = &config.schema;
    let mut tables = customer_tables(config);
    for table in s
        .activity
        .iter()
        .map(|a| &a.table)
        .chain(s.holds.iter().map(|h| &h.table))
    {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables
}

/// With `schema.customer_venue` left out (one venue configured), every customer in the table
/// counts as that venue's. A customers table that has a `venue_id` column most likely holds
/// other venues too (a configuration that relied on the old default): refused, never guessed.
fn one_venue_problem(
    config: &Config,
    columns: &BTreeMap<String, Vec<ColumnInfo>>,
) -> Option<String> {
    let s = &config.schema;
    if s.customer_venue.is_some() {
        return None;
    }
    let has_venue_id = columns
        .get(s.customers.name())
        .into_iter()
        .flatten()
        .any(|c| c.name == "venue_id");
    has_venue_id.then(|| {
        format!(
            "{}: schema.customer_venue is left out, so every customer in {} would count as venue {}'s, but the table has a venue_id column: set schema.customer_venue = \"venue_id\"",
            config.file,
            s.customers,
            config.venues.first().map_or(0, |v| v.id)
        )
    })
}

/// Fails before any customer is touched when the database cannot be written safely (on MySQL:
/// a table without transactions, a missing privilege), or when a database of one venue looks
/// like it holds several, naming what is wrong.
pub async fn ensure_fit(db: &Db, config: &Config) -> Result<()> {
    ensure_fit_with(db, config, &read_catalogue(db, config).await?).await
}

/// [`ensure_fit`], judged on the tables' columns read before ([`read_catalogue`]).
pub async fn ensure_fit_with(
    db: &Db,
    config: &Config,
    columns: &BTreeMap<String, Vec<ColumnInfo>>,
) -> Result<()> {
    if let Some(problem) = one_venue_problem(config, columns) {
        anyhow::bail!("{problem}; no customer was touched");
    }
    // A time column read wrongly selects the wrong customers: only the brake would stop it.
    if let Some(problem) = time_column_problems(db, config, columns)
        .await?
        .into_iter()
        .next()
    {
        anyhow::bail!("{}: {problem}; no customer was touched", config.file);
    }
    if let Some(problem) = db.unfit(&customer_tables(config)).await?.into_iter().next() {
        anyhow::bail!("{problem}; no customer was touched");
    }
    Ok(())
}

/// Fails with [`UnclassifiedColumns`] when a table whose rows keep personal data after this
/// venue's action has a column nobody classified (a column added by someone else must not
/// silently keep personal data): the customers table for anonymise, and for both actions every
/// linked table whose rows stay.
pub async fn ensure_all_classified(db: &Db, config: &Config, venue: &VenueConfig) -> Result<()> {
    let columns = read_catalogue(db, config).await?;
    match unclassified(config, venue, &columns) {
        Some(refusal) => Err(refusal.into()),
        None => Ok(()),
    }
}

/// The live columns of every table a night reads ([`tables_read_at_night`]), by table name, a
/// table that does not exist with none: read once, in one statement on the servers, then judged
/// by [`ensure_fit_with`] and, per venue, by [`unclassified`].
pub async fn read_catalogue(db: &Db, config: &Config) -> Result<BTreeMap<String, Vec<ColumnInfo>>> {
    let tables = tables_read_at_night(config);
    let mut columns = introspect::columns_of(db, &tables).await?;
    // A table that does not exist has no columns to judge (`check` names it missing).
    for table in tables {
        columns.entry(table.name().to_string()).or_default();
    }
    Ok(columns)
}

/// The refusal of `venue`'s action when a table whose rows keep personal data after it has a
/// column nobody classified, judged on `columns` ([`read_catalogue`]).
pub fn unclassified(
    config: &Config,
    venue: &VenueConfig,
    columns: &BTreeMap<String, Vec<ColumnInfo>>,
) -> Option<UnclassifiedColumns> {
    venue
        .actions()
        .into_iter()
        .find_map(|action| unclassified_for(config, venue, action, columns))
}

/// [`unclassified`] for one of the venue's actions.
fn unclassified_for(
    config: &Config,
    venue: &VenueConfig,
    action: Action,
    columns: &BTreeMap<String, Vec<ColumnInfo>>,
) -> Option<UnclassifiedColumns> {
    let refuse = |key: String, table: &Ident, found: Vec<String>| UnclassifiedColumns {
        file: config.file.clone(),
        key,
        action: action.as_str(),
        venue_id: venue.id,
        columns: found
            .iter()
            .map(|c| format!("{table}.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let of = |table: &Ident| columns.get(table.name()).map_or(&[][..], |c| c.as_slice());
    if action == Action::Anonymise {
        let found = unclassified_columns(config, venue, of(&config.schema.customers));
        if !found.is_empty() {
            return Some(refuse(
                "venues.anonymise".into(),
                &config.schema.customers,
                found,
            ));
        }
    }
    for (i, r) in config.schema.references.iter().enumerate() {
        if !r.rows_stay(action) {
            continue;
        }
        let found = unclassified_reference_columns(r, of(&r.table));
        if !found.is_empty() {
            return Some(refuse(
                format!("schema.references[{i}].columns"),
                &r.table,
                found,
            ));
        }
    }
    None
}

pub async fn run(db: &Db, config: &Config) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let s = &config.schema;

    let version = migrate::current_version(db).await?;
    if version != migrate::latest_version() {
        report.problems.push(format!(
            "retentiond tables are at version {version}, this build needs {}: run `retentiond migrate`",
            migrate::latest_version()
        ));
    }
    report
        .problems
        .extend(db.unfit(&customer_tables(config)).await?);

    let mut tables: HashMap<String, Option<Vec<ColumnInfo>>> = HashMap::new();
    let mut wanted: Vec<(&str, &Ident, &Ident)> = vec![
        ("schema.customer_id", &s.customers, &s.customer_id),
        (
            "schema.customer_created_at",
            &s.customers,
            &s.customer_created_at,
        ),
        ("schema.order_customer", &s.orders, &s.order_customer),
        ("schema.order_placed_at", &s.orders, &s.order_placed_at),
    ];
    if let Some(venue) = &s.customer_venue {
        wanted.push(("schema.customer_venue", &s.customers, venue));
    }
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
    let activity_keys: Vec<[String; 3]> = (0..s.activity.len())
        .map(|i| ["column", "at", "via_key"].map(|k| format!("schema.activity[{i}].{k}")))
        .collect();
    for (a, [column_key, at_key, via_key]) in s.activity.iter().zip(&activity_keys) {
        wanted.push((column_key, &a.table, &a.column));
        wanted.push((at_key, &a.table, &a.at));
        if let Some(via) = &a.via {
            wanted.push((via_key, &via.table, &via.key));
        }
    }
    // Holds (the legal hold's column is checked as schema.legal_hold above).
    let holds: Vec<(usize, &crate::holds::Hold)> = s
        .holds
        .iter()
        .filter(|h| h.name != crate::config::LEGAL_HOLD || s.legal_hold.is_none())
        .enumerate()
        .collect();
    let hold_keys: Vec<[String; 3]> = holds
        .iter()
        .map(|(i, _)| ["column", "when", "after"].map(|k| format!("schema.holds[{i}].{k}")))
        .collect();
    for ((_, hold), [column_key, when_key, after_key]) in holds.iter().zip(&hold_keys) {
        if let Some(column) = &hold.column {
            wanted.push((column_key, &hold.table, column));
        }
        for condition in &hold.when {
            wanted.push((when_key, &hold.table, &condition.column));
        }
        if let Some((after, _)) = &hold.until {
            wanted.push((after_key, &hold.table, after));
        }
    }
    // Every named table's columns in one catalogue read (one statement on the servers).
    let mut named: Vec<&Ident> = Vec::new();
    for (_, table, _) in &wanted {
        if !named.contains(table) {
            named.push(table);
        }
    }
    let found = introspect::columns_of(db, &named).await?;
    for (key, table, _) in &wanted {
        if !tables.contains_key(table.name()) {
            let cols = found.get(table.name()).cloned();
            if cols.is_none() {
                report
                    .problems
                    .push(format!("{key}: table {table} does not exist"));
            }
            tables.insert(table.name().to_string(), cols);
        }
    }
    // The same read as the run's checks judge ([`read_catalogue`]: its tables are all named
    // above), a missing table with no columns.
    let catalogue: BTreeMap<String, Vec<ColumnInfo>> = tables
        .iter()
        .map(|(name, cols)| (name.clone(), cols.clone().unwrap_or_default()))
        .collect();
    report
        .problems
        .extend(one_venue_problem(config, &catalogue));
    let column = |table: &Ident, col: &Ident| column_of(&tables, table, col);
    for (key, table, col) in &wanted {
        if tables.get(table.name()).is_some_and(Option::is_some) && column(table, col).is_none() {
            report
                .problems
                .push(format!("{key}: column {table}.{col} does not exist"));
        }
    }
    report
        .problems
        .extend(time_column_problems(db, config, &catalogue).await?);
    report
        .problems
        .extend(hold_type_problems(config, &tables, &holds, &hold_keys));

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
        let any_delete = config
            .venues
            .iter()
            .any(|v| v.actions().contains(&Action::Delete));
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
    check_linked_tables(db, config, &tables, &mut report).await?;
    if let Some(Some(columns)) = tables.get(s.customers.name()) {
        check_unknown_customer_can_be_created(db, config, columns, &mut report).await?;
    }
    match crate::mail::Mailer::from_config(&config.mail) {
        Ok(mailer) => {
            if let Err(e) = mailer.probe().await {
                report.warnings.push(format!(
                    "mail: {e:#}; mail is kept in the outbox and sent once it answers (nothing was sent by this check)"
                ));
            }
        }
        Err(e) => report.problems.push(format!("mail: {e:#}")),
    }
    report
        .warnings
        .extend(missing_index_warnings(db, config, &tables, &holds).await?);
    let read = tables_read_at_night(config);
    if let Some((pool, size)) = db.buffer_pool_and_tables(&read).await? {
        report.warnings.extend(buffer_pool_warning(pool, size));
    }
    Ok(report)
}

/// MySQL and MariaDB: the warning when InnoDB's buffer pool (`pool` bytes) cannot hold the
/// tables a night reads and their indexes (`tables` bytes): their pages are then read from disk
/// again and again (on the defaults, the benchmark's 1,000-venue fleet, 450 MB of tables, grew
/// x5 to x6 for x4 data; see the README for the redo log's part in it).
pub fn buffer_pool_warning(pool: u64, tables: u64) -> Option<String> {
    const MB: u64 = 1 << 20;
    (tables > pool).then(|| {
        format!(
            "database: innodb_buffer_pool_size is {} MB, but the customer tables and their indexes take about {} MB; selections and applies will read from disk and slow down faster than the data grows: give the buffer pool room for them (SET GLOBAL innodb_buffer_pool_size, and the server's configuration)",
            pool / MB,
            tables.div_ceil(MB)
        )
    })
}

/// The column of `table` named `column`, as the catalogue read for `check` describes it.
fn column_of(
    tables: &HashMap<String, Option<Vec<ColumnInfo>>>,
    table: &Ident,
    column: &Ident,
) -> Option<ColumnInfo> {
    tables
        .get(table.name())?
        .as_ref()?
        .iter()
        .find(|c| c.name == column.name())
        .cloned()
}

/// Holds whose conditions compare a column with a value of another type, whose period starts
/// at a column that is no time, and a legal hold that is no flag.
fn hold_type_problems(
    config: &Config,
    tables: &HashMap<String, Option<Vec<ColumnInfo>>>,
    holds: &[(usize, &crate::holds::Hold)],
    hold_keys: &[[String; 3]],
) -> Vec<String> {
    let s = &config.schema;
    let mut problems = Vec::new();
    for ((_, hold), [_, when_key, after_key]) in holds.iter().zip(hold_keys) {
        for condition in &hold.when {
            let Some(info) = column_of(tables, &hold.table, &condition.column) else {
                continue;
            };
            if let Some(expected) = literal_misfit(&condition.value, &info) {
                problems.push(format!(
                    "{when_key}: \"{condition}\" compares column {}.{} of type {} with {}; expected {expected}",
                    hold.table,
                    condition.column,
                    info.data_type,
                    condition.value.kind()
                ));
            }
        }
        if let Some((after, _)) = &hold.until {
            if let Some(info) = column_of(tables, &hold.table, after) {
                if !info.is_temporal() {
                    problems.push(format!(
                        "{after_key}: column {}.{after} has type {}, expected a date or timestamp",
                        hold.table, info.data_type
                    ));
                }
            }
        }
    }
    if let Some(hold) = &s.legal_hold {
        if let Some(info) = column_of(tables, &s.customers, hold) {
            if !info.is_flag() {
                problems.push(format!(
                    "schema.legal_hold: column {}.{hold} has type {}, expected a boolean",
                    s.customers, info.data_type
                ));
            }
        }
    }

    problems
}

/// The indexes a fleet's nights need and the database lacks: the orders by customer, the
/// customers by venue, each hold's, activity table's and linked table's reference column.
async fn missing_index_warnings(
    db: &Db,
    config: &Config,
    tables: &HashMap<String, Option<Vec<ColumnInfo>>>,
    holds: &[(usize, &crate::holds::Hold)],
) -> Result<Vec<String>> {
    let s = &config.schema;
    let mut warnings = Vec::new();
    if tables.get(s.orders.name()).is_some_and(Option::is_some) {
        let leading = introspect::index_leading_columns(db, &s.orders).await?;
        if !leading.iter().any(|c| c == s.order_customer.name()) {
            warnings.push(format!(
                "schema.orders: no index on {}({}, {}); selection will scan the orders table",
                s.orders, s.order_customer, s.order_placed_at
            ));
        }
    }
    if let Some(venue_column) = &s.customer_venue {
        if config.venues.len() > 1 && tables.get(s.customers.name()).is_some_and(Option::is_some) {
            let leading = introspect::index_leading_columns(db, &s.customers).await?;
            if !leading.iter().any(|c| c == venue_column.name()) {
                warnings.push(format!(
                    "schema.customer_venue: no index on {}({venue_column}) while {} venues are configured; every venue's cycle will scan all venues' customers (CREATE INDEX ... ON {}({venue_column}))",
                    s.customers,
                    config.venues.len(),
                    s.customers
                ));
            }
        }
    }
    for (i, hold) in holds {
        let Some(column) = &hold.column else { continue };
        if !tables.get(hold.table.name()).is_some_and(Option::is_some) {
            continue;
        }
        let leading = introspect::index_leading_columns(db, &hold.table).await?;
        if !leading.iter().any(|c| c == column.name()) {
            warnings.push(format!(
                "schema.holds[{i}]: no index on {}({column}); every idle customer's selection will scan {}",
                hold.table, hold.table
            ));
        }
    }
    for (i, a) in s.activity.iter().enumerate() {
        if !tables.get(a.table.name()).is_some_and(Option::is_some) {
            continue;
        }
        let leading = introspect::index_leading_columns(db, &a.table).await?;
        if !leading.iter().any(|c| c == a.column.name()) {
            warnings.push(format!(
                "schema.activity[{i}]: no index on {}({}, {}); every idle customer's selection will scan {}",
                a.table, a.column, a.at, a.table
            ));
        }
    }
    for (i, r) in s.references.iter().enumerate() {
        if (r.table == s.orders && r.column == s.order_customer)
            || !tables.get(r.table.name()).is_some_and(Option::is_some)
        {
            continue;
        }
        let leading = introspect::index_leading_columns(db, &r.table).await?;
        if !leading.iter().any(|c| c == r.column.name()) {
            warnings.push(format!(
                "schema.references[{i}]: no index on {}({}); each deleted customer makes the database scan {}",
                r.table, r.column, r.table
            ));
        }
    }
    Ok(warnings)
}

/// The linked tables (SPEC 3): `via` parents and keys exist; for every action a venue takes,
/// each table whose rows stay has every column classified, each classified column exists and
/// suits its strategy; hashed tables have an integer key; foreign keys into a table whose rows
/// are deleted are listed (as `via` references), or the delete would fail.
async fn check_linked_tables(
    db: &Db,
    config: &Config,
    tables: &HashMap<String, Option<Vec<ColumnInfo>>>,
    report: &mut CheckReport,
) -> Result<()> {
    let s = &config.schema;
    let mut actions: Vec<Action> = config.venues.iter().flat_map(|v| v.actions()).collect();
    actions.sort_by_key(|a| a.as_str());
    actions.dedup();
    for (i, r) in s.references.iter().enumerate() {
        let Some(Some(columns)) = tables.get(r.table.name()) else {
            continue;
        };
        if let Some(via) = &r.via {
            let parent_columns = introspect::columns(db, &via.table)
                .await?
                .unwrap_or_default();
            if !parent_columns.iter().any(|c| c.name == via.key.name()) {
                report.problems.push(format!(
                    "schema.references[{i}].via_key: column {}.{} does not exist",
                    via.table, via.key
                ));
            }
        }
        let staying: Vec<&str> = actions
            .iter()
            .filter(|a| r.rows_stay(**a))
            .map(|a| a.as_str())
            .collect();
        if staying.is_empty() {
            continue;
        }
        let unclassified = unclassified_reference_columns(r, columns);
        if !unclassified.is_empty() {
            report.problems.push(format!(
                "schema.references[{i}].columns: unclassified column(s) of {} (its rows stay on {}): {} (classify each as keep, null, redact, hash, year or prefix:N)",
                r.table,
                staying.join(" and "),
                unclassified.join(", ")
            ));
        }
        for (column, strategy) in &r.columns {
            let key = format!("schema.references[{i}].columns.{column}");
            let Some(info) = columns.iter().find(|c| c.name == column.name()) else {
                report
                    .problems
                    .push(format!("{key}: column {}.{column} does not exist", r.table));
                continue;
            };
            if let Some(problem) = strategy_problem(&r.table, column, strategy, info) {
                report.problems.push(format!("{key}: {problem}"));
            }
        }
    }
    // A table whose rows are deleted by some action: foreign keys into it must be listed.
    for r in s.references.iter().filter(|r| r.via.is_none()) {
        if actions.iter().all(|a| r.rows_stay(*a))
            || !tables.get(r.table.name()).is_some_and(Option::is_some)
        {
            continue;
        }
        for (table, col) in introspect::foreign_keys_to(db, &r.table).await? {
            let listed = s.references.iter().any(|v| {
                v.table.name() == table
                    && v.column.name() == col
                    && v.via.as_ref().is_some_and(|via| via.table == r.table)
            });
            if !listed && table != r.table.name() {
                report.problems.push(format!(
                    "schema.references: foreign key {table}.{col} points at {} but is not listed with via = \"{}\"; deleting its rows would fail",
                    r.table, r.table
                ));
            }
        }
    }
    Ok(())
}

/// A delete venue without `unknown_customer_id` creates its Unknown Customer on first need by
/// inserting the id (from its default), venue, created-at and name columns: any other NOT NULL
/// column without a default, or an id without one, makes that insert (and so the apply) fail.
async fn check_unknown_customer_can_be_created(
    db: &Db,
    config: &Config,
    columns: &[ColumnInfo],
    report: &mut CheckReport,
) -> Result<()> {
    let s = &config.schema;
    // Before the first migration there are none (and `check` says the migrations are missing).
    let remembered = crate::store::anonymised::unknown_customers(db)
        .await
        .unwrap_or_default();
    for (i, venue) in config.venues.iter().enumerate() {
        if !venue.actions().contains(&Action::Delete) || venue.unknown_customer_id.is_some() {
            continue;
        }
        if remembered.iter().any(|(v, _)| *v == venue.id) {
            continue;
        }
        let set: Vec<&str> = [&s.customer_created_at]
            .into_iter()
            .chain(s.customer_venue.as_ref())
            .chain(s.display_name.iter())
            .map(|c| c.name())
            .collect();
        let blocking: Vec<String> = columns
            .iter()
            .filter(|c| c.not_null && !c.has_default && !set.contains(&c.name.as_str()))
            .map(|c| c.name.clone())
            .collect();
        if !blocking.is_empty() {
            report.problems.push(format!(
                "venues[{i}].unknown_customer_id: not set, and the Unknown Customer record of venue {} cannot be created: column(s) {} of {} have no default; create the record and set unknown_customer_id",
                venue.id,
                blocking.join(", "),
                s.customers
            ));
        }
    }
    Ok(())
}

/// Why `strategy` cannot be applied to a column, if it cannot.
fn strategy_problem(
    table: &Ident,
    column: &Ident,
    strategy: &Strategy,
    info: &ColumnInfo,
) -> Option<String> {
    match strategy {
        Strategy::Null if info.not_null => Some(format!(
            "column {table}.{column} is NOT NULL, so \"null\" would fail"
        )),
        Strategy::Year if !info.is_temporal() => Some(format!(
            "\"year\" needs a date column, {table}.{column} has type {}",
            info.data_type
        )),
        Strategy::Hash | Strategy::Prefix(_) | Strategy::Redact(_) if !info.is_textual() => {
            Some(format!(
                "\"{strategy}\" needs a text column, {table}.{column} has type {}",
                info.data_type
            ))
        }
        _ => None,
    }
}

async fn check_venue(
    db: &Db,
    config: &Config,
    i: usize,
    venue: &VenueConfig,
    columns: &[ColumnInfo],
    report: &mut CheckReport,
) -> Result<()> {
    let s = &config.schema;
    if venue.actions().contains(&Action::Anonymise) {
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
            if let Some(problem) = strategy_problem(&s.customers, column, strategy, info) {
                report.problems.push(format!("{key}: {problem}"));
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
