//! The listen section: where the daemon listens (`http_listen`, `ws_listen`), with
//! which TLS certificate, and where browsers reach the WebSocket server when a
//! reverse proxy stands in between (`ws_public_url`). Its flags, variables, file
//! keys, defaults and checks sit together so that a key is added in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

use super::layers::{non_empty_path, socket_addr, Layers};

/// Where and how the daemon is reached.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub http_listen: SocketAddr,
    pub ws_listen: SocketAddr,
    /// Where browsers reach the WebSocket server when it is not `ws://<page host>:<ws port>`,
    /// e.g. `wss://camera.example.org` behind a reverse proxy.
    pub ws_public_url: Option<String>,
    /// Both or neither (checked at load).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            ws_listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            ws_public_url: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct ListenFlags {
    /// Address for the HTTP pages [env: KINDERCAM_HTTP_LISTEN] [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Address for the WebSocket server [env: KINDERCAM_WS_LISTEN] [default: 0.0.0.0:9000]
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<String>,
    /// Where browsers reach the WebSocket server behind a reverse proxy, e.g.
    /// wss://camera.example.org [env: KINDERCAM_WS_PUBLIC_URL] [default: ws://<page host>:<ws port>]
    #[arg(long, value_name = "URL")]
    ws_public_url: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key serves HTTPS and WSS on both ports
    /// [env: KINDERCAM_TLS_CERT]
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<String>,
    /// TLS private key (PEM) [env: KINDERCAM_TLS_KEY]
    #[arg(long, value_name = "PEM")]
    tls_key: Option<String>,
}

/// The section's keys in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListenFile {
    http_listen: Option<String>,
    ws_listen: Option<String>,
    ws_public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl ListenConfig {
    pub(super) fn resolve(flags: &ListenFlags, layers: &Layers) -> anyhow::Result<ListenConfig> {
        let file: ListenFile = layers.file()?;
        let d = ListenConfig::default();
        let config = ListenConfig {
            http_listen: layers.resolve(
                "http_listen",
                &flags.http_listen,
                file.http_listen,
                d.http_listen,
                socket_addr,
            )?,
            ws_listen: layers.resolve(
                "ws_listen",
                &flags.ws_listen,
                file.ws_listen,
                d.ws_listen,
                socket_addr,
            )?,
            ws_public_url: layers.resolve(
                "ws_public_url",
                &flags.ws_public_url,
                file.ws_public_url,
                d.ws_public_url,
                ws_url,
            )?,
            tls_cert: layers.resolve(
                "tls_cert",
                &flags.tls_cert,
                file.tls_cert,
                d.tls_cert,
                |p: PathBuf| non_empty_path(p).map(Some),
            )?,
            tls_key: layers.resolve(
                "tls_key",
                &flags.tls_key,
                file.tls_key,
                d.tls_key,
                |p: PathBuf| non_empty_path(p).map(Some),
            )?,
        };
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            bail!("--tls-cert and --tls-key must be given together");
        }
        Ok(config)
    }
}

/// `ws://` or `wss://`, a host, and optionally a path prefix; no query or fragment.
fn ws_url(v: String) -> Result<Option<String>, String> {
    let v = v.trim().trim_end_matches('/').to_owned();
    let rest = v
        .strip_prefix("wss://")
        .or_else(|| v.strip_prefix("ws://"))
        .ok_or("must start with ws:// or wss://")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || rest.contains(['?', '#', ' ', '@']) {
        return Err("must be like wss://camera.example.org or wss://example.org/kindercam".into());
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{load, TomlFile};

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        let e = load(&["--tls-cert", "/etc/ssl/cam.pem"], &[]).unwrap_err();
        assert!(e.to_string().contains("--tls-cert and --tls-key"), "{e}");
        let e = load(&[], &[("KINDERCAM_TLS_KEY", "/etc/ssl/cam.key")]).unwrap_err();
        assert!(e.to_string().contains("given together"), "{e}");
        let c = load(
            &[
                "--tls-cert",
                "/etc/ssl/cam.pem",
                "--tls-key",
                "/etc/ssl/cam.key",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.listen.tls_key.as_deref(),
            Some(std::path::Path::new("/etc/ssl/cam.key"))
        );
    }

    #[test]
    fn the_public_websocket_url_must_be_a_bare_ws_or_wss_url() {
        let c = load(&["--ws-public-url", " wss://camera.example.org/kc/ "], &[]).unwrap();
        assert_eq!(
            c.listen.ws_public_url.as_deref(),
            Some("wss://camera.example.org/kc"),
            "trimmed, without the trailing slash"
        );
        let e = load(&["--ws-public-url", "https://camera.example.org"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--ws-public-url") && e.to_string().contains("ws://"),
            "{e}"
        );
        let file = TomlFile::new("listen", "ws_public_url = \"wss://example.org/?a=b\"\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("ws_public_url in {}", file.path())),
            "{e}"
        );
    }
}
