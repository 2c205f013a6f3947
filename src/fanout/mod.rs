//! The hub's one way out: where a stream's frames leave the server, for every
//! viewer of that stream at once.
//!
//! One task per stream holds all of its viewers' sockets ("seats"). When the hub
//! publishes a frame, the task walks the seats and writes the frame to each one
//! that has room, in one tight loop: a vectored write of a short header plus the
//! frame's shared bytes, no per-viewer wake-up, no allocation, no copy. A socket
//! that refuses part of a frame keeps its place (`out::Out`) and its own waker
//! (`bell`) brings just that seat back when the kernel says it drained; a viewer
//! that was busy when frames came skips to the newest one (`seat`). This is what
//! a hand-written event loop in C does, and what a task per viewer could not:
//! with 500 viewers, a frame used to wake, schedule and park 500 tasks across
//! the worker threads.
//!
//! Reading stays with each viewer's own task (it sleeps until the client says
//! something: a pong, a close), which hands the fan-out what must be written
//! back through the stream's door ([`Ticket`]). Timers are per stream too: a
//! sweep once a second pings quiet viewers and drops dead or stalled ones, and a
//! heap wakes seats whose path was holding a queue (`sendq`, `Room::InFlight`).
//!
//! At shutdown the task closes every seat with 1001 (a seat caught mid-frame is
//! simply dropped: there is no polite way out of half a frame) and gives the
//! stragglers `CLOSE_LIMIT`.

mod bell;
pub mod out;
mod seat;
mod splice;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::hub::{Audience, GateState, Snapshot, Stream, StreamStatus, Transport};
use crate::shutdown::Shutdown;
use crate::viewing_log::Presence;
use crate::ws::keepalive;
use crate::ws::split::{HasTcp, WriteHalf};
use crate::ws::CLOSE_LIMIT;

use bell::{Bell, Hall};
pub use seat::{Control, Framing, Wants, BOUNDARY};
use seat::{Seat, Turn, View};
use splice::Splicer;

/// What the fan-out needs of a viewer's socket: to write and flush it, its fd
/// for the send queue's questions, and to wait until the kernel drained it.
pub trait Outlet: AsyncWrite + Unpin + Send {
    fn fd(&self) -> RawFd;
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Whether written bytes may sit in a buffer until flushed (TLS); a plain
    /// socket's writes are the kernel's at once.
    fn buffers(&self) -> bool;
    /// A plain socket's fd, for the fast path: `writev` straight on it, with
    /// the runtime's readiness bookkeeping only once the kernel refuses
    /// (`out::Out::poll_write`). `None` where bytes must go through the writer.
    fn direct_fd(&self) -> Option<RawFd> {
        None
    }
}

/// A TLS connection's writing half (it shares the TLS state with the reading
/// half under a lock).
impl<S: AsyncWrite + HasTcp + Unpin + Send> Outlet for WriteHalf<S> {
    fn fd(&self) -> RawFd {
        self.tcp_fd()
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        WriteHalf::poll_drained(self, cx)
    }

    fn buffers(&self) -> bool {
        true
    }
}

/// A plain connection's writing half: no lock, no buffer, a `writev` per write.
impl Outlet for OwnedWriteHalf {
    fn fd(&self) -> RawFd {
        self.as_ref().as_raw_fd()
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        crate::sendq::poll_drained(self.as_ref(), cx)
    }

    fn buffers(&self) -> bool {
        false
    }

    fn direct_fd(&self) -> Option<RawFd> {
        Some(self.as_ref().as_raw_fd())
    }
}

/// Requests to a stream's fan-out.
enum Cmd {
    Join(Box<Seat>),
    /// The viewer said something (a pong, most likely): it is still there.
    Heard(u64),
    Control(u64, Control),
    /// Our side ends the socket (a session ended): a close frame if the socket
    /// is between messages, else dropped at once.
    End(u64, u16, &'static str),
    /// The client went away.
    Left(u64),
}

/// Requests wait for the fan-out beyond this many: a reader that floods is
/// slowed, nobody's memory grows.
const DOOR_CAPACITY: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A stream's way in to its fan-out; held by the stream, so the task ends with it.
#[derive(Debug)]
pub struct Door {
    tx: mpsc::Sender<Cmd>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl Door {
    /// Starts the fan-out task of a stream (see [`Stream::fanout`]).
    pub(crate) fn open(
        frames: watch::Receiver<Snapshot>,
        gate: watch::Receiver<GateState>,
        shutdown: Shutdown,
    ) -> Door {
        let (tx, rx) = mpsc::channel(DOOR_CAPACITY);
        let task = Fanout::new(frames, gate, rx);
        tokio::spawn(task.run(shutdown));
        Door {
            tx,
            next_id: AtomicU64::new(1),
        }
    }
}

/// A viewer's hold on its seat, kept by its task to hand over what the client
/// says and to learn when the seat is gone.
pub struct Ticket {
    id: u64,
    tx: mpsc::Sender<Cmd>,
}

/// Resolves when the fan-out has let go of a viewer's socket.
pub type Gone = oneshot::Receiver<()>;

impl Ticket {
    pub async fn heard(&self) {
        let _ = self.tx.send(Cmd::Heard(self.id)).await;
    }

    pub async fn control(&self, control: Control) {
        let _ = self.tx.send(Cmd::Control(self.id, control)).await;
    }

    /// Ends the socket from our side with `code` (a close frame when it can).
    pub async fn end(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Cmd::End(self.id, code, reason)).await;
    }

    /// The client closed its side: no more writes.
    pub async fn left(&self) {
        let _ = self.tx.send(Cmd::Left(self.id)).await;
    }
}

/// Seats `outlet` (the writing half of a viewer's socket) in `stream`'s fan-out;
/// `told` is the status the viewer was already told, if any. `None` when the
/// fan-out has ended (the daemon is shutting down).
#[allow(clippy::too_many_arguments)]
pub async fn join(
    stream: &Arc<Stream>,
    outlet: Box<dyn Outlet>,
    wants: Wants,
    audience: Audience,
    presence: Presence,
    told: Option<StreamStatus>,
    shutdown: &Shutdown,
) -> Option<(Ticket, Gone)> {
    let door = stream.fanout(shutdown);
    let id = door.next_id.fetch_add(1, Ordering::Relaxed);
    let (gone_tx, gone) = oneshot::channel();
    let transport = match wants.framing {
        Framing::WsText => Transport::WsText,
        Framing::WsBinary => Transport::WsBinary,
        Framing::Mjpeg => Transport::Mjpeg,
    };
    let viewer = stream.watch(audience, transport);
    let seat = Seat::new(
        id,
        outlet,
        wants,
        audience,
        viewer,
        presence,
        gone_tx,
        told,
        keepalive::RELAXED_PING_EVERY,
    );
    if wants.small {
        shrink_held_frame(stream).await;
    }
    door.tx.send(Cmd::Join(Box::new(seat))).await.ok()?;
    let ticket = Ticket {
        id,
        tx: door.tx.clone(),
    };
    Some((ticket, gone))
}

/// Gives the frame the hub holds its small variant, if it has none, for a
/// small viewer joining: intake makes them only while one is watching, and the
/// joiner's first frame should be small too (an MJPEG reader such as ffmpeg
/// takes the first part's size for the whole stream). Off the async workers.
async fn shrink_held_frame(stream: &Arc<Stream>) {
    let Some(frame) = stream.current().frame else {
        return;
    };
    if frame.small().is_some() || frame.width < crate::shrink::MIN_WIDTH {
        return;
    }
    let stream = stream.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let shrunk = crate::shrink::Shrinker::new().and_then(|mut s| s.shrink(&frame.jpeg));
        if let Ok(small) = shrunk {
            frame.set_small(crate::frame::Small::from_jpeg(
                small.jpeg,
                small.width,
                small.height,
            ));
            stream.count_small();
        }
    })
    .await;
}

/// A seat where the loop keeps it: inline in the fan-out's vector, so a frame's
/// walk over the seats reads memory in order instead of chasing a box each.
struct Slot {
    seat: Seat,
    bell: Arc<Bell>,
    waker: Waker,
}

struct Fanout {
    frames: watch::Receiver<Snapshot>,
    gate_rx: watch::Receiver<GateState>,
    door: mpsc::Receiver<Cmd>,
    snapshot: Snapshot,
    gate: GateState,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    hall: Arc<Hall>,
    rung: Vec<usize>,
    /// (when, slot, seat id): seats to look at again when a queue on their path
    /// should have drained.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// The current frame's messages in pipes (`splice`).
    splicer: Splicer,
}

impl Fanout {
    fn new(
        mut frames: watch::Receiver<Snapshot>,
        mut gate_rx: watch::Receiver<GateState>,
        door: mpsc::Receiver<Cmd>,
    ) -> Fanout {
        let snapshot = frames.borrow_and_update().clone();
        let gate = gate_rx.borrow_and_update().clone();
        let splicer = Splicer::default();
        splicer.new_frame(snapshot.frame.as_ref());
        Fanout {
            frames,
            gate_rx,
            door,
            snapshot,
            gate,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            hall: Arc::new(Hall::default()),
            rung: Vec::new(),
            timers: BinaryHeap::new(),
            splicer,
        }
    }

    async fn run(mut self, mut shutdown: Shutdown) {
        let mut sweep_at = Instant::now() + SWEEP_EVERY;
        loop {
            let wake_at = self
                .timers
                .peek()
                .map_or(sweep_at, |Reverse((at, _, _))| (*at).min(sweep_at));
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                cmd = self.door.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return, // the stream is gone, and with it every seat
                },
                changed = self.frames.changed() => {
                    if changed.is_err() { return; }
                    self.snapshot = self.frames.borrow_and_update().clone();
                    self.splicer.new_frame(self.snapshot.frame.as_ref());
                    self.for_each(|seat| { seat.want = true; true });
                }
                changed = self.gate_rx.changed() => {
                    if changed.is_err() { return; }
                    self.gate = self.gate_rx.borrow_and_update().clone();
                    self.draw_notice_picture();
                    self.for_each(|seat| {
                        let follows = seat.follows_gate();
                        seat.gate_news |= follows;
                        follows
                    });
                }
                _ = self.hall.rung() => self.answer_bells(),
                _ = tokio::time::sleep_until(wake_at) => {
                    let now = Instant::now();
                    self.fire_timers(now);
                    if now >= sweep_at {
                        self.sweep(now);
                        sweep_at = now + SWEEP_EVERY;
                    }
                }
            }
        }
        self.close_all(shutdown.goodbye()).await;
    }

    /// A paused room's MJPEG family clients are sent its notice picture: drawn
    /// once per pause off the async workers (never in this loop), and sent at
    /// their next repeat once it is there.
    fn draw_notice_picture(&self) {
        if !matches!(
            self.gate.gate.verdict(),
            crate::privacy::gate::Verdict::Paused(_)
        ) || self.gate.picture.get().is_some()
        {
            return;
        }
        let Some(stream) = self
            .slots
            .iter()
            .flatten()
            .find_map(|slot| slot.seat.shows_notice_picture())
        else {
            return;
        };
        let stream = stream.clone();
        tokio::task::spawn_blocking(move || {
            let _ = crate::privacy::notice::for_family(&stream, (640, 480), 75);
        });
    }

    /// Marks every seat with `mark` and gives those it returns true for a turn.
    fn for_each(&mut self, mut mark: impl FnMut(&mut Seat) -> bool) {
        let view = View {
            snapshot: &self.snapshot,
            gate: &self.gate,
            now: Instant::now(),
            splicer: &self.splicer,
        };
        let mut leaving = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if mark(&mut slot.seat) && turn(slot, &view, &mut self.timers, i) == Turn::Leaves {
                leaving.push(i);
            }
        }
        for i in leaving {
            self.remove(i);
        }
    }

    fn give_turn(&mut self, i: usize) {
        let view = View {
            snapshot: &self.snapshot,
            gate: &self.gate,
            now: Instant::now(),
            splicer: &self.splicer,
        };
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if turn(slot, &view, &mut self.timers, i) == Turn::Leaves {
            self.remove(i);
        }
    }

    fn answer_bells(&mut self) {
        let mut rung = std::mem::take(&mut self.rung);
        self.hall.take(&mut rung);
        for &i in &rung {
            if let Some(Some(slot)) = self.slots.get(i) {
                slot.bell.answered();
            }
            self.give_turn(i);
        }
        self.rung = rung;
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, i, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(Some(slot)) = self.slots.get_mut(i) else {
                continue;
            };
            if slot.seat.id != id {
                continue;
            }
            slot.seat.timer_at = None;
            self.give_turn(i);
        }
    }

    /// Once a second: bring the viewers' counters up to date, drop viewers that
    /// stalled or went silent, ping the quiet.
    fn sweep(&mut self, now: Instant) {
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            let seat = &mut slot.seat;
            seat.publish_counts();
            if seat.due.is_some_and(|due| now >= due) {
                dead.push(i);
            } else if seat.pings() && now >= seat.next_ping {
                if now.duration_since(seat.last_heard) >= keepalive::RELAXED_DEAD_AFTER {
                    dead.push(i);
                } else {
                    seat.control(Control::Ping);
                    seat.next_ping = now + keepalive::RELAXED_PING_EVERY;
                    ping.push(i);
                }
            }
        }
        for i in dead {
            self.remove(i);
        }
        for i in ping {
            self.give_turn(i);
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(seat) => {
                let i = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                let bell = Bell::new(i, self.hall.clone());
                let waker = bell.waker();
                self.by_id.insert(seat.id, i);
                self.slots[i] = Some(Slot {
                    seat: *seat,
                    bell,
                    waker,
                });
                self.give_turn(i);
            }
            Cmd::Heard(id) => {
                if let Some(seat) = self.seat(id) {
                    seat.last_heard = Instant::now();
                }
            }
            Cmd::Control(id, control) => {
                let Some(&i) = self.by_id.get(&id) else {
                    return;
                };
                if let Some(seat) = self.seat(id) {
                    let now = Instant::now();
                    let leaving = matches!(control, Control::Close(..));
                    seat.last_heard = now;
                    seat.control(control);
                    if leaving {
                        // The client said goodbye: a frame half written may
                        // hold our close frame back, but only for CLOSE_LIMIT,
                        // not the stall limit meant for a reader that is slow.
                        let by = now + CLOSE_LIMIT;
                        seat.due = Some(seat.due.map_or(by, |due| due.min(by)));
                    }
                    self.give_turn(i);
                }
            }
            Cmd::End(id, code, reason) => {
                let Some(&i) = self.by_id.get(&id) else {
                    return;
                };
                let Some(seat) = self.seat(id) else { return };
                if seat.mid_frame() {
                    // No polite way out of half a frame: just drop the socket.
                    self.remove(i);
                } else {
                    seat.control(Control::Close(code, reason));
                    seat.due = Some(Instant::now() + CLOSE_LIMIT);
                    self.give_turn(i);
                }
            }
            Cmd::Left(id) => {
                if let Some(&i) = self.by_id.get(&id) {
                    self.remove(i);
                }
            }
        }
    }

    fn seat(&mut self, id: u64) -> Option<&mut Seat> {
        let i = *self.by_id.get(&id)?;
        self.slots[i].as_mut().map(|slot| &mut slot.seat)
    }

    fn remove(&mut self, i: usize) {
        if let Some(slot) = self.slots[i].take() {
            tracing::debug!(seat = slot.seat.id, "a viewer leaves the fan-out");
            self.by_id.remove(&slot.seat.id);
            self.free.push(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Closes every seat with `goodbye`, within `CLOSE_LIMIT` in all.
    async fn close_all(mut self, goodbye: crate::shutdown::Goodbye) {
        let deadline = Instant::now() + CLOSE_LIMIT;
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.command(Cmd::End(id, goodbye.code, goodbye.reason));
        }
        while !self.is_empty() {
            tokio::select! {
                _ = self.hall.rung() => self.answer_bells(),
                cmd = self.door.recv() => match cmd {
                    Some(Cmd::Join(_)) | None => {}
                    Some(cmd @ (Cmd::Left(_) | Cmd::Heard(_))) => self.command(cmd),
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Whoever is left is dropped with the task.
    }
}

/// Gives a seat its turn with its own waker, so the socket's readiness rings
/// its bell.
fn turn(
    slot: &mut Slot,
    view: &View<'_>,
    timers: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>,
    i: usize,
) -> Turn {
    let mut cx = Context::from_waker(&slot.waker);
    let had_timer = slot.seat.timer_at;
    // A bug hit by one viewer closes that viewer's socket; the stream's other
    // viewers keep their frames (as a task per viewer would have isolated it).
    let seat = &mut slot.seat;
    let turn = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        seat.advance(&mut cx, view)
    })) {
        Ok(turn) => turn,
        Err(_) => {
            tracing::error!(
                seat = seat.id,
                "a viewer's turn failed; its socket is closed"
            );
            Turn::Leaves
        }
    };
    if let Some(at) = slot.seat.timer_at {
        if had_timer != Some(at) {
            timers.push(Reverse((at, i, slot.seat.id)));
        }
    }
    turn
}
