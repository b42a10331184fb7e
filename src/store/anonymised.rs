//! `retention_anonymised`: the customers retentiond anonymised (so no later selection takes
//! them again), and `retention_unknown_customers`: each delete venue's Unknown Customer record,
//! created once.

use crate::db::{Query, Tx};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// Records `ids` as anonymised by `report_id` of `venue_id`.
pub async fn insert(
    tx: &mut Tx<'_>,
    venue_id: i64,
    report_id: i64,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<()> {
    let backend = tx.backend();
    let mut q = Query::new("INSERT INTO retention_anonymised (customer_id, venue_id, report_id, anonymised_at) SELECT ids.id, ");
    q.bind(venue_id)
        .push(", ")
        .bind(report_id)
        .push(", ")
        .bind(at)
        .push(" FROM ");
    backend.push_ids_source(&mut q, ids);
    tx.execute(&q).await?;
    Ok(())
}

/// Those of `ids` that were anonymised.
pub async fn among(tx: &mut Tx<'_>, ids: &[i64]) -> Result<HashSet<i64>> {
    let backend = tx.backend();
    let mut q = Query::new("SELECT customer_id FROM retention_anonymised WHERE customer_id");
    backend.push_in_ids(&mut q, ids);
    tx.fetch_all(&q)
        .await?
        .iter()
        .map(|r| r.named_i64("customer_id"))
        .collect()
}

/// The Unknown Customer record retentiond created for `venue_id`, if it did.
pub async fn unknown_customer(tx: &mut Tx<'_>, venue_id: i64) -> Result<Option<i64>> {
    let mut q = Query::new("SELECT customer_id FROM retention_unknown_customers WHERE venue_id = ");
    q.bind(venue_id);
    tx.fetch_optional(&q)
        .await?
        .map(|r| r.named_i64("customer_id"))
        .transpose()
}

/// Remembers `customer_id` as `venue_id`'s Unknown Customer record.
pub async fn remember_unknown_customer(
    tx: &mut Tx<'_>,
    venue_id: i64,
    customer_id: i64,
    at: DateTime<Utc>,
) -> Result<()> {
    let q = Query::insert(
        "retention_unknown_customers",
        &["venue_id", "customer_id", "created_at"],
        vec![venue_id.into(), customer_id.into(), at.into()],
    );
    tx.execute(&q).await?;
    Ok(())
}

/// Whether `customer_id` is a venue's Unknown Customer record retentiond created.
pub async fn is_unknown_customer(tx: &mut Tx<'_>, customer_id: i64) -> Result<bool> {
    let mut q = Query::new("SELECT COUNT(*) FROM retention_unknown_customers WHERE customer_id = ");
    q.bind(customer_id);
    Ok(tx.fetch_one(&q).await?.i64(0)? > 0)
}

/// Every Unknown Customer record retentiond created: (venue, customer).
pub async fn unknown_customers(db: &crate::db::Db) -> Result<HashSet<(i64, i64)>> {
    let q = Query::new("SELECT venue_id, customer_id FROM retention_unknown_customers");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok((r.named_i64("venue_id")?, r.named_i64("customer_id")?)))
        .collect()
}
