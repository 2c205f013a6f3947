//! Browser sessions: a random token in an HttpOnly cookie maps to a role and a
//! chat name. Only the token's SHA-256 is kept, sessions expire, their number is
//! bounded, and ending one (logout, or its role's code changing) signals every
//! socket opened with it to close.
//!
//! Sessions are kept in the state directory (mode 0600) so that a power cut or a
//! restart does not log every family out: the pages reconnect by themselves. Each
//! records a fingerprint of its role's code; a session whose code changed while
//! the daemon was down is dropped on load. A failed write (full disk) is logged
//! and the session still works until the next restart.
//!
//! The disk write happens after the session map is unlocked: every WebSocket
//! handshake looks its session up in that map, and must not wait on an fsync
//! to a slow SD card. Snapshots are numbered so a late, older one never
//! overwrites a newer one.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{DisplayName, Role};
use crate::sync::Locked;

/// Sessions kept at most; the oldest is dropped to make room.
const MAX_SESSIONS: usize = 10_000;
/// File in the state directory holding sessions.
pub const SESSIONS_FILE: &str = "sessions.json";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub struct Session {
    /// Unique for the daemon's lifetime; chat moderation mutes by it.
    pub id: u64,
    pub role: Role,
    /// The family whose code opened it; `None` for a role's code.
    pub family: Option<String>,
    pub name: DisplayName,
    pub expires: SystemTime,
    /// Of the role's code when the session began.
    fingerprint: [u8; 32],
    ended: watch::Sender<bool>,
}

impl Session {
    /// Turns true when the session is ended (logout, code change): sockets select on it.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    pub fn is_ended(&self) -> bool {
        *self.ended.borrow() || SystemTime::now() >= self.expires
    }
}

/// A session as stored on disk: no token, only its hash.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    name: String,
    expires_unix: u64,
    code: String,
}

#[derive(Debug)]
pub struct SessionStore {
    sessions: Mutex<HashMap<[u8; 32], Arc<Session>>>,
    ttl: Duration,
    file: Option<PathBuf>,
    /// Numbers the snapshots taken under the map lock, in the order of changes.
    snapshots: AtomicU64,
    /// Held while writing the file; holds the number of the snapshot last written.
    written: Mutex<u64>,
}

/// The sessions as they were at one change, to be written after the map is unlocked.
struct Snapshot {
    number: u64,
    sessions: Vec<([u8; 32], Arc<Session>)>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl SessionStore {
    /// A store kept in memory only.
    pub fn new(ttl: Duration) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            ttl,
            file: None,
            snapshots: AtomicU64::new(0),
            written: Mutex::new(0),
        }
    }

    /// A store kept in `file`, loading the sessions still valid: not expired, and
    /// made with the code `current_code(role)` still in force.
    pub fn load(
        ttl: Duration,
        file: PathBuf,
        current_code: impl Fn(Role, Option<&str>) -> Option<[u8; 32]>,
    ) -> SessionStore {
        let mut sessions = HashMap::new();
        match fs::read_to_string(&file) {
            Ok(text) => match serde_json::from_str::<Vec<Stored>>(&text) {
                Ok(stored) => {
                    let now = SystemTime::now();
                    for s in stored {
                        let expires = UNIX_EPOCH + Duration::from_secs(s.expires_unix);
                        let (Some(k), Some(code), Ok(name)) =
                            (unhex(&s.key), unhex(&s.code), DisplayName::parse(&s.name))
                        else {
                            continue;
                        };
                        if expires <= now || Some(code) != current_code(s.role, s.family.as_deref())
                        {
                            continue;
                        }
                        let session = Session {
                            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                            role: s.role,
                            family: s.family,
                            name,
                            expires,
                            fingerprint: code,
                            ended: watch::Sender::new(false),
                        };
                        sessions.insert(k, Arc::new(session));
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unreadable sessions file")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read sessions file")
            }
        }
        if !sessions.is_empty() {
            tracing::info!(sessions = sessions.len(), "restored login sessions");
        }
        SessionStore {
            sessions: Mutex::new(sessions),
            ttl,
            file: Some(file),
            snapshots: AtomicU64::new(0),
            written: Mutex::new(0),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the snapshot to save; called with the map locked, so the numbers
    /// follow the order of the changes. Cheap: it clones pointers, not sessions.
    fn snapshot(&self, sessions: &HashMap<[u8; 32], Arc<Session>>) -> Option<Snapshot> {
        self.file.as_ref()?;
        Some(Snapshot {
            number: self.snapshots.fetch_add(1, Ordering::Relaxed) + 1,
            sessions: sessions.iter().map(|(k, s)| (*k, s.clone())).collect(),
        })
    }

    /// Writes a snapshot out (atomically), with the map unlocked. A snapshot
    /// older than the one already on disk is dropped: the newer one has it all.
    fn persist(&self, snapshot: Option<Snapshot>) {
        let (Some(file), Some(snapshot)) = (&self.file, snapshot) else {
            return;
        };
        let mut written = self.written.locked();
        if *written > snapshot.number {
            return;
        }
        let stored: Vec<Stored> = snapshot
            .sessions
            .iter()
            .map(|(k, s)| Stored {
                key: hex(k),
                role: s.role,
                family: s.family.clone(),
                name: s.name.to_string(),
                expires_unix: s
                    .expires
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                code: hex(&s.fingerprint),
            })
            .collect();
        let json = serde_json::to_string(&stored).unwrap_or_default();
        if let Err(e) = crate::state_file::write_private(file, json.as_bytes()) {
            tracing::error!(file = %file.display(), error = %e, "cannot save sessions; they will not survive a restart");
        }
        *written = snapshot.number;
    }

    /// Starts a session; returns the token for the cookie.
    pub fn create(
        &self,
        role: Role,
        name: DisplayName,
        family: Option<String>,
        fingerprint: [u8; 32],
    ) -> anyhow::Result<(String, Arc<Session>)> {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(super::codes::random_bytes::<32>()?);
        let session = Arc::new(Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            role,
            family,
            name,
            expires: SystemTime::now() + self.ttl,
            fingerprint,
            ended: watch::Sender::new(false),
        });
        let mut sessions = self.sessions.locked();
        if sessions.len() >= MAX_SESSIONS {
            let now = SystemTime::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| *k)
                {
                    if let Some(s) = sessions.remove(&oldest) {
                        s.ended.send_replace(true);
                    }
                }
            }
        }
        sessions.insert(key(&token), session.clone());
        let snapshot = self.snapshot(&sessions);
        drop(sessions);
        self.persist(snapshot);
        Ok((token, session))
    }

    /// The live session for `token`, if any.
    pub fn get(&self, token: &str) -> Option<Arc<Session>> {
        let sessions = self.sessions.locked();
        sessions.get(&key(token)).filter(|s| !s.is_ended()).cloned()
    }

    /// Logout: the token stops working and its sockets close.
    pub fn end(&self, token: &str) -> bool {
        let mut sessions = self.sessions.locked();
        let removed = sessions.remove(&key(token));
        let Some(session) = removed else {
            return false;
        };
        session.ended.send_replace(true);
        let snapshot = self.snapshot(&sessions);
        drop(sessions);
        self.persist(snapshot);
        true
    }

    /// Ends every session of `role` (its code changed); returns how many.
    pub fn end_role(&self, role: Role) -> usize {
        let mut sessions = self.sessions.locked();
        let before = sessions.len();
        sessions.retain(|_, s| {
            if s.role == role {
                s.ended.send_replace(true);
                false
            } else {
                true
            }
        });
        let ended = before - sessions.len();
        if ended > 0 {
            let snapshot = self.snapshot(&sessions);
            drop(sessions);
            self.persist(snapshot);
        }
        ended
    }

    pub fn len(&self) -> usize {
        self.sessions.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> DisplayName {
        DisplayName::parse(n).unwrap()
    }

    const CODE: [u8; 32] = [7; 32];

    #[test]
    fn logout_ends_the_session_and_signals_sockets() {
        let store = SessionStore::new(Duration::from_secs(60));
        let (token, session) = store.create(Role::Viewer, name("Ana"), None, CODE).unwrap();
        let ended = session.ended();
        assert_eq!(store.get(&token).unwrap().name.as_str(), "Ana");
        assert!(store.end(&token));
        assert!(store.get(&token).is_none());
        assert!(*ended.borrow());
    }

    #[test]
    fn expired_sessions_are_refused() {
        let store = SessionStore::new(Duration::from_millis(0));
        let (token, _) = store.create(Role::Staff, name("x"), None, CODE).unwrap();
        assert!(store.get(&token).is_none());
    }

    #[test]
    fn ending_a_role_keeps_the_other() {
        let store = SessionStore::new(Duration::from_secs(60));
        let (viewer, _) = store.create(Role::Viewer, name("v"), None, CODE).unwrap();
        let (staff, _) = store.create(Role::Staff, name("s"), None, CODE).unwrap();
        assert_eq!(store.end_role(Role::Viewer), 1);
        assert!(store.get(&viewer).is_none());
        assert!(store.get(&staff).is_some());
    }

    #[test]
    fn a_slow_disk_does_not_block_session_lookups() {
        let dir = std::env::temp_dir().join(format!("kc-sessions-slow-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(SESSIONS_FILE);
        let store = Arc::new(SessionStore::load(
            Duration::from_secs(3600),
            file.clone(),
            |_, _| Some(CODE),
        ));
        let (existing, _) = store.create(Role::Viewer, name("Ana"), None, CODE).unwrap();

        // The disk is busy: whoever writes next waits, as on a stalled SD card.
        let disk = store.written.locked();
        let (created_tx, created_rx) = std::sync::mpsc::channel();
        let login = {
            let store = store.clone();
            std::thread::spawn(move || {
                let (token, _) = store
                    .create(Role::Staff, name("Profe"), None, CODE)
                    .unwrap();
                created_tx.send(token).unwrap();
            })
        };
        // The login's session is in the map before its write, and lookups (each
        // WebSocket handshake does one) still answer while the write waits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the login never reached the map"
            );
            std::thread::yield_now();
        }
        assert_eq!(store.get(&existing).unwrap().name.as_str(), "Ana");
        assert!(
            created_rx.try_recv().is_err(),
            "the login waits for its write"
        );

        drop(disk);
        let token = created_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        login.join().unwrap();
        let restarted = SessionStore::load(Duration::from_secs(3600), file, |_, _| Some(CODE));
        assert_eq!(
            restarted.get(&token).unwrap().name.as_str(),
            "Profe",
            "the write landed"
        );
        assert!(restarted.get(&existing).is_some());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_older_snapshot_never_overwrites_a_newer_one() {
        let dir = std::env::temp_dir().join(format!("kc-sessions-order-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(SESSIONS_FILE);
        let store = SessionStore::load(Duration::from_secs(3600), file.clone(), |_, _| Some(CODE));
        let (first, _) = store.create(Role::Viewer, name("Ana"), None, CODE).unwrap();
        // A snapshot taken now but written late (its thread was descheduled)...
        let stale = store.snapshot(&store.sessions.locked());
        // ...while a logout lands in between.
        assert!(store.end(&first));
        store.persist(stale);
        let restarted = SessionStore::load(Duration::from_secs(3600), file, |_, _| Some(CODE));
        assert!(restarted.get(&first).is_none(), "the logout stays on disk");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sessions_survive_a_restart_unless_their_code_changed() {
        let dir = std::env::temp_dir().join(format!("kc-sessions-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(SESSIONS_FILE);
        let ttl = Duration::from_secs(3600);
        let store = SessionStore::load(ttl, file.clone(), |_, _| Some(CODE));
        let (viewer, _) = store.create(Role::Viewer, name("Ana"), None, CODE).unwrap();
        let (staff, _) = store
            .create(Role::Staff, name("Profe"), None, CODE)
            .unwrap();
        let (gone, _) = store
            .create(Role::Viewer, name("Luis"), None, CODE)
            .unwrap();
        store.end(&gone);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            !fs::read_to_string(&file).unwrap().contains(&viewer),
            "tokens are not stored"
        );
        drop(store);

        let restarted = SessionStore::load(ttl, file.clone(), |_, _| Some(CODE));
        assert_eq!(restarted.get(&viewer).unwrap().name.as_str(), "Ana");
        assert!(restarted.get(&staff).is_some());
        assert!(
            restarted.get(&gone).is_none(),
            "logged-out sessions stay out"
        );

        // The viewer code changed while the daemon was down.
        let changed = SessionStore::load(ttl, file, |role, _| {
            Some(if role == Role::Viewer { [9; 32] } else { CODE })
        });
        assert!(changed.get(&viewer).is_none());
        assert!(changed.get(&staff).is_some());
        fs::remove_dir_all(dir).unwrap();
    }
}
