//! Which opening hours apply to each room, and keeping every room's gate in step
//! with them. A room's schedule comes from the config file (`schedule` per camera)
//! unless the admin set one over the API: that one is in the database and wins,
//! and the admin's "always open" (a `DELETE`) wins over the file's hours too.
//!
//! Each room with hours (from either place) gets one task that sets or clears
//! `closed` on the room's stream at each opening and closing, sleeping until the
//! next one, woken early by a change of schedule, and re-checking at least once a
//! minute: a Pi without a real-time clock may boot in the past and have its clock
//! set by NTP later, and its rooms must then open and close at the right time
//! within a minute. A stream created later (a browser camera's room, or a stream
//! the hub forgot and made again) is closed by the hub hook before anyone can see
//! it, so there is no moment at which a closed room is open.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::gate::Closed;
use super::schedule::{Now, Schedule};
use crate::config::Config;
use crate::hub::{Hub, MAX_STREAMS};
use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// The longest a room's task sleeps without looking at the clock again.
pub const RECHECK: Duration = Duration::from_secs(60);

/// What applies to a room now.
#[derive(Debug, Clone, PartialEq)]
pub enum Effective {
    /// No hours: families may watch whenever the room is live.
    Always,
    Hours(Arc<Schedule>),
    /// The database holds hours for the room that can no longer be read (a time
    /// zone gone from the system's tz database): the room stays closed to families
    /// until the admin sets its hours again, rather than opening on a guess.
    Unusable(Arc<str>),
}

impl Effective {
    /// What the room's gate says at `now`, and when that changes (if it does
    /// within the schedule's search window).
    pub fn at(&self, now: Timestamp) -> (Option<Closed>, Option<Timestamp>) {
        match self {
            Effective::Always => (None, None),
            Effective::Unusable(_) => (Some(Closed { opens_at: None }), None),
            Effective::Hours(schedule) => {
                let answer = schedule.at(now);
                let closed = match answer {
                    Now::Open { .. } => None,
                    Now::Closed { opens_at } => Some(Closed {
                        opens_at: opens_at.map(|t| t.as_second()),
                    }),
                };
                (closed, answer.changes_at())
            }
        }
    }
}

struct Room {
    /// What applies; the room's task follows it.
    effective: watch::Sender<Effective>,
}

/// The wall clock: the system's, or a test's.
type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Every room's opening hours. Shared by the admin API, the hub hook and the tasks.
pub struct Hours {
    rooms: Mutex<BTreeMap<String, Room>>,
    /// Bumped when a room gets hours for the first time, so that `drive` starts its task.
    added: watch::Sender<u64>,
    clock: Clock,
}

impl Hours {
    /// The file's hours for each camera, overridden by `stored`, the admin's from
    /// the database (`None`: always open). Stored hours that no longer parse close
    /// the room to families and are logged.
    pub fn new(config: &Config, stored: Vec<(String, Option<String>)>) -> Hours {
        let mut rooms = BTreeMap::new();
        for camera in &config.capture.cameras {
            if let Some(schedule) = &camera.schedule {
                let effective = Effective::Hours(Arc::new(schedule.clone()));
                rooms.insert(
                    camera.name.clone(),
                    Room {
                        effective: watch::Sender::new(effective),
                    },
                );
            }
        }
        for (name, json) in stored {
            let effective = match json.as_deref().map(Schedule::from_json) {
                None => Effective::Always,
                Some(Ok(schedule)) => Effective::Hours(Arc::new(schedule)),
                Some(Err(e)) => {
                    tracing::error!(
                        room = %name, error = %e,
                        "the opening hours saved for this room cannot be used; it stays closed \
                         to families until the admin sets its hours again"
                    );
                    Effective::Unusable(e.to_string().into())
                }
            };
            // Over the file's, if it has hours for the room.
            rooms.insert(
                name,
                Room {
                    effective: watch::Sender::new(effective),
                },
            );
        }
        Hours {
            rooms: Mutex::new(rooms),
            added: watch::Sender::new(0),
            clock: Arc::new(Timestamp::now),
        }
    }

    /// When the database holding the admin's hours exists but cannot be opened:
    /// those hours are unknown (they may be stricter than the file's), so every
    /// camera's room stays closed to families until the database opens again.
    pub fn lost(config: &Config) -> Hours {
        let hours = Hours::new(config, Vec::new());
        {
            let mut rooms = hours.rooms.locked();
            for camera in &config.capture.cameras {
                rooms.insert(
                    camera.name.clone(),
                    Room {
                        effective: watch::Sender::new(Effective::Unusable(
                            "the database with the opening hours cannot be opened".into(),
                        )),
                    },
                );
            }
        }
        hours
    }

    /// The same, reading the wall clock from `clock`: tests move it, and jump it.
    #[cfg(test)]
    fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Hours {
        self.clock = Arc::new(clock);
        self
    }

    /// [`Hours::new`] with the admin's hours read from `store`. A database that
    /// cannot be read leaves the file's hours, and says so.
    pub fn load(config: &Config, store: &crate::store::Store) -> Hours {
        let stored = store.schedules().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the opening hours set by the admin; using the config file's");
            Vec::new()
        });
        Hours::new(config, stored)
    }

    /// Closes each new stream of `hub` whose room is closed now, before any viewer
    /// can attach to it.
    pub fn attach(self: &Arc<Self>, hub: &Hub) {
        let hours = Arc::downgrade(self);
        hub.on_create(move |stream| {
            if let Some(hours) = hours.upgrade() {
                let (closed, _) = hours.effective(stream.name()).at((hours.clock)());
                stream.set_closed(closed);
            }
        });
    }

    /// What applies to the room `name` now.
    pub fn effective(&self, name: &str) -> Effective {
        self.rooms
            .locked()
            .get(name)
            .map_or(Effective::Always, |r| r.effective.borrow().clone())
    }

    /// Applies the admin's hours for a room (`None`: always open), once they are
    /// committed to the database: at once to the room's stream, if it exists, and
    /// to its task's timer. Callers check [`Hours::has_room_for`] first.
    pub fn set(&self, name: &str, schedule: Option<Schedule>, hub: &Hub) {
        let effective = match schedule {
            Some(schedule) => Effective::Hours(Arc::new(schedule)),
            None => Effective::Always,
        };
        {
            let mut rooms = self.rooms.locked();
            if !rooms.contains_key(name) {
                rooms.insert(
                    name.to_owned(),
                    Room {
                        effective: watch::Sender::new(effective.clone()),
                    },
                );
                self.added.send_modify(|n| *n += 1);
            } else if let Some(room) = rooms.get(name) {
                room.effective.send_replace(effective.clone());
            }
        }
        if let Some(stream) = hub.get(name) {
            stream.set_closed(effective.at((self.clock)()).0);
        }
    }

    /// Whether `name` may get hours: rooms with hours are bounded like streams.
    pub fn has_room_for(&self, name: &str) -> bool {
        let rooms = self.rooms.locked();
        rooms.contains_key(name) || rooms.len() < MAX_STREAMS
    }

    /// Rooms with hours and their task's view of them, leaving out `known` ones.
    fn rooms_besides(&self, known: &BTreeSet<String>) -> Vec<(String, watch::Receiver<Effective>)> {
        self.rooms
            .locked()
            .iter()
            .filter(|(name, _)| !known.contains(*name))
            .map(|(name, room)| (name.clone(), room.effective.subscribe()))
            .collect()
    }

    /// Runs one task per room with hours, now and as rooms get hours, until shutdown.
    pub async fn drive(self: Arc<Self>, hub: Arc<Hub>, mut shutdown: Shutdown) {
        let mut added = self.added.subscribe();
        let mut following = BTreeSet::new();
        loop {
            added.borrow_and_update();
            for (name, effective) in self.rooms_besides(&following) {
                following.insert(name.clone());
                tokio::spawn(follow(
                    name,
                    effective,
                    hub.clone(),
                    self.clock.clone(),
                    shutdown.clone(),
                ));
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = added.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// Keeps one room's stream open or closed as its hours say, until shutdown.
async fn follow(
    name: String,
    mut effective: watch::Receiver<Effective>,
    hub: Arc<Hub>,
    clock: Clock,
    mut shutdown: Shutdown,
) {
    let mut last: Option<Option<Closed>> = None;
    loop {
        let hours = effective.borrow_and_update().clone();
        let now = clock();
        let (closed, changes_at) = hours.at(now);
        if last.as_ref() != Some(&closed) {
            match &closed {
                None => tracing::info!(room = %name, "open to families (opening hours)"),
                Some(Closed { opens_at }) => {
                    tracing::info!(room = %name, opens_at = ?opens_at, "closed to families (opening hours)")
                }
            }
        }
        if let Some(stream) = hub.get(&name) {
            stream.set_closed(closed.clone());
        }
        last = Some(closed);
        let wait = changes_at.map_or(RECHECK, |at| until(now, at).min(RECHECK));
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = effective.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long from `now` to `at` (at least a millisecond, so a timer rounding a hair
/// early does not spin).
fn until(now: Timestamp, at: Timestamp) -> Duration {
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::ShutdownTrigger;

    /// Hours that close the room all day today and tomorrow in UTC (closed dates),
    /// open otherwise.
    fn closed_today() -> Schedule {
        let today = jiff::tz::TimeZone::UTC.to_datetime(Timestamp::now()).date();
        Schedule::from_json(&format!(
            r#"{{"timezone":"UTC","open":[{{"days":["mon","tue","wed","thu","fri","sat","sun"],
                "from":"00:00","to":"24:00"}}],"closed_dates":["{today}","{}"]}}"#,
            today.tomorrow().unwrap()
        ))
        .unwrap()
    }

    fn config_with(name: &str, schedule: Option<Schedule>) -> Config {
        let mut config = Config::default();
        config.capture.cameras[0].name = name.to_owned();
        config.capture.cameras[0].schedule = schedule;
        config
    }

    #[test]
    fn the_admin_wins_over_the_file_even_with_always_open() {
        let config = config_with("camera", Some(closed_today()));
        let hours = Hours::new(&config, Vec::new());
        assert!(matches!(hours.effective("camera"), Effective::Hours(_)));
        assert_eq!(hours.effective("sala"), Effective::Always);

        let hours = Hours::new(&config, vec![("camera".into(), None)]);
        assert_eq!(hours.effective("camera"), Effective::Always);

        let stored = serde_json::to_string(&closed_today()).unwrap();
        let hours = Hours::new(
            &config_with("camera", None),
            vec![("sala".into(), Some(stored))],
        );
        assert_eq!(
            hours.effective("sala"),
            Effective::Hours(Arc::new(closed_today()))
        );
    }

    #[test]
    fn unusable_saved_hours_keep_the_room_closed() {
        let hours = Hours::new(
            &Config::default(),
            vec![(
                "camera".into(),
                Some(r#"{"timezone":"Gone/Zone","open":[]}"#.into()),
            )],
        );
        let effective = hours.effective("camera");
        assert!(matches!(effective, Effective::Unusable(_)));
        assert_eq!(
            effective.at(Timestamp::now()).0,
            Some(Closed { opens_at: None })
        );
    }

    #[tokio::test]
    async fn streams_follow_the_hours_at_once_and_new_streams_start_closed() {
        let hours = Arc::new(Hours::new(&Config::default(), Vec::new()));
        let hub = Arc::new(Hub::new());
        hours.attach(&hub);
        let trigger = ShutdownTrigger::new();
        tokio::spawn(hours.clone().drive(hub.clone(), trigger.subscribe()));

        let sala = hub.stream("sala").unwrap();
        assert!(sala.gate().is_open(), "no hours: open");
        let mut gate = sala.subscribe_gate();
        hours.set("sala", Some(closed_today()), &hub);
        assert!(sala.gate().closed.is_some(), "closed at once");
        // The room's task agrees, and keeps it so.
        let opens_at = sala.gate().closed.unwrap().opens_at.unwrap();
        assert_eq!(opens_at % 86_400, 0, "opens at a UTC midnight");
        assert!(opens_at > Timestamp::now().as_second() + 86_400);

        // A room created later is closed from the start.
        hours.set("later", Some(closed_today()), &hub);
        assert!(hub.stream("later").unwrap().gate().closed.is_some());

        // Always open again, at once.
        hours.set("sala", None, &hub);
        tokio::time::timeout(Duration::from_secs(5), gate.wait_for(|g| g.gate.is_open()))
            .await
            .expect("opened")
            .unwrap();
        assert!(
            trigger.drained(Duration::from_secs(2)).await,
            "tasks end at shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_opens_and_closes_on_time_without_polling_and_follows_a_clock_jump() {
        use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
        // A wall clock that runs with tokio's paused clock, counts its readings,
        // and can be jumped (NTP setting a Pi's clock that booted in the past).
        let start = tokio::time::Instant::now();
        let wall0: Timestamp = "2026-06-01T08:00:00Z".parse().unwrap(); // a Monday
        let jump = Arc::new(AtomicI64::new(0));
        let readings = Arc::new(AtomicUsize::new(0));
        let clock = {
            let (jump, readings) = (jump.clone(), readings.clone());
            move || {
                readings.fetch_add(1, Ordering::Relaxed);
                let ran = tokio::time::Instant::now() - start;
                wall0
                    + jiff::SignedDuration::try_from(ran).unwrap()
                    + jiff::SignedDuration::from_secs(jump.load(Ordering::Relaxed))
            }
        };
        let hours = Arc::new(Hours::new(&Config::default(), Vec::new()).with_clock(clock));
        let hub = Arc::new(Hub::new());
        hours.attach(&hub);
        let sala = hub.stream("sala").unwrap();
        let schedule = Schedule::from_json(
            r#"{"timezone":"UTC","open":[{"days":["mon"],"from":"08:05","to":"08:10"}]}"#,
        )
        .unwrap();
        hours.set("sala", Some(schedule), &hub);
        assert_eq!(
            sala.gate().closed,
            Some(Closed {
                opens_at: Some(
                    "2026-06-01T08:05:00Z"
                        .parse::<Timestamp>()
                        .unwrap()
                        .as_second()
                )
            })
        );
        let trigger = ShutdownTrigger::new();
        tokio::spawn(hours.clone().drive(hub.clone(), trigger.subscribe()));
        let mut gate = sala.subscribe_gate();

        gate.wait_for(|g| g.gate.is_open()).await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 5 * 60, "opens at 08:05");
        gate.wait_for(|g| !g.gate.is_open()).await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 10 * 60, "closes at 08:10");
        // About one look a minute while waiting, never one a second (600 then).
        let looked = readings.load(Ordering::Relaxed);
        assert!(looked <= 20, "{looked} clock readings in 10 minutes");

        // The clock is set a week minus three minutes ahead: next Monday 08:07,
        // inside the hours. The room opens within the minute.
        let jumped_at = start.elapsed();
        jump.store(7 * 86_400 - 3 * 60, Ordering::Relaxed);
        gate.wait_for(|g| g.gate.is_open()).await.unwrap();
        assert!(
            start.elapsed() - jumped_at <= RECHECK,
            "opened {:?} after the clock jump",
            start.elapsed() - jumped_at
        );
        assert!(trigger.drained(Duration::from_secs(2)).await);
    }
}
