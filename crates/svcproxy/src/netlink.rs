//! The four rtnetlink requests the proxy makes: create a bridge, bring a link up, add and
//! delete an IPv4 address.
//!
//! Written over a raw NETLINK_ROUTE socket (as crates/cni does) rather than with an rtnetlink
//! crate: four fixed requests, each acknowledged, the kernel's errno returned as an
//! `io::Error`. No `ip` binary is needed: many sandboxes have none.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// linux/rtnetlink.h, linux/netlink.h, linux/if_link.h, linux/if_addr.h
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NLMSG_HDR_LEN: usize = 16;

/// One request: header, fixed part, attributes.
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
        self.buf
            .extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        self.buf.extend_from_slice(&(index as i32).to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// struct ifaddrmsg { family, prefixlen, flags, scope, index }.
    fn ifaddrmsg(mut self, prefix: u8, index: u32) -> Self {
        self.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A NETLINK_ROUTE socket in the caller's network namespace.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
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
        // SAFETY: fd is a fresh descriptor nobody else owns.
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
            let got = got as usize;
            let mut at = 0usize;
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
                at += len.next_multiple_of(4);
            }
        }
    }

    /// `ip link add NAME type bridge`. No NLA_F_NESTED on IFLA_LINKINFO: gVisor refuses the
    /// flagged form with EOPNOTSUPP (docs/cni.md).
    pub fn create_bridge(&self, name: &str) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfomsg(0, 0, 0);
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        req.attr(IFLA_IFNAME, &name_z);
        let mut kind = Vec::new();
        // The nested IFLA_INFO_KIND attribute, built by hand: len, type, "bridge", padding.
        let payload = b"bridge";
        kind.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        kind.extend_from_slice(&IFLA_INFO_KIND.to_ne_bytes());
        kind.extend_from_slice(payload);
        kind.resize(kind.len().next_multiple_of(4), 0);
        req.attr(IFLA_LINKINFO, &kind);
        self.execute(req.finish())
    }

    /// `ip link set INDEX up`.
    pub fn set_up(&self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.execute(
            Request::new(RTM_NEWLINK, 0)
                .ifinfomsg(index, up, up)
                .finish(),
        )
    }

    /// `ip addr add ADDR/PREFIX dev INDEX`.
    pub fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL).ifaddrmsg(prefix, index);
        req.attr(IFA_LOCAL, &addr.octets());
        req.attr(IFA_ADDRESS, &addr.octets());
        self.execute(req.finish())
    }

    /// `ip addr del ADDR/PREFIX dev INDEX`.
    pub fn delete_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut req = Request::new(RTM_DELADDR, 0).ifaddrmsg(prefix, index);
        req.attr(IFA_LOCAL, &addr.octets());
        req.attr(IFA_ADDRESS, &addr.octets());
        self.execute(req.finish())
    }
}

/// The index of interface `name`, or `None` when there is no such interface.
pub fn link_index(name: &str) -> io::Result<Option<u32>> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: c_name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index != 0 {
        return Ok(Some(index));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_request_is_laid_out_as_the_kernel_expects() {
        let mut req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL).ifaddrmsg(32, 7);
        req.attr(IFA_LOCAL, &[10, 43, 0, 10]);
        let bytes = req.finish();
        // header 16 + ifaddrmsg 8 + one 8-byte attribute
        assert_eq!(bytes.len(), 32);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(bytes[4..6].try_into().unwrap()),
            RTM_NEWADDR
        );
        let flags = u16::from_ne_bytes(bytes[6..8].try_into().unwrap());
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        assert_eq!(&bytes[16..20], &[libc::AF_INET as u8, 32, 0, 0]);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes(bytes[24..26].try_into().unwrap()), 8);
        assert_eq!(
            u16::from_ne_bytes(bytes[26..28].try_into().unwrap()),
            IFA_LOCAL
        );
        assert_eq!(&bytes[28..32], &[10, 43, 0, 10]);
    }

    #[test]
    fn a_missing_interface_has_no_index() {
        assert_eq!(link_index("svcp-nonexist").unwrap(), None);
        assert!(link_index("lo").unwrap().is_some());
    }
}
