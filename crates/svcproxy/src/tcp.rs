//! TCP: one accept loop per listening socket; each accepted connection is spliced to an
//! endpoint. The endpoint is picked when the connection arrives (round-robin, or the client's
//! sticky one); if it cannot be reached the next one is tried, so an endpoint that died before
//! its EndpointSlice said so costs a retry, not a failed request.
//!
//! Accepted connections run in their own tasks: stopping a listener (the Service or its last
//! endpoint went away) does not cut connections already made, as with kube-proxy.
//!
//! Bounded (issue 25), so that one client cannot use up the proxy's file descriptors and
//! leave the next client unanswered:
//! - connections are counted for the whole proxy and per client address (`limits`); past
//!   either cap a new connection is reset at once, and the client sees a refusal, not a hang;
//! - a connection without a byte either way for the idle timeout is closed (default 24 h,
//!   the conntrack timeout for established connections that kube-proxy sets);
//! - TCP keepalive on both sides of a connection quiet for a minute, so a peer that vanished
//!   (a deleted pod, a dropped network) is noticed within minutes instead of holding two
//!   descriptors until the idle timeout. Armed only then: its eight setsockopt calls cost a
//!   short connection 12 % of the new-connection rate in gVisor (BENCHMARKS.md, "Services").

use crate::limits::{Refused, TcpCounts, TcpPermit};
use crate::listeners::Forwarder;
use crate::log::Throttle;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// How long one connect to an endpoint may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Copy buffer per direction: big enough that a bulk transfer is not syscall-bound.
const BUFFER: usize = 64 * 1024;
/// Keepalive is armed on a connection quiet for this long (both sockets at once).
const KEEPALIVE_ARM_AFTER: Duration = Duration::from_secs(60);
/// Keepalive: first probe after this much silence, then every KEEPALIVE_INTERVAL, and the
/// connection is dropped after KEEPALIVE_PROBES unanswered probes (about 2 minutes after it
/// is armed).
const KEEPALIVE_IDLE: libc::c_int = 60;
const KEEPALIVE_INTERVAL: libc::c_int = 15;
const KEEPALIVE_PROBES: libc::c_int = 4;

/// A listening socket on `addr`. SO_REUSEADDR so that a restarted proxy can listen again while
/// connections of the previous one are in TIME_WAIT.
pub fn listen(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.into())?;
    socket.listen(1024)
}

pub async fn serve(listener: TcpListener, forwarder: Arc<Forwarder>, counts: Arc<TcpCounts>) {
    let accept_errors = Throttle::new(Duration::from_secs(30));
    let refusals = Throttle::new(Duration::from_secs(60));
    loop {
        match listener.accept().await {
            Ok((client, peer)) => match counts.admit(peer.ip()) {
                Ok(permit) => {
                    tokio::spawn(forward(client, peer, forwarder.clone(), permit));
                }
                Err(refused) => {
                    // Reset, so the client fails at once instead of waiting on a connection
                    // nobody serves.
                    let _ = client.set_zero_linger();
                    if let Some(held) = refusals.allow() {
                        let why = match refused {
                            Refused::Total(n) => format!("{n} connections open in all"),
                            Refused::Source(n) => {
                                format!("{n} connections open from {}", peer.ip())
                            }
                        };
                        tracing::warn!(
                            "{} ({}): {why}: new connections are reset ({held} more not logged)",
                            forwarder.service,
                            forwarder.key
                        );
                    }
                }
            },
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning on the error.
                if let Some(held) = accept_errors.allow() {
                    tracing::warn!(listener = %forwarder.key, "accept failed: {e} ({held} more not logged)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn forward(
    client: TcpStream,
    peer: SocketAddr,
    forwarder: Arc<Forwarder>,
    permit: TcpPermit,
) {
    let idle = permit.idle();
    // Small request/response exchanges must not wait for Nagle on either hop.
    let _ = client.set_nodelay(true);
    let mut client = Tracked::new(client);
    for endpoint in forwarder.backends.candidates(peer.ip()) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(mut upstream)) => {
                forwarder.backends.served(peer.ip(), endpoint);
                let _ = upstream.set_nodelay(true);
                let sockets = [client.inner.as_raw_fd(), upstream.as_raw_fd()];
                let last = client.last.clone();
                let copy = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    BUFFER,
                    BUFFER,
                );
                tokio::select! {
                    result = copy => if let Err(e) = result {
                        tracing::debug!(listener = %forwarder.key, %peer, %endpoint, "connection ended: {e}");
                    },
                    _ = idle_for(&last, idle, sockets) => {
                        tracing::debug!(listener = %forwarder.key, %peer, %endpoint, "closed after {idle:?} without traffic");
                    }
                }
                return;
            }
            Ok(Err(e)) => forwarder.warn_unreachable(endpoint, &e.to_string()),
            Err(_) => forwarder.warn_unreachable(endpoint, "connect timed out"),
        }
    }
    // No endpoint answered: reset the client's connection rather than close it cleanly, so it
    // sees a failure, not an empty response.
    let _ = client.inner.set_zero_linger();
}

/// Returns once `last` (milliseconds on the connection's clock) is `idle` in the past; arms
/// keepalive on `sockets` (the connection's two, open while this runs) once it is
/// KEEPALIVE_ARM_AFTER in the past.
async fn idle_for(last: &Activity, idle: Duration, sockets: [RawFd; 2]) {
    let mut armed = false;
    loop {
        let quiet = last.quiet_for();
        if quiet >= idle {
            return;
        }
        if !armed && quiet >= KEEPALIVE_ARM_AFTER {
            sockets.into_iter().for_each(keepalive);
            armed = true;
        }
        let next = match armed {
            true => idle - quiet,
            false => (KEEPALIVE_ARM_AFTER - quiet).min(idle - quiet),
        };
        tokio::time::sleep(next).await;
    }
}

/// SO_KEEPALIVE with the probe timing above. Failures are ignored: keepalive only makes a
/// dead peer noticed sooner, the idle timeout still bounds the connection.
fn keepalive(fd: RawFd) {
    for (level, option, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
    ] {
        // SAFETY: setsockopt on a socket we own, with a pointer to a local c_int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// When a connection last moved a byte, either way.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The client's stream, noting every read and write that moved bytes: the client side sees
/// both directions (what it sends is read here, what it gets is written here).
struct Tracked {
    inner: TcpStream,
    last: Activity,
}

impl Tracked {
    fn new(inner: TcpStream) -> Self {
        Tracked {
            inner,
            last: Activity {
                start: Instant::now(),
                last_ms: Arc::new(AtomicU64::new(0)),
            },
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(stream: &TcpStream, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a local c_int on a socket the test owns.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                level,
                name,
                &mut value as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_is_armed_on_both_sockets_once_the_connection_is_quiet() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = listener.accept().await.unwrap();
        let last = Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        let sockets = [a.as_raw_fd(), b.as_raw_fd()];
        let idle = Duration::from_secs(3600);
        let watch = idle_for(&last, idle, sockets);
        tokio::pin!(watch);
        // Active (touched) within the minute: nothing armed.
        for _ in 0..3 {
            last.touch();
            let _ = tokio::time::timeout(Duration::from_secs(30), &mut watch).await;
        }
        assert_eq!(option(&a, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        // Quiet for a minute: both sockets get it; the connection stays open until `idle`.
        assert!(tokio::time::timeout(Duration::from_secs(61), &mut watch)
            .await
            .is_err());
        assert_eq!(option(&a, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(option(&b, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert!(tokio::time::timeout(idle, &mut watch).await.is_ok());
    }

    #[tokio::test]
    async fn both_sides_get_tcp_keepalive_with_the_probe_timing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(option(&stream, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        keepalive(stream.as_raw_fd());
        assert_eq!(option(&stream, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(
            option(&stream, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            KEEPALIVE_IDLE
        );
        assert_eq!(
            option(&stream, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            option(&stream, libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
            KEEPALIVE_PROBES
        );
    }
}
