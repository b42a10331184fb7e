//! The README's "Try it on your own database" walkthrough, step by step through the binary: the
//! reference schema with its sample customers, the example configuration, mail as files. Every
//! step must succeed and lead somewhere (no "no report 1" dead end).

use retentiond::db::Db;
use std::path::Path;
use std::process::{Command, Output};

fn step(config: &Path, outbox: &Path, args: &[&str]) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RETENTIOND_CONFIG")
        .env("RETENTIOND__MAIL__TRANSPORT", "file")
        .env("RETENTIOND__MAIL__DIR", outbox)
        .env(
            "RETENTIOND__SECRETS__HASH_KEY",
            "walkthrough-key-0123456789abcdef0123456789",
        )
        .output()
        .expect("run retentiond");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "retentiond {}: exit {:?}: {text}",
        args.join(" "),
        out.status.code()
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data.db");
    let db = Db::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .unwrap();
    for file in ["sqlite.sql", "sqlite-sample.sql"] {
        let sql = std::fs::read_to_string(root.join("config/reference-schema").join(file)).unwrap();
        db.execute_script(&sql).await.unwrap();
    }
    db.close().await;
    let example = std::fs::read_to_string(root.join("config/retentiond.example.toml")).unwrap();
    assert!(
        example.contains("sqlite://data/retention.db"),
        "the README's sed still applies"
    );
    let config = dir.path().join("my.toml");
    std::fs::write(
        &config,
        example.replace(
            "sqlite://data/retention.db",
            &format!("sqlite://{}", db_path.display()),
        ),
    )
    .unwrap();
    let outbox = dir.path().join("outbox");

    step(&config, &outbox, &["migrate"]);
    let check = step(&config, &outbox, &["check"]);
    let dry = step(&config, &outbox, &["cycle", "--dry-run"]);
    let first = step(&config, &outbox, &["cycle"]);
    let list = step(&config, &outbox, &["reports", "list"]);
    let csv = step(&config, &outbox, &["reports", "csv", "1"]);
    step(
        &config,
        &outbox,
        &["reports", "approve", "1", "--by", "Sam, phone call"],
    );
    let applied = step(&config, &outbox, &["cycle"]);
    let audit = step(&config, &outbox, &["audit"]);

    assert!(
        check.contains("ok: 2 venue(s), configuration matches the database"),
        "{check}"
    );
    assert!(!check.contains("warning"), "{check}");
    assert!(
        dry.contains("would create a report of 3 customers"),
        "{dry}"
    );
    assert!(
        first.contains("created report 1: 3 customers")
            && first.contains("created report 2: 3 customers"),
        "{first}"
    );
    assert!(
        first.contains("mail: 3 sent"),
        "one request per approver, as files: {first}"
    );
    assert!(list.lines().count() >= 3, "{list}");
    assert_eq!(csv.lines().count(), 4, "a header and 3 customers: {csv}");
    assert!(
        applied.contains("report 1 (anonymise): applied: 3 processed, 0 skipped"),
        "{applied}"
    );
    assert!(audit.contains("anonymised"), "{audit}");
    assert!(
        std::fs::read_dir(&outbox).unwrap().count() >= 4,
        "requests and the confirmation are in outbox/"
    );
}
