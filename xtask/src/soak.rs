//! `cargo xtask soak --minutes N`: one full-mode install in a sandbox (sandbox.rs) running a
//! 2-replica Deployment, sampled every 10 s (tests/e2e/soak.sh, the e2e driver's `soak
//! samples`: node Ready, the k3s and containerd pids, their RSS, the pods' restart counts);
//! then a summary. Not part of CI: the 30-minute figures are in BENCHMARKS.md.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::e2e::{self, Host};
use crate::k3s_log;
use crate::sandbox::{self, Network};

/// Seconds between samples.
pub const INTERVAL_SECONDS: u32 = 10;

/// One `SAMPLE` line of soak.sh.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub ready: bool,
    pub k3s_pid: Option<u32>,
    pub containerd_pid: Option<u32>,
    pub k3s_kb: Option<u64>,
    pub containerd_kb: Option<u64>,
    pub restarts: u64,
}

/// `SAMPLE 12.3 ready=True k3s=51 containerd=14 k3s_kb=500000 containerd_kb=70000 restarts=0`.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let mut words = line.strip_prefix("SAMPLE ")?.split(' ');
    let seconds = words.next()?.parse().ok()?;
    let mut sample = Sample {
        seconds,
        ready: false,
        k3s_pid: None,
        containerd_pid: None,
        k3s_kb: None,
        containerd_kb: None,
        restarts: 0,
    };
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key {
            "ready" => sample.ready = value == "True",
            "k3s" => sample.k3s_pid = value.parse().ok(),
            "containerd" => sample.containerd_pid = value.parse().ok(),
            "k3s_kb" => sample.k3s_kb = value.parse().ok(),
            "containerd_kb" => sample.containerd_kb = value.parse().ok(),
            "restarts" => sample.restarts = value.parse().ok()?,
            _ => {}
        }
    }
    Some(sample)
}

/// How often a daemon's pid differed from the sample before (or it was gone).
fn daemon_restarts(pids: impl Iterator<Item = Option<u32>>) -> usize {
    let pids: Vec<Option<u32>> = pids.collect();
    pids.windows(2)
        .filter(|w| w[1].is_none() || w[0] != w[1])
        .count()
        + usize::from(pids.first().is_some_and(Option::is_none))
}

/// min / median / max in MiB, and the change from the first to the last sample.
fn rss_figures(values: &[u64]) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mib = |kb: u64| kb as f64 / 1024.0;
    format!(
        "min {:.0} / median {:.0} / max {:.0} MiB, first {:.0} -> last {:.0} MiB",
        mib(sorted[0]),
        mib(sorted[sorted.len() / 2]),
        mib(sorted[sorted.len() - 1]),
        mib(values[0]),
        mib(values[values.len() - 1])
    )
}

pub fn summary(label: &str, minutes: u32, samples: &[Sample], k3s_log_step: &str) -> String {
    let ready = samples.iter().filter(|s| s.ready).count();
    let k3s: Vec<u64> = samples.iter().filter_map(|s| s.k3s_kb).collect();
    let containerd: Vec<u64> = samples.iter().filter_map(|s| s.containerd_kb).collect();
    let pod_restarts = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => last.restarts.saturating_sub(first.restarts),
        _ => 0,
    };
    format!(
        "\nsoak summary: {label}, {minutes} min, a sample every {INTERVAL_SECONDS} s\n\
         \x20 samples:              {}\n\
         \x20 node Ready:           {ready} of {}\n\
         \x20 k3s restarts:         {}\n\
         \x20 containerd restarts:  {}\n\
         \x20 pod container restarts: {pod_restarts}\n\
         \x20 RSS k3s:              {}\n\
         \x20 RSS containerd:       {}\n\
         \x20 k3s log:              {k3s_log_step}\n",
        samples.len(),
        samples.len(),
        daemon_restarts(samples.iter().map(|s| s.k3s_pid)),
        daemon_restarts(samples.iter().map(|s| s.containerd_pid)),
        rss_figures(&k3s),
        rss_figures(&containerd),
    )
}

/// Runs the soak and prints its summary; an error when the node was not Ready in every sample,
/// a daemon restarted, or a pod container restarted.
#[allow(clippy::too_many_arguments)]
pub fn run(
    tarball: &Path,
    work: &Path,
    scripts: &Path,
    driver: &Path,
    known_errors: &Path,
    host: &Host,
    network: Network,
    minutes: u32,
) -> Result<()> {
    let dir = work.join(format!("soak-{}", host.label));
    crate::fsutil::remove_tree(&dir)?;
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    // The e2e driver (crates/e2e-driver) makes soak.sh's checks and samples (`driver soak`).
    let copied = dir.join("e2e-driver");
    std::fs::copy(driver, &copied).with_context(|| format!("cannot copy {}", driver.display()))?;
    let script = e2e::wrapper(
        &dir,
        &scripts.join("soak.sh"),
        &[
            ("TARBALL", tarball.display().to_string()),
            ("RUN", run_dir.display().to_string()),
            ("MINUTES", minutes.to_string()),
            ("INTERVAL", INTERVAL_SECONDS.to_string()),
            ("E2E_DRIVER", copied.display().to_string()),
        ],
    )?;
    crate::ui::step(
        "soak",
        format!("{}: {minutes} min, output in {}", host.label, dir.display()),
    );
    let finished = sandbox::run_script(
        host.runsc.as_deref(),
        &host.shape,
        network,
        &script,
        &dir,
        &mut |l| {
            if l.starts_with("SAMPLE ") || l.starts_with("STEP ") || l.starts_with("TIME ") {
                eprintln!("  {l}");
            }
        },
    )?;
    std::fs::write(
        dir.join("output.log"),
        format!("{}\n--- stderr ---\n{}", finished.stdout, finished.stderr),
    )?;
    let samples: Vec<Sample> = finished.stdout.lines().filter_map(parse_sample).collect();
    let errors: Vec<String> = finished
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("K3SERR ").map(str::to_string))
        .collect();
    let (_, status, detail) = k3s_log::step(&errors, known_errors)?;
    let failed_steps: Vec<&str> = finished
        .stdout
        .lines()
        .filter(|l| l.starts_with("STEP ") && l.contains(" FAIL"))
        .collect();
    eprint!(
        "{}",
        summary(
            &host.label,
            minutes,
            &samples,
            &format!("{status}: {detail}")
        )
    );
    let healthy = finished.success
        && !samples.is_empty()
        && samples.iter().all(|s| s.ready)
        && daemon_restarts(samples.iter().map(|s| s.k3s_pid)) == 0
        && daemon_restarts(samples.iter().map(|s| s.containerd_pid)) == 0
        && samples.first().map(|s| s.restarts) == samples.last().map(|s| s.restarts);
    if !failed_steps.is_empty() || !healthy {
        bail!(
            "soak failed ({}); output in {}",
            if failed_steps.is_empty() {
                "see the summary".to_string()
            } else {
                failed_steps.join("; ")
            },
            dir.join("output.log").display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_and_missing_values_stay_missing() {
        let s = parse_sample(
            "SAMPLE 12.5 ready=True k3s=51 containerd=14 k3s_kb=500000 containerd_kb=70000 restarts=1",
        )
        .unwrap();
        assert_eq!(s.seconds, 12.5);
        assert!(s.ready);
        assert_eq!(
            (s.k3s_pid, s.k3s_kb, s.restarts),
            (Some(51), Some(500000), 1)
        );
        let s = parse_sample(
            "SAMPLE 1.0 ready=unknown k3s=none containerd=14 k3s_kb= containerd_kb=1 restarts=0",
        )
        .unwrap();
        assert!(!s.ready);
        assert_eq!((s.k3s_pid, s.k3s_kb), (None, None));
        assert!(parse_sample("STEP x ok").is_none());
    }

    #[test]
    fn a_changed_or_missing_pid_counts_as_a_restart() {
        assert_eq!(daemon_restarts([Some(1), Some(1), Some(1)].into_iter()), 0);
        assert_eq!(daemon_restarts([Some(1), Some(2), Some(2)].into_iter()), 1);
        assert_eq!(daemon_restarts([Some(1), None, Some(1)].into_iter()), 2);
        assert_eq!(daemon_restarts([None, Some(1)].into_iter()), 2);
    }
}
