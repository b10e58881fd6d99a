//! Tests of the stages on fixtures, without the internet: commit archives in mirror
//! directories and behind a local HTTP server, a git repository made by the test, a file://
//! Go module proxy, hand-made patches, and small bundles.

use crate::config::{BundleConfig, Component};
use crate::fetch::{fetch, FetchOptions};
use crate::layout::{Layout, Variant};
use crate::package::{self, BundleFile};
use crate::pipeline::{self, Options, Report};
use bundle_format::Manifest;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn layout_in(dir: &Path) -> Layout {
    let mut l = Layout::new(dir, Some(dir.join("cache")), Some(dir.join("work")));
    l.dist = dir.join("dist");
    l
}

/// Serve `body` to every GET on a loopback port; returns the base URL and a request counter.
fn serve(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (url, hits)
}

use testkit::git;

/// An upstream made by the test: a git repository (a nested directory, an executable, a
/// symlink) with one commit, `git archive`d the way GitHub serves commit archives.
struct Upstream {
    commit: String,
    tree: String,
    /// `<commit>.tar.gz` bytes: `fixture-<commit>/...`.
    archive: Vec<u8>,
    /// A directory holding `fixture/fixture.git`, a bare copy of the repository.
    git_base: PathBuf,
}

fn upstream(root: &Path) -> Upstream {
    let repo = root.join("upstream");
    std::fs::create_dir_all(repo.join("cmd/tool")).unwrap();
    std::fs::write(repo.join("cmd/tool/main.go"), "package main\n").unwrap();
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    std::fs::write(repo.join("build.sh"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        repo.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("README", repo.join("README.link")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fixture"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let tree = git(&repo, &["rev-parse", "HEAD^{tree}"]);
    let out = Command::new("git")
        .args(["archive", "--format=tar.gz"])
        .arg(format!("--prefix=fixture-{commit}/"))
        .arg(&commit)
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success());
    let git_base = root.join("github");
    std::fs::create_dir_all(git_base.join("fixture")).unwrap();
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().unwrap(),
            git_base.join("fixture/fixture.git").to_str().unwrap(),
        ],
    );
    Upstream {
        commit,
        tree,
        archive: out.stdout,
        git_base,
    }
}

/// How every fixture bundle.toml starts: the `[bundle]` table, then its one component's name
/// and version.
const FIXTURE_HEAD: &str = r#"[bundle]
name = "fixture"
version = "v0.0.1-gvisor.1"
arch = "amd64"
source_date_epoch = 1700000000
[[component]]
name = "fixture"
version = "v1.0.0""#;

impl Upstream {
    fn component(&self) -> Component {
        BundleConfig::parse(&format!(
            r#"
            {FIXTURE_HEAD}
            github = "fixture/fixture"
            commit = "{}"
            tree = "{}"
            [[component.binary]]
            name = "tool"
            package = "./cmd/tool"
            "#,
            self.commit, self.tree
        ))
        .unwrap()
        .components
        .remove(0)
    }

    /// A mirror directory holding `archive` as this upstream's commit archive.
    fn mirror(&self, dir: &Path, archive: &[u8]) -> String {
        let path = dir.join(format!("fixture/fixture/archive/{}.tar.gz", self.commit));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, archive).unwrap();
        format!("file://{}/", dir.display())
    }

    /// The archive with one byte of one file changed (README: hello -> hellO).
    fn tampered_archive(&self) -> Vec<u8> {
        let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(self.archive.as_slice()));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if e.path().unwrap().ends_with("README") {
                data[4] = b'O';
            }
            let mut h = e.header().clone();
            h.set_cksum();
            out.append(&h, data.as_slice()).unwrap();
        }
        out.into_inner().unwrap().finish().unwrap()
    }

    /// Options whose "GitHub" is the test's directory (no archive there, but the git repo).
    fn options(&self, mirrors: Vec<String>, offline: bool) -> FetchOptions {
        let mut o = FetchOptions::new(mirrors, offline, None);
        o.github = format!("file://{}/", self.git_base.display());
        o
    }
}

/// A fetch test's directory, its layout and the upstream made in it.
fn fetch_fixture() -> (tempfile::TempDir, Layout, Upstream) {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_in(dir.path());
    let up = upstream(dir.path());
    (dir, layout, up)
}

/// Only verified trees and their records may be in the tree cache: asserts it holds nothing.
fn assert_nothing_cached(layout: &Layout, why: &str) {
    let entries: Vec<String> = std::fs::read_dir(layout.trees())
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(entries.is_empty(), "{why}: {entries:?}");
}

#[test]
fn a_mirror_archive_with_one_changed_byte_is_refused_and_nothing_is_cached() {
    let (dir, layout, up) = fetch_fixture();
    let mirror = up.mirror(&dir.path().join("mirror"), &up.tampered_archive());
    let mut opts = up.options(vec![mirror], false);
    opts.only = Some(crate::config::SourceKind::Archive);
    let msg = format!("{:#}", fetch(&up.component(), &layout, &opts).unwrap_err());
    assert!(msg.contains(&up.tree), "the pinned tree id is named: {msg}");
    let other = msg
        .split("is git tree ")
        .nth(1)
        .and_then(|rest| rest.get(..40))
        .unwrap_or_else(|| panic!("the mirror's tree id is named: {msg}"));
    assert!(
        other != up.tree && other.bytes().all(|b| b.is_ascii_hexdigit()),
        "{msg}"
    );
    assert_nothing_cached(&layout, "a refused archive was cached");
}

#[test]
fn a_mirror_without_the_archive_falls_through_to_the_next_transport() {
    let (dir, layout, up) = fetch_fixture();
    let empty = dir.path().join("empty-mirror");
    std::fs::create_dir_all(&empty).unwrap();
    let good = up.mirror(&dir.path().join("mirror"), &up.archive);
    let opts = up.options(
        vec![format!("file://{}/", empty.display()), good.clone()],
        false,
    );
    let tree = fetch(&up.component(), &layout, &opts).unwrap();
    assert!(tree.downloaded);
    assert_eq!(tree.served_by.transport, bundle_format::Transport::Mirror);
    assert!(
        tree.served_by.location.starts_with(&good),
        "{:?}",
        tree.served_by
    );
    assert_eq!(tree.content, format!("git-tree:{}", up.tree));
    // Symlinks and exec bits arrived as git has them.
    assert_eq!(
        std::fs::read_link(tree.dir.join("README.link")).unwrap(),
        Path::new("README")
    );
    assert!(crate::digest::executable(&tree.dir.join("build.sh")));
    // Second time: from the cache, offline, still naming the transport that served it.
    let again = fetch(&up.component(), &layout, &up.options(vec![], true)).unwrap();
    assert!(!again.downloaded);
    assert_eq!(again.served_by, tree.served_by);
}

/// A cached tree is re-hashed on every use (issue 29): one changed byte after it was verified
/// is caught, the entry is thrown away and the source is fetched again; offline, with nothing
/// to fetch it from, the build stops instead of using it.
#[test]
fn a_cached_tree_changed_after_it_was_verified_is_not_used() {
    let (dir, layout, up) = fetch_fixture();
    let mirror = up.mirror(&dir.path().join("mirror"), &up.archive);
    let first = fetch(
        &up.component(),
        &layout,
        &up.options(vec![mirror.clone()], false),
    )
    .unwrap();
    assert!(first.downloaded);

    std::fs::write(first.dir.join("README"), "hellO\n").unwrap();
    let again = fetch(&up.component(), &layout, &up.options(vec![mirror], false)).unwrap();
    assert!(again.downloaded, "the changed cache entry was used");
    assert_eq!(
        std::fs::read_to_string(again.dir.join("README")).unwrap(),
        "hello\n"
    );
    assert_eq!(crate::gittree::tree_id(&again.dir).unwrap(), up.tree);

    std::fs::write(again.dir.join("README"), "hellO\n").unwrap();
    let err = fetch(&up.component(), &layout, &up.options(vec![], true)).unwrap_err();
    assert!(
        format!("{err:#}").contains("not in the cache"),
        "offline with a changed cache entry: {err:#}"
    );
    assert_nothing_cached(&layout, "the changed entry was kept");
}

#[test]
fn without_any_archive_the_commit_is_fetched_with_git() {
    let (_dir, layout, up) = fetch_fixture();
    let tree = fetch(&up.component(), &layout, &up.options(vec![], false)).unwrap();
    assert_eq!(tree.served_by.transport, bundle_format::Transport::Git);
    assert_eq!(
        std::fs::read_to_string(tree.dir.join("README")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        crate::gittree::tree_id(&tree.dir).unwrap(),
        up.tree,
        "the checkout is the pinned tree"
    );
}

#[test]
fn an_http_mirror_serves_the_archive() {
    let (_dir, layout, up) = fetch_fixture();
    let (base, hits) = serve(up.archive.clone());
    let mut opts = up.options(vec![base.clone()], false);
    opts.only = Some(crate::config::SourceKind::Archive);
    let tree = fetch(&up.component(), &layout, &opts).unwrap();
    assert_eq!(
        tree.served_by.location,
        format!("{base}fixture/fixture/archive/{}.tar.gz", up.commit)
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn offline_with_an_empty_cache_names_the_missing_source() {
    let (_dir, layout, up) = fetch_fixture();
    // An http mirror may not be used offline; the git repository may not either.
    let opts = up.options(vec!["http://127.0.0.1:9/".into()], true);
    let msg = format!("{:#}", fetch(&up.component(), &layout, &opts).unwrap_err());
    assert!(
        msg.contains("fixture v1.0.0") && msg.contains("offline"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("git-{}", up.tree)),
        "names the cache it looked in: {msg}"
    );
}

const FIXTURE_MODULE: &str = "example.com/fixture";
const FIXTURE_MAIN: &str = "package main\n\nimport \"fmt\"\n\nvar stamp = \"none\"\n\nfunc main() { fmt.Println(\"fixture\", stamp) }\n";

/// A Go test's directory, and a layout whose Go module proxy is a file:// one in it holding
/// example.com/fixture@v1.0.0 (main.go: FIXTURE_MAIN); returns them and the module's `h1:`
/// hash.
fn go_fixture() -> (tempfile::TempDir, Layout, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let proxy = root.join("proxy");
    let vdir = proxy.join(FIXTURE_MODULE).join("@v");
    std::fs::create_dir_all(&vdir).unwrap();
    let gomod = format!("module {FIXTURE_MODULE}\n\ngo 1.21\n");
    let files = [("go.mod", gomod.as_str()), ("main.go", FIXTURE_MAIN)];
    let prefix = format!("{FIXTURE_MODULE}@v1.0.0/");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(vdir.join("v1.0.0.zip")).unwrap());
    let tree = root.join("module-tree");
    std::fs::create_dir_all(&tree).unwrap();
    for (name, content) in files {
        zip.start_file(
            format!("{prefix}{name}"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(content.as_bytes()).unwrap();
        std::fs::write(tree.join(name), content).unwrap();
    }
    zip.finish().unwrap();
    std::fs::write(vdir.join("v1.0.0.mod"), gomod).unwrap();
    std::fs::write(
        vdir.join("v1.0.0.info"),
        r#"{"Version":"v1.0.0","Time":"2025-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    std::fs::write(vdir.join("list"), "v1.0.0\n").unwrap();
    let sum = crate::go::dirhash::hash_dir(&tree, &format!("{FIXTURE_MODULE}@v1.0.0")).unwrap();
    let mut layout = layout_in(root);
    layout.go_env = vec![
        ("GOPROXY".into(), format!("file://{}", proxy.display())),
        ("GOSUMDB".into(), "off".into()),
        ("GONOSUMDB".into(), FIXTURE_MODULE.into()),
    ];
    (dir, layout, sum)
}

/// A patch to FIXTURE_MAIN that changes what the program prints.
const GREET_PATCH: &str = "diff --git a/main.go b/main.go\n--- a/main.go\n+++ b/main.go\n@@ -6,2 +6,2 @@ var stamp = \"none\"\n \n-func main() { fmt.Println(\"fixture\", stamp) }\n+func main() { fmt.Println(\"patched fixture\", stamp) }\n";

/// Pipeline options with no mirrors, fetching or `offline`.
fn options(offline: bool) -> Options {
    Options {
        fetch: FetchOptions::new(vec![], offline, None),
        without: vec![],
        only: vec![],
    }
}

fn fixture_config(sum: &str) -> BundleConfig {
    BundleConfig::parse(&format!(
        r#"
        {FIXTURE_HEAD}
        module = "{FIXTURE_MODULE}"
        sum = "{sum}"
        [[component.binary]]
        name = "fixture"
        package = "."
        ldflags = ["-X main.stamp={{stamp}}"]
        "#
    ))
    .unwrap()
}

#[test]
fn go_module_fetch_checks_the_pin_and_a_mismatch_is_not_cached() {
    let (_dir, layout, _) = go_fixture();
    let wrong_pin = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let err = crate::go::Go::new(&layout, false)
        .download(FIXTURE_MODULE, "v1.0.0", wrong_pin)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("hash mismatch") && msg.contains(wrong_pin),
        "{msg}"
    );
    let extracted = layout.gomodcache().join(format!("{FIXTURE_MODULE}@v1.0.0"));
    assert!(
        !extracted.exists(),
        "the mismatching module stayed in the module cache"
    );
    let zip = layout
        .gomodcache()
        .join(format!("cache/download/{FIXTURE_MODULE}/@v/v1.0.0.zip"));
    assert!(
        !zip.exists(),
        "the mismatching zip stayed in the module cache"
    );
}

#[test]
fn a_fixture_go_module_goes_through_fetch_patch_and_build() {
    let (_dir, layout, sum) = go_fixture();
    // A patch that changes what the program prints proves the patched tree is what gets built.
    let patches = layout.patches("fixture");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(patches.join("0001-greet.patch"), GREET_PATCH).unwrap();
    let config = fixture_config(&sum);
    let opts = options(false);
    let mut report = Report::default();
    let built =
        pipeline::build_components(&config, &layout, &opts, Variant::Patched, &mut report).unwrap();
    assert!(report.did_work());
    let out = Command::new(&built[0].build.binaries[0].path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "patched fixture fixture-v0.0.1-gvisor.1"
    );
    // Nothing changed: the second run does no work at all, even offline.
    let mut report = Report::default();
    let again = pipeline::build_components(
        &config,
        &layout,
        &options(true),
        Variant::Patched,
        &mut report,
    )
    .unwrap();
    assert!(!report.did_work(), "{:?}", report.stages);
    // and reports the same build as the run that did it
    assert_eq!(
        again[0].build.binaries[0].command,
        built[0].build.binaries[0].command
    );
}

/// `cargo xtask bundle --plan`'s components: a plan that fetches nothing says what a run would
/// do, and a run follows it.
#[test]
fn the_plan_says_nothing_to_do_when_warm_and_names_a_changed_patch() {
    let (_dir, layout, sum) = go_fixture();
    let patches = layout.patches("fixture");
    std::fs::create_dir_all(&patches).unwrap();
    let patch = patches.join("0001-greet.patch");
    std::fs::write(&patch, GREET_PATCH).unwrap();
    let config = fixture_config(&sum);
    let opts = options(false);
    let go_version = crate::go::Go::new(&layout, true).version().unwrap();
    let plan = |layout: &Layout| {
        let mut report = Report::default();
        let planned = pipeline::plan_components(
            &config,
            layout,
            &opts,
            Variant::Patched,
            &go_version,
            true,
            &mut report,
        )
        .unwrap();
        (planned, report)
    };
    // Cold: nothing is in the cache, and the plan fetches nothing to find out.
    let (cold, _) = plan(&layout);
    assert!(!cold[0].decision.is_fresh());
    let text = pipeline::render_components(&cold);
    assert!(text.contains("not in the cache: fetch"), "{text}");
    assert!(!layout
        .gomodcache()
        .join(format!("{FIXTURE_MODULE}@v1.0.0"))
        .exists());
    let mut report = Report::default();
    pipeline::build_components(&config, &layout, &opts, Variant::Patched, &mut report).unwrap();
    // Warm: nothing to do, and the check is in the report as a stage that did no work.
    let (warm, report) = plan(&layout);
    let text = pipeline::render_components(&warm);
    assert!(warm.iter().all(|p| p.decision.is_fresh()), "{text}");
    assert!(
        text.contains("build    fixture v1.0.0: up to date"),
        "{text}"
    );
    assert!(!report.did_work(), "{:?}", report.stages);
    assert!(
        report
            .stages
            .iter()
            .any(|(name, _, work)| name == "build fixture" && !work),
        "{:?}",
        report.stages
    );
    // A patch's content changed: that component is patched and built again, and the plan
    // names the patch.
    std::fs::write(
        &patch,
        GREET_PATCH.replace("patched fixture", "patched again"),
    )
    .unwrap();
    let (changed, _) = plan(&layout);
    let text = pipeline::render_components(&changed);
    assert!(
        text.contains(
            "build    fixture v1.0.0: patch (1 patch(es)) and build: changed: patches/fixture/0001-greet.patch"
        ),
        "{text}"
    );
}

#[test]
fn a_patch_that_does_not_apply_names_patch_file_and_hunk() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    let good = dir.path().join("0001-good.patch");
    std::fs::write(&good, "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n").unwrap();
    crate::patch::apply_patch(&tree, &good).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.join("a.txt")).unwrap(),
        "one\nTWO\nthree\n"
    );
    let bad = dir.path().join("0002-bad.patch");
    std::fs::write(&bad, "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-zwei\n+ZWEI\n three\n").unwrap();
    let msg = format!("{:#}", crate::patch::apply_patch(&tree, &bad).unwrap_err());
    assert!(
        msg.contains("0002-bad.patch") && msg.contains("a.txt") && msg.contains("@@ -1,3 +1,3 @@"),
        "{msg}"
    );
    // and the tree is unchanged by the failed patch
    assert_eq!(
        std::fs::read_to_string(tree.join("a.txt")).unwrap(),
        "one\nTWO\nthree\n"
    );
}

/// A file that gained lines above a hunk (runc v1.3.7 against v1.3.3): the hunk applies where
/// its exact context now stands, as `git apply` does; changed context still fails.
#[test]
fn a_hunk_whose_context_moved_applies_at_an_offset_and_changed_context_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let patch = dir.path().join("0001-moved.patch");
    std::fs::write(&patch, "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -2,3 +2,3 @@ ctx\n b\n-c\n+C\n d\n-- \n2.39.5\n").unwrap();
    std::fs::write(tree.join("a.txt"), "new1\nnew2\na\nb\nc\nd\ne\n").unwrap();
    assert_eq!(crate::patch::apply_patch(&tree, &patch).unwrap(), 1);
    assert_eq!(
        std::fs::read_to_string(tree.join("a.txt")).unwrap(),
        "new1\nnew2\na\nb\nC\nd\ne\n"
    );
    // In place: no offset.
    std::fs::write(tree.join("a.txt"), "a\nb\nc\nd\n").unwrap();
    assert_eq!(crate::patch::apply_patch(&tree, &patch).unwrap(), 0);
    // Context changed (b -> B): refused, naming the hunk as the patch has it.
    std::fs::write(tree.join("a.txt"), "x\na\nB\nc\nd\n").unwrap();
    let msg = format!(
        "{:#}",
        crate::patch::apply_patch(&tree, &patch).unwrap_err()
    );
    assert!(msg.contains("@@ -2,3 +2,3 @@"), "{msg}");
}

/// Stage and package a tiny bundle under `root`; returns the tarball.
fn tiny_bundle(root: &Path) -> PathBuf {
    tiny_bundle_of(root, bundle_format::Arch::Amd64, b"#!/bin/sh\necho hi\n")
}

/// A tiny bundle for `arch` whose one binary, bin/payload, is `payload`.
fn tiny_bundle_of(root: &Path, arch: bundle_format::Arch, payload: &[u8]) -> PathBuf {
    let bin = root.join("payload");
    std::fs::write(&bin, payload).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o775)).unwrap();
    let template = root.join("template");
    std::fs::create_dir_all(&template).unwrap();
    std::fs::write(template.join("README.md"), "tiny\n").unwrap();
    let manifest = Manifest {
        name: "tiny".into(),
        version: "v1".into(),
        arch,
        source_date_epoch: 1700000000,
        components: vec![bundle_format::ComponentRecord {
            name: "payload".into(),
            version: "v1".into(),
            source: bundle_format::SourceRecord {
                transport: bundle_format::Transport::Workspace,
                location: "x".into(),
                content: "sha256-tree:0".into(),
                repository: None,
                commit: None,
                tree: None,
            },
            patches: vec![],
            build_flags: vec![],
            outputs: vec![bundle_format::OutputRecord {
                path: "bin/payload".into(),
                sha256: crate::digest::sha256_file(&bin).unwrap(),
            }],
            links: vec![bundle_format::LinkRecord {
                path: "bin/payload-link".into(),
                target: "payload".into(),
            }],
        }],
        images: vec![],
        omitted: vec![],
        not_on_this_arch: Vec::new(),
    };
    let stage = root.join("stage");
    let files = [
        BundleFile::file(bin, "bin/payload".into()),
        BundleFile::symlink("payload".into(), "bin/payload-link".into()),
    ];
    package::stage(
        &stage,
        &template,
        &root.join("no-overlays"),
        &files,
        &manifest,
    )
    .unwrap();
    let tarball = root.join("dist/tiny-v1.tar.gz");
    package::write_tarball(&stage, "tiny-v1", &tarball, 1700000000).unwrap();
    package::write_sidecar(&tarball).unwrap();
    tarball
}

#[test]
fn tarballs_are_byte_identical_across_directories() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ta = tiny_bundle(a.path());
    std::thread::sleep(std::time::Duration::from_millis(1100)); // different file mtimes
    let tb = tiny_bundle(b.path());
    assert_eq!(std::fs::read(&ta).unwrap(), std::fs::read(&tb).unwrap());
    let v = crate::verify::verify(&ta).unwrap();
    assert_eq!(v.manifest.name, "tiny");
    // Entries are normalized: uid/gid 0, no names, fixed mtime, 0755/0644.
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&ta).unwrap(),
    ));
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, 1700000000)
        );
        assert!(h.username().unwrap().unwrap_or("").is_empty());
        assert!(
            matches!(h.mode().unwrap(), 0o755 | 0o644 | 0o777),
            "{:o}",
            h.mode().unwrap()
        );
    }
}

#[test]
fn the_tar_zst_holds_the_same_tar_reproducibly_and_verifies() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let zst_of = |root: &Path| {
        let gz = tiny_bundle(root);
        let zst = gz.with_file_name("tiny-v1.tar.zst");
        package::write_tarball(&root.join("stage"), "tiny-v1", &zst, 1700000000).unwrap();
        package::write_sidecar(&zst).unwrap();
        (gz, zst)
    };
    let (gz, zst) = zst_of(a.path());
    let (_, zst_b) = zst_of(b.path());
    assert_eq!(std::fs::read(&zst).unwrap(), std::fs::read(&zst_b).unwrap());
    // zstd's own frame, read back by the `zstd` decoder, is the very tar inside the .tar.gz.
    let tar_of = |path: &Path| {
        let mut bytes = Vec::new();
        package::Format::of(path)
            .unwrap()
            .decoder(path)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    assert_eq!(
        &std::fs::read(&zst).unwrap()[..4],
        &[0x28, 0xb5, 0x2f, 0xfd]
    );
    assert_eq!(tar_of(&zst), tar_of(&gz));
    assert_eq!(crate::verify::verify(&zst).unwrap().manifest.name, "tiny");
    // Any other name is refused before anything is written.
    let err = package::write_tarball(
        &a.path().join("stage"),
        "tiny-v1",
        &a.path().join("dist/tiny-v1.tar.xz"),
        1,
    )
    .unwrap_err();
    assert!(
        format!("{err}").contains("ends in .tar.gz (or .tgz) or .tar.zst"),
        "{err}"
    );
}

/// Rewrite a bundle tarball, letting `edit` change the entries, and refresh the outer sha256
/// so that only the inner checks can catch the change.
fn rewrite(tarball: &Path, edit: impl Fn(&mut Vec<(tar::Header, Vec<u8>)>)) {
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(tarball).unwrap(),
    ));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((e.header().clone(), data));
    }
    edit(&mut entries);
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (mut h, data) in entries {
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append(&h, data.as_slice()).unwrap();
    }
    std::fs::write(tarball, out.into_inner().unwrap().finish().unwrap()).unwrap();
    package::write_sidecar(tarball).unwrap();
}

/// Verifies `tarball`, which must fail with a message naming every one of `named`.
fn verify_refuses(tarball: &Path, named: &[&str]) {
    let msg = format!("{:#}", crate::verify::verify(tarball).unwrap_err());
    assert!(named.iter().all(|n| msg.contains(n)), "{msg}");
}

/// The entry whose path ends with `suffix`.
fn entry<'a>(
    entries: &'a mut [(tar::Header, Vec<u8>)],
    suffix: &str,
) -> &'a mut (tar::Header, Vec<u8>) {
    entries
        .iter_mut()
        .find(|(h, _)| h.path().unwrap().ends_with(suffix))
        .unwrap()
}

fn new_entry(entries: &mut Vec<(tar::Header, Vec<u8>)>, path: &str, link: Option<&str>) {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_mode(0o755);
    if let Some(target) = link {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_link_name(target).unwrap();
    }
    entries.push((
        h,
        if link.is_some() {
            Vec::new()
        } else {
            b"evil".to_vec()
        },
    ));
}

#[test]
fn verify_catches_a_flipped_byte_in_the_download() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    let mut bytes = std::fs::read(&t).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&t, bytes).unwrap();
    verify_refuses(&t, &["tiny-v1.tar.gz", "sha256"]);
}

#[test]
fn verify_catches_a_flipped_byte_inside_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    rewrite(&t, |entries| entry(entries, "bin/payload").1[3] ^= 0x01);
    verify_refuses(&t, &["bin/payload", "SHA256SUMS"]);
}

/// Every ELF file must be for the manifest's arch: an amd64 binary in an arm64 bundle (or the
/// reverse) would only say "Exec format error" on the user's machine.
#[test]
fn verify_catches_a_binary_of_another_architecture() {
    use bundle_format::Arch;
    let ls = std::fs::read("/bin/ls").unwrap();
    let host = crate::target::Target::new(Arch::Amd64).unwrap().host;
    let other = Arch::ALL.into_iter().find(|a| *a != host).unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::verify::verify(&tiny_bundle_of(dir.path(), host, &ls)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle_of(dir.path(), other, &ls);
    verify_refuses(
        &t,
        &["bin/payload", "but the bundle is for", other.as_str()],
    );
}

#[test]
fn verify_catches_an_extra_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    rewrite(&t, |entries| new_entry(entries, "tiny-v1/bin/extra", None));
    verify_refuses(&t, &["bin/extra"]);
}

#[test]
fn verify_catches_a_symlink_the_manifest_does_not_name_or_that_points_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    crate::verify::verify(&t).unwrap();
    rewrite(&t, |entries| {
        entry(entries, "bin/payload-link")
            .0
            .set_link_name("../../etc/passwd")
            .unwrap()
    });
    verify_refuses(&t, &["bin/payload-link", "../../etc/passwd"]);
    // A fresh bundle, so that only the new link can be what verify refuses.
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    rewrite(&t, |entries| {
        new_entry(entries, "tiny-v1/bin/sneaky", Some("payload"))
    });
    verify_refuses(&t, &["bin/sneaky", "does not name"]);
}
