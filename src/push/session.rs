//! One connected session of a pusher: sends the stream's newest frames to the
//! relay while the relay has demand, and listens to what the relay says.
//!
//! The relay's `{"type":"demand","viewers":N}` decides everything: while N > 0
//! the pusher holds the local stream as a viewer (so an on-demand camera opens),
//! and while N is 0 it lets go (the camera closes, its light goes off, no frame
//! uses the uplink) and only keeps the connection alive with pings. It holds the
//! stream as a family would: a room shut on this Pi (its own hours, a pause set
//! here) sends nothing out either, so nothing leaves a Pi whose room is shut.
//!
//! Frames are the hub's published ones, so they are already masked: a frame
//! that could not be masked never reached the hub. At most [`IN_FLIGHT`] frames
//! are on their way (the relay answers each with an ack or an error); while the
//! link is that busy, newer frames replace older ones in the hub's slot and the
//! relay gets the newest when there is room. Nothing queues.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Failure, Link};
use super::Status;
use crate::hub::{Audience, Stream, Transport, ViewerGuard};
use crate::shutdown::Shutdown;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::{close_within, send_within};

/// Frames sent and not yet answered by the relay, at most.
pub const IN_FLIGHT: usize = 2;
/// How often the pusher pings the relay (the relay pings its uploaders every
/// 5 s too, so a live relay is heard from at least that often).
const PING_EVERY: Duration = Duration::from_secs(5);
/// A relay not heard from for this long is gone (a VM that vanished without
/// closing its connections): the pusher moves on to its next relay.
const SILENT_AFTER: Duration = Duration::from_secs(15);
/// How often the relay's refusals of frames are logged, at most.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// How a session ended.
pub enum Ended {
    /// The daemon is shutting down; the relay was told (1001).
    Shutdown,
    Failed(Failure),
}

/// Runs one session until it fails or the daemon shuts down.
pub async fn run(
    mut ws: Link,
    stream: &Arc<Stream>,
    status: &Status,
    shutdown: &mut Shutdown,
) -> Ended {
    let mut frames = stream.subscribe();
    frames.borrow_and_update();
    let mut viewer: Option<ViewerGuard> = None;
    let mut last_seq = 0u64;
    let mut in_flight = 0usize;
    let mut keepalive = Keepalive::new(PING_EVERY, SILENT_AFTER);
    let mut errors = ErrorLog::default();
    let mut gate: Option<String> = None;
    loop {
        let incoming = tokio::select! {
            _ = shutdown.wait() => {
                close_within(&mut ws, CloseCode::Away, "camera shutting down").await;
                return Ended::Shutdown;
            }
            beat = keepalive.tick() => match beat {
                Beat::Ping => {
                    if send_within(&mut ws, Message::Ping(Default::default())).await {
                        continue;
                    }
                    return Ended::Failed(Failure::Lost { detail: "cannot send a ping".into() });
                }
                Beat::Dead => return Ended::Failed(Failure::Silent { secs: SILENT_AFTER.as_secs() }),
            },
            changed = frames.changed(), if viewer.is_some() && in_flight < IN_FLIGHT => {
                if changed.is_err() {
                    // Streams live as long as the hub; this cannot happen.
                    return Ended::Failed(Failure::Lost { detail: "the stream is gone".into() });
                }
                let now = frames.borrow_and_update().clone();
                let Some(frame) = now.frame else { continue };
                if now.seq == last_seq || !stream.gate_state().lets_family_see(now.seq) {
                    continue;
                }
                if last_seq != 0 && now.seq > last_seq + 1 {
                    status.frames_skipped.fetch_add(now.seq - last_seq - 1, Ordering::Relaxed);
                }
                last_seq = now.seq;
                let bytes = frame.jpeg.len();
                if !send_within(&mut ws, Message::Binary(frame.jpeg.clone())).await {
                    return Ended::Failed(Failure::Lost {
                        detail: "the relay stopped taking frames".into(),
                    });
                }
                in_flight += 1;
                if let Some(v) = &viewer {
                    v.stats.frame_sent(bytes);
                }
                status.frames_sent.fetch_add(1, Ordering::Relaxed);
                status.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
                continue;
            }
            incoming = ws.next() => incoming,
        };
        keepalive.heard();
        let text = match incoming {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Ended::Failed(Failure::Closed { code, reason });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Ended::Failed(Failure::Lost {
                    detail: e.to_string(),
                })
            }
            None => {
                return Ended::Failed(Failure::Lost {
                    detail: "the relay closed the connection without a word".into(),
                })
            }
        };
        let Ok(said) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match said["type"].as_str() {
            Some("demand") => {
                let Some(n) = said["viewers"].as_u64() else {
                    continue;
                };
                status.set_demand(Some(n));
                if n > 0 && viewer.is_none() {
                    tracing::info!(
                        stream = stream.name(),
                        viewers = n,
                        "the relay has viewers: pushing frames"
                    );
                    viewer = Some(stream.watch(Audience::Family, Transport::Push));
                    // Only frames from now on: not one the camera took for
                    // someone else a while ago.
                    last_seq = frames.borrow_and_update().seq;
                } else if n == 0 && viewer.is_some() {
                    tracing::info!(
                        stream = stream.name(),
                        "the relay has no viewers: pushing stops"
                    );
                    viewer = None;
                }
            }
            Some("ack") => in_flight = in_flight.saturating_sub(1),
            Some("error") => {
                in_flight = in_flight.saturating_sub(1);
                errors.log(stream.name(), &said);
            }
            Some("gate") => {
                let state = said["state"].as_str().unwrap_or("?").to_owned();
                if gate.as_deref() != Some(state.as_str()) {
                    tracing::info!(
                        stream = stream.name(),
                        gate = %state,
                        until = ?said["until"].as_i64(),
                        by = ?said["by"].as_str(),
                        opens_at = ?said["opens_at"].as_i64(),
                        "the relay's room is {state}"
                    );
                    gate = Some(state);
                }
            }
            _ => {}
        }
    }
}

/// The relay's errors (a refused frame, a stream another device feeds),
/// logged at most every [`ERROR_LOG_EVERY`] with how many were not logged since.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl ErrorLog {
    fn log(&mut self, stream: &str, said: &serde_json::Value) {
        if self.last.is_some_and(|at| at.elapsed() < ERROR_LOG_EVERY) {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            stream,
            code = said["code"].as_str().unwrap_or("?"),
            more = self.unlogged,
            "the relay answered with an error: {}",
            said["message"].as_str().unwrap_or("")
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::hub::Hub;
    use crate::intake::Admitted;
    use crate::shutdown::ShutdownTrigger;
    use futures_util::SinkExt;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    fn frame(n: u8) -> Admitted {
        Admitted::for_test(Frame::from_jpeg(vec![n; 10], 2, 2))
    }

    fn said(text: &str) -> Message {
        Message::Text(text.into())
    }

    /// The next binary message the relay side gets (pings and pongs skipped).
    async fn next_frame(relay: &mut WebSocketStream<DuplexStream>) -> Vec<u8> {
        loop {
            match relay.next().await.expect("open").expect("a message") {
                Message::Binary(b) => return b.to_vec(),
                Message::Text(t) => panic!("unexpected {t}"),
                _ => continue,
            }
        }
    }

    /// Waits until the stream's demand is `n`, as the camera would see it.
    async fn demand_becomes(stream: &Stream, n: usize) {
        let mut watch = stream.demand_watch();
        tokio::time::timeout(Duration::from_secs(5), async {
            while watch.current() != n {
                watch.changed().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("demand stayed at {}, not {n}", stream.demand_count()));
    }

    #[tokio::test(start_paused = true)]
    async fn demand_opens_the_stream_frames_wait_for_acks_and_a_silent_relay_is_left() {
        let hub = Hub::new();
        let stream = hub.stream("camera").unwrap();
        let status = Status::new(&crate::config::Push {
            stream: "camera".into(),
            urls: vec![crate::config::PushUrl::parse("ws://relay/upload/aula-1").unwrap()],
        });
        let (near, far) = tokio::io::duplex(1 << 20);
        let link: Link = WebSocketStream::from_raw_socket(
            Box::new(near) as Box<dyn super::super::client::Io>,
            Role::Client,
            None,
        )
        .await;
        let mut relay = WebSocketStream::from_raw_socket(far, Role::Server, None).await;
        let trigger = ShutdownTrigger::new();
        let mut shutdown = trigger.subscribe();
        let session = tokio::spawn({
            let (stream, status) = (stream.clone(), Arc::new(status));
            async move {
                let ended = run(link, &stream, &status, &mut shutdown).await;
                (ended, status)
            }
        });

        // Nobody on the relay: no demand here, whatever the camera does.
        relay
            .send(said(r#"{"type":"demand","viewers":0}"#))
            .await
            .unwrap();
        // It was 0 before the message too: with the clock paused, this returns
        // once every task is idle, the message read.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stream.demand_count(), 0);
        stream.publish(frame(1));

        // A viewer there: demand here, and only frames made from now on go out.
        relay
            .send(said(r#"{"type":"demand","viewers":3}"#))
            .await
            .unwrap();
        // The push is one viewer here.
        demand_becomes(&stream, 1).await;
        stream.publish(frame(2));
        assert_eq!(next_frame(&mut relay).await[0], 2);
        stream.publish(frame(3));
        assert_eq!(next_frame(&mut relay).await[0], 3);
        // Two unanswered: the next frames wait, and only the newest goes.
        stream.publish(frame(4));
        stream.publish(frame(5));
        // The clock is paused: this returns once every task is idle, so the
        // session has seen both frames (and sent neither) before the ack comes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        relay
            .send(said(r#"{"type":"ack","frames":1}"#))
            .await
            .unwrap();
        assert_eq!(
            next_frame(&mut relay).await[0],
            5,
            "the newest, not the one in between"
        );
        relay
            .send(said(r#"{"type":"error","code":"bad_frame","message":"x"}"#))
            .await
            .unwrap();
        relay
            .send(said(r#"{"type":"ack","frames":2}"#))
            .await
            .unwrap();

        // Nobody again: the stream is let go.
        relay
            .send(said(r#"{"type":"demand","viewers":0}"#))
            .await
            .unwrap();
        demand_becomes(&stream, 0).await;

        // The relay goes silent (reads nothing, answers no ping): left after 15 s.
        let (ended, status) = tokio::time::timeout(Duration::from_secs(60), session)
            .await
            .expect("the session ends")
            .unwrap();
        assert!(
            matches!(ended, Ended::Failed(Failure::Silent { secs: 15 })),
            "ended otherwise"
        );
        assert_eq!(status.frames_sent.load(Ordering::Relaxed), 3);
        assert_eq!(status.frames_skipped.load(Ordering::Relaxed), 1, "frame 4");
        drop(relay);
    }
}
