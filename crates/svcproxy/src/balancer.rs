//! Which endpoint a new connection or UDP flow goes to.
//!
//! One [`Backends`] per listening socket, shared by its accept loop and by the reconciler:
//! the reconciler swaps the endpoint list in place when an EndpointSlice changes, so a
//! listener never has to be restarted for that, and the next pick already sees the change.
//! Picks are round-robin; with `sessionAffinity: ClientIP` a client keeps its endpoint until
//! it has been idle for the affinity timeout or the endpoint goes away.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub struct Backends {
    endpoints: RwLock<Arc<Vec<SocketAddrV4>>>,
    next: AtomicUsize,
    affinity: Option<Affinity>,
}

struct Affinity {
    timeout: Duration,
    clients: Mutex<HashMap<IpAddr, (SocketAddrV4, Instant)>>,
}

impl Backends {
    pub fn new(endpoints: Vec<SocketAddrV4>, affinity: Option<Duration>) -> Self {
        Backends {
            endpoints: RwLock::new(Arc::new(endpoints)),
            next: AtomicUsize::new(0),
            affinity: affinity.map(|timeout| Affinity {
                timeout,
                clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<SocketAddrV4>> {
        self.endpoints.read().unwrap().clone()
    }

    /// Replaces the endpoints; returns whether anything changed. Affinity entries that point
    /// at a removed endpoint are forgotten, so those clients are spread again.
    pub fn replace(&self, endpoints: Vec<SocketAddrV4>) -> bool {
        let mut current = self.endpoints.write().unwrap();
        if **current == endpoints {
            return false;
        }
        if let Some(affinity) = &self.affinity {
            affinity
                .clients
                .lock()
                .unwrap()
                .retain(|_, (endpoint, _)| endpoints.contains(endpoint));
        }
        *current = Arc::new(endpoints);
        true
    }

    /// Is `endpoint` still one to send to? (UDP flows check this for every datagram, so a
    /// flow to a removed endpoint moves to another one.)
    pub fn contains(&self, endpoint: SocketAddrV4) -> bool {
        self.endpoints.read().unwrap().contains(&endpoint)
    }

    /// Endpoints to try for a new connection from `client`, best first: the client's sticky
    /// endpoint (affinity) or the next one in round-robin order, then the others in order,
    /// so a connect that fails can move on. Empty when there is no endpoint.
    pub fn candidates(&self, client: IpAddr) -> Vec<SocketAddrV4> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Vec::new();
        }
        let sticky = self.affinity.as_ref().and_then(|affinity| {
            let mut clients = affinity.clients.lock().unwrap();
            match clients.get(&client) {
                Some((endpoint, last)) if last.elapsed() < affinity.timeout => {
                    endpoints.iter().position(|e| e == endpoint)
                }
                Some(_) => {
                    clients.remove(&client);
                    None
                }
                None => None,
            }
        });
        let start =
            sticky.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len());
        (0..endpoints.len())
            .map(|i| endpoints[(start + i) % endpoints.len()])
            .collect()
    }

    /// Records that `client` was served by `endpoint` (affinity only; a no-op otherwise).
    pub fn served(&self, client: IpAddr, endpoint: SocketAddrV4) {
        if let Some(affinity) = &self.affinity {
            let mut clients = affinity.clients.lock().unwrap();
            // Forget long-idle clients now and then, so the table cannot grow without bound.
            if clients.len() > 4096 {
                clients.retain(|_, (_, last)| last.elapsed() < affinity.timeout);
            }
            clients.insert(client, (endpoint, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddrV4> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn client(n: u8) -> IpAddr {
        IpAddr::from([10, 88, 1, n])
    }

    #[test]
    fn picks_rotate_over_every_endpoint_and_list_the_others_as_fallbacks() {
        let backends = Backends::new(addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]), None);
        let firsts: Vec<SocketAddrV4> = (0..6).map(|_| backends.candidates(client(1))[0]).collect();
        assert_eq!(
            firsts,
            addrs(&[
                "10.0.0.1:80",
                "10.0.0.2:80",
                "10.0.0.3:80",
                "10.0.0.1:80",
                "10.0.0.2:80",
                "10.0.0.3:80"
            ])
        );
        let all = backends.candidates(client(1));
        assert_eq!(all, addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]));
    }

    #[test]
    fn no_endpoint_gives_no_candidate() {
        let backends = Backends::new(Vec::new(), None);
        assert!(backends.candidates(client(1)).is_empty());
    }

    #[test]
    fn a_replaced_list_takes_effect_at_the_next_pick() {
        let backends = Backends::new(addrs(&["10.0.0.1:80", "10.0.0.2:80"]), None);
        assert!(!backends.replace(addrs(&["10.0.0.1:80", "10.0.0.2:80"])));
        assert!(backends.replace(addrs(&["10.0.0.2:80"])));
        for _ in 0..4 {
            assert_eq!(backends.candidates(client(1)), addrs(&["10.0.0.2:80"]));
        }
        assert!(!backends.contains("10.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn client_ip_affinity_sticks_until_the_endpoint_goes_away_or_times_out() {
        let backends = Backends::new(
            addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]),
            Some(Duration::from_millis(200)),
        );
        let first = backends.candidates(client(1))[0];
        backends.served(client(1), first);
        for _ in 0..5 {
            // Other clients move the round-robin on; client 1 stays put.
            let other = backends.candidates(client(2))[0];
            backends.served(client(2), other);
            assert_eq!(backends.candidates(client(1))[0], first);
        }
        // Its endpoint is removed: it is spread again, to a remaining endpoint.
        let remaining: Vec<SocketAddrV4> = backends
            .endpoints()
            .iter()
            .copied()
            .filter(|e| *e != first)
            .collect();
        backends.replace(remaining.clone());
        let moved = backends.candidates(client(1))[0];
        assert!(remaining.contains(&moved));
        backends.served(client(1), moved);
        // Idle past the timeout: forgotten.
        std::thread::sleep(Duration::from_millis(250));
        let picks: Vec<SocketAddrV4> = (0..4).map(|_| backends.candidates(client(1))[0]).collect();
        assert!(picks.iter().any(|p| *p != moved), "{picks:?}");
    }
}
