//! Link tokens: one secret in one URL, for the clients that cannot log in.
//!
//! Browsers drop `user:code@` credentials from an `<img>` URL, and Home Assistant
//! or OctoPrint keep a single URL per camera, so the director makes a token for
//! each such client (`POST /api/tokens`) and pastes it into the URL
//! (`?token=...`) or sends it as `Authorization: Bearer ...`. A token has a name
//! (what the viewing log shows), its rooms and one scope:
//!
//! - `view`: watches its rooms as a family would (the gate holds it: opening
//!   hours, pauses), through video, snapshots and MJPEG, and nothing else;
//! - `metrics`: opens `/metrics` only;
//! - `push`: feeds its rooms over `/upload/NAME`, as staff would, and nothing else.
//!
//! Like family codes, a token is kept only as its SHA-256 (it has 256 random bits,
//! so there is nothing to guess and a slow hash would buy nothing), and is shown
//! once, when made. Each carries a signal that fires when it is revoked, which
//! every socket opened with it selects on, exactly as a family's does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::auth::families::FieldError;
use crate::auth::name::clean_text;
use crate::hub::CAMERA;
use crate::sync::Locked;

/// Tokens one daemon keeps: a handful of integrations; a bound keeps a script
/// gone wrong from filling the table.
pub const MAX_TOKENS: usize = 64;
pub const MAX_TOKEN_NAME_CHARS: usize = 64;
/// Rooms one token may have, as for a family.
pub const MAX_TOKEN_ROOMS: usize = crate::auth::families::MAX_ROOMS;
/// What every token starts with, so a leaked one is recognisable (secret scanners,
/// a log line) and never mistaken for an access code.
pub const TOKEN_PREFIX: &str = "kc_";
/// A token's last use is written to the database at most this often.
const LAST_USED_EVERY_S: i64 = 60;

/// What a token may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    View,
    Metrics,
    Push,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::View, Scope::Metrics, Scope::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::View => "view",
            Scope::Metrics => "metrics",
            Scope::Push => "push",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One token as the registry, the database and the admin API know it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkToken {
    pub id: String,
    pub name: String,
    /// Stream names; empty for a `metrics` token.
    pub rooms: Vec<String>,
    pub scope: Scope,
    /// UNIX seconds.
    pub created: i64,
    /// UNIX seconds of its last use (to the minute); `None` before the first.
    pub last_used: Option<i64>,
    /// SHA-256 of the token; never shown.
    #[serde(skip)]
    pub hash: [u8; 32],
}

impl LinkToken {
    pub fn opens(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
    }

    /// A fresh random id: `t` and 10 characters, e.g. `tk3x9mq2hw7`.
    pub fn new_id() -> anyhow::Result<String> {
        crate::auth::families::random_id('t')
    }
}

/// The SHA-256 a token is kept and looked up by.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A new token (`kc_` and 43 characters of base64url: 256 random bits) and its hash.
pub fn generate() -> anyhow::Result<(String, [u8; 32])> {
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(crate::auth::codes::random_bytes::<32>()?)
    );
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// A `POST /api/tokens` body, checked field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub rooms: Vec<String>,
    pub scope: Scope,
}

impl NewToken {
    /// `{"name": "...", "rooms": [...], "scope": "view"|"metrics"|"push"}`. `rooms`
    /// defaults to `["camera"]` for `view`; a `push` token needs named streams
    /// (`camera` is the device camera's), and a `metrics` token has none.
    pub fn from_json(body: &str) -> Result<NewToken, FieldError> {
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| FieldError::new("body", format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| FieldError::new("body", "must be a JSON object"))?;
        if let Some(unknown) = object
            .keys()
            .find(|k| !["name", "rooms", "scope"].contains(&k.as_str()))
        {
            return Err(FieldError::new(
                unknown.clone(),
                "unknown field (use name, rooms, scope)",
            ));
        }
        let name = object
            .get("name")
            .ok_or_else(|| FieldError::new("name", "is required"))?
            .as_str()
            .ok_or_else(|| FieldError::new("name", "must be a string"))?;
        let name = clean_text(name, false);
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_TOKEN_NAME_CHARS {
            return Err(FieldError::new(
                "name",
                format!("must be 1-{MAX_TOKEN_NAME_CHARS} characters"),
            ));
        }
        let scope_text = object
            .get("scope")
            .ok_or_else(|| FieldError::new("scope", "is required: view, metrics or push"))?;
        let scope = scope_text.as_str().and_then(Scope::parse).ok_or_else(|| {
            FieldError::new(
                "scope",
                format!("{scope_text} is not a scope: use view, metrics or push"),
            )
        })?;
        let rooms = match object.get("rooms") {
            None if scope == Scope::View => vec![CAMERA.to_owned()],
            None => Vec::new(),
            Some(rooms) => crate::auth::families::rooms_from_json(rooms)?,
        };
        match scope {
            Scope::Metrics if !rooms.is_empty() => {
                return Err(FieldError::new(
                    "rooms",
                    "a metrics token has no rooms: leave rooms out or empty",
                ))
            }
            Scope::View | Scope::Push if rooms.is_empty() => {
                return Err(FieldError::new("rooms", "name at least one room"))
            }
            Scope::Push => {
                if let Some(i) = rooms.iter().position(|r| r == CAMERA) {
                    return Err(FieldError::new(
                        format!("rooms[{i}]"),
                        format!(
                            "\"{CAMERA}\" is fed by the device camera; a push token feeds a named stream"
                        ),
                    ));
                }
            }
            _ => {}
        }
        Ok(NewToken { name, rooms, scope })
    }
}

/// A token and the signal its sockets watch.
#[derive(Debug)]
struct Entry {
    token: Arc<LinkToken>,
    /// Fired when the token is revoked.
    ended: watch::Sender<bool>,
    /// When its last use was written to the database.
    last_written: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    by_id: HashMap<String, Entry>,
    by_hash: HashMap<[u8; 32], String>,
}

/// Every link token, shared by the HTTP and WebSocket sides and the admin API.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    state: Arc<Mutex<State>>,
}

impl Tokens {
    pub fn new(tokens: impl IntoIterator<Item = LinkToken>) -> Tokens {
        let registry = Tokens::default();
        for token in tokens {
            registry.insert(token);
        }
        registry
    }

    pub fn len(&self) -> usize {
        self.state.locked().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token presented, and the signal that fires when it is revoked.
    pub fn by_token(&self, token: &str) -> Option<(Arc<LinkToken>, watch::Receiver<bool>)> {
        let hash = token_hash(token);
        let state = self.state.locked();
        let id = state.by_hash.get(&hash)?;
        state
            .by_id
            .get(id)
            .map(|e| (e.token.clone(), e.ended.subscribe()))
    }

    pub fn get(&self, id: &str) -> Option<Arc<LinkToken>> {
        self.state.locked().by_id.get(id).map(|e| e.token.clone())
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<Arc<LinkToken>> {
        let state = self.state.locked();
        let mut all: Vec<_> = state.by_id.values().map(|e| e.token.clone()).collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all
    }

    /// Whether a token already hashes to this (a new one never should).
    pub fn hash_taken(&self, hash: &[u8; 32]) -> bool {
        self.state.locked().by_hash.contains_key(hash)
    }

    pub fn insert(&self, token: LinkToken) {
        let mut state = self.state.locked();
        state.by_hash.insert(token.hash, token.id.clone());
        let entry = Entry {
            last_written: token.last_used,
            token: Arc::new(token),
            ended: watch::Sender::new(false),
        };
        if let Some(old) = state.by_id.insert(entry.token.id.clone(), entry) {
            old.ended.send_replace(true);
        }
    }

    /// Revokes a token: it stops working and every socket opened with it closes.
    pub fn remove(&self, id: &str) -> bool {
        let mut state = self.state.locked();
        let Some(entry) = state.by_id.remove(id) else {
            return false;
        };
        state.by_hash.remove(&entry.token.hash);
        entry.ended.send_replace(true);
        true
    }

    /// Records a use at `now`; true when it should be written to the database
    /// too (at most once a minute per token, so a snapshot poller every few
    /// seconds costs no SD-card write each time).
    pub fn touch(&self, id: &str, now: i64) -> bool {
        let mut state = self.state.locked();
        let Some(entry) = state.by_id.get_mut(id) else {
            return false;
        };
        entry.token = Arc::new(LinkToken {
            last_used: Some(now),
            ..(*entry.token).clone()
        });
        let due = entry
            .last_written
            .is_none_or(|at| now - at >= LAST_USED_EVERY_S);
        if due {
            entry.last_written = Some(now);
        }
        due
    }
}

/// The `token` parameter of a query string (`?token=...`), percent-decoded.
pub fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .and_then(|(_, v)| crate::http::percent_decode(v))
        .filter(|v| !v.is_empty())
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, value) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, secret: &str, rooms: &[&str], scope: Scope) -> LinkToken {
        LinkToken {
            id: id.into(),
            name: format!("Token {id}"),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            scope,
            created: 1,
            last_used: None,
            hash: token_hash(secret),
        }
    }

    #[test]
    fn a_token_finds_its_record_until_revoked_and_revoking_fires_its_signal() {
        let t = Tokens::new([
            token("t1", "kc_one", &["camera"], Scope::View),
            token("t2", "kc_two", &["hall"], Scope::Push),
        ]);
        let (found, ended) = t.by_token(" kc_one ").expect("pasted with spaces");
        assert_eq!(found.id, "t1");
        let (_, other) = t.by_token("kc_two").unwrap();
        assert!(t.by_token("kc_three").is_none());
        assert!(t.remove("t1"));
        assert!(*ended.borrow(), "its sockets close");
        assert!(!*other.borrow(), "the other token's do not");
        assert!(t.by_token("kc_one").is_none(), "it stops at once");
        assert!(!t.remove("t1"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn generated_tokens_are_long_random_and_url_safe() {
        let (a, hash) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(hash, token_hash(&a));
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "{a}");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'));
    }

    #[test]
    fn last_use_is_written_at_most_once_a_minute() {
        let t = Tokens::new([token("t1", "kc_one", &["camera"], Scope::View)]);
        assert!(t.touch("t1", 1000));
        assert!(!t.touch("t1", 1030));
        assert_eq!(t.get("t1").unwrap().last_used, Some(1030), "kept in memory");
        assert!(t.touch("t1", 1060));
        assert!(!t.touch("nope", 2000));
    }

    #[test]
    fn admin_input_is_checked_field_by_field() {
        let ok = NewToken::from_json(
            r#"{"name":" Home Assistant ","rooms":["camera","hall","camera"],"scope":"view"}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            NewToken {
                name: "Home Assistant".into(),
                rooms: vec!["camera".into(), "hall".into()],
                scope: Scope::View
            }
        );
        let view = NewToken::from_json(r#"{"name":"HA","scope":"view"}"#).unwrap();
        assert_eq!(view.rooms, ["camera"], "view defaults to the camera");
        let metrics = NewToken::from_json(r#"{"name":"Prometheus","scope":"metrics"}"#).unwrap();
        assert!(metrics.rooms.is_empty());
        let field = |body: &str| NewToken::from_json(body).unwrap_err().field;
        assert_eq!(field(r#"{"name":"A","scope":"admin"}"#), "scope");
        assert_eq!(field(r#"{"name":"A","scope":3}"#), "scope");
        assert_eq!(field(r#"{"name":"A"}"#), "scope");
        assert_eq!(field(r#"{"name":"  ","scope":"view"}"#), "name");
        assert_eq!(field(r#"{"scope":"view"}"#), "name");
        assert_eq!(
            field(&format!(
                r#"{{"name":"{}","scope":"view"}}"#,
                "x".repeat(65)
            )),
            "name"
        );
        assert_eq!(
            field(r#"{"name":"A","scope":"view","rooms":["ok","Bad Room"]}"#),
            "rooms[1]"
        );
        assert_eq!(
            field(r#"{"name":"A","scope":"view","rooms":"camera"}"#),
            "rooms"
        );
        assert_eq!(field(r#"{"name":"A","scope":"view","rooms":[]}"#), "rooms");
        assert_eq!(field(r#"{"name":"A","scope":"push"}"#), "rooms");
        assert_eq!(
            field(r#"{"name":"A","scope":"push","rooms":["hall","camera"]}"#),
            "rooms[1]"
        );
        assert_eq!(
            field(r#"{"name":"A","scope":"metrics","rooms":["camera"]}"#),
            "rooms"
        );
        assert_eq!(field(r#"{"name":"A","scope":"view","token":"x"}"#), "token");
        assert_eq!(field("[]"), "body");
        assert_eq!(field("{"), "body");
    }

    #[test]
    fn tokens_are_read_from_a_query_or_a_bearer_header() {
        assert_eq!(
            query_token("stream=hall&token=kc_a-b_c").as_deref(),
            Some("kc_a-b_c")
        );
        assert_eq!(query_token("token=kc%5Fx").as_deref(), Some("kc_x"));
        assert_eq!(query_token("token=&x=1"), None);
        assert_eq!(query_token("tokens=kc_x"), None);
        assert_eq!(query_token("token=%zz"), None);
        assert_eq!(bearer_token("Bearer kc_x"), Some("kc_x"));
        assert_eq!(bearer_token("bearer   kc_x "), Some("kc_x"));
        assert_eq!(bearer_token("Basic eDp5"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
