//! Preflight: every check that can refuse an install runs here, before anything is written.
//! All problems are collected and printed together, so one run tells the user everything.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::blockers;
use crate::bundle::{self, Bundle};
use crate::paths::Paths;
use crate::probe::{self, HostFacts};
use bundle_format::paths as in_bundle;
use bundle_format::{Arch, Snapshotter};

/// Room kept free beyond the bundle's own size, for configs, logs and state.
const PREFIX_MARGIN_BYTES: u64 = 8 << 20;
/// containerd and k3s need room for unpacked images, etcd/sqlite and logs.
const DATA_MIN_BYTES_WHEN_STARTING: u64 = 512 << 20;

/// What preflight learned, for the steps that follow.
#[derive(Debug, Clone)]
pub struct Plan {
    pub facts: HostFacts,
    pub snapshotter: Snapshotter,
    /// One line per workaround, printed before anything changes.
    pub workarounds: Vec<String>,
}

/// Relative paths of the default /proc/sys values the bundle ships under etc/procsys/.
pub fn procsys_candidates(bundle: &Bundle) -> Vec<String> {
    files_under(&bundle.path(in_bundle::PROCSYS_DIR))
}

/// Every file below `root`, relative to it, sorted (a procsys tree's entries).
pub fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    collect_files(root, root, &mut found);
    found.sort();
    found
}

fn collect_files(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, found);
        } else if let Ok(relative) = path.strip_prefix(root) {
            found.push(relative.to_string_lossy().into_owned());
        }
    }
}

/// Runs every check. On failure returns an error listing all problems; nothing has been written.
/// `runs_pods`: this node will run pods (not `--control-plane-only`).
pub fn check(bundle: &Bundle, paths: &Paths, will_start: bool, runs_pods: bool) -> Result<Plan> {
    let mut problems = bundle_problems(bundle);
    for (flag, dir) in [("--prefix", &paths.prefix), ("--data-dir", &paths.data_dir)] {
        if let Some(problem) = not_new_or_empty(flag, dir) {
            problems.push(problem);
        }
    }
    problems.extend(disk_problems(bundle, paths, will_start));
    // Only where a kubelet will run under the data dir.
    if runs_pods && bundle.path(in_bundle::K3S).is_file() {
        problems.extend(socket_path_problem(paths));
    }
    refuse(&problems)?;
    let facts = HostFacts::probe(&procsys_candidates(bundle));
    // No pod could ever get a network: refused before anything changes, not after a 16 s
    // start that ends in svcproxy's "bridge cannot be created".
    if runs_pods && facts.netns_without_ip_stack {
        refuse(&[format!(
            "network namespaces have no IP stack here: {}",
            crate::blockers::NETNS_WITHOUT_IP_STACK_ADVICE
        )])?;
    }
    let snapshotter = if probe::overlay_usable_at(&facts, &paths.data_dir) {
        Snapshotter::Overlayfs
    } else {
        Snapshotter::Native
    };
    Ok(plan(bundle, facts, snapshotter))
}

/// Preflight of a bundle that replaces an existing install's files (`upgrade.rs`): the same
/// checks of the bundle itself, and room at the prefix for its files while the old ones are
/// kept aside. The prefix and data dir are the install's own, so the new-or-empty rule of a
/// fresh install does not apply; the snapshotter stays the install's (containerd's data in the
/// data dir was made with it).
pub fn check_upgrade(bundle: &Bundle, paths: &Paths, snapshotter: Snapshotter) -> Result<Plan> {
    let mut problems = bundle_problems(bundle);
    let need = bundle.total_bytes().unwrap_or(0) + PREFIX_MARGIN_BYTES;
    problems.extend(free_space_problem(
        "the new version's files",
        &probe::existing_ancestor(&paths.prefix),
        need,
        "the old files stay until the new version runs: free some space",
    ));
    refuse(&problems)?;
    let facts = HostFacts::probe(&procsys_candidates(bundle));
    Ok(plan(bundle, facts, snapshotter))
}

/// The checks of a bundle that look at nothing but the bundle and who runs it: root, the
/// architecture, every file against SHA256SUMS (which must list the manifest).
fn bundle_problems(bundle: &Bundle) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();

    if !nix::unistd::geteuid().is_root() {
        problems.push(
            "not running as root: the installer mounts cgroups and /dev/kmsg and starts \
             containerd; run it as root (e.g. `sudo ./install`)"
                .into(),
        );
    }

    let host_arch = probe::host_arch();
    if bundle.manifest.arch.as_str() != host_arch {
        // Bundles are built for amd64 and arm64 (bundle-template/install says the same): send
        // the user to the one for this machine, or say there is none.
        let advice = match host_arch.parse::<Arch>() {
            Ok(arch) => format!(
                "download the k3s-gvisor-{}-linux-{arch} bundle instead",
                bundle.manifest.version
            ),
            Err(_) => "k3s-gvisor bundles are built for linux-amd64 and linux-arm64 only".into(),
        };
        problems.push(format!(
            "this bundle is for {} but this machine is {host_arch}: {advice}",
            bundle.manifest.arch
        ));
    }

    match bundle::verify_sums(&bundle.dir) {
        Ok(bad) if bad.is_empty() => {}
        Ok(bad) => {
            for line in bad {
                problems.push(format!("bundle damaged: {line}"));
            }
            problems.push(
                "the bundle does not match its SHA256SUMS: download it again and re-extract".into(),
            );
        }
        Err(error) => problems.push(format!("{error:#}")),
    }
    problems
}

fn refuse(problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = String::from("preflight failed; nothing was changed:\n");
    for problem in problems {
        message.push_str(&format!("  - {problem}\n"));
    }
    bail!(message.trim_end().to_string())
}

/// What the host needs of this bundle: the facts, and one line per workaround.
fn plan(bundle: &Bundle, facts: HostFacts, snapshotter: Snapshotter) -> Plan {
    let mut workarounds = Vec::new();
    if facts.looks_like_gvisor() {
        workarounds.push(format!(
            "sandbox: kernel reports {} and the root filesystem is {}: this looks like gVisor",
            facts.kernel_release, facts.root_fs_type
        ));
    }
    workarounds.extend(blockers::install_lines(&blockers::table(
        &blockers::Inputs {
            facts: &facts,
            manifest: Some(&bundle.manifest),
            installed: None,
            snapshotter: Some(snapshotter),
            mount_probes: false,
        },
    )));
    Plan {
        facts,
        snapshotter,
        workarounds,
    }
}

/// The longest unix socket path under the data dir: the kubelet binds its pod-resources socket
/// under a temporary name of up to 10 digits first (seen in its log: `listen unix
/// DATA/kubelet/pod-resources/2631905237`).
const LONGEST_SOCKET_UNDER_KUBELET: &str = "pod-resources/0000000000";
/// A unix socket's path has 108 bytes (sun_path), its terminating NUL among them.
const UNIX_SOCKET_PATH_MAX: usize = 107;

/// A data dir so long that the kubelet's socket paths under it do not fit a unix socket
/// address: k3s would start, then exit on `bind: invalid argument` at every restart (measured:
/// a 75-character data dir, 2026-12-06).
fn socket_path_problem(paths: &Paths) -> Option<String> {
    let socket = paths.kubelet_root().join(LONGEST_SOCKET_UNDER_KUBELET);
    let length = socket.as_os_str().len();
    (length > UNIX_SOCKET_PATH_MAX).then(|| {
        format!(
            "--data-dir {} is too long: the kubelet's sockets under it ({}) would be {length} \
             bytes, over the {UNIX_SOCKET_PATH_MAX} a unix socket's path may have (k3s would \
             exit on `bind: invalid argument`); choose a data dir of at most {} characters",
            paths.data_dir.display(),
            socket.display(),
            paths.data_dir.as_os_str().len() - (length - UNIX_SOCKET_PATH_MAX)
        )
    })
}

/// Prefix and data dir must be new or empty: the installer owns everything under them and
/// removes them on uninstall, so it must never adopt a directory holding someone else's files.
/// (An existing install is recognised earlier, by its state file.)
fn not_new_or_empty(flag: &str, dir: &Path) -> Option<String> {
    if !dir.exists() {
        return None;
    }
    if !dir.is_dir() {
        return Some(format!(
            "{flag} {} exists and is not a directory",
            dir.display()
        ));
    }
    if let Some(problem) = crate::files::not_ours(dir) {
        return Some(format!(
            "{flag} {} {problem}: the installer adopts only an empty directory of its own user, \
             writable by no one else; choose a new directory (the installer creates it), or fix \
             it: `chown {} {}; chmod go-w {}`",
            dir.display(),
            nix::unistd::geteuid(),
            dir.display(),
            dir.display()
        ));
    }
    let empty = fs::read_dir(dir)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false);
    if empty {
        None
    } else {
        Some(format!(
            "{flag} {} already holds files: choose an empty or new directory, \
             or uninstall the previous install first",
            dir.display()
        ))
    }
}

fn disk_problems(bundle: &Bundle, paths: &Paths, will_start: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let bundle_bytes = bundle.total_bytes().unwrap_or(0);
    let prefix_need = bundle_bytes + PREFIX_MARGIN_BYTES;
    let image_bytes: u64 = bundle
        .manifest
        .images
        .iter()
        .map(|image| fs::metadata(bundle.path(&image.file)).map_or(0, |m| m.len()))
        .sum();
    let data_need = if will_start {
        DATA_MIN_BYTES_WHEN_STARTING + 3 * image_bytes
    } else {
        1 << 20
    };

    let prefix_at = probe::existing_ancestor(&paths.prefix);
    let data_at = probe::existing_ancestor(&paths.data_dir);
    let same_fs = device_of(&prefix_at).is_some() && device_of(&prefix_at) == device_of(&data_at);
    let checks: Vec<(&str, PathBuf, u64)> = if same_fs {
        vec![("prefix and data dir", prefix_at, prefix_need + data_need)]
    } else {
        vec![
            ("prefix", prefix_at, prefix_need),
            ("data dir", data_at, data_need),
        ]
    };
    for (what, at, need) in checks {
        problems.extend(free_space_problem(
            what,
            &at,
            need,
            "free some space or choose another --prefix/--data-dir",
        ));
    }
    problems
}

fn free_space_problem(what: &str, at: &Path, need: u64, advice: &str) -> Option<String> {
    match probe::free_bytes(at) {
        Some(free) if free >= need => None,
        Some(free) => Some(format!(
            "not enough free disk for the {what} at {}: {} MiB free, {} MiB needed; {advice}",
            at.display(),
            free >> 20,
            need.div_ceil(1 << 20)
        )),
        None => Some(format!("cannot measure free disk at {}", at.display())),
    }
}

fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The e2e's longest run dir (75 characters) was refused by the kubelet at run time; a
    /// data dir up to the limit passes, one character more is refused with the limit named.
    #[test]
    fn a_data_dir_too_long_for_the_kubelets_sockets_is_refused() {
        let fits = format!("/{}", "d".repeat(73));
        assert_eq!(fits.len(), 74);
        assert!(socket_path_problem(&Paths::new(Path::new("/opt/p"), Path::new(&fits))).is_none());
        let long = format!("{fits}d");
        let problem =
            socket_path_problem(&Paths::new(Path::new("/opt/p"), Path::new(&long))).unwrap();
        assert!(
            problem.contains("would be 108 bytes") && problem.contains("at most 74 characters"),
            "{problem}"
        );
    }
}
