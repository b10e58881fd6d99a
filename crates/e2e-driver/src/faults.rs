//! Faults (was tests/e2e/faults.sh), for scenario.sh in full mode with k3s running and the
//! client pod e2e-busybox running. Issue 25: every daemon runs under a keeper
//! (crates/keeper) that starts it again when it dies. Each step kills one daemon
//! with SIGKILL and then runs no command of the installer's: within 60 s the daemon must run
//! again (a new pid), the node be Ready and the Service `fault-echo` (made here) answer the
//! client pod (kubectl exec, so the API, the kubelet and containerd all work again):
//!   restart-k3s, restart-containerd, restart-svcproxy (where svcproxy serves Services: its
//!   daemon is in `status --json`),
//!   status-restarts   `status --json` counts each restart, its last exit a SIGKILL.
//! The Service is asked by its ClusterIP: by name it also needs CoreDNS, which on plain Linux
//! did not answer within 60 s after a kill of k3s in one run (2026-12-06; the ClusterIP answered
//! 7 s after the kill in the next), an open question; on failure the name and the pod IP are
//! reported too.

use std::time::{Duration, Instant};

use anyhow::Result;
use e2e_steps::{Status, Step};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bundle::image_ref;
use crate::echo::{echo_deployment_and_service, get_until_answer};
use crate::{procs, Run};

const FAULT_LIMIT: Duration = Duration::from_secs(60);
const SERVICE: &str = "fault-echo";

pub fn run(run: &Run) -> Result<()> {
    println!("== faults: SIGKILL, and no command");
    let busybox = image_ref(&run.bundle, "busybox")?;
    if let Err(e) = run.kubectl_apply(&echo_deployment_and_service(SERVICE, &busybox)) {
        run.step(Step::RestartK3s, Status::Fail, format!("{e:#}"));
        return Ok(());
    }
    let _ = run.kubectl(&[
        "wait",
        "--for=condition=Available",
        &format!("deployment/{SERVICE}"),
        "--timeout=120s",
    ]);
    let text = |args: &[&str]| run.kubectl(args).unwrap_or_default().trim().to_string();
    let cluster_ip = text(&[
        "get",
        "service",
        SERVICE,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let pod_ip = text(&[
        "get",
        "pods",
        "-l",
        &format!("app={SERVICE}"),
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let target = Target { cluster_ip, pod_ip };
    if get_until_answer(run, &target.cluster_ip, 80, Duration::from_secs(60)).is_err() {
        run.step(
            Step::RestartK3s,
            Status::Fail,
            format!(
                "the Service {SERVICE} ({}) did not answer before any kill: {}",
                target.cluster_ip,
                run.get_in_client(&target.cluster_ip, 80)
            ),
        );
        return Ok(());
    }

    let serves_services = run
        .status()
        .is_ok_and(|(json, _)| json["daemons"].get("svcproxy").is_some());
    let mut killed = vec!["k3s", "containerd"];
    if serves_services {
        killed.push("svcproxy");
    }
    for daemon in &killed {
        let step = match *daemon {
            "k3s" => Step::RestartK3s,
            "containerd" => Step::RestartContainerd,
            _ => Step::RestartSvcproxy,
        };
        run.verdict(step, kill_and_wait(run, daemon, &target));
    }

    let status = run.status();
    run.verdict(
        Step::StatusRestarts,
        match &status {
            Ok((json, _)) => {
                let missing: Vec<&str> = killed
                    .iter()
                    .copied()
                    .filter(|d| !restarted_once_by_sigkill(&json["daemons"][*d]))
                    .collect();
                match json["healthy"] == true && missing.is_empty() {
                    true => Ok(killed
                        .iter()
                        .map(|d| format!("{d}: restarted 1 time;"))
                        .collect()),
                    false => Err(format!(
                        "healthy={}, not reported: {}",
                        json["healthy"],
                        missing.join(" ")
                    )),
                }
            }
            Err(e) => Err(format!("{e:#}")),
        },
    );
    let _ = run.kubectl(&["delete", "deployment", SERVICE, "--wait=false"]);
    let _ = run.kubectl(&["delete", "service", SERVICE]);
    Ok(())
}

/// Where the client pod asks: the Service's ClusterIP, and (on failure) its pod's IP.
struct Target {
    cluster_ip: String,
    pod_ip: String,
}

/// Kills DAEMON (the process of PREFIX/bin/DAEMON) with SIGKILL and waits up to FAULT_LIMIT for
/// a new pid, the node Ready and the Service's answer.
fn kill_and_wait(run: &Run, daemon: &str, target: &Target) -> Result<String, String> {
    let pid_now = || procs::daemon_pid(&serde_json::Value::Null, &run.prefix, daemon);
    let Some(before) = pid_now() else {
        return Err(format!("no {daemon} process before the kill"));
    };
    if let Err(e) = kill(Pid::from_raw(before), Signal::SIGKILL) {
        return Err(format!("kill -9 {before}: {e}"));
    }
    let killed_at = Instant::now();
    let (mut after, mut ready, mut answer) = (None, false, String::new());
    while killed_at.elapsed() < FAULT_LIMIT {
        after = pid_now();
        ready = run.node_ready();
        if after.is_some_and(|p| p != before) && ready {
            answer = run.get_in_client(&target.cluster_ip, 80);
            if answer.starts_with(&format!("{SERVICE}-")) {
                return Ok(format!(
                    "{daemon} (pid {before}) killed; pid {}, node Ready, Service {SERVICE} ({}) \
                     answered ({answer}) {}s later",
                    after.unwrap_or_default(),
                    target.cluster_ip,
                    killed_at.elapsed().as_secs()
                ));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!(
        "{daemon} (pid {before}) killed; after {}s: pid {}, node Ready: {}, ClusterIP: {}, by \
         name: {}, pod IP: {}",
        FAULT_LIMIT.as_secs(),
        after.map_or("none".to_string(), |p| p.to_string()),
        if ready { "yes" } else { "no" },
        if answer.is_empty() {
            "no answer"
        } else {
            &answer
        },
        run.get_in_client(SERVICE, 80),
        run.get_in_client(&target.pod_ip, 8080)
    ))
}

/// A daemon's `status --json` record says one restart, after a SIGKILL.
fn restarted_once_by_sigkill(daemon: &serde_json::Value) -> bool {
    daemon["restarts"] == 1
        && daemon["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("was killed by SIGKILL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_counts_once_and_by_sigkill() {
        let json = serde_json::json!({"restarts": 1,
            "last_exit": "was killed by SIGKILL (at 12:00:00)"});
        assert!(restarted_once_by_sigkill(&json));
        let twice = serde_json::json!({"restarts": 2, "last_exit": "was killed by SIGKILL"});
        assert!(!restarted_once_by_sigkill(&twice));
        let exited = serde_json::json!({"restarts": 1, "last_exit": "exited with 1"});
        assert!(!restarted_once_by_sigkill(&exited));
        assert!(!restarted_once_by_sigkill(&serde_json::Value::Null));
    }
}
