//! Bad input is refused before anything is written: a flipped byte, another architecture, not
//! root, a full disk. Each test checks the message and that prefix and data dir do not exist.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::{require_root, run, FakeBundle};

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

fn assert_refused_and_untouched(stdout: &str, stderr: &str, ok: bool, prefix: &Path, data: &Path) {
    assert!(
        !ok,
        "install should have been refused; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("preflight failed; nothing was changed"),
        "missing refusal header in stderr:\n{stderr}"
    );
    assert!(!prefix.exists(), "prefix {} was created", prefix.display());
    assert!(!data.exists(), "data dir {} was created", data.display());
}

#[test]
fn a_flipped_byte_is_refused_and_names_the_file() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let victim = bundle.dir.join("etc/containerd/config.toml.tmpl");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[10] ^= 0x01;
    fs::write(&victim, bytes).unwrap();

    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    let (output, stdout, stderr) = run(&mut install_command(
        &bundle.install_script(),
        &prefix,
        &data,
    ));
    assert_refused_and_untouched(&stdout, &stderr, output.status.success(), &prefix, &data);
    assert!(
        stderr.contains("bundle damaged: etc/containerd/config.toml.tmpl has sha256"),
        "stderr does not name the damaged file:\n{stderr}"
    );
}

#[test]
fn a_missing_file_is_refused() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    fs::remove_file(bundle.dir.join("etc/procsys/kernel/pid_max")).unwrap();
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    let (output, stdout, stderr) = run(&mut install_command(
        &bundle.install_script(),
        &prefix,
        &data,
    ));
    assert_refused_and_untouched(&stdout, &stderr, output.status.success(), &prefix, &data);
    assert!(
        stderr.contains("etc/procsys/kernel/pid_max is missing"),
        "{stderr}"
    );
}

#[test]
fn another_architecture_is_refused_by_the_script_and_by_the_installer() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "arm64", 0);
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));

    // The sh entrypoint refuses first: on a real arm64 bundle the installer could not even run.
    let (output, stdout, stderr) = run(&mut install_command(
        &bundle.install_script(),
        &prefix,
        &data,
    ));
    assert_refused_and_untouched(&stdout, &stderr, output.status.success(), &prefix, &data);
    assert!(
        stderr.contains("this bundle is for arm64 but this machine is amd64"),
        "{stderr}"
    );

    // The installer's own check, for anyone who runs bin/installer directly.
    let (output, stdout, stderr) = run(&mut install_command(&bundle.installer(), &prefix, &data));
    assert_refused_and_untouched(&stdout, &stderr, output.status.success(), &prefix, &data);
    assert!(
        stderr.contains("this bundle is for arm64 but this machine is amd64"),
        "{stderr}"
    );
}

#[test]
fn not_root_is_refused() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    let mut command = install_command(&bundle.install_script(), &prefix, &data);
    command.uid(65534).gid(65534);
    let (output, stdout, stderr) = run(&mut command);
    assert_refused_and_untouched(&stdout, &stderr, output.status.success(), &prefix, &data);
    assert!(stderr.contains("not running as root"), "{stderr}");
}

/// Unmounts the small tmpfs even when an assertion fails.
struct TmpfsMount(std::path::PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_refused_and_the_small_filesystem_stays_empty() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    // 3 MiB of padding against a 2 MiB tmpfs: the prefix cannot hold the bundle.
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 3 << 20);
    let small = temp.path().join("small");
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

    let (prefix, data) = (small.join("prefix"), temp.path().join("data"));
    let (output, stdout, stderr) = run(&mut install_command(
        &bundle.install_script(),
        &prefix,
        &data,
    ));
    assert_refused_and_untouched(&stdout, &stderr, output.status.success(), &prefix, &data);
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

#[test]
fn a_non_empty_prefix_is_refused() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    fs::create_dir(&prefix).unwrap();
    fs::write(prefix.join("someone-elses-file"), "keep me").unwrap();
    let (output, _stdout, stderr) = run(&mut install_command(
        &bundle.install_script(),
        &prefix,
        &data,
    ));
    assert!(!output.status.success());
    assert!(stderr.contains("already holds files"), "{stderr}");
    assert_eq!(
        fs::read_to_string(prefix.join("someone-elses-file")).unwrap(),
        "keep me"
    );
    assert!(!data.exists());
}

#[test]
fn a_non_empty_data_dir_without_an_install_is_refused() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    fs::create_dir(&data).unwrap();
    fs::write(data.join("someone-elses-file"), "keep me").unwrap();
    let (output, _stdout, stderr) = run(&mut install_command(
        &bundle.install_script(),
        &prefix,
        &data,
    ));
    assert!(!output.status.success());
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(stderr.contains("already holds files"), "{stderr}");
    assert_eq!(
        fs::read_to_string(data.join("someone-elses-file")).unwrap(),
        "keep me"
    );
    assert!(!prefix.exists());
}
