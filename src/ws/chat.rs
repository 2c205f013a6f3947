//! The chat relay, in the prototype's protocol.
//!
//! A client sends `{"name","message","color"}`; everyone, the sender included,
//! receives `{"type":"usermsg",...}`. Joins and leaves go out as
//! `{"type":"system",...}`, and a bad message earns its sender alone a
//! `{"type":"error",...}`. Every message is serialised once and goes through one
//! bounded broadcast channel, so all clients see the same order; a client that
//! falls behind skips ahead and is told how much it missed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::shutdown::Shutdown;

pub const MAX_NAME_CHARS: usize = 32;
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// Messages a client may fall behind by before it skips ahead.
const CHANNEL_CAPACITY: usize = 256;

/// Readable colours handed out to clients that do not bring a valid one.
const PALETTE: [&str; 10] = [
    "1f77b4", "d62728", "2ca02c", "9467bd", "8c564b", "e377c2", "17becf", "bcbd22", "ff7f0e",
    "7f7f7f",
];

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    Usermsg {
        name: &'a str,
        message: &'a str,
        color: &'a str,
    },
    System {
        message: &'a str,
        event: &'a str,
        online: usize,
    },
    Error {
        message: &'a str,
    },
}

impl Outgoing<'_> {
    fn to_text(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).expect("chat messages always serialise"))
    }
}

/// A chat message that passed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub name: String,
    pub message: String,
    /// Six hex digits, or `None` when the client's colour was missing or invalid.
    pub color: Option<String>,
}

/// Checks one client message; the error text goes back to the sender as is.
pub fn parse_message(text: &str) -> Result<ChatMessage, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| "message is not valid JSON".to_owned())?;
    let object = value
        .as_object()
        .ok_or_else(|| "message must be a JSON object with name, message and color".to_owned())?;
    let field = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let name = clean(field("name")?.unwrap_or(""), false);
    let message = clean(field("message")?.unwrap_or(""), true);
    let color = field("color")?;
    let name_chars = name.chars().count();
    if name_chars == 0 || name_chars > MAX_NAME_CHARS {
        return Err(format!("name must be 1-{MAX_NAME_CHARS} characters"));
    }
    let message_chars = message.chars().count();
    if message_chars == 0 || message_chars > MAX_MESSAGE_CHARS {
        return Err(format!("message must be 1-{MAX_MESSAGE_CHARS} characters"));
    }
    let color = color
        .filter(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    Ok(ChatMessage {
        name,
        message,
        color,
    })
}

/// Trims and removes control characters (keeping line breaks in messages), so
/// nobody can smuggle terminal escapes or invisible text into others' screens.
fn clean(s: &str, keep_newlines: bool) -> String {
    s.trim()
        .chars()
        .filter(|&c| !c.is_control() || (keep_newlines && c == '\n'))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The shared chat room.
#[derive(Debug)]
pub struct ChatRoom {
    tx: broadcast::Sender<Utf8Bytes>,
    /// Recent user messages for clients that join; guarded together with sending
    /// so that history and live messages never overlap or leave a gap.
    history: Mutex<VecDeque<Utf8Bytes>>,
    history_len: usize,
    online: AtomicUsize,
    next_color: AtomicUsize,
}

impl ChatRoom {
    pub fn new(history_len: usize) -> ChatRoom {
        ChatRoom {
            tx: broadcast::Sender::new(CHANNEL_CAPACITY),
            history: Mutex::new(VecDeque::with_capacity(history_len)),
            history_len,
            online: AtomicUsize::new(0),
            next_color: AtomicUsize::new(0),
        }
    }

    pub fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    fn send(&self, text: Utf8Bytes, remember: bool) {
        let mut history = self.history.lock().unwrap();
        if remember && self.history_len > 0 {
            if history.len() == self.history_len {
                history.pop_front();
            }
            history.push_back(text.clone());
        }
        // No receivers is fine: nobody is chatting.
        let _ = self.tx.send(text);
    }

    fn join(&self) -> (broadcast::Receiver<Utf8Bytes>, Vec<Utf8Bytes>) {
        let history = self.history.lock().unwrap();
        (self.tx.subscribe(), history.iter().cloned().collect())
    }

    fn announce(&self, event: &str, online: usize) {
        let message = match event {
            "join" => format!("A participant joined ({online} online)"),
            _ => format!("A participant left ({online} online)"),
        };
        self.send(
            Outgoing::System {
                message: &message,
                event,
                online,
            }
            .to_text(),
            false,
        );
    }
}

/// Serves one chat client until it leaves or the daemon shuts down.
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    room: &ChatRoom,
    max_bytes: usize,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let color = PALETTE[room.next_color.fetch_add(1, Ordering::Relaxed) % PALETTE.len()];
    let (mut rx, history) = room.join();
    let online = room.online.fetch_add(1, Ordering::Relaxed) + 1;
    room.announce("join", online);
    let mut ok = true;
    for text in history {
        if ws.feed(Message::Text(text)).await.is_err() {
            ok = false;
            break;
        }
    }
    ok = ok && ws.flush().await.is_ok();

    while ok {
        tokio::select! {
            _ = shutdown.wait() => {
                let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() })).await;
                break;
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > max_bytes {
                        ok = reply_error(&mut ws, &format!("message too long (at most {max_bytes} bytes)")).await;
                        continue;
                    }
                    match parse_message(&text) {
                        Ok(msg) => {
                            let color = msg.color.as_deref().unwrap_or(color);
                            let out = Outgoing::Usermsg { name: &msg.name, message: &msg.message, color };
                            room.send(out.to_text(), true);
                        }
                        Err(why) => ok = reply_error(&mut ws, &why).await,
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    ok = reply_error(&mut ws, "chat messages must be text frames with JSON").await;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // pings are answered by tungstenite
                Some(Err(WsError::Capacity(_))) => {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Size, reason: "message too big".into() })).await;
                    break;
                }
                Some(Err(WsError::Utf8(_))) => {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Invalid, reason: "invalid UTF-8".into() })).await;
                    break;
                }
                Some(Err(_)) => break,
            },
            outgoing = rx.recv() => match outgoing {
                Ok(text) => ok = ws.send(Message::Text(text)).await.is_ok(),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let note = format!("you missed {missed} messages");
                    let text = Outgoing::System { message: &note, event: "lagged", online: room.online() }.to_text();
                    ok = ws.send(Message::Text(text)).await.is_ok();
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let online = room.online.fetch_sub(1, Ordering::Relaxed) - 1;
    room.announce("leave", online);
}

async fn reply_error<S>(ws: &mut WebSocketStream<S>, why: &str) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text(Outgoing::Error { message: why }.to_text()))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_prototype_messages() {
        let m = parse_message(r#"{"name":" Ana ","message":" hola ","color":"FF8800"}"#).unwrap();
        assert_eq!(
            m,
            ChatMessage {
                name: "Ana".into(),
                message: "hola".into(),
                color: Some("FF8800".into())
            }
        );
    }

    #[test]
    fn invalid_colour_is_left_for_the_server_to_assign() {
        for color in [r#""red""#, r##""#ff0000""##, r#""12345""#, "null"] {
            let text = format!(r#"{{"name":"a","message":"b","color":{color}}}"#);
            assert_eq!(parse_message(&text).unwrap().color, None, "{color}");
        }
        assert_eq!(
            parse_message(r#"{"name":"a","message":"b"}"#)
                .unwrap()
                .color,
            None
        );
    }

    #[test]
    fn refuses_bad_shapes_and_lengths() {
        let err = |t: &str| parse_message(t).unwrap_err();
        assert!(err("not json").contains("JSON"));
        assert!(err("[1,2]").contains("object"));
        assert!(err(r#"{"name":5,"message":"x"}"#).contains("\"name\" must be a string"));
        assert!(err(r#"{"name":"a","message":["x"]}"#).contains("\"message\" must be a string"));
        assert!(err(r#"{"name":"a","message":"b","color":7}"#).contains("color"));
        assert!(err(r#"{"name":"   ","message":"x"}"#).contains("name"));
        assert!(err(&format!(r#"{{"name":"{}","message":"x"}}"#, "n".repeat(33))).contains("name"));
        assert!(err(&format!(
            r#"{{"name":"a","message":"{}"}}"#,
            "m".repeat(1001)
        ))
        .contains("message"));
        // Length counts characters, not bytes: 1000 accented letters are fine.
        assert!(parse_message(&format!(
            r#"{{"name":"ñ","message":"{}"}}"#,
            "é".repeat(1000)
        ))
        .is_ok());
    }

    #[test]
    fn strips_control_characters_but_keeps_line_breaks() {
        let m = parse_message("{\"name\":\"a\\u001b[31mb\",\"message\":\"x\\ny\\u0007\"}").unwrap();
        assert_eq!(m.name, "a[31mb");
        assert_eq!(m.message, "x\ny");
    }
}
