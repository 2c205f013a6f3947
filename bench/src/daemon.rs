//! The `kindercam` release binary as a subprocess: started on loopback port 0,
//! its addresses read from the line it prints, its `/stats.json` fetched over
//! plain HTTP, and stopped with SIGTERM the way systemd would.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub stdout_log: PathBuf,
}

impl Daemon {
    pub fn start(
        bin: &Path,
        args: &[String],
        work_dir: &Path,
        label: &str,
    ) -> anyhow::Result<Daemon> {
        let state = work_dir.join(format!("state-{label}"));
        std::fs::create_dir_all(&state)?;
        let log = work_dir.join(format!("{label}.log"));
        let stderr = std::fs::File::create(&log)?;
        let mut child = Command::new(bin)
            .args(["--http-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            // Per-connection info lines would cost the server CPU we are measuring.
            .env("KINDERCAM_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id();
        // Logs may go to stdout too: keep draining it into the log file (a full pipe
        // would stall the daemon) and pick out the line with the addresses.
        let stdout = child.stdout.take().expect("piped");
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        let out_log = work_dir.join(format!("{label}.stdout.log"));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(out_log).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("kindercam: open ") {
                    let _ = line_tx.send(line.clone());
                }
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let line = line_rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_default();
        // "kindercam: open http://ADDR/ in a browser (WebSocket on ADDR)"
        let parsed = (|| {
            let http = line
                .split("http://")
                .nth(1)?
                .split('/')
                .next()?
                .parse()
                .ok()?;
            let ws = line
                .split("WebSocket on ")
                .nth(1)?
                .trim()
                .trim_end_matches(')')
                .parse()
                .ok()?;
            Some((http, ws))
        })();
        let Some((http, ws)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("kindercam did not print its addresses (got {line:?}); log:\n{log_text}");
        };
        Ok(Daemon {
            child,
            pid,
            ws,
            http,
            log,
            stdout_log: work_dir.join(format!("{label}.stdout.log")),
        })
    }

    pub fn pid_str(&self) -> String {
        self.pid.to_string()
    }

    /// SIGTERM, then waits for the exit; returns its status and how long it took.
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let t0 = Instant::now();
        // SAFETY: signalling our own child, whose pid cannot have been reused
        // before we wait() on it.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, t0.elapsed()));
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let status = self.child.wait()?;
                bail!("kindercam ignored SIGTERM for {limit:?}; killed ({status})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lines of the daemon's log at WARN level or above (it runs with KINDERCAM_LOG=warn).
    pub fn log_lines(&self) -> Vec<String> {
        [&self.log, &self.stdout_log]
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The daemon's own camera: the test pattern at `width` x `height`, a frame every
/// `interval_ms`, JPEG quality 75 (the default, said so the figures do not move
/// with it).
pub fn test_pattern(interval_ms: u128, width: u32, height: u32) -> Vec<String> {
    [
        "--source",
        "test-pattern",
        "--interval-ms",
        &interval_ms.to_string(),
        "--width",
        &width.to_string(),
        "--height",
        &height.to_string(),
        "--quality",
        "75",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// GET a JSON document from the daemon's HTTP server.
pub async fn get_json(http: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let fetch = async {
        let mut s = TcpStream::connect(http).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {http}\r\n\r\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await?;
        let text = String::from_utf8(body)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{path}: {head}"
        );
        Ok::<_, anyhow::Error>(serde_json::from_str(body)?)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .with_context(|| format!("{path} timed out"))?
}

/// One stream's entry of `/stats.json`.
pub fn stream_stats<'a>(stats: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    stats["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}
