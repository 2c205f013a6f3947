//! Config layers: flags > `KINDERCAM_*` environment > TOML file > defaults, an
//! unknown TOML key named in the error, and bad values refused with a message
//! saying what is wrong and where the value came from.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::TempDir;
use kindercam::Config;

fn load(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut argv = vec!["kindercam"];
    argv.extend_from_slice(args);
    Config::load(argv, &|k| env.get(k).cloned())
}

fn error_of(args: &[&str], env: &[(&str, &str)]) -> String {
    match load(args, env) {
        Ok(_) => panic!("config {args:?} {env:?} was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = load(&[], &[]).unwrap();
    assert_eq!(c.listen.http_listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.listen.ws_listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.capture.interval, Duration::from_millis(500));
    assert_eq!(
        (c.capture.width, c.capture.height, c.capture.quality),
        (640, 480, 75)
    );
    assert_eq!(c.limits.max_upload_bytes, 4 * 1024 * 1024);
    assert!(c.limits.max_connections >= 500);
    assert_eq!(c.capture.source.to_string(), "test-pattern");
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let tmp = TempDir::new("config");
    let file = tmp.write(
        "kindercam.toml",
        r#"
quality = 10
interval_ms = 111
width = 320
height = 200
chat_history = 7
ws_listen = "127.0.0.1:9100"
"#,
    );
    let env = [
        ("KINDERCAM_QUALITY", "20"),
        ("KINDERCAM_INTERVAL_MS", "222"),
        ("KINDERCAM_WIDTH", "400"),
        // An empty variable counts as unset, so the file's value stays.
        ("KINDERCAM_HEIGHT", ""),
    ];
    let c = load(&["--config", path_str(&file), "--quality", "30"], &env).unwrap();
    assert_eq!(c.capture.quality, 30, "flag beats env and file");
    assert_eq!(
        c.capture.interval,
        Duration::from_millis(222),
        "env beats file"
    );
    assert_eq!(c.capture.width, 400, "env beats file");
    assert_eq!(c.capture.height, 200, "file beats default");
    assert_eq!(c.storage.chat_history, 7, "file beats default");
    assert_eq!(c.listen.ws_listen.to_string(), "127.0.0.1:9100");
    assert_eq!(
        c.limits.max_chat_bytes, 4096,
        "default when no layer sets it"
    );
    assert_eq!(c.listen.http_listen.to_string(), "0.0.0.0:8080");

    // The file can also be named by KINDERCAM_CONFIG.
    let c = load(&[], &[("KINDERCAM_CONFIG", path_str(&file))]).unwrap();
    assert_eq!((c.capture.quality, c.capture.width), (10, 320));
}

#[test]
fn an_unknown_toml_key_is_an_error_naming_it() {
    let tmp = TempDir::new("config");
    let file = tmp.write("kindercam.toml", "quality = 80\nqualty = 5\n");
    let err = error_of(&["--config", path_str(&file)], &[]);
    assert!(err.contains("qualty"), "names the key: {err}");
    assert!(err.contains(path_str(&file)), "names the file: {err}");
}

#[test]
fn a_missing_or_malformed_file_is_an_error() {
    let tmp = TempDir::new("config");
    let missing = tmp.path().join("nope.toml");
    let err = error_of(&["--config", path_str(&missing)], &[]);
    assert!(err.contains(path_str(&missing)), "{err}");
    let broken = tmp.write("broken.toml", "quality = \"high\"\n");
    let err = error_of(&["--config", path_str(&broken)], &[]);
    assert!(
        err.contains("quality") && err.contains(path_str(&broken)),
        "{err}"
    );
}

/// Flags, environment, and the parts the error message must contain.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn bad_values_are_refused_saying_what_and_where() {
    let cases: &[Case] = &[
        (&["--quality", "0"], &[], &["--quality", "1 and 100"]),
        (&["--quality", "101"], &[], &["--quality", "1 and 100"]),
        (&["--quality", "high"], &[], &["--quality", "high"]),
        (
            &[],
            &[("KINDERCAM_QUALITY", "0")],
            &["KINDERCAM_QUALITY", "1 and 100"],
        ),
        (&["--interval-ms", "0"], &[], &["--interval-ms"]),
        (
            &[],
            &[("KINDERCAM_INTERVAL_MS", "0")],
            &["KINDERCAM_INTERVAL_MS"],
        ),
        (
            &["--source", "webcam"],
            &[],
            &["--source", "unknown source", "webcam"],
        ),
        (
            &[],
            &[("KINDERCAM_SOURCE", "nope")],
            &["KINDERCAM_SOURCE", "nope"],
        ),
        (
            &["--http-listen", "nonsense"],
            &[],
            &["--http-listen", "nonsense"],
        ),
        (
            &["--ws-listen", "127.0.0.1"],
            &[],
            &["--ws-listen", "127.0.0.1"],
        ),
        (
            &[],
            &[("KINDERCAM_WS_LISTEN", "localhost:99999")],
            &["KINDERCAM_WS_LISTEN"],
        ),
    ];
    for (args, env, parts) in cases {
        let err = error_of(args, env);
        for part in *parts {
            assert!(
                err.contains(part),
                "{args:?} {env:?}: {err:?} should mention {part:?}"
            );
        }
    }
}

#[test]
fn bad_values_in_the_file_name_the_key_and_the_file() {
    let tmp = TempDir::new("config");
    let cases = [
        ("quality = 0", "quality in"),
        ("quality = 101", "quality in"),
        ("interval_ms = 0", "interval_ms in"),
        ("source = \"webcam\"", "source in"),
        ("http_listen = \"1.2.3.4\"", "http_listen in"),
    ];
    for (i, (line, origin)) in cases.iter().enumerate() {
        let file = tmp.write(&format!("bad{i}.toml"), line);
        let err = error_of(&["--config", path_str(&file)], &[]);
        let expected = format!("{origin} {}", file.display());
        assert!(
            err.contains(&expected),
            "{line}: {err:?} should say {expected:?}"
        );
    }
    // A flag overriding the bad file value wins, so the file's value is never used.
    let file = tmp.write("override.toml", "quality = 0");
    let c = load(&["--config", path_str(&file), "--quality", "50"], &[]).unwrap();
    assert_eq!(c.capture.quality, 50);
}

#[test]
fn auth_off_is_refused_unless_both_listeners_are_loopback() {
    let err = error_of(&["--auth", "off"], &[]);
    assert!(err.contains("loopback"), "{err}");
    let err = error_of(
        &[
            "--auth",
            "off",
            "--http-listen",
            "127.0.0.1:0",
            "--ws-listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert!(err.contains("loopback") && err.contains("0.0.0.0"), "{err}");
    let ok = load(
        &[
            "--auth",
            "off",
            "--http-listen",
            "127.0.0.1:0",
            "--ws-listen",
            "[::1]:0",
        ],
        &[],
    )
    .expect("loopback-only auth off is allowed");
    assert!(!ok.access.auth);
}
