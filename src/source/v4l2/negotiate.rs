//! Choosing what to ask a camera for, from what it says it offers: the pixel
//! format, the frame size and the frame interval. Pure logic, so every rule here
//! is unit-tested without a device; `v4l2.rs` does the ioctls.
//!
//! The rules, in order:
//! - `--format auto` prefers MJPEG (passed through, no encoding) at the requested
//!   size; otherwise the size nearest the request wins, and among equally near
//!   sizes the cheaper format: MJPEG, then YUYV, UYVY, NV12, YU12, NV21, YV12,
//!   RGB3, BGR3, and GREY last because it loses colour.
//! - A forced format must be offered, or the error lists what is.
//! - The frame interval is the longest one that still delivers a frame every
//!   `--interval-ms` (the lowest frame rate that meets it), or the fastest the
//!   camera has if none does.
//! - A camera with nothing usable gets an error that says what to do instead:
//!   H.264-only cameras and raw Bayer sensors (CSI cameras under libcamera).

use std::fmt;
use std::time::Duration;

use crate::config::CaptureFormat;
use crate::encode::RawFormat;

/// A pixel format's four-character code, as V4L2 spells it (`b"YUYV"`).
pub type FourCc = [u8; 4];

pub fn fourcc_str(code: &FourCc) -> String {
    // Bit 31 marks the big-endian variant of a format (V4L2_PIX_FMT_FLAG_BE).
    let be = code[3] & 0x80 != 0;
    let chars: String = code
        .iter()
        .map(|&b| b & 0x7F)
        .map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    let name = chars.trim_end().to_owned();
    if be {
        format!("{name}-BE")
    } else {
        name
    }
}

/// The sizes a device offers for one format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeOffer {
    Discrete {
        width: u32,
        height: u32,
    },
    /// A range; `Continuous` is a range with step 1.
    Stepwise {
        min_width: u32,
        max_width: u32,
        step_width: u32,
        min_height: u32,
        max_height: u32,
        step_height: u32,
    },
}

/// One format as the device lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOffer {
    pub fourcc: FourCc,
    pub description: String,
    pub sizes: Vec<SizeOffer>,
}

/// How frames of a format become JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// The camera's JPEG is passed through (with Huffman tables added if missing).
    PassThrough,
    /// Encoded with turbojpeg from this layout.
    Encode(RawFormat),
}

/// Cost rank for `auto`: lower is preferred among equally near sizes.
fn usable(fourcc: &FourCc) -> Option<(Handling, u8)> {
    Some(match fourcc {
        b"MJPG" | b"JPEG" => (Handling::PassThrough, 0),
        b"YUYV" => (Handling::Encode(RawFormat::Yuyv), 1),
        b"UYVY" => (Handling::Encode(RawFormat::Uyvy), 2),
        b"NV12" => (Handling::Encode(RawFormat::Nv12), 3),
        b"YU12" => (Handling::Encode(RawFormat::I420), 4),
        b"NV21" => (Handling::Encode(RawFormat::Nv21), 5),
        b"YV12" => (Handling::Encode(RawFormat::Yv12), 6),
        b"RGB3" => (Handling::Encode(RawFormat::Rgb24), 7),
        b"BGR3" => (Handling::Encode(RawFormat::Bgr24), 8),
        b"GREY" => (Handling::Encode(RawFormat::Grey), 9),
        _ => return None,
    })
}

/// Whether kindercam can show frames of this format.
pub fn is_usable(fourcc: &FourCc) -> bool {
    usable(fourcc).is_some()
}

/// Whether frames of this format are JPEG already (passed through, never encoded).
pub fn is_jpeg(fourcc: &FourCc) -> bool {
    matches!(usable(fourcc), Some((Handling::PassThrough, _)))
}

/// Whether `--format` accepts this fourcc.
fn forced_matches(want: CaptureFormat, fourcc: &FourCc) -> bool {
    match want {
        CaptureFormat::Auto => usable(fourcc).is_some(),
        CaptureFormat::Mjpeg => is_jpeg(fourcc),
        CaptureFormat::Yuyv => fourcc == b"YUYV",
        CaptureFormat::Uyvy => fourcc == b"UYVY",
        CaptureFormat::Nv12 => fourcc == b"NV12",
        CaptureFormat::Yuv420 => fourcc == b"YU12",
        CaptureFormat::Rgb24 => fourcc == b"RGB3",
        CaptureFormat::Grey => fourcc == b"GREY",
    }
}

fn is_bayer(offer: &FormatOffer) -> bool {
    let d = offer.description.to_ascii_lowercase();
    d.contains("bayer")
        || matches!(
            &offer.fourcc,
            b"BA81"
                | b"GBRG"
                | b"GRBG"
                | b"RGGB"
                | b"BG10"
                | b"GB10"
                | b"BA10"
                | b"RG10"
                | b"BG12"
                | b"GB12"
                | b"BA12"
                | b"RG12"
                | b"pBAA"
                | b"pGAA"
                | b"pgAA"
                | b"pRAA"
                | b"pBCC"
                | b"pGCC"
                | b"pgCC"
                | b"pRCC"
                | b"BYR2"
        )
}

fn is_video_codec(fourcc: &FourCc) -> bool {
    matches!(
        fourcc,
        b"H264" | b"AVC1" | b"HEVC" | b"H265" | b"VP80" | b"VP90" | b"MPG4" | b"MPG2" | b"S264"
    )
}

/// What was chosen, and why, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub fourcc: FourCc,
    pub handling: Handling,
    pub width: u32,
    pub height: u32,
    pub reason: String,
}

/// Why nothing could be chosen; the text says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    NoFormats,
    ForcedNotOffered {
        want: CaptureFormat,
        offered: Vec<String>,
    },
    OnlyVideoCodecs {
        offered: Vec<String>,
    },
    OnlyBayer {
        offered: Vec<String>,
    },
    NothingUsable {
        offered: Vec<String>,
    },
}

pub const CSI_ADVICE: &str =
    "this looks like a raw camera sensor (a Raspberry Pi CSI camera under \
     libcamera), which needs libcamera's image pipeline: use \
     --source \"exec:rpicam-vid -t 0 --codec mjpeg -o -\" instead of the /dev/video device";

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::NoFormats => {
                f.write_str("the device lists no capture formats (is it a capture device?)")
            }
            NegotiationError::ForcedNotOffered { want, offered } => write!(
                f,
                "the requested format {want} is not offered by this camera; it offers {}; \
                 use --format auto (format = \"auto\" in the file) to let kindercam choose",
                offered.join(", ")
            ),
            NegotiationError::OnlyVideoCodecs { offered } => write!(
                f,
                "the camera offers only compressed video ({}), which browsers cannot show as \
                 pictures and kindercam does not decode; use a camera with MJPEG or YUYV, or \
                 convert it with an exec: source, e.g. --source \"exec:ffmpeg -loglevel error \
                 -f v4l2 -input_format h264 -i /dev/videoN -f mjpeg -q:v 5 -\"",
                offered.join(", ")
            ),
            NegotiationError::OnlyBayer { offered } => write!(
                f,
                "the device offers only raw Bayer formats ({}): {CSI_ADVICE}",
                offered.join(", ")
            ),
            NegotiationError::NothingUsable { offered } => write!(
                f,
                "none of the camera's formats ({}) can be used; kindercam takes MJPEG, YUYV, \
                 UYVY, NV12, NV21, YU12, YV12, RGB3, BGR3 or GREY",
                offered.join(", ")
            ),
        }
    }
}

impl std::error::Error for NegotiationError {}

/// How far `(w, h)` is from the request, in scale terms: 320 vs 640 is as far as
/// 1280 vs 640.
fn distance(w: u32, h: u32, want_w: u32, want_h: u32) -> f64 {
    let r = |a: u32, b: u32| (f64::from(a.max(1)) / f64::from(b.max(1))).ln().abs();
    r(w, want_w) + r(h, want_h)
}

fn snap(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let step = step.max(1);
    let clamped = want.clamp(min, max.max(min));
    let snapped = min + (clamped - min + step / 2) / step * step;
    if snapped > max.max(min) {
        snapped - step
    } else {
        snapped
    }
}

/// The size of `offer` nearest to the request.
pub fn nearest_size(sizes: &[SizeOffer], want_w: u32, want_h: u32) -> Option<(u32, u32)> {
    sizes
        .iter()
        .map(|s| match *s {
            SizeOffer::Discrete { width, height } => (width, height),
            SizeOffer::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => (
                snap(want_w, min_width, max_width, step_width),
                snap(want_h, min_height, max_height, step_height),
            ),
        })
        .min_by(|a, b| {
            distance(a.0, a.1, want_w, want_h)
                .total_cmp(&distance(b.0, b.1, want_w, want_h))
                // Equally near: prefer the larger (downscaling in the browser is free).
                .then((b.0 * b.1).cmp(&(a.0 * a.1)))
        })
}

/// Picks the format and size to ask for.
pub fn choose(
    offers: &[FormatOffer],
    want: CaptureFormat,
    want_w: u32,
    want_h: u32,
) -> Result<Choice, NegotiationError> {
    if offers.is_empty() {
        return Err(NegotiationError::NoFormats);
    }
    let names: Vec<String> = offers.iter().map(|o| fourcc_str(&o.fourcc)).collect();
    let mut best: Option<(f64, u8, &FormatOffer, Handling, u32, u32)> = None;
    for offer in offers.iter().filter(|o| forced_matches(want, &o.fourcc)) {
        let Some((handling, rank)) = usable(&offer.fourcc) else {
            continue;
        };
        // A driver that lists no sizes takes what it is given (S_FMT adjusts it).
        let (w, h) = nearest_size(&offer.sizes, want_w, want_h).unwrap_or((want_w, want_h));
        let d = distance(w, h, want_w, want_h);
        let better = match &best {
            None => true,
            Some((bd, br, ..)) => d < bd - 1e-9 || ((d - bd).abs() <= 1e-9 && rank < *br),
        };
        if better {
            best = Some((d, rank, offer, handling, w, h));
        }
    }
    let Some((d, _, offer, handling, width, height)) = best else {
        return Err(if want != CaptureFormat::Auto {
            NegotiationError::ForcedNotOffered {
                want,
                offered: names,
            }
        } else if offers.iter().all(|o| is_video_codec(&o.fourcc)) {
            NegotiationError::OnlyVideoCodecs { offered: names }
        } else if offers
            .iter()
            .all(|o| is_bayer(o) || is_video_codec(&o.fourcc))
        {
            NegotiationError::OnlyBayer { offered: names }
        } else {
            NegotiationError::NothingUsable { offered: names }
        });
    };
    let fourcc = offer.fourcc;
    let name = fourcc_str(&fourcc);
    let how = match handling {
        Handling::PassThrough => "passed through without re-encoding",
        Handling::Encode(_) => "encoded to JPEG",
    };
    let size = if d <= 1e-9 {
        format!("{width}x{height} as requested")
    } else {
        format!("{width}x{height}, the nearest size offered to the requested {want_w}x{want_h}")
    };
    let why = if want != CaptureFormat::Auto {
        format!("format {want} was asked for")
    } else if handling == Handling::PassThrough {
        "the camera offers MJPEG at this size".to_owned()
    } else if offers.iter().any(|o| is_jpeg(&o.fourcc)) {
        "MJPEG is offered only at sizes further from the request".to_owned()
    } else {
        "the camera offers no MJPEG".to_owned()
    };
    Ok(Choice {
        fourcc,
        handling,
        width,
        height,
        reason: format!("{name} {size}, {how} ({why})"),
    })
}

/// A frame interval as the device lists them, in seconds as a fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalOffer {
    Discrete {
        num: u32,
        den: u32,
    },
    Stepwise {
        min: (u32, u32),
        max: (u32, u32),
        step: (u32, u32),
    },
}

fn secs((num, den): (u32, u32)) -> f64 {
    f64::from(num) / f64::from(den.max(1))
}

/// The interval (num, den) to ask for: the longest that is still no longer than
/// `target`, else the shortest on offer. `None` when the device lists none.
pub fn choose_interval(offers: &[IntervalOffer], target: Duration) -> Option<(u32, u32)> {
    let t = target.as_secs_f64();
    let mut candidates: Vec<(u32, u32)> = Vec::new();
    for offer in offers {
        match *offer {
            IntervalOffer::Discrete { num, den } if num > 0 && den > 0 => {
                candidates.push((num, den))
            }
            IntervalOffer::Discrete { .. } => {}
            IntervalOffer::Stepwise { min, max, step } => {
                let (lo, hi) = (secs(min), secs(max));
                candidates.push(min);
                candidates.push(max);
                if t > lo && t < hi {
                    // Express the target in microseconds, snapped down to the step.
                    let step_s = secs(step).max(1e-6);
                    let k = ((t - lo) / step_s).floor();
                    let us = ((lo + k * step_s) * 1e6).round() as u32;
                    candidates.push((us.max(1), 1_000_000));
                }
            }
        }
    }
    let meets = candidates
        .iter()
        .copied()
        .filter(|&c| secs(c) <= t + 1e-6)
        .max_by(|a, b| secs(*a).total_cmp(&secs(*b)));
    meets.or_else(|| {
        candidates
            .iter()
            .copied()
            .min_by(|a, b| secs(*a).total_cmp(&secs(*b)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(code: &[u8; 4], sizes: &[(u32, u32)]) -> FormatOffer {
        FormatOffer {
            fourcc: *code,
            description: String::new(),
            sizes: sizes
                .iter()
                .map(|&(width, height)| SizeOffer::Discrete { width, height })
                .collect(),
        }
    }

    const WEBCAM: [(u32, u32); 4] = [(320, 240), (640, 480), (1280, 720), (1920, 1080)];

    #[test]
    fn mjpeg_at_the_requested_size_is_preferred() {
        let offers = [offer(b"YUYV", &WEBCAM), offer(b"MJPG", &WEBCAM)];
        let c = choose(&offers, CaptureFormat::Auto, 1280, 720).unwrap();
        assert_eq!(&c.fourcc, b"MJPG");
        assert_eq!(c.handling, Handling::PassThrough);
        assert_eq!((c.width, c.height), (1280, 720));
        assert!(c.reason.contains("passed through"), "{}", c.reason);
    }

    #[test]
    fn raw_at_the_exact_size_beats_mjpeg_at_another() {
        let offers = [
            offer(b"MJPG", &[(1280, 720)]),
            offer(b"YUYV", &[(640, 480)]),
        ];
        let c = choose(&offers, CaptureFormat::Auto, 640, 480).unwrap();
        assert_eq!(&c.fourcc, b"YUYV");
        assert_eq!(c.handling, Handling::Encode(RawFormat::Yuyv));
        assert!(c.reason.contains("MJPEG is offered only"), "{}", c.reason);
    }

    #[test]
    fn vivid_like_device_gets_yuyv_and_the_nearest_size() {
        let sizes = [
            (320, 180),
            (640, 360),
            (640, 480),
            (1280, 720),
            (1920, 1080),
        ];
        let offers = [
            offer(b"YUYV", &sizes),
            offer(b"UYVY", &sizes),
            offer(b"NV12", &sizes),
            offer(b"GREY", &sizes),
            offer(b"BA81", &sizes),
        ];
        let c = choose(&offers, CaptureFormat::Auto, 800, 600).unwrap();
        assert_eq!(&c.fourcc, b"YUYV");
        assert_eq!((c.width, c.height), (640, 480));
        assert!(c.reason.contains("nearest"), "{}", c.reason);
        let c = choose(&offers, CaptureFormat::Auto, 1200, 700).unwrap();
        assert_eq!((c.width, c.height), (1280, 720));
    }

    #[test]
    fn forced_formats_are_honoured_or_refused_with_the_list() {
        let offers = [offer(b"YUYV", &WEBCAM), offer(b"MJPG", &WEBCAM)];
        let c = choose(&offers, CaptureFormat::Yuyv, 640, 480).unwrap();
        assert_eq!(&c.fourcc, b"YUYV");
        assert!(
            c.reason.contains("format yuyv was asked for"),
            "{}",
            c.reason
        );
        let e = choose(&offers, CaptureFormat::Nv12, 640, 480).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("format nv12 is not offered") && text.contains("YUYV, MJPG"),
            "{text}"
        );
    }

    #[test]
    fn stepwise_sizes_are_snapped_to_the_step() {
        let offers = [FormatOffer {
            fourcc: *b"YUYV",
            description: String::new(),
            sizes: vec![SizeOffer::Stepwise {
                min_width: 16,
                max_width: 1920,
                step_width: 16,
                min_height: 16,
                max_height: 1080,
                step_height: 8,
            }],
        }];
        let c = choose(&offers, CaptureFormat::Auto, 650, 485).unwrap();
        assert_eq!((c.width, c.height), (656, 488));
        let c = choose(&offers, CaptureFormat::Auto, 4000, 3000).unwrap();
        assert_eq!((c.width, c.height), (1920, 1080));
    }

    #[test]
    fn unusable_cameras_get_advice() {
        let h264 = [offer(b"H264", &WEBCAM)];
        let text = choose(&h264, CaptureFormat::Auto, 640, 480)
            .unwrap_err()
            .to_string();
        assert!(text.contains("H264") && text.contains("exec:"), "{text}");

        let mut bayer = offer(b"pRAA", &[(2592, 1944)]);
        bayer.description = "10-bit Bayer RGRG/GBGB Packed".into();
        let text = choose(
            &[bayer, offer(b"BA81", &[(640, 480)])],
            CaptureFormat::Auto,
            640,
            480,
        )
        .unwrap_err()
        .to_string();
        assert!(
            text.contains("rpicam-vid") && text.contains("libcamera"),
            "{text}"
        );

        let odd = [offer(b"Y16 ", &WEBCAM), offer(b"HSV3", &WEBCAM)];
        let text = choose(&odd, CaptureFormat::Auto, 640, 480)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("Y16, HSV3") && text.contains("YUYV"),
            "{text}"
        );
        assert_eq!(
            choose(&[], CaptureFormat::Auto, 640, 480).unwrap_err(),
            NegotiationError::NoFormats
        );
    }

    fn discrete(fps: &[u32]) -> Vec<IntervalOffer> {
        fps.iter()
            .map(|&f| IntervalOffer::Discrete { num: 1, den: f })
            .collect()
    }

    #[test]
    fn fourcc_names_read_like_v4l2_ctl() {
        assert_eq!(fourcc_str(b"YUYV"), "YUYV");
        assert_eq!(fourcc_str(b"Y16 "), "Y16");
        assert_eq!(fourcc_str(&[b'Y', b'1', b'6', b' ' | 0x80]), "Y16-BE");
    }

    #[test]
    fn lowest_frame_rate_that_meets_the_interval() {
        let offers = discrete(&[60, 30, 25, 15, 10, 5, 2, 1]);
        let ms = Duration::from_millis;
        assert_eq!(choose_interval(&offers, ms(500)), Some((1, 2)));
        assert_eq!(choose_interval(&offers, ms(400)), Some((1, 5)));
        assert_eq!(choose_interval(&offers, ms(100)), Some((1, 10)));
        assert_eq!(choose_interval(&offers, ms(5000)), Some((1, 1)));
        // Faster than the camera can go: its fastest rate.
        assert_eq!(choose_interval(&offers, ms(5)), Some((1, 60)));
        // A webcam that only does 30 and 15: 15 fps for a 500 ms interval.
        assert_eq!(
            choose_interval(&discrete(&[30, 15]), ms(500)),
            Some((1, 15))
        );
        assert_eq!(choose_interval(&[], ms(500)), None);
    }

    #[test]
    fn stepwise_intervals_take_the_target_itself() {
        let offers = [IntervalOffer::Stepwise {
            min: (1, 60),
            max: (1, 1),
            step: (1, 1_000_000),
        }];
        assert_eq!(
            choose_interval(&offers, Duration::from_millis(250)),
            Some((250_000, 1_000_000))
        );
        assert_eq!(
            choose_interval(&offers, Duration::from_millis(5)),
            Some((1, 60))
        );
    }
}
