//! The push section: which camera streams this daemon sends out to a relay
//! (`--push-to [NAME=]URL`, `push_to` at the top level or in a `[[camera]]`
//! table), with which token (`--push-token`) and which extra CA
//! (`--push-ca`). Its flags, variables, file keys and checks sit together so
//! that a key is added in one place; `crate::push` runs what it resolves.
//!
//! Several URLs for one stream are a failover list, tried in the order given.
//! A list from a higher layer replaces the lower layers' list whole, as the
//! cameras' `--source` does.

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

use super::capture::{split_named, Camera};
use super::layers::{non_empty_path, Layers};
use crate::hub::CAMERA;

/// Where and how the camera streams are pushed out.
#[derive(Debug, Clone, Default)]
pub struct PushConfig {
    /// One pusher per stream, in the order the streams were first named.
    pub pushes: Vec<Push>,
    /// Sent as `Authorization: Bearer TOKEN` on every handshake.
    pub token: Option<String>,
    /// A PEM file of extra CA certificates trusted for `wss://` besides the
    /// system's (a private CA such as Caddy's `tls internal`).
    pub ca: Option<PathBuf>,
}

/// One local stream and the relays it is pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub stream: String,
    /// Never empty; the first is tried first, the next on failure (round robin).
    pub urls: Vec<PushUrl>,
}

/// A relay's upload address, `ws://` or `wss://`, checked at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    text: String,
    /// `wss://`: TLS with the system's roots and `--push-ca`.
    pub secure: bool,
    /// The host as written (a name or an address; IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl PushUrl {
    /// Parses `ws://HOST[:PORT]/PATH` or `wss://...`.
    pub fn parse(text: &str) -> Result<PushUrl, String> {
        use tokio_tungstenite::tungstenite::http::Uri;
        let text = text.trim();
        let secure = if text.starts_with("wss://") {
            true
        } else if text.starts_with("ws://") {
            false
        } else {
            return Err(format!(
                "{text:?} is not a WebSocket URL: use ws://HOST/upload/NAME or wss://HOST/upload/NAME"
            ));
        };
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        if uri.path().len() <= 1 {
            return Err(format!(
                "{text:?} has no path: the relay's upload address ends in /upload/NAME"
            ));
        }
        Ok(PushUrl {
            text: text.to_owned(),
            secure,
            host,
            port,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PushUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `[NAME=]URL`: without a name it is the `camera` stream's.
pub fn split_push(text: &str) -> Result<(String, PushUrl), String> {
    let text = text.trim();
    if text.starts_with("ws://") || text.starts_with("wss://") {
        return Ok((CAMERA.to_owned(), PushUrl::parse(text)?));
    }
    match text.split_once('=') {
        Some((name, url)) => {
            let name = name.trim();
            if !crate::hub::valid_stream_name(name) {
                return Err(format!(
                    "{name:?} is not a stream name (1-32 characters of a-z, 0-9, _ and -)"
                ));
            }
            Ok((name.to_owned(), PushUrl::parse(url)?))
        }
        None => Err(PushUrl::parse(text).unwrap_err()),
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct PushFlags {
    /// Push a camera stream out to a relay's /upload/NAME (ws:// or wss://), through NAT:
    /// only outbound connections. NAME is the local stream (default `camera`); repeat for
    /// more streams, or for the same one to give failover relays, tried in order
    /// [env: KINDERCAM_PUSH_TO, space- or comma-separated]
    #[arg(long = "push-to", value_name = "[NAME=]URL")]
    push_to: Vec<String>,
    /// The relay's link token with scope `push`, sent as `Authorization: Bearer`
    /// [env: KINDERCAM_PUSH_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    push_token: Option<String>,
    /// PEM file of a private CA to trust for wss:// besides the system's, e.g. Caddy's
    /// `tls internal` root [env: KINDERCAM_PUSH_CA]
    #[arg(long, value_name = "PEM")]
    push_ca: Option<String>,
}

/// One URL or a failover list, as the file may give `push_to`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    fn into_vec(self) -> Vec<String> {
        match self {
            Urls::One(url) => vec![url],
            Urls::Many(urls) => urls,
        }
    }
}

/// The section's keys in the TOML file (`camera` and `source` are the capture
/// section's too: read here only for their stream names and `push_to`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct PushFile {
    push_to: Option<Urls>,
    push_token: Option<String>,
    push_ca: Option<PathBuf>,
    source: Option<String>,
    camera: Option<Vec<PushCamera>>,
}

/// A `[[camera]]` table as the push section reads it: its other keys are the
/// capture section's, which checks them.
#[derive(Debug, Deserialize)]
struct PushCamera {
    name: String,
    push_to: Option<Urls>,
}

impl PushConfig {
    pub(super) fn resolve(
        flags: &PushFlags,
        layers: &Layers,
        cameras: &[Camera],
        cameras_from_file: bool,
    ) -> anyhow::Result<PushConfig> {
        let file: PushFile = layers.file()?;
        let token = layers.resolve(
            "push_token",
            &flags.push_token,
            file.push_token,
            None,
            |t: String| token(t).map(Some),
        )?;
        let ca = layers.resolve(
            "push_ca",
            &flags.push_ca,
            file.push_ca,
            None,
            |p: PathBuf| non_empty_path(p).map(Some),
        )?;
        let configured = |name: &str| cameras.iter().any(|c| c.name == name);
        let streams = || {
            cameras
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // (stream, url text, origin) in the order given.
        let mut given: Vec<(String, PushUrl, String)> = Vec::new();
        let env_list = (layers.env)("KINDERCAM_PUSH_TO").filter(|v| !v.trim().is_empty());
        if !flags.push_to.is_empty() || env_list.is_some() {
            let (texts, origin): (Vec<String>, &str) = if !flags.push_to.is_empty() {
                (flags.push_to.clone(), "--push-to")
            } else {
                let list = env_list.unwrap_or_default();
                (
                    list.split([',', ' ', '\n', '\t'])
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    "KINDERCAM_PUSH_TO",
                )
            };
            for text in texts {
                let (stream, url) = split_push(&text)
                    .map_err(|why| anyhow::anyhow!("invalid {origin} {text:?}: {why}"))?;
                if !configured(&stream) {
                    bail!(
                        "invalid {origin} {text:?}: no camera feeds the stream {stream:?} \
                         (the streams are {}); name one as NAME=URL",
                        streams()
                    );
                }
                given.push((stream, url, origin.to_owned()));
            }
        } else {
            let from_file = cameras_from_file;
            if let Some(urls) = file.push_to {
                let origin = layers.file_origin("push_to");
                let main = file
                    .source
                    .as_deref()
                    .and_then(|s| split_named(s).0)
                    .unwrap_or(CAMERA)
                    .to_owned();
                if !configured(&main) {
                    bail!(
                        "invalid {origin}: the top-level push_to is for the stream {main:?}, \
                         which no camera feeds (the streams are {}); put push_to in that \
                         camera's [[camera]] table",
                        streams()
                    );
                }
                for text in urls.into_vec() {
                    let url = PushUrl::parse(&text)
                        .map_err(|why| anyhow::anyhow!("invalid {origin}: {why}"))?;
                    given.push((main.clone(), url, origin.clone()));
                }
            }
            for (i, table) in file.camera.into_iter().flatten().enumerate() {
                let Some(urls) = table.push_to else { continue };
                let origin = format!(
                    "push_to of [[camera]] #{} ({:?}) in {}",
                    i + 1,
                    table.name,
                    layers.file_origin("").trim_start()
                );
                if !configured(&table.name) {
                    if from_file {
                        bail!("invalid {origin}: no camera feeds that stream");
                    }
                    tracing::warn!(
                        stream = %table.name,
                        "the config file pushes this stream, but --source or KINDERCAM_SOURCE \
                         replaced the file's cameras and none has that name: it is not pushed"
                    );
                    continue;
                }
                for text in urls.into_vec() {
                    let url = PushUrl::parse(&text)
                        .map_err(|why| anyhow::anyhow!("invalid {origin}: {why}"))?;
                    given.push((table.name.clone(), url, origin.clone()));
                }
            }
        }
        let mut pushes: Vec<Push> = Vec::new();
        for (stream, url, origin) in given {
            let push = match pushes.iter_mut().position(|p| p.stream == stream) {
                Some(i) => &mut pushes[i],
                None => {
                    pushes.push(Push {
                        stream: stream.clone(),
                        urls: Vec::new(),
                    });
                    pushes.last_mut().expect("just pushed")
                }
            };
            if push.urls.contains(&url) {
                bail!("invalid {origin}: {url} is given twice for the stream {stream:?}");
            }
            push.urls.push(url);
        }
        if pushes.is_empty() && token.is_some() {
            tracing::warn!("a push token is set but no stream is pushed (no --push-to)");
        }
        Ok(PushConfig { pushes, token, ca })
    }
}

/// A token as a header can carry it: printable, no spaces.
fn token(t: String) -> Result<String, String> {
    let t = t.trim().to_owned();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "must be the token as the relay showed it: no spaces or other characters".into(),
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{load, TomlFile};
    use super::*;

    fn urls(c: &super::super::Config) -> Vec<(String, Vec<String>)> {
        c.push
            .pushes
            .iter()
            .map(|p| {
                (
                    p.stream.clone(),
                    p.urls.iter().map(|u| u.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn urls_and_names_are_parsed() {
        let u = PushUrl::parse("wss://cam.example.org/upload/aula-1").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port),
            (true, "cam.example.org", 443)
        );
        let u = PushUrl::parse("ws://127.0.0.1:8081/upload/aula-1?demand=1").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port),
            (false, "127.0.0.1", 8081)
        );
        let u = PushUrl::parse("ws://[::1]:9/upload/x").unwrap();
        assert_eq!(u.host, "::1");
        for bad in [
            "https://cam.example.org/upload/aula-1",
            "cam.example.org/upload/aula-1",
            "wss:///upload/x",
            "wss://cam.example.org",
            "wss://cam.example.org/",
        ] {
            assert!(PushUrl::parse(bad).is_err(), "{bad} is refused");
        }
        assert_eq!(
            split_push("wss://a/upload/x?demand=1").unwrap().0,
            "camera",
            "an unnamed URL, even with = in its query, is the camera's"
        );
        let (name, url) = split_push("hall=wss://a/upload/hall").unwrap();
        assert_eq!(
            (name.as_str(), url.as_str()),
            ("hall", "wss://a/upload/hall")
        );
        let e = split_push("Hall=wss://a/upload/hall").unwrap_err();
        assert!(e.contains("not a stream name"), "{e}");
        let e = split_push("hall=http://a/upload/hall").unwrap_err();
        assert!(e.contains("not a WebSocket URL"), "{e}");
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let file = TomlFile::new(
            "push",
            "source = \"test-pattern\"\n\
             push_to = [\"wss://a/upload/aula-1\", \"wss://b/upload/aula-1\"]\n\
             push_token = \"from-file\"\n\
             [[camera]]\nname = \"hall\"\nsource = \"test-pattern\"\npush_to = \"wss://a/upload/hall\"\n",
        );
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(
            urls(&c),
            [
                (
                    "camera".to_owned(),
                    vec![
                        "wss://a/upload/aula-1".to_owned(),
                        "wss://b/upload/aula-1".to_owned()
                    ]
                ),
                ("hall".to_owned(), vec!["wss://a/upload/hall".to_owned()])
            ]
        );
        assert_eq!(c.push.token.as_deref(), Some("from-file"));

        let c = load(
            &["--config", file.path()],
            &[
                (
                    "KINDERCAM_PUSH_TO",
                    "ws://env/upload/x, hall=ws://env/upload/h",
                ),
                ("KINDERCAM_PUSH_TOKEN", "from-env"),
            ],
        )
        .unwrap();
        assert_eq!(
            urls(&c),
            [
                ("camera".to_owned(), vec!["ws://env/upload/x".to_owned()]),
                ("hall".to_owned(), vec!["ws://env/upload/h".to_owned()])
            ],
            "the environment's list replaces the file's whole"
        );
        assert_eq!(c.push.token.as_deref(), Some("from-env"));

        let c = load(
            &[
                "--config",
                file.path(),
                "--push-to",
                "hall=wss://one/upload/h",
                "--push-to",
                "hall=wss://two/upload/h",
                "--push-token",
                "from-flag",
                "--push-ca",
                "/etc/kindercam/caddy-root.pem",
            ],
            &[("KINDERCAM_PUSH_TO", "ws://env/upload/x")],
        )
        .unwrap();
        assert_eq!(
            urls(&c),
            [(
                "hall".to_owned(),
                vec![
                    "wss://one/upload/h".to_owned(),
                    "wss://two/upload/h".to_owned()
                ]
            )],
            "repeated flags for one stream are its failover list"
        );
        assert_eq!(c.push.token.as_deref(), Some("from-flag"));
        assert_eq!(
            c.push.ca.as_deref(),
            Some(std::path::Path::new("/etc/kindercam/caddy-root.pem"))
        );
        assert!(
            load(&[], &[]).unwrap().push.pushes.is_empty(),
            "no push by default"
        );
    }

    #[test]
    fn bad_urls_and_unknown_streams_are_refused_at_start() {
        let e = load(&["--push-to", "https://relay/upload/x"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--push-to") && e.to_string().contains("ws://"),
            "{e}"
        );
        let e = load(&["--push-to", "patio=wss://relay/upload/patio"], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("no camera feeds the stream \"patio\"")
                && e.to_string().contains("camera"),
            "{e}"
        );
        let e = load(&[], &[("KINDERCAM_PUSH_TO", "relay.example.org")]).unwrap_err();
        assert!(e.to_string().contains("KINDERCAM_PUSH_TO"), "{e}");
        let e = load(
            &[
                "--push-to",
                "wss://relay/upload/x",
                "--push-to",
                "camera=wss://relay/upload/x",
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = load(&["--push-token", "two words"], &[]).unwrap_err();
        assert!(e.to_string().contains("--push-token"), "{e}");

        let file = TomlFile::new("push-bad", "push_to = \"ftp://relay/upload/x\"\n");
        let e = load(&["--config", file.path()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("push_to in {}", file.path())), "{e}");
        file.write("push_to = 5\n");
        assert!(load(&["--config", file.path()], &[]).is_err());
        file.write(
            "[[camera]]\nname = \"hall\"\nsource = \"test-pattern\"\npush_to = [\"wss://a/upload/hall\", \"nope\"]\n",
        );
        let e = load(&["--config", file.path()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[camera]] #1 (\"hall\")"), "{e}");
        file.write("source = \"hall=test-pattern\"\npush_to = \"wss://a/upload/hall\"\n");
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(
            c.push.pushes[0].stream, "hall",
            "the top-level push_to is for the top-level source's stream"
        );
    }
}
