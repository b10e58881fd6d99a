//! The rtnetlink requests, over one NETLINK_ROUTE socket: create a bridge or a veth pair,
//! enslave a link, delete it; add and delete IPv4 addresses and gateway routes.
//!
//! Written by hand rather than with the rtnetlink crates: a handful of fixed requests,
//! synchronous, in statically linked binaries that must stay small; the async crates would
//! pull in a runtime. Each request asks for an acknowledgement (NLM_F_ACK) and the kernel's
//! errno comes back as an `io::Error`, so callers can tell "not supported here" (gVisor's
//! EOPNOTSUPP) from real failures.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

// Message types and flags (linux/rtnetlink.h, linux/netlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
// Attributes (linux/if_link.h, linux/if_addr.h, linux/rtnetlink.h, linux/veth.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
/// The attribute type without the NLA_F_NESTED and NLA_F_NET_BYTEORDER flag bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Room for one link's RTM_NEWLINK reply (its statistics attributes alone take ~1 KiB).
const LINK_REPLY_BYTES: usize = 65536;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const NLMSG_HDR_LEN: usize = 16;

/// `proto boot` in `ip route`: what iproute2 gives a route added by hand.
pub const RTPROT_BOOT: u8 = 3;

/// An IPv4 route to `dst/prefix` via `gateway`; `prefix` 0 is the default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// The outgoing interface. Name it when adding: gVisor does not resolve the device from the
    /// gateway, so without it the route is listed by `ip route` but has no interface, is
    /// missing from /proc/net/route, and carries nothing.
    pub device: Option<u32>,
    /// `proto N` in `ip route`, so that an operator can tell whose route it is.
    pub protocol: u8,
}

/// One request under construction: header, fixed part, then attributes.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; NLMSG_HDR_LEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
        Request { buf }
    }

    /// struct ifinfomsg { family, pad, type, index, flags, change }.
    fn ifinfomsg(mut self, index: u32, flags: u32, change: u32) -> Self {
        push_ifinfomsg(&mut self.buf, index, flags, change);
        self
    }

    /// struct ifaddrmsg { family, prefixlen, flags, scope, index }.
    fn ifaddrmsg(mut self, prefix: u8, index: u32) -> Self {
        self.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags }.
    fn rtmsg(mut self, prefix: u8, protocol: u8) -> Self {
        self.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            prefix,
            0,
            0,
            RT_TABLE_MAIN,
            protocol,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad4(&mut self.buf);
        self
    }

    /// Opens a nested attribute. Deliberately without the NLA_F_NESTED flag, as iproute2 does:
    /// Linux accepts either, but gVisor compares the raw attribute type and answers
    /// EOPNOTSUPP to IFLA_LINKINFO|NLA_F_NESTED (docs/cni.md).
    fn begin_nested(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.attr(kind, &[]);
        at
    }

    fn end_nested(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Writes the total length into the header.
    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn push_ifinfomsg(buf: &mut Vec<u8>, index: u32, flags: u32, change: u32) {
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&(index as i32).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

fn pad4(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn nul_terminated(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn address_request(kind: u16, flags: u16, index: u32, address: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let mut req = Request::new(kind, flags).ifaddrmsg(prefix, index);
    req.attr(IFA_LOCAL, &address.octets());
    req.attr(IFA_ADDRESS, &address.octets());
    req.finish()
}

/// RTA_DST only for a non-default route: `ip route add default` sends none either.
fn route_request(kind: u16, flags: u16, route: &Route) -> Vec<u8> {
    let mut req = Request::new(kind, flags).rtmsg(route.prefix, route.protocol);
    if route.prefix != 0 {
        req.attr(RTA_DST, &route.dst.octets());
    }
    req.attr(RTA_GATEWAY, &route.gateway.octets());
    if let Some(index) = route.device {
        req.attr(RTA_OIF, &index.to_ne_bytes());
    }
    req.finish()
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        Ok(Netlink { fd })
    }

    /// Sends one request and waits for its acknowledgement.
    fn execute(&self, message: Vec<u8>) -> io::Result<()> {
        socket::send(self.fd.as_raw_fd(), &message, MsgFlags::empty())?;
        let mut reply = vec![0u8; 8192];
        loop {
            let got = socket::recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
            if let Some(answer) = acknowledgement(&reply[..got])? {
                return answer;
            }
        }
    }

    /// `ip link add NAME type bridge`.
    pub fn create_bridge(&self, name: &str) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfomsg(0, 0, 0);
        req.attr(IFLA_IFNAME, &nul_terminated(name));
        let info = req.begin_nested(IFLA_LINKINFO);
        req.attr(IFLA_INFO_KIND, b"bridge");
        req.end_nested(info);
        self.execute(req.finish())
    }

    /// `ip link add HOST address HOST_MAC type veth peer name PEER netns PEER_NETNS_FD`: the
    /// host end's MAC address is given in the creating request, so the link never exists
    /// without it (Linux and gVisor both take IFLA_ADDRESS there; see docs/cni.md).
    pub fn create_veth(
        &self,
        host: &str,
        host_mac: [u8; 6],
        peer: &str,
        peer_netns_fd: i32,
    ) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfomsg(0, 0, 0);
        req.attr(IFLA_IFNAME, &nul_terminated(host));
        req.attr(IFLA_ADDRESS, &host_mac);
        let info = req.begin_nested(IFLA_LINKINFO);
        req.attr(IFLA_INFO_KIND, b"veth");
        let data = req.begin_nested(IFLA_INFO_DATA);
        let peer_at = req.begin_nested(VETH_INFO_PEER);
        push_ifinfomsg(&mut req.buf, 0, 0, 0);
        req.attr(IFLA_IFNAME, &nul_terminated(peer));
        req.attr(IFLA_NET_NS_FD, &(peer_netns_fd as u32).to_ne_bytes());
        req.end_nested(peer_at);
        req.end_nested(data);
        req.end_nested(info);
        self.execute(req.finish())
    }

    /// `ip link set dev INDEX master MASTER`.
    pub fn set_master(&self, index: u32, master: u32) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, 0).ifinfomsg(index, 0, 0);
        req.attr(IFLA_MASTER, &master.to_ne_bytes());
        self.execute(req.finish())
    }

    /// The hardware address of link INDEX (`ip link show`'s "link/ether"), read by index so
    /// that it is the same link a later `delete_link(INDEX)` removes; None when the reply
    /// carries none.
    pub fn link_address(&self, index: u32) -> io::Result<Option<Vec<u8>>> {
        let req = Request::new(RTM_GETLINK, 0).ifinfomsg(index, 0, 0);
        socket::send(self.fd.as_raw_fd(), &req.finish(), MsgFlags::empty())?;
        let mut reply = vec![0u8; LINK_REPLY_BYTES];
        let mut address = None;
        loop {
            let got = socket::recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
            if let Some(found) = link_attribute(&reply[..got], IFLA_ADDRESS) {
                address = Some(found.to_vec());
            }
            if let Some(answer) = acknowledgement(&reply[..got])? {
                return answer.map(|()| address);
            }
        }
    }

    /// `ip link del INDEX`.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.execute(Request::new(RTM_DELLINK, 0).ifinfomsg(index, 0, 0).finish())
    }

    /// `ip addr add ADDR/PREFIX dev INDEX` (scope global, also for an address on lo outside
    /// 127/8).
    pub fn add_address(&self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.execute(address_request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            index,
            address,
            prefix,
        ))
    }

    /// `ip addr del ADDR/PREFIX dev INDEX`.
    pub fn delete_address(&self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.execute(address_request(RTM_DELADDR, 0, index, address, prefix))
    }

    /// `ip route add DST/PREFIX via GATEWAY [dev INDEX] proto P`. Fails with EEXIST when a route
    /// to DST/PREFIX exists already (whoever made it: it is not replaced).
    pub fn add_route(&self, route: &Route) -> io::Result<()> {
        self.execute(route_request(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            route,
        ))
    }

    /// `ip route del DST/PREFIX via GATEWAY [dev INDEX] proto P`.
    pub fn delete_route(&self, route: &Route) -> io::Result<()> {
        self.execute(route_request(RTM_DELROUTE, 0, route))
    }
}

/// The payload of attribute `kind` in the first RTM_NEWLINK message of a datagram of replies.
fn link_attribute(reply: &[u8], kind: u16) -> Option<&[u8]> {
    const IFINFOMSG_LEN: usize = 16;
    let mut at = 0usize;
    while at + NLMSG_HDR_LEN <= reply.len() {
        let len = u32::from_ne_bytes(reply[at..at + 4].try_into().ok()?) as usize;
        let message_kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().ok()?);
        if len < NLMSG_HDR_LEN || at + len > reply.len() {
            return None;
        }
        if message_kind == RTM_NEWLINK {
            let message = &reply[at..at + len];
            let mut attr = NLMSG_HDR_LEN + IFINFOMSG_LEN;
            while attr + 4 <= message.len() {
                let attr_len =
                    u16::from_ne_bytes(message[attr..attr + 2].try_into().ok()?) as usize;
                let attr_kind = u16::from_ne_bytes(message[attr + 2..attr + 4].try_into().ok()?);
                if attr_len < 4 || attr + attr_len > message.len() {
                    return None;
                }
                if attr_kind & NLA_TYPE_MASK == kind {
                    return Some(&message[attr + 4..attr + attr_len]);
                }
                attr += attr_len.next_multiple_of(4);
            }
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// Reads one datagram of replies: `Some(answer)` at the NLMSG_ERROR that acknowledges the
/// request (errno 0 is success), `None` when the datagram holds no acknowledgement yet.
fn acknowledgement(reply: &[u8]) -> io::Result<Option<io::Result<()>>> {
    let mut at = 0usize;
    while at + NLMSG_HDR_LEN <= reply.len() {
        let len = u32::from_ne_bytes(reply[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().expect("2 bytes"));
        if len < NLMSG_HDR_LEN || at + len > reply.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink reply",
            ));
        }
        if kind == NLMSG_ERROR {
            if len < NLMSG_HDR_LEN + 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink error message without an errno",
                ));
            }
            let errno = i32::from_ne_bytes(reply[at + 16..at + 20].try_into().expect("4 bytes"));
            return Ok(Some(if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-errno))
            }));
        }
        at += len.next_multiple_of(4);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(m: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(m[at..at + 2].try_into().unwrap())
    }

    fn u32_at(m: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(m[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn an_address_request_has_the_layout_iproute2_sends() {
        let m = address_request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            7,
            Ipv4Addr::new(10, 43, 0, 10),
            32,
        );
        // header 16 + ifaddrmsg 8 + two 8-byte attributes
        assert_eq!(m.len(), 16 + 8 + 8 + 8);
        assert_eq!(u32_at(&m, 0), 40);
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(
            u16_at(&m, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 32, 0, 0]);
        assert_eq!(u32_at(&m, 20), 7);
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, IFA_LOCAL));
        assert_eq!(&m[28..32], &[10, 43, 0, 10]);
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (8, IFA_ADDRESS));
        assert_eq!(&m[36..40], &[10, 43, 0, 10]);
    }

    #[test]
    fn a_gateway_route_request_has_the_layout_iproute2_sends() {
        let route = Route {
            dst: Ipv4Addr::new(10, 42, 1, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 200, 0, 3),
            device: Some(2),
            protocol: 44,
        };
        let m = route_request(RTM_NEWROUTE, NLM_F_CREATE, &route);
        // header 16 + rtmsg 12 + three 8-byte attributes
        assert_eq!(m.len(), 16 + 12 + 8 + 8 + 8);
        assert_eq!(u32_at(&m, 0), 52);
        assert_eq!(&m[16..24], &[libc::AF_INET as u8, 24, 0, 0, 254, 44, 0, 1]);
        assert_eq!(u16_at(&m, 30), RTA_DST);
        assert_eq!(&m[32..36], &[10, 42, 1, 0]);
        assert_eq!(u16_at(&m, 38), RTA_GATEWAY);
        assert_eq!(&m[40..44], &[10, 200, 0, 3]);
        assert_eq!(u16_at(&m, 46), RTA_OIF);
        assert_eq!(u32_at(&m, 48), 2);
    }

    #[test]
    fn a_default_route_request_carries_no_destination() {
        let route = Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Ipv4Addr::new(10, 42, 0, 1),
            device: None,
            protocol: RTPROT_BOOT,
        };
        let m = route_request(RTM_DELROUTE, 0, &route);
        assert_eq!(m.len(), 16 + 12 + 8);
        assert_eq!(u16_at(&m, 30), RTA_GATEWAY);
    }

    #[test]
    fn a_bridge_request_nests_the_kind_without_the_nested_flag() {
        let mut req = Request::new(RTM_NEWLINK, 0).ifinfomsg(0, 0, 0);
        let info = req.begin_nested(IFLA_LINKINFO);
        req.attr(IFLA_INFO_KIND, b"bridge");
        req.end_nested(info);
        let m = req.finish();
        // IFLA_LINKINFO: 4-byte header + IFLA_INFO_KIND (4 + "bridge", padded to 12)
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (16, IFLA_LINKINFO));
        assert_eq!((u16_at(&m, 36), u16_at(&m, 38)), (10, IFLA_INFO_KIND));
        assert_eq!(&m[40..46], b"bridge");
    }

    #[test]
    fn acknowledgements_are_read_as_errno() {
        let ack = |errno: i32| {
            let mut m = vec![0u8; 36];
            m[0..4].copy_from_slice(&36u32.to_ne_bytes());
            m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m[16..20].copy_from_slice(&errno.to_ne_bytes());
            m
        };
        assert!(matches!(acknowledgement(&ack(0)), Ok(Some(Ok(())))));
        let refused = acknowledgement(&ack(-libc::EOPNOTSUPP)).unwrap().unwrap();
        assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
        assert!(acknowledgement(&ack(0)[..20]).is_err(), "truncated");
        assert!(matches!(acknowledgement(&[]), Ok(None)));
    }

    #[test]
    fn the_hardware_address_is_read_from_a_link_reply() {
        // RTM_NEWLINK reply: header, ifinfomsg, IFLA_IFNAME "x", IFLA_ADDRESS (nested-flag bits
        // masked off, as a kernel may set them), then the acknowledgement.
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let mut req = Request::new(RTM_NEWLINK, 0).ifinfomsg(5, 0, 0);
        req.attr(IFLA_IFNAME, b"x\0");
        req.attr(IFLA_ADDRESS | 0x8000, &mac);
        let reply = req.finish();
        assert_eq!(link_attribute(&reply, IFLA_ADDRESS), Some(&mac[..]));
        assert_eq!(link_attribute(&reply, IFLA_MASTER), None);
        assert_eq!(
            link_attribute(&reply[..20], IFLA_ADDRESS),
            None,
            "truncated"
        );
    }
}
