//! The front door of both listeners: admits a TCP connection only within the
//! caps (in total and per client address), then completes TLS when configured,
//! all within a time limit. Past this point a connection is a `Conn`, plain or
//! TLS, and the HTTP and WebSocket code treat both alike.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::shutdown::Shutdown;
use crate::sync::Locked;

/// Pending connections the kernel may hold for us; capped by net.core.somaxconn.
/// tokio's default of 128 drops SYNs when every page reconnects at once after a
/// restart, and each dropped client then waits a full second to retry.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listener with a backlog sized for a classroom reconnecting at once.
/// Raises the soft limit on open files to the hard one, as servers that hold
/// thousands of sockets do (a login shell's soft limit is often 1024, which
/// would refuse viewers long before `--max-connections`). Returns the limit now.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    // rlim_t is 64-bit here and 32-bit on armv7.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Loads a PEM certificate chain and key for both listeners.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a TLS private key from {}", key.display()))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("TLS certificate and key do not match or are unsupported")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Refusals answered at once per listener; past this, over-cap sockets are just closed.
const MAX_REFUSALS: usize = 64;

/// Connection caps for one listener.
#[derive(Debug)]
pub struct Gate {
    total: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    max_total: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// 0 means no per-address cap (behind a reverse proxy every client is 127.0.0.1).
    max_per_ip: usize,
    /// Connections turned away so far, by [`Full`] (`as usize`), for `/metrics`.
    refused: [AtomicU64; 2],
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    ThisAddress,
}

impl Full {
    pub const ALL: [Full; 2] = [Full::Total, Full::ThisAddress];

    /// The `reason` label of `/metrics`' refused connections.
    pub fn label(self) -> &'static str {
        match self {
            Full::Total => "too_many_connections",
            Full::ThisAddress => "too_many_from_address",
        }
    }
}

impl Gate {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            total: Arc::new(Semaphore::new(max_total)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            max_total,
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            refused: Default::default(),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Full> {
        self.try_admit(ip).inspect_err(|full| {
            self.refused[*full as usize].fetch_add(1, Ordering::Relaxed);
        })
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Full> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Total)?;
        let mut per_ip = self.per_ip.locked();
        let count = per_ip.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *count >= self.max_per_ip {
            return Err(Full::ThisAddress);
        }
        *count += 1;
        Ok(Admission {
            gate: self.clone(),
            ip,
            _permit: permit,
        })
    }

    /// Connections admitted and not yet closed.
    pub fn open(&self) -> usize {
        self.max_total - self.total.available_permits()
    }

    /// Connections refused so far because of `full`.
    pub fn refused(&self, full: Full) -> u64 {
        self.refused[full as usize].load(Ordering::Relaxed)
    }
}

/// Accepts connections until shutdown. Each one within the caps goes to `serve`
/// with its `Admission`; each over them to `refuse`, so the client hears why, but
/// only a bounded number at once: past that a flood is closed without ceremony.
pub async fn accept_loop<S, SF, R, RF>(
    listener: TcpListener,
    gate: Arc<Gate>,
    what: &'static str,
    mut shutdown: Shutdown,
    serve: S,
    refuse: R,
) where
    S: Fn(TcpStream, SocketAddr, Admission) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match gate.admit(client_ip(peer)) {
            Ok(admission) => {
                tokio::spawn(serve(socket, peer, admission));
            }
            Err(full) => {
                let Ok(permit) = gate.refusals.clone().try_acquire_owned() else {
                    continue;
                };
                tracing::warn!(%peer, ?full, "{what} connection refused: too many connections");
                let refusal = refuse(socket);
                tokio::spawn(async move {
                    refusal.await;
                    drop(permit);
                });
            }
        }
    }
    tracing::debug!("{what} listener closed");
}

/// Holds a connection's place within the caps until dropped.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<Gate>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self.gate.per_ip.locked();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A client connection after the optional TLS handshake.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Completes TLS if `tls` is set, within `limit`.
    pub async fn establish(
        socket: TcpStream,
        tls: Option<&TlsAcceptor>,
        limit: Duration,
    ) -> io::Result<Conn> {
        let _ = socket.set_nodelay(true);
        match tls {
            None => Ok(Conn::Plain(socket)),
            Some(acceptor) => match tokio::time::timeout(limit, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(stream))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            },
        }
    }
}

impl crate::ws::split::HasTcp for Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    fn into_plain(self) -> Result<(Vec<u8>, TcpStream), Conn> {
        match self {
            Conn::Plain(s) => Ok((Vec::new(), s)),
            tls => Err(tls),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The address to log and rate-limit by.
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        // An IPv4 client on a dual-stack socket is still that IPv4 client.
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Full::ThisAddress);
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Full::Total);
        drop(a1);
        let _a3 = gate.admit(a).expect("a closed connection frees its place");
        assert_eq!(gate.open(), 3);
        assert_eq!(gate.refused(Full::ThisAddress), 1);
        assert_eq!(gate.refused(Full::Total), 1);
    }

    #[test]
    fn zero_means_no_per_address_cap() {
        let gate = Gate::new(10, 0);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| gate.admit(ip).unwrap()).collect();
        assert_eq!(held.len(), 10);
    }
}
