//! The HTTP handlers (tiny_http, on its own threads, behind `http_guard`): the
//! pages embedded from `web/`, login and logout, `/config.json` for the pages,
//! `/healthz`, `/stats.json` and `/snapshot.jpg` (also as `/snapshot` and
//! `/?action=snapshot`, the paths other camera servers use). Only the fixed routes and the
//! embedded files exist; with `--web-dir`, files are read from that directory and
//! nothing outside it. Everything but `/login`, `/healthz` and static scripts and
//! styles needs a session or the access code; a snapshot also takes a link token
//! (`?token=` or `Authorization: Bearer`).

use std::io::{Cursor, Read};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::auth::{Access, Denied, LoginError, Presented, Principal, Route};
use crate::config::Config;
use crate::http_guard::PEER_HEADER;
use crate::hub::{Audience, Hub, StreamStatus, CAMERA};
use crate::metrics::{Exporter, LoginResult, Metrics};
use crate::privacy::notice::{self, Held};
use crate::shutdown::Shutdown;
use crate::ws::WsContext;

pub mod api;
mod assets;
pub mod stream_mjpg;

/// Request-handling threads. Pages are small and snapshots are shared bytes, so a
/// few threads serve a classroom; a slow snapshot wait blocks only one of them.
const WORKERS: usize = 4;
/// How long a snapshot waits for an idle source to produce a fresh frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// Snapshots that may wait for an idle source at once. Each wait holds one of the
/// few workers for up to `SNAPSHOT_WAIT`: four parallel requests from one parent
/// would otherwise stall the login page and everyone's `/config.json`.
const MAX_SNAPSHOT_WAITS: usize = 1;

type Reply = Response<Cursor<Bytes>>;

pub struct HttpContext {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub ws: Arc<WsContext>,
    pub access: Arc<Access>,
    /// The database: families, the viewing log.
    pub store: crate::store::Store,
    /// Where families, link tokens and sessions change (SQLite, or the cluster).
    pub records: crate::records::Records,
    /// Each room's opening hours, which the admin API reads and sets.
    pub hours: Arc<crate::privacy::hours::Hours>,
    /// The teachers' pauses in force.
    pub pauses: std::sync::Arc<crate::privacy::pause::Pauses>,
    /// The listeners' real ports (tests bind port 0): our pages' origin, for CSRF
    /// checks, and where the pages find the WebSocket server.
    pub http_port: u16,
    pub ws_port: u16,
    pub started: Instant,
    pub runtime: tokio::runtime::Handle,
    /// Snapshot requests waiting for an idle source now (at most `MAX_SNAPSHOT_WAITS`).
    pub snapshot_waits: std::sync::atomic::AtomicUsize,
    /// Where logins are counted.
    pub metrics: Arc<Metrics>,
    /// What `/metrics` answers.
    pub exporter: Exporter,
    /// The pushers' state (`--push-to`).
    pub pushes: Arc<crate::push::Board>,
    /// The NATS cluster this relay is part of (`/healthz`, `/stats.json`).
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Starts tiny_http on a private Unix socket in `dir` (mode 0700). Only the guard
/// in `http_guard` connects to it; the network never reaches tiny_http directly.
pub fn bind_backend(dir: &Path) -> anyhow::Result<(tiny_http::Server, PathBuf)> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join("http.sock");
    let server = tiny_http::Server::http_unix(&path)
        .map_err(|e| anyhow::anyhow!("cannot start the HTTP backend on {}: {e}", path.display()))?;
    Ok((server, path))
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
                            Ok(Some(request)) => {
                                // A bug in one handler must not cost the port a worker
                                // for good; the client simply gets no answer.
                                let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    respond(request, &ctx)
                                }));
                                if handled.is_err() {
                                    tracing::error!("HTTP handler panicked; request dropped");
                                }
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "HTTP receive failed"),
                        }
                    }
                })
                .expect("spawn HTTP worker")
        })
        .collect()
}

/// What a handler needs from a request, read once.
struct Incoming<'a> {
    method: Method,
    path: &'a str,
    query: &'a str,
    peer: String,
    host: Option<String>,
    origin: Option<String>,
    cookie: Option<String>,
    authorization: Option<String>,
    accepts_html: bool,
    /// `Accept-Encoding` takes gzip: embedded files go as they are stored.
    accepts_gzip: bool,
    /// The whole `Accept` header (the viewing log answers CSV when asked).
    accept: Option<String>,
    /// `X-CSRF-Token`, which a browser session's admin changes must carry.
    csrf: Option<String>,
    sec_fetch_site: Option<String>,
    sec_fetch_mode: Option<String>,
}

fn header_value(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_owned())
}

fn respond(mut request: Request, ctx: &HttpContext) {
    let started = Instant::now();
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let incoming = Incoming {
        method: request.method().clone(),
        path,
        query,
        peer: header_value(&request, PEER_HEADER).unwrap_or_else(|| "-".into()),
        host: header_value(&request, "Host"),
        origin: header_value(&request, "Origin"),
        cookie: header_value(&request, "Cookie"),
        authorization: header_value(&request, "Authorization"),
        accepts_html: header_value(&request, "Accept").is_some_and(|a| a.contains("text/html")),
        accepts_gzip: header_value(&request, "Accept-Encoding")
            .is_some_and(|a| assets::accepts_gzip(&a)),
        accept: header_value(&request, "Accept"),
        csrf: header_value(&request, api::CSRF_HEADER),
        sec_fetch_site: header_value(&request, "Sec-Fetch-Site"),
        sec_fetch_mode: header_value(&request, "Sec-Fetch-Mode"),
    };
    let body = if matches!(
        incoming.method,
        Method::Post | Method::Patch | Method::Put | Method::Delete
    ) {
        let mut body = String::new();
        // The guard already refused bodies over its limit; this is belt and braces.
        let _ = request
            .as_reader()
            .take(crate::http_guard::MAX_BODY_BYTES as u64)
            .read_to_string(&mut body);
        body
    } else {
        String::new()
    };
    // tiny_http leaves out the body of a HEAD reply itself, keeping its length.
    let reply = route(&incoming, &body, ctx);
    let status = reply.status_code().0;
    if let Err(e) = request.respond(reply) {
        tracing::debug!(error = %e, "HTTP client went away before the reply was sent");
    }
    tracing::debug!(peer = %incoming.peer, method = %incoming.method, path = %incoming.path, status,
        ms = started.elapsed().as_millis() as u64, "HTTP");
}

/// The client's address as the guard recorded it.
fn peer_ip(req: &Incoming) -> std::net::IpAddr {
    req.peer
        .parse::<std::net::SocketAddr>()
        .map(crate::net::client_ip)
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
}

fn route(req: &Incoming, body: &str, ctx: &HttpContext) -> Reply {
    if !ctx.access.host_ok(req.host.as_deref()) {
        tracing::warn!(peer = %req.peer, "refused a foreign host name with access control off");
        return text(
            403,
            "with access control off, kindercam answers only to localhost\n",
        );
    }
    match (&req.method, req.path) {
        (Method::Post, "/login") => return login(req, body, ctx),
        (Method::Post, "/logout") => return logout(req, ctx),
        (Method::Get | Method::Head, _) => {}
        (_, p) if p.starts_with("/api/") => {}
        _ => {
            return text(405, "method not allowed\n")
                .with_header(header("Allow", "GET, HEAD, POST"))
        }
    }
    // Public: the login page, the health check, and the static scripts and styles
    // (the same for everyone, no data in them) that the login page needs.
    match req.path {
        "/healthz" => {
            let (status, body) = healthz(ctx);
            return json(status, &body);
        }
        "/login" => return page(ctx, req, "/login.html"),
        p if is_static_asset(p) => return page(ctx, req, p),
        _ => {}
    }
    if req.path == "/metrics" {
        return match may_read_metrics(req, ctx) {
            Ok(()) => metrics(ctx),
            Err(denied) => refused(req, &denied),
        };
    }
    let snapshot = is_snapshot(req.path, req.query);
    // A link token in the URL counts on the snapshot paths only; elsewhere only
    // as `Authorization: Bearer`, which access control keeps to its scope.
    let url_token = snapshot
        .then(|| crate::auth::tokens::query_token(req.query))
        .flatten();
    let who = match ctx.access.identify(
        peer_ip(req),
        Presented {
            cookie: req.cookie.as_deref(),
            authorization: req.authorization.as_deref(),
            token: url_token.as_deref(),
        },
    ) {
        Ok(who) => who,
        Err(denied) => return refused(req, &denied),
    };
    let snapshot_stream = query_param(req.query, "stream").unwrap_or(CAMERA);
    let asked = match req.path {
        _ if snapshot => Route::Watch(snapshot_stream),
        "/camera" => Route::Broadcast(None),
        "/admin" => Route::Admin,
        p => match api::paused_stream(p) {
            Some(stream) => Route::Pause(stream),
            None if p.starts_with("/api/") => Route::Admin,
            None => Route::Pages,
        },
    };
    if let Err(denied) = ctx.access.authorize(&who, asked) {
        if req.path.starts_with("/api/") {
            return json(
                denied.status(),
                &serde_json::json!({ "error": denied.to_string() }),
            );
        }
        return refused(req, &denied);
    }
    if req.path.starts_with("/api/") {
        return api::handle(req, body, &who, ctx);
    }
    if snapshot {
        let reply = snapshot_of(ctx, snapshot_stream, Audience::of(who.role));
        if reply.status_code().0 == 200 {
            ctx.access.seen_token(&who);
            ctx.ws
                .viewing
                .snapshot(&who, snapshot_stream, peer_ip(req), &ctx.runtime);
        }
        return reply;
    }
    match req.path {
        "/admin" => page(ctx, req, "/admin.html"),
        "/config.json" => json(200, &page_config(ctx, &who)),
        "/stats.json" => json(200, &stats(ctx, &who)),
        "/" => page(ctx, req, "/index.html"),
        "/camera" => page(ctx, req, "/camera.html"),
        p if p.ends_with(".html") => text(404, "not found\n"),
        _ => page(ctx, req, req.path),
    }
}

/// `/snapshot.jpg`, and the same under the names other camera servers use:
/// `/snapshot` and mjpg-streamer's `/?action=snapshot`.
fn is_snapshot(path: &str, query: &str) -> bool {
    match path {
        "/snapshot.jpg" | "/snapshot" => true,
        "/" => query_param(query, "action") == Some("snapshot"),
        _ => false,
    }
}

/// Who may scrape `/metrics`: the admin, by Basic auth (what Prometheus'
/// `basic_auth` sends) or an admin session; with auth off, what the other admin
/// routes answer then (403).
///
/// A link token with the `metrics` scope, sent as `Authorization: Bearer ...`
/// (Prometheus' `authorization:` setting), may too.
fn may_read_metrics(req: &Incoming, ctx: &HttpContext) -> Result<(), Denied> {
    if ctx.access.allows_metrics(req.authorization.as_deref()) {
        return Ok(());
    }
    let who = ctx.access.identify(
        peer_ip(req),
        Presented {
            cookie: req.cookie.as_deref(),
            authorization: req.authorization.as_deref(),
            token: None,
        },
    )?;
    ctx.access.authorize(&who, Route::Admin)
}

/// The Prometheus exposition of this daemon's figures.
fn metrics(ctx: &HttpContext) -> Reply {
    let body = Bytes::from(ctx.exporter.render());
    let len = body.len();
    Response::new(
        StatusCode(200),
        vec![
            header("Content-Type", crate::metrics::CONTENT_TYPE),
            header("X-Content-Type-Options", "nosniff"),
            header("Cache-Control", "no-store"),
        ],
        Cursor::new(body),
        Some(len),
        None,
    )
}

/// The answer to a request access control turned down.
fn refused(req: &Incoming, denied: &Denied) -> Reply {
    match denied {
        Denied::Unauthorized => unauthorized(req),
        Denied::Busy => text(503, &format!("{denied}\n")).with_header(header("Retry-After", "5")),
        Denied::Forbidden(_) => text(403, &format!("{denied}\n")),
    }
}

/// Scripts, styles and images: public so that the login page can use them.
fn is_static_asset(path: &str) -> bool {
    [".js", ".css", ".svg", ".png", ".ico", ".webmanifest"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// Browsers navigating to a page go to the login form; everything else gets 401
/// with a Basic challenge, which VLC and scripts understand.
fn unauthorized(req: &Incoming) -> Reply {
    if req.accepts_html && req.method == Method::Get {
        return redirect("/login");
    }
    let reply = text(401, &format!("{}\n", Denied::Unauthorized));
    // A page's own script (Sec-Fetch-Mode cors, same-origin...) must not pop up the
    // browser's password dialog; VLC and scripts send no Sec-Fetch-Mode and get asked.
    if req
        .sec_fetch_mode
        .as_deref()
        .is_some_and(|m| m != "navigate")
    {
        return reply;
    }
    reply.with_header(header(
        "WWW-Authenticate",
        "Basic realm=\"kindercam\", charset=\"UTF-8\"",
    ))
}

/// A form post must come from our own pages: the browser's Origin (or, without
/// one, Sec-Fetch-Site) says where it came from. Non-browser clients send neither.
fn same_origin_post(req: &Incoming, ctx: &HttpContext) -> bool {
    let fetch_site = req.sec_fetch_site.as_deref();
    if fetch_site.is_some_and(|s| s == "cross-site" || s == "same-site") {
        return false;
    }
    // Under `Referrer-Policy: no-referrer` browsers send `Origin: null` even for a
    // form on our own page; the browser-set Sec-Fetch-Site then says where it came from.
    if req.origin.as_deref() == Some("null") {
        return fetch_site == Some("same-origin");
    }
    ctx.access
        .origin_ok(req.origin.as_deref(), req.host.as_deref(), ctx.http_port)
}

fn login(req: &Incoming, body: &str, ctx: &HttpContext) -> Reply {
    if !same_origin_post(req, ctx) {
        tracing::warn!(peer = %req.peer, "login refused: cross-site form post");
        return text(403, "cross-site form posts are not accepted\n");
    }
    let form = parse_form(body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let ip = peer_ip(req);
    let outcome = ctx.access.login(ip, field("name"), field("code"));
    ctx.metrics.login(match &outcome {
        Ok(_) => LoginResult::Ok,
        Err(LoginError::RateLimited) => LoginResult::RateLimited,
        Err(LoginError::WrongCode) => LoginResult::WrongCode,
        Err(LoginError::BadName(_)) => LoginResult::BadName,
        Err(LoginError::Busy) => LoginResult::Busy,
    });
    match outcome {
        Ok((token, session)) => {
            // In a cluster the parent's next request may land on another node.
            if let Err(e) = ctx.records.session_started(&token) {
                tracing::error!(peer = %req.peer, error = %e, "login refused: the session cannot be shared with the cluster");
                ctx.access.sessions.end(&token);
                return redirect("/login?error=busy");
            }
            tracing::info!(peer = %req.peer, role = session.role.as_str(), "login");
            redirect("/").with_header(header("Set-Cookie", &ctx.access.session_cookie(&token)))
        }
        Err(e) => {
            let reason = match e {
                LoginError::RateLimited => "rate_limited",
                LoginError::WrongCode => "wrong_code",
                LoginError::BadName(_) => "bad_name",
                LoginError::Busy => "busy",
            };
            tracing::warn!(peer = %req.peer, reason, "login failed");
            redirect(&format!("/login?error={reason}"))
        }
    }
}

fn logout(req: &Incoming, ctx: &HttpContext) -> Reply {
    if !same_origin_post(req, ctx) {
        return text(403, "cross-site form posts are not accepted\n");
    }
    if let Some(key) = ctx.access.logout(req.cookie.as_deref()) {
        ctx.records.session_ended(key);
        tracing::info!(peer = %req.peer, "logout");
    }
    redirect("/login").with_header(header("Set-Cookie", &ctx.access.clear_cookie()))
}

fn redirect(location: &str) -> Reply {
    text(303, "").with_header(header("Location", location))
}

/// Parses `application/x-www-form-urlencoded`.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " "));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The daemon's health; on a clustered node also its NATS link, and 503 while
/// NATS or JetStream is down, so that a load balancer takes the node out.
fn healthz(ctx: &HttpContext) -> (u16, serde_json::Value) {
    let camera = ctx
        .hub
        .get(CAMERA)
        .map(|s| s.current().status.label())
        .unwrap_or("waiting");
    #[allow(unused_mut)]
    let mut body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": ctx.started.elapsed().as_secs(),
        "camera": camera,
        "connections": ctx.ws.open_connections(),
        "pushes": ctx.pushes.pushers().iter().map(|p| p.health()).collect::<Vec<_>>(),
    });
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &ctx.cluster {
        body["cluster"] = cluster.health_json();
        if !cluster.health().ok() {
            body["status"] = "cluster down".into();
            return (503, body);
        }
        // Whether this relay has read the shared families, tokens and
        // sessions and follows them (see "Shared state in a cluster").
        body["cluster"]["shared_state"] = ctx.records.following().into();
    }
    (200, body)
}

fn page_config(ctx: &HttpContext, who: &Principal) -> serde_json::Value {
    let c = &ctx.config;
    let family = match &who.account {
        crate::auth::Account::Family(id) => ctx.access.families.get(id),
        crate::auth::Account::Role | crate::auth::Account::Token(_) => None,
    };
    let family_name = family.as_ref().map(|f| f.name.clone());
    let family_rooms = family.as_ref().map(|f| f.rooms.clone());
    serde_json::json!({
        "role": who.role,
        "staff": who.role.is_staff(),
        "csrf": who.session.as_ref().map(|s| s.csrf.clone()),
        "admin": who.role == crate::auth::Role::Admin,
        "family": family_name,
        // The rooms a family may enter; `null` means every room.
        "rooms": family_rooms,
        "name": who.name,
        "auth": ctx.access.enabled(),
        "ws_port": ctx.ws_port,
        "ws_url": c.listen.ws_public_url,
        "default_stream": CAMERA,
        "interval_ms": c.capture.interval.as_millis() as u64,
        "width": c.capture.width,
        "height": c.capture.height,
        "quality": c.capture.quality,
        "max_upload_bytes": c.limits.max_upload_bytes,
        "version": env!("CARGO_PKG_VERSION"),
        // The server's clock, so that a page can tell how old a frame's capture
        // time (`?meta=1`) is on a phone whose clock differs.
        "now_unix_ms": crate::frame::unix_ms(),
    })
}

/// The figures `who` may see: a family sees only its own rooms.
fn stats(ctx: &HttpContext, who: &Principal) -> serde_json::Value {
    let visible = |room: &str| ctx.access.authorize(who, Route::Watch(room)).is_ok();
    let streams: Vec<_> = ctx
        .hub
        .stats()
        .into_iter()
        .filter(|s| visible(&s.name))
        .collect();
    let mut chat_online = ctx.ws.chat.online();
    chat_online.retain(|room, _| visible(room));
    let pushes: Vec<_> = ctx
        .pushes
        .pushers()
        .iter()
        .filter(|p| visible(&p.stream))
        .map(|p| p.to_json())
        .collect();
    #[allow(unused_mut)]
    let mut body = serde_json::json!({
        "connections": ctx.ws.open_connections(),
        "chat_online": chat_online,
        "streams": streams,
        "pushes": pushes,
    });
    #[cfg(feature = "cluster")]
    if let (Some(cluster), true) = (&ctx.cluster, who.role.is_staff()) {
        body["cluster"] = cluster.stats_json();
    }
    body
}

fn snapshot_of(ctx: &HttpContext, name: &str, audience: Audience) -> Reply {
    let Some(stream) = ctx.hub.get(name) else {
        return text(404, &format!("no stream named {name:?}\n"));
    };
    if let Some(held) = held_for(ctx, &stream, audience) {
        return held;
    }
    let has_source = ctx.config.capture.cameras.iter().any(|c| c.name == name);
    // Past the cap a request answers with what there is, without waiting.
    let turn = has_source
        .then(|| SnapshotTurn::take(&ctx.snapshot_waits))
        .flatten();
    // A family gets only a frame taken since the room last opened (not one the
    // camera took for staff while it was paused or closed).
    let shown = |seq: u64| audience == Audience::Staff || stream.gate_state().lets_family_see(seq);
    let now = stream.current();
    let stale = now.frame.is_none() || !shown(now.seq);
    if turn.is_some() && (stream.demand_count() == 0 || stale) {
        // Nobody watches, so the source may be idle (or the frame it has is not
        // for this client): ask it for one fresh frame.
        let _wake = stream.demand(audience);
        let seen = stream.current().seq;
        let mut rx = stream.subscribe();
        let _ = ctx.runtime.block_on(async {
            tokio::time::timeout(SNAPSHOT_WAIT, rx.wait_for(|s| s.seq > seen)).await
        });
    }
    // The gate may have shut while this request waited for a frame.
    if let Some(held) = held_for(ctx, &stream, audience) {
        return held;
    }
    let current = stream.current();
    match (current.frame, &current.status) {
        (Some(frame), StreamStatus::Live) if shown(current.seq) => jpeg(frame.jpeg.clone()),
        (_, StreamStatus::Offline(reason)) => {
            text(503, &format!("stream {name:?} is offline: {reason}\n"))
                .with_header(header("Retry-After", "1"))
        }
        _ => text(503, &format!("stream {name:?} has no frame yet\n"))
            .with_header(header("Retry-After", "1")),
    }
}

/// The answer a family gets instead of the picture while the gate is shut: 403
/// with the reason when closed, the paused placeholder when paused. `None` for
/// staff, and for families while the gate is open.
fn held_for(ctx: &HttpContext, stream: &crate::hub::Stream, audience: Audience) -> Option<Reply> {
    if audience == Audience::Staff {
        return None;
    }
    let capture = &ctx.config.capture;
    let size = (capture.width, capture.height);
    Some(match notice::for_family(stream, size, capture.quality)? {
        Held::Closed(reason) => text(403, &reason),
        Held::Paused {
            picture: Some(picture),
            ..
        } => jpeg(picture).with_header(header("X-Kindercam-Gate", "paused")),
        Held::Paused {
            picture: None,
            reason,
        } => text(403, &reason),
    })
}

fn jpeg(body: Bytes) -> Reply {
    let len = body.len();
    Response::new(
        StatusCode(200),
        vec![
            header("Content-Type", "image/jpeg"),
            header("Cache-Control", "no-store"),
            header("X-Content-Type-Options", "nosniff"),
        ],
        Cursor::new(body),
        Some(len),
        None,
    )
}

/// One of the `MAX_SNAPSHOT_WAITS` turns to wait for an idle source.
struct SnapshotTurn<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> SnapshotTurn<'a> {
    fn take(waits: &'a std::sync::atomic::AtomicUsize) -> Option<SnapshotTurn<'a>> {
        use std::sync::atomic::Ordering;
        waits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SNAPSHOT_WAITS).then_some(n + 1)
            })
            .ok()
            .map(|_| SnapshotTurn(waits))
    }
}

impl Drop for SnapshotTurn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Serves an embedded file (gzip-compressed when the client takes that), or one
/// from `--web-dir`.
fn page(ctx: &HttpContext, req: &Incoming, path: &str) -> Reply {
    let mut gzip = false;
    let body = match &ctx.config.storage.web_dir {
        Some(dir) => read_from_dir(dir, path).map(Bytes::from),
        None => assets::find(path).map(|asset| {
            gzip = req.accepts_gzip;
            if gzip {
                Bytes::from_static(asset.gzip)
            } else {
                Bytes::from(asset.unpacked())
            }
        }),
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
    if ctx.config.storage.web_dir.is_none() {
        // A cache must not give the compressed copy to a client that cannot read it.
        reply.add_header(header("Vary", "Accept-Encoding"));
    }
    if gzip {
        reply.add_header(header("Content-Encoding", "gzip"));
    }
    if content_type.starts_with("text/html") {
        reply.add_header(header(
            "Content-Security-Policy",
            &content_security_policy(ctx, req.host.as_deref()),
        ));
        reply.add_header(header("X-Frame-Options", "DENY"));
    }
    reply
}

/// Scripts and styles only from this server; sockets only to our WebSocket port.
fn content_security_policy(ctx: &HttpContext, host: Option<&str>) -> String {
    let port = ctx.ws_port;
    // The host the browser used, minus any port; refuse anything that is not a host name.
    let hostname = host
        .and_then(crate::auth::origin::split_host_port)
        .map(|(name, _)| name)
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        })
        .unwrap_or("localhost");
    // Behind a reverse proxy the sockets go where the installer said, and only there.
    let sockets = match &ctx.config.listen.ws_public_url {
        // A CSP source with a path matches only that exact path unless it ends in '/'.
        Some(url)
            if url
                .trim_start_matches("wss://")
                .trim_start_matches("ws://")
                .contains('/') =>
        {
            format!("{url}/")
        }
        Some(url) => url.clone(),
        None => format!("ws://{hostname}:{port} wss://{hostname}:{port}"),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self' {sockets}; \
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

/// Decodes %XX escapes; `None` for broken escapes or non-UTF-8 (public for the fuzzer).
pub fn percent_decode(s: &str) -> Option<String> {
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
