//! `?size=small`: frames at half the width and height for a parent on a weak
//! link, made once per frame and only while some viewer asks for them.

mod common;

use std::time::Duration;

use common::{
    decode_data_url, jpeg_size, poll_until, recv_binary_frame, recv_frame, start, TestServer,
};

async fn stat(server: &TestServer, key: &str) -> u64 {
    let stats = server.stream_stats("camera").await.expect("camera stats");
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {stats}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_viewers_get_half_size_frames_made_only_while_one_asks() {
    let server = start(&["--interval-ms", "100", "--width", "640", "--height", "480"]).await;
    let mut full = server.connect("/video").await;
    for _ in 0..5 {
        let (url, _) = recv_frame(&mut full).await;
        assert_eq!(jpeg_size(&decode_data_url(&url)), (640, 480));
    }
    assert_eq!(
        stat(&server, "frames_small").await,
        0,
        "no small encode while nobody asks"
    );

    // A small viewer: every frame is 320x240, the one held when it joined
    // included, while the full-size viewer keeps getting 640x480.
    let mut small = server.connect("/video?size=small&format=binary").await;
    let mut sizes = Vec::new();
    for _ in 0..6 {
        sizes.push(jpeg_size(&recv_binary_frame(&mut small).await));
    }
    assert!(
        sizes.iter().all(|s| *s == (320, 240)),
        "small frames: {sizes:?}"
    );
    let (url, _) = recv_frame(&mut full).await;
    assert_eq!(jpeg_size(&decode_data_url(&url)), (640, 480));
    let mut small_text = server.connect("/video?size=small").await;
    let (url, _) = recv_frame(&mut small_text).await;
    assert_eq!(jpeg_size(&decode_data_url(&url)), (320, 240), "text too");
    assert!(stat(&server, "frames_small").await > 0);

    // Both leave: the small encodes stop (one may have been under way).
    drop(small);
    drop(small_text);
    poll_until(
        "the small viewers to be gone",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let stats = server.stream_stats("camera").await?;
            (stats["viewers"] == 1).then_some(())
        },
    )
    .await;
    let small_after = stat(&server, "frames_small").await;
    let published = stat(&server, "frames_published").await;
    poll_until(
        "five more frames",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (stat(&server, "frames_published").await >= published + 5).then_some(()) },
    )
    .await;
    assert!(
        stat(&server, "frames_small").await <= small_after + 1,
        "small frames made with nobody asking"
    );
    server.stop().await;
}
