//! What a privacy mask costs per 640x480 frame, side by side in one run, against
//! the bar: masking an MJPEG frame in the DCT domain must cost at most 1.5x
//! a YUYV -> JPEG encode of the same size, and less than a full decode and
//! re-encode of the frame. Figures:
//!
//! - `dct 1` / `dct 4`: `JpegMasker::mask` of a camera-like q75 4:2:0 JPEG with one
//!   and four rectangles (entropy decode, the filter, entropy encode, copy out);
//! - `yuyv enc`: the project's YUYV -> JPEG encode (`Encoder::encode_raw`);
//! - `re-enc`: the cheapest full round trip, decode to YUV planes and compress
//!   them again at q75 (no colour conversion either way);
//! - `raw 4`: `mask_raw` of the YUYV frame with four rectangles, done before the
//!   encode on raw sources.
//!
//! The machine is shared and noisy, so the cases are interleaved: each of ROUNDS
//! rounds times every case once (fastest 50 ms batch of the round), and the table
//! gives the median and the range over the rounds, and the same for the ratios
//! computed within each round.
//!
//!     cargo bench --bench mask              # ~1 minute
//!     BENCH_SECONDS=0.3 cargo bench --bench mask

use std::hint::black_box;

use kindercam::encode::{Encoder, RawFormat, RawImage};
use kindercam::privacy::{mask_raw, JpegMasker, Mask, Rect};
use turbojpeg::{Compressor, Decompressor, Subsamp, YuvImage};

mod common;
use common::{picture, time_it, to_yuyv};

const QUALITY: u8 = 75;
const ROUNDS: usize = 9;
const CASES: [&str; 5] = ["dct 1", "dct 4", "yuyv enc", "re-enc", "raw 4"];

fn mask(rects: &[(f64, f64, f64, f64)]) -> Mask {
    Mask::new(
        rects
            .iter()
            .map(|&(x, y, w, h)| Rect { x, y, w, h })
            .collect(),
    )
    .expect("mask")
}

/// Median, smallest and largest.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.05 } else { 1.0 });
    let rounds = if quick { 1 } else { ROUNDS };
    let (w, h) = (640usize, 480usize);
    let rgb = picture(w, h);
    let yuyv = to_yuyv(&rgb, w, h);
    let raw = RawImage {
        format: RawFormat::Yuyv,
        data: &yuyv,
        width: w,
        height: h,
        stride: w * 2,
    };
    let mut enc = Encoder::new(QUALITY).expect("encoder");
    let jpeg = enc.encode_raw(&raw).expect("encode");

    // The example rectangle, then three more (a door, a corner, a strip).
    let one = mask(&[(0.05, 0.6, 0.3, 0.4)]);
    let four = mask(&[
        (0.05, 0.6, 0.3, 0.4),
        (0.7, 0.1, 0.2, 0.5),
        (0.0, 0.0, 0.1, 0.1),
        (0.4, 0.05, 0.25, 0.08),
    ]);
    let mut masker = JpegMasker::new().expect("masker");

    let mut dec = Decompressor::new().expect("decompressor");
    let mut comp = Compressor::new().expect("compressor");
    comp.set_quality(i32::from(QUALITY)).expect("quality");
    comp.set_subsamp(Subsamp::Sub2x2).expect("subsamp");
    let mut planes = vec![0u8; turbojpeg::yuv_pixels_len(w, 1, h, Subsamp::Sub2x2).expect("len")];
    let mut raw_buf = yuyv.clone();

    println!(
        "kindercam mask bench: {w}x{h}, q{QUALITY} 4:2:0 frame of {} bytes, {rounds} rounds of {secs} s per case",
        jpeg.len()
    );
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for _ in 0..rounds {
        ms[0].push(time_it(secs, || {
            black_box(masker.mask(black_box(&jpeg), &one).expect("mask"));
        }));
        ms[1].push(time_it(secs, || {
            black_box(masker.mask(black_box(&jpeg), &four).expect("mask"));
        }));
        ms[2].push(time_it(secs, || {
            black_box(enc.encode_raw(black_box(&raw)).expect("encode"));
        }));
        ms[3].push(time_it(secs, || {
            dec.decompress_to_yuv(
                black_box(&jpeg),
                YuvImage {
                    pixels: &mut planes[..],
                    width: w,
                    align: 1,
                    height: h,
                    subsamp: Subsamp::Sub2x2,
                },
            )
            .expect("decode");
            black_box(
                comp.compress_yuv_to_vec(YuvImage {
                    pixels: &planes[..],
                    width: w,
                    align: 1,
                    height: h,
                    subsamp: Subsamp::Sub2x2,
                })
                .expect("re-encode"),
            );
        }));
        ms[4].push(time_it(secs, || {
            mask_raw(black_box(&mut raw_buf), RawFormat::Yuyv, w, h, w * 2, &four).expect("raw");
        }));
    }
    println!("{:<10} {:>10} {:>19}", "case", "median ms", "range ms");
    for (name, v) in CASES.iter().zip(&ms) {
        let (med, lo, hi) = stats(v.clone());
        println!("{name:<10} {med:>10.3} {:>19}", format!("{lo:.3}-{hi:.3}"));
    }
    let ratio = |a: usize, b: usize| stats(ms[a].iter().zip(&ms[b]).map(|(x, y)| x / y).collect());
    println!(
        "{:<22} {:>7} {:>13} {:>6}",
        "ratio (per round)", "median", "range", "bar"
    );
    for (label, a, b, bar) in [
        ("dct 1 / yuyv enc", 0, 2, "<= 1.5"),
        ("dct 4 / yuyv enc", 1, 2, "<= 1.5"),
        ("dct 1 / re-enc", 0, 3, "< 1"),
        ("dct 4 / re-enc", 1, 3, "< 1"),
    ] {
        let (med, lo, hi) = ratio(a, b);
        println!(
            "{label:<22} {med:>7.2} {:>13} {bar:>6}",
            format!("{lo:.2}-{hi:.2}")
        );
    }
    let masked = masker.mask(&jpeg, &four).expect("mask");
    println!(
        "            (masked frame, 4 rectangles: {} bytes)",
        masked.len()
    );
}
