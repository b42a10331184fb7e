//! SQLite's write lock, taken in turn by the process's writers.
//!
//! SQLite lets one connection write at a time. A connection that finds the lock taken sleeps in
//! SQLite's busy handler, 1, 2, 5, 10 ms and longer, up to 100 ms a time, and then tries again.
//! Two venue cycles of one run (SPEC 11), each writing transactions of a few milliseconds, thus
//! waited longer than the lock was held: the cycle that had just committed began its next
//! transaction before the other woke up. The daemon applied a 250-venue fleet in 1.24 to 1.26 s
//! with two cycles at once, against 0.94 to 0.96 s with one.
//!
//! So the writers of one process queue for their turn, first come first served, before they
//! take the lock. The next in line begins as soon as the last one's transaction ends: 0.94 to
//! 1.03 s with two cycles at once (`benches/HISTORY.md`, session 44). A turn is taken for each
//! write transaction and each statement run outside one ([`super::Db::execute`]). Programs
//! other than this one (an operator's `retentiond cycle` beside the daemon, the box office)
//! still meet SQLite's busy handler, as before.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A writer's turn: the process's other writers of the same database wait until it is dropped.
pub type Turn = SemaphorePermit<'static>;

/// No turn came within the patience SQLite's own busy handler has. A passing failure, as
/// SQLite's "database is locked" is.
#[derive(Debug)]
pub struct NoTurn {
    pub waited: Duration,
}

impl std::fmt::Display for NoTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database is locked: waited {} s for another writer of this process to finish",
            self.waited.as_secs()
        )
    }
}

impl std::error::Error for NoTurn {}

/// Waits for this process's turn to write to the database file `path`, at most `patience`.
pub async fn take(path: &Path, patience: Duration) -> Result<Turn, NoTurn> {
    let no_turn = NoTurn { waited: patience };
    match tokio::time::timeout(patience, turns_of(path).acquire()).await {
        Ok(Ok(turn)) => Ok(turn),
        // The semaphore is never closed; a closed one would give no turn either.
        Ok(Err(_)) | Err(_) => Err(no_turn),
    }
}

/// The turns of the database file `path`, shared by every pool of the process on it (the
/// daemon keeps one pool for the pages and one for the cycles).
fn turns_of(path: &Path) -> &'static Semaphore {
    static TURNS: super::sqlite::FileRegistry<Semaphore> = OnceLock::new();
    super::sqlite::shared_by_file(&TURNS, path, || Semaphore::new(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_of_one_file_take_turns_and_of_two_files_do_not_wait() {
        let a = Path::new("/turns-test/a.db");
        let first = take(a, Duration::from_secs(1)).await.unwrap();
        // Another file's writer goes ahead.
        let other = take(Path::new("/turns-test/b.db"), Duration::from_millis(10)).await;
        assert!(other.is_ok());
        // The same file's waits, and gives up at its patience with a clear error.
        let waited = take(a, Duration::from_millis(50)).await.unwrap_err();
        assert!(
            waited.to_string().starts_with("database is locked"),
            "{waited}"
        );
        // The next writer in line gets the turn as soon as the first is done.
        let next = tokio::spawn(async move { take(a, Duration::from_secs(5)).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(next.await.unwrap());
    }
}
