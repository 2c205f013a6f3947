//! Checks that bytes are a complete baseline or progressive JPEG and reads its size,
//! without decoding it. Used on every frame that enters from outside (uploads now,
//! camera MJPEG later), so that nothing broken is ever fanned out to viewers.

use std::fmt;

/// Smaller than this cannot hold the headers of a real JPEG.
pub const MIN_JPEG_BYTES: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    pub width: u32,
    pub height: u32,
}

/// Why bytes were refused; callers report it and count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegError {
    TooSmall(usize),
    NoStartMarker,
    NoEndMarker,
    /// A segment claims more bytes than there are: a cut-off frame.
    Truncated,
    /// No SOF segment before the scan, so no size to show.
    NoFrameHeader,
    /// A zero width or height.
    EmptyImage,
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JpegError::TooSmall(n) => write!(f, "too small to be a JPEG ({n} bytes)"),
            JpegError::NoStartMarker => f.write_str("not a JPEG (no SOI marker)"),
            JpegError::NoEndMarker => f.write_str("incomplete JPEG (no EOI marker)"),
            JpegError::Truncated => f.write_str("incomplete JPEG (a segment is cut off)"),
            JpegError::NoFrameHeader => f.write_str("JPEG without a frame header (SOF)"),
            JpegError::EmptyImage => f.write_str("JPEG with a zero width or height"),
        }
    }
}

impl std::error::Error for JpegError {}

/// Validates the marker structure up to the first scan, and the end marker.
pub fn inspect(data: &[u8]) -> Result<JpegInfo, JpegError> {
    if data.len() < MIN_JPEG_BYTES {
        return Err(JpegError::TooSmall(data.len()));
    }
    if data[0] != 0xFF || data[1] != 0xD8 {
        return Err(JpegError::NoStartMarker);
    }
    if !ends_with_eoi(data) {
        return Err(JpegError::NoEndMarker);
    }
    let mut pos = 2;
    let mut info = None;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if pos >= data.len() || data[pos] != 0xFF {
            return Err(JpegError::Truncated);
        }
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = data.get(pos) else {
            return Err(JpegError::Truncated);
        };
        pos += 1;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err(JpegError::NoFrameHeader),
            _ => {}
        }
        let len = match data.get(pos..pos + 2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]) as usize,
            None => return Err(JpegError::Truncated),
        };
        if len < 2 || pos + len > data.len() {
            return Err(JpegError::Truncated);
        }
        let segment = &data[pos + 2..pos + len];
        if is_sof(marker) {
            if segment.len() < 5 {
                return Err(JpegError::Truncated);
            }
            let height = u16::from_be_bytes([segment[1], segment[2]]) as u32;
            let width = u16::from_be_bytes([segment[3], segment[4]]) as u32;
            if width == 0 || height == 0 {
                return Err(JpegError::EmptyImage);
            }
            info = Some(JpegInfo { width, height });
        }
        if marker == 0xDA {
            return info.ok_or(JpegError::NoFrameHeader);
        }
        pos += len;
    }
}

/// SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC), which share the range.
fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Some encoders pad after EOI; allow a little zero padding but nothing else.
fn ends_with_eoi(data: &[u8]) -> bool {
    let trimmed_len = data.len() - data.iter().rev().take(16).take_while(|&&b| b == 0).count();
    trimmed_len >= 2 && data[trimmed_len - 2] == 0xFF && data[trimmed_len - 1] == 0xD9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let rgb = vec![128u8; 32 * 24 * 3];
        let image = turbojpeg::Image {
            pixels: rgb.as_slice(),
            width: 32,
            pitch: 32 * 3,
            height: 24,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 80, turbojpeg::Subsamp::Sub2x2)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn reads_size_of_real_jpeg() {
        assert_eq!(
            inspect(&sample()),
            Ok(JpegInfo {
                width: 32,
                height: 24
            })
        );
    }

    #[test]
    fn refuses_cut_off_and_foreign_bytes() {
        let jpeg = sample();
        assert_eq!(
            inspect(&jpeg[..jpeg.len() - 10]),
            Err(JpegError::NoEndMarker)
        );
        assert_eq!(inspect(&jpeg[..60]), Err(JpegError::TooSmall(60)));
        let mut png = jpeg.clone();
        png[0] = 0x89;
        assert_eq!(inspect(&png), Err(JpegError::NoStartMarker));
        // Headers cut off but an EOI glued on, as a broken encoder might produce.
        let mut glued = jpeg[..140].to_vec();
        glued.extend_from_slice(&[0xFF, 0xD9]);
        assert!(matches!(
            inspect(&glued),
            Err(JpegError::Truncated | JpegError::NoFrameHeader)
        ));
    }

    #[test]
    fn tolerates_zero_padding_after_eoi() {
        let mut jpeg = sample();
        jpeg.extend_from_slice(&[0, 0, 0, 0]);
        assert!(inspect(&jpeg).is_ok());
    }
}
