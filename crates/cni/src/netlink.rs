//! A minimal rtnetlink client: just the requests veth-bridge mode needs.
//!
//! Hand-written over a raw NETLINK_ROUTE socket instead of an rtnetlink crate because we need
//! six fixed requests, synchronously, in a statically linked binary that must stay small; the
//! async crates would pull in a runtime. Each request is acknowledged (NLM_F_ACK) and the
//! kernel's errno is returned as an `io::Error`, so callers can tell "not supported here"
//! (gVisor) from real failures.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Message types and flags (linux/rtnetlink.h, linux/netlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
// Attributes (linux/if_link.h, linux/if_addr.h, linux/rtnetlink.h, linux/veth.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

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
    fn ifinfomsg(mut self, index: u32) -> Self {
        push_ifinfomsg(&mut self.buf, index);
        self
    }

    fn bytes(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        pad4(&mut self.buf);
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        push_attr(&mut self.buf, kind, data);
        self
    }

    /// Opens a nested attribute. Deliberately without the NLA_F_NESTED flag, as iproute2 does:
    /// Linux accepts either, but gVisor compares the raw attribute type and answers
    /// EOPNOTSUPP to IFLA_LINKINFO|NLA_F_NESTED.
    fn begin_nested(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        push_attr(&mut self.buf, kind, &[]);
        at
    }

    fn end_nested(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn push_ifinfomsg(buf: &mut Vec<u8>, index: u32) {
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&(index as i32).to_ne_bytes());
    buf.extend_from_slice(&[0u8; 8]); // flags, change
    debug_assert_eq!(IFINFOMSG_LEN, 16);
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = (4 + data.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    pad4(buf);
}

fn pad4(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn cstr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
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
        Ok(Netlink {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends one request and waits for its acknowledgement.
    fn execute(&self, message: Vec<u8>) -> io::Result<()> {
        // SAFETY: message is a valid buffer of the given length.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = vec![0u8; 8192];
        loop {
            // SAFETY: reply is a writable buffer of the given length.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut at = 0usize;
            let got = got as usize;
            while at + NLMSG_HDR_LEN <= got {
                let len = u32::from_ne_bytes(reply[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().unwrap());
                if len < NLMSG_HDR_LEN || at + len > got {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                if kind == NLMSG_ERROR {
                    let errno = i32::from_ne_bytes(reply[at + 16..at + 20].try_into().unwrap());
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

    /// `ip link add NAME type bridge`.
    pub fn create_bridge(&self, name: &str) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfomsg(0);
        req.attr(IFLA_IFNAME, &cstr(name));
        let info = req.begin_nested(IFLA_LINKINFO);
        req.attr(IFLA_INFO_KIND, b"bridge");
        req.end_nested(info);
        self.execute(req.finish())
    }

    /// `ip link add HOST type veth peer name PEER netns PEER_NETNS_FD`.
    pub fn create_veth(&self, host: &str, peer: &str, peer_netns_fd: i32) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfomsg(0);
        req.attr(IFLA_IFNAME, &cstr(host));
        let info = req.begin_nested(IFLA_LINKINFO);
        req.attr(IFLA_INFO_KIND, b"veth");
        let data = req.begin_nested(IFLA_INFO_DATA);
        let peer_at = req.begin_nested(VETH_INFO_PEER);
        let mut peer_info = Vec::new();
        push_ifinfomsg(&mut peer_info, 0);
        req.bytes(&peer_info);
        req.attr(IFLA_IFNAME, &cstr(peer));
        req.attr(IFLA_NET_NS_FD, &(peer_netns_fd as u32).to_ne_bytes());
        req.end_nested(peer_at);
        req.end_nested(data);
        req.end_nested(info);
        self.execute(req.finish())
    }

    /// `ip link set dev INDEX master MASTER`.
    pub fn set_master(&self, index: u32, master: u32) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, 0).ifinfomsg(index);
        req.attr(IFLA_MASTER, &master.to_ne_bytes());
        self.execute(req.finish())
    }

    /// `ip link del INDEX`.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.execute(Request::new(RTM_DELLINK, 0).ifinfomsg(index).finish())
    }

    /// `ip addr add ADDR/PREFIX dev INDEX`.
    pub fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        // struct ifaddrmsg { family, prefixlen, flags, scope, index }
        let mut head = vec![libc::AF_INET as u8, prefix, 0, 0];
        head.extend_from_slice(&index.to_ne_bytes());
        req.bytes(&head);
        req.attr(IFA_LOCAL, &addr.octets());
        req.attr(IFA_ADDRESS, &addr.octets());
        self.execute(req.finish())
    }

    /// `ip route add default via GATEWAY dev INDEX`.
    pub fn add_default_route(&self, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags }
        let mut head = vec![
            libc::AF_INET as u8,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            0,
            RTN_UNICAST,
        ];
        head.extend_from_slice(&0u32.to_ne_bytes());
        req.bytes(&head);
        req.attr(RTA_GATEWAY, &gateway.octets());
        req.attr(RTA_OIF, &index.to_ne_bytes());
        self.execute(req.finish())
    }
}
