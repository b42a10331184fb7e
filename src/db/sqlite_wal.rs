//! Who checkpoints SQLite's write-ahead log, and when.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past its threshold.
//! During an apply that made one batch in a few carry a copy of the whole log into the database
//! file (a 45 ms batch of 500 customers committed in 150 ms), which held the box office at the
//! write lock and made the batch sizer shrink the batches that followed (to a fifth, for a dozen
//! batches): on a live shop's order layout the delete ran at half the speed of plain SQL.
//!
//! Here every connection of retentiond's pools carries a commit hook of its own in place of
//! SQLite's (the automatic checkpoint is such a hook): it records the log's length after each
//! commit and checkpoints past [`AUTOMATIC_FRAMES`], as SQLite's would, except while an apply
//! runs on the same database ([`WalState::defer`]): the apply then checkpoints between its
//! batches, outside any transaction, each time [`APPLY_CHECKPOINT_FRAMES`] pages were written
//! since its last checkpoint, and the hook steps in only once [`DEFERRED_LIMIT_FRAMES`] were,
//! so the log's size stays bounded whatever happens to the apply. Other programs' connections to the database keep SQLite's own.

use anyhow::Result;
use libsqlite3_sys as ffi;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The log's length, in pages, past which a commit checkpoints when no apply is running:
/// SQLite's own default (about 4 MB at 4 KB pages). Every read searches the log and reads the
/// pages it finds there one by one instead of through the memory map, so outside an apply (which
/// checkpoints for itself) the log is kept as short as SQLite keeps it. At 20,000 pages, a
/// fleet's first cycle (1,000 reports) took 5.1 to 5.9 s against 3.7 to 4.5 s at 1,000, and a
/// dry run reading a 55 MB log took up to 1 s against 0.2 s.
pub const AUTOMATIC_FRAMES: i64 = 1_000;

/// The pages written to the log since an apply's last checkpoint past which it checkpoints
/// between two batches (about 128 MB). Each checkpoint has a fixed cost (the sort of the log,
/// two flushes to disk); a longer log made every batch slower (each read searches it).
pub const APPLY_CHECKPOINT_FRAMES: i64 = 32_768;

/// While an apply runs, the pages written since its last checkpoint past which a commit still
/// checkpoints (about 1 GB): the bound on the log should an apply stop checkpointing.
pub const DEFERRED_LIMIT_FRAMES: i64 = 262_144;

/// What the commit hooks of one database's connections share.
#[derive(Debug, Default)]
pub struct WalState {
    /// The log's length after the last commit on any of these connections.
    frames: AtomicI64,
    /// The log's length when an apply last checkpointed it (0 once the log starts again).
    checkpointed_at: AtomicI64,
    /// Applies running on the database, each checkpointing between its batches.
    applies: AtomicUsize,
}

/// Whether a commit that left the log `frames` long checkpoints, with `applies` running and
/// the log `checkpointed_at` long at an apply's last checkpoint. While an apply runs, what
/// counts is what was written since: when other programs keep writing, a checkpoint cannot
/// always copy the whole log and the log does not start again.
pub fn commit_checkpoints(frames: i64, checkpointed_at: i64, applies: usize) -> bool {
    if applies > 0 {
        frames - checkpointed_at >= DEFERRED_LIMIT_FRAMES
    } else {
        frames >= AUTOMATIC_FRAMES
    }
}

/// Whether an apply checkpoints between two batches, the log `frames` long and
/// `checkpointed_at` long at its last checkpoint.
pub fn apply_checkpoints(frames: i64, checkpointed_at: i64) -> bool {
    frames - checkpointed_at >= APPLY_CHECKPOINT_FRAMES
}

impl WalState {
    /// The state shared by every pool of retentiond's process on the database file `path`
    /// (the daemon keeps one pool for the pages and one for the cycles).
    pub fn of(path: &std::path::Path) -> &'static WalState {
        static STATES: super::sqlite::FileRegistry<WalState> = OnceLock::new();
        super::sqlite::shared_by_file(&STATES, path, WalState::default)
    }

    /// The log's length (pages) after the last commit seen.
    pub fn frames(&self) -> i64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Whether an apply should checkpoint now (see [`apply_checkpoints`]).
    pub fn apply_checkpoint_due(&self) -> bool {
        apply_checkpoints(self.frames(), self.checkpointed_at.load(Ordering::Relaxed))
    }

    /// Takes note that an apply checkpointed the log as it was after the last commit.
    pub fn checkpointed(&self) {
        self.checkpointed_at.store(self.frames(), Ordering::Relaxed);
    }

    /// Commits stop checkpointing (below [`DEFERRED_LIMIT_FRAMES`]) until the guard is dropped:
    /// the holder checkpoints between its transactions instead.
    pub fn defer(&'static self) -> Deferral {
        self.applies.fetch_add(1, Ordering::SeqCst);
        Deferral(self)
    }

    /// Installs the hook on one connection, replacing SQLite's automatic checkpoint.
    pub async fn install(&'static self, conn: &mut sqlx::SqliteConnection) -> Result<()> {
        let mut handle = conn.lock_handle().await?;
        let db = handle.as_raw_handle().as_ptr();
        let state: *const WalState = self;
        // SAFETY: `db` is a live connection, held locked by `handle` for the call; the state
        // is `'static` (leaked in `of`), so the hook's argument outlives the connection.
        unsafe {
            ffi::sqlite3_wal_hook(db, Some(on_commit), state as *mut c_void);
        }
        Ok(())
    }
}

/// Held by an apply while it checkpoints between its own batches.
pub struct Deferral(&'static WalState);

impl Drop for Deferral {
    fn drop(&mut self) {
        self.0.applies.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Called by SQLite after each commit that wrote to the log, with the log's length in pages.
unsafe extern "C" fn on_commit(
    state: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    frames: c_int,
) -> c_int {
    // SAFETY: `state` is the `'static` WalState given in `install`.
    let state = &*(state as *const WalState);
    let frames = i64::from(frames);
    if frames < state.frames.swap(frames, Ordering::Relaxed) {
        // The log started again from its first page: everything before was checkpointed.
        state.checkpointed_at.store(0, Ordering::Relaxed);
    }
    let checkpointed_at = state.checkpointed_at.load(Ordering::Relaxed);
    if commit_checkpoints(
        frames,
        checkpointed_at,
        state.applies.load(Ordering::SeqCst),
    ) {
        // What SQLite's automatic checkpoint does: a passive checkpoint, which waits for no
        // reader and blocks no writer. Its result is not an error of the commit.
        ffi::sqlite3_wal_checkpoint_v2(
            db,
            name,
            ffi::SQLITE_CHECKPOINT_PASSIVE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_checkpoints_past_the_automatic_length_unless_an_apply_runs() {
        assert!(!commit_checkpoints(AUTOMATIC_FRAMES - 1, 0, 0));
        assert!(commit_checkpoints(AUTOMATIC_FRAMES, 0, 0));
        assert!(!commit_checkpoints(AUTOMATIC_FRAMES, 0, 1));
        assert!(!commit_checkpoints(DEFERRED_LIMIT_FRAMES - 1, 0, 2));
        assert!(commit_checkpoints(DEFERRED_LIMIT_FRAMES, 0, 1));
        // A log that could not start again: what was written since the apply's checkpoint.
        let base = 3 * DEFERRED_LIMIT_FRAMES;
        assert!(!commit_checkpoints(base + 10, base, 1));
        assert!(commit_checkpoints(base + DEFERRED_LIMIT_FRAMES, base, 1));
        assert!(
            commit_checkpoints(base + 10, base, 0),
            "without an apply, SQLite's rule"
        );
    }

    #[test]
    fn an_apply_checkpoints_what_was_written_since_its_last_checkpoint() {
        assert!(!apply_checkpoints(APPLY_CHECKPOINT_FRAMES - 1, 0));
        assert!(apply_checkpoints(APPLY_CHECKPOINT_FRAMES, 0));
        let base = 5 * APPLY_CHECKPOINT_FRAMES;
        assert!(!apply_checkpoints(base + 1, base));
        assert!(apply_checkpoints(base + APPLY_CHECKPOINT_FRAMES, base));
    }

    #[test]
    fn apply_checkpoints_before_the_hook_steps_in() {
        const { assert!(AUTOMATIC_FRAMES < APPLY_CHECKPOINT_FRAMES) };
        const { assert!(APPLY_CHECKPOINT_FRAMES < DEFERRED_LIMIT_FRAMES) };
    }

    #[test]
    fn a_deferral_lasts_as_long_as_its_guard() {
        let state = WalState::of(std::path::Path::new("/nonexistent/deferral-test.db"));
        assert_eq!(state.applies.load(Ordering::SeqCst), 0);
        let first = state.defer();
        let second = state.defer();
        assert_eq!(state.applies.load(Ordering::SeqCst), 2);
        drop(first);
        assert_eq!(state.applies.load(Ordering::SeqCst), 1);
        drop(second);
        assert_eq!(state.applies.load(Ordering::SeqCst), 0);
    }
}
