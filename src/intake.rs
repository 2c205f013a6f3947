//! The only way a picture becomes a frame a stream can publish.
//!
//! Every source hands its pictures to an [`Intake`] of its own (one per camera
//! thread, pipe session, test pattern or upload connection): raw camera planes,
//! an RGB canvas, a JPEG (camera MJPEG, an `exec:` pipe), or a browser upload
//! (a JPEG as it is, a PNG or WebP decoded by [`crate::decode`]).
//! The intake burns the stream's privacy mask in (read afresh for every frame, so
//! an admin's change applies from the next one) and returns an [`Admitted`] frame,
//! the one type [`Stream::publish`](crate::hub::Stream::publish) takes. Nothing
//! else can make an `Admitted`, so a new source cannot skip what intake does to
//! every picture. Pictures kindercam draws itself (the offline card) come in
//! through the explicit [`Intake::placeholder`].
//!
//! How each kind is masked:
//! - raw planes (V4L2 YUYV, NV12, ...), RGB canvases and decoded PNG/WebP
//!   uploads: copied (the camera's mmap buffer is read-only), masked in their
//!   planes, then encoded once;
//! - JPEG (camera MJPEG, `exec:` pipes, uploads): in the DCT domain by a
//!   [`JpegMasker`] kept from frame to frame; everything outside the mask stays
//!   bit-exact. A masked upload gets a new data URL, base64-encoded once.
//!
//! A stream without a mask costs what it did before masks existed: no copy, no
//! transform, the upload's own text kept.
//!
//! It fails closed: a frame that cannot be masked (a corrupt JPEG, a transform
//! error) or encoded is dropped here, counted in the stream's `frames_dropped`
//! and logged through a [`DropLog`]; the caller only learns that it failed and
//! never gets a frame to publish.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::canvas::Canvas;
use crate::encode::{Encoder, RawFormat, RawImage};
use crate::frame::{Frame, Small};
use crate::hub::Stream;
use crate::privacy::{mask_raw, JpegMasker, Mask, MaskFrameError};
use crate::shrink::{self, Shrinker};
use crate::source::supervisor::DropLog;

/// A frame that passed intake, ready for [`Stream::publish`](crate::hub::Stream::publish).
#[derive(Debug)]
pub struct Admitted {
    frame: Frame,
    /// The stream's mask this frame was made under; `None` for a picture
    /// kindercam drew itself. The hub refuses the frame if the mask changed in
    /// the meantime (it was being encoded when the admin saved a new one).
    mask: Option<Arc<Mask>>,
}

impl Admitted {
    fn under(frame: Frame, mask: &Arc<Mask>) -> Admitted {
        Admitted {
            frame,
            mask: Some(mask.clone()),
        }
    }

    /// Sets when the picture was taken (see [`Frame::captured_at`]).
    pub fn captured_at(self, unix_ms: u64) -> Admitted {
        Admitted {
            frame: self.frame.captured_at(unix_ms),
            mask: self.mask,
        }
    }

    /// Marks the frame as relayed from cluster node `node`, where it was frame
    /// number `seq` (see [`Frame::relayed`]).
    pub fn relayed(self, node: Arc<str>, seq: u64) -> Admitted {
        Admitted {
            frame: self.frame.relayed(node, seq),
            mask: self.mask,
        }
    }

    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The frame alone.
    pub fn into_frame(self) -> Frame {
        self.frame
    }

    /// The frame and the mask it was made under, for the hub.
    pub fn into_parts(self) -> (Frame, Option<Arc<Mask>>) {
        (self.frame, self.mask)
    }

    /// Any frame, for the hub's own tests.
    #[cfg(test)]
    pub(crate) fn for_test(frame: Frame) -> Admitted {
        Admitted { frame, mask: None }
    }
}

/// `frame` with `mask` burned in: the hub's held frame when the admin saves a
/// new mask, so that nobody who joins before the next frame sees it unmasked.
/// `None` when it cannot be masked (the caller then forgets the frame).
pub(crate) fn remask(frame: &Frame, mask: &Mask) -> Option<Frame> {
    let mut masker = JpegMasker::new().ok()?;
    match masker.mask(&frame.jpeg, mask).ok()? {
        Cow::Owned(masked) => {
            Some(frame.same_origin(Frame::from_jpeg(masked, frame.width, frame.height)))
        }
        Cow::Borrowed(_) => None,
    }
}

/// Why intake dropped a frame (already counted and logged when returned).
#[derive(Debug)]
pub enum IntakeError {
    /// The picture could not be encoded (an incomplete raw buffer, a bad size).
    Encode(String),
    /// The stream has a privacy mask and this frame could not be masked.
    Mask(MaskFrameError),
}

impl fmt::Display for IntakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntakeError::Encode(why) => f.write_str(why),
            IntakeError::Mask(e) => write!(f, "{e} (dropped, never sent unmasked)"),
        }
    }
}

impl std::error::Error for IntakeError {}

/// One source's way in: what its pictures need, kept from frame to frame.
pub struct Intake {
    stream: Arc<Stream>,
    /// For raw and RGB pictures; JPEG sources have none.
    encoder: Option<Encoder>,
    /// Made at the first masked JPEG, then kept.
    masker: Option<JpegMasker>,
    /// The copy of a raw picture that a mask is burned into, reused.
    scratch: Vec<u8>,
    /// Made when a viewer first asks for small frames, then kept.
    shrinker: Option<Shrinker>,
    drops: DropLog,
}

impl Intake {
    /// For a source of JPEG frames (camera MJPEG, a pipe, uploads). `what` names
    /// the source in the dropped-frame warnings ("camera", "command").
    pub fn new(stream: Arc<Stream>, what: &'static str) -> Intake {
        Intake {
            stream,
            encoder: None,
            masker: None,
            scratch: Vec::new(),
            shrinker: None,
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

    /// Admits `frame`, made under `mask`, with its small variant (made from the
    /// masked JPEG) while some viewer wants one. A small picture that cannot be
    /// made is left out: small viewers then get the full frame.
    fn admit(&mut self, frame: Frame, mask: &Arc<Mask>) -> Admitted {
        if !self.stream.wants_small() || frame.width < shrink::MIN_WIDTH {
            return Admitted::under(frame, mask);
        }
        let shrinker = match &mut self.shrinker {
            Some(shrinker) => Some(shrinker),
            None => Shrinker::new().ok().map(|s| self.shrinker.insert(s)),
        };
        match shrinker.map(|s| s.shrink(&frame.jpeg)) {
            Some(Ok(small)) => {
                self.stream.count_small();
                let small = Small::from_jpeg(small.jpeg, small.width, small.height);
                Admitted::under(frame.with_small(small), mask)
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "no small variant for this frame");
                Admitted::under(frame, mask)
            }
            None => Admitted::under(frame, mask),
        }
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

    /// Encodes `img` (from its planes) or packed RGB, masked first when `mask` is set.
    fn encode(&mut self, img: &RawImage, rgb: bool, mask: &Mask) -> Result<Vec<u8>, IntakeError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(IntakeError::Encode(
                "this source was set up without an encoder".into(),
            ));
        };
        let masked;
        let img = if mask.is_empty() {
            img
        } else {
            let need = img.format.frame_len(img.width, img.height, img.stride);
            self.scratch.clear();
            self.scratch
                .extend_from_slice(&img.data[..need.min(img.data.len())]);
            let started = Instant::now();
            mask_raw(
                &mut self.scratch,
                img.format,
                img.width,
                img.height,
                img.stride,
                mask,
            )
            .map_err(IntakeError::Mask)?;
            self.stream.timings().mask_took(started);
            masked = RawImage {
                data: &self.scratch,
                ..*img
            };
            &masked
        };
        let started = Instant::now();
        let encoded = if rgb {
            encoder.encode_rgb(img.data, img.width, img.height)
        } else {
            encoder.encode_raw(img)
        };
        self.stream.timings().encode_took(started);
        encoded.map_err(|e| IntakeError::Encode(e.to_string()))
    }

    /// A camera's uncompressed picture, masked in its planes and encoded once.
    pub fn raw(&mut self, img: &RawImage) -> Result<Admitted, IntakeError> {
        let mask = self.stream.mask();
        match self.encode(img, false, &mask) {
            Ok(jpeg) => Ok(self.admit(
                Frame::from_jpeg(jpeg, img.width as u32, img.height as u32),
                &mask,
            )),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// A picture drawn as packed RGB (the test pattern), masked and encoded once.
    pub fn rgb(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Admitted, IntakeError> {
        let mask = self.stream.mask();
        let img = RawImage {
            format: RawFormat::Rgb24,
            data: rgb,
            width,
            height,
            stride: width * 3,
        };
        match self.encode(&img, true, &mask) {
            Ok(jpeg) => Ok(self.admit(Frame::from_jpeg(jpeg, width as u32, height as u32), &mask)),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// A decoded PNG or WebP upload: masked like a raw picture and encoded once,
    /// at the quality this intake was made with ([`Intake::encoding`]).
    pub fn decoded(&mut self, picture: &crate::decode::Rgb) -> Result<Admitted, IntakeError> {
        self.rgb(
            &picture.pixels,
            picture.width as usize,
            picture.height as usize,
        )
    }

    /// `jpeg` with `mask` burned in, in the DCT domain.
    fn mask_jpeg(&mut self, jpeg: &[u8], mask: &Mask) -> Result<Vec<u8>, IntakeError> {
        let masker = match &mut self.masker {
            Some(masker) => masker,
            None => self
                .masker
                .insert(JpegMasker::new().map_err(IntakeError::Mask)?),
        };
        let started = Instant::now();
        let masked = masker.mask(jpeg, mask).map_err(IntakeError::Mask)?;
        self.stream.timings().mask_took(started);
        match masked {
            Cow::Owned(masked) => Ok(masked),
            // Only an empty mask gives the input back, and callers check for that.
            Cow::Borrowed(_) => Err(IntakeError::Mask(MaskFrameError::Transform(
                "the mask was not applied".into(),
            ))),
        }
    }

    /// A checked JPEG of `width` x `height` (camera MJPEG, a pipe's frame, a
    /// binary upload): taken without copying, or masked in the DCT domain.
    pub fn jpeg(
        &mut self,
        jpeg: impl Into<Bytes>,
        width: u32,
        height: u32,
    ) -> Result<Admitted, IntakeError> {
        self.upload(jpeg.into(), None, width, height)
    }

    /// A checked browser upload: its JPEG and, for a text upload, the client's own
    /// data URL, kept as the frame's text so that it is not base64-encoded again,
    /// unless a mask changes the picture.
    pub fn upload(
        &mut self,
        jpeg: Bytes,
        data_url: Option<Utf8Bytes>,
        width: u32,
        height: u32,
    ) -> Result<Admitted, IntakeError> {
        let mask = self.stream.mask();
        if mask.is_empty() {
            let frame = match data_url {
                Some(text) => Frame::from_parts(jpeg, text, width, height),
                None => Frame::from_jpeg(jpeg, width, height),
            };
            return Ok(self.admit(frame, &mask));
        }
        match self.mask_jpeg(&jpeg, &mask) {
            Ok(masked) => Ok(self.admit(Frame::from_jpeg(masked, width, height), &mask)),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// A picture kindercam drew itself (the offline card): encoded at `quality`,
    /// never masked, since it shows nothing of the room.
    pub fn placeholder(canvas: &Canvas, quality: u8) -> anyhow::Result<Admitted> {
        let jpeg =
            Encoder::new(quality)?.encode_rgb(&canvas.pixels, canvas.width, canvas.height)?;
        Ok(Admitted {
            frame: Frame::from_jpeg(jpeg, canvas.width as u32, canvas.height as u32),
            mask: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::privacy::{PixelRect, Rect};
    use base64::Engine;
    use turbojpeg::{Decompressor, Image, PixelFormat};

    const W: usize = 128;
    const H: usize = 96;

    /// x 0.25-0.75, y 0.25-0.75: 32..96 by 24..72, rounded out to 16x16 MCUs.
    const MASKED: PixelRect = PixelRect {
        x0: 32,
        y0: 16,
        x1: 96,
        y1: 80,
    };

    fn mask() -> Mask {
        Mask::new(vec![Rect {
            x: 0.25,
            y: 0.25,
            w: 0.5,
            h: 0.5,
        }])
        .unwrap()
    }

    fn masked_stream(hub: &Hub, name: &str) -> Arc<Stream> {
        hub.store_mask(name, mask());
        hub.stream(name).unwrap()
    }

    fn luma(jpeg: &[u8]) -> Vec<u8> {
        let mut d = Decompressor::new().unwrap();
        let header = d.read_header(jpeg).unwrap();
        assert_eq!((header.width, header.height), (W, H));
        let mut grey = vec![0u8; W * H];
        d.decompress(
            jpeg,
            Image {
                pixels: &mut grey[..],
                width: W,
                pitch: W,
                height: H,
                format: PixelFormat::GRAY,
            },
        )
        .unwrap();
        grey
    }

    /// Black inside `MASKED` and bright everywhere else.
    fn assert_masked(jpeg: &[u8]) {
        let y = luma(jpeg);
        for (i, &v) in y.iter().enumerate() {
            let (col, row) = (i % W, i / W);
            if MASKED.contains(col, row) {
                assert_eq!(v, 0, "luma at {col},{row} inside the mask");
            } else {
                assert!(v > 60, "luma {v} at {col},{row} outside the mask");
            }
        }
    }

    /// A bright, busy 4:2:2 picture as a camera delivers it.
    fn yuyv() -> Vec<u8> {
        (0..W * H * 2)
            .map(|i| {
                if i % 2 == 0 {
                    100 + (i * 7 % 140) as u8
                } else {
                    90 + (i * 13 % 80) as u8
                }
            })
            .collect()
    }

    fn nv12() -> Vec<u8> {
        let y = (0..W * H).map(|i| 100 + (i * 11 % 140) as u8);
        let uv = (0..W * H / 2).map(|i| 90 + (i * 5 % 80) as u8);
        y.chain(uv).collect()
    }

    #[test]
    fn raw_frames_are_masked_in_a_copy_before_the_one_encode() {
        let hub = Hub::new();
        let mut intake = Intake::encoding(masked_stream(&hub, "x"), "camera", 75).unwrap();
        for (format, data) in [(RawFormat::Yuyv, yuyv()), (RawFormat::Nv12, nv12())] {
            let stride = format.min_stride(W);
            let before = data.clone();
            let frame = intake
                .raw(&RawImage {
                    format,
                    data: &data,
                    width: W,
                    height: H,
                    stride,
                })
                .unwrap();
            assert_eq!(data, before, "{format:?}: the camera's buffer is only read");
            assert_masked(&frame.frame().jpeg);
        }
        // And the test pattern's RGB.
        let rgb: Vec<u8> = (0..W * H * 3).map(|i| 120 + (i % 90) as u8).collect();
        assert_masked(&intake.rgb(&rgb, W, H).unwrap().frame().jpeg);
    }

    #[test]
    fn without_a_mask_nothing_is_copied_or_transformed() {
        let hub = Hub::new();
        let stream = hub.stream("x").unwrap();
        let mut intake = Intake::encoding(stream.clone(), "camera", 75).unwrap();
        let data = yuyv();
        let img = RawImage {
            format: RawFormat::Yuyv,
            data: &data,
            width: W,
            height: H,
            stride: W * 2,
        };
        let direct = Encoder::new(75).unwrap().encode_raw(&img).unwrap();
        let frame = intake.raw(&img).unwrap().into_frame();
        assert_eq!(
            frame.jpeg, direct,
            "the same encode as before masks existed"
        );
        assert!(intake.scratch.is_empty(), "no copy of the camera's buffer");
        // A JPEG and an upload's text are passed on as they are, not copied.
        let jpeg = Bytes::from(direct);
        let frame = intake.jpeg(jpeg.clone(), W as u32, H as u32).unwrap();
        assert_eq!(frame.frame().jpeg.as_ptr(), jpeg.as_ptr());
        let url: Utf8Bytes = format!(
            "{}{}",
            crate::frame::DATA_URL_PREFIX,
            base64::engine::general_purpose::STANDARD.encode(&jpeg)
        )
        .into();
        let frame = intake
            .upload(jpeg.clone(), Some(url.clone()), W as u32, H as u32)
            .unwrap();
        assert_eq!(frame.frame().data_url.as_ptr(), url.as_ptr());
        assert!(intake.masker.is_none(), "no transformer was even made");
        assert_eq!(stream.stats().masks, 0);
    }

    #[test]
    fn jpeg_frames_and_uploads_are_masked_and_get_a_new_data_url() {
        let hub = Hub::new();
        let stream = masked_stream(&hub, "x");
        assert_eq!(stream.stats().masks, 1);
        let rgb: Vec<u8> = (0..W * H * 3).map(|i| 120 + (i * 3 % 100) as u8).collect();
        let jpeg = Bytes::from(Encoder::new(80).unwrap().encode_rgb(&rgb, W, H).unwrap());
        let mut intake = Intake::new(stream, "command");
        assert_masked(
            &intake
                .jpeg(jpeg.clone(), W as u32, H as u32)
                .unwrap()
                .frame()
                .jpeg,
        );
        let url: Utf8Bytes = format!(
            "{}{}",
            crate::frame::DATA_URL_PREFIX,
            base64::engine::general_purpose::STANDARD.encode(&jpeg)
        )
        .into();
        let frame = intake
            .upload(jpeg, Some(url.clone()), W as u32, H as u32)
            .unwrap()
            .into_frame();
        assert_ne!(
            frame.data_url, url,
            "the client's text shows the unmasked picture"
        );
        assert_masked(&frame.jpeg);
        let b64 = frame
            .data_url
            .strip_prefix(crate::frame::DATA_URL_PREFIX)
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, frame.jpeg, "the data URL is the masked JPEG");
    }

    #[test]
    fn a_frame_that_cannot_be_masked_is_dropped_and_counted() {
        let hub = Hub::new();
        let stream = masked_stream(&hub, "x");
        let rgb = vec![150u8; W * H * 3];
        let good = Encoder::new(80).unwrap().encode_rgb(&rgb, W, H).unwrap();
        // Headers intact, entropy data cut short: it would pass a structure check.
        let mut cut = good[..good.len() * 2 / 3].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        let mut intake = Intake::new(stream.clone(), "command");
        let err = intake.jpeg(cut.clone(), W as u32, H as u32).unwrap_err();
        assert!(matches!(err, IntakeError::Mask(_)), "{err}");
        assert!(err.to_string().contains("never sent unmasked"), "{err}");
        let err = intake
            .upload(Bytes::from(cut), None, W as u32, H as u32)
            .unwrap_err();
        assert!(matches!(err, IntakeError::Mask(_)), "{err}");
        // A raw buffer too short for its size is refused before any copy is encoded.
        let mut raw = Intake::encoding(stream.clone(), "camera", 75).unwrap();
        let short = vec![128u8; 100];
        assert!(raw
            .raw(&RawImage {
                format: RawFormat::Yuyv,
                data: &short,
                width: W,
                height: H,
                stride: W * 2,
            })
            .is_err());
        assert_eq!(stream.stats().frames_dropped, 3);
        assert_eq!(stream.current().seq, 0, "nothing was published");
        // The next good frame goes through, masked.
        assert_masked(&intake.jpeg(good, W as u32, H as u32).unwrap().frame().jpeg);
    }

    #[test]
    fn a_mask_changed_over_the_api_applies_to_the_next_frame() {
        let hub = Hub::new();
        let stream = hub.stream("x").unwrap();
        let mut intake = Intake::encoding(stream, "test pattern", 75).unwrap();
        let rgb = vec![200u8; W * H * 3];
        let first = intake.rgb(&rgb, W, H).unwrap();
        assert!(luma(&first.frame().jpeg).iter().all(|&v| v > 60));
        hub.store_mask("x", mask());
        assert_masked(&intake.rgb(&rgb, W, H).unwrap().frame().jpeg);
        hub.store_mask("x", Mask::none());
        let last = intake.rgb(&rgb, W, H).unwrap();
        assert!(luma(&last.frame().jpeg).iter().all(|&v| v > 60));
    }
}
