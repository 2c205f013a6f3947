//! `kindercam-bench cluster`: the relay tier of issue 13, measured end to end.
//!
//! One camera kindercam (the test pattern, as a Pi would run it) pushes its stream
//! to relay 1 (`--push-to`, relay 2 as its failover); relays 1 and 2 share frames
//! through a 3-node NATS cluster (`--nats`). N viewers join each relay, and one
//! reference viewer watches the camera itself. A frame is known by a sampled hash
//! of its JPEG bytes, which pass through the push, NATS and both relays unchanged,
//! so each relay viewer's delay is its receipt time minus the reference viewer's
//! receipt of the same frame on the camera: the path Pi → relay 1 → NATS →
//! relay 2 → phone, less the camera's own local fan-out to one socket.
//!
//! It reports frames delivered per relay, delay p50/p99 per relay, CPU per
//! kindercam node and per nats-server, and peak memory, as JSON and Markdown.
//! Everything runs on loopback, bounded in time; every process is killed on exit.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::daemon::{self, Daemon};
use crate::flags;
use crate::procfs::{self, CpuTicks};
use crate::viewer::{self, Keying, ViewerOutcome};

const USAGE: &str =
    "usage: kindercam-bench cluster --kindercam PATH [--viewers 1000] [--warmup-s 5]
       [--window-s 10] [--interval-ms 100] [--nats-server nats-server] [--json OUT.json]
       [--markdown OUT.md]
N viewers join each of two relays; one camera pushes a 640x480 test pattern to relay 1.";

/// The stream's name on the relays (the camera's own stream is `camera`).
const STREAM: &str = "aula-1";

struct Options {
    kindercam: PathBuf,
    nats_server: PathBuf,
    viewers: usize,
    warmup: Duration,
    window: Duration,
    interval: Duration,
    json_out: Option<PathBuf>,
    markdown_out: Option<PathBuf>,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut o = Options {
        kindercam: PathBuf::new(),
        nats_server: PathBuf::from("nats-server"),
        viewers: 1000,
        warmup: Duration::from_secs(5),
        window: Duration::from_secs(10),
        interval: Duration::from_millis(100),
        json_out: None,
        markdown_out: None,
    };
    for (flag, value) in flags::pairs(args, USAGE)? {
        match flag.as_str() {
            "--kindercam" => o.kindercam = value.into(),
            "--nats-server" => o.nats_server = value.into(),
            "--viewers" => o.viewers = value.parse()?,
            "--warmup-s" => o.warmup = flags::secs(&value)?,
            "--window-s" => o.window = flags::secs(&value)?,
            "--interval-ms" => o.interval = Duration::from_millis(value.parse()?),
            "--json" => o.json_out = Some(value.into()),
            "--markdown" => o.markdown_out = Some(value.into()),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if o.kindercam.as_os_str().is_empty() {
        bail!("--kindercam PATH is required\n{USAGE}");
    }
    Ok(o)
}

/// A free loopback port, as the kernel hands one out (released at once, so a
/// server started right after can bind it).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One nats-server of the 3-node JetStream cluster.
struct NatsNode {
    child: Child,
    client_port: u16,
    monitor_port: u16,
}

impl NatsNode {
    fn pid_str(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nats(bin: &Path, work_dir: &Path) -> anyhow::Result<Vec<NatsNode>> {
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let routes = ports
        .iter()
        .map(|(_, _, c)| format!("nats://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, (client, monitor, cluster)) in ports.iter().enumerate() {
        let dir = work_dir.join(format!("nats-n{}", i + 1));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(work_dir.join(format!("nats-n{}.log", i + 1)))?;
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &client.to_string()])
            .args(["-m", &monitor.to_string()])
            .args(["-js", "-sd"])
            .arg(&dir)
            .args(["--server_name", &format!("n{}", i + 1)])
            .args(["--cluster_name", "kc-bench"])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
            .args(["--routes", &routes])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        nodes.push(NatsNode {
            child,
            client_port: *client,
            monitor_port: *monitor,
        });
    }
    Ok(nodes)
}

/// Waits (bounded) until every node says JetStream is ready.
async fn nats_ready(nodes: &[NatsNode]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in nodes {
        let addr: SocketAddr = ([127, 0, 0, 1], n.monitor_port).into();
        loop {
            if daemon::get_json(addr, "/healthz?js-enabled-only=true")
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("nats-server on {} not ready within 30 s", n.client_port);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// CPU ticks of every process measured, by label.
fn cpu_all(procs: &[(String, String)]) -> anyhow::Result<HashMap<String, CpuTicks>> {
    procs
        .iter()
        .map(|(label, pid)| Ok((label.clone(), procfs::cpu(pid)?)))
        .collect()
}

pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let o = parse(args)?;
    let nofile = procfs::raise_nofile_limit();
    anyhow::ensure!(
        nofile as usize > 2 * o.viewers + 256,
        "open-file limit {nofile} is too low for 2 x {} viewers (ulimit -n)",
        o.viewers
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let work_dir =
        std::env::temp_dir().join(format!("kindercam-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let result = runtime.block_on(run(&o, &work_dir));
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else {
        eprintln!("logs kept in {}", work_dir.display());
    }
    let report = result?;
    if let Some(path) = &o.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let md = markdown(&report);
    if let Some(path) = &o.markdown_out {
        std::fs::write(path, &md)?;
    }
    println!("{md}");
    Ok(())
}

async fn run(o: &Options, work_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let nats = start_nats(&o.nats_server, work_dir)?;
    nats_ready(&nats).await?;
    let urls: Vec<String> = nats
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
        .collect();
    // Each relay starts on a different first server, as a load balancer would spread them.
    let relay_args = |node: &str, first: usize| -> Vec<String> {
        let mut u = urls.clone();
        u.rotate_left(first);
        [
            "--auth",
            "off",
            "--max-connections-per-ip",
            "0",
            "--max-connections",
            "5000",
            "--node-name",
            node,
            "--nats",
            &u.join(","),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let relay1 = Daemon::start(&o.kindercam, &relay_args("relay-1", 0), work_dir, "relay-1")?;
    let relay2 = Daemon::start(&o.kindercam, &relay_args("relay-2", 1), work_dir, "relay-2")?;
    for r in [&relay1, &relay2] {
        daemon::get_json(r.http, "/healthz")
            .await
            .context("relay not healthy")?;
    }
    let mut camera_args = daemon::test_pattern(o.interval.as_millis(), 640, 480);
    camera_args.extend([
        "--auth".to_string(),
        "off".to_string(),
        "--push-to".to_string(),
        format!("camera=ws://{}/upload/{STREAM}", relay1.ws),
        "--push-to".to_string(),
        format!("camera=ws://{}/upload/{STREAM}", relay2.ws),
    ]);
    let camera = Daemon::start(&o.kindercam, &camera_args, work_dir, "camera")?;
    let rss_idle_camera = procfs::status_field(&camera.pid_str(), "VmRSS").unwrap_or(0);

    // The reference viewer on the camera, then N viewers on each relay.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (conn_tx, mut conn_rx) = mpsc::channel(2 * o.viewers + 1);
    let reference = tokio::spawn(viewer::run(
        camera.ws,
        "/video?format=binary".to_owned(),
        Keying::Sampled,
        conn_tx.clone(),
        stop_rx.clone(),
    ));
    let path = format!("/video/{STREAM}?format=binary");
    let mut viewers: Vec<(usize, tokio::task::JoinHandle<ViewerOutcome>)> = Vec::new();
    for (i, relay) in [&relay1, &relay2].iter().enumerate() {
        for _ in 0..o.viewers {
            viewers.push((
                i,
                tokio::spawn(viewer::run(
                    relay.ws,
                    path.clone(),
                    Keying::Sampled,
                    conn_tx.clone(),
                    stop_rx.clone(),
                )),
            ));
        }
    }
    drop(conn_tx);
    let mut connect_errors = Vec::new();
    for _ in 0..(2 * o.viewers + 1) {
        match tokio::time::timeout(Duration::from_secs(60), conn_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => connect_errors.push(format!("{e:#}")),
            Ok(None) | Err(_) => {
                connect_errors.push("a viewer did not finish its handshake within 60 s".into());
                break;
            }
        }
    }
    tokio::time::sleep(o.warmup).await;

    let mut procs: Vec<(String, String)> = vec![
        ("camera".into(), camera.pid_str()),
        ("relay-1".into(), relay1.pid_str()),
        ("relay-2".into(), relay2.pid_str()),
    ];
    for (i, n) in nats.iter().enumerate() {
        procs.push((format!("nats-n{}", i + 1), n.pid_str()));
    }
    let t0 = Instant::now();
    let cpu0 = cpu_all(&procs)?;
    let machine0 = procfs::machine_cpu()?;
    let bench0 = procfs::cpu("self")?;
    let stats0 = [
        daemon::get_json(relay1.http, "/stats.json").await?,
        daemon::get_json(relay2.http, "/stats.json").await?,
    ];
    tokio::time::sleep(o.window).await;
    let t1 = Instant::now();
    let cpu1 = cpu_all(&procs)?;
    let machine1 = procfs::machine_cpu()?;
    let bench1 = procfs::cpu("self")?;
    let stats1 = [
        daemon::get_json(relay1.http, "/stats.json").await?,
        daemon::get_json(relay2.http, "/stats.json").await?,
    ];
    let hwm: HashMap<String, u64> = procs
        .iter()
        .map(|(l, p)| (l.clone(), procfs::status_field(p, "VmHWM").unwrap_or(0)))
        .collect();
    let _ = stop_tx.send(true);
    let reference = tokio::time::timeout(Duration::from_secs(5), reference)
        .await
        .context("the reference viewer did not stop")??;
    let mut outcomes: Vec<(usize, ViewerOutcome)> = Vec::new();
    for (relay, v) in viewers {
        let v = tokio::time::timeout(Duration::from_secs(10), v)
            .await
            .context("a viewer did not stop within 10 s")??;
        outcomes.push((relay, v));
    }
    drop((camera, relay1, relay2));
    drop(nats);

    let window = (t1 - t0).as_secs_f64();
    let published: HashMap<u64, Instant> =
        reference.receipts.iter().map(|r| (r.key, r.at)).collect();
    let source_frames = reference
        .receipts
        .iter()
        .filter(|r| r.at >= t0 && r.at < t1)
        .count() as u64;
    let mut per_relay = Vec::new();
    for relay in 0..2 {
        let mut delays = Vec::new();
        let mut frames = 0u64;
        let mut unmatched = 0u64;
        let mut min_fps = f64::INFINITY;
        let mut errors = 0usize;
        for (_, out) in outcomes.iter().filter(|(r, _)| *r == relay) {
            let mut mine = 0u64;
            for r in out.receipts.iter().filter(|r| r.at >= t0 && r.at < t1) {
                mine += 1;
                match published.get(&r.key) {
                    Some(at) => delays.push(r.at.saturating_duration_since(*at).as_micros() as u64),
                    None => unmatched += 1,
                }
            }
            frames += mine;
            min_fps = min_fps.min(mine as f64 / window);
            errors += usize::from(out.error.is_some());
        }
        delays.sort_unstable();
        let pct = |q: f64| -> Option<f64> {
            if delays.is_empty() {
                return None;
            }
            let rank = ((q * delays.len() as f64).ceil() as usize).clamp(1, delays.len());
            Some(delays[rank - 1] as f64 / 1000.0)
        };
        let s0 = daemon::stream_stats(&stats0[relay], STREAM)
            .cloned()
            .unwrap_or_default();
        let s1 = daemon::stream_stats(&stats1[relay], STREAM)
            .cloned()
            .unwrap_or_default();
        let published_relay = s1["frames_published"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(s0["frames_published"].as_u64().unwrap_or(0));
        per_relay.push(json!({
            "relay": format!("relay-{}", relay + 1),
            "viewers": o.viewers,
            "frames_delivered": frames,
            "frames_published_by_relay": published_relay,
            "delivered_fps_per_viewer_mean": frames as f64 / window / o.viewers.max(1) as f64,
            "delivered_fps_per_viewer_min": if min_fps.is_finite() { min_fps } else { 0.0 },
            "delivery_ratio_vs_camera": if source_frames > 0 {
                frames as f64 / (source_frames as f64 * o.viewers as f64)
            } else { 0.0 },
            "delay_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                         "max": delays.last().map(|v| *v as f64 / 1000.0), "samples": delays.len()},
            "frames_not_seen_on_camera": unmatched,
            "viewer_errors": errors,
        }));
    }
    let mut cpu = serde_json::Map::new();
    for (label, _) in &procs {
        let (u, s) = cpu1[label].since(cpu0[label]);
        cpu.insert(
            label.clone(),
            json!({
                "cpu_pct": (u + s) / window * 100.0,
                "user_pct": u / window * 100.0,
                "sys_pct": s / window * 100.0,
                "vmhwm_kib": hwm[label],
            }),
        );
    }
    let (bu, bs) = bench1.since(bench0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1).max(1) as f64;
    Ok(json!({
        "machine": {
            "cpu_model": procfs::cpu_model(),
            "cores": cores,
            "loadavg_at_end": procfs::loadavg(),
            "window_s": window,
            "interval_ms": o.interval.as_millis() as u64,
            "machine_busy_pct": busy * 100.0 * cores,
            "bench_cpu_pct": (bu + bs) / window * 100.0,
        },
        "camera_frames_in_window": source_frames,
        "camera_rss_idle_kib": rss_idle_camera,
        "connect_errors": connect_errors.len(),
        "first_connect_error": connect_errors.first(),
        "relays": per_relay,
        "processes": cpu,
    }))
}

fn markdown(r: &serde_json::Value) -> String {
    let f = |v: &serde_json::Value, d: usize| match v.as_f64() {
        Some(x) => format!("{x:.d$}"),
        None => "–".to_owned(),
    };
    let mut md = String::new();
    md.push_str(&format!(
        "Camera frames in the {:.1} s window: {}; connect errors: {}.\n\n",
        r["machine"]["window_s"].as_f64().unwrap_or(0.0),
        r["camera_frames_in_window"],
        r["connect_errors"]
    ));
    md.push_str("| relay | viewers | frames delivered | per viewer fps mean / min | of the camera's frames | delay p50 / p99 / max ms |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|\n");
    for x in r["relays"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} / {} | {:.1} % | {} / {} / {} |\n",
            x["relay"].as_str().unwrap_or(""),
            x["viewers"],
            x["frames_delivered"],
            f(&x["delivered_fps_per_viewer_mean"], 2),
            f(&x["delivered_fps_per_viewer_min"], 2),
            x["delivery_ratio_vs_camera"].as_f64().unwrap_or(0.0) * 100.0,
            f(&x["delay_ms"]["p50"], 1),
            f(&x["delay_ms"]["p99"], 1),
            f(&x["delay_ms"]["max"], 1),
        ));
    }
    md.push_str("\n| process | CPU % (user + sys) | VmHWM MiB |\n|---|---:|---:|\n");
    if let Some(procs) = r["processes"].as_object() {
        for (label, p) in procs {
            md.push_str(&format!(
                "| {label} | {} ({} + {}) | {:.1} |\n",
                f(&p["cpu_pct"], 1),
                f(&p["user_pct"], 1),
                f(&p["sys_pct"], 1),
                p["vmhwm_kib"].as_f64().unwrap_or(0.0) / 1024.0
            ));
        }
    }
    md.push_str(&format!(
        "\nThe bench's own viewers: {} % CPU; the machine: {} % busy of {} cores x 100.\n",
        f(&r["machine"]["bench_cpu_pct"], 1),
        f(&r["machine"]["machine_busy_pct"], 0),
        r["machine"]["cores"]
    ));
    md
}
