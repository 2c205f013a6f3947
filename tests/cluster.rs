//! Relays on a real NATS cluster (issue 13, section 3): three Debian
//! `nats-server` nodes with JetStream on loopback (`common::nats`), and
//! kindercam relays joined to them with `--nats`.
//!
//! Skipped, with a message, when nats-server is not installed outside CI.
#![cfg(feature = "cluster")]

mod common;

use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use common::*;
use serde_json::Value;

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
/// meta group the others must elect a new leader first (5-8 s with 2.9.10).
const RECOVERY: Duration = Duration::from_secs(20);

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
