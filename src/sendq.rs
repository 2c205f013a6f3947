//! A video socket's send queue: kept to about one frame, asked before each frame
//! is chosen, and measured for `/stats.json`.
//!
//! Linux grows a TCP socket's send buffer to megabytes, and it accepts every write
//! that fits. On a link slower than the frames, the frames then queue in the kernel
//! and a viewer sees the room as it was seconds ago, while kindercam never sees a
//! "would block" and so never skips. Here each video socket gets a low
//! `TCP_NOTSENT_LOWAT` (Linux 3.12, commit c9bee3b7): the socket reports itself
//! writable only while less than half of it is still unsent, and takes no new
//! segment while that much is. Before the writer picks a frame, [`room`] asks how
//! much is still on its way (unsent, and in flight: a queue in a bloated modem or
//! a shaped link holds frames just as well) and the writer waits until that is at
//! most one frame, so the frame it then sends is the hub's newest, and frames that
//! arrive meanwhile replace each other in the hub instead of queueing anywhere.
//! A socket that keeps up is asked only now and then ([`Trust`]). `SIOCOUTQNSD`
//! (Linux 2.6.39) reads the unsent bytes for the stats.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The unsent bytes a video socket may hold before it stops taking more.
/// Writable means less than half of this is unsent: 8 KiB, a fraction of any
/// frame, so the next frame is chosen when the last one has all but left.
/// Small enough not to matter for freshness (64 ms at 1 Mbit/s), large enough
/// that a fast link is never starved between two wake-ups.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Bounds what the kernel holds unsent for this socket (video sockets only: a
/// chat or upload socket has nothing to skip).
pub fn bound(socket: &impl AsRawFd) -> io::Result<()> {
    let value = NOTSENT_LOWAT as libc::c_int;
    // SAFETY: a valid socket fd, and a pointer to an int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ready once the socket is writable in the kernel's own sense: with
/// [`NOTSENT_LOWAT`] set, when less than half of it is unsent. tokio remembers a
/// socket as writable from its last successful write, which says nothing about
/// what is still queued, so this asks the kernel (`poll`, no wait) every time; when
/// the answer is no, the kernel has marked the socket to wake us as it drains
/// (`tcp_poll` sets SOCK_NOSPACE) and tokio's stale readiness is cleared, without
/// losing a wake-up that came in between (`try_io` clears only the readiness it saw).
pub fn poll_drained(tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        let fd = tcp.as_raw_fd();
        match tcp.try_io(Interest::WRITABLE, || writable_now(fd)) {
            Ok(()) => return Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// `Ok` if the kernel would report the socket writable now (or in error: the
/// write that follows finds out), `WouldBlock` if not.
fn writable_now(fd: RawFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        Ok(())
    } else {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// The bytes the kernel holds for this socket that it has not sent yet; `None`
/// where neither the kernel nor an emulator can say. qemu-user may not know
/// `SIOCOUTQNSD`; then `SIOCOUTQ` (unsent plus unacknowledged) stands in, an
/// upper bound.
pub fn unsent(fd: RawFd) -> Option<usize> {
    int_ioctl(fd, libc::SIOCOUTQNSD as _).or_else(|| outstanding(fd))
}

/// The bytes the peer has not acknowledged yet: in flight plus unsent (`SIOCOUTQ`).
pub fn outstanding(fd: RawFd) -> Option<usize> {
    int_ioctl(fd, libc::TIOCOUTQ as _)
}

fn int_ioctl(fd: RawFd, request: libc::Ioctl) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: both requests write one int through the pointer.
    let rc = unsafe { libc::ioctl(fd, request, &mut n) };
    (rc == 0).then(|| n.max(0) as usize)
}

/// What a socket can take before the next frame is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Nothing (or next to nothing) is still on its way: the link keeps up.
    Idle,
    /// Choose and send the frame now.
    Now,
    /// The kernel holds unsent bytes: wait for [`poll_drained`], then ask again.
    Unsent,
    /// More is in flight than the path needs to stay busy: the surplus waits in a
    /// queue somewhere on the way (a bloated modem, a shaped link). Ask again after
    /// this long, about the time the surplus takes to be delivered.
    InFlight(Duration),
}

/// Whether the socket `fd` has room for a frame of `frame_bytes`. A frame is
/// chosen when what is still on its way to the viewer is at most one frame, or
/// the path's bandwidth-delay product where that is more, so that a fast link far
/// away stays full and loses nothing. Each frame then waits behind at most one
/// other, wherever the queue is. `drained` says the caller has just waited for
/// [`poll_drained`], so an emulator that cannot say how much is queued does not
/// make it wait again.
///
/// One `ioctl` when little is outstanding (a link that keeps up); the slow path
/// adds one more and a `TCP_INFO`.
pub fn room(fd: RawFd, frame_bytes: usize, drained: bool) -> Room {
    let Some(outstanding) = outstanding(fd) else {
        return if drained { Room::Now } else { Room::Unsent };
    };
    let unsent_ok = (NOTSENT_LOWAT / 2) as usize;
    if outstanding < unsent_ok {
        return Room::Idle; // and so less than that is unsent: the kernel says writable
    }
    if unsent(fd).is_some_and(|n| n >= unsent_ok) {
        return Room::Unsent;
    }
    let path = Path::of(fd);
    let allowance = frame_bytes.max(path.bdp());
    if outstanding <= allowance {
        return Room::Now;
    }
    Room::InFlight(path.time_to_deliver(outstanding - allowance))
}

/// Whether to ask the kernel ([`room`]) before the next frame. Asking costs a
/// system call (0.4-0.6 µs on the benchmark machine, some 4 % of a frame's whole
/// cost), so a socket that keeps up is trusted: after [`TRUST_AFTER`] frames in a
/// row that found it idle and went out in one write, only every
/// [`RECHECK_EVERY`]th frame asks. Trust ends at once when a frame needs more
/// than one write (the kernel refused part of it: the link fell behind), so a
/// link that slows down is caught within a frame or two, while the kernel's own
/// bound (`NOTSENT_LOWAT`) still holds.
#[derive(Debug, Default)]
pub struct Trust {
    idle_streak: u32,
    unasked: u32,
}

pub const TRUST_AFTER: u32 = 4;
pub const RECHECK_EVERY: u32 = 16;

impl Trust {
    /// Whether this frame must ask; counts the frames that do not.
    pub fn must_ask(&mut self) -> bool {
        if self.idle_streak >= TRUST_AFTER && self.unasked + 1 < RECHECK_EVERY {
            self.unasked += 1;
            return false;
        }
        true
    }

    /// What asking found.
    pub fn asked(&mut self, room: Room) {
        self.unasked = 0;
        self.idle_streak = if room == Room::Idle {
            self.idle_streak.saturating_add(1)
        } else {
            0
        };
    }

    /// The frame went out in `writes` write calls.
    pub fn wrote(&mut self, writes: u32) {
        if writes > 1 {
            self.idle_streak = 0;
            self.unasked = 0;
        }
    }
}

/// The path to a viewer as TCP measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Path {
    /// Bytes per second delivered lately (`tcpi_delivery_rate`, Linux 4.9); 0 if unknown.
    rate: u64,
    /// The smallest round trip seen (`tcpi_min_rtt`, Linux 4.6): the path without queues.
    min_rtt: Duration,
}

/// How long to wait at most before looking again at a queue that drains slowly,
/// or whose rate TCP cannot tell.
const RECHECK_MAX: Duration = Duration::from_millis(50);
const RECHECK_MIN: Duration = Duration::from_millis(2);

impl Path {
    fn of(fd: RawFd) -> Path {
        // SAFETY: tcp_info is plain integers; the kernel fills at most `len` bytes.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: a valid fd, and a buffer of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        let needed = std::mem::offset_of!(libc::tcp_info, tcpi_delivery_rate) + 8;
        if rc != 0 || (len as usize) < needed {
            return Path::default(); // an old kernel or an emulator: no estimate
        }
        Path {
            rate: info.tcpi_delivery_rate,
            min_rtt: Duration::from_micros(u64::from(info.tcpi_min_rtt)),
        }
    }

    /// Bytes the path holds when full but not queueing.
    fn bdp(&self) -> usize {
        (self.rate as u128 * self.min_rtt.as_micros() / 1_000_000) as usize
    }

    fn time_to_deliver(&self, bytes: usize) -> Duration {
        if self.rate == 0 {
            return RECHECK_MAX;
        }
        Duration::from_micros((bytes as u128 * 1_000_000 / self.rate as u128) as u64)
            .clamp(RECHECK_MIN, RECHECK_MAX)
    }
}

/// What one viewer has waiting, as `/stats.json` reports it: the message being
/// written, counted whole until the kernel has taken its last byte (kindercam
/// holds it until then), plus what the kernel still holds unsent of earlier
/// messages. Only the last part needs a system call, made when the stats are
/// read, never per frame.
#[derive(Debug)]
pub struct Outgoing {
    /// Size of the message being written; 0 between messages.
    message: AtomicUsize,
    /// Its bytes the kernel has not taken yet.
    unwritten: AtomicUsize,
    /// The socket to ask about unsent bytes: set while it is open and cleared
    /// before it closes, so nobody asks about a number the kernel has reused.
    fd: AtomicI32,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            message: AtomicUsize::new(0),
            unwritten: AtomicUsize::new(0),
            fd: AtomicI32::new(-1),
        }
    }
}

impl Outgoing {
    pub fn begin(&self, len: usize) {
        self.message.store(len, Ordering::Relaxed);
        self.unwritten.store(len, Ordering::Relaxed);
    }

    /// `left` bytes of the message are still to be handed to the kernel.
    pub fn written(&self, left: usize) {
        self.unwritten.store(left, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.message.store(0, Ordering::Relaxed);
        self.unwritten.store(0, Ordering::Relaxed);
    }

    pub fn set_socket(&self, fd: RawFd) {
        self.fd.store(fd, Ordering::Release);
    }

    pub fn clear_socket(&self) {
        self.fd.store(-1, Ordering::Release);
    }

    /// Bytes waiting for this viewer. The kernel's unsent bytes beyond the part of
    /// the current message it has taken are earlier messages' (the kernel sends in
    /// order); none of it is counted twice.
    pub fn pending(&self) -> usize {
        let message = self.message.load(Ordering::Relaxed);
        let taken = message.saturating_sub(self.unwritten.load(Ordering::Relaxed));
        let kernel = match self.fd.load(Ordering::Acquire) {
            fd if fd >= 0 => unsent(fd).unwrap_or(0),
            _ => 0,
        };
        message + kernel.saturating_sub(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::{Read, Write};

    /// A connected pair of non-blocking std sockets: (server side, client side).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    /// Writes until the kernel refuses; returns the bytes it took.
    fn fill(server: &mut std::net::TcpStream) -> usize {
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        loop {
            match server.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return written,
                Err(e) => panic!("write failed: {e}"),
            }
            assert!(
                written < 64 << 20,
                "the kernel took {written} bytes without refusing"
            );
        }
    }

    #[test]
    fn a_socket_that_keeps_up_is_asked_about_only_now_and_then() {
        let mut trust = Trust::default();
        for _ in 0..TRUST_AFTER {
            assert!(trust.must_ask());
            trust.asked(Room::Idle);
        }
        let unasked = (0..100).take_while(|_| !trust.must_ask()).count() as u32;
        assert_eq!(
            unasked,
            RECHECK_EVERY - 1,
            "then one frame in {RECHECK_EVERY} asks"
        );
        trust.asked(Room::Idle);
        assert!(!trust.must_ask(), "still trusted");
        trust.wrote(2);
        assert!(
            trust.must_ask(),
            "a frame that needed two writes ends the trust"
        );
        trust.asked(Room::Now);
        assert!(trust.must_ask(), "busy, not idle: no trust");
    }

    #[test]
    fn a_bounded_socket_stops_taking_bytes_near_the_mark() {
        let (mut server, _client) = pair();
        bound(&server).unwrap();
        // The peer reads nothing: past its receive window, everything stays unsent.
        let written = fill(&mut server);
        match int_ioctl(server.as_raw_fd(), libc::SIOCOUTQNSD as _) {
            // The kernel checks the mark before each new segment, so it may take one
            // segment (up to 64 KiB, loopback's) beyond it; without the mark it would
            // take megabytes.
            Some(unsent) => assert!(
                (NOTSENT_LOWAT as usize..=NOTSENT_LOWAT as usize + 64 * 1024).contains(&unsent),
                "{unsent} bytes unsent after {written} written"
            ),
            // qemu-user answers no SIOCOUTQNSD, so only the total can be judged: the
            // mark plus the peer's receive window, not the megabytes an unmarked
            // socket takes.
            None => assert!(
                written < 1024 * 1024,
                "the kernel took {written} bytes despite the mark"
            ),
        }
        assert_eq!(
            writable_now(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "not writable while that much is unsent"
        );
    }

    #[tokio::test]
    async fn drained_once_the_peer_reads() {
        let (mut server, mut client) = pair();
        bound(&server).unwrap();
        fill(&mut server);
        let server = TcpStream::from_std(server).unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while client.read(&mut buf).unwrap_or(0) > 0 {}
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| poll_drained(&server, cx)),
        )
        .await
        .expect("drained while the peer reads")
        .unwrap();
        // Only where the kernel counts unsent bytes alone: the fallback
        // (qemu-user) adds the bytes in flight.
        if let Some(left) = int_ioctl(server.as_raw_fd(), libc::SIOCOUTQNSD as _) {
            assert!(
                left < NOTSENT_LOWAT as usize / 2,
                "{left} bytes still unsent"
            );
        }
        drop(server);
        reader.join().unwrap();
    }
}
