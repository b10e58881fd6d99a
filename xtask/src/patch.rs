//! The patch stage: a fresh copy of a pristine tree, then patches/<component>/*.patch applied in
//! name order with git2 (libgit2's `git apply`). A patch that does not apply is reported with the
//! patch, the file and the hunk it stopped at.

use crate::fsutil::{copy_tree, remove_tree};
use crate::layout::Layout;
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The patches of one release of a component, in the order they apply: `patches/<name>/*.patch`,
/// which every pinned release gets, and `patches/<name>/<version>/*.patch`, which only that
/// release needs (a build fix that a later release made upstream, e.g. runc v1.3.3's 0000),
/// merged by file name. One set of gVisor patches thus serves bundle.toml's releases and the
/// mission's (bundle-mission.toml).
pub fn component_patches(layout: &Layout, name: &str, version: &str) -> Result<Vec<PathBuf>> {
    let dir = layout.patches(name);
    let mut files = patch_files(&dir)?;
    files.extend(patch_files(&dir.join(version))?);
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The patch files in one directory, in name order.
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

/// Apply one patch to the work tree at `tree` (no index or commit needed). Returns how many
/// hunks applied at an offset (their context found some lines away from where the patch says,
/// as `git apply` allows; never with changed context).
pub fn apply_patch(tree: &Path, patch: &Path) -> Result<usize> {
    let name = patch.file_name().unwrap().to_string_lossy().to_string();
    let bytes = std::fs::read(patch).with_context(|| format!("cannot read {}", patch.display()))?;
    let (bytes, moved) = locate_hunks(tree, &bytes);
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
    result.map_err(|e| PatchError {
        patch: name,
        file: current_file.into_inner(),
        hunk: current_hunk.into_inner(),
        reason: e.message().to_string(),
    })?;
    Ok(moved)
}

/// libgit2 applies a hunk only at the exact line its header names; `git apply` (and `patch`)
/// look for the hunk's unchanged and removed lines nearby when the file moved by a few lines.
/// That is what lets one patch serve two releases whose files differ only above a hunk (runc
/// v1.3.3 and v1.3.7). So: for each hunk whose old lines are not at its stated line, find the
/// nearest place where they all are, exactly, and rewrite the header's line numbers to it.
/// Returns the patch and the number of hunks moved. A hunk whose lines are nowhere (or a file
/// that cannot be read) is left as it is, for libgit2 to refuse with its file and hunk.
fn locate_hunks(tree: &Path, patch: &[u8]) -> (Vec<u8>, usize) {
    let Ok(text) = std::str::from_utf8(patch) else {
        return (patch.to_vec(), 0);
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut moved = 0;
    let mut file: Option<Vec<String>> = None;
    // How far the previous hunks of this file moved: the next one is looked for there first.
    let mut shift: i64 = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(path) = line.strip_prefix("--- a/") {
            file = std::fs::read_to_string(tree.join(path.trim_end()))
                .ok()
                .map(|t| t.split_inclusive('\n').map(String::from).collect());
            shift = 0;
        } else if line.starts_with("--- ") {
            file = None; // a new file: nothing to locate
        }
        let Some(header) = parse_hunk_header(line) else {
            out.push_str(line);
            i += 1;
            continue;
        };
        // The hunk's body: as many lines as its header counts (a `-- ` signature after the
        // last hunk is not part of it).
        let (mut old_left, mut new_left) = (header.old_len, header.new_len);
        let mut body = Vec::new();
        let mut j = i + 1;
        while j < lines.len() && (old_left > 0 || new_left > 0 || lines[j].starts_with('\\')) {
            let l = lines[j];
            match l.as_bytes().first() {
                Some(b' ') => {
                    (old_left, new_left) = (old_left.saturating_sub(1), new_left.saturating_sub(1))
                }
                Some(b'-') => old_left = old_left.saturating_sub(1),
                Some(b'+') => new_left = new_left.saturating_sub(1),
                Some(b'\\') => {}
                _ => break,
            }
            body.push(l);
            j += 1;
        }
        let preimage: Vec<&str> = body
            .iter()
            .filter(|l| l.starts_with(' ') || l.starts_with('-'))
            .map(|l| &l[1..])
            .collect();
        let stated = header.old_start as i64 - 1;
        let found = file
            .as_ref()
            .and_then(|f| nearest_match(f, &preimage, stated + shift));
        match found {
            Some(at) if at != stated && header.old_len > 0 => {
                let delta = at - stated;
                shift = delta;
                moved += 1;
                out.push_str(&format!(
                    "@@ -{},{} +{},{} @@{}",
                    at + 1,
                    header.old_len,
                    header.new_start as i64 + delta,
                    header.new_len,
                    header.rest
                ));
            }
            _ => out.push_str(line),
        }
        for l in &body {
            out.push_str(l);
        }
        i = j;
    }
    (out.into_bytes(), moved)
}

struct HunkHeader<'a> {
    old_start: usize,
    old_len: usize,
    new_start: usize,
    new_len: usize,
    /// After the second `@@`: the function context and the line end.
    rest: &'a str,
}

/// `@@ -135,6 +135,37 @@ func ...`
fn parse_hunk_header(line: &str) -> Option<HunkHeader<'_>> {
    let inner = line.strip_prefix("@@ -")?;
    let (ranges, rest) = inner.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(usize, usize)> {
        match r.split_once(',') {
            Some((start, len)) => Some((start.parse().ok()?, len.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let ((old_start, old_len), (new_start, new_len)) = (range(old)?, range(new)?);
    Some(HunkHeader {
        old_start,
        old_len,
        new_start,
        new_len,
        rest,
    })
}

/// The 0-based line nearest `from` where `preimage` stands in `file`, exactly.
fn nearest_match(file: &[String], preimage: &[&str], from: i64) -> Option<i64> {
    if preimage.is_empty() || preimage.len() > file.len() {
        return None;
    }
    let last = (file.len() - preimage.len()) as i64;
    let matches = |at: i64| {
        (0..=last).contains(&at)
            && preimage
                .iter()
                .zip(&file[at as usize..])
                .all(|(want, have)| want == have)
    };
    let from = from.clamp(0, last);
    (0..=last.max(1)).find_map(|d| [from - d, from + d].into_iter().find(|&at| matches(at)))
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
            Ok(0) => writeln!(out, "  {name}: applies")?,
            Ok(moved) => writeln!(out, "  {name}: applies ({moved} hunk(s) at an offset)")?,
            Err(e) => {
                writeln!(out, "  {name}: FAILS: {e:#}")?;
                ok = false;
            }
        }
    }
    Ok(ok)
}
