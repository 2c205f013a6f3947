//! The one immutable `Config`, resolved once at start from command-line flags,
//! `KINDERCAM_*` environment variables and an optional TOML file.
//!
//! Precedence is flags > environment > file > built-in defaults, per key. Every
//! value is validated here, and a refusal names both what is wrong and where the
//! value came from (`--quality`, `KINDERCAM_QUALITY` or `quality in FILE`), so an
//! installer can fix the right place. Nothing downstream re-reads the environment.
//!
//! `Config` is a struct of sections (`listen`, `capture`, `storage`, `limits`,
//! `access`, `push`, `cluster`), one file each, holding its flags, variables, file keys, defaults,
//! checks and tests side by side and resolving itself through `layers::Layers`,
//! so that adding a key is one edit in one file. This file assembles the sections,
//! names the file's keys for `file.rs` to check, and keeps the rules that span
//! sections (`check_combinations`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::bail;
use clap::{CommandFactory, FromArgMatches, Parser};

mod access;
mod capture;
mod cluster;
mod file;
mod layers;
mod limits;
mod listen;
mod push;
mod storage;

pub use access::AccessConfig;
pub use capture::{Camera, CaptureConfig, CaptureFormat, Source, MAX_CAMERAS};
pub use cluster::ClusterConfig;
pub use limits::LimitsConfig;
pub use listen::ListenConfig;
pub use push::{Push, PushConfig, PushUrl};
pub use storage::StorageConfig;

use layers::Layers;

/// The daemon's settings after merging every layer. Built once, then shared read-only.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub listen: ListenConfig,
    pub capture: CaptureConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub access: AccessConfig,
    pub push: PushConfig,
    pub cluster: ClusterConfig,
}

/// Command-line flags. Values stay strings here so that one parser, shared with
/// the environment layer, produces the same error wording for both.
#[derive(Debug, Parser)]
#[command(
    name = "kindercam",
    version,
    about = "Classroom camera server: live frames and chat over WebSocket, pages over HTTP.",
    after_help = "Every flag can also be set with the environment variable shown, or as the \
                  key of the same name (with underscores) in the TOML file given by --config. \
                  Precedence: flags > environment > file > defaults.\n\n\
                  `kindercam hash-code [CODE]` prints an argon2 hash of an access code for the \
                  TOML file (reads the code from standard input when none is given). \
                  SIGHUP re-reads the access codes: sessions of a changed code end."
)]
pub struct Cli {
    #[command(flatten)]
    listen: listen::ListenFlags,
    #[command(flatten)]
    capture: capture::CaptureFlags,
    #[command(flatten)]
    storage: storage::StorageFlags,
    #[command(flatten)]
    limits: limits::LimitsFlags,
    #[command(flatten)]
    access: access::AccessFlags,
    #[command(flatten)]
    push: push::PushFlags,
    #[command(flatten)]
    cluster: cluster::ClusterFlags,
    /// TOML file with any of the settings above [env: KINDERCAM_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

impl Config {
    /// Builds the config from the process's real arguments and environment.
    /// Prints help or version and exits when asked to, like any CLI.
    pub fn from_process() -> anyhow::Result<Config> {
        Config::load(std::env::args_os(), &|k| std::env::var(k).ok())
    }

    /// Builds the config from explicit arguments and an environment lookup, so that
    /// tests can exercise precedence without touching the process environment.
    pub fn load<I, A>(args: I, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config>
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString> + Clone,
    {
        let matches = Cli::command()
            .try_get_matches_from(args)
            .unwrap_or_else(|e| e.exit());
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        Config::resolve(&cli, env)
    }

    fn resolve(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let file_path = cli.config.clone().or_else(|| {
            env("KINDERCAM_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let file = match &file_path {
            Some(path) => Some(file::ConfigFile::open(path, file_keys())?),
            None => None,
        };
        let layers = Layers { env, file };
        let capture = CaptureConfig::resolve(&cli.capture, &layers)?;
        let push = PushConfig::resolve(
            &cli.push,
            &layers,
            &capture.cameras,
            cli.capture.cameras_from_file(&layers),
        )?;
        let config = Config {
            listen: ListenConfig::resolve(&cli.listen, &layers)?,
            capture,
            storage: StorageConfig::resolve(&cli.storage, &layers)?,
            limits: LimitsConfig::resolve(&cli.limits, &layers)?,
            access: AccessConfig::resolve(&cli.access, &layers)?,
            push,
            cluster: ClusterConfig::resolve(&cli.cluster, &layers)?,
        };
        config.check_combinations()?;
        Ok(config)
    }
}

impl Config {
    /// Rules that involve more than one section.
    fn check_combinations(&self) -> anyhow::Result<()> {
        let loopback_only =
            self.listen.http_listen.ip().is_loopback() && self.listen.ws_listen.ip().is_loopback();
        if !self.access.auth && !loopback_only {
            bail!(
                "auth = \"off\" is only allowed when both listeners are on loopback (127.0.0.1 or [::1]); \
                 --http-listen is {} and --ws-listen is {}",
                self.listen.http_listen,
                self.listen.ws_listen
            );
        }
        Ok(())
    }
}

/// Every key the TOML file may hold (`[[camera]]` tables under `camera`); any
/// other key is refused.
pub fn file_keys() -> &'static [&'static str] {
    static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        [
            file::keys_of::<listen::ListenFile>(),
            file::keys_of::<capture::CaptureFile>(),
            file::keys_of::<storage::StorageFile>(),
            file::keys_of::<limits::LimitsFile>(),
            file::keys_of::<access::AccessFile>(),
            file::keys_of::<push::PushFile>(),
            file::keys_of::<cluster::ClusterFile>(),
        ]
        .concat()
    });
    &KEYS
}

/// What the sections' unit tests share: a load without the process environment.
#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    use super::Config;

    /// Loads with loopback listeners and access control off (unless `env` sets
    /// `KINDERCAM_AUTH`); `args` come after those, so they may override them.
    pub(super) fn load(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .or_else(|| (k == "KINDERCAM_AUTH").then(|| "off".to_owned()))
        };
        let mut all = vec![
            "kindercam",
            "--http-listen",
            "127.0.0.1:0",
            "--ws-listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        Config::load(all, &lookup)
    }

    /// A TOML file in its own temporary directory, removed on drop.
    pub(super) struct TomlFile(PathBuf);

    impl TomlFile {
        pub(super) fn new(test: &str, text: &str) -> TomlFile {
            let dir = std::env::temp_dir().join(format!("kc-cfg-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = TomlFile(dir.join("kindercam.toml"));
            file.write(text);
            file
        }

        pub(super) fn write(&self, text: &str) {
            std::fs::write(&self.0, text).unwrap();
        }

        pub(super) fn path(&self) -> &str {
            self.0.to_str().expect("temp paths are UTF-8")
        }
    }

    impl Drop for TomlFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap_or(Path::new("")));
        }
    }
}
