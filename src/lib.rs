//! kindercam: a classroom camera server for small Linux boards.
//!
//! A frame's path through the daemon, by file:
//! `source/` captures or draws it, `intake.rs` is the only way it becomes a
//! publishable frame (`encode.rs` turns it into JPEG), `frame.rs` makes its data URL once, `hub.rs` holds the newest one per stream and fans it
//! out, and `ws/video.rs` sends it to each viewer when that viewer's socket has
//! room for it (`sendq.rs`). `ws/upload.rs` is the other way
//! in (a browser's camera), `ws/chat.rs` the chat relay, `http.rs` the pages.
//! `server.rs` binds and runs all of it under one `Shutdown`. `store/` keeps what
//! must survive a restart in one SQLite database. `privacy/` burns privacy masks
//! into frames before anyone sees them. `metrics/` answers `/metrics` for Prometheus.
//! With `--nats`, `cluster/` links relays on a NATS cluster.
//! `push/` sends a camera's frames out to a relay (`--push-to`), through NAT.

pub mod auth;
pub mod canvas;
pub mod chat;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod dct;
pub mod decode;
pub mod devices;
pub mod encode;
pub mod fanout;
pub mod frame;
pub mod http;
pub mod http_guard;
pub mod hub;
pub mod intake;
pub mod jpeg;
pub mod metrics;
pub mod mjpeg;
pub mod net;
pub mod notify;
pub mod privacy;
pub mod push;
pub mod ratelimit;
pub mod records;
pub mod request_head;
pub mod sendq;
pub mod server;
pub mod shrink;
pub mod shutdown;
pub mod source;
pub mod state_file;
pub mod store;
pub mod sync;
pub mod viewing_log;
pub mod ws;

pub use config::Config;
pub use server::Server;
