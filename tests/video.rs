//! `/video`: test-pattern frames as JPEG data URLs, at the configured size and
//! interval, at once for a late joiner, and as binary JPEGs on request.

mod common;

use std::time::{Duration, Instant};

use common::{
    decode_data_url, jpeg_size, median_gap, recv_binary_frame, recv_frame, start, TestServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_gets_jpeg_data_urls_of_the_configured_size_at_the_interval() {
    // Small frames: drawing and encoding them takes a fraction of the interval even
    // in a debug build under qemu, so the interval, not the CPU, sets the pace.
    let server = start(&["--interval-ms", "100", "--width", "96", "--height", "64"]).await;
    let mut viewer = server.connect("/video").await;

    let mut frames = Vec::new();
    let mut times = Vec::new();
    for _ in 0..13 {
        let (url, at) = recv_frame(&mut viewer).await;
        let jpeg = decode_data_url(&url);
        assert_eq!(
            jpeg_size(&jpeg),
            (96, 64),
            "every frame has the configured size"
        );
        frames.push(url);
        times.push(at);
    }
    // The first frame comes at once on joining; the ones after it show the interval.
    // Judged by the mean gap over the whole span: arrival times are read by the test
    // process, which a loaded machine may starve for a moment so that a few frames
    // are read back to back; the span evens that out, a median would not.
    let span = times[times.len() - 1] - times[1];
    let mean = span / (times.len() - 2) as u32;
    assert!(
        (Duration::from_millis(60)..=Duration::from_millis(250)).contains(&mean),
        "mean gap between frames is {mean:?} (median {:?}), configured 100 ms",
        median_gap(&times[1..])
    );
    frames.dedup();
    assert_eq!(
        frames.len(),
        13,
        "the picture moves: no frame is sent twice"
    );
    server.stop().await;
}

/// A server whose test pattern draws a frame for the first viewer and the next
/// only 10 s later: viewers joining in between must all get that same frame.
async fn start_still(width: &str, height: &str) -> TestServer {
    start(&[
        "--interval-ms",
        "10000",
        "--width",
        width,
        "--height",
        height,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_latest_frame_at_once() {
    let server = start_still("160", "120").await;
    let mut first = server.connect("/video").await;
    let (latest, _) = recv_frame(&mut first).await;

    let joined = Instant::now();
    let mut late = server.connect("/video").await;
    let (url, at) = recv_frame(&mut late).await;
    let waited = at - joined;
    // The next tick is ~10 s away (and must not come before the comparison below);
    // the late joiner must not wait for it.
    assert!(
        waited < Duration::from_secs(3),
        "late joiner waited {waited:?} for its first frame (interval 10 s)"
    );
    assert_eq!(
        url, latest,
        "it is the frame the first viewer has, not a new one"
    );
    assert_eq!(jpeg_size(&decode_data_url(&url)), (160, 120));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_is_the_camera_stream() {
    let server = start_still("160", "120").await;
    let mut plain = server.connect("/video").await;
    let (a, _) = recv_frame(&mut plain).await;
    let mut named = server.connect("/video/camera").await;
    let (b, _) = recv_frame(&mut named).await;
    assert_eq!(a, b, "/video and /video/camera show the same frame");

    let stats = server.stats().await;
    let streams = stats["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "one stream, not two: {stats}");
    assert_eq!(streams[0]["name"], "camera");
    assert_eq!(streams[0]["viewers"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_format_sends_jpeg_messages() {
    let server = start_still("208", "96").await;
    let mut text = server.connect("/video").await;
    let (url, _) = recv_frame(&mut text).await;
    let mut binary = server.connect("/video?format=binary").await;
    let jpeg = recv_binary_frame(&mut binary).await;
    assert_eq!(jpeg_size(&jpeg), (208, 96));
    assert_eq!(jpeg, decode_data_url(&url), "same frame, without base64");

    let mut named = server.connect("/video/camera?format=binary").await;
    assert_eq!(recv_binary_frame(&mut named).await, jpeg);
    server.stop().await;
}
