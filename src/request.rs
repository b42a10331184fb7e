//! One person's request (SPEC 13): erase one customer now (GDPR article 17) or export what
//! retentiond would remove or change for them (article 15), through the same engine as the
//! nightly policy: the linked-table rules, one transaction, the ledger, the erasure journal.
//!
//! An erasure on request is recorded as a report of its own (rule `request`, state applied,
//! one item), so that the ledger, `audit`, the journal and `replay` after a restore treat it as
//! they treat every other erasure.

use crate::audit::{self, Event, EventKind};
use crate::config::{OnDelete, SchemaConfig, VenueConfig};
use crate::customers::lookup;
use crate::db::{Ident, Tx};
use crate::erase::Eraser;
use crate::journal::{Journal, Line as JournalLine};
use crate::policy::Rule;
use crate::policy::{Action, Outcome, Strategy};
use crate::selection::Scope;
use crate::wording::named;
use crate::Service;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Who the request is about: a customer id, or an email address (compared without case).
#[derive(Debug, Clone)]
pub enum Who {
    Id(i64),
    Email(String),
}

/// What an erasure changes (or, in a dry run, would change): tables, row counts and what
/// happens to them; never a value.
#[derive(Debug, Clone, Serialize)]
pub struct ErasurePlan {
    pub venue_id: i64,
    pub customer_id: i64,
    pub action: Action,
    pub dry_run: bool,
    /// The report that records the erasure (none in a dry run).
    pub report_id: Option<i64>,
    pub tables: Vec<TableChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableChange {
    pub table: String,
    pub rows: u64,
    pub what: String,
}

/// The customer of `venue` the request names; a refusal (none, several, another venue's)
/// says which in one line.
pub async fn find_customer(svc: &Service, venue: &VenueConfig, who: &Who) -> Result<i64> {
    let s = &svc.config.schema;
    match who {
        Who::Id(id) => {
            let q = crate::selection::customer_of_venue(s, venue.id, *id);
            if svc.db.fetch_one(&q).await?.i64(0)? != 1 {
                bail!(
                    "customer {id} is not a customer of venue {} ({}); nothing was touched",
                    venue.id,
                    venue.name
                );
            }
            Ok(*id)
        }
        Who::Email(address) => {
            let Some(email) = &s.display_email else {
                bail!("schema.display_email is not set in {}, so no customer can be found by email address; name the customer with --customer", svc.config.file);
            };
            let q = lookup::by_email(s, email, venue.id, address);
            let found = svc.db.fetch_all(&q).await?;
            match found.as_slice() {
                [one] => one.i64(0),
                [] => bail!(
                    "no customer of venue {} ({}) has that email address; nothing was touched",
                    venue.id,
                    venue.name
                ),
                many => bail!(
                    "{}{} customers of venue {} ({}) have that email address; name one with --customer; nothing was touched",
                    many.len(),
                    if many.len() >= 3 { " or more" } else { "" },
                    venue.id,
                    venue.name
                ),
            }
        }
    }
}

/// Erases the customer `who` of `venue` now with `action` (the venue's when `None`), linked
/// tables included, in one transaction, recorded in the ledger as `erased_on_request` by `by`
/// and in the journal. Refuses, changing nothing, a customer under a hold (naming it), the
/// Unknown Customer, a customer already anonymised (for anonymise) and an action the venue is
/// not configured for. A dry run returns the plan and changes nothing.
pub async fn erase(
    svc: &Service,
    venue: &VenueConfig,
    who: &Who,
    by: &str,
    action: Option<Action>,
    dry_run: bool,
    at: DateTime<Utc>,
) -> Result<ErasurePlan> {
    let action = action.unwrap_or(venue.action);
    if !venue.actions().contains(&action) {
        bail!(
            "venue {} is configured to {} its customers, not to {}: `--action {}` needs the venue's configuration for it; nothing was touched",
            venue.id,
            venue.action.as_str(),
            action.as_str(),
            action.as_str()
        );
    }
    if by.trim().is_empty() {
        bail!("--by: expected the name of who asks for the erasure, for the ledger");
    }
    let id = find_customer(svc, venue, who).await?;
    crate::check::ensure_fit(&svc.db, &svc.config).await?;
    crate::check::ensure_all_classified(&svc.db, &svc.config, venue).await?;
    let journal = if dry_run {
        None
    } else {
        Journal::open(svc).await?
    };
    if let Some(journal) = &journal {
        journal.catch_up(&svc.db, None).await?;
    }

    let scope = Scope::for_rule(&svc.config, svc.db.backend(), venue, at, Rule::Request);
    let mut tx = svc.db.begin().await?;
    refuse_unerasable(&mut tx, &scope, venue, id, action).await?;
    let tables = plan(&mut tx, &svc.config.schema, venue, id, action).await?;
    if dry_run {
        return Ok(ErasurePlan {
            venue_id: venue.id,
            customer_id: id,
            action,
            dry_run,
            report_id: None,
            tables,
        });
    }
    let report_id = crate::reports::insert_request(&mut tx, venue.id, action, by, at).await?;
    let outcome = match action {
        Action::Delete => Outcome::Deleted,
        Action::Anonymise => Outcome::Anonymised,
    };
    crate::reports::insert_request_item(&mut tx, report_id, id, outcome, at).await?;
    let eraser = Eraser::new(svc, venue);
    match action {
        Action::Delete => eraser.delete(&mut tx, &[id], at).await?,
        Action::Anonymise => eraser.anonymise(&mut tx, report_id, &[id], at).await?,
    }
    audit::record(
        &mut tx,
        &Event {
            at,
            venue_id: venue.id,
            report_id: Some(report_id),
            event: EventKind::ErasedOnRequest,
            actor: by.trim().to_string(),
            detail: format!("{} of customer {id} on request", action.as_str()),
        },
    )
    .await?;
    tx.commit().await?;
    // As after a nightly apply: the removed values leave SQLite's write-ahead log and
    // PostgreSQL's dead row versions now, not at the next run.
    crate::erase::scrub_files(svc).await;
    if let Some(journal) = &journal {
        journal.append(vec![JournalLine {
            report_id,
            venue_id: venue.id,
            customer_id: id,
            action: action.as_str().to_string(),
            outcome: outcome.as_str().to_string(),
            at,
            database: None,
            mac: None,
        }])?;
    }
    metrics::counter!("retentiond_customers_total", "outcome" => outcome.as_str()).increment(1);
    tracing::info!(
        venue.id = venue.id,
        customer.id = id,
        report.id = report_id,
        action = action.as_str(),
        "customer erased on request"
    );
    Ok(ErasurePlan {
        venue_id: venue.id,
        customer_id: id,
        action,
        dry_run,
        report_id: Some(report_id),
        tables,
    })
}

/// Refuses, inside `tx`, what an erasure on request must never touch.
async fn refuse_unerasable(
    tx: &mut Tx<'_>,
    scope: &Scope<'_>,
    venue: &VenueConfig,
    id: i64,
    action: Action,
) -> Result<()> {
    if venue.unknown_customer_id == Some(id)
        || crate::store::anonymised::is_unknown_customer(tx, id).await?
    {
        bail!("customer {id} is venue {}'s Unknown Customer record, which keeps erased customers' order history; it is never erased; nothing was touched", venue.id);
    }
    if let Some(hold) = scope.holding(tx, &[id]).await?.remove(&id) {
        bail!("customer {id} is under the hold \"{hold}\"; nothing was touched");
    }
    if action == Action::Anonymise && !crate::store::anonymised::among(tx, &[id]).await?.is_empty()
    {
        bail!("customer {id} was anonymised already; nothing was touched");
    }
    Ok(())
}

/// What erasing customer `id` with `action` changes, table by table (rows counted, no values).
async fn plan(
    tx: &mut Tx<'_>,
    schema: &SchemaConfig,
    venue: &VenueConfig,
    id: i64,
    action: Action,
) -> Result<Vec<TableChange>> {
    let mut tables = vec![TableChange {
        table: schema.customers.name().to_string(),
        rows: 1,
        what: match action {
            Action::Delete => "the customer's row is deleted".to_string(),
            Action::Anonymise => format!(
                "in the customer's row: {}",
                changed_columns(schema, &venue.anonymise)
            ),
        },
    }];
    for r in &schema.references {
        let rows = tx
            .fetch_one(&lookup::rows_of(schema, r, id, "COUNT(*)"))
            .await?
            .i64(0)? as u64;
        let what = if !r.rows_stay(action) {
            "deleted".to_string()
        } else {
            let place = match (action, &r.via, r.on_delete) {
                (Action::Delete, None, OnDelete::Reassign) => {
                    "kept, moved to the venue's Unknown Customer record"
                }
                _ => "kept",
            };
            let changes = changed_columns(schema, &r.columns);
            if changes.is_empty() {
                format!("{place}, unchanged")
            } else {
                format!("{place}; in them: {changes}")
            }
        };
        tables.push(TableChange {
            table: r.table.name().to_string(),
            rows,
            what,
        });
    }
    Ok(tables)
}

fn changed_columns(schema: &SchemaConfig, columns: &[(Ident, Strategy)]) -> String {
    columns
        .iter()
        .filter(|(_, st)| *st != Strategy::Keep)
        .map(|(c, st)| format!("{} {}", named(schema, c.name()), st.in_words()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One JSON document of every value retentiond would remove or change for the customer `who`
/// of `venue`: the customers row and the rows of every linked table (`via` tables included),
/// each value under its column's label. The ledger records `exported` by `by` (no values).
pub async fn export(
    svc: &Service,
    venue: &VenueConfig,
    who: &Who,
    by: &str,
    at: DateTime<Utc>,
) -> Result<serde_json::Value> {
    if by.trim().is_empty() {
        bail!("--by: expected the name of who asks for the export, for the ledger");
    }
    let id = find_customer(svc, venue, who).await?;
    let schema = &svc.config.schema;
    let backend = svc.db.backend();
    let scope = Scope::for_rule(&svc.config, backend, venue, at, Rule::Request);
    let mut tx = svc.db.begin().await?;
    if let Some(hold) = scope.holding(&mut tx, &[id]).await?.remove(&id) {
        bail!("customer {id} is under the hold \"{hold}\": ask whoever keeps it before exporting; nothing was exported");
    }
    let customer_columns = column_names(svc, &schema.customers).await?;
    let q = lookup::customer_row(backend, schema, &customer_columns, id);
    let row = tx.fetch_one(&q).await?;
    let customer = labelled(schema, &customer_columns, &row)?;
    let (mut tables, mut rows) = (Vec::new(), 1_u64);
    for r in &schema.references {
        let columns = column_names(svc, &r.table).await?;
        let select = columns
            .iter()
            .map(|c| backend.cast_text(&format!("x.{}", c.q())))
            .collect::<Vec<_>>()
            .join(", ");
        let found = tx
            .fetch_all(&lookup::rows_of(schema, r, id, &select))
            .await?;
        let values = found
            .iter()
            .map(|row| labelled(schema, &columns, row))
            .collect::<Result<Vec<_>>>()?;
        rows += values.len() as u64;
        tables.push(serde_json::json!({
            "table": r.table.name(),
            "label": named(schema, r.table.name()),
            "rows": values,
        }));
    }
    audit::record(
        &mut tx,
        &Event {
            at,
            venue_id: venue.id,
            report_id: None,
            event: EventKind::Exported,
            actor: by.trim().to_string(),
            detail: format!(
                "customer {id}: {rows} rows from {} tables",
                tables.len() + 1
            ),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(serde_json::json!({
        "venue_id": venue.id,
        "venue": venue.name,
        "customer_id": id,
        "exported_at": at,
        "customer": customer,
        "linked": tables,
    }))
}

async fn column_names(svc: &Service, table: &Ident) -> Result<Vec<Ident>> {
    crate::introspect::columns(&svc.db, table)
        .await?
        .with_context(|| format!("table {table} does not exist"))?
        .iter()
        .map(|c| Ident::new(&c.name).map_err(anyhow::Error::from))
        .collect()
}

fn labelled(
    schema: &SchemaConfig,
    columns: &[Ident],
    row: &crate::db::Row,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for (i, column) in columns.iter().enumerate() {
        let value = row
            .opt_text(i)?
            .map_or(serde_json::Value::Null, serde_json::Value::String);
        map.insert(schema.label(column.name()), value);
    }
    Ok(map)
}
