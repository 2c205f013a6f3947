//! When a pusher tries again: the waits between its connection attempts, and
//! which relay of its failover list it tries next.
//!
//! Waits double from [`FIRST`] up to [`CAP`], each drawn within its upper half
//! ("equal jitter") so that cameras that lost the same relay at the same moment
//! do not all knock again together, yet each wait is at least the last one
//! until the cap (then between 15 and 30 s). A refused
//! token backs off like any other failure: a Pi with a revoked token knocks
//! two to four times a minute, never in a loop. A session that lasted [`STEADY`] was
//! a success: the next attempt starts over, at the first relay, after the
//! shortest wait. A shorter one counts as a failure of that relay (one that
//! accepts and closes at once must not be retried in a tight loop, and must
//! not keep the pusher from its failover relay).

use std::time::Duration;

/// The first wait after a failure.
pub const FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const CAP: Duration = Duration::from_secs(30);
/// A session at least this long resets the waits and the failover order.
pub const STEADY: Duration = Duration::from_secs(10);

/// The retry policy of one pusher.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The upper bound of the next wait.
    ceiling: Duration,
    /// The relay to try next, an index into the failover list.
    next: usize,
    relays: usize,
}

impl Backoff {
    /// For a failover list of `relays` URLs (at least one).
    pub fn new(relays: usize) -> Backoff {
        Backoff {
            ceiling: FIRST,
            next: 0,
            relays: relays.max(1),
        }
    }

    /// The relay to try now.
    pub fn relay(&self) -> usize {
        self.next
    }

    /// The attempt on the current relay failed (or its session was short):
    /// moves on to the next relay, round robin, and returns how long to wait
    /// first. `unit` is a random number in `0.0..1.0` for the jitter.
    pub fn failed(&mut self, unit: f64) -> Duration {
        self.next = (self.next + 1) % self.relays;
        self.wait(unit)
    }

    /// A session that lasted `lasted` ended: after a steady one, start over
    /// at the first relay after the shortest wait; else as [`Backoff::failed`].
    pub fn ended(&mut self, lasted: Duration, unit: f64) -> Duration {
        if lasted >= STEADY {
            self.ceiling = FIRST;
            self.next = 0;
            return self.wait(unit);
        }
        self.failed(unit)
    }

    /// A wait within the upper half of the ceiling, then the ceiling doubles.
    fn wait(&mut self, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let wait = self.ceiling.mul_f64(0.5 + unit / 2.0);
        self.ceiling = (self.ceiling * 2).min(CAP);
        wait
    }
}

/// A random number in `0.0..1.0` for the jitter; 0.5 if the system has none.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_and_stop_at_thirty_seconds() {
        let mut b = Backoff::new(1);
        let mut last = Duration::ZERO;
        let mut waits = Vec::new();
        for i in 0..20 {
            // The worst jitter for growth: the most, then the least.
            let unit = if i % 2 == 0 { 0.999 } else { 0.0 };
            let wait = b.failed(unit);
            if i < 7 {
                assert!(wait >= last, "attempt {i}: {wait:?} after {last:?}");
            } else {
                assert!(wait >= CAP / 2, "attempt {i}: at the cap, {wait:?}");
            }
            assert!(wait <= CAP, "attempt {i}: {wait:?}");
            waits.push(wait);
            last = wait;
        }
        assert!(waits[0] >= FIRST / 2 && waits[0] <= FIRST, "{:?}", waits[0]);
        assert!(waits[6] > waits[2] * 4, "{waits:?}");
        assert!(
            waits[19] >= CAP / 2,
            "capped, but still long: {:?}",
            waits[19]
        );
        // Forty failures in a row take minutes, not a flood of attempts.
        let mut b = Backoff::new(1);
        let total: Duration = (0..40).map(|_| b.failed(jitter())).sum();
        assert!(total > Duration::from_secs(40 * 15 - 300), "{total:?}");
    }

    #[test]
    fn failures_go_round_the_relays_and_a_steady_session_starts_over() {
        let mut b = Backoff::new(3);
        assert_eq!(b.relay(), 0);
        b.failed(0.5);
        assert_eq!(b.relay(), 1);
        b.failed(0.5);
        assert_eq!(b.relay(), 2);
        b.failed(0.5);
        assert_eq!(b.relay(), 0, "round robin");
        let before = b.failed(0.5);
        assert_eq!(b.relay(), 1);
        // Relay 1 held a session for a minute, then went away.
        let wait = b.ended(Duration::from_secs(60), 1.0);
        assert_eq!(b.relay(), 0, "back to the first relay");
        assert_eq!(wait, FIRST, "after the shortest wait");
        assert!(before > wait);
        // A session that closes at once is a failure of that relay.
        let wait = b.ended(Duration::from_millis(200), 1.0);
        assert_eq!(b.relay(), 1);
        assert_eq!(wait, FIRST * 2, "the waits keep growing");
    }

    #[test]
    fn jitter_is_a_unit_fraction() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
