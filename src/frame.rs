//! One encoded picture, shared by every viewer.
//!
//! A `Frame` is built once per captured picture: the JPEG bytes and the
//! `data:image/jpeg;base64,...` text are both made here, once, and afterwards only
//! reference-counted. A viewer's send clones a handle, never the bytes.

use std::sync::OnceLock;
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
    /// When the picture was taken, as near as the source can tell (the camera's
    /// buffer time, the moment the test pattern was drawn, an upload's arrival):
    /// what a viewer's "N s ago" counts from.
    pub captured_unix_ms: u64,
    /// `{"type":"frame","ts":captured_unix_ms,"seq":N}`, the text `?meta=1`
    /// viewers get before the frame: built once, by the first such viewer, and shared.
    meta: OnceLock<Utf8Bytes>,
    /// The frame's number where it was taken: the hub's sequence number when it
    /// is published (`Stream::publish`), or, for a frame relayed from another
    /// node of a cluster, that node's number, so that viewers on every relay can
    /// tell the same frame by it.
    seq: OnceLock<u64>,
    /// The node of a cluster this frame was relayed from; `None` for a frame
    /// taken here. A relayed frame is never sent back out to the cluster.
    relayed_from: Option<std::sync::Arc<str>>,
    /// The same picture at half the width and height, for `?size=small`
    /// viewers; made by intake only while one is watching (`crate::shrink`),
    /// or for the frame held when the first such viewer joins.
    small: OnceLock<Small>,
}

/// A frame's small variant: its own JPEG and data URL, the frame's times.
#[derive(Debug)]
pub struct Small {
    pub width: u32,
    pub height: u32,
    pub jpeg: Bytes,
    pub data_url: Utf8Bytes,
}

impl Small {
    pub fn from_jpeg(jpeg: Vec<u8>, width: u32, height: u32) -> Small {
        let jpeg = Bytes::from(jpeg);
        Small {
            width,
            height,
            data_url: data_url_of(&jpeg),
            jpeg,
        }
    }
}

/// `jpeg` as a `data:image/jpeg;base64,...` URL, base64-encoded once.
fn data_url_of(jpeg: &[u8]) -> Utf8Bytes {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut url = String::with_capacity(DATA_URL_PREFIX.len() + jpeg.len().div_ceil(3) * 4);
    url.push_str(DATA_URL_PREFIX);
    engine.encode_string(jpeg, &mut url);
    Utf8Bytes::from(url)
}

impl Frame {
    /// Wraps freshly encoded JPEG bytes, base64-encoding them once. Takes a `Vec`
    /// from an encoder or `Bytes` from an upload, without copying either.
    pub fn from_jpeg(jpeg: impl Into<Bytes>, width: u32, height: u32) -> Frame {
        let jpeg: Bytes = jpeg.into();
        let url = data_url_of(&jpeg);
        Frame::from_parts(jpeg, url, width, height)
    }

    /// Wraps a JPEG that arrived already as a data URL (a browser upload), keeping
    /// the client's text so it is not base64-encoded a second time.
    pub fn from_parts(jpeg: Bytes, data_url: Utf8Bytes, width: u32, height: u32) -> Frame {
        let now = unix_ms();
        Frame {
            width,
            height,
            jpeg,
            data_url,
            ready_at: Instant::now(),
            ready_unix_ms: now,
            captured_unix_ms: now,
            meta: OnceLock::new(),
            small: OnceLock::new(),
            seq: OnceLock::new(),
            relayed_from: None,
        }
    }

    /// Marks the frame as relayed from cluster node `node`, where it was frame
    /// number `seq`.
    pub fn relayed(self, node: std::sync::Arc<str>, seq: u64) -> Frame {
        let _ = self.seq.set(seq);
        Frame {
            relayed_from: Some(node),
            ..self
        }
    }

    /// The cluster node this frame was relayed from, if it was.
    pub fn relayed_from(&self) -> Option<&std::sync::Arc<str>> {
        self.relayed_from.as_ref()
    }

    /// Numbers the frame (see [`Frame::seq`]); a number it already has stays.
    pub fn number(&self, seq: u64) {
        let _ = self.seq.set(seq);
    }

    /// The frame's number where it was taken, once published.
    pub fn seq(&self) -> Option<u64> {
        self.seq.get().copied()
    }

    /// Copies what says where and when this frame was taken onto `other` (the
    /// same picture, masked again).
    pub fn same_origin(&self, other: Frame) -> Frame {
        let other = other.captured_at(self.captured_unix_ms);
        if let Some(seq) = self.seq() {
            other.number(seq);
        }
        Frame {
            relayed_from: self.relayed_from.clone(),
            ..other
        }
    }

    /// Adds the small variant.
    pub fn with_small(self, small: Small) -> Frame {
        self.set_small(small);
        self
    }

    /// The small variant, if made.
    pub fn small(&self) -> Option<&Small> {
        self.small.get()
    }

    /// Adds the small variant to a shared frame; a second one is ignored.
    pub fn set_small(&self, small: Small) {
        let _ = self.small.set(small);
    }

    /// Sets when the picture was taken, if the source knows it was before now.
    pub fn captured_at(mut self, unix_ms: u64) -> Frame {
        self.captured_unix_ms = unix_ms.min(self.ready_unix_ms);
        self
    }

    /// The JSON message that tells a `?meta=1` viewer when the next frame was
    /// taken, and its number (`seq`) once it has one.
    pub fn meta(&self) -> &Utf8Bytes {
        self.meta.get_or_init(|| match self.seq() {
            Some(seq) => format!(
                r#"{{"type":"frame","ts":{},"seq":{seq}}}"#,
                self.captured_unix_ms
            )
            .into(),
            None => format!(r#"{{"type":"frame","ts":{}}}"#, self.captured_unix_ms).into(),
        })
    }
}

pub fn unix_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// `time` in milliseconds since the Unix epoch (0 before it).
pub fn ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_names_the_capture_time_once_set() {
        let frame = Frame::from_jpeg(vec![1, 2, 3], 2, 2).captured_at(1_000);
        assert_eq!(frame.captured_unix_ms, 1_000);
        let meta: serde_json::Value = serde_json::from_str(frame.meta()).unwrap();
        assert_eq!(meta, serde_json::json!({"type": "frame", "ts": 1000}));
        assert_eq!(frame.meta().as_ptr(), frame.meta().as_ptr(), "built once");
        let numbered = Frame::from_jpeg(vec![1, 2, 3], 2, 2).captured_at(1_000);
        numbered.number(7);
        numbered.number(8);
        let meta: serde_json::Value = serde_json::from_str(numbered.meta()).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"type": "frame", "ts": 1000, "seq": 7}),
            "the first number stays"
        );
        let relayed = Frame::from_jpeg(vec![1], 1, 1).relayed("relay-1".into(), 42);
        relayed.number(3);
        assert_eq!(
            relayed.seq(),
            Some(42),
            "a relayed frame keeps its origin's number"
        );
        assert_eq!(relayed.relayed_from().map(|n| &**n), Some("relay-1"));
        let frame = Frame::from_jpeg(vec![1], 1, 1);
        let ready = frame.ready_unix_ms;
        assert_eq!(
            frame.captured_at(ready + 60_000).captured_unix_ms,
            ready,
            "a capture time after the frame was ready is not believed"
        );
    }
}
