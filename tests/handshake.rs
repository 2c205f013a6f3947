//! The WebSocket handshake: unknown paths are refused with 404, a full server with
//! 503 (promptly, not by hanging), and a client that says nothing is dropped after
//! the handshake timeout.

mod common;

use std::time::{Duration, Instant};

use common::{http_raw, start, WAIT};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

/// The HTTP status of a refused WebSocket handshake.
fn refused_status(result: Result<common::Ws, tungstenite::Error>) -> u16 {
    match result {
        Ok(_) => panic!("the handshake was accepted"),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_at_the_handshake() {
    let server = start(&[]).await;
    for path in [
        "/",
        "/nope",
        "/chat/Extra",
        "/chat/a/b",
        "/video/",
        "/video/UPPER",
        "/video/has%20space",
        "/video/../chat",
        "/upload/",
        "/upload/a/b",
        &format!("/upload/{}", "x".repeat(33)),
    ] {
        let status = refused_status(server.try_connect(path).await);
        assert_eq!(status, 404, "{path}");
    }
    // The known routes are still fine.
    server.connect("/chat").await;
    server.connect("/video/some-name_1").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_websocket_port_is_refused() {
    let server = start(&[]).await;
    let request = format!("GET /chat HTTP/1.1\r\nHost: {}\r\n\r\n", server.ws);
    let reply = http_raw(server.ws, request.as_bytes()).await.unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_the_handshake_gets_503() {
    let server = start(&["--max-connections", "2"]).await;
    let _a = server.connect("/chat").await;
    let _b = server.connect("/video").await;

    let asked = Instant::now();
    let status = refused_status(server.try_connect("/chat").await);
    assert_eq!(status, 503);
    // The refusal says when to come back, for clients that honour it.
    let raw = common::http_raw(
        server.ws,
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!((raw.status, raw.header("retry-after")), (503, Some("5")));
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "refused promptly, not left hanging: {:?}",
        asked.elapsed()
    );

    // A slot frees up when a client leaves.
    drop(_a);
    let mut c = common::poll_until(
        "a connection slot to free up",
        WAIT,
        Duration::from_millis(50),
        || async { server.try_connect("/chat").await.ok() },
    )
    .await;
    let join = common::recv_json(&mut c).await;
    assert_eq!(join["type"], "system", "{join}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    // Long enough that the refused client below is surely answered while the silent
    // one still holds the slot, however slowly this machine runs.
    let server = start(&["--handshake-timeout-ms", "2000", "--max-connections", "1"]).await;
    let connected = Instant::now();
    let mut silent = TcpStream::connect(server.ws).await.unwrap();

    // It holds the only slot for now, so a real client is refused...
    let status = refused_status(server.try_connect("/chat").await);
    assert_eq!(status, 503, "the silent client holds the only slot");

    // ...until the server hangs up on it (end of stream, nothing sent).
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the server drops a silent client")
        .unwrap_or(0);
    let waited = connected.elapsed();
    assert_eq!(n, 0, "nothing is sent to a client that never asked");
    assert!(
        waited >= Duration::from_millis(1900),
        "dropped at the timeout, not before: {waited:?}"
    );
    assert!(waited < Duration::from_secs(7), "took {waited:?}");

    // Its slot is free again.
    let mut chat = common::poll_until(
        "the slot of the silent client to free up",
        WAIT,
        Duration::from_millis(50),
        || async { server.try_connect("/chat").await.ok() },
    )
    .await;
    assert_eq!(common::recv_json(&mut chat).await["type"], "system");
    server.stop().await;
}
