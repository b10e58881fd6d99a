//! The block of IPv4 addresses a network hands out, and the order it tries them in.

use crate::error::{CniError, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRange {
    pub subnet: Ipv4Net,
    /// First and last address that may be allocated (inclusive).
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    /// Never allocated to a pod: in veth-bridge mode it sits on the bridge.
    pub gateway: Ipv4Addr,
}

impl AddressRange {
    /// Defaults follow host-local: gateway is the subnet's first host, the range is every host
    /// address (network and broadcast addresses excluded).
    pub fn new(
        subnet: Ipv4Net,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Self> {
        if subnet.prefix_len() > 30 {
            return Err(CniError::invalid_config(
                format!("subnet {subnet} is too small"),
                "use a prefix of /30 or shorter so there is room for a gateway and pods",
            ));
        }
        let network = u32::from(subnet.network());
        let broadcast = u32::from(subnet.broadcast());
        let gateway = gateway.unwrap_or(Ipv4Addr::from(network + 1));
        let start = start.unwrap_or(Ipv4Addr::from(network + 1));
        let end = end.unwrap_or(Ipv4Addr::from(broadcast - 1));
        for (key, addr) in [
            ("gateway", gateway),
            ("rangeStart", start),
            ("rangeEnd", end),
        ] {
            let a = u32::from(addr);
            if a <= network || a >= broadcast {
                return Err(CniError::invalid_config(
                    format!("\"{key}\" {addr} is not a host address of subnet {subnet}"),
                    "pick an address inside the subnet, excluding its network and broadcast addresses",
                ));
            }
        }
        if u32::from(start) > u32::from(end) {
            return Err(CniError::invalid_config(
                format!("\"rangeStart\" {start} is after \"rangeEnd\" {end}"),
                "swap them or drop both to use the whole subnet",
            ));
        }
        Ok(AddressRange {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        a >= u32::from(self.start) && a <= u32::from(self.end) && addr != self.gateway
    }

    /// How many addresses can be handed out in total.
    pub fn capacity(&self) -> u64 {
        let span = u64::from(u32::from(self.end) - u32::from(self.start)) + 1;
        let gateway_inside = u32::from(self.gateway) >= u32::from(self.start)
            && u32::from(self.gateway) <= u32::from(self.end);
        span - u64::from(gateway_inside)
    }

    /// Every allocatable address once, starting after `last` (round robin like host-local, so a
    /// just-released address is not reused at once) and wrapping around.
    pub fn candidates_after(&self, last: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let start = u32::from(self.start);
        let end = u32::from(self.end);
        let len = u64::from(end - start) + 1;
        let first = match last {
            Some(l) if self.contains(l) => (u64::from(u32::from(l) - start) + 1) % len,
            _ => 0,
        };
        (0..len)
            .map(move |i| Ipv4Addr::from(start + ((first + i) % len) as u32))
            .filter(move |a| *a != self.gateway)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(cidr: &str) -> AddressRange {
        AddressRange::new(cidr.parse().unwrap(), None, None, None).unwrap()
    }

    #[test]
    fn skips_gateway_and_wraps_after_last() {
        let r = range("10.0.0.0/29"); // hosts .1-.6, gateway .1
        assert_eq!(r.capacity(), 5);
        let all: Vec<_> = r
            .candidates_after(Some(Ipv4Addr::new(10, 0, 0, 4)))
            .collect();
        let expect: Vec<Ipv4Addr> = [5, 6, 2, 3, 4]
            .iter()
            .map(|&d| Ipv4Addr::new(10, 0, 0, d))
            .collect();
        assert_eq!(all, expect);
    }

    #[test]
    fn rejects_ranges_outside_the_subnet() {
        let subnet = "10.0.0.0/24".parse().unwrap();
        assert!(AddressRange::new(subnet, Some(Ipv4Addr::new(10, 0, 1, 1)), None, None).is_err());
        assert!(AddressRange::new(
            subnet,
            Some(Ipv4Addr::new(10, 0, 0, 9)),
            Some(Ipv4Addr::new(10, 0, 0, 8)),
            None
        )
        .is_err());
        assert!(AddressRange::new("10.0.0.0/31".parse().unwrap(), None, None, None).is_err());
    }
}
