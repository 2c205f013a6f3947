//! The chat relay, in the prototype's protocol, plus staff moderation.
//!
//! A client sends `{"name","message","color"}`; everyone, the sender included,
//! receives `{"type":"usermsg",...}`. Joins and leaves go out as
//! `{"type":"system",...}`, and a bad message earns its sender alone a
//! `{"type":"error",...}`. Every message is serialised once and goes through one
//! bounded broadcast channel, so all clients see the same order; a client that
//! falls behind skips ahead and is told how much it missed. A logged-in client's
//! name comes from its session, so nobody can post as somebody else; staff may
//! delete a message or mute its author.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::auth::name::clean_text;
use crate::auth::{DisplayName, Principal, Role};
use crate::ratelimit::TokenBucket;
use crate::shutdown::Shutdown;
use crate::sync::Locked;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::{close_within, send_within, SEND_STALL_LIMIT};

pub const MAX_MESSAGE_CHARS: usize = 1000;
/// Messages a client may fall behind by before it skips ahead.
const CHANNEL_CAPACITY: usize = 256;
/// File in the state directory holding the recent messages.
pub const HISTORY_FILE: &str = "chat-history.json";
/// Per connection: a burst of this many messages, then one per second.
pub const CHAT_BURST: u32 = 5;
pub const CHAT_PER_SECOND: f64 = 1.0;
const DEFAULT_MUTE_MINUTES: u64 = 10;
const MAX_MUTE_MINUTES: u64 = 24 * 60;

/// Readable colours handed out to clients that do not bring a valid one.
const PALETTE: [&str; 10] = [
    "1f77b4", "d62728", "2ca02c", "9467bd", "8c564b", "e377c2", "17becf", "bcbd22", "ff7f0e",
    "7f7f7f",
];

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    Usermsg {
        id: u64,
        name: &'a str,
        message: &'a str,
        color: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        staff: bool,
    },
    System {
        message: &'a str,
        event: &'a str,
        online: usize,
    },
    Delete {
        id: u64,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

impl Outgoing<'_> {
    fn to_text(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).expect("chat messages always serialise"))
    }
}

/// A staff command: `{"type":"delete","id":N}` or `{"type":"mute","id":N,"minutes":M}`.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Command {
    Delete { id: u64 },
    Mute { id: u64, minutes: Option<u64> },
}

/// A chat message that passed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub name: DisplayName,
    pub message: String,
    /// Six hex digits, or `None` when the client's colour was missing or invalid.
    pub color: Option<String>,
}

/// Checks one client message; the error text goes back to the sender as is.
/// `session_name`, when given, replaces whatever name the JSON carries: a
/// logged-in parent cannot post as somebody else.
pub fn parse_message_as(
    text: &str,
    session_name: Option<&DisplayName>,
) -> Result<ChatMessage, String> {
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
    let json_name = field("name")?;
    let name = match session_name {
        Some(name) => name.clone(),
        None => DisplayName::parse(json_name.unwrap_or(""))?,
    };
    let message = clean_text(field("message")?.unwrap_or(""), true);
    let color = field("color")?;
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

/// Whose message it is, for muting: the login session, or else the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Author {
    Session(u64),
    Connection(u64),
}

#[derive(Debug)]
struct Posted {
    id: u64,
    author: Author,
    name: String,
    text: Utf8Bytes,
}

/// The shared chat room.
#[derive(Debug)]
pub struct ChatRoom {
    tx: broadcast::Sender<Utf8Bytes>,
    /// Recent user messages for clients that join; guarded together with sending
    /// so that history and live messages never overlap or leave a gap.
    history: Mutex<VecDeque<Posted>>,
    history_len: usize,
    muted: Mutex<HashMap<Author, Instant>>,
    online: AtomicUsize,
    next_color: AtomicUsize,
    next_id: AtomicU64,
    next_connection: AtomicU64,
    /// Bumped when the history changes, for `keep_saved`.
    changed: watch::Sender<u64>,
}

/// A history entry on disk: the message exactly as clients received it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    id: u64,
    text: String,
}

impl ChatRoom {
    pub fn new(history_len: usize) -> ChatRoom {
        ChatRoom {
            tx: broadcast::Sender::new(CHANNEL_CAPACITY),
            history: Mutex::new(VecDeque::with_capacity(history_len)),
            history_len,
            muted: Mutex::new(HashMap::new()),
            online: AtomicUsize::new(0),
            next_color: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            changed: watch::Sender::new(0),
        }
    }

    /// A room whose history is read back from `file` (written by `keep_saved`), so
    /// the conversation survives a power cut. An unreadable file starts it empty.
    pub fn load(history_len: usize, file: &Path) -> ChatRoom {
        let room = ChatRoom::new(history_len);
        let saved: Vec<Saved> = match fs::read_to_string(file) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "ignoring unreadable chat history");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let mut history = room.history.locked();
        for s in saved.into_iter().rev().take(history_len).rev() {
            // Only well-formed user messages come back; the author of an old message
            // is unknown now, so muting it mutes nobody.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&s.text) else {
                continue;
            };
            let (Some("usermsg"), Some(name)) = (value["type"].as_str(), value["name"].as_str())
            else {
                continue;
            };
            room.next_id.fetch_max(s.id + 1, Ordering::Relaxed);
            history.push_back(Posted {
                id: s.id,
                author: Author::Connection(0),
                name: name.to_owned(),
                text: Utf8Bytes::from(s.text),
            });
        }
        drop(history);
        room
    }

    /// Writes the history to `file` a second after each change (a chat burst is one
    /// write, which spares a Pi's SD card), until shutdown. The last save is the
    /// caller's, with `save` once the connections have closed, so that it holds
    /// whatever was posted during the drain; awaiting this task first keeps two
    /// writes from sharing the temporary file.
    pub async fn keep_saved(&self, file: &Path, mut shutdown: Shutdown) {
        let mut changed = self.changed.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                r = changed.changed() => if r.is_err() { return },
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            changed.mark_unchanged();
            self.save(file).await;
        }
    }

    /// Writes the history to `file` now, off the async threads. A failed write
    /// (full disk) is logged; the chat goes on.
    pub async fn save(&self, file: &Path) {
        let saved: Vec<Saved> = self
            .history
            .locked()
            .iter()
            .map(|p| Saved {
                id: p.id,
                text: p.text.to_string(),
            })
            .collect();
        let target = file.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            let json = serde_json::to_string(&saved).unwrap_or_default();
            crate::state_file::write_private(&target, json.as_bytes())
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::error!(file = %file.display(), error = %e, "cannot save the chat history");
        }
    }

    pub fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    fn broadcast(&self, text: Utf8Bytes) {
        let _history = self.history.locked(); // keeps order with `post`
                                              // No receivers is fine: nobody is chatting.
        let _ = self.tx.send(text);
    }

    fn post(&self, author: Author, name: &str, message: &str, color: &str, staff: bool) {
        let mut history = self.history.locked();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = Outgoing::Usermsg {
            id,
            name,
            message,
            color,
            staff,
        }
        .to_text();
        if self.history_len > 0 {
            if history.len() == self.history_len {
                history.pop_front();
            }
            history.push_back(Posted {
                id,
                author,
                name: name.to_owned(),
                text: text.clone(),
            });
            self.changed.send_modify(|v| *v += 1);
        }
        let _ = self.tx.send(text);
    }

    fn join(&self) -> (broadcast::Receiver<Utf8Bytes>, Vec<Utf8Bytes>) {
        let history = self.history.locked();
        (
            self.tx.subscribe(),
            history.iter().map(|p| p.text.clone()).collect(),
        )
    }

    fn announce(&self, event: &str, message: &str) {
        let online = self.online();
        self.broadcast(
            Outgoing::System {
                message,
                event,
                online,
            }
            .to_text(),
        );
    }

    /// Minutes left on `author`'s mute, if muted.
    fn muted_for(&self, author: Author) -> Option<u64> {
        let mut muted = self.muted.locked();
        let until = *muted.get(&author)?;
        let now = Instant::now();
        if until <= now {
            muted.remove(&author);
            return None;
        }
        Some((until - now).as_secs().div_ceil(60))
    }

    /// Carries out a staff command; the error goes back to the staff member.
    fn moderate(&self, command: Command) -> Result<(), String> {
        match command {
            Command::Delete { id } => {
                let mut history = self.history.locked();
                history.retain(|p| p.id != id);
                self.changed.send_modify(|v| *v += 1);
                let _ = self.tx.send(Outgoing::Delete { id }.to_text());
                Ok(())
            }
            Command::Mute { id, minutes } => {
                let minutes = minutes
                    .unwrap_or(DEFAULT_MUTE_MINUTES)
                    .clamp(1, MAX_MUTE_MINUTES);
                let (author, name) = {
                    let history = self.history.locked();
                    let posted = history
                        .iter()
                        .find(|p| p.id == id)
                        .ok_or_else(|| format!("no recent message {id} to mute its author"))?;
                    (posted.author, posted.name.clone())
                };
                let mut muted = self.muted.locked();
                let now = Instant::now();
                muted.retain(|_, until| *until > now);
                muted.insert(author, now + Duration::from_secs(minutes * 60));
                drop(muted);
                // Name and minutes as fields too, so pages can say it in their language.
                let message = format!("{name} was muted by staff for {minutes} minutes");
                let notice = serde_json::json!({
                    "type": "system", "event": "mute", "message": message,
                    "name": name, "minutes": minutes, "online": self.online(),
                });
                self.broadcast(Utf8Bytes::from(notice.to_string()));
                Ok(())
            }
        }
    }
}

/// Serves one chat client until it leaves, its session ends, or the daemon shuts down.
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    room: &ChatRoom,
    max_bytes: usize,
    principal: Principal,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let color = PALETTE[room.next_color.fetch_add(1, Ordering::Relaxed) % PALETTE.len()];
    let author = match &principal.session {
        Some(session) => Author::Session(session.id),
        None => Author::Connection(room.next_connection.fetch_add(1, Ordering::Relaxed)),
    };
    let staff = principal.role == Role::Staff;
    let mut bucket = TokenBucket::new(CHAT_BURST, CHAT_PER_SECOND);
    let (mut rx, history) = room.join();
    let online = room.online.fetch_add(1, Ordering::Relaxed) + 1;
    room.announce("join", &format!("A participant joined ({online} online)"));
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
            incoming = ws.next() => match incoming.inspect(|_| keepalive.heard()) {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_text(&text, room, &principal, author, staff, color, max_bytes, &mut bucket);
                    if let Err((code, why)) = reply {
                        ok = reply_error(&mut ws, code, &why).await;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    ok = reply_error(&mut ws, "bad_message", "chat messages must be text frames with JSON").await;
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
                    let note = format!("you missed {missed} messages");
                    let text = Outgoing::System { message: &note, event: "lagged", online: room.online() }.to_text();
                    ok = send_within(&mut ws, Message::Text(text)).await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let online = room.online.fetch_sub(1, Ordering::Relaxed) - 1;
    room.announce("leave", &format!("A participant left ({online} online)"));
}

/// Handles one text message; `Err((code, why))` goes back to the sender only.
#[allow(clippy::too_many_arguments)]
fn handle_text(
    text: &str,
    room: &ChatRoom,
    principal: &Principal,
    author: Author,
    staff: bool,
    color: &str,
    max_bytes: usize,
    bucket: &mut TokenBucket,
) -> Result<(), (&'static str, String)> {
    if text.len() > max_bytes {
        return Err((
            "too_large",
            format!("message too long (at most {max_bytes} bytes)"),
        ));
    }
    if !bucket.try_take(Instant::now()) {
        return Err((
            "rate_limited",
            "slow down: at most one message per second".into(),
        ));
    }
    if let Ok(command) = serde_json::from_str::<Command>(text) {
        if !staff {
            return Err(("forbidden", "only staff can moderate the chat".into()));
        }
        return room.moderate(command).map_err(|why| ("bad_command", why));
    }
    if let Some(minutes) = room.muted_for(author) {
        return Err((
            "muted",
            format!("staff muted you; you can write again in {minutes} min"),
        ));
    }
    let msg =
        parse_message_as(text, principal.name.as_ref()).map_err(|why| ("bad_message", why))?;
    let color = msg.color.as_deref().unwrap_or(color);
    room.post(author, msg.name.as_str(), &msg.message, color, staff);
    Ok(())
}

async fn reply_error<S>(ws: &mut WebSocketStream<S>, code: &str, why: &str) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_within(
        ws,
        Message::Text(Outgoing::Error { code, message: why }.to_text()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_message(text: &str) -> Result<ChatMessage, String> {
        parse_message_as(text, None)
    }

    #[test]
    fn accepts_prototype_messages() {
        let m = parse_message(r#"{"name":" Ana ","message":" hola ","color":"FF8800"}"#).unwrap();
        assert_eq!(
            m,
            ChatMessage {
                name: DisplayName::parse("Ana").unwrap(),
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
    fn session_name_replaces_the_json_name() {
        let ana = DisplayName::parse("Ana").unwrap();
        let m = parse_message_as(r#"{"name":"Directora","message":"hola"}"#, Some(&ana)).unwrap();
        assert_eq!(m.name, "Ana");
        assert_eq!(
            parse_message_as(r#"{"message":"hola"}"#, Some(&ana))
                .unwrap()
                .name,
            "Ana"
        );
    }

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
        let room = std::sync::Arc::new(ChatRoom::new(10));
        // A 1 KiB pipe: the server's writes stall after about one message.
        let (server_io, client_io) = tokio::io::duplex(1024);
        let server_ws = WebSocketStream::from_raw_socket(server_io, Side::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Side::Client, None).await;
        let trigger = crate::shutdown::ShutdownTrigger::new();
        let principal = Principal {
            role: Role::Viewer,
            name: None,
            session: None,
            ended: None,
            expires: None,
        };
        let server = tokio::spawn({
            let (room, shutdown) = (room.clone(), trigger.subscribe());
            async move { serve(server_ws, &room, 4096, principal, shutdown).await }
        });
        while next(&mut client).await["event"] != "join" {}

        // More posts than the channel holds, while this client reads nothing. The
        // test runs on one thread, so the server task cannot drain any in between.
        const POSTED: usize = 3 * CHANNEL_CAPACITY;
        let filler = "x".repeat(900);
        for i in 0..POSTED {
            room.post(
                Author::Connection(99),
                "Ana",
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

    #[tokio::test]
    async fn history_is_saved_and_read_back_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("kc-chat-{}", std::process::id()));
        let file = dir.join("chat-history.json");
        let trigger = crate::shutdown::ShutdownTrigger::new();
        let room = std::sync::Arc::new(ChatRoom::new(3));
        let saver = tokio::spawn({
            let (room, file, shutdown) = (room.clone(), file.clone(), trigger.subscribe());
            async move { room.keep_saved(&file, shutdown).await }
        });
        for (i, word) in ["uno", "dos", "tres", "cuatro"].iter().enumerate() {
            room.post(Author::Connection(1), "Ana", word, "000000", i == 0);
        }
        let gone = room.history.locked()[0].id;
        room.moderate(Command::Delete { id: gone }).unwrap();
        assert!(
            trigger.drained(Duration::from_secs(5)).await,
            "the saver stops at shutdown"
        );
        saver.await.unwrap();
        room.save(&file).await;
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let back = ChatRoom::load(3, &file);
        let (_, texts) = back.join();
        let words: Vec<String> = texts
            .iter()
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(t).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            words,
            ["tres", "cuatro"],
            "the last three, minus the deleted one"
        );
        back.post(Author::Connection(1), "Ana", "cinco", "000000", false);
        assert!(
            back.history.locked().back().unwrap().id > gone + 2,
            "ids keep counting up"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn staff_can_delete_and_mute() {
        let room = ChatRoom::new(10);
        let author = Author::Connection(7);
        room.post(author, "Ana", "hola", "000000", false);
        let id = room.history.locked()[0].id;
        assert!(room
            .moderate(Command::Mute {
                id,
                minutes: Some(5)
            })
            .is_ok());
        assert_eq!(room.muted_for(author), Some(5));
        assert_eq!(room.muted_for(Author::Connection(8)), None);
        assert!(room.moderate(Command::Delete { id }).is_ok());
        assert!(room.history.locked().is_empty());
        assert!(
            room.moderate(Command::Mute { id, minutes: None }).is_err(),
            "deleted message is gone"
        );
    }

    #[test]
    fn strips_control_characters_but_keeps_line_breaks() {
        let m = parse_message("{\"name\":\"a\\u001b[31mb\",\"message\":\"x\\ny\\u0007\"}").unwrap();
        assert_eq!(m.name, "a[31mb");
        assert_eq!(m.message, "x\ny");
    }
}
