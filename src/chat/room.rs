//! A chat room: its history, who is in it, moderation, and the one bounded
//! broadcast channel through which every message goes, serialised once, so all
//! members see the same order; a member that falls behind skips ahead and is
//! told how much it missed. A logged-in member's name comes from its session, so
//! nobody can post as somebody else; staff may delete a message or mute its
//! author. A `Member` is one participant from joining to leaving: its colour,
//! its message budget, and its place in the room's presence (`presence.rs`),
//! which an announcer task turns into rate-limited `online` updates.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::presence::{Presence, Update};
use super::protocol::{parse_message_as, Command, Outgoing};
use crate::auth::Principal;
use crate::ratelimit::KeyedLimiter;
use crate::store::Store;
use crate::sync::Locked;

/// Messages a client may fall behind by before it skips ahead.
pub(crate) const CHANNEL_CAPACITY: usize = 256;
/// Per connection: a burst of this many messages, then one per second.
pub const CHAT_BURST: u32 = 5;
/// Numbers the connections of members without a login (HTTP Basic, auth off),
/// across every room, so that two of them never share a message budget.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
/// Authors whose message budget is tracked at once; the longest idle is forgotten.
const TRACKED_AUTHORS: usize = 4096;
/// One message budget per author: a login (all its sockets, in every room) or,
/// without one, a connection. A login holding eight sockets still posts at most
/// one message a second after its burst.
static CHAT_BUDGET: std::sync::LazyLock<KeyedLimiter<Author>> =
    std::sync::LazyLock::new(|| KeyedLimiter::new(CHAT_BURST, CHAT_PER_SECOND, TRACKED_AUTHORS));
pub const CHAT_PER_SECOND: f64 = 1.0;
const DEFAULT_MUTE_MINUTES: u64 = 10;
const MAX_MUTE_MINUTES: u64 = 24 * 60;

/// Readable colours handed out to clients that do not bring a valid one.
const PALETTE: [&str; 10] = [
    "1f77b4", "d62728", "2ca02c", "9467bd", "8c564b", "e377c2", "17becf", "bcbd22", "ff7f0e",
    "7f7f7f",
];

/// Whose message it is, for muting: the login session, or else the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Author {
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

/// One room's chat.
#[derive(Debug)]
pub struct ChatRoom {
    /// The room's name: the stream it sits beside.
    name: String,
    tx: broadcast::Sender<Utf8Bytes>,
    /// Recent user messages for clients that join; guarded together with sending
    /// so that history and live messages never overlap or leave a gap.
    history: Mutex<VecDeque<Posted>>,
    history_len: usize,
    muted: Mutex<HashMap<Author, Instant>>,
    /// Who is here and what the room was told; taken before `history`, never after.
    presence: Mutex<Gathering>,
    /// Wakes the announcer when someone comes or goes.
    changed: Notify,
    next_color: AtomicUsize,
    next_id: AtomicU64,
    /// Where the history outlives a restart (writes are queued, never awaited).
    store: Option<Store>,
    /// Messages posted, counted with every other room of the daemon's (`/metrics`).
    posted: Arc<AtomicU64>,
}

impl ChatRoom {
    /// A room kept in memory only.
    pub fn new(name: &str, history_len: usize) -> ChatRoom {
        ChatRoom {
            name: name.to_owned(),
            tx: broadcast::Sender::new(CHANNEL_CAPACITY),
            history: Mutex::new(VecDeque::with_capacity(history_len)),
            history_len,
            muted: Mutex::new(HashMap::new()),
            presence: Mutex::new(Gathering::default()),
            changed: Notify::new(),
            next_color: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            store: None,
            posted: Arc::default(),
        }
    }

    /// Counts this room's messages into `posted`, shared with the other rooms.
    pub fn counting_into(mut self, posted: Arc<AtomicU64>) -> ChatRoom {
        self.posted = posted;
        self
    }

    /// A room whose history is kept in `store`, so the conversation survives a
    /// power cut; what was saved is read back now. An unreadable history starts
    /// the room empty (and says so in the log).
    pub fn load(name: &str, history_len: usize, store: Store) -> ChatRoom {
        let mut room = ChatRoom::new(name, history_len);
        let saved = store.chat_history(name, history_len).unwrap_or_else(|e| {
            tracing::error!(room = name, error = %e, "cannot read the chat history");
            Vec::new()
        });
        let mut history = room.history.locked();
        for (id, text) in saved {
            // Only well-formed user messages come back; the author of an old message
            // is unknown now, so muting it mutes nobody.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let (Some("usermsg"), Some(name)) = (value["type"].as_str(), value["name"].as_str())
            else {
                continue;
            };
            room.next_id.fetch_max(id + 1, Ordering::Relaxed);
            history.push_back(Posted {
                id,
                author: Author::Connection(0),
                name: name.to_owned(),
                text: Utf8Bytes::from(text),
            });
        }
        drop(history);
        room.store = Some(store);
        room
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Members connected now (for `/stats.json`), counted or not.
    pub fn online(&self) -> usize {
        self.presence.locked().presence.connected()
    }

    /// The online count pages show: members who have settled.
    fn counted(&self) -> usize {
        self.presence.locked().presence.counted()
    }

    fn broadcast(&self, text: Utf8Bytes) {
        let _history = self.history.locked(); // keeps order with `post`
                                              // No receivers is fine: nobody is chatting.
        let _ = self.tx.send(text);
    }

    pub(crate) fn post(
        &self,
        author: Author,
        name: &str,
        family: Option<&str>,
        message: &str,
        color: &str,
        staff: bool,
    ) {
        let mut history = self.history.locked();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = Outgoing::Usermsg {
            id,
            name,
            family,
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
            if let Some(store) = &self.store {
                store.chat_append(&self.name, id, &text, self.history_len);
            }
        }
        let _ = self.tx.send(text);
        self.posted.fetch_add(1, Ordering::Relaxed);
    }

    fn join(&self) -> (broadcast::Receiver<Utf8Bytes>, Vec<Utf8Bytes>) {
        let history = self.history.locked();
        (
            self.tx.subscribe(),
            history.iter().map(|p| p.text.clone()).collect(),
        )
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
                if let Some(store) = &self.store {
                    store.chat_delete(&self.name, id);
                }
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
                    "name": name, "minutes": minutes, "online": self.counted(),
                });
                self.broadcast(Utf8Bytes::from(notice.to_string()));
                Ok(())
            }
        }
    }
}

/// What a member's message earned, for the sender alone: a code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub why: String,
}

impl Refused {
    fn new(code: &'static str, why: impl Into<String>) -> Refused {
        Refused {
            code,
            why: why.into(),
        }
    }
}

/// A room's presence and whether its announcer task runs.
#[derive(Debug, Default)]
struct Gathering {
    presence: Presence,
    announcing: bool,
}

/// One participant of a room, from joining to leaving (when dropped).
pub struct Member {
    room: Arc<ChatRoom>,
    /// Its place in the room's presence.
    place: u64,
    principal: Principal,
    /// The family's name, shown beside the member's own so staff know who speaks.
    family: Option<String>,
    author: Author,
    color: &'static str,
    staff: bool,
    max_bytes: usize,
}

impl ChatRoom {
    /// Joins `principal` to the room: returns the member, its feed of messages, and
    /// what to send it first: the history, then a `welcome` with the online count
    /// (taken together, so nothing is missed or doubled). The others hear of it
    /// only once it has stayed, in the next `online` update. Messages over
    /// `max_bytes` are refused.
    pub fn enter(
        self: &Arc<Self>,
        principal: Principal,
        family: Option<String>,
        max_bytes: usize,
    ) -> (Member, broadcast::Receiver<Utf8Bytes>, Vec<Utf8Bytes>) {
        let color = PALETTE[self.next_color.fetch_add(1, Ordering::Relaxed) % PALETTE.len()];
        let author = match &principal.session {
            Some(session) => Author::Session(session.id),
            None => Author::Connection(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)),
        };
        let staff = principal.role.is_staff();
        let mut gathering = self.presence.locked();
        let place = gathering.presence.enter(Instant::now());
        let (rx, mut first) = self.join();
        // Itself, and those counted already: what the others' pages show, plus one.
        let online = gathering.presence.counted() + 1;
        first.push(
            Outgoing::System {
                message: &format!("You joined ({online} online)"),
                event: "welcome",
                online,
            }
            .to_text(),
        );
        self.keep_announcing(&mut gathering);
        drop(gathering);
        let member = Member {
            room: self.clone(),
            place,
            principal,
            family,
            author,
            color,
            staff,
            max_bytes,
        };
        (member, rx, first)
    }

    /// Starts the announcer if something is pending and it is not running, or
    /// wakes it to look at the new due time.
    fn keep_announcing(self: &Arc<Self>, gathering: &mut Gathering) {
        if gathering.announcing {
            self.changed.notify_one();
            return;
        }
        if gathering.presence.due().is_none() {
            return;
        }
        // Members come and go on the runtime's workers; without a runtime (a
        // unit test dropping a member) the next arrival starts the announcer.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        gathering.announcing = true;
        runtime.spawn(announce(self.clone()));
    }
}

/// Sends the room's `online` updates while any are pending, then ends.
async fn announce(room: Arc<ChatRoom>) {
    loop {
        let due = {
            let mut gathering = room.presence.locked();
            if let Some(update) = gathering.presence.poll(Instant::now()) {
                room.broadcast(update_text(&update));
            }
            match gathering.presence.due() {
                Some(due) => due,
                None => {
                    gathering.announcing = false;
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
            _ = room.changed.notified() => {}
        }
    }
}

/// `{"type":"system","event":"online","online":N,"joined":J,"left":L,"message":...}`.
fn update_text(update: &Update) -> Utf8Bytes {
    let mut parts = Vec::new();
    match update.joined {
        0 => {}
        1 => parts.push("1 participant joined".to_owned()),
        n => parts.push(format!("{n} participants joined")),
    }
    match update.left {
        0 => {}
        1 => parts.push("1 participant left".to_owned()),
        n => parts.push(format!("{n} participants left")),
    }
    let message = format!("{} ({} online)", parts.join(", "), update.online);
    Outgoing::Presence {
        message: &message,
        event: "online",
        online: update.online,
        joined: update.joined,
        left: update.left,
    }
    .to_text()
}

impl Member {
    /// Handles one text message from this member: a post or a staff command.
    pub fn say(&mut self, text: &str) -> Result<(), Refused> {
        let max_bytes = self.max_bytes;
        if text.len() > max_bytes {
            return Err(Refused::new(
                "too_large",
                format!("message too long (at most {max_bytes} bytes)"),
            ));
        }
        if !CHAT_BUDGET.try_take(&self.author) {
            return Err(Refused::new(
                "rate_limited",
                "slow down: at most one message per second",
            ));
        }
        let room = &self.room;
        if let Ok(command) = serde_json::from_str::<Command>(text) {
            if !self.staff {
                return Err(Refused::new(
                    "forbidden",
                    "only staff can moderate the chat",
                ));
            }
            return room
                .moderate(command)
                .map_err(|why| Refused::new("bad_command", why));
        }
        if let Some(minutes) = room.muted_for(self.author) {
            return Err(Refused::new(
                "muted",
                format!("staff muted you; you can write again in {minutes} min"),
            ));
        }
        let msg = parse_message_as(text, self.principal.name.as_ref())
            .map_err(|why| Refused::new("bad_message", why))?;
        let color = msg.color.as_deref().unwrap_or(self.color);
        room.post(
            self.author,
            msg.name.as_str(),
            self.family.as_deref(),
            &msg.message,
            color,
            self.staff,
        );
        Ok(())
    }

    /// The notice for a member whose feed skipped `missed` messages.
    pub fn lagged_notice(&self, missed: u64) -> Utf8Bytes {
        let note = format!("you missed {missed} messages");
        Outgoing::System {
            message: &note,
            event: "lagged",
            online: self.room.counted(),
        }
        .to_text()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut gathering = self.room.presence.locked();
        gathering.presence.leave(self.place, Instant::now());
        self.room.keep_announcing(&mut gathering);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_saved_and_read_back_after_a_restart() {
        let store = Store::in_memory(Default::default()).unwrap();
        let room = ChatRoom::load("camera", 3, store.clone());
        let other = ChatRoom::load("aula-2", 3, store.clone());
        for (i, word) in ["uno", "dos", "tres", "cuatro"].iter().enumerate() {
            room.post(Author::Connection(1), "Ana", None, word, "000000", i == 0);
        }
        other.post(
            Author::Connection(1),
            "Luis",
            None,
            "otra sala",
            "000000",
            false,
        );
        let gone = room.history.locked()[0].id;
        room.moderate(Command::Delete { id: gone }).unwrap();
        store.flush().unwrap();

        let words = |room: &ChatRoom| -> Vec<String> {
            room.join()
                .1
                .iter()
                .map(|t| {
                    serde_json::from_str::<serde_json::Value>(t).unwrap()["message"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        let back = ChatRoom::load("camera", 3, store.clone());
        assert_eq!(
            words(&back),
            ["tres", "cuatro"],
            "the last three, minus the deleted one"
        );
        assert_eq!(
            words(&ChatRoom::load("aula-2", 3, store)),
            ["otra sala"],
            "rooms keep their own"
        );
        back.post(Author::Connection(1), "Ana", None, "cinco", "000000", false);
        assert!(
            back.history.locked().back().unwrap().id > gone + 2,
            "ids keep counting up"
        );
    }

    #[test]
    fn staff_can_delete_and_mute() {
        let room = ChatRoom::new("camera", 10);
        let author = Author::Connection(7);
        room.post(author, "Ana", None, "hola", "000000", false);
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

    /// A login with eight sockets must not post eight times as fast: the budget
    /// is the login's, across its sockets and rooms.
    #[tokio::test]
    async fn one_login_has_one_message_budget_across_rooms_and_sockets() {
        use crate::auth::{Account, DisplayName, Role};
        let sessions = crate::auth::sessions::SessionStore::new(Duration::from_secs(60));
        let name = DisplayName::parse("Ana").unwrap();
        let (_, session) = sessions.create(Role::Viewer, name, None, [0; 32]).unwrap();
        let who = Principal {
            role: Role::Viewer,
            account: Account::Role,
            name: Some(session.name.clone()),
            session: Some(session),
            ended: None,
            expires: None,
        };
        let (a, b) = (
            Arc::new(ChatRoom::new("camera", 10)),
            Arc::new(ChatRoom::new("aula-2", 10)),
        );
        let (mut in_a, _feed_a, _) = a.enter(who.clone(), None, 4096);
        let (mut in_b, _feed_b, _) = b.enter(who, None, 4096);
        let mut said = 0;
        for i in 0..2 * CHAT_BURST {
            let member = if i % 2 == 0 { &mut in_a } else { &mut in_b };
            if member.say(r#"{"message":"hola"}"#).is_ok() {
                said += 1;
            }
        }
        assert_eq!(said, CHAT_BURST, "the burst is shared, not one per socket");
    }
}
