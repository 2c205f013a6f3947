//! Families: the admin API that adds, edits, rotates and revokes them, the
//! rooms a family's login opens and no other, its device limit, and the viewing
//! log of who watched. Against a real server on loopback, as a director's
//! script or the admin page would use it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Two cameras, `camera` and `aula-2`, with frames every 100 ms.
async fn centre() -> TestServer {
    start_secured(&[
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
    ])
    .await
}

/// A request with `code` over HTTP Basic auth, as a script or VLC makes it.
async fn with_code(
    server: &TestServer,
    code: &str,
    method: &str,
    path: &str,
    body: &str,
) -> HttpReply {
    let auth = basic_auth(code);
    http_request(server.http, method, path, &[("Authorization", &auth)], body).await
}

/// An admin API call with the admin code.
async fn admin(server: &TestServer, method: &str, path: &str, body: &str) -> HttpReply {
    with_code(server, ADMIN_CODE, method, path, body).await
}

/// Adds a family; returns its id and code.
async fn add_family(server: &TestServer, name: &str, rooms: &[&str], max: u32) -> (String, String) {
    let body = json!({"name": name, "rooms": rooms, "max_devices": max}).to_string();
    let reply = admin(server, "POST", "/api/families", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let family = reply.json();
    (
        family["id"].as_str().unwrap().to_owned(),
        family["code"].as_str().unwrap().to_owned(),
    )
}

async fn config_of(server: &TestServer, cookie: &str) -> HttpReply {
    http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Cookie", cookie)],
        "",
    )
    .await
}

/// A binary video socket of a login session.
async fn watch(server: &TestServer, cookie: &str, stream: &str) -> Result<Ws, u16> {
    let path = if stream == "camera" {
        "/video?format=binary".to_owned()
    } else {
        format!("/video/{stream}?format=binary")
    };
    ws_with(server, &path, &[("Cookie", cookie.to_owned())]).await
}

/// Waits for the next binary frame (statuses are skipped).
async fn next_picture(ws: &mut Ws, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(ws, left).await {
            Some(tokio_tungstenite::tungstenite::Message::Binary(_)) => return,
            Some(tokio_tungstenite::tungstenite::Message::Text(_)) => continue,
            Some(tokio_tungstenite::tungstenite::Message::Ping(_)) => continue,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_adds_lists_edits_rotates_and_revokes_families() {
    let server = centre().await;
    // Only the admin may: staff and parents get 403, strangers 401.
    for (code, status) in [(STAFF_CODE, 403), (VIEWER_CODE, 403)] {
        let reply = with_code(&server, code, "GET", "/api/families", "").await;
        assert_eq!(reply.status, status, "{code}");
        assert!(reply.json()["error"].as_str().unwrap().contains("admin"));
    }
    assert_eq!(server.get("/api/families").await.status, 401);

    // Every bad input is a 400 naming the field, and nothing is added.
    for (body, field) in [
        (r#"{"rooms":["camera"]}"#, "name"),
        (r#"{"name":"   "}"#, "name"),
        (r#"{"name":"A","rooms":["camera","Aula Dos"]}"#, "rooms[1]"),
        (r#"{"name":"A","rooms":"camera"}"#, "rooms"),
        (r#"{"name":"A","max_devices":0}"#, "max_devices"),
        (r#"{"name":"A","max_devices":21}"#, "max_devices"),
        (r#"{"name":"A","code":"mine"}"#, "code"),
        ("name=A", "body"),
    ] {
        let reply = admin(&server, "POST", "/api/families", body).await;
        assert_eq!(field_of(&reply), field, "{body}");
    }
    assert_eq!(
        admin(&server, "GET", "/api/families", "").await.json(),
        json!([])
    );

    let (id, code) = add_family(&server, "Familia Pérez", &["camera"], 3).await;
    let listed = admin(&server, "GET", "/api/families", "").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let family = &listed[0];
    assert_eq!(
        (
            family["id"].as_str(),
            family["name"].as_str(),
            family["max_devices"].as_u64()
        ),
        (Some(id.as_str()), Some("Familia Pérez"), Some(3))
    );
    assert_eq!(family["rooms"], json!(["camera"]));
    assert_eq!(family["watching"], 0);
    assert!(family["created"].as_i64().unwrap() > 0 && family["last_seen"].is_null());
    assert!(
        family.get("code").is_none(),
        "codes are shown only when made"
    );

    // The family logs in with its own code and its own name for the chat.
    let mama = login(&server, "Mam%C3%A1", &code).await;
    let config = config_of(&server, &mama).await.json();
    assert_eq!(
        (
            config["role"].as_str(),
            config["family"].as_str(),
            config["name"].as_str()
        ),
        (Some("viewer"), Some("Familia Pérez"), Some("Mamá"))
    );
    assert_eq!(config["rooms"], json!(["camera"]));
    let seen = admin(&server, "GET", "/api/families", "").await.json();
    assert!(
        seen[0]["last_seen"].as_i64().is_some(),
        "a login counts as seen"
    );

    // An edit that is half wrong changes nothing.
    let path = format!("/api/families/{id}");
    let reply = admin(
        &server,
        "PATCH",
        &path,
        r#"{"name":"Pérez","max_devices":50}"#,
    )
    .await;
    assert_eq!(field_of(&reply), "max_devices");
    assert_eq!(
        admin(&server, "GET", "/api/families", "").await.json()[0]["name"],
        "Familia Pérez"
    );
    let edited = admin(
        &server,
        "PATCH",
        &path,
        r#"{"rooms":["camera","aula-2"],"max_devices":2}"#,
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.text());
    assert_eq!(edited.json()["rooms"], json!(["camera", "aula-2"]));
    assert_eq!(edited.json()["max_devices"], 2);
    assert_eq!(
        config_of(&server, &mama).await.json()["rooms"],
        json!(["camera", "aula-2"])
    );
    assert_eq!(
        admin(
            &server,
            "PATCH",
            "/api/families/fnope",
            r#"{"max_devices":2}"#
        )
        .await
        .status,
        404
    );

    // A new code: the old one and its sessions end, the new one works.
    let rotated = admin(&server, "POST", &format!("{path}/code"), "").await;
    assert_eq!(rotated.status, 200);
    let new_code = rotated.json()["code"].as_str().unwrap().to_owned();
    assert_ne!(new_code, code);
    assert_eq!(
        config_of(&server, &mama).await.status,
        401,
        "the session ended"
    );
    let reply = http_request(
        server.http,
        "POST",
        "/login",
        &[],
        &format!("name=Mam%C3%A1&code={code}"),
    )
    .await;
    assert_eq!(reply.header("Location"), Some("/login?error=wrong_code"));
    let papa = login(&server, "Pap%C3%A1", &new_code).await;

    // Revoked: its sessions end and its code stops working at once.
    assert_eq!(admin(&server, "DELETE", &path, "").await.status, 204);
    assert_eq!(config_of(&server, &papa).await.status, 401);
    let reply = with_code(&server, &new_code, "GET", "/config.json", "").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        admin(&server, "GET", "/api/families", "").await.json(),
        json!([])
    );
    assert_eq!(admin(&server, "DELETE", &path, "").await.status, 404);
    assert_eq!(
        admin(&server, "POST", &format!("{path}/code"), "")
            .await
            .status,
        404
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_family_closes_its_sockets_within_a_second_and_no_one_elses() {
    let server = centre().await;
    let (perez, perez_code) = add_family(&server, "Pérez", &["camera"], 3).await;
    let (_, lopez_code) = add_family(&server, "López", &["camera"], 3).await;
    let perez_cookie = login(&server, "Ana", &perez_code).await;
    let lopez_cookie = login(&server, "Luis", &lopez_code).await;
    let mut perez_video = watch(&server, &perez_cookie, "camera").await.unwrap();
    let mut perez_basic = ws_with(
        &server,
        "/video?format=binary",
        &[("Authorization", basic_auth(&perez_code))],
    )
    .await
    .unwrap();
    let mut perez_chat = ws_with(&server, "/chat", &[("Cookie", perez_cookie.clone())])
        .await
        .unwrap();
    let mut lopez_video = watch(&server, &lopez_cookie, "camera").await.unwrap();
    next_picture(&mut perez_video, "Pérez, before").await;
    next_picture(&mut perez_basic, "Pérez by Basic auth, before").await;
    next_picture(&mut lopez_video, "López, before").await;

    let revoked = Instant::now();
    let reply = admin(&server, "DELETE", &format!("/api/families/{perez}"), "").await;
    assert_eq!(reply.status, 204);
    let (a, b, c) = tokio::join!(
        expect_close(&mut perez_video),
        expect_close(&mut perez_basic),
        expect_close(&mut perez_chat)
    );
    let took = revoked.elapsed();
    assert_eq!(
        (a, b, c),
        (1008, 1008, 1008),
        "each socket is told its session ended"
    );
    assert!(
        took < Duration::from_secs(1) * time_scale(),
        "closed {took:?} after the revocation"
    );
    // The other family never noticed.
    for i in 0..3 {
        next_picture(&mut lopez_video, &format!("López, frame {i} after")).await;
    }
    assert_eq!(
        watch(&server, &perez_cookie, "camera").await.unwrap_err(),
        401
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_reaches_only_its_rooms_and_each_room_has_its_own_chat() {
    let server = centre().await;
    let (id, code) = add_family(&server, "Pérez", &["camera"], 3).await;
    let cookie = login(&server, "Ana", &code).await;
    let with_cookie = [("Cookie", cookie.as_str())];

    // The other room: 403 on its video, snapshot and chat, by session or Basic auth.
    assert_eq!(watch(&server, &cookie, "aula-2").await.unwrap_err(), 403);
    assert_eq!(
        ws_with(&server, "/chat/aula-2", &[("Cookie", cookie.clone())])
            .await
            .unwrap_err(),
        403
    );
    let snapshot = http_request(
        server.http,
        "GET",
        "/snapshot.jpg?stream=aula-2",
        &with_cookie,
        "",
    )
    .await;
    assert_eq!(snapshot.status, 403);
    assert!(snapshot.text().contains("room"), "{}", snapshot.text());
    let by_basic = with_code(&server, &code, "GET", "/snapshot.jpg?stream=aula-2", "").await;
    assert_eq!(by_basic.status, 403);
    // Its own room works, and /stats.json shows only it.
    let own = http_request(server.http, "GET", "/snapshot.jpg", &with_cookie, "").await;
    assert_eq!(own.status, 200);
    let stats = http_request(server.http, "GET", "/stats.json", &with_cookie, "")
        .await
        .json();
    let names: Vec<&str> = stats["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"aula-2"), "{names:?}");

    // Chat is per room: the family hears its room, not the other one.
    let mut family_chat = ws_with(&server, "/chat", &[("Cookie", cookie.clone())])
        .await
        .unwrap();
    let staff = login(&server, "Profe", STAFF_CODE).await;
    let mut staff_aula2 = ws_with(&server, "/chat/aula-2", &[("Cookie", staff.clone())])
        .await
        .unwrap();
    let mut staff_camera = ws_with(&server, "/chat", &[("Cookie", staff.clone())])
        .await
        .unwrap();
    send_json(&mut staff_aula2, &json!({"message": "solo para aula 2"})).await;
    send_json(
        &mut staff_camera,
        &json!({"message": "para la sala de camera"}),
    )
    .await;
    let heard = recv_json_until(&mut family_chat, "the camera room's message", |v| {
        v["type"] == "usermsg"
    })
    .await;
    assert_eq!(
        heard["message"], "para la sala de camera",
        "nothing from aula-2 came first"
    );
    // Staff see who speaks: the name and the family.
    send_json(&mut family_chat, &json!({"message": "hola"})).await;
    let from_family = recv_json_until(&mut staff_camera, "the family's message", |v| {
        v["type"] == "usermsg" && v["message"] == "hola"
    })
    .await;
    assert_eq!(
        (from_family["name"].as_str(), from_family["family"].as_str()),
        (Some("Ana"), Some("Pérez"))
    );

    // Taking the room away closes the family's socket in it.
    let mut video = watch(&server, &cookie, "camera").await.unwrap();
    next_picture(&mut video, "before the room is taken").await;
    let moved = admin(
        &server,
        "PATCH",
        &format!("/api/families/{id}"),
        r#"{"rooms":["aula-2"]}"#,
    )
    .await;
    assert_eq!(moved.status, 200);
    assert_eq!(expect_close(&mut video).await, 1008);
    let mut aula2 = watch(&server, &cookie, "aula-2")
        .await
        .expect("the new room opens");
    next_picture(&mut aula2, "the new room").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_device_is_refused_and_the_other_three_keep_watching() {
    let server = centre().await;
    let (_, code) = add_family(&server, "Pérez", &["camera"], 3).await;
    let mut watching = Vec::new();
    for name in ["Ana", "Luis", "Eva"] {
        let cookie = login(&server, name, &code).await;
        let mut ws = watch(&server, &cookie, "camera").await.unwrap();
        next_picture(&mut ws, name).await;
        watching.push(ws);
    }
    // A second tab of a device that watches already takes no new place.
    let ana_again = login(&server, "Abuela", &code).await;
    let mut fourth = watch(&server, &ana_again, "camera")
        .await
        .expect("the handshake succeeds");
    let refusal = recv_json_until(&mut fourth, "the refusal", |v| v["type"] == "status").await;
    assert_eq!(
        (refusal["state"].as_str(), refusal["reason"].as_str()),
        (Some("refused"), Some("device_limit"))
    );
    assert_eq!(refusal["limit"], 3, "the refusal names the limit");
    assert!(refusal["message"].as_str().unwrap().contains('3'));
    assert_eq!(expect_close(&mut fourth).await, 4003);
    for (i, ws) in watching.iter_mut().enumerate() {
        next_picture(ws, &format!("device {i} after the refusal")).await;
    }
    // A place comes free when a device leaves.
    drop(watching.pop());
    let mut now_fits = poll_until("a free place", WAIT, Duration::from_millis(50), || async {
        let mut ws = watch(&server, &ana_again, "camera").await.ok()?;
        match recv_within(&mut ws, Duration::from_millis(500)).await {
            Some(tokio_tungstenite::tungstenite::Message::Binary(_)) => Some(ws),
            _ => None,
        }
    })
    .await;
    next_picture(&mut now_fits, "the device that waited").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewing_session_is_logged_and_exports_as_csv() {
    let server = centre().await;
    let (id, code) = add_family(&server, "Pérez, \"los de Ana\"", &["camera"], 3).await;
    let before = kindercam::store::unix_now();
    let cookie = login(&server, "Ana", &code).await;
    let mut video = watch(&server, &cookie, "camera").await.unwrap();
    next_picture(&mut video, "watching").await;

    let now = admin(&server, "GET", "/api/viewers", "").await.json();
    let mine: Vec<&Value> = now
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["family"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{now}");
    assert_eq!(
        (mine[0]["name"].as_str(), mine[0]["stream"].as_str()),
        (Some("Ana"), Some("camera"))
    );
    assert_eq!(mine[0]["address"], "127.0.0.1");

    let path = format!("/api/audit?since={before}");
    let log = || async { admin(&server, "GET", &path, "").await.json() };
    let open = poll_until(
        "the open session in the log",
        WAIT,
        Duration::from_millis(50),
        || async {
            let rows = log().await;
            rows.as_array()
                .unwrap()
                .iter()
                .find(|r| r["family"] == id.as_str())
                .cloned()
        },
    )
    .await;
    assert!(
        open["start"].as_i64().unwrap() >= before && open["end"].is_null(),
        "{open}"
    );
    assert_eq!(
        (open["role"].as_str(), open["name"].as_str()),
        (Some("viewer"), Some("Ana"))
    );

    drop(video);
    let closed = poll_until(
        "the session's end in the log",
        WAIT,
        Duration::from_millis(50),
        || async {
            let rows = log().await;
            rows.as_array()
                .unwrap()
                .iter()
                .find(|r| r["family"] == id.as_str() && !r["end"].is_null())
                .cloned()
        },
    )
    .await;
    assert!(closed["end"].as_i64().unwrap() >= closed["start"].as_i64().unwrap());
    assert!(admin(&server, "GET", "/api/viewers", "")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    // The same as CSV for a spreadsheet, by Accept header or by ?format=csv.
    let auth = basic_auth(ADMIN_CODE);
    let csv = http_request(
        server.http,
        "GET",
        &format!("/api/audit?since={before}"),
        &[("Authorization", &auth), ("Accept", "text/csv")],
        "",
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("Content-Type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("family,name,role,stream,start,end,address,family_name,kind,until,resumed_by")
    );
    let row = lines.find(|l| l.contains(&id)).expect("the family's row");
    assert!(
        row.contains(",Ana,viewer,camera,")
            && row.ends_with(",127.0.0.1,\"Pérez, \"\"los de Ana\"\"\",watch,,"),
        "{row}"
    );
    let by_query = admin(
        &server,
        "GET",
        &format!("/api/audit?since={before}&format=csv"),
        "",
    )
    .await;
    assert_eq!(by_query.text(), text);
    assert_eq!(
        field_of(&admin(&server, "GET", "/api/audit?since=yesterday", "").await),
        "since"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_needs_its_csrf_token_to_change_anything() {
    let server = centre().await;
    let cookie = login(&server, "Directora", ADMIN_CODE).await;
    let config = config_of(&server, &cookie).await.json();
    assert_eq!(
        (config["role"].as_str(), config["admin"].as_bool()),
        (Some("admin"), Some(true))
    );
    let token = config["csrf"]
        .as_str()
        .expect("a session gets a CSRF token")
        .to_owned();
    let body = r#"{"name":"Familia Ruiz"}"#;
    let post = |headers: Vec<(&'static str, String)>| {
        let addr = server.http;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_request(addr, "POST", "/api/families", &headers, body).await
        }
    };
    let no_token = post(vec![("Cookie", cookie.clone())]).await;
    assert_eq!(no_token.status, 403, "{}", no_token.text());
    let wrong = post(vec![
        ("Cookie", cookie.clone()),
        ("X-CSRF-Token", "guess".into()),
    ])
    .await;
    assert_eq!(wrong.status, 403);
    let cross_site = post(vec![
        ("Cookie", cookie.clone()),
        ("X-CSRF-Token", token.clone()),
        ("Origin", "https://evil.example".into()),
    ])
    .await;
    assert_eq!(cross_site.status, 403);
    let ours = post(vec![
        ("Cookie", cookie.clone()),
        ("X-CSRF-Token", token.clone()),
    ])
    .await;
    assert_eq!(ours.status, 201, "{}", ours.text());
    // Reading needs no token.
    let list = http_request(
        server.http,
        "GET",
        "/api/families",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_room_is_404_not_a_new_room() {
    let server = centre().await;
    let parent = login(&server, "Ana", VIEWER_CODE).await;
    let refused = ws_with(&server, "/chat/junk0", &[("Cookie", parent.clone())]).await;
    assert_eq!(refused.unwrap_err(), 404);
    assert!(
        ws_with(&server, "/chat/aula-2", &[("Cookie", parent)])
            .await
            .is_ok(),
        "a configured camera's room"
    );
    server.stop().await;
}
