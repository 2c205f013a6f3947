//! Privacy masks: rectangles of a stream's picture (the changing table, the toilet
//! door) that no viewer may ever see. This module owns what a mask *is*: a checked
//! list of at most 16 rectangles in fractions of the frame, so that it survives a
//! change of resolution, read from the admin API's JSON or the TOML file with
//! refusals that name the entry (`masks[2].w`), and resolved against a frame into
//! pixel rectangles rounded outward to whole JPEG MCUs, so that no block (and no
//! subsampled chroma block) straddles the edge and leaks what is under it.
//!
//! `mask.rs` burns a mask into frames: JPEG in the DCT domain, raw frames in
//! their planes before the one encode. Masked pixels are solid black; never blur
//! or pixelate, both of which can be undone.
//!
//! `book.rs` says which mask each stream has (the file's, or the admin API's).
//!
//! `gate.rs` holds the other privacy control a stream carries: whether families
//! may watch it now (opening hours, a teacher's pause); `notice.rs` is what
//! picture clients of a family get instead while it is shut. `schedule.rs` is
//! what opening hours are and what they answer for an instant; `hours.rs` keeps
//! each room's schedule (the file's, or the admin's from the database) and drives
//! the rooms' gates at each opening and closing; `pause.rs` keeps the teachers'
//! pauses, their clock and their log.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

mod book;
pub mod gate;
pub mod hours;
mod mask;
pub mod notice;
pub mod pause;
pub mod schedule;

pub use book::MaskBook;
pub use mask::{mask_raw, JpegMasker, MaskFrameError, MAX_PIXELS};

/// More rectangles than this is refused: a room needs a few, and each one costs.
pub const MAX_RECTS: usize = 16;

/// The keys of one rectangle, in the order they are reported when missing.
const KEYS: [&str; 4] = ["x", "y", "w", "h"];

/// One rectangle in fractions of the frame: `x`, `y` its top-left corner, `w`, `h`
/// its size, all within 0-1 (`x + w` and `y + h` too).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// A checked list of rectangles; empty means no mask. Serializes as the same JSON
/// array (`[{"x":..,"y":..,"w":..,"h":..}]`) it is read from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Mask {
    rects: Vec<Rect>,
}

/// A refused mask: which entry or key (`masks`, `masks[2]`, `masks[2].w`) and why,
/// for a 400 answer or a configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for MaskError {}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> MaskError {
    MaskError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A rectangle in pixels, `x0..x1` by `y0..y1`: corners on MCU boundaries, except
/// that the right and bottom edges stop at the frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl PixelRect {
    pub fn contains(&self, x: usize, y: usize) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }
}

impl Mask {
    /// No rectangles: frames pass untouched, at no cost.
    pub fn none() -> Mask {
        Mask::default()
    }

    /// The whole frame: what a stream gets when its stored mask cannot be read,
    /// so that a damaged record hides the room instead of showing it.
    pub fn full() -> Mask {
        Mask {
            rects: vec![Rect {
                x: 0.0,
                y: 0.0,
                w: 1.0,
                h: 1.0,
            }],
        }
    }

    /// Checks rectangles given as values (the database, tests).
    pub fn new(rects: Vec<Rect>) -> Result<Mask, MaskError> {
        if rects.len() > MAX_RECTS {
            return Err(too_many(rects.len()));
        }
        for (i, r) in rects.iter().enumerate() {
            check_rect(i, r)?;
        }
        Ok(Mask { rects })
    }

    /// Reads the admin API's body: a JSON array of `{"x","y","w","h"}`.
    pub fn from_json(text: &str) -> Result<Mask, MaskError> {
        let entries: Vec<Entry> = serde_json::from_str(text)
            .map_err(|e| refuse("masks", format!("not a JSON array of rectangles: {e}")))?;
        Mask::from_entries(entries)
    }

    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// The rectangles in pixels of a `width` x `height` frame whose MCUs are
    /// `mcu_w` x `mcu_h` pixels, each rounded outward to whole MCUs (at least one)
    /// and cut at the frame's edges. Appends to `out`, so that a caller can reuse it.
    pub fn resolve_into(
        &self,
        width: usize,
        height: usize,
        (mcu_w, mcu_h): (usize, usize),
        out: &mut Vec<PixelRect>,
    ) {
        let outward = |from: f64, size: f64, extent: usize, mcu: usize| {
            // Fractions are checked to lie in 0-1, so these stay within 0..=extent.
            let lo = ((from * extent as f64) / mcu as f64).floor() as usize * mcu;
            let hi = (((from + size) * extent as f64) / mcu as f64).ceil() as usize * mcu;
            let lo = lo.min(extent.saturating_sub(1) / mcu * mcu);
            (lo, hi.max(lo + mcu).min(extent))
        };
        if width == 0 || height == 0 {
            return;
        }
        for r in &self.rects {
            let (x0, x1) = outward(r.x, r.w, width, mcu_w);
            let (y0, y1) = outward(r.y, r.h, height, mcu_h);
            out.push(PixelRect { x0, y0, x1, y1 });
        }
    }

    /// `resolve_into` into a new list.
    pub fn resolve(&self, width: usize, height: usize, mcu: (usize, usize)) -> Vec<PixelRect> {
        let mut out = Vec::with_capacity(self.rects.len());
        self.resolve_into(width, height, mcu, &mut out);
        out
    }

    fn from_entries(entries: Vec<Entry>) -> Result<Mask, MaskError> {
        if entries.len() > MAX_RECTS {
            return Err(too_many(entries.len()));
        }
        let mut rects = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let mut values: [Option<f64>; 4] = [None; 4];
            for (key, value) in entry.0 {
                let Some(k) = KEYS.iter().position(|&k| k == key) else {
                    return Err(refuse(
                        format!("masks[{i}].{key}"),
                        "unknown key; a rectangle has only x, y, w and h",
                    ));
                };
                if values[k].is_some() {
                    return Err(refuse(format!("masks[{i}].{key}"), "given twice"));
                }
                match value {
                    Some(v) => values[k] = Some(v),
                    None => {
                        return Err(refuse(
                            format!("masks[{i}].{key}"),
                            "must be a number from 0 to 1",
                        ))
                    }
                }
            }
            let get = |k: usize| {
                values[k].ok_or_else(|| refuse(format!("masks[{i}].{}", KEYS[k]), "missing"))
            };
            let r = Rect {
                x: get(0)?,
                y: get(1)?,
                w: get(2)?,
                h: get(3)?,
            };
            check_rect(i, &r)?;
            rects.push(r);
        }
        Ok(Mask { rects })
    }
}

fn too_many(n: usize) -> MaskError {
    refuse(
        "masks",
        format!("{n} rectangles; at most {MAX_RECTS} are allowed"),
    )
}

/// Float slack for `x + w` sums such as 0.7 + 0.3.
const EPSILON: f64 = 1e-9;

fn check_rect(i: usize, r: &Rect) -> Result<(), MaskError> {
    let field = |key: &str| format!("masks[{i}].{key}");
    for (key, v) in [("x", r.x), ("y", r.y), ("w", r.w), ("h", r.h)] {
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return Err(refuse(
                field(key),
                format!("{v} is outside 0-1 (fractions of the frame)"),
            ));
        }
    }
    if r.w == 0.0 {
        return Err(refuse(field("w"), "zero width: the rectangle has no area"));
    }
    if r.h == 0.0 {
        return Err(refuse(field("h"), "zero height: the rectangle has no area"));
    }
    if r.x + r.w > 1.0 + EPSILON {
        return Err(refuse(
            field("w"),
            format!("x + w = {} is past the right edge (at most 1)", r.x + r.w),
        ));
    }
    if r.y + r.h > 1.0 + EPSILON {
        return Err(refuse(
            field("h"),
            format!("y + h = {} is past the bottom edge (at most 1)", r.y + r.h),
        ));
    }
    Ok(())
}

/// One rectangle as given, before checking: its keys in order, each with its value
/// when that is a number. Keeping unknown and non-numeric keys lets the refusal
/// name them instead of serde's "invalid type" without a position.
struct Entry(Vec<(String, Option<f64>)>);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rectangle {x, y, w, h}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
                let mut keys = Vec::with_capacity(4);
                while let Some(key) = map.next_key::<String>()? {
                    // Bounded, so that a hostile body cannot grow this without end.
                    if keys.len() > 2 * KEYS.len() {
                        return Err(de::Error::custom("too many keys in a rectangle"));
                    }
                    let value = map.next_value::<MaybeNumber>()?;
                    keys.push((key, value.0));
                }
                Ok(Entry(keys))
            }
        }
        d.deserialize_map(EntryVisitor)
    }
}

/// Any value; `Some` when it is a number.
struct MaybeNumber(Option<f64>);

impl<'de> Deserialize<'de> for MaybeNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaybeNumber, D::Error> {
        struct AnyVisitor;
        impl<'de> Visitor<'de> for AnyVisitor {
            type Value = MaybeNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(Some(v as f64)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(Some(v as f64)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_none<E>(self) -> Result<MaybeNumber, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeNumber, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeNumber(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeNumber, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeNumber(None))
            }
        }
        d.deserialize_any(AnyVisitor)
    }
}

/// TOML (`masks = [{x = 0.05, y = 0.6, w = 0.3, h = 0.4}]`) and any other serde
/// format: the same checks, the refusal's text naming the entry.
impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mask, D::Error> {
        struct MaskVisitor;
        impl<'de> Visitor<'de> for MaskVisitor {
            type Value = Mask;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of rectangles [{x, y, w, h}]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Mask, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<Entry>()? {
                    entries.push(entry);
                    if entries.len() > MAX_RECTS {
                        return Err(de::Error::custom(too_many(entries.len())));
                    }
                }
                Mask::from_entries(entries).map_err(de::Error::custom)
            }
        }
        d.deserialize_seq(MaskVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(json: &str) -> String {
        Mask::from_json(json).unwrap_err().field
    }

    #[test]
    fn reads_json_and_toml_alike() {
        let json =
            Mask::from_json(r#"[{"x":0.05,"y":0.6,"w":0.3,"h":0.4},{"x":0,"y":0,"w":1,"h":1}]"#)
                .unwrap();
        #[derive(Deserialize)]
        struct File {
            masks: Mask,
        }
        let toml: File = toml::from_str(
            "masks = [{x = 0.05, y = 0.6, w = 0.3, h = 0.4}, {x = 0, y = 0, w = 1, h = 1}]",
        )
        .unwrap();
        assert_eq!(json, toml.masks);
        assert_eq!(json.rects().len(), 2);
        assert_eq!(
            json.rects()[1],
            Rect {
                x: 0.0,
                y: 0.0,
                w: 1.0,
                h: 1.0
            }
        );
        // And it writes back what it read.
        let again = Mask::from_json(&serde_json::to_string(&json).unwrap()).unwrap();
        assert_eq!(again, json);
        assert!(Mask::from_json("[]").unwrap().is_empty());
    }

    #[test]
    fn refusals_name_the_entry_and_key() {
        let ok = r#"{"x":0.1,"y":0.1,"w":0.2,"h":0.2}"#;
        assert_eq!(
            field_of(&format!(r#"[{ok},{ok},{{"x":0.1,"y":0.1,"w":0,"h":0.2}}]"#)),
            "masks[2].w"
        );
        assert_eq!(
            field_of(r#"[{"x":0.1,"y":0.1,"w":0.2,"h":0}]"#),
            "masks[0].h"
        );
        assert_eq!(
            field_of(r#"[{"x":-0.1,"y":0.1,"w":0.2,"h":0.2}]"#),
            "masks[0].x"
        );
        assert_eq!(
            field_of(r#"[{"x":0.1,"y":1.5,"w":0.2,"h":0.2}]"#),
            "masks[0].y"
        );
        assert_eq!(
            field_of(r#"[{"x":0.9,"y":0.1,"w":0.2,"h":0.2}]"#),
            "masks[0].w"
        );
        assert_eq!(
            field_of(r#"[{"x":0.1,"y":0.9,"w":0.2,"h":0.2}]"#),
            "masks[0].h"
        );
        assert_eq!(
            field_of(&format!(r#"[{ok},{{"x":0.1,"y":0.1,"w":0.2}}]"#)),
            "masks[1].h"
        );
        assert_eq!(
            field_of(r#"[{"x":0.1,"y":0.1,"w":0.2,"h":0.2,"colour":"red"}]"#),
            "masks[0].colour"
        );
        assert_eq!(
            field_of(r#"[{"x":"0.1","y":0.1,"w":0.2,"h":0.2}]"#),
            "masks[0].x"
        );
        assert_eq!(
            field_of(r#"[{"x":0.1,"x":0.2,"y":0.1,"w":0.2,"h":0.2}]"#),
            "masks[0].x"
        );
        let seventeen = vec![ok; 17].join(",");
        let err = Mask::from_json(&format!("[{seventeen}]")).unwrap_err();
        assert_eq!(err.field, "masks");
        assert!(err.reason.contains("17 rectangles"), "{err}");
        assert!(Mask::from_json(&format!("[{}]", vec![ok; 16].join(","))).is_ok());
        assert_eq!(field_of(r#"{"x":0.1}"#), "masks");
        // 0.7 + 0.3 is a hair over 1 in floating point and must still be accepted.
        assert!(Mask::from_json(r#"[{"x":0.7,"y":0.7,"w":0.3,"h":0.3}]"#).is_ok());
        // The reason reads well in a 400 answer.
        let err = Mask::from_json(r#"[{"x":0.9,"y":0.1,"w":0.2,"h":0.2}]"#).unwrap_err();
        assert!(
            err.to_string().starts_with("masks[0].w: x + w = 1.1"),
            "{err}"
        );
    }

    #[test]
    fn toml_refusals_name_the_entry_too() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            masks: Mask,
        }
        let err = toml::from_str::<File>(
            "masks = [{x = 0.1, y = 0.1, w = 0.2, h = 0.2}, {x = 0.5, y = 0.1, w = 0.6, h = 0.2}]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("masks[1].w"), "{err}");
        let err = toml::from_str::<File>("masks = [{x = 0.1, y = 0.1, w = 0.2}]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("masks[0].h: missing"), "{err}");
    }

    #[test]
    fn resolves_outward_to_whole_mcus() {
        let mask = Mask::new(vec![
            Rect {
                x: 0.1,
                y: 0.1,
                w: 0.1,
                h: 0.1,
            },
            // Touches the right and bottom edges of an odd-sized frame.
            Rect {
                x: 0.9,
                y: 0.9,
                w: 0.1,
                h: 0.1,
            },
            // Tiny: still one whole MCU.
            Rect {
                x: 0.5,
                y: 0.5,
                w: 0.0001,
                h: 0.0001,
            },
        ])
        .unwrap();
        let rects = mask.resolve(642, 481, (16, 16));
        // 64.2..128.4 -> 64..144; 48.1..96.2 -> 48..112.
        assert_eq!(
            rects[0],
            PixelRect {
                x0: 64,
                y0: 48,
                x1: 144,
                y1: 112
            }
        );
        // 577.8.. -> 576..642 (cut at the edge); 432.9.. -> 432..481.
        assert_eq!(
            rects[1],
            PixelRect {
                x0: 576,
                y0: 432,
                x1: 642,
                y1: 481
            }
        );
        assert_eq!(
            rects[2],
            PixelRect {
                x0: 320,
                y0: 240,
                x1: 336,
                y1: 256
            }
        );
        // 4:2:2's MCU is 16x8.
        let rects = mask.resolve(640, 480, (16, 8));
        assert_eq!(
            rects[0],
            PixelRect {
                x0: 64,
                y0: 48,
                x1: 128,
                y1: 96
            }
        );
        let full = Mask::new(vec![Rect {
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: 1.0,
        }])
        .unwrap();
        assert_eq!(
            full.resolve(642, 481, (16, 16)),
            vec![PixelRect {
                x0: 0,
                y0: 0,
                x1: 642,
                y1: 481
            }]
        );
    }
}
