//! The one immutable `Config`, resolved once at start from command-line flags,
//! `KINDERCAM_*` environment variables and an optional TOML file.
//!
//! Precedence is flags > environment > file > built-in defaults, per key. Every
//! value is validated here, and a refusal names both what is wrong and where the
//! value came from (`--quality`, `KINDERCAM_QUALITY` or `quality in FILE`), so an
//! installer can fix the right place. Nothing downstream re-reads the environment.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::bail;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

mod access;
mod file;
mod layers;
mod limits;
mod listen;
mod storage;

pub use access::AccessConfig;
pub use limits::LimitsConfig;
pub use listen::ListenConfig;
pub use storage::StorageConfig;

use layers::{in_range, millis, parse_bool, Layers};

/// Where the frames of the default `camera` stream come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A synthetic moving picture; needs no camera.
    TestPattern,
    /// A V4L2 device node such as `/dev/video0` or `/dev/v4l/by-id/...`.
    V4l2(PathBuf),
    /// `exec:COMMAND`: a shell command writing an MJPEG stream to its stdout, such as
    /// `rpicam-vid -t 0 --codec mjpeg -o -` for a Pi CSI camera under libcamera.
    Exec(String),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "test-pattern" {
            Ok(Source::TestPattern)
        } else if s.starts_with("/dev/") {
            Ok(Source::V4l2(PathBuf::from(s)))
        } else if let Some(command) = s.strip_prefix("exec:") {
            match command.trim() {
                "" => Err(
                    "exec: needs a command, e.g. \"exec:rpicam-vid -t 0 --codec mjpeg -o -\""
                        .into(),
                ),
                command => Ok(Source::Exec(command.to_owned())),
            }
        } else {
            Err(format!(
                "unknown source {s:?}: use \"test-pattern\", a V4L2 device path such as /dev/video0 \
                 or /dev/v4l/by-id/..., or \"exec:COMMAND\" for a command that writes MJPEG to stdout"
            ))
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::TestPattern => f.write_str("test-pattern"),
            Source::V4l2(path) => write!(f, "{}", path.display()),
            Source::Exec(command) => write!(f, "exec:{command}"),
        }
    }
}

/// The pixel format asked of a V4L2 camera (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// MJPEG at the requested size if offered (passed through), else the best raw format.
    Auto,
    Mjpeg,
    Yuyv,
    Uyvy,
    Nv12,
    Yuv420,
    Rgb24,
    Grey,
}

impl CaptureFormat {
    pub const NAMES: &'static str = "auto, mjpeg, yuyv, uyvy, nv12, yuv420, rgb24 or grey";
}

impl FromStr for CaptureFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => CaptureFormat::Auto,
            "mjpeg" | "mjpg" | "jpeg" => CaptureFormat::Mjpeg,
            "yuyv" | "yuy2" => CaptureFormat::Yuyv,
            "uyvy" => CaptureFormat::Uyvy,
            "nv12" => CaptureFormat::Nv12,
            "yuv420" | "yu12" | "i420" => CaptureFormat::Yuv420,
            "rgb24" | "rgb3" | "rgb" => CaptureFormat::Rgb24,
            "grey" | "gray" | "y8" => CaptureFormat::Grey,
            other => return Err(format!("unknown format {other:?}: use {}", Self::NAMES)),
        })
    }
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureFormat::Auto => "auto",
            CaptureFormat::Mjpeg => "mjpeg",
            CaptureFormat::Yuyv => "yuyv",
            CaptureFormat::Uyvy => "uyvy",
            CaptureFormat::Nv12 => "nv12",
            CaptureFormat::Yuv420 => "yuv420",
            CaptureFormat::Rgb24 => "rgb24",
            CaptureFormat::Grey => "grey",
        })
    }
}

/// Most cameras one daemon feeds; each costs a capture thread and its buffers.
pub const MAX_CAMERAS: usize = 8;

/// One frame source and the hub stream it feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Camera {
    /// Stream name: `camera` for the first unnamed `--source`.
    pub name: String,
    pub source: Source,
    pub format: CaptureFormat,
    pub width: u32,
    pub height: u32,
}

/// The daemon's settings after merging every layer. Built once, then shared read-only.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub access: AccessConfig,
    /// The source of the `camera` stream (or of the first camera if none is called so).
    pub source: Source,
    /// Every camera with its stream name; never empty.
    pub cameras: Vec<Camera>,
    pub format: CaptureFormat,
    /// Open cameras only while somebody watches.
    pub on_demand: bool,
    /// Print the V4L2 devices and exit.
    pub list_devices: bool,
    pub interval: Duration,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ListenConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            access: AccessConfig::default(),
            source: Source::TestPattern,
            cameras: vec![Camera {
                name: crate::hub::CAMERA.to_owned(),
                source: Source::TestPattern,
                format: CaptureFormat::Auto,
                width: 640,
                height: 480,
            }],
            format: CaptureFormat::Auto,
            on_demand: true,
            list_devices: false,
            interval: Duration::from_millis(500),
            width: 640,
            height: 480,
            quality: 75,
        }
    }
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
    limits: limits::LimitsFlags,
    #[command(flatten)]
    storage: storage::StorageFlags,
    #[command(flatten)]
    access: access::AccessFlags,
    /// Frame source: `test-pattern`, a V4L2 device (/dev/video0, or /dev/v4l/by-id/...
    /// which survives replugging), or `exec:COMMAND` writing MJPEG to stdout (Pi CSI:
    /// "exec:rpicam-vid -t 0 --codec mjpeg -o -"). Repeat as NAME=SRC for more cameras,
    /// each served as stream NAME; an unnamed one is the `camera` stream
    /// [env: KINDERCAM_SOURCE] [default: test-pattern]
    #[arg(long, value_name = "[NAME=]SRC")]
    source: Vec<String>,
    /// Camera pixel format: auto (MJPEG passed through if offered, else raw encoded), mjpeg,
    /// yuyv, uyvy, nv12, yuv420, rgb24 or grey [env: KINDERCAM_FORMAT] [default: auto]
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// Open cameras only while somebody watches (true/false) [env: KINDERCAM_ON_DEMAND]
    /// [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    on_demand: Option<String>,
    /// List the V4L2 devices with their formats, sizes and frame rates, then exit
    #[arg(long)]
    list_devices: bool,
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
    /// TOML file with any of the settings above [env: KINDERCAM_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// The optional TOML file. Unknown keys are refused (by `file::ConfigFile::open`,
/// against `file_keys`) so a typo cannot silently leave a setting at its default.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    source: Option<String>,
    format: Option<String>,
    on_demand: Option<bool>,
    /// `[[camera]]` tables.
    camera: Option<Vec<FileCamera>>,
    interval_ms: Option<u64>,
    width: Option<u32>,
    height: Option<u32>,
    quality: Option<i64>,
}

/// A `[[camera]]` table: a named source, optionally with its own format and size.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCamera {
    name: String,
    source: String,
    format: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
}

/// The file's camera settings, resolved after everything else.
struct FileCameras {
    source: Option<String>,
    tables: Vec<FileCamera>,
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
        let mut fc: FileConfig = layers.file()?;
        let d = Config::default();

        // Taken out first: the camera list is resolved last, from the settings below.
        let file_cameras = FileCameras {
            source: fc.source.take(),
            tables: fc.camera.take().unwrap_or_default(),
        };
        let mut config = Config {
            listen: ListenConfig::resolve(&cli.listen, &layers)?,
            limits: LimitsConfig::resolve(&cli.limits, &layers)?,
            storage: StorageConfig::resolve(&cli.storage, &layers)?,
            access: AccessConfig::resolve(&cli.access, &layers)?,
            source: d.source,
            cameras: Vec::new(),
            format: layers.resolve(
                "format",
                &cli.format,
                fc.format.clone(),
                d.format,
                |s: String| s.parse(),
            )?,
            on_demand: layers.resolve(
                "on_demand",
                &cli.on_demand,
                fc.on_demand.map(|b| b.to_string()),
                d.on_demand,
                parse_bool,
            )?,
            list_devices: cli.list_devices,
            interval: layers.resolve(
                "interval_ms",
                &cli.interval_ms,
                fc.interval_ms,
                d.interval,
                millis(1, 3_600_000),
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
        };
        config.cameras = layers.cameras(&cli.source, file_cameras, &config)?;
        config.source = config
            .cameras
            .iter()
            .find(|c| c.name == crate::hub::CAMERA)
            .unwrap_or(&config.cameras[0])
            .source
            .clone();
        config.check_combinations()?;
        Ok(config)
    }
}

impl Config {
    /// Rules that involve more than one setting.
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

/// Splits `NAME=SRC`; text whose part before `=` is not a stream name (an exec
/// command with `=` in it) is a source without a name.
fn split_named(text: &str) -> (Option<&str>, &str) {
    let text = text.trim();
    match text.split_once('=') {
        Some((name, src)) if crate::hub::valid_stream_name(name.trim()) => {
            (Some(name.trim()), src.trim())
        }
        _ => (None, text),
    }
}

impl Layers<'_> {
    /// The cameras: repeated `--source` flags, else `KINDERCAM_SOURCE`, else the file's
    /// `source` plus its `[[camera]]` tables, else the test pattern. A list from a higher
    /// layer replaces the lower layers' list whole.
    fn cameras(
        &self,
        flags: &[String],
        fc: FileCameras,
        c: &Config,
    ) -> anyhow::Result<Vec<Camera>> {
        let global = |name: &str, source: Source| Camera {
            name: name.to_owned(),
            source,
            format: c.format,
            width: c.width,
            height: c.height,
        };
        let mut cameras: Vec<(Camera, String)> = Vec::new();
        let unnamed = |text: &str, origin: String| -> anyhow::Result<(Camera, String)> {
            let (name, src) = split_named(text);
            let source = src
                .parse::<Source>()
                .map_err(|why| anyhow::anyhow!("invalid {origin} {text:?}: {why}"))?;
            Ok((global(name.unwrap_or(crate::hub::CAMERA), source), origin))
        };
        if !flags.is_empty() {
            for text in flags {
                cameras.push(unnamed(text, "--source".into())?);
            }
        } else if let Some(v) = (self.env)("KINDERCAM_SOURCE").filter(|v| !v.trim().is_empty()) {
            cameras.push(unnamed(&v, "KINDERCAM_SOURCE".into())?);
        } else {
            if let Some(text) = &fc.source {
                cameras.push(unnamed(text, self.file_origin("source"))?);
            }
            for (i, table) in fc.tables.iter().enumerate() {
                let origin = format!(
                    "[[camera]] #{} ({:?}) in {}",
                    i + 1,
                    table.name,
                    self.file_origin("").trim_start()
                );
                if !crate::hub::valid_stream_name(&table.name) {
                    bail!("invalid {origin}: name must be 1-32 characters of a-z, 0-9, _ and -");
                }
                let source = table
                    .source
                    .parse::<Source>()
                    .map_err(|why| anyhow::anyhow!("invalid source of {origin}: {why}"))?;
                let mut camera = global(&table.name, source);
                if let Some(f) = &table.format {
                    camera.format = f
                        .parse()
                        .map_err(|why| anyhow::anyhow!("invalid format of {origin}: {why}"))?;
                }
                if let Some(w) = table.width {
                    camera.width = in_range(16, 8192)(w)
                        .map_err(|why| anyhow::anyhow!("invalid width of {origin}: {why}"))?;
                }
                if let Some(h) = table.height {
                    camera.height = in_range(16, 8192)(h)
                        .map_err(|why| anyhow::anyhow!("invalid height of {origin}: {why}"))?;
                }
                cameras.push((camera, origin));
            }
        }
        if cameras.is_empty() {
            cameras.push((
                global(crate::hub::CAMERA, Source::TestPattern),
                "default".into(),
            ));
        }
        if cameras.len() > MAX_CAMERAS {
            bail!(
                "{} cameras configured; at most {MAX_CAMERAS} are supported",
                cameras.len()
            );
        }
        for (i, (a, origin)) in cameras.iter().enumerate() {
            for (b, other) in &cameras[..i] {
                if a.name == b.name {
                    bail!(
                        "two sources feed the stream {:?} ({origin} and {other}): name them, \
                         e.g. --source hall=/dev/video2",
                        a.name
                    );
                }
                if a.source == b.source && a.source != Source::TestPattern {
                    bail!(
                        "{} is used by both stream {:?} and stream {:?}",
                        a.source,
                        b.name,
                        a.name
                    );
                }
            }
        }
        Ok(cameras.into_iter().map(|(c, _)| c).collect())
    }
}

/// Every key the TOML file may hold (`[[camera]]` tables under `camera`); any
/// other key is refused.
pub fn file_keys() -> &'static [&'static str] {
    static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        [
            file::keys_of::<listen::ListenFile>(),
            file::keys_of::<limits::LimitsFile>(),
            file::keys_of::<storage::StorageFile>(),
            file::keys_of::<access::AccessFile>(),
            file::keys_of::<FileConfig>(),
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

#[cfg(test)]
mod camera_tests {
    use super::test_support::load;
    use super::*;

    #[test]
    fn sources_are_named_and_the_unnamed_one_is_camera() {
        let c = load(
            &[
                "--source",
                "/dev/video0",
                "--source",
                "hall=exec:rpicam-vid -t 0 --codec mjpeg -o -",
            ],
            &[],
        )
        .unwrap();
        let got: Vec<_> = c
            .cameras
            .iter()
            .map(|c| (c.name.as_str(), c.source.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("camera", "/dev/video0".to_owned()),
                ("hall", "exec:rpicam-vid -t 0 --codec mjpeg -o -".to_owned())
            ]
        );
        assert_eq!(c.source, Source::V4l2("/dev/video0".into()));
        assert!(c.on_demand, "on demand by default");
        // An exec command with '=' in it is not mistaken for NAME=SRC.
        let c = load(
            &["--source", "exec:ffmpeg -i x -vf scale=640:480 -f mjpeg -"],
            &[],
        )
        .unwrap();
        assert_eq!(c.cameras[0].name, "camera");
        assert_eq!(
            c.cameras[0].source,
            Source::Exec("ffmpeg -i x -vf scale=640:480 -f mjpeg -".into())
        );
    }

    #[test]
    fn at_most_eight_cameras() {
        let flags = |n: usize| -> Vec<String> {
            (0..n)
                .flat_map(|i| ["--source".to_owned(), format!("cam{i}=/dev/video{i}")])
                .collect()
        };
        let eight = flags(MAX_CAMERAS);
        let eight: Vec<&str> = eight.iter().map(String::as_str).collect();
        assert_eq!(load(&eight, &[]).unwrap().cameras.len(), 8);
        let nine = flags(MAX_CAMERAS + 1);
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        let err = load(&nine, &[]).unwrap_err().to_string();
        assert!(
            err.contains("9 cameras") && err.contains("at most 8"),
            "{err}"
        );
    }

    #[test]
    fn bad_camera_settings_are_refused_with_their_origin() {
        let e = load(&["--source", "/dev/video0", "--source", "/dev/video2"], &[]).unwrap_err();
        assert!(e.to_string().contains("name them"), "{e}");
        let e = load(
            &["--source", "a=/dev/video0", "--source", "b=/dev/video0"],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("used by both"), "{e}");
        let e = load(&["--source", "exec:"], &[]).unwrap_err();
        assert!(e.to_string().contains("needs a command"), "{e}");
        let e = load(&["--format", "h264"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--format") && e.to_string().contains("yuyv"),
            "{e}"
        );
        let e = load(&[], &[("KINDERCAM_ON_DEMAND", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("KINDERCAM_ON_DEMAND"), "{e}");
    }

    #[test]
    fn flags_env_and_file_layers_for_cameras() {
        let dir = std::env::temp_dir().join(format!("kc-cam-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k.toml");
        std::fs::write(
            &file,
            r#"
source = "/dev/video0"
format = "yuyv"
on_demand = false

[[camera]]
name = "hall"
source = "/dev/v4l/by-id/usb-Logitech_C270-video-index0"
format = "mjpeg"
width = 1280
height = 720
"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = load(&["--config", path], &[]).unwrap();
        assert_eq!(c.cameras.len(), 2);
        assert_eq!(
            (c.cameras[0].name.as_str(), c.cameras[0].format),
            ("camera", CaptureFormat::Yuyv)
        );
        let hall = &c.cameras[1];
        assert_eq!(
            (hall.format, hall.width, hall.height),
            (CaptureFormat::Mjpeg, 1280, 720)
        );
        assert!(!c.on_demand);
        // The environment's source replaces the file's whole list; the flag, both.
        let c = load(&["--config", path], &[("KINDERCAM_SOURCE", "exec:cam")]).unwrap();
        assert_eq!(c.cameras.len(), 1);
        let c = load(
            &["--config", path, "--source", "test-pattern", "--on-demand"],
            &[],
        )
        .unwrap();
        assert_eq!(c.cameras[0].source, Source::TestPattern);
        assert!(c.on_demand, "a bare --on-demand means true");
        std::fs::write(
            &file,
            "[[camera]]\nname = \"Bad Name\"\nsource = \"/dev/video0\"\n",
        )
        .unwrap();
        let e = load(&["--config", path], &[]).unwrap_err();
        assert!(e.to_string().contains("[[camera]] #1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
