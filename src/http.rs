//! The HTTP server on `--http-listen` (tiny_http, on its own threads): the pages
//! embedded from `web/`, `/config.json` for the pages, `/healthz`, `/stats.json`
//! and `/snapshot.jpg`. Only the fixed routes and the embedded files exist; with
//! `--web-dir`, files are read from that directory and nothing outside it.

use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::config::Config;
use crate::hub::{Hub, StreamStatus, CAMERA};
use crate::shutdown::Shutdown;
use crate::ws::WsContext;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Request-handling threads. Pages are small and snapshots are shared bytes, so a
/// few threads serve a classroom; a slow snapshot wait blocks only one of them.
const WORKERS: usize = 4;
/// How long a snapshot waits for an idle source to produce a fresh frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

type Reply = Response<Cursor<Bytes>>;

pub struct HttpContext {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub ws: Arc<WsContext>,
    pub started: Instant,
    pub runtime: tokio::runtime::Handle,
}

/// Binds the listener now, so that a taken port fails at start, not later.
pub fn bind(addr: SocketAddr) -> anyhow::Result<tiny_http::Server> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("cannot start the HTTP server on {addr}: {e}"))
}

/// Starts the worker threads; they return after shutdown.
pub fn spawn(
    server: tiny_http::Server,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) -> Vec<JoinHandle<()>> {
    let server = Arc::new(server);
    (0..WORKERS)
        .map(|i| {
            let (server, ctx, shutdown) = (server.clone(), ctx.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    while !shutdown.is_triggered() {
                        match server.recv_timeout(Duration::from_millis(200)) {
                            Ok(Some(request)) => respond(request, &ctx),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "HTTP receive failed"),
                        }
                    }
                })
                .expect("spawn HTTP worker")
        })
        .collect()
}

fn respond(request: Request, ctx: &HttpContext) {
    let started = Instant::now();
    let method = request.method().clone();
    let url = request.url().to_owned();
    let peer = request.remote_addr().copied();
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_owned());
    let reply = route(&method, &url, host.as_deref(), ctx);
    let status = reply.status_code().0;
    let reply = if method == Method::Head {
        // Same headers, no body.
        let headers = reply.headers().to_vec();
        Response::new(
            reply.status_code(),
            headers,
            Cursor::new(Bytes::new()),
            Some(0),
            None,
        )
    } else {
        reply
    };
    if let Err(e) = request.respond(reply) {
        tracing::debug!(error = %e, "HTTP client went away before the reply was sent");
    }
    tracing::debug!(?peer, %method, %url, status, ms = started.elapsed().as_millis() as u64, "HTTP");
}

fn route(method: &Method, url: &str, host: Option<&str>, ctx: &HttpContext) -> Reply {
    if !matches!(method, Method::Get | Method::Head) {
        return text(405, "only GET and HEAD are supported\n")
            .with_header(header("Allow", "GET, HEAD"));
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match path {
        "/healthz" => json(200, &healthz(ctx)),
        "/config.json" => json(200, &page_config(ctx)),
        "/stats.json" => json(200, &stats(ctx)),
        "/snapshot.jpg" => snapshot(ctx, query_param(query, "stream").unwrap_or(CAMERA)),
        "/" => page(ctx, "/index.html", host),
        "/camera" => page(ctx, "/camera.html", host),
        _ => page(ctx, path, host),
    }
}

fn healthz(ctx: &HttpContext) -> serde_json::Value {
    let camera = ctx
        .hub
        .get(CAMERA)
        .map(|s| s.current().status.label())
        .unwrap_or("waiting");
    serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": ctx.started.elapsed().as_secs(),
        "camera": camera,
        "connections": ctx.ws.open_connections(),
    })
}

fn page_config(ctx: &HttpContext) -> serde_json::Value {
    let c = &ctx.config;
    serde_json::json!({
        "ws_port": c.ws_listen.port(),
        "default_stream": CAMERA,
        "interval_ms": c.interval.as_millis() as u64,
        "width": c.width,
        "height": c.height,
        "quality": c.quality,
        "max_upload_bytes": c.max_upload_bytes,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

fn stats(ctx: &HttpContext) -> serde_json::Value {
    serde_json::json!({
        "connections": ctx.ws.open_connections(),
        "chat_online": ctx.ws.chat.online(),
        "streams": ctx.hub.stats(),
    })
}

fn snapshot(ctx: &HttpContext, name: &str) -> Reply {
    let Some(stream) = ctx.hub.get(name) else {
        return text(404, &format!("no stream named {name:?}\n"));
    };
    if name == CAMERA && stream.demand_count() == 0 {
        // Nobody watches, so the source may be idle: ask it for one fresh frame.
        let _wake = stream.demand();
        let seen = stream.current().seq;
        let mut rx = stream.subscribe();
        let _ = ctx.runtime.block_on(async {
            tokio::time::timeout(SNAPSHOT_WAIT, rx.wait_for(|s| s.seq > seen)).await
        });
    }
    let current = stream.current();
    match (current.frame, &current.status) {
        (Some(frame), StreamStatus::Live) => Response::new(
            StatusCode(200),
            vec![
                header("Content-Type", "image/jpeg"),
                header("Cache-Control", "no-store"),
                header("X-Content-Type-Options", "nosniff"),
            ],
            Cursor::new(frame.jpeg.clone()),
            Some(frame.jpeg.len()),
            None,
        ),
        (_, StreamStatus::Offline(reason)) => {
            text(503, &format!("stream {name:?} is offline: {reason}\n"))
        }
        _ => text(503, &format!("stream {name:?} has no frame yet\n")),
    }
    .with_header(header("Retry-After", "1"))
}

/// Serves an embedded file, or one from `--web-dir`.
fn page(ctx: &HttpContext, path: &str, host: Option<&str>) -> Reply {
    let body = match &ctx.config.web_dir {
        Some(dir) => read_from_dir(dir, path).map(Bytes::from),
        None => embedded::ASSETS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, b)| Bytes::from_static(b)),
    };
    let Some(body) = body else {
        return text(404, "not found\n");
    };
    let content_type = content_type(path);
    let len = body.len();
    let mut reply = Response::new(
        StatusCode(200),
        vec![
            header("Content-Type", content_type),
            header("Cache-Control", "no-cache"),
            header("X-Content-Type-Options", "nosniff"),
            header("Referrer-Policy", "no-referrer"),
        ],
        Cursor::new(body),
        Some(len),
        None,
    );
    if content_type.starts_with("text/html") {
        reply.add_header(header(
            "Content-Security-Policy",
            &content_security_policy(ctx, host),
        ));
        reply.add_header(header("X-Frame-Options", "DENY"));
    }
    reply
}

/// Scripts and styles only from this server; sockets only to our WebSocket port.
fn content_security_policy(ctx: &HttpContext, host: Option<&str>) -> String {
    let port = ctx.config.ws_listen.port();
    // The host the browser used, minus any port; refuse anything that is not a host name.
    let hostname = host
        .map(|h| match h.rsplit_once(':') {
            Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
            _ => h,
        })
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        })
        .unwrap_or("localhost");
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self' ws://{hostname}:{port} wss://{hostname}:{port}; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )
}

/// Reads `url_path` below `dir`, refusing anything that could leave it.
fn read_from_dir(dir: &Path, url_path: &str) -> Option<Vec<u8>> {
    let decoded = percent_decode(url_path)?;
    let relative = decoded.strip_prefix('/')?;
    if relative.is_empty()
        || relative.contains('\0')
        || relative.contains('\\')
        || relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let full: PathBuf = root.join(relative).canonicalize().ok()?;
    if !full.starts_with(&root) || !full.is_file() {
        return None;
    }
    std::fs::read(full).ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn text(status: u16, body: &str) -> Reply {
    let body = Bytes::from(body.to_owned());
    let len = body.len();
    Response::new(
        StatusCode(status),
        vec![
            header("Content-Type", "text/plain; charset=utf-8"),
            header("X-Content-Type-Options", "nosniff"),
            header("Cache-Control", "no-store"),
        ],
        Cursor::new(body),
        Some(len),
        None,
    )
}

fn json(status: u16, value: &serde_json::Value) -> Reply {
    let body = Bytes::from(value.to_string());
    let len = body.len();
    Response::new(
        StatusCode(status),
        vec![
            header("Content-Type", "application/json"),
            header("X-Content-Type-Options", "nosniff"),
            header("Cache-Control", "no-store"),
        ],
        Cursor::new(body),
        Some(len),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_dir_paths_cannot_escape() {
        let dir = std::env::temp_dir().join(format!("kindercam-web-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.css"), "x").unwrap();
        assert_eq!(
            read_from_dir(&dir, "/sub/a.css").as_deref(),
            Some(&b"x"[..])
        );
        for evil in [
            "/../etc/passwd",
            "/sub/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/sub%2f..%2f..%2fetc",
            "//etc/passwd",
            "/sub\\a.css",
            "/%00",
        ] {
            assert_eq!(read_from_dir(&dir, evil), None, "{evil}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
