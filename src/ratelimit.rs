//! Token buckets: a burst, then a steady rate. Used per connection (chat) and per
//! client address (failed logins, connections); the keyed map is bounded so that
//! a flood of addresses cannot grow it without limit.

use crate::sync::Locked;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f64) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(burst),
            per_second,
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is available, without taking it.
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Gives back a token taken for an attempt that turned out not to count.
    pub fn refund(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// One bucket per key, at most `max_keys` of them.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
    burst: u32,
    per_second: f64,
    max_keys: usize,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    pub fn new(burst: u32, per_second: f64, max_keys: usize) -> KeyedLimiter<K> {
        KeyedLimiter {
            buckets: Mutex::new(HashMap::new()),
            burst,
            per_second,
            max_keys,
        }
    }

    fn with_bucket<R>(&self, key: &K, f: impl FnOnce(&mut TokenBucket, Instant) -> R) -> R {
        let now = Instant::now();
        let mut buckets = self.buckets.locked();
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Full buckets carry no memory of misbehaviour; forget them first.
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= self.max_keys {
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.burst, self.per_second));
        f(bucket, now)
    }

    pub fn try_take(&self, key: &K) -> bool {
        self.with_bucket(key, |b, now| b.try_take(now))
    }

    pub fn has_token(&self, key: &K) -> bool {
        self.with_bucket(key, |b, now| b.has_token(now))
    }

    pub fn refund(&self, key: &K) {
        self.with_bucket(key, |b, now| b.refund(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(5, 1.0);
        b.last = start;
        assert!((0..5).all(|_| b.try_take(start)));
        assert!(!b.try_take(start), "burst spent");
        assert!(!b.try_take(start + Duration::from_millis(500)));
        assert!(
            b.try_take(start + Duration::from_millis(1001)),
            "one per second"
        );
        assert!(!b.try_take(start + Duration::from_millis(1100)));
    }

    #[test]
    fn a_refund_gives_back_one_token_up_to_the_burst() {
        let limiter = KeyedLimiter::new(2, 0.0, 8);
        assert!(limiter.try_take(&"a") && limiter.try_take(&"a"));
        assert!(!limiter.has_token(&"a"));
        limiter.refund(&"a");
        assert!(limiter.try_take(&"a"), "the refunded token");
        assert!(!limiter.try_take(&"a"));
        for _ in 0..5 {
            limiter.refund(&"a");
        }
        assert!(limiter.try_take(&"a") && limiter.try_take(&"a"));
        assert!(!limiter.try_take(&"a"), "refunds never exceed the burst");
    }

    #[test]
    fn keys_are_independent_and_bounded() {
        let limiter = KeyedLimiter::new(1, 0.0, 2);
        assert!(limiter.try_take(&"a"));
        assert!(!limiter.try_take(&"a"));
        assert!(limiter.try_take(&"b"));
        assert!(
            limiter.try_take(&"c"),
            "a new key still gets its burst when the map is full"
        );
        assert!(limiter.buckets.locked().len() <= 2);
    }
}
