//! The viewing log across a cluster: a director asking "who watched, and when"
//! on any relay sees the viewing on every relay.
//!
//! Each node publishes the rows it opens and closes in its log (viewings and
//! teachers' pauses) to the JetStream stream `KINDERCAM_AUDIT`, subject
//! `kindercam.audit.<node>`, kept for the log's retention (`audit_days`, at
//! least a day). Each node reads the stream into its own SQLite database, in
//! batches, one transaction each, recording how far it read, so `/api/audit`
//! (JSON and CSV) answers from the local database with every node's rows,
//! each naming its node. A row heard twice is one row (its node and its id
//! there are unique).
//!
//! The viewing itself never waits: the store's tap hands each change to a
//! bounded queue, and a task publishes it (in order, retrying while NATS is
//! away; a change that finds the queue full is dropped from the cluster's log,
//! counted and logged, and stays in this node's own).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::follow::{self, Link, Stopped};
use super::Cluster;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::{AuditEvent, Store};

pub const STREAM: &str = "KINDERCAM_AUDIT";
const SUBJECTS: &str = "kindercam.audit.>";
/// Changes waiting to be published at most.
const QUEUE: usize = 10_000;
/// Changes read into the database in one transaction at most.
const BATCH: usize = 500;
/// How long one publication may wait for JetStream's acknowledgement.
const PUBLISH_LIMIT: Duration = Duration::from_secs(5);
/// How long, after shutdown fires, the last changes (the viewers' closes) may
/// take to be published.
const LAST_CHANGES: Duration = Duration::from_millis(500);
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    node: String,
    event: AuditEvent,
}

/// Starts sharing this node's viewing log and reading the others'.
pub fn spawn(cluster: Cluster, store: Store, audit_days: u32, trigger: &ShutdownTrigger) {
    let (tx, rx) = mpsc::channel(QUEUE);
    // Viewers an unclean stop left open in the other nodes' logs end first.
    for close in store.take_leftover_closes() {
        let _ = tx.try_send(close);
    }
    let dropped = AtomicU64::new(0);
    store.tap_audit(move |event| {
        if tx.try_send(event).is_err() {
            let n = dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    dropped = n + 1,
                    "the cluster's viewing log is behind: a change stays in this node's log only"
                );
            }
        }
    });
    let max_age = Duration::from_secs(u64::from(audit_days.max(1)) * 86_400);
    tokio::spawn(publish(cluster.clone(), max_age, rx, trigger.subscribe()));
    tokio::spawn(ingest(cluster, store, max_age, trigger.subscribe()));
}

/// The stream, created if no node has yet.
async fn audit_stream(cluster: &Cluster, max_age: Duration) -> Result<stream::Stream, String> {
    let js = cluster.jetstream();
    if let Ok(found) = js.get_stream(STREAM).await {
        return Ok(found);
    }
    let config = stream::Config {
        name: STREAM.to_owned(),
        description: Some("kindercam's viewing log, every node's".into()),
        subjects: vec![SUBJECTS.to_owned()],
        max_age,
        storage: stream::StorageType::File,
        num_replicas: super::state::replicas(cluster),
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(created) => Ok(created),
        Err(e) => js
            .get_stream(STREAM)
            .await
            .map_err(|_| format!("cannot create the stream {STREAM}: {e}")),
    }
}

async fn publish(
    cluster: Cluster,
    max_age: Duration,
    mut rx: mpsc::Receiver<AuditEvent>,
    mut shutdown: Shutdown,
) {
    let node = cluster.node().to_owned();
    let subject = format!("kindercam.audit.{node}");
    let mut ready = false;
    // Once shutdown fires: until when the last changes may still go out.
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        let event = match stopping {
            None => tokio::select! {
                _ = shutdown.wait() => {
                    stopping = Some(tokio::time::Instant::now() + LAST_CHANGES);
                    continue;
                }
                event = rx.recv() => event,
            },
            Some(deadline) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        let Some(event) = event else { return };
        let payload: bytes::Bytes = serde_json::to_vec(&Wire {
            node: node.clone(),
            event,
        })
        .expect("a viewing-log change serializes")
        .into();
        let mut failures = 0u32;
        loop {
            let attempt = async {
                if !ready {
                    audit_stream(&cluster, max_age).await?;
                    ready = true;
                }
                cluster
                    .jetstream()
                    .publish(subject.clone(), payload.clone())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            let limit = match stopping {
                None => tokio::time::Instant::now() + PUBLISH_LIMIT,
                Some(deadline) => deadline,
            };
            let sent = tokio::select! {
                _ = shutdown.wait(), if stopping.is_none() => {
                    stopping = Some(tokio::time::Instant::now() + LAST_CHANGES);
                    false
                }
                sent = tokio::time::timeout_at(limit, attempt) => matches!(sent, Ok(Ok(_))),
            };
            if sent {
                break;
            }
            ready = false;
            failures += 1;
            if failures == 1 {
                tracing::warn!(%node, "cannot publish to the cluster's viewing log; retrying");
            }
            match stopping {
                Some(deadline) if tokio::time::Instant::now() >= deadline => return,
                Some(_) => {}
                None => tokio::select! {
                    _ = shutdown.wait() => stopping = Some(tokio::time::Instant::now() + LAST_CHANGES),
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                },
            }
        }
    }
}

async fn ingest(cluster: Cluster, store: Store, max_age: Duration, shutdown: Shutdown) {
    let what = "the cluster's viewing log".to_owned();
    follow::follow(cluster.clone(), what, shutdown, |link| {
        ingest_once(&cluster, &store, max_age, link)
    })
    .await
}

/// One pass: reads the log from where this node stopped, then follows it.
async fn ingest_once(
    cluster: &Cluster,
    store: &Store,
    max_age: Duration,
    mut link: Link,
) -> Stopped {
    let stream = tokio::select! {
        stopped = link.stale() => return stopped,
        found = audit_stream(cluster, max_age) => match found {
            Ok(stream) => stream,
            Err(why) => return Stopped::Again(why),
        },
    };
    let last = match stream.get_info().await {
        Ok(info) => info.state.last_sequence,
        Err(e) => return Stopped::Again(format!("cannot read {STREAM}: {e}")),
    };
    let reading = store.clone();
    let mut seq = match tokio::task::spawn_blocking(move || reading.audit_seq()).await {
        Ok(Ok(seq)) => seq,
        Ok(Err(e)) => return Stopped::Again(format!("cannot read how far the log was read: {e}")),
        Err(_) => return Stopped::Shutdown,
    };
    // A new cluster's stream starts again from 1.
    if seq > last {
        seq = 0;
    }
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client().new_inbox(),
            description: Some("kindercam viewing-log reader".into()),
            filter_subject: SUBJECTS.to_owned(),
            deliver_policy: match seq {
                0 => DeliverPolicy::All,
                seq => DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                },
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await;
    let mut feed = match consumer {
        Ok(consumer) => match consumer.messages().await {
            Ok(feed) => feed,
            Err(e) => return Stopped::Again(format!("cannot follow {STREAM}: {e}")),
        },
        Err(e) => return Stopped::Again(format!("cannot follow {STREAM}: {e}")),
    };
    let node = cluster.node().to_owned();
    loop {
        let first = tokio::select! {
            stopped = link.stale() => return stopped,
            next = feed.next() => next,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match feed.next().now_or_never() {
                Some(next) => batch.push(next),
                None => break,
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        for next in batch {
            let message = match next {
                None => return Stopped::Again(format!("{STREAM}'s feed ended")),
                Some(Err(e)) => return Stopped::Again(format!("{STREAM}'s feed failed: {e}")),
                Some(Ok(message)) => message,
            };
            match message.info() {
                Ok(info) => seq = info.stream_sequence,
                Err(e) => return Stopped::Again(format!("a change without its sequence: {e}")),
            }
            match serde_json::from_slice::<Wire>(&message.payload) {
                Ok(wire) if wire.node == node => {}
                Ok(wire) => events.push((wire.node, wire.event)),
                Err(e) => {
                    tracing::warn!(subject = %message.subject, error = %e, "a viewing-log change that cannot be read; skipped")
                }
            }
        }
        let writing = store.clone();
        match tokio::task::spawn_blocking(move || writing.ingest_audit(events, seq)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Stopped::Again(format!("cannot save other nodes' viewing: {e}")),
            Err(_) => return Stopped::Shutdown,
        }
    }
}
