//! Pictures and timing shared by the benches (`mod common;` in each): a camera-like
//! test picture, its YUYV form, and the fastest-batch timer.

use std::time::{Duration, Instant};

/// A camera-like picture: soft gradients, edges, fine texture and a little sensor
/// noise, so the entropy coder has realistic work (flat test images are far cheaper).
pub fn picture(w: usize, h: usize) -> Vec<u8> {
    let mut rgb = vec![0u8; w * h * 3];
    let mut noise = 0x2545_f491u32;
    for y in 0..h {
        for x in 0..w {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let n = (noise % 9) as f32 - 4.0;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            // A wall, a window, a table and some "toys".
            let mut r = 170.0 - 60.0 * fy + 20.0 * (fx * 6.0).sin();
            let mut g = 150.0 - 40.0 * fy + 15.0 * (fy * 9.0).cos();
            let mut b = 120.0 + 50.0 * fx;
            if (0.6..0.9).contains(&fx) && (0.1..0.45).contains(&fy) {
                (r, g, b) = (200.0, 220.0, 245.0);
            }
            if fy > 0.7 {
                let grain = ((x / 3 + y / 7) % 5) as f32 * 6.0;
                (r, g, b) = (120.0 + grain, 80.0 + grain, 40.0);
            }
            let blob = ((x * 7 / w.max(1) + y * 5 / h.max(1)) % 4) as f32;
            if ((x / 40) + (y / 40)) % 7 == 0 {
                (r, g, b) = (40.0 + 50.0 * blob, 180.0 - 30.0 * blob, 60.0 + 40.0 * blob);
            }
            let i = (y * w + x) * 3;
            rgb[i] = (r + n).clamp(0.0, 255.0) as u8;
            rgb[i + 1] = (g + n).clamp(0.0, 255.0) as u8;
            rgb[i + 2] = (b + n).clamp(0.0, 255.0) as u8;
        }
    }
    rgb
}

/// JFIF (full-range BT.601) YCbCr of one pixel.
fn ycbcr(p: &[u8]) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    (c(y), c(cb), c(cr))
}

/// Packed YUYV, as a UVC webcam delivers it.
pub fn to_yuyv(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 2);
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let a = ycbcr(&rgb[(y * w + x) * 3..]);
            let b = ycbcr(&rgb[(y * w + x + 1) * 3..]);
            let u = ((u16::from(a.1) + u16::from(b.1)) / 2) as u8;
            let v = ((u16::from(a.2) + u16::from(b.2)) / 2) as u8;
            out.extend_from_slice(&[a.0, u, b.0, v]);
        }
    }
    out
}

/// Runs `f` in batches of about 50 ms for `secs` in total; returns the ms per call of
/// the fastest batch. On a shared machine other work only ever slows a batch down,
/// so the fastest one is the best estimate of the real cost.
pub fn time_it(secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < secs {
        let batch = Instant::now();
        let mut n = 0u32;
        while batch.elapsed() < Duration::from_millis(50) {
            f();
            n += 1;
        }
        best = best.min(batch.elapsed().as_secs_f64() * 1000.0 / f64::from(n));
    }
    best
}
