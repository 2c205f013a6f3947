//! Access codes: one per role, given plainly (flags, environment) or as an argon2
//! hash (TOML), or generated on first start and kept in the state directory.
//!
//! Checking a code against an argon2 hash is deliberately slow, and HTTP Basic
//! auth repeats the code on every request, so a successful check is remembered
//! by the SHA-256 of the presented code (in memory only) and forgotten when the
//! codes change.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use super::Role;
use crate::config::Config;
use crate::sync::Locked;

/// File in the state directory holding generated codes.
pub const GENERATED_FILE: &str = "access-codes.toml";
/// Remembered successful checks; bounded so a flood of codes cannot grow it.
const VERIFIED_CACHE: usize = 256;
/// Argon2 checks running at once. Each takes the hash's memory (19 MiB for a
/// `kindercam hash-code` hash), so a burst of Basic-auth guesses from many
/// addresses queues here instead of exhausting a Pi's RAM.
pub const MAX_CONCURRENT_HASHES: usize = 2;
/// How long a check waits for its turn before the client is told to retry.
const HASH_WAIT: Duration = Duration::from_secs(5);
static HASHING: Permits = Permits::new(MAX_CONCURRENT_HASHES, HASH_WAIT);
/// Unambiguous characters for generated codes (no 0/o, 1/l/i).
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// One role's code as configured.
#[derive(Clone, PartialEq, Eq)]
pub enum Code {
    Plain(String),
    /// A PHC string such as `$argon2id$v=19$...`.
    Hashed(String),
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a code, even in debug output.
        match self {
            Code::Plain(_) => f.write_str("Code::Plain(<hidden>)"),
            Code::Hashed(_) => f.write_str("Code::Hashed(<hidden>)"),
        }
    }
}

impl Code {
    /// Reads a configured value: a PHC argon2 string is a hash, anything else a plain code.
    pub fn parse(value: &str) -> Result<Code, String> {
        let value = value.trim();
        if value.starts_with("$argon2") {
            let hash =
                PasswordHash::new(value).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            if hash.salt.is_none() || hash.hash.is_none() {
                return Err(
                    "not a valid argon2 hash: salt or hash missing (use `kindercam hash-code`)"
                        .into(),
                );
            }
            Ok(Code::Hashed(value.to_owned()))
        } else if value.chars().count() < 6 {
            Err("an access code must have at least 6 characters".into())
        } else {
            Ok(Code::Plain(value.to_owned()))
        }
    }

    fn matches(&self, presented: &str, permits: &Permits) -> Result<bool, Busy> {
        match self {
            Code::Plain(code) => Ok(constant_time_eq(code.as_bytes(), presented.as_bytes())),
            Code::Hashed(phc) => {
                let Ok(hash) = PasswordHash::new(phc) else {
                    return Ok(false);
                };
                let _permit = permits.acquire().ok_or(Busy)?;
                Ok(Argon2::default()
                    .verify_password(presented.as_bytes(), &hash)
                    .is_ok())
            }
        }
    }
}

/// Too many code checks are waiting: the client should retry shortly (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("busy checking other access codes; try again in a moment")
    }
}

/// A counting semaphore for blocking threads (the callers are tiny_http's
/// workers and tokio's blocking pool, not async tasks), with a bounded wait.
#[derive(Debug)]
pub(crate) struct Permits {
    limit: usize,
    wait: Duration,
    state: Mutex<PermitState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct PermitState {
    in_use: usize,
    /// The most ever in use at once.
    peak: usize,
    /// Threads waiting for a permit now.
    waiting: usize,
}

pub(crate) struct Permit<'a>(&'a Permits);

impl Permits {
    pub(crate) const fn new(limit: usize, wait: Duration) -> Permits {
        Permits {
            limit,
            wait,
            state: Mutex::new(PermitState {
                in_use: 0,
                peak: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// A permit, or `None` if none came free within the wait.
    pub(crate) fn acquire(&self) -> Option<Permit<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.state.locked();
        state.waiting += 1;
        while state.in_use >= self.limit {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.waiting -= 1;
                return None;
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.waiting -= 1;
        state.in_use += 1;
        state.peak = state.peak.max(state.in_use);
        Some(Permit(self))
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.state.locked().waiting
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.state.locked().in_use -= 1;
        self.0.freed.notify_one();
    }
}

/// Whether two secrets are equal, in a time that does not tell how close they are.
pub fn same_secret(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hash both first so that the comparison time does not depend on the lengths either.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Hashes a code for pasting into the config (`kindercam hash-code`).
pub fn hash_code(code: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(code.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the code: {e}"))
}

/// The role codes in force. The viewer code is optional: families have codes of
/// their own, and a shared viewer code is kept for configs from before them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSet {
    pub viewer: Option<Code>,
    pub staff: Code,
    pub admin: Code,
}

/// The role codes, with a cache of recent successful checks.
#[derive(Debug)]
pub struct AccessCodes {
    codes: CodeSet,
    verified: Mutex<HashMap<[u8; 32], Role>>,
    /// Shared by every `AccessCodes` (they are replaced on reload): the global limit.
    permits: &'static Permits,
}

impl AccessCodes {
    pub fn new(codes: CodeSet) -> AccessCodes {
        AccessCodes {
            codes,
            verified: Mutex::new(HashMap::new()),
            permits: &HASHING,
        }
    }

    /// The same codes checked under other permits (tests hold them to stage a queue).
    #[cfg(test)]
    pub(crate) fn with_permits(mut self, permits: &'static Permits) -> AccessCodes {
        self.permits = permits;
        self
    }

    fn code(&self, role: Role) -> Option<&Code> {
        match role {
            Role::Viewer => self.codes.viewer.as_ref(),
            Role::Staff => Some(&self.codes.staff),
            Role::Admin => Some(&self.codes.admin),
        }
    }

    /// The role a presented code grants, if any; the highest role wins if codes
    /// are equal. `Busy` when a hashed code could not be checked in time.
    pub fn check(&self, presented: &str) -> Result<Option<Role>, Busy> {
        if presented.is_empty() {
            return Ok(None);
        }
        let key: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(role) = self.verified.locked().get(&key) {
            return Ok(Some(*role));
        }
        let mut granted = None;
        for role in [Role::Admin, Role::Staff, Role::Viewer] {
            if let Some(code) = self.code(role) {
                if code.matches(presented, self.permits)? {
                    granted = Some(role);
                    break;
                }
            }
        }
        let Some(role) = granted else {
            return Ok(None);
        };
        let mut verified = self.verified.locked();
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(key, role);
        Ok(Some(role))
    }

    /// A value that changes whenever a role's code changes; sessions record it.
    pub fn fingerprint(&self, role: Role) -> [u8; 32] {
        let text = match self.code(role) {
            Some(Code::Plain(c)) => format!("plain:{c}"),
            Some(Code::Hashed(h)) => format!("hashed:{h}"),
            None => "none".to_owned(),
        };
        Sha256::digest(text.as_bytes()).into()
    }
}

/// The role codes in force: configured ones, or those generated on first start
/// (an admin and a staff code; a viewer code only where an older version made
/// one). `None` when access control is off.
pub fn resolve(config: &Config) -> anyhow::Result<Option<CodeSet>> {
    let access = &config.access;
    if !access.auth {
        return Ok(None);
    }
    let codes = match (&access.staff_code, &access.admin_code) {
        (Some(staff), Some(admin)) => CodeSet {
            viewer: access.viewer_code.clone(),
            staff: staff.clone(),
            admin: admin.clone(),
        },
        (staff, admin) => {
            let state_dir = &config.storage.state_dir;
            let (generated, made) = load_or_generate(state_dir)?;
            let file = state_dir.join(GENERATED_FILE);
            if made.is_empty() {
                tracing::info!(file = %file.display(), "using the access codes generated on first start");
            } else {
                // The one time new codes are logged: the installer needs them once.
                tracing::warn!(
                    admin_code = %generated.admin_code.as_deref().unwrap_or_default(),
                    staff_code = %generated.staff_code,
                    file = %file.display(),
                    "generated access codes ({}); the admin code is the director's, for families \
                     and the viewing log; the staff code is the teachers'", made.join(", ")
                );
            }
            CodeSet {
                viewer: access
                    .viewer_code
                    .clone()
                    .or(generated.viewer_code.map(Code::Plain)),
                staff: staff.clone().unwrap_or(Code::Plain(generated.staff_code)),
                admin: admin.clone().unwrap_or_else(|| {
                    Code::Plain(generated.admin_code.expect("load_or_generate makes one"))
                }),
            }
        }
    };
    check_distinct(&codes)?;
    Ok(Some(codes))
}

/// Codes generated on first start, as stored in the state directory. Files
/// written before families existed hold a viewer and a staff code and no admin
/// code; one is added to them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Generated {
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_code: Option<String>,
    staff_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    viewer_code: Option<String>,
}

/// Loads the generated codes from `state_dir`, creating them (mode 0600) on first
/// use, and adding an admin code to a file from before there was one. Returns the
/// codes and which ones were made just now.
fn load_or_generate(state_dir: &Path) -> anyhow::Result<(Generated, Vec<&'static str>)> {
    let path: PathBuf = state_dir.join(GENERATED_FILE);
    let mut made = Vec::new();
    let mut generated = match fs::read_to_string(&path) {
        Ok(text) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                // Someone loosened it; tighten rather than refuse to start.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot restrict {}", path.display()))?;
            }
            toml::from_str::<Generated>(&text)
                .with_context(|| format!("invalid {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            made.push("staff");
            Generated {
                admin_code: None,
                staff_code: generate_code()?,
                viewer_code: None,
            }
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if generated.admin_code.is_none() {
        generated.admin_code = Some(generate_code()?);
        made.insert(0, "admin");
    }
    if !made.is_empty() {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let text = format!(
            "# Access codes generated by kindercam. Keep this file private.\n\
             # Set admin_code/staff_code in the config (or delete this file) to change them.\n{}",
            toml::to_string(&generated)?
        );
        crate::state_file::write_private(&path, text.as_bytes())
            .with_context(|| format!("cannot write {} (disk full?)", path.display()))?;
    }
    Ok((generated, made))
}

/// A code like `k7pq-m3xa-9wtr`: 12 characters of a 31-letter alphabet, ~59 bits.
pub fn generate_code() -> anyhow::Result<String> {
    let mut out = String::with_capacity(14);
    let mut i = 0;
    while out.len() < 14 {
        // Rejection sampling keeps every character equally likely.
        for b in random_bytes::<32>()? {
            if out.len() == 14 {
                break;
            }
            if usize::from(b) >= 256 - 256 % ALPHABET.len() {
                continue;
            }
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            i += 1;
        }
    }
    Ok(out)
}

pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(buf)
}

/// Refuses codes where two roles would share one code.
pub fn check_distinct(codes: &CodeSet) -> anyhow::Result<()> {
    let plain = |c: Option<&Code>| match c {
        Some(Code::Plain(p)) => Some(p.clone()),
        _ => None,
    };
    let (viewer, staff, admin) = (
        plain(codes.viewer.as_ref()),
        plain(Some(&codes.staff)),
        plain(Some(&codes.admin)),
    );
    if viewer.is_some() && viewer == staff {
        bail!("the viewer and staff codes must differ");
    }
    if admin.is_some() && (admin == staff || admin == viewer) {
        bail!("the admin code must differ from the viewer and staff codes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A viewer, a staff and the admin code `director-1`.
    fn set(viewer: &str, staff: &str) -> CodeSet {
        CodeSet {
            viewer: Some(Code::parse(viewer).unwrap()),
            staff: Code::parse(staff).unwrap(),
            admin: Code::parse("director-1").unwrap(),
        }
    }

    #[test]
    fn plain_and_hashed_codes_grant_their_roles() {
        let hashed = hash_code("staff-secret").unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        let codes = AccessCodes::new(set("parents-123", &hashed));
        assert_eq!(codes.check("parents-123"), Ok(Some(Role::Viewer)));
        assert_eq!(codes.check("director-1"), Ok(Some(Role::Admin)));
        assert_eq!(codes.check("staff-secret"), Ok(Some(Role::Staff)));
        assert_eq!(codes.check("staff-secret"), Ok(Some(Role::Staff)), "cached");
        assert_eq!(codes.check("wrong"), Ok(None));
        assert_eq!(codes.check(""), Ok(None));
    }

    /// Polls `probe` until true; panics after 10 s.
    fn wait_for(what: &str, probe: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probe() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn at_most_two_hash_checks_run_at_once_and_every_one_finishes() {
        use std::sync::{mpsc, Arc, Barrier};
        let permits = Arc::new(Permits::new(2, Duration::from_secs(60)));
        let (both_held, release) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
        let (done_tx, done) = mpsc::channel();
        for _ in 0..2 {
            let (permits, both_held, release, done_tx) = (
                permits.clone(),
                both_held.clone(),
                release.clone(),
                done_tx.clone(),
            );
            std::thread::spawn(move || {
                let permit = permits.acquire().unwrap();
                both_held.wait();
                release.wait();
                // Give the permit back before reporting done, or the final
                // count can see it still held.
                drop(permit);
                done_tx.send(()).unwrap();
            });
        }
        both_held.wait(); // two at once is allowed: it is not a mutex
        for _ in 0..6 {
            let (permits, done_tx) = (permits.clone(), done_tx.clone());
            std::thread::spawn(move || {
                drop(permits.acquire().unwrap());
                done_tx.send(()).unwrap();
            });
        }
        wait_for("six waiters", || permits.waiting() == 6);
        assert_eq!(
            permits.state.locked().in_use,
            2,
            "the six wait, none got in"
        );
        release.wait();
        for i in 0..8 {
            done.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("only {i} of 8 checks finished"));
        }
        let state = permits.state.locked();
        assert_eq!((state.peak, state.in_use, state.waiting), (2, 0, 0));
    }

    #[test]
    fn a_hashed_check_that_cannot_get_a_turn_is_busy_not_wrong() {
        let permits: &'static Permits =
            Box::leak(Box::new(Permits::new(1, Duration::from_millis(50))));
        let codes = AccessCodes::new(set("parents-123", &hash_code("staff-secret").unwrap()))
            .with_permits(permits);
        let held = permits.acquire().unwrap();
        assert_eq!(codes.check("staff-secret"), Err(Busy));
        assert_eq!(permits.waiting(), 0, "the timed-out waiter left the queue");
        drop(held);
        assert_eq!(codes.check("staff-secret"), Ok(Some(Role::Staff)));
    }

    #[test]
    fn short_codes_and_broken_hashes_are_refused() {
        assert!(Code::parse("abc").is_err());
        assert!(Code::parse("$argon2id$garbage").is_err());
    }

    #[test]
    fn generated_codes_are_stored_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("kc-codes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (g, made) = load_or_generate(&dir).unwrap();
        assert_eq!(
            made,
            ["admin", "staff"],
            "a first start makes an admin and a staff code"
        );
        assert_eq!(g.viewer_code, None, "families get their own codes");
        let admin = g.admin_code.clone().unwrap();
        assert_ne!(admin, g.staff_code);
        assert_eq!(admin.len(), 14);
        let mode = fs::metadata(dir.join(GENERATED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = load_or_generate(&dir).unwrap();
        assert!(made.is_empty());
        assert_eq!(
            (again.admin_code, again.staff_code),
            (Some(admin), g.staff_code)
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file written before families existed keeps its codes and gains an admin code.
    #[test]
    fn an_older_codes_file_keeps_its_codes_and_gains_an_admin_code() {
        let dir = std::env::temp_dir().join(format!("kc-codes-old-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let old = "# Access codes generated by kindercam on first start.\n\
                   viewer_code = \"abcd-efgh-jkmn\"\nstaff_code = \"pqrs-tuvw-xyz2\"\n";
        crate::state_file::write_private(&dir.join(GENERATED_FILE), old.as_bytes()).unwrap();
        let (g, made) = load_or_generate(&dir).unwrap();
        assert_eq!(made, ["admin"]);
        assert_eq!(
            g.viewer_code.as_deref(),
            Some("abcd-efgh-jkmn"),
            "parents keep their code"
        );
        assert_eq!(g.staff_code, "pqrs-tuvw-xyz2");
        let (again, made) = load_or_generate(&dir).unwrap();
        assert!(made.is_empty(), "the admin code was kept");
        assert_eq!(again.admin_code, g.admin_code);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_output_hides_codes() {
        let shown = format!("{:?}", Code::parse("secret-code").unwrap());
        assert!(!shown.contains("secret"));
    }
}
