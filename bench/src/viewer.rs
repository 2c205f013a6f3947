//! A deliberately cheap WebSocket viewer: a hand-written client handshake, then
//! raw frame reading into one reused buffer. No UTF-8 validation, no per-message
//! allocation, no tungstenite state: 500 of them on one small runtime must cost
//! far less than the server they measure. Each complete message is timestamped
//! the moment its last byte is read.
//!
//! It is still strict about what the server sends (FIN set, no mask, known
//! opcodes, a frame payload that is a data URL or a JPEG), so a broken server
//! shows up as `bad` counts instead of a good-looking figure.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::source::{self, DATA_URL_PREFIX};

/// How received frames are told apart.
#[derive(Debug, Clone, Copy)]
pub enum Keying {
    /// Uploads carry a sequence number (see `source`).
    Tagged,
    /// Test-pattern frames do not; a sampled hash of the payload identifies them.
    Sampled,
}

/// One frame received.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub key: u64,
    pub at: Instant,
    /// On the wire: WebSocket header plus payload.
    pub bytes: u32,
}

#[derive(Debug, Default)]
pub struct ViewerOutcome {
    pub receipts: Vec<Receipt>,
    pub statuses: Vec<String>,
    /// Messages that are neither a frame of the expected format nor a status.
    pub bad: u32,
    pub close_code: Option<u16>,
    pub error: Option<String>,
    pub pings_answered: u32,
}

pub async fn run(
    ws: SocketAddr,
    path: String,
    keying: Keying,
    connected: mpsc::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> ViewerOutcome {
    if path.starts_with("/stream.mjpg") {
        return run_mjpeg(ws, path, keying, connected, stop).await;
    }
    let mut out = ViewerOutcome::default();
    // `write` lives as long as the viewer: dropping it would half-close the socket.
    let (reader, mut write) = match handshake(ws, &path).await {
        Ok(r) => {
            let _ = connected.send(Ok(())).await;
            r
        }
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            let _ = connected.send(Err(e)).await;
            return out;
        }
    };
    drop(connected);
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    let binary = path.contains("format=binary");
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = read_message(&mut reader, &mut buf) => msg,
        };
        let (opcode, wire_len, len) = match msg {
            Ok(m) => m,
            Err(e) => {
                if out.close_code.is_none() {
                    out.error = Some(format!("{e:#}"));
                }
                break;
            }
        };
        let at = Instant::now();
        let payload = &buf[..len];
        match opcode {
            0x1 if payload.starts_with(b"{") => {
                out.statuses
                    .push(String::from_utf8_lossy(payload).into_owned());
                continue;
            }
            // The daemon's keepalive drops viewers that never answer its pings.
            0x9 => {
                if let Err(e) = write.write_all(&pong(payload)).await {
                    out.error = Some(format!("cannot answer a ping: {e}"));
                    break;
                }
                out.pings_answered += 1;
                continue;
            }
            0xA => continue,
            0x8 => {
                out.close_code = Some(
                    payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                );
                break;
            }
            _ => {}
        }
        let key = match (opcode, binary, keying) {
            (0x1, false, Keying::Tagged) => source::seq_from_data_url(payload),
            (0x2, true, Keying::Tagged) => source::seq_from_jpeg(payload),
            (0x1, false, Keying::Sampled) if payload.starts_with(DATA_URL_PREFIX.as_bytes()) => {
                Some(sampled_key(payload))
            }
            (0x2, true, Keying::Sampled)
                if payload.starts_with(&[0xFF, 0xD8]) && payload.ends_with(&[0xFF, 0xD9]) =>
            {
                Some(sampled_key(payload))
            }
            _ => None,
        };
        match key {
            Some(key) => out.receipts.push(Receipt {
                key,
                at,
                bytes: wire_len as u32,
            }),
            None => out.bad += 1,
        }
    }
    out
}

/// An MJPEG-over-HTTP viewer: the request, the response head, then parts
/// (`Content-Length` headers, the JPEG, the next boundary), strictly checked.
async fn run_mjpeg(
    http: SocketAddr,
    path: String,
    keying: Keying,
    connected: mpsc::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> ViewerOutcome {
    let mut out = ViewerOutcome::default();
    let opened = async {
        let mut socket = TcpStream::connect(http).await.context("connect")?;
        socket.set_nodelay(true)?;
        socket
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes())
            .await?;
        let mut reader = BufReader::with_capacity(64 * 1024, socket);
        let head = read_head(&mut reader).await?;
        if !head.starts_with("HTTP/1.1 200") || !head.contains("multipart/x-mixed-replace") {
            bail!("not an MJPEG stream: {}", head.lines().next().unwrap_or(""));
        }
        let boundary = head
            .split("boundary=")
            .nth(1)
            .and_then(|b| b.lines().next())
            .context("no boundary")?
            .trim()
            .to_owned();
        let mut first = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut first).await?;
        if first.trim_end() != format!("--{boundary}") {
            bail!("the head does not end with the boundary: {first:?}");
        }
        Ok::<_, anyhow::Error>((reader, boundary))
    };
    let (mut reader, boundary) = match opened.await {
        Ok(r) => {
            let _ = connected.send(Ok(())).await;
            r
        }
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            let _ = connected.send(Err(e)).await;
            return out;
        }
    };
    drop(connected);
    let end = format!("\r\n--{boundary}\r\n").into_bytes();
    let mut buf = Vec::new();
    let mut tail = vec![0u8; end.len()];
    loop {
        let part = async {
            let head = read_head(&mut reader).await?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .context("a part without Content-Length")?
                .trim()
                .parse()?;
            if len > 16 << 20 {
                bail!("absurd part length {len}");
            }
            buf.resize(len, 0);
            reader.read_exact(&mut buf).await?;
            let at = Instant::now();
            reader.read_exact(&mut tail).await?;
            if tail != end {
                bail!("a part not followed by the boundary");
            }
            Ok::<_, anyhow::Error>((at, head.len() + len + end.len()))
        };
        let (at, wire_len) = tokio::select! {
            _ = stop.changed() => break,
            part = part => match part {
                Ok(p) => p,
                Err(e) => {
                    out.error = Some(format!("{e:#}"));
                    break;
                }
            },
        };
        let key = match keying {
            Keying::Tagged => source::seq_from_jpeg(&buf),
            Keying::Sampled if buf.starts_with(&[0xFF, 0xD8]) && buf.ends_with(&[0xFF, 0xD9]) => {
                Some(sampled_key(&buf))
            }
            Keying::Sampled => None,
        };
        match key {
            Some(key) => out.receipts.push(Receipt {
                key,
                at,
                bytes: wire_len as u32,
            }),
            None => out.bad += 1,
        }
    }
    // A stream has no close frame: the daemon's shutdown shows as the end of it.
    out.close_code = Some(1001).filter(|_| {
        out.error
            .as_deref()
            .is_some_and(|e| e.contains("early eof"))
    });
    if out.close_code.is_some() {
        out.error = None;
    }
    out
}

/// Reads header lines up to a blank line.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::io::AsyncBufReadExt::read_line(r, &mut line).await?;
        if n == 0 {
            bail!("early eof in a head");
        }
        if line == "\r\n" {
            return Ok(head);
        }
        head.push_str(&line);
        if head.len() > 8192 {
            bail!("head too long");
        }
    }
}

async fn handshake(
    ws: SocketAddr,
    path: &str,
) -> anyhow::Result<(impl AsyncRead + Unpin, OwnedWriteHalf)> {
    let mut socket = TcpStream::connect(ws).await.context("connect")?;
    socket.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed during handshake");
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > 8192 {
            bail!("handshake response too long");
        }
    };
    if !head.starts_with(b"HTTP/1.1 101") {
        let line =
            String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap_or(0)])
                .into_owned();
        bail!("handshake refused: {line}");
    }
    let leftover = head.split_off(end);
    let (read, write) = socket.into_split();
    Ok((Cursor::new(leftover).chain(read), write))
}

/// Reads one whole server message into `buf`: (opcode, bytes on the wire, payload length).
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> anyhow::Result<(u8, usize, usize)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await.context("connection ended")?;
    if h[0] & 0x80 == 0 {
        bail!("fragmented message (the server sends whole frames)");
    }
    if h[1] & 0x80 != 0 {
        bail!("masked server frame");
    }
    let opcode = h[0] & 0x0F;
    let (len, header) = match h[1] & 0x7F {
        126 => (usize::from(r.read_u16().await?), 4),
        127 => (r.read_u64().await? as usize, 10),
        n => (usize::from(n), 2),
    };
    if len > 16 << 20 {
        bail!("absurd message length {len}");
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
    r.read_exact(&mut buf[..len]).await?;
    if !matches!(opcode, 0x1 | 0x2 | 0x8 | 0x9 | 0xA) {
        bail!("unexpected opcode {opcode:#x}");
    }
    Ok((opcode, header + len, len))
}

/// Identifies a payload by its length and 16 sampled 8-byte words. Frames of a
/// moving picture differ all over; this costs ~nothing per receipt.
fn sampled_key(p: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ p.len() as u64;
    if p.len() < 8 {
        return h;
    }
    for i in 0..16 {
        let pos = (p.len() - 8) * i / 15;
        let word = u64::from_le_bytes(p[pos..pos + 8].try_into().unwrap());
        h = (h ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A client's (masked) pong echoing a ping's payload (at most 125 bytes by RFC 6455).
fn pong(payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x1F, 0x2E, 0x3D, 0x4C];
    let payload = &payload[..payload.len().min(125)];
    let mut f = vec![0x8A, 0x80 | payload.len() as u8];
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}
