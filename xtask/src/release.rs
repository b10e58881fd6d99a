//! `cargo xtask release --dry-run`: everything a GitHub Release consists of, produced locally
//! from the bundle tarballs alone: one bundle per architecture (amd64 and arm64), built from one
//! commit.
//!
//! The release workflow (ci/release.yml) builds each architecture's bundle in a job of its own,
//! then runs this over all of them, uploads every file of `<out>/assets/` and uses
//! `<out>/release-notes.md` as the body; so what this command writes is exactly what a release
//! publishes. It reads each manifest out of its tarball (through `verify`, so a damaged bundle is
//! never released), checks that the bundles are one release (same version, sources and patches),
//! and reads the patch subjects from the repository's patch files, checked against the sha256 the
//! manifests recorded.
//!
//! It also writes the release's SHA256SUMS (every tarball and SBOM: the files the workflow
//! signs and attests) and `signing-plan.json`: what the workflow's `sign` job will sign and
//! attest, as which identity, and the commands that verify each (xtask/src/signing.rs). A dry
//! run signs nothing and needs no network.

use crate::config::BundleConfig;
use crate::digest::{sha256_bytes, sha256_file};
use crate::fsutil::write_atomic;
use crate::layout::Layout;
use crate::package::{write_sidecar, Format};
use crate::sbom::{self, PatchInfo, SbomInputs};
use crate::signing::{self, Signer};
use anyhow::{bail, Context, Result};
use bundle_format::{Arch, Manifest};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `cargo xtask release` options.
#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// Write the release assets and notes locally instead of publishing (publishing is the
    /// release workflow's job: ci/release.yml uploads what this writes).
    #[arg(long)]
    pub dry_run: bool,
    /// A bundle to release, once per architecture (default: dist/<name>-<version>-linux-<arch>.tar.gz
    /// of bundle.toml's version for amd64 and arm64, which must both exist). A dry run may preview
    /// fewer; a release with --tag needs every architecture.
    #[arg(long)]
    pub tarball: Vec<PathBuf>,
    /// Where to write `assets/` and `release-notes.md` (default: dist/release).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The git tag being released: it must equal the bundles' version, there must be a bundle
    /// for every architecture and none may omit anything (the workflow passes the tag that
    /// triggered it, so a tag and a bundle that disagree, or an incomplete release, are never
    /// published).
    #[arg(long)]
    pub tag: Option<String>,
    /// The GitHub repository (`owner/name`) that publishes the release: the signing identity
    /// names it (default: $GITHUB_REPOSITORY, which every workflow run sets; else a
    /// placeholder the plan marks).
    #[arg(long)]
    pub repository: Option<String>,
}

/// One file to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// One architecture's bundle in a release: its tarball and the manifest `verify` read from it.
#[derive(Debug, Clone)]
pub struct ReleasedBundle {
    pub manifest: Manifest,
    pub tarball: PathBuf,
}

/// What `dry_run` wrote.
#[derive(Debug)]
pub struct ReleasePlan {
    /// The files of the release before signing: per architecture the tarballs, their `.sha256`
    /// and the SBOM, then SHA256SUMS (the workflow adds a `.sigstore.json` signature of each
    /// tarball and SBOM).
    pub assets: Vec<Asset>,
    /// The release body (markdown).
    pub notes: PathBuf,
    /// `signing-plan.json`: what will be signed and attested, as whom (signing.rs).
    pub signing_plan: PathBuf,
}

/// The subcommand: find and verify the tarball, then `dry_run`, then print the plan.
pub fn command(config: &BundleConfig, layout: &Layout, args: ReleaseArgs) -> Result<()> {
    if !args.dry_run {
        bail!(
            "`cargo xtask release` only prepares a release: pass --dry-run. Publishing is done by \
             the release workflow (ci/release.yml) when a version tag is pushed"
        );
    }
    let tarballs = if args.tarball.is_empty() {
        default_tarballs(config, layout)?
    } else {
        args.tarball
    };
    let mut bundles = Vec::new();
    for tarball in tarballs {
        if !tarball.is_file() {
            bail!(
                "{}: no such bundle; run `cargo xtask bundle` first, or name one with --tarball",
                tarball.display()
            );
        }
        let verified = crate::verify::verify(&tarball).with_context(|| {
            format!(
                "{} does not verify; rebuild it with `cargo xtask bundle` before releasing",
                tarball.display()
            )
        })?;
        bundles.push(ReleasedBundle {
            manifest: verified.manifest,
            tarball,
        });
    }
    check_one_release(&bundles)?;
    let version = bundles[0].manifest.version.clone();
    if let Some(tag) = &args.tag {
        check_publishable(&bundles, tag)?;
    }
    let out_dir = args.out_dir.unwrap_or_else(|| layout.dist.join("release"));
    let signer = Signer::new(args.repository, args.tag.as_deref().unwrap_or(&version));
    let plan = dry_run(&bundles, &layout.repo, &out_dir, &signer)?;
    println!("assets ({}):", plan.assets.len());
    for a in &plan.assets {
        println!("  {}  {}  {} bytes", a.sha256, a.path.display(), a.size);
    }
    let signing: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan.signing_plan)?)?;
    println!(
        "signing plan: {} (nothing signed: a dry run)",
        plan.signing_plan.display()
    );
    println!(
        "  identity {} (issuer {})",
        signing["identity"]["certificate_identity"]
            .as_str()
            .unwrap_or_default(),
        signing::OIDC_ISSUER
    );
    if let Some(note) = signing["identity"]["note"].as_str() {
        println!("  note: {note}");
    }
    for subject in signing["subjects"].as_array().into_iter().flatten() {
        println!(
            "  sign and attest {}: cosign signature {}, SLSA provenance",
            subject["file"].as_str().unwrap_or_default(),
            subject["signature"].as_str().unwrap_or_default()
        );
    }
    println!("notes: {}\n", plan.notes.display());
    print!("{}", std::fs::read_to_string(&plan.notes)?);
    Ok(())
}

/// The tarballs a release holds by default: bundle.toml's version, one per architecture, in
/// `dist/` (every architecture's bundles land there: their names carry the architecture).
fn default_tarballs(config: &BundleConfig, layout: &Layout) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for arch in Arch::ALL {
        let mut bundle = config.bundle.clone();
        bundle.arch = arch;
        let tarball = layout
            .dist
            .join(format!("{}.tar.gz", bundle.artifact_name(&[])));
        if tarball.is_file() {
            found.push(tarball);
        } else {
            missing.push(format!(
                "{} (`cargo xtask --arch {arch} bundle`)",
                tarball.display()
            ));
        }
    }
    if !missing.is_empty() {
        bail!(
            "a release holds a bundle for every architecture, and these are not built: {}; build \
             them, or preview a release of fewer with --tarball FILE for each",
            missing.join(", ")
        );
    }
    Ok(found)
}

/// The bundles are one release: at least one, each architecture once, and all built from the
/// same sources (name, version, SOURCE_DATE_EPOCH, each component's version, source and
/// patches); only what was built from them differs, and which components an architecture's
/// bundles cannot hold (`not_on_this_arch`: arm64 has no launcher).
pub fn check_one_release(bundles: &[ReleasedBundle]) -> Result<()> {
    let Some(first) = bundles.first() else {
        bail!("nothing to release: name a bundle with --tarball");
    };
    let f = &first.manifest;
    for (i, b) in bundles.iter().enumerate() {
        let m = &b.manifest;
        if bundles[..i].iter().any(|o| o.manifest.arch == m.arch) {
            bail!(
                "{}: a second linux-{} bundle; a release holds one per architecture",
                b.tarball.display(),
                m.arch
            );
        }
        let differs = if (&m.name, &m.version) != (&f.name, &f.version) {
            Some(format!(
                "{} {} against {} {}",
                m.name, m.version, f.name, f.version
            ))
        } else if m.source_date_epoch != f.source_date_epoch {
            Some(format!(
                "SOURCE_DATE_EPOCH {} against {}",
                m.source_date_epoch, f.source_date_epoch
            ))
        } else {
            component_difference(f, m)
        };
        if let Some(what) = differs {
            bail!(
                "{} and {} are not one release ({what}); build every architecture from the same \
                 commit",
                b.tarball.display(),
                first.tarball.display()
            );
        }
    }
    Ok(())
}

/// The first component that `a` and `b` (bundles of two architectures) do not share: built from
/// other sources or patches, or missing from one without that architecture's reason.
fn component_difference(a: &Manifest, b: &Manifest) -> Option<String> {
    let source = |c: &bundle_format::ComponentRecord| {
        let patches: Vec<&str> = c.patches.iter().map(|p| p.sha256.as_str()).collect();
        (
            c.version.clone(),
            c.source.content.clone(),
            patches.join(","),
        )
    };
    for (this, other) in [(a, b), (b, a)] {
        for c in &this.components {
            match other.components.iter().find(|o| o.name == c.name) {
                Some(o) if source(o) != source(c) => {
                    return Some(format!(
                        "{}: {} {} against {} {}, or other patches",
                        c.name, c.version, c.source.content, o.version, o.source.content
                    ))
                }
                Some(_) => {}
                None if other.not_on_this_arch.iter().any(|n| n.name == c.name) => {}
                None => {
                    return Some(format!(
                        "{} is in the linux-{} bundle only",
                        c.name, this.arch
                    ))
                }
            }
        }
    }
    None
}

/// What a tagged (published) release must satisfy beyond `verify` and [`check_one_release`]:
/// the tag is the bundles' version, every architecture has its bundle, and no bundle lacks
/// anything it was meant to hold (a dry run without `--tag` may preview an incomplete release;
/// its notes say what is missing).
pub fn check_publishable(bundles: &[ReleasedBundle], tag: &str) -> Result<()> {
    for b in bundles {
        let manifest = &b.manifest;
        if tag != manifest.version {
            bail!(
                "tag `{tag}` is not the bundle's version `{}`: tag the commit with the version in \
                 bundle.toml ([bundle] version), or bump that version and rebuild",
                manifest.version
            );
        }
        if let Some(o) = manifest.omitted.first() {
            bail!(
                "the linux-{} bundle was built without {} ({}); a release must be complete: \
                 rebuild with `cargo xtask bundle` (without --without-{})",
                manifest.arch,
                o.name,
                sbom::one_line(&o.reason),
                o.name
            );
        }
    }
    let missing: Vec<String> = Arch::ALL
        .iter()
        .filter(|a| !bundles.iter().any(|b| b.manifest.arch == **a))
        .map(|a| format!("linux-{a}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "a release holds a bundle for every architecture; missing: {} (build it with \
             `cargo xtask --arch ARCH bundle` and pass every tarball with --tarball)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Write into `out_dir` the release of `bundles` (one per architecture, checked by
/// [`check_one_release`]): for each, `assets/<tarball>` (and the `.tar.zst` beside it, where the
/// bundle was packaged with one), their `.sha256`, `assets/<name>.cdx.json` (CycloneDX SBOM);
/// then `assets/SHA256SUMS` (every tarball and SBOM), `release-notes.md` and `signing-plan.json`
/// (as `signer`). `repo` is the checkout whose patches/ built the bundles. `out_dir/assets` is
/// emptied first, so it holds exactly the release's files (before the signatures).
pub fn dry_run(
    bundles: &[ReleasedBundle],
    repo: &Path,
    out_dir: &Path,
    signer: &Signer,
) -> Result<ReleasePlan> {
    check_one_release(bundles)?;
    // The same patches built every bundle (checked above); each is checked against this checkout.
    let patches = resolve_patches(&bundles[0].manifest, repo)?;

    let assets_dir = out_dir.join("assets");
    if assets_dir.exists() {
        std::fs::remove_dir_all(&assets_dir)
            .with_context(|| format!("cannot empty {}", assets_dir.display()))?;
    }
    std::fs::create_dir_all(&assets_dir)
        .with_context(|| format!("cannot create {}", assets_dir.display()))?;

    // The signed and attested files (what a user runs, and what describes it), and every file.
    let mut signed = Vec::new();
    let mut files = Vec::new();
    for bundle in bundles {
        let arch_files = write_bundle_assets(bundle, &patches, &assets_dir)?;
        signed.extend(arch_files.signed());
        files.extend(arch_files.all());
    }
    let subjects = signing::write_checksums(&assets_dir, &signed)?;
    let signing_plan = out_dir.join("signing-plan.json");
    let mut plan_bytes = serde_json::to_vec_pretty(&signing::plan(signer, &subjects))?;
    plan_bytes.push(b'\n');
    write_atomic(&signing_plan, &plan_bytes)?;
    files.push(assets_dir.join(signing::CHECKSUMS));

    let mut assets = Vec::new();
    for path in files {
        assets.push(Asset {
            sha256: sha256_file(&path)?,
            size: std::fs::metadata(&path)?.len(),
            path,
        });
    }
    let manifests: Vec<&Manifest> = bundles.iter().map(|b| &b.manifest).collect();
    let notes = out_dir.join("release-notes.md");
    write_atomic(
        &notes,
        release_notes(&manifests, &patches, &assets, signer).as_bytes(),
    )?;
    Ok(ReleasePlan {
        assets,
        notes,
        signing_plan,
    })
}

/// One architecture's files in `assets/`.
struct BundleAssets {
    tarball: PathBuf,
    sidecar: PathBuf,
    /// The `.tar.zst` and its `.sha256`, where the bundle was packaged with it.
    zst: Option<(PathBuf, PathBuf)>,
    sbom: PathBuf,
}

impl BundleAssets {
    fn signed(&self) -> Vec<PathBuf> {
        let mut v = vec![self.tarball.clone()];
        v.extend(self.zst.iter().map(|(z, _)| z.clone()));
        v.push(self.sbom.clone());
        v
    }

    fn all(&self) -> Vec<PathBuf> {
        let mut v = vec![self.tarball.clone(), self.sidecar.clone()];
        if let Some((z, z_sidecar)) = &self.zst {
            v.extend([z.clone(), z_sidecar.clone()]);
        }
        v.push(self.sbom.clone());
        v
    }
}

/// Link `bundle`'s tarballs into `assets_dir` with their `.sha256`, and write its SBOM.
fn write_bundle_assets(
    bundle: &ReleasedBundle,
    patches: &BTreeMap<String, Vec<PatchInfo>>,
    assets_dir: &Path,
) -> Result<BundleAssets> {
    let file_name = bundle
        .tarball
        .file_name()
        .context("the tarball path has no file name")?
        .to_string_lossy()
        .to_string();
    let stem = file_name
        .strip_suffix(".tar.gz")
        .with_context(|| format!("{file_name}: a bundle tarball's name ends in .tar.gz"))?;
    let tarball = assets_dir.join(&file_name);
    link_or_copy(&bundle.tarball, &tarball)?;
    let tarball_sha256 = sha256_file(&tarball)?;
    let sidecar = write_sidecar(&tarball)?;
    // The .tar.zst of the same tar, where the bundle was packaged with it (bundle.toml's
    // `formats`): released, summed and signed beside the .tar.gz.
    let zst_name = format!("{stem}.{}", Format::TarZst.extension());
    let zst_built = bundle.tarball.with_file_name(&zst_name);
    let zst = if zst_built.is_file() {
        let released = assets_dir.join(&zst_name);
        link_or_copy(&zst_built, &released)?;
        let zst_sidecar = write_sidecar(&released)?;
        Some((released, zst_sidecar))
    } else {
        None
    };

    let sbom_path = assets_dir.join(format!("{stem}.cdx.json"));
    let sbom = sbom::cyclonedx(&SbomInputs {
        manifest: &bundle.manifest,
        tarball_name: &file_name,
        tarball_sha256: &tarball_sha256,
        patches,
    });
    let mut sbom_bytes = serde_json::to_vec_pretty(&sbom)?;
    sbom_bytes.push(b'\n');
    write_atomic(&sbom_path, &sbom_bytes)?;
    Ok(BundleAssets {
        tarball,
        sidecar,
        zst,
        sbom: sbom_path,
    })
}

/// Each component's patches with their subjects, read from `repo`. A patch file that is missing
/// or differs from the sha256 in the manifest means this checkout did not build this bundle.
pub fn resolve_patches(
    manifest: &Manifest,
    repo: &Path,
) -> Result<BTreeMap<String, Vec<PatchInfo>>> {
    let mut all = BTreeMap::new();
    for c in &manifest.components {
        let mut infos = Vec::new();
        for p in &c.patches {
            let path = repo.join(&p.file);
            let text = std::fs::read(&path).with_context(|| {
                format!(
                    "{}: the bundle was built with this patch, but it is not in this checkout; \
                     check out the commit the bundle was built from",
                    p.file
                )
            })?;
            let actual = sha256_bytes(&text);
            if actual != p.sha256 {
                bail!(
                    "{}: sha256 is {actual}, but the bundle was built with {}; the patch changed \
                     since, so rebuild with `cargo xtask bundle` (or check out the bundle's commit)",
                    p.file,
                    p.sha256
                );
            }
            infos.push(PatchInfo {
                file: p.file.clone(),
                sha256: p.sha256.clone(),
                subject: patch_subject(&String::from_utf8_lossy(&text)).with_context(|| {
                    format!(
                        "{}: no `Subject:` header; patches are git format-patch files",
                        p.file
                    )
                })?,
            });
        }
        all.insert(c.name.clone(), infos);
    }
    Ok(all)
}

/// The `Subject:` header of a format-patch file, unfolded, without its `[PATCH n/m]` prefix.
pub fn patch_subject(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let first = lines.find_map(|l| l.strip_prefix("Subject:"))?;
    let mut subject = first.trim().to_string();
    // RFC 5322 folding: continuation lines start with white space.
    for l in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        subject.push(' ');
        subject.push_str(l.trim());
    }
    if subject.starts_with('[') {
        if let Some((_, rest)) = subject.split_once(']') {
            subject = rest.trim().to_string();
        }
    }
    Some(subject)
}

/// The release body: how to get and check each architecture's bundle, then what is in them and
/// where from. `manifests` are one release's ([`check_one_release`]): sources and patches are
/// shared, outputs and images are each architecture's.
pub fn release_notes(
    manifests: &[&Manifest],
    patches: &BTreeMap<String, Vec<PatchInfo>>,
    assets: &[Asset],
    signer: &Signer,
) -> String {
    let name = |a: &Asset| a.path.file_name().unwrap().to_string_lossy().to_string();
    let first = manifests[0];
    let arches: Vec<String> = manifests
        .iter()
        .map(|m| format!("linux/{}", m.arch))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "# {} {}\n", first.name, first.version);
    let _ = writeln!(
        s,
        "k3s for gVisor sandboxes: one self-contained bundle per architecture ({}). Extract the \
         one for your machine inside the sandbox (`uname -m`: x86_64 is amd64, aarch64 is arm64) \
         and run `./install`.\n",
        arches.join(", ")
    );
    let _ = writeln!(s, "## Install\n");
    let tarballs: Vec<String> = assets
        .iter()
        .map(name)
        .filter(|n| n.ends_with(".tar.gz"))
        .collect();
    for tarball in &tarballs {
        let top = tarball.strip_suffix(".tar.gz").unwrap_or(tarball);
        let _ = writeln!(s, "```sh");
        let _ = writeln!(s, "sha256sum -c {tarball}.sha256");
        let _ = writeln!(s, "tar -xzf {tarball}");
        let _ = writeln!(s, "cd {top} && ./install");
        let _ = writeln!(s, "```\n");
    }
    let zst_suffix = format!(".{}", Format::TarZst.extension());
    if assets.iter().any(|a| name(a).ends_with(&zst_suffix)) {
        let _ = writeln!(
            s,
            "Each `{zst_suffix}` is the same tar as its `.tar.gz`, compressed with zstd: smaller, \
             and faster to unpack where the `zstd` program is installed (`sha256sum -c \
             <file>{zst_suffix}.sha256`, then `tar -xf <file>{zst_suffix}`).\n"
        );
    }
    let _ = writeln!(s, "## Verify the signature and the build provenance\n");
    let _ = writeln!(
        s,
        "The tarballs and the SBOMs are listed in `{}`, and each has a keyless cosign signature \
         (`<file>{}`) and a build provenance attestation, both made by the release workflow \
         (`{}`) at this tag:\n",
        signing::CHECKSUMS,
        signing::SIGNATURE_SUFFIX,
        signing::RELEASE_WORKFLOW
    );
    let _ = writeln!(s, "```sh");
    for tarball in &tarballs {
        for command in signer.verify_commands(tarball) {
            let _ = writeln!(s, "{command}");
        }
    }
    let _ = writeln!(s, "```\n");
    let _ = writeln!(
        s,
        "Inside a bundle, `sha256sum -c SHA256SUMS` checks every file. Each CycloneDX SBOM \
         names every shipped binary with its upstream source, version, sha256 and patches.\n"
    );
    let _ = writeln!(s, "## Assets\n");
    let _ = writeln!(s, "| file | bytes | sha256 |");
    let _ = writeln!(s, "|---|---|---|");
    for a in assets {
        let _ = writeln!(s, "| `{}` | {} | `{}` |", name(a), a.size, a.sha256);
    }
    // Every component of the release, in the first bundle's order, then those it cannot hold.
    let mut components: Vec<&bundle_format::ComponentRecord> = Vec::new();
    for m in manifests {
        for c in &m.components {
            if !components.iter().any(|k| k.name == c.name) {
                components.push(c);
            }
        }
    }
    let _ = writeln!(s, "\n## Components\n");
    let _ = writeln!(s, "| component | version | source | patches |");
    let _ = writeln!(s, "|---|---|---|---|");
    for c in &components {
        let _ = writeln!(
            s,
            "| {} | {} | {} `{}` | {} |",
            c.name,
            c.version,
            c.source.transport,
            c.source.location,
            c.patches.len()
        );
    }
    for c in &components {
        let _ = writeln!(s, "\n### {} {}\n", c.name, c.version);
        let _ = writeln!(
            s,
            "- source: {} `{}` (`{}`)",
            c.source.transport, c.source.location, c.source.content
        );
        if let (Some(repository), Some(commit)) = (&c.source.repository, &c.source.commit) {
            let _ = writeln!(s, "- upstream: {repository} commit `{commit}`");
        }
        for m in manifests {
            let built = m.components.iter().find(|k| k.name == c.name);
            for o in built.iter().flat_map(|k| &k.outputs) {
                let _ = writeln!(s, "- linux-{} `{}`: sha256 `{}`", m.arch, o.path, o.sha256);
            }
            if built.is_none() {
                let _ = writeln!(s, "- linux-{}: not built (below)", m.arch);
            }
        }
        let list = patches.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
        if list.is_empty() {
            let _ = writeln!(s, "- patches: none");
        } else {
            let _ = writeln!(s, "- patches:");
            for p in list {
                let _ = writeln!(s, "  - `{}`: {} (sha256 `{}`)", p.file, p.subject, p.sha256);
            }
        }
    }
    for m in manifests {
        if !m.images.is_empty() {
            let _ = writeln!(s, "\n## Images (linux-{})\n", m.arch);
            for i in &m.images {
                let _ = writeln!(
                    s,
                    "- `{}`: `{}` ({}, {}){}",
                    i.file,
                    i.reference,
                    i.source,
                    i.digest,
                    if i.sandbox {
                        ", the pod sandbox image"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    for m in manifests {
        if !m.omitted.is_empty() {
            let _ = writeln!(s, "\n## Not in this linux-{} bundle\n", m.arch);
            for o in &m.omitted {
                // Reasons can carry a tool's multi-line output; one list item each.
                let _ = writeln!(s, "- {}: {}", o.name, sbom::one_line(&o.reason));
            }
        }
        if !m.not_on_this_arch.is_empty() {
            let _ = writeln!(s, "\n## Not in linux-{} bundles\n", m.arch);
            for o in &m.not_on_this_arch {
                let _ = writeln!(s, "- {}: {}", o.name, sbom::one_line(&o.reason));
            }
        }
    }
    let _ = writeln!(
        s,
        "\nBuilt to be reproducible (SOURCE_DATE_EPOCH={}): `cargo xtask bundle` (and `cargo \
         xtask --arch arm64 bundle`) at this tag, with the Go and Rust versions pinned in \
         ci/release.yml, should give tarballs with the same sha256.",
        first.source_date_epoch
    );
    s
}

/// Hard-link when source and destination share a filesystem (bundles are large), else copy.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{self, BundleFile};

    const MIRROR_URL: &str = "file:///srv/mirror/github.com/opencontainers/runc/archive/d842d7719497cc3b774fd71620278ac9e17710e0.tar.gz";
    const PATCH: &str = "From 0123 Mon Sep 17 00:00:00 2001\nFrom: x <x@y>\nSubject: [PATCH 1/2] capability: probe the kernel\n when the file is missing\n\nwhy\n---\n";

    fn signer() -> Signer {
        Signer::new(Some("acme/k3s-gvisor".into()), "v1.0.0-gvisor.1")
    }

    /// A repository with one patch, and a packaged amd64 bundle whose manifest records it.
    fn fixture(root: &Path) -> (Manifest, PathBuf) {
        fixture_for(root, "amd64")
    }

    /// [`fixture`]'s bundle built for `arch`.
    fn fixture_for(root: &Path, arch: &str) -> (Manifest, PathBuf) {
        let repo = root.join("repo");
        std::fs::create_dir_all(repo.join("patches/runc")).unwrap();
        std::fs::write(repo.join("patches/runc/0001-probe.patch"), PATCH).unwrap();
        let bin = root.join(format!("runc-{arch}"));
        std::fs::write(&bin, format!("not really runc for {arch}\n")).unwrap();
        // Built from JSON so that fields the manifest gains later (with serde defaults) do not
        // break this fixture.
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "name": "tiny",
            "version": "v1.0.0-gvisor.1",
            "arch": arch,
            "source_date_epoch": 1_759_276_800,
            "components": [{
                "name": "runc",
                "version": "v1.3.3",
                "source": {
                    "transport": "mirror",
                    "location": MIRROR_URL,
                    "content": "git-tree:0e3cc6a30898bc561dcdd4195a914e83cf422309",
                    "repository": "https://github.com/opencontainers/runc",
                    "commit": "d842d7719497cc3b774fd71620278ac9e17710e0",
                    "tree": "0e3cc6a30898bc561dcdd4195a914e83cf422309",
                },
                "patches": [{
                    "file": "patches/runc/0001-probe.patch",
                    "sha256": sha256_bytes(PATCH.as_bytes()),
                }],
                "build_flags": ["runc: CGO_ENABLED=1 go build"],
                "outputs": [{ "path": "bin/runc", "sha256": sha256_file(&bin).unwrap() }],
            }],
            "omitted": [{ "name": "k3s", "reason": "left out on purpose\n\t(--without-k3s)" }],
        }))
        .unwrap();
        let stage = root.join(format!("stage-{arch}"));
        let files = [BundleFile::file(bin, "bin/runc".into())];
        package::stage(
            &stage,
            &root.join("none"),
            &root.join("none"),
            &files,
            &manifest,
        )
        .unwrap();
        let top = format!("tiny-v1.0.0-gvisor.1-linux-{arch}");
        let tarball = root.join(format!("dist/{top}.tar.gz"));
        package::write_tarball(&stage, &top, &tarball, 1).unwrap();
        package::write_sidecar(&tarball).unwrap();
        (manifest, tarball)
    }

    fn released((manifest, tarball): (Manifest, PathBuf)) -> ReleasedBundle {
        ReleasedBundle { manifest, tarball }
    }

    #[test]
    fn dry_run_writes_exactly_the_assets_and_notes() {
        let t = tempfile::tempdir().unwrap();
        let (manifest, tarball) = fixture(t.path());
        let out = t.path().join("release");
        // A leftover from an earlier run must not be uploaded.
        std::fs::create_dir_all(out.join("assets")).unwrap();
        std::fs::write(out.join("assets/stale.tar.gz"), "old").unwrap();

        let bundles = [released((manifest.clone(), tarball.clone()))];
        let plan = dry_run(&bundles, &t.path().join("repo"), &out, &signer()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(out.join("assets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "SHA256SUMS",
                "tiny-v1.0.0-gvisor.1-linux-amd64.cdx.json",
                "tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz",
                "tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz.sha256",
            ]
        );
        assert_eq!(plan.assets.len(), 4);
        // SHA256SUMS lists exactly the signed files, the tarball and the SBOM.
        assert_eq!(
            std::fs::read_to_string(&plan.assets[3].path).unwrap(),
            format!(
                "{}  tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz\n{}  tiny-v1.0.0-gvisor.1-linux-amd64.cdx.json\n",
                plan.assets[0].sha256, plan.assets[2].sha256
            )
        );
        // The signing plan: both files, the release workflow at the tag as the identity.
        let signing: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&plan.signing_plan).unwrap()).unwrap();
        assert_eq!(
            signing["identity"]["certificate_identity"],
            "https://github.com/acme/k3s-gvisor/.github/workflows/release.yml@refs/tags/v1.0.0-gvisor.1"
        );
        assert_eq!(
            signing["identity"]["certificate_oidc_issuer"],
            "https://token.actions.githubusercontent.com"
        );
        let subjects: Vec<(&str, &str)> = signing["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["file"].as_str().unwrap(),
                    s["signature"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            subjects,
            [
                (
                    "tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz",
                    "tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz.sigstore.json"
                ),
                (
                    "tiny-v1.0.0-gvisor.1-linux-amd64.cdx.json",
                    "tiny-v1.0.0-gvisor.1-linux-amd64.cdx.json.sigstore.json"
                ),
            ]
        );
        assert_eq!(
            signing["subjects"][0]["sha256"],
            plan.assets[0].sha256.as_str()
        );
        assert_eq!(plan.assets[0].sha256, sha256_file(&tarball).unwrap());
        // The released sidecar names the file by its bare name, so `sha256sum -c` works
        // in whatever directory the user downloads both into.
        let sidecar = std::fs::read_to_string(&plan.assets[1].path).unwrap();
        assert_eq!(
            sidecar,
            format!(
                "{}  tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz\n",
                plan.assets[0].sha256
            )
        );

        let notes = std::fs::read_to_string(&plan.notes).unwrap();
        for needle in [
            "# tiny v1.0.0-gvisor.1",
            &format!("| runc | v1.3.3 | mirror `{MIRROR_URL}` | 1 |"),
            "- upstream: https://github.com/opencontainers/runc commit `d842d7719497cc3b774fd71620278ac9e17710e0`",
            "`patches/runc/0001-probe.patch`: capability: probe the kernel when the file is missing",
            &format!("- linux-amd64 `bin/runc`: sha256 `{}`", manifest.components[0].outputs[0].sha256),
            &plan.assets[2].sha256,
            "## Not in this linux-amd64 bundle\n\n- k3s: left out on purpose (--without-k3s)",
            "cosign verify-blob --bundle 'tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz.sigstore.json' --certificate-identity 'https://github.com/acme/k3s-gvisor/.github/workflows/release.yml@refs/tags/v1.0.0-gvisor.1'",
            "gh attestation verify 'tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz' --repo 'acme/k3s-gvisor'",
        ] {
            assert!(notes.contains(needle), "notes lack {needle:?}:\n{notes}");
        }

        let sbom: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&plan.assets[2].path).unwrap()).unwrap();
        assert_eq!(sbom["specVersion"], "1.5");
        assert_eq!(sbom["metadata"]["timestamp"], "2025-10-01T00:00:00Z");
        assert_eq!(
            sbom["metadata"]["component"]["hashes"][0]["content"],
            plan.assets[0].sha256
        );
        assert!(
            sbom["metadata"]["component"]["properties"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({
                    "name": "k3s-gvisor:omitted",
                    "value": "k3s: left out on purpose (--without-k3s)",
                })),
            "{sbom:#}"
        );
        let runc = &sbom["components"][0];
        assert_eq!(runc["name"], "runc");
        assert_eq!(
            runc["hashes"][0]["content"],
            manifest.components[0].outputs[0].sha256
        );
        assert_eq!(
            runc["pedigree"]["ancestors"][0]["purl"],
            "pkg:github/opencontainers/runc@d842d7719497cc3b774fd71620278ac9e17710e0"
        );
        assert_eq!(
            runc["pedigree"]["patches"][0]["diff"]["url"],
            "patches/runc/0001-probe.patch"
        );
        assert_eq!(
            runc["pedigree"]["patches"][0]["resolves"][0]["description"],
            "capability: probe the kernel when the file is missing"
        );

        // Deterministic: a second run writes the same bytes.
        let first = std::fs::read(&plan.assets[2].path).unwrap();
        let again = dry_run(&bundles, &t.path().join("repo"), &out, &signer()).unwrap();
        assert_eq!(first, std::fs::read(&again.assets[2].path).unwrap());
    }

    #[test]
    fn a_patch_that_changed_since_the_build_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let bundles = [released(fixture(t.path()))];
        let repo = t.path().join("repo");
        std::fs::write(
            repo.join("patches/runc/0001-probe.patch"),
            format!("{PATCH}x"),
        )
        .unwrap();
        let err = dry_run(&bundles, &repo, &t.path().join("out"), &signer()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("patches/runc/0001-probe.patch") && msg.contains("changed since"),
            "{msg}"
        );
        std::fs::remove_file(repo.join("patches/runc/0001-probe.patch")).unwrap();
        let err = dry_run(&bundles, &repo, &t.path().join("out"), &signer()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not in this checkout"),
            "{err:#}"
        );
    }

    #[test]
    fn a_tagged_release_needs_the_matching_version_and_every_complete_bundle() {
        let t = tempfile::tempdir().unwrap();
        let mut bundles = vec![
            released(fixture_for(t.path(), "amd64")),
            released(fixture_for(t.path(), "arm64")),
        ];
        let err = check_publishable(&bundles, "v9").unwrap_err().to_string();
        assert!(
            err.contains("tag `v9` is not the bundle's version `v1.0.0-gvisor.1`"),
            "{err}"
        );
        let err = check_publishable(&bundles, "v1.0.0-gvisor.1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "linux-amd64 bundle was built without k3s (left out on purpose (--without-k3s))"
            ),
            "{err}"
        );
        for b in &mut bundles {
            b.manifest.omitted.clear();
        }
        // What an architecture's bundles cannot hold (arm64: the launcher) is no gap: an arm64
        // bundle without it is complete, and publishable.
        bundles[1]
            .manifest
            .not_on_this_arch
            .push(bundle_format::OmittedRecord {
                name: "launcher".into(),
                reason: "not built for arm64: x86_64 only".into(),
            });
        check_publishable(&bundles, "v1.0.0-gvisor.1").unwrap();
        // Every architecture, or no release.
        let err = check_publishable(&bundles[..1], "v1.0.0-gvisor.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing: linux-arm64"), "{err}");
    }

    #[test]
    fn both_architectures_make_one_release() {
        let t = tempfile::tempdir().unwrap();
        let bundles = [
            released(fixture_for(t.path(), "amd64")),
            released(fixture_for(t.path(), "arm64")),
        ];
        let out = t.path().join("release");
        let plan = dry_run(&bundles, &t.path().join("repo"), &out, &signer()).unwrap();
        let names: Vec<String> = plan
            .assets
            .iter()
            .map(|a| a.path.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz",
                "tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz.sha256",
                "tiny-v1.0.0-gvisor.1-linux-amd64.cdx.json",
                "tiny-v1.0.0-gvisor.1-linux-arm64.tar.gz",
                "tiny-v1.0.0-gvisor.1-linux-arm64.tar.gz.sha256",
                "tiny-v1.0.0-gvisor.1-linux-arm64.cdx.json",
                "SHA256SUMS",
            ]
        );
        // One SHA256SUMS and one signing plan over both tarballs and both SBOMs.
        let sums = std::fs::read_to_string(&plan.assets[6].path).unwrap();
        for i in [0, 2, 3, 5] {
            assert!(
                sums.contains(&format!("{}  {}\n", plan.assets[i].sha256, names[i])),
                "{sums}"
            );
        }
        assert_eq!(sums.lines().count(), 4, "{sums}");
        let signing: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&plan.signing_plan).unwrap()).unwrap();
        assert_eq!(signing["subjects"].as_array().unwrap().len(), 4);
        // Each architecture's SBOM describes its own tarball.
        let sbom: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&plan.assets[5].path).unwrap()).unwrap();
        assert_eq!(
            sbom["metadata"]["component"]["hashes"][0]["content"],
            plan.assets[3].sha256
        );
        let notes = std::fs::read_to_string(&plan.notes).unwrap();
        for needle in [
            "(linux/amd64, linux/arm64)",
            "tar -xzf tiny-v1.0.0-gvisor.1-linux-arm64.tar.gz",
            "gh attestation verify 'tiny-v1.0.0-gvisor.1-linux-arm64.tar.gz'",
            &format!(
                "- linux-arm64 `bin/runc`: sha256 `{}`",
                bundles[1].manifest.components[0].outputs[0].sha256
            ),
        ] {
            assert!(notes.contains(needle), "notes lack {needle:?}:\n{notes}");
        }
    }

    #[test]
    fn bundles_of_other_sources_or_the_same_arch_are_not_one_release() {
        let t = tempfile::tempdir().unwrap();
        let amd64 = released(fixture_for(t.path(), "amd64"));
        let mut arm64 = released(fixture_for(t.path(), "arm64"));
        let err = check_one_release(&[amd64.clone(), amd64.clone()]).unwrap_err();
        assert!(
            err.to_string().contains("a second linux-amd64 bundle"),
            "{err}"
        );
        // A component an architecture cannot hold is absent from its bundle, with the reason.
        let mut without = arm64.clone();
        without.manifest.components.clear();
        let err = check_one_release(&[amd64.clone(), without.clone()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("not one release (runc is in the linux-amd64 bundle only)"),
            "{err}"
        );
        without
            .manifest
            .not_on_this_arch
            .push(bundle_format::OmittedRecord {
                name: "runc".into(),
                reason: "not built for arm64".into(),
            });
        check_one_release(&[amd64.clone(), without]).unwrap();
        arm64.manifest.components[0].version = "v1.3.4".into();
        let err = check_one_release(&[amd64, arm64]).unwrap_err();
        assert!(
            err.to_string().contains("not one release (runc: v1.3.3"),
            "{err}"
        );
        assert!(check_one_release(&[]).is_err());
    }

    #[test]
    fn subjects_are_unfolded_and_lose_their_patch_prefix() {
        assert_eq!(
            patch_subject(PATCH).unwrap(),
            "capability: probe the kernel when the file is missing"
        );
        assert_eq!(
            patch_subject("Subject: [PATCH] deps: one line\n\nbody\n").unwrap(),
            "deps: one line"
        );
        assert_eq!(patch_subject("no header here\n"), None);
    }
}
