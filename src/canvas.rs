//! A plain RGB canvas with rectangles and a built-in 5x7 bitmap font: just enough
//! to draw the test pattern and the "camera offline" placeholder without pulling in
//! an imaging library.

pub type Rgb = [u8; 3];

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Packed RGB, row after row.
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![0; width * height * 3],
        }
    }

    /// Fills the rectangle clipped to the canvas.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, color: Rgb) {
        let x_end = (x + w).min(self.width);
        let y_end = (y + h).min(self.height);
        if x >= x_end {
            return;
        }
        for row in y.min(y_end)..y_end {
            let start = (row * self.width + x) * 3;
            let end = (row * self.width + x_end) * 3;
            for px in self.pixels[start..end].chunks_exact_mut(3) {
                px.copy_from_slice(&color);
            }
        }
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: usize) -> usize {
        text.chars().count() * 6 * scale
    }

    /// Draws `text` with its top-left corner at (x, y); unknown characters are blank.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, color: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            let gx = x + i * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..5 {
                    if bits & (0x10 >> c) != 0 {
                        self.fill(gx + c * scale, y + r * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Draws `text` centred horizontally on a dark band so it reads on any background.
    pub fn caption(&mut self, y: usize, text: &str, scale: usize, color: Rgb) {
        let w = Canvas::text_width(text, scale);
        let x = self.width.saturating_sub(w) / 2;
        self.fill(
            x.saturating_sub(scale * 2),
            y.saturating_sub(scale * 2),
            w + scale * 3,
            11 * scale,
            [16, 16, 16],
        );
        self.text(x, y, text, scale, color);
    }
}

/// A card kindercam shows in place of a room's picture (camera offline, room
/// paused): a dark background, a coloured band across the top, and a title in
/// Spanish and English sized to the width. The caller adds its own lines below.
pub struct Card {
    pub canvas: Canvas,
    /// The scale of the smaller lines below the title.
    pub small: usize,
    /// How many characters of the smaller lines fit across.
    pub line_chars: usize,
    /// Where the lines below the title start.
    pub lines_y: usize,
}

/// Colours and sizes of a [`Card`].
pub struct CardStyle {
    pub background: Rgb,
    pub band: Rgb,
    /// The title's largest scale, and how many times smaller the lines are.
    pub max_scale: usize,
    pub small_divisor: usize,
}

impl Card {
    pub fn new(width: u32, height: u32, title: [&str; 2], style: CardStyle) -> Card {
        let (w, h) = (width.max(64) as usize, height.max(48) as usize);
        let mut c = Canvas::new(w, h);
        c.fill(0, 0, w, h, style.background);
        c.fill(0, h / 8, w, h / 100 + 2, style.band);
        // The longer title must fit the width: 6 * scale pixels a character.
        let longest = title.iter().map(|t| t.chars().count()).max().unwrap_or(1);
        let title_scale = (w / (longest * 6 + 4)).clamp(1, style.max_scale);
        let small = (title_scale / style.small_divisor).max(1);
        c.caption(h / 4, title[0], title_scale, [255, 255, 255]);
        c.caption(
            h / 4 + 12 * title_scale,
            title[1],
            title_scale,
            [255, 210, 120],
        );
        Card {
            canvas: c,
            small,
            line_chars: (w / (6 * small)).saturating_sub(1).max(8),
            lines_y: h * 3 / 5,
        }
    }

    /// `text` cut to what fits across.
    pub fn fit(&self, text: &str) -> String {
        text.chars().take(self.line_chars).collect()
    }
}

/// Rows of a 5x7 glyph, bit 4 leftmost. Accented capitals fall back to their base letter.
fn glyph(ch: char) -> [u8; 7] {
    let ch = match ch.to_ascii_uppercase() {
        'Á' | 'á' => 'A',
        'É' | 'é' => 'E',
        'Í' | 'í' => 'I',
        'Ó' | 'ó' => 'O',
        'Ú' | 'ú' => 'U',
        other => other,
    };
    match ch {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_clipped_to_the_canvas() {
        let mut c = Canvas::new(4, 3);
        c.fill(2, 1, 10, 10, [255, 0, 0]);
        assert_eq!(&c.pixels[(4 + 1) * 3..(4 + 2) * 3], &[0, 0, 0]);
        assert_eq!(&c.pixels[(2 * 4 + 3) * 3..], &[255, 0, 0]);
    }

    #[test]
    fn text_sets_pixels_of_known_glyphs_only() {
        let mut c = Canvas::new(12, 7);
        c.text(0, 0, "1?", 1, [255, 255, 255]);
        let lit = |x: usize, y: usize| c.pixels[(y * 12 + x) * 3] == 255;
        assert!(lit(2, 0), "top of the 1");
        assert!(
            (6..12).all(|x| (0..7).all(|y| !lit(x, y))),
            "unknown glyph is blank"
        );
    }
}
