//! The package stage: a staging tree (bundle-template + overlays + binaries + images +
//! manifest + SHA256SUMS) turned into deterministic tarballs: entries sorted, every mtime the
//! pinned source date, uid/gid 0, no user or group names, modes normalized to 0755/0644. The
//! `.tar.gz` has a gzip header without a timestamp; the `.tar.zst` beside it is the same tar,
//! smaller and faster to unpack. The same staging tree always gives the same bytes.

use crate::digest::{executable, sha256_file};
use crate::fsutil::{copy_tree, remove_tree, write_atomic};
use crate::tarball::TarWriter;
use anyhow::{Context, Result};
use bundle_format::paths as in_bundle;
use bundle_format::{Manifest, Sums, MANIFEST_FILE, SUMS_FILE};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// How a bundle tarball is compressed (bundle.toml `[bundle] formats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Format {
    /// gzip: every `tar` unpacks it (`tar -xzf`), busybox's included.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// zstd: about a fifth smaller and four times faster to decompress than the gzip (measured
    /// in BENCHMARKS.md); `tar -xf` unpacks it where the `zstd` program is installed.
    #[serde(rename = "tar.zst")]
    TarZst,
}

/// zstd's level 12 with a 128 MiB window (`--long=27`): the window is what finds the repeats
/// between the Go binaries (k3s, containerd, ctr share most of their libraries), and 2^27 is
/// the largest window `zstd -d` (and so `tar -xf`) accepts without `--long` of its own. Level
/// 12, not 19: on the 472 MiB tar, 19 is 7% smaller and took 17 times the CPU (BENCHMARKS.md,
/// "The download"), minutes of every build and of CI's two packagings.
const ZSTD_LEVEL: i32 = 12;
const ZSTD_WINDOW_LOG: u32 = 27;
/// Worker threads. zstd's output is the same for any number of workers from 1 up (so the
/// tarball does not depend on the machine); 2 halves the time on this 2-CPU builder.
const ZSTD_WORKERS: u32 = 2;

/// The compression settings, for the package stage's stamp: a tarball written with other
/// settings is stale.
pub fn compression_settings() -> String {
    format!("gzip default; zstd level {ZSTD_LEVEL} window_log {ZSTD_WINDOW_LOG}")
}

impl Format {
    pub const ALL: [Format; 2] = [Format::TarGz, Format::TarZst];

    pub fn extension(self) -> &'static str {
        match self {
            Format::TarGz => "tar.gz",
            Format::TarZst => "tar.zst",
        }
    }

    /// The format a tarball's file name says, if any (`.tgz` is a `.tar.gz`: Helm's charts).
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy();
        if name.ends_with(".tgz") {
            return Some(Format::TarGz);
        }
        Format::ALL
            .into_iter()
            .find(|f| name.ends_with(&format!(".{}", f.extension())))
    }

    /// The tarball's uncompressed tar stream.
    pub fn decoder(self, path: &Path) -> Result<Box<dyn Read>> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(match self {
            Format::TarGz => Box::new(flate2::read::GzDecoder::new(file)),
            Format::TarZst => Box::new(zstd::stream::read::Decoder::new(file)?),
        })
    }

    fn encoder(self, file: std::fs::File) -> Result<Box<dyn FinishWrite>> {
        Ok(match self {
            Format::TarGz => Box::new(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(file, flate2::Compression::default()),
            ),
            Format::TarZst => {
                let mut z = zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?;
                z.window_log(ZSTD_WINDOW_LOG)?;
                z.long_distance_matching(true)?;
                z.multithread(ZSTD_WORKERS)?;
                // The frame's checksum of the content: `zstd -d` checks it as tar unpacks.
                z.include_checksum(true)?;
                Box::new(z)
            }
        })
    }
}

/// A compressing writer that must be told the stream ended (gzip's trailer, zstd's last frame).
trait FinishWrite: Write {
    fn finish_stream(self: Box<Self>) -> Result<std::fs::File>;
}

impl FinishWrite for flate2::write::GzEncoder<std::fs::File> {
    fn finish_stream(self: Box<Self>) -> Result<std::fs::File> {
        Ok(self.finish()?)
    }
}

impl FinishWrite for zstd::stream::write::Encoder<'static, std::fs::File> {
    fn finish_stream(self: Box<Self>) -> Result<std::fs::File> {
        Ok(self.finish()?)
    }
}

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
        copy_tree(overlays, &root.join(in_bundle::ETC_DIR))?;
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
        &root.join(MANIFEST_FILE),
        &serde_json::to_vec_pretty(manifest)?,
    )?;
    write_sha256sums(root)
}

/// SHA256SUMS of every regular file in the tree but itself, sorted by path. Symlinks are not
/// listed: the manifest lists them (with their targets), and their targets are.
fn write_sha256sums(root: &Path) -> Result<()> {
    let mut sums = Sums::new();
    for rel in sorted_entries(root)? {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_file() && rel != Path::new(SUMS_FILE) {
            sums.push(&sha256_file(&path)?, &rel.display().to_string())?;
        }
    }
    write_atomic(&root.join(SUMS_FILE), sums.write().as_bytes())
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

/// Write `root` as `<top>/...` into a deterministic tarball at `out` (compressed as its name
/// says: `.tar.gz` or `.tar.zst`), atomically.
pub fn write_tarball(root: &Path, top: &str, out: &Path, mtime: u64) -> Result<()> {
    let format = Format::of(out).with_context(|| {
        format!(
            "{}: a tarball's name ends in .tar.gz (or .tgz) or .tar.zst",
            out.display()
        )
    })?;
    let dir = out.parent().unwrap();
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut tar = TarWriter::new(format.encoder(tmp.as_file().try_clone()?)?, mtime);
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
    tar.finish()?.finish_stream()?.sync_all()?;
    crate::fsutil::set_readable(tmp.path())?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// `dist/<name>.tar.gz.sha256` (or `.tar.zst.sha256`) in `sha256sum` format.
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
