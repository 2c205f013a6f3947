//! The shutdown signal, passed as a value into every task and thread.
//!
//! One `ShutdownTrigger` fires it; each task holds a cloned `Shutdown`, checks it
//! between units of work (`is_triggered`, usable from plain threads too) or awaits
//! it in a `select!` (`wait`). A `Shutdown` also keeps the trigger's completion
//! channel open, so `ShutdownTrigger::drained` learns when the last task has
//! finished its goodbye. A connection may get its own child `Shutdown` that also
//! fires when its login session ends, with a different goodbye for its client.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// What a WebSocket client is told when it is closed from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goodbye {
    pub code: u16,
    pub reason: &'static str,
}

impl Goodbye {
    pub const SERVER_SHUTDOWN: Goodbye = Goodbye {
        code: 1001,
        reason: "server shutting down",
    };
    pub const SESSION_ENDED: Goodbye = Goodbye {
        code: 1008,
        reason: "session ended",
    };
}

#[derive(Debug, Clone)]
pub struct Shutdown {
    fired: watch::Receiver<Option<Goodbye>>,
    /// Never read: held so that `drained` learns when the last handle is dropped.
    _alive: mpsc::Sender<()>,
    /// For a socket opened with a login: that login's end, watched in `wait`
    /// itself rather than by a helper task per connection.
    session: Option<SessionEnd>,
}

#[derive(Debug, Clone)]
struct SessionEnd {
    /// Turns true on logout or when the role's code changes.
    ended: watch::Receiver<bool>,
    /// Turns true when the login loses the room this socket is in (a family's
    /// room taken away, or the family revoked).
    room: Option<watch::Receiver<bool>>,
    /// When the login runs out.
    expires: Option<tokio::time::Instant>,
}

impl SessionEnd {
    fn is_over(&self) -> bool {
        *self.ended.borrow()
            || self.room.as_ref().is_some_and(|r| *r.borrow())
            || self
                .expires
                .is_some_and(|at| tokio::time::Instant::now() >= at)
    }
}

#[derive(Debug)]
pub struct ShutdownTrigger {
    fire: watch::Sender<Option<Goodbye>>,
    alive_rx: mpsc::Receiver<()>,
    alive_tx: Option<mpsc::Sender<()>>,
}

impl ShutdownTrigger {
    pub fn new() -> ShutdownTrigger {
        let (fire, _) = watch::channel(None);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        ShutdownTrigger {
            fire,
            alive_rx,
            alive_tx: Some(alive_tx),
        }
    }

    /// A new handle for a task. Every handle must be dropped for `drained` to finish.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            fired: self.fire.subscribe(),
            _alive: self.alive_tx.clone().expect("subscribe after drained"),
            session: None,
        }
    }

    pub fn fire(&self) {
        self.fire.send_replace(Some(Goodbye::SERVER_SHUTDOWN));
    }

    /// Fires the signal and waits, at most `limit`, for every handle to be dropped.
    /// Returns false when some task did not finish in time.
    pub async fn drained(mut self, limit: Duration) -> bool {
        self.fire();
        self.alive_tx = None;
        tokio::time::timeout(limit, self.alive_rx.recv())
            .await
            .is_ok()
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        self.fired.borrow().is_some() || self.session.as_ref().is_some_and(SessionEnd::is_over)
    }

    /// Completes once shutdown has been fired (or this handle's login ended); at
    /// once if it already was.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which can only happen at exit.
        let Some(session) = &mut self.session else {
            let _ = self.fired.wait_for(|fired| fired.is_some()).await;
            return;
        };
        let expiry = async {
            match session.expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let room = async {
            match &mut session.room {
                Some(room) => {
                    let _ = room.wait_for(|lost| *lost).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.fired.wait_for(|fired| fired.is_some()) => {}
            Ok(_) = session.ended.wait_for(|ended| *ended) => {}
            _ = room => {}
            _ = expiry => {}
        }
    }

    /// The daemon's own signal, without this handle's login: for work that
    /// outlives any one connection (a stream's fan-out).
    pub fn daemon(&self) -> Shutdown {
        Shutdown {
            session: None,
            ..self.clone()
        }
    }

    /// What to tell a client being closed because this fired.
    pub fn goodbye(&self) -> Goodbye {
        match *self.fired.borrow() {
            Some(goodbye) => goodbye,
            None if self.session.as_ref().is_some_and(SessionEnd::is_over) => {
                Goodbye::SESSION_ENDED
            }
            None => Goodbye::SERVER_SHUTDOWN,
        }
    }

    /// A handle that fires with the daemon's shutdown, or with `SESSION_ENDED` once
    /// `ended` turns true (logout, or the access code changed) or the login expires.
    pub fn or_session_end(
        &self,
        ended: watch::Receiver<bool>,
        expires: Option<std::time::SystemTime>,
    ) -> Shutdown {
        let expires = expires.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        Shutdown {
            session: Some(SessionEnd {
                ended,
                room: None,
                expires,
            }),
            ..self.clone()
        }
    }

    /// This handle, also firing (with `SESSION_ENDED`) when `lost` turns true: the
    /// login lost the room the socket is in. Call after `or_session_end`.
    pub fn or_room_lost(mut self, lost: watch::Receiver<bool>) -> Shutdown {
        match &mut self.session {
            Some(session) => session.room = Some(lost),
            None => {
                self.session = Some(SessionEnd {
                    ended: watch::Sender::new(false).subscribe(),
                    room: Some(lost),
                    expires: None,
                })
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn session_end_fires_the_child_only() {
        let trigger = ShutdownTrigger::new();
        let parent = trigger.subscribe();
        let (end, ended) = watch::channel(false);
        let mut child = parent.or_session_end(ended, None);
        end.send_replace(true);
        tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .unwrap();
        assert_eq!(child.goodbye(), Goodbye::SESSION_ENDED);
        assert!(!parent.is_triggered());
    }

    #[tokio::test]
    async fn losing_the_room_fires_the_child_only() {
        let trigger = ShutdownTrigger::new();
        let (_end, ended) = watch::channel(false);
        let (lose, lost) = watch::channel(false);
        let mut child = trigger
            .subscribe()
            .or_session_end(ended, None)
            .or_room_lost(lost);
        let other = trigger.subscribe();
        assert!(!child.is_triggered());
        lose.send_replace(true);
        tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .unwrap();
        assert_eq!(child.goodbye(), Goodbye::SESSION_ENDED);
        assert!(!other.is_triggered());
    }

    #[tokio::test]
    async fn an_expired_login_fires_the_child() {
        let trigger = ShutdownTrigger::new();
        let (_end, ended) = watch::channel(false);
        let soon = std::time::SystemTime::now() + Duration::from_millis(50);
        let mut child = trigger.subscribe().or_session_end(ended, Some(soon));
        tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .unwrap();
        assert_eq!(child.goodbye(), Goodbye::SESSION_ENDED);
    }

    #[tokio::test]
    async fn drained_waits_for_children_too() {
        let trigger = ShutdownTrigger::new();
        let (_end, ended) = watch::channel(false);
        let mut child = trigger.subscribe().or_session_end(ended, None);
        let task = tokio::spawn(async move {
            child.wait().await;
            child.goodbye()
        });
        assert!(trigger.drained(Duration::from_secs(2)).await);
        assert_eq!(task.await.unwrap(), Goodbye::SERVER_SHUTDOWN);
    }
}
