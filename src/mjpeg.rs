//! Motion-JPEG from cameras and child processes: cutting a byte stream into
//! frames at the JPEG markers, refusing frames that are cut off or corrupt, and
//! adding the Huffman tables that UVC webcams leave out.
//!
//! A UVC camera's MJPEG frames usually carry no DHT segment: the USB video class
//! says the decoder must assume the standard tables of JPEG Annex K.3. Browsers'
//! `<img>` decoders do not all know that, so such a frame shows as a broken image.
//! Like mjpg-streamer and ustreamer, `repair` inserts the standard tables before
//! the first scan when a frame has none; the picture data is untouched.
//!
//! `Splitter` walks the marker structure instead of searching for the first
//! `FF D9`, so an EXIF thumbnail (a whole JPEG inside an APP1 segment) does not
//! end a frame early, and a frame cut off by a new SOI is reported, not glued to
//! the next one.

use std::borrow::Cow;
use std::fmt;

use crate::jpeg::{self, JpegError, JpegInfo};

/// A frame larger than this is not a camera frame (4K MJPEG at high quality is ~2 MB).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The standard tables (JPEG Annex K.3, as in libjpeg's jstdhuff.c):
/// (class/id byte, 16 code-length counts, symbols).
const STD_TABLES: [(u8, [u8; 16], &[u8]); 4] = [
    (
        0x00, // DC, table 0 (luminance)
        [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        0x10, // AC, table 0 (luminance)
        [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d],
        &[
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1,
            0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18,
            0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
            0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57,
            0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75,
            0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
            0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
            0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8,
            0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2,
            0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
        ],
    ),
    (
        0x01, // DC, table 1 (chrominance)
        [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        0x11, // AC, table 1 (chrominance)
        [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
        &[
            0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
            0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09,
            0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25,
            0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38,
            0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56,
            0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74,
            0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
            0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
            0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
            0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6,
            0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2,
            0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
        ],
    ),
];

/// The DHT segment (marker included) holding all four standard tables.
pub fn standard_dht() -> Vec<u8> {
    let body: usize = STD_TABLES.iter().map(|(_, _, v)| 17 + v.len()).sum();
    let mut seg = Vec::with_capacity(4 + body);
    seg.extend_from_slice(&[0xFF, 0xC4]);
    seg.extend_from_slice(&((body + 2) as u16).to_be_bytes());
    for (class_id, counts, symbols) in STD_TABLES {
        debug_assert_eq!(
            counts.iter().map(|&c| c as usize).sum::<usize>(),
            symbols.len()
        );
        seg.push(class_id);
        seg.extend_from_slice(&counts);
        seg.extend_from_slice(symbols);
    }
    seg
}

/// Why a camera frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The marker structure is broken (no SOI/EOI, cut-off segment, no SOF...).
    Corrupt(JpegError),
    /// Structurally complete, but far smaller than any real picture of its size:
    /// what a camera sends when it lost most of a frame on the bus.
    TooSmall {
        bytes: usize,
        width: u32,
        height: u32,
    },
    /// A new frame started before this one ended.
    CutOff { bytes: usize },
    /// No end marker within `MAX_FRAME_BYTES`.
    TooLarge,
    /// Bytes between frames that are not a JPEG start.
    Garbage { bytes: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Corrupt(e) => write!(f, "{e}"),
            FrameError::TooSmall {
                bytes,
                width,
                height,
            } => write!(
                f,
                "frame far too small ({bytes} bytes for {width}x{height}): truncated"
            ),
            FrameError::CutOff { bytes } => {
                write!(f, "frame cut off after {bytes} bytes by the next one")
            }
            FrameError::TooLarge => write!(f, "no end of frame within {MAX_FRAME_BYTES} bytes"),
            FrameError::Garbage { bytes } => write!(f, "{bytes} bytes of non-JPEG data skipped"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The smallest plausible JPEG for a picture: one byte per 1000 pixels is far below
/// what even a uniformly black frame needs at any quality (about one byte per 250),
/// yet far above what a camera sends when it lost most of the frame.
fn plausible_min_bytes(info: JpegInfo) -> usize {
    (info.width as usize * info.height as usize / 1000).max(jpeg::MIN_JPEG_BYTES)
}

/// Checks a camera frame and returns it ready for browsers: unchanged (borrowed)
/// when it is complete and has Huffman tables, with the standard tables inserted
/// when it has none, or an error saying why it must be dropped.
pub fn repair(frame: &[u8]) -> Result<(Cow<'_, [u8]>, JpegInfo), FrameError> {
    let frame = trim_padding(frame);
    let info = jpeg::inspect(frame).map_err(FrameError::Corrupt)?;
    if frame.len() < plausible_min_bytes(info) {
        return Err(FrameError::TooSmall {
            bytes: frame.len(),
            width: info.width,
            height: info.height,
        });
    }
    let layout = header_layout(frame).map_err(FrameError::Corrupt)?;
    if layout.has_dht {
        return Ok((Cow::Borrowed(frame), info));
    }
    // Most UVC frames lack tables, so build the segment once, not per frame.
    static STANDARD_DHT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(standard_dht);
    let dht = &*STANDARD_DHT;
    let mut fixed = Vec::with_capacity(frame.len() + dht.len());
    fixed.extend_from_slice(&frame[..layout.sos_at]);
    fixed.extend_from_slice(dht);
    fixed.extend_from_slice(&frame[layout.sos_at..]);
    Ok((Cow::Owned(fixed), info))
}

/// Drops zero bytes after the end marker: some UVC cameras pad every frame up to
/// a fixed size, and a browser would see the padding as a broken image.
fn trim_padding(frame: &[u8]) -> &[u8] {
    let zeros = frame.iter().rev().take_while(|&&b| b == 0).count();
    let end = frame.len() - zeros;
    if zeros > 0 && end >= 2 && frame[end - 2..end] == [0xFF, 0xD9] {
        &frame[..end]
    } else {
        frame
    }
}

/// Whether the frame has a DHT before its first scan; used by tests and logs.
pub fn has_huffman_tables(frame: &[u8]) -> bool {
    header_layout(frame).is_ok_and(|l| l.has_dht)
}

struct Layout {
    has_dht: bool,
    /// Offset of the first SOS marker's 0xFF.
    sos_at: usize,
}

/// Walks the segments from SOI to the first SOS. `jpeg::inspect` has already
/// checked lengths, so this only looks for DHT.
fn header_layout(data: &[u8]) -> Result<Layout, JpegError> {
    let mut pos = 2;
    let mut has_dht = false;
    loop {
        if data.get(pos) != Some(&0xFF) {
            return Err(JpegError::Truncated);
        }
        let marker_at = pos;
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *data.get(pos).ok_or(JpegError::Truncated)?;
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err(JpegError::NoFrameHeader),
            0xDA => {
                return Ok(Layout {
                    has_dht,
                    // Insert before the fill bytes too, so the SOS stays intact.
                    sos_at: marker_at,
                });
            }
            0xC4 => has_dht = true,
            _ => {}
        }
        let len = data
            .get(pos..pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or(JpegError::Truncated)?;
        if len < 2 {
            return Err(JpegError::Truncated);
        }
        pos += len;
    }
}

/// Where the splitter is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Looking for the SOI of the next frame.
    SeekStart,
    /// Between segments before or between scans: at `pos` a marker must follow.
    Segments,
    /// Inside entropy-coded data, where `FF 00` and `FF D0..D7` are not markers.
    Entropy,
}

/// Cuts a byte stream (a child's stdout) into JPEG frames.
///
/// Feed bytes with `push`, then call `next_frame` until it returns `None`. Memory
/// is bounded by `MAX_FRAME_BYTES` plus one read.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Scan position inside `buf`; the current frame starts at `buf[0]`.
    pos: usize,
    phase: Phase,
    max_frame: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(MAX_FRAME_BYTES)
    }
}

impl Splitter {
    pub fn new(max_frame: usize) -> Splitter {
        Splitter {
            buf: Vec::new(),
            pos: 0,
            phase: Phase::SeekStart,
            max_frame,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held for the frame in progress.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame (still to be checked with `repair`), an error for
    /// bytes that were skipped, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            match self.phase {
                Phase::SeekStart => {
                    let found = self.buf.windows(2).position(|w| w == [0xFF, 0xD8]);
                    match found {
                        Some(at) => {
                            self.buf.drain(..at);
                            self.pos = 2;
                            self.phase = Phase::Segments;
                            if at > 0 {
                                return Some(Err(FrameError::Garbage { bytes: at }));
                            }
                        }
                        None => {
                            // Keep a trailing 0xFF: it may be the first half of an SOI.
                            let keep = usize::from(self.buf.last() == Some(&0xFF));
                            let skipped = self.buf.len() - keep;
                            self.buf.drain(..skipped);
                            if skipped > 0 {
                                return Some(Err(FrameError::Garbage { bytes: skipped }));
                            }
                            return None;
                        }
                    }
                }
                Phase::Segments | Phase::Entropy => {
                    let step = if self.phase == Phase::Segments {
                        self.step_segments()
                    } else {
                        self.step_entropy()
                    };
                    match step {
                        Step::NeedMore => return self.check_size(),
                        Step::Continue => {}
                        Step::Frame(end) => return Some(Ok(self.take(end))),
                        Step::Broken(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }

    /// Drops a frame that grew past the limit without ending.
    fn check_size(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if self.buf.len() > self.max_frame {
            self.resync();
            return Some(Err(FrameError::TooLarge));
        }
        None
    }

    /// Removes the complete frame `buf[..end]` and starts looking for the next.
    fn take(&mut self, end: usize) -> Vec<u8> {
        let rest = self.buf.split_off(end);
        let frame = std::mem::replace(&mut self.buf, rest);
        self.pos = 0;
        self.phase = Phase::SeekStart;
        frame
    }

    /// Gives up on the frame in progress: the next SOI after its own one may be
    /// inside bytes already walked over as segment contents, so search from there.
    fn resync(&mut self) {
        self.buf.drain(..1.min(self.buf.len()));
        self.pos = 0;
        self.phase = Phase::SeekStart;
    }

    /// A new SOI at `at` inside the current frame: the current one was cut off.
    fn cut_off(&mut self, at: usize) -> Step {
        self.buf.drain(..at);
        self.pos = 2;
        self.phase = Phase::Segments;
        Step::Broken(FrameError::CutOff { bytes: at })
    }

    fn step_segments(&mut self) -> Step {
        let buf = &self.buf;
        let mut p = self.pos;
        if p >= buf.len() {
            return Step::NeedMore;
        }
        if buf[p] != 0xFF {
            self.resync();
            return Step::Broken(FrameError::Corrupt(JpegError::Truncated));
        }
        while p < buf.len() && buf[p] == 0xFF {
            p += 1;
        }
        let Some(&marker) = buf.get(p) else {
            return Step::NeedMore;
        };
        let marker_at = p - 1;
        p += 1;
        match marker {
            0xD8 => return self.cut_off(marker_at),
            0xD9 => return Step::Frame(p),
            0x01 | 0xD0..=0xD7 => {
                self.pos = p;
                return Step::Continue;
            }
            0x00 => {
                self.resync();
                return Step::Broken(FrameError::Corrupt(JpegError::Truncated));
            }
            _ => {}
        }
        let Some(len) = buf.get(p..p + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return Step::NeedMore;
        };
        if len < 2 {
            self.resync();
            return Step::Broken(FrameError::Corrupt(JpegError::Truncated));
        }
        let end = p + len as usize;
        if end > buf.len() {
            return Step::NeedMore;
        }
        self.pos = end;
        if marker == 0xDA {
            self.phase = Phase::Entropy;
        }
        Step::Continue
    }

    fn step_entropy(&mut self) -> Step {
        let buf = &self.buf;
        let mut p = self.pos;
        loop {
            let Some(off) = memchr_ff(&buf[p..]) else {
                self.pos = buf.len();
                return Step::NeedMore;
            };
            p += off;
            let Some(&next) = buf.get(p + 1) else {
                self.pos = p;
                return Step::NeedMore;
            };
            match next {
                // Stuffed zero or restart marker: still entropy data.
                0x00 | 0xD0..=0xD7 => p += 2,
                // Fill byte before a marker.
                0xFF => p += 1,
                0xD9 => return Step::Frame(p + 2),
                0xD8 => return self.cut_off(p),
                // Any other marker (DHT or SOS of a progressive frame...) ends the scan.
                _ => {
                    self.pos = p;
                    self.phase = Phase::Segments;
                    return Step::Continue;
                }
            }
        }
    }
}

enum Step {
    NeedMore,
    Continue,
    /// A frame ends at this offset (exclusive).
    Frame(usize),
    Broken(FrameError),
}

fn memchr_ff(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == 0xFF)
}

/// Removes every DHT segment before the first scan, as UVC cameras send frames;
/// for tests and benchmarks.
pub fn strip_huffman_tables(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len());
    out.extend_from_slice(&frame[..2]);
    let mut pos = 2;
    while pos + 4 <= frame.len() && frame[pos] == 0xFF {
        let marker = frame[pos + 1];
        if marker == 0xDA {
            break;
        }
        let len = u16::from_be_bytes([frame[pos + 2], frame[pos + 3]]) as usize;
        let end = (pos + 2 + len).min(frame.len());
        if marker != 0xC4 {
            out.extend_from_slice(&frame[pos..end]);
        }
        pos = end;
    }
    out.extend_from_slice(&frame[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real JPEG with texture, so its entropy data contains stuffed FF 00 bytes.
    fn sample(width: usize, height: usize, seed: u32) -> Vec<u8> {
        let mut rgb = vec![0u8; width * height * 3];
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        for px in rgb.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *px = x as u8;
        }
        let image = turbojpeg::Image {
            pixels: rgb.as_slice(),
            width,
            pitch: width * 3,
            height,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2)
            .unwrap()
            .to_vec()
    }

    fn decode(jpeg: &[u8]) -> Vec<u8> {
        turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB)
            .unwrap()
            .pixels
    }

    #[test]
    fn standard_dht_is_well_formed() {
        let dht = standard_dht();
        assert_eq!(&dht[..2], &[0xFF, 0xC4]);
        assert_eq!(
            u16::from_be_bytes([dht[2], dht[3]]) as usize,
            dht.len() - 2,
            "the length covers everything after the marker"
        );
        // 4 tables: 4 id bytes + 4x16 counts + 12 + 162 + 12 + 162 symbols.
        assert_eq!(dht.len() - 4, 4 + 64 + 12 + 162 + 12 + 162);
    }

    #[test]
    fn inserts_standard_tables_into_a_frame_without_them() {
        let jpeg = sample(64, 48, 1);
        assert!(has_huffman_tables(&jpeg));
        let stripped = strip_huffman_tables(&jpeg);
        assert!(!has_huffman_tables(&stripped));
        assert!(stripped.len() < jpeg.len());
        let (fixed, info) = repair(&stripped).unwrap();
        assert!(matches!(fixed, Cow::Owned(_)));
        assert!(has_huffman_tables(&fixed));
        assert_eq!((info.width, info.height), (64, 48));
        // turbojpeg's defaults are the standard tables, so the picture is the same.
        assert_eq!(decode(&fixed), decode(&jpeg));
    }

    #[test]
    fn complete_frames_with_tables_pass_through_untouched() {
        let jpeg = sample(32, 32, 2);
        let (out, _) = repair(&jpeg).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&*out, &jpeg[..]);
    }

    #[test]
    fn zero_padding_after_the_end_is_trimmed() {
        let jpeg = sample(32, 32, 5);
        let mut padded = jpeg.clone();
        padded.resize(jpeg.len() + 4096, 0);
        let (out, _) = repair(&padded).unwrap();
        assert_eq!(&*out, &jpeg[..], "the frame browsers get ends at EOI");
    }

    #[test]
    fn drops_truncated_and_implausibly_small_frames() {
        let jpeg = sample(64, 48, 3);
        let cut = &jpeg[..jpeg.len() / 2];
        assert_eq!(
            repair(cut).unwrap_err(),
            FrameError::Corrupt(JpegError::NoEndMarker)
        );
        // A frame that claims 1920x1080 but has a few hundred bytes: lost on the bus.
        let mut big = sample(16, 16, 4);
        let sof = big.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        big[sof + 5..sof + 9].copy_from_slice(&[0x04, 0x38, 0x07, 0x80]);
        assert!(matches!(
            repair(&big).unwrap_err(),
            FrameError::TooSmall {
                width: 1920,
                height: 1080,
                ..
            }
        ));
    }

    fn split_all(s: &mut Splitter, data: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        for piece in data.chunks(chunk) {
            s.push(piece);
            while let Some(item) = s.next_frame() {
                out.push(item);
            }
        }
        out
    }

    #[test]
    fn splits_a_stream_at_frame_boundaries_whatever_the_read_size() {
        let frames: Vec<_> = (0..5).map(|i| sample(48, 32, i)).collect();
        let stream: Vec<u8> = frames.concat();
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut s = Splitter::default();
            let got = split_all(&mut s, &stream, chunk);
            let got: Vec<_> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(got, frames, "chunk size {chunk}");
            assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn a_thumbnail_inside_app1_does_not_end_the_frame() {
        let thumb = sample(16, 16, 9);
        let main = sample(48, 32, 10);
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((thumb.len() + 8) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&thumb);
        let mut framed = main[..2].to_vec();
        framed.extend_from_slice(&app1);
        framed.extend_from_slice(&main[2..]);
        let mut s = Splitter::default();
        let got = split_all(&mut s, &[framed.clone(), main.clone()].concat(), 64);
        let got: Vec<_> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, vec![framed, main]);
    }

    #[test]
    fn a_cut_off_frame_is_reported_and_the_next_one_survives() {
        let a = sample(48, 32, 11);
        let b = sample(48, 32, 12);
        let c = sample(48, 32, 13);
        for cut in [10, 200, a.len() - 3] {
            let stream = [&a[..cut], &b[..], &c[..]].concat();
            let mut s = Splitter::default();
            let got = split_all(&mut s, &stream, 512);
            let good: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
            let bad = got.iter().filter(|r| r.is_err()).count();
            assert!(bad >= 1, "cut at {cut}: the broken frame is reported");
            assert_eq!(good.last(), Some(&&c), "cut at {cut}");
            assert!(good.contains(&&b) || cut < 200, "cut at {cut}: {good:?}");
            for frame in good {
                assert!(repair(frame).is_ok());
            }
        }
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_reported() {
        let a = sample(32, 32, 14);
        let stream = [b"hello world".as_slice(), &a, b"\n\n", &a].concat();
        let mut s = Splitter::default();
        let got = split_all(&mut s, &stream, 5);
        let good = got.iter().filter(|r| r.is_ok()).count();
        assert_eq!(good, 2);
        assert!(got
            .iter()
            .any(|r| matches!(r, Err(FrameError::Garbage { .. }))));
    }

    #[test]
    fn memory_is_bounded_when_a_frame_never_ends() {
        let a = sample(32, 32, 15);
        let mut s = Splitter::new(4096);
        let mut stream = a[..a.len() - 2].to_vec(); // no EOI
        stream.extend(std::iter::repeat_n(0x11u8, 10_000));
        let got = split_all(&mut s, &stream, 1000);
        assert!(got.contains(&Err(FrameError::TooLarge)));
        assert!(s.pending() < 4096 + 1000);
    }
}
