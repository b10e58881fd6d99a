//! The one table of gVisor blockers: each host fact that stops runc, containerd or k3s, whether
//! this host has it, and what handles it. `./install` prints what it does about the present
//! ones before it changes anything (preflight); `./install doctor` prints every row's verdict.
//!
//! A blocker is handled by the install itself (a config value, a mount, the launcher), or by a
//! patch in the bundle that declares it with a `Handles-blocker: <id>` trailer in its commit
//! message (recorded in the manifest), or by nothing: then the row says what to do.

use std::path::Path;

use bundle_format::Snapshotter;

use crate::bundle::Manifest;
use crate::mounts;
use crate::node_ip;
use crate::probe::{self, HostFacts};
use crate::state::State;

/// One row of the table.
pub struct Blocker {
    /// The stable id patches declare (`Handles-blocker: <id>`).
    pub id: &'static str,
    /// What doctor prints.
    pub name: &'static str,
    pub present: bool,
    /// What install does about it on this host: one line, printed as `workaround: ...` before
    /// anything changes. None where install does nothing (a patch handles it, or nothing can).
    pub install_line: Option<String>,
    /// How install handles it, in doctor's words; None where install does not.
    install_handles: Option<String>,
    /// The bundle's patches that declare they handle it.
    patches: Vec<String>,
    /// What to do when it is present and nothing handles it.
    pub advice: &'static str,
}

impl Blocker {
    /// Everything that handles it, or None.
    pub fn handled_by(&self) -> Option<String> {
        let all: Vec<String> = self
            .install_handles
            .iter()
            .cloned()
            .chain(self.patches.iter().cloned())
            .collect();
        (!all.is_empty()).then(|| all.join("; "))
    }
}

/// What the table is computed from.
pub struct Inputs<'a> {
    pub facts: &'a HostFacts,
    pub manifest: Option<&'a Manifest>,
    /// The install's state, when installed: its procsys tree and snapshotter are looked at
    /// rather than predicted.
    pub installed: Option<&'a State>,
    /// The snapshotter install chose (preflight) or recorded; None before install.
    pub snapshotter: Option<Snapshotter>,
    /// Also run the probes that mount something briefly (doctor only).
    pub mount_probes: bool,
}

pub fn table(inputs: &Inputs) -> Vec<Blocker> {
    let facts = inputs.facts;
    let patches = |id: &str| {
        inputs
            .manifest
            .map(|m| m.patches_handling(id))
            .unwrap_or_default()
    };
    let row = |id: &'static str, name: &'static str, present: bool| Blocker {
        id,
        name,
        present,
        install_line: None,
        install_handles: None,
        patches: patches(id),
        advice: "",
    };
    // Installed: the procsys tree must hold the files; before install, install will write it.
    let installed_procsys = inputs.installed.map(|state| {
        let how = if crate::procsys_overlay::is_laid(state) {
            "laid over /proc/sys"
        } else {
            "served to k3s by the launcher"
        };
        (state.paths().procsys_dir(), how)
    });
    let served = |files: &[String]| -> Option<String> {
        match &installed_procsys {
            Some((dir, how)) if files.iter().all(|rel| dir.join(rel).is_file()) => {
                Some(format!("the procsys tree ({}), {how}", files.join(", ")))
            }
            Some(_) => None,
            None => Some("the procsys tree, written at install".into()),
        }
    };
    let snapshotter = inputs
        .snapshotter
        .or(inputs.installed.map(|s| s.snapshotter));
    let overlay_unusable = match snapshotter {
        Some(chosen) => chosen == Snapshotter::Native,
        None => {
            matches!(facts.root_fs_type.as_str(), "9p" | "overlay") || facts.looks_like_gvisor()
        }
    };
    let ports_missing = facts.procsys_missing("net/ipv4/ip_unprivileged_port_start")
        || facts.procsys_missing("net/ipv4/ping_group_range");
    let cri_unprivileged_off = "containerd config: enable_unprivileged_ports/icmp = false";
    let no_default_route = node_ip::default_route_interfaces(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    )
    .is_empty();

    vec![
        Blocker {
            install_line: Some(format!(
                "kernel {} is older than 4.11: CRI enable_unprivileged_ports/icmp are turned off",
                facts.kernel_release
            )),
            install_handles: Some(cri_unprivileged_off.into()),
            ..row(
                "kernel-below-4.11",
                "kernel < 4.11 (CRI unprivileged ports/ICMP)",
                facts.kernel_below_4_11(),
            )
        },
        Blocker {
            install_line: Some(
                "/proc/sys lacks net/ipv4/ip_unprivileged_port_start or ping_group_range: CRI \
                 enable_unprivileged_ports/icmp are turned off (runc could not set them in pods)"
                    .into(),
            ),
            install_handles: Some(cri_unprivileged_off.into()),
            ..row(
                "unprivileged-sysctls-missing",
                "unprivileged port/ICMP sysctls missing",
                // Below 4.11 the row above says it all.
                !facts.kernel_below_4_11() && ports_missing,
            )
        },
        Blocker {
            advice:
                "runc must fall back when cap_last_cap is missing: use a bundle with the runc patch",
            ..row(
                "cap-last-cap-missing",
                "/proc/sys/kernel/cap_last_cap missing",
                !Path::new("/proc/sys/kernel/cap_last_cap").exists(),
            )
        },
        Blocker {
            install_line: Some(format!(
                "/proc/sys lacks {} file(s) ({}): served from PREFIX/procsys, laid over /proc/sys \
                 with bind mounts (by the launcher where the sandbox refuses those mounts)",
                facts.missing_procsys.len(),
                facts.missing_procsys.join(", ")
            )),
            install_handles: served(&facts.missing_procsys),
            advice: "the install's procsys tree is incomplete: uninstall and install again",
            ..row(
                "procsys-missing",
                "/proc/sys files missing for kubelet/k3s",
                !facts.missing_procsys.is_empty(),
            )
        },
        Blocker {
            install_line: Some(format!(
                "/proc/sys refuses writes to {} file(s) the kubelet sets ({}): served from \
                 PREFIX/procsys too, writes included",
                facts.read_only_procsys.len(),
                facts.read_only_procsys.join(", ")
            )),
            install_handles: served(&facts.read_only_procsys),
            advice: "the kubelet fails (`write /proc/sys/vm/overcommit_memory: input/output \
                     error`); this install predates the probe: uninstall and install again",
            ..row(
                "procsys-read-only",
                "/proc/sys files that refuse writes",
                !facts.read_only_procsys.is_empty(),
            )
        },
        Blocker {
            install_handles: Some(format!(
                "--node-ip: an interface's address, else {}/32 added to lo",
                node_ip::LOOPBACK_NODE_ADDRESS
            )),
            ..row(
                "no-default-route",
                "no default route (k3s's node IP)",
                no_default_route,
            )
        },
        Blocker {
            install_line: Some(
                "/dev/kmsg is missing: bind-mount /dev/null there (kubelet's OOM watcher opens it)"
                    .into(),
            ),
            install_handles: Some("install bind-mounts /dev/null on /dev/kmsg".into()),
            ..row("dev-kmsg-missing", "/dev/kmsg missing", !facts.has_dev_kmsg)
        },
        Blocker {
            install_line: Some(format!(
                "no cgroup hierarchy is mounted: mount tmpfs on /sys/fs/cgroup and cgroup v1 {} \
                 (those the kernel accepts), so runc and kubelet can place processes",
                probe::cgroup_controllers_to_mount().join(",")
            )),
            install_handles: Some(
                "install mounts tmpfs + cgroup v1 cpu,cpuacct,cpuset,memory,pids".into(),
            ),
            ..row(
                "no-cgroup-hierarchy",
                "no cgroup hierarchy mounted",
                facts.needs_cgroup_mounts(),
            )
        },
        Blocker {
            advice: "runc's cgroup v1 manager fails with `mountpoint for devices not found`; \
                     needs the runc patch that makes the devices controller optional",
            ..row(
                "devices-cgroup-missing",
                "cgroup v1 devices controller missing",
                !facts.mounted_controllers.iter().any(|c| c == "devices") && !facts.cgroup2_mounted,
            )
        },
        Blocker {
            advice: "runc 1.2+ enters every container's mount namespace (`open container mntns: \
                     open /proc/N/ns/mnt: no such file or directory`); no patch can add them: \
                     use a gVisor from 2023 or later",
            ..row(
                "no-mount-namespaces",
                "no mount namespaces (/proc/self/ns/mnt)",
                probe::lstat_inode("/proc/self/ns/mnt").is_none(),
            )
        },
        Blocker {
            advice: "runc 1.3.3's CVE-2025-52881 check refuses it (`unsafe procfs detected: \
                     incorrect procfs root inode number N`); use a gVisor from 2023 or later",
            ..row(
                "procfs-root-inode",
                "procfs root is not inode 1",
                probe::lstat_inode("/proc").is_some_and(|ino| ino != 1),
            )
        },
        Blocker {
            advice: "runc's exec (`kubectl exec`) joins the container's PID namespace and fails \
                     with EINVAL; needs the runc patch that runs the process in a PID namespace \
                     of its own there, or a gVisor from 2025-06-26 or later",
            ..row(
                "setns-pid-refused",
                "setns(CLONE_NEWPID) refused (exec)",
                probe::setns_pid_refused(),
            )
        },
        Blocker {
            advice: "containerd-shim-runc-v2 exits with EINVAL; needs a containerd patch that \
                     tolerates a missing child subreaper (or a newer gVisor)",
            ..row(
                "child-subreaper-unsupported",
                "prctl(PR_SET_CHILD_SUBREAPER) unsupported",
                !facts.child_subreaper,
            )
        },
        Blocker {
            advice: "containerd's unmount loop (UnmountAll, until EINVAL) on a pod's shm \
                     unmounts the sandbox's root when a container's mount namespace holds a \
                     copy: every later mount fails and /proc is gone (seen after restarts); \
                     needs containerd 0004 or a gVisor that answers EINVAL",
            ..row(
                "umount-unmounted-path-takes-parent",
                "umount of an unmounted path unmounts its parent",
                inputs.mount_probes && mounts::umount_of_unmounted_path_takes_parent(),
            )
        },
        Blocker {
            advice: NETNS_WITHOUT_IP_STACK_ADVICE,
            ..row(
                "netns-no-ip-stack",
                "network namespaces have no IP stack (runsc --network=host)",
                facts.netns_without_ip_stack,
            )
        },
        Blocker {
            advice: "containerd fails every pod with `unable to set lo to up: ... failed to \
                     Statfs ... function not implemented`; needs a containerd patch (gvisor-cni \
                     brings lo up itself) or a newer gVisor",
            ..row(
                "statfs-netns-unimplemented",
                "statfs on netns files unimplemented",
                inputs.mount_probes && mounts::statfs_on_mounted_netns_fails(),
            )
        },
        Blocker {
            advice: "the native snapshotter's `rbind` mounts fail with EINVAL (image import: \
                     `failed to extract layer ... fstype: bind, flags: 20480 ... invalid \
                     argument`); needs a patch that retries without MS_REC, or a newer gVisor",
            ..row(
                "recursive-bind-refused",
                "recursive bind mounts (MS_REC) refused",
                inputs.mount_probes && mounts::recursive_bind_refused(),
            )
        },
        Blocker {
            install_line: Some(format!(
                "root filesystem {} cannot host overlayfs layers: containerd uses the native \
                 snapshotter, which copies an image for every container{}",
                facts.root_fs_type,
                if facts.looks_like_gvisor() {
                    " (a --data-dir on a tmpfs of the sandbox takes overlayfs)"
                } else {
                    ""
                }
            )),
            install_handles: Some("containerd native snapshotter".into()),
            ..row(
                "overlayfs-unusable",
                "overlayfs unusable (9p/overlay root)",
                overlay_unusable,
            )
        },
        Blocker {
            install_line: Some(
                "no CAP_SYS_RESOURCE: containers cannot get an oom_score_adj below containerd's \
                 (runc would fail with `failed to update /proc/self/oom_score_adj`); CRI \
                 restrict_oom_score_adj is turned on"
                    .into(),
            ),
            install_handles: Some("containerd config: restrict_oom_score_adj = true".into()),
            ..row(
                "no-cap-sys-resource",
                "no CAP_SYS_RESOURCE (pods' oom_score_adj)",
                !facts.cap_sys_resource,
            )
        },
        Blocker {
            install_handles: Some("cgroup v1 is used".into()),
            ..row(
                "cgroup2-unknown",
                "cgroup2 filesystem unknown",
                !facts.cgroup2_known,
            )
        },
        Blocker {
            install_handles: Some("not needed: native snapshotter".into()),
            ..row(
                "dev-fuse-missing",
                "/dev/fuse missing (no fuse-overlayfs)",
                !facts.has_dev_fuse,
            )
        },
    ]
}

/// Pods (all but hostNetwork ones) get a network namespace of their own; where it has no IP
/// stack nothing in it can open a socket, so no pod network can be made, and svcproxy has no
/// bridge for ClusterIPs (RTM_NEWLINK answers EOPNOTSUPP: hostinet creates no links).
pub const NETNS_WITHOUT_IP_STACK_ADVICE: &str =
    "pods' network namespaces cannot open a socket (`socket(AF_INET)` in a new network \
     namespace: address family not supported) and no bridge can be created: gVisor runs with \
     the host's network stack (`runsc --network=host`), which serves the sandbox's first \
     namespace only. Run the sandbox with gVisor's own network stack (runsc's default, \
     `--network=sandbox`), or `./install --control-plane-only` for the Kubernetes API without \
     pods";

/// The `workaround:` lines install prints: what it does about each present blocker.
pub fn install_lines(blockers: &[Blocker]) -> Vec<String> {
    blockers
        .iter()
        .filter(|b| b.present)
        .filter_map(|b| b.install_line.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<&'static str> {
        let facts = HostFacts::probe(&[]);
        table(&Inputs {
            facts: &facts,
            manifest: None,
            installed: None,
            snapshotter: None,
            mount_probes: false,
        })
        .iter()
        .map(|b| b.id)
        .collect()
    }

    #[test]
    fn ids_are_unique() {
        let mut ids = ids();
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "two rows share an id");
    }

    /// A patch that declares an unknown id (a typo, a renamed row) would silently handle
    /// nothing: every `Handles-blocker:` in patches/ must name a row.
    #[test]
    fn every_declared_blocker_is_a_row() {
        let ids = ids();
        let patches = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches");
        let mut declared = 0;
        // patches/<component>/*.patch and, for one release only, patches/<component>/<version>/.
        let mut dirs: Vec<_> = std::fs::read_dir(&patches)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            for id in bundle_format::declared_blockers(&text) {
                assert!(
                    ids.contains(&id.as_str()),
                    "{} declares unknown blocker {id:?}",
                    path.display()
                );
                declared += 1;
            }
        }
        assert!(declared >= 5, "the gVisor patches declare what they handle");
    }
}
