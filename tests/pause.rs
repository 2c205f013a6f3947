//! A teacher's pause through its API, as a teacher, a parent and the director
//! notice it: staff (not parents) pause and resume a room, families stop getting
//! frames within an interval and are told until when, staff keep theirs and are
//! told of the pause when they ask, the pause ends by itself, and every pause and
//! resume is in the viewing log. Families' snapshots and the idle camera are in
//! tests/gate.rs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn flags() -> Vec<&'static str> {
    vec![
        "--auth",
        "on",
        "--viewer-code",
        VIEWER_CODE,
        "--staff-code",
        STAFF_CODE,
        "--admin-code",
        ADMIN_CODE,
        "--interval-ms",
        "100",
        "--width",
        "96",
        "--height",
        "64",
    ]
}

/// A server whose pause minute lasts `minute`.
async fn room(minute: Duration, extra: &[&str]) -> TestServer {
    let mut args = flags();
    args.extend_from_slice(extra);
    start_with(&args, move |server| server.with_pause_minute(minute)).await
}

async fn viewer(server: &TestServer, code: &str, path: &str) -> Ws {
    ws_with(server, path, &[("Authorization", basic_auth(code))])
        .await
        .unwrap_or_else(|status| panic!("{path}: refused with {status}"))
}

async fn api(server: &TestServer, code: &str, method: &str, path: &str, body: &str) -> HttpReply {
    let auth = basic_auth(code);
    http_request(server.http, method, path, &[("Authorization", &auth)], body).await
}

/// The next frame of a `?meta=1` viewer, skipping its meta and status texts.
async fn meta_frame(ws: &mut Ws) {
    loop {
        match recv(ws).await {
            Message::Binary(_) => return,
            Message::Text(text) if text.starts_with(DATA_URL_PREFIX) => return,
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                assert!(
                    value["type"] == "frame" || value["type"] == "status",
                    "{value}"
                );
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

/// Reads a socket until a JSON message of `kind` whose state is `state`; returns
/// it and how many frames came first.
async fn until_state(ws: &mut Ws, kind: &str, state: &str) -> (Value, usize) {
    let (value, frames, _) = until_state_ts(ws, kind, state).await;
    (value, frames)
}

/// As [`until_state`], also returning the latest capture time (`?meta=1`) of the
/// frames that came first.
async fn until_state_ts(ws: &mut Ws, kind: &str, state: &str) -> (Value, usize, u64) {
    let mut frames = 0;
    let mut latest = 0;
    loop {
        match recv(ws).await {
            Message::Binary(_) => frames += 1,
            Message::Text(text) if text.starts_with(DATA_URL_PREFIX) => frames += 1,
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] == "frame" {
                    latest = latest.max(value["ts"].as_u64().unwrap());
                }
                if value["type"] == kind && value["state"] == state {
                    return (value, frames, latest);
                }
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teacher_pauses_families_stop_at_once_staff_keep_watching_and_delete_resumes() {
    let server = room(Duration::from_secs(60), &[]).await;
    let mut family = viewer(&server, VIEWER_CODE, "/video?meta=1").await;
    let mut staff = viewer(&server, STAFF_CODE, "/video?format=binary&gate=1").await;
    let (told, _) = until_state(&mut staff, "gate", "open").await;
    assert_eq!(told["until"], Value::Null);
    meta_frame(&mut family).await;

    // Parents may not pause; bad lengths are refused, naming `minutes`.
    let refused = api(
        &server,
        VIEWER_CODE,
        "POST",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    for bad in [
        r#"{"minutes": 0}"#,
        r#"{"minutes": 121}"#,
        r#"{"minutes": "x"}"#,
        "nope",
    ] {
        let reply = api(
            &server,
            STAFF_CODE,
            "POST",
            "/api/streams/camera/pause",
            bad,
        )
        .await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert_eq!(reply.json()["field"], "minutes", "{bad}");
    }
    assert_eq!(
        api(&server, STAFF_CODE, "GET", "/api/streams/camera/pause", "")
            .await
            .json()["paused"],
        false,
        "nothing paused by the bad requests"
    );

    // An empty body pauses for ten minutes.
    let before = unix_now();
    let paused = api(&server, STAFF_CODE, "POST", "/api/streams/camera/pause", "").await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let state = paused.json();
    assert_eq!(
        (&state["paused"], &state["by"]),
        (&true.into(), &"staff".into())
    );
    let until = state["until"].as_i64().unwrap();
    assert!(
        (before + 600..=unix_now() + 600).contains(&until),
        "{state}"
    );

    // Frames sent before the pause may still wait unread in the test's socket;
    // none taken after the pause was answered may come (the meta says when each
    // was taken).
    let answered = unix_ms();
    let (status, _, latest) = until_state_ts(&mut family, "status", "paused").await;
    assert!(
        latest <= answered,
        "a frame taken {} ms after the pause reached the family",
        latest - answered
    );
    assert_eq!(status["until"], until);
    // Staff are told, and keep their frames while the family gets nothing.
    let (gate, _) = until_state(&mut staff, "gate", "paused").await;
    assert_eq!(gate["until"], until);
    for _ in 0..5 {
        loop {
            if let Message::Binary(_) = recv(&mut staff).await {
                break;
            }
        }
        if let Some(message) = recv_within(&mut family, Duration::ZERO).await {
            panic!("a paused family received {}", describe(&message));
        }
    }

    let resumed = api(
        &server,
        STAFF_CODE,
        "DELETE",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(resumed.json()["paused"], false);
    let (_, held_frames) = until_state(&mut family, "status", "live").await;
    assert_eq!(held_frames, 0, "no frame while paused");
    meta_frame(&mut family).await;
    until_state(&mut staff, "gate", "open").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_pause_ends_by_itself_and_every_pause_is_in_the_log() {
    // One minute of pause lasts 400 ms here.
    let server = room(Duration::from_millis(400), &[]).await;
    let mut family = viewer(&server, VIEWER_CODE, "/video").await;
    recv_frame(&mut family).await;

    let paused = api(
        &server,
        STAFF_CODE,
        "POST",
        "/api/streams/camera/pause",
        r#"{"minutes": 1}"#,
    )
    .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    until_state(&mut family, "status", "paused").await;
    // Nobody resumes it: the family's frames come back by themselves.
    let (_, frames) = until_state(&mut family, "status", "live").await;
    assert_eq!(frames, 0);
    recv_frame(&mut family).await;
    let state = api(&server, STAFF_CODE, "GET", "/api/streams/camera/pause", "").await;
    assert_eq!(state.json()["paused"], false);

    // A second pause, resumed early by the admin.
    api(
        &server,
        STAFF_CODE,
        "POST",
        "/api/streams/camera/pause",
        r#"{"minutes": 120}"#,
    )
    .await;
    until_state(&mut family, "status", "paused").await;
    let resumed = api(
        &server,
        ADMIN_CODE,
        "DELETE",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    assert_eq!(resumed.status, 200);
    until_state(&mut family, "status", "live").await;

    let log = poll_until(
        "both pauses closed in the log",
        WAIT,
        Duration::from_millis(50),
        || async {
            let rows = api(&server, ADMIN_CODE, "GET", "/api/audit", "")
                .await
                .json();
            let pauses: Vec<Value> = rows
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["kind"] == "pause")
                .cloned()
                .collect();
            (pauses.len() == 2 && pauses.iter().all(|p| !p["end"].is_null())).then_some(pauses)
        },
    )
    .await;
    for row in &log {
        assert_eq!(
            (&row["role"], &row["stream"]),
            (&"staff".into(), &"camera".into()),
            "{row}"
        );
        assert!(
            row["until"].as_i64().unwrap() >= row["start"].as_i64().unwrap(),
            "{row}"
        );
    }
    assert!(log[0].get("resumed_by").is_none(), "ran out: {}", log[0]);
    assert_eq!(log[1]["resumed_by"], "admin", "resumed early, by whom");
    let csv = api(&server, ADMIN_CODE, "GET", "/api/audit?format=csv", "")
        .await
        .text();
    assert_eq!(
        csv.lines().filter(|l| l.contains(",pause,")).count(),
        2,
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(",pause,") && l.ends_with(",admin")),
        "who resumed it: {csv}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_restart_and_a_browser_session_needs_its_csrf_token() {
    let state = TempDir::new("pause");
    let dir = state.path().to_str().unwrap();
    let first = room(Duration::from_secs(60), &["--state-dir", dir]).await;
    let cookie = login(&first, "Marta", STAFF_CODE).await;
    let config = http_request(
        first.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    let token = config.json()["csrf"].as_str().unwrap().to_owned();
    let without = http_request(
        first.http,
        "POST",
        "/api/streams/camera/pause",
        &[("Cookie", &cookie)],
        r#"{"minutes": 30}"#,
    )
    .await;
    assert_eq!(without.status, 403, "{}", without.text());
    let with = http_request(
        first.http,
        "POST",
        "/api/streams/camera/pause",
        &[("Cookie", &cookie), ("X-CSRF-Token", &token)],
        r#"{"minutes": 30}"#,
    )
    .await;
    assert_eq!(with.status, 200, "{}", with.text());
    assert_eq!(with.json()["by"], "Marta");
    let until = with.json()["until"].clone();
    first.stop().await;

    // Restarted (an update, a power cut): the room is still paused for families.
    let second = room(Duration::from_secs(60), &["--state-dir", dir]).await;
    let mut family = viewer(&second, VIEWER_CODE, "/video").await;
    let status = assert_status(&recv_text(&mut family).await);
    assert_eq!(
        (&status["state"], &status["until"]),
        (&"paused".into(), &until)
    );
    let state = api(&second, STAFF_CODE, "GET", "/api/streams/camera/pause", "")
        .await
        .json();
    assert_eq!(
        (&state["paused"], &state["by"]),
        (&true.into(), &"Marta".into())
    );
    api(
        &second,
        STAFF_CODE,
        "DELETE",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    until_state(&mut family, "status", "live").await;
    second.stop().await;
}
