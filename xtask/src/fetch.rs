//! The fetch stage: bring a component's pristine source into the cache, verified against its pin.
//!
//! Two backends:
//! - Go module proxy: `go mod download -json module@version`; the `h1:` hash it reports must
//!   equal the pin. On a mismatch the module is removed from the module cache again, so a bad
//!   download never stays cached.
//! - Release archive: an HTTP(S) GET (retried with backoff) streamed into a temporary file while
//!   hashing; only a file whose sha256 equals the pin is renamed into `downloads/sha256-<hex>`
//!   and unpacked (again via a temporary directory) into `trees/sha256-<hex>`.

use crate::config::{Component, SourceKind};
use crate::fsutil::remove_tree;
use crate::layout::Layout;
use crate::ui;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A verified pristine source tree. Read-only: the patch stage copies it.
#[derive(Debug, Clone)]
pub struct SourceTree {
    pub dir: PathBuf,
    /// The pin it was verified against: `h1:...` or `sha256:...`.
    pub hash: String,
    /// Whether anything was downloaded (false: served from the cache).
    pub downloaded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: hash mismatch: bundle.toml pins {expected}, the download has {actual}; the download was discarded. If upstream really changed, update the pin after checking why.")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is not in the cache ({where_}) and --offline forbids downloading it; run once without --offline")]
    NotCached { what: String, where_: String },
}

pub fn fetch(
    c: &Component,
    kind: SourceKind,
    layout: &Layout,
    offline: bool,
) -> Result<SourceTree> {
    match kind {
        SourceKind::Go => fetch_go_module(&c.module, &c.version, &c.sum, layout, offline),
        SourceKind::Archive => {
            if c.archive_url.is_empty() || c.archive_sha256.is_empty() {
                bail!(
                    "component `{}` has no archive_url/archive_sha256 pin in bundle.toml; \
                     measure it with `sha256sum` on a machine that can reach the URL, or use --source go",
                    c.name
                );
            }
            let what = format!("{} {}", c.name, c.version);
            fetch_archive(&what, &c.archive_url, &c.archive_sha256, layout, offline)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GoModDownload {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    sum: Option<String>,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    zip: Option<PathBuf>,
    #[serde(default)]
    info: Option<PathBuf>,
    #[serde(default)]
    go_mod: Option<PathBuf>,
}

/// The environment every `go` invocation of the pipeline runs with: our module cache, the local
/// toolchain only, writable module cache entries (so a rejected module can be removed).
pub fn go_command(layout: &Layout, offline: bool) -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GOMODCACHE", layout.gomodcache())
        .env("GOFLAGS", "-modcacherw -buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .envs(layout.go_env.iter().map(|(k, v)| (k, v)));
    if offline {
        cmd.env("GOPROXY", "off");
    }
    cmd
}

pub fn fetch_go_module(
    module: &str,
    version: &str,
    pin: &str,
    layout: &Layout,
    offline: bool,
) -> Result<SourceTree> {
    let what = format!("{module}@{version}");
    // A module already extracted and recorded as verified is served without running go at all.
    let marker = verified_marker(layout, module, version);
    if let Some((dir, recorded_pin)) = read_marker(&marker) {
        if recorded_pin == pin && dir.is_dir() {
            return Ok(SourceTree {
                dir,
                hash: pin.to_string(),
                downloaded: false,
            });
        }
    }
    let bar = ui::spinner(&format!("go mod download {what}"));
    let mut last_err = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(2u64.pow(attempt)));
        }
        let out = go_command(layout, offline)
            .args(["mod", "download", "-json", &what])
            .current_dir(std::env::temp_dir())
            .output()
            .context("cannot run `go`: is the Go toolchain installed? (scripts/install-deps.sh)")?;
        let info: GoModDownload = match serde_json::from_slice(&out.stdout) {
            Ok(i) => i,
            Err(_) => {
                last_err = Some(format!(
                    "go mod download {what} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                continue;
            }
        };
        if let Some(err) = &info.error {
            if offline {
                bar.finish_and_clear();
                return Err(FetchError::NotCached {
                    what,
                    where_: layout.gomodcache().display().to_string(),
                }
                .into());
            }
            last_err = Some(format!("go mod download {what}: {err}"));
            // "not available"/"unknown revision" will not get better by retrying.
            if err.contains("not available")
                || err.contains("unknown revision")
                || err.contains("invalid version")
            {
                break;
            }
            continue;
        }
        bar.finish_and_clear();
        let actual = info.sum.clone().unwrap_or_default();
        if actual != pin {
            discard_module(&info);
            return Err(FetchError::Mismatch {
                what,
                expected: pin.into(),
                actual,
            }
            .into());
        }
        let dir = info.dir.context("go mod download reported no Dir")?;
        std::fs::create_dir_all(marker.parent().unwrap())?;
        crate::fsutil::write_atomic(&marker, format!("{}\n{pin}\n", dir.display()).as_bytes())?;
        return Ok(SourceTree {
            dir,
            hash: pin.to_string(),
            downloaded: true,
        });
    }
    bar.finish_and_clear();
    bail!(
        "{}",
        last_err.unwrap_or_else(|| format!("go mod download {what} failed"))
    )
}

fn verified_marker(layout: &Layout, module: &str, version: &str) -> PathBuf {
    let key = crate::digest::sha256_bytes(format!("{module}@{version}").as_bytes());
    layout.cache.join("verified").join(key)
}

/// The marker says: this module's Dir was verified against this pin.
fn read_marker(marker: &Path) -> Option<(PathBuf, String)> {
    let text = std::fs::read_to_string(marker).ok()?;
    let mut lines = text.lines();
    Some((PathBuf::from(lines.next()?), lines.next()?.to_string()))
}

/// Remove a module whose hash did not match from Go's module cache.
fn discard_module(info: &GoModDownload) {
    if let Some(dir) = &info.dir {
        let _ = remove_tree(dir);
    }
    for file in [&info.zip, &info.info, &info.go_mod].into_iter().flatten() {
        let _ = std::fs::remove_file(file);
        // go keeps `<version>.ziphash` and `<version>.lock` beside the zip.
        let _ = std::fs::remove_file(file.with_extension("ziphash"));
    }
}

pub fn fetch_archive(
    what: &str,
    url: &str,
    sha256: &str,
    layout: &Layout,
    offline: bool,
) -> Result<SourceTree> {
    let sha256 = sha256.trim_start_matches("sha256:").to_ascii_lowercase();
    let file = layout.downloads().join(format!("sha256-{sha256}"));
    let tree = layout.trees().join(format!("sha256-{sha256}"));
    let hash = format!("sha256:{sha256}");
    if tree.is_dir() {
        return Ok(SourceTree {
            dir: tree,
            hash,
            downloaded: false,
        });
    }
    let mut downloaded = false;
    if !file.is_file() {
        if offline {
            return Err(FetchError::NotCached {
                what: format!("{what} ({url})"),
                where_: file.display().to_string(),
            }
            .into());
        }
        download_verified(what, url, &sha256, &file)?;
        downloaded = true;
    }
    unpack_tar_gz(&file, &tree).with_context(|| format!("cannot unpack {what} from {url}"))?;
    Ok(SourceTree {
        dir: tree,
        hash,
        downloaded,
    })
}

/// GET `url` into `dest` only if its sha256 equals `expected`; retried with exponential backoff
/// on connection errors and 5xx answers, not on 4xx.
pub fn download_verified(what: &str, url: &str, expected: &str, dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap();
    std::fs::create_dir_all(dir)?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .connect_timeout(Duration::from_secs(20))
        .build()?;
    let mut last_err = String::new();
    for attempt in 0..4u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 * 2u64.pow(attempt)));
        }
        let mut resp = match client.get(url).send() {
            Ok(r) => r,
            Err(e) => {
                last_err = format!("{e}");
                continue;
            }
        };
        let status = resp.status();
        if status.is_client_error() {
            bail!("{what}: {url} answered {status}; check the URL in bundle.toml");
        }
        if !status.is_success() {
            last_err = format!("{url} answered {status}");
            continue;
        }
        let bar = ui::bytes_bar(resp.content_length(), what);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let copied: std::io::Result<()> = (|| loop {
            let n = resp.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])?;
            bar.inc(n as u64);
        })();
        bar.finish_and_clear();
        if let Err(e) = copied {
            last_err = format!("download of {url} broke off: {e}");
            continue;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            // tmp is deleted when dropped: nothing enters the cache.
            return Err(FetchError::Mismatch {
                what: format!("{what} ({url})"),
                expected: format!("sha256:{expected}"),
                actual: format!("sha256:{actual}"),
            }
            .into());
        }
        tmp.as_file().sync_all()?;
        crate::fsutil::set_readable(tmp.path())?;
        tmp.persist(dest)?;
        return Ok(());
    }
    bail!("{what}: could not download {url} after 4 attempts: {last_err}")
}

/// Unpack a .tar.gz whose entries share one top directory (as GitHub archives do) into `dest`,
/// without that top directory. Unpacks into a temporary sibling first, then renames.
fn unpack_tar_gz(file: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap();
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::tempdir_in(parent)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(file)?));
    archive.set_preserve_permissions(true);
    archive.unpack(tmp.path())?;
    let mut tops = std::fs::read_dir(tmp.path())?.collect::<std::io::Result<Vec<_>>>()?;
    let root = if tops.len() == 1 && tops[0].file_type()?.is_dir() {
        tops.pop().unwrap().path()
    } else {
        tmp.path().to_path_buf()
    };
    std::fs::rename(&root, dest)?;
    Ok(())
}
