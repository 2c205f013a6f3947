//! Talking to systemd without libsystemd: the `sd_notify` datagrams (READY=1,
//! STATUS=, STOPPING=1, WATCHDOG=1) and the watchdog task that decides whether the
//! daemon is healthy enough to ping.
//!
//! A notification is one unix datagram to the socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`). Outside systemd the
//! variable is unset and every call here does nothing.
//!
//! The watchdog pings every `WATCHDOG_USEC / 2` from a task on the async runtime, so
//! a runtime that no longer runs tasks or timers stops the pings by itself. The
//! frame pipeline is watched through a [`Heartbeat`]: a source marks each unit of
//! work that must finish in bounded time (render and encode one frame, say), and
//! while one such unit has been running longer than the ping interval the pings
//! stop. A source idling because nobody watches has no unit running, so an idle
//! pipeline stays healthy however long it idles; a stuck one gets the daemon
//! restarted by systemd once `WatchdogSec=` passes without a ping.

use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use crate::shutdown::Shutdown;

/// Why the notification settings in the environment were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    BadSocket(String),
    /// `WATCHDOG_USEC` is not a positive number of microseconds.
    BadWatchdog(String),
    /// The socket could not be created.
    Io(String),
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::BadSocket(s) => write!(
                f,
                "NOTIFY_SOCKET={s:?} is neither an absolute path nor an @abstract socket name"
            ),
            NotifyError::BadWatchdog(s) => write!(
                f,
                "WATCHDOG_USEC={s:?} is not a positive number of microseconds"
            ),
            NotifyError::Io(e) => write!(f, "cannot create the notification socket: {e}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// Where notifications go, and how often the watchdog wants a ping.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing: the daemon runs outside systemd.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Notifications to `socket` (a path, or `@name` for an abstract socket); with
    /// `watchdog` set, the watchdog task pings at half that timeout.
    pub fn new(socket: &str, watchdog: Option<Duration>) -> Result<Notifier, NotifyError> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)
        } else {
            return Err(NotifyError::BadSocket(socket.to_owned()));
        }
        .map_err(|_| NotifyError::BadSocket(socket.to_owned()))?;
        let sock = UnixDatagram::unbound().map_err(|e| NotifyError::Io(e.to_string()))?;
        // A full receive queue must never block a runtime thread; a lost ping is
        // better than a stalled daemon.
        sock.set_nonblocking(true)
            .map_err(|e| NotifyError::Io(e.to_string()))?;
        Ok(Notifier {
            target: Some((sock, addr, socket.to_owned())),
            watchdog: watchdog.filter(|d| !d.is_zero()),
        })
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` through `env`, as
    /// systemd sets them for a `Type=notify` service. `pid` is this process's id: a
    /// watchdog meant for another process (`WATCHDOG_PID` differs) is not ours.
    pub fn from_lookup(
        env: &dyn Fn(&str) -> Option<String>,
        pid: u32,
    ) -> Result<Notifier, NotifyError> {
        let Some(socket) = env("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
            return Ok(Notifier::disabled());
        };
        let for_us = env("WATCHDOG_PID")
            .filter(|p| !p.is_empty())
            .is_none_or(|p| p.trim().parse::<u32>() == Ok(pid));
        let watchdog = match env("WATCHDOG_USEC").filter(|v| !v.is_empty()) {
            Some(v) if for_us => match v.trim().parse::<u64>() {
                Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
                _ => return Err(NotifyError::BadWatchdog(v)),
            },
            _ => None,
        };
        Notifier::new(&socket, watchdog)
    }

    /// The real process environment.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        Notifier::from_lookup(&|k| std::env::var(k).ok(), std::process::id())
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often the watchdog task pings: half of `WATCHDOG_USEC`, as systemd advises,
    /// so one late ping is not yet a missed one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends one notification made of `KEY=value` lines. Outside systemd, does nothing.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr, _)) => sock.send_to_addr(state.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Like `notify`, but a failure is only logged: systemd being unreachable must
    /// not take the daemon down.
    fn send(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            let socket = self.target.as_ref().map_or("", |(_, _, s)| s.as_str());
            tracing::warn!(error = %e, socket, "cannot notify systemd");
        }
    }

    /// Startup is complete: the listeners accept and the source runs.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down");
    }

    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }
}

/// A notification line ends at a newline; anything after it would be read as
/// another (possibly meaningful) assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Marks when a unit of pipeline work started, so the watchdog can tell a busy
/// pipeline from a stuck one. Cheap to clone; all clones share the state.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    inner: Arc<HeartbeatState>,
}

#[derive(Debug)]
struct HeartbeatState {
    origin: Instant,
    /// Microseconds after `origin` at which the running unit started, plus one;
    /// zero while no unit runs.
    busy_since: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            inner: Arc::new(HeartbeatState {
                origin: Instant::now(),
                busy_since: AtomicU64::new(0),
            }),
        }
    }

    /// Starts a unit of work that must finish in bounded time; it ends when the
    /// guard is dropped. Waiting for demand or for the next tick is not such work.
    pub fn begin(&self) -> Busy<'_> {
        let since = self.inner.origin.elapsed().as_micros() as u64 + 1;
        self.inner.busy_since.store(since, Ordering::Release);
        Busy { heartbeat: self }
    }

    /// How long the unit of work now running has been at it; `None` when idle.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.inner.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                self.inner
                    .origin
                    .elapsed()
                    .saturating_sub(Duration::from_micros(since - 1)),
            ),
        }
    }
}

/// A unit of pipeline work in progress; see [`Heartbeat::begin`].
#[must_use = "the unit of work ends when this guard is dropped"]
pub struct Busy<'a> {
    heartbeat: &'a Heartbeat,
}

impl Busy<'_> {
    /// The unit of work died (its thread panicked) and the pipeline cannot go on:
    /// leave it marked as running, so the watchdog stops pinging and systemd
    /// restarts the daemon.
    pub fn abandon(self) {
        std::mem::forget(self);
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.heartbeat.inner.busy_since.store(0, Ordering::Release);
    }
}

/// Pings the watchdog every `notifier.watchdog_interval()` while no heartbeat has
/// had a unit of work running for longer than that interval; returns at shutdown
/// (or at once when systemd asked for no watchdog). Runs on the async runtime on
/// purpose: if the runtime stops running tasks or timers, the pings stop with it.
pub async fn watchdog(
    notifier: Arc<Notifier>,
    heartbeats: Vec<(String, Heartbeat)>,
    mut shutdown: Shutdown,
) {
    let Some(interval) = notifier.watchdog_interval() else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    // After a stall, one ping now rather than a burst of catch-up pings.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stuck: Option<String> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        let now_stuck = heartbeats.iter().find_map(|(name, beat)| {
            beat.busy_for()
                .filter(|busy| *busy > interval)
                .map(|busy| format!("{name} frame pipeline stuck for {} ms", busy.as_millis()))
        });
        match (&now_stuck, &stuck) {
            (Some(why), None) => {
                tracing::error!("{why}; no more watchdog pings, systemd will restart the daemon");
                notifier.status(&format!("{why}; waiting for the watchdog restart"));
            }
            (None, Some(_)) => {
                tracing::warn!("frame pipeline moves again; watchdog pings resume");
                notifier.status("serving (frame pipeline recovered)");
            }
            _ => {}
        }
        if now_stuck.is_none() {
            notifier.watchdog_ping();
        }
        stuck = now_stuck;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_socket_means_disabled() {
        let n = Notifier::from_lookup(&lookup(&[("WATCHDOG_USEC", "1000000")]), 7).unwrap();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.notify("READY=1").expect("a disabled notifier is silent");
    }

    #[test]
    fn watchdog_is_half_the_timeout_and_only_for_our_pid() {
        let vars = [
            ("NOTIFY_SOCKET", "@kindercam-unit-test"),
            ("WATCHDOG_USEC", "30000000"),
            ("WATCHDOG_PID", "7"),
        ];
        let n = Notifier::from_lookup(&lookup(&vars), 7).unwrap();
        assert!(n.is_enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let other = Notifier::from_lookup(&lookup(&vars), 8).unwrap();
        assert!(other.is_enabled(), "notifications still go out");
        assert_eq!(other.watchdog_interval(), None, "the watchdog is not ours");
    }

    #[test]
    fn bad_settings_are_refused_with_the_variable_named() {
        let relative = Notifier::from_lookup(&lookup(&[("NOTIFY_SOCKET", "run/notify")]), 1);
        let e = relative.unwrap_err();
        assert_eq!(e, NotifyError::BadSocket("run/notify".into()));
        assert!(e.to_string().contains("NOTIFY_SOCKET"));
        for bad in ["0", "-5", "soon"] {
            let vars = [("NOTIFY_SOCKET", "/run/notify"), ("WATCHDOG_USEC", bad)];
            let e = Notifier::from_lookup(&lookup(&vars), 1).unwrap_err();
            assert!(e.to_string().contains("WATCHDOG_USEC"), "{e}");
        }
    }

    #[test]
    fn status_cannot_smuggle_another_assignment() {
        assert_eq!(one_line("a\nREADY=1"), "a READY=1");
    }

    #[test]
    fn heartbeat_is_busy_only_while_a_unit_runs() {
        let beat = Heartbeat::new();
        assert_eq!(beat.busy_for(), None);
        let unit = beat.begin();
        let seen_by_watchdog = beat.clone();
        assert!(
            seen_by_watchdog.busy_for().is_some(),
            "clones share the state"
        );
        drop(unit);
        assert_eq!(seen_by_watchdog.busy_for(), None);
    }
}
