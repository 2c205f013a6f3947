//! Privacy masks end to end, for every source path a daemon can run in a test:
//! the test pattern (mask from the TOML file), an `exec:` pipe of ffmpeg's MJPEG
//! (DCT-domain masking), and browser uploads (text and binary). Each time what a
//! text viewer, a binary viewer and `/snapshot.jpg` receive is decoded: the
//! masked rectangle, rounded outward to 16x16 blocks, is luma 0 in every frame
//! while the rest of the picture still changes. A corrupt frame with a mask set
//! is dropped, never sent; the admin API's masks apply from the next frame, `[]`
//! removes them, and a restart keeps them over the file's. Raw camera frames are
//! covered in src/intake.rs and the vivid VM test (tests/vm).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kindercam::privacy::{Mask, PixelRect};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The middle of the picture: x and y from 0.25 to 0.75.
const MIDDLE: &str = r#"[{"x":0.25,"y":0.25,"w":0.5,"h":0.5}]"#;
/// The top-left corner, where the test pattern is a bright bar.
const CORNER: &str = r#"[{"x":0,"y":0,"w":0.25,"h":0.25}]"#;

fn rect(json: &str, width: usize, height: usize) -> PixelRect {
    Mask::from_json(json)
        .unwrap()
        .resolve(width, height, (16, 16))[0]
}

/// The luma of `jpeg`, its width and height.
fn luma(jpeg: &[u8]) -> (Vec<u8>, usize, usize) {
    let image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::GRAY)
        .unwrap_or_else(|e| panic!("not a decodable JPEG ({} bytes): {e}", jpeg.len()));
    (image.pixels, image.width, image.height)
}

/// Checks that `json`'s rectangle is black in `jpeg` and returns the luma outside it.
fn masked(jpeg: &[u8], json: &str, what: &str) -> Vec<u8> {
    let (y, w, h) = luma(jpeg);
    let r = rect(json, w, h);
    let mut outside = Vec::with_capacity(y.len());
    for (i, &v) in y.iter().enumerate() {
        if r.contains(i % w, i / w) {
            assert_eq!(
                v,
                0,
                "{what}: luma {v} at {},{} inside the mask",
                i % w,
                i / w
            );
        } else {
            outside.push(v);
        }
    }
    assert!(
        outside.iter().any(|&v| v > 40),
        "{what}: the picture outside the mask is there"
    );
    outside
}

/// Whether `json`'s rectangle is entirely black in `jpeg`.
fn is_black(jpeg: &[u8], json: &str) -> bool {
    let (y, w, h) = luma(jpeg);
    let r = rect(json, w, h);
    y.iter()
        .enumerate()
        .all(|(i, &v)| !r.contains(i % w, i / w) || v == 0)
}

/// Checks that every one of `frames` is masked with `json` and that the rest of
/// the picture changes between them.
fn all_masked(what: &str, json: &str, frames: &[Vec<u8>]) {
    let mut outsides: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| masked(f, json, &format!("{what} #{i}")))
        .collect();
    outsides.dedup();
    assert!(
        outsides.len() >= 2,
        "{what}: the picture outside the mask still changes ({} distinct of {})",
        outsides.len(),
        frames.len()
    );
}

async fn text_frames(ws: &mut Ws, n: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..n {
        frames.push(text_frame(ws).await);
    }
    frames
}

async fn binary_frames(ws: &mut Ws, n: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..n {
        frames.push(recv_binary_frame(ws).await);
    }
    frames
}

/// `n` snapshots, one frame interval (100 ms) or more apart.
async fn snapshots(server: &TestServer, stream: &str, n: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(150)).await;
        frames.push(snapshot(server, stream).await);
    }
    frames
}

fn auth(code: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", basic_auth(code))]
}

async fn viewer(server: &TestServer, path: &str) -> Ws {
    ws_with(server, path, &auth(VIEWER_CODE))
        .await
        .unwrap_or_else(|status| panic!("{path}: refused with {status}"))
}

async fn text_frame(ws: &mut Ws) -> Vec<u8> {
    decode_data_url(&recv_frame(ws).await.0)
}

async fn snapshot(server: &TestServer, stream: &str) -> Vec<u8> {
    let basic = basic_auth(VIEWER_CODE);
    let reply = http_request(
        server.http,
        "GET",
        &format!("/snapshot.jpg?stream={stream}"),
        &[("Authorization", &basic)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "snapshot of {stream}: {}", reply.text());
    reply.body
}

async fn admin(server: &TestServer, method: &str, path: &str, body: &str) -> HttpReply {
    let basic = basic_auth(ADMIN_CODE);
    http_request(
        server.http,
        method,
        path,
        &[("Authorization", &basic)],
        body,
    )
    .await
}

async fn put_masks(server: &TestServer, stream: &str, json: &str) {
    let reply = admin(server, "PUT", &format!("/api/streams/{stream}/masks"), json).await;
    assert_eq!(reply.status, 200, "PUT masks of {stream}: {}", reply.text());
    assert_eq!(
        Mask::from_json(&reply.text()).unwrap(),
        Mask::from_json(json).unwrap(),
        "the answer is the mask now in force"
    );
}

async fn get_masks(server: &TestServer, stream: &str) -> Value {
    let reply = admin(server, "GET", &format!("/api/streams/{stream}/masks"), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn stream_stat(server: &TestServer, stream: &str, key: &str) -> u64 {
    let basic = basic_auth(ADMIN_CODE);
    let reply = http_request(
        server.http,
        "GET",
        "/stats.json",
        &[("Authorization", &basic)],
        "",
    )
    .await;
    reply.json()["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stream)
        .unwrap_or_else(|| panic!("no stats for {stream}"))[key]
        .as_u64()
        .unwrap()
}

/// A frame of a new text viewer of `path` whose rectangle `json` is (or is not)
/// black, within three frames: a viewer first gets the frame already published,
/// and one may have been in the making when the mask changed.
async fn until_frame(server: &TestServer, path: &str, json: &str, black: bool) -> Vec<u8> {
    let mut ws = viewer(server, path).await;
    for _ in 0..3 {
        let frame = text_frame(&mut ws).await;
        if is_black(&frame, json) == black {
            return frame;
        }
    }
    panic!(
        "{json} still not {} after 3 frames",
        if black { "black" } else { "shown" }
    );
}

fn config_file(dir: &TempDir, masks: &str) -> String {
    let toml = format!(
        "masks = [{}]\n",
        Mask::from_json(masks)
            .unwrap()
            .rects()
            .iter()
            .map(|r| format!("{{x = {}, y = {}, w = {}, h = {}}}", r.x, r.y, r.w, r.h))
            .collect::<Vec<_>>()
            .join(", ")
    );
    dir.write("kindercam.toml", &toml).display().to_string()
}

const PATTERN: &[&str] = &["--interval-ms", "100", "--width", "320", "--height", "240"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_pattern_is_masked_from_the_file_for_every_kind_of_viewer() {
    let dir = TempDir::new("masks-pattern");
    let config = config_file(&dir, MIDDLE);
    let mut flags = vec!["--config", config.as_str()];
    flags.extend_from_slice(PATTERN);
    let server = start_secured(&flags).await;
    assert_eq!(
        get_masks(&server, "camera").await,
        serde_json::json!([{"x":0.25,"y":0.25,"w":0.5,"h":0.5}])
    );
    let mut text = viewer(&server, "/video").await;
    all_masked("text viewer", MIDDLE, &text_frames(&mut text, 4).await);
    let mut binary = viewer(&server, "/video?format=binary").await;
    all_masked(
        "binary viewer",
        MIDDLE,
        &binary_frames(&mut binary, 4).await,
    );
    all_masked("snapshot", MIDDLE, &snapshots(&server, "camera", 3).await);
    assert_eq!(stream_stat(&server, "camera", "masks").await, 1);
    assert_eq!(
        stream_stat(&server, "camera", "frames_dropped").await,
        0,
        "every frame could be masked"
    );
    // The API's change applies from the next frame; [] removes the mask.
    put_masks(&server, "camera", CORNER).await;
    // The frame the hub holds is masked again at once: a viewer joining before
    // the next frame does not get it without the new mask.
    masked(
        &snapshot(&server, "camera").await,
        CORNER,
        "the held frame after PUT",
    );
    // The frames that follow have the new mask instead of the file's.
    let frame = until_frame(&server, "/video", MIDDLE, false).await;
    masked(&frame, CORNER, "after PUT");
    put_masks(&server, "camera", "[]").await;
    until_frame(&server, "/video", CORNER, false).await;
    assert_eq!(stream_stat(&server, "camera", "masks").await, 0);
    // A frame being encoded under the old mask as it changes is dropped, never
    // sent (`Stream::publish`): at most one per change. Under qemu, where an
    // encode takes a good part of the frame interval, that happens.
    let dropped = stream_stat(&server, "camera", "frames_dropped").await;
    assert!(
        dropped <= 2,
        "{dropped} frames dropped across two mask changes"
    );
    drop((text, binary));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masks_set_over_the_api_survive_a_restart_and_win_over_the_file() {
    let dir = TempDir::new("masks-restart");
    let state = dir.path().join("state");
    let state = state.display().to_string();
    let config = config_file(&dir, CORNER);
    let mut flags = vec!["--config", config.as_str(), "--state-dir", state.as_str()];
    flags.extend_from_slice(PATTERN);

    let server = start_secured(&flags).await;
    assert!(is_black(&snapshot(&server, "camera").await, CORNER));
    put_masks(&server, "camera", MIDDLE).await;
    server.stop().await;

    let server = start_secured(&flags).await;
    assert_eq!(
        get_masks(&server, "camera").await,
        serde_json::from_str::<Value>(MIDDLE).unwrap()
    );
    let frame = snapshot(&server, "camera").await;
    masked(&frame, MIDDLE, "after a restart");
    assert!(
        !is_black(&frame, CORNER),
        "the stored mask wins over the file's"
    );
    // An API [] wins too: it removed the file's mask on purpose.
    put_masks(&server, "camera", "[]").await;
    server.stop().await;

    let server = start_secured(&flags).await;
    assert_eq!(get_masks(&server, "camera").await, serde_json::json!([]));
    let frame = snapshot(&server, "camera").await;
    assert!(!is_black(&frame, CORNER) && !is_black(&frame, MIDDLE));
    assert_eq!(stream_stat(&server, "camera", "masks").await, 0);
    server.stop().await;

    // The database exists but cannot be opened (a damaged SD card): the masks and
    // hours the admin set are unknown, so the daemon fails closed: the whole
    // picture is black, and families are held at a closed room.
    let db = dir.path().join("state").join("kindercam.db");
    std::fs::write(&db, b"this is not an SQLite database, it was damaged").unwrap();
    for extra in ["kindercam.db-wal", "kindercam.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("state").join(extra));
    }
    let server = start_secured(&flags).await;
    let staff = basic_auth(STAFF_CODE);
    let reply = http_request(
        server.http,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &staff)],
        "",
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "staff still see the room: {}",
        reply.text()
    );
    assert!(
        is_black(&reply.body, r#"[{"x":0,"y":0,"w":1,"h":1}]"#),
        "with the database lost, the whole picture is masked"
    );
    let mut family = ws_with(
        &server,
        "/video",
        &[("Authorization", basic_auth(VIEWER_CODE))],
    )
    .await
    .expect("a family's handshake still succeeds");
    let status = assert_status(&recv_text(&mut family).await);
    assert_eq!(status["state"], "closed", "{status}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_masks_are_refused_naming_the_entry_and_only_the_admin_may_set_them() {
    let server = start_secured(PATTERN).await;
    let ok = r#"{"x":0.1,"y":0.1,"w":0.2,"h":0.2}"#;
    let seventeen = format!("[{}]", vec![ok; 17].join(","));
    let cases = [
        (
            r#"[{"x":1.5,"y":0,"w":0.1,"h":0.1}]"#.to_owned(),
            "masks[0].x",
        ),
        (
            format!(r#"[{ok},{ok},{{"x":0.1,"y":0.1,"w":0,"h":0.2}}]"#),
            "masks[2].w",
        ),
        (
            r#"[{"x":0.9,"y":0,"w":0.2,"h":0.1}]"#.to_owned(),
            "masks[0].w",
        ),
        (seventeen, "masks"),
        ("not json".to_owned(), "masks"),
    ];
    for (body, field) in cases {
        let reply = admin(&server, "PUT", "/api/streams/camera/masks", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["field"], field, "{body}");
    }
    assert_eq!(
        get_masks(&server, "camera").await,
        serde_json::json!([]),
        "nothing changed"
    );
    let reply = admin(&server, "GET", "/api/streams/Not%20A%20Name/masks", "").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = admin(&server, "DELETE", "/api/streams/camera/masks", "").await;
    assert_eq!(reply.status, 405);
    for code in [VIEWER_CODE, STAFF_CODE] {
        let basic = basic_auth(code);
        let reply = http_request(
            server.http,
            "PUT",
            "/api/streams/camera/masks",
            &[("Authorization", &basic)],
            "[]",
        )
        .await;
        assert_eq!(reply.status, 403, "{}", reply.text());
    }
    // A browser session needs its CSRF token, as for every other admin change.
    let cookie = login(&server, "Directora", ADMIN_CODE).await;
    let reply = http_request(
        server.http,
        "PUT",
        "/api/streams/camera/masks",
        &[("Cookie", &cookie)],
        MIDDLE,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let config = http_request(
        server.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await
    .json();
    let token = config["csrf"].as_str().unwrap().to_owned();
    let reply = http_request(
        server.http,
        "PUT",
        "/api/streams/camera/masks",
        &[("Cookie", &cookie), ("X-CSRF-Token", &token)],
        MIDDLE,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.stop().await;
}

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A command that plays `file` over and over, like a camera that never stops.
fn looping(file: &std::path::Path) -> String {
    format!(
        "exec:while :; do cat '{}'; sleep 0.05; done",
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_from_an_ffmpeg_pipe_is_masked_in_the_dct_domain() {
    let dir = TempDir::new("masks-pipe");
    let source = if ffmpeg_available() {
        "exec:ffmpeg -loglevel error -re -f lavfi -i testsrc=size=320x240:rate=10 \
         -pix_fmt yuvj420p -f mjpeg -q:v 5 -"
            .to_owned()
    } else {
        eprintln!("ffmpeg not installed: using frames made with turbojpeg instead");
        let frames: Vec<u8> = (0..10).flat_map(|i| make_jpeg(320, 240, i * 20)).collect();
        let file = dir.path().join("stream.mjpeg");
        std::fs::write(&file, frames).unwrap();
        looping(&file)
    };
    let server = start_secured(&["--source", &source, "--interval-ms", "100"]).await;
    put_masks(&server, "camera", MIDDLE).await;
    let mut text = viewer(&server, "/video").await;
    all_masked("text viewer", MIDDLE, &text_frames(&mut text, 4).await);
    let mut binary = viewer(&server, "/video?format=binary").await;
    all_masked(
        "binary viewer",
        MIDDLE,
        &binary_frames(&mut binary, 4).await,
    );
    all_masked("snapshot", MIDDLE, &snapshots(&server, "camera", 3).await);
    assert_eq!(stream_stat(&server, "camera", "frames_dropped").await, 0);
    put_masks(&server, "camera", "[]").await;
    until_frame(&server, "/video", MIDDLE, false).await;
    drop((text, binary));
    server.stop().await;
}

/// A frame whose headers are whole but whose picture data is cut short: it
/// passes the structure checks that every frame gets, and only a decode (or the
/// mask's transform) finds it broken.
fn cut_short(good: &[u8]) -> Vec<u8> {
    let mut cut = good[..good.len() * 2 / 3].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    assert!(
        kindercam::mjpeg::repair(&cut).is_ok(),
        "without a mask this frame would be sent"
    );
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_frame_from_a_pipe_with_a_mask_is_dropped_not_sent() {
    let dir = TempDir::new("masks-corrupt-pipe");
    let good: Vec<Vec<u8>> = (0..2).map(|i| make_jpeg(320, 240, 30 + i * 100)).collect();
    let mut stream = good[0].clone();
    stream.extend_from_slice(&cut_short(&good[1]));
    stream.extend_from_slice(&good[1]);
    let file = dir.path().join("broken.mjpeg");
    std::fs::write(&file, stream).unwrap();
    let config = config_file(&dir, MIDDLE);
    let server = start_secured(&[
        "--config",
        &config,
        "--source",
        &looping(&file),
        "--interval-ms",
        "50",
    ])
    .await;
    let mut ws = viewer(&server, "/video?format=binary").await;
    // Both good pictures keep coming, masked, and nothing else.
    let shown: Vec<Vec<u8>> = good.iter().map(|f| luma(&kindercam_mask(f)).0).collect();
    for i in 0..8 {
        let frame = recv_binary_frame(&mut ws).await;
        masked(&frame, MIDDLE, &format!("frame {i}"));
        assert!(
            shown.contains(&luma(&frame).0),
            "frame {i} is one of the good pictures"
        );
    }
    let deadline = Instant::now() + WAIT;
    while stream_stat(&server, "camera", "frames_dropped").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the corrupt frame was counted as dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// `jpeg` masked with `MIDDLE` as the daemon masks it.
fn kindercam_mask(jpeg: &[u8]) -> Vec<u8> {
    let mut masker = kindercam::privacy::JpegMasker::new().unwrap();
    masker
        .mask(jpeg, &Mask::from_json(MIDDLE).unwrap())
        .unwrap()
        .into_owned()
}

async fn upload_reply(uploader: &mut Ws, message: Message) -> Value {
    use futures_util::SinkExt;
    uploader.send(message).await.expect("upload sent");
    recv_json(uploader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_uploads_are_masked_before_viewers_and_snapshots_see_them() {
    let server = start_secured(&[]).await;
    // Set before the room exists: it starts masked with its first upload.
    assert_eq!(get_masks(&server, "aula").await, serde_json::json!([]));
    put_masks(&server, "aula", MIDDLE).await;
    let mut uploader = ws_with(&server, "/upload/aula", &auth(STAFF_CODE))
        .await
        .expect("staff may broadcast");
    // Viewers never create a room: they join once its broadcaster has.
    let mut text = viewer(&server, "/video/aula").await;
    let mut binary = viewer(&server, "/video/aula?format=binary").await;
    let mut outsides = Vec::new();
    for seed in 0..4u8 {
        let jpeg = make_jpeg(320, 240, seed * 60);
        let url = data_url(&jpeg);
        let message = if seed % 2 == 0 {
            Message::Text(url.clone().into())
        } else {
            Message::Binary(jpeg.clone().into())
        };
        let ack = upload_reply(&mut uploader, message).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let (seen, _) = recv_frame(&mut text).await;
        assert_ne!(
            seen, url,
            "the client's own text shows the unmasked picture"
        );
        outsides.push(masked(&decode_data_url(&seen), MIDDLE, "text viewer"));
        masked(
            &recv_binary_frame(&mut binary).await,
            MIDDLE,
            "binary viewer",
        );
        masked(&snapshot(&server, "aula").await, MIDDLE, "snapshot");
    }
    outsides.dedup();
    assert_eq!(outsides.len(), 4, "the rest of each upload is shown");
    // A corrupt upload is refused, counted, and reaches nobody.
    let cut = cut_short(&make_jpeg(320, 240, 7));
    let reply = upload_reply(&mut uploader, Message::Text(data_url(&cut).into())).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("bad_frame")),
        "{reply}"
    );
    assert!(
        reply["message"].as_str().unwrap().contains("mask"),
        "{reply}"
    );
    assert_eq!(stream_stat(&server, "aula", "frames_dropped").await, 1);
    let next = make_jpeg(320, 240, 250);
    let ack = upload_reply(&mut uploader, Message::Text(data_url(&next).into())).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let (seen, _) = recv_frame(&mut text).await;
    assert_eq!(
        luma(&decode_data_url(&seen)).0,
        luma(&kindercam_mask(&next)).0,
        "the corrupt upload was skipped"
    );
    assert_eq!(stream_stat(&server, "aula", "masks").await, 1);
    server.stop().await;
}
