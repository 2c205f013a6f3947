//! The benchmark's own picture source: distinct 640x480 JPEGs of a synthetic
//! moving scene, each upload tagged with a sequence number, sent to
//! `/upload/NAME` at a fixed interval with the send instant recorded.
//!
//! The tag is a JPEG comment (COM) segment right after SOI: 18 bytes in all, a
//! multiple of 3, so its base64 is exactly the first 24 characters after the data
//! URL prefix and can be swapped in without re-encoding the rest. A viewer reads
//! the sequence number back from the first bytes of what it receives, text or
//! binary, and the delay is receipt instant minus send instant in one clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

pub const DATA_URL_PREFIX: &str = "data:image/jpeg;base64,";
const TAG: &[u8; 4] = b"KCB1";
/// SOI (2) + COM marker (2) + COM length (2) + tag (4) + sequence (8).
const HEAD_LEN: usize = 18;
const HEAD_B64_LEN: usize = HEAD_LEN / 3 * 4;

/// Pre-encoded frames whose head (the tag) is filled in per upload.
pub struct SourceFrames {
    data_urls: Vec<String>,
    pub jpeg_bytes: Vec<usize>,
}

fn head(seq: u64) -> [u8; HEAD_LEN] {
    let mut h = [0u8; HEAD_LEN];
    h[..6].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x0E]);
    h[6..10].copy_from_slice(TAG);
    h[10..].copy_from_slice(&seq.to_be_bytes());
    h
}

/// The sequence number of a tagged JPEG.
pub fn seq_from_jpeg(jpeg: &[u8]) -> Option<u64> {
    let h = jpeg.get(..HEAD_LEN)?;
    (h[..6] == [0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x0E] && &h[6..10] == TAG)
        .then(|| u64::from_be_bytes(h[10..].try_into().unwrap()))
}

/// The sequence number of a tagged JPEG data URL, decoding only its head.
pub fn seq_from_data_url(text: &[u8]) -> Option<u64> {
    let b64 = text
        .strip_prefix(DATA_URL_PREFIX.as_bytes())?
        .get(..HEAD_B64_LEN)?;
    let mut h = [0u8; HEAD_LEN];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(b64, &mut h)
        .ok()?;
    (n == HEAD_LEN).then_some(())?;
    seq_from_jpeg(&h)
}

impl SourceFrames {
    /// `count` distinct frames of a scene that moves from one frame to the next.
    pub fn generate(
        count: usize,
        width: usize,
        height: usize,
        quality: i32,
    ) -> anyhow::Result<Self> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_quality(quality)?;
        compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2)?;
        let mut rgb = vec![0u8; width * height * 3];
        let mut data_urls = Vec::with_capacity(count);
        let mut jpeg_bytes = Vec::with_capacity(count);
        for i in 0..count {
            render(i, width, height, &mut rgb);
            let image = turbojpeg::Image {
                pixels: rgb.as_slice(),
                width,
                pitch: width * 3,
                height,
                format: turbojpeg::PixelFormat::RGB,
            };
            let plain = compressor.compress_to_vec(image)?;
            anyhow::ensure!(
                plain.starts_with(&[0xFF, 0xD8]),
                "encoder output is not a JPEG"
            );
            let mut tagged = head(0).to_vec();
            tagged.extend_from_slice(&plain[2..]);
            // The tagged file must still be a JPEG a decoder accepts, at full size.
            let header = turbojpeg::read_header(&tagged).context("tagged JPEG does not decode")?;
            anyhow::ensure!(header.width == width && header.height == height);
            jpeg_bytes.push(tagged.len());
            let mut url = String::from(DATA_URL_PREFIX);
            base64::engine::general_purpose::STANDARD.encode_string(&tagged, &mut url);
            data_urls.push(url);
        }
        let frames = SourceFrames {
            data_urls,
            jpeg_bytes,
        };
        // Viewers find uploads by this tag: check it reads back before measuring anything.
        let probe = frames.tagged_data_url(0x0102_0304_0506_0708);
        anyhow::ensure!(seq_from_data_url(probe.as_bytes()) == Some(0x0102_0304_0506_0708));
        Ok(frames)
    }

    pub fn data_url_bytes(&self, seq: u64) -> usize {
        self.data_urls[seq as usize % self.data_urls.len()].len()
    }

    /// The data URL of upload `seq` (frames repeat; the tag never does).
    pub fn tagged_data_url(&self, seq: u64) -> String {
        let mut url = self.data_urls[seq as usize % self.data_urls.len()].clone();
        let b64 = base64::engine::general_purpose::STANDARD.encode(head(seq));
        url.replace_range(
            DATA_URL_PREFIX.len()..DATA_URL_PREFIX.len() + HEAD_B64_LEN,
            &b64,
        );
        url
    }
}

/// A classroom-like scene: a lit gradient background with sensor-like noise, a
/// few static "furniture" blocks and two objects that move every frame. Noise
/// matters: it is what gives camera JPEGs their size.
fn render(i: usize, w: usize, h: usize, rgb: &mut [u8]) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut noise = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 59) as i32 - 16 // -16..15
    };
    let (bx, by) = ((i * 12) % w, h / 3 + ((i * 7) % (h / 3)));
    let (cx, cy) = (w - 1 - (i * 5) % w, h / 2);
    for y in 0..h {
        for x in 0..w {
            let mut p = [
                (60 + x * 120 / w + y * 40 / h) as i32,
                (70 + y * 110 / h) as i32,
                90 + ((x / 40 + y / 40) % 2) as i32 * 30,
            ];
            if (100..220).contains(&x) && (300..420).contains(&y) {
                p = [150, 90, 40]; // a table
            }
            if x.abs_diff(bx) < 40 && y.abs_diff(by) < 60 {
                p = [200, 40, 40]; // a moving child in red
            }
            let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
            if dx * dx + dy * dy < 45 * 45 {
                p = [240, 220, 30]; // a rolling ball
            }
            let n = noise();
            for (c, v) in p.iter().enumerate() {
                rgb[(y * w + x) * 3 + c] = (v + n / (c as i32 + 1)).clamp(0, 255) as u8;
            }
        }
    }
}

/// What the uploader saw.
pub struct UploadOutcome {
    /// Send instant of upload seq `i + 1`.
    pub sent: Vec<Instant>,
    pub acks: u64,
    pub errors: Vec<String>,
}

/// Uploads a tagged frame every `interval` until `stop`, recording send instants.
/// `connected` fires on the first ack, so viewers join a live stream.
pub async fn upload(
    ws: std::net::SocketAddr,
    stream: &str,
    frames: Arc<SourceFrames>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    connected: oneshot::Sender<()>,
) -> anyhow::Result<UploadOutcome> {
    let url = format!("ws://{ws}/upload/{stream}");
    let (socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("cannot connect the uploader to {url}"))?;
    let (mut sink, mut incoming) = socket.split();
    let acks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (acks, errors) = (acks.clone(), errors.clone());
        tokio::spawn(async move {
            let mut connected = Some(connected);
            while let Some(Ok(msg)) = incoming.next().await {
                let Message::Text(text) = msg else { continue };
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if reply["type"] == "ack" {
                    acks.fetch_add(1, Ordering::Relaxed);
                    if let Some(c) = connected.take() {
                        let _ = c.send(());
                    }
                } else {
                    errors.lock().unwrap().push(text.to_string());
                }
            }
        })
    };
    let mut sent = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        let seq = sent.len() as u64 + 1;
        let url = frames.tagged_data_url(seq);
        sent.push(Instant::now());
        if let Err(e) = sink.send(Message::Text(url.into())).await {
            errors
                .lock()
                .unwrap()
                .push(format!("upload send failed: {e}"));
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    let errors = errors.lock().unwrap().clone();
    Ok(UploadOutcome {
        sent,
        acks: acks.load(Ordering::Relaxed),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_survive_both_formats() {
        let frames = SourceFrames::generate(2, 64, 48, 75).unwrap();
        let url = frames.tagged_data_url(123_456_789);
        assert_eq!(seq_from_data_url(url.as_bytes()), Some(123_456_789));
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(&url[DATA_URL_PREFIX.len()..])
            .unwrap();
        assert_eq!(seq_from_jpeg(&jpeg), Some(123_456_789));
        assert_eq!(turbojpeg::read_header(&jpeg).unwrap().width, 64);
    }
}
