//! kindercam's one persistence layer: families, link tokens, login sessions, the viewing log,
//! chat history, and the privacy masks and opening hours set by the admin, kept in
//! one SQLite database, `kindercam.db` in the state directory. It replaces the JSON
//! files (`sessions.json`, `chat-history.json`), which are imported on the first
//! start and kept beside it as `*.migrated`.
//!
//! Durability: WAL mode with `synchronous=FULL`, so a committed write survives a
//! power cut, and a process killed mid-write reopens with every commit intact. The
//! schema is versioned (`PRAGMA user_version`); migrations run at open, each in its
//! own transaction (see `migrate.rs`).
//!
//! Threading: the async workers never wait for the disk. Every write goes through a
//! bounded queue to one writer thread, which commits whatever is queued as one
//! transaction (one fsync for a burst of writes). Writes come in two kinds:
//! - *queued* ([`Store::audit_open`], [`Store::chat_append`], [`Store::put_session`],
//!   ...): never block; when the queue is full the write is dropped, counted and
//!   logged. Safe to call from async code.
//! - *acknowledged* (family changes, [`Store::prune_audit`]): the caller blocks until
//!   its change is committed (in a transaction of its own: all or nothing) and learns
//!   whether it was applied. Call them from a blocking thread (a tiny_http worker or
//!   `spawn_blocking`).
//!
//! Reads use their own read-only connection (WAL lets it read while the writer
//! writes) and block for the query: call them off the async workers too.
//!
//! A failing write (a full SD card, an I/O error) is logged with SQLite's reason and
//! reported to acknowledged callers as an error; the writer thread keeps going, and
//! writes succeed again once the disk has room. Nothing here panics or stops the
//! daemon because of the disk.
//!
//! Backup and restore: `kindercam backup FILE` ([`backup()`]) copies the live
//! database with SQLite's online backup API while the daemon runs. To restore: stop
//! the daemon, copy the backup over `kindercam.db` in the state directory, remove
//! `kindercam.db-wal` and `kindercam.db-shm` beside it, and start the daemon.

mod backup;
mod csv;
mod migrate;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use backup::{backup, BackupReport};
pub use csv::{audit_csv, iso_utc};

use crate::privacy::Mask;
use crate::sync::Locked;
use sqlite::{Ack, Op, Shared, Write};

/// The database file in the state directory.
pub const DB_FILE: &str = "kindercam.db";

/// Writes waiting for the writer thread at most; more are dropped (and counted).
const QUEUE: usize = 4096;

/// Seconds since the UNIX epoch, the unit of every time in the store.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub use crate::auth::families::{Family, FamilyChange};
pub use crate::auth::tokens::LinkToken;

/// A login session as stored: the SHA-256 of its token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the cookie's token.
    pub key: [u8; 32],
    /// `viewer`, `staff` or `admin`; the database refuses anything else.
    pub role: String,
    /// The chat name chosen at login.
    pub name: String,
    /// The family logged in, for family sessions; ends with the family.
    pub family: Option<String>,
    /// Fingerprint of the code the session was made with, to drop it when the code changes.
    pub code: [u8; 32],
    /// UNIX seconds.
    pub expires: i64,
}

/// Which sessions [`Store::delete_sessions`] ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionsOf {
    /// Every session of a role (`viewer`, `staff`, `admin`): its code changed.
    Role(String),
    /// Every session of a family.
    Family(String),
}

/// The start of a viewing session, for the viewing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStart {
    pub family: Option<String>,
    /// The family's display name at the time, kept beside its id.
    pub family_name: Option<String>,
    /// The viewer's chat name, when logged in with one.
    pub name: Option<String>,
    pub role: String,
    pub stream: String,
    /// UNIX seconds.
    pub start: i64,
    /// The client's address as the daemon saw it.
    pub address: String,
}

/// The start of a teacher's pause, for the viewing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseStart {
    /// The teacher's chat name, when logged in with one.
    pub name: Option<String>,
    pub role: String,
    pub stream: String,
    /// UNIX seconds: when it was paused, and when it is to resume by itself.
    pub start: i64,
    pub until: i64,
    pub address: String,
}

/// A pause that had not ended when the daemon last stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPause {
    pub id: ViewId,
    pub stream: String,
    /// Who paused it: the chat name, or the role for a login without one.
    pub by: String,
    pub start: i64,
    pub until: i64,
}

/// A row of the viewing log, named before it is written, so that the caller can
/// close it without waiting for the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewId(i64);

impl ViewId {
    pub fn get(self) -> i64 {
        self.0
    }
}

/// One entry of the log: a viewing session, or a teacher's pause. Serialises as
/// the admin API's audit entries: `{"kind", "family", "name", "role", "stream",
/// "start", "end", "address", "family_name"}`, and for a pause also `"until"`
/// (when it was set to resume by itself) and `"resumed_by"` (who resumed it
/// early; null when it ran out or a new pause replaced it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ViewRecord {
    #[serde(skip)]
    pub id: ViewId,
    pub family: Option<String>,
    pub name: Option<String>,
    pub role: String,
    pub stream: String,
    pub start: i64,
    /// `None` while the session is still open.
    pub end: Option<i64>,
    pub address: String,
    /// The family's display name when it watched.
    pub family_name: Option<String>,
    /// `watch` or `pause`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_by: Option<String>,
    /// In a cluster, the node the viewer watched on (`None`: this node; the
    /// admin API names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A change to the viewing log as a cluster's nodes tell each other of it:
/// a row opened (a viewing or a pause), or closed. `id` is the row's id on the
/// node that logged it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum AuditEvent {
    Open {
        id: i64,
        kind: String,
        family: Option<String>,
        family_name: Option<String>,
        name: Option<String>,
        role: String,
        stream: String,
        start: i64,
        address: String,
        until: Option<i64>,
    },
    Close {
        id: i64,
        end: i64,
        resumed_by: Option<String>,
    },
}

/// Who hears of this node's viewing-log changes (a cluster's publisher); it
/// must not block.
struct AuditTap(Box<dyn Fn(AuditEvent) + Send + Sync>);

impl fmt::Debug for AuditTap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditTap")
    }
}

/// How the store keeps itself tidy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Viewing sessions that ended longer ago than this are deleted (0: as soon as
    /// they end).
    pub audit_days: u32,
    /// How often the writer thread prunes the log and expired sessions, besides at open.
    pub prune_every: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            audit_days: 30,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// Why the store could not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The disk (or the database's size limit) is full.
    Full,
    /// The database or its directory cannot be written; the detail says which.
    ReadOnly(String),
    /// A uniqueness rule: another family has this id or this code.
    Conflict(String),
    /// A value the schema refuses (a session of a family that does not exist, a
    /// role other than viewer, staff or admin), with SQLite's words.
    Invalid(String),
    /// The store was closed: the writer thread is gone.
    Closed,
    /// Anything else SQLite reported (an I/O error, a damaged file), with its words.
    Failed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => f.write_str("the disk is full"),
            StoreError::ReadOnly(why) => write!(f, "the database cannot be written: {why}"),
            StoreError::Conflict(why) => f.write_str(why),
            StoreError::Invalid(why) => write!(f, "refused by the database: {why}"),
            StoreError::Closed => f.write_str("the database is closed"),
            StoreError::Failed(why) => write!(f, "database error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DiskFull) => StoreError::Full,
            Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied) => {
                StoreError::ReadOnly(e.to_string())
            }
            Some(C::ConstraintViolation) => {
                let unique = matches!(
                    &e,
                    rusqlite::Error::SqliteFailure(f, _)
                        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                );
                let text = e.to_string();
                if !unique {
                    StoreError::Invalid(text)
                } else if text.contains("families.code_hash") {
                    StoreError::Conflict("another family has this code".into())
                } else if text.contains("families.id") {
                    StoreError::Conflict("a family with this id exists".into())
                } else {
                    StoreError::Conflict(text)
                }
            }
            _ => StoreError::Failed(e.to_string()),
        }
    }
}

/// Writes that did not reach the disk, since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Queued writes refused because the queue was full or the store closed.
    pub dropped: u64,
    /// Writes (queued or acknowledged) whose commit failed.
    pub failed: u64,
}

/// A handle on the store; clones share it. The writer stops, after committing what
/// was queued, when the last handle is dropped or [`Store::close`] is called; both
/// wait for that commit, so do either at shutdown, off the async workers.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: Option<PathBuf>,
    tx: SyncSender<Op>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
    /// The id the next viewing session gets; seeded from the log at open.
    next_view: AtomicI64,
    shared: Arc<Shared>,
    audit_tap: std::sync::OnceLock<AuditTap>,
    /// Rows closed at open that an unclean stop had left open, until a
    /// cluster's publisher takes them.
    leftovers: Mutex<Vec<(i64, i64)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Blocks only while the queue is full, which the writer is draining; fails
        // at once if the writer is gone (`close` was called).
        let _ = self.tx.send(Op::Stop);
        if let Some(writer) = self.writer.locked().take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Opens (or creates) `kindercam.db` in `state_dir`: sets it up, runs the schema
    /// migrations, imports the old JSON state files once, closes viewing sessions
    /// left open by a crash, prunes, and starts the writer thread. Fails when the
    /// database cannot be opened or written at all (an unwritable state directory,
    /// a damaged file, a database from a newer kindercam): the caller then runs on
    /// [`Store::in_memory`].
    pub fn open(state_dir: &Path, settings: StoreSettings) -> Result<Store, StoreError> {
        let opened = sqlite::open_file(state_dir, &settings)?;
        Store::start(opened, settings)
    }

    /// A store with the same behaviour that keeps everything in memory only, for
    /// running without a writable state directory, and for tests.
    pub fn in_memory(settings: StoreSettings) -> Result<Store, StoreError> {
        let opened = sqlite::open_memory(&settings)?;
        Store::start(opened, settings)
    }

    fn start(opened: sqlite::Opened, settings: StoreSettings) -> Result<Store, StoreError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared::new(opened.label.clone()));
        let writer = sqlite::spawn_writer(opened.writer, rx, shared.clone(), settings)
            .map_err(|e| StoreError::Failed(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: opened.path,
                tx,
                writer: Mutex::new(Some(writer)),
                reader: opened.reader,
                next_view: AtomicI64::new(opened.last_view_id + 1),
                shared,
                audit_tap: std::sync::OnceLock::new(),
                leftovers: Mutex::new(opened.leftovers),
            }),
        })
    }

    /// The database file, or `None` for a store in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    pub fn write_stats(&self) -> WriteStats {
        self.inner.shared.stats()
    }

    /// Waits until every write queued so far is committed (or has failed).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Op::Flush(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)
    }

    /// Commits what is queued and stops the writer; later writes fail with
    /// [`StoreError::Closed`]. Blocks until the writer has finished.
    pub fn close(&self) {
        let _ = self.inner.tx.send(Op::Stop);
        if let Some(writer) = self.inner.writer.locked().take() {
            let _ = writer.join();
        }
    }

    // ---- the writer's two ways in -------------------------------------------

    /// Queues a write; never blocks. A full queue drops it (counted and logged).
    fn queue(&self, write: Write) {
        match self.inner.tx.try_send(Op::Write(Box::new(write))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.inner.shared.dropped("the write queue is full"),
            Err(TrySendError::Disconnected(_)) => {
                self.inner.shared.dropped("the database is closed")
            }
        }
    }

    /// Runs `work` in a transaction of its own on the writer thread and waits for
    /// the commit: the answer is `work`'s result once committed, or why not.
    fn acknowledged<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let ack = Ack::new(what, work, tx);
        self.inner
            .tx
            .send(Op::Ack(ack))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Reads with the read-only connection.
    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.inner.reader.locked();
        query(&conn).map_err(StoreError::from)
    }

    // ---- families ------------------------------------------------------------

    /// Every family, oldest first.
    pub fn families(&self) -> Result<Vec<Family>, StoreError> {
        self.read(sqlite::families)
    }

    pub fn family(&self, id: &str) -> Result<Option<Family>, StoreError> {
        self.read(|c| sqlite::family(c, id))
    }

    /// The family whose code hashes to `code_hash`, for logins.
    pub fn family_by_code(&self, code_hash: &[u8; 32]) -> Result<Option<Family>, StoreError> {
        self.read(|c| sqlite::family_by_code(c, code_hash))
    }

    /// Adds a family (acknowledged). [`StoreError::Conflict`] when its id or its
    /// code is taken.
    pub fn create_family(&self, family: &Family) -> Result<(), StoreError> {
        let family = family.clone();
        self.acknowledged("a new family", move |c| {
            sqlite::create_family(c, &family).map_err(StoreError::from)
        })
    }

    /// Changes a family (acknowledged); `None` when there is no such family.
    pub fn update_family(
        &self,
        id: &str,
        patch: FamilyChange,
    ) -> Result<Option<Family>, StoreError> {
        let id = id.to_owned();
        self.acknowledged("a family change", move |c| {
            sqlite::update_family(c, &id, &patch).map_err(StoreError::from)
        })
    }

    /// Gives a family a new code and ends its sessions, in one transaction
    /// (acknowledged); `false` when there is no such family.
    pub fn set_family_code(&self, id: &str, code_hash: [u8; 32]) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.acknowledged("a family's new code", move |c| {
            sqlite::set_family_code(c, &id, &code_hash).map_err(StoreError::from)
        })
    }

    /// Deletes a family and its sessions (acknowledged); `false` when there is no
    /// such family. Its rows in the viewing log stay.
    pub fn delete_family(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.acknowledged("a family's removal", move |c| {
            sqlite::delete_family(c, &id).map_err(StoreError::from)
        })
    }

    /// Records that a family was seen at `unix_s` (queued; never moves it back).
    pub fn touch_family(&self, id: &str, unix_s: i64) {
        self.queue(Write::TouchFamily {
            id: id.to_owned(),
            at: unix_s,
        });
    }

    // ---- link tokens -----------------------------------------------------------

    /// Every link token, oldest first (their hashes; the tokens are never kept).
    pub fn tokens(&self) -> Result<Vec<LinkToken>, StoreError> {
        self.read(sqlite::tokens)
    }

    /// Adds a link token (acknowledged). [`StoreError::Conflict`] when its id or
    /// hash is taken.
    pub fn create_token(&self, token: &LinkToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.acknowledged("a new link token", move |c| {
            sqlite::create_token(c, &token).map_err(StoreError::from)
        })
    }

    /// Deletes a link token (acknowledged); `false` when there is no such token.
    /// Its rows in the viewing log stay.
    pub fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.acknowledged("a link token's removal", move |c| {
            sqlite::delete_token(c, &id).map_err(StoreError::from)
        })
    }

    /// Records that a link token was used at `unix_s` (queued; never moves it back).
    pub fn touch_token(&self, id: &str, unix_s: i64) {
        self.queue(Write::TouchToken {
            id: id.to_owned(),
            at: unix_s,
        });
    }

    // ---- sessions --------------------------------------------------------------

    /// The sessions not yet expired.
    pub fn sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        let now = unix_now();
        self.read(|c| sqlite::sessions(c, now))
    }

    /// Saves a session, replacing one with the same key (queued).
    pub fn put_session(&self, session: StoredSession) {
        self.queue(Write::PutSession(session));
    }

    /// Deletes a session: logout (queued).
    pub fn delete_session(&self, key: [u8; 32]) {
        self.queue(Write::DeleteSession(key));
    }

    /// Deletes every session of a role or a family (queued).
    pub fn delete_sessions(&self, which: SessionsOf) {
        self.queue(Write::DeleteSessions(which));
    }

    // ---- the viewing log -------------------------------------------------------

    /// Starts a row of the viewing log (queued) and returns its id at once.
    pub fn audit_open(&self, start: ViewStart) -> ViewId {
        self.open_view(start, "watch")
    }

    /// Starts a row of kind `token` (queued): a viewing through a link token,
    /// whose `name` is the token's name.
    pub fn audit_open_token(&self, start: ViewStart) -> ViewId {
        self.open_view(start, "token")
    }

    fn open_view(&self, start: ViewStart, kind: &'static str) -> ViewId {
        let id = ViewId(self.inner.next_view.fetch_add(1, Ordering::Relaxed));
        self.tell(|| AuditEvent::Open {
            id: id.0,
            kind: kind.to_owned(),
            family: start.family.clone(),
            family_name: start.family_name.clone(),
            name: start.name.clone(),
            role: start.role.clone(),
            stream: start.stream.clone(),
            start: start.start,
            address: start.address.clone(),
            until: None,
        });
        self.queue(Write::AuditOpen(id, start, kind));
        id
    }

    /// Ends a row of the viewing log at `end` (queued).
    pub fn audit_close(&self, id: ViewId, end: i64) {
        self.tell(|| AuditEvent::Close {
            id: id.0,
            end,
            resumed_by: None,
        });
        self.queue(Write::AuditClose(id, end));
    }

    /// Starts a pause's row of the log (queued) and returns its id at once.
    pub fn pause_open(&self, start: PauseStart) -> ViewId {
        let id = ViewId(self.inner.next_view.fetch_add(1, Ordering::Relaxed));
        self.tell(|| AuditEvent::Open {
            id: id.0,
            kind: "pause".to_owned(),
            family: None,
            family_name: None,
            name: start.name.clone(),
            role: start.role.clone(),
            stream: start.stream.clone(),
            start: start.start,
            address: start.address.clone(),
            until: Some(start.until),
        });
        self.queue(Write::PauseOpen(id, start));
        id
    }

    /// Ends a pause's row at `end` (queued); `resumed_by` is who resumed it early.
    pub fn pause_close(&self, id: ViewId, end: i64, resumed_by: Option<String>) {
        self.tell(|| AuditEvent::Close {
            id: id.0,
            end,
            resumed_by: resumed_by.clone(),
        });
        self.queue(Write::PauseClose(id, end, resumed_by));
    }

    /// Has `tap` told of every row this node opens or closes in the viewing log
    /// from now on (a cluster shares them); it must not block. Once per store.
    pub fn tap_audit(&self, tap: impl Fn(AuditEvent) + Send + Sync + 'static) {
        let _ = self.inner.audit_tap.set(AuditTap(Box::new(tap)));
    }

    /// The closes of the rows an unclean stop had left open (closed at open),
    /// once: a cluster's other nodes heard them open.
    pub fn take_leftover_closes(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.inner.leftovers.locked())
            .into_iter()
            .map(|(id, end)| AuditEvent::Close {
                id,
                end,
                resumed_by: None,
            })
            .collect()
    }

    fn tell(&self, event: impl FnOnce() -> AuditEvent) {
        if let Some(tap) = self.inner.audit_tap.get() {
            (tap.0)(event());
        }
    }

    /// Adds rows other nodes of a cluster logged, `(node, event)`, and records
    /// that the cluster's log was read up to `seq`, in one transaction
    /// (acknowledged). The same event twice changes nothing.
    pub fn ingest_audit(
        &self,
        events: Vec<(String, AuditEvent)>,
        seq: u64,
    ) -> Result<(), StoreError> {
        let first = self
            .inner
            .next_view
            .fetch_add(events.len() as i64, Ordering::Relaxed);
        self.acknowledged("the cluster's viewing log", move |c| {
            sqlite::ingest_audit(c, first, &events, seq).map_err(StoreError::from)
        })
    }

    /// How far the cluster's viewing log was read into this database (0: not yet).
    pub fn audit_seq(&self) -> Result<u64, StoreError> {
        self.read(sqlite::audit_seq)
    }

    /// The pauses not yet ended in the log: those that were running when the
    /// daemon stopped.
    pub fn open_pauses(&self) -> Result<Vec<OpenPause>, StoreError> {
        self.read(sqlite::open_pauses)
    }

    /// The viewing sessions overlapping `[since, until]` (UNIX seconds), by start:
    /// started by `until`, and still open or ended at `since` or later.
    pub fn audit(&self, since: i64, until: i64) -> Result<Vec<ViewRecord>, StoreError> {
        self.read(|c| sqlite::audit(c, since, until))
    }

    /// Deletes the viewing sessions that ended before `before` (acknowledged);
    /// returns how many. The store also does this itself, per [`StoreSettings`].
    pub fn prune_audit(&self, before: i64) -> Result<usize, StoreError> {
        self.acknowledged("pruning the viewing log", move |c| {
            sqlite::prune_audit(c, before).map_err(StoreError::from)
        })
    }

    // ---- opening hours ----------------------------------------------------------

    /// The opening hours the admin set, per room: the schedule's JSON, or `None`
    /// where the admin made the room always open.
    pub fn schedules(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.read(sqlite::schedules)
    }

    /// Sets a room's opening hours (acknowledged): the schedule's JSON, or `None`
    /// for always open. Either replaces what the config file says for the room.
    pub fn set_schedule(&self, stream: &str, schedule: Option<String>) -> Result<(), StoreError> {
        let stream = stream.to_owned();
        self.acknowledged("a room's opening hours", move |c| {
            sqlite::set_schedule(c, &stream, schedule.as_deref()).map_err(StoreError::from)
        })
    }

    // ---- chat history ------------------------------------------------------------

    /// The newest `limit` messages of `room` as `(id, text)`, oldest first.
    pub fn chat_history(&self, room: &str, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        self.read(|c| sqlite::chat_history(c, room, limit))
    }

    /// Adds a message to `room`'s history and keeps only the newest `keep` (queued).
    pub fn chat_append(&self, room: &str, id: u64, text: &str, keep: usize) {
        self.queue(Write::ChatAppend {
            room: room.to_owned(),
            id,
            text: text.to_owned(),
            keep,
        });
    }

    /// Removes a message from `room`'s history: moderation (queued).
    pub fn chat_delete(&self, room: &str, id: u64) {
        self.queue(Write::ChatDelete {
            room: room.to_owned(),
            id,
        });
    }

    // ---- privacy masks ---------------------------------------------------------------

    /// The masks the admin API stored, by stream name. A record that no longer
    /// reads as a mask (a damaged file, a hand edit) fails closed: that stream's
    /// whole picture is masked, and the problem is logged.
    pub fn stream_masks(&self) -> Result<BTreeMap<String, Mask>, StoreError> {
        let rows = self.read(sqlite::stream_masks)?;
        Ok(rows
            .into_iter()
            .map(|(stream, json)| {
                let mask = Mask::from_json(&json).unwrap_or_else(|e| {
                    tracing::error!(
                        stream, error = %e,
                        "the stored privacy mask cannot be read; the whole picture is masked \
                         until it is set again"
                    );
                    Mask::full()
                });
                (stream, mask)
            })
            .collect())
    }

    /// Stores `mask` as stream `stream`'s (acknowledged): it replaces the one stored
    /// before, and an empty mask is kept as such.
    pub fn set_stream_masks(&self, stream: &str, mask: &Mask) -> Result<(), StoreError> {
        let stream = stream.to_owned();
        let json = serde_json::to_string(mask)
            .map_err(|e| StoreError::Invalid(format!("a mask that is not JSON: {e}")))?;
        let now = unix_now();
        self.acknowledged("a stream's privacy masks", move |c| {
            sqlite::set_stream_masks(c, &stream, &json, now).map_err(StoreError::from)
        })
    }

    /// Runs `work` on the writer's connection, in a transaction: tests set
    /// `max_page_count` with it (SQLite then answers SQLITE_FULL exactly as on a
    /// full disk) and read the writer's settings.
    #[cfg(test)]
    fn on_writer<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.acknowledged("test work", move |c| work(c).map_err(StoreError::from))
    }
}

#[cfg(test)]
mod tests;
