//! The six CNI commands. Each takes the validated request and returns what goes on stdout
//! (`None` for the commands whose success is silent: DEL, CHECK, STATUS, GC).

use crate::config::{Mode, NetConf};
use crate::env::{Attachment, AttachmentEnv};
use crate::error::{code, CniError, Result};
use crate::ipam::store::{warn, Entry, Store};
use crate::netns::NetNs;
use crate::version::{self, SpecVersion};
use crate::wiring::{self, CODE_CHECK_FAILED};
use serde_json::{json, Value};
use std::collections::HashSet;

pub fn version(requested: &str) -> Value {
    json!({"cniVersion": requested, "supportedVersions": version::SUPPORTED})
}

pub fn add(conf: &NetConf, env: &AttachmentEnv) -> Result<Value> {
    let netns = NetNs::open(env.netns.as_deref().expect("ADD always has CNI_NETNS"))?;
    let store = Store::open_locked(&conf.store_dir)?;
    let attachment = &env.attachment;
    // A repeated ADD (e.g. a retry after a runtime crash) keeps the address it already has.
    let (mut allocation, newly_allocated) = match store.find(attachment)? {
        Some(existing) => (existing, false),
        // Until wiring finishes, record the pessimistic mode: if we crash after creating the
        // veth, DEL still knows to look for it.
        None => {
            let provisional = if conf.mode == Mode::LoopbackOnly {
                Mode::LoopbackOnly
            } else {
                Mode::VethBridge
            };
            (store.allocate(&conf.range, attachment, provisional)?, true)
        }
    };
    if allocation.mode == Mode::VethBridge && allocation.host_veth.is_none() {
        allocation.host_veth = Some(wiring::host_veth_name(&allocation));
        store.write(&allocation)?;
    }
    let wired = match wiring::wire(conf, &allocation, &netns) {
        Ok(wired) => wired,
        Err(e) => {
            if newly_allocated {
                store.release(allocation.address.addr())?;
            }
            return Err(e);
        }
    };
    if wired.mode != allocation.mode || wired.host_veth != allocation.host_veth {
        allocation.mode = wired.mode;
        allocation.host_veth = wired.host_veth;
        store.write(&allocation)?;
    }
    Ok(wired.result.to_json(conf.version))
}

pub fn del(conf: &NetConf, env: &AttachmentEnv) -> Result<()> {
    let Some(store) = Store::open_existing_locked(&conf.store_dir)? else {
        return Ok(());
    };
    for entry in store.entries()? {
        if let Entry::Valid { ip, allocation } = entry {
            if allocation.attachment() == env.attachment {
                wiring::unwire(&allocation)?;
                store.release(ip)?;
            }
        }
    }
    Ok(())
}

pub fn check(conf: &NetConf, env: &AttachmentEnv) -> Result<()> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "CHECK needs \"prevResult\"",
            "the runtime must pass the result of ADD as prevResult",
        )
    })?;
    let netns = NetNs::open(env.netns.as_deref().expect("CHECK always has CNI_NETNS"))?;
    let allocation = match Store::open_existing_locked(&conf.store_dir)? {
        Some(store) => store.find(&env.attachment)?,
        None => None,
    };
    let Some(allocation) = allocation else {
        return Err(CniError::new(
            CODE_CHECK_FAILED,
            format!("no address is allocated to {}", describe(&env.attachment)),
            format!(
                "the store {} has no record of it; run CNI ADD for this attachment",
                conf.store_dir.display()
            ),
        ));
    };
    if !prev
        .ips
        .iter()
        .any(|ip| ip.address.addr() == allocation.address.addr())
    {
        return Err(CniError::new(
            CODE_CHECK_FAILED,
            format!("prevResult does not contain the allocated address {}", allocation.address.addr()),
            "the runtime's cached result and the plugin's store disagree; run CNI DEL and ADD again",
        ));
    }
    wiring::check(&allocation, &netns)
}

pub fn gc(conf: &NetConf) -> Result<()> {
    let Some(store) = Store::open_existing_locked(&conf.store_dir)? else {
        return Ok(());
    };
    let valid: Option<HashSet<&Attachment>> =
        conf.valid_attachments.as_ref().map(|v| v.iter().collect());
    if valid.is_none() {
        warn("GC without cni.dev/valid-attachments: only damaged store files are removed");
    }
    for entry in store.entries()? {
        match entry {
            Entry::Valid { ip, allocation } => {
                let keep = valid
                    .as_ref()
                    .is_none_or(|v| v.contains(&allocation.attachment()));
                if !keep {
                    wiring::unwire(&allocation)?;
                    store.release(ip)?;
                }
            }
            // A damaged file belongs to no attachment anyone can name, so none can be valid.
            Entry::Damaged { ip, path, problem } => {
                warn(&format!(
                    "GC removes damaged {} ({problem})",
                    path.display()
                ));
                store.release(ip)?;
            }
        }
    }
    Ok(())
}

pub fn status(conf: &NetConf) -> Result<()> {
    let store = Store::open_locked(&conf.store_dir).map_err(|e| {
        CniError::new(
            code::NOT_AVAILABLE,
            format!("the IPAM store is unusable: {}", e.msg),
            e.details,
        )
    })?;
    let used = store.entries()?.len() as u64;
    if used >= conf.range.capacity() {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            format!(
                "all {} addresses of {} are allocated",
                conf.range.capacity(),
                conf.range.subnet
            ),
            "new pods cannot get an address; delete pods, run CNI GC, or widen the range",
        ));
    }
    Ok(())
}

/// STATUS and GC exist only from spec 1.1.0 on.
pub fn require_1_1(version: SpecVersion, command: &str) -> Result<()> {
    if version.has_status_and_gc() {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{command} is not defined for cniVersion {}",
                version.as_str()
            ),
            "STATUS and GC need cniVersion 1.1.0 in the network config",
        ))
    }
}

fn describe(a: &Attachment) -> String {
    format!("container {} interface {}", a.container_id, a.ifname)
}
