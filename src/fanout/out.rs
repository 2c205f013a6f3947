//! One message on its way to one viewer: the bytes a seat is writing, and the
//! framings that make them.
//!
//! A message is a short header kept inline, then payloads that are handles on
//! the frame's shared bytes (or a status text the hub built once): nothing here
//! allocates or copies per viewer and frame. It is written with vectored writes
//! straight from those handles, resumed where the kernel stopped taking bytes, and
//! flushed (TLS hands its buffer to the kernel there; plain TCP has nothing to
//! flush).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::splice::{Spliceable, Splicer};
use crate::frame::Frame;
use crate::sendq::Outgoing;

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Header bytes one message may carry inline: two WebSocket headers (a frame
/// and its meta text), or one MJPEG part's headers.
const HEAD_MAX: usize = 160;
const PIECES_MAX: usize = 5;

/// A payload handle: shared bytes, never a per-viewer copy (pongs and closes, a
/// few bytes each, are the only owned ones).
#[derive(Clone)]
pub enum Body {
    Jpeg(Arc<Frame>),
    DataUrl(Arc<Frame>),
    /// The frame's small variant (the seat checked it has one).
    SmallJpeg(Arc<Frame>),
    SmallDataUrl(Arc<Frame>),
    Meta(Arc<Frame>),
    Text(Utf8Bytes),
    Owned(Vec<u8>),
    Static(&'static [u8]),
    /// A picture that is not a frame (a paused room's notice).
    Picture(bytes::Bytes),
}

impl Body {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Body::Jpeg(f) => &f.jpeg,
            Body::DataUrl(f) => f.data_url.as_bytes(),
            Body::SmallJpeg(f) => f.small().map_or(&f.jpeg[..], |s| &s.jpeg[..]),
            Body::SmallDataUrl(f) => f
                .small()
                .map_or(f.data_url.as_bytes(), |s| s.data_url.as_bytes()),
            Body::Meta(f) => f.meta().as_bytes(),
            Body::Text(t) => t.as_bytes(),
            Body::Owned(v) => v,
            Body::Static(s) => s,
            Body::Picture(p) => p,
        }
    }
}

#[derive(Clone)]
enum Piece {
    /// `head[from..to]`
    Head(u8, u8),
    Body(Body),
}

/// The bytes of one message and how far writing them has got.
pub struct Out {
    head: [u8; HEAD_MAX],
    head_len: usize,
    pieces: [Option<Piece>; PIECES_MAX],
    count: usize,
    total: usize,
    done: usize,
    /// A frame: counted in the viewer's stats and followed in `/stats.json`.
    pub is_frame: bool,
    /// Write calls so far (the send queue's trust in a socket ends when a frame
    /// needs more than one).
    pub writes: u32,
    /// A frame `/stats.json` follows (it waited for the socket).
    pub shown: bool,
    /// A frame message every viewer of its form gets alike: it may start by
    /// splice from the fan-out's pipe (`splice`).
    pub spliceable: Option<Spliceable>,
    /// Its first bytes went by splice.
    pub spliced: bool,
}

impl Out {
    pub fn new(is_frame: bool) -> Out {
        Out {
            head: [0; HEAD_MAX],
            head_len: 0,
            pieces: Default::default(),
            count: 0,
            total: 0,
            done: 0,
            is_frame,
            writes: 0,
            shown: false,
            spliceable: None,
            spliced: false,
        }
    }

    /// Appends header bytes; false (and nothing appended) if they do not fit.
    pub fn head(&mut self, bytes: &[u8]) -> bool {
        let from = self.head_len;
        let to = from + bytes.len();
        if to > HEAD_MAX || self.count == PIECES_MAX {
            return false;
        }
        self.head[from..to].copy_from_slice(bytes);
        self.head_len = to;
        self.push(Piece::Head(from as u8, to as u8), bytes.len());
        true
    }

    pub fn body(&mut self, body: Body) {
        let len = body.bytes().len();
        self.push(Piece::Body(body), len);
    }

    fn push(&mut self, piece: Piece, len: usize) {
        assert!(
            self.count < PIECES_MAX,
            "a message has at most {PIECES_MAX} pieces"
        );
        self.pieces[self.count] = Some(piece);
        self.count += 1;
        self.total += len;
    }

    /// One WebSocket server message (RFC 6455: FIN, unmasked, the shortest
    /// length encoding).
    pub fn ws(&mut self, opcode: u8, body: Body) {
        let mut header = [0u8; 10];
        let n = ws_header(&mut header, opcode, body.bytes().len());
        let fits = self.head(&header[..n]);
        debug_assert!(fits, "two WebSocket headers always fit");
        self.body(body);
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not yet handed to the socket.
    pub fn left(&self) -> usize {
        self.total - self.done
    }

    /// Writes what is left, then flushes if `flush` (a writer that buffers:
    /// TLS). `outgoing` (frames only) follows the bytes not yet written, for
    /// `/stats.json`.
    ///
    /// With `direct` (a plain socket's fd) each write is a `writev` on it first;
    /// only when the kernel refuses does the write go through `w`, which then
    /// clears the runtime's stale readiness and arms the waker. A socket that
    /// keeps up so costs one system call per message and nothing else.
    /// With `splicer` too, a spliceable message's first write goes by splice
    /// from its pipe where it has one (`splice`), and the rest by `writev`.
    pub fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
        outgoing: Option<&Outgoing>,
        flush: bool,
        direct: Option<std::os::fd::RawFd>,
        splicer: Option<&Splicer>,
    ) -> Poll<io::Result<()>> {
        let mut direct = direct;
        let mut splicer = splicer.zip(self.spliceable).filter(|_| self.done == 0);
        while self.done < self.total {
            let mut slices = [IoSlice::new(&[]); PIECES_MAX];
            let mut n = 0;
            let mut skip = self.done;
            for piece in self.pieces[..self.count].iter().flatten() {
                let bytes = match piece {
                    Piece::Head(from, to) => &self.head[*from as usize..*to as usize],
                    Piece::Body(body) => body.bytes(),
                };
                if skip >= bytes.len() {
                    skip -= bytes.len();
                    continue;
                }
                slices[n] = IoSlice::new(&bytes[skip..]);
                skip = 0;
                n += 1;
            }
            if let (Some((splicer, what)), Some(fd)) = (splicer.take(), direct) {
                match splicer.send(what, &slices[..n], self.total, fd) {
                    Some(0) => {}
                    Some(written) => {
                        self.spliced = true;
                        self.writes += 1;
                        self.done += written;
                        if let Some(o) = outgoing {
                            o.written(self.left());
                        }
                        continue;
                    }
                    None => {}
                }
            }
            let written = match direct.map(|fd| writev(fd, &slices[..n])) {
                Some(Ok(written)) => written,
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // From now on through the runtime, which learns the socket is full.
                    direct = None;
                    continue;
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices[..n]))?,
            };
            self.writes += 1;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.done += written;
            if let Some(o) = outgoing {
                o.written(self.left());
            }
        }
        if flush {
            Pin::new(&mut *w).poll_flush(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

/// One `writev` on a non-blocking socket. A peer that is gone answers EPIPE,
/// not a signal: Rust's runtime ignores SIGPIPE, as the runtime's own writes
/// rely on too.
pub(super) fn writev(fd: std::os::fd::RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and the slices
    // borrow buffers that outlive the call.
    let n = unsafe {
        libc::writev(
            fd,
            slices.as_ptr().cast::<libc::iovec>(),
            slices.len() as libc::c_int,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes a server frame's header (FIN set, unmasked, the shortest length
/// encoding) into `header`; returns its length.
pub fn ws_header(header: &mut [u8; 10], opcode: u8, len: usize) -> usize {
    header[0] = 0x80 | opcode;
    match len {
        n if n < 126 => {
            header[1] = n as u8;
            2
        }
        n if n <= u16::MAX as usize => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    }
}

/// A close frame's payload: the code, then a short reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    async fn write_all(out: &mut Out) -> Vec<u8> {
        let mut sink = Vec::new();
        poll_fn(|cx| out.poll_write(&mut sink, cx, None, true, None, None))
            .await
            .unwrap();
        sink
    }

    #[tokio::test]
    async fn frames_use_the_shortest_length_encoding() {
        for (len, header_len) in [(5usize, 2usize), (126, 4), (70_000, 10)] {
            let mut out = Out::new(false);
            out.ws(OP_TEXT, Body::Owned(vec![b'a'; len]));
            let bytes = write_all(&mut out).await;
            assert_eq!(bytes.len(), len + header_len, "payload of {len}");
            assert_eq!(bytes[0], 0x81);
        }
    }

    #[tokio::test]
    async fn a_frame_and_its_meta_go_out_back_to_back() {
        let frame = Arc::new(Frame::from_jpeg(vec![0xFFu8; 300], 2, 2).captured_at(1));
        let mut out = Out::new(true);
        out.ws(OP_TEXT, Body::Meta(frame.clone()));
        out.ws(OP_BINARY, Body::Jpeg(frame.clone()));
        let bytes = write_all(&mut out).await;
        let meta = frame.meta().as_bytes();
        let mut expected = vec![0x81, meta.len() as u8];
        expected.extend_from_slice(meta);
        expected.extend_from_slice(&[0x82, 126, 1, 44]);
        expected.extend_from_slice(&frame.jpeg);
        assert_eq!(bytes, expected);
    }

    /// A writer that takes at most `step` bytes per call, like a socket whose
    /// buffer is nearly full.
    struct Trickle {
        taken: Vec<u8>,
        step: usize,
        calls: u32,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.taken.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_message_resumes_where_the_kernel_stopped_taking_bytes() {
        let frame = Arc::new(Frame::from_jpeg(vec![7u8; 1000], 2, 2));
        let mut out = Out::new(true);
        out.head(b"--part\r\n");
        out.body(Body::Jpeg(frame.clone()));
        out.body(Body::Static(b"\r\n"));
        let outgoing = Outgoing::default();
        outgoing.begin(out.total());
        let mut w = Trickle {
            taken: Vec::new(),
            step: 333,
            calls: 0,
        };
        poll_fn(|cx| out.poll_write(&mut w, cx, Some(&outgoing), true, None, None))
            .await
            .unwrap();
        let mut expected = b"--part\r\n".to_vec();
        expected.extend_from_slice(&frame.jpeg);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(w.taken, expected, "every byte once, in order");
        assert_eq!(out.writes, w.calls);
        assert!(out.writes > 1);
        assert_eq!(out.left(), 0);
    }
}
