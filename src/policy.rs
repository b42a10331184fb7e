//! The pure policy logic, apart from all I/O: calendar periods and the selection cutoff,
//! actions and anonymisation strategies, report states and customer outcomes.

use chrono::{DateTime, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::fmt;
use std::str::FromStr;

/// A calendar period such as `"3 years"`, `"18 months"`, `"2 weeks"` or `"400 days"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarPeriod {
    pub amount: u32,
    pub unit: PeriodUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodUnit {
    Years,
    Months,
    Weeks,
    Days,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("expected a period like \"3 years\", \"18 months\", \"2 weeks\" or \"400 days\" (a whole number from 1 to 1000), got {0:?}")]
pub struct PeriodError(pub String);

impl FromStr for CalendarPeriod {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeriodError(s.to_string());
        let mut parts = s.split_whitespace();
        let (Some(amount), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err());
        };
        let amount: u32 = amount.parse().map_err(|_| err())?;
        if !(1..=1000).contains(&amount) {
            return Err(err());
        }
        let unit = match unit.to_ascii_lowercase().as_str() {
            "year" | "years" => PeriodUnit::Years,
            "month" | "months" => PeriodUnit::Months,
            "week" | "weeks" => PeriodUnit::Weeks,
            "day" | "days" => PeriodUnit::Days,
            _ => return Err(err()),
        };
        Ok(CalendarPeriod { amount, unit })
    }
}

impl fmt::Display for CalendarPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            PeriodUnit::Years => "year",
            PeriodUnit::Months => "month",
            PeriodUnit::Weeks => "week",
            PeriodUnit::Days => "day",
        };
        let plural = if self.amount == 1 { "" } else { "s" };
        write!(f, "{} {unit}{plural}", self.amount)
    }
}

impl CalendarPeriod {
    /// The date `self` before `date`; a day that does not exist in the target month is clamped
    /// to the month's last day (31 March minus 1 month is 28 or 29 February).
    pub fn before_date(&self, date: NaiveDate) -> NaiveDate {
        let earliest = NaiveDate::MIN;
        match self.unit {
            PeriodUnit::Years => date.checked_sub_months(Months::new(self.amount * 12)),
            PeriodUnit::Months => date.checked_sub_months(Months::new(self.amount)),
            PeriodUnit::Weeks => date.checked_sub_days(Days::new(u64::from(self.amount) * 7)),
            PeriodUnit::Days => date.checked_sub_days(Days::new(u64::from(self.amount))),
        }
        .unwrap_or(earliest)
    }

    /// The instant `self` after `at`, counted in UTC calendar days and months (link expiry,
    /// report intervals, reminders).
    pub fn after(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let later = match self.unit {
            PeriodUnit::Years => at.checked_add_months(Months::new(self.amount * 12)),
            PeriodUnit::Months => at.checked_add_months(Months::new(self.amount)),
            PeriodUnit::Weeks => at.checked_add_days(Days::new(u64::from(self.amount) * 7)),
            PeriodUnit::Days => at.checked_add_days(Days::new(u64::from(self.amount))),
        };
        later.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The instant `self` before `at`, counted as [`CalendarPeriod::after`] counts.
    pub fn before(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let earlier = match self.unit {
            PeriodUnit::Years => at.checked_sub_months(Months::new(self.amount * 12)),
            PeriodUnit::Months => at.checked_sub_months(Months::new(self.amount)),
            PeriodUnit::Weeks => at.checked_sub_days(Days::new(u64::from(self.amount) * 7)),
            PeriodUnit::Days => at.checked_sub_days(Days::new(u64::from(self.amount))),
        };
        earlier.unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// The selection cutoff of SPEC 2: local midnight in `tz` of the date `(at in tz) - period`, as UTC.
/// Where that midnight does not exist (a DST gap at midnight) it is the first instant of that day.
pub fn cutoff(at: DateTime<Utc>, tz: Tz, period: CalendarPeriod) -> DateTime<Utc> {
    let local_date = at.with_timezone(&tz).date_naive();
    start_of_day(period.before_date(local_date), tz)
}

/// The first instant of `date` in `tz`, in UTC.
pub fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    // Gaps are at most a few hours; step forward a minute at a time to the first valid instant.
    (0..=24 * 60)
        .find_map(|minutes| {
            tz.from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .expect("every day has a valid local time")
}

/// Which of a venue's rules a report follows (SPEC 12): its policy for customers, or
/// `[venues.prospects]` for those who never ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    #[default]
    Customers,
    Prospects,
    /// One person's erasure on request (SPEC 13): applied when made, one item.
    Request,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Customers => "customers",
            Rule::Prospects => "prospects",
            Rule::Request => "request",
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customers" => Ok(Rule::Customers),
            "prospects" => Ok(Rule::Prospects),
            "request" => Ok(Rule::Request),
            other => Err(format!("unknown report rule {other:?}")),
        }
    }
}

/// What happens to a venue's selected customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Delete,
    Anonymise,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Anonymise => "anonymise",
        }
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delete" => Ok(Action::Delete),
            "anonymise" | "anonymize" => Ok(Action::Anonymise),
            _ => Err(format!("expected \"delete\" or \"anonymise\", got {s:?}")),
        }
    }
}

/// How one column of an anonymised customer is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Keep,
    Null,
    /// Replaced by a fixed text.
    Redact(String),
    /// Keyed HMAC-SHA-256, hex.
    Hash,
    /// A date keeps only its year, as 1 January.
    Year,
    /// Keeps the first N characters.
    Prefix(u32),
}

pub const DEFAULT_REDACTION: &str = "[removed]";

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = || {
            format!(
                "expected one of \"keep\", \"null\", \"redact\", \"redact:TEXT\", \"hash\", \"year\", \"prefix:N\" (N from 1 to 1000), got {s:?}"
            )
        };
        Ok(match s {
            "keep" => Strategy::Keep,
            "null" => Strategy::Null,
            "redact" => Strategy::Redact(DEFAULT_REDACTION.to_string()),
            "hash" => Strategy::Hash,
            "year" => Strategy::Year,
            _ => {
                if let Some(text) = s.strip_prefix("redact:") {
                    Strategy::Redact(text.to_string())
                } else if let Some(n) = s.strip_prefix("prefix:") {
                    match n.parse::<u32>() {
                        Ok(n) if (1..=1000).contains(&n) => Strategy::Prefix(n),
                        _ => return Err(expected()),
                    }
                } else {
                    return Err(expected());
                }
            }
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Keep => f.write_str("keep"),
            Strategy::Null => f.write_str("null"),
            Strategy::Redact(text) if text == DEFAULT_REDACTION => f.write_str("redact"),
            Strategy::Redact(text) => write!(f, "redact:{text}"),
            Strategy::Hash => f.write_str("hash"),
            Strategy::Year => f.write_str("year"),
            Strategy::Prefix(n) => write!(f, "prefix:{n}"),
        }
    }
}

impl Strategy {
    /// What the strategy does to a value, in words for a venue manager.
    pub fn in_words(&self) -> String {
        match self {
            Strategy::Keep => "kept".into(),
            Strategy::Null => "removed".into(),
            Strategy::Redact(text) => format!("replaced by \"{text}\""),
            Strategy::Hash => "replaced by a keyed hash".into(),
            Strategy::Year => "only the year kept".into(),
            Strategy::Prefix(n) => format!("only the first {n} characters kept"),
        }
    }
}

/// Keyed HMAC-SHA-256 of `value`, as lowercase hex: stable for one key, unlinkable without it.
pub fn keyed_hash(key: &[u8], value: &str) -> String {
    let mut digits = [0_u8; KEYED_HASH_DIGITS];
    keyed_hash_into(key, value.as_bytes(), &mut digits);
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

/// The hex digits of a keyed hash.
pub const KEYED_HASH_DIGITS: usize = 64;

/// [`keyed_hash`] of `value`'s bytes, written into `digits` without allocating: SQLite's
/// `retention_keyed_hash` computes one for every value an anonymise overwrites, and the
/// character-by-character hex encoding had cost more than the hash itself.
pub fn keyed_hash_into(key: &[u8], value: &[u8], digits: &mut [u8; KEYED_HASH_DIGITS]) {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(value);
    hex::encode_to_slice(mac.finalize().into_bytes(), digits).expect("32 bytes are 64 hex digits");
}

/// The inner and outer padded keys of HMAC-SHA-256 (RFC 2104) for `key`, as hex: with them a
/// database that has only SHA-256 computes [`keyed_hash`] as
/// `sha256(outer || sha256(inner || value))`.
pub fn hmac_padded_keys(key: &[u8]) -> (String, String) {
    use sha2::Digest;
    const BLOCK: usize = 64;
    let mut block = [0_u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    (hex::encode(inner), hex::encode(outer))
}

/// Sizes apply batches so that no transaction lasts longer than `target_ms` (SPEC 3: the box
/// office never waits on us), whatever a customer costs on this database. The first batch is
/// small; each next one is sized by the cost per customer seen so far and by how far recent
/// batches strayed above what that cost predicted (a busy disk or a neighbour's burst makes a
/// whole batch two or three times slower at once, so the batches leave that much room),
/// at most doubling, never above `max`. One customer is the floor: a customer is never split
/// across transactions.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    max: u32,
    target_ms: u32,
    next: u32,
    /// Milliseconds a customer, smoothed over the batches seen.
    per_customer_ms: Option<f64>,
    /// How much slower than predicted each of the last batches was (1 when on time or faster).
    recent_strays: std::collections::VecDeque<f64>,
}

/// The size of the first batch, before anything is known of the cost per customer.
const FIRST_BATCH: u32 = 50;

/// How many recent batches' strays the room is kept for.
const STRAYS_REMEMBERED: usize = 16;

/// The least room left below the target, even when every batch came in on time: batches aim
/// at 80% of it.
const LEAST_ROOM: f64 = 1.25;

impl BatchSizer {
    pub fn new(max: u32, target_ms: u32) -> Self {
        BatchSizer {
            max: max.max(1),
            target_ms: target_ms.max(1),
            next: FIRST_BATCH.clamp(1, max.max(1)),
            per_customer_ms: None,
            recent_strays: std::collections::VecDeque::with_capacity(STRAYS_REMEMBERED),
        }
    }

    /// Customers in the next batch.
    pub fn next(&self) -> u32 {
        self.next
    }

    /// Takes note that a batch of `size` customers took `elapsed_ms`, its commit included.
    pub fn observe(&mut self, size: u32, elapsed_ms: u64) {
        if size == 0 {
            return;
        }
        let seen = elapsed_ms.max(1) as f64 / f64::from(size);
        let per_customer = match self.per_customer_ms {
            None => seen,
            Some(expected) => {
                if self.recent_strays.len() == STRAYS_REMEMBERED {
                    self.recent_strays.pop_front();
                }
                self.recent_strays.push_back((seen / expected).max(1.0));
                // Half the weight to the latest batch: a change of data (customers with more
                // orders) is followed within a few batches, one slow batch does not halve the
                // next on its own (the stray below leaves room for it instead).
                (expected + seen) / 2.0
            }
        };
        self.per_customer_ms = Some(per_customer);
        let room = self
            .recent_strays
            .iter()
            .copied()
            .fold(LEAST_ROOM, f64::max);
        let fitting = (f64::from(self.target_ms) / (per_customer * room)).floor() as u64;
        // At most double what was asked for: a batch cut short because its report ran out of
        // customers says nothing against the size asked for (a fleet's reports each end in a
        // short batch, which otherwise held every next report's first batch at twice it).
        let asked = size.max(self.next);
        let ceiling = u64::from(asked).saturating_mul(2).min(u64::from(self.max));
        self.next = fitting.clamp(1, ceiling.max(1)) as u32;
    }

    /// Takes note that a batch of `size` customers was stopped at its deadline after
    /// `elapsed_ms` and rolled back: it would have taken at least that long, and its customers
    /// are retried in a batch of at most half the size.
    pub fn gave_up(&mut self, size: u32, elapsed_ms: u64) {
        self.observe(size, elapsed_ms);
        self.next = self.next.min((size / 2).max(1));
    }
}

/// The life of a report (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    Pending,
    Approved,
    Applying,
    Applied,
    Rejected,
    Expired,
    Cancelled,
}

/// What a change of a report's state causes besides the state (SPEC 4): the ledger event
/// that records it, the time it stamps on the report, the mail it sends the venue's approvers,
/// and whether the report's search index is dropped (a report no longer open to decisions is
/// not searched). [`TRANSITIONS`] is the one table of them; `crate::transition::change_state`
/// the one executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: ReportState,
    pub to: ReportState,
    pub event: EventKind,
    pub stamps: Stamp,
    pub mails: Option<MailKind>,
    pub forgets_search_terms: bool,
}

/// The time a transition writes on the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// `decided_at`: a decision, or the expiry that stands for one.
    DecidedAt,
    /// `applied_at`: the last customer processed.
    AppliedAt,
    Nothing,
}

/// Every allowed change of a report's state, and what it causes.
pub const TRANSITIONS: [Transition; 7] = {
    use ReportState::*;
    const fn row(
        from: ReportState,
        to: ReportState,
        event: EventKind,
        stamps: Stamp,
        mails: Option<MailKind>,
        forgets_search_terms: bool,
    ) -> Transition {
        Transition {
            from,
            to,
            event,
            stamps,
            mails,
            forgets_search_terms,
        }
    }
    [
        row(
            Pending,
            Approved,
            EventKind::Approved,
            Stamp::DecidedAt,
            None,
            false,
        ),
        row(
            Pending,
            Rejected,
            EventKind::Rejected,
            Stamp::DecidedAt,
            None,
            true,
        ),
        row(
            Pending,
            Expired,
            EventKind::Expired,
            Stamp::DecidedAt,
            Some(MailKind::Expired),
            true,
        ),
        row(
            Pending,
            Cancelled,
            EventKind::Cancelled,
            Stamp::DecidedAt,
            None,
            true,
        ),
        row(
            Approved,
            Cancelled,
            EventKind::Cancelled,
            Stamp::DecidedAt,
            None,
            true,
        ),
        row(
            Approved,
            Applying,
            EventKind::ApplyStarted,
            Stamp::Nothing,
            None,
            true,
        ),
        row(
            Applying,
            Applied,
            EventKind::Applied,
            Stamp::AppliedAt,
            Some(MailKind::Applied),
            // An applying report has no index: it lost it on becoming applying.
            false,
        ),
    ]
};

/// What happened to a report (or, for `Brake` and `Replayed`, to a venue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ReportCreated,
    Brake,
    /// One approval of several required.
    Approval,
    Approved,
    Rejected,
    Cancelled,
    Kept,
    Unkept,
    Expired,
    ApplyStarted,
    Applied,
    Replayed,
    /// A customer erased on an individual request (SPEC 13), by whom.
    ErasedOnRequest,
    /// What retentiond would remove of a customer was exported for them (SPEC 13), by whom.
    Exported,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::ReportCreated,
        EventKind::Brake,
        EventKind::Approval,
        EventKind::Approved,
        EventKind::Rejected,
        EventKind::Cancelled,
        EventKind::Kept,
        EventKind::Unkept,
        EventKind::Expired,
        EventKind::ApplyStarted,
        EventKind::Applied,
        EventKind::Replayed,
        EventKind::ErasedOnRequest,
        EventKind::Exported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ReportCreated => "report_created",
            EventKind::Brake => "brake",
            EventKind::Approval => "approval",
            EventKind::Approved => "approved",
            EventKind::Rejected => "rejected",
            EventKind::Cancelled => "cancelled",
            EventKind::Kept => "kept",
            EventKind::Unkept => "unkept",
            EventKind::Expired => "expired",
            EventKind::ApplyStarted => "apply_started",
            EventKind::Applied => "applied",
            EventKind::Replayed => "replayed",
            EventKind::ErasedOnRequest => "erased_on_request",
            EventKind::Exported => "exported",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown ledger event {s:?}"))
    }
}

/// What a queued message is about (the mail module composes each kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    ApprovalRequest,
    Reminder,
    Expired,
    Applied,
    BrakeAlert,
    FailureAlert,
}

impl MailKind {
    /// Whether the message carries an approval link (a token minted as it is sent).
    pub fn carries_approval_link(self) -> bool {
        matches!(self, MailKind::ApprovalRequest | MailKind::Reminder)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::ApprovalRequest => "approval_request",
            MailKind::Reminder => "reminder",
            MailKind::Expired => "expired",
            MailKind::Applied => "applied",
            MailKind::BrakeAlert => "brake_alert",
            MailKind::FailureAlert => "failure_alert",
        }
    }

    pub fn parse(s: &str) -> Option<MailKind> {
        [
            MailKind::ApprovalRequest,
            MailKind::Reminder,
            MailKind::Expired,
            MailKind::Applied,
            MailKind::BrakeAlert,
            MailKind::FailureAlert,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("report is {from}, it cannot become {to}")]
pub struct TransitionError {
    pub from: ReportState,
    pub to: ReportState,
}

impl ReportState {
    pub const ALL: [ReportState; 7] = [
        ReportState::Pending,
        ReportState::Approved,
        ReportState::Applying,
        ReportState::Applied,
        ReportState::Rejected,
        ReportState::Expired,
        ReportState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Pending => "pending",
            ReportState::Approved => "approved",
            ReportState::Applying => "applying",
            ReportState::Applied => "applied",
            ReportState::Rejected => "rejected",
            ReportState::Expired => "expired",
            ReportState::Cancelled => "cancelled",
        }
    }

    /// A report that blocks a new one for its venue.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ReportState::Pending | ReportState::Approved | ReportState::Applying
        )
    }

    /// Whether its customers' personal data may still be shown (page, CSV).
    pub fn shows_customers(self) -> bool {
        matches!(
            self,
            ReportState::Pending | ReportState::Approved | ReportState::Applying
        )
    }

    /// The allowed transitions: `pending -> approved -> applying -> applied`,
    /// `pending -> rejected | expired | cancelled`, `approved -> cancelled`.
    /// The row of [`TRANSITIONS`] from this state to `to`, or why there is none.
    pub fn transition(self, to: ReportState) -> Result<Transition, TransitionError> {
        TRANSITIONS
            .iter()
            .find(|t| t.from == self && t.to == to)
            .copied()
            .ok_or(TransitionError { from: self, to })
    }

    pub fn check_transition(self, to: ReportState) -> Result<(), TransitionError> {
        self.transition(to).map(|_| ())
    }
}

impl fmt::Display for ReportState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReportState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReportState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown report state {s:?}"))
    }
}

/// What happened to one customer of a report when it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deleted,
    Anonymised,
    /// Ordered or was otherwise active since the cutoff of the apply cycle.
    SkippedActive,
    /// Under a hold (SPEC 12; the item names which).
    SkippedHeld,
    /// No longer in the database.
    SkippedGone,
    /// Moved to another venue, or became the Unknown Customer or anonymised by other means.
    SkippedIneligible,
    /// Kept out of the report by an approver: never touched by it.
    Kept,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Deleted,
        Outcome::Anonymised,
        Outcome::SkippedActive,
        Outcome::SkippedHeld,
        Outcome::SkippedGone,
        Outcome::SkippedIneligible,
        Outcome::Kept,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Anonymised => "anonymised",
            Outcome::SkippedActive => "skipped_active",
            Outcome::SkippedHeld => "skipped_held",
            Outcome::SkippedGone => "skipped_gone",
            Outcome::SkippedIneligible => "skipped_ineligible",
            Outcome::Kept => "kept",
        }
    }

    pub fn is_skip(self) -> bool {
        !matches!(self, Outcome::Deleted | Outcome::Anonymised)
    }

    /// Why a customer that was on the approved report is no longer a candidate.
    pub fn for_skipped(exists: bool, same_venue: bool, on_hold: bool) -> Outcome {
        match (exists, same_venue, on_hold) {
            (false, _, _) => Outcome::SkippedGone,
            (true, false, _) => Outcome::SkippedIneligible,
            (true, true, true) => Outcome::SkippedHeld,
            (true, true, false) => Outcome::SkippedActive,
        }
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "skipped_legal_hold" {
            // Before holds (migration 11 renames them), the legal hold's own outcome.
            return Ok(Outcome::SkippedHeld);
        }
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome {s:?}"))
    }
}

/// Why a venue may not get a new report now (SPEC 4).
#[derive(Debug, Clone, PartialEq)]
pub enum NoNewReport {
    /// The venue has a report that is pending, approved or applying.
    Open { report_id: i64, state: ReportState },
    /// Its last report is younger than `report_interval`.
    TooSoon {
        last_report_at: DateTime<Utc>,
        next_allowed_at: DateTime<Utc>,
    },
}

/// Whether a venue may get a new report at `at`: no report of it is open (the oldest open one
/// is given), and its last report is older than `interval`. Whether there are candidates, and
/// the brake, are decided after selection.
pub fn may_create_report(
    open: Option<(i64, ReportState)>,
    last_report_at: Option<DateTime<Utc>>,
    interval: CalendarPeriod,
    at: DateTime<Utc>,
) -> Result<(), NoNewReport> {
    if let Some((report_id, state)) = open {
        return Err(NoNewReport::Open { report_id, state });
    }
    match last_report_at {
        Some(last) if !interval_elapsed(Some(last), interval, at) => Err(NoNewReport::TooSoon {
            last_report_at: last,
            next_allowed_at: interval.after(last),
        }),
        _ => Ok(()),
    }
}

/// A venue's pending, approved or applying report, as a run reads them for all venues at once.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub id: i64,
    pub state: ReportState,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub reminded: bool,
}

/// Why a venue's cycle at `at` can change nothing, when it can't: no report to apply, none whose
/// links expire, no reminder due, and no new report allowed (one is open, or the last is younger
/// than `interval`). A fleet's idle night answers for such a venue without a lock or a
/// statement of its own. `open` is oldest first. `None`: the cycle must run.
pub fn nothing_to_do(
    open: &[OpenReport],
    last_report_at: Option<DateTime<Utc>>,
    interval: CalendarPeriod,
    remind_after: CalendarPeriod,
    at: DateTime<Utc>,
) -> Option<NoNewReport> {
    let due = |r: &OpenReport| {
        r.state != ReportState::Pending
            || r.expires_at <= at
            || (!r.reminded && remind_after.after(r.created_at) <= at)
    };
    if open.iter().any(due) {
        return None;
    }
    may_create_report(
        open.first().map(|r| (r.id, r.state)),
        last_report_at,
        interval,
        at,
    )
    .err()
}

#[cfg(test)]
mod new_report_tests {
    use super::*;

    #[test]
    fn a_venue_has_nothing_to_do_only_when_no_report_needs_it() {
        let (interval, remind): (CalendarPeriod, CalendarPeriod) =
            ("30 days".parse().unwrap(), "7 days".parse().unwrap());
        let at = utc("2026-06-15T12:00:00Z");
        let pending = OpenReport {
            id: 4,
            state: ReportState::Pending,
            created_at: utc("2026-06-14T02:00:00Z"),
            expires_at: utc("2026-06-28T02:00:00Z"),
            reminded: false,
        };
        let open = Some(NoNewReport::Open {
            report_id: 4,
            state: ReportState::Pending,
        });
        assert_eq!(
            nothing_to_do(std::slice::from_ref(&pending), None, interval, remind, at),
            open
        );
        let remind_due = OpenReport {
            created_at: utc("2026-06-01T02:00:00Z"),
            ..pending.clone()
        };
        assert_eq!(
            nothing_to_do(
                std::slice::from_ref(&remind_due),
                None,
                interval,
                remind,
                at
            ),
            None
        );
        let reminded = OpenReport {
            reminded: true,
            ..remind_due
        };
        assert!(nothing_to_do(&[reminded], None, interval, remind, at).is_some());
        let expiring = OpenReport {
            expires_at: at,
            ..pending.clone()
        };
        assert_eq!(nothing_to_do(&[expiring], None, interval, remind, at), None);
        let approved = OpenReport {
            state: ReportState::Approved,
            ..pending
        };
        assert_eq!(nothing_to_do(&[approved], None, interval, remind, at), None);
        // No open report: a new one may be made (the cycle selects) unless the last is too young.
        assert_eq!(nothing_to_do(&[], None, interval, remind, at), None);
        assert!(matches!(
            nothing_to_do(&[], Some(utc("2026-06-01T02:00:00Z")), interval, remind, at),
            Some(NoNewReport::TooSoon { .. })
        ));
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_new_report_needs_no_open_report_and_the_interval_passed() {
        let interval: CalendarPeriod = "30 days".parse().unwrap();
        let at = utc("2026-06-15T12:00:00Z");
        assert_eq!(may_create_report(None, None, interval, at), Ok(()));
        assert_eq!(
            may_create_report(Some((4, ReportState::Approved)), None, interval, at),
            Err(NoNewReport::Open {
                report_id: 4,
                state: ReportState::Approved
            })
        );
        let recent = utc("2026-06-01T12:00:00Z");
        assert_eq!(
            may_create_report(None, Some(recent), interval, at),
            Err(NoNewReport::TooSoon {
                last_report_at: recent,
                next_allowed_at: utc("2026-07-01T12:00:00Z")
            })
        );
        assert_eq!(
            may_create_report(None, Some(utc("2026-05-16T12:00:00Z")), interval, at),
            Ok(())
        );
    }
}

/// Whether a venue may get a new report at `at`, given its last report's creation time.
pub fn interval_elapsed(
    last_report_at: Option<DateTime<Utc>>,
    interval: CalendarPeriod,
    at: DateTime<Utc>,
) -> bool {
    last_report_at.is_none_or(|last| interval.after(last) <= at)
}

/// The brake of SPEC 4: true when `candidates` is more than `max_share` of `customers`.
pub fn brake_engaged(candidates: u64, customers: u64, max_share: f64) -> bool {
    customers > 0 && (candidates as f64) > max_share * (customers as f64)
}

/// The fewest customers a venue can have for the brake to let `candidates` through (`max_share`
/// in (0, 1]). A count of the venue's customers that stops there decides the brake exactly as
/// the whole count does: fewer and the count is whole, as many and the brake is off.
pub fn customers_clearing_brake(candidates: u64, max_share: f64) -> u64 {
    if candidates == 0 {
        return 0;
    }
    let mut customers = ((candidates as f64) / max_share).ceil().max(1.0) as u64;
    // The division rounds; step to the exact edge of `brake_engaged`'s own comparison.
    while customers > 1 && !brake_engaged(candidates, customers - 1, max_share) {
        customers -= 1;
    }
    while brake_engaged(candidates, customers, max_share) {
        customers += 1;
    }
    customers
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_start_small_grow_to_the_maximum_and_shrink_when_slow() {
        let mut sizer = super::BatchSizer::new(500, 100);
        assert_eq!(sizer.next(), 50);
        sizer.observe(50, 5); // 0.1 ms a customer: 800 would fit in 80 ms, doubling caps at 100
        assert_eq!(sizer.next(), 100);
        sizer.observe(100, 10);
        sizer.observe(200, 20);
        sizer.observe(400, 40);
        assert_eq!(sizer.next(), 500, "never above the maximum");
        sizer.observe(500, 400); // 0.8 ms a customer, 0.45 ms smoothed, 8x the prediction
        assert_eq!(
            sizer.next(),
            27,
            "room is left for a batch as slow as that one"
        );
        sizer.observe(27, 100_000); // one huge customer: the floor is one
        assert_eq!(sizer.next(), 1);
        assert_eq!(
            super::BatchSizer::new(5, 100).next(),
            5,
            "a small maximum is used at once"
        );
    }

    #[test]
    fn a_batch_cut_short_by_its_report_does_not_hold_the_next_report_small() {
        let mut sizer = super::BatchSizer::new(1_000, 100);
        sizer.observe(50, 5); // 0.1 ms a customer: 100 next
        assert_eq!(sizer.next(), 100);
        sizer.observe(25, 3); // the report had 25 left; as fast as before
        assert_eq!(
            sizer.next(),
            200,
            "doubles what was asked for, not the 25 the report had left"
        );
        sizer.observe(10, 50); // short and slow: the cost still shrinks the next batch
        assert!(sizer.next() < 200, "got {}", sizer.next());
    }

    #[test]
    fn a_batch_given_up_at_its_deadline_is_retried_at_most_half_as_big() {
        let mut sizer = super::BatchSizer::new(10_000, 100);
        sizer.observe(50, 5);
        sizer.observe(100, 10); // 0.1 ms a customer: 200 next
        assert_eq!(sizer.next(), 200);
        sizer.gave_up(200, 90); // stopped at 90 ms, at least 0.45 ms a customer
        assert!(sizer.next() <= 100, "at most half: {}", sizer.next());
        for _ in 0..20 {
            sizer.gave_up(sizer.next(), 90);
        }
        assert_eq!(sizer.next(), 1, "down to one customer, never none");
    }

    #[test]
    fn batches_leave_room_for_the_worst_recent_stray_and_regain_it_when_calm() {
        let mut sizer = super::BatchSizer::new(10_000, 100);
        sizer.observe(50, 50); // 1 ms a customer
        sizer.observe(100, 100);
        assert_eq!(sizer.next(), 80, "calm: 80% of the target");
        sizer.observe(80, 200); // a burst: twice as slow as predicted
        let after_burst = sizer.next();
        assert!(
            after_burst <= 30,
            "room for a second burst: 2 x the smoothed 1.5 ms a customer, got {after_burst}"
        );
        let longest_if_it_recurs = f64::from(after_burst) * 2.5;
        assert!(longest_if_it_recurs <= 100.0);
        for _ in 0..super::STRAYS_REMEMBERED + 8 {
            let size = sizer.next();
            sizer.observe(size, u64::from(size)); // 1 ms a customer again
        }
        assert!(
            (79..=80).contains(&sizer.next()),
            "the burst is forgotten after calm batches, got {}",
            sizer.next()
        );
    }

    use super::*;
    use chrono_tz::Europe::London;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_periods_and_refuses_nonsense() {
        assert_eq!(
            "3 years".parse(),
            Ok(CalendarPeriod {
                amount: 3,
                unit: PeriodUnit::Years
            })
        );
        assert_eq!(
            "1 month".parse(),
            Ok(CalendarPeriod {
                amount: 1,
                unit: PeriodUnit::Months
            })
        );
        assert_eq!(
            " 400  days ".parse(),
            Ok(CalendarPeriod {
                amount: 400,
                unit: PeriodUnit::Days
            })
        );
        for bad in [
            "",
            "3",
            "years",
            "-3 years",
            "0 days",
            "3 yeers",
            "3.5 years",
            "3 years ago",
            "99999 days",
        ] {
            assert!(
                bad.parse::<CalendarPeriod>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn cutoff_is_local_midnight_in_the_venue_zone() {
        // 01:30 UTC on 1 July is 02:30 BST; three years back is 1 July 2023, midnight BST = 23:00 UTC.
        let at = utc("2026-07-01T01:30:00Z");
        assert_eq!(
            cutoff(at, London, "3 years".parse().unwrap()),
            utc("2023-06-30T23:00:00Z")
        );
        // 23:30 UTC on 30 June is already 1 July in London.
        let at = utc("2026-06-30T23:30:00Z");
        assert_eq!(
            cutoff(at, London, "1 day".parse().unwrap()),
            utc("2026-06-29T23:00:00Z")
        );
    }

    #[test]
    fn cutoff_across_month_end_clamps_to_last_day() {
        let at = utc("2026-03-31T12:00:00Z");
        assert_eq!(
            cutoff(at, chrono_tz::UTC, "1 month".parse().unwrap()),
            utc("2026-02-28T00:00:00Z")
        );
        let at = utc("2024-03-31T12:00:00Z");
        assert_eq!(
            cutoff(at, chrono_tz::UTC, "1 month".parse().unwrap()),
            utc("2024-02-29T00:00:00Z")
        );
        let at = utc("2028-02-29T12:00:00Z");
        assert_eq!(
            cutoff(at, chrono_tz::UTC, "1 year".parse().unwrap()),
            utc("2027-02-28T00:00:00Z")
        );
    }

    #[test]
    fn cutoff_across_dst_change_uses_the_offset_of_the_cutoff_day() {
        // In summer (BST) looking back into winter (GMT): midnight GMT is midnight UTC.
        let at = utc("2026-04-15T10:00:00Z");
        assert_eq!(
            cutoff(at, London, "1 month".parse().unwrap()),
            utc("2026-03-15T00:00:00Z")
        );
        // Day after the spring change: midnight on 29 March 2026 is still GMT.
        let at = utc("2026-03-30T10:00:00Z");
        assert_eq!(
            cutoff(at, London, "1 day".parse().unwrap()),
            utc("2026-03-29T00:00:00Z")
        );
        // Day after the autumn change: midnight on 25 October 2026 was still BST.
        let at = utc("2026-10-26T10:00:00Z");
        assert_eq!(
            cutoff(at, London, "1 day".parse().unwrap()),
            utc("2026-10-24T23:00:00Z")
        );
    }

    #[test]
    fn cutoff_in_a_midnight_dst_gap_is_the_first_instant_of_the_day() {
        // Santiago moved clocks from 00:00 to 01:00 on 2023-09-03.
        let at = utc("2023-09-04T15:00:00Z");
        let tz: Tz = "America/Santiago".parse().unwrap();
        assert_eq!(
            cutoff(at, tz, "1 day".parse().unwrap()),
            utc("2023-09-03T04:00:00Z")
        );
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in [
            "keep",
            "null",
            "redact",
            "redact:gone",
            "hash",
            "year",
            "prefix:4",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        for bad in ["delete", "prefix:", "prefix:0", "prefix:x", "Keep", ""] {
            assert!(
                bad.parse::<Strategy>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn padded_keys_give_the_keyed_hash_through_plain_sha256() {
        use sha2::Digest;
        let long_key = [7_u8; 100];
        for key in [
            &b"benchmark-hash-key-0123456789-abcdef"[..],
            &[],
            &long_key[..],
        ] {
            let (inner, outer) = hmac_padded_keys(key);
            for value in ["ann@example.org", "", "Zoë ünïcode"] {
                let mut first = hex::decode(&inner).unwrap();
                first.extend_from_slice(value.as_bytes());
                let mut second = hex::decode(&outer).unwrap();
                second.extend_from_slice(&Sha256::digest(&first));
                assert_eq!(
                    hex::encode(Sha256::digest(&second)),
                    keyed_hash(key, value),
                    "key of {} bytes, value {value:?}",
                    key.len()
                );
            }
        }
    }

    #[test]
    fn keyed_hash_is_stable_per_key_and_differs_between_keys() {
        let a = keyed_hash(b"key-one", "ann@example.org");
        assert_eq!(a, keyed_hash(b"key-one", "ann@example.org"));
        assert_ne!(a, keyed_hash(b"key-two", "ann@example.org"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn report_state_machine_allows_only_the_documented_transitions() {
        use ReportState::*;
        let allowed = [
            (Pending, Approved),
            (Approved, Applying),
            (Applying, Applied),
            (Pending, Rejected),
            (Pending, Expired),
            (Pending, Cancelled),
            (Approved, Cancelled),
        ];
        for from in ReportState::ALL {
            for to in ReportState::ALL {
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn each_transition_says_what_it_causes() {
        use ReportState::*;
        for t in TRANSITIONS {
            // A report open to decisions stays searchable; one that closes (or starts being
            // applied) loses its index before any customer is touched. Only a report that may
            // have one (pending or approved) has anything to forget.
            assert_eq!(
                t.forgets_search_terms,
                matches!(t.from, Pending | Approved) && !matches!(t.to, Pending | Approved),
                "{} -> {}",
                t.from,
                t.to
            );
            // Approvers hear of what retentiond did on its own: an expiry and an apply.
            assert_eq!(
                t.mails,
                match t.to {
                    Expired => Some(MailKind::Expired),
                    Applied => Some(MailKind::Applied),
                    _ => None,
                }
            );
            let (event, stamps) = match t.to {
                Approved => (EventKind::Approved, Stamp::DecidedAt),
                Rejected => (EventKind::Rejected, Stamp::DecidedAt),
                Expired => (EventKind::Expired, Stamp::DecidedAt),
                Cancelled => (EventKind::Cancelled, Stamp::DecidedAt),
                Applying => (EventKind::ApplyStarted, Stamp::Nothing),
                Applied => (EventKind::Applied, Stamp::AppliedAt),
                Pending => unreachable!("no report becomes pending again"),
            };
            assert_eq!(
                (t.event, t.stamps),
                (event, stamps),
                "{} -> {}",
                t.from,
                t.to
            );
        }
    }

    #[test]
    fn interval_and_brake() {
        let at = utc("2026-05-31T00:00:00Z");
        let month: CalendarPeriod = "30 days".parse().unwrap();
        assert!(interval_elapsed(None, month, at));
        assert!(interval_elapsed(
            Some(utc("2026-05-01T00:00:00Z")),
            month,
            at
        ));
        assert!(!interval_elapsed(
            Some(utc("2026-05-01T00:00:01Z")),
            month,
            at
        ));
        assert!(!brake_engaged(75, 100, 0.75));
        assert!(brake_engaged(76, 100, 0.75));
        assert!(!brake_engaged(0, 0, 0.75));
        for (candidates, max_share) in [
            (2, 1.0),
            (75, 0.75),
            (76, 0.75),
            (58_500, 0.9),
            (7, 0.3),
            (1_000_003, 0.1),
        ] {
            let edge = customers_clearing_brake(candidates, max_share);
            assert!(
                !brake_engaged(candidates, edge, max_share),
                "{candidates} at {max_share}"
            );
            assert!(
                brake_engaged(candidates, edge - 1, max_share),
                "{candidates} at {max_share}"
            );
        }
        assert_eq!(customers_clearing_brake(75, 0.75), 100);
        assert_eq!(customers_clearing_brake(76, 0.75), 102);
        assert_eq!(customers_clearing_brake(0, 0.75), 0);
    }
}
