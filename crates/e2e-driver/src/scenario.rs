//! scenario.sh's own steps (the single-node scenario `cargo xtask e2e` runs on the host and
//! inside gVisor). scenario.sh keeps the start-up: extract, ./install run as a user runs it
//! (under umask 000, its output stamped into RUN/install.out and its exit code in
//! RUN/install.rc), the order of the phases and the other subcommands between them. The phases
//! and their steps, in the order scenario.sh calls them:
//!   `installed --mode M --install-start SECS [--kubeconfig-644]`, right after ./install:
//!     install            RUN/install.rc is 0;
//!     umask-modes        mounts.rs (TIME installed, api-ready, node-ready after it);
//!     ready-within-60s   (full mode) install printed `node is Ready` within 60 s of its start
//!                        (issue 14);
//!     ready-goal-10s     ... within 10 s (issue 27), MISS otherwise: reported, not enforced;
//!   `k3s-failed`         k3s-steps FAIL (install failed: nothing that needs k3s can pass), and
//!                        the tails of k3s's and containerd's logs;
//!   `checks --mode M [--kubeconfig-644]`, k3s installed:
//!     kubeconfig         install named DATA/kubeconfig.yaml with its mode (0600, k3s's
//!                        default, or 0644 where K3S_KUBECONFIG_MODE=644) and the file has it;
//!     export-line        install printed an `export PATH=...` line;
//!     addons             coredns is off exactly where it cannot work (its image not shipped,
//!                        control-plane-only, no service proxy), with that reason;
//!     tools              kubectl (full: crictl, ctr too) from the export line alone in a clean
//!                        environment;
//!     readyz             the API server's /readyz;
//!     service-kubernetes the `kubernetes` Service has ClusterIP 10.43.0.1 within 30 s;
//!     control-plane-only: namespace, namespaces-list, configmap (written and read back),
//!                        dry-run (a server-side dry run), status (`status --json`: healthy,
//!                        k3s running, API ready);
//!     full mode:
//!     doctor             `./install doctor` on the install exits 0;
//!     service-proxy      doctor names the proxy status --json names; svcproxy runs untraced
//!                        where it is the proxy, and beside kube-proxy only for LoadBalancer
//!                        status;
//!     k3s-untraced       k3s runs with TracerPid 0 (the mounts on /proc/sys counted);
//!     node-ready         the node is Ready within 60 s;
//!     pod-running        a busybox pod runs within 120 s (TIME pod-running);
//!     pod-logs           its logs say hello-from-k3s-gvisor;
//!     pod-untraced       its own /proc/self/status: TracerPid 0, Seccomp 0;
//!     exec               kubectl exec into it runs in it (its hostname);
//!     deployment         2 replicas available within 120 s (TIME deployment-available);
//!     one-shim           one containerd-shim-runc-v2 process serves every running pod
//!                        (containerd 0005's default group, docs/installer.md);
//!     coredns-ready      where coredns is on, its pod is Ready within 120 s;
//!     status             `status --json` healthy, the node Ready, its pod counts per phase
//!                        those kubectl counts (at least 3 Running), svcproxy running where it
//!                        is the proxy;
//!     logs-k3s           `./install logs k3s -n 5` shows k3s.log;
//!   `stop`  (full)       stop (`./install stop` exits 0), stopped-nothing-runs (no process
//!                        from the prefix or data dir);
//!   `start` (full)       start: `./install start` from a clean environment exits 0, with
//!                        every shipped image kept from the install (`already imported`), none
//!                        imported again;
//!   `back`  (full)       pods-back: the same 3 pods (uids) run again, each container started
//!                        after the stop, within 180 s (TIME pods-back); deployment-back: web is
//!                        Available within 60 s; exec-after-restart;
//!   `delete` (full)      delete: the busybox pod is deleted within 60 s;
//!   `no-k3s --mode M --crictl PATH`, the bundle has no k3s:
//!     k3s                BLOCKED with the manifest's reason (control-plane-only: it needs k3s);
//!     full mode, the runtime path k3s would drive, through the CRI with crictl: cri-runp,
//!     cri-create, cri-start, container-running, container-logs, cri-exec, pod-ip, cri-delete
//!     (TIME pod-sandbox, container-running), each only where the one before gave what it needs;
//!   `second-install --mode M`  second-install: ./install again says it is already installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e_steps::{Status, Step};

use crate::bundle::{image_ref, manifest};
use crate::settings::{clean_env, clean_shell, status_and_output};
use crate::{first_chars, last_line, ok_or_fail, procs, Run, CLIENT_POD};
use crate::{rfc3339_utc, unix_now};

#[derive(clap::Subcommand, Clone, Debug)]
pub enum Phase {
    /// The install's result, its modes, how soon the node was Ready.
    Installed {
        #[arg(long)]
        mode: String,
        /// lib.sh's `now` when ./install started.
        #[arg(long)]
        install_start: f64,
        /// The install was given K3S_KUBECONFIG_MODE=644 (full mode's settings).
        #[arg(long)]
        kubeconfig_644: bool,
    },
    /// The install failed in a bundle with k3s.
    K3sFailed,
    /// What install told the user, the API, then the mode's own steps.
    Checks {
        #[arg(long)]
        mode: String,
        #[arg(long)]
        kubeconfig_644: bool,
    },
    Stop,
    Start,
    Back,
    Delete,
    /// The bundle has no k3s: the step k3s BLOCKED, and (full) the CRI steps.
    NoK3s {
        #[arg(long)]
        mode: String,
        /// A crictl binary (CRICTL).
        #[arg(long)]
        crictl: Option<PathBuf>,
    },
    SecondInstall {
        #[arg(long)]
        mode: String,
    },
}

const CPO: &str = "control-plane-only";
const HELLO: &str = "hello-from-k3s-gvisor";
/// The pods uids and the stop's time, from `stop` for `back`.
const STOP_FILE: &str = "scenario-stop.json";

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    match phase {
        Phase::Installed {
            mode,
            install_start,
            kubeconfig_644,
        } => installed(run, &mode, install_start, kubeconfig_644),
        Phase::K3sFailed => {
            run.step(
                Step::K3sSteps,
                Status::Fail,
                "install failed, so the steps that need k3s were not run",
            );
            // Each log's own tail (uninstall removes them): k3s's says why the install waited.
            for log in ["k3s", "containerd"] {
                println!("== {log}.log (last lines)");
                let text = std::fs::read_to_string(run.data_dir.join(format!("logs/{log}.log")));
                println!("{}", crate::tail(&text.unwrap_or_default(), 30));
            }
        }
        Phase::Checks {
            mode,
            kubeconfig_644,
        } => checks(run, &mode, kubeconfig_644)?,
        Phase::Stop => stop(run)?,
        Phase::Start => {
            println!("== start");
            let r0 = run.now();
            // From a clean shell: k3s gets the variables recorded at install, nothing else.
            let (started, out) = status_and_output(
                clean_env()
                    .arg(run.bundle.join("install"))
                    .args(["start", "--data-dir"])
                    .arg(&run.data_dir),
            );
            let ready = run.now() - r0;
            print!("{out}");
            run.verdict(Step::Start, start_verdict(started, &out, ready));
        }
        Phase::Back => back(run)?,
        Phase::Delete => {
            let deleted = run.kubectl_ok(&["delete", "pod", CLIENT_POD, "--wait", "--timeout=60s"]);
            run.step(Step::Delete, ok_or_fail(deleted), "");
        }
        Phase::NoK3s { mode, crictl } => no_k3s(run, &mode, crictl.as_deref())?,
        Phase::SecondInstall { mode } => {
            let (p, d) = (run.prefix.display(), run.data_dir.display());
            let (p, d) = (p.to_string(), d.to_string());
            let mut args = vec!["--prefix", &p, "--data-dir", &d];
            if mode == CPO {
                args.push("--control-plane-only");
            }
            // The refusal is only in what install prints (status --json describes the install,
            // not a second attempt at it).
            let (rc, out) = run.install(&args)?;
            match rc == 0 && out.contains("is already installed") {
                true => run.step(Step::SecondInstall, Status::Ok, ""),
                false => run.step(Step::SecondInstall, Status::Fail, last_line(&out)),
            }
        }
    }
    Ok(())
}

/// `start` after `stop`: the node Ready again, with the bundle's images kept from the install
/// (containerd still holds them), none imported again beside k3s's start.
fn start_verdict(started: bool, out: &str, ready: f64) -> Result<String, String> {
    if !started {
        return Err(last_line(out).to_string());
    }
    let images: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("image ") && l.contains(" imported ("))
        .collect();
    let again: Vec<&str> = images
        .iter()
        .filter(|l| !l.contains(" already imported ("))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    if !again.is_empty() {
        return Err(format!(
            "shipped images imported again though containerd kept them: {}",
            again.join(", ")
        ));
    }
    if images.is_empty() {
        return Err("start printed no line about the bundle's images".into());
    }
    Ok(format!(
        "node Ready {ready:.1}s after start; the {} shipped images kept, none imported again",
        images.len()
    ))
}

fn installed(run: &Run, mode: &str, install_start: f64, kubeconfig_644: bool) {
    let rc = std::fs::read_to_string(run.run.join("install.rc")).unwrap_or_default();
    match rc.trim() {
        "0" => run.step(Step::Install, Status::Ok, ""),
        rc => run.step(Step::Install, Status::Fail, format!("rc={rc}")),
    }
    crate::mounts::umask_modes(run, kubeconfig_644);
    run.mark("installed");
    // When install printed these (its stamped lines): status --json has no such times.
    let out = run.install_out();
    for (name, text) in [
        ("api-ready", "Kubernetes API is ready"),
        ("node-ready", "node is Ready"),
    ] {
        if let Some(t) = crate::two_nodes::stamp_of(&out, text) {
            println!("TIME {name} {t}");
        }
    }
    let ready_at = crate::two_nodes::stamp_of(&out, "node is Ready").and_then(|t| t.parse().ok());
    if let (true, Some(ready_at)) = (mode == "full", ready_at) {
        for (step, status, detail) in ready_steps(ready_at, install_start) {
            run.step(step, status, detail);
        }
    }
}

/// Issue 14: in the current gVisor the node is Ready within 60 s of ./install. The speed goal
/// (issue 27: within 10 s) is reported, not enforced: a busy machine may miss it, so MISS does
/// not fail the run (only FAIL does). The seconds compare as printed, to one decimal.
fn ready_steps(ready_at: f64, install_start: f64) -> [(Step, Status, String); 2] {
    let shown = format!("{:.1}", ready_at - install_start);
    let secs: f64 = shown.parse().unwrap_or(f64::MAX);
    let detail = format!("node Ready {shown}s after ./install");
    [
        (
            Step::ReadyWithin60s,
            ok_or_fail(secs <= 60.0),
            detail.clone(),
        ),
        match secs <= 10.0 {
            true => (Step::ReadyGoal10s, Status::Ok, detail),
            false => (
                Step::ReadyGoal10s,
                Status::Miss,
                format!("{detail}, over the 10 s goal"),
            ),
        },
    ]
}

/// The line install printed for the tools (`grep -m1 -o 'export PATH=.*'`): what a user
/// copies, so it is read from install's output.
fn export_line(install_out: &str) -> Option<String> {
    install_out
        .lines()
        .find_map(|l| l.find("export PATH=").map(|i| l[i..].to_string()))
}

/// Why coredns must be off here, or None where it can work: its image shipped, a node for its
/// pod, and ClusterIPs routed (a service proxy runs).
fn coredns_why(image_shipped: bool, mode: &str, proxy: &str) -> Option<&'static str> {
    match () {
        _ if !image_shipped => Some("its image"),
        _ if mode == CPO => Some("control-plane-only"),
        _ if proxy == "none" => Some("it reaches the API"),
        _ => None,
    }
}

/// coredns is off with reason WHY exactly where it must be (OFF: why install turned it off).
fn addons_verdict(why: Option<&str>, off: Option<&str>) -> Result<String, String> {
    match (why, off) {
        (Some(why), Some(off)) if off.starts_with(why) => Ok(format!("coredns off: {why} ...")),
        (Some(why), _) => Err(format!("coredns not reported off ({why} ...)")),
        (None, Some(_)) => Err("coredns turned off though it can run here".into()),
        (None, None) => Ok("coredns on".into()),
    }
}

/// With the busybox pod and the two web pods running, one shim serves them all: the installer
/// gives containerd a default shim group (containerd 0005), where upstream runs one per pod.
fn one_shim_step(run: &Run) {
    let shim = run.prefix.join("bin/containerd-shim-runc-v2");
    let shims = procs::pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .as_deref()
                == Some(&*shim)
        })
        .count();
    let running = run
        .kubectl_text(&[
            "get",
            "pods",
            "-A",
            "--field-selector=status.phase=Running",
            "-o",
            "name",
        ])
        .lines()
        .count();
    run.step(
        Step::OneShim,
        ok_or_fail(shims == 1 && running >= 3),
        format!("{shims} containerd-shim-runc-v2 process(es) for {running} running pod(s)"),
    );
}

fn checks(run: &Run, mode: &str, kubeconfig_644: bool) -> Result<()> {
    let busybox = image_ref(&run.bundle, "busybox").unwrap_or_default();
    let out = run.install_out();
    let status = run
        .status()
        .map_or(serde_json::Value::Null, |(json, _)| json);

    // What install must tell the user: the kubeconfig (k3s's default 0600; 0644 where the full
    // mode set K3S_KUBECONFIG_MODE) and the one line for the tools. Its mode is only in what
    // install printed (status --json names the file alone).
    let kc_mode = procs::mode(&run.kubeconfig());
    let want = if kubeconfig_644 { 0o644 } else { 0o600 };
    let told = format!(
        "kubeconfig: {} (mode 0{want:o})",
        run.kubeconfig().display()
    );
    match out.contains(&told) && kc_mode == Some(want) {
        true => run.step(
            Step::Kubeconfig,
            Status::Ok,
            format!("{} mode {want:o}", run.kubeconfig().display()),
        ),
        false => run.step(
            Step::Kubeconfig,
            Status::Fail,
            format!("mode {}", procs::mode_text(kc_mode)),
        ),
    }
    let export = export_line(&out);
    match export {
        Some(_) => run.step(Step::ExportLine, Status::Ok, ""),
        None => run.step(
            Step::ExportLine,
            Status::Fail,
            "install printed no export PATH= line",
        ),
    }
    // Who serves Services: k3s's kube-proxy where its iptables rules can be written, else
    // svcproxy (gVisor), as the install recorded it.
    let proxy = status["service_proxy"]["name"].as_str().unwrap_or("");
    let why = coredns_why(image_ref(&run.bundle, "coredns").is_ok(), mode, proxy);
    let off = crate::addons::turned_off(run, "coredns");
    run.verdict(Step::Addons, addons_verdict(why, off.as_deref()));

    // The tools from the export line alone, in a clean environment.
    let (tools, names) = match mode == "full" {
        true => (
            "kubectl get nodes -o name && crictl ps -q && ctr images ls -q",
            "kubectl, crictl, ctr",
        ),
        false => ("kubectl get nodes -o name", "kubectl"),
    };
    let script = format!("{}; {tools}", export.as_deref().unwrap_or(""));
    let (ok, text) = status_and_output(clean_shell().arg(&script));
    match ok {
        true => run.step(
            Step::Tools,
            Status::Ok,
            format!("{names} from the export line alone"),
        ),
        false => run.step(Step::Tools, Status::Fail, last_line(&text)),
    }

    let readyz = run.kubectl(&["get", "--raw", "/readyz"]).is_ok();
    run.step(Step::Readyz, ok_or_fail(readyz), "");
    // The apiserver's bootstrap creates the `kubernetes` Service, retrying on first-start races.
    let cip = crate::echo::until(Duration::from_secs(29), Duration::from_secs(1), || {
        let ip = run.kubectl(&[
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        (ip.ok()?.trim() == "10.43.0.1").then_some(())
    });
    match cip {
        Some(()) => run.step(Step::ServiceKubernetes, Status::Ok, "10.43.0.1"),
        None => run.step(
            Step::ServiceKubernetes,
            Status::Fail,
            "no ClusterIP after 30 s",
        ),
    }
    match mode == CPO {
        true => control_plane_only(run),
        false => full(run, &busybox, proxy, why.is_none()),
    }
    Ok(())
}

const DRY_RUN: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: dry}
data: {a: b}
";

fn control_plane_only(run: &Run) {
    let created = run.kubectl_ok(&["create", "namespace", "e2e"]);
    run.step(Step::Namespace, ok_or_fail(created), "");
    let listed = run
        .kubectl(&["get", "namespaces", "-o", "name"])
        .is_ok_and(|l| l.lines().any(|n| n == "namespace/e2e"));
    run.step(Step::NamespacesList, ok_or_fail(listed), "");
    let configmap = run.kubectl_ok(&[
        "-n",
        "e2e",
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=hello-from-k3s-gvisor",
    ]) && run.kubectl_text_in(
        "e2e",
        &[
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.greeting}",
        ],
    ) == HELLO;
    run.step(Step::Configmap, ok_or_fail(configmap), "");
    let dry = run
        .kubectl_apply_dry_run_in("e2e", DRY_RUN)
        .map_err(|e| eprintln!("{e:#}"))
        .is_ok();
    run.step(Step::DryRun, ok_or_fail(dry), "");
    match run.status() {
        Ok((json, _)) => run.verdict(Step::Status, api_status_verdict(&json)),
        Err(e) => run.step(Step::Status, Status::Fail, format!("{e:#}")),
    }
}

/// status --json as `status` exiting 0 with `k3s: running (pid N), API ready`.
fn api_status_verdict(status: &serde_json::Value) -> Result<String, String> {
    let healthy = status["healthy"] == true;
    let pid = status["daemons"]["k3s"]["pid"].as_i64();
    let api = status["api_ready"] == true;
    match (healthy, pid, api) {
        (true, Some(_), true) => Ok(String::new()),
        _ => Err(format!(
            "healthy {healthy}, k3s pid {}, API ready {api}",
            pid.map_or("none".into(), |p| p.to_string())
        )),
    }
}

/// Doctor's `service proxy  NAME ...` line, its words after `service proxy`.
fn doctor_proxy_line(doctor: &str) -> String {
    doctor
        .lines()
        .filter_map(|l| l.strip_prefix("service proxy "))
        .map(|l| l.trim_start().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line names the active service proxy and why; where kube-proxy cannot run (gVisor),
/// svcproxy runs as a daemon of the install, never under the launcher (TracerPid 0). Beside
/// kube-proxy, svcproxy may only run to write LoadBalancer status (services.rs'
/// loadbalancer-ip). SVCPROXY: its pid, command line and TracerPid.
fn service_proxy_verdict(
    proxy: &str,
    doctor: &str,
    svcproxy: Option<(i32, &str, Option<&str>)>,
) -> Result<String, String> {
    let first = doctor.split(' ').next().unwrap_or("");
    let pid = svcproxy.map_or(String::new(), |(p, _, _)| p.to_string());
    match proxy {
        "kube-proxy" => {
            let lb_only =
                svcproxy.is_none_or(|(_, cmd, _)| cmd.contains("--load-balancer-status-only"));
            match first == "kube-proxy" && lb_only {
                true => Ok(doctor.to_string()),
                false => Err(format!("doctor: [{doctor}], svcproxy pid: {pid}")),
            }
        }
        "svcproxy" => {
            let traced = svcproxy.and_then(|(_, _, t)| t).unwrap_or("");
            match first == "svcproxy" && traced == "0" {
                true => Ok(format!("svcproxy pid {pid}, not traced; {doctor}")),
                false => Err(format!(
                    "doctor: [{doctor}], svcproxy pid: [{pid}], TracerPid: [{traced}]"
                )),
            }
        }
        other => Err(format!(
            "install named no service proxy ([{other}]): see install.out"
        )),
    }
}

/// The pod's `TracerPid:` and `Seccomp:` lines from its logs, blanks squeezed, each followed
/// by `;` (`grep -E '^(TracerPid|Seccomp):' | tr -s '\t ' ' ' | tr '\n' ';'`).
fn trace_lines(logs: &str) -> String {
    logs.lines()
        .filter(|l| l.starts_with("TracerPid:") || l.starts_with("Seccomp:"))
        .map(|l| {
            format!(
                "{};",
                l.split([' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect()
}

/// Pods per phase as `sort | uniq -c` prints them, joined: `1 Pending, 4 Running`.
fn phases_line(counts: &std::collections::BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(phase, n)| format!("{n} {phase}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pods per phase from kubectl's one phase per line.
fn count_phases(lines: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for phase in lines.lines().filter(|l| !l.is_empty()) {
        *counts.entry(phase.to_string()).or_insert(0) += 1;
    }
    counts
}

/// status --json's `pods` (phase: count).
fn status_phases(status: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    status["pods"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect()
}

/// status --json as `status` exiting 0 with the node Ready and KUBECTL's pod counts (at least
/// 3 Running: the busybox pod and web's 2), svcproxy running where it is the proxy.
fn status_verdict(
    status: &serde_json::Value,
    kubectl: &str,
    proxy: &str,
) -> Result<String, String> {
    let phases = phases_line(&count_phases(kubectl));
    let reported = phases_line(&status_phases(status));
    let running = count_phases(kubectl).get("Running").copied().unwrap_or(0);
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    let node_ready = nodes.iter().any(|n| n["ready"] == true);
    let svcproxy = proxy != "svcproxy" || status["daemons"]["svcproxy"]["pid"].is_i64();
    let healthy = status["healthy"] == true;
    match healthy && svcproxy && node_ready && reported == phases && running >= 3 {
        true => Ok(format!("node Ready, pods: {phases}")),
        false => {
            Err(format!(
            "healthy {healthy}{} nodes: {} pods (all namespaces): {reported} (kubectl: {phases})",
            if svcproxy { "" } else { ", svcproxy not running" },
            nodes
                .iter()
                .map(|n| format!("{} ready {}", n["name"].as_str().unwrap_or("?"), n["ready"]))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        }
    }
}

fn full(run: &Run, busybox: &str, proxy: &str, coredns_on: bool) {
    println!("== doctor (installed)");
    let data_dir = run.data_dir.display().to_string();
    let (rc, doctor) = run
        .install(&["doctor", "--data-dir", &data_dir])
        .unwrap_or_else(|e| (-1, format!("{e:#}")));
    match rc == 0 {
        true => run.step(Step::Doctor, Status::Ok, "every blocker present is handled"),
        false => run.step(Step::Doctor, Status::Fail, "see output.log"),
    }
    println!("{}", doctor.trim_end());
    // The proxy as status --json has it (the install's record) against doctor's own line.
    let status = run
        .status()
        .map_or(serde_json::Value::Null, |(json, _)| json);
    let sp = procs::daemon_pid(&status, &run.prefix, "svcproxy");
    let (sp_cmd, sp_traced) = match sp {
        Some(pid) => (procs::cmdline(pid), procs::status_field(pid, "TracerPid")),
        None => (String::new(), None),
    };
    run.verdict(
        Step::ServiceProxy,
        service_proxy_verdict(
            proxy,
            &doctor_proxy_line(&doctor),
            sp.map(|pid| (pid, sp_cmd.as_str(), sp_traced.as_deref())),
        ),
    );
    // k3s runs untraced (no launcher, no ptrace stops): where /proc/sys lacks files (gVisor)
    // the install laid them over /proc/sys (its mounts there are in status --json's mounts).
    let kp = procs::daemon_pid(&status, &run.prefix, "k3s");
    let kt = kp.and_then(|p| procs::status_field(p, "TracerPid"));
    let over = status["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m.as_str().is_some_and(|m| m.starts_with("/proc/sys/")))
        .count();
    let kp_text = kp.map_or(String::new(), |p| p.to_string());
    match kt.as_deref() == Some("0") {
        true => {
            let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default();
            run.step(
                Step::K3sUntraced,
                Status::Ok,
                format!(
                    "{over} bind mount(s) on /proc/sys; pid_max {}",
                    pid_max.trim()
                ),
            )
        }
        false => run.step(
            Step::K3sUntraced,
            Status::Fail,
            format!(
                "k3s pid [{kp_text}], TracerPid [{}], mounts on /proc/sys [{over}]",
                kt.unwrap_or_default()
            ),
        ),
    }
    run.node_ready_step();
    let image = format!("--image={busybox}");
    println!(
        "{}",
        run.kubectl_text(&[
            "run",
            CLIENT_POD,
            &image,
            "--image-pull-policy=Never",
            "--command",
            "--",
            "sh",
            "-c",
            "echo hello-from-k3s-gvisor; grep -E \"^(TracerPid|Seccomp):\" /proc/self/status; exec sleep 3600",
        ])
    );
    let pod = format!("pod/{CLIENT_POD}");
    let running = run.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        &pod,
        "--timeout=120s",
    ]);
    run.step(Step::PodRunning, ok_or_fail(running), "");
    if !running {
        println!("{}", run.kubectl_text(&["describe", "pod", CLIENT_POD]));
    }
    run.mark("pod-running");
    let logs = run.kubectl(&["logs", CLIENT_POD]).unwrap_or_default();
    run.step(Step::PodLogs, ok_or_fail(logs.contains(HELLO)), "");
    // A pod is neither ptraced nor under the launcher's seccomp filter (containerd runs
    // outside the launcher): its status says TracerPid 0 and Seccomp 0.
    let traced = trace_lines(&logs);
    let untraced = traced == "TracerPid: 0;Seccomp: 0;";
    run.step(Step::PodUntraced, ok_or_fail(untraced), traced);
    let exec = run.in_client(&["sh", "-c", "read h < /etc/hostname; echo exec-works-in-$h"]);
    match exec {
        Ok(ref out) | Err(ref out) if out.contains("exec-works-in-e2e-busybox") => {
            run.step(Step::Exec, Status::Ok, "")
        }
        Ok(out) | Err(out) => run.step(Step::Exec, Status::Fail, last_line(&out)),
    }
    let deployment = run.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        &image,
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]) && run.kubectl_ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=120s",
    ]) && run.kubectl_text(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.availableReplicas}",
    ]) == "2";
    match deployment {
        true => run.step(Step::Deployment, Status::Ok, "2/2 available"),
        false => {
            run.step(Step::Deployment, Status::Fail, "");
            println!("{}", run.kubectl_text(&["describe", "deployment", "web"]));
            println!("{}", run.kubectl_text(&["get", "pods", "-o", "wide"]));
        }
    }
    run.mark("deployment-available");
    one_shim_step(run);
    if coredns_on {
        // On means working: the DNS pod gets Ready (it needs the API through the kubernetes Service).
        let dns = [
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "k8s-app=kube-dns",
            "--timeout=120s",
        ];
        let ready = run
            .kubectl(&[&["-n", "kube-system"][..], &dns].concat())
            .is_ok();
        run.step(Step::CorednsReady, ok_or_fail(ready), "");
        if !ready {
            println!(
                "{}",
                run.kubectl_text_in(
                    "kube-system",
                    &["logs", "-l", "k8s-app=kube-dns", "--tail=20"]
                )
            );
        }
    }
    status_step(run, proxy);
    let (rc, logs) = run
        .install(&["logs", "--data-dir", &data_dir, "k3s", "-n", "5"])
        .unwrap_or_else(|e| (-1, format!("{e:#}")));
    match rc == 0 && logs.contains("k3s.log") {
        true => run.step(Step::LogsK3s, Status::Ok, ""),
        false => run.step(Step::LogsK3s, Status::Fail, last_line(&logs)),
    }
}

/// status counts pods per phase in all namespaces (add-ons whose image is shipped included),
/// compared with kubectl's count taken before and after it: add-on pods may still be
/// starting, so a count that moved in between is taken again (up to 20 times, 1 s apart).
fn status_step(run: &Run, proxy: &str) {
    let phases = || {
        run.kubectl(&[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
    };
    let mut taken = (String::new(), Err(anyhow::anyhow!("status not asked")));
    for _ in 0..20 {
        let before = phases();
        taken = (before.clone(), run.status());
        if count_phases(&phases()) == count_phases(&before) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    match taken {
        (kubectl, Ok((json, text))) => {
            println!("{}", text.trim_end());
            run.verdict(Step::Status, status_verdict(&json, &kubectl, proxy));
        }
        (_, Err(e)) => run.step(Step::Status, Status::Fail, format!("{e:#}")),
    }
}

/// The default namespace's pods' uids, sorted, each followed by a space.
fn uids(run: &Run) -> String {
    let out = run
        .kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.uid}{\"\\n\"}{end}",
        ])
        .unwrap_or_default();
    let mut ids: Vec<&str> = out.lines().collect();
    ids.sort_unstable();
    ids.iter().map(|id| format!("{id} ")).collect()
}

fn stop(run: &Run) -> Result<()> {
    let stopped_at = rfc3339_utc(unix_now());
    let record = serde_json::json!({"uids": uids(run), "stopped_at": stopped_at});
    let file = run.run.join(STOP_FILE);
    std::fs::write(&file, record.to_string())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("== stop");
    let stopped = crate::teardown::install_ok(run, "stop");
    run.step(Step::Stop, ok_or_fail(stopped), "");
    let ours = crate::teardown::ours(&run.prefix, &run.data_dir);
    match ours.is_empty() {
        true => run.step(Step::StoppedNothingRuns, Status::Ok, ""),
        false => run.step(Step::StoppedNothingRuns, Status::Fail, ours),
    }
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// Each line of STARTED (a pod's container start time) is set and at or after SINCE (RFC 3339
/// UTC times compare as strings), and there are exactly 3: the pods all run again, started
/// after the stop.
fn all_restarted(started: &str, since: &str) -> bool {
    let lines: Vec<&str> = started.lines().collect();
    lines.len() == 3 && lines.iter().all(|t| !t.is_empty() && *t >= since)
}

fn back(run: &Run) -> Result<()> {
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.run.join(STOP_FILE)).context("`scenario stop` recorded nothing")?,
    )?;
    let before = record["uids"].as_str().unwrap_or("");
    let stopped_at = record["stopped_at"].as_str().unwrap_or("");
    let restarted = || {
        run.kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.containerStatuses[0].state.running.startedAt}{\"\\n\"}{end}",
        ])
        .is_ok_and(|s| all_restarted(&s, stopped_at))
    };
    let _ = crate::echo::until(Duration::from_secs(180), Duration::from_secs(2), || {
        restarted().then_some(())
    });
    let after = uids(run);
    match after == before && restarted() {
        true => run.step(
            Step::PodsBack,
            Status::Ok,
            format!("the same 3 pods run again, restarted after {stopped_at}"),
        ),
        false => {
            run.step(
                Step::PodsBack,
                Status::Fail,
                format!("before: {before} after: {after}"),
            );
            println!("{}", run.kubectl_text(&["get", "pods", "-o", "wide"]));
        }
    }
    run.mark("pods-back");
    let available = run.kubectl_ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=60s",
    ]);
    run.step(Step::DeploymentBack, ok_or_fail(available), "");
    let exec = match run.in_client(&["echo", "exec-works"]) {
        Ok(out) | Err(out) => out.contains("exec-works"),
    };
    run.step(Step::ExecAfterRestart, ok_or_fail(exec), "");
    Ok(())
}

/// The CRI's pod sandbox config: the shipped pause image, logs under RUN/podlogs.
fn pod_json(run_dir: &Path) -> String {
    serde_json::json!({
        "metadata": {"name": "e2e", "namespace": "default", "uid": "e2e-1", "attempt": 0},
        "log_directory": run_dir.join("podlogs"),
        "linux": {},
    })
    .to_string()
}

/// The busybox container. namespace_options.pid 1 = CONTAINER: a PID namespace of the
/// container's own, which is what the kubelet asks for (unless a pod sets
/// shareProcessNamespace). Left unset it is 0 = POD, sharing the pod sandbox's, which gVisor
/// before 2025-06-26 cannot join (no setns(CLONE_NEWPID)).
fn ctr_json(image: &str) -> String {
    serde_json::json!({
        "metadata": {"name": "hello"},
        "image": {"image": image},
        "command": ["/bin/sh", "-c", "echo hello-from-k3s-gvisor; exec sleep 3600"],
        "log_path": "hello.log",
        "linux": {"security_context": {"namespace_options": {"pid": 1}}},
    })
    .to_string()
}

/// `pid=N` of the exec's `exec-works pid=N` line (its PID is 1 where the kernel cannot join the
/// container's PID namespace: runc patch 0003 gives it its own).
fn exec_pid(out: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let digits: String = l
            .strip_prefix("exec-works pid=")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!digits.is_empty()).then(|| format!("pid={digits}"))
    })
}

fn no_k3s(run: &Run, mode: &str, crictl: Option<&Path>) -> Result<()> {
    if mode == CPO {
        run.step(
            Step::K3s,
            Status::Blocked,
            "control-plane-only needs k3s and the bundle has none (see bundle-manifest.json: omitted)",
        );
        return Ok(());
    }
    let reason = manifest(&run.bundle)
        .ok()
        .and_then(|m| m.omitted.into_iter().next())
        .map_or("not recorded".to_string(), |o| o.reason);
    run.step(
        Step::K3s,
        Status::Blocked,
        format!("the bundle has no k3s: {}", first_chars(&reason, 160)),
    );
    if mode != "full" {
        return Ok(());
    }
    // Without k3s, the same runtime path k3s would drive, through the CRI: pod sandbox with the
    // shipped pause image, a busybox container, its logs.
    let crictl = crictl.context("no --crictl for a bundle without k3s")?;
    let socket = format!(
        "unix://{}",
        run.data_dir.join("run/containerd.sock").display()
    );
    let c = |args: &[&str]| -> (bool, String) {
        let mut cmd = Command::new(crictl);
        cmd.env("CRICTL_CONFIG", "/dev/null")
            .args([
                "--runtime-endpoint",
                &socket,
                "--image-endpoint",
                &socket,
                "--timeout",
                "60s",
            ])
            .args(args);
        status_and_output(&mut cmd)
    };
    let (pod_file, ctr_file) = (run.run.join("pod.json"), run.run.join("ctr.json"));
    std::fs::write(&pod_file, pod_json(&run.run))?;
    std::fs::write(
        &ctr_file,
        ctr_json(&image_ref(&run.bundle, "busybox").unwrap_or_default()),
    )?;
    let (pod_path, ctr_path) = (
        pod_file.display().to_string(),
        ctr_file.display().to_string(),
    );
    // Each step runs only if the one before it produced what it needs.
    let pod = match c(&["runp", &pod_path]) {
        (true, out) if !out.trim().is_empty() => Some(out.trim().to_string()),
        _ => None,
    };
    match &pod {
        Some(pod) => run.step(Step::CriRunp, Status::Ok, pod.as_str()),
        None => run.step(Step::CriRunp, Status::Fail, ""),
    }
    run.mark("pod-sandbox");
    let cid = pod
        .as_deref()
        .and_then(|pod| match c(&["create", pod, &ctr_path, &pod_path]) {
            (true, out) if !out.trim().is_empty() => Some(out.trim().to_string()),
            _ => None,
        });
    run.step(Step::CriCreate, ok_or_fail(cid.is_some()), "");
    let cid_arg = cid.clone().unwrap_or_default();
    let started = cid.is_some() && c(&["start", &cid_arg]).0;
    run.step(Step::CriStart, ok_or_fail(started), "");
    std::thread::sleep(Duration::from_secs(3));
    let state = c(&[
        "inspect",
        "-o",
        "go-template",
        "--template",
        "{{.status.state}}",
        &cid_arg,
    ]);
    let state = if state.0 {
        state.1.trim().to_string()
    } else {
        String::new()
    };
    match state == "CONTAINER_RUNNING" {
        true => run.step(Step::ContainerRunning, Status::Ok, ""),
        false => run.step(Step::ContainerRunning, Status::Fail, state),
    }
    run.mark("container-running");
    let logs = c(&["logs", &cid_arg]).1;
    run.step(Step::ContainerLogs, ok_or_fail(logs.contains(HELLO)), "");
    // kubectl exec's runtime path: `runc exec` into the running container.
    let exec = match &cid {
        Some(cid) => c(&["exec", cid, "/bin/sh", "-c", "echo \"exec-works pid=$$\""]).1,
        None => String::new(),
    };
    match exec_pid(&exec) {
        Some(pid) => run.step(Step::CriExec, Status::Ok, pid),
        None => run.step(Step::CriExec, Status::Fail, last_line(&exec)),
    }
    let pod_arg = pod.clone().unwrap_or_default();
    let ip = match &pod {
        Some(pod) => c(&[
            "inspectp",
            "-o",
            "go-template",
            "--template",
            "{{.status.network.ip}}",
            pod,
        ]),
        None => (false, String::new()),
    };
    match (ip.0, ip.1.trim()) {
        (true, ip) if !ip.is_empty() => run.step(Step::PodIp, Status::Ok, ip),
        _ => run.step(Step::PodIp, Status::Fail, ""),
    }
    let deleted = c(&["stop", &cid_arg]).0
        && c(&["rm", &cid_arg]).0
        && c(&["stopp", &pod_arg]).0
        && c(&["rmp", &pod_arg]).0;
    run.step(Step::CriDelete, ok_or_fail(deleted), "");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn start_passes_only_when_every_shipped_image_was_kept() {
        let kept = "containerd started (pid 5)\n\
image docker.io/k3s-gvisor/pause:0.1.0 already imported (pause), not imported again\n\
image docker.io/library/busybox:1 already imported (busybox), not imported again\n";
        assert_eq!(
            start_verdict(true, kept, 9.04),
            Ok(
                "node Ready 9.0s after start; the 2 shipped images kept, none imported again"
                    .into()
            )
        );
        let again = format!("{kept}image docker.io/rancher/traefik:3 imported (traefik)\n");
        assert_eq!(
            start_verdict(true, &again, 9.0),
            Err(
                "shipped images imported again though containerd kept them: \
                 docker.io/rancher/traefik:3"
                    .into()
            )
        );
        assert!(start_verdict(true, "k3s started\n", 9.0).is_err());
        assert_eq!(
            start_verdict(false, "x\nerror: k3s did not start\n", 9.0),
            Err("error: k3s did not start".into())
        );
    }

    #[test]
    fn ready_is_judged_on_the_seconds_as_printed() {
        let [within, goal] = ready_steps(70.04, 10.0);
        assert_eq!(
            within,
            (
                Step::ReadyWithin60s,
                Status::Ok,
                "node Ready 60.0s after ./install".into()
            )
        );
        assert_eq!(goal.1, Status::Miss);
        assert_eq!(
            goal.2,
            "node Ready 60.0s after ./install, over the 10 s goal"
        );
        let [within, goal] = ready_steps(75.0, 10.0);
        assert_eq!(within.1, Status::Fail);
        assert_eq!(goal.1, Status::Miss);
        let [within, goal] = ready_steps(19.96, 10.0);
        assert_eq!((within.1, goal.1), (Status::Ok, Status::Ok));
    }

    #[test]
    fn the_export_line_is_from_export_to_the_end() {
        let out = "[1.0] installed\n[2.5]   export PATH=/p/bin:$PATH KUBECONFIG=/d/k.yaml\n";
        assert_eq!(
            export_line(out).unwrap(),
            "export PATH=/p/bin:$PATH KUBECONFIG=/d/k.yaml"
        );
        assert_eq!(export_line("[1.0] nothing\n"), None);
    }

    #[test]
    fn coredns_must_be_off_exactly_where_it_cannot_work() {
        assert_eq!(coredns_why(false, "full", "svcproxy"), Some("its image"));
        assert_eq!(coredns_why(true, CPO, "none"), Some("control-plane-only"));
        assert_eq!(
            coredns_why(true, "full", "none"),
            Some("it reaches the API")
        );
        assert_eq!(coredns_why(true, "full", "kube-proxy"), None);
        assert_eq!(
            addons_verdict(Some("its image"), Some("its image is not in the bundle")).unwrap(),
            "coredns off: its image ..."
        );
        assert_eq!(
            addons_verdict(Some("its image"), Some("turned off by the user")).unwrap_err(),
            "coredns not reported off (its image ...)"
        );
        assert!(addons_verdict(None, Some("x")).is_err());
        assert_eq!(addons_verdict(None, None).unwrap(), "coredns on");
    }

    #[test]
    fn the_service_proxy_is_the_one_doctor_names_and_runs_untraced() {
        let dp = "svcproxy (userspace) in place of kube-proxy: why";
        assert_eq!(
            service_proxy_verdict("svcproxy", dp, Some((42, "svcproxy", Some("0")))).unwrap(),
            format!("svcproxy pid 42, not traced; {dp}")
        );
        assert_eq!(
            service_proxy_verdict("svcproxy", dp, Some((42, "svcproxy", Some("9")))).unwrap_err(),
            format!("doctor: [{dp}], svcproxy pid: [42], TracerPid: [9]")
        );
        assert!(service_proxy_verdict("svcproxy", dp, None).is_err());
        let kp = "kube-proxy (k3s's)";
        assert!(service_proxy_verdict("kube-proxy", kp, None).is_ok());
        assert!(service_proxy_verdict(
            "kube-proxy",
            kp,
            Some((7, "svcproxy --load-balancer-status-only", None))
        )
        .is_ok());
        assert_eq!(
            service_proxy_verdict("kube-proxy", kp, Some((7, "svcproxy", None))).unwrap_err(),
            format!("doctor: [{kp}], svcproxy pid: 7")
        );
        assert!(service_proxy_verdict("kube-proxy", dp, None).is_err());
        assert_eq!(
            service_proxy_verdict("", dp, None).unwrap_err(),
            "install named no service proxy ([]): see install.out"
        );
        assert_eq!(
            doctor_proxy_line("k3s   ok\nservice proxy                 svcproxy (userspace)\n"),
            "svcproxy (userspace)"
        );
    }

    #[test]
    fn the_pods_trace_lines_read_as_the_shell_did() {
        let logs = "hello-from-k3s-gvisor\nTracerPid:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n";
        assert_eq!(trace_lines(logs), "TracerPid: 0;Seccomp: 0;");
        assert_eq!(
            trace_lines("TracerPid:\t12\nSeccomp:\t2\n"),
            "TracerPid: 12;Seccomp: 2;"
        );
    }

    #[test]
    fn status_must_count_the_pods_kubectl_counts() {
        let kubectl = "Running\nRunning\nPending\nRunning\n";
        assert_eq!(phases_line(&count_phases(kubectl)), "1 Pending, 3 Running");
        let good = serde_json::json!({
            "healthy": true, "nodes": [{"name": "n", "ready": true}],
            "pods": {"Running": 3, "Pending": 1},
            "daemons": {"svcproxy": {"pid": 5}},
        });
        assert_eq!(
            status_verdict(&good, kubectl, "svcproxy").unwrap(),
            "node Ready, pods: 1 Pending, 3 Running"
        );
        let moved = "Running\nRunning\nRunning\nRunning\nPending\n";
        assert!(status_verdict(&good, moved, "kube-proxy").is_err());
        let two = serde_json::json!({"healthy": true, "nodes": [{"name": "n", "ready": true}],
            "pods": {"Running": 2}});
        assert!(status_verdict(&two, "Running\nRunning\n", "kube-proxy").is_err());
        let no_proxy = serde_json::json!({"healthy": true, "nodes": [{"name": "n", "ready": true}],
            "pods": {"Running": 3}, "daemons": {"svcproxy": {"pid": null}}});
        let err = status_verdict(&no_proxy, "Running\nRunning\nRunning\n", "svcproxy").unwrap_err();
        assert!(err.contains("svcproxy not running"), "{err}");
        assert!(
            api_status_verdict(&serde_json::json!({"healthy": true, "api_ready": true,
            "daemons": {"k3s": {"pid": 4}}}))
            .is_ok()
        );
        assert_eq!(
            api_status_verdict(&serde_json::json!({"healthy": false})).unwrap_err(),
            "healthy false, k3s pid none, API ready false"
        );
    }

    #[test]
    fn pods_are_back_when_all_three_started_after_the_stop() {
        let since = "2026-12-06T10:00:00Z";
        assert!(all_restarted(
            "2026-12-06T10:00:05Z\n2026-12-06T10:00:00Z\n2026-12-06T10:01:00Z\n",
            since
        ));
        assert!(!all_restarted(
            "2026-12-06T10:00:05Z\n\n2026-12-06T10:01:00Z\n",
            since
        ));
        assert!(!all_restarted(
            "2026-12-06T10:00:05Z\n2026-12-06T09:59:59Z\n2026-12-06T10:01:00Z\n",
            since
        ));
        assert!(!all_restarted(
            "2026-12-06T10:00:05Z\n2026-12-06T10:01:00Z\n",
            since
        ));
    }

    #[test]
    fn the_cri_configs_and_the_exec_answer() {
        let pod: serde_json::Value = serde_json::from_str(&pod_json(Path::new("/r"))).unwrap();
        assert_eq!(pod["log_directory"], "/r/podlogs");
        let ctr: serde_json::Value = serde_json::from_str(&ctr_json("busybox:1")).unwrap();
        assert_eq!(
            ctr["linux"]["security_context"]["namespace_options"]["pid"],
            1
        );
        assert_eq!(ctr["image"]["image"], "busybox:1");
        assert_eq!(exec_pid("exec-works pid=1\n").as_deref(), Some("pid=1"));
        assert_eq!(exec_pid("exec-works pid=\n"), None);
        assert_eq!(exec_pid("OCI runtime exec failed"), None);
    }

    /// The shell's own pipeline (scenario.sh before the port) on INPUT: its stdout.
    fn shell(pipeline: &str, input: &str) -> String {
        let mut child = Command::new("sh")
            .args(["-c", pipeline])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_ports_agree_with_the_shells_pipelines_on_the_same_input() {
        let logs = "hello-from-k3s-gvisor\nTracerPid:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n \
                    TracerPid: 3\nTracerPid:  \t 7\n";
        assert_eq!(
            trace_lines(logs),
            shell(
                "grep -E '^(TracerPid|Seccomp):' | tr -s '\\t ' ' ' | tr '\\n' ';'",
                logs
            )
        );
        let phases = "Running\nSucceeded\nRunning\nPending\nRunning\n";
        assert_eq!(
            phases_line(&count_phases(phases)),
            shell(
                "sort | uniq -c | awk '{ printf \"%s%d %s\", sep, $1, $2; sep = \", \" }'",
                phases
            )
        );
        let out =
            "[0.1] x\n[2.0] then: export PATH=/p/bin:$PATH KUBECONFIG=/d/k\n[3] export PATH=2\n";
        assert_eq!(
            export_line(out).unwrap(),
            shell("grep -m1 -o 'export PATH=.*'", out).trim_end()
        );
        let status = "Name:\tx\nTracerPid:\t0\n";
        assert_eq!(
            procs::status_field(std::process::id() as i32, "TracerPid").unwrap(),
            shell(
                "awk '/^TracerPid/ {print $2}'",
                &std::fs::read_to_string(format!("/proc/{}/status", std::process::id())).unwrap()
            )
            .trim()
        );
        assert_eq!(shell("awk '/^TracerPid/ {print $2}'", status).trim(), "0");
    }
}
