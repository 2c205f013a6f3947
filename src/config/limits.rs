//! The limits section: how much one client, or all of them together, may cost the
//! daemon: connections at once (in all, per address and per login), time to finish a
//! WebSocket handshake, and the largest chat and upload message. Its flags,
//! variables, file keys, defaults and checks sit together so that a key is added
//! in one place.

use std::time::Duration;

use serde::Deserialize;

use super::layers::{in_range, millis, Layers};

/// Caps that keep one client or a crowd from exhausting a small board.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// WebSocket connections at once; more are refused with 503.
    pub max_connections: usize,
    /// WebSocket and HTTP connections at once from one client address; 0 means no cap.
    pub max_connections_per_ip: usize,
    /// WebSocket connections at once of one login (a session, or a code over
    /// Basic auth), across every route.
    pub max_sockets_per_login: usize,
    pub handshake_timeout: Duration,
    pub max_chat_bytes: usize,
    pub max_upload_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 3000,
            max_connections_per_ip: 24,
            max_sockets_per_login: 8,
            handshake_timeout: Duration::from_secs(5),
            max_chat_bytes: 4 * 1024,
            max_upload_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct LimitsFlags {
    /// Most WebSocket connections at once; more are refused with 503
    /// [env: KINDERCAM_MAX_CONNECTIONS] [default: 3000]
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Connections at once from one client address, 0 for no cap (set 0 behind a reverse
    /// proxy) [env: KINDERCAM_MAX_CONNECTIONS_PER_IP] [default: 24]
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<String>,
    /// WebSocket connections at once of one login (a session, or a code over Basic auth),
    /// across video, chat and uploads [env: KINDERCAM_MAX_SOCKETS_PER_LOGIN] [default: 8]
    #[arg(long, value_name = "N")]
    max_sockets_per_login: Option<String>,
    /// Milliseconds a client has to complete the WebSocket handshake
    /// [env: KINDERCAM_HANDSHAKE_TIMEOUT_MS] [default: 5000]
    #[arg(long, value_name = "MS")]
    handshake_timeout_ms: Option<String>,
    /// Largest chat message accepted, in bytes [env: KINDERCAM_MAX_CHAT_BYTES] [default: 4096]
    #[arg(long, value_name = "BYTES")]
    max_chat_bytes: Option<String>,
    /// Largest upload message (a JPEG data URL) accepted, in bytes
    /// [env: KINDERCAM_MAX_UPLOAD_BYTES] [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    max_upload_bytes: Option<String>,
}

/// The section's keys in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct LimitsFile {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_sockets_per_login: Option<usize>,
    handshake_timeout_ms: Option<u64>,
    max_chat_bytes: Option<usize>,
    max_upload_bytes: Option<usize>,
}

impl LimitsConfig {
    pub(super) fn resolve(flags: &LimitsFlags, layers: &Layers) -> anyhow::Result<LimitsConfig> {
        let file: LimitsFile = layers.file()?;
        let d = LimitsConfig::default();
        Ok(LimitsConfig {
            max_connections: layers.resolve(
                "max_connections",
                &flags.max_connections,
                file.max_connections,
                d.max_connections,
                in_range(1, 100_000),
            )?,
            max_connections_per_ip: layers.resolve(
                "max_connections_per_ip",
                &flags.max_connections_per_ip,
                file.max_connections_per_ip,
                d.max_connections_per_ip,
                in_range(0, 100_000),
            )?,
            max_sockets_per_login: layers.resolve(
                "max_sockets_per_login",
                &flags.max_sockets_per_login,
                file.max_sockets_per_login,
                d.max_sockets_per_login,
                in_range(1, 1000),
            )?,
            handshake_timeout: layers.resolve(
                "handshake_timeout_ms",
                &flags.handshake_timeout_ms,
                file.handshake_timeout_ms,
                d.handshake_timeout,
                millis(100, 120_000),
            )?,
            max_chat_bytes: layers.resolve(
                "max_chat_bytes",
                &flags.max_chat_bytes,
                file.max_chat_bytes,
                d.max_chat_bytes,
                in_range(64, 64 * 1024),
            )?,
            max_upload_bytes: layers.resolve(
                "max_upload_bytes",
                &flags.max_upload_bytes,
                file.max_upload_bytes,
                d.max_upload_bytes,
                in_range(1024, 64 * 1024 * 1024),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{load, TomlFile};

    #[test]
    fn limits_resolve_through_every_layer_and_zero_per_ip_means_no_cap() {
        let file = TomlFile::new(
            "limits",
            "max_connections_per_ip = 0\nhandshake_timeout_ms = 250\nmax_chat_bytes = 100\n",
        );
        let c = load(
            &["--config", file.path(), "--max-chat-bytes", "200"],
            &[("KINDERCAM_MAX_CONNECTIONS", "5")],
        )
        .unwrap();
        assert_eq!(c.limits.max_connections, 5, "environment");
        assert_eq!(c.limits.max_connections_per_ip, 0, "file: no cap");
        assert_eq!(c.limits.handshake_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.max_chat_bytes, 200, "the flag beats the file");
        assert_eq!(c.limits.max_upload_bytes, 4 * 1024 * 1024, "default");
        assert_eq!(c.limits.max_sockets_per_login, 8, "default");
    }

    #[test]
    fn sockets_per_login_resolve_through_every_layer_and_are_checked() {
        let file = TomlFile::new("sockets", "max_sockets_per_login = 12\n");
        let from_file = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(from_file.limits.max_sockets_per_login, 12);
        let from_env = load(
            &["--config", file.path()],
            &[("KINDERCAM_MAX_SOCKETS_PER_LOGIN", "5")],
        )
        .unwrap();
        assert_eq!(
            from_env.limits.max_sockets_per_login, 5,
            "env beats the file"
        );
        let from_flag = load(
            &["--max-sockets-per-login", "3"],
            &[("KINDERCAM_MAX_SOCKETS_PER_LOGIN", "5")],
        )
        .unwrap();
        assert_eq!(
            from_flag.limits.max_sockets_per_login, 3,
            "the flag beats env"
        );
        let e = load(&["--max-sockets-per-login", "0"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--max-sockets-per-login")
                && e.to_string().contains("1 and 1000"),
            "{e}"
        );
    }

    #[test]
    fn limits_out_of_range_are_refused_with_their_origin() {
        let e = load(&["--max-connections", "0"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--max-connections") && e.to_string().contains("1 and 100000"),
            "{e}"
        );
        let e = load(&[], &[("KINDERCAM_HANDSHAKE_TIMEOUT_MS", "50")]).unwrap_err();
        assert!(
            e.to_string().contains("KINDERCAM_HANDSHAKE_TIMEOUT_MS"),
            "{e}"
        );
        let file = TomlFile::new("limits-bad", "max_upload_bytes = 10\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("max_upload_bytes in {}", file.path())),
            "{e}"
        );
    }
}
