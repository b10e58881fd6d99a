//! `cargo xtask e2e`: the bundle (cached) → extracted into a fresh directory → `./install` and
//! the scenario of tests/e2e/scenario.sh, on this host (in a private network namespace) and
//! inside gVisor (`runsc do -force-overlay=false`: 9p root, loopback-only network) → a summary
//! of every step with timings. Each run keeps its directory and full output under
//! target/k3s-gvisor/e2e/<host>-<mode>/.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the scenario runs.
#[derive(Debug, Clone)]
pub struct Host {
    pub label: String,
    /// None: directly on this machine.
    pub runsc: Option<PathBuf>,
    /// Debian's 2022 gVisor lacks kernel features we cannot work around; there a failing step
    /// is reported with the gaps `doctor` names instead of failing the run.
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

#[derive(Debug)]
pub struct Outcome {
    pub label: String,
    pub steps: Vec<(String, String, String)>,
    pub times: Vec<(String, String)>,
    pub rss: Vec<(String, String)>,
    pub gaps: Vec<String>,
    pub log: PathBuf,
    pub gaps_allowed: bool,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|(_, status, _)| status == "FAIL")
    }
}

pub fn run(
    tarball: &Path,
    work: &Path,
    host: &Host,
    mode: Mode,
    crictl: &Path,
    scenario: &Path,
) -> Result<Outcome> {
    let mode = mode.as_str();
    let dir = work.join(format!("{}-{mode}", host.label));
    crate::fsutil::remove_tree(&dir)?;
    let bundle_parent = dir.join("bundle");
    std::fs::create_dir_all(&bundle_parent)?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(tarball)?));
    archive.set_preserve_permissions(true);
    archive
        .unpack(&bundle_parent)
        .with_context(|| format!("cannot extract {}", tarball.display()))?;
    let bundle = std::fs::read_dir(&bundle_parent)?
        .next()
        .context("empty tarball")??
        .path();
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    // `runsc do` does not carry our environment into the sandbox; a wrapper script does.
    let wrapper = dir.join("e2e.sh");
    std::fs::write(
        &wrapper,
        format!(
            "BUNDLE={}\nRUN={}\nCRICTL={}\nMODE={mode}\nexport BUNDLE RUN CRICTL MODE\n. {}\n",
            bundle.display(),
            run_dir.display(),
            crictl.display(),
            scenario.display()
        ),
    )?;
    let mut cmd = match &host.runsc {
        // A private network namespace: the CNI bridge and pod netns never touch the host's.
        None => {
            let mut c = Command::new("unshare");
            c.args(["--net", "--", "/bin/sh"]);
            c
        }
        Some(runsc) => crate::tools::runsc_sh(runsc),
    };
    crate::ui::step(
        "e2e",
        format!("{} ({mode}): running {}", host.label, wrapper.display()),
    );
    let out = cmd
        .arg(&wrapper)
        .output()
        .context("cannot start the e2e scenario")?;
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.join("output.log");
    std::fs::write(&log, &text)?;
    let mut o = Outcome {
        label: format!("{} ({mode})", host.label),
        steps: vec![],
        times: vec![],
        rss: vec![],
        gaps: vec![],
        log,
        gaps_allowed: host.gaps_allowed,
    };
    for line in text.lines() {
        let mut f = line.splitn(4, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("STEP"), Some(name), Some(status)) => {
                o.steps
                    .push((name.into(), status.into(), f.next().unwrap_or("").into()))
            }
            (Some("TIME"), Some(mark), Some(secs)) => o.times.push((mark.into(), secs.into())),
            (Some("RSS"), Some(name), Some(kb)) => o.rss.push((name.into(), kb.into())),
            _ if line.contains("NOT handled") => o.gaps.push(line.trim().to_string()),
            _ => {}
        }
    }
    if o.steps.is_empty() {
        bail!(
            "the e2e scenario reported no step; output in {}:\n{}",
            o.log.display(),
            crate::fsutil::tail(&o.log, 40)
        );
    }
    Ok(o)
}

pub fn render(outcomes: &[Outcome], bundle_size: u64) -> String {
    let mut s = format!(
        "\ne2e summary (bundle {:.1} MiB)\n",
        bundle_size as f64 / (1 << 20) as f64
    );
    for o in outcomes {
        s.push_str(&format!("\n{}\n", o.label));
        for (name, status, detail) in &o.steps {
            s.push_str(&format!(
                "  {status:<8} {name:<18} {}\n",
                detail.chars().take(150).collect::<String>()
            ));
        }
        if !o.times.is_empty() {
            let t: Vec<String> = o.times.iter().map(|(m, v)| format!("{m} {v}s")).collect();
            s.push_str(&format!("  time from start: {}\n", t.join(", ")));
        }
        if !o.rss.is_empty() {
            let r: Vec<String> = o.rss.iter().map(|(n, kb)| format!("{n} {kb} kB")).collect();
            s.push_str(&format!("  RSS: {}\n", r.join(", ")));
        }
        for g in &o.gaps {
            s.push_str(&format!("  known gap (doctor): {g}\n"));
        }
        if o.failed() {
            let tail = crate::fsutil::tail(&o.log, 25).replace('\n', "\n    ");
            let logs = o.log.with_file_name("run/component-logs");
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
