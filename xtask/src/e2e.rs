//! `cargo xtask e2e`: the bundle tarball (cached) → tests/e2e/scenario.sh, which extracts it,
//! runs `./install` and exercises the result, on this host or inside gVisor, in a sandbox
//! network that looks like a user's (sandbox.rs) → a summary of every step with timings, RSS
//! and the error lines k3s logged (each must be documented in docs/k3s-log.md). Each run keeps
//! its directory and full output under target/k3s-gvisor/e2e/<host>-<mode>/.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::k3s_log;
use crate::sandbox::{self, Network};

/// Where the scenario runs.
#[derive(Debug, Clone)]
pub struct Host {
    pub label: String,
    /// None: directly on this machine.
    pub runsc: Option<PathBuf>,
    /// Debian's 2022 gVisor lacks kernel features runc needs (doctor names them), so its full
    /// mode may fail with those gaps reported. Control-plane-only needs no container runtime
    /// and must pass on every host.
    pub gaps_allowed: bool,
}

/// What the scenario exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// containerd, k3s server with its agent, pods.
    Full,
    /// k3s server without an agent: the API, no pods.
    ControlPlaneOnly,
}

impl Mode {
    /// The name the scenario script reads from MODE.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::ControlPlaneOnly => "control-plane-only",
        }
    }
}

/// How many nodes, and where each runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One sandbox: tests/e2e/scenario.sh.
    Single,
    /// A server and an agent in two sandboxes on one bridge: tests/e2e/two-nodes.sh. With
    /// `--mode control-plane-only` the server runs no kubelet and the agent runs every pod.
    TwoNodes,
}

/// The inputs every run shares.
pub struct Inputs<'a> {
    pub tarball: &'a Path,
    /// The same bundle with the next version, for the upgrade steps (single node, full mode).
    pub tarball_next: Option<&'a Path>,
    pub work: &'a Path,
    pub crictl: &'a Path,
    /// tests/e2e: scenario.sh, soak.sh and their lib.sh.
    pub scripts: &'a Path,
    /// docs/k3s-log.md: the error lines k3s may log, each with why it is harmless.
    pub known_errors: &'a Path,
    pub network: Network,
}

/// One run's result; also saved as `outcome.json` in its directory, from which
/// [`compatibility_table`] is made.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub label: String,
    /// The host's label (`gvisor-current`, ...) and the mode, for the table.
    pub host: String,
    pub mode: String,
    /// When the run ended (RFC 3339, UTC) and which runsc it ran in (`--version`'s first line).
    #[serde(default)]
    pub finished_at: String,
    #[serde(default)]
    pub runsc_version: Option<String>,
    pub steps: Vec<(String, String, String)>,
    pub times: Vec<(String, String)>,
    pub rss: Vec<(String, String)>,
    pub gaps: Vec<String>,
    pub notes: Vec<String>,
    pub log: PathBuf,
    pub gaps_allowed: bool,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|(_, status, _)| status == "FAIL")
    }
}

/// Writes the wrapper `runsc` runs (it does not carry our environment into the sandbox): the
/// inputs as shell variables, then the script.
pub fn wrapper(dir: &Path, script: &Path, vars: &[(&str, String)]) -> Result<PathBuf> {
    // Every script in tests/e2e sources lib.sh, which sits beside it.
    let lib = script.with_file_name("lib.sh");
    let lib = ("E2E_LIB", lib.display().to_string());
    let mut text = String::new();
    for (name, value) in vars.iter().chain([&lib]) {
        if value.contains('\'') {
            bail!("{name}={value}: the e2e paths must not contain a `'`");
        }
        text.push_str(&format!("{name}='{value}'\nexport {name}\n"));
    }
    text.push_str(&format!(". '{}'\n", script.display()));
    let path = dir.join("run.sh");
    std::fs::write(&path, text)?;
    Ok(path)
}

pub fn run(inputs: &Inputs, host: &Host, mode: Mode) -> Result<Outcome> {
    let mode_name = mode.as_str();
    let dir = inputs.work.join(format!("{}-{mode_name}", host.label));
    crate::fsutil::remove_tree(&dir)?;
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let script = wrapper(
        &dir,
        &inputs.scripts.join("scenario.sh"),
        &[
            ("TARBALL", inputs.tarball.display().to_string()),
            ("RUN", run_dir.display().to_string()),
            ("CRICTL", inputs.crictl.display().to_string()),
            ("MODE", mode_name.to_string()),
            (
                "TARBALL_NEXT",
                inputs
                    .tarball_next
                    .map_or(String::new(), |t| t.display().to_string()),
            ),
        ],
    )?;
    crate::ui::step(
        "e2e",
        format!(
            "{} ({mode_name}): running {}",
            host.label,
            inputs.scripts.join("scenario.sh").display()
        ),
    );
    let finished = sandbox::run_script(
        host.runsc.as_deref(),
        inputs.network,
        &script,
        &dir,
        &mut |_| {},
    )
    .context("cannot run the e2e scenario")?;
    let text = format!("{}\n--- stderr ---\n{}", finished.stdout, finished.stderr);
    let log = dir.join("output.log");
    std::fs::write(&log, &text)?;
    let network = match finished.network {
        Network::Interface => "eth0 + default route",
        Network::Loopback => "loopback only",
    };
    let mut o = Outcome {
        label: format!("{} ({mode_name}, {network})", host.label),
        host: host.label.clone(),
        mode: mode_name.to_string(),
        finished_at: now_rfc3339(),
        runsc_version: runsc_version(host),
        steps: vec![],
        times: vec![],
        rss: vec![],
        gaps: vec![],
        notes: finished.note.into_iter().collect(),
        log,
        gaps_allowed: host.gaps_allowed && mode == Mode::Full,
    };
    let k3s_errors = parse_lines(&finished.stdout, "", &mut o);
    if !finished.success {
        // The scenario itself always exits 0; this is the sandbox (runsc) failing.
        let last = finished
            .stderr
            .lines()
            .last()
            .unwrap_or("no stderr")
            .to_string();
        o.steps.push(("sandbox".into(), "FAIL".into(), last));
    }
    if o.steps.is_empty() {
        bail!(
            "the e2e scenario reported no step; output in {}:\n{}",
            o.log.display(),
            crate::fsutil::tail(&o.log, 40)
        );
    }
    if o.steps.iter().any(|(name, _, _)| name == "k3s-log") {
        o.steps
            .push(k3s_log::step(&k3s_errors, inputs.known_errors)?);
    }
    std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec_pretty(&o)?)?;
    Ok(o)
}

/// Adds the STEP/TIME/RSS lines and doctor's gaps of one script's output to `o`, each name
/// prefixed with `prefix`; returns its K3SERR lines.
fn parse_lines(stdout: &str, prefix: &str, o: &mut Outcome) -> Vec<String> {
    let mut k3s_errors = Vec::new();
    for line in stdout.lines() {
        let mut f = line.splitn(4, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("STEP"), Some(name), Some(status)) => o.steps.push((
                format!("{prefix}{name}"),
                status.into(),
                f.next().unwrap_or("").into(),
            )),
            (Some("TIME"), Some(mark), Some(secs)) => {
                o.times.push((format!("{prefix}{mark}"), secs.into()))
            }
            (Some("RSS"), Some(name), Some(kb)) => {
                o.rss.push((format!("{prefix}{name}"), kb.into()))
            }
            _ if line.starts_with("K3SERR ") => k3s_errors.push(line[7..].to_string()),
            // doctor runs before and after install: each gap once.
            _ if line.contains("NOT handled") && !o.gaps.iter().any(|g| g == line.trim()) => {
                o.gaps.push(line.trim().to_string())
            }
            _ => {}
        }
    }
    k3s_errors
}

/// The two-nodes topology: tests/e2e/two-nodes.sh as ROLE=server in one sandbox and as
/// ROLE=agent in another (sandbox::run_two_nodes); the agent joins with the command the
/// server's install printed, and the two coordinate through files in a shared directory.
pub fn run_two_nodes(inputs: &Inputs, host: &Host, mode: Mode) -> Result<Outcome> {
    if inputs.network != Network::Interface {
        bail!(
            "--topology two-nodes needs --network interface: the nodes reach each other over eth0"
        );
    }
    let mode_name = mode.as_str();
    // Short names: containerd's socket path (`RUN/data/run/containerd.sock.ttrpc`) must stay
    // under the 104 bytes a unix socket path may have, as the single-node run's does.
    let short_mode = match mode {
        Mode::Full => "full",
        Mode::ControlPlaneOnly => "cp",
    };
    let dir = inputs.work.join(format!("{}-2n-{short_mode}", host.label));
    crate::fsutil::remove_tree(&dir)?;
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared)?;
    let mut scripts = Vec::new();
    for role in ["server", "agent"] {
        // RUN is DIR/ROLE; the wrapper, OCI bundle and runsc state go beside it.
        let run_dir = dir.join(role);
        let sandbox_dir = dir.join(format!("{role}-sandbox"));
        std::fs::create_dir_all(&run_dir)?;
        std::fs::create_dir_all(&sandbox_dir)?;
        scripts.push(wrapper(
            &sandbox_dir,
            &inputs.scripts.join("two-nodes.sh"),
            &[
                ("TARBALL", inputs.tarball.display().to_string()),
                ("RUN", run_dir.display().to_string()),
                ("SHARED", shared.display().to_string()),
                ("ROLE", role.to_string()),
                ("MODE", mode_name.to_string()),
            ],
        )?);
    }
    crate::ui::step(
        "e2e",
        format!(
            "{} (two nodes, {mode_name}): running {} as server and agent",
            host.label,
            inputs.scripts.join("two-nodes.sh").display()
        ),
    );
    let [server, agent] = sandbox::run_two_nodes(
        host.runsc.as_deref(),
        [
            sandbox::NodeScript {
                role: "server",
                script: &scripts[0],
            },
            sandbox::NodeScript {
                role: "agent",
                script: &scripts[1],
            },
        ],
        &dir,
    )
    .context("cannot run the two-nodes e2e")?;
    let mut text = String::new();
    for (role, finished) in [("server", &server), ("agent", &agent)] {
        text.push_str(&format!(
            "=== {role} ===\n{}\n--- {role} stderr ---\n{}\n",
            finished.stdout, finished.stderr
        ));
    }
    let log = dir.join("output.log");
    std::fs::write(&log, &text)?;
    let mut o = Outcome {
        label: format!("{} (two nodes: server {mode_name} + agent)", host.label),
        host: host.label.clone(),
        // Its own rows in compatibility_table, apart from the single-node ones.
        mode: format!("two-nodes-{mode_name}"),
        finished_at: now_rfc3339(),
        runsc_version: runsc_version(host),
        steps: vec![],
        times: vec![],
        rss: vec![],
        gaps: vec![],
        notes: vec![],
        log,
        gaps_allowed: false,
    };
    for (role, finished) in [("server", &server), ("agent", &agent)] {
        let prefix = format!("{role}:");
        let k3s_errors = parse_lines(&finished.stdout, &prefix, &mut o);
        if !finished.success {
            let last = finished.stderr.lines().last().unwrap_or("no stderr");
            o.steps
                .push((format!("{prefix}sandbox"), "FAIL".into(), last.to_string()));
        }
        if o.steps
            .iter()
            .any(|(name, _, _)| *name == format!("{prefix}k3s-log"))
        {
            let (name, status, detail) = k3s_log::step(&k3s_errors, inputs.known_errors)?;
            o.steps.push((format!("{prefix}{name}"), status, detail));
        }
    }
    if o.steps.is_empty() {
        bail!(
            "the two-nodes scenario reported no step; output in {}:\n{}",
            o.log.display(),
            crate::fsutil::tail(&o.log, 40)
        );
    }
    std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec_pretty(&o)?)?;
    Ok(o)
}

const OUTCOME_FILE: &str = "outcome.json";

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    crate::build::rfc3339_utc(now.map_or(0, |d| d.as_secs()))
}

/// The first line of `runsc --version` of the host's gVisor (None on plain Linux).
fn runsc_version(host: &Host) -> Option<String> {
    let out = std::process::Command::new(host.runsc.as_deref()?)
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

/// The hosts in the order users meet them: plain Linux, then gVisor from newest to oldest.
const TABLE_HOSTS: [&str; 5] = [
    "plain-linux",
    "gvisor-current",
    "gvisor-2025",
    "gvisor-2023",
    "gvisor-debian-2022",
];

/// What a user asks of a host, and the scenario steps that answer it (all must be ok).
const TABLE_ROWS: &[(&str, &str, &[&str])] = &[
    (
        "control plane (API, kubectl)",
        "control-plane-only",
        &["readyz", "configmap"],
    ),
    ("install, node Ready", "full", &["install", "node-ready"]),
    ("every blocker handled (doctor)", "full", &["doctor"]),
    ("pod Running, logs", "full", &["pod-running", "pod-logs"]),
    ("pods untraced", "full", &["pod-untraced"]),
    ("kubectl exec", "full", &["exec"]),
    ("Deployment (2 replicas)", "full", &["deployment"]),
    ("stop, start: pods back", "full", &["start", "pods-back"]),
    (
        "k3s flags (--, INSTALL_K3S_EXEC), config.yaml(.d), K3S_* kept across a start",
        "full",
        &[
            "k3s-flags",
            "tls-san",
            "status-k3s-settings",
            "refused-flag",
            "bad-config-refused",
            "env-kept-across-start",
        ],
    ),
    (
        "kubectl, crictl, ctr in a fresh shell; kubeconfig for a normal user",
        "full",
        &["tools-fresh-shell", "kubeconfig-mode", "tools-removed"],
    ),
    (
        "a killed k3s, containerd or svcproxy comes back on its own",
        "full",
        &["restart-k3s", "restart-containerd", "status-restarts"],
    ),
    (
        "images: airgap dir, images import, registries.yaml mirror (TLS + auth), proxy",
        "full",
        &[
            "airgap-import",
            "images-import",
            "registries-mirror",
            "proxy-pull",
        ],
    ),
    (
        "uninstall keeps what bind mounts under the data dir show (plain, stacked, busy)",
        "full",
        &["uninstall-keeps-outside-files"],
    ),
    (
        "installed under umask 000: prefix 0755, data dir 0700",
        "full",
        &["umask-modes"],
    ),
    (
        "uninstall leaves nothing",
        "full",
        &[
            "uninstall",
            "mounts-restored",
            "host-files-restored",
            "nothing-left",
        ],
    ),
    (
        "Services: ClusterIP, DNS, NodePort, scale-down",
        "full",
        &[
            "svc-clusterip",
            "dns-kubernetes",
            "svc-dns",
            "svc-nodeport",
            "svc-scale-down",
        ],
    ),
    (
        "LoadBalancer Services: EXTERNAL-IP, answers on the node",
        "full",
        &["loadbalancer-ip"],
    ),
    (
        "local-path storage: PVC bound, data survives a new pod and stop/start",
        "full",
        &["pvc-bound", "pvc-data-survives"],
    ),
    (
        "metrics: kubectl top, an HPA scales",
        "full",
        &["kubectl-top", "hpa-scales"],
    ),
    (
        "upgrade in place: cluster kept, downgrade refused",
        "full",
        &[
            "upgrade",
            "upgrade-keeps-state",
            "upgrade-status",
            "downgrade-refused",
        ],
    ),
    (
        "two nodes: an agent joins (K3S_URL, K3S_TOKEN_FILE; no token in ps), Ready",
        "two-nodes-full",
        &[
            "server:agent-ready",
            "agent:join-to-ready",
            "server:token-not-printed",
            "agent:token-not-in-ps",
        ],
    ),
    (
        "two nodes: pod to pod across nodes",
        "two-nodes-full",
        &["server:pod-to-pod"],
    ),
    (
        "two nodes: Services and DNS from either node's pods",
        "two-nodes-full",
        &["server:agent-pod-services", "server:svc-to-agent-pod"],
    ),
    (
        "two nodes: agent back after the server restarts",
        "two-nodes-full",
        &["server:agent-reconnected"],
    ),
];

/// A markdown table of what works where, from every `outcome.json` under `work` (the last run
/// of each host and mode): `yes`, `no` with the first failed step and its line, or blank (not
/// run); then which run each column comes from, and where its full output is.
pub fn compatibility_table(work: &Path) -> Result<String> {
    let mut outcomes = Vec::new();
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        let file = entry.path().join(OUTCOME_FILE);
        if let Ok(bytes) = std::fs::read(&file) {
            let outcome: Outcome = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged: run the e2e again", file.display()))?;
            outcomes.push(outcome);
        }
    }
    let mut s = String::from("| | ");
    s.push_str(&TABLE_HOSTS.join(" | "));
    s.push_str(
        " |
|---|",
    );
    s.push_str(&"---|".repeat(TABLE_HOSTS.len()));
    s.push('\n');
    for &(question, mode, steps) in TABLE_ROWS {
        s.push_str(&format!("| {question} |"));
        for host in TABLE_HOSTS {
            let cell = match outcomes.iter().find(|o| o.host == host && o.mode == mode) {
                None => String::new(),
                Some(o) => {
                    let status = |name: &str| {
                        o.steps
                            .iter()
                            .find(|(n, _, _)| n == name)
                            .map(|(_, status, _)| status.as_str())
                    };
                    match steps.iter().find(|name| status(name) != Some("ok")) {
                        None => "yes".to_string(),
                        Some(name) => {
                            let detail = o
                                .steps
                                .iter()
                                .find(|(n, _, _)| n == name)
                                .map(|(_, status, detail)| format!("{status} {detail}"))
                                .unwrap_or_else(|| "not reached".into());
                            // The first gap doctor named is why, where it named one.
                            let why = o.gaps.first().map_or(String::new(), |gap| {
                                let gap = gap.split("  ").next().unwrap_or(gap);
                                format!(" (doctor: {gap})")
                            });
                            let detail: String = detail.trim().chars().take(90).collect();
                            format!("no: `{name}` {}{why}", detail.replace('|', "\\|"))
                        }
                    }
                }
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s.push_str("\nRuns:\n");
    let mut runs: Vec<&Outcome> = outcomes.iter().collect();
    runs.sort_by_key(|o| {
        (
            TABLE_HOSTS.iter().position(|h| *h == o.host),
            o.mode.clone(),
        )
    });
    for o in runs {
        s.push_str(&format!(
            "- {} ({}): {}, {}; output in target/k3s-gvisor/e2e/{}/output.log\n",
            o.host,
            o.mode,
            o.finished_at,
            o.runsc_version.as_deref().unwrap_or("no runsc"),
            o.log
                .parent()
                .and_then(|dir| dir.file_name())
                .map_or("?".into(), |dir| dir.to_string_lossy())
        ));
    }
    Ok(s)
}

pub fn render(outcomes: &[Outcome], bundle_size: u64) -> String {
    let mut s = format!(
        "\ne2e summary (bundle {:.1} MiB)\n",
        bundle_size as f64 / (1 << 20) as f64
    );
    for o in outcomes {
        s.push_str(&format!("\n{}\n", o.label));
        for note in &o.notes {
            s.push_str(&format!("  note: {note}\n"));
        }
        for (name, status, detail) in &o.steps {
            s.push_str(&format!(
                "  {status:<8} {name:<22} {}\n",
                detail.chars().take(150).collect::<String>()
            ));
        }
        if !o.times.is_empty() {
            let t: Vec<String> = o.times.iter().map(|(m, v)| format!("{m} {v}s")).collect();
            s.push_str(&format!("  time from extract: {}\n", t.join(", ")));
        }
        if !o.rss.is_empty() {
            let r: Vec<String> = o
                .rss
                .iter()
                .map(|(n, kb)| match kb.parse::<u64>() {
                    Ok(kb) => format!("{n} {:.0} MiB", kb as f64 / 1024.0),
                    Err(_) => format!("{n} {kb}"),
                })
                .collect();
            s.push_str(&format!("  idle RSS: {}\n", r.join(", ")));
        }
        for g in &o.gaps {
            s.push_str(&format!("  known gap (doctor): {g}\n"));
        }
        if o.failed() {
            let tail = crate::fsutil::tail(&o.log, 25).replace('\n', "\n    ");
            // Single node: DIR/run/component-logs; two nodes: DIR/{server,agent}/component-logs.
            let logs = match o.log.with_file_name("run/component-logs") {
                single if single.exists() => single,
                _ => o.log.with_file_name("{server,agent}/component-logs"),
            };
            s.push_str(&format!(
                "  last lines of {}:\n    {tail}\n",
                o.log.display()
            ));
            s.push_str(&format!(
                "  full output: {}; component logs: {}\n",
                o.log.display(),
                logs.display()
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(host: &str, mode: &str, steps: &[(&str, &str, &str)]) -> Outcome {
        Outcome {
            label: host.into(),
            host: host.into(),
            mode: mode.into(),
            finished_at: "2026-11-28T10:00:00Z".into(),
            runsc_version: Some("runsc version test".into()),
            steps: steps
                .iter()
                .map(|(n, s, d)| (n.to_string(), s.to_string(), d.to_string()))
                .collect(),
            times: vec![],
            rss: vec![],
            gaps: vec![],
            notes: vec![],
            log: PathBuf::from(format!("/x/e2e/{host}-{mode}/output.log")),
            gaps_allowed: false,
        }
    }

    #[test]
    fn the_table_says_yes_no_with_the_failed_step_or_nothing() {
        let work = tempfile::tempdir().unwrap();
        for o in [
            outcome(
                "gvisor-current",
                "full",
                &[("install", "ok", ""), ("node-ready", "ok", "")],
            ),
            outcome(
                "gvisor-2023",
                "full",
                &[("install", "FAIL", "rc=1 | no runc")],
            ),
        ] {
            let dir = work.path().join(format!("{}-{}", o.host, o.mode));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec(&o).unwrap()).unwrap();
        }
        let table = compatibility_table(work.path()).unwrap();
        let row = table
            .lines()
            .find(|l| l.starts_with("| install, node Ready |"))
            .unwrap();
        let cells: Vec<&str> = row.split(" | ").collect();
        // | question | plain-linux | gvisor-current | gvisor-2025 | gvisor-2023 | debian |
        assert_eq!(cells[1].trim(), "", "{row}");
        assert_eq!(cells[2].trim(), "yes", "{row}");
        assert!(row.contains("no: `install` FAIL rc=1 \\| no runc"), "{row}");
        assert!(table.contains("- gvisor-current (full): 2026-11-28T10:00:00Z, runsc version test"));
        let with_gap = Outcome {
            gaps: vec!["procfs root is not inode 1   present, NOT handled: ...".into()],
            ..outcome("gvisor-2023", "full", &[("install", "FAIL", "rc=1")])
        };
        std::fs::write(
            work.path().join("gvisor-2023-full").join(OUTCOME_FILE),
            serde_json::to_vec(&with_gap).unwrap(),
        )
        .unwrap();
        let table = compatibility_table(work.path()).unwrap();
        assert!(
            table.contains("rc=1 (doctor: procfs root is not inode 1)"),
            "{table}"
        );
    }
}
