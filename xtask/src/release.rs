//! `cargo xtask release --dry-run`: everything a GitHub Release of one bundle consists of,
//! produced locally from the bundle tarball alone.
//!
//! The release workflow (ci/release.yml) runs this after `cargo xtask bundle` and `cargo xtask
//! verify`, uploads every file of `<out>/assets/` and uses `<out>/release-notes.md` as the body;
//! so what this command writes is exactly what a release publishes. It reads the manifest out of
//! the tarball (through `verify`, so a damaged bundle is never released) and the patch subjects
//! from the repository's patch files, checked against the sha256 the manifest recorded.
//!
//! It also writes the release's SHA256SUMS (the tarball and the SBOM: the files the workflow
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
use bundle_format::Manifest;
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
    /// The bundle to release (default: dist/<name>-<version>-linux-<arch>.tar.gz from bundle.toml).
    #[arg(long)]
    pub tarball: Option<PathBuf>,
    /// Where to write `assets/` and `release-notes.md` (default: dist/release).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The git tag being released: it must equal the bundle's version, and the bundle must
    /// omit nothing (the workflow passes the tag that triggered it, so a tag and a bundle that
    /// disagree, or an incomplete bundle, are never published).
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

/// What `dry_run` wrote.
#[derive(Debug)]
pub struct ReleasePlan {
    /// The files of the release before signing: the tarball, its `.sha256`, the SBOM and
    /// SHA256SUMS (the workflow adds a `.sigstore.json` signature of the tarball and the SBOM).
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
    let tarball = args.tarball.unwrap_or_else(|| {
        layout
            .dist
            .join(format!("{}.tar.gz", config.bundle.artifact_name(&[])))
    });
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
    let manifest = verified.manifest;
    if let Some(tag) = &args.tag {
        check_publishable(&manifest, tag)?;
    }
    let out_dir = args.out_dir.unwrap_or_else(|| layout.dist.join("release"));
    let signer = Signer::new(
        args.repository,
        args.tag.as_deref().unwrap_or(&manifest.version),
    );
    let plan = dry_run(&manifest, &tarball, &layout.repo, &out_dir, &signer)?;
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

/// What a tagged (published) release must satisfy beyond `verify`: the tag is the bundle's
/// version, and the bundle lacks nothing it was meant to hold (a dry run without `--tag` may
/// preview an incomplete bundle; its notes say what is missing).
pub fn check_publishable(manifest: &Manifest, tag: &str) -> Result<()> {
    if tag != manifest.version {
        bail!(
            "tag `{tag}` is not the bundle's version `{}`: tag the commit with the version in \
             bundle.toml ([bundle] version), or bump that version and rebuild",
            manifest.version
        );
    }
    if let Some(o) = manifest.omitted.first() {
        bail!(
            "the bundle was built without {} ({}); a release must be complete: rebuild with \
             `cargo xtask bundle` (without --without-{})",
            o.name,
            sbom::one_line(&o.reason),
            o.name
        );
    }
    Ok(())
}

/// Write into `out_dir` the release of `tarball` (whose manifest is `manifest`):
/// `assets/<tarball>`, `assets/<tarball>.sha256`, `assets/<name>.cdx.json` (CycloneDX SBOM),
/// `assets/SHA256SUMS` (tarball and SBOM), `release-notes.md` and `signing-plan.json` (as
/// `signer`). `repo` is the checkout whose patches/ built the bundle. `out_dir/assets` is
/// emptied first, so it holds exactly the release's files (before the signatures).
pub fn dry_run(
    manifest: &Manifest,
    tarball: &Path,
    repo: &Path,
    out_dir: &Path,
    signer: &Signer,
) -> Result<ReleasePlan> {
    let patches = resolve_patches(manifest, repo)?;
    let file_name = tarball
        .file_name()
        .context("the tarball path has no file name")?
        .to_string_lossy()
        .to_string();
    let stem = file_name
        .strip_suffix(".tar.gz")
        .with_context(|| format!("{file_name}: a bundle tarball's name ends in .tar.gz"))?;

    let assets_dir = out_dir.join("assets");
    if assets_dir.exists() {
        std::fs::remove_dir_all(&assets_dir)
            .with_context(|| format!("cannot empty {}", assets_dir.display()))?;
    }
    std::fs::create_dir_all(&assets_dir)
        .with_context(|| format!("cannot create {}", assets_dir.display()))?;

    let released = assets_dir.join(&file_name);
    link_or_copy(tarball, &released)?;
    let tarball_sha256 = sha256_file(&released)?;
    let sidecar = write_sidecar(&released)?;
    // The .tar.zst of the same tar, where the bundle was packaged with it (bundle.toml's
    // `formats`): released, summed and signed beside the .tar.gz.
    let zst_name = format!("{stem}.{}", Format::TarZst.extension());
    let zst = tarball.with_file_name(&zst_name);
    let released_zst = if zst.is_file() {
        let released_zst = assets_dir.join(&zst_name);
        link_or_copy(&zst, &released_zst)?;
        let zst_sidecar = write_sidecar(&released_zst)?;
        Some((released_zst, zst_sidecar))
    } else {
        None
    };

    let sbom_path = assets_dir.join(format!("{stem}.cdx.json"));
    let sbom = sbom::cyclonedx(&SbomInputs {
        manifest,
        tarball_name: &file_name,
        tarball_sha256: &tarball_sha256,
        patches: &patches,
    });
    let mut sbom_bytes = serde_json::to_vec_pretty(&sbom)?;
    sbom_bytes.push(b'\n');
    write_atomic(&sbom_path, &sbom_bytes)?;

    // The signed and attested files: what a user runs, and what describes it.
    let mut signed = vec![released.clone()];
    signed.extend(released_zst.iter().map(|(z, _)| z.clone()));
    signed.push(sbom_path.clone());
    let subjects = signing::write_checksums(&assets_dir, &signed)?;
    let signing_plan = out_dir.join("signing-plan.json");
    let mut plan_bytes = serde_json::to_vec_pretty(&signing::plan(signer, &subjects))?;
    plan_bytes.push(b'\n');
    write_atomic(&signing_plan, &plan_bytes)?;

    let mut assets = Vec::new();
    let checksums = assets_dir.join(signing::CHECKSUMS);
    let mut files = vec![released, sidecar];
    if let Some((z, z_sidecar)) = released_zst {
        files.extend([z, z_sidecar]);
    }
    files.extend([sbom_path, checksums]);
    for path in files {
        assets.push(Asset {
            sha256: sha256_file(&path)?,
            size: std::fs::metadata(&path)?.len(),
            path,
        });
    }
    let notes = out_dir.join("release-notes.md");
    write_atomic(
        &notes,
        release_notes(manifest, &patches, &assets, signer).as_bytes(),
    )?;
    Ok(ReleasePlan {
        assets,
        notes,
        signing_plan,
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

/// The release body: how to get and check the bundle, then what is in it and where from.
pub fn release_notes(
    manifest: &Manifest,
    patches: &BTreeMap<String, Vec<PatchInfo>>,
    assets: &[Asset],
    signer: &Signer,
) -> String {
    let name = |a: &Asset| a.path.file_name().unwrap().to_string_lossy().to_string();
    let tarball = assets.first().map(name).unwrap_or_default();
    let top = tarball.strip_suffix(".tar.gz").unwrap_or(&tarball);
    let mut s = String::new();
    let _ = writeln!(s, "# {} {}\n", manifest.name, manifest.version);
    let _ = writeln!(
        s,
        "k3s for gVisor sandboxes: one self-contained bundle for linux/{}. Extract it inside \
         the sandbox and run `./install`.\n",
        manifest.arch
    );
    let _ = writeln!(s, "## Install\n");
    let _ = writeln!(s, "```sh");
    let _ = writeln!(s, "sha256sum -c {tarball}.sha256");
    let _ = writeln!(s, "tar -xzf {tarball}");
    let _ = writeln!(s, "cd {top} && ./install");
    let _ = writeln!(s, "```\n");
    let zst = format!("{top}.{}", Format::TarZst.extension());
    if assets.iter().any(|a| name(a) == zst) {
        let _ = writeln!(
            s,
            "`{zst}` is the same tar compressed with zstd: smaller, and faster to unpack where \
             the `zstd` program is installed (`sha256sum -c {zst}.sha256`, then `tar -xf {zst}`).\n"
        );
    }
    let _ = writeln!(s, "## Verify the signature and the build provenance\n");
    let _ = writeln!(
        s,
        "The tarballs and the SBOM are listed in `{}`, and each has a keyless cosign signature \
         (`<file>{}`) and a build provenance attestation, both made by the release workflow \
         (`{}`) at this tag:\n",
        signing::CHECKSUMS,
        signing::SIGNATURE_SUFFIX,
        signing::RELEASE_WORKFLOW
    );
    let _ = writeln!(s, "```sh");
    for command in signer.verify_commands(&tarball) {
        let _ = writeln!(s, "{command}");
    }
    let _ = writeln!(s, "```\n");
    let _ = writeln!(
        s,
        "Inside the bundle, `sha256sum -c SHA256SUMS` checks every file. The CycloneDX SBOM \
         names every shipped binary with its upstream source, version, sha256 and patches.\n"
    );
    let _ = writeln!(s, "## Assets\n");
    let _ = writeln!(s, "| file | bytes | sha256 |");
    let _ = writeln!(s, "|---|---|---|");
    for a in assets {
        let _ = writeln!(s, "| `{}` | {} | `{}` |", name(a), a.size, a.sha256);
    }
    let _ = writeln!(s, "\n## Components\n");
    let _ = writeln!(s, "| component | version | source | patches |");
    let _ = writeln!(s, "|---|---|---|---|");
    for c in &manifest.components {
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
    for c in &manifest.components {
        let _ = writeln!(s, "\n### {} {}\n", c.name, c.version);
        let _ = writeln!(
            s,
            "- source: {} `{}` (`{}`)",
            c.source.transport, c.source.location, c.source.content
        );
        if let (Some(repository), Some(commit)) = (&c.source.repository, &c.source.commit) {
            let _ = writeln!(s, "- upstream: {repository} commit `{commit}`");
        }
        for o in &c.outputs {
            let _ = writeln!(s, "- `{}`: sha256 `{}`", o.path, o.sha256);
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
    if !manifest.images.is_empty() {
        let _ = writeln!(s, "\n## Images\n");
        for i in &manifest.images {
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
    if !manifest.omitted.is_empty() {
        let _ = writeln!(s, "\n## Not in this bundle\n");
        for o in &manifest.omitted {
            // Reasons can carry a tool's multi-line output; one list item each.
            let _ = writeln!(s, "- {}: {}", o.name, sbom::one_line(&o.reason));
        }
    }
    if !manifest.not_on_this_arch.is_empty() {
        let _ = writeln!(s, "\n## Not in linux-{} bundles\n", manifest.arch);
        for o in &manifest.not_on_this_arch {
            let _ = writeln!(s, "- {}: {}", o.name, sbom::one_line(&o.reason));
        }
    }
    let _ = writeln!(
        s,
        "\nBuilt to be reproducible (SOURCE_DATE_EPOCH={}): `cargo xtask bundle` at this tag, \
         with the Go and Rust versions pinned in ci/release.yml, should give a tarball with the \
         same sha256.",
        manifest.source_date_epoch
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

    /// A repository with one patch, and a packaged bundle whose manifest records it.
    fn fixture(root: &Path) -> (Manifest, PathBuf) {
        let repo = root.join("repo");
        std::fs::create_dir_all(repo.join("patches/runc")).unwrap();
        std::fs::write(repo.join("patches/runc/0001-probe.patch"), PATCH).unwrap();
        let bin = root.join("runc");
        std::fs::write(&bin, b"not really runc\n").unwrap();
        // Built from JSON so that fields the manifest gains later (with serde defaults) do not
        // break this fixture.
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "name": "tiny",
            "version": "v1.0.0-gvisor.1",
            "arch": "amd64",
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
        let stage = root.join("stage");
        let files = [BundleFile::file(bin, "bin/runc".into())];
        package::stage(
            &stage,
            &root.join("none"),
            &root.join("none"),
            &files,
            &manifest,
        )
        .unwrap();
        let tarball = root.join("dist/tiny-v1.0.0-gvisor.1-linux-amd64.tar.gz");
        package::write_tarball(&stage, "tiny-v1.0.0-gvisor.1-linux-amd64", &tarball, 1).unwrap();
        package::write_sidecar(&tarball).unwrap();
        (manifest, tarball)
    }

    #[test]
    fn dry_run_writes_exactly_the_assets_and_notes() {
        let t = tempfile::tempdir().unwrap();
        let (manifest, tarball) = fixture(t.path());
        let out = t.path().join("release");
        // A leftover from an earlier run must not be uploaded.
        std::fs::create_dir_all(out.join("assets")).unwrap();
        std::fs::write(out.join("assets/stale.tar.gz"), "old").unwrap();

        let plan = dry_run(&manifest, &tarball, &t.path().join("repo"), &out, &signer()).unwrap();
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
            &format!("`bin/runc`: sha256 `{}`", manifest.components[0].outputs[0].sha256),
            &plan.assets[2].sha256,
            "## Not in this bundle\n\n- k3s: left out on purpose (--without-k3s)",
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
        let again = dry_run(&manifest, &tarball, &t.path().join("repo"), &out, &signer()).unwrap();
        assert_eq!(first, std::fs::read(&again.assets[2].path).unwrap());
    }

    #[test]
    fn a_patch_that_changed_since_the_build_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let (manifest, tarball) = fixture(t.path());
        let repo = t.path().join("repo");
        std::fs::write(
            repo.join("patches/runc/0001-probe.patch"),
            format!("{PATCH}x"),
        )
        .unwrap();
        let err =
            dry_run(&manifest, &tarball, &repo, &t.path().join("out"), &signer()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("patches/runc/0001-probe.patch") && msg.contains("changed since"),
            "{msg}"
        );
        std::fs::remove_file(repo.join("patches/runc/0001-probe.patch")).unwrap();
        let err =
            dry_run(&manifest, &tarball, &repo, &t.path().join("out"), &signer()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not in this checkout"),
            "{err:#}"
        );
    }

    #[test]
    fn a_tagged_release_needs_the_matching_version_and_a_complete_bundle() {
        let t = tempfile::tempdir().unwrap();
        let (mut manifest, _) = fixture(t.path());
        let err = check_publishable(&manifest, "v9").unwrap_err().to_string();
        assert!(
            err.contains("tag `v9` is not the bundle's version `v1.0.0-gvisor.1`"),
            "{err}"
        );
        let err = check_publishable(&manifest, "v1.0.0-gvisor.1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("built without k3s (left out on purpose (--without-k3s))"),
            "{err}"
        );
        manifest.omitted.clear();
        check_publishable(&manifest, "v1.0.0-gvisor.1").unwrap();
        // What an architecture's bundles cannot hold (arm64: the launcher) is no gap: an arm64
        // bundle without it is complete, and publishable.
        manifest.arch = bundle_format::Arch::Arm64;
        manifest
            .not_on_this_arch
            .push(bundle_format::OmittedRecord {
                name: "launcher".into(),
                reason: "not built for arm64: x86_64 only".into(),
            });
        check_publishable(&manifest, "v1.0.0-gvisor.1").unwrap();
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
