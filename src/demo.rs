//! `retentiond demo`: the whole product on the embedded default in a minute. It creates `demo/`
//! with a SQLite database of synthetic customers over two venues (one anonymises, one deletes),
//! a configuration that writes mail to `demo/outbox`, runs a first cycle, prints the approval
//! links, and runs the daemon with a one-minute schedule.

use crate::db::Db;
use crate::{config, cycle, mail, migrate};
use anyhow::{Context, Result};
use chrono::{SubsecRound, Utc};
use secrecy::ExposeSecret;
use std::path::Path;

fn demo_config(_dir: &Path, hash_key: &str) -> String {
    let schema_toml = crate::reference::SCHEMA_TOML;
    let anonymise_toml = crate::reference::ANONYMISE_TOML;
    let activity_toml = crate::reference::ACTIVITY_TOML;
    format!(
        r#"# Written by `retentiond demo`: the demo's own configuration.
[database]
url = "sqlite://retention.db"   # relative paths are read from this file's folder
[http]
bind = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[mail]
from = "Data Retention <retention@demo.example>"
transport = "file"
dir = "outbox"
ops = "ops@demo.example"
[schedule]
cron = "0 * * * * *"            # every minute, so an approval is applied within a minute
timezone = "Europe/London"
[approval]
required = 1
link_valid_for = "14 days"
remind_after = "7 days"
[secrets]
hash_key = "{hash_key}"
[journal]
path = "erasures.jsonl"      # the erasure journal: `retentiond replay` after a restore
{schema_toml}
{activity_toml}
[[venues]]
id = 1
name = "The Grand Theatre"
approvers = ["boxoffice@grand.example"]
inactive_for = "3 years"
action = "anonymise"
report_interval = "1 day"
[venues.prospects]             # customers who never ordered: deleted after a year
inactive_for = "1 year"
action = "delete"
{anonymise_toml}
[[venues]]
id = 2
name = "Riverside Arts Centre"
approvers = ["manager@riverside.example"]
inactive_for = "2 years"
action = "delete"
report_interval = "1 day"
"#
    )
}

/// Finds the approval links in the `.eml` files written to `outbox` (undoing quoted-printable
/// soft line breaks).
pub fn links_in_outbox(outbox: &Path) -> Result<Vec<String>> {
    let mut links = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(outbox)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)?.replace("=\r\n", "");
        for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>') {
            if word.contains("/r/")
                && word.starts_with("http")
                && !links.contains(&word.to_string())
            {
                links.push(word.to_string());
            }
        }
    }
    Ok(links)
}

pub async fn run(dir: &Path) -> Result<()> {
    // A demo already serving this folder keeps it: starting afresh would delete its database.
    let db_file = dir.join("retention.db");
    let lock_path = crate::db::daemon_lock_path(&db_file);
    if lock_path.exists() && crate::db::try_lock_file(&lock_path)?.is_none() {
        anyhow::bail!(
            "another retentiond daemon (run or demo) is running against {} (lock {}); stop it first",
            db_file.display(),
            lock_path.display()
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let hash_key = crate::approval::new_token()?;
    let config_path = dir.join("retentiond.toml");
    std::fs::write(&config_path, demo_config(dir, &hash_key))?;
    let config = config::load(&config_path)?;
    crate::logging::init(config.log_format);
    let db = Db::connect(config.database_url.expose_secret()).await?;
    db.execute_script(crate::reference::sql(db.backend()))
        .await?;
    let now = Utc::now().trunc_subsecs(0);
    crate::customers::demo_data::seed(&db, 3000, now).await?;
    migrate::run(&db, now).await?;
    db.close().await;
    // From here on, the demo is the daemon `retentiond run` starts.
    let app = crate::app::App::build(config).await?;
    let svc = app.service();
    println!(
        "demo: 3000 synthetic customers over two venues in {}/retention.db",
        dir.display()
    );
    for venue in &svc.config.venues {
        let result = cycle::run_venue_cycle(svc, venue, now, false).await?;
        if let Some(selection) = &result.selection {
            println!(
                "demo: {} ({}): {}",
                venue.name,
                venue.action.as_str(),
                serde_json::to_string(selection)?
            );
        }
        if let Some(held) = result.held_back.as_ref().and_then(|h| h.in_words()) {
            println!("demo: {}: {held}", venue.name);
        }
        if let (Some(selection), Some(rule)) = (&result.prospects, venue.prospects) {
            println!(
                "demo: {} prospects, never ordered ({}): {}",
                venue.name,
                rule.action.as_str(),
                serde_json::to_string(selection)?
            );
        }
    }
    let mailer = mail::Mailer::from_config(&svc.config.mail)?;
    mail::deliver_due(svc, &mailer, now).await?;
    println!(
        "\nApproval links (the emails are in {}/outbox):",
        dir.display()
    );
    for link in links_in_outbox(&dir.join("outbox"))? {
        println!("  {link}");
    }
    println!("\nOpen a link, type the number of customers and approve: the next minute's cycle applies it");
    println!(
        "and a confirmation email appears in {}/outbox. Try `retentiond --config {} audit`.",
        dir.display(),
        config_path.display()
    );
    println!("Serving on {} (Ctrl-C stops).", svc.config.http.bind);
    app.run(crate::app::signal()).await
}
