//! Interface queries and flag changes through the classic SIOC* ioctls, in the calling
//! thread's network namespace.
//!
//! These work on Linux and in gVisor alike (gVisor 2022 rejects RTM_NEWLINK but implements
//! SIOCSIFFLAGS), which is why bringing `lo` up does not use netlink.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    use std::os::fd::AsRawFd;
    let sock = control_socket()?;
    // SAFETY: every request used here reads/writes one ifreq, which `req` points to.
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

/// Whether `name` exists and is administratively up.
pub fn is_up(name: &str) -> io::Result<bool> {
    Ok(flags(name)? & libc::IFF_UP as libc::c_short != 0)
}

/// Sets IFF_UP on `name` (a no-op if it is already up).
pub fn set_up(name: &str) -> io::Result<()> {
    let current = flags(name)?;
    if current & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_flags = current | libc::IFF_UP as libc::c_short;
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

/// The interface index of `name`, or None if no such interface exists.
pub fn index(name: &str) -> io::Result<Option<u32>> {
    let cname =
        std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ENODEV) {
            Ok(None)
        } else {
            Err(err)
        };
    }
    Ok(Some(idx))
}
