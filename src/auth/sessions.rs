//! Browser sessions: a random token in an HttpOnly cookie maps to a role, a
//! family (for a family's code) and a chat name. Only the token's SHA-256 is
//! kept, sessions expire, their number is bounded (a full table gives up the
//! oldest session of the code holding the most, never someone else's), and ending one (logout, its
//! code changing, its family revoked) signals every socket opened with it to close.
//!
//! Sessions are kept in the database (`store`) so that a power cut or a restart
//! does not log every family out: the pages reconnect by themselves. Each records
//! a fingerprint of the code it was made with; a session whose code changed while
//! the daemon was down is dropped on load. Writes are queued to the database's
//! writer, never awaited: every WebSocket handshake looks its session up in the
//! map here and must not wait on an fsync to a slow SD card. A failed write (full
//! disk) is logged by the store and the session still works until the next restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{DisplayName, Role};
use crate::store::{SessionsOf, Store, StoredSession};
use crate::sync::Locked;

/// Sessions kept at most; the oldest is dropped to make room.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug)]
pub struct Session {
    /// Derived from the token's hash ([`id_for`]): the same on every node of a
    /// cluster and across restarts, so that a chat mute follows the login
    /// wherever it posts. Chat moderation mutes by it; a family's device count
    /// counts it once.
    pub id: u64,
    pub role: Role,
    /// The family whose code opened it; `None` for a role's code.
    pub family: Option<String>,
    pub name: DisplayName,
    pub expires: SystemTime,
    /// What the session's pages send with each change they make (`X-CSRF-Token`):
    /// derived from the token's hash, so it survives a restart, and useless to
    /// anyone who cannot read the page.
    pub csrf: String,
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

#[derive(Debug)]
pub struct SessionStore {
    sessions: Mutex<HashMap<[u8; 32], Arc<Session>>>,
    ttl: Duration,
    /// Where sessions outlive a restart; `None` keeps them in memory only.
    store: Option<Store>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A session's [`Session::id`]: 62 bits of a hash of the token's hash, so it
/// reveals nothing of either, and stays clear of the ids from `1 << 62` up that
/// connections without a session get.
fn id_for(key: &[u8; 32]) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"kindercam session id\0")
        .chain_update(key)
        .finalize();
    let bytes: [u8; 8] = digest[..8].try_into().expect("8 of 32 bytes");
    u64::from_be_bytes(bytes) & ((1 << 62) - 1)
}

fn csrf_for(key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"kindercam csrf\0")
        .chain_update(key)
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Frees one place in a full table: the oldest session of the code that holds
/// the most. Every successful login makes a session, so anyone with a code could
/// otherwise log everybody else out (staff included) just by logging in 10,000
/// times; this way such a script only pushes out its own code's sessions.
fn stored_of(key: [u8; 32], s: &Session) -> StoredSession {
    StoredSession {
        key,
        role: s.role.as_str().to_owned(),
        name: s.name.to_string(),
        family: s.family.clone(),
        code: s.fingerprint,
        expires: unix(s.expires),
    }
}

fn make_room(sessions: &mut HashMap<[u8; 32], Arc<Session>>) -> Option<([u8; 32], Arc<Session>)> {
    let mut held: HashMap<(Role, Option<&str>), usize> = HashMap::new();
    for s in sessions.values() {
        *held.entry((s.role, s.family.as_deref())).or_insert(0) += 1;
    }
    let (role, family) = held
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|((role, family), _)| (role, family.map(str::to_owned)))?;
    let oldest = sessions
        .iter()
        .filter(|(_, s)| s.role == role && s.family == family)
        .min_by_key(|(_, s)| s.expires)
        .map(|(k, _)| *k)?;
    sessions.remove(&oldest).map(|s| (oldest, s))
}

/// The role a stored session names, if it is one.
fn role_of(role: &str) -> Option<Role> {
    match role {
        "viewer" => Some(Role::Viewer),
        "staff" => Some(Role::Staff),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// A stored session as a live one; `None` for a record that no longer parses.
fn from_stored(s: &StoredSession) -> Option<Session> {
    let role = role_of(&s.role)?;
    let name = DisplayName::parse(&s.name).ok()?;
    Some(Session {
        id: id_for(&s.key),
        role,
        family: s.family.clone(),
        name,
        csrf: csrf_for(&s.key),
        expires: UNIX_EPOCH + Duration::from_secs(u64::try_from(s.expires).unwrap_or(0)),
        fingerprint: s.code,
        ended: watch::Sender::new(false),
    })
}

/// The SHA-256 of a session's token: its key in the database and the cluster.
pub fn session_key(token: &str) -> [u8; 32] {
    key(token)
}

impl SessionStore {
    /// A store kept in memory only.
    pub fn new(ttl: Duration) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            ttl,
            store: None,
        }
    }

    /// Sessions kept in `store`, loading those still valid: not expired, and made
    /// with the code `current_code(role, family)` still in force.
    pub fn load(
        ttl: Duration,
        store: Store,
        current_code: impl Fn(Role, Option<&str>) -> Option<[u8; 32]>,
    ) -> SessionStore {
        let mut sessions = HashMap::new();
        let stored = store.sessions().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the saved login sessions; everyone logs in again");
            Vec::new()
        });
        for s in stored {
            let current = role_of(&s.role).and_then(|role| current_code(role, s.family.as_deref()));
            if current != Some(s.code) {
                store.delete_session(s.key);
                continue;
            }
            if let Some(session) = from_stored(&s) {
                sessions.insert(s.key, Arc::new(session));
            }
        }
        if !sessions.is_empty() {
            tracing::info!(sessions = sessions.len(), "restored login sessions");
        }
        SessionStore {
            sessions: Mutex::new(sessions),
            ttl,
            store: Some(store),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
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
        let key = key(&token);
        let session = Arc::new(Session {
            id: id_for(&key),
            role,
            family,
            name,
            csrf: csrf_for(&key),
            expires: SystemTime::now() + self.ttl,
            fingerprint,
            ended: watch::Sender::new(false),
        });
        let mut sessions = self.sessions.locked();
        if sessions.len() >= MAX_SESSIONS {
            let now = SystemTime::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(evicted) = make_room(&mut sessions) {
                    evicted.1.ended.send_replace(true);
                    if let Some(store) = &self.store {
                        store.delete_session(evicted.0);
                    }
                }
            }
        }
        sessions.insert(key, session.clone());
        drop(sessions);
        if let Some(store) = &self.store {
            store.put_session(stored_of(key, &session));
        }
        Ok((token, session))
    }

    /// The live session for `token`, if any.
    pub fn get(&self, token: &str) -> Option<Arc<Session>> {
        let sessions = self.sessions.locked();
        sessions.get(&key(token)).filter(|s| !s.is_ended()).cloned()
    }

    /// Logout: the token stops working and its sockets close.
    pub fn end(&self, token: &str) -> bool {
        self.end_key(key(token))
    }

    /// [`SessionStore::end`] by the SHA-256 of the token: a logout on another
    /// node of a cluster.
    pub fn end_key(&self, key: [u8; 32]) -> bool {
        let removed = self.sessions.locked().remove(&key);
        let Some(session) = removed else {
            return false;
        };
        session.ended.send_replace(true);
        if let Some(store) = &self.store {
            store.delete_session(key);
        }
        true
    }

    /// The session of `token` as stored: what a cluster shares of it.
    pub fn stored(&self, token: &str) -> Option<StoredSession> {
        let key = key(token);
        let sessions = self.sessions.locked();
        sessions.get(&key).map(|s| stored_of(key, s))
    }

    /// Every session not ended, as stored (what a node seeds a cluster with).
    pub fn all_stored(&self) -> Vec<StoredSession> {
        let sessions = self.sessions.locked();
        sessions
            .iter()
            .filter(|(_, s)| !s.is_ended())
            .map(|(k, s)| stored_of(*k, s))
            .collect()
    }

    /// The keys of a family's sessions.
    pub fn keys_of_family(&self, family: &str) -> Vec<[u8; 32]> {
        let sessions = self.sessions.locked();
        sessions
            .iter()
            .filter(|(_, s)| s.family.as_deref() == Some(family))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Takes in a session made on another node of a cluster, if it was made with
    /// `current` (the code of its role or family in force here) and is not
    /// expired; saved to the database too. Returns whether it is in force here.
    /// A session already known is left as it is.
    pub fn adopt(&self, s: &StoredSession, current: Option<[u8; 32]>) -> bool {
        if current != Some(s.code) {
            return false;
        }
        let Some(session) = from_stored(s) else {
            return false;
        };
        if session.is_ended() {
            return false;
        }
        let mut sessions = self.sessions.locked();
        if sessions.contains_key(&s.key) {
            return true;
        }
        sessions.insert(s.key, Arc::new(session));
        drop(sessions);
        if let Some(store) = &self.store {
            store.put_session(s.clone());
        }
        true
    }

    /// Ends every session whose key is not in `keep` (a cluster's sessions
    /// replace a node's own); returns how many ended.
    pub fn retain_keys(&self, keep: &std::collections::HashSet<[u8; 32]>) -> usize {
        let mut gone = Vec::new();
        self.sessions.locked().retain(|k, s| {
            if keep.contains(k) {
                true
            } else {
                s.ended.send_replace(true);
                gone.push(*k);
                false
            }
        });
        if let Some(store) = &self.store {
            for key in &gone {
                store.delete_session(*key);
            }
        }
        gone.len()
    }

    /// Ends every session of `role` made with a role code (its code changed);
    /// returns how many. Family sessions are ended with their family.
    pub fn end_role(&self, role: Role) -> usize {
        let ended = self.end_where(|s| s.role == role && s.family.is_none());
        if let Some(store) = &self.store {
            store.delete_sessions(SessionsOf::Role(role.as_str().to_owned()));
        }
        ended
    }

    /// Ends every session of a family (revoked, or its code rotated).
    pub fn end_family(&self, family: &str) -> usize {
        let ended = self.end_where(|s| s.family.as_deref() == Some(family));
        if let Some(store) = &self.store {
            store.delete_sessions(SessionsOf::Family(family.to_owned()));
        }
        ended
    }

    fn end_where(&self, which: impl Fn(&Session) -> bool) -> usize {
        let mut sessions = self.sessions.locked();
        let before = sessions.len();
        sessions.retain(|_, s| {
            if which(s) {
                s.ended.send_replace(true);
                false
            } else {
                true
            }
        });
        before - sessions.len()
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
    fn a_code_logging_in_over_and_over_pushes_out_only_its_own_sessions() {
        let store = SessionStore::new(Duration::from_secs(3600));
        let (staff, _) = store
            .create(Role::Staff, name("Maestra"), None, CODE)
            .unwrap();
        let (family, _) = store
            .create(Role::Viewer, name("Ana"), Some("f1".into()), CODE)
            .unwrap();
        let (first, first_session) = store.create(Role::Viewer, name("x"), None, CODE).unwrap();
        for _ in 0..MAX_SESSIONS + 50 {
            store.create(Role::Viewer, name("x"), None, CODE).unwrap();
        }
        assert_eq!(store.len(), MAX_SESSIONS, "the table stays bounded");
        assert!(store.get(&staff).is_some(), "staff stay logged in");
        assert!(store.get(&family).is_some(), "the family stays logged in");
        assert!(
            store.get(&first).is_none(),
            "the script's oldest went first"
        );
        assert!(first_session.is_ended(), "and its sockets were told");
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
    fn sessions_survive_a_restart_unless_their_code_changed() {
        let db = Store::in_memory(Default::default()).unwrap();
        // A family session belongs to a family the database knows.
        db.create_family(&crate::auth::families::Family {
            id: "f1".into(),
            name: "Familia".into(),
            rooms: vec!["camera".into()],
            max_devices: 3,
            created: 0,
            last_seen: None,
            code_hash: [1; 32],
        })
        .unwrap();
        let ttl = Duration::from_secs(3600);
        let store = SessionStore::load(ttl, db.clone(), |_, _| Some(CODE));
        let (viewer, _) = store.create(Role::Viewer, name("Ana"), None, CODE).unwrap();
        let (staff, _) = store
            .create(Role::Staff, name("Profe"), None, CODE)
            .unwrap();
        let (family, _) = store
            .create(Role::Viewer, name("Luis"), Some("f1".into()), CODE)
            .unwrap();
        let (gone, _) = store.create(Role::Viewer, name("Eva"), None, CODE).unwrap();
        store.end(&gone);
        db.flush().unwrap();
        assert!(
            db.sessions()
                .unwrap()
                .iter()
                .all(|s| s.key != [0; 32] && s.name != viewer),
            "tokens are not stored"
        );
        drop(store);

        let restarted = SessionStore::load(ttl, db.clone(), |_, _| Some(CODE));
        assert_eq!(restarted.get(&viewer).unwrap().name.as_str(), "Ana");
        assert!(restarted.get(&staff).is_some());
        assert_eq!(
            restarted.get(&family).unwrap().family.as_deref(),
            Some("f1")
        );
        assert!(
            restarted.get(&gone).is_none(),
            "logged-out sessions stay out"
        );
        drop(restarted);

        // The viewer code and the family's code changed while the daemon was down.
        let changed = SessionStore::load(ttl, db, |role, family| {
            Some(if role == Role::Viewer || family.is_some() {
                [9; 32]
            } else {
                CODE
            })
        });
        assert!(changed.get(&viewer).is_none());
        assert!(changed.get(&family).is_none());
        assert!(changed.get(&staff).is_some());
    }

    #[test]
    fn ending_a_family_ends_only_its_sessions() {
        let store = SessionStore::new(Duration::from_secs(60));
        let (a, sa) = store
            .create(Role::Viewer, name("A"), Some("f1".into()), CODE)
            .unwrap();
        let (b, _) = store
            .create(Role::Viewer, name("B"), Some("f2".into()), CODE)
            .unwrap();
        let (v, _) = store.create(Role::Viewer, name("V"), None, CODE).unwrap();
        assert_eq!(store.end_family("f1"), 1);
        assert!(*sa.ended().borrow());
        assert!(store.get(&a).is_none());
        assert!(store.get(&b).is_some() && store.get(&v).is_some());
        assert_eq!(
            store.end_role(Role::Viewer),
            1,
            "the shared viewer code's session only"
        );
        assert!(
            store.get(&b).is_some(),
            "a family session ends with its family, not the role"
        );
    }
}
