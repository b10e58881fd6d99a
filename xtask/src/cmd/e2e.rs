//! `cargo xtask e2e`: resolve the hosts, build the bundle (and the next one for the upgrade
//! steps), run the scenario or the lifecycle run on each host and mode, summarize.

use super::Ctx;
use crate::e2e::{self, Lifecycle, Mode, Topology};
use crate::{next_bundle, sandbox, tools, ui};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct E2eArgs {
    /// Where: `plain` (this host), `current` (gVisor built from the module proxy), the
    /// current gVisor in the shapes providers give it (`current-overlay`,
    /// `current-overlay-memory`, `current-ptrace`, `current-kvm`, `current-hostnet`,
    /// `current-small`), `gvisor-2025` / `gvisor-2023` (older gVisors users run, built from
    /// the module proxy: tests/tools.toml, docs/gvisor-generations.md), `seeds` (gvisor-2025
    /// without cap_last_cap: the seeds' provider's sandbox), `debian` (Debian's 2022 runsc),
    /// or a path to a runsc binary. The list: xtask/src/e2e.rs HOSTS.
    #[arg(long, default_values = ["current", "plain", "debian"])]
    host: Vec<String>,
    #[arg(long, value_enum, default_values_t = [Mode::Full, Mode::ControlPlaneOnly])]
    mode: Vec<Mode>,
    /// The sandbox's network: `interface` (eth0 with an address and a default route to a
    /// peer that routes nowhere, as users' sandboxes have) or `loopback` (no route: the
    /// installer picks the node IP).
    #[arg(long, value_enum, default_value_t = sandbox::Network::Interface)]
    network: sandbox::Network,
    /// `single` (one sandbox) or `two-nodes` (a server and an agent in two sandboxes on one
    /// bridge, tests/e2e/two-nodes.sh; `--mode control-plane-only` makes the server
    /// control-plane-only).
    #[arg(long, value_enum, default_value_t = Topology::Single)]
    topology: Topology,
    /// Instead of the scenario, a lifecycle run in each gVisor host (tests/e2e/lifecycle.sh):
    /// `pause` installs, starts pods and a Service, pauses the sandbox (`runsc pause`) for
    /// --pause-minutes, resumes it and checks that everything is back within 30 s;
    /// `checkpoint` does the same with `runsc checkpoint` and `runsc restore`.
    #[arg(long, value_enum)]
    lifecycle: Option<Lifecycle>,
    /// How long `--lifecycle` keeps the sandbox paused, or checkpointed before its restore
    /// (the recorded runs: 10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pause_minutes: u64,
}

pub fn run(ctx: &Ctx, args: E2eArgs) -> Result<()> {
    let layout = &ctx.layout;
    let E2eArgs {
        host,
        mode,
        network,
        topology,
        lifecycle,
        pause_minutes,
    } = args;
    if lifecycle.is_some() && topology != Topology::Single {
        bail!("--lifecycle runs one node: leave out --topology two-nodes");
    }
    // Hosts first: a mistyped name fails before minutes of bundling.
    let hosts = host
        .iter()
        .map(|h| ctx.host(h))
        .collect::<Result<Vec<_>>>()?;
    // Hosts this machine cannot give (their probes said why) need no bundle.
    if hosts.iter().all(|h| h.skipped.is_some()) {
        let mut outcomes = Vec::new();
        for h in &hosts {
            for m in &mode {
                outcomes.push(e2e::skip(&layout.work.join("e2e"), h, *m)?);
            }
        }
        eprint!("{}", e2e::render(&outcomes, 0));
        return Ok(());
    }
    let proof = ctx.proof_inputs()?;
    // The upgrade steps (tests/e2e/upgrade.sh, single node, full mode) install a second
    // bundle, the same with the next version, over the first.
    let next = if topology == Topology::Single && mode.contains(&Mode::Full) && lifecycle.is_none()
    {
        Some(next_tarball(ctx)?)
    } else {
        None
    };
    // The scenario installs the .tar.zst where the bundle has one, and the upgrade
    // steps the next bundle's .tar.gz, so each e2e run unpacks both formats.
    let zst = proof.tarball.with_extension("zst");
    let installed = if zst.is_file() { &zst } else { &proof.tarball };
    let crictl = tools::tool_path("crictl", &layout.cache, ctx.offline)?;
    let driver = crate::build::e2e_driver(layout, &ctx.config.target()?)?;
    let inputs = e2e::Inputs {
        tarball: installed,
        tarball_next: next.as_deref(),
        work: &layout.work.join("e2e"),
        crictl: &crictl,
        scripts: &proof.scripts,
        driver: &driver,
        known_errors: &proof.known_errors,
        network,
    };
    let mut outcomes = Vec::new();
    for h in hosts.iter().filter(|_| lifecycle.is_some()) {
        let pause = std::time::Duration::from_secs(pause_minutes * 60);
        let lifecycle = lifecycle.expect("filtered");
        outcomes.push(e2e::run_lifecycle(&inputs, h, lifecycle, pause)?);
    }
    for h in hosts.iter().filter(|_| lifecycle.is_none()) {
        for m in &mode {
            outcomes.push(match topology {
                Topology::Single => e2e::run(&inputs, h, *m)?,
                Topology::TwoNodes => e2e::run_two_nodes(&inputs, h, *m)?,
            });
        }
    }
    eprint!(
        "{}",
        e2e::render(&outcomes, std::fs::metadata(&proof.tarball)?.len())
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failed() && !o.gaps_allowed)
        .map(|o| o.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("e2e failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// The second bundle (the next version) for the upgrade steps, and what making it took.
fn next_tarball(ctx: &Ctx) -> Result<PathBuf> {
    let next = next_bundle::build(
        &ctx.config_path,
        ctx.pins.as_deref(),
        &ctx.config,
        &ctx.layout,
        &ctx.options(Vec::new(), Vec::new())?,
        &ctx.layout.work.join("e2e/next-bundle"),
    )?;
    let stages: Vec<String> = next
        .stages
        .iter()
        .map(|(name, took)| format!("{name} {:.0?}", took))
        .collect();
    ui::step(
        "e2e",
        format!(
            "second bundle {} for the upgrade steps: {:.0?} ({})",
            next.version,
            next.took,
            if stages.is_empty() {
                "nothing rebuilt".to_string()
            } else {
                stages.join(", ")
            }
        ),
    );
    Ok(next.tarball)
}
