//! Hostile input, as a classroom camera on a shared Wi-Fi will meet it: malformed
//! handshakes and huge headers, a slowloris, thousands of garbage chat messages,
//! invalid UTF-8, markup in names, path traversal and oversize bodies. Each must
//! get a clear refusal and leave everyone else undisturbed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes to `addr` and returns the status line's code, if any reply came.
async fn raw_status(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<u16> {
    let reply = http_raw(addr, bytes).await.ok()?;
    Some(reply.status)
}

#[tokio::test]
async fn malformed_handshakes_and_huge_headers_get_clear_refusals() {
    let server = start(&[]).await;
    let ws = server.ws;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not HTTP at all", b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(), 400),
        ("plain GET, no upgrade", b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (
            "no key",
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
        ),
        (
            "old version",
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n\r\n".to_vec(),
            426,
        ),
        ("unknown path", b"GET /admin HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec(), 404),
        (
            "huge header",
            format!("GET /chat HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        (
            "too many headers",
            format!("GET /chat HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(200)).into_bytes(),
            431,
        ),
    ];
    for (what, bytes, status) in &cases {
        assert_eq!(
            raw_status(ws, bytes).await,
            Some(*status),
            "WebSocket port, {what}"
        );
    }
    let http = server.http;
    let huge = format!("GET / HTTP/1.1\r\nCookie: {}\r\n\r\n", "c".repeat(40_000));
    assert_eq!(
        raw_status(http, huge.as_bytes()).await,
        Some(431),
        "HTTP port, huge header"
    );
    // The documented limits themselves: 16 KiB on the HTTP port, 8 KiB for a
    // WebSocket handshake; just under is served, just over refused.
    let head_of = |target: &str, size: usize| {
        let start = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ");
        let pad = size - start.len() - 4;
        format!("{start}{}\r\n\r\n", "p".repeat(pad)).into_bytes()
    };
    assert_eq!(
        raw_status(http, &head_of("/healthz", 16 * 1024 - 64)).await,
        Some(200)
    );
    assert_eq!(
        raw_status(http, &head_of("/healthz", 16 * 1024 + 64)).await,
        Some(431)
    );
    // Just under is read and judged on its content: no Upgrade header, so 400.
    assert_eq!(
        raw_status(ws, &head_of("/chat", 8 * 1024 - 64)).await,
        Some(400)
    );
    assert_eq!(
        raw_status(ws, &head_of("/chat", 8 * 1024 + 64)).await,
        Some(431)
    );
    assert_eq!(
        raw_status(http, b"\x00\x01\x02garbage\r\n\r\n").await,
        Some(400),
        "HTTP port, garbage"
    );
    // After all that, ordinary clients are served on both ports.
    assert_eq!(server.get("/healthz").await.status, 200);
    let mut chat = server.connect("/chat").await;
    send_json(&mut chat, &json!({"name": "a", "message": "still fine"})).await;
    recv_json_until(&mut chat, "own message", |v| v["type"] == "usermsg").await;
    server.stop().await;
}

#[tokio::test]
async fn a_slowloris_does_not_stop_normal_clients() {
    let server = start(&[]).await;
    // Several slow clients, each dribbling a request head a byte at a time.
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(server.http).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        } else {
            // A complete head, then a form body a byte at a time: more of these than
            // tiny_http has worker threads, so it must never be handed them.
            s.write_all(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60\r\n\r\nn")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    let dribble = tokio::spawn(async move {
        for _ in 0..3 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"x").await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    // Meanwhile a parent's requests are answered promptly.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(server.get("/healthz").await.status, 200);
        assert!(
            // Far below the 10 s head deadline the slow clients hold out for.
            started.elapsed() < Duration::from_secs(5),
            "served during the slowloris"
        );
    }
    let mut slow = dribble.await.unwrap();
    // The slow requests never complete and are eventually dropped (10 s deadline).
    let started = Instant::now();
    for (which, s) in ["a slow head", "a slow body"]
        .into_iter()
        .zip(slow.iter_mut())
    {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT + Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the server gives up on {which}"))
            .unwrap_or(0);
        assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
            "{which}: dropped or 408"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    server.stop().await;
}

#[tokio::test]
async fn thousands_of_garbage_chat_messages_harm_nobody() {
    let server = start(&[]).await;
    let mut attacker = server.connect("/chat").await;
    let mut parent = server.connect("/chat").await;
    let garbage = [
        "",
        "{",
        "null",
        "[]",
        "{\"name\":1}",
        "\u{0}\u{1}",
        "{\"type\":\"mute\",\"id\":1}",
    ];
    for i in 0..3000 {
        send_text(&mut attacker, garbage[i % garbage.len()]).await;
    }
    // The attacker's connection is answered with errors, never broadcast.
    let reply = recv_json_until(&mut attacker, "an error", |v| v["type"] == "error").await;
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    send_json(
        &mut parent,
        &json!({"name": "Ana", "message": "¿todo bien?"}),
    )
    .await;
    let got = recv_json_until(&mut parent, "own message", |v| v["type"] == "usermsg").await;
    assert_eq!(
        got["message"], "¿todo bien?",
        "no garbage reached other clients before it"
    );
    assert_eq!(server.get("/healthz").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_only_that_socket() {
    let server = start(&[]).await;
    let mut parent = server.connect("/chat").await;
    // A masked text frame whose payload is not UTF-8, written by hand.
    let mut raw = TcpStream::connect(server.ws).await.unwrap();
    raw.write_all(
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = raw.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));
    let payload = [0xC3u8, 0x28, 0xFF];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&frame).await.unwrap();
    // The server answers with a close frame carrying 1007 (invalid payload data).
    let mut reply = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(WAIT, raw.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    let close = reply
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("a close frame");
    assert_eq!(
        u16::from_be_bytes([reply[close + 2], reply[close + 3]]),
        1007
    );
    send_json(&mut parent, &json!({"name": "Ana", "message": "hola"})).await;
    recv_json_until(&mut parent, "own message", |v| v["type"] == "usermsg").await;
    server.stop().await;
}

#[tokio::test]
async fn markup_in_names_and_messages_is_relayed_as_plain_json_text() {
    let server = start(&[]).await;
    let mut a = server.connect("/chat").await;
    let name = "<img src=x onerror=alert(1)>";
    let message = "<script>alert('x')</script><b>hi</b>";
    send_json(&mut a, &json!({"name": name, "message": message})).await;
    let raw = loop {
        let text = recv_text(&mut a).await;
        if text.contains("usermsg") {
            break text;
        }
    };
    let parsed: serde_json::Value = serde_json::from_str(&raw).unwrap();
    // Exactly the text that was sent; turning it into markup is never the server's doing,
    // and the pages insert it with textContent (tested in the browser tests).
    assert_eq!(parsed["name"], name);
    assert_eq!(parsed["message"], message);
    server.stop().await;
}

#[tokio::test]
async fn path_traversal_and_oversize_bodies_are_refused() {
    let server = start(&[]).await;
    for target in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "//etc/passwd",
        "/web/../../etc/passwd",
    ] {
        let reply = server.get(target).await;
        assert_eq!(reply.status, 404, "{target}");
        assert!(!reply.text().contains("[package]"));
    }
    let big = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    assert_eq!(raw_status(server.http, big.as_bytes()).await, Some(413));
    let chunked = b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(raw_status(server.http, chunked).await, Some(411));
    server.stop().await;
}

#[tokio::test]
async fn a_connection_flood_from_one_address_leaves_others_served() {
    let server = start(&["--max-connections-per-ip", "10"]).await;
    // 127.0.0.2 is loopback too; it stands in for one misbehaving device.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(server.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap(); // and never finish
        flood.push(s);
    }
    // Everything past the cap is answered 503 (or closed) at once, not held open.
    for s in flood.iter_mut().skip(10) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(n)) if n == 0 || buf[..n].starts_with(b"HTTP/1.1 503") => refused += 1,
            other => panic!("over-cap connection not refused: {other:?}"),
        }
    }
    assert_eq!(refused, 30);
    // The parent on another address is served during the flood, on both ports.
    assert_eq!(server.get("/healthz").await.status, 200);
    let mut chat = server.connect("/chat").await;
    send_json(&mut chat, &json!({"name": "a", "message": "hola"})).await;
    recv_json_until(&mut chat, "own message", |v| v["type"] == "usermsg").await;
    server.stop().await;
}

#[tokio::test]
async fn the_http_port_holds_a_bounded_number_of_requests_at_once() {
    // No per-address cap, so only the total in-flight limit applies.
    let server = start(&["--max-connections-per-ip", "0"]).await;
    let mut held = Vec::new();
    for _ in 0..kindercam::http_guard::MAX_IN_FLIGHT {
        let mut s = tokio::net::TcpStream::connect(server.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap(); // and never finish
        held.push(s);
    }
    // Each held request is admitted in its own task; wait until the next is refused.
    let refusal = poll_until(
        "the request past the limit refused",
        WAIT,
        Duration::from_millis(50),
        || async {
            let reply = http_raw(server.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
            reply.ok().filter(|r| r.status == 503)
        },
    )
    .await;
    assert_eq!(
        refusal.header("retry-after"),
        Some("5"),
        "told when to retry"
    );
    // One slot frees up: the next request is served again.
    drop(held.pop());
    poll_until(
        "a request served once a slot is free",
        WAIT,
        Duration::from_millis(50),
        || async { (server.get("/healthz").await.status == 200).then_some(()) },
    )
    .await;
    drop(held);
    server.stop().await;
}
