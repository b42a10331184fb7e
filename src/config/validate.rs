//! Validation of the configuration as written into typed values, one function per section,
//! in the order their errors are reported. Each error names the file (the main file, or the
//! `venues_dir` file a venue came from), the key and what was expected.

use super::*;

/// The whole file, section by section, in the order its errors are reported.
pub(super) fn validate(
    file: String,
    raw: RawConfig,
    origins: Vec<VenueOrigin>,
) -> Result<Config, ConfigError> {
    let main = Blame { file: &file };
    let url = database_url(&main, &raw.database)?;
    let mail = mail(&main, raw.mail)?;
    let http = http(&main, raw.http)?;
    let (schedule, max_connections) = schedule(&main, &raw.schedule, &raw.database, &url)?;
    let approval = approval(&main, &raw.approval)?;
    let (batch_size, max_transaction_ms) = apply_limits(&main, &raw.apply)?;
    let log_format = log_format(&main, &raw.log)?;
    let (hash_key, journal_path) = secrets(&main, raw.secrets, &raw.journal)?;
    let schema = schema(&main, raw.schema, raw.venues.len(), hash_key.is_some())?;
    let defaults = VenueDefaults {
        schema: &schema,
        approvals_required: approval.required,
        hash_key: hash_key.is_some(),
        timezone: schedule.timezone,
        cron: &schedule.cron,
        suggesting: raw.suggesting,
    };
    let venues = venues(&main, raw.venues, origins, &defaults)
        .map_err(|e| with_empty_folder_named(e, raw.venues_dir.as_deref()))?;
    Ok(Config {
        file,
        database_url: SecretString::from(url),
        max_connections,
        http,
        mail,
        schedule,
        approval,
        hash_key: hash_key.map(SecretString::from),
        schema,
        batch_size,
        max_transaction_ms,
        vacuum_after_apply: raw.apply.vacuum,
        journal_path,
        log_format,
        venues,
    })
}

/// `[database] url`: one of the three backends.
fn database_url(main: &Blame, raw: &RawDatabase) -> Result<String, ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let url = raw.url.trim();
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

    Ok(url.to_string())
}

/// `[mail]`.
fn mail(main: &Blame, raw: RawMail) -> Result<MailConfig, ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let transport = match raw.transport.as_str() {
        "smtp" => MailTransport::Smtp,
        "file" => MailTransport::File,
        other => {
            return Err(err(
                "mail.transport",
                format!("expected \"smtp\" or \"file\", got {other:?}"),
            ))
        }
    };
    if !raw.from.contains('@') {
        return Err(err(
            "mail.from",
            "expected an address such as \"Data Retention <retention@example.org>\"".into(),
        ));
    }
    if let Some(ops) = &raw.ops {
        check_address(ops).map_err(|m| err("mail.ops", m))?;
    }
    Ok(MailConfig {
        from: raw.from,
        transport,
        smtp_url: SecretString::from(raw.smtp_url),
        dir: PathBuf::from(raw.dir),
        ops: raw.ops,
    })
}

/// `[http]`.
fn http(main: &Blame, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    if !(raw.public_url.starts_with("http://") || raw.public_url.starts_with("https://")) {
        return Err(err(
            "http.public_url",
            "expected an http:// or https:// URL".into(),
        ));
    }
    raw.bind.parse::<std::net::SocketAddr>().map_err(|_| {
        err(
            "http.bind",
            format!(
                "expected an address and port such as \"127.0.0.1:8080\", got {:?}",
                raw.bind
            ),
        )
    })?;

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
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
    let public_url = raw.public_url.trim_end_matches('/').to_string();
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
    let link_requests_burst = rate("http.link_requests_burst", raw.link_requests_burst)?;
    let link_requests_per_second = rate(
        "http.link_requests_per_second",
        raw.link_requests_per_second,
    )?;
    let http_connections = rate("http.max_connections", raw.max_connections)?;
    Ok(HttpConfig {
        bind: raw.bind,
        public_url,
        base_path,
        trusted_proxies,
        link_requests_burst,
        link_requests_per_second,
        max_connections: http_connections,
    })
}

/// `[schedule]`, with `database.max_connections` (the pool must fit the cycles that run at
/// once): the schedule and the pool size.
fn schedule(
    main: &Blame,
    raw: &RawSchedule,
    database: &RawDatabase,
    url: &str,
) -> Result<(ScheduleConfig, u32), ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let timezone = main.tz("schedule.timezone", &raw.timezone)?;
    let cron = main.cron("schedule.cron", &raw.cron)?;
    let (max_connections, max_concurrent_cycles) = pool_limits(
        url.starts_with("sqlite:"),
        database.max_connections,
        raw.max_concurrent_cycles,
    )
    .map_err(|(key, message)| err(key, message))?;
    let retry_for = parse_duration(&raw.retry_for).map_err(|m| err("schedule.retry_for", m))?;
    let schedule = ScheduleConfig {
        cron,
        timezone,
        max_concurrent_cycles,
        retry_for,
    };
    Ok((schedule, max_connections))
}

/// `[approval]`.
fn approval(main: &Blame, raw: &RawApproval) -> Result<ApprovalConfig, ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let period = |key: &str, value: &str| main.period(key, value);
    if raw.required < 1 || raw.required > 100 {
        return Err(err(
            "approval.required",
            format!(
                "expected a whole number from 1 to 100, got {}",
                raw.required
            ),
        ));
    }
    let link_valid_for = period("approval.link_valid_for", &raw.link_valid_for)?;
    let remind_after = period("approval.remind_after", &raw.remind_after)?;
    let reasons_kept_for = period("approval.reasons_kept_for", &raw.reasons_kept_for)?;
    let keep_for = period("approval.keep_for", &raw.keep_for)?;
    Ok(ApprovalConfig {
        required: raw.required as u32,
        link_valid_for,
        remind_after,
        reasons_kept_for,
        keep_for,
    })
}

/// `[apply]`: the batch size and the longest transaction.
fn apply_limits(main: &Blame, raw: &RawApply) -> Result<(u32, u32), ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    if !(1..=100_000).contains(&raw.batch_size) {
        return Err(err(
            "apply.batch_size",
            format!(
                "expected a whole number from 1 to 100000, got {}",
                raw.batch_size
            ),
        ));
    }
    if !(1..=60_000).contains(&raw.max_transaction_ms) {
        return Err(err(
            "apply.max_transaction_ms",
            format!(
                "expected a whole number of milliseconds from 1 to 60000, got {}",
                raw.max_transaction_ms
            ),
        ));
    }
    Ok((raw.batch_size as u32, raw.max_transaction_ms as u32))
}

/// `[log] format`.
fn log_format(main: &Blame, raw: &RawLog) -> Result<LogFormat, ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let format = match raw.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(err(
                "log.format",
                format!("expected \"text\" or \"json\", got {other:?}"),
            ))
        }
    };
    Ok(format)
}

/// `[secrets] hash_key` and `[journal] path`, which signs with a key derived from it.
fn secrets(
    main: &Blame,
    raw: RawSecrets,
    journal: &RawJournal,
) -> Result<(Option<String>, Option<PathBuf>), ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let hash_key = raw.hash_key.filter(|k| !k.is_empty());
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
    let journal_path = match journal.path.as_deref().map(str::trim) {
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

    Ok((hash_key, journal_path))
}

/// `[schema]`: the customer database's layout. Without `customer_venue`, one venue means a
/// database of that venue alone; several mean the column `venue_id`.
fn schema(
    main: &Blame,
    s: RawSchema,
    venues: usize,
    hash_key: bool,
) -> Result<SchemaConfig, ConfigError> {
    let err = |key: &str, message: String| main.err(key, message);
    let ident = |key: &str, name: &str| main.ident(key, name);
    let references = validate_references(&s.references, hash_key, &err)?;
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
    Ok(SchemaConfig {
        customers,
        customer_id: ident("schema.customer_id", &s.customer_id)?,
        // Left out with one venue, the database holds only that venue's customers; with
        // several, it names the column `venue_id` as it always has.
        customer_venue: match (&s.customer_venue, venues) {
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
    })
}

/// What every venue takes from the rest of the file.
struct VenueDefaults<'a> {
    schema: &'a SchemaConfig,
    approvals_required: u32,
    hash_key: bool,
    timezone: Tz,
    cron: &'a str,
    suggesting: bool,
}

/// With `venues_dir` set, "no venues" is said of the folder too: a vendor whose files were
/// not written (or not named `*.toml`) reads where retentiond looked.
fn with_empty_folder_named(e: ConfigError, venues_dir: Option<&str>) -> ConfigError {
    match venues_dir {
        Some(dir) if e.key == "venues" => ConfigError {
            message: format!(
                "{} (none in the main file, and no *.toml file in venues_dir {dir} holds one)",
                e.message
            ),
            ..e
        },
        _ => e,
    }
}

/// `[[venues]]`, from the main file and `venues_dir` (`origins` says which file each came
/// from, so that its errors name that file).
fn venues(
    main: &Blame,
    raw: Vec<RawVenue>,
    origins: Vec<VenueOrigin>,
    defaults: &VenueDefaults,
) -> Result<Vec<VenueConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(main.err("venues", "expected at least one [[venues]] entry".into()));
    }
    let mut seen: BTreeMap<i64, VenueOrigin> = BTreeMap::new();
    let mut venues = Vec::new();
    for (v, origin) in raw.into_iter().zip(origins) {
        if let Some(first) = seen.get(&v.id) {
            return Err(Blame { file: &origin.file }.err(
                &format!("venues[{}].id", origin.index),
                format!(
                    "venue id {} appears more than once (also {} venues[{}])",
                    v.id, first.file, first.index
                ),
            ));
        }
        seen.insert(v.id, origin.clone());
        venues.push(venue(v, &origin, defaults)?);
    }
    Ok(venues)
}

/// One `[[venues]]` entry, written in `origin`.
fn venue(
    v: RawVenue,
    origin: &VenueOrigin,
    defaults: &VenueDefaults,
) -> Result<VenueConfig, ConfigError> {
    let i = origin.index;
    let key = |field: &str| format!("venues[{i}].{field}");
    // Errors name the file the venue was written in (the main file or one of venues_dir).
    let blame = Blame { file: &origin.file };
    let err = |key: &str, message: String| blame.err(key, message);
    let period = |key: &str, value: &str| blame.period(key, value);
    let tz = |key: &str, value: &str| blame.tz(key, value);
    let cron = |key: &str, expr: &str| blame.cron(key, expr);
    let ident = |key: &str, name: &str| blame.ident(key, name);
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
    if v.approvers.len() < defaults.approvals_required as usize {
        return Err(err(
            &key("approvers"),
            format!(
                "approval.required is {} but the venue has only {} approver(s)",
                defaults.approvals_required,
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
        (true, None) if defaults.suggesting => Vec::new(),
        (true, None) => {
            return Err(err(&key("anonymise"), "an anonymise venue needs a [venues.anonymise] table classifying every customers column".into()))
        }
        (false, Some(_)) => {
            return Err(err(&key("anonymise"), "only an anonymise venue (or one whose prospects are anonymised) takes an anonymise table".into()))
        }
        (false, None) => Vec::new(),
        (true, Some(map)) => {
            let structural: Vec<&str> = defaults.schema.structural_columns().iter().map(|c| c.name()).collect();
            let mut columns = Vec::new();
            for (column, strategy) in map {
                let ckey = format!("venues[{i}].anonymise.{column}");
                let name = ident(&ckey, &column)?;
                let strategy: Strategy = strategy.parse().map_err(|m| err(&ckey, m))?;
                if structural.contains(&name.name()) && strategy != Strategy::Keep {
                    return Err(err(&ckey, "the id, venue, created-at and legal-hold columns can only be \"keep\"".into()));
                }
                if strategy == Strategy::Hash && !defaults.hash_key {
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
    Ok(VenueConfig {
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
            None => defaults.timezone,
        },
        cron: match &v.cron {
            Some(expr) => cron(&key("cron"), expr)?,
            None => defaults.cron.to_string(),
        },
        unknown_customer_id: v.unknown_customer_id,
        anonymise,
        anonymise_written,
        prospects,
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
