//! The `exec:` MJPEG pipe source end to end: a real MJPEG stream (ffmpeg's, when
//! ffmpeg is installed), frames whose Huffman tables were stripped as UVC webcams
//! send them, truncated and corrupt frames, a command that dies, and the command's
//! life following the viewers (started on demand, stopped when nobody watches and
//! at shutdown). Viewers are real WebSocket clients on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kindercam::jpeg;
use kindercam::mjpeg;
use tokio_tungstenite::tungstenite::Message;

fn decode(jpeg: &[u8]) -> Vec<u8> {
    turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB)
        .expect("frame decodes")
        .pixels
}

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A command that plays `file` over and over, like a camera that never stops.
fn looping(file: &Path) -> String {
    format!(
        "exec:while :; do cat '{}'; sleep 0.05; done",
        file.display()
    )
}

fn write_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write stream file");
    path
}

/// An `exec:` source that records each start's pid, then runs `body`, in which
/// `FRAMES` names a file of two 160x120 JPEG frames. Returns the source and the
/// pid file.
fn traced_command(dir: &TempDir, body: &str) -> (String, PathBuf) {
    let frames: Vec<u8> = (0..2).flat_map(|i| make_jpeg(160, 120, i * 90)).collect();
    let file = write_bytes(dir, "s.mjpeg", &frames);
    let pids = dir.path().join("pids");
    let body = body.replace("FRAMES", &format!("'{}'", file.display()));
    (
        format!("exec:echo $$ >> '{}'; {body}", pids.display()),
        pids,
    )
}

/// The pids a traced command recorded, one per start, oldest first.
fn started(pids: &Path) -> Vec<u32> {
    std::fs::read_to_string(pids)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Next binary frame, skipping status messages (which are checked to be statuses).
async fn binary_frame(ws: &mut Ws) -> Vec<u8> {
    recv_binary_frame(ws).await
}

/// Reads until a status message in `state`; returns it.
async fn status(ws: &mut Ws, state: &str) -> serde_json::Value {
    status_within(ws, state, WAIT).await
}

async fn status_within(ws: &mut Ws, state: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(ws, left).await {
            Some(Message::Text(text)) => {
                let value = assert_status(&text);
                if value["state"] == state {
                    return value;
                }
            }
            Some(Message::Binary(_)) => continue,
            Some(other) => panic!("unexpected {}", describe(&other)),
            None => panic!("no {state} status within {limit:?}"),
        }
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead for our purposes; its state is the field after the name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_for(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_real_mjpeg_stream_is_served_frame_by_frame() {
    let dir = TempDir::new("pipe-real");
    let source = if ffmpeg_available() {
        "exec:ffmpeg -loglevel error -re -f lavfi -i testsrc=size=640x480:rate=10 -f mjpeg -q:v 5 -"
            .to_owned()
    } else {
        eprintln!("ffmpeg not installed: using frames made with turbojpeg instead");
        let frames: Vec<u8> = (0..10).flat_map(|i| make_jpeg(640, 480, i * 20)).collect();
        looping(&write_bytes(&dir, "stream.mjpeg", &frames))
    };
    let server = start(&["--source", &source, "--interval-ms", "100"]).await;
    let mut ws = server.connect("/video?format=binary").await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let frame = binary_frame(&mut ws).await;
        let info = jpeg::inspect(&frame).expect("a complete JPEG");
        assert_eq!((info.width, info.height), (640, 480));
        assert!(mjpeg::has_huffman_tables(&frame));
        decode(&frame);
        seen.push(frame);
    }
    seen.dedup();
    assert!(
        seen.len() >= 3,
        "the picture moves: {} distinct of 6",
        seen.len()
    );
    let camera = server.stream_stats("camera").await.expect("camera stats");
    assert_eq!(camera["status"], "live");
    assert_eq!(camera["width"], 640);
    server.stop().await;
}

#[tokio::test]
async fn frames_without_huffman_tables_get_the_standard_ones() {
    let dir = TempDir::new("pipe-dht");
    // turbojpeg writes the standard tables, so stripping them gives exactly what a
    // UVC webcam sends, and re-inserting them must give back the same picture.
    let originals: Vec<Vec<u8>> = (0..4).map(|i| make_jpeg(320, 240, i * 50)).collect();
    let stripped: Vec<u8> = originals
        .iter()
        .flat_map(|f| mjpeg::strip_huffman_tables(f))
        .collect();
    assert!(!mjpeg::has_huffman_tables(&mjpeg::strip_huffman_tables(
        &originals[0]
    )));
    let file = write_bytes(&dir, "no-dht.mjpeg", &stripped);
    let server = start(&["--source", &looping(&file), "--interval-ms", "50"]).await;
    let pictures: Vec<Vec<u8>> = originals.iter().map(|f| decode(f)).collect();
    let mut ws = server.connect("/video?format=binary").await;
    for _ in 0..4 {
        let frame = binary_frame(&mut ws).await;
        assert!(mjpeg::has_huffman_tables(&frame), "tables inserted");
        assert!(
            pictures.contains(&decode(&frame)),
            "the repaired frame shows the original picture"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn truncated_and_corrupt_frames_are_dropped_and_counted() {
    let dir = TempDir::new("pipe-broken");
    let good: Vec<Vec<u8>> = (0..3).map(|i| make_jpeg(320, 240, 10 + i * 70)).collect();
    let mut stream = Vec::new();
    stream.extend_from_slice(&good[0]);
    stream.extend_from_slice(&good[1][..good[1].len() / 2]); // cut off by the next frame
    stream.extend_from_slice(b"some log line the camera tool printed to stdout\n");
    stream.extend_from_slice(&good[2]);
    stream.extend_from_slice(&good[0][..300]); // headers only
    stream.extend_from_slice(&good[1]);
    let file = write_bytes(&dir, "broken.mjpeg", &stream);
    let server = start(&["--source", &looping(&file), "--interval-ms", "50"]).await;
    let pictures: Vec<Vec<u8>> = good.iter().map(|f| decode(f)).collect();
    let mut ws = server.connect("/video?format=binary").await;
    for _ in 0..8 {
        let frame = binary_frame(&mut ws).await;
        jpeg::inspect(&frame).expect("only complete frames reach viewers");
        assert!(pictures.contains(&decode(&frame)), "a good frame, intact");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = server.stream_stats("camera").await.expect("camera stats");
        let dropped = stats["frames_dropped"].as_u64().expect("frames_dropped");
        if dropped >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "broken frames counted: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_dying_command_shows_offline_then_is_restarted() {
    let dir = TempDir::new("pipe-dies");
    let frames: Vec<u8> = (0..3).flat_map(|i| make_jpeg(320, 240, i * 30)).collect();
    let file = write_bytes(&dir, "once.mjpeg", &frames);
    let source = format!(
        "exec:cat '{}'; echo 'rpicam-vid: camera exploded' >&2; exit 3",
        file.display()
    );
    let server = start(&[
        "--source",
        &source,
        "--interval-ms",
        "50",
        "--width",
        "320",
        "--height",
        "240",
    ])
    .await;
    let mut ws = server.connect("/video?format=binary").await;
    let first = binary_frame(&mut ws).await;
    assert_eq!(jpeg::inspect(&first).unwrap().width, 320);
    let offline = status(&mut ws, "offline").await;
    let message = offline["message"].as_str().unwrap();
    assert!(
        message.contains("camera exploded") && message.contains("exit status 3"),
        "the viewer learns why: {message}"
    );
    // The placeholder picture follows the status, at the configured size.
    let placeholder = binary_frame(&mut ws).await;
    let info = jpeg::inspect(&placeholder).unwrap();
    assert_eq!((info.width, info.height), (320, 240));
    // Restarted by itself: live again with the command's frames.
    status(&mut ws, "live").await;
    let again = binary_frame(&mut ws).await;
    jpeg::inspect(&again).expect("frames again after the restart");
    server.stop().await;
}

#[tokio::test]
async fn the_command_runs_only_while_watched_and_stops_with_the_daemon() {
    let dir = TempDir::new("pipe-demand");
    let (source, pids) = traced_command(&dir, "while :; do cat FRAMES; sleep 0.05; done");
    let read_pids = || started(&pids);
    let server = start(&["--source", &source, "--interval-ms", "50"]).await;
    // Serving, but nobody watches: nothing was started.
    assert_eq!(server.get("/healthz").await.status, 200);
    assert!(
        read_pids().is_empty(),
        "the command does not run while nobody watches"
    );

    let mut ws = server.connect("/video?format=binary").await;
    binary_frame(&mut ws).await;
    let first = read_pids();
    assert_eq!(first.len(), 1, "started once for the viewer");
    assert!(alive(first[0]));
    let left = Instant::now();
    drop(ws);
    // Stopped after the idle grace (5 s), so a page reload does not restart the camera.
    wait_for(
        "the command to stop after the viewer left",
        Duration::from_secs(12),
        || !alive(first[0]),
    )
    .await;
    assert!(
        left.elapsed() >= Duration::from_secs(5),
        "kept running for the idle grace, stopped after {:?}",
        left.elapsed()
    );

    // A snapshot while idle starts it briefly and gets a fresh picture.
    let reply = server.get("/snapshot.jpg").await;
    assert_eq!(reply.status, 200, "idle snapshot: {}", reply.text());
    assert_eq!(jpeg::inspect(&reply.body).unwrap().width, 160);
    let second = read_pids();
    assert_eq!(second.len(), 2, "started again for the snapshot");

    server.stop().await;
    wait_for(
        "the command to be stopped with the daemon",
        Duration::from_secs(3),
        || !alive(second[1]),
    )
    .await;
}

#[tokio::test]
async fn without_on_demand_the_command_runs_from_the_start() {
    let dir = TempDir::new("pipe-always");
    let loops = dir.path().join("loops");
    let (source, pids) = traced_command(
        &dir,
        &format!(
            "while :; do cat FRAMES; echo >> '{}'; sleep 0.01; done",
            loops.display()
        ),
    );
    let server = start(&[
        "--source",
        &source,
        "--on-demand=false",
        "--interval-ms",
        "50",
    ])
    .await;
    // Nobody watches, yet the command is started (the camera stays open).
    wait_for("the command to start without viewers", WAIT, || {
        !started(&pids).is_empty()
    })
    .await;
    let pid = started(&pids)[0];
    assert!(alive(pid));
    // ...but nothing is published. Past a pipe's 64 KiB of output, `cat` only
    // goes on if kindercam reads, so the frames have been read and cut by now.
    let per_loop = std::fs::metadata(dir.path().join("s.mjpeg")).unwrap().len() as usize;
    wait_for("256 KiB of frames read", WAIT, || {
        let done = std::fs::read_to_string(&loops)
            .unwrap_or_default()
            .lines()
            .count();
        done * per_loop >= 256 * 1024
    })
    .await;
    let stats = server.stream_stats("camera").await.expect("camera stats");
    assert_eq!(
        stats["frames_published"], 0,
        "no work while nobody watches: {stats}"
    );
    let mut ws = server.connect("/video?format=binary").await;
    let frame = binary_frame(&mut ws).await;
    assert_eq!(jpeg::inspect(&frame).unwrap().width, 160);
    server.stop().await;
    wait_for(
        "the command to be stopped with the daemon",
        Duration::from_secs(3),
        || !alive(pid),
    )
    .await;
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_is_killed_when_nobody_watches() {
    let dir = TempDir::new("pipe-stubborn");
    // Ignores SIGTERM (and so does the sleep it becomes) and goes silent after
    // one burst of frames, blocking kindercam's read of its output.
    let (source, pids) = traced_command(&dir, "trap '' TERM; cat FRAMES; exec sleep 1000");
    let server = start(&["--source", &source, "--interval-ms", "50"]).await;
    let mut ws = server.connect("/video?format=binary").await;
    binary_frame(&mut ws).await;
    let pid = started(&pids)[0];
    drop(ws);
    // Idle grace (5 s), SIGTERM ignored for the stop wait (2 s), then SIGKILL.
    wait_for(
        "the stubborn command to be killed",
        Duration::from_secs(15),
        || !alive(pid),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_command_printing_no_jpeg_is_restarted_with_the_reason() {
    let dir = TempDir::new("pipe-chatty");
    // Output, but never a frame: a tool started with the wrong options, say.
    let (source, pids) = traced_command(
        &dir,
        "while :; do echo 'usage: camera-tool [options]'; sleep 0.1; done",
    );
    let server = start(&["--source", &source, "--interval-ms", "50"]).await;
    let mut ws = server.connect("/video?format=binary").await;
    // The limit is 8 s without a usable frame; the viewer waits with the placeholder.
    let offline = status_within(&mut ws, "offline", Duration::from_secs(20)).await;
    let message = offline["message"].as_str().unwrap();
    assert!(
        message.contains("sent no usable frame for 8 s") && message.contains("non-JPEG output"),
        "the viewer learns why: {message}"
    );
    let first = started(&pids)[0];
    wait_for(
        "the chatty command to be stopped",
        Duration::from_secs(5),
        || !alive(first),
    )
    .await;
    // And tried again, as a camera tool that fails once may work the next time.
    wait_for("a restart", Duration::from_secs(10), || {
        started(&pids).len() >= 2
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_command_that_hangs_while_watched_is_killed_and_restarted() {
    let dir = TempDir::new("pipe-hangs");
    // Sends a burst, then hangs without closing its output, as rpicam-vid does
    // when the camera stops answering: kindercam's read blocks.
    let (source, pids) = traced_command(&dir, "cat FRAMES; exec sleep 1000");
    let server = start(&["--source", &source, "--interval-ms", "50"]).await;
    let mut ws = server.connect("/video?format=binary").await;
    binary_frame(&mut ws).await;
    let hung = started(&pids)[0];
    // Nothing for 10 s while a viewer waits: stuck, so killed and restarted.
    let offline = status_within(&mut ws, "offline", Duration::from_secs(20)).await;
    let message = offline["message"].as_str().unwrap();
    assert!(
        message.contains("stopped responding"),
        "the viewer learns why: {message}"
    );
    wait_for(
        "the hung command to be killed",
        Duration::from_secs(5),
        || !alive(hung),
    )
    .await;
    status_within(&mut ws, "live", Duration::from_secs(10)).await;
    binary_frame(&mut ws).await;
    server.stop().await;
}
