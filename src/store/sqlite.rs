//! The SQLite side of the store: opening the database with the settings that make
//! it durable, the writer thread that turns queued writes into batched transactions,
//! and the SQL of every read and write. `mod.rs` is the API over it.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use super::{
    migrate, unix_now, AuditEvent, Family, FamilyChange, OpenPause, PauseStart, SessionsOf,
    StoreError, StoreSettings, StoredSession, ViewId, ViewRecord, ViewStart, WriteStats, DB_FILE,
    QUEUE,
};
use crate::auth::tokens::{LinkToken, Scope};
use crate::sync::Locked;

/// How long a statement waits for a lock held by another connection (the backup
/// command's, or the reader during a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Each kind of error is logged at most once per this long, with a count of the rest.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The WAL file is cut back to this size after a checkpoint (it may grow past it
/// during a burst); keeps an SD card from holding a large, mostly stale WAL.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;
const DAY: i64 = 24 * 3600;

/// A database ready for the writer thread.
pub(super) struct Opened {
    pub path: Option<PathBuf>,
    /// How logs name this database.
    pub label: String,
    pub writer: Arc<Mutex<Connection>>,
    /// The writer's own connection for a store in memory.
    pub reader: Arc<Mutex<Connection>>,
    pub last_view_id: i64,
    /// The viewing-log rows this open closed, left open by an unclean stop:
    /// `(id, end)`, for a cluster's other nodes.
    pub leftovers: Vec<(i64, i64)>,
}

/// Opens `kindercam.db` in `state_dir` read-write for the writer and read-only for
/// readers, after migrating, importing the JSON files and tidying up.
pub(super) fn open_file(state_dir: &Path, settings: &StoreSettings) -> Result<Opened, StoreError> {
    let unwritable = |what: &str, e: io::Error| StoreError::ReadOnly(format!("cannot {what}: {e}"));
    fs::create_dir_all(state_dir)
        .map_err(|e| unwritable(&format!("create {}", state_dir.display()), e))?;
    let path = state_dir.join(DB_FILE);
    // SQLite would create the file 0644, and its -wal and -shm files copy the
    // database's mode: create it private (an empty file is an empty database).
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(unwritable(&format!("create {}", path.display()), e)),
    }
    let label = path.display().to_string();
    let mut writer = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // SQLite quietly opens a file it cannot write read-only; that is no store.
    if writer.is_readonly(rusqlite::MAIN_DB)? {
        return Err(StoreError::ReadOnly(format!("{label} is read-only")));
    }
    writer.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // A file system without shared memory (some network ones): still durable,
        // but reads wait for commits.
        tracing::warn!(database = %label, journal_mode = %mode, "the database is not in WAL mode");
    }
    // FULL: in WAL mode, each commit is fsynced before it is reported done, so a
    // power cut loses no committed write (NORMAL could lose the last ones).
    writer.pragma_update(None, "synchronous", "FULL")?;
    writer.pragma_update(None, "foreign_keys", "ON")?;
    writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;

    migrate::migrate(&mut writer, migrate::MIGRATIONS)?;
    let now = unix_now();
    // Neither is fatal: on a full disk the store still opens for reading, and the
    // JSON files stay for the next start.
    if let Err(e) = migrate::import_json(&mut writer, state_dir, now) {
        tracing::error!(database = %label, error = %e, "cannot import the old JSON state files; they are kept for the next start");
    }
    let leftovers = close_leftovers(&mut writer, now, settings.audit_days).unwrap_or_else(|e| {
        tracing::error!(database = %label, error = %e, "cannot tidy the database at start");
        Vec::new()
    });
    let last_view_id = last_view_id(&writer)?;

    let reader = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.busy_timeout(BUSY_TIMEOUT)?;
    Ok(Opened {
        path: Some(path),
        label,
        writer: Arc::new(Mutex::new(writer)),
        reader: Arc::new(Mutex::new(reader)),
        last_view_id,
        leftovers,
    })
}

/// An in-memory database: one connection, shared by the writer and the readers
/// (a second connection would see another, empty database).
pub(super) fn open_memory(settings: &StoreSettings) -> Result<Opened, StoreError> {
    let mut conn = Connection::open_in_memory()?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate::migrate(&mut conn, migrate::MIGRATIONS)?;
    let leftovers = close_leftovers(&mut conn, unix_now(), settings.audit_days)?;
    let conn = Arc::new(Mutex::new(conn));
    Ok(Opened {
        path: None,
        label: "(in memory)".to_owned(),
        writer: conn.clone(),
        reader: conn,
        last_view_id: 0,
        leftovers,
    })
}

/// At open: ends the viewing sessions a crash or power cut left open, and prunes.
fn close_leftovers(
    conn: &mut Connection,
    now: i64,
    audit_days: u32,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // This node's own rows only: another node's (in a cluster) is closed by it.
    let left = tx
        .prepare(
            r#"SELECT id, max(start, ?1) FROM viewing
               WHERE "end" IS NULL AND kind != 'pause' AND node IS NULL"#,
        )?
        .query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
    // The daemon stopped without closing these rows, and when each viewer really
    // left is unknown (the time of the last commit before the crash is not kept).
    // Every one of them had left by now, so the row ends at this start: the log
    // may show a viewer for longer than they watched, never shorter.
    // A pause is not a viewer: it goes on across the restart (see `privacy::pause`).
    let closed = tx.execute(
        r#"UPDATE viewing SET "end" = max(start, ?1) WHERE "end" IS NULL AND kind != 'pause' AND node IS NULL"#,
        [now],
    )?;
    if closed > 0 {
        tracing::info!(
            rows = closed,
            "closed viewing-log rows left open by an unclean stop"
        );
    }
    prune(&tx, now, audit_days)?;
    tx.commit()?;
    Ok(left)
}

fn last_view_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM viewing", [], |row| {
        row.get(0)
    })
}

/// Deletes viewing rows that ended more than `audit_days` ago, and expired sessions.
fn prune(conn: &Connection, now: i64, audit_days: u32) -> rusqlite::Result<(usize, usize)> {
    let views = prune_audit(conn, now - i64::from(audit_days) * DAY)?;
    let sessions = conn.execute("DELETE FROM sessions WHERE expires <= ?1", [now])?;
    Ok((views, sessions))
}

// ---- the writer thread ---------------------------------------------------------

/// What the writer thread is asked to do.
pub(super) enum Op {
    /// Boxed: the queue holds its whole capacity of `Op`s from the start, and
    /// a write inline made each 176 bytes (0.7 MB of memory for 4096 of them).
    Write(Box<Write>),
    Ack(Ack),
    /// Answered once everything queued before it is committed.
    Flush(SyncSender<()>),
    /// Commit what is queued, then end the thread.
    Stop,
}

/// A queued write: nobody waits for it.
pub(super) enum Write {
    /// A row of the viewing log, of kind `watch` or `token`.
    AuditOpen(ViewId, ViewStart, &'static str),
    AuditClose(ViewId, i64),
    PauseOpen(ViewId, PauseStart),
    PauseClose(ViewId, i64, Option<String>),
    ChatAppend {
        room: String,
        id: u64,
        text: String,
        keep: usize,
    },
    ChatDelete {
        room: String,
        id: u64,
    },
    PutSession(StoredSession),
    DeleteSession([u8; 32]),
    DeleteSessions(SessionsOf),
    TouchFamily {
        id: String,
        at: i64,
    },
    TouchToken {
        id: String,
        at: i64,
    },
}

impl Write {
    fn what(&self) -> &'static str {
        match self {
            Write::AuditOpen(..) | Write::AuditClose(..) => "a viewing-log entry",
            Write::PauseOpen(..) | Write::PauseClose(..) => "a pause in the viewing log",
            Write::ChatAppend { .. } | Write::ChatDelete { .. } => "a chat history change",
            Write::PutSession(_) | Write::DeleteSession(_) | Write::DeleteSessions(_) => {
                "a session change"
            }
            Write::TouchFamily { .. } => "a family's last visit",
            Write::TouchToken { .. } => "a link token's last use",
        }
    }

    fn apply(&self, c: &Connection) -> rusqlite::Result<()> {
        match self {
            Write::AuditOpen(id, s, kind) => {
                c.prepare_cached(
                    r#"INSERT INTO viewing (id, family, name, role, stream, start, "end", address, family_name, kind)
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9)"#,
                )?
                .execute(params![
                    id.0,
                    s.family,
                    s.name,
                    s.role,
                    s.stream,
                    s.start,
                    s.address,
                    s.family_name,
                    kind
                ])?;
            }
            Write::AuditClose(id, end) => {
                c.prepare_cached(
                    r#"UPDATE viewing SET "end" = max(start, ?2) WHERE id = ?1 AND "end" IS NULL"#,
                )?
                .execute(params![id.0, end])?;
            }
            Write::PauseOpen(id, p) => {
                c.prepare_cached(
                    r#"INSERT INTO viewing (id, kind, name, role, stream, start, "end", until, address)
                       VALUES (?1, 'pause', ?2, ?3, ?4, ?5, NULL, ?6, ?7)"#,
                )?
                .execute(params![
                    id.0, p.name, p.role, p.stream, p.start, p.until, p.address
                ])?;
            }
            Write::PauseClose(id, end, resumed_by) => {
                c.prepare_cached(
                    r#"UPDATE viewing SET "end" = max(start, ?2), resumed_by = ?3
                       WHERE id = ?1 AND "end" IS NULL"#,
                )?
                .execute(params![id.0, end, resumed_by])?;
            }
            Write::ChatAppend {
                room,
                id,
                text,
                keep,
            } => {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO chat (room, id, text) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![room, int(*id)?, text])?;
                // Everything from the (keep+1)-th newest back.
                c.prepare_cached(
                    "DELETE FROM chat WHERE room = ?1 AND id <= \
                     (SELECT id FROM chat WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )?
                .execute(params![room, count(*keep)])?;
            }
            Write::ChatDelete { room, id } => {
                c.prepare_cached("DELETE FROM chat WHERE room = ?1 AND id = ?2")?
                    .execute(params![room, int(*id)?])?;
            }
            Write::PutSession(s) => {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO sessions (key, role, name, family, code, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![s.key, s.role, s.name, s.family, s.code, s.expires])?;
            }
            Write::DeleteSession(key) => {
                c.prepare_cached("DELETE FROM sessions WHERE key = ?1")?
                    .execute([key])?;
            }
            Write::DeleteSessions(SessionsOf::Role(role)) => {
                c.execute("DELETE FROM sessions WHERE role = ?1", [role])?;
            }
            Write::DeleteSessions(SessionsOf::Family(family)) => {
                c.execute("DELETE FROM sessions WHERE family = ?1", [family])?;
            }
            Write::TouchFamily { id, at } => {
                c.prepare_cached(
                    "UPDATE families SET last_seen = max(coalesce(last_seen, ?2), ?2) WHERE id = ?1",
                )?
                .execute(params![id, at])?;
            }
            Write::TouchToken { id, at } => {
                c.prepare_cached(
                    "UPDATE tokens SET last_used = max(coalesce(last_used, ?2), ?2) WHERE id = ?1",
                )?
                .execute(params![id, at])?;
            }
        }
        Ok(())
    }
}

/// An acknowledged change: runs in its own transaction, and its caller waits for
/// the answer.
pub(super) struct Ack {
    what: &'static str,
    job: Box<dyn AckJob>,
}

impl Ack {
    pub fn new<T, F>(what: &'static str, work: F, reply: SyncSender<Result<T, StoreError>>) -> Ack
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Ack {
            what,
            job: Box::new(Job {
                work: Some(work),
                value: None,
                reply,
            }),
        }
    }
}

/// The typed part of an [`Ack`], behind a box so the writer's queue has one type.
trait AckJob: Send {
    /// Does the work inside the open transaction, keeping its value for `answer`.
    fn run(&mut self, c: &Connection) -> Result<(), StoreError>;
    /// Tells the caller: the value if the transaction committed, else why not.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Job<T, F> {
    work: Option<F>,
    value: Option<T>,
    reply: SyncSender<Result<T, StoreError>>,
}

impl<T, F> AckJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, c: &Connection) -> Result<(), StoreError> {
        let work = self
            .work
            .take()
            .ok_or_else(|| StoreError::Failed("a change was run twice".into()))?;
        self.value = Some(work(c)?);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.value) {
            (Ok(()), Some(value)) => Ok(value),
            (Ok(()), None) => Err(StoreError::Failed("a change gave no answer".into())),
            (Err(e), _) => Err(e),
        };
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(answer);
    }
}

/// What the handles and the writer thread share: failure counts and their logging.
#[derive(Debug)]
pub(super) struct Shared {
    label: String,
    dropped: AtomicU64,
    failed: AtomicU64,
    drop_log: Mutex<RateLimit>,
    fail_log: Mutex<RateLimit>,
}

impl Shared {
    pub fn new(label: String) -> Shared {
        Shared {
            label,
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            drop_log: Mutex::new(RateLimit::default()),
            fail_log: Mutex::new(RateLimit::default()),
        }
    }

    pub fn stats(&self) -> WriteStats {
        WriteStats {
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// A queued write was refused before reaching the writer.
    pub fn dropped(&self, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(also) = self.drop_log.locked().due() {
            tracing::error!(
                database = %self.label,
                also_dropped = also,
                "a write to the database was dropped: {why}"
            );
        }
    }

    /// `writes` writes (what they were: `what`) did not commit, because of `error`.
    fn failed(&self, writes: usize, what: &str, error: &StoreError) {
        self.failed.fetch_add(writes as u64, Ordering::Relaxed);
        if let Some(also) = self.fail_log.locked().due() {
            tracing::error!(
                database = %self.label,
                writes,
                also_failed = also,
                "cannot save {what} to the database: {error}"
            );
        }
    }
}

/// Lets one log line through per [`LOG_EVERY`], counting the ones held back.
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

pub(super) fn spawn_writer(
    conn: Arc<Mutex<Connection>>,
    rx: Receiver<Op>,
    shared: Arc<Shared>,
    settings: StoreSettings,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kindercam-store".into())
        .spawn(move || {
            Writer {
                conn,
                rx,
                shared,
                settings,
            }
            .run()
        })
}

/// How long a queued write waits for others to share its transaction.
const GATHER: Duration = Duration::from_millis(20);

struct Writer {
    conn: Arc<Mutex<Connection>>,
    rx: Receiver<Op>,
    shared: Arc<Shared>,
    settings: StoreSettings,
}

impl Writer {
    fn run(self) {
        let mut next_prune = Instant::now() + self.settings.prune_every;
        loop {
            let wait = next_prune.saturating_duration_since(Instant::now());
            let first = match self.rx.recv_timeout(wait) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    next_prune = Instant::now() + self.settings.prune_every;
                    continue;
                }
                // Every handle is gone: nothing more can come.
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Whatever else is queued joins this batch: one transaction, one fsync.
            // A queued write (a viewing-log row, a chat message) waits a moment for
            // company, so that viewers arriving one by one do not each cost a
            // commit and an fsync; an acknowledged change, a flush or a stop ends
            // the wait at once.
            let gather_until = matches!(first, Op::Write(_)).then(|| Instant::now() + GATHER);
            let mut batch = vec![first];
            while batch.len() < QUEUE {
                let next = match gather_until {
                    Some(until) if matches!(batch.last(), Some(Op::Write(_))) => {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            self.rx.try_recv().ok()
                        } else {
                            self.rx.recv_timeout(left).ok()
                        }
                    }
                    _ => self.rx.try_recv().ok(),
                };
                match next {
                    Some(op) => batch.push(op),
                    None => break,
                }
            }
            if self.process(batch) {
                return;
            }
            if Instant::now() >= next_prune {
                self.housekeeping();
                next_prune = Instant::now() + self.settings.prune_every;
            }
        }
    }

    /// Carries out a batch in order; `true` when asked to stop.
    fn process(&self, batch: Vec<Op>) -> bool {
        let mut pending = Vec::new();
        for op in batch {
            match op {
                Op::Write(write) => pending.push(*write),
                Op::Ack(ack) => {
                    self.commit(&mut pending);
                    self.acknowledge(ack);
                }
                Op::Flush(done) => {
                    self.commit(&mut pending);
                    let _ = done.send(());
                }
                Op::Stop => {
                    self.commit(&mut pending);
                    return true;
                }
            }
        }
        self.commit(&mut pending);
        false
    }

    /// Commits queued writes as one transaction. A write that breaks a rule of the
    /// schema (a session of a family just deleted) is skipped alone; anything else
    /// (a full disk, an I/O error) loses the batch, logged with SQLite's reason.
    fn commit(&self, pending: &mut Vec<Write>) {
        if pending.is_empty() {
            return;
        }
        let writes = std::mem::take(pending);
        let mut conn = self.conn.locked();
        let mut skipped = 0;
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for write in &writes {
                if let Err(e) = write.apply(&tx) {
                    if tx.is_autocommit() || !concerns_one_write(&e) {
                        return Err(e);
                    }
                    skipped += 1;
                    self.shared.failed(1, write.what(), &StoreError::from(e));
                }
            }
            tx.commit()
        })();
        drop(conn);
        if let Err(e) = result {
            let what = if writes.iter().all(|w| w.what() == writes[0].what()) {
                writes[0].what()
            } else {
                "queued changes (viewing log, chat, sessions)"
            };
            self.shared
                .failed(writes.len() - skipped, what, &StoreError::from(e));
        }
    }

    fn acknowledge(&self, ack: Ack) {
        let Ack { what, mut job } = ack;
        let mut conn = self.conn.locked();
        let result = (|| -> Result<(), StoreError> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            job.run(&tx)?;
            tx.commit()?;
            Ok(())
        })();
        drop(conn);
        if let Err(e) = &result {
            // A refusal (a code already in use) is an answer, not a failure.
            if !matches!(e, StoreError::Conflict(_) | StoreError::Invalid(_)) {
                self.shared.failed(1, what, e);
            }
        }
        job.answer(result);
    }

    fn housekeeping(&self) {
        let mut conn = self.conn.locked();
        let result = (|| -> rusqlite::Result<(usize, usize)> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let pruned = prune(&tx, unix_now(), self.settings.audit_days)?;
            tx.commit()?;
            Ok(pruned)
        })();
        drop(conn);
        match result {
            Ok((views, sessions)) if views + sessions > 0 => {
                tracing::debug!(views, sessions, "pruned the viewing log and sessions")
            }
            Ok(_) => {}
            Err(e) => self
                .shared
                .failed(0, "pruning the viewing log", &StoreError::from(e)),
        }
    }
}

/// An error that rejects one write and leaves the transaction usable.
fn concerns_one_write(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::ConstraintViolation | C::TypeMismatch | C::TooBig) => true,
        Some(_) => false,
        // Not from SQLite: a value that did not convert (an id past i64).
        None => !matches!(e, rusqlite::Error::SqliteFailure(..)),
    }
}

/// An id for SQLite, whose integers are i64; past that it is refused.
pub(super) fn int(n: u64) -> rusqlite::Result<i64> {
    i64::try_from(n).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// A LIMIT or OFFSET for SQLite: beyond i64 means "all" anyway.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---- reads and acknowledged changes ---------------------------------------------

const FAMILY_COLUMNS: &str = "id, name, rooms, max_devices, code_hash, created, last_seen";

fn family_row(row: &Row<'_>) -> rusqlite::Result<Family> {
    let rooms: String = row.get(2)?;
    let rooms = serde_json::from_str(&rooms).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Family {
        id: row.get(0)?,
        name: row.get(1)?,
        rooms,
        max_devices: row.get(3)?,
        code_hash: row.get(4)?,
        created: row.get(5)?,
        last_seen: row.get(6)?,
    })
}

fn rooms_json(rooms: &[String]) -> rusqlite::Result<String> {
    serde_json::to_string(rooms).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(super) fn families(c: &Connection) -> rusqlite::Result<Vec<Family>> {
    c.prepare_cached(&format!(
        "SELECT {FAMILY_COLUMNS} FROM families ORDER BY created, rowid"
    ))?
    .query_map([], family_row)?
    .collect()
}

pub(super) fn family(c: &Connection, id: &str) -> rusqlite::Result<Option<Family>> {
    c.prepare_cached(&format!(
        "SELECT {FAMILY_COLUMNS} FROM families WHERE id = ?1"
    ))?
    .query_row([id], family_row)
    .optional()
}

pub(super) fn family_by_code(
    c: &Connection,
    code_hash: &[u8; 32],
) -> rusqlite::Result<Option<Family>> {
    c.prepare_cached(&format!(
        "SELECT {FAMILY_COLUMNS} FROM families WHERE code_hash = ?1"
    ))?
    .query_row([code_hash], family_row)
    .optional()
}

pub(super) fn create_family(c: &Connection, f: &Family) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO families ({FAMILY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![
        f.id,
        f.name,
        rooms_json(&f.rooms)?,
        f.max_devices,
        f.code_hash,
        f.created,
        f.last_seen
    ])?;
    Ok(())
}

pub(super) fn update_family(
    c: &Connection,
    id: &str,
    patch: &FamilyChange,
) -> rusqlite::Result<Option<Family>> {
    let Some(mut f) = family(c, id)? else {
        return Ok(None);
    };
    if let Some(name) = &patch.name {
        f.name = name.clone();
    }
    if let Some(rooms) = &patch.rooms {
        f.rooms = rooms.clone();
    }
    if let Some(max) = patch.max_devices {
        f.max_devices = max;
    }
    c.prepare_cached("UPDATE families SET name = ?2, rooms = ?3, max_devices = ?4 WHERE id = ?1")?
        .execute(params![id, f.name, rooms_json(&f.rooms)?, f.max_devices])?;
    Ok(Some(f))
}

pub(super) fn set_family_code(
    c: &Connection,
    id: &str,
    code_hash: &[u8; 32],
) -> rusqlite::Result<bool> {
    let changed = c.execute(
        "UPDATE families SET code_hash = ?2 WHERE id = ?1",
        params![id, code_hash],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    c.execute("DELETE FROM sessions WHERE family = ?1", [id])?;
    Ok(true)
}

pub(super) fn delete_family(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    // The foreign key would cascade; saying it keeps the rule visible here.
    c.execute("DELETE FROM sessions WHERE family = ?1", [id])?;
    Ok(c.execute("DELETE FROM families WHERE id = ?1", [id])? > 0)
}

const TOKEN_COLUMNS: &str = "id, name, rooms, scope, token_hash, created, last_used";

fn token_row(row: &Row<'_>) -> rusqlite::Result<LinkToken> {
    let rooms: String = row.get(2)?;
    let rooms = serde_json::from_str(&rooms).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let scope: String = row.get(3)?;
    let scope = Scope::parse(&scope).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown token scope {scope:?}").into(),
        )
    })?;
    Ok(LinkToken {
        id: row.get(0)?,
        name: row.get(1)?,
        rooms,
        scope,
        hash: row.get(4)?,
        created: row.get(5)?,
        last_used: row.get(6)?,
    })
}

pub(super) fn tokens(c: &Connection) -> rusqlite::Result<Vec<LinkToken>> {
    c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, rowid"
    ))?
    .query_map([], token_row)?
    .collect()
}

pub(super) fn create_token(c: &Connection, t: &LinkToken) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![
        t.id,
        t.name,
        rooms_json(&t.rooms)?,
        t.scope.as_str(),
        t.hash,
        t.created,
        t.last_used
    ])?;
    Ok(())
}

pub(super) fn delete_token(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(c.execute("DELETE FROM tokens WHERE id = ?1", [id])? > 0)
}

pub(super) fn schedules(c: &Connection) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    c.prepare_cached("SELECT stream, schedule FROM schedules ORDER BY stream")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

pub(super) fn set_schedule(
    c: &Connection,
    stream: &str,
    schedule: Option<&str>,
) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO schedules (stream, schedule) VALUES (?1, ?2)")?
        .execute(params![stream, schedule])?;
    Ok(())
}

/// The `meta` key keeping how far the cluster's viewing log was read.
const AUDIT_SEQ: &str = "cluster_audit_seq";

pub(super) fn ingest_audit(
    c: &Connection,
    first_id: i64,
    events: &[(String, AuditEvent)],
    seq: u64,
) -> rusqlite::Result<()> {
    for (i, (node, event)) in events.iter().enumerate() {
        match event {
            AuditEvent::Open {
                id,
                kind,
                family,
                family_name,
                name,
                role,
                stream,
                start,
                address,
                until,
            } => {
                c.prepare_cached(
                    r#"INSERT OR IGNORE INTO viewing (id, family, name, role, stream, start, "end",
                           address, family_name, kind, until, node, origin_id)
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9, ?10, ?11, ?12)"#,
                )?
                .execute(params![
                    first_id + i as i64,
                    family,
                    name,
                    role,
                    stream,
                    start,
                    address,
                    family_name,
                    kind,
                    until,
                    node,
                    id
                ])?;
            }
            AuditEvent::Close {
                id,
                end,
                resumed_by,
            } => {
                c.prepare_cached(
                    r#"UPDATE viewing SET "end" = max(start, ?3), resumed_by = coalesce(?4, resumed_by)
                       WHERE node = ?1 AND origin_id = ?2 AND "end" IS NULL"#,
                )?
                .execute(params![node, id, end, resumed_by])?;
            }
        }
    }
    c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![AUDIT_SEQ, seq.to_string()])?;
    Ok(())
}

pub(super) fn audit_seq(c: &Connection) -> rusqlite::Result<u64> {
    let value: Option<String> = c
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [AUDIT_SEQ],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub(super) fn sessions(c: &Connection, now: i64) -> rusqlite::Result<Vec<StoredSession>> {
    c.prepare_cached(
        "SELECT key, role, name, family, code, expires FROM sessions WHERE expires > ?1",
    )?
    .query_map([now], |row| {
        Ok(StoredSession {
            key: row.get(0)?,
            role: row.get(1)?,
            name: row.get(2)?,
            family: row.get(3)?,
            code: row.get(4)?,
            expires: row.get(5)?,
        })
    })?
    .collect()
}

pub(super) fn audit(c: &Connection, since: i64, until: i64) -> rusqlite::Result<Vec<ViewRecord>> {
    c.prepare_cached(
        // Both arms read the index on "end", so a report on recent days reads
        // those days' rows, not the whole log (left to itself, SQLite walks the
        // index on start to save the sort, reading every row before `until`).
        r#"SELECT id, family, name, role, stream, start, "end", address, family_name,
                  kind, until, resumed_by, node
           FROM viewing INDEXED BY viewing_end
           WHERE "end" >= ?1 AND start <= ?2
           UNION ALL
           SELECT id, family, name, role, stream, start, "end", address, family_name,
                  kind, until, resumed_by, node
           FROM viewing INDEXED BY viewing_end
           WHERE "end" IS NULL AND start <= ?2
           ORDER BY start, id"#,
    )?
    .query_map([since, until], |row| {
        Ok(ViewRecord {
            id: ViewId(row.get(0)?),
            family: row.get(1)?,
            name: row.get(2)?,
            role: row.get(3)?,
            stream: row.get(4)?,
            start: row.get(5)?,
            end: row.get(6)?,
            address: row.get(7)?,
            family_name: row.get(8)?,
            kind: row.get(9)?,
            until: row.get(10)?,
            resumed_by: row.get(11)?,
            node: row.get(12)?,
        })
    })?
    .collect()
}

pub(super) fn open_pauses(c: &Connection) -> rusqlite::Result<Vec<OpenPause>> {
    c.prepare_cached(
        r#"SELECT id, stream, coalesce(name, role), start, until FROM viewing
           WHERE kind = 'pause' AND "end" IS NULL AND node IS NULL ORDER BY start, id"#,
    )?
    .query_map([], |row| {
        Ok(OpenPause {
            id: ViewId(row.get(0)?),
            stream: row.get(1)?,
            by: row.get(2)?,
            start: row.get(3)?,
            until: row.get(4)?,
        })
    })?
    .collect()
}

pub(super) fn prune_audit(c: &Connection, before: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(r#"DELETE FROM viewing WHERE "end" < ?1"#)?
        .execute([before])
}

pub(super) fn chat_history(
    c: &Connection,
    room: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(u64, String)>> {
    c.prepare_cached(
        "SELECT id, text FROM \
         (SELECT id, text FROM chat WHERE room = ?1 ORDER BY id DESC LIMIT ?2) \
         ORDER BY id",
    )?
    .query_map(params![room, count(limit)], |row| {
        let id: i64 = row.get(0)?;
        let id = u64::try_from(id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })?;
        Ok((id, row.get(1)?))
    })?
    .collect()
}

pub(super) fn stream_masks(c: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    c.prepare_cached("SELECT stream, masks FROM stream_masks ORDER BY stream")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

pub(super) fn set_stream_masks(
    c: &Connection,
    stream: &str,
    masks: &str,
    now: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO stream_masks (stream, masks, updated) VALUES (?1, ?2, ?3) \
         ON CONFLICT (stream) DO UPDATE SET masks = excluded.masks, updated = excluded.updated",
    )?
    .execute(params![stream, masks, now])?;
    Ok(())
}
