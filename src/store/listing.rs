//! A report's customers as approvers see them: its items joined to the customers table the
//! configuration names (the only place a customer's personal data is read out), page by page,
//! by id, or for a CSV.

use crate::config::SchemaConfig;
use crate::db::{Backend, Db, Query};
use crate::store::reports::Report;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A customer's name as one SQL expression over the customers table aliased `alias`.
pub fn name_expression(backend: Backend, schema: &SchemaConfig, alias: &str) -> String {
    if schema.display_name.is_empty() {
        return "''".to_string();
    }
    schema
        .display_name
        .iter()
        .map(|c| {
            format!(
                "COALESCE({}, '')",
                backend.cast_text(&format!("{alias}.{}", c.q()))
            )
        })
        .collect::<Vec<_>>()
        .join(" || ' ' || ")
}

/// One customer of a report as shown to approvers: the only place personal data is read out.
#[derive(Debug, Clone, Serialize)]
pub struct ReportCustomer {
    pub id: i64,
    pub name: String,
    pub email: String,
    /// The latest order or activity; `None` when the customer never ordered.
    pub last_activity: Option<DateTime<Utc>>,
    /// Kept out of the report by an approver.
    pub kept: bool,
}

/// A page of a report's customers in id order after `after_id` (keyset paging keeps memory flat
/// however large the report), up to the id `up_to` when given, matching `search` when given.
pub async fn customers_page(
    db: &Db,
    schema: &SchemaConfig,
    report_id: i64,
    after_id: i64,
    limit: u32,
    search: Option<&str>,
    up_to: Option<i64>,
) -> Result<Vec<ReportCustomer>> {
    let filter = search
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map_or(Filter::None, Filter::Text);
    let q = customers_query(
        db.backend(),
        schema,
        report_id,
        after_id,
        limit,
        filter,
        up_to,
    );
    decode_customers(schema, &db.fetch_all(&q).await?)
}

/// The customers `ids` of a report (those of them on it), in id order.
pub async fn customers_with_ids(
    db: &Db,
    schema: &SchemaConfig,
    report_id: i64,
    ids: &[i64],
) -> Result<Vec<ReportCustomer>> {
    let Some(first) = ids.iter().min() else {
        return Ok(Vec::new());
    };
    let q = customers_query(
        db.backend(),
        schema,
        report_id,
        first - 1,
        ids.len() as u32,
        Filter::Ids(ids),
        ids.iter().max().copied(),
    );
    decode_customers(schema, &db.fetch_all(&q).await?)
}

/// The next `limit` customers of a report after `after_id`, for a CSV: the whole report is read
/// once, so it is read without keeping what it read (see [`Db::fetch_all_once`]).
pub async fn csv_chunk(
    db: &Db,
    schema: &SchemaConfig,
    report_id: i64,
    after_id: i64,
    limit: u32,
) -> Result<Vec<ReportCustomer>> {
    let q = customers_query(
        db.backend(),
        schema,
        report_id,
        after_id,
        limit,
        Filter::None,
        None,
    );
    decode_customers(schema, &db.fetch_all_once(&q).await?)
}

/// Which of a report's customers [`customers_query`] reads.
enum Filter<'a> {
    None,
    /// By id, or a part of the name or email, without case.
    Text(&'a str),
    Ids(&'a [i64]),
}

fn customers_query(
    backend: crate::db::Backend,
    schema: &SchemaConfig,
    report_id: i64,
    after_id: i64,
    limit: u32,
    filter: Filter<'_>,
    up_to: Option<i64>,
) -> Query {
    let id = schema.customer_id.q();
    let mut select = vec![
        format!("i.customer_id"),
        "CASE WHEN i.kept_at IS NULL THEN 0 ELSE 1 END".to_string(),
    ];
    select.extend(schema.display_name.iter().map(|c| format!("c.{}", c.q())));
    select.push(
        schema
            .display_email
            .as_ref()
            .map_or("NULL".to_string(), |c| format!("c.{}", c.q())),
    );
    // Frozen with the item; reports made before migration 5 look it up.
    select.push(format!(
        "COALESCE(i.last_order_at, {})",
        crate::selection::last_activity_of(backend, schema, "i.customer_id")
    ));
    select.extend(
        schema
            .customer_activity
            .iter()
            .map(|c| format!("c.{}", c.q())),
    );
    // The bound on c repeats the one on i: without it PostgreSQL merge-joins the customers'
    // primary key from its first row, so a page deep in a large report read every customer
    // before it (100 ms at 150,000; under 1 ms with the bound).
    let mut q = Query::new(&format!(
        "SELECT {} FROM retention_report_items i LEFT JOIN {} c ON c.{id} = i.customer_id AND c.{id} > ",
        select.join(", "),
        schema.customers.q()
    ));
    q.bind(after_id).push(" WHERE i.report_id = ");
    q.bind(report_id)
        .push(" AND i.customer_id > ")
        .bind(after_id);
    if let Some(last) = up_to {
        q.push(" AND i.customer_id <= ").bind(last);
    }
    if let Filter::Ids(ids) = filter {
        q.push(" AND i.customer_id");
        backend.push_in_ids(&mut q, ids);
    }
    if let Filter::Text(text) = filter {
        let pattern = format!(
            "%{}%",
            text.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let email = schema.display_email.as_ref().map_or("''".to_string(), |c| {
            format!(
                "COALESCE({}, '')",
                backend.cast_text(&format!("c.{}", c.q()))
            )
        });
        q.push(" AND (i.customer_id = ")
            .bind(text.parse::<i64>().unwrap_or(i64::MIN))
            .push(&format!(
                " OR lower({}) LIKE ",
                name_expression(backend, schema, "c")
            ))
            .bind(pattern.clone())
            .push(" ESCAPE '\\'")
            .push(&format!(" OR lower({email}) LIKE "))
            .bind(pattern)
            .push(" ESCAPE '\\')");
    }
    q.push(" ORDER BY i.customer_id LIMIT ")
        .bind(i64::from(limit));
    q
}

/// The rows of [`customers_query`] as customers.
fn decode_customers(schema: &SchemaConfig, rows: &[crate::db::Row]) -> Result<Vec<ReportCustomer>> {
    let names = schema.display_name.len();
    rows.iter()
        .map(|r| {
            let name: Vec<String> = (2..names + 2)
                .filter_map(|i| r.get(i).to_text())
                .filter(|s| !s.is_empty())
                .collect();
            let mut latest: Option<DateTime<Utc>> = None;
            for i in names + 3..r.0.len() {
                if let Some(t) = r.opt_time(i)? {
                    latest = latest.max(Some(t));
                }
            }
            Ok(ReportCustomer {
                id: r.i64(0)?,
                kept: r.i64(1)? != 0,
                name: name.join(" "),
                email: r.get(names + 2).to_text().unwrap_or_default(),
                last_activity: latest,
            })
        })
        .collect()
}

/// A customer kept out of a report, as shown to approvers.
#[derive(Debug, Clone)]
pub struct KeptCustomer {
    pub id: i64,
    pub name: String,
    pub kept_by: String,
    pub kept_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// The customers kept out of a report, in id order (at most `limit`).
pub async fn kept_list(
    db: &Db,
    schema: &SchemaConfig,
    report: &Report,
    limit: u32,
) -> Result<Vec<KeptCustomer>> {
    let name = name_expression(db.backend(), schema, "c");
    let mut q = Query::new(&format!(
        "SELECT i.customer_id, {name} AS name, i.kept_by, i.kept_at, i.kept_reason FROM retention_report_items i \
         LEFT JOIN {} c ON c.{} = i.customer_id WHERE i.report_id = ",
        schema.customers.q(),
        schema.customer_id.q()
    ));
    q.bind(report.id)
        .push(" AND i.kept_at IS NOT NULL ORDER BY i.customer_id LIMIT ")
        .bind(i64::from(limit));
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(KeptCustomer {
                id: r.named_i64("customer_id")?,
                name: r
                    .named_opt_text("name")?
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                kept_by: r.named_text("kept_by")?,
                kept_at: r.named_time("kept_at")?,
                reason: r.named_opt_text("kept_reason")?,
            })
        })
        .collect()
}
