//! The soak `cargo xtask soak` runs (was tests/e2e/soak.sh's checks and samples); the script
//! keeps the extract, the install and the order:
//!   `deployment`  deployment  a 2-replica busybox Deployment `soak` Available within 120 s;
//!   `samples --minutes M --interval I`  (no step) one line per INTERVAL seconds for MINUTES
//!                 minutes, which xtask (xtask/src/soak.rs) parses and judges:
//!                 `SAMPLE <seconds> ready=<True|False|unknown> k3s=<pid> containerd=<pid>
//!                  k3s_kb=<kB> containerd_kb=<kB> restarts=<sum of the pods' restart counts>`.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::{ok_or_fail, procs, Run};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Phase {
    /// deployment: the Deployment the soak keeps running.
    Deployment,
    /// A SAMPLE line every INTERVAL seconds for MINUTES minutes.
    Samples {
        #[arg(long)]
        minutes: u64,
        #[arg(long)]
        interval: u64,
    },
}

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    match phase {
        Phase::Deployment => {
            let image = match image_ref(&run.bundle, "busybox") {
                Ok(image) => format!("--image={image}"),
                Err(e) => {
                    run.step(Step::Deployment, Status::Fail, format!("{e:#}"));
                    return Ok(());
                }
            };
            let up = run.kubectl_ok(&[
                "create",
                "deployment",
                "soak",
                &image,
                "--replicas=2",
                "--",
                "sleep",
                "100000",
            ]) && run.kubectl_ok(&[
                "wait",
                "--for=condition=Available",
                "deployment/soak",
                "--timeout=120s",
            ]);
            let detail = if up { "2/2 available" } else { "" };
            run.step(Step::Deployment, ok_or_fail(up), detail);
        }
        Phase::Samples { minutes, interval } => samples(run, minutes, interval),
    }
    Ok(())
}

/// Samples on a fixed schedule (start + k * INTERVAL), however long each sample takes.
fn samples(run: &Run, minutes: u64, interval: u64) {
    let start = SystemTime::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut next = start;
    while next < end {
        next += Duration::from_secs(interval);
        println!("{}", sample(run));
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if let Ok(wait) = next.duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// One SAMPLE line, now.
fn sample(run: &Run) -> String {
    let ready = run
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .unwrap_or_default();
    let restarts = run
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{range .status.containerStatuses[*]}{.restartCount}{\" \"}{end}{end}",
        ])
        .unwrap_or_default();
    let k3s = procs::daemon_pid_of_keeper(&run.data_dir, &run.prefix, "k3s");
    let containerd = procs::daemon_pid_of_keeper(&run.data_dir, &run.prefix, "containerd");
    sample_line(
        run.now(),
        ready.trim(),
        [k3s, containerd].map(|pid| (pid, pid.and_then(procs::rss_kb))),
        sum_restarts(&restarts),
    )
}

/// The SAMPLE line as soak.sh printed it: a pid that is gone is `none`, its RSS empty.
fn sample_line(
    seconds: f64,
    ready: &str,
    [(k3s, k3s_kb), (containerd, containerd_kb)]: [(Option<i32>, Option<u64>); 2],
    restarts: u64,
) -> String {
    let pid = |p: Option<i32>| p.map_or("none".to_string(), |p| p.to_string());
    let kb = |k: Option<u64>| k.map_or(String::new(), |k| k.to_string());
    format!(
        "SAMPLE {seconds:.1} ready={} k3s={} containerd={} k3s_kb={} containerd_kb={} restarts={restarts}",
        if ready.is_empty() { "unknown" } else { ready },
        pid(k3s),
        pid(containerd),
        kb(k3s_kb),
        kb(containerd_kb),
    )
}

/// The restart counts kubectl printed, space-separated, summed (0 when kubectl failed).
fn sum_restarts(counts: &str) -> u64 {
    counts
        .split_whitespace()
        .filter_map(|c| c.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_summed_over_every_container() {
        assert_eq!(sum_restarts("0 2 1 "), 3);
        assert_eq!(sum_restarts(""), 0);
    }

    #[test]
    fn a_sample_line_is_what_xtask_parses() {
        assert_eq!(
            sample_line(
                12.34,
                "True",
                [(Some(51), Some(500_000)), (Some(14), Some(70_000))],
                0
            ),
            "SAMPLE 12.3 ready=True k3s=51 containerd=14 k3s_kb=500000 containerd_kb=70000 \
             restarts=0"
        );
        assert_eq!(
            sample_line(1.0, "", [(None, None), (Some(14), None)], 2),
            "SAMPLE 1.0 ready=unknown k3s=none containerd=14 k3s_kb= containerd_kb= restarts=2"
        );
    }
}
