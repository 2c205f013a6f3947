//! The capture section: the cameras (`--source`, `[[camera]]` tables), how
//! frames are taken from them (format, size, interval, JPEG quality, opening them
//! only on demand), the privacy masks burned into them (`masks`) and each
//! camera's opening hours (`schedule`, file only). Its flags, variables, file
//! keys, defaults and checks sit together so that a key is added in one place. The camera list is resolved last,
//! from the section's other settings, which are each camera's defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::layers::{in_range, millis, parse_bool, Layers};
use crate::privacy::schedule::Schedule;
use crate::privacy::Mask;

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
    /// When families may watch this stream (`schedule` in the file); `None`: always.
    /// The admin API's schedule for the stream, if any, wins over it.
    pub schedule: Option<Schedule>,
}

/// Where frames come from and how they are taken.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
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
    /// The file's privacy masks by stream name: the top-level `masks` for the main
    /// camera, a `[[camera]]` table's for its stream. Kept by name whichever layer
    /// chose the sources, so that `--source` on the command line never drops a
    /// mask. The admin API's stored masks win over these (see `privacy::MaskBook`).
    pub masks: BTreeMap<String, Mask>,
    /// The stream the prototype's pages show and feed (`/serverCam.php`).
    pub prototype_stream: String,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: Source::TestPattern,
            cameras: vec![Camera {
                name: crate::hub::CAMERA.to_owned(),
                source: Source::TestPattern,
                format: CaptureFormat::Auto,
                width: 640,
                height: 480,
                schedule: None,
            }],
            format: CaptureFormat::Auto,
            on_demand: true,
            list_devices: false,
            interval: Duration::from_millis(500),
            width: 640,
            height: 480,
            quality: 75,
            masks: BTreeMap::new(),
            prototype_stream: "aula".to_owned(),
        }
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct CaptureFlags {
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
    /// The stream the PHP prototype's pages watch and feed over any WebSocket path
    /// ending in /serverCam.php [env: KINDERCAM_PROTOTYPE_STREAM] [default: aula]
    #[arg(long, value_name = "NAME")]
    prototype_stream: Option<String>,
}

/// The section's keys in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CaptureFile {
    source: Option<String>,
    format: Option<String>,
    on_demand: Option<bool>,
    /// `[[camera]]` tables.
    camera: Option<Vec<FileCamera>>,
    interval_ms: Option<u64>,
    width: Option<u32>,
    height: Option<u32>,
    quality: Option<i64>,
    /// `masks = [{x = 0.05, y = 0.6, w = 0.3, h = 0.4}]`: the main camera's.
    masks: Option<Mask>,
    /// The main camera's opening hours (a `[schedule]` table).
    schedule: Option<Schedule>,
    prototype_stream: Option<String>,
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
    masks: Option<Mask>,
    schedule: Option<Schedule>,
    /// Read by the push section (`super::push`).
    #[serde(rename = "push_to")]
    _push_to: Option<serde::de::IgnoredAny>,
}

impl CaptureFlags {
    /// Whether the cameras come from the file: no `--source` and no
    /// `KINDERCAM_SOURCE` replaced its list.
    pub(super) fn cameras_from_file(&self, layers: &Layers) -> bool {
        self.source.is_empty()
            && (layers.env)("KINDERCAM_SOURCE").is_none_or(|v| v.trim().is_empty())
    }
}

impl CaptureConfig {
    pub(super) fn resolve(flags: &CaptureFlags, layers: &Layers) -> anyhow::Result<CaptureConfig> {
        let file: CaptureFile = layers.file()?;
        let d = CaptureConfig::default();
        let mut config = CaptureConfig {
            source: d.source,
            cameras: Vec::new(),
            format: layers.resolve(
                "format",
                &flags.format,
                file.format,
                d.format,
                |s: String| s.parse(),
            )?,
            on_demand: layers.resolve(
                "on_demand",
                &flags.on_demand,
                file.on_demand.map(|b| b.to_string()),
                d.on_demand,
                parse_bool,
            )?,
            list_devices: flags.list_devices,
            interval: layers.resolve(
                "interval_ms",
                &flags.interval_ms,
                file.interval_ms,
                d.interval,
                millis(1, 3_600_000),
            )?,
            width: layers.resolve(
                "width",
                &flags.width,
                file.width,
                d.width,
                in_range(16, 8192),
            )?,
            height: layers.resolve(
                "height",
                &flags.height,
                file.height,
                d.height,
                in_range(16, 8192),
            )?,
            quality: layers.resolve(
                "quality",
                &flags.quality,
                file.quality,
                d.quality,
                |q: i64| in_range(1, 100)(q).map(|q| q as u8),
            )?,
            masks: BTreeMap::new(),
            prototype_stream: layers.resolve(
                "prototype_stream",
                &flags.prototype_stream,
                file.prototype_stream,
                d.prototype_stream,
                stream_name,
            )?,
        };
        let main_masked = file.masks.is_some();
        config.masks = file_masks(file.source.as_deref(), file.masks, &file.camera)?;
        // Last: the settings above are each camera's defaults.
        let mut tables = file.camera.unwrap_or_default();
        // Opening hours follow the stream's name, so that a camera listed again
        // with --source keeps its table's hours rather than silently losing them.
        let mut schedules: Vec<(String, Schedule)> = tables
            .iter_mut()
            .filter_map(|t| Some((t.name.clone(), t.schedule.take()?)))
            .collect();
        // The top-level schedule is for the stream the top-level `source` feeds.
        let main_name = file
            .source
            .as_deref()
            .and_then(|s| split_named(s).0)
            .unwrap_or(crate::hub::CAMERA)
            .to_owned();
        config.cameras = cameras(layers, &flags.source, file.source, tables, &config)?;
        let main = config
            .cameras
            .iter()
            .position(|c| c.name == crate::hub::CAMERA)
            .unwrap_or(0);
        if let Some(schedule) = file.schedule {
            schedules.push((main_name.clone(), schedule));
        }
        let from_file = flags.source.is_empty()
            && (layers.env)("KINDERCAM_SOURCE").is_none_or(|v| v.trim().is_empty());
        if main_masked && !from_file && !config.cameras.iter().any(|c| c.name == main_name) {
            tracing::warn!(
                stream = %main_name,
                "the config file's top-level masks are for this stream, but --source or \
                 KINDERCAM_SOURCE replaced the file's cameras and none has that name: the \
                 cameras running now do not get them (name the new source {main_name}=...)"
            );
        }
        for (name, schedule) in schedules {
            let Some(camera) = config.cameras.iter_mut().find(|c| c.name == name) else {
                // Only the top-level schedule can miss its camera in the file's own list.
                if from_file {
                    bail!(
                        "the top-level [schedule] in {} is for the stream {name:?}, which the \
                         top-level `source` feeds, but there is no such source: add one, or \
                         move the schedule into a [[camera]] table",
                        layers.file_origin("").trim_start_matches(" in ")
                    );
                }
                tracing::warn!(
                    stream = %name,
                    "the config file's opening hours for this stream are not used: --source or \
                     KINDERCAM_SOURCE replaced the file's cameras"
                );
                continue;
            };
            if camera.schedule.is_some() {
                bail!(
                    "two schedules for the stream {name:?}: the top-level [schedule] in {} is \
                     the main camera's, and its [[camera]] table has one too; keep one",
                    layers.file_origin("").trim_start_matches(" in ")
                );
            }
            camera.schedule = Some(schedule);
        }
        config.source = config.cameras[main].source.clone();
        Ok(config)
    }
}

/// The file's masks by stream name: the top-level key belongs to the stream of the
/// top-level `source` (`camera` unless it is named), each table's to its name.
fn file_masks(
    source: Option<&str>,
    main: Option<Mask>,
    tables: &Option<Vec<FileCamera>>,
) -> anyhow::Result<BTreeMap<String, Mask>> {
    let mut masks = BTreeMap::new();
    if let Some(mask) = main {
        let name = source.and_then(|s| split_named(s).0);
        masks.insert(name.unwrap_or(crate::hub::CAMERA).to_owned(), mask);
    }
    for table in tables.iter().flatten() {
        if let Some(mask) = &table.masks {
            if masks.insert(table.name.clone(), mask.clone()).is_some() {
                bail!(
                    "masks for stream {:?} are given twice: at the top level and in its \
                     [[camera]] table; keep one",
                    table.name
                );
            }
        }
    }
    Ok(masks)
}

/// A stream name, as `prototype_stream` takes it.
fn stream_name(v: String) -> Result<String, String> {
    let v = v.trim();
    if crate::hub::valid_stream_name(v) {
        Ok(v.to_owned())
    } else {
        Err("must be a stream name: 1-32 characters of a-z, 0-9, _ and -".into())
    }
}

/// Splits `NAME=SRC`; text whose part before `=` is not a stream name (an exec
/// command with `=` in it) is a source without a name.
pub(super) fn split_named(text: &str) -> (Option<&str>, &str) {
    let text = text.trim();
    match text.split_once('=') {
        Some((name, src)) if crate::hub::valid_stream_name(name.trim()) => {
            (Some(name.trim()), src.trim())
        }
        _ => (None, text),
    }
}

/// The cameras: repeated `--source` flags, else `KINDERCAM_SOURCE`, else the file's
/// `source` plus its `[[camera]]` tables, else the test pattern. A list from a higher
/// layer replaces the lower layers' list whole.
fn cameras(
    layers: &Layers,
    flags: &[String],
    file_source: Option<String>,
    tables: Vec<FileCamera>,
    c: &CaptureConfig,
) -> anyhow::Result<Vec<Camera>> {
    let global = |name: &str, source: Source| Camera {
        name: name.to_owned(),
        source,
        format: c.format,
        width: c.width,
        height: c.height,
        schedule: None,
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
    } else if let Some(v) = (layers.env)("KINDERCAM_SOURCE").filter(|v| !v.trim().is_empty()) {
        cameras.push(unnamed(&v, "KINDERCAM_SOURCE".into())?);
    } else {
        if let Some(text) = &file_source {
            cameras.push(unnamed(text, layers.file_origin("source"))?);
        }
        for (i, table) in tables.iter().enumerate() {
            let origin = format!(
                "[[camera]] #{} ({:?}) in {}",
                i + 1,
                table.name,
                layers.file_origin("").trim_start()
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{load, TomlFile};
    use super::*;

    #[test]
    fn the_prototypes_stream_is_aula_unless_named() {
        assert_eq!(load(&[], &[]).unwrap().capture.prototype_stream, "aula");
        let file = TomlFile::new("proto", "prototype_stream = \"sala-2\"\n");
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(c.capture.prototype_stream, "sala-2");
        let c = load(
            &["--config", file.path()],
            &[("KINDERCAM_PROTOTYPE_STREAM", "patio")],
        )
        .unwrap();
        assert_eq!(
            c.capture.prototype_stream, "patio",
            "the environment beats the file"
        );
        let c = load(
            &["--config", file.path(), "--prototype-stream", "camera"],
            &[],
        )
        .unwrap();
        assert_eq!(c.capture.prototype_stream, "camera", "the flag beats both");
        let e = load(&["--prototype-stream", "Aula 1"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--prototype-stream") && e.to_string().contains("stream name"),
            "{e}"
        );
        file.write("prototype_stream = \"\"\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("prototype_stream in {}", file.path())),
            "{e}"
        );
    }

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
            .capture
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
        assert_eq!(c.capture.source, Source::V4l2("/dev/video0".into()));
        assert!(c.capture.on_demand, "on demand by default");
        // An exec command with '=' in it is not mistaken for NAME=SRC.
        let c = load(
            &["--source", "exec:ffmpeg -i x -vf scale=640:480 -f mjpeg -"],
            &[],
        )
        .unwrap();
        assert_eq!(c.capture.cameras[0].name, "camera");
        assert_eq!(
            c.capture.cameras[0].source,
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
        assert_eq!(load(&eight, &[]).unwrap().capture.cameras.len(), 8);
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
        assert_eq!(c.capture.cameras.len(), 2);
        assert_eq!(
            (
                c.capture.cameras[0].name.as_str(),
                c.capture.cameras[0].format
            ),
            ("camera", CaptureFormat::Yuyv)
        );
        let hall = &c.capture.cameras[1];
        assert_eq!(
            (hall.format, hall.width, hall.height),
            (CaptureFormat::Mjpeg, 1280, 720)
        );
        assert!(!c.capture.on_demand);
        // The environment's source replaces the file's whole list; the flag, both.
        let c = load(&["--config", path], &[("KINDERCAM_SOURCE", "exec:cam")]).unwrap();
        assert_eq!(c.capture.cameras.len(), 1);
        let c = load(
            &["--config", path, "--source", "test-pattern", "--on-demand"],
            &[],
        )
        .unwrap();
        assert_eq!(c.capture.cameras[0].source, Source::TestPattern);
        assert!(c.capture.on_demand, "a bare --on-demand means true");
        std::fs::write(
            &file,
            "[[camera]]\nname = \"Bad Name\"\nsource = \"/dev/video0\"\n",
        )
        .unwrap();
        let e = load(&["--config", path], &[]).unwrap_err();
        assert!(e.to_string().contains("[[camera]] #1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn masks_are_read_per_stream_and_kept_whatever_chose_the_sources() {
        let dir = std::env::temp_dir().join(format!("kc-mask-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k.toml");
        let path = file.to_str().unwrap().to_owned();
        let write = |text: &str| std::fs::write(&file, text).unwrap();
        write(
            r#"
source = "/dev/video0"
masks = [{x = 0.05, y = 0.6, w = 0.3, h = 0.4}]

[[camera]]
name = "hall"
source = "/dev/video2"
masks = [{x = 0, y = 0, w = 1, h = 0.25}, {x = 0.5, y = 0.5, w = 0.5, h = 0.5}]

[[camera]]
name = "yard"
source = "/dev/video4"
"#,
        );
        let c = load(&["--config", &path], &[]).unwrap();
        let counts: Vec<_> = c
            .capture
            .masks
            .iter()
            .map(|(name, m)| (name.as_str(), m.rects().len()))
            .collect();
        assert_eq!(counts, [("camera", 1), ("hall", 2)]);
        assert_eq!(c.capture.masks["camera"].rects()[0].y, 0.6);
        // A source given on the command line replaces the file's cameras, never its masks.
        let c = load(&["--config", &path, "--source", "test-pattern"], &[]).unwrap();
        assert_eq!(c.capture.cameras.len(), 1);
        assert_eq!(c.capture.masks.len(), 2);
        // The top-level key belongs to the top-level source's stream, named or not.
        write("source = \"front=/dev/video0\"\nmasks = [{x = 0, y = 0, w = 0.5, h = 0.5}]\n");
        let c = load(&["--config", &path], &[]).unwrap();
        assert_eq!(c.capture.masks.keys().collect::<Vec<_>>(), ["front"]);
        // Bad input names the file, the entry and the key.
        write(
            "masks = [{x = 0.1, y = 0.1, w = 0.2, h = 0.2}, {x = 0.9, y = 0, w = 0.2, h = 0.1}]\n",
        );
        let e = load(&["--config", &path], &[]).unwrap_err().to_string();
        assert!(e.contains(&path) && e.contains("masks[1].w"), "{e}");
        write("[[camera]]\nname = \"hall\"\nsource = \"/dev/video2\"\nmasks = [{x = 0.1, y = 0.1, w = 0, h = 0.2}]\n");
        let e = load(&["--config", &path], &[]).unwrap_err().to_string();
        assert!(e.contains("masks[0].w") && e.contains("zero width"), "{e}");
        write("masks = []\n[[camera]]\nname = \"camera\"\nsource = \"/dev/video2\"\nmasks = []\n");
        let e = load(&["--config", &path], &[]).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_camera_has_its_own_opening_hours_in_the_file() {
        let dir = std::env::temp_dir().join(format!("kc-cam-hours-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k.toml");
        std::fs::write(
            &file,
            r#"
source = "/dev/video0"

[schedule]
timezone = "America/Bogota"
open = [{days = ["mon", "tue", "wed", "thu", "fri"], from = "07:30", to = "16:30"}]
closed_dates = ["2026-12-25"]

[[camera]]
name = "hall"
source = "/dev/video2"
schedule = {timezone = "Europe/Madrid", open = [{days = ["sat"], from = "09:00", to = "13:00"}]}

[[camera]]
name = "patio"
source = "/dev/video4"
"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = load(&["--config", path], &[]).unwrap();
        let hours = |name: &str| {
            c.capture
                .cameras
                .iter()
                .find(|c| c.name == name)
                .unwrap()
                .schedule
                .as_ref()
                .map(|s| serde_json::to_value(s).unwrap())
        };
        assert_eq!(
            hours("camera"),
            Some(serde_json::json!({"timezone": "America/Bogota",
                "open": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:30", "to": "16:30"}],
                "closed_dates": ["2026-12-25"]}))
        );
        assert_eq!(
            hours("hall").unwrap()["timezone"],
            serde_json::json!("Europe/Madrid")
        );
        assert_eq!(hours("patio"), None, "no schedule: always open");
        // The hall listed again on the command line keeps its hours.
        let c = load(&["--config", path, "--source", "hall=/dev/video9"], &[]).unwrap();
        assert!(c.capture.cameras[0].schedule.is_some());
        // A bad schedule is refused naming the field and the file.
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("\"16:30\"", "\"6:3\"")).unwrap();
        let e = load(&["--config", path], &[]).unwrap_err().to_string();
        assert!(e.contains("schedule.open[0].to") && e.contains(path), "{e}");
        // The main camera cannot have two.
        std::fs::write(
            &file,
            r#"
[schedule]
timezone = "UTC"
open = []

[[camera]]
name = "camera"
source = "/dev/video0"
schedule = {timezone = "UTC", open = []}
"#,
        )
        .unwrap();
        let e = load(&["--config", path], &[]).unwrap_err().to_string();
        assert!(e.contains("two schedules for the stream \"camera\""), "{e}");
        // Hours for a main camera that the file does not have are refused, not lost.
        std::fs::write(
            &file,
            r#"
[schedule]
timezone = "UTC"
open = []

[[camera]]
name = "hall"
source = "/dev/video0"
"#,
        )
        .unwrap();
        let e = load(&["--config", path], &[]).unwrap_err().to_string();
        assert!(e.contains("there is no such source"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
