//! What this host (or gVisor sandbox) offers, measured without changing anything.
//!
//! Directory listings of synthetic filesystems fail inside gVisor (EINVAL from getdents on
//! /proc/sys and /sys/fs/cgroup), so every probe here stats or reads one known path instead.

use std::fs;
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo, reduced to what the installer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside its filesystem that is mounted ("/" for a whole filesystem, "/sys" for a
    /// bind of /proc/sys).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// Per-superblock options (for cgroup v1 mounts: the controllers, e.g. "rw,cpu,cpuacct").
    pub super_options: String,
}

/// Parses /proc/self/mountinfo text. Lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let root = left.split(' ').nth(3)?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_string();
            let _source = right.next();
            let super_options = right.next().unwrap_or("").to_string();
            Some(MountEntry {
                root: PathBuf::from(unescape_octal(root)),
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fs_type,
                super_options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn read_mounts() -> Vec<MountEntry> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Where the kernel's own /proc/sys is seen: /proc/sys itself, or, while this install's overlay
/// covers it (procsys_overlay.rs), the untouched view the overlay keeps (a procfs mount of
/// `/sys` elsewhere), so that probes measure the sandbox and not the overlay.
pub fn procsys_root(mounts: &[MountEntry]) -> PathBuf {
    let overlaid = mounts
        .iter()
        .any(|m| m.mount_point.starts_with("/proc/sys") && m.mount_point != Path::new("/proc/sys"));
    let untouched = mounts.iter().find(|m| {
        m.fs_type == "proc"
            && m.root == Path::new("/sys")
            && m.mount_point != Path::new("/proc/sys")
    });
    match (overlaid, untouched) {
        (true, Some(view)) => view.mount_point.clone(),
        _ => PathBuf::from("/proc/sys"),
    }
}

/// The mount that holds `path`: the entry with the longest mount point that is a prefix of it.
/// Later entries win ties, because a later mount on the same point hides the earlier one.
pub fn mount_for<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for entry in mounts {
        if path.starts_with(&entry.mount_point) {
            let longer = best.is_none_or(|b| {
                entry.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len()
            });
            if longer {
                best = Some(entry);
            }
        }
    }
    best
}

/// The nearest ancestor of `path` (or `path` itself) that exists.
pub fn existing_ancestor(path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    loop {
        if current.exists() {
            return current;
        }
        if !current.pop() {
            return PathBuf::from("/");
        }
    }
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_string(),
        |name| name.release().to_string_lossy().into_owned(),
    )
}

/// `uname -m` translated to the Go architecture names the manifest uses (one no bundle is built
/// for keeps its own name).
pub fn host_arch() -> String {
    let machine = std::env::consts::ARCH;
    bundle_format::Arch::from_rust(machine).map_or_else(|| machine.into(), |arch| arch.to_string())
}

/// (major, minor) of a release string like "6.1.0-18-amd64" or "4.4.0".
pub fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Bytes available to unprivileged writers at `path`'s filesystem (statvfs f_bavail).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() * stat.fragment_size())
}

/// Does the kernel let a process become a child subreaper? containerd's shim needs it unless
/// patched. Probed in a forked child, because the answer can differ for PID 1 (Debian's 2022
/// gVisor accepts it from the sandbox's init, which `runsc do PROGRAM` makes us, and refuses
/// it from any other process, such as the shim).
/// The inode of `path` from lstat(2) itself, not std's statx: Debian's 2022 gVisor answers statx
/// on /proc with EINVAL.
pub fn lstat_inode(path: &str) -> Option<u64> {
    nix::sys::stat::lstat(path).ok().map(|st| st.st_ino)
}

/// Does the kernel refuse setns(2) into a PID namespace? gVisor did until 2025-06-26 (EINVAL
/// for any CLONE_NEWPID), and runc's exec joins the container's PID namespace that way. Probed
/// by joining our own PID namespace, which changes nothing: setns(CLONE_NEWPID) only sets the
/// namespace of children yet to be forked, and ours already is that one.
/// Without /proc/self/ns/pid (Debian's 2022 gVisor) there is nothing to join: refused too.
/// In a child: in the current gVisor a process that joined its own PID namespace can no longer
/// start threads (clone(CLONE_THREAD) answers EINVAL once the namespace for children was set,
/// measured with `runsc do`; Linux allows it), and install starts one to import images.
pub fn setns_pid_refused() -> bool {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let Ok(own) = fs::File::open("/proc/self/ns/pid") else {
        return true;
    };
    // SAFETY: the child only calls setns and _exit (async-signal-safe); the parent reaps it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // EINVAL: gVisor 2023 to mid-2025. EOPNOTSUPP: Debian's 2022 gVisor (where runc
            // cannot start a container at all, so runc 0003, which retries on EINVAL, is never
            // reached).
            let refused = matches!(
                nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWPID),
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP)
            );
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(if refused { 1 } else { 0 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 1)))
        }
        // No child, no answer: say refused, the side that retries (runc 0003 handles both).
        Err(_) => true,
    }
}

pub fn child_subreaper_supported() -> bool {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    // In a child: being a subreaper would change who reaps the installer's own daemons.
    // SAFETY: the child only calls prctl and _exit (async-signal-safe) before exiting; the
    // parent reaps it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let ok = nix::sys::prctl::set_child_subreaper(true).is_ok();
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

/// Whether a new network namespace has no IP stack: `socket(AF_INET)` in it answers
/// EAFNOSUPPORT. So it is in gVisor run with `--network=host` (hostinet passes the host's stack
/// through to the sandbox's first namespace only; measured in the current gVisor, 2026-12-06),
/// and every pod that is not hostNetwork lives in such a namespace. False where it cannot be
/// told (unshare refused).
pub fn new_netns_lacks_ip_stack() -> bool {
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    const NO_IP_STACK: i32 = 2;
    // In a child: the installer's own namespace stays as it is.
    // SAFETY: the child only calls unshare, socket, close and _exit (async-signal-safe); the
    // parent reaps it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match unshare(CloneFlags::CLONE_NEWNET) {
                Err(_) => 1,
                Ok(()) => {
                    // SAFETY: plain syscalls on a descriptor this child owns.
                    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
                    if fd >= 0 {
                        unsafe { libc::close(fd) };
                        0
                    } else if nix::errno::Errno::last() == nix::errno::Errno::EAFNOSUPPORT {
                        NO_IP_STACK
                    } else {
                        1
                    }
                }
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, NO_IP_STACK)))
        }
        Err(_) => false,
    }
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Is capability number `cap` in this process's effective set (/proc/self/status CapEff)?
pub fn has_effective_capability(cap: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << cap) != 0)
}

/// Filesystem types the kernel knows (/proc/filesystems).
pub fn known_filesystems() -> Vec<String> {
    fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().last().map(str::to_string))
        .collect()
}

/// The cgroup v1 controllers the installer mounts where none are mounted: the set Debian's 2022
/// gVisor accepts (SANDBOX-FACTS.md), whose /proc/cgroups lists nothing.
pub const CGROUP_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "cpuset", "memory", "pids"];

/// The controllers to try mounting: the base set, plus every enabled controller /proc/cgroups
/// lists (current gVisor lists and accepts devices, which runc's cgroup v1 manager needs),
/// plus devices always (a refusal is reported, not fatal). gVisor's own "job" controller too:
/// every controller a process's /proc/PID/cgroup names must be mounted for containerd's shim
/// to load a container's cgroup (containerd/cgroups `PidPath`: "cgroups: cannot find cgroup
/// mount destination" for each container, so the kubelet's CRI stats had no container and
/// `kubectl top pod` answered NotFound in the current gVisor).
pub fn cgroup_controllers_to_mount() -> Vec<String> {
    let mut wanted: Vec<String> = CGROUP_CONTROLLERS.iter().map(|c| c.to_string()).collect();
    let listed = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    for line in listed.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, _, _, "1"] = fields.as_slice() {
            wanted.push(name.to_string());
        }
    }
    wanted.push("devices".to_string());
    let mut seen = std::collections::BTreeSet::new();
    wanted.retain(|c| seen.insert(c.clone()));
    wanted
}

/// Everything the installer needs to know about the host, in one value.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub kernel_release: String,
    pub root_fs_type: String,
    /// Relative /proc/sys paths (from the bundle's default-value tree) that this host lacks.
    pub missing_procsys: Vec<String>,
    /// Relative /proc/sys paths (from the same tree) that exist but refuse writes: gVisor's
    /// vm/overcommit_memory reads 0 and answers EIO to the kubelet writing 1.
    pub read_only_procsys: Vec<String>,
    pub has_dev_kmsg: bool,
    pub has_dev_fuse: bool,
    /// cgroup v1 controllers already mounted somewhere, e.g. ["cpu", "memory"].
    pub mounted_controllers: Vec<String>,
    pub cgroup2_mounted: bool,
    pub cgroup2_known: bool,
    pub overlay_known: bool,
    pub child_subreaper: bool,
    /// CAP_SYS_RESOURCE, needed to give pods an oom_score_adj below containerd's own.
    pub cap_sys_resource: bool,
    /// A new network namespace has no IP stack (gVisor's `--network=host`): no pod network.
    pub netns_without_ip_stack: bool,
}

impl HostFacts {
    /// `procsys_candidates` are the relative paths the bundle ships default values for.
    pub fn probe(procsys_candidates: &[String]) -> HostFacts {
        let mounts = read_mounts();
        let root_fs_type = mount_for(&mounts, Path::new("/"))
            .map(|m| m.fs_type.clone())
            .unwrap_or_else(|| "unknown".into());
        let procsys = procsys_root(&mounts);
        let (mut missing_procsys, present): (Vec<String>, Vec<String>) = procsys_candidates
            .iter()
            .cloned()
            .partition(|rel| !procsys.join(rel).exists());
        missing_procsys.extend(
            DERIVED_PROCSYS
                .iter()
                .filter(|rel| !procsys.join(rel).exists())
                .map(|rel| rel.to_string()),
        );
        let read_only_procsys = present
            .into_iter()
            .filter(|rel| write_refused(&procsys.join(rel)))
            .collect();
        let mut mounted_controllers: Vec<String> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup")
            .flat_map(|m| m.super_options.split(',').map(str::to_string))
            .filter(|option| is_controller_name(option))
            .collect();
        mounted_controllers.sort();
        mounted_controllers.dedup();
        let filesystems = known_filesystems();
        HostFacts {
            kernel_release: kernel_release(),
            root_fs_type,
            missing_procsys,
            read_only_procsys,
            has_dev_kmsg: Path::new("/dev/kmsg").exists(),
            has_dev_fuse: Path::new("/dev/fuse").exists(),
            mounted_controllers,
            cgroup2_mounted: mounts.iter().any(|m| m.fs_type == "cgroup2"),
            cgroup2_known: filesystems.iter().any(|f| f == "cgroup2"),
            overlay_known: filesystems.iter().any(|f| f == "overlay"),
            child_subreaper: child_subreaper_supported(),
            cap_sys_resource: has_effective_capability(CAP_SYS_RESOURCE),
            netns_without_ip_stack: new_netns_lacks_ip_stack(),
        }
    }

    /// gVisor reports a fixed kernel release whatever the host runs: "4.4.0" in 2022 releases,
    /// "4.19.0-gvisor" in current ones.
    pub fn looks_like_gvisor(&self) -> bool {
        self.kernel_release == "4.4.0" || self.kernel_release.contains("gvisor")
    }

    /// containerd refuses unprivileged ports/ICMP below 4.11 (and gVisor says 4.4.0).
    pub fn kernel_below_4_11(&self) -> bool {
        kernel_version(&self.kernel_release) < (4, 11)
    }

    /// No cgroup hierarchy at all: the installer mounts cgroup v1 controllers itself.
    pub fn needs_cgroup_mounts(&self) -> bool {
        self.mounted_controllers.is_empty() && !self.cgroup2_mounted
    }

    pub fn procsys_missing(&self, relative: &str) -> bool {
        self.missing_procsys.iter().any(|m| m == relative)
    }

    /// The /proc/sys files the launcher must serve: missing ones and read-only ones.
    pub fn served_procsys(&self) -> Vec<String> {
        let mut served = self.missing_procsys.clone();
        served.extend(self.read_only_procsys.iter().cloned());
        served.sort();
        served
    }
}

/// /proc/sys files whose value is this host's own, so the bundle cannot ship a default: where
/// one is missing, the installer writes it into the procsys tree (`derived_procsys_value`).
/// gVisor before 2025 lacks kernel/osrelease, and the kubelet reads it to pick its safe
/// sysctls and to decide on tmpfs noswap (`failed to read os-release file: open
/// /proc/sys/kernel/osrelease`, measured in gvisor-2025).
pub const DERIVED_PROCSYS: [&str; 1] = ["kernel/osrelease"];

/// The value of a `DERIVED_PROCSYS` file, or None for any other.
pub fn derived_procsys_value(relative: &str) -> Option<String> {
    (relative == "kernel/osrelease").then(|| format!("{}\n", kernel_release()))
}

/// Does this /proc/sys file refuse a write? Writes back what it holds, so a file that accepts
/// the write is left as it was. Opening for writing is not enough: gVisor opens
/// vm/overcommit_memory for writing and fails the write(2) with EIO.
pub fn write_refused(path: &Path) -> bool {
    use std::io::Write;
    let Ok(current) = fs::read(path) else {
        return true;
    };
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(mut file) => file.write_all(&current).is_err(),
        Err(_) => true,
    }
}

fn is_controller_name(option: &str) -> bool {
    matches!(
        option,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "pids"
            | "devices"
            | "freezer"
            | "blkio"
            | "net_cls"
            | "net_prio"
            | "hugetlb"
            | "perf_event"
            | "rdma"
            | "misc"
            | "job"
    )
}

/// Should containerd use the overlayfs snapshotter for data kept at `data_dir`?
/// It needs the kernel to know "overlay" and a filesystem its layers can sit on
/// (`overlay_fits`); in gVisor also an overlay mount actually taken there. Everything else gets
/// the slower but always-working "native", which copies the image for every container.
pub fn overlay_usable_at(facts: &HostFacts, data_dir: &Path) -> bool {
    if !facts.overlay_known {
        return false;
    }
    let dir = existing_ancestor(data_dir);
    let mounts = read_mounts();
    let fs_type = mount_for(&mounts, &dir)
        .map(|m| m.fs_type.as_str())
        .unwrap_or("unknown");
    let gvisor = facts.looks_like_gvisor();
    overlay_fits(gvisor, fs_type) && (!gvisor || crate::mounts::overlay_mount_taken(&dir))
}

/// The filesystems containerd's overlayfs layers may sit on. On Linux: ext4, xfs, btrfs, ext3.
/// gVisor implements overlay itself. Its root overlay (`--overlay2=root:self`, runsc's default,
/// or `root:memory`) refuses an overlay mount, and there containerd's overlayfs plugin loads but
/// every container fails (EINVAL). Its own tmpfs takes one, and pods ran there. 9p (the root
/// with `--overlay2=none`) takes one in the current gVisor and containers ran on it through
/// `ctr`, but no whole install has run its pods on it yet: native there for now
/// (BENCHMARKS.md, "Real images").
fn overlay_fits(gvisor: bool, fs_type: &str) -> bool {
    if gvisor {
        fs_type == "tmpfs"
    } else {
        matches!(fs_type, "ext4" | "xfs" | "btrfs" | "ext3")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Linux (and in gVisor with its own netstack) a new network namespace has its loopback
    /// stack: the blocker is never seen there.
    #[test]
    fn a_new_network_namespace_has_an_ip_stack_here() {
        if !testkit::root_or_skip("unshares a network namespace") {
            return;
        }
        assert!(!new_netns_lacks_ip_stack());
    }

    const SAMPLE: &str = "\
22 1 0:20 / / rw,relatime - 9p none rw,trans=fd,rfd=3,wfd=3
30 22 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw
31 30 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 22 0:32 / /mnt/with\\040space rw - ext4 /dev/vda rw
";

    #[test]
    fn parses_mountinfo_and_finds_the_mount_of_a_path() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].fs_type, "9p");
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/with space"));
        let m = mount_for(&mounts, Path::new("/sys/fs/cgroup/cpu/x")).unwrap();
        assert_eq!(m.super_options, "rw,cpu");
        let m = mount_for(&mounts, Path::new("/var/lib")).unwrap();
        assert_eq!(m.fs_type, "9p");
    }

    #[test]
    fn the_kernels_proc_sys_is_read_through_the_overlays_untouched_view() {
        // As measured in the current gVisor with the overlay up (procsys_overlay.rs).
        let overlaid = parse_mountinfo(
            "18 1 0:23 / /proc rw - proc none rw
40 22 0:23 /sys /var/lib/k3s-gvisor/run/procsys-overlay/real rw - proc none rw
41 18 0:20 /var/lib/k3s-gvisor/run/procsys-overlay/covers/kernel /proc/sys/kernel rw - 9p none rw
42 41 0:23 /sys/kernel/hostname /proc/sys/kernel/hostname rw - proc none rw
",
        );
        assert_eq!(
            procsys_root(&overlaid),
            Path::new("/var/lib/k3s-gvisor/run/procsys-overlay/real")
        );
        assert_eq!(overlaid[1].root, Path::new("/sys"));
        // No overlay: /proc/sys, even where a view of it is mounted elsewhere.
        assert_eq!(procsys_root(&overlaid[..2]), Path::new("/proc/sys"));
        assert_eq!(
            procsys_root(&parse_mountinfo(SAMPLE)),
            Path::new("/proc/sys")
        );
    }

    #[test]
    fn overlayfs_fits_linux_disks_and_only_gvisors_tmpfs() {
        for fs in ["ext4", "xfs", "btrfs", "ext3"] {
            assert!(overlay_fits(false, fs), "{fs} on Linux");
            assert!(!overlay_fits(true, fs), "{fs} in gVisor");
        }
        assert!(overlay_fits(true, "tmpfs"));
        for fs in ["9p", "overlay", "unknown"] {
            assert!(!overlay_fits(true, fs), "{fs} in gVisor");
            assert!(!overlay_fits(false, fs), "{fs} on Linux");
        }
        assert!(!overlay_fits(false, "tmpfs"));
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        assert_eq!(kernel_version("4.4.0"), (4, 4));
        assert_eq!(kernel_version("6.1.0-18-amd64"), (6, 1));
        assert!(kernel_version("4.4.0") < (4, 11));
        assert!(kernel_version("4.19.2") >= (4, 11));
    }
}
