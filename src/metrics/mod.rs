//! `GET /metrics`: the daemon's figures in the Prometheus text format, for the
//! director's monitoring (issue 12).
//!
//! Most figures already live with what they count: the hub's streams and viewers
//! (`hub.rs`), the chat rooms, the listeners' caps (`net.rs`). They are read at
//! scrape time by custom collectors ([`streams`], [`process`]) rather than kept
//! twice. What has no other home is counted here, in [`Metrics`]: logins by
//! result and connections refused by the handshake or the HTTP guard. Intake's
//! encode and mask times are [`FrameTimings`], one per stream, kept by the hub.
//!
//! Every name starts with `kindercam_` (but the standard `process_*`), is in base
//! units (seconds, bytes), and counters end in `_total`. Labels are bounded: a
//! stream name (at most [`crate::hub::MAX_STREAMS`]) and small fixed sets; never
//! a viewer or an address.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod process;
pub mod streams;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::chat::Rooms;
use crate::hub::Hub;
use crate::net::{Full, Gate};

/// The `Content-Type` of a scrape: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How a login through the form ended (`kindercam_logins_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Ok,
    WrongCode,
    RateLimited,
    BadName,
    /// Too many code checks queued at once.
    Busy,
}

impl LoginResult {
    const ALL: [LoginResult; 5] = [
        LoginResult::Ok,
        LoginResult::WrongCode,
        LoginResult::RateLimited,
        LoginResult::BadName,
        LoginResult::Busy,
    ];

    /// The label value, the same word the login page gets as `?error=`.
    pub fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::WrongCode => "wrong_code",
            LoginResult::RateLimited => "rate_limited",
            LoginResult::BadName => "bad_name",
            LoginResult::Busy => "busy",
        }
    }
}

/// Which port turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Ws,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Ws => "ws",
        }
    }
}

/// Why a connection or request was turned away before it was served
/// (`kindercam_refused_connections_total{listener,reason}`). The caps of
/// `net.rs` ([`Full`]) are counted by the listener's [`Gate`] itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The TLS handshake failed or timed out.
    Tls,
    /// The request head did not arrive in time.
    HeadTimeout,
    HeadTooLarge,
    /// Malformed, or not what this port serves.
    BadRequest,
    BodyTooLarge,
    /// A chunked body (only Content-Length is accepted).
    ChunkedBody,
    /// The request body did not arrive in time.
    BodyTimeout,
    /// No such WebSocket endpoint, or chat room.
    NotFound,
    /// A viewer asked for a stream nothing feeds.
    NoStream,
    /// Not WebSocket version 13.
    WrongVersion,
    /// The server could not take it now (a full hub, code checks queued).
    Busy,
    /// No valid session or code.
    Unauthorized,
    /// Identified, but not allowed this (or a foreign origin or host name).
    Forbidden,
    /// The login holds as many sockets as it may.
    TooManySockets,
    /// A family device over its `max_devices`.
    DeviceLimit,
    /// The family's login ended as the video socket opened.
    SessionEnded,
}

impl Refused {
    const COUNT: usize = 16;
    const ALL: [Refused; Refused::COUNT] = [
        Refused::Tls,
        Refused::HeadTimeout,
        Refused::HeadTooLarge,
        Refused::BadRequest,
        Refused::BodyTooLarge,
        Refused::ChunkedBody,
        Refused::BodyTimeout,
        Refused::NotFound,
        Refused::NoStream,
        Refused::WrongVersion,
        Refused::Busy,
        Refused::Unauthorized,
        Refused::Forbidden,
        Refused::TooManySockets,
        Refused::DeviceLimit,
        Refused::SessionEnded,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::Tls => "tls",
            Refused::HeadTimeout => "head_timeout",
            Refused::HeadTooLarge => "head_too_large",
            Refused::BadRequest => "bad_request",
            Refused::BodyTooLarge => "body_too_large",
            Refused::ChunkedBody => "chunked_body",
            Refused::BodyTimeout => "body_timeout",
            Refused::NotFound => "not_found",
            Refused::NoStream => "no_stream",
            Refused::WrongVersion => "wrong_version",
            Refused::Busy => "busy",
            Refused::Unauthorized => "unauthorized",
            Refused::Forbidden => "forbidden",
            Refused::TooManySockets => "too_many_sockets",
            Refused::DeviceLimit => "device_limit",
            Refused::SessionEnded => "session_ended",
        }
    }

    /// The HTTP guard's refusal with `status` (see `http_guard::rewrite`).
    pub fn of_http_status(status: u16) -> Refused {
        match status {
            408 => Refused::HeadTimeout,
            411 => Refused::ChunkedBody,
            413 => Refused::BodyTooLarge,
            431 => Refused::HeadTooLarge,
            _ => Refused::BadRequest,
        }
    }
}

/// The counters that have no other owner, one set per server. Cheap to count
/// into from any thread: a relaxed atomic add.
#[derive(Debug)]
pub struct Metrics {
    logins: Family<[(&'static str, &'static str); 1], Counter>,
    /// By [`Listener`] then [`Refused`] (`as usize`).
    refused: [[AtomicU64; Refused::COUNT]; 2],
}

impl Default for Metrics {
    fn default() -> Metrics {
        let logins = Family::default();
        // Every result from the start, so that a rate over it has a series at once.
        for result in LoginResult::ALL {
            let _ = logins.get_or_create(&[("result", result.label())]);
        }
        Metrics {
            logins,
            refused: Default::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts a login through the form.
    pub fn login(&self, result: LoginResult) {
        self.logins
            .get_or_create(&[("result", result.label())])
            .inc();
    }

    /// Counts a connection or request `listener` turned away for `why`.
    pub fn refused(&self, listener: Listener, why: Refused) {
        self.refused[listener as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How long intake takes with one stream's frames: encoding raw pictures to
/// JPEG, and burning in the privacy mask. One clock read before and after each.
#[derive(Debug)]
pub struct FrameTimings {
    encode: Histogram,
    mask: Histogram,
}

/// 0.25 ms to about 4 s, doubling: a small frame's encode on x86 to a full-HD
/// one on a Pi 2, and a stuck one.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 15)
}

impl Default for FrameTimings {
    fn default() -> FrameTimings {
        FrameTimings {
            encode: Histogram::new(duration_buckets()),
            mask: Histogram::new(duration_buckets()),
        }
    }
}

impl FrameTimings {
    /// Records an encode that began at `started` and has just ended.
    pub fn encode_took(&self, started: Instant) {
        self.encode.observe(started.elapsed().as_secs_f64());
    }

    /// Records a masking that began at `started` and has just ended.
    pub fn mask_took(&self, started: Instant) {
        self.mask.observe(started.elapsed().as_secs_f64());
    }
}

/// What a scrape reads: everything above, from one server.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub chat: Arc<Rooms>,
    pub http_gate: Arc<Gate>,
    pub ws_gate: Arc<Gate>,
    /// The relay's NATS cluster, if it is part of one.
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::Cluster>,
}

/// The registry one scrape encodes.
pub struct Exporter {
    registry: Registry,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    pub fn new(sources: Sources) -> Exporter {
        let mut registry = Registry::default();
        registry.register(
            "kindercam_logins",
            "Logins through the login form, by result",
            sources.metrics.logins.clone(),
        );
        registry.register_collector(Box::new(streams::StreamCollector(sources.hub.clone())));
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &sources.cluster {
            registry.register_collector(Box::new(cluster::ClusterCollector(cluster.clone())));
        }
        registry.register_collector(Box::new(ServerCollector(sources)));
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Exporter { registry }
    }

    /// The whole exposition, as of now.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The figures of the chat and the two listeners, read at scrape time.
struct ServerCollector(Sources);

/// By hand, and without the fields: a collector must be `Debug`, and a derived
/// one would link in the `Debug` of the hub, the chat rooms and all they hold
/// (30 KB of the Pi's binary), never called.
impl std::fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCollector")
    }
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let chat = ConstCounter::new(s.chat.messages_posted());
        chat.encode(encoder.encode_descriptor(
            "kindercam_chat_messages",
            "Chat messages posted, in every room",
            None,
            chat.metric_type(),
        )?)?;

        let gates = [(Listener::Http, &s.http_gate), (Listener::Ws, &s.ws_gate)];
        let mut open = encoder.encode_descriptor(
            "kindercam_open_connections",
            "Connections admitted on each port and not yet closed",
            None,
            MetricType::Gauge,
        )?;
        for (listener, gate) in gates {
            let labels = [("listener", listener.label())];
            ConstGauge::new(gate.open() as i64).encode(open.encode_family(&labels)?)?;
        }

        let mut refused = encoder.encode_descriptor(
            "kindercam_refused_connections",
            "Connections and requests turned away before being served, by port and reason",
            None,
            MetricType::Counter,
        )?;
        for (listener, gate) in gates {
            // The caps always, so that a rate over them has a series from the start.
            for full in Full::ALL {
                let labels = [("listener", listener.label()), ("reason", full.label())];
                ConstCounter::new(gate.refused(full)).encode(refused.encode_family(&labels)?)?;
            }
            for why in Refused::ALL {
                let n = s.metrics.refused[listener as usize][why as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("listener", listener.label()), ("reason", why.label())];
                    ConstCounter::new(n).encode(refused.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_logins_count_under_their_labels() {
        let metrics = Metrics::new();
        metrics.login(LoginResult::WrongCode);
        metrics.login(LoginResult::WrongCode);
        metrics.refused(Listener::Ws, Refused::WrongVersion);
        let gate = Gate::new(1, 0);
        let _held = gate.admit([10, 0, 0, 1].into()).unwrap();
        assert!(gate.admit([10, 0, 0, 2].into()).is_err());
        let store = crate::store::Store::in_memory(Default::default()).unwrap();
        let text = Exporter::new(Sources {
            metrics,
            hub: Arc::new(Hub::new()),
            chat: Arc::new(Rooms::new(store, 10)),
            http_gate: gate,
            ws_gate: Gate::new(1, 0),
            #[cfg(feature = "cluster")]
            cluster: None,
        })
        .render();
        for line in [
            "kindercam_logins_total{result=\"wrong_code\"} 2",
            "kindercam_logins_total{result=\"ok\"} 0",
            "kindercam_refused_connections_total{listener=\"ws\",reason=\"wrong_version\"} 1",
            "kindercam_refused_connections_total{listener=\"http\",reason=\"too_many_connections\"} 1",
            "kindercam_open_connections{listener=\"http\"} 1",
            "kindercam_chat_messages_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains("reason=\"busy\""),
            "a refusal that never happened is left out"
        );
    }
}
