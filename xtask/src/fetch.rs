//! The fetch stage: bring a component's pristine source into the cache, verified by its content.
//!
//! A component is pinned by the git tree id of its commit (`tree` in bundle.toml). Whatever
//! brings the source, the unpacked tree is hashed to a git tree id (xtask/src/gittree.rs) and
//! must equal the pin; a mismatch names both ids, keeps nothing, and the next transport is
//! tried. The transports, in order (`--source` keeps one kind):
//!
//! 1. mirrors (`--mirror URL`, `K3S_GVISOR_MIRROR`): each replaces the `https://github.com/`
//!    prefix of the commit archive's URL; a `file://` mirror is a directory laid out like the
//!    URL path (`<mirror>/<owner>/<repo>/archive/<commit>.tar.gz`);
//! 2. GitHub's archive of the commit, over HTTPS;
//! 3. git: a libgit2 fetch of exactly that commit;
//! 4. the Go module proxy, where the component names a module. Its zip is not the git tree
//!    (modules leave out vendor/ and nested modules), so it is verified by the module's `h1:`
//!    hash instead (xtask/src/go.rs).
//!
//! A verified tree is kept in `<cache>/trees/git-<tree>` with a record of the transport that
//! served it, and hashed again whenever it is used (a changed entry is removed and fetched
//! again). Archives unpack with setuid/setgid/sticky and group/other write masked. `--offline` uses only that cache, `file://` mirrors and the module cache.

use crate::config::{Component, SourceKind};
use crate::fsutil::remove_tree;
use crate::layout::Layout;
use crate::ui;
use anyhow::{bail, Context, Result};
use bundle_format::Transport as TransportKind;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where commit archives and repositories live unless a mirror stands in.
pub const GITHUB: &str = "https://github.com/";

/// The environment variable that lists mirrors (separated by spaces or commas).
pub const MIRROR_ENV: &str = "K3S_GVISOR_MIRROR";

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Mirror bases, each standing in for `https://github.com/`, tried in order.
    pub mirrors: Vec<String>,
    /// Only the cache, `file://` mirrors and the module cache.
    pub offline: bool,
    /// Only this kind of transport (`--source`).
    pub only: Option<SourceKind>,
    /// Where GitHub is (tests point it at a local server or directory).
    pub github: String,
}

impl FetchOptions {
    pub fn new(mirrors: Vec<String>, offline: bool, only: Option<SourceKind>) -> Self {
        FetchOptions {
            mirrors,
            offline,
            only,
            github: GITHUB.into(),
        }
    }
}

/// Mirrors from `--mirror` (first) and K3S_GVISOR_MIRROR; a plain path is a `file://` mirror.
pub fn mirrors_from(cli: &[String]) -> Result<Vec<String>> {
    let env = std::env::var(MIRROR_ENV).unwrap_or_default();
    cli.iter()
        .map(String::as_str)
        .chain(env.split([' ', ',', '\n']))
        .filter(|m| !m.trim().is_empty())
        .map(|m| normalize_mirror(m.trim()))
        .collect()
}

fn normalize_mirror(mirror: &str) -> Result<String> {
    let url = if mirror.contains("://") {
        mirror.to_string()
    } else {
        let path = Path::new(mirror)
            .canonicalize()
            .with_context(|| format!("mirror {mirror}: no such directory"))?;
        format!("file://{}", path.display())
    };
    Ok(if url.ends_with('/') { url } else { url + "/" })
}

/// A verified pristine source tree. Read-only: the patch stage copies it.
#[derive(Debug, Clone)]
pub struct SourceTree {
    pub dir: PathBuf,
    /// What was verified: `git-tree:<id>` or the module's `h1:...`.
    pub content: String,
    /// The transport that served it, and from where.
    pub served_by: ServedBy,
    /// False when it came from the cache.
    pub downloaded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedBy {
    /// `mirror`, `github-archive`, `git` or `go-proxy`.
    pub transport: TransportKind,
    /// The URL, or `module@version`.
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: hash mismatch: the pin is {expected}, the download has {actual}; the download was discarded. If upstream really changed, update the pin after checking why.")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: the tree from {location} is git tree {actual}, but bundle.toml pins tree {expected}; nothing was kept")]
    TreeMismatch {
        what: String,
        location: String,
        expected: String,
        actual: String,
    },
}

/// One way a source can be had.
#[derive(Debug, Clone)]
enum Transport {
    /// A commit archive at this URL (`mirror` or `github-archive`).
    Archive { kind: TransportKind, url: String },
    /// A git repository to fetch the commit from.
    Git { url: String },
    /// The Go module proxy.
    GoProxy { module: String, sum: String },
}

impl Transport {
    fn describe(&self) -> String {
        match self {
            Transport::Archive { kind, url } => format!("{kind} {url}"),
            Transport::Git { url } => format!("git {url}"),
            Transport::GoProxy { module, .. } => format!("go-proxy {module}"),
        }
    }
}

/// The transports that may serve `c`, in the order they are tried.
fn transports(c: &Component, opts: &FetchOptions) -> Vec<Transport> {
    let allowed = |kind: SourceKind| opts.only.is_none_or(|only| only == kind);
    let mut list = Vec::new();
    if let (Some(repo), Some(commit)) = (&c.github, &c.commit) {
        let path = format!("{repo}/archive/{commit}.tar.gz");
        if allowed(SourceKind::Archive) {
            for mirror in &opts.mirrors {
                if !opts.offline || mirror.starts_with("file://") {
                    list.push(Transport::Archive {
                        kind: TransportKind::Mirror,
                        url: format!("{mirror}{path}"),
                    });
                }
            }
            if !opts.offline {
                list.push(Transport::Archive {
                    kind: TransportKind::GithubArchive,
                    url: format!("{}{path}", opts.github),
                });
            }
        }
        if allowed(SourceKind::Git) && !opts.offline {
            list.push(Transport::Git {
                url: format!("{}{repo}.git", opts.github),
            });
        }
    }
    if let (Some(module), Some(sum)) = (&c.module, &c.sum) {
        if allowed(SourceKind::Go) {
            list.push(Transport::GoProxy {
                module: module.clone(),
                sum: sum.clone(),
            });
        }
    }
    list
}

/// The record kept beside a verified tree in the cache.
#[derive(Debug, Serialize, Deserialize)]
struct CacheRecord {
    tree: String,
    served_by: ServedBy,
}

fn cached_tree(layout: &Layout, tree: &str) -> PathBuf {
    layout.trees().join(format!("git-{tree}"))
}

fn cache_record(layout: &Layout, tree: &str) -> PathBuf {
    layout.trees().join(format!("git-{tree}.json"))
}

/// The source of `c` if a cache already holds it (the tree cache, or the Go module cache for a
/// module pin `--source` allows), found without any transport: for a plan that fetches
/// nothing. None: a run would fetch it.
pub fn cached(c: &Component, layout: &Layout, opts: &FetchOptions) -> Result<Option<SourceTree>> {
    if let Some(tree) = &c.tree {
        let dir = cached_tree(layout, tree);
        let record = std::fs::read_to_string(cache_record(layout, tree))
            .ok()
            .and_then(|t| serde_json::from_str::<CacheRecord>(&t).ok());
        if let Some(record) = record.filter(|r| dir.is_dir() && r.tree == *tree) {
            return Ok(Some(SourceTree {
                dir,
                content: format!("git-tree:{tree}"),
                served_by: record.served_by,
                downloaded: false,
            }));
        }
    }
    if let (Some(module), Some(sum)) = (&c.module, &c.sum) {
        if opts.only.is_none_or(|only| only == SourceKind::Go) {
            if let Ok(dir) = crate::go::Go::new(layout, true).download(module, &c.version, sum) {
                return Ok(Some(SourceTree {
                    dir,
                    content: sum.clone(),
                    served_by: ServedBy {
                        transport: TransportKind::GoProxy,
                        location: format!("{module}@{}", c.version),
                    },
                    downloaded: false,
                }));
            }
        }
    }
    Ok(None)
}

/// The verified source of `c`: from the cache (re-hashed first), or from the first transport
/// that can serve it.
pub fn fetch(c: &Component, layout: &Layout, opts: &FetchOptions) -> Result<SourceTree> {
    let source = fetch_for_plan(c, layout, opts)?;
    reverified(c, layout, opts, source)
}

/// As [`fetch`], but a cached tree is not re-hashed yet: for planning, where a component whose
/// build is up to date never reads its tree (a warm no-op stays fast). Whatever then reads the
/// tree takes it through [`reverified`] first.
pub fn fetch_for_plan(c: &Component, layout: &Layout, opts: &FetchOptions) -> Result<SourceTree> {
    let what = format!("{} {}", c.name, c.version);
    if let Some(tree) = &c.tree {
        let dir = cached_tree(layout, tree);
        let record = std::fs::read_to_string(cache_record(layout, tree))
            .ok()
            .and_then(|t| serde_json::from_str::<CacheRecord>(&t).ok());
        // The record is written after the tree was verified and moved in: without it, the
        // directory is the leftover of an interrupted fetch.
        match record {
            Some(record) if dir.is_dir() && record.tree == *tree => {
                ui::step(
                    "fetch",
                    format!(
                        "{what}: cached (git-tree:{tree}, first served by {} {})",
                        record.served_by.transport, record.served_by.location
                    ),
                );
                return Ok(SourceTree {
                    dir,
                    content: format!("git-tree:{tree}"),
                    served_by: record.served_by,
                    downloaded: false,
                });
            }
            _ => remove_tree(&dir)?,
        }
    }
    let candidates = transports(c, opts);
    let mut failures = Vec::new();
    for transport in &candidates {
        match try_transport(c, transport, layout, opts) {
            Ok(source) => {
                ui::step(
                    "fetch",
                    format!(
                        "{what}: served by {} {} ({})",
                        source.served_by.transport, source.served_by.location, source.content
                    ),
                );
                return Ok(source);
            }
            Err(err) => {
                ui::step(
                    "fetch",
                    format!(
                        "{what}: {} failed: {err:#}; trying the next transport",
                        transport.describe()
                    ),
                );
                failures.push(format!("{}: {err:#}", transport.describe()));
            }
        }
    }
    let cache = c
        .tree
        .as_ref()
        .map(|t| cached_tree(layout, t).display().to_string())
        .unwrap_or_else(|| layout.gomodcache().display().to_string());
    if candidates.is_empty() {
        bail!(
            "{what} is not in the cache ({cache}) and no transport may serve it{}: pass a \
             file:// --mirror that has it, or run once without --offline/--source",
            if opts.offline { " offline" } else { "" }
        );
    }
    bail!(
        "no transport could serve {what} (not in the cache {cache}{}):\n  {}",
        if opts.offline {
            "; --offline allows only the cache, file:// mirrors and the Go module cache"
        } else {
            ""
        },
        failures.join("\n  ")
    )
}

fn try_transport(
    c: &Component,
    transport: &Transport,
    layout: &Layout,
    opts: &FetchOptions,
) -> Result<SourceTree> {
    let what = format!("{} {}", c.name, c.version);
    let served_by = |transport: TransportKind, location: &str| ServedBy {
        transport,
        location: location.into(),
    };
    match transport {
        Transport::GoProxy { module, sum } => {
            // The module cache first (no network), so that a cached module is not reported as
            // a download.
            let (dir, downloaded) =
                match crate::go::Go::new(layout, true).download(module, &c.version, sum) {
                    Ok(dir) => (dir, false),
                    Err(_) if !opts.offline => {
                        let dir =
                            crate::go::Go::new(layout, false).download(module, &c.version, sum)?;
                        (dir, true)
                    }
                    Err(err) => return Err(err),
                };
            Ok(SourceTree {
                dir,
                content: sum.clone(),
                served_by: served_by(TransportKind::GoProxy, &format!("{module}@{}", c.version)),
                downloaded,
            })
        }
        Transport::Archive { kind, url } => {
            let tree = c
                .tree
                .as_deref()
                .expect("archive transports need a tree pin");
            std::fs::create_dir_all(layout.trees())?;
            let scratch = tempfile::tempdir_in(layout.trees())?;
            let archive = scratch.path().join("archive.tar.gz");
            download(&what, url, &archive)?;
            let unpacked = scratch.path().join("tree");
            unpack_tar_gz(&archive, &unpacked)
                .with_context(|| format!("cannot unpack {url}: not a commit archive"))?;
            keep_verified(c, tree, &unpacked, layout, served_by(*kind, url))
        }
        Transport::Git { url } => {
            let tree = c.tree.as_deref().expect("git transports need a tree pin");
            let commit = c.commit.as_deref().expect("git transports need a commit");
            std::fs::create_dir_all(layout.trees())?;
            let scratch = tempfile::tempdir_in(layout.trees())?;
            let checkout = scratch.path().join("tree");
            git_fetch_commit(url, commit, &scratch.path().join("repo.git"), &checkout)?;
            keep_verified(
                c,
                tree,
                &checkout,
                layout,
                served_by(TransportKind::Git, url),
            )
        }
    }
}

/// Hash `unpacked`; only if it is `tree`, move it into the cache and record who served it.
fn keep_verified(
    c: &Component,
    tree: &str,
    unpacked: &Path,
    layout: &Layout,
    served_by: ServedBy,
) -> Result<SourceTree> {
    let actual = rehash(c, unpacked)?;
    if actual != tree {
        // `unpacked` lives in a temporary directory that is removed on return.
        return Err(FetchError::TreeMismatch {
            what: format!("{} {}", c.name, c.version),
            location: served_by.location,
            expected: tree.into(),
            actual,
        }
        .into());
    }
    let dir = cached_tree(layout, tree);
    remove_tree(&dir)?;
    std::fs::rename(unpacked, &dir)?;
    let record = CacheRecord {
        tree: tree.into(),
        served_by: served_by.clone(),
    };
    crate::fsutil::write_atomic(
        &cache_record(layout, tree),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    Ok(SourceTree {
        dir,
        content: format!("git-tree:{tree}"),
        served_by,
        downloaded: true,
    })
}

/// `source` once its cached tree is re-hashed to the pinned id, just before a stage reads it: the
/// cache is shared between checkouts and may be restored from elsewhere, so a tree is not
/// trusted because it was verified once (issue 29). A tree changed since is removed from the
/// cache and fetched again. A few seconds for every tree bundle.toml pins (~90 MiB).
pub fn reverified(
    c: &Component,
    layout: &Layout,
    opts: &FetchOptions,
    source: SourceTree,
) -> Result<SourceTree> {
    let Some(tree) = &c.tree else {
        return Ok(source); // a module zip: the go command checks its `h1:` on every use
    };
    // Served as a module zip although a tree is pinned (no mirror had the commit archive): the
    // Go module cache's copy, whose `h1:` Go::download re-hashed just now. A module zip is not
    // the git tree (no vendor/, no nested modules), so the tree id would never match: every
    // run removed the module from the shared Go module cache and downloaded it again.
    if !source.content.starts_with("git-tree:") {
        return Ok(source);
    }
    if source.downloaded {
        return Ok(source); // verified on its way into the cache, just now
    }
    let actual = rehash(c, &source.dir)?;
    if actual == *tree {
        return Ok(source);
    }
    ui::step(
        "fetch",
        format!(
            "{} {}: the cached tree {} is now git tree {actual}, not the pinned {tree}: it was \
             changed after it was verified; removed, fetching it again",
            c.name,
            c.version,
            source.dir.display()
        ),
    );
    let _ = std::fs::remove_file(cache_record(layout, tree));
    remove_tree(&source.dir)?;
    fetch_for_plan(c, layout, opts)
}

/// The git tree id of `dir`, behind a spinner.
fn rehash(c: &Component, dir: &Path) -> Result<String> {
    let bar = ui::spinner(&format!("hashing the {} tree", c.name));
    let actual = crate::gittree::tree_id(dir);
    bar.finish_and_clear();
    actual
}

/// GET `url` (or copy a `file://` URL) into `dest`. Retried with backoff on timeouts, broken
/// transfers and 5xx answers; a 4xx or an unreachable host fails at once (the next transport
/// is the better bet).
pub(crate) fn download(what: &str, url: &str, dest: &Path) -> Result<()> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::copy(path, dest).with_context(|| format!("{path}: cannot read"))?;
        return Ok(());
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(900))
        .connect_timeout(Duration::from_secs(20))
        .build()?;
    let mut last_err = String::new();
    for attempt in 0..4u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 * 2u64.pow(attempt)));
        }
        let mut resp = match client.get(url).send() {
            Ok(r) => r,
            Err(e) if e.is_connect() => bail!("cannot connect: {e}"),
            Err(e) => {
                last_err = format!("{e}");
                continue;
            }
        };
        let status = resp.status();
        if status.is_client_error() {
            bail!("{url} answered {status}");
        }
        if !status.is_success() {
            last_err = format!("{url} answered {status}");
            continue;
        }
        let bar = ui::bytes_bar(resp.content_length(), what);
        let mut file = std::fs::File::create(dest)?;
        let mut buf = vec![0u8; 1 << 16];
        let copied: std::io::Result<()> = (|| loop {
            let n = resp.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            file.write_all(&buf[..n])?;
            bar.inc(n as u64);
        })();
        bar.finish_and_clear();
        match copied {
            Ok(()) => return Ok(()),
            Err(e) => last_err = format!("the transfer broke off: {e}"),
        }
    }
    bail!("{url}: no answer after 4 attempts: {last_err}")
}

/// The permission bits an unpacked file or directory never keeps: setuid, setgid and sticky
/// (0o7000), and write for group and others (0o022). An archive is data from the network: its
/// modes must not make a setuid binary or a directory anyone may write into (issue 29), and
/// none of these bits is in a git tree id (only the owner's exec bit is), so masking them never
/// changes what the tree hashes to.
pub const UNPACK_MASK: u32 = 0o7022;

/// Unpack a .tar.gz whose entries share one top directory (as commit archives do) into `dest`,
/// without that top directory; symlinks and exec bits as the archive has them, other mode bits
/// masked with UNPACK_MASK; owners are never taken from the archive.
fn unpack_tar_gz(file: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap();
    let tmp = tempfile::tempdir_in(parent)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(file)?));
    // preserve_permissions(false) alone already drops 0o7000 in the tar crate; the mask says
    // so explicitly and adds group/other write.
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_mask(UNPACK_MASK);
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

/// Fetch exactly `commit` (depth 1) from `url` into a bare repository at `repo_dir`, then check
/// its tree out into `checkout`.
fn git_fetch_commit(url: &str, commit: &str, repo_dir: &Path, checkout: &Path) -> Result<()> {
    let repo = git2::Repository::init_bare(repo_dir)?;
    let mut remote = repo.remote_anonymous(url)?;
    let mut options = git2::FetchOptions::new();
    // Only the commit, not its history; libgit2's local transport (file://, tests) cannot do
    // shallow fetches.
    if !url.starts_with("file://") {
        options.depth(1);
    }
    let bar = ui::spinner(&format!("git fetch {url} {commit}"));
    let fetched = remote.fetch(&[commit], Some(&mut options), None);
    bar.finish_and_clear();
    fetched.with_context(|| format!("git fetch of commit {commit} from {url} failed"))?;
    let id = git2::Oid::from_str(commit)?;
    let object = repo
        .find_commit(id)
        .with_context(|| format!("{url} did not send commit {commit}"))?
        .into_object();
    std::fs::create_dir_all(checkout)?;
    let mut how = git2::build::CheckoutBuilder::new();
    how.force().target_dir(checkout);
    repo.checkout_tree(&object, Some(&mut how))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An archive whose entries carry setuid, setgid, sticky and world-writable bits unpacks
    /// without any of them; exec bits stay (they are part of the git tree id).
    #[test]
    fn archives_unpack_without_setuid_setgid_sticky_or_group_world_write() {
        let t = tempfile::tempdir().unwrap();
        let archive = t.path().join("a.tar.gz");
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut add = |path: &str, mode: u32, dir: bool| {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            if dir {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            } else {
                h.set_size(3);
                h.set_cksum();
                b.append(&h, &b"hi\n"[..]).unwrap();
            }
        };
        add("top/", 0o755, true);
        add("top/shared/", 0o1777, true); // sticky, world-writable
        add("top/shared/setuid", 0o4755, false);
        add("top/setgid", 0o2755, false);
        add("top/everyone-writes", 0o666, false);
        add("top/group-writes-exec", 0o775, false);
        add("top/plain", 0o644, false);
        b.into_inner().unwrap().finish().unwrap();

        let dest = t.path().join("tree");
        unpack_tar_gz(&archive, &dest).unwrap();
        let mode = |p: &str| {
            std::fs::symlink_metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("shared"), 0o755);
        assert_eq!(mode("shared/setuid"), 0o755);
        assert_eq!(mode("setgid"), 0o755);
        assert_eq!(mode("everyone-writes"), 0o644);
        assert_eq!(mode("group-writes-exec"), 0o755);
        assert_eq!(mode("plain"), 0o644);
    }
}
