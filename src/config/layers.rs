//! The precedence machinery every setting goes through: a key's value comes from
//! its flag, else its `KINDERCAM_*` variable, else the TOML file, else its default,
//! and a refusal names the layer it came from (`--quality`, `KINDERCAM_QUALITY` or
//! `quality in FILE`). Kept apart from the settings so that each section of the
//! config resolves its keys the same way, with the same wording.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::file::ConfigFile;

/// One layer's value for a key, with the wording that says where it came from.
pub(super) struct Found<T> {
    pub(super) value: T,
    pub(super) origin: String,
}

/// Looks a key up through the layers in precedence order.
pub(super) struct Layers<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) file: Option<ConfigFile>,
}

impl Layers<'_> {
    /// The flag or environment string for `key`, if either layer sets it.
    pub(super) fn text(&self, key: &str, flag: &Option<String>) -> Option<Found<String>> {
        if let Some(v) = flag {
            return Some(Found {
                value: v.clone(),
                origin: format!("--{}", key.replace('_', "-")),
            });
        }
        let var = format!("KINDERCAM_{}", key.to_ascii_uppercase());
        (self.env)(&var)
            .filter(|v| !v.is_empty())
            .map(|value| Found { value, origin: var })
    }

    pub(super) fn file_origin(&self, key: &str) -> String {
        let path = match &self.file {
            Some(file) => file.path.as_path(),
            None => Path::new("config file"),
        };
        format!("{key} in {}", path.display())
    }

    /// A section's keys from the file; all unset without a file.
    pub(super) fn file<T: DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        match &self.file {
            Some(file) => file.section(),
            None => Ok(T::default()),
        }
    }

    /// Resolves `key`: parse flag/env text, else take the file's typed value, else the
    /// default; then `check` it, naming the origin on failure.
    pub(super) fn resolve<T, F>(
        &self,
        key: &str,
        flag: &Option<String>,
        file: Option<F>,
        default: T,
        check: impl Fn(F) -> Result<T, String>,
    ) -> anyhow::Result<T>
    where
        F: FromStr,
        F::Err: fmt::Display,
    {
        if let Some(found) = self.text(key, flag) {
            let parsed = found
                .value
                .trim()
                .parse::<F>()
                .map_err(|e| e.to_string())
                .and_then(&check);
            return parsed.map_err(|why| {
                anyhow::anyhow!("invalid {} {:?}: {why}", found.origin, found.value)
            });
        }
        if let Some(value) = file {
            return check(value)
                .map_err(|why| anyhow::anyhow!("invalid {}: {why}", self.file_origin(key)));
        }
        Ok(default)
    }
}

pub(super) fn in_range<T: PartialOrd + fmt::Display + Copy>(
    lo: T,
    hi: T,
) -> impl Fn(T) -> Result<T, String> {
    move |v| {
        if v < lo || v > hi {
            Err(format!("must be between {lo} and {hi}"))
        } else {
            Ok(v)
        }
    }
}

pub(super) fn socket_addr(s: String) -> Result<SocketAddr, String> {
    s.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an address like 0.0.0.0:8080 or [::]:8080"))
}

pub(super) fn non_empty_path(p: PathBuf) -> Result<PathBuf, String> {
    if p.as_os_str().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(p)
    }
}

pub(super) fn parse_bool(v: String) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// A count of milliseconds within `lo..=hi`, as a `Duration`.
pub(super) fn millis(lo: u64, hi: u64) -> impl Fn(u64) -> Result<Duration, String> {
    let range = in_range(lo, hi);
    move |v| range(v).map(Duration::from_millis)
}
