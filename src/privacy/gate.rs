//! Whether families may watch a room right now: the one answer that opening hours
//! and a teacher's pause both feed. The schedule sets or clears `closed`, the
//! pause API sets or clears `paused`; every family viewer, snapshot and (later)
//! MJPEG client of the stream reads the same [`Gate`] from the stream's watch slot,
//! so a change reaches them all at once. Staff and admin are never held at the
//! gate.
//!
//! When both apply, `closed` wins: a room outside its hours stays closed after a
//! pause ends, so "closed, opens Monday 07:30" is the more useful thing to say.

/// Why families cannot watch: the room is outside its opening hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// When the room next opens, in UNIX seconds; `None` when the schedule never
    /// opens again (every day closed, or only past dates).
    pub opens_at: Option<i64>,
}

/// Why families cannot watch: a teacher paused the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// When it resumes by itself, in UNIX seconds.
    pub until: i64,
    /// Who paused it (the staff member's name), for the log and the staff page.
    pub by: String,
}

/// Everything that holds families back from one stream, as its sources set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    pub closed: Option<Closed>,
    pub paused: Option<Paused>,
}

/// What a family viewer is told about a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    Open,
    Closed(&'a Closed),
    Paused(&'a Paused),
}

impl Gate {
    pub fn verdict(&self) -> Verdict<'_> {
        match (&self.closed, &self.paused) {
            (Some(closed), _) => Verdict::Closed(closed),
            (None, Some(paused)) => Verdict::Paused(paused),
            (None, None) => Verdict::Open,
        }
    }

    pub fn is_open(&self) -> bool {
        self.verdict() == Verdict::Open
    }

    /// What staff pages that asked (`?gate=1`) are told of the gate, at once and
    /// on every change: `{"type":"gate","state":"open"|"closed"|"paused",
    /// "until","by","opens_at"}`. Staff keep their frames; this is so that the
    /// page can show the pause and its minutes left.
    pub fn staff_status(&self) -> serde_json::Value {
        let state = match self.verdict() {
            Verdict::Open => "open",
            Verdict::Closed(_) => "closed",
            Verdict::Paused(_) => "paused",
        };
        serde_json::json!({
            "type": "gate",
            "state": state,
            "until": self.paused.as_ref().map(|p| p.until),
            "by": self.paused.as_ref().map(|p| p.by.clone()),
            "opens_at": self.closed.as_ref().and_then(|c| c.opens_at),
        })
    }

    /// What a family viewer is told while held at the gate, as the JSON status
    /// message its socket receives; `None` when the gate is open. `message` is a
    /// key the pages translate (`room_closed`, `room_paused`); the times are UNIX
    /// seconds, so each page says them in its own language and time zone.
    pub fn family_status(&self) -> Option<serde_json::Value> {
        match self.verdict() {
            Verdict::Open => None,
            Verdict::Closed(closed) => Some(serde_json::json!({
                "type": "status",
                "state": "closed",
                "message": "room_closed",
                "opens_at": closed.opens_at,
            })),
            Verdict::Paused(paused) => Some(serde_json::json!({
                "type": "status",
                "state": "paused",
                "message": "room_paused",
                "until": paused.until,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_wins_over_paused() {
        let paused = Paused {
            until: 100,
            by: "Ana".into(),
        };
        let mut gate = Gate::default();
        assert!(gate.is_open());
        gate.paused = Some(paused.clone());
        assert_eq!(gate.verdict(), Verdict::Paused(&paused));
        let closed = Closed {
            opens_at: Some(200),
        };
        gate.closed = Some(closed.clone());
        assert_eq!(gate.verdict(), Verdict::Closed(&closed));
        gate.closed = None;
        gate.paused = None;
        assert!(gate.is_open());
    }

    #[test]
    fn families_are_told_why_and_until_when() {
        let mut gate = Gate::default();
        assert_eq!(gate.family_status(), None);
        gate.paused = Some(Paused {
            until: 1_700_000_600,
            by: "Ana".into(),
        });
        let paused = gate.family_status().unwrap();
        assert_eq!(
            (&paused["state"], &paused["until"], &paused["message"]),
            (
                &"paused".into(),
                &1_700_000_600.into(),
                &"room_paused".into()
            )
        );
        assert!(paused.get("by").is_none(), "families are not told who");
        gate.closed = Some(Closed { opens_at: None });
        let closed = gate.family_status().unwrap();
        assert_eq!(closed["state"], "closed");
        assert!(closed["opens_at"].is_null(), "never opens again: null");
    }
}
