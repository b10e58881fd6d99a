//! The git tree id of a directory, computed in-process with libgit2 (no `git` binary), exactly
//! as `git add -f -A && git write-tree` in a fresh repository would compute it.
//!
//! This is how every upstream source is pinned (`tree` in bundle.toml): a git tree id names the
//! content of a commit's files, whatever carried them (a GitHub archive, a mirror, a git fetch),
//! while a byte hash of an archive breaks whenever the archiver's compression changes.
//!
//! What git counts, and so what counts here: regular files (mode 100755 when the owner may
//! execute, else 100644), symlinks (mode 120000, the blob is the link target) and directories
//! holding at least one of those (an empty directory is not in git). Nothing else: timestamps,
//! owners and other permission bits do not change the id.

use anyhow::{bail, Context, Result};
use git2::{ObjectType, Oid, Repository};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The git tree id of `dir`'s content.
pub fn tree_id(dir: &Path) -> Result<String> {
    // Trees are written to an in-memory object database; blobs are only hashed, never stored,
    // so hashing hundreds of MiB of source costs no memory. libgit2 would refuse a tree entry
    // whose blob is not in the database, so that check is turned off.
    git2::opts::strict_object_creation(false);
    let odb = git2::Odb::new()?;
    odb.add_new_mempack_backend(1)?;
    let repo = Repository::from_odb(odb)?;
    match write_tree(&repo, dir)? {
        Some(id) => Ok(id.to_string()),
        None => bail!(
            "{} holds no file: git has no tree for an empty directory",
            dir.display()
        ),
    }
}

/// Write the tree of `dir` into `repo`'s object database; None for a directory git would not
/// record (no file below it).
fn write_tree(repo: &Repository, dir: &Path) -> Result<Option<Oid>> {
    let mut builder = repo.treebuilder(None)?;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.as_bytes() == b".git" {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        let file_type = meta.file_type();
        let (id, mode) = if file_type.is_symlink() {
            let target = std::fs::read_link(&path)?;
            (
                Oid::hash_object(ObjectType::Blob, target.as_os_str().as_bytes())?,
                0o120000,
            )
        } else if file_type.is_dir() {
            match write_tree(repo, &path)? {
                Some(id) => (id, 0o040000),
                None => continue,
            }
        } else if file_type.is_file() {
            let mode = if meta.permissions().mode() & 0o100 != 0 {
                0o100755
            } else {
                0o100644
            };
            let id = Oid::hash_file(ObjectType::Blob, &path)
                .with_context(|| format!("cannot hash {}", path.display()))?;
            (id, mode)
        } else {
            bail!(
                "{} is neither a file, a directory nor a symlink: git cannot record it",
                path.display()
            );
        };
        builder.insert(&name, id, mode)?;
    }
    if builder.is_empty() {
        return Ok(None);
    }
    Ok(Some(builder.write()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::git;

    /// A fixture with everything git distinguishes: a symlink, an executable, nested
    /// directories, names that sort differently as files and as trees (`a.b` vs `a/`), and an
    /// empty directory git ignores.
    #[test]
    fn a_fixture_repository_hashes_to_what_git_prints() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/deeper/still")).unwrap();
        std::fs::create_dir_all(d.join("empty/inner")).unwrap();
        std::fs::write(d.join("a/deeper/still/file.txt"), "nested\n").unwrap();
        std::fs::write(d.join("a.b"), "sorts before a/ as a file\n").unwrap();
        std::fs::write(d.join("a-"), "and this one\n").unwrap();
        std::fs::write(d.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(d.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("group-exec-only"), "x").unwrap();
        std::fs::set_permissions(
            d.join("group-exec-only"),
            std::fs::Permissions::from_mode(0o654),
        )
        .unwrap();
        std::os::unix::fs::symlink("a/deeper/still/file.txt", d.join("link")).unwrap();
        std::os::unix::fs::symlink("does-not-exist", d.join("dangling")).unwrap();

        git(d, &["init", "-q"]);
        git(d, &["add", "-f", "-A"]);
        git(d, &["commit", "-q", "-m", "fixture"]);
        let expected = git(d, &["rev-parse", "HEAD^{tree}"]);
        // The .git directory itself must not count.
        assert_eq!(tree_id(d).unwrap(), expected);

        // One more exec bit changes the id, as it does for git.
        std::fs::set_permissions(d.join("a.b"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(tree_id(d).unwrap(), expected);
    }

    #[test]
    fn an_empty_directory_has_no_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = tree_id(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("holds no file"), "{err:#}");
    }
}
