//! What the benchmark measures with: medians and percentiles, a child process's memory and
//! CPU, the web pages served from a process of their own, page loads and CSV downloads.

use super::*;

pub(crate) fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

pub(crate) fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc (Linux).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by the live `postgres` processes on this machine: those serving a
/// TCP connection (backends), and the rest (checkpointer, WAL writer, autovacuum).
pub(crate) fn postgres_cpu_seconds() -> (f64, f64) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (0.0, 0.0);
    };
    let (mut backends, mut background) = (0.0, 0.0);
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "postgres" {
            continue;
        }
        let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if title.contains("127.0.0.1(") {
            backends += cpu_seconds(pid);
        } else {
            background += cpu_seconds(pid);
        }
    }
    (backends, background)
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) async fn start(config_path: &Path, port: u16) -> Server {
        let child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(config_path)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/healthz"))
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed().as_secs() < 30,
                "the page server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

pub(crate) async fn link_for(svc: &Service, report_id: i64) -> String {
    let report = reports::get(&svc.db, report_id).await.unwrap().unwrap();
    let mut tx = svc.db.begin().await.unwrap();
    let approver = svc.config.venue(report.venue_id).unwrap().approvers[0].clone();
    let token = approval::mint(&mut tx, &report, &approver, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    token
}

/// Downloads a report's CSV through the page server; returns (rows, seconds).
pub(crate) async fn download_csv(server: &Server, token: &str) -> (u64, f64) {
    let started = Instant::now();
    let mut response = reqwest::get(format!("{}/r/{token}/report.csv", server.base))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut newlines = 0_u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    (newlines.saturating_sub(1), started.elapsed().as_secs_f64())
}

/// `clients` concurrent approvers paging through the report; latencies in milliseconds.
pub(crate) async fn page_load(
    server: &Server,
    token: &str,
    query: &str,
    clients: usize,
    requests: usize,
) -> (Vec<f64>, usize) {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, base, token, query) = (
            http.clone(),
            server.base.clone(),
            token.to_string(),
            query.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0);
            let mut url = format!("{base}/r/{token}{query}");
            // Start clients at different depths so the load covers the whole report.
            for i in 0..requests + client % 7 {
                let started = Instant::now();
                let response = http.get(&url).send().await;
                let body = match response {
                    Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                    _ => {
                        errors += 1;
                        String::new()
                    }
                };
                if i >= client % 7 {
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                url = match body.split("href=\"").find(|h| h.contains("?after=")) {
                    Some(href) => format!(
                        "{base}{}",
                        href.split('"').next().unwrap().replace("&amp;", "&")
                    ),
                    None => format!("{base}/r/{token}{query}"),
                };
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (all, errors)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
