//! Frames without a copy per viewer: each message a frame makes is written once
//! into a pipe, and every viewer's socket takes it from there by reference.
//!
//! A `writev` of a 50 KB frame to 2000 viewers copies 100 MB a second into
//! socket buffers at 10 fps; that copy was 43 % of the server's CPU. Here the
//! fan-out writes a frame's message (the WebSocket or MJPEG headers and the
//! shared bytes, the same for every viewer of one form) once into a pipe of its
//! own, and for each viewer `tee`s it into a scratch pipe (page references, no
//! bytes copied) and `splice`s that into the socket, whose buffers then hold the
//! pipe's pages. The pages are the kernel's, written once and never again, so
//! nothing a later frame does can change bytes still on their way.
//!
//! Only a plain socket's first write of a frame message of [`SPLICE_MIN`] bytes
//! or more goes this way, and only from a form's second viewer on (one viewer
//! would pay the pipe for nothing). Whatever the socket does not take goes out
//! later with `writev` from the frame's own bytes, as before, and every failure
//! here (no pipe, a pipe too small, an error) simply leaves the message to
//! `writev`, which reports a socket's own errors. Measured in BENCHMARKS.md.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::Framing;
use crate::frame::Frame;

/// Messages smaller than this are written with `writev`: two calls (`tee`,
/// `splice`) where one would do cost more than the copy they save.
pub const SPLICE_MIN: usize = 16 * 1024;
/// The most a pipe of an unprivileged process may hold (`/proc/sys/fs/pipe-max-size`'s
/// default); larger messages go out with `writev`.
const PIPE_MAX: usize = 1 << 20;
const PAGE: usize = 4096;

/// Which message a frame makes for a viewer: framing, small variant, meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Form(u8);

const FORMS: usize = 12;

impl Form {
    pub fn new(framing: Framing, small: bool, meta: bool) -> Form {
        let framing = match framing {
            Framing::WsText => 0,
            Framing::WsBinary => 1,
            Framing::Mjpeg => 2,
        };
        Form(framing * 4 + u8::from(small) * 2 + u8::from(meta))
    }
}

/// A message's claim to go out by splice: its form and the frame it is of.
#[derive(Clone, Copy, Debug)]
pub struct Spliceable {
    pub form: Form,
    /// The frame's address: the message holds the frame, so it cannot be reused.
    pub frame: usize,
}

impl Spliceable {
    pub fn of(form: Form, frame: &Arc<Frame>) -> Spliceable {
        Spliceable {
            form,
            frame: Arc::as_ptr(frame) as usize,
        }
    }
}

/// A non-blocking pipe.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What it holds at most, in bytes.
    capacity: usize,
}

impl Pipe {
    /// The capacity a message of `bytes` needs: a page per 4 KiB and one
    /// more where it starts mid-page.
    fn needs(bytes: usize) -> usize {
        (bytes.div_ceil(PAGE) + 1) * PAGE
    }

    /// A pipe that holds at least `bytes` written as whole pages.
    fn holding(bytes: usize) -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fds just made, owned from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntl on our fd. A user over the pipe-page quota gets
        // smaller pipes than the usual 16 pages: ask.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut pipe = Pipe {
            read,
            write,
            capacity: size as usize,
        };
        let wanted = Pipe::needs(bytes);
        if wanted > pipe.capacity {
            // SAFETY: plain fcntl on our fd; it rounds up to a power of two pages.
            let got = unsafe {
                libc::fcntl(
                    pipe.write.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    wanted as libc::c_int,
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            pipe.capacity = got as usize;
        }
        Ok(pipe)
    }
}

enum Slot {
    Unasked,
    /// One viewer had this form: the next makes the pipe.
    AskedOnce,
    /// The message in a pipe, by its read end: nothing writes to it again.
    Ready {
        source: OwnedFd,
        len: usize,
    },
    /// No pipe for this message: `writev` it is.
    Failed,
}

struct Inner {
    /// The frame the slots are for (held, so its address stays its own).
    frame: Option<Arc<Frame>>,
    slots: [Slot; FORMS],
    /// Empty between calls; a message is teed in here, then spliced out.
    scratch: Option<Pipe>,
    /// Where the part of a message a socket did not take goes.
    null: Option<OwnedFd>,
}

/// A stream's frames in pipes, one per form of the current frame; owned by its
/// fan-out and used only from its task (a `RefCell` because turns borrow it
/// through the shared view).
pub struct Splicer {
    inner: RefCell<Inner>,
}

impl Default for Splicer {
    fn default() -> Splicer {
        Splicer {
            inner: RefCell::new(Inner {
                frame: None,
                slots: std::array::from_fn(|_| Slot::Unasked),
                scratch: None,
                null: None,
            }),
        }
    }
}

impl Splicer {
    /// The hub has a new frame: the last one's pipes go (sockets keep the
    /// pages they still need).
    pub fn new_frame(&self, frame: Option<&Arc<Frame>>) {
        let mut inner = self.inner.borrow_mut();
        let same = match (&inner.frame, frame) {
            (Some(old), Some(new)) => Arc::ptr_eq(old, new),
            (None, None) => true,
            _ => false,
        };
        if same {
            // A status change, not a new frame: its pipes stay good.
            return;
        }
        inner.frame = frame.cloned();
        inner.slots = std::array::from_fn(|_| Slot::Unasked);
    }

    /// Starts `message` (whose bytes `slices` gives, `total` in all) on the
    /// socket `fd` by splice: the bytes the socket took, or `None` where this
    /// message is for `writev` (then nothing was written).
    pub fn send(
        &self,
        what: Spliceable,
        slices: &[io::IoSlice<'_>],
        total: usize,
        fd: RawFd,
    ) -> Option<usize> {
        if total < SPLICE_MIN || total + PAGE > PIPE_MAX {
            return None;
        }
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if inner
            .frame
            .as_ref()
            .is_none_or(|f| Arc::as_ptr(f) as usize != what.frame)
        {
            return None;
        }
        let slot = &mut inner.slots[what.form.0 as usize];
        match slot {
            Slot::Unasked => {
                *slot = Slot::AskedOnce;
                return None;
            }
            Slot::AskedOnce => {
                let made = tools(&mut inner.scratch, &mut inner.null, total)
                    .and_then(|()| fill(slices, total));
                match made {
                    Ok(pipe) => {
                        *slot = Slot::Ready {
                            source: pipe.read,
                            len: total,
                        }
                    }
                    Err(e) => {
                        // Out of fds or pipe pages, most likely: this frame
                        // goes by writev, the next one tries again.
                        tracing::debug!(error = %e, "a frame goes out with writev: no pipe for it");
                        *slot = Slot::Failed;
                        return None;
                    }
                }
            }
            Slot::Ready { .. } => {}
            Slot::Failed => return None,
        }
        let Slot::Ready { source, len } = slot else {
            return None;
        };
        if *len != total {
            return None;
        }
        if let Err(e) = tools(&mut inner.scratch, &mut inner.null, total) {
            tracing::debug!(error = %e, "a frame goes out with writev: no scratch pipe");
            return None;
        }
        let scratch = inner.scratch.as_ref().expect("made by tools");
        let null = inner.null.as_ref().expect("opened by tools");
        let (taken, cleared) =
            splice_once(source.as_raw_fd(), scratch, null.as_raw_fd(), total, fd);
        if !cleared {
            // Bytes left in the scratch pipe would go out with the next frame:
            // never. A new pipe next time.
            inner.scratch = None;
        }
        taken
    }
}

/// Makes sure of an empty scratch pipe that holds a `total`-byte message, and
/// of /dev/null.
fn tools(scratch: &mut Option<Pipe>, null: &mut Option<OwnedFd>, total: usize) -> io::Result<()> {
    if scratch
        .as_ref()
        .is_none_or(|s| s.capacity < Pipe::needs(total))
    {
        *scratch = None;
        *scratch = Some(Pipe::holding(total)?);
    }
    if null.is_none() {
        let file = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        *null = Some(file.into());
    }
    Ok(())
}

/// A pipe holding `slices` (`total` bytes): the pipe is empty and holds
/// `total`, so one write takes it all or something is wrong.
fn fill(slices: &[io::IoSlice<'_>], total: usize) -> io::Result<Pipe> {
    let pipe = Pipe::holding(total)?;
    match super::out::writev(pipe.write.as_raw_fd(), slices)? {
        n if n == total => Ok(pipe),
        n => Err(io::Error::other(format!(
            "a pipe took {n} of {total} bytes"
        ))),
    }
}

/// Tees `total` bytes of the pipe `source` (its read end) into the empty `scratch` and splices them to
/// `fd`. Returns the bytes the socket took (`None`: leave it to `writev`, which
/// also reports a socket's error) and whether `scratch` is empty again.
fn splice_once(
    source: RawFd,
    scratch: &Pipe,
    null: RawFd,
    total: usize,
    fd: RawFd,
) -> (Option<usize>, bool) {
    // SAFETY: plain syscalls on fds the pipes own and the caller's socket.
    let teed = unsafe {
        libc::tee(
            source,
            scratch.write.as_raw_fd(),
            total,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if teed <= 0 {
        return (None, true);
    }
    let teed = teed as usize;
    let taken = if teed == total {
        // SAFETY: as above.
        let n = unsafe {
            libc::splice(
                scratch.read.as_raw_fd(),
                std::ptr::null_mut(),
                fd,
                std::ptr::null_mut(),
                total,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                Some(0)
            } else {
                None
            }
        } else {
            Some(n as usize)
        }
    } else {
        None
    };
    let left = teed - taken.unwrap_or(0);
    (taken, left == 0 || discard(scratch, null, left))
}

/// Empties `left` bytes out of `pipe` into /dev/null (page references dropped,
/// nothing copied). Whether it all went.
fn discard(pipe: &Pipe, null: RawFd, mut left: usize) -> bool {
    while left > 0 {
        // SAFETY: plain syscall on fds we own.
        let n = unsafe {
            libc::splice(
                pipe.read.as_raw_fd(),
                std::ptr::null_mut(),
                null,
                std::ptr::null_mut(),
                left,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n <= 0 {
            return false;
        }
        left -= n as usize;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IoSlice, Read};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn message(n: usize) -> (Vec<u8>, Vec<u8>) {
        let head = b"\x82\x7f\0\0\0\0\0\0\0\0".to_vec();
        let body: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        (head, body)
    }

    #[test]
    fn the_second_viewer_of_a_form_gets_the_message_through_a_pipe() {
        let frame = Arc::new(Frame::from_jpeg(vec![0xFF; 10], 2, 2));
        let what = Spliceable::of(Form::new(Framing::WsBinary, false, false), &frame);
        let splicer = Splicer::default();
        splicer.new_frame(Some(&frame));
        let (head, body) = message(100_000);
        let slices = [IoSlice::new(&head), IoSlice::new(&body)];
        let total = head.len() + body.len();
        let (first, _keep1) = pair();
        assert_eq!(
            splicer.send(what, &slices, total, first.as_raw_fd()),
            None,
            "one viewer: writev"
        );
        for _ in 0..3 {
            let (w, r) = pair();
            let taken = splicer.send(what, &slices, total, w.as_raw_fd());
            let taken = taken.expect("the second viewer on is spliced");
            assert!(taken > 0, "the socket took some of it");
            let got = finish(w, r, &head, &body, taken);
            assert!(got[..head.len()] == head[..] && got[head.len()..] == body[..]);
        }
    }

    /// Writes what the socket `w` did not take of `head` + `body` (past
    /// `taken`), as the fan-out's writev does, and returns all `r` read.
    fn finish(w: TcpStream, mut r: TcpStream, head: &[u8], body: &[u8], taken: usize) -> Vec<u8> {
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        let all: Vec<u8> = head.iter().chain(body).copied().collect();
        w.set_nonblocking(false).unwrap();
        std::io::Write::write_all(&mut &w, &all[taken..]).unwrap();
        drop(w);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), all.len());
        got
    }

    #[test]
    fn a_socket_that_takes_part_leaves_the_rest_and_the_next_viewer_gets_it_whole() {
        let frame = Arc::new(Frame::from_jpeg(vec![0xFF; 10], 2, 2));
        let what = Spliceable::of(Form::new(Framing::WsText, false, false), &frame);
        let splicer = Splicer::default();
        splicer.new_frame(Some(&frame));
        let (head, body) = message(600_000);
        let slices = [IoSlice::new(&head), IoSlice::new(&body)];
        let total = head.len() + body.len();
        let (a, _ra) = pair();
        assert_eq!(splicer.send(what, &slices, total, a.as_raw_fd()), None);
        // A socket whose reader reads nothing takes less than 600 KB.
        let (w, r) = pair();
        // SAFETY: setting a small send buffer on our socket.
        unsafe {
            let size: libc::c_int = 4096;
            libc::setsockopt(
                w.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let taken = splicer.send(what, &slices, total, w.as_raw_fd()).unwrap();
        assert!(taken < total, "took {taken} of {total}");
        // The rest from the message's own bytes, as the fan-out does.
        let got = finish(w, r, &head, &body, taken);
        assert!(got[..head.len()] == head[..] && got[head.len()..] == body[..]);
        // The scratch pipe held nothing back for the next viewer.
        let (w2, r2) = pair();
        let taken = splicer.send(what, &slices, total, w2.as_raw_fd()).unwrap();
        let got = finish(w2, r2, &head, &body, taken);
        assert!(got[..head.len()] == head[..] && got[head.len()..] == body[..]);
    }

    #[test]
    fn another_frame_small_messages_and_dead_sockets_are_left_to_writev() {
        let frame = Arc::new(Frame::from_jpeg(vec![0xFF; 10], 2, 2));
        let older = Arc::new(Frame::from_jpeg(vec![0xFF; 10], 2, 2));
        let splicer = Splicer::default();
        splicer.new_frame(Some(&frame));
        let (head, body) = message(50_000);
        let slices = [IoSlice::new(&head), IoSlice::new(&body)];
        let total = head.len() + body.len();
        let (w, r) = pair();
        let stale = Spliceable::of(Form::new(Framing::WsText, false, false), &older);
        for _ in 0..2 {
            assert_eq!(splicer.send(stale, &slices, total, w.as_raw_fd()), None);
        }
        let what = Spliceable::of(Form::new(Framing::WsText, false, false), &frame);
        let small = [IoSlice::new(&head[..2]), IoSlice::new(&body[..100])];
        for _ in 0..2 {
            assert_eq!(splicer.send(what, &small, 102, w.as_raw_fd()), None);
        }
        // A socket whose peer is gone: writev is left to report it.
        drop(r);
        let send = || splicer.send(what, &slices, total, w.as_raw_fd());
        assert_eq!(send(), None, "the form's first viewer is copied");
        // The peer only closed its side: this goes out, and its kernel
        // answers with a reset.
        assert!(send().is_some(), "spliced into the half-closed socket");
        let left_to_writev = (0..100).any(|_| send().is_none());
        assert!(left_to_writev, "a reset socket is left to writev");
    }
}
