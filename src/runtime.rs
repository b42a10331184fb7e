//! The async runtime a command runs on, shaped by the database it works on.
//!
//! SQLite's work runs on a thread of its own for each connection (the driver's): every statement
//! is handed from the runtime to that thread and its answer back, and the task the answer wakes
//! runs on whichever runtime thread is free. With one runtime thread a core, those tasks moved
//! between cores three times as often (6,002 moves against 1,988 in the apply of a 250-venue
//! fleet) and the reports of that apply took 11 per cent longer (`benches/HISTORY.md`, session
//! 44). On SQLite the runtime therefore has one worker thread, enough for what is left on the
//! runtime's side. A server backend's protocol is read and written on the runtime's own threads,
//! so PostgreSQL and MySQL keep one a core, as many as the cycles at once may need.

use crate::db::Backend;

/// The runtime's worker threads for work on `backend` (`None`: not known): `None` is one a
/// core (tokio's default).
pub fn worker_threads(backend: Option<Backend>) -> Option<usize> {
    match backend {
        Some(Backend::Sqlite) => Some(1),
        Some(Backend::Postgres | Backend::Mysql) | None => None,
    }
}

/// The runtime for work on `backend`: what the commands, the demo and the benchmark run on.
pub fn build(backend: Option<Backend>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads(backend) {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_runs_on_one_worker_thread_and_servers_on_one_a_core() {
        assert_eq!(worker_threads(Some(Backend::Sqlite)), Some(1));
        assert_eq!(worker_threads(Some(Backend::Postgres)), None);
        assert_eq!(worker_threads(Some(Backend::Mysql)), None);
        assert_eq!(
            build(Some(Backend::Sqlite))
                .unwrap()
                .metrics()
                .num_workers(),
            1
        );
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            build(Some(Backend::Postgres))
                .unwrap()
                .metrics()
                .num_workers(),
            cores
        );
    }
}
