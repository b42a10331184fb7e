//! What erasing a batch of customers does to the customer database, inside the caller's
//! transaction (SPEC 3): their linked tables first (rows one step further via their parents,
//! then the rows that point at the customer), then the customers themselves. Apply and `replay`
//! both erase through here, so a replayed erasure is the same erasure.

use crate::config::{OnDelete, Reference, SchemaConfig, VenueConfig};
use crate::db::{Backend, Ident, Query, Tx};
use crate::policy::{Action, Strategy};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tracing::info;

/// What an erasure needs besides the ids: the layout, the venue and the hash key. Keyed hashes
/// are computed by the database inside the scrubbing statements, so no value that is about to
/// be destroyed is ever read.
pub struct Eraser<'a> {
    pub schema: &'a SchemaConfig,
    pub venue: &'a VenueConfig,
    pub hash_key: Option<&'a [u8]>,
}

/// Appends the test that a linked table's row belongs to the batch: its reference column is
/// one of `keys` (see [`Eraser::batch_keys`]).
fn push_rows_of_batch(q: &mut Query, backend: Backend, r: &Reference, keys: &[i64]) {
    q.push(&format!("{}.{}", r.table.q(), r.column.q()));
    backend.push_in_ids(q, keys);
}

/// The SQL that applies `strategy` to `table.column`, or `None` for keep and hash (hashes are
/// bound values). Columns are qualified so that an `UPDATE ... FROM` source cannot shadow them.
fn strategy_set(
    q: &mut Query,
    backend: Backend,
    table: &Ident,
    column: &Ident,
    strategy: &Strategy,
) -> Option<String> {
    let target = column.q();
    let qualified = format!("{}.{}", table.q(), column.q());
    match strategy {
        Strategy::Keep | Strategy::Hash => None,
        Strategy::Null => Some(format!("{target} = NULL")),
        Strategy::Redact(text) => Some(format!("{target} = {}", q.param(text.as_str()))),
        Strategy::Year => Some(format!("{target} = {}", backend.year_only(&qualified))),
        Strategy::Prefix(n) => Some(format!("{target} = substr({qualified}, 1, {n})")),
    }
}

impl<'a> Eraser<'a> {
    /// The eraser of `venue` with the service's layout and hash key.
    pub fn new(svc: &'a crate::Service, venue: &'a VenueConfig) -> Eraser<'a> {
        use secrecy::ExposeSecret;
        Eraser {
            schema: &svc.config.schema,
            venue,
            hash_key: svc
                .config
                .hash_key
                .as_ref()
                .map(|k| k.expose_secret().as_bytes()),
        }
    }
}

impl Eraser<'_> {
    fn key(&self) -> Result<&[u8]> {
        self.hash_key
            .context("secrets.hash_key is required for the hash strategy")
    }

    /// Applies a staying linked table's column strategies to the batch's rows, setting
    /// `reassign` (column, value) too when given, in one UPDATE. Returns the rows updated.
    async fn scrub(
        &self,
        tx: &mut Tx<'_>,
        r: &Reference,
        ids: &[i64],
        reassign: Option<i64>,
    ) -> Result<u64> {
        let backend = tx.backend();
        // The values of the assignments are bound first; the statement's text comes after.
        let mut q = Query::default();
        let mut sets: Vec<String> = Vec::new();
        if let Some(unknown) = reassign {
            let p = q.param(unknown);
            sets.push(format!("{} = {p}", r.column.q()));
        }
        for (column, strategy) in &r.columns {
            sets.extend(strategy_set(&mut q, backend, &r.table, column, strategy));
        }
        let hashed: Vec<&Ident> = r
            .columns
            .iter()
            .filter(|(_, s)| *s == Strategy::Hash)
            .map(|(c, _)| c)
            .collect();
        if !hashed.is_empty() {
            sets.extend(self.hash_in_sql(&mut q, backend, &r.table, &hashed)?);
        }
        if sets.is_empty() {
            return Ok(0);
        }
        let keys = self.batch_keys(tx, r, ids).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        q.push(&format!(
            "UPDATE {} SET {} WHERE ",
            r.table.q(),
            sets.join(", ")
        ));
        push_rows_of_batch(&mut q, backend, r, &keys);
        tx.execute(&q)
            .await
            .with_context(|| format!("updating {}", r.table))
    }

    /// `column = hash(column)` assignments for `hashed` columns of `table`, computed by the
    /// database in the scrubbing statement (the key bound once).
    fn hash_in_sql(
        &self,
        q: &mut Query,
        backend: Backend,
        table: &Ident,
        hashed: &[&Ident],
    ) -> Result<Vec<String>> {
        let key = self.key()?;
        // Each key value is bound once, however many columns hash with it.
        let mut bound: std::collections::HashMap<String, String> = Default::default();
        let mut bind = |value: String| {
            bound
                .entry(value)
                .or_insert_with_key(|v| q.param(v.clone()))
                .clone()
        };
        Ok(hashed
            .iter()
            .map(|c| {
                let column = format!("{}.{}", table.q(), c.q());
                let hash = backend.keyed_hash_sql(key, &column, &mut bind);
                format!("{} = {hash}", c.q())
            })
            .collect())
    }

    /// The values of `r`'s reference column that mark the batch's rows: the customers' ids, or
    /// for a `via` table the keys of the parent rows that point at them (read first, so that
    /// every statement filters by a list, which every backend answers with index lookups).
    async fn batch_keys(&self, tx: &mut Tx<'_>, r: &Reference, ids: &[i64]) -> Result<Vec<i64>> {
        let Some(via) = &r.via else {
            return Ok(ids.to_vec());
        };
        let parent = self
            .schema
            .references
            .iter()
            .find(|p| p.via.is_none() && p.table == via.table)
            .expect("a via parent is validated in the configuration");
        let mut q = Query::new(&format!(
            "SELECT p.{} FROM {} p WHERE p.{}",
            via.key.q(),
            parent.table.q(),
            parent.column.q()
        ));
        tx.backend().push_in_ids(&mut q, ids);
        tx.fetch_ids(&q)
            .await
            .with_context(|| format!("reading {} of the batch", parent.table))
    }

    async fn delete_rows(&self, tx: &mut Tx<'_>, r: &Reference, ids: &[i64]) -> Result<u64> {
        let backend = tx.backend();
        let keys = self.batch_keys(tx, r, ids).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut q = Query::new(&format!("DELETE FROM {} WHERE ", r.table.q()));
        push_rows_of_batch(&mut q, backend, r, &keys);
        tx.execute(&q)
            .await
            .with_context(|| format!("deleting from {}", r.table))
    }

    /// The linked tables of a batch under `action`: `via` tables first (while their parent rows
    /// still point at the batch), then the tables that point at the customers.
    async fn linked_tables(
        &self,
        tx: &mut Tx<'_>,
        action: Action,
        ids: &[i64],
        unknown: Option<i64>,
    ) -> Result<()> {
        let refs = &self.schema.references;
        let ordered = refs
            .iter()
            .filter(|r| r.via.is_some())
            .chain(refs.iter().filter(|r| r.via.is_none()));
        for r in ordered {
            let started = std::time::Instant::now();
            let rows = match (action, r.rows_stay(action)) {
                (Action::Delete, true) if r.via.is_none() => {
                    let unknown =
                        unknown.context("a reassigned table needs the Unknown Customer")?;
                    self.scrub(tx, r, ids, Some(unknown)).await?
                }
                (_, true) => self.scrub(tx, r, ids, None).await?,
                (_, false) => self.delete_rows(tx, r, ids).await?,
            };
            // For profiling a batch: where its time goes, table by table.
            tracing::debug!(
                table = %r.table,
                rows,
                ms = started.elapsed().as_millis() as u64,
                "linked table done"
            );
        }
        Ok(())
    }

    /// Delete: linked rows reassigned to the Unknown Customer (scrubbed) or deleted, then the
    /// customers.
    pub async fn delete(&self, tx: &mut Tx<'_>, ids: &[i64], at: DateTime<Utc>) -> Result<()> {
        let s = self.schema;
        let backend = tx.backend();
        let needs_unknown = s
            .references
            .iter()
            .any(|r| r.via.is_none() && r.on_delete == OnDelete::Reassign);
        let unknown = if needs_unknown {
            Some(self.unknown_customer(tx, at).await?)
        } else {
            None
        };
        self.linked_tables(tx, Action::Delete, ids, unknown).await?;
        let mut q = Query::new(&format!(
            "DELETE FROM {} WHERE {}",
            s.customers.q(),
            s.customer_id.q()
        ));
        backend.push_in_ids(&mut q, ids);
        let deleted = tx
            .execute(&q)
            .await
            .with_context(|| format!("deleting from {}", s.customers))?;
        if deleted != ids.len() as u64 {
            bail!("deleted {deleted} of {} customers; rolled back", ids.len());
        }
        Ok(())
    }

    /// Anonymise: linked rows scrubbed or deleted, then every classified customers column gets
    /// its strategy, set-based for the whole batch.
    pub async fn anonymise(
        &self,
        tx: &mut Tx<'_>,
        report_id: i64,
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<()> {
        let s = self.schema;
        let backend = tx.backend();
        self.linked_tables(tx, Action::Anonymise, ids, None).await?;
        let table = &s.customers;
        // The values of the assignments are bound first; the statement's text comes after.
        let mut q = Query::default();
        let mut sets = Vec::new();
        for (column, strategy) in &self.venue.anonymise {
            sets.extend(strategy_set(&mut q, backend, table, column, strategy));
        }
        let hashed = hashed_columns(self.venue);
        if !hashed.is_empty() {
            sets.extend(self.hash_in_sql(&mut q, backend, table, &hashed)?);
        }
        if !sets.is_empty() {
            q.push(&format!(
                "UPDATE {} SET {} WHERE {}",
                table.q(),
                sets.join(", "),
                s.customer_id.q()
            ));
            backend.push_in_ids(&mut q, ids);
        }
        if !sets.is_empty() {
            let started = std::time::Instant::now();
            let updated = tx
                .execute(&q)
                .await
                .with_context(|| format!("anonymising {}", s.customers))?;
            tracing::debug!(table = %table, rows = updated, ms = started.elapsed().as_millis() as u64, "customers done");
            if updated != ids.len() as u64 {
                bail!(
                    "anonymised {updated} of {} customers; rolled back",
                    ids.len()
                );
            }
        }
        crate::store::anonymised::insert(tx, self.venue.id, report_id, ids, at).await?;
        Ok(())
    }

    /// The venue's Unknown Customer: configured, remembered, or created now (inside the batch's
    /// transaction, so it is created exactly once) and remembered.
    async fn unknown_customer(&self, tx: &mut Tx<'_>, at: DateTime<Utc>) -> Result<i64> {
        let s = self.schema;
        let venue = self.venue;
        if let Some(id) = venue.unknown_customer_id {
            if !self.is_customer_of_venue(tx, id).await? {
                bail!(
                    "venues.unknown_customer_id {id} is not a customer of venue {}",
                    venue.id
                );
            }
            return Ok(id);
        }
        if let Some(id) = crate::store::anonymised::unknown_customer(tx, venue.id).await? {
            if !self.is_customer_of_venue(tx, id).await? {
                bail!("the Unknown Customer record {id} of venue {} no longer exists; restore it or set unknown_customer_id", venue.id);
            }
            return Ok(id);
        }
        let mut columns = vec![s.customer_created_at.q()];
        let mut q = Query::new("");
        let mut values = vec![q.param(at)];
        if let Some(column) = &s.customer_venue {
            columns.push(column.q());
            values.push(q.param(venue.id));
        }
        let labels: &[&str] = if s.display_name.len() >= 2 {
            &["Unknown", "Customer"]
        } else {
            &["Unknown Customer"]
        };
        for (column, label) in s.display_name.iter().zip(labels) {
            columns.push(column.q());
            values.push(q.param(*label));
        }
        q.push(&format!(
            "INSERT INTO {} ({}) VALUES ({})",
            s.customers.q(),
            columns.join(", "),
            values.join(", "),
        ));
        let id = tx
            .insert_returning_id(&q, &s.customer_id.q())
            .await
            .with_context(|| format!("cannot create the Unknown Customer record of venue {}; set unknown_customer_id", venue.id))?;
        crate::store::anonymised::remember_unknown_customer(tx, venue.id, id, at).await?;
        info!(
            venue.id = venue.id,
            customer.id = id,
            "created the Unknown Customer record"
        );
        Ok(id)
    }

    async fn is_customer_of_venue(&self, tx: &mut Tx<'_>, id: i64) -> Result<bool> {
        let q = crate::selection::customer_of_venue(self.schema, self.venue.id, id);
        Ok(tx.fetch_one(&q).await?.i64(0)? == 1)
    }
}

/// The columns a venue anonymises with a keyed hash, in configuration order.
pub fn hashed_columns(venue: &VenueConfig) -> Vec<&Ident> {
    venue
        .anonymise
        .iter()
        .filter(|(_, s)| *s == Strategy::Hash)
        .map(|(c, _)| c)
        .collect()
}

/// The tables an erasure may write to: the customers and every linked table.
pub fn touched_tables(schema: &SchemaConfig) -> Vec<&Ident> {
    let mut tables = vec![&schema.customers];
    for r in &schema.references {
        if !tables.contains(&&r.table) {
            tables.push(&r.table);
        }
    }
    tables
}

/// Once a report is applied, its removed values must not survive in the database's files
/// (SPEC 3). The report is applied whatever happens here, so a failure is logged, not raised;
/// the next applied report tries again.
pub(crate) async fn scrub_files(svc: &crate::Service) {
    let tables = touched_tables(&svc.config.schema);
    let started = std::time::Instant::now();
    match svc
        .db
        .scrub_files(&tables, svc.config.vacuum_after_apply)
        .await
    {
        Ok(()) => info!(
            duration_ms = started.elapsed().as_millis() as u64,
            "database files scrubbed (write-ahead log truncated, or touched tables vacuumed)"
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot scrub the database files after applying")
        }
    }
}
