//! Upgrade in place (was tests/e2e/upgrade.sh), for scenario.sh in full mode with k3s running,
//! before the final stop and uninstall. `--next` is the same bundle with the next version
//! (`cargo xtask e2e` builds it from a copy of bundle.toml with gvisor.N+1). As k3s is upgraded
//! by running its install.sh again with a newer INSTALL_K3S_VERSION, the new bundle's ./install
//! runs over the install:
//!   upgrade              ./install from the new bundle with the same --prefix/--data-dir: ok,
//!                        its output names the old and the new version, PREFIX.previous is gone;
//!   upgrade-keeps-state  a ConfigMap and a Deployment made before it are there after it (the
//!                        Deployment's pod runs again, started after the upgrade), and the node
//!                        is the same node (metadata.uid);
//!   upgrade-status       `status --json` of the new version: its version, the prefix, healthy,
//!                        and the prefix holds its manifest;
//!   downgrade-refused    the old bundle's ./install now refuses, naming both versions and
//!                        --force, and changes nothing: the new version still runs, same k3s pid.
//! The new bundle is extracted under RUN/bundle-next: from there on the scenario's stop and
//! uninstall use it, as a user would the installed version's. Prints STEP, TIME and K3SERR
//! lines (k3s's error lines logged from the upgrade on).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::{image_ref, version_of};
use crate::{last_line, procs, rfc3339_utc, unix_now, Run};

pub fn run(run: &Run, next: Option<&Path>) -> Result<()> {
    let Some(next_tarball) = next.filter(|p| !p.as_os_str().is_empty()) else {
        run.step(
            Step::Upgrade,
            Status::Fail,
            "no TARBALL_NEXT: cargo xtask e2e builds the next bundle and passes it",
        );
        return Ok(());
    };
    let Some(next) = extract(run, next_tarball) else {
        run.step(
            Step::Upgrade,
            Status::Fail,
            format!("tar -xzf {}", next_tarball.display()),
        );
        return Ok(());
    };
    let old_v = version_of(&run.bundle)?;
    let new_v = version_of(&next)?;
    let busybox = image_ref(&run.bundle, "busybox")?;
    let kubectl = |args: &[&str]| run.kubectl(args).unwrap_or_default().trim().to_string();
    let node = kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let node_uid = kubectl(&["get", "node", &node, "-o", "jsonpath={.metadata.uid}"]);
    let _ = run.kubectl(&[
        "create",
        "configmap",
        "upgrade-kept",
        &format!("--from-literal=installed-with={old_v}"),
    ]);
    let _ = run.kubectl(&[
        "create",
        "deployment",
        "upgrade-web",
        &format!("--image={busybox}"),
        "--replicas=1",
        "--",
        "sleep",
        "3600",
    ]);
    // Its pod ready, not only the Deployment Available: a new one-replica Deployment is
    // Available at once (maxUnavailable 25% of 1 rounds to 0), and a container that starts
    // while the upgrade begins, after the clock below was read, was then taken for one started
    // again after it (CI once; plain Linux 2026-12-07 04:06:04Z: started, killed by the
    // upgrade's stop a second later, the step failed).
    if run
        .kubectl(&[
            "wait",
            "--for=jsonpath={.status.readyReplicas}=1",
            "deployment/upgrade-web",
            "--timeout=120s",
        ])
        .is_err()
    {
        println!("upgrade-web's pod not ready before the upgrade");
    }
    let log_lines = std::fs::read_to_string(run.k3s_log()).map_or(0, |t| t.lines().count());

    println!("== upgrade: {}/install over {old_v}", next.display());
    // A container counts as started again only in a later second than this (started_since).
    let upgraded_at = rfc3339_utc(unix_now());
    let started = run.now();
    let (p, d) = (
        run.prefix.display().to_string(),
        run.data_dir.display().to_string(),
    );
    let (rc, out) = run.install_with(&next, &["--prefix", &p, "--data-dir", &d])?;
    println!("{}", out.trim_end());
    let secs = run.now() - started;
    let previous = PathBuf::from(format!("{p}.previous"));
    run.verdict(
        Step::Upgrade,
        match rc == 0
            && out.contains(&format!("upgraded k3s-gvisor {old_v} to {new_v}:"))
            && !previous.exists()
        {
            true => Ok(format!(
                "{old_v} -> {new_v} in {secs:.1}s; changed: {}",
                changed(&out)
            )),
            false => Err(format!("rc={rc} {}", last_line(&out))),
        },
    );
    run.mark("upgraded");

    // The Deployment's pod was stopped with everything else: wait for it to run again.
    let web_back = || {
        let started = kubectl(&[
            "get",
            "pods",
            "-l",
            "app=upgrade-web",
            "-o",
            "jsonpath={range .items[*]}{.status.containerStatuses[0].state.running.startedAt}{\"\\n\"}{end}",
        ]);
        started_since(&started, &upgraded_at)
    };
    let waiting = std::time::Instant::now();
    let mut back = web_back();
    while !back && waiting.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(2));
        back = web_back();
    }
    let back_after = waiting.elapsed().as_secs();
    let kept = run
        .kubectl(&[
            "get",
            "configmap",
            "upgrade-kept",
            "-o",
            "jsonpath={.data.installed-with}",
        ])
        .unwrap_or_else(|e| format!("{e:#}"));
    let available = back
        && run
            .kubectl(&[
                "wait",
                "--for=condition=Available",
                "deployment/upgrade-web",
                "--timeout=60s",
            ])
            .is_ok();
    let uid_after = run
        .kubectl(&["get", "node", &node, "-o", "jsonpath={.metadata.uid}"])
        .unwrap_or_else(|e| format!("{e:#}"));
    let kept_ok =
        kept.trim() == old_v && available && !node_uid.is_empty() && uid_after.trim() == node_uid;
    run.verdict(
        Step::UpgradeKeepsState,
        match kept_ok {
            true => Ok(format!(
                "ConfigMap kept, Deployment Available again (its pod running {back_after}s \
                 after the upgrade's end), node {node} uid {node_uid}"
            )),
            false => Err(format!(
                "configmap=[{}] pod running since the upgrade ({upgraded_at}): {} deployment \
                 available={} node uid before=[{node_uid}] after=[{}]; pods: {}",
                kept.trim(),
                if back { "yes" } else { "no" },
                if available { "yes" } else { "no" },
                uid_after.trim(),
                kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    "app=upgrade-web",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name} {.status.phase} \
                     {.status.containerStatuses[0].state} restarts={.status.containerStatuses[0].restartCount}; {end}",
                ])
            )),
        },
    );
    if !kept_ok {
        println!("{}", kubectl(&["get", "pods", "-o", "wide"]));
        let events = kubectl(&["get", "events", "--sort-by=.lastTimestamp"]);
        let lines: Vec<&str> = events.lines().collect();
        println!("{}", lines[lines.len().saturating_sub(20)..].join("\n"));
    }

    let status = run.status_with(&next);
    let installed = version_of(&run.prefix).unwrap_or_else(|e| format!("{e:#}"));
    run.verdict(
        Step::UpgradeStatus,
        match &status {
            Ok((json, text)) => {
                println!("{}", text.trim_end());
                match runs_version(json, &new_v, &run.prefix) && installed == new_v {
                    true => Ok(headline(json)),
                    false => Err(format!(
                        "healthy={} [{}] prefix manifest {installed}",
                        json["healthy"],
                        headline(json)
                    )),
                }
            }
            Err(e) => Err(format!("{e:#}")),
        },
    );

    let k3s_pid = |status: &Result<(serde_json::Value, String)>| {
        status
            .as_ref()
            .ok()
            .and_then(|(json, _)| procs::daemon_pid(json, &run.prefix, "k3s"))
    };
    let pid_before = k3s_pid(&status);
    let (rc, out) = run.install(&["--prefix", &p, "--data-dir", &d])?;
    println!("{}", out.trim_end());
    let after = run.status_with(&next);
    let pid_after = k3s_pid(&after);
    let still_new = after
        .as_ref()
        .is_ok_and(|(json, _)| runs_version(json, &new_v, &run.prefix));
    run.verdict(
        Step::DowngradeRefused,
        match rc != 0
            && out.contains("refusing to downgrade")
            && out.contains(&old_v)
            && out.contains(&new_v)
            && out.contains("--force")
            && still_new
            && pid_before.is_some()
            && pid_after == pid_before
        {
            true => Ok(crate::first_chars(last_line(&out), 140)),
            false => Err(format!(
                "rc={rc} status healthy and {new_v}: {still_new}, k3s pid {} -> {}: {}",
                pid_text(pid_before),
                pid_text(pid_after),
                last_line(&out)
            )),
        },
    );

    let _ = run.kubectl(&["delete", "deployment", "upgrade-web"]);
    let _ = run.kubectl(&["delete", "configmap", "upgrade-kept"]);
    let log = std::fs::read_to_string(run.k3s_log()).unwrap_or_default();
    for line in log
        .lines()
        .skip(log_lines)
        .filter(|l| procs::is_k3s_error_line(l))
    {
        println!("K3SERR {line}");
    }
    Ok(())
}

/// Extracts the next bundle's tarball under RUN/bundle-next; its top directory.
fn extract(run: &Run, tarball: &Path) -> Option<PathBuf> {
    let into = run.run.join("bundle-next");
    std::fs::create_dir_all(&into).ok()?;
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&into)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    std::fs::read_dir(&into)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join(bundle_format::MANIFEST_FILE).is_file())
}

/// `status --json` says VERSION runs at PREFIX and everything is up.
fn runs_version(status: &serde_json::Value, version: &str, prefix: &Path) -> bool {
    status["healthy"] == true
        && status["bundle_version"] == version
        && status["prefix"].as_str() == Some(&*prefix.to_string_lossy())
}

/// status's first line, from its JSON: `k3s-gvisor VERSION at PREFIX (data DATA)`.
fn headline(status: &serde_json::Value) -> String {
    format!(
        "k3s-gvisor {} at {} (data {})",
        status["bundle_version"].as_str().unwrap_or("?"),
        status["prefix"].as_str().unwrap_or("?"),
        status["data_dir"].as_str().unwrap_or("?")
    )
}

fn pid_text(pid: Option<i32>) -> String {
    pid.map_or("none".to_string(), |p| p.to_string())
}

/// What the upgrade's output lists as changed: its lines from `upgraded k3s-gvisor ...` on,
/// but that line and the `(unchanged)` ones, each trimmed and followed by `;`.
fn changed(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("upgraded k3s-gvisor "))
        .filter(|l| !l.starts_with("upgraded") && !l.contains("(unchanged)"))
        .map(|l| format!("{};", l.trim_start()))
        .collect()
}

/// Every non-empty line of `started` (RFC 3339 times, one per pod) is at or after `since`, and
/// there is one: the pods all run again, started after the upgrade. The times compare as
/// strings (same format, UTC).
/// Whether any of `started` (RFC 3339 UTC, one a line, whole seconds) is in a later second
/// than `since`: one in the same second may have started before it.
fn started_since(started: &str, since: &str) -> bool {
    started.lines().filter(|l| !l.is_empty()).any(|t| t > since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrades_changes_are_its_lines_but_the_unchanged() {
        let out = "stopping\nupgraded k3s-gvisor v1 to v2:\n  runc v1.3.7 (unchanged)\n  \
                   containerd gvisor.3 -> gvisor.4\n  images: 1 imported\n";
        assert_eq!(
            changed(out),
            "containerd gvisor.3 -> gvisor.4;images: 1 imported;"
        );
        assert_eq!(changed("no such line\n"), "");
    }

    #[test]
    fn a_pod_counts_as_back_when_it_started_after_the_upgrade() {
        let since = "2026-12-06T15:10:45Z";
        assert!(started_since("2026-12-06T15:11:00Z\n", since));
        assert!(!started_since("2026-12-06T15:10:00Z\n", since));
        // The same second as the clock read before the upgrade: it may have started before.
        assert!(!started_since("2026-12-06T15:10:45Z\n", since));
        assert!(!started_since("\n", since));
    }

    #[test]
    fn status_must_name_the_new_version_at_the_prefix_and_be_healthy() {
        let json = serde_json::json!({"healthy": true, "bundle_version": "v2",
            "prefix": "/r/prefix", "data_dir": "/r/d"});
        assert!(runs_version(&json, "v2", Path::new("/r/prefix")));
        assert!(!runs_version(&json, "v1", Path::new("/r/prefix")));
        assert_eq!(headline(&json), "k3s-gvisor v2 at /r/prefix (data /r/d)");
        let down = serde_json::json!({"healthy": false, "bundle_version": "v2",
            "prefix": "/r/prefix"});
        assert!(!runs_version(&down, "v2", Path::new("/r/prefix")));
    }
}
