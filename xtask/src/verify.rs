//! `cargo xtask verify <tarball>` (`.tar.gz` or `.tar.zst`): the outer sha256 (from the `.sha256` beside it), every line of
//! the bundle's SHA256SUMS, no file that SHA256SUMS does not list, every file the manifest
//! vouches for, exactly the symlinks the manifest names, each pointing at a listed file
//! beside it, and every ELF file built for the manifest's `arch`. The first offending path is
//! the error.

use crate::digest::sha256_file;
use crate::package::{sidecar_path, Format};
use anyhow::{bail, Context, Result};
use bundle_format::{Manifest, Sums, MANIFEST_FILE, SUMS_FILE};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

#[derive(Debug)]
pub struct Verified {
    pub files: usize,
    pub manifest: Manifest,
}

pub fn verify(tarball: &Path) -> Result<Verified> {
    let sidecar = sidecar_path(tarball);
    let expected = std::fs::read_to_string(&sidecar).with_context(|| {
        format!(
            "{}: missing; it holds the tarball's sha256",
            sidecar.display()
        )
    })?;
    let expected = expected
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let actual = sha256_file(tarball)?;
    if expected != actual {
        bail!(
            "{}: sha256 is {actual}, but {} says {expected}: the download is corrupt or was altered",
            tarball.display(),
            sidecar.display()
        );
    }

    // Hash every regular file inside, keyed by its path below the bundle's top directory.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    // The ELF machine of every ELF file, checked against the manifest's arch below.
    let mut machines: BTreeMap<String, u16> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut sums_text = None;
    let mut manifest_text = None;
    let format = Format::of(tarball).with_context(|| {
        format!(
            "{}: not a bundle tarball (its name ends in .tar.gz or .tar.zst)",
            tarball.display()
        )
    })?;
    let mut archive = tar::Archive::new(format.decoder(tarball)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().to_string();
        let Some((_, rel)) = path.split_once('/') else {
            continue;
        };
        if rel.is_empty() || entry.header().entry_type().is_dir() {
            continue;
        }
        if entry.header().entry_type().is_symlink() {
            let target = entry.link_name()?.unwrap_or_default();
            links.insert(rel.to_string(), target.to_string_lossy().into_owned());
            continue;
        }
        if !entry.header().entry_type().is_file() {
            bail!("{path}: not a regular file; bundles hold only files, symlinks and directories");
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        match rel {
            SUMS_FILE => sums_text = Some(String::from_utf8(bytes.clone())?),
            MANIFEST_FILE => manifest_text = Some(bytes.clone()),
            _ => {}
        }
        if crate::elf::is_elf(&bytes) {
            let machine = crate::elf::machine(&bytes).with_context(|| path.clone())?;
            machines.insert(rel.to_string(), machine);
        }
        files.insert(rel.to_string(), hex::encode(Sha256::digest(&bytes)));
    }

    let sums_text = sums_text.context("SHA256SUMS: missing from the bundle")?;
    let mut listed = BTreeMap::new();
    for entry in Sums::parse(&sums_text)?.entries() {
        let (hash, path) = (&entry.sha256, &entry.path);
        match files.get(path) {
            None => bail!("{path}: listed in SHA256SUMS but missing from the bundle"),
            Some(h) if h != hash => bail!("{path}: sha256 is {h}, SHA256SUMS says {hash}"),
            Some(_) => {}
        }
        listed.insert(path.to_string(), hash.to_string());
    }
    if let Some(extra) = files
        .keys()
        .find(|p| *p != SUMS_FILE && !listed.contains_key(*p))
    {
        bail!("{extra}: in the bundle but not in SHA256SUMS (an extra file)");
    }

    let manifest: Manifest = serde_json::from_slice(
        &manifest_text.context("bundle-manifest.json: missing from the bundle")?,
    )
    .context("bundle-manifest.json: not a valid manifest")?;
    for (path, hash) in manifest.files() {
        match files.get(path) {
            None => bail!("{path}: named in bundle-manifest.json but missing from the bundle"),
            Some(h) if h != hash => {
                bail!("{path}: sha256 is {h}, bundle-manifest.json says {hash}")
            }
            Some(_) => {}
        }
    }
    let named: BTreeMap<String, String> = manifest
        .components
        .iter()
        .flat_map(|c| &c.links)
        .map(|l| (l.path.clone(), l.target.clone()))
        .collect();
    for (path, target) in &links {
        match named.get(path) {
            None => bail!("{path}: a symlink that bundle-manifest.json does not name"),
            Some(t) if t != target => {
                bail!("{path}: points to {target}, bundle-manifest.json says {t}")
            }
            Some(_) => {}
        }
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let resolved = format!("{dir}/{target}");
        if target.contains('/') || !listed.contains_key(&resolved) {
            bail!("{path}: points to {target}, which is not a listed file beside it");
        }
    }
    if let Some(missing) = named.keys().find(|p| !links.contains_key(*p)) {
        bail!("{missing}: named in bundle-manifest.json as a link but missing from the bundle");
    }
    let want = crate::target::elf_machine(manifest.arch);
    if let Some((path, machine)) = machines.iter().find(|(_, m)| **m != want) {
        bail!(
            "{path}: built for {}, but the bundle is for {} ({})",
            crate::elf::machine_name(*machine),
            manifest.arch,
            crate::elf::machine_name(want)
        );
    }
    Ok(Verified {
        files: files.len(),
        manifest,
    })
}
