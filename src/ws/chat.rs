//! The chat's socket adapter: reads a member's messages off its WebSocket and
//! writes the room's messages to it, with keepalive, a bounded history replay,
//! bounded sends and a goodbye at shutdown. What a message means is the room's
//! business (`chat/`); this file only moves text.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::auth::Principal;
use crate::chat::protocol::error_text;
use crate::chat::{ChatRoom, Publishing};
use crate::shutdown::Shutdown;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::{close_within, send_within, SEND_STALL_LIMIT};

/// Serves one chat client until it leaves, its session ends, or the daemon shuts down.
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    room: &Arc<ChatRoom>,
    max_bytes: usize,
    principal: Principal,
    family: Option<String>,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut member, mut rx, history) = room.enter(principal, family, max_bytes);
    // The whole replay, not only its flush, is bounded: with no write buffer,
    // each `feed` already waits on the socket.
    let replay = async {
        for text in history {
            ws.feed(Message::Text(text)).await?;
        }
        ws.flush().await
    };
    let mut ok = matches!(
        tokio::time::timeout(SEND_STALL_LIMIT, replay).await,
        Ok(Ok(()))
    );

    let mut keepalive = Keepalive::relaxed();
    // A message on its way to the cluster's chat stream: until it is there (or
    // failed), this member's next messages wait in the socket, in order.
    let mut sending: Option<Publishing> = None;
    while ok {
        tokio::select! {
            _ = shutdown.wait() => {
                let bye = shutdown.goodbye();
                close_within(&mut ws, bye.code.into(), bye.reason).await;
                break;
            }
            beat = keepalive.tick() => match beat {
                Beat::Ping => ok = send_within(&mut ws, Message::Ping(Default::default())).await,
                Beat::Dead => break, // nobody there to read a close frame
            },
            sent = async { sending.as_mut().expect("guarded by is_some").await }, if sending.is_some() => {
                sending = None;
                if let Err(refused) = sent {
                    ok = send_within(&mut ws, Message::Text(error_text(refused.code, &refused.why))).await;
                }
            }
            incoming = ws.next(), if sending.is_none() => match incoming.inspect(|_| keepalive.heard()) {
                Some(Ok(Message::Text(text))) => match member.say(&text) {
                    Ok(publishing) => sending = publishing,
                    Err(refused) => {
                        ok = send_within(&mut ws, Message::Text(error_text(refused.code, &refused.why))).await;
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    let text = error_text("bad_message", "chat messages must be text frames with JSON");
                    ok = send_within(&mut ws, Message::Text(text)).await;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // pings are answered by tungstenite
                Some(Err(WsError::Capacity(_))) => {
                    close_within(&mut ws, CloseCode::Size, "message too big").await;
                    break;
                }
                Some(Err(WsError::Utf8(_))) => {
                    close_within(&mut ws, CloseCode::Invalid, "invalid UTF-8").await;
                    break;
                }
                Some(Err(_)) => break,
            },
            outgoing = rx.recv() => match outgoing {
                Ok(text) => ok = send_within(&mut ws, Message::Text(text)).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    ok = send_within(&mut ws, Message::Text(member.lagged_notice(missed))).await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::chat::room::{Author, CHANNEL_CAPACITY};
    use std::time::Duration;

    async fn next<S: AsyncRead + AsyncWrite + Unpin>(
        client: &mut WebSocketStream<S>,
    ) -> serde_json::Value {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket open")
            .expect("a valid frame");
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    /// A reader too slow for the room is told how many messages it missed, then
    /// carries on with the newest: no message is lost without a word, and the room
    /// never waits for it.

    #[tokio::test]
    async fn a_stalled_reader_is_told_what_it_missed_and_skips_ahead() {
        use tokio_tungstenite::tungstenite::protocol::Role as Side;
        let room = std::sync::Arc::new(ChatRoom::new("camera", 10));
        // A 1 KiB pipe: the server's writes stall after about one message.
        let (server_io, client_io) = tokio::io::duplex(1024);
        let server_ws = WebSocketStream::from_raw_socket(server_io, Side::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Side::Client, None).await;
        let trigger = crate::shutdown::ShutdownTrigger::new();
        let principal = Principal {
            role: Role::Viewer,
            account: crate::auth::Account::Role,
            name: None,
            session: None,
            ended: None,
            expires: None,
        };
        let server = tokio::spawn({
            let (room, shutdown) = (room.clone(), trigger.subscribe());
            async move { serve(server_ws, &room, 4096, principal, None, shutdown).await }
        });
        while next(&mut client).await["event"] != "welcome" {}

        // More posts than the channel holds, while this client reads nothing. The
        // test runs on one thread, so the server task cannot drain any in between.
        const POSTED: usize = 3 * CHANNEL_CAPACITY;
        let filler = "x".repeat(900);
        for i in 0..POSTED {
            room.post(
                Author::Connection(99),
                "Ana",
                None,
                &format!("{i} {filler}"),
                "000000",
                false,
            );
        }

        let (mut received, mut missed, mut last) = (0, 0, None);
        while last != Some(POSTED - 1) {
            let message = next(&mut client).await;
            match (message["type"].as_str(), message["event"].as_str()) {
                (Some("usermsg"), _) => {
                    let n: usize = message["message"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert!(last.is_none_or(|l| n > l), "in order: {n} after {last:?}");
                    last = Some(n);
                    received += 1;
                }
                (Some("system"), Some("lagged")) => {
                    let text = message["message"].as_str().unwrap();
                    missed += text.split(' ').nth(2).unwrap().parse::<usize>().unwrap();
                }
                _ => {}
            }
        }
        assert!(missed > 0, "the stalled reader is told it missed messages");
        assert_eq!(
            received + missed,
            POSTED,
            "every message arrives or is counted as missed"
        );
        assert!(
            received <= CHANNEL_CAPACITY + 1,
            "it skipped ahead instead of queueing"
        );

        trigger.fire();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
