//! The admin API: JSON over HTTP for the director (the admin role only), the
//! contract that the admin page, scripts and outside checks use. The pause
//! endpoints are the one part staff reach too.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /api/families` | 201, the family and its code (shown only here and on rotation) |
//! | `GET /api/families` | 200, every family with how many devices watch now |
//! | `PATCH /api/families/ID` | 200, the family; a room taken away closes its sockets |
//! | `DELETE /api/families/ID` | 204; its sessions and sockets end within a second |
//! | `POST /api/families/ID/code` | 200, a new code; the old one and its sessions end |
//! | `GET /api/viewers` | 200, who is watching now |
//! | `GET /api/audit?since=&until=` | 200, the viewing log (JSON, or CSV) |
//! | `POST /api/qr` | 200, an SVG QR code of the text sent (the invite) |
//! | `GET /api/streams/NAME/masks` | 200, the stream's privacy mask: `[{"x","y","w","h"}]` |
//! | `PUT /api/streams/NAME/masks` | 200, the mask now in force; replaces the list, `[]` removes it |
//! | `GET /api/streams/NAME/schedule` | 200, the room's opening hours, or `null`: always open |
//! | `PUT /api/streams/NAME/schedule` | 200, the hours now in force (they win over the file's) |
//! | `DELETE /api/streams/NAME/schedule` | 204; always open, even if the file has hours |
//! | `GET /api/streams/NAME/pause` | 200, whether NAME is paused (or closed); staff too |
//! | `POST /api/streams/NAME/pause` | 200, `{"minutes": 1-120}` (default 10) pauses NAME for families; staff too |
//! | `DELETE /api/streams/NAME/pause` | 200, resumes NAME for families; staff too |
//! | `POST /api/tokens` | 201, a link token and its secret (shown only here) |
//! | `GET /api/tokens` | 200, every link token (never the secret) |
//! | `DELETE /api/tokens/ID` | 204; the token stops at once and its sockets close |
//!
//! Every change is written to the database first (on a node of a cluster, to
//! the cluster's shared state: see `records`) and applied in memory only once
//! committed, so a failed write changes nothing. A browser session must
//! send the `X-CSRF-Token` its page got from `/config.json` with each change (a
//! cross-site form cannot set a header); HTTP Basic clients need none. Bad input
//! is a 400 whose JSON names the field.

use tiny_http::Method;

use super::{header, json, HttpContext, Incoming, Reply};
use crate::auth::families::{self, Family, FamilyChange, FieldError};
use crate::auth::tokens::{self, LinkToken, NewToken};
use crate::auth::{codes, Principal};
use crate::hub::{valid_stream_name, StreamError};
use crate::privacy::hours::Effective;
use crate::privacy::schedule::Schedule;
use crate::privacy::Mask;
use crate::store::{audit_csv, unix_now};

/// The header a browser session's changes must carry.
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// The longest text the QR endpoint encodes: an invite link with its code.
const MAX_QR_TEXT: usize = 512;

/// The stream of a `/api/streams/NAME/pause` path, the one API path that staff
/// may use as well as the admin.
pub fn paused_stream(path: &str) -> Option<&str> {
    let name = path
        .trim_end_matches('/')
        .strip_prefix("/api/streams/")?
        .strip_suffix("/pause")?;
    crate::hub::valid_stream_name(name).then_some(name)
}

/// Answers an `/api/...` request from `who`, already known to be allowed it: the
/// admin, or staff for the pause endpoints.
pub(super) fn handle(req: &Incoming, body: &str, who: &Principal, ctx: &HttpContext) -> Reply {
    let changes = !matches!(req.method, Method::Get | Method::Head);
    if changes {
        if let Some(refused) = csrf_refusal(req, who, ctx) {
            return refused;
        }
    }
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    match (&req.method, segments.as_slice()) {
        (Method::Get | Method::Head, ["families"]) => list_families(ctx),
        (Method::Post, ["families"]) => create_family(body, ctx),
        (Method::Patch, ["families", id]) => edit_family(id, body, ctx),
        (Method::Delete, ["families", id]) => revoke_family(id, ctx),
        (Method::Post, ["families", id, "code"]) => rotate_code(id, ctx),
        (Method::Get | Method::Head, ["viewers"]) => {
            json(200, &serde_json::json!(ctx.ws.viewing.now()))
        }
        (Method::Get | Method::Head, ["audit"]) => audit(req, ctx),
        (Method::Post, ["qr"]) => qr(body),
        (Method::Get | Method::Head, ["streams", name, "masks"]) => get_masks(name, ctx),
        (Method::Put, ["streams", name, "masks"]) => put_masks(name, body, ctx),
        (Method::Get | Method::Head, ["streams", name, "schedule"]) => get_schedule(name, ctx),
        (Method::Put, ["streams", name, "schedule"]) => put_schedule(name, body, ctx),
        (Method::Delete, ["streams", name, "schedule"]) => delete_schedule(name, ctx),
        (Method::Get | Method::Head, ["streams", name, "pause"]) => {
            json(200, &ctx.pauses.state(name))
        }
        (Method::Post, ["streams", name, "pause"]) => pause(req, body, who, name, ctx),
        (Method::Delete, ["streams", name, "pause"]) => {
            ctx.pauses.resume(name, who);
            json(200, &ctx.pauses.state(name))
        }
        (Method::Get | Method::Head, ["tokens"]) => list_tokens(ctx),
        (Method::Post, ["tokens"]) => create_token(body, ctx),
        (Method::Delete, ["tokens", id]) => revoke_token(id, ctx),
        (
            _,
            ["families"]
            | ["families", _]
            | ["families", _, "code"]
            | ["viewers"]
            | ["audit"]
            | ["qr"]
            | ["streams", _, "masks"]
            | ["streams", _, "schedule"]
            | ["streams", _, "pause"]
            | ["tokens"]
            | ["tokens", _],
        ) => error(405, "method not allowed here", None),
        _ => error(404, "no such API path", None),
    }
}

/// Pauses stream `name` for families: `{"minutes": N}`, 1-120, default 10.
fn pause(req: &Incoming, body: &str, who: &Principal, name: &str, ctx: &HttpContext) -> Reply {
    let minutes = match crate::privacy::pause::minutes_from_json(body) {
        Ok(minutes) => minutes,
        Err(e) => return error(400, &e.to_string(), Some("minutes")),
    };
    // Only a room that exists: a pause keeps its stream, so pausing made-up names
    // must not be a way to fill the hub's 32 streams.
    if ctx.hub.get(name).is_none() {
        return error(404, &format!("no room named {name:?} is on now"), None);
    }
    let address = super::peer_ip(req).to_string();
    match ctx.pauses.pause(name, minutes, who, &address) {
        Ok(_) => json(200, &ctx.pauses.state(name)),
        Err(e) => error(409, &format!("cannot pause {name:?}: {e}"), None),
    }
}

/// A change from a browser session must prove it comes from our own page.
fn csrf_refusal(req: &Incoming, who: &Principal, ctx: &HttpContext) -> Option<Reply> {
    if !super::same_origin_post(req, ctx) {
        return Some(error(403, "cross-site requests are not accepted", None));
    }
    let session = who.session.as_ref()?;
    let expected = session.csrf.clone();
    let presented = req.csrf.as_deref().unwrap_or("");
    if !codes::same_secret(presented, &expected) {
        return Some(error(
            403,
            "missing or wrong X-CSRF-Token: reload the page and try again",
            None,
        ));
    }
    None
}

fn error(status: u16, why: &str, field: Option<&str>) -> Reply {
    let mut body = serde_json::json!({ "error": why });
    if let Some(field) = field {
        body["field"] = field.into();
    }
    json(status, &body)
}

fn bad_field(e: FieldError) -> Reply {
    error(400, &e.to_string(), Some(&e.field))
}

fn storage_failed(e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "an admin change could not be saved");
    error(
        503,
        &format!("the change could not be saved, nothing was changed: {e}"),
        None,
    )
    .with_header(header("Retry-After", "5"))
}

fn family_json(family: &Family, watching: usize) -> serde_json::Value {
    let mut value = serde_json::json!(family);
    value["watching"] = watching.into();
    value
}

fn not_found(id: &str) -> Reply {
    error(404, &format!("no family with id {id:?}"), None)
}

fn list_families(ctx: &HttpContext) -> Reply {
    let all: Vec<_> = ctx
        .access
        .families
        .list()
        .iter()
        .map(|(family, watching)| family_json(family, *watching))
        .collect();
    json(200, &serde_json::json!(all))
}

/// A fresh code no family uses yet.
fn new_code(ctx: &HttpContext) -> anyhow::Result<(String, [u8; 32])> {
    loop {
        let code = codes::generate_code()?;
        let hash = families::code_hash(&code);
        if !ctx.access.families.code_taken(&hash) {
            return Ok((code, hash));
        }
    }
}

fn create_family(body: &str, ctx: &HttpContext) -> Reply {
    let change = match FamilyChange::from_json(body, true) {
        Ok(change) => change,
        Err(e) => return bad_field(e),
    };
    if ctx.access.families.len() >= families::MAX_FAMILIES {
        return error(
            409,
            &format!("at most {} families", families::MAX_FAMILIES),
            None,
        );
    }
    let (id, (code, code_hash)) = match Family::new_id().and_then(|id| Ok((id, new_code(ctx)?))) {
        Ok(made) => made,
        Err(e) => return storage_failed(e),
    };
    let blank = Family {
        id,
        name: String::new(),
        rooms: Vec::new(),
        max_devices: families::DEFAULT_MAX_DEVICES,
        created: unix_now(),
        last_seen: None,
        code_hash,
    };
    let family = change.apply_to(&blank);
    if let Err(e) = ctx.records.create_family(&family) {
        return storage_failed(e);
    }
    tracing::info!(family = %family.id, rooms = ?family.rooms, "family added");
    let mut answer = family_json(&family, 0);
    answer["code"] = code.into();
    json(201, &answer)
}

fn edit_family(id: &str, body: &str, ctx: &HttpContext) -> Reply {
    let change = match FamilyChange::from_json(body, false) {
        Ok(change) => change,
        Err(e) => return bad_field(e),
    };
    let Some(current) = ctx.access.families.get(id) else {
        return not_found(id);
    };
    let edited = match ctx.records.update_family(&current, change) {
        Ok(Some(edited)) => edited,
        Ok(None) => return not_found(id),
        Err(e) => return storage_failed(e),
    };
    tracing::info!(family = %id, rooms = ?edited.rooms, "family changed");
    let watching = ctx
        .access
        .families
        .list()
        .iter()
        .find(|(f, _)| f.id == id)
        .map_or(0, |(_, n)| *n);
    json(200, &family_json(&edited, watching))
}

fn no_content() -> Reply {
    tiny_http::Response::new(
        tiny_http::StatusCode(204),
        vec![header("Cache-Control", "no-store")],
        std::io::Cursor::new(bytes::Bytes::new()),
        Some(0),
        None,
    )
}

/// A room's name from the path, or the 400 that refuses it.
fn room_name(name: &str) -> Result<&str, Reply> {
    if valid_stream_name(name) {
        Ok(name)
    } else {
        Err(error(
            400,
            "stream names are 1-32 characters of a-z, 0-9, _ and -",
            Some("name"),
        ))
    }
}

/// The hours in force for a room: the admin's, else the file's; `null` when the
/// room is always open.
fn get_schedule(name: &str, ctx: &HttpContext) -> Reply {
    let name = match room_name(name) {
        Ok(name) => name,
        Err(refused) => return refused,
    };
    match ctx.hours.effective(name) {
        Effective::Always => json(200, &serde_json::Value::Null),
        Effective::Hours(schedule) => json(200, &serde_json::json!(*schedule)),
        Effective::Unusable(why) => error(
            500,
            &format!(
                "the saved opening hours cannot be used ({why}); the room is closed to \
                 families until new hours are PUT or DELETEd"
            ),
            None,
        ),
    }
}

/// Replaces a room's opening hours: saved first, then in force at once.
fn put_schedule(name: &str, body: &str, ctx: &HttpContext) -> Reply {
    let name = match room_name(name) {
        Ok(name) => name,
        Err(refused) => return refused,
    };
    let schedule = match Schedule::from_json(body) {
        Ok(schedule) => schedule,
        Err(e) => return error(400, &e.to_string(), Some(&e.field)),
    };
    set_schedule(name, Some(schedule), ctx)
}

/// Makes a room always open, whatever the config file says.
fn delete_schedule(name: &str, ctx: &HttpContext) -> Reply {
    match room_name(name) {
        Ok(name) => set_schedule(name, None, ctx),
        Err(refused) => refused,
    }
}

fn set_schedule(name: &str, schedule: Option<Schedule>, ctx: &HttpContext) -> Reply {
    if !ctx.hours.has_room_for(name) {
        return error(
            409,
            &format!(
                "opening hours are kept for at most {} rooms",
                crate::hub::MAX_STREAMS
            ),
            None,
        );
    }
    let saved = schedule
        .as_ref()
        .map(|s| serde_json::to_string(s).expect("a schedule serializes"));
    if let Err(e) = ctx.store.set_schedule(name, saved) {
        return storage_failed(e);
    }
    let answer = serde_json::json!(schedule);
    let always = schedule.is_none();
    ctx.hours.set(name, schedule, &ctx.hub);
    tracing::info!(room = %name, hours = %answer, "opening hours set");
    if always {
        no_content()
    } else {
        json(200, &answer)
    }
}

fn revoke_family(id: &str, ctx: &HttpContext) -> Reply {
    if ctx.access.families.get(id).is_none() {
        return not_found(id);
    }
    let sessions = match ctx.records.delete_family(id) {
        Ok(Some(sessions)) => sessions,
        Ok(None) => return not_found(id),
        Err(e) => return storage_failed(e),
    };
    tracing::info!(family = %id, sessions, "family revoked");
    tiny_http::Response::new(
        tiny_http::StatusCode(204),
        vec![header("Cache-Control", "no-store")],
        std::io::Cursor::new(bytes::Bytes::new()),
        Some(0),
        None,
    )
}

fn rotate_code(id: &str, ctx: &HttpContext) -> Reply {
    if ctx.access.families.get(id).is_none() {
        return not_found(id);
    }
    let (code, hash) = match new_code(ctx) {
        Ok(made) => made,
        Err(e) => return storage_failed(e),
    };
    let sessions = match ctx.records.rotate_code(id, hash) {
        Ok(Some(sessions)) => sessions,
        Ok(None) => return not_found(id),
        Err(e) => return storage_failed(e),
    };
    tracing::info!(family = %id, sessions, "family code rotated");
    json(200, &serde_json::json!({ "code": code }))
}

/// Every link token, oldest first, without its secret.
fn list_tokens(ctx: &HttpContext) -> Reply {
    let all: Vec<serde_json::Value> = ctx
        .access
        .tokens
        .list()
        .iter()
        .map(|token| serde_json::json!(token.as_ref()))
        .collect();
    json(200, &serde_json::json!(all))
}

/// Makes a link token: stored (as its hash) first, then in force; the token
/// itself is in this answer and nowhere else.
fn create_token(body: &str, ctx: &HttpContext) -> Reply {
    let wanted = match NewToken::from_json(body) {
        Ok(wanted) => wanted,
        Err(e) => return bad_field(e),
    };
    if ctx.access.tokens.len() >= tokens::MAX_TOKENS {
        return error(
            409,
            &format!(
                "at most {} link tokens: revoke one that is no longer used",
                tokens::MAX_TOKENS
            ),
            None,
        );
    }
    let made = LinkToken::new_id().and_then(|id| loop {
        let (secret, hash) = tokens::generate()?;
        if !ctx.access.tokens.hash_taken(&hash) {
            return Ok((id, secret, hash));
        }
    });
    let (id, secret, hash) = match made {
        Ok(made) => made,
        Err(e) => return storage_failed(e),
    };
    let token = LinkToken {
        id,
        name: wanted.name,
        rooms: wanted.rooms,
        scope: wanted.scope,
        created: unix_now(),
        last_used: None,
        hash,
    };
    if let Err(e) = ctx.records.create_token(&token) {
        return storage_failed(e);
    }
    tracing::info!(token = %token.id, name = %token.name, scope = token.scope.as_str(), rooms = ?token.rooms, "link token made");
    let mut answer = serde_json::json!(token);
    answer["token"] = secret.into();
    json(201, &answer)
}

/// Revokes a link token: removed from the database, then it stops working and
/// every socket opened with it closes.
fn revoke_token(id: &str, ctx: &HttpContext) -> Reply {
    let unknown = || error(404, &format!("no link token with id {id:?}"), None);
    if ctx.access.tokens.get(id).is_none() {
        return unknown();
    }
    match ctx.records.delete_token(id) {
        Ok(true) => {}
        Ok(false) => return unknown(),
        Err(e) => return storage_failed(e),
    }
    tracing::info!(token = %id, "link token revoked");
    no_content()
}

fn audit(req: &Incoming, ctx: &HttpContext) -> Reply {
    let number = |key: &str, default: i64| -> Result<i64, Reply> {
        match super::query_param(req.query, key) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .map_err(|_| error(400, &format!("{key}: must be UNIX seconds"), Some(key))),
        }
    };
    let (since, until) = match (number("since", 0), number("until", i64::MAX)) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    if since > until {
        return error(400, "since: must not be after until", Some("since"));
    }
    #[allow(unused_mut)]
    let mut records = match ctx.store.audit(since, until) {
        Ok(records) => records,
        Err(e) => return storage_failed(e),
    };
    // A clustered node's log holds every node's rows: name this node on its own.
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &ctx.cluster {
        for record in &mut records {
            record.node.get_or_insert_with(|| cluster.node().to_owned());
        }
    }
    let csv = super::query_param(req.query, "format") == Some("csv")
        || req
            .accept
            .as_deref()
            .is_some_and(|a| a.contains("text/csv"));
    if !csv {
        return json(200, &serde_json::json!(records));
    }
    let body = audit_csv(&records);
    let len = body.len();
    tiny_http::Response::new(
        tiny_http::StatusCode(200),
        vec![
            header("Content-Type", "text/csv; charset=utf-8"),
            header(
                "Content-Disposition",
                "attachment; filename=\"kindercam-viewing-log.csv\"",
            ),
            header("Cache-Control", "no-store"),
            header("X-Content-Type-Options", "nosniff"),
        ],
        std::io::Cursor::new(bytes::Bytes::from(body)),
        Some(len),
        None,
    )
}

/// A stream name from the path, or the 404 for one no stream can have.
fn stream_name(name: &str) -> Result<&str, Reply> {
    if valid_stream_name(name) {
        Ok(name)
    } else {
        Err(error(
            404,
            &format!("no stream can be called {name:?}: {}", StreamError::BadName),
            None,
        ))
    }
}

/// The mask in force for stream `name`: the API's if one was stored, else the
/// config file's; `[]` when there is none. Also for a room not broadcasting yet.
fn get_masks(name: &str, ctx: &HttpContext) -> Reply {
    match stream_name(name) {
        Ok(name) => json(200, &serde_json::json!(*ctx.hub.mask_of(name))),
        Err(reply) => reply,
    }
}

/// Replaces stream `name`'s mask: stored first, then burned into its next frame.
fn put_masks(name: &str, body: &str, ctx: &HttpContext) -> Reply {
    let name = match stream_name(name) {
        Ok(name) => name,
        Err(reply) => return reply,
    };
    let mask = match Mask::from_json(body) {
        Ok(mask) => mask,
        Err(e) => return error(400, &e.to_string(), Some(&e.field)),
    };
    if let Err(e) = ctx.store.set_stream_masks(name, &mask) {
        return storage_failed(e);
    }
    let applied = ctx.hub.store_mask(name, mask);
    tracing::info!(
        stream = name,
        rectangles = applied.rects().len(),
        "privacy mask changed"
    );
    json(200, &serde_json::json!(*applied))
}

/// An SVG QR code of `{"text": "..."}`: the invite's login link, made here so the
/// page needs no QR library and the code never goes into a URL.
fn qr(body: &str) -> Reply {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["text"].as_str().map(str::to_owned));
    let Some(text) = text.filter(|t| !t.is_empty() && t.len() <= MAX_QR_TEXT) else {
        return error(
            400,
            &format!("text: a string of 1-{MAX_QR_TEXT} bytes"),
            Some("text"),
        );
    };
    let code =
        match qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M) {
            Ok(code) => code,
            Err(e) => return error(400, &format!("text: cannot be encoded: {e}"), Some("text")),
        };
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    let len = svg.len();
    tiny_http::Response::new(
        tiny_http::StatusCode(200),
        vec![
            header("Content-Type", "image/svg+xml"),
            header("Cache-Control", "no-store"),
            header("X-Content-Type-Options", "nosniff"),
        ],
        std::io::Cursor::new(bytes::Bytes::from(svg)),
        Some(len),
        None,
    )
}
