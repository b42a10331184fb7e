//! The command line (SPEC 6): parsing, loading the configuration, and one function per command.
//! Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error.

use crate::config::{self, Config};
use crate::cycle::{Selection, VenueCycle};
use crate::db::{Backend, Db};
use crate::decision::{self, Actor, Decided, Decision};
use crate::fleet::{Fleet, RunOptions, VenueOutcome};
use crate::policy::{Outcome, ReportState};
use crate::{audit, check, logging, migrate, reports, Service};
use anyhow::{Context, Result};
use chrono::{DateTime, SubsecRound, Utc};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::process::ExitCode;

/// Prints a line to standard output; a closed pipe (`retentiond reports csv 1 | head`) ends the
/// process quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout_line(format_args!($($arg)*))
    };
}

fn write_stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("retentiond: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "retentiond",
    version,
    about = "Keeps venues' customer databases in line with their retention policies"
)]
pub struct Cli {
    /// Configuration file (else $RETENTIOND_CONFIG, else config/retentiond.toml)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One cycle now for every venue (or one): apply approved reports, then select anew
    Cycle {
        /// Only this venue (its id in the configuration)
        #[arg(long, value_name = "ID")]
        venue: Option<i64>,
        /// Run as if the time were this: a date (2027-01-01, local midnight in schedule.timezone) or an RFC 3339 time
        #[arg(long, value_parser = parse_at, value_name = "DATE|RFC3339")]
        at: Option<At>,
        /// Only report what would happen; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon: venue schedules, the report pages and mail delivery
    Run,
    /// Create or upgrade retentiond's own tables (retention_*)
    Migrate,
    /// A self-contained demo in demo/: synthetic customers, approval links, the daemon
    Demo,
    /// Validate the configuration against the live database
    Check {
        /// Also print a proposed strategy for every unclassified column, ready to paste (no values shown)
        #[arg(long)]
        suggest: bool,
    },
    /// List, show, export, approve, reject or cancel reports
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// The proof-of-disposal ledger (no personal data)
    Audit {
        /// Only this venue's reports and customers
        #[arg(long)]
        venue: Option<i64>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// What each inactivity period would select for a venue now, what its holds keep back, and its customers by year of last activity; changes nothing
    Whatif {
        /// The venue (its id in the configuration)
        #[arg(long, value_name = "ID")]
        venue: i64,
        /// As if the time were this: a date (local midnight in the venue's zone) or an RFC 3339 time
        #[arg(long, value_parser = parse_at, value_name = "DATE|RFC3339")]
        at: Option<At>,
        /// The periods to compare, comma-separated (default: 1, 2, 3, 4, 5, 7 and 10 years)
        #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_period)]
        periods: Vec<crate::policy::CalendarPeriod>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Erase one customer now, on their request (linked tables included, in the ledger and the journal)
    Erase {
        #[command(flatten)]
        person: PersonArgs,
        /// delete or anonymise (default: the venue's action)
        #[arg(long, value_parser = parse_action)]
        action: Option<crate::policy::Action>,
        /// Print what would change (tables, row counts, columns; never values); change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print, as one JSON document, every value retentiond would remove or change for one customer (a subject access request)
    Export {
        #[command(flatten)]
        person: PersonArgs,
    },
    /// Apply the erasures of an erasure journal again, after a database was restored from a backup
    Replay {
        /// The erasure journal (journal.path) written before the backup was restored
        #[arg(value_name = "JOURNAL")]
        journal: PathBuf,
        /// Only print what would be erased again; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Accept lines written before journal lines were signed (an older retentiond's
        /// journal); printed as a warning
        #[arg(long)]
        accept_unsigned: bool,
    },
}

/// Who a request of SPEC 13 is about, and who asks.
#[derive(clap::Args, Debug)]
pub struct PersonArgs {
    /// The venue (its id in the configuration)
    #[arg(long, value_name = "ID")]
    venue: i64,
    /// The customer's id
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "email",
        conflicts_with = "email"
    )]
    customer: Option<i64>,
    /// The customer's email address (without case; refused unless exactly one customer has it)
    #[arg(long, value_name = "ADDRESS")]
    email: Option<String>,
    /// Who asks (for the ledger), e.g. "Sam, support ticket 4711"
    #[arg(long, value_name = "NAME")]
    by: String,
}

#[derive(Subcommand, Debug)]
pub enum ReportsCommand {
    /// The reports, newest first, with their state and number of customers
    List {
        /// Only this venue's reports
        #[arg(long, value_name = "ID")]
        venue: Option<i64>,
        /// Only reports in this state (pending, approved, applying, applied, rejected, expired, cancelled); repeatable
        #[arg(long, value_name = "STATE", value_parser = parse_state)]
        state: Vec<ReportState>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// One report: its policy, dates, state, reason (while kept) and outcome counts
    Show {
        /// The report's id (from `reports list`)
        #[arg(value_name = "ID")]
        id: i64,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// The report's customers as CSV on standard output
    Csv {
        /// The report's id (from `reports list`)
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Cancel a pending or approved report before it is applied
    Cancel {
        /// The report's id (from `reports list`)
        #[arg(value_name = "ID")]
        id: i64,
        /// Why (kept with the report, not in the ledger, erased after approval.reasons_kept_for)
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Approve on the venue's behalf (recorded as the operator's decision)
    Approve {
        /// The report's id (from `reports list`)
        #[arg(value_name = "ID")]
        id: i64,
        /// Who approved, e.g. "Sam, phone call with the box office"
        #[arg(long, value_name = "NAME")]
        by: String,
    },
    /// Keep customers out of a pending report on the venue's behalf (they are never touched by it)
    Keep {
        /// The report's id (from `reports list`)
        #[arg(value_name = "ID")]
        id: i64,
        /// Customer ids, separated by commas or spaces (e.g. "17,42,99")
        #[arg(long, value_name = "LIST")]
        customers: String,
        /// Who asked, e.g. "Sam, phone call with the box office"
        #[arg(long, value_name = "NAME")]
        by: String,
        /// Why (kept with the report, not in the ledger, erased after approval.reasons_kept_for)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Reject a pending report on the venue's behalf (recorded as the operator's decision)
    Reject {
        /// The report's id (from `reports list`)
        #[arg(value_name = "ID")]
        id: i64,
        /// Who rejected, e.g. "Sam, phone call with the box office"
        #[arg(long, value_name = "NAME")]
        by: String,
        /// Why (kept with the report, not in the ledger, erased after approval.reasons_kept_for)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

/// The `--at` of `cycle`: a local date (midnight in the schedule's zone) or an instant.
#[derive(Debug, Clone, Copy)]
pub enum At {
    Date(chrono::NaiveDate),
    Instant(DateTime<Utc>),
}

impl At {
    /// The instant, a date taken as local midnight in `tz`.
    pub fn resolve(self, tz: chrono_tz::Tz) -> DateTime<Utc> {
        match self {
            At::Date(date) => crate::policy::start_of_day(date, tz),
            At::Instant(t) => t.trunc_subsecs(0),
        }
    }
}

fn parse_state(s: &str) -> Result<ReportState, String> {
    s.parse::<ReportState>().map_err(|_| {
        let states: Vec<&str> = ReportState::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", states.join(", "))
    })
}

fn parse_action(s: &str) -> Result<crate::policy::Action, String> {
    s.parse::<crate::policy::Action>()
        .map_err(|_| format!("expected delete or anonymise, got {s:?}"))
}

fn parse_period(s: &str) -> Result<crate::policy::CalendarPeriod, String> {
    s.trim()
        .parse::<crate::policy::CalendarPeriod>()
        .map_err(|e| e.to_string())
}

fn parse_at(s: &str) -> Result<At, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(At::Date(date));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| At::Instant(t.with_timezone(&Utc)))
        .map_err(|_| format!("expected a date such as 2027-01-01 or an RFC 3339 time such as 2027-01-01T02:00:00Z, got {s:?}"))
}

/// The command line's clock: now, to the second (stored times are whole seconds).
pub fn now() -> DateTime<Utc> {
    crate::Clock::default().now()
}

/// Runs the parsed command line and returns the process exit code: the configuration is read
/// first, then the command runs on the runtime its database wants ([`crate::runtime`]).
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Demo = cli.command {
        // The demo's database is an embedded SQLite file.
        return match on_runtime(
            Some(Backend::Sqlite),
            crate::demo::run(std::path::Path::new("demo")),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("retentiond: demo: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let path = config::resolve_path(cli.config.as_deref());
    let suggesting = matches!(cli.command, Command::Check { suggest: true });
    let loaded = if suggesting {
        config::load_for_suggest(&path)
    } else {
        config::load(&path)
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("retentiond: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format);
    let backend = Backend::of_url(config.database_url.expose_secret());
    match on_runtime(backend, execute(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("retentiond: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs `work` to its end on a runtime built for `backend`.
fn on_runtime<T>(
    backend: Option<Backend>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let runtime = crate::runtime::build(backend).context("cannot start the async runtime")?;
    runtime.block_on(work)
}

async fn execute(command: Command, config: Config) -> Result<ExitCode> {
    let url = config.database_url.expose_secret();
    if !matches!(command, Command::Migrate) {
        if let Some(path) = crate::db::missing_sqlite_file(url) {
            anyhow::bail!(
                "cannot open the SQLite database {}: no such file (is database.url in {} right? `migrate` creates a new one)",
                path.display(),
                config.file
            );
        }
    }
    if matches!(command, Command::Run) {
        crate::app::App::build(config)
            .await?
            .run(crate::app::signal())
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let db = Db::connect_sized(url, config.max_connections).await?;
    let mut svc = Service::new(db, config);
    if matches!(command, Command::Cycle { .. } | Command::Replay { .. }) {
        // A person at a terminal sees a progress bar for an apply or a replay.
        svc.progress = crate::progress::Progress::terminal();
    }
    crate::metrics::install();
    let code = match command {
        Command::Migrate => {
            let applied = migrate::run(&svc.db, now()).await?;
            if applied.is_empty() {
                out!(
                    "retentiond tables are up to date (version {})",
                    migrate::latest_version()
                );
            } else {
                out!("applied migrations: {}", applied.join(", "));
            }
            ExitCode::SUCCESS
        }
        Command::Check { suggest } => {
            if suggest {
                let proposal = crate::suggest::suggest(&svc.db, &svc.config).await?;
                if proposal.is_empty() {
                    out!("# every column is classified: nothing to propose");
                }
                for line in &proposal {
                    out!("{line}");
                }
            }
            run_check(&svc).await?
        }
        Command::Run => unreachable!("built and run as an App above"),
        Command::Demo => unreachable!("handled before the configuration is loaded"),
        Command::Cycle { venue, at, dry_run } => {
            let at = at.map_or_else(now, |at| at.resolve(svc.config.schedule.timezone));
            run_cycle(&svc, venue, at, dry_run).await?
        }
        Command::Reports(cmd) => run_reports(&svc, cmd).await?,
        Command::Audit { venue, json } => run_audit(&svc, venue, json).await?,
        Command::Whatif {
            venue,
            at,
            periods,
            json,
        } => run_whatif(&svc, venue, at, periods, json).await?,
        Command::Erase {
            person,
            action,
            dry_run,
        } => {
            migrate::ensure_current(&svc.db).await?;
            let venue = configured_venue(&svc, person.venue)?;
            let (who, by) = who(person);
            let plan =
                crate::request::erase(&svc, venue, &who, &by, action, dry_run, now()).await?;
            let verb = if dry_run { "would" } else { "did" };
            out!(
                "customer {} of venue {}: {} {}{}",
                plan.customer_id,
                plan.venue_id,
                verb,
                plan.action.as_str(),
                plan.report_id
                    .map_or_else(String::new, |r| format!(" (recorded as report {r})"))
            );
            for t in &plan.tables {
                out!("  {}: {} row(s) {}", t.table, t.rows, t.what);
            }
            if dry_run {
                out!("dry run: nothing was changed");
            }
            ExitCode::SUCCESS
        }
        Command::Export { person } => {
            migrate::ensure_current(&svc.db).await?;
            let venue = configured_venue(&svc, person.venue)?;
            let (who, by) = who(person);
            let document = crate::request::export(&svc, venue, &who, &by, now()).await?;
            out!("{}", serde_json::to_string_pretty(&document)?);
            ExitCode::SUCCESS
        }
        Command::Replay {
            journal,
            dry_run,
            accept_unsigned,
        } => {
            let options = crate::replay::ReplayOptions {
                dry_run,
                accept_unsigned,
            };
            run_replay(&svc, &journal, options).await?
        }
    };
    svc.db.close().await;
    Ok(code)
}

async fn run_check(svc: &Service) -> Result<ExitCode> {
    let report = check::run(&svc.db, &svc.config).await?;
    for w in &report.warnings {
        out!("warning: {w}");
    }
    for p in &report.problems {
        out!("problem: {p}");
    }
    if report.problems.is_empty() {
        out!(
            "ok: {} venue(s), configuration matches the database",
            svc.config.venues.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "retentiond: check found {} problem(s)",
            report.problems.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// How long `cycle` retries a venue whose cycle failed for a passing reason.
const COMMAND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

async fn run_cycle(
    svc: &Service,
    venue: Option<i64>,
    at: DateTime<Utc>,
    dry_run: bool,
) -> Result<ExitCode> {
    migrate::ensure_current(&svc.db).await?;
    // No daemon lock: a venue's cycle takes its venue lock, so this works while `run` serves.
    if !dry_run {
        if let Err(e) = crate::journal::catch_up_on_start(svc).await {
            eprintln!("retentiond: {e:#}");
            let unwritable = e
                .downcast_ref::<crate::journal::JournalUnwritable>()
                .is_some();
            return Ok(ExitCode::from(if unwritable { 2 } else { 1 }));
        }
    }
    let venues: Vec<_> = match venue {
        Some(id) => vec![svc
            .config
            .venue(id)
            .with_context(|| format!("no venue {id} in {}", svc.config.file))?
            .clone()],
        None => svc.config.venues.clone(),
    };
    // The venues' cycles run as one run (SPEC 11), one venue after the other in configuration
    // order (so report ids follow it), passing failures retried briefly (an operator waits at
    // the terminal; the daemon retries for schedule.retry_for), one alert for what still failed.
    let options = RunOptions {
        dry_run,
        retry_for: svc.config.schedule.retry_for.min(COMMAND_RETRY_FOR),
        first_backoff: crate::fleet::FIRST_BACKOFF,
    };
    let results = Fleet::one_at_a_time(svc.clone())
        .run(&venues, at, options)
        .await;
    let mut failed = 0;
    let mut misconfigured = false;
    for run in &results {
        let venue = &run.venue;
        match &run.outcome {
            VenueOutcome::Done(result) => print_cycle(&venue.name, result),
            VenueOutcome::Failed(e) => {
                failed += 1;
                misconfigured |= e.downcast_ref::<check::UnclassifiedColumns>().is_some()
                    || e.downcast_ref::<crate::journal::JournalUnwritable>()
                        .is_some();
                out!("venue {} ({}): FAILED: {e:#}", venue.id, venue.name);
            }
            VenueOutcome::StillRunning | VenueOutcome::Stopped => {
                out!("venue {} ({}): not run", venue.id, venue.name)
            }
        }
    }
    if !dry_run {
        // A delivery problem is reported but never hides a venue's failure.
        match deliver_queued_mail(svc, at).await {
            Ok(line) => out!("{line}"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "mail delivery failed; the outbox keeps it");
                out!("mail: not delivered now ({e:#}); the outbox keeps it");
                if failed == 0 {
                    return Err(e);
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("retentiond: {failed} venue cycle(s) failed");
        // A configuration that does not match the database is a configuration error (exit 2).
        return Ok(ExitCode::from(if misconfigured { 2 } else { 1 }));
    }
    Ok(ExitCode::SUCCESS)
}

async fn deliver_queued_mail(svc: &Service, at: DateTime<Utc>) -> Result<String> {
    let mailer = crate::mail::Mailer::from_config(&svc.config.mail)?;
    let delivery = crate::mail::deliver_due(svc, &mailer, at).await?;
    let waiting = crate::mail::pending_count(svc).await?;
    Ok(format!(
        "mail: {} sent, {} failed (retried later), {waiting} waiting in the outbox",
        delivery.sent, delivery.failed
    ))
}

fn outcome_phrase(counts: &std::collections::BTreeMap<Outcome, u64>) -> String {
    let done: u64 = counts
        .iter()
        .filter(|(o, _)| !o.is_skip())
        .map(|(_, n)| n)
        .sum();
    let skipped: Vec<String> = counts
        .iter()
        .filter(|(o, _)| o.is_skip())
        .map(|(o, n)| format!("{n} {}", o.as_str()))
        .collect();
    let skipped_total: u64 = counts
        .iter()
        .filter(|(o, _)| o.is_skip())
        .map(|(_, n)| n)
        .sum();
    if skipped.is_empty() {
        format!("{done} processed, 0 skipped")
    } else {
        format!(
            "{done} processed, {skipped_total} skipped ({})",
            skipped.join(", ")
        )
    }
}

/// What one rule's selection decided, in a line after `prefix`.
fn print_selection(prefix: &str, selection: &Option<Selection>) {
    match selection {
        Some(Selection::Created { report_id, customers }) => out!("  {prefix}created report {report_id}: {customers} customers, pending approval"),
        Some(Selection::WouldCreate { customers }) => out!("  {prefix}would create a report of {customers} customers"),
        Some(Selection::NoCandidates) => out!("  {prefix}no customers fall under the policy"),
        Some(Selection::OpenReport { report_id, state }) => out!("  {prefix}no new report: report {report_id} is {state}"),
        Some(Selection::TooSoon { next_allowed_at, .. }) => {
            out!("  {prefix}no new report before {} (report_interval)", next_allowed_at.to_rfc3339())
        }
        Some(Selection::Brake { candidates, customers, max_share }) => out!(
            "  {prefix}BRAKE: {candidates} of {customers} customers selected (more than max_share {max_share}); no report made, check inactive_for"
        ),
        None => {}
    }
}

fn print_cycle(name: &str, r: &VenueCycle) {
    let mode = if r.dry_run {
        " [dry run: nothing changed]"
    } else {
        ""
    };
    out!(
        "venue {} ({name}) at {}: cutoff {}{mode}",
        r.venue_id,
        r.at.to_rfc3339(),
        r.cutoff.to_rfc3339()
    );
    if !r.ran {
        out!("  skipped: another instance holds this venue's lock");
        return;
    }
    for a in &r.applied {
        let state = if a.finished {
            "applied"
        } else {
            "interrupted, resumes next cycle"
        };
        out!(
            "  report {} ({}): {}: {}",
            a.report_id,
            a.action.as_str(),
            state,
            outcome_phrase(&a.counts)
        );
    }
    for id in &r.expired {
        out!("  report {id}: expired without a decision; approvers told");
    }
    for id in &r.reminded {
        out!("  report {id}: approvers reminded");
    }
    for p in &r.previews {
        out!(
            "  report {}: would process {} and skip {} on re-check",
            p.report_id,
            p.would_process,
            p.would_skip
        );
    }
    print_selection("", &r.selection);
    if r.prospects.is_some() {
        print_selection("prospects: ", &r.prospects);
    }
    if let Some(held) = r.held_back.as_ref().and_then(|h| h.in_words()) {
        out!("  {held}");
    }
}

async fn run_reports(svc: &Service, cmd: ReportsCommand) -> Result<ExitCode> {
    migrate::ensure_current(&svc.db).await?;
    match cmd {
        ReportsCommand::List { venue, state, json } => {
            let list = reports::list(&svc.db, venue, &state).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                out!(
                    "{:>6}  {:>6}  {:<10}  {:<9}  {:>9}  {:<20}  {:<20}",
                    "id",
                    "venue",
                    "state",
                    "action",
                    "customers",
                    "created",
                    "expires"
                );
                for r in &list {
                    out!(
                        "{:>6}  {:>6}  {:<10}  {:<9}  {:>9}  {:<20}  {:<20}",
                        r.id,
                        r.venue_id,
                        r.state.as_str(),
                        r.action.as_str(),
                        r.customer_count,
                        r.created_at.format("%Y-%m-%d %H:%M:%SZ"),
                        r.expires_at.format("%Y-%m-%d %H:%M:%SZ")
                    );
                }
                if list.is_empty() {
                    out!("{}", no_reports_found(svc, venue, &state));
                }
            }
        }
        ReportsCommand::Show { id, json } => {
            let report = reports::get(&svc.db, id)
                .await?
                .with_context(|| format!("no report {id}"))?;
            let counts = reports::outcome_counts(&svc.db, id).await?;
            if json {
                let outcomes: serde_json::Map<String, serde_json::Value> = counts
                    .iter()
                    .map(|(o, n)| {
                        (
                            o.map_or("unprocessed", |o| o.as_str()).to_string(),
                            (*n).into(),
                        )
                    })
                    .collect();
                let mut value = serde_json::to_value(&report)?;
                value["outcomes"] = outcomes.into();
                out!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                out!(
                    "report {}: venue {}, {} ({})",
                    report.id,
                    report.venue_id,
                    report.state,
                    report.policy
                );
                out!("  customers: {}", report.customer_count);
                out!("  cutoff:    {}", report.cutoff.to_rfc3339());
                out!("  created:   {}", report.created_at.to_rfc3339());
                out!("  expires:   {}", report.expires_at.to_rfc3339());
                if let Some(t) = report.decided_at {
                    out!("  decided:   {}", t.to_rfc3339());
                }
                if let Some(t) = report.applied_at {
                    out!("  applied:   {}", t.to_rfc3339());
                }
                if let Some(reason) = &report.state_reason {
                    out!("  reason:    {reason}");
                }
                for (o, n) in &counts {
                    out!("  {:<20} {n}", o.map_or("unprocessed", |o| o.as_str()));
                }
            }
        }
        ReportsCommand::Csv { id } => {
            let report = reports::get(&svc.db, id)
                .await?
                .with_context(|| format!("no report {id}"))?;
            reports::write_csv(&svc.db, &svc.config, &report, std::io::stdout().lock()).await?;
        }
        ReportsCommand::Cancel { id, reason } => {
            if reason.trim().is_empty() {
                anyhow::bail!("--reason must say why the report is cancelled");
            }
            operator_decides(svc, id, "", Decision::Cancel { reason: &reason }).await?;
            out!("report {id} is cancelled");
        }
        ReportsCommand::Keep {
            id,
            customers,
            by,
            reason,
        } => {
            let ids = crate::review::parse_ids(&customers)
                .map_err(|e| anyhow::anyhow!("--customers: {e}"))?;
            let reason = reason.as_deref();
            let decided = operator_decides(svc, id, &by, Decision::Keep { ids: &ids, reason });
            if let Decided::Kept(change) = decided.await? {
                let report = reports::get(&svc.db, id)
                    .await?
                    .with_context(|| format!("no report {id}"))?;
                out!(
                    "report {id}: {} customer(s) kept out ({} in all); {} left to approve",
                    change.changed,
                    change.kept,
                    report.to_approve()
                );
                if change.withdrawn > 0 {
                    out!(
                        "  {} earlier approval(s) no longer count: the kept list changed",
                        change.withdrawn
                    );
                }
            }
        }
        ReportsCommand::Reject { id, by, reason } => {
            let reason = reason.as_deref();
            operator_decides(svc, id, &by, Decision::Reject { reason }).await?;
            out!("report {id} is rejected; nothing will be done to its customers");
        }
        ReportsCommand::Approve { id, by } => {
            operator_decides(svc, id, &by, Decision::Approve { confirm: None }).await?;
            out!("report {id} is approved; the venue's next cycle applies it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An operator's decision on report `id`, on the venue's behalf; `by` names the operator
/// (required except for a cancel). A refusal is an error naming the report.
async fn operator_decides(
    svc: &Service,
    id: i64,
    by: &str,
    decision: Decision<'_>,
) -> Result<Decided> {
    if by.trim().is_empty() && !matches!(decision, Decision::Cancel { .. }) {
        anyhow::bail!("--by must name who decided on the venue's behalf");
    }
    match decision::decide(&svc.db, id, Actor::Operator(by), decision, now()).await? {
        Ok(decided) => Ok(decided),
        Err(e) => anyhow::bail!("report {id}: {e}"),
    }
}

async fn run_replay(
    svc: &Service,
    journal: &std::path::Path,
    options: crate::replay::ReplayOptions,
) -> Result<ExitCode> {
    migrate::ensure_current(&svc.db).await?;
    let dry_run = options.dry_run;
    let summary = match crate::replay::run(svc, journal, options, now()).await {
        Ok(summary) => summary,
        Err(e) if e.downcast_ref::<check::UnclassifiedColumns>().is_some() => {
            eprintln!("retentiond: {e:#}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e),
    };
    if summary.unsigned_accepted > 0 {
        eprintln!(
            "retentiond: warning: {}: {} unsigned lines (written before journal lines were signed) accepted with --accept-unsigned; their origin was not verified",
            journal.display(),
            summary.unsigned_accepted
        );
    }
    let verb = if dry_run {
        "would erase again"
    } else {
        "erased again"
    };
    out!(
        "replay of {}: {} lines, {} customers: {verb} {} ({} deleted, {} anonymised); skipped {} already gone, {} already anonymised{}",
        journal.display(),
        summary.lines,
        summary.customers,
        summary.deleted + summary.anonymised,
        summary.deleted,
        summary.anonymised,
        summary.already_gone,
        summary.already_erased,
        if dry_run { " [dry run: nothing changed]" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// The customer a request names, and who asks.
fn who(person: PersonArgs) -> (crate::request::Who, String) {
    let who = match (person.customer, person.email) {
        (Some(id), _) => crate::request::Who::Id(id),
        (None, Some(address)) => crate::request::Who::Email(address),
        (None, None) => unreachable!("clap requires --customer or --email"),
    };
    (who, person.by)
}

/// The venue `id` of the configuration, or an error naming the configured ones.
fn configured_venue(svc: &Service, id: i64) -> Result<&crate::config::VenueConfig> {
    svc.config.venue(id).with_context(|| {
        format!(
            "venue {id} is not in {}; configured venues: {}",
            svc.config.file,
            svc.config
                .venues
                .iter()
                .map(|v| v.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

async fn run_whatif(
    svc: &Service,
    venue_id: i64,
    at: Option<At>,
    periods: Vec<crate::policy::CalendarPeriod>,
    json: bool,
) -> Result<ExitCode> {
    let venue = configured_venue(svc, venue_id)?;
    let at = at.map_or_else(now, |at| at.resolve(venue.timezone));
    let periods = if periods.is_empty() {
        crate::whatif::DEFAULT_PERIODS
            .iter()
            .map(|p| p.parse().expect("the default periods parse"))
            .collect()
    } else {
        periods
    };
    migrate::ensure_current(&svc.db).await?;
    let figures = crate::whatif::whatif(svc, venue, at, &periods).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        for line in crate::whatif::in_lines(&figures, &venue.name) {
            out!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_audit(svc: &Service, venue: Option<i64>, json: bool) -> Result<ExitCode> {
    migrate::ensure_current(&svc.db).await?;
    let events = audit::events(&svc.db, venue).await?;
    let customers = audit::customer_outcomes(&svc.db, venue).await?;
    let replayed = crate::replay::replayed(&svc.db, venue).await?;
    if json {
        let replayed: Vec<_> = replayed
            .iter()
            .map(|(report_id, customer_id, at)| serde_json::json!({ "report_id": report_id, "customer_id": customer_id, "outcome": "replayed", "at": at }))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "events": events, "customers": customers, "replayed": replayed })
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for e in &events {
        let report = e.report_id.map_or("-".to_string(), |r| r.to_string());
        out!(
            "{}  venue {}  report {report}  {}  by {}: {}",
            e.at.to_rfc3339(),
            e.venue_id,
            e.event,
            e.actor,
            e.detail
        );
    }
    for c in &customers {
        out!(
            "{}  report {}  customer {}  {}",
            c.at.to_rfc3339(),
            c.report_id,
            c.customer_id,
            c.outcome
        );
    }
    for (report_id, customer_id, at) in &replayed {
        out!(
            "{}  report {report_id}  customer {customer_id}  replayed",
            at.to_rfc3339()
        );
    }
    if events.is_empty() && customers.is_empty() && replayed.is_empty() {
        match venue {
            None => out!("the ledger is empty: no report has been made yet"),
            Some(id) => out!(
                "the ledger has nothing of venue {id}{}: no report has been made for it yet",
                unless_configured(svc, id)
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `reports list` says when it lists nothing, naming its filters: an empty table alone
/// read like a fault, and a mistyped venue id like a venue without reports.
fn no_reports_found(svc: &Service, venue: Option<i64>, states: &[ReportState]) -> String {
    let mut line = "no reports".to_string();
    if let Some(id) = venue {
        line.push_str(&format!(" of venue {id}{}", unless_configured(svc, id)));
    }
    if !states.is_empty() {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        line.push_str(&format!(" in state {}", names.join(" or ")));
    }
    line
}

/// " (not a configured venue)" for a venue id the configuration does not hold (its reports
/// stay listed after it was removed), else nothing.
fn unless_configured(svc: &Service, venue_id: i64) -> &'static str {
    if svc.config.venues.iter().any(|v| v.id == venue_id) {
        ""
    } else {
        " (not a configured venue)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_and_flag_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{path} {} has no help line",
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no description");
                walk(sub, &path);
            }
        }
        walk(&Cli::command(), "retentiond");
    }

    #[test]
    fn at_takes_a_local_date_or_an_instant() {
        let london: chrono_tz::Tz = "Europe/London".parse().unwrap();
        let summer = parse_at("2027-07-01").unwrap().resolve(london);
        assert_eq!(summer.to_rfc3339(), "2027-06-30T23:00:00+00:00");
        let instant = parse_at("2027-01-01T02:00:00Z").unwrap().resolve(london);
        assert_eq!(instant.to_rfc3339(), "2027-01-01T02:00:00+00:00");
        let err = parse_at("yesterday").unwrap_err();
        assert!(
            err.contains("2027-01-01") && err.contains("\"yesterday\""),
            "{err}"
        );
    }
}
