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

mod validate;
use validate::validate;

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
    let message = one_line(&e.to_string());
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

/// A TOML syntax error comes as several lines (where, the offending line with a caret under
/// it, what was wrong): an error here is one line, so it keeps where and what, as in
/// "TOML parse error at line 1, column 9: key with no value, expected `=`".
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return String::new();
    };
    match lines.next_back() {
        Some(what) if what != first => format!("{first}: {what}"),
        _ => first.to_string(),
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
