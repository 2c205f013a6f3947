//! Who may do what. Three roles (viewer: watch and chat; staff: also broadcast,
//! moderate and pause; admin, the director: also families and the viewing log).
//! Staff and admin have a code each; parents log in with their family's code
//! (`families.rs`), which opens only that family's rooms, or with the shared
//! viewer code of older configs, which opens every room. A code is presented
//! three ways: a browser session cookie set by `POST /login`, HTTP Basic auth
//! (any user name, the code as password) for VLC and scripts, or nothing at all
//! when `auth = "off"` on a loopback-only daemon. Clients that keep one URL (Home
//! Assistant, OctoPrint, an `<img>` tag) use a link token instead (`tokens.rs`),
//! as `?token=` or `Authorization: Bearer`, which opens only what its scope says.
//! Every front door names what it is asked as a [`Route`] and asks
//! [`Access::authorize`]; nothing else decides. The WebSocket handshake and the
//! MJPEG route both go through [`Access::admit`], so a viewer gets the same answer
//! on either.

pub mod codes;
pub mod families;
pub mod name;
pub mod origin;
pub mod sessions;
pub mod sockets;
pub mod tokens;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use base64::Engine;

use crate::config::Config;
use crate::store::Store;
use crate::sync::{Locked, ReadWrite};

use crate::ratelimit::KeyedLimiter;
use codes::{AccessCodes, CodeSet};
use families::{DeviceGuard, DeviceRefusal, Families, Family};
pub use name::DisplayName;
use sessions::{Session, SessionStore};
use tokens::{LinkToken, Scope, Tokens};

pub const SESSION_COOKIE: &str = "kc_session";
/// Failed logins allowed per client address before it must wait; then one per 10 s.
const LOGIN_FAILURE_BURST: u32 = 5;
const LOGIN_FAILURE_RATE: f64 = 0.1;
const MAX_TRACKED_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Staff,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Staff, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    /// Staff rights: broadcast, moderate, pause, every room. The admin has them too.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Staff | Role::Admin)
    }
}

/// Whose credentials a principal presented, beyond its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A role's own code (admin, staff, or the shared viewer code), or auth off.
    Role,
    /// A family's code: that family's rooms only.
    Family(String),
    /// A link token: its rooms, for what its scope allows, and nothing else.
    Token(Arc<LinkToken>),
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    pub account: Account,
    /// The chat name fixed at login; `None` for Basic auth and auth-off clients.
    pub name: Option<DisplayName>,
    pub session: Option<Arc<Session>>,
    /// Turns true when these credentials stop being valid: logout, or the role's code
    /// changing (for sessions and Basic auth alike). `None` with auth off.
    pub ended: Option<watch::Receiver<bool>>,
    /// When a session's login runs out; its sockets close then too.
    pub expires: Option<SystemTime>,
}

/// Why a login failed; each answer is distinct for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    RateLimited,
    WrongCode,
    BadName(String),
    /// Too many code checks queued (someone is guessing hard): try again shortly.
    Busy,
}

/// Why a request is not served: not identified, or not allowed what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No valid session or code: 401.
    Unauthorized,
    /// The code could not be checked in time: 503, retry.
    Busy,
    /// Identified, but not allowed this: 403, with the reason for the person.
    Forbidden(std::borrow::Cow<'static, str>),
}

impl Denied {
    /// The HTTP status that says it, on either port.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Unauthorized => 401,
            Denied::Busy => 503,
            Denied::Forbidden(_) => 403,
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Unauthorized => {
                f.write_str("log in first, or send the access code with HTTP Basic auth")
            }
            Denied::Busy => write!(f, "{}", codes::Busy),
            Denied::Forbidden(why) => f.write_str(why),
        }
    }
}

/// What a request presents to be identified by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `Cookie` header: a login session.
    pub cookie: Option<&'a str>,
    /// The `Authorization` header: `Basic` (a code) or `Bearer` (a link token).
    pub authorization: Option<&'a str>,
    /// A link token taken from the URL (`?token=`), where the route accepts one.
    pub token: Option<&'a str>,
}

/// A request for a socket or a stream, as [`Access::admit`] judges it: the
/// parts of the request that decide who is asking and whether it may.
#[derive(Debug, Clone, Copy)]
pub struct Knock<'a> {
    /// The client's address (`net::client_ip` of the peer): failed Basic codes
    /// count against it.
    pub peer: IpAddr,
    /// The `Host` header: with access control off only loopback names are served.
    pub host: Option<&'a str>,
    /// The `Origin` header: a browser page must be ours.
    pub origin: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The request's query string, without the `?` (may hold `token=`).
    pub query: &'a str,
    /// The HTTP listener's real port: our pages' origin.
    pub http_port: u16,
}

impl Knock<'_> {
    /// Whether identifying this request may need an argon2 check (HTTP Basic
    /// with a code), which takes tens of milliseconds on a Pi: run
    /// [`Access::admit`] on a blocking thread then. Cookies and tokens are a
    /// SHA-256 and a map look-up.
    pub fn may_hash(&self) -> bool {
        self.authorization.and_then(basic_password).is_some()
    }
}

/// What a request asks to do, as access control sees it. Every front door (the
/// WebSocket handshake, the HTTP handlers) names its request as one of these and
/// asks [`Access::authorize`]; no handler decides on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A stream's pictures: a video socket or a snapshot.
    Watch(&'a str),
    /// A room's chat.
    Chat(&'a str),
    /// Feeding a stream (an upload socket), or the broadcaster page (`None`).
    Broadcast(Option<&'a str>),
    /// The viewer page, its settings and the figures anyone logged in may see.
    Pages,
    /// Pausing a room for families, resuming it, or reading its pause: staff's.
    Pause(&'a str),
    /// The director's work: families, the viewing log, the admin page.
    Admin,
}

/// A family device turned away: over `max_devices`, or the family just revoked.
#[derive(Debug, Clone)]
pub struct DeviceRefused {
    /// A key the pages translate.
    pub reason: &'static str,
    /// The same in English, for logs and clients without a translation.
    pub message: String,
    /// The `{"type":"status","state":"refused",...}` message a viewer receives.
    pub status: serde_json::Value,
}

/// What a presented code turned out to be.
#[derive(Debug, Clone)]
enum Grant {
    Role(Role),
    Family(Arc<Family>),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::RateLimited => {
                f.write_str("too many failed attempts; wait a minute and try again")
            }
            LoginError::WrongCode => f.write_str("wrong access code"),
            LoginError::BadName(why) => f.write_str(why),
            LoginError::Busy => write!(f, "{}", codes::Busy),
        }
    }
}

/// The codes in force: `None` means auth is off.
#[derive(Debug)]
pub struct Access {
    codes: RwLock<Option<Arc<AccessCodes>>>,
    /// Per role (viewer, staff, admin): fired and replaced when that role's code
    /// changes, so sockets opened with the old code by Basic auth close too.
    code_generation: [Mutex<watch::Sender<bool>>; 3],
    pub sessions: SessionStore,
    pub families: Families,
    pub tokens: Tokens,
    /// Where families' last visits are kept; `None` in memory-only tests.
    store: Option<Store>,
    login_failures: KeyedLimiter<IpAddr>,
    allowed_origins: Vec<String>,
    tls: bool,
}

/// Settings `Access` is built from (a slice of the Config).
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// `None` with auth off.
    pub codes: Option<CodeSet>,
    pub families: Families,
    pub tokens: Tokens,
    pub allowed_origins: Vec<String>,
    pub session_ttl: Duration,
    pub tls: bool,
    /// Where sessions are kept across restarts; `None` keeps them in memory.
    pub store: Option<Store>,
}

impl Access {
    pub fn new(settings: AccessSettings) -> Access {
        let codes = settings.codes.map(|c| Arc::new(AccessCodes::new(c)));
        let families = settings.families;
        let store = settings.store.clone();
        let sessions = match (&codes, settings.store) {
            (Some(codes), Some(store)) => {
                SessionStore::load(settings.session_ttl, store, |role, family| match family {
                    None => Some(codes.fingerprint(role)),
                    Some(id) => families.get(id).map(|f| f.code_hash),
                })
            }
            _ => SessionStore::new(settings.session_ttl),
        };
        Access {
            codes: RwLock::new(codes),
            code_generation: std::array::from_fn(|_| Mutex::new(watch::Sender::new(false))),
            sessions,
            families,
            tokens: settings.tokens,
            store,
            login_failures: KeyedLimiter::new(
                LOGIN_FAILURE_BURST,
                LOGIN_FAILURE_RATE,
                MAX_TRACKED_ADDRESSES,
            ),
            allowed_origins: settings.allowed_origins,
            tls: settings.tls,
        }
    }

    /// Access as the config sets it: codes configured or generated on first start,
    /// and the families and sessions kept in `store`.
    pub fn from_config(config: &Config, store: &Store) -> anyhow::Result<Access> {
        let codes = codes::resolve(config)?;
        if codes.is_none() {
            tracing::warn!(
                "access control is off (loopback only): anyone on this machine is staff"
            );
        }
        let families = store.families().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the families; only role codes work until a restart");
            Vec::new()
        });
        let tokens = store.tokens().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the link tokens; none works until a restart");
            Vec::new()
        });
        Ok(Access::new(AccessSettings {
            store: Some(store.clone()),
            codes,
            families: Families::new(families),
            tokens: Tokens::new(tokens),
            allowed_origins: config.access.allowed_origins.clone(),
            session_ttl: config.access.session_ttl,
            // Behind a TLS-terminating proxy the browser still sees https.
            tls: config.listen.tls_cert.is_some()
                || config
                    .listen
                    .ws_public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("wss://")),
        }))
    }

    /// Re-reads the codes (SIGHUP): sessions and sockets of a role whose code changed end.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        match codes::resolve(config)? {
            Some(codes) if self.enabled() => {
                let changed = self.set_codes(codes);
                tracing::info!(changed = changed.len(), "access codes reloaded");
                Ok(())
            }
            _ => anyhow::bail!("turning access control on or off needs a restart"),
        }
    }

    pub fn enabled(&self) -> bool {
        self.codes.reading().is_some()
    }

    /// The fingerprint a session of `role` (and `family`) must carry to be in
    /// force now: its family's code, or its role's (all zero with access control
    /// off). `None` when the family does not exist.
    pub fn code_in_force(&self, role: Role, family: Option<&str>) -> Option<[u8; 32]> {
        match family {
            Some(id) => self.families.get(id).map(|f| f.code_hash),
            None => Some(
                self.current_codes()
                    .map(|c| c.fingerprint(role))
                    .unwrap_or_default(),
            ),
        }
    }

    fn current_codes(&self) -> Option<Arc<AccessCodes>> {
        self.codes.reading().clone()
    }

    /// Identifies a request from its `Cookie` and `Authorization` headers (a
    /// session, Basic auth, or a link token as `Bearer`); see [`Access::identify`].
    pub fn authenticate(
        &self,
        peer: IpAddr,
        cookie: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Principal, Denied> {
        self.identify(
            peer,
            Presented {
                cookie,
                authorization,
                token: None,
            },
        )
    }

    /// Identifies a request: a session cookie first, then a link token (`Bearer`,
    /// or `presented.token` from a URL), then a code by Basic auth. A wrong code
    /// presented by Basic auth counts against `peer` like a failed login, so the
    /// code cannot be guessed through Basic auth faster than through the login
    /// form (a wrong token does not: 256 random bits leave nothing to guess).
    /// Only Basic auth can mean an argon2 check, which is slow: with one, call
    /// this off the async worker threads (see [`Knock::may_hash`]).
    pub fn identify(&self, peer: IpAddr, presented: Presented<'_>) -> Result<Principal, Denied> {
        let Presented {
            cookie,
            authorization,
            token,
        } = presented;
        let Some(codes) = self.current_codes() else {
            return Ok(Principal {
                role: Role::Staff,
                account: Account::Role,
                name: None,
                session: None,
                ended: None,
                expires: None,
            });
        };
        if let Some(session) = cookie
            .and_then(|c| cookie_value(c, SESSION_COOKIE))
            .and_then(|t| self.sessions.get(t))
        {
            return Ok(Principal {
                role: session.role,
                account: session
                    .family
                    .clone()
                    .map_or(Account::Role, Account::Family),
                name: Some(session.name.clone()),
                ended: Some(session.ended()),
                expires: Some(session.expires),
                session: Some(session),
            });
        }
        if let Some(token) = authorization.and_then(tokens::bearer_token).or(token) {
            let (token, ended) = self.tokens.by_token(token).ok_or(Denied::Unauthorized)?;
            return Ok(Principal {
                // Push tokens feed a stream as staff would; `authorize` keeps
                // every token to its scope and rooms whatever its role.
                role: match token.scope {
                    Scope::Push => Role::Staff,
                    Scope::View | Scope::Metrics => Role::Viewer,
                },
                account: Account::Token(token),
                name: None,
                session: None,
                ended: Some(ended),
                expires: None,
            });
        }
        let code = authorization
            .and_then(basic_password)
            .ok_or(Denied::Unauthorized)?;
        let grant = self
            .limited_check(peer, &codes, &code)
            .map_err(|_| Denied::Busy)?
            .ok_or(Denied::Unauthorized)?;
        let (role, account, ended) = match grant {
            Grant::Role(role) => (role, Account::Role, self.generation(role).subscribe()),
            Grant::Family(family) => (
                Role::Viewer,
                Account::Family(family.id.clone()),
                self.families
                    .ended(&family.id)
                    .ok_or(Denied::Unauthorized)?,
            ),
        };
        Ok(Principal {
            role,
            account,
            name: None,
            session: None,
            ended: Some(ended),
            expires: None,
        })
    }

    /// Checks a code presented by `peer` under its failed-attempt limit. The token
    /// is taken before the check and given back unless the code was wrong: checks
    /// queue for a turn, and every queued guess must already have been counted.
    /// `Ok(None)` is a wrong code or an address that must wait.
    fn limited_check(
        &self,
        peer: IpAddr,
        codes: &AccessCodes,
        code: &str,
    ) -> Result<Option<Grant>, codes::Busy> {
        if !self.login_failures.try_take(&peer) {
            return Ok(None);
        }
        // A family code is one hash and a look-up; only role codes may be argon2.
        let checked = match self.families.by_code(code) {
            Some(family) => Ok(Some(Grant::Family(family))),
            None => codes.check(code).map(|role| role.map(Grant::Role)),
        };
        if !matches!(checked, Ok(None)) {
            self.login_failures.refund(&peer);
        }
        checked
    }

    /// Whether `who` may do what `route` asks. The admin may do everything, staff
    /// all but the admin's work; a viewer may watch and chat, in every room with
    /// the shared viewer code and in its family's rooms with a family code.
    pub fn authorize(&self, who: &Principal, route: Route<'_>) -> Result<(), Denied> {
        let forbidden = |why: &'static str| Err(Denied::Forbidden(why.into()));
        if let Account::Token(token) = &who.account {
            return self.authorize_token(token, route);
        }
        match (who.role, route) {
            (Role::Admin, _) => Ok(()),
            (Role::Staff, Route::Admin) => {
                forbidden("this needs the director's admin code: log out and log in with it")
            }
            (Role::Staff, _) => Ok(()),
            (Role::Viewer, Route::Broadcast(_)) => {
                forbidden("broadcasting needs the staff code: log out and log in with it")
            }
            (Role::Viewer, Route::Pause(_)) => {
                forbidden("pausing a room needs the staff code: log out and log in with it")
            }
            (Role::Viewer, Route::Admin) => {
                forbidden("this needs the director's admin code: log out and log in with it")
            }
            (Role::Viewer, Route::Pages) => Ok(()),
            (Role::Viewer, Route::Watch(room) | Route::Chat(room)) => match &who.account {
                Account::Role => Ok(()),
                Account::Family(id) => match self.families.get(id) {
                    Some(family) if family.may_enter(room) => Ok(()),
                    Some(_) => forbidden("your family's login does not include this room"),
                    None => Err(Denied::Unauthorized),
                },
                Account::Token(_) => unreachable!("tokens are decided above"),
            },
        }
    }

    /// A link token opens its rooms for what its scope allows and nothing else:
    /// a `view` token watches (video, snapshots, MJPEG), a `push` token feeds its
    /// streams, a `metrics` token opens `/metrics` only ([`Access::allows_metrics`]).
    fn authorize_token(&self, token: &LinkToken, route: Route<'_>) -> Result<(), Denied> {
        let forbidden = |why: &'static str| Err(Denied::Forbidden(why.into()));
        if self.tokens.get(&token.id).is_none() {
            return Err(Denied::Unauthorized);
        }
        match (token.scope, route) {
            (Scope::View, Route::Watch(room)) | (Scope::Push, Route::Broadcast(Some(room)))
                if token.opens(room) =>
            {
                Ok(())
            }
            (Scope::View, Route::Watch(_)) | (Scope::Push, Route::Broadcast(Some(_))) => {
                forbidden("this link token does not include this room")
            }
            (Scope::View, _) => forbidden(
                "a view link token only watches its rooms (video, snapshots, MJPEG): log in for anything else",
            ),
            (Scope::Push, _) => forbidden(
                "a push link token only feeds its streams (/upload/NAME): log in for anything else",
            ),
            (Scope::Metrics, _) => forbidden("a metrics link token only opens /metrics"),
        }
    }

    /// Whether an `Authorization` header carries a link token of scope
    /// `metrics` (`Bearer kc_...`): what `/metrics` accepts besides the
    /// admin's own login. A token of another scope, a revoked or unknown one, or
    /// no header at all is `false`. Cheap (one SHA-256): fine on async threads.
    pub fn allows_metrics(&self, authorization: Option<&str>) -> bool {
        let Some((token, _)) = authorization
            .and_then(tokens::bearer_token)
            .and_then(|t| self.tokens.by_token(t))
        else {
            return false;
        };
        if token.scope != Scope::Metrics {
            return false;
        }
        self.token_seen(&token.id);
        true
    }

    /// Who `knock` is, if it may do what `route` asks: the host name (with
    /// access control off, only loopback names), the credentials ([`Access::identify`];
    /// a `?token=` in `knock.query` counts only where tokens are taken in URLs:
    /// watching and feeding a stream), the page's origin, then [`Access::authorize`].
    /// This is the WebSocket handshake's whole decision, and the MJPEG route's.
    pub fn admit(&self, knock: &Knock<'_>, route: Route<'_>) -> Result<Principal, Denied> {
        if !self.host_ok(knock.host) {
            return Err(Denied::Forbidden(
                "with access control off, kindercam answers only to localhost".into(),
            ));
        }
        let url_token = match route {
            Route::Watch(_) | Route::Broadcast(Some(_)) => tokens::query_token(knock.query),
            _ => None,
        };
        let principal = self.identify(
            knock.peer,
            Presented {
                cookie: knock.cookie,
                authorization: knock.authorization,
                token: url_token.as_deref(),
            },
        )?;
        if !self.origin_ok(knock.origin, knock.host, knock.http_port) {
            return Err(Denied::Forbidden(
                "this page's origin may not open kindercam sockets".into(),
            ));
        }
        self.authorize(&principal, route)?;
        Ok(principal)
    }

    /// Who may watch `stream`, with the answer a `/video/NAME` handshake gets:
    /// [`Access::admit`] for [`Route::Watch`]. For the MJPEG route (and any other
    /// picture route outside tiny_http): on `Ok`, serve with
    /// `hub::Audience::of(principal.role)` (a view token and a family are held at
    /// the gate), stop when `principal.ended` fires (logout, revocation; see
    /// `Shutdown::or_session_end`) or `room_access` does, take a device place with
    /// [`Access::claim_device`], and log with `viewing_log::Presence::start`.
    /// When [`Knock::may_hash`] is true, call it on a blocking thread.
    pub fn admit_viewer(&self, knock: &Knock<'_>, stream: &str) -> Result<Principal, Denied> {
        self.admit(knock, Route::Watch(stream))
    }

    /// The name of `who`'s family, for a family login.
    pub fn family_name(&self, who: &Principal) -> Option<String> {
        match &who.account {
            Account::Family(id) => self.families.get(id).map(|f| f.name.clone()),
            Account::Role | Account::Token(_) => None,
        }
    }

    /// A place among the family's watching devices for `who` (a device is a
    /// login session; each Basic-auth connection is a device of its own). Role
    /// logins have no limit: `Ok(None)`.
    pub fn claim_device(&self, who: &Principal) -> Result<Option<DeviceGuard>, DeviceRefused> {
        let Account::Family(id) = &who.account else {
            return Ok(None);
        };
        static NEXT_CONNECTION: std::sync::atomic::AtomicU64 =
            std::sync::atomic::AtomicU64::new(1 << 62);
        let device = who.session.as_ref().map_or_else(
            || NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            |s| s.id,
        );
        self.families
            .claim_device(id, device)
            .map(Some)
            .map_err(|refusal| match refusal {
                DeviceRefusal::Limit(limit) => DeviceRefused {
                    reason: "device_limit",
                    message: format!(
                        "{limit} devices of your family are watching already, the most it may use at once"
                    ),
                    status: serde_json::json!({
                        "type": "status", "state": "refused", "reason": "device_limit",
                        "limit": limit,
                        "message": format!("{limit} devices of your family are watching already, the most it may use at once"),
                    }),
                },
                DeviceRefusal::Gone => DeviceRefused {
                    reason: "session_ended",
                    message: "this family's access was withdrawn".into(),
                    status: serde_json::json!({
                        "type": "status", "state": "refused", "reason": "session_ended",
                        "message": "this family's access was withdrawn",
                    }),
                },
            })
    }

    /// Notes that `who` was here now: a family's last visit, or a link token's
    /// last use, kept in the database.
    pub fn seen(&self, who: &Principal) {
        match &who.account {
            Account::Family(id) => self.family_seen(id),
            Account::Token(token) => self.token_seen(&token.id),
            Account::Role => {}
        }
    }

    /// [`Access::seen`] for a link token only: a snapshot's use. (Families'
    /// last visits count logins and video, not every snapshot.)
    pub fn seen_token(&self, who: &Principal) {
        if let Account::Token(token) = &who.account {
            self.token_seen(&token.id);
        }
    }

    fn token_seen(&self, id: &str) {
        let now = crate::store::unix_now();
        if self.tokens.touch(id, now) {
            if let Some(store) = &self.store {
                store.touch_token(id, now);
            }
        }
    }

    fn family_seen(&self, id: &str) {
        let now = crate::store::unix_now();
        self.families.touch(id, now);
        if let Some(store) = &self.store {
            store.touch_family(id, now);
        }
    }

    /// Fires when `who` loses `room` (the room is taken from its family, or the
    /// family revoked); `None` for principals whose rooms cannot change.
    pub fn room_access(&self, who: &Principal, room: &str) -> Option<watch::Receiver<bool>> {
        match &who.account {
            Account::Family(id) if !who.role.is_staff() => self.families.room_access(id, room),
            _ => None,
        }
    }

    /// With access control off, only a loopback host name is ours: otherwise a web
    /// page could rebind its own domain to 127.0.0.1 and act as staff (DNS
    /// rebinding). With codes on, any host is fine; the credentials decide.
    pub fn host_ok(&self, host: Option<&str>) -> bool {
        if self.enabled() {
            return true;
        }
        let Some((name, _)) = host.and_then(origin::split_host_port) else {
            return false;
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Checks a login form; on success returns the new session's token.
    pub fn login(
        &self,
        peer: IpAddr,
        name: &str,
        code: &str,
    ) -> Result<(String, Arc<Session>), LoginError> {
        let name = DisplayName::parse(name).map_err(LoginError::BadName)?;
        if !self.login_failures.has_token(&peer) {
            return Err(LoginError::RateLimited);
        }
        // A code pasted from a message often carries a stray space or line break.
        let code = code.trim();
        let codes = self.current_codes();
        let grant = match &codes {
            Some(codes) => self
                .limited_check(peer, codes, code)
                .map_err(|_| LoginError::Busy)?,
            None => Some(Grant::Role(Role::Staff)),
        };
        let (role, family, fingerprint) = match grant {
            None => return Err(LoginError::WrongCode),
            Some(Grant::Role(role)) => (
                role,
                None,
                codes.map(|c| c.fingerprint(role)).unwrap_or_default(),
            ),
            Some(Grant::Family(family)) => {
                (Role::Viewer, Some(family.id.clone()), family.code_hash)
            }
        };
        if let Some(id) = &family {
            self.family_seen(id);
        }
        self.sessions
            .create(role, name, family, fingerprint)
            .map_err(|_| LoginError::BadName("cannot create a session right now".into()))
    }

    /// The `Set-Cookie` value for a new session.
    pub fn session_cookie(&self, token: &str) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.sessions.ttl().as_secs()
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }

    /// Ends the session named in a `Cookie` header, if any; returns its key.
    pub fn logout(&self, cookie: Option<&str>) -> Option<[u8; 32]> {
        let token = cookie.and_then(|c| cookie_value(c, SESSION_COOKIE))?;
        self.sessions
            .end(token)
            .then(|| sessions::session_key(token))
    }

    /// Whether a browser request from `origin` may act on us. No `Origin` header
    /// means no browser (VLC, scripts), which CSRF and hijacking cannot abuse.
    pub fn origin_ok(&self, origin: Option<&str>, host: Option<&str>, http_port: u16) -> bool {
        match origin {
            None => true,
            Some(o) => origin::allowed(o, &self.allowed_origins, host, http_port, self.tls),
        }
    }

    /// Replaces the codes; sessions of a role whose code changed end, closing their sockets.
    fn generation(&self, role: Role) -> std::sync::MutexGuard<'_, watch::Sender<bool>> {
        self.code_generation[role as usize].locked()
    }

    pub fn set_codes(&self, codes: CodeSet) -> Vec<Role> {
        let new = Arc::new(AccessCodes::new(codes));
        let old = self.codes.writing().replace(new.clone());
        let changed: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|&r| {
                old.as_ref()
                    .is_none_or(|o| o.fingerprint(r) != new.fingerprint(r))
            })
            .collect();
        for role in &changed {
            let fresh = watch::Sender::new(false);
            let old = std::mem::replace(&mut *self.generation(*role), fresh);
            old.send_replace(true);
            let ended = self.sessions.end_role(*role);
            tracing::info!(
                role = role.as_str(),
                sessions = ended,
                "access code changed; sessions ended"
            );
        }
        changed
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The password of an `Authorization: Basic ...` header.
pub fn basic_password(header: &str) -> Option<String> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Audience;
    use codes::Code;

    fn set(viewer: &str, staff: Code) -> CodeSet {
        CodeSet {
            viewer: Some(Code::parse(viewer).unwrap()),
            staff,
            admin: Code::parse("admin-code").unwrap(),
        }
    }

    fn access() -> Access {
        Access::new(AccessSettings {
            codes: Some(set("viewer-code", Code::parse("staff-code").unwrap())),
            families: Families::new([families::Family {
                id: "f1".into(),
                name: "Familia Pérez".into(),
                rooms: vec!["camera".into()],
                max_devices: 3,
                created: 0,
                last_seen: None,
                code_hash: families::code_hash("perez-code"),
            }]),
            tokens: Tokens::default(),
            allowed_origins: vec![],
            session_ttl: Duration::from_secs(3600),
            tls: false,
            store: None,
        })
    }

    fn basic(code: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("anyone:{code}"))
        )
    }

    #[test]
    fn basic_auth_and_cookies_identify_roles() {
        let a = access();
        assert_eq!(
            a.authenticate(peer(), None, Some(&basic("viewer-code")))
                .unwrap()
                .role,
            Role::Viewer
        );
        assert_eq!(
            a.authenticate(peer(), None, Some(&basic("staff-code")))
                .unwrap()
                .role,
            Role::Staff
        );
        assert_eq!(
            a.authenticate(peer(), None, Some(&basic("nope-nope")))
                .unwrap_err(),
            Denied::Unauthorized
        );
        assert!(a.authenticate(peer(), None, None).is_err());
        let (token, _) = a
            .login("127.0.0.1".parse().unwrap(), "Ana", "viewer-code")
            .unwrap();
        let cookie = format!("other=1; {SESSION_COOKIE}={token}");
        let who = a.authenticate(peer(), Some(&cookie), None).unwrap();
        assert_eq!(
            (who.role, who.name.as_ref().map(DisplayName::as_str)),
            (Role::Viewer, Some("Ana"))
        );
        assert!(a.logout(Some(&cookie)).is_some());
        assert!(
            a.authenticate(peer(), Some(&cookie), None).is_err(),
            "logged-out cookie refused"
        );
    }

    fn peer() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn guessing_through_basic_auth_is_rate_limited_too() {
        let a = access();
        let guesser: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..LOGIN_FAILURE_BURST {
            assert!(a
                .authenticate(guesser, None, Some(&basic("guess-0000")))
                .is_err());
        }
        assert!(
            a.authenticate(guesser, None, Some(&basic("viewer-code")))
                .is_err(),
            "even the right code waits after five wrong ones"
        );
        assert!(a
            .authenticate(peer(), None, Some(&basic("viewer-code")))
            .is_ok());
    }

    #[test]
    fn a_code_that_cannot_be_checked_in_time_is_busy_and_not_counted() {
        let permits: &'static codes::Permits =
            Box::leak(Box::new(codes::Permits::new(1, Duration::from_millis(50))));
        let a = access();
        let hashed = Code::parse(&codes::hash_code("staff-secret").unwrap()).unwrap();
        *a.codes.writing() = Some(Arc::new(
            AccessCodes::new(set("viewer-code", hashed)).with_permits(permits),
        ));
        let family: IpAddr = "10.0.0.6".parse().unwrap();
        let held = permits.acquire().unwrap();
        for _ in 0..2 * LOGIN_FAILURE_BURST {
            assert_eq!(
                a.login(family, "Ana", "viewer-code").unwrap_err(),
                LoginError::Busy
            );
            assert_eq!(
                a.authenticate(family, None, Some(&basic("viewer-code")))
                    .unwrap_err(),
                Denied::Busy
            );
        }
        drop(held);
        let (_, session) = a
            .login(family, "Ana", "viewer-code")
            .expect("busy tries were not failures");
        assert_eq!(session.role, Role::Viewer);
    }

    /// Guesses queued for an argon2 turn were let through the failed-attempt
    /// limit before any had failed: a burst of concurrent guesses from one
    /// address must still get no more than the burst checked.
    #[test]
    fn concurrent_guesses_from_one_address_get_only_the_burst_checked() {
        use std::sync::mpsc;
        let permits: &'static codes::Permits =
            Box::leak(Box::new(codes::Permits::new(1, Duration::from_secs(60))));
        let mut a = access();
        // No refill: under qemu the checks below take long enough to earn a token back.
        a.login_failures = KeyedLimiter::new(LOGIN_FAILURE_BURST, 0.0, MAX_TRACKED_ADDRESSES);
        let a = Arc::new(a);
        let hashed = Code::parse(&codes::hash_code("staff-secret").unwrap()).unwrap();
        *a.codes.writing() = Some(Arc::new(
            AccessCodes::new(set("viewer-code", hashed)).with_permits(permits),
        ));
        let guesser: IpAddr = "10.0.0.7".parse().unwrap();
        // The hash is busy: every guess that gets through the limit queues here.
        let held = permits.acquire().unwrap();
        let (done_tx, done) = mpsc::channel();
        for i in 0..12 {
            let (a, done_tx) = (a.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let answer = a.authenticate(guesser, None, Some(&basic(&format!("guess-{i}"))));
                done_tx.send(answer.map(|p| p.role)).unwrap();
            });
        }
        // Seven are refused at once, without waiting for a turn...
        for _ in 0..12 - LOGIN_FAILURE_BURST {
            let answer = done
                .recv_timeout(Duration::from_secs(10))
                .expect("an answer");
            assert_eq!(answer, Err(Denied::Unauthorized));
        }
        // ...and the other five, exactly the burst, queue for a turn.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while permits.waiting() < LOGIN_FAILURE_BURST as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "the burst never queued"
            );
            std::thread::yield_now();
        }
        drop(held);
        for _ in 0..LOGIN_FAILURE_BURST {
            let answer = done
                .recv_timeout(Duration::from_secs(30))
                .expect("an answer");
            assert_eq!(answer, Err(Denied::Unauthorized));
        }
        assert_eq!(
            a.login(guesser, "x", "staff-secret").unwrap_err(),
            LoginError::RateLimited,
            "the address waits now, on every path"
        );
    }

    #[test]
    fn without_codes_only_loopback_host_names_are_served() {
        let off = Access::new(AccessSettings {
            codes: None,
            families: Families::default(),
            tokens: Tokens::default(),
            allowed_origins: vec![],
            session_ttl: Duration::from_secs(60),
            tls: false,
            store: None,
        });
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:9000",
            "LOCALHOST",
        ] {
            assert!(off.host_ok(Some(host)), "{host}");
        }
        for host in ["evil.example:8080", "192.168.1.20:8080", ""] {
            assert!(!off.host_ok(Some(host)), "{host}");
        }
        assert!(!off.host_ok(None));
        assert!(
            access().host_ok(Some("evil.example")),
            "codes decide when auth is on"
        );
    }

    #[test]
    fn failed_logins_are_rate_limited_per_address() {
        let a = access();
        let peer: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..LOGIN_FAILURE_BURST {
            assert_eq!(
                a.login(peer, "x", "wrong").unwrap_err(),
                LoginError::WrongCode
            );
        }
        assert_eq!(
            a.login(peer, "x", "viewer-code").unwrap_err(),
            LoginError::RateLimited
        );
        assert!(
            a.login("10.0.0.8".parse().unwrap(), "x", "viewer-code")
                .is_ok(),
            "other addresses unaffected"
        );
    }

    #[test]
    fn changing_a_code_ends_only_that_roles_sessions() {
        let a = access();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let (viewer, vs) = a.login(peer, "v", "viewer-code").unwrap();
        let (staff, _) = a.login(peer, "s", "staff-code").unwrap();
        let ended = vs.ended();
        let changed = a.set_codes(set("new-viewer", Code::parse("staff-code").unwrap()));
        assert_eq!(changed, vec![Role::Viewer]);
        assert!(*ended.borrow());
        assert!(a.sessions.get(&viewer).is_none());
        assert!(a.sessions.get(&staff).is_some());
    }

    #[test]
    fn a_family_code_opens_only_the_familys_rooms_and_ends_with_the_family() {
        let a = access();
        let (token, session) = a.login(peer(), "Ana", " perez-code ").unwrap();
        assert_eq!(
            (session.role, session.family.as_deref()),
            (Role::Viewer, Some("f1"))
        );
        let cookie = format!("{SESSION_COOKIE}={token}");
        let who = a.authenticate(peer(), Some(&cookie), None).unwrap();
        assert_eq!(who.account, Account::Family("f1".into()));
        assert_eq!(a.authorize(&who, Route::Watch("camera")), Ok(()));
        assert_eq!(a.authorize(&who, Route::Chat("camera")), Ok(()));
        for other in [
            Route::Watch("aula-2"),
            Route::Chat("aula-2"),
            Route::Broadcast(None),
            Route::Admin,
        ] {
            assert_eq!(
                a.authorize(&who, other).unwrap_err().status(),
                403,
                "{other:?}"
            );
        }
        let basic_who = a
            .authenticate(peer(), None, Some(&basic("perez-code")))
            .unwrap();
        assert_eq!(basic_who.account, Account::Family("f1".into()));
        let basic_ended = basic_who.ended.clone().unwrap();
        a.families.remove("f1");
        assert!(
            *basic_ended.borrow(),
            "a revoked family's Basic sockets close"
        );
        assert_eq!(
            a.authorize(&who, Route::Watch("camera")).unwrap_err(),
            Denied::Unauthorized
        );
        assert_eq!(
            a.login(peer(), "Ana", "perez-code").unwrap_err(),
            LoginError::WrongCode,
            "the code stops working at once"
        );
    }

    #[test]
    fn roles_reach_what_they_should() {
        let a = access();
        let who = |code: &str| a.authenticate(peer(), None, Some(&basic(code))).unwrap();
        let (viewer, staff, admin) = (who("viewer-code"), who("staff-code"), who("admin-code"));
        assert_eq!(admin.role, Role::Admin);
        for route in [Route::Watch("any"), Route::Chat("any"), Route::Pages] {
            for p in [&viewer, &staff, &admin] {
                assert_eq!(a.authorize(p, route), Ok(()), "{:?} {route:?}", p.role);
            }
        }
        assert!(a.authorize(&viewer, Route::Broadcast(Some("x"))).is_err());
        assert!(a.authorize(&staff, Route::Broadcast(Some("x"))).is_ok());
        assert!(a.authorize(&viewer, Route::Pause("x")).is_err());
        assert!(a.authorize(&staff, Route::Pause("x")).is_ok());
        assert!(a.authorize(&admin, Route::Pause("x")).is_ok());
        assert!(a.authorize(&staff, Route::Admin).is_err());
        assert!(a.authorize(&admin, Route::Admin).is_ok());
    }

    fn with_tokens() -> Access {
        let a = access();
        for (id, secret, rooms, scope) in [
            ("tv", "kc_view", &["camera"][..], Scope::View),
            ("tp", "kc_push", &["hall"][..], Scope::Push),
            ("tm", "kc_metrics", &[][..], Scope::Metrics),
        ] {
            a.tokens.insert(LinkToken {
                id: id.into(),
                name: format!("Token {id}"),
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                scope,
                created: 0,
                last_used: None,
                hash: tokens::token_hash(secret),
            });
        }
        a
    }

    fn knock<'a>(query: &'a str, authorization: Option<&'a str>) -> Knock<'a> {
        Knock {
            peer: peer(),
            host: Some("127.0.0.1:8080"),
            origin: None,
            cookie: None,
            authorization,
            query,
            http_port: 8080,
        }
    }

    #[test]
    fn a_link_token_opens_its_rooms_for_its_scope_and_nothing_else() {
        let a = with_tokens();
        let bearer = |t: &str| a.authenticate(peer(), None, Some(&format!("Bearer {t}")));
        let view = bearer("kc_view").unwrap();
        assert_eq!(
            (view.role, Audience::of(view.role)),
            (Role::Viewer, Audience::Family),
            "held at the gate like a family"
        );
        assert_eq!(a.authorize(&view, Route::Watch("camera")), Ok(()));
        for refused in [
            Route::Watch("hall"),
            Route::Chat("camera"),
            Route::Pages,
            Route::Broadcast(Some("camera")),
            Route::Broadcast(None),
            Route::Pause("camera"),
            Route::Admin,
        ] {
            assert_eq!(
                a.authorize(&view, refused).unwrap_err().status(),
                403,
                "{refused:?}"
            );
        }
        let push = bearer("kc_push").unwrap();
        assert_eq!(a.authorize(&push, Route::Broadcast(Some("hall"))), Ok(()));
        for refused in [
            Route::Broadcast(Some("aula-2")),
            Route::Broadcast(None),
            Route::Watch("hall"),
            Route::Chat("hall"),
            Route::Pages,
            Route::Pause("hall"),
            Route::Admin,
        ] {
            assert_eq!(
                a.authorize(&push, refused).unwrap_err().status(),
                403,
                "{refused:?}"
            );
        }
        let metrics = bearer("kc_metrics").unwrap();
        for refused in [Route::Watch("camera"), Route::Pages, Route::Admin] {
            assert_eq!(a.authorize(&metrics, refused).unwrap_err().status(), 403);
        }
        assert!(a.allows_metrics(Some("Bearer kc_metrics")));
        assert!(
            !a.allows_metrics(Some("Bearer kc_view")),
            "a view token is no metrics token"
        );
        assert!(!a.allows_metrics(Some("Bearer kc_nope")));
        assert!(!a.allows_metrics(Some(&basic("admin-code"))));
        assert!(!a.allows_metrics(None));
        assert_eq!(bearer("kc_nope").unwrap_err(), Denied::Unauthorized);

        let ended = view.ended.clone().unwrap();
        assert!(a.tokens.remove("tv"));
        assert!(*ended.borrow(), "its sockets close");
        assert_eq!(
            a.authorize(&view, Route::Watch("camera")).unwrap_err(),
            Denied::Unauthorized,
            "and what it opened before is refused"
        );
        assert_eq!(bearer("kc_view").unwrap_err(), Denied::Unauthorized);
    }

    #[test]
    fn a_token_in_the_url_counts_only_where_pictures_are_watched_or_fed() {
        let a = with_tokens();
        let who = a
            .admit(
                &knock("format=binary&token=kc_view", None),
                Route::Watch("camera"),
            )
            .unwrap();
        assert!(matches!(who.account, Account::Token(ref t) if t.id == "tv"));
        assert!(a
            .admit(
                &knock("token=kc_push", None),
                Route::Broadcast(Some("hall"))
            )
            .is_ok());
        assert_eq!(
            a.admit(&knock("token=kc_view", None), Route::Chat("camera"))
                .unwrap_err(),
            Denied::Unauthorized,
            "not read on the chat"
        );
        assert_eq!(
            a.admit_viewer(&knock("token=kc_view", None), "hall")
                .unwrap_err()
                .status(),
            403
        );
        // The same answers as the handshake gives for the other credentials.
        let staff = basic("staff-code");
        assert!(knock("", Some(&staff)).may_hash());
        assert!(!knock("token=kc_view", Some("Bearer kc_view")).may_hash());
        assert_eq!(
            a.admit_viewer(&knock("", Some(&staff)), "hall")
                .unwrap()
                .role,
            Role::Staff
        );
        assert_eq!(
            a.admit_viewer(&knock("", None), "camera").unwrap_err(),
            Denied::Unauthorized
        );
        let foreign = Knock {
            origin: Some("http://evil.example"),
            ..knock("token=kc_view", None)
        };
        assert_eq!(
            a.admit_viewer(&foreign, "camera").unwrap_err().status(),
            403
        );
    }

    #[test]
    fn cookie_is_hardened() {
        let c = access().session_cookie("t");
        for part in ["HttpOnly", "SameSite=Strict", "Max-Age=3600", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Secure"));
    }
}
