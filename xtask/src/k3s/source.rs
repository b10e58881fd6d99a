//! The k3s source: where the pristine tree comes from, and the writable build tree made from it.

use super::K3sPin;
use crate::layout::Layout;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Names a local k3s checkout to build from instead of the Go module proxy (for networks whose
/// proxy refuses the k3s module). It must be checked out at the pinned commit.
pub const LOCAL_SOURCE_ENV: &str = "K3S_GVISOR_K3S_SRC";

/// Where a pristine tree came from; recorded in the bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K3sOrigin {
    /// The Go module proxy, verified against the `h1:` pin.
    ModuleProxy {
        module: String,
        version: String,
        sum: String,
    },
    /// A git checkout whose HEAD is the pinned commit with no modified tracked file.
    LocalCheckout { path: PathBuf, commit: String },
}

/// A verified, read-only k3s tree.
#[derive(Debug, Clone)]
pub struct PristineK3s {
    pub dir: PathBuf,
    pub origin: K3sOrigin,
    /// What identifies its content in stage stamps: the `h1:` hash or `git:<commit>`.
    pub content_id: String,
}

/// The local checkout named by [`LOCAL_SOURCE_ENV`], if set.
pub fn local_source_override() -> Option<PathBuf> {
    std::env::var_os(LOCAL_SOURCE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The pristine k3s tree for `pin`: from `local_checkout` when given, else from the Go module
/// proxy through the pipeline's fetch stage.
pub fn fetch_k3s_source(
    pin: &K3sPin,
    layout: &Layout,
    local_checkout: Option<&Path>,
    offline: bool,
) -> Result<PristineK3s> {
    pin.validate()?;
    match local_checkout {
        Some(dir) => from_local_checkout(pin, dir),
        None => from_module_proxy(pin, layout, offline),
    }
}

fn from_module_proxy(pin: &K3sPin, layout: &Layout, offline: bool) -> Result<PristineK3s> {
    let src = &pin.source;
    let tree = crate::fetch::fetch_go_module(&src.module, &src.version, &src.sum, layout, offline)
        .map_err(|err| explain_fetch_error(pin, err))?;
    Ok(PristineK3s {
        dir: tree.dir,
        content_id: src.sum.clone(),
        origin: K3sOrigin::ModuleProxy {
            module: src.module.clone(),
            version: src.version.clone(),
            sum: src.sum.clone(),
        },
    })
}

/// Add what to do to a failed module fetch: a proxy refusal has two ways out, an unpinned sum
/// has one next step.
pub(super) fn explain_fetch_error(pin: &K3sPin, err: anyhow::Error) -> anyhow::Error {
    let src = &pin.source;
    let text = format!("{err:#}");
    if text.contains("403") || text.contains("not available") {
        err.context(format!(
            "the Go module proxy refuses {module}@{version} (on the network of the project's \
             build machines it answers 403 for every version of {module}). Build from a git \
             checkout instead: `git clone --branch {tag} https://github.com/k3s-io/k3s` then \
             `{LOCAL_SOURCE_ENV}=<that dir> cargo xtask bundle --require-k3s`, or set [k3s] mode = \"release\"",
            module = src.module,
            version = src.version,
            tag = pin.version,
        ))
    } else if src.sum.is_empty() {
        err.context(format!(
            "[k3s.source] sum is not pinned yet: check that {} resolves to commit {} (tag {}), \
             then pin the h1 hash shown above",
            src.version, pin.commit, pin.version
        ))
    } else {
        err
    }
}

/// A checkout is accepted only when it is the pinned module at the pinned commit and clean, so
/// that `git:<commit>` identifies its content as well as an h1 hash would.
fn from_local_checkout(pin: &K3sPin, dir: &Path) -> Result<PristineK3s> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{LOCAL_SOURCE_ENV}={}: no such directory", dir.display()))?;
    let go_mod = std::fs::read_to_string(dir.join("go.mod"))
        .with_context(|| format!("{} has no go.mod: not a k3s checkout", dir.display()))?;
    let module = go_mod
        .lines()
        .find_map(|l| l.strip_prefix("module "))
        .map(str::trim)
        .unwrap_or_default();
    if module != pin.source.module {
        bail!(
            "{} is module `{module}`, not `{}`: point {LOCAL_SOURCE_ENV} at a k3s checkout",
            dir.display(),
            pin.source.module
        );
    }
    let repo = git2::Repository::open(&dir).with_context(|| {
        format!(
            "{} is not a git checkout; without git its commit cannot be checked. Clone it with \
             `git clone --branch {} https://github.com/k3s-io/k3s`",
            dir.display(),
            pin.version
        )
    })?;
    let head = repo.head()?.peel_to_commit()?.id().to_string();
    if head != pin.commit {
        bail!(
            "{} is at commit {head}, but bundle.toml pins k3s {} at {}: run `git -C {} checkout {}`",
            dir.display(),
            pin.version,
            pin.commit,
            dir.display(),
            pin.commit
        );
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let dirty: Vec<String> = repo
        .statuses(Some(&mut opts))?
        .iter()
        .filter_map(|s| s.path().map(String::from))
        .collect();
    if !dirty.is_empty() {
        bail!(
            "{} has local changes to tracked files ({}); the build must be of the pinned \
             commit as released: `git -C {} stash` or use a fresh clone",
            dir.display(),
            dirty.join(", "),
            dir.display()
        );
    }
    Ok(PristineK3s {
        content_id: format!("git:{head}"),
        origin: K3sOrigin::LocalCheckout {
            path: dir.clone(),
            commit: head,
        },
        dir,
    })
}

/// What [`prepare_source`] did to the tree, for the bundle manifest and the installer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedK3s {
    /// Manifests embedded from `manifests/` (paths relative to it).
    pub embedded_manifests: Vec<String>,
    /// Manifests left out because they install a Helm chart that k3s's build downloads from
    /// GitHub (`scripts/download`), which this pipeline cannot reach.
    pub left_out_manifests: Vec<String>,
}

/// A manifest that installs one of the charts k3s serves from its embedded `static/charts`.
fn needs_downloaded_chart(manifest: &str) -> bool {
    manifest.contains("/static/charts/")
}

/// Make `src` a fresh writable copy of `pristine` (without `.git`) and fill the two embed
/// directories the way scripts/build does (`cp manifests/* pkg/deploy/embed/`,
/// `cp build/static/* pkg/static/embed/`), leaving out chart manifests whose charts we lack.
pub fn prepare_source(pristine: &Path, src: &Path) -> Result<PreparedK3s> {
    crate::fsutil::remove_tree(src)?;
    copy_without_git(pristine, src)
        .with_context(|| format!("cannot copy {} to {}", pristine.display(), src.display()))?;

    let mut prepared = PreparedK3s::default();
    let manifests = src.join("manifests");
    if !manifests.is_dir() {
        bail!(
            "{} has no manifests/ directory: not a k3s source tree",
            pristine.display()
        );
    }
    let deploy_embed = src.join("pkg/deploy/embed");
    for entry in walkdir::WalkDir::new(&manifests).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(&manifests)?.to_path_buf();
        let rel_name = rel.to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path())?;
        if needs_downloaded_chart(&String::from_utf8_lossy(&bytes)) {
            prepared.left_out_manifests.push(rel_name);
            continue;
        }
        let dest = deploy_embed.join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::write(&dest, bytes)?;
        prepared.embedded_manifests.push(rel_name);
    }

    // `//go:embed embed/*` needs at least one file. Upstream fills pkg/static/embed with the
    // downloaded charts; a tree without them gets a note saying why the directory is empty.
    let static_embed = src.join("pkg/static/embed");
    let build_static = src.join("build/static");
    if build_static.is_dir() {
        crate::fsutil::copy_tree(&build_static, &static_embed)?;
    }
    std::fs::create_dir_all(&static_embed)?;
    if std::fs::read_dir(&static_embed)?.next().is_none() {
        std::fs::write(
            static_embed.join("README.k3s-gvisor"),
            "k3s-gvisor builds k3s without the Helm charts k3s downloads at build time;\n\
             the manifests that install them are left out of pkg/deploy/embed.\n",
        )?;
    }
    Ok(prepared)
}

/// `fsutil::copy_tree`, minus the `.git` directory of a local checkout (hundreds of MB that the
/// build does not read).
fn copy_without_git(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            crate::fsutil::copy_tree(&entry.path(), &dest)?;
        } else if entry.file_type()?.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata()?.permissions().mode() | 0o200;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}
