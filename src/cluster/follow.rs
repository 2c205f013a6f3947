//! Following something kept in JetStream (a shared-state bucket, the viewing
//! log): the loop every such reader shares, so each says only how it reads.
//!
//! A pass starts once the link is healthy (JetStream answers), reads what it
//! follows and applies its changes until the [`Link`] says the pass is stale:
//! NATS came back after an outage (a change may have been missed) or the
//! connection's client was replaced (its subscriptions are gone). Then, or
//! when the pass fails, it starts over after a pause. Shutdown ends it at any
//! await, since a request to a dead server waits for its time-out.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::{Cluster, Health};
use crate::shutdown::Shutdown;

/// Between a pass that stopped and the next.
const AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Why a pass stopped.
pub enum Stopped {
    Shutdown,
    /// Read everything again, for this reason.
    Again(String),
}

/// The link as a pass saw it when it started.
pub struct Link {
    health: watch::Receiver<Health>,
    generation: watch::Receiver<u64>,
    was_down: bool,
}

impl Link {
    /// The link as it is now: a change before this call does not count, and
    /// a link down now counts as an outage.
    pub fn watching(
        mut health: watch::Receiver<Health>,
        mut generation: watch::Receiver<u64>,
    ) -> Link {
        generation.mark_unchanged();
        let was_down = !health.borrow_and_update().ok();
        Link {
            health,
            generation,
            was_down,
        }
    }

    /// Resolves when what the pass follows may be stale: the client was
    /// replaced, or NATS is back after an outage. Never while merely down:
    /// the pass keeps what it has until the link returns.
    pub async fn stale(&mut self) -> Stopped {
        loop {
            tokio::select! {
                changed = self.generation.changed() => return match changed {
                    Ok(()) => Stopped::Again("the NATS client was replaced".into()),
                    Err(_) => Stopped::Shutdown,
                },
                changed = self.health.changed() => {
                    if changed.is_err() {
                        return Stopped::Shutdown;
                    }
                    if !self.health.borrow_and_update().ok() {
                        self.was_down = true;
                    } else if self.was_down {
                        return Stopped::Again("NATS is back after an outage".into());
                    }
                }
            }
        }
    }
}

/// Runs `pass` again and again until shutdown, each time once the link is
/// healthy; `what` names it in the log. Shutdown drops a pass wherever it
/// waits, so a pass need not watch for it.
pub async fn follow<P, F>(cluster: Cluster, what: String, mut shutdown: Shutdown, mut pass: P)
where
    P: FnMut(Link) -> F,
    F: Future<Output = Stopped>,
{
    let mut health = cluster.watch_health();
    loop {
        loop {
            if health.borrow_and_update().ok() {
                break;
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = health.changed() => if changed.is_err() { return },
            }
        }
        let link = Link::watching(health.clone(), cluster.connections());
        let mut stop = shutdown.clone();
        let stopped = tokio::select! {
            _ = stop.wait() => Stopped::Shutdown,
            stopped = pass(link) => stopped,
        };
        match stopped {
            Stopped::Shutdown => return,
            Stopped::Again(why) => {
                tracing::warn!(node = %cluster.node(), %why, "{what}: reading it again")
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(AGAIN_AFTER) => {}
        }
    }
}
