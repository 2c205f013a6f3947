//! Access control as a parent, a teacher and an intruder meet it: every endpoint
//! but `/login` and `/healthz` refuses without credentials and accepts with them,
//! viewers cannot broadcast, foreign origins cannot open sockets or post forms,
//! logout and code changes end sessions and their sockets, and the rate limits
//! and per-address caps fire.

mod common;

use common::*;
use serde_json::json;

use common::{
    basic_auth as basic, start_secured as secured, STAFF_CODE as STAFF, VIEWER_CODE as VIEWER,
};

/// Logs in through the form and returns the `name=value` cookie pair.
#[tokio::test]
async fn every_endpoint_but_login_and_healthz_needs_credentials() {
    let server = secured(&[]).await;
    for target in ["/login", "/healthz"] {
        assert_eq!(server.get(target).await.status, 200, "{target} is public");
    }
    for target in [
        "/",
        "/camera",
        "/config.json",
        "/stats.json",
        "/snapshot.jpg",
    ] {
        let anonymous = server.get(target).await;
        assert_eq!(anonymous.status, 401, "{target} without credentials");
        assert!(anonymous
            .header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Basic")));
        let with_staff = http_request(
            server.http,
            "GET",
            target,
            &[("Authorization", &basic(STAFF))],
            "",
        )
        .await;
        assert_eq!(
            with_staff.status,
            200,
            "{target} with the staff code: {}",
            with_staff.text()
        );
    }
    let wrong = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic("guess-123"))],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    // A browser navigating without a session is sent to the login form instead.
    let browser = http_request(server.http, "GET", "/", &[("Accept", "text/html")], "").await;
    assert_eq!(
        (browser.status, browser.header("Location")),
        (303, Some("/login"))
    );

    for path in ["/chat", "/video", "/upload/room"] {
        assert_eq!(
            ws_with(&server, path, &[]).await.err(),
            Some(401),
            "{path} without credentials"
        );
    }
    let viewer = [("Authorization", basic(VIEWER))];
    assert!(ws_with(&server, "/chat", &viewer).await.is_ok());
    assert!(ws_with(&server, "/video", &viewer).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn viewers_cannot_broadcast_or_open_the_broadcaster_page() {
    let server = secured(&[]).await;
    let viewer = [("Authorization", basic(VIEWER))];
    assert_eq!(
        ws_with(&server, "/upload/room", &viewer).await.err(),
        Some(403)
    );
    let page = http_request(
        server.http,
        "GET",
        "/camera",
        &[("Authorization", &basic(VIEWER))],
        "",
    )
    .await;
    assert_eq!(page.status, 403);
    let mut staff = ws_with(&server, "/upload/room", &[("Authorization", basic(STAFF))])
        .await
        .unwrap();
    send_text(&mut staff, data_url(&make_jpeg(64, 48, 1))).await;
    assert_eq!(recv_json(&mut staff).await["type"], "ack");
    server.stop().await;
}

#[tokio::test]
async fn login_sets_a_session_whose_name_the_chat_uses_and_logout_ends_it() {
    let server = secured(&[]).await;
    let cookie = login(&server, "Mam%C3%A1+de+Ana", VIEWER).await;
    let page = http_request(server.http, "GET", "/", &[("Cookie", &cookie)], "").await;
    assert_eq!(page.status, 200);
    let config = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await
    .json();
    assert_eq!(
        (config["role"].as_str(), config["name"].as_str()),
        (Some("viewer"), Some("Mamá de Ana"))
    );

    let mut chat = ws_with(&server, "/chat", &[("Cookie", cookie.clone())])
        .await
        .unwrap();
    send_json(
        &mut chat,
        &json!({"name": "Directora", "message": "hola", "color": "ff0000"}),
    )
    .await;
    let msg = recv_json_until(&mut chat, "usermsg", |v| v["type"] == "usermsg").await;
    assert_eq!(
        msg["name"], "Mamá de Ana",
        "the session's name, not the one in the JSON"
    );

    let out = http_request(server.http, "POST", "/logout", &[("Cookie", &cookie)], "").await;
    assert_eq!(out.status, 303);
    assert!(out
        .header("Set-Cookie")
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        expect_close(&mut chat).await,
        1008,
        "the logged-out session's socket closes"
    );
    let after = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(after.status, 401, "a logged-out cookie is refused");
    assert_eq!(
        ws_with(&server, "/chat", &[("Cookie", cookie)]).await.err(),
        Some(401)
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_codes_and_names_send_the_browser_back_with_a_reason() {
    let server = secured(&[]).await;
    let wrong = http_request(
        server.http,
        "POST",
        "/login",
        &[],
        "name=Ana&code=nope-nope",
    )
    .await;
    assert_eq!(wrong.header("Location"), Some("/login?error=wrong_code"));
    assert!(wrong.header("Set-Cookie").is_none());
    let noname = http_request(
        server.http,
        "POST",
        "/login",
        &[],
        &format!("name=&code={VIEWER}"),
    )
    .await;
    assert_eq!(noname.header("Location"), Some("/login?error=bad_name"));
    server.stop().await;
}

#[tokio::test]
async fn foreign_origins_cannot_open_sockets_or_post_forms() {
    let server = secured(&[]).await;
    let auth = basic(VIEWER);
    let http_port = server.http.port();
    let own = format!("http://127.0.0.1:{http_port}");
    let other_port = format!("http://127.0.0.1:{}", http_port.wrapping_add(1).max(1));
    for (origin, expected) in [
        (own.as_str(), None),
        ("http://evil.example", Some(403)),
        (other_port.as_str(), Some(403)),
        ("null", Some(403)),
    ] {
        let headers = [
            ("Authorization", auth.clone()),
            ("Origin", origin.to_owned()),
        ];
        assert_eq!(
            ws_with(&server, "/chat", &headers).await.err(),
            expected,
            "Origin {origin}"
        );
    }
    let body = format!("name=Ana&code={VIEWER}");
    let cross = http_request(
        server.http,
        "POST",
        "/login",
        &[("Origin", "http://evil.example")],
        &body,
    )
    .await;
    assert_eq!(cross.status, 403, "cross-site login form");
    let same = http_request(server.http, "POST", "/login", &[("Origin", &own)], &body).await;
    assert_eq!(same.status, 303);
    server.stop().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_address() {
    let server = secured(&[]).await;
    for _ in 0..5 {
        let r = http_request(
            server.http,
            "POST",
            "/login",
            &[],
            "name=x&code=guess-guess",
        )
        .await;
        assert_eq!(r.header("Location"), Some("/login?error=wrong_code"));
    }
    let blocked = http_request(
        server.http,
        "POST",
        "/login",
        &[],
        &format!("name=x&code={VIEWER}"),
    )
    .await;
    assert_eq!(
        blocked.header("Location"),
        Some("/login?error=rate_limited"),
        "even the right code waits"
    );
    server.stop().await;
}

#[tokio::test]
async fn chat_messages_are_rate_limited_per_connection() {
    let server = secured(&[]).await;
    let auth = [("Authorization", basic(VIEWER))];
    let mut fast = ws_with(&server, "/chat", &auth).await.unwrap();
    let mut other = ws_with(&server, "/chat", &auth).await.unwrap();
    // Eleven at once: the bucket refills one a second, so even a machine slow
    // enough to earn a few tokens back mid-burst must refuse some.
    for i in 0..11 {
        send_json(
            &mut fast,
            &json!({"name": "fast", "message": format!("m{i}")}),
        )
        .await;
    }
    let error = recv_json_until(&mut fast, "rate limit error", |v| v["type"] == "error").await;
    assert_eq!(error["code"], "rate_limited");
    // The burst of five got through to others, in order.
    for i in 0..5 {
        let m = recv_json_until(&mut other, "usermsg", |v| v["type"] == "usermsg").await;
        assert_eq!(m["message"], format!("m{i}"));
    }
    send_json(
        &mut other,
        &json!({"name": "calm", "message": "still here"}),
    )
    .await;
    let m = recv_json_until(&mut other, "own message", |v| {
        v["type"] == "usermsg" && v["name"] == "calm"
    })
    .await;
    assert_eq!(
        m["message"], "still here",
        "other connections are not limited by it"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_are_capped_per_address() {
    let server = secured(&["--max-connections-per-ip", "2"]).await;
    let auth = [("Authorization", basic(VIEWER))];
    let _a = ws_with(&server, "/video", &auth).await.unwrap();
    let _b = ws_with(&server, "/chat", &auth).await.unwrap();
    assert_eq!(ws_with(&server, "/chat", &auth).await.err(), Some(503));
    drop(_a);
    // The freed place is usable again once the server has seen the close.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match ws_with(&server, "/chat", &auth).await {
            Ok(_) => break,
            Err(503) if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(status) => panic!("place not freed: {status}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn staff_can_delete_messages_and_mute_authors() {
    let server = secured(&[]).await;
    let mut parent = ws_with(&server, "/chat", &[("Authorization", basic(VIEWER))])
        .await
        .unwrap();
    let mut teacher = ws_with(&server, "/chat", &[("Authorization", basic(STAFF))])
        .await
        .unwrap();
    send_json(&mut parent, &json!({"name": "troll", "message": "spam"})).await;
    let spam = recv_json_until(&mut teacher, "spam", |v| v["type"] == "usermsg").await;
    let id = spam["id"].as_u64().expect("messages carry an id");

    send_json(&mut parent, &json!({"type": "delete", "id": id})).await;
    let refused = recv_json_until(&mut parent, "error", |v| v["type"] == "error").await;
    assert_eq!(refused["code"], "forbidden", "parents cannot moderate");

    send_json(
        &mut teacher,
        &json!({"type": "mute", "id": id, "minutes": 5}),
    )
    .await;
    send_json(&mut teacher, &json!({"type": "delete", "id": id})).await;
    let deleted = recv_json_until(&mut parent, "delete", |v| v["type"] == "delete").await;
    assert_eq!(deleted["id"], id);
    send_json(
        &mut parent,
        &json!({"name": "troll", "message": "more spam"}),
    )
    .await;
    let muted = recv_json_until(&mut parent, "muted", |v| v["type"] == "error").await;
    assert_eq!(muted["code"], "muted");
    // Staff messages are marked so parents can tell who speaks for the daycare.
    send_json(
        &mut teacher,
        &json!({"name": "Profe", "message": "bienvenidos"}),
    )
    .await;
    let from_staff =
        recv_json_until(&mut parent, "staff message", |v| v["type"] == "usermsg").await;
    assert_eq!(from_staff["staff"], true);
    server.stop().await;
}

#[tokio::test]
async fn first_start_generates_private_codes_that_work() {
    let state = std::env::temp_dir().join(format!("kc-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let server = start(&["--auth", "on", "--state-dir", state.to_str().unwrap()]).await;
    let file = state.join("access-codes.toml");
    let text = std::fs::read_to_string(&file).expect("codes stored in the state directory");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let code = |key: &str| -> String {
        let line = text.lines().find(|l| l.starts_with(key)).expect(key);
        line.split('"').nth(1).unwrap().to_owned()
    };
    // The director's code and the teachers'; parents get family codes from the admin page.
    let (admin, staff) = (code("admin_code"), code("staff_code"));
    assert_ne!(admin, staff);
    assert!(
        !text.contains("viewer_code"),
        "no shared parents' code is made"
    );
    let as_admin = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic(&admin))],
        "",
    )
    .await;
    assert_eq!(as_admin.json()["role"], "admin");
    assert_eq!(as_admin.json()["staff"], true, "the admin has staff rights");
    let as_staff = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic(&staff))],
        "",
    )
    .await;
    assert_eq!(as_staff.json()["role"], "staff");
    server.stop().await;
    std::fs::remove_dir_all(&state).unwrap();
}

#[tokio::test]
async fn browser_form_posts_from_our_page_pass_and_cross_site_ones_do_not() {
    let server = secured(&[]).await;
    let body = format!("name=Ana&code={VIEWER}");
    // `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on our own form.
    let ours = [("Origin", "null"), ("Sec-Fetch-Site", "same-origin")];
    assert_eq!(
        http_request(server.http, "POST", "/login", &ours, &body)
            .await
            .status,
        303
    );
    for headers in [
        vec![("Origin", "null")],
        vec![("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
    ] {
        let reply = http_request(server.http, "POST", "/login", &headers, &body).await;
        assert_eq!(reply.status, 403, "{headers:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn page_scripts_get_401_without_a_password_dialog_but_tools_are_asked() {
    let server = secured(&[]).await;
    let script = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Sec-Fetch-Mode", "cors")],
        "",
    )
    .await;
    assert_eq!(script.status, 401);
    assert!(
        script.header("WWW-Authenticate").is_none(),
        "no browser dialog over the page"
    );
    let tool = server.get("/snapshot.jpg").await;
    assert!(
        tool.header("WWW-Authenticate").is_some(),
        "VLC and curl are told to use Basic auth"
    );
    server.stop().await;
}

/// Says `text` in the chat as the holder of `cookie` and waits for the echo.
async fn say(server: &TestServer, cookie: &str, text: &str) {
    let mut chat = ws_with(server, "/chat", &[("Cookie", cookie.to_owned())])
        .await
        .unwrap();
    send_json(&mut chat, &json!({"name": "-", "message": text})).await;
    let echo = recv_json_until(&mut chat, "the echo", |v| {
        v["type"] == "usermsg" && v["message"] == text
    })
    .await;
    assert_eq!(echo["message"], text);
}

#[tokio::test]
async fn a_state_directory_that_cannot_be_written_loses_nothing_live() {
    let state = TempDir::new("state-broken");
    let dir = state.path().to_str().unwrap();
    // A directory where the database should be makes it impossible to open, for
    // root too, as a broken or read-only SD card would: the daemon then keeps
    // everything in memory.
    let blockers = ["kindercam.db"].map(|f| state.path().join(f));
    for blocker in &blockers {
        std::fs::create_dir(blocker).unwrap();
    }
    let first = secured(&["--state-dir", dir]).await;
    let ana = login(&first, "Ana", VIEWER).await;
    say(&first, &ana, "hola desde un disco lleno").await;
    assert_eq!(first.get("/healthz").await.status, 200);
    let out = http_request(first.http, "POST", "/logout", &[("Cookie", &ana)], "").await;
    assert_eq!(out.status, 303, "logout works without the disk");
    // Shutdown has nowhere to save the chat history, and still ends cleanly.
    first.stop().await;

    // The card is fixed: the next changes are saved again.
    for blocker in &blockers {
        std::fs::remove_dir(blocker).unwrap();
    }
    let second = secured(&["--state-dir", dir]).await;
    let bea = login(&second, "Bea", VIEWER).await;
    say(&second, &bea, "ya hay espacio").await;
    second.stop().await;

    let third = secured(&["--state-dir", dir]).await;
    let config = http_request(third.http, "GET", "/config.json", &[("Cookie", &bea)], "").await;
    assert_eq!(
        config.status, 200,
        "the login made after the fix survived a restart"
    );
    let mut chat = ws_with(&third, "/chat", &[("Cookie", bea.clone())])
        .await
        .unwrap();
    let kept = recv_json_until(&mut chat, "the saved history", |v| v["type"] == "usermsg").await;
    assert_eq!(kept["message"], "ya hay espacio");
    third.stop().await;
}

#[tokio::test]
async fn logins_survive_a_restart() {
    let state = TempDir::new("sessions");
    let dir = state.path().to_str().unwrap();
    let first = secured(&["--state-dir", dir]).await;
    let cookie = login(&first, "Ana", VIEWER).await;
    first.stop().await;
    // A power cut later: the same state directory, the same codes.
    let second = secured(&["--state-dir", dir]).await;
    let config = http_request(
        second.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(config.status, 200, "the family is still logged in");
    assert_eq!(config.json()["name"], "Ana");
    assert!(ws_with(&second, "/chat", &[("Cookie", cookie.clone())])
        .await
        .is_ok());
    second.stop().await;
    // With a new viewer code, the old session is gone after the restart.
    let third = start(&[
        "--auth",
        "on",
        "--viewer-code",
        "brand-new-code",
        "--staff-code",
        STAFF,
        "--state-dir",
        dir,
    ])
    .await;
    let config = http_request(
        third.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(config.status, 401);
    third.stop().await;
}

#[tokio::test]
async fn guessing_the_code_through_basic_auth_is_rate_limited() {
    let server = secured(&[]).await;
    for _ in 0..5 {
        let guess = http_request(
            server.http,
            "GET",
            "/config.json",
            &[("Authorization", &basic("guess-0000"))],
            "",
        )
        .await;
        assert_eq!(guess.status, 401);
    }
    let right = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic(VIEWER))],
        "",
    )
    .await;
    assert_eq!(
        right.status, 401,
        "after five wrong codes even the right one waits"
    );
    assert_eq!(
        ws_with(&server, "/chat", &[("Authorization", basic(VIEWER))])
            .await
            .err(),
        Some(401)
    );
    server.stop().await;
}

#[tokio::test]
async fn with_access_control_off_only_localhost_names_are_served() {
    // A page on evil.example rebinding its name to 127.0.0.1 must not get staff rights.
    let server = start(&["--auth", "off"]).await;
    let rebound = http_raw(
        server.http,
        b"GET /config.json HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(rebound.status, 403);
    assert_eq!(
        server.get("/config.json").await.status,
        200,
        "127.0.0.1 is fine"
    );
    let socket = ws_with(
        &server,
        "/upload/x",
        &[("Host", "evil.example:9000".to_owned())],
    )
    .await;
    assert_eq!(socket.err(), Some(403));
    server.stop().await;
}
