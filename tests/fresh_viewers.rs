//! Freshness on a slow link (issue 15): a viewer that reads slower than frames
//! come has about one frame waiting for it, in kindercam and in the kernel
//! together (`/stats.json` `pending_bytes_max`), instead of megabytes of old frames
//! in its socket; once it catches up it is sent the newest frame, not the ones it
//! missed; and a viewer that keeps up still gets every frame. A viewer that asks
//! with `?meta=1` learns each frame's capture time, and nobody else is sent it.
//!
//! Every upload carries its sequence number in a JPEG comment, so each viewer can
//! tell which frame it got.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    make_jpeg, poll_until, raw_upgrade, recv, recv_binary_frame, recv_json, start, Ws, WAIT,
};
use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the slow viewer reads per tick: 2 KiB every 10 ms, about 200 KB/s, a
/// tenth or less of what the uploads below offer.
const SLOW_CHUNK: usize = 2048;
const SLOW_TICK: Duration = Duration::from_millis(10);
/// The slow viewer's receive buffer (the kernel doubles it): its window stays tiny.
const SLOW_RCVBUF: u32 = 4096;

/// The frame with `seq` in a comment segment right after SOI.
fn tagged(base: &[u8], seq: u32) -> Vec<u8> {
    let text = format!("seq:{seq:010}");
    let mut out = Vec::with_capacity(base.len() + text.len() + 4);
    out.extend_from_slice(&base[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&(text.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&base[2..]);
    out
}

fn seq_of(jpeg: &[u8]) -> u32 {
    assert_eq!(&jpeg[2..4], &[0xFF, 0xFE], "frame without its comment");
    std::str::from_utf8(&jpeg[6..20])
        .ok()
        .and_then(|t| t.strip_prefix("seq:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence number in the frame's comment"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {v}"))
}

/// A viewer on a raw socket that reads `SLOW_CHUNK` bytes per `SLOW_TICK` until
/// `fast` is set, then as fast as it can. Reports the sequence number of each
/// binary frame it completes.
fn slow_viewer(mut socket: TcpStream, fast: Arc<AtomicBool>) -> mpsc::UnboundedReceiver<u32> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SLOW_TICK);
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let limit = if fast.load(Ordering::Relaxed) {
                chunk.len()
            } else {
                ticks.tick().await;
                SLOW_CHUNK
            };
            match socket.read(&mut chunk[..limit]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while let Some((opcode, payload, used)) = parse_message(&buf) {
                if opcode == 0x2 && tx.send(seq_of(payload)).is_err() {
                    return;
                }
                buf.drain(..used);
            }
        }
    });
    rx
}

/// One complete unmasked server frame at the start of `buf`: opcode, payload,
/// and the bytes it took.
fn parse_message(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    Some((buf[0] & 0x0F, payload, at + len))
}

async fn upload(uploader: &mut Ws, jpeg: Vec<u8>) {
    tokio::time::timeout(WAIT, uploader.send(Message::Binary(jpeg.into())))
        .await
        .expect("upload in time")
        .expect("upload sent");
    let ack = recv_json(uploader).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_viewer_gets_the_newest_frame_and_a_fast_one_every_frame() {
    let server = start(&[]).await;
    let base = make_jpeg(640, 480, 7);
    // The largest message a frame makes: the JPEG, its comment, a 4-byte header.
    let message = (tagged(&base, 0).len() + 4) as u64;
    // What a slow viewer may have waiting: the message being written, plus what
    // the kernel still held unsent of earlier ones when it was chosen (under half
    // of TCP_NOTSENT_LOWAT), plus, where an emulator cannot count unsent bytes
    // alone (qemu-user), the unacknowledged bytes its tiny window lets out.
    let bound = message + kindercam::sendq::NOTSENT_LOWAT as u64 / 2 + 2 * SLOW_RCVBUF as u64;

    let mut fast = server.connect("/video/fresh?format=binary").await;
    let slow_socket = raw_upgrade(server.ws, "/video/fresh?format=binary", Some(SLOW_RCVBUF)).await;
    let speed_up = Arc::new(AtomicBool::new(false));
    let mut slow = slow_viewer(slow_socket, speed_up.clone());
    let mut uploader = server.connect("/upload/fresh").await;

    // Phase 1: frames as fast as the fast viewer takes them, each one waited for,
    // until the slow viewer has completed a few while far behind.
    let mut seq = 0u32;
    let mut slow_seen = Vec::new();
    let mut most_pending = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20) * common::time_scale();
    while slow_seen.len() < 4 || seq < 100 {
        assert!(
            Instant::now() < deadline,
            "the slow viewer completed only {slow_seen:?} of {seq} frames"
        );
        seq += 1;
        upload(&mut uploader, tagged(&base, seq)).await;
        let got = seq_of(&recv_binary_frame(&mut fast).await);
        assert_eq!(got, seq, "the fast viewer gets every frame, in order");
        while let Ok(s) = slow.try_recv() {
            slow_seen.push(s);
        }
        if seq % 5 == 0 {
            let stats = server.stream_stats("fresh").await.expect("stream stats");
            let pending = num(&stats, "pending_bytes_max");
            assert!(
                pending <= bound,
                "a viewer has {pending} bytes waiting, more than one frame ({message}) \
                 and the slack ({bound}): {stats}"
            );
            most_pending = most_pending.max(pending);
        }
    }
    eprintln!(
        "{seq} frames of {message} bytes uploaded; the slow viewer completed {slow_seen:?}, \
         had at most {most_pending} bytes waiting (bound {bound})"
    );
    // The slow viewer really was behind: it had most of a frame waiting at times,
    // and it skipped frames rather than getting each one late.
    assert!(
        most_pending >= message / 2,
        "the slow viewer never had much waiting ({most_pending} bytes): not slow enough"
    );
    assert!(
        slow_seen.windows(2).all(|w| w[0] < w[1]),
        "frames in order: {slow_seen:?}"
    );
    assert!(
        slow_seen.windows(2).any(|w| w[1] > w[0] + 1),
        "the slow viewer skips frames: {slow_seen:?}"
    );
    let stats = server.stream_stats("fresh").await.expect("stream stats");
    assert!(num(&stats, "frames_skipped") > 0, "{stats}");

    // Phase 2: the slow viewer catches up. It may finish the frame it is in the
    // middle of, and then gets the newest one, not the backlog it missed.
    let newest = seq;
    speed_up.store(true, Ordering::Relaxed);
    let mut after = Vec::new();
    while after.last() != Some(&newest) {
        match tokio::time::timeout(WAIT, slow.recv()).await {
            Ok(Some(s)) => after.push(s),
            Ok(None) => panic!("the slow viewer's connection ended"),
            Err(_) => panic!("the newest frame {newest} never came; got {after:?}"),
        }
        let stale = after.iter().filter(|&&s| s != newest).count();
        assert!(
            stale <= 1,
            "after catching up the viewer got {after:?}, not just the newest ({newest})"
        );
    }
    eprintln!("after catching up it got {after:?}");
    // Nothing is left waiting for it (polled: where an emulator counts bytes
    // not yet acknowledged too, the last ACK may still be on its way).
    poll_until(
        "nothing left waiting",
        WAIT,
        Duration::from_millis(20),
        || async {
            let stats = server.stream_stats("fresh").await.expect("stream stats");
            (num(&stats, "pending_bytes_max") == 0).then_some(())
        },
    )
    .await;
    drop(fast);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_viewers_learn_each_frames_capture_time_and_others_only_get_frames() {
    let server = start(&[]).await;
    let mut plain = server.connect("/video/meta?format=binary").await;
    let mut meta = server.connect("/video/meta?format=binary&meta=1").await;
    let mut text = server.connect("/video/meta?meta=1").await;
    let mut uploader = server.connect("/upload/meta").await;
    let base = make_jpeg(64, 48, 3);
    for seq in 1..=3 {
        let before = unix_ms();
        upload(&mut uploader, tagged(&base, seq)).await;
        let after = unix_ms();
        // The prototype's way: only the frame (and status), never the meta text.
        assert_eq!(seq_of(&recv_binary_frame(&mut plain).await), seq);
        // ?meta=1: the capture time comes right before its frame, as JSON.
        for (viewer, binary) in [(&mut meta, true), (&mut text, false)] {
            let info = next_meta(viewer).await;
            let ts = num(&info, "ts");
            assert!(
                (before..=after).contains(&ts),
                "capture time {ts} is the upload's arrival, within [{before}, {after}]"
            );
            let frame = match recv(viewer).await {
                Message::Binary(jpeg) if binary => jpeg.to_vec(),
                Message::Text(url) if !binary => common::decode_data_url(&url),
                other => panic!("expected the frame after its meta, got {other:?}"),
            };
            assert_eq!(seq_of(&frame), seq);
        }
    }
    // The page reads the server's clock to judge capture times by it.
    let before = unix_ms();
    let config = server.get("/config.json").await.json();
    let now = num(&config, "now_unix_ms");
    assert!((before..=unix_ms()).contains(&now), "{config}");
    server.stop().await;
}

/// The next `{"type":"frame"}` message, skipping status messages.
async fn next_meta(viewer: &mut Ws) -> Value {
    loop {
        let Message::Text(text) = recv(viewer).await else {
            panic!("expected the frame's meta text first");
        };
        let value: Value = serde_json::from_str(&text).expect("meta and status are JSON");
        if value["type"] == "frame" {
            return value;
        }
        assert_eq!(value["type"], "status", "{value}");
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A phone that stops reading for 10 s (a tunnel, a locked screen) and then
/// reads again is sent the room as it is now: the frames published while it
/// stalled are skipped, not queued, and after at most the few that were
/// already in its socket it gets the newest one and then every new frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_stalled_for_10_s_then_drained_gets_the_newest_frame_not_a_backlog() {
    let server = start(&[]).await;
    let base = make_jpeg(640, 480, 11);
    let mut watcher = server.connect("/video/stall?format=binary").await;
    let stalled = raw_upgrade(server.ws, "/video/stall?format=binary", Some(SLOW_RCVBUF)).await;
    let mut uploader = server.connect("/upload/stall").await;

    // Ten seconds of frames at 10 per second while the stalled viewer reads nothing.
    let stall = Duration::from_secs(10);
    let started = Instant::now();
    let mut seq = 0u32;
    while started.elapsed() < stall {
        seq += 1;
        upload(&mut uploader, tagged(&base, seq)).await;
        assert_eq!(seq_of(&recv_binary_frame(&mut watcher).await), seq);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seq >= 50, "only {seq} frames in the stall");
    let newest = seq;

    // It reads again: what was already in its socket, then the newest frame.
    let mut seen = slow_viewer(stalled, Arc::new(AtomicBool::new(true)));
    let mut got = Vec::new();
    let caught_up = tokio::time::timeout(WAIT, async {
        while let Some(s) = seen.recv().await {
            got.push(s);
            if s == newest {
                return;
            }
        }
    })
    .await;
    assert!(
        caught_up.is_ok(),
        "the newest frame {newest} never came; got {got:?}"
    );
    assert!(
        got.len() <= 4,
        "a backlog of {} frames before the newest ({got:?}): stalled frames were queued",
        got.len() - 1
    );
    // And from now on it keeps up.
    upload(&mut uploader, tagged(&base, newest + 1)).await;
    let next = tokio::time::timeout(WAIT, seen.recv()).await;
    assert_eq!(
        next.ok().flatten(),
        Some(newest + 1),
        "the next frame follows"
    );
    server.stop().await;
}
