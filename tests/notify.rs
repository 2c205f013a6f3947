//! systemd notifications as systemd would see them: a unix datagram socket made
//! here stands in for `$NOTIFY_SOCKET`. READY=1 must come only once both ports
//! answer; WATCHDOG=1 must come every half `WATCHDOG_USEC` while the daemon is
//! healthy, and stop while its frame pipeline or its runtime hangs.
//!
//! The hangs are real: the frame pipeline hangs because the runtime's only
//! blocking thread is taken, so the test pattern's encode never gets to run; the
//! runtime hangs because its only worker thread is blocked. The watchdog logic
//! is the one the daemon runs; the test only picks the socket and the timeout.
//! Every wait is a receive with a timeout, never a sleep.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self, UnixDatagram};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TempDir, WAIT};
use kindercam::hub::CAMERA;
use kindercam::notify::Notifier;
use kindercam::{Config, Server};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The `WatchdogSec=` of these tests: pings are due every 500 ms. Not shorter:
/// a frame that takes longer than the ping interval to draw and encode counts as
/// a stuck pipeline, and under qemu on a busy machine one can take 200 ms.
const WATCHDOG: Duration = Duration::from_millis(1000);
const PING: Duration = Duration::from_millis(500);

/// The test's stand-in for systemd's notification socket.
struct FakeSystemd {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` would say.
    address: String,
    _dir: Option<TempDir>,
}

impl FakeSystemd {
    /// A socket in the filesystem, as systemd uses (/run/systemd/notify).
    fn at_path(name: &str) -> FakeSystemd {
        let dir = TempDir::new(name);
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        FakeSystemd {
            socket,
            address: path.display().to_string(),
            _dir: Some(dir),
        }
    }

    /// An abstract socket: `NOTIFY_SOCKET=@name`.
    fn abstract_named(name: &str) -> FakeSystemd {
        let name = format!("kindercam-test-{}-{name}", std::process::id());
        let addr = net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        FakeSystemd {
            socket,
            address: format!("@{name}"),
            _dir: None,
        }
    }

    fn notifier(&self, watchdog: Option<Duration>) -> Notifier {
        Notifier::new(&self.address, watchdog).expect("the test socket name is valid")
    }

    /// The next datagram, or `None` once `timeout` passes without one.
    fn recv(&self, timeout: Duration) -> Option<(String, Instant)> {
        // A zero timeout would mean "block forever".
        let timeout = timeout.max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some((
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                Instant::now(),
            )),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("notify socket failed: {e}"),
        }
    }

    /// Panics if anything is waiting in the socket right now.
    fn assert_silent(&self, when: &str) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let got = self.socket.recv(&mut buf);
        self.socket.set_nonblocking(false).unwrap();
        match got {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(n) => panic!(
                "notification {:?} arrived {when}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => panic!("notify socket failed: {e}"),
        }
    }

    /// Throws away whatever already waits in the socket.
    fn drain(&self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }

    /// Waits for a datagram containing `line`, skipping others (STATUS updates,
    /// pings); returns it with its arrival time and how many pings came before it.
    fn expect(&self, line: &str, within: Duration) -> (String, Instant, usize) {
        let deadline = Instant::now() + within;
        let mut pings = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some((msg, at)) if has_line(&msg, line) => return (msg, at, pings),
                Some((msg, _)) => pings += usize::from(has_line(&msg, "WATCHDOG=1")),
                None => panic!("no {line:?} within {within:?}"),
            }
        }
    }

    /// Collects the arrival times of `n` consecutive WATCHDOG=1 pings.
    fn pings(&self, n: usize) -> Vec<Instant> {
        (0..n).map(|_| self.expect("WATCHDOG=1", WAIT).1).collect()
    }

    /// Asserts no ping comes for `quiet`; other notifications are allowed.
    fn assert_no_ping_for(&self, quiet: Duration, why: &str) {
        let deadline = Instant::now() + quiet;
        while let Some((msg, _)) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            assert!(!has_line(&msg, "WATCHDOG=1"), "pinged although {why}");
        }
    }
}

/// Whether one of the datagram's `KEY=value` lines starts with `line`.
fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l.starts_with(line))
}

/// A small, quick test pattern (a frame every 100 ms) on loopback ports.
fn config(state: &TempDir) -> Config {
    let state = state.path().display().to_string();
    let args = [
        "kindercam",
        "--http-listen",
        "127.0.0.1:0",
        "--ws-listen",
        "127.0.0.1:0",
        "--state-dir",
        &state,
        "--width",
        "160",
        "--height",
        "120",
        "--interval-ms",
        "100",
    ];
    Config::load(args, &|_| None).expect("test config is valid")
}

/// Binds a server on `rt` for `state`, reporting to `notifier`.
fn bind(rt: &Runtime, state: &TempDir, notifier: Notifier) -> Server {
    rt.block_on(Server::bind(config(state)))
        .expect("binds port 0")
        .with_notifier(notifier)
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn run(rt: &Runtime, server: Server) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = rt.spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

/// Stops the server; STOPPING=1 must be announced and the server must end cleanly.
fn stop(rt: &Runtime, running: Running, systemd: &FakeSystemd) {
    running.stop.send(()).unwrap();
    systemd.expect("STOPPING=1", WAIT);
    rt.block_on(async { tokio::time::timeout(WAIT, running.task).await })
        .expect("server stops in time")
        .expect("server task did not panic")
        .expect("server stops cleanly");
}

/// Sends `request` and returns the status line of the reply.
fn status_line(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect_timeout(&addr, WAIT).expect("port accepts connections");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while !reply.contains(&b'\n') {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no reply from {addr}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&reply);
    text.lines().next().unwrap_or_default().to_owned()
}

fn is_http_reply(status: &str) -> bool {
    status.starts_with("HTTP/1.1 ")
        && status
            .get(9..12)
            .is_some_and(|code| code.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn ready_arrives_only_once_both_ports_answer() {
    let systemd = FakeSystemd::abstract_named("ready");
    let state = TempDir::new("ready-state");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    systemd.assert_silent("before the server was even bound");
    let server = bind(&rt, &state, systemd.notifier(None));
    let (http, ws) = (server.http_addr(), server.ws_addr());
    systemd.assert_silent("after bind, before the server runs");

    let running = run(&rt, server);
    let (ready, _, _) = systemd.expect("READY=1", WAIT);
    // The moment READY=1 is read, both ports must serve, not merely be bound.
    let page = status_line(
        http,
        "GET /healthz HTTP/1.1\r\nHost: pi\r\nConnection: close\r\n\r\n",
    );
    assert!(is_http_reply(&page), "HTTP port answered {page:?}");
    let ws_reply = status_line(
        ws,
        "GET /not-a-route HTTP/1.1\r\nHost: pi\r\nConnection: close\r\n\r\n",
    );
    assert!(
        is_http_reply(&ws_reply),
        "WebSocket port answered {ws_reply:?}"
    );
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("READY=1 comes with a STATUS line");
    assert!(
        status.contains(&http.to_string()) && status.contains(&ws.to_string()),
        "status names both addresses: {status:?}"
    );
    stop(&rt, running, &systemd);
}

#[test]
fn watchdog_pings_at_half_the_timeout_and_stops_while_the_frame_pipeline_hangs() {
    let systemd = FakeSystemd::at_path("pipeline");
    let state = TempDir::new("pipeline-state");
    // One blocking thread: taking it makes the test pattern's encode wait forever,
    // which is what a hung encoder or driver call looks like to the daemon.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = bind(&rt, &state, systemd.notifier(Some(WATCHDOG)));
    let camera = server.hub().stream(CAMERA).unwrap();
    let running = run(&rt, server);
    systemd.expect("READY=1", WAIT);

    // Nobody watches: the source idles, and an idle pipeline is a healthy one.
    // Judged by the mean over the span: arrival is stamped when this thread reads
    // the datagram, and a moment's starvation can put two reads close together.
    let pings = systemd.pings(8);
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let mean = (pings[pings.len() - 1] - pings[0]) / gaps.len() as u32;
    assert!(
        mean >= PING.mul_f32(0.95) && mean <= PING.mul_f32(1.3),
        "pings come every WATCHDOG_USEC/2 ({PING:?}), on average {mean:?}: {gaps:?}"
    );
    assert!(
        *gaps.last().unwrap() < WATCHDOG,
        "never a gap that would make systemd restart us: {gaps:?}"
    );

    // Somebody watches: frames flow and the pings go on.
    let viewer = camera.watch(
        kindercam::hub::Audience::Staff,
        kindercam::hub::Transport::WsText,
    );
    let mut frames = camera.subscribe();
    rt.block_on(async {
        for _ in 0..3 {
            tokio::time::timeout(WAIT, frames.changed())
                .await
                .expect("the test pattern publishes frames")
                .unwrap();
        }
    });
    systemd.pings(3);

    // Take the only blocking thread: the next frame's encode cannot start.
    let (taken_tx, taken_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocker = rt.spawn_blocking(move || {
        taken_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    taken_rx
        .recv_timeout(WAIT)
        .expect("the blocking thread is taken");
    let (status, _, pings_before) = systemd.expect("STATUS=camera frame pipeline stuck", WAIT);
    // Read only now: an encode that was already running when the thread was taken
    // still publishes its frame just after; from the hang report on, nothing may.
    let published = camera.current().seq;
    assert!(
        pings_before <= 3,
        "pings stop within a few intervals of the hang, not {pings_before} pings later"
    );
    systemd.assert_no_ping_for(WATCHDOG * 2, "the frame pipeline hangs");
    assert_eq!(camera.current().seq, published, "really no frame came");
    assert!(status.contains("ms"), "{status}");

    // Give the thread back: the waiting encode runs and the pings resume.
    release_tx.send(()).unwrap();
    rt.block_on(blocker).unwrap();
    systemd.expect("WATCHDOG=1", WAIT);
    systemd.pings(2);
    drop(viewer);
    stop(&rt, running, &systemd);
}

#[test]
fn watchdog_stops_while_the_runtime_is_stuck() {
    let systemd = FakeSystemd::at_path("runtime");
    let state = TempDir::new("runtime-state");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = bind(&rt, &state, systemd.notifier(Some(WATCHDOG)));
    let running = run(&rt, server);
    systemd.expect("READY=1", WAIT);
    systemd.pings(2);

    // A task that blocks its worker thread, as a blocking call on the runtime would.
    let (taken_tx, taken_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocker = rt.spawn(async move {
        taken_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    taken_rx.recv_timeout(WAIT).expect("the worker is blocked");
    // A ping sent just before the block may still be in the socket.
    systemd.drain();
    systemd.assert_no_ping_for(WATCHDOG * 2, "the runtime is stuck");

    release_tx.send(()).unwrap();
    rt.block_on(blocker).unwrap();
    systemd.pings(2);
    stop(&rt, running, &systemd);
}
