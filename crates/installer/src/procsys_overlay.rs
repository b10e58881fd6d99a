//! The /proc/sys files this sandbox lacks or refuses, laid over /proc/sys itself with bind
//! mounts, so that k3s reads and writes them without the launcher's ptrace stops.
//!
//! gVisor (every generation users run, measured in docs/gvisor-generations.md) lets root
//! bind-mount over procfs directories and files. A directory that lacks a file the kubelet needs
//! (`kernel` lacks `pid_max`) is covered by a directory of ours that holds the union of what the
//! kernel has there and what the procsys tree serves: every file the kernel has is bind-mounted
//! back from an untouched view of /proc/sys (so `kernel/hostname` still follows sethostname),
//! every served file from the procsys tree (so writes land there, as under the launcher). A file
//! that exists but refuses writes is covered by its tree file alone.
//!
//! The whole sandbox sees the overlay (the sandbox's root mount namespace), not only k3s:
//! containers do not, since runc mounts a fresh procfs for each. Every mount is recorded in the
//! state at once, so uninstall (and a sandbox restart: `start`) treat them as the other host
//! changes. The untouched view is the first mount; the probe reads through it while the
//! overlay is up ([`crate::probe::procsys_root`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::mounts::{self, MsFlags};
use crate::paths::Paths;
use crate::state::{LauncherUse, State};

/// Where the overlay's own directories live: the untouched view of /proc/sys and the
/// directories that cover /proc/sys's. Under the data dir's run dir, never under the prefix
/// (an upgrade renames the prefix).
pub struct OverlayDirs {
    pub real: PathBuf,
    pub covers: PathBuf,
    /// A copy of the prefix's procsys tree, the served files' source: an upgrade replaces the
    /// prefix while the overlay stays up.
    pub tree: PathBuf,
}

impl OverlayDirs {
    pub fn new(paths: &Paths) -> Self {
        let root = paths.run_dir().join("procsys-overlay");
        OverlayDirs {
            real: root.join("real"),
            covers: root.join("covers"),
            tree: root.join("tree"),
        }
    }
}

/// One bind mount of the overlay, in the order they are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// What to lay over `target` (/proc/sys): the placeholder files and directories to create
/// under `covers` first, then the binds in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub placeholder_dirs: Vec<PathBuf>,
    pub placeholder_files: Vec<PathBuf>,
    pub binds: Vec<Bind>,
}

/// Plans the overlay of `served` (paths relative to /proc/sys, each a file of `tree`) over
/// `target`, given `real`, an untouched view of `target`. Pure but for reading directories, so
/// it is tested on temporary trees.
pub fn plan(real: &Path, tree: &Path, covers: &Path, target: &Path, served: &[String]) -> Plan {
    // The directories to cover: for a missing file, the deepest directory the kernel has on
    // its way. Nested ones are merged by the outer one's walk.
    let mut cover: BTreeSet<PathBuf> = BTreeSet::new();
    let mut files_over: Vec<PathBuf> = Vec::new();
    for rel in served {
        let rel = Path::new(rel);
        if real.join(rel).is_file() {
            files_over.push(rel.to_path_buf());
            continue;
        }
        let mut dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        while !real.join(&dir).is_dir() {
            dir = dir.parent().unwrap_or(Path::new("")).to_path_buf();
        }
        cover.insert(dir);
    }
    let outermost: Vec<PathBuf> = cover
        .iter()
        .filter(|dir| !cover.iter().any(|o| o != *dir && dir.starts_with(o)))
        .cloned()
        .collect();
    let mut plan = Plan::default();
    for dir in &outermost {
        plan.placeholder_dirs.push(covers.join(dir));
        plan.binds.push(Bind {
            source: covers.join(dir),
            target: target.join(dir),
        });
        merge(real, tree, covers, target, dir, &mut plan);
    }
    // Read-only files outside every covered directory: the tree's file over the kernel's.
    for rel in files_over {
        if !outermost.iter().any(|dir| rel.starts_with(dir)) {
            plan.binds.push(Bind {
                source: tree.join(&rel),
                target: target.join(&rel),
            });
        }
    }
    plan
}

/// The union of the kernel's `dir` and the tree's, as placeholders under `covers` and binds onto
/// `target` (which by then shows the placeholders).
fn merge(real: &Path, tree: &Path, covers: &Path, target: &Path, dir: &Path, plan: &mut Plan) {
    let names = |root: &Path| -> BTreeSet<String> {
        fs::read_dir(root.join(dir))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let in_real = names(real);
    let in_tree = names(tree);
    for name in in_real.union(&in_tree) {
        let rel = dir.join(name);
        let (real_dir, tree_dir) = (real.join(&rel).is_dir(), tree.join(&rel).is_dir());
        if real_dir && tree_dir {
            plan.placeholder_dirs.push(covers.join(&rel));
            merge(real, tree, covers, target, &rel, plan);
            continue;
        }
        // The tree wins where both have the name: it holds only what must be served.
        let source = if in_tree.contains(name) {
            tree.join(&rel)
        } else {
            real.join(&rel)
        };
        if source.is_dir() {
            plan.placeholder_dirs.push(covers.join(&rel));
        } else {
            plan.placeholder_files.push(covers.join(&rel));
        }
        plan.binds.push(Bind {
            source,
            target: target.join(&rel),
        });
    }
}

/// Under `--launcher auto`, lays the procsys tree's files over /proc/sys and says so. Where the
/// sandbox refuses a mount it says why, and k3s runs under the launcher instead.
pub fn apply(state: &mut State) {
    if state.launcher != LauncherUse::Auto || is_laid(state) {
        return;
    }
    let served = served_files(&state.paths().procsys_dir());
    if served.is_empty() {
        return;
    }
    match lay_over(state, &served) {
        Ok(mounts) => println!(
            "/proc/sys: the {} file(s) this sandbox lacks or refuses are laid over /proc/sys \
             ({mounts} bind mounts; the sandbox's processes see them, containers do not): k3s \
             runs without the launcher",
            served.len()
        ),
        Err(e) => println!(
            "/proc/sys: cannot lay the missing files over /proc/sys ({e:#}): k3s runs under the \
             launcher, which serves them"
        ),
    }
}

/// The files of the procsys tree, relative to it (what the launcher or the overlay serves).
pub fn served_files(tree: &Path) -> Vec<String> {
    crate::preflight::files_under(tree)
}

/// Lays the procsys tree over /proc/sys, recording every mount in `state`. On any failure it
/// takes down what it made and returns the error: the caller then runs k3s under the launcher.
pub fn lay_over(state: &mut State, served: &[String]) -> Result<usize> {
    let paths = state.paths();
    let dirs = OverlayDirs::new(&paths);
    let first_new = state.mounts.len();
    let result = (|| -> Result<usize> {
        fs::create_dir_all(&dirs.real)
            .with_context(|| format!("cannot create {}", dirs.real.display()))?;
        for dir in [&dirs.covers, &dirs.tree] {
            if dir.exists() {
                fs::remove_dir_all(dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        for rel in served {
            let to = dirs.tree.join(rel);
            fs::create_dir_all(to.parent().expect("below the tree"))?;
            fs::copy(paths.procsys_dir().join(rel), &to)
                .with_context(|| format!("cannot copy {rel} of the procsys tree"))?;
        }
        bind(state, Path::new("/proc/sys"), &dirs.real)?;
        let plan = plan(
            &dirs.real,
            &dirs.tree,
            &dirs.covers,
            Path::new("/proc/sys"),
            served,
        );
        for dir in &plan.placeholder_dirs {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for file in &plan.placeholder_files {
            fs::write(file, b"").with_context(|| format!("cannot create {}", file.display()))?;
        }
        for b in &plan.binds {
            bind(state, &b.source, &b.target)?;
        }
        Ok(plan.binds.len())
    })();
    if result.is_err() {
        take_down(state, first_new);
    }
    result
}

/// Is the overlay up (any mount of this install on /proc/sys)?
pub fn is_laid(state: &State) -> bool {
    state.mounts.iter().any(|m| m.starts_with("/proc/sys"))
}

fn bind(state: &mut State, source: &Path, target: &Path) -> Result<()> {
    mounts::mount(
        &source.display().to_string(),
        target,
        "",
        MsFlags::MS_BIND,
        "",
    )
    .with_context(|| {
        format!(
            "cannot bind-mount {} on {}",
            source.display(),
            target.display()
        )
    })?;
    state.mounts.push(target.to_path_buf());
    state.save()
}

/// Unmounts the mounts recorded from index `from` on, newest first, and forgets them.
fn take_down(state: &mut State, from: usize) {
    for target in state.mounts.split_off(from).iter().rev() {
        let _ = mounts::unmount(target);
    }
    let _ = state.save();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "x").unwrap();
    }

    fn bind(source: &Path, target: &str) -> Bind {
        Bind {
            source: source.to_path_buf(),
            target: Path::new("/proc/sys").join(target),
        }
    }

    #[test]
    fn a_missing_file_covers_its_directory_with_the_kernels_files_bound_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (real, tree, covers) = (
            tmp.path().join("real"),
            tmp.path().join("tree"),
            tmp.path().join("covers"),
        );
        touch(&real, "kernel/hostname");
        touch(&real, "kernel/yama/ptrace_scope");
        touch(&real, "vm/overcommit_memory");
        touch(&real, "net/ipv4/ip_forward");
        touch(&real, "net/core/somaxconn");
        // Missing: kernel/pid_max, kernel/keys/* (no keys dir), net/bridge/* (no bridge dir),
        // net/ipv4/ping_group_range; read-only: vm/overcommit_memory.
        let served: Vec<String> = [
            "kernel/pid_max",
            "kernel/keys/root_maxkeys",
            "net/bridge/bridge-nf-call-iptables",
            "net/ipv4/ping_group_range",
            "vm/overcommit_memory",
        ]
        .map(String::from)
        .to_vec();
        for rel in &served {
            touch(&tree, rel);
        }
        let plan = plan(&real, &tree, &covers, Path::new("/proc/sys"), &served);
        // kernel and net are covered (net/ipv4 is merged inside net); vm only has its one
        // read-only file covered.
        assert_eq!(
            plan.binds,
            vec![
                bind(&covers.join("kernel"), "kernel"),
                bind(&real.join("kernel/hostname"), "kernel/hostname"),
                bind(&tree.join("kernel/keys"), "kernel/keys"),
                bind(&tree.join("kernel/pid_max"), "kernel/pid_max"),
                bind(&real.join("kernel/yama"), "kernel/yama"),
                bind(&covers.join("net"), "net"),
                bind(&tree.join("net/bridge"), "net/bridge"),
                bind(&real.join("net/core"), "net/core"),
                bind(&real.join("net/ipv4/ip_forward"), "net/ipv4/ip_forward"),
                bind(
                    &tree.join("net/ipv4/ping_group_range"),
                    "net/ipv4/ping_group_range"
                ),
                bind(&tree.join("vm/overcommit_memory"), "vm/overcommit_memory"),
            ]
        );
        assert_eq!(
            plan.placeholder_dirs,
            [
                "kernel",
                "kernel/keys",
                "kernel/yama",
                "net",
                "net/bridge",
                "net/core",
                "net/ipv4"
            ]
            .map(|d| covers.join(d))
        );
        assert_eq!(
            plan.placeholder_files,
            [
                "kernel/hostname",
                "kernel/pid_max",
                "net/ipv4/ip_forward",
                "net/ipv4/ping_group_range"
            ]
            .map(|f| covers.join(f))
        );
    }

    #[test]
    fn nothing_served_plans_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), "real/kernel/hostname");
        let plan = plan(
            &tmp.path().join("real"),
            &tmp.path().join("tree"),
            &tmp.path().join("covers"),
            Path::new("/proc/sys"),
            &[],
        );
        assert_eq!(plan, Plan::default());
    }
}
