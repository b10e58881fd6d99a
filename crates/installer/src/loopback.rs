//! k3s talks to itself over 127.0.0.1 (agent to server, kubectl to the API), and containerd's
//! CRI streaming server (kubectl/crictl exec) listens there, so lo must be up.
//! It is in gVisor and in every ordinary host, but not in a fresh Linux network namespace
//! (`unshare --net`): there k3s retries `dial tcp 127.0.0.1:6443: connect: network is
//! unreachable` until install gives up. `start` brings lo up where it is down and records the
//! IPv4 addresses lo had; uninstall sets it down again and removes the addresses it gained
//! (Linux gives lo 127.0.0.1/8 when it first comes up).
//!
//! The classic SIOCGIFFLAGS/SIOCSIFFLAGS ioctls, as gvisor-cni uses them (crates/cni/src/
//! link.rs): Linux and both gVisors implement them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

use crate::netlink;
use crate::node_ip::{self, AddedAddress};
use crate::state::State;

const LO: &str = "lo";

fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(LO.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: req is a valid ifreq for these interface ioctls.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn flags() -> io::Result<libc::c_short> {
    let mut req = ifreq();
    ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

fn set_up(up: bool) -> io::Result<()> {
    let current = flags()?;
    let mut req = ifreq();
    req.ifr_ifru.ifru_flags = if up {
        current | libc::IFF_UP as libc::c_short
    } else {
        current & !(libc::IFF_UP as libc::c_short)
    };
    ioctl(libc::SIOCSIFFLAGS, &mut req)
}

pub fn is_up() -> bool {
    flags().is_ok_and(|f| f & libc::IFF_UP as libc::c_short != 0)
}

/// lo's IPv4 addresses now.
fn lo_ipv4() -> Vec<AddedAddress> {
    node_ip::interface_addresses()
        .into_iter()
        .filter(|a| a.interface == LO)
        .filter_map(|a| match a.address {
            std::net::IpAddr::V4(address) => Some(AddedAddress {
                address,
                prefix: a.prefix,
                interface: LO.into(),
            }),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

/// Brings lo up if it is down, saying so and recording what it was like.
pub fn ensure_up(state: &mut State) -> Result<()> {
    if is_up() {
        return Ok(());
    }
    let before = lo_ipv4();
    set_up(true).context(
        "lo is down and cannot be brought up: k3s needs 127.0.0.1 (`ip link set lo up`)",
    )?;
    println!("lo was down: brought it up (k3s talks to itself over 127.0.0.1)");
    if state.lo_before_up.is_none() {
        state.lo_before_up = Some(before);
        state.save()?;
    }
    Ok(())
}

/// Uninstall: if the install brought lo up, sets it down again and removes the IPv4 addresses
/// it did not have then. Returns one problem per failure.
pub fn restore(state: &State) -> Vec<String> {
    let Some(before) = &state.lo_before_up else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if is_up() {
        match set_up(false) {
            Ok(()) => println!("set lo down again, as it was before install"),
            Err(error) => problems.push(format!("cannot set lo down again: {error}")),
        }
    }
    let index = match node_ip::lo_index() {
        Ok(index) => index,
        Err(error) => return vec![format!("{error:#}")],
    };
    for gained in lo_ipv4().into_iter().filter(|a| !before.contains(a)) {
        if let Err(error) = netlink::delete_address(index, gained.address, gained.prefix) {
            problems.push(format!(
                "cannot remove {}/{} from lo: {error}",
                gained.address, gained.prefix
            ));
        }
    }
    problems
}
