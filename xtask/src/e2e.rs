//! `cargo xtask e2e`: the bundle tarball (cached) → tests/e2e/scenario.sh, which extracts it,
//! runs `./install` and exercises the result, on this host or inside gVisor, in a sandbox
//! network that looks like a user's (sandbox.rs) → a summary of every step with timings, RSS
//! and the error lines k3s logged (each must be documented in docs/k3s-log.md). Each run keeps
//! its directory and full output under target/k3s-gvisor/e2e/<host>-<mode>/ (all but the
//! bundles it extracted).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::k3s_log;
use crate::sandbox::{self, Limits, Network, Shape};
use e2e_steps::{Node, Status, Step, StepLine, StepName};

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
    /// What runsc is asked for beyond the network (overlay, platform, host network, limits).
    pub shape: Shape,
    /// Why this machine cannot give the host (its probe's measured answer, asked when the
    /// host is resolved, before any bundling): its runs are skips that say so.
    pub skipped: Option<String>,
}

/// Whether this machine can give a host at all, asked of its runsc: `Err(why)`, measured.
pub type Probe = fn(&Path) -> Result<(), String>;

/// Where a host's runsc comes from.
#[derive(Debug, Clone, Copy)]
pub enum Runsc {
    /// Plain Linux: no gVisor.
    None,
    /// A pinned gVisor of tests/tools.toml (`cargo xtask tool NAME`).
    Tool(&'static str),
    /// A runsc found on PATH (Debian's package).
    Path(&'static str),
}

/// One host of `cargo xtask e2e --host NAME`.
pub struct HostDef {
    pub name: &'static str,
    /// The README table's column and the run's directory name.
    pub label: &'static str,
    pub runsc: Runsc,
    pub gaps_allowed: bool,
    pub shape: Shape,
    pub probe: Option<Probe>,
}

const PLAIN_SHAPE: Shape = Shape {
    overlay: None,
    platform: None,
    host_network: false,
    limits: None,
};

/// Every host, in the order users meet them and the README table shows them: plain Linux, the
/// current gVisor as we run it and in the shapes providers give it (issue 26), then older
/// gVisors from newest to oldest. The one list: main.rs resolves `--host` here, the table
/// takes its columns from here.
pub const HOSTS: &[HostDef] = &[
    HostDef {
        name: "plain",
        label: "plain-linux",
        runsc: Runsc::None,
        gaps_allowed: false,
        shape: PLAIN_SHAPE,
        probe: None,
    },
    HostDef {
        name: "current",
        label: "gvisor-current",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: false,
        shape: PLAIN_SHAPE,
        probe: None,
    },
    // runsc's own default: the root filesystem under an overlay whose upper layer is a file
    // beside the root (`self`); every write of the datastore, the content store and the
    // snapshots lands there.
    HostDef {
        name: "current-overlay",
        label: "gvisor-current-overlay",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: false,
        shape: Shape {
            overlay: Some("root:self"),
            ..PLAIN_SHAPE
        },
        probe: None,
    },
    // The upper layer in the sandbox's memory (older runsc's default, `--overlay`).
    HostDef {
        name: "current-overlay-memory",
        label: "gvisor-current-overlay-memory",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: false,
        shape: Shape {
            overlay: Some("root:memory"),
            ..PLAIN_SHAPE
        },
        probe: None,
    },
    HostDef {
        name: "current-ptrace",
        label: "gvisor-current-ptrace",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: false,
        shape: Shape {
            platform: Some("ptrace"),
            ..PLAIN_SHAPE
        },
        probe: None,
    },
    HostDef {
        name: "current-kvm",
        label: "gvisor-current-kvm",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: false,
        shape: Shape {
            platform: Some("kvm"),
            ..PLAIN_SHAPE
        },
        probe: Some(kvm_probe),
    },
    // The sandbox on the network stack of the namespace runsc starts in, as providers that
    // pass the host's network through run it; the namespace is the e2e's own (sandbox.rs).
    // A new network namespace has no IP stack there, so no pod can have a network: install
    // refuses full mode and doctor names the gap (netns-no-ip-stack); control-plane-only runs.
    HostDef {
        name: "current-hostnet",
        label: "gvisor-current-hostnet",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: true,
        shape: Shape {
            host_network: true,
            ..PLAIN_SHAPE
        },
        probe: None,
    },
    // One CPU's quota and 2 GiB: the smallest sandbox the product claims (doctor warns below).
    HostDef {
        name: "current-small",
        label: "gvisor-current-small",
        runsc: Runsc::Tool("runsc"),
        gaps_allowed: false,
        shape: Shape {
            limits: Some(Limits {
                cpu_quota_us: 100_000,
                memory_bytes: 2 << 30,
            }),
            ..PLAIN_SHAPE
        },
        probe: None,
    },
    // May 2025: uname 4.4.0, no setns(CLONE_NEWPID); the patches make the CRI path work.
    HostDef {
        name: "gvisor-2025",
        label: "gvisor-2025",
        runsc: Runsc::Tool("runsc-2025"),
        gaps_allowed: false,
        shape: PLAIN_SHAPE,
        probe: None,
    },
    // The seeds' sandbox: gvisor-2025 without /proc/sys/kernel/cap_last_cap (a patched build,
    // tests/tools.toml); upstream runc fails there, the bundle's runc 0001 does not.
    HostDef {
        name: "seeds",
        label: "seeds",
        runsc: Runsc::Tool("runsc-seeds"),
        gaps_allowed: false,
        shape: PLAIN_SHAPE,
        probe: None,
    },
    // August 2023: runc 1.3.3 cannot start a container there (procfs root inode 75, the
    // CVE-2025-52881 check; docs/patches.md), so its failing steps are known gaps.
    HostDef {
        name: "gvisor-2023",
        label: "gvisor-2023",
        runsc: Runsc::Tool("runsc-2023"),
        gaps_allowed: true,
        shape: PLAIN_SHAPE,
        probe: None,
    },
    HostDef {
        name: "debian",
        label: "gvisor-debian-2022",
        runsc: Runsc::Path("runsc"),
        gaps_allowed: true,
        shape: PLAIN_SHAPE,
        probe: None,
    },
];

/// The host `--host name` names (`tool` builds a pinned runsc and gives its path), or a path
/// to a runsc binary.
pub fn host(name: &str, tool: impl Fn(&str) -> Result<PathBuf>) -> Result<Host> {
    if let Some(def) = HOSTS.iter().find(|h| h.name == name) {
        let runsc = match def.runsc {
            Runsc::None => None,
            Runsc::Tool(tool_name) => Some(tool(tool_name)?),
            Runsc::Path(path) => Some(path.into()),
        };
        let skipped = match (def.probe, runsc.as_deref()) {
            (Some(probe), Some(runsc)) => probe(runsc).err(),
            _ => None,
        };
        return Ok(Host {
            label: def.label.into(),
            runsc,
            gaps_allowed: def.gaps_allowed,
            shape: def.shape,
            skipped,
        });
    }
    if Path::new(name).is_file() {
        return Ok(Host {
            label: "gvisor-custom".into(),
            runsc: Some(PathBuf::from(name)),
            gaps_allowed: false,
            shape: PLAIN_SHAPE,
            skipped: None,
        });
    }
    let names: Vec<&str> = HOSTS.iter().map(|h| h.name).collect();
    bail!(
        "unknown e2e host `{name}`: use {}, or the path of a runsc binary",
        names.join(", ")
    )
}

/// KVM needs /dev/kvm, and a KVM that runsc can run vCPUs on: in this machine's VM /dev/kvm
/// opens and VMs are created, but the sandbox's boot panics setting up vCPU 0 ("error
/// initializing vCPU(id=0) state: error setting system registers: invalid argument").
/// Either failure, measured here with the words the kernel or runsc used, is the skip reason.
fn kvm_probe(runsc: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm does not open: {e}"))?;
    let logs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(runsc)
        .arg("--platform=kvm")
        .arg(format!("--debug-log={}/", logs.path().display()))
        .args(["--network=none", "do", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", runsc.display()))?;
    if out.status.success() {
        return Ok(());
    }
    // The boot's panic is in its debug log; runsc do's stderr only says the sandbox died.
    let panic = std::fs::read_dir(logs.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .find_map(|text| {
            text.lines()
                .find(|l| l.starts_with("panic: "))
                .map(str::to_string)
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "/dev/kvm opens, but `runsc --platform=kvm do true` fails: {}",
        panic.unwrap_or_else(|| stderr.lines().last().unwrap_or("no output").to_string())
    ))
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
    /// The e2e driver (crates/e2e-driver, static): copied into each run's directory, where the
    /// scripts find it as E2E_DRIVER.
    pub driver: &'a Path,
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
    /// The runsc flags of the host's shape (sandbox::Shape::describe).
    #[serde(default)]
    pub shape: String,
    /// Why the host was not run on this machine (its probe failed): the table quotes it.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The sandbox cgroup's peak memory use in bytes, where the shape has limits.
    #[serde(default)]
    pub peak_memory: Option<u64>,
}

impl Outcome {
    /// A run of `host` in `mode` with nothing recorded yet.
    fn new(host: &Host, mode: &str, log: PathBuf) -> Outcome {
        Outcome {
            label: host.label.clone(),
            host: host.label.clone(),
            mode: mode.to_string(),
            finished_at: now_rfc3339(),
            runsc_version: runsc_version(host),
            steps: vec![],
            times: vec![],
            rss: vec![],
            gaps: vec![],
            notes: vec![],
            log,
            gaps_allowed: false,
            shape: host.shape.describe(),
            skipped: None,
            peak_memory: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.steps
            .iter()
            .any(|(_, status, _)| status == Status::Fail.as_str())
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

/// The outcome of a host this machine cannot give (`host.skipped`), saved like a run's.
pub fn skip(work: &Path, host: &Host, mode: Mode) -> Result<Outcome> {
    let mode_name = mode.as_str();
    let why = host.skipped.clone().unwrap_or_default();
    let dir = work.join(format!("{}-{mode_name}", host.label));
    crate::fsutil::remove_tree(&dir)?;
    std::fs::create_dir_all(&dir)?;
    crate::ui::step(
        "e2e",
        format!("{} ({mode_name}): skipped: {why}", host.label),
    );
    let log = dir.join("output.log");
    std::fs::write(&log, format!("skipped: {why}\n"))?;
    let o = Outcome {
        label: format!("{} ({mode_name})", host.label),
        skipped: Some(why),
        ..Outcome::new(host, mode_name, log)
    };
    std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec_pretty(&o)?)?;
    Ok(o)
}

pub fn run(inputs: &Inputs, host: &Host, mode: Mode) -> Result<Outcome> {
    let mode_name = mode.as_str();
    if host.skipped.is_some() {
        return skip(inputs.work, host, mode);
    }
    run_single(
        inputs,
        host,
        mode_name,
        "scenario.sh",
        &[
            ("MODE", mode_name.to_string()),
            (
                "TARBALL_NEXT",
                inputs
                    .tarball_next
                    .map_or(String::new(), |t| t.display().to_string()),
            ),
        ],
        host.gaps_allowed && mode == Mode::Full,
        None,
    )
}

/// What the host does to a running sandbox in a lifecycle run (`cargo xtask e2e --lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lifecycle {
    /// Once the cluster runs: `runsc pause`, the pause's length with nothing run in the
    /// sandbox, `runsc resume`; then the node, the pods, a Service and `kubectl exec` must be
    /// back within 30 s (tests/e2e/lifecycle.sh).
    Pause,
    /// The same with `runsc checkpoint` (the sandbox saved to disk and gone), the pause's
    /// length, then `runsc restore` of that image.
    Checkpoint,
}

impl Lifecycle {
    /// The phase's name in tests/e2e/lifecycle.sh (`LIFECYCLE` and its request lines).
    fn phase(self) -> &'static str {
        match self {
            Lifecycle::Pause => "pause",
            Lifecycle::Checkpoint => "checkpoint",
        }
    }

    /// The step that fails when the host's runsc command does (xtask's own).
    fn runsc_step(self) -> Step {
        match self {
            Lifecycle::Pause => Step::RunscPause,
            Lifecycle::Checkpoint => Step::RunscCheckpoint,
        }
    }

    /// The run's mode in outcome.json and its directory's name.
    pub fn mode_name(self) -> String {
        format!("lifecycle-{}", self.phase())
    }
}

/// tests/e2e/lifecycle.sh in a gVisor sandbox with eth0: when the script prints `LIFECYCLE
/// pause` or `LIFECYCLE checkpoint` (the cluster runs and is checked), the host pauses the
/// sandbox (`runsc pause`) or saves it and lets it go (`runsc checkpoint`), waits `pause`,
/// and resumes (`runsc resume`) or restores it (`runsc restore`); the script, stopped with
/// everything else, sees the clock jump and checks what came back. The runsc commands, their
/// times and errors are the outcome's notes and steps.
pub fn run_lifecycle(
    inputs: &Inputs,
    host: &Host,
    lifecycle: Lifecycle,
    pause: std::time::Duration,
) -> Result<Outcome> {
    if host.runsc.is_none() {
        bail!("--lifecycle needs a gVisor host: it pauses or checkpoints the sandbox with runsc");
    }
    if inputs.network != Network::Interface {
        bail!("--lifecycle needs --network interface: it controls the sandbox `runsc run` made");
    }
    let mode_name = lifecycle.mode_name();
    let image = inputs
        .work
        .join(format!("{}-{mode_name}", host.label))
        .join("checkpoint-image");
    let request = format!("LIFECYCLE {}", lifecycle.phase());
    let mut actions: Vec<(String, Option<String>)> = Vec::new();
    let mut control = |line: &str, sandbox: &sandbox::Sandbox| {
        if line.trim() != request {
            return;
        }
        let started = std::time::Instant::now();
        let result = match lifecycle {
            Lifecycle::Pause => sandbox.runsc(&["pause"]).and_then(|_| {
                crate::ui::step("e2e", format!("sandbox paused for {}s", pause.as_secs()));
                std::thread::sleep(pause);
                sandbox.runsc(&["resume"]).map(|_| String::new())
            }),
            Lifecycle::Checkpoint => std::fs::create_dir_all(&image)
                .map_err(anyhow::Error::from)
                .and_then(|_| {
                    sandbox.runsc(&["checkpoint", &format!("--image-path={}", image.display())])
                })
                .and_then(|_| {
                    let size = bytes_under(&image);
                    crate::ui::step(
                        "e2e",
                        format!(
                            "sandbox checkpointed ({:.0} MiB image), restoring in {}s",
                            size as f64 / (1 << 20) as f64,
                            pause.as_secs()
                        ),
                    );
                    std::thread::sleep(pause);
                    sandbox
                        .restore(&image)
                        .map(|_| format!(", image {:.0} MiB", size as f64 / (1 << 20) as f64))
                }),
        };
        let what = match lifecycle {
            Lifecycle::Pause => "runsc pause, then runsc resume",
            Lifecycle::Checkpoint => "runsc checkpoint, then runsc restore",
        };
        actions.push(match result {
            Ok(extra) => {
                let note = format!(
                    "{what} {:.0?} later, nothing run in the sandbox meanwhile: ok{extra}",
                    started.elapsed()
                );
                crate::ui::step("e2e", &note);
                (note, None)
            }
            Err(e) => {
                crate::ui::step("e2e", format!("{what}: {e:#}"));
                (format!("{what}: {e:#}"), Some(format!("{e:#}")))
            }
        });
    };
    let mut o = run_single(
        inputs,
        host,
        &mode_name,
        "lifecycle.sh",
        &[
            ("LIFECYCLE", lifecycle.phase().to_string()),
            ("PAUSE_SECONDS", pause.as_secs().to_string()),
        ],
        false,
        Some(&mut control),
    )?;
    // The image is the sandbox's memory: gigabytes, of no use once the run is over.
    let _ = crate::fsutil::remove_tree(&image);
    for (note, failure) in actions {
        if let Some(error) = failure {
            o.steps.push((
                lifecycle.runsc_step().to_string(),
                Status::Fail.to_string(),
                error,
            ));
        }
        o.notes.push(note);
    }
    std::fs::write(
        o.log.with_file_name(OUTCOME_FILE),
        serde_json::to_vec_pretty(&o)?,
    )?;
    Ok(o)
}

/// The bytes of the files under `dir` (a checkpoint image: the sandbox's memory and state).
fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// One sandbox running tests/e2e/SCRIPT with TARBALL, RUN, CRICTL and `vars`, in
/// `<work>/<host>-<mode_name>`; `control`, if given, sees each output line with the running
/// sandbox (gVisor, eth0 only).
#[allow(clippy::too_many_arguments)]
fn run_single(
    inputs: &Inputs,
    host: &Host,
    mode_name: &str,
    script_name: &str,
    vars: &[(&str, String)],
    gaps_allowed: bool,
    control: Option<sandbox::Control>,
) -> Result<Outcome> {
    let dir = inputs.work.join(format!("{}-{mode_name}", host.label));
    crate::fsutil::remove_tree(&dir)?;
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let driver = copy_driver(inputs, &dir)?;
    let mut all_vars = vec![
        ("TARBALL", inputs.tarball.display().to_string()),
        ("RUN", run_dir.display().to_string()),
        ("CRICTL", inputs.crictl.display().to_string()),
        ("E2E_DRIVER", driver),
    ];
    all_vars.extend(vars.iter().cloned());
    let script = wrapper(&dir, &inputs.scripts.join(script_name), &all_vars)?;
    crate::ui::step(
        "e2e",
        format!(
            "{} ({mode_name}): running {}",
            host.label,
            inputs.scripts.join(script_name).display()
        ),
    );
    let finished = match (control, host.runsc.as_deref()) {
        (Some(control), Some(runsc)) => {
            sandbox::run_script_controlled(runsc, &script, &dir, control)
        }
        _ => sandbox::run_script(
            host.runsc.as_deref(),
            &host.shape,
            inputs.network,
            &script,
            &dir,
            &mut |_| {},
        ),
    }
    .context("cannot run the e2e scenario")?;
    let mut text = format!("{}\n--- stderr ---\n{}", finished.stdout, finished.stderr);
    if let Some(bytes) = finished.peak_memory {
        text.push_str(&format!(
            "--- sandbox cgroup ---\npeak memory {bytes} bytes ({} MiB)\n",
            bytes >> 20
        ));
    }
    let log = dir.join("output.log");
    std::fs::write(&log, &text)?;
    remove_extracted_bundles(&run_dir)?;
    let network = match finished.network {
        Network::Interface => "eth0 + default route",
        Network::Loopback => "loopback only",
    };
    let shape = match host.shape == Shape::default() {
        true => String::new(),
        false => format!(", {}", host.shape.describe()),
    };
    let mut o = Outcome {
        label: format!("{} ({mode_name}, {network}{shape})", host.label),
        notes: finished.note.into_iter().collect(),
        gaps_allowed,
        peak_memory: finished.peak_memory,
        ..Outcome::new(host, mode_name, log)
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
        o.steps
            .push((Step::Sandbox.to_string(), Status::Fail.to_string(), last));
    }
    if o.steps.is_empty() {
        bail!(
            "the e2e scenario reported no step; output in {}:\n{}",
            o.log.display(),
            crate::fsutil::tail(&o.log, 40)
        );
    }
    if o.steps
        .iter()
        .any(|(name, _, _)| name == Step::K3sLog.as_str())
    {
        o.steps
            .push(k3s_log::step(&k3s_errors, inputs.known_errors)?);
    }
    std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec_pretty(&o)?)?;
    Ok(o)
}

/// Copies the e2e driver into the run's directory `dir`: it runs inside the sandbox from there,
/// as the scripts do (E2E_DRIVER).
fn copy_driver(inputs: &Inputs, dir: &Path) -> Result<String> {
    let driver = dir.join("e2e-driver");
    std::fs::copy(inputs.driver, &driver)
        .with_context(|| format!("cannot copy {}", inputs.driver.display()))?;
    Ok(driver.display().to_string())
}

/// Adds the STEP/TIME/RSS lines and doctor's gaps of one script's output to `o`, each name
/// prefixed with `prefix`; returns its K3SERR lines.
fn parse_lines(stdout: &str, prefix: &str, o: &mut Outcome) -> Vec<String> {
    let mut k3s_errors = Vec::new();
    for line in stdout.lines() {
        let mut f = line.splitn(4, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("STEP"), Some(_), Some(_)) => match StepLine::parse(line) {
                Some(Ok(step)) => o.steps.push((
                    format!("{prefix}{}", step.step),
                    step.status.to_string(),
                    step.detail,
                )),
                // A name or status no script may print (crates/e2e-steps): the run fails,
                // naming the line.
                Some(Err(why)) => o.steps.push((
                    format!("{prefix}{}", Step::UnknownStep),
                    Status::Fail.to_string(),
                    why,
                )),
                None => {}
            },
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
    if host.shape != Shape::default() {
        bail!(
            "{} is a sandbox shape ({}): the shapes run single-node only",
            host.label,
            host.shape.describe()
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
    let driver = copy_driver(inputs, &dir)?;
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
                ("E2E_DRIVER", driver.clone()),
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
    for role in ["server", "agent"] {
        remove_extracted_bundles(&dir.join(role))?;
    }
    let mut o = Outcome {
        label: format!("{} (two nodes: server {mode_name} + agent)", host.label),
        // Its own rows in compatibility_table, apart from the single-node ones.
        ..Outcome::new(host, &format!("two-nodes-{mode_name}"), log)
    };
    for (role, finished) in [("server", &server), ("agent", &agent)] {
        let prefix = format!("{role}:");
        let k3s_errors = parse_lines(&finished.stdout, &prefix, &mut o);
        if !finished.success {
            let last = finished.stderr.lines().last().unwrap_or("no stderr");
            o.steps.push((
                format!("{prefix}{}", Step::Sandbox),
                Status::Fail.to_string(),
                last.to_string(),
            ));
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

/// Removes the bundles a run extracted under its RUN (tests/e2e/lib.sh's `bundle`,
/// upgrade.sh's `bundle-next`) once it is over: about 470 MB each, made again from the
/// tarball by every run. A CI machine's disk ran out with every run's kept (stop 32).
pub fn remove_extracted_bundles(run_dir: &Path) -> Result<()> {
    for name in ["bundle", "bundle-next"] {
        crate::fsutil::remove_tree(&run_dir.join(name))?;
    }
    Ok(())
}

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

/// What a user asks of a host, and the scenario steps that answer it (all must be ok).
const TABLE_ROWS: &[(&str, &str, &[StepName])] = &[
    (
        "control plane (API, kubectl)",
        "control-plane-only",
        &[Step::Readyz.alone(), Step::Configmap.alone()],
    ),
    ("install, node Ready", "full", &[Step::Install.alone(), Step::NodeReady.alone()]),
    (
        "node Ready within 10 s of ./install (the speed goal)",
        "full",
        &[Step::ReadyGoal10s.alone()],
    ),
    ("every blocker handled (doctor)", "full", &[Step::Doctor.alone()]),
    ("pod Running, logs", "full", &[Step::PodRunning.alone(), Step::PodLogs.alone()]),
    ("pods untraced", "full", &[Step::PodUntraced.alone()]),
    ("k3s untraced (no launcher)", "full", &[Step::K3sUntraced.alone()]),
    ("kubectl exec", "full", &[Step::Exec.alone()]),
    ("Deployment (2 replicas)", "full", &[Step::Deployment.alone()]),
    ("stop, start: pods back", "full", &[Step::Start.alone(), Step::PodsBack.alone()]),
    (
        "k3s flags (--, INSTALL_K3S_EXEC), config.yaml(.d), K3S_* kept across a start",
        "full",
        &[Step::K3sFlags.alone(), Step::TlsSan.alone(), Step::StatusK3sSettings.alone(), Step::RefusedFlag.alone(), Step::BadConfigRefused.alone(), Step::EnvKeptAcrossStart.alone()],
    ),
    (
        "kubectl, crictl, ctr in a fresh shell; kubeconfig for a normal user",
        "full",
        &[Step::ToolsFreshShell.alone(), Step::KubeconfigMode.alone(), Step::ToolsRemoved.alone()],
    ),
    (
        "a killed k3s, containerd or svcproxy comes back on its own",
        "full",
        &[Step::RestartK3s.alone(), Step::RestartContainerd.alone(), Step::StatusRestarts.alone()],
    ),
    (
        "images: airgap dir, images import, registries.yaml mirror (TLS + auth), proxy",
        "full",
        &[Step::AirgapImport.alone(), Step::ImagesImport.alone(), Step::RegistriesMirror.alone(), Step::ProxyPull.alone()],
    ),
    (
        "uninstall keeps what bind mounts under the data dir show (plain, stacked, busy)",
        "full",
        &[Step::UninstallKeepsOutsideFiles.alone()],
    ),
    (
        "installed under umask 000: prefix 0755, data dir 0700 (0711 with a kubeconfig others may read)",
        "full",
        &[Step::UmaskModes.alone()],
    ),
    (
        "uninstall leaves nothing",
        "full",
        &[Step::Uninstall.alone(), Step::MountsRestored.alone(), Step::HostFilesRestored.alone(), Step::NothingLeft.alone()],
    ),
    (
        "Services: ClusterIP, DNS, NodePort, scale-down",
        "full",
        &[Step::SvcClusterip.alone(), Step::DnsKubernetes.alone(), Step::SvcDns.alone(), Step::SvcNodeport.alone(), Step::SvcScaleDown.alone()],
    ),
    (
        "LoadBalancer Services: EXTERNAL-IP, answers on the node",
        "full",
        &[Step::LoadbalancerIp.alone()],
    ),
    (
        "local-path storage: PVC bound, data survives a new pod and stop/start",
        "full",
        &[Step::PvcBound.alone(), Step::PvcDataSurvives.alone()],
    ),
    (
        "metrics: kubectl top, an HPA scales",
        "full",
        &[Step::KubectlTop.alone(), Step::HpaScales.alone()],
    ),
    (
        "Helm: a HelmChart (chartContent) installs, upgrades, uninstalls; helm CLI",
        "full",
        &[Step::HelmchartInstalls.alone(), Step::HelmCli.alone()],
    ),
    (
        "Ingress (traefik): hosts routed on the node's port 80",
        "full",
        &[Step::IngressRoutes.alone()],
    ),
    (
        "upgrade in place: cluster kept, downgrade refused",
        "full",
        &[Step::Upgrade.alone(), Step::UpgradeKeepsState.alone(), Step::UpgradeStatus.alone(), Step::DowngradeRefused.alone()],
    ),
    (
        "paused 10 min (runsc pause), resumed: within 30 s node Ready, pods Running, a Service answers, kubectl exec",
        "lifecycle-pause",
        &[Step::PauseResumeReady.alone(), Step::PauseResumePods.alone(), Step::PauseResumeService.alone(), Step::PauseResumeExec.alone()],
    ),
    (
        "checkpointed (runsc checkpoint), restored 10 min later: within 30 s node Ready, pods Running, a Service answers, kubectl exec",
        "lifecycle-checkpoint",
        &[Step::CheckpointRestoreReady.alone(), Step::CheckpointRestorePods.alone(), Step::CheckpointRestoreService.alone(), Step::CheckpointRestoreExec.alone()],
    ),
    (
        "two nodes: an agent joins (K3S_URL, K3S_TOKEN_FILE; no token in ps), Ready",
        "two-nodes-full",
        &[Step::AgentReady.on(Node::Server), Step::JoinToReady.on(Node::Agent), Step::TokenNotPrinted.on(Node::Server), Step::TokenNotInPs.on(Node::Agent)],
    ),
    (
        "two nodes: pod to pod across nodes",
        "two-nodes-full",
        &[Step::PodToPod.on(Node::Server)],
    ),
    (
        "two nodes: Services and DNS from either node's pods",
        "two-nodes-full",
        &[Step::AgentPodServices.on(Node::Server), Step::SvcToAgentPod.on(Node::Server)],
    ),
    (
        "two nodes: agent back after the server restarts",
        "two-nodes-full",
        &[Step::AgentReconnected.on(Node::Server)],
    ),
];

/// A markdown table of what works where, from every `outcome.json` under `work` (the last run
/// of each host and mode): `yes`, `no` with the first failed step and its line, or blank (not
/// run); then which run each column comes from, and where its full output is.
/// What an earlier generated table said (the text between its markers in README.md or
/// BENCHMARKS.md): regenerating keeps it for every host this machine has no outcome for, since a
/// machine holds only its own runs and the tables gather many machines' and sandboxes'.
#[derive(Debug, Default)]
pub struct EarlierTable {
    /// (the row's first cell, the column's header) → the cell.
    cells: std::collections::BTreeMap<(String, String), String>,
    /// The row's first cell → the whole row.
    rows: std::collections::BTreeMap<String, String>,
    /// The run lines under a table, `- HOST (MODE): ...`, with their (host, mode).
    runs: Vec<((String, String), String)>,
}

impl EarlierTable {
    pub fn parse(text: &str) -> EarlierTable {
        let mut earlier = EarlierTable::default();
        let mut header: Option<Vec<String>> = None;
        for line in text.lines() {
            if let Some(run) = line.strip_prefix("- ") {
                let host = run.split(" (").next().unwrap_or_default();
                let mode = run
                    .split_once(" (")
                    .and_then(|(_, rest)| rest.split_once("):"))
                    .map_or("", |(mode, _)| mode);
                earlier
                    .runs
                    .push(((host.to_string(), mode.to_string()), line.to_string()));
                continue;
            }
            if !line.starts_with('|') || line.starts_with("|---") {
                continue;
            }
            let cells = row_cells(line);
            let Some(columns) = &header else {
                header = Some(cells);
                continue;
            };
            let key = cells.first().cloned().unwrap_or_default();
            for (column, cell) in columns.iter().zip(&cells).skip(1) {
                earlier
                    .cells
                    .insert((key.clone(), column.clone()), cell.clone());
            }
            earlier.rows.insert(key, line.to_string());
        }
        earlier
    }

    fn cell(&self, row: &str, column: &str) -> String {
        self.cells
            .get(&(row.to_string(), column.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

/// The cells of a markdown table row, trimmed: `| a | b \| c |` is `a` and `b \| c` (a cell's
/// own pipes are escaped).
fn row_cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '|' if !escaped => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
        escaped = c == '\\';
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}

pub fn compatibility_table(work: &Path, earlier: &EarlierTable) -> Result<String> {
    let mut outcomes = Vec::new();
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        let file = entry.path().join(OUTCOME_FILE);
        if let Ok(bytes) = std::fs::read(&file) {
            let outcome: Outcome = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged: run the e2e again", file.display()))?;
            outcomes.push(outcome);
        }
    }
    let columns: Vec<&str> = HOSTS.iter().map(|h| h.label).collect();
    let mut s = String::from("| | ");
    s.push_str(&columns.join(" | "));
    s.push_str(
        " |
|---|",
    );
    s.push_str(&"---|".repeat(columns.len()));
    s.push('\n');
    for &(question, mode, steps) in TABLE_ROWS {
        s.push_str(&format!("| {question} |"));
        for &host in &columns {
            let cell = match outcomes.iter().find(|o| o.host == host && o.mode == mode) {
                None => earlier.cell(question, host),
                Some(Outcome {
                    skipped: Some(why), ..
                }) => {
                    let why: String = why.chars().take(160).collect();
                    format!("skipped: {}", why.replace('|', "\\|"))
                }
                Some(o) => {
                    let status = |name: &str| {
                        o.steps
                            .iter()
                            .find(|(n, _, _)| n == name)
                            .map(|(_, status, _)| status.as_str())
                    };
                    let names: Vec<String> = steps.iter().map(ToString::to_string).collect();
                    match names
                        .iter()
                        .find(|name| status(name) != Some(Status::Ok.as_str()))
                    {
                        None => "yes".to_string(),
                        Some(name) => {
                            let detail = o
                                .steps
                                .iter()
                                .find(|(n, _, _)| n == name)
                                .map(|(_, status, detail)| format!("{status} {detail}"))
                                .unwrap_or_else(|| {
                                    // Not reached: the sandbox's own failure is why, if any.
                                    match o
                                        .steps
                                        .iter()
                                        .find(|(n, _, _)| n == Step::Sandbox.as_str())
                                    {
                                        Some((_, _, died)) => format!("not reached: {died}"),
                                        None => "not reached".into(),
                                    }
                                });
                            // The first gap doctor named is why, where it named one.
                            let why = o.gaps.first().map_or(String::new(), |gap| {
                                let gap = gap.split("  ").next().unwrap_or(gap);
                                format!(" (doctor: {gap})")
                            });
                            let detail: String = detail.trim().chars().take(160).collect();
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
    let mut lines: Vec<(Option<usize>, String, String)> = Vec::new();
    for o in &outcomes {
        let shape = match o.shape.as_str() {
            "" | "--overlay2=none" => String::new(),
            shape => format!(" ({shape})"),
        };
        let peak = o.peak_memory.map_or(String::new(), |bytes| {
            format!(", sandbox peak memory {} MiB", bytes >> 20)
        });
        let line = format!(
            "- {} ({}): {}, {}{shape}{peak}; output in target/k3s-gvisor/e2e/{}/output.log",
            o.host,
            o.mode,
            o.finished_at,
            o.runsc_version.as_deref().unwrap_or("no runsc"),
            o.log
                .parent()
                .and_then(|dir| dir.file_name())
                .map_or("?".into(), |dir| dir.to_string_lossy())
        );
        let position = columns.iter().position(|h| *h == o.host);
        lines.push((position, o.mode.clone(), line));
    }
    for ((host, mode), line) in &earlier.runs {
        if !outcomes.iter().any(|o| &o.host == host && &o.mode == mode) {
            let position = columns.iter().position(|h| h == host);
            lines.push((position, mode.clone(), line.clone()));
        }
    }
    lines.sort();
    for (_, _, line) in lines {
        s.push_str(&line);
        s.push('\n');
    }
    Ok(s)
}

/// Node Ready and memory in each sandbox shape, from the full-mode `outcome.json` of every host
/// (issue 26: the figures of each shape from one `cargo xtask e2e --host ...` run): node Ready
/// after `./install` (the `ready-within-60s` step), the idle RSS of the install's programs (the
/// scenario's RSS lines), and the sandbox's peak memory where its cgroup tells it.
pub fn shapes_table(work: &Path, earlier: &EarlierTable) -> Result<String> {
    let mut s = String::from(
        "| host | sandbox | run | node Ready after ./install | idle RSS of the install's programs | sandbox peak memory |\n|---|---|---|---|---|---|\n",
    );
    for def in HOSTS {
        let file = work.join(format!("{}-full", def.label)).join(OUTCOME_FILE);
        let Ok(bytes) = std::fs::read(&file) else {
            if let Some(row) = earlier.rows.get(def.label) {
                s.push_str(row);
                s.push('\n');
            }
            continue;
        };
        let o: Outcome = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged: run the e2e again", file.display()))?;
        let ready = o
            .steps
            .iter()
            .find(|(name, status, _)| {
                name == Step::ReadyWithin60s.as_str() && status == Status::Ok.as_str()
            })
            .and_then(|(_, _, detail)| detail.split_whitespace().nth(2))
            .map_or("no (README's table says why)".to_string(), |secs| {
                secs.to_string()
            });
        let rss_kb: u64 = o
            .rss
            .iter()
            .filter_map(|(_, kb)| kb.parse::<u64>().ok())
            .sum();
        let rss = match rss_kb {
            0 => "-".to_string(),
            kb => format!("{} MiB", kb >> 10),
        };
        let peak = o
            .peak_memory
            .map_or("-".to_string(), |bytes| format!("{} MiB", bytes >> 20));
        let shape = match o.runsc_version {
            None => "none (plain Linux)".to_string(),
            Some(_) => format!("`{}`", o.shape),
        };
        s.push_str(&format!(
            "| {} | {shape} | {} | {ready} | {rss} | {peak} |\n",
            o.host, o.finished_at
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
        if let Some(why) = &o.skipped {
            s.push_str(&format!("  skipped: {why}\n"));
        }
        for (name, status, detail) in &o.steps {
            // A failure's detail in full: it is what CI's log shows of why.
            let shown = match status.as_str() {
                "FAIL" => detail.clone(),
                _ => detail.chars().take(150).collect::<String>(),
            };
            s.push_str(&format!("  {status:<8} {name:<22} {shown}\n"));
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
        if let Some(bytes) = o.peak_memory {
            s.push_str(&format!(
                "  sandbox peak memory (its cgroup's high-water mark): {} MiB\n",
                bytes >> 20
            ));
        }
        for g in &o.gaps {
            s.push_str(&format!("  known gap (doctor): {g}\n"));
        }
        if o.failed() {
            let log = std::fs::read_to_string(&o.log).unwrap_or_default();
            for (step, after) in printed_after_failures(&log, 30) {
                s.push_str(&format!(
                    "  printed after {step} FAIL:\n    {}\n",
                    after.join("\n    ")
                ));
            }
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

/// For each failed step in a run's output, the step's name and up to `max` lines printed after
/// it, up to the next step: where a step prints what it saw (pods, events) when it fails.
fn printed_after_failures(log: &str, max: usize) -> Vec<(String, Vec<String>)> {
    let lines: Vec<&str> = log.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("STEP") {
            continue;
        }
        let (Some(step), Some("FAIL")) = (words.next(), words.next()) else {
            continue;
        };
        let after: Vec<String> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("STEP "))
            .take(max)
            .map(|l| l.to_string())
            .collect();
        if !after.is_empty() {
            found.push((step.to_string(), after));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_steps_diagnostics_are_the_lines_up_to_the_next_step() {
        let log = "STEP a ok\nnoise\nSTEP b FAIL why\nNAME READY\npod-1 0/1\nSTEP c ok\n\
                   STEP d FAIL\nSTEP e ok\n";
        assert_eq!(
            printed_after_failures(log, 30),
            vec![(
                "b".to_string(),
                vec!["NAME READY".to_string(), "pod-1 0/1".to_string()]
            )]
        );
        assert_eq!(printed_after_failures(log, 1)[0].1, vec!["NAME READY"]);
    }

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
            shape: String::new(),
            skipped: None,
            peak_memory: None,
        }
    }

    #[test]
    fn a_skipped_host_quotes_why_in_every_row() {
        let work = tempfile::tempdir().unwrap();
        let o = Outcome {
            skipped: Some("/dev/kvm opens, but `runsc --platform=kvm do true` fails: panic".into()),
            ..outcome("gvisor-current-kvm", "full", &[])
        };
        let dir = work.path().join("gvisor-current-kvm-full");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec(&o).unwrap()).unwrap();
        let table = compatibility_table(work.path(), &EarlierTable::default()).unwrap();
        let column = HOSTS
            .iter()
            .position(|h| h.label == "gvisor-current-kvm")
            .unwrap();
        let row = table
            .lines()
            .find(|l| l.starts_with("| install, node Ready |"))
            .unwrap();
        let cells: Vec<&str> = row.split(" | ").collect();
        assert!(
            cells[column + 1].starts_with("skipped: /dev/kvm opens"),
            "{row}"
        );
        assert!(!o.failed());
    }

    #[test]
    fn regenerating_keeps_the_cells_and_runs_of_hosts_without_a_new_outcome() {
        let work = tempfile::tempdir().unwrap();
        let fresh = outcome("plain-linux", "full", &[]);
        let dir = work.path().join("plain-linux-full");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OUTCOME_FILE), serde_json::to_vec(&fresh).unwrap()).unwrap();
        // An earlier table, from other machines: seeds said no (with an escaped pipe in its
        // cell), plain-linux yes; and their run lines.
        let empty = compatibility_table(work.path(), &EarlierTable::default()).unwrap();
        let seeds = HOSTS.iter().position(|h| h.label == "seeds").unwrap();
        let plain = HOSTS.iter().position(|h| h.label == "plain-linux").unwrap();
        let mut earlier_text = String::new();
        for line in empty.lines() {
            if line.starts_with("| install, node Ready |") {
                let mut cells = row_cells(line);
                cells[seeds + 1] = "no: `install` FAIL a \\| b".into();
                cells[plain + 1] = "yes".into();
                earlier_text.push_str(&format!("| {} |\n", cells.join(" | ")));
            } else if line.starts_with("- ") {
                continue;
            } else {
                earlier_text.push_str(line);
                earlier_text.push('\n');
            }
        }
        earlier_text.push_str("- seeds (full): 2026-11-01T00:00:00Z, old runsc\n");
        earlier_text.push_str("- plain-linux (full): 2026-11-01T00:00:00Z, no runsc\n");
        let earlier = EarlierTable::parse(&earlier_text);
        let table = compatibility_table(work.path(), &earlier).unwrap();
        let row = table
            .lines()
            .find(|l| l.starts_with("| install, node Ready |"))
            .unwrap();
        let cells = row_cells(row);
        assert_eq!(cells[seeds + 1], "no: `install` FAIL a \\| b", "{row}");
        // plain-linux has a new outcome (it failed: no steps), so its old "yes" is gone.
        assert!(cells[plain + 1].starts_with("no: `install`"), "{row}");
        assert!(
            table.contains("- seeds (full): 2026-11-01T00:00:00Z, old runsc"),
            "{table}"
        );
        assert!(
            !table.contains("- plain-linux (full): 2026-11-01"),
            "{table}"
        );
        assert!(table.contains("- plain-linux (full): "), "{table}");

        let shapes = "| host | sandbox | run |\n|---|---|---|\n| seeds | `x` | then |\n";
        let shapes = shapes_table(work.path(), &EarlierTable::parse(shapes)).unwrap();
        assert!(shapes.contains("| seeds | `x` | then |"), "{shapes}");
        assert!(shapes.contains("| plain-linux | "), "{shapes}");
    }

    #[test]
    fn step_lines_are_parsed_as_steps_and_an_unknown_name_fails_the_run() {
        let mut o = outcome("gvisor-current", "full", &[]);
        let errors = parse_lines(
            "STEP install ok \nSTEP ready-goal-10s MISS 12.1s over\nTIME installed 3.5\n\
             K3SERR E1206 x\nSTEP no-such-step ok\nRSS k3s 100 1 process(es)\n",
            "",
            &mut o,
        );
        assert_eq!(errors, ["E1206 x"]);
        let steps: Vec<(&str, &str, &str)> = o
            .steps
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_str(), d.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("install", "ok", ""),
                ("ready-goal-10s", "MISS", "12.1s over"),
                (
                    "unknown-step",
                    "FAIL",
                    "\"no-such-step\" is no e2e step (crates/e2e-steps: Step)"
                ),
            ]
        );
        assert!(o.failed());
        let mut two = outcome("gvisor-current", "two-nodes-full", &[]);
        parse_lines("STEP agent-ready ok joined\n", "server:", &mut two);
        assert_eq!(
            two.steps[0].0,
            Step::AgentReady.on(Node::Server).to_string()
        );
    }

    #[test]
    fn host_names_and_columns_are_unique() {
        for (i, a) in HOSTS.iter().enumerate() {
            for b in &HOSTS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.label, b.label);
            }
        }
        assert!(host("current-small", |_| Ok(PathBuf::from("/r")))
            .unwrap()
            .shape
            .limits
            .is_some());
        assert!(host("no-such-host", |_| Ok(PathBuf::from("/r"))).is_err());
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
        let table = compatibility_table(work.path(), &EarlierTable::default()).unwrap();
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
        let table = compatibility_table(work.path(), &EarlierTable::default()).unwrap();
        assert!(
            table.contains("rc=1 (doctor: procfs root is not inode 1)"),
            "{table}"
        );
    }
}
