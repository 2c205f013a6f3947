//! The picture viewers see while a camera is unplugged or failing: a dark frame
//! saying, in Spanish and English, that the camera is offline, with the stream
//! name, the reason and the time it went away. A viewer whose page only ever puts
//! frames into an `<img>` (the prototype) still learns what happened, and one that
//! reads status messages gets `{"type":"status","state":"offline"}` as well.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::canvas::{Canvas, Card, CardStyle};
use crate::hub::Stream;
use crate::intake::Intake;

pub const TITLE_ES: &str = "CÁMARA DESCONECTADA";
pub const TITLE_EN: &str = "CAMERA OFFLINE";
pub const RETRYING: &str = "REINTENTANDO / RETRYING";

/// Longest reason line drawn; the full reason goes into the status message.
const REASON_CHARS: usize = 48;

/// Draws the placeholder for stream `name` at `width` x `height`.
pub fn render(name: &str, reason: &str, width: u32, height: u32, now: SystemTime) -> Canvas {
    // A red band marks the picture as not live at a glance.
    let card = Card::new(
        width,
        height,
        [TITLE_ES, TITLE_EN],
        CardStyle {
            background: [24, 24, 32],
            band: [200, 40, 40],
            max_scale: 6,
            small_divisor: 2,
        },
    );
    let (small, max) = (card.small, card.line_chars);
    let reason = wrap(reason, max.min(REASON_CHARS), 2);
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let clock = format!(
        "{}  {:02}:{:02}:{:02} UTC",
        name,
        (since / 3600) % 24,
        (since / 60) % 60,
        since % 60
    );
    let y = card.lines_y;
    let (clock, retrying) = (card.fit(&clock), card.fit(RETRYING));
    let mut c = card.canvas;
    c.caption(y, &clock, small, [200, 200, 200]);
    let mut line_y = y + 12 * small;
    for line in &reason {
        c.caption(line_y, line, small, [200, 200, 200]);
        line_y += 12 * small;
    }
    c.caption(line_y, &retrying, small, [160, 160, 160]);
    c
}

/// Breaks `text` at spaces into at most `lines` lines of at most `width` characters;
/// what does not fit is cut (the status message has the whole reason).
fn wrap(text: &str, width: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let word: String = word.chars().take(width).collect();
        let needed =
            current.chars().count() + usize::from(!current.is_empty()) + word.chars().count();
        if needed > width && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            if out.len() == lines {
                return out;
            }
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&word);
    }
    if !current.is_empty() && out.len() < lines {
        out.push(current);
    }
    out
}

/// Shows the placeholder on `stream` and marks it offline with `reason`. If the
/// placeholder cannot be encoded, the status is still set (and the failure logged).
pub fn show(stream: &Stream, reason: &str, width: u32, height: u32, quality: u8) {
    let canvas = render(stream.name(), reason, width, height, SystemTime::now());
    match Intake::placeholder(&canvas, quality) {
        Ok(frame) => stream.publish_offline(frame, reason),
        Err(e) => {
            tracing::warn!(stream = stream.name(), error = %e, "cannot draw the offline picture");
            stream.set_offline(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_has_the_requested_size_and_text() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(3600);
        let c = render("camera", "unplugged", 640, 480, t);
        assert_eq!((c.width, c.height), (640, 480));
        // The title is drawn in white somewhere in the upper half.
        let white = c.pixels[..c.pixels.len() / 2]
            .chunks_exact(3)
            .filter(|p| *p == [255, 255, 255])
            .count();
        assert!(white > 500, "title drawn ({white} white pixels)");
        // Different reasons give different pictures: the reason is on it.
        let other = render("camera", "stream-on failed", 640, 480, t);
        assert_ne!(c.pixels, other.pixels);
    }

    #[test]
    fn long_reasons_wrap_onto_two_lines() {
        let lines = wrap(
            "/dev/video0: camera unplugged (capture: no such device)",
            40,
            2,
        );
        assert_eq!(
            lines,
            ["/dev/video0: camera unplugged (capture:", "no such device)"]
        );
        assert_eq!(wrap("a b c d e f", 3, 2), ["a b", "c d"]);
        assert!(wrap("", 10, 2).is_empty());
    }

    #[test]
    fn tiny_sizes_do_not_panic() {
        let c = render(
            "a-very-long-stream-name-for-a-tiny-picture",
            "x",
            16,
            16,
            UNIX_EPOCH,
        );
        assert_eq!((c.width, c.height), (64, 48));
    }
}
