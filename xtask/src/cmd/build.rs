//! `cargo xtask build`: the upstream binaries only, patched or as released.

use super::Ctx;
use crate::layout::Variant;
use crate::pipeline::{self, Report};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct BuildArgs {
    /// Build upstream as released, without our patches (for the patch proofs).
    #[arg(long)]
    unpatched: bool,
    /// Only this component (repeatable; default: all).
    #[arg(long)]
    component: Vec<String>,
}

pub fn run(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    let variant = if args.unpatched {
        Variant::Unpatched
    } else {
        Variant::Patched
    };
    let mut report = Report::default();
    pipeline::build_components(
        &ctx.config,
        &ctx.layout,
        &ctx.options(Vec::new(), args.component)?,
        variant,
        &mut report,
    )?;
    println!("{}", ctx.layout.out_bin(variant).display());
    Ok(())
}
