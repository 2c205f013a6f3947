//! Per-upload cost of a browser's PNG or WebP canvas at 640x480: decoding it
//! (`kindercam::decode`, within the upload limits) and encoding the result once
//! to JPEG at quality 75, what intake does for every such upload. The PNG is
//! RGBA, as `canvas.toDataURL()` writes it (the prototype's camera page); the
//! WebP is lossless from `image-webp`'s encoder and, when `ffmpeg` with libwebp
//! is installed, lossy at quality 80 like Chromium's `toDataURL("image/webp")`.
//!
//!     cargo bench --bench decode
//!     BENCH_SECONDS=1 cargo bench --bench decode

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use kindercam::decode::{decode, Format, Limits};
use kindercam::encode::Encoder;

// The YUYV helpers are for the camera benches.
#[allow(dead_code)]
mod common;
use common::{picture, time_it};

const W: usize = 640;
const H: usize = 480;

fn rgba(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

fn png(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, W as u32, H as u32);
    encoder.set_color(png::ColorType::Rgba);
    let mut writer = encoder.write_header().expect("PNG header");
    writer.write_image_data(&rgba(rgb)).expect("PNG data");
    writer.finish().expect("PNG end");
    out
}

fn webp_lossless(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(&rgba(rgb), W as u32, H as u32, image_webp::ColorType::Rgba8)
        .expect("WebP");
    out
}

/// A lossy WebP by ffmpeg's libwebp, if it is there.
fn webp_lossy(rgb: &[u8]) -> Option<Vec<u8>> {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let raw = dir.join("bench-decode.rgb");
    let out = dir.join("bench-decode.webp");
    std::fs::write(&raw, rgb).ok()?;
    let status = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
        ])
        .args(["-s", &format!("{W}x{H}"), "-i"])
        .arg(&raw)
        .args(["-c:v", "libwebp", "-quality", "80", "-frames:v", "1"])
        .arg(&out)
        .status()
        .ok()?;
    status.success().then(|| std::fs::read(&out).ok()).flatten()
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rgb = picture(W, H);
    let mut cases = vec![
        ("PNG (RGBA, toDataURL)", Format::Png, png(&rgb)),
        ("WebP lossless", Format::Webp, webp_lossless(&rgb)),
    ];
    match webp_lossy(&rgb) {
        Some(webp) => cases.push(("WebP lossy q80 (ffmpeg)", Format::Webp, webp)),
        None => println!("(no ffmpeg with libwebp: lossy WebP skipped)"),
    }
    let mut encoder = Encoder::new(75).expect("encoder");
    println!("{W}x{H}, ms per upload (fastest batch):");
    for (what, format, bytes) in cases {
        let decode_ms = time_it(secs, || {
            let limits = Limits::upload(Instant::now());
            black_box(decode(format, black_box(&bytes), &limits).expect("decodes"));
        });
        let total_ms = time_it(secs, || {
            let limits = Limits::upload(Instant::now());
            let pic = decode(format, black_box(&bytes), &limits).expect("decodes");
            let jpeg = encoder
                .encode_rgb(&pic.pixels, pic.width as usize, pic.height as usize)
                .expect("encodes");
            black_box(jpeg);
        });
        println!(
            "  {what:<26} {:>7} bytes  decode {decode_ms:6.2}  decode+JPEG {total_ms:6.2}",
            bytes.len()
        );
    }
}
