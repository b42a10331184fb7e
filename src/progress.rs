//! Progress of long work (applying a report, replaying a journal) for a person at a terminal:
//! customers done of the total, rate and time left. `cycle` and `replay` show it on stderr when
//! that is a terminal (indicatif draws nothing otherwise); the daemon and tests show none.

use std::sync::Arc;

/// Where progress goes: nowhere (the default), or a progress bar.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<indicatif::ProgressBar>>);

impl Progress {
    /// A progress bar on stderr, drawn only when stderr is a terminal.
    pub fn terminal() -> Progress {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg}: {pos}/{len} customers [{bar:30}] {per_sec}, {eta} left",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Progress(Some(Arc::new(bar)))
    }

    /// Starts counting `total` customers of `what` (e.g. "report 3 (delete)").
    pub fn start(&self, what: String, total: u64) {
        if let Some(bar) = &self.0 {
            bar.reset();
            bar.set_length(total);
            bar.set_position(0);
            bar.set_message(what);
        }
    }

    pub fn advance(&self, customers: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(customers);
        }
    }

    /// Clears the bar; the command's summary line follows.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
