//! The performance benchmark (issue 5): the reference schema at scale on SQLite, PostgreSQL and
//! MySQL/MariaDB, retentiond's work timed against plain set-based SQL doing the same in the same
//! run.
//!
//! `cargo bench --bench retention` runs the full size (1,000,000 customers, 10,000,000 orders,
//! 5 venues); `-- --customers N` changes it, `-- --backend sqlite|postgres|mysql` picks one, and
//! the figures go to stdout and `target/bench/results.json`. Under `cargo test` it runs a small
//! smoke size only. PostgreSQL needs RETENTIOND_TEST_POSTGRES_URL, MySQL
//! RETENTIOND_TEST_MYSQL_URL.

use chrono::{DateTime, Duration, TimeZone, Utc};
use retentiond::config::{self, Config};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::{scratch, Backend, Db, Query};
use retentiond::decision::{decide, Actor, Decision};
use retentiond::policy::{self, ReportState};
use retentiond::selection::{self, Scope};
use retentiond::{approval, reports, Service};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

#[path = "retention/activity.rs"]
mod activity;
#[path = "retention/baselines.rs"]
mod baselines;
#[path = "retention/fleet.rs"]
mod fleet;
#[path = "retention/generate.rs"]
mod generate;
#[path = "retention/measure.rs"]
mod measure;
#[path = "retention/report.rs"]
mod report;
#[path = "retention/single.rs"]
mod single;

use baselines::*;
use generate::*;
use measure::*;
use report::*;
use single::*;

/// The shape of the generated data.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    /// Venue 1 holds half the customers, venues 2 to 5 an eighth each; every customer has 10
    /// orders; a tenth have a note. Half of venue 1 and a quarter of the others are idle.
    Skewed,
    /// Five venues of equal size; 0 to 20 orders a customer (10 on average); no notes. A
    /// quarter of each venue is idle, and so is every customer who never ordered.
    Even,
    /// A vendor's fleet (`fleet.rs`): many venues of `per_venue` customers, 3 orders each, a
    /// note for one in ten; a quarter of each venue idle.
    Fleet { per_venue: u64 },
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Skewed => "skewed",
            Shape::Even => "even",
            Shape::Fleet { .. } => "fleet",
        }
    }
}

struct Options {
    /// The sizes to run, in customers (`--customers 1000000,3000000`); with more than one, the
    /// benchmark prints how each step grows from the first size to the last.
    sizes: Vec<u64>,
    shape: Shape,
    /// The fleet sizes, in venues (`--venues 250,1000`), for `--shape fleet` (whose customers a
    /// venue `--per-venue` sets: 300 by default).
    venues: Vec<u64>,
    backends: Vec<Backend>,
    clients: usize,
    requests_per_client: usize,
    json: PathBuf,
    smoke: bool,
    /// `--generate-only`: load the data, write the configuration, keep both and stop.
    generate_only: bool,
    /// `--selection-only`: the selection figures (with activity and holds too; a fleet: its
    /// count and dry run), then stop.
    selection_only: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let smoke = !args.iter().any(|a| a == "--bench");
    let sizes = value("--customers")
        .map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim().parse().unwrap_or_else(|_| {
                        panic!("--customers {v}: expected numbers separated by commas")
                    })
                })
                .collect()
        })
        .unwrap_or_else(|| vec![if smoke { 2_000 } else { 1_000_000 }]);
    let backends = match value("--backend").as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        Some("mysql") => vec![Backend::Mysql],
        _ => vec![Backend::Sqlite, Backend::Postgres, Backend::Mysql],
    };
    let json = value("--json")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/results.json"));
    let shape = match value("--shape").as_deref() {
        None | Some("skewed") => Shape::Skewed,
        Some("even") => Shape::Even,
        Some("fleet") => Shape::Fleet {
            per_venue: value("--per-venue")
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("--per-venue: a number of customers")
                })
                .unwrap_or(if smoke {
                    fleet::SMOKE_PER_VENUE
                } else {
                    fleet::PER_VENUE
                }),
        },
        Some(other) => panic!("--shape {other}: expected skewed, even or fleet"),
    };
    let venues = value("--venues")
        .map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("--venues: numbers separated by commas")
                })
                .collect()
        })
        .unwrap_or_else(|| if smoke { vec![10, 40] } else { vec![250, 1000] });
    Options {
        sizes,
        shape,
        venues,
        backends,
        clients: if smoke { 5 } else { 50 },
        requests_per_client: if smoke { 10 } else { 60 },
        json,
        smoke,
        generate_only: args.iter().any(|a| a == "--generate-only"),
        selection_only: args.iter().any(|a| a == "--selection-only"),
    }
}

/// The cycle clock of the benchmark: a fixed day, so the data and the cutoff are reproducible.
fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        return serve_child(Path::new(&args[i + 1]), &args[i + 2]);
    }
    let options = options();
    if options.generate_only {
        // Kept for inspection and for commands run by hand against it.
        std::env::set_var("RETENTIOND_BENCH_KEEP", "1");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        retentiond::logging::init(retentiond::config::LogFormat::Text);
    }
    let fleet_shape = matches!(options.shape, Shape::Fleet { .. });
    if fleet_shape || options.smoke {
        run_fleets(&options);
        if fleet_shape {
            return;
        }
    }
    let mut results = BTreeMap::new();
    for backend in &options.backends {
        if let Some(variable) = scratch::server_variable(*backend) {
            if std::env::var(variable).is_err() {
                // In CI a backend that cannot be reached is a failure, never a silent skip.
                assert!(std::env::var_os("CI").is_none(), "CI must set {variable}");
                eprintln!("{variable} is not set: {} not benchmarked", backend.name());
                continue;
            }
        }
        // The runtime the binary runs its commands on for this backend.
        let rt = retentiond::runtime::build(Some(*backend)).unwrap();
        for &customers in &options.sizes {
            let mut figures = rt.block_on(run_backend(*backend, &options, customers));
            let misses = missed(&figures);
            figures["missed"] = json!(misses);
            eprintln!("{backend:?} figures at {customers}: {figures}");
            results.insert(result_key(*backend, customers, &options), figures);
        }
    }
    if options.generate_only {
        return;
    }
    print_table(&results, &options);
    let growth = growth(&results, &options);
    std::fs::create_dir_all(options.json.parent().unwrap()).unwrap();
    let document = json!({"customers": options.sizes, "orders_per_customer": 10, "shape": options.shape.name(), "smoke": options.smoke, "results": results, "growth": growth});
    std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&document).unwrap(),
    )
    .unwrap();
    println!("figures written to {}", options.json.display());
}

/// The fleet shape on every backend and fleet size; under `cargo test`, at the smoke size.
fn run_fleets(options: &Options) {
    let mut document = serde_json::Map::new();
    for backend in &options.backends {
        if let Some(variable) = scratch::server_variable(*backend) {
            if std::env::var(variable).is_err() {
                assert!(std::env::var_os("CI").is_none(), "CI must set {variable}");
                continue;
            }
        }
        let rt = retentiond::runtime::build(Some(*backend)).unwrap();
        let mut by_size = Vec::new();
        for &venues in &options.venues {
            let mut figures = rt.block_on(fleet::run_fleet(*backend, options, venues));
            figures["missed"] = json!(fleet::fleet_missed(&figures));
            eprintln!("{backend:?} fleet figures at {venues} venues: {figures}");
            by_size.push((venues, figures));
        }
        fleet::print_fleet(*backend, &by_size);
        let name = format!("{backend:?}").to_lowercase();
        for (venues, figures) in by_size {
            document.insert(format!("{name}-{venues}-venues"), figures);
        }
    }
    let path = options.json.with_file_name("fleet-results.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let document = json!({"shape": "fleet", "customers_per_venue": fleet::per_venue(options), "smoke": options.smoke, "results": document});
    std::fs::write(&path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    println!("fleet figures written to {}", path.display());
}

/// The web pages of a benchmark database in a process of their own, so that its peak memory
/// can be read from /proc; it serves until its standard input closes.
fn serve_child(config_path: &Path, port: &str) {
    let mut config = config::load(config_path).unwrap();
    let backend = Backend::of_url(config.database_url.expose_secret());
    let rt = retentiond::runtime::build(backend).unwrap();
    rt.block_on(async {
        config.http.bind = format!("127.0.0.1:{port}");
        let app = retentiond::app::App::build(config).await.unwrap();
        let stop = async {
            let _ = tokio::task::spawn_blocking(|| {
                std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1])
            })
            .await;
        };
        app.serve_pages(stop).await.unwrap();
    });
}
