//! Privacy masking of whatever arrives as a JPEG (camera MJPEG, an `exec:` pipe, a
//! browser upload), with a fixed mask: never a panic, an error for what cannot be
//! masked, and an accepted frame is a new JPEG that decodes with the masked area
//! black. Only the rectangle itself is checked, not its rounding to MCUs, so the
//! check holds for any sampling the input may have.
#![no_main]

use std::borrow::Cow;
use std::cell::RefCell;

use kindercam::privacy::{JpegMasker, Mask, Rect};
use libfuzzer_sys::fuzz_target;
use turbojpeg::{Decompressor, Image, PixelFormat};

thread_local! {
    // One masker for the whole run, as a stream keeps one: state must not leak
    // from a corrupt frame into the next.
    static MASKER: RefCell<JpegMasker> = RefCell::new(JpegMasker::new().unwrap());
}

fuzz_target!(|data: &[u8]| {
    let rect = Rect { x: 0.25, y: 0.25, w: 0.5, h: 0.5 };
    let mask = Mask::new(vec![rect]).unwrap();
    MASKER.with_borrow_mut(|masker| {
        let Ok(out) = masker.mask(data, &mask) else { return };
        let Cow::Owned(out) = out else { panic!("a mask was set but the input came back") };
        let mut d = Decompressor::new().unwrap();
        d.set_fast_upsample(true).unwrap();
        let header = d.read_header(&out).expect("the masked frame has readable headers");
        let (w, h) = (header.width, header.height);
        let mut grey = vec![0u8; w * h];
        d.decompress(
            &out,
            Image { pixels: &mut grey[..], width: w, pitch: w, height: h, format: PixelFormat::GRAY },
        )
        .expect("the masked frame decodes");
        let (x0, x1) = ((w as f64 * 0.25).ceil() as usize, (w as f64 * 0.75).floor() as usize);
        let (y0, y1) = ((h as f64 * 0.25).ceil() as usize, (h as f64 * 0.75).floor() as usize);
        for y in y0..y1 {
            for x in x0..x1 {
                assert_eq!(grey[y * w + x], 0, "({x},{y}) of {w}x{h} is inside the mask");
            }
        }
    });
});
