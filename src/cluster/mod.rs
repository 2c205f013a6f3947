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
//! A reconnect can itself hang: the kernel of a stopped server still accepts TCP
//! connections, and the client then waits for the server's greeting for ever.
//! When the link stays down that way, the probe replaces the client by a new one
//! that tries the silent server last; users of the connection follow
//! [`Cluster::connections`] and take the new client from [`Cluster::client`].

pub mod audit;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::connection::State;
use async_nats::{jetstream, Client, ServerAddr};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::config::ClusterConfig;
use crate::shutdown::Shutdown;

/// How often the probe makes its round trip.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one round trip may take before it counts as missed.
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);
/// Missed round trips in a row that mark a connected server silent.
const MISSES_TO_DOWN: u32 = 2;
/// How long the link may stay down after a reconnect was forced before the
/// client is replaced (a reconnect stuck on the silent server).
const STUCK_AFTER: Duration = Duration::from_secs(4);
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

    /// `/stats.json`'s `cluster` object.
    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.inner.node,
            "healthy": self.health().ok(),
        })
    }

    /// Runs the health probe until shutdown.
    pub fn spawn_probe(&self, shutdown: Shutdown) {
        tokio::spawn(probe(self.clone(), shutdown));
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
                self.inner.conn.send_replace(conn);
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

/// `urls` with the server `client` is connected to moved to the end.
fn silent_last(urls: &[ServerAddr], client: &Client) -> Vec<ServerAddr> {
    let info = client.server_info();
    let (mut others, mut silent): (Vec<_>, Vec<_>) = urls
        .iter()
        .cloned()
        .partition(|u| u.port() != info.port || !(u.host() == info.host || info.host == "0.0.0.0"));
    others.append(&mut silent);
    others
}

async fn probe(cluster: Cluster, mut shutdown: Shutdown) {
    let inner = &cluster.inner;
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut generation = cluster.connections();
    let mut echo: Option<Echo> = None;
    let mut misses = 0u32;
    // When a reconnect was forced and the link has not come back since.
    let mut forced_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        if generation.has_changed().unwrap_or(false) {
            generation.mark_unchanged();
            echo = None;
            misses = 0;
            forced_at = None;
        }
        let client = cluster.client();
        let connected = client.connection_state() == State::Connected;
        if echo.is_none() && connected {
            echo = Echo::new(&client).await;
        }
        let (rtt, jetstream) = match (&mut echo, connected) {
            (Some(echo), true) => tokio::join!(echo.round_trip(&client), jetstream_up(&client)),
            _ => (None, false),
        };
        let was = cluster.health();
        let nats = match rtt {
            Some(_) => {
                misses = 0;
                forced_at = None;
                true
            }
            None if !connected => false,
            None => {
                misses += 1;
                if misses == MISSES_TO_DOWN {
                    tracing::warn!(
                        node = %inner.node, server = ?server_of(&client),
                        "the NATS server stopped answering; reconnecting to another"
                    );
                    inner.reconnects_forced.fetch_add(1, Ordering::Relaxed);
                    let _ = client.force_reconnect().await;
                    forced_at = Some(Instant::now());
                }
                misses < MISSES_TO_DOWN && was.nats
            }
        };
        if !nats && forced_at.is_some_and(|at| at.elapsed() >= STUCK_AFTER) {
            tracing::warn!(node = %inner.node, "the NATS reconnect is stuck; starting a new client");
            let urls = silent_last(&inner.urls, &client);
            cluster.replace_client(urls).await;
            generation.mark_unchanged();
            echo = None;
            misses = 0;
            forced_at = None;
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
