//! `cargo xtask e2e-table`: what works where, from the saved e2e outcomes.

use super::Ctx;
use crate::{e2e, fsutil};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct E2eTableArgs {
    /// Write it between `<!-- e2e:compatibility -->` markers in this file (README.md).
    #[arg(long)]
    update: Option<PathBuf>,
    /// Also write node Ready and memory per sandbox shape (full-mode runs) between
    /// `<!-- bench:shapes -->` markers in this file (BENCHMARKS.md).
    #[arg(long)]
    shapes: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: E2eTableArgs) -> Result<()> {
    let runs = ctx.layout.work.join("e2e");
    // The cells and rows of hosts this machine has no run of stay as the file has them.
    let earlier = |file: &Option<PathBuf>, markers: &str| -> Result<e2e::EarlierTable> {
        Ok(match file {
            Some(file) => e2e::EarlierTable::parse(
                &fsutil::between_markers(file, markers)?.unwrap_or_default(),
            ),
            None => e2e::EarlierTable::default(),
        })
    };
    let table = e2e::compatibility_table(&runs, &earlier(&args.update, "e2e:compatibility")?)?;
    print!("{table}");
    if let Some(file) = &args.update {
        fsutil::replace_between_markers(file, "e2e:compatibility", &table)?;
        eprintln!("updated the compatibility table in {}", file.display());
    }
    if let Some(file) = &args.shapes {
        let table = e2e::shapes_table(&runs, &earlier(&args.shapes, "bench:shapes")?)?;
        print!("\n{table}");
        fsutil::replace_between_markers(file, "bench:shapes", &table)?;
        eprintln!("updated the shapes table in {}", file.display());
    }
    Ok(())
}
