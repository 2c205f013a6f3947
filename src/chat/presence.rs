//! Who is in a chat room, and when the room hears about it. Announcing every
//! join and leave let one script bury the conversation: 200 connect/close cycles
//! were 400 lines at every other client. Here comings and goings are gathered
//! into one `online` update at most every [`UPDATE_EVERY`]; a member is counted
//! once it has stayed [`SETTLE`], so a connection that lives less than that is
//! never announced at all; and a leave waits [`SETTLE`] too, so a Wi-Fi blip and
//! the reconnects after it come out as one or two updates, not a line per phone.
//! This is bookkeeping only: the room supplies the clock and sends the updates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a member stays before it is counted and announced.
pub const SETTLE: Duration = Duration::from_secs(1);
/// The shortest time between two updates of one room.
pub const UPDATE_EVERY: Duration = Duration::from_secs(2);

/// What one update tells the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// Members counted now: everyone who has stayed at least [`SETTLE`].
    pub online: usize,
    /// Counted since the last update (and still here).
    pub joined: usize,
    /// Counted members who left since the last update.
    pub left: usize,
}

#[derive(Debug)]
struct Present {
    since: Instant,
    counted: bool,
}

/// One room's members and what the room was last told.
#[derive(Debug, Default)]
pub struct Presence {
    members: HashMap<u64, Present>,
    next_id: u64,
    counted: usize,
    /// Counted members who left since the last update, and when the first of them did.
    left: usize,
    first_left: Option<Instant>,
    last_update: Option<Instant>,
}

impl Presence {
    /// Adds a member; the id is for [`Presence::leave`].
    pub fn enter(&mut self, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.members.insert(
            id,
            Present {
                since: now,
                counted: false,
            },
        );
        id
    }

    pub fn leave(&mut self, id: u64, now: Instant) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        if member.counted {
            self.counted -= 1;
            self.left += 1;
            self.first_left.get_or_insert(now);
        }
    }

    /// Everyone connected now, counted or not.
    pub fn connected(&self) -> usize {
        self.members.len()
    }

    /// The number the room was last told, or will be told for what has settled:
    /// what pages show as online.
    pub fn counted(&self) -> usize {
        self.counted
    }

    /// When the next update is due; `None` while there is nothing to tell.
    pub fn due(&self) -> Option<Instant> {
        let settling = self
            .members
            .values()
            .filter(|m| !m.counted)
            .map(|m| m.since + SETTLE);
        let change = settling.chain(self.first_left.map(|t| t + SETTLE)).min()?;
        Some(match self.last_update {
            Some(last) => change.max(last + UPDATE_EVERY),
            None => change,
        })
    }

    /// The update due at `now`, if one is: members who have settled are counted,
    /// and leaves since the last update are told.
    pub fn poll(&mut self, now: Instant) -> Option<Update> {
        if self.due().is_none_or(|due| now < due) {
            return None;
        }
        let mut joined = 0;
        for member in self.members.values_mut() {
            if !member.counted && member.since + SETTLE <= now {
                member.counted = true;
                joined += 1;
            }
        }
        self.counted += joined;
        let left = std::mem::take(&mut self.left);
        self.first_left = None;
        self.last_update = Some(now);
        Some(Update {
            online: self.counted,
            joined,
            left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the room's clock up to `until`, polling whenever an update is due, as
    /// the room's announcer does; returns the updates.
    fn run(p: &mut Presence, until: Instant) -> Vec<Update> {
        let mut updates = Vec::new();
        while let Some(due) = p.due().filter(|d| *d <= until) {
            updates.extend(p.poll(due));
        }
        updates
    }

    #[test]
    fn a_connection_under_a_second_is_never_announced() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        for i in 0..200 {
            let at = t0 + ms(6 * i);
            let id = p.enter(at);
            p.leave(id, at + ms(3));
        }
        assert_eq!(run(&mut p, t0 + ms(10_000)), []);
        assert_eq!((p.connected(), p.counted()), (0, 0));
    }

    #[test]
    fn a_member_is_announced_once_it_stays_and_its_leave_is_told() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        let ana = p.enter(t0);
        assert_eq!(p.due(), Some(t0 + SETTLE));
        assert_eq!(p.poll(t0 + ms(500)), None, "not yet settled");
        assert_eq!(
            run(&mut p, t0 + ms(1500)),
            [Update {
                online: 1,
                joined: 1,
                left: 0
            }]
        );
        p.leave(ana, t0 + ms(5000));
        assert_eq!(
            run(&mut p, t0 + ms(7000)),
            [Update {
                online: 0,
                joined: 0,
                left: 1
            }]
        );
        assert_eq!(p.due(), None, "nothing left to tell");
    }

    #[test]
    fn a_reconnect_storm_is_a_few_updates_with_the_right_count() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        let phones: Vec<u64> = (0..40).map(|_| p.enter(t0)).collect();
        run(&mut p, t0 + ms(5000));
        assert_eq!(p.counted(), 40);
        // The Wi-Fi drops every phone; they come back over the next three seconds.
        let blip = t0 + ms(10_000);
        for id in phones {
            p.leave(id, blip);
        }
        for i in 0..40 {
            p.enter(blip + ms(100 + 75 * i));
        }
        let updates = run(&mut p, blip + ms(20_000));
        assert!(
            (1..=3).contains(&updates.len()),
            "a few updates, not 80 lines: {updates:?}"
        );
        let last = updates.last().unwrap();
        assert_eq!(last.online, 40, "{updates:?}");
        assert_eq!(updates.iter().map(|u| u.left).sum::<usize>(), 40);
        assert_eq!(updates.iter().map(|u| u.joined).sum::<usize>(), 40);
    }

    #[test]
    fn updates_are_at_least_the_interval_apart() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        let mut times = Vec::new();
        for i in 0..100 {
            p.enter(t0 + ms(300 * i));
            if let Some(due) = p.due().filter(|d| *d <= t0 + ms(300 * i)) {
                p.poll(due);
                times.push(due);
            }
        }
        while let Some(due) = p.due() {
            p.poll(due);
            times.push(due);
        }
        assert!(times.len() <= 30 / 2 + 2, "{} updates in 30 s", times.len());
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= UPDATE_EVERY);
        }
        assert_eq!(p.counted(), 100);
    }
}
