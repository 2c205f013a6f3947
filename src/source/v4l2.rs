//! V4L2 cameras (`--source /dev/videoN` or `/dev/v4l/by-id/...`): the capture
//! session that runs on its own thread under the supervisor.
//!
//! A session opens the device, negotiates format, size and frame rate
//! (`negotiate.rs`), streams with mmap buffers and publishes one frame per
//! `--interval-ms` into the hub: MJPEG is passed through (Huffman tables added,
//! broken frames dropped and counted), raw formats are encoded by turbojpeg
//! straight from their YUV planes. Frames in between are requeued untouched.
//!
//! Any failure ends the session with the device and its buffers released; the
//! supervisor shows the offline picture and opens a new session after a pause.
//! The camera is remembered by driver, card and bus, so a replugged camera is
//! found again even when it comes back under another `/dev/videoN`.

pub mod negotiate;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufferFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::format::FourCC;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::prelude::*;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Format, Fraction};

use self::negotiate::{FormatOffer, Handling, IntervalOffer, SizeOffer};
use crate::config::CaptureFormat;
use crate::encode::RawImage;
use crate::frame;
use crate::hub::Stream;
use crate::intake::Intake;
use crate::mjpeg;
use crate::source::supervisor::{Control, Pacer, SourceError};
use crate::sync::Locked;

/// Buffers the driver fills while we work on one: enough to never stall the
/// camera, few enough to bound memory (4 x 1.8 MB at 1280x720 YUYV).
const BUFFERS: u32 = 4;
/// How often a waiting session looks at its stop flag.
const POLL_SLICE: Duration = Duration::from_millis(250);
/// A camera that delivers nothing for this long (or 3 frame periods, if longer)
/// has failed even though its device is still there.
const MIN_FRAME_TIMEOUT: Duration = Duration::from_secs(4);

/// What one camera session needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathBuf,
    pub format: CaptureFormat,
    pub width: u32,
    pub height: u32,
    pub interval: Duration,
    pub quality: u8,
    /// When false the camera stays open, but frames are only encoded while watched.
    pub on_demand: bool,
}

/// Which physical camera a session had open, to find it again after a replug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub driver: String,
    pub card: String,
    pub bus: String,
}

impl Identity {
    fn of(caps: &v4l::Capabilities) -> Identity {
        Identity {
            driver: caps.driver.clone(),
            card: caps.card.clone(),
            bus: caps.bus.clone(),
        }
    }

    /// Same model on the same port, or same model anywhere (replugged elsewhere).
    fn matches(&self, other: &Identity) -> bool {
        self.driver == other.driver && self.card == other.card
    }
}

/// Picks the node to open: the configured one if it still holds our camera (or we
/// never knew which camera it was), else the node our camera reappeared under.
/// `nodes` are candidates as (path, identity, can capture).
pub fn pick_node(
    configured: &Path,
    known: Option<&Identity>,
    nodes: &[(PathBuf, Identity, bool)],
) -> Option<PathBuf> {
    let configured_real = std::fs::canonicalize(configured).unwrap_or(configured.to_path_buf());
    let at_configured = nodes
        .iter()
        .find(|(p, _, capture)| *capture && (p == configured || *p == configured_real));
    let Some(known) = known else {
        return at_configured.map(|(p, ..)| p.clone());
    };
    if let Some((p, id, _)) = at_configured {
        if id == known {
            return Some(p.clone());
        }
    }
    let elsewhere = nodes
        .iter()
        .filter(|(_, id, capture)| *capture && id == known)
        .chain(
            nodes
                .iter()
                .filter(|(_, id, capture)| *capture && id.matches(known)),
        )
        .map(|(p, ..)| p.clone())
        .next();
    // A different camera at the configured path is still what was asked for.
    elsewhere.or_else(|| at_configured.map(|(p, ..)| p.clone()))
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> SourceError {
    let message = match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => {
            format!(
                "{}: camera unplugged ({what}: no such device)",
                path.display()
            )
        }
        Some(libc::ENOENT) => format!(
            "{}: no such device (is the camera plugged in?)",
            path.display()
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "{}: permission denied; add the kindercam user to the video group",
            path.display()
        ),
        Some(libc::EBUSY) => format!(
            "{}: camera busy; another program (or another kindercam stream) is using it",
            path.display()
        ),
        _ => format!("{}: {what} failed: {e}", path.display()),
    };
    SourceError::new(message)
}

pub fn is_capture(caps: &v4l::Capabilities) -> bool {
    caps.capabilities.contains(CapFlags::VIDEO_CAPTURE)
}

/// Describes what a non-capture node is, for the error.
pub fn node_kind(caps: &v4l::Capabilities) -> &'static str {
    let c = caps.capabilities;
    if c.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
        "a multi-planar capture node (on a Raspberry Pi: part of the camera pipeline; use \
         --source \"exec:rpicam-vid -t 0 --codec mjpeg -o -\")"
    } else if c.contains(CapFlags::META_CAPTURE) {
        "a metadata node (UVC cameras have one next to the picture node; use the other one)"
    } else if c.intersects(CapFlags::VIDEO_M2M | CapFlags::VIDEO_M2M_MPLANE) {
        "a memory-to-memory codec or converter, not a camera"
    } else if c.intersects(CapFlags::VIDEO_OUTPUT | CapFlags::VIDEO_OUTPUT_MPLANE) {
        "a video output, not a camera"
    } else {
        "not a video capture device"
    }
}

/// The V4L2 nodes on this system, without udev: /sys/class/video4linux, else /dev.
pub fn video_nodes() -> Vec<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/video4linux")
        .or_else(|_| std::fs::read_dir("/dev"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.strip_prefix("video").is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| n[5..].parse::<u32>().unwrap_or(u32::MAX));
    names
        .into_iter()
        .map(|n| Path::new("/dev").join(n))
        .collect()
}

/// Opens the camera: the configured node, or where the known camera went.
fn open_camera(
    configured: &Path,
    known: Option<&Identity>,
    control: &Control,
) -> Result<(Device, PathBuf, v4l::Capabilities), SourceError> {
    let direct = Device::with_path(configured).and_then(|d| d.query_caps().map(|c| (d, c)));
    control.alive();
    match direct {
        Ok((dev, caps)) if is_capture(&caps) && known.is_none_or(|k| *k == Identity::of(&caps)) => {
            return Ok((dev, configured.to_path_buf(), caps));
        }
        Ok((_, caps)) if known.is_none() => {
            return Err(SourceError::config(format!(
                "{} ({}) is {}; run kindercam --list-devices to find the camera",
                configured.display(),
                caps.card,
                node_kind(&caps)
            )));
        }
        Err(e) if known.is_none() => return Err(io_error("open", configured, &e)),
        _ => {}
    }
    // The camera we had is not (or no longer) at the configured node: look for it.
    let mut nodes = Vec::new();
    for path in video_nodes() {
        if let Ok(caps) = Device::with_path(&path).and_then(|d| d.query_caps()) {
            nodes.push((path, Identity::of(&caps), is_capture(&caps)));
        }
        control.alive();
    }
    let Some(path) = pick_node(configured, known, &nodes) else {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        return Err(io_error("open", configured, &e));
    };
    let dev = Device::with_path(&path).map_err(|e| io_error("open", &path, &e))?;
    let caps = dev.query_caps().map_err(|e| io_error("query", &path, &e))?;
    if path != configured {
        tracing::info!(configured = %configured.display(), found = %path.display(), card = %caps.card,
            "camera found under another device node");
    }
    Ok((dev, path, caps))
}

/// Lists formats with their sizes; sizes only for formats we could use.
pub fn format_offers(dev: &Device) -> io::Result<Vec<FormatOffer>> {
    let mut offers = Vec::new();
    for desc in dev.enum_formats()? {
        let fourcc = desc.fourcc.repr;
        let sizes = if negotiate::is_usable(&fourcc) {
            frame_sizes(dev, desc.fourcc)
        } else {
            Vec::new()
        };
        offers.push(FormatOffer {
            fourcc,
            description: desc.description,
            sizes,
        });
    }
    Ok(offers)
}

pub fn frame_sizes(dev: &Device, fourcc: FourCC) -> Vec<SizeOffer> {
    dev.enum_framesizes(fourcc)
        .unwrap_or_default()
        .into_iter()
        .map(|s| match s.size {
            FrameSizeEnum::Discrete(d) => SizeOffer::Discrete {
                width: d.width,
                height: d.height,
            },
            FrameSizeEnum::Stepwise(s) => SizeOffer::Stepwise {
                min_width: s.min_width,
                max_width: s.max_width,
                step_width: s.step_width,
                min_height: s.min_height,
                max_height: s.max_height,
                step_height: s.step_height,
            },
        })
        .collect()
}

pub fn frame_intervals(
    dev: &Device,
    fourcc: FourCC,
    width: u32,
    height: u32,
) -> Vec<IntervalOffer> {
    dev.enum_frameintervals(fourcc, width, height)
        .unwrap_or_default()
        .into_iter()
        .map(|i| match i.interval {
            FrameIntervalEnum::Discrete(f) => IntervalOffer::Discrete {
                num: f.numerator,
                den: f.denominator,
            },
            FrameIntervalEnum::Stepwise(s) => IntervalOffer::Stepwise {
                min: (s.min.numerator, s.min.denominator),
                max: (s.max.numerator, s.max.denominator),
                step: (s.step.numerator, s.step.denominator),
            },
        })
        .collect()
}

/// One capture session: runs until stopped or until the camera fails.
pub fn capture(
    settings: &Settings,
    stream: &Arc<Stream>,
    identity: &Mutex<Option<Identity>>,
    control: &Control,
) -> Result<(), SourceError> {
    let known = identity.locked().clone();
    let (dev, path, caps) = open_camera(&settings.path, known.as_ref(), control)?;
    if !is_capture(&caps) {
        return Err(SourceError::config(format!(
            "{} ({}) is {}",
            path.display(),
            caps.card,
            node_kind(&caps)
        )));
    }
    if !caps.capabilities.contains(CapFlags::STREAMING) {
        return Err(SourceError::config(format!(
            "{} ({}) cannot stream (no mmap streaming support)",
            path.display(),
            caps.card
        )));
    }
    *identity.locked() = Some(Identity::of(&caps));

    let offers = format_offers(&dev).map_err(|e| io_error("list formats", &path, &e))?;
    control.alive();
    let choice = negotiate::choose(&offers, settings.format, settings.width, settings.height)
        .map_err(|e| SourceError::config(format!("{} ({}): {e}", path.display(), caps.card)))?;
    let wanted = Format::new(choice.width, choice.height, FourCC::new(&choice.fourcc));
    let format = dev
        .set_format(&wanted)
        .map_err(|e| io_error("set format", &path, &e))?;
    if format.fourcc.repr != choice.fourcc {
        return Err(SourceError::config(format!(
            "{}: asked for {} but the driver chose {}",
            path.display(),
            negotiate::fourcc_str(&choice.fourcc),
            format.fourcc
        )));
    }
    let interval_offers = frame_intervals(&dev, format.fourcc, format.width, format.height);
    let fps = match negotiate::choose_interval(&interval_offers, settings.interval) {
        Some((num, den)) => match dev.set_params(&Parameters::new(Fraction::new(num, den))) {
            Ok(p) if p.interval.numerator > 0 => {
                format!(
                    "{:.1} fps",
                    f64::from(p.interval.denominator) / f64::from(p.interval.numerator)
                )
            }
            Ok(_) => "driver's frame rate".to_owned(),
            Err(e) => format!("driver's frame rate (setting it failed: {e})"),
        },
        None => "driver's frame rate (it lists none)".to_owned(),
    };
    let period = dev
        .params()
        .ok()
        .filter(|p| p.interval.denominator > 0 && p.interval.numerator > 0)
        .map(|p| {
            Duration::from_secs_f64(
                f64::from(p.interval.numerator) / f64::from(p.interval.denominator),
            )
        })
        .unwrap_or(Duration::from_millis(100));
    tracing::info!(
        stream = stream.name(),
        device = %path.display(),
        card = %caps.card,
        driver = %caps.driver,
        "camera: {}; got {}x{} {} at {fps} for one frame every {} ms",
        choice.reason,
        format.width,
        format.height,
        format.fourcc,
        settings.interval.as_millis()
    );
    control.alive();

    let mut mmap = MmapStream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
        .map_err(|e| io_error("allocate buffers", &path, &e))?;
    let frame_timeout = MIN_FRAME_TIMEOUT.max(period * 3);
    mmap.set_timeout(frame_timeout);
    let handle = mmap.handle();
    let mut intake = match choice.handling {
        Handling::Encode(_) => Intake::encoding(stream.clone(), "camera", settings.quality)
            .map_err(|e| SourceError::new(e.to_string()))?,
        Handling::PassThrough => Intake::new(stream.clone(), "camera"),
    };
    let mut pacer = Pacer::new(settings.interval);
    let mut started = false;
    let mut waiting_since = Instant::now();
    loop {
        control.alive();
        if control.stopped() {
            return Ok(());
        }
        if started {
            // Wait in short slices so a stop request is seen; `next()` below then
            // finds a buffer ready (or the error of an unplugged device).
            let ready = match handle.poll(libc::POLLIN, POLL_SLICE.as_millis() as i32) {
                Ok(n) => n,
                // A signal for another thread (SIGHUP: reload) landed here.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(io_error("poll", &path, &e)),
            };
            if ready == 0 {
                if waiting_since.elapsed() >= frame_timeout {
                    return Err(SourceError::new(format!(
                        "{}: no frame from the camera for {} s",
                        path.display(),
                        waiting_since.elapsed().as_secs()
                    )));
                }
                continue;
            }
        }
        // The first call queues the buffers and starts streaming (VIDIOC_STREAMON).
        let (buf, meta) = match CaptureStream::next(&mut mmap) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(SourceError::new(format!(
                    "{}: no frame from the camera for {} s",
                    path.display(),
                    frame_timeout.as_secs()
                )))
            }
            Err(e) if !started => return Err(io_error("start streaming", &path, &e)),
            Err(e) => return Err(io_error("capture", &path, &e)),
        };
        started = true;
        waiting_since = Instant::now();
        if meta.flags.contains(BufferFlags::ERROR) {
            intake.drop_frame(&"the driver marked the buffer as corrupt");
            pacer.retry_now();
            continue;
        }
        let used = match meta.bytesused as usize {
            0 => buf.len(),
            n => n.min(buf.len()),
        };
        let data = &buf[..used];
        let captured = captured_unix_ms(meta);
        // Unwatched (the camera stays open without --on-demand): no work at all.
        if !settings.on_demand && stream.demand_count() == 0 {
            continue;
        }
        if !pacer.take(Instant::now()) {
            continue;
        }
        let _busy = stream.heartbeat().begin();
        // The mmap buffer is only read: intake copies it only when a mask must be
        // burned in, and MJPEG is passed on as it came unless masked.
        let frame = match &choice.handling {
            Handling::PassThrough => match mjpeg::repair(data) {
                Ok((jpeg, info)) => intake.jpeg(jpeg.into_owned(), info.width, info.height).ok(),
                Err(e) => {
                    intake.drop_frame(&e);
                    None
                }
            },
            Handling::Encode(raw) => intake
                .raw(&RawImage {
                    format: *raw,
                    data,
                    width: format.width as usize,
                    height: format.height as usize,
                    stride: format.stride as usize,
                })
                .ok(),
        };
        match frame {
            Some(frame) => {
                let frame = match captured {
                    Some(ms) => frame.captured_at(ms),
                    None => frame,
                };
                stream.publish(frame);
                control.delivered();
            }
            // Counted and logged already.
            None => {
                // The next frame may be fine: do not wait a whole interval for it.
                pacer.retry_now();
            }
        }
    }
}

/// When the camera took the frame, in Unix milliseconds. Drivers stamp buffers
/// with CLOCK_MONOTONIC (`V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`, which uvcvideo sets
/// at the start of the frame); the difference to that clock now maps the stamp to
/// wall time. `None` for other clocks or a stamp not within the last 10 s.
// time_t and c_long are 32 bits on armv7: the casts are not the same type there.
#[allow(clippy::unnecessary_cast)]
fn captured_unix_ms(meta: &v4l::buffer::Metadata) -> Option<u64> {
    if meta.flags & BufferFlags::TIMESTAMP_MASK != BufferFlags::TIMESTAMP_MONOTONIC {
        return None;
    }
    let stamp_us = meta.timestamp.sec as i64 * 1_000_000 + meta.timestamp.usec as i64;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let now_us = now.tv_sec as i64 * 1_000_000 + now.tv_nsec as i64 / 1_000;
    let age_ms = u64::try_from(now_us - stamp_us).ok()? / 1_000;
    (age_ms <= 10_000).then(|| frame::unix_ms().saturating_sub(age_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(card: &str, bus: &str) -> Identity {
        Identity {
            driver: "uvcvideo".into(),
            card: card.into(),
            bus: bus.into(),
        }
    }

    fn node(n: u32, identity: Identity, capture: bool) -> (PathBuf, Identity, bool) {
        (PathBuf::from(format!("/dev/video{n}")), identity, capture)
    }

    #[test]
    fn a_camera_never_seen_is_taken_at_the_configured_node() {
        let nodes = [
            node(0, id("A", "usb-1"), true),
            node(1, id("A", "usb-1"), false),
        ];
        assert_eq!(
            pick_node(Path::new("/dev/video0"), None, &nodes),
            Some(PathBuf::from("/dev/video0"))
        );
        assert_eq!(
            pick_node(Path::new("/dev/video1"), None, &nodes),
            None,
            "metadata node"
        );
    }

    #[test]
    fn a_replugged_camera_is_found_under_another_node() {
        let cam = id("HD Webcam", "usb-0000:01:00.0-1.2");
        // While our old handle was still open the camera came back as video2/video3,
        // and video0 now is something else entirely.
        let nodes = [
            node(0, id("Other", "usb-1.3"), true),
            node(2, cam.clone(), true),
            node(3, cam.clone(), false),
        ];
        assert_eq!(
            pick_node(Path::new("/dev/video0"), Some(&cam), &nodes),
            Some(PathBuf::from("/dev/video2"))
        );
        // Plugged into another port: same model, other bus, still found.
        let moved = [node(4, id("HD Webcam", "usb-0000:01:00.0-1.4"), true)];
        assert_eq!(
            pick_node(Path::new("/dev/video0"), Some(&cam), &moved),
            Some(PathBuf::from("/dev/video4"))
        );
        // Nowhere to be found, but something capture-capable is at the configured node.
        let gone = [node(0, id("Other", "usb-1.3"), true)];
        assert_eq!(
            pick_node(Path::new("/dev/video0"), Some(&cam), &gone),
            Some(PathBuf::from("/dev/video0"))
        );
        assert_eq!(pick_node(Path::new("/dev/video0"), Some(&cam), &[]), None);
    }

    // What a driver answers is read, never a panic: the Pi builds abort on a panic
    // (scripts/cross-build), and the v4l crate panicked on these (vendor/v4l/KINDERCAM.md).

    #[test]
    fn a_camera_with_a_non_utf8_name_is_read_and_usable() {
        // SAFETY: a plain C struct of integers and byte arrays; all zeroes is valid.
        let mut raw: v4l::v4l_sys::v4l2_capability = unsafe { std::mem::zeroed() };
        raw.driver[..8].copy_from_slice(b"uvcvideo");
        // "Caméra" in Latin-1, as some cheap webcams report their name.
        raw.card[..6].copy_from_slice(b"Cam\xe9ra");
        raw.bus_info[..5].copy_from_slice(b"usb-1");
        raw.device_caps = v4l::v4l_sys::V4L2_CAP_VIDEO_CAPTURE | v4l::v4l_sys::V4L2_CAP_STREAMING;
        let caps = v4l::Capabilities::from(raw);
        assert!(is_capture(&caps));
        let identity = Identity::of(&caps);
        assert_eq!(identity.driver, "uvcvideo");
        assert_eq!(identity.card, "Cam\u{fffd}ra");
        assert!(identity.matches(&Identity::of(&v4l::Capabilities::from(raw))));
    }

    #[test]
    fn a_format_with_values_from_a_newer_kernel_is_read() {
        // SAFETY: as above.
        let mut raw: v4l::v4l_sys::v4l2_pix_format = unsafe { std::mem::zeroed() };
        raw.width = 640;
        raw.height = 480;
        raw.pixelformat = u32::from_le_bytes(*b"MJPG");
        raw.field = 99;
        raw.colorspace = 250;
        raw.quantization = 77;
        raw.xfer_func = 66;
        let format = Format::from(raw);
        assert_eq!((format.width, format.height), (640, 480));
        assert_eq!(format.fourcc, FourCC::new(b"MJPG"));
    }

    #[test]
    fn a_device_path_with_a_nul_byte_is_an_error() {
        let err = Device::with_path("/dev/vid\0eo0").err().expect("an error");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
