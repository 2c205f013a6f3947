//! The real `kindercam` binary as a child process, for what a server inside the
//! test process cannot show: signals and exit codes, a SIGKILL, and the log an
//! installer reads. Every daemon listens on loopback port 0 and is killed when
//! dropped, so a failing test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{TempDir, WAIT};

pub const BIN: &str = env!("CARGO_BIN_EXE_kindercam");

/// A camera node's source: the test pattern at 320x240, a frame every 100 ms,
/// opened only while somebody wants it.
pub const SMALL_CAMERA: [&str; 8] = [
    "--source",
    "test-pattern",
    "--interval-ms",
    "100",
    "--width",
    "320",
    "--height",
    "240",
];

/// The binary with none of the caller's `KINDERCAM_*` variables (a developer's
/// shell must not change what a test sees).
pub fn clean_command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KINDERCAM_") {
            command.env_remove(key);
        }
    }
    command
}

/// [`clean_command`] logging at warn, with no login needed (allowed on
/// loopback) unless the flags turn it on.
pub fn quiet_command() -> Command {
    let mut command = clean_command();
    command
        .env("KINDERCAM_LOG", "warn")
        .env("KINDERCAM_AUTH", "off");
    command
}

/// One output line and when it was read.
pub type Line = (Instant, String);

/// A running binary; killed (SIGKILL) on drop.
pub struct Daemon {
    pub child: Child,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    /// Its state directory (the database), removed on drop.
    pub state: TempDir,
    /// Its output lines, stdout and stderr, as they were read.
    log: Arc<Mutex<Vec<Line>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the binary on loopback port 0 with `args`, logging at `level`,
    /// access control off unless `args` turn it on, in a new state directory;
    /// learns both ports from its start line, within [`WAIT`].
    pub fn start(level: &str, args: &[&str]) -> Daemon {
        let state = TempDir::new("daemon");
        let mut child = clean_command()
            .env("KINDERCAM_LOG", level)
            .env("KINDERCAM_AUTH", "off")
            .args(["--http-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
            .args(["--state-dir", state.path().to_str().unwrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kindercam");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push((Instant::now(), line));
            }
        });
        // The start line and the log go to stdout; read on a thread, so the wait
        // for the start line has a deadline.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push((Instant::now(), line.clone()));
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let (http, ws) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "kindercam {args:?} printed no start line within {WAIT:?}; its output:\n{}",
                    text_of(&log)
                );
            };
            if let Some(ports) = parse_start_line(&line) {
                break ports;
            }
        };
        Daemon {
            child,
            http,
            ws,
            state,
            log,
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        text_of(&self.log)
    }

    /// Its output lines containing `text`, with when each was read.
    pub fn lines_with(&self, text: &str) -> Vec<Line> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(text))
            .cloned()
            .collect()
    }

    /// Waits for the process to exit, at most `limit`. Blocks the thread.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn text_of(log: &Mutex<Vec<Line>>) -> String {
    log.lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// "kindercam: open http://127.0.0.1:PORT/ in a browser (WebSocket on 127.0.0.1:PORT)"
pub fn parse_start_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.split("http://").nth(1)?;
    let http = rest.split('/').next()?.parse().ok()?;
    let ws = line
        .split("WebSocket on ")
        .nth(1)?
        .trim_end_matches(')')
        .parse()
        .ok()?;
    Some((http, ws))
}
