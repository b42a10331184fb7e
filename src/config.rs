//! Configuration (SPEC 5): a TOML file plus `RETENTIOND__SECTION__KEY` environment overrides,
//! deserialised strictly (unknown keys are errors) and validated into typed values. Every error
//! names the file, the key and what was expected, before anything touches the database.

use crate::db::Ident;
use crate::policy::{Action, CalendarPeriod, Strategy};
use chrono_tz::Tz;
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/retentiond.toml";

/// A configuration problem: the file, the key and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub file: String,
    pub database_url: SecretString,
    /// How many connections the whole process may hold to the database (SPEC 11).
    pub max_connections: u32,
    pub http: HttpConfig,
    pub mail: MailConfig,
    pub schedule: ScheduleConfig,
    pub approval: ApprovalConfig,
    pub hash_key: Option<SecretString>,
    pub schema: SchemaConfig,
    /// The most customers in one apply transaction.
    pub batch_size: u32,
    /// The duration apply batches are sized to (SPEC 3: never stall the box office).
    pub max_transaction_ms: u32,
    /// PostgreSQL: VACUUM the tables a report touched once it is applied (SPEC 3).
    pub vacuum_after_apply: bool,
    /// The erasure journal of SPEC 9, outside the database.
    pub journal_path: Option<PathBuf>,
    pub log_format: LogFormat,
    pub venues: Vec<VenueConfig>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: String,
    pub public_url: String,
    /// The path part of `public_url` ("" or e.g. "/retention"): pages link under it.
    pub base_path: String,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Report-link requests a client may make at once, then per second (429 beyond).
    pub link_requests_burst: u32,
    pub link_requests_per_second: u32,
    /// Connections the server holds open at most (slow clients cannot hold it all).
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTransport {
    Smtp,
    File,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub from: String,
    pub transport: MailTransport,
    pub smtp_url: SecretString,
    pub dir: PathBuf,
    pub ops: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: String,
    pub timezone: Tz,
    /// How many venue cycles run at once; the rest wait their turn (SPEC 11).
    pub max_concurrent_cycles: u32,
    /// How long a cycle that failed for a passing reason is retried before it is alerted.
    pub retry_for: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct ApprovalConfig {
    pub required: u32,
    pub link_valid_for: CalendarPeriod,
    pub remind_after: CalendarPeriod,
    /// Reject and cancel reasons (free text) are erased from their report after this.
    pub reasons_kept_for: CalendarPeriod,
    /// Customers an approver kept out of a report are not selected again for this long.
    pub keep_for: CalendarPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    Reassign,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAnonymise {
    Keep,
    Delete,
}

/// A table that points at a customer (or, with `via`, at the rows of another such table).
#[derive(Debug, Clone)]
pub struct Reference {
    pub table: Ident,
    /// The column holding the customer id (or, with `via`, the parent row's key).
    pub column: Ident,
    /// For a `via` reference, copied from its parent: its rows follow the parent rows' fate.
    pub on_delete: OnDelete,
    /// For a `via` reference, copied from its parent.
    pub on_anonymise: OnAnonymise,
    /// The parent reference this table's rows hang off (an address table keyed by the order).
    pub via: Option<Via>,
    /// Strategies for every column of a table whose rows stay (SPEC 3), in name order.
    pub columns: Vec<(Ident, Strategy)>,
}

/// The parent of a `via` reference: the parent reference's table and the key its column holds.
#[derive(Debug, Clone)]
pub struct Via {
    pub table: Ident,
    pub key: Ident,
}

impl Reference {
    /// Whether this table's rows outlive the customer under `action` (and so need `columns`).
    pub fn rows_stay(&self, action: Action) -> bool {
        match action {
            Action::Delete => self.on_delete == OnDelete::Reassign,
            Action::Anonymise => self.on_anonymise == OnAnonymise::Keep,
        }
    }

    /// The columns that are structural rather than personal: the reference column.
    /// (The primary key is found in the live database.)
    pub fn is_reference_column(&self, column: &str) -> bool {
        self.column.name() == column
    }
}

/// A table whose times count as a customer's activity (`[[schema.activity]]`, SPEC 12), as
/// orders do: a customer with a row whose time is at or after the cutoff (a future one
/// included: next season's performance, a membership still running) is not inactive.
#[derive(Debug, Clone)]
pub struct ActivitySource {
    pub table: Ident,
    /// The column holding the customer id (or, with `via`, the parent row's key).
    pub column: Ident,
    /// The time or date column that counts.
    pub at: Ident,
    pub via: Option<ActivityVia>,
}

/// The parent of a `via` activity table: the orders table or a `[[schema.references]]` table,
/// the key the activity column holds, and the parent's column holding the customer id.
#[derive(Debug, Clone)]
pub struct ActivityVia {
    pub table: Ident,
    pub key: Ident,
    pub customer: Ident,
}

/// How the customer database is laid out; every name is a validated identifier.
#[derive(Debug, Clone)]
pub struct SchemaConfig {
    pub customers: Ident,
    pub customer_id: Ident,
    /// The customers column naming each customer's venue; `None` when the database holds one
    /// venue (left out, with exactly one venue configured: a shop's database).
    pub customer_venue: Option<Ident>,
    pub customer_created_at: Ident,
    pub legal_hold: Option<Ident>,
    pub customer_activity: Vec<Ident>,
    /// Tables whose times count as activity besides orders (`[[schema.activity]]`).
    pub activity: Vec<ActivitySource>,
    /// What protects a customer from every action (`[[schema.holds]]`), the legal-hold column
    /// first, as the hold "legal hold".
    pub holds: Vec<crate::holds::Hold>,
    pub orders: Ident,
    pub order_customer: Ident,
    pub order_placed_at: Ident,
    pub references: Vec<Reference>,
    /// Columns joined with spaces to show a customer's name on reports.
    pub display_name: Vec<Ident>,
    /// The column shown as a customer's email on reports.
    pub display_email: Option<Ident>,
    /// Words for columns and tables on pages and in emails (`[schema.labels]`).
    pub labels: BTreeMap<String, String>,
}

impl SchemaConfig {
    /// The words a venue manager reads for a column or table: its `[schema.labels]` entry, or
    /// the name in words ("address_line1" is "Address line 1").
    pub fn label(&self, name: &str) -> String {
        match self.labels.get(name) {
            Some(label) => label.clone(),
            None => default_label(name),
        }
    }
}

/// A column or table name in words: "address_line1" is "Address line 1".
pub fn default_label(name: &str) -> String {
    {
        let mut words = String::new();
        let mut previous: Option<char> = None;
        for c in name.chars() {
            let c = if c == '_' { ' ' } else { c };
            if let Some(p) = previous {
                if (p.is_ascii_alphabetic() && c.is_ascii_digit())
                    || (p.is_ascii_digit() && c.is_ascii_alphabetic())
                {
                    words.push(' ');
                }
            }
            words.push(c);
            previous = Some(c);
        }
        let mut chars = words.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => words,
        }
    }
}

impl SchemaConfig {
    /// The customers columns that are structural rather than personal: never anonymised,
    /// never "unclassified".
    pub fn structural_columns(&self) -> Vec<&Ident> {
        let mut cols = vec![&self.customer_id, &self.customer_created_at];
        cols.extend(self.customer_venue.as_ref());
        cols.extend(self.legal_hold.as_ref());
        cols
    }
}

#[derive(Debug, Clone)]
pub struct VenueConfig {
    pub id: i64,
    pub name: String,
    pub approvers: Vec<String>,
    pub inactive_for: CalendarPeriod,
    pub action: Action,
    pub report_interval: CalendarPeriod,
    pub max_share: f64,
    pub timezone: Tz,
    pub cron: String,
    pub unknown_customer_id: Option<i64>,
    /// Column -> strategy, for anonymise venues; empty for delete venues.
    pub anonymise: Vec<(Ident, Strategy)>,
    /// Whether the venue's `[venues.anonymise]` table is written (only `check --suggest` loads
    /// an anonymise venue without one).
    pub anonymise_written: bool,
    /// `[venues.prospects]`: the policy for customers who never ordered (SPEC 12); without it
    /// they follow the venue's own.
    pub prospects: Option<ProspectRule>,
}

/// The policy of a venue's prospects: customers with no order at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProspectRule {
    pub inactive_for: CalendarPeriod,
    pub action: Action,
}

impl Config {
    pub fn venue(&self, id: i64) -> Option<&VenueConfig> {
        self.venues.iter().find(|v| v.id == id)
    }
}

impl VenueConfig {
    /// The period and action of one of the venue's rules.
    pub fn rule(&self, rule: crate::policy::Rule) -> (CalendarPeriod, Action) {
        match (rule, self.prospects) {
            (crate::policy::Rule::Prospects, Some(p)) => (p.inactive_for, p.action),
            _ => (self.inactive_for, self.action),
        }
    }

    /// The venue's rules: its customers', and its prospects' when `[venues.prospects]` is set.
    pub fn rules(&self) -> Vec<crate::policy::Rule> {
        let mut rules = vec![crate::policy::Rule::Customers];
        if self.prospects.is_some() {
            rules.push(crate::policy::Rule::Prospects);
        }
        rules
    }

    /// Every action the venue's rules take.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = vec![self.action];
        if let Some(p) = self.prospects {
            if p.action != self.action {
                actions.push(p.action);
            }
        }
        actions
    }

    /// Whether `address` is one of the venue's approvers (compared without case).
    pub fn has_approver(&self, address: &str) -> bool {
        let address = address.trim().to_lowercase();
        self.approvers
            .iter()
            .any(|a| a.trim().to_lowercase() == address)
    }
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Set for `check --suggest`, whose proposal fills the anonymise tables: an anonymise venue
    /// may then have none yet.
    #[serde(skip)]
    suggesting: bool,
    database: RawDatabase,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    mail: RawMail,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    approval: RawApproval,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    schema: RawSchema,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    venues: Vec<RawVenue>,
    /// A folder of `*.toml` files, each with one or more `[[venues]]` (SPEC 11).
    venues_dir: Option<String>,
}

/// One file of `venues_dir`: venues only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVenuesFile {
    #[serde(default)]
    venues: Vec<RawVenue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    max_connections: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    bind: String,
    public_url: String,
    trusted_proxies: Vec<String>,
    link_requests_burst: i64,
    link_requests_per_second: i64,
    max_connections: i64,
}
impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            bind: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: vec![],
            link_requests_burst: 60,
            link_requests_per_second: 1,
            max_connections: 512,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMail {
    from: String,
    transport: String,
    smtp_url: String,
    dir: String,
    ops: Option<String>,
}
impl Default for RawMail {
    fn default() -> Self {
        RawMail {
            from: "Data Retention <retention@localhost>".into(),
            transport: "smtp".into(),
            smtp_url: "smtp://localhost:25".into(),
            dir: "outbox".into(),
            ops: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSchedule {
    cron: String,
    timezone: String,
    max_concurrent_cycles: Option<i64>,
    retry_for: String,
}
impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            cron: "0 0 2 * * *".into(),
            timezone: "Europe/London".into(),
            max_concurrent_cycles: None,
            retry_for: "2 hours".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApproval {
    required: i64,
    link_valid_for: String,
    remind_after: String,
    reasons_kept_for: String,
    keep_for: String,
}
impl Default for RawApproval {
    fn default() -> Self {
        RawApproval {
            required: 1,
            link_valid_for: "14 days".into(),
            remind_after: "7 days".into(),
            reasons_kept_for: "90 days".into(),
            keep_for: "1 year".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    hash_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSchema {
    customers: String,
    customer_id: String,
    customer_venue: Option<String>,
    customer_created_at: String,
    legal_hold: Option<String>,
    customer_activity: Vec<String>,
    activity: Vec<RawActivity>,
    holds: Vec<RawHold>,
    orders: String,
    order_customer: String,
    order_placed_at: String,
    references: Vec<RawReference>,
    display_name: Vec<String>,
    display_email: Option<String>,
    labels: BTreeMap<String, String>,
}
impl Default for RawSchema {
    fn default() -> Self {
        RawSchema {
            customers: "customers".into(),
            customer_id: "id".into(),
            customer_venue: None,
            customer_created_at: "created_at".into(),
            legal_hold: None,
            customer_activity: vec![],
            activity: vec![],
            holds: vec![],
            orders: "orders".into(),
            order_customer: "customer_id".into(),
            order_placed_at: "placed_at".into(),
            references: vec![],
            display_name: vec!["first_name".into(), "last_name".into()],
            display_email: Some("email".into()),
            labels: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHold {
    name: String,
    table: String,
    column: Option<String>,
    when: Option<String>,
    after: Option<String>,
    #[serde(rename = "for")]
    for_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    table: String,
    column: String,
    at: String,
    via: Option<String>,
    via_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    table: String,
    column: String,
    on_delete: Option<String>,
    on_anonymise: Option<String>,
    via: Option<String>,
    via_key: Option<String>,
    columns: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApply {
    batch_size: i64,
    max_transaction_ms: i64,
    vacuum: bool,
}
impl Default for RawApply {
    fn default() -> Self {
        RawApply {
            batch_size: 500,
            max_transaction_ms: 100,
            vacuum: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
}
impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVenue {
    id: i64,
    name: String,
    approvers: Vec<String>,
    inactive_for: String,
    action: String,
    report_interval: Option<String>,
    max_share: Option<f64>,
    timezone: Option<String>,
    cron: Option<String>,
    unknown_customer_id: Option<i64>,
    anonymise: Option<BTreeMap<String, String>>,
    prospects: Option<RawProspects>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProspects {
    inactive_for: String,
    action: Option<String>,
}

/// Which file to read: `--config`, else `RETENTIOND_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("RETENTIOND_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Loads and validates the configuration from `path` and the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RETENTIOND__"))
        .collect();
    load_with_env(path, env)
}

/// As [`load`], with the environment given explicitly (tests).
pub fn load_with_env(path: &Path, env: BTreeMap<String, String>) -> Result<Config, ConfigError> {
    load_inner(path, env, false)
}

/// As [`load`], for `check --suggest`: an anonymise venue without a `[venues.anonymise]` table
/// yet is taken as classifying no column, so that the proposal can fill it.
pub fn load_for_suggest(path: &Path) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RETENTIOND__"))
        .collect();
    load_inner(path, env, true)
}

fn load_inner(
    path: &Path,
    env: BTreeMap<String, String>,
    suggesting: bool,
) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let err = |key: &str, message: String| ConfigError {
        file: file.clone(),
        key: key.to_string(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("(file)", format!("cannot read the configuration: {e}")))?;
    let env_keys: Vec<String> = env.keys().cloned().collect();
    let env_source = config::Environment::with_prefix("RETENTIOND")
        .prefix_separator("__")
        .separator("__")
        .source(Some(env.into_iter().collect()));
    let mut raw: RawConfig = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(env_source)
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| describe_load_error(&file, e))
        .map_err(|e| blame_environment(e, &env_keys))?;
    raw.suggesting = suggesting;
    let origins = venue_origins(path, &file, &mut raw)?;
    resolve_relative_paths(path.parent().unwrap_or(Path::new("")), &mut raw);
    validate(file.clone(), raw, origins).map_err(|e| blame_environment(e, &env_keys))
}

/// Relative paths (a SQLite database, `mail.dir`, `journal.path`; `venues_dir` is read the
/// same way) are read from the configuration file's folder, not from wherever the command
/// was started: a service and an operator's shell then reach the same files.
fn resolve_relative_paths(base: &Path, raw: &mut RawConfig) {
    if base.as_os_str().is_empty() {
        return; // the file is in the working directory: relative paths already mean its folder
    }
    let resolve = |p: &str| -> String {
        if p.trim().is_empty() || Path::new(p).is_absolute() {
            p.to_string()
        } else {
            base.join(p).display().to_string()
        }
    };
    raw.database.url = resolve_sqlite_url(&raw.database.url, base);
    raw.mail.dir = resolve(&raw.mail.dir);
    if let Some(journal) = raw.journal.path.as_mut() {
        *journal = resolve(journal);
    }
}

/// `url` with a relative SQLite file path joined to `base`; any other URL as it is.
pub fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    let (file, query) = match rest.split_once('?') {
        Some((file, query)) => (file, Some(query)),
        None => (rest, None),
    };
    if file.is_empty() || file.starts_with(':') || Path::new(file).is_absolute() {
        return url.to_string();
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("sqlite://{}{query}", base.join(file).display())
}

/// Where a venue was written: its file and its index among that file's `[[venues]]`, so that
/// an error names the file a vendor generated, not a position in the merged list.
#[derive(Debug, Clone)]
struct VenueOrigin {
    file: String,
    index: usize,
}

/// Appends the venues of every `*.toml` file in `venues_dir` (read in name order after the
/// main file) to `raw.venues`, and returns where each venue came from. A relative folder is
/// read from the main file's folder.
fn venue_origins(
    path: &Path,
    file: &str,
    raw: &mut RawConfig,
) -> Result<Vec<VenueOrigin>, ConfigError> {
    let mut origins: Vec<VenueOrigin> = (0..raw.venues.len())
        .map(|index| VenueOrigin {
            file: file.to_string(),
            index,
        })
        .collect();
    let Some(dir) = raw.venues_dir.as_deref() else {
        return Ok(origins);
    };
    let dir = Path::new(dir);
    let dir = if dir.is_relative() {
        path.parent().unwrap_or(Path::new("")).join(dir)
    } else {
        dir.to_path_buf()
    };
    let unreadable = |message: String| ConfigError {
        file: file.to_string(),
        key: "venues_dir".into(),
        message,
    };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| unreadable(format!("cannot read the folder {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    for venue_file in files {
        let name = venue_file.display().to_string();
        let text = std::fs::read_to_string(&venue_file).map_err(|e| ConfigError {
            file: name.clone(),
            key: "(file)".into(),
            message: format!("cannot read the venue file: {e}"),
        })?;
        let venues: RawVenuesFile = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| describe_load_error(&name, e))?;
        for (index, venue) in venues.venues.into_iter().enumerate() {
            raw.venues.push(venue);
            origins.push(VenueOrigin {
                file: name.clone(),
                index,
            });
        }
    }
    Ok(origins)
}

/// A value that came from a `RETENTIOND__SECTION__KEY` variable is blamed on the variable, not
/// on the file (which may not even hold the key).
fn blame_environment(e: ConfigError, env_keys: &[String]) -> ConfigError {
    let var = format!("RETENTIOND__{}", e.key.to_uppercase().replace('.', "__"));
    if env_keys.contains(&var) {
        ConfigError {
            file: "environment".into(),
            key: var,
            message: e.message,
        }
    } else {
        e
    }
}

/// Turns the config crate's message into "file: key: expected ..." form.
fn describe_load_error(file: &str, e: config::ConfigError) -> ConfigError {
    let message = e.to_string();
    let (key, what) = if let Some(rest) = message.strip_prefix("missing configuration field \"") {
        (
            rest.trim_end_matches('"').to_string(),
            "required key is missing".to_string(),
        )
    } else if let Some((what, rest)) = message.rsplit_once(" for key `") {
        (rest.trim_end_matches('`').to_string(), what.to_string())
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        (
            rest.trim_end_matches('`').to_string(),
            "required key is missing".to_string(),
        )
    } else {
        ("(file)".to_string(), message.clone())
    };
    // The crate writes `venues[0]approvers`; make it `venues[0].approvers`.
    let key = key
        .replace("]", "].")
        .replace("].[", "][")
        .trim_end_matches('.')
        .replace("]..", "].");
    ConfigError {
        file: file.to_string(),
        key,
        message: what,
    }
}

fn validate(
    file: String,
    raw: RawConfig,
    origins: Vec<VenueOrigin>,
) -> Result<Config, ConfigError> {
    let main = Blame { file: &file };
    let err = |key: &str, message: String| main.err(key, message);
    let ident = |key: &str, name: &str| main.ident(key, name);
    let period = |key: &str, value: &str| main.period(key, value);
    let tz = |key: &str, value: &str| main.tz(key, value);

    let url = raw.database.url.trim();
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("mysql://")
        || url.starts_with("mariadb://"))
    {
        return Err(err(
            "database.url",
            "expected a URL starting with sqlite://, postgres:// or mysql://".into(),
        ));
    }

    let transport = match raw.mail.transport.as_str() {
        "smtp" => MailTransport::Smtp,
        "file" => MailTransport::File,
        other => {
            return Err(err(
                "mail.transport",
                format!("expected \"smtp\" or \"file\", got {other:?}"),
            ))
        }
    };
    if !raw.mail.from.contains('@') {
        return Err(err(
            "mail.from",
            "expected an address such as \"Data Retention <retention@example.org>\"".into(),
        ));
    }
    if let Some(ops) = &raw.mail.ops {
        check_address(ops).map_err(|m| err("mail.ops", m))?;
    }
    if !(raw.http.public_url.starts_with("http://") || raw.http.public_url.starts_with("https://"))
    {
        return Err(err(
            "http.public_url",
            "expected an http:// or https:// URL".into(),
        ));
    }
    raw.http.bind.parse::<std::net::SocketAddr>().map_err(|_| {
        err(
            "http.bind",
            format!(
                "expected an address and port such as \"127.0.0.1:8080\", got {:?}",
                raw.http.bind
            ),
        )
    })?;

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.http.trusted_proxies.iter().enumerate() {
        let net = p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                err(
                    &format!("http.trusted_proxies[{i}]"),
                    format!("expected an address or network such as \"127.0.0.1/32\", got {p:?}"),
                )
            })?;
        trusted_proxies.push(net);
    }
    let public_url = raw.http.public_url.trim_end_matches('/').to_string();
    let base_path = public_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or_default();
    let rate = |key: &str, value: i64| {
        u32::try_from(value)
            .ok()
            .filter(|v| (1..=1_000_000).contains(v))
            .ok_or_else(|| {
                err(
                    key,
                    format!("expected a whole number from 1 to 1000000, got {value}"),
                )
            })
    };
    let link_requests_burst = rate("http.link_requests_burst", raw.http.link_requests_burst)?;
    let link_requests_per_second = rate(
        "http.link_requests_per_second",
        raw.http.link_requests_per_second,
    )?;
    let http_connections = rate("http.max_connections", raw.http.max_connections)?;
    let schedule_tz = tz("schedule.timezone", &raw.schedule.timezone)?;
    let cron = |key: &str, expr: &str| main.cron(key, expr);
    let schedule_cron = cron("schedule.cron", &raw.schedule.cron)?;
    let (max_connections, max_concurrent_cycles) = pool_limits(
        url.starts_with("sqlite:"),
        raw.database.max_connections,
        raw.schedule.max_concurrent_cycles,
    )
    .map_err(|(key, message)| err(key, message))?;
    let retry_for =
        parse_duration(&raw.schedule.retry_for).map_err(|m| err("schedule.retry_for", m))?;
    if raw.approval.required < 1 || raw.approval.required > 100 {
        return Err(err(
            "approval.required",
            format!(
                "expected a whole number from 1 to 100, got {}",
                raw.approval.required
            ),
        ));
    }
    let link_valid_for = period("approval.link_valid_for", &raw.approval.link_valid_for)?;
    let remind_after = period("approval.remind_after", &raw.approval.remind_after)?;
    let reasons_kept_for = period("approval.reasons_kept_for", &raw.approval.reasons_kept_for)?;
    let keep_for = period("approval.keep_for", &raw.approval.keep_for)?;
    if !(1..=100_000).contains(&raw.apply.batch_size) {
        return Err(err(
            "apply.batch_size",
            format!(
                "expected a whole number from 1 to 100000, got {}",
                raw.apply.batch_size
            ),
        ));
    }
    if !(1..=60_000).contains(&raw.apply.max_transaction_ms) {
        return Err(err(
            "apply.max_transaction_ms",
            format!(
                "expected a whole number of milliseconds from 1 to 60000, got {}",
                raw.apply.max_transaction_ms
            ),
        ));
    }
    let log_format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(err(
                "log.format",
                format!("expected \"text\" or \"json\", got {other:?}"),
            ))
        }
    };
    let hash_key = raw.secrets.hash_key.filter(|k| !k.is_empty());
    if let Some(key) = &hash_key {
        if key.len() < MIN_HASH_KEY_BYTES {
            return Err(err(
                "secrets.hash_key",
                format!(
                    "expected at least {MIN_HASH_KEY_BYTES} bytes of secret, got {} (a short key makes hashed values guessable)",
                    key.len()
                ),
            ));
        }
    }
    let journal_path = match raw.journal.path.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            return Err(err(
                "journal.path",
                "expected a file path, got an empty text".into(),
            ))
        }
        Some(p) => Some(PathBuf::from(p)),
    };
    if journal_path.is_some() && hash_key.is_none() {
        return Err(err(
            "journal.path",
            "the erasure journal signs its lines with a key derived from secrets.hash_key (or RETENTIOND__SECRETS__HASH_KEY); set it".into(),
        ));
    }

    let s = raw.schema;
    let references = validate_references(&s.references, hash_key.is_some(), &err)?;
    let orders = ident("schema.orders", &s.orders)?;
    let order_customer = ident("schema.order_customer", &s.order_customer)?;
    let activity = validate_activity(&s.activity, &orders, &order_customer, &references, &err)?;
    let customers = ident("schema.customers", &s.customers)?;
    let legal_hold = s
        .legal_hold
        .as_deref()
        .map(|n| ident("schema.legal_hold", n))
        .transpose()?;
    let holds = validate_holds(&s.holds, &customers, legal_hold.as_ref(), &err)?;
    let schema = SchemaConfig {
        customers,
        customer_id: ident("schema.customer_id", &s.customer_id)?,
        // Left out with one venue, the database holds only that venue's customers; with
        // several, it names the column `venue_id` as it always has.
        customer_venue: match (&s.customer_venue, raw.venues.len()) {
            (Some(name), _) => Some(ident("schema.customer_venue", name)?),
            (None, 1) => None,
            (None, _) => Some(ident("schema.customer_venue", "venue_id")?),
        },
        customer_created_at: ident("schema.customer_created_at", &s.customer_created_at)?,
        legal_hold,
        holds,
        customer_activity: s
            .customer_activity
            .iter()
            .enumerate()
            .map(|(i, n)| ident(&format!("schema.customer_activity[{i}]"), n))
            .collect::<Result<_, _>>()?,
        activity,
        orders,
        order_customer,
        order_placed_at: ident("schema.order_placed_at", &s.order_placed_at)?,
        references,
        display_name: s
            .display_name
            .iter()
            .enumerate()
            .map(|(i, n)| ident(&format!("schema.display_name[{i}]"), n))
            .collect::<Result<_, _>>()?,
        display_email: s
            .display_email
            .as_deref()
            .map(|n| ident("schema.display_email", n))
            .transpose()?,
        labels: s
            .labels
            .into_iter()
            .map(|(k, v)| {
                if v.trim().is_empty() {
                    Err(err(
                        &format!("schema.labels.{k}"),
                        "expected words, got an empty text".into(),
                    ))
                } else {
                    Ok((k, v))
                }
            })
            .collect::<Result<_, _>>()?,
    };

    if raw.venues.is_empty() {
        return Err(err(
            "venues",
            "expected at least one [[venues]] entry".into(),
        ));
    }
    let mut seen: BTreeMap<i64, VenueOrigin> = BTreeMap::new();
    let mut venues = Vec::new();
    for (v, origin) in raw.venues.into_iter().zip(origins) {
        let i = origin.index;
        let key = |field: &str| format!("venues[{i}].{field}");
        // Errors name the file the venue was written in (the main file or one of venues_dir).
        let blame = Blame { file: &origin.file };
        let err = |key: &str, message: String| blame.err(key, message);
        let period = |key: &str, value: &str| blame.period(key, value);
        let tz = |key: &str, value: &str| blame.tz(key, value);
        let cron = |key: &str, expr: &str| blame.cron(key, expr);
        let ident = |key: &str, name: &str| blame.ident(key, name);
        if let Some(first) = seen.get(&v.id) {
            return Err(err(
                &key("id"),
                format!(
                    "venue id {} appears more than once (also {} venues[{}])",
                    v.id, first.file, first.index
                ),
            ));
        }
        seen.insert(v.id, origin.clone());
        if v.name.trim().is_empty() {
            return Err(err(&key("name"), "expected a non-empty name".into()));
        }
        if v.approvers.is_empty() {
            return Err(err(
                &key("approvers"),
                "expected at least one approver email address".into(),
            ));
        }
        for (j, a) in v.approvers.iter().enumerate() {
            check_address(a).map_err(|m| err(&format!("venues[{i}].approvers[{j}]"), m))?;
        }
        // Addresses are compared without case: Boss@x and boss@x are one person.
        let mut people = HashSet::new();
        for (j, a) in v.approvers.iter().enumerate() {
            if !people.insert(a.trim().to_lowercase()) {
                return Err(err(
                    &format!("venues[{i}].approvers[{j}]"),
                    format!("{a:?} is listed twice (addresses are compared without case)"),
                ));
            }
        }
        if v.approvers.len() < raw.approval.required as usize {
            return Err(err(
                &key("approvers"),
                format!(
                    "approval.required is {} but the venue has only {} approver(s)",
                    raw.approval.required,
                    v.approvers.len()
                ),
            ));
        }
        let action: Action = v.action.parse().map_err(|m| err(&key("action"), m))?;
        let max_share = v.max_share.unwrap_or(0.75);
        if !(max_share > 0.0 && max_share <= 1.0) {
            return Err(err(
                &key("max_share"),
                format!("expected a share greater than 0 and at most 1, got {max_share}"),
            ));
        }
        let prospects = match &v.prospects {
            None => None,
            Some(p) => Some(ProspectRule {
                inactive_for: period(&key("prospects.inactive_for"), &p.inactive_for)?,
                action: match &p.action {
                    Some(a) => a.parse().map_err(|m| err(&key("prospects.action"), m))?,
                    None => action,
                },
            }),
        };
        let prospects_action = prospects.map(|p| p.action);
        if prospects_action == Some(Action::Anonymise)
            && action == Action::Delete
            && v.anonymise.is_none()
        {
            return Err(err(&key("prospects.action"), "anonymising the venue's prospects needs a [venues.anonymise] table classifying every customers column; expected \"delete\" or that table".into()));
        }
        let anonymises = action == Action::Anonymise || prospects_action == Some(Action::Anonymise);
        let deletes = action == Action::Delete || prospects_action == Some(Action::Delete);
        let anonymise_written = v.anonymise.is_some();
        let anonymise = match (anonymises, v.anonymise) {
            (true, None) if raw.suggesting => Vec::new(),
            (true, None) => {
                return Err(err(&key("anonymise"), "an anonymise venue needs a [venues.anonymise] table classifying every customers column".into()))
            }
            (false, Some(_)) => {
                return Err(err(&key("anonymise"), "only an anonymise venue (or one whose prospects are anonymised) takes an anonymise table".into()))
            }
            (false, None) => Vec::new(),
            (true, Some(map)) => {
                let structural: Vec<&str> = schema.structural_columns().iter().map(|c| c.name()).collect();
                let mut columns = Vec::new();
                for (column, strategy) in map {
                    let ckey = format!("venues[{i}].anonymise.{column}");
                    let name = ident(&ckey, &column)?;
                    let strategy: Strategy = strategy.parse().map_err(|m| err(&ckey, m))?;
                    if structural.contains(&name.name()) && strategy != Strategy::Keep {
                        return Err(err(&ckey, "the id, venue, created-at and legal-hold columns can only be \"keep\"".into()));
                    }
                    if strategy == Strategy::Hash && hash_key.is_none() {
                        return Err(err(&ckey, "the hash strategy needs secrets.hash_key (or RETENTIOND__SECRETS__HASH_KEY)".into()));
                    }
                    columns.push((name, strategy));
                }
                columns
            }
        };
        if v.unknown_customer_id.is_some() && !deletes {
            return Err(err(
                &key("unknown_customer_id"),
                "only a delete venue has an Unknown Customer record".into(),
            ));
        }
        venues.push(VenueConfig {
            id: v.id,
            name: v.name,
            approvers: v.approvers,
            inactive_for: period(&key("inactive_for"), &v.inactive_for)?,
            action,
            report_interval: match &v.report_interval {
                Some(p) => period(&key("report_interval"), p)?,
                None => "30 days".parse().expect("valid default"),
            },
            max_share,
            timezone: match &v.timezone {
                Some(z) => tz(&key("timezone"), z)?,
                None => schedule_tz,
            },
            cron: match &v.cron {
                Some(expr) => cron(&key("cron"), expr)?,
                None => schedule_cron.clone(),
            },
            unknown_customer_id: v.unknown_customer_id,
            anonymise,
            anonymise_written,
            prospects,
        });
    }

    Ok(Config {
        file,
        database_url: SecretString::from(url.to_string()),
        max_connections,
        http: HttpConfig {
            bind: raw.http.bind,
            public_url,
            base_path,
            trusted_proxies,
            link_requests_burst,
            link_requests_per_second,
            max_connections: http_connections,
        },
        mail: MailConfig {
            from: raw.mail.from,
            transport,
            smtp_url: SecretString::from(raw.mail.smtp_url),
            dir: PathBuf::from(raw.mail.dir),
            ops: raw.mail.ops,
        },
        schedule: ScheduleConfig {
            cron: schedule_cron,
            timezone: schedule_tz,
            max_concurrent_cycles,
            retry_for,
        },
        approval: ApprovalConfig {
            required: raw.approval.required as u32,
            link_valid_for,
            remind_after,
            reasons_kept_for,
            keep_for,
        },
        hash_key: hash_key.map(SecretString::from),
        schema,
        batch_size: raw.apply.batch_size as u32,
        max_transaction_ms: raw.apply.max_transaction_ms as u32,
        vacuum_after_apply: raw.apply.vacuum,
        journal_path,
        log_format,
        venues,
    })
}

/// The file a value was read from, and the typed readings of values that blame it: the main
/// file, or the `venues_dir` file a venue came from.
struct Blame<'a> {
    file: &'a str,
}

impl Blame<'_> {
    fn err(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.to_string(),
            message,
        }
    }

    fn ident(&self, key: &str, name: &str) -> Result<Ident, ConfigError> {
        Ident::new(name).map_err(|e| self.err(key, e.to_string()))
    }

    fn period(&self, key: &str, value: &str) -> Result<CalendarPeriod, ConfigError> {
        value
            .parse::<CalendarPeriod>()
            .map_err(|e| self.err(key, e.to_string()))
    }

    fn tz(&self, key: &str, value: &str) -> Result<Tz, ConfigError> {
        value.parse::<Tz>().map_err(|_| {
            self.err(
                key,
                format!("expected an IANA time zone such as \"Europe/London\", got {value:?}"),
            )
        })
    }

    fn cron(&self, key: &str, expr: &str) -> Result<String, ConfigError> {
        cron::Schedule::from_str(expr)
            .map(|_| expr.to_string())
            .map_err(|_| {
                self.err(key, format!("expected a cron expression with seconds, such as \"0 0 2 * * *\" (sec min hour day month weekday), got {expr:?}"))
            })
    }
}

/// Connections the daemon keeps out of the cycles' reach, for the report pages, `/healthz`
/// and mail delivery (SPEC 11: a page answers while the night's run goes on).
pub const CONNECTIONS_FOR_PAGES: u32 = 2;

/// How many pool connections one venue cycle holds at most: its work, and on PostgreSQL and
/// MySQL the session that holds its lock (SQLite's lock is a file).
pub fn connections_per_cycle(sqlite: bool) -> u32 {
    if sqlite {
        1
    } else {
        2
    }
}

/// `database.max_connections` and `schedule.max_concurrent_cycles`, checked against each other:
/// the cycles that run at once, each with its lock's connection, must fit in what the pool
/// leaves once the pages' connections are kept aside. Errors name the key.
fn pool_limits(
    sqlite: bool,
    max_connections: Option<i64>,
    max_concurrent_cycles: Option<i64>,
) -> Result<(u32, u32), (&'static str, String)> {
    let per_cycle = connections_per_cycle(sqlite);
    let least = CONNECTIONS_FOR_PAGES + per_cycle;
    let connections = match max_connections {
        None => if sqlite { 4 } else { 8 },
        Some(n) if (i64::from(least)..=10_000).contains(&n) => n as u32,
        Some(n) => {
            return Err((
                "database.max_connections",
                format!(
                    "expected a whole number from {least} to 10000 ({CONNECTIONS_FOR_PAGES} are kept for the pages, /healthz and mail, and a cycle needs {per_cycle}), got {n}"
                ),
            ))
        }
    };
    let for_cycles = connections - CONNECTIONS_FOR_PAGES;
    let allowed = for_cycles / per_cycle;
    let cycles = match max_concurrent_cycles {
        None => allowed,
        Some(n) if n >= 1 && n <= i64::from(allowed) => n as u32,
        Some(n) if n < 1 => {
            return Err((
                "schedule.max_concurrent_cycles",
                format!("expected a whole number of at least 1, got {n}"),
            ))
        }
        Some(n) => {
            return Err((
                "schedule.max_concurrent_cycles",
                format!(
                    "{n} cycles at once need {} connections (a cycle needs {per_cycle}, its lock's included), but database.max_connections = {connections} leaves {for_cycles} for cycles ({CONNECTIONS_FOR_PAGES} are kept for the pages, /healthz and mail): raise database.max_connections to at least {} or lower schedule.max_concurrent_cycles to at most {allowed}",
                    n * i64::from(per_cycle),
                    n * i64::from(per_cycle) + i64::from(CONNECTIONS_FOR_PAGES)
                ),
            ))
        }
    };
    Ok((connections, cycles))
}

/// A duration written as `"2 hours"`, `"90 minutes"`, `"30 seconds"` or `"1 day"` (0 turns
/// retrying off).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let expected = || {
        format!("expected a whole number of seconds, minutes, hours or days such as \"2 hours\", got {text:?}")
    };
    let mut parts = text.split_whitespace();
    let (Some(amount), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(expected());
    };
    let amount: u64 = amount.parse().map_err(|_| expected())?;
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return Err(expected()),
    };
    if amount > 30 * 86_400 / seconds {
        return Err(format!("expected at most 30 days, got {text:?}"));
    }
    Ok(std::time::Duration::from_secs(amount * seconds))
}

/// The shortest `secrets.hash_key` accepted: a keyed hash is only as strong as its key.
pub const MIN_HASH_KEY_BYTES: usize = 32;

/// The name of the hold the legal-hold column makes (SPEC 12).
pub const LEGAL_HOLD: &str = "legal hold";

/// `[[schema.holds]]`, after the legal-hold column's hold: names unique, `when` parsed,
/// `after` and `for` together, a column naming the customer on any table but the customers.
fn validate_holds(
    raw: &[RawHold],
    customers: &Ident,
    legal_hold: Option<&Ident>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<crate::holds::Hold>, ConfigError> {
    use crate::holds::{Comparison, Condition, Hold, Literal};
    let mut holds: Vec<Hold> = legal_hold
        .map(|column| Hold {
            name: LEGAL_HOLD.to_string(),
            table: customers.clone(),
            column: None,
            when: vec![Condition {
                column: column.clone(),
                op: Comparison::Eq,
                value: Literal::Bool(true),
            }],
            until: None,
        })
        .into_iter()
        .collect();
    for (i, h) in raw.iter().enumerate() {
        let key = |k: &str| format!("schema.holds[{i}].{k}");
        let ident = |k: &str, name: &str| Ident::new(name).map_err(|e| err(&key(k), e.to_string()));
        let name = h.name.trim();
        if name.is_empty() {
            return Err(err(
                &key("name"),
                "expected words such as \"Gift Aid declaration\", got an empty text".into(),
            ));
        }
        if holds
            .iter()
            .any(|other| other.name.eq_ignore_ascii_case(name))
        {
            return Err(err(&key("name"), format!("{name:?} names another hold already (\"{LEGAL_HOLD}\" is schema.legal_hold's); expected a name of its own")));
        }
        let table = ident("table", &h.table)?;
        let column = match (&h.column, &table == customers) {
            (Some(_), true) => return Err(err(&key("column"), format!("a hold on the customers table ({customers}) is its own customer; leave out column"))),
            (None, true) => None,
            (Some(c), false) => Some(ident("column", c)?),
            (None, false) => return Err(err(&key("column"), format!("expected the column of {table} holding the customer id"))),
        };
        let when = match &h.when {
            Some(text) => crate::holds::parse_when(text).map_err(|e| err(&key("when"), e))?,
            None => Vec::new(),
        };
        let until = match (&h.after, &h.for_period) {
            (Some(after), Some(period)) => Some((
                ident("after", after)?,
                period
                    .parse::<CalendarPeriod>()
                    .map_err(|e| err(&key("for"), e.to_string()))?,
            )),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(err(
                    &key("for"),
                    "for needs after: the time column the period runs from".into(),
                ))
            }
            (Some(_), None) => return Err(err(
                &key("after"),
                "after needs for: the period the hold lasts from that time, such as \"6 years\""
                    .into(),
            )),
        };
        if column.is_none() && when.is_empty() && until.is_none() {
            return Err(err(&key("when"), "a hold on the customers table without when or after would hold every customer; expected a condition such as \"balance_pence != 0\"".into()));
        }
        holds.push(Hold {
            name: name.to_string(),
            table,
            column,
            when,
            until,
        });
    }
    Ok(holds)
}

/// `[[schema.activity]]`: names, and each `via` parent found among the orders table and the
/// `[[schema.references]]` tables without `via` (whose customer column it takes).
fn validate_activity(
    raw: &[RawActivity],
    orders: &Ident,
    order_customer: &Ident,
    references: &[Reference],
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<ActivitySource>, ConfigError> {
    let mut sources = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let key = |k: &str| format!("schema.activity[{i}].{k}");
        let ident = |k: &str, name: &str| Ident::new(name).map_err(|e| err(&key(k), e.to_string()));
        let table = ident("table", &a.table)?;
        let via = match &a.via {
            None => {
                if a.via_key.is_some() {
                    return Err(err(&key("via_key"), "via_key needs via".into()));
                }
                None
            }
            Some(parent) => {
                let parent = ident("via", parent)?;
                let customer = if &parent == orders {
                    order_customer.clone()
                } else {
                    match references
                        .iter()
                        .find(|r| r.table == parent && r.via.is_none())
                    {
                        Some(r) => r.column.clone(),
                        None => {
                            return Err(err(
                                &key("via"),
                                format!("expected the orders table ({orders}) or the table of a [[schema.references]] entry without via, got {:?}", parent.name()),
                            ))
                        }
                    }
                };
                Some(ActivityVia {
                    table: parent,
                    key: ident("via_key", a.via_key.as_deref().unwrap_or("id"))?,
                    customer,
                })
            }
        };
        sources.push(ActivitySource {
            column: ident("column", &a.column)?,
            at: ident("at", &a.at)?,
            table,
            via,
        });
    }
    Ok(sources)
}

/// `[[schema.references]]`: fates, `via` parents and the column strategies of staying tables.
fn validate_references(
    raw: &[RawReference],
    have_hash_key: bool,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<Reference>, ConfigError> {
    let ident = |key: &str, name: &str| Ident::new(name).map_err(|e| err(key, e.to_string()));
    let mut references: Vec<Reference> = Vec::new();
    // Parents first, so that a `via` reference can copy its parent's fate.
    let order: Vec<usize> = (0..raw.len())
        .filter(|&i| raw[i].via.is_none())
        .chain((0..raw.len()).filter(|&i| raw[i].via.is_some()))
        .collect();
    let mut built: Vec<Option<Reference>> = vec![None; raw.len()];
    for i in order {
        let r = &raw[i];
        let key = |field: &str| format!("schema.references[{i}].{field}");
        let table = ident(&key("table"), &r.table)?;
        let column = ident(&key("column"), &r.column)?;
        let (on_delete, on_anonymise, via) = match &r.via {
            Some(parent_name) => {
                if r.on_delete.is_some() || r.on_anonymise.is_some() {
                    return Err(err(&key("via"), "a via reference follows its parent rows; leave out on_delete and on_anonymise".into()));
                }
                let parent_table = ident(&key("via"), parent_name)?;
                let parents: Vec<&Reference> = built
                    .iter()
                    .flatten()
                    .filter(|p| p.table == parent_table && p.via.is_none())
                    .collect();
                let parent = match parents.as_slice() {
                    [one] => *one,
                    [] => return Err(err(&key("via"), format!("expected the table of another [[schema.references]] entry (without via), got {parent_name:?}"))),
                    _ => return Err(err(&key("via"), format!("{parent_name:?} is listed more than once in schema.references; a via parent must be listed once"))),
                };
                let via_key = ident(&key("via_key"), r.via_key.as_deref().unwrap_or("id"))?;
                (
                    parent.on_delete,
                    parent.on_anonymise,
                    Some(Via {
                        table: parent_table,
                        key: via_key,
                    }),
                )
            }
            None => {
                if r.via_key.is_some() {
                    return Err(err(&key("via_key"), "via_key needs via".into()));
                }
                let on_delete = match r.on_delete.as_deref() {
                    Some("reassign") => OnDelete::Reassign,
                    Some("delete") => OnDelete::Delete,
                    Some(other) => {
                        return Err(err(
                            &key("on_delete"),
                            format!("expected \"reassign\" or \"delete\", got {other:?}"),
                        ))
                    }
                    None => {
                        return Err(err(
                            &key("on_delete"),
                            "required key is missing (\"reassign\" or \"delete\")".into(),
                        ))
                    }
                };
                let on_anonymise = match r.on_anonymise.as_deref() {
                    Some("keep") => OnAnonymise::Keep,
                    Some("delete") => OnAnonymise::Delete,
                    Some(other) => {
                        return Err(err(
                            &key("on_anonymise"),
                            format!("expected \"keep\" or \"delete\", got {other:?}"),
                        ))
                    }
                    None if on_delete == OnDelete::Reassign => OnAnonymise::Keep,
                    None => OnAnonymise::Delete,
                };
                (on_delete, on_anonymise, None)
            }
        };
        let mut columns = Vec::new();
        for (name, strategy) in r.columns.iter().flatten() {
            let ckey = format!("schema.references[{i}].columns.{name}");
            let name = ident(&ckey, name)?;
            let strategy: Strategy = strategy.parse().map_err(|m| err(&ckey, m))?;
            if name == column && strategy != Strategy::Keep {
                return Err(err(
                    &ckey,
                    "the reference column itself can only be \"keep\"".into(),
                ));
            }
            if strategy == Strategy::Hash && !have_hash_key {
                return Err(err(
                    &ckey,
                    "the hash strategy needs secrets.hash_key (or RETENTIOND__SECRETS__HASH_KEY)"
                        .into(),
                ));
            }
            columns.push((name, strategy));
        }
        built[i] = Some(Reference {
            table,
            column,
            on_delete,
            on_anonymise,
            via,
            columns,
        });
    }
    references.extend(built.into_iter().flatten());
    let mut seen = HashSet::new();
    for (i, r) in references.iter().enumerate() {
        if !seen.insert((r.table.name().to_string(), r.column.name().to_string())) {
            return Err(err(
                &format!("schema.references[{i}]"),
                format!("{}.{} is listed more than once", r.table, r.column),
            ));
        }
    }
    Ok(references)
}

fn check_address(address: &str) -> Result<(), String> {
    let trimmed = address.trim();
    let valid = trimmed.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !trimmed.contains(char::is_whitespace)
    });
    if valid {
        Ok(())
    } else {
        Err(format!("expected an email address, got {address:?}"))
    }
}

#[cfg(test)]
mod path_tests {
    use super::resolve_sqlite_url;
    use std::path::Path;

    #[test]
    fn a_relative_sqlite_file_is_read_from_the_configuration_folder() {
        let base = Path::new("/etc/retentiond");
        for (url, expected) in [
            (
                "sqlite://data/retention.db",
                "sqlite:///etc/retentiond/data/retention.db",
            ),
            (
                "sqlite:data.db?mode=rwc",
                "sqlite:///etc/retentiond/data.db?mode=rwc",
            ),
            ("sqlite:///var/lib/r.db", "sqlite:///var/lib/r.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ] {
            assert_eq!(resolve_sqlite_url(url, base), expected, "{url}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_default_to_the_name_in_words() {
        let mut schema_labels = BTreeMap::new();
        schema_labels.insert(
            "marketing_opt_in".to_string(),
            "Happy to hear from us".to_string(),
        );
        let label = |name: &str| {
            schema_labels
                .get(name)
                .cloned()
                .unwrap_or_else(|| default_label(name))
        };
        assert_eq!(label("address_line1"), "Address line 1");
        assert_eq!(label("date_of_birth"), "Date of birth");
        assert_eq!(label("marketing_opt_in"), "Happy to hear from us");
    }
}
