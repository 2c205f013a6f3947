//! The per-login socket cap. The per-address cap cannot tell families apart
//! behind a school's NAT, so what one login may hold is counted here: a session
//! (a browser login), or, for HTTP Basic clients, the code itself (a family's
//! code, or a role's). Every WebSocket route counts, and a socket over the cap
//! is refused at the handshake with the reason. `max_devices` still limits a
//! family's video on top of this.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Account, Principal, Role};
use crate::sync::Locked;

/// Whose sockets are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A login session (its id is unique for the daemon's lifetime).
    Session(u64),
    /// A family's code over HTTP Basic.
    Family(String),
    /// A role's code over HTTP Basic (a shared viewer code, staff's, the admin's).
    Code(Role),
}

impl Holder {
    /// Who `who`'s sockets count against. `None` with access control off, where
    /// nobody is identified and the per-address cap is the only one.
    pub fn of(who: &Principal, auth_on: bool) -> Option<Holder> {
        if !auth_on {
            return None;
        }
        if let Some(session) = &who.session {
            return Some(Holder::Session(session.id));
        }
        Some(match &who.account {
            Account::Family(id) => Holder::Family(id.clone()),
            Account::Role => Holder::Code(who.role),
        })
    }
}

/// A socket refused: its login holds the most it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySockets {
    pub max: usize,
}

impl std::fmt::Display for TooManySockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this login has {} connections open already, the most one login may hold at once; \
             close another tab or device and try again",
            self.max
        )
    }
}

/// Open sockets per holder.
#[derive(Debug)]
pub struct SocketCounts {
    max: usize,
    open: Mutex<HashMap<Holder, usize>>,
}

impl SocketCounts {
    pub fn new(max: usize) -> Arc<SocketCounts> {
        Arc::new(SocketCounts {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more socket of `holder` until the place is dropped.
    pub fn claim(self: &Arc<Self>, holder: Holder) -> Result<SocketPlace, TooManySockets> {
        let mut open = self.open.locked();
        let count = open.entry(holder.clone()).or_insert(0);
        if *count >= self.max {
            return Err(TooManySockets { max: self.max });
        }
        *count += 1;
        Ok(SocketPlace {
            counts: self.clone(),
            holder,
        })
    }

    /// Sockets `holder` has open now.
    pub fn open(&self, holder: &Holder) -> usize {
        self.open.locked().get(holder).copied().unwrap_or(0)
    }
}

/// One socket's place in its holder's count.
#[derive(Debug)]
pub struct SocketPlace {
    counts: Arc<SocketCounts>,
    holder: Holder,
}

impl Drop for SocketPlace {
    fn drop(&mut self) {
        let mut open = self.counts.open.locked();
        if let Some(n) = open.get_mut(&self.holder) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_holder_gets_its_own_cap_and_places_come_back() {
        let counts = SocketCounts::new(2);
        let ana = Holder::Session(1);
        let places: Vec<_> = (0..2).map(|_| counts.claim(ana.clone()).unwrap()).collect();
        let refused = counts.claim(ana.clone()).unwrap_err();
        assert_eq!(refused, TooManySockets { max: 2 });
        assert!(refused.to_string().contains("2 connections"), "{refused}");
        assert!(
            counts.claim(Holder::Session(2)).is_ok(),
            "another login is not affected"
        );
        assert!(counts.claim(Holder::Family("f1".into())).is_ok());
        drop(places);
        assert_eq!(counts.open(&ana), 0);
        assert!(counts.claim(ana).is_ok(), "a closed socket frees its place");
    }
}
