//! Noticing dead peers. A phone whose Wi-Fi drops sends no FIN, so without this
//! its socket would linger until TCP gave up (minutes): an uploader would keep its
//! stream's single broadcast slot, and the chat would count a ghost as online.
//! Each connection pings at an interval and is dropped when it has not been heard
//! from (any frame, pongs included) for a while.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// What the connection should do when the keepalive ticks.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Ping,
    Dead,
}

/// How often a quiet chat or viewer socket is pinged (the fan-out follows
/// the same rule for its viewers).
pub const RELAXED_PING_EVERY: Duration = Duration::from_secs(30);
/// How long such a socket may stay silent before it counts as gone.
pub const RELAXED_DEAD_AFTER: Duration = Duration::from_secs(75);

pub struct Keepalive {
    ticker: Interval,
    last_heard: Instant,
    dead_after: Duration,
}

impl Keepalive {
    pub fn new(ping_every: Duration, dead_after: Duration) -> Keepalive {
        let mut ticker = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Keepalive {
            ticker,
            last_heard: Instant::now(),
            dead_after,
        }
    }

    /// Chat and viewer sockets: quiet for long stretches by nature.
    pub fn relaxed() -> Keepalive {
        Keepalive::new(RELAXED_PING_EVERY, RELAXED_DEAD_AFTER)
    }

    /// Uploads normally send a frame every interval; a silent uploader is gone, and
    /// its stream should be free for the reconnecting phone soon.
    pub fn eager() -> Keepalive {
        Keepalive::new(Duration::from_secs(5), Duration::from_secs(20))
    }

    /// Call on every frame received from the peer.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    pub async fn tick(&mut self) -> Beat {
        self.ticker.tick().await;
        if self.last_heard.elapsed() >= self.dead_after {
            Beat::Dead
        } else {
            Beat::Ping
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_while_heard_and_gives_up_on_silence() {
        let mut k = Keepalive::new(Duration::from_secs(5), Duration::from_secs(12));
        assert_eq!(k.tick().await, Beat::Ping); // t = 5
        k.heard();
        assert_eq!(k.tick().await, Beat::Ping); // t = 10, heard at 5
        assert_eq!(k.tick().await, Beat::Ping); // t = 15, 10 s of silence
        assert_eq!(k.tick().await, Beat::Dead); // t = 20, 15 s of silence
    }
}
