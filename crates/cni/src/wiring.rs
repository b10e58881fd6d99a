//! Wiring the pod's network namespace, and the honest result that describes it.
//!
//! Two ways, chosen by `mode` (see docs/cni.md):
//! - loopback-only: bring `lo` up; the allocated address is reported without an interface,
//!   because no interface in the namespace carries it.
//! - veth-bridge: additionally a veth pair, CNI_IFNAME inside with the address and a default
//!   route, the host end in a bridge that holds the gateway address.
//!
//! `auto` tries veth-bridge and falls back to loopback-only only when the kernel says it cannot
//! create the links at all (gVisor answers RTM_NEWLINK with EOPNOTSUPP); any other failure is
//! reported as an error, never hidden by the fallback.

use crate::config::{Mode, NetConf};
use crate::error::{code, CniError, Result};
use crate::ipam::store::{warn, Allocation};
use crate::netns::NetNs;
use crate::result::{CniResult, Interface, IpConfig, Route};
use ipnet::Ipv4Net;
use std::io;
use std::net::Ipv4Addr;

/// What ADD did: the mode really applied, and the result to print.
pub struct Wired {
    pub mode: Mode,
    pub host_veth: Option<String>,
    pub result: CniResult,
}

/// Plugin-specific error code: CHECK found the network not as ADD left it.
pub const CODE_CHECK_FAILED: u32 = 101;

/// Why veth-bridge wiring stopped.
enum VethFailure {
    /// The kernel has no veth/bridge support (gVisor): auto mode may fall back.
    Unsupported {
        step: &'static str,
        err: io::Error,
    },
    Failed(CniError),
}

/// Errnos meaning "this kernel cannot do this at all", as opposed to "this went wrong".
fn means_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::ENOSYS | libc::EAFNOSUPPORT)
    )
}

/// SHA-256 of `CONTAINER_ID:IFNAME`: the host veth's name and its MAC address come from
/// disjoint parts of it.
fn attachment_digest(allocation: &Allocation) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("{}:{}", allocation.container_id, allocation.ifname)).into()
}

/// The host-side veth name for an attachment: derived, so DEL can find it from the store,
/// distinct per (container ID, ifname), and as long as IFNAMSIZ allows (15 characters): "gv"
/// and 13 base32 characters, the first 65 bits of the digest. A node with n veths then has a
/// collision chance of about n²/2⁶⁶ (the 32-bit hash before: 1 in ~2,000 at 2,000 pods); a
/// collision is still refused by the ownership mark, never resolved by deleting the other link.
pub fn host_veth_name(allocation: &Allocation) -> String {
    const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = attachment_digest(allocation);
    let bits = u128::from_be_bytes(digest[..16].try_into().expect("16 of 32 bytes"));
    let mut name = String::from("gv");
    for i in 0..13 {
        let index = (bits >> (128 - 5 * (i + 1))) & 0x1f;
        name.push(char::from(BASE32[index as usize]));
    }
    name
}

/// The ownership mark: the MAC address ADD gives the host end in the request that creates it,
/// from digest bytes 16..22 (disjoint from the name's bits), made locally administered and
/// unicast, so 46 bits. A link with the derived name but another MAC is not this attachment's
/// and is never deleted: another attachment's veth would have to match in both name and MAC
/// (111 bits), and a link made by anyone else carries a kernel-chosen or its own address.
///
/// A MAC and not an alias (IFLA_IFALIAS, `ip link set alias`): gVisor refuses the alias
/// (EOPNOTSUPP, measured in docs/cni.md) but takes IFLA_ADDRESS, in the creating request too,
/// so the link never exists unmarked, in gVisor and on Linux alike.
pub fn owner_mac(allocation: &Allocation) -> [u8; 6] {
    let digest = attachment_digest(allocation);
    let mut mac: [u8; 6] = digest[16..22].try_into().expect("6 of 32 bytes");
    // Bit 1 of the first octet: locally administered; bit 0 clear: unicast (IEEE 802).
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Host veth names of plugin versions before the mark: "gv" and 8 hex digits. Such a link
/// has a kernel-chosen MAC; DEL still removes it when the store records it.
fn is_unmarked_legacy_name(name: &str) -> bool {
    name.len() == 10 && name.starts_with("gv") && name[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether link `index` (named `host`) is someone else's, by its MAC address: `Ok(None)` when
/// it is this attachment's, `Ok(Some(why))` naming it and what it carries when not.
fn not_ours(
    netlink: &netif::Netlink,
    host: &str,
    index: u32,
    allocation: &Allocation,
) -> Result<Option<CniError>> {
    let have = netlink
        .link_address(index)
        .map_err(|e| CniError::io(format!("reading the MAC address of {host}"), e))?;
    Ok(judge_owner(host, have.as_deref(), allocation))
}

/// The pure half of [`not_ours`]: a link named `host` whose MAC address is `have`.
fn judge_owner(host: &str, have: Option<&[u8]>, allocation: &Allocation) -> Option<CniError> {
    let want = owner_mac(allocation);
    if have == Some(&want[..]) {
        return None;
    }
    let carried = have.map_or_else(|| "no MAC address".to_string(), mac_text);
    Some(CniError::new(
        code::IO_FAILURE,
        format!(
            "a link named {host} exists and was not made by this attachment (container {}, {}): \
             its MAC address is {carried}, not {} (the one this attachment gives its host veth)",
            allocation.container_id,
            allocation.ifname,
            mac_text(&want)
        ),
        format!(
            "it may be another pod's veth (a name collision) or anyone's link, so it is not \
             deleted; see what it is with `ip -d link show {host}`, and remove it with \
             `ip link del {host}` only if nothing uses it"
        ),
    ))
}

/// ADD: wires `netns` for `allocation` according to the configured mode.
pub fn wire(conf: &NetConf, allocation: &Allocation, netns: &NetNs) -> Result<Wired> {
    if let Some(err) = netns.join_unsupported() {
        return untouched_namespace(conf, allocation, netns, err);
    }
    netns.run(bring_loopback_up)?;
    match conf.mode {
        Mode::LoopbackOnly => Ok(loopback_only(allocation, netns)),
        Mode::VethBridge => match veth_bridge(conf, allocation, netns) {
            Ok(wired) => Ok(wired),
            Err(VethFailure::Failed(e)) => Err(e),
            Err(VethFailure::Unsupported { step, err }) => Err(CniError::new(
                code::NOT_AVAILABLE,
                format!("mode \"veth-bridge\" is not possible here: {step} failed: {err}"),
                "this kernel (e.g. gVisor) cannot create veth pairs or bridges; set \"mode\": \"auto\" or \"loopback-only\"",
            )),
        },
        Mode::Auto => match veth_bridge(conf, allocation, netns) {
            Ok(wired) => Ok(wired),
            Err(VethFailure::Failed(e)) => Err(e),
            Err(VethFailure::Unsupported { step, err }) => {
                warn(&format!("{step} failed ({err}); mode auto falls back to loopback-only"));
                Ok(loopback_only(allocation, netns))
            }
        },
    }
}

/// The kernel cannot join the namespace (setns unsupported), so nothing in it can be touched:
/// loopback-only and auto report no interface at all, veth-bridge is impossible.
fn untouched_namespace(
    conf: &NetConf,
    allocation: &Allocation,
    netns: &NetNs,
    err: io::Error,
) -> Result<Wired> {
    if conf.mode == Mode::VethBridge {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("cannot join network namespace {:?}: setns: {err}", netns.path),
            "this kernel (e.g. gVisor 2022) cannot enter network namespaces; set \"mode\": \"auto\" or \"loopback-only\"",
        ));
    }
    warn(&format!(
        "cannot join {} (setns: {err}); nothing inside it was configured",
        netns.path
    ));
    let mut wired = loopback_only(allocation, netns);
    wired.result.interfaces.clear();
    Ok(wired)
}

/// DEL: removes what ADD created outside the store. Missing links are fine (DEL is idempotent
/// and the namespace may already be gone, taking the veth pair with it).
pub fn unwire(allocation: &Allocation) -> Result<()> {
    let Some(host_veth) = &allocation.host_veth else {
        return Ok(());
    };
    let index =
        netif::index(host_veth).map_err(|e| CniError::io(format!("looking up {host_veth}"), e))?;
    let Some(index) = index else { return Ok(()) };
    let netlink =
        netif::Netlink::open().map_err(|e| CniError::io("opening a netlink socket", e))?;
    if !is_unmarked_legacy_name(host_veth) {
        if let Some(why) = not_ours(&netlink, host_veth, index, allocation)? {
            // DEL is idempotent: what is not ours is left alone (and said), the address
            // released.
            warn(&why.msg);
            return Ok(());
        }
    }
    match netlink.delete_link(index) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(CniError::io(format!("deleting host veth {host_veth}"), e)),
    }
}

/// CHECK: the namespace still looks the way ADD left it.
pub fn check(allocation: &Allocation, netns: &NetNs) -> Result<()> {
    if allocation.mode == Mode::LoopbackOnly {
        if let Some(err) = netns.join_unsupported() {
            warn(&format!(
                "cannot join {} (setns: {err}); only the address record was checked",
                netns.path
            ));
            return Ok(());
        }
    }
    let allocation = allocation.clone();
    netns.run(move || {
        let failed = |what: String| {
            CniError::new(
                CODE_CHECK_FAILED,
                what,
                "run CNI DEL and ADD again to repair the attachment",
            )
        };
        if !netif::is_up("lo").map_err(|e| CniError::io("reading lo flags", e))? {
            return Err(failed("lo is down in the pod network namespace".into()));
        }
        if allocation.mode == Mode::VethBridge {
            let ifname = &allocation.ifname;
            match netif::is_up(ifname) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(failed(format!(
                        "{ifname} is down in the pod network namespace"
                    )))
                }
                Err(e) => {
                    return Err(failed(format!(
                        "{ifname} is missing from the pod network namespace ({e})"
                    )))
                }
            }
            let have = netif::ipv4_address(ifname)
                .map_err(|e| CniError::io(format!("reading {ifname} address"), e))?;
            if have != Some(allocation.address.addr()) {
                return Err(failed(format!(
                    "{ifname} has address {have:?}, expected {}",
                    allocation.address.addr()
                )));
            }
        }
        Ok(())
    })
}

fn bring_loopback_up() -> Result<()> {
    netif::set_up("lo", true).map_err(|e| {
        CniError::io(
            "bringing lo up in the pod network namespace",
            format!("{e} (SIOCSIFFLAGS)"),
        )
    })
}

fn loopback_only(allocation: &Allocation, netns: &NetNs) -> Wired {
    let address = Ipv4Net::new(allocation.address.addr(), 32).expect("/32 is valid");
    Wired {
        mode: Mode::LoopbackOnly,
        host_veth: None,
        result: CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: None,
                sandbox: Some(netns.path.clone()),
            }],
            // No `interface` index: the address is allocated to this attachment, but no
            // interface in the namespace carries it. Runtimes (containerd's go-cni) then
            // attribute it to the attachment's own CNI_IFNAME, which is what they ask for.
            ips: vec![IpConfig {
                address,
                gateway: None,
                interface: None,
            }],
            routes: vec![],
        },
    }
}

fn veth_bridge(
    conf: &NetConf,
    allocation: &Allocation,
    netns: &NetNs,
) -> std::result::Result<Wired, VethFailure> {
    let fail = |what: String, err: io::Error| VethFailure::Failed(CniError::io(what, err));
    let netlink = netif::Netlink::open().map_err(|err| {
        if means_unsupported(&err) {
            VethFailure::Unsupported {
                step: "opening a netlink socket",
                err,
            }
        } else {
            fail("opening a netlink socket".into(), err)
        }
    })?;

    // The bridge is shared by every pod of the network; the first ADD creates it.
    let bridge = &conf.bridge;
    match netlink.create_bridge(bridge) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(err) if means_unsupported(&err) => {
            return Err(VethFailure::Unsupported {
                step: "creating a bridge",
                err,
            })
        }
        Err(e) => return Err(fail(format!("creating bridge {bridge}"), e)),
    }
    let bridge_index = required_index(bridge).map_err(VethFailure::Failed)?;
    let prefix = conf.range.subnet.prefix_len();
    match netlink.add_address(bridge_index, conf.range.gateway, prefix) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => {
            return Err(fail(
                format!("adding gateway {} to {bridge}", conf.range.gateway),
                e,
            ))
        }
    }
    netif::set_up(bridge, true).map_err(|e| fail(format!("bringing {bridge} up"), e))?;

    // A leftover host end from an earlier ADD of the same attachment is replaced; a link of
    // that name that is not this attachment's is never touched.
    let host = host_veth_name(allocation);
    if let Ok(Some(stale)) = netif::index(&host) {
        if let Some(why) =
            not_ours(&netlink, &host, stale, allocation).map_err(VethFailure::Failed)?
        {
            return Err(VethFailure::Failed(why));
        }
        netlink
            .delete_link(stale)
            .map_err(|e| fail(format!("removing stale {host}"), e))?;
    }
    match netlink.create_veth(&host, owner_mac(allocation), &allocation.ifname, netns.fd()) {
        Ok(()) => {}
        Err(err) if means_unsupported(&err) => {
            return Err(VethFailure::Unsupported {
                step: "creating a veth pair",
                err,
            })
        }
        Err(e) => {
            return Err(fail(
                format!(
                    "creating veth {host} <-> {} in {}",
                    allocation.ifname, netns.path
                ),
                e,
            ))
        }
    }
    let finish = || -> Result<Wired> {
        let host_index = required_index(&host)?;
        netlink
            .set_master(host_index, bridge_index)
            .map_err(|e| CniError::io(format!("adding {host} to {bridge}"), e))?;
        netif::set_up(&host, true).map_err(|e| CniError::io(format!("bringing {host} up"), e))?;
        let host_mac = netif::mac_address(&host).ok();
        let bridge_mac = netif::mac_address(bridge).ok();
        let (ifname, address, gateway) = (
            allocation.ifname.clone(),
            allocation.address,
            allocation.gateway,
        );
        let pod_mac = netns.run(move || configure_pod_interface(&ifname, address, gateway))?;
        Ok(Wired {
            mode: Mode::VethBridge,
            host_veth: Some(host.clone()),
            result: CniResult {
                interfaces: vec![
                    Interface {
                        name: bridge.clone(),
                        mac: bridge_mac,
                        sandbox: None,
                    },
                    Interface {
                        name: host.clone(),
                        mac: host_mac,
                        sandbox: None,
                    },
                    Interface {
                        name: allocation.ifname.clone(),
                        mac: Some(pod_mac),
                        sandbox: Some(netns.path.clone()),
                    },
                    Interface {
                        name: "lo".into(),
                        mac: None,
                        sandbox: Some(netns.path.clone()),
                    },
                ],
                ips: vec![IpConfig {
                    address: allocation.address,
                    gateway: Some(allocation.gateway),
                    interface: Some(2),
                }],
                routes: vec![Route {
                    dst: "0.0.0.0/0".parse().expect("literal"),
                    gw: Some(allocation.gateway),
                }],
            },
        })
    };
    finish().map_err(|e| {
        // Deleting the host end removes the pod end too.
        if let Ok(Some(index)) = netif::index(&host) {
            let _ = netlink.delete_link(index);
        }
        VethFailure::Failed(e)
    })
}

/// Inside the pod namespace: address, link up, default route via the bridge. Returns the MAC.
fn configure_pod_interface(ifname: &str, address: Ipv4Net, gateway: Ipv4Addr) -> Result<String> {
    let index = required_index(ifname)?;
    let netlink = netif::Netlink::open()
        .map_err(|e| CniError::io("opening a netlink socket in the pod namespace", e))?;
    netlink
        .add_address(index, address.addr(), address.prefix_len())
        .map_err(|e| CniError::io(format!("adding {address} to {ifname}"), e))?;
    netif::set_up(ifname, true).map_err(|e| CniError::io(format!("bringing {ifname} up"), e))?;
    let default_route = netif::Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        gateway,
        device: Some(index),
        protocol: netif::RTPROT_BOOT,
    };
    netlink
        .add_route(&default_route)
        .map_err(|e| CniError::io(format!("adding default route via {gateway} on {ifname}"), e))?;
    netif::mac_address(ifname).map_err(|e| CniError::io(format!("reading {ifname} MAC"), e))
}

fn required_index(name: &str) -> Result<u32> {
    match netif::index(name) {
        Ok(Some(index)) => Ok(index),
        Ok(None) => Err(CniError::io(
            format!("interface {name}"),
            "does not exist right after creating it",
        )),
        Err(e) => Err(CniError::io(format!("looking up interface {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(container_id: &str, ifname: &str) -> Allocation {
        serde_json::from_value(serde_json::json!({
            "containerID": container_id, "ifname": ifname, "address": "10.42.0.5/24",
            "gateway": "10.42.0.1", "mode": "veth-bridge",
        }))
        .unwrap()
    }

    #[test]
    fn host_veth_names_use_the_whole_ifnamsiz_budget_and_never_change() {
        let name = host_veth_name(&allocation("c1", "eth0"));
        assert_eq!(name.len(), 15, "{name}");
        assert!(name[2..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        // Pinned: a running node's DEL finds veths that an earlier build of the plugin made.
        // (python3: sha256(b"c1:eth0"), first 65 bits in RFC 4648 lower-case base32).
        assert_eq!(name, "gvdc4p4dfd2zaqj");
        assert_ne!(name, host_veth_name(&allocation("c1", "eth1")));
        assert!(!is_unmarked_legacy_name(&name));
        assert!(is_unmarked_legacy_name("gv0d0a9693"));
    }

    #[test]
    fn the_owner_mac_is_a_pinned_locally_administered_unicast_address() {
        let mac = owner_mac(&allocation("c1", "eth0"));
        // Pinned like the name: a running node's DEL recognizes veths an earlier build made.
        // (python3: d = sha256(b"c1:eth0"); d[16:22] with the first octet's low bits set to 10).
        assert_eq!(mac_text(&mac), "8e:1a:6c:72:32:41");
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
        assert_ne!(mac, owner_mac(&allocation("c1", "eth1")));
        assert_ne!(mac, owner_mac(&allocation("c2", "eth0")));
    }

    #[test]
    fn only_a_link_with_this_attachments_mac_is_its_own() {
        let ours = allocation("c1", "eth0");
        let host = host_veth_name(&ours);
        assert!(judge_owner(&host, Some(&owner_mac(&ours)), &ours).is_none());
        // Another attachment's veth of the same name (a collision), a kernel-chosen address,
        // and a reply without one are all someone else's, and the error says whose it is not.
        let other = owner_mac(&allocation("c2", "eth0"));
        for have in [Some(&other[..]), Some(&[0x5e, 0, 0, 0, 0, 1][..]), None] {
            let why = judge_owner(&host, have, &ours).expect("not ours");
            assert!(why.msg.contains(&host), "{}", why.msg);
            assert!(why.msg.contains("8e:1a:6c:72:32:41"), "{}", why.msg);
            assert!(why.details.contains("ip link del"), "{}", why.details);
        }
    }
}
