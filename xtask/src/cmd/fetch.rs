//! `cargo xtask fetch`: every pinned source into the cache, verified; fetch() says, for each
//! component, who served it.

use super::Ctx;
use anyhow::Result;

pub fn run(ctx: &Ctx) -> Result<()> {
    let fetch = ctx.fetch_options()?;
    for c in &ctx.config.components {
        crate::fetch::fetch(c, &ctx.layout, &fetch)?;
    }
    Ok(())
}
