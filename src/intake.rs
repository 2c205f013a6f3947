//! The only way a picture becomes a frame a stream can publish.
//!
//! Every source hands its pictures to an [`Intake`] of its own (one per camera
//! thread, pipe session, test pattern or upload connection): raw camera planes,
//! an RGB canvas, a JPEG (camera MJPEG, an `exec:` pipe), or a browser upload.
//! The intake does the work each kind needs and returns an [`Admitted`] frame,
//! the one type [`Stream::publish`](crate::hub::Stream::publish) takes. Nothing
//! else can make an `Admitted`, so a new source cannot skip what intake does to
//! every picture. Pictures kindercam draws itself (the offline card) come in
//! through the explicit [`Intake::placeholder`].
//!
//! A frame intake cannot handle is dropped here, counted in the stream's
//! `frames_dropped` and logged through a [`DropLog`]; the caller only learns
//! that it failed and never gets a frame to publish.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::canvas::Canvas;
use crate::encode::{Encoder, RawImage};
use crate::frame::Frame;
use crate::hub::Stream;
use crate::source::supervisor::DropLog;

/// A frame that passed intake, ready for [`Stream::publish`](crate::hub::Stream::publish).
#[derive(Debug)]
pub struct Admitted(Frame);

impl Admitted {
    /// Sets when the picture was taken (see [`Frame::captured_at`]).
    pub fn captured_at(self, unix_ms: u64) -> Admitted {
        Admitted(self.0.captured_at(unix_ms))
    }

    pub fn frame(&self) -> &Frame {
        &self.0
    }

    /// The frame, for the hub to share; taking it out is free, making one is not.
    pub fn into_frame(self) -> Frame {
        self.0
    }

    /// Any frame, for the hub's own tests.
    #[cfg(test)]
    pub(crate) fn for_test(frame: Frame) -> Admitted {
        Admitted(frame)
    }
}

/// Why intake dropped a frame (already counted and logged when returned).
#[derive(Debug)]
pub enum IntakeError {
    /// The picture could not be encoded (an incomplete raw buffer, a bad size).
    Encode(String),
}

impl fmt::Display for IntakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntakeError::Encode(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for IntakeError {}

/// One source's way in: what its pictures need, kept from frame to frame.
pub struct Intake {
    stream: Arc<Stream>,
    /// For raw and RGB pictures; JPEG sources have none.
    encoder: Option<Encoder>,
    drops: DropLog,
}

impl Intake {
    /// For a source of JPEG frames (camera MJPEG, a pipe, uploads). `what` names
    /// the source in the dropped-frame warnings ("camera", "command").
    pub fn new(stream: Arc<Stream>, what: &'static str) -> Intake {
        Intake {
            stream,
            encoder: None,
            drops: DropLog::new(what),
        }
    }

    /// For a source of raw or RGB pictures, which intake encodes at `quality`.
    pub fn encoding(
        stream: Arc<Stream>,
        what: &'static str,
        quality: u8,
    ) -> anyhow::Result<Intake> {
        let mut intake = Intake::new(stream, what);
        intake.encoder = Some(Encoder::new(quality)?);
        Ok(intake)
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Counts and logs a frame the source itself refused (cut off, corrupt), in
    /// the same place as the frames intake drops.
    pub fn drop_frame(&mut self, why: &dyn fmt::Display) {
        self.drops.record(&self.stream, why);
    }

    fn refuse(&mut self, error: IntakeError) -> IntakeError {
        self.drops.record(&self.stream, &error);
        error
    }

    fn encoder(&mut self) -> Result<&mut Encoder, IntakeError> {
        if self.encoder.is_none() {
            return Err(self.refuse(IntakeError::Encode(
                "this source was set up without an encoder".into(),
            )));
        }
        Ok(self.encoder.as_mut().expect("checked above"))
    }

    /// A camera's uncompressed picture, encoded once.
    pub fn raw(&mut self, img: &RawImage) -> Result<Admitted, IntakeError> {
        let encoded = self
            .encoder()?
            .encode_raw(img)
            .map_err(|e| IntakeError::Encode(e.to_string()));
        match encoded {
            Ok(jpeg) => Ok(Admitted(Frame::from_jpeg(
                jpeg,
                img.width as u32,
                img.height as u32,
            ))),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// A picture drawn as packed RGB (the test pattern), encoded once.
    pub fn rgb(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Admitted, IntakeError> {
        let encoded = self
            .encoder()?
            .encode_rgb(rgb, width, height)
            .map_err(|e| IntakeError::Encode(e.to_string()));
        match encoded {
            Ok(jpeg) => Ok(Admitted(Frame::from_jpeg(
                jpeg,
                width as u32,
                height as u32,
            ))),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// A checked JPEG of `width` x `height` (camera MJPEG, a pipe's frame, a
    /// binary upload), taken without copying.
    pub fn jpeg(
        &mut self,
        jpeg: impl Into<Bytes>,
        width: u32,
        height: u32,
    ) -> Result<Admitted, IntakeError> {
        Ok(Admitted(Frame::from_jpeg(jpeg, width, height)))
    }

    /// A checked browser upload: its JPEG and, for a text upload, the client's own
    /// data URL, kept as the frame's text so that it is not base64-encoded again.
    pub fn upload(
        &mut self,
        jpeg: Bytes,
        data_url: Option<Utf8Bytes>,
        width: u32,
        height: u32,
    ) -> Result<Admitted, IntakeError> {
        match data_url {
            Some(text) => Ok(Admitted(Frame::from_parts(jpeg, text, width, height))),
            None => self.jpeg(jpeg, width, height),
        }
    }

    /// A picture kindercam drew itself (the offline card): encoded at `quality`,
    /// never masked, since it shows nothing of the room.
    pub fn placeholder(canvas: &Canvas, quality: u8) -> anyhow::Result<Admitted> {
        let jpeg =
            Encoder::new(quality)?.encode_rgb(&canvas.pixels, canvas.width, canvas.height)?;
        Ok(Admitted(Frame::from_jpeg(
            jpeg,
            canvas.width as u32,
            canvas.height as u32,
        )))
    }
}
