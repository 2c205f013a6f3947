//! The physical floor for the fan-out benchmark: the least CPU per delivered
//! frame this machine's kernel allows a relay.
//!
//! One thread, one epoll set, nothing else: it takes `/upload/NAME` WebSocket
//! frames and writes each one (a 2-10 byte header plus the payload, one
//! `writev`) to every `/video/NAME` socket that has drained; a socket that still
//! holds part of the last frame finishes it when it drains and skips the frames
//! that came meanwhile. No runtime, no task, no allocation per viewer and frame,
//! no auth, no status, no masks, no keepalive. `kindercam-bench --kindercam
//! target/release/kindercam-floor` drives it like kindercam: it speaks the same
//! flags (ignoring those it has no use for), the start line, `/stats.json`,
//! `/healthz`, upload acks, and a close 1001 for every viewer at SIGTERM.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

static STOP: AtomicBool = AtomicBool::new(false);
/// `FLOOR_ZEROCOPY=1`: payloads of 10 KB and more go out with `MSG_ZEROCOPY`
/// (Linux 4.14), for measuring what it changes; completions are read off each
/// socket's error queue.
static ZEROCOPY: AtomicBool = AtomicBool::new(false);
/// `FLOOR_SPLICE=1`: each frame is written once into a pipe, and each viewer
/// gets it by `tee` into a scratch pipe and `splice` to its socket: the socket
/// takes references to the pipe's pages instead of a copy of the frame.
static SPLICE: AtomicBool = AtomicBool::new(false);
/// `SO_ZEROCOPY` (not in every libc crate version).
const SO_ZEROCOPY: libc::c_int = 60;
const MSG_ZEROCOPY: libc::c_int = 0x4000000;

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const PREFIX: &[u8] = b"data:image/jpeg;base64,";
const HTTP_TOKEN: u64 = u64::MAX;
const WS_TOKEN: u64 = u64::MAX - 1;

#[derive(Default)]
struct StreamStats {
    published: u64,
    sent: u64,
    skipped: u64,
}

/// A frame as it goes out: the WebSocket header and the payload.
struct Wire {
    header: [u8; 10],
    header_len: usize,
    payload: Arc<Vec<u8>>,
    /// With `FLOOR_SPLICE`: a pipe (read end, write end) holding header and payload.
    pipe: Option<(RawFd, RawFd)>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Some((r, w)) = self.pipe {
            // SAFETY: fds this wire owns.
            unsafe {
                libc::close(r);
                libc::close(w);
            }
        }
    }
}

/// A non-blocking pipe able to hold `size` bytes.
fn big_pipe(size: usize) -> Option<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on fds we own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) != 0 {
            return None;
        }
        if (libc::fcntl(fds[1], libc::F_SETPIPE_SZ, size.max(4096) as libc::c_int) as usize) < size
        {
            libc::close(fds[0]);
            libc::close(fds[1]);
            return None;
        }
    }
    Some((fds[0], fds[1]))
}

impl Wire {
    fn new(opcode: u8, payload: Arc<Vec<u8>>) -> Wire {
        let mut header = [0u8; 10];
        header[0] = 0x80 | opcode;
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if len <= 0xFFFF {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        let mut wire = Wire {
            header,
            header_len,
            payload,
            pipe: None,
        };
        if SPLICE.load(Ordering::Relaxed) {
            if let Some((r, w)) = big_pipe(wire.total()) {
                let iov = [
                    libc::iovec {
                        iov_base: wire.header.as_ptr() as *mut _,
                        iov_len: wire.header_len,
                    },
                    libc::iovec {
                        iov_base: wire.payload.as_ptr() as *mut _,
                        iov_len: wire.payload.len(),
                    },
                ];
                // SAFETY: iovecs into buffers alive for the call.
                let n = unsafe { libc::writev(w, iov.as_ptr(), 2) };
                wire.pipe = Some((r, w));
                if n as usize != wire.total() {
                    wire.pipe = None;
                    // SAFETY: fds we own.
                    unsafe {
                        libc::close(r);
                        libc::close(w);
                    }
                }
            }
        }
        wire
    }

    fn total(&self) -> usize {
        self.header_len + self.payload.len()
    }
}

enum Role {
    /// Before the handshake: the request read so far.
    Handshake(Vec<u8>),
    Viewer {
        stream: String,
        binary: bool,
        /// The frame being written and how much of it is out.
        pending: Option<(Arc<Wire>, usize)>,
        sent: u64,
        skipped: u64,
    },
    Uploader {
        stream: String,
        buf: Vec<u8>,
    },
}

struct Conn {
    sock: TcpStream,
    role: Role,
}

struct Latest {
    text: Option<Arc<Wire>>,
    binary: Option<Arc<Wire>>,
}

struct Floor {
    /// With `FLOOR_SPLICE`: the scratch pipe a frame is teed into, and /dev/null
    /// for what a socket did not take.
    scratch: Option<(RawFd, RawFd, RawFd)>,
    /// Recent frames, kept while zerocopy sends may still reference them.
    kept: std::collections::VecDeque<Arc<Wire>>,
    zerocopy_completions: u64,
    conns: HashMap<u64, Conn>,
    next: u64,
    viewers: HashMap<String, Vec<u64>>,
    latest: HashMap<String, Latest>,
    stats: HashMap<String, StreamStats>,
}

fn epoll_add(epoll: RawFd, fd: RawFd, token: u64, events: u32) {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: a valid epoll fd and event struct.
    unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help") {
        println!("kindercam-floor: --http-listen ADDR --ws-listen ADDR (other flags ignored)");
        return Ok(());
    }
    ZEROCOPY.store(
        std::env::var("FLOOR_ZEROCOPY").is_ok_and(|v| v == "1"),
        Ordering::Relaxed,
    );
    let http = TcpListener::bind(arg(&args, "--http-listen", "127.0.0.1:8080"))?;
    let ws = TcpListener::bind(arg(&args, "--ws-listen", "127.0.0.1:9000"))?;
    http.set_nonblocking(true)?;
    ws.set_nonblocking(true)?;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: plain syscall.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    epoll_add(epoll, http.as_raw_fd(), HTTP_TOKEN, libc::EPOLLIN as u32);
    epoll_add(epoll, ws.as_raw_fd(), WS_TOKEN, libc::EPOLLIN as u32);
    println!(
        "kindercam: open http://{}/ in a browser (WebSocket on {})",
        http.local_addr()?,
        ws.local_addr()?
    );
    io::stdout().flush()?;
    SPLICE.store(
        std::env::var("FLOOR_SPLICE").is_ok_and(|v| v == "1"),
        Ordering::Relaxed,
    );
    let scratch = SPLICE.load(Ordering::Relaxed).then(|| {
        let (r, w) = big_pipe(1 << 20).expect("a 1 MiB pipe");
        // SAFETY: plain syscall.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        (r, w, null)
    });
    let mut floor = Floor {
        scratch,
        kept: Default::default(),
        zerocopy_completions: 0,
        conns: HashMap::new(),
        next: 1,
        viewers: HashMap::new(),
        latest: HashMap::new(),
        stats: HashMap::new(),
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: a valid buffer of that many events.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 50) };
        for ev in &events[..n.max(0) as usize] {
            let (token, flags) = (ev.u64, ev.events);
            match token {
                HTTP_TOKEN => {
                    while let Ok((s, _)) = http.accept() {
                        serve_http(s, &floor);
                    }
                }
                WS_TOKEN => {
                    while let Ok((s, _)) = ws.accept() {
                        let _ = s.set_nonblocking(true);
                        let _ = s.set_nodelay(true);
                        let token = floor.next;
                        floor.next += 1;
                        epoll_add(
                            epoll,
                            s.as_raw_fd(),
                            token,
                            (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
                        );
                        floor.conns.insert(
                            token,
                            Conn {
                                sock: s,
                                role: Role::Handshake(Vec::new()),
                            },
                        );
                    }
                }
                token => {
                    if flags & libc::EPOLLERR as u32 != 0 && ZEROCOPY.load(Ordering::Relaxed) {
                        floor.completions(token);
                    }
                    if flags & (libc::EPOLLIN | libc::EPOLLHUP) as u32 != 0 {
                        floor.readable(token);
                    }
                    if flags & libc::EPOLLOUT as u32 != 0 {
                        floor.drain(token);
                    }
                }
            }
        }
    }
    for conn in floor.conns.values_mut() {
        if let Role::Viewer { pending: None, .. } = conn.role {
            let _ = conn.sock.write(&[0x88, 2, 0x03, 0xE9]); // close 1001
        }
    }
    Ok(())
}

fn serve_http(mut s: TcpStream, floor: &Floor) {
    let _ = s.set_nonblocking(false);
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]);
    let body = if req.starts_with("GET /stats.json") {
        let streams: Vec<String> = floor
            .stats
            .iter()
            .map(|(name, st)| {
                let viewers = floor.viewers.get(name).map_or(&[][..], Vec::as_slice);
                let (mut sent, mut skipped) = (st.sent, st.skipped);
                for t in viewers {
                    if let Some(Conn { role: Role::Viewer { sent: a, skipped: b, .. }, .. }) = floor.conns.get(t) {
                        sent += a;
                        skipped += b;
                    }
                }
                format!(
                    r#"{{"name":"{name}","viewers":{},"frames_published":{},"frames_sent":{sent},"frames_skipped":{skipped},"pending_bytes_max":0}}"#,
                    viewers.len(),
                    st.published,
                )
            })
            .collect();
        format!(r#"{{"streams":[{}]}}"#, streams.join(","))
    } else {
        r#"{"ok":true}"#.to_owned()
    };
    let _ = s.write_all(
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

impl Floor {
    fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            if let Role::Viewer {
                stream,
                sent,
                skipped,
                ..
            } = &conn.role
            {
                if let Some(v) = self.viewers.get_mut(stream) {
                    v.retain(|t| *t != token);
                }
                let st = self.stats.entry(stream.clone()).or_default();
                st.sent += sent;
                st.skipped += skipped;
            }
        }
    }

    fn readable(&mut self, token: u64) {
        let mut chunk = [0u8; 65536];
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            match conn.sock.read(&mut chunk) {
                Ok(0) => return self.close(token),
                Ok(n) => match &mut conn.role {
                    Role::Handshake(buf) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let request = std::mem::take(buf);
                            self.upgrade(token, &request);
                        } else if buf.len() > 8192 {
                            return self.close(token);
                        }
                    }
                    Role::Uploader { buf, .. } => {
                        buf.extend_from_slice(&chunk[..n]);
                        self.uploads(token);
                    }
                    Role::Viewer { .. } => {} // pongs and the like: nothing to do
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.close(token),
            }
        }
    }

    fn upgrade(&mut self, token: u64, request: &[u8]) {
        let text = String::from_utf8_lossy(request);
        let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let key = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        let (kind, stream) = match route.strip_prefix("/video/") {
            Some(name) => ("video", name.to_owned()),
            None if route == "/video" => ("video", "camera".to_owned()),
            None => match route.strip_prefix("/upload/") {
                Some(name) => ("upload", name.to_owned()),
                None => return self.close(token),
            },
        };
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        let conn = self.conns.get_mut(&token).expect("reading it");
        let _ = conn.sock.write_all(response.as_bytes());
        self.stats.entry(stream.clone()).or_default();
        if kind == "upload" {
            conn.role = Role::Uploader {
                stream,
                buf: Vec::new(),
            };
            return;
        }
        let binary = query.contains("format=binary");
        if ZEROCOPY.load(Ordering::Relaxed) {
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and an int option.
            unsafe {
                libc::setsockopt(
                    conn.sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_ZEROCOPY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        conn.role = Role::Viewer {
            stream: stream.clone(),
            binary,
            pending: None,
            sent: 0,
            skipped: 0,
        };
        self.viewers.entry(stream.clone()).or_default().push(token);
        let latest = self.latest.get(&stream).and_then(|l| {
            if binary {
                l.binary.clone()
            } else {
                l.text.clone()
            }
        });
        if let Some(wire) = latest {
            self.send(token, &wire);
        }
    }

    /// Takes whole client frames out of an uploader's buffer and relays them.
    fn uploads(&mut self, token: u64) {
        loop {
            let Some(Conn {
                role: Role::Uploader { buf, stream },
                sock,
            }) = self.conns.get_mut(&token)
            else {
                return;
            };
            if buf.len() < 2 {
                return;
            }
            let opcode = buf[0] & 0x0F;
            let (len, mut at) = match buf[1] & 0x7F {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return,
                n => (n as usize, 2),
            };
            if buf.len() < at + 4 + len {
                return;
            }
            let mask: [u8; 4] = buf[at..at + 4].try_into().unwrap();
            at += 4;
            let mut payload: Vec<u8> = buf[at..at + len].to_vec();
            buf.drain(..at + len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            if opcode == 0x8 {
                return self.close(token);
            }
            if opcode != 0x1 || !payload.starts_with(PREFIX) {
                continue;
            }
            let stream = stream.clone();
            let ack = br#"{"type":"ack"}"#;
            let mut frame = vec![0x81, ack.len() as u8];
            frame.extend_from_slice(ack);
            let _ = sock.write_all(&frame);
            self.publish(&stream, payload);
        }
    }

    /// Reads a socket's zerocopy completions off its error queue.
    fn completions(&mut self, token: u64) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let fd = conn.sock.as_raw_fd();
        let mut control = [0u8; 128];
        loop {
            // SAFETY: a msghdr with only a control buffer, which the kernel fills.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = control.len() as _;
                libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE)
            };
            if n < 0 {
                return;
            }
            self.zerocopy_completions += 1;
        }
    }

    fn publish(&mut self, stream: &str, data_url: Vec<u8>) {
        let text = Arc::new(Wire::new(0x1, Arc::new(data_url)));
        if ZEROCOPY.load(Ordering::Relaxed) {
            // Pages a zerocopy send still references must not be freed: keep
            // the last frames well past their completions.
            self.kept.push_back(text.clone());
            while self.kept.len() > 16 {
                self.kept.pop_front();
            }
        }
        let viewers = self.viewers.get(stream).cloned().unwrap_or_default();
        let needs_binary = viewers.iter().any(|t| {
            matches!(
                self.conns.get(t),
                Some(Conn {
                    role: Role::Viewer { binary: true, .. },
                    ..
                })
            )
        });
        let binary = needs_binary.then(|| {
            let jpeg = base64::engine::general_purpose::STANDARD
                .decode(&text.payload[PREFIX.len()..])
                .unwrap_or_default();
            Arc::new(Wire::new(0x2, Arc::new(jpeg)))
        });
        if let (true, Some(b)) = (ZEROCOPY.load(Ordering::Relaxed), &binary) {
            self.kept.push_back(b.clone());
        }
        self.stats.entry(stream.to_owned()).or_default().published += 1;
        self.latest.insert(
            stream.to_owned(),
            Latest {
                text: Some(text.clone()),
                binary: binary.clone(),
            },
        );
        for token in viewers {
            let wire = match self.conns.get(&token) {
                Some(Conn {
                    role: Role::Viewer { binary: true, .. },
                    ..
                }) => binary.clone(),
                Some(_) => Some(text.clone()),
                None => None,
            };
            if let Some(wire) = wire {
                self.send(token, &wire);
            }
        }
    }

    /// Starts `wire` on a viewer that has drained; a busy one skips it.
    fn send(&mut self, token: u64, wire: &Arc<Wire>) {
        let Some(Conn {
            role: Role::Viewer {
                pending, skipped, ..
            },
            ..
        }) = self.conns.get_mut(&token)
        else {
            return;
        };
        if pending.is_some() {
            *skipped += 1;
            return;
        }
        *pending = Some((wire.clone(), 0));
        self.drain(token);
    }

    /// Writes what a viewer has pending until done or the socket is full.
    fn drain(&mut self, token: u64) {
        let Some(Conn {
            sock,
            role: Role::Viewer { pending, sent, .. },
        }) = self.conns.get_mut(&token)
        else {
            return;
        };
        let fd = sock.as_raw_fd();
        if let (Some((wire, done)), Some((sr, sw, null))) = (pending.as_mut(), self.scratch) {
            if let (0, Some((pr, _))) = (*done, wire.pipe) {
                let total = wire.total();
                // SAFETY: plain syscalls on fds this floor and the wire own.
                let m = unsafe {
                    let t = libc::tee(pr, sw, total, libc::SPLICE_F_NONBLOCK);
                    if t as usize == total {
                        let m = libc::splice(
                            sr,
                            std::ptr::null_mut(),
                            fd,
                            std::ptr::null_mut(),
                            total,
                            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
                        );
                        let m = m.max(0) as usize;
                        if m < total {
                            libc::splice(
                                sr,
                                std::ptr::null_mut(),
                                null,
                                std::ptr::null_mut(),
                                total - m,
                                libc::SPLICE_F_NONBLOCK,
                            );
                        }
                        m
                    } else {
                        if t > 0 {
                            libc::splice(
                                sr,
                                std::ptr::null_mut(),
                                null,
                                std::ptr::null_mut(),
                                t as usize,
                                libc::SPLICE_F_NONBLOCK,
                            );
                        }
                        0
                    }
                };
                *done = m;
                if m == total {
                    *pending = None;
                    *sent += 1;
                    return;
                }
            }
        }
        while let Some((wire, done)) = pending {
            let total = wire.total();
            let head = &wire.header[..wire.header_len];
            let iov = if *done < head.len() {
                [
                    libc::iovec {
                        iov_base: head[*done..].as_ptr() as *mut _,
                        iov_len: head.len() - *done,
                    },
                    libc::iovec {
                        iov_base: wire.payload.as_ptr() as *mut _,
                        iov_len: wire.payload.len(),
                    },
                ]
            } else {
                let from = *done - head.len();
                [
                    libc::iovec {
                        iov_base: wire.payload[from..].as_ptr() as *mut _,
                        iov_len: wire.payload.len() - from,
                    },
                    libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    },
                ]
            };
            let zerocopy = ZEROCOPY.load(Ordering::Relaxed) && wire.payload.len() >= 10 * 1024;
            // SAFETY: the iovecs point into buffers `wire` keeps alive (and, for
            // zerocopy, `kept` for a few frames more, past their completions).
            let n = unsafe {
                if zerocopy {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                    msg.msg_iovlen = 2;
                    libc::sendmsg(fd, &msg, MSG_ZEROCOPY)
                } else {
                    libc::writev(fd, iov.as_ptr(), 2)
                }
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return;
                }
                return self.close(token);
            }
            *done += n as usize;
            if *done == total {
                *pending = None;
                *sent += 1;
                return;
            }
        }
    }
}
