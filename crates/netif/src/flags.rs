//! Interface queries and flag changes through the classic SIOC* ioctls, in the calling
//! thread's network namespace.
//!
//! Links come up this way rather than by RTM_NEWLINK: Linux and every gVisor generation
//! implement SIOCSIFFLAGS, while the 2022 gVisor rejects RTM_NEWLINK.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};

fn control_socket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: every request used here reads or writes one ifreq, which `req` points to.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn flags(name: &str) -> io::Result<libc::c_short> {
    let mut req = ifreq_for(name)?;
    ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

const IFF_UP: libc::c_short = libc::IFF_UP as libc::c_short;

/// Whether `name` exists and is administratively up.
pub fn is_up(name: &str) -> io::Result<bool> {
    Ok(flags(name)? & IFF_UP != 0)
}

/// Sets `name` up (`ip link set NAME up`) or down; a no-op where it is so already.
pub fn set_up(name: &str, up: bool) -> io::Result<()> {
    let current = flags(name)?;
    let wanted = if up {
        current | IFF_UP
    } else {
        current & !IFF_UP
    };
    if wanted == current {
        return Ok(());
    }
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_flags = wanted;
    ioctl(libc::SIOCSIFFLAGS, &mut req)
}

/// The primary IPv4 address of `name`, or None if it has none.
pub fn ipv4_address(name: &str) -> io::Result<Option<Ipv4Addr>> {
    let mut req = ifreq_for(name)?;
    match ioctl(libc::SIOCGIFADDR, &mut req) {
        Ok(()) => {
            // SAFETY: SIOCGIFADDR filled ifru_addr with a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::mem::transmute_copy(&req.ifr_ifru.ifru_addr) };
            Ok(Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The MAC address of `name` as "aa:bb:cc:dd:ee:ff".
pub fn mac_address(name: &str) -> io::Result<String> {
    let mut req = ifreq_for(name)?;
    ioctl(libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(data[..6]
        .iter()
        .map(|b| format!("{:02x}", *b as u8))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lo_reads_as_up_and_a_missing_interface_as_an_error() {
        assert!(is_up("lo").unwrap());
        assert!(is_up("netif-nonexist").is_err());
        assert!(
            is_up("").is_err(),
            "an empty name is refused before the ioctl"
        );
    }
}
