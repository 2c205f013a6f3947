//! Sends a stream's frames to one viewer: where a frame leaves the server.
//!
//! This is the hot path, so it writes WebSocket frames itself (RFC 6455 server
//! frames are unmasked: a short header, then the payload) straight from the
//! frame's shared bytes. tungstenite would copy every message into a per-connection
//! write buffer; here 500 viewers of a frame share one allocation and nobody's
//! socket holds a private copy.
//!
//! Only the newest frame is ever sent, and it is chosen as late as possible: when
//! the hub has news, the writer first waits until the socket has room for it
//! (`sendq`: at most one frame still on its way to this viewer, a few KiB of it
//! unsent), and only then takes the hub's newest frame. On a link slower than the
//! frames, the frames that arrive meanwhile replace each other in the hub; none
//! queue in the kernel or in the network, so what the viewer receives is as fresh
//! as the link allows. A viewer that keeps up gets every frame.
//!
//! A family viewer also follows the stream's gate: while the room is closed or
//! paused it is sent the gate's status (once per change, the hub's shared text)
//! and no frames, and when the gate opens it is told the stream's status and
//! gets the newest frame at once. Staff viewers keep their frames; those that
//! asked (`?gate=1`) are told the gate's state, so the page can show a pause.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::hub::{
    status_message, Audience, GateState, Hub, Snapshot, Stream, StreamStatus, Transport,
};
use crate::sendq::{self, Outgoing, Room, Trust};
use crate::shutdown::Shutdown;
use crate::viewing_log::Presence;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::split::{self, HasTcp};
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

/// What a viewer asked for in its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Bare JPEGs (`?format=binary`) instead of data URLs.
    pub binary: bool,
    /// Each frame preceded by its capture time (`?meta=1`), in the same write.
    pub meta: bool,
    /// Staff told the gate's state (`?gate=1`): at once, then on every change.
    pub gate: bool,
}

impl Format {
    /// How this viewer's frames travel, for the metrics' viewer counts.
    pub fn transport(&self) -> Transport {
        if self.binary {
            Transport::WsBinary
        } else {
            Transport::WsText
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

pub async fn serve<S>(
    socket: S,
    feed: Feed,
    format: Format,
    audience: Audience,
    presence: Presence,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + HasTcp + Unpin + Send + 'static,
{
    if let Err(e) = sendq::bound(socket.tcp()) {
        // Frames still flow, only without the bound: worth a note, not a refusal.
        tracing::warn!(error = %e, "cannot bound a video socket's unsent bytes");
    }
    let fd = socket.tcp().as_raw_fd();
    let (reader, mut writer) = split::split(socket);
    let (control_tx, mut control) = mpsc::channel(4);
    let reader = tokio::spawn(read_client(reader, control_tx));
    let mut link = Link {
        keepalive: Keepalive::relaxed(),
        told: None,
        presence,
    };
    let stream = match feed {
        Feed::Ready(stream) => Some(stream),
        Feed::Awaited { hub, name } => {
            let waiting = StreamStatus::Waiting;
            let text = status_message(&waiting);
            link.told = Some(waiting);
            if send(&mut writer, &[(OP_TEXT, text.as_bytes())], None)
                .await
                .is_some()
            {
                link.await_stream(&hub, &name, &mut writer, &mut control, &mut shutdown)
                    .await
            } else {
                None
            }
        }
    };
    if let Some(stream) = stream {
        link.watch(
            stream,
            fd,
            format,
            audience,
            &mut writer,
            &mut control,
            &mut shutdown,
        )
        .await;
    }
    reader.abort();
}

/// One viewer's side of the socket: keepalive, what it was last told, and its
/// row in the viewing log.
struct Link {
    keepalive: Keepalive,
    told: Option<StreamStatus>,
    presence: Presence,
}

/// Whether the loop goes on after a keepalive beat or a control request.
enum Next {
    Continue,
    Stop,
}

impl Link {
    async fn beat<W: AsyncWrite + Unpin>(&mut self, beat: Beat, writer: &mut W) -> Next {
        match beat {
            Beat::Ping if send(writer, &[(OP_PING, &[])], None).await.is_some() => Next::Continue,
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
                if send(writer, &[(OP_PONG, &payload)], None).await.is_some() {
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

    /// Sends the stream's frames until the viewer, the stream or the daemon goes.
    #[allow(clippy::too_many_arguments)]
    async fn watch<S>(
        &mut self,
        stream: Arc<Stream>,
        fd: std::os::fd::RawFd,
        format: Format,
        audience: Audience,
        writer: &mut split::WriteHalf<S>,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &mut Shutdown,
    ) where
        S: AsyncRead + AsyncWrite + HasTcp + Unpin,
    {
        let viewer = stream.watch(audience, format.transport());
        let mut frames = stream.subscribe();
        frames.mark_changed(); // a joining viewer gets the latest frame at once
                               // Families follow the gate; staff only when they asked to be told of it.
        let mut gate = (audience == Audience::Family || format.gate).then(|| {
            let mut gate = stream.subscribe_gate();
            gate.mark_changed(); // looked at before the first frame
            gate
        });
        // What this viewer was last told about the gate: `Some` while it is held.
        let mut held: Option<GateState> = None;
        // Dropped when this returns, before the socket's halves (the caller's): the
        // stats stop asking about this fd before it can close.
        let _probe = viewer.probe_socket(fd);
        let mut last_seq = 0u64;
        // Set while the hub has news this viewer has not been sent, until when the
        // socket must have drained: a peer that takes nothing for that long is gone.
        let mut due: Option<Instant> = None;
        let mut trust = Trust::default();
        loop {
            let frame_bytes = if due.is_some() {
                newest_bytes(&frames, format.binary)
            } else {
                0
            };
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    let bye = shutdown.goodbye();
                    let _ = tokio::time::timeout(CLOSE_LIMIT, write_close(writer, bye.code, bye.reason)).await;
                    break;
                }
                beat = self.keepalive.tick() => match self.beat(beat, writer).await {
                    Next::Continue => continue,
                    Next::Stop => break,
                },
                request = control.recv() => match self.control(request, writer).await {
                    Next::Continue => continue,
                    Next::Stop => break,
                },
                changed = gate_changed(&mut gate) => {
                    let Ok(state) = changed else { break };
                    if audience == Audience::Staff {
                        match send(writer, &[(OP_TEXT, state.staff_message.as_bytes())], None).await {
                            Some(_) => continue,
                            None => break,
                        }
                    }
                    match self.pass_gate(state, &mut held, &frames, writer).await {
                        Next::Continue => {
                            // Held is not watching: the viewing log says so.
                            self.presence.held(held.is_some());
                            // Open again: the newest frame goes out at once.
                            if held.is_none() { frames.mark_changed(); }
                            continue;
                        }
                        Next::Stop => break,
                    }
                }
                changed = frames.changed(), if due.is_none() && held.is_none() => {
                    if changed.is_err() { break; }
                    due = Some(Instant::now() + SEND_STALL_LIMIT);
                    // A link that keeps up has room at once: send in this same turn.
                    if trust.must_ask() {
                        let room = writer.room_now(newest_bytes(&frames, format.binary));
                        trust.asked(room);
                        if !matches!(room, Room::Idle | Room::Now) { continue; }
                    }
                }
                room = writer.room_for(frame_bytes, due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    if room.is_err() { break; }
                }
            }
            // The socket has room: whatever the hub has now is what this viewer gets.
            due = None;
            let gate_news = audience == Audience::Family
                && gate
                    .as_ref()
                    .is_some_and(|g| g.has_changed().unwrap_or(false));
            if held.is_some() || gate_news {
                // The gate shut (or moved) while this frame waited for room: the gate
                // branch decides first, so no frame slips past a pause.
                continue;
            }
            let snapshot = frames.borrow_and_update().clone();
            if should_tell(&snapshot.status, &mut self.told)
                && send(
                    writer,
                    &[(OP_TEXT, snapshot.status_message.as_bytes())],
                    None,
                )
                .await
                .is_none()
            {
                break;
            }
            let Some(frame) = snapshot.frame.filter(|_| snapshot.seq != last_seq) else {
                continue;
            };
            if audience == Audience::Family
                && !gate
                    .as_ref()
                    .is_none_or(|g| g.borrow().lets_family_see(snapshot.seq))
            {
                // Taken while the room was shut (for staff): wait for a newer one.
                last_seq = snapshot.seq;
                continue;
            }
            if last_seq != 0 {
                viewer
                    .stats
                    .frames_skipped
                    .fetch_add(snapshot.seq - last_seq - 1, Ordering::Relaxed);
            }
            last_seq = snapshot.seq;
            let picture: (u8, &[u8]) = if format.binary {
                (OP_BINARY, &frame.jpeg)
            } else {
                (OP_TEXT, frame.data_url.as_ref())
            };
            let with_meta;
            let messages: &[(u8, &[u8])] = if format.meta {
                with_meta = [(OP_TEXT, frame.meta().as_bytes()), picture];
                &with_meta
            } else {
                std::slice::from_ref(&picture)
            };
            let sent = tokio::select! {
                sent = send(writer, messages, Some(&viewer.stats.outgoing)) => sent,
                // Mid-frame there is no way to say goodbye politely; just drop the socket.
                _ = shutdown.wait() => None,
            };
            viewer.stats.outgoing.end();
            let Some(writes) = sent else { break };
            trust.wrote(writes);
            viewer
                .stats
                .frame_sent(messages.iter().map(|(_, m)| m.len()).sum());
        }
    }
}

impl Link {
    /// Acts on a new gate `state` for a family viewer: while shut, tells the
    /// viewer why (once per change; `held` keeps what it was told); when it opens
    /// again, tells the viewer the stream's status, so the page clears the notice.
    /// A viewer of an open gate that was never held is told nothing.
    async fn pass_gate<W: AsyncWrite + Unpin>(
        &mut self,
        state: GateState,
        held: &mut Option<GateState>,
        frames: &watch::Receiver<Snapshot>,
        writer: &mut W,
    ) -> Next {
        let text = match (&state.family_message, held.as_ref()) {
            (Some(_), Some(told)) if told.gate == state.gate => return Next::Continue,
            (Some(text), _) => {
                let text = text.clone();
                *held = Some(state);
                text
            }
            (None, None) => return Next::Continue,
            (None, Some(_)) => {
                *held = None;
                let snapshot = frames.borrow();
                self.told = Some(snapshot.status.clone());
                snapshot.status_message.clone()
            }
        };
        match send(writer, &[(OP_TEXT, text.as_bytes())], None).await {
            Some(_) => Next::Continue,
            None => Next::Stop,
        }
    }
}

/// The next gate change for a family viewer; never, for staff.
async fn gate_changed(
    gate: &mut Option<watch::Receiver<GateState>>,
) -> Result<GateState, watch::error::RecvError> {
    match gate {
        Some(rx) => {
            rx.changed().await?;
            Ok(rx.borrow_and_update().clone())
        }
        None => std::future::pending().await,
    }
}

/// The size of the message the hub's newest frame makes: what the socket needs room for.
fn newest_bytes(frames: &watch::Receiver<Snapshot>, binary: bool) -> usize {
    frames.borrow().frame.as_ref().map_or(0, |f| {
        if binary {
            f.jpeg.len()
        } else {
            f.data_url.len()
        }
    })
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

/// Writes messages within the stall limit: a peer that vanished with a full
/// buffer is given up on, whatever the message. `outgoing`, if given, follows
/// the bytes the kernel has not taken yet. Returns how many write calls it took;
/// `None` if the peer is gone.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    messages: &[(u8, &[u8])],
    outgoing: Option<&Outgoing>,
) -> Option<u32> {
    match tokio::time::timeout(SEND_STALL_LIMIT, write_messages(w, messages, outgoing)).await {
        Ok(Ok(writes)) => Some(writes),
        _ => None,
    }
}

/// Writes one unfragmented server frame; see [`write_messages`].
async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
    outgoing: Option<&Outgoing>,
) -> io::Result<()> {
    write_messages(w, &[(opcode, payload)], outgoing)
        .await
        .map(|_| ())
}

/// Writes one or two unfragmented server frames (a frame's meta text and the
/// frame): headers and payloads in one vectored write where the socket takes
/// them, without copying the payloads. `outgoing` follows the bytes not yet
/// written (under TLS, "written" means handed to rustls, whose buffer the closing
/// flush empties into the kernel).
async fn write_messages<W: AsyncWrite + Unpin>(
    w: &mut W,
    messages: &[(u8, &[u8])],
    outgoing: Option<&Outgoing>,
) -> io::Result<u32> {
    assert!(messages.len() <= 2, "one frame and its meta at most");
    let mut headers = [[0u8; 10]; 2];
    let mut header_lens = [0usize; 2];
    for (i, (opcode, payload)) in messages.iter().enumerate() {
        header_lens[i] = frame_header(&mut headers[i], *opcode, payload.len());
    }
    let mut slices = [IoSlice::new(&[]); 4];
    let mut left = 0;
    for (i, (_, payload)) in messages.iter().enumerate() {
        slices[2 * i] = IoSlice::new(&headers[i][..header_lens[i]]);
        slices[2 * i + 1] = IoSlice::new(payload);
        left += header_lens[i] + payload.len();
    }
    if let Some(o) = outgoing {
        o.begin(left);
    }
    let mut bufs = &mut slices[..2 * messages.len()];
    let mut writes = 0;
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        writes += 1;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
        left -= n;
        if let Some(o) = outgoing {
            o.written(left);
        }
    }
    w.flush().await?;
    Ok(writes)
}

/// Writes a server frame's header (FIN set, unmasked, the shortest length
/// encoding) into `header`; returns its length.
fn frame_header(header: &mut [u8; 10], opcode: u8, len: usize) -> usize {
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

async fn write_close<W: AsyncWrite + Unpin>(w: &mut W, code: u16, reason: &str) -> io::Result<()> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    write_message(w, OP_CLOSE, &payload, None).await
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
        write_message(w, OP_TEXT, text.as_bytes(), None).await?;
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
            write_message(&mut out, OP_TEXT, &vec![b'a'; len], None)
                .await
                .unwrap();
            assert_eq!(out.len(), len + header_len, "payload of {len}");
            assert_eq!(out[0], 0x81);
        }
    }

    #[tokio::test]
    async fn a_frame_and_its_meta_go_out_back_to_back() {
        let mut out = Vec::new();
        let meta = br#"{"type":"frame","ts":1}"#;
        let jpeg = vec![0xFFu8; 300];
        let outgoing = Outgoing::default();
        write_messages(
            &mut out,
            &[(OP_TEXT, meta), (OP_BINARY, &jpeg)],
            Some(&outgoing),
        )
        .await
        .unwrap();
        let mut expected = vec![0x81, meta.len() as u8];
        expected.extend_from_slice(meta);
        expected.extend_from_slice(&[0x82, 126, 1, 44]);
        expected.extend_from_slice(&jpeg);
        assert_eq!(out, expected);
        assert_eq!(
            outgoing.pending(),
            expected.len(),
            "whole until the send ends"
        );
        outgoing.end();
        assert_eq!(outgoing.pending(), 0);
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
