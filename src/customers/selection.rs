//! Which customers fall under a venue's policy (SPEC 2). One set-based predicate, built from the
//! configured identifiers with every value bound, used for counting, for freezing a report and
//! for the re-check at apply time. Orders are tested with `NOT EXISTS`, which uses the
//! `(customer, placed_at)` index; no customer is loaded into memory.

use crate::config::{ActivitySource, SchemaConfig, VenueConfig};
use crate::db::{Backend, Db, Query, Row, Tx};
use crate::holds::{Condition, Literal};
use crate::policy::Rule;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The policy of one venue as of one cycle.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The backend the predicate is written for.
    pub backend: Backend,
    pub schema: &'a SchemaConfig,
    pub venue: &'a VenueConfig,
    pub cutoff: DateTime<Utc>,
    /// The cycle's time: a hold with a period (`after` + `for`) holds until it has passed.
    pub at: DateTime<Utc>,
    /// Customers an approver kept out of a report after this instant are not candidates
    /// (`approval.keep_for` before the cycle).
    pub kept_since: DateTime<Utc>,
    /// Which of retentiond's own tables the predicate consults.
    pub exclusions: Exclusions,
    /// Which of the venue's rules (SPEC 12): with `[venues.prospects]`, the customers rule
    /// takes those who ever ordered and the prospects rule those who never did.
    pub rule: Rule,
}

/// The tables of retentiond's own that can take a customer out of the selection: Unknown
/// Customers, customers already anonymised, customers kept out of a report. Each is a probe
/// for every idle customer (on SQLite at 1,000,000 customers, 20 to 40 ms each for 300,000 idle
/// ones), so a selection leaves out a table that has no rows ([`Scope::without_empty`]). Apply's
/// re-check always consults all three, so a row added in between never lets a customer through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exclusions {
    pub unknown_customers: bool,
    pub anonymised: bool,
    pub kept: bool,
}

impl Exclusions {
    /// Every table consulted.
    pub const ALL: Exclusions = Exclusions {
        unknown_customers: true,
        anonymised: true,
        kept: true,
    };
}

/// Which exclusion tables have rows ([`Scope::without_empty`]): asked once a venue a cycle, so
/// each part reads at most an index entry or a table's first row (a test checks its plan).
pub const EXCLUSIONS_PROBE: &str =
    "SELECT (SELECT COUNT(*) FROM (SELECT 1 AS x FROM retention_unknown_customers LIMIT 1) u), \
     (SELECT COUNT(*) FROM (SELECT 1 AS x FROM retention_anonymised LIMIT 1) a), \
     (SELECT COALESCE(MAX(kept_count), 0) FROM retention_reports)";

impl<'a> Scope<'a> {
    /// The policy of `venue` as of the cycle at `at`.
    pub fn new(
        config: &'a crate::config::Config,
        backend: Backend,
        venue: &'a VenueConfig,
        at: DateTime<Utc>,
    ) -> Scope<'a> {
        Scope::for_rule(config, backend, venue, at, Rule::Customers)
    }

    /// The policy of one of `venue`'s rules as of the cycle at `at`.
    pub fn for_rule(
        config: &'a crate::config::Config,
        backend: Backend,
        venue: &'a VenueConfig,
        at: DateTime<Utc>,
        rule: Rule,
    ) -> Scope<'a> {
        Scope {
            backend,
            schema: &config.schema,
            venue,
            cutoff: crate::policy::cutoff(at, venue.timezone, venue.rule(rule).0),
            at,
            kept_since: config.approval.keep_for.before(at),
            exclusions: Exclusions::ALL,
            rule,
        }
    }

    /// This scope without the exclusion tables that have no rows now (a reading made before
    /// the selection; see [`Exclusions`]).
    ///
    /// Whether any report has customers kept out is read as the largest `kept_count`, which
    /// every backend takes from the end of its index: asked as "any report with
    /// `kept_count > 0`", PostgreSQL scanned every report whenever its statistics were older
    /// than the reports (a fleet's first night: 0.20 ms a venue at 250 venues, 0.46 ms at 1,000,
    /// since each venue's cycle read the whole fleet's reports).
    pub async fn without_empty(mut self, db: &Db) -> Result<Scope<'a>> {
        let row = db.fetch_one(&Query::new(EXCLUSIONS_PROBE)).await?;
        self.exclusions = Exclusions {
            unknown_customers: row.i64(0)? > 0,
            anonymised: row.i64(1)? > 0,
            kept: row.i64(2)? > 0,
        };
        Ok(self)
    }
}

impl Scope<'_> {
    /// Appends `FROM customers c WHERE <candidate>`.
    pub fn push_from_candidates(&self, q: &mut Query) {
        let s = self.schema;
        q.push(&format!(" FROM {} c WHERE ", s.customers.q()));
        self.push_filter(q);
    }

    /// Appends the candidate predicate for the customers table aliased `c`.
    pub fn push_filter(&self, q: &mut Query) {
        let unknown: Vec<i64> = self.venue.unknown_customer_id.into_iter().collect();
        self.push_filter_of(q, &[self.venue.id], &unknown, true);
    }

    /// The candidate predicate for the customers of any of `venues`, which share this scope's
    /// cutoff, leaving out the customers `unknown` (their Unknown Customer records; an id
    /// belongs to one venue, so leaving out every venue's is exact).
    fn push_filter_of(&self, q: &mut Query, venues: &[i64], unknown: &[i64], with_holds: bool) {
        let s = self.schema;
        let id = s.customer_id.q();
        // The venue first: SQLite tests the terms of a scan in the order written, and the venue
        // column comes before the creation time in most rows (0.27 s against 0.34 s for the
        // same count at 1,000,000 customers).
        if let Some(venue) = &s.customer_venue {
            match venues {
                [one] => {
                    q.push(&format!("c.{} = ", venue.q())).bind(*one);
                }
                many => {
                    q.push(&format!("c.{}", venue.q()));
                    self.backend.push_in_ids(q, many);
                }
            }
            q.push(" AND ");
        }
        q.push(&format!("c.{} < ", s.customer_created_at.q()))
            .bind(self.cutoff);
        q.push(&format!(
            " AND NOT EXISTS (SELECT 1 FROM {} o WHERE o.{} = c.{id} AND o.{} >= ",
            s.orders.q(),
            s.order_customer.q(),
            s.order_placed_at.q()
        ))
        .bind(self.cutoff)
        .push(")");
        if self.venue.prospects.is_some() {
            // Prospects never ordered; the customers rule takes the others.
            q.push(match self.rule {
                Rule::Customers | Rule::Request => " AND EXISTS",
                Rule::Prospects => " AND NOT EXISTS",
            });
            q.push(&format!(
                " (SELECT 1 FROM {} ever WHERE ever.{} = c.{id})",
                s.orders.q(),
                s.order_customer.q()
            ));
        }
        for (n, source) in s.activity.iter().enumerate() {
            push_no_activity_since(q, source, n, &format!("c.{id}"));
            q.bind(self.cutoff).push(")");
        }
        for column in &s.customer_activity {
            let col = column.q();
            q.push(&format!(" AND (c.{col} IS NULL OR c.{col} < "))
                .bind(self.cutoff)
                .push(")");
        }
        if with_holds {
            for n in 0..s.holds.len() {
                if s.holds[n].column.is_none() {
                    // A condition on a NULL value is NULL: not held. (`IS NOT TRUE` rather
                    // than a CASE: PostgreSQL estimates it from the column's statistics, and
                    // with a CASE it took 1 customer in 200 for candidates and read the
                    // activity tables once per customer, 28 times the hand-written count.)
                    q.push(" AND ");
                    self.push_held(q, n);
                    q.push(" IS NOT TRUE");
                } else {
                    q.push(" AND NOT ");
                    self.push_held(q, n);
                }
            }
        }
        match unknown {
            [] => {}
            [one] => {
                q.push(&format!(" AND c.{id} <> ")).bind(*one);
            }
            many => {
                q.push(&format!(" AND NOT (c.{id}"));
                self.backend.push_in_ids(q, many);
                q.push(")");
            }
        }
        if self.exclusions.unknown_customers {
            q.push(&format!(
                " AND NOT EXISTS (SELECT 1 FROM retention_unknown_customers u WHERE u.customer_id = c.{id})"
            ));
        }
        if self.exclusions.anonymised {
            q.push(&format!(
                " AND NOT EXISTS (SELECT 1 FROM retention_anonymised a WHERE a.customer_id = c.{id})"
            ));
        }
        if self.exclusions.kept {
            q.push(&format!(
                " AND NOT EXISTS (SELECT 1 FROM retention_report_items k WHERE k.customer_id = c.{id} AND k.kept_at IS NOT NULL AND k.kept_at > "
            ))
            .bind(self.kept_since)
            .push(")");
        }
    }
}

impl Scope<'_> {
    /// The time after which hold `n`'s `after` column still protects: its period before the
    /// cycle, from the venue's local midnight (a day early rather than late); `None` without
    /// a period.
    pub fn hold_since(&self, n: usize) -> Option<DateTime<Utc>> {
        self.schema.holds[n]
            .until
            .as_ref()
            .map(|(_, period)| crate::policy::cutoff(self.at, self.venue.timezone, *period))
    }

    /// Appends a condition true when hold `n` holds the customer `c` (for a hold on the
    /// customers table, NULL where a compared value is NULL).
    fn push_held(&self, q: &mut Query, n: usize) {
        let s = self.schema;
        let hold = &s.holds[n];
        let alias = match &hold.column {
            None => "c".to_string(),
            Some(column) => {
                q.push(&format!(
                    "EXISTS (SELECT 1 FROM {} h{n} WHERE h{n}.{} = c.{}",
                    hold.table.q(),
                    column.q(),
                    s.customer_id.q()
                ));
                format!("h{n}")
            }
        };
        let mut first = hold.column.is_none();
        let mut and = |q: &mut Query| {
            q.push(if first { "(" } else { " AND " });
            first = false;
        };
        for condition in &hold.when {
            and(q);
            push_condition(q, self.backend, &alias, condition);
        }
        if let (Some((after, _)), Some(since)) = (&hold.until, self.hold_since(n)) {
            and(q);
            q.push(&format!("{alias}.{} > ", after.q())).bind(since);
        }
        q.push(")");
    }

    /// The venue's customers that would be candidates but for the holds, and of them how
    /// many each hold keeps back (a customer under two holds counts in both), and under any.
    pub async fn held_back(&self, db: &Db) -> Result<HeldBack> {
        if self.schema.holds.is_empty() {
            return Ok(HeldBack::default());
        }
        let unknown: Vec<i64> = self.venue.unknown_customer_id.into_iter().collect();
        let q = self.held_back_query(&[self.venue.id], &unknown, false);
        HeldBack::from_row(self.schema, &db.fetch_one(&q).await?, 0)
    }

    /// [`Scope::held_back`] inside `tx` (the report's own, as it is made).
    pub async fn held_back_in(&self, tx: &mut Tx<'_>) -> Result<HeldBack> {
        if self.schema.holds.is_empty() {
            return Ok(HeldBack::default());
        }
        let unknown: Vec<i64> = self.venue.unknown_customer_id.into_iter().collect();
        let q = self.held_back_query(&[self.venue.id], &unknown, false);
        HeldBack::from_row(self.schema, &tx.fetch_one(&q).await?, 0)
    }

    /// `SELECT [venue,] <per hold>, <any hold> FROM customers c WHERE <candidate but for holds>`
    /// for the customers of `venues` (grouped by venue with `by_venue`).
    fn held_back_query(&self, venues: &[i64], unknown: &[i64], by_venue: bool) -> Query {
        let holds = &self.schema.holds;
        let mut q = Query::new("SELECT ");
        let venue_column = self.schema.customer_venue.as_ref().filter(|_| by_venue);
        if let Some(v) = venue_column {
            q.push(&format!("c.{}, ", v.q()));
        }
        for n in 0..holds.len() {
            q.push("SUM(CASE WHEN ");
            self.push_held(&mut q, n);
            q.push(" THEN 1 ELSE 0 END), ");
        }
        q.push("SUM(CASE WHEN ");
        for n in 0..holds.len() {
            if n > 0 {
                q.push(" OR ");
            }
            self.push_held(&mut q, n);
        }
        // The candidates: held by none (a NULL condition holds nobody).
        q.push(" THEN 1 ELSE 0 END), SUM(CASE WHEN ");
        for n in 0..holds.len() {
            if n > 0 {
                q.push(" OR ");
            }
            self.push_held(&mut q, n);
        }
        q.push(&format!(
            " THEN 0 ELSE 1 END) FROM {} c WHERE ",
            self.schema.customers.q()
        ));
        self.push_filter_of(&mut q, venues, unknown, false);
        if let Some(v) = venue_column {
            q.push(&format!(" GROUP BY c.{}", v.q()));
        }
        q
    }

    /// Of `ids`, the name of the first hold (in configuration order) holding each one held.
    pub async fn holding(&self, tx: &mut Tx<'_>, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut found = HashMap::new();
        let id = self.schema.customer_id.q();
        for (n, hold) in self.schema.holds.iter().enumerate() {
            let mut q = Query::new(&format!(
                "SELECT c.{id} FROM {} c WHERE c.{id}",
                self.schema.customers.q()
            ));
            self.backend.push_in_ids(&mut q, ids);
            q.push(" AND ");
            self.push_held(&mut q, n);
            for row in tx.fetch_all(&q).await? {
                found
                    .entry(row.i64(0)?)
                    .or_insert_with(|| hold.name.clone());
            }
        }
        Ok(found)
    }
}

/// What the holds keep back of a venue's otherwise-idle customers (SPEC 12).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldBack {
    /// Customers under any hold.
    pub total: u64,
    /// Per hold, in configuration order.
    pub by_hold: Vec<(String, u64)>,
}

impl HeldBack {
    /// Read from `row` from column `first`: one count per hold, then the count under any.
    fn from_row(schema: &SchemaConfig, row: &Row, first: usize) -> Result<HeldBack> {
        let holds = &schema.holds;
        let count =
            |i: usize| -> Result<u64> { Ok(row.opt_i64(first + i)?.unwrap_or(0).max(0) as u64) };
        Ok(HeldBack {
            total: count(holds.len())?,
            by_hold: holds
                .iter()
                .enumerate()
                .map(|(n, h)| Ok((h.name.clone(), count(n)?)))
                .collect::<Result<_>>()?,
        })
    }

    /// "312 kept back: Gift Aid declaration 300, account balance 12", or `None` when no hold
    /// keeps anyone back.
    pub fn in_words(&self) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let parts: Vec<String> = self
            .by_hold
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        Some(format!("{} kept back: {}", self.total, parts.join(", ")))
    }
}

/// `alias.column OP $value`; a boolean value compares the column as 0/1, so that BOOLEAN and
/// 0/1 INTEGER columns are one spelling.
fn push_condition(q: &mut Query, backend: Backend, alias: &str, condition: &Condition) {
    let column = format!("{alias}.{}", condition.column.q());
    match &condition.value {
        Literal::None => {
            q.push(&format!("{column} {}", condition.op.sql()));
        }
        Literal::Bool(b) => {
            q.push(&format!(
                "{} {} ",
                backend.cast_int(&column),
                condition.op.sql()
            ))
            .bind(i64::from(*b));
        }
        Literal::Int(i) => {
            q.push(&format!("{column} {} ", condition.op.sql()))
                .bind(*i);
        }
        Literal::Float(f) => {
            q.push(&format!("{column} {} ", condition.op.sql()))
                .bind(crate::db::Value::Float(*f));
        }
        Literal::Text(t) => {
            q.push(&format!("{column} {} ", condition.op.sql()))
                .bind(t.as_str());
        }
    }
}

/// The candidates and all the customers of each of `venues`, counted per venue in two
/// statements for them all: a fleet's dry run (SPEC 11), instead of two for each venue. The
/// venues are grouped by cutoff (their time zone and `inactive_for`), so venues that share a
/// policy share a statement. `scopes`: each venue's scope, all with the same exclusions.
pub async fn count_by_venue<'a>(db: &Db, scopes: &[Scope<'a>]) -> Result<HashMap<i64, (u64, u64)>> {
    count_by_venue_of(db, scopes, true).await
}

/// What venues must share to be counted in one statement: the cutoff, and the start of every
/// hold's period (`None` for a hold without one).
type SharedBounds = (DateTime<Utc>, Vec<Option<DateTime<Utc>>>);

/// `scopes` grouped so that venues sharing the cutoff and every hold's period start share a
/// statement.
fn sharing_a_statement<'s, 'a>(
    scopes: &'s [Scope<'a>],
) -> BTreeMap<SharedBounds, Vec<&'s Scope<'a>>> {
    let mut groups: BTreeMap<_, Vec<&Scope<'a>>> = BTreeMap::new();
    for scope in scopes {
        let since = (0..scope.schema.holds.len())
            .map(|n| scope.hold_since(n))
            .collect();
        groups.entry((scope.cutoff, since)).or_default().push(scope);
    }
    groups
}

/// [`count_by_venue`]; the candidates left at 0 unless `candidates` (another statement counts
/// them).
async fn count_by_venue_of<'a>(
    db: &Db,
    scopes: &[Scope<'a>],
    candidates: bool,
) -> Result<HashMap<i64, (u64, u64)>> {
    let mut counts: HashMap<i64, (u64, u64)> = HashMap::new();
    let groups = sharing_a_statement(scopes);
    let Some(first) = scopes.first() else {
        return Ok(counts);
    };
    let schema = first.schema;
    let Some(venue_column) = &schema.customer_venue else {
        // A database of one venue: its own count.
        let (candidates, customers) = (
            count_candidates(db, first).await?,
            count_customers(db, schema, first.venue.id).await?,
        );
        counts.insert(first.venue.id, (candidates, customers));
        return Ok(counts);
    };
    // SQLite tests each customer's orders in a subquery of its own however the count is
    // written, so there the candidates and all customers are counted in the same scan (a
    // second statement for the customers made its dry run of 1,000 venues 1.9 times one
    // GROUP BY count); elsewhere a second, index-only count is cheaper than turning the
    // anti-join into a subquery per customer.
    let in_one_scan = candidates && first.backend.selects_row_by_row();
    for group in groups.values().filter(|_| candidates) {
        let venues: Vec<i64> = group.iter().map(|s| s.venue.id).collect();
        let unknown: Vec<i64> = group
            .iter()
            .filter_map(|s| s.venue.unknown_customer_id)
            .collect();
        let v = venue_column.q();
        let mut q = if in_one_scan {
            let mut q = Query::new(&format!("SELECT c.{v}, COUNT(CASE WHEN "));
            group[0].push_filter_of(&mut q, &venues, &unknown, true);
            q.push(&format!(
                " THEN 1 END), COUNT(*) FROM {} c WHERE c.{v}",
                schema.customers.q()
            ));
            first.backend.push_in_ids(&mut q, &venues);
            q
        } else {
            let mut q = Query::new(&format!("SELECT c.{v}, COUNT(*)"));
            q.push(&format!(" FROM {} c WHERE ", schema.customers.q()));
            group[0].push_filter_of(&mut q, &venues, &unknown, true);
            q
        };
        q.push(&format!(" GROUP BY c.{v}"));
        for row in db.fetch_all(&q).await? {
            let counted = counts.entry(row.i64(0)?).or_default();
            counted.0 = row.i64(1)? as u64;
            if in_one_scan {
                counted.1 = row.i64(2)? as u64;
            }
        }
        for venue in &venues {
            counts.entry(*venue).or_default();
        }
    }
    if in_one_scan {
        return Ok(counts);
    }
    let venues: Vec<i64> = scopes.iter().map(|s| s.venue.id).collect();
    let mut q = Query::new(&format!(
        "SELECT c.{v}, COUNT(*) FROM {} c WHERE c.{v}",
        schema.customers.q(),
        v = venue_column.q()
    ));
    first.backend.push_in_ids(&mut q, &venues);
    q.push(&format!(" GROUP BY c.{}", venue_column.q()));
    for row in db.fetch_all(&q).await? {
        counts.entry(row.i64(0)?).or_default().1 = row.i64(1)? as u64;
    }
    Ok(counts)
}

/// Appends ` AND NOT EXISTS (<a row of source for the customer> AND <its time> >= ` (the caller
/// binds the cutoff and closes the parenthesis). `n` numbers the aliases of this source.
fn push_no_activity_since(q: &mut Query, source: &ActivitySource, n: usize, customer: &str) {
    q.push(" AND NOT EXISTS (");
    q.push(&activity_rows(source, n, customer));
    q.push(&format!(" AND act{n}.{} >= ", source.at.q()));
}

/// `SELECT 1 FROM <source> act{n} [JOIN <via parent> actp{n}] WHERE <row belongs to customer>`.
fn activity_rows(source: &ActivitySource, n: usize, customer: &str) -> String {
    let table = source.table.q();
    let column = source.column.q();
    match &source.via {
        None => format!("SELECT 1 FROM {table} act{n} WHERE act{n}.{column} = {customer}"),
        Some(via) => format!(
            "SELECT 1 FROM {parent} actp{n} JOIN {table} act{n} ON act{n}.{column} = actp{n}.{key} WHERE actp{n}.{cust} = {customer}",
            parent = via.table.q(),
            key = via.key.q(),
            cust = via.customer.q()
        ),
    }
}

/// A fleet's dry run (SPEC 11, 12): each venue's candidates, all its customers and what its
/// holds keep back. With holds, the candidates and the held are counted in one pass per shared
/// cutoff (one statement for both, not one each: a second pass made SQLite's dry run of 1,000
/// venues 2.1 times one GROUP BY count); without, as [`count_by_venue`] counts them.
pub async fn dry_run_by_venue(
    db: &Db,
    scopes: &[Scope<'_>],
) -> Result<HashMap<i64, (u64, u64, HeldBack)>> {
    let with_holds = scopes.first().is_some_and(counts_held_in_the_same_pass);
    let (counts, held) = if !with_holds {
        (count_by_venue_of(db, scopes, true).await?, HashMap::new())
    } else if db.backend() == Backend::Sqlite {
        // One after the other: two passes at once fault the same memory-mapped file (see
        // `dry_run_of_venue`).
        (
            count_by_venue_of(db, scopes, false).await?,
            held_back_by_venue(db, scopes).await?,
        )
    } else {
        // The customers' grouped count beside the pass over the candidates, on two of the
        // server's connections: one after the other, it was 13 ms of a 67 ms dry run of 250
        // venues (PostgreSQL), against a bare count of 45 ms.
        tokio::try_join!(
            count_by_venue_of(db, scopes, false),
            held_back_by_venue(db, scopes)
        )?
    };
    let mut counted: HashMap<i64, (u64, u64, HeldBack)> = counts
        .into_iter()
        .map(|(venue, (candidates, customers))| {
            let (held_candidates, held_back) = held.get(&venue).cloned().unwrap_or_default();
            let candidates = if with_holds {
                held_candidates
            } else {
                candidates
            };
            (venue, (candidates, customers, held_back))
        })
        .collect();
    // A venue without a customer has no group in the counts: it is counted, as none. (Left
    // out, each such venue of a fleet counted itself again: a dry run of 10,000 venues on an
    // empty customers table made 50,000 statements, against 22.)
    for scope in scopes {
        counted.entry(scope.venue.id).or_default();
    }
    Ok(counted)
}

/// Whether the candidates and what the holds keep back are counted in one pass: with holds
/// and a venue column (a grouped count of the venue's customers beside it is index-only).
fn counts_held_in_the_same_pass(scope: &Scope<'_>) -> bool {
    !scope.schema.holds.is_empty() && scope.schema.customer_venue.is_some()
}

/// One venue's dry run: its candidates, its customers as far as the brake needs them, and what
/// its holds keep back. With holds, one pass counts the candidates and the held, as
/// [`dry_run_by_venue`] counts each venue of a fleet: a pass for each, one after the other, was
/// 2.2 times the bare count on SQLite (1,000,000 customers, orders in the order they were
/// placed), and the two at once on two connections slower still (0.79 s against 0.58 s: both
/// scans fault the same memory-mapped file).
pub async fn dry_run_of_venue(db: &Db, scope: &Scope<'_>) -> Result<(u64, u64, HeldBack)> {
    if counts_held_in_the_same_pass(scope) {
        let counted = dry_run_by_venue(db, std::slice::from_ref(scope)).await?;
        return Ok(counted.get(&scope.venue.id).cloned().unwrap_or_default());
    }
    let (candidates, customers) = count_for_brake(db, scope).await?;
    Ok((candidates, customers, scope.held_back(db).await?))
}

/// What the holds keep back of each of `venues` (see [`Scope::held_back`]) and their
/// candidates, in one statement per shared cutoff.
async fn held_back_by_venue(
    db: &Db,
    scopes: &[Scope<'_>],
) -> Result<HashMap<i64, (u64, HeldBack)>> {
    let mut held = HashMap::new();
    let Some(first) = scopes.first() else {
        return Ok(held);
    };
    if first.schema.holds.is_empty() {
        return Ok(held);
    }
    if first.schema.customer_venue.is_none() {
        return Ok(held);
    }
    let groups = sharing_a_statement(scopes);
    for group in groups.values() {
        let venues: Vec<i64> = group.iter().map(|s| s.venue.id).collect();
        let unknown: Vec<i64> = group
            .iter()
            .filter_map(|s| s.venue.unknown_customer_id)
            .collect();
        let q = group[0].held_back_query(&venues, &unknown, true);
        let candidates_at = 1 + first.schema.holds.len() + 1;
        for row in db.fetch_all(&q).await? {
            let candidates = row.opt_i64(candidates_at)?.unwrap_or(0).max(0) as u64;
            held.insert(
                row.i64(0)?,
                (candidates, HeldBack::from_row(first.schema, &row, 1)?),
            );
        }
    }
    Ok(held)
}

/// The latest activity time of the customer whose id is the SQL expression `customer`: its
/// latest order, or the latest time in any `[[schema.activity]]` table (a future one
/// included), NULL when there is none.
pub fn last_activity_of(backend: Backend, schema: &SchemaConfig, customer: &str) -> String {
    let last_order = format!(
        "(SELECT MAX(o.{placed}) FROM {orders} o WHERE o.{cust} = {customer})",
        placed = schema.order_placed_at.q(),
        orders = schema.orders.q(),
        cust = schema.order_customer.q()
    );
    if schema.activity.is_empty() {
        return last_order;
    }
    let mut latest = vec![backend.as_timestamp(&last_order)];
    for (n, source) in schema.activity.iter().enumerate() {
        let rows = activity_rows(source, n, customer);
        let max = rows.replacen(
            "SELECT 1 ",
            &format!("SELECT MAX(act{n}.{}) ", source.at.q()),
            1,
        );
        latest.push(backend.as_timestamp(&format!("({max})")));
    }
    backend.greatest_not_null(&latest)
}

/// Appends ` AND <prefix>venue = venue_id` where the customers table names each customer's
/// venue; a database of one venue needs no filter.
pub fn push_venue_filter(q: &mut Query, schema: &SchemaConfig, prefix: &str, venue_id: i64) {
    if let Some(venue) = &schema.customer_venue {
        q.push(&format!(" AND {prefix}{} = ", venue.q()))
            .bind(venue_id);
    }
}

/// The venue of each of `ids` still in the customers table (in a database of one venue, the
/// scope's own).
pub async fn venues_of(tx: &mut Tx<'_>, scope: &Scope<'_>, ids: &[i64]) -> Result<Vec<(i64, i64)>> {
    let s = scope.schema;
    let mut q = Query::new(&format!(
        "SELECT {id}, {venue} FROM {customers} WHERE {id}",
        id = s.customer_id.q(),
        venue = s
            .customer_venue
            .as_ref()
            .map_or(scope.venue.id.to_string(), |v| v.q()),
        customers = s.customers.q()
    ));
    tx.backend().push_in_ids(&mut q, ids);
    tx.fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
        .collect()
}

/// Counts the customers with id `id` that belong to `venue_id` (0 or 1).
pub fn customer_of_venue(schema: &SchemaConfig, venue_id: i64, id: i64) -> Query {
    let mut q = Query::new(&format!(
        "SELECT COUNT(*) FROM {} WHERE {} = ",
        schema.customers.q(),
        schema.customer_id.q()
    ));
    q.bind(id);
    push_venue_filter(&mut q, schema, "", venue_id);
    q
}

/// How many customers fall under the policy now.
pub async fn count_candidates(db: &Db, scope: &Scope<'_>) -> Result<u64> {
    let mut q = Query::new("SELECT COUNT(*)");
    scope.push_from_candidates(&mut q);
    Ok(db.fetch_one(&q).await?.i64(0)? as u64)
}

/// A dry run's candidates of one venue and its customers as far as the brake needs them:
/// counted in the selection's own scan where that is free, else after it, up to where the brake
/// is off for sure (a count stopped at that point decides the brake as the whole count would:
/// short of it the count is whole, and at it the brake is off). The whole count beside the
/// selection, on a connection of its own, made PostgreSQL's dry run 1.30 times the bare count
/// (its selection already runs on both cores); counting both in one statement there turns the
/// anti-join into a subquery per customer on one core: 0.65 s against 0.30 s.
pub async fn count_for_brake(db: &Db, scope: &Scope<'_>) -> Result<(u64, u64)> {
    if db.backend().selects_row_by_row() {
        // SQLite tests each customer's orders in a subquery of its own however the count is
        // written, so the venue's customers are counted in the same scan for nothing.
        return count_candidates_and_customers(db, scope).await;
    }
    let candidates = count_candidates(db, scope).await?;
    let clearing = crate::policy::customers_clearing_brake(candidates, scope.venue.max_share);
    let customers = match clearing {
        0 => 0,
        _ => count_customers_up_to(db, scope.schema, scope.venue.id, clearing).await?,
    };
    Ok((candidates, customers))
}

/// The candidates and all the venue's customers, counted in one scan of the customers table
/// (for a backend that [`Backend::selects_row_by_row`]).
pub async fn count_candidates_and_customers(db: &Db, scope: &Scope<'_>) -> Result<(u64, u64)> {
    let mut q = Query::new("SELECT COUNT(CASE WHEN ");
    scope.push_filter(&mut q);
    q.push(&format!(
        " THEN 1 END), COUNT(*) FROM {} c WHERE 1 = 1",
        scope.schema.customers.q()
    ));
    push_venue_filter(&mut q, scope.schema, "c.", scope.venue.id);
    let row = db.fetch_one(&q).await?;
    Ok((row.i64(0)? as u64, row.i64(1)? as u64))
}

/// The candidates' ids, in id order (for small venues, tests and dry runs).
pub async fn candidate_ids(db: &Db, scope: &Scope<'_>) -> Result<Vec<i64>> {
    let mut q = Query::new(&format!("SELECT c.{}", scope.schema.customer_id.q()));
    scope.push_from_candidates(&mut q);
    q.push(&format!(" ORDER BY c.{}", scope.schema.customer_id.q()));
    db.fetch_all(&q).await?.iter().map(|r| r.i64(0)).collect()
}

/// All customers of the venue, the denominator of the brake.
pub async fn count_customers(db: &Db, schema: &SchemaConfig, venue_id: i64) -> Result<u64> {
    Ok(db
        .fetch_one(&customers_of_venue(schema, venue_id))
        .await?
        .i64(0)? as u64)
}

/// [`count_customers`] inside `tx` (a report's own transaction, once it has candidates).
pub async fn count_customers_in(
    tx: &mut Tx<'_>,
    schema: &SchemaConfig,
    venue_id: i64,
) -> Result<u64> {
    Ok(tx
        .fetch_one(&customers_of_venue(schema, venue_id))
        .await?
        .i64(0)? as u64)
}

fn customers_of_venue(schema: &SchemaConfig, venue_id: i64) -> Query {
    let mut q = Query::new(&format!(
        "SELECT COUNT(*) FROM {} WHERE 1 = 1",
        schema.customers.q()
    ));
    push_venue_filter(&mut q, schema, "", venue_id);
    q
}

/// The venue's customers counted up to `limit` at most: as far as the brake needs to look
/// ([`crate::policy::customers_clearing_brake`]). A dry run uses it; a report records the
/// whole count.
pub async fn count_customers_up_to(
    db: &Db,
    schema: &SchemaConfig,
    venue_id: i64,
    limit: u64,
) -> Result<u64> {
    let mut q = Query::new(&format!(
        "SELECT COUNT(*) FROM (SELECT 1 AS x FROM {} WHERE 1 = 1",
        schema.customers.q()
    ));
    push_venue_filter(&mut q, schema, "", venue_id);
    q.push(" LIMIT ").bind(limit as i64).push(") t");
    Ok(db.fetch_one(&q).await?.i64(0)? as u64)
}

/// Freezes the current candidates into `report_id`'s items, each with its last order time (for
/// the report page and CSV), set-based; returns how many.
pub async fn freeze_into_report(tx: &mut Tx<'_>, scope: &Scope<'_>, report_id: i64) -> Result<u64> {
    let mut q = Query::new(
        "INSERT INTO retention_report_items (report_id, customer_id, last_order_at) SELECT ",
    );
    q.bind(report_id).push(&format!(
        ", c.{id}, {last}",
        id = scope.schema.customer_id.q(),
        last = last_activity_of(
            scope.backend,
            scope.schema,
            &format!("c.{}", scope.schema.customer_id.q())
        )
    ));
    scope.push_from_candidates(&mut q);
    tx.execute(&q).await
}

/// Of `ids`, those that are still candidates (the re-check before an action).
pub async fn still_candidates(
    tx: &mut Tx<'_>,
    scope: &Scope<'_>,
    ids: &[i64],
) -> Result<HashSet<i64>> {
    let backend = tx.backend();
    let id = scope.schema.customer_id.q();
    let mut q = Query::new(&format!("SELECT c.{id}"));
    scope.push_from_candidates(&mut q);
    q.push(&format!(" AND c.{id}"));
    backend.push_in_ids(&mut q, ids);
    Ok(tx.fetch_ids(&q).await?.into_iter().collect())
}
