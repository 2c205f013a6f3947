//! JPEG encoding with libjpeg-turbo. An `Encoder` keeps one compressor and is
//! moved into the blocking thread that does the work, so encoding never runs on
//! the async worker threads and never re-allocates libjpeg-turbo's state.
//!
//! Camera pictures are encoded straight from their YUV planes: packed 4:2:2
//! (YUYV/UYVY) and semi-planar 4:2:0 (NV12/NV21) are only de-interleaved into
//! reused scratch planes, planar 4:2:0 is handed over as it is, and no frame takes
//! a round trip through RGB. Output is 4:2:0 (4:2:2 input has its two chroma rows
//! averaged), the subsampling browsers and cameras use, with 25% fewer blocks to
//! encode than 4:2:2.

use anyhow::{bail, Context};
use turbojpeg::{Compressor, Image, PixelFormat, Subsamp, YuvPlanesImage};

pub struct Encoder {
    compressor: Compressor,
    /// De-interleaved planes, reused from frame to frame.
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

/// Uncompressed picture layouts a camera may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// Packed 4:2:2, Y0 U Y1 V (V4L2 `YUYV`, the format every UVC webcam offers).
    Yuyv,
    /// Packed 4:2:2, U Y0 V Y1.
    Uyvy,
    /// Y plane, then interleaved U/V at 4:2:0.
    Nv12,
    /// Y plane, then interleaved V/U at 4:2:0.
    Nv21,
    /// Planar 4:2:0: Y, U, V (V4L2 `YU12`).
    I420,
    /// Planar 4:2:0: Y, V, U (V4L2 `YV12`).
    Yv12,
    /// 8-bit luma only.
    Grey,
    /// Packed R, G, B.
    Rgb24,
    /// Packed B, G, R.
    Bgr24,
}

impl RawFormat {
    /// Bytes in one frame of `height` rows whose first plane has `stride` bytes per row.
    pub fn frame_len(self, width: usize, height: usize, stride: usize) -> usize {
        let cw = width.div_ceil(2);
        let ch = height.div_ceil(2);
        match self {
            RawFormat::Yuyv | RawFormat::Uyvy | RawFormat::Grey => stride * height,
            RawFormat::Rgb24 | RawFormat::Bgr24 => stride * height,
            RawFormat::Nv12 | RawFormat::Nv21 => stride * height + stride * ch,
            RawFormat::I420 | RawFormat::Yv12 => {
                let cstride = stride.div_ceil(2).max(cw);
                stride * height + 2 * cstride * ch
            }
        }
    }

    /// Smallest bytes-per-line for `width` pixels.
    pub fn min_stride(self, width: usize) -> usize {
        match self {
            RawFormat::Yuyv | RawFormat::Uyvy => width.div_ceil(2) * 4,
            RawFormat::Rgb24 | RawFormat::Bgr24 => width * 3,
            // Each chroma row holds a U/V pair per two pixels, rounded up: with an odd
            // width it is one byte longer than the luma row.
            RawFormat::Nv12 | RawFormat::Nv21 => width.div_ceil(2) * 2,
            _ => width,
        }
    }
}

/// One uncompressed picture as the camera delivered it.
#[derive(Debug, Clone, Copy)]
pub struct RawImage<'a> {
    pub format: RawFormat,
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    /// Bytes per row of the first plane (V4L2 `bytesperline`), padding included.
    pub stride: usize,
}

impl Encoder {
    pub fn new(quality: u8) -> anyhow::Result<Encoder> {
        let mut compressor = Compressor::new().context("cannot create a JPEG compressor")?;
        compressor
            .set_quality(i32::from(quality))
            .context("cannot set JPEG quality")?;
        // 4:2:0 is what cameras and browsers produce; it halves the chroma data.
        compressor
            .set_subsamp(Subsamp::Sub2x2)
            .context("cannot set chroma subsampling")?;
        Ok(Encoder {
            compressor,
            y: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
        })
    }

    /// Encodes packed RGB of `width` x `height`.
    pub fn encode_rgb(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> anyhow::Result<Vec<u8>> {
        let image = Image {
            pixels: rgb,
            width,
            pitch: width * 3,
            height,
            format: PixelFormat::RGB,
        };
        self.compressor
            .set_subsamp(Subsamp::Sub2x2)
            .context("cannot set chroma subsampling")?;
        self.compressor
            .compress_to_vec(image)
            .context("JPEG encoding failed")
    }

    /// Encodes a camera picture, from its YUV planes where it has them.
    /// A buffer shorter than its format and size need is refused, never read past.
    pub fn encode_raw(&mut self, img: &RawImage) -> anyhow::Result<Vec<u8>> {
        let RawImage {
            format,
            data,
            width: w,
            height: h,
            stride,
        } = *img;
        if w == 0 || h == 0 {
            bail!("empty {format:?} picture ({w}x{h})");
        }
        let yuv = !matches!(
            format,
            RawFormat::Grey | RawFormat::Rgb24 | RawFormat::Bgr24
        );
        if yuv && (w % 2 != 0 || h % 2 != 0) {
            // libjpeg-turbo wants 4:2:0 planes padded to whole chroma pairs (and asserts
            // it); cameras deliver YUV in even sizes, so refuse rather than copy.
            bail!("{format:?} {w}x{h}: odd sizes are not supported for YUV formats");
        }
        if stride < format.min_stride(w) {
            bail!("{format:?} row of {stride} bytes is too short for {w} pixels");
        }
        let need = format.frame_len(w, h, stride);
        if data.len() < need {
            bail!(
                "{format:?} {w}x{h} frame has {} bytes, needs {need}: incomplete frame",
                data.len()
            );
        }
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match format {
            RawFormat::Yuyv | RawFormat::Uyvy => {
                let (y_at, u_at, v_at) = if format == RawFormat::Yuyv {
                    (0, 1, 3)
                } else {
                    (1, 0, 2)
                };
                self.y.resize(w * h, 0);
                self.u.resize(cw * ch, 0);
                self.v.resize(cw * ch, 0);
                packed422_to_i420(
                    data,
                    stride,
                    w,
                    h,
                    (y_at, u_at, v_at),
                    (&mut self.y, &mut self.u, &mut self.v),
                );
                self.planes(w, h, w, cw)
            }
            RawFormat::Nv12 | RawFormat::Nv21 => {
                let (y, uv) = data.split_at(stride * h);
                self.u.resize(cw * ch, 0);
                self.v.resize(cw * ch, 0);
                let (u, v) = if format == RawFormat::Nv12 {
                    (&mut self.u, &mut self.v)
                } else {
                    (&mut self.v, &mut self.u)
                };
                for row in 0..ch {
                    let src = &uv[row * stride..row * stride + cw * 2];
                    let (u_row, v_row) = (
                        &mut u[row * cw..(row + 1) * cw],
                        &mut v[row * cw..(row + 1) * cw],
                    );
                    for ((pair, u), v) in src.chunks_exact(2).zip(u_row).zip(v_row) {
                        *u = pair[0];
                        *v = pair[1];
                    }
                }
                let image = YuvPlanesImage {
                    y_plane: y,
                    u_plane: &self.u[..],
                    v_plane: &self.v[..],
                    width: w,
                    height: h,
                    y_stride: stride,
                    u_stride: cw,
                    v_stride: cw,
                    subsamp: Subsamp::Sub2x2,
                };
                self.compressor
                    .compress_yuv_planes_to_vec(&image)
                    .context("JPEG encoding failed")
            }
            RawFormat::I420 | RawFormat::Yv12 => {
                let cstride = stride.div_ceil(2).max(cw);
                let (y, chroma) = data.split_at(stride * h);
                let (first, second) = chroma.split_at(cstride * ch);
                let (u, v) = if format == RawFormat::I420 {
                    (first, second)
                } else {
                    (second, first)
                };
                let image = YuvPlanesImage {
                    y_plane: y,
                    u_plane: u,
                    v_plane: v,
                    width: w,
                    height: h,
                    y_stride: stride,
                    u_stride: cstride,
                    v_stride: cstride,
                    subsamp: Subsamp::Sub2x2,
                };
                self.compressor
                    .compress_yuv_planes_to_vec(&image)
                    .context("JPEG encoding failed")
            }
            RawFormat::Grey | RawFormat::Rgb24 | RawFormat::Bgr24 => {
                let (pixel_format, subsamp) = match format {
                    RawFormat::Grey => (PixelFormat::GRAY, Subsamp::Gray),
                    RawFormat::Rgb24 => (PixelFormat::RGB, Subsamp::Sub2x2),
                    _ => (PixelFormat::BGR, Subsamp::Sub2x2),
                };
                self.compressor
                    .set_subsamp(subsamp)
                    .context("cannot set chroma subsampling")?;
                let image = Image {
                    pixels: data,
                    width: w,
                    pitch: stride,
                    height: h,
                    format: pixel_format,
                };
                self.compressor
                    .compress_to_vec(image)
                    .context("JPEG encoding failed")
            }
        }
    }

    /// Compresses the scratch planes as 4:2:0.
    fn planes(
        &mut self,
        w: usize,
        h: usize,
        y_stride: usize,
        c_stride: usize,
    ) -> anyhow::Result<Vec<u8>> {
        let image = YuvPlanesImage {
            y_plane: &self.y[..],
            u_plane: &self.u[..],
            v_plane: &self.v[..],
            width: w,
            height: h,
            y_stride,
            u_stride: c_stride,
            v_stride: c_stride,
            subsamp: Subsamp::Sub2x2,
        };
        self.compressor
            .compress_yuv_planes_to_vec(&image)
            .context("JPEG encoding failed")
    }
}

/// Splits packed 4:2:2 into I420 planes; each chroma sample is the rounded mean of
/// the two rows it covers. `at` gives the byte offsets of Y0, U and V in a 4-byte
/// group: (0, 1, 3) for YUYV, (1, 0, 2) for UYVY.
///
/// This runs on every raw frame, so it matters: on x86-64 it uses SSE2 (part of the
/// baseline, no detection needed) and costs ~4% of the JPEG compression after it;
/// elsewhere the plain loops, written so the compiler can vectorize them.
fn packed422_to_i420(
    src: &[u8],
    stride: usize,
    w: usize,
    h: usize,
    at: (usize, usize, usize),
    planes: (&mut [u8], &mut [u8], &mut [u8]),
) {
    #[cfg(target_arch = "x86_64")]
    {
        if at == (1, 0, 2) {
            return sse2::packed422_to_i420::<true>(src, stride, w, h, planes);
        }
        sse2::packed422_to_i420::<false>(src, stride, w, h, planes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        if at == (1, 0, 2) {
            return packed422_to_i420_scalar::<1, 0, 2>(src, stride, w, h, planes);
        }
        packed422_to_i420_scalar::<0, 1, 3>(src, stride, w, h, planes)
    }
}

/// Two source rows and what they become: both rows' Y, one row of U and of V.
struct RowPair<'a> {
    a: &'a [u8],
    b: &'a [u8],
    y0: &'a mut [u8],
    /// `None` when the last row of an odd height pairs with itself.
    y1: Option<&'a mut [u8]>,
    u: &'a mut [u8],
    v: &'a mut [u8],
}

impl<'a> RowPair<'a> {
    /// Rows `2 * crow` and the one below it, each cut to `w` pixels.
    fn new(
        src: &'a [u8],
        stride: usize,
        (w, h): (usize, usize),
        crow: usize,
        (y, u, v): (&'a mut [u8], &'a mut [u8], &'a mut [u8]),
    ) -> RowPair<'a> {
        let cw = w.div_ceil(2);
        let r0 = crow * 2;
        let r1 = (r0 + 1).min(h - 1);
        let (y0, below) = y[r0 * w..].split_at_mut(w);
        RowPair {
            a: &src[r0 * stride..r0 * stride + cw * 4],
            b: &src[r1 * stride..r1 * stride + cw * 4],
            y0,
            y1: (r1 != r0).then(|| &mut below[..w]),
            u: &mut u[crow * cw..(crow + 1) * cw],
            v: &mut v[crow * cw..(crow + 1) * cw],
        }
    }

    /// The pixels from group `from` on, one at a time.
    fn tail<const Y: usize, const U: usize, const V: usize>(&mut self, from: usize) {
        let w = self.y0.len();
        for g in from..w.div_ceil(2) {
            let (ga, gb) = (&self.a[g * 4..g * 4 + 4], &self.b[g * 4..g * 4 + 4]);
            self.y0[2 * g] = ga[Y];
            if let Some(y1) = self.y1.as_deref_mut() {
                y1[2 * g] = gb[Y];
            }
            if 2 * g + 1 < w {
                self.y0[2 * g + 1] = ga[Y + 2];
                if let Some(y1) = self.y1.as_deref_mut() {
                    y1[2 * g + 1] = gb[Y + 2];
                }
            }
            self.u[g] = ((u16::from(ga[U]) + u16::from(gb[U]) + 1) >> 1) as u8;
            self.v[g] = ((u16::from(ga[V]) + u16::from(gb[V]) + 1) >> 1) as u8;
        }
    }
}

/// Portable version, and the reference the SIMD one is tested against. The main
/// loops have no branches, so that the compiler can vectorize them (NEON on aarch64).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn packed422_to_i420_scalar<const Y: usize, const U: usize, const V: usize>(
    src: &[u8],
    stride: usize,
    w: usize,
    h: usize,
    (y, u, v): (&mut [u8], &mut [u8], &mut [u8]),
) {
    let full = w / 2;
    for crow in 0..h.div_ceil(2) {
        let mut p = RowPair::new(src, stride, (w, h), crow, (&mut *y, &mut *u, &mut *v));
        for (d, g) in p.y0[..full * 2]
            .chunks_exact_mut(2)
            .zip(p.a.chunks_exact(4))
        {
            d[0] = g[Y];
            d[1] = g[Y + 2];
        }
        if let Some(y1) = p.y1.as_deref_mut() {
            for (d, g) in y1[..full * 2].chunks_exact_mut(2).zip(p.b.chunks_exact(4)) {
                d[0] = g[Y];
                d[1] = g[Y + 2];
            }
        }
        for (((u, v), ga), gb) in p.u[..full]
            .iter_mut()
            .zip(p.v[..full].iter_mut())
            .zip(p.a.chunks_exact(4))
            .zip(p.b.chunks_exact(4))
        {
            *u = ((u16::from(ga[U]) + u16::from(gb[U]) + 1) >> 1) as u8;
            *v = ((u16::from(ga[V]) + u16::from(gb[V]) + 1) >> 1) as u8;
        }
        // An odd width leaves half a group.
        p.tail::<Y, U, V>(full);
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    /// 16 pixels of two rows per step: Y bytes are the even (YUYV) or odd (UYVY)
    /// bytes of each row, chroma the other bytes of the rows' average (`pavgb`
    /// rounds up, like the scalar mean), then split into U and V.
    pub fn packed422_to_i420<const UYVY: bool>(
        src: &[u8],
        stride: usize,
        w: usize,
        h: usize,
        (y, u, v): (&mut [u8], &mut [u8], &mut [u8]),
    ) {
        let blocks = w / 16;
        for crow in 0..h.div_ceil(2) {
            let mut p = super::RowPair::new(src, stride, (w, h), crow, (&mut *y, &mut *u, &mut *v));
            let (a, b) = (p.a, p.b);
            // Bounds for every access below: 32 bytes of each row, 16 Y, 8 U and
            // 8 V per block, all within the slices `RowPair` cut to size.
            assert!(a.len() >= blocks * 32 && b.len() >= blocks * 32);
            assert!(
                p.y0.len() >= blocks * 16 && p.u.len() >= blocks * 8 && p.v.len() >= blocks * 8
            );
            assert!(p.y1.as_ref().is_none_or(|y1| y1.len() >= blocks * 16));
            // SAFETY: SSE2 is part of the x86-64 baseline; loads and stores are
            // unaligned and within the lengths asserted above.
            unsafe {
                let lo = _mm_set1_epi16(0x00FF);
                for i in 0..blocks {
                    let pa = a.as_ptr().add(i * 32) as *const __m128i;
                    let pb = b.as_ptr().add(i * 32) as *const __m128i;
                    let (a0, a1) = (_mm_loadu_si128(pa), _mm_loadu_si128(pa.add(1)));
                    let (b0, b1) = (_mm_loadu_si128(pb), _mm_loadu_si128(pb.add(1)));
                    let (m0, m1) = (_mm_avg_epu8(a0, b0), _mm_avg_epu8(a1, b1));
                    let (ya, yb, c0, c1) = if UYVY {
                        (
                            _mm_packus_epi16(_mm_srli_epi16(a0, 8), _mm_srli_epi16(a1, 8)),
                            _mm_packus_epi16(_mm_srli_epi16(b0, 8), _mm_srli_epi16(b1, 8)),
                            _mm_and_si128(m0, lo),
                            _mm_and_si128(m1, lo),
                        )
                    } else {
                        (
                            _mm_packus_epi16(_mm_and_si128(a0, lo), _mm_and_si128(a1, lo)),
                            _mm_packus_epi16(_mm_and_si128(b0, lo), _mm_and_si128(b1, lo)),
                            _mm_srli_epi16(m0, 8),
                            _mm_srli_epi16(m1, 8),
                        )
                    };
                    _mm_storeu_si128(p.y0.as_mut_ptr().add(i * 16) as *mut __m128i, ya);
                    if let Some(y1) = p.y1.as_deref_mut() {
                        _mm_storeu_si128(y1.as_mut_ptr().add(i * 16) as *mut __m128i, yb);
                    }
                    // U V U V ... -> 8 U, 8 V.
                    let c = _mm_packus_epi16(c0, c1);
                    let zero = _mm_setzero_si128();
                    let uu = _mm_packus_epi16(_mm_and_si128(c, lo), zero);
                    let vv = _mm_packus_epi16(_mm_srli_epi16(c, 8), zero);
                    _mm_storel_epi64(p.u.as_mut_ptr().add(i * 8) as *mut __m128i, uu);
                    _mm_storel_epi64(p.v.as_mut_ptr().add(i * 8) as *mut __m128i, vv);
                }
            }
            if UYVY {
                p.tail::<1, 0, 2>(blocks * 8);
            } else {
                p.tail::<0, 1, 3>(blocks * 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture with a left half of one colour and a right half of another, in
    /// every raw layout, must decode to the same colours.
    fn two_colour_yuv(w: usize, h: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        // Left: red, right: green, in JFIF's full-range BT.601 YCbCr.
        let mut y = vec![0u8; w * h];
        let mut u = vec![0u8; (w / 2) * (h / 2)];
        let mut v = vec![0u8; (w / 2) * (h / 2)];
        for row in 0..h {
            for col in 0..w {
                y[row * w + col] = if col < w / 2 { 76 } else { 150 };
            }
        }
        for row in 0..h / 2 {
            for col in 0..w / 2 {
                let left = col < w / 4;
                u[row * (w / 2) + col] = if left { 85 } else { 44 };
                v[row * (w / 2) + col] = if left { 255 } else { 21 };
            }
        }
        (y, u, v)
    }

    fn pack(format: RawFormat, w: usize, h: usize, stride: usize) -> Vec<u8> {
        let (y, u, v) = two_colour_yuv(w, h);
        let cw = w / 2;
        let mut out = vec![0u8; format.frame_len(w, h, stride)];
        match format {
            RawFormat::Yuyv | RawFormat::Uyvy => {
                for row in 0..h {
                    for g in 0..cw {
                        let (y0, y1) = (y[row * w + 2 * g], y[row * w + 2 * g + 1]);
                        let (cu, cv) = (u[(row / 2) * cw + g], v[(row / 2) * cw + g]);
                        let bytes = if format == RawFormat::Yuyv {
                            [y0, cu, y1, cv]
                        } else {
                            [cu, y0, cv, y1]
                        };
                        out[row * stride + g * 4..row * stride + g * 4 + 4].copy_from_slice(&bytes);
                    }
                }
            }
            RawFormat::Nv12 | RawFormat::I420 => {
                for row in 0..h {
                    out[row * stride..row * stride + w].copy_from_slice(&y[row * w..][..w]);
                }
                let base = stride * h;
                for row in 0..h / 2 {
                    for g in 0..cw {
                        let (cu, cv) = (u[row * cw + g], v[row * cw + g]);
                        if format == RawFormat::Nv12 {
                            out[base + row * stride + 2 * g] = cu;
                            out[base + row * stride + 2 * g + 1] = cv;
                        } else {
                            let cs = stride / 2;
                            out[base + row * cs + g] = cu;
                            out[base + cs * (h / 2) + row * cs + g] = cv;
                        }
                    }
                }
            }
            _ => unreachable!(),
        }
        out
    }

    fn rgb_at(jpeg: &[u8], x: usize, y: usize) -> [u8; 3] {
        let img = turbojpeg::decompress(jpeg, PixelFormat::RGB).unwrap();
        let i = y * img.pitch + x * 3;
        [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
    }

    fn close(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= 12)
    }

    #[test]
    fn odd_yuv_sizes_are_refused_not_a_panic() {
        let mut enc = Encoder::new(80).unwrap();
        for format in [
            RawFormat::Nv12,
            RawFormat::Nv21,
            RawFormat::Yuyv,
            RawFormat::I420,
        ] {
            for (w, h) in [(5, 4), (6, 3)] {
                let stride = format.min_stride(w);
                let data = vec![128u8; format.frame_len(w, h, stride)];
                let image = RawImage {
                    format,
                    data: &data,
                    width: w,
                    height: h,
                    stride,
                };
                let refused = enc.encode_raw(&image).unwrap_err().to_string();
                assert!(
                    refused.contains("odd sizes"),
                    "{format:?} {w}x{h}: {refused}"
                );
            }
        }
        let rgb = vec![128u8; 5 * 3 * 3];
        let image = RawImage {
            format: RawFormat::Rgb24,
            data: &rgb,
            width: 5,
            height: 3,
            stride: 15,
        };
        assert!(
            enc.encode_raw(&image).is_ok(),
            "RGB has no chroma planes to pad"
        );
    }

    #[test]
    fn every_yuv_layout_decodes_to_the_same_colours() {
        let (w, h) = (64, 32);
        let mut enc = Encoder::new(90).unwrap();
        for format in [
            RawFormat::Yuyv,
            RawFormat::Uyvy,
            RawFormat::Nv12,
            RawFormat::I420,
        ] {
            // Padded rows, as some drivers deliver them.
            let stride = format.min_stride(w) + 32;
            let data = pack(format, w, h, stride);
            let jpeg = enc
                .encode_raw(&RawImage {
                    format,
                    data: &data,
                    width: w,
                    height: h,
                    stride,
                })
                .unwrap();
            let info = crate::jpeg::inspect(&jpeg).unwrap();
            assert_eq!((info.width, info.height), (64, 32));
            let left = rgb_at(&jpeg, 8, 16);
            let right = rgb_at(&jpeg, 56, 16);
            assert!(close(left, [255, 0, 0]), "{format:?} left is red: {left:?}");
            assert!(
                close(right, [0, 255, 0]),
                "{format:?} right is green: {right:?}"
            );
        }
    }

    #[test]
    fn grey_and_rgb_encode() {
        let mut enc = Encoder::new(80).unwrap();
        let grey = vec![200u8; 32 * 16];
        let jpeg = enc
            .encode_raw(&RawImage {
                format: RawFormat::Grey,
                data: &grey,
                width: 32,
                height: 16,
                stride: 32,
            })
            .unwrap();
        assert!(close(rgb_at(&jpeg, 5, 5), [200, 200, 200]));
        let bgr: Vec<u8> = std::iter::repeat_n([255u8, 0, 0], 32 * 16)
            .flatten()
            .collect();
        let jpeg = enc
            .encode_raw(&RawImage {
                format: RawFormat::Bgr24,
                data: &bgr,
                width: 32,
                height: 16,
                stride: 96,
            })
            .unwrap();
        assert!(
            close(rgb_at(&jpeg, 5, 5), [0, 0, 255]),
            "BGR blue stays blue"
        );
    }

    #[test]
    fn fast_deinterleave_matches_the_reference() {
        let mut x = 12345u32;
        for (w, h) in [(640usize, 480usize), (33, 7), (16, 1), (1, 1), (46, 3)] {
            let stride = w.div_ceil(2) * 4 + 8;
            let src: Vec<u8> = (0..stride * h)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let planes = || (vec![0u8; w * h], vec![0u8; cw * ch], vec![0u8; cw * ch]);
            for at in [(0, 1, 3), (1, 0, 2)] {
                let (mut y0, mut u0, mut v0) = planes();
                let (mut y1, mut u1, mut v1) = planes();
                packed422_to_i420(&src, stride, w, h, at, (&mut y0, &mut u0, &mut v0));
                if at == (0, 1, 3) {
                    packed422_to_i420_scalar::<0, 1, 3>(
                        &src,
                        stride,
                        w,
                        h,
                        (&mut y1, &mut u1, &mut v1),
                    );
                } else {
                    packed422_to_i420_scalar::<1, 0, 2>(
                        &src,
                        stride,
                        w,
                        h,
                        (&mut y1, &mut u1, &mut v1),
                    );
                }
                assert!(y0 == y1 && u0 == u1 && v0 == v1, "{w}x{h} {at:?}");
                // And the reference itself is right about one pixel.
                let g = &src[..4];
                assert_eq!(y1[0], g[at.0]);
                if h > 1 {
                    let b = &src[stride..stride + 4];
                    assert_eq!(u1[0], ((g[at.1] as u16 + b[at.1] as u16 + 1) >> 1) as u8);
                }
            }
        }
    }

    #[test]
    fn short_buffers_are_refused_not_read_past() {
        let mut enc = Encoder::new(75).unwrap();
        let data = vec![0u8; 640 * 480]; // half a YUYV frame
        let err = enc
            .encode_raw(&RawImage {
                format: RawFormat::Yuyv,
                data: &data,
                width: 640,
                height: 480,
                stride: 1280,
            })
            .unwrap_err();
        assert!(err.to_string().contains("incomplete frame"), "{err}");
    }
}
