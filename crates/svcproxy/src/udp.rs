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
//!
//! The table is bounded without ever turning a new client away (issue 25: with a fixed cap
//! and drops, DNS clients, which use a new port per query, filled it at ~137 queries/s and
//! every other client's datagrams were dropped for 30 s):
//! - DNS (port 53): a flow ends as soon as every query sent on it has had its answer, so a
//!   resolver's one-query ports do not linger for the idle timeout (glibc sends A and AAAA on
//!   one port, so "every query", not "the first answer");
//! - one client address may hold `max_flows_per_source` flows; past that its least recently
//!   used flow makes room;
//! - a full table closes its least recently used flow for the new one.

use crate::limits::UdpLimits;
use crate::listeners::Forwarder;
use crate::log::Throttle;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The DNS port: flows to it close once each query has its answer.
const DNS_PORT: u16 = 53;

pub fn bind(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

struct Flow {
    /// Tells this flow from a later one of the same client in "answered" messages.
    id: u64,
    endpoint: SocketAddrV4,
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    /// DNS flows: datagrams sent minus answers relayed.
    unanswered: Arc<AtomicUsize>,
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

/// The flows of one listening socket, with a count per client address.
struct Flows {
    by_client: HashMap<SocketAddr, Flow>,
    per_source: HashMap<IpAddr, usize>,
}

impl Flows {
    fn len(&self) -> usize {
        self.by_client.len()
    }

    fn insert(&mut self, client: SocketAddr, flow: Flow) {
        if self.by_client.insert(client, flow).is_none() {
            *self.per_source.entry(client.ip()).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, client: &SocketAddr) -> Option<Flow> {
        let flow = self.by_client.remove(client)?;
        if let Some(count) = self.per_source.get_mut(&client.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&client.ip());
            }
        }
        Some(flow)
    }

    fn of_source(&self, source: IpAddr) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// Closes the least recently used flow (of `source` only, when given).
    fn evict_oldest(&mut self, source: Option<IpAddr>) {
        let oldest = self
            .by_client
            .iter()
            .filter(|(client, _)| source.is_none_or(|s| client.ip() == s))
            .min_by_key(|(_, flow)| flow.last.load(Ordering::Relaxed))
            .map(|(client, _)| *client);
        if let Some(client) = oldest {
            self.remove(&client);
        }
    }

    fn retain_active(&mut self, now: u64, idle_ms: u64) {
        let expired: Vec<SocketAddr> = self
            .by_client
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last.load(Ordering::Relaxed)) >= idle_ms)
            .map(|(client, _)| *client)
            .collect();
        for client in expired {
            self.remove(&client);
        }
    }
}

pub async fn serve(socket: UdpSocket, forwarder: Arc<Forwarder>, limits: UdpLimits) {
    let socket = Arc::new(socket);
    let clock = Clock(Instant::now());
    let dns = forwarder.key.addr.port() == DNS_PORT;
    let mut flows = Flows {
        by_client: HashMap::new(),
        per_source: HashMap::new(),
    };
    let mut next_id = 0u64;
    // DNS flows whose queries are all answered: (client, flow id).
    let (answered_tx, mut answered) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut sweep = tokio::time::interval(limits.idle.min(Duration::from_secs(5)));
    let evicting = Throttle::new(Duration::from_secs(60));
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
            Some((client, id)) = answered.recv() => {
                // Only if it is still that flow and no query went out on it since.
                if flows.by_client.get(&client).is_some_and(|f| {
                    f.id == id && f.unanswered.load(Ordering::Acquire) == 0
                }) {
                    flows.remove(&client);
                }
                continue;
            }
            _ = sweep.tick() => {
                flows.retain_active(clock.now(), limits.idle.as_millis() as u64);
                continue;
            }
        };
        let datagram = &buf[..len];

        // The client's flow, unless its endpoint has left the Service.
        if let Some(flow) = flows.by_client.get(&client) {
            if forwarder.backends.contains(flow.endpoint) {
                if dns {
                    flow.unanswered.fetch_add(1, Ordering::AcqRel);
                }
                if flow.upstream.send(datagram).await.is_ok() {
                    flow.last.store(clock.now(), Ordering::Relaxed);
                    continue;
                }
            }
            // Gone, or the endpoint refused (ICMP): pick again below.
            flows.remove(&client);
        }
        // Room for the new flow: the client's own oldest first, then anyone's oldest.
        let why = if flows.of_source(client.ip()) >= limits.max_flows_per_source {
            flows.evict_oldest(Some(client.ip()));
            Some(format!(
                "{} flows from {}",
                limits.max_flows_per_source,
                client.ip()
            ))
        } else if flows.len() >= limits.max_flows {
            flows.evict_oldest(None);
            Some(format!("{} flows in all", limits.max_flows))
        } else {
            None
        };
        if let Some(why) = why {
            if let Some(held) = evicting.allow() {
                tracing::warn!(
                    "{} ({}): {why}: closing the least recently used flow for each new one ({held} more not logged)",
                    forwarder.service,
                    forwarder.key
                );
            }
        }
        for endpoint in forwarder.backends.candidates(client.ip()) {
            next_id += 1;
            let done = dns.then(|| (answered_tx.clone(), next_id));
            let sent = match open_flow(endpoint, client, &socket, clock, next_id, done).await {
                Ok(flow) => {
                    if dns {
                        flow.unanswered.fetch_add(1, Ordering::AcqRel);
                    }
                    flow.upstream.send(datagram).await.map(|_| flow)
                }
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
/// `answered`: for DNS flows, where to say that every query has had its answer.
async fn open_flow(
    endpoint: SocketAddrV4,
    client: SocketAddr,
    listening: &Arc<UdpSocket>,
    clock: Clock,
    id: u64,
    answered: Option<(mpsc::UnboundedSender<(SocketAddr, u64)>, u64)>,
) -> std::io::Result<Flow> {
    let upstream = Arc::new(UdpSocket::bind("0.0.0.0:0").await?);
    upstream.connect(endpoint).await?;
    let last = Arc::new(AtomicU64::new(clock.now()));
    let unanswered = Arc::new(AtomicUsize::new(0));
    let replies = tokio::spawn(relay_replies(
        upstream.clone(),
        listening.clone(),
        client,
        last.clone(),
        clock,
        unanswered.clone(),
        answered,
    ));
    Ok(Flow {
        id,
        endpoint,
        upstream,
        last,
        unanswered,
        replies,
    })
}

async fn relay_replies(
    upstream: Arc<UdpSocket>,
    listening: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    clock: Clock,
    unanswered: Arc<AtomicUsize>,
    answered: Option<(mpsc::UnboundedSender<(SocketAddr, u64)>, u64)>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(len) => {
                let _ = listening.send_to(&buf[..len], client).await;
                last.store(clock.now(), Ordering::Relaxed);
                if let Some((tell, id)) = &answered {
                    // One answer per query; a second answer to one query (there should be
                    // none) must not wrap the count.
                    let before = unanswered
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            Some(n.saturating_sub(1))
                        })
                        .unwrap_or(0);
                    if before <= 1 {
                        let _ = tell.send((client, *id));
                    }
                }
            }
            // ECONNREFUSED: the endpoint's port is closed (ICMP). The client's next datagram
            // fails to go out on this flow and moves it to another endpoint; until then, do
            // not spin on the error.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::Backends;
    use crate::model::{ListenKey, Protocol, ServicePortName};

    /// A UDP echo endpoint on 127.0.0.1 answering every datagram with `name`, and counting the
    /// distinct source ports it saw (one per flow).
    async fn endpoint(name: &'static str) -> (SocketAddrV4, Arc<std::sync::Mutex<Vec<u16>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = match socket.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (_, from) = socket.recv_from(&mut buf).await.unwrap();
                record.lock().unwrap().push(from.port());
                let _ = socket.send_to(name.as_bytes(), from).await;
            }
        });
        (addr, seen)
    }

    /// A proxy socket on 127.0.0.1:`port` (0: any) forwarding to `endpoints`.
    async fn proxy(port: u16, endpoint: SocketAddrV4, limits: UdpLimits) -> SocketAddrV4 {
        let socket = bind(SocketAddrV4::new([127, 0, 0, 1].into(), port)).unwrap();
        let addr = match socket.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let forwarder = Arc::new(Forwarder {
            key: ListenKey {
                protocol: Protocol::Udp,
                addr,
            },
            service: ServicePortName {
                namespace: "t".into(),
                name: "udp".into(),
                port: String::new(),
            },
            backends: Arc::new(Backends::new(vec![endpoint], None)),
            unreachable: Throttle::new(Duration::from_secs(30)),
        });
        tokio::spawn(serve(socket, forwarder, limits));
        addr
    }

    /// One datagram from `from` (a socket of the caller's, so the source can be chosen);
    /// the answer, or None after 500 ms.
    async fn ask(from: &UdpSocket, to: SocketAddrV4) -> Option<String> {
        from.send_to(b"q", to).await.unwrap();
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(500), from.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => Some(String::from_utf8_lossy(&buf[..len]).into_owned()),
            _ => None,
        }
    }

    async fn client(ip: [u8; 4]) -> UdpSocket {
        UdpSocket::bind(SocketAddr::from((ip, 0))).await.unwrap()
    }

    const LONG: Duration = Duration::from_secs(300);

    #[tokio::test]
    async fn a_full_table_makes_room_for_a_new_client_instead_of_dropping_it() {
        let (endpoint, _) = endpoint("e").await;
        let limits = UdpLimits {
            idle: LONG,
            max_flows: 8,
            max_flows_per_source: 8,
        };
        let front = proxy(0, endpoint, limits).await;
        // Eight clients from 127.0.0.2 fill the table; their flows stay (long idle timeout).
        let mut fillers = Vec::new();
        for _ in 0..8 {
            let socket = client([127, 0, 0, 2]).await;
            assert_eq!(ask(&socket, front).await.as_deref(), Some("e"));
            fillers.push(socket);
        }
        // A ninth client, from another address, is answered.
        let late = client([127, 0, 0, 3]).await;
        assert_eq!(ask(&late, front).await.as_deref(), Some("e"));
    }

    #[tokio::test]
    async fn one_source_is_capped_so_other_clients_keep_their_flows() {
        let (endpoint, seen) = endpoint("e").await;
        let limits = UdpLimits {
            idle: LONG,
            max_flows: 16,
            max_flows_per_source: 4,
        };
        let front = proxy(0, endpoint, limits).await;
        // A quiet client's flow, then a noisy source with 20 ports.
        let quiet = client([127, 0, 0, 3]).await;
        assert_eq!(ask(&quiet, front).await.as_deref(), Some("e"));
        let mut noisy = Vec::new();
        for _ in 0..20 {
            let socket = client([127, 0, 0, 2]).await;
            assert_eq!(ask(&socket, front).await.as_deref(), Some("e"));
            noisy.push(socket);
        }
        // The quiet client still has its flow: its next datagram leaves from the same
        // upstream port (a new flow would show up at the endpoint as a new port).
        let ports_before = seen.lock().unwrap().clone();
        assert_eq!(ask(&quiet, front).await.as_deref(), Some("e"));
        let last = *seen.lock().unwrap().last().unwrap();
        assert_eq!(last, ports_before[0], "the quiet client's flow was closed");
        // The noisy source keeps at most 4: its first port's flow is gone (a new upstream port).
        assert_eq!(ask(&noisy[0], front).await.as_deref(), Some("e"));
        let last = *seen.lock().unwrap().last().unwrap();
        assert!(
            !ports_before.contains(&last),
            "noisy client reused an old flow"
        );
    }

    #[tokio::test]
    async fn dns_flows_end_once_every_query_is_answered() {
        let (endpoint, seen) = endpoint("answer").await;
        let limits = UdpLimits {
            idle: LONG,
            max_flows: 4,
            max_flows_per_source: 4,
        };
        // Port 53 needs root or a low unprivileged port start; the tests run as root.
        let front = match bind(SocketAddrV4::new([127, 0, 0, 1].into(), DNS_PORT)) {
            Ok(probe) => {
                drop(probe);
                proxy(DNS_PORT, endpoint, limits).await
            }
            Err(e) => {
                eprintln!("skipped: cannot bind 127.0.0.1:53: {e}");
                return;
            }
        };
        let socket = client([127, 0, 0, 2]).await;
        assert_eq!(ask(&socket, front).await.as_deref(), Some("answer"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The same client port asks again: the first flow was closed after its answer, so a
        // new one (a new upstream port) carries it.
        assert_eq!(ask(&socket, front).await.as_deref(), Some("answer"));
        let ports = seen.lock().unwrap().clone();
        assert_eq!(ports.len(), 2);
        assert_ne!(ports[0], ports[1], "the answered DNS flow stayed open");
        // Two queries in flight on one port (glibc's A and AAAA) both get their answer.
        let pair = client([127, 0, 0, 4]).await;
        pair.send_to(b"a", front).await.unwrap();
        pair.send_to(b"aaaa", front).await.unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            let got = tokio::time::timeout(Duration::from_millis(500), pair.recv_from(&mut buf))
                .await
                .expect("both answers arrive")
                .unwrap();
            assert_eq!(&buf[..got.0], b"answer");
        }
    }
}
