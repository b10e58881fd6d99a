//! An existing install's life: start (after a sandbox restart too), stop, and uninstall, which
//! puts the host back as it was.

use std::path::Path;

use anyhow::{bail, Result};

use crate::cni_host;
use crate::images;
use crate::k3s_settings::Checked;
use crate::loopback;
use crate::mounts;
use crate::node_ip;
use crate::pod_logs;
use crate::probe::{self, HostFacts};
use crate::registries;
use crate::services::{self, CONTAINERD};
use crate::state::State;
use crate::userenv;

/// Applies registries.yaml, starts containerd, imports the shipped images and the airgap
/// archives, then k3s (when the bundle has it), and prints the line that puts kubectl, crictl
/// and ctr on PATH.
pub fn start(state: &mut State) -> Result<()> {
    start_as(state, None, false)
}

/// A new install's first start, with install's own check of the same settings a moment
/// before (each check runs `k3s server --help` and `k3s agent --help`, 0.2 s apiece in gVisor,
/// before k3s can start). A new server has no pods yet: traefik's image can wait for the node
/// to be Ready (images.rs `import_shipped`).
pub fn start_after_install(state: &mut State, checked: Option<Checked>) -> Result<()> {
    start_as(state, checked, true)
}

fn start_as(state: &mut State, checked: Option<Checked>, first_start: bool) -> Result<()> {
    let paths = state.paths();
    // k3s reads its config files at every start: they are checked (with the flags and
    // variables recorded at install) before anything starts, so a bad edit stops here.
    let settings = match checked {
        Some(checked) => Some(checked),
        None if services::has_k3s(&paths) => Some(Checked::new(
            &paths.bin("k3s"),
            state.k3s_command(),
            &state.k3s_flags,
            &state.env,
        )?),
        None => None,
    };
    restore_host_changes(state)?;
    // k3s, and containerd's CRI streaming server (exec, attach), listen on 127.0.0.1.
    loopback::ensure_up(state)?;
    if let (true, Some(settings)) = (state.control_plane_only, &settings) {
        // No kubelet, so no pods: containerd is not needed.
        services::k3s::start(&paths, state, settings, std::sync::mpsc::channel().0)?;
        println!("to use kubectl:\n  {}", userenv::export_line(&paths, false));
        return Ok(());
    }
    // Before containerd starts: a bad registries.yaml stops the start here, naming the line.
    let credentials_changed = registries::apply(Path::new(registries::REGISTRIES_FILE), &paths)?;
    let containerd_was_running = services::daemon(&paths, CONTAINERD).running_pid().is_some();
    if containerd_was_running && credentials_changed {
        println!(
            "registries: containerd is already running and reads credentials only when it \
             starts: `stop` then `start` to use the new ones (mirrors and tls apply now)"
        );
    }
    services::containerd::start(&paths, state)?;
    let snapshotter = state.snapshotter;
    let import_images = |node_ready| -> Result<()> {
        if !containerd_was_running {
            images::import_shipped(&paths, node_ready)?;
        }
        images::import_airgap(&paths, snapshotter);
        Ok(())
    };
    if let Some(settings) = &settings {
        // The images are imported while k3s starts, as k3s imports its airgap images while it
        // starts: no pod is placed before the node is Ready, seconds after the imports end
        // (BENCHMARKS.md "Where the start goes"), all in one import.
        let (node_ready, is_ready) = std::sync::mpsc::channel();
        let defer = first_start && !state.is_agent();
        std::thread::scope(|scope| {
            let imports = scope.spawn(|| import_images(defer.then_some(is_ready)));
            let k3s = services::k3s::start(&paths, state, settings, node_ready);
            let imported = imports.join().expect("the image import thread panicked");
            k3s.and(imported)
        })?;
        services::node_routes::start(&paths)?;
        if state.is_agent() {
            // An agent has no admin kubeconfig: kubectl works on the server.
            println!(
                "agent node {} is Ready; use kubectl on the server. crictl and ctr here:\n  {}",
                state.node_name(),
                userenv::agent_export_line(&paths)
            );
            return Ok(());
        }
        println!(
            "to use kubectl, helm, crictl and ctr:\n  {}",
            userenv::export_line(&paths, true)
        );
    } else {
        import_images(None)?;
        println!(
            "this bundle has no k3s binary: containerd is running on {} for CRI clients \
             (e.g. crictl --runtime-endpoint unix://{})",
            paths.containerd_socket().display(),
            paths.containerd_socket().display()
        );
    }
    Ok(())
}

/// After a sandbox restart /dev and /sys are fresh: the install's mounts are gone while the
/// prefix and data dir (on the persistent root) remain. Forget the lost host changes and make
/// them again, recording the new ones.
fn restore_host_changes(state: &mut State) -> Result<()> {
    let mounted = probe::read_mounts();
    let is_mounted = |path: &Path| mounted.iter().any(|m| m.mount_point == path);
    if state.mounts.iter().all(|p| is_mounted(p)) {
        return Ok(());
    }
    println!("mounts made at install are gone (was the sandbox restarted?): making them again");
    for mount in state.mounts.iter().rev().filter(|p| is_mounted(p)) {
        let _ = mounts::unmount(mount);
    }
    forget_lost_host_changes(state)?;
    let facts = HostFacts::probe(&[]);
    if !facts.has_dev_kmsg {
        mounts::provide_dev_kmsg(state)?;
        println!("/dev/kmsg: bind-mounted /dev/null");
    }
    if facts.needs_cgroup_mounts() {
        let outcome = mounts::mount_cgroups(state)?;
        println!("cgroup v1 mounted: {}", outcome.mounted.join(","));
    }
    crate::procsys_overlay::apply(state);
    Ok(())
}

/// Forgets the mounts and files a sandbox restart took, removing what is left of the files.
fn forget_lost_host_changes(state: &mut State) -> Result<()> {
    state.mounts.clear();
    for file in state.created_files.drain(..) {
        match mounts::remove_made_mount_target(&file) {
            Ok(None) => {}
            Ok(Some(left)) => println!("{left}"),
            Err(error) => println!("cannot remove {}: {error}", file.display()),
        }
    }
    state.created_dirs.retain(|dir| dir.exists());
    state.save()
}

pub fn stop(state: &State) -> Result<()> {
    let report = services::stop_all(&state.paths());
    if report.is_empty() {
        println!("nothing was running");
    }
    for line in report {
        println!("{line}");
    }
    Ok(())
}

/// Undoes the install: stops everything, unmounts in reverse order, removes what was created.
pub fn uninstall(state: &State) -> Result<()> {
    let paths = state.paths();
    stop(state)?;
    let mut problems = Vec::new();
    // An upgrade that did not finish kept the previous version's files beside the prefix.
    if let Some(previous) = &state.previous_prefix {
        match mounts::remove_tree_on_one_fs(previous) {
            Ok(()) => println!("removed {}", previous.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("cannot remove {}: {e}", previous.display())),
        }
    }
    for line in mounts::remove_new_pod_netns(&state.netns_before) {
        println!("{line}");
    }
    // Before anything is deleted: nothing may stay mounted below the prefix or data dir, or the
    // recursive delete would reach into it (kubelet's hostPath/subPath binds point outside).
    // This also takes the /proc/sys overlay's untouched view (under the data dir's run dir).
    let unmounted = mounts::unmount_under(&[&state.prefix, &state.data_dir]);
    unmounted.lines.iter().for_each(|line| println!("{line}"));
    refuse_while_mounted(&unmounted.still_mounted)?;
    // The recorded mounts that went above (those below the data dir, and their peers where
    // mounts propagate) are not unmounted again: only those still listed.
    let still_mounted = probe::read_mounts();
    for mount in state.mounts.iter().rev() {
        if !still_mounted.iter().any(|m| &m.mount_point == mount) {
            continue;
        }
        match mounts::unmount(mount) {
            Ok(()) => println!("unmounted {}", mount.display()),
            Err(error) => problems.push(format!("cannot unmount {}: {error}", mount.display())),
        }
    }
    userenv::remove_tool_links(state)
        .iter()
        .for_each(|line| println!("{line}"));
    let links = pod_logs::remove_links(Path::new(pod_logs::CONTAINER_LOGS), &paths.data_dir);
    if links > 0 {
        println!(
            "removed {links} container log link(s) from {}",
            pod_logs::CONTAINER_LOGS
        );
    }
    let (removed, failed) = crate::node_routes::remove_all(&paths);
    removed.iter().for_each(|line| println!("{line}"));
    problems.extend(failed);
    problems.extend(node_ip::remove_added_addresses(state));
    problems.extend(loopback::restore(state));
    let sandboxes = services::pod_sandboxes(&paths);
    let results = cni_host::remove_results(
        &paths.cni_conf_dir(),
        &sandboxes,
        Path::new(cni_host::RESULTS_DIR),
    );
    if results > 0 {
        println!(
            "removed {results} cached CNI result(s) from {}",
            cni_host::RESULTS_DIR
        );
    }
    let bridges = cni_host::bridges_in(&paths.cni_conf_dir());
    let (removed, failed) = cni_host::remove_new(&bridges, &state.links_before);
    removed.iter().for_each(|line| println!("{line}"));
    problems.extend(failed);
    for file in state.created_files.iter().rev() {
        match mounts::remove_made_mount_target(file) {
            Ok(None) => {}
            Ok(Some(left)) => println!("{left}"),
            Err(error) => problems.push(format!("cannot remove {}: {error}", file.display())),
        }
    }
    // k3s links its default kubeconfig location to the one it was told to write.
    let default_kubeconfig = Path::new(K3S_DEFAULT_KUBECONFIG);
    if std::fs::read_link(default_kubeconfig).is_ok_and(|target| target == paths.kubeconfig()) {
        let _ = std::fs::remove_file(default_kubeconfig);
    }
    for path in &state.absent_before {
        if path == Path::new("/etc/rancher") || path == Path::new("/etc/rancher/node") {
            // Written by our k3s (the node's join password); nothing else writes it.
            let _ = std::fs::remove_file("/etc/rancher/node/password");
        }
        remove_empty_dirs(path);
    }
    for dir in state.created_dirs.iter().rev() {
        let ours = *dir == state.prefix || *dir == state.data_dir;
        let result = if ours {
            mounts::remove_tree_on_one_fs(dir)
        } else {
            std::fs::remove_dir(dir)
        };
        if let Err(error) = result {
            if error.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("cannot remove {}: {error}", dir.display()));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "uninstall left things behind:\n  - {}",
            problems.join("\n  - ")
        );
    }
    println!(
        "uninstalled: removed {} and {}",
        paths.prefix.display(),
        paths.data_dir.display()
    );
    if let Some(server) = &state.server {
        // Only the server can remove a node from the cluster; the agent has no rights to.
        println!(
            "node {} stays in the cluster of {server} as NotReady: on the server, run \
             `kubectl delete node {}`",
            state.node_name(),
            state.node_name()
        );
    }
    Ok(())
}

/// Stops the uninstall, before it deletes anything, while mounts below the prefix or data dir
/// could not be unmounted; the state file stays, so uninstall can run again once they are gone.
fn refuse_while_mounted(still_mounted: &[(std::path::PathBuf, String)]) -> Result<()> {
    if still_mounted.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = still_mounted
        .iter()
        .map(|(point, error)| format!("{} (umount: {error})", point.display()))
        .collect();
    bail!(
        "still mounted below the install, so nothing was deleted (a recursive delete would reach \
         the files these mounts show, which may lie outside the install):\n  - {}\nstop what \
         uses them (`fuser -vm MOUNT_POINT`), unmount them (`umount MOUNT_POINT`, in the mount \
         namespace that holds them), then run uninstall again",
        list.join("\n  - ")
    )
}

/// Where k3s (as root) would write its kubeconfig; given --write-kubeconfig elsewhere, it makes
/// this a symlink to that file.
const K3S_DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// Removes `dir` and its subdirectories if they hold no files. Host paths like /run/containerd
/// and /var/lib/cni may be shared with another containerd that started after install, so only
/// the empty skeleton our daemons left is removed, never anyone's files.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a sandbox restart /dev is new: where /dev/kmsg is now a real device (a runtime
    /// that provides it), `start` must not delete it; only the empty file the install made.
    #[test]
    fn a_restart_removes_only_the_empty_files_the_install_made() {
        if !testkit::root_or_skip("makes a character device node") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut state: State = serde_json::from_value(serde_json::json!({
            "bundle_name": "k3s-gvisor", "bundle_version": "v0", "snapshotter": "native",
            "prefix": dir.path().join("prefix"), "data_dir": dir.path(),
            "control_plane_only": false, "created_dirs": [], "created_files": [],
            "mounts": [], "absent_before": [], "workarounds": [],
        }))
        .unwrap();
        let (device, made) = (dir.path().join("kmsg"), dir.path().join("made"));
        nix::sys::stat::mknod(
            &device,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        std::fs::write(&made, "").unwrap();
        state.created_files = vec![device.clone(), made.clone()];
        forget_lost_host_changes(&mut state).unwrap();
        assert!(device.exists(), "a real device was removed");
        assert!(!made.exists(), "the empty file the install made stays");
        assert!(state.created_files.is_empty());
    }
}
