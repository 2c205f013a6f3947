//! Per-frame cost of turning a camera frame into what viewers get, at the sizes a
//! classroom camera runs at: YUYV -> JPEG at quality 75 (de-interleave + turbojpeg
//! from planes), the same compression from ready-made planes (libjpeg-turbo alone,
//! the practical limit of this step), and MJPEG pass-through (checking the frame,
//! adding Huffman tables when missing, and the base64 data URL every frame gets).
//! Then the small variant for weak links (`?size=small`): `shrink::Shrinker`, which
//! works on the DCT coefficients, beside how it was made before, libjpeg-turbo's
//! half-size decode and an RGB encode at the same quality.
//!
//! When libjpeg-turbo's own `tjbench` is installed (Debian: libjpeg-turbo-progs)
//! it is run on the same picture and size for comparison.
//!
//!     cargo bench --bench encode              # ~1 minute
//!     BENCH_SECONDS=1 cargo bench --bench encode
//!
//! Never built with target-cpu=native: figures are for the baseline CPU a
//! distribution package would run on; libjpeg-turbo picks its SIMD at run time.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

use kindercam::encode::{Encoder, RawFormat, RawImage};
use kindercam::frame::Frame;
use kindercam::mjpeg;
use kindercam::shrink::{Shrinker, SMALL_QUALITY};
use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

mod common;
use common::{picture, time_it, to_yuyv};

const QUALITY: u8 = 75;
/// Short tjbench runs per figure (50 ms each, like our batches); the fastest counts.
const ROUNDS: usize = 20;

fn write_ppm(rgb: &[u8], w: usize, h: usize) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("bench-picture-{w}x{h}.ppm"));
    let mut data = format!("P6\n{w} {h}\n255\n").into_bytes();
    data.extend_from_slice(rgb);
    std::fs::write(&path, data).expect("write PPM");
    path
}

/// libjpeg-turbo's own figure at QUALITY and 4:2:0, in ms per frame. With `yuv`,
/// tjbench reports RGB->YUV ("Encode YUV") and YUV->JPEG ("Comp from YUV")
/// separately, and the latter is the step ours must match; without, the whole
/// RGB->JPEG compression ("Compress"), for context.
fn tjbench(ppm: &PathBuf, yuv: bool, secs: f64) -> Option<f64> {
    let mut cmd = Command::new("tjbench");
    cmd.arg(ppm)
        .arg(QUALITY.to_string())
        .args(["-subsamp", "420", "-componly", "-nowrite", "-benchtime"])
        .arg(format!("{secs}"))
        .args(["-warmup", "0.05"]);
    if yuv {
        cmd.arg("-yuv");
    }
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Comp from YUV --> Frame rate:         582.292293 fps"
    let label = if yuv { "Comp from YUV" } else { "Compress " };
    let fps = text
        .lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split("Frame rate:").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    if fps.is_none() {
        eprintln!("could not read tjbench's output:\n{text}");
    }
    fps.map(|fps| 1000.0 / fps)
}

/// The fastest of several short tjbench runs, as for our own figures.
fn tjbench_best(ppm: &PathBuf, yuv: bool) -> Option<f64> {
    (0..ROUNDS)
        .filter_map(|_| tjbench(ppm, yuv, 0.05))
        .min_by(f64::total_cmp)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.05 } else { 3.0 });
    println!("kindercam encode bench: quality {QUALITY}, {secs} s per figure");
    println!(
        "{:<11} {:>14} {:>16} {:>12} {:>11} {:>12} {:>14} {:>10}",
        "size",
        "yuyv->jpeg ms",
        "planes->jpeg ms",
        "tj yuv ms",
        "vs tj yuv",
        "tj rgb ms",
        "pass-thru ms",
        "+dht ms"
    );
    let mut small = Vec::new();
    for (w, h) in [(640usize, 480usize), (1280, 720)] {
        let rgb = picture(w, h);
        let yuyv = to_yuyv(&rgb, w, h);
        let mut enc = Encoder::new(QUALITY).expect("encoder");
        let raw = RawImage {
            format: RawFormat::Yuyv,
            data: &yuyv,
            width: w,
            height: h,
            stride: w * 2,
        };
        let jpeg = enc.encode_raw(&raw).expect("encode");
        let yuyv_ms = time_it(secs, || {
            black_box(enc.encode_raw(black_box(&raw)).unwrap());
        });

        // The same compression from planes that are already there: libjpeg-turbo alone.
        let (cw, ch) = (w / 2, h / 2);
        let mut i420 = vec![0u8; w * h + 2 * cw * ch];
        for y in 0..h {
            for x in 0..w {
                i420[y * w + x] = yuyv[(y * w + x) * 2];
            }
        }
        for y in 0..ch {
            for x in 0..cw {
                let g = (2 * y * w + 2 * x) * 2;
                i420[w * h + y * cw + x] = yuyv[g + 1];
                i420[w * h + cw * ch + y * cw + x] = yuyv[g + 3];
            }
        }
        let planes = RawImage {
            format: RawFormat::I420,
            data: &i420,
            width: w,
            height: h,
            stride: w,
        };
        let planes_ms = time_it(secs, || {
            black_box(enc.encode_raw(black_box(&planes)).unwrap());
        });

        // Pass-through: validate, (maybe) add tables, copy out of the buffer, data URL.
        let pass_ms = time_it(secs, || {
            let (fixed, info) = mjpeg::repair(black_box(&jpeg)).unwrap();
            black_box(Frame::from_jpeg(
                fixed.into_owned(),
                info.width,
                info.height,
            ));
        });
        let stripped = mjpeg::strip_huffman_tables(&jpeg);
        let dht_ms = time_it(secs, || {
            let (fixed, info) = mjpeg::repair(black_box(&stripped)).unwrap();
            black_box(Frame::from_jpeg(
                fixed.into_owned(),
                info.width,
                info.height,
            ));
        });

        let ppm = write_ppm(&rgb, w, h);
        let (tj_yuv, tj_rgb) = if quick {
            (None, None)
        } else {
            (tjbench_best(&ppm, true), tjbench_best(&ppm, false))
        };
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |ms| format!("{ms:.3}"));
        let ratio = tj_yuv.map_or("-".to_owned(), |tj| {
            format!("{:+.1}%", (yuyv_ms / tj - 1.0) * 100.0)
        });
        println!(
            "{:<11} {:>14.3} {:>16.3} {:>12} {:>11} {:>12} {:>14.3} {:>10.3}",
            format!("{w}x{h}"),
            yuyv_ms,
            planes_ms,
            ms(tj_yuv),
            ratio,
            ms(tj_rgb),
            pass_ms,
            dht_ms
        );
        println!(
            "            ({} bytes per JPEG; picture for tjbench: {})",
            jpeg.len(),
            ppm.display()
        );
        small.push(small_row(secs, &jpeg, w, h));
    }
    println!();
    println!(
        "{:<11} {:>16} {:>14} {:>12} {:>12}",
        "small of", "shrink ms", "bytes", "decode ms", "bytes"
    );
    for row in small {
        println!("{row}");
    }
}

/// The small variant of `jpeg` (w x h): the shrinker, then the half-size decode
/// and encode it replaced, in turn in the same run.
fn small_row(secs: f64, jpeg: &[u8], w: usize, h: usize) -> String {
    let mut shrinker = Shrinker::new().expect("shrinker");
    let ours = shrinker.shrink(jpeg).expect("shrink").jpeg.len();
    let shrink_ms = time_it(secs, || {
        black_box(shrinker.shrink(black_box(jpeg)).unwrap());
    });
    let half = ScalingFactor::ONE_HALF;
    let mut decoder = Decompressor::new().expect("decompressor");
    decoder.set_scaling_factor(half).expect("scale");
    let mut enc = Encoder::new(SMALL_QUALITY).expect("encoder");
    let mut rgb = Vec::new();
    let mut decode_small = |jpeg: &[u8]| {
        let size = decoder.read_header(jpeg).unwrap().scaled(half);
        rgb.resize(size.width * size.height * 3, 0);
        let image = Image {
            pixels: &mut rgb[..],
            width: size.width,
            pitch: size.width * 3,
            height: size.height,
            format: PixelFormat::RGB,
        };
        decoder.decompress(jpeg, image).unwrap();
        enc.encode_rgb(&rgb, size.width, size.height).unwrap()
    };
    let theirs = decode_small(jpeg).len();
    let decode_ms = time_it(secs, || {
        black_box(decode_small(black_box(jpeg)));
    });
    format!(
        "{:<11} {:>16.3} {:>14} {:>12.3} {:>12}",
        format!("{w}x{h}"),
        shrink_ms,
        ours,
        decode_ms,
        theirs
    )
}
