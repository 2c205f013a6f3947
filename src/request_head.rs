//! The first bytes of every connection on both ports: the HTTP request head,
//! read under a size cap, and the short plain-text answer sent when a request is
//! refused before anything else sees it. The HTTP guard and the WebSocket
//! handshake share these, so a client meets the same limits and the same kind of
//! reply on either port. Time limits are the callers': each has its own deadline.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request head and whatever arrived after it in the same reads.
#[derive(Debug)]
pub struct Head {
    bytes: Vec<u8>,
    len: usize,
}

impl Head {
    /// The head, up to and including the blank line.
    pub fn head(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// What followed the head: the start of a body, or a WebSocket client's
    /// first frames.
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.len..]
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The client closed or broke the connection before the head was complete.
    Closed,
    /// More than the cap without a blank line: answer 431.
    TooLarge,
}

/// Reads until the blank line that ends a request head, refusing heads over `max` bytes.
pub async fn read<S: AsyncRead + Unpin>(conn: &mut S, max: usize) -> Result<Head, HeadError> {
    let mut bytes = Vec::with_capacity(2048);
    loop {
        // Read straight into the vector's spare room: a buffer on the stack would
        // be part of every connection task's future (2 KB each).
        if bytes.capacity() - bytes.len() < 512 {
            bytes.reserve(2048);
        }
        // The blank line may straddle two reads.
        let from = bytes.len().saturating_sub(3);
        let n = conn
            .read_buf(&mut bytes)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        if let Some(pos) = bytes[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let len = from + pos + 4;
            if len > max {
                return Err(HeadError::TooLarge);
            }
            return Ok(Head { bytes, len });
        }
        if bytes.len() > max {
            return Err(HeadError::TooLarge);
        }
    }
}

/// The reason phrase of each status kindercam answers with before a request is
/// handed on.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

/// Answers with `status` and a one-line plain-text `body`, then closes the
/// write side. `extra_headers` are whole `Name: value\r\n` lines. Errors are
/// ignored: the client is being dropped either way.
pub async fn reply<S: AsyncWrite + Unpin>(
    conn: &mut S,
    status: u16,
    extra_headers: &str,
    body: &str,
) {
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out one part per read, as TCP segments arrive, then end of file.
    struct Parts(std::collections::VecDeque<&'static [u8]>);

    impl AsyncRead for Parts {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(part) = self.0.pop_front() {
                buf.put_slice(part);
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn read_parts(parts: &[&'static [u8]], max: usize) -> Result<Head, HeadError> {
        let mut conn = Parts(parts.iter().copied().collect());
        tokio::time::timeout(std::time::Duration::from_secs(5), read(&mut conn, max))
            .await
            .expect("read returns rather than waiting for more")
    }

    #[tokio::test]
    async fn a_head_split_across_reads_is_found_with_what_follows() {
        // The blank line cut after each of its first three bytes in turn.
        let whole: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let end = whole.len() - 4;
        for cut in [end - 4, end - 3, end - 2, end - 1] {
            let head = read_parts(&[&whole[..cut], &whole[cut..]], 1024)
                .await
                .unwrap();
            assert_eq!(head.head(), &whole[..end], "cut at {cut}");
            assert_eq!(head.rest(), b"body");
        }
        // A byte at a time.
        let bytes: Vec<&'static [u8]> = whole.chunks(1).collect();
        let head = read_parts(&bytes, 1024).await.unwrap();
        assert_eq!(head.head(), &whole[..end]);
    }

    #[tokio::test]
    async fn heads_over_the_cap_and_early_closes_are_told_apart() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; 5000]).await.unwrap();
        assert_eq!(
            read(&mut server, 4096).await.unwrap_err(),
            HeadError::TooLarge
        );

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        drop(client);
        assert_eq!(
            read(&mut server, 4096).await.unwrap_err(),
            HeadError::Closed
        );
    }

    #[tokio::test]
    async fn a_reply_is_complete_http_and_closes() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        reply(&mut server, 503, "Retry-After: 5\r\n", "busy\n").await;
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 5\r\n"));
        assert!(text.contains("\r\nRetry-After: 5\r\nConnection: close\r\n\r\nbusy\n"));
    }
}
