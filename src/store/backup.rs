//! `kindercam backup FILE`: a consistent copy of the live database, made with
//! SQLite's online backup API while the daemon keeps running. The copy is read in
//! one read transaction, so it is the database as of one commit, whatever the
//! daemon writes meanwhile (WAL lets it go on writing).
//!
//! The copy goes to `FILE.tmp` (mode 0600: it holds the families' code hashes and
//! the viewing log), is checked, fsynced, then renamed to FILE, so FILE is either
//! the previous backup or a complete new one. It is a plain, self-contained SQLite
//! file (rollback-journal mode; the daemon switches it back to WAL when it opens it).
//!
//! Restore: stop the daemon, copy the backup over `kindercam.db` in the state
//! directory, remove `kindercam.db-wal` and `kindercam.db-shm` there, and start it.

use std::fmt;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::DB_FILE;

/// How long the copy waits for a lock (a checkpoint, say) before giving up.
const PATIENCE: Duration = Duration::from_secs(30);

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub bytes: u64,
    pub families: u64,
    pub sessions: u64,
    pub viewing: u64,
    pub chat: u64,
}

impl fmt::Display for BackupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copied {} to {} ({} bytes): {} families, {} sessions, {} viewing-log entries, {} chat messages",
            self.source.display(),
            self.dest.display(),
            self.bytes,
            self.families,
            self.sessions,
            self.viewing,
            self.chat
        )
    }
}

/// Copies `kindercam.db` in `state_dir` to `dest`; safe while the daemon runs.
pub fn backup(state_dir: &Path, dest: &Path) -> anyhow::Result<BackupReport> {
    let source = state_dir.join(DB_FILE);
    if !source.is_file() {
        bail!(
            "no database at {}: is the state directory right? (--state-dir DIR; \
             the packaged service keeps it in /var/lib/kindercam)",
            source.display()
        );
    }
    let from = Connection::open_with_flags(
        &source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", source.display()))?;
    from.busy_timeout(PATIENCE)?;

    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", tmp.display())),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let copied = copy(&from, &tmp);
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let mut report = copied?;
    drop(from);

    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fs::rename(&tmp, dest).with_context(|| format!("cannot rename to {}", dest.display()))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself survives a power cut once the directory is synced.
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    report.source = source;
    report.dest = dest.to_owned();
    report.bytes = fs::metadata(dest)?.len();
    Ok(report)
}

/// Copies the database into `tmp`, checks the copy and counts its rows.
fn copy(from: &Connection, tmp: &Path) -> anyhow::Result<BackupReport> {
    let mut to = Connection::open(tmp).with_context(|| format!("cannot open {}", tmp.display()))?;
    {
        let backup = Backup::new(from, &mut to)?;
        let deadline = Instant::now() + PATIENCE;
        // All pages in one step: one read transaction, so one consistent state,
        // and never restarted by the daemon's writes.
        loop {
            match backup.step(-1).context("cannot copy the database")? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => bail!("the database stayed locked for {PATIENCE:?}; try again"),
            }
        }
    }
    // The copy carries the source's WAL flag; one file is easier to keep and move.
    let mode: String = to.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        bail!("cannot make the copy a single file (journal mode {mode})");
    }
    let check: String = to.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the copy fails SQLite's check: {check}");
    }
    let count = |table: &str| -> anyhow::Result<u64> {
        let exists: bool = to.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        let rows: i64 = to.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(u64::try_from(rows).unwrap_or(0))
    };
    let report = BackupReport {
        source: PathBuf::new(),
        dest: PathBuf::new(),
        bytes: 0,
        families: count("families")?,
        sessions: count("sessions")?,
        viewing: count("viewing")?,
        chat: count("chat")?,
    };
    to.close()
        .map_err(|(_, e)| e)
        .context("cannot close the copy")?;
    Ok(report)
}
