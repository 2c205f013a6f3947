//! Upload validation: the data URL path and the JPEG, PNG and WebP header checks
//! behind it. Whatever is accepted must be a picture with a size, never an empty one.
#![no_main]

use base64::Engine;
use kindercam::decode::Format;
use kindercam::jpeg;
use kindercam::ws::upload::{check_binary, check_data_url, Picture};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const MAX: usize = 1 << 20;
    if let Ok(info) = jpeg::inspect(data) {
        assert!(info.width > 0 && info.height > 0);
    }
    // The raw bytes as a client's text frame...
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(upload) = check_data_url(text.to_owned().into(), MAX) {
            if let Picture::Jpeg { data_url, .. } = &upload.picture {
                assert!(data_url.as_ref().is_some_and(|url| url.starts_with(Format::Jpeg.data_url_prefix())));
            }
            assert!(upload.width > 0 && upload.height > 0);
        }
    }
    // ...and wrapped as a well-formed data URL of the format its first bytes
    // name (JPEG otherwise), to reach the picture checks every time.
    let format = Format::sniff(data).unwrap_or(Format::Jpeg);
    let url = format!("{}{}", format.data_url_prefix(), base64::engine::general_purpose::STANDARD.encode(data));
    let via_url = check_data_url(url.into(), MAX * 2).is_ok();
    let via_binary = check_binary(bytes::Bytes::copy_from_slice(data), MAX * 2).is_ok();
    assert_eq!(via_url, via_binary, "text and binary uploads judge the same bytes alike");
});
