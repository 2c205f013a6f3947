//! A logged-in parent must not be able to disturb the room: what a viewer, a
//! family or a token holder can make the server allocate or broadcast is bounded
//! by a limit of its own (issue 14). Each test is one attack, tried the way a
//! script with a parent's code would, and what everyone else still gets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The camera `camera` with frames every 100 ms, access control on.
async fn school(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--source",
        "test-pattern",
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

fn cookie(value: &str) -> [(&'static str, String); 1] {
    [("Cookie", value.to_owned())]
}

/// `/stats.json` as staff sees it.
async fn staff_stats(server: &TestServer) -> Value {
    let auth = basic_auth(STAFF_CODE);
    let reply = http_request(
        server.http,
        "GET",
        "/stats.json",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The streams `/stats.json` lists.
async fn stream_names(server: &TestServer) -> Vec<String> {
    staff_stats(server).await["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads until a text message that is JSON of `type`.
async fn until_type(ws: &mut Ws, kind: &str) -> Value {
    recv_json_until(ws, kind, |m| m["type"] == kind).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_junk_names_allocate_nothing_and_a_teacher_still_broadcasts() {
    let server = school(&[]).await;
    let parent = login(&server, "Ana", VIEWER_CODE).await;
    let before = stream_names(&server).await;

    // The attack of the issue: 31 made-up names, each socket kept open if it opens.
    let mut kept = Vec::new();
    for i in 0..31 {
        match ws_with(&server, &format!("/video/junk{i}"), &cookie(&parent)).await {
            Ok(ws) => kept.push(ws),
            Err(status) => assert_eq!(status, 404, "junk{i}"),
        }
    }
    assert!(kept.is_empty(), "no junk name opened a video socket");
    assert_eq!(
        stream_names(&server).await,
        before,
        "junk names allocate nothing in the hub"
    );

    // The teacher's broadcast to a new name is accepted and reaches a viewer.
    let teacher = login(&server, "Maestra", STAFF_CODE).await;
    let mut upload = ws_with(&server, "/upload/class2", &cookie(&teacher))
        .await
        .expect("the teacher's broadcast opens");
    send_text(&mut upload, data_url(&make_jpeg(64, 48, 7))).await;
    let ack = until_type(&mut upload, "ack").await;
    assert_eq!(ack["frames"], 1, "{ack}");
    let mut parent_view = ws_with(&server, "/video/class2?format=binary", &cookie(&parent))
        .await
        .expect("a live broadcast is watchable");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(&mut parent_view, left).await {
            Some(Message::Binary(jpeg)) => {
                assert_eq!(jpeg_size(&jpeg), (64, 48));
                break;
            }
            Some(Message::Text(_) | Message::Ping(_)) => continue,
            other => panic!("no picture of class2: {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_familys_room_waits_without_a_slot_and_goes_live_with_the_broadcast() {
    let server = school(&[]).await;
    let admin = basic_auth(ADMIN_CODE);
    let reply = http_request(
        server.http,
        "POST",
        "/api/families",
        &[("Authorization", &admin)],
        &json!({"name": "Familia Pérez", "rooms": ["camera", "aula-3"]}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let code = reply.json()["code"].as_str().unwrap().to_owned();
    let parent = login(&server, "Ana", &code).await;

    let mut view = ws_with(&server, "/video/aula-3?format=binary", &cookie(&parent))
        .await
        .expect("the family's own room opens before its broadcast");
    let waiting = assert_status(&recv_text(&mut view).await);
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    assert!(
        !stream_names(&server).await.contains(&"aula-3".to_owned()),
        "waiting takes no hub slot"
    );
    // Another family's room is not this family's to ask for.
    assert_eq!(
        ws_with(&server, "/video/aula-9", &cookie(&parent))
            .await
            .unwrap_err(),
        403
    );

    let mut upload = ws_with(
        &server,
        "/upload/aula-3",
        &[("Authorization", basic_auth(STAFF_CODE))],
    )
    .await
    .expect("staff broadcasts");
    send_text(&mut upload, data_url(&make_jpeg(64, 48, 3))).await;
    until_type(&mut upload, "ack").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(&mut view, left).await {
            Some(Message::Binary(jpeg)) => {
                assert_eq!(jpeg_size(&jpeg), (64, 48));
                break;
            }
            Some(Message::Text(_) | Message::Ping(_)) => continue,
            other => panic!("the waiting viewer got no picture: {other:?}"),
        }
    }
    server.stop().await;
}

/// Reads `ws` for `quiet` and returns the chat `system` messages it got.
async fn system_messages_within(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return seen;
        }
        match recv_within(ws, left).await {
            Some(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "system" {
                    seen.push(value);
                }
            }
            Some(_) => {}
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_connect_storm_is_a_handful_of_updates_and_the_count_stays_right() {
    let server = school(&[]).await;
    let teacher = login(&server, "Maestra", STAFF_CODE).await;
    let parent = login(&server, "Ana", VIEWER_CODE).await;
    let mut observer = ws_with(&server, "/chat", &cookie(&teacher)).await.unwrap();
    let welcome = until_type(&mut observer, "system").await;
    assert_eq!(welcome["event"], "welcome", "{welcome}");
    let settled = recv_json_until(&mut observer, "the teacher counted", |m| {
        m["event"] == "online"
    })
    .await;
    assert_eq!(settled["online"], 1, "{settled}");

    // The attack of the issue: 200 connect/close cycles, as fast as they go.
    let started = Instant::now();
    for i in 0..200 {
        let mut junk = ws_with(&server, "/chat", &cookie(&parent))
            .await
            .unwrap_or_else(|status| panic!("cycle {i} refused: {status}"));
        junk.close(None).await.unwrap();
    }
    let storm = started.elapsed();
    let during_and_after =
        system_messages_within(&mut observer, storm + Duration::from_secs(4)).await;
    eprintln!(
        "200 chat cycles in {storm:?}: the observer got {} system messages",
        during_and_after.len()
    );
    assert!(
        during_and_after.len() <= 3,
        "a handful at most, not 400 lines: {during_and_after:?}"
    );
    if let Some(last) = during_and_after.last() {
        assert_eq!(last["online"], 1, "{last}");
    }

    // A parent who stays is counted, in one update, and so is its leaving.
    let mut stays = ws_with(&server, "/chat", &cookie(&parent)).await.unwrap();
    let arrived = recv_json_until(&mut observer, "the parent counted", |m| {
        m["event"] == "online"
    })
    .await;
    assert_eq!(
        (arrived["online"].as_u64(), arrived["joined"].as_u64()),
        (Some(2), Some(1)),
        "{arrived}"
    );
    let chat_online = staff_stats(&server).await["chat_online"]["camera"].clone();
    assert_eq!(chat_online, 2, "the stats count only who is connected");
    stays.close(None).await.unwrap();
    let gone = recv_json_until(&mut observer, "the parent's leave", |m| {
        m["event"] == "online"
    })
    .await;
    assert_eq!(
        (gone["online"].as_u64(), gone["left"].as_u64()),
        (Some(1), Some(1)),
        "{gone}"
    );
    server.stop().await;
}
