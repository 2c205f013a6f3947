//! The chat: rooms where families and staff talk beside the picture.
//!
//! `protocol.rs` is the wire format (the prototype's JSON), `room.rs` a room
//! (history, members, moderation, persistence). The server owns the rooms;
//! `ws/chat.rs` is only the socket adapter that connects a WebSocket to one.

pub mod protocol;
pub mod room;

pub use room::{ChatRoom, Member, Refused, HISTORY_FILE};
