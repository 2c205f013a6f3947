//! One viewer in a fan-out: what it has been sent and told, what it is owed,
//! and the rules for choosing its next message.
//!
//! The rules are the ones a viewer's own task used to follow, kept whole: only
//! the newest frame is sent, chosen as late as possible (when the socket has
//! room for it, `sendq`), so a slow viewer skips ahead and never queues more
//! than one frame; a family viewer follows the stream's gate (the gate's notice
//! and no frames while the room is shut, and never a frame taken while it was);
//! staff who asked are told the gate's state; a status change is told once. What
//! changed is who runs them: the fan-out's one task, for every viewer of the
//! stream in turn, instead of a task per viewer woken for every frame.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::out::{self, Body, Out, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use super::splice::{Form, Spliceable, Splicer};
use super::Outlet;
use crate::frame::Frame;
use crate::hub::{Audience, GateState, SmallGuard, Snapshot, StreamStatus, ViewerGuard};
use crate::privacy::gate::Verdict;
use crate::sendq::{self, Room, Trust};
use crate::viewing_log::Presence;

/// How a viewer wants its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// WebSocket text messages: `data:image/jpeg;base64,...` (the prototype's).
    WsText,
    /// WebSocket binary messages: the JPEG file.
    WsBinary,
    /// Parts of an HTTP `multipart/x-mixed-replace` response (`/stream.mjpg`,
    /// µStreamer's and mjpg-streamer's format), each followed at once by the
    /// next boundary, since browsers and VLC show a part only when it ends.
    Mjpeg,
}

/// The boundary between MJPEG parts (the response head names it).
pub const BOUNDARY: &str = "kindercamframe";
/// What ends every part: the next boundary, at once.
const PART_END: &[u8] = b"\r\n--kindercamframe\r\n";
/// An MJPEG client is sent the last picture again when no new one came for
/// this long: browsers then show it, and a dead client is noticed.
pub const MJPEG_REPEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a viewer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub framing: Framing,
    /// Each frame preceded by its capture time (`?meta=1`), in the same write.
    pub meta: bool,
    /// Staff told the gate's state (`?gate=1`): at once, then on every change.
    pub gate: bool,
    /// The frame's small variant (`?size=small`) where it has one.
    pub small: bool,
}

/// Messages other than frames, sent between frames in the order asked.
#[derive(Debug)]
pub enum Control {
    Ping,
    Pong(Vec<u8>),
    Close(u16, &'static str),
}

/// A viewer can queue no more control messages than this; a client that pings
/// faster than it reads its pongs loses the surplus.
const CONTROLS_MAX: usize = 4;

/// What the stream looks like to the fan-out right now.
pub struct View<'a> {
    pub snapshot: &'a Snapshot,
    pub gate: &'a GateState,
    pub now: Instant,
    /// The current frame's messages in pipes, for plain sockets (`splice`).
    pub splicer: &'a Splicer,
}

/// What choosing a seat's next message came to. (`Out` inline, not boxed: it is
/// moved once per message, and a box would be an allocation per viewer and frame.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Send(Out),
    /// Nothing to send now, or no room yet (the seat's bell or a timer will
    /// bring it back).
    Nothing,
    Broken,
}

/// Whether a seat stays after a turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    Stays,
    /// Done with (closed, broken, or its socket gone): remove it.
    Leaves,
}

/// What a seat wrote since its counts last reached the viewer's shared ones.
#[derive(Default)]
struct Unpublished {
    frames: u64,
    bytes: u64,
    /// Of `frames`, those that left from the fan-out's pipe.
    spliced: u64,
}

pub struct Seat {
    pub id: u64,
    outlet: Box<dyn Outlet>,
    fd: RawFd,
    /// A plain socket's fd, written with `writev` directly (`Outlet::direct_fd`).
    direct_fd: Option<RawFd>,
    wants: Wants,
    audience: Audience,
    viewer: ViewerGuard,
    /// Held while this viewer wants small frames, so intake makes them.
    _small: Option<SmallGuard>,
    presence: Presence,
    /// Dropped with the seat: tells the viewer's task its socket is done.
    _gone: oneshot::Sender<()>,

    controls: VecDeque<Control>,
    out: Option<Out>,
    /// The hub has a frame (or status) this viewer has not been sent.
    pub want: bool,
    /// The gate changed since this viewer was last told.
    pub gate_news: bool,
    /// A close frame is going out: the seat leaves once it has.
    closing: bool,
    /// Frames and their bytes written since they were last added to the
    /// viewer's shared counters ([`Seat::publish_counts`], once a second and
    /// when the seat leaves): those counters are one more cache line per
    /// viewer, which the kernel's copying of every frame has long evicted by
    /// the viewer's next turn.
    unpublished: Unpublished,
    /// Until when the socket must take what this viewer is owed; a peer that
    /// takes nothing for that long is gone.
    pub due: Option<Instant>,
    /// The status just sent is followed at once by the frame, without asking
    /// about room twice.
    room_granted: bool,
    waiting_room: bool,
    drained: bool,
    trust: Trust,
    /// When a timer (a queue on the path draining) is due to look at this seat.
    pub timer_at: Option<Instant>,
    /// MJPEG: when the last picture is due to be sent again.
    repeat_at: Option<Instant>,
    last_seq: u64,
    told: Option<StreamStatus>,
    /// What a family viewer was last told about the gate: `Some` while held.
    held: Option<GateState>,
    pub last_heard: Instant,
    pub next_ping: Instant,
}

impl Seat {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        outlet: Box<dyn Outlet>,
        wants: Wants,
        audience: Audience,
        viewer: ViewerGuard,
        presence: Presence,
        gone: oneshot::Sender<()>,
        told: Option<StreamStatus>,
        ping_every: std::time::Duration,
    ) -> Seat {
        let fd = outlet.fd();
        viewer.stats.outgoing.set_socket(fd);
        let small = wants.small.then(|| viewer.stream().want_small());
        let now = Instant::now();
        let follows_gate = audience == Audience::Family || wants.gate;
        Seat {
            id,
            direct_fd: outlet.direct_fd(),
            outlet,
            fd,
            wants,
            audience,
            viewer,
            _small: small,
            presence,
            _gone: gone,
            controls: VecDeque::new(),
            out: None,
            // A joining viewer gets the latest frame at once, after the gate's word.
            want: true,
            gate_news: follows_gate,
            closing: false,
            unpublished: Unpublished::default(),
            due: None,
            room_granted: false,
            waiting_room: false,
            drained: false,
            trust: Trust::default(),
            timer_at: None,
            repeat_at: None,
            last_seq: 0,
            told,
            held: None,
            last_heard: now,
            next_ping: now + ping_every,
        }
    }

    pub fn follows_gate(&self) -> bool {
        self.audience == Audience::Family || self.wants.gate
    }

    /// The stream, if this is a family's MJPEG client: it shows a paused room's
    /// notice picture, which someone must draw.
    pub fn shows_notice_picture(&self) -> Option<&Arc<crate::hub::Stream>> {
        (self.wants.framing == Framing::Mjpeg && self.audience == Audience::Family)
            .then(|| self.viewer.stream())
    }

    /// Whether the keepalive applies: MJPEG clients say nothing after their
    /// request, so silence is normal; the repeats find a dead one.
    pub fn pings(&self) -> bool {
        self.wants.framing != Framing::Mjpeg
    }

    /// Queues a control message; a close replaces whatever was queued.
    pub fn control(&mut self, control: Control) {
        if self.closing {
            return;
        }
        if let Control::Close(..) = control {
            self.controls.clear();
        } else if self.controls.len() >= CONTROLS_MAX {
            return;
        }
        self.controls.push_back(control);
    }

    /// Adds the frames written since the last call to the viewer's counters
    /// (`/stats.json`, `/metrics`).
    pub fn publish_counts(&mut self) {
        let counts = std::mem::take(&mut self.unpublished);
        if counts.frames > 0 {
            let stats = &self.viewer.stats;
            stats
                .frames_sent
                .fetch_add(counts.frames, Ordering::Relaxed);
            stats.bytes_sent.fetch_add(counts.bytes, Ordering::Relaxed);
            if counts.spliced > 0 {
                stats
                    .frames_spliced
                    .fetch_add(counts.spliced, Ordering::Relaxed);
            }
        }
    }

    /// Whether a frame is partly written: the socket cannot take a close frame
    /// now without corrupting the stream.
    pub fn mid_frame(&self) -> bool {
        self.out.as_ref().is_some_and(|o| o.is_frame)
    }

    /// Writes what this viewer is owed until the socket refuses more (its bell
    /// then rings when it drains) or nothing is left.
    pub fn advance(&mut self, cx: &mut Context<'_>, view: &View<'_>) -> Turn {
        let turn = self.write_owed(cx, view);
        // An MJPEG repeat still to come needs a timer: the one that brought this
        // turn (a queue on the path draining) may have been set before it, and
        // has just fired. A repeat already due waits for the socket instead (its
        // bell, or the send queue's timer, brings the seat back): a timer for a
        // time gone by would fire again at once, for ever.
        if let Some(at) = self.repeat_at.filter(|at| *at > view.now) {
            if self.timer_at.is_none_or(|t| at < t) {
                self.timer_at = Some(at);
            }
        }
        turn
    }

    fn write_owed(&mut self, cx: &mut Context<'_>, view: &View<'_>) -> Turn {
        loop {
            if let Some(out) = &mut self.out {
                // `/stats.json` follows a frame once it waits for the socket:
                // one written whole in its first turn never waited.
                let outgoing = out.shown.then_some(&self.viewer.stats.outgoing);
                let flush = self.outlet.buffers();
                let direct = self.direct_fd;
                let splicer = Some(view.splicer);
                match out.poll_write(&mut *self.outlet, cx, outgoing, flush, direct, splicer) {
                    Poll::Pending => {
                        if out.is_frame && !out.shown {
                            let outgoing = &self.viewer.stats.outgoing;
                            outgoing.begin(out.total());
                            outgoing.written(out.left());
                            out.shown = true;
                        }
                        return Turn::Stays;
                    }
                    Poll::Ready(Err(_)) => return Turn::Leaves,
                    Poll::Ready(Ok(())) => {
                        let out = self.out.take().expect("written above");
                        self.due = None;
                        if out.is_frame {
                            if out.shown {
                                self.viewer.stats.outgoing.end();
                            }
                            self.unpublished.frames += 1;
                            self.unpublished.bytes += out.total() as u64;
                            self.unpublished.spliced += u64::from(out.spliced);
                            self.trust.wrote(out.writes);
                        }
                        if self.closing {
                            return Turn::Leaves;
                        }
                    }
                }
            }
            match self.next(cx, view) {
                Next::Send(out) => {
                    // A close frame (`closing` is set as it is queued) gets
                    // CLOSE_LIMIT to go out; anything else the stall limit.
                    let limit = if self.closing {
                        crate::ws::CLOSE_LIMIT
                    } else {
                        crate::ws::SEND_STALL_LIMIT
                    };
                    self.due.get_or_insert(view.now + limit);
                    self.out = Some(out);
                }
                Next::Nothing => return Turn::Stays,
                Next::Broken => return Turn::Leaves,
            }
        }
    }

    fn next(&mut self, cx: &mut Context<'_>, view: &View<'_>) -> Next {
        if self.wants.framing == Framing::Mjpeg {
            // No control messages in MJPEG: a close ends the connection.
            if let Some(Control::Close(..)) = self.controls.pop_front() {
                return Next::Broken;
            }
            self.controls.clear();
        }
        if let Some(control) = self.controls.pop_front() {
            let mut out = Out::new(false);
            match control {
                Control::Ping => out.ws(OP_PING, Body::Static(b"")),
                Control::Pong(payload) => out.ws(OP_PONG, Body::Owned(payload)),
                Control::Close(code, reason) => {
                    self.closing = true;
                    out.ws(OP_CLOSE, Body::Owned(out::close_payload(code, reason)));
                }
            }
            return Next::Send(out);
        }
        if self.closing {
            return Next::Nothing;
        }
        if self.gate_news {
            self.gate_news = false;
            match self.pass_gate(view) {
                Notice::Text(text) => return Next::Send(text_out(text)),
                Notice::Leave => return Next::Broken,
                Notice::Nothing => {}
            }
        }
        let repeat = self.repeat_at.is_some_and(|at| at <= view.now);
        if self.held.is_some() {
            // A paused room's MJPEG clients get its notice picture, again and again.
            if repeat && self.wants.framing == Framing::Mjpeg {
                self.repeat_at = None;
                if let Some(Some(picture)) = view.gate.picture.get() {
                    self.set_repeat(view.now);
                    return Next::Send(mjpeg_out(Body::Picture(picture.clone()), picture.len(), 0));
                }
                self.set_repeat(view.now);
            }
            return Next::Nothing;
        }
        if repeat && !self.want {
            // A still MJPEG stream: the last frame again.
            self.repeat_at = None;
            // Never a frame a family may not see: the last one it passed over
            // was taken while the room was shut (`last_seq` moves past it).
            let may_see = |seq| self.audience != Audience::Family || view.gate.lets_family_see(seq);
            if let Some(frame) = view
                .snapshot
                .frame
                .as_ref()
                .filter(|_| view.snapshot.seq == self.last_seq && may_see(self.last_seq))
            {
                self.set_repeat(view.now);
                return Next::Send(self.frame_out(frame));
            }
        }
        if !self.want {
            return Next::Nothing;
        }
        match self.room(cx, view) {
            Poll::Ready(true) => {}
            Poll::Ready(false) => return Next::Broken,
            Poll::Pending => return Next::Nothing,
        }
        // The socket has room: whatever the hub has now is what this viewer gets.
        self.want = false;
        let snapshot = view.snapshot;
        if should_tell(&snapshot.status, &mut self.told) && self.wants.framing != Framing::Mjpeg {
            // The frame follows in the same turn.
            self.want = true;
            self.room_granted = true;
            return Next::Send(text_out(snapshot.status_message.clone()));
        }
        self.room_granted = false;
        let Some(frame) = snapshot
            .frame
            .as_ref()
            .filter(|_| snapshot.seq != self.last_seq)
        else {
            return Next::Nothing;
        };
        if self.audience == Audience::Family && !view.gate.lets_family_see(snapshot.seq) {
            // Taken while the room was shut (for staff): wait for a newer one.
            self.last_seq = snapshot.seq;
            return Next::Nothing;
        }
        if self.last_seq != 0 && snapshot.seq > self.last_seq + 1 {
            // Rare (a viewer that was not ready), and told at once.
            self.viewer
                .stats
                .frames_skipped
                .fetch_add(snapshot.seq - self.last_seq - 1, Ordering::Relaxed);
        }
        self.last_seq = snapshot.seq;
        if self.wants.framing == Framing::Mjpeg {
            self.set_repeat(view.now);
        }
        Next::Send(self.frame_out(frame))
    }

    /// Schedules the next MJPEG repeat.
    fn set_repeat(&mut self, now: Instant) {
        let at = now + MJPEG_REPEAT;
        self.repeat_at = Some(at);
        if self.timer_at.is_none_or(|t| at < t) {
            self.timer_at = Some(at);
        }
    }

    fn frame_out(&self, frame: &Arc<Frame>) -> Out {
        let small = self.wants.small && frame.small().is_some();
        if self.wants.framing == Framing::Mjpeg {
            let (body, len) = match frame.small() {
                Some(s) if small => (Body::SmallJpeg(frame.clone()), s.jpeg.len()),
                _ => (Body::Jpeg(frame.clone()), frame.jpeg.len()),
            };
            let mut out = mjpeg_out(body, len, frame.captured_unix_ms);
            out.spliceable = Some(Spliceable::of(
                Form::new(Framing::Mjpeg, small, false),
                frame,
            ));
            return out;
        }
        let mut out = Out::new(true);
        let form = Form::new(self.wants.framing, small, self.wants.meta);
        out.spliceable = Some(Spliceable::of(form, frame));
        if self.wants.meta {
            out.ws(OP_TEXT, Body::Meta(frame.clone()));
        }
        match (self.wants.framing, small) {
            (Framing::WsText, false) => out.ws(OP_TEXT, Body::DataUrl(frame.clone())),
            (Framing::WsBinary, false) => out.ws(OP_BINARY, Body::Jpeg(frame.clone())),
            (Framing::WsText, true) => out.ws(OP_TEXT, Body::SmallDataUrl(frame.clone())),
            (Framing::WsBinary, true) => out.ws(OP_BINARY, Body::SmallJpeg(frame.clone())),
            (Framing::Mjpeg, _) => unreachable!("handled above"),
        }
        out
    }

    /// The size of the message the hub's newest frame makes for this viewer.
    fn newest_bytes(&self, snapshot: &Snapshot) -> usize {
        snapshot.frame.as_ref().map_or(0, |f| {
            match (self.wants.framing, f.small().filter(|_| self.wants.small)) {
                (Framing::WsText, None) => f.data_url.len(),
                (Framing::WsBinary | Framing::Mjpeg, None) => f.jpeg.len(),
                (Framing::WsText, Some(s)) => s.data_url.len(),
                (Framing::WsBinary | Framing::Mjpeg, Some(s)) => s.jpeg.len(),
            }
        })
    }

    /// Whether the socket has room for the next frame (`sendq::room`): `Ready(true)`
    /// to send now, `Pending` to wait (the bell or a timer is set), `Ready(false)`
    /// if the socket broke. A socket that keeps up is trusted and not asked.
    fn room(&mut self, cx: &mut Context<'_>, view: &View<'_>) -> Poll<bool> {
        if self.room_granted || (!self.waiting_room && !self.trust.must_ask()) {
            return Poll::Ready(true);
        }
        let bytes = self.newest_bytes(view.snapshot);
        loop {
            let room = sendq::room(self.fd, bytes, self.drained);
            self.trust.asked(room);
            match room {
                Room::Idle | Room::Now => {
                    self.waiting_room = false;
                    self.drained = false;
                    return Poll::Ready(true);
                }
                Room::Unsent => {
                    self.waiting_room = true;
                    // A close frame (`closing` is set as it is queued) gets
                    // CLOSE_LIMIT to go out; anything else the stall limit.
                    let limit = if self.closing {
                        crate::ws::CLOSE_LIMIT
                    } else {
                        crate::ws::SEND_STALL_LIMIT
                    };
                    self.due.get_or_insert(view.now + limit);
                    match self.outlet.poll_drained(cx) {
                        Poll::Ready(Ok(())) => self.drained = true,
                        Poll::Ready(Err(_)) => return Poll::Ready(false),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Room::InFlight(wait) => {
                    self.waiting_room = true;
                    self.drained = false;
                    // A close frame (`closing` is set as it is queued) gets
                    // CLOSE_LIMIT to go out; anything else the stall limit.
                    let limit = if self.closing {
                        crate::ws::CLOSE_LIMIT
                    } else {
                        crate::ws::SEND_STALL_LIMIT
                    };
                    self.due.get_or_insert(view.now + limit);
                    let at = view.now + wait;
                    if self.timer_at.is_none_or(|t| at < t) {
                        self.timer_at = Some(at);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Acts on the gate for a viewer that follows it: staff who asked are told
    /// its state; a family viewer is told why while it is shut (once per change)
    /// and, when it opens, the stream's status, so its page clears the notice.
    fn pass_gate(&mut self, view: &View<'_>) -> Notice {
        let state = view.gate;
        if self.audience == Audience::Staff {
            return Notice::Text(state.staff_message.clone());
        }
        if self.wants.framing == Framing::Mjpeg {
            return self.pass_gate_mjpeg(view);
        }
        let text = match (&state.family_message, self.held.as_ref()) {
            (Some(_), Some(told)) if told.gate == state.gate => None,
            (Some(text), _) => {
                self.held = Some(state.clone());
                Some(text.clone())
            }
            (None, None) => None,
            (None, Some(_)) => {
                self.held = None;
                self.told = Some(view.snapshot.status.clone());
                Some(view.snapshot.status_message.clone())
            }
        };
        // Held is not watching: the viewing log says so.
        self.presence.held(self.held.is_some());
        if self.held.is_none() {
            // Open: the newest frame goes out at once.
            self.want = true;
        }
        text.map_or(Notice::Nothing, Notice::Text)
    }

    /// The gate for a family's MJPEG client, which can be told nothing in words:
    /// a closed room ends the stream (the client's retry is refused with the
    /// reason, 403); a paused one shows its notice picture until it resumes.
    fn pass_gate_mjpeg(&mut self, view: &View<'_>) -> Notice {
        let state = view.gate;
        match state.gate.verdict() {
            Verdict::Closed(_) => return Notice::Leave,
            Verdict::Paused(_) => {
                if self
                    .held
                    .as_ref()
                    .is_none_or(|told| told.gate != state.gate)
                {
                    self.held = Some(state.clone());
                    // At once if drawn, else at the next repeat.
                    self.repeat_at = Some(view.now);
                }
            }
            Verdict::Open => {
                if self.held.take().is_some() {
                    self.want = true;
                }
            }
        }
        self.presence.held(self.held.is_some());
        Notice::Nothing
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        // Before the viewer's guard adds its counts to the stream's departed.
        self.publish_counts();
        // Before the socket closes: the stats stop asking about this fd.
        self.viewer.forget_socket();
    }
}

/// What the gate has for a viewer.
enum Notice {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// The connection ends (an MJPEG family client of a room that closed).
    Leave,
    Nothing,
}

/// One MJPEG part: its headers, the JPEG (`len` bytes), and the next boundary.
/// `X-Timestamp` is the capture time in seconds, as µStreamer sends it.
fn mjpeg_out(body: Body, len: usize, captured_unix_ms: u64) -> Out {
    let mut out = Out::new(true);
    let mut head = [0u8; 128];
    let mut cursor = std::io::Cursor::new(&mut head[..]);
    let _ = write!(
        cursor,
        "Content-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: {}.{:03}000\r\n\r\n",
        captured_unix_ms / 1000,
        captured_unix_ms % 1000
    );
    let n = cursor.position() as usize;
    let fits = out.head(&head[..n]);
    debug_assert!(fits, "an MJPEG part's headers fit");
    out.body(body);
    out.body(Body::Static(PART_END));
    out
}

fn text_out(text: tokio_tungstenite::tungstenite::Utf8Bytes) -> Out {
    let mut out = Out::new(false);
    out.ws(OP_TEXT, Body::Text(text));
    out
}

/// Whether to send the stream's status: it changed from what this viewer was last
/// told (a new offline reason counts). A viewer joining a live stream is told
/// nothing, so a client that puts every message into `img.src` (the prototype)
/// only ever sees frames.
fn should_tell(status: &StreamStatus, told: &mut Option<StreamStatus>) -> bool {
    if told.as_ref() == Some(status) {
        return false;
    }
    let first = told.is_none();
    *told = Some(status.clone());
    !(first && *status == StreamStatus::Live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_viewer_of_live_stream_hears_no_status() {
        let live = StreamStatus::Live;
        let offline = StreamStatus::Offline("gone".into());
        let mut told = None;
        assert!(!should_tell(&live, &mut told));
        assert!(should_tell(&offline, &mut told));
        assert!(!should_tell(&offline, &mut told), "said once");
        let other = StreamStatus::Offline("unplugged".into());
        assert!(should_tell(&other, &mut told), "a new reason is news");
        assert!(should_tell(&live, &mut told));
    }
}
