//! The hub: the latest frame of each named stream, and who is watching it.
//!
//! Each stream is a `watch` slot holding only its newest frame. Publishing
//! replaces the frame; a viewer that was busy sending when two frames arrived
//! sees only the second, so a slow viewer skips ahead and nothing is ever queued
//! for it. The slot also counts demand (viewers plus waiting snapshot requests)
//! so a source can stay idle while nobody watches, and it holds the per-viewer
//! counters that `/stats.json` reports.
//!
//! Each stream also carries its gate (`privacy::gate`): whether families may
//! watch now. Demand is counted per [`Audience`], and a family's demand does not
//! count while the gate is shut, so a room that only families want while it is
//! closed or paused keeps its camera closed and its light off.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use tokio::sync::watch;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::frame::Frame;
use crate::intake::Admitted;
use crate::metrics::FrameTimings;
use crate::notify::Heartbeat;
use crate::privacy::gate::{Closed, Gate, Paused};
use crate::privacy::{Mask, MaskBook};
use crate::sendq::Outgoing;
use crate::sync::Locked;

/// The stream fed by `--source`.
pub const CAMERA: &str = "camera";
/// Streams are created by their sources (configured cameras, staff uploads) and
/// by staff; never by a viewer asking for a name. This bounds them.
pub const MAX_STREAMS: usize = 32;

/// Whether a stream currently has a picture source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatus {
    /// Nothing has fed this stream yet (a named stream before its first upload).
    Waiting,
    Live,
    /// The source went away; the reason is shown to viewers.
    Offline(Arc<str>),
}

impl StreamStatus {
    pub fn label(&self) -> &'static str {
        match self {
            StreamStatus::Waiting => "waiting",
            StreamStatus::Live => "live",
            StreamStatus::Offline(_) => "offline",
        }
    }
}

/// What a viewer sees of a stream at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every published frame; viewers compare it to spot news.
    pub seq: u64,
    pub frame: Option<Arc<Frame>>,
    pub status: StreamStatus,
    /// `status` as the JSON text viewers receive, built once per change and shared
    /// by every viewer, like the frames.
    pub status_message: Utf8Bytes,
}

impl Snapshot {
    fn new() -> Snapshot {
        let status = StreamStatus::Waiting;
        Snapshot {
            seq: 0,
            frame: None,
            status_message: status_message(&status),
            status,
        }
    }

    /// Changes the status; false when it already was `status`.
    fn set_status(&mut self, status: StreamStatus) -> bool {
        if self.status == status {
            return false;
        }
        self.status_message = status_message(&status);
        self.status = status;
        true
    }
}

/// Sets `slot` to `value`; true when that changed it.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        return false;
    }
    *slot = value;
    true
}

/// `{"type":"status","state":...,"message":...}`: JSON, so it can never be
/// mistaken for a `data:` frame.
pub fn status_message(status: &StreamStatus) -> Utf8Bytes {
    let message = match status {
        StreamStatus::Live => "live",
        StreamStatus::Waiting => "waiting for a source",
        StreamStatus::Offline(reason) => reason,
    };
    serde_json::json!({"type": "status", "state": status.label(), "message": message})
        .to_string()
        .into()
}

/// Who wants a stream's frames, as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Staff and the admin: never held at the gate.
    Staff,
    /// Parents (a family's code or the shared viewer code): no frames, and no
    /// demand, while the stream is closed or paused.
    Family,
}

impl Audience {
    /// Staff rights see through the gate; every other login is a parent's.
    pub fn of(role: crate::auth::Role) -> Audience {
        if role.is_staff() {
            Audience::Staff
        } else {
            Audience::Family
        }
    }
}

/// Who wants frames now, by audience, and whether families are held back.
#[derive(Debug, Clone, Copy, Default)]
struct Demand {
    staff: usize,
    families: usize,
    /// The gate is shut: families' demand does not count.
    families_held: bool,
}

impl Demand {
    /// The demand a source acts on.
    fn effective(&self) -> usize {
        self.staff + if self.families_held { 0 } else { self.families }
    }

    fn count(&mut self, audience: Audience) -> &mut usize {
        match audience {
            Audience::Staff => &mut self.staff,
            Audience::Family => &mut self.families,
        }
    }
}

/// A stream's gate with what families are told about it, made once per change
/// and shared by every family viewer, like the frames and the status text.
#[derive(Debug, Clone)]
pub struct GateState {
    pub gate: Gate,
    /// The `{"type":"status","state":"closed"|"paused",...}` text family viewers
    /// receive; `None` while the gate is open.
    pub family_message: Option<Utf8Bytes>,
    /// The `{"type":"gate",...}` text staff pages that asked for it receive.
    pub staff_message: Utf8Bytes,
    /// The picture snapshot (and MJPEG) clients of a paused room get, drawn by the
    /// first one who asks (`privacy::notice`) and kept until the gate changes.
    /// `None` inside when it could not be drawn.
    pub picture: Arc<OnceLock<Option<Bytes>>>,
    /// The stream's frame number (`Snapshot::seq`) when the gate last opened; 0
    /// if it has not shut since the start. Families get only frames published
    /// after it: a frame the camera took for staff during a pause, or at night,
    /// is never shown to them afterwards. (Frame numbers, not clock times, so a
    /// clock that NTP sets back cannot hide frames from families.)
    pub open_since_seq: u64,
}

impl GateState {
    fn new(gate: Gate) -> GateState {
        GateState {
            family_message: gate.family_status().map(|v| v.to_string().into()),
            staff_message: gate.staff_status().to_string().into(),
            gate,
            picture: Arc::default(),
            open_since_seq: 0,
        }
    }

    /// Whether a family may be shown frame number `seq`: the gate is open and
    /// the frame came after it opened.
    pub fn lets_family_see(&self, seq: u64) -> bool {
        self.gate.is_open() && seq > self.open_since_seq
    }
}

/// How a viewer receives its frames (a label of `/metrics`' viewer counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A video WebSocket sending data URLs as text.
    WsText,
    /// A video WebSocket sending bare JPEGs (`?format=binary`).
    WsBinary,
    /// A multipart MJPEG response over HTTP.
    Mjpeg,
    /// This camera's pusher (`crate::push`), sending to a relay for the relay's
    /// viewers; it counts only while the relay has demand.
    Push,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::WsText,
        Transport::WsBinary,
        Transport::Mjpeg,
        Transport::Push,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Transport::WsText => "ws_text",
            Transport::WsBinary => "ws_binary",
            Transport::Mjpeg => "mjpeg",
            Transport::Push => "push",
        }
    }
}

/// Counters of one connected viewer, readable while it is blocked in a send.
#[derive(Debug)]
pub struct ViewerStats {
    pub transport: Transport,
    /// The message being written and the socket's unsent bytes.
    pub outgoing: Outgoing,
    pub frames_sent: AtomicU64,
    /// Frames that were replaced before this viewer was ready for them.
    pub frames_skipped: AtomicU64,
    /// Bytes of the frames (and their meta) sent, counted per whole frame.
    pub bytes_sent: AtomicU64,
    /// Frames that went to the socket from the fan-out's pipe, not copied
    /// (`fanout::splice`).
    pub frames_spliced: AtomicU64,
}

impl ViewerStats {
    fn new(transport: Transport) -> ViewerStats {
        ViewerStats {
            transport,
            outgoing: Outgoing::default(),
            frames_sent: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            frames_spliced: AtomicU64::new(0),
        }
    }

    /// Counts a frame of `bytes` written whole to this viewer.
    pub fn frame_sent(&self, bytes: usize) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// What the viewers who left a stream were sent, so that the stream's totals
/// never go down when one leaves (Prometheus counters must not).
#[derive(Debug, Default)]
struct DepartedViewers {
    frames_sent: AtomicU64,
    frames_skipped: AtomicU64,
    bytes_sent: AtomicU64,
    frames_spliced: AtomicU64,
}

#[derive(Debug)]
pub struct Stream {
    name: String,
    state: watch::Sender<Snapshot>,
    demand: watch::Sender<Demand>,
    viewers: Mutex<Vec<Arc<ViewerStats>>>,
    /// Added to under the viewers' lock as each viewer leaves.
    departed: DepartedViewers,
    uploading: AtomicBool,
    frames_published: AtomicU64,
    /// Frames the source received but refused (truncated, corrupt): see `count_dropped`.
    frames_dropped: AtomicU64,
    /// Marked by the source feeding this stream around each unit of work, so the
    /// systemd watchdog can tell an idle source from a stuck one.
    heartbeat: Heartbeat,
    /// Whether families may watch now (opening hours, a teacher's pause).
    gate: watch::Sender<GateState>,
    /// The privacy mask every frame gets before it is published; read once per
    /// frame by the source's intake, replaced at once by the admin API.
    mask: Mutex<Arc<Mask>>,
    /// Viewers that asked for small frames (`?size=small`): intake makes a
    /// frame's small variant only while this is above zero.
    small_wanted: AtomicUsize,
    /// Small variants made (`/stats.json`), so "none while nobody asks" shows.
    frames_small: AtomicU64,
    /// The way in to this stream's fan-out (`crate::fanout`), started by the
    /// first viewer.
    fanout: OnceLock<crate::fanout::Door>,
    /// How long intake takes to encode and to mask this stream's frames.
    timings: FrameTimings,
}

impl Stream {
    fn new(name: &str, mask: Arc<Mask>) -> Stream {
        Stream {
            name: name.to_owned(),
            state: watch::Sender::new(Snapshot::new()),
            demand: watch::Sender::new(Demand::default()),
            viewers: Mutex::new(Vec::new()),
            departed: DepartedViewers::default(),
            uploading: AtomicBool::new(false),
            frames_published: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            heartbeat: Heartbeat::new(),
            gate: watch::Sender::new(GateState::new(Gate::default())),
            mask: Mutex::new(mask),
            small_wanted: AtomicUsize::new(0),
            frames_small: AtomicU64::new(0),
            fanout: OnceLock::new(),
            timings: FrameTimings::default(),
        }
    }

    /// The door to this stream's fan-out, the one way its frames leave; the
    /// first caller starts it (in the runtime), and it ends with the stream or
    /// with the daemon.
    pub fn fanout(&self, shutdown: &crate::shutdown::Shutdown) -> &crate::fanout::Door {
        self.fanout.get_or_init(|| {
            crate::fanout::Door::open(self.subscribe(), self.subscribe_gate(), shutdown.daemon())
        })
    }

    /// Where intake records how long this stream's frames take to encode and mask.
    pub fn timings(&self) -> &FrameTimings {
        &self.timings
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source's heartbeat: wrap each blocking unit of work (capture, encode) in
    /// `heartbeat().begin()`; never the wait for demand or for the next frame time.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Makes `frame` the newest picture, replacing (not queueing behind) the last one.
    /// Only [`crate::intake`] makes an [`Admitted`] frame: nothing reaches viewers
    /// without passing it.
    ///
    /// A frame made under a mask that has since been replaced (it was being
    /// encoded when the admin saved a new one) is dropped and counted instead:
    /// the check and the mask's replacement both happen under the state's lock,
    /// so no frame made under an older mask follows a newer mask's first frame.
    pub fn publish(&self, frame: Admitted) {
        let (frame, made_under) = frame.into_parts();
        let frame = Arc::new(frame);
        let published = self.state.send_if_modified(|s| {
            if let Some(used) = &made_under {
                if !Arc::ptr_eq(used, &self.mask.locked()) {
                    return false;
                }
            }
            s.seq += 1;
            frame.number(s.seq);
            s.frame = Some(frame);
            s.set_status(StreamStatus::Live);
            true
        });
        if published {
            self.frames_published.fetch_add(1, Ordering::Relaxed);
        } else {
            self.count_dropped();
        }
    }

    /// Replaces the privacy mask. The frame the hub holds (what a viewer who
    /// joins now gets at once, and what an offline stream keeps showing) is
    /// masked again with a new mask, or forgotten if that fails, so the mask
    /// covers it too and not only the frames to come.
    ///
    /// The frame keeps its number: viewers who already have it are not sent it
    /// again, and a frame held back from families (taken while the room was
    /// shut) does not become one they may see.
    fn replace_mask(&self, mask: Arc<Mask>) {
        self.state.send_modify(|s| {
            *self.mask.locked() = mask.clone();
            if mask.is_empty() {
                return;
            }
            if let Some(held) = s.frame.take() {
                s.frame = crate::intake::remask(&held, &mask).map(Arc::new);
            }
        });
    }

    /// Shows `frame` (a placeholder picture) and marks the source gone in one step, so
    /// viewers get the picture and the offline status together, never a moment of "live".
    pub fn publish_offline(&self, frame: Admitted, reason: &str) {
        let frame = Arc::new(frame.into_frame());
        self.state.send_modify(|s| {
            s.seq += 1;
            frame.number(s.seq);
            s.frame = Some(frame);
            s.set_status(StreamStatus::Offline(reason.into()));
        });
    }

    /// Closes the stream to families (outside its opening hours), or opens it.
    pub fn set_closed(&self, closed: Option<Closed>) {
        self.change_gate(|g| replace(&mut g.closed, closed));
    }

    /// Pauses the stream for families, or resumes it.
    pub fn set_paused(&self, paused: Option<Paused>) {
        self.change_gate(|g| replace(&mut g.paused, paused));
    }

    /// Applies `change` to the gate; on a change, rebuilds what families are told
    /// and whether their demand counts. Both happen under the gate's lock, so two
    /// changes at once cannot leave the demand following the older one.
    fn change_gate(&self, change: impl FnOnce(&mut Gate) -> bool) {
        self.gate.send_if_modified(|state| {
            let mut gate = state.gate.clone();
            if !change(&mut gate) {
                return false;
            }
            let held = !gate.is_open();
            let was_open = state.gate.is_open();
            let since = state.open_since_seq;
            *state = GateState::new(gate);
            state.open_since_seq = match (was_open, held) {
                (false, false) => self.state.borrow().seq,
                _ => since,
            };
            self.demand
                .send_if_modified(|d| replace(&mut d.families_held, held));
            true
        });
    }

    /// What holds families back from this stream now.
    pub fn gate(&self) -> Gate {
        self.gate.borrow().gate.clone()
    }

    /// The gate with what families are told about it now.
    pub fn gate_state(&self) -> GateState {
        self.gate.borrow().clone()
    }

    /// Follows the gate, for family viewers that must stop or start at once.
    pub fn subscribe_gate(&self) -> watch::Receiver<GateState> {
        self.gate.subscribe()
    }

    /// The privacy mask to burn into the next frame (empty: none). A short lock
    /// and a reference count: sources read it for every frame.
    pub fn mask(&self) -> Arc<Mask> {
        self.mask.locked().clone()
    }

    /// Counts a frame the source received but refused (cut off, corrupt, far too small).
    pub fn count_dropped(&self) {
        self.frames_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the source as gone. The last frame stays, so a viewer who joins sees
    /// the last picture under an "offline" notice; snapshots answer 503 instead of
    /// passing a stale picture off as the current one.
    pub fn set_offline(&self, reason: &str) {
        self.state
            .send_if_modified(|s| s.set_status(StreamStatus::Offline(reason.into())));
    }

    pub fn current(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Registers a viewer of small frames until the guard is dropped.
    pub fn want_small(self: &Arc<Self>) -> SmallGuard {
        self.small_wanted.fetch_add(1, Ordering::AcqRel);
        SmallGuard(self.clone())
    }

    /// Whether some viewer wants small frames now.
    pub fn wants_small(&self) -> bool {
        self.small_wanted.load(Ordering::Acquire) > 0
    }

    /// Counts a small variant made by intake.
    pub fn count_small(&self) {
        self.frames_small.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a viewer receiving frames by `transport`; it counts as demand
    /// until the guard is dropped (a family viewer only while the gate is open).
    pub fn watch(self: &Arc<Self>, audience: Audience, transport: Transport) -> ViewerGuard {
        let stats = Arc::new(ViewerStats::new(transport));
        self.viewers.locked().push(stats.clone());
        ViewerGuard {
            _demand: self.demand(audience),
            stream: self.clone(),
            stats,
        }
    }

    /// Counts as demand while held, for work that needs a fresh frame once
    /// (a snapshot request while nobody watches). A family's counts only while
    /// the gate is open.
    pub fn demand(self: &Arc<Self>, audience: Audience) -> DemandGuard {
        self.demand.send_modify(|d| *d.count(audience) += 1);
        DemandGuard {
            stream: self.clone(),
            audience,
        }
    }

    /// The demand a source acts on: staff, plus families while the gate is open.
    pub fn demand_count(&self) -> usize {
        self.demand.borrow().effective()
    }

    /// Follows the demand a source acts on (see [`Stream::demand_count`]), for
    /// an uploader that passes it on to the camera feeding it (`/upload/NAME`'s
    /// `{"type":"demand"}`).
    pub fn demand_watch(&self) -> DemandWatch {
        DemandWatch(self.demand.subscribe())
    }

    /// Whether an uploader (a browser camera, a pushing camera) feeds this stream now.
    pub fn is_uploading(&self) -> bool {
        self.uploading.load(Ordering::Acquire)
    }

    /// Waits until somebody wants frames (a family only while the gate is open).
    /// Sources call this before opening a device.
    pub async fn wanted(&self) {
        let mut rx = self.demand.subscribe();
        let _ = rx.wait_for(|d| d.effective() > 0).await;
    }

    /// Claims the single uploader slot of this stream.
    pub fn claim_upload(self: &Arc<Self>) -> Option<UploadGuard> {
        self.uploading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| UploadGuard {
                stream: self.clone(),
            })
    }

    /// Viewers watching now (what an uploader's ack reports).
    pub fn viewer_count(&self) -> usize {
        self.viewers.locked().len()
    }

    pub fn stats(&self) -> StreamStats {
        let viewers = self.viewers.locked();
        // Read under the lock: a viewer's socket is forgotten under it before it closes.
        let pending: Vec<usize> = viewers.iter().map(|v| v.outgoing.pending()).collect();
        let snapshot = self.state.borrow();
        StreamStats {
            name: self.name.clone(),
            status: snapshot.status.label(),
            viewers: viewers.len(),
            uploading: self.uploading.load(Ordering::Relaxed),
            frames_published: self.frames_published.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            frames_small: self.frames_small.load(Ordering::Relaxed),
            masks: self.mask().rects().len(),
            last_frame_unix_ms: snapshot.frame.as_ref().map(|f| f.ready_unix_ms),
            width: snapshot.frame.as_ref().map(|f| f.width),
            height: snapshot.frame.as_ref().map(|f| f.height),
            frame_bytes: snapshot.frame.as_ref().map(|f| f.jpeg.len()),
            pending_bytes_max: pending.iter().copied().max().unwrap_or(0),
            pending_bytes_total: pending.iter().sum(),
            frames_sent: viewers
                .iter()
                .map(|v| v.frames_sent.load(Ordering::Relaxed))
                .sum(),
            frames_skipped: viewers
                .iter()
                .map(|v| v.frames_skipped.load(Ordering::Relaxed))
                .sum(),
            frames_spliced: viewers
                .iter()
                .map(|v| v.frames_spliced.load(Ordering::Relaxed))
                .sum(),
        }
    }
}

impl Stream {
    /// This stream's counters for `/metrics`: totals since the stream was made,
    /// over the viewers connected now and those who left.
    pub fn counters(&self) -> StreamCounters {
        let viewers = self.viewers.locked();
        let mut by_transport = [0u64; Transport::ALL.len()];
        let departed = &self.departed;
        let (mut sent, mut skipped, mut bytes, mut spliced) = (
            departed.frames_sent.load(Ordering::Relaxed),
            departed.frames_skipped.load(Ordering::Relaxed),
            departed.bytes_sent.load(Ordering::Relaxed),
            departed.frames_spliced.load(Ordering::Relaxed),
        );
        for v in viewers.iter() {
            by_transport[v.transport as usize] += 1;
            sent += v.frames_sent.load(Ordering::Relaxed);
            skipped += v.frames_skipped.load(Ordering::Relaxed);
            bytes += v.bytes_sent.load(Ordering::Relaxed);
            spliced += v.frames_spliced.load(Ordering::Relaxed);
        }
        drop(viewers);
        StreamCounters {
            source_up: self.state.borrow().status == StreamStatus::Live,
            viewers: by_transport,
            frames_published: self.frames_published.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            frames_sent: sent,
            frames_skipped: skipped,
            bytes_sent: bytes,
            frames_spliced: spliced,
        }
    }
}

/// One stream's counters for `/metrics` (see [`Stream::counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// The stream has a live source now.
    pub source_up: bool,
    /// Viewers connected now, indexed by [`Transport`] (`as usize`).
    pub viewers: [u64; Transport::ALL.len()],
    pub frames_published: u64,
    pub frames_dropped: u64,
    pub frames_sent: u64,
    pub frames_skipped: u64,
    pub bytes_sent: u64,
    pub frames_spliced: u64,
}

/// One stream's figures for `/stats.json` and `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamStats {
    pub name: String,
    pub status: &'static str,
    pub viewers: usize,
    pub uploading: bool,
    pub frames_published: u64,
    /// Frames from the source that were refused as broken (cut off, corrupt) or
    /// that could not be masked.
    pub frames_dropped: u64,
    /// Half-size variants made for `?size=small` viewers (none while nobody
    /// asks for them).
    pub frames_small: u64,
    /// Rectangles of the privacy mask burned into this stream's frames (0: none).
    pub masks: usize,
    pub last_frame_unix_ms: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_bytes: Option<usize>,
    /// The most bytes any one viewer of this stream has waiting to be sent: the
    /// message being written (whole until the kernel has taken all of it) plus what
    /// the kernel holds unsent of earlier ones.
    pub pending_bytes_max: usize,
    pub pending_bytes_total: usize,
    /// Sent and skipped over the viewers connected now.
    pub frames_sent: u64,
    pub frames_skipped: u64,
    /// Of `frames_sent`, those the kernel took from the fan-out's pipe by
    /// reference instead of copying them (`fanout::splice`).
    pub frames_spliced: u64,
}

/// A stream's effective demand as it changes; see [`Stream::demand_watch`].
pub struct DemandWatch(watch::Receiver<Demand>);

impl DemandWatch {
    /// The demand now, marked as seen.
    pub fn current(&mut self) -> usize {
        self.0.borrow_and_update().effective()
    }

    /// Waits for a change of who wants frames (the count may come out the same:
    /// compare [`DemandWatch::current`] with what was last told).
    pub async fn changed(&mut self) {
        // The sender lives as long as the stream, which the caller holds.
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

pub struct DemandGuard {
    stream: Arc<Stream>,
    audience: Audience,
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        let audience = self.audience;
        self.stream.demand.send_modify(|d| *d.count(audience) -= 1);
    }
}

pub struct ViewerGuard {
    _demand: DemandGuard,
    stream: Arc<Stream>,
    pub stats: Arc<ViewerStats>,
}

impl ViewerGuard {
    /// Lets `/stats.json` ask the kernel about this viewer's socket `fd` until the
    /// returned guard is dropped, which must happen before the socket closes.
    pub fn probe_socket(&self, fd: RawFd) -> SocketProbeGuard<'_> {
        self.stats.outgoing.set_socket(fd);
        SocketProbeGuard(self)
    }
}

impl ViewerGuard {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Stops `/stats.json` asking about this viewer's socket; call before the
    /// socket closes (see [`ViewerGuard::probe_socket`]).
    pub fn forget_socket(&self) {
        let _viewers = self.stream.viewers.locked();
        self.stats.outgoing.clear_socket();
    }
}

/// Forgets a viewer's socket when dropped; see [`ViewerGuard::probe_socket`].
pub struct SocketProbeGuard<'a>(&'a ViewerGuard);

impl Drop for SocketProbeGuard<'_> {
    fn drop(&mut self) {
        // Under the viewers' lock, so no stats reader is between reading the fd
        // and asking the kernel about it when the socket closes.
        let _viewers = self.0.stream.viewers.locked();
        self.0.stats.outgoing.clear_socket();
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        let mut viewers = self.stream.viewers.locked();
        viewers.retain(|v| !Arc::ptr_eq(v, &self.stats));
        // Under the same lock, so `counters` never sees this viewer in neither place.
        let (mine, departed) = (&self.stats, &self.stream.departed);
        let moved = [
            (&mine.frames_sent, &departed.frames_sent),
            (&mine.frames_skipped, &departed.frames_skipped),
            (&mine.bytes_sent, &departed.bytes_sent),
            (&mine.frames_spliced, &departed.frames_spliced),
        ];
        for (from, to) in moved {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// A viewer's wish for small frames; see [`Stream::want_small`].
pub struct SmallGuard(Arc<Stream>);

impl Drop for SmallGuard {
    fn drop(&mut self) {
        self.0.small_wanted.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct UploadGuard {
    stream: Arc<Stream>,
}

impl UploadGuard {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let stream = &self.stream;
        stream.state.send_if_modified(|s| {
            // Freed under the state's lock, and viewers are woken only after it:
            // whoever hears "offline" can claim the stream at once, and a new
            // broadcaster's "live" cannot be overwritten by this old "offline".
            stream.uploading.store(false, Ordering::Release);
            s.set_status(StreamStatus::Offline("broadcaster disconnected".into()))
        });
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    BadName,
    TooMany,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::BadName => {
                f.write_str("stream names are 1-32 characters of a-z, 0-9, _ and -")
            }
            StreamError::TooMany => write!(f, "too many streams (at most {MAX_STREAMS})"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Work done on each new stream before anyone can see it (see [`Hub::on_create`]).
type CreateHook = Box<dyn Fn(&Stream) + Send + Sync>;

/// All streams by name.
pub struct Hub {
    streams: Mutex<BTreeMap<String, Arc<Stream>>>,
    /// Bumped whenever a stream is created, so viewers waiting for a room whose
    /// source has not started yet can attach the moment it does.
    created: watch::Sender<u64>,
    /// Each stream name's privacy mask, also for streams not created yet. Locked
    /// after `streams` when both are needed.
    masks: Mutex<MaskBook>,
    on_create: Mutex<Vec<CreateHook>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            streams: Mutex::new(BTreeMap::new()),
            created: watch::Sender::new(0),
            masks: Mutex::new(MaskBook::default()),
            on_create: Mutex::new(Vec::new()),
        }
    }
}

pub fn valid_stream_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// The stream called `name`, created if it does not exist yet.
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>, StreamError> {
        if !valid_stream_name(name) {
            return Err(StreamError::BadName);
        }
        let mut streams = self.streams.locked();
        if let Some(stream) = streams.get(name) {
            return Ok(stream.clone());
        }
        if streams.len() >= MAX_STREAMS {
            // Make room by forgetting a stream nobody uses and nothing feeds.
            let idle = streams
                .iter()
                .find(|(n, s)| {
                    n.as_str() != CAMERA
                        && Arc::strong_count(s) == 1
                        && !s.uploading.load(Ordering::Acquire)
                })
                .map(|(n, _)| n.clone());
            match idle {
                Some(n) => {
                    streams.remove(&n);
                }
                None => return Err(StreamError::TooMany),
            }
        }
        let mask = self.masks.locked().effective(name);
        let stream = Arc::new(Stream::new(name, mask));
        for hook in self.on_create.locked().iter() {
            hook(&stream);
        }
        streams.insert(name.to_owned(), stream.clone());
        drop(streams);
        self.created.send_modify(|n| *n += 1);
        Ok(stream)
    }

    /// Runs `hook` on every stream created from now on, before it is in the hub:
    /// a room's opening hours close a new stream before any viewer can attach.
    /// The hook runs under the hub's lock, so it must be quick and must not use
    /// the hub.
    pub fn on_create(&self, hook: impl Fn(&Stream) + Send + Sync + 'static) {
        self.on_create.locked().push(Box::new(hook));
    }

    /// The stream called `name` once a source or staff creates it. Waiting costs
    /// the hub nothing: a viewer of a room whose broadcast has not begun holds no
    /// slot that a source might need.
    pub async fn appeared(&self, name: &str) -> Arc<Stream> {
        let mut created = self.created.subscribe();
        loop {
            if let Some(stream) = self.get(name) {
                return stream;
            }
            // The sender lives as long as the hub, which outlives this borrow.
            if created.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Changes whenever a stream is created.
    pub fn watch_created(&self) -> watch::Receiver<u64> {
        self.created.subscribe()
    }

    /// The stream called `name` if it exists; never creates one.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.locked().get(name).cloned()
    }

    /// Sets every stream's mask from `book` (at start, before any source runs).
    pub fn set_masks(&self, book: MaskBook) {
        let streams = self.streams.locked();
        let mut masks = self.masks.locked();
        *masks = book;
        for (name, stream) in streams.iter() {
            stream.replace_mask(masks.effective(name));
        }
    }

    /// The mask stream `name` has, or would have if it existed now.
    pub fn mask_of(&self, name: &str) -> Arc<Mask> {
        self.masks.locked().effective(name)
    }

    /// Applies a mask the admin API has stored for `name`: the stream's next frame
    /// gets it, and so does a stream of that name created later.
    pub fn store_mask(&self, name: &str, mask: Mask) -> Arc<Mask> {
        // Both locks, in order, so that a stream created meanwhile cannot miss it.
        let (mask, stream) = {
            let streams = self.streams.locked();
            let mask = self.masks.locked().store(name, mask);
            (mask, streams.get(name).cloned())
        };
        // Outside the hub's locks: masking the held frame again takes a moment.
        if let Some(stream) = stream {
            stream.replace_mask(mask.clone());
        }
        mask
    }

    /// Every stream now, in name order.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.streams.locked().values().cloned().collect()
    }

    pub fn stats(&self) -> Vec<StreamStats> {
        let streams: Vec<_> = self.streams.locked().values().cloned().collect();
        streams.iter().map(|s| s.stats()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Admitted {
        Admitted::for_test(Frame::from_jpeg(vec![n; 10], 2, 2))
    }

    #[test]
    fn a_new_mask_covers_the_held_frame_and_refuses_frames_made_before_it() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        let (w, h) = (64usize, 48usize);
        let jpeg = crate::encode::Encoder::new(75)
            .unwrap()
            .encode_rgb(&vec![200u8; w * h * 3], w, h)
            .unwrap();
        let mut intake = crate::intake::Intake::new(s.clone(), "test");
        let encoded_before = intake.jpeg(jpeg.clone(), w as u32, h as u32).unwrap();
        s.publish(intake.jpeg(jpeg, w as u32, h as u32).unwrap());
        let seq = s.current().seq;

        hub.store_mask(
            "x",
            Mask::from_json(r#"[{"x":0,"y":0,"w":0.5,"h":0.5}]"#).unwrap(),
        );
        let now = s.current();
        assert_eq!(now.seq, seq, "the same frame, masked again");
        let held = now.frame.clone().expect("the held frame, masked again");
        let grey = turbojpeg::decompress(&held.jpeg, turbojpeg::PixelFormat::GRAY).unwrap();
        let luma = |x: usize, y: usize| grey.pixels[y * grey.pitch + x];
        assert!(
            luma(4, 4) <= 1,
            "the masked corner is black: {}",
            luma(4, 4)
        );
        assert!(luma(w - 4, h - 4) > 150, "the rest is as it was");

        // A frame encoded before the mask changed arrives late: refused, counted.
        let dropped = s.stats().frames_dropped;
        s.publish(encoded_before);
        assert_eq!(s.stats().frames_dropped, dropped + 1);
        let after = s.current();
        assert_eq!(after.seq, now.seq);
        assert!(Arc::ptr_eq(&after.frame.unwrap(), &held));
    }

    #[test]
    fn families_see_only_frames_taken_since_the_room_last_opened() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        s.publish(frame(1));
        let before = s.current().seq;
        assert!(
            s.gate_state().lets_family_see(before),
            "never shut: any frame"
        );
        s.set_paused(Some(Paused {
            until: i64::MAX,
            by: "Ana".into(),
        }));
        s.publish(frame(2)); // for staff, during the pause
        let during = s.current().seq;
        assert!(!s.gate_state().lets_family_see(during), "shut");
        s.set_paused(None);
        let state = s.gate_state();
        assert!(
            !state.lets_family_see(during),
            "a frame taken while paused stays unseen after the resume"
        );
        assert!(!state.lets_family_see(before));
        s.publish(frame(3));
        assert!(state.lets_family_see(s.current().seq));
        // Another change while open keeps the opening point.
        s.set_closed(None);
        assert_eq!(s.gate_state().open_since_seq, state.open_since_seq);
    }

    #[test]
    fn keeps_only_the_newest_frame() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        let mut rx = s.subscribe();
        s.publish(frame(1));
        s.publish(frame(2));
        let seen = rx.borrow_and_update().clone();
        assert_eq!(seen.seq, 2);
        assert_eq!(seen.frame.unwrap().jpeg[0], 2);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn names_are_checked_and_streams_bounded() {
        let hub = Hub::new();
        assert_eq!(hub.stream("Bad Name").unwrap_err(), StreamError::BadName);
        assert_eq!(hub.stream("").unwrap_err(), StreamError::BadName);
        let held: Vec<_> = (0..MAX_STREAMS)
            .map(|i| hub.stream(&format!("s{i}")).unwrap())
            .collect();
        assert_eq!(hub.stream("one-more").unwrap_err(), StreamError::TooMany);
        drop(held);
        assert!(
            hub.stream("one-more").is_ok(),
            "an unused stream makes room"
        );
    }

    #[test]
    fn one_uploader_per_stream_and_offline_when_it_leaves() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        let first = s.claim_upload().expect("first uploader");
        assert!(s.claim_upload().is_none());
        s.publish(frame(1));
        drop(first);
        assert!(matches!(s.current().status, StreamStatus::Offline(_)));
        assert!(s.current().frame.is_some(), "last good frame is kept");
        assert!(s.claim_upload().is_some());
    }

    #[test]
    fn status_messages_are_built_once_per_change() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        s.set_offline("gone");
        let first = s.current().status_message;
        assert!(first.contains("\"state\":\"offline\"") && first.contains("gone"));
        s.set_offline("gone");
        assert_eq!(
            s.current().status_message.as_ptr(),
            first.as_ptr(),
            "the same shared bytes"
        );
        s.publish(frame(1));
        assert!(s.current().status_message.contains("\"live\""));
    }

    #[tokio::test]
    async fn a_waiting_viewer_takes_no_slot_and_attaches_when_the_source_starts() {
        let hub = std::sync::Arc::new(Hub::new());
        let waiter = tokio::spawn({
            let hub = hub.clone();
            async move { hub.appeared("aula-2").await }
        });
        tokio::task::yield_now().await;
        assert!(hub.get("aula-2").is_none(), "waiting created nothing");
        assert!(hub.stats().is_empty());
        let fed = hub.stream("aula-2").unwrap();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("attached in time")
            .unwrap();
        assert!(Arc::ptr_eq(&fed, &seen));
    }

    #[test]
    fn a_new_stream_is_set_up_by_the_hooks_before_anyone_sees_it() {
        let hub = Hub::new();
        hub.on_create(|s| {
            if s.name() == "closed" {
                s.set_closed(Some(Closed { opens_at: Some(7) }));
            }
        });
        let s = hub.stream("closed").unwrap();
        assert_eq!(s.gate().closed, Some(Closed { opens_at: Some(7) }));
        assert!(hub.stream("other").unwrap().gate().is_open());
        // The same stream again is not set up again.
        s.set_closed(None);
        assert!(hub.stream("closed").unwrap().gate().is_open());
    }

    #[test]
    fn viewers_count_as_demand() {
        let hub = Hub::new();
        let s = hub.stream(CAMERA).unwrap();
        assert_eq!(s.demand_count(), 0);
        let v = s.watch(Audience::Staff, Transport::WsText);
        assert_eq!(s.demand_count(), 1);
        assert_eq!(s.stats().viewers, 1);
        drop(v);
        assert_eq!(s.demand_count(), 0);
        assert_eq!(s.stats().viewers, 0);
    }

    #[test]
    fn counters_keep_what_departed_viewers_were_sent() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        let text = s.watch(Audience::Staff, Transport::WsText);
        let binary = s.watch(Audience::Family, Transport::WsBinary);
        text.stats.frame_sent(100);
        binary.stats.frame_sent(70);
        binary.stats.frames_skipped.fetch_add(2, Ordering::Relaxed);
        let both = s.counters();
        assert_eq!(both.viewers, [1, 1, 0, 0], "by transport");
        assert_eq!((both.frames_sent, both.bytes_sent), (2, 170));
        drop(binary);
        let after = s.counters();
        assert_eq!(after.viewers, [1, 0, 0, 0]);
        assert_eq!(
            (after.frames_sent, after.frames_skipped, after.bytes_sent),
            (2, 2, 170),
            "a viewer's frames stay counted after it leaves"
        );
        assert_eq!(
            s.stats().frames_sent,
            1,
            "/stats.json: the viewers connected now"
        );
    }

    fn pause() -> Option<Paused> {
        Some(Paused {
            until: 1_700_000_000,
            by: "Ana".into(),
        })
    }

    #[tokio::test]
    async fn families_alone_do_not_wake_a_closed_or_paused_room() {
        let hub = Hub::new();
        let s = hub.stream(CAMERA).unwrap();
        s.set_paused(pause());
        let family = s.watch(Audience::Family, Transport::WsText);
        let snapshot = s.demand(Audience::Family);
        assert_eq!(s.demand_count(), 0, "paused: families are no demand");
        assert_eq!(s.stats().viewers, 1, "but they are still viewers");
        let wanted = tokio::time::timeout(std::time::Duration::from_millis(50), s.wanted());
        assert!(wanted.await.is_err(), "the source stays idle");

        // Staff see through the gate.
        let staff = s.watch(Audience::Staff, Transport::WsText);
        assert_eq!(s.demand_count(), 1);
        drop(staff);
        assert_eq!(s.demand_count(), 0);

        // Resuming wakes a source that waits for demand, at once.
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.wanted().await }
        });
        tokio::task::yield_now().await;
        s.set_paused(None);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the gate opening")
            .unwrap();
        assert_eq!(s.demand_count(), 2);

        // Closed holds them back just as paused does; it wins over a pause.
        s.set_closed(Some(Closed { opens_at: None }));
        assert_eq!(s.demand_count(), 0);
        s.set_paused(pause());
        s.set_closed(None);
        assert_eq!(s.demand_count(), 0, "still paused");
        s.set_paused(None);
        assert_eq!(s.demand_count(), 2);
        drop((family, snapshot));
        assert_eq!(s.demand_count(), 0);
    }

    #[test]
    fn the_family_status_is_built_once_per_gate_change() {
        let hub = Hub::new();
        let s = hub.stream("x").unwrap();
        let mut rx = s.subscribe_gate();
        assert!(
            s.gate_state().family_message.is_none(),
            "open: nothing to say"
        );
        s.set_paused(pause());
        assert!(rx.has_changed().unwrap());
        let first = rx.borrow_and_update().clone();
        let text = first.family_message.clone().unwrap();
        assert!(text.contains("\"state\":\"paused\"") && text.contains("1700000000"));
        s.set_paused(pause());
        assert!(!rx.has_changed().unwrap(), "the same pause is no news");
        assert_eq!(
            s.gate_state().family_message.unwrap().as_ptr(),
            text.as_ptr(),
            "the same shared bytes"
        );
        s.set_closed(Some(Closed {
            opens_at: Some(1_700_003_600),
        }));
        let closed = s.gate_state();
        assert!(closed.family_message.unwrap().contains("\"closed\""));
        assert!(
            !Arc::ptr_eq(&closed.picture, &first.picture),
            "a new picture slot per change"
        );
    }
}
