//! Push out through NAT: a camera stream sent to a relay on the internet, so
//! parents can watch from anywhere while the school opens nothing inbound.
//!
//! For each `--push-to` stream one task dials the relay's `/upload/NAME`
//! (`client`), keeps the session (`session`: frames out while the relay has
//! demand, its demand, gate and refusals in) and, when that fails, tries again
//! after a growing wait, going round its failover relays (`backoff`). Every
//! attempt that fails is logged in one line saying why. [`Board`] holds each
//! pusher's state for `/stats.json` and `/healthz`.

pub mod backoff;
pub mod client;
pub mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Push, PushConfig};
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::sync::Locked;
use backoff::Backoff;
use client::Dialer;
use session::Ended;

/// The state of one pusher, shared with the pages.
#[derive(Debug)]
pub struct Status {
    pub stream: String,
    relays: Vec<String>,
    state: Mutex<State>,
    pub frames_sent: AtomicU64,
    /// Frames the camera made while the link was busy, never sent.
    pub frames_skipped: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub failures: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct State {
    /// The relay of the session now.
    connected: Option<String>,
    /// The relay's last demand; `None` before it said one.
    relay_demand: Option<u64>,
    last_error: Option<String>,
}

impl Status {
    fn new(push: &Push) -> Status {
        Status {
            stream: push.stream.clone(),
            relays: push.urls.iter().map(|u| u.to_string()).collect(),
            state: Mutex::new(State::default()),
            frames_sent: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_demand(&self, viewers: Option<u64>) {
        self.state.locked().relay_demand = viewers;
    }

    fn connected(&self, relay: Option<&str>) {
        let mut state = self.state.locked();
        state.connected = relay.map(str::to_owned);
        state.relay_demand = None;
    }

    fn failed(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.locked();
        state.connected = None;
        state.relay_demand = None;
        state.last_error = Some(why);
    }

    /// `/stats.json`'s entry: the relays, the one connected now, its demand,
    /// what was sent and the last failure.
    pub fn to_json(&self) -> serde_json::Value {
        let state = self.state.locked().clone();
        serde_json::json!({
            "stream": self.stream,
            "relays": self.relays,
            "connected": state.connected,
            "relay_demand": state.relay_demand,
            "frames_sent": self.frames_sent.load(Ordering::Relaxed),
            "frames_skipped": self.frames_skipped.load(Ordering::Relaxed),
            "bytes_sent": self.bytes_sent.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "last_error": state.last_error,
        })
    }

    /// `/healthz`'s entry: connected or not, nothing about where.
    pub fn health(&self) -> serde_json::Value {
        let state = self.state.locked();
        serde_json::json!({
            "stream": self.stream,
            "connected": state.connected.is_some(),
            "relay_demand": state.relay_demand,
        })
    }
}

/// Every pusher's state.
#[derive(Debug, Default)]
pub struct Board {
    pushers: Vec<Arc<Status>>,
}

impl Board {
    pub fn pushers(&self) -> &[Arc<Status>] {
        &self.pushers
    }
}

/// The pushes configured, checked and ready to start (their TLS settings
/// loaded, so that a bad `--push-ca` stops the daemon before it serves).
pub struct Pushes {
    config: PushConfig,
    dialer: Arc<Dialer>,
}

impl Pushes {
    pub fn prepare(config: &PushConfig) -> anyhow::Result<Pushes> {
        Ok(Pushes {
            dialer: Arc::new(Dialer::new(config)?),
            config: config.clone(),
        })
    }

    /// Starts one pusher per pushed stream; each ends with the daemon.
    pub fn spawn(self, hub: &Hub, shutdown: &Shutdown) -> anyhow::Result<Arc<Board>> {
        let mut board = Board::default();
        for push in &self.config.pushes {
            let stream = hub
                .stream(&push.stream)
                .map_err(|e| anyhow::anyhow!("cannot push stream {:?}: {e}", push.stream))?;
            let status = Arc::new(Status::new(push));
            board.pushers.push(status.clone());
            tokio::spawn(run(
                push.clone(),
                stream,
                self.dialer.clone(),
                status,
                shutdown.clone(),
            ));
        }
        Ok(Arc::new(board))
    }
}

/// One pusher: dial, keep the session, and after it fails wait and dial the
/// next relay, until shutdown.
async fn run(
    push: Push,
    stream: Arc<crate::hub::Stream>,
    dialer: Arc<Dialer>,
    status: Arc<Status>,
    mut shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(push.urls.len());
    loop {
        let url = &push.urls[backoff.relay()];
        let dialed = tokio::select! {
            _ = shutdown.wait() => return,
            dialed = dialer.dial(url) => dialed,
        };
        let wait = match dialed {
            Ok(ws) => {
                tracing::info!(stream = %push.stream, relay = %url, "pushing to the relay");
                status.connected(Some(url.as_str()));
                let began = Instant::now();
                match session::run(ws, &stream, &status, &mut shutdown).await {
                    Ended::Shutdown => {
                        status.connected(None);
                        return;
                    }
                    Ended::Failed(why) => {
                        let wait = backoff.ended(began.elapsed(), backoff::jitter());
                        tracing::warn!(
                            stream = %push.stream, relay = %url, reason = why.kind(),
                            "push session ended: {why}; next try in {:.1} s", wait.as_secs_f64()
                        );
                        status.failed(why.to_string());
                        wait
                    }
                }
            }
            Err(why) => {
                let wait = backoff.failed(backoff::jitter());
                tracing::warn!(
                    stream = %push.stream, relay = %url, reason = why.kind(),
                    "push failed: {why}; next try in {:.1} s", wait.as_secs_f64()
                );
                status.failed(why.to_string());
                wait
            }
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
