//! Shared harness for the integration tests: an in-process server on 127.0.0.1
//! port 0, WebSocket clients (tokio-tungstenite), a hand-written HTTP GET, and
//! helpers that wait for an event with a timeout instead of sleeping.
//!
//! Every wait here is bounded: a test that hangs fails with a message saying what
//! it was waiting for, rather than stalling the suite.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod daemon;
pub mod nats;

/// Upper bound for any single expected event. Generous: the suite must pass on a
/// loaded 2-core machine in a debug build; a healthy run never gets near it.
pub const WAIT: Duration = Duration::from_secs(10);

pub const DATA_URL_PREFIX: &str = "data:image/jpeg;base64,";

/// The access codes of test servers started with [`start_secured`].
pub const VIEWER_CODE: &str = "parents-2468";
pub const STAFF_CODE: &str = "teachers-1357";
pub const ADMIN_CODE: &str = "director-9753";

/// How much slower than native this suite runs: `KINDERCAM_TEST_TIME_SCALE`, set
/// by `scripts/test-cross` for qemu-user (default 1). Only bounds on promises made
/// to users in wall-clock time ("exits within about a second") are stretched by
/// it; they are measured at their real value natively.
pub fn time_scale() -> u32 {
    std::env::var("KINDERCAM_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A kindercam server running inside the test's runtime.
pub struct TestServer {
    pub ws: SocketAddr,
    pub http: SocketAddr,
    /// The server's streams, for tests that set what no API sets yet (a gate).
    pub hub: std::sync::Arc<kindercam::hub::Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _state: TempDir,
}

/// Flags every test server gets unless the test passes its own value.
const DEFAULT_FLAGS: &[(&str, &str)] = &[
    ("--http-listen", "127.0.0.1:0"),
    ("--ws-listen", "127.0.0.1:0"),
];

/// The environment the config sees: empty but for defaults that suit tests.
/// `KINDERCAM_AUTH=off` (allowed on loopback) keeps these protocol tests free of
/// logins; being the environment layer, a test's own `--auth on` flag overrides it.
pub fn test_env(key: &str) -> Option<String> {
    match key {
        "KINDERCAM_AUTH" => Some("off".to_owned()),
        _ => None,
    }
}

/// Starts a server as [`start`] does, with access control on and the codes
/// [`VIEWER_CODE`] and [`STAFF_CODE`].
pub async fn start_secured(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--auth",
        "on",
        "--viewer-code",
        VIEWER_CODE,
        "--staff-code",
        STAFF_CODE,
        "--admin-code",
        ADMIN_CODE,
    ];
    args.extend_from_slice(extra);
    start(&args).await
}

/// Logs in through the form as a browser does; returns the `Cookie` header value.
pub async fn login(server: &TestServer, name: &str, code: &str) -> String {
    let body = format!("name={name}&code={code}");
    let reply = http_request(server.http, "POST", "/login", &[], &body).await;
    assert_eq!(reply.status, 303, "login: {}", reply.text());
    assert_eq!(reply.header("Location"), Some("/"));
    let cookie = reply.header("Set-Cookie").expect("a session cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(part), "cookie lacks {part}: {cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

/// Opens a WebSocket with the given headers; `Err(status)` when refused.
pub async fn ws_with(
    server: &TestServer,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = server.ws_url(path).into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => panic!("handshake to {path} hung"),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(e)) => panic!("handshake to {path} failed oddly: {e}"),
    }
}

/// An `Authorization` value for HTTP Basic auth with `code`, as VLC sends it.
pub fn basic_auth(code: &str) -> String {
    format!("Basic {}", b64(format!("vlc:{code}").as_bytes()))
}

/// Starts a server on 127.0.0.1 port 0 (both listeners) with `extra` flags added,
/// and a fresh temporary `--state-dir` unless `extra` names one.
pub async fn start(extra: &[&str]) -> TestServer {
    start_with(extra, |server| server).await
}

/// [`start`], with `tweak` applied to the server before it runs (a test clock).
pub async fn start_with(
    extra: &[&str],
    tweak: impl FnOnce(kindercam::Server) -> kindercam::Server,
) -> TestServer {
    let state = TempDir::new("state");
    let mut args = vec!["kindercam".to_owned()];
    let state_dir = state.path().display().to_string();
    let defaults = DEFAULT_FLAGS
        .iter()
        .copied()
        .chain([("--state-dir", state_dir.as_str())]);
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = kindercam::Config::load(args, &test_env).expect("test config is valid");
    let server = tweak(
        kindercam::Server::bind(config)
            .await
            .expect("server binds to port 0"),
    );
    let (ws, http, hub) = (server.ws_addr(), server.http_addr(), server.hub());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    TestServer {
        ws,
        http,
        hub,
        stop: Some(stop_tx),
        task: Some(task),
        _state: state,
    }
}

impl TestServer {
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.ws, path)
    }

    /// Connects a WebSocket client to `path`, failing the test if the server refuses.
    pub async fn connect(&self, path: &str) -> Ws {
        match self.try_connect(path).await {
            Ok(ws) => ws,
            Err(e) => panic!("WebSocket connect to {path} failed: {e}"),
        }
    }

    pub async fn try_connect(&self, path: &str) -> Result<Ws, tungstenite::Error> {
        let url = self.ws_url(path);
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
            Ok(result) => result.map(|(ws, _)| ws),
            Err(_) => panic!("WebSocket handshake to {path} did not finish within {WAIT:?}"),
        }
    }

    pub async fn get(&self, target: &str) -> HttpReply {
        http_get(self.http, target).await
    }

    /// `/stats.json`, parsed.
    pub async fn stats(&self) -> Value {
        let reply = self.get("/stats.json").await;
        assert_eq!(reply.status, 200, "/stats.json: {}", reply.text());
        reply.json()
    }

    /// The `/stats.json` entry of stream `name`, if it exists.
    pub async fn stream_stats(&self, name: &str) -> Option<Value> {
        self.stats().await["streams"]
            .as_array()
            .expect("streams is an array")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// Stops the server the way the binary does on a signal, and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time");
            result.expect("server task").expect("server ran cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The runtime drops the task anyway when the test ends; stopping first lets
        // the HTTP threads exit instead of lingering for the rest of the binary.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The next data message (text, binary or close), skipping pings and pongs.
/// Panics if nothing arrives within `WAIT` or the connection ends without a close frame.
pub async fn recv(ws: &mut Ws) -> Message {
    match recv_within(ws, WAIT).await {
        Some(message) => message,
        None => panic!("no WebSocket message within {WAIT:?}"),
    }
}

/// Like `recv`, but `None` when nothing arrives within `limit`.
pub async fn recv_within(ws: &mut Ws, limit: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(e)) => panic!("WebSocket error while waiting for a message: {e}"),
            None => panic!("WebSocket ended without a close frame"),
        }
    }
}

pub async fn recv_text(ws: &mut Ws) -> String {
    match recv(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text message, got {}", describe(&other)),
    }
}

pub async fn recv_json(ws: &mut Ws) -> Value {
    let text = recv_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", clip(&text)))
}

/// Reads JSON messages until one satisfies `pred`, failing on anything that is
/// not JSON. For waits where unrelated messages (joins of others) may come first.
pub async fn recv_json_until(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(message) = recv_within(ws, left).await else {
            panic!("no message matching {what} within {WAIT:?}");
        };
        let Message::Text(text) = &message else {
            panic!(
                "expected JSON while waiting for {what}, got {}",
                describe(&message)
            );
        };
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", clip(text)));
        if pred(&value) {
            return value;
        }
    }
}

/// The next frame of a text viewer: a data URL. Status messages on the way are
/// checked to be JSON with `"type":"status"` (never confusable with a frame) and
/// skipped. Returns the data URL and when it arrived.
pub async fn recv_frame(ws: &mut Ws) -> (String, Instant) {
    recv_frame_within(ws, WAIT)
        .await
        .unwrap_or_else(|| panic!("no frame within {WAIT:?}"))
}

pub async fn recv_frame_within(ws: &mut Ws, limit: Duration) -> Option<(String, Instant)> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = recv_within(ws, left).await?;
        let at = Instant::now();
        let Message::Text(text) = &message else {
            panic!("expected a data URL frame, got {}", describe(&message));
        };
        if text.starts_with(DATA_URL_PREFIX) {
            return Some((text.to_string(), at));
        }
        assert_status(text);
    }
}

/// The next frame of a `?format=binary` viewer.
pub async fn recv_binary_frame(ws: &mut Ws) -> Vec<u8> {
    loop {
        match recv(ws).await {
            Message::Binary(bytes) => return bytes.to_vec(),
            Message::Text(text) => {
                assert_status(&text);
            }
            other => panic!("expected a binary frame, got {}", describe(&other)),
        }
    }
}

/// Panics unless `text` is a status message; returns it parsed.
pub fn assert_status(text: &str) -> Value {
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|_| panic!("neither a frame nor JSON status: {}", clip(text)));
    assert_eq!(value["type"], "status", "unexpected message: {value}");
    value
}

/// Reads until a close frame arrives and returns its code; data messages on the
/// way are skipped (other clients may still be chatting).
pub async fn expect_close(ws: &mut Ws) -> u16 {
    expect_close_within(ws, WAIT).await
}

/// [`expect_close`], waiting at most `limit`.
pub async fn expect_close_within(ws: &mut Ws, limit: Duration) -> u16 {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no close frame within {limit:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame.map(|f: CloseFrame| u16::from(f.code)).unwrap_or(1005)
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("connection failed before a close frame: {e}"),
            Ok(None) => panic!("connection ended without a close frame"),
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    let text: String = text.into();
    tokio::time::timeout(WAIT, ws.send(Message::Text(text.into())))
        .await
        .expect("send in time")
        .expect("send succeeds");
}

pub async fn send_json(ws: &mut Ws, value: &Value) {
    send_text(ws, value.to_string()).await;
}

/// Short description of a message for failure output.
pub fn describe(message: &Message) -> String {
    match message {
        Message::Text(t) => format!("text {}", clip(t)),
        Message::Binary(b) => format!("binary message of {} bytes", b.len()),
        Message::Close(c) => format!("close {c:?}"),
        other => format!("{other:?}"),
    }
}

pub fn clip(s: &str) -> String {
    if s.len() <= 120 {
        s.to_owned()
    } else {
        let cut = (0..=120)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &s[..cut], s.len())
    }
}

// ---- JPEG helpers ----------------------------------------------------------

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn data_url(jpeg: &[u8]) -> String {
    format!("{DATA_URL_PREFIX}{}", b64(jpeg))
}

/// The JPEG inside a data URL; panics if it is not one.
pub fn decode_data_url(url: &str) -> Vec<u8> {
    let b64 = url
        .strip_prefix(DATA_URL_PREFIX)
        .unwrap_or_else(|| panic!("not a JPEG data URL: {}", clip(url)));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("frame is valid base64")
}

/// Fully decodes `jpeg` with turbojpeg and returns its size; panics if it does not decode.
pub fn jpeg_size(jpeg: &[u8]) -> (usize, usize) {
    let image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB)
        .unwrap_or_else(|e| panic!("not a decodable JPEG ({} bytes): {e}", jpeg.len()));
    (image.width, image.height)
}

/// A small real JPEG whose content depends on `seed`, so frames can be told apart.
pub fn make_jpeg(width: usize, height: usize, seed: u8) -> Vec<u8> {
    let mut pixels = vec![0u8; width * height * 3];
    for (i, p) in pixels.chunks_mut(3).enumerate() {
        let (x, y) = (i % width, i / width);
        p[0] = (x as u8).wrapping_mul(3).wrapping_add(seed);
        p[1] = (y as u8).wrapping_mul(5);
        p[2] = seed.wrapping_mul(40);
    }
    rgb_jpeg(&pixels, width, height, 85)
}

/// `pixels` (RGB, `width` x `height`) as a JPEG at `quality`.
fn rgb_jpeg(pixels: &[u8], width: usize, height: usize, quality: i32) -> Vec<u8> {
    let image = turbojpeg::Image {
        pixels,
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, quality, turbojpeg::Subsamp::Sub2x2)
        .expect("encode test JPEG")
        .to_vec()
}

/// A JPEG of noise: large (about 100 KB at 640x480), as no gradient is.
pub fn noisy_jpeg(width: usize, height: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let pixels: Vec<u8> = (0..width * height * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    rgb_jpeg(&pixels, width, height, 80)
}

/// Median of gaps between consecutive instants.
pub fn median_gap(times: &[Instant]) -> Duration {
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(!gaps.is_empty(), "need at least two instants");
    gaps.sort();
    gaps[gaps.len() / 2]
}

// ---- HTTP ------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", clip(&self.text())))
    }
}

/// `GET target` with the request target sent exactly as given (no normalisation,
/// so path-escape attempts reach the server verbatim).
pub async fn http_get(addr: SocketAddr, target: &str) -> HttpReply {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    http_raw(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

/// A request with extra headers and, for POST, a form body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        addr.port()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    } else if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    http_raw(addr, req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Sends raw request bytes and reads the reply until the server closes.
pub async fn http_raw(addr: SocketAddr, request: &[u8]) -> Result<HttpReply, String> {
    let exchange = async {
        let mut socket = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        socket.write_all(request).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        socket
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no complete HTTP reply within {WAIT:?}"))??;
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Result<HttpReply, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(format!("incomplete reply: {raw:?}")),
        Err(e) => return Err(format!("malformed reply ({e})")),
    };
    let status = response.code.ok_or("no status")?;
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let mut reply = HttpReply {
        status,
        headers,
        body: raw[head_len..].to_vec(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        reply.body = dechunk(&reply.body)?;
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if reply.body.len() != len {
            return Err(format!(
                "body has {} bytes, Content-Length says {len}",
                reply.body.len()
            ));
        }
    }
    Ok(reply)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

// ---- raw WebSocket clients -------------------------------------------------

/// Does the WebSocket handshake on a plain TCP socket and returns it; the caller
/// may then never read from it (a stalled viewer). `recv_buffer` shrinks the
/// socket's receive buffer so that a stall is reached after little data.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // Read byte by byte up to the end of the head, so no frame bytes are consumed.
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = stream.read_u8().await.expect("read handshake reply");
            head.push(byte);
        }
    };
    tokio::time::timeout(WAIT, read_head)
        .await
        .expect("handshake reply in time");
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "expected 101 Switching Protocols, got: {head}"
    );
    stream
}

// ---- waiting ---------------------------------------------------------------

/// Re-checks `check` every `every` until it returns `Some`, for conditions only
/// observable by polling (server counters). Fails after `limit` naming `what`.
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

// ---- temporary files -------------------------------------------------------

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "kindercam-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
