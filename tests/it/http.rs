//! The web server as `retentiond run` starts it (through the binary): the per-client rate limit
//! on report links, clients behind trusted proxies, forged `X-Forwarded-For`, and a
//! `public_url` with a path prefix.

use crate::common::{delete_venue, TestDb};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{free_port, wait_healthy};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(config: &Path, port: u16) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    Daemon(child)
}

fn http(port: u16, prefix: &str, burst: u32, trusted: &str) -> String {
    format!(
        "\n[http]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}{prefix}\"\n\
         link_requests_burst = {burst}\nlink_requests_per_second = 1\ntrusted_proxies = [{trusted}]\n"
    )
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Status codes of `n` requests for unknown report links, each with `forwarded` as
/// `X-Forwarded-For` when given.
async fn statuses(
    client: &reqwest::Client,
    port: u16,
    n: usize,
    forwarded: impl Fn(usize) -> Option<String>,
) -> Vec<u16> {
    let mut codes = Vec::new();
    for i in 0..n {
        let mut request = client.get(format!("http://127.0.0.1:{port}/r/{}", "ab".repeat(32)));
        if let Some(f) = forwarded(i) {
            request = request.header("x-forwarded-for", f);
        }
        codes.push(request.send().await.unwrap().status().as_u16());
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_limits_a_flooding_client_while_healthz_stays_up() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let port = free_port();
    let config = db.write_config(&(delete_venue(2, "3 years", "") + &http(port, "", 5, "")));
    let _daemon = run(&config, port).await;
    let client = reqwest::Client::new();

    let codes = statuses(&client, port, 20, |_| None).await;
    let health = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();

    assert_eq!(&codes[..5], &[404; 5], "the burst is served: {codes:?}");
    assert!(codes[5..].iter().all(|c| *c == 429), "then 429: {codes:?}");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tells_clients_behind_a_trusted_proxy_apart_and_ignores_forged_headers() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let port = free_port();
    let config =
        db.write_config(&(delete_venue(2, "3 years", "") + &http(port, "", 5, "\"127.0.0.1/32\"")));
    let _daemon = run(&config, port).await;
    let proxy = client_from("127.0.0.1");
    let stranger = client_from("127.0.0.2");

    let first = statuses(&proxy, port, 8, |_| Some("203.0.113.1".into())).await;
    let second = statuses(&proxy, port, 5, |_| {
        Some("198.51.100.7, 203.0.113.2".into())
    })
    .await;
    let forged = statuses(&stranger, port, 8, |i| {
        Some(format!("203.0.113.{}", 100 + i))
    })
    .await;

    assert_eq!(&first[..5], &[404; 5], "{first:?}");
    assert!(
        first[5..].iter().all(|c| *c == 429),
        "the first client is limited: {first:?}"
    );
    assert_eq!(
        second,
        vec![404; 5],
        "the second client behind the proxy has its own limit"
    );
    assert_eq!(&forged[..5], &[404; 5], "{forged:?}");
    assert!(
        forged[5..].iter().all(|c| *c == 429),
        "a forged header from an untrusted peer changes nothing: {forged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_with_a_path_prefix_works_for_links_forms_and_stylesheet() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    db.customer(2, "2019-01-01 00:00:00").await;
    let port = free_port();
    let outbox = db.dir.path().join("outbox");
    let config = db.write_config_with_file_mail(
        &(delete_venue(2, "3 years", "") + &http(port, "/retention", 60, "")),
    );
    let cycle = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .args(["cycle"])
        .output()
        .unwrap();
    assert!(
        cycle.status.success(),
        "{}",
        String::from_utf8_lossy(&cycle.stderr)
    );
    let link = retentiond::demo::links_in_outbox(&outbox)
        .unwrap()
        .remove(0);
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{port}/retention/r/")),
        "{link}"
    );
    let _daemon = run(&config, port).await;
    let client = reqwest::Client::new();

    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    let token = link.rsplit('/').next().unwrap();
    assert!(
        html.contains(&format!("action=\"/retention/r/{token}/approve\"")),
        "{html}"
    );
    assert!(html.contains("href=\"/retention/style.css\""), "{html}");
    let css = client
        .get(format!("http://127.0.0.1:{port}/retention/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status().as_u16(), 200);
    let approved = client
        .post(format!(
            "http://127.0.0.1:{port}/retention/r/{token}/approve"
        ))
        .form(&[("confirm", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status().as_u16(), 200);
    assert!(approved.text().await.unwrap().contains("approved"));
    let missing = client
        .get(format!(
            "http://127.0.0.1:{port}/retention/r/{}",
            "ab".repeat(32)
        ))
        .send()
        .await
        .unwrap();
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("href=\"/retention/style.css\""),
        "error pages follow the prefix too"
    );
}

/// Opens `n` connections that each send a request line and then one header line a second, as
/// a slow client holding a server would.
async fn slow_clients(port: u16, n: usize) -> Vec<tokio::task::JoinHandle<std::time::Duration>> {
    (0..n)
        .map(|_| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let started = std::time::Instant::now();
                let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                else {
                    return started.elapsed();
                };
                let _ = stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .await;
                let mut buf = [0u8; 256];
                for i in 0..60 {
                    // A closed connection reads 0 bytes (or an error, or the server's answer).
                    tokio::select! {
                        read = stream.read(&mut buf) => {
                            let _ = read;
                            return started.elapsed();
                        }
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                    if stream
                        .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return started.elapsed();
                    }
                }
                started.elapsed()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_cannot_hold_the_server() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let port = free_port();
    let config = db.write_config(
        &(delete_venue(1, "3 years", "") + &http(port, "", 60, "") + "max_connections = 40\n"),
    );
    let daemon = run(&config, port).await;

    // 60 slow clients against a limit of 40 connections: 20 are closed at once, the others
    // when their headers have not arrived within the header timeout.
    let clients = slow_clients(port, 60).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut held = Vec::new();
    for client in clients {
        held.push(client.await.unwrap());
    }
    let answered_after = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap()
        .status();

    held.sort();
    let refused = held.iter().filter(|d| d.as_secs_f64() < 1.0).count();
    assert!(
        refused >= 20,
        "the connection limit closed the extra ones at once: {held:?}"
    );
    let kept_open = held.iter().filter(|d| d.as_secs() >= 3).count();
    assert!(
        kept_open >= 30,
        "the connections within the limit were served until their time ran out: {held:?}"
    );
    assert!(
        held.last().unwrap().as_secs() < 10,
        "every slow client was cut off within the header timeout: {held:?}"
    );
    assert_eq!(answered_after, 200, "the server serves again");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_half_sent_request() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let port = free_port();
    let config = db.write_config(&(delete_venue(1, "3 years", "") + &http(port, "", 60, "")));
    let mut daemon = run(&config, port).await;
    use tokio::io::AsyncWriteExt;
    let mut half = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    half.write_all(
        b"POST /r/abc/approve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nconfirm=",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    let status =
        crate::common::sigterm_and_wait(&mut daemon.0, std::time::Duration::from_secs(20)).await;

    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed().as_secs() < 12,
        "stopped within the drain, not held by the client: {:?}",
        started.elapsed()
    );
    drop(half);
}
