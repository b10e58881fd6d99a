//! `cargo xtask soak`: one install sampled for MINUTES minutes (not in CI).

use super::Ctx;
use crate::sandbox;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct SoakArgs {
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    minutes: u32,
    /// Where, as for `e2e --host`.
    #[arg(long, default_value = "current")]
    host: String,
    #[arg(long, value_enum, default_value_t = sandbox::Network::Interface)]
    network: sandbox::Network,
}

pub fn run(ctx: &Ctx, args: SoakArgs) -> Result<()> {
    let host = ctx.host(&args.host)?;
    let proof = ctx.proof_inputs()?;
    let driver = crate::build::e2e_driver(&ctx.layout, &ctx.config.target()?)?;
    crate::soak::run(
        &proof.tarball,
        &ctx.layout.work.join("e2e"),
        &proof.scripts,
        &driver,
        &proof.known_errors,
        &host,
        args.network,
        args.minutes,
    )
}
