//! Five rtnetlink requests over a raw NETLINK_ROUTE socket: add and delete an IPv4 address
//! (the node address on lo, `node_ip.rs`), delete a link (the CNI bridge, `cni_host.rs`), add
//! and delete an IPv4 route via a gateway (other nodes' pod ranges, `node_routes.rs`).
//!
//! The installer must work in sandboxes without iproute2, so it does not shell out to `ip`.
//! The CNI plugin has its own client for creating links and routes (crates/cni/src/netlink.rs);
//! the two are separate binaries and share none of these requests.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// linux/rtnetlink.h, linux/netlink.h, linux/if_addr.h
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// Scope global, as `ip addr add A/32 dev lo` gives an address outside 127/8.
const RT_SCOPE_UNIVERSE: u8 = 0;
// linux/rtnetlink.h: the main table, a unicast route, and the attributes a gateway route needs.
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
/// The routing protocol our routes carry (`ip route` shows `proto 44`): 44 is unassigned in
/// iproute2's rt_protos, so an operator can tell these routes from their own.
pub const ROUTE_PROTOCOL: u8 = 44;
const NLMSG_HDR_LEN: usize = 16;

/// `ip addr add ADDR/PREFIX dev INDEX`.
pub fn add_address(index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
    execute(&address_message(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        index,
        address,
        prefix,
    ))
}

/// `ip addr del ADDR/PREFIX dev INDEX`.
pub fn delete_address(index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
    execute(&address_message(RTM_DELADDR, 0, index, address, prefix))
}

/// `ip link del INDEX`.
pub fn delete_link(index: u32) -> io::Result<()> {
    let mut buf = header(RTM_DELLINK, 0);
    // struct ifinfomsg { family, pad, type, index, flags, change }
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&(index as i32).to_ne_bytes());
    buf.extend_from_slice(&[0u8; 8]);
    execute(&finish(buf))
}

/// `ip route add DST/PREFIX via GATEWAY dev INDEX proto 44`. Fails with EEXIST when a route to
/// DST/PREFIX exists already (whoever made it: it is not replaced). The device is named
/// because gVisor does not resolve it from the gateway: without it the route is listed by
/// `ip route` but has no interface, is missing from /proc/net/route, and carries nothing.
pub fn add_route(dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
    let mut message = route_message(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        dst,
        prefix,
        gateway,
    );
    message.extend_from_slice(&8u16.to_ne_bytes());
    message.extend_from_slice(&RTA_OIF.to_ne_bytes());
    message.extend_from_slice(&index.to_ne_bytes());
    execute(&finish(message))
}

/// `ip route del DST/PREFIX via GATEWAY proto 44`.
pub fn delete_route(dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> io::Result<()> {
    execute(&route_message(RTM_DELROUTE, 0, dst, prefix, gateway))
}

/// nlmsghdr + rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags }
/// + RTA_DST + RTA_GATEWAY.
fn route_message(kind: u16, flags: u16, dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Vec<u8> {
    let mut buf = header(kind, flags);
    buf.extend_from_slice(&[
        libc::AF_INET as u8,
        prefix,
        0,
        0,
        RT_TABLE_MAIN,
        ROUTE_PROTOCOL,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    for (kind, address) in [(RTA_DST, dst), (RTA_GATEWAY, gateway)] {
        buf.extend_from_slice(&8u16.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&address.octets());
    }
    finish(buf)
}

fn header(kind: u16, flags: u16) -> Vec<u8> {
    let mut buf = vec![0u8; NLMSG_HDR_LEN];
    buf[4..6].copy_from_slice(&kind.to_ne_bytes());
    buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    buf[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    buf
}

/// Writes the total length into the header.
fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// nlmsghdr + ifaddrmsg { family, prefixlen, flags, scope, index } + IFA_LOCAL + IFA_ADDRESS.
fn address_message(kind: u16, flags: u16, index: u32, address: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let mut buf = header(kind, flags);
    buf.extend_from_slice(&[libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE]);
    buf.extend_from_slice(&index.to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        buf.extend_from_slice(&8u16.to_ne_bytes()); // attribute length: header + 4 bytes
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&address.octets());
    }
    finish(buf)
}

/// Sends one request on a fresh socket and returns the kernel's answer as an io::Error.
fn execute(message: &[u8]) -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: message is a valid buffer of the given length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = vec![0u8; 8192];
    loop {
        // SAFETY: reply is a writable buffer of the given length.
        let got = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        let mut at = 0usize;
        while at + NLMSG_HDR_LEN <= got {
            let len = u32::from_ne_bytes(reply[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().expect("2 bytes"));
            if len < NLMSG_HDR_LEN || at + len > got {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink reply",
                ));
            }
            if kind == NLMSG_ERROR {
                let errno =
                    i32::from_ne_bytes(reply[at + 16..at + 20].try_into().expect("4 bytes"));
                return if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-errno))
                };
            }
            at += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_has_the_layout_iproute2_sends() {
        let m = address_message(RTM_NEWADDR, NLM_F_CREATE, 1, Ipv4Addr::new(10, 1, 2, 3), 32);
        assert_eq!(m.len(), 16 + 8 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 32, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 1);
        assert_eq!(&m[28..32], &[10, 1, 2, 3]);
        assert_eq!(&m[36..40], &[10, 1, 2, 3]);
    }

    #[test]
    fn route_message_has_the_layout_iproute2_sends() {
        let m = route_message(
            RTM_NEWROUTE,
            NLM_F_CREATE,
            Ipv4Addr::new(10, 42, 1, 0),
            24,
            Ipv4Addr::new(10, 200, 0, 3),
        );
        // header 16 + rtmsg 12 + two 8-byte attributes
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 44);
        assert_eq!(
            &m[16..24],
            &[libc::AF_INET as u8, 24, 0, 0, 254, ROUTE_PROTOCOL, 0, 1]
        );
        assert_eq!(u16::from_ne_bytes(m[30..32].try_into().unwrap()), RTA_DST);
        assert_eq!(&m[32..36], &[10, 42, 1, 0]);
        assert_eq!(
            u16::from_ne_bytes(m[38..40].try_into().unwrap()),
            RTA_GATEWAY
        );
        assert_eq!(&m[40..44], &[10, 200, 0, 3]);
    }
}
