//! `cargo xtask patch --check`: whether each patch applies to a fresh tree.

use super::Ctx;
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct PatchArgs {
    #[arg(long)]
    check: bool,
    /// Only this component.
    #[arg(long)]
    component: Option<String>,
}

pub fn run(ctx: &Ctx, args: PatchArgs) -> Result<()> {
    if !args.check {
        bail!("`cargo xtask patch` only checks (--check); `cargo xtask bundle` applies patches");
    }
    let layout = &ctx.layout;
    let mut all_ok = true;
    let fetch = ctx.fetch_options()?;
    for c in &ctx.config.components {
        if args.component.as_ref().is_some_and(|n| n != &c.name) {
            continue;
        }
        let patches = crate::patch::component_patches(layout, &c.name, &c.version)?;
        println!("{} {} ({} patches):", c.name, c.version, patches.len());
        let tree = crate::fetch::fetch(c, layout, &fetch)?;
        all_ok &= crate::patch::check(
            &tree.dir,
            c.vendor,
            &patches,
            layout,
            &mut std::io::stdout(),
        )?;
    }
    if !all_ok {
        bail!("some patches do not apply (see above)");
    }
    Ok(())
}
