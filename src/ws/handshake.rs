//! The WebSocket opening handshake, done here rather than inside tungstenite so
//! that the route is known before any WebSocket state exists: each route then gets
//! its own message limits, and refusals (unknown path, full server, bad request)
//! are plain HTTP answers sent before upgrading.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::auth::Denied;
use crate::hub::{self, CAMERA};
use crate::metrics::Refused;
use crate::request_head::{self, HeadError};

/// Request heads larger than this are refused with 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 48;

/// Where an upgraded connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/chat` (the room of `camera`) or `/chat/NAME`.
    Chat { room: String },
    /// `?format=binary`: bare JPEGs instead of data URLs. `?meta=1`: each frame
    /// is preceded by `{"type":"frame","ts":...}`, its capture time (the
    /// kindercam page asks for it; the prototype's pages, which put every text
    /// message into `img.src`, do not). `?gate=1`: staff are told the room's
    /// gate (`{"type":"gate",...}`) at once and on every change. `?size=small`:
    /// frames at half the width and height, for a weak link.
    Video {
        stream: String,
        binary: bool,
        meta: bool,
        gate: bool,
        small: bool,
    },
    /// `?gate=1` as for `Video`: the broadcaster page shows the pause too.
    /// `?demand=1`: the uploader is told how many want the stream,
    /// `{"type":"demand","viewers":N}`, at once and on every change (a push
    /// token's uploads are told without asking: they are kindercam pushers).
    Upload {
        stream: String,
        gate: bool,
        demand: bool,
    },
    /// Any path ending in `/serverCam.php`: the PHP prototype's video relay, on
    /// the `--prototype-stream`. Every socket watches it; one that sends a
    /// picture feeds it. (Its `/server.php` chat is [`Route::Chat`] of `camera`.)
    Prototype,
}

impl Route {
    /// Maps a request target (path and query) to a route; `None` means 404.
    pub fn parse(target: &str) -> Option<Route> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let binary = query.split('&').any(|kv| kv == "format=binary");
        let meta = query.split('&').any(|kv| kv == "meta=1");
        let gate = query.split('&').any(|kv| kv == "gate=1");
        let small = query.split('&').any(|kv| kv == "size=small");
        let demand = query.split('&').any(|kv| kv == "demand=1");
        let named = |rest: &str| hub::valid_stream_name(rest).then(|| rest.to_owned());
        // The prototype's pages, kept working unchanged: they were served from
        // any folder of the old Apache, so only the file name counts.
        if path.ends_with("/server.php") {
            return Some(Route::Chat {
                room: CAMERA.to_owned(),
            });
        }
        if path.ends_with("/serverCam.php") {
            return Some(Route::Prototype);
        }
        match path {
            "/chat" => Some(Route::Chat {
                room: CAMERA.to_owned(),
            }),
            "/video" => Some(Route::Video {
                stream: CAMERA.to_owned(),
                binary,
                meta,
                gate,
                small,
            }),
            _ => {
                if let Some(rest) = path.strip_prefix("/chat/") {
                    named(rest).map(|room| Route::Chat { room })
                } else if let Some(rest) = path.strip_prefix("/video/") {
                    named(rest).map(|stream| Route::Video {
                        stream,
                        binary,
                        meta,
                        gate,
                        small,
                    })
                } else if let Some(rest) = path.strip_prefix("/upload/") {
                    named(rest).map(|stream| Route::Upload {
                        stream,
                        gate,
                        demand,
                    })
                } else {
                    None
                }
            }
        }
    }
}

/// A parsed upgrade request.
#[derive(Debug)]
pub struct Upgrade {
    accept_key: String,
    /// Bytes the client sent after the head; they belong to the WebSocket stream.
    pub leftover: Vec<u8>,
    /// The route and what access control needs from the request.
    pub request: Credentials,
}

/// The parts of a request access control looks at, owned so that the check can
/// run on a blocking thread.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub route: Route,
    pub cookie: Option<String>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    pub host: Option<String>,
    /// The request target's query string, without the `?` (a `token=` is read
    /// from it where a route takes link tokens in the URL).
    pub query: String,
}

/// Why a handshake was refused; each maps to one HTTP status.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    /// A viewer asked for a stream that nothing feeds (viewers never create one).
    NoStream,
    BadRequest(&'static str),
    HeadTooLarge,
    WrongVersion,
    Busy,
    /// Access control's answer: who is asking is unknown or may not do this.
    Denied(crate::auth::Denied),
    /// The login holds as many sockets as it may.
    TooManySockets(crate::auth::sockets::TooManySockets),
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::NotFound | Refusal::NoStream => 404,
            Refusal::BadRequest(_) => 400,
            Refusal::HeadTooLarge => 431,
            Refusal::WrongVersion => 426,
            Refusal::Busy => 503,
            Refusal::Denied(denied) => denied.status(),
            Refusal::TooManySockets(_) => 429,
        }
    }

    fn body(&self) -> std::borrow::Cow<'static, str> {
        let text = match self {
            Refusal::NotFound => {
                "no such WebSocket endpoint: use /chat, /chat/NAME, /video, /video/NAME, /upload/NAME, or the prototype's .../server.php and .../serverCam.php\n"
            }
            Refusal::NoStream => {
                "no such stream: watch a camera or a room that is being broadcast\n"
            }
            Refusal::BadRequest(why) => why,
            Refusal::HeadTooLarge => "request head too large\n",
            Refusal::WrongVersion => "only WebSocket version 13 is supported\n",
            Refusal::Busy => "too many connections; try again shortly\n",
            Refusal::Denied(denied) => return format!("{denied}\n").into(),
            Refusal::TooManySockets(refused) => return format!("{refused}\n").into(),
        };
        text.into()
    }

    /// What `/metrics` counts this refusal as.
    pub fn counted_as(&self) -> Refused {
        match self {
            Refusal::NotFound => Refused::NotFound,
            Refusal::NoStream => Refused::NoStream,
            Refusal::BadRequest(_) => Refused::BadRequest,
            Refusal::HeadTooLarge => Refused::HeadTooLarge,
            Refusal::WrongVersion => Refused::WrongVersion,
            Refusal::Busy | Refusal::Denied(Denied::Busy) => Refused::Busy,
            Refusal::Denied(Denied::Unauthorized) => Refused::Unauthorized,
            Refusal::Denied(Denied::Forbidden(_)) => Refused::Forbidden,
            Refusal::TooManySockets(_) => Refused::TooManySockets,
        }
    }

    /// Writes the HTTP refusal; errors are ignored because the peer is being dropped anyway.
    pub async fn send<S: AsyncWrite + Unpin>(&self, stream: &mut S) {
        let extra = match self {
            Refusal::WrongVersion => "Sec-WebSocket-Version: 13\r\n",
            Refusal::Busy | Refusal::Denied(Denied::Busy) | Refusal::TooManySockets(_) => {
                "Retry-After: 5\r\n"
            }
            Refusal::Denied(Denied::Unauthorized) => {
                "WWW-Authenticate: Basic realm=\"kindercam\", charset=\"UTF-8\"\r\n"
            }
            _ => "",
        };
        request_head::reply(stream, self.status(), extra, &self.body()).await;
    }
}

/// Reads the request head, at most `MAX_HEAD_BYTES`. Time limits are the caller's.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Upgrade, Refusal> {
    let head = request_head::read(stream, MAX_HEAD_BYTES)
        .await
        .map_err(|e| match e {
            HeadError::Closed => Refusal::BadRequest("connection closed during handshake\n"),
            HeadError::TooLarge => Refusal::HeadTooLarge,
        })?;
    let mut upgrade = parse_head(head.head())?;
    upgrade.leftover = head.rest().to_vec();
    Ok(upgrade)
}

/// Parses a complete request head (public for the fuzzer).
pub fn parse_head(head: &[u8]) -> Result<Upgrade, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        _ => return Err(Refusal::BadRequest("malformed HTTP request\n")),
    }
    if request.method != Some("GET") {
        return Err(Refusal::BadRequest("a WebSocket handshake must be a GET\n"));
    }
    let target = request.path.unwrap_or("");
    let route = Route::parse(target).ok_or(Refusal::NotFound)?;
    let query = target.split_once('?').map_or("", |(_, q)| q).to_owned();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refusal::BadRequest(
            "this port only speaks WebSocket; the pages are on the HTTP port\n",
        ));
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(Refusal::WrongVersion);
    }
    let key = header("sec-websocket-key")
        .filter(|k| !k.is_empty())
        .ok_or(Refusal::BadRequest("missing Sec-WebSocket-Key\n"))?;
    let owned = |name: &str| header(name).map(str::to_owned);
    Ok(Upgrade {
        accept_key: derive_accept_key(key.as_bytes()),
        leftover: Vec::new(),
        request: Credentials {
            route,
            cookie: owned("cookie"),
            authorization: owned("authorization"),
            origin: owned("origin"),
            host: owned("host"),
            query,
        },
    })
}

impl Upgrade {
    /// Completes the handshake with `101 Switching Protocols`.
    pub async fn accept<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            self.accept_key
        );
        tokio::time::timeout(timeout, stream.write_all(response.as_bytes()))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake write timed out")
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path() {
        assert_eq!(
            Route::parse("/chat"),
            Some(Route::Chat {
                room: "camera".into()
            })
        );
        assert_eq!(
            Route::parse("/chat/aula-2"),
            Some(Route::Chat {
                room: "aula-2".into()
            })
        );
        assert_eq!(Route::parse("/chat/Bad Name"), None);
        assert_eq!(
            Route::parse("/video"),
            Some(Route::Video {
                stream: "camera".into(),
                binary: false,
                meta: false,
                gate: false,
                small: false,
            })
        );
        assert_eq!(
            Route::parse("/video/room-2?format=binary"),
            Some(Route::Video {
                stream: "room-2".into(),
                binary: true,
                meta: false,
                gate: false,
                small: false,
            })
        );
        assert_eq!(
            Route::parse("/video/room-2?format=binary&meta=1&gate=1&size=small"),
            Some(Route::Video {
                stream: "room-2".into(),
                binary: true,
                meta: true,
                gate: true,
                small: true,
            })
        );
        assert_eq!(
            Route::parse("/upload/x"),
            Some(Route::Upload {
                stream: "x".into(),
                gate: false,
                demand: false,
            })
        );
        assert_eq!(
            Route::parse("/upload/x?gate=1&demand=1"),
            Some(Route::Upload {
                stream: "x".into(),
                gate: true,
                demand: true,
            })
        );
        assert_eq!(Route::parse("/upload/"), None);
        assert_eq!(Route::parse("/upload/UPPER"), None);
        assert_eq!(Route::parse("/video/../etc"), None);
        assert_eq!(Route::parse("/"), None);
    }

    #[test]
    fn the_prototypes_php_paths_are_its_chat_and_its_relay() {
        let chat = Some(Route::Chat {
            room: "camera".into(),
        });
        for path in [
            "/chat/server.php",
            "/server.php",
            "/kinder/chat/server.php?x=1",
        ] {
            assert_eq!(Route::parse(path), chat, "{path}");
        }
        for path in [
            "/chat/serverCam.php",
            "/serverCam.php",
            "/a/b/serverCam.php?v=2",
        ] {
            assert_eq!(Route::parse(path), Some(Route::Prototype), "{path}");
        }
        for path in [
            "/chat/server.php/x",
            "/chat/server.phpx",
            "/servercam.php",
            "/chat/Server.php",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn accepts_a_real_upgrade_and_computes_rfc_key() {
        let head = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let up = parse_head(head).unwrap();
        // The example from RFC 6455 section 1.3.
        assert_eq!(up.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refuses_plain_http_and_old_versions() {
        let plain = b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(parse_head(plain), Err(Refusal::BadRequest(_))));
        let v8 = b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Version: 8\r\n\r\n";
        assert_eq!(parse_head(v8).unwrap_err(), Refusal::WrongVersion);
        let post = b"POST /chat HTTP/1.1\r\n\r\n";
        assert!(matches!(parse_head(post), Err(Refusal::BadRequest(_))));
    }
}
