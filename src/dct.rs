//! A JPEG's quantized DCT coefficients, worked on without decoding the picture:
//! the headers that needs (size, sampling, quantization tables), read and checked
//! here, and libjpeg-turbo's transform handle, whose `customFilter` hands over the
//! coefficients one block row at a time. Masks rewrite them
//! (`privacy::mask`); the small picture for weak links is made from them
//! (`shrink`), so neither needs libjpeg-turbo's pixel decoder.

use std::ffi::CStr;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use turbojpeg_sys as tj;

/// Frames with more pixels than this are refused before libjpeg-turbo allocates
/// their coefficients (a 4K camera frame has 8.3 M): a hostile upload's header
/// could otherwise claim 65535 x 65535.
pub const MAX_PIXELS: usize = 4096 * 2304;

/// Why a JPEG's headers were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Cut off, garbage, no frame header.
    Corrupt(String),
    /// Readable, but not what the coefficients can be worked on for: 12-bit,
    /// lossless, CMYK, huge.
    Unsupported(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Corrupt(why) => write!(f, "corrupt JPEG: {why}"),
            HeaderError::Unsupported(why) => write!(f, "unsupported JPEG: {why}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Where the k-th coefficient of a DQT table (zigzag order) sits in a block.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// One component of the frame header: its sampling factors and quantization table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Component {
    pub h: usize,
    pub v: usize,
    pub table: usize,
}

/// What working on the coefficients needs from the JPEG's headers, read here
/// rather than trusted to libjpeg-turbo's defaults.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    pub components: Vec<Component>,
    /// Quantization tables 0-3 in natural (row-major) order, as the coefficients
    /// are, as defined by the last DQT before the first scan.
    pub quant: [Option<[u16; 64]>; 4],
}

impl Header {
    /// The largest horizontal and vertical sampling factors: an MCU is 8 times them.
    pub fn max_samp(&self) -> (usize, usize) {
        let h = self.components.iter().map(|c| c.h).max().unwrap_or(1);
        let v = self.components.iter().map(|c| c.v).max().unwrap_or(1);
        (h, v)
    }

    /// A component's size in blocks, as libjpeg-turbo computes it.
    pub fn blocks(&self, c: &Component) -> (usize, usize) {
        let (max_h, max_v) = self.max_samp();
        (
            (self.width * c.h).div_ceil(8 * max_h),
            (self.height * c.v).div_ceil(8 * max_v),
        )
    }
}

/// Reads SOF and DQT up to the first SOS. Refuses what libjpeg-turbo's transform
/// would read differently: 12-bit and lossless JPEGs, CMYK, more than
/// [`MAX_PIXELS`].
pub fn read_header(data: &[u8], header: &mut Header) -> Result<(), HeaderError> {
    let corrupt = |why: &str| HeaderError::Corrupt(why.to_owned());
    let unsupported = |why: String| HeaderError::Unsupported(why);
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(corrupt("no SOI marker"));
    }
    header.components.clear();
    header.quant = [None; 4];
    let mut seen_sof = false;
    let mut pos = 2;
    loop {
        if data.get(pos) != Some(&0xFF) {
            return Err(corrupt("a segment is cut off or garbage between segments"));
        }
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = data.get(pos) else {
            return Err(corrupt("cut off before the first scan"));
        };
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 | 0xD9 => return Err(corrupt("no scan")),
            _ => {}
        }
        let len = match data.get(pos..pos + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err(corrupt("cut off in a segment's length")),
        };
        if len < 2 || pos + len > data.len() {
            return Err(corrupt("a segment is cut off"));
        }
        let seg = &data[pos + 2..pos + len];
        match marker {
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if seen_sof {
                    return Err(corrupt("two frame headers"));
                }
                seen_sof = true;
                if matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF) {
                    return Err(unsupported("lossless JPEG".into()));
                }
                if seg.len() < 6 {
                    return Err(corrupt("short frame header"));
                }
                if seg[0] != 8 {
                    return Err(unsupported(format!("{}-bit samples", seg[0])));
                }
                header.height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
                header.width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
                let n = usize::from(seg[5]);
                if header.width == 0 || header.height == 0 {
                    return Err(corrupt("zero width or height"));
                }
                if header.width * header.height > MAX_PIXELS {
                    return Err(unsupported(format!(
                        "{}x{} is larger than {MAX_PIXELS} pixels",
                        header.width, header.height
                    )));
                }
                if n != 1 && n != 3 {
                    return Err(unsupported(format!("{n} components (CMYK?)")));
                }
                if seg.len() < 6 + 3 * n {
                    return Err(corrupt("short frame header"));
                }
                for c in seg[6..6 + 3 * n].chunks_exact(3) {
                    let (h, v, table) = (usize::from(c[1] >> 4), usize::from(c[1] & 15), c[2]);
                    if !(1..=4).contains(&h) || !(1..=4).contains(&v) || table > 3 {
                        return Err(corrupt("bad sampling factor or table number"));
                    }
                    header.components.push(Component {
                        h,
                        v,
                        table: usize::from(table),
                    });
                }
            }
            // DQT: one or more tables of 64 entries, 8 or 16 bits each.
            0xDB => {
                let mut t = seg;
                while let Some((&pq_tq, rest)) = t.split_first() {
                    let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
                    let size = if precision == 0 { 64 } else { 128 };
                    if precision > 1 || id > 3 || rest.len() < size {
                        return Err(corrupt("bad quantization table"));
                    }
                    let mut table = [0u16; 64];
                    for (k, &natural) in ZIGZAG.iter().enumerate() {
                        table[natural] = if precision == 0 {
                            u16::from(rest[k])
                        } else {
                            u16::from_be_bytes([rest[2 * k], rest[2 * k + 1]])
                        };
                    }
                    header.quant[id] = Some(table);
                    t = &rest[size..];
                }
            }
            0xDA => break,
            _ => {}
        }
        pos += len;
    }
    if !seen_sof {
        return Err(corrupt("no frame header before the scan"));
    }
    Ok(())
}

/// A `tjhandle` set up for transforms; not thread-safe, so owned by one user.
pub struct Handle(pub tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once, here.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// The handle's last error, for a message.
pub fn handle_error(handle: &Handle) -> String {
    // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the instance.
    unsafe { CStr::from_ptr(tj::tj3GetErrorStr(handle.0)) }
        .to_string_lossy()
        .into_owned()
}

/// What one `customFilter` call of libjpeg-turbo's transform hands over: one
/// block row of one component (`array.y` is the row's offset in the component
/// plane, in pixels; `array.w` the plane's width), `coeffs` pointing at its
/// blocks of 64 coefficients in natural order.
enum BlockRow<'a> {
    /// Row `row` of the plane, and its blocks.
    Row(usize, &'a mut [i16]),
    /// A row past the plane's height (padding of the last iMCU row): not part
    /// of the picture.
    Padding,
    /// The regions do not describe a plane of the size the headers gave:
    /// libjpeg-turbo read the frame differently.
    Mismatch,
}

/// Checks a `customFilter` call's regions against a plane of `blocks_w` by
/// `blocks_h` blocks and gives the row it carries.
///
/// # Safety
/// `coeffs`, `array` and `plane` must be what libjpeg-turbo passed to the
/// filter, and the slice must not outlive the call.
unsafe fn block_row<'a>(
    coeffs: *mut libc::c_short,
    array: tj::tjregion,
    plane: tj::tjregion,
    (blocks_w, blocks_h): (usize, usize),
) -> BlockRow<'a> {
    let (Ok(w), Ok(h), Ok(y), Ok(aw), Ok(ah)) = (
        usize::try_from(plane.w),
        usize::try_from(plane.h),
        usize::try_from(array.y),
        usize::try_from(array.w),
        usize::try_from(array.h),
    ) else {
        return BlockRow::Mismatch;
    };
    if w != blocks_w * 8 || h != blocks_h * 8 || aw != w || ah != 8 || array.x != 0 {
        return BlockRow::Mismatch;
    }
    let row = y / 8;
    if row >= blocks_h {
        return BlockRow::Padding;
    }
    // SAFETY: libjpeg-turbo hands over one row of `blocks_w` blocks (checked
    // against the plane's width above), 64 coefficients each.
    BlockRow::Row(row, unsafe {
        std::slice::from_raw_parts_mut(coeffs, blocks_w * 64)
    })
}

/// What works on the coefficients during a transform: the masker rewrites
/// them, the shrinker reads them. Set as `tjtransform::data`, with
/// [`filter::<Self>`](filter) as the `customFilter`.
pub trait BlockFilter {
    /// Component `c`'s size in blocks, as the headers gave it; `None` when the
    /// frame has no such component.
    fn blocks(&self, c: usize) -> Option<(usize, usize)>;
    /// Row `row` of component `c`: `blocks_w` blocks of 64 coefficients in
    /// natural order. Every row of the picture comes once; padding rows do not.
    fn row(&mut self, c: usize, row: usize, blocks: &mut [i16]);
    /// libjpeg-turbo read the frame's layout differently from the headers:
    /// the result must not be used.
    fn mismatch(&mut self);
}

/// The transform that hands `f` every block and leaves the coefficients where
/// they are (`TJXOP_NONE`, no cropping), without the source's markers; with
/// `output` false, no JPEG is written at all. `f` must outlive its use.
pub fn transform<F: BlockFilter>(f: &mut F, output: bool) -> tj::tjtransform {
    let options = if output {
        tj::TJXOPT_COPYNONE
    } else {
        tj::TJXOPT_COPYNONE | tj::TJXOPT_NOOUTPUT
    };
    tj::tjtransform {
        r: tj::tjregion {
            x: 0,
            y: 0,
            w: 0,
            h: 0,
        },
        op: tj::TJXOP_TJXOP_NONE as libc::c_int,
        options: options as libc::c_int,
        data: (f as *mut F).cast(),
        customFilter: Some(filter::<F>),
    }
}

/// libjpeg-turbo's `customFilter` for a [`BlockFilter`] `F`: called once per
/// block row of each component, checks what it is handed and passes the row on.
///
/// # Safety
/// `transform.data` must point at an `F` that outlives the transform call.
pub unsafe extern "C" fn filter<F: BlockFilter>(
    coeffs: *mut libc::c_short,
    array: tj::tjregion,
    plane: tj::tjregion,
    component: libc::c_int,
    _transform_id: libc::c_int,
    transform: *mut tj::tjtransform,
) -> libc::c_int {
    // A panic must not unwind into C.
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `data` is the `F` the caller set and keeps alive (see above).
        let f = unsafe { &mut *((*transform).data as *mut F) };
        let Some((c, size)) = usize::try_from(component)
            .ok()
            .and_then(|c| Some((c, f.blocks(c)?)))
        else {
            f.mismatch();
            return -1;
        };
        // SAFETY: the filter's own arguments, used during this call only.
        match unsafe { block_row(coeffs, array, plane, size) } {
            BlockRow::Row(row, blocks) => {
                f.row(c, row, blocks);
                0
            }
            BlockRow::Padding => 0,
            BlockRow::Mismatch => {
                f.mismatch();
                -1
            }
        }
    }))
    .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_tables_are_read_in_the_coefficients_order() {
        let (w, h) = (64usize, 48usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let jpeg = crate::encode::Encoder::new(75)
            .unwrap()
            .encode_rgb(&rgb, w, h)
            .unwrap();
        let mut header = Header::default();
        read_header(&jpeg, &mut header).unwrap();
        assert_eq!((header.width, header.height), (64, 48));
        let sampling: Vec<_> = header.components.iter().map(|c| (c.h, c.v)).collect();
        assert_eq!(sampling, [(2, 2), (1, 1), (1, 1)]);
        assert_eq!(header.blocks(&header.components[0]), (8, 6));
        assert_eq!(header.blocks(&header.components[1]), (4, 3));
        // The standard luminance table at quality 75: its first row and column
        // (in DQT's zigzag order the two interleave, so a mix-up shows here).
        let luma = header.quant[header.components[0].table].unwrap();
        assert_eq!(luma[..8], [8, 6, 5, 8, 12, 20, 26, 31]);
        let column: Vec<u16> = (0..8).map(|row| luma[row * 8]).collect();
        assert_eq!(column, [8, 6, 7, 7, 9, 12, 25, 36]);
    }

    #[test]
    fn a_frame_header_claiming_too_many_pixels_is_refused() {
        let mut jpeg = crate::encode::Encoder::new(75)
            .unwrap()
            .encode_rgb(&[0; 16 * 16 * 3], 16, 16)
            .unwrap();
        let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let err = read_header(&jpeg, &mut Header::default()).unwrap_err();
        assert!(matches!(err, HeaderError::Unsupported(_)), "{err}");
    }
}
