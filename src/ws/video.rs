//! Sends a stream's frames to one viewer: where a frame leaves the server.
//!
//! This is the hot path, so it writes WebSocket frames itself (RFC 6455 server
//! frames are unmasked: a short header, then the payload) straight from the
//! frame's shared bytes. tungstenite would copy every message into a per-connection
//! write buffer; here 500 viewers of a frame share one allocation and nobody's
//! socket holds a private copy. Only the newest frame is ever sent: while a send
//! is blocked on a slow socket, newer frames replace each other in the hub and the
//! viewer skips to the latest once its socket drains.

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::hub::{status_message, Hub, Stream, StreamStatus};
use crate::shutdown::Shutdown;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::{CLOSE_LIMIT, SEND_STALL_LIMIT};

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Viewers have nothing to say beyond control frames; anything longer is abuse.
const MAX_INCOMING_PAYLOAD: u64 = 4096;

/// What the reading half asks the writing half to send.
enum Control {
    Pong(Vec<u8>),
    Close(u16),
    /// The viewer sent something (a pong, most likely): it is still there.
    Heard,
}

/// What a viewer's socket shows: a stream that exists, or a room the viewer may
/// watch whose source has not started yet (the viewer is told `waiting` and
/// attaches when the source creates the stream; meanwhile it holds no hub slot).
pub enum Feed {
    Ready(Arc<Stream>),
    Awaited { hub: Arc<Hub>, name: String },
}

pub async fn serve<S>(socket: S, feed: Feed, binary: bool, mut shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(socket);
    let (control_tx, mut control) = mpsc::channel(4);
    let reader = tokio::spawn(read_client(reader, control_tx));
    let mut link = Link {
        keepalive: Keepalive::relaxed(),
        told: None,
    };
    let stream = match feed {
        Feed::Ready(stream) => Some(stream),
        Feed::Awaited { hub, name } => {
            let waiting = StreamStatus::Waiting;
            let text = status_message(&waiting);
            link.told = Some(waiting);
            if send(&mut writer, OP_TEXT, text.as_ref()).await {
                link.await_stream(&hub, &name, &mut writer, &mut control, &mut shutdown)
                    .await
            } else {
                None
            }
        }
    };
    if let Some(stream) = stream {
        link.watch(stream, binary, &mut writer, &mut control, &mut shutdown)
            .await;
    }
    reader.abort();
}

/// One viewer's side of the socket: keepalive, and what it was last told.
struct Link {
    keepalive: Keepalive,
    told: Option<StreamStatus>,
}

/// Whether the loop goes on after a keepalive beat, a control request or shutdown.
enum Next {
    Continue,
    Stop,
}

impl Link {
    async fn beat<W: AsyncWrite + Unpin>(&mut self, beat: Beat, writer: &mut W) -> Next {
        match beat {
            Beat::Ping if send(writer, OP_PING, &[]).await => Next::Continue,
            _ => Next::Stop,
        }
    }

    async fn control<W: AsyncWrite + Unpin>(
        &mut self,
        request: Option<Control>,
        writer: &mut W,
    ) -> Next {
        match request {
            Some(Control::Heard) => {
                self.keepalive.heard();
                Next::Continue
            }
            Some(Control::Pong(payload)) => {
                self.keepalive.heard();
                if send(writer, OP_PONG, &payload).await {
                    Next::Continue
                } else {
                    Next::Stop
                }
            }
            Some(Control::Close(code)) => {
                let _ = write_close(writer, code, "").await;
                Next::Stop
            }
            None => Next::Stop, // the client went away
        }
    }

    /// Waits for stream `name` to be created; `None` when the viewer or the daemon
    /// leaves first.
    async fn await_stream<W: AsyncWrite + Unpin>(
        &mut self,
        hub: &Hub,
        name: &str,
        writer: &mut W,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &mut Shutdown,
    ) -> Option<Arc<Stream>> {
        let appeared = hub.appeared(name);
        tokio::pin!(appeared);
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    let bye = shutdown.goodbye();
                    let _ = tokio::time::timeout(CLOSE_LIMIT, write_close(writer, bye.code, bye.reason)).await;
                    return None;
                }
                beat = self.keepalive.tick() => self.beat(beat, writer).await,
                request = control.recv() => self.control(request, writer).await,
                stream = &mut appeared => return Some(stream),
            };
            if let Next::Stop = next {
                return None;
            }
        }
    }

    async fn watch<W: AsyncWrite + Unpin>(
        &mut self,
        stream: Arc<Stream>,
        binary: bool,
        writer: &mut W,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &mut Shutdown,
    ) {
        let viewer = stream.watch();
        let mut frames = stream.subscribe();
        frames.mark_changed(); // a joining viewer gets the latest frame at once
        let mut last_seq = 0u64;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    let bye = shutdown.goodbye();
                    let _ = tokio::time::timeout(CLOSE_LIMIT, write_close(writer, bye.code, bye.reason)).await;
                    break;
                }
                beat = self.keepalive.tick() => {
                    if let Next::Stop = self.beat(beat, writer).await { break; }
                }
                request = control.recv() => {
                    if let Next::Stop = self.control(request, writer).await { break; }
                }
                changed = frames.changed() => {
                    if changed.is_err() { break; }
                    let snapshot = frames.borrow_and_update().clone();
                    if should_tell(&snapshot.status, &mut self.told)
                        && !send(writer, OP_TEXT, snapshot.status_message.as_ref()).await
                    {
                        break;
                    }
                    let Some(frame) = snapshot.frame.filter(|_| snapshot.seq != last_seq) else { continue };
                    if last_seq != 0 {
                        viewer.stats.frames_skipped.fetch_add(snapshot.seq - last_seq - 1, Ordering::Relaxed);
                    }
                    last_seq = snapshot.seq;
                    let (opcode, payload): (u8, &[u8]) = if binary {
                        (OP_BINARY, &frame.jpeg)
                    } else {
                        (OP_TEXT, frame.data_url.as_ref())
                    };
                    viewer.stats.pending_bytes.store(payload.len(), Ordering::Relaxed);
                    let sent = tokio::select! {
                        sent = send(writer, opcode, payload) => sent,
                        // Mid-frame there is no way to say goodbye politely; just drop the socket.
                        _ = shutdown.wait() => false,
                    };
                    viewer.stats.pending_bytes.store(0, Ordering::Relaxed);
                    if !sent { break; }
                    viewer.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
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

/// Writes one message within the stall limit: a peer that vanished with a full
/// buffer is given up on, whatever the message.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, opcode: u8, payload: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(SEND_STALL_LIMIT, write_message(w, opcode, payload)).await,
        Ok(Ok(()))
    )
}

/// Writes one unfragmented server frame: header and payload in one vectored write
/// where the socket takes it, without copying the payload.
async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let header_len = match payload.len() {
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
    };
    let mut head = &header[..header_len];
    let mut body = payload;
    while !head.is_empty() {
        let n = w
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < head.len() {
            head = &head[n..];
        } else {
            body = &body[n - head.len()..];
            head = &[];
        }
    }
    w.write_all(body).await?;
    w.flush().await
}

async fn write_close<W: AsyncWrite + Unpin>(w: &mut W, code: u16, reason: &str) -> io::Result<()> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    write_message(w, OP_CLOSE, &payload).await
}

/// Reads the viewer's frames: answers pings, honours close, ignores data, and ends
/// (dropping `control`) on anything malformed or when the socket closes.
async fn read_client<R: AsyncRead + Unpin>(mut r: R, control: mpsc::Sender<Control>) {
    loop {
        let Ok(frame) = read_frame(&mut r).await else {
            return;
        };
        let reply = match frame {
            Incoming::Ping(payload) => Control::Pong(payload),
            Incoming::Close(code) => Control::Close(code),
            Incoming::Ignored => Control::Heard,
            Incoming::Violation(code) => Control::Close(code),
        };
        let closing = matches!(reply, Control::Close(_));
        if control.send(reply).await.is_err() || closing {
            return;
        }
    }
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
        write_message(w, OP_TEXT, text.as_bytes()).await?;
        write_close(w, code, reason).await
    };
    let _ = tokio::time::timeout(CLOSE_LIMIT, goodbye).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_use_the_shortest_length_encoding() {
        for (len, header_len) in [(5usize, 2usize), (126, 4), (70_000, 10)] {
            let mut out = Vec::new();
            write_message(&mut out, OP_TEXT, &vec![b'a'; len])
                .await
                .unwrap();
            assert_eq!(out.len(), len + header_len, "payload of {len}");
            assert_eq!(out[0], 0x81);
        }
    }

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
