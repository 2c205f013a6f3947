//! The small variant of a frame, for viewers on a weak link (`?size=small`):
//! half the width and height, made once per frame from the frame's own (already
//! masked) JPEG, and only while somebody wants it.
//!
//! libjpeg-turbo decodes at half size in the DCT domain (its scaled inverse
//! DCT), which costs a fraction of a full decode, and the quarter-size picture is
//! encoded once; every small viewer then shares those bytes, as with the full
//! frame. Deriving it from the masked JPEG means the small picture can never show
//! what the mask hides.

use anyhow::Context;
use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

use crate::encode::Encoder;

/// The quality small frames are encoded at: a weak link needs bytes more than
/// detail. At half the size this keeps a small frame near a quarter of the full
/// one (at most 35 %, as the weak-link goal asks).
pub const SMALL_QUALITY: u8 = 70;

/// Frames narrower than this are not shrunk: they are already small.
pub const MIN_WIDTH: u32 = 160;

pub struct Shrinker {
    decompressor: Decompressor,
    encoder: Encoder,
    rgb: Vec<u8>,
}

/// A frame's small picture: the JPEG and its size.
pub struct Shrunk {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl Shrinker {
    pub fn new() -> anyhow::Result<Shrinker> {
        let mut decompressor = Decompressor::new().context("cannot create a JPEG decompressor")?;
        decompressor
            .set_scaling_factor(ScalingFactor::ONE_HALF)
            .context("cannot decode at half size")?;
        Ok(Shrinker {
            decompressor,
            encoder: Encoder::new(SMALL_QUALITY)?,
            rgb: Vec::new(),
        })
    }

    /// `jpeg` at half its width and height.
    pub fn shrink(&mut self, jpeg: &[u8]) -> anyhow::Result<Shrunk> {
        let header = self
            .decompressor
            .read_header(jpeg)
            .context("not a JPEG")?
            .scaled(ScalingFactor::ONE_HALF);
        let (width, height) = (header.width, header.height);
        self.rgb.resize(width * height * 3, 0);
        let image = Image {
            pixels: &mut self.rgb[..],
            width,
            pitch: width * 3,
            height,
            format: PixelFormat::RGB,
        };
        self.decompressor
            .decompress(jpeg, image)
            .context("cannot decode the frame")?;
        let jpeg = self.encoder.encode_rgb(&self.rgb, width, height)?;
        Ok(Shrunk {
            jpeg,
            width: width as u32,
            height: height as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_frame_is_half_the_size_and_a_fraction_of_the_bytes() {
        let (w, h) = (640usize, 480usize);
        // A busy picture, as a classroom is: gradients and texture everywhere.
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let t = ((x * 7 + y * 13) ^ (x * y / 5)) as u8;
                [x as u8 ^ t, (y as u8).wrapping_add(t / 3), t]
            })
            .collect();
        let full = Encoder::new(75).unwrap().encode_rgb(&rgb, w, h).unwrap();
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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Shrinker::new().unwrap().shrink(b"not a jpeg").is_err());
    }
}
