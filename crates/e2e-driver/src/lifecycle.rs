//! What an idle agent or IDE sandbox goes through (was tests/e2e/lifecycle.sh's checks, for
//! `cargo xtask e2e --lifecycle pause|checkpoint`). One phase per call; the script keeps the
//! extract, the install and the order of the phases:
//!   `workload`           node-ready      the node Ready within 60 s;
//!                        workload        the client pod e2e-busybox and a two-replica echo
//!                                        Deployment (crate::echo) behind a ClusterIP Service
//!                                        `echo`, every pod Ready, the Deployment Available;
//!                        service-before  the ClusterIP answers the client pod within 60 s;
//!                        then `TIME workload-running`.
//!   `phase pause|checkpoint --pause-seconds N`: prints `LIFECYCLE <phase>` (xtask, e2e.rs,
//!                        pauses or checkpoints the whole sandbox from outside, this process
//!                        with it, and resumes or restores it N s later), sees the resume as a
//!                        jump of the wall clock, marks `TIME resumed|restored`, and checks,
//!                        each within 30 s of the resume, as pause-resume-* or
//!                        checkpoint-restore-*:
//!                        -ready    the kubelet renewed its node Lease after the resume and
//!                                  the node is Ready (the Ready condition alone would still
//!                                  say True from before); FAIL when no jump was seen;
//!                        -pods     every pod of the default namespace Running and Ready;
//!                        -exec     `kubectl exec` into the client pod;
//!                        -service  the Service answers the client pod from both endpoints.
//!                        lifecycle FAIL for a phase that is neither.
//!   `still-ready`        node-still-ready  20 s later the node is still Ready (nothing flaps
//!                                          back once the controllers catch up).

use std::time::Duration;

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::echo::{self, echo_workload, is_answer, until, until_ok};
use crate::{last_line, ok_or_fail, Run, CLIENT_POD};

/// Everything must be back within this many seconds of the resume.
const BACK_WITHIN: u64 = 30;

/// The echo Deployment and Service the phases ask (crate::echo).
const ECHO: &str = "echo";

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Phase {
    /// node-ready, workload, service-before.
    Workload,
    /// Asks the host for PHASE (pause or checkpoint) and checks what came back.
    #[command(name = "phase")]
    Host {
        phase: String,
        /// How long the host keeps the sandbox paused or saved (PAUSE_SECONDS).
        #[arg(long)]
        pause_seconds: u64,
    },
    /// node-still-ready.
    StillReady,
}

/// A host phase's names: its steps' prefix, the TIME mark at the resume, what the host does
/// to come back (for the failure when it was never seen), and the heading.
struct Names {
    steps: [Step; 4],
    mark: &'static str,
    back: &'static str,
    heading: &'static str,
}

fn names(phase: &str) -> Option<Names> {
    match phase {
        "pause" => Some(Names {
            steps: [
                Step::PauseResumeReady,
                Step::PauseResumePods,
                Step::PauseResumeExec,
                Step::PauseResumeService,
            ],
            mark: "resumed",
            back: "pause",
            heading: "pause: the host pauses this sandbox for {} s",
        }),
        "checkpoint" => Some(Names {
            steps: [
                Step::CheckpointRestoreReady,
                Step::CheckpointRestorePods,
                Step::CheckpointRestoreExec,
                Step::CheckpointRestoreService,
            ],
            mark: "restored",
            back: "restore",
            heading: "checkpoint: the host saves this sandbox (runsc checkpoint) and restores \
                      it {} s later",
        }),
        _ => None,
    }
}

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    match phase {
        Phase::Workload => workload(run),
        Phase::Host {
            phase,
            pause_seconds,
        } => match names(&phase) {
            Some(names) => host_phase(run, &phase, &names, pause_seconds),
            None => run.step(
                Step::Lifecycle,
                Status::Fail,
                format!("unknown lifecycle phase {phase}"),
            ),
        },
        Phase::StillReady => {
            std::thread::sleep(Duration::from_secs(20));
            let ready = run.kubectl_ok(&[
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                "--timeout=10s",
            ]);
            let detail = match ready {
                true => String::new(),
                false => run.kubectl_merged(&["get", "nodes", "--no-headers"]),
            };
            run.step(Step::NodeStillReady, ok_or_fail(ready), detail);
        }
    }
    Ok(())
}

fn workload(run: &Run) {
    run.node_ready_step();
    let busybox = image_ref(&run.bundle, "busybox").unwrap_or_else(|e| {
        eprintln!("{e:#}");
        String::new()
    });
    let image = format!("--image={busybox}");
    let _ = run.kubectl_ok(&[
        "run",
        CLIENT_POD,
        &image,
        "--image-pull-policy=Never",
        "--command",
        "--",
        "sleep",
        "36000",
    ]);
    if let Err(e) = run.kubectl_apply(&echo_workload(ECHO, 2, &busybox)) {
        eprintln!("{e:#}");
    }
    let running = run.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "--all",
        "--timeout=120s",
    ]) && run.kubectl_ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/echo",
        "--timeout=60s",
    ]);
    match running {
        true => {
            let pods = run.kubectl_text(&["get", "pods", "--no-headers"]);
            let n = pods.lines().filter(|l| !l.is_empty()).count();
            run.step(Step::Workload, Status::Ok, format!("{n} pods Ready"));
        }
        false => {
            run.step(Step::Workload, Status::Fail, "");
            println!("{}", run.kubectl_text(&["get", "pods", "-o", "wide"]));
        }
    }
    let ip = cluster_ip(run);
    run.verdict(
        Step::ServiceBefore,
        match echo::get_until_answer(run, &ip, 80, Duration::from_secs(60)) {
            Ok(a) => Ok(format!("{ip} answered: {a}")),
            Err(a) => Err(format!("no answer from {ip}:80: {a}")),
        },
    );
    run.mark("workload-running");
}

fn cluster_ip(run: &Run) -> String {
    run.kubectl_text(&["get", "service", ECHO, "-o", "jsonpath={.spec.clusterIP}"])
}

/// The jump of the clock between two one-second sleeps that is taken for the resume: half the
/// pause, at least 20 s (a loaded sandbox may lag a few seconds, never that much).
fn jump_gap(pause_seconds: u64) -> u64 {
    (pause_seconds / 2).max(20)
}

/// What one tick of the resume watch found.
#[derive(Debug, PartialEq, Eq)]
enum Watch {
    /// The clock jumped: the resume, at this second.
    Resumed(u64),
    /// The watch's time is up (PAUSE_SECONDS + 300 s after it started).
    GaveUp,
    Waiting,
}

/// Compares the clock after a one-second sleep (`now`) with the one before (`prev`).
fn tick(prev: u64, now: u64, gap: u64, give_up: u64) -> Watch {
    if now.saturating_sub(prev) >= gap {
        Watch::Resumed(now)
    } else if now >= give_up {
        Watch::GaveUp
    } else {
        Watch::Waiting
    }
}

/// Seconds since the epoch at which the clock first jumped by [`jump_gap`] or more between two
/// one-second sleeps, the first from STARTED: the resume. None PAUSE_SECONDS + 300 s after it
/// started.
fn wait_for_resume(pause_seconds: u64, started: u64) -> Option<u64> {
    let gap = jump_gap(pause_seconds);
    let mut prev = started;
    let give_up = prev + pause_seconds + 300;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = crate::unix_now();
        match tick(prev, now, gap, give_up) {
            Watch::Resumed(t) => return Some(t),
            Watch::GaveUp => return None,
            Watch::Waiting => prev = now,
        }
    }
}

/// Asks the host for PHASE and waits for the sandbox to come back: then marks the time and
/// checks everything is back; else fails the -ready step, saying no resume was seen.
fn host_phase(run: &Run, phase: &str, names: &Names, pause_seconds: u64) {
    println!(
        "== {}",
        names.heading.replace("{}", &pause_seconds.to_string())
    );
    // Asked before the pause: after the resume every second counts against BACK_WITHIN.
    let node = run.kubectl_text(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let ip = cluster_ip(run);
    // The clock before the request: the host may pause the sandbox as soon as the line is out,
    // and a first reading taken after the resume would see no jump.
    let started = crate::unix_now();
    // xtask acts on this line as it arrives: it must leave now, not at exit.
    println!("LIFECYCLE {phase}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match wait_for_resume(pause_seconds, started) {
        Some(resumed) => {
            run.mark(names.mark);
            back_after(run, names, &node, &ip, resumed, pause_seconds);
        }
        None => run.step(
            names.steps[0],
            Status::Fail,
            format!(
                "no {} seen: the clock never jumped by {} s (see the notes: runsc {phase})",
                names.back,
                pause_seconds / 2
            ),
        ),
    }
}

/// The node's Lease renewTime and Ready condition, as the API gives them (empty if not).
fn lease_and_ready(run: &Run, node: &str) -> (String, String) {
    let renew = run
        .kubectl(&[
            "-n",
            "kube-node-lease",
            "get",
            "lease",
            node,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
        .unwrap_or_default();
    let ready = run
        .kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .unwrap_or_default();
    (renew.trim().to_string(), ready.trim().to_string())
}

/// The Lease was renewed at or after RESUMED (epoch seconds; renewTime is RFC 3339 with
/// microseconds, compared by its whole second as `date -d ... +%s` did) and the node is Ready.
fn node_back(renew: &str, ready: &str, resumed: u64) -> bool {
    let renewed =
        chrono::DateTime::parse_from_rfc3339(renew).is_ok_and(|t| t.timestamp() >= resumed as i64);
    renewed && ready == "True"
}

/// `kubectl get pods --no-headers`: how many pods, and their RESTARTS column summed (`1 (5m
/// ago)` counts 1).
fn pod_tally(pods: &str) -> (usize, u64) {
    pods.lines()
        .filter(|l| !l.trim().is_empty())
        .fold((0, 0), |(n, r), line| {
            let restarts = line
                .split_whitespace()
                .nth(3)
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
            (n + 1, r + restarts)
        })
}

/// kubectl's table on one line for a step's detail (`tr -s ' ' | tr '\n' ';'`).
fn one_line(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            format!(
                "{};",
                l.split(' ')
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect()
}

/// Adds ANSWER to SEEN if it is an answer not seen yet (the endpoints that answered).
fn add_endpoint(seen: &mut Vec<String>, answer: &str) {
    if is_answer(answer) && !seen.iter().any(|s| s == answer) {
        seen.push(answer.to_string());
    }
}

/// Checks that everything is back within BACK_WITHIN seconds of the resume at RESUMED.
fn back_after(run: &Run, names: &Names, node: &str, ip: &str, resumed: u64, pause: u64) {
    let deadline = resumed + BACK_WITHIN;
    let since = || crate::unix_now().saturating_sub(resumed);
    // At least one try of each: the deadline may be spent by the time a check starts.
    let left = || Duration::from_secs(deadline.saturating_sub(crate::unix_now()));
    let [ready_step, pods_step, exec_step, service_step] = names.steps;

    let mut last = (String::new(), String::new());
    let back = until(left(), Duration::from_secs(1), || {
        last = lease_and_ready(run, node);
        node_back(&last.0, &last.1, resumed).then_some(())
    });
    run.verdict(
        ready_step,
        match back {
            Some(()) => Ok(format!(
                "Lease renewed and node Ready {} s after the resume (paused {pause} s)",
                since()
            )),
            None => Err(format!(
                "after {} s: Lease renewTime {}, Ready {}",
                since(),
                if last.0.is_empty() { "none" } else { &last.0 },
                if last.1.is_empty() {
                    "unknown"
                } else {
                    &last.1
                },
            )),
        },
    );

    let timeout = format!("--timeout={}s", left().as_secs().max(1));
    let pods_ready = run
        .kubectl(&["wait", "--for=condition=Ready", "pod", "--all", &timeout])
        .is_ok();
    run.verdict(
        pods_step,
        match pods_ready {
            true => {
                let (n, restarts) = pod_tally(&run.kubectl_text(&["get", "pods", "--no-headers"]));
                Ok(format!(
                    "{n} pods Running and Ready, {restarts} restart(s) {} s after the resume",
                    since()
                ))
            }
            false => Err(one_line(&run.kubectl_merged(&[
                "get",
                "pods",
                "--no-headers",
            ]))),
        },
    );

    let exec = until_ok(left(), Duration::from_secs(1), || {
        match run.in_client(&["echo", "exec-works"]) {
            Ok(out) if out.trim_end_matches('\n') == "exec-works" => Ok(()),
            Ok(out) | Err(out) => Err(out),
        }
    });
    run.verdict(
        exec_step,
        match exec {
            Ok(()) => Ok(format!("{} s after the resume", since())),
            Err(out) => Err(last_line(&out).to_string()),
        },
    );

    // No pause between requests: each is a kubectl exec, slow enough.
    let mut seen: Vec<String> = Vec::new();
    let mut answer = String::new();
    let _ = until(left(), Duration::ZERO, || {
        answer = run.get_in_client(ip, 80);
        add_endpoint(&mut seen, &answer);
        (seen.len() >= 2).then_some(())
    });
    run.verdict(
        service_step,
        match seen.len() >= 2 {
            true => Ok(format!(
                "{ip} answered from {} {} s after the resume",
                seen.join(" "),
                since()
            )),
            false => Err(format!(
                "answers from [{}] by {} s: {answer}",
                seen.join(" "),
                since()
            )),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_is_a_jump_of_half_the_pause_and_at_least_20_s() {
        assert_eq!(jump_gap(120), 60);
        assert_eq!(jump_gap(30), 20);
        let gap = jump_gap(120);
        assert_eq!(tick(1000, 1001, gap, 1420), Watch::Waiting);
        // A loaded sandbox's sleep of 1 s that took 15 s is no resume.
        assert_eq!(tick(1000, 1015, gap, 1420), Watch::Waiting);
        assert_eq!(tick(1000, 1060, gap, 1420), Watch::Resumed(1060));
        assert_eq!(tick(1419, 1420, gap, 1420), Watch::GaveUp);
        // A jump on the last tick is still the resume.
        assert_eq!(tick(1300, 1420, gap, 1420), Watch::Resumed(1420));
        // The clock stepped back: no jump.
        assert_eq!(tick(1000, 900, gap, 1420), Watch::Waiting);
    }

    #[test]
    fn the_node_is_back_when_its_lease_was_renewed_after_the_resume_and_it_is_ready() {
        // 2026-12-06T23:00:00Z
        let resumed = 1_796_598_000;
        assert!(node_back("2026-12-06T23:00:00.000000Z", "True", resumed));
        assert!(node_back("2026-12-06T23:00:07.512345Z", "True", resumed));
        // Renewed before the pause: the Lease is stale even though Ready still says True.
        assert!(!node_back("2026-12-06T22:59:59.999999Z", "True", resumed));
        assert!(!node_back(
            "2026-12-06T23:00:07.512345Z",
            "Unknown",
            resumed
        ));
        assert!(!node_back("", "True", resumed));
    }

    #[test]
    fn pods_are_counted_with_their_restarts() {
        let pods = "e2e-busybox            1/1   Running   0             5m\n\
                    echo-6d4cf56db6-2x9qz  1/1   Running   2 (40s ago)   5m\n\
                    echo-6d4cf56db6-8mzkl  1/1   Running   1             5m\n";
        assert_eq!(pod_tally(pods), (3, 3));
        assert_eq!(pod_tally(""), (0, 0));
        assert_eq!(
            one_line("echo-a   0/1   Pending   0   5s\ne2e-busybox   1/1   Running   0   5m"),
            "echo-a 0/1 Pending 0 5s;e2e-busybox 1/1 Running 0 5m;"
        );
    }

    #[test]
    fn the_service_needs_two_different_endpoints() {
        let mut seen = Vec::new();
        add_endpoint(&mut seen, "echo-a");
        add_endpoint(&mut seen, "echo-a");
        add_endpoint(&mut seen, "nc: timed out");
        add_endpoint(&mut seen, "");
        assert_eq!(seen, ["echo-a"]);
        add_endpoint(&mut seen, "echo-b");
        assert_eq!(seen, ["echo-a", "echo-b"]);
    }

    #[test]
    fn each_host_phase_has_its_steps() {
        assert_eq!(names("pause").unwrap().steps[3], Step::PauseResumeService);
        assert_eq!(names("checkpoint").unwrap().mark, "restored");
        assert!(names("suspend").is_none());
    }
}
