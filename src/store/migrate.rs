//! The service's own tables (`retention_*`), created and upgraded by embedded, numbered
//! migrations recorded in `retention_migrations`; the customer tables are never altered.

use crate::db::{Db, Query, Spelled};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

struct Migration {
    version: i64,
    name: &'static str,
    sql: Spelled,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
            postgres: include_str!("../../migrations/postgres/0001_init.sql"),
            mysql: include_str!("../../migrations/mysql/0001_init.sql"),
        },
    },
    Migration {
        version: 2,
        name: "outbox_tokens",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0002_outbox_tokens.sql"),
            postgres: include_str!("../../migrations/postgres/0002_outbox_tokens.sql"),
            mysql: include_str!("../../migrations/mysql/0002_outbox_tokens.sql"),
        },
    },
    Migration {
        version: 3,
        name: "pending_items",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0003_pending_items.sql"),
            postgres: include_str!("../../migrations/postgres/0003_pending_items.sql"),
            mysql: include_str!("../../migrations/mysql/0003_pending_items.sql"),
        },
    },
    Migration {
        version: 4,
        name: "hot_outcomes",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0004_hot_outcomes.sql"),
            postgres: include_str!("../../migrations/postgres/0004_hot_outcomes.sql"),
            mysql: include_str!("../../migrations/mysql/0004_hot_outcomes.sql"),
        },
    },
    Migration {
        version: 5,
        name: "item_last_order",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0005_item_last_order.sql"),
            postgres: include_str!("../../migrations/postgres/0005_item_last_order.sql"),
            mysql: include_str!("../../migrations/mysql/0005_item_last_order.sql"),
        },
    },
    Migration {
        version: 6,
        name: "free_text_out_of_ledger_and_replays",
        sql: Spelled {
            sqlite: include_str!(
                "../../migrations/sqlite/0006_free_text_out_of_ledger_and_replays.sql"
            ),
            postgres: include_str!(
                "../../migrations/postgres/0006_free_text_out_of_ledger_and_replays.sql"
            ),
            mysql: include_str!(
                "../../migrations/mysql/0006_free_text_out_of_ledger_and_replays.sql"
            ),
        },
    },
    Migration {
        version: 7,
        name: "review",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0007_review.sql"),
            postgres: include_str!("../../migrations/postgres/0007_review.sql"),
            mysql: include_str!("../../migrations/mysql/0007_review.sql"),
        },
    },
    Migration {
        version: 8,
        name: "search_terms",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0008_search_terms.sql"),
            postgres: include_str!("../../migrations/postgres/0008_search_terms.sql"),
            mysql: include_str!("../../migrations/mysql/0008_search_terms.sql"),
        },
    },
    Migration {
        version: 9,
        name: "fleet",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0009_fleet.sql"),
            postgres: include_str!("../../migrations/postgres/0009_fleet.sql"),
            mysql: include_str!("../../migrations/mysql/0009_fleet.sql"),
        },
    },
    Migration {
        version: 10,
        name: "identity",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0010_identity.sql"),
            postgres: include_str!("../../migrations/postgres/0010_identity.sql"),
            mysql: include_str!("../../migrations/mysql/0010_identity.sql"),
        },
    },
    Migration {
        version: 11,
        name: "holds",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0011_holds.sql"),
            postgres: include_str!("../../migrations/postgres/0011_holds.sql"),
            mysql: include_str!("../../migrations/mysql/0011_holds.sql"),
        },
    },
    Migration {
        version: 12,
        name: "kept reports",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0012_kept_reports.sql"),
            postgres: include_str!("../../migrations/postgres/0012_kept_reports.sql"),
            mysql: include_str!("../../migrations/mysql/0012_kept_reports.sql"),
        },
    },
    Migration {
        version: 13,
        name: "unknown customers by customer",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0013_unknown_customers_by_customer.sql"),
            postgres: include_str!(
                "../../migrations/postgres/0013_unknown_customers_by_customer.sql"
            ),
            mysql: include_str!("../../migrations/mysql/0013_unknown_customers_by_customer.sql"),
        },
    },
    Migration {
        version: 14,
        name: "reports by venue and state",
        sql: Spelled {
            sqlite: include_str!("../../migrations/sqlite/0014_reports_by_venue_and_state.sql"),
            postgres: include_str!("../../migrations/postgres/0014_reports_by_venue_and_state.sql"),
            mysql: include_str!("../../migrations/mysql/0014_reports_by_venue_and_state.sql"),
        },
    },
];

/// The schema version this build expects.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS retention_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

/// Applies every migration not yet applied, each in its own transaction, and returns the names
/// of those it applied. Concurrent runs serialise on a lock (PostgreSQL and MySQL a session
/// lock, SQLite its write transaction). MySQL commits each DDL statement at once, so there a
/// migration that fails half-way is not rolled back: its error names it, and each migration is
/// written so that running it again after the cause is fixed completes it.
pub async fn run(db: &Db, at: DateTime<Utc>) -> Result<Vec<String>> {
    let lock = db.lock_migrations().await?;
    let applied = run_locked(db, at).await;
    lock.release().await?;
    applied
}

async fn run_locked(db: &Db, at: DateTime<Utc>) -> Result<Vec<String>> {
    db.execute(&Query::new(CREATE_LEDGER))
        .await
        .context("cannot create retention_migrations")?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let mut tx = db.begin().await?;
        let mut q = Query::new("SELECT COUNT(*) FROM retention_migrations WHERE version = ");
        q.bind(migration.version);
        if tx.fetch_one(&q).await?.i64(0)? > 0 {
            continue;
        }
        let sql = tx.backend().pick(&migration.sql);
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
    let mut tx = db.begin().await?;
    let count = Query::new("SELECT COUNT(*) FROM retention_identity");
    if tx.fetch_one(&count).await?.i64(0)? == 0 {
        let mut q =
            Query::new("INSERT INTO retention_identity (singleton, database_id) VALUES (1, ");
        q.bind(crate::approval::new_token()?[..32].to_string())
            .push(")");
        tx.execute(&q).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// The database's identity (SPEC 9): written once by `migrate`, kept by a restored backup,
/// another in another database.
pub async fn database_identity(db: &Db) -> Result<String> {
    ensure_current(db).await?;
    let q = Query::new("SELECT database_id FROM retention_identity WHERE singleton = 1");
    match db.fetch_optional(&q).await? {
        Some(row) => row.text(0),
        None => bail!("the database has no retentiond identity: run `retentiond migrate`"),
    }
}

/// The applied schema version, 0 when `migrate` never ran.
pub async fn current_version(db: &Db) -> Result<i64> {
    if !db.table_exists("retention_migrations").await? {
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
