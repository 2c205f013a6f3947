//! Link tokens: the admin API that makes, lists and revokes them, what each scope
//! opens (and everything it does not), `?token=` and `Authorization: Bearer`,
//! revocation closing the token's sockets, the viewing log, the database holding
//! only hashes, and tokens outliving a restart. Against a real server on loopback,
//! as Home Assistant, a camera Pi or the admin page would use it. Also the
//! snapshot aliases `/snapshot` and `/?action=snapshot`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

/// Two cameras, `camera` and `aula-2`, with frames every 100 ms.
async fn centre(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--source",
        "test-pattern",
        "--source",
        "aula-2=test-pattern",
        "--interval-ms",
        "100",
        "--width",
        "96",
        "--height",
        "64",
    ];
    args.extend_from_slice(extra);
    start_secured(&args).await
}

async fn with_auth(
    server: &TestServer,
    authorization: &str,
    method: &str,
    path: &str,
    body: &str,
) -> HttpReply {
    http_request(
        server.http,
        method,
        path,
        &[("Authorization", authorization)],
        body,
    )
    .await
}

async fn admin(server: &TestServer, method: &str, path: &str, body: &str) -> HttpReply {
    with_auth(server, &basic_auth(ADMIN_CODE), method, path, body).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Makes a token; returns its id and secret.
async fn make_token(
    server: &TestServer,
    name: &str,
    rooms: &[&str],
    scope: &str,
) -> (String, String) {
    let body = json!({"name": name, "rooms": rooms, "scope": scope}).to_string();
    let reply = admin(server, "POST", "/api/tokens", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let token = reply.json();
    (
        token["id"].as_str().unwrap().to_owned(),
        token["token"].as_str().unwrap().to_owned(),
    )
}

/// Waits for the next binary frame (statuses are skipped).
async fn next_picture(ws: &mut Ws, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(ws, left).await {
            Some(Message::Binary(_)) => return,
            Some(Message::Text(_)) => continue,
            other => panic!("{what}: no picture, got {other:?}"),
        }
    }
}

fn field_of(reply: &HttpReply) -> String {
    assert_eq!(reply.status, 400, "{}", reply.text());
    reply.json()["field"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_jpeg(reply: &HttpReply) -> bool {
    reply.status == 200
        && reply.header("Content-Type") == Some("image/jpeg")
        && reply.body.starts_with(&[0xFF, 0xD8])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_makes_lists_and_revokes_tokens_and_bad_input_names_its_field() {
    let server = centre(&[]).await;
    // Only the admin: staff and parents get 403, strangers 401.
    for code in [STAFF_CODE, VIEWER_CODE] {
        let reply = with_auth(&server, &basic_auth(code), "GET", "/api/tokens", "").await;
        assert_eq!(reply.status, 403, "{code}");
    }
    assert_eq!(server.get("/api/tokens").await.status, 401);

    for (body, field) in [
        (r#"{"name":"HA","scope":"admin"}"#, "scope"),
        (r#"{"name":"HA"}"#, "scope"),
        (r#"{"name":"  ","scope":"view"}"#, "name"),
        (r#"{"scope":"view"}"#, "name"),
        (
            r#"{"name":"HA","scope":"view","rooms":["camera","Aula Dos"]}"#,
            "rooms[1]",
        ),
        (r#"{"name":"HA","scope":"view","rooms":[]}"#, "rooms"),
        (
            r#"{"name":"HA","scope":"push","rooms":["camera"]}"#,
            "rooms[0]",
        ),
        (
            r#"{"name":"HA","scope":"metrics","rooms":["camera"]}"#,
            "rooms",
        ),
        (r#"{"name":"HA","scope":"view","token":"mine"}"#, "token"),
        ("name=HA", "body"),
    ] {
        let reply = admin(&server, "POST", "/api/tokens", body).await;
        assert_eq!(field_of(&reply), field, "{body}");
    }
    assert_eq!(
        admin(&server, "GET", "/api/tokens", "").await.json(),
        json!([])
    );

    // A browser session must carry its CSRF token, as for every admin change.
    let cookie = login(&server, "Directora", ADMIN_CODE).await;
    let body = r#"{"name":"Home Assistant","rooms":["camera"],"scope":"view"}"#;
    let no_csrf = http_request(
        server.http,
        "DELETE",
        "/api/tokens/tnope",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.text());
    let config = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await
    .json();
    let csrf = config["csrf"].as_str().unwrap().to_owned();
    let made = http_request(
        server.http,
        "POST",
        "/api/tokens",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        body,
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    let secret = made["token"].as_str().unwrap();
    assert!(secret.starts_with("kc_") && secret.len() > 40, "{secret}");
    assert_eq!(
        (
            &made["name"],
            &made["rooms"],
            &made["scope"],
            &made["last_used"]
        ),
        (
            &json!("Home Assistant"),
            &json!(["camera"]),
            &json!("view"),
            &Value::Null
        )
    );
    assert!(made["created"].as_i64().unwrap() > 0);

    let listed = admin(&server, "GET", "/api/tokens", "").await;
    assert_eq!(listed.status, 200);
    assert!(
        !listed.text().contains(secret),
        "the list never shows the token"
    );
    let listed = listed.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], made["id"]);
    assert_eq!(listed[0].get("token"), None);

    // Sixty-four at most: the next is refused, and says why.
    for i in 1..64 {
        make_token(&server, &format!("Token {i}"), &[], "metrics").await;
    }
    let full = admin(
        &server,
        "POST",
        "/api/tokens",
        r#"{"name":"one more","scope":"metrics"}"#,
    )
    .await;
    assert_eq!(full.status, 409, "{}", full.text());
    assert!(full.json()["error"].as_str().unwrap().contains("64"));

    let id = made["id"].as_str().unwrap();
    let gone = admin(&server, "DELETE", &format!("/api/tokens/{id}"), "").await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    assert_eq!(
        admin(&server, "DELETE", &format!("/api/tokens/{id}"), "")
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&server, "GET", "/api/tokens", "")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        63
    );
    assert_eq!(
        server
            .get(&format!("/snapshot.jpg?token={secret}"))
            .await
            .status,
        401,
        "a revoked token opens nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_token_watches_its_rooms_by_url_or_bearer_and_nothing_else() {
    let server = centre(&[]).await;
    let (_, view) = make_token(&server, "Home Assistant", &["camera"], "view").await;

    // Snapshots, under every name, with the token in the URL or as Bearer.
    for path in [
        format!("/snapshot.jpg?token={view}"),
        format!("/snapshot?token={view}"),
        format!("/?action=snapshot&token={view}"),
        format!("/snapshot.jpg?stream=camera&token={view}"),
    ] {
        let reply = server.get(&path).await;
        assert!(is_jpeg(&reply), "{path}: {} {}", reply.status, reply.text());
    }
    let reply = with_auth(&server, &bearer(&view), "GET", "/snapshot.jpg", "").await;
    assert!(is_jpeg(&reply), "Bearer: {}", reply.status);
    let other_room = server
        .get(&format!("/snapshot.jpg?stream=aula-2&token={view}"))
        .await;
    assert_eq!(other_room.status, 403, "{}", other_room.text());
    assert_eq!(
        server.get("/snapshot.jpg?token=kc_made-up").await.status,
        401
    );

    // Video, with the token in the URL or as Bearer; not another room's.
    let mut by_url = ws_with(&server, &format!("/video?format=binary&token={view}"), &[])
        .await
        .expect("?token= opens /video");
    next_picture(&mut by_url, "video by ?token=").await;
    let mut by_header = ws_with(
        &server,
        "/video?format=binary",
        &[("Authorization", bearer(&view))],
    )
    .await
    .expect("Bearer opens /video");
    next_picture(&mut by_header, "video by Bearer").await;
    assert_eq!(
        ws_with(&server, &format!("/video/aula-2?token={view}"), &[])
            .await
            .unwrap_err(),
        403
    );

    // Never the chat, an upload, a page or the admin's work.
    assert_eq!(
        ws_with(&server, "/chat", &[("Authorization", bearer(&view))])
            .await
            .unwrap_err(),
        403
    );
    assert_eq!(
        ws_with(&server, &format!("/chat?token={view}"), &[])
            .await
            .unwrap_err(),
        401,
        "a URL token is not read on the chat"
    );
    assert_eq!(
        ws_with(&server, "/upload/hall", &[("Authorization", bearer(&view))])
            .await
            .unwrap_err(),
        403
    );
    for path in [
        "/",
        "/config.json",
        "/stats.json",
        "/camera",
        "/admin",
        "/api/families",
        "/api/tokens",
    ] {
        let reply = with_auth(&server, &bearer(&view), "GET", path, "").await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
    }
    let reply = with_auth(
        &server,
        &bearer(&view),
        "POST",
        "/api/tokens",
        r#"{"name":"x","scope":"view"}"#,
    )
    .await;
    assert_eq!(reply.status, 403, "a token cannot make tokens");
    let reply = with_auth(
        &server,
        &bearer(&view),
        "POST",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    assert_eq!(reply.status, 403, "nor pause a room");
    for path in [
        format!("/?token={view}"),
        format!("/config.json?token={view}"),
    ] {
        let reply = server.get(&path).await;
        assert_eq!(reply.status, 401, "{path}: a URL token opens no page");
    }

    // A metrics token opens none of this either.
    let (_, metrics) = make_token(&server, "Prometheus", &[], "metrics").await;
    assert_eq!(
        server
            .get(&format!("/snapshot.jpg?token={metrics}"))
            .await
            .status,
        403
    );
    assert_eq!(
        ws_with(&server, &format!("/video?token={metrics}"), &[])
            .await
            .unwrap_err(),
        403
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_token_is_held_at_the_gate_like_a_family() {
    let server = centre(&[]).await;
    let (_, view) = make_token(&server, "Home Assistant", &["camera"], "view").await;
    let mut video = ws_with(&server, &format!("/video?format=binary&token={view}"), &[])
        .await
        .unwrap();
    next_picture(&mut video, "before the pause").await;

    let paused = with_auth(
        &server,
        &basic_auth(STAFF_CODE),
        "POST",
        "/api/streams/camera/pause",
        "",
    )
    .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let status = recv_json_until(&mut video, "the paused status", |m| m["type"] == "status").await;
    assert_eq!(status["state"], "paused", "{status}");
    let snapshot = server.get(&format!("/snapshot.jpg?token={view}")).await;
    assert!(is_jpeg(&snapshot));
    assert_eq!(
        snapshot.header("X-Kindercam-Gate"),
        Some("paused"),
        "the placeholder, not the room"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_closes_its_sockets_within_two_seconds_and_no_one_elses() {
    let server = centre(&[]).await;
    let (view_id, view) = make_token(&server, "Home Assistant", &["camera"], "view").await;
    let (push_id, push) = make_token(&server, "Pi del patio", &["patio"], "push").await;
    let (_, other) = make_token(&server, "OctoPrint", &["camera"], "view").await;
    let mut watched = ws_with(&server, &format!("/video?format=binary&token={view}"), &[])
        .await
        .unwrap();
    let mut bearer_watched = ws_with(
        &server,
        "/video?format=binary",
        &[("Authorization", bearer(&view))],
    )
    .await
    .unwrap();
    let mut uploader = ws_with(&server, &format!("/upload/patio?token={push}"), &[])
        .await
        .unwrap();
    let mut untouched = ws_with(&server, &format!("/video?format=binary&token={other}"), &[])
        .await
        .unwrap();
    next_picture(&mut watched, "before").await;
    next_picture(&mut bearer_watched, "before, Bearer").await;
    next_picture(&mut untouched, "the other token, before").await;

    let revoked = Instant::now();
    for id in [&view_id, &push_id] {
        let reply = admin(&server, "DELETE", &format!("/api/tokens/{id}"), "").await;
        assert_eq!(reply.status, 204);
    }
    let (a, b, c) = tokio::join!(
        expect_close(&mut watched),
        expect_close(&mut bearer_watched),
        expect_close(&mut uploader)
    );
    let took = revoked.elapsed();
    assert_eq!(
        (a, b, c),
        (1008, 1008, 1008),
        "each socket is told it ended"
    );
    assert!(
        took < Duration::from_secs(2) * time_scale(),
        "closed {took:?} after the revocation"
    );
    for i in 0..3 {
        next_picture(&mut untouched, &format!("the other token, frame {i} after")).await;
    }
    assert_eq!(
        ws_with(&server, &format!("/video?token={view}"), &[])
            .await
            .unwrap_err(),
        401
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_token_feeds_its_own_streams_and_nothing_else() {
    let server = centre(&[]).await;
    let (_, push) = make_token(&server, "Pi del patio", &["patio"], "push").await;
    let mut viewer = ws_with(
        &server,
        "/video/patio?format=binary",
        &[("Authorization", basic_auth(STAFF_CODE))],
    )
    .await
    .unwrap();
    let mut uploader = ws_with(
        &server,
        "/upload/patio",
        &[("Authorization", bearer(&push))],
    )
    .await
    .expect("Bearer opens its own stream's upload");
    // A push token is a camera that acts on demand: it is told without asking.
    recv_json_until(&mut uploader, "the staff viewer as demand", |v| {
        *v == json!({"type": "demand", "viewers": 1})
    })
    .await;
    send_text(&mut uploader, data_url(&make_jpeg(64, 48, 7))).await;
    let ack = recv_json(&mut uploader).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    next_picture(&mut viewer, "staff watching the pushed stream").await;

    assert_eq!(
        ws_with(&server, &format!("/upload/hall?token={push}"), &[])
            .await
            .unwrap_err(),
        403,
        "not another stream"
    );
    assert_eq!(
        ws_with(&server, &format!("/video/patio?token={push}"), &[])
            .await
            .unwrap_err(),
        403,
        "a push token does not watch"
    );
    assert_eq!(
        ws_with(&server, "/chat/patio", &[("Authorization", bearer(&push))])
            .await
            .unwrap_err(),
        403
    );
    assert_eq!(
        server
            .get(&format!("/snapshot.jpg?stream=patio&token={push}"))
            .await
            .status,
        403
    );
    for path in ["/", "/camera", "/api/tokens"] {
        let reply = with_auth(&server, &bearer(&push), "GET", path, "").await;
        assert_eq!(reply.status, 403, "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_use_is_logged_under_its_name_kept_as_a_hash_and_survives_a_restart() {
    let state = TempDir::new("tokens-state");
    let dir = state.path().to_str().unwrap().to_owned();
    let server = centre(&["--state-dir", &dir]).await;
    let (id, view) = make_token(&server, "Home Assistant", &["camera"], "view").await;
    let before = kindercam::store::unix_now();
    let mut video = ws_with(&server, &format!("/video?format=binary&token={view}"), &[])
        .await
        .unwrap();
    next_picture(&mut video, "watching").await;
    let now = admin(&server, "GET", "/api/viewers", "").await.json();
    let watching: Vec<&Value> = now
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "token")
        .collect();
    assert_eq!(watching.len(), 1, "{now}");
    assert_eq!(watching[0]["name"], "Home Assistant");
    drop(video);
    for _ in 0..3 {
        assert!(is_jpeg(
            &server.get(&format!("/snapshot.jpg?token={view}")).await
        ));
    }

    let path = format!("/api/audit?since={before}");
    let rows = poll_until(
        "the token's rows in the log",
        WAIT,
        Duration::from_millis(50),
        || async {
            let rows = admin(&server, "GET", &path, "").await.json();
            let tokens: Vec<Value> = rows
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["kind"] == "token")
                .cloned()
                .collect();
            // The video's row (closed) and one row for the run of snapshots.
            (tokens.len() == 2 && !tokens[0]["end"].is_null()).then_some(tokens)
        },
    )
    .await;
    for row in &rows {
        assert_eq!(
            (
                &row["name"],
                &row["stream"],
                &row["family"],
                &row["address"]
            ),
            (
                &json!("Home Assistant"),
                &json!("camera"),
                &Value::Null,
                &json!("127.0.0.1")
            ),
            "{row}"
        );
    }
    let listed = admin(&server, "GET", "/api/tokens", "").await.json();
    assert!(
        listed[0]["last_used"].as_i64().unwrap() >= before,
        "{listed}"
    );
    server.stop().await;

    // Only the hash is on disk: not in the database, its WAL or anywhere beside.
    let hash = sha2::Sha256::digest(view.as_bytes());
    let mut found_hash = false;
    for entry in std::fs::read_dir(state.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes.windows(view.len()).any(|w| w == view.as_bytes()),
            "the token itself was written to disk"
        );
        found_hash |= bytes.windows(32).any(|w| w == hash.as_slice());
    }
    assert!(found_hash, "the token's SHA-256 is kept");

    // After a restart the token works and is listed, the secret still not shown.
    let again = centre(&["--state-dir", &dir]).await;
    assert!(is_jpeg(
        &again.get(&format!("/snapshot.jpg?token={view}")).await
    ));
    let listed = admin(&again, "GET", "/api/tokens", "").await;
    assert_eq!(listed.json()[0]["id"], id.as_str());
    assert!(!listed.text().contains(&view));
    let mut video = ws_with(&again, &format!("/video?format=binary&token={view}"), &[])
        .await
        .expect("the token opens video after the restart");
    next_picture(&mut video, "after the restart").await;
    again.stop().await;
}
