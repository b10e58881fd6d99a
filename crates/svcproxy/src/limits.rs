//! How much the proxy holds for its clients, so that one client cannot take it all: UDP flows
//! per listening socket (in total and per client address) and TCP connections (in total, for
//! the whole proxy, and per client address), each with an idle timeout. The numbers come
//! from the command line; the TCP counts are shared by every listener, since they guard the
//! process's file descriptors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct UdpLimits {
    /// A flow without traffic either way for this long is closed.
    pub idle: Duration,
    /// Flows per listening socket; past it the least recently used flow is closed for the new
    /// one (a new client is never dropped for a full table).
    pub max_flows: usize,
    /// Flows of one client address per listening socket; past it that client's least recently
    /// used flow is closed, so one pod cannot push every other client out.
    pub max_flows_per_source: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// A connection without a byte either way for this long is closed.
    pub idle: Duration,
    /// Connections through the whole proxy; past it new ones are reset.
    pub max_connections: usize,
    /// Connections of one client address through the whole proxy; past it that client's new
    /// ones are reset, so one pod cannot use up the rest.
    pub max_per_source: usize,
}

/// The open TCP connections, in total and per client address.
#[derive(Debug)]
pub struct TcpCounts {
    limits: TcpLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it gives its place back.
pub struct TcpPermit {
    counts: Arc<TcpCounts>,
    source: IpAddr,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    Source(usize),
}

impl TcpCounts {
    pub fn new(limits: TcpLimits) -> Arc<Self> {
        Arc::new(TcpCounts {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for one more connection from `source`, if the caps allow it.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<TcpPermit, Refused> {
        let mut open = self.open.lock().unwrap();
        let (total, per_source) = &mut *open;
        if *total >= self.limits.max_connections {
            return Err(Refused::Total(self.limits.max_connections));
        }
        let mine = per_source.entry(source).or_insert(0);
        if *mine >= self.limits.max_per_source {
            return Err(Refused::Source(self.limits.max_per_source));
        }
        *mine += 1;
        *total += 1;
        Ok(TcpPermit {
            counts: self.clone(),
            source,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap().0
    }
}

impl TcpPermit {
    /// The idle timeout of the connection this permit admitted.
    pub fn idle(&self) -> Duration {
        self.counts.limits.idle
    }
}

impl Drop for TcpPermit {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap();
        let (total, per_source) = &mut *open;
        *total -= 1;
        if let Some(mine) = per_source.get_mut(&self.source) {
            *mine -= 1;
            if *mine == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

/// The most TCP connections the open-file limit leaves room for: each takes two descriptors
/// (client and endpoint), and some are kept for listeners, UDP flows and the API client.
pub fn tcp_connections_for_open_files(open_files: u64) -> usize {
    const KEPT: u64 = 1024;
    (open_files.saturating_sub(KEPT) / 2).max(64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_caps_hold_per_source_and_in_total_and_places_come_back() {
        let counts = TcpCounts::new(TcpLimits {
            idle: Duration::from_secs(1),
            max_connections: 5,
            max_per_source: 3,
        });
        let a: IpAddr = [10, 88, 0, 2].into();
        let b: IpAddr = [10, 88, 0, 3].into();
        let held: Vec<TcpPermit> = (0..3).map(|_| counts.admit(a).unwrap()).collect();
        assert_eq!(counts.admit(a).err(), Some(Refused::Source(3)));
        let b1 = counts.admit(b).unwrap();
        let _b2 = counts.admit(b).unwrap();
        assert_eq!(counts.admit(b).err(), Some(Refused::Total(5)));
        drop(b1);
        assert!(counts.admit(b).is_ok());
        drop(held);
        assert_eq!(counts.open(), 1);
        assert!(counts.admit(a).is_ok());
    }

    #[test]
    fn the_open_file_limit_bounds_the_connections() {
        assert_eq!(tcp_connections_for_open_files(1024 * 1024), 523_776);
        assert_eq!(tcp_connections_for_open_files(4096), 1536);
        assert_eq!(tcp_connections_for_open_files(1024), 64);
    }
}
