//! One viewer's WebSocket: where a viewer joins its stream's fan-out.
//!
//! Frames do not leave from here. After the handshake, the viewer's socket is
//! split: the writing half takes a seat in the stream's fan-out
//! (`crate::fanout`), which writes every viewer's frames in one loop, and this
//! task keeps the reading half, sleeping until the client says something (a
//! ping to answer, a pong, a close) and handing that to the fan-out. A viewer of
//! a room whose source has not started yet is told `waiting` and waits here,
//! holding no hub slot, until the stream appears.
//!
//! A family viewer also follows the stream's gate (closed or paused: the gate's
//! notice and no frames); staff who asked (`?gate=1`) are told of it. The
//! fan-out's seat keeps those rules (`fanout::seat`).

use std::io;
use std::sync::Arc;

use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::fanout::out::{self, Body, Out, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::fanout::{self, Control, Framing, Wants};
use crate::hub::{status_message, Audience, Hub, Stream, StreamStatus};
use crate::sendq;
use crate::shutdown::Shutdown;
use crate::viewing_log::Presence;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::split::{self, HasTcp};
use crate::ws::{CLOSE_LIMIT, SEND_STALL_LIMIT};

/// Viewers have nothing to say beyond control frames; anything longer is abuse.
const MAX_INCOMING_PAYLOAD: u64 = 4096;

/// What a viewer asked for in its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Bare JPEGs (`?format=binary`) instead of data URLs.
    pub binary: bool,
    /// Each frame preceded by its capture time (`?meta=1`), in the same write.
    pub meta: bool,
    /// Staff told the gate's state (`?gate=1`): at once, then on every change.
    pub gate: bool,
    /// Frames at half the width and height (`?size=small`).
    pub small: bool,
}

impl Format {
    fn wants(self) -> Wants {
        Wants {
            framing: if self.binary {
                Framing::WsBinary
            } else {
                Framing::WsText
            },
            meta: self.meta,
            gate: self.gate,
            small: self.small,
        }
    }
}

/// What a viewer's socket shows: a stream that exists, or a room the viewer may
/// watch whose source has not started yet (the viewer is told `waiting` and
/// attaches when the source creates the stream; meanwhile it holds no hub slot).
pub enum Feed {
    Ready(Arc<Stream>),
    Awaited { hub: Arc<Hub>, name: String },
}

/// What must live as long as a viewer's socket: its places under the
/// connection caps (the listener's, the login's, the family's devices).
pub type Held = Box<dyn std::any::Any + Send>;

/// The viewer's task, to be spawned: it sizes the task for as long as the viewer
/// stays (hours), so the preparing is done here, before it, and the future is
/// only the viewer's own loop (its plain-TCP or its TLS form).
#[allow(clippy::too_many_arguments)]
pub fn serve<S>(
    socket: S,
    feed: Feed,
    format: Format,
    audience: Audience,
    presence: Presence,
    shutdown: Shutdown,
    held: Held,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + HasTcp + Unpin + Send + 'static,
{
    if let Err(e) = sendq::bound(socket.tcp()) {
        // Frames still flow, only without the bound: worth a note, not a refusal.
        tracing::warn!(error = %e, "cannot bound a video socket's unsent bytes");
    }
    let viewer = Viewer {
        feed,
        format,
        audience,
        presence,
        shutdown,
        _held: held,
    };
    match socket.into_plain() {
        // Plain TCP: halves that need no lock, so each frame is one `writev`.
        Ok((read_ahead, tcp)) => {
            let (reader, writer) = tcp.into_split();
            let reader = std::io::Cursor::new(read_ahead).chain(reader);
            Either::Left(viewer.run(reader, writer))
        }
        // TLS: reading and writing share the TLS state.
        Err(socket) => {
            let (reader, writer) = split::split(socket);
            Either::Right(viewer.run(reader, writer))
        }
    }
}

/// One viewer's connection, before it is split.
struct Viewer {
    feed: Feed,
    format: Format,
    audience: Audience,
    presence: Presence,
    shutdown: Shutdown,
    _held: Held,
}

impl Viewer {
    async fn run<R, W>(self, reader: R, mut writer: W)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: fanout::Outlet + 'static,
    {
        let Viewer {
            feed,
            format,
            audience,
            presence,
            mut shutdown,
            _held,
        } = self;
        // The reading half is read here, in the viewer's own task: one
        // message at a time, each read a future that owns the reader and hands it
        // back, so it can wait beside the shutdown and the fan-out's goodbye
        // without a second task or a channel per viewer (about 1.5 KB each, 3 MB
        // at 2000 viewers).
        let mut next = read_owned(reader);
        // The steps before the loop are boxed: this future lives as long as the
        // viewer, and inline they would size it for its whole life (about 0.8 KB
        // more per viewer, 1.6 MB at 2000).
        let (stream, told) = match feed {
            Feed::Ready(stream) => (Some(stream), None),
            Feed::Awaited { hub, name } => {
                let stream = Box::pin(await_stream(
                    &hub,
                    &name,
                    &mut writer,
                    &mut next,
                    &mut shutdown,
                ))
                .await;
                (stream, Some(StreamStatus::Waiting))
            }
        };
        let Some(stream) = stream else {
            return;
        };
        let joined = Box::pin(fanout::join(
            &stream,
            Box::new(writer),
            format.wants(),
            audience,
            presence,
            told,
            &shutdown,
        ))
        .await;
        let Some((ticket, mut gone)) = joined else {
            return;
        };
        loop {
            tokio::select! {
                biased;
                _ = &mut gone => return,
                _ = shutdown.wait() => {
                    let bye = shutdown.goodbye();
                    ticket.end(bye.code, bye.reason).await;
                    break;
                }
                (reader, heard) = &mut next => {
                    match heard {
                        Ok(Incoming::Ping(payload)) => ticket.control(Control::Pong(payload)).await,
                        Ok(Incoming::Ignored) => ticket.heard().await,
                        Ok(Incoming::Close(code) | Incoming::Violation(code)) => {
                            ticket.control(Control::Close(code, "")).await;
                            break;
                        }
                        Err(_) => {
                            ticket.left().await;
                            break;
                        }
                    }
                    next = read_owned(reader);
                }
            }
        }
        // Until the fan-out has let go (a close frame written, or given up on).
        let _ = tokio::time::timeout(2 * CLOSE_LIMIT, gone).await;
    }
}

/// The client's next frame, with the reader handed back for the one after.
type NextFrame<R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (R, io::Result<Incoming>)> + Send>>;

fn read_owned<R: AsyncRead + Unpin + Send + 'static>(mut r: R) -> NextFrame<R> {
    Box::pin(async move {
        let heard = read_frame(&mut r).await;
        (r, heard)
    })
}

/// Waits for stream `name` to be created, keeping the socket alive meanwhile;
/// `None` when the viewer or the daemon leaves first.
async fn await_stream<R, W>(
    hub: &Hub,
    name: &str,
    writer: &mut W,
    next: &mut NextFrame<R>,
    shutdown: &mut Shutdown,
) -> Option<Arc<Stream>>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let text = status_message(&StreamStatus::Waiting);
    send(writer, OP_TEXT, Body::Text(text)).await.ok()?;
    let mut keepalive = Keepalive::relaxed();
    let appeared = hub.appeared(name);
    tokio::pin!(appeared);
    loop {
        let sent = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                let bye = shutdown.goodbye();
                let _ = tokio::time::timeout(CLOSE_LIMIT, write_close(writer, bye.code, bye.reason)).await;
                return None;
            }
            beat = keepalive.tick() => match beat {
                Beat::Ping => send(writer, OP_PING, Body::Static(b"")).await,
                Beat::Dead => return None,
            },
            (reader, heard) = &mut *next => {
                keepalive.heard();
                *next = read_owned(reader);
                match heard {
                    Ok(Incoming::Ignored) => Ok(()),
                    Ok(Incoming::Ping(payload)) => send(writer, OP_PONG, Body::Owned(payload)).await,
                    Ok(Incoming::Close(code) | Incoming::Violation(code)) => {
                        let _ = write_close(writer, code, "").await;
                        return None;
                    }
                    Err(_) => return None, // the client went away
                }
            },
            stream = &mut appeared => return Some(stream),
        };
        sent.ok()?;
    }
}

/// Writes one message within the stall limit: a peer that vanished with a full
/// buffer is given up on.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, opcode: u8, body: Body) -> io::Result<()> {
    let mut out = Out::new(false);
    out.ws(opcode, body);
    match tokio::time::timeout(
        SEND_STALL_LIMIT,
        std::future::poll_fn(|cx| out.poll_write(w, cx, None, true, None, None)),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

async fn write_close<W: AsyncWrite + Unpin>(w: &mut W, code: u16, reason: &str) -> io::Result<()> {
    send(w, OP_CLOSE, Body::Owned(out::close_payload(code, reason))).await
}

enum Incoming {
    Ping(Vec<u8>),
    Close(u16),
    Ignored,
    /// The client broke the protocol; close with this code.
    Violation(u16),
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Incoming> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await?;
    let opcode = h[0] & 0x0F;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7F {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if !masked {
        return Ok(Incoming::Violation(1002)); // clients must mask (RFC 6455 5.1)
    }
    if len > MAX_INCOMING_PAYLOAD {
        return Ok(Incoming::Violation(1009));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(match opcode {
        OP_CLOSE => {
            let code = if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                1000
            };
            // Echo well-formed codes; answer reserved ones with a plain normal close.
            Incoming::Close(if (1000..5000).contains(&code) {
                code
            } else {
                1000
            })
        }
        OP_PING => Incoming::Ping(payload),
        OP_PONG | 0x0 | OP_TEXT | OP_BINARY => Incoming::Ignored,
        _ => Incoming::Violation(1002),
    })
}

/// Turns a viewer away after the handshake, where a browser can read why: a
/// `{"type":"status","state":"refused",...}` message with the reason, then a close
/// frame with `code` and a short reason. Bounded by the close limit.
pub async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: &serde_json::Value,
    code: u16,
    reason: &str,
) {
    let text = status.to_string();
    let goodbye = async {
        send(w, OP_TEXT, Body::Owned(text.into_bytes())).await?;
        write_close(w, code, reason).await
    };
    let _ = tokio::time::timeout(CLOSE_LIMIT, goodbye).await;
}
