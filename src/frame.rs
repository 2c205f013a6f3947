//! One encoded picture, shared by every viewer.
//!
//! A `Frame` is built once per captured picture: the JPEG bytes and the
//! `data:image/jpeg;base64,...` text are both made here, once, and afterwards only
//! reference-counted. A viewer's send clones a handle, never the bytes.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What every frame message starts with; the prototype put this text into `img.src`.
pub const DATA_URL_PREFIX: &str = "data:image/jpeg;base64,";

#[derive(Debug)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// The JPEG file, for `/snapshot.jpg` and binary viewers.
    pub jpeg: Bytes,
    /// The same JPEG as a data URL, for text viewers.
    pub data_url: Utf8Bytes,
    /// When the frame became ready to send; delays are measured from here.
    pub ready_at: Instant,
    pub ready_unix_ms: u64,
}

impl Frame {
    /// Wraps freshly encoded JPEG bytes, base64-encoding them once. Takes a `Vec`
    /// from an encoder or `Bytes` from an upload, without copying either.
    pub fn from_jpeg(jpeg: impl Into<Bytes>, width: u32, height: u32) -> Frame {
        let jpeg: Bytes = jpeg.into();
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut url = String::with_capacity(DATA_URL_PREFIX.len() + jpeg.len().div_ceil(3) * 4);
        url.push_str(DATA_URL_PREFIX);
        engine.encode_string(&jpeg, &mut url);
        Frame::from_parts(jpeg, Utf8Bytes::from(url), width, height)
    }

    /// Wraps a JPEG that arrived already as a data URL (a browser upload), keeping
    /// the client's text so it is not base64-encoded a second time.
    pub fn from_parts(jpeg: Bytes, data_url: Utf8Bytes, width: u32, height: u32) -> Frame {
        Frame {
            width,
            height,
            jpeg,
            data_url,
            ready_at: Instant::now(),
            ready_unix_ms: unix_ms(),
        }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
