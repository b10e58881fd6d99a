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
    // O_EXCL|O_NOFOLLOW: a dangling symlink at /dev/kmsg is not followed to create its target.
    crate::files::create_new(kmsg, 0o644).with_context(|| {
        "cannot create /dev/kmsg as a bind-mount target (is /dev read-only?)".to_string()
    })?;
    state.created_files.push(kmsg.to_path_buf());
    state.save()?;
    mount("/dev/null", kmsg, "", MsFlags::MS_BIND, "")
        .context("cannot bind-mount /dev/null on /dev/kmsg")?;
    state.mounts.push(kmsg.to_path_buf());
    state.save()
}

/// Removes `path` if it is what `provide_dev_kmsg` made: an empty regular file (a bind-mount
/// target). After a sandbox restart /dev is new and /dev/kmsg may be a real character device
/// that the runtime provides: that, or anything else with content, is left alone and named.
/// Ok(None) when removed or already gone, Ok(Some(why)) when left.
pub fn remove_made_mount_target(path: &Path) -> io::Result<Option<String>> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        meta => meta?,
    };
    let kind = meta.file_type();
    if kind.is_file() && meta.len() == 0 {
        return match fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(None),
        };
    }
    let what = if kind.is_char_device() {
        "a character device".to_string()
    } else if kind.is_file() {
        format!("a file of {} bytes", meta.len())
    } else {
        format!("{kind:?}")
    };
    Ok(Some(format!(
        "left {}: it is {what} now, not the empty file the install made",
        path.display()
    )))
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

/// What `unmount_under` did, and what is still mounted below the roots afterwards.
#[derive(Debug, Default)]
pub struct Unmounted {
    pub lines: Vec<String>,
    /// Mount points still below a root after every attempt, each with the last error.
    pub still_mounted: Vec<(PathBuf, String)>,
}

/// Mount points strictly below one of `roots`, one entry per mount (a point with two mounts
/// stacked on it is listed twice), read from /proc/self/mountinfo now.
pub fn mounts_below(roots: &[&Path]) -> Vec<PathBuf> {
    probe::read_mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|point| is_below(point, roots))
        .collect()
}

fn is_below(point: &Path, roots: &[&Path]) -> bool {
    roots
        .iter()
        .any(|root| point != *root && point.starts_with(root))
}

/// Unmounts everything mounted below `roots` (deepest first): pod /dev/shm tmpfs, snapshot
/// mounts that containerd leaves in its state dir, and the kubelet's hostPath and subPath bind
/// mounts under DATA/kubelet, which point outside the install. Each mount is unmounted on its
/// own (two mounts stacked on one point take two unmounts), and mountinfo is read again after
/// every round until nothing is left or a round unmounts nothing: then `still_mounted` names
/// what could not be unmounted, and nothing may be deleted recursively below it.
pub fn unmount_under(roots: &[&Path]) -> Unmounted {
    let mut outcome = Unmounted::default();
    let mut errors: std::collections::BTreeMap<PathBuf, String> = Default::default();
    // Each round removes at least one mount, so this only bounds a namespace that keeps
    // growing mounts while we unmount (a daemon still running).
    for _ in 0..64 {
        let mut targets = mounts_below(roots);
        if targets.is_empty() {
            break;
        }
        // Stable sort: stacked mounts on one point keep their order; each unmount takes the top.
        targets.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        let mut progress = false;
        for point in targets {
            match unmount(&point) {
                Ok(()) => {
                    outcome.lines.push(format!("unmounted {}", point.display()));
                    errors.remove(&point);
                    progress = true;
                }
                Err(error) => {
                    errors.insert(point, error.to_string());
                }
            }
        }
        if !progress {
            break;
        }
    }
    let mut still = mounts_below(roots);
    still.dedup();
    outcome.still_mounted = still
        .into_iter()
        .map(|point| {
            let error = errors
                .get(&point)
                .cloned()
                .unwrap_or_else(|| "mounted again while unmounting".to_string());
            (point, error)
        })
        .collect();
    outcome
}

/// Removes `dir` and everything in it, never leaving its filesystem: a directory on another
/// device (st_dev) or listed as a mount point in mountinfo (a bind mount from the same
/// filesystem has the same st_dev) is not entered, and is reported as an error after the rest
/// is removed. Symlinks are removed, never followed. `unmount_under` runs first; this guards
/// against a mount that appears in between.
pub fn remove_tree_on_one_fs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = fs::symlink_metadata(dir)?.dev();
    let mount_points: std::collections::HashSet<PathBuf> = probe::read_mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    let mut skipped = Vec::new();
    remove_tree(dir, device, &mount_points, true, &mut skipped)?;
    if skipped.is_empty() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "not entered, on another filesystem or a mount point: {} (unmount, then remove by hand)",
        skipped
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn remove_tree(
    path: &Path,
    device: u64,
    mount_points: &std::collections::HashSet<PathBuf>,
    top: bool,
    skipped: &mut Vec<PathBuf>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        meta => meta?,
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.dev() != device || (!top && mount_points.contains(path)) {
        skipped.push(path.to_path_buf());
        return Ok(());
    }
    let before = skipped.len();
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path(), device, mount_points, false, skipped)?;
    }
    if skipped.len() > before {
        // Something below stays, so this directory cannot go either.
        return Ok(());
    }
    fs::remove_dir(path)
}

/// Does `dir` take an overlay mount with two lower dirs, as containerd's overlayfs snapshotter
/// makes (and checks before it loads), with the whiteouts image layers carry? In a scratch dir
/// inside `dir`: a whiteout (a 0:0 character device, as containerd unpacks one) in the upper
/// lower dir hides the other's file, a lower file reads through the mount, a write lands in the
/// upper dir and a removal leaves a whiteout there; unmounted and removed again.
pub fn overlay_mount_taken(dir: &Path) -> bool {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::FileTypeExt;
    let scratch = dir.join(format!(".k3s-gvisor-overlay-probe-{}", std::process::id()));
    if crate::files::new_private_dir(&scratch).is_err() {
        return false;
    }
    let d = |name: &str| scratch.join(name);
    let whiteout =
        |path: &Path| fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device());
    let made = ["l1", "l2", "u", "w", "m"]
        .iter()
        .all(|name| fs::create_dir(d(name)).is_ok())
        && fs::write(d("l1/f"), b"x").is_ok()
        && fs::write(d("l2/hidden"), b"x").is_ok()
        && mknod(
            &d("l1/hidden"),
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .is_ok();
    let options = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        d("l1").display(),
        d("l2").display(),
        d("u").display(),
        d("w").display()
    );
    let mounted = made && mount("overlay", &d("m"), "overlay", MsFlags::empty(), &options).is_ok();
    let works = mounted
        && !d("m/hidden").exists()
        && fs::read(d("m/f")).is_ok_and(|bytes| bytes == b"x")
        && fs::write(d("m/g"), b"y").is_ok()
        && d("u/g").is_file()
        && fs::remove_file(d("m/f")).is_ok()
        && whiteout(&d("u/f"));
    if mounted {
        let _ = unmount(&d("m"));
    }
    let _ = remove_tree_on_one_fs(&scratch);
    works
}

/// Tries a recursive bind mount of a scratch dir onto a sibling and undoes it. Only doctor runs
/// this (it mounts, briefly); anything but EINVAL counts as "works".
pub fn recursive_bind_refused() -> bool {
    let scratch = std::env::temp_dir().join(format!("k3s-gvisor-doctor-{}", std::process::id()));
    let (source, target) = (scratch.join("a"), scratch.join("b"));
    if crate::files::new_private_dir(&scratch).is_err()
        || std::fs::create_dir(&source).is_err()
        || std::fs::create_dir(&target).is_err()
    {
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
    let _ = remove_tree_on_one_fs(&scratch);
    matches!(result, Err(error) if error.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32))
}

/// gVisor's umount2 of a path with nothing mounted on it any more unmounts the mount that holds
/// the path when another mount namespace still has a mount on the same directory (Linux:
/// EINVAL; docs/gvisor-generations.md). containerd's UnmountAll loops until EINVAL, so on a
/// pod's shm it took the sandbox's root (containerd 0004 stops the loop). Reproduced inside a
/// scratch tmpfs of the probe's own, so what a second umount takes is that tmpfs; undone.
pub fn umount_of_unmounted_path_takes_parent() -> bool {
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::wait::waitpid;
    use nix::unistd::{fork, pipe, read, write, ForkResult};
    let scratch =
        std::env::temp_dir().join(format!("k3s-gvisor-doctor-umount-{}", std::process::id()));
    if crate::files::new_private_dir(&scratch).is_err() {
        return false;
    }
    let inner = scratch.join("inner");
    let ready = mount("tmpfs", &scratch, "tmpfs", MsFlags::empty(), "mode=700").is_ok()
        && fs::create_dir(&inner).is_ok()
        && mount("tmpfs", &inner, "tmpfs", MsFlags::empty(), "mode=700").is_ok();
    let mut takes_parent = false;
    // Two pipes: the child says it holds its copy (`held`), and keeps it until the parent
    // closes `release`.
    if let (true, Ok((held_read, held_write)), Ok((release_read, release_write))) =
        (ready, pipe(), pipe())
    {
        // SAFETY: the child only calls unshare, write, close, read and _exit
        // (async-signal-safe).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(release_write);
                if unshare(CloneFlags::CLONE_NEWNS).is_ok() {
                    let _ = write(&held_write, b"x");
                }
                let _ = read(&release_read, &mut [0u8; 1]);
                // SAFETY: ends the child without the parent's atexit handlers.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(held_write);
                // The child's byte, or EOF if it could not unshare or died.
                let held = matches!(read(&held_read, &mut [0u8; 1]), Ok(1));
                use nix::mount::{umount2, MntFlags};
                takes_parent = held
                    && umount2(&inner, MntFlags::empty()).is_ok()
                    && umount2(&inner, MntFlags::empty()).is_ok();
                drop(release_write);
                let _ = waitpid(child, None);
            }
            Err(_) => {}
        }
    }
    // Only what mountinfo still lists: an umount of a path with nothing mounted on it is the
    // very bug probed, and takes the mount that holds the path. Where the probe's second umount
    // took the scratch tmpfs and a pod's mount namespace, made meanwhile, held a copy of it,
    // an umount of the scratch dir took the sandbox's root (gvisor-2025, 2026-12-07: every
    // /proc/PID of the sandbox gone, k3s crashed and restarted into `no default routes`).
    let mounted = |point: &Path| {
        probe::read_mounts()
            .iter()
            .any(|m| m.mount_point.as_path() == point)
    };
    for point in [&inner, &scratch] {
        if mounted(point) {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = fs::remove_dir(&inner);
    let _ = fs::remove_dir(&scratch);
    takes_parent
}

/// containerd bind-mounts each pod's netns under /run/netns and statfs(2)s it before bringing lo
/// up; Debian's 2022 gVisor answers ENOSYS there (though not on /proc/self/ns/net itself).
/// Reproduced on a scratch file and undone.
pub fn statfs_on_mounted_netns_fails() -> bool {
    let scratch = std::env::temp_dir().join(format!("k3s-gvisor-doctor-ns-{}", std::process::id()));
    if crate::files::create_new(&scratch, 0o600).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// On Linux the second umount answers EINVAL: the probe never reports the gVisor bug
    /// here, and leaves nothing mounted or behind.
    #[test]
    fn the_umount_probe_finds_linux_well_behaved() {
        if !testkit::root_or_skip("mounts tmpfs") {
            return;
        }
        assert!(!umount_of_unmounted_path_takes_parent());
        let scratch =
            std::env::temp_dir().join(format!("k3s-gvisor-doctor-umount-{}", std::process::id()));
        assert!(!scratch.exists());
    }

    /// Linux takes an overlay over a tmpfs; the probe leaves nothing mounted or behind, and a
    /// dir it cannot write in is a no.
    #[test]
    fn the_overlay_probe_takes_a_mount_over_a_tmpfs_and_cleans_up() {
        if !testkit::root_or_skip("mounts a tmpfs and an overlay") {
            return;
        }
        let temp = tempfile::tempdir().unwrap();
        mount("tmpfs", temp.path(), "tmpfs", MsFlags::empty(), "").unwrap();
        let taken = overlay_mount_taken(temp.path());
        let left: Vec<_> = fs::read_dir(temp.path()).unwrap().collect();
        let _ = unmount(temp.path());
        assert!(taken);
        assert!(left.is_empty(), "the probe left {left:?}");
        assert!(!overlay_mount_taken(&temp.path().join("missing")));
    }

    /// A tmpfs (another st_dev) and a bind mount from the same filesystem (same st_dev) below
    /// the tree: neither is entered, both are named, everything else goes.
    #[test]
    fn a_recursive_delete_stays_on_its_filesystem() {
        if !testkit::root_or_skip("mounts a tmpfs and a bind mount") {
            return;
        }
        let temp = tempfile::tempdir().unwrap();
        let (tree, outside) = (temp.path().join("tree"), temp.path().join("outside"));
        let (tmpfs, bind) = (tree.join("a/tmpfs"), tree.join("b/bind"));
        for dir in [&tmpfs, &bind, &outside] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(outside.join("keep-me"), "x").unwrap();
        fs::write(tree.join("a/ours"), "x").unwrap();
        mount("tmpfs", &tmpfs, "tmpfs", MsFlags::empty(), "").unwrap();
        fs::write(tmpfs.join("keep-me"), "x").unwrap();
        mount(
            &outside.display().to_string(),
            &bind,
            "",
            MsFlags::MS_BIND,
            "",
        )
        .unwrap();
        let result = remove_tree_on_one_fs(&tree);
        let kept = (
            tmpfs.join("keep-me").exists(),
            outside.join("keep-me").exists(),
        );
        let ours_gone = !tree.join("a/ours").exists();
        let _ = unmount(&bind);
        let _ = unmount(&tmpfs);
        assert_eq!(kept, (true, true), "files on other mounts were deleted");
        assert!(ours_gone);
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains(&tmpfs.display().to_string())
                && error.contains(&bind.display().to_string()),
            "{error}"
        );
    }
}
