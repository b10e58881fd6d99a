//! `doctor`: every known gVisor blocker, whether this host has it, and whether it is handled.
//! Works with or without an install; exits non-zero when a present blocker is not handled.

use std::path::Path;

use anyhow::{bail, Result};

use crate::bundle::Manifest;
use crate::cluster::{self, ServiceProxy};
use crate::mounts;
use crate::node_ip;
use crate::probe::HostFacts;
use crate::state::State;

/// One blocker's verdict.
struct Finding {
    name: &'static str,
    present: bool,
    /// How it is handled, or None when it is present and nothing handles it.
    handled_by: Option<String>,
    /// What to do when it is not handled.
    advice: &'static str,
}

/// True when the manifest's `component` carries a patch whose file name contains `topic`.
fn has_patch(manifest: Option<&Manifest>, component: &str, topic: &str) -> bool {
    manifest
        .and_then(|m| m.components.iter().find(|c| c.name == component))
        .is_some_and(|c| c.patches.iter().any(|p| p.file.contains(topic)))
}

fn patch_verdict(manifest: Option<&Manifest>, component: &str, topic: &str) -> Option<String> {
    has_patch(manifest, component, topic)
        .then(|| format!("{component} patch matching \"{topic}\" in the bundle"))
}

/// `procsys_candidates`: the /proc/sys files the bundle ships defaults for. `installed`: the
/// install's state, if installed (its decisions are shown rather than probed again).
/// `has_svcproxy`: the bundle (or the install's prefix) has bin/svcproxy.
pub fn doctor(
    manifest: Option<&Manifest>,
    procsys_candidates: &[String],
    installed: Option<&State>,
    has_svcproxy: bool,
) -> Result<()> {
    let facts = HostFacts::probe(procsys_candidates);
    println!(
        "host: kernel {}, root filesystem {}, {}",
        facts.kernel_release,
        facts.root_fs_type,
        if facts.looks_like_gvisor() {
            "looks like gVisor"
        } else {
            "not gVisor"
        }
    );
    let mut findings = findings(&facts, manifest, installed);
    let (k3s, service_proxy) = k3s_findings(manifest, installed, has_svcproxy);
    findings.extend(k3s);
    let mut unhandled = Vec::new();
    for finding in &findings {
        let verdict = match (finding.present, &finding.handled_by) {
            (false, _) => "absent".to_string(),
            (true, Some(how)) => format!("present, handled by {how}"),
            (true, None) => {
                unhandled.push(finding.name);
                format!("present, NOT handled: {}", finding.advice)
            }
        };
        println!("{:<44} {verdict}", finding.name);
    }
    println!("{:<44} {}", "service proxy", service_proxy.describe());
    if !unhandled.is_empty() {
        bail!(
            "{} blocker(s) not handled: {}",
            unhandled.len(),
            unhandled.join(", ")
        );
    }
    Ok(())
}

fn findings(
    facts: &HostFacts,
    manifest: Option<&Manifest>,
    installed: Option<&State>,
) -> Vec<Finding> {
    let cap_last_cap_missing = !Path::new("/proc/sys/kernel/cap_last_cap").exists();
    let installed_procsys = installed.map(|state| state.paths().procsys_dir());
    let served = |files: &[String]| -> Option<String> {
        match &installed_procsys {
            Some(dir) if files.iter().all(|rel| dir.join(rel).is_file()) => Some(format!(
                "the launcher's procsys tree ({})",
                files.join(", ")
            )),
            Some(_) => None,
            None => Some("the launcher's procsys tree, written at install".into()),
        }
    };
    let no_default_route = node_ip::default_route_interfaces(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    )
    .is_empty();
    let devices_missing =
        !facts.mounted_controllers.iter().any(|c| c == "devices") && !facts.cgroup2_mounted;
    vec![
        Finding {
            name: "kernel < 4.11 (CRI unprivileged ports/ICMP)",
            present: facts.kernel_below_4_11(),
            handled_by: Some("containerd config: enable_unprivileged_ports/icmp = false".into()),
            advice: "use the bundle's containerd config",
        },
        Finding {
            name: "/proc/sys/kernel/cap_last_cap missing",
            present: cap_last_cap_missing,
            handled_by: patch_verdict(manifest, "runc", "cap"),
            advice:
                "runc must fall back when cap_last_cap is missing: use a bundle with the runc patch",
        },
        Finding {
            name: "/proc/sys files missing for kubelet/k3s",
            present: !facts.missing_procsys.is_empty(),
            handled_by: served(&facts.missing_procsys),
            advice: "the install's procsys tree is incomplete: uninstall and install again",
        },
        Finding {
            name: "/proc/sys files that refuse writes",
            present: !facts.read_only_procsys.is_empty(),
            handled_by: served(&facts.read_only_procsys),
            advice: "the kubelet fails (`write /proc/sys/vm/overcommit_memory: input/output \
                     error`); this install predates the probe: uninstall and install again",
        },
        Finding {
            name: "no default route (k3s's node IP)",
            present: no_default_route,
            handled_by: Some(format!(
                "--node-ip: an interface's address, else {}/32 added to lo",
                node_ip::LOOPBACK_NODE_ADDRESS
            )),
            advice: "",
        },
        Finding {
            name: "/dev/kmsg missing",
            present: !facts.has_dev_kmsg,
            handled_by: Some("install bind-mounts /dev/null on /dev/kmsg".into()),
            advice: "",
        },
        Finding {
            name: "no cgroup hierarchy mounted",
            present: facts.needs_cgroup_mounts(),
            handled_by: Some(
                "install mounts tmpfs + cgroup v1 cpu,cpuacct,cpuset,memory,pids".into(),
            ),
            advice: "",
        },
        Finding {
            name: "cgroup v1 devices controller missing",
            present: devices_missing,
            handled_by: patch_verdict(manifest, "runc", "devices"),
            advice: "runc's cgroup v1 manager fails with `mountpoint for devices not found`; \
                     needs the runc patch that makes the devices controller optional",
        },
        Finding {
            name: "no mount namespaces (/proc/self/ns/mnt)",
            present: lstat("/proc/self/ns/mnt").is_none(),
            handled_by: None,
            advice: "runc 1.2+ enters every container's mount namespace (`open container mntns: \
                     open /proc/N/ns/mnt: no such file or directory`); no patch can add them: \
                     use a gVisor from 2023 or later",
        },
        Finding {
            name: "procfs root is not inode 1",
            present: lstat("/proc").is_some_and(|st| st.st_ino != 1),
            handled_by: None,
            advice: "runc 1.3.3's CVE-2025-52881 check refuses it (`unsafe procfs detected: \
                     incorrect procfs root inode number N`); use a gVisor from 2023 or later",
        },
        Finding {
            name: "prctl(PR_SET_CHILD_SUBREAPER) unsupported",
            present: !facts.child_subreaper,
            handled_by: patch_verdict(manifest, "containerd", "subreaper"),
            advice: "containerd-shim-runc-v2 exits with EINVAL; needs the containerd patch that \
                     tolerates a missing child subreaper (or a newer gVisor)",
        },
        Finding {
            name: "statfs on netns files unimplemented",
            present: statfs_on_mounted_netns_fails(),
            handled_by: patch_verdict(manifest, "containerd", "statfs"),
            advice:
                "containerd fails every pod with `unable to set lo to up: ... failed to Statfs \
                     ... function not implemented`; needs a containerd patch (gvisor-cni brings lo \
                     up itself) or a newer gVisor",
        },
        Finding {
            name: "recursive bind mounts (MS_REC) refused",
            present: recursive_bind_refused(),
            handled_by: patch_verdict(manifest, "containerd", "rbind"),
            advice: "the native snapshotter's `rbind` mounts fail with EINVAL (image import: \
                     `failed to extract layer ... fstype: bind, flags: 20480 ... invalid \
                     argument`); needs a patch that retries without MS_REC, or a newer gVisor",
        },
        Finding {
            name: "overlayfs unusable (9p/overlay root)",
            present: matches!(facts.root_fs_type.as_str(), "9p" | "overlay")
                || facts.looks_like_gvisor(),
            handled_by: Some("containerd native snapshotter".into()),
            advice: "",
        },
        Finding {
            name: "cgroup2 filesystem unknown",
            present: !facts.cgroup2_known,
            handled_by: Some("cgroup v1 is used".into()),
            advice: "",
        },
        Finding {
            name: "/dev/fuse missing (no fuse-overlayfs)",
            present: !facts.has_dev_fuse,
            handled_by: Some("not needed: native snapshotter".into()),
            advice: "",
        },
    ]
}

/// kube-proxy, the service proxy and the add-ons: the decisions an install recorded, or (before
/// install) what an install here would decide.
fn k3s_findings(
    manifest: Option<&Manifest>,
    installed: Option<&State>,
    has_svcproxy: bool,
) -> (Vec<Finding>, ServiceProxy) {
    let (kube_proxy_off, service_proxy, addons_off) = match installed {
        Some(state) => (
            state.kube_proxy_off.clone(),
            ServiceProxy::decide(
                state.control_plane_only,
                state.kube_proxy_off.as_deref(),
                has_svcproxy,
            ),
            state.addons_off.clone(),
        ),
        None => {
            let kube_proxy_off = cluster::kube_proxy_blocker();
            let service_proxy =
                ServiceProxy::decide(false, kube_proxy_off.as_deref(), has_svcproxy);
            let install = cluster::Install {
                control_plane_only: false,
                no_service_proxy: matches!(service_proxy, ServiceProxy::Nothing { .. }),
            };
            let addons_off = manifest
                .map(|m| cluster::addons_off(m, &install))
                .unwrap_or_default();
            (kube_proxy_off, service_proxy, addons_off)
        }
    };
    let findings = vec![
        Finding {
            name: "kube-proxy cannot write iptables rules",
            handled_by: kube_proxy_off.as_ref().map(|reason| {
                if service_proxy.is_svcproxy() {
                    format!("svcproxy in place of kube-proxy (k3s --disable-kube-proxy): {reason}")
                } else {
                    format!("k3s --disable-kube-proxy (ClusterIP Services do not route): {reason}")
                }
            }),
            present: kube_proxy_off.is_some(),
            advice: "",
        },
        Finding {
            name: "k3s add-ons that cannot run here",
            present: !addons_off.is_empty(),
            handled_by: Some(format!(
                "k3s --disable: {}",
                addons_off
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            advice: "",
        },
    ];
    (findings, service_proxy)
}

/// lstat(2) itself, not std's statx: Debian's 2022 gVisor answers statx on /proc with EINVAL.
fn lstat(path: &str) -> Option<libc::stat> {
    let path = std::ffi::CString::new(path).expect("no NUL");
    // SAFETY: lstat writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::lstat(path.as_ptr(), &mut st) == 0).then_some(st)
    }
}

/// Tries a recursive bind mount of a scratch dir onto a sibling and undoes it. Only doctor runs
/// this (it mounts, briefly); anything but EINVAL counts as "works".
fn recursive_bind_refused() -> bool {
    let scratch = std::env::temp_dir().join(format!("k3s-gvisor-doctor-{}", std::process::id()));
    let (source, target) = (scratch.join("a"), scratch.join("b"));
    if std::fs::create_dir_all(&source).is_err() || std::fs::create_dir_all(&target).is_err() {
        return false;
    }
    let result = mounts::mount(
        &source.display().to_string(),
        &target,
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    );
    if result.is_ok() {
        let _ = mounts::unmount(&target);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    matches!(result, Err(error) if error.raw_os_error() == Some(libc::EINVAL))
}

/// containerd bind-mounts each pod's netns under /run/netns and statfs(2)s it before bringing lo
/// up; Debian's 2022 gVisor answers ENOSYS there (though not on /proc/self/ns/net itself).
/// Reproduced on a scratch file and undone.
fn statfs_on_mounted_netns_fails() -> bool {
    let scratch = std::env::temp_dir().join(format!("k3s-gvisor-doctor-ns-{}", std::process::id()));
    if std::fs::write(&scratch, b"").is_err() {
        return false;
    }
    let mounted = mounts::mount("/proc/self/ns/net", &scratch, "", libc::MS_BIND, "").is_ok();
    let mut failed_with_enosys = false;
    if mounted {
        let path = std::ffi::CString::new(scratch.display().to_string()).expect("no NUL");
        // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
        let rc = unsafe {
            let mut stat: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut stat)
        };
        failed_with_enosys =
            rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
        let _ = mounts::unmount(&scratch);
    }
    let _ = std::fs::remove_file(&scratch);
    failed_with_enosys
}
