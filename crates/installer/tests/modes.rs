//! The install's own permissions, whatever the caller's umask: prefix 0755, data dir 0700 (it
//! holds state.json, whose lists uninstall deletes, and the join token), and no adopting of a
//! directory someone else owns or can write. Needs root (installs into temp dirs).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{require_root, run, uninstall, FakeBundle};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_under_umask_000_gives_0755_prefix_and_0700_data_dir() {
    if !require_root() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let (prefix, data) = (temp.path().join("opt/prefix"), temp.path().join("data"));
    let (output, stdout, stderr) = run(Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(bundle.install_script())
        .arg("--prefix")
        .arg(&prefix)
        .arg("--data-dir")
        .arg(&data)
        .arg("--no-start"));
    let modes = [
        (temp.path().join("opt"), 0o755),
        (prefix.clone(), 0o755),
        (prefix.join("bin"), 0o755),
        (prefix.join("etc"), 0o755),
        (data.clone(), 0o700),
        (data.join("state.json"), 0o600),
    ]
    .map(|(path, want)| (path.display().to_string(), mode(&path), want));
    let _ = uninstall(&prefix, &data);
    assert!(
        output.status.success(),
        "install failed:\n{stdout}\n{stderr}"
    );
    for (path, have, want) in modes {
        assert_eq!(have, want, "{path}: mode {have:o}, want {want:o}");
    }
}

#[test]
fn install_refuses_an_existing_dir_owned_by_another_user_or_writable_by_others() {
    if !require_root() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let prefix = temp.path().join("prefix");
    let foreign = temp.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(12345), Some(12345)).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
    let open = temp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();

    for (data, needle) in [
        (&foreign, "owned by uid 12345"),
        (&open, "writable by group or others (mode 777)"),
    ] {
        let (output, stdout, stderr) = bundle.install_no_start(&prefix, data);
        if output.status.success() {
            let _ = uninstall(&prefix, data);
        }
        assert!(
            !output.status.success(),
            "install adopted {}:\n{stdout}\n{stderr}",
            data.display()
        );
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
        assert!(
            !prefix.exists(),
            "a refused install wrote {}",
            prefix.display()
        );
        assert!(fs::read_dir(data).unwrap().next().is_none());
        assert_eq!(fs::metadata(data).unwrap().uid() == 12345, data == &foreign);
    }
}
