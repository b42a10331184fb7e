//! The erasure journal (SPEC 9): one JSON line per erased customer (ids, action, outcome, time;
//! no personal data) in a file outside the database, so that erasures can be applied again to a
//! database restored from a backup taken before them (`retentiond replay`). Lines are appended
//! and flushed to disk after each batch commits; a catch-up from the ledger, on start and after
//! each applied report, adds whatever a crash between commit and write left out.

use crate::db::{Db, Query};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One erased customer, as a line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub report_id: i64,
    pub venue_id: i64,
    pub customer_id: i64,
    /// `delete` or `anonymise`.
    pub action: String,
    /// `deleted` or `anonymised`.
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// The ledger outcomes that are erasures, and so journaled.
pub const ERASURES: [&str; 2] = ["deleted", "anonymised"];

/// The journal file cannot be written: a configuration problem, found before any customer is
/// touched.
#[derive(Debug, thiserror::Error)]
#[error("{file}: journal.path: cannot write the erasure journal {path}: {cause}")]
pub struct JournalUnwritable {
    pub file: String,
    pub path: String,
    pub cause: String,
}

/// The configured journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
    config_file: String,
}

impl Journal {
    pub fn from_config(config: &crate::config::Config) -> Option<Journal> {
        config.journal_path.as_ref().map(|path| Journal {
            path: path.clone(),
            config_file: config.file.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file for appending (created 0600 if missing) under an exclusive lock, released
    /// when the file is closed: one writer at a time, whichever process.
    fn open_locked(&self) -> Result<File, JournalUnwritable> {
        let unwritable = |e: std::io::Error| JournalUnwritable {
            file: self.config_file.clone(),
            path: self.path.display().to_string(),
            cause: e.to_string(),
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&self.path).map_err(unwritable)?;
        file.lock().map_err(unwritable)?;
        Ok(file)
    }

    /// Appends `lines` and flushes them to disk.
    pub fn append(&self, lines: &[Line]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut file = self.open_locked()?;
        drop_partial_last_line(&mut file)?;
        write_lines(&mut file, lines).with_context(|| {
            format!(
                "cannot append to the erasure journal {}",
                self.path.display()
            )
        })
    }

    /// Appends every erasure the ledger holds (of one report, or all) that the file lacks, and
    /// returns how many. Also the check that the file can be written, so it runs before apply.
    pub async fn catch_up(&self, db: &Db, report_id: Option<i64>) -> Result<u64> {
        let mut file = self.open_locked()?;
        drop_partial_last_line(&mut file)?;
        let mut present: HashSet<(i64, i64)> = HashSet::new();
        file.seek(SeekFrom::Start(0))?;
        for line in BufReader::new(&file).lines() {
            let line = line?;
            if let Ok(l) = serde_json::from_str::<Line>(&line) {
                if report_id.is_none_or(|r| r == l.report_id) {
                    present.insert((l.report_id, l.customer_id));
                }
            }
        }
        let mut q = Query::new(
            "SELECT i.report_id, r.venue_id, i.customer_id, r.action, i.outcome, i.processed_at \
             FROM retention_report_items i JOIN retention_reports r ON r.id = i.report_id \
             WHERE i.outcome IN ('deleted', 'anonymised')",
        );
        if let Some(id) = report_id {
            q.push(" AND i.report_id = ").bind(id);
        }
        q.push(" ORDER BY i.report_id, i.customer_id");
        let mut missing = Vec::new();
        for row in db.fetch_all(&q).await? {
            let (report, customer) = (row.i64(0)?, row.i64(2)?);
            if !present.contains(&(report, customer)) {
                missing.push(Line {
                    report_id: report,
                    venue_id: row.i64(1)?,
                    customer_id: customer,
                    action: row.text(3)?,
                    outcome: row.text(4)?,
                    at: row.time(5)?,
                });
            }
        }
        write_lines(&mut file, &missing).with_context(|| {
            format!(
                "cannot append to the erasure journal {}",
                self.path.display()
            )
        })?;
        Ok(missing.len() as u64)
    }
}

/// On start (`run`, `cycle`), the configured journal gets whatever the ledger holds that it
/// lacks; an unwritable journal stops the command before any customer is touched.
pub async fn catch_up_on_start(svc: &crate::Service) -> Result<()> {
    if let Some(journal) = Journal::from_config(&svc.config) {
        let added = journal.catch_up(&svc.db, None).await?;
        if added > 0 {
            tracing::warn!(lines = added, "erasure journal caught up from the ledger");
        }
    }
    Ok(())
}

fn write_lines(file: &mut File, lines: &[Line]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut buffer = Vec::with_capacity(lines.len() * 128);
    for line in lines {
        serde_json::to_writer(&mut buffer, line)?;
        buffer.push(b'\n');
    }
    file.write_all(&buffer)?;
    file.sync_data()?;
    Ok(())
}

/// A crash in the middle of a write can leave a last line without its newline: it is cut off
/// (the catch-up writes it again whole), so that the next line does not run into it.
fn drop_partial_last_line(file: &mut File) -> Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the end of the last whole line, reading backwards in blocks.
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(pos) = chunk.iter().rposition(|b| *b == b'\n') {
            keep = start + pos as u64 + 1;
            break;
        }
        end = start;
    }
    tracing::warn!(bytes = len - keep, "the erasure journal ended in a partial line; it was cut off and is written again from the ledger");
    file.set_len(keep)?;
    Ok(())
}

/// Reads a journal for `replay`: every non-empty line must be a journal line; the first that is
/// not is named by its number, and nothing is returned.
pub fn read_all(path: &Path) -> Result<Vec<Line>> {
    let file =
        File::open(path).with_context(|| format!("cannot read the journal {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}:{}: cannot read the line", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not a journal line ({e}); nothing was replayed",
                path.display(),
                i + 1
            )
        })?;
        let valid = matches!(
            (parsed.action.as_str(), parsed.outcome.as_str()),
            ("delete", "deleted") | ("anonymise", "anonymised")
        );
        if !valid {
            anyhow::bail!(
                "{}:{}: expected action \"delete\" with outcome \"deleted\" or \"anonymise\" with \"anonymised\", got {:?} / {:?}; nothing was replayed",
                path.display(),
                i + 1,
                parsed.action,
                parsed.outcome
            );
        }
        lines.push(parsed);
    }
    Ok(lines)
}
