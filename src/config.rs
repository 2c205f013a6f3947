//! The one immutable `Config`, resolved once at start from command-line flags,
//! `KINDERCAM_*` environment variables and an optional TOML file.
//!
//! Precedence is flags > environment > file > built-in defaults, per key. Every
//! value is validated here, and a refusal names both what is wrong and where the
//! value came from (`--quality`, `KINDERCAM_QUALITY` or `quality in FILE`), so an
//! installer can fix the right place. Nothing downstream re-reads the environment.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

/// Where the frames of the default `camera` stream come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A synthetic moving picture; needs no camera.
    TestPattern,
    /// A V4L2 device node such as `/dev/video0` or `/dev/v4l/by-id/...`.
    V4l2(PathBuf),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "test-pattern" {
            Ok(Source::TestPattern)
        } else if s.starts_with("/dev/") {
            Ok(Source::V4l2(PathBuf::from(s)))
        } else {
            Err(format!(
                "unknown source {s:?}: use \"test-pattern\" or a V4L2 device path such as /dev/video0"
            ))
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::TestPattern => f.write_str("test-pattern"),
            Source::V4l2(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The daemon's settings after merging every layer. Built once, then shared read-only.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_listen: SocketAddr,
    pub ws_listen: SocketAddr,
    pub source: Source,
    pub interval: Duration,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    pub state_dir: PathBuf,
    /// Serve pages from this directory instead of the embedded copy (development).
    pub web_dir: Option<PathBuf>,
    pub max_connections: usize,
    pub max_chat_bytes: usize,
    pub max_upload_bytes: usize,
    pub handshake_timeout: Duration,
    pub chat_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            ws_listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            source: Source::TestPattern,
            interval: Duration::from_millis(500),
            width: 640,
            height: 480,
            quality: 75,
            state_dir: default_state_dir(&|k| std::env::var(k).ok()),
            web_dir: None,
            max_connections: 1000,
            max_chat_bytes: 4 * 1024,
            max_upload_bytes: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            chat_history: 50,
        }
    }
}

/// systemd's `StateDirectory=` sets `STATE_DIRECTORY`; a developer's run falls back to XDG.
fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several colon-separated directories; the first is ours.
        return PathBuf::from(dir.split(':').next().unwrap_or(&dir));
    }
    if let Some(dir) = env("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("kindercam");
    }
    if let Some(home) = env("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".local/state/kindercam");
    }
    PathBuf::from("/var/lib/kindercam")
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
                  Precedence: flags > environment > file > defaults."
)]
pub struct Cli {
    /// Address for the HTTP pages [env: KINDERCAM_HTTP_LISTEN] [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Address for the WebSocket server [env: KINDERCAM_WS_LISTEN] [default: 0.0.0.0:9000]
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<String>,
    /// Frame source of the `camera` stream: `test-pattern` or a V4L2 device path
    /// [env: KINDERCAM_SOURCE] [default: test-pattern]
    #[arg(long, value_name = "SRC")]
    source: Option<String>,
    /// Milliseconds between frames [env: KINDERCAM_INTERVAL_MS] [default: 500]
    #[arg(long, value_name = "N")]
    interval_ms: Option<String>,
    /// Frame width in pixels [env: KINDERCAM_WIDTH] [default: 640]
    #[arg(long, value_name = "PX")]
    width: Option<String>,
    /// Frame height in pixels [env: KINDERCAM_HEIGHT] [default: 480]
    #[arg(long, value_name = "PX")]
    height: Option<String>,
    /// JPEG quality, 1-100 [env: KINDERCAM_QUALITY] [default: 75]
    #[arg(long, value_name = "1-100")]
    quality: Option<String>,
    /// Directory for persistent state [env: KINDERCAM_STATE_DIR]
    /// [default: $STATE_DIRECTORY, else $XDG_STATE_HOME/kindercam, else ~/.local/state/kindercam]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Serve pages from DIR instead of the copy built into the binary (development)
    /// [env: KINDERCAM_WEB_DIR]
    #[arg(long, value_name = "DIR")]
    web_dir: Option<String>,
    /// Most WebSocket connections at once; more are refused with 503
    /// [env: KINDERCAM_MAX_CONNECTIONS] [default: 1000]
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Largest chat message accepted, in bytes [env: KINDERCAM_MAX_CHAT_BYTES] [default: 4096]
    #[arg(long, value_name = "BYTES")]
    max_chat_bytes: Option<String>,
    /// Largest upload message (a JPEG data URL) accepted, in bytes
    /// [env: KINDERCAM_MAX_UPLOAD_BYTES] [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    max_upload_bytes: Option<String>,
    /// Milliseconds a client has to complete the WebSocket handshake
    /// [env: KINDERCAM_HANDSHAKE_TIMEOUT_MS] [default: 5000]
    #[arg(long, value_name = "MS")]
    handshake_timeout_ms: Option<String>,
    /// Chat messages replayed to a client that joins [env: KINDERCAM_CHAT_HISTORY] [default: 50]
    #[arg(long, value_name = "N")]
    chat_history: Option<String>,
    /// TOML file with any of the settings above [env: KINDERCAM_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// The optional TOML file. Unknown keys are refused so a typo cannot silently
/// leave a setting at its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_listen: Option<String>,
    ws_listen: Option<String>,
    source: Option<String>,
    interval_ms: Option<u64>,
    width: Option<u32>,
    height: Option<u32>,
    quality: Option<i64>,
    state_dir: Option<PathBuf>,
    web_dir: Option<PathBuf>,
    max_connections: Option<usize>,
    max_chat_bytes: Option<usize>,
    max_upload_bytes: Option<usize>,
    handshake_timeout_ms: Option<u64>,
    chat_history: Option<usize>,
}

/// One layer's value for a key, with the wording that says where it came from.
struct Found<T> {
    value: T,
    origin: String,
}

/// Looks a key up through the layers in precedence order.
struct Layers<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file_path: Option<PathBuf>,
}

impl Layers<'_> {
    /// The flag or environment string for `key`, if either layer sets it.
    fn text(&self, key: &str, flag: &Option<String>) -> Option<Found<String>> {
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

    fn file_origin(&self, key: &str) -> String {
        let path = self
            .file_path
            .as_deref()
            .unwrap_or(Path::new("config file"));
        format!("{key} in {}", path.display())
    }

    /// Resolves `key`: parse flag/env text, else take the file's typed value, else the
    /// default; then `check` it, naming the origin on failure.
    fn resolve<T, F>(
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

fn in_range<T: PartialOrd + fmt::Display + Copy>(lo: T, hi: T) -> impl Fn(T) -> Result<T, String> {
    move |v| {
        if v < lo || v > hi {
            Err(format!("must be between {lo} and {hi}"))
        } else {
            Ok(v)
        }
    }
}

fn socket_addr(s: String) -> Result<SocketAddr, String> {
    s.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an address like 0.0.0.0:8080 or [::]:8080"))
}

fn non_empty_path(p: PathBuf) -> Result<PathBuf, String> {
    if p.as_os_str().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(p)
    }
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
        let fc = match &file_path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let layers = Layers { env, file_path };
        let d = Config {
            state_dir: default_state_dir(env),
            ..Config::default()
        };

        let ms = |lo: u64, hi: u64| {
            let range = in_range(lo, hi);
            move |v: u64| range(v).map(Duration::from_millis)
        };
        let config = Config {
            http_listen: layers.resolve(
                "http_listen",
                &cli.http_listen,
                fc.http_listen,
                d.http_listen,
                socket_addr,
            )?,
            ws_listen: layers.resolve(
                "ws_listen",
                &cli.ws_listen,
                fc.ws_listen,
                d.ws_listen,
                socket_addr,
            )?,
            source: layers.resolve("source", &cli.source, fc.source, d.source, |s: String| {
                s.parse()
            })?,
            interval: layers.resolve(
                "interval_ms",
                &cli.interval_ms,
                fc.interval_ms,
                d.interval,
                ms(1, 3_600_000),
            )?,
            width: layers.resolve("width", &cli.width, fc.width, d.width, in_range(16, 8192))?,
            height: layers.resolve(
                "height",
                &cli.height,
                fc.height,
                d.height,
                in_range(16, 8192),
            )?,
            quality: layers.resolve("quality", &cli.quality, fc.quality, d.quality, |q: i64| {
                in_range(1, 100)(q).map(|q| q as u8)
            })?,
            state_dir: layers.resolve(
                "state_dir",
                &cli.state_dir,
                fc.state_dir,
                d.state_dir,
                non_empty_path,
            )?,
            web_dir: layers.resolve(
                "web_dir",
                &cli.web_dir,
                fc.web_dir,
                d.web_dir,
                |p: PathBuf| non_empty_path(p).map(Some),
            )?,
            max_connections: layers.resolve(
                "max_connections",
                &cli.max_connections,
                fc.max_connections,
                d.max_connections,
                in_range(1, 100_000),
            )?,
            max_chat_bytes: layers.resolve(
                "max_chat_bytes",
                &cli.max_chat_bytes,
                fc.max_chat_bytes,
                d.max_chat_bytes,
                in_range(64, 64 * 1024),
            )?,
            max_upload_bytes: layers.resolve(
                "max_upload_bytes",
                &cli.max_upload_bytes,
                fc.max_upload_bytes,
                d.max_upload_bytes,
                in_range(1024, 64 * 1024 * 1024),
            )?,
            handshake_timeout: layers.resolve(
                "handshake_timeout_ms",
                &cli.handshake_timeout_ms,
                fc.handshake_timeout_ms,
                d.handshake_timeout,
                ms(100, 120_000),
            )?,
            chat_history: layers.resolve(
                "chat_history",
                &cli.chat_history,
                fc.chat_history,
                d.chat_history,
                in_range(0, 1000),
            )?,
        };
        Ok(config)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    match toml::from_str::<FileConfig>(&text) {
        Ok(file) => Ok(file),
        Err(e) => bail!("invalid config file {}: {e}", path.display()),
    }
}
