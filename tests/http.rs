//! The HTTP side: pages with their security policy, `/healthz`, `/config.json`,
//! `/snapshot.jpg`, and 404s for unknown paths and path-escape attempts.

mod common;

use common::{jpeg_size, start, TempDir};

/// Request targets that try to leave the page set; each must be a plain 404.
const ESCAPES: &[&str] = &[
    "/../Cargo.toml",
    "/%2e%2e/Cargo.toml",
    "/%2E%2E/Cargo.toml",
    "/..%2fCargo.toml",
    "/web/../Cargo.toml",
    "//etc/passwd",
    "/../../../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/./index.html/../../Cargo.toml",
    "/..\\Cargo.toml",
    "/%00",
    "/src/main.rs",
    "/build.rs",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_html_with_a_strict_content_security_policy() {
    let server = start(&[]).await;
    for path in ["/", "/camera"] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}: {:?}",
            reply.header("content-type")
        );
        assert!(
            reply.text().to_lowercase().contains("<!doctype html"),
            "{path} is an HTML page"
        );
        let csp = reply
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"));
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("style-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("connect-src"), "{csp}");
        // Nobody may frame the camera page (clickjacking).
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
    server.stop().await;
}

/// The pages find the WebSocket server through `/config.json` and may only
/// connect where the CSP allows: both must name the port actually listened on,
/// which differs from the configured one when that is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_learn_the_real_websocket_port() {
    let server = start(&[]).await;
    let ws_port = server.ws.port();
    let config = server.get("/config.json").await;
    assert_eq!(config.status, 200);
    let config = config.json();
    assert_eq!(config["default_stream"], "camera", "{config}");
    assert_eq!(config["ws_port"], ws_port, "{config}");
    let page = server.get("/").await;
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains(&format!("ws://127.0.0.1:{ws_port} ")),
        "sockets may reach our WebSocket port {ws_port}: {csp}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_ok_as_json() {
    let server = start(&[]).await;
    let reply = server.get("/healthz").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        reply.header("content-type")
    );
    assert_eq!(reply.json()["status"], "ok", "{}", reply.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_a_jpeg_of_the_configured_size() {
    let server = start(&["--width", "320", "--height", "176", "--interval-ms", "200"]).await;
    // Nobody watches, so the source is idle: the snapshot wakes it for one frame.
    let reply = server.get("/snapshot.jpg").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    assert_eq!(jpeg_size(&reply.body), (320, 176));
    let named = server.get("/snapshot.jpg?stream=camera").await;
    assert_eq!(named.status, 200);
    assert_eq!(jpeg_size(&named.body), (320, 176));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_a_stream_without_frames_is_503_with_a_reason() {
    let server = start(&[]).await;
    // A viewer waiting on stream "empty" makes it exist, with no frame yet.
    let mut viewer = server.connect("/video/empty").await;
    let status = common::assert_status(&common::recv_text(&mut viewer).await);
    assert_eq!(status["state"], "waiting");

    let reply = server.get("/snapshot.jpg?stream=empty").await;
    assert_eq!(reply.status, 503);
    let body = reply.text();
    assert!(
        body.contains("empty") && body.contains("no frame"),
        "{body}"
    );

    // A stream nobody ever used does not exist at all.
    let reply = server.get("/snapshot.jpg?stream=nobody").await;
    assert!(
        matches!(reply.status, 404 | 503),
        "unknown stream: {}",
        reply.status
    );
    assert!(!reply.body.starts_with(&[0xFF, 0xD8]), "no picture");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_escape_attempts_are_404() {
    let server = start(&[]).await;
    for path in ["/nope", "/index.htm", "/camera/", "/snapshot.png", "/video"]
        .iter()
        .chain(ESCAPES)
    {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 404, "{path}: {}", common::clip(&reply.text()));
        assert!(
            !reply.text().contains("[package]") && !reply.text().contains("root:"),
            "{path} leaked a file"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_dir_serves_its_files_and_nothing_outside() {
    // <tmp>/web is served; <tmp>/secret.txt sits next to it and must stay unreachable.
    let tmp = TempDir::new("webdir");
    tmp.write("web/index.html", "<!doctype html><title>from disk</title>");
    tmp.write("web/sub/page.css", "body{}");
    tmp.write("secret.txt", "top secret");
    let web = tmp.path().join("web");
    let server = start(&["--web-dir", web.to_str().unwrap()]).await;

    let index = server.get("/").await;
    assert_eq!(index.status, 200);
    assert!(index.text().contains("from disk"), "served from --web-dir");
    let css = server.get("/sub/page.css").await;
    assert_eq!(css.status, 200);
    assert!(css
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/css")));

    let secret_escapes = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "//secret.txt",
    ];
    for path in secret_escapes.iter().chain(ESCAPES) {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 404, "{path}: {}", common::clip(&reply.text()));
        assert!(!reply.text().contains("top secret"), "{path} leaked");
    }
    // An absolute path to the secret through a doubled slash.
    let absolute = format!("/{}", tmp.path().join("secret.txt").display());
    let reply = server.get(&absolute).await;
    assert_eq!(reply.status, 404, "{absolute}");
    server.stop().await;
}

/// Behind a reverse proxy the pages must open their sockets at the proxy's address,
/// and the page's policy must allow that address and no other socket.
#[tokio::test]
async fn behind_a_proxy_pages_use_the_public_websocket_url() {
    let server = start(&["--ws-public-url", "wss://camera.example.org/kc"]).await;
    let config = server.get("/config.json").await.json();
    assert_eq!(config["ws_url"], "wss://camera.example.org/kc");
    let page = server.get("/").await;
    let csp = page.header("Content-Security-Policy").expect("a CSP");
    assert!(
        csp.contains("connect-src 'self' wss://camera.example.org/kc/;"),
        "sockets allowed under the public prefix only: {csp}"
    );
    assert!(!csp.contains("ws://127.0.0.1"), "{csp}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_gzip_compressed_to_browsers_and_plain_to_other_clients() {
    let server = start(&[]).await;
    let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/web/viewer.js")).unwrap();

    // What every browser sends.
    let reply = common::http_request(
        server.http,
        "GET",
        "/viewer.js",
        &[("Accept-Encoding", "gzip, deflate, br, zstd")],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
    assert!(
        reply.body.len() * 2 < on_disk.len(),
        "{} bytes compressed for {}",
        reply.body.len(),
        on_disk.len()
    );
    assert_eq!(&reply.body[..3], &[0x1f, 0x8b, 8], "a gzip member");
    let deflate = &reply.body[10..reply.body.len() - 8];
    let unpacked = miniz_oxide::inflate::decompress_to_vec(deflate).expect("valid deflate");
    assert_eq!(unpacked, on_disk);
    let trailer = &reply.body[reply.body.len() - 8..];
    assert_eq!(
        u32::from_le_bytes(trailer[4..].try_into().unwrap()) as usize,
        on_disk.len(),
        "the gzip trailer's length"
    );

    // curl without --compressed, a probe, or a client that refuses gzip.
    for accept in [None, Some("identity"), Some("gzip;q=0")] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let reply = common::http_request(server.http, "GET", "/viewer.js", &headers, "").await;
        assert_eq!(reply.status, 200, "{accept:?}: {}", reply.text());
        assert_eq!(reply.header("content-encoding"), None, "{accept:?}");
        assert_eq!(reply.body, on_disk, "{accept:?}");
    }
}
