//! Demand across the cluster: who wants which stream on the other nodes.
//!
//! A camera opened only on demand must run while a viewer on any relay
//! watches, and stay closed while nobody anywhere does; a stream fed on one
//! node must exist on the others so that their viewers can wait for it. So
//! each node announces, per stream, its own effective demand (staff, plus
//! families while its gate is open: what the hub's `demand_count` says, less
//! the cluster's own hold) and whether it has a source for it, on
//! `kindercam.demand.<stream>`: at once on a change and every second while
//! either is non-zero. The board here keeps what the other nodes said, and
//! forgets a node that has been silent for 3 s (a relay that died, or lost
//! NATS), so that demand never outlives the viewers it stood for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Cluster;
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// Announcements of stream NAME go to `kindercam.demand.NAME`.
pub const SUBJECT_PREFIX: &str = "kindercam.demand.";
/// How often a node repeats a non-zero announcement.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long no longer counts.
pub const FORGET_AFTER: Duration = Duration::from_secs(3);
/// How long one announcement may wait to be handed to the client.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// What a node says about one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// Its viewers' effective demand.
    pub demand: usize,
    /// It has a source for the stream (a camera, an uploader).
    #[serde(default)]
    pub source: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    node: String,
    #[serde(flatten)]
    said: Said,
}

#[derive(Debug)]
struct Entry {
    said: Said,
    seen: Instant,
}

/// What the other nodes last said, by stream and node.
#[derive(Debug)]
pub struct Board {
    me: String,
    entries: Mutex<HashMap<(String, String), Entry>>,
    /// Bumped whenever some stream's remote demand or sources change.
    version: watch::Sender<u64>,
}

impl Board {
    pub fn new(me: &str) -> Arc<Board> {
        Arc::new(Board {
            me: me.to_owned(),
            entries: Mutex::default(),
            version: watch::Sender::new(0),
        })
    }

    /// The other nodes' demand for `stream` now.
    pub fn remote_demand(&self, stream: &str) -> usize {
        self.entries
            .locked()
            .iter()
            .filter(|((s, _), e)| s == stream && e.seen.elapsed() < FORGET_AFTER)
            .map(|(_, e)| e.said.demand)
            .sum()
    }

    /// Whether another node has said it has a source for `stream`, lately.
    pub fn remote_source(&self, stream: &str) -> bool {
        self.entries
            .locked()
            .iter()
            .any(|((s, _), e)| s == stream && e.said.source && e.seen.elapsed() < FORGET_AFTER)
    }

    /// Changes whenever what the other nodes want or have changes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Takes in `node`'s word on `stream`; true when it was news.
    pub fn record(&self, stream: &str, node: &str, said: Said, now: Instant) -> bool {
        if node == self.me {
            return false;
        }
        let previous = self.entries.locked().insert(
            (stream.to_owned(), node.to_owned()),
            Entry { said, seen: now },
        );
        let news = previous.is_none_or(|p| p.said != said || now - p.seen >= FORGET_AFTER);
        if news {
            self.version.send_modify(|v| *v += 1);
        }
        news
    }

    /// Forgets the nodes not heard from for [`FORGET_AFTER`].
    pub fn expire(&self, now: Instant) {
        let mut entries = self.entries.locked();
        let before = entries.len();
        entries.retain(|_, e| now - e.seen < FORGET_AFTER);
        let forgot = entries.len() != before;
        drop(entries);
        if forgot {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

/// Announces this node's word on `stream`; skipped while NATS is away (the
/// other nodes then forget it, as they should).
pub async fn announce(cluster: &Cluster, stream: &str, said: Said) {
    let client = cluster.client();
    if client.connection_state() != async_nats::connection::State::Connected {
        return;
    }
    let text = serde_json::to_vec(&Announcement {
        node: cluster.node().to_owned(),
        said,
    })
    .expect("an announcement serializes");
    let send = client.publish(format!("{SUBJECT_PREFIX}{stream}"), text.into());
    if let Ok(Err(e)) = tokio::time::timeout(SEND_TIMEOUT, send).await {
        tracing::debug!(stream, error = %e, "demand not announced");
    }
}

/// Listens to every node's announcements until shutdown, on each client the
/// cluster has in turn. A stream another node has a source for is created
/// here too (within the hub's bound), so that viewers can attach to it.
pub async fn listen(cluster: Cluster, board: Arc<Board>, hub: Arc<Hub>, mut shutdown: Shutdown) {
    let mut connections = cluster.connections();
    let mut expiry = tokio::time::interval(FORGET_AFTER / 6);
    loop {
        connections.mark_unchanged();
        let subscribed = cluster
            .client()
            .subscribe(format!("{SUBJECT_PREFIX}*"))
            .await;
        let mut subscriber = match subscribed {
            Ok(subscriber) => Some(subscriber),
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the cluster's demand");
                None
            }
        };
        loop {
            let next = async {
                match &mut subscriber {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = connections.changed() => break,
                _ = expiry.tick() => board.expire(Instant::now()),
                message = next => match message {
                    Some(message) => take_in(&board, &hub, &message),
                    None => {
                        subscriber = None;
                    }
                },
            }
        }
    }
}

fn take_in(board: &Board, hub: &Hub, message: &async_nats::Message) {
    let Some(stream) = message.subject.strip_prefix(SUBJECT_PREFIX) else {
        return;
    };
    let Ok(said) = serde_json::from_slice::<Announcement>(&message.payload) else {
        tracing::debug!(subject = %message.subject, "a demand announcement that is not one");
        return;
    };
    if !crate::hub::valid_stream_name(stream) {
        return;
    }
    let news = board.record(stream, &said.node, said.said, Instant::now());
    if news && said.said.source && said.node != board.me && hub.get(stream).is_none() {
        match hub.stream(stream) {
            Ok(_) => tracing::info!(stream, node = %said.node, "stream fed on another relay"),
            Err(e) => tracing::debug!(stream, error = %e, "stream of another relay not made"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_adds_up_over_the_other_nodes_and_is_forgotten_after_3_s() {
        let board = Board::new("me");
        let t0 = Instant::now();
        let mut changes = board.watch();
        let say = |demand| Said {
            demand,
            source: false,
        };
        assert!(board.record("aula-1", "r2", say(2), t0));
        assert!(board.record("aula-1", "r3", say(1), t0));
        assert!(!board.record("aula-1", "me", say(5), t0), "our own word");
        assert!(
            !board.record("aula-1", "r2", say(2), t0),
            "a repeat is no news"
        );
        assert_eq!(board.remote_demand("aula-1"), 3);
        assert_eq!(board.remote_demand("aula-2"), 0);
        assert!(!board.remote_source("aula-1"));
        board.record(
            "aula-2",
            "r2",
            Said {
                demand: 0,
                source: true,
            },
            t0,
        );
        assert!(board.remote_source("aula-2"));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        board.expire(t0 + Duration::from_secs(1));
        assert!(!changes.has_changed().unwrap());
        board.record("aula-1", "r2", say(2), t0 + Duration::from_secs(2));
        board.expire(t0 + FORGET_AFTER + Duration::from_millis(1));
        assert!(changes.has_changed().unwrap(), "r3 went silent");
        let entries = board.entries.locked();
        assert_eq!(
            entries.len(),
            1,
            "only r2 on aula-1, heard 2 s later, is left"
        );
    }

    #[test]
    fn announcements_read_as_they_are_written() {
        let text = serde_json::to_string(&Announcement {
            node: "r1".into(),
            said: Said {
                demand: 3,
                source: true,
            },
        })
        .unwrap();
        assert_eq!(text, r#"{"node":"r1","demand":3,"source":true}"#);
        let back: Announcement = serde_json::from_str(r#"{"node":"r2","demand":1}"#).unwrap();
        assert_eq!(
            back.said,
            Said {
                demand: 1,
                source: false
            }
        );
    }
}
