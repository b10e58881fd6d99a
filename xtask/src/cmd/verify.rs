//! `cargo xtask verify`: a bundle tarball, and offline, the release files beside it.

use super::Ctx;
use crate::signing;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct VerifyArgs {
    tarball: PathBuf,
    /// The GitHub repository (`owner/name`) the release came from, for the signing
    /// identity (default: $GITHUB_REPOSITORY).
    #[arg(long)]
    repository: Option<String>,
}

pub fn run(_ctx: &Ctx, args: VerifyArgs) -> Result<()> {
    let tarball = args.tarball;
    let v =
        crate::verify::verify(&tarball).with_context(|| format!("verify {}", tarball.display()))?;
    println!(
        "{}: OK ({} files; {} {} for {})",
        tarball.display(),
        v.files,
        v.manifest.name,
        v.manifest.version,
        v.manifest.arch
    );
    // The release's own files, as far as they can be checked here (issue 29).
    let signer = signing::Signer::new(args.repository, &v.manifest.version);
    for finding in signing::check_beside(&tarball, &signer)
        .with_context(|| format!("verify the release files beside {}", tarball.display()))?
    {
        match finding {
            signing::Finding::Checked(what) => println!("  checked: {what}"),
            signing::Finding::NotChecked(what) => println!("  not checked here: {what}"),
        }
    }
    Ok(())
}
