//! `cargo xtask bundle`: the whole pipeline, timed.

use super::Ctx;
use crate::config::BundleConfig;
use crate::layout::Layout;
use crate::pipeline::{self, Options, Report};
use crate::{timings, ui};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct BundleArgs {
    /// Print how long each stage took, and this run against the last run that did work.
    #[arg(long)]
    timings: bool,
    /// Build a bundle without k3s on purpose (quick work on the rest); its file name and
    /// manifest say so.
    #[arg(long)]
    without_k3s: bool,
    /// Print what would run and why (each component's source: cached or to fetch; patch and
    /// build, or up to date, with the reason its stamp gives; the runtime crates; the images;
    /// the package), and run nothing: no fetch, no build, no write.
    #[arg(long)]
    plan: bool,
}

pub fn run(ctx: &Ctx, args: BundleArgs) -> Result<()> {
    let without = if args.without_k3s {
        vec!["k3s".to_string()]
    } else {
        Vec::new()
    };
    let options = ctx.options(without, Vec::new())?;
    if args.plan {
        let mut report = Report::default();
        let plan = pipeline::plan(&ctx.config, &ctx.layout, &options, true, &mut report)?;
        print!("{}", plan.render());
        return Ok(());
    }
    let tarball = timed(&ctx.config, &ctx.layout, &options, args.timings)?;
    println!("{}", tarball.display());
    Ok(())
}

/// The whole pipeline, timed (and the time recorded for `--timings`); returns the tarball.
pub fn timed(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    timings: bool,
) -> Result<PathBuf> {
    let start = Instant::now();
    let mut report = Report::default();
    let tarball = pipeline::bundle(config, layout, opts, &mut report)?;
    let total = start.elapsed();
    if !report.did_work() {
        ui::step(
            "bundle",
            "nothing changed: no fetch, patch, build or package work done",
        );
    }
    let history = timings::record(layout, total, report.did_work())?;
    if timings {
        eprint!("{}", timings::render(&report, total, &history));
    }
    Ok(tarball)
}
