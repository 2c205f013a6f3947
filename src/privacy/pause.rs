//! A teacher's pause: stops a room for families at once, for 1-120 minutes, and
//! lets it go on by itself at the end, so that a forgotten pause never blinds the
//! room for the day. This module owns the pauses in force: it sets the stream's
//! gate (`gate.rs`), which every family viewer and snapshot follows, runs the one
//! clock task that resumes each pause at its time, and writes every pause and
//! resume into the viewing log.
//!
//! A pause outlives a restart: its log row stays open until it ends, and at start
//! the rows still open are put back in force (or closed, if their time ran out
//! while the daemon was down). A restart must not be a way to end a pause early.
//!
//! The pause takes effect in memory at once and its log rows go through the
//! store's queue: a full SD card must never stop a teacher from pausing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::hub::{Hub, Stream, StreamError};
use crate::privacy::gate::{Paused, Verdict};
use crate::shutdown::Shutdown;
use crate::store::{unix_now, PauseStart, Store, ViewId};
use crate::sync::Locked;

pub const MIN_MINUTES: u32 = 1;
pub const MAX_MINUTES: u32 = 120;
/// What a pause lasts when the request does not say.
pub const DEFAULT_MINUTES: u32 = 10;

/// A pause length that is refused, for a 400 naming `minutes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMinutes(pub String);

impl std::fmt::Display for BadMinutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "minutes: {}; a pause lasts a whole number of minutes from {MIN_MINUTES} to {MAX_MINUTES}",
            self.0
        )
    }
}

impl std::error::Error for BadMinutes {}

/// Reads a pause request's body: empty, `{}` or `{"minutes": N}` with N in
/// 1-120; an empty body or a missing key means [`DEFAULT_MINUTES`].
pub fn minutes_from_json(body: &str) -> Result<u32, BadMinutes> {
    if body.trim().is_empty() {
        return Ok(DEFAULT_MINUTES);
    }
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| BadMinutes(format!("the body is not JSON ({e})")))?;
    let Some(object) = value.as_object() else {
        return Err(BadMinutes(
            "the body must be an object like {\"minutes\": 10}".into(),
        ));
    };
    if let Some(other) = object.keys().find(|k| *k != "minutes") {
        return Err(BadMinutes(format!("unknown key {other:?}")));
    }
    match object.get("minutes") {
        None => Ok(DEFAULT_MINUTES),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (MIN_MINUTES..=MAX_MINUTES).contains(n))
            .ok_or_else(|| BadMinutes(format!("{n} is not allowed"))),
    }
}

/// One pause in force.
#[derive(Debug)]
struct Active {
    stream: Arc<Stream>,
    paused: Paused,
    /// Its row in the viewing log.
    log: ViewId,
    /// When the clock task resumes it.
    due: Instant,
}

/// The pauses in force, by stream name.
#[derive(Debug)]
pub struct Pauses {
    hub: Arc<Hub>,
    store: Store,
    /// How long one minute of pause lasts: a minute, but shorter in tests.
    minute: Duration,
    active: Mutex<BTreeMap<String, Active>>,
    /// Wakes the clock task when a pause is added, so it sleeps until the nearest.
    changed: Notify,
}

/// Who paused or resumed: the chat name, or the role for a login without one.
pub fn who(principal: &Principal) -> String {
    principal
        .name
        .as_ref()
        .map_or_else(|| principal.role.as_str().to_owned(), |n| n.to_string())
}

impl Pauses {
    pub fn new(hub: Arc<Hub>, store: Store, minute: Duration) -> Arc<Pauses> {
        Arc::new(Pauses {
            hub,
            store,
            minute,
            active: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        })
    }

    /// Puts back the pauses that were in force when the daemon stopped, and closes
    /// those whose time ran out meanwhile. Reads the database: call it off the
    /// async workers.
    pub fn restore(&self) {
        let open = match self.store.open_pauses() {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the pauses in force; none restored");
                return;
            }
        };
        let now = unix_now();
        let mut active = self.active.locked();
        for pause in open {
            let stream = match self.hub.stream(&pause.stream) {
                Ok(stream) if pause.until > now => stream,
                _ => {
                    self.store.pause_close(pause.id, pause.until.min(now), None);
                    continue;
                }
            };
            // Never longer than the longest pause: a Pi without a clock battery
            // may start with a clock far behind the one that set `until`.
            let left =
                Duration::from_secs((pause.until - now) as u64).min(self.minute * MAX_MINUTES);
            let paused = Paused {
                until: pause.until,
                by: pause.by,
            };
            tracing::info!(stream = %pause.stream, until = pause.until, by = %paused.by, "pause restored");
            stream.set_paused(Some(paused.clone()));
            let replaced = active.insert(
                pause.stream,
                Active {
                    stream,
                    paused,
                    log: pause.id,
                    due: Instant::now() + left,
                },
            );
            if let Some(old) = replaced {
                self.store.pause_close(old.log, now, None);
            }
        }
        drop(active);
        self.changed.notify_one();
    }

    /// Pauses stream `name` for `minutes` (already checked), replacing a pause in
    /// force; families stop receiving frames at once.
    pub fn pause(
        &self,
        name: &str,
        minutes: u32,
        by: &Principal,
        address: &str,
    ) -> Result<Paused, StreamError> {
        let stream = self.hub.stream(name)?;
        let length = self.minute * minutes;
        let now = unix_now();
        let paused = Paused {
            until: now + length.as_secs_f64().ceil() as i64,
            by: who(by),
        };
        let mut active = self.active.locked();
        let log = self.store.pause_open(PauseStart {
            name: by.name.as_ref().map(|n| n.to_string()),
            role: by.role.as_str().to_owned(),
            stream: name.to_owned(),
            start: now,
            until: paused.until,
            address: address.to_owned(),
        });
        stream.set_paused(Some(paused.clone()));
        let replaced = active.insert(
            name.to_owned(),
            Active {
                stream,
                paused: paused.clone(),
                log,
                due: Instant::now() + length,
            },
        );
        if let Some(old) = replaced {
            // The new pause takes over: the old one ends here, resumed by nobody.
            self.store.pause_close(old.log, now, None);
        }
        drop(active);
        self.changed.notify_one();
        tracing::info!(stream = name, minutes, by = %paused.by, "paused for families");
        Ok(paused)
    }

    /// Resumes stream `name` now; `false` when it was not paused.
    pub fn resume(&self, name: &str, by: &Principal) -> bool {
        let mut active = self.active.locked();
        let Some(ended) = active.remove(name) else {
            return false;
        };
        // Under the lock, like `pause`: a pause arriving meanwhile cannot be undone.
        ended.stream.set_paused(None);
        drop(active);
        self.store.pause_close(ended.log, unix_now(), Some(who(by)));
        tracing::info!(stream = name, by = %who(by), "resumed for families");
        true
    }

    /// The pause in force on `name`, if any.
    pub fn paused(&self, name: &str) -> Option<Paused> {
        self.active.locked().get(name).map(|a| a.paused.clone())
    }

    /// The state the pages show: `{"stream", "paused", "until", "by", "closed",
    /// "opens_at", "now"}`. `now` is the server's clock, so a page can count the
    /// minutes left on a phone whose clock differs.
    pub fn state(&self, name: &str) -> serde_json::Value {
        let paused = self.paused(name);
        let closed = self.hub.get(name).and_then(|s| match s.gate().verdict() {
            Verdict::Closed(c) => Some(c.clone()),
            _ => None,
        });
        serde_json::json!({
            "stream": name,
            "paused": paused.is_some(),
            "until": paused.as_ref().map(|p| p.until),
            "by": paused.as_ref().map(|p| p.by.clone()),
            "closed": closed.is_some(),
            "opens_at": closed.and_then(|c| c.opens_at),
            "now": unix_now(),
        })
    }

    /// Resumes each pause at its time, until shutdown. A pause still in force at
    /// shutdown stays open in the log and is restored at the next start.
    pub async fn run_clock(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            let next = self.active.locked().values().map(|a| a.due).min();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = self.changed.notified() => {}
                _ = due => self.expire(),
            }
        }
    }

    /// Resumes the pauses whose time has come.
    fn expire(&self) {
        let now = Instant::now();
        let mut active = self.active.locked();
        let due: Vec<String> = active
            .iter()
            .filter(|(_, a)| a.due <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            if let Some(ended) = active.remove(&name) {
                ended.stream.set_paused(None);
                self.store.pause_close(ended.log, unix_now(), None);
                tracing::info!(stream = %name, "pause over; families watch again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Account, DisplayName, Role};
    use crate::shutdown::ShutdownTrigger;

    #[test]
    fn minutes_default_to_ten_and_stay_within_one_to_one_hundred_twenty() {
        assert_eq!(minutes_from_json(""), Ok(10));
        assert_eq!(minutes_from_json("{}"), Ok(10));
        assert_eq!(minutes_from_json(r#"{"minutes": 1}"#), Ok(1));
        assert_eq!(minutes_from_json(r#"{"minutes": 120}"#), Ok(120));
        for bad in [
            r#"{"minutes": 0}"#,
            r#"{"minutes": 121}"#,
            r#"{"minutes": -5}"#,
            r#"{"minutes": 2.5}"#,
            r#"{"minutes": "10"}"#,
            r#"{"minutes": 10, "why": "nap"}"#,
            "[10]",
            "ten",
        ] {
            let e = minutes_from_json(bad).unwrap_err();
            assert!(e.to_string().starts_with("minutes: "), "{bad}: {e}");
        }
    }

    fn teacher() -> Principal {
        Principal {
            role: Role::Staff,
            account: Account::Role,
            name: Some(DisplayName::parse("Ana").unwrap()),
            session: None,
            ended: None,
            expires: None,
        }
    }

    #[tokio::test]
    async fn a_pause_resumes_by_itself_and_is_logged_with_who_resumed_it() {
        let store = Store::in_memory(Default::default()).unwrap();
        let hub = Arc::new(Hub::new());
        let pauses = Pauses::new(hub.clone(), store.clone(), Duration::from_millis(200));
        let trigger = ShutdownTrigger::new();
        let clock = tokio::spawn(pauses.clone().run_clock(trigger.subscribe()));

        let paused = pauses.pause("aula-1", 1, &teacher(), "10.0.0.2").unwrap();
        let stream = hub.get("aula-1").unwrap();
        assert_eq!(stream.gate().paused.as_ref(), Some(&paused));
        assert_eq!(paused.by, "Ana");
        let mut gate = stream.subscribe_gate();
        tokio::time::timeout(Duration::from_secs(5), gate.wait_for(|g| g.gate.is_open()))
            .await
            .expect("resumed by itself")
            .unwrap();
        assert_eq!(pauses.paused("aula-1"), None);

        pauses.pause("aula-1", 120, &teacher(), "10.0.0.2").unwrap();
        pauses.pause("aula-1", 120, &teacher(), "10.0.0.2").unwrap();
        assert!(pauses.resume("aula-1", &teacher()));
        assert!(
            !pauses.resume("aula-1", &teacher()),
            "nothing left to resume"
        );
        assert!(stream.gate().is_open());

        store.flush().unwrap();
        let rows = store.audit(0, i64::MAX).unwrap();
        let who: Vec<_> = rows
            .iter()
            .map(|r| (r.kind.as_str(), r.end.is_some(), r.resumed_by.as_deref()))
            .collect();
        assert_eq!(
            who,
            [
                ("pause", true, None),        // ran out
                ("pause", true, None),        // replaced by the next
                ("pause", true, Some("Ana")), // resumed early
            ]
        );
        assert!(
            trigger.drained(Duration::from_secs(5)).await,
            "the clock ends with shutdown"
        );
        clock.await.unwrap();
    }

    #[tokio::test]
    async fn a_pause_in_force_outlives_a_restart() {
        let store = Store::in_memory(Default::default()).unwrap();
        let first = Pauses::new(Arc::new(Hub::new()), store.clone(), Duration::from_secs(60));
        let paused = first.pause("aula-1", 30, &teacher(), "10.0.0.2").unwrap();
        store.flush().unwrap();
        drop(first);

        let hub = Arc::new(Hub::new());
        let again = Pauses::new(hub.clone(), store.clone(), Duration::from_secs(60));
        again.restore();
        assert_eq!(again.paused("aula-1"), Some(paused.clone()));
        assert_eq!(hub.get("aula-1").unwrap().gate().paused, Some(paused));
        assert!(again.resume("aula-1", &teacher()));
        store.flush().unwrap();
        assert!(store.open_pauses().unwrap().is_empty());
    }
}
