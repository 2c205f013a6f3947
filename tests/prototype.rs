//! What the PHP prototype's pages need, and what browsers' canvases produce:
//! PNG and WebP uploads become JPEG frames within decode limits, the chat at any
//! `.../server.php` and the video relay at any `.../serverCam.php`.

mod common;

use common::{
    assert_status, b64, basic_auth, data_url, decode_data_url, jpeg_size, make_jpeg, recv_frame,
    recv_json, recv_json_until, recv_text, send_json, send_text, start, start_secured, ws_with, Ws,
    DATA_URL_PREFIX, STAFF_CODE, VIEWER_CODE,
};

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// An 8-bit RGBA PNG of one colour, as `canvas.toDataURL()` writes one.
fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    png_raw(
        width,
        height,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        |i| {
            if i % 4 == 3 {
                255
            } else {
                rgb[i % 4]
            }
        },
    )
}

fn png_raw(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    sample: impl Fn(usize) -> u8,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().unwrap();
    let bytes = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    let len = width as usize * height as usize * color.samples() * bytes;
    writer
        .write_image_data(&(0..len).map(sample).collect::<Vec<u8>>())
        .unwrap();
    writer.finish().unwrap();
    out
}

/// A lossless WebP of one colour, with alpha, as `toBlob("image/webp")` may give.
fn webp(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height)
        .flat_map(|_| [rgb[0], rgb[1], rgb[2], 255])
        .collect();
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(&pixels, width, height, image_webp::ColorType::Rgba8)
        .unwrap();
    out
}

fn url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", b64(bytes))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid small PNG whose header (with a correct CRC) claims `width` x `height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = png(8, 8, [1, 2, 3]);
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// The colour at the middle of a JPEG, decoded.
fn middle(jpeg: &[u8]) -> [u8; 3] {
    let image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).unwrap();
    let at = (image.height / 2 * image.width + image.width / 2) * 3;
    [image.pixels[at], image.pixels[at + 1], image.pixels[at + 2]]
}

fn assert_near(got: [u8; 3], want: [u8; 3]) {
    for (g, w) in got.iter().zip(want) {
        assert!(g.abs_diff(w) <= 6, "colour {got:?}, wanted about {want:?}");
    }
}

fn assert_error(reply: &Value, code: &str, mentions: &str) {
    assert_eq!(reply["type"], "error", "expected an error: {reply}");
    assert_eq!(reply["code"], code, "{reply}");
    let why = reply["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        why.contains(mentions),
        "error should mention {mentions:?}: {why:?}"
    );
}

/// Sends a message and returns the reply.
async fn upload(ws: &mut Ws, message: Message) -> Value {
    ws.send(message).await.unwrap();
    recv_json(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_and_webp_uploads_reach_viewers_as_jpeg() {
    let server = start(&[]).await;
    let mut viewer = server.connect("/video/x").await;
    assert_eq!(
        assert_status(&recv_text(&mut viewer).await)["state"],
        "waiting"
    );
    let mut binary = server.connect("/video/x?format=binary").await;
    assert_status(&recv_text(&mut binary).await);
    let mut uploader = server.connect("/upload/x").await;

    let cases: Vec<(&str, Message, [u8; 3])> = vec![
        (
            "PNG data URL",
            Message::text(url("image/png", &png(64, 48, [200, 40, 90]))),
            [200, 40, 90],
        ),
        (
            "WebP data URL",
            Message::text(url("image/webp", &webp(64, 48, [30, 160, 220]))),
            [30, 160, 220],
        ),
        (
            "binary PNG",
            Message::binary(png(64, 48, [250, 250, 20])),
            [250, 250, 20],
        ),
        (
            "binary WebP",
            Message::binary(webp(64, 48, [10, 120, 10])),
            [10, 120, 10],
        ),
    ];
    for (n, (what, message, colour)) in cases.into_iter().enumerate() {
        let ack = upload(&mut uploader, message).await;
        assert_eq!(ack["type"], "ack", "{what}: {ack}");
        assert_eq!(ack["frames"], n as u64 + 1, "{what}: {ack}");
        let (seen, _) = recv_frame(&mut viewer).await;
        let jpeg = decode_data_url(&seen);
        assert_eq!(jpeg_size(&jpeg), (64, 48), "{what}");
        assert_near(middle(&jpeg), colour);
        assert_eq!(ack["bytes"], jpeg.len(), "{what}: the ack counts the JPEG");
        assert_eq!(common::recv_binary_frame(&mut binary).await, jpeg, "{what}");
    }
    let snapshot = server.get("/snapshot.jpg?stream=x").await;
    assert_eq!(snapshot.status, 200);
    assert_eq!(snapshot.header("content-type"), Some("image/jpeg"));
    assert_near(middle(&snapshot.body), [10, 120, 10]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_limits_refuse_bombs_and_corrupt_pictures_while_viewers_keep_their_frames() {
    let server = start(&[]).await;
    let mut uploader = server.connect("/upload/x").await;
    let good = data_url(&make_jpeg(64, 48, 1));
    assert_eq!(
        upload(&mut uploader, Message::text(good.clone())).await["type"],
        "ack"
    );
    let mut viewer = server.connect("/video/x").await;
    assert_eq!(recv_frame(&mut viewer).await.0, good);

    // 3000x2000 is within the pixel count, but as 16-bit RGBA it inflates to
    // 48 MB from a file of a few tens of KB.
    let bomb = png_raw(
        3000,
        2000,
        png::ColorType::Rgba,
        png::BitDepth::Sixteen,
        |_| 0,
    );
    assert!(bomb.len() < 512 * 1024, "{} bytes", bomb.len());
    let full = png(64, 48, [90, 90, 90]);
    let refused: Vec<(&str, Message, &str)> = vec![
        (
            "a header claiming 65535x65535",
            Message::text(url("image/png", &png_claiming(65535, 65535))),
            "larger than any camera",
        ),
        (
            "the same as a binary upload",
            Message::binary(png_claiming(65535, 65535)),
            "larger than any camera",
        ),
        (
            "a decoded-size bomb",
            Message::text(url("image/png", &bomb)),
            "mib to decode",
        ),
        (
            "a PNG cut short",
            Message::text(url("image/png", &full[..full.len() - 40])),
            "not a valid png picture",
        ),
        (
            "a corrupt WebP",
            Message::text(url(
                "image/webp",
                b"RIFF\x20\0\0\0WEBPVP8 \x14\0\0\0garbagegarbagegarbage",
            )),
            "not a valid webp picture",
        ),
        (
            "a GIF",
            Message::text(url("image/gif", b"GIF89a")),
            "jpeg, png or webp",
        ),
    ];
    for (what, message, mentions) in refused {
        let reply = upload(&mut uploader, message).await;
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        assert_error(&reply, "bad_frame", mentions);
    }
    // The uploader is still connected, the viewer saw none of it, and the last
    // good frame stayed for snapshots; the next good one reaches the viewer.
    let snapshot = server.get("/snapshot.jpg?stream=x").await;
    assert_eq!(snapshot.body, decode_data_url(&good));
    let next = Message::text(url("image/png", &png(64, 48, [220, 220, 220])));
    assert_eq!(upload(&mut uploader, next).await["type"], "ack");
    let (seen, _) = recv_frame(&mut viewer).await;
    assert_near(middle(&decode_data_url(&seen)), [220, 220, 220]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_php_is_the_chat_of_camera() {
    let server = start(&[]).await;
    let mut prototype = server.connect("/chat/server.php").await;
    let mut page = server.connect("/chat").await;
    let mut elsewhere = server.connect("/kinder/server.php").await;
    send_json(
        &mut prototype,
        &json!({"name": "Ana", "message": "hola desde el prototipo", "color": "FF0000"}),
    )
    .await;
    for ws in [&mut page, &mut elsewhere] {
        let msg = recv_json_until(ws, "Ana's message", |m| m["type"] == "usermsg").await;
        assert_eq!(msg["name"], "Ana", "{msg}");
        assert_eq!(msg["message"], "hola desde el prototipo", "{msg}");
    }
    send_json(
        &mut page,
        &json!({"name": "Profe", "message": "bienvenida", "color": "00AA00"}),
    )
    .await;
    let msg = recv_json_until(&mut prototype, "the reply", |m| {
        m["type"] == "usermsg" && m["name"] == "Profe"
    })
    .await;
    assert_eq!(msg["message"], "bienvenida", "{msg}");
    server.stop().await;
}

/// The next message of a relay socket: a JPEG data URL and nothing else.
async fn relay_frame(ws: &mut Ws) -> Vec<u8> {
    let text = recv_text(ws).await;
    assert!(
        text.starts_with(DATA_URL_PREFIX),
        "not a frame: {}",
        common::clip(&text)
    );
    decode_data_url(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cam_php_relays_the_camera_page_to_every_other_socket() {
    let server = start(&["--prototype-stream", "sala"]).await;
    let mut visor = server.connect("/chat/serverCam.php").await;
    let mut other_folder = server.connect("/serverCam.php").await;
    let mut camara = server.connect("/chat/serverCam.php").await;
    // kindercam's own viewer of the same stream, which the relay opened.
    let mut viewer = server.connect("/video/sala").await;
    assert_status(&recv_text(&mut viewer).await);

    // The camera page's canvas.toDataURL(): PNG, with no reply expected.
    send_text(&mut camara, url("image/png", &png(64, 48, [200, 40, 90]))).await;
    for ws in [&mut visor, &mut other_folder] {
        let jpeg = relay_frame(ws).await;
        assert_eq!(jpeg_size(&jpeg), (64, 48));
        assert_near(middle(&jpeg), [200, 40, 90]);
    }
    let (seen, _) = recv_frame(&mut viewer).await;
    assert_near(middle(&decode_data_url(&seen)), [200, 40, 90]);

    // A bad picture is answered to the camera alone, and its own frames are
    // not sent back to it: the error is the first thing it receives.
    send_text(
        &mut camara,
        url("image/png", b"\x89PNG\r\n\x1a\nnot really"),
    )
    .await;
    assert_error(&recv_json(&mut camara).await, "bad_frame", "png");

    // A second camera is refused while the first broadcasts, and stays a viewer.
    let mut second = server.connect("/chat/serverCam.php").await;
    assert_near(middle(&relay_frame(&mut second).await), [200, 40, 90]);
    send_text(&mut second, url("image/png", &png(64, 48, [0, 0, 0]))).await;
    assert_error(
        &recv_json(&mut second).await,
        "busy",
        "already broadcasting",
    );
    send_text(&mut camara, url("image/png", &png(64, 48, [20, 200, 40]))).await;
    for ws in [&mut visor, &mut other_folder, &mut second] {
        assert_near(middle(&relay_frame(ws).await), [20, 200, 40]);
    }
    // A JPEG data URL works as well, passed through as it is.
    let jpeg = data_url(&make_jpeg(32, 32, 7));
    send_text(&mut camara, jpeg.clone()).await;
    assert_eq!(recv_text(&mut visor).await, jpeg);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_control_only_staff_feed_the_relay_and_other_origins_need_allowing() {
    let server = start_secured(&["--allowed-origin", "http://apache.local:8000"]).await;
    let parent = [("authorization", basic_auth(VIEWER_CODE))];
    let staff = [("authorization", basic_auth(STAFF_CODE))];
    let mut visor = ws_with(&server, "/chat/serverCam.php", &parent)
        .await
        .unwrap();
    let small = url("image/png", &png(16, 16, [1, 2, 3]));
    send_text(&mut visor, small).await;
    assert_error(&recv_json(&mut visor).await, "forbidden", "staff code");

    let from_apache = [
        ("authorization", basic_auth(STAFF_CODE)),
        ("origin", "http://apache.local:8000".to_owned()),
    ];
    let mut camara = ws_with(&server, "/chat/serverCam.php", &from_apache)
        .await
        .unwrap();
    send_text(&mut camara, url("image/png", &png(32, 32, [240, 100, 0]))).await;
    assert_near(middle(&relay_frame(&mut visor).await), [240, 100, 0]);

    let elsewhere = [
        ("authorization", basic_auth(STAFF_CODE)),
        ("origin", "http://evil.example".to_owned()),
    ];
    assert_eq!(
        ws_with(&server, "/chat/serverCam.php", &elsewhere)
            .await
            .err(),
        Some(403)
    );
    assert!(ws_with(&server, "/chat/server.php", &staff).await.is_ok());
    server.stop().await;
}
