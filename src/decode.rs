//! Decodes the PNG and WebP pictures browsers upload, so that they can be made
//! into JPEG frames like everything else.
//!
//! A page's `canvas.toDataURL()` gives PNG unless asked for JPEG (the daycare's
//! prototype camera page asks for nothing), and `toBlob("image/webp")` gives WebP.
//! Both are decoded here with the pure-Rust `png` and `image-webp` crates into
//! packed RGB, which [`Intake::decoded`](crate::intake::Intake::decoded) masks and
//! encodes once to JPEG at the stream's quality: snapshots, MJPEG and viewers
//! only ever see JPEG. Alpha is dropped (a canvas is opaque).
//!
//! A few bytes of PNG or WebP can claim a picture of gigabytes, so every decode
//! runs under [`Limits`]: the pixel count is read from the header and refused
//! before anything is allocated, the decoded size (what the decoder would
//! produce, 16-bit samples and alpha included) is capped, and a PNG decode checks
//! the clock between rows and gives up after its deadline. (A WebP decode cannot
//! be interrupted; the caller stops waiting for it at the same deadline, see
//! `ws::upload`.) Each refusal is a [`DecodeError`] whose text the uploader sees.

use std::fmt;
use std::io::Cursor;
use std::time::{Duration, Instant};

/// The picture formats an upload may be in, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    /// The three, as the data URL prefixes a browser writes.
    pub const ALL: [Format; 3] = [Format::Jpeg, Format::Png, Format::Webp];

    /// `image/jpeg`, `image/png` or `image/webp`.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }

    /// `data:image/...;base64,`, as `canvas.toDataURL()` begins.
    pub fn data_url_prefix(self) -> &'static str {
        match self {
            Format::Jpeg => crate::frame::DATA_URL_PREFIX,
            Format::Png => "data:image/png;base64,",
            Format::Webp => "data:image/webp;base64,",
        }
    }

    /// What the file's first bytes say it is (its magic number), if one of the three.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Format::Webp)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
        })
    }
}

/// How long one upload's decode may take. A 640x480 canvas takes a few
/// milliseconds (tens on a Pi); the largest allowed picture well under a second.
pub const DECODE_DEADLINE: Duration = Duration::from_secs(2);

/// What a decode may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Width times height, read from the header before anything is allocated.
    pub max_pixels: usize,
    /// Bytes the decoder may produce and allocate (its output in the file's own
    /// sample layout, e.g. 8 bytes a pixel for 16-bit RGBA).
    pub max_decoded_bytes: usize,
    /// When a decode is abandoned.
    pub deadline: Instant,
}

impl Limits {
    /// The limits of a browser upload: no more pixels than any camera's
    /// ([`MAX_PIXELS`](crate::privacy::MAX_PIXELS)), at most 4 bytes for each of
    /// them (8-bit RGBA), within [`DECODE_DEADLINE`] of `start`.
    pub fn upload(start: Instant) -> Limits {
        Limits {
            max_pixels: crate::privacy::MAX_PIXELS,
            max_decoded_bytes: crate::privacy::MAX_PIXELS * 4,
            deadline: start + DECODE_DEADLINE,
        }
    }

    fn check_pixels(&self, width: u32, height: u32) -> Result<(), DecodeError> {
        if width == 0 || height == 0 {
            return Err(DecodeError::Empty);
        }
        if width as usize * height as usize > self.max_pixels {
            return Err(DecodeError::TooManyPixels {
                width,
                height,
                max: self.max_pixels,
            });
        }
        Ok(())
    }

    fn check_bytes(&self, bytes: Option<usize>) -> Result<(), DecodeError> {
        match bytes {
            Some(bytes) if bytes <= self.max_decoded_bytes => Ok(()),
            _ => Err(DecodeError::TooLarge {
                bytes: bytes.unwrap_or(usize::MAX),
                max: self.max_decoded_bytes,
            }),
        }
    }

    fn check_time(&self, format: Format) -> Result<(), DecodeError> {
        if Instant::now() > self.deadline {
            return Err(DecodeError::TooSlow(format));
        }
        Ok(())
    }
}

/// Why a picture was not decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// The file is not a valid picture of its format.
    Corrupt {
        format: Format,
        why: String,
    },
    Empty,
    /// The header claims more pixels than any camera makes.
    TooManyPixels {
        width: u32,
        height: u32,
        max: usize,
    },
    /// Decoding would produce or allocate more than allowed.
    TooLarge {
        bytes: usize,
        max: usize,
    },
    /// The decode ran past its deadline and was abandoned.
    TooSlow(Format),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Corrupt { format, why } => {
                write!(f, "not a valid {format} picture: {why}")
            }
            DecodeError::Empty => f.write_str("the picture has no pixels"),
            DecodeError::TooManyPixels { width, height, max } => write!(
                f,
                "a {width}x{height} picture is larger than any camera's ({max} pixels at most)"
            ),
            DecodeError::TooLarge { bytes, max } => write!(
                f,
                "the picture would take {} MiB to decode (at most {} MiB)",
                bytes.div_ceil(1 << 20),
                max / (1 << 20)
            ),
            DecodeError::TooSlow(format) => write!(
                f,
                "decoding the {format} picture took longer than {} s; send a smaller one",
                DECODE_DEADLINE.as_secs()
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A decoded picture: packed 8-bit RGB, `width * height * 3` bytes.
#[derive(Debug)]
pub struct Rgb {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Reads a PNG's or WebP's size from its header, without decoding it.
pub fn dimensions(format: Format, bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    match format {
        Format::Png => {
            let mut decoder = png::Decoder::new(Cursor::new(bytes));
            let info = decoder.read_header_info().map_err(png_error)?;
            Ok((info.width, info.height))
        }
        Format::Webp => {
            let decoder = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(webp_error)?;
            Ok(decoder.dimensions())
        }
        Format::Jpeg => {
            let info = crate::jpeg::inspect(bytes).map_err(|e| DecodeError::Corrupt {
                format,
                why: e.to_string(),
            })?;
            Ok((info.width, info.height))
        }
    }
}

/// Decodes a PNG or WebP into RGB within `limits`. (JPEG is never decoded here:
/// it is taken as it is.)
pub fn decode(format: Format, bytes: &[u8], limits: &Limits) -> Result<Rgb, DecodeError> {
    match format {
        Format::Png => decode_png(bytes, limits),
        Format::Webp => decode_webp(bytes, limits),
        Format::Jpeg => Err(DecodeError::Corrupt {
            format,
            why: "JPEG is taken as it is, not decoded".into(),
        }),
    }
}

fn png_error(e: png::DecodingError) -> DecodeError {
    match e {
        png::DecodingError::LimitsExceeded => DecodeError::TooLarge {
            bytes: usize::MAX,
            max: 0,
        },
        other => DecodeError::Corrupt {
            format: Format::Png,
            why: other.to_string(),
        },
    }
}

fn webp_error(e: image_webp::DecodingError) -> DecodeError {
    DecodeError::Corrupt {
        format: Format::Webp,
        why: e.to_string(),
    }
}

fn decode_png(bytes: &[u8], limits: &Limits) -> Result<Rgb, DecodeError> {
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: limits.max_decoded_bytes,
        },
    );
    // Palette, low bit depths and tRNS expanded, 16-bit samples cut to 8.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    let (width, height, raw) = {
        let info = decoder.read_header_info().map_err(png_error)?;
        (info.width, info.height, info.raw_bytes())
    };
    limits.check_pixels(width, height)?;
    // What the file's own samples take once inflated: the bomb a 16-bit RGBA
    // file of allowed dimensions would be.
    limits.check_bytes(Some(raw))?;
    let mut reader = decoder.read_info().map_err(|e| match e {
        png::DecodingError::LimitsExceeded => DecodeError::TooLarge {
            bytes: raw,
            max: limits.max_decoded_bytes,
        },
        other => png_error(other),
    })?;
    let (color, _) = reader.output_color_type();
    let channels = color.samples();
    let (w, h) = (width as usize, height as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    if reader.info().interlaced {
        // Adam7 rows come a pass at a time; canvases never write these, so the
        // whole frame is decoded at once (still bounded by the size checks).
        let mut buf = vec![0u8; reader.output_buffer_size().unwrap_or(usize::MAX)];
        reader.next_frame(&mut buf).map_err(png_error)?;
        limits.check_time(Format::Png)?;
        for row in buf.chunks_exact(w * channels).take(h) {
            push_rgb(&mut rgb, row, channels);
        }
    } else {
        let mut row = vec![0u8; w * channels];
        for _ in 0..h {
            limits.check_time(Format::Png)?;
            match reader.read_row(&mut row).map_err(png_error)? {
                Some(_) => push_rgb(&mut rgb, &row, channels),
                None => {
                    return Err(DecodeError::Corrupt {
                        format: Format::Png,
                        why: "fewer rows than its header says".into(),
                    })
                }
            }
        }
    }
    Ok(Rgb {
        pixels: rgb,
        width,
        height,
    })
}

/// Appends one row of 8-bit grey, grey+alpha, RGB or RGBA as RGB.
fn push_rgb(out: &mut Vec<u8>, row: &[u8], channels: usize) {
    match channels {
        3 => out.extend_from_slice(row),
        4 => out.extend(row.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]])),
        1 => out.extend(row.iter().flat_map(|&g| [g, g, g])),
        _ => out.extend(row.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]])),
    }
}

fn decode_webp(bytes: &[u8], limits: &Limits) -> Result<Rgb, DecodeError> {
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(webp_error)?;
    let (width, height) = decoder.dimensions();
    limits.check_pixels(width, height)?;
    let size = decoder.output_buffer_size();
    limits.check_bytes(size)?;
    decoder.set_memory_limit(limits.max_decoded_bytes);
    let alpha = decoder.has_alpha();
    let mut buf = vec![0u8; size.unwrap_or(0)];
    decoder.read_image(&mut buf).map_err(|e| match e {
        image_webp::DecodingError::MemoryLimitExceeded => DecodeError::TooLarge {
            bytes: usize::MAX,
            max: limits.max_decoded_bytes,
        },
        other => webp_error(other),
    })?;
    limits.check_time(Format::Webp)?;
    if alpha {
        // RGBA to RGB in place: each pixel moves left, never over one not yet read.
        let pixels = buf.len() / 4;
        for i in 0..pixels {
            buf.copy_within(i * 4..i * 4 + 3, i * 3);
        }
        buf.truncate(pixels * 3);
    }
    Ok(Rgb {
        pixels: buf,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `width` x `height` PNG of `color` and `depth` with every sample `value`.
    pub(crate) fn png_of(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        value: u8,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().unwrap();
        let bytes_per_sample = if depth == png::BitDepth::Sixteen {
            2
        } else {
            1
        };
        let len = width as usize * height as usize * color.samples() * bytes_per_sample;
        writer.write_image_data(&vec![value; len]).unwrap();
        writer.finish().unwrap();
        out
    }

    fn soon() -> Limits {
        Limits::upload(Instant::now())
    }

    #[test]
    fn sniffs_the_three_formats_by_their_first_bytes() {
        let png = png_of(4, 4, png::ColorType::Rgb, png::BitDepth::Eight, 9);
        assert_eq!(Format::sniff(&png), Some(Format::Png));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(Format::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"GIF89a"), None);
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WAVE"), None);
    }

    #[test]
    fn decodes_every_png_colour_type_to_rgb() {
        use png::{BitDepth, ColorType};
        for (color, depth) in [
            (ColorType::Rgba, BitDepth::Eight),
            (ColorType::Rgb, BitDepth::Eight),
            (ColorType::Grayscale, BitDepth::Eight),
            (ColorType::GrayscaleAlpha, BitDepth::Eight),
            (ColorType::Rgb, BitDepth::Sixteen),
        ] {
            let png = png_of(33, 17, color, depth, 200);
            let rgb = decode(Format::Png, &png, &soon()).unwrap();
            assert_eq!((rgb.width, rgb.height), (33, 17), "{color:?}");
            assert_eq!(rgb.pixels.len(), 33 * 17 * 3, "{color:?}");
            assert!(rgb.pixels.iter().all(|&v| v == 200), "{color:?} {depth:?}");
        }
    }

    #[test]
    fn decodes_webp_lossless_with_and_without_alpha() {
        for (color, bpp) in [
            (image_webp::ColorType::Rgba8, 4),
            (image_webp::ColorType::Rgb8, 3),
        ] {
            let mut webp = Vec::new();
            let pixels: Vec<u8> = (0..20 * 10 * bpp).map(|i| (i % 251) as u8).collect();
            image_webp::WebPEncoder::new(&mut webp)
                .encode(&pixels, 20, 10, color)
                .unwrap();
            let rgb = decode(Format::Webp, &webp, &soon()).unwrap();
            assert_eq!((rgb.width, rgb.height), (20, 10));
            let expected: Vec<u8> = pixels
                .chunks_exact(bpp)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            assert_eq!(rgb.pixels, expected, "{color:?}");
        }
    }

    /// CRC-32 (IEEE), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid 8x8 PNG whose header then claims `width` x `height`.
    pub(crate) fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut png = png_of(8, 8, png::ColorType::Rgb, png::BitDepth::Eight, 0);
        // IHDR: length (4) and type (4) after the 8-byte signature, then width
        // and height, ..., and the CRC of type and data at 29..33.
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn a_header_claiming_a_giant_picture_is_refused_before_decoding() {
        let e = decode(Format::Png, &png_claiming(65535, 65535), &soon()).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooManyPixels {
                    width: 65535,
                    height: 65535,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            dimensions(Format::Png, &png_claiming(65535, 3)).unwrap(),
            (65535, 3)
        );
    }

    #[test]
    fn a_decoded_size_bomb_is_refused() {
        // 3000x2000 is within the pixel count, but at 16-bit RGBA it inflates
        // to 48 MB from a file of a few tens of KB.
        let bomb = png_of(3000, 2000, png::ColorType::Rgba, png::BitDepth::Sixteen, 0);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let e = decode(Format::Png, &bomb, &soon()).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("MiB to decode"), "{e}");
    }

    #[test]
    fn a_decode_past_its_deadline_is_abandoned() {
        let png = png_of(64, 64, png::ColorType::Rgb, png::BitDepth::Eight, 1);
        let past = Limits {
            deadline: Instant::now() - Duration::from_millis(1),
            ..soon()
        };
        let e = decode(Format::Png, &png, &past).unwrap_err();
        assert!(matches!(e, DecodeError::TooSlow(Format::Png)), "{e}");
        assert!(e.to_string().contains("took longer"), "{e}");
    }

    #[test]
    fn a_corrupt_picture_is_a_clear_error() {
        let png = png_of(64, 64, png::ColorType::Rgb, png::BitDepth::Eight, 1);
        let cut = &png[..png.len() - 30];
        let e = decode(Format::Png, cut, &soon()).unwrap_err();
        assert!(e.to_string().starts_with("not a valid PNG picture"), "{e}");
        let e = decode(Format::Webp, b"RIFF\x10\0\0\0WEBPVP8 junkjunk", &soon()).unwrap_err();
        assert!(e.to_string().starts_with("not a valid WebP picture"), "{e}");
    }
}
