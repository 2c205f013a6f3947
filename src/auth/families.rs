//! Families: one login per family, scoped to its rooms, revocable at once.
//!
//! This is the in-memory registry that logins and handshakes ask (by the SHA-256
//! of a presented code, so a lookup costs the same with 2 families or 200, and no
//! code is kept in plain text). The database holds the same records; the admin API
//! writes there first and applies the change here only once it is committed, so a
//! failed write changes nothing.
//!
//! Each family carries the signals that close its sockets: one that fires when the
//! family is revoked or its code rotated (for HTTP Basic clients; sessions are ended
//! through the session store), and one per room that fires when the room is taken
//! from the family. Each also counts the devices watching now, against
//! `max_devices`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::auth::name::clean_text;
use crate::hub::valid_stream_name;
use crate::sync::Locked;

pub const MAX_FAMILY_NAME_CHARS: usize = 64;
pub const DEFAULT_MAX_DEVICES: u32 = 3;
pub const MAX_DEVICES: u32 = 20;
/// Rooms one family may have; a centre has a handful.
pub const MAX_ROOMS: usize = 32;
/// Families one daemon keeps; a large centre has a few hundred.
pub const MAX_FAMILIES: usize = 2000;

/// One family as the registry, the database and the admin API know it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Family {
    pub id: String,
    pub name: String,
    pub rooms: Vec<String>,
    pub max_devices: u32,
    /// UNIX seconds.
    pub created: i64,
    /// UNIX seconds of the last login or watch; `None` before the first.
    pub last_seen: Option<i64>,
    /// SHA-256 of the family's code; never shown.
    #[serde(skip)]
    pub code_hash: [u8; 32],
}

impl Family {
    pub fn may_enter(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
    }
}

/// The SHA-256 a family's code is kept and looked up by. Family codes are
/// generated with ~59 bits of randomness, so a fast hash is enough: there is no
/// dictionary to try, and a slow one would make every login cost 200 checks.
pub fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.trim().as_bytes()).into()
}

/// A bad field in an admin request: 400 naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub why: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, why: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            why: why.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

/// What an admin request sets on a family; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyChange {
    pub name: Option<String>,
    pub rooms: Option<Vec<String>>,
    pub max_devices: Option<u32>,
}

impl FamilyChange {
    /// Reads and checks a JSON body. `creating` requires a name and fills in the
    /// defaults (the `camera` room, three devices).
    pub fn from_json(body: &str, creating: bool) -> Result<FamilyChange, FieldError> {
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| FieldError::new("body", format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| FieldError::new("body", "must be a JSON object"))?;
        if let Some(unknown) = object
            .keys()
            .find(|k| !["name", "rooms", "max_devices"].contains(&k.as_str()))
        {
            return Err(FieldError::new(
                unknown.clone(),
                "unknown field (use name, rooms, max_devices)",
            ));
        }
        let mut change = FamilyChange::default();
        if let Some(name) = object.get("name") {
            let name = name
                .as_str()
                .ok_or_else(|| FieldError::new("name", "must be a string"))?;
            let name = clean_text(name, false);
            let chars = name.chars().count();
            if chars == 0 || chars > MAX_FAMILY_NAME_CHARS {
                return Err(FieldError::new(
                    "name",
                    format!("must be 1-{MAX_FAMILY_NAME_CHARS} characters"),
                ));
            }
            change.name = Some(name);
        } else if creating {
            return Err(FieldError::new("name", "is required"));
        }
        if let Some(rooms) = object.get("rooms") {
            change.rooms = Some(rooms_from_json(rooms)?);
        } else if creating {
            change.rooms = Some(vec![crate::hub::CAMERA.to_owned()]);
        }
        if let Some(max) = object.get("max_devices") {
            let max = max
                .as_u64()
                .filter(|n| (1..=u64::from(MAX_DEVICES)).contains(n))
                .ok_or_else(|| {
                    FieldError::new(
                        "max_devices",
                        format!("must be a whole number 1-{MAX_DEVICES}"),
                    )
                })?;
            change.max_devices = Some(max as u32);
        } else if creating {
            change.max_devices = Some(DEFAULT_MAX_DEVICES);
        }
        Ok(change)
    }

    /// `family` with this change applied.
    pub fn apply_to(&self, family: &Family) -> Family {
        Family {
            name: self.name.clone().unwrap_or_else(|| family.name.clone()),
            rooms: self.rooms.clone().unwrap_or_else(|| family.rooms.clone()),
            max_devices: self.max_devices.unwrap_or(family.max_devices),
            ..family.clone()
        }
    }
}

/// A family and the signals its sockets watch.
#[derive(Debug)]
struct Entry {
    family: Arc<Family>,
    /// Fired (and replaced) when the family is revoked or its code rotated.
    ended: watch::Sender<bool>,
    /// Per room: fired when the room is taken from the family, or the family revoked.
    rooms: HashMap<String, watch::Sender<bool>>,
    /// Devices watching now: device key → sockets it has open.
    devices: HashMap<u64, usize>,
}

impl Entry {
    fn new(family: Family) -> Entry {
        Entry {
            rooms: family
                .rooms
                .iter()
                .map(|r| (r.clone(), watch::Sender::new(false)))
                .collect(),
            family: Arc::new(family),
            ended: watch::Sender::new(false),
            devices: HashMap::new(),
        }
    }

    fn end_all(&self) {
        self.ended.send_replace(true);
        for room in self.rooms.values() {
            room.send_replace(true);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    by_id: HashMap<String, Entry>,
    by_code: HashMap<[u8; 32], String>,
}

/// Every family, shared by logins, handshakes and the admin API.
#[derive(Debug, Clone, Default)]
pub struct Families {
    state: Arc<Mutex<State>>,
}

/// Why a device may not watch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRefusal {
    /// The family is gone (revoked while the request was under way).
    Gone,
    /// `max_devices` devices of the family watch already.
    Limit(u32),
}

impl Families {
    pub fn new(families: impl IntoIterator<Item = Family>) -> Families {
        let registry = Families::default();
        for family in families {
            registry.insert(family);
        }
        registry
    }

    pub fn len(&self) -> usize {
        self.state.locked().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The family whose code this is.
    pub fn by_code(&self, code: &str) -> Option<Arc<Family>> {
        let hash = code_hash(code);
        let state = self.state.locked();
        let id = state.by_code.get(&hash)?;
        state.by_id.get(id).map(|e| e.family.clone())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Family>> {
        self.state.locked().by_id.get(id).map(|e| e.family.clone())
    }

    /// Every family, oldest first, with the number of devices watching now.
    pub fn list(&self) -> Vec<(Arc<Family>, usize)> {
        let state = self.state.locked();
        let mut all: Vec<_> = state
            .by_id
            .values()
            .map(|e| (e.family.clone(), e.devices.len()))
            .collect();
        all.sort_by(|a, b| (a.0.created, &a.0.id).cmp(&(b.0.created, &b.0.id)));
        all
    }

    /// Whether another family already uses this code hash.
    pub fn code_taken(&self, hash: &[u8; 32]) -> bool {
        self.state.locked().by_code.contains_key(hash)
    }

    pub fn insert(&self, family: Family) {
        let mut state = self.state.locked();
        state.by_code.insert(family.code_hash, family.id.clone());
        if let Some(old) = state.by_id.insert(family.id.clone(), Entry::new(family)) {
            old.end_all();
        }
    }

    /// Replaces a family's record after an edit: rooms it lost close their sockets.
    /// Returns false for an unknown id.
    pub fn update(&self, family: Family) -> bool {
        let mut state = self.state.locked();
        let Some(entry) = state.by_id.get_mut(&family.id) else {
            return false;
        };
        entry.rooms.retain(|room, signal| {
            let kept = family.may_enter(room);
            if !kept {
                signal.send_replace(true);
            }
            kept
        });
        for room in &family.rooms {
            entry
                .rooms
                .entry(room.clone())
                .or_insert_with(|| watch::Sender::new(false));
        }
        entry.family = Arc::new(family);
        true
    }

    /// A new code for the family: the old one stops working and every socket
    /// opened with it closes. Returns false for an unknown id.
    pub fn rotate_code(&self, id: &str, hash: [u8; 32]) -> bool {
        let mut state = self.state.locked();
        let Some(entry) = state.by_id.get_mut(id) else {
            return false;
        };
        let old_hash = entry.family.code_hash;
        entry.family = Arc::new(Family {
            code_hash: hash,
            ..(*entry.family).clone()
        });
        entry.end_all();
        // Fresh signals: sockets opened with the new code must not see the old end.
        entry.ended = watch::Sender::new(false);
        for room in entry.rooms.values_mut() {
            *room = watch::Sender::new(false);
        }
        state.by_code.remove(&old_hash);
        state.by_code.insert(hash, id.to_owned());
        true
    }

    /// Revokes a family: its code stops working and every socket of it closes.
    pub fn remove(&self, id: &str) -> bool {
        let mut state = self.state.locked();
        let Some(entry) = state.by_id.remove(id) else {
            return false;
        };
        state.by_code.remove(&entry.family.code_hash);
        entry.end_all();
        true
    }

    /// Fires when the family is revoked or its code rotated.
    pub fn ended(&self, id: &str) -> Option<watch::Receiver<bool>> {
        self.state
            .locked()
            .by_id
            .get(id)
            .map(|e| e.ended.subscribe())
    }

    /// Fires when `room` is taken from the family, or the family is revoked;
    /// `None` when the family may not enter it now.
    pub fn room_access(&self, id: &str, room: &str) -> Option<watch::Receiver<bool>> {
        self.state
            .locked()
            .by_id
            .get(id)?
            .rooms
            .get(room)
            .map(|s| s.subscribe())
    }

    /// Counts `device` as watching until the guard is dropped. A device already
    /// watching (a second tab) takes no second place.
    pub fn claim_device(&self, id: &str, device: u64) -> Result<DeviceGuard, DeviceRefusal> {
        let mut state = self.state.locked();
        let entry = state.by_id.get_mut(id).ok_or(DeviceRefusal::Gone)?;
        let limit = entry.family.max_devices;
        if !entry.devices.contains_key(&device) && entry.devices.len() >= limit as usize {
            return Err(DeviceRefusal::Limit(limit));
        }
        *entry.devices.entry(device).or_insert(0) += 1;
        Ok(DeviceGuard {
            families: self.clone(),
            id: id.to_owned(),
            device,
        })
    }

    /// Records that the family was seen now (a login or a watch).
    pub fn touch(&self, id: &str, now: i64) {
        if let Some(entry) = self.state.locked().by_id.get_mut(id) {
            entry.family = Arc::new(Family {
                last_seen: Some(now),
                ..(*entry.family).clone()
            });
        }
    }
}

/// One device's place among its family's watching devices.
#[derive(Debug)]
pub struct DeviceGuard {
    families: Families,
    id: String,
    device: u64,
}

impl Drop for DeviceGuard {
    fn drop(&mut self) {
        let mut state = self.families.state.locked();
        let Some(entry) = state.by_id.get_mut(&self.id) else {
            return;
        };
        if let Some(n) = entry.devices.get_mut(&self.device) {
            *n -= 1;
            if *n == 0 {
                entry.devices.remove(&self.device);
            }
        }
    }
}

/// Characters of family ids: lower case and digits without look-alikes (0/o, 1/l/i).
pub(crate) const ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

impl Family {
    /// A fresh random id: `f` and 10 characters (about 50 bits), e.g. `fk3x9mq2hw7`.
    pub fn new_id() -> anyhow::Result<String> {
        random_id('f')
    }
}

/// A fresh random id: `prefix` and 10 characters of [`ID_ALPHABET`] (about 50
/// bits); families' and link tokens' ids.
pub(crate) fn random_id(prefix: char) -> anyhow::Result<String> {
    let mut id = String::from(prefix);
    let len = prefix.len_utf8() + 10;
    while id.len() < len {
        for byte in crate::auth::codes::random_bytes::<16>()? {
            // 248 = 8 * 31: rejecting the rest keeps every character equally likely.
            if byte < 248 && id.len() < len {
                id.push(char::from(
                    ID_ALPHABET[usize::from(byte) % ID_ALPHABET.len()],
                ));
            }
        }
    }
    Ok(id)
}

/// A `rooms` field: stream names, each once, at most [`MAX_ROOMS`]; a bad one
/// is named by its index. Families and link tokens are scoped the same way.
pub(crate) fn rooms_from_json(rooms: &serde_json::Value) -> Result<Vec<String>, FieldError> {
    let list = rooms
        .as_array()
        .ok_or_else(|| FieldError::new("rooms", "must be an array of stream names"))?;
    if list.len() > MAX_ROOMS {
        return Err(FieldError::new(
            "rooms",
            format!("at most {MAX_ROOMS} rooms"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, room) in list.iter().enumerate() {
        let room = room
            .as_str()
            .filter(|r| valid_stream_name(r))
            .ok_or_else(|| {
                FieldError::new(
                    format!("rooms[{i}]"),
                    "not a valid stream name (1-32 characters of a-z, 0-9, _ and -)",
                )
            })?;
        if !out.iter().any(|r| r == room) {
            out.push(room.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(id: &str, code: &str, rooms: &[&str], max: u32) -> Family {
        Family {
            id: id.into(),
            name: format!("Familia {id}"),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            max_devices: max,
            created: 1,
            last_seen: None,
            code_hash: code_hash(code),
        }
    }

    #[test]
    fn a_code_finds_its_family_and_only_while_it_is_in_force() {
        let f = Families::new([family("f1", "perez-code-1", &["camera"], 3)]);
        assert_eq!(
            f.by_code(" perez-code-1 ").unwrap().id,
            "f1",
            "pasted with spaces"
        );
        assert!(f.by_code("perez-code-2").is_none());
        let ended = f.ended("f1").unwrap();
        assert!(f.rotate_code("f1", code_hash("perez-code-2")));
        assert!(*ended.borrow(), "sockets of the old code close");
        assert!(
            f.by_code("perez-code-1").is_none(),
            "the old code stops at once"
        );
        assert_eq!(f.by_code("perez-code-2").unwrap().id, "f1");
        assert!(
            !*f.ended("f1").unwrap().borrow(),
            "the new code's sockets are not ended"
        );
        assert!(f.remove("f1"));
        assert!(f.by_code("perez-code-2").is_none());
        assert!(!f.remove("f1"));
    }

    #[test]
    fn revoking_one_family_leaves_the_others_alone() {
        let f = Families::new([
            family("f1", "code-one-1", &["camera", "aula-2"], 3),
            family("f2", "code-two-2", &["camera"], 3),
        ]);
        let (one, one_room) = (
            f.ended("f1").unwrap(),
            f.room_access("f1", "aula-2").unwrap(),
        );
        let (two, two_room) = (
            f.ended("f2").unwrap(),
            f.room_access("f2", "camera").unwrap(),
        );
        f.remove("f1");
        assert!(*one.borrow() && *one_room.borrow());
        assert!(!*two.borrow() && !*two_room.borrow());
    }

    #[test]
    fn taking_a_room_closes_only_that_rooms_sockets() {
        let f = Families::new([family("f1", "code-one-1", &["camera", "aula-2"], 3)]);
        let camera = f.room_access("f1", "camera").unwrap();
        let aula = f.room_access("f1", "aula-2").unwrap();
        assert!(f.room_access("f1", "aula-3").is_none(), "not its room");
        let mut edited = (*f.get("f1").unwrap()).clone();
        edited.rooms = vec!["camera".into(), "aula-3".into()];
        assert!(f.update(edited));
        assert!(*aula.borrow(), "the removed room's sockets close");
        assert!(!*camera.borrow(), "the kept room's sockets stay");
        assert!(
            f.room_access("f1", "aula-3").is_some(),
            "the new room opens"
        );
        assert!(f.room_access("f1", "aula-2").is_none());
    }

    #[test]
    fn devices_are_counted_against_the_limit_and_freed_on_drop() {
        let f = Families::new([family("f1", "code-one-1", &["camera"], 2)]);
        let a = f.claim_device("f1", 1).unwrap();
        let a2 = f
            .claim_device("f1", 1)
            .expect("a second tab of the same device");
        let b = f.claim_device("f1", 2).unwrap();
        assert_eq!(
            f.claim_device("f1", 3).unwrap_err(),
            DeviceRefusal::Limit(2)
        );
        assert_eq!(f.list()[0].1, 2, "two devices watching");
        drop(a);
        assert!(
            f.claim_device("f1", 3).is_err(),
            "device 1 still has a tab open"
        );
        drop(a2);
        let c = f.claim_device("f1", 3).expect("a place came free");
        drop((b, c));
        assert_eq!(f.list()[0].1, 0);
        assert_eq!(f.claim_device("nope", 1).unwrap_err(), DeviceRefusal::Gone);
    }

    #[test]
    fn admin_input_is_checked_field_by_field() {
        let ok = FamilyChange::from_json(
            r#"{"name":" Familia Pérez ","rooms":["camera","aula-1","camera"]}"#,
            true,
        )
        .unwrap();
        assert_eq!(ok.name.as_deref(), Some("Familia Pérez"));
        assert_eq!(
            ok.rooms.unwrap(),
            ["camera", "aula-1"],
            "duplicates dropped"
        );
        assert_eq!(ok.max_devices, Some(DEFAULT_MAX_DEVICES));
        let defaults = FamilyChange::from_json(r#"{"name":"A"}"#, true).unwrap();
        assert_eq!(defaults.rooms.unwrap(), ["camera"]);
        let field =
            |body: &str, creating| FamilyChange::from_json(body, creating).unwrap_err().field;
        assert_eq!(field(r#"{"rooms":["camera"]}"#, true), "name");
        assert_eq!(field(r#"{"name":"  "}"#, true), "name");
        assert_eq!(
            field(&format!(r#"{{"name":"{}"}}"#, "x".repeat(65)), true),
            "name"
        );
        assert_eq!(
            field(r#"{"name":"A","rooms":["ok","Bad Room"]}"#, true),
            "rooms[1]"
        );
        assert_eq!(field(r#"{"name":"A","rooms":"camera"}"#, true), "rooms");
        assert_eq!(
            field(r#"{"name":"A","max_devices":0}"#, true),
            "max_devices"
        );
        assert_eq!(
            field(r#"{"name":"A","max_devices":21}"#, true),
            "max_devices"
        );
        assert_eq!(
            field(r#"{"name":"A","max_devices":2.5}"#, true),
            "max_devices"
        );
        assert_eq!(field(r#"{"name":"A","colour":1}"#, true), "colour");
        assert_eq!(field("[]", true), "body");
        assert_eq!(field("{", true), "body");
        let patch = FamilyChange::from_json(r#"{"max_devices":5}"#, false).unwrap();
        assert_eq!(
            patch,
            FamilyChange {
                max_devices: Some(5),
                ..Default::default()
            }
        );
        let before = family("f1", "c-1-c-1", &["camera"], 3);
        let after = patch.apply_to(&before);
        assert_eq!(
            (after.max_devices, after.name, after.rooms),
            (5, before.name, before.rooms)
        );
    }

    #[test]
    fn family_ids_are_short_random_and_unambiguous() {
        let a = Family::new_id().unwrap();
        let b = Family::new_id().unwrap();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 11, "{id}");
            assert!(id.starts_with('f'));
            assert!(id[1..].bytes().all(|c| ID_ALPHABET.contains(&c)), "{id}");
        }
    }
}
