//! The service's own tables (`retention_*`), created and upgraded by embedded, numbered
//! migrations recorded in `retention_migrations`; the customer tables are never altered.

use crate::db::{Backend, Db, Query};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "outbox_tokens",
        sqlite: include_str!("../migrations/sqlite/0002_outbox_tokens.sql"),
        postgres: include_str!("../migrations/postgres/0002_outbox_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "pending_items",
        sqlite: include_str!("../migrations/sqlite/0003_pending_items.sql"),
        postgres: include_str!("../migrations/postgres/0003_pending_items.sql"),
    },
    Migration {
        version: 4,
        name: "hot_outcomes",
        sqlite: include_str!("../migrations/sqlite/0004_hot_outcomes.sql"),
        postgres: include_str!("../migrations/postgres/0004_hot_outcomes.sql"),
    },
    Migration {
        version: 5,
        name: "item_last_order",
        sqlite: include_str!("../migrations/sqlite/0005_item_last_order.sql"),
        postgres: include_str!("../migrations/postgres/0005_item_last_order.sql"),
    },
    Migration {
        version: 6,
        name: "free_text_out_of_ledger_and_replays",
        sqlite: include_str!("../migrations/sqlite/0006_free_text_out_of_ledger_and_replays.sql"),
        postgres: include_str!(
            "../migrations/postgres/0006_free_text_out_of_ledger_and_replays.sql"
        ),
    },
    Migration {
        version: 7,
        name: "review",
        sqlite: include_str!("../migrations/sqlite/0007_review.sql"),
        postgres: include_str!("../migrations/postgres/0007_review.sql"),
    },
];

/// The schema version this build expects.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS retention_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

/// Applies every migration not yet applied, each in its own transaction, and returns the names
/// of those it applied. Concurrent runs on PostgreSQL serialise on an advisory lock.
pub async fn run(db: &Db, at: DateTime<Utc>) -> Result<Vec<String>> {
    db.execute(&Query::new(CREATE_LEDGER))
        .await
        .context("cannot create retention_migrations")?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let mut tx = db.begin().await?;
        if tx.backend() == Backend::Postgres {
            tx.execute(&Query::new("SELECT pg_advisory_xact_lock(5391172841)"))
                .await?;
        }
        let mut q = Query::new("SELECT COUNT(*) FROM retention_migrations WHERE version = ");
        q.bind(migration.version);
        if tx.fetch_one(&q).await?.i64(0)? > 0 {
            continue;
        }
        let sql = match tx.backend() {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        tx.execute_script(sql).await.with_context(|| {
            format!(
                "migration {} ({}) failed",
                migration.version, migration.name
            )
        })?;
        let mut q =
            Query::new("INSERT INTO retention_migrations (version, name, applied_at) VALUES (");
        q.bind(migration.version)
            .push(", ")
            .bind(migration.name)
            .push(", ")
            .bind(at.to_rfc3339())
            .push(")");
        tx.execute(&q).await?;
        tx.commit().await?;
        applied.push(format!("{:04}_{}", migration.version, migration.name));
    }
    Ok(applied)
}

/// The applied schema version, 0 when `migrate` never ran.
pub async fn current_version(db: &Db) -> Result<i64> {
    let exists = match db.backend() {
        Backend::Sqlite => Query::new("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'retention_migrations'"),
        Backend::Postgres => Query::new("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'retention_migrations'"),
    };
    if db.fetch_one(&exists).await?.i64(0)? == 0 {
        return Ok(0);
    }
    let latest = Query::new("SELECT COALESCE(MAX(version), 0) FROM retention_migrations");
    db.fetch_one(&latest).await?.i64(0)
}

/// Fails with an instruction to run `migrate` unless the schema is current.
pub async fn ensure_current(db: &Db) -> Result<()> {
    let version = current_version(db).await?;
    if version < latest_version() {
        bail!("the database has retentiond schema version {version}, this build needs {}: run `retentiond migrate`", latest_version());
    }
    if version > latest_version() {
        bail!("the database has retentiond schema version {version}, newer than this build ({}): upgrade retentiond", latest_version());
    }
    Ok(())
}
