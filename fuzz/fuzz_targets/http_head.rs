//! HTTP path and header handling on both ports: the WebSocket handshake parser,
//! the guard's rewrite for tiny_http, route parsing and percent-decoding. The
//! guard must never forward a request that could smuggle a second one or forge
//! the client's address.
#![no_main]

use kindercam::http_guard::{rewrite, PEER_HEADER};
use kindercam::ws::handshake::{parse_head, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_head(data);
    let peer = "192.0.2.1:4242".parse().unwrap();
    if let Ok(forwarded) = rewrite(data, peer) {
        let text = String::from_utf8_lossy(&forwarded.head);
        assert!(text.ends_with("Connection: close\r\n\r\n"));
        assert_eq!(text.matches("\r\n\r\n").count(), 1, "exactly one head");
        // Header names are compared whole (a `Content-X-Kindercam-Peer` is another header).
        let peer_headers = text
            .lines()
            .filter(|line| line.split(':').next().is_some_and(|n| n.trim().eq_ignore_ascii_case(PEER_HEADER)))
            .count();
        assert_eq!(peer_headers, 1, "one peer header, ours");
        assert!(forwarded.body_len <= kindercam::http_guard::MAX_BODY_BYTES);
    }
    if let Ok(target) = std::str::from_utf8(data) {
        if let Some(Route::Video { stream, .. } | Route::Upload { stream }) = Route::parse(target) {
            assert!(kindercam::hub::valid_stream_name(&stream));
        }
        let _ = kindercam::http::percent_decode(target);
    }
});
