//! The addresses on the links of the calling thread's network namespace (getifaddrs(3)).

use std::io;
use std::net::IpAddr;

use nix::net::if_::InterfaceFlags;

/// One address of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub interface: String,
    pub address: IpAddr,
    /// Prefix length (from the netmask; 32 or 128 where there is none).
    pub prefix: u8,
    /// The link is administratively up.
    pub up: bool,
}

/// Every IPv4 and IPv6 address of link `name`, or of every link with `None`; links up or not.
pub fn addresses(name: Option<&str>) -> io::Result<Vec<Address>> {
    let list = nix::ifaddrs::getifaddrs()?;
    Ok(list
        .filter(|ifa| name.is_none_or(|name| ifa.interface_name == name))
        .filter_map(|ifa| {
            let address = ifa.address?;
            let (address, prefix) = if let Some(v4) = address.as_sockaddr_in() {
                let prefix = ifa
                    .netmask
                    .and_then(|m| m.as_sockaddr_in().map(|m| m.ip().to_bits().count_ones()))
                    .unwrap_or(32);
                (IpAddr::V4(v4.ip()), prefix as u8)
            } else if let Some(v6) = address.as_sockaddr_in6() {
                let prefix = ifa
                    .netmask
                    .and_then(|m| m.as_sockaddr_in6().map(|m| m.ip().to_bits().count_ones()))
                    .unwrap_or(128);
                (IpAddr::V6(v6.ip()), prefix as u8)
            } else {
                return None;
            };
            Some(Address {
                interface: ifa.interface_name,
                address,
                prefix,
                up: ifa.flags.contains(InterfaceFlags::IFF_UP),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn loopback_is_listed_and_a_link_filters() {
        let lo = Address {
            interface: "lo".into(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            prefix: 8,
            up: true,
        };
        let all = addresses(None).unwrap();
        assert!(all.contains(&lo), "{all:?}");
        let only_lo = addresses(Some("lo")).unwrap();
        assert!(only_lo.contains(&lo), "{only_lo:?}");
        assert!(only_lo.iter().all(|a| a.interface == "lo"), "{only_lo:?}");
        assert!(addresses(Some("netif-nonexist")).unwrap().is_empty());
    }
}
