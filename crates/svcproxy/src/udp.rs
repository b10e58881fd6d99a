//! UDP: one socket per ClusterIP:port (or node address:NodePort) and one flow per client
//! address, as conntrack would have made.
//!
//! A flow is a socket connected to the endpoint picked for that client; datagrams from the
//! client go out on it, and what comes back is sent to the client from the listening socket,
//! so the client sees the answer come from the address it asked (DNS resolvers drop answers
//! from any other address). A flow ends after `idle` without traffic, and as soon as its
//! endpoint leaves the Service: the client's next datagram then opens a flow to an endpoint
//! that is still there (kube-proxy clears conntrack entries of removed UDP endpoints for the
//! same reason).

use crate::listeners::Forwarder;
use crate::log::Throttle;
use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Flows per listening socket; each holds one socket (a file descriptor). Past this, new
/// clients' datagrams are dropped (and that is logged) until idle flows expire.
const MAX_FLOWS: usize = 4096;

pub fn bind(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

struct Flow {
    endpoint: SocketAddrV4,
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    replies: JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        // The reply task holds the listening socket: it must end with the flow.
        self.replies.abort();
    }
}

/// Milliseconds since the listener started: flows record their last activity as one atomic
/// number that the reply task and the sweep can both read without a lock.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

pub async fn serve(socket: UdpSocket, forwarder: Arc<Forwarder>, idle: Duration) {
    let socket = Arc::new(socket);
    let clock = Clock(Instant::now());
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut sweep = tokio::time::interval(idle.min(Duration::from_secs(5)));
    let full = Throttle::new(Duration::from_secs(30));
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, client) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(got) => got,
                // An ICMP error for an earlier answer, or a transient failure: keep serving.
                Err(e) => {
                    tracing::debug!(listener = %forwarder.key, "recv: {e}");
                    continue;
                }
            },
            _ = sweep.tick() => {
                let idle_ms = idle.as_millis() as u64;
                let now = clock.now();
                flows.retain(|_, f| now.saturating_sub(f.last.load(Ordering::Relaxed)) < idle_ms);
                continue;
            }
        };
        let datagram = &buf[..len];

        // The client's flow, unless its endpoint has left the Service.
        if let Some(flow) = flows.get(&client) {
            if forwarder.backends.contains(flow.endpoint)
                && flow.upstream.send(datagram).await.is_ok()
            {
                flow.last.store(clock.now(), Ordering::Relaxed);
                continue;
            }
            // Gone, or the endpoint refused (ICMP): pick again below.
            flows.remove(&client);
        }
        if flows.len() >= MAX_FLOWS {
            if let Some(held) = full.allow() {
                tracing::warn!(
                    "{} ({}): {MAX_FLOWS} UDP flows open, dropping datagrams of new clients ({held} not logged)",
                    forwarder.service,
                    forwarder.key
                );
            }
            continue;
        }
        for endpoint in forwarder.backends.candidates(client.ip()) {
            let sent = match open_flow(endpoint, client, &socket, clock).await {
                Ok(flow) => flow.upstream.send(datagram).await.map(|_| flow),
                Err(e) => Err(e),
            };
            match sent {
                Ok(flow) => {
                    forwarder.backends.served(client.ip(), endpoint);
                    flows.insert(client, flow);
                    break;
                }
                Err(e) => forwarder.warn_unreachable(endpoint, &e.to_string()),
            }
        }
    }
}

/// A socket connected to `endpoint`, and the task that relays its answers to `client`.
async fn open_flow(
    endpoint: SocketAddrV4,
    client: SocketAddr,
    listening: &Arc<UdpSocket>,
    clock: Clock,
) -> std::io::Result<Flow> {
    let upstream = Arc::new(UdpSocket::bind("0.0.0.0:0").await?);
    upstream.connect(endpoint).await?;
    let last = Arc::new(AtomicU64::new(clock.now()));
    let replies = tokio::spawn(relay_replies(
        upstream.clone(),
        listening.clone(),
        client,
        last.clone(),
        clock,
    ));
    Ok(Flow {
        endpoint,
        upstream,
        last,
        replies,
    })
}

async fn relay_replies(
    upstream: Arc<UdpSocket>,
    listening: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    clock: Clock,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(len) => {
                let _ = listening.send_to(&buf[..len], client).await;
                last.store(clock.now(), Ordering::Relaxed);
            }
            // ECONNREFUSED: the endpoint's port is closed (ICMP). The client's next datagram
            // fails to go out on this flow and moves it to another endpoint; until then, do
            // not spin on the error.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
