//! Opening hours: when families may watch a room. This module owns what a schedule
//! *is* and what it answers, with no clock, task or I/O of its own: a time zone from
//! the system's tz database (`/usr/share/zoneinfo`, which Raspberry Pi OS ships),
//! weekly open periods in that zone's wall-clock time, and whole days closed
//! (holidays). It is read from the admin API's JSON or the TOML file (the same
//! shape) with refusals that name the field (`open[1].from`, `closed_dates[0]`), and
//! answers, for an instant, whether the room is open and when that next changes.
//!
//! What a director would expect from wall-clock hours, and how it is kept:
//! - A period is `from` (included) to `to` (excluded) on each of its days, in the
//!   zone's local time, so "07:30" stays 07:30 across daylight-saving changes.
//! - `from` must be before `to`. A period past midnight (a night shift) is written
//!   as two: one ending at `"24:00"` and one starting at `"00:00"` the next day.
//!   Periods that touch or overlap count as one, so such a room does not close for
//!   an instant at midnight, and "open until" says 06:00, not 24:00.
//! - A wall-clock time that does not exist (the hour skipped when clocks go
//!   forward) takes effect at the first instant after it: a period from 02:30 on
//!   that night starts when the clocks jump to 03:00. A time that happens twice
//!   (the hour repeated when clocks go back) takes effect the first time.
//! - A closed date closes that whole local day, including the part of a night shift
//!   that falls on it.
//! - No open periods at all is allowed: the room is never open to families.

use std::fmt;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// More open periods than this is refused: a week with four periods a day is 28.
pub const MAX_PERIODS: usize = 32;
/// More closed dates than this is refused: a year of holidays is a few dozen.
pub const MAX_CLOSED_DATES: usize = 400;
/// How far ahead the next opening or closing is looked for, in days. A room that
/// does not open (or close) within this is reported as never doing so.
pub const SEARCH_DAYS: i32 = 400;

/// Minutes in a day; `24:00` is this many minutes.
const DAY_MINUTES: u16 = 24 * 60;

/// The keys of a schedule and of one period, for the refusals of unknown ones.
const SCHEDULE_KEYS: [&str; 3] = ["timezone", "open", "closed_dates"];
const PERIOD_KEYS: [&str; 3] = ["days", "from", "to"];
/// Day names in the order they are written back (Monday first).
const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];
/// How the TOML reader hands over a bare date or time (`closed_dates = [2026-12-25]`)
/// to a format-agnostic value.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

/// A refused schedule: which field (`timezone`, `open[1].from`, `closed_dates[0]`)
/// and why, for a 400 answer or a configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ScheduleError {}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One weekly open period: `from` to `to` on each of `days`, in minutes of the
/// local day (`to` may be 1440, "24:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    /// Bit `n` set: open on the `n`th day of `DAYS` (bit 0 is Monday).
    days: u8,
    from: u16,
    to: u16,
}

impl Period {
    fn on(&self, day: Weekday) -> bool {
        self.days & (1 << day.to_monday_zero_offset()) != 0
    }
}

/// A checked schedule. Serializes as the same JSON object it is read from, with
/// days in week order and closed dates sorted.
#[derive(Debug, Clone)]
pub struct Schedule {
    timezone: String,
    zone: TimeZone,
    open: Vec<Period>,
    /// Sorted, without repeats.
    closed_dates: Vec<Date>,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        // The zone is what its name found in the tz database.
        self.timezone == other.timezone
            && self.open == other.open
            && self.closed_dates == other.closed_dates
    }
}

impl Eq for Schedule {}

/// Whether a room is open at an instant, and when that next changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// Families may watch. `closes_at` is `None` when the room stays open for the
    /// whole search window ([`SEARCH_DAYS`]).
    Open { closes_at: Option<Timestamp> },
    /// Families may not watch. `opens_at` is `None` when the room does not open
    /// within the search window.
    Closed { opens_at: Option<Timestamp> },
}

impl Now {
    pub fn is_open(&self) -> bool {
        matches!(self, Now::Open { .. })
    }

    /// When this answer stops being true, if within the search window.
    pub fn changes_at(&self) -> Option<Timestamp> {
        match *self {
            Now::Open { closes_at } => closes_at,
            Now::Closed { opens_at } => opens_at,
        }
    }
}

impl Schedule {
    /// Reads the admin API's body: `{"timezone", "open": [{"days", "from", "to"}],
    /// "closed_dates"}`.
    pub fn from_json(text: &str) -> Result<Schedule, ScheduleError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| refuse("schedule", format!("not valid JSON: {e}")))?;
        Schedule::from_value(&value)
    }

    /// Reads a schedule from a parsed value (JSON, or TOML through serde).
    pub fn from_value(value: &Value) -> Result<Schedule, ScheduleError> {
        let object = value.as_object().ok_or_else(|| {
            refuse(
                "schedule",
                "must be an object with timezone, open and closed_dates",
            )
        })?;
        if let Some(unknown) = object.keys().find(|k| !SCHEDULE_KEYS.contains(&k.as_str())) {
            return Err(refuse(
                unknown.clone(),
                "unknown key; a schedule has timezone, open and closed_dates",
            ));
        }
        let timezone = match object.get("timezone") {
            Some(Value::String(name)) => name.trim().to_owned(),
            Some(_) => {
                return Err(refuse(
                    "timezone",
                    "must be a time zone name such as \"America/Bogota\"",
                ))
            }
            None => {
                return Err(refuse(
                    "timezone",
                    "missing; name the room's time zone, such as \"America/Bogota\"",
                ))
            }
        };
        let zone = zone_named(&timezone)?;
        let open = match object.get("open") {
            None => {
                return Err(refuse(
                    "open",
                    "missing; list the open periods, e.g. [{\"days\": [\"mon\"], \"from\": \"07:30\", \"to\": \"16:30\"}]",
                ))
            }
            Some(Value::Array(periods)) => {
                if periods.len() > MAX_PERIODS {
                    return Err(refuse(
                        "open",
                        format!(
                            "{} periods; at most {MAX_PERIODS} are allowed",
                            periods.len()
                        ),
                    ));
                }
                periods
                    .iter()
                    .enumerate()
                    .map(|(i, p)| period(i, p))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(refuse("open", "must be a list of periods")),
        };
        let mut closed_dates = match object.get("closed_dates") {
            None => Vec::new(),
            Some(Value::Array(dates)) => {
                if dates.len() > MAX_CLOSED_DATES {
                    return Err(refuse(
                        "closed_dates",
                        format!(
                            "{} dates; at most {MAX_CLOSED_DATES} are allowed",
                            dates.len()
                        ),
                    ));
                }
                dates
                    .iter()
                    .enumerate()
                    .map(|(i, d)| date(i, d))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => {
                return Err(refuse(
                    "closed_dates",
                    "must be a list of dates such as \"2026-12-25\"",
                ))
            }
        };
        closed_dates.sort_unstable();
        closed_dates.dedup();
        Ok(Schedule {
            timezone,
            zone,
            open,
            closed_dates,
        })
    }

    /// The time zone's name, as given.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// Whether the room is open at `t`, and until when (or from when).
    pub fn at(&self, t: Timestamp) -> Now {
        let today = self.zone.to_datetime(t).date();
        // From yesterday: a period that ended at today's midnight still joins one
        // that starts then.
        let Ok(first) = today.yesterday() else {
            return Now::Closed { opens_at: None };
        };
        let mut open_until: Option<Timestamp> = None;
        let mut last_day_end = None;
        for day in days_from(first).take(SEARCH_DAYS as usize + 2) {
            last_day_end = self.resolve(day, DAY_MINUTES);
            for (start, end) in self.intervals(day) {
                if end <= t {
                    continue;
                }
                match open_until {
                    None if start <= t => open_until = Some(end),
                    None => {
                        return Now::Closed {
                            opens_at: Some(start),
                        }
                    }
                    Some(until) if start <= until => open_until = Some(until.max(end)),
                    Some(until) => {
                        return Now::Open {
                            closes_at: Some(until),
                        }
                    }
                }
            }
        }
        match open_until {
            // Open to the end of the window: past it, unknown.
            Some(until) if Some(until) >= last_day_end => Now::Open { closes_at: None },
            Some(until) => Now::Open {
                closes_at: Some(until),
            },
            None => Now::Closed { opens_at: None },
        }
    }

    /// The open intervals of one local day, by start.
    fn intervals(&self, day: Date) -> Vec<(Timestamp, Timestamp)> {
        if self.closed_dates.binary_search(&day).is_ok() {
            return Vec::new();
        }
        let weekday = day.weekday();
        let mut periods: Vec<&Period> = self.open.iter().filter(|p| p.on(weekday)).collect();
        periods.sort_by_key(|p| p.from);
        periods
            .into_iter()
            .filter_map(|p| {
                let start = self.resolve(day, p.from)?;
                let end = self.resolve(day, p.to)?;
                // Both inside the hour skipped by a clock change: never on the clock.
                (start < end).then_some((start, end))
            })
            .collect()
    }

    /// The first instant at which the local clock reads `minutes` past midnight of
    /// `day` or later: the instant itself, its first occurrence when the clocks go
    /// back, and the moment of the jump when the clocks skip it.
    fn resolve(&self, day: Date, minutes: u16) -> Option<Timestamp> {
        let wall = if minutes >= DAY_MINUTES {
            day.tomorrow().ok()?.at(0, 0, 0, 0)
        } else {
            day.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0)
        };
        first_instant_at_or_after(&self.zone, wall)
    }
}

/// See [`Schedule::resolve`].
fn first_instant_at_or_after(zone: &TimeZone, wall: DateTime) -> Option<Timestamp> {
    let ambiguous = zone.to_ambiguous_timestamp(wall);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
            ambiguous.earlier().ok()
        }
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the offset after the jump, `wall` is an instant just before
            // the jump; the jump is the first transition after that.
            let before_jump = after.to_timestamp(wall).ok()?;
            zone.following(before_jump)
                .next()
                .map(|jump| jump.timestamp())
                .or_else(|| ambiguous.later().ok())
        }
    }
}

fn days_from(first: Date) -> impl Iterator<Item = Date> {
    std::iter::successors(Some(first), |d| d.tomorrow().ok())
}

/// The zone called `name` in the system's tz database.
fn zone_named(name: &str) -> Result<TimeZone, ScheduleError> {
    if name.is_empty() {
        return Err(refuse(
            "timezone",
            "empty; name the room's time zone, such as \"America/Bogota\"",
        ));
    }
    TimeZone::get(name).map_err(|_| {
        refuse(
            "timezone",
            format!(
                "unknown time zone {name:?}: use a name from the tz database such as \
                 \"America/Bogota\" or \"Europe/Madrid\" (the system's tzdata, /usr/share/zoneinfo)"
            ),
        )
    })
}

fn period(i: usize, value: &Value) -> Result<Period, ScheduleError> {
    let field = |key: &str| format!("open[{i}].{key}");
    let object = value.as_object().ok_or_else(|| {
        refuse(
            format!("open[{i}]"),
            "must be an object with days, from and to",
        )
    })?;
    if let Some(unknown) = object.keys().find(|k| !PERIOD_KEYS.contains(&k.as_str())) {
        return Err(refuse(
            field(unknown),
            "unknown key; a period has days, from and to",
        ));
    }
    let days = match object.get("days") {
        Some(Value::Array(names)) if !names.is_empty() => {
            let mut days = 0u8;
            for (d, name) in names.iter().enumerate() {
                let found = name
                    .as_str()
                    .map(|n| n.trim().to_ascii_lowercase())
                    .and_then(|n| DAYS.iter().position(|(day, _)| *day == n));
                match found {
                    Some(bit) => days |= 1 << bit,
                    None => {
                        return Err(refuse(
                            format!("open[{i}].days[{d}]"),
                            format!("unknown day {name}: use mon, tue, wed, thu, fri, sat or sun"),
                        ))
                    }
                }
            }
            days
        }
        Some(Value::Array(_)) => {
            return Err(refuse(
                field("days"),
                "empty; list at least one day, e.g. [\"mon\", \"tue\"]",
            ))
        }
        Some(_) => {
            return Err(refuse(
                field("days"),
                "must be a list of days, e.g. [\"mon\", \"tue\"]",
            ))
        }
        None => return Err(refuse(field("days"), "missing")),
    };
    let from = wall_time(&field("from"), object.get("from"), false)?;
    let to = wall_time(&field("to"), object.get("to"), true)?;
    if from >= to {
        return Err(refuse(
            field("to"),
            format!(
                "{} is not after from ({}); for hours past midnight, end this period at \
                 \"24:00\" and add one from \"00:00\" on the next day",
                hh_mm(to),
                hh_mm(from)
            ),
        ));
    }
    Ok(Period { days, from, to })
}

/// `HH:MM` (or `HH:MM:00`, as TOML writes a bare time) in minutes of the day;
/// `24:00` only as an end.
fn wall_time(field: &str, value: Option<&Value>, end: bool) -> Result<u16, ScheduleError> {
    let example = if end { "\"16:30\"" } else { "\"07:30\"" };
    let text = match value.map(toml_datetime) {
        Some(Value::String(text)) => text.trim(),
        Some(_) => return Err(refuse(field, format!("must be a time such as {example}"))),
        None => return Err(refuse(field, format!("missing; a time such as {example}"))),
    };
    let parsed = (|| {
        let mut parts = text.split(':');
        let (h, m) = (parts.next()?, parts.next()?);
        if let Some(s) = parts.next() {
            if s != "00" || parts.next().is_some() {
                return None;
            }
        }
        let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
            n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(h, 1..=2) || !digits(m, 2..=2) {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    })();
    match parsed {
        Some(DAY_MINUTES) if !end => Err(refuse(
            field,
            "24:00 can only end a period; a day starts at \"00:00\"",
        )),
        Some(minutes) => Ok(minutes),
        None => Err(refuse(
            field,
            format!("{text:?} is not a time: use HH:MM on a 24-hour clock, such as {example}"),
        )),
    }
}

fn date(i: usize, value: &Value) -> Result<Date, ScheduleError> {
    let field = format!("closed_dates[{i}]");
    let Value::String(text) = toml_datetime(value) else {
        return Err(refuse(field, "must be a date such as \"2026-12-25\""));
    };
    let text = text.trim();
    let well_formed = text.len() == 10
        && text.bytes().enumerate().all(|(n, b)| {
            if n == 4 || n == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    // By hand rather than jiff's ISO 8601 parser, which would cost the Pi's binary
    // far more than these few lines.
    let number =
        |range: std::ops::Range<usize>| text.get(range).and_then(|n| n.parse::<i16>().ok());
    let day = |range| number(range).and_then(|n| i8::try_from(n).ok());
    let parsed = match (number(0..4), day(5..7), day(8..10)) {
        (Some(y), Some(m), Some(d)) if well_formed => Date::new(y, m, d).ok(),
        _ => None,
    };
    match parsed {
        Some(date) => Ok(date),
        None => Err(refuse(
            field,
            format!("{text:?} is not a date: use YYYY-MM-DD, such as \"2026-12-25\""),
        )),
    }
}

/// A bare TOML date or time arrives as a one-key table; this unwraps it to its text.
fn toml_datetime(value: &Value) -> &Value {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(TOML_DATETIME_KEY).unwrap_or(value),
        _ => value,
    }
}

fn hh_mm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// TOML (`[schedule]` with `timezone`, `open = [...]`, `closed_dates = [...]`) and
/// any other serde format: the same checks, the refusal's text naming the field.
impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Schedule, D::Error> {
        let value = Value::deserialize(d)?;
        Schedule::from_value(&value).map_err(|e| de::Error::custom(format_args!("schedule.{e}")))
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Days(u8);
        impl Serialize for Days {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(
                    DAYS.iter()
                        .enumerate()
                        .filter(|(bit, _)| self.0 & (1 << bit) != 0)
                        .map(|(_, (name, _))| name),
                )
            }
        }
        struct Open<'a>(&'a Period);
        impl Serialize for Open<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("days", &Days(self.0.days))?;
                map.serialize_entry("from", &hh_mm(self.0.from))?;
                map.serialize_entry("to", &hh_mm(self.0.to))?;
                map.end()
            }
        }
        let mut out = s.serialize_struct("Schedule", 3)?;
        out.serialize_field("timezone", &self.timezone)?;
        out.serialize_field("open", &self.open.iter().map(Open).collect::<Vec<_>>())?;
        out.serialize_field(
            "closed_dates",
            &self
                .closed_dates
                .iter()
                .map(|d| format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
                .collect::<Vec<_>>(),
        )?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEKDAYS: &str = r#"["mon","tue","wed","thu","fri"]"#;

    fn schedule(zone: &str, open: &str, closed: &str) -> Schedule {
        Schedule::from_json(&format!(
            r#"{{"timezone":"{zone}","open":{open},"closed_dates":{closed}}}"#
        ))
        .unwrap()
    }

    /// An instant given as local wall time with its offset, e.g. "2026-03-08T07:30-04:00".
    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn field_of(json: &str) -> String {
        Schedule::from_json(json).unwrap_err().field
    }

    #[test]
    fn reads_json_and_toml_alike_and_writes_back_what_it_read() {
        let json = Schedule::from_json(
            r#"{"timezone": "America/Bogota", "open": [{"days": ["mon","tue","wed","thu","fri"],
                "from": "07:30", "to": "16:30"}], "closed_dates": ["2026-12-25"]}"#,
        )
        .unwrap();
        #[derive(Deserialize)]
        struct File {
            schedule: Schedule,
        }
        let toml: File = toml::from_str(
            r#"
[schedule]
timezone = "America/Bogota"
open = [{days = ["mon", "tue", "wed", "thu", "fri"], from = "07:30", to = "16:30"}]
closed_dates = ["2026-12-25"]
"#,
        )
        .unwrap();
        assert_eq!(json, toml.schedule);
        // Bare TOML dates and times are read too.
        let bare: File = toml::from_str(
            r#"
[schedule]
timezone = "America/Bogota"
open = [{days = ["mon", "tue", "wed", "thu", "fri"], from = 07:30:00, to = 16:30:00}]
closed_dates = [2026-12-25]
"#,
        )
        .unwrap();
        assert_eq!(json, bare.schedule);
        let written = serde_json::to_value(&json).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"timezone": "America/Bogota", "open": [{"days": ["mon","tue","wed","thu","fri"],
                "from": "07:30", "to": "16:30"}], "closed_dates": ["2026-12-25"]})
        );
        assert_eq!(Schedule::from_value(&written).unwrap(), json);
        // Days in week order, dates sorted and once, "24:00" kept.
        let messy = schedule(
            "Europe/Madrid",
            r#"[{"days":["SUN","mon","mon"],"from":"7:30","to":"24:00"}]"#,
            r#"["2026-12-25","2026-01-01","2026-12-25"]"#,
        );
        assert_eq!(
            serde_json::to_value(&messy).unwrap(),
            serde_json::json!({"timezone": "Europe/Madrid", "open": [{"days": ["mon","sun"],
                "from": "07:30", "to": "24:00"}], "closed_dates": ["2026-01-01", "2026-12-25"]})
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let ok = r#"{"days":["mon"],"from":"07:30","to":"16:30"}"#;
        let with = |open: &str| format!(r#"{{"timezone":"America/Bogota","open":[{ok},{open}]}}"#);
        let err = Schedule::from_json(r#"{"timezone":"Mars/Olympus","open":[]}"#).unwrap_err();
        assert_eq!(err.field, "timezone");
        assert!(err.reason.contains("Mars/Olympus"), "{err}");
        assert_eq!(field_of(r#"{"open":[]}"#), "timezone");
        assert_eq!(field_of(r#"{"timezone":"","open":[]}"#), "timezone");
        assert_eq!(field_of(r#"{"timezone":5,"open":[]}"#), "timezone");
        assert_eq!(field_of(r#"{"timezone":"America/Bogota"}"#), "open");
        assert_eq!(
            field_of(&with(
                r#"{"days":["mon","funday"],"from":"07:30","to":"16:30"}"#
            )),
            "open[1].days[1]"
        );
        assert_eq!(
            field_of(&with(r#"{"days":[],"from":"07:30","to":"16:30"}"#)),
            "open[1].days"
        );
        for bad in [
            "7h30", "25:00", "07:60", "07:3", "24:00", "", "07:30:15", "-1:00",
        ] {
            let json = with(&format!(
                r#"{{"days":["mon"],"from":"{bad}","to":"16:30"}}"#
            ));
            assert_eq!(field_of(&json), "open[1].from", "{bad:?}");
        }
        assert_eq!(
            field_of(&with(r#"{"days":["mon"],"from":"07:30","to":"24:01"}"#)),
            "open[1].to"
        );
        assert_eq!(
            field_of(&with(r#"{"days":["mon"],"from":"07:30"}"#)),
            "open[1].to"
        );
        assert_eq!(
            field_of(&with(
                r#"{"days":["mon"],"from":"07:30","to":"16:30","form":1}"#
            )),
            "open[1].form"
        );
        // `from` not before `to`, including a night shift written as one period.
        let err = Schedule::from_json(&with(r#"{"days":["fri"],"from":"22:00","to":"06:00"}"#))
            .unwrap_err();
        assert_eq!(err.field, "open[1].to");
        assert!(err.reason.contains("24:00"), "says how: {err}");
        assert_eq!(
            field_of(&with(r#"{"days":["fri"],"from":"09:00","to":"09:00"}"#)),
            "open[1].to"
        );
        assert_eq!(
            field_of(r#"{"timezone":"UTC","open":[],"closed_dates":["2026-02-30"]}"#),
            "closed_dates[0]"
        );
        assert_eq!(
            field_of(r#"{"timezone":"UTC","open":[],"closed_dates":["2026-12-25","25/12/2026"]}"#),
            "closed_dates[1]"
        );
        assert_eq!(
            field_of(r#"{"timezone":"UTC","open":[],"holidays":[]}"#),
            "holidays"
        );
        assert_eq!(field_of("[]"), "schedule");
        assert_eq!(field_of("not json"), "schedule");
        // Limits.
        let many = vec![ok; MAX_PERIODS + 1].join(",");
        let err =
            Schedule::from_json(&format!(r#"{{"timezone":"UTC","open":[{many}]}}"#)).unwrap_err();
        assert_eq!(err.field, "open");
        let most = vec![ok; MAX_PERIODS].join(",");
        assert!(Schedule::from_json(&format!(r#"{{"timezone":"UTC","open":[{most}]}}"#)).is_ok());
        let dates = vec![r#""2026-12-25""#; MAX_CLOSED_DATES + 1].join(",");
        assert_eq!(
            field_of(&format!(
                r#"{{"timezone":"UTC","open":[],"closed_dates":[{dates}]}}"#
            )),
            "closed_dates"
        );
        // The reason reads well in a 400 answer.
        let err =
            Schedule::from_json(&with(r#"{"days":["mon"],"from":"9","to":"16:30"}"#)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("open[1].from: \"9\" is not a time"),
            "{err}"
        );
    }

    #[test]
    fn toml_refusals_name_the_field_too() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            schedule: Schedule,
        }
        let err = toml::from_str::<File>(
            "[schedule]\ntimezone = \"America/Bogota\"\nopen = [{days = [\"mon\"], from = \"16:30\", to = \"07:30\"}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("schedule.open[0].to"), "{err}");
    }

    #[test]
    fn open_within_hours_closed_outside_with_the_next_change() {
        let s = schedule(
            "America/Bogota",
            &format!(r#"[{{"days":{WEEKDAYS},"from":"07:30","to":"16:30"}}]"#),
            "[]",
        );
        // Wednesday 2026-03-04, Bogotá is UTC-5 all year.
        assert_eq!(
            s.at(at("2026-03-04T10:00-05:00")),
            Now::Open {
                closes_at: Some(at("2026-03-04T16:30-05:00"))
            }
        );
        assert_eq!(
            s.at(at("2026-03-04T06:00-05:00")),
            Now::Closed {
                opens_at: Some(at("2026-03-04T07:30-05:00"))
            }
        );
        // `from` is in, `to` is out.
        assert!(s.at(at("2026-03-04T07:30-05:00")).is_open());
        assert_eq!(
            s.at(at("2026-03-04T16:30-05:00")),
            Now::Closed {
                opens_at: Some(at("2026-03-05T07:30-05:00"))
            }
        );
    }

    #[test]
    fn the_next_opening_skips_the_weekend_and_a_holiday() {
        // Monday 2026-10-12 is a holiday in Colombia.
        let s = schedule(
            "America/Bogota",
            &format!(r#"[{{"days":{WEEKDAYS},"from":"07:30","to":"16:30"}}]"#),
            r#"["2026-10-12"]"#,
        );
        let friday_evening = at("2026-10-09T17:00-05:00");
        assert_eq!(
            s.at(friday_evening),
            Now::Closed {
                opens_at: Some(at("2026-10-13T07:30-05:00"))
            }
        );
        // The holiday is closed all day, even within the hours.
        assert_eq!(
            s.at(at("2026-10-12T10:00-05:00")),
            Now::Closed {
                opens_at: Some(at("2026-10-13T07:30-05:00"))
            }
        );
        // A closed date in the zone's calendar, not UTC's: 2026-10-12 at 20:00 in
        // Bogotá is already the 13th in UTC.
        let late = schedule(
            "America/Bogota",
            r#"[{"days":["mon","tue"],"from":"19:00","to":"21:00"}]"#,
            r#"["2026-10-12"]"#,
        );
        assert!(!late.at(at("2026-10-12T20:00-05:00")).is_open());
        assert!(late.at(at("2026-10-13T20:00-05:00")).is_open());
    }

    #[test]
    fn a_night_shift_crosses_midnight_without_closing_at_it() {
        let s = schedule(
            "Europe/Madrid",
            r#"[{"days":["fri"],"from":"22:00","to":"24:00"},{"days":["sat"],"from":"00:00","to":"06:00"}]"#,
            "[]",
        );
        // Friday 2026-06-05, Madrid is UTC+2 in summer.
        assert_eq!(
            s.at(at("2026-06-05T23:00+02:00")),
            Now::Open {
                closes_at: Some(at("2026-06-06T06:00+02:00"))
            },
            "open until Saturday 06:00, not until midnight"
        );
        assert_eq!(
            s.at(at("2026-06-06T03:00+02:00")),
            Now::Open {
                closes_at: Some(at("2026-06-06T06:00+02:00"))
            }
        );
        assert_eq!(
            s.at(at("2026-06-06T06:00+02:00")),
            Now::Closed {
                opens_at: Some(at("2026-06-12T22:00+02:00"))
            }
        );
        assert_eq!(
            s.at(at("2026-06-05T21:00+02:00")),
            Now::Closed {
                opens_at: Some(at("2026-06-05T22:00+02:00"))
            }
        );
        // A holiday on the Saturday closes its part of the shift: it ends at midnight.
        let holiday = schedule(
            "Europe/Madrid",
            r#"[{"days":["fri"],"from":"22:00","to":"24:00"},{"days":["sat"],"from":"00:00","to":"06:00"}]"#,
            r#"["2026-06-06"]"#,
        );
        assert_eq!(
            holiday.at(at("2026-06-05T23:00+02:00")),
            Now::Open {
                closes_at: Some(at("2026-06-06T00:00+02:00"))
            }
        );
        // Overlapping periods count as one.
        let overlap = schedule(
            "UTC",
            r#"[{"days":["mon"],"from":"08:00","to":"12:00"},{"days":["mon"],"from":"11:00","to":"14:00"}]"#,
            "[]",
        );
        assert_eq!(
            overlap.at(at("2026-06-01T09:00Z")),
            Now::Open {
                closes_at: Some(at("2026-06-01T14:00Z"))
            }
        );
    }

    #[test]
    fn opening_at_0730_follows_the_clock_across_daylight_saving() {
        let s = schedule(
            "America/New_York",
            r#"[{"days":["mon","tue","wed","thu","fri","sat","sun"],"from":"07:30","to":"16:30"}]"#,
            "[]",
        );
        // Spring forward: Sunday 2026-03-08 at 02:00 EST the clocks go to 03:00 EDT.
        assert_eq!(
            s.at(at("2026-03-07T06:00-05:00")),
            Now::Closed {
                opens_at: Some(at("2026-03-07T12:30Z"))
            }
        );
        let saturday_night = s.at(at("2026-03-07T20:00-05:00"));
        assert_eq!(
            saturday_night,
            Now::Closed {
                opens_at: Some(at("2026-03-08T11:30Z"))
            },
            "07:30 EDT, an hour earlier in UTC than the day before"
        );
        // The night is an hour shorter: closed 14 hours, not 15.
        let closed_at = at("2026-03-07T16:30-05:00");
        assert_eq!(
            saturday_night.changes_at().unwrap().as_second() - closed_at.as_second(),
            14 * 3600
        );
        // Fall back: Sunday 2026-11-01 at 02:00 EDT the clocks go back to 01:00 EST.
        assert_eq!(
            s.at(at("2026-10-31T20:00-04:00")),
            Now::Closed {
                opens_at: Some(at("2026-11-01T12:30Z"))
            }
        );
        assert_eq!(
            s.at(at("2026-11-01T12:00Z")),
            Now::Closed {
                opens_at: Some(at("2026-11-01T12:30Z"))
            },
            "07:00 EST is still before 07:30"
        );
        let madrid = schedule(
            "Europe/Madrid",
            r#"[{"days":["sun"],"from":"07:30","to":"16:30"}]"#,
            "[]",
        );
        // Madrid: 2026-03-29 forward to CEST (+2), 2026-10-25 back to CET (+1).
        assert_eq!(
            madrid.at(at("2026-03-28T12:00Z")).changes_at(),
            Some(at("2026-03-29T05:30Z"))
        );
        assert_eq!(
            madrid.at(at("2026-10-24T12:00Z")).changes_at(),
            Some(at("2026-10-25T06:30Z"))
        );
    }

    #[test]
    fn a_skipped_hour_starts_at_the_jump_and_a_repeated_hour_counts_once() {
        // New York, 2026-03-08: 02:00-02:59 does not exist.
        let spring = schedule(
            "America/New_York",
            r#"[{"days":["sun"],"from":"02:30","to":"04:00"},{"days":["sun"],"from":"02:10","to":"02:40"}]"#,
            "[]",
        );
        assert_eq!(
            spring.at(at("2026-03-08T01:59-05:00")),
            Now::Closed {
                // The jump: 03:00 EDT, 07:00 UTC.
                opens_at: Some(at("2026-03-08T03:00-04:00"))
            }
        );
        assert_eq!(
            spring.at(at("2026-03-08T03:10-04:00")),
            Now::Open {
                closes_at: Some(at("2026-03-08T04:00-04:00"))
            }
        );
        // Madrid, 2026-10-25: 02:00-02:59 happens twice (CEST, then CET).
        let autumn = schedule(
            "Europe/Madrid",
            r#"[{"days":["sun"],"from":"02:30","to":"03:30"}]"#,
            "[]",
        );
        assert_eq!(
            autumn.at(at("2026-10-25T00:00Z")),
            Now::Closed {
                // The first 02:30, in summer time.
                opens_at: Some(at("2026-10-25T02:30+02:00"))
            }
        );
        assert_eq!(
            autumn.at(at("2026-10-25T02:45+02:00")),
            Now::Open {
                // 03:30 comes once, in winter time: two hours after the opening.
                closes_at: Some(at("2026-10-25T03:30+01:00"))
            }
        );
    }

    #[test]
    fn never_open_and_always_open_are_bounded_answers() {
        let never = schedule("UTC", "[]", "[]");
        assert_eq!(
            never.at(at("2026-06-01T09:00Z")),
            Now::Closed { opens_at: None }
        );
        let always = schedule(
            "UTC",
            r#"[{"days":["mon","tue","wed","thu","fri","sat","sun"],"from":"00:00","to":"24:00"}]"#,
            "[]",
        );
        assert_eq!(
            always.at(at("2026-06-01T09:00Z")),
            Now::Open { closes_at: None }
        );
        // Always open but for one day next year: that closing is found.
        let christmas = schedule(
            "UTC",
            r#"[{"days":["mon","tue","wed","thu","fri","sat","sun"],"from":"00:00","to":"24:00"}]"#,
            r#"["2026-12-25"]"#,
        );
        assert_eq!(
            christmas.at(at("2026-06-01T09:00Z")),
            Now::Open {
                closes_at: Some(at("2026-12-25T00:00Z"))
            }
        );
    }
}
