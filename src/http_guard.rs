//! The guard in front of tiny_http. tiny_http has no socket timeouts, no header
//! or body limits and a thread per connection, so it never touches the network:
//! this guard owns the HTTP port. It admits connections within the caps, does
//! TLS, reads one request head within a deadline and a size limit (431), checks
//! the body size (413), and only then passes the request, marked with the
//! client's address, to tiny_http over a private Unix socket, one request per
//! connection. A slowloris or a connection flood costs a few bytes of async
//! state each here, not a thread, and ordinary clients keep being served.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio_rustls::TlsAcceptor;

use crate::http::stream_mjpg;
use crate::metrics::{Listener, Metrics, Refused};
use crate::net::{self, Conn, Gate};
use crate::request_head::{self, reply, HeadError};
use crate::shutdown::Shutdown;
use crate::ws::WsContext;

/// Request heads larger than this get 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Request bodies larger than this get 413; only login and logout forms have bodies.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Time to send the whole request, head and body (and, before it, the TLS handshake).
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// Time for the client to take the whole response.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(30);
/// HTTP requests in progress at once. tiny_http gets each only once it is complete,
/// so its four workers are never held by a slow client; this bounds the guard.
/// An MJPEG stream holds a place only until its head is read (it then counts
/// with the video connections), but a classroom of phones opening the stream
/// at once arrives together: 256 waiting heads cost a few hundred KiB.
pub const MAX_IN_FLIGHT: usize = 256;
const MAX_HEADERS: usize = 64;

/// The header only the guard may set (a client's copies are dropped): the real
/// client address, for tiny_http behind the Unix socket.
pub const PEER_HEADER: &str = "X-Kindercam-Peer";

pub struct Guard {
    pub gate: Arc<Gate>,
    pub tls: Option<TlsAcceptor>,
    /// tiny_http's private Unix socket.
    pub backend: PathBuf,
    /// For the requests served here rather than by tiny_http: MJPEG streams
    /// (`http::stream_mjpg`), admitted as video viewers.
    pub video: Arc<WsContext>,
    /// Where the requests refused here are counted.
    pub metrics: Arc<Metrics>,
}

impl Guard {
    pub fn new(
        gate: Arc<Gate>,
        tls: Option<TlsAcceptor>,
        backend: PathBuf,
        video: Arc<WsContext>,
        metrics: Arc<Metrics>,
    ) -> Arc<Guard> {
        Arc::new(Guard {
            gate,
            tls,
            backend,
            video,
            metrics,
        })
    }

    fn refused(&self, why: Refused) {
        self.metrics.refused(Listener::Http, why);
    }
}

/// Accepts HTTP connections until shutdown.
pub async fn serve(listener: TcpListener, guard: Arc<Guard>, shutdown: Shutdown) {
    let gate = guard.gate.clone();
    let tls = guard.tls.clone();
    let streams = shutdown.clone();
    net::accept_loop(
        listener,
        gate,
        "HTTP",
        shutdown,
        |socket, peer, admission| {
            let guard = guard.clone();
            let shutdown = streams.clone();
            async move {
                handle(socket, peer, &guard, admission, shutdown).await;
            }
        },
        |socket| refuse(socket, tls.clone()),
    )
    .await;
}

/// Tells an over-cap client why, once it has sent its request.
async fn refuse(socket: tokio::net::TcpStream, tls: Option<TlsAcceptor>) {
    let limit = Duration::from_secs(2);
    if let Ok(mut conn) = Conn::establish(socket, tls.as_ref(), limit).await {
        let _ = tokio::time::timeout(limit, request_head::read(&mut conn, MAX_HEAD_BYTES)).await;
        let _ = tokio::time::timeout(
            limit,
            reply(
                &mut conn,
                503,
                "Retry-After: 5\r\n",
                "too many connections; try again shortly\n",
            ),
        )
        .await;
    }
}

async fn handle(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    guard: &Guard,
    admission: net::Admission,
    shutdown: Shutdown,
) {
    let Ok(mut conn) = Conn::establish(socket, guard.tls.as_ref(), HEAD_DEADLINE).await else {
        guard.refused(Refused::Tls);
        return;
    };
    // One deadline for the head and the body: tiny_http reads bodies lazily on one
    // of its few worker threads, so it only ever gets a request already complete.
    let deadline = tokio::time::Instant::now() + HEAD_DEADLINE;
    let head = match tokio::time::timeout_at(
        deadline,
        request_head::read(&mut conn, MAX_HEAD_BYTES),
    )
    .await
    {
        Err(_) => {
            tracing::info!(%peer, "HTTP request head too slow; dropped");
            guard.refused(Refused::HeadTimeout);
            reply(&mut conn, 408, "", "request timeout\n").await;
            return;
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            tracing::info!(%peer, "HTTP request head too large");
            guard.refused(Refused::HeadTooLarge);
            reply(&mut conn, 431, "", "request header fields too large\n").await;
            return;
        }
        Ok(Ok(head)) => head,
    };
    if stream_mjpg::wants_stream(head.head()) {
        // A stream for hours: counted with the video connections, not among the
        // pages' requests in flight.
        drop(admission);
        // In a task of its own, without this one's state for every kind of request.
        let (video, head) = (guard.video.clone(), head.head().to_vec());
        tokio::spawn(async move { stream_mjpg::serve(conn, &head, peer, &video, shutdown).await });
        return;
    }
    let forwarded = match rewrite(head.head(), peer) {
        Ok(f) => f,
        Err((status, why)) => {
            tracing::info!(%peer, status, why, "HTTP request refused");
            guard.refused(Refused::of_http_status(status));
            reply(&mut conn, status, "", why).await;
            return;
        }
    };
    let mut body = head.rest().to_vec();
    body.truncate(forwarded.body_len);
    if body.len() < forwarded.body_len {
        let rest = forwarded.body_len - body.len();
        let read = async { (&mut conn).take(rest as u64).read_to_end(&mut body).await };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(_)) if body.len() == forwarded.body_len => {}
            Ok(_) => return, // the client went away mid-body
            Err(_) => {
                tracing::info!(%peer, "HTTP request body too slow; dropped");
                guard.refused(Refused::BodyTimeout);
                reply(&mut conn, 408, "", "request timeout\n").await;
                return;
            }
        }
    }
    let Ok(mut backend) = UnixStream::connect(&guard.backend).await else {
        reply(&mut conn, 503, "", "server is shutting down\n").await;
        return;
    };
    let transfer = async {
        backend.write_all(&forwarded.head).await?;
        backend.write_all(&body).await?;
        tokio::io::copy(&mut backend, &mut conn).await?;
        conn.shutdown().await
    };
    if tokio::time::timeout(TRANSFER_DEADLINE, transfer)
        .await
        .is_err()
    {
        tracing::info!(%peer, "HTTP transfer too slow; dropped");
    }
}

pub struct Forwarded {
    pub head: Vec<u8>,
    pub body_len: usize,
}

/// Validates a request head and rewrites it for tiny_http: one request per
/// connection, the client's address in `PEER_HEADER`, hop-by-hop headers dropped.
pub fn rewrite(head: &[u8], peer: SocketAddr) -> Result<Forwarded, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err((431, "too many header fields\n")),
        _ => return Err((400, "malformed HTTP request\n")),
    }
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Err((400, "malformed HTTP request\n"));
    };
    if !path.starts_with('/') {
        return Err((400, "only origin-form request targets are served\n"));
    }
    let mut body_len = 0usize;
    let mut seen_length = false;
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for h in request.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((
                411,
                "send a Content-Length; chunked bodies are not accepted\n",
            ));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or((400, "invalid Content-Length\n"))?;
            if seen_length {
                // Two lengths are how requests get smuggled past a proxy.
                return Err((400, "more than one Content-Length\n"));
            }
            seen_length = true;
            if len > MAX_BODY_BYTES {
                return Err((413, "request body too large\n"));
            }
            body_len = len;
        }
        let hop_by_hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "te",
            "expect",
        ];
        if hop_by_hop.iter().any(|h| name.eq_ignore_ascii_case(h))
            || name.eq_ignore_ascii_case(PEER_HEADER)
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{PEER_HEADER}: {peer}\r\n").as_bytes());
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Forwarded {
        head: out,
        body_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.7:5555".parse().unwrap()
    }

    #[test]
    fn marks_the_client_and_forces_one_request_per_connection() {
        let head = b"GET /x HTTP/1.1\r\nHost: pi\r\nConnection: keep-alive\r\nX-Kindercam-Peer: 1.2.3.4:1\r\n\r\n";
        let f = rewrite(head, peer()).unwrap();
        let text = String::from_utf8(f.head).unwrap();
        assert!(text.contains("X-Kindercam-Peer: 192.0.2.7:5555\r\n"));
        assert!(
            !text.contains("1.2.3.4"),
            "a client cannot forge its address"
        );
        assert!(text.ends_with("Connection: close\r\n\r\n"));
        assert!(!text.contains("keep-alive"));
    }

    #[test]
    fn refuses_big_or_chunked_bodies_and_garbage() {
        let big = b"POST /login HTTP/1.1\r\nContent-Length: 999999\r\n\r\n";
        assert_eq!(rewrite(big, peer()).err().unwrap().0, 413);
        let chunked = b"POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(rewrite(chunked, peer()).err().unwrap().0, 411);
        assert_eq!(
            rewrite(b"\x16\x03\x01garbage\r\n\r\n", peer())
                .err()
                .unwrap()
                .0,
            400
        );
        assert_eq!(
            rewrite(b"GET http://evil/ HTTP/1.1\r\n\r\n", peer())
                .err()
                .unwrap()
                .0,
            400
        );
        let twice = b"POST /login HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 20\r\n\r\n";
        assert_eq!(rewrite(twice, peer()).err().unwrap().0, 400);
    }
}
