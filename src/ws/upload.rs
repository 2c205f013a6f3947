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
//!
//! An uploader that acts on demand (a kindercam camera pushing with a push
//! token, or one that asked with `?demand=1`) is told how many want the stream,
//! `{"type":"demand","viewers":N}`: at once, and on every change of the
//! stream's effective demand (staff, plus families while the gate is open), at
//! most every [`DEMAND_EVERY`] so that a crowd joining is a few messages. Its
//! camera can then stay closed while nobody watches here either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::decode::{self, DecodeError, Format, Limits};
use crate::frame;
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
    /// A text upload that is not a JPEG, PNG or WebP data URL.
    NotDataUrl,
    /// A binary upload that is not a JPEG, PNG or WebP file.
    NotPicture,
    BadBase64(base64::DecodeError),
    /// The data URL names one format and holds another.
    Mismatch {
        declared: Format,
        found: Format,
    },
    NotJpeg(jpeg::JpegError),
    /// A JPEG whose header claims more pixels than any camera makes: a few bytes
    /// could otherwise make every viewer's browser allocate gigabytes.
    TooManyPixels {
        width: u32,
        height: u32,
    },
    /// A PNG or WebP that could not be decoded within the limits.
    Decode(DecodeError),
    /// The check did not end within its deadline (a WebP decode that ran long),
    /// or the last such one is still running.
    TooSlow,
    /// A valid upload that intake refused (a privacy mask it cannot burn in).
    Intake(IntakeError),
    /// The server failed, not the upload.
    Internal(&'static str),
}

impl UploadError {
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::TooLarge { .. } => "too_large",
            UploadError::Internal(_) => "internal",
            _ => "bad_frame",
        }
    }
}

/// The upload formats, for the refusals that name them.
const ACCEPTED: &str = "a JPEG, PNG or WebP picture";

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::TooLarge { size, max } => {
                write!(f, "upload too large ({size} bytes, at most {max})")
            }
            UploadError::NotDataUrl => {
                let [jpeg, png, webp] = Format::ALL.map(Format::data_url_prefix);
                write!(
                    f,
                    "an upload must be {ACCEPTED}: a data URL starting with {jpeg} {png} or {webp} \
                     (or the file's bytes in a binary message)"
                )
            }
            UploadError::NotPicture => write!(
                f,
                "a binary upload must be {ACCEPTED} file (or send a data URL as text)"
            ),
            UploadError::BadBase64(e) => write!(f, "invalid base64: {e}"),
            UploadError::Mismatch { declared, found } => write!(
                f,
                "the data URL says {} but holds a {found} picture",
                declared.mime()
            ),
            UploadError::NotJpeg(e) => e.fmt(f),
            UploadError::TooManyPixels { width, height } => write!(
                f,
                "a {width}x{height} picture is larger than any camera's ({} pixels at most)",
                crate::privacy::MAX_PIXELS
            ),
            UploadError::Decode(e) => e.fmt(f),
            UploadError::TooSlow => write!(
                f,
                "checking the picture took longer than {} s; send a smaller one",
                decode::DECODE_DEADLINE.as_secs()
            ),
            UploadError::Intake(e) => write!(f, "frame not shown: {e}"),
            UploadError::Internal(why) => f.write_str(why),
        }
    }
}

fn check_pixels(width: u32, height: u32) -> Result<(), UploadError> {
    if width as usize * height as usize > crate::privacy::MAX_PIXELS {
        return Err(UploadError::TooManyPixels { width, height });
    }
    Ok(())
}

/// Reads a picture's header and refuses one larger than any camera's; a PNG or
/// WebP is only decoded later, within [`Limits`].
fn inspect(format: Format, bytes: &[u8]) -> Result<(u32, u32), UploadError> {
    let (width, height) = match format {
        Format::Jpeg => {
            let info = jpeg::inspect(bytes).map_err(UploadError::NotJpeg)?;
            (info.width, info.height)
        }
        _ => decode::dimensions(format, bytes).map_err(UploadError::Decode)?,
    };
    check_pixels(width, height)?;
    Ok((width, height))
}

fn check_size(size: usize, max: usize) -> Result<(), UploadError> {
    if size > max {
        return Err(UploadError::TooLarge { size, max });
    }
    Ok(())
}

/// An upload that passed the checks, not yet a frame: [`Upload::admit`] makes it one.
#[derive(Debug)]
pub struct Upload {
    pub picture: Picture,
    pub width: u32,
    pub height: u32,
}

/// What was uploaded.
#[derive(Debug)]
pub enum Picture {
    /// A JPEG, taken as it is; for a data URL upload, with the client's own text.
    Jpeg {
        jpeg: Bytes,
        data_url: Option<Utf8Bytes>,
    },
    /// A PNG or WebP, to be decoded and encoded to JPEG once.
    Encoded { format: Format, bytes: Bytes },
}

impl Upload {
    fn of(
        format: Format,
        bytes: Bytes,
        data_url: Option<Utf8Bytes>,
    ) -> Result<Upload, UploadError> {
        let (width, height) = inspect(format, &bytes)?;
        let picture = match format {
            Format::Jpeg => Picture::Jpeg {
                jpeg: bytes,
                data_url,
            },
            _ => Picture::Encoded { format, bytes },
        };
        Ok(Upload {
            picture,
            width,
            height,
        })
    }

    /// Hands the upload to `intake`, which masks it if its stream has a mask; a
    /// PNG or WebP is decoded first, within `limits`, and `intake` encodes it.
    pub fn admit(self, intake: &mut Intake, limits: &Limits) -> Result<Admitted, UploadError> {
        match self.picture {
            Picture::Jpeg { jpeg, data_url } => intake
                .upload(jpeg, data_url, self.width, self.height)
                .map_err(UploadError::Intake),
            Picture::Encoded { format, bytes } => {
                let rgb = decode::decode(format, &bytes, limits).map_err(UploadError::Decode)?;
                intake.decoded(&rgb).map_err(UploadError::Intake)
            }
        }
    }
}

/// Checks an uploaded data URL: `data:image/jpeg;base64,`, `data:image/png;base64,`
/// or `data:image/webp;base64,`, holding a picture of that format.
pub fn check_data_url(text: Utf8Bytes, max_bytes: usize) -> Result<Upload, UploadError> {
    check_size(text.len(), max_bytes)?;
    let (declared, b64) = Format::ALL
        .into_iter()
        .find_map(|f| Some((f, text.strip_prefix(f.data_url_prefix())?)))
        .ok_or(UploadError::NotDataUrl)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(UploadError::BadBase64)?;
    match Format::sniff(&bytes) {
        Some(found) if found != declared => return Err(UploadError::Mismatch { declared, found }),
        _ => {}
    }
    let data_url = (declared == Format::Jpeg).then_some(text);
    Upload::of(declared, Bytes::from(bytes), data_url)
}

/// Checks a binary upload (a JPEG, PNG or WebP file, told by its first bytes),
/// without copying it.
pub fn check_binary(data: Bytes, max_bytes: usize) -> Result<Upload, UploadError> {
    check_size(data.len(), max_bytes)?;
    let format = Format::sniff(&data).ok_or(UploadError::NotPicture)?;
    Upload::of(format, data, None)
}

/// A message an uploader sent.
#[derive(Debug)]
pub enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// How much longer than the decode's own deadline the connection waits for the
/// check, so that a PNG decode's own refusal (with its intake) normally wins.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// One uploading connection's way to turn its messages into frames of its
/// stream: the checks, a decode when needed and intake, on the blocking pool,
/// each within the decode deadline. Used by `/upload/NAME` and the prototype's
/// `serverCam.php`.
pub struct Receiver {
    stream: Arc<Stream>,
    /// Moved into each check's blocking thread and back; `None` after a check
    /// was abandoned at its deadline (a new one is made for the next frame).
    intake: Option<Intake>,
    quality: u8,
    max_bytes: usize,
    /// One check at a time per connection: a decode abandoned at its deadline
    /// keeps its thread until it ends, and the next waits for it rather than
    /// adding another.
    turn: Arc<Semaphore>,
}

impl Receiver {
    /// For `stream`, encoding decoded pictures at `quality`.
    pub fn new(stream: Arc<Stream>, quality: u8, max_bytes: usize) -> anyhow::Result<Receiver> {
        Ok(Receiver {
            intake: Some(Intake::encoding(stream.clone(), "browser camera", quality)?),
            stream,
            quality,
            max_bytes,
            turn: Arc::new(Semaphore::new(1)),
        })
    }

    /// Whether checking `incoming` takes a few tens of microseconds: a JPEG of
    /// at most [`QUICK_MAX_BYTES`], for a stream with no mask and no viewer of
    /// small frames (those take passes over the DCT blocks). Such an upload is
    /// checked on the connection's own task: the trip to the blocking pool and
    /// back (two thread wake-ups per frame) cost more than the check itself.
    fn is_quick(&self, incoming: &Incoming) -> bool {
        let jpeg = match incoming {
            Incoming::Text(text) => {
                text.len() <= QUICK_MAX_BYTES && text.starts_with(Format::Jpeg.data_url_prefix())
            }
            Incoming::Binary(data) => {
                data.len() <= QUICK_MAX_BYTES && Format::sniff(data) == Some(Format::Jpeg)
            }
        };
        // A mask set between here and intake only makes this one check slower.
        jpeg && !self.stream.wants_small() && self.stream.mask().is_empty()
    }

    /// Checks one message and makes it a frame (not published yet).
    pub async fn receive(&mut self, incoming: Incoming) -> Result<Admitted, UploadError> {
        // The browser took the picture just before sending it: its arrival is the
        // nearest capture time the server can vouch for.
        let arrived = frame::unix_ms();
        let limits = Limits::upload(Instant::now());
        let deadline = tokio::time::Instant::from_std(limits.deadline);
        let turn = tokio::time::timeout_at(deadline, self.turn.clone().acquire_owned())
            .await
            .map_err(|_| UploadError::TooSlow)?
            .map_err(|_| UploadError::Internal("the upload checks were closed"))?;
        let mut mine = match self.intake.take() {
            Some(intake) => intake,
            None => Intake::encoding(self.stream.clone(), "browser camera", self.quality)
                .map_err(|_| UploadError::Internal("cannot make a JPEG encoder"))?,
        };
        let max_bytes = self.max_bytes;
        let quick = self.is_quick(&incoming);
        let work = move || {
            let _turn = turn;
            let upload = match incoming {
                Incoming::Text(text) => check_data_url(text, max_bytes),
                Incoming::Binary(data) => check_binary(data, max_bytes),
            };
            let admitted = upload.and_then(|upload| upload.admit(&mut mine, &limits));
            (mine, admitted)
        };
        if quick {
            let (mine, admitted) = work();
            self.intake = Some(mine);
            return admitted.map(|f| f.captured_at(arrived));
        }
        let check = tokio::task::spawn_blocking(work);
        match tokio::time::timeout_at(deadline + DEADLINE_GRACE, check).await {
            Ok(Ok((mine, admitted))) => {
                self.intake = Some(mine);
                admitted.map(|f| f.captured_at(arrived))
            }
            Ok(Err(_)) => Err(UploadError::Internal(
                "internal error while checking the frame",
            )),
            Err(_) => {
                self.stream.count_dropped();
                Err(UploadError::TooSlow)
            }
        }
    }
}

/// The largest upload [`Receiver::is_quick`] may check on the connection's
/// task: one base64 pass and a header read. At 100 viewers of 50 KB data URLs
/// the decoding was 0.5 % of the server's CPU samples (BENCHMARKS, "Checking a
/// small JPEG upload"); 128 KiB keeps it a small fraction of a millisecond.
const QUICK_MAX_BYTES: usize = 128 * 1024;

/// How often, at most, an uploader is told the demand: changes in between are
/// told together, as the count at the end of the wait.
pub const DEMAND_EVERY: Duration = Duration::from_millis(250);

/// `{"type":"demand","viewers":N}`.
fn demand_message(viewers: usize) -> Message {
    Message::Text(
        serde_json::json!({"type": "demand", "viewers": viewers})
            .to_string()
            .into(),
    )
}

/// How one upload connection is served.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The soft size limit of one upload.
    pub max_bytes: usize,
    /// Decoded pictures (PNG, WebP) are encoded at this quality.
    pub quality: u8,
    /// Tell the stream's gate (`?gate=1`).
    pub tell_gate: bool,
    /// Tell the stream's demand (a pusher, or `?demand=1`).
    pub tell_demand: bool,
}

/// Serves one uploader until it leaves or the daemon shuts down.
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    hub: &Hub,
    name: &str,
    settings: Settings,
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
    let Settings {
        max_bytes,
        quality,
        tell_gate,
        tell_demand,
    } = settings;
    let mut receiver = match Receiver::new(stream.clone(), quality, max_bytes) {
        Ok(receiver) => receiver,
        Err(e) => return refuse(ws, &e.to_string(), "internal").await,
    };
    tracing::info!(stream = name, "broadcaster connected");
    let mut accepted = 0u64;
    let mut keepalive = Keepalive::eager();
    let mut gate = slot.stream().subscribe_gate();
    if tell_gate {
        gate.mark_changed();
    }
    let mut demand = slot.stream().demand_watch();
    // The demand last told, and when the next may be told (at once, first).
    let mut told: Option<usize> = None;
    let mut last_told = tokio::time::Instant::now();
    let mut tell_at = Some(last_told);
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
            _ = demand.changed(), if tell_demand && tell_at.is_none() => {
                tell_at = Some(last_told + DEMAND_EVERY);
                continue;
            }
            _ = sleep_until_some(tell_at), if tell_demand => {
                tell_at = None;
                last_told = tokio::time::Instant::now();
                let now = demand.current();
                if told == Some(now) { continue; }
                told = Some(now);
                if send_within(&mut ws, demand_message(now)).await { continue; }
                break;
            }
            incoming = ws.next() => incoming,
        };
        keepalive.heard();
        let incoming = match incoming {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Binary(data))) => Incoming::Binary(data),
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
        let reply = match receiver.receive(incoming).await {
            Ok(frame) => {
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
            Err(why) => {
                tracing::debug!(stream = name, error = %why, "upload refused");
                error_message(&why.to_string(), why.code())
            }
        };
        if !send_within(&mut ws, reply).await {
            break;
        }
    }
    tracing::info!(stream = name, frames = accepted, "broadcaster left");
}

/// Sleeps until `at`; forever when there is no `at`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

/// `{"type":"error","code":...,"message":...}`, what a refused upload is told.
pub(crate) fn error_message(why: &str, code: &str) -> Message {
    Message::Text(
        serde_json::json!({"type": "error", "code": code, "message": why})
            .to_string()
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::DATA_URL_PREFIX;

    fn jpeg() -> Vec<u8> {
        let mut enc = crate::encode::Encoder::new(80).unwrap();
        enc.encode_rgb(&vec![90u8; 48 * 32 * 3], 48, 32).unwrap()
    }

    fn png() -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 48, 32);
        encoder.set_color(png::ColorType::Rgba);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[200u8; 48 * 32 * 4]).unwrap();
        writer.finish().unwrap();
        out
    }

    fn url_of(format: Format, bytes: &[u8]) -> Utf8Bytes {
        format!(
            "{}{}",
            format.data_url_prefix(),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
        .into()
    }

    fn data_url(bytes: &[u8]) -> Utf8Bytes {
        url_of(Format::Jpeg, bytes)
    }

    fn intake(hub: &Hub) -> Intake {
        Intake::encoding(hub.stream("aula").unwrap(), "browser camera", 75).unwrap()
    }

    fn limits() -> Limits {
        Limits::upload(Instant::now())
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
        let e = check_binary(Bytes::from(bomb.clone()), 1 << 20).unwrap_err();
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
        assert!(check_binary(Bytes::from(jpeg()), 1 << 20).is_ok());
    }

    #[test]
    fn good_upload_keeps_the_clients_text() {
        let url = data_url(&jpeg());
        let upload = check_data_url(url.clone(), 1 << 20).unwrap();
        assert_eq!((upload.width, upload.height), (48, 32));
        let hub = Hub::new();
        let frame = upload
            .admit(&mut intake(&hub), &limits())
            .unwrap()
            .into_frame();
        assert_eq!(frame.data_url, url);
    }

    #[test]
    fn png_as_data_url_or_binary_becomes_a_jpeg_frame() {
        let hub = Hub::new();
        let mut intake = intake(&hub);
        for upload in [
            check_data_url(url_of(Format::Png, &png()), 1 << 20).unwrap(),
            check_binary(Bytes::from(png()), 1 << 20).unwrap(),
        ] {
            assert_eq!((upload.width, upload.height), (48, 32));
            let frame = upload.admit(&mut intake, &limits()).unwrap().into_frame();
            let info = jpeg::inspect(&frame.jpeg).unwrap();
            assert_eq!((info.width, info.height), (48, 32));
            assert!(frame.data_url.starts_with(DATA_URL_PREFIX));
        }
    }

    #[test]
    fn refuses_each_kind_of_bad_upload() {
        let max = 1 << 20;
        let fake = b"\x89PNG\r\n\x1a\n rest of a png file that is long enough to pass the size check...........................................................";
        let e = check_data_url(data_url(fake), max).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the data URL says image/jpeg but holds a PNG picture"
        );
        let e = check_data_url(url_of(Format::Png, fake), max).unwrap_err();
        assert!(e.to_string().starts_with("not a valid PNG picture"), "{e}");
        let e = check_data_url(data_url(&[b'x'; 200]), max).unwrap_err();
        assert!(e.to_string().contains("SOI"), "{e}");
        for refused in ["hello", "data:image/gif;base64,R0lGODlh"] {
            let e = check_data_url(refused.into(), max).unwrap_err().to_string();
            for named in [
                "JPEG, PNG or WebP",
                "data:image/jpeg;base64,",
                "data:image/png;base64,",
                "data:image/webp;base64,",
            ] {
                assert!(e.contains(named), "{e}");
            }
        }
        let e = check_binary(Bytes::from_static(b"GIF89a......"), max).unwrap_err();
        assert!(e.to_string().contains("JPEG, PNG or WebP"), "{e}");
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
