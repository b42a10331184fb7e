//! The printed table: each figure with its goal, misses marked, and the growth between sizes.

use super::*;

/// The printed measures: JSON key, label, goal (empty when there is none).
pub(crate) const ROWS: &[(&str, &str, &str)] = &[
    ("generate_s", "data generation (s)", ""),
    ("selection_s", "selection, retentiond (s)", ""),
    ("selection_baseline_s", "selection, bare NOT EXISTS (s)", ""),
    ("selection_ratio", "selection ratio", "<= 1.2"),
    (
        "activity_selection_s",
        "selection with 2 activity tables and 2 holds (s)",
        "",
    ),
    (
        "activity_selection_baseline_s",
        "the same by hand, NOT EXISTS (s)",
        "",
    ),
    (
        "activity_selection_ratio",
        "selection ratio, activity and holds",
        "<= 1.2",
    ),
    (
        "selection_all_checks_s",
        "selection, all exclusion tables consulted (s)",
        "",
    ),
    (
        "selection_all_checks_baseline_s",
        "bare NOT EXISTS, the same exclusions written by hand (s)",
        "",
    ),
    (
        "selection_all_checks_ratio",
        "selection ratio, all exclusion tables consulted",
        "<= 1.2",
    ),
    (
        "exclusion_checks_cost_ratio",
        "bare with exclusions / bare without (the exclusions' own cost)",
        "",
    ),
    (
        "dry_run_s",
        "cycle --venue 1 --dry-run, median of 5 (s)",
        "",
    ),
    (
        "dry_run_baseline_s",
        "bare count on a fresh connection (s)",
        "",
    ),
    ("dry_run_ratio", "dry run ratio", "<= 1.2"),
    (
        "dry_run_peak_rss_mb",
        "dry run peak RSS, file map included (MB)",
        "",
    ),
    (
        "dry_run_peak_anon_mb",
        "dry run peak anonymous memory (MB)",
        "",
    ),
    (
        "selection_plans_use_orders_index",
        "both plans use the orders index (1 = yes)",
        "",
    ),
    ("report_customers", "largest report (customers)", ""),
    ("report_rows_per_s", "report creation (rows/s)", ""),
    (
        "first_cycle_s",
        "first cycle, venues 1 and 2 into reports (s)",
        "",
    ),
    ("csv_rows_per_s", "CSV export (rows/s)", ""),
    ("csv_rows_small", "CSV rows, small report", ""),
    (
        "csv_peak_rss_mb_small",
        "server peak RSS after small CSV (MB)",
        "",
    ),
    (
        "csv_peak_rss_mb",
        "server peak RSS after largest CSV (MB)",
        "< 100, flat",
    ),
    ("page_requests", "report page requests", ""),
    ("page_p50_ms", "report page p50 (ms)", ""),
    ("page_p99_ms", "report page p99 (ms)", "< 50"),
    ("page_errors", "report page errors", "0"),
    (
        "page_search_p50_ms",
        "page searching a surname, p50 (ms)",
        "",
    ),
    (
        "page_search_p99_ms",
        "page searching a surname, p99 (ms)",
        "< 50",
    ),
    (
        "page_search_part_p50_ms",
        "page searching part of a surname, p50 (ms)",
        "",
    ),
    (
        "page_search_part_p99_ms",
        "page searching part of a surname, p99 (ms)",
        "< 50",
    ),
    (
        "page_search_id_p50_ms",
        "page searching an id, p50 (ms)",
        "",
    ),
    (
        "page_search_id_p99_ms",
        "page searching an id, p99 (ms)",
        "< 50",
    ),
    (
        "page_requests_per_s",
        "report page throughput (requests/s)",
        "",
    ),
    (
        "page_cpu_ms_per_request_server",
        "CPU per page: server (ms)",
        "",
    ),
    (
        "page_cpu_ms_per_request_postgres",
        "CPU per page: PostgreSQL backends (ms)",
        "",
    ),
    (
        "page_cpu_ms_per_request_postgres_background",
        "CPU per page: PostgreSQL background (ms)",
        "",
    ),
    (
        "page_cpu_ms_per_request_client",
        "CPU per page: load generator (ms)",
        "",
    ),
    ("anonymise_apply_s", "anonymise apply (s)", ""),
    ("anonymise_baseline_s", "anonymise, set-based (s)", ""),
    ("anonymise_rows_per_s", "anonymise apply (rows/s)", ""),
    (
        "anonymise_baseline_rows_per_s",
        "anonymise, one UPDATE (rows/s)",
        "",
    ),
    ("anonymise_ratio", "anonymise ratio", ">= 0.8"),
    (
        "anonymise_longest_tx_ms",
        "anonymise longest transaction (ms)",
        "<= 250",
    ),
    (
        "anonymise_batches_given_up",
        "anonymise batches stopped and retried",
        "",
    ),
    ("delete_report_customers", "delete report (customers)", ""),
    (
        "box_office_writes",
        "box-office orders during the delete",
        "",
    ),
    ("box_office_write_p50_ms", "box-office order p50 (ms)", ""),
    ("box_office_write_p99_ms", "box-office order p99 (ms)", ""),
    ("box_office_write_max_ms", "box-office order max (ms)", ""),
    ("delete_apply_s", "delete apply (s)", ""),
    ("delete_baseline_s", "delete, set-based (s)", ""),
    ("delete_rows_per_s", "delete apply (rows/s)", ""),
    (
        "delete_baseline_rows_per_s",
        "delete, set-based (rows/s)",
        "",
    ),
    ("delete_ratio", "delete ratio", ">= 0.7"),
    (
        "delete_longest_tx_ms",
        "delete longest transaction (ms)",
        "<= 250",
    ),
    (
        "delete_batches_given_up",
        "delete batches stopped and retried",
        "",
    ),
];

/// Whether `value` meets `goal` ("<= 1.2", ">= 0.8", "< 50", "< 100, flat", "0"); `None`
/// when there is no goal or no value.
pub(crate) fn meets(goal: &str, value: f64) -> Option<bool> {
    let goal = goal.split(',').next()?.trim();
    if goal.is_empty() || value.is_nan() {
        return None;
    }
    let (op, number) = goal.split_once(' ').map_or(("=", goal), |(op, n)| (op, n));
    let limit: f64 = number.parse().ok()?;
    Some(match op {
        "<=" => value <= limit,
        ">=" => value >= limit,
        "<" => value < limit,
        ">" => value > limit,
        _ => value == limit,
    })
}

/// The keys of `figures` whose value misses its goal.
pub(crate) fn missed(figures: &Value) -> Vec<&'static str> {
    ROWS.iter()
        .filter(|(key, _, goal)| {
            let value = figures
                .get(*key)
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN);
            meets(goal, value) == Some(false)
        })
        .map(|(key, _, _)| *key)
        .collect()
}

/// The key of a run's figures: the backend, and its size when several sizes run.
pub(crate) fn result_key(backend: Backend, customers: u64, options: &Options) -> String {
    let name = format!("{backend:?}").to_lowercase();
    if options.sizes.len() > 1 {
        format!("{name}@{customers}")
    } else {
        name
    }
}

/// How each step grows from the first size to the last, retentiond's time beside the bare SQL's
/// for the same work: (label, retentiond's key, the baseline's key). A step grows as it should
/// when its time grows no more than 15% faster than its baseline's (the run-to-run noise of
/// this machine), or, without a baseline, than the data. Memory that is not a mapped file is
/// held to flat (at most 25% more).
pub(crate) const GROWTH: &[(&str, &str, Option<&str>)] = &[
    ("selection", "selection_s", Some("selection_baseline_s")),
    (
        "selection, all exclusion tables",
        "selection_all_checks_s",
        Some("selection_all_checks_baseline_s"),
    ),
    (
        "cycle --venue 1 --dry-run",
        "dry_run_s",
        Some("dry_run_baseline_s"),
    ),
    (
        "first cycle, two venues into reports",
        "first_cycle_s",
        None,
    ),
    (
        "anonymise apply",
        "anonymise_apply_s",
        Some("anonymise_baseline_s"),
    ),
    ("delete apply", "delete_apply_s", Some("delete_baseline_s")),
    (
        "dry run peak anonymous memory",
        "dry_run_peak_anon_mb",
        None,
    ),
    (
        "dry run peak RSS, file map included",
        "dry_run_peak_rss_mb",
        None,
    ),
];

/// Prints and returns the growth of every backend run at more than one size.
pub(crate) fn growth(results: &BTreeMap<String, Value>, options: &Options) -> Value {
    let (Some(&small), Some(&large)) = (options.sizes.first(), options.sizes.last()) else {
        return json!({});
    };
    if small == large {
        return json!({});
    }
    let data = large as f64 / small as f64;
    let mut out = serde_json::Map::new();
    for backend in &options.backends {
        let (Some(a), Some(b)) = (
            results.get(&result_key(*backend, small, options)),
            results.get(&result_key(*backend, large, options)),
        ) else {
            continue;
        };
        println!("\n{backend:?}: growth from {small} to {large} customers (x{data:.1} the data)");
        println!(
            "{:<40}{:>12}{:>12}{:>10}{:>12}{:>10}  goal",
            "step", "small", "large", "growth", "bare growth", ""
        );
        let figure = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let mut rows = Vec::new();
        let mut misses = Vec::new();
        for (label, key, bare) in GROWTH {
            let grew = figure(b, key) / figure(a, key);
            let bare_grew = bare.map(|k| figure(b, k) / figure(a, k));
            let (limit, goal) = match (bare_grew, *key == "dry_run_peak_anon_mb") {
                (Some(g), _) => (g * 1.15, "<= 1.15 x bare growth".to_string()),
                (None, true) => (1.25, "flat (<= x1.25)".to_string()),
                (None, false) if *key == "dry_run_peak_rss_mb" => (f64::INFINITY, String::new()),
                (None, false) => (data * 1.15, format!("<= 1.15 x data growth (x{data:.1})")),
            };
            let missed = grew.is_finite() && grew > limit;
            if missed {
                misses.push(*key);
            }
            println!(
                "{label:<40}{:>12.2}{:>12.2}{:>10}{:>12}{:>10}  {goal}",
                figure(a, key),
                figure(b, key),
                format!("x{grew:.2}"),
                bare_grew.map_or(String::new(), |g| format!("x{g:.2}")),
                if missed { "MISSED" } else { "" }
            );
            rows.push(json!({"step": label, "key": key, "small": figure(a, key), "large": figure(b, key), "growth": grew, "bare_growth": bare_grew, "missed": missed}));
        }
        out.insert(
            format!("{backend:?}").to_lowercase(),
            json!({"from": small, "to": large, "steps": rows, "missed": misses}),
        );
    }
    Value::Object(out)
}

pub(crate) fn print_table(results: &BTreeMap<String, Value>, options: &Options) {
    let sizes: Vec<String> = options.sizes.iter().map(u64::to_string).collect();
    println!(
        "\nretentiond benchmark: {} customers, 10 orders a customer on average, 5 venues{}",
        sizes.join(" and "),
        if options.smoke { " (smoke size)" } else { "" }
    );
    let rows = ROWS;
    let backends: Vec<&String> = results.keys().collect();
    print!("{:<42}", "measure");
    for b in &backends {
        print!("{b:>16}");
    }
    println!("  goal");
    for (key, label, goal) in rows {
        print!("{label:<42}");
        for b in &backends {
            let v = results[*b]
                .get(*key)
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN);
            let shown = if v.fract() == 0.0 && v.abs() < 1e12 {
                format!("{}", v as i64)
            } else {
                format!("{v:.2}")
            };
            // A figure that misses its goal is marked where it is printed.
            let mark = if meets(goal, v) == Some(false) {
                " MISSED"
            } else {
                ""
            };
            print!("{:>16}", format!("{shown}{mark}"));
        }
        println!("  {goal}");
    }
}
