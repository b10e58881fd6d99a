//! Bad input is refused before anything is written: a flipped byte, a missing file, another
//! architecture, not root, a full disk, directories holding someone else's files. Each test
//! checks the message and that nothing was created or changed.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require_root, run, FakeBundle};

/// A fake bundle in a scratch dir, with prefix and data dir paths that do not exist yet.
struct Setup {
    temp: tempfile::TempDir,
    bundle: FakeBundle,
    prefix: PathBuf,
    data: PathBuf,
}

/// None (the test is skipped) when not root: see testkit::root_or_skip.
fn setup(arch: &str, padding_bytes: usize) -> Option<Setup> {
    if !require_root() {
        return None;
    }
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), arch, padding_bytes);
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    Some(Setup {
        temp,
        bundle,
        prefix,
        data,
    })
}

fn install_command(program: &Path, prefix: &Path, data: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .arg("--prefix")
        .arg(prefix)
        .arg("--data-dir")
        .arg(data)
        .arg("--no-start");
    command
}

/// Runs `command`, asserts it was refused by preflight and created neither prefix nor data
/// dir, and returns its stderr.
fn refused(mut command: Command, prefix: &Path, data: &Path) -> String {
    let (output, stdout, stderr) = run(&mut command);
    assert!(
        !output.status.success(),
        "install should have been refused; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("preflight failed; nothing was changed"),
        "missing refusal header in stderr:\n{stderr}"
    );
    assert!(!prefix.exists(), "prefix {} was created", prefix.display());
    assert!(!data.exists(), "data dir {} was created", data.display());
    stderr
}

impl Setup {
    /// `./install --prefix P --data-dir D --no-start`, expected to be refused.
    fn install_refused(&self) -> String {
        let command = install_command(&self.bundle.install_script(), &self.prefix, &self.data);
        refused(command, &self.prefix, &self.data)
    }
}

#[test]
fn a_flipped_byte_is_refused_and_names_the_file() {
    let Some(s) = setup("amd64", 0) else {
        return;
    };
    let victim = s.bundle.dir.join("etc/containerd/config.toml.tmpl");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[10] ^= 0x01;
    fs::write(&victim, bytes).unwrap();
    let stderr = s.install_refused();
    assert!(
        stderr.contains("bundle damaged: etc/containerd/config.toml.tmpl has sha256"),
        "stderr does not name the damaged file:\n{stderr}"
    );
}

#[test]
fn a_missing_file_is_refused() {
    let Some(s) = setup("amd64", 0) else {
        return;
    };
    fs::remove_file(s.bundle.dir.join("etc/procsys/kernel/pid_max")).unwrap();
    let stderr = s.install_refused();
    assert!(
        stderr.contains("etc/procsys/kernel/pid_max is missing"),
        "{stderr}"
    );
}

#[test]
fn another_architecture_is_refused_by_the_script_and_by_the_installer() {
    let Some(s) = setup("arm64", 0) else {
        return;
    };
    let expected = "this bundle is for arm64 but this machine is amd64";
    // Both send the user to the bundle for this machine (arm64 and amd64 ones are built).
    let advice = "linux-amd64 bundle instead";
    // The sh entrypoint refuses first: on a real arm64 bundle the installer could not even run.
    let stderr = s.install_refused();
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stderr.contains(advice), "{stderr}");
    // The installer's own check, for anyone who runs bin/installer directly.
    let command = install_command(&s.bundle.installer(), &s.prefix, &s.data);
    let stderr = refused(command, &s.prefix, &s.data);
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stderr.contains(advice), "{stderr}");
}

#[test]
fn not_root_is_refused() {
    let Some(s) = setup("amd64", 0) else {
        return;
    };
    let mut command = install_command(&s.bundle.install_script(), &s.prefix, &s.data);
    command.uid(65534).gid(65534);
    let stderr = refused(command, &s.prefix, &s.data);
    assert!(stderr.contains("not running as root"), "{stderr}");
}

/// Unmounts the small tmpfs even when an assertion fails.
struct TmpfsMount(PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_refused_and_the_small_filesystem_stays_empty() {
    // 3 MiB of padding against a 2 MiB tmpfs: the prefix cannot hold the bundle.
    let Some(s) = setup("amd64", 3 << 20) else {
        return;
    };
    let small = s.temp.path().join("small");
    fs::create_dir(&small).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("cannot run mount (util-linux)");
    assert!(
        status.success(),
        "cannot mount a tmpfs for the full-disk test"
    );
    let _guard = TmpfsMount(small.clone());

    let prefix = small.join("prefix");
    let command = install_command(&s.bundle.install_script(), &prefix, &s.data);
    let stderr = refused(command, &prefix, &s.data);
    assert!(
        stderr.contains("not enough free disk for the prefix"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_dir(&small).unwrap().count(),
        0,
        "the small tmpfs is not empty"
    );
}

/// Uninstall removes what install created, so install must never adopt a directory that holds
/// someone else's files.
fn assert_occupied_dir_refused(occupied: impl Fn(&Setup) -> PathBuf, flag: &str) {
    let Some(s) = setup("amd64", 0) else {
        return;
    };
    let dir = occupied(&s);
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("someone-elses-file"), "keep me").unwrap();
    let (output, _stdout, stderr) = run(&mut install_command(
        &s.bundle.install_script(),
        &s.prefix,
        &s.data,
    ));
    assert!(!output.status.success());
    assert!(stderr.contains(flag), "{stderr}");
    assert!(stderr.contains("already holds files"), "{stderr}");
    assert_eq!(
        fs::read_to_string(dir.join("someone-elses-file")).unwrap(),
        "keep me"
    );
    let other = if dir == s.prefix { &s.data } else { &s.prefix };
    assert!(!other.exists(), "{} was created", other.display());
}

#[test]
fn a_non_empty_prefix_is_refused() {
    assert_occupied_dir_refused(|s| s.prefix.clone(), "--prefix");
}

#[test]
fn a_non_empty_data_dir_without_an_install_is_refused() {
    assert_occupied_dir_refused(|s| s.data.clone(), "--data-dir");
}
