//! Burning a mask into frames, fail-closed: what cannot be masked is an error,
//! never the frame unmasked.
//!
//! JPEG frames (camera MJPEG, pipes, uploads) are masked without decoding them:
//! libjpeg-turbo's lossless transform (`tj3Transform`, `TJXOP_NONE`) reads the
//! quantized DCT coefficients, a `customFilter` callback sets every block under the
//! mask to flat black (luma DC at the quantized value of -1024, i.e. pixel 0, all
//! AC 0; chroma all 0, i.e. neutral 128), and the coefficients are entropy-coded
//! again. Every other block keeps its coefficients, so the rest of the picture is
//! bit-exact and nothing is lost to a second lossy encode. Raw frames are masked
//! in their planes (Y 0, U and V 128, or RGB 0) before the one encode, rounded to
//! the MCUs the encoder's 4:2:0 (or greyscale) output has.

use std::borrow::Cow;
use std::fmt;

use turbojpeg_sys as tj;

use super::{Mask, PixelRect};
pub use crate::dct::MAX_PIXELS;
use crate::dct::{handle_error, read_header, transform, BlockFilter, Handle, Header, HeaderError};
use crate::encode::RawFormat;

/// Why a frame could not be masked; the caller drops it and counts the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskFrameError {
    /// The JPEG's headers cannot be read: cut off, garbage, no frame header.
    Corrupt(String),
    /// A readable JPEG that this cannot make black: 12-bit, lossless, CMYK, huge.
    Unsupported(String),
    /// libjpeg-turbo refused or failed the transform (corrupt entropy data, a
    /// warning, a layout it disagrees with).
    Transform(String),
    /// A raw buffer that does not hold the frame its format and size promise.
    RawLayout(String),
}

impl fmt::Display for MaskFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskFrameError::Corrupt(why) => write!(f, "cannot mask a corrupt JPEG: {why}"),
            MaskFrameError::Unsupported(why) => write!(f, "cannot mask this JPEG: {why}"),
            MaskFrameError::Transform(why) => write!(f, "masking the JPEG failed: {why}"),
            MaskFrameError::RawLayout(why) => write!(f, "cannot mask the raw frame: {why}"),
        }
    }
}

impl std::error::Error for MaskFrameError {}

impl From<HeaderError> for MaskFrameError {
    fn from(e: HeaderError) -> MaskFrameError {
        match e {
            HeaderError::Corrupt(why) => MaskFrameError::Corrupt(why),
            HeaderError::Unsupported(why) => MaskFrameError::Unsupported(why),
        }
    }
}

/// One rectangle in MCUs, `x0..x1` by `y0..y1`.
#[derive(Debug, Clone, Copy)]
struct McuRect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// What the filter callback gets through `tjtransform::data`, per component.
#[derive(Debug, Clone, Copy, Default)]
struct Plane {
    /// Size in blocks, as libjpeg-turbo must report it (checked on every call).
    blocks_w: usize,
    blocks_h: usize,
    h: usize,
    v: usize,
    /// The quantized DC of a black block (luma, or each of R, G, B), or 0 (chroma).
    dc: i16,
    /// Block rows the callback has seen, so that a skipped row is an error.
    rows_seen: usize,
}

struct Plan<'a> {
    planes: [Plane; 3],
    count: usize,
    rects: &'a [McuRect],
    /// Set when the callback saw something it did not expect.
    mismatch: bool,
}

/// Masks JPEG frames in the DCT domain. One per stream, moved into the blocking
/// thread that handles its frames like `encode::Encoder`: it keeps a libjpeg-turbo
/// instance and an output buffer from frame to frame, so a frame costs one
/// allocation (the returned bytes). It is `Send` but not `Sync`.
pub struct JpegMasker {
    handle: Handle,
    /// tj3Alloc'd output buffer and its capacity, reused and grown when needed.
    out: *mut u8,
    out_cap: usize,
    header: Header,
    pixels: Vec<PixelRect>,
    mcus: Vec<McuRect>,
}

// SAFETY: a TurboJPEG instance may be used from any thread, one at a time; the
// masker owns its handle and buffer and `&mut self` serializes every use.
unsafe impl Send for JpegMasker {}

impl Drop for JpegMasker {
    fn drop(&mut self) {
        // SAFETY: `out` is null or from tj3Alloc, and freed only here.
        unsafe { tj::tj3Free(self.out.cast()) }
    }
}

impl JpegMasker {
    pub fn new() -> Result<JpegMasker, MaskFrameError> {
        // SAFETY: plain constructor; null on failure.
        let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_TRANSFORM as libc::c_int) };
        if raw.is_null() {
            return Err(MaskFrameError::Transform(
                "cannot create a libjpeg-turbo transformer".into(),
            ));
        }
        let handle = Handle(raw);
        let set = |param: tj::TJPARAM, value: libc::c_int| {
            // SAFETY: a valid handle and a documented parameter.
            if unsafe { tj::tj3Set(handle.0, param as libc::c_int, value) } != 0 {
                return Err(MaskFrameError::Transform(handle_error(&handle)));
            }
            Ok(())
        };
        // A warning (corrupt entropy data, premature end) is an error: fail closed,
        // and early, instead of masking a picture libjpeg-turbo padded with grey.
        set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)?;
        // The buffer is sized with tj3TransformBufSize before each frame.
        set(tj::TJPARAM_TJPARAM_NOREALLOC, 1)?;
        set(tj::TJPARAM_TJPARAM_MAXPIXELS, MAX_PIXELS as libc::c_int)?;
        Ok(JpegMasker {
            handle,
            out: std::ptr::null_mut(),
            out_cap: 0,
            header: Header::default(),
            pixels: Vec::with_capacity(super::MAX_RECTS),
            mcus: Vec::with_capacity(super::MAX_RECTS),
        })
    }

    /// `jpeg` with `mask` burned in. With no rectangles, `jpeg` itself, untouched
    /// and uncopied. The result is a baseline JPEG with the source's quantization
    /// tables and sampling, standard Huffman tables, and none of the source's APPn
    /// or COM segments (an EXIF thumbnail would show the unmasked picture).
    pub fn mask<'a>(
        &mut self,
        jpeg: &'a [u8],
        mask: &Mask,
    ) -> Result<Cow<'a, [u8]>, MaskFrameError> {
        if mask.is_empty() {
            return Ok(Cow::Borrowed(jpeg));
        }
        read_header(jpeg, &mut self.header)?;
        let hdr = &self.header;
        // SAFETY: a valid handle; `jpeg` outlives the call and its length is exact.
        let rc = unsafe {
            tj::tj3DecompressHeader(self.handle.0, jpeg.as_ptr(), jpeg.len() as tj::size_t)
        };
        if rc != 0 {
            return Err(MaskFrameError::Corrupt(handle_error(&self.handle)));
        }
        // libjpeg-turbo's idea of the colour space (JFIF, Adobe, component ids).
        // SAFETY: as above.
        let colorspace =
            unsafe { tj::tj3Get(self.handle.0, tj::TJPARAM_TJPARAM_COLORSPACE as libc::c_int) };
        let all_black_dc = match colorspace as tj::TJCS {
            tj::TJCS_TJCS_YCbCr | tj::TJCS_TJCS_GRAY => false,
            // R, G and B each at 0.
            tj::TJCS_TJCS_RGB => true,
            _ => {
                return Err(MaskFrameError::Unsupported(format!(
                    "colour space {colorspace} (CMYK or YCCK)"
                )))
            }
        };
        let (max_h, max_v) = hdr.max_samp();
        let (mcu_w, mcu_h) = (8 * max_h, 8 * max_v);
        let mut plan = Plan {
            planes: [Plane::default(); 3],
            count: hdr.components.len(),
            rects: &[],
            mismatch: false,
        };
        for (i, c) in hdr.components.iter().enumerate() {
            let q = hdr.quant[c.table].ok_or_else(|| {
                MaskFrameError::Corrupt(format!("no quantization table {}", c.table))
            })?[0];
            let dc = if i == 0 || all_black_dc {
                black_dc(q)?
            } else {
                0
            };
            let (blocks_w, blocks_h) = hdr.blocks(c);
            plan.planes[i] = Plane {
                blocks_w,
                blocks_h,
                h: c.h,
                v: c.v,
                dc,
                rows_seen: 0,
            };
        }
        self.pixels.clear();
        mask.resolve_into(hdr.width, hdr.height, (mcu_w, mcu_h), &mut self.pixels);
        self.mcus.clear();
        self.mcus.extend(self.pixels.iter().map(|p| McuRect {
            x0: p.x0 / mcu_w,
            y0: p.y0 / mcu_h,
            x1: p.x1.div_ceil(mcu_w),
            y1: p.y1.div_ceil(mcu_h),
        }));
        plan.rects = &self.mcus;

        let transform = transform(&mut plan, true);
        // SAFETY: the header has been read on this handle; `transform` is valid.
        let need = unsafe { tj::tj3TransformBufSize(self.handle.0, &transform) } as usize;
        if need == 0 {
            return Err(MaskFrameError::Transform(handle_error(&self.handle)));
        }
        if need > self.out_cap {
            // SAFETY: `out` is null or from tj3Alloc; replaced by a fresh allocation.
            unsafe {
                tj::tj3Free(self.out.cast());
                self.out = tj::tj3Alloc(need as tj::size_t).cast();
            }
            if self.out.is_null() {
                self.out_cap = 0;
                return Err(MaskFrameError::Transform("out of memory".into()));
            }
            self.out_cap = need;
        }
        let mut out = self.out;
        let mut size = self.out_cap as tj::size_t;
        // SAFETY: `out` holds `size` bytes and NOREALLOC keeps libjpeg-turbo within
        // them; `plan` (behind `transform.data`) lives until the call returns, and
        // the callback is only called during it, on this thread.
        let rc = unsafe {
            tj::tj3Transform(
                self.handle.0,
                jpeg.as_ptr(),
                jpeg.len() as tj::size_t,
                1,
                &mut out,
                &mut size,
                &transform,
            )
        };
        if rc != 0 {
            return Err(MaskFrameError::Transform(handle_error(&self.handle)));
        }
        let size = size as usize;
        if out != self.out || size > self.out_cap {
            return Err(MaskFrameError::Transform(
                "libjpeg-turbo moved the output buffer".into(),
            ));
        }
        if plan.mismatch {
            return Err(MaskFrameError::Transform(
                "libjpeg-turbo read the frame's layout differently".into(),
            ));
        }
        let planes = &plan.planes[..plan.count];
        if let Some(p) = planes.iter().find(|p| p.rows_seen != p.blocks_h) {
            return Err(MaskFrameError::Transform(format!(
                "the filter saw {} of {} block rows",
                p.rows_seen, p.blocks_h
            )));
        }
        // SAFETY: libjpeg-turbo wrote `size` bytes to `out` (checked to be ours).
        Ok(Cow::Owned(
            unsafe { std::slice::from_raw_parts(out, size) }.to_vec(),
        ))
    }
}

/// The quantized DC that decodes to pixel 0: -1024 / q, rounded toward more
/// negative so that the decoder's clamp, not its rounding, decides. Beyond
/// q = 1024 the overshoot could wrap libjpeg's range-limit table; no real table has that.
fn black_dc(q: u16) -> Result<i16, MaskFrameError> {
    if q == 0 || q > 1024 {
        return Err(MaskFrameError::Unsupported(format!("DC quantizer {q}")));
    }
    Ok(-(1024u16.div_ceil(q) as i16))
}

impl BlockFilter for Plan<'_> {
    fn blocks(&self, c: usize) -> Option<(usize, usize)> {
        let p = self.planes[..self.count].get(c)?;
        Some((p.blocks_w, p.blocks_h))
    }

    /// Every block of the row under a rectangle: flat black.
    fn row(&mut self, c: usize, row: usize, blocks: &mut [i16]) {
        let p = &mut self.planes[c];
        p.rows_seen += 1;
        for r in self.rects {
            if !(r.y0 * p.v..r.y1 * p.v).contains(&row) {
                continue;
            }
            let (b0, b1) = (r.x0 * p.h, (r.x1 * p.h).min(p.blocks_w));
            if b0 >= b1 {
                continue;
            }
            for block in blocks[b0 * 64..b1 * 64].chunks_exact_mut(64) {
                block.fill(0);
                block[0] = p.dc;
            }
        }
    }

    fn mismatch(&mut self) {
        self.mismatch = true;
    }
}

/// Burns `mask` into a raw frame in place, before it is encoded: Y 0 and U, V 128
/// (RGB 0, grey 0), each rectangle rounded outward to the MCUs of what
/// `encode::Encoder` makes of it (16x16 for its 4:2:0 output, 8x8 for grey).
/// `stride` is the first plane's bytes per row, as for `encode::RawImage`. With no
/// rectangles, nothing is touched. A buffer too short for its format and size is
/// refused, never written past.
pub fn mask_raw(
    data: &mut [u8],
    format: RawFormat,
    width: usize,
    height: usize,
    stride: usize,
    mask: &Mask,
) -> Result<(), MaskFrameError> {
    if mask.is_empty() {
        return Ok(());
    }
    let bad = |why: String| Err(MaskFrameError::RawLayout(why));
    if width == 0 || height == 0 {
        return bad(format!("empty {format:?} picture ({width}x{height})"));
    }
    if stride < format.min_stride(width) {
        return bad(format!(
            "{format:?} row of {stride} bytes is too short for {width} pixels"
        ));
    }
    let need = format.frame_len(width, height, stride);
    if data.len() < need {
        return bad(format!(
            "{format:?} {width}x{height} frame has {} bytes, needs {need}",
            data.len()
        ));
    }
    let mcu = if format == RawFormat::Grey {
        (8, 8)
    } else {
        (16, 16)
    };
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    for r in mask.resolve(width, height, mcu) {
        let rows = r.y0..r.y1;
        // Chroma at 4:2:0: every MCU edge is even, so these cover exactly the rect.
        let (crows, ccols) = (
            r.y0 / 2..r.y1.div_ceil(2).min(ch),
            r.x0 / 2..r.x1.div_ceil(2).min(cw),
        );
        match format {
            RawFormat::Yuyv | RawFormat::Uyvy => {
                let group: [u8; 4] = if format == RawFormat::Yuyv {
                    [0, 128, 0, 128]
                } else {
                    [128, 0, 128, 0]
                };
                for row in rows {
                    let line =
                        &mut data[row * stride + ccols.start * 4..row * stride + ccols.end * 4];
                    for g in line.chunks_exact_mut(4) {
                        g.copy_from_slice(&group);
                    }
                }
            }
            RawFormat::Nv12 | RawFormat::Nv21 => {
                let (y, uv) = data.split_at_mut(stride * height);
                for row in rows {
                    y[row * stride + r.x0..row * stride + r.x1].fill(0);
                }
                for row in crows {
                    uv[row * stride + ccols.start * 2..row * stride + ccols.end * 2].fill(128);
                }
            }
            RawFormat::I420 | RawFormat::Yv12 => {
                let cstride = stride.div_ceil(2).max(cw);
                let (y, chroma) = data.split_at_mut(stride * height);
                for row in rows {
                    y[row * stride + r.x0..row * stride + r.x1].fill(0);
                }
                let (u, v) = chroma.split_at_mut(cstride * ch);
                for plane in [u, v] {
                    for row in crows.clone() {
                        plane[row * cstride + ccols.start..row * cstride + ccols.end].fill(128);
                    }
                }
            }
            RawFormat::Grey => {
                for row in rows {
                    data[row * stride + r.x0..row * stride + r.x1].fill(0);
                }
            }
            RawFormat::Rgb24 | RawFormat::Bgr24 => {
                for row in rows {
                    data[row * stride + r.x0 * 3..row * stride + r.x1 * 3].fill(0);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{Encoder, RawImage};
    use crate::privacy::Rect;
    use turbojpeg::{Decompressor, Image, PixelFormat};

    /// Colourful, noisy and bright everywhere, so that black can only come from the mask.
    fn picture(w: usize, h: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        let mut rgb = vec![0u8; w * h * 3];
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (col, row) = (i % w, i / w);
            px[0] = 60 + ((col * 3 + (x as usize & 31)) % 190) as u8;
            px[1] = 60 + ((row * 2 + ((x >> 8) as usize & 31)) % 190) as u8;
            px[2] = 60 + (((col ^ row) + ((x >> 16) as usize & 31)) % 190) as u8;
        }
        rgb
    }

    /// A JPEG in any subsampling, with a restart interval when `restart` > 0.
    fn compress(rgb: &[u8], w: usize, h: usize, subsamp: tj::TJSAMP, restart: i32) -> Vec<u8> {
        unsafe {
            let handle = Handle(tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as libc::c_int));
            for (param, value) in [
                (tj::TJPARAM_TJPARAM_QUALITY, 85),
                (tj::TJPARAM_TJPARAM_SUBSAMP, subsamp),
                (tj::TJPARAM_TJPARAM_RESTARTBLOCKS, restart),
            ] {
                assert_eq!(tj::tj3Set(handle.0, param as libc::c_int, value), 0);
            }
            let mut buf: *mut u8 = std::ptr::null_mut();
            let mut size: tj::size_t = 0;
            let rc = tj::tj3Compress8(
                handle.0,
                rgb.as_ptr(),
                w as libc::c_int,
                (w * 3) as libc::c_int,
                h as libc::c_int,
                tj::TJPF_TJPF_RGB as libc::c_int,
                &mut buf,
                &mut size,
            );
            assert_eq!(rc, 0, "{}", handle_error(&handle));
            let out = std::slice::from_raw_parts(buf, size as usize).to_vec();
            tj::tj3Free(buf.cast());
            out
        }
    }

    /// Decoded with fast upsampling, which keeps every MCU's pixels its own, so that
    /// pictures can be compared exactly outside the mask.
    fn decode(jpeg: &[u8], format: PixelFormat) -> (Vec<u8>, usize, usize) {
        let mut d = Decompressor::new().unwrap();
        d.set_fast_upsample(true).unwrap();
        let header = d.read_header(jpeg).unwrap();
        let (w, h) = (header.width, header.height);
        let mut pixels = vec![0u8; w * h * format.size()];
        d.decompress(
            jpeg,
            Image {
                pixels: &mut pixels[..],
                width: w,
                pitch: w * format.size(),
                height: h,
                format,
            },
        )
        .unwrap();
        (pixels, w, h)
    }

    fn mask_of(rects: &[(f64, f64, f64, f64)]) -> Mask {
        Mask::new(
            rects
                .iter()
                .map(|&(x, y, w, h)| Rect { x, y, w, h })
                .collect(),
        )
        .unwrap()
    }

    /// The masked picture is black in every MCU-rounded rectangle (luma exactly 0,
    /// RGB at most 1) and identical to the original everywhere else.
    fn assert_masked(original: &[u8], masked: &[u8], mask: &Mask, mcu: (usize, usize), what: &str) {
        let rects = {
            let (_, w, h) = decode(original, PixelFormat::GRAY);
            mask.resolve(w, h, mcu)
        };
        for format in [PixelFormat::GRAY, PixelFormat::RGB] {
            let (a, w, h) = decode(original, format);
            let (b, w2, h2) = decode(masked, format);
            assert_eq!((w, h), (w2, h2), "{what}: same size");
            let n = format.size();
            let mut inside = 0;
            for y in 0..h {
                for x in 0..w {
                    let (pa, pb) = (&a[(y * w + x) * n..][..n], &b[(y * w + x) * n..][..n]);
                    if rects.iter().any(|r| r.contains(x, y)) {
                        inside += 1;
                        let limit = if format == PixelFormat::GRAY { 0 } else { 1 };
                        assert!(
                            pb.iter().all(|&v| v <= limit),
                            "{what}: {format:?} at ({x},{y}) inside the mask is {pb:?}"
                        );
                    } else {
                        assert_eq!(pa, pb, "{what}: {format:?} at ({x},{y}) outside the mask");
                    }
                }
            }
            assert!(inside > 0, "{what}: the mask covers something");
        }
    }

    /// Several rectangles: one inside, one on the top-left corner, one on the
    /// bottom-right corner (partial MCUs in odd sizes), one across the right edge.
    fn several() -> Mask {
        mask_of(&[
            (0.3, 0.35, 0.2, 0.1),
            (0.0, 0.0, 0.05, 0.07),
            (0.93, 0.9, 0.07, 0.1),
            (0.8, 0.4, 0.2, 0.05),
        ])
    }

    #[test]
    fn every_subsampling_is_black_inside_and_bit_exact_outside() {
        let mut masker = JpegMasker::new().unwrap();
        let cases = [
            (tj::TJSAMP_TJSAMP_420, (16, 16), "4:2:0"),
            (tj::TJSAMP_TJSAMP_422, (16, 8), "4:2:2"),
            (tj::TJSAMP_TJSAMP_444, (8, 8), "4:4:4"),
            (tj::TJSAMP_TJSAMP_440, (8, 16), "4:4:0"),
            (tj::TJSAMP_TJSAMP_GRAY, (8, 8), "grey"),
        ];
        for (w, h) in [(640, 480), (642, 481), (33, 17)] {
            let rgb = picture(w, h, (w * h) as u32);
            for (subsamp, mcu, name) in cases {
                for restart in [0, 3] {
                    let jpeg = compress(&rgb, w, h, subsamp, restart);
                    if restart > 0 {
                        assert!(jpeg.windows(2).any(|m| m == [0xFF, 0xDD]), "has DRI");
                    }
                    for mask in [several(), mask_of(&[(0.5, 0.5, 0.01, 0.01)])] {
                        let out = masker.mask(&jpeg, &mask).unwrap();
                        let what = format!("{name} {w}x{h} restart {restart}");
                        assert_masked(&jpeg, &out, &mask, mcu, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn the_projects_own_encoder_output_is_masked() {
        let (w, h) = (640, 480);
        let rgb = picture(w, h, 7);
        let mut enc = Encoder::new(75).unwrap();
        let jpeg = enc.encode_rgb(&rgb, w, h).unwrap();
        let mut masker = JpegMasker::new().unwrap();
        let mask = several();
        let out = masker.mask(&jpeg, &mask).unwrap();
        assert_masked(&jpeg, &out, &mask, (16, 16), "encoder 4:2:0");
        // The whole frame masked is a black frame.
        let out = masker
            .mask(&jpeg, &mask_of(&[(0.0, 0.0, 1.0, 1.0)]))
            .unwrap();
        let (grey, _, _) = decode(&out, PixelFormat::GRAY);
        assert!(grey.iter().all(|&v| v == 0));
        // And a masked frame is still small: flat blocks cost almost nothing.
        assert!(
            out.len() < jpeg.len() / 10,
            "{} vs {}",
            out.len(),
            jpeg.len()
        );
    }

    #[test]
    fn no_rectangles_return_the_frame_itself() {
        let jpeg = compress(&picture(64, 48, 3), 64, 48, tj::TJSAMP_TJSAMP_420, 0);
        let mut masker = JpegMasker::new().unwrap();
        let out = masker.mask(&jpeg, &Mask::none()).unwrap();
        assert!(matches!(out, Cow::Borrowed(b) if std::ptr::eq(b, jpeg.as_slice())));
        // Even garbage passes untouched when there is nothing to mask: the caller's
        // own checks (jpeg::inspect, mjpeg::repair) judge it as today.
        assert!(masker.mask(b"garbage", &Mask::none()).is_ok());
    }

    #[test]
    fn corrupt_frames_are_errors_never_the_input() {
        let jpeg = compress(&picture(320, 240, 9), 320, 240, tj::TJSAMP_TJSAMP_420, 0);
        let mut masker = JpegMasker::new().unwrap();
        let mask = several();
        let mut glued = jpeg[..jpeg.len() / 2].to_vec();
        glued.extend_from_slice(&[0xFF, 0xD9]);
        let scan = jpeg.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
        let mut bad_marker = jpeg.clone();
        // A marker that is not a restart marker in the middle of the entropy data.
        bad_marker[scan + 400] = 0xFF;
        bad_marker[scan + 401] = 0xC4;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", jpeg[..jpeg.len() / 2].to_vec()),
            ("truncated with EOI glued on", glued),
            ("headers only", jpeg[..scan + 14].to_vec()),
            ("empty", Vec::new()),
            (
                "garbage",
                (0..5000u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            ),
            ("SOI then garbage", {
                let mut g = vec![0xFF, 0xD8];
                g.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
                g
            }),
            ("bad marker in the scan", bad_marker),
        ];
        for (what, data) in cases {
            let result = masker.mask(&data, &mask);
            assert!(result.is_err(), "{what}: {:?}", result.map(|b| b.len()));
        }
        // The masker is still fine afterwards.
        let out = masker.mask(&jpeg, &mask).unwrap();
        assert_masked(&jpeg, &out, &mask, (16, 16), "after errors");
    }

    #[test]
    fn huge_frames_are_refused_before_allocation() {
        let mut jpeg = compress(&picture(64, 48, 5), 64, 48, tj::TJSAMP_TJSAMP_420, 0);
        let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        // Height and width 65535.
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
        let err = JpegMasker::new()
            .unwrap()
            .mask(&jpeg, &several())
            .unwrap_err();
        assert!(matches!(err, MaskFrameError::Unsupported(_)), "{err}");
    }

    #[test]
    fn black_dc_rounds_toward_black() {
        for q in 1..=1024u16 {
            let dc = black_dc(q).unwrap();
            let value = i32::from(dc) * i32::from(q);
            assert!(
                (-1024 - i32::from(q)..=-1024).contains(&value),
                "q {q}: {value}"
            );
        }
        assert!(black_dc(0).is_err() && black_dc(2000).is_err());
    }

    /// Every raw layout, masked in its planes and then encoded by the project's
    /// encoder, is black inside and the same as the unmasked encode outside.
    #[test]
    fn raw_frames_are_masked_before_the_encode() {
        let (w, h) = (640, 480);
        let rgb = picture(w, h, 11);
        let mut enc = Encoder::new(75).unwrap();
        let mask = several();
        for format in [
            RawFormat::Yuyv,
            RawFormat::Uyvy,
            RawFormat::Nv12,
            RawFormat::Nv21,
            RawFormat::I420,
            RawFormat::Yv12,
            RawFormat::Grey,
            RawFormat::Rgb24,
            RawFormat::Bgr24,
        ] {
            // Padded rows, as some drivers deliver them.
            let stride = format.min_stride(w) + 32;
            let frame = raw_frame(&rgb, w, h, format, stride);
            let mut masked = frame.clone();
            mask_raw(&mut masked, format, w, h, stride, &mask).unwrap();
            let encode = |data: &[u8], enc: &mut Encoder| {
                enc.encode_raw(&RawImage {
                    format,
                    data,
                    width: w,
                    height: h,
                    stride,
                })
                .unwrap()
            };
            let (a, b) = (encode(&frame, &mut enc), encode(&masked, &mut enc));
            let mcu = if format == RawFormat::Grey {
                (8, 8)
            } else {
                (16, 16)
            };
            assert_masked(&a, &b, &mask, mcu, &format!("{format:?}"));
        }
    }

    #[test]
    fn raw_buffers_too_short_are_refused() {
        let mut data = vec![0u8; 640 * 480];
        let err = mask_raw(&mut data, RawFormat::Yuyv, 640, 480, 1280, &several()).unwrap_err();
        assert!(matches!(err, MaskFrameError::RawLayout(_)), "{err}");
        // Nothing to mask: not even looked at.
        assert!(mask_raw(&mut data, RawFormat::Yuyv, 640, 480, 1280, &Mask::none()).is_ok());
    }

    /// `rgb` in a raw layout, with JFIF's full-range BT.601 conversion.
    fn raw_frame(rgb: &[u8], w: usize, h: usize, format: RawFormat, stride: usize) -> Vec<u8> {
        let ycc = |i: usize| {
            let p = &rgb[i * 3..i * 3 + 3];
            let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
            let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
            (
                c(0.299 * r + 0.587 * g + 0.114 * b),
                c(128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b),
                c(128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b),
            )
        };
        let mut out = vec![0u8; format.frame_len(w, h, stride)];
        let (cw, ch) = (w / 2, h / 2);
        let cstride = stride.div_ceil(2).max(cw);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (l, u, v) = ycc(i);
                let at = y * stride;
                match format {
                    RawFormat::Yuyv | RawFormat::Uyvy => {
                        let g = at + (x / 2) * 4;
                        let (yo, uo, vo) = if format == RawFormat::Yuyv {
                            (0, 1, 3)
                        } else {
                            (1, 0, 2)
                        };
                        out[g + yo + (x % 2) * 2] = l;
                        out[g + uo] = u;
                        out[g + vo] = v;
                    }
                    RawFormat::Nv12 | RawFormat::Nv21 | RawFormat::I420 | RawFormat::Yv12 => {
                        out[at + x] = l;
                        let (cy, cx) = (y / 2, x / 2);
                        let base = stride * h;
                        let (first, second) = match format {
                            RawFormat::Nv12 | RawFormat::I420 => (u, v),
                            _ => (v, u),
                        };
                        if matches!(format, RawFormat::Nv12 | RawFormat::Nv21) {
                            out[base + cy * stride + cx * 2] = first;
                            out[base + cy * stride + cx * 2 + 1] = second;
                        } else {
                            out[base + cy * cstride + cx] = first;
                            out[base + cstride * ch + cy * cstride + cx] = second;
                        }
                    }
                    RawFormat::Grey => out[at + x] = l,
                    RawFormat::Rgb24 => {
                        out[at + x * 3..at + x * 3 + 3].copy_from_slice(&rgb[i * 3..i * 3 + 3])
                    }
                    RawFormat::Bgr24 => {
                        for c in 0..3 {
                            out[at + x * 3 + c] = rgb[i * 3 + 2 - c];
                        }
                    }
                }
            }
        }
        out
    }
}
