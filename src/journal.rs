//! The erasure journal (SPEC 9): one JSON line per erased customer (ids, action, outcome, time;
//! no personal data) in a file outside the database, so that erasures can be applied again to a
//! database restored from a backup taken before them (`retentiond replay`). Lines are appended
//! and flushed to disk after each batch commits; a catch-up from the ledger, on start and after
//! each applied report, adds whatever a crash between commit and write left out.
//!
//! Each line names the database it was written for (`migrate::database_identity`) and carries a
//! keyed MAC over its fields, with a key derived from `secrets.hash_key`, so that `replay` can
//! refuse a line written by hand, changed, or written for another database.

use crate::db::Db;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
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
    /// The identity of the database the line was written for (absent in lines written before
    /// lines were signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// HMAC-SHA-256 of the other fields (see [`Signer`]), as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Signs journal lines for one database and verifies them.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
    database: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Why a line's signature is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsigned {
    /// Written before lines were signed: no MAC, no database.
    Old,
    /// The MAC does not match the line (changed, forged, or signed with another key).
    BadMac,
    /// Signed for another database.
    OtherDatabase(String),
}

impl Signer {
    /// The journal key is derived from `secrets.hash_key`, so that it is never the key that
    /// hashes customer values.
    pub fn new(hash_key: &[u8], database: String) -> Signer {
        let mut mac = Hmac::<Sha256>::new_from_slice(hash_key).expect("HMAC takes any key");
        mac.update(b"retentiond erasure journal v1");
        Signer {
            key: mac.finalize().into_bytes().into(),
            database,
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    fn mac_of(&self, line: &Line, database: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // Fields one per line, in a fixed order; none can hold a newline (ids, fixed words, an
        // RFC 3339 time, a hex identity).
        let text = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}",
            line.report_id,
            line.venue_id,
            line.customer_id,
            line.action,
            line.outcome,
            line.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            database
        );
        mac.update(text.as_bytes());
        mac
    }

    /// `line` for this database, signed.
    pub fn sign(&self, mut line: Line) -> Line {
        let mac = self.mac_of(&line, &self.database).finalize().into_bytes();
        line.database = Some(self.database.clone());
        line.mac = Some(hex::encode(mac));
        line
    }

    /// Whether `line` was signed with this key for this database.
    pub fn verify(&self, line: &Line) -> Result<(), Unsigned> {
        let (Some(database), Some(mac)) = (&line.database, &line.mac) else {
            return Err(Unsigned::Old);
        };
        let bytes = hex::decode(mac).map_err(|_| Unsigned::BadMac)?;
        self.mac_of(line, database)
            .verify_slice(&bytes)
            .map_err(|_| Unsigned::BadMac)?;
        if *database != self.database {
            return Err(Unsigned::OtherDatabase(database.clone()));
        }
        Ok(())
    }
}

/// The signer of this service's journal: the key from `secrets.hash_key` (which configuration
/// requires with `journal.path`) and the database's identity.
pub async fn signer(svc: &crate::Service) -> Result<Signer> {
    use secrecy::ExposeSecret;
    let key = svc.config.hash_key.as_ref().with_context(|| {
        format!(
            "{}: journal.path: the erasure journal is signed with a key derived from secrets.hash_key; set it",
            svc.config.file
        )
    })?;
    let database = crate::migrate::database_identity(&svc.db).await?;
    Ok(Signer::new(key.expose_secret().as_bytes(), database))
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
    signer: Signer,
}

impl Journal {
    /// The configured journal, with its signer; none when `journal.path` is not set.
    pub async fn open(svc: &crate::Service) -> Result<Option<Journal>> {
        let Some(path) = &svc.config.journal_path else {
            return Ok(None);
        };
        Ok(Some(Journal {
            path: path.clone(),
            config_file: svc.config.file.clone(),
            signer: signer(svc).await?,
        }))
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

    /// Appends `lines`, signed, and flushes them to disk.
    pub fn append(&self, lines: Vec<Line>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut file = self.open_locked()?;
        drop_partial_last_line(&mut file)?;
        let lines: Vec<Line> = lines.into_iter().map(|l| self.signer.sign(l)).collect();
        write_lines(&mut file, &lines).with_context(|| {
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
        let mut missing = Vec::new();
        for e in crate::store::items::erased(db, report_id).await? {
            if !present.contains(&(e.report_id, e.customer_id)) {
                missing.push(self.signer.sign(Line {
                    report_id: e.report_id,
                    venue_id: e.venue_id,
                    customer_id: e.customer_id,
                    action: e.action,
                    outcome: e.outcome,
                    at: e.at,
                    database: None,
                    mac: None,
                }));
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
    if let Some(journal) = Journal::open(svc).await? {
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
/// not is named by its number, and nothing is returned. Each line comes with its line number.
pub fn read_all(path: &Path) -> Result<Vec<(usize, Line)>> {
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
        lines.push((i + 1, parsed));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            report_id: 7,
            venue_id: 2,
            customer_id: 1001,
            action: "delete".into(),
            outcome: "deleted".into(),
            at: "2026-06-16T12:00:00.123456Z".parse().unwrap(),
            database: None,
            mac: None,
        }
    }

    #[test]
    fn a_signed_line_verifies_and_any_change_or_other_database_does_not() {
        let signer = Signer::new(b"a key long enough for the test 0123", "db-one".into());
        let signed = signer.sign(line());
        assert_eq!(signer.verify(&signed), Ok(()));
        let reparsed: Line =
            serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
        assert_eq!(
            signer.verify(&reparsed),
            Ok(()),
            "survives writing and reading"
        );
        let mut changed = signed.clone();
        changed.customer_id = 1002;
        assert_eq!(signer.verify(&changed), Err(Unsigned::BadMac));
        let mut moved = signed.clone();
        moved.database = Some("db-two".into());
        assert_eq!(
            signer.verify(&moved),
            Err(Unsigned::BadMac),
            "the database is signed too"
        );
        let other = Signer::new(b"a key long enough for the test 0123", "db-two".into());
        assert_eq!(
            other.verify(&signed),
            Err(Unsigned::OtherDatabase("db-one".into()))
        );
        let other_key = Signer::new(b"another key, long enough for a test", "db-one".into());
        assert_eq!(other_key.verify(&signed), Err(Unsigned::BadMac));
        assert_eq!(signer.verify(&line()), Err(Unsigned::Old));
    }
}
