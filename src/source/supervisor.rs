//! Keeps a capture source alive: the part that cameras and `exec:` commands share.
//!
//! A source's blocking work (V4L2 ioctls, reading a child's stdout, encoding) runs
//! in a *session* on its own thread; the async supervisor here starts a session
//! when somebody watches, stops it a few seconds after the last viewer leaves, and
//! when a session fails (unplugged camera, child died, stream-on error) shows the
//! offline placeholder and starts a new session after a growing pause. A session
//! thread that stops making progress (a driver stuck inside an ioctl, a child that
//! went silent) is told to stop and abandoned, and a new session takes over, so a
//! stuck device never takes the daemon or the other cameras with it.
//!
//! A session must drop its device before it returns: drivers such as uvcvideo and
//! vivid only let an unplugged device come back once its last handle and memory
//! mapping are released, so the supervisor never opens a new session before the
//! old thread has finished (or been given up on).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::hub::Stream;
use crate::shutdown::Shutdown;
use crate::source::offline;

/// Why a session ended badly; shown to viewers as the offline reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub message: String,
    /// Retrying soon cannot help (the device offers nothing usable): wait longer.
    pub slow_retry: bool,
}

impl SourceError {
    pub fn new(message: impl Into<String>) -> SourceError {
        SourceError {
            message: message.into(),
            slow_retry: false,
        }
    }

    pub fn config(message: impl Into<String>) -> SourceError {
        SourceError {
            message: message.into(),
            slow_retry: true,
        }
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Timings of the supervision; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames keep coming this long after the last viewer leaves.
    pub idle_grace: Duration,
    /// A session thread silent this long is stuck.
    pub stall: Duration,
    /// How long a stopped session gets to finish before it is abandoned.
    pub stop_wait: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Pause after a `slow_retry` error.
    pub retry_slow: Duration,
    /// How often the supervisor checks demand and progress.
    pub tick: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_grace: crate::source::test_pattern::IDLE_GRACE,
            stall: Duration::from_secs(10),
            stop_wait: Duration::from_secs(2),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            retry_slow: Duration::from_secs(30),
            tick: Duration::from_millis(250),
        }
    }
}

/// Repeated warnings about dropped frames are summed up this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts dropped frames and logs them without flooding the journal.
pub struct DropLog {
    /// What dropped the frames, for the log line: "camera", "exec:" command output.
    what: &'static str,
    /// When the last warning was logged; `None` before the first.
    logged: Option<Instant>,
    count: u64,
}

impl DropLog {
    pub fn new(what: &'static str) -> DropLog {
        DropLog {
            what,
            logged: None,
            count: 0,
        }
    }

    pub fn record(&mut self, stream: &Stream, why: &dyn std::fmt::Display) {
        stream.count_dropped();
        self.count += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY) {
            tracing::warn!(
                stream = stream.name(),
                dropped = self.count,
                "dropped a broken frame from the {}: {why}",
                self.what
            );
            self.logged = Some(Instant::now());
            self.count = 0;
        }
    }
}

/// Shared between the supervisor and one session thread.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    origin: Instant,
    /// Milliseconds after `origin` of the session's last sign of progress.
    alive_ms: AtomicU64,
    delivered: AtomicU64,
    /// Process group of a child to signal on stop; 0 for none.
    child_group: AtomicI32,
}

impl Control {
    pub fn new() -> Control {
        Control {
            stop: AtomicBool::new(false),
            origin: Instant::now(),
            alive_ms: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            child_group: AtomicI32::new(0),
        }
    }

    /// Whether the session should wind down (nobody watches, shutdown, or stuck).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Marks progress; a session must call this at least every `Limits::stall`.
    pub fn alive(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.alive_ms.store(ms, Ordering::Release);
    }

    /// Counts a frame the session published.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frames_delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.alive_ms.load(Ordering::Acquire));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Registers the process group of a child that `stop` must terminate, so that a
    /// thread blocked reading the child's output wakes up.
    pub fn set_child_group(&self, pgid: i32) {
        self.child_group.store(pgid, Ordering::Release);
        if pgid > 0 && self.stopped() {
            terminate_group(pgid);
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let pgid = self.child_group.load(Ordering::Acquire);
        if pgid > 0 {
            terminate_group(pgid);
        }
    }

    /// After `stop` went unheeded: SIGKILL to the child's group, which also ends a
    /// read blocked on its output.
    fn kill_child(&self) {
        let pgid = self.child_group.load(Ordering::Acquire);
        if pgid > 0 {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
}

/// Sends SIGTERM to a child's whole process group (a shell and what it started).
pub fn terminate_group(pgid: i32) {
    signal_group(pgid, libc::SIGTERM);
}

/// Sends `signal` to process group `pgid` (a child's own group, never ours).
pub fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Growing pauses between failed sessions.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Lets through one frame per interval, on a fixed schedule so the average rate
/// is exactly the interval even when frames arrive with jitter; frames in between
/// are dropped before any work is spent on them.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next_due: Option<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            next_due: None,
        }
    }

    /// Whether a frame arriving at `now` should be used.
    pub fn take(&mut self, now: Instant) -> bool {
        // A frame up to an eighth of the interval early still counts as on time.
        let slack = self.interval / 8;
        match self.next_due {
            Some(due) if now + slack < due => false,
            Some(due) if now < due + self.interval => {
                self.next_due = Some(due + self.interval);
                true
            }
            // First frame, or so late that catching up would burst: restart the schedule.
            _ => {
                self.next_due = Some(now + self.interval);
                true
            }
        }
    }

    /// Forgets the schedule, so the next frame is taken (after a dropped frame).
    pub fn retry_now(&mut self) {
        self.next_due = None;
    }
}

/// How one session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    Shutdown,
    /// Nobody watched for `idle_grace`.
    Idle,
    Failed {
        error: SourceError,
        /// Frames published before it failed: a session that worked resets the backoff.
        delivered: u64,
    },
}

/// What the supervisor needs to know about the stream it feeds.
#[derive(Debug, Clone)]
pub struct Target {
    pub stream: Arc<Stream>,
    pub on_demand: bool,
    /// Size of the offline placeholder.
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    /// What this source is, for logs: `/dev/video0`, `exec:rpicam-vid ...`.
    pub label: String,
}

/// Runs one session on its own thread and watches it until it ends.
pub async fn run_session<F>(
    target: &Target,
    limits: &Limits,
    body: F,
    shutdown: &mut Shutdown,
) -> SessionEnd
where
    F: FnOnce(Arc<Control>) -> Result<(), SourceError> + Send + 'static,
{
    let control = Arc::new(Control::new());
    control.alive();
    let (done_tx, mut done) = oneshot::channel();
    let thread_control = control.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("capture-{}", target.stream.name()))
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(thread_control)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(SourceError::new(format!("capture thread failed: {what}")))
                });
            let _ = done_tx.send(result);
        });
    if let Err(e) = spawned {
        return SessionEnd::Failed {
            error: SourceError::new(format!("cannot start a capture thread: {e}")),
            delivered: 0,
        };
    }
    let mut ticker = tokio::time::interval(limits.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unwanted_since: Option<Instant> = None;
    let failed = |error: SourceError| SessionEnd::Failed {
        error,
        delivered: control.frames_delivered(),
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => {
                let wait = limits.stop_wait.min(Duration::from_millis(500));
                stop_session(&control, &mut done, wait).await;
                return SessionEnd::Shutdown;
            }
            result = &mut done => {
                return match result {
                    Ok(Ok(())) if control.stopped() => SessionEnd::Idle,
                    Ok(Ok(())) => failed(SourceError::new("the source stopped")),
                    Ok(Err(e)) => failed(e),
                    Err(_) => failed(SourceError::new("capture thread vanished")),
                };
            }
            _ = ticker.tick() => {}
        }
        if target.on_demand && target.stream.demand_count() == 0 {
            let since = *unwanted_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= limits.idle_grace {
                tracing::info!(stream = target.stream.name(), source = %target.label,
                    "nobody watches: closing the camera");
                if !stop_session(&control, &mut done, limits.stop_wait).await {
                    tracing::warn!(stream = target.stream.name(), source = %target.label,
                        "capture thread did not stop in time; abandoned");
                    abandoned(target);
                }
                return SessionEnd::Idle;
            }
        } else {
            unwanted_since = None;
        }
        let silent = control.silent_for();
        if silent >= limits.stall {
            let reason = format!(
                "{} stopped responding (nothing for {} s); restarting it",
                target.label,
                silent.as_secs()
            );
            if !stop_session(&control, &mut done, limits.stop_wait).await {
                tracing::error!(stream = target.stream.name(), source = %target.label,
                    "capture thread is stuck; abandoned, starting a new one");
                abandoned(target);
            }
            return failed(SourceError::new(reason));
        }
    }
}

/// Asks the session to stop and waits up to `wait` for its thread. If the thread
/// does not end (stuck in the driver or on a child's output), its child process
/// group is killed and false is returned: the caller abandons the thread.
async fn stop_session(
    control: &Control,
    done: &mut oneshot::Receiver<Result<(), SourceError>>,
    wait: Duration,
) -> bool {
    control.stop();
    if tokio::time::timeout(wait, done).await.is_ok() {
        return true;
    }
    control.kill_child();
    false
}

/// A capture thread stuck inside the driver keeps its device handle and buffers,
/// and only the end of the process releases them. Mark the pipeline as stuck, so the
/// watchdog stops and systemd restarts the daemon; a new session that works clears
/// the mark with its first unit of work, and then nothing was lost but a thread.
fn abandoned(target: &Target) {
    target.stream.heartbeat().begin().abandon();
}

/// Waits until the stream is wanted (at once when not on demand); false on shutdown.
async fn wait_for_demand(target: &Target, shutdown: &mut Shutdown) -> bool {
    if !target.on_demand {
        return !shutdown.is_triggered();
    }
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = target.stream.wanted() => true,
    }
}

/// Feeds `target.stream` from sessions made by `make_body` until shutdown.
pub async fn supervise<M, F>(
    target: Target,
    limits: Limits,
    mut make_body: M,
    mut shutdown: Shutdown,
) where
    M: FnMut() -> F,
    F: FnOnce(Arc<Control>) -> Result<(), SourceError> + Send + 'static,
{
    let stream = target.stream.clone();
    let mut backoff = Backoff::new(limits.retry_min, limits.retry_max);
    let mut last_reason: Option<String> = None;
    loop {
        if !wait_for_demand(&target, &mut shutdown).await {
            return;
        }
        match run_session(&target, &limits, make_body(), &mut shutdown).await {
            SessionEnd::Shutdown => return,
            SessionEnd::Idle => backoff.reset(),
            SessionEnd::Failed { error, delivered } => {
                if delivered > 0 {
                    backoff.reset();
                }
                let delay = if error.slow_retry {
                    limits.retry_slow
                } else {
                    backoff.next_delay()
                };
                let repeated = last_reason.as_deref() == Some(error.message.as_str());
                if repeated {
                    tracing::debug!(stream = stream.name(), source = %target.label, error = %error, "still failing");
                } else {
                    tracing::warn!(stream = stream.name(), source = %target.label, error = %error,
                        retry_in_ms = delay.as_millis() as u64, "camera offline");
                }
                // A new picture only when the reason changes, so retries do not flicker.
                if !repeated
                    || !matches!(
                        stream.current().status,
                        crate::hub::StreamStatus::Offline(_)
                    )
                {
                    // Drawing and encoding a full-size picture is blocking work.
                    let (stream, reason) = (stream.clone(), error.message.clone());
                    let (w, h, q) = (target.width, target.height, target.quality);
                    let _ = tokio::task::spawn_blocking(move || {
                        offline::show(&stream, &reason, w, h, q)
                    })
                    .await;
                }
                last_reason = Some(error.message);
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        }
        last_reason = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, StreamStatus};
    use crate::shutdown::ShutdownTrigger;

    fn fast() -> Limits {
        Limits {
            idle_grace: Duration::from_millis(200),
            stall: Duration::from_millis(400),
            stop_wait: Duration::from_millis(300),
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            retry_slow: Duration::from_millis(200),
            tick: Duration::from_millis(20),
        }
    }

    fn target(hub: &Hub, on_demand: bool) -> Target {
        Target {
            stream: hub.stream("cam").unwrap(),
            on_demand,
            width: 160,
            height: 120,
            quality: 60,
            label: "test source".into(),
        }
    }

    #[test]
    fn pacer_keeps_the_average_rate_and_drops_frames_in_between() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(500));
        // A 30 fps camera for 10 s: 300 frames, one per interval kept.
        let kept = (0..300)
            .filter(|i| p.take(t0 + Duration::from_micros(i * 33_333)))
            .count();
        assert!((19..=21).contains(&kept), "kept {kept} of 300");
        // A camera at exactly the interval, with jitter, loses none.
        let mut p = Pacer::new(Duration::from_millis(500));
        let kept = (0..20u64)
            .filter(|i| {
                // Alternately 20 ms early and 20 ms late.
                let at = 1000 + i * 500 + if i % 2 == 0 { 0 } else { 40 };
                p.take(t0 + Duration::from_millis(at))
            })
            .count();
        assert_eq!(kept, 20);
    }

    #[test]
    fn backoff_doubles_up_to_the_limit_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let got: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [250, 500, 1000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 250);
    }

    #[tokio::test]
    async fn a_silent_session_is_detected_and_abandoned() {
        let hub = Hub::new();
        let t = target(&hub, false);
        let trigger = ShutdownTrigger::new();
        let mut shutdown = trigger.subscribe();
        let started = Instant::now();
        let end = run_session(
            &t,
            &fast(),
            |_control| {
                // A driver stuck inside an ioctl: no progress, no return for a long time.
                std::thread::sleep(Duration::from_secs(3));
                Ok(())
            },
            &mut shutdown,
        )
        .await;
        let elapsed = started.elapsed();
        match end {
            SessionEnd::Failed { error, delivered } => {
                assert!(error.message.contains("stopped responding"), "{error}");
                assert_eq!(delivered, 0);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "detected in {elapsed:?}");
    }

    #[tokio::test]
    async fn failures_show_the_placeholder_and_sessions_are_retried() {
        let hub = Hub::new();
        let t = target(&hub, false);
        let stream = t.stream.clone();
        let trigger = ShutdownTrigger::new();
        let attempts = Arc::new(AtomicU64::new(0));
        let counter = attempts.clone();
        let mut rx = stream.subscribe();
        let task = tokio::spawn(supervise(
            t,
            fast(),
            move || {
                let counter = counter.clone();
                move |_control: Arc<Control>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Err(SourceError::new("device unplugged"))
                }
            },
            trigger.subscribe(),
        ));
        let snap = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| matches!(s.status, StreamStatus::Offline(_))),
        )
        .await
        .expect("offline in time")
        .unwrap()
        .clone();
        assert_eq!(
            snap.status,
            StreamStatus::Offline("device unplugged".into())
        );
        let frame = snap.frame.expect("a placeholder picture is shown");
        assert_eq!((frame.width, frame.height), (160, 120));
        let deadline = Instant::now() + Duration::from_secs(5);
        while attempts.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(attempts.load(Ordering::SeqCst) >= 3, "retried");
        assert!(trigger.drained(Duration::from_secs(2)).await);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn on_demand_sessions_start_with_a_viewer_and_stop_after_the_grace() {
        let hub = Hub::new();
        let t = target(&hub, true);
        let stream = t.stream.clone();
        let trigger = ShutdownTrigger::new();
        let running = Arc::new(AtomicBool::new(false));
        let flag = running.clone();
        let task = tokio::spawn(supervise(
            t,
            fast(),
            move || {
                let flag = flag.clone();
                move |control: Arc<Control>| {
                    flag.store(true, Ordering::SeqCst);
                    while !control.stopped() {
                        control.alive();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    flag.store(false, Ordering::SeqCst);
                    Ok(())
                }
            },
            trigger.subscribe(),
        ));
        let wait_until = |want: bool| {
            let running = running.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                while running.load(Ordering::SeqCst) != want {
                    assert!(
                        Instant::now() < deadline,
                        "session running == {want} in time"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !running.load(Ordering::SeqCst),
            "nothing opened while nobody watches"
        );
        let viewer = stream.watch(crate::hub::Audience::Staff, crate::hub::Transport::WsText);
        wait_until(true).await;
        drop(viewer);
        wait_until(false).await;
        assert!(trigger.drained(Duration::from_secs(2)).await);
        task.await.unwrap();
    }
}
