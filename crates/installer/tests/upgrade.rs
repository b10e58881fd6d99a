//! Upgrade in place with real daemons, cheaply: bundles of the pipeline's patched runc and
//! containerd (no k3s, no images, so a start is containerd's ~1 s), on this host.
//! - A newer bundle whose containerd config is broken: containerd exits at the new version's
//!   start, and the upgrade puts the old prefix back and starts the old version again.
//! - A good newer bundle: upgraded, the old prefix removed, status shows the new version.
//! - A newer bundle that does not match its SHA256SUMS: refused before anything changes.
//! - The old bundle afterwards: a downgrade, refused, nothing changed; with `upgrade --force`,
//!   done.
//!
//! Inputs: root; the patched runtime ($K3S_GVISOR_RUNTIME_BIN or `cargo xtask build`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{require_root, run, uninstall, FakeBundle};

const OLD: &str = "v1.34.1+k3s1-gvisor.1";
const BROKEN: &str = "v1.34.1+k3s1-gvisor.2";
const NEW: &str = "v1.34.1+k3s1-gvisor.3";
const DAMAGED: &str = "v1.34.1+k3s1-gvisor.4";

/// A bundle of version `version` under `parent`; `edit(dir)` changes its files before the sums.
fn bundle(parent: &Path, version: &str, edit: impl FnOnce(&Path)) -> FakeBundle {
    fs::create_dir_all(parent).unwrap();
    let bundle = FakeBundle::assemble_with_runtime(parent, |_| Vec::new());
    let manifest_path = bundle.dir.join("bundle-manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["version"] = version.into();
    fs::write(&manifest_path, manifest.to_string()).unwrap();
    edit(&bundle.dir);
    bundle.write_sums();
    bundle
}

fn install(bundle: &FakeBundle, prefix: &Path, data: &Path) -> (bool, String) {
    let (output, stdout, stderr) = run(Command::new(bundle.install_script())
        .arg("--prefix")
        .arg(prefix)
        .arg("--data-dir")
        .arg(data));
    (output.status.success(), format!("{stdout}\n{stderr}"))
}

fn status(prefix: &Path, data: &Path) -> (bool, String) {
    let (output, stdout, stderr) = run(Command::new(prefix.join("bin/installer"))
        .arg("status")
        .arg("--data-dir")
        .arg(data));
    (output.status.success(), format!("{stdout}\n{stderr}"))
}

fn installed_version(prefix: &Path) -> String {
    let text = fs::read_to_string(prefix.join("bundle-manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["version"].as_str().unwrap().to_string()
}

fn state(data: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(data.join("state.json")).unwrap()).unwrap()
}

#[test]
fn a_failed_upgrade_restarts_the_old_version_and_a_good_one_replaces_it() {
    if !require_root() {
        return;
    }
    let _machine = testkit::lock_machine().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    let previous = temp.path().join("prefix.previous");
    let old = bundle(&temp.path().join("old"), OLD, |_| {});
    // Valid placeholders, invalid TOML: the layout succeeds and containerd refuses to start.
    let broken = bundle(&temp.path().join("broken"), BROKEN, |dir| {
        let template = dir.join("etc/containerd/config.toml.tmpl");
        let mut text = fs::read_to_string(&template).unwrap();
        text.push_str("\n[this is not toml\n");
        fs::write(template, text).unwrap();
    });
    let new = bundle(&temp.path().join("new"), NEW, |_| {});
    let damaged = bundle(&temp.path().join("damaged"), DAMAGED, |_| {});
    // After the sums: the file no longer matches SHA256SUMS.
    let mut ctr = fs::read(damaged.dir.join("bin/ctr")).unwrap();
    ctr[1000] ^= 1;
    fs::write(damaged.dir.join("bin/ctr"), ctr).unwrap();

    let (ok, output) = install(&old, &prefix, &data);
    let cleanup = || {
        let (_, stdout, stderr) = uninstall(&prefix, &data);
        println!("{stdout}\n{stderr}");
    };
    if !ok {
        cleanup();
        panic!("install of {OLD} failed:\n{output}");
    }
    // Fails the test, after uninstalling, when a check is false, naming each and showing
    // `shown`.
    let require = |after: &str, checks: &[(&str, bool)], shown: &str| {
        let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        if !failed.is_empty() {
            cleanup();
            panic!("after {after}: {failed:?}\n{shown}");
        }
    };
    let containerd_pid = || {
        fs::read_to_string(data.join("run/containerd.pid"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };

    let (ok, output) = install(&broken, &prefix, &data);
    println!("== upgrade to the broken bundle\n{output}");
    let (status_ok, status_output) = status(&prefix, &data);
    let checks = [
        ("the upgrade fails", !ok),
        (
            "it says why and what runs",
            output.contains(&format!(
                "upgrade to {BROKEN} failed: containerd exited with code 1 during startup (its \
                 keeper starts it again: `status`); {OLD} is running again"
            )) && output.contains("failed to unmarshal TOML"),
        ),
        ("the old files are back", installed_version(&prefix) == OLD),
        ("no previous prefix is left", !previous.exists()),
        (
            "the rendered config is the old one",
            !fs::read_to_string(prefix.join("etc/containerd/config.toml"))
                .unwrap()
                .contains("this is not toml"),
        ),
        (
            "state.json names the old version",
            state(&data)["bundle_version"] == OLD,
        ),
        (
            "state.json records no previous prefix",
            state(&data).get("previous_prefix").is_none(),
        ),
        (
            "status: the old version, containerd running",
            status_ok
                && status_output.starts_with(&format!("k3s-gvisor {OLD} at "))
                && status_output.contains("containerd: running"),
        ),
    ];
    require(
        "the failed upgrade",
        &checks,
        &format!("{output}\nstatus:\n{status_output}"),
    );
    let old_pid = containerd_pid();

    let (ok, output) = install(&new, &prefix, &data);
    println!("== upgrade to the good bundle\n{output}");
    let (status_ok, status_output) = status(&prefix, &data);
    let checks = [
        ("the upgrade succeeds", ok),
        (
            "it names both versions and each component",
            output.contains(&format!("upgraded k3s-gvisor {OLD} to {NEW}:"))
                && output.contains("containerd v2.1.4 (unchanged)"),
        ),
        (
            "the new files are in place",
            installed_version(&prefix) == NEW,
        ),
        ("the previous prefix is removed", !previous.exists()),
        (
            "state.json names the new version",
            state(&data)["bundle_version"] == NEW,
        ),
        (
            "containerd was restarted",
            !containerd_pid().is_empty() && containerd_pid() != old_pid,
        ),
        (
            "status: the new version, containerd running",
            status_ok
                && status_output.starts_with(&format!("k3s-gvisor {NEW} at "))
                && status_output.contains("containerd: running"),
        ),
    ];
    require(
        "the upgrade",
        &checks,
        &format!("{output}\nstatus:\n{status_output}"),
    );

    let pid = containerd_pid();
    let (ok, output) = install(&damaged, &prefix, &data);
    println!("== a newer bundle that does not match its SHA256SUMS\n{output}");
    let checks = [
        ("it is refused", !ok),
        (
            "by the bundle's check, before anything changed",
            output.contains("preflight failed; nothing was changed")
                && output.contains("bundle damaged: bin/ctr has sha256"),
        ),
        (
            "nothing changed",
            installed_version(&prefix) == NEW && containerd_pid() == pid,
        ),
    ];
    require("the damaged bundle", &checks, &output);

    let (ok, output) = install(&old, &prefix, &data);
    println!("== the old bundle again\n{output}");
    let checks = [
        ("the downgrade is refused", !ok),
        (
            "naming both versions and --force",
            output.contains("refusing to downgrade")
                && output.contains(OLD)
                && output.contains(NEW)
                && output.contains("./install upgrade --force"),
        ),
        (
            "nothing changed",
            installed_version(&prefix) == NEW && containerd_pid() == pid,
        ),
    ];
    require("the downgrade", &checks, &output);

    let (output, stdout, stderr) = run(Command::new(old.install_script())
        .arg("upgrade")
        .arg("--force")
        .arg("--data-dir")
        .arg(&data));
    let output_text = format!("{stdout}\n{stderr}");
    println!("== the old bundle with upgrade --force\n{output_text}");
    let (status_ok, status_output) = status(&prefix, &data);
    let checks = [
        ("the forced downgrade succeeds", output.status.success()),
        (
            "it says so",
            output_text.contains(&format!("--force: downgrading from {NEW} to {OLD}"))
                && output_text.contains(&format!("upgraded k3s-gvisor {NEW} to {OLD}:")),
        ),
        (
            "status: the old version, containerd running",
            status_ok
                && status_output.starts_with(&format!("k3s-gvisor {OLD} at "))
                && status_output.contains("containerd: running"),
        ),
    ];
    let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    cleanup();
    assert!(
        failed.is_empty(),
        "after the forced downgrade: {failed:?}\n{output_text}"
    );
    assert!(
        !prefix.exists() && !data.exists(),
        "uninstall left prefix or data dir behind"
    );
}
