//! The patch stage: a fresh copy of a pristine tree, then patches/<component>/*.patch applied in
//! name order with git2 (libgit2's `git apply`). A patch that does not apply is reported with the
//! patch, the file and the hunk it stopped at.

use crate::fsutil::{copy_tree, remove_tree};
use crate::layout::Layout;
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The patch files of a component, in the order they apply.
pub fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "patch"));
    files.sort();
    Ok(files)
}

#[derive(Debug, thiserror::Error)]
#[error("patch {patch} does not apply: file {file}, hunk {hunk}: {reason}")]
pub struct PatchError {
    pub patch: String,
    pub file: String,
    /// The hunk's header as it stands in the patch (`@@ -12,7 +12,9 @@ ...`).
    pub hunk: String,
    pub reason: String,
}

/// Make `dest` a fresh copy of `pristine`, vendored if asked, with `patches` applied in order.
pub fn prepare_tree(
    pristine: &Path,
    dest: &Path,
    vendor: bool,
    patches: &[PathBuf],
    layout: &Layout,
    log: &Path,
) -> Result<()> {
    remove_tree(dest)?;
    std::fs::create_dir_all(dest.parent().unwrap())?;
    copy_tree(pristine, dest)
        .with_context(|| format!("cannot copy {} to {}", pristine.display(), dest.display()))?;
    let mut vendored = false;
    for patch in patches {
        // A patch to go.mod (e.g. a dependency fix) must land before vendoring, a patch to
        // vendored code after it: vendor right before the first patch that touches vendor/.
        if vendor && !vendored && touches_vendor(patch)? {
            go_mod_vendor(dest, layout, log)?;
            vendored = true;
        }
        apply_patch(dest, patch)?;
    }
    if vendor && !vendored {
        go_mod_vendor(dest, layout, log)?;
    }
    Ok(())
}

fn touches_vendor(patch: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(patch)
        .with_context(|| format!("cannot read {}", patch.display()))?;
    Ok(text.lines().any(|l| l.starts_with("diff --git a/vendor/")))
}

/// Module zips carry no vendor/ tree, and a go.mod fix makes a committed one stale: (re)make it
/// so that patches may touch vendored code and the build needs no network.
///
/// With go.rs's explicit GOPROXY/GOSUMDB/GOFLAGS and go's default `-mod=readonly` for `go mod
/// vendor` (no `-mod=mod`: a go.sum that lacks a line is an error, never filled in from the
/// network), then `go mod verify`: what was copied into vendor/ came from module cache entries
/// that still hash to what go.sum pins.
fn go_mod_vendor(tree: &Path, layout: &Layout, log: &Path) -> Result<()> {
    let go = crate::go::Go::new(layout, false);
    let mut cmd = go.command();
    cmd.args(["mod", "vendor"]).current_dir(tree);
    crate::go::run_logged(
        &mut cmd,
        log,
        &format!("go mod vendor in {}", tree.display()),
    )?;
    crate::go::verify_modules(&go, tree, log)
}

/// Apply one patch to the work tree at `tree` (no index or commit needed).
pub fn apply_patch(tree: &Path, patch: &Path) -> Result<()> {
    let name = patch.file_name().unwrap().to_string_lossy().to_string();
    let bytes = std::fs::read(patch).with_context(|| format!("cannot read {}", patch.display()))?;
    let diff = git2::Diff::from_buffer(&bytes)
        .map_err(|e| anyhow::anyhow!("patch {name} is not a valid patch: {}", e.message()))?;
    let repo = open_or_init(tree)?;
    // libgit2 reports only "hunk at line N did not apply"; remember which file and hunk it was
    // working on so the error can name them.
    let current_file = RefCell::new(String::from("?"));
    let current_hunk = RefCell::new(String::from("?"));
    let mut opts = git2::ApplyOptions::new();
    opts.delta_callback(|delta| {
        if let Some(d) = delta {
            let path = d.new_file().path().or(d.old_file().path());
            *current_file.borrow_mut() = path.map(|p| p.display().to_string()).unwrap_or_default();
        }
        true
    });
    opts.hunk_callback(|hunk| {
        if let Some(h) = hunk {
            *current_hunk.borrow_mut() = String::from_utf8_lossy(h.header()).trim().to_string();
        }
        true
    });
    let result = repo.apply(&diff, git2::ApplyLocation::WorkDir, Some(&mut opts));
    drop(opts);
    result.map_err(|e| {
        PatchError {
            patch: name,
            file: current_file.into_inner(),
            hunk: current_hunk.into_inner(),
            reason: e.message().to_string(),
        }
        .into()
    })
}

/// git2 applies patches through a repository; a throwaway one inside the tree does (`init` on
/// an existing one is harmless). The build runs with `-buildvcs=false`, so Go never reads it.
fn open_or_init(tree: &Path) -> Result<git2::Repository> {
    git2::Repository::init(tree)
        .with_context(|| format!("cannot create a git repository in {}", tree.display()))
}

/// `cargo xtask patch --check`: apply each component's patches to a scratch copy and report.
/// Returns false if any patch failed.
pub fn check(
    pristine: &Path,
    vendor: bool,
    patches: &[PathBuf],
    layout: &Layout,
    out: &mut dyn std::io::Write,
) -> Result<bool> {
    let scratch = tempfile::tempdir_in(std::env::temp_dir())?;
    let tree = scratch.path().join("tree");
    copy_tree(pristine, &tree)?;
    let mut ok = true;
    let mut vendored = false;
    for patch in patches {
        let name = patch.file_name().unwrap().to_string_lossy();
        if !ok {
            writeln!(out, "  {name}: not tried (an earlier patch failed)")?;
            continue;
        }
        if vendor && !vendored && touches_vendor(patch)? {
            go_mod_vendor(&tree, layout, &scratch.path().join("vendor.log"))?;
            vendored = true;
        }
        match apply_patch(&tree, patch) {
            Ok(()) => writeln!(out, "  {name}: applies")?,
            Err(e) => {
                writeln!(out, "  {name}: FAILS: {e:#}")?;
                ok = false;
            }
        }
    }
    Ok(ok)
}
