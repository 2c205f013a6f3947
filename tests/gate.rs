//! The family gate as parents and teachers notice it: while a room is paused or
//! closed, a family's socket is told why and gets no pictures, a family's
//! snapshot gets the paused placeholder or a 403, staff keep watching, and
//! families alone do not open the camera. The gate is set through the hub here;
//! tests/pause.rs drives the same through the pause API.

mod common;

use std::time::Duration;

use common::*;
use kindercam::privacy::gate::{Closed, Paused};
use tokio_tungstenite::tungstenite::Message;

const INTERVAL_MS: u64 = 100;

async fn room() -> TestServer {
    start_secured(&[
        "--interval-ms",
        &INTERVAL_MS.to_string(),
        "--width",
        "96",
        "--height",
        "64",
    ])
    .await
}

async fn viewer(server: &TestServer, code: &str) -> Ws {
    viewer_at(server, code, "/video").await
}

async fn viewer_at(server: &TestServer, code: &str, path: &str) -> Ws {
    ws_with(server, path, &[("Authorization", basic_auth(code))])
        .await
        .unwrap_or_else(|status| panic!("the handshake succeeds, got {status}"))
}

/// The next frame of a `?meta=1` text viewer, skipping its meta and status
/// texts; returns when it was taken (its meta's `ts`).
async fn meta_frame(ws: &mut Ws) -> u64 {
    let mut taken = 0;
    loop {
        match recv(ws).await {
            Message::Text(text) if text.starts_with(DATA_URL_PREFIX) => return taken,
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                assert!(
                    value["type"] == "frame" || value["type"] == "status",
                    "{value}"
                );
                if value["type"] == "frame" {
                    taken = value["ts"].as_u64().expect("a capture time");
                }
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Reads a family socket until its status says `state`; returns it, how many
/// frames came before it, and the latest capture time among them (`?meta=1`).
async fn status_after_frames(ws: &mut Ws, state: &str) -> (serde_json::Value, usize, u64) {
    let mut frames = 0;
    let mut latest = 0;
    loop {
        match recv(ws).await {
            Message::Text(text) if text.starts_with(DATA_URL_PREFIX) => frames += 1,
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] == "frame" {
                    latest = latest.max(value["ts"].as_u64().unwrap());
                    continue;
                }
                let status = assert_status(&text);
                if status["state"] == state {
                    return (status, frames, latest);
                }
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    }
}

/// While `staff` receives `n` frames, `family` must receive nothing at all.
async fn family_silent_while_staff_watch(family: &mut Ws, staff: &mut Ws, n: usize) {
    for _ in 0..n {
        recv_frame(staff).await;
        if let Some(message) = recv_within(family, Duration::ZERO).await {
            panic!(
                "a held family received {} while staff watched",
                describe(&message)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_families_at_once_staff_keep_watching_and_resuming_is_immediate() {
    let server = room().await;
    let mut family = viewer_at(&server, VIEWER_CODE, "/video?meta=1").await;
    let mut staff = viewer(&server, STAFF_CODE).await;
    meta_frame(&mut family).await;
    recv_frame(&mut staff).await;

    let until = unix_now() + 600;
    let camera = server.hub.get("camera").expect("the camera stream");
    camera.set_paused(Some(Paused {
        until,
        by: "Ana".into(),
    }));
    let paused_at = unix_ms();
    // Frames sent before may wait unread in the test's socket; none taken after
    // the pause may come (the meta says when each frame was taken).
    let (status, _, latest) = status_after_frames(&mut family, "paused").await;
    assert!(
        latest <= paused_at,
        "a frame taken {} ms after the pause reached the family",
        latest - paused_at
    );
    assert_eq!(status["until"], until);
    assert_eq!(status["message"], "room_paused");
    family_silent_while_staff_watch(&mut family, &mut staff, 5).await;

    // Staff watched all through the pause, so the hub holds a frame taken during
    // it; that one must never reach the family, only frames taken after.
    let resumed_at = unix_ms();
    camera.set_paused(None);
    let first = recv_text(&mut family).await;
    assert_eq!(
        assert_status(&first)["state"],
        "live",
        "the page is told to clear the notice"
    );
    let started = std::time::Instant::now();
    let taken = meta_frame(&mut family).await;
    assert!(
        taken >= resumed_at,
        "the family got a frame taken {} ms before the resume",
        resumed_at - taken
    );
    assert!(
        started.elapsed() < Duration::from_millis(INTERVAL_MS * 3) * time_scale(),
        "frames again at once, not after a wait: {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_tells_a_joining_family_when_it_opens_and_refuses_its_snapshots() {
    let server = room().await;
    let camera = server.hub.stream("camera").unwrap();
    let opens_at = unix_now() + 3600;
    camera.set_closed(Some(Closed {
        opens_at: Some(opens_at),
    }));
    let mut family = viewer(&server, VIEWER_CODE).await;
    let status = assert_status(&recv_text(&mut family).await);
    assert_eq!(
        (&status["state"], &status["opens_at"]),
        (&"closed".into(), &opens_at.into())
    );
    let mut staff = viewer(&server, STAFF_CODE).await;
    family_silent_while_staff_watch(&mut family, &mut staff, 3).await;

    let family_auth = basic_auth(VIEWER_CODE);
    let refused = http_request(
        server.http,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &family_auth)],
        "",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("opens"), "{}", refused.text());
    let staff_auth = basic_auth(STAFF_CODE);
    let picture = http_request(
        server.http,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &staff_auth)],
        "",
    )
    .await;
    assert_eq!(picture.status, 200, "staff still see the room");

    // A family held at a closed room is not watching: not in "who is watching
    // now", and its row in the viewing log has ended.
    assert_eq!(watching_roles(&server).await, ["staff"]);

    // Opening the room brings the family's frames within an interval or so.
    camera.set_closed(None);
    status_after_frames(&mut family, "live").await;
    recv_frame(&mut family).await;
    let mut roles = watching_roles(&server).await;
    roles.sort();
    assert_eq!(
        roles,
        ["staff", "viewer"],
        "watching again once the room opened"
    );
    server.stop().await;
}

/// The roles in the admin's "who is watching now".
async fn watching_roles(server: &TestServer) -> Vec<String> {
    let admin = basic_auth(ADMIN_CODE);
    let reply = http_request(
        server.http,
        "GET",
        "/api/viewers",
        &[("Authorization", &admin)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let viewers: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    viewers
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["role"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_alone_do_not_open_a_paused_camera_and_get_the_placeholder_picture() {
    let server = room().await;
    let camera = server.hub.stream("camera").unwrap();
    camera.set_paused(Some(Paused {
        until: unix_now() + 600,
        by: "Ana".into(),
    }));
    let mut family = viewer(&server, VIEWER_CODE).await;
    assert_eq!(
        assert_status(&recv_text(&mut family).await)["state"],
        "paused"
    );
    let family_auth = basic_auth(VIEWER_CODE);
    let placeholder = http_request(
        server.http,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &family_auth)],
        "",
    )
    .await;
    assert_eq!(placeholder.status, 200, "{}", placeholder.text());
    assert_eq!(placeholder.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(placeholder.header("X-Kindercam-Gate"), Some("paused"));
    assert_eq!(
        jpeg_size(&placeholder.body),
        (96, 64),
        "the stream's configured size"
    );
    let again = http_request(
        server.http,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &family_auth)],
        "",
    )
    .await;
    assert_eq!(again.body, placeholder.body, "the same picture per pause");

    // A family socket and a family snapshot are no demand: the test pattern, which
    // starts within one interval of being wanted, stays idle over five of them.
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 5)).await;
    let stats = camera.stats();
    assert_eq!(stats.frames_published, 0, "camera stayed closed: {stats:?}");
    assert_eq!(stats.viewers, 1, "the family is still counted as a viewer");

    // Staff wake it, and get the real picture rather than the placeholder.
    let staff_auth = basic_auth(STAFF_CODE);
    let real = http_request(
        server.http,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &staff_auth)],
        "",
    )
    .await;
    assert_eq!(real.status, 200, "{}", real.text());
    assert_eq!(real.header("X-Kindercam-Gate"), None);
    assert_ne!(real.body, placeholder.body);
    server.stop().await;
}
