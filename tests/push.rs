//! Push out through NAT (`--push-to`): a camera kindercam sends its stream to a
//! relay kindercam's `/upload/NAME`, and parents watch on the relay. Every node
//! is the real binary on loopback, so that a relay can be killed with SIGKILL
//! and the camera's log read as an installer would read it.
//!
//! What a user would notice: frames reach the relay's viewers already masked;
//! the camera stays closed while nobody anywhere watches and follows the
//! relay's viewers, pauses included; the camera moves to its failover relay
//! when the first dies; a bad token or an unknown CA is said in the log, and
//! retries slow down rather than flood.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{clean_command, Daemon, SMALL_CAMERA};
use common::{basic_auth, http_request, poll_until, recv_within, TempDir, Ws, WAIT};
use kindercam::privacy::Mask;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const STAFF: &str = "teachers-1357";
const VIEWER: &str = "parents-2468";
const ADMIN: &str = "director-9753";
/// The corner the camera masks: the test pattern is a bright bar there.
const CORNER: &str = r#"[{"x":0,"y":0,"w":0.25,"h":0.25}]"#;

/// A kindercam binary logging at info, access control off unless `args` turn
/// it on; killed (SIGKILL) on drop.
fn node(args: &[&str]) -> Daemon {
    Daemon::start("info", args)
}

/// A relay with access control on and the three codes.
fn relay(extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--auth",
        "on",
        "--viewer-code",
        VIEWER,
        "--staff-code",
        STAFF,
        "--admin-code",
        ADMIN,
    ];
    args.extend_from_slice(extra);
    node(&args)
}

/// A camera node (`SMALL_CAMERA`).
fn camera(extra: &[&str]) -> Daemon {
    let mut args = SMALL_CAMERA.to_vec();
    args.extend_from_slice(extra);
    node(&args)
}

impl Daemon {
    fn upload_url(&self, stream: &str) -> String {
        format!("ws://{}/upload/{stream}", self.ws)
    }

    /// `/stats.json` of a node with access control off.
    async fn stats(&self) -> Value {
        let reply = http_request(self.http, "GET", "/stats.json", &[], "").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// The camera's frames made so far.
    async fn frames_published(&self) -> u64 {
        let stats = self.stats().await;
        stats["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "camera")
            .map_or(0, |s| s["frames_published"].as_u64().unwrap())
    }

    /// The camera's one pusher, as `/stats.json` shows it.
    async fn pusher(&self) -> Value {
        self.stats().await["pushes"][0].clone()
    }

    /// Waits until the pusher is connected to `url` and the relay said `demand`.
    async fn until_pushing(&self, url: &str, demand: u64) -> Value {
        poll_until(
            &format!("pushing to {url} with demand {demand}"),
            WAIT,
            Duration::from_millis(50),
            || async {
                let p = self.pusher().await;
                (p["connected"] == url && p["relay_demand"] == demand).then_some(p)
            },
        )
        .await
    }

    /// Waits for `n` log lines containing `text`.
    async fn until_logged(&self, text: &str, n: usize, limit: Duration) -> Vec<(Instant, String)> {
        poll_until(
            &format!("{n} log lines with {text:?}"),
            limit,
            Duration::from_millis(20),
            || async {
                let lines = self.lines_with(text);
                (lines.len() >= n).then_some(lines)
            },
        )
        .await
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> common::HttpReply {
        let auth = basic_auth(ADMIN);
        http_request(self.http, method, path, &[("Authorization", &auth)], body).await
    }

    /// A push token for `rooms`, made on this relay as its admin would.
    async fn push_token(&self, rooms: &[&str]) -> String {
        let body = json!({"name": "Pi del aula", "scope": "push", "rooms": rooms}).to_string();
        let reply = self.admin("POST", "/api/tokens", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// A binary video socket on this node, logged in with `code`.
    async fn viewer(&self, stream: &str, code: &str) -> Ws {
        let url = format!("ws://{}/video/{stream}?format=binary", self.ws);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&basic_auth(code)).unwrap(),
        );
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => panic!("viewer of {stream} refused: {e}"),
            Err(_) => panic!("viewer handshake hung"),
        }
    }
}

/// The next binary frame within `limit` (statuses skipped).
async fn picture_within(ws: &mut Ws, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(ws, left).await? {
            Message::Binary(jpeg) => return Some(jpeg.to_vec()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn picture(ws: &mut Ws, what: &str) -> Vec<u8> {
    picture_within(ws, WAIT)
        .await
        .unwrap_or_else(|| panic!("no frame within {WAIT:?}: {what}"))
}

/// Whether the mask's rectangle is black in `jpeg` while the rest is not.
fn masked(jpeg: &[u8], json: &str) -> bool {
    let image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::GRAY).unwrap();
    let (w, h) = (image.width, image.height);
    let rect = Mask::from_json(json).unwrap().resolve(w, h, (16, 16))[0];
    let (mut inside_black, mut outside_bright) = (true, false);
    for (i, &v) in image.pixels.iter().enumerate() {
        if rect.contains(i % w, i / w) {
            inside_black &= v == 0;
        } else {
            outside_bright |= v > 40;
        }
    }
    inside_black && outside_bright
}

/// The camera makes no frame over `span`: it is closed.
async fn assert_idle(camera: &Daemon, span: Duration, what: &str) {
    let before = camera.frames_published().await;
    tokio::time::sleep(span).await;
    let after = camera.frames_published().await;
    assert_eq!(before, after, "{what}: the camera made frames");
}

/// Waits until the camera stops making frames (it idles 5 s after the last
/// demand): two readings a second apart that agree.
async fn until_idle(camera: &Daemon, what: &str) {
    let limit = WAIT + Duration::from_secs(5);
    let deadline = Instant::now() + limit;
    let mut last = camera.frames_published().await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = camera.frames_published().await;
        if now == last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still making frames after {limit:?}"
        );
        last = now;
    }
}

fn masks_file(dir: &TempDir, json: &str) -> String {
    let rects = Mask::from_json(json).unwrap();
    let toml = format!(
        "masks = [{}]\n",
        rects
            .rects()
            .iter()
            .map(|r| format!("{{x = {}, y = {}, w = {}, h = {}}}", r.x, r.y, r.w, r.h))
            .collect::<Vec<_>>()
            .join(", ")
    );
    dir.write("camera.toml", &toml).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_viewers_get_masked_frames_and_the_camera_opens_only_for_them() {
    let relay = relay(&[]);
    let token = relay.push_token(&["aula-1"]).await;
    let dir = TempDir::new("push-mask");
    let config = masks_file(&dir, CORNER);
    let url = relay.upload_url("aula-1");
    let camera = camera(&[
        "--config",
        &config,
        "--push-to",
        &url,
        "--push-token",
        &token,
    ]);

    // Connected, told "nobody watches": the camera stays closed.
    camera.until_pushing(&url, 0).await;
    assert_eq!(camera.frames_published().await, 0, "never opened");
    assert_idle(
        &camera,
        Duration::from_millis(1500),
        "nobody watches anywhere",
    )
    .await;
    let health = http_request(camera.http, "GET", "/healthz", &[], "")
        .await
        .json();
    assert_eq!(health["pushes"][0]["connected"], true, "{health}");

    // A parent joins on the relay: the camera opens and frames arrive, masked.
    let mut parent = relay.viewer("aula-1", VIEWER).await;
    let first = picture(&mut parent, "the parent on the relay").await;
    assert!(masked(&first, CORNER), "the relay's frame is masked");
    for i in 0..5 {
        let jpeg = picture(&mut parent, &format!("frame {i}")).await;
        assert!(masked(&jpeg, CORNER), "frame {i} is masked");
    }
    let pushing = camera.until_pushing(&url, 1).await;
    assert!(pushing["frames_sent"].as_u64().unwrap() >= 6, "{pushing}");
    assert!(camera.frames_published().await > 0);

    // The parent leaves: the relay says so, and the camera closes again.
    drop(parent);
    camera.until_pushing(&url, 0).await;
    until_idle(&camera, "the parent left").await;
    let sent = camera.pusher().await["frames_sent"].clone();
    assert_idle(
        &camera,
        Duration::from_millis(1500),
        "after the parent left",
    )
    .await;
    assert_eq!(camera.pusher().await["frames_sent"], sent, "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_on_the_relay_closes_the_camera_while_only_families_watch() {
    let relay = relay(&[]);
    let token = relay.push_token(&["aula-1"]).await;
    let url = relay.upload_url("aula-1");
    let camera = camera(&["--push-to", &url, "--push-token", &token]);
    camera.until_pushing(&url, 0).await;
    let mut parent = relay.viewer("aula-1", VIEWER).await;
    picture(&mut parent, "the parent, before the pause").await;

    let staff = basic_auth(STAFF);
    let paused = http_request(
        relay.http,
        "POST",
        "/api/streams/aula-1/pause",
        &[("Authorization", &staff)],
        r#"{"minutes": 10}"#,
    )
    .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    camera.until_pushing(&url, 0).await;
    until_idle(&camera, "paused on the relay").await;
    camera
        .until_logged("the relay's room is paused", 1, WAIT)
        .await;

    let resumed = http_request(
        relay.http,
        "DELETE",
        "/api/streams/aula-1/pause",
        &[("Authorization", &staff)],
        "",
    )
    .await;
    assert!(resumed.status < 300, "{}", resumed.text());
    camera.until_pushing(&url, 1).await;
    picture(&mut parent, "the parent, after the resume").await;
    // Told when connected, and again now.
    camera
        .until_logged("the relay's room is open", 2, WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_relay_dies_the_camera_pushes_to_the_second_within_ten_seconds() {
    // Two relays without logins (loopback), so no push token: the pusher asks
    // for the relays' demand itself (a plain upload address, no `?demand=1`).
    let mut first = node(&[]);
    let second = node(&[]);
    let (url1, url2) = (first.upload_url("aula-1"), second.upload_url("aula-1"));
    let camera = camera(&["--push-to", &url1, "--push-to", &url2]);
    camera.until_pushing(&url1, 0).await;
    let mut viewer = first.viewer("aula-1", STAFF).await;
    picture(&mut viewer, "a viewer on the first relay").await;

    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let killed = Instant::now();
    camera.until_pushing(&url2, 0).await;
    let mut moved = second.viewer("aula-1", STAFF).await;
    picture(&mut moved, "the viewer, reconnected to the second relay").await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "frames on the second relay {took:?} after the first died"
    );
    let failed = camera.lines_with("push session ended");
    assert!(
        failed.iter().any(|(_, l)| l.contains(&url1)),
        "the lost session is logged: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_logged_and_retried_ever_more_slowly() {
    let relay = relay(&[]);
    let url = relay.upload_url("aula-1");
    let camera = camera(&["--push-to", &url, "--push-token", "not-a-token"]);
    let lines = camera
        .until_logged("HTTP 401", 4, Duration::from_secs(20))
        .await;
    assert!(
        lines[0].1.contains("refused the push token") && lines[0].1.contains(&url),
        "{}",
        lines[0].1
    );
    let gaps: Vec<Duration> = lines.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // The waits are 0.25-0.5 s, 0.5-1 s, 1-2 s: each at least the last
    // (within the scheduler's slack), and the third well over the first.
    for pair in gaps.windows(2) {
        assert!(
            pair[1] + Duration::from_millis(100) >= pair[0],
            "the retries slow down: {gaps:?}"
        );
    }
    assert!(gaps[2] >= gaps[0] * 2, "{gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(200), "no flood: {gaps:?}");
    let pusher = camera.pusher().await;
    assert!(
        pusher["last_error"].as_str().unwrap().contains("401"),
        "{pusher}"
    );
    assert_eq!(pusher["connected"], Value::Null);
    assert_eq!(
        camera.frames_published().await,
        0,
        "the camera stayed closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_to_a_private_ca_works_with_push_ca_and_is_logged_as_unknown_ca_without() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let dir = TempDir::new("push-tls");
    let cert_pem = dir.write("cert.pem", &cert.cert.pem());
    let key_pem = dir.write("key.pem", &cert.key_pair.serialize_pem());
    let relay = node(&[
        "--tls-cert",
        cert_pem.to_str().unwrap(),
        "--tls-key",
        key_pem.to_str().unwrap(),
    ]);
    let url = format!("wss://127.0.0.1:{}/upload/aula-1?demand=1", relay.ws.port());

    let untrusting = camera(&["--push-to", &url]);
    let lines = untrusting.until_logged("push failed", 1, WAIT).await;
    assert!(
        lines[0].1.contains("unknown CA") && lines[0].1.contains("--push-ca"),
        "{}",
        lines[0].1
    );
    drop(untrusting);

    let trusting = camera(&["--push-to", &url, "--push-ca", cert_pem.to_str().unwrap()]);
    trusting.until_pushing(&url, 0).await;
    assert!(trusting.lines_with("push failed").is_empty());
}

#[tokio::test]
async fn a_bad_push_address_or_ca_stops_the_start_with_a_clear_error() {
    let out = clean_command()
        .env("KINDERCAM_AUTH", "off")
        .args(["--http-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
        .args(["--push-to", "https://relay.example.org/upload/aula-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--push-to") && err.contains("ws://"), "{err}");

    let dir = TempDir::new("push-bad-ca");
    let bad = dir.write("ca.pem", "nothing here\n");
    let state = dir.path().join("state");
    let out = clean_command()
        .env("KINDERCAM_AUTH", "off")
        .args(["--http-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--push-to", "wss://relay.example.org/upload/aula-1"])
        .args(["--push-ca", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no certificate"), "{err}");
}
