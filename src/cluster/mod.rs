//! The relay's link to a NATS cluster (`--nats`): one connection per node, and
//! whether it works.
//!
//! Relays scale out on NATS rather than on a home-made cluster: NATS carries the
//! frames and the demand between relays (`frames`, `demand`) and JetStream holds
//! what must survive a node (chat). This module owns the connection that all of
//! them share, and its health: a load balancer must take a node out as soon as
//! its NATS server stops answering, and some `async-nats` versions do not notice
//! a silent server (one that is stopped, or cut off without a reset) while the
//! client publishes often, so a probe makes a real round trip through the server
//! every second. Two missed round trips in a row (about 2-3 s) mark the link
//! down and make the client reconnect to another server; `/healthz` answers 503
//! while NATS or JetStream is down.
//!
//! A (re)connect can itself hang: the kernel of a stopped server still accepts
//! TCP connections, and the client then waits for the server's greeting for
//! ever. When the client stays without a connection for 1 s while some server
//! greets new connections at once, the probe replaces it by a new client that
//! tries the servers that greet first; users of the connection follow
//! [`Cluster::connections`] and take the new client from [`Cluster::client`].
//! The servers looked at are the configured ones and those the cluster
//! announced (`connect_urls`): a relay given one `--nats` server that then
//! goes silent must still find the others.

pub mod audit;
pub mod chat;
pub mod demand;
mod follow;
pub mod frames;
mod hedge;
pub mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::connection::State;
use async_nats::{jetstream, Client, ServerAddr};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::config::ClusterConfig;
use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// How often the probe makes its round trip.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one round trip may take before it counts as missed.
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);
/// Missed round trips in a row that mark a connected server silent.
const MISSES_TO_DOWN: u32 = 2;
/// How long the client may stay without a connection, while some server
/// answers, before it is taken to be stuck on a silent one and replaced: a
/// reconnect to a live server takes milliseconds.
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// How long one connection attempt (TCP) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's NATS client and JetStream context, replaced together.
#[derive(Clone, Debug)]
pub struct Conn {
    pub client: Client,
    pub jetstream: jetstream::Context,
}

/// What the probe last found, for `/healthz`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// The NATS server answered the last round trip (or the one before).
    pub nats: bool,
    /// The server this node is connected to, `name (host:port)`.
    pub server: Option<String>,
    /// JetStream answered (`$JS.API.INFO`).
    pub jetstream: bool,
    /// The last round trip through the server, in milliseconds.
    pub rtt_ms: Option<f64>,
}

impl Health {
    /// Whether this node can serve as a relay: NATS and JetStream both up.
    pub fn ok(&self) -> bool {
        self.nats && self.jetstream
    }
}

/// Frames of one stream this node sent to and took from the cluster.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct FrameCounts {
    pub published: u64,
    pub received: u64,
}

/// A clustered node's handle on NATS; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    urls: Vec<ServerAddr>,
    conn: watch::Sender<Conn>,
    /// Bumped each time the client is replaced.
    generation: watch::Sender<u64>,
    /// Shared with the clients' event callbacks, which mark the link down the
    /// moment a connection drops.
    health: Arc<watch::Sender<Health>>,
    /// The current client's generation, for those callbacks.
    current: Arc<AtomicU64>,
    reconnects_forced: AtomicU64,
    frames: Mutex<BTreeMap<String, FrameCounts>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts connecting to the servers of `config` and returns at once: a node
    /// whose NATS is not up yet starts anyway, reports itself down in
    /// `/healthz`, and joins when a server answers. Errors only for servers
    /// that cannot be parsed.
    pub async fn connect(config: &ClusterConfig) -> anyhow::Result<Cluster> {
        let urls = config
            .nats_urls
            .iter()
            .map(|u| {
                u.parse::<ServerAddr>()
                    .with_context(|| format!("invalid NATS server {u:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let health = Arc::new(watch::Sender::new(Health::default()));
        let current = Arc::new(AtomicU64::new(0));
        let events = Events {
            node: config.node_name.clone(),
            health: health.clone(),
            current: current.clone(),
            generation: 0,
        };
        let client = connect_client(&config.node_name, urls.clone(), false, events).await?;
        let conn = Conn {
            jetstream: jetstream::new(client.clone()),
            client,
        };
        tracing::info!(node = %config.node_name, servers = ?config.nats_urls, "joining the NATS cluster");
        Ok(Cluster {
            inner: Arc::new(Inner {
                node: config.node_name.clone(),
                urls,
                conn: watch::Sender::new(conn),
                generation: watch::Sender::new(0),
                health,
                current,
                reconnects_forced: AtomicU64::new(0),
                frames: Mutex::default(),
            }),
        })
    }

    /// This node's name in the cluster.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The NATS client now (a new one after a replacement; see [`Cluster::connections`]).
    pub fn client(&self) -> Client {
        self.inner.conn.borrow().client.clone()
    }

    /// The JetStream context on the client now.
    pub fn jetstream(&self) -> jetstream::Context {
        self.inner.conn.borrow().jetstream.clone()
    }

    /// Changes each time the client is replaced: subscriptions made on the old
    /// one must be made again on [`Cluster::client`].
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The link's health now.
    pub fn health(&self) -> Health {
        self.inner.health.borrow().clone()
    }

    /// Follows the link's health.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.inner.health.subscribe()
    }

    /// Counts a frame of `stream` sent to (`published`) or taken from the cluster.
    pub(crate) fn count_frame(&self, stream: &str, published: bool) {
        let mut frames = self.inner.frames.locked();
        let counts = frames.entry(stream.to_owned()).or_default();
        if published {
            counts.published += 1;
        } else {
            counts.received += 1;
        }
    }

    /// Frames sent to and taken from the cluster, per stream.
    pub fn frame_counts(&self) -> BTreeMap<String, FrameCounts> {
        self.inner.frames.locked().clone()
    }

    /// `/healthz`'s `cluster` object.
    pub fn health_json(&self) -> serde_json::Value {
        let h = self.health();
        serde_json::json!({
            "node": self.inner.node,
            "nats": if h.nats { "connected" } else { "down" },
            "server": h.server,
            "jetstream": h.jetstream,
            "rtt_ms": h.rtt_ms,
            "reconnects_forced": self.inner.reconnects_forced.load(Ordering::Relaxed),
        })
    }

    /// `/stats.json`'s `cluster` object: the node, and per stream the frames
    /// it published to the cluster and received from it.
    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.inner.node,
            "healthy": self.health().ok(),
            "frames": self.frame_counts(),
        })
    }

    /// Runs the health probe, and relays frames and demand between `hub` and
    /// the cluster, until shutdown.
    pub fn spawn(&self, hub: Arc<crate::hub::Hub>, config: Arc<crate::Config>, shutdown: Shutdown) {
        tokio::spawn(probe(self.clone(), shutdown.clone()));
        frames::spawn(self.clone(), hub, config, shutdown);
    }

    /// Makes a new client that tries the servers in `urls`' order, and hands
    /// it to every user of the connection.
    async fn replace_client(&self, urls: Vec<ServerAddr>) {
        let generation = *self.inner.generation.borrow() + 1;
        let events = Events {
            node: self.inner.node.clone(),
            health: self.inner.health.clone(),
            current: self.inner.current.clone(),
            generation,
        };
        match connect_client(&self.inner.node, urls, true, events).await {
            Ok(client) => {
                let conn = Conn {
                    jetstream: jetstream::new(client.clone()),
                    client,
                };
                let old = self.inner.conn.send_replace(conn);
                // It closes once its stuck attempt ends (the silent server
                // resumes or dies), rather than reconnecting for ever.
                tokio::spawn(async move { old.client.drain().await });
                self.inner.current.store(generation, Ordering::Release);
                self.inner.generation.send_replace(generation);
            }
            Err(e) => tracing::error!(error = %e, "cannot make a new NATS client"),
        }
    }
}

/// What a client's event callback needs: it logs, and marks the link down the
/// moment the current client's connection drops (the probe brings it back up
/// after a round trip on the new connection).
#[derive(Clone)]
struct Events {
    node: String,
    health: Arc<watch::Sender<Health>>,
    current: Arc<AtomicU64>,
    /// Which client this is.
    generation: u64,
}

impl Events {
    fn on(&self, event: async_nats::Event) {
        let node = &self.node;
        let current = self.current.load(Ordering::Acquire) == self.generation;
        match event {
            async_nats::Event::Connected => tracing::info!(%node, "NATS connected"),
            async_nats::Event::Disconnected => {
                tracing::warn!(%node, "NATS disconnected, reconnecting");
                if current {
                    self.health.send_modify(|h| {
                        h.nats = false;
                        h.jetstream = false;
                        h.server = None;
                    });
                }
            }
            other => tracing::debug!(%node, event = %other, "NATS event"),
        }
    }
}

/// A client for `urls` named after the node. It connects in the background,
/// retrying for ever; `in_order` tries the servers in the order given.
async fn connect_client(
    node: &str,
    urls: Vec<ServerAddr>,
    in_order: bool,
    events: Events,
) -> anyhow::Result<Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(node)
        .retry_on_initial_connect()
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        // Reconnect attempts back off to at most 1 s: a relay's viewers wait.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_sub(1).min(10) * 100)
        })
        .event_callback(move |event| {
            events.on(event);
            std::future::ready(())
        });
    if in_order {
        options = options.retain_servers_order();
    }
    options
        .connect(urls)
        .await
        .context("cannot start the NATS client")
}

/// The probe's round trip: a message to this node's own inbox, through the
/// server. Returns how long it took.
struct Echo {
    subject: String,
    subscriber: async_nats::Subscriber,
    sent: u64,
}

impl Echo {
    async fn new(client: &Client) -> Option<Echo> {
        let subject = client.new_inbox();
        let subscriber = client.subscribe(subject.clone()).await.ok()?;
        Some(Echo {
            subject,
            subscriber,
            sent: 0,
        })
    }

    async fn round_trip(&mut self, client: &Client) -> Option<Duration> {
        self.sent += 1;
        let token = self.sent.to_string();
        let started = Instant::now();
        let trip = async {
            client
                .publish(self.subject.clone(), token.clone().into())
                .await
                .ok()?;
            client.flush().await.ok()?;
            while let Some(message) = self.subscriber.next().await {
                if message.payload == token.as_bytes() {
                    return Some(started.elapsed());
                }
            }
            None
        };
        tokio::time::timeout(PROBE_TIMEOUT, trip).await.ok()?
    }
}

/// Whether JetStream answers on this connection.
async fn jetstream_up(client: &Client) -> bool {
    let ask = client.request("$JS.API.INFO", bytes::Bytes::new());
    match tokio::time::timeout(PROBE_TIMEOUT, ask).await {
        Ok(Ok(reply)) => serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .map(|v| v.get("error").is_none())
            .unwrap_or(false),
        _ => false,
    }
}

fn server_of(client: &Client) -> Option<String> {
    let info = client.server_info();
    (!info.server_id.is_empty())
        .then(|| format!("{} ({}:{})", info.server_name, info.host, info.port))
}

/// Whether the server at `url` greets a new connection (`INFO`) promptly: a
/// stopped or frozen server accepts TCP (its kernel does) but says nothing.
async fn greets(url: &ServerAddr) -> bool {
    let check = async {
        let mut tcp = tokio::net::TcpStream::connect((url.host(), url.port()))
            .await
            .ok()?;
        let mut first = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut first)
            .await
            .ok()?;
        Some(&first == b"INFO")
    };
    tokio::time::timeout(PROBE_TIMEOUT, check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Adds to `known` the servers a server announced (`connect_urls`, as
/// `host:port`) that it does not hold yet; unreadable ones are left out.
fn learn(known: &mut Vec<ServerAddr>, announced: &[String]) {
    for url in announced {
        match url.parse::<ServerAddr>() {
            Ok(addr) if !known.contains(&addr) => known.push(addr),
            Ok(_) => {}
            Err(e) => tracing::debug!(url, error = %e, "an announced NATS server that is not one"),
        }
    }
}

/// For a client that has been without a connection for [`STUCK_AFTER`]: when
/// some server greets new connections at once, the client's (re)connect is
/// stuck on a silent one, and a new client should try the servers that greet
/// first (starting at one picked by `spread`, so that relays do not all crowd
/// onto the same server). `None` when no server answers at all: then there is
/// nothing better to do than the client's own retries.
async fn unstick(urls: &[ServerAddr], spread: usize) -> Option<Vec<ServerAddr>> {
    let greeting = futures_util::future::join_all(urls.iter().map(greets)).await;
    let (mut first, mut last): (Vec<_>, Vec<_>) = urls.iter().zip(&greeting).partition(|(_, &g)| g);
    if first.is_empty() {
        return None;
    }
    let turn = spread % first.len();
    first.rotate_left(turn);
    first.append(&mut last);
    Some(first.into_iter().map(|(u, _)| u.clone()).collect())
}

/// Probes the link every [`PROBE_EVERY`] until shutdown, which ends a probe
/// in the middle too.
async fn probe(cluster: Cluster, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut probe = Probe {
        generation: cluster.connections(),
        known: cluster.inner.urls.clone(),
        cluster,
        echo: None,
        misses: 0,
        unconnected_since: Some(Instant::now()),
    };
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = async {
                ticker.tick().await;
                probe.step().await;
            } => {}
        }
    }
}

/// What the probe keeps from one round to the next.
struct Probe {
    cluster: Cluster,
    generation: watch::Receiver<u64>,
    /// The configured servers, then those the cluster announced since.
    known: Vec<ServerAddr>,
    echo: Option<Echo>,
    /// Round trips missed in a row on the current connection.
    misses: u32,
    /// Since when the current client has had no connection.
    unconnected_since: Option<Instant>,
}

impl Probe {
    async fn step(&mut self) {
        let cluster = self.cluster.clone();
        let inner = &cluster.inner;
        if self.generation.has_changed().unwrap_or(false) {
            self.generation.mark_unchanged();
            self.echo = None;
            self.misses = 0;
            self.unconnected_since = Some(Instant::now());
        }
        let client = cluster.client();
        let connected = client.connection_state() == State::Connected;
        if connected {
            self.unconnected_since = None;
            learn(&mut self.known, &client.server_info().connect_urls);
        } else {
            self.unconnected_since.get_or_insert_with(Instant::now);
        }
        if self.echo.is_none() && connected {
            self.echo = Echo::new(&client).await;
        }
        let (rtt, jetstream) = match (&mut self.echo, connected) {
            (Some(echo), true) => tokio::join!(echo.round_trip(&client), jetstream_up(&client)),
            _ => (None, false),
        };
        let was = cluster.health();
        let nats = match rtt {
            Some(_) => {
                self.misses = 0;
                true
            }
            None if !connected => false,
            None => {
                self.misses += 1;
                if self.misses == MISSES_TO_DOWN {
                    tracing::warn!(
                        node = %inner.node, server = ?server_of(&client),
                        "the NATS server stopped answering; reconnecting to another"
                    );
                    inner.reconnects_forced.fetch_add(1, Ordering::Relaxed);
                    let force = client.force_reconnect();
                    let _ = tokio::time::timeout(PROBE_TIMEOUT, force).await;
                    // Without a connection from now on, until the new one.
                    self.unconnected_since = Some(Instant::now());
                }
                self.misses < MISSES_TO_DOWN && was.nats
            }
        };
        let stuck = self
            .unconnected_since
            .is_some_and(|at| at.elapsed() >= STUCK_AFTER);
        if stuck {
            let spread = inner.node.bytes().map(usize::from).sum::<usize>();
            if let Some(urls) = unstick(&self.known, spread).await {
                tracing::warn!(
                    node = %inner.node,
                    "the NATS client is stuck on a server that does not answer; starting a new one"
                );
                cluster.replace_client(urls).await;
                self.generation.mark_unchanged();
                self.echo = None;
                self.misses = 0;
            }
            // Another look after as long again, whatever was found.
            self.unconnected_since = Some(Instant::now());
        }
        let health = Health {
            nats,
            server: if nats { server_of(&client) } else { None },
            jetstream: nats && jetstream,
            rtt_ms: rtt.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
        };
        if health.ok() != was.ok() || health.nats != was.nats {
            if health.ok() {
                tracing::info!(node = %inner.node, server = ?health.server, "cluster link healthy");
            } else {
                tracing::warn!(node = %inner.node, nats = health.nats, jetstream = health.jetstream, "cluster link down");
            }
        }
        inner.health.send_replace(health);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server that accepts connections and then says `greeting`, or nothing.
    async fn server(greeting: Option<&'static [u8]>) -> ServerAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                if let Some(greeting) = greeting {
                    let _ = socket.write_all(greeting).await;
                }
                held.push(socket);
            }
        });
        format!("nats://127.0.0.1:{port}").parse().unwrap()
    }

    #[test]
    fn the_servers_a_cluster_announces_are_kept_once_after_the_configured_ones() {
        let configured: ServerAddr = "nats://127.0.0.1:4222".parse().unwrap();
        let mut known = vec![configured.clone()];
        let announced = ["127.0.0.1:4222", "127.0.0.1:4223", "127.0.0.1:4224"].map(String::from);
        learn(&mut known, &announced);
        learn(&mut known, &announced[1..]);
        let want: Vec<ServerAddr> = ["nats://127.0.0.1:4222", "127.0.0.1:4223", "127.0.0.1:4224"]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect();
        assert_eq!(
            known, want,
            "a silent configured server is not the only one tried"
        );
    }

    #[tokio::test]
    async fn a_client_stuck_on_a_silent_server_is_sent_to_the_ones_that_greet() {
        let silent = server(None).await;
        let live = server(Some(b"INFO {\"server_id\":\"x\"}\r\n")).await;
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down: ServerAddr = format!("nats://{}", unused.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(unused);
        let started = Instant::now();
        let order = unstick(&[silent.clone(), down.clone(), live.clone()], 7)
            .await
            .expect("a server greets");
        assert_eq!(order, [live.clone(), silent.clone(), down.clone()]);
        assert!(
            started.elapsed() < PROBE_TIMEOUT + Duration::from_millis(500),
            "the servers are asked at once, each for at most {PROBE_TIMEOUT:?}"
        );
        let other = server(Some(b"INFO {}\r\n")).await;
        let order = unstick(&[live.clone(), silent.clone(), other.clone()], 1)
            .await
            .unwrap();
        assert_eq!(
            order,
            [other, live, silent.clone()],
            "spread over those that greet"
        );
        assert!(
            unstick(&[silent, down], 0).await.is_none(),
            "nobody answers: nothing better than the client's own retries"
        );
    }
}
