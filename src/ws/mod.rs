//! The WebSocket server on `--ws-listen`: accepts connections within the
//! connection cap, completes the handshake within a time limit, and hands each
//! socket to its route: `/chat`, `/video[/NAME]` or `/upload/NAME`.

pub mod chat;
pub mod handshake;
mod prefixed;
pub mod upload;
pub mod video;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::config::Config;
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use handshake::{Refusal, Route};
use prefixed::Prefixed;

/// Hard protocol limit over the soft (answered) limit: messages between the two
/// get an error reply and the connection stays; larger ones close it with 1009,
/// since tungstenite cannot skip a frame it refused to buffer.
const HARD_LIMIT_FACTOR: usize = 4;
/// Refusals in progress at once; beyond this, excess sockets are just closed.
const MAX_REFUSALS: usize = 64;

/// What every connection task needs.
pub struct WsContext {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub chat: chat::ChatRoom,
    pub connections: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

impl WsContext {
    pub fn new(config: Arc<Config>, hub: Arc<Hub>) -> WsContext {
        WsContext {
            chat: chat::ChatRoom::new(config.chat_history),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            config,
            hub,
        }
    }

    /// WebSocket connections being served now.
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.connections.available_permits()
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
pub async fn serve(listener: TcpListener, ctx: Arc<WsContext>, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "WebSocket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        match ctx.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(handle(socket, peer, permit, ctx.clone(), shutdown.clone()));
            }
            Err(_) => {
                let Ok(refusal) = ctx.refusals.clone().try_acquire_owned() else {
                    continue; // a flood: drop without ceremony
                };
                tracing::warn!(%peer, "WebSocket refused: connection cap reached");
                tokio::spawn(refuse_busy(socket, refusal, ctx.config.handshake_timeout));
            }
        }
    }
    tracing::debug!("WebSocket listener closed");
}

/// Answers 503 once the client has sent its request, so it sees a clear refusal.
async fn refuse_busy(mut socket: TcpStream, _refusal: OwnedSemaphorePermit, limit: Duration) {
    let _ = tokio::time::timeout(
        limit.min(Duration::from_secs(1)),
        handshake::read_request(&mut socket),
    )
    .await;
    Refusal::Busy.send(&mut socket).await;
}

async fn handle(
    mut socket: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    ctx: Arc<WsContext>,
    shutdown: Shutdown,
) {
    let limit = ctx.config.handshake_timeout;
    let upgrade = match tokio::time::timeout(limit, handshake::read_request(&mut socket)).await {
        Ok(Ok(upgrade)) => upgrade,
        Ok(Err(refusal)) => {
            tracing::info!(%peer, ?refusal, "WebSocket handshake refused");
            refusal.send(&mut socket).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "WebSocket handshake timed out");
            return;
        }
    };
    // Resolve the stream before upgrading, so a full hub is a plain HTTP refusal.
    let video_stream = match &upgrade.route {
        Route::Video { stream, .. } => match ctx.hub.stream(stream) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::info!(%peer, error = %e, "WebSocket refused");
                Refusal::Busy.send(&mut socket).await;
                return;
            }
        },
        _ => None,
    };
    if upgrade.accept(&mut socket, limit).await.is_err() {
        return;
    }
    tracing::info!(%peer, route = ?upgrade.route, "WebSocket connected");
    let route = upgrade.route.clone();
    let socket = Prefixed::new(upgrade.leftover, socket);
    let config = &ctx.config;
    match route {
        Route::Chat => {
            let ws_config = ctx.tungstenite_config(config.max_chat_bytes);
            let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(ws_config)).await;
            chat::serve(ws, &ctx.chat, config.max_chat_bytes, shutdown).await;
        }
        Route::Video { binary, .. } => {
            let stream = video_stream.expect("resolved above");
            video::serve(socket, stream, binary, shutdown).await;
        }
        Route::Upload { stream } => {
            let ws_config = ctx.tungstenite_config(config.max_upload_bytes);
            let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(ws_config)).await;
            upload::serve(ws, &ctx.hub, &stream, config.max_upload_bytes, shutdown).await;
        }
    }
    tracing::info!(%peer, "WebSocket closed");
}
