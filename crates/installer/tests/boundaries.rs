//! Uninstall deletes only what the install made: bind mounts the kubelet leaves under the data
//! dir (hostPath and subPath volumes live under DATA/kubelet) point outside it, and their files
//! must survive, whether the mount is single, stacked, or cannot be unmounted at all.
//! Needs root (it mounts); every mount it makes is undone by `Mounts`'s Drop.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require_root, run, uninstall, FakeBundle};

/// The bind mounts a test made, unmounted (lazily, repeatedly for stacked ones) when dropped,
/// so a failing assertion leaves no mount behind on the machine.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn bind(&mut self, source: &Path, target: &Path) {
        let (output, _, stderr) = run(Command::new("mount").arg("--bind").arg(source).arg(target));
        assert!(output.status.success(), "mount --bind failed: {stderr}");
        self.0.push(target.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(target).output();
        }
    }
}

/// A directory outside the install with one file in it, and the file's path.
fn outside_dir(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = root.join("outside").join(name);
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keep-me");
    fs::write(&file, name).unwrap();
    (dir, file)
}

fn installed(temp: &Path) -> (PathBuf, PathBuf) {
    let bundle = FakeBundle::assemble(temp, "amd64", 0);
    let (prefix, data) = (temp.join("prefix"), temp.join("data"));
    let (output, stdout, stderr) = bundle.install_no_start(&prefix, &data);
    assert!(
        output.status.success(),
        "install failed:\n{stdout}\n{stderr}"
    );
    (prefix, data)
}

#[test]
fn uninstall_keeps_files_behind_plain_and_stacked_bind_mounts() {
    if !require_root() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let (prefix, data) = installed(temp.path());
    let volumes = data.join("kubelet/pods/uid/volumes");
    let mut mounts = Mounts(Vec::new());
    let (plain_dir, plain_file) = outside_dir(temp.path(), "plain");
    let (lower_dir, lower_file) = outside_dir(temp.path(), "stacked-lower");
    let (upper_dir, upper_file) = outside_dir(temp.path(), "stacked-upper");
    for name in ["plain", "stacked"] {
        fs::create_dir_all(volumes.join(name)).unwrap();
    }
    mounts.bind(&plain_dir, &volumes.join("plain"));
    // Two mounts on one point: unmounting it once uncovers the lower one, still mounted.
    mounts.bind(&lower_dir, &volumes.join("stacked"));
    mounts.bind(&upper_dir, &volumes.join("stacked"));

    let (output, stdout, stderr) = uninstall(&prefix, &data);
    for file in [&plain_file, &lower_file, &upper_file] {
        assert!(
            file.exists(),
            "uninstall deleted {} through a bind mount:\n{stdout}\n{stderr}",
            file.display()
        );
    }
    assert!(
        output.status.success(),
        "uninstall failed:\n{stdout}\n{stderr}"
    );
    assert!(!data.exists() && !prefix.exists(), "{stdout}\n{stderr}");
}

#[test]
fn uninstall_refuses_to_delete_while_a_mount_below_cannot_be_unmounted() {
    if !require_root() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let (prefix, data) = installed(temp.path());
    let volume = data.join("kubelet/pods/uid/volumes/locked");
    fs::create_dir_all(&volume).unwrap();
    let (outside, file) = outside_dir(temp.path(), "locked");
    let mut mounts = Mounts(Vec::new());
    mounts.bind(&outside, &volume);

    // In a mount namespace owned by a new user namespace, the mounts copied from ours are locked
    // to their parents: umount(2) answers EINVAL, with or without MNT_DETACH. That is an unmount
    // that really fails, as one held by another namespace's propagation would.
    let (output, stdout, stderr) = run(Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--"])
        .arg(prefix.join("bin/installer"))
        .arg("uninstall")
        .arg("--data-dir")
        .arg(&data));
    assert!(
        file.exists(),
        "uninstall deleted {} through a mount it could not unmount:\n{stdout}\n{stderr}",
        file.display()
    );
    assert!(
        !output.status.success(),
        "uninstall must fail while something is mounted below the data dir:\n{stdout}\n{stderr}"
    );
    for needle in [
        volume.display().to_string(),
        "still mounted".to_string(),
        "run uninstall again".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "expected {needle:?} in:\n{stderr}"
        );
    }
    assert!(
        data.join("state.json").exists(),
        "the state file must stay so that uninstall can run again"
    );

    // Here, where it can be unmounted, the second uninstall finishes the job.
    let (output, stdout, stderr) = uninstall(&prefix, &data);
    assert!(
        output.status.success(),
        "second uninstall failed:\n{stdout}\n{stderr}"
    );
    assert!(file.exists() && !data.exists() && !prefix.exists());
}
