//! What a family gets instead of a room's picture while the room's gate is shut,
//! for the clients that show pictures rather than read status messages:
//! `/snapshot.jpg` now, MJPEG later. A closed room (outside its opening hours) is
//! refused with the reason and when it opens; a paused room answers with a
//! placeholder picture that says, in Spanish and English, that a teacher paused
//! it and when it resumes, so a parent's VLC or photo frame shows why instead of
//! an error. The picture is drawn once per pause, by the first request, and kept
//! in the stream's gate state until the gate changes.
//!
//! Times are written in the daemon's local time zone (the school's, on a box in
//! the classroom); the pages get UNIX seconds and say them in the phone's own.

use bytes::Bytes;

use crate::canvas::{Canvas, Card, CardStyle};
use crate::encode::Encoder;
use crate::hub::Stream;
use crate::privacy::gate::{Paused, Verdict};

pub const PAUSED_ES: &str = "EN PAUSA";
pub const PAUSED_EN: &str = "PAUSED";

/// Why a family gets no picture of the room now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Outside the opening hours: refuse (403) with this reason.
    Closed(String),
    /// A teacher paused the room: show `picture`, or when it could not be drawn,
    /// refuse with `reason`. Never the room's own picture.
    Paused {
        picture: Option<Bytes>,
        reason: String,
    },
}

/// What a family client of `stream` gets instead of its picture now; `None` when
/// the gate is open. `size` is the placeholder's size when the stream has no
/// frame to take it from; `quality` its JPEG quality.
pub fn for_family(stream: &Stream, size: (u32, u32), quality: u8) -> Option<Held> {
    let state = stream.gate_state();
    match state.gate.verdict() {
        Verdict::Open => None,
        Verdict::Closed(closed) => Some(Held::Closed(match closed.opens_at {
            Some(at) => format!(
                "{:?} is closed to families outside its opening hours; it opens {}\n",
                stream.name(),
                local_time(at, "%a %Y-%m-%d %H:%M %Z")
            ),
            None => format!(
                "{:?} is closed to families; no opening time is scheduled\n",
                stream.name()
            ),
        })),
        Verdict::Paused(paused) => {
            // The stream's own size, so the placeholder fits where its pictures
            // were; but never more than a 1920x1080 card: an upload's JPEG header
            // may claim any size, and the card is drawn in memory.
            let (width, height) = stream.current().frame.map_or(size, |f| (f.width, f.height));
            let (width, height) = (width.min(1920), height.min(1080));
            let picture = state
                .picture
                .get_or_init(|| draw_paused(stream.name(), paused, width, height, quality))
                .clone();
            Some(Held::Paused {
                picture,
                reason: format!(
                    "{:?} is paused by the teachers until {}\n",
                    stream.name(),
                    local_time(paused.until, "%H:%M %Z")
                ),
            })
        }
    }
}

/// `unix_s` in the local time zone, in `strftime` format `format`.
fn local_time(unix_s: i64, format: &str) -> String {
    match jiff::Timestamp::from_second(unix_s) {
        Ok(at) => at
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime(format)
            .to_string(),
        Err(_) => format!("at UNIX time {unix_s}"),
    }
}

fn draw_paused(name: &str, paused: &Paused, width: u32, height: u32, quality: u8) -> Option<Bytes> {
    let canvas = render_paused(name, &local_time(paused.until, "%H:%M"), width, height);
    match Encoder::new(quality)
        .and_then(|mut e| e.encode_rgb(&canvas.pixels, canvas.width, canvas.height))
    {
        Ok(jpeg) => Some(Bytes::from(jpeg)),
        Err(e) => {
            tracing::warn!(stream = name, error = %e, "cannot draw the paused picture");
            None
        }
    }
}

/// Draws the paused placeholder: a calm dark picture with an amber band, the
/// word in both languages, and when it resumes (`until`, already "HH:MM").
pub fn render_paused(name: &str, until: &str, width: u32, height: u32) -> Canvas {
    let card = Card::new(
        width,
        height,
        [PAUSED_ES, PAUSED_EN],
        CardStyle {
            background: [20, 28, 40],
            band: [230, 160, 40],
            max_scale: 8,
            small_divisor: 3,
        },
    );
    let (y, small) = (card.lines_y, card.small);
    let until = card.fit(&format!("HASTA LAS {until} / UNTIL {until}"));
    let name = card.fit(&name.to_uppercase());
    let mut c = card.canvas;
    c.caption(y, &until, small, [230, 230, 230]);
    c.caption(y + 12 * small, &name, small, [170, 170, 170]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::privacy::gate::Closed;

    #[test]
    fn the_placeholder_says_paused_and_until_when() {
        let c = render_paused("aula-1", "10:45", 640, 480);
        assert_eq!((c.width, c.height), (640, 480));
        let white = c.pixels[..c.pixels.len() / 2]
            .chunks_exact(3)
            .filter(|p| *p == [255, 255, 255])
            .count();
        assert!(white > 500, "title drawn ({white} white pixels)");
        let later = render_paused("aula-1", "10:55", 640, 480);
        assert_ne!(c.pixels, later.pixels, "the time is on it");
        let tiny = render_paused("a-very-long-stream-name-indeed", "10:45", 10, 10);
        assert_eq!((tiny.width, tiny.height), (64, 48));
    }

    #[test]
    fn families_get_the_reason_or_one_shared_picture_per_pause() {
        let hub = Hub::new();
        let s = hub.stream("aula-1").unwrap();
        assert_eq!(for_family(&s, (320, 240), 70), None, "open");
        s.set_paused(Some(Paused {
            until: 1_700_000_000,
            by: "Ana".into(),
        }));
        let Some(Held::Paused {
            picture: Some(first),
            ..
        }) = for_family(&s, (320, 240), 70)
        else {
            panic!("a paused picture");
        };
        assert_eq!(&first[..2], &[0xFF, 0xD8], "a JPEG");
        let Some(Held::Paused {
            picture: Some(again),
            ..
        }) = for_family(&s, (320, 240), 70)
        else {
            panic!("a paused picture");
        };
        assert_eq!(first.as_ptr(), again.as_ptr(), "drawn once, shared");
        s.set_closed(Some(Closed {
            opens_at: Some(1_700_003_600),
        }));
        match for_family(&s, (320, 240), 70) {
            Some(Held::Closed(why)) => assert!(why.contains("opens"), "{why}"),
            other => panic!("closed wins over paused: {other:?}"),
        }
    }
}
