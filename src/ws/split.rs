//! Splits a video connection into a reading and a writing half, as
//! `tokio::io::split` does, except that the writing half can still reach the TCP
//! socket underneath: before choosing a frame, the video writer waits until the
//! socket has room for it (`sendq`), which tokio's halves cannot ask.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::sendq;
use crate::sync::Locked;

/// A connection with a TCP socket at the bottom (plain or under TLS).
pub trait HasTcp {
    fn tcp(&self) -> &TcpStream;

    /// The plain TCP socket and the bytes already read from it, for a
    /// connection without TLS (whose halves then need no lock); the
    /// connection itself otherwise.
    fn into_plain(self) -> Result<(Vec<u8>, TcpStream), Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

pub fn split<S: HasTcp>(socket: S) -> (ReadHalf<S>, WriteHalf<S>) {
    let fd = socket.tcp().as_raw_fd();
    let shared = Arc::new(Mutex::new(socket));
    (ReadHalf(shared.clone()), WriteHalf { shared, fd })
}

pub struct ReadHalf<S>(Arc<Mutex<S>>);

pub struct WriteHalf<S> {
    shared: Arc<Mutex<S>>,
    /// The TCP socket's fd, open as long as this half is.
    fd: RawFd,
}

impl<S: HasTcp> WriteHalf<S> {
    /// Ready once the kernel has drained the socket (`sendq::poll_drained`).
    pub fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        sendq::poll_drained(self.shared.locked().tcp(), cx)
    }

    /// The TCP socket's fd, open as long as this half is.
    pub fn tcp_fd(&self) -> RawFd {
        self.fd
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.locked()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.shared.locked()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.shared.locked()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.shared.locked().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.shared.locked()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.shared.locked()).poll_shutdown(cx)
    }
}
