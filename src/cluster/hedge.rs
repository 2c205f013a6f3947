//! Asking a JetStream cluster again while it has not answered, and taking the
//! first answer.
//!
//! A request sent while the cluster elects a leader, or one that reached a
//! server that stopped answering without closing its connections, can go
//! unanswered for its whole time-out, and the client it went out on may have
//! been replaced meanwhile. Waiting on that one request holds up whatever needs
//! the answer: a relay's chat delivery, or its copy of the families and
//! sessions it lets in, and with it every revocation made on another relay.
//! So the request is made again, on the client of the moment, every interval
//! while the earlier ones are still pending, and whichever is answered first
//! wins. Only requests that are safe to make twice belong here: the answers
//! that come later are dropped (a consumer they made goes unused until the
//! server removes it).

use std::future::Future;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

/// How often to ask again, and how long each request waits.
#[derive(Debug, Clone, Copy)]
pub struct Hedge {
    /// A new request this long after the last one, while none has succeeded.
    pub every: Duration,
    /// Each request waits at most this long; none is made after `patience`
    /// less one interval, so there are at most `patience / every` of them, and
    /// the last may wait until almost twice `patience` after the first.
    pub patience: Duration,
}

impl Hedge {
    /// The first success of the requests `ask` makes (each call makes one), or
    /// the last failure once none is left pending; `what` names the request in
    /// that error.
    pub async fn first<T, F, Fut>(self, what: &str, mut ask: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        debug_assert!(self.every > Duration::ZERO, "a hedge needs an interval");
        let mut pending = FuturesUnordered::new();
        let mut why = format!("no answer {what}: each request waited {:?}", self.patience);
        let mut next = Instant::now();
        let last_request = next + self.patience.saturating_sub(self.every);
        let mut made = 0u32;
        loop {
            let now = Instant::now();
            // The first request is made whatever the interval.
            if now >= next && (made == 0 || now <= last_request) {
                pending.push(tokio::time::timeout(self.patience, ask()));
                made += 1;
                next = now + self.every;
            }
            if pending.is_empty() && now > last_request {
                return Err(why);
            }
            tokio::select! {
                // An answer that is there wins over asking once more.
                biased;
                Some(answer) = pending.next(), if !pending.is_empty() => match answer {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(e)) => why = e,
                    Err(_) => {}
                },
                () = tokio::time::sleep_until(next), if now <= last_request => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const HEDGE: Hedge = Hedge {
        every: Duration::from_secs(2),
        patience: Duration::from_secs(12),
    };

    #[tokio::test(start_paused = true)]
    async fn a_request_never_answered_is_overtaken_by_the_next() {
        let asked = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let counter = asked.clone();
        let answer = HEDGE
            .first("making a consumer", move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        // Sent to the server that went silent: no answer, ever.
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(n)
                }
            })
            .await;
        assert_eq!(answer, Ok(1), "the second request's answer");
        assert_eq!(start.elapsed(), Duration::from_millis(2100));
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_answer_makes_no_second_request() {
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        let answer = HEDGE
            .first("reading a bucket", move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, String>("content") }
            })
            .await;
        assert_eq!(answer, Ok("content"));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_answer_it_gives_up_after_its_patience_with_the_last_error() {
        let asked = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let counter = asked.clone();
        let answer: Result<(), String> = HEDGE
            .first("reading a bucket", move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n % 2 == 0 {
                        std::future::pending::<()>().await;
                    }
                    Err(format!("refused {n}"))
                }
            })
            .await;
        // Requests at 0, 2, .. 10 s; the last one left waiting, made at 8 s,
        // gives up at 20 s.
        assert_eq!(asked.load(Ordering::SeqCst), 6);
        assert_eq!(answer, Err("refused 5".to_owned()));
        assert_eq!(start.elapsed(), Duration::from_secs(20));

        let once = Hedge {
            every: HEDGE.patience,
            ..HEDGE
        };
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        let start = Instant::now();
        let single = once
            .first("reading a bucket", move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok::<_, String>(())
                }
            })
            .await;
        assert_eq!(
            single,
            Ok(()),
            "an interval as long as the patience: one request"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let silent: Result<(), String> =
            HEDGE.first("reading a bucket", std::future::pending).await;
        assert_eq!(
            silent,
            Err("no answer reading a bucket: each request waited 12s".to_owned())
        );
    }
}
