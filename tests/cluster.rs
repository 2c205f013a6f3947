//! Relays on a real NATS cluster (issue 13, section 3): three Debian
//! `nats-server` nodes with JetStream on loopback (`common::nats`), and
//! kindercam relays joined to them with `--nats`.
//!
//! Skipped, with a message, when nats-server is not installed outside CI.
#![cfg(feature = "cluster")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::SMALL_CAMERA;
use common::nats::NatsCluster;
use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A relay joined to `nats` as `node`, with `extra` flags.
async fn relay(nats: &NatsCluster, node: &str, extra: &[&str]) -> TestServer {
    let urls = nats.urls();
    let mut args = vec!["--nats", urls.as_str(), "--node-name", node];
    args.extend_from_slice(extra);
    start(&args).await
}

/// `/healthz`: its status code and body.
async fn healthz(server: &TestServer) -> (u16, Value) {
    let reply = server.get("/healthz").await;
    (reply.status, reply.json())
}

/// Polls `/healthz` every 20 ms until `pred` holds for (status, body); returns
/// the body and how long it took.
async fn healthz_until(
    server: &TestServer,
    what: &str,
    limit: Duration,
    pred: impl Fn(u16, &Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let (status, body) = healthz(server).await;
        if pred(status, &body) {
            return (body, started.elapsed());
        }
        if started.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for {what}; last /healthz: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a relay may take to be healthy again after losing its server: a
/// new connection takes milliseconds, but when the lost server led JetStream's
/// meta group the others must elect a new leader first (5-8 s with 2.9.10),
/// and with the chat stream and the shared-state buckets (R3 each) also
/// electing, a loaded 2-core machine has taken over 20 s. Not a promise of the
/// issue's (those are the 3 s and 5 s asserted below and in the frame tests).
const RECOVERY: Duration = Duration::from_secs(30);

fn healthy(status: u16, body: &Value) -> bool {
    status == 200 && body["cluster"]["nats"] == "connected" && body["cluster"]["jetstream"] == true
}

/// The NATS node a relay's `/healthz` says it is connected to.
fn connected_node(nats: &NatsCluster, body: &Value) -> usize {
    let server = body["cluster"]["server"].as_str().expect("a server");
    let port: u16 = server
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no port in {server:?}"));
    nats.node_on_port(port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_the_nats_link_and_a_silent_or_dead_server_is_left() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let relay = relay(&nats, "relay-1", &[]).await;
    let (body, _) = healthz_until(&relay, "the relay joined NATS", WAIT, healthy).await;
    assert_eq!(body["cluster"]["node"], "relay-1");
    assert_eq!(body["status"], "ok");
    assert!(body["cluster"]["rtt_ms"].as_f64().is_some(), "{body}");

    // kill -9 the server the relay uses: reported down, then back on another.
    let first = connected_node(&nats, &body);
    nats.kill(first);
    let (down, took) = healthz_until(&relay, "the outage reported", WAIT, |status, body| {
        status == 503 && body["cluster"]["nats"] == "down"
    })
    .await;
    assert_eq!(down["status"], "cluster down");
    eprintln!("kill -9: outage reported after {took:?}");
    let (back, took) = healthz_until(&relay, "back on another server", RECOVERY, healthy).await;
    eprintln!("kill -9: healthy again after {took:?} more");
    let second = connected_node(&nats, &back);
    assert_ne!(second, first, "{back}");

    // SIGSTOP the next one: a silent server, noticed by the probe in about 3 s.
    nats.restart(first);
    let stopped = Instant::now();
    nats.pause(second);
    let (_, took) = healthz_until(
        &relay,
        "the silent server noticed",
        Duration::from_secs(6),
        |status, _| status == 503,
    )
    .await;
    let detected = stopped.elapsed();
    eprintln!("SIGSTOP: noticed after {took:?} ({detected:?} since the stop)");
    assert!(
        detected <= Duration::from_millis(3500),
        "a silent server must be noticed within about 3 s, took {detected:?}"
    );
    let (back, took) = healthz_until(&relay, "reconnected elsewhere", RECOVERY, healthy).await;
    eprintln!("SIGSTOP: healthy again {took:?} later");
    assert_ne!(connected_node(&nats, &back), second, "{back}");
    assert!(
        back["cluster"]["reconnects_forced"].as_u64() >= Some(1),
        "{back}"
    );
    nats.resume(second);
    relay.stop().await;
}

#[tokio::test]
async fn a_single_node_says_nothing_of_a_cluster() {
    let server = start(&[]).await;
    let (status, body) = healthz(&server).await;
    assert_eq!(status, 200);
    assert!(body.get("cluster").is_none(), "{body}");
}

/// Both relays healthy on `nats`.
async fn two_relays(nats: &NatsCluster, extra1: &[&str]) -> (TestServer, TestServer) {
    let r1 = relay(nats, "relay-1", extra1).await;
    let r2 = relay(nats, "relay-2", &[]).await;
    for r in [&r1, &r2] {
        healthz_until(r, "the relay joined NATS", RECOVERY, healthy).await;
    }
    (r1, r2)
}

/// Uploads a new JPEG to `/upload/NAME` every 100 ms (binary messages, each
/// one different), reading the acks, until the returned flag is set.
async fn uploader(server: &TestServer, name: &str) -> Arc<AtomicBool> {
    let mut ws = server.connect(&format!("/upload/{name}")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    tokio::spawn(async move {
        let mut n = 0u8;
        while !stopped.load(Ordering::Relaxed) {
            n = n.wrapping_add(1);
            let jpeg = make_jpeg(160, 120, n);
            if ws.send(Message::Binary(jpeg.into())).await.is_err() {
                return;
            }
            let Some(Message::Text(ack)) = recv_within(&mut ws, WAIT).await else {
                return;
            };
            assert!(ack.contains("\"ack\""), "upload refused: {ack}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = ws.close(None).await;
    });
    stop
}

/// One frame as a `?format=binary&meta=1` viewer got it.
struct Seen {
    seq: u64,
    at: Instant,
    jpeg: Vec<u8>,
}

/// The next frame of a `?format=binary&meta=1` viewer, with the number its
/// meta gave it; `None` if none comes within `limit`.
async fn next_seen(ws: &mut Ws, limit: Duration) -> Option<Seen> {
    let deadline = Instant::now() + limit;
    let mut seq = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(ws, left).await? {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("meta or status JSON");
                if value["type"] == "frame" {
                    seq = Some(value["seq"].as_u64().expect("the meta numbers the frame"));
                } else {
                    assert_eq!(value["type"], "status", "{value}");
                }
            }
            Message::Binary(jpeg) => {
                let seq = seq.take().expect("each frame comes after its meta");
                return Some(Seen {
                    seq,
                    at: Instant::now(),
                    jpeg: jpeg.to_vec(),
                });
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    }
}

/// `n` frames of a viewer, checked to come with increasing numbers.
async fn frames(ws: &mut Ws, n: usize) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    while seen.len() < n {
        let frame = next_seen(ws, WAIT)
            .await
            .unwrap_or_else(|| panic!("frame {} of {n} did not come", seen.len() + 1));
        if let Some(last) = seen.last() {
            assert!(frame.seq > last.seq, "{} after {}", frame.seq, last.seq);
        }
        seen.push(frame);
    }
    seen
}

/// This relay's cluster frame counts for stream `name`: (published, received).
async fn cluster_frames(server: &TestServer, name: &str) -> (u64, u64) {
    let stats = server.stats().await;
    let counts = &stats["cluster"]["frames"][name];
    (
        counts["published"].as_u64().unwrap_or(0),
        counts["received"].as_u64().unwrap_or(0),
    )
}

/// Stream `name`'s `frames_published` on this relay (its hub), 0 if unknown.
async fn hub_frames(server: &TestServer, name: &str) -> u64 {
    server
        .stream_stats(name)
        .await
        .and_then(|s| s["frames_published"].as_u64())
        .unwrap_or(0)
}

/// Waits until `count` stays the same for `quiet`; returns it.
async fn settles<F, Fut>(what: &str, quiet: Duration, limit: Duration, count: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    poll_until(what, limit, Duration::from_millis(50), || async {
        let before = count().await;
        tokio::time::sleep(quiet).await;
        (count().await == before).then_some(before)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_both_relays_get_the_same_frames_and_nothing_flows_unwatched() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (r1, r2) = two_relays(&nats, &[]).await;
    let stop = uploader(&r1, "aula-1").await;

    // Relay 2 learns that relay 1 has the stream, but nobody watches it there:
    // relay 1 publishes nothing and relay 2 takes nothing.
    poll_until(
        "relay 2 knows aula-1",
        WAIT,
        Duration::from_millis(50),
        || async { r2.stream_stats("aula-1").await },
    )
    .await;
    poll_until(
        "relay 1 has 10 frames",
        WAIT,
        Duration::from_millis(50),
        || async { (hub_frames(&r1, "aula-1").await >= 10).then_some(()) },
    )
    .await;
    assert_eq!(
        cluster_frames(&r1, "aula-1").await,
        (0, 0),
        "unwatched: not published"
    );
    assert_eq!(
        cluster_frames(&r2, "aula-1").await,
        (0, 0),
        "unwatched: not taken"
    );
    let subject = "kindercam.frames.aula-1".to_owned();
    let subs = nats.subscriptions_of("relay-2").await;
    assert!(
        subs.iter().any(|s| s.starts_with("kindercam.demand.")),
        "relay 2 is on NATS: {subs:?}"
    );
    assert!(
        !subs.contains(&subject),
        "relay 2 subscribed unwatched: {subs:?}"
    );

    // A viewer on each relay: the same frames, the same numbers, at the same time.
    let path = "/video/aula-1?format=binary&meta=1";
    let mut v1 = r1.connect(path).await;
    let mut v2 = r2.connect(path).await;
    let (one, two) = tokio::join!(frames(&mut v1, 30), frames(&mut v2, 30));
    assert!(nats.subscriptions_of("relay-2").await.contains(&subject));
    let by_seq: BTreeMap<u64, &Seen> = one.iter().map(|f| (f.seq, f)).collect();
    let mut gaps: Vec<Duration> = Vec::new();
    for frame in &two {
        let Some(same) = by_seq.get(&frame.seq) else {
            continue;
        };
        assert_eq!(
            frame.jpeg, same.jpeg,
            "frame {} differs between relays",
            frame.seq
        );
        gaps.push(if frame.at > same.at {
            frame.at - same.at
        } else {
            same.at - frame.at
        });
    }
    assert!(
        gaps.len() >= 20,
        "only {} frames seen on both relays",
        gaps.len()
    );
    gaps.sort();
    let (median, worst) = (gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
    eprintln!(
        "relay 1 vs relay 2, {} frames: median {median:?}, worst {worst:?}",
        gaps.len()
    );
    assert!(
        worst <= Duration::from_millis(50),
        "the same frame reached the relays' viewers {worst:?} apart"
    );
    let (published, _) = cluster_frames(&r1, "aula-1").await;
    let (_, received) = cluster_frames(&r2, "aula-1").await;
    assert!(published >= 20 && received >= 20, "{published} {received}");

    // Relay 2's viewer leaves: relay 1 stops publishing.
    drop(v2);
    let last = settles(
        "relay 1 stops publishing",
        Duration::from_millis(800),
        WAIT,
        || async { cluster_frames(&r1, "aula-1").await.0 },
    )
    .await;
    assert!(
        hub_frames(&r1, "aula-1").await > 0 && next_seen(&mut v1, WAIT).await.is_some(),
        "the upload goes on for relay 1's own viewer"
    );
    assert_eq!(cluster_frames(&r1, "aula-1").await.0, last);
    poll_until(
        "relay 2 unsubscribes",
        WAIT,
        Duration::from_millis(50),
        || async { (!nats.subscriptions_of("relay-2").await.contains(&subject)).then_some(()) },
    )
    .await;

    // The uploader leaves relay 1: relay 2's viewers are told at once.
    let mut v2 = r2.connect(path).await;
    frames(&mut v2, 2).await;
    stop.store(true, Ordering::Relaxed);
    // (Frames still on their way come first.)
    let status = loop {
        match recv(&mut v2).await {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("meta or status JSON");
                if value["type"] == "status" {
                    break value;
                }
            }
            Message::Binary(_) => {}
            other => panic!("unexpected {}", describe(&other)),
        }
    };
    assert_eq!(status["state"], "offline", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_camera_runs_only_while_another_relay_has_a_viewer() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (r1, r2) = two_relays(
        &nats,
        &["--source", "aula-2=test-pattern", "--interval-ms", "100"],
    )
    .await;
    // Relay 2 knows relay 1's camera (it says so every second) ...
    poll_until(
        "relay 2 knows aula-2",
        WAIT,
        Duration::from_millis(50),
        || async { r2.stream_stats("aula-2").await },
    )
    .await;
    // ... and with nobody watching anywhere, the camera stays closed.
    let idle = settles(
        "the camera idles",
        Duration::from_millis(1500),
        WAIT,
        || async { hub_frames(&r1, "aula-2").await },
    )
    .await;
    assert_eq!(idle, 0, "the camera ran while nobody watched");

    // A viewer on relay 2 opens relay 1's camera.
    let mut viewer = r2.connect("/video/aula-2?format=binary&meta=1").await;
    let seen = frames(&mut viewer, 3).await;
    assert!(hub_frames(&r1, "aula-2").await >= 3);
    eprintln!(
        "first frames on relay 2: numbers {:?}",
        seen.iter().map(|f| f.seq).collect::<Vec<_>>()
    );

    // It leaves: the camera closes again (after the test pattern's idle grace).
    drop(viewer);
    let stopped = settles(
        "the camera closes",
        Duration::from_millis(1500),
        Duration::from_secs(15),
        || async { hub_frames(&r1, "aula-2").await },
    )
    .await;
    assert!(stopped >= 3);
}

/// Reads the frames that wait in `viewer`'s socket (the test did not read it
/// for a while) until one that comes as frames are made now, 100 ms apart.
async fn catch_up(viewer: &mut Ws) {
    loop {
        let asked = Instant::now();
        next_seen(viewer, WAIT).await.expect("frames flow");
        if asked.elapsed() >= Duration::from_millis(40) {
            return;
        }
    }
}

/// The longest wait between `frames_after` frames of `viewer` (each within
/// `limit`), for a test that breaks something and wants frames back.
async fn longest_gap(viewer: &mut Ws, limit: Duration, frames_after: usize) -> Duration {
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    for _ in 0..frames_after {
        let frame = next_seen(viewer, limit)
            .await
            .unwrap_or_else(|| panic!("no frame within {limit:?}"));
        longest = longest.max(frame.at - last);
        last = frame.at;
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_resume_when_a_nats_node_dies_or_goes_silent() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let (r1, r2) = two_relays(&nats, &[]).await;
    let stop = uploader(&r1, "aula-1").await;
    let mut viewer = r2.connect("/video/aula-1?format=binary&meta=1").await;
    frames(&mut viewer, 3).await;

    // kill -9 the server relay 2 takes the frames from.
    let (_, body) = healthz(&r2).await;
    let node = connected_node(&nats, &body);
    catch_up(&mut viewer).await;
    nats.kill(node);
    let gap = longest_gap(&mut viewer, Duration::from_secs(5), 30).await;
    eprintln!("kill -9 of relay 2's NATS server: longest wait for a frame {gap:?}");
    assert!(gap <= Duration::from_secs(5), "{gap:?}");
    nats.restart(node);
    nats.wait_ready().await;

    // SIGSTOP the server relay 1 publishes through: noticed, left, and frames resume.
    let (_, body) = healthz(&r1).await;
    let node = connected_node(&nats, &body);
    catch_up(&mut viewer).await;
    nats.pause(node);
    let gap = longest_gap(&mut viewer, Duration::from_secs(12), 30).await;
    eprintln!("SIGSTOP of relay 1's NATS server: longest wait for a frame {gap:?}");
    // About 3 s to notice, then a reconnect (or a new client, if the reconnect
    // hangs on the silent server), and relay 2's demand heard again.
    assert!(gap <= Duration::from_secs(10), "{gap:?}");
    let (_, body) = healthz(&r1).await;
    assert!(
        body["cluster"]["reconnects_forced"].as_u64() >= Some(1),
        "relay 1 left the silent server: {body}"
    );
    assert_ne!(connected_node(&nats, &body), node, "{body}");
    nats.resume(node);
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_while_a_nats_server_is_frozen_joins_through_another() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    nats.pause(0);
    // The client tries the servers in a random order: when it picks the frozen
    // one first it waits for a greeting that never comes, until the probe
    // sees that the others answer and starts a new client.
    for node in ["relay-a", "relay-b", "relay-c"] {
        let relay = relay(&nats, node, &[]).await;
        let (body, took) = healthz_until(&relay, "joined", RECOVERY, healthy).await;
        eprintln!(
            "{node} joined after {took:?}: {}",
            body["cluster"]["server"]
        );
        assert_ne!(connected_node(&nats, &body), 0, "{body}");
        relay.stop().await;
    }
    nats.resume(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_starts_without_nats_reports_it_down_and_joins_when_it_comes() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    for node in 0..3 {
        nats.kill(node);
    }
    let relay = relay(&nats, "relay-1", &[]).await;
    let (body, _) = healthz_until(&relay, "the outage reported", WAIT, |status, body| {
        status == 503 && body["cluster"]["nats"] == "down"
    })
    .await;
    assert_eq!(body["status"], "cluster down");
    // The pages work meanwhile: a single node's service goes on.
    assert_eq!(relay.get("/login").await.status, 200);
    for node in 0..3 {
        nats.restart(node);
    }
    nats.wait_ready().await;
    let (_, took) = healthz_until(&relay, "joined once NATS came", RECOVERY, healthy).await;
    eprintln!("joined {took:?} after the cluster was ready");
    relay.stop().await;
}

/// The relay a camera's pusher is connected to now (`/stats.json`'s `pushes`).
async fn pushing_to(camera: &TestServer) -> Option<String> {
    camera.stats().await["pushes"][0]["connected"]
        .as_str()
        .map(str::to_owned)
}

/// The whole chain of issue 13: a camera pushes to relay 1 (relay 2 its
/// failover), the relays share frames and demand on NATS. The camera stays
/// closed while nobody watches anywhere, opens for a viewer on relay 2 (whose
/// demand reaches the Pi through NATS, relay 1 and the push link), and when
/// relay 1 goes away the camera pushes to relay 2 and its viewer resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushing_camera_opens_for_a_viewer_on_the_other_relay_and_fails_over_to_it() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (r1, r2) = two_relays(&nats, &[]).await;
    let (url1, url2) = (r1.ws_url("/upload/aula-1"), r2.ws_url("/upload/aula-1"));
    let (push1, push2) = (format!("camera={url1}"), format!("camera={url2}"));
    let mut args = SMALL_CAMERA.to_vec();
    args.extend(["--push-to", &push1, "--push-to", &push2]);
    let camera = start(&args).await;
    poll_until(
        "the camera pushes to relay 1",
        WAIT,
        Duration::from_millis(50),
        || async { pushing_to(&camera).await.filter(|u| *u == url1) },
    )
    .await;
    let idle = settles(
        "the camera idles",
        Duration::from_millis(1500),
        WAIT,
        || async { hub_frames(&camera, "camera").await },
    )
    .await;
    assert_eq!(idle, 0, "the camera ran while no relay had a viewer");

    // A viewer on relay 2, which the camera does not push to.
    let mut viewer = r2.connect("/video/aula-1?format=binary&meta=1").await;
    frames(&mut viewer, 3).await;
    assert!(
        hub_frames(&camera, "camera").await >= 3,
        "the frames came from the camera"
    );

    // Relay 1 goes away: the camera moves to relay 2, and its viewer resumes.
    r1.stop().await;
    let gone = Instant::now();
    poll_until(
        "the camera pushes to relay 2",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { pushing_to(&camera).await.filter(|u| *u == url2) },
    )
    .await;
    // Frames already on their way when relay 1 stopped may still come; wait
    // for one that the camera took after it moved.
    let moved_at = hub_frames(&camera, "camera").await;
    loop {
        let left = Duration::from_secs(10).saturating_sub(gone.elapsed());
        next_seen(&mut viewer, left)
            .await
            .unwrap_or_else(|| panic!("no frame on relay 2 within 10 s of relay 1 going away"));
        if hub_frames(&camera, "camera").await > moved_at + 1 {
            break;
        }
    }
    eprintln!(
        "the viewer on relay 2 had frames again {:?} after relay 1 went away",
        gone.elapsed()
    );
    camera.stop().await;
    r2.stop().await;
}
