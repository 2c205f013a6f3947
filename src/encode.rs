//! JPEG encoding with libjpeg-turbo. An `Encoder` keeps one compressor and is
//! moved into the blocking thread that does the work, so encoding never runs on
//! the async worker threads and never re-allocates libjpeg-turbo's state.

use anyhow::Context;
use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};

pub struct Encoder {
    compressor: Compressor,
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
        Ok(Encoder { compressor })
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
            .compress_to_vec(image)
            .context("JPEG encoding failed")
    }
}
