//! The WebSocket server on `--ws-listen`: admits connections within the caps
//! (in total and per address), completes TLS and the handshake within a time
//! limit, checks who is asking (session cookie, Basic auth or link token, allowed Origin,
//! staff or a push token for uploads), counts it against its login's socket cap, and hands each
//! socket to its route: `/chat`,
//! `/video[/NAME]` or `/upload/NAME`, or the PHP prototype's `.../server.php`
//! (the chat) and `.../serverCam.php` (its video relay, `prototype`).

pub mod chat;
pub mod handshake;
pub mod keepalive;
mod prefixed;
pub mod prototype;
pub(crate) mod split;
pub mod upload;
pub mod video;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::auth::{self, Access};
use crate::chat::Rooms;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{Listener, Metrics, Refused};
use crate::net::{self, client_ip, Admission, Conn, Gate};
use crate::shutdown::Shutdown;
use crate::viewing_log::{Presence, ViewingLog};
use handshake::{Refusal, Route};
use prefixed::Prefixed;

/// Hard protocol limit over the soft (answered) limit: messages between the two
/// get an error reply and the connection stays; larger ones close it with 1009,
/// since tungstenite cannot skip a frame it refused to buffer.
const HARD_LIMIT_FACTOR: usize = 4;

/// A peer whose socket takes this long to accept one message is gone (its Wi-Fi
/// dropped with our data still queued); it is closed rather than left holding its
/// connection slot until TCP gives up.
pub(crate) const SEND_STALL_LIMIT: Duration = Duration::from_secs(30);

/// Sends one message within `SEND_STALL_LIMIT`; false means the peer is gone.
pub(crate) async fn send_within<S>(ws: &mut WebSocketStream<S>, message: Message) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    matches!(
        tokio::time::timeout(SEND_STALL_LIMIT, ws.send(message)).await,
        Ok(Ok(()))
    )
}

/// How long a joining member waits for a clustered chat room to read its
/// history from the stream (a local room is ready at once).
const ROOM_READY_WAIT: Duration = Duration::from_secs(3);

/// A close frame is a courtesy: a peer that cannot take one this quickly is
/// dropped without it, so that shutdown never waits on one family's Wi-Fi.
pub(crate) const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Sends a close frame within `CLOSE_LIMIT`, ignoring failure: the peer is leaving.
pub(crate) async fn close_within<S>(
    ws: &mut WebSocketStream<S>,
    code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode,
    reason: impl Into<tokio_tungstenite::tungstenite::Utf8Bytes>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_LIMIT, ws.close(Some(frame))).await;
}

/// What every connection task needs.
pub struct WsContext {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub chat: Arc<Rooms>,
    /// Who watches now, and the log of who watched.
    pub viewing: Arc<ViewingLog>,
    pub access: Arc<Access>,
    pub gate: Arc<Gate>,
    /// Sockets open per login, against `--max-sockets-per-login`.
    pub sockets: Arc<auth::sockets::SocketCounts>,
    pub tls: Option<TlsAcceptor>,
    /// The HTTP listener's real port: our pages' origin, for the Origin check.
    pub http_port: u16,
    /// Turns for handshakes whose Basic code may need an argon2 check: they wait
    /// here as cheap tasks, not as parked threads in tokio's blocking pool.
    code_checks: Arc<Semaphore>,
    /// Where refused handshakes are counted.
    pub metrics: Arc<Metrics>,
}

impl WsContext {
    /// A turn to check a Basic code (argon2) off the async workers, waiting at
    /// most as long as a handshake may; `None` when the daemon is that busy.
    pub async fn code_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let limit = crate::http_guard::HEAD_DEADLINE;
        tokio::time::timeout(limit, self.code_checks.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    pub fn new(
        config: Arc<Config>,
        hub: Arc<Hub>,
        chat: Arc<Rooms>,
        viewing: Arc<ViewingLog>,
        access: Arc<Access>,
        tls: Option<TlsAcceptor>,
        http_port: u16,
    ) -> WsContext {
        WsContext {
            chat,
            viewing,
            gate: Gate::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            sockets: auth::sockets::SocketCounts::new(config.limits.max_sockets_per_login),
            config,
            hub,
            access,
            tls,
            http_port,
            code_checks: Arc::new(Semaphore::new(auth::codes::MAX_CONCURRENT_HASHES)),
            metrics: Metrics::new(),
        }
    }

    /// Counts refused handshakes into `metrics` (the server's, for `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> WsContext {
        self.metrics = metrics;
        self
    }

    /// Counts a connection this port turned away after admitting it.
    fn refused(&self, why: Refused) {
        self.metrics.refused(Listener::Ws, why);
    }

    /// WebSocket connections being served now.
    pub fn open_connections(&self) -> usize {
        self.gate.open()
    }

    fn tungstenite_config(&self, soft_limit: usize) -> WebSocketConfig {
        let hard = soft_limit.saturating_mul(HARD_LIMIT_FACTOR);
        WebSocketConfig::default()
            // The default 128 KiB read buffer per socket adds up on a Pi.
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(1024 * 1024)
            .max_message_size(Some(hard))
            .max_frame_size(Some(hard))
    }
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<WsContext>, shutdown: Shutdown) {
    let connections = shutdown.clone();
    net::accept_loop(
        listener,
        ctx.gate.clone(),
        "WebSocket",
        shutdown,
        |socket, peer, admission| handle(socket, peer, admission, ctx.clone(), connections.clone()),
        |socket| refuse_busy(socket, ctx.clone()),
    )
    .await;
}

/// Answers 503 once the client has sent its request, so it sees a clear refusal.
async fn refuse_busy(socket: TcpStream, ctx: Arc<WsContext>) {
    let limit = ctx
        .config
        .limits
        .handshake_timeout
        .min(Duration::from_secs(1));
    let Ok(mut conn) = Conn::establish(socket, ctx.tls.as_ref(), limit).await else {
        return;
    };
    let _ = tokio::time::timeout(limit, handshake::read_request(&mut conn)).await;
    let _ = tokio::time::timeout(limit, Refusal::Busy.send(&mut conn)).await;
}

async fn handle(
    socket: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    ctx: Arc<WsContext>,
    shutdown: Shutdown,
) {
    let limit = ctx.config.limits.handshake_timeout;
    // Boxed: the TLS handshake's state is large and over once the connection is up.
    let Ok(mut conn) = Box::pin(Conn::establish(socket, ctx.tls.as_ref(), limit)).await else {
        tracing::info!(%peer, "TLS handshake failed");
        ctx.refused(Refused::Tls);
        return;
    };
    let upgrade = match tokio::time::timeout(limit, handshake::read_request(&mut conn)).await {
        Ok(Ok(upgrade)) => upgrade,
        Ok(Err(refusal)) => {
            tracing::info!(%peer, ?refusal, "WebSocket handshake refused");
            ctx.refused(refusal.counted_as());
            refusal.send(&mut conn).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "WebSocket handshake timed out");
            ctx.refused(Refused::HeadTimeout);
            return;
        }
    };
    // Only Basic auth can mean an argon2 check (tens of ms on a Pi), so only it
    // goes to a blocking thread. A session cookie or auth off is a hash and a map
    // lookup: sending those off too made a burst of 500 viewers start ~170
    // threads, each one's stack counting in the daemon's peak memory.
    // A turn that does not come within the handshake time is a 503.
    let basic = knock(&ctx, peer, &upgrade.request).may_hash();
    let checked = if basic {
        match tokio::time::timeout(limit, ctx.code_checks.clone().acquire_owned()).await {
            Ok(Ok(turn)) => {
                let (ctx, request) = (ctx.clone(), upgrade.request.clone());
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    admit(&ctx, peer, &request)
                })
                .await
                .unwrap_or(Err(Refusal::Busy))
            }
            _ => Err(Refusal::Busy),
        }
    } else {
        admit(&ctx, peer, &upgrade.request)
    };
    let principal = match checked {
        Ok(p) => p,
        Err(refusal) => {
            tracing::warn!(%peer, route = ?upgrade.request.route, ?refusal, "WebSocket access refused");
            ctx.refused(refusal.counted_as());
            refusal.send(&mut conn).await;
            return;
        }
    };
    // Counted against its login for as long as it is open, whatever the route.
    let place = match auth::sockets::Holder::of(&principal, ctx.access.enabled()) {
        Some(holder) => match ctx.sockets.claim(holder, principal.role.is_staff()) {
            Ok(place) => Some(place),
            Err(refused) => {
                tracing::warn!(%peer, route = ?upgrade.request.route, account = ?principal.account, "WebSocket refused: {refused}");
                ctx.refused(Refused::TooManySockets);
                Refusal::TooManySockets(refused).send(&mut conn).await;
                return;
            }
        },
        None => None,
    };
    // Resolve the stream or room before upgrading, so an unknown stream, a full
    // hub or an unknown room is a plain HTTP refusal.
    let video_feed = match &upgrade.request.route {
        Route::Video { stream, .. } => match video_feed(&ctx, &principal, stream) {
            Ok(feed) => Some(feed),
            Err(refusal) => {
                tracing::info!(%peer, stream = %stream, ?refusal, "video refused");
                ctx.refused(refusal.counted_as());
                refusal.send(&mut conn).await;
                return;
            }
        },
        _ => None,
    };
    let chat_room = match &upgrade.request.route {
        Route::Chat { room } => match open_room(&ctx, &principal, room).await {
            Ok(room) => Some(room),
            Err(refusal) => {
                tracing::info!(%peer, ?refusal, "chat room refused");
                ctx.refused(refusal.counted_as());
                refusal.send(&mut conn).await;
                return;
            }
        },
        _ => None,
    };
    let relay = match &upgrade.request.route {
        Route::Prototype => match prototype_relay(&ctx, &principal) {
            Ok(relay) => Some(relay),
            Err(refusal) => {
                tracing::info!(%peer, ?refusal, "prototype relay refused");
                refusal.send(&mut conn).await;
                return;
            }
        },
        _ => None,
    };
    if upgrade.accept(&mut conn, limit).await.is_err() {
        return;
    }
    tracing::info!(%peer, route = ?upgrade.request.route, role = principal.role.as_str(), "WebSocket connected");
    // A logout, a changed code or a revoked family closes this socket too, and so
    // does the family losing this room.
    let shutdown = match &principal.ended {
        Some(ended) => shutdown.or_session_end(ended.clone(), principal.expires),
        None => shutdown,
    };
    let room_lost = match &upgrade.request.route {
        Route::Chat { room } | Route::Video { stream: room, .. } => {
            ctx.access.room_access(&principal, room)
        }
        Route::Prototype => ctx
            .access
            .room_access(&principal, &ctx.config.capture.prototype_stream),
        Route::Upload { .. } => None,
    };
    let shutdown = match room_lost {
        Some(lost) => shutdown.or_room_lost(lost),
        None => shutdown,
    };
    let route = upgrade.request.route;
    let mut socket = Prefixed::new(upgrade.leftover, conn);
    let limits = &ctx.config.limits;
    match route {
        Route::Chat { .. } => {
            let room = chat_room.expect("resolved above");
            let ws_config = ctx.tungstenite_config(limits.max_chat_bytes);
            let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(ws_config)).await;
            let family = ctx.access.family_name(&principal);
            Box::pin(chat::serve(
                ws,
                &room,
                limits.max_chat_bytes,
                principal,
                family,
                shutdown,
            ))
            .await;
        }
        Route::Video {
            binary,
            meta,
            gate,
            small,
            stream: name,
        } => {
            let feed = video_feed.expect("resolved above");
            let device = match ctx.access.claim_device(&principal) {
                Ok(place) => place,
                Err(refused) => {
                    tracing::info!(%peer, family = ?principal.account, "video refused: {}", refused.message);
                    ctx.refused(match refused.reason {
                        "device_limit" => Refused::DeviceLimit,
                        _ => Refused::SessionEnded,
                    });
                    video::refuse(&mut socket, &refused.status, 4003, refused.reason).await;
                    return;
                }
            };
            let family = ctx.access.family_name(&principal);
            let presence =
                Presence::start(&ctx.viewing, &principal, family, &name, client_ip(peer));
            ctx.access.seen(&principal);
            let audience = crate::hub::Audience::of(principal.role);
            // A viewer stays for hours: it goes on in a task of its own, which
            // keeps what counts it against the caps, and this connection task
            // (sized for every route's handshake) ends here. Some 5 KB less per
            // viewer (BENCHMARKS.md, issue 11).
            let held: video::Held = Box::new((admission, place, device));
            tokio::spawn(video::serve(
                socket,
                feed,
                video::Format {
                    binary,
                    meta,
                    gate,
                    small,
                },
                audience,
                presence,
                shutdown,
                held,
            ));
        }
        Route::Upload {
            stream,
            gate,
            demand,
        } => {
            let ws_config = ctx.tungstenite_config(limits.max_upload_bytes);
            let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(ws_config)).await;
            // A push token is a kindercam camera pushing: it acts on demand.
            let pusher = matches!(&principal.account,
                auth::Account::Token(t) if t.scope == auth::tokens::Scope::Push);
            // Boxed, like the other routes' sessions: inline, the largest of them
            // would size every connection's task, a viewer's handshake too.
            Box::pin(upload::serve(
                ws,
                &ctx.hub,
                &stream,
                upload::Settings {
                    max_bytes: limits.max_upload_bytes,
                    quality: ctx.config.capture.quality,
                    tell_gate: gate,
                    tell_demand: demand || pusher,
                },
                shutdown,
            ))
            .await;
        }
        Route::Prototype => {
            let relay = relay.expect("resolved above");
            let _device = match ctx.access.claim_device(&principal) {
                Ok(place) => place,
                Err(refused) => {
                    tracing::info!(%peer, family = ?principal.account, "prototype relay refused: {}", refused.message);
                    video::refuse(&mut socket, &refused.status, 4003, refused.reason).await;
                    return;
                }
            };
            let soft = match relay.no_upload {
                None => limits.max_upload_bytes,
                // Only a viewer: nothing to send but a short refusal's worth.
                Some(_) => limits.max_chat_bytes,
            };
            let ws_config = ctx.tungstenite_config(soft);
            let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(ws_config)).await;
            let family = ctx.access.family_name(&principal);
            let presence = Presence::start(
                &ctx.viewing,
                &principal,
                family,
                relay.stream.name(),
                client_ip(peer),
            );
            ctx.access.seen(&principal);
            Box::pin(prototype::serve(ws, relay, presence, shutdown)).await;
        }
    }
    tracing::info!(%peer, "WebSocket closed");
}

/// What a video socket will show. A viewer never creates a stream: it watches
/// one that exists (a configured camera, a broadcast), or waits without taking
/// a hub slot for one of its family's rooms whose broadcast has not begun; any
/// other name is 404. Staff may create a stream by watching it (within the hub's
/// bound), as before.
fn video_feed(
    ctx: &WsContext,
    principal: &auth::Principal,
    name: &str,
) -> Result<video::Feed, Refusal> {
    if let Some(stream) = ctx.hub.get(name) {
        return Ok(video::Feed::Ready(stream));
    }
    if principal.role.is_staff() {
        return ctx.hub.stream(name).map(video::Feed::Ready).map_err(|e| {
            tracing::info!(stream = name, error = %e, "stream not created");
            Refusal::Busy
        });
    }
    let configured = ctx.config.capture.cameras.iter().any(|c| c.name == name);
    // `admit` already checked that a family (or a view token) may enter this room.
    let familys_room = matches!(
        principal.account,
        auth::Account::Family(_) | auth::Account::Token(_)
    );
    if configured || familys_room {
        return Ok(video::Feed::Awaited {
            hub: ctx.hub.clone(),
            name: name.to_owned(),
        });
    }
    Err(Refusal::NoStream)
}

/// The prototype relay's stream and what this socket may do on it. The stream
/// is the one configured name, so opening it here cannot be abused to make
/// streams; a socket may feed it if it may broadcast (staff, or anyone with
/// access control off) and no camera feeds it.
fn prototype_relay(
    ctx: &WsContext,
    principal: &auth::Principal,
) -> Result<prototype::Relay, Refusal> {
    let name = ctx.config.capture.prototype_stream.as_str();
    let stream = ctx.hub.stream(name).map_err(|e| {
        tracing::info!(stream = name, error = %e, "prototype stream not created");
        Refusal::Busy
    })?;
    let no_upload = if ctx.config.capture.cameras.iter().any(|c| c.name == name) {
        Some(format!(
            "stream \"{name}\" is fed by a camera; set --prototype-stream to another name to broadcast"
        ))
    } else {
        ctx.access
            .authorize(principal, auth::Route::Broadcast(Some(name)))
            .err()
            .map(|denied| format!("{denied}"))
    };
    Ok(prototype::Relay {
        stream,
        audience: crate::hub::Audience::of(principal.role),
        no_upload,
        max_bytes: ctx.config.limits.max_upload_bytes,
        quality: ctx.config.capture.quality,
    })
}

/// The chat room a socket asks for, if it may be opened. A room exists beside
/// every configured camera and live stream; a family may also open its own
/// rooms, and staff any room. Anything else is 404, so a viewer cannot make the
/// server keep rooms for made-up names. A room opened for the first time reads
/// its history from the database, on a blocking thread: the async workers carry
/// frames and never wait for the disk. (On a relay in a NATS cluster the room
/// reads it from the chat stream, in a task of its own; the socket waits a
/// little for it, see [`ROOM_READY_WAIT`].)
async fn open_room(
    ctx: &Arc<WsContext>,
    principal: &auth::Principal,
    room: &str,
) -> Result<Arc<crate::chat::ChatRoom>, Refusal> {
    let known = ctx.config.capture.cameras.iter().any(|c| c.name == room)
        || ctx.hub.get(room).is_some()
        || principal.role.is_staff()
        || matches!(principal.account, auth::Account::Family(_));
    if !known {
        return Err(Refusal::NotFound);
    }
    let open = match ctx.chat.open_room(room) {
        Some(open) => open,
        None => {
            let (ctx, room) = (ctx.clone(), room.to_owned());
            tokio::task::spawn_blocking(move || ctx.chat.room(&room))
                .await
                .map_err(|_| Refusal::Busy)?
                .map_err(|_| Refusal::Busy)?
        }
    };
    // A room in the cluster's chat stream reads its history from there: give it
    // a moment, so a joining member gets it as history. Past that (NATS is down)
    // the member joins anyway and receives the rest as it comes.
    open.wait_ready(ROOM_READY_WAIT).await;
    Ok(open)
}

/// Who may open this socket: access control's [`Access::admit`] (the host name,
/// credentials, the page's origin, then the role), which the MJPEG route asks too.
fn admit(
    ctx: &WsContext,
    peer: SocketAddr,
    upgrade: &handshake::Credentials,
) -> Result<auth::Principal, Refusal> {
    let asked = match &upgrade.route {
        Route::Chat { room } => auth::Route::Chat(room),
        Route::Video { stream, .. } => auth::Route::Watch(stream),
        Route::Upload { stream, .. } => auth::Route::Broadcast(Some(stream)),
        Route::Prototype => auth::Route::Watch(&ctx.config.capture.prototype_stream),
    };
    ctx.access
        .admit(&knock(ctx, peer, upgrade), asked)
        .map_err(Refusal::Denied)
}

/// The parts of a handshake access control judges.
fn knock<'a>(
    ctx: &WsContext,
    peer: SocketAddr,
    upgrade: &'a handshake::Credentials,
) -> auth::Knock<'a> {
    auth::Knock {
        peer: client_ip(peer),
        host: upgrade.host.as_deref(),
        origin: upgrade.origin.as_deref(),
        cookie: upgrade.cookie.as_deref(),
        authorization: upgrade.authorization.as_deref(),
        query: &upgrade.query,
        http_port: ctx.http_port,
    }
}
