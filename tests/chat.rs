//! `/chat`: the prototype's chat protocol between real WebSocket clients.
//!
//! Each client stays within a few messages in a burst, so the tests hold whatever
//! per-connection rate limit the server applies.

mod common;

use common::{
    clip, expect_close, recv_json, recv_json_until, send_json, send_text, start, TestServer, Ws,
};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn is_hex_colour(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks the prototype's fields of a user message (extra fields are allowed).
fn assert_usermsg(msg: &Value, name: &str, message: &str) {
    assert_eq!(msg["type"], "usermsg", "{}", clip(&msg.to_string()));
    assert_eq!(msg["name"], name, "{}", clip(&msg.to_string()));
    assert_eq!(msg["message"], message, "{}", clip(&msg.to_string()));
    assert!(is_hex_colour(&msg["color"]), "{msg}");
}

/// Reads the next message and checks it announces `event` with `online` participants.
async fn expect_system(ws: &mut Ws, event: &str, online: u64) -> Value {
    let msg = recv_json(ws).await;
    assert_eq!(
        msg["type"], "system",
        "expected a {event} announcement: {msg}"
    );
    assert_eq!(msg["event"], event, "{msg}");
    assert_eq!(msg["online"], online, "{msg}");
    assert!(
        msg["message"].as_str().is_some_and(|m| !m.is_empty()),
        "system messages carry readable text: {msg}"
    );
    msg
}

/// The next message that is not a presence update: those come on the room's own
/// clock (gathered, at most every 2 s), between anything else.
async fn next(ws: &mut Ws) -> Value {
    recv_json_until(ws, "a message other than a presence update", |m| {
        m["event"] != "online"
    })
    .await
}

/// Reads presence updates until one says `online` are counted.
async fn until_online(ws: &mut Ws, online: u64) -> Value {
    recv_json_until(ws, &format!("{online} online"), |m| {
        m["type"] == "system" && m["event"] == "online" && m["online"] == online
    })
    .await
}

/// Connects a chat client and reads the end of its history replay: its own
/// welcome, which carries the online count.
async fn enter(server: &TestServer) -> Ws {
    let mut ws = server.connect("/chat").await;
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["event"], "welcome", "{welcome}");
    assert!(welcome["online"].as_u64().unwrap() >= 1, "{welcome}");
    ws
}

/// Connects `n` chat clients; each hears, in one update or a few, that all are in.
async fn join_all(server: &TestServer, n: u64) -> Vec<Ws> {
    let mut clients: Vec<Ws> = Vec::new();
    for _ in 0..n {
        clients.push(enter(server).await);
    }
    for ws in clients.iter_mut() {
        until_online(ws, n).await;
    }
    clients
}

/// Reads until the user message `message`, failing on any error on the way:
/// for a bystander that must keep chatting and never see others' errors.
async fn bystander_sees(ws: &mut Ws, message: &str) {
    let msg = recv_json_until(ws, &format!("usermsg {message:?}"), |m| {
        assert_ne!(m["type"], "error", "a bystander got an error: {m}");
        m["type"] == "usermsg"
    })
    .await;
    assert_eq!(msg["message"], message, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_in_the_prototype_format() {
    let server = start(&[]).await;
    let [mut ana, mut ben]: [Ws; 2] = join_all(&server, 2).await.try_into().ok().unwrap();

    send_json(
        &mut ana,
        &json!({"name": "Ana", "message": "hola", "color": "FF8800"}),
    )
    .await;
    for ws in [&mut ana, &mut ben] {
        // The sender hears itself, in the same format as everyone else.
        let msg = next(ws).await;
        assert_usermsg(&msg, "Ana", "hola");
        assert_eq!(msg["color"], "FF8800", "{msg}");
    }

    // Not six hex digits: the server assigns a colour, the same one for everyone.
    send_json(
        &mut ben,
        &json!({"name": " Ben ", "message": " hi there ", "color": "red"}),
    )
    .await;
    let to_ben = next(&mut ben).await;
    let to_ana = next(&mut ana).await;
    assert_eq!(to_ben, to_ana);
    assert_usermsg(&to_ben, "Ben", "hi there"); // trimmed
    assert_ne!(to_ben["color"], "red");

    ben.close(None).await.expect("close");
    let left = expect_system(&mut ana, "online", 1).await;
    assert_eq!(left["left"], 1, "{left}");
    server.stop().await;
}

const PER_CLIENT: usize = 5;

async fn send_many(ws: &mut Ws, who: &str) {
    for i in 0..PER_CLIENT {
        let m = json!({"name": who, "message": format!("{who} {i}")});
        send_json(ws, &m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_sees_messages_in_the_same_order() {
    let server = start(&[]).await;
    let mut clients: [Ws; 4] = join_all(&server, 4).await.try_into().ok().unwrap();
    let names = ["ana", "ben", "cai", "dan"];

    // All send at once, so four server tasks race to relay.
    {
        let [a, b, c, d] = &mut clients;
        tokio::join!(
            send_many(a, names[0]),
            send_many(b, names[1]),
            send_many(c, names[2]),
            send_many(d, names[3]),
        );
    }
    let mut seen: Vec<Vec<String>> = Vec::new();
    for ws in clients.iter_mut() {
        let mut order = Vec::new();
        for _ in 0..names.len() * PER_CLIENT {
            let msg = next(ws).await;
            assert_eq!(msg["type"], "usermsg", "{msg}");
            order.push(msg["message"].as_str().unwrap().to_owned());
        }
        seen.push(order);
    }
    for other in &seen[1..] {
        assert_eq!(other, &seen[0], "one order for everyone");
    }
    for who in names {
        let own: Vec<&str> = seen[0]
            .iter()
            .map(String::as_str)
            .filter(|m| m.starts_with(who))
            .collect();
        let sent: Vec<String> = (0..PER_CLIENT).map(|i| format!("{who} {i}")).collect();
        assert_eq!(own, sent, "{who}'s messages arrive complete and in order");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_get_an_error_and_the_chat_goes_on() {
    // No history, so each new sender's first message is its own welcome.
    let server = start(&["--chat-history", "0"]).await;
    let mut ben = enter(&server).await;

    let long_name = "n".repeat(33);
    let long_message = "m".repeat(1001);
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("this is not json"), "JSON"),
        (Message::text("[1, 2, 3]"), "object"),
        (Message::text(r#""just a string""#), "object"),
        (Message::text(r#"{"name": 5, "message": "x"}"#), "name"),
        (
            Message::text(r#"{"name": "a", "message": ["x"]}"#),
            "message",
        ),
        (
            Message::text(r#"{"name": "a", "message": "b", "color": 7}"#),
            "color",
        ),
        (Message::text(r#"{"name": "   ", "message": "x"}"#), "name"),
        (Message::text(r#"{"message": "x"}"#), "name"),
        (
            Message::text(json!({"name": long_name, "message": "x"}).to_string()),
            "name",
        ),
        (
            Message::text(r#"{"name": "a", "message": "  "}"#),
            "message",
        ),
        (
            Message::text(json!({"name": "a", "message": long_message}).to_string()),
            "message",
        ),
        (Message::binary(vec![1u8, 2, 3]), "text"),
    ];
    for (i, (bad, mentions)) in cases.into_iter().enumerate() {
        let what = clip(&format!("{bad:?}"));
        let mut ana = enter(&server).await;
        ana.send(bad).await.expect("send");
        let reply = next(&mut ana).await;
        assert_eq!(reply["type"], "error", "for {what}: {reply}");
        let why = reply["message"].as_str().unwrap_or_default();
        assert!(
            why.contains(mentions),
            "the error for {what} should mention {mentions:?}: {why:?}"
        );

        // Ana's connection stays, and the other client keeps chatting without
        // ever seeing Ana's error.
        let good = format!("still here {i}");
        send_json(&mut ana, &json!({"name": "Ana", "message": good})).await;
        assert_usermsg(&next(&mut ana).await, "Ana", &good);
        bystander_sees(&mut ben, &good).await;
        ana.close(None).await.expect("close");
    }

    // The limits are inclusive, counted in characters, not bytes.
    let mut ana = enter(&server).await;
    let (name, message) = ("ñ".repeat(32), "é".repeat(1000));
    send_json(&mut ana, &json!({"name": name, "message": message})).await;
    assert_usermsg(&next(&mut ana).await, &name, &message);
    bystander_sees(&mut ben, &message).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_get_an_error_and_far_oversize_ones_close_1009() {
    let limit = 4096;
    let server = start(&["--max-chat-bytes", &limit.to_string()]).await;
    let [mut ana, mut ben]: [Ws; 2] = join_all(&server, 2).await.try_into().ok().unwrap();

    // Over the limit but within 4x: an error reply, and the connection stays.
    let over = json!({"name": "Ana", "message": "x".repeat(limit + 100)}).to_string();
    assert!(over.len() > limit && over.len() < 4 * limit);
    send_text(&mut ana, over).await;
    let reply = next(&mut ana).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains(&limit.to_string()),
        "the error names the limit: {reply}"
    );
    send_json(&mut ana, &json!({"name": "Ana", "message": "still open"})).await;
    assert_usermsg(&next(&mut ana).await, "Ana", "still open");
    bystander_sees(&mut ben, "still open").await;

    // Far over (more than 4x): the server closes with 1009 (message too big).
    let far = json!({"name": "Ana", "message": "y".repeat(4 * limit + 100)}).to_string();
    send_text(&mut ana, far).await;
    assert_eq!(expect_close(&mut ana).await, 1009);

    // Ben hears Ana leave and keeps chatting.
    let left = until_online(&mut ben, 1).await;
    assert_eq!(left["left"], 1, "{left}");
    send_json(&mut ben, &json!({"name": "Ben", "message": "anyone?"})).await;
    assert_usermsg(&next(&mut ben).await, "Ben", "anyone?");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_gets_the_recent_history_in_order() {
    let server = start(&["--chat-history", "3"]).await;
    let mut ana = enter(&server).await;
    for i in 1..=4 {
        send_json(
            &mut ana,
            &json!({"name": "Ana", "message": format!("m{i}")}),
        )
        .await;
    }
    // Once Ana has heard all four, they are in the room's history.
    for i in 1..=4 {
        assert_usermsg(&next(&mut ana).await, "Ana", &format!("m{i}"));
    }

    let mut ben = server.connect("/chat").await;
    for i in 2..=4 {
        // The last 3, oldest first.
        assert_usermsg(&next(&mut ben).await, "Ana", &format!("m{i}"));
    }
    let welcome = next(&mut ben).await;
    assert_eq!(welcome["event"], "welcome", "{welcome}");

    // Live messages follow the history without repeats.
    send_json(&mut ben, &json!({"name": "Ben", "message": "m5"})).await;
    assert_usermsg(&next(&mut ben).await, "Ben", "m5");
    assert_usermsg(&next(&mut ana).await, "Ben", "m5");
    server.stop().await;
}
