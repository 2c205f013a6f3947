//! The small variant of a frame, for viewers on a weak link (`?size=small`):
//! half the width and height, made once per frame from the frame's own (already
//! masked) JPEG, and only while somebody wants it.
//!
//! It is made from the JPEG's quantized DCT coefficients (`dct`), without
//! decoding the picture: libjpeg-turbo's lossless transform hands over each 8x8
//! block, and the block's 4x4 low-frequency corner, through a 4-point inverse
//! DCT, is that block at half the width and height. That is what libjpeg's own
//! half-scale decode computes; this skips its upsampling and colour conversion
//! (and the encoder's conversion back), since the planes stay YCbCr and are
//! encoded as they are, and it leaves libjpeg-turbo's pixel decoder out of the
//! binary (about 280 KB of the Pi's 6 MiB; BENCHMARKS.md "Binary size").
//! Chroma at 4:4:4, 4:2:2 or 4:4:0 is averaged down to 4:2:0, as browsers send.
//! The quarter-size picture is encoded once; every small viewer then shares those
//! bytes, as with the full frame. Deriving it from the masked JPEG means the small
//! picture can never show what the mask hides.

use anyhow::{bail, Context};
use turbojpeg::{Compressor, Image, PixelFormat, Subsamp, YuvPlanesImage};
use turbojpeg_sys as tj;

use crate::dct::{handle_error, read_header, transform, BlockFilter, Handle, Header, MAX_PIXELS};

/// The quality small frames are encoded at: a weak link needs bytes more than
/// detail. At half the size this keeps a small frame near a quarter of the full
/// one (at most 35 %, as the weak-link goal asks).
pub const SMALL_QUALITY: u8 = 70;

/// Frames narrower than this are not shrunk: they are already small.
pub const MIN_WIDTH: u32 = 160;

pub struct Shrinker {
    handle: Handle,
    header: Header,
    compressor: Compressor,
    /// One per component, reused from frame to frame.
    planes: Vec<Plane>,
    /// Chroma averaged down to 4:2:0, reused.
    chroma: [Vec<u8>; 2],
    basis: Basis,
}

// SAFETY: a TurboJPEG instance may be used from any thread, one at a time; the
// shrinker owns its handle and `&mut self` serializes every use.
unsafe impl Send for Shrinker {}

/// A frame's small picture: the JPEG and its size.
pub struct Shrunk {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// `basis[u][i]`: the weight of horizontal (or vertical) frequency `u` in output
/// pixel `i` of the 4-point inverse DCT, `c(u) cos((2i+1)uπ/8) / 2` with
/// `c(0) = 1/√2`: the 8-point DCT's scale, so that a flat block keeps its level.
/// Indexed by frequency first, so that both passes below are 4-wide vector
/// operations across pixels.
type Basis = [[f32; 4]; 4];

fn basis() -> Basis {
    let mut b = [[0f32; 4]; 4];
    for (u, row) in b.iter_mut().enumerate() {
        for (i, w) in row.iter_mut().enumerate() {
            let c = if u == 0 {
                std::f32::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            let angle = (2 * i + 1) as f32 * u as f32 * std::f32::consts::PI / 8.0;
            *w = c * angle.cos() / 2.0;
        }
    }
    b
}

/// One component's half-size plane, filled block row by block row by the filter.
#[derive(Default)]
struct Plane {
    /// Size in blocks, as libjpeg-turbo must report it (checked on every call).
    blocks_w: usize,
    blocks_h: usize,
    /// The dequantizers of each block's 4x4 low-frequency corner, row-major.
    quant: [f32; 16],
    /// `blocks_w * 4` by `blocks_h * 4` samples.
    pixels: Vec<u8>,
    /// Block rows the filter has seen, so that a skipped row is an error.
    rows_seen: usize,
}

impl Plane {
    fn stride(&self) -> usize {
        self.blocks_w * 4
    }
}

/// What the filter gets through `tjtransform::data`.
struct Plan<'a> {
    planes: &'a mut [Plane],
    basis: &'a Basis,
    /// Set when the filter saw something it did not expect.
    mismatch: bool,
}

impl Shrinker {
    pub fn new() -> anyhow::Result<Shrinker> {
        // SAFETY: plain constructor; null on failure.
        let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_TRANSFORM as libc::c_int) };
        if raw.is_null() {
            bail!("cannot create a libjpeg-turbo transformer");
        }
        let handle = Handle(raw);
        for (param, value) in [
            // Corrupt entropy data is an error, not a picture padded with grey.
            (tj::TJPARAM_TJPARAM_STOPONWARNING, 1),
            (tj::TJPARAM_TJPARAM_MAXPIXELS, MAX_PIXELS as libc::c_int),
        ] {
            // SAFETY: a valid handle and a documented parameter.
            if unsafe { tj::tj3Set(handle.0, param as libc::c_int, value) } != 0 {
                bail!("cannot set up the transformer: {}", handle_error(&handle));
            }
        }
        let mut compressor = Compressor::new().context("cannot create a JPEG compressor")?;
        compressor
            .set_quality(i32::from(SMALL_QUALITY))
            .context("cannot set JPEG quality")?;
        Ok(Shrinker {
            handle,
            header: Header::default(),
            compressor,
            planes: Vec::new(),
            chroma: [Vec::new(), Vec::new()],
            basis: basis(),
        })
    }

    /// `jpeg` at half its width and height (rounded up).
    pub fn shrink(&mut self, jpeg: &[u8]) -> anyhow::Result<Shrunk> {
        read_header(jpeg, &mut self.header)?;
        let subsamp = self.source_subsamp(jpeg)?;
        self.read_planes(jpeg)?;
        let (width, height) = (
            self.header.width.div_ceil(2),
            self.header.height.div_ceil(2),
        );
        let jpeg = self.encode(subsamp, width, height)?;
        Ok(Shrunk {
            jpeg,
            width: width as u32,
            height: height as u32,
        })
    }

    /// The source's sampling, as libjpeg-turbo reads it; only YCbCr and grey.
    fn source_subsamp(&mut self, jpeg: &[u8]) -> anyhow::Result<Subsamp> {
        // SAFETY: a valid handle; `jpeg` outlives the call and its length is exact.
        let rc = unsafe {
            tj::tj3DecompressHeader(self.handle.0, jpeg.as_ptr(), jpeg.len() as tj::size_t)
        };
        if rc != 0 {
            bail!("not a JPEG: {}", handle_error(&self.handle));
        }
        // SAFETY: as above.
        let get = |param: tj::TJPARAM| unsafe { tj::tj3Get(self.handle.0, param as libc::c_int) };
        let colorspace = get(tj::TJPARAM_TJPARAM_COLORSPACE);
        if !matches!(
            colorspace as tj::TJCS,
            tj::TJCS_TJCS_YCbCr | tj::TJCS_TJCS_GRAY
        ) {
            bail!("colour space {colorspace} (RGB, CMYK or YCCK)");
        }
        let subsamp = match get(tj::TJPARAM_TJPARAM_SUBSAMP) as tj::TJSAMP {
            tj::TJSAMP_TJSAMP_444 => Subsamp::None,
            tj::TJSAMP_TJSAMP_422 => Subsamp::Sub2x1,
            tj::TJSAMP_TJSAMP_420 => Subsamp::Sub2x2,
            tj::TJSAMP_TJSAMP_440 => Subsamp::Sub1x2,
            tj::TJSAMP_TJSAMP_411 => Subsamp::Sub4x1,
            tj::TJSAMP_TJSAMP_441 => Subsamp::Sub1x4,
            tj::TJSAMP_TJSAMP_GRAY => Subsamp::Gray,
            other => bail!("chroma sampling libjpeg-turbo cannot encode ({other})"),
        };
        let components = if subsamp == Subsamp::Gray { 1 } else { 3 };
        if self.header.components.len() != components {
            bail!("{} components", self.header.components.len());
        }
        Ok(subsamp)
    }

    /// Fills one half-size plane per component from the coefficients.
    fn read_planes(&mut self, jpeg: &[u8]) -> anyhow::Result<()> {
        let hdr = &self.header;
        self.planes
            .resize_with(hdr.components.len(), Plane::default);
        for (plane, c) in self.planes.iter_mut().zip(&hdr.components) {
            let table =
                hdr.quant[c.table].with_context(|| format!("no quantization table {}", c.table))?;
            (plane.blocks_w, plane.blocks_h) = hdr.blocks(c);
            for (k, q) in plane.quant.iter_mut().enumerate() {
                *q = f32::from(table[(k / 4) * 8 + k % 4]);
            }
            plane.pixels.resize(plane.blocks_w * plane.blocks_h * 16, 0);
            plane.rows_seen = 0;
        }
        let mut plan = Plan {
            planes: &mut self.planes,
            basis: &self.basis,
            mismatch: false,
        };
        // Only the filter's reading: no JPEG is written.
        let transform = transform(&mut plan, false);
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut size: tj::size_t = 0;
        // SAFETY: the header has been read on this handle; `plan` (behind
        // `transform.data`) lives until the call returns, and the filter is only
        // called during it, on this thread. With NOOUTPUT nothing is written to
        // `out`; whatever is there afterwards is libjpeg-turbo's to free.
        let rc = unsafe {
            let rc = tj::tj3Transform(
                self.handle.0,
                jpeg.as_ptr(),
                jpeg.len() as tj::size_t,
                1,
                &mut out,
                &mut size,
                &transform,
            );
            tj::tj3Free(out.cast());
            rc
        };
        if rc != 0 {
            bail!(
                "cannot read the coefficients: {}",
                handle_error(&self.handle)
            );
        }
        if plan.mismatch {
            bail!("libjpeg-turbo read the frame's layout differently");
        }
        if let Some(p) = plan.planes.iter().find(|p| p.rows_seen != p.blocks_h) {
            bail!(
                "the filter saw {} of {} block rows",
                p.rows_seen,
                p.blocks_h
            );
        }
        Ok(())
    }

    /// Encodes the planes at `width` x `height`: grey as grey, 4:1:1 and 4:4:1 as
    /// they are, the rest as 4:2:0.
    fn encode(&mut self, source: Subsamp, width: usize, height: usize) -> anyhow::Result<Vec<u8>> {
        if source == Subsamp::Gray {
            let y = &self.planes[0];
            self.compressor.set_subsamp(Subsamp::Gray)?;
            let image = Image {
                pixels: &y.pixels[..],
                width,
                pitch: y.stride(),
                height,
                format: PixelFormat::GRAY,
            };
            check_plane(y, width, height)?;
            return self
                .compressor
                .compress_to_vec(image)
                .context("JPEG encoding failed");
        }
        let subsamp = match source {
            Subsamp::Sub4x1 | Subsamp::Sub1x4 => source,
            _ => Subsamp::Sub2x2,
        };
        let plane_size = |component: libc::c_int| {
            // SAFETY: pure functions of their arguments.
            let (w, h) = unsafe {
                (
                    tj::tj3YUVPlaneWidth(component, width as libc::c_int, subsamp as libc::c_int),
                    tj::tj3YUVPlaneHeight(component, height as libc::c_int, subsamp as libc::c_int),
                )
            };
            match (usize::try_from(w), usize::try_from(h)) {
                (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
                _ => bail!("no plane size for {width}x{height}"),
            }
        };
        let (cw, ch) = plane_size(1)?;
        check_plane(&self.planes[0], width, height)?;
        let [y, u, v] = &self.planes[..] else {
            bail!("three components expected");
        };
        let (u, v, c_stride) = if subsamp == source {
            check_plane(u, cw, ch)?;
            check_plane(v, cw, ch)?;
            (&u.pixels[..], &v.pixels[..], u.stride())
        } else {
            // Chroma as wide (tall) as luma is averaged in pairs across (down).
            let fx = if source == Subsamp::Sub2x1 { 1 } else { 2 };
            let fy = if source == Subsamp::Sub1x2 { 1 } else { 2 };
            for (out, plane) in self.chroma.iter_mut().zip([u, v]) {
                average_down(plane, fx, fy, cw, ch, out);
            }
            (&self.chroma[0][..], &self.chroma[1][..], cw)
        };
        let image = YuvPlanesImage {
            y_plane: &y.pixels[..],
            u_plane: u,
            v_plane: v,
            width,
            height,
            y_stride: y.stride(),
            u_stride: c_stride,
            v_stride: c_stride,
            subsamp,
        };
        self.compressor
            .compress_yuv_planes_to_vec(&image)
            .context("JPEG encoding failed")
    }
}

/// Refuses a plane smaller than `w` x `h` (the encoder would panic on it).
fn check_plane(plane: &Plane, w: usize, h: usize) -> anyhow::Result<()> {
    if plane.stride() < w || plane.blocks_h * 4 < h {
        bail!(
            "a {}x{} plane cannot hold {w}x{h}",
            plane.stride(),
            plane.blocks_h * 4
        );
    }
    Ok(())
}

/// `out` = `plane` averaged over `fx` x `fy` samples, `w` x `h` of them (edges
/// repeated where the plane ends).
fn average_down(plane: &Plane, fx: usize, fy: usize, w: usize, h: usize, out: &mut Vec<u8>) {
    let (pw, ph) = (plane.stride(), plane.blocks_h * 4);
    out.clear();
    out.reserve(w * h);
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0u32;
            for dy in 0..fy {
                let row = (y * fy + dy).min(ph - 1) * pw;
                for dx in 0..fx {
                    sum += u32::from(plane.pixels[row + (x * fx + dx).min(pw - 1)]);
                }
            }
            let n = (fx * fy) as u32;
            out.push(((sum + n / 2) / n) as u8);
        }
    }
}

/// One block's 4x4 corner through the 4-point inverse DCT, level-shifted and
/// clamped, into `out` (rows of `stride`) at column `x`.
fn idct4(block: &[i16], quant: &[f32; 16], basis: &Basis, out: &mut [u8], stride: usize, x: usize) {
    // Across first: row v of the result, tmp[v][j] = Σ_u F(v, u) · basis[u][j].
    let mut tmp = [[0f32; 4]; 4];
    for (v, t) in tmp.iter_mut().enumerate() {
        for (u, b) in basis.iter().enumerate() {
            let f = f32::from(block[v * 8 + u]) * quant[v * 4 + u];
            for (t, b) in t.iter_mut().zip(b) {
                *t += f * b;
            }
        }
    }
    // Then down: pixel(i, j) = 128 + Σ_v basis[v][i] · tmp[v][j]; + 0.5 and
    // truncation round (no libm call), the clamp keeps it in u8.
    for i in 0..4 {
        let mut px = [128.5f32; 4];
        for (t, b) in tmp.iter().zip(basis) {
            for (p, t) in px.iter_mut().zip(t) {
                *p += b[i] * t;
            }
        }
        let row = &mut out[i * stride + x..i * stride + x + 4];
        for (o, p) in row.iter_mut().zip(px) {
            *o = p.clamp(0.0, 255.0) as u8;
        }
    }
}

impl BlockFilter for Plan<'_> {
    fn blocks(&self, c: usize) -> Option<(usize, usize)> {
        let p = self.planes.get(c)?;
        Some((p.blocks_w, p.blocks_h))
    }

    /// Each block of the row, at half size, into the plane's four pixel rows.
    fn row(&mut self, c: usize, row: usize, blocks: &mut [i16]) {
        let p = &mut self.planes[c];
        p.rows_seen += 1;
        let stride = p.stride();
        let out = &mut p.pixels[row * 4 * stride..(row + 1) * 4 * stride];
        for (b, block) in blocks.chunks_exact(64).enumerate() {
            idct4(block, &p.quant, self.basis, out, stride, b * 4);
        }
    }

    fn mismatch(&mut self) {
        self.mismatch = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;

    /// A busy picture, as a classroom is: gradients and texture everywhere.
    fn busy(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let t = ((x * 7 + y * 13) ^ (x * y / 5)) as u8;
                [x as u8 ^ t, (y as u8).wrapping_add(t / 3), t]
            })
            .collect()
    }

    #[test]
    fn a_small_frame_is_half_the_size_and_a_fraction_of_the_bytes() {
        let (w, h) = (640usize, 480usize);
        let full = Encoder::new(75)
            .unwrap()
            .encode_rgb(&busy(w, h), w, h)
            .unwrap();
        let small = Shrinker::new().unwrap().shrink(&full).unwrap();
        assert_eq!((small.width, small.height), (320, 240));
        let info = crate::jpeg::inspect(&small.jpeg).expect("a JPEG");
        assert_eq!((info.width, info.height), (320, 240));
        assert!(
            small.jpeg.len() * 100 <= full.len() * 35,
            "small {} bytes against full {}",
            small.jpeg.len(),
            full.len()
        );
    }

    /// The small picture looks like the full one, as closely as libjpeg-turbo's
    /// own half-size decode re-encoded at the same quality (how small frames were
    /// made before, with the pixel decoder the Pi binary no longer has): per
    /// colour channel, the mean distance of each small pixel from the mean of the
    /// 2x2 full-size pixels it stands for. In every sampling a camera or browser
    /// sends, at an odd size.
    #[test]
    fn a_small_frame_shows_the_picture_as_a_half_size_decode_does() {
        let (w, h) = (322usize, 242usize);
        // Colour bands with hard edges and gradients, so that a wrong block order,
        // a swapped chroma plane or a transposed IDCT would show.
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let band = if (x / 40 + y / 30) % 2 == 0 { 200 } else { 40 };
                [band, (x * 255 / w) as u8, (y * 255 / h) as u8]
            })
            .collect();
        let image = Image {
            pixels: &rgb[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        };
        for subsamp in [
            Subsamp::Sub2x2,
            Subsamp::Sub2x1,
            Subsamp::None,
            Subsamp::Sub1x2,
            Subsamp::Sub4x1,
            Subsamp::Gray,
        ] {
            let full = turbojpeg::compress(image, 95, subsamp).unwrap();
            let small = Shrinker::new().unwrap().shrink(&full).unwrap();
            assert_eq!((small.width, small.height), (161, 121), "{subsamp:?}");
            let reference = {
                let half = turbojpeg::ScalingFactor::ONE_HALF;
                let mut d = turbojpeg::Decompressor::new().unwrap();
                d.set_scaling_factor(half).unwrap();
                let size = d.read_header(&full).unwrap().scaled(half);
                let mut px = vec![0u8; size.width * size.height * 3];
                let out = Image {
                    pixels: &mut px[..],
                    width: size.width,
                    pitch: size.width * 3,
                    height: size.height,
                    format: PixelFormat::RGB,
                };
                d.decompress(&full, out).unwrap();
                Encoder::new(SMALL_QUALITY)
                    .unwrap()
                    .encode_rgb(&px, size.width, size.height)
                    .unwrap()
            };
            let (big, _, _) = decode(&full);
            let ours = distance(&big, w, &small.jpeg);
            let theirs = distance(&big, w, &reference);
            for c in 0..3 {
                assert!(
                    ours[c] <= theirs[c] * 1.15 + 0.2,
                    "{subsamp:?}, channel {c}: {:.2} against the half-size decode's {:.2}",
                    ours[c],
                    theirs[c]
                );
            }
        }
    }

    /// Per channel, the mean distance of `small`'s pixels from the means of the
    /// 2x2 blocks of `big` (RGB, `w` wide) they stand for; the last, half-covered
    /// row and column of an odd size are left out.
    fn distance(big: &[u8], w: usize, small: &[u8]) -> [f64; 3] {
        let (little, sw, sh) = decode(small);
        let mut sum = [0f64; 3];
        for y in 0..sh - 1 {
            for x in 0..sw - 1 {
                for (c, sum) in sum.iter_mut().enumerate() {
                    let at = |xx: usize, yy: usize| f64::from(big[(yy * w + xx) * 3 + c]);
                    let mean = (at(2 * x, 2 * y)
                        + at(2 * x + 1, 2 * y)
                        + at(2 * x, 2 * y + 1)
                        + at(2 * x + 1, 2 * y + 1))
                        / 4.0;
                    *sum += (f64::from(little[(y * sw + x) * 3 + c]) - mean).abs();
                }
            }
        }
        sum.map(|s| s / ((sw - 1) * (sh - 1)) as f64)
    }

    fn decode(jpeg: &[u8]) -> (Vec<u8>, usize, usize) {
        let img = turbojpeg::decompress(jpeg, PixelFormat::RGB).unwrap();
        (img.pixels, img.width, img.height)
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut shrinker = Shrinker::new().unwrap();
        assert!(shrinker.shrink(b"not a jpeg").is_err());
        // Cut off inside the entropy-coded data: an error, and the shrinker
        // still works afterwards.
        let full = Encoder::new(75)
            .unwrap()
            .encode_rgb(&busy(320, 240), 320, 240)
            .unwrap();
        assert!(shrinker.shrink(&full[..full.len() / 2]).is_err());
        assert!(shrinker.shrink(&full).is_ok());
    }
}
