//! `cargo xtask outdated`: every pin beside the newest release of its line.

use super::Ctx;
use crate::{go, outdated, tools};
use anyhow::Result;

pub fn run(ctx: &Ctx) -> Result<()> {
    let tools = tools::pins::load(&tools::pins::default_pin_file())?;
    let go = go::Go::new(&ctx.layout, ctx.offline);
    let rows = outdated::rows(
        &outdated::pins(&ctx.config, &tools),
        &outdated::GoProxy { go: &go },
    );
    print!("{}", outdated::render(&rows));
    Ok(())
}
