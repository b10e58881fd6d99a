//! sha256 of files, byte strings and whole trees; the keys of every cache and stamp.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A hash of a directory's relative paths, modes and contents, in sorted order. Used as a stage
/// input (our crates, overlays, templates), so any edit to a file changes it.
pub fn sha256_tree(root: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut entries: Vec<_> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("cannot walk {}", root.display()))?;
    entries.retain(|e| e.file_type().is_file());
    for entry in entries {
        let rel = entry.path().strip_prefix(root).unwrap();
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(sha256_file(entry.path())?.as_bytes());
        hasher.update([executable(entry.path()) as u8]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A hash over a list of strings (each already a hash, a flag, a version, ...).
pub fn combine<I, S>(parts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_ref().as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
