//! kindercam fan-out benchmark.
//!
//! For each case it starts the real `kindercam` binary on loopback, feeds one
//! stream (our own tagged uploads to `/upload/bench`, or the daemon's own test
//! pattern on `/video`), connects N viewers, waits out a warm-up, and then for a
//! fixed window measures what the viewers received (frames, bytes, delay from
//! upload to receipt, spread between the first and the last viewer) and what the
//! daemon spent (CPU from /proc/PID/stat, RSS from /proc/PID/status). It prints
//! Markdown tables for BENCHMARKS.md and writes every figure as JSON.
//!
//! `kindercam-bench login ...` measures logins and WebSocket handshakes instead
//! (see `login.rs`).

#![recursion_limit = "256"]

mod cluster;
mod daemon;
mod flags;
mod login;
mod procfs;
mod source;
mod viewer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use daemon::Daemon;
use procfs::CpuTicks;
use source::SourceFrames;
use viewer::{Keying, Receipt, ViewerOutcome};

const STREAM: &str = "bench";
const WIDTH: usize = 640;
const HEIGHT: usize = 480;
const QUALITY: i32 = 75;
/// Distinct source pictures; uploads cycle through them (each upload's tag differs).
const SOURCE_FRAMES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// The bench uploads tagged JPEG data URLs to `/upload/bench`.
    Upload,
    /// The daemon's `--source test-pattern` renders and encodes on `camera`.
    Pattern,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    feed: Feed,
    binary: bool,
    /// MJPEG over HTTP (`/stream.mjpg`) instead of a WebSocket; kindercam only.
    mjpeg: bool,
    viewers: usize,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{}-{}-{}",
            match self.feed {
                Feed::Upload => "upload",
                Feed::Pattern => "pattern",
            },
            self.format(),
            self.viewers
        )
    }

    fn format(&self) -> &'static str {
        match (self.mjpeg, self.binary) {
            (true, _) => "mjpeg",
            (false, true) => "binary",
            (false, false) => "text",
        }
    }

    fn viewer_path(&self) -> String {
        if self.mjpeg {
            return match self.feed {
                Feed::Upload => format!("/stream.mjpg?stream={STREAM}"),
                Feed::Pattern => "/stream.mjpg".to_owned(),
            };
        }
        let base = match self.feed {
            Feed::Upload => format!("/video/{STREAM}"),
            Feed::Pattern => "/video".to_owned(),
        };
        if self.binary {
            format!("{base}?format=binary")
        } else {
            base
        }
    }
}

struct Options {
    kindercam: PathBuf,
    cases: Vec<Case>,
    warmup: Duration,
    window: Duration,
    interval: Duration,
    client_threads: usize,
    json_out: Option<PathBuf>,
    markdown_out: Option<PathBuf>,
    /// Flags that let 500 loopback viewers in, for daemons that have them.
    extra_daemon_args: Vec<String>,
}

const USAGE: &str =
    "usage: kindercam-bench --kindercam PATH [--cases SPEC] [--warmup-s 3] [--window-s 15]
       [--interval-ms 100] [--client-threads 1] [--json OUT.json] [--markdown OUT.md]
       kindercam-bench login --help   (logins and handshakes, see bench/login.sh)
       kindercam-bench cluster --help (two relays on NATS fed by a pushing camera, bench/cluster.sh)
SPEC: space- or semicolon-separated FEED-FORMAT:N,N,... with FEED upload|pattern and
FORMAT text|binary|mjpeg (MJPEG over HTTP, kindercam only), e.g. \"upload-text:0,10,100,500;pattern-binary:500\"";

const DEFAULT_CASES: &str =
    "upload-text:0,10,100,500;upload-binary:10,100,500;pattern-text:1,10,100,500;pattern-binary:500";

fn parse_cases(spec: &str) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for part in spec.split([';', ' ']).filter(|p| !p.is_empty()) {
        let (kind, counts) = part
            .split_once(':')
            .context("a case needs FEED-FORMAT:N,...")?;
        let (feed, binary, mjpeg) = match kind {
            "upload-text" => (Feed::Upload, false, false),
            "upload-binary" => (Feed::Upload, true, false),
            "upload-mjpeg" => (Feed::Upload, true, true),
            "pattern-text" => (Feed::Pattern, false, false),
            "pattern-binary" => (Feed::Pattern, true, false),
            "pattern-mjpeg" => (Feed::Pattern, true, true),
            other => bail!("unknown case kind {other:?}"),
        };
        for n in counts.split(',') {
            let viewers: usize = n
                .trim()
                .parse()
                .with_context(|| format!("bad viewer count {n:?}"))?;
            if feed == Feed::Pattern && viewers == 0 {
                bail!("the test pattern idles without viewers; use N >= 1");
            }
            cases.push(Case {
                feed,
                binary,
                mjpeg,
                viewers,
            });
        }
    }
    Ok(cases)
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        kindercam: PathBuf::new(),
        cases: parse_cases(DEFAULT_CASES)?,
        warmup: Duration::from_secs(3),
        window: Duration::from_secs(15),
        interval: Duration::from_millis(100),
        client_threads: 1,
        json_out: None,
        markdown_out: None,
        extra_daemon_args: Vec::new(),
    };
    for (flag, value) in flags::pairs(std::env::args().skip(1), USAGE)? {
        match flag.as_str() {
            "--kindercam" => o.kindercam = value.into(),
            "--cases" => o.cases = parse_cases(&value)?,
            "--warmup-s" => o.warmup = flags::secs(&value)?,
            "--window-s" => o.window = flags::secs(&value)?,
            "--interval-ms" => o.interval = Duration::from_millis(value.parse()?),
            "--client-threads" => o.client_threads = value.parse()?,
            "--json" => o.json_out = Some(value.into()),
            "--markdown" => o.markdown_out = Some(value.into()),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if o.kindercam.as_os_str().is_empty() {
        bail!("--kindercam PATH is required\n{USAGE}");
    }
    anyhow::ensure!(o.client_threads >= 1, "--client-threads must be at least 1");
    o.extra_daemon_args = daemon_access_args(&o.kindercam)?;
    Ok(o)
}

/// All viewers come from 127.0.0.1 without credentials: switch off access control
/// (allowed on loopback) and the per-address connection cap where the daemon has
/// them. Neither is on the per-frame path; both act once, at the handshake.
fn daemon_access_args(bin: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("cannot run {} --help", bin.display()))?;
    let help = String::from_utf8_lossy(&help.stdout);
    let mut args = Vec::new();
    if help.contains("--auth ") {
        args.extend(["--auth".to_owned(), "off".to_owned()]);
    }
    if help.contains("--max-connections-per-ip") {
        args.extend(["--max-connections-per-ip".to_owned(), "0".to_owned()]);
    }
    Ok(args)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("kindercam-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("login") => return login::main(std::env::args().skip(2)),
        Some("cluster") => return cluster::main(std::env::args().skip(2)),
        _ => {}
    }
    let opts = parse_args()?;
    let nofile = procfs::raise_nofile_limit();
    let most = opts.cases.iter().map(|c| c.viewers).max().unwrap_or(0);
    anyhow::ensure!(
        nofile as usize > most + 64,
        "open-file limit {nofile} is too low for {most} viewers"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .enable_all()
        .build()?;
    let t = Instant::now();
    let frames = Arc::new(SourceFrames::generate(
        SOURCE_FRAMES,
        WIDTH,
        HEIGHT,
        QUALITY,
    )?);
    let mean_jpeg = frames.jpeg_bytes.iter().sum::<usize>() / frames.jpeg_bytes.len();
    eprintln!(
        "source: {SOURCE_FRAMES} distinct {WIDTH}x{HEIGHT} q{QUALITY} JPEGs, mean {mean_jpeg} bytes \
         (data URL {} bytes), made in {:.1?}",
        frames.data_url_bytes(0),
        t.elapsed()
    );
    let work_dir = std::env::temp_dir().join(format!("kindercam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let machine = json!({
        "cpu_model": procfs::cpu_model(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_at_start": procfs::loadavg(),
        "nofile_limit": nofile,
        "client_threads": opts.client_threads,
        "warmup_s": opts.warmup.as_secs_f64(),
        "window_s": opts.window.as_secs_f64(),
        "interval_ms": opts.interval.as_millis() as u64,
        "source_jpeg_mean_bytes": mean_jpeg,
        "daemon_extra_args": opts.extra_daemon_args,
        // SAFETY: getpriority / sched_getscheduler have no memory preconditions.
        "nice": unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        "sched_policy": match unsafe { libc::sched_getscheduler(0) } {
            libc::SCHED_FIFO => "SCHED_FIFO",
            libc::SCHED_RR => "SCHED_RR",
            _ => "SCHED_OTHER",
        },
    });
    eprintln!("machine: {machine}");
    let mut results = Vec::new();
    for case in &opts.cases {
        eprintln!("--- {} (load {})", case.label(), procfs::loadavg());
        let result = runtime
            .block_on(run_case(*case, &opts, frames.clone(), &work_dir))
            .with_context(|| format!("case {}", case.label()))?;
        eprintln!("{}", serde_json::to_string(&result)?);
        results.push(result);
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    let report = json!({"machine": machine, "cases": results});
    if let Some(path) = &opts.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let md = markdown(&report);
    if let Some(path) = &opts.markdown_out {
        std::fs::write(path, &md)?;
    }
    println!("{md}");
    Ok(())
}

/// Process figures at one instant.
struct Sample {
    at: Instant,
    server: CpuTicks,
    server_ns: u64,
    bench: CpuTicks,
    machine: (u64, u64),
    stats: serde_json::Value,
}

async fn sample(d: &Daemon) -> anyhow::Result<Sample> {
    let stats = daemon::get_json(d.http, "/stats.json").await?;
    Ok(Sample {
        at: Instant::now(),
        server: procfs::cpu(&d.pid_str())?,
        server_ns: procfs::threads_runtime_ns(&d.pid_str()),
        bench: procfs::cpu("self")?,
        machine: procfs::machine_cpu()?,
        stats,
    })
}

async fn run_case(
    case: Case,
    opts: &Options,
    frames: Arc<SourceFrames>,
    work_dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let mut args = daemon::test_pattern(opts.interval.as_millis(), 640, 480);
    args.extend(opts.extra_daemon_args.iter().cloned());
    let mut d = Daemon::start(&opts.kindercam, &args, work_dir, &case.label())?;
    let pid = d.pid_str();
    daemon::get_json(d.http, "/healthz")
        .await
        .context("daemon not healthy")?;
    let rss_idle = procfs::status_field(&pid, "VmRSS").unwrap_or(0);

    // Source first, so viewers join a live stream.
    let (stop_tx, stop_rx) = watch::channel(false);
    let uploader = if case.feed == Feed::Upload {
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(source::upload(
            d.ws,
            STREAM,
            frames.clone(),
            opts.interval,
            stop_rx.clone(),
            ready_tx,
        ));
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("no ack for the first upload within 10 s")?
            .context("uploader ended before its first ack")?;
        Some(task)
    } else {
        None
    };

    let keying = match case.feed {
        Feed::Upload => Keying::Tagged,
        Feed::Pattern => Keying::Sampled,
    };
    let (viewer_stop_tx, viewer_stop_rx) = watch::channel(false);
    let (conn_tx, mut conn_rx) = mpsc::channel(case.viewers.max(1));
    let join_started = Instant::now();
    let viewers: Vec<_> = (0..case.viewers)
        .map(|_| {
            tokio::spawn(viewer::run(
                if case.mjpeg { d.http } else { d.ws },
                case.viewer_path(),
                keying,
                conn_tx.clone(),
                viewer_stop_rx.clone(),
            ))
        })
        .collect();
    drop(conn_tx);
    let mut connect_errors = Vec::new();
    for _ in 0..case.viewers {
        match tokio::time::timeout(Duration::from_secs(30), conn_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => connect_errors.push(format!("{e:#}")),
            Ok(None) | Err(_) => {
                connect_errors.push("viewer did not finish its handshake within 30 s".into());
                break;
            }
        }
    }
    let join_time = join_started.elapsed();
    if !connect_errors.is_empty() {
        eprintln!(
            "  {} viewers failed to connect: {}",
            connect_errors.len(),
            connect_errors[0]
        );
    }

    tokio::time::sleep(opts.warmup).await;
    let start = sample(&d).await?;
    let mut rss_max = 0u64;
    let mut threads_max = 0u64;
    let deadline = start.at + opts.window;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        rss_max = rss_max.max(procfs::status_field(&pid, "VmRSS").unwrap_or(0));
        threads_max = threads_max.max(procfs::status_field(&pid, "Threads").unwrap_or(0));
    }
    let end = sample(&d).await?;
    let rss_end = procfs::status_field(&pid, "VmRSS").unwrap_or(0);
    let rss_hwm = procfs::status_field(&pid, "VmHWM").unwrap_or(0);

    // Shutdown under load: SIGTERM with every viewer still connected; they should
    // each get close 1001 and the daemon should exit 0 within about a second.
    let _ = stop_tx.send(true);
    let upload = match uploader {
        Some(task) => Some(task.await??),
        None => None,
    };
    let (status, exit_time) = d.terminate(Duration::from_secs(10))?;
    let mut outcomes: Vec<ViewerOutcome> = Vec::with_capacity(viewers.len());
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for v in viewers {
        let v = match tokio::time::timeout_at(drain_deadline, v).await {
            Ok(joined) => joined?,
            Err(_) => {
                let _ = viewer_stop_tx.send(true);
                bail!("a viewer did not notice the daemon exit within 3 s");
            }
        };
        outcomes.push(v);
    }
    let log = d.log_lines();
    Ok(analyse(Analysis {
        case,
        opts,
        frames: &frames,
        start,
        end,
        outcomes,
        upload,
        rss_idle,
        rss_max: rss_max.max(rss_end),
        rss_hwm,
        threads_max,
        join_time,
        connect_errors,
        exit_ok: status.success(),
        exit_time,
        log,
    }))
}

struct Analysis<'a> {
    case: Case,
    opts: &'a Options,
    frames: &'a SourceFrames,
    start: Sample,
    end: Sample,
    outcomes: Vec<ViewerOutcome>,
    upload: Option<source::UploadOutcome>,
    rss_idle: u64,
    rss_max: u64,
    rss_hwm: u64,
    threads_max: u64,
    join_time: Duration,
    connect_errors: Vec<String>,
    exit_ok: bool,
    exit_time: Duration,
    log: Vec<String>,
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct_ms(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn analyse(a: Analysis) -> serde_json::Value {
    let (t0, t1) = (a.start.at, a.end.at);
    let window = (t1 - t0).as_secs_f64();
    let in_window = |r: &Receipt| r.at >= t0 && r.at < t1;
    let n = a.case.viewers;

    // First receipt of each frame by any viewer, for the fan-out spread.
    let mut first: HashMap<u64, Instant> = HashMap::new();
    for r in a.outcomes.iter().flat_map(|o| &o.receipts) {
        first
            .entry(r.key)
            .and_modify(|t| *t = (*t).min(r.at))
            .or_insert(r.at);
    }
    let mut delays = Vec::new();
    let mut spreads = Vec::new();
    let (mut frames, mut bytes, mut gaps, mut reorders) = (0u64, 0u64, 0u64, 0u64);
    let mut per_viewer_fps = Vec::with_capacity(n);
    for o in &a.outcomes {
        let mut mine = 0u64;
        let mut prev: Option<u64> = None;
        for r in o.receipts.iter().filter(|r| in_window(r)) {
            mine += 1;
            bytes += u64::from(r.bytes);
            spreads.push((r.at - first[&r.key]).as_micros() as u64);
            if let Some(up) = &a.upload {
                if let Some(sent) = up.sent.get((r.key as usize).wrapping_sub(1)) {
                    delays.push(r.at.saturating_duration_since(*sent).as_micros() as u64);
                }
                if let Some(p) = prev {
                    if r.key > p {
                        gaps += r.key - p - 1;
                    } else {
                        reorders += 1;
                    }
                }
                prev = Some(r.key);
            }
        }
        frames += mine;
        per_viewer_fps.push(mine as f64 / window);
    }
    delays.sort_unstable();
    spreads.sort_unstable();

    let stream_name = match a.case.feed {
        Feed::Upload => STREAM,
        Feed::Pattern => "camera",
    };
    let s0 = daemon::stream_stats(&a.start.stats, stream_name)
        .cloned()
        .unwrap_or_default();
    let s1 = daemon::stream_stats(&a.end.stats, stream_name)
        .cloned()
        .unwrap_or_default();
    let delta = |k: &str| {
        s1[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(s0[k].as_u64().unwrap_or(0))
    };
    let published = match &a.upload {
        Some(up) => up.sent.iter().filter(|t| **t >= t0 && **t < t1).count() as u64,
        None => delta("frames_published"),
    };
    let (su, ss) = a.end.server.since(a.start.server);
    let (bu, bs) = a.end.bench.since(a.start.bench);
    let (mb0, mt0) = a.start.machine;
    let (mb1, mt1) = a.end.machine;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let machine_busy = (mb1 - mb0) as f64 / (mt1 - mt0).max(1) as f64 * 100.0 * cores;
    let server_cpu = (su + ss) / window * 100.0;
    let server_ns = a.end.server_ns.saturating_sub(a.start.server_ns);
    let min_fps = per_viewer_fps.iter().cloned().fold(f64::INFINITY, f64::min);
    let statuses: usize = a.outcomes.iter().map(|o| o.statuses.len()).sum();
    let mut status_kinds: Vec<&String> = a.outcomes.iter().flat_map(|o| &o.statuses).collect();
    status_kinds.sort();
    status_kinds.dedup();
    status_kinds.truncate(5);
    let bad: u32 = a.outcomes.iter().map(|o| o.bad).sum();
    let closes_1001 = a
        .outcomes
        .iter()
        .filter(|o| o.close_code == Some(1001))
        .count();
    let viewer_errors: Vec<&String> = a.outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let payload_wire = bytes.checked_div(frames).unwrap_or(0);
    // The daemon warns once that access control is off: that is the bench's own choice.
    let warn_lines: Vec<&String> = a
        .log
        .iter()
        .filter(|l| {
            (l.contains("WARN") || l.contains("ERROR")) && !l.contains("access control is off")
        })
        .collect();

    json!({
        "case": a.case.label(),
        "feed": match a.case.feed { Feed::Upload => "upload", Feed::Pattern => "test-pattern" },
        "format": a.case.format(),
        "viewers": n,
        "window_s": round(window, 2),
        "published_fps": round(published as f64 / window, 2),
        "delivered_fps_total": round(frames as f64 / window, 1),
        "delivered_fps_per_viewer_mean": if n > 0 { round(frames as f64 / window / n as f64, 2) } else { 0.0 },
        "delivered_fps_per_viewer_min": if n > 0 { round(min_fps, 2) } else { 0.0 },
        "delivery_ratio": if published > 0 && n > 0 { round(frames as f64 / (published as f64 * n as f64), 4) } else { 0.0 },
        // Only uploads carry sequence numbers; test-pattern skips are the server's count.
        "skipped_seen_by_viewers": a.upload.as_ref().map(|_| gaps),
        "reordered_or_duplicate": reorders,
        "skipped_reported_by_server": delta("frames_skipped"),
        "pending_bytes_max_at_end": s1["pending_bytes_max"],
        "wire_bytes_per_frame": payload_wire,
        "source_jpeg_bytes_mean": a.frames.jpeg_bytes.iter().sum::<usize>() / a.frames.jpeg_bytes.len(),
        "frame_bytes_server": s1["frame_bytes"],
        "delay_ms": {
            "p50": pct_ms(&delays, 0.50), "p90": pct_ms(&delays, 0.90), "p99": pct_ms(&delays, 0.99),
            "max": delays.last().map(|v| *v as f64 / 1000.0), "samples": delays.len(),
        },
        "spread_ms": {
            "p50": pct_ms(&spreads, 0.50), "p99": pct_ms(&spreads, 0.99),
            "max": spreads.last().map(|v| *v as f64 / 1000.0),
        },
        "server_cpu_pct": round(server_cpu, 1),
        "server_cpu_user_pct": round(su / window * 100.0, 1),
        "server_cpu_sys_pct": round(ss / window * 100.0, 1),
        "server_cpu_pct_schedstat": round(server_ns as f64 / 1e9 / window * 100.0, 2),
        "server_cpu_us_per_delivered_frame": if frames > 0 { Some(round((su + ss) / frames as f64 * 1e6, 1)) } else { None },
        "server_cpu_us_per_published_frame": if published > 0 { Some(round((su + ss) / published as f64 * 1e6, 0)) } else { None },
        // The same from schedstat's nanoseconds: precise where a few 10 ms ticks are not.
        "server_cpu_us_per_delivered_frame_ns": if frames > 0 { Some(round(server_ns as f64 / 1e3 / frames as f64, 2)) } else { None },
        "server_cpu_us_per_published_frame_ns": if published > 0 { Some(round(server_ns as f64 / 1e3 / published as f64, 1)) } else { None },
        "server_rss_idle_kib": a.rss_idle,
        "server_rss_max_kib": a.rss_max,
        "server_vmhwm_kib": a.rss_hwm,
        "server_threads_max": a.threads_max,
        "bench_cpu_pct": round((bu + bs) / window * 100.0, 1),
        "bench_cpu_sys_pct": round(bs / window * 100.0, 1),
        "machine_busy_pct": round(machine_busy, 1),
        "machine_other_pct": round((machine_busy - server_cpu - (bu + bs) / window * 100.0).max(0.0), 1),
        "join_time_ms": a.join_time.as_millis() as u64,
        "connect_errors": a.connect_errors.len(),
        "first_connect_error": a.connect_errors.first(),
        "status_messages": statuses,
        "status_kinds": status_kinds,
        "bad_messages": bad,
        "viewer_errors": viewer_errors.len(),
        "first_viewer_error": viewer_errors.first(),
        "upload_acks": a.upload.as_ref().map(|u| u.acks),
        "upload_sent": a.upload.as_ref().map(|u| u.sent.len()),
        "upload_errors": a.upload.as_ref().map(|u| u.errors.len()),
        "first_upload_error": a.upload.as_ref().and_then(|u| u.errors.first().cloned()),
        "shutdown_ms": a.exit_time.as_millis() as u64,
        "shutdown_exit_ok": a.exit_ok,
        "viewers_closed_1001": closes_1001,
        "pings_answered": a.outcomes.iter().map(|o| u64::from(o.pings_answered)).sum::<u64>(),
        "daemon_warnings": warn_lines.len(),
        "first_daemon_warning": warn_lines.first(),
        "interval_ms": a.opts.interval.as_millis() as u64,
    })
}

fn f(v: &serde_json::Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "–".to_owned(),
    }
}

fn mib(v: &serde_json::Value) -> String {
    format!("{:.1}", v.as_f64().unwrap_or(0.0) / 1024.0)
}

/// The tables for BENCHMARKS.md.
fn markdown(report: &serde_json::Value) -> String {
    let cases = report["cases"].as_array().cloned().unwrap_or_default();
    let mut md = String::new();
    md.push_str("| feed | format | N | published fps | delivered fps total | per viewer mean / min | delay p50 / p99 / max ms | spread p50 / p99 ms | server CPU % (user+sys) | server RSS idle / window max / VmHWM MiB | bench CPU % | machine busy % (other processes) |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for c in &cases {
        let delay = if c["delay_ms"]["p50"].is_null() {
            "–".to_owned()
        } else {
            format!(
                "{} / {} / {}",
                f(&c["delay_ms"]["p50"], 1),
                f(&c["delay_ms"]["p99"], 1),
                f(&c["delay_ms"]["max"], 1)
            )
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} ({}+{}) | {} / {} / {} | {} | {} ({}) |\n",
            c["feed"].as_str().unwrap_or(""),
            c["format"].as_str().unwrap_or(""),
            c["viewers"],
            f(&c["published_fps"], 2),
            f(&c["delivered_fps_total"], 1),
            f(&c["delivered_fps_per_viewer_mean"], 2),
            f(&c["delivered_fps_per_viewer_min"], 2),
            delay,
            f(&c["spread_ms"]["p50"], 1),
            f(&c["spread_ms"]["p99"], 1),
            f(&c["server_cpu_pct"], 1),
            f(&c["server_cpu_user_pct"], 1),
            f(&c["server_cpu_sys_pct"], 1),
            mib(&c["server_rss_idle_kib"]),
            mib(&c["server_rss_max_kib"]),
            mib(&c["server_vmhwm_kib"]),
            f(&c["bench_cpu_pct"], 1),
            f(&c["machine_busy_pct"], 0),
            f(&c["machine_other_pct"], 0),
        ));
    }
    md.push_str("\nPer frame, text (base64 data URL) vs binary (`?format=binary`):\n\n");
    md.push_str("| feed | format | N | wire bytes / frame | server CPU µs / delivered frame (schedstat) | server CPU µs / published frame (schedstat) | skipped (viewers / server) | shutdown ms, closes 1001 |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for c in &cases {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {}, {}/{} |\n",
            c["feed"].as_str().unwrap_or(""),
            c["format"].as_str().unwrap_or(""),
            c["viewers"],
            c["wire_bytes_per_frame"],
            f(&c["server_cpu_us_per_delivered_frame_ns"], 1),
            f(&c["server_cpu_us_per_published_frame_ns"], 0),
            if c["skipped_seen_by_viewers"].is_null() {
                "–".to_owned()
            } else {
                c["skipped_seen_by_viewers"].to_string()
            },
            c["skipped_reported_by_server"],
            c["shutdown_ms"],
            c["viewers_closed_1001"],
            c["viewers"],
        ));
    }
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let issues = [
                ("connect errors", &c["connect_errors"]),
                ("bad messages", &c["bad_messages"]),
                ("viewer errors", &c["viewer_errors"]),
                ("upload errors", &c["upload_errors"]),
                ("daemon warnings", &c["daemon_warnings"]),
            ];
            let found: Vec<String> = issues
                .iter()
                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let exit = if c["shutdown_exit_ok"] == true {
                ""
            } else {
                " (daemon exit not 0)"
            };
            (!found.is_empty() || !exit.is_empty()).then(|| {
                format!(
                    "- {}: {}{exit}",
                    c["case"].as_str().unwrap_or(""),
                    found.join(", ")
                )
            })
        })
        .collect();
    if !problems.is_empty() {
        md.push_str("\nProblems seen:\n\n");
        md.push_str(&problems.join("\n"));
        md.push('\n');
    }
    md
}
