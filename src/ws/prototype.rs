//! The PHP prototype's video relay, `.../serverCam.php`, so that a daycare can
//! replace its old server without touching its pages.
//!
//! The prototype's camera page (`camara`) sent `canvas.toDataURL()` every 500 ms
//! and its viewer page (`visorCamara`) set every message it received as an
//! `<img>` source; the PHP server relayed each message to everyone. Here every
//! socket on the path watches the `--prototype-stream` and is sent each new frame
//! as a text data URL (nothing else: a status message would break the viewer's
//! `<img>`). A socket that sends a picture (a data URL, or a binary file) becomes
//! the stream's uploader, with the same checks, decode limits, mask and single
//! uploader slot as `/upload/NAME`, and from then on is no longer sent frames: the
//! phone that films does not download its own pictures back. A refused picture
//! is answered with `{"type":"error",...}` to the uploader alone.
//!
//! Families follow the stream's gate as on `/video`: no frames while the room is
//! closed or paused, and none taken meanwhile.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::hub::{Audience, Stream, UploadGuard};
use crate::shutdown::Shutdown;
use crate::viewing_log::Presence;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::upload::{error_message, Incoming, Receiver};
use crate::ws::{close_within, send_within};

/// What one socket on the relay may do.
pub struct Relay {
    pub stream: Arc<Stream>,
    pub audience: Audience,
    /// Why this socket may not feed the stream (a parent's login, a stream a
    /// camera feeds); `None` when it may.
    pub no_upload: Option<String>,
    /// The largest upload (soft limit, answered) and the decoded pictures' quality.
    pub max_bytes: usize,
    pub quality: u8,
}

/// Serves one socket of the relay until it leaves or the daemon shuts down.
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    relay: Relay,
    _presence: Presence,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = relay.stream.clone();
    let viewer = stream.watch(relay.audience, crate::hub::Transport::WsText);
    let mut frames = stream.subscribe();
    // The newest frame at once, as a viewer joining the prototype got the next one.
    frames.mark_changed();
    let mut sent_seq = 0;
    let mut uploader: Option<(UploadGuard, Receiver)> = None;
    let mut keepalive = Keepalive::relaxed();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.wait() => {
                let bye = shutdown.goodbye();
                close_within(&mut ws, bye.code.into(), bye.reason).await;
                break;
            }
            beat = keepalive.tick() => match beat {
                Beat::Ping if send_within(&mut ws, Message::Ping(Default::default())).await => continue,
                _ => break,
            },
            changed = frames.changed(), if uploader.is_none() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = frames.borrow_and_update().clone();
                let Some(frame) = snapshot.frame else { continue };
                let shown = relay.audience == Audience::Staff
                    || stream.gate_state().lets_family_see(snapshot.seq);
                if snapshot.seq == sent_seq || !shown {
                    continue;
                }
                sent_seq = snapshot.seq;
                if !send_within(&mut ws, Message::Text(frame.data_url.clone())).await {
                    break;
                }
                viewer.stats.frame_sent(frame.data_url.len());
                continue;
            }
            incoming = ws.next() => incoming,
        };
        keepalive.heard();
        let incoming = match incoming {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Binary(data))) => Incoming::Binary(data),
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(WsError::Capacity(_))) => {
                let (why, code) = match &relay.no_upload {
                    Some(why) => (why.as_str(), "forbidden"),
                    None => ("upload far over the size limit", "too_large"),
                };
                send_within(&mut ws, error_message(why, code)).await;
                let reason: String = why.chars().take(100).collect();
                close_within(&mut ws, CloseCode::Size, reason).await;
                break;
            }
            Some(Err(_)) => break,
        };
        if uploader.is_none() {
            match become_uploader(&relay) {
                Ok(claimed) => {
                    tracing::info!(stream = stream.name(), "prototype camera connected");
                    uploader = Some(claimed);
                }
                Err((why, code)) => {
                    tracing::debug!(stream = stream.name(), error = %why, "prototype upload refused");
                    if send_within(&mut ws, error_message(&why, code)).await {
                        continue;
                    }
                    break;
                }
            }
        }
        let Some((slot, receiver)) = uploader.as_mut() else {
            continue;
        };
        match receiver.receive(incoming).await {
            Ok(frame) => slot.stream().publish(frame),
            Err(why) => {
                tracing::debug!(stream = stream.name(), error = %why, "prototype upload refused");
                if !send_within(&mut ws, error_message(&why.to_string(), why.code())).await {
                    break;
                }
            }
        }
    }
    if uploader.is_some() {
        tracing::info!(stream = stream.name(), "prototype camera left");
    }
}

/// Claims the stream's uploader slot for this socket, or says why not.
fn become_uploader(relay: &Relay) -> Result<(UploadGuard, Receiver), (String, &'static str)> {
    if let Some(why) = &relay.no_upload {
        return Err((why.clone(), "forbidden"));
    }
    let Some(slot) = relay.stream.claim_upload() else {
        let why = format!(
            "another device is already broadcasting to stream \"{}\"",
            relay.stream.name()
        );
        return Err((why, "busy"));
    };
    let receiver = Receiver::new(relay.stream.clone(), relay.quality, relay.max_bytes)
        .map_err(|e| (e.to_string(), "internal"))?;
    Ok((slot, receiver))
}
