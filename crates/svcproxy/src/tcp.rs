//! TCP: one accept loop per listening socket; each accepted connection is spliced to an
//! endpoint. The endpoint is picked when the connection arrives (round-robin, or the client's
//! sticky one); if it cannot be reached the next one is tried, so an endpoint that died before
//! its EndpointSlice said so costs a retry, not a failed request.
//!
//! Accepted connections run in their own tasks: stopping a listener (the Service or its last
//! endpoint went away) does not cut connections already made, as with kube-proxy.

use crate::listeners::Forwarder;
use crate::log::Throttle;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long one connect to an endpoint may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Copy buffer per direction: big enough that a bulk transfer is not syscall-bound.
const BUFFER: usize = 64 * 1024;

/// A listening socket on `addr`. SO_REUSEADDR so that a restarted proxy can listen again while
/// connections of the previous one are in TIME_WAIT.
pub fn listen(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.into())?;
    socket.listen(1024)
}

pub async fn serve(listener: TcpListener, forwarder: Arc<Forwarder>) {
    let accept_errors = Throttle::new(Duration::from_secs(30));
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(forward(client, peer, forwarder.clone()));
            }
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

async fn forward(mut client: TcpStream, peer: SocketAddr, forwarder: Arc<Forwarder>) {
    // Small request/response exchanges must not wait for Nagle on either hop.
    let _ = client.set_nodelay(true);
    for endpoint in forwarder.backends.candidates(peer.ip()) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(mut upstream)) => {
                forwarder.backends.served(peer.ip(), endpoint);
                let _ = upstream.set_nodelay(true);
                if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    BUFFER,
                    BUFFER,
                )
                .await
                {
                    tracing::debug!(listener = %forwarder.key, %peer, %endpoint, "connection ended: {e}");
                }
                return;
            }
            Ok(Err(e)) => forwarder.warn_unreachable(endpoint, &e.to_string()),
            Err(_) => forwarder.warn_unreachable(endpoint, "connect timed out"),
        }
    }
    // No endpoint answered: reset the client's connection rather than close it cleanly, so it
    // sees a failure, not an empty response.
    let _ = client.set_zero_linger();
}
