//! A chat room: its history, who is in it, moderation, and the one bounded
//! broadcast channel through which every message goes, serialised once, so all
//! members see the same order; a member that falls behind skips ahead and is
//! told how much it missed. A logged-in member's name comes from its session, so
//! nobody can post as somebody else; staff may delete a message or mute its
//! author. A `Member` is one participant from joining to leaving: its colour,
//! its message budget, and its place in the room's presence (`presence.rs`),
//! which an announcer task turns into rate-limited `online` updates.
//!
//! A room keeps its history in one of two places: the daemon's database on a
//! single node (the room numbers its messages and sends them itself), or, on
//! relays in a NATS cluster, the cluster's chat stream (`cluster/chat.rs`): a
//! post then goes to the stream first ([`Publishing`], awaited by the member's
//! socket) and reaches this room's channel, with the stream's sequence as its
//! id, only when the stream delivers it back, so every node shows one order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::presence::{Presence, Update};
use super::protocol::{parse_message_as, Command, Outgoing};
use crate::auth::Principal;
#[cfg(feature = "cluster")]
use crate::cluster::chat::{unix_ms, ChatLink, Wire};
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
    /// Somebody on another node of the cluster (a hash of its key there): no
    /// member here is it, so muting it here silences nobody here.
    #[cfg(feature = "cluster")]
    Elsewhere(u64),
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
    /// Whether the history is all here: at once for a local room; for a room in
    /// the cluster's stream, once its delivery task has caught up with the stream.
    ready: watch::Sender<bool>,
    /// The cluster's chat stream, where a clustered room's messages go first.
    #[cfg(feature = "cluster")]
    link: Option<Arc<ChatLink>>,
    /// The task feeding a clustered room from the stream, ended with the room.
    #[cfg(feature = "cluster")]
    follower: std::sync::OnceLock<tokio::task::AbortHandle>,
}

#[cfg(feature = "cluster")]
impl Drop for ChatRoom {
    fn drop(&mut self) {
        if let Some(follower) = self.follower.get() {
            follower.abort();
        }
    }
}

/// A post or staff command on its way to the cluster's chat stream: the
/// member's socket awaits it (reading nothing more from that member meanwhile,
/// so its messages keep their order) and tells the member if it failed.
pub struct Publishing(Pin<Box<dyn Future<Output = Result<(), Refused>> + Send>>);

impl std::fmt::Debug for Publishing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publishing")
    }
}

impl Future for Publishing {
    type Output = Result<(), Refused>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
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
            ready: watch::Sender::new(true),
            #[cfg(feature = "cluster")]
            link: None,
            #[cfg(feature = "cluster")]
            follower: std::sync::OnceLock::new(),
        }
    }

    /// A room whose messages live in the cluster's chat stream: its history and
    /// then its live messages come from there, fed by a task that lives as long
    /// as the room. Needs a Tokio runtime (the link's).
    #[cfg(feature = "cluster")]
    pub fn clustered(name: &str, link: Arc<ChatLink>, posted: Arc<AtomicU64>) -> Arc<ChatRoom> {
        let mut room = ChatRoom::new(name, link.history_len()).counting_into(posted);
        room.ready.send_replace(false);
        room.link = Some(link.clone());
        let room = Arc::new(room);
        let follower = link.follow(&room);
        let _ = room.follower.set(follower);
        room
    }

    /// Waits up to `limit` for the room's history to be all here (at once for a
    /// local room); says whether it is. A member joining before that still gets
    /// every message, the rest of the history as it arrives.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut ready = self.ready.subscribe();
        let waited = tokio::time::timeout(limit, ready.wait_for(|r| *r)).await;
        matches!(waited, Ok(Ok(_)))
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

    /// Posts a message: at once in a local room; in a clustered room, returns
    /// its way to the stream, and the message comes back through [`Self::deliver`].
    pub(crate) fn post(
        &self,
        author: Author,
        name: &str,
        family: Option<&str>,
        message: &str,
        color: &str,
        staff: bool,
    ) -> Option<Publishing> {
        #[cfg(feature = "cluster")]
        if let Some(link) = &self.link {
            let wire = Wire::Post {
                author: link.author_key(author),
                name: name.to_owned(),
                family: family.map(str::to_owned),
                message: message.to_owned(),
                color: color.to_owned(),
                staff,
                void_after_ms: None,
            };
            let posted = self.posted.clone();
            return Some(self.publishing(vec![wire], move || {
                posted.fetch_add(1, Ordering::Relaxed);
            }));
        }
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
            self.keep(
                &mut history,
                Posted {
                    id,
                    author,
                    name: name.to_owned(),
                    text: text.clone(),
                },
            );
            if let Some(store) = &self.store {
                store.chat_append(&self.name, id, &text, self.history_len);
            }
        }
        let _ = self.tx.send(text);
        self.posted.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Sends `wires` to the stream in order (a delete first removes its message
    /// from the stream), then runs `done`; a failure is the member's error.
    #[cfg(feature = "cluster")]
    fn publishing(&self, wires: Vec<Wire>, done: impl FnOnce() + Send + 'static) -> Publishing {
        let link = self.link.clone().expect("only clustered rooms publish");
        let room = self.name.clone();
        Publishing(Box::pin(async move {
            let failed = |e: crate::cluster::chat::PublishFailed| {
                Refused::new("not_sent", format!("{e}; please try again"))
            };
            for wire in wires {
                if let Wire::Delete { id } = wire {
                    link.remove(id).await.map_err(failed)?;
                }
                link.publish(&room, &wire).await.map_err(failed)?;
            }
            done();
            Ok(())
        }))
    }

    /// Keeps `posted` in the replayed history, the oldest going when it is full.
    fn keep(&self, history: &mut VecDeque<Posted>, posted: Posted) {
        if history.len() == self.history_len {
            history.pop_front();
        }
        history.push_back(posted);
    }

    /// Takes in what the cluster's stream delivered for this room, in the
    /// stream's order: `id` is its stream sequence.
    #[cfg(feature = "cluster")]
    pub(crate) fn deliver(&self, link: &ChatLink, id: u64, wire: Wire) {
        match wire {
            Wire::Post {
                author,
                name,
                family,
                message,
                color,
                staff,
                ..
            } => {
                let mut history = self.history.locked();
                let text = Outgoing::Usermsg {
                    id,
                    name: &name,
                    family: family.as_deref(),
                    message: &message,
                    color: &color,
                    staff,
                }
                .to_text();
                if self.history_len > 0 {
                    let author = link.author_from_key(&author);
                    self.keep(
                        &mut history,
                        Posted {
                            id,
                            author,
                            name,
                            text: text.clone(),
                        },
                    );
                }
                let _ = self.tx.send(text);
            }
            Wire::Delete { id } => self.forget(id),
            Wire::Mute { id, until_ms } => {
                let now_ms = unix_ms(std::time::SystemTime::now());
                let Some(left) = until_ms.checked_sub(now_ms).filter(|&ms| ms > 0) else {
                    return; // over already (a mute read back with the history)
                };
                let Some((author, name)) = self.author_of(id) else {
                    return;
                };
                let left = Duration::from_millis(left);
                // Read back with the history (before the room caught up), a mute
                // still holds but is not announced again.
                let announce = *self.ready.borrow();
                self.silence(author, &name, left, announce);
            }
        }
    }

    /// The room's delivery task has read everything the stream held.
    #[cfg(feature = "cluster")]
    pub(crate) fn caught_up(&self) {
        self.ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
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

    /// Carries out a staff command; the error goes back to the staff member. In
    /// a clustered room the command goes through the stream, to every node.
    fn moderate(&self, command: Command) -> Result<Option<Publishing>, String> {
        match command {
            Command::Delete { id } => {
                #[cfg(feature = "cluster")]
                if self.link.is_some() {
                    return Ok(Some(self.publishing(vec![Wire::Delete { id }], || {})));
                }
                self.forget(id);
                if let Some(store) = &self.store {
                    store.chat_delete(&self.name, id);
                }
                Ok(None)
            }
            Command::Mute { id, minutes } => {
                let minutes = minutes
                    .unwrap_or(DEFAULT_MUTE_MINUTES)
                    .clamp(1, MAX_MUTE_MINUTES);
                let (author, name) = self
                    .author_of(id)
                    .ok_or_else(|| format!("no recent message {id} to mute its author"))?;
                let length = Duration::from_secs(minutes * 60);
                #[cfg(feature = "cluster")]
                if self.link.is_some() {
                    let until_ms = unix_ms(std::time::SystemTime::now() + length);
                    return Ok(Some(
                        self.publishing(vec![Wire::Mute { id, until_ms }], || {}),
                    ));
                }
                self.silence(author, &name, length, true);
                Ok(None)
            }
        }
    }

    /// Removes message `id` from the history and tells everyone.
    fn forget(&self, id: u64) {
        let mut history = self.history.locked();
        history.retain(|p| p.id != id);
        let _ = self.tx.send(Outgoing::Delete { id }.to_text());
    }

    /// Who wrote message `id`, if it is in the history.
    fn author_of(&self, id: u64) -> Option<(Author, String)> {
        let history = self.history.locked();
        let posted = history.iter().find(|p| p.id == id)?;
        Some((posted.author, posted.name.clone()))
    }

    /// Mutes `author` (shown as `name`) for `length`, and tells everyone if `announce`.
    fn silence(&self, author: Author, name: &str, length: Duration, announce: bool) {
        let mut muted = self.muted.locked();
        let now = Instant::now();
        muted.retain(|_, until| *until > now);
        muted.insert(author, now + length);
        drop(muted);
        if !announce {
            return;
        }
        let minutes = length.as_secs().div_ceil(60);
        // Name and minutes as fields too, so pages can say it in their language.
        let message = format!("{name} was muted by staff for {minutes} minutes");
        let notice = serde_json::json!({
            "type": "system", "event": "mute", "message": message,
            "name": name, "minutes": minutes, "online": self.counted(),
        });
        self.broadcast(Utf8Bytes::from(notice.to_string()));
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
    /// In a clustered room it is on its way when this returns: the caller
    /// awaits the [`Publishing`], whose error is the member's too.
    pub fn say(&mut self, text: &str) -> Result<Option<Publishing>, Refused> {
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
        Ok(room.post(
            self.author,
            msg.name.as_str(),
            self.family.as_deref(),
            &msg.message,
            color,
            self.staff,
        ))
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
