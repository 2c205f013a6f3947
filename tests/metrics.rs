//! `GET /metrics`: the Prometheus exposition moves as frames flow, counts logins,
//! chat messages and refusals, passes `promtool check metrics`, and is the
//! director's alone.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    basic_auth, http_request, login, poll_until, recv_binary_frame, recv_json_until, send_json,
    start, start_secured, ws_with, TestServer, ADMIN_CODE, STAFF_CODE, VIEWER_CODE, WAIT,
};
use serde_json::json;

/// `GET /metrics` with `headers`; returns the status and the body.
async fn scrape_with(server: &TestServer, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = http_request(server.http, "GET", "/metrics", headers, "").await;
    (reply.status, reply.text())
}

/// The admin's scrape, checked to be the Prometheus text format.
async fn scrape(server: &TestServer) -> String {
    let admin = basic_auth(ADMIN_CODE);
    let reply = http_request(
        server.http,
        "GET",
        "/metrics",
        &[("Authorization", &admin)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "/metrics: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    reply.text()
}

/// The value of the sample `series` (its name and labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{series} is a number: {v}"))
        })
}

/// Waits until every `(series, at least)` pair holds in one scrape; returns it.
async fn scrape_until(server: &TestServer, wanted: &[(&str, f64)]) -> String {
    poll_until(
        &format!("/metrics to reach {wanted:?}"),
        WAIT,
        Duration::from_millis(50),
        || async {
            let text = scrape(server).await;
            wanted
                .iter()
                .all(|(series, min)| sample(&text, series).is_some_and(|v| v >= *min))
                .then_some(text)
        },
    )
    .await
}

/// promtool, which the `prometheus` package installs (scripts/test does).
fn promtool() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some("/usr/bin/promtool".into()).filter(|p: &std::path::PathBuf| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "promtool not found on PATH or at /usr/bin/promtool: install it with \
                 `apt-get install prometheus` (scripts/test does that by itself)"
            )
        })
}

/// Pipes `text` through `promtool check metrics`; panics with its complaints.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\n--- the exposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_frames_flow_and_the_text_passes_promtool() {
    let promtool = promtool(); // before anything else: a missing tool fails at once
    assert!(promtool.is_file());
    let server = start_secured(&["--interval-ms", "50", "--width", "160", "--height", "120"]).await;
    let before = scrape(&server).await;
    for line in [
        "kindercam_logins_total{result=\"ok\"} 0",
        "kindercam_chat_messages_total 0",
        "kindercam_refused_connections_total{listener=\"ws\",reason=\"too_many_connections\"} 0",
    ] {
        assert!(before.lines().any(|l| l == line), "{line} in:\n{before}");
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&before, name).is_some(), "{name} in:\n{before}");
    }

    // A binary viewer of the test pattern.
    let admin = [("Authorization", basic_auth(ADMIN_CODE))];
    let mut viewer = ws_with(&server, "/video?format=binary", &admin)
        .await
        .expect("the admin may watch");
    for _ in 0..3 {
        recv_binary_frame(&mut viewer).await;
    }
    let during = scrape_until(
        &server,
        &[
            (
                "kindercam_viewers{stream=\"camera\",transport=\"ws_binary\"}",
                1.0,
            ),
            ("kindercam_source_up{stream=\"camera\"}", 1.0),
            ("kindercam_frames_published_total{stream=\"camera\"}", 3.0),
            ("kindercam_frames_sent_total{stream=\"camera\"}", 3.0),
            (
                "kindercam_video_sent_bytes_total{stream=\"camera\"}",
                3.0 * 100.0,
            ),
            (
                "kindercam_encode_duration_seconds_count{stream=\"camera\"}",
                3.0,
            ),
        ],
    )
    .await;
    assert_eq!(
        sample(
            &during,
            "kindercam_viewers{stream=\"camera\",transport=\"ws_text\"}"
        ),
        Some(0.0)
    );
    // One viewer: its frames are copied, none taken from a pipe (tests/zero_copy.rs).
    assert_eq!(
        sample(&during, "kindercam_frames_spliced_total{stream=\"camera\"}"),
        Some(0.0)
    );
    let encode_sum = sample(
        &during,
        "kindercam_encode_duration_seconds_sum{stream=\"camera\"}",
    )
    .expect("an encode time");
    assert!(encode_sum > 0.0 && encode_sum < 10.0, "{encode_sum} s");

    // The viewer leaves: its frames stay counted, and it is no longer a viewer.
    let sent = sample(&during, "kindercam_frames_sent_total{stream=\"camera\"}").unwrap();
    drop(viewer);
    let after = poll_until(
        "the viewer to be gone from /metrics",
        WAIT,
        Duration::from_millis(50),
        || async {
            let text = scrape(&server).await;
            (sample(
                &text,
                "kindercam_viewers{stream=\"camera\",transport=\"ws_binary\"}",
            ) == Some(0.0))
            .then_some(text)
        },
    )
    .await;
    let sent_after = sample(&after, "kindercam_frames_sent_total{stream=\"camera\"}").unwrap();
    assert!(
        sent_after >= sent,
        "a counter never goes down: {sent} then {sent_after}"
    );

    // Logins by result, a chat message, a refused handshake.
    let wrong = "name=Ana&code=not-the-code";
    let reply = http_request(server.http, "POST", "/login", &[], wrong).await;
    assert_eq!(reply.header("Location"), Some("/login?error=wrong_code"));
    let cookie = login(&server, "Ana", STAFF_CODE).await;
    let mut chat = ws_with(&server, "/chat", &[("Cookie", cookie)])
        .await
        .expect("staff may chat");
    send_json(
        &mut chat,
        &json!({"name": "Ana", "message": "hola", "color": "ff0000"}),
    )
    .await;
    recv_json_until(&mut chat, "the message back", |v| v["type"] == "usermsg").await;
    assert_eq!(ws_with(&server, "/nowhere", &admin).await.err(), Some(404));
    let text = scrape_until(
        &server,
        &[
            ("kindercam_logins_total{result=\"ok\"}", 1.0),
            ("kindercam_logins_total{result=\"wrong_code\"}", 1.0),
            ("kindercam_chat_messages_total", 1.0),
            (
                "kindercam_refused_connections_total{listener=\"ws\",reason=\"not_found\"}",
                1.0,
            ),
        ],
    )
    .await;
    assert_eq!(
        sample(&text, "kindercam_logins_total{result=\"rate_limited\"}"),
        Some(0.0)
    );
    promtool_check(&text);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_director_may_read_metrics() {
    let server = start_secured(&[]).await;
    let (status, _) = scrape_with(&server, &[]).await;
    assert_eq!(status, 401, "no credentials");
    for code in [VIEWER_CODE, STAFF_CODE, "not-a-code"] {
        let auth = basic_auth(code);
        let (status, body) = scrape_with(&server, &[("Authorization", &auth)]).await;
        let expected = if code == "not-a-code" { 401 } else { 403 };
        assert_eq!(status, expected, "{code}: {body}");
        assert!(!body.contains("kindercam_"), "{code} saw figures: {body}");
    }
    let family = login(&server, "Ana", VIEWER_CODE).await;
    let (status, _) = scrape_with(&server, &[("Cookie", &family)]).await;
    assert_eq!(status, 403, "a parent's session");
    let director = login(&server, "Directora", ADMIN_CODE).await;
    let (status, body) = scrape_with(&server, &[("Cookie", &director)]).await;
    assert_eq!(status, 200, "the director's session: {body}");
    assert!(body.contains("kindercam_frames_published_total"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_metrics_are_refused_like_the_admin_pages() {
    let server = start(&[]).await;
    let admin_page = server.get("/api/families").await.status;
    let (status, body) = scrape_with(&server, &[]).await;
    assert_eq!(status, admin_page, "{body}");
    assert_eq!(status, 403, "{body}");
    server.stop().await;
}
