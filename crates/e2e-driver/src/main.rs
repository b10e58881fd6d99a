//! `e2e-driver`: the e2e's assertions, in Rust, run inside the sandbox next to the install they
//! check. `cargo xtask e2e` builds it static (as the runtime crates) and copies it into each
//! run's directory (`E2E_DRIVER`); tests/e2e/lib.sh's `driver` calls it with the run's paths.
//!
//! It asks the install through `./install status --json` (the installer's sentences only for
//! what it does not report: a user's own `--disable` of an add-on, addons.rs) and the cluster
//! through the prefix's kubectl, and prints each result as a `STEP` line exactly as
//! lib.sh's `step` does (crates/e2e-steps: the names are one enum), so xtask's parser is the
//! same for shell and driver. A subcommand per script it replaces:
//!   settings prepare|steps|before-restart|after-restart|cleanup   (was k3s-settings.sh)
//!   upgrade --next TARBALL                                         (was upgrade.sh)
//!   faults                                                         (was faults.sh)
//!   addons before-stop|steps                                       (was addons.sh)
//!   helm                                                           (was helm.sh)
//!   images --http-proxy tests/e2e/http-proxy.py                    (was images.sh)
//!   ingress                                                        (was ingress.sh)
//!   services                                                       (was services.sh's steps)
//!   two-nodes --shared DIR --mode MODE join-command|server-steps|agent-uninstalled|join|
//!             agent-steps --install-start SECS|server-done        (was two-nodes.sh's checks)
//!   teardown before|stop|uninstall|restored CHECK...               (scenario.sh's and
//!                                                                   two-nodes.sh's teardown)
//!   k3s-log [--lines-only]                                         (lib.sh's k3s_errors, step)
//!   lifecycle workload|phase pause|checkpoint --pause-seconds N|still-ready
//!                                                                  (was lifecycle.sh's checks)
//!   soak deployment|samples --minutes M --interval I               (was soak.sh's)
//!   scenario installed --mode M --install-start SECS [--kubeconfig-644]|k3s-failed|
//!            checks --mode M [--kubeconfig-644]|stop|start|back|delete|
//!            no-k3s --mode M [--crictl PATH]|second-install --mode M  (was scenario.sh's steps)
//!   mounts before-uninstall|after-uninstall                        (was mounts.sh; its
//!                                                                   umask-modes is in
//!                                                                   `scenario installed`)

mod addons;
mod bundle;
mod echo;
mod faults;
mod helm;
mod images;
mod ingress;
mod lifecycle;
mod mounts;
mod procs;
mod scenario;
mod services;
mod settings;
mod soak;
mod teardown;
mod two_nodes;
mod upgrade;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use e2e_steps::{Status, Step, StepLine};

#[derive(Parser)]
#[command(
    name = "e2e-driver",
    about = "The e2e's assertions, inside the sandbox"
)]
struct Cli {
    #[command(flatten)]
    run: Run,
    #[command(subcommand)]
    command: Cmd,
}

/// The run's paths, as lib.sh names them.
#[derive(clap::Args, Clone, Debug)]
pub struct Run {
    /// The install's prefix (lib.sh: P).
    #[arg(long)]
    prefix: PathBuf,
    /// The install's data dir (lib.sh: D).
    #[arg(long)]
    data_dir: PathBuf,
    /// The run's directory (RUN): step-times, scratch.
    #[arg(long)]
    run: PathBuf,
    /// The extracted bundle whose ./install the steps run (BUNDLE). Empty before the scripts
    /// extracted it (`teardown before` runs first, as the shell's snapshots did).
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from))]
    bundle: PathBuf,
    /// The run's start, seconds since the epoch (lib.sh: T0), for step-times.
    #[arg(long)]
    t0: f64,
}

#[derive(Subcommand)]
enum Cmd {
    /// What a k3s user brings for k3s: flags, INSTALL_K3S_EXEC, config files, K3S_* (issue 23).
    Settings {
        #[command(subcommand)]
        phase: settings::Phase,
    },
    /// Upgrade in place with the next bundle, then the refused downgrade (was upgrade.sh).
    Upgrade {
        /// The same bundle with the next version (TARBALL_NEXT).
        #[arg(long)]
        next: Option<PathBuf>,
    },
    /// Each daemon killed with SIGKILL comes back by its keeper alone (was faults.sh).
    Faults,
    /// k3s's add-ons a user expects to work: local-path volumes, metrics, HPA (was addons.sh).
    Addons {
        #[command(subcommand)]
        phase: addons::Phase,
    },
    /// A HelmChart with chartContent through helm-controller, and the helm CLI (was helm.sh).
    Helm,
    /// The airgap images dir, registries.yaml's mirror, the pull proxy, `images import` (was
    /// images.sh).
    Images {
        /// tests/e2e/http-proxy.py, the proxy CONTAINERD_HTTPS_PROXY names.
        #[arg(long)]
        http_proxy: PathBuf,
    },
    /// An Ingress through k3s's traefik add-on (was ingress.sh).
    Ingress,
    /// Services and cluster DNS: ClusterIP, CoreDNS, NodePort, LoadBalancer, scale-down (was
    /// services.sh's `services_steps`).
    Services,
    /// A server and an agent in two sandboxes (two-nodes.sh's checks), one phase per call.
    TwoNodes {
        /// The directory both sandboxes see (SHARED): the join command, the hand-offs.
        #[arg(long)]
        shared: PathBuf,
        /// The server's mode (MODE: full | control-plane-only).
        #[arg(long)]
        mode: String,
        #[command(subcommand)]
        phase: two_nodes::Phase,
    },
    /// Stop, uninstall and the host as before (scenario.sh's and two-nodes.sh's end).
    Teardown {
        #[command(subcommand)]
        phase: teardown::Phase,
    },
    /// k3s's error lines as `K3SERR` lines, and the step k3s-log (xtask judges the lines).
    K3sLog {
        /// The lines without the step (soak.sh: `xtask soak` judges them itself).
        #[arg(long)]
        lines_only: bool,
    },
    /// An idle sandbox paused or checkpointed by the host, one phase per call (was
    /// lifecycle.sh's checks).
    Lifecycle {
        #[command(subcommand)]
        phase: lifecycle::Phase,
    },
    /// `cargo xtask soak`'s Deployment and samples (was soak.sh's).
    Soak {
        #[command(subcommand)]
        phase: soak::Phase,
    },
    /// scenario.sh's own steps, one phase per call (its start-up stays in the script).
    Scenario {
        #[command(subcommand)]
        phase: scenario::Phase,
    },
    /// Bind mounts pointing outside the install, around the uninstall (was mounts.sh's).
    Mounts {
        #[command(subcommand)]
        phase: mounts::Phase,
    },
    /// lib.sh's `install_stamped`: each line of standard input with the seconds since T0 in
    /// front (`[12.3] line`). One process for the whole output: a shell loop spawning `date`
    /// and `awk` per line took ~30 ms of CPU a line in gVisor, beside the install it timed,
    /// and stamped a burst of lines late, 0.1 s apart.
    Stamp,
}

/// Copies `input` to `output` line by line, each line stamped with [`Run::now`] as it is read,
/// to one decimal as lib.sh's `now` prints it; bytes pass as they are (no UTF-8 needed).
fn stamp_lines(
    run: &Run,
    mut input: impl std::io::BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    while input.read_until(b'\n', &mut line)? > 0 {
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        write!(output, "[{:.1}] ", run.now())?;
        output.write_all(&line)?;
        output.flush()?;
        line.clear();
    }
    Ok(())
}

/// The client pod the scenario and lifecycle run (e2e-busybox): busybox, sleeping.
const CLIENT_POD: &str = "e2e-busybox";

impl Run {
    /// Prints a step as lib.sh's `step` does and adds it to RUN/step-times (the run's timeline).
    pub fn step(&self, step: Step, status: Status, detail: impl Into<String>) {
        let line = StepLine::new(step, status, detail);
        println!("{line}");
        let _ = std::io::stdout().flush();
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.join("step-times"))
            .and_then(|mut f| writeln!(f, "{:.1} {step} {status}", self.now()));
    }

    /// `ok` with `detail` when `result` is Ok, else `FAIL` with its error.
    pub fn verdict(&self, step: Step, result: Result<String, String>) {
        match result {
            Ok(detail) => self.step(step, Status::Ok, detail),
            Err(detail) => self.step(step, Status::Fail, detail),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Seconds since T0, as lib.sh's `now`.
    pub fn now(&self) -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            - self.t0
    }

    /// lib.sh's `mark`: `TIME NAME <seconds since T0>`.
    pub fn mark(&self, name: &str) {
        println!("TIME {name} {:.1}", self.now());
        let _ = std::io::stdout().flush();
    }

    /// RUN/install.out: the stamped output of this run's ./install (for what `status --json`
    /// does not report).
    pub fn install_out(&self) -> String {
        std::fs::read_to_string(self.run.join("install.out")).unwrap_or_default()
    }

    pub fn k3s_log(&self) -> PathBuf {
        self.data_dir.join("logs/k3s.log")
    }

    /// `PREFIX/bin/kubectl --kubeconfig DATA/kubeconfig.yaml ARGS`: stdout, or the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl_output(args)?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Run::kubectl`]'s process output, whatever its exit status (a `get` of several objects
    /// prints those it found and fails on the others).
    pub fn kubectl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        self.kubectl_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run kubectl")
    }

    /// `PREFIX/bin/kubectl --kubeconfig DATA/kubeconfig.yaml`, for the caller's arguments.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.prefix.join("bin/kubectl"));
        cmd.arg("--kubeconfig").arg(self.kubeconfig());
        cmd
    }

    /// kubectl ARGS as the scripts' `$($K ARGS 2>&1)`: stdout without its trailing newlines, or
    /// the error, for a step's detail or the log.
    pub fn kubectl_text(&self, args: &[&str]) -> String {
        match self.kubectl(args) {
            Ok(out) => out.trim_end_matches('\n').to_string(),
            Err(e) => format!("{e:#}"),
        }
    }

    /// [`Run::kubectl_text`] in namespace NS.
    pub fn kubectl_text_in(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        self.kubectl_text(&all)
    }

    /// kubectl ARGS succeeded (its error printed, if any).
    pub fn kubectl_ok(&self, args: &[&str]) -> bool {
        self.kubectl(args).map_err(|e| eprintln!("{e:#}")).is_ok()
    }

    /// `$(kubectl ARGS 2>&1)`: stdout then stderr, whatever the exit status, without the
    /// trailing newlines (an exec's own error output is what a failed step quotes).
    pub fn kubectl_merged(&self, args: &[&str]) -> String {
        let merged = match self.kubectl_merged_status(args) {
            Ok(text) | Err(text) => text,
        };
        merged.trim_end_matches('\n').to_string()
    }

    /// kubectl ARGS run `2>&1`: its stdout then its stderr, Ok when kubectl exits 0, else Err
    /// with the same text (or why kubectl could not run).
    fn kubectl_merged_status(&self, args: &[&str]) -> Result<String, String> {
        match self.kubectl_output(args) {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                if out.status.success() {
                    Ok(text)
                } else {
                    Err(text)
                }
            }
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// `kubectl apply -f -` of YAML.
    pub fn kubectl_apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_apply_args(&[], &[], yaml)
    }

    /// `kubectl -n NAMESPACE apply -f -` of YAML.
    pub fn kubectl_apply_in(&self, namespace: &str, yaml: &str) -> Result<()> {
        self.kubectl_apply_args(&["-n", namespace], &[], yaml)
    }

    /// `kubectl -n NAMESPACE apply --dry-run=server -f -` of YAML: the API server validates and
    /// admits it, and stores nothing.
    pub fn kubectl_apply_dry_run_in(&self, namespace: &str, yaml: &str) -> Result<()> {
        self.kubectl_apply_args(&["-n", namespace], &["--dry-run=server"], yaml)
    }

    /// `kubectl ARGS apply EXTRA -f -` of YAML.
    fn kubectl_apply_args(&self, args: &[&str], extra: &[&str], yaml: &str) -> Result<()> {
        let mut child = self
            .kubectl_command()
            .args(args)
            .arg("apply")
            .args(extra)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl apply: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The step node-ready: every node Ready within 60 s (`kubectl wait`).
    pub fn node_ready_step(&self) {
        let ready = self.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=60s",
        ]);
        self.step(Step::NodeReady, ok_or_fail(ready), "");
    }

    /// The node's Ready condition is True now.
    pub fn node_ready(&self) -> bool {
        self.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .is_ok_and(|s| s.trim() == "True")
    }

    /// `kubectl exec e2e-busybox -- ARGS` (the shell's `in_client`, which ran it `2>&1`): its
    /// stdout then its stderr (so busybox nc's own errors come through, as in the shell), Ok
    /// when kubectl exits 0, else Err with the same text.
    pub fn in_client(&self, args: &[&str]) -> Result<String, String> {
        self.in_pod(CLIENT_POD, args)
    }

    /// [`Run::in_client`] in pod POD.
    pub fn in_pod(&self, pod: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["exec", pod, "--"];
        all.extend(args);
        self.kubectl_merged_status(&all)
    }

    /// An HTTP GET of HOST:PORT from the client pod e2e-busybox (the shell's `get`): the
    /// response's last line (the answering pod's name), busybox nc's error, or `error: ...`
    /// when kubectl exec failed (crate::echo: nc, not wget; no `tail` in the pod).
    pub fn get_in_client(&self, host: &str, port: u16) -> String {
        self.get_in_pod(CLIENT_POD, host, port, 3)
    }

    /// [`Run::get_in_client`] from pod POD, nc waiting up to WAIT seconds.
    pub fn get_in_pod(&self, pod: &str, host: &str, port: u16, wait: u32) -> String {
        let script = format!("{} | {}", echo::nc_get("nc", host, port, wait), echo::BODY);
        match self.in_pod(pod, &["sh", "-c", &script]) {
            Ok(out) => out.trim().to_string(),
            Err(out) => format!("error: {}", out.trim()),
        }
    }

    /// `BUNDLE/install ARGS` as a user runs it: its exit code and its output (stdout then
    /// stderr, as `2>&1` would mostly give).
    pub fn install(&self, args: &[&str]) -> Result<(i32, String)> {
        self.install_with(&self.bundle, args)
    }

    /// [`Run::install`] from another extracted bundle.
    pub fn install_with(&self, bundle: &std::path::Path, args: &[&str]) -> Result<(i32, String)> {
        let out = Command::new(bundle.join("install"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}/install", bundle.display()))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// `./install status --json`: the install as the installer reports it (its exit status is 1
    /// when something is down; the JSON is printed all the same). Also the raw text.
    pub fn status(&self) -> Result<(serde_json::Value, String)> {
        self.status_with(&self.bundle)
    }

    /// [`Run::status`] with the `install` of another extracted bundle.
    pub fn status_with(&self, bundle: &std::path::Path) -> Result<(serde_json::Value, String)> {
        let out = Command::new(bundle.join("install"))
            .args(["status", "--json", "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .context("cannot run ./install status --json")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(&text).with_context(|| {
            format!(
                "./install status --json printed no JSON ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        Ok((json, text))
    }
}

/// The last line of `text` (trimmed), as the scripts' `tail -n 1` quotes a failure.
pub fn last_line(text: &str) -> &str {
    text.trim_end().lines().last().unwrap_or("").trim()
}

/// Seconds since the epoch, as `date +%s`: the wall clock, which jumps over a pause of the
/// sandbox (a monotonic clock may not count the time it was stopped).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `date -u +%Y-%m-%dT%H:%M:%SZ` of Unix seconds: the form kubectl prints pods' start times in.
pub fn rfc3339_utc(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .expect("a u64 epoch second fits chrono's range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The last `n` lines of `text`, one per line (`tail -n N`).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `ok` or `FAIL`.
pub fn ok_or_fail(ok: bool) -> Status {
    match ok {
        true => Status::Ok,
        false => Status::Fail,
    }
}

/// The first `n` characters (`cut -c1-N`).
pub fn first_chars(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Settings { phase } => settings::run(&cli.run, phase),
        Cmd::Upgrade { next } => upgrade::run(&cli.run, next.as_deref()),
        Cmd::Faults => faults::run(&cli.run),
        Cmd::Addons { phase } => addons::run(&cli.run, phase),
        Cmd::Helm => helm::run(&cli.run),
        Cmd::Images { http_proxy } => images::run(&cli.run, &http_proxy),
        Cmd::Ingress => ingress::run(&cli.run),
        Cmd::Services => services::run(&cli.run),
        Cmd::TwoNodes {
            shared,
            mode,
            phase,
        } => two_nodes::run(&cli.run, &shared, &mode, phase),
        Cmd::Teardown { phase } => teardown::run(&cli.run, phase),
        Cmd::K3sLog { lines_only } => teardown::k3s_log(&cli.run, lines_only),
        Cmd::Lifecycle { phase } => lifecycle::run(&cli.run, phase),
        Cmd::Soak { phase } => soak::run(&cli.run, phase),
        Cmd::Scenario { phase } => scenario::run(&cli.run, phase),
        Cmd::Mounts { phase } => mounts::run(&cli.run, phase),
        Cmd::Stamp => stamp_lines(&cli.run, std::io::stdin().lock(), std::io::stdout().lock())
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("e2e-driver: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_date_u_does() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_796_569_845), "2026-12-06T15:10:45Z");
    }

    #[test]
    fn a_step_goes_to_step_times_with_its_time_since_t0() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run {
            prefix: dir.path().join("p"),
            data_dir: dir.path().join("d"),
            run: dir.path().to_path_buf(),
            bundle: dir.path().join("b"),
            t0: 0.0,
        };
        run.step(Step::K3sFlags, Status::Ok, "x");
        let times = std::fs::read_to_string(dir.path().join("step-times")).unwrap();
        let (secs, rest) = times.trim().split_once(' ').unwrap();
        assert!(secs.parse::<f64>().unwrap() > 1.0e9, "{times}");
        assert_eq!(rest, "k3s-flags ok");
        assert_eq!(last_line("a\nb \n\n"), "b");
        assert_eq!(first_chars("abcdef", 3), "abc");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 8), "a");
        assert_eq!(ok_or_fail(true), Status::Ok);
        assert_eq!(ok_or_fail(false), Status::Fail);
    }

    #[test]
    fn every_line_is_stamped_with_its_seconds_since_t0_bytes_kept() {
        // T0 an hour ago: every stamp reads 3600.x (`parse` gives T0 0: `now` is the epoch's).
        let parsed = parse("", &["stamp"]).unwrap().run;
        let run = Run {
            t0: parsed.now() - 3600.0,
            ..parsed
        };
        let mut out = Vec::new();
        stamp_lines(&run, &b"first\n\xffraw\nlast, no newline"[..], &mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, rest) in lines
            .iter()
            .zip(["first", "\u{fffd}raw", "last, no newline"])
        {
            let (stamp, after) = line.strip_prefix('[').unwrap().split_once("] ").unwrap();
            assert!(stamp.starts_with("360"), "{line}");
            assert_eq!(stamp.split_once('.').unwrap().1.len(), 1, "{line}");
            assert_eq!(after, rest);
        }
        assert!(out.ends_with(b"no newline\n"));
    }

    /// ARGS after the run's paths (BUNDLE empty: before the extract), as lib.sh's `driver`.
    fn parse(bundle: &str, args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec![
            "e2e-driver",
            "--prefix",
            "/p",
            "--data-dir",
            "/d",
            "--run",
            "/r",
            "--bundle",
            bundle,
            "--t0",
            "1",
        ];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
    }

    /// The scripts' calls parse: lifecycle.sh's and soak.sh's.
    #[test]
    fn the_lifecycle_and_soak_calls_parse() {
        let parse = |args: &[&str]| parse("/b", args).map(|c| c.command);
        assert!(matches!(
            parse(&["lifecycle", "phase", "pause", "--pause-seconds", "120"]),
            Ok(Cmd::Lifecycle {
                phase: lifecycle::Phase::Host {
                    pause_seconds: 120,
                    ..
                }
            })
        ));
        assert!(parse(&["lifecycle", "phase", "pause"]).is_err());
        assert!(matches!(
            parse(&["k3s-log", "--lines-only"]),
            Ok(Cmd::K3sLog { lines_only: true })
        ));
        assert!(matches!(
            parse(&["teardown", "stop", "--stop-only"]),
            Ok(Cmd::Teardown {
                phase: teardown::Phase::Stop { stop_only: true }
            })
        ));
        assert!(matches!(
            parse(&["soak", "samples", "--minutes", "30", "--interval", "10"]),
            Ok(Cmd::Soak {
                phase: soak::Phase::Samples {
                    minutes: 30,
                    interval: 10
                }
            })
        ));
    }

    #[test]
    fn an_empty_bundle_is_taken_before_the_extract() {
        let cli = parse("", &["teardown", "before"]).unwrap();
        assert_eq!(cli.run.bundle, PathBuf::new());
    }
}
