//! `cargo xtask tool NAME`: a pinned test tool, built once, and its path.

use super::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ToolArgs {
    name: String,
}

pub fn run(ctx: &Ctx, args: ToolArgs) -> Result<()> {
    let path = crate::tools::tool_path(&args.name, &ctx.layout.cache, ctx.offline)?;
    println!("{}", path.display());
    Ok(())
}
