//! The sandbox's shape as seen from inside, for `doctor`: whether the root filesystem is under
//! an overlay, the gVisor platform where it can be told, the memory and CPUs the sandbox shows,
//! and the free disk at the data dir; and warnings below the e2e's smallest sandbox
//! (`cargo xtask e2e --host current-small`, issue 26) and where the kubelet would evict.

use std::path::{Path, PathBuf};

use crate::probe;

/// The memory of the e2e's smallest sandbox, `cargo xtask e2e --host current-small` (runsc
/// with a 2 GiB cgroup memory limit, which it passes on as `--total-memory`, and one CPU's
/// quota), where the full scenario must pass. Below it nothing shows the cluster fits.
pub const E2E_SMALLEST_MEMORY_BYTES: u64 = 2 << 30;

/// k3s's kubelet evicts pods below 5 % free on the node's filesystem (k3s
/// pkg/daemons/agent/agent.go: EvictionHard nodefs.available and imagefs.available "5%").
pub const KUBELET_EVICTION_FREE_PERCENT: u64 = 5;

/// statvfs of gVisor's root overlay reports ~8 EiB free (`df /` inside `runsc
/// --overlay2=root:memory` and `root:self`: 9007199254740988 1K-blocks): no limit it knows.
const UNBOUNDED_BYTES: u64 = 1 << 60;

/// What a provider's suspend does to the cluster, measured by `cargo xtask e2e --lifecycle`
/// (docs/pause-resume.md); from inside nothing tells which one the provider uses.
const SUSPEND: &str = "runsc pause/resume: the cluster comes back (node Ready, pods, exec and \
     Services within 13 s of a 10-minute pause). runsc checkpoint/restore: the restore hangs \
     for good while any pod has a TCP connection open (gVisor restores the sockets of the \
     sandbox's first network namespace only, and waits for the rest; measured in the 2026-09 \
     gVisor): a provider that snapshots sandboxes to disk cannot bring this cluster back";

/// Which gVisor platform runs the sandbox, as far as it can be told from inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    NotGvisor,
    /// systrap maps its `[usertrap]` page into every process on x86_64 (seen in
    /// /proc/self/maps under `runsc --platform=systrap`, current and May 2025 builds; absent
    /// under `--platform=ptrace`).
    Systrap,
    /// No `[usertrap]` page on x86_64: ptrace or KVM, which look the same from inside.
    PtraceOrKvm,
    /// Not x86_64: systrap maps no `[usertrap]` page there, so nothing tells the platforms apart.
    Unknown,
}

impl Platform {
    pub fn from_maps(gvisor: bool, x86_64: bool, maps: &str) -> Platform {
        match (gvisor, x86_64) {
            (false, _) => Platform::NotGvisor,
            (true, false) => Platform::Unknown,
            (true, true) if maps.lines().any(|l| l.ends_with("[usertrap]")) => Platform::Systrap,
            (true, true) => Platform::PtraceOrKvm,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Platform::NotGvisor => "not gVisor",
            Platform::Systrap => "systrap (its [usertrap] page is in /proc/self/maps)",
            Platform::PtraceOrKvm => {
                "ptrace or KVM (no [usertrap] page in /proc/self/maps, so not systrap; the two \
                 cannot be told apart from inside)"
            }
            Platform::Unknown => "cannot be told from inside on this architecture",
        }
    }
}

/// Free and total bytes of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub free: u64,
    pub total: u64,
}

#[derive(Debug, Clone)]
pub struct Shape {
    /// The fs type of /proc/self/mountinfo's entry for `/`: `overlay` under runsc's root
    /// overlay (`--overlay2=root:self` or `root:memory`), `9p` when the root is shared straight
    /// from the host (`--overlay2=none`).
    pub root_fs_type: String,
    pub platform: Platform,
    pub cpus: usize,
    /// The least of /proc/meminfo's MemTotal (gVisor: runsc's `--total-memory`) and the cgroup
    /// memory limit.
    pub memory_bytes: Option<u64>,
    /// Where the free disk was measured: the data dir, or its nearest existing ancestor.
    pub disk_path: PathBuf,
    pub disk: Option<Disk>,
}

impl Shape {
    pub fn probe(root_fs_type: &str, gvisor: bool, data_dir: &Path) -> Shape {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cgroup_limit = [
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
        let disk_path = probe::existing_ancestor(data_dir);
        let disk = nix::sys::statvfs::statvfs(&disk_path).ok().map(|st| Disk {
            free: st.blocks_available() * st.fragment_size(),
            total: st.blocks() * st.fragment_size(),
        });
        Shape {
            root_fs_type: root_fs_type.to_string(),
            platform: Platform::from_maps(gvisor, cfg!(target_arch = "x86_64"), &maps),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: [mem_total(&meminfo), cgroup_limit]
                .into_iter()
                .flatten()
                .min(),
            disk_path,
            disk,
        }
    }

    pub fn root_overlay(&self) -> bool {
        self.root_fs_type == "overlay"
    }

    /// doctor's lines: what the sandbox is, one fact a line.
    pub fn describe(&self) -> Vec<String> {
        let root = if self.root_overlay() {
            "overlay: writes to / land in its upper layer, in the sandbox's memory or in a file \
             beside its root (runsc --overlay2=root:memory or root:self; the two look the same \
             from inside), not on the host's filesystem"
                .to_string()
        } else {
            format!("{} (no overlay over /)", self.root_fs_type)
        };
        let disk = match self.disk {
            None => "unknown (statvfs failed)".to_string(),
            Some(d) if d.free >= UNBOUNDED_BYTES => {
                "no limit reported (an overlay's upper layer: its real bound is the sandbox's \
                 memory or the host's disk)"
                    .to_string()
            }
            Some(d) => format!("{} of {}", gib(d.free), gib(d.total)),
        };
        let mut lines = vec![
            format!("{:<44} {root}", "sandbox: root filesystem"),
            format!("{:<44} {}", "sandbox: platform", self.platform.describe()),
            format!("{:<44} {}", "sandbox: CPUs", self.cpus),
            format!(
                "{:<44} {}",
                "sandbox: memory",
                self.memory_bytes.map_or("unknown".to_string(), gib)
            ),
            format!(
                "{:<44} {disk}",
                format!("sandbox: free disk at {}", self.disk_path.display())
            ),
        ];
        if self.platform != Platform::NotGvisor {
            lines.push(format!("{:<44} {SUSPEND}", "sandbox: pause, checkpoint"));
        }
        lines
    }

    /// Below what the e2e proved enough; each names the figure and where it comes from.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(memory) = self.memory_bytes.filter(|m| *m < E2E_SMALLEST_MEMORY_BYTES) {
            warnings.push(format!(
                "the sandbox has {} of memory, under the {} of the e2e's smallest sandbox (cargo \
                 xtask e2e --host current-small): k3s, containerd and the pods may be killed for \
                 memory",
                gib(memory),
                gib(E2E_SMALLEST_MEMORY_BYTES)
            ));
        }
        if let Some(d) = self.disk.filter(|d| {
            d.free < UNBOUNDED_BYTES && d.free * 100 < d.total * KUBELET_EVICTION_FREE_PERCENT
        }) {
            warnings.push(format!(
                "{} free of {} at {}: under {KUBELET_EVICTION_FREE_PERCENT} % the kubelet evicts \
                 pods and marks the node DiskPressure (k3s's eviction-hard nodefs.available)",
                gib(d.free),
                gib(d.total),
                self.disk_path.display()
            ));
        }
        if self.root_overlay() {
            if let Some(memory) = self
                .memory_bytes
                .filter(|m| *m < 2 * E2E_SMALLEST_MEMORY_BYTES)
            {
                warnings.push(format!(
                    "the root filesystem is an overlay and the sandbox has {}: if its upper \
                     layer is in memory (runsc --overlay2=root:memory), every image and the \
                     datastore take from that memory too",
                    gib(memory)
                ));
            }
        }
        warnings
    }
}

/// MemTotal of /proc/meminfo text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(root: &str, memory: u64, disk: Disk) -> Shape {
        Shape {
            root_fs_type: root.into(),
            platform: Platform::Systrap,
            cpus: 2,
            memory_bytes: Some(memory),
            disk_path: PathBuf::from("/var/lib/rancher/k3s"),
            disk: Some(disk),
        }
    }

    const PLENTY: Disk = Disk {
        free: 50 << 30,
        total: 100 << 30,
    };

    #[test]
    fn in_gvisor_doctor_says_what_pause_and_checkpoint_do_and_not_elsewhere() {
        let gvisor = shape("9p", 8 << 30, PLENTY).describe();
        assert!(
            gvisor
                .last()
                .unwrap()
                .contains("checkpoint/restore: the restore hangs"),
            "{gvisor:?}"
        );
        let plain = Shape {
            platform: Platform::NotGvisor,
            ..shape("ext4", 8 << 30, PLENTY)
        };
        assert!(!plain.describe().iter().any(|l| l.contains("checkpoint")));
    }

    #[test]
    fn warns_below_the_memory_the_e2e_proved() {
        assert!(shape("9p", 2 << 30, PLENTY).warnings().is_empty());
        let warnings = shape("9p", (2 << 30) - (64 << 20), PLENTY).warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("1.9 GiB of memory, under the 2.0 GiB"),
            "{warnings:?}"
        );
    }

    #[test]
    fn warns_where_the_kubelet_would_evict_and_not_on_an_unbounded_overlay() {
        let full = Disk {
            free: 4 << 30,
            total: 100 << 30,
        };
        let warnings = shape("9p", 8 << 30, full).warnings();
        assert!(
            warnings[0].contains("under 5 % the kubelet evicts"),
            "{warnings:?}"
        );
        // Measured: 9007199254740988 1K-blocks free under runsc's root overlay.
        let overlay = Disk {
            free: 9007199254740988 * 1024,
            total: 9007199254740988 * 1024,
        };
        let s = shape("overlay", 8 << 30, overlay);
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert!(
            s.describe()[4].contains("no limit reported"),
            "{:?}",
            s.describe()
        );
    }

    #[test]
    fn a_small_overlaid_sandbox_is_told_its_images_may_take_its_memory() {
        let warnings = shape("overlay", 3 << 30, PLENTY).warnings();
        assert!(warnings
            .iter()
            .any(|w| w.contains("upper layer is in memory")));
        assert!(shape("overlay", 8 << 30, PLENTY).warnings().is_empty());
    }

    #[test]
    fn the_platform_comes_from_the_usertrap_page() {
        let systrap =
            "00060000-00065000 r-xp 00000000 00:00 0                                  [usertrap]\n\
                       55ae80368000-55ae8036a000 r--p 00000000 00:19 145   /usr/bin/cat\n";
        assert_eq!(Platform::from_maps(true, true, systrap), Platform::Systrap);
        let ptrace = "55ae80368000-55ae8036a000 r--p 00000000 00:19 145   /usr/bin/cat\n";
        assert_eq!(
            Platform::from_maps(true, true, ptrace),
            Platform::PtraceOrKvm
        );
        assert_eq!(Platform::from_maps(true, false, ptrace), Platform::Unknown);
        assert_eq!(
            Platform::from_maps(false, true, systrap),
            Platform::NotGvisor
        );
    }

    #[test]
    fn memory_is_meminfo_total() {
        assert_eq!(
            mem_total("MemTotal:       24731408 kB\nMemFree: 1 kB\n"),
            Some(24731408 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
    }
}
