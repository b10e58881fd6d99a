//! The running sockets, kept equal to the wanted [`Binding`]s.
//!
//! A socket whose binding only changed endpoints keeps running: its [`Backends`] list is
//! swapped in place, so open connections and UDP flows to remaining endpoints are untouched.
//! A socket is restarted only when the Service behind it or its affinity changed. A bind that
//! fails (the port is taken by another process) is retried at every sync and reported once
//! until it succeeds.

use crate::balancer::Backends;
use crate::limits::{TcpCounts, UdpLimits};
use crate::log::Throttle;
use crate::model::{Binding, ListenKey, Protocol, ServicePortName};
use crate::{tcp, udp};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Warnings about one unreachable endpoint are logged at most this often per socket.
const UNREACHABLE_LOG_PERIOD: Duration = Duration::from_secs(30);

/// What one listening socket (TCP or UDP) forwards to, and for which Service port.
pub struct Forwarder {
    pub key: ListenKey,
    pub service: ServicePortName,
    pub backends: Arc<Backends>,
    /// Throttles "endpoint unreachable" warnings of this socket.
    pub unreachable: Throttle,
}

impl Forwarder {
    /// An endpoint refused or timed out: the caller tries the next one, and says so at most
    /// as often as the throttle allows.
    pub fn warn_unreachable(&self, endpoint: SocketAddrV4, why: &str) {
        if let Some(held) = self.unreachable.allow() {
            tracing::warn!(
                "{} ({}): endpoint {endpoint} unreachable: {why}; trying the next one ({held} such errors not logged)",
                self.service,
                self.key
            );
        }
    }
}

struct Running {
    service: ServicePortName,
    affinity: Option<Duration>,
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Ends the accept loop (TCP) or the receive loop and its flows (UDP), closing the
        // listening socket. Accepted TCP connections are separate tasks and live on.
        self.task.abort();
    }
}

/// What one [`Listeners::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub started: Vec<ListenKey>,
    pub stopped: Vec<ListenKey>,
    /// Binds that failed now and had not failed the same way at the previous sync.
    pub new_failures: Vec<(ListenKey, String)>,
}

pub struct Listeners {
    running: HashMap<ListenKey, Running>,
    /// Failing binds and their error, so each is reported once until it changes.
    failing: BTreeMap<ListenKey, String>,
    udp: UdpLimits,
    /// Shared by every TCP listener: the caps are for the whole proxy.
    tcp: Arc<TcpCounts>,
}

impl Listeners {
    pub fn new(udp: UdpLimits, tcp: Arc<TcpCounts>) -> Self {
        Listeners {
            running: HashMap::new(),
            failing: BTreeMap::new(),
            udp,
            tcp,
        }
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// TCP connections open through the proxy now.
    pub fn tcp_connections(&self) -> usize {
        self.tcp.open()
    }

    /// Binds failing now, with their error.
    pub fn failing(&self) -> &BTreeMap<ListenKey, String> {
        &self.failing
    }

    /// Stops what is not wanted, updates endpoints of what is, starts what is missing.
    /// Must run inside the tokio runtime (it spawns the socket tasks).
    pub fn apply(&mut self, wanted: &BTreeMap<ListenKey, Binding>) -> ApplyReport {
        let mut report = ApplyReport::default();
        // Stop first, so a socket that moves to another Service can be bound again below.
        let stale: Vec<ListenKey> = self
            .running
            .iter()
            .filter(|(key, running)| match wanted.get(key) {
                None => true,
                Some(b) => b.service != running.service || b.affinity != running.affinity,
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            self.running.remove(&key);
            if !wanted.contains_key(&key) {
                report.stopped.push(key);
            }
        }
        self.failing.retain(|key, _| wanted.contains_key(key));

        for (key, binding) in wanted {
            if let Some(running) = self.running.get(key) {
                running.backends.replace(binding.endpoints.clone());
                continue;
            }
            match self.start(*key, binding) {
                Ok(running) => {
                    self.running.insert(*key, running);
                    self.failing.remove(key);
                    report.started.push(*key);
                }
                Err(e) => {
                    let error = e.to_string();
                    if self.failing.get(key) != Some(&error) {
                        report.new_failures.push((*key, error.clone()));
                    }
                    self.failing.insert(*key, error);
                }
            }
        }
        report
    }

    /// Stops every socket.
    pub fn clear(&mut self) {
        self.running.clear();
    }

    fn start(&self, key: ListenKey, binding: &Binding) -> std::io::Result<Running> {
        let backends = Arc::new(Backends::new(binding.endpoints.clone(), binding.affinity));
        let forwarder = Arc::new(Forwarder {
            key,
            service: binding.service.clone(),
            backends: backends.clone(),
            unreachable: Throttle::new(UNREACHABLE_LOG_PERIOD),
        });
        let task = match key.protocol {
            Protocol::Tcp => tokio::spawn(tcp::serve(
                tcp::listen(key.addr)?,
                forwarder,
                self.tcp.clone(),
            )),
            Protocol::Udp => tokio::spawn(udp::serve(udp::bind(key.addr)?, forwarder, self.udp)),
        };
        Ok(Running {
            service: binding.service.clone(),
            affinity: binding.affinity,
            backends,
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn binding(service: &str, endpoints: &[SocketAddrV4]) -> Binding {
        Binding {
            service: ServicePortName {
                namespace: "t".into(),
                name: service.into(),
                port: String::new(),
            },
            endpoints: endpoints.to_vec(),
            affinity: None,
        }
    }

    /// What a test server does after it has sent its name.
    #[derive(Clone, Copy)]
    enum AfterName {
        /// Closes the connection: a client reading to the end gets the name.
        Close,
        /// Keeps it open, waiting for a request that never comes (an idle connection), until
        /// the client closes it.
        WaitForClient,
    }

    /// A TCP server on 127.0.0.1 that answers every connection with `name`, then does `after`.
    async fn named_server(name: &'static str, after: AfterName) -> SocketAddrV4 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = match listener.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = s.write_all(name.as_bytes()).await;
                    if let AfterName::WaitForClient = after {
                        let _ = s.read_to_end(&mut Vec::new()).await;
                    }
                });
            }
        });
        addr
    }

    async fn ask(addr: SocketAddrV4) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    use crate::limits::TcpLimits;

    const TCP_LIMITS: TcpLimits = TcpLimits {
        idle: Duration::from_secs(300),
        max_connections: 1000,
        max_per_source: 1000,
    };

    fn test_listeners(tcp: TcpLimits) -> Listeners {
        Listeners::new(
            UdpLimits {
                idle: Duration::from_secs(30),
                max_flows: 64,
                max_flows_per_source: 64,
            },
            TcpCounts::new(tcp),
        )
    }

    /// Connects from `source` and reads what comes within 500 ms: the name, or "" when the
    /// connection was reset or closed; the stream is returned open.
    async fn greet(source: [u8; 4], to: SocketAddrV4) -> (String, Option<tokio::net::TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .unwrap();
        let Ok(mut stream) = socket.connect(to.into()).await else {
            return (String::new(), None);
        };
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => (
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                Some(stream),
            ),
            _ => (String::new(), None),
        }
    }

    fn tcp_key(port: u16) -> ListenKey {
        ListenKey {
            protocol: Protocol::Tcp,
            addr: SocketAddrV4::new([127, 0, 0, 1].into(), port),
        }
    }

    #[tokio::test]
    async fn connections_past_a_sources_cap_are_reset_and_other_clients_are_still_served() {
        let a = named_server("a", AfterName::WaitForClient).await;
        let key = tcp_key(testkit::free_port());
        let mut listeners = test_listeners(TcpLimits {
            max_per_source: 3,
            max_connections: 5,
            ..TCP_LIMITS
        });
        listeners.apply(&BTreeMap::from([(key, binding("web", &[a]))]));
        let mut held = Vec::new();
        for _ in 0..3 {
            let (said, stream) = greet([127, 0, 0, 2], key.addr).await;
            assert_eq!(said, "a");
            held.push(stream);
        }
        // The fourth from the same source is reset; another source is served.
        assert_eq!(greet([127, 0, 0, 2], key.addr).await.0, "");
        let (said, other) = greet([127, 0, 0, 3], key.addr).await;
        assert_eq!(said, "a");
        held.push(other);
        let (said, other) = greet([127, 0, 0, 4], key.addr).await;
        assert_eq!(said, "a");
        held.push(other);
        // Five open in all: a sixth source is reset too, until one closes.
        assert_eq!(greet([127, 0, 0, 5], key.addr).await.0, "");
        held.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(greet([127, 0, 0, 5], key.addr).await.0, "a");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let a = named_server("a", AfterName::WaitForClient).await;
        let key = tcp_key(testkit::free_port());
        let mut listeners = test_listeners(TcpLimits {
            idle: Duration::from_millis(300),
            ..TCP_LIMITS
        });
        listeners.apply(&BTreeMap::from([(key, binding("web", &[a]))]));
        let (said, stream) = greet([127, 0, 0, 2], key.addr).await;
        assert_eq!(said, "a");
        let mut stream = stream.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the idle connection was not closed within 3 s: {read:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150),
            "closed too early: {took:?}"
        );
    }

    #[tokio::test]
    async fn sockets_follow_the_wanted_bindings_and_endpoint_changes_need_no_restart() {
        let a = named_server("a", AfterName::Close).await;
        let b = named_server("b", AfterName::Close).await;
        let front = SocketAddrV4::new([127, 0, 0, 1].into(), testkit::free_port());
        let key = ListenKey {
            protocol: Protocol::Tcp,
            addr: front,
        };
        let mut listeners = test_listeners(TCP_LIMITS);

        let report = listeners.apply(&BTreeMap::from([(key, binding("web", &[a, b]))]));
        assert_eq!(report.started, vec![key]);
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..4 {
            seen.push(ask(front).await.unwrap());
        }
        assert_eq!(seen, ["a", "b", "a", "b"]);

        // Endpoint b removed: same socket, only a answers.
        let report = listeners.apply(&BTreeMap::from([(key, binding("web", &[a]))]));
        assert!(report.started.is_empty() && report.stopped.is_empty());
        for _ in 0..3 {
            assert_eq!(ask(front).await.unwrap(), "a");
        }

        // Not wanted any more: the socket is closed and connects are refused.
        let report = listeners.apply(&BTreeMap::new());
        assert_eq!(report.stopped, vec![key]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(ask(front).await.is_err());
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_skipped_and_a_taken_port_is_reported_once() {
        let a = named_server("a", AfterName::Close).await;
        // Nothing listens on `dead`.
        let dead = SocketAddrV4::new([127, 0, 0, 1].into(), testkit::free_port());
        let front = SocketAddrV4::new([127, 0, 0, 1].into(), testkit::free_port());
        let key = ListenKey {
            protocol: Protocol::Tcp,
            addr: front,
        };
        let mut listeners = test_listeners(TCP_LIMITS);
        listeners.apply(&BTreeMap::from([(key, binding("web", &[dead, a]))]));
        for _ in 0..4 {
            assert_eq!(ask(front).await.unwrap(), "a");
        }

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = match taken.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let busy = ListenKey {
            protocol: Protocol::Tcp,
            addr: taken_addr,
        };
        let wanted = BTreeMap::from([(busy, binding("other", &[a]))]);
        let first = listeners.apply(&wanted);
        assert_eq!(first.new_failures.len(), 1, "{first:?}");
        assert!(first.new_failures[0].1.contains("in use"), "{first:?}");
        assert!(listeners.apply(&wanted).new_failures.is_empty());
        assert_eq!(listeners.failing().len(), 1);
        drop(taken);
        let report = listeners.apply(&wanted);
        assert_eq!(report.started, vec![busy]);
        assert!(listeners.failing().is_empty());
    }
}
