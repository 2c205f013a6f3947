//! Upload validation: the data URL path and the JPEG structure check behind it.
//! Whatever is accepted must be a JPEG with a size, never an empty picture.
#![no_main]

use base64::Engine;
use kindercam::frame::DATA_URL_PREFIX;
use kindercam::jpeg;
use kindercam::ws::upload::{check_data_url, check_jpeg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const MAX: usize = 1 << 20;
    if let Ok(info) = jpeg::inspect(data) {
        assert!(info.width > 0 && info.height > 0);
    }
    // The raw bytes as a client's text frame...
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(upload) = check_data_url(text.to_owned().into(), MAX) {
            assert!(upload.data_url.is_some_and(|url| url.starts_with(DATA_URL_PREFIX)));
            assert!(upload.width > 0 && upload.height > 0);
        }
    }
    // ...and wrapped as a well-formed data URL, to reach the JPEG checks every time.
    let url = format!("{DATA_URL_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(data));
    let via_url = check_data_url(url.into(), MAX * 2).is_ok();
    let via_binary = check_jpeg(bytes::Bytes::copy_from_slice(data), MAX * 2).is_ok();
    assert_eq!(via_url, via_binary, "text and binary uploads judge the same bytes alike");
});
