//! k3s's packaged add-ons that a user expects to just work (issue 24; was tests/e2e/addons.sh),
//! for scenario.sh in full mode with k3s running and the client pod e2e-busybox running. The
//! same checks wherever the add-on runs; where install turned one off, its steps are BLOCKED
//! with install's reason (which docs/installer.md quotes as measured):
//!   pvc-bound          (`before-stop`) a PVC of the default StorageClass (local-path) is bound
//!                      to a volume under the data dir, and a pod writes to it;
//!   pvc-data-survives  (`steps`, after the scenario's stop/start) the writer is gone; a new pod
//!                      reads the same bytes;
//!   kubectl-top        `kubectl top node` and `kubectl top pod` answer with numbers;
//!   hpa-scales         (`hpa`, after the helm and ingress steps) an HPA on CPU scales a
//!                      Deployment 1 -> 3 under load and back to 1 after it (bounded waits on the
//!                      Deployment's replicas, no timed assertion); not run when kubectl-top
//!                      failed (no metrics, no scaling).
//! Pods live in their own namespace, so the scenario's count of default's pods is unchanged.
//! The bytes written before the stop go to RUN/pvc-bytes for `steps` to compare.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::settings::last_lines;
use crate::{tail, Run};

#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum Phase {
    /// Before the scenario's stop: a volume, written once (pvc-bound).
    BeforeStop,
    /// After the scenario's stop and start: pvc-data-survives, kubectl-top; hpa-scales's
    /// Deployment and HPA applied.
    Steps,
    /// Later (after the helm and ingress steps): hpa-scales. metrics-server's first scrapes of
    /// the Deployment's pod and the HPA's first reading (about a minute) happen during the
    /// steps between instead of before the load.
    Hpa,
}

const NS: &str = "e2e-addons";
/// What `before-stop` wrote into the volume, for `steps` (a file: two driver runs).
const PVC_BYTES_FILE: &str = "pvc-bytes";
/// Written by `steps` when kubectl-top passed, for `hpa`.
const TOP_OK_FILE: &str = "kubectl-top-ok";
const LOCAL_STORAGE: &str = "local-storage";
const METRICS_SERVER: &str = "metrics-server";
/// How long the `kubectl top` answers are polled: metrics-server needs two scrapes
/// (--metric-resolution=15s) before a node or pod has a rate.
const TOP_LIMIT: Duration = Duration::from_secs(120);

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    let busybox = image_ref(&run.bundle, "busybox")?;
    match phase {
        Phase::BeforeStop => before_stop(run, &busybox),
        Phase::Steps => steps(run, &busybox),
        Phase::Hpa => hpa(run),
    }
    Ok(())
}

/// Why install turned add-on NAME off, or None when it runs. `status --json` carries the
/// installer's own decisions (`addons_off`); a user's own `--disable NAME` it does not report,
/// and only install's output says (`k3s: add-on NAME off: turned off by the user ...`), so that
/// line is read from RUN/install.out as addons.sh read every such line.
fn addon_off(status: &serde_json::Value, install_out: &str, name: &str) -> Option<String> {
    status["addons_off"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == name)
        .and_then(|a| a["reason"].as_str().map(str::to_string))
        .or_else(|| off_in_install_out(install_out, name))
}

/// The reason on install's first `[SECS] k3s: add-on NAME off...: REASON` line (addons.sh's
/// `sed -n "s/^\[[0-9.]*\] k3s: add-on NAME off[^:]*: //p"`).
fn off_in_install_out(text: &str, name: &str) -> Option<String> {
    let head = format!(" k3s: add-on {name} off");
    text.lines().find_map(|line| {
        let (stamp, rest) = line.strip_prefix('[')?.split_once(']')?;
        if !stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let (_, reason) = rest.strip_prefix(&head)?.split_once(':')?;
        reason.strip_prefix(' ').map(str::to_string)
    })
}

/// Why install turned add-on NAME off (its decision or the user's `--disable`), or None.
pub fn turned_off(run: &Run, name: &str) -> Option<String> {
    let (status, install_out) = install_facts(run);
    addon_off(&status, &install_out, name)
}

/// What decides the add-on steps: `status --json` (Null when it printed none) and install's
/// stamped output.
fn install_facts(run: &Run) -> (serde_json::Value, String) {
    let status = run
        .status()
        .map_or(serde_json::Value::Null, |(json, _)| json);
    let out = run.install_out();
    (status, out)
}

/// `$(...)` of a command's output: its trailing newlines dropped.
fn sh_out(text: &str) -> &str {
    text.trim_end_matches('\n')
}

/// kubectl ARGS in the add-ons' namespace: stdout, or nothing when it failed (its error
/// printed, as the shell left stderr on the terminal).
fn k(run: &Run, args: &[&str]) -> String {
    match run.kubectl(&in_ns(args)) {
        Ok(out) => sh_out(&out).to_string(),
        Err(e) => {
            eprintln!("{e:#}");
            String::new()
        }
    }
}

/// `-n NS ARGS`.
fn in_ns<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    all
}

/// A pod of the busybox image in NS that runs `sh -c SCRIPT` once with the PVC at /data.
fn storage_pod(name: &str, image: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    imagePullPolicy: Never
    command: [sh, -c, '{script}']
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: e2e-data}}
"
    )
}

/// Waits (bounded) for pod NAME to end; true if it succeeded.
fn pod_succeeded(run: &Run, name: &str) -> bool {
    run.kubectl(&[
        "-n",
        NS,
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        &format!("pod/{name}"),
        "--timeout=120s",
    ])
    .is_ok()
}

/// The volume is where k3s's local-path keeps volumes: under DATA/k3s/storage/.
fn under_storage(path: &str, data_dir: &Path) -> bool {
    path.starts_with(&format!("{}/k3s/storage/", data_dir.display()))
}

fn before_stop(run: &Run, busybox: &str) {
    println!("== add-ons: local-path storage");
    let (status, install_out) = install_facts(run);
    if let Some(why) = addon_off(&status, &install_out, LOCAL_STORAGE) {
        run.step(Step::PvcBound, Status::Blocked, format!("install: {why}"));
        return;
    }
    let _ = run.kubectl_ok(&["create", "namespace", NS]);
    // The default StorageClass, as a chart's PVC without storageClassName gets it.
    let default_sc = sh_out(&run.kubectl(&[
        "get",
        "storageclass",
        "-o",
        "jsonpath={range .items[?(@.metadata.annotations.storageclass\\.kubernetes\\.io/is-default-class==\"true\")]}{.metadata.name}{end}",
    ]).unwrap_or_default()).to_string();
    if let Err(e) = run.kubectl_apply(&format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: e2e-data, namespace: {NS}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 16Mi}}}}
"
    )) {
        eprintln!("{e:#}");
    }
    // The bytes: this run's directory name, unique per run.
    let run_name = run.run.file_name().unwrap_or_default().to_string_lossy();
    let bytes = format!("written-by-e2e-{run_name}");
    if let Err(e) = std::fs::write(run.run.join(PVC_BYTES_FILE), &bytes) {
        eprintln!("cannot write {PVC_BYTES_FILE}: {e}");
    }
    let script = format!("echo {bytes} > /data/bytes && cat /data/bytes");
    if let Err(e) = run.kubectl_apply(&storage_pod("writer", busybox, &script)) {
        eprintln!("{e:#}");
    }
    if pod_succeeded(run, "writer") && k(run, &["logs", "writer"]) == bytes {
        let pv = k(
            run,
            &[
                "get",
                "pvc",
                "e2e-data",
                "-o",
                "jsonpath={.spec.volumeName}",
            ],
        );
        let pv_path = sh_out(
            &run.kubectl(&[
                "get",
                "pv",
                &pv,
                "-o",
                "jsonpath={.spec.local.path}{.spec.hostPath.path}",
            ])
            .unwrap_or_default(),
        )
        .to_string();
        run.verdict(
            Step::PvcBound,
            match under_storage(&pv_path, &run.data_dir) {
                true => Ok(format!(
                    "StorageClass {default_sc} (default), {pv} at {pv_path}, written"
                )),
                false => Err(format!(
                    "{pv} is at [{pv_path}], not under {}/k3s/storage (k3s's default)",
                    run.data_dir.display()
                )),
            },
        );
    } else {
        run.step(
            Step::PvcBound,
            Status::Fail,
            format!(
                "default StorageClass [{default_sc}], writer: {}",
                run.kubectl_text(&[
                    "-n",
                    NS,
                    "get",
                    "pod",
                    "writer",
                    "-o",
                    "jsonpath={.status.phase}"
                ])
            ),
        );
        println!("{}", tail(&k(run, &["describe", "pvc", "e2e-data"]), 8));
        println!(
            "{}",
            run.kubectl_text(&[
                "-n",
                "kube-system",
                "logs",
                "deploy/local-path-provisioner",
                "--tail=20"
            ])
        );
    }
}

fn steps(run: &Run, busybox: &str) {
    println!("== add-ons");
    let (status, install_out) = install_facts(run);
    let metrics_off = addon_off(&status, &install_out, METRICS_SERVER);
    if metrics_off.is_none() {
        // hpa-scales's Deployment and HPA first: metrics-server needs two scrapes (15 s apart)
        // of the new pod before the HPA can act, and that wait runs beside the steps until
        // `hpa`.
        if let Err(e) = run.kubectl_apply(&burn(busybox)) {
            eprintln!("{e:#}");
        }
    }
    match addon_off(&status, &install_out, LOCAL_STORAGE) {
        None => {
            let _ = run.kubectl_ok(&[
                "-n",
                NS,
                "delete",
                "pod",
                "writer",
                "--wait",
                "--timeout=60s",
            ]);
            if let Err(e) = run.kubectl_apply(&storage_pod("reader", busybox, "cat /data/bytes")) {
                eprintln!("{e:#}");
            }
            let got = match pod_succeeded(run, "reader") {
                true => k(run, &["logs", "reader"]),
                false => String::new(),
            };
            let written = std::fs::read_to_string(run.run.join(PVC_BYTES_FILE)).unwrap_or_default();
            if !written.is_empty() && got == written {
                run.step(
                    Step::PvcDataSurvives,
                    Status::Ok,
                    format!("after the writer's deletion and stop/start, a new pod read \"{got}\""),
                );
            } else {
                run.step(
                    Step::PvcDataSurvives,
                    Status::Fail,
                    format!("read [{got}], written [{written}]"),
                );
                println!("{}", tail(&k(run, &["describe", "pod", "reader"]), 10));
            }
        }
        Some(why) => run.step(
            Step::PvcDataSurvives,
            Status::Blocked,
            format!("install: {why}"),
        ),
    }
    if let Some(why) = metrics_off {
        run.step(Step::KubectlTop, Status::Blocked, format!("install: {why}"));
        return;
    }
    if kubectl_top(run) {
        if let Err(e) = std::fs::write(run.run.join(TOP_OK_FILE), "") {
            eprintln!("cannot write {TOP_OK_FILE}: {e}");
        }
    }
}

/// hpa-scales, where metrics-server runs and kubectl-top passed in `steps`.
fn hpa(run: &Run) {
    let (status, install_out) = install_facts(run);
    if let Some(why) = addon_off(&status, &install_out, METRICS_SERVER) {
        run.step(Step::HpaScales, Status::Blocked, format!("install: {why}"));
    } else if run.run.join(TOP_OK_FILE).exists() {
        hpa_scales(run);
    }
}

/// Polls kubectl ARGS every 3 s until it succeeds with an output that `matches`, up to
/// TOP_LIMIT: Ok(that output), or Err(the last output).
fn until_matches(run: &Run, matches: fn(&str) -> bool, args: &[&str]) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let (good, out) = match run.kubectl(args) {
            Ok(out) => (true, sh_out(&out).to_string()),
            Err(e) => (false, format!("{e:#}")),
        };
        if good && matches(&out) {
            return Ok(out);
        }
        if start.elapsed() >= TOP_LIMIT {
            return Err(out);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// `DIGITS` then `suffix`, exactly.
fn number_with(token: &str, suffix: &str) -> bool {
    token
        .strip_suffix(suffix)
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `DIGITS` then `suffix`, then anything.
fn starts_with_number(token: &str, suffix: &str) -> bool {
    let digits = token.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && token[digits..].starts_with(suffix)
}

/// A `kubectl top node --no-headers` line with numbers: after the node's name, CPU in
/// millicores, its percent, memory in Mi, its percent (addons.sh's
/// `' [0-9]+m +[0-9]+% +[0-9]+Mi +[0-9]+%'`; `<unknown>` until metrics-server has two scrapes).
fn node_top_has_numbers(out: &str) -> bool {
    out.lines().any(|line| {
        let t: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
        // The regex wants a space before the CPU: not the line's first word.
        let first = usize::from(!line.starts_with(' '));
        (first..t.len().saturating_sub(3)).any(|i| {
            number_with(t[i], "m")
                && number_with(t[i + 1], "%")
                && number_with(t[i + 2], "Mi")
                && starts_with_number(t[i + 3], "%")
        })
    })
}

/// A `kubectl top pod e2e-busybox --no-headers` line with numbers (addons.sh's
/// `'^e2e-busybox +[0-9]+m +[0-9]+Mi'`).
fn pod_top_has_numbers(out: &str) -> bool {
    out.lines().any(|line| {
        let t: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
        line.starts_with("e2e-busybox ")
            && t.len() >= 3
            && t[0] == "e2e-busybox"
            && number_with(t[1], "m")
            && starts_with_number(t[2], "Mi")
    })
}

/// Runs of spaces as one (`tr -s ' '`).
fn squeeze_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

/// The first `n` lines, each followed by a space (`echo "$X" | head -n N | tr '\n' ' '`).
fn head_joined(text: &str, n: usize) -> String {
    let mut lines: Vec<&str> = text.lines().take(n).collect();
    if lines.is_empty() {
        lines.push("");
    }
    lines.iter().map(|l| format!("{l} ")).collect()
}

/// kubectl-top; true when it passed (hpa-scales needs the same metrics).
fn kubectl_top(run: &Run) -> bool {
    // The Metrics API is served once metrics-server is Ready and the API server reaches it.
    if run
        .kubectl(&[
            "wait",
            "--for=condition=Available",
            "apiservice/v1beta1.metrics.k8s.io",
            "--timeout=120s",
        ])
        .is_err()
    {
        run.step(
            Step::KubectlTop,
            Status::Fail,
            format!(
                "apiservice v1beta1.metrics.k8s.io not Available: {}",
                run.kubectl_text(&[
                    "get",
                    "apiservice",
                    "v1beta1.metrics.k8s.io",
                    "--no-headers"
                ])
            ),
        );
        metrics_diagnosis(run);
        return false;
    }
    let node = until_matches(run, node_top_has_numbers, &["top", "node", "--no-headers"]);
    let pod = node.as_ref().ok().map(|_| {
        until_matches(
            run,
            pod_top_has_numbers,
            &["top", "pod", "e2e-busybox", "--no-headers"],
        )
    });
    match (&node, &pod) {
        (Ok(node), Some(Ok(pod))) => {
            run.step(
                Step::KubectlTop,
                Status::Ok,
                format!(
                    "node: {}; pod: {}",
                    squeeze_spaces(node.lines().next().unwrap_or("")),
                    squeeze_spaces(pod)
                ),
            );
            true
        }
        _ => {
            let either = |r: &Result<String, String>| match r {
                Ok(t) | Err(t) => t.clone(),
            };
            run.step(
                Step::KubectlTop,
                Status::Fail,
                format!(
                    "node: [{}] pod: [{}]",
                    head_joined(&either(&node), 2),
                    head_joined(&pod.as_ref().map(either).unwrap_or_default(), 2)
                ),
            );
            metrics_diagnosis(run);
            false
        }
    }
}

/// What a failed metrics step needs to be understood: metrics-server's pod and its readiness
/// events, its log, and what it scrapes (the kubelet's /metrics/resource, through the API
/// server).
fn metrics_diagnosis(run: &Run) {
    println!("== metrics-server diagnosis");
    let ks = |args: &[&str]| run.kubectl_text_in("kube-system", args);
    println!(
        "{}",
        ks(&["get", "pods", "-l", "k8s-app=metrics-server", "-o", "wide"])
    );
    let describe = ks(&["describe", "pods", "-l", "k8s-app=metrics-server"]);
    let events: Vec<&str> = describe
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .collect();
    println!("{}", tail(&events.join("\n"), 15));
    println!("{}", ks(&["logs", "deploy/metrics-server", "--tail=40"]));
    let nodes = run.kubectl_text(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    for node in nodes.split_whitespace() {
        let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
        println!("-- {path} (non-comment lines)");
        let raw = run.kubectl_text(&["get", "--raw", &path]);
        let lines: Vec<&str> = raw
            .lines()
            .filter(|l| !l.starts_with('#'))
            .take(30)
            .collect();
        println!("{}", lines.join("\n"));
    }
}

/// Idle pods (sleep) that request 100m; load is a busy loop started in one of them, stopped by
/// a file (in /: the image has no /tmp). At 50% of the request, one busy pod asks for the
/// maximum.
fn burn(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        command: [sleep, \"3600\"]
        resources: {{requests: {{cpu: 100m}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: burn, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: burn}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: 0}}
"
    )
}

/// The Deployment and HPA of [`burn`], applied at the start of `steps`, scale up under load
/// and back down after it.
fn hpa_scales(run: &Run) {
    if !run.kubectl_ok(&in_ns(&[
        "wait",
        "--for=condition=Available",
        "deployment/burn",
        "--timeout=120s",
    ])) {
        run.step(
            Step::HpaScales,
            Status::Fail,
            "deployment burn not Available",
        );
        return;
    }
    // The HPA has read the idle pod's CPU before the load starts.
    if !run.kubectl_ok(&in_ns(&[
        "wait",
        "--for=condition=ScalingActive",
        "hpa/burn",
        "--timeout=120s",
    ])) {
        run.step(
            Step::HpaScales,
            Status::Fail,
            format!(
                "HPA never ScalingActive: {}",
                last_lines(&k(run, &["describe", "hpa", "burn"]), 5)
            ),
        );
        return;
    }
    let burner = k(
        run,
        &[
            "get",
            "pod",
            "-l",
            "app=burn",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let _ = run.kubectl_ok(&in_ns(&[
        "exec",
        &burner,
        "--",
        "sh",
        "-c",
        "(while [ ! -e /stop ]; do :; done) </dev/null >/dev/null 2>&1 &",
    ]));
    let stop_load = || {
        run.kubectl(&["-n", NS, "exec", &burner, "--", "sh", "-c", ": > /stop"])
            .is_ok()
    };
    let hpa_line = || run.kubectl_text(&["-n", NS, "get", "hpa", "burn", "--no-headers"]);
    if run.kubectl_ok(&in_ns(&[
        "wait",
        "--for=jsonpath={.spec.replicas}=3",
        "deployment/burn",
        "--timeout=180s",
    ])) {
        let up = k(
            run,
            &[
                "get",
                "hpa",
                "burn",
                "-o",
                "jsonpath={.status.currentMetrics[0].resource.current.averageUtilization}",
            ],
        );
        if !stop_load() {
            run.step(
                Step::HpaScales,
                Status::Fail,
                format!("cannot stop the load in {burner}"),
            );
            return;
        }
        let down = run.kubectl_ok(&in_ns(&[
            "wait",
            "--for=jsonpath={.spec.replicas}=1",
            "deployment/burn",
            "--timeout=180s",
        ]));
        run.verdict(
            Step::HpaScales,
            match down {
                true => Ok(format!(
                    "1 -> 3 under load ({up}% of the CPU request), back to 1 after it"
                )),
                false => Err(format!("scaled up to 3 but not back down: {}", hpa_line())),
            },
        );
    } else {
        run.step(
            Step::HpaScales,
            Status::Fail,
            format!("no scale-up under load: {}", hpa_line()),
        );
        println!("{}", tail(&k(run, &["describe", "hpa", "burn"]), 10));
    }
    stop_load();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_addon_is_off_by_statuss_reason_or_the_users_disable_in_installs_output() {
        let status = serde_json::json!({"addons_off": [
            {"name": "metrics-server", "reason": "the kubelet's stats (gVisor)"}]});
        let out = "[3.1] k3s: service proxy: svcproxy\n\
                   [3.2] k3s: add-on local-storage off: turned off by the user (--disable local-storage)\n";
        assert_eq!(
            addon_off(&status, out, "metrics-server").as_deref(),
            Some("the kubelet's stats (gVisor)")
        );
        assert_eq!(
            addon_off(&status, out, "local-storage").as_deref(),
            Some("turned off by the user (--disable local-storage)")
        );
        assert_eq!(addon_off(&status, out, "traefik"), None);
        assert_eq!(
            addon_off(&serde_json::Value::Null, "", "metrics-server"),
            None
        );
    }

    #[test]
    fn installs_lines_are_read_as_the_sed_did() {
        let out = "[12.5] k3s: add-on traefik off (--disable): its image: a: b\n";
        assert_eq!(
            off_in_install_out(out, "traefik").as_deref(),
            Some("its image: a: b")
        );
        // Another add-on whose name starts the same, an unstamped line: not this one.
        assert_eq!(off_in_install_out(out, "traef"), None);
        assert_eq!(
            off_in_install_out("k3s: add-on traefik off (--disable): x\n", "traefik"),
            None
        );
        assert_eq!(
            off_in_install_out("[1.0] k3s: add-on traefik: HelmChart ...\n", "traefik"),
            None
        );
    }

    #[test]
    fn the_volume_must_be_under_k3ss_storage_dir() {
        let d = Path::new("/r/d");
        assert!(under_storage(
            "/r/d/k3s/storage/pvc-1_e2e-addons_e2e-data",
            d
        ));
        assert!(!under_storage("/var/lib/rancher/k3s/storage/pvc-1", d));
        assert!(!under_storage("/r/d/k3s/storagex/pvc-1", d));
        assert!(!under_storage("", d));
    }

    #[test]
    fn top_answers_count_only_with_numbers() {
        assert!(node_top_has_numbers(
            "e2e-node   123m   3%    812Mi   10%   "
        ));
        assert!(!node_top_has_numbers(
            "e2e-node   <unknown>   <unknown>   <unknown>   <unknown>"
        ));
        assert!(!node_top_has_numbers("error: metrics not available yet"));
        assert!(!node_top_has_numbers("e2e-node 123m 3% 1Gi 10%"));
        // The numbers follow the node's name (the regex's leading space).
        assert!(!node_top_has_numbers("123m 3% 812Mi 10%"));
        assert!(pod_top_has_numbers("e2e-busybox   0m    1Mi   "));
        assert!(!pod_top_has_numbers("e2e-busybox-2   0m    1Mi"));
        assert!(!pod_top_has_numbers(
            "error: metrics not available yet for pod"
        ));
    }

    #[test]
    fn details_quote_outputs_as_the_shell_did() {
        assert_eq!(squeeze_spaces("a   b  c"), "a b c");
        assert_eq!(head_joined("l1\nl2\nl3", 2), "l1 l2 ");
        assert_eq!(head_joined("", 2), " ");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(sh_out("x\n\n"), "x");
    }

    #[test]
    fn manifests_are_in_the_addons_namespace() {
        let pod = storage_pod("writer", "busybox:1", "cat /data/bytes");
        assert!(pod.contains("metadata: {name: writer, namespace: e2e-addons}"));
        assert!(pod.contains("command: [sh, -c, 'cat /data/bytes']"));
        assert!(pod.contains("persistentVolumeClaim: {claimName: e2e-data}"));
        let burn = burn("busybox:1");
        assert_eq!(burn.matches("namespace: e2e-addons").count(), 2);
        assert!(burn.contains("averageUtilization: 50}}"));
    }
}
