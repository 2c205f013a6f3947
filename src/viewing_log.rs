//! The viewing log: who watched which room, when, and from where.
//!
//! Directors are asked "who watched, and when" by parents, staff and
//! data-protection rules. Every viewing session (a video socket, from open to
//! close) is one row in the database, opened and closed through the store's
//! write queue, so a frame never waits for the disk. The sessions open now are
//! also kept here in memory, for "watching now" in the admin page.
//!
//! A link token's viewing is a row of kind `token` under the token's name. Its
//! snapshots (Home Assistant fetches one every few seconds) are gathered into one
//! row per run: the run starts with a snapshot and ends with the last one
//! followed by [`SNAPSHOT_RUN_GAP`] without any, so a poller shows as one
//! viewing, not thousands of rows.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{Account, Principal};
use crate::store::{unix_now, Store, ViewId, ViewStart};
use crate::sync::Locked;

/// Snapshots of one link token and room further apart than this are two runs,
/// two rows of the log.
pub const SNAPSHOT_RUN_GAP: Duration = Duration::from_secs(60);

/// One viewing session open now, as `GET /api/viewers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Viewing {
    /// The family's id, or `None` for staff, the admin, the shared viewer code
    /// and link tokens.
    pub family: Option<String>,
    pub role: &'static str,
    /// The chat name of the login, if it has one (Basic auth has none); a link
    /// token's name.
    pub name: Option<String>,
    /// `watch`, or `token` for a link token.
    pub kind: &'static str,
    pub stream: String,
    /// UNIX seconds.
    pub since: i64,
    pub address: String,
}

#[derive(Debug)]
pub struct ViewingLog {
    store: Store,
    open: Mutex<BTreeMap<u64, Viewing>>,
    next: AtomicU64,
    /// Runs of snapshots by link token, by (token id, room).
    snapshot_runs: Mutex<HashMap<(String, String), SnapshotRun>>,
}

/// A run of snapshots: its row, and when the last one was fetched.
#[derive(Debug)]
struct SnapshotRun {
    guard: ViewingGuard,
    last: tokio::time::Instant,
    last_unix: i64,
}

impl ViewingLog {
    pub fn new(store: Store) -> Arc<ViewingLog> {
        Arc::new(ViewingLog {
            store,
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            snapshot_runs: Mutex::new(HashMap::new()),
        })
    }

    /// Records that `who` started watching `stream` from `address`; the session
    /// ends (and its row is closed) when the guard is dropped.
    pub fn open(
        self: &Arc<Self>,
        who: &Principal,
        family_name: Option<String>,
        stream: &str,
        address: IpAddr,
    ) -> ViewingGuard {
        let (family, name, kind) = match &who.account {
            Account::Family(id) => (Some(id.clone()), None, "watch"),
            Account::Role => (None, None, "watch"),
            Account::Token(token) => (None, Some(token.name.clone()), "token"),
        };
        let viewing = Viewing {
            family,
            role: who.role.as_str(),
            name: name.or_else(|| who.name.as_ref().map(|n| n.to_string())),
            kind,
            stream: stream.to_owned(),
            since: unix_now(),
            address: address.to_string(),
        };
        let start = ViewStart {
            family: viewing.family.clone(),
            family_name,
            name: viewing.name.clone(),
            role: viewing.role.to_owned(),
            stream: viewing.stream.clone(),
            start: viewing.since,
            address: viewing.address.clone(),
        };
        let row = match kind {
            "token" => self.store.audit_open_token(start),
            _ => self.store.audit_open(start),
        };
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.locked().insert(key, viewing);
        ViewingGuard {
            log: self.clone(),
            key,
            row,
            end: None,
        }
    }

    /// Records a snapshot that `who`, a link token, fetched of `stream`: the
    /// first of a run opens a row, later ones extend it, and the row ends at the
    /// last snapshot once [`SNAPSHOT_RUN_GAP`] passes without another (a task on
    /// `runtime` waits for that). Other logins' snapshots are not logged.
    pub fn snapshot(
        self: &Arc<Self>,
        who: &Principal,
        stream: &str,
        address: IpAddr,
        runtime: &tokio::runtime::Handle,
    ) {
        let Account::Token(token) = &who.account else {
            return;
        };
        let key = (token.id.clone(), stream.to_owned());
        let now = tokio::time::Instant::now();
        let mut runs = self.snapshot_runs.locked();
        if let Some(run) = runs.get_mut(&key) {
            run.last = now;
            run.last_unix = unix_now();
            return;
        }
        let guard = self.open(who, None, stream, address);
        runs.insert(
            key.clone(),
            SnapshotRun {
                last_unix: unix_now(),
                guard,
                last: now,
            },
        );
        drop(runs);
        let log = self.clone();
        runtime.spawn(async move {
            loop {
                let due = match log.snapshot_runs.locked().get(&key) {
                    Some(run) => run.last + SNAPSHOT_RUN_GAP,
                    None => return,
                };
                tokio::time::sleep_until(due).await;
                let mut runs = log.snapshot_runs.locked();
                let ended = runs
                    .get(&key)
                    .is_none_or(|run| run.last + SNAPSHOT_RUN_GAP <= tokio::time::Instant::now());
                if ended {
                    if let Some(run) = runs.remove(&key) {
                        run.guard.end_at(run.last_unix);
                    }
                    return;
                }
            }
        });
    }

    /// Everyone watching now, longest first.
    pub fn now(&self) -> Vec<Viewing> {
        self.open.locked().values().cloned().collect()
    }
}

/// A viewer's place in the log, which a family's gate pauses: a family held at a
/// closed or paused room is not watching, so its row ends when it is held and a
/// new one starts when the room opens again. A tablet left on overnight is not
/// logged as having watched all night.
pub struct Presence {
    log: Arc<ViewingLog>,
    who: Principal,
    family_name: Option<String>,
    stream: String,
    address: IpAddr,
    guard: Option<ViewingGuard>,
}

impl Presence {
    /// Opens the viewer's row now (see [`ViewingLog::open`]).
    pub fn start(
        log: &Arc<ViewingLog>,
        who: &Principal,
        family_name: Option<String>,
        stream: &str,
        address: IpAddr,
    ) -> Presence {
        let guard = log.open(who, family_name.clone(), stream, address);
        Presence {
            log: log.clone(),
            who: who.clone(),
            family_name,
            stream: stream.to_owned(),
            address,
            guard: Some(guard),
        }
    }

    /// Ends the row while `held`; opens a new one when no longer held.
    pub fn held(&mut self, held: bool) {
        if held {
            self.guard = None;
        } else if self.guard.is_none() {
            self.guard = Some(self.log.open(
                &self.who,
                self.family_name.clone(),
                &self.stream,
                self.address,
            ));
        }
    }
}

/// One open viewing session; dropping it ends the session in the log.
pub struct ViewingGuard {
    log: Arc<ViewingLog>,
    key: u64,
    row: ViewId,
    /// When the session ended, if not now.
    end: Option<i64>,
}

impl std::fmt::Debug for ViewingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewingGuard")
            .field("key", &self.key)
            .field("row", &self.row)
            .finish()
    }
}

impl ViewingGuard {
    /// Ends the session at `end` (UNIX seconds) rather than now.
    fn end_at(mut self, end: i64) {
        self.end = Some(end);
    }
}

impl Drop for ViewingGuard {
    fn drop(&mut self) {
        self.log.open.locked().remove(&self.key);
        self.log
            .store
            .audit_close(self.row, self.end.unwrap_or_else(unix_now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::{token_hash, LinkToken, Scope};
    use crate::auth::{DisplayName, Role};

    fn token_viewer() -> Principal {
        Principal {
            role: Role::Viewer,
            account: Account::Token(Arc::new(LinkToken {
                id: "t1".into(),
                name: "Home Assistant".into(),
                rooms: vec!["camera".into()],
                scope: Scope::View,
                created: 0,
                last_used: None,
                hash: token_hash("kc_x"),
            })),
            name: None,
            session: None,
            ended: None,
            expires: None,
        }
    }

    /// Snapshots polled every 20 s are one row; a minute without one ends it,
    /// and the next snapshot starts another.
    #[tokio::test(start_paused = true)]
    async fn a_tokens_snapshots_are_one_row_per_run() {
        let store = Store::in_memory(Default::default()).unwrap();
        let log = ViewingLog::new(store.clone());
        let who = token_viewer();
        let address: IpAddr = "10.0.0.9".parse().unwrap();
        let runtime = tokio::runtime::Handle::current();
        let rows = || {
            store.flush().unwrap();
            store.audit(0, i64::MAX).unwrap()
        };
        for _ in 0..4 {
            log.snapshot(&who, "camera", address, &runtime);
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        let during = rows();
        assert_eq!(during.len(), 1, "{during:?}");
        assert_eq!(
            (
                during[0].kind.as_str(),
                during[0].name.as_deref(),
                during[0].end
            ),
            ("token", Some("Home Assistant"), None)
        );
        assert_eq!(log.now()[0].kind, "token", "watching now");
        tokio::time::sleep(SNAPSHOT_RUN_GAP + Duration::from_secs(1)).await;
        let after = rows();
        assert!(after[0].end.is_some(), "the run ended: {after:?}");
        assert!(log.now().is_empty());
        log.snapshot(&who, "camera", address, &runtime);
        assert_eq!(rows().len(), 2, "a new run");
        let staff = Principal {
            role: Role::Staff,
            account: Account::Role,
            ..who.clone()
        };
        log.snapshot(&staff, "camera", address, &runtime);
        assert_eq!(rows().len(), 2, "other logins' snapshots are not logged");
    }

    #[test]
    fn a_session_is_open_while_watched_and_closed_in_the_log_after() {
        let store = Store::in_memory(Default::default()).unwrap();
        let log = ViewingLog::new(store.clone());
        let who = Principal {
            role: Role::Viewer,
            account: Account::Family("f1".into()),
            name: Some(DisplayName::parse("Ana").unwrap()),
            session: None,
            ended: None,
            expires: None,
        };
        let guard = log.open(
            &who,
            Some("Pérez".into()),
            "camera",
            "10.0.0.5".parse().unwrap(),
        );
        let now = log.now();
        assert_eq!(now.len(), 1);
        assert_eq!(
            (
                now[0].family.as_deref(),
                now[0].name.as_deref(),
                now[0].stream.as_str()
            ),
            (Some("f1"), Some("Ana"), "camera")
        );
        store.flush().unwrap();
        let rows = store.audit(0, i64::MAX).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].end, None, "still open");
        assert_eq!(rows[0].address, "10.0.0.5");
        assert_eq!(
            rows[0].family_name.as_deref(),
            Some("Pérez"),
            "the name as it was"
        );
        drop(guard);
        assert!(log.now().is_empty());
        store.flush().unwrap();
        let rows = store.audit(0, i64::MAX).unwrap();
        assert!(
            rows[0].end.is_some_and(|end| end >= rows[0].start),
            "closed"
        );
    }
}
