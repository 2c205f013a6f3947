//! Frames across the cluster: a stream fed on one relay is watched on all.
//!
//! Every frame that reaches a node from a source of its own (a camera, a pipe,
//! the test pattern, an upload or a push: all pass intake and `Stream::publish`)
//! is published once on `kindercam.frames.<stream>`, the masked JPEG as it is
//! (the frame's shared bytes, no re-encode) with its number (`Kc-Seq`), its
//! capture time in Unix microseconds (`Kc-Time`) and the node (`Kc-Node`) in
//! headers; but only while some other node wants the stream (`demand`): nobody
//! watching elsewhere costs nothing. A node without a source of its own for a
//! stream subscribes to it only while it has viewers of it, and feeds what it
//! receives into its hub through intake, like an upload (its own masks, if
//! any, apply too); such a relayed frame keeps its origin's number, which
//! `?meta=1` viewers see on every relay, and is never published again.
//!
//! Latest-frame rules hold end to end: the publisher sends the newest frame
//! whenever the hub has a new one (a slow publish skips frames, never queues
//! them), and a subscriber drains what arrived and takes only the newest.
//!
//! While another node wants a stream this node has a source for, this node
//! holds a demand on it, so an on-demand camera runs, and a pushing camera is
//! told that somebody watches, for viewers anywhere in the cluster.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::demand::{self, Board, Said};
use super::Cluster;
use crate::config::Config;
use crate::hub::{Audience, DemandGuard, Hub, Snapshot, Stream, StreamStatus};
use crate::shutdown::Shutdown;
use crate::ws::upload::{Incoming, Receiver};

/// Frames of stream NAME go to `kindercam.frames.NAME`.
pub const SUBJECT_PREFIX: &str = "kindercam.frames.";
/// The frame's number where it was taken.
pub const SEQ: &str = "Kc-Seq";
/// When it was taken, in Unix microseconds.
pub const TIME: &str = "Kc-Time";
/// The node it was taken on.
pub const NODE: &str = "Kc-Node";

/// How long one frame may wait to be handed to the client; past it the frame
/// is skipped (the next one replaces it).
const SEND_TIMEOUT: Duration = Duration::from_millis(250);
/// A relayed stream that gets no frame for this long, while this node wants
/// it, is shown offline.
const SILENT_SOURCE: Duration = Duration::from_secs(10);

/// What every stream's relay task shares.
struct Shared {
    cluster: Cluster,
    board: Arc<Board>,
    config: Arc<Config>,
}

/// Starts relaying frames and demand between this node and the cluster, for
/// every stream the hub has now or makes later, until shutdown.
pub fn spawn(cluster: Cluster, hub: Arc<Hub>, config: Arc<Config>, shutdown: Shutdown) {
    let board = Board::new(cluster.node());
    tokio::spawn(demand::listen(
        cluster.clone(),
        board.clone(),
        hub.clone(),
        shutdown.clone(),
    ));
    let shared = Arc::new(Shared {
        cluster,
        board,
        config,
    });
    tokio::spawn(follow_streams(shared, hub, shutdown));
}

/// Starts a relay task for each stream of the hub, as streams are made.
async fn follow_streams(shared: Arc<Shared>, hub: Arc<Hub>, mut shutdown: Shutdown) {
    let mut created = hub.watch_created();
    let mut relayed: HashSet<usize> = HashSet::new();
    loop {
        created.mark_unchanged();
        for stream in hub.streams() {
            // A stream is known by its allocation: one of the same name made
            // after the first was forgotten gets its own task.
            if relayed.insert(Arc::as_ptr(&stream) as usize) {
                let task = StreamRelay::new(shared.clone(), &stream);
                tokio::spawn(task.run(shutdown.clone()));
            }
        }
        relayed.retain(|&p| hub.streams().iter().any(|s| Arc::as_ptr(s) as usize == p));
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = created.changed() => if changed.is_err() { return },
        }
    }
}

/// One stream's link to the cluster.
struct StreamRelay {
    shared: Arc<Shared>,
    name: String,
    /// Not kept alive by this task: the hub may forget an unused stream.
    stream: Weak<Stream>,
    /// A configured camera feeds it here.
    camera: bool,
    /// Held while another node wants the stream and this one has a source.
    hold: Option<DemandGuard>,
    /// The frame number last published.
    published: u64,
    /// While this node takes the stream from the cluster.
    taking: Option<Taking>,
    /// What this node last said about the stream.
    said: Option<Said>,
    /// Another node had a source for the stream when last looked.
    remote_source: bool,
}

/// A subscription to another node's frames of the stream.
struct Taking {
    subscriber: async_nats::Subscriber,
    /// Intake for the frames, as for an upload.
    receiver: Receiver,
    /// The origin node and frame number last taken, to drop repeats.
    last: Option<(Arc<str>, u64)>,
    since: Instant,
    last_frame: Option<Instant>,
}

impl StreamRelay {
    fn new(shared: Arc<Shared>, stream: &Arc<Stream>) -> StreamRelay {
        let name = stream.name().to_owned();
        let camera = shared.config.capture.cameras.iter().any(|c| c.name == name);
        StreamRelay {
            shared,
            name,
            stream: Arc::downgrade(stream),
            camera,
            hold: None,
            published: 0,
            taking: None,
            said: None,
            remote_source: false,
        }
    }

    async fn run(mut self, mut shutdown: Shutdown) {
        let Some(stream) = self.stream.upgrade() else {
            return;
        };
        let mut demand = stream.demand_watch();
        let mut frames = stream.subscribe();
        drop(stream);
        let mut board = self.shared.board.watch();
        let mut connections = self.shared.cluster.connections();
        let mut tick = tokio::time::interval(demand::ANNOUNCE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut announce_now = false;
        loop {
            let Some(stream) = self.stream.upgrade() else {
                return;
            };
            let said = self.settle(&stream, demand.current()).await;
            if self.said != Some(said) || announce_now {
                // A node that stops wanting a stream says so once, at once.
                if said.demand > 0 || said.source || self.said.is_some() {
                    demand::announce(&self.shared.cluster, &self.name, said).await;
                }
                self.said = Some(said);
                announce_now = false;
            }
            drop(stream);
            let next_message = async {
                match &mut self.taking {
                    Some(taking) => taking.subscriber.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait() => {
                    // The other relays need not wait 3 s to forget this one.
                    if self.said.is_some_and(|said| said.demand > 0 || said.source) {
                        let gone = Said { demand: 0, source: false };
                        demand::announce(&self.shared.cluster, &self.name, gone).await;
                    }
                    return;
                }
                _ = demand.changed() => {},
                _ = board.changed() => {}
                changed = frames.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.publish_newest(&mut frames).await;
                }
                message = next_message => match message {
                    Some(message) => self.take(message).await,
                    // The client is gone: subscribe again on the next one.
                    None => self.taking = None,
                },
                _ = connections.changed() => {
                    self.taking = None;
                    announce_now = true;
                }
                _ = tick.tick() => {
                    announce_now = said.demand > 0 || said.source;
                    self.check_silence();
                }
            }
        }
    }

    /// Takes up or lets go of this node's roles for the stream, from what it
    /// has and what is wanted where; returns what to tell the other nodes.
    async fn settle(&mut self, stream: &Arc<Stream>, demand: usize) -> Said {
        let local = demand.saturating_sub(self.hold.is_some() as usize);
        let source = self.camera || stream.is_uploading();
        let remote = self.shared.board.remote_demand(&self.name);
        if source && remote > 0 {
            if self.hold.is_none() {
                tracing::debug!(stream = %self.name, remote, "wanted on other relays");
                self.hold = Some(stream.demand(Audience::Staff));
                // The frame held now goes out at once, if it was not sent yet.
                let mut now = stream.subscribe();
                now.mark_changed();
                self.publish_newest(&mut now).await;
            }
        } else {
            self.hold = None;
        }
        // The node with the camera says when its source goes away (an uploader
        // left): this node's viewers are told at once, as they would be there.
        let remote_source = self.shared.board.remote_source(&self.name);
        if self.remote_source && !remote_source && !source && self.taking.is_some() {
            stream.set_offline("the relay with the camera has lost it");
        }
        self.remote_source = remote_source;
        let take = !source && local > 0;
        if take && self.taking.is_none() {
            self.taking = subscribe(&self.shared, &self.name, stream).await;
        } else if !take && self.taking.is_some() {
            tracing::debug!(stream = %self.name, "no longer taking frames from the cluster");
            self.taking = None;
        }
        Said {
            demand: local,
            source,
        }
    }

    /// Publishes the hub's newest frame if it is this node's own and new, while
    /// another node wants the stream.
    async fn publish_newest(&mut self, frames: &mut watch::Receiver<Snapshot>) {
        let frame = {
            let snapshot = frames.borrow_and_update();
            if self.hold.is_none() || snapshot.status != StreamStatus::Live {
                return;
            }
            match &snapshot.frame {
                Some(frame) if frame.relayed_from().is_none() => frame.clone(),
                _ => return,
            }
        };
        let Some(seq) = frame.seq() else { return };
        if seq <= self.published {
            return;
        }
        self.published = seq;
        let cluster = &self.shared.cluster;
        let client = cluster.client();
        if client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SEQ, seq.to_string());
        headers.insert(TIME, (frame.captured_unix_ms * 1000).to_string());
        headers.insert(NODE, cluster.node());
        let subject = format!("{SUBJECT_PREFIX}{}", self.name);
        let send = client.publish_with_headers(subject, headers, frame.jpeg.clone());
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(())) => cluster.count_frame(&self.name, true),
            Ok(Err(e)) => tracing::debug!(stream = %self.name, error = %e, "frame not published"),
            Err(_) => tracing::debug!(stream = %self.name, "frame skipped: NATS is busy"),
        }
    }

    /// Feeds the newest frame that arrived (this one, or one that came after
    /// it meanwhile) into the hub through intake.
    async fn take(&mut self, first: async_nats::Message) {
        let Some(taking) = &mut self.taking else {
            return;
        };
        let mut newest = first;
        while let Some(Some(later)) = taking.subscriber.next().now_or_never() {
            newest = later;
        }
        let Some(origin) = Origin::of(&newest) else {
            tracing::debug!(stream = %self.name, "a frame without its origin headers, dropped");
            return;
        };
        if *origin.node == *self.shared.cluster.node() {
            return;
        }
        if let Some((node, seq)) = &taking.last {
            if *node == origin.node && *seq >= origin.seq {
                return;
            }
        }
        taking.last = Some((origin.node.clone(), origin.seq));
        match taking
            .receiver
            .receive(Incoming::Binary(newest.payload))
            .await
        {
            Ok(admitted) => {
                let Some(stream) = self.stream.upgrade() else {
                    return;
                };
                stream.publish(
                    admitted
                        .captured_at(origin.time_us / 1000)
                        .relayed(origin.node, origin.seq),
                );
                taking.last_frame = Some(Instant::now());
                self.shared.cluster.count_frame(&self.name, false);
            }
            Err(e) => {
                tracing::debug!(stream = %self.name, node = %origin.node, error = %e, "relayed frame refused")
            }
        }
    }

    /// Shows the stream offline when its frames stop coming from the cluster
    /// while this node still wants them.
    fn check_silence(&self) {
        let Some(taking) = &self.taking else { return };
        let since = taking.last_frame.unwrap_or(taking.since);
        if since.elapsed() < SILENT_SOURCE {
            return;
        }
        if let Some(stream) = self.stream.upgrade() {
            if stream.current().status == StreamStatus::Live {
                stream.set_offline("no frames from the relay that has the camera");
            }
        }
    }
}

/// Subscribes to stream `name`'s frames from the cluster, with an intake to
/// take them in.
async fn subscribe(shared: &Shared, name: &str, stream: &Arc<Stream>) -> Option<Taking> {
    let subject = format!("{SUBJECT_PREFIX}{}", name);
    let subscriber = match shared.cluster.client().subscribe(subject).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "cannot take frames from the cluster");
            return None;
        }
    };
    let config = &shared.config;
    let receiver = Receiver::new(
        stream.clone(),
        config.capture.quality,
        config.limits.max_upload_bytes,
    )
    .ok()?;
    tracing::debug!(stream = %name, "taking frames from the cluster");
    Some(Taking {
        subscriber,
        receiver,
        last: None,
        since: Instant::now(),
        last_frame: None,
    })
}

/// Where and when a relayed frame was taken, from its headers.
struct Origin {
    node: Arc<str>,
    seq: u64,
    time_us: u64,
}

impl Origin {
    fn of(message: &async_nats::Message) -> Option<Origin> {
        let headers = message.headers.as_ref()?;
        let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
        Some(Origin {
            node: Arc::from(headers.get(NODE)?.as_str()),
            seq: number(SEQ)?,
            time_us: number(TIME)?,
        })
    }
}
