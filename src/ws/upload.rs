//! The browser-camera source: a staff page sends JPEG data URLs to `/upload/NAME`
//! and each good one becomes the newest frame of stream NAME.
//!
//! Every upload is checked (prefix, base64, JPEG structure, size) off the async
//! threads before it can reach a viewer. A bad one is answered with an error and
//! dropped; the connection and the stream's last good frame stay. The client's own
//! text is kept as the frame's data URL, so a good upload is never re-encoded.
//!
//! A broadcaster that asked (`?gate=1`, the broadcaster page) is also told the
//! stream's gate, `{"type":"gate",...}`, at once and on every change, so the
//! teacher holding the phone sees a pause whoever set it.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::frame::{self, DATA_URL_PREFIX};
use crate::hub::{Hub, Stream, CAMERA};
use crate::intake::{Admitted, Intake, IntakeError};
use crate::jpeg;
use crate::shutdown::Shutdown;
use crate::ws::keepalive::{Beat, Keepalive};
use crate::ws::{close_within, send_within};

/// Why an upload was refused; its `code` goes to the broadcaster page, which
/// lowers its quality for `too_large` and reports anything else as a broken frame.
#[derive(Debug)]
pub enum UploadError {
    TooLarge {
        size: usize,
        max: usize,
    },
    NotDataUrl,
    BadBase64(base64::DecodeError),
    NotJpeg(jpeg::JpegError),
    /// A JPEG whose header claims more pixels than any camera makes: a few bytes
    /// could otherwise make every viewer's browser allocate gigabytes.
    TooManyPixels {
        width: u32,
        height: u32,
    },
    /// A valid upload that intake refused (a privacy mask it cannot burn in).
    Intake(IntakeError),
}

impl UploadError {
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::TooLarge { .. } => "too_large",
            _ => "bad_frame",
        }
    }
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::TooLarge { size, max } => {
                write!(f, "upload too large ({size} bytes, at most {max})")
            }
            UploadError::NotDataUrl => {
                write!(
                    f,
                    "an upload must be a data URL starting with {DATA_URL_PREFIX}"
                )
            }
            UploadError::BadBase64(e) => write!(f, "invalid base64: {e}"),
            UploadError::NotJpeg(e) => e.fmt(f),
            UploadError::TooManyPixels { width, height } => write!(
                f,
                "a {width}x{height} picture is larger than any camera's ({} pixels at most)",
                crate::privacy::MAX_PIXELS
            ),
            UploadError::Intake(e) => write!(f, "frame not shown: {e}"),
        }
    }
}

/// Reads the JPEG's header and refuses a picture larger than any camera's.
fn inspect(jpeg: &[u8]) -> Result<jpeg::JpegInfo, UploadError> {
    let info = jpeg::inspect(jpeg).map_err(UploadError::NotJpeg)?;
    if info.width as usize * info.height as usize > crate::privacy::MAX_PIXELS {
        return Err(UploadError::TooManyPixels {
            width: info.width,
            height: info.height,
        });
    }
    Ok(info)
}

fn check_size(size: usize, max: usize) -> Result<(), UploadError> {
    if size > max {
        return Err(UploadError::TooLarge { size, max });
    }
    Ok(())
}

/// An upload that passed the checks, not yet a frame: [`Intake::upload`] makes it one.
#[derive(Debug)]
pub struct Upload {
    pub jpeg: Bytes,
    /// The client's own text, for a data URL upload.
    pub data_url: Option<Utf8Bytes>,
    pub width: u32,
    pub height: u32,
}

impl Upload {
    /// Hands the upload to `intake`, which masks it if its stream has a mask.
    pub fn admit(self, intake: &mut Intake) -> Result<Admitted, UploadError> {
        intake
            .upload(self.jpeg, self.data_url, self.width, self.height)
            .map_err(UploadError::Intake)
    }
}

/// Checks an uploaded data URL.
pub fn check_data_url(text: Utf8Bytes, max_bytes: usize) -> Result<Upload, UploadError> {
    check_size(text.len(), max_bytes)?;
    let b64 = text
        .strip_prefix(DATA_URL_PREFIX)
        .ok_or(UploadError::NotDataUrl)?;
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(UploadError::BadBase64)?;
    let info = inspect(&jpeg)?;
    Ok(Upload {
        jpeg: Bytes::from(jpeg),
        data_url: Some(text),
        width: info.width,
        height: info.height,
    })
}

/// Checks an uploaded binary JPEG, without copying it.
pub fn check_jpeg(data: Bytes, max_bytes: usize) -> Result<Upload, UploadError> {
    check_size(data.len(), max_bytes)?;
    let info = inspect(&data)?;
    Ok(Upload {
        jpeg: data,
        data_url: None,
        width: info.width,
        height: info.height,
    })
}

/// Serves one uploader until it leaves or the daemon shuts down.
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    hub: &Hub,
    name: &str,
    max_bytes: usize,
    tell_gate: bool,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if name == CAMERA {
        let why = format!("stream \"{CAMERA}\" is fed by the camera; broadcast to another name");
        return refuse(ws, &why, "reserved").await;
    }
    let stream: Arc<Stream> = match hub.stream(name) {
        Ok(stream) => stream,
        Err(e) => return refuse(ws, &e.to_string(), "refused").await,
    };
    let Some(slot) = stream.claim_upload() else {
        let why = format!("another device is already broadcasting to stream \"{name}\"");
        return refuse(ws, &why, "busy").await;
    };
    tracing::info!(stream = name, "broadcaster connected");
    // Moved into each check's blocking thread and back.
    let mut intake = Some(Intake::new(stream.clone(), "browser camera"));
    let mut accepted = 0u64;
    let mut keepalive = Keepalive::eager();
    let mut gate = slot.stream().subscribe_gate();
    if tell_gate {
        gate.mark_changed();
    }
    loop {
        let incoming = tokio::select! {
            _ = shutdown.wait() => {
                let bye = shutdown.goodbye();
                close_within(&mut ws, bye.code.into(), bye.reason).await;
                break;
            }
            beat = keepalive.tick() => match beat {
                Beat::Ping if send_within(&mut ws, Message::Ping(Default::default())).await => continue,
                _ => {
                    tracing::info!(stream = name, "broadcaster silent; freeing the stream");
                    break;
                }
            },
            changed = gate.changed(), if tell_gate => {
                if changed.is_err() { break; }
                let text = gate.borrow_and_update().staff_message.clone();
                if send_within(&mut ws, Message::Text(text)).await { continue; }
                break;
            }
            incoming = ws.next() => incoming,
        };
        keepalive.heard();
        // The browser took the picture just before sending it: its arrival is the
        // nearest capture time the server can vouch for.
        let arrived = frame::unix_ms();
        let check: Box<dyn FnOnce() -> Result<Upload, UploadError> + Send> = match incoming {
            Some(Ok(Message::Text(text))) => Box::new(move || check_data_url(text, max_bytes)),
            Some(Ok(Message::Binary(data))) => Box::new(move || check_jpeg(data, max_bytes)),
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(WsError::Capacity(_))) => {
                let reason = "upload far over the size limit";
                send_within(&mut ws, error_message(reason, "too_large")).await;
                close_within(&mut ws, CloseCode::Size, reason).await;
                break;
            }
            Some(Err(_)) => break,
        };
        let mut mine = intake
            .take()
            .expect("the intake is returned after each frame");
        let checked = tokio::task::spawn_blocking(move || {
            let admitted = check().and_then(|upload| upload.admit(&mut mine));
            (mine, admitted.map(|f| f.captured_at(arrived)))
        })
        .await
        .map(|(mine, admitted)| {
            intake = Some(mine);
            admitted
        });
        let reply = match checked {
            Ok(Ok(frame)) => {
                accepted += 1;
                let bytes = frame.frame().jpeg.len();
                slot.stream().publish(frame);
                let viewers = slot.stream().viewer_count();
                Message::Text(
                    serde_json::json!({"type": "ack", "frames": accepted, "bytes": bytes, "viewers": viewers})
                        .to_string()
                        .into(),
                )
            }
            Ok(Err(why)) => {
                tracing::debug!(stream = name, error = %why, "upload refused");
                error_message(&why.to_string(), why.code())
            }
            Err(_) => error_message("internal error while checking the frame", "internal"),
        };
        if !send_within(&mut ws, reply).await || intake.is_none() {
            break;
        }
    }
    tracing::info!(stream = name, frames = accepted, "broadcaster left");
}

/// Tells the client why in a message it can show, then closes with 1008.
async fn refuse<S>(mut ws: WebSocketStream<S>, why: &str, code: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::info!(error = why, "broadcaster refused");
    send_within(&mut ws, error_message(why, code)).await;
    let reason: String = why.chars().take(100).collect(); // close reasons are capped at 123 bytes
    close_within(&mut ws, CloseCode::Policy, reason).await;
}

fn error_message(why: &str, code: &str) -> Message {
    Message::Text(
        serde_json::json!({"type": "error", "code": code, "message": why})
            .to_string()
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let mut enc = crate::encode::Encoder::new(80).unwrap();
        enc.encode_rgb(&vec![90u8; 48 * 32 * 3], 48, 32).unwrap()
    }

    fn data_url(bytes: &[u8]) -> Utf8Bytes {
        format!(
            "{DATA_URL_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
        .into()
    }

    #[test]
    fn a_header_claiming_a_giant_picture_is_refused() {
        let mut bomb = jpeg();
        let sof = bomb
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline SOF");
        // SOF0: marker, length (2), precision (1), then height and width.
        bomb[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let e = check_jpeg(Bytes::from(bomb.clone()), 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                UploadError::TooManyPixels {
                    width: 65535,
                    height: 65535
                }
            ),
            "{e}"
        );
        assert_eq!(e.code(), "bad_frame");
        assert!(check_data_url(data_url(&bomb), 1 << 20).is_err());
        assert!(check_jpeg(Bytes::from(jpeg()), 1 << 20).is_ok());
    }

    #[test]
    fn good_upload_keeps_the_clients_text() {
        let url = data_url(&jpeg());
        let upload = check_data_url(url.clone(), 1 << 20).unwrap();
        assert_eq!((upload.width, upload.height), (48, 32));
        let hub = Hub::new();
        let mut intake = Intake::new(hub.stream("aula").unwrap(), "browser camera");
        let frame = upload.admit(&mut intake).unwrap().into_frame();
        assert_eq!(frame.data_url, url);
    }

    #[test]
    fn refuses_each_kind_of_bad_upload() {
        let max = 1 << 20;
        let png = data_url(b"\x89PNG\r\n\x1a\n rest of a png file that is long enough to pass the size check...........................................................");
        assert!(check_data_url(png, max)
            .unwrap_err()
            .to_string()
            .contains("SOI"));
        assert!(check_data_url("hello".into(), max)
            .unwrap_err()
            .to_string()
            .contains("data URL"));
        let bad64: Utf8Bytes = format!("{DATA_URL_PREFIX}!!!notbase64").into();
        assert!(check_data_url(bad64, max)
            .unwrap_err()
            .to_string()
            .contains("base64"));
        let j = jpeg();
        assert!(check_data_url(data_url(&j[..j.len() / 2]), max)
            .unwrap_err()
            .to_string()
            .contains("incomplete"));
        assert!(check_data_url(data_url(&j), 100)
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }
}
