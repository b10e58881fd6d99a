//! Small filesystem operations the stages share: atomic writes and tree copies.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    set_readable(tmp.path())?;
    tmp.persist(path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

/// Temporary files are created 0600; what we publish is world-readable like any build output.
pub fn set_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Copy a tree (files, directories, symlinks), making everything writable by the owner: the Go
/// module cache is read-only, and our copies get patched.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let rel = entry.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
            let mode = entry.metadata()?.permissions().mode() | 0o200;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Remove a tree even when the Go module cache made it read-only.
pub fn remove_tree(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !path.exists() {
        return Ok(());
    }
    detach_mounts_under(path);
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// Lazily unmounts whatever is mounted under `path`, deepest first, so that removing the tree
/// never walks into another filesystem: an interrupted e2e leaves runsc's null network
/// namespace bind-mounted in its state dir (`Device or resource busy` on the next run).
fn detach_mounts_under(path: &Path) {
    let Ok(path) = path.canonicalize() else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut under: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        // /proc/self/mounts escapes spaces and such as octal; our paths have none.
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(&path))
        .collect();
    under.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    for mount in under {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .status();
    }
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Replaces the text between `<!-- NAME -->` and `<!-- /NAME -->` in `file` with `text`, so a
/// generated table in a document is regenerated, never typed.
pub fn replace_between_markers(file: &Path, name: &str, text: &str) -> Result<()> {
    let old =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (open, close) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->"));
    let (Some(start), Some(end)) = (old.find(&open), old.find(&close)) else {
        anyhow::bail!(
            "{} has no `{open}` ... `{close}` markers: add them where the generated text goes",
            file.display()
        );
    };
    let new = format!("{}{open}\n{text}{}", &old[..start], &old[end..]);
    write_atomic(file, new.as_bytes())
}

/// The text between `<!-- NAME -->` and `<!-- /NAME -->` in `file`, if it has them.
pub fn between_markers(file: &Path, name: &str) -> Result<Option<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (open, close) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->"));
    Ok(match (text.find(&open), text.find(&close)) {
        (Some(start), Some(end)) if start + open.len() <= end => Some(
            text[start + open.len()..end]
                .trim_start_matches('\n')
                .to_string(),
        ),
        _ => None,
    })
}

/// The directories directly under `dir`, sorted by name.
pub fn sorted_dirs(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is mounted under a tree is unmounted, not emptied: the bind mount's source keeps
    /// its file.
    #[test]
    fn remove_tree_never_deletes_through_a_mount() {
        if !testkit::root_or_skip("bind-mounts a directory") {
            return;
        }
        let temp = tempfile::tempdir().unwrap();
        let (tree, outside) = (temp.path().join("tree"), temp.path().join("outside"));
        std::fs::create_dir_all(tree.join("state/null-netns")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let bind = std::process::Command::new("mount")
            .arg("--bind")
            .arg(&outside)
            .arg(tree.join("state/null-netns"))
            .status()
            .unwrap();
        assert!(bind.success());
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
    }
}
