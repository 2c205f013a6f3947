//! The real `kindercam` binary: SIGTERM and SIGINT close every WebSocket with 1001
//! and exit 0 promptly; bad config is refused at start; `--help` lists the flags.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{quiet_command, Daemon};
use common::{expect_close, recv_frame, recv_json, TempDir, Ws, WAIT};

/// The binary on loopback, logging at warn, access control off unless `extra`
/// turns it on.
fn spawn_daemon(extra: &[&str]) -> Daemon {
    Daemon::start("warn", extra)
}

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("connect")
        .0
}

async fn signal_closes_everything_with_1001(signal: &str) {
    let mut daemon = spawn_daemon(&["--interval-ms", "100", "--width", "160", "--height", "120"]);
    let mut chat = connect(daemon.ws, "/chat").await;
    let join = recv_json(&mut chat).await;
    assert_eq!(join["event"], "welcome", "{join}");
    let mut video = connect(daemon.ws, "/video").await;
    recv_frame(&mut video).await;
    let health = common::http_get(daemon.http, "/healthz").await;
    assert_eq!(health.status, 200);
    // Posted just before the signal, well inside the saver's one-second wait: only
    // the last save at shutdown can keep it.
    let last_words = format!("hasta mañana, SIG{signal}");
    common::send_json(
        &mut chat,
        &serde_json::json!({"name": "Ana", "message": last_words}),
    )
    .await;
    common::recv_json_until(&mut chat, "the echo", |v| {
        v["message"] == last_words.as_str()
    })
    .await;

    let status = Command::new("kill")
        .args([&format!("-{signal}"), &daemon.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let signalled = Instant::now();

    let (chat_code, video_code) = tokio::join!(expect_close(&mut chat), expect_close(&mut video));
    assert_eq!(chat_code, 1001, "chat close code after SIG{signal}");
    assert_eq!(video_code, 1001, "video close code after SIG{signal}");

    let (exit, daemon) = tokio::task::spawn_blocking(move || {
        let exit = daemon.wait_exit(WAIT);
        (exit, daemon)
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("still running {WAIT:?} after SIG{signal}"));
    assert!(exit.success(), "exit status after SIG{signal}: {exit}");
    assert!(
        took < Duration::from_secs(2) * common::time_scale(),
        "shutdown after SIG{signal} took {took:?}"
    );
    let db = kindercam::store::Store::open(daemon.state.path(), Default::default())
        .expect("the database opens after the exit");
    let history = db.chat_history("camera", 50).unwrap();
    assert!(
        history.iter().any(|(_, text)| text.contains(&last_words)),
        "the message posted just before SIG{signal} was saved: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_with_1001_and_exits_0() {
    signal_closes_everything_with_1001("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_sockets_with_1001_and_exits_0() {
    signal_closes_everything_with_1001("INT").await;
}

#[test]
fn bad_config_is_refused_at_start_with_the_reason() {
    let out = quiet_command()
        .args(["--quality", "0", "--http-listen", "127.0.0.1:0"])
        .args(["--ws-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run kindercam");
    assert!(!out.status.success(), "exit status {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--quality") && stderr.contains("1 and 100"),
        "stderr: {stderr}"
    );
}

#[test]
fn help_documents_every_flag() {
    let mut child = quiet_command()
        .arg("--help")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kindercam --help");
    let mut help = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut help)
        .unwrap();
    assert!(child.wait().unwrap().success());
    for flag in [
        "--http-listen",
        "--ws-listen",
        "--source",
        "--interval-ms",
        "--width",
        "--height",
        "--quality",
        "--state-dir",
        "--config",
        "--web-dir",
        "--max-connections",
        "--max-chat-bytes",
        "--max-upload-bytes",
        "--handshake-timeout-ms",
        "--chat-history",
        "--format",
        "--on-demand",
        "--list-devices",
        "--auth",
        "--viewer-code",
        "--staff-code",
        "--session-hours",
        "--allowed-origin",
        "--ws-public-url",
        "--tls-cert",
        "--tls-key",
        "--max-connections-per-ip",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

async fn connect_with(addr: SocketAddr, path: &str, header: (&'static str, String)) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert(header.0, header.1.parse().unwrap());
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
        .expect("connect")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_code_and_reloading_ends_that_roles_sessions_and_sockets() {
    let basic = common::basic_auth;
    let dir = TempDir::new("reload");
    let config = dir.path().join("kindercam.toml");
    std::fs::write(
        &config,
        "viewer_code = \"parents-1111\"\nstaff_code = \"teachers-2222\"\n",
    )
    .unwrap();
    let daemon = spawn_daemon(&["--auth", "on", "--config", config.to_str().unwrap()]);

    let login = common::http_request(
        daemon.http,
        "POST",
        "/login",
        &[],
        "name=Ana&code=parents-1111",
    )
    .await;
    assert_eq!(login.status, 303);
    let cookie = login
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut parent = connect_with(daemon.ws, "/chat", ("Cookie", cookie.clone())).await;
    let mut teacher = connect_with(
        daemon.ws,
        "/chat",
        ("Authorization", basic("teachers-2222")),
    )
    .await;
    // A script (or VLC) that opened its socket with the old code by Basic auth.
    let mut script = connect_with(
        daemon.ws,
        "/video",
        ("Authorization", basic("parents-1111")),
    )
    .await;

    // The family leaves the daycare: a new viewer code, then `systemctl reload`.
    std::fs::write(
        &config,
        "viewer_code = \"parents-3333\"\nstaff_code = \"teachers-2222\"\n",
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    assert_eq!(
        expect_close(&mut script).await,
        1008,
        "a Basic-auth socket with the old code closes too"
    );
    assert_eq!(
        expect_close(&mut parent).await,
        1008,
        "the old session's socket closes"
    );
    let old_cookie = common::http_request(
        daemon.http,
        "GET",
        "/config.json",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(old_cookie.status, 401);
    let old_code = common::http_request(
        daemon.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic("parents-1111"))],
        "",
    )
    .await;
    assert_eq!(old_code.status, 401);
    let new_code = common::http_request(
        daemon.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic("parents-3333"))],
        "",
    )
    .await;
    assert_eq!(new_code.status, 200);
    // Staff, whose code did not change, keep chatting.
    common::send_json(
        &mut teacher,
        &serde_json::json!({"name": "Profe", "message": "sigo aquí"}),
    )
    .await;
    let echoed =
        common::recv_json_until(&mut teacher, "own message", |v| v["type"] == "usermsg").await;
    assert_eq!(echoed["message"], "sigo aquí");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_hashed_by_hash_code_works_from_the_config_file() {
    use std::io::Write;
    let mut child = quiet_command()
        .arg("hash-code")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kindercam hash-code");
    // Read from standard input, so the code stays out of the shell history.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"parents-2468\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("parents-2468"));

    let dir = TempDir::new("hashed");
    let config = dir.path().join("kindercam.toml");
    std::fs::write(
        &config,
        format!("viewer_code = \"{hash}\"\nstaff_code = \"teachers-1357\"\n"),
    )
    .unwrap();
    let daemon = spawn_daemon(&["--auth", "on", "--config", config.to_str().unwrap()]);
    let basic = common::basic_auth;
    let ok = common::http_request(
        daemon.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic("parents-2468"))],
        "",
    )
    .await;
    assert_eq!(
        (ok.status, ok.json()["role"].as_str()),
        (200, Some("viewer"))
    );
    let wrong = common::http_request(
        daemon.http,
        "GET",
        "/config.json",
        &[("Authorization", &basic("parents-0000"))],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
}

#[test]
fn list_devices_exits_1_when_there_is_no_usable_camera() {
    let has_cameras = std::fs::read_dir("/sys/class/video4linux")
        .map(|d| d.count() > 0)
        .unwrap_or(false);
    if has_cameras {
        eprintln!("this machine has V4L2 devices; the VM tests cover --list-devices with one");
        return;
    }
    let out = quiet_command()
        .arg("--list-devices")
        .stdin(Stdio::null())
        .output()
        .expect("run kindercam --list-devices");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.trim().is_empty(), "it says why");
}
