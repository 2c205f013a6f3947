//! Frames that reach viewers from the fan-out's pipe (`src/fanout/splice.rs`)
//! are the same bytes a copy would have been: every WebSocket form (text,
//! binary, binary with meta, small) gets each uploaded frame exactly, while
//! `/stats.json` shows the kernel took them by reference; a lone viewer pays no
//! pipe. (MJPEG clients: tests/mjpeg.rs; the counter in `/metrics`:
//! tests/metrics.rs.)

mod common;

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The next message that is not a status; a meta message's `seq` with it.
async fn next_frame(ws: &mut Ws) -> (Option<u64>, Message) {
    let mut seq = None;
    loop {
        match recv(ws).await {
            Message::Text(text) if text.starts_with('{') => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] == "frame" {
                    seq = value["seq"].as_u64();
                } else {
                    assert_eq!(value["type"], "status", "{value}");
                }
            }
            other => return (seq, other),
        }
    }
}

async fn counters(server: &TestServer, stream: &str, sent: u64) -> Value {
    poll_until(
        &format!("{stream}'s counters reach {sent} frames sent"),
        WAIT,
        std::time::Duration::from_millis(50),
        || async {
            server
                .stream_stats(stream)
                .await
                .filter(|s| s["frames_sent"].as_u64() >= Some(sent))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_form_gets_each_frame_exactly_by_reference() {
    let server = start(&[]).await;
    let forms = [
        ("/video/x", "text"),
        ("/video/x?format=binary", "binary"),
        ("/video/x?format=binary&meta=1", "meta"),
        ("/video/x?format=binary&meta=1&size=small", "small"),
    ];
    let mut viewers = Vec::new();
    for (path, kind) in forms {
        for _ in 0..3 {
            viewers.push((kind, server.connect(path).await));
        }
    }
    let mut lone = server.connect("/video/y?format=binary").await;
    let mut uploader = server.connect("/upload/x").await;
    let mut lone_uploader = server.connect("/upload/y").await;

    const FRAMES: u64 = 6;
    let mut last_seq = 0;
    for seed in 0..FRAMES as u32 {
        let jpeg = noisy_jpeg(640, 480, seed);
        assert!(jpeg.len() > 100_000, "a large frame: {} bytes", jpeg.len());
        let url = data_url(&jpeg);
        send_text(&mut uploader, url.clone()).await;
        assert_eq!(recv_json(&mut uploader).await["type"], "ack");
        send_text(&mut lone_uploader, url.clone()).await;
        assert_eq!(recv_json(&mut lone_uploader).await["type"], "ack");
        let mut small_seen = None;
        let mut frame_seq = None;
        for (kind, ws) in &mut viewers {
            let (seq, message) = next_frame(ws).await;
            match (*kind, message) {
                ("text", Message::Text(text)) => {
                    assert!(
                        text.as_str() == url,
                        "frame {seed}: a text viewer's data URL differs"
                    )
                }
                ("binary", Message::Binary(got)) => {
                    assert!(
                        got[..] == jpeg[..],
                        "frame {seed}: a binary viewer's JPEG differs"
                    )
                }
                ("meta", Message::Binary(got)) => {
                    assert!(
                        got[..] == jpeg[..],
                        "frame {seed}: a meta viewer's JPEG differs"
                    );
                    let seq = seq.expect("meta before the frame");
                    match frame_seq {
                        None => {
                            assert!(seq > last_seq, "frame numbers increase");
                            frame_seq = Some(seq);
                        }
                        Some(first) => assert_eq!(seq, first, "one number per frame"),
                    }
                }
                ("small", Message::Binary(got)) => {
                    assert_eq!(jpeg_size(&got), (320, 240), "frame {seed}: half size");
                    // Every small viewer gets the same small picture.
                    match &small_seen {
                        None => small_seen = Some(got.to_vec()),
                        Some(first) => assert!(first[..] == got[..], "small frames differ"),
                    }
                }
                (kind, other) => panic!("{kind} viewer got {}", describe(&other)),
            }
        }
        last_seq = frame_seq.expect("meta viewers");
        match next_frame(&mut lone).await.1 {
            Message::Binary(got) => assert!(got[..] == jpeg[..], "the lone viewer's JPEG"),
            other => panic!("the lone viewer got {}", describe(&other)),
        }
    }

    let x = counters(&server, "x", viewers.len() as u64 * FRAMES).await;
    let spliced = x["frames_spliced"].as_u64().expect("frames_spliced");
    // The first viewer of each form and frame is copied, the second and third
    // are not: 2 of 3 for text, binary and meta (small frames, about 20 KB
    // here, may be too, but need not be over the 16 KiB where splicing starts).
    assert!(
        spliced >= 2 * 3 * FRAMES,
        "frames taken by reference: {spliced} of {}",
        x["frames_sent"]
    );
    let y = counters(&server, "y", FRAMES).await;
    assert_eq!(y["frames_spliced"], 0, "a lone viewer's frames are copied");

    server.stop().await;
}
