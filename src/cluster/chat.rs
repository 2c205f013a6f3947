//! The chat of relays on a NATS cluster: every room's messages go through one
//! JetStream stream, so that each node delivers them in the stream's order, with
//! no loss and no duplicates across reconnects, and history outlives any node.
//!
//! One stream, [`STREAM`], holds every room: a member's post goes to
//! `kindercam.chat.<room>.msg`, a staff command (delete, mute) to
//! `kindercam.chat.<room>.ctl`, so that commands neither count against nor evict
//! the history. The stream is replicated on up to three servers (file storage),
//! keeps at least [`KEPT_PER_ROOM`] messages of each subject (more when the
//! history setting asks for more) and has a [`DUPLICATE_WINDOW`]. Every relay
//! creates or updates it in the background as it starts ([`ChatLink::open`]).
//!
//! - **Posting** ([`ChatLink::publish`]): each post carries a `Nats-Msg-Id` unique
//!   to this node and process. It waits for the stream's acknowledgement and,
//!   failing that, sends the very same message again until [`PUBLISH_PATIENCE`]
//!   runs out: a retry after a lost acknowledgement is dropped by the stream as a
//!   duplicate, and a post that never got through is reported to its author.
//! - **Delivery** ([`ChatLink::follow`]): each open room has one task reading its
//!   subjects through an ephemeral pull consumer, from the start of what the
//!   stream keeps: that is the room's history, then its live messages. Members
//!   see their own post only when it comes back this way, so every node shows the
//!   stream's order, and a message's id is its stream sequence, the same on every
//!   node. The task checks the consumer's sequence numbers itself; on a gap, a
//!   missed heartbeat, an error, or the node's NATS client being replaced
//!   (`Cluster::connections`) it makes a new consumer, on the current client,
//!   starting after the last message it delivered: nothing is skipped and
//!   nothing delivered twice.
//! - **Moderation**: a delete removes the message from the stream (so no history
//!   read later shows it) and then tells every node on the `.ctl` subject; a mute
//!   names the message whose author it silences, and the time it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::follow::{Link, Stopped};
use super::hedge::Hedge;
use crate::chat::room::{Author, ChatRoom};

/// The stream that holds every room's chat.
pub const STREAM: &str = "KINDERCAM_CHAT";
/// Its subjects: `kindercam.chat.<room>.msg` and `kindercam.chat.<room>.ctl`.
pub const SUBJECTS: &str = "kindercam.chat.>";
/// Replicas asked for; fewer only where the cluster has fewer servers.
pub const REPLICAS: usize = 3;
/// How long the stream remembers a message id to drop a resent copy.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Messages the stream keeps per room subject at least, whatever the history
/// length: a node cut off from the cluster catches up on this many when it
/// comes back (it replays only the history length to members).
pub const KEPT_PER_ROOM: usize = 1000;
/// How long a post may take, retries included, before its author is told.
/// When the server leading the stream dies or hangs, a follower waits 4-9 s
/// for it before it campaigns (nats-server 2.9's election timeout), and a
/// split vote takes a second round: tests/chat_cluster.rs measured 5-8 s on an
/// idle machine and 13.4 s on a loaded one. Posts wait that out rather than
/// fail: one full timeout, a second round, and the time to answer.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);
/// How long setting up the chat stream waits for the cluster to have room for
/// [`REPLICAS`] before it settles for fewer (servers may still be joining).
const REPLICA_PATIENCE: Duration = Duration::from_secs(10);
/// How long after [`PUBLISH_PATIENCE`] an attempt made before it may still be
/// acknowledged (no attempt starts after it).
const ACK_GRACE: Duration = Duration::from_secs(1);
/// One publish attempt's wait for the stream's acknowledgement.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How a delivery consumer is asked for. While the
/// cluster recovers from a server that stopped answering, a request may go
/// unanswered for good: tests/chat_cluster.rs saw requests sent while a new
/// metadata leader was being elected, and requests on a NATS client replaced
/// meanwhile, time out after 10 s and more, while a fresh request on the
/// current client was answered in 0.2 s (a consumer placed on the silent
/// server would also never answer). So the relay does not wait on one request:
/// it asks again, under a new name and on the current client, every
/// [`ATTEMPT_TIMEOUT`] while the earlier requests are still pending, and takes
/// the first consumer made (at most 6 requests, each waiting at most 12 s).
const MAKE: Hedge = Hedge {
    every: ATTEMPT_TIMEOUT,
    patience: Duration::from_secs(12),
};
/// The delivery consumer's idle heartbeat: two missed ones (about 2 s) and the
/// task makes a new consumer (its server died, or the link to it).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The longest pause between attempts to make a consumer again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A room without a working consumer this long is logged at warn, once.
const DOWN_TOLD_AFTER: Duration = Duration::from_secs(10);
/// A consumer nobody pulls from (its task gone) is removed by the server after this.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);
/// A chat message is at most 1000 characters; with the name and JSON, well under this.
const MAX_MESSAGE_BYTES: i32 = 16 * 1024;

/// The current JetStream context: a function, because the node's connection may
/// be replaced (a client stuck on a silent server), and then every later
/// publish and consumer must use the new one.
pub type JetStreamSource = Arc<dyn Fn() -> jetstream::Context + Send + Sync>;

/// Changes each time the node's NATS client is replaced (`Cluster::connections`).
pub type Connections = tokio::sync::watch::Receiver<u64>;

/// The node's link health as its probe finds it (`Cluster::watch_health`).
pub type LinkHealth = tokio::sync::watch::Receiver<super::Health>;

/// What goes into the stream, as JSON. Clients never see it: each node turns a
/// post into the protocol's `usermsg` with the stream sequence as its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Wire {
    Post {
        /// Who posted, for muting: `s/<session>` or `<node>/c/<connection>`.
        author: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        family: Option<String>,
        message: String,
        color: String,
        #[serde(default)]
        staff: bool,
        /// When its author stops waiting (Unix milliseconds): a copy the
        /// stream stores later (one a NATS client kept through an outage and
        /// sent when it reconnected) is void, because its author was told it
        /// failed. Set as it is published.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        void_after_ms: Option<u64>,
    },
    /// Staff deleted message `id` (a stream sequence).
    Delete { id: u64 },
    /// Staff muted the author of message `id` until `until_ms` (Unix milliseconds).
    Mute { id: u64, until_ms: u64 },
}

impl Wire {
    /// Whether a copy the stream stored at `stored_ms` (its clock, Unix
    /// milliseconds) came after its author stopped waiting.
    fn is_void(&self, stored_ms: u64) -> bool {
        match self {
            Wire::Post {
                void_after_ms: Some(until),
                ..
            } => stored_ms > *until,
            _ => false,
        }
    }
}

/// A post or command that did not reach the stream in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFailed {
    pub why: String,
}

impl std::fmt::Display for PublishFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the chat cluster did not confirm the message within {} s ({})",
            PUBLISH_PATIENCE.as_secs(),
            self.why
        )
    }
}

/// One node's link to the chat stream, shared by all its rooms.
pub struct ChatLink {
    js: JetStreamSource,
    connections: Connections,
    /// A consumer is made again when NATS is back after an outage: one on a
    /// server that went silent may neither deliver nor report missed
    /// heartbeats once the client has reconnected elsewhere (CI saw a relay's
    /// readers get nothing for 50 s that way).
    health: LinkHealth,
    node: String,
    /// Random per process: message ids of a restarted node never repeat old ones.
    boot: u64,
    next_id: AtomicU64,
    history_len: usize,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ChatLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatLink")
            .field("node", &self.node)
            .field("history_len", &self.history_len)
            .finish_non_exhaustive()
    }
}

impl ChatLink {
    /// The link for node `node`, and a task that makes sure the chat stream
    /// exists with this node's settings (creating it, or updating its limits,
    /// while other nodes may do the same) as soon as JetStream answers: a relay
    /// whose NATS is not up yet starts anyway; until the stream is there, posts
    /// wait (and fail after [`PUBLISH_PATIENCE`]) and rooms wait for history.
    /// Call it inside the Tokio runtime.
    pub fn open(
        js: JetStreamSource,
        connections: Connections,
        health: LinkHealth,
        node: &str,
        history_len: usize,
    ) -> Arc<ChatLink> {
        let mut boot = [0u8; 8];
        if let Err(e) = getrandom::fill(&mut boot) {
            // Ids stay unique per node for the run; only a restart within the
            // duplicate window could then repeat one.
            tracing::warn!(error = %e, "no randomness for chat message ids; using the time");
            boot = unix_ms(SystemTime::now()).to_le_bytes();
        }
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(set_up(js.clone(), history_len));
        Arc::new(ChatLink {
            js,
            connections,
            health,
            node: node.to_owned(),
            boot: u64::from_le_bytes(boot),
            next_id: AtomicU64::new(1),
            history_len,
            runtime,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn history_len(&self) -> usize {
        self.history_len
    }

    /// The key a post carries for `author`, so that a mute reaches its author.
    pub(crate) fn author_key(&self, author: Author) -> String {
        author_key(&self.node, author)
    }

    /// The author a post's key names, as this node knows it.
    pub(crate) fn author_from_key(&self, key: &str) -> Author {
        author_from_key(&self.node, key)
    }

    /// Publishes `wire` on `room`'s subject and waits for the stream to hold it;
    /// returns its stream sequence. Retries carry the same message id, so the
    /// stream keeps one copy however many attempts got through.
    pub(crate) async fn publish(&self, room: &str, wire: &Wire) -> Result<u64, PublishFailed> {
        let subject = match wire {
            Wire::Post { .. } => format!("kindercam.chat.{room}.msg"),
            Wire::Delete { .. } | Wire::Mute { .. } => format!("kindercam.chat.{room}.ctl"),
        };
        let mut wire = wire.clone();
        if let Wire::Post { void_after_ms, .. } = &mut wire {
            *void_after_ms = Some(unix_ms(SystemTime::now()) + PUBLISH_PATIENCE.as_millis() as u64);
        }
        let payload = Bytes::from(serde_json::to_vec(&wire).expect("chat wire always serialises"));
        let id = format!(
            "{}-{:016x}-{}",
            self.node,
            self.boot,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        let mut pause = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let js = (self.js)();
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(&id);
            let attempt = async {
                let ack = js
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| match e.kind() {
                    PublishErrorKind::TimedOut => "no acknowledgement from the stream".to_owned(),
                    _ => e.to_string(),
                })
            };
            // The last attempt's acknowledgement may come a little after the
            // deadline: the copy it confirms was stored in time.
            let left =
                (deadline + ACK_GRACE).saturating_duration_since(tokio::time::Instant::now());
            let why = match tokio::time::timeout(ATTEMPT_TIMEOUT.min(left), attempt).await {
                Ok(Ok(ack)) => {
                    if attempts > 1 {
                        tracing::info!(
                            node = self.node,
                            room,
                            attempts,
                            duplicate = ack.duplicate,
                            "chat message saved after retrying"
                        );
                    }
                    return Ok(ack.sequence);
                }
                Ok(Err(why)) => why,
                Err(_) => "no acknowledgement from the stream in time".to_owned(),
            };
            if tokio::time::Instant::now() + pause >= deadline {
                tracing::warn!(node = self.node, room, attempts, error = %why, "chat message not saved: NATS did not take it");
                return Err(PublishFailed { why });
            }
            tracing::debug!(node = self.node, room, attempts, error = %why, "chat publish failed; retrying with the same id");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Removes message `id` from the stream, so that no history shows it again.
    /// A message the stream no longer holds is fine: it is gone already.
    pub(crate) async fn remove(&self, id: u64) -> Result<(), PublishFailed> {
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        loop {
            let js = (self.js)();
            let attempt = async {
                let stream = js
                    .get_stream_no_info(STREAM)
                    .await
                    .map_err(|e| e.to_string())?;
                match stream.delete_message(id).await {
                    Ok(_) => Ok(()),
                    Err(e) => match e.kind() {
                        stream::DeleteMessageErrorKind::JetStream(js_error)
                            if [
                                jetstream::ErrorCode::SEQUENCE_NOT_FOUND,
                                jetstream::ErrorCode::NO_MESSAGE_FOUND,
                            ]
                            .contains(&js_error.error_code()) =>
                        {
                            Ok(())
                        }
                        _ => Err(e.to_string()),
                    },
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let why = match tokio::time::timeout(ATTEMPT_TIMEOUT.min(left), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(why)) => why,
                Err(_) => "no answer from the stream in time".to_owned(),
            };
            if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
                return Err(PublishFailed { why });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A delivery consumer's name, unique to this process (the node's name may
    /// hold characters a consumer name may not).
    fn consumer_name(&self) -> String {
        format!(
            "kc_chat_{:016x}_{}",
            self.boot,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Starts the task that feeds `room` from the stream; it ends when the room
    /// is dropped (the room aborts it) or forgotten.
    pub(crate) fn follow(self: &Arc<Self>, room: &Arc<ChatRoom>) -> tokio::task::AbortHandle {
        let task = follow(self.clone(), room.name().to_owned(), Arc::downgrade(room));
        self.runtime.spawn(task).abort_handle()
    }
}

/// `s/<session>` or `<node>/c/<connection>`: whom a post is from, for muting,
/// unique across the cluster. A login session's id is the same on every node
/// (it comes from the session's token), so a mute follows a logged-in parent
/// to whichever relay it posts through; a connection without a session is
/// somebody only on its own node.
fn author_key(node: &str, author: Author) -> String {
    match author {
        Author::Session(id) => format!("s/{id}"),
        Author::Connection(id) => format!("{node}/c/{id}"),
        // Never a local member's (only posts from elsewhere are keyed so).
        Author::Elsewhere(id) => format!("{node}/x/{id}"),
    }
}

/// The author `key` names, as node `node` knows it: a login session (the same
/// everywhere), one of this node's connections, or somebody on another node,
/// whom no member here matches.
fn author_from_key(node: &str, key: &str) -> Author {
    if let Some(id) = key.strip_prefix("s/").and_then(|id| id.parse().ok()) {
        return Author::Session(id);
    }
    let local = key
        .strip_prefix(node)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix("c/"))
        .and_then(|id| id.parse().ok());
    local.map(Author::Connection).unwrap_or_else(|| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Author::Elsewhere(hasher.finish())
    })
}

/// Why one consumer stopped delivering.
#[derive(Debug)]
enum Interrupted {
    /// The room is gone: nothing more to do.
    RoomGone,
    /// NATS failed somewhere: make a new consumer after the last delivered message.
    Broken(String),
}

/// Feeds one room from the stream for as long as the room exists.
async fn follow(link: Arc<ChatLink>, room: String, target: Weak<ChatRoom>) {
    let filter = format!("kindercam.chat.{room}.>");
    // The stream sequence of the last message handed to the room: a new consumer
    // starts right after it.
    let mut last = 0u64;
    let mut pause = Duration::from_millis(100);
    let mut failing = false;
    // Since when this room has had no working consumer, and whether that was
    // told: a room whose chat stays down is worth a line at warn, with why.
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut told_down = false;
    loop {
        let mut started = false;
        let outcome = deliver(&link, &filter, &target, &mut last, &mut started).await;
        if started {
            down_since = None;
            told_down = false;
        }
        let down_for = down_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed();
        if let Interrupted::Broken(why) = &outcome {
            if down_for >= DOWN_TOLD_AFTER && !told_down {
                told_down = true;
                tracing::warn!(node = link.node, room, error = %why, last, down_s = down_for.as_secs(), "chat delivery is still down; trying again");
            }
        }
        match outcome {
            Interrupted::RoomGone => return,
            // A room opened as the relay starts may find no stream yet (the
            // set-up task says so if that lasts).
            Interrupted::Broken(why) if last == 0 && !started => {
                tracing::debug!(node = link.node, room, error = %why, "chat delivery not started yet");
            }
            Interrupted::Broken(why) if started || !failing => {
                tracing::warn!(node = link.node, room, error = %why, last, "chat delivery interrupted; resuming after the last message");
            }
            Interrupted::Broken(why) => {
                tracing::debug!(node = link.node, room, error = %why, "chat delivery still interrupted");
            }
        }
        if started {
            pause = Duration::from_millis(100);
        }
        failing = true;
        if target.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// A delivery consumer made by whichever of several requests the cluster
/// answers first ([`MAKE`]): each under a new name from `config`, on the
/// current client. The consumers of requests answered later go unused, and the
/// server removes them after [`CONSUMER_INACTIVE`].
async fn make_consumer(
    link: &ChatLink,
    config: impl Fn() -> consumer::pull::Config,
) -> Result<consumer::PullConsumer, String> {
    MAKE.first("making a chat consumer", || {
        // On the current client: the one before may have been replaced.
        let mut js = (link.js)();
        // This request's own deadline bounds it, not the context's 5 s.
        js.set_timeout(MAKE.patience + Duration::from_secs(1));
        let config = config();
        async move {
            let stream = js
                .get_stream_no_info(STREAM)
                .await
                .map_err(|e| format!("cannot make a chat consumer: {e}"))?;
            stream
                .create_consumer(config)
                .await
                .map_err(|e| format!("cannot make a chat consumer: {e}"))
        }
    })
    .await
}

/// Makes one consumer starting after `last` and hands its messages to the room
/// until something breaks; `started` tells whether the consumer was made.
async fn deliver(
    link: &ChatLink,
    filter: &str,
    target: &Weak<ChatRoom>,
    last: &mut u64,
    started: &mut bool,
) -> Interrupted {
    let broken =
        |what: &str, e: &dyn std::fmt::Display| Interrupted::Broken(format!("{what}: {e}"));
    // Seen before taking the client: a replacement from now on, or NATS back
    // after an outage, ends this consumer (as it ends a shared-state pass).
    let mut stale = Link::watching(link.health.clone(), link.connections.clone());
    let config = |name: String| consumer::pull::Config {
        name: Some(name),
        filter_subject: filter.to_owned(),
        deliver_policy: match *last {
            0 => consumer::DeliverPolicy::All,
            n => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        },
        ack_policy: consumer::AckPolicy::None,
        memory_storage: true,
        num_replicas: 1,
        inactive_threshold: CONSUMER_INACTIVE,
        ..Default::default()
    };
    let consumer = match make_consumer(link, || config(link.consumer_name())).await {
        Ok(consumer) => consumer,
        Err(why) => return Interrupted::Broken(why),
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .heartbeat(HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages();
    let mut messages = match tokio::time::timeout(ATTEMPT_TIMEOUT * 2, messages).await {
        Ok(Ok(messages)) => messages,
        Ok(Err(e)) => return broken("cannot pull chat messages", &e),
        Err(_) => return Interrupted::Broken("no answer pulling chat messages".into()),
    };
    *started = true;
    if *last > 0 {
        tracing::info!(node = link.node, filter, last, "chat delivery resumed");
    }
    if consumer.cached_info().num_pending == 0 {
        match target.upgrade() {
            Some(room) => room.caught_up(),
            None => return Interrupted::RoomGone,
        }
    }
    let mut expected = 1u64;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            stopped = stale.stale() => match stopped {
                Stopped::Again(why) => return Interrupted::Broken(why),
                // The cluster is gone (shutdown): only the consumer can end this.
                Stopped::Shutdown => messages.next().await,
            },
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => return broken("chat consumer failed", &e),
            None => return Interrupted::Broken("the chat consumer ended".into()),
        };
        let (sequence, delivered, pending, stored_ms) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.consumer_sequence,
                info.pending,
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            ),
            Err(e) => return broken("a chat message without its sequence", &e),
        };
        // A consumer numbers what it delivers 1, 2, 3...: a gap means a message
        // was lost in transit, so start again after the last one handed over.
        if delivered != expected {
            return Interrupted::Broken(format!(
                "consumer skipped from {} to {delivered}",
                expected - 1
            ));
        }
        expected += 1;
        let Some(room) = target.upgrade() else {
            return Interrupted::RoomGone;
        };
        if sequence > *last {
            *last = sequence;
            match serde_json::from_slice::<Wire>(&message.payload) {
                Ok(wire) if wire.is_void(stored_ms) => tracing::info!(
                    room = room.name(),
                    sequence,
                    "a chat post the stream took after its author was told it failed; not shown"
                ),
                Ok(wire) => room.deliver(link, sequence, wire),
                Err(e) => tracing::warn!(
                    room = room.name(),
                    sequence,
                    error = %e,
                    "an unreadable chat message in the stream; skipped"
                ),
            }
        }
        if pending == 0 {
            room.caught_up();
        }
    }
}

/// Sets the chat stream up, retrying until JetStream takes it: patient for
/// three replicas during [`REPLICA_PATIENCE`] (servers may still be joining).
async fn set_up(js: JetStreamSource, history_len: usize) {
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut warned = false;
    loop {
        match ensure_stream(&js(), history_len, start + REPLICA_PATIENCE).await {
            Ok(replicas) => {
                tracing::info!(stream = STREAM, replicas, "chat goes through JetStream");
                return;
            }
            Err(Setup::Retry(e)) => {
                if !warned && start.elapsed() >= REPLICA_PATIENCE {
                    tracing::warn!(error = %e, "the chat stream is not set up yet; chat waits for JetStream");
                    warned = true;
                } else {
                    tracing::debug!(error = %e, "the chat stream is not set up yet; retrying");
                }
            }
            Err(Setup::Fail(e)) if !warned => {
                tracing::error!(error = %e, "cannot set up the chat stream; retrying");
                warned = true;
            }
            Err(Setup::Fail(e)) => {
                tracing::debug!(error = %e, "still cannot set up the chat stream")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// What [`ensure_stream`] needs done once more.
#[derive(Debug)]
enum Setup {
    /// Not yet possible (JetStream still forming, servers still joining): try again.
    Retry(anyhow::Error),
    /// Wrong beyond retrying.
    Fail(anyhow::Error),
}

/// Creates the chat stream, or brings an existing one in line, and returns its
/// replica count. A new stream gets [`REPLICAS`]; a single server (JetStream
/// not clustered) gets one, and says so. A cluster that cannot place three yet
/// (servers still joining) is retried until `patient_until`, and only then
/// given fewer, with a warning: a stream made small at a cluster's start would
/// stay small. An existing stream smaller than [`REPLICAS`] is grown when the
/// cluster allows, and never shrunk (a server being down is no reason to).
async fn ensure_stream(
    js: &jetstream::Context,
    history_len: usize,
    patient_until: tokio::time::Instant,
) -> Result<usize, Setup> {
    use jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
    use jetstream::ErrorCode;
    let wanted = |replicas: usize| stream::Config {
        name: STREAM.to_owned(),
        description: Some("kindercam chat: kindercam.chat.<room>.msg and .ctl".to_owned()),
        subjects: vec![SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: history_len.max(KEPT_PER_ROOM) as i64,
        max_message_size: MAX_MESSAGE_BYTES,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    match js.get_stream(STREAM).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| Setup::Retry(e.into()))?;
            let current = &info.config;
            let replicas = current.num_replicas.max(1);
            let limits_differ = current.subjects != [SUBJECTS]
                || current.max_messages_per_subject != wanted(1).max_messages_per_subject
                || current.duplicate_window != DUPLICATE_WINDOW
                || current.max_message_size != MAX_MESSAGE_BYTES;
            if replicas < REPLICAS {
                match js.update_stream(wanted(REPLICAS)).await {
                    Ok(_) => {
                        tracing::info!(
                            from = replicas,
                            to = REPLICAS,
                            "the chat stream now has more replicas"
                        );
                        return Ok(REPLICAS);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "the chat stream keeps {replicas} replica(s)")
                    }
                }
            }
            if limits_differ {
                if let Err(e) = js.update_stream(wanted(replicas)).await {
                    tracing::warn!(error = %e, "cannot update the chat stream's limits; using it as it is");
                }
            }
            return Ok(replicas);
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
            _ => return Err(Setup::Retry(e.into())),
        },
    }
    let patient = tokio::time::Instant::now() < patient_until;
    for replicas in (1..=REPLICAS).rev() {
        let error = match js.create_stream(wanted(replicas)).await {
            Ok(_) if replicas == REPLICAS => return Ok(replicas),
            Ok(_) => {
                tracing::warn!(
                    replicas,
                    "the chat stream was made with {replicas} replica(s): fewer than {REPLICAS} NATS servers with JetStream; losing one may lose chat"
                );
                return Ok(replicas);
            }
            Err(e) => e,
        };
        match error.kind() {
            // Another node made it first: look at it again.
            CreateStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                return Err(Setup::Retry(error.into()));
            }
            CreateStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED =>
            {
                tracing::warn!(
                    "NATS runs JetStream on a single server: the chat stream gets one replica"
                );
                return match js.create_stream(wanted(1)).await {
                    Ok(_) => Ok(1),
                    Err(e) => Err(Setup::Retry(e.into())),
                };
            }
            CreateStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::INSUFFICIENT_RESOURCES && patient =>
            {
                return Err(Setup::Retry(anyhow::anyhow!(
                    "the cluster cannot place {replicas} replicas yet: {j}"
                )));
            }
            CreateStreamErrorKind::JetStream(j) => {
                tracing::info!(replicas, error = %j, "cannot make the chat stream with {replicas} replica(s)");
            }
            _ => return Err(Setup::Retry(error.into())),
        }
    }
    Err(Setup::Fail(anyhow::anyhow!(
        "JetStream refused the chat stream with any number of replicas"
    )))
}

/// Now as Unix milliseconds, for a mute's end.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mute_reaches_a_login_on_every_node_and_a_connection_on_its_own() {
        // A login session is the same person on every node.
        let key = author_key("relay-a", Author::Session(7));
        for node in ["relay-a", "relay-b"] {
            assert_eq!(
                author_from_key(node, &key),
                Author::Session(7),
                "{key} on {node}"
            );
        }
        // A connection without a session is somebody on its own node only.
        let key = author_key("relay-a", Author::Connection(9));
        assert_eq!(author_from_key("relay-a", &key), Author::Connection(9));
        let there = author_from_key("relay-b", &key);
        assert!(
            matches!(there, Author::Elsewhere(_)),
            "{key} on relay-b: {there:?}"
        );
        assert_ne!(
            there,
            author_from_key("relay-b", &author_key("relay-c", Author::Connection(9))),
            "two nodes' connection 9 are two people"
        );
        // A node whose name starts like another's does not claim its members.
        let key = author_key("relay-a2", Author::Connection(9));
        assert!(matches!(
            author_from_key("relay-a", &key),
            Author::Elsewhere(_)
        ));
    }

    #[test]
    fn a_post_stored_after_its_author_gave_up_is_void() {
        let post = |void_after_ms| Wire::Post {
            author: "s/7".into(),
            name: "Ana".into(),
            family: None,
            message: "hola".into(),
            color: "1f77b4".into(),
            staff: false,
            void_after_ms,
        };
        let until = 1_800_000_000_000;
        assert!(!post(Some(until)).is_void(until - 5_000), "stored in time");
        assert!(!post(Some(until)).is_void(until), "stored at the deadline");
        assert!(post(Some(until)).is_void(until + 1), "stored after it");
        // Posts of nodes from before the deadline existed always count.
        assert!(!post(None).is_void(until + 60_000));
        let mute = Wire::Mute { id: 3, until_ms: 0 };
        assert!(!mute.is_void(until), "commands are never void");
    }

    #[test]
    fn the_stream_holds_small_json_that_every_node_reads_alike() {
        let post = Wire::Post {
            author: "relay-a/s/7".into(),
            name: "Ana".into(),
            family: None,
            message: "hola".into(),
            color: "1f77b4".into(),
            staff: false,
            void_after_ms: None,
        };
        let text = serde_json::to_string(&post).unwrap();
        assert_eq!(
            text,
            r#"{"type":"post","author":"relay-a/s/7","name":"Ana","message":"hola","color":"1f77b4","staff":false}"#
        );
        assert_eq!(serde_json::from_str::<Wire>(&text).unwrap(), post);
        let mute = Wire::Mute {
            id: 12,
            until_ms: 1_800_000_000_000,
        };
        let text = serde_json::to_string(&mute).unwrap();
        assert_eq!(serde_json::from_str::<Wire>(&text).unwrap(), mute);
        assert!(serde_json::from_str::<Wire>(r#"{"type":"usermsg","id":1}"#).is_err());
    }
}
