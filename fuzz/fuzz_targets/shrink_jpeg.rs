//! The small picture for weak links (`?size=small`), made from whatever arrives
//! as a JPEG (an upload, camera MJPEG): never a panic, an error for what cannot
//! be shrunk, and an accepted frame is a JPEG that decodes at half the input's
//! width and height (rounded up). The shrinker reads the coefficients through
//! libjpeg-turbo's transform with a filter of ours that writes into planes sized
//! from the headers, so a frame whose headers and data disagree is what this
//! looks for.
#![no_main]

use std::cell::RefCell;

use kindercam::shrink::Shrinker;
use libfuzzer_sys::fuzz_target;
use turbojpeg::{Decompressor, Image, PixelFormat};

thread_local! {
    // One shrinker for the whole run, as a stream keeps one: state must not leak
    // from a corrupt frame into the next.
    static SHRINKER: RefCell<Shrinker> = RefCell::new(Shrinker::new().unwrap());
}

fuzz_target!(|data: &[u8]| {
    SHRINKER.with_borrow_mut(|shrinker| {
        let Ok(small) = shrinker.shrink(data) else { return };
        let mut d = Decompressor::new().unwrap();
        let source = d.read_header(data).expect("an accepted input has readable headers");
        assert_eq!(
            (small.width as usize, small.height as usize),
            (source.width.div_ceil(2), source.height.div_ceil(2))
        );
        let header = d.read_header(&small.jpeg).expect("the small frame has readable headers");
        assert_eq!((header.width, header.height), (small.width as usize, small.height as usize));
        let (w, h) = (header.width, header.height);
        let mut grey = vec![0u8; w * h];
        d.decompress(
            &small.jpeg,
            Image { pixels: &mut grey[..], width: w, pitch: w, height: h, format: PixelFormat::GRAY },
        )
        .expect("the small frame decodes");
    });
});
