//! Host changes outside the prefix: /dev/kmsg and cgroup v1 mounts. Every mount and every file or
//! directory created is recorded in the state file at once, so uninstall can undo it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::probe;
use crate::state::State;

pub use nix::mount::MsFlags;

pub fn mount(
    source: &str,
    target: &Path,
    fs_type: &str,
    flags: MsFlags,
    data: &str,
) -> io::Result<()> {
    nix::mount::mount(Some(source), target, Some(fs_type), flags, Some(data))
        .map_err(io::Error::from)
}

/// Unmounts `target`; falls back to a lazy detach when something still holds it busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::empty()) {
        Err(nix::errno::Errno::EBUSY) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        result => result.map_err(io::Error::from),
    }
}

/// kubelet's OOM watcher opens /dev/kmsg and gVisor has none. A bind mount of /dev/null gives it
/// a file that reads as empty; it is undone on uninstall.
pub fn provide_dev_kmsg(state: &mut State) -> Result<()> {
    let kmsg = Path::new("/dev/kmsg");
    if kmsg.exists() {
        return Ok(());
    }
    fs::File::create(kmsg).with_context(|| {
        "cannot create /dev/kmsg as a bind-mount target (is /dev read-only?)".to_string()
    })?;
    state.created_files.push(kmsg.to_path_buf());
    state.save()?;
    mount("/dev/null", kmsg, "", MsFlags::MS_BIND, "")
        .context("cannot bind-mount /dev/null on /dev/kmsg")?;
    state.mounts.push(kmsg.to_path_buf());
    state.save()
}

/// The outcome of mounting cgroup controllers, for the install report.
#[derive(Debug, Default)]
pub struct CgroupOutcome {
    pub mounted: Vec<String>,
    pub refused: Vec<(String, String)>,
}

/// Mounts a tmpfs on /sys/fs/cgroup (unless something is mounted there) and one cgroup v1
/// hierarchy per controller that the kernel accepts. Refused controllers are reported, not fatal:
/// gVisor refuses devices and freezer, and the patched runc copes without them.
pub fn mount_cgroups(state: &mut State) -> Result<CgroupOutcome> {
    let root = Path::new("/sys/fs/cgroup");
    state.create_dir_all_recorded(root)?;
    let mounts = probe::read_mounts();
    let root_is_mounted = mounts.iter().any(|m| m.mount_point == root);
    if !root_is_mounted {
        mount("tmpfs", root, "tmpfs", MsFlags::empty(), "mode=755")
            .context("cannot mount tmpfs on /sys/fs/cgroup")?;
        state.mounts.push(root.to_path_buf());
        state.save()?;
    }
    let mut outcome = CgroupOutcome::default();
    for controller in probe::cgroup_controllers_to_mount() {
        let dir: PathBuf = root.join(&controller);
        state.create_dir_all_recorded(&dir)?;
        match mount("cgroup", &dir, "cgroup", MsFlags::empty(), &controller) {
            Ok(()) => {
                state.mounts.push(dir.clone());
                state.save()?;
                outcome.mounted.push(controller);
            }
            Err(error) => {
                // Leave no empty mount point behind for a controller the kernel refused.
                if state.created_dirs.last() == Some(&dir) && fs::remove_dir(&dir).is_ok() {
                    state.created_dirs.pop();
                    state.save()?;
                }
                outcome
                    .refused
                    .push((controller.to_string(), error.to_string()));
            }
        }
    }
    Ok(outcome)
}

/// Where containerd bind-mounts pod network namespaces (/var/run is a symlink to /run).
pub const NETNS_DIR: &str = "/run/netns";

/// Names of the network namespaces mounted under /run/netns now.
/// containerd's CRI names each pod's network namespace `cni-<uuid>` (pkg/netns).
const CONTAINERD_NETNS_PREFIX: &str = "cni-";

pub fn pod_netns_names() -> Vec<String> {
    probe::read_mounts()
        .into_iter()
        .filter_map(|m| {
            let name = m.mount_point.strip_prefix(NETNS_DIR).ok()?;
            Some(name.to_string_lossy().into_owned())
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Unmounts and removes the pod network namespaces that appeared after install: only those
/// named as containerd names them (`cni-<uuid>`). Any other namespace made since (another
/// tool's, a test harness's) is not ours; removing one cut a running e2e's sandbox network
/// loose on a shared machine.
pub fn remove_new_pod_netns(before: &[String]) -> Vec<String> {
    let mut report = Vec::new();
    for name in pod_netns_names() {
        if before.contains(&name) || !name.starts_with(CONTAINERD_NETNS_PREFIX) {
            continue;
        }
        let path = Path::new(NETNS_DIR).join(&name);
        match unmount(&path) {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                report.push(format!("removed pod network namespace {}", path.display()));
            }
            Err(error) => report.push(format!("cannot unmount {}: {error}", path.display())),
        }
    }
    report
}

/// Unmounts everything mounted under `roots` (deepest first): pod /dev/shm tmpfs and snapshot
/// mounts that containerd leaves in its state dir when pods are stopped rather than removed.
pub fn unmount_under(roots: &[&Path]) -> Vec<String> {
    let mut targets: Vec<PathBuf> = probe::read_mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|point| roots.iter().any(|root| point.starts_with(root)))
        .collect();
    targets.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    targets.dedup();
    targets
        .into_iter()
        .map(|point| match unmount(&point) {
            Ok(()) => format!("unmounted {}", point.display()),
            Err(error) => format!("cannot unmount {}: {error}", point.display()),
        })
        .collect()
}

/// Tries a recursive bind mount of a scratch dir onto a sibling and undoes it. Only doctor runs
/// this (it mounts, briefly); anything but EINVAL counts as "works".
pub fn recursive_bind_refused() -> bool {
    let scratch = std::env::temp_dir().join(format!("k3s-gvisor-doctor-{}", std::process::id()));
    let (source, target) = (scratch.join("a"), scratch.join("b"));
    if std::fs::create_dir_all(&source).is_err() || std::fs::create_dir_all(&target).is_err() {
        return false;
    }
    let result = mount(
        &source.display().to_string(),
        &target,
        "",
        MsFlags::MS_BIND | MsFlags::MS_REC,
        "",
    );
    if result.is_ok() {
        let _ = unmount(&target);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    matches!(result, Err(error) if error.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32))
}

/// containerd bind-mounts each pod's netns under /run/netns and statfs(2)s it before bringing lo
/// up; Debian's 2022 gVisor answers ENOSYS there (though not on /proc/self/ns/net itself).
/// Reproduced on a scratch file and undone.
pub fn statfs_on_mounted_netns_fails() -> bool {
    let scratch = std::env::temp_dir().join(format!("k3s-gvisor-doctor-ns-{}", std::process::id()));
    if std::fs::write(&scratch, b"").is_err() {
        return false;
    }
    let mounted = mount("/proc/self/ns/net", &scratch, "", MsFlags::MS_BIND, "").is_ok();
    let mut failed_with_enosys = false;
    if mounted {
        failed_with_enosys = matches!(
            nix::sys::statfs::statfs(&scratch),
            Err(nix::errno::Errno::ENOSYS)
        );
        let _ = unmount(&scratch);
    }
    let _ = std::fs::remove_file(&scratch);
    failed_with_enosys
}
