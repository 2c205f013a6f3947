//! The per-login socket cap. The per-address cap cannot tell families apart
//! behind a school's NAT, so what one login may hold is counted here: a session
//! (a browser login), or, for HTTP Basic clients, the code itself (a family's
//! code, or a role's), or a link token. Every WebSocket route counts, and a socket over the cap
//! is refused at the handshake with the reason. `max_devices` still limits a
//! family's video on top of this.
//!
//! How fast a login may open sockets is bounded too: each one is a row in the
//! viewing log and a handshake to check, so a script that opens and closes
//! sockets in a loop (never holding more than the cap) would otherwise fill the
//! SD card with log rows. Staff and the admin are trusted and not rate-limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Account, Principal, Role};
use crate::ratelimit::KeyedLimiter;
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
    /// A link token (by its id).
    Token(String),
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
            Account::Token(token) => Holder::Token(token.id.clone()),
        })
    }
}

/// New sockets one login may open in a burst, then one every two seconds: a
/// page opens two (picture and chat), a Wi-Fi blip reconnects them, a family
/// switching rooms a few more.
pub const OPEN_BURST: u32 = 30;
pub const OPEN_PER_SECOND: f64 = 0.5;
/// Logins whose opening rate is tracked at once; the oldest is forgotten first.
const TRACKED_LOGINS: usize = 4096;

/// A socket refused: its login holds the most it may, or opens them too fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooManySockets {
    Held { max: usize },
    TooFast,
}

impl std::fmt::Display for TooManySockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TooManySockets::Held { max } => write!(
                f,
                "this login has {max} connections open already, the most one login may hold at once; \
                 close another tab or device and try again"
            ),
            TooManySockets::TooFast => f.write_str(
                "this login opened too many connections in a short time; wait a few seconds and try again",
            ),
        }
    }
}

/// Open sockets per holder.
#[derive(Debug)]
pub struct SocketCounts {
    max: usize,
    open: Mutex<HashMap<Holder, usize>>,
    opened: KeyedLimiter<Holder>,
}

impl SocketCounts {
    pub fn new(max: usize) -> Arc<SocketCounts> {
        Arc::new(SocketCounts {
            max,
            open: Mutex::new(HashMap::new()),
            opened: KeyedLimiter::new(OPEN_BURST, OPEN_PER_SECOND, TRACKED_LOGINS),
        })
    }

    /// Counts one more socket of `holder` until the place is dropped. A `trusted`
    /// login (staff, the admin) is not held to the opening rate.
    pub fn claim(
        self: &Arc<Self>,
        holder: Holder,
        trusted: bool,
    ) -> Result<SocketPlace, TooManySockets> {
        let mut open = self.open.locked();
        let count = open.entry(holder.clone()).or_insert(0);
        if *count >= self.max {
            return Err(TooManySockets::Held { max: self.max });
        }
        if !trusted && !self.opened.try_take(&holder) {
            if *count == 0 {
                open.remove(&holder);
            }
            return Err(TooManySockets::TooFast);
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
        let places: Vec<_> = (0..2)
            .map(|_| counts.claim(ana.clone(), false).unwrap())
            .collect();
        let refused = counts.claim(ana.clone(), false).unwrap_err();
        assert_eq!(refused, TooManySockets::Held { max: 2 });
        assert!(refused.to_string().contains("2 connections"), "{refused}");
        assert!(
            counts.claim(Holder::Session(2), false).is_ok(),
            "another login is not affected"
        );
        assert!(counts.claim(Holder::Family("f1".into()), false).is_ok());
        drop(places);
        assert_eq!(counts.open(&ana), 0);
        assert!(
            counts.claim(ana, false).is_ok(),
            "a closed socket frees its place"
        );
    }

    #[test]
    fn a_login_opening_sockets_in_a_loop_is_slowed_but_staff_are_not() {
        let counts = SocketCounts::new(8);
        let script = Holder::Session(7);
        for i in 0..OPEN_BURST {
            drop(
                counts
                    .claim(script.clone(), false)
                    .unwrap_or_else(|e| panic!("open {i}: {e}")),
            );
        }
        let refused = counts.claim(script.clone(), false).unwrap_err();
        assert_eq!(refused, TooManySockets::TooFast);
        assert!(refused
            .to_string()
            .contains("too many connections in a short time"));
        assert_eq!(counts.open(&script), 0, "a refused socket holds no place");
        assert!(
            counts.claim(Holder::Session(8), false).is_ok(),
            "other logins are not affected"
        );
        let staff = Holder::Code(Role::Staff);
        for _ in 0..2 * OPEN_BURST {
            drop(counts.claim(staff.clone(), true).unwrap());
        }
    }
}
