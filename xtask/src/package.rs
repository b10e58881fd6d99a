//! The package stage: a staging tree (bundle-template + overlays + binaries + images +
//! manifest + SHA256SUMS) turned into a deterministic tar.gz: entries sorted, every mtime the
//! pinned source date, uid/gid 0, no user or group names, modes normalized to 0755/0644, and a
//! gzip header without a timestamp. The same staging tree always gives the same bytes.

use crate::digest::{executable, sha256_file};
use crate::fsutil::{copy_tree, remove_tree, write_atomic};
use crate::tarball::TarWriter;
use anyhow::{Context, Result};
use bundle_manifest::Manifest;
use std::path::{Path, PathBuf};

/// One file that goes into the bundle: where it comes from and where it lands.
#[derive(Debug, Clone)]
pub struct BundleFile {
    pub from: BundleFileSource,
    /// Path inside the bundle, e.g. `bin/runc`.
    pub to: String,
}

#[derive(Debug, Clone)]
pub enum BundleFileSource {
    /// A copy of this file.
    File(PathBuf),
    /// A symlink with this target (relative to its own directory).
    Symlink(String),
}

impl BundleFile {
    pub fn file(from: PathBuf, to: String) -> Self {
        BundleFile {
            from: BundleFileSource::File(from),
            to,
        }
    }

    pub fn symlink(target: String, to: String) -> Self {
        BundleFile {
            from: BundleFileSource::Symlink(target),
            to,
        }
    }
}

/// Lay out the bundle under `root` (emptied first) and write its manifest and SHA256SUMS.
pub fn stage(
    root: &Path,
    template: &Path,
    overlays: &Path,
    files: &[BundleFile],
    manifest: &Manifest,
) -> Result<()> {
    remove_tree(root)?;
    std::fs::create_dir_all(root)?;
    if template.is_dir() {
        copy_tree(template, root)?;
    }
    if overlays.is_dir() {
        copy_tree(overlays, &root.join("etc"))?;
    }
    for f in files {
        let dest = root.join(&f.to);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        match &f.from {
            BundleFileSource::File(from) => {
                std::fs::copy(from, &dest)
                    .with_context(|| format!("cannot stage {} as {}", from.display(), f.to))?;
            }
            BundleFileSource::Symlink(target) => std::os::unix::fs::symlink(target, &dest)?,
        }
    }
    write_atomic(
        &root.join("bundle-manifest.json"),
        &serde_json::to_vec_pretty(manifest)?,
    )?;
    write_sha256sums(root)
}

/// `sha256sum`-compatible list of every regular file in the tree but itself, sorted by path.
/// Symlinks are not listed: the manifest lists them (with their targets), and their targets are.
fn write_sha256sums(root: &Path) -> Result<()> {
    let mut lines = String::new();
    for rel in sorted_entries(root)? {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_file() && rel != Path::new("SHA256SUMS") {
            lines.push_str(&format!("{}  {}\n", sha256_file(&path)?, rel.display()));
        }
    }
    write_atomic(&root.join("SHA256SUMS"), lines.as_bytes())
}

/// Every path under `root`, relative, sorted bytewise (a directory before its contents).
fn sorted_entries(root: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e?;
        entries.push(e.path().strip_prefix(root).unwrap().to_path_buf());
    }
    entries.sort();
    Ok(entries)
}

/// Write `root` as `<top>/...` into a deterministic tar.gz at `out`, atomically.
pub fn write_tarball(root: &Path, top: &str, out: &Path, mtime: u64) -> Result<()> {
    let dir = out.parent().unwrap();
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(tmp.as_file().try_clone()?, flate2::Compression::default());
    let mut tar = TarWriter::new(gz, mtime);
    tar.dir(&format!("{top}/"))?;
    for rel in sorted_entries(root)? {
        let path = root.join(&rel);
        let name = format!("{top}/{}", rel.display());
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            tar.dir(&format!("{name}/"))?;
        } else if meta.is_file() {
            let mode = if executable(&path) { 0o755 } else { 0o644 };
            tar.file(&name, mode, meta.len(), std::fs::File::open(&path)?)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            tar.symlink(&name, &target.to_string_lossy())?;
        } else {
            anyhow::bail!(
                "{} is neither a file, a symlink nor a directory; bundles hold only those",
                path.display()
            );
        }
    }
    let gz = tar.finish()?;
    gz.finish()?.sync_all()?;
    crate::fsutil::set_readable(tmp.path())?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// `dist/<name>.tar.gz.sha256` in `sha256sum` format.
pub fn write_sidecar(tarball: &Path) -> Result<PathBuf> {
    let sidecar = sidecar_path(tarball);
    let line = format!(
        "{}  {}\n",
        sha256_file(tarball)?,
        tarball.file_name().unwrap().to_string_lossy()
    );
    write_atomic(&sidecar, line.as_bytes())?;
    Ok(sidecar)
}

pub fn sidecar_path(tarball: &Path) -> PathBuf {
    let mut s = tarball.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}
