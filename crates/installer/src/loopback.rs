//! k3s talks to itself over 127.0.0.1 (agent to server, kubectl to the API), and containerd's
//! CRI streaming server (kubectl/crictl exec) listens there, so lo must be up.
//! It is in gVisor and in every ordinary host, but not in a fresh Linux network namespace
//! (`unshare --net`): there k3s retries `dial tcp 127.0.0.1:6443: connect: network is
//! unreachable` until install gives up. `start` brings lo up where it is down and records the
//! IPv4 addresses lo had; uninstall sets it down again and removes the addresses it gained
//! (Linux gives lo 127.0.0.1/8 when it first comes up).
//!
//! Flags by the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls (the `netif` crate): Linux and every gVisor
//! generation implement them.

use anyhow::{Context, Result};

use crate::node_ip::{self, AddedAddress};
use crate::state::State;

const LO: &str = "lo";

fn is_up() -> bool {
    netif::is_up(LO).unwrap_or(false)
}

/// lo's IPv4 addresses now.
fn lo_ipv4() -> Vec<AddedAddress> {
    netif::addresses(Some(LO))
        .unwrap_or_default()
        .into_iter()
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
    netif::set_up(LO, true).context(
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
        match netif::set_up(LO, false) {
            Ok(()) => println!("set lo down again, as it was before install"),
            Err(error) => problems.push(format!("cannot set lo down again: {error}")),
        }
    }
    let index = match node_ip::lo_index() {
        Ok(index) => index,
        Err(error) => return vec![format!("{error:#}")],
    };
    for gained in lo_ipv4().into_iter().filter(|a| !before.contains(a)) {
        let deleted = netif::Netlink::open()
            .and_then(|netlink| netlink.delete_address(index, gained.address, gained.prefix));
        if let Err(error) = deleted {
            problems.push(format!(
                "cannot remove {}/{} from lo: {error}",
                gained.address, gained.prefix
            ));
        }
    }
    problems
}
