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

/// The codes of both roles, with a cache of recent successful checks.
#[derive(Debug)]
pub struct AccessCodes {
    viewer: Code,
    staff: Code,
    verified: Mutex<HashMap<[u8; 32], Role>>,
    /// Shared by every `AccessCodes` (they are replaced on reload): the global limit.
    permits: &'static Permits,
}

impl AccessCodes {
    pub fn new(viewer: Code, staff: Code) -> AccessCodes {
        AccessCodes {
            viewer,
            staff,
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

    /// The role a presented code grants, if any. Staff wins if both codes are equal.
    /// `Busy` when a hashed code could not be checked in time.
    pub fn check(&self, presented: &str) -> Result<Option<Role>, Busy> {
        if presented.is_empty() {
            return Ok(None);
        }
        let key: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(role) = self.verified.locked().get(&key) {
            return Ok(Some(*role));
        }
        let role = if self.staff.matches(presented, self.permits)? {
            Role::Staff
        } else if self.viewer.matches(presented, self.permits)? {
            Role::Viewer
        } else {
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
        let code = match role {
            Role::Viewer => &self.viewer,
            Role::Staff => &self.staff,
        };
        let text = match code {
            Code::Plain(c) => format!("plain:{c}"),
            Code::Hashed(h) => format!("hashed:{h}"),
        };
        Sha256::digest(text.as_bytes()).into()
    }
}

/// The access codes in force: configured ones, or those generated on first start.
/// `None` when access control is off.
pub fn resolve(config: &Config) -> anyhow::Result<Option<(Code, Code)>> {
    if !config.access.auth {
        return Ok(None);
    }
    let (viewer, staff) = match (&config.access.viewer_code, &config.access.staff_code) {
        (Some(v), Some(s)) => (v.clone(), s.clone()),
        (v, s) => {
            let (gv, gs, fresh) = load_or_generate(&config.storage.state_dir)?;
            let file = config.storage.state_dir.join(GENERATED_FILE);
            if fresh {
                // The one time codes are logged: the installer needs them once.
                tracing::warn!(
                    viewer_code = %gv, staff_code = %gs, file = %file.display(),
                    "generated access codes; give the viewer code to parents and keep the staff code for staff"
                );
            } else {
                tracing::info!(file = %file.display(), "using the access codes generated on first start");
            }
            (
                v.clone().unwrap_or(Code::Plain(gv)),
                s.clone().unwrap_or(Code::Plain(gs)),
            )
        }
    };
    check_distinct(&viewer, &staff)?;
    Ok(Some((viewer, staff)))
}

/// Codes generated on first start, as stored in the state directory.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Generated {
    viewer_code: String,
    staff_code: String,
}

/// Loads the generated codes from `state_dir`, creating them (mode 0600) on first
/// use. Returns the codes and whether they were created just now.
pub fn load_or_generate(state_dir: &Path) -> anyhow::Result<(String, String, bool)> {
    let path: PathBuf = state_dir.join(GENERATED_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                // Someone loosened it; tighten rather than refuse to start.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot restrict {}", path.display()))?;
            }
            let g: Generated =
                toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
            return Ok((g.viewer_code, g.staff_code, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let generated = Generated {
        viewer_code: generate_code()?,
        staff_code: generate_code()?,
    };
    let text = format!(
        "# Access codes generated by kindercam on first start. Keep this file private.\n\
         # Set viewer_code/staff_code in the config (or delete this file) to change them.\n{}",
        toml::to_string(&generated)?
    );
    crate::state_file::write_private(&path, text.as_bytes())
        .with_context(|| format!("cannot write {} (disk full?)", path.display()))?;
    Ok((generated.viewer_code, generated.staff_code, true))
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

/// Refuses configs where the two roles would share one code.
pub fn check_distinct(viewer: &Code, staff: &Code) -> anyhow::Result<()> {
    if let (Code::Plain(v), Code::Plain(s)) = (viewer, staff) {
        if v == s {
            bail!("the viewer and staff codes must differ");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_codes_grant_their_roles() {
        let hashed = hash_code("staff-secret").unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        let codes = AccessCodes::new(
            Code::parse("parents-123").unwrap(),
            Code::parse(&hashed).unwrap(),
        );
        assert_eq!(codes.check("parents-123"), Ok(Some(Role::Viewer)));
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
        let codes = AccessCodes::new(
            Code::parse("parents-123").unwrap(),
            Code::parse(&hash_code("staff-secret").unwrap()).unwrap(),
        )
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
        let (v, s, fresh) = load_or_generate(&dir).unwrap();
        assert!(fresh);
        assert_ne!(v, s);
        assert_eq!(v.len(), 14);
        let mode = fs::metadata(dir.join(GENERATED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (v2, s2, fresh2) = load_or_generate(&dir).unwrap();
        assert_eq!((v2, s2, fresh2), (v, s, false));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_output_hides_codes() {
        let shown = format!("{:?}", Code::parse("secret-code").unwrap());
        assert!(!shown.contains("secret"));
    }
}
