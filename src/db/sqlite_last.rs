//! SQLite: the connection a statement or transaction used last is kept aside and lent first to
//! the next one, instead of going back to the pool.
//!
//! sqlx's pool lends its idle connections in turn and tests each returned connection with a
//! round trip to its driver thread before lending it again. On SQLite both cost: a connection
//! that another one wrote behind empties its page cache and unmaps its memory map at its next
//! transaction, so lent in turn, nearly every transaction and read began cold; and the test is
//! one more hand-off between threads for each statement run outside a transaction. A fleet's
//! night is thousands of short transactions one after the other, so most of them now run on the
//! connection that wrote last, warm, with no test in between. A second task that needs a
//! connection while the last one is lent takes one from the pool as before.
//!
//! [`SqliteTx`] is the transaction on such a connection: `BEGIN IMMEDIATE`, commit and the
//! rollback of a transaction dropped uncommitted go through sqlx's own transaction manager, as
//! `sqlx::Transaction` does it, so the driver tracks them the same way.

use anyhow::Result;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqliteTransactionManager};
use sqlx::{Sqlite, SqlitePool, TransactionManager};
use std::sync::{Arc, Mutex};

/// SQLite's pool and the connection used last (see the module's header).
#[derive(Clone, Debug)]
pub struct SqliteDb {
    pool: SqlitePool,
    last: Arc<Mutex<Slot>>,
}

/// Where the connection used last waits. Dropped outside the runtime (the last handle on the
/// database going away after it), the connection is closed there and then: returned to the pool,
/// sqlx would need the runtime to take it back.
#[derive(Debug, Default)]
struct Slot(Option<PoolConnection<Sqlite>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(conn) = self.0.take() {
                drop(conn.leak());
            }
        }
    }
}

impl std::ops::Deref for SqliteDb {
    type Target = SqlitePool;
    fn deref(&self) -> &SqlitePool {
        &self.pool
    }
}

impl SqliteDb {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteDb {
            pool,
            last: Arc::new(Mutex::new(Slot::default())),
        }
    }

    /// The connection used last if no one has it, else one from the pool.
    pub async fn lend(&self) -> Result<Lent> {
        let kept = self.slot().0.take();
        let conn = match kept {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Lent {
            conn: Some(conn),
            pool: self.pool.clone(),
            last: self.last.clone(),
            close: false,
        })
    }

    /// Closes the pool, the connection kept aside first (the pool waits for every connection).
    pub async fn close(&self) {
        drop(self.slot().0.take());
        self.pool.close().await;
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection lent by [`SqliteDb::lend`]; dropped, it is kept aside for the next one, being
/// now the one used last (one kept aside before it goes back to the pool), or goes back to the
/// pool if the pool is closed.
pub struct Lent {
    conn: Option<PoolConnection<Sqlite>>,
    pool: SqlitePool,
    last: Arc<Mutex<Slot>>,
    close: bool,
}

impl Lent {
    /// Closes the connection when dropped instead of lending it again (its state is not the
    /// usual one: a pragma could not be set back).
    pub fn close_on_drop(&mut self) {
        self.close = true;
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

impl std::ops::Deref for Lent {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a lent connection is held until dropped")
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a lent connection is held until dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.close || self.pool.is_closed() {
            return;
        }
        let before = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
            .replace(conn);
        // Back to the pool outside the lock.
        drop(before);
    }
}

/// What a [`SqliteTx`] runs on: a lent connection, or one a `Writer` holds.
pub enum TxOn<'c> {
    Lent(Lent),
    Held(&'c mut SqliteConnection),
}

/// A write transaction (`BEGIN IMMEDIATE`); dropped without [`SqliteTx::commit`], it is rolled
/// back before the connection's next statement, as `sqlx::Transaction` does.
pub struct SqliteTx<'c> {
    on: TxOn<'c>,
    open: bool,
}

impl<'c> SqliteTx<'c> {
    pub async fn begin(mut on: TxOn<'c>) -> Result<SqliteTx<'c>> {
        SqliteTransactionManager::begin(on.connection(), Some("BEGIN IMMEDIATE".into())).await?;
        Ok(SqliteTx { on, open: true })
    }

    pub async fn commit(mut self) -> Result<()> {
        SqliteTransactionManager::commit(self.on.connection()).await?;
        self.open = false;
        Ok(())
    }
}

impl TxOn<'_> {
    fn connection(&mut self) -> &mut SqliteConnection {
        match self {
            TxOn::Lent(lent) => lent,
            TxOn::Held(conn) => conn,
        }
    }
}

impl std::ops::Deref for SqliteTx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match &self.on {
            TxOn::Lent(lent) => lent,
            TxOn::Held(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for SqliteTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.on.connection()
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            SqliteTransactionManager::start_rollback(self.on.connection());
        }
    }
}
