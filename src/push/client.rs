//! The pusher's way out: a WebSocket client connection to a relay's
//! `/upload/NAME`, over TCP, with rustls for `wss://` (the system's root
//! certificates plus `--push-ca`), the push token as `Authorization: Bearer`.
//!
//! Each step has its own time limit, and a failure says which step failed in
//! words an installer can act on ([`Failure`]): the name did not resolve, the
//! relay refused the connection, its certificate is from an unknown CA, it
//! refused the token (401) or the stream (403), or it closed the session and
//! why.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use crate::config::{PushConfig, PushUrl};

/// How long the TCP connection may take (each address of the name).
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// How long the TLS and WebSocket handshakes may take together.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A byte stream to a relay, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open WebSocket to a relay.
pub type Link = WebSocketStream<Box<dyn Io>>;

/// Why an attempt or a session failed, as one line of the log.
#[derive(Debug)]
pub enum Failure {
    /// The relay's name did not resolve.
    Dns {
        host: String,
        error: String,
    },
    /// Nothing listens there (or a firewall said no).
    Refused {
        addr: String,
    },
    Connect {
        addr: String,
        error: String,
    },
    Timeout {
        what: &'static str,
    },
    /// The relay's certificate is not signed by a CA this Pi trusts.
    UnknownCa {
        detail: String,
    },
    Tls {
        detail: String,
    },
    /// The relay answered the handshake with an HTTP status.
    Http {
        status: u16,
        reason: String,
    },
    Handshake {
        detail: String,
    },
    /// The relay closed the session, with its close code and reason.
    Closed {
        code: u16,
        reason: String,
    },
    /// The connection broke.
    Lost {
        detail: String,
    },
    /// Nothing heard from the relay for too long.
    Silent {
        secs: u64,
    },
}

impl Failure {
    /// A short label for `/stats.json` and the tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Dns { .. } => "dns",
            Failure::Refused { .. } => "refused",
            Failure::Connect { .. } => "connect",
            Failure::Timeout { .. } => "timeout",
            Failure::UnknownCa { .. } => "unknown_ca",
            Failure::Tls { .. } => "tls",
            Failure::Http { status: 401, .. } => "unauthorized",
            Failure::Http { status: 403, .. } => "forbidden",
            Failure::Http { .. } => "http",
            Failure::Handshake { .. } => "handshake",
            Failure::Closed { .. } => "closed",
            Failure::Lost { .. } => "lost",
            Failure::Silent { .. } => "silent",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Dns { host, error } => write!(f, "DNS: cannot resolve {host}: {error}"),
            Failure::Refused { addr } => {
                write!(f, "connection refused by {addr}: is the relay running?")
            }
            Failure::Connect { addr, error } => write!(f, "cannot connect to {addr}: {error}"),
            Failure::Timeout { what } => write!(f, "timed out: {what}"),
            Failure::UnknownCa { detail } => write!(
                f,
                "TLS: the relay's certificate is from an unknown CA ({detail}); for a private \
                 CA such as Caddy's `tls internal`, give its root with --push-ca"
            ),
            Failure::Tls { detail } => write!(f, "TLS: {detail}"),
            Failure::Http { status: 401, .. } => write!(
                f,
                "HTTP 401: the relay refused the push token (wrong, or revoked): make a new one \
                 on the relay (POST /api/tokens with scope push) and set --push-token"
            ),
            Failure::Http { status: 403, .. } => write!(
                f,
                "HTTP 403: the push token does not open this stream on the relay: check the \
                 URL's /upload/NAME against the token's rooms"
            ),
            Failure::Http { status, reason } => write!(f, "HTTP {status} from the relay{reason}"),
            Failure::Handshake { detail } => write!(f, "WebSocket handshake failed: {detail}"),
            Failure::Closed { code, reason } if reason.is_empty() => {
                write!(f, "closed by the relay ({code})")
            }
            Failure::Closed { code, reason } => {
                write!(f, "closed by the relay ({code}): {reason}")
            }
            Failure::Lost { detail } => write!(f, "connection lost: {detail}"),
            Failure::Silent { secs } => write!(f, "nothing heard from the relay for {secs} s"),
        }
    }
}

impl std::error::Error for Failure {}

/// What every attempt of every pusher shares: TLS trust and the token.
pub struct Dialer {
    /// `None` when no URL is `wss://`.
    tls: Option<TlsConnector>,
    token: Option<HeaderValue>,
}

impl Dialer {
    /// Loads the system's root certificates and `--push-ca` when some URL
    /// needs TLS. A CA file that cannot be read or holds no certificate stops
    /// the start: the pushes would only ever fail.
    pub fn new(config: &PushConfig) -> anyhow::Result<Dialer> {
        let secure = config.pushes.iter().flat_map(|p| &p.urls).any(|u| u.secure);
        let tls = match (secure, &config.ca) {
            (false, None) => None,
            (_, ca) => Some(TlsConnector::from(Arc::new(client_config(ca.as_deref())?))),
        };
        let token = match &config.token {
            Some(token) => Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .context("the push token cannot be sent in a header")?,
            ),
            None => None,
        };
        Ok(Dialer { tls, token })
    }

    /// Opens a WebSocket to `url`, asking the relay for its gate (`gate=1`)
    /// besides the demand a push token is always told.
    pub async fn dial(&self, url: &PushUrl) -> Result<Link, Failure> {
        let tcp = connect(&url.host, url.port).await?;
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            let io: Box<dyn Io> = if url.secure {
                let connector = self.tls.as_ref().ok_or_else(|| Failure::Tls {
                    detail: "no TLS settings (a bug)".into(),
                })?;
                let name = ServerName::try_from(url.host.clone()).map_err(|e| Failure::Tls {
                    detail: format!("{:?} is not a name a certificate can hold: {e}", url.host),
                })?;
                let tls = connector.connect(name, tcp).await.map_err(tls_failure)?;
                Box::new(tls)
            } else {
                Box::new(tcp)
            };
            // `demand=1` in every case: a push token asks for it by itself, but a
            // relay with `--auth off` (on loopback) knows no token and would
            // never say it has viewers.
            let mut request = with_query(&with_query(url.as_str(), "gate=1"), "demand=1")
                .into_client_request()
                .map_err(|e| Failure::Handshake {
                    detail: e.to_string(),
                })?;
            if let Some(token) = &self.token {
                request.headers_mut().insert("Authorization", token.clone());
            }
            let config = WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .max_write_buffer_size(4 * 1024 * 1024)
                // Only the relay's short JSON replies come this way.
                .max_message_size(Some(64 * 1024))
                .max_frame_size(Some(64 * 1024));
            tokio_tungstenite::client_async_with_config(request, io, Some(config))
                .await
                .map(|(ws, _)| ws)
                .map_err(handshake_failure)
        };
        tokio::time::timeout(HANDSHAKE_LIMIT, handshake)
            .await
            .map_err(|_| Failure::Timeout {
                what: "the TLS and WebSocket handshakes",
            })?
    }
}

/// The rustls client settings: ring, the system's roots and the extra CA.
fn client_config(ca: Option<&Path>) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read --push-ca {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("--push-ca {} is not a PEM file", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "--push-ca {} holds no certificate (BEGIN CERTIFICATE)",
                path.display()
            );
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("a certificate in --push-ca {}", path.display()))?;
        }
    } else if added == 0 {
        tracing::warn!(
            "no system root certificates found (install ca-certificates): wss:// pushes \
             will fail unless --push-ca names the relay's CA"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `url` with `extra` added to its query, unless already there.
fn with_query(url: &str, extra: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|kv| kv == extra) => url.to_owned(),
        Some(_) => format!("{url}&{extra}"),
        None => format!("{url}?{extra}"),
    }
}

/// Resolves `host` and connects to its first address that answers.
async fn connect(host: &str, port: u16) -> Result<TcpStream, Failure> {
    let addrs: Vec<_> = tokio::time::timeout(CONNECT_LIMIT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| Failure::Timeout {
            what: "resolving the relay's name",
        })?
        .map_err(|e| Failure::Dns {
            host: host.to_owned(),
            error: e.to_string(),
        })?
        .collect();
    let mut last = Failure::Dns {
        host: host.to_owned(),
        error: "no address".into(),
    };
    for addr in addrs {
        match tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Failure::Refused {
                    addr: addr.to_string(),
                }
            }
            Ok(Err(e)) => {
                last = Failure::Connect {
                    addr: addr.to_string(),
                    error: e.to_string(),
                }
            }
            Err(_) => {
                last = Failure::Timeout {
                    what: "connecting to the relay",
                }
            }
        }
    }
    Err(last)
}

/// A TLS handshake's failure, an unknown CA told apart.
fn tls_failure(e: std::io::Error) -> Failure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            Failure::UnknownCa {
                detail: "unknown issuer".into(),
            }
        }
        Some(other) => Failure::Tls {
            detail: other.to_string(),
        },
        None => Failure::Tls {
            detail: e.to_string(),
        },
    }
}

/// A WebSocket handshake's failure: the relay's HTTP status if it sent one.
fn handshake_failure(e: WsError) -> Failure {
    match e {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim()
                        .chars()
                        .take(120)
                        .collect::<String>()
                })
                .filter(|b| !b.is_empty());
            Failure::Http {
                status: response.status().as_u16(),
                reason: body.map(|b| format!(": {b}")).unwrap_or_default(),
            }
        }
        WsError::Io(e) => Failure::Lost {
            detail: e.to_string(),
        },
        other => Failure::Handshake {
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_is_asked_for_once() {
        assert_eq!(
            with_query("ws://a/upload/x", "gate=1"),
            "ws://a/upload/x?gate=1"
        );
        assert_eq!(
            with_query("ws://a/upload/x?demand=1", "gate=1"),
            "ws://a/upload/x?demand=1&gate=1"
        );
        assert_eq!(
            with_query("ws://a/upload/x?gate=1", "gate=1"),
            "ws://a/upload/x?gate=1"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_told_as_refused_and_a_bad_name_as_dns() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = connect("127.0.0.1", port).await.unwrap_err();
        assert_eq!(e.kind(), "refused", "{e}");
        let e = connect("no-such-relay.invalid", 443).await.unwrap_err();
        assert_eq!(e.kind(), "dns", "{e}");
        assert!(e.to_string().starts_with("DNS: "), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_stops_the_start() {
        let dir = std::env::temp_dir().join(format!("kc-push-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = client_config(Some(&file)).unwrap_err();
        assert!(format!("{e:#}").contains("holds no certificate"), "{e:#}");
        let e = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read --push-ca"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
