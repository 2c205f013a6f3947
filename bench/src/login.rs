//! `kindercam-bench login`: what a login and a WebSocket handshake cost, for
//! daemons side by side (issue 9: families must not make them dearer).
//!
//! Each setup is a binary and, optionally, a state directory to start from (made
//! by `examples/fill_state.rs`: 200 families, 30 days of viewing log, 600 saved
//! sessions). Every round starts each setup's daemon afresh on loopback with access
//! control on, in a fresh copy of its state, and measures, one at a time and then
//! `--concurrency` at once:
//! - `--ops` logins (`POST /login`, 303 with a session cookie expected); with a
//!   state of families, every other login uses a family's code, the rest the
//!   shared viewer code;
//! - `--ops` WebSocket handshakes on `/video` and on `/chat` with the cookies of
//!   those logins (101 expected), each closed right after (close frame, then the
//!   server's close and EOF awaited, so its whole cost falls in the window).
//!
//! Per phase it reports the client's latency (p50 / p99: connect to the whole
//! 303, or to the 101 head) and the daemon's CPU per operation (utime + stime from
//! /proc/PID/stat, and schedstat nanoseconds as a finer cross-check). Setups run
//! alternately, in reversed order every other round, because the machine is
//! shared: the summary is the median over rounds.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::{self, Daemon};
use crate::procfs;

const VIEWER_CODE: &str = "bench-viewer-code-9v4k2p";
const STAFF_CODE: &str = "bench-staff-code-3m8x5t";
const ADMIN_CODE: &str = "bench-admin-code-6q7w2z";
/// One operation that takes longer than this is an error, not a figure.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// After a phase, queued work (session and viewing-log writes) gets this long to
/// finish inside the CPU window.
const SETTLE: Duration = Duration::from_millis(300);
/// Unmeasured operations of each kind before the first phase.
const WARMUP_OPS: usize = 50;

const USAGE: &str = "usage: kindercam-bench login --setup LABEL=BIN[,STATE_TEMPLATE] [--setup ...]
       [--rounds 5] [--ops 2000] [--concurrency 8] [--json OUT.json] [--markdown OUT.md]
STATE_TEMPLATE is a directory made by the fill_state example: its state/ is copied
into each run's fresh state directory, and its family-codes.txt gives the family logins.";

struct Setup {
    label: String,
    bin: PathBuf,
    template: Option<PathBuf>,
    family_codes: Vec<String>,
    /// Flags that only some binaries have (`--admin-code`).
    extra_args: Vec<String>,
}

struct Options {
    setups: Vec<Setup>,
    rounds: usize,
    ops: usize,
    concurrency: usize,
    json_out: Option<PathBuf>,
    markdown_out: Option<PathBuf>,
}

fn parse_setup(spec: &str) -> anyhow::Result<Setup> {
    let (label, rest) = spec
        .split_once('=')
        .context("a setup is LABEL=BIN[,STATE_TEMPLATE]")?;
    anyhow::ensure!(
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "setup label {label:?}: use letters, digits and '-'"
    );
    let (bin, template) = match rest.split_once(',') {
        Some((bin, t)) => (PathBuf::from(bin), Some(PathBuf::from(t))),
        None => (PathBuf::from(rest), None),
    };
    let family_codes = match &template {
        Some(t) => {
            anyhow::ensure!(
                t.join("state").is_dir(),
                "{} has no state/ directory (make it with the fill_state example)",
                t.display()
            );
            let path = t.join("family-codes.txt");
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        }
        None => Vec::new(),
    };
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .with_context(|| format!("cannot run {} --help", bin.display()))?;
    let help = String::from_utf8_lossy(&help.stdout);
    let mut extra_args = Vec::new();
    if help.contains("--admin-code") {
        extra_args.extend(["--admin-code".to_owned(), ADMIN_CODE.to_owned()]);
    }
    if template.is_some() && extra_args.is_empty() {
        bail!(
            "{}: a state of families needs a binary that has families (--admin-code)",
            bin.display()
        );
    }
    Ok(Setup {
        label: label.to_owned(),
        bin,
        template,
        family_codes,
        extra_args,
    })
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut o = Options {
        setups: Vec::new(),
        rounds: 5,
        ops: 2000,
        concurrency: 8,
        json_out: None,
        markdown_out: None,
    };
    for (flag, value) in crate::flags::pairs(args, USAGE)? {
        match flag.as_str() {
            "--setup" => o.setups.push(parse_setup(&value)?),
            "--rounds" => o.rounds = value.parse().context("--rounds")?,
            "--ops" => o.ops = value.parse().context("--ops")?,
            "--concurrency" => o.concurrency = value.parse().context("--concurrency")?,
            "--json" => o.json_out = Some(value.into()),
            "--markdown" => o.markdown_out = Some(value.into()),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    anyhow::ensure!(!o.setups.is_empty(), "at least one --setup\n{USAGE}");
    anyhow::ensure!(o.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(o.ops >= 10, "--ops must be at least 10");
    // The daemon lets 24 sockets in from one address by default.
    anyhow::ensure!(
        (1..=16).contains(&o.concurrency),
        "--concurrency must be 1-16"
    );
    Ok(o)
}

pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let opts = parse_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let work_dir =
        std::env::temp_dir().join(format!("kindercam-bench-login-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let machine = json!({
        "cpu_model": procfs::cpu_model(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_at_start": procfs::loadavg(),
        "rounds": opts.rounds,
        "ops": opts.ops,
        "concurrency": opts.concurrency,
        // SAFETY: sched_getscheduler has no memory preconditions.
        "sched_policy": match unsafe { libc::sched_getscheduler(0) } {
            libc::SCHED_FIFO => "SCHED_FIFO",
            libc::SCHED_RR => "SCHED_RR",
            _ => "SCHED_OTHER",
        },
    });
    eprintln!("machine: {machine}");
    let mut runs = Vec::new();
    for round in 0..opts.rounds {
        let order: Vec<&Setup> = if round % 2 == 0 {
            opts.setups.iter().collect()
        } else {
            opts.setups.iter().rev().collect()
        };
        for setup in order {
            eprintln!(
                "--- round {} {} (load {})",
                round + 1,
                setup.label,
                procfs::loadavg()
            );
            let dir = work_dir.join(format!("r{round}"));
            let run = runtime
                .block_on(run_setup(setup, &opts, &dir))
                .with_context(|| format!("round {} {}", round + 1, setup.label))?;
            eprintln!("{}", serde_json::to_string(&run)?);
            runs.push(run);
        }
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    let summary = summarise(&opts, &runs);
    let report = json!({"machine": machine, "summary": summary, "runs": runs});
    if let Some(path) = &opts.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let md = markdown(&opts, &summary);
    if let Some(path) = &opts.markdown_out {
        std::fs::write(path, &md)?;
    }
    println!("{md}");
    Ok(())
}

/// Copies the files of `from` (a state directory: the database and its WAL) into `to`.
fn copy_state(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    Video,
    Chat,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::Video => "handshake /video",
            Kind::Chat => "handshake /chat",
        }
    }
}

async fn run_setup(setup: &Setup, opts: &Options, dir: &Path) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    if let Some(t) = &setup.template {
        copy_state(
            &t.join("state"),
            &dir.join(format!("state-{}", setup.label)),
        )?;
    }
    // The camera's test pattern runs while /video has viewers: keep it small and
    // slow, so the window holds the handshakes' cost, not the encoder's.
    let mut args = daemon::test_pattern(5000, 320, 240);
    args.extend(["--viewer-code", VIEWER_CODE, "--staff-code", STAFF_CODE].map(String::from));
    args.extend(setup.extra_args.iter().cloned());
    let t0 = Instant::now();
    let mut d = Daemon::start(&setup.bin, &args, dir, &setup.label)?;
    daemon::get_json(d.http, "/healthz")
        .await
        .context("daemon not healthy")?;
    let start_ms = t0.elapsed().as_secs_f64() * 1e3;
    let http = d.http;
    let ws = d.ws;
    let pid = d.pid_str();
    let codes = Arc::new(setup.family_codes.clone());
    let code_for = move |i: usize| -> String {
        if !codes.is_empty() && i % 2 == 0 {
            codes[(i / 2) % codes.len()].clone()
        } else {
            VIEWER_CODE.to_owned()
        }
    };

    // Warm-up: page cache, allocator, the chat room's first opening.
    let mut warm_cookies = Vec::new();
    for i in 0..WARMUP_OPS {
        warm_cookies.push(login(http, &format!("Calor {i}"), &code_for(i)).await?.1);
    }
    for (i, cookie) in warm_cookies.iter().enumerate() {
        handshake(ws, if i % 2 == 0 { "/video" } else { "/chat" }, cookie).await?;
    }

    let mut phases = Vec::new();
    let mut cookies: Arc<Vec<String>> = Arc::new(Vec::new());
    for kind in [Kind::Login, Kind::Video, Kind::Chat] {
        for concurrency in [1, opts.concurrency] {
            let code_for = code_for.clone();
            let jar = cookies.clone();
            let result = phase(&pid, opts.ops, concurrency, move |i| {
                let code_for = code_for.clone();
                let jar = jar.clone();
                async move {
                    match kind {
                        Kind::Login => {
                            let (t, cookie) =
                                login(http, &format!("Padre {i}"), &code_for(i)).await?;
                            Ok((t, Some(cookie)))
                        }
                        Kind::Video => {
                            Ok((handshake(ws, "/video", &jar[i % jar.len()]).await?, None))
                        }
                        Kind::Chat => {
                            Ok((handshake(ws, "/chat", &jar[i % jar.len()]).await?, None))
                        }
                    }
                }
            })
            .await?;
            // The one-at-a-time logins' sessions (in login order: every other one a
            // family's) carry the handshakes.
            if kind == Kind::Login && concurrency == 1 {
                cookies = Arc::new(result.cookies.clone());
                anyhow::ensure!(!cookies.is_empty(), "no login succeeded");
            }
            phases.push(result.to_json(kind, concurrency));
        }
    }
    let vmhwm = procfs::status_field(&pid, "VmHWM").unwrap_or(0);
    let (status, exit_time) = d.terminate(Duration::from_secs(10))?;
    let warnings: Vec<String> = d
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    Ok(json!({
        "setup": setup.label,
        "binary": setup.bin.display().to_string(),
        "families": setup.family_codes.len(),
        "start_to_healthy_ms": crate::round(start_ms, 1),
        "phases": phases,
        "server_vmhwm_kib": vmhwm,
        "shutdown_ms": exit_time.as_millis() as u64,
        "shutdown_exit_ok": status.success(),
        "daemon_warnings": warnings.len(),
        "first_daemon_warnings": warnings.iter().take(3).collect::<Vec<_>>(),
    }))
}

struct PhaseResult {
    ops: usize,
    /// Microseconds of the operations that succeeded.
    latencies: Vec<u64>,
    errors: Vec<String>,
    cookies: Vec<String>,
    cpu_s: f64,
    cpu_ns_schedstat: u64,
    /// The same by thread group (see [`thread_group`]).
    cpu_ns_by_thread: BTreeMap<String, u64>,
    wall: Duration,
}

impl PhaseResult {
    fn to_json(&self, kind: Kind, concurrency: usize) -> serde_json::Value {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let done = self.ops.max(1) as f64;
        json!({
            "kind": kind.label(),
            "concurrency": concurrency,
            "ops": self.ops,
            "ok": self.latencies.len(),
            "errors": self.errors.len(),
            "first_errors": self.errors.iter().take(3).collect::<Vec<_>>(),
            "p50_ms": crate::pct_ms(&sorted, 0.50),
            "p99_ms": crate::pct_ms(&sorted, 0.99),
            "max_ms": sorted.last().map(|v| *v as f64 / 1000.0),
            "wall_s": crate::round(self.wall.as_secs_f64(), 3),
            "ops_per_s": crate::round(self.ops as f64 / self.wall.as_secs_f64(), 0),
            "server_cpu_us_per_op": crate::round(self.cpu_s / done * 1e6, 1),
            "server_cpu_us_per_op_schedstat": crate::round(self.cpu_ns_schedstat as f64 / 1e3 / done, 1),
            "server_cpu_us_per_op_by_thread": self.cpu_ns_by_thread.iter()
                .map(|(k, v)| (k.clone(), json!(crate::round(*v as f64 / 1e3 / done, 1))))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Runs `ops` operations, `concurrency` at a time; `op(i)` is the i-th one. The
/// daemon's CPU is read before the first and after the last has finished plus
/// [`SETTLE`].
async fn phase<F, Fut>(
    pid: &str,
    ops: usize,
    concurrency: usize,
    op: F,
) -> anyhow::Result<PhaseResult>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(Duration, Option<String>)>> + Send + 'static,
{
    let cpu0 = procfs::cpu(pid)?;
    let ns0 = procfs::threads_runtime_ns(pid);
    let by_thread0 = threads_by_group(pid);
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ops {
                        break;
                    }
                    let outcome = match tokio::time::timeout(OP_TIMEOUT, op(i)).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("no answer within {OP_TIMEOUT:?}")),
                    };
                    done.push((i, outcome));
                }
                done
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(ops);
    for w in workers {
        outcomes.extend(w.await?);
    }
    let wall = t0.elapsed();
    tokio::time::sleep(SETTLE).await;
    let cpu1 = procfs::cpu(pid)?;
    let ns1 = procfs::threads_runtime_ns(pid);
    let by_thread1 = threads_by_group(pid);
    outcomes.sort_by_key(|(i, _)| *i);
    let mut result = PhaseResult {
        ops,
        latencies: Vec::with_capacity(ops),
        errors: Vec::new(),
        cookies: Vec::new(),
        cpu_s: {
            let (u, s) = cpu1.since(cpu0);
            u + s
        },
        cpu_ns_schedstat: ns1.saturating_sub(ns0),
        cpu_ns_by_thread: by_thread1
            .into_iter()
            .map(|(k, v)| {
                let before = by_thread0.get(&k).copied().unwrap_or(0);
                (k, v.saturating_sub(before))
            })
            .collect(),
        wall,
    };
    for (_, outcome) in outcomes {
        match outcome {
            Ok((t, cookie)) => {
                result.latencies.push(t.as_micros() as u64);
                result.cookies.extend(cookie);
            }
            Err(e) => result.errors.push(format!("{e:#}")),
        }
    }
    Ok(result)
}

/// Threads named alike are one group: `http-0`..`http-7` are `http-*`. The
/// daemon names its tokio workers (and blocking threads) `kindercam`, the store's
/// writer is `kindercam-store`, and the main thread has the binary's file name.
fn thread_group(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{head}-*")
        }
        _ => name.to_owned(),
    }
}

fn threads_by_group(pid: &str) -> BTreeMap<String, u64> {
    let mut groups = BTreeMap::new();
    for (name, ns) in procfs::threads_runtime_ns_by_name(pid) {
        *groups.entry(thread_group(&name)).or_insert(0) += ns;
    }
    groups
}

/// `POST /login`; returns the time to the whole answer and the session cookie
/// (`kc_session=TOKEN`). Anything but a 303 to `/` with a cookie is an error.
async fn login(http: SocketAddr, name: &str, code: &str) -> anyhow::Result<(Duration, String)> {
    let body = format!("name={}&code={}", form_encode(name), form_encode(code));
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let t0 = Instant::now();
    let mut s = TcpStream::connect(http).await.context("connect")?;
    s.set_nodelay(true)?;
    s.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(1024);
    s.read_to_end(&mut answer).await?;
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let status = head.lines().next().unwrap_or("");
    anyhow::ensure!(status.contains(" 303"), "login answered {status:?}");
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    let location = header("Location").unwrap_or("");
    anyhow::ensure!(location == "/", "login sent to {location:?}");
    let cookie = header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .filter(|c| c.starts_with("kc_session="))
        .context("login set no session cookie")?;
    Ok((took, cookie.to_owned()))
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A WebSocket handshake on `path` with `cookie`; returns the time from connect
/// to the whole `101` head. Then it closes: a masked close frame, and the server's
/// messages (a status, a chat history, its close) read until it ends the connection.
async fn handshake(ws: SocketAddr, path: &str, cookie: &str) -> anyhow::Result<Duration> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Cookie: {cookie}\r\n\r\n"
    );
    let t0 = Instant::now();
    let mut s = TcpStream::connect(ws).await.context("connect")?;
    s.set_nodelay(true)?;
    s.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        anyhow::ensure!(head.len() < 8192, "handshake answer too long");
    }
    let took = t0.elapsed();
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&head);
        bail!(
            "{path}: handshake refused: {}",
            line.lines().next().unwrap_or("")
        );
    }
    // Close 1000, masked as a client must.
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let code = 1000u16.to_be_bytes();
    let close = [
        0x88,
        0x82,
        MASK[0],
        MASK[1],
        MASK[2],
        MASK[3],
        code[0] ^ MASK[0],
        code[1] ^ MASK[1],
    ];
    s.write_all(&close).await?;
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(took)
}

/// Median of the values at `key` over the runs of one setup and phase.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[values.len() / 2])
}

fn summarise(opts: &Options, runs: &[serde_json::Value]) -> serde_json::Value {
    let mut rows = Vec::new();
    for kind in [Kind::Login, Kind::Video, Kind::Chat] {
        for concurrency in [1, opts.concurrency] {
            for setup in &opts.setups {
                let phases: Vec<&serde_json::Value> = runs
                    .iter()
                    .filter(|r| r["setup"] == setup.label.as_str())
                    .flat_map(|r| r["phases"].as_array().into_iter().flatten())
                    .filter(|p| p["kind"] == kind.label() && p["concurrency"] == concurrency)
                    .collect();
                let values = |key: &str| -> Vec<f64> {
                    phases.iter().filter_map(|p| p[key].as_f64()).collect()
                };
                let cpu = values("server_cpu_us_per_op");
                let mut groups: Vec<String> = phases
                    .iter()
                    .filter_map(|p| p["server_cpu_us_per_op_by_thread"].as_object())
                    .flat_map(|m| m.keys().cloned())
                    .collect();
                groups.sort();
                groups.dedup();
                let by_thread: serde_json::Map<String, serde_json::Value> = groups
                    .into_iter()
                    .map(|g| {
                        let mut v: Vec<f64> = phases
                            .iter()
                            .map(|p| {
                                p["server_cpu_us_per_op_by_thread"][&g]
                                    .as_f64()
                                    .unwrap_or(0.0)
                            })
                            .collect();
                        (g, json!(median(&mut v)))
                    })
                    .collect();
                rows.push(json!({
                    "kind": kind.label(),
                    "concurrency": concurrency,
                    "setup": setup.label,
                    "rounds": phases.len(),
                    "p50_ms": median(&mut values("p50_ms")),
                    "p99_ms": median(&mut values("p99_ms")),
                    "ops_per_s": median(&mut values("ops_per_s")),
                    "server_cpu_us_per_op": median(&mut cpu.clone()),
                    "server_cpu_us_per_op_min": cpu.iter().cloned().reduce(f64::min),
                    "server_cpu_us_per_op_max": cpu.iter().cloned().reduce(f64::max),
                    "server_cpu_us_per_op_schedstat": median(&mut values("server_cpu_us_per_op_schedstat")),
                    "server_cpu_us_per_op_by_thread": by_thread,
                    "errors": phases.iter().map(|p| p["errors"].as_u64().unwrap_or(0)).sum::<u64>(),
                }));
            }
        }
    }
    let starts: Vec<serde_json::Value> = opts
        .setups
        .iter()
        .map(|s| {
            let mut ms: Vec<f64> = runs
                .iter()
                .filter(|r| r["setup"] == s.label.as_str())
                .filter_map(|r| r["start_to_healthy_ms"].as_f64())
                .collect();
            let hwm: Vec<f64> = runs
                .iter()
                .filter(|r| r["setup"] == s.label.as_str())
                .filter_map(|r| r["server_vmhwm_kib"].as_f64())
                .collect();
            json!({
                "setup": s.label,
                "families": s.family_codes.len(),
                "start_to_healthy_ms": median(&mut ms),
                "server_vmhwm_kib_max": hwm.iter().cloned().reduce(f64::max),
                "daemon_warnings": runs.iter().filter(|r| r["setup"] == s.label.as_str())
                    .map(|r| r["daemon_warnings"].as_u64().unwrap_or(0)).sum::<u64>(),
                "unclean_exits": runs.iter().filter(|r| r["setup"] == s.label.as_str())
                    .filter(|r| r["shutdown_exit_ok"] != true).count(),
            })
        })
        .collect();
    json!({"phases": rows, "setups": starts})
}

fn fmt(v: &serde_json::Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "–".to_owned(),
    }
}

/// The table for BENCHMARKS.md; "vs first" compares with the first `--setup`.
fn markdown(opts: &Options, summary: &serde_json::Value) -> String {
    let rows = summary["phases"].as_array().cloned().unwrap_or_default();
    let first = opts.setups[0].label.as_str();
    let mut md = String::new();
    md.push_str(&format!(
        "Medians over {} rounds of {} operations each; CPU is the daemon's utime+stime \
         (schedstat in brackets) per operation.\n\n",
        opts.rounds, opts.ops
    ));
    md.push_str(&format!(
        "| operation | at once | setup | p50 ms | p99 ms | ops/s | daemon CPU µs/op (min–max over rounds) | CPU vs {first} | errors |\n"
    ));
    md.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for r in &rows {
        let base = rows.iter().find(|b| {
            b["setup"] == first && b["kind"] == r["kind"] && b["concurrency"] == r["concurrency"]
        });
        let ratio = match (
            base.and_then(|b| b["server_cpu_us_per_op"].as_f64()),
            r["server_cpu_us_per_op"].as_f64(),
        ) {
            (Some(b), Some(v)) if b > 0.0 => format!("{:.2}x", v / b),
            _ => "–".to_owned(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) ({}–{}) | {} | {} |\n",
            r["kind"].as_str().unwrap_or(""),
            r["concurrency"],
            r["setup"].as_str().unwrap_or(""),
            fmt(&r["p50_ms"], 2),
            fmt(&r["p99_ms"], 2),
            fmt(&r["ops_per_s"], 0),
            fmt(&r["server_cpu_us_per_op"], 0),
            fmt(&r["server_cpu_us_per_op_schedstat"], 0),
            fmt(&r["server_cpu_us_per_op_min"], 0),
            fmt(&r["server_cpu_us_per_op_max"], 0),
            ratio,
            r["errors"],
        ));
    }
    md.push_str(
        "\nWhere the daemon's CPU went (schedstat µs per operation, medians; threads \
         that ended during a phase are missing):\n\n",
    );
    md.push_str(
        "| operation | at once | setup | async workers (`kindercam`) | HTTP threads (`http-*`) | store writer | other (main thread...) |\n",
    );
    md.push_str("|---|---:|---|---:|---:|---:|---:|\n");
    for r in &rows {
        let Some(groups) = r["server_cpu_us_per_op_by_thread"].as_object() else {
            continue;
        };
        let get = |g: &str| groups.get(g).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let known = ["kindercam", "http-*", "kindercam-store"];
        let other: f64 = groups
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .filter_map(|(_, v)| v.as_f64())
            .sum();
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            r["kind"].as_str().unwrap_or(""),
            r["concurrency"],
            r["setup"].as_str().unwrap_or(""),
            get(known[0]),
            get(known[1]),
            get(known[2]),
            other,
        ));
    }
    md.push_str("\n| setup | families | start to healthy ms | VmHWM max MiB | daemon warnings | unclean exits |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|\n");
    for s in summary["setups"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {} |\n",
            s["setup"].as_str().unwrap_or(""),
            s["families"],
            fmt(&s["start_to_healthy_ms"], 0),
            s["server_vmhwm_kib_max"].as_f64().unwrap_or(0.0) / 1024.0,
            s["daemon_warnings"],
            s["unclean_exits"],
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_survive_the_daemons_decoding() {
        // The daemon decodes '+' as a space and %XX as a byte (src/http parse_form).
        assert_eq!(form_encode("Padre 17"), "Padre+17");
        assert_eq!(form_encode("Pérez & hijos"), "P%C3%A9rez+%26+hijos");
        assert_eq!(
            form_encode("bench-family-0001-7kq2m9xw"),
            "bench-family-0001-7kq2m9xw"
        );
        assert_eq!(form_encode("a=b+c"), "a%3Db%2Bc");
    }

    #[test]
    fn a_setup_with_families_needs_their_codes() {
        let dir = std::env::temp_dir().join(format!("kc-bench-setup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let err = parse_setup(&format!("now=/bin/true,{}", dir.display()))
            .err()
            .expect("no family-codes.txt");
        assert!(format!("{err:#}").contains("family-codes.txt"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse_setup("bad label=/bin/true").is_err());
    }

    #[test]
    fn numbered_threads_are_one_group() {
        assert_eq!(thread_group("http-0"), "http-*");
        assert_eq!(thread_group("http-15"), "http-*");
        assert_eq!(thread_group("tokio-runtime-worker"), "tokio-runtime-worker");
        assert_eq!(thread_group("capture-camera"), "capture-camera");
        assert_eq!(thread_group("kindercam"), "kindercam");
    }
}
