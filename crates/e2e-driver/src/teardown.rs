//! The end of every single-install scenario (scenario.sh, and two-nodes.sh on each node; was
//! shell the two scripts copied from each other): stop, nothing runs, uninstall, the host as it
//! was before the install. One phase per call, as the scripts have their own steps in between
//! (scenario.sh's bind mounts around the uninstall, its settings' cleanup before the host files
//! are compared):
//!   `before`     (no step) what the install may change on the host, taken before the tarball
//!                is extracted, into RUN/teardown-before.json: the install's mounts (under the
//!                prefix and data dir, on /sys/fs/cgroup, /dev/kmsg, /proc/sys), the IPv4
//!                addresses, the files k3s and its parts write outside the install
//!                (/etc/rancher, /run/containerd, CNI's cache, pod logs, /run/netns, the tool
//!                wrappers in /usr/local/bin), the routes with a gateway (node-routes' routes);
//!   `stop`       stop          `./install stop` exits 0;
//!                no-processes  no process runs from the prefix or the data dir (not with
//!                              `--stop-only`: lifecycle.sh's and soak.sh's teardown); then the
//!                              components' logs are copied to RUN/component-logs (uninstall
//!                              removes them);
//!   `uninstall`  uninstall     `./install uninstall` exits 0;
//!   `restored CHECK...`, each in the order given:
//!                routes-removed       (routes) the routes with a gateway are as before;
//!                mounts-restored      (mounts) the mounts are as before;
//!                addresses-restored   (addresses) the addresses are as before (listed);
//!                host-files-restored  (host-files) the files outside the install are as before;
//!                nothing-left         (nothing-left) neither the prefix nor the data dir exists.
//! `driver k3s-log` prints k3s's error lines as `K3SERR` (xtask checks each is documented) and
//! the step k3s-log, always ok, with their count (`--lines-only`: the lines alone, for the soak).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use e2e_steps::{Status, Step};

use crate::{ok_or_fail, procs, Run};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Phase {
    /// Before the extract: what the host has, for `restored` to compare with.
    Before,
    /// `./install stop`, then no process of the install runs (stop, no-processes).
    Stop {
        /// Only the step stop: lifecycle.sh's and soak.sh's teardown never had no-processes.
        #[arg(long)]
        stop_only: bool,
    },
    /// `./install uninstall` (uninstall).
    Uninstall,
    /// The host as `before` found it, one step per CHECK, in the order given.
    Restored {
        #[arg(required = true)]
        checks: Vec<Check>,
    },
}

/// What `restored` compares with `before`'s snapshot (and nothing-left, which needs none).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Routes,
    Mounts,
    Addresses,
    HostFiles,
    NothingLeft,
}

impl Check {
    fn step(self) -> Step {
        match self {
            Check::Routes => Step::RoutesRemoved,
            Check::Mounts => Step::MountsRestored,
            Check::Addresses => Step::AddressesRestored,
            Check::HostFiles => Step::HostFilesRestored,
            Check::NothingLeft => Step::NothingLeft,
        }
    }

    /// Its key in RUN/teardown-before.json.
    fn key(self) -> &'static str {
        match self {
            Check::Routes => "routes",
            Check::Mounts => "mounts",
            Check::Addresses => "addresses",
            Check::HostFiles => "host-files",
            Check::NothingLeft => "nothing-left",
        }
    }
}

const BEFORE_FILE: &str = "teardown-before.json";
/// The checks `before` takes a snapshot for.
const SNAPSHOTS: [Check; 4] = [
    Check::Routes,
    Check::Mounts,
    Check::Addresses,
    Check::HostFiles,
];

/// Where k3s, the kubelet, containerd and CNI write outside the prefix and data dir: the node
/// password and kubeconfig link, shim sockets, CNI result cache, pod logs, pod netns files, and
/// the installer's tool wrappers.
const HOST_PLACES: [&str; 9] = [
    "/etc/rancher",
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/run/netns",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/crictl",
    "/usr/local/bin/ctr",
];

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    match phase {
        Phase::Before => {
            let snapshot: BTreeMap<&str, String> = SNAPSHOTS
                .iter()
                .map(|c| (c.key(), current(run, *c)))
                .collect();
            let file = run.run.join(BEFORE_FILE);
            std::fs::write(&file, serde_json::to_vec_pretty(&snapshot)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        Phase::Stop { stop_only } => {
            println!("== stop");
            let stopped = install_ok(run, "stop");
            run.step(Step::Stop, ok_or_fail(stopped), "");
            if !stop_only {
                let ours = ours(&run.prefix, &run.data_dir);
                run.verdict(
                    Step::NoProcesses,
                    match ours.is_empty() {
                        true => Ok(String::new()),
                        false => Err(ours),
                    },
                );
            }
            // Every component's log beside the run: uninstall removes the data dir.
            let _ = Command::new("cp")
                .arg("-r")
                .arg(run.data_dir.join("logs"))
                .arg(run.run.join("component-logs"))
                .stderr(std::process::Stdio::null())
                .status();
        }
        Phase::Uninstall => {
            println!("== uninstall");
            let uninstalled = install_ok(run, "uninstall");
            run.step(Step::Uninstall, ok_or_fail(uninstalled), "");
        }
        Phase::Restored { checks } => {
            let before: serde_json::Value = std::fs::read(run.run.join(BEFORE_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            for check in checks {
                let result = match check {
                    Check::NothingLeft => match !run.prefix.exists() && !run.data_dir.exists() {
                        true => Ok(String::new()),
                        false => Err(String::new()),
                    },
                    _ => match before[check.key()].as_str() {
                        Some(was) => restored(check, was, &current(run, check)),
                        None => Err(format!(
                            "no snapshot from before the install in {}",
                            run.run.join(BEFORE_FILE).display()
                        )),
                    },
                };
                run.verdict(check.step(), result);
            }
        }
    }
    Ok(())
}

/// lib.sh's `k3s_errors` and the step after it: each error line of k3s's log as `K3SERR
/// <line>`, then k3s-log ok with their count (not with LINES_ONLY: `xtask soak` makes its
/// own verdict of the lines, and soak.sh printed no step).
pub fn k3s_log(run: &Run, lines_only: bool) -> Result<()> {
    let log = std::fs::read_to_string(run.k3s_log()).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| procs::is_k3s_error_line(l))
        .collect();
    for line in &errors {
        println!("K3SERR {line}");
    }
    if !lines_only {
        run.step(
            Step::K3sLog,
            Status::Ok,
            format!("{} error line(s)", errors.len()),
        );
    }
    Ok(())
}

/// `./install ACTION --data-dir DATA` as the user runs it, its output on ours: exited 0.
pub(crate) fn install_ok(run: &Run, action: &str) -> bool {
    let data_dir = run.data_dir.display().to_string();
    match run.install(&[action, "--data-dir", &data_dir]) {
        Ok((rc, out)) => {
            print!("{out}");
            rc == 0
        }
        Err(e) => {
            eprintln!("{e:#}");
            false
        }
    }
}

/// The verdict on one snapshot: the same as before (addresses-restored lists them), else both.
fn restored(check: Check, before: &str, after: &str) -> Result<String, String> {
    match before == after {
        true if check == Check::Addresses => Ok(after.to_string()),
        true => Ok(String::new()),
        false => Err(format!("before=[{before}] after=[{after}]")),
    }
}

/// What the host has now for CHECK, as the snapshot keeps it: entries each followed by `;`.
fn current(run: &Run, check: Check) -> String {
    match check {
        Check::Routes => {
            gateway_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
        }
        Check::Mounts => install_mounts(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            &run.prefix,
            &run.data_dir,
        ),
        Check::Addresses => {
            let out = Command::new("ip")
                .args(["-o", "-4", "addr", "show"])
                .stderr(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            addresses(&out)
        }
        Check::HostFiles => {
            let mut files = Vec::new();
            for place in HOST_PLACES {
                walk(Path::new(place), &mut files);
            }
            joined(sorted(files.iter().map(|p| p.display().to_string())))
        }
        Check::NothingLeft => String::new(),
    }
}

/// Each entry followed by `;` (`tr '\n' ';'`).
fn joined(entries: impl IntoIterator<Item = String>) -> String {
    entries.into_iter().map(|e| format!("{e};")).collect()
}

fn sorted(entries: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut all: Vec<String> = entries.into_iter().collect();
    all.sort();
    all
}

/// Routes with a gateway that are not the default route: what node-routes adds (the fields
/// Iface, Destination, Gateway of /proc/net/route, in its order).
fn gateway_routes(route: &str) -> String {
    joined(route.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 3 && f[1] != "00000000" && f[2] != "00000000")
            .then(|| format!("{} {} {}", f[0], f[1], f[2]))
    }))
}

/// The mounts that belong to the install (or that it makes on the host): mountinfo's lines
/// naming the prefix, the data dir, /sys/fs/cgroup, /dev/kmsg or /proc/sys, from the mount
/// point on (the ids before it change with every mount), sorted.
fn install_mounts(mountinfo: &str, prefix: &Path, data_dir: &Path) -> String {
    let needles = [
        format!(" {}", prefix.display()),
        format!(" {}", data_dir.display()),
        " /sys/fs/cgroup".to_string(),
        " /dev/kmsg ".to_string(),
        " /proc/sys".to_string(),
    ];
    joined(sorted(
        mountinfo
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
            .map(|l| l.splitn(5, ' ').nth(4).unwrap_or("").to_string()),
    ))
}

/// IPv4 addresses on every interface (the installer may add one to lo): `ip -o -4 addr show`'s
/// interface and address, sorted.
fn addresses(ip_out: &str) -> String {
    joined(sorted(ip_out.lines().map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        format!(
            "{} {}",
            f.get(1).copied().unwrap_or(""),
            f.get(3).copied().unwrap_or("")
        )
    })))
}

/// PATH and everything under it (`find PATH ! -xtype l`): a directory's entries, not the
/// target of a link; a link whose target is gone is not counted (k3s replaces a stale
/// /etc/rancher/k3s/k3s.yaml link left by an install that is gone, and that is no loss).
fn walk(path: &Path, into: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() && std::fs::metadata(path).is_err() {
        return;
    }
    into.push(path.to_path_buf());
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                walk(&entry.path(), into);
            }
        }
    }
}

/// Processes running from the prefix or data dir: `pid exe;` each (lib.sh's `ours`).
pub(crate) fn ours(prefix: &Path, data_dir: &Path) -> String {
    joined(procs::pids().into_iter().filter_map(|pid| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        under(&exe, prefix, data_dir).then(|| format!("{pid} {}", exe.display()))
    }))
}

/// EXE is under PREFIX/ or DATA/ (the shell's `case $e in $P/*|$D/*`).
fn under(exe: &Path, prefix: &Path, data_dir: &Path) -> bool {
    let exe = exe.to_string_lossy();
    [prefix, data_dir]
        .iter()
        .any(|dir| exe.starts_with(&format!("{}/", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_a_gateway_but_not_the_default_one_are_node_routes() {
        let route = "Iface\tDestination\tGateway \tFlags\n\
                     eth0\t00000000\t010010AC\t0003\n\
                     eth0\t0000C80A\t00000000\t0001\n\
                     eth0\t00012A0A\t0300C80A\t0003\n";
        assert_eq!(gateway_routes(route), "eth0 00012A0A 0300C80A;");
        assert_eq!(gateway_routes("Iface\tDestination\tGateway\n"), "");
    }

    #[test]
    fn the_installs_mounts_are_kept_from_the_mount_point_on_and_sorted() {
        let info = "30 1 0:5 / /r/d/kubelet/pods rw - tmpfs tmpfs rw\n\
                    31 1 0:6 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                    32 1 0:7 / /home rw - ext4 /dev/sda1 rw\n\
                    33 1 0:8 / /proc/sys/kernel/pid_max rw - proc proc rw\n";
        assert_eq!(
            install_mounts(info, Path::new("/r/prefix"), Path::new("/r/d")),
            "/proc/sys/kernel/pid_max rw - proc proc rw;/r/d/kubelet/pods rw - tmpfs tmpfs rw;\
             /sys/fs/cgroup rw - cgroup2 cgroup2 rw;"
        );
    }

    #[test]
    fn addresses_are_interface_and_address_sorted() {
        let ip = "2: eth0    inet 10.200.0.2/24 brd 10.200.0.255 scope global eth0\n\
                  1: lo    inet 127.0.0.1/8 scope host lo\n";
        assert_eq!(addresses(ip), "eth0 10.200.0.2/24;lo 127.0.0.1/8;");
    }

    #[test]
    fn a_snapshot_restored_passes_and_a_changed_one_names_both() {
        assert_eq!(restored(Check::Mounts, "a;", "a;"), Ok(String::new()));
        assert_eq!(
            restored(Check::Addresses, "lo x;", "lo x;"),
            Ok("lo x;".into())
        );
        assert_eq!(
            restored(Check::Routes, "", "eth0 1 2;"),
            Err("before=[] after=[eth0 1 2;]".into())
        );
    }

    #[test]
    fn host_files_are_every_path_but_dangling_links() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("etc");
        std::fs::create_dir_all(top.join("k3s")).unwrap();
        std::fs::write(top.join("k3s/config.yaml"), "").unwrap();
        std::os::unix::fs::symlink("/nonexistent/k3s.yaml", top.join("k3s/k3s.yaml")).unwrap();
        std::os::unix::fs::symlink(top.join("k3s/config.yaml"), top.join("link")).unwrap();
        let mut files = Vec::new();
        walk(&top, &mut files);
        walk(&dir.path().join("none"), &mut files);
        files.sort();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc", "etc/k3s", "etc/k3s/config.yaml", "etc/link"]);
    }

    #[test]
    fn a_process_is_ours_only_under_the_prefix_or_data_dir() {
        let (p, d) = (Path::new("/r/prefix"), Path::new("/r/d"));
        assert!(under(Path::new("/r/prefix/bin/k3s"), p, d));
        assert!(under(
            Path::new("/r/d/k3s/data/abc/bin/containerd-shim"),
            p,
            d
        ));
        assert!(!under(Path::new("/r/prefix2/bin/k3s"), p, d));
        assert!(!under(Path::new("/usr/bin/sleep"), p, d));
    }
}
