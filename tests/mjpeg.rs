//! `/stream.mjpg` as the programs that read MJPEG over HTTP see it (ffmpeg, VLC,
//! Home Assistant, a browser's `<img>`): a strict multipart reader checks the
//! head and every part byte for byte, ffmpeg decodes the stream with Basic auth
//! and with a link token, the aliases and HEAD answer the same, refusals carry
//! the right status, families follow the gate (closed: 403 and an open stream
//! ends; paused: the notice picture; resumed: the camera again), revoking a
//! token ends its stream, and a client that never reads delays no one.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BOUNDARY: &str = "kindercamframe";
const NO_CACHE: &[&str] = &["no-store", "no-cache", "must-revalidate", "max-age=0"];

// ---- a strict multipart/x-mixed-replace reader ------------------------------

/// An open `/stream.mjpg` response, read over a raw socket.
struct Mjpeg {
    socket: TcpStream,
    buf: Vec<u8>,
    status: u16,
    headers: Vec<(String, String)>,
    /// When the head (with the first boundary) was complete.
    opened: Instant,
}

/// One part: the JPEG, its `X-Timestamp` in microseconds, and when it was complete.
struct Part {
    jpeg: Vec<u8>,
    ts_us: u64,
    at: Instant,
}

/// Why no part came.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed the connection (at a part's boundary).
    Closed,
    TimedOut,
}

impl Mjpeg {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes before `deadline`; false on EOF.
    async fn fill(&mut self, deadline: Instant) -> Result<bool, End> {
        self.buf.reserve(64 * 1024);
        let read = tokio::time::timeout_at(deadline.into(), self.socket.read_buf(&mut self.buf))
            .await
            .map_err(|_| End::TimedOut)?;
        Ok(matches!(read, Ok(n) if n > 0))
    }

    /// Reads until `buf` holds `n` bytes; `Closed` if the server ends first.
    async fn need(&mut self, n: usize, deadline: Instant) -> Result<(), End> {
        while self.buf.len() < n {
            if !self.fill(deadline).await? {
                return Err(End::Closed);
            }
        }
        Ok(())
    }

    /// The next part, checked strictly: exactly `Content-Type: image/jpeg`,
    /// `Content-Length` (the JPEG's real length), `X-Timestamp: S.UUUUUU`, an
    /// empty line, a whole JPEG, then CRLF and the next boundary. Panics on any
    /// deviation; `Err` only for a clean end or a timeout.
    async fn part_within(&mut self, limit: Duration) -> Result<Part, End> {
        let deadline = Instant::now() + limit;
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                self.buf.len() < 1024,
                "a part head over 1 KiB: {:?}",
                clip_bytes(&self.buf)
            );
            if !self.fill(deadline).await? {
                assert!(
                    self.buf.is_empty(),
                    "the stream ended mid-part: {:?}",
                    clip_bytes(&self.buf)
                );
                return Err(End::Closed);
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).expect("part head is text");
        let lines: Vec<&str> = head.trim_end_matches("\r\n\r\n").split("\r\n").collect();
        assert_eq!(lines.len(), 3, "three part headers: {head:?}");
        assert_eq!(lines[0], "Content-Type: image/jpeg", "{head:?}");
        let len: usize = lines[1]
            .strip_prefix("Content-Length: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Content-Length: {head:?}"));
        let ts = lines[2]
            .strip_prefix("X-Timestamp: ")
            .unwrap_or_else(|| panic!("X-Timestamp: {head:?}"));
        let (secs, micros) = ts
            .split_once('.')
            .unwrap_or_else(|| panic!("S.UUUUUU: {ts}"));
        assert_eq!(micros.len(), 6, "six digits of microseconds: {ts}");
        let ts_us = secs.parse::<u64>().expect("seconds") * 1_000_000
            + micros.parse::<u64>().expect("microseconds");
        let tail = format!("\r\n--{BOUNDARY}\r\n");
        let total = head_end + len + tail.len();
        self.need(total, deadline).await.map_err(|e| {
            assert_eq!(e, End::TimedOut, "the stream ended mid-part");
            e
        })?;
        let at = Instant::now();
        let jpeg = self.buf[head_end..head_end + len].to_vec();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a part starts with SOI");
        assert_eq!(
            &jpeg[len - 2..],
            &[0xFF, 0xD9],
            "a part ends with EOI (Content-Length is its length)"
        );
        assert_eq!(
            &self.buf[head_end + len..total],
            tail.as_bytes(),
            "CRLF and the boundary right after the JPEG"
        );
        self.buf.drain(..total);
        Ok(Part { jpeg, ts_us, at })
    }

    async fn part(&mut self) -> Part {
        match self.part_within(WAIT).await {
            Ok(part) => part,
            Err(end) => panic!("no MJPEG part within {WAIT:?}: {end:?}"),
        }
    }

    /// Waits for the server to end the stream (after any parts in flight).
    async fn ends_within(&mut self, limit: Duration) -> Result<usize, End> {
        let deadline = Instant::now() + limit;
        let mut parts = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.part_within(left).await {
                Ok(_) => parts += 1,
                Err(End::Closed) => return Ok(parts),
                Err(End::TimedOut) => return Err(End::TimedOut),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn clip_bytes(b: &[u8]) -> String {
    clip(&String::from_utf8_lossy(&b[..b.len().min(200)]))
}

/// Sends `method target` with `headers` on a socket (with a receive buffer of
/// `recv_buffer` bytes if given) and reads the response head. A 200 must end its
/// head with the first boundary, which is consumed; any other status is read whole.
async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Mjpeg {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut socket = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
        addr.port()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    socket
        .write_all(req.as_bytes())
        .await
        .expect("send the request");
    let mut stream = Mjpeg {
        socket,
        buf: Vec::new(),
        status: 0,
        headers: Vec::new(),
        opened: Instant::now(),
    };
    let deadline = Instant::now() + WAIT;
    let head_len = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response
            .parse(&stream.buf)
            .expect("a well-formed response head")
        {
            httparse::Status::Complete(n) => {
                stream.status = response.code.unwrap();
                stream.headers = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break n;
            }
            httparse::Status::Partial => {
                let more = stream
                    .fill(deadline)
                    .await
                    .expect("the response head in time");
                assert!(
                    more,
                    "the server closed before the head: {:?}",
                    clip_bytes(&stream.buf)
                );
            }
        }
    };
    stream.buf.drain(..head_len);
    if stream.status == 200 && method == "GET" {
        let first = format!("--{BOUNDARY}\r\n");
        stream
            .need(first.len(), deadline)
            .await
            .expect("the first boundary with the head");
        assert_eq!(
            &stream.buf[..first.len()],
            first.as_bytes(),
            "the head ends with the first boundary"
        );
        stream.buf.drain(..first.len());
    } else {
        // Read the rest: an error's body, or (HEAD) nothing, until the server closes.
        while stream
            .fill(deadline)
            .await
            .expect("the response ends in time")
        {}
    }
    stream.opened = Instant::now();
    stream
}

async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Mjpeg {
    request(addr, "GET", target, headers, None).await
}

/// Checks a 200's head: the multipart type with our boundary, µStreamer's
/// no-cache family, and neither a length nor chunking (the body never ends).
fn assert_stream_head(s: &Mjpeg) {
    assert_eq!(s.status, 200, "{:?} {}", s.headers, clip_bytes(&s.buf));
    assert_eq!(
        s.header("Content-Type"),
        Some(format!("multipart/x-mixed-replace;boundary={BOUNDARY}").as_str())
    );
    let cache = s.header("Cache-Control").expect("Cache-Control");
    for word in NO_CACHE {
        assert!(cache.contains(word), "Cache-Control lacks {word}: {cache}");
    }
    assert_eq!(s.header("Pragma"), Some("no-cache"));
    assert!(s.header("Expires").is_some(), "Expires");
    assert_eq!(
        s.header("Content-Length"),
        None,
        "no Content-Length on a stream"
    );
    assert_eq!(s.header("Transfer-Encoding"), None, "not chunked");
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A timestamp from the last minute, not from the future.
fn assert_plausible(ts_us: u64) {
    let now = unix_us();
    assert!(
        ts_us <= now + 1_000_000 && ts_us + 60_000_000 >= now,
        "X-Timestamp {ts_us} µs is not about now ({now} µs)"
    );
}

// ---- servers -------------------------------------------------------------------

/// Test-pattern flags: `interval` ms, 160x120.
fn pattern(interval: &'static str) -> Vec<&'static str> {
    vec![
        "--interval-ms",
        interval,
        "--width",
        "160",
        "--height",
        "120",
    ]
}

/// A secured server with `camera` and `aula-2`, frames every 100 ms, 160x120.
async fn centre(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--source",
        "test-pattern",
        "--source",
        "aula-2=test-pattern",
    ];
    args.extend(pattern("100"));
    args.extend_from_slice(extra);
    start_secured(&args).await
}

async fn with_code(
    server: &TestServer,
    code: &str,
    method: &str,
    path: &str,
    body: &str,
) -> HttpReply {
    let auth = basic_auth(code);
    http_request(server.http, method, path, &[("Authorization", &auth)], body).await
}

/// A `view` token for `rooms`; returns its id and secret.
async fn view_token(server: &TestServer, rooms: &[&str]) -> (String, String) {
    let body = json!({"name": "Home Assistant", "rooms": rooms, "scope": "view"}).to_string();
    let reply = with_code(server, ADMIN_CODE, "POST", "/api/tokens", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let token = reply.json();
    (
        token["id"].as_str().unwrap().to_owned(),
        token["token"].as_str().unwrap().to_owned(),
    )
}

// ---- the format ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_is_exact_the_first_comes_at_once_and_the_aliases_and_head_agree() {
    let server = start(&pattern("100")).await;
    // Warm the source, so "at once" is about the stream, not the camera starting.
    let mut warm = get(server.http, "/stream.mjpg", &[]).await;
    warm.part().await;

    for target in [
        "/stream.mjpg",
        "/stream",
        "/?action=stream",
        "/stream.mjpg?stream=camera",
    ] {
        let mut s = get(server.http, target, &[]).await;
        assert_stream_head(&s);
        let first = s.part().await;
        let waited = first.at - s.opened;
        assert!(
            waited < Duration::from_secs(1) * time_scale(),
            "{target}: the first frame came {waited:?} after the head"
        );
        let mut parts = vec![first];
        for _ in 0..5 {
            parts.push(s.part().await);
        }
        for p in &parts {
            assert_eq!(
                jpeg_size(&p.jpeg),
                (160, 120),
                "{target}: the configured size"
            );
            assert_plausible(p.ts_us);
        }
        assert!(
            parts
                .windows(2)
                .all(|w| w[0].ts_us < w[1].ts_us && w[0].jpeg != w[1].jpeg),
            "{target}: a running source gives a new picture, taken later, in each part"
        );
    }

    // HEAD: the same head, no body (not even the first boundary).
    let head = request(server.http, "HEAD", "/stream.mjpg", &[], None).await;
    assert_stream_head(&head);
    assert!(
        head.buf.is_empty(),
        "HEAD has no body: {:?}",
        clip_bytes(&head.buf)
    );

    // Stream names: one nothing feeds is 404, like /video/NAME and /snapshot.jpg.
    for target in [
        "/stream.mjpg?stream=nosuch",
        "/stream.mjpg?stream=Bad%20Name",
    ] {
        let s = get(server.http, target, &[]).await;
        assert_eq!(s.status, 404, "{target}: {}", clip_bytes(&s.buf));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_stream_repeats_its_last_picture_about_every_second() {
    // The test pattern draws one frame for the first viewer, the next a minute later.
    let server = start(&pattern("60000")).await;
    let mut s = get(server.http, "/stream.mjpg", &[]).await;
    assert_stream_head(&s);
    let first = s.part().await;
    assert_eq!(jpeg_size(&first.jpeg), (160, 120));
    assert_plausible(first.ts_us);
    let mut last = first.at;
    for n in 1..=3 {
        let again = s.part().await;
        let gap = again.at - last;
        assert!(
            gap >= Duration::from_millis(800) && gap <= Duration::from_millis(1500) * time_scale(),
            "repeat {n} came {gap:?} after the one before"
        );
        assert_eq!(again.jpeg, first.jpeg, "repeat {n} is the same picture");
        assert_eq!(
            again.ts_us, first.ts_us,
            "repeat {n} keeps its capture time"
        );
        last = again.at;
    }
    server.stop().await;
}

// ---- ffmpeg --------------------------------------------------------------------

/// Runs ffmpeg with `args`, killing it after `limit`; returns its exit status,
/// stdout and the end of its stderr.
fn ffmpeg(args: &[&str], limit: Duration) -> (std::process::ExitStatus, Vec<u8>, String) {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("ffmpeg is needed for this test (scripts/test installs it: apt-get install ffmpeg): {e}")
        });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ffmpeg") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ffmpeg {args:?} did not finish within {limit:?}: {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// ffmpeg reads `url` (as `format`, or detected) and decodes 20 frames to raw
/// grey pixels: exactly 20 pictures of the configured size must come out.
async fn ffmpeg_decodes_20(url: String, format: Option<&'static str>, extra: Vec<String>) {
    let what = format!("ffmpeg {format:?} {extra:?}");
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
        if let Some(f) = format {
            args.extend(["-f", f]);
        }
        args.extend([
            "-i",
            &url,
            "-frames:v",
            "20",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ]);
        ffmpeg(&args, Duration::from_secs(30) * time_scale())
    })
    .await
    .unwrap();
    assert!(status.success(), "{what} failed ({status}): {err}");
    assert_eq!(
        out.len(),
        20 * 160 * 120,
        "{what}: 20 decoded 160x120 frames; {err}"
    );
    let first = &out[..160 * 120];
    assert!(
        out.chunks(160 * 120).any(|f| f != first),
        "{what}: the pictures move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_reads_and_decodes_the_stream_with_basic_auth_and_with_a_token() {
    let server = centre(&[]).await;
    let (_, token) = view_token(&server, &["camera"]).await;
    let port = server.http.port();
    for format in [Some("mpjpeg"), None] {
        // Credentials in the URL (ffmpeg answers the 401's Basic challenge).
        let url = format!("http://vlc:{VIEWER_CODE}@127.0.0.1:{port}/stream.mjpg");
        ffmpeg_decodes_20(url, format, vec![]).await;
        // A header, as Home Assistant's configuration would set it.
        let url = format!("http://127.0.0.1:{port}/stream.mjpg");
        let header = format!("Authorization: {}\r\n", basic_auth(STAFF_CODE));
        ffmpeg_decodes_20(url, format, vec!["-headers".into(), header]).await;
        // A link token in the query.
        let url = format!("http://127.0.0.1:{port}/stream.mjpg?token={token}");
        ffmpeg_decodes_20(url, format, vec![]).await;
    }
    // A wrong code decodes nothing.
    let url = format!("http://vlc:wrong-code@127.0.0.1:{port}/stream.mjpg");
    let (status, out, _) = tokio::task::spawn_blocking(move || {
        ffmpeg(&["-i", &url, "-frames:v", "1", "-f", "null", "-"], WAIT)
    })
    .await
    .unwrap();
    assert!(
        !status.success() && out.is_empty(),
        "a wrong code is refused"
    );
    server.stop().await;
}

// ---- who may watch ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_their_reason_and_every_credential_of_a_viewer_opens_it() {
    let server = centre(&[]).await;
    let nobody = get(server.http, "/stream.mjpg", &[]).await;
    assert_eq!(nobody.status, 401);
    assert!(
        nobody
            .header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Basic")),
        "{:?}",
        nobody.headers
    );

    let (_, other_room) = view_token(&server, &["aula-2"]).await;
    let refused = get(
        server.http,
        &format!("/stream.mjpg?token={other_room}"),
        &[],
    )
    .await;
    assert_eq!(
        refused.status,
        403,
        "a token for aula-2 on camera: {}",
        clip_bytes(&refused.buf)
    );
    let mut its_room = get(
        server.http,
        &format!("/stream.mjpg?stream=aula-2&token={other_room}"),
        &[],
    )
    .await;
    assert_stream_head(&its_room);
    its_room.part().await;

    let (_, token) = view_token(&server, &["camera"]).await;
    let bearer = format!("Bearer {token}");
    let basic = basic_auth(VIEWER_CODE);
    let cookie = login(&server, "Sofia", VIEWER_CODE).await;
    let query = format!("/?action=stream&token={token}");
    for (target, headers) in [
        (query.as_str(), vec![]),
        ("/stream.mjpg", vec![("Authorization", bearer.as_str())]),
        ("/stream", vec![("Authorization", basic.as_str())]),
        ("/stream.mjpg", vec![("Cookie", cookie.as_str())]),
    ] {
        let mut s = get(server.http, target, &headers).await;
        assert_stream_head(&s);
        assert_eq!(
            jpeg_size(&s.part().await.jpeg),
            (160, 120),
            "{target} {headers:?}"
        );
    }
    server.stop().await;
}

/// Hours closed yesterday, today and tomorrow in the room's zone (as tests/hours.rs).
fn closed_now() -> Value {
    use jiff::tz::TimeZone;
    let zone = "America/Bogota";
    let today = TimeZone::get(zone)
        .unwrap()
        .to_datetime(jiff::Timestamp::now())
        .date();
    let days: Vec<String> = (-1..=1)
        .map(|n| (today + jiff::Span::new().days(n)).to_string())
        .collect();
    json!({
        "timezone": zone,
        "open": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "from": "00:00", "to": "24:00"}],
        "closed_dates": days,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_token_follows_the_gate_closed_paused_resumed_and_revoked() {
    let server = start_with(
        &{
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
            args.extend(pattern("100"));
            args
        },
        |s| s.with_pause_minute(Duration::from_secs(60)),
    )
    .await;
    let (id, token) = view_token(&server, &["camera"]).await;
    let target = format!("/stream.mjpg?token={token}");
    let mut open = get(server.http, &target, &[]).await;
    assert_stream_head(&open);
    let camera = open.part().await.jpeg;

    // Closed by the hours: an open stream ends, a new one is refused with the reason.
    let closed = with_code(
        &server,
        ADMIN_CODE,
        "PUT",
        "/api/streams/camera/schedule",
        &closed_now().to_string(),
    )
    .await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    open.ends_within(Duration::from_secs(2) * time_scale())
        .await
        .expect("a stream of a room that closes ends");
    let refused = get(server.http, &target, &[]).await;
    assert_eq!(refused.status, 403);
    let why = String::from_utf8_lossy(&refused.buf).into_owned();
    assert!(
        why.contains("closed") && why.contains("opens"),
        "the reason: {why}"
    );
    let reopened = with_code(
        &server,
        ADMIN_CODE,
        "DELETE",
        "/api/streams/camera/schedule",
        "",
    )
    .await;
    assert_eq!(reopened.status, 204, "{}", reopened.text());

    // Paused: a stream open before the pause turns to the notice picture, and a
    // new one gets it at once; it is repeated, never the camera's picture.
    let mut before = get(server.http, &target, &[]).await;
    assert_stream_head(&before);
    before.part().await;
    let paused = with_code(&server, STAFF_CODE, "POST", "/api/streams/camera/pause", "").await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let notice = loop {
        // Camera frames already on their way may come first; then the notice.
        let p = before.part().await;
        let q = before.part().await;
        if p.jpeg == q.jpeg {
            break q.jpeg;
        }
    };
    assert_ne!(notice, camera, "the notice is not the camera's picture");
    assert_eq!(
        jpeg_size(&notice),
        (160, 120),
        "the notice has the stream's size"
    );
    let mut during = get(server.http, &target, &[]).await;
    assert_stream_head(&during);
    for n in 0..3 {
        let p = during.part().await;
        assert_eq!(
            p.jpeg, notice,
            "part {n} during the pause is the notice picture"
        );
        if n == 0 {
            assert!(
                p.at - during.opened < Duration::from_secs(1) * time_scale(),
                "at once"
            );
        }
    }
    // The snapshot a family gets now is the same placeholder.
    let snap = http_get(server.http, &format!("/snapshot.jpg?token={token}")).await;
    assert_eq!(
        snap.body, notice,
        "the snapshot's placeholder and the stream's are one"
    );

    // Resumed: the camera's moving picture again, on the same connection.
    let resumed = with_code(
        &server,
        STAFF_CODE,
        "DELETE",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let deadline = Instant::now() + WAIT;
    let mut live = Vec::new();
    while live.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the camera's frames after resuming"
        );
        let p = during.part().await;
        if p.jpeg != notice {
            live.push(p.jpeg);
        } else {
            assert!(
                live.is_empty(),
                "the notice came back after the camera's frames"
            );
        }
    }
    assert!(
        live[0] != live[1] && live[1] != live[2],
        "the picture moves again"
    );

    // Revoked: its open stream ends within two seconds.
    let revoked_at = Instant::now();
    let gone = with_code(
        &server,
        ADMIN_CODE,
        "DELETE",
        &format!("/api/tokens/{id}"),
        "",
    )
    .await;
    assert!(gone.status < 300, "{}", gone.text());
    during
        .ends_within(Duration::from_secs(2) * time_scale())
        .await
        .expect("a revoked token's stream ends");
    eprintln!("revoked stream ended after {:?}", revoked_at.elapsed());
    assert_eq!(
        get(server.http, &target, &[]).await.status,
        401,
        "a revoked token opens nothing"
    );
    server.stop().await;
}

// ---- a client that never reads ---------------------------------------------------

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {v}"))
}

/// The camera's `/stats.json` entry, asked as the admin.
async fn camera_stats(server: &TestServer) -> Value {
    let stats = with_code(server, ADMIN_CODE, "GET", "/stats.json", "")
        .await
        .json();
    stats["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "camera").cloned())
        .unwrap_or_else(|| panic!("the camera in {stats}"))
}

/// `/metrics`' `kindercam_viewers` for the camera's MJPEG clients.
async fn mjpeg_viewers(server: &TestServer) -> Option<f64> {
    let auth = basic_auth(ADMIN_CODE);
    let reply = http_request(
        server.http,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let name = "kindercam_viewers{stream=\"camera\",transport=\"mjpeg\"} ";
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_client_that_never_reads_delays_no_one_and_holds_one_frame_at_most() {
    // Large frames often, so the stalled socket fills up quickly.
    let server = start_secured(&[
        "--interval-ms",
        "40",
        "--width",
        "1280",
        "--height",
        "720",
        "--quality",
        "95",
    ])
    .await;
    let staff = [("Authorization", basic_auth(STAFF_CODE))];
    let mut ws = ws_with(&server, "/video?format=binary", &staff)
        .await
        .expect("staff may watch");
    recv_binary_frame(&mut ws).await;

    let basic = basic_auth(VIEWER_CODE);
    let stalled = request(
        server.http,
        "GET",
        "/stream.mjpg",
        &[("Authorization", &basic)],
        Some(8 * 1024),
    )
    .await;
    assert_stream_head(&stalled);
    let mut reader = get(server.http, "/stream.mjpg", &[("Authorization", &basic)]).await;
    reader.part().await;

    // The stalled client blocks mid-frame: a frame's bytes wait in the server.
    let blocked = poll_until(
        "the stalled MJPEG client to block",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let s = camera_stats(&server).await;
            (num(&s, "pending_bytes_max") >= num(&s, "frame_bytes") / 2).then_some(s)
        },
    )
    .await;
    let mut one_frame = num(&blocked, "frame_bytes");
    eprintln!("stalled: {blocked}");

    // While it stays blocked, the WebSocket viewer and the reading MJPEG client
    // get frame after frame, and what waits for the stalled one stays one frame.
    let started = Instant::now();
    let (mut ws_frames, mut mjpeg_frames) = (0, 0);
    while ws_frames < 20 || mjpeg_frames < 20 {
        tokio::select! {
            _ = recv_binary_frame(&mut ws), if ws_frames < 20 => ws_frames += 1,
            _ = reader.part(), if mjpeg_frames < 20 => mjpeg_frames += 1,
        }
        let s = camera_stats(&server).await;
        one_frame = one_frame.max(num(&s, "frame_bytes"));
        let max = num(&s, "pending_bytes_max");
        // The stalled client holds one part (the JPEG and ~100 bytes of
        // headers). The figure is the most of any client, and a reader this
        // test process is slow to drain (a loaded machine) may briefly have the
        // next part on top of the last one's unsent tail, as a trusted
        // WebSocket viewer may: two parts, 5% for frames that grew between
        // samples, never more.
        assert!(
            max <= 2 * (one_frame + 200) * 105 / 100,
            "{max} bytes pending for one client: {s}"
        );
    }
    let took = started.elapsed();
    let end = camera_stats(&server).await;
    let published = num(&end, "frames_published") - num(&blocked, "frames_published");
    eprintln!(
        "20 frames each in {took:?}, {published} published, while one MJPEG client stalled: {end}"
    );
    assert!(
        num(&end, "pending_bytes_total") >= num(&end, "frame_bytes") / 2,
        "the stalled client stayed blocked throughout: {end}"
    );
    // Each reader got (nearly) every frame published meanwhile: none waited
    // on the stalled client.
    assert!(
        20 * 10 >= published * 7,
        "20 frames read while {published} were published: the readers were delayed"
    );

    let viewers = mjpeg_viewers(&server).await;
    assert_eq!(
        viewers,
        Some(2.0),
        "both MJPEG clients counted as transport=\"mjpeg\""
    );
    drop(stalled);
    drop(reader);
    poll_until(
        "the MJPEG viewers to be gone from /metrics",
        WAIT,
        Duration::from_millis(50),
        || async { (mjpeg_viewers(&server).await == Some(0.0)).then_some(()) },
    )
    .await;
    server.stop().await;
}

/// Sends one upload and waits for its ack.
async fn upload(ws: &mut Ws, jpeg: &[u8]) {
    send_text(ws, data_url(jpeg)).await;
    let reply = recv_json(ws).await;
    assert_eq!(reply["type"], "ack", "{reply}");
}

/// Several clients of one stream: each part's JPEG is the uploaded one byte for
/// byte, while most of them went from the fan-out's pipe by reference
/// (`src/fanout/splice.rs`; WebSocket forms: tests/zero_copy.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_taken_from_the_pipe_by_reference_are_exact() {
    let server = start(&[]).await;
    let mut uploader = server.connect("/upload/x").await;
    let mut previous = noisy_jpeg(640, 480, 99);
    upload(&mut uploader, &previous).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut s = get(server.http, "/stream.mjpg?stream=x", &[]).await;
        assert_stream_head(&s);
        assert!(
            s.part().await.jpeg == previous,
            "the frame the stream holds"
        );
        clients.push(s);
    }
    const FRAMES: u64 = 5;
    for seed in 0..FRAMES as u32 {
        let jpeg = noisy_jpeg(640, 480, seed);
        upload(&mut uploader, &jpeg).await;
        for s in &mut clients {
            // A slow machine may see the last frame repeated first (a still
            // stream's once-a-second repeat), never anything else.
            loop {
                let part = s.part().await;
                if part.jpeg == jpeg {
                    break;
                }
                assert!(part.jpeg == previous, "frame {seed}: a part's JPEG differs");
            }
        }
        previous = jpeg;
    }
    let stats = poll_until(
        "the parts counted",
        WAIT,
        Duration::from_millis(50),
        || async {
            server
                .stream_stats("x")
                .await
                .filter(|s| s["frames_sent"].as_u64() >= Some(4 * (FRAMES + 1)))
        },
    )
    .await;
    let spliced = stats["frames_spliced"].as_u64().unwrap();
    assert!(spliced >= 3 * FRAMES, "parts taken by reference: {spliced}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_pause_a_family_never_gets_a_picture_taken_during_it() {
    // A still stream: a phone's broadcast, one upload at a time.
    let server = start_with(
        &[
            "--auth",
            "on",
            "--viewer-code",
            VIEWER_CODE,
            "--staff-code",
            STAFF_CODE,
            "--admin-code",
            ADMIN_CODE,
        ],
        |s| s.with_pause_minute(Duration::from_secs(60)),
    )
    .await;
    let staff = [("Authorization", basic_auth(STAFF_CODE))];
    let mut phone = ws_with(&server, "/upload/aula", &staff)
        .await
        .expect("staff broadcast");
    let before = make_jpeg(160, 120, 1);
    upload(&mut phone, &before).await;
    let (_, token) = view_token(&server, &["aula"]).await;
    let mut family = get(
        server.http,
        &format!("/stream.mjpg?stream=aula&token={token}"),
        &[],
    )
    .await;
    assert_stream_head(&family);
    assert_eq!(family.part().await.jpeg, before);

    let paused = with_code(&server, STAFF_CODE, "POST", "/api/streams/aula/pause", "").await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    loop {
        if family.part().await.jpeg != before {
            break; // the notice picture
        }
    }
    // Taken while paused: for staff only, then and afterwards.
    let private = make_jpeg(160, 120, 2);
    upload(&mut phone, &private).await;
    let resumed = with_code(&server, STAFF_CODE, "DELETE", "/api/streams/aula/pause", "").await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    // Several repeat periods pass with nothing new from the phone.
    let quiet_until = Instant::now() + Duration::from_millis(2500);
    loop {
        let left = quiet_until.saturating_duration_since(Instant::now());
        match family.part_within(left).await {
            Ok(p) => assert!(
                p.jpeg != private,
                "a picture taken during the pause reached a family"
            ),
            Err(End::TimedOut) => break,
            Err(End::Closed) => panic!("the family's stream ended"),
        }
    }
    // The next picture the phone sends is the family's again.
    let after = make_jpeg(160, 120, 3);
    upload(&mut phone, &after).await;
    loop {
        let p = family.part().await;
        assert!(
            p.jpeg != private,
            "a picture taken during the pause reached a family"
        );
        if p.jpeg == after {
            break;
        }
    }
    server.stop().await;
}
