//! `kindercam --list-devices`: every V4L2 node with its name, driver, formats,
//! sizes and frame rates, and what kindercam would do with it, so an installer
//! can pick the `--source`. Works without udev: nodes are found in
//! `/sys/class/video4linux` (or `/dev/video*`), and `/dev/v4l/by-id` links are
//! shown only where they exist.
//!
//! A node that cannot capture (a UVC camera's metadata node, an output, a codec)
//! and a camera whose formats kindercam cannot use (H.264 only, raw Bayer from a
//! CSI sensor under libcamera) each get a line saying what to do instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use v4l::prelude::*;

use crate::config::{CaptureFormat, Config};
use crate::source::v4l2::negotiate::{self, FourCc, IntervalOffer, SizeOffer};
use crate::source::v4l2::{self as cam, node_kind, video_nodes};

/// The report, and whether at least one camera kindercam can use was found.
pub struct Listing {
    pub text: String,
    pub usable: usize,
}

/// Lists the devices, judging each against the configured size and format.
pub fn list(config: &Config) -> Listing {
    let nodes = video_nodes();
    let links = by_id_links();
    let mut text = String::new();
    let mut usable = 0;
    if nodes.is_empty() {
        text.push_str(
            "No V4L2 devices found (nothing in /sys/class/video4linux or /dev/video*).\n\
             - A USB webcam shows up as /dev/videoN once plugged in; check `dmesg` if it does not.\n\
             - A Raspberry Pi CSI camera is driven by libcamera: use\n  \
             --source \"exec:rpicam-vid -t 0 --codec mjpeg -o -\"\n",
        );
        return Listing { text, usable };
    }
    for node in &nodes {
        let probed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            describe(
                node,
                config,
                links.get(node).map(Vec::as_slice).unwrap_or(&[]),
            )
        }));
        match probed {
            Ok((section, ok)) => {
                text.push_str(&section);
                usable += usize::from(ok);
            }
            Err(_) => {
                let _ = writeln!(
                    text,
                    "{}: the driver returned data kindercam cannot read\n",
                    node.display()
                );
            }
        }
    }
    if usable == 0 {
        text.push_str("No camera kindercam can use directly; see the notes above.\n");
    }
    Listing { text, usable }
}

/// `/dev/v4l/by-id` and `by-path` links, by the node they point to.
fn by_id_links() -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut links: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for dir in ["/dev/v4l/by-id", "/dev/v4l/by-path"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(target) = std::fs::canonicalize(entry.path()) {
                links.entry(target).or_default().push(entry.path());
            }
        }
    }
    for list in links.values_mut() {
        list.sort();
    }
    links
}

fn describe(node: &Path, config: &Config, links: &[PathBuf]) -> (String, bool) {
    let mut out = String::new();
    let dev = match Device::with_path(node) {
        Ok(dev) => dev,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "permission denied: add this user to the video group".to_owned()
                }
                Some(libc::EBUSY) => "busy: another program holds it".to_owned(),
                _ => e.to_string(),
            };
            let _ = writeln!(out, "{}: cannot open: {why}\n", node.display());
            return (out, false);
        }
    };
    let caps = match dev.query_caps() {
        Ok(caps) => caps,
        Err(e) => {
            let _ = writeln!(out, "{}: not a V4L2 device ({e})\n", node.display());
            return (out, false);
        }
    };
    let _ = writeln!(
        out,
        "{}: {} (driver {}, bus {})",
        node.display(),
        caps.card,
        caps.driver,
        caps.bus
    );
    if !cam::is_capture(&caps) {
        let _ = writeln!(out, "  cannot be used: {}\n", node_kind(&caps));
        return (out, false);
    }
    let offers = match cam::format_offers(&dev) {
        Ok(offers) => offers,
        Err(e) => {
            let _ = writeln!(out, "  cannot list formats: {e}\n");
            return (out, false);
        }
    };
    let mut unusable = Vec::new();
    for offer in &offers {
        if !negotiate::is_usable(&offer.fourcc) {
            unusable.push(negotiate::fourcc_str(&offer.fourcc));
            continue;
        }
        let how = if negotiate::is_jpeg(&offer.fourcc) {
            "passed through, no encoding"
        } else {
            "encoded to JPEG"
        };
        let _ = writeln!(
            out,
            "  {:<4}  {} ({how})",
            negotiate::fourcc_str(&offer.fourcc),
            offer.description
        );
        for size in &offer.sizes {
            let _ = writeln!(out, "        {}", size_line(&dev, &offer.fourcc, size));
        }
    }
    if !unusable.is_empty() {
        let _ = writeln!(
            out,
            "  also {} format(s) kindercam cannot use: {}",
            unusable.len(),
            unusable.join(", ")
        );
    }
    let ok = match negotiate::choose(
        &offers,
        config.capture.format,
        config.capture.width,
        config.capture.height,
    ) {
        Ok(choice) => {
            let _ = writeln!(
                out,
                "  kindercam would use: {} (for --width {} --height {}{})",
                choice.reason,
                config.capture.width,
                config.capture.height,
                if config.capture.format == CaptureFormat::Auto {
                    String::new()
                } else {
                    format!(" --format {}", config.capture.format)
                }
            );
            let stable = links
                .iter()
                .find(|l| l.starts_with("/dev/v4l/by-id"))
                .or(links.first());
            match stable {
                Some(link) => {
                    let _ = writeln!(
                        out,
                        "  use: --source {}  (stays valid when the camera is replugged)",
                        link.display()
                    );
                }
                None => {
                    let _ = writeln!(out, "  use: --source {}", node.display());
                }
            }
            true
        }
        Err(e) => {
            let _ = writeln!(out, "  cannot be used: {e}");
            false
        }
    };
    out.push('\n');
    (out, ok)
}

fn size_line(dev: &Device, fourcc: &FourCc, size: &SizeOffer) -> String {
    let code = v4l::FourCC::new(fourcc);
    match *size {
        SizeOffer::Discrete { width, height } => {
            let rates = fps_text(&cam::frame_intervals(dev, code, width, height));
            format!("{width}x{height}  {rates}")
        }
        SizeOffer::Stepwise {
            min_width,
            max_width,
            step_width,
            min_height,
            max_height,
            step_height,
        } => {
            let rates = fps_text(&cam::frame_intervals(dev, code, max_width, max_height));
            format!(
                "{min_width}x{min_height} to {max_width}x{max_height} in steps of \
                 {step_width}x{step_height}  {rates} at the largest"
            )
        }
    }
}

/// "5, 10, 15, 30 fps", or a range when there are many.
pub fn fps_text(intervals: &[IntervalOffer]) -> String {
    let fps = |num: u32, den: u32| f64::from(den) / f64::from(num.max(1));
    let mut rates: Vec<f64> = Vec::new();
    let mut ranges = Vec::new();
    for i in intervals {
        match *i {
            IntervalOffer::Discrete { num, den } if num > 0 => rates.push(fps(num, den)),
            IntervalOffer::Discrete { .. } => {}
            IntervalOffer::Stepwise { min, max, .. } => ranges.push(format!(
                "{}-{} fps",
                show(fps(max.0, max.1)),
                show(fps(min.0, min.1))
            )),
        }
    }
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    if !rates.is_empty() {
        if rates.len() <= 6 {
            let list: Vec<String> = rates.iter().map(|r| show(*r)).collect();
            ranges.push(format!("{} fps", list.join(", ")));
        } else {
            ranges.push(format!(
                "{}-{} fps ({} rates)",
                show(rates[0]),
                show(rates[rates.len() - 1]),
                rates.len()
            ));
        }
    }
    if ranges.is_empty() {
        "(frame rates not listed)".to_owned()
    } else {
        ranges.join(", ")
    }
}

fn show(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.01 {
        format!("{}", fps.round())
    } else {
        format!("{fps:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_read_well() {
        let d = |den: u32| IntervalOffer::Discrete { num: 1, den };
        assert_eq!(fps_text(&[d(30), d(15), d(5)]), "5, 15, 30 fps");
        let many: Vec<_> = [1, 2, 4, 5, 10, 15, 25, 30, 60]
            .iter()
            .map(|&f| d(f))
            .collect();
        assert_eq!(fps_text(&many), "1-60 fps (9 rates)");
        assert_eq!(
            fps_text(&[IntervalOffer::Discrete { num: 2, den: 25 }]),
            "12.5 fps"
        );
        assert_eq!(
            fps_text(&[IntervalOffer::Stepwise {
                min: (1, 30),
                max: (1, 1),
                step: (1, 1000)
            }]),
            "1-30 fps"
        );
        assert_eq!(fps_text(&[]), "(frame rates not listed)");
    }
}
