//! `/upload/NAME`: a browser camera's JPEG data URLs reach `/video/NAME` viewers
//! unchanged; bad uploads are refused without harm; one uploader per stream.
//! (PNG and WebP uploads: tests/prototype.rs.)

mod common;

use common::{
    assert_status, data_url, decode_data_url, expect_close, jpeg_size, make_jpeg, poll_until,
    raw_upgrade, recv_frame, recv_json, recv_json_until, recv_text, send_text, start, TestServer,
    Ws, DATA_URL_PREFIX, WAIT,
};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Sends one data URL and returns the server's reply.
async fn upload(ws: &mut Ws, text: String) -> Value {
    send_text(ws, text).await;
    recv_json(ws).await
}

fn assert_ack(reply: &Value, frames: u64) {
    assert_eq!(reply["type"], "ack", "expected an ack: {reply}");
    assert_eq!(reply["frames"], frames, "{reply}");
}

fn assert_error(reply: &Value, code: &str, mentions: &str) {
    assert_error_for("", reply, code, mentions);
}

/// `assert_error` for the case `what`, which failures name.
fn assert_error_for(what: &str, reply: &Value, code: &str, mentions: &str) {
    assert_eq!(reply["type"], "error", "{what}: expected an error: {reply}");
    assert_eq!(reply["code"], code, "{what}: {reply}");
    let why = reply["message"].as_str().unwrap_or_default();
    assert!(
        why.to_lowercase().contains(mentions),
        "{what}: error should mention {mentions:?}: {why:?}"
    );
}

/// A viewer of a stream that has no source yet is told so, as JSON status.
async fn waiting_viewer(server: &TestServer, path: &str) -> Ws {
    let mut viewer = server.connect(path).await;
    let status = assert_status(&recv_text(&mut viewer).await);
    assert_eq!(status["state"], "waiting", "{status}");
    viewer
}

/// Stream `x` made live: a viewer that waited for it, its uploader, and the first
/// frame, acked and seen.
async fn live_stream(server: &TestServer) -> (Ws, Ws, String) {
    let mut viewer = waiting_viewer(server, "/video/x").await;
    let mut uploader = server.connect("/upload/x").await;
    let good = data_url(&make_jpeg(64, 48, 1));
    assert_ack(&upload(&mut uploader, good.clone()).await, 1);
    assert_eq!(recv_frame(&mut viewer).await.0, good);
    (viewer, uploader, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_frames_reach_viewers_unchanged() {
    let server = start(&[]).await;
    let mut viewer = waiting_viewer(&server, "/video/x").await;
    let mut binary = waiting_viewer(&server, "/video/x?format=binary").await;
    let mut uploader = server.connect("/upload/x").await;

    for seed in 1..=3u8 {
        let jpeg = make_jpeg(64, 48, seed);
        let url = data_url(&jpeg);
        let ack = upload(&mut uploader, url.clone()).await;
        assert_ack(&ack, seed as u64);
        assert_eq!(ack["bytes"], jpeg.len(), "{ack}");
        assert_eq!(ack["viewers"], 2, "{ack}");
        let (seen, _) = recv_frame(&mut viewer).await;
        assert!(seen == url, "viewer got exactly the uploaded data URL");
        assert_eq!(common::recv_binary_frame(&mut binary).await, jpeg);
    }

    // Binary JPEG uploads work too, and text viewers get them as data URLs.
    let jpeg = make_jpeg(80, 64, 9);
    uploader
        .send(Message::Binary(jpeg.clone().into()))
        .await
        .unwrap();
    assert_ack(&recv_json(&mut uploader).await, 4);
    let (seen, _) = recv_frame(&mut viewer).await;
    assert_eq!(decode_data_url(&seen), jpeg);
    assert_eq!(jpeg_size(&decode_data_url(&seen)), (80, 64));

    let snapshot = server.get("/snapshot.jpg?stream=x").await;
    assert_eq!(snapshot.status, 200);
    assert_eq!(snapshot.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        snapshot.header("retry-after"),
        None,
        "only refusals say retry"
    );
    assert_eq!(snapshot.body, jpeg, "snapshot is the latest upload");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_the_last_good_frame_stays() {
    let max = 64 * 1024;
    let server = start(&["--max-upload-bytes", &max.to_string()]).await;
    let (mut viewer, mut uploader, good) = live_stream(&server).await;

    let jpeg = make_jpeg(64, 48, 2);
    // A PNG signature and header chunk, padded well past any "too small" floor.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x40\0\0\0\x30\x08\x02\0\0\0".to_vec();
    png.resize(600, 0x55);
    let oversize = format!("{DATA_URL_PREFIX}{}", "A".repeat(max + 4096));
    assert!(oversize.len() < 4 * max, "soft limit: answered, not closed");
    let bad: Vec<(&str, String, &str, &str)> = vec![
        (
            "garbage",
            "hello, this is not a frame".into(),
            "bad_frame",
            "data url",
        ),
        (
            "PNG bytes in a JPEG data URL",
            data_url(&png),
            "bad_frame",
            "says image/jpeg but holds a png",
        ),
        (
            "bad base64",
            format!("{DATA_URL_PREFIX}!!!not*base64***"),
            "bad_frame",
            "base64",
        ),
        (
            "truncated JPEG",
            data_url(&jpeg[..jpeg.len() / 2]),
            "bad_frame",
            "incomplete",
        ),
        (
            "JPEG without EOI",
            data_url(&jpeg[..jpeg.len() - 2]),
            "bad_frame",
            "incomplete",
        ),
        ("empty", DATA_URL_PREFIX.into(), "bad_frame", "jpeg"),
        ("oversize", oversize, "too_large", "too large"),
    ];
    for (what, text, code, mentions) in bad {
        assert_error_for(what, &upload(&mut uploader, text).await, code, mentions);
    }
    // A binary upload that is no valid picture is refused the same way.
    uploader
        .send(Message::Binary(png.clone().into()))
        .await
        .unwrap();
    assert_error(
        &recv_json(&mut uploader).await,
        "bad_frame",
        "not a valid png",
    );
    uploader
        .send(Message::Binary(
            b"GIF89a and the rest of a gif".to_vec().into(),
        ))
        .await
        .unwrap();
    assert_error(
        &recv_json(&mut uploader).await,
        "bad_frame",
        "jpeg, png or webp",
    );

    // The last good frame stays: for a new viewer, at once, and for snapshots.
    let mut late = server.connect("/video/x").await;
    assert_eq!(recv_frame(&mut late).await.0, good);
    let snapshot = server.get("/snapshot.jpg?stream=x").await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text());
    assert_eq!(snapshot.body, decode_data_url(&good));

    // The uploader was not dropped, and the first viewer saw no bad frame: the
    // next thing it receives is the next good one.
    let next = data_url(&jpeg);
    assert_ack(&upload(&mut uploader, next.clone()).await, 2);
    assert_eq!(recv_text(&mut viewer).await, next);
    assert_eq!(recv_text(&mut late).await, next);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_oversize_upload_closes_1009_but_viewers_stay() {
    let max = 16 * 1024;
    let server = start(&["--max-upload-bytes", &max.to_string()]).await;
    let (mut viewer, mut uploader, good) = live_stream(&server).await;

    let far = format!("{DATA_URL_PREFIX}{}", "A".repeat(4 * max + 1024));
    send_text(&mut uploader, far).await;
    assert_error(&recv_json(&mut uploader).await, "too_large", "size");
    assert_eq!(expect_close(&mut uploader).await, 1009);

    // The viewer stays connected and learns the broadcaster is gone.
    let status = assert_status(&recv_text(&mut viewer).await);
    assert_eq!(status["state"], "offline", "{status}");
    // A viewer joining now is told the stream is offline and still gets the last picture.
    let mut late = server.connect("/video/x").await;
    assert_eq!(recv_frame(&mut late).await.0, good);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uploader_per_stream() {
    let server = start(&[]).await;
    let mut first = server.connect("/upload/x").await;
    // Once the first upload is acknowledged, the slot is certainly claimed.
    assert_ack(
        &upload(&mut first, data_url(&make_jpeg(32, 32, 1))).await,
        1,
    );

    let mut second = server.connect("/upload/x").await;
    assert_error(&recv_json(&mut second).await, "busy", "already");
    assert_eq!(expect_close(&mut second).await, 1008);

    // The first one carries on, and another stream is free.
    assert_ack(
        &upload(&mut first, data_url(&make_jpeg(32, 32, 2))).await,
        2,
    );
    let mut other = server.connect("/upload/y").await;
    assert_ack(
        &upload(&mut other, data_url(&make_jpeg(32, 32, 3))).await,
        1,
    );

    // When the first leaves, the slot is free again. Its release runs on the
    // server after the close, so retry a refused claim until a deadline.
    first.close(None).await.unwrap();
    let mut next = common::poll_until(
        "the upload slot of x to be released",
        common::WAIT,
        std::time::Duration::from_millis(50),
        || async {
            let mut ws = server.connect("/upload/x").await;
            let reply = upload(&mut ws, data_url(&make_jpeg(32, 32, 4))).await;
            if reply["type"] == "ack" {
                Some(ws)
            } else {
                assert_eq!(reply["code"], "busy", "{reply}");
                None
            }
        },
    )
    .await;
    assert_ack(&upload(&mut next, data_url(&make_jpeg(32, 32, 5))).await, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_is_reserved_for_the_device() {
    let server = start(&[]).await;
    let mut ws = server.connect("/upload/camera").await;
    assert_error(&recv_json(&mut ws).await, "reserved", "camera");
    assert_eq!(expect_close(&mut ws).await, 1008);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_hear_when_the_uploader_leaves() {
    let server = start(&[]).await;
    let mut viewer = waiting_viewer(&server, "/video/x").await;
    let mut uploader = server.connect("/upload/x").await;
    let good = data_url(&make_jpeg(64, 48, 1));
    assert_ack(&upload(&mut uploader, good.clone()).await, 1);
    // A viewer that was waiting hears "live" before the first frame.
    let live = assert_status(&recv_text(&mut viewer).await);
    assert_eq!(live["state"], "live", "{live}");
    let (seen, _) = recv_frame(&mut viewer).await;
    assert_eq!(seen, good);

    uploader.close(None).await.unwrap();
    let status = assert_status(&recv_text(&mut viewer).await);
    assert_eq!(status["state"], "offline", "{status}");
    assert!(
        status["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}"
    );

    // A new broadcaster brings the stream back.
    let mut again = server.connect("/upload/x").await;
    let good2 = data_url(&make_jpeg(64, 48, 2));
    assert_ack(&upload(&mut again, good2.clone()).await, 1);
    let status = assert_status(&recv_text(&mut viewer).await);
    assert_eq!(status["state"], "live", "{status}");
    assert_eq!(recv_text(&mut viewer).await, good2);
    server.stop().await;
}

/// A phone whose Wi-Fi drops mid-broadcast sends no goodbye. Its stream must not
/// stay "busy" for the phone's reconnect: the silent uploader is dropped once it
/// has not answered pings for 20 s, and the stream goes offline for viewers.
#[tokio::test]
async fn a_silent_broadcaster_frees_its_stream() {
    let server = start(&[]).await;
    // Handshake done by hand, then silence: no frames, no pong, no FIN.
    let _ghost = raw_upgrade(server.ws, "/upload/aula", None).await;
    let mut viewer = server.connect("/video/aula").await;
    poll_until(
        "the stream to be claimed",
        WAIT,
        Duration::from_millis(50),
        || async {
            server
                .stream_stats("aula")
                .await
                .filter(|s| s["uploading"] == true)
        },
    )
    .await;
    let started = std::time::Instant::now();
    let freed = poll_until(
        "the silent uploader to be dropped",
        Duration::from_secs(40),
        Duration::from_millis(250),
        || async {
            server
                .stream_stats("aula")
                .await
                .filter(|s| s["uploading"] == false)
        },
    )
    .await;
    assert_eq!(freed["status"], "offline");
    let took = started.elapsed();
    // Not before 20 s of silence (less the moments before `started`): a phone
    // that is merely slow keeps its stream.
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(30),
        "freed after {took:?}"
    );
    let status = recv_json_until(&mut viewer, "offline status", |v| v["state"] == "offline").await;
    assert_eq!(status["type"], "status");
    // The reconnecting phone gets the stream.
    let mut phone = server.connect("/upload/aula").await;
    send_text(&mut phone, data_url(&make_jpeg(64, 48, 9))).await;
    assert_eq!(recv_json(&mut phone).await["type"], "ack");
    server.stop().await;
}

/// The next `{"type":"demand"}` message's count, skipping acks.
async fn next_demand(uploader: &mut Ws) -> u64 {
    recv_json_until(uploader, "a demand message", |v| v["type"] == "demand").await["viewers"]
        .as_u64()
        .expect("viewers is a count")
}

#[tokio::test]
async fn an_uploader_that_asks_is_told_the_demand_at_once_and_on_change_coalesced() {
    let server = start(&["--max-connections-per-ip", "64"]).await;
    let mut uploader = server.connect("/upload/x?demand=1").await;
    assert_eq!(next_demand(&mut uploader).await, 0, "told at once: nobody");
    let mut viewer = server.connect("/video/x").await;
    assert_eq!(next_demand(&mut uploader).await, 1, "a viewer joined");

    // A crowd joining is told as a few messages, not one per viewer.
    let mut crowd = Vec::new();
    for _ in 0..30 {
        crowd.push(server.connect("/video/x").await);
    }
    let mut messages = 0;
    let mut last = 1;
    while last != 31 {
        last = next_demand(&mut uploader).await;
        messages += 1;
    }
    assert!(messages < 30, "{messages} messages for 30 viewers joining");
    drop(crowd);
    while last != 1 {
        last = next_demand(&mut uploader).await;
    }
    let _ = viewer.close(None).await;
    assert_eq!(next_demand(&mut uploader).await, 0, "the last viewer left");

    // A broadcaster page that did not ask never sees the new message.
    let mut page = server.connect("/upload/y").await;
    let _watcher = server.connect("/video/y").await;
    assert_ack(&upload(&mut page, data_url(&make_jpeg(64, 48, 2))).await, 1);
    assert_ack(&upload(&mut page, data_url(&make_jpeg(64, 48, 3))).await, 2);
    server.stop().await;
}
