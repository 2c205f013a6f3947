//! `/stream.mjpg` (also `/stream` and `/?action=stream`): a stream as MJPEG over
//! HTTP, the format Home Assistant, VLC, ffmpeg, OctoPrint, motionEye, Frigate
//! and go2rtc read from µStreamer and mjpg-streamer.
//!
//! tiny_http cannot serve it (it buffers and chunks a body of unknown length),
//! so the async guard in front of it hands these paths here before the hand-off.
//! After the same admission as a WebSocket viewer (a session, Basic auth or a
//! link token; the room rules, the per-login and per-address caps), the client
//! gets a `multipart/x-mixed-replace` head with µStreamer's no-cache headers and
//! takes a seat in the stream's fan-out, as a WebSocket viewer does: the parts
//! are written from the frame's shared bytes, a slow client skips frames, and
//! no thread or task per frame is spent on it. Families follow the gate: a
//! closed room is refused (403, with when it opens), a paused one shows its
//! notice picture.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::auth::{self, Denied};
use crate::fanout::{self, Framing, Wants, BOUNDARY};
use crate::hub::{self, Audience, CAMERA};
use crate::net::{client_ip, Conn};
use crate::privacy::notice::{self, Held};
use crate::request_head::reply;
use crate::shutdown::Shutdown;
use crate::viewing_log::Presence;
use crate::ws::split::{self, HasTcp};
use crate::ws::WsContext;

/// Whether a request head asks for an MJPEG stream.
pub fn wants_stream(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    (method == b"GET" || method == b"HEAD") && std::str::from_utf8(target).is_ok_and(is_stream)
}

/// Whether `target` (path and query) is an MJPEG stream request.
pub fn is_stream(target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/stream.mjpg" | "/stream" => true,
        "/" => query.split('&').any(|kv| kv == "action=stream"),
        _ => false,
    }
}

/// The no-cache headers µStreamer sends with its streams.
const NO_CACHE: &str = "Cache-Control: no-store, no-cache, must-revalidate, proxy-revalidate, \
pre-check=0, post-check=0, max-age=0\r\nPragma: no-cache\r\nExpires: Mon, 3 Jan 2000 12:34:56 GMT\r\n";

/// What the request said that matters here.
struct Request {
    head_only: bool,
    query: String,
    host: Option<String>,
    origin: Option<String>,
    cookie: Option<String>,
    authorization: Option<String>,
}

fn parse(head: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head).ok()?;
    let method = request.method?;
    let target = request.path?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::to_owned)
    };
    Some(Request {
        head_only: method == "HEAD",
        query: target.split_once('?').map_or("", |(_, q)| q).to_owned(),
        host: header("host"),
        origin: header("origin"),
        cookie: header("cookie"),
        authorization: header("authorization"),
    })
}

/// The stream a request names: `?stream=NAME`, else the camera.
fn stream_name(query: &str) -> &str {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("stream="))
        .unwrap_or(CAMERA)
}

/// Serves one MJPEG client on `conn`, whose request head is `head`, until it,
/// its login or the daemon goes.
pub async fn serve(
    mut conn: Conn,
    head: &[u8],
    peer: SocketAddr,
    ctx: &Arc<WsContext>,
    shutdown: Shutdown,
) {
    let Some(request) = parse(head) else {
        reply(&mut conn, 400, "", "malformed HTTP request\n").await;
        return;
    };
    let name = stream_name(&request.query).to_owned();
    if !hub::valid_stream_name(&name) {
        reply(&mut conn, 404, "", "no such stream\n").await;
        return;
    }
    // The video connections' caps, not the pages': a stream stays open for hours.
    let _admission = match ctx.gate.admit(client_ip(peer)) {
        Ok(a) => a,
        Err(full) => {
            tracing::info!(%peer, ?full, "MJPEG refused: connection caps");
            reply(
                &mut conn,
                503,
                "Retry-After: 5\r\n",
                "too many connections\n",
            )
            .await;
            return;
        }
    };
    let principal = match check(ctx, peer, &request, &name).await {
        Ok(p) => p,
        Err(denied) => {
            tracing::info!(%peer, stream = %name, "MJPEG refused: {denied}");
            let extra = if denied.status() == 401 {
                "WWW-Authenticate: Basic realm=\"kindercam\"\r\n"
            } else {
                ""
            };
            reply(&mut conn, denied.status(), extra, &format!("{denied}\n")).await;
            return;
        }
    };
    let _place = match auth::sockets::Holder::of(&principal, ctx.access.enabled()) {
        Some(holder) => match ctx.sockets.claim(holder, principal.role.is_staff()) {
            Ok(place) => Some(place),
            Err(refused) => {
                reply(&mut conn, 429, "", &format!("{refused}\n")).await;
                return;
            }
        },
        None => None,
    };
    let Some(stream) = ctx.hub.get(&name) else {
        // A camera that has not started, or a family's room whose broadcast has
        // not begun, is worth retrying; any other name is unknown, as on
        // `/video/NAME` and `/snapshot.jpg`.
        let configured = ctx.config.capture.cameras.iter().any(|c| c.name == name);
        let familys_room = matches!(
            principal.account,
            auth::Account::Family(_) | auth::Account::Token(_)
        );
        if configured || familys_room {
            reply(
                &mut conn,
                503,
                "Retry-After: 5\r\n",
                "no picture yet: the room's camera or broadcast has not started\n",
            )
            .await;
        } else {
            reply(&mut conn, 404, "", "no such stream\n").await;
        }
        return;
    };
    let audience = Audience::of(principal.role);
    if audience == Audience::Family {
        let size = (ctx.config.capture.width, ctx.config.capture.height);
        // Closed: refused with when it opens. Paused: its picture is drawn now
        // (once per pause), so the fan-out only has to send it.
        if let Some(Held::Closed(reason)) =
            notice::for_family(&stream, size, ctx.config.capture.quality)
        {
            reply(&mut conn, 403, "", &reason).await;
            return;
        }
    }
    let _device = match ctx.access.claim_device(&principal) {
        Ok(place) => place,
        Err(refused) => {
            reply(&mut conn, 403, "", &format!("{}\n", refused.message)).await;
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary={BOUNDARY}\r\n\
         {NO_CACHE}X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
    );
    // HEAD gets the head alone: the first boundary is already the body.
    let first = if request.head_only {
        String::new()
    } else {
        format!("--{BOUNDARY}\r\n")
    };
    let sent = conn.write_all(format!("{head}{first}").as_bytes()).await;
    if sent.is_err() || request.head_only {
        let _ = conn.shutdown().await;
        return;
    }
    tracing::info!(%peer, stream = %name, role = principal.role.as_str(), "MJPEG client connected");
    let family = ctx.access.family_name(&principal);
    let presence = Presence::start(&ctx.viewing, &principal, family, &name, client_ip(peer));
    ctx.access.seen(&principal);
    // A logout, a revoked family or token, or the family losing this room ends it.
    let shutdown = match &principal.ended {
        Some(ended) => shutdown.or_session_end(ended.clone(), principal.expires),
        None => shutdown,
    };
    let shutdown = match ctx.access.room_access(&principal, &name) {
        Some(lost) => shutdown.or_room_lost(lost),
        None => shutdown,
    };
    let wants = Wants {
        framing: Framing::Mjpeg,
        meta: false,
        gate: false,
        small: request.query.split('&').any(|kv| kv == "size=small"),
    };
    let seat = Seat {
        stream,
        wants,
        audience,
        presence,
        shutdown,
    };
    match conn.into_plain() {
        Ok((_, tcp)) => {
            let (reader, writer) = tcp.into_split();
            seat.run(reader, writer).await
        }
        Err(conn) => {
            let (reader, writer) = split::split(conn);
            seat.run(reader, writer).await
        }
    }
    tracing::info!(%peer, stream = %name, "MJPEG client left");
}

/// Who is asking, by the same rules as a `/video` WebSocket: a session cookie,
/// a link token (`?token=` or Bearer) or Basic auth (checked off the async
/// workers, a few at a time, as the WebSocket handshake does).
async fn check(
    ctx: &Arc<WsContext>,
    peer: SocketAddr,
    request: &Request,
    name: &str,
) -> Result<auth::Principal, Denied> {
    let knock = auth::Knock {
        peer: client_ip(peer),
        host: request.host.as_deref(),
        origin: request.origin.as_deref(),
        cookie: request.cookie.as_deref(),
        authorization: request.authorization.as_deref(),
        query: &request.query,
        http_port: ctx.http_port,
    };
    if !knock.may_hash() {
        return ctx.access.admit_viewer(&knock, name);
    }
    let turn = ctx.code_turn().await.ok_or(Denied::Busy)?;
    let (ctx, name) = (ctx.clone(), name.to_owned());
    let owned = (
        request.host.clone(),
        request.origin.clone(),
        request.cookie.clone(),
        request.authorization.clone(),
        request.query.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let (host, origin, cookie, authorization, query) = owned;
        let knock = auth::Knock {
            peer: client_ip(peer),
            host: host.as_deref(),
            origin: origin.as_deref(),
            cookie: cookie.as_deref(),
            authorization: authorization.as_deref(),
            query: &query,
            http_port: ctx.http_port,
        };
        ctx.access.admit_viewer(&knock, &name)
    })
    .await
    .unwrap_or(Err(Denied::Busy))
}

/// An admitted MJPEG client, about to take its seat.
struct Seat {
    stream: Arc<hub::Stream>,
    wants: Wants,
    audience: Audience,
    presence: Presence,
    shutdown: Shutdown,
}

impl Seat {
    async fn run<R, W>(self, mut reader: R, writer: W)
    where
        R: AsyncRead + Unpin,
        W: fanout::Outlet + 'static,
    {
        let Seat {
            stream,
            wants,
            audience,
            presence,
            mut shutdown,
        } = self;
        let joined = fanout::join(
            &stream,
            Box::new(writer),
            wants,
            audience,
            presence,
            None,
            &shutdown,
        )
        .await;
        let Some((ticket, mut gone)) = joined else {
            return;
        };
        // The client says nothing after its request; reading only notices it
        // leave. Whatever it sends is read and dropped, a little at a time.
        let mut sink = [0u8; 512];
        loop {
            tokio::select! {
                biased;
                _ = &mut gone => return,
                _ = shutdown.wait() => {
                    let bye = shutdown.goodbye();
                    ticket.end(bye.code, bye.reason).await;
                    break;
                }
                read = reader.read(&mut sink) => {
                    tracing::debug!(?read, "MJPEG client read");
                    if matches!(read, Ok(0) | Err(_)) {
                        ticket.left().await;
                        break;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(2 * crate::ws::CLOSE_LIMIT, gone).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_paths_of_ustreamer_and_mjpg_streamer() {
        for target in [
            "/stream.mjpg",
            "/stream.mjpg?stream=aula-1&token=x",
            "/stream",
            "/?action=stream",
            "/?token=abc&action=stream",
        ] {
            assert!(is_stream(target), "{target}");
        }
        for target in [
            "/",
            "/?action=snapshot",
            "/snapshot.jpg",
            "/stream.mjpgx",
            "/video",
        ] {
            assert!(!is_stream(target), "{target}");
        }
        assert_eq!(stream_name("stream=aula-1&token=x"), "aula-1");
        assert_eq!(stream_name("token=x"), CAMERA);
    }
}
