//! The viewing log: who watched which room, when, and from where.
//!
//! Directors are asked "who watched, and when" by parents, staff and
//! data-protection rules. Every viewing session (a video socket, from open to
//! close) is one row in the database, opened and closed through the store's
//! write queue, so a frame never waits for the disk. The sessions open now are
//! also kept here in memory, for "watching now" in the admin page.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::{Account, Principal};
use crate::store::{unix_now, Store, ViewId, ViewStart};
use crate::sync::Locked;

/// One viewing session open now, as `GET /api/viewers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Viewing {
    /// The family's id, or `None` for staff, the admin and the shared viewer code.
    pub family: Option<String>,
    pub role: &'static str,
    /// The chat name of the login, if it has one (Basic auth has none).
    pub name: Option<String>,
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
}

impl ViewingLog {
    pub fn new(store: Store) -> Arc<ViewingLog> {
        Arc::new(ViewingLog {
            store,
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
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
        let viewing = Viewing {
            family: match &who.account {
                Account::Family(id) => Some(id.clone()),
                Account::Role => None,
            },
            role: who.role.as_str(),
            name: who.name.as_ref().map(|n| n.to_string()),
            stream: stream.to_owned(),
            since: unix_now(),
            address: address.to_string(),
        };
        let row = self.store.audit_open(ViewStart {
            family: viewing.family.clone(),
            family_name,
            name: viewing.name.clone(),
            role: viewing.role.to_owned(),
            stream: viewing.stream.clone(),
            start: viewing.since,
            address: viewing.address.clone(),
        });
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.locked().insert(key, viewing);
        ViewingGuard {
            log: self.clone(),
            key,
            row,
        }
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
#[derive(Debug)]
pub struct ViewingGuard {
    log: Arc<ViewingLog>,
    key: u64,
    row: ViewId,
}

impl Drop for ViewingGuard {
    fn drop(&mut self) {
        self.log.open.locked().remove(&self.key);
        self.log.store.audit_close(self.row, unix_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{DisplayName, Role};

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
