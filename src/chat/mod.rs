//! The chat: rooms where families and staff talk beside the picture.
//!
//! `protocol.rs` is the wire format (the prototype's JSON), `room.rs` a room
//! (history, members, moderation, persistence), `presence.rs` who is in a room
//! and when the others hear of it. The server owns the rooms;
//! `ws/chat.rs` is only the socket adapter that connects a WebSocket to one.

pub mod presence;
pub mod protocol;
pub mod room;

pub use room::{ChatRoom, Member, Publishing, Refused};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::Store;
use crate::sync::Locked;

/// Rooms one daemon keeps at most: one beside each stream the hub can hold.
pub const MAX_ROOMS: usize = crate::hub::MAX_STREAMS;

/// Every chat room, by the name of the stream it sits beside. A room is made
/// the first time somebody allowed in it joins, with its history read back from
/// where the rooms keep it; `/chat` is the room of `camera`.
#[derive(Debug)]
pub struct Rooms {
    rooms: Mutex<BTreeMap<String, Arc<ChatRoom>>>,
    history_len: usize,
    backend: Backend,
    /// Messages posted in every room since the start, for `/metrics`.
    posted: Arc<AtomicU64>,
}

/// Where the rooms keep their history and through what their messages go.
#[derive(Debug)]
enum Backend {
    /// A single node: the daemon's database; each room orders its own messages.
    Local(Store),
    /// Relays on a NATS cluster: one JetStream stream, which orders every
    /// room's messages for all nodes (`cluster/chat.rs`).
    #[cfg(feature = "cluster")]
    Cluster(Arc<crate::cluster::chat::ChatLink>),
}

/// No room can be opened: [`MAX_ROOMS`] are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRooms;

impl std::fmt::Display for TooManyRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many chat rooms (at most {MAX_ROOMS})")
    }
}

impl Rooms {
    /// A single node's rooms, with their history in `store`.
    pub fn new(store: Store, history_len: usize) -> Rooms {
        Rooms {
            rooms: Mutex::new(BTreeMap::new()),
            history_len,
            backend: Backend::Local(store),
            posted: Arc::default(),
        }
    }

    /// A relay's rooms on a NATS cluster: history and messages in the chat
    /// stream, which a task sets up as soon as JetStream answers (see
    /// `cluster/chat.rs`). `js` gives the node's current JetStream context,
    /// `connections` changes when the node's NATS client is replaced (rooms
    /// then read on the new one); `node` names this node. Call it inside the
    /// Tokio runtime.
    #[cfg(feature = "cluster")]
    pub fn clustered(
        js: crate::cluster::chat::JetStreamSource,
        connections: crate::cluster::chat::Connections,
        health: crate::cluster::chat::LinkHealth,
        node: &str,
        history_len: usize,
    ) -> Rooms {
        Rooms {
            rooms: Mutex::new(BTreeMap::new()),
            history_len,
            backend: Backend::Cluster(crate::cluster::chat::ChatLink::open(
                js,
                connections,
                health,
                node,
                history_len,
            )),
            posted: Arc::default(),
        }
    }

    /// Messages posted in every room since the start, rooms since forgotten included.
    pub fn messages_posted(&self) -> u64 {
        self.posted.load(Ordering::Relaxed)
    }

    /// The room beside stream `name`, opened if needed (which reads its history
    /// from the database: call it off the async workers; a clustered room starts
    /// reading its own, see [`ChatRoom::wait_ready`]). The caller has checked
    /// the name and that the asker may open it.
    pub fn room(&self, name: &str) -> Result<Arc<ChatRoom>, TooManyRooms> {
        let mut rooms = self.rooms.locked();
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        if rooms.len() >= MAX_ROOMS {
            // Forget a room nobody is in; its history stays in the database.
            let idle = rooms
                .iter()
                .find(|(_, r)| Arc::strong_count(r) == 1)
                .map(|(n, _)| n.clone());
            match idle {
                Some(n) => {
                    rooms.remove(&n);
                }
                None => return Err(TooManyRooms),
            }
        }
        let room = match &self.backend {
            Backend::Local(store) => Arc::new(
                ChatRoom::load(name, self.history_len, store.clone())
                    .counting_into(self.posted.clone()),
            ),
            #[cfg(feature = "cluster")]
            Backend::Cluster(link) => ChatRoom::clustered(name, link.clone(), self.posted.clone()),
        };
        rooms.insert(name.to_owned(), room.clone());
        Ok(room)
    }

    /// The room beside stream `name` if it is open already (no database read).
    pub fn open_room(&self, name: &str) -> Option<Arc<ChatRoom>> {
        self.rooms.locked().get(name).cloned()
    }

    /// People in each open room now, for `/stats.json`.
    pub fn online(&self) -> BTreeMap<String, usize> {
        self.rooms
            .locked()
            .iter()
            .map(|(name, room)| (name.clone(), room.online()))
            .collect()
    }
}
