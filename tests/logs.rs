//! What the daemon writes to its log (the journal on a Pi, readable by whoever
//! administers it): logins, failures and client addresses, but never an access
//! code, a session cookie or what parents write in the chat.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const WRONG: &str = "adivina-9999";
const SECRET_MESSAGE: &str = "la clave del portón es 4321";

/// Every log line of this test binary, at debug level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_logins_and_addresses_but_never_codes_cookies_or_messages() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let server = start_secured(&[]).await;
    let form = |code: &str| format!("name=Ana&code={code}");
    let wrong = http_request(server.http, "POST", "/login", &[], &form(WRONG)).await;
    assert_eq!(wrong.header("Location"), Some("/login?error=wrong_code"));
    let right = http_request(server.http, "POST", "/login", &[], &form(VIEWER_CODE)).await;
    let cookie = right
        .header("Set-Cookie")
        .expect("a session")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();

    // Basic auth with the right and a wrong code, as VLC would send them.
    for code in [STAFF_CODE, WRONG] {
        let basic = basic_auth(code);
        http_request(
            server.http,
            "GET",
            "/stats.json",
            &[("Authorization", &basic)],
            "",
        )
        .await;
    }

    // A parent writes something private in the chat.
    let mut request = server.ws_url("/chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    let (mut chat, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send_json(
        &mut chat,
        &json!({"name": "Ana", "message": SECRET_MESSAGE}),
    )
    .await;
    recv_json_until(&mut chat, "the echo", |v| v["message"] == SECRET_MESSAGE).await;
    drop(chat);
    http_request(server.http, "POST", "/logout", &[("Cookie", &cookie)], "").await;
    server.stop().await;

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // The log is really captured, and says what an administrator needs.
    for expected in ["login failed", "login", "logout", "127.0.0.1"] {
        assert!(
            log.contains(expected),
            "the log mentions {expected:?}:\n{log}"
        );
    }
    for secret in [
        VIEWER_CODE,
        STAFF_CODE,
        WRONG,
        token.as_str(),
        SECRET_MESSAGE,
        "la clave",
    ] {
        assert!(!log.contains(secret), "the log leaks {secret:?}:\n{log}");
    }
}
