//! HTTPS and WSS with `--tls-cert`/`--tls-key`: browsers only allow a camera
//! (getUserMedia) on https or localhost, so the staff page needs this off-localhost.
//! A self-signed certificate made here for 127.0.0.1 stands in for a real one.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

struct Tls {
    dir: TempDir,
    connector: TlsConnector,
}

fn make_cert() -> Tls {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let dir = TempDir::new("tls");
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        dir,
        connector: TlsConnector::from(Arc::new(config)),
    }
}

async fn tls_connect(tls: &Tls, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(WAIT, tls.connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("certificate accepted")
}

async fn https(tls: &Tls, addr: SocketAddr, request: String) -> String {
    let mut stream = tls_connect(tls, addr).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut reply))
        .await
        .expect("reply in time");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn pages_and_sockets_are_served_over_tls_with_secure_cookies() {
    let tls = make_cert();
    let cert = tls.dir.path().join("cert.pem");
    let key = tls.dir.path().join("key.pem");
    let server = start_secured(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;

    let health = https(
        &tls,
        server.http,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".into(),
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let body = format!("name=Ana&code={VIEWER_CODE}");
    let origin = format!("https://127.0.0.1:{}", server.http.port());
    let login = https(
        &tls,
        server.http,
        format!(
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: {origin}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            server.http.port(),
            body.len()
        ),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie_line = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap();
    assert!(
        cookie_line.contains("; Secure"),
        "cookies are Secure over TLS: {cookie_line}"
    );
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // WSS from our https page's origin, with the session cookie.
    let stream = tls_connect(&tls, server.ws).await;
    let mut request = format!("wss://127.0.0.1:{}/chat", server.ws.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    request
        .headers_mut()
        .insert("Origin", HeaderValue::from_str(&origin).unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WSS handshake");
    ws_send(
        &mut ws,
        json!({"name": "x", "message": "hola por tls"}).to_string(),
    )
    .await;
    loop {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("message in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["type"] == "usermsg" {
                assert_eq!(
                    (v["name"].as_str(), v["message"].as_str()),
                    (Some("Ana"), Some("hola por tls"))
                );
                break;
            }
        }
    }

    // A plain-text client on the TLS port gets nothing it can use.
    let plain = http_raw(server.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
    server.stop().await;
}

async fn ws_send<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    futures_util::SinkExt::send(ws, Message::Text(text.into()))
        .await
        .unwrap();
}
