//! The install's own modes and mounts (issue 25; was tests/e2e/mounts.sh). Steps:
//!   umask-modes  (in `scenario installed`, right after the install step) scenario.sh runs the
//!                install under `umask 000` (a umask a user's shell may have); the installer
//!                sets umask 022 itself and explicit modes: prefix and PREFIX/bin 755, data dir
//!                700 (711 where K3S_KUBECONFIG_MODE=644 lets others read the kubeconfig inside
//!                it: search only), state.json 600;
//!   uninstall-keeps-outside-files  (`mounts before-uninstall`, then the teardown's uninstall,
//!                then `mounts after-uninstall`, before mounts-restored, which these mounts must
//!                not disturb) uninstall never crosses a mount: four bind mounts under
//!                DATA/kubelet that point outside the install, as the kubelet's hostPath and
//!                subPath volumes do (one plain, one stacked twice on one point, one kept busy
//!                by a process whose cwd is in it); every outside file survives and none of the
//!                mounts is left.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use e2e_steps::Step;

use crate::procs::{mode, mode_text};
use crate::Run;

#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The outside directories and the bind mounts onto them, before the uninstall.
    BeforeUninstall,
    /// The verdict after the uninstall, then whatever it left mounted goes.
    AfterUninstall,
}

/// The outside directories, each with a `keep-me` file holding its own name.
const OUTSIDE: [&str; 4] = ["plain", "lower", "upper", "busy"];
/// What `before-uninstall` leaves for `after-uninstall` (the shell kept it in variables).
const SETUP_FILE: &str = "mounts-setup.json";

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    match phase {
        Phase::BeforeUninstall => before_uninstall(run),
        Phase::AfterUninstall => after_uninstall(run),
    }
}

/// The umask-modes step. KUBECONFIG_644: the install was told K3S_KUBECONFIG_MODE=644 (the
/// settings of full mode).
pub fn umask_modes(run: &Run, kubeconfig_644: bool) {
    // 711 only once k3s wrote the kubeconfig there (an install that failed earlier keeps 700).
    let data_mode = match kubeconfig_644 && run.kubeconfig().is_file() {
        true => 0o711,
        false => 0o700,
    };
    let paths = [
        run.prefix.clone(),
        run.prefix.join("bin"),
        run.data_dir.clone(),
        run.data_dir.join("state.json"),
    ];
    let modes = paths.each_ref().map(|p| mode(p));
    run.verdict(
        Step::UmaskModes,
        umask_verdict(modes, data_mode, &run.prefix, &run.data_dir),
    );
}

/// The modes of the prefix, PREFIX/bin, the data dir and state.json against 755 755 DATA_MODE
/// 600.
fn umask_verdict(
    modes: [Option<u32>; 4],
    data_mode: u32,
    prefix: &Path,
    data_dir: &Path,
) -> Result<String, String> {
    let (p, d) = (prefix.display(), data_dir.display());
    match modes == [Some(0o755), Some(0o755), Some(data_mode), Some(0o600)] {
        true => Ok(format!(
            "installed under umask 000: {p}, {p}/bin 755; {d} {data_mode:o}; state.json 600"
        )),
        false => Err(format!(
            "modes of {p}, {p}/bin, {d}, {d}/state.json: {}",
            modes.map(mode_text).map(|m| m + " ").concat()
        )),
    }
}

fn binds(run: &Run) -> PathBuf {
    run.data_dir.join("kubelet/e2e-binds")
}

fn outside(run: &Run) -> PathBuf {
    run.run.join("outside")
}

/// The mount points under BINDS in mountinfo (its fifth field), in its order.
fn mounted_under(mountinfo: &str, binds: &Path) -> Vec<String> {
    let under = format!("{}/", binds.display());
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|point| point.starts_with(&under))
        .map(str::to_string)
        .collect()
}

fn mounted_now(run: &Run) -> Vec<String> {
    mounted_under(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        &binds(run),
    )
}

/// `mount --bind FROM TO`, as the shell ran it (the driver has no mount(2) of its own).
fn bind(from: &Path, to: &Path) -> bool {
    Command::new("mount")
        .arg("--bind")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success())
}

fn before_uninstall(run: &Run) -> Result<()> {
    let (binds, outside) = (binds(run), outside(run));
    let mut err = String::new();
    for n in OUTSIDE {
        let dir = outside.join(n);
        if std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("keep-me"), format!("{n}\n")))
            .is_err()
        {
            err.push_str(&format!(" outside-{n}"));
        }
    }
    if ["plain", "stacked", "busy"]
        .iter()
        .any(|d| std::fs::create_dir_all(binds.join(d)).is_err())
    {
        err.push_str(" mkdir");
    }
    if !bind(&outside.join("plain"), &binds.join("plain")) {
        err.push_str(" plain");
    }
    if !(bind(&outside.join("lower"), &binds.join("stacked"))
        && bind(&outside.join("upper"), &binds.join("stacked")))
    {
        err.push_str(" stacked");
    }
    if !bind(&outside.join("busy"), &binds.join("busy")) {
        err.push_str(" busy");
    }
    // Its output away from ours: a sleep holding the run's stdout would keep xtask reading.
    let busy = Command::new("sleep")
        .arg("600")
        .current_dir(binds.join("busy"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|c| c.id())
        .ok();
    let setup = serde_json::json!({
        "err": err,
        "count": mounted_now(run).len(),
        "busy_pid": busy,
    });
    let file = run.run.join(SETUP_FILE);
    std::fs::write(&file, setup.to_string())
        .with_context(|| format!("cannot write {}", file.display()))
}

fn after_uninstall(run: &Run) -> Result<()> {
    let binds = binds(run);
    let setup: serde_json::Value = std::fs::read(run.run.join(SETUP_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let lost: Vec<&str> = OUTSIDE
        .into_iter()
        .filter(|n| {
            std::fs::read_to_string(outside(run).join(n).join("keep-me"))
                .map_or(true, |t| t.trim_end_matches('\n') != *n)
        })
        .collect();
    let left = mounted_now(run);
    let busy_pid = setup["busy_pid"].as_i64();
    if let Some(pid) = busy_pid {
        // Not our child (the call before started it), so it is reaped by whoever adopted it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Whatever uninstall left mounted goes now, so that the next steps see the host as before.
    for _ in 0..5 {
        let mut points = mounted_now(run);
        if points.is_empty() {
            break;
        }
        points.sort();
        for point in points.iter().rev() {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
    let setup = Setup {
        err: setup["err"]
            .as_str()
            .unwrap_or(" no set-up recorded")
            .to_string(),
        count: setup["count"].as_u64().unwrap_or(0),
        busy_pid: busy_pid.map_or(String::new(), |p| p.to_string()),
    };
    run.verdict(
        Step::UninstallKeepsOutsideFiles,
        keeps_verdict(&setup, &binds, &lost, &left),
    );
    Ok(())
}

/// What `before-uninstall` did: the parts that failed (` plain stacked`...), the mounts it
/// then counted under BINDS, the busy process.
struct Setup {
    err: String,
    count: u64,
    busy_pid: String,
}

/// The set-up made all 4 mounts, and after the uninstall no outside file is LOST and no mount
/// LEFT under BINDS.
fn keeps_verdict(
    setup: &Setup,
    binds: &Path,
    lost: &[&str],
    left: &[String],
) -> Result<String, String> {
    if !setup.err.is_empty() || setup.count != 4 {
        return Err(format!(
            "set-up failed:{} ({} of 4 mounts)",
            setup.err, setup.count
        ));
    }
    if lost.is_empty() && left.is_empty() {
        return Ok(format!(
            "4 bind mounts under {} (plain, stacked twice, busy as cwd of pid {}): every outside \
             file intact, none left mounted",
            binds.display(),
            setup.busy_pid
        ));
    }
    let lost = match lost.is_empty() {
        true => " none".to_string(),
        false => lost.iter().map(|n| format!(" {n}")).collect(),
    };
    let left = match left.is_empty() {
        true => "none".to_string(),
        false => left.iter().map(|p| format!("{p} ")).collect(),
    };
    Err(format!("outside files lost:{lost}; still mounted: {left}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_must_be_755_755_the_data_dirs_and_600() {
        let (p, d) = (Path::new("/r/prefix"), Path::new("/r/d"));
        let good = [Some(0o755), Some(0o755), Some(0o711), Some(0o600)];
        assert_eq!(
            umask_verdict(good, 0o711, p, d).unwrap(),
            "installed under umask 000: /r/prefix, /r/prefix/bin 755; /r/d 711; state.json 600"
        );
        assert_eq!(
            umask_verdict(good, 0o700, p, d).unwrap_err(),
            "modes of /r/prefix, /r/prefix/bin, /r/d, /r/d/state.json: 755 755 711 600 "
        );
        let bad = [Some(0o777), Some(0o755), Some(0o700), None];
        assert_eq!(
            umask_verdict(bad, 0o700, p, d).unwrap_err(),
            "modes of /r/prefix, /r/prefix/bin, /r/d, /r/d/state.json: 777 755 700 missing "
        );
    }

    #[test]
    fn the_mounts_under_the_binds_are_mountinfos_fifth_field() {
        let info = "36 35 98:0 / /mnt/a rw - ext3 /dev/root rw\n\
                    40 36 0:5 /x /r/d/kubelet/e2e-binds/plain rw - ext4 /dev/sda rw\n\
                    41 36 0:5 /y /r/d/kubelet/e2e-binds-other rw - ext4 /dev/sda rw\n\
                    42 36 0:5 /z /r/d/kubelet/e2e-binds/stacked rw - ext4 /dev/sda rw\n";
        assert_eq!(
            mounted_under(info, Path::new("/r/d/kubelet/e2e-binds")),
            [
                "/r/d/kubelet/e2e-binds/plain",
                "/r/d/kubelet/e2e-binds/stacked"
            ]
        );
    }

    #[test]
    fn outside_files_must_all_survive_and_no_mount_be_left() {
        let binds = Path::new("/r/d/kubelet/e2e-binds");
        let setup = Setup {
            err: String::new(),
            count: 4,
            busy_pid: "77".into(),
        };
        assert!(keeps_verdict(&setup, binds, &[], &[])
            .unwrap()
            .contains("busy as cwd of pid 77): every outside file intact"));
        assert_eq!(
            keeps_verdict(&setup, binds, &["lower"], &[]).unwrap_err(),
            "outside files lost: lower; still mounted: none"
        );
        assert_eq!(
            keeps_verdict(&setup, binds, &[], &["/r/d/kubelet/e2e-binds/busy".into()]).unwrap_err(),
            "outside files lost: none; still mounted: /r/d/kubelet/e2e-binds/busy "
        );
        let three = Setup {
            err: " stacked".into(),
            count: 3,
            busy_pid: String::new(),
        };
        assert_eq!(
            keeps_verdict(&three, binds, &[], &[]).unwrap_err(),
            "set-up failed: stacked (3 of 4 mounts)"
        );
    }
}
