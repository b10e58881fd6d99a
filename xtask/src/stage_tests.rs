//! Tests of the stages on fixtures, without the internet: a local HTTP server, a file:// Go
//! module proxy, hand-made patches, and small bundles.

use crate::config::{BundleConfig, SourceKind};
use crate::digest::sha256_bytes;
use crate::fetch::{fetch_archive, fetch_go_module};
use crate::layout::{Layout, Variant};
use crate::manifest::Manifest;
use crate::package::{self, BundleFile};
use crate::pipeline::{self, Options, Report};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

fn layout_in(dir: &Path) -> Layout {
    let mut l = Layout::new(dir, Some(dir.join("cache")), Some(dir.join("work")));
    l.dist = dir.join("dist");
    l
}

/// Serve `body` to every GET on a loopback port; returns the URL and a request counter.
fn serve(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/src.tar.gz", listener.local_addr().unwrap());
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

/// A .tar.gz with one top directory, like a GitHub tag archive.
fn fixture_archive(content: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "fixture-1.0/README", content.as_bytes())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn archive_fetch_verifies_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_in(dir.path());
    let body = fixture_archive("hello");
    let sha = sha256_bytes(&body);
    let (url, hits) = serve(body);
    let tree = fetch_archive("fixture", &url, &sha, &layout, false).unwrap();
    assert!(tree.downloaded);
    assert_eq!(
        std::fs::read_to_string(tree.dir.join("README")).unwrap(),
        "hello"
    );
    // Second time: from the cache, no request, also offline.
    let again = fetch_archive("fixture", &url, &sha, &layout, true).unwrap();
    assert!(!again.downloaded);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_tampered_archive_is_rejected_and_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_in(dir.path());
    let pinned = sha256_bytes(&fixture_archive("hello"));
    let (url, _) = serve(fixture_archive("hello, tampered"));
    let err = fetch_archive("fixture", &url, &pinned, &layout, false).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("hash mismatch") && msg.contains(&pinned),
        "{msg}"
    );
    assert!(
        msg.contains(&sha256_bytes(&fixture_archive("hello, tampered"))),
        "{msg}"
    );
    let cached: Vec<_> = std::fs::read_dir(layout.downloads()).unwrap().collect();
    assert!(
        cached.is_empty(),
        "a rejected download stayed in the cache: {cached:?}"
    );
    assert!(
        !layout.trees().exists() || std::fs::read_dir(layout.trees()).unwrap().next().is_none()
    );
}

#[test]
fn offline_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_in(dir.path());
    let err = fetch_archive(
        "fixture 1.0",
        "http://127.0.0.1:9/x.tar.gz",
        &"0".repeat(64),
        &layout,
        true,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("fixture 1.0") && msg.contains("--offline"),
        "{msg}"
    );
}

const FIXTURE_MODULE: &str = "example.com/fixture";
const FIXTURE_MAIN: &str = "package main\n\nimport \"fmt\"\n\nvar stamp = \"none\"\n\nfunc main() { fmt.Println(\"fixture\", stamp) }\n";

/// A file:// Go module proxy holding example.com/fixture@v1.0.0 with `main_go` as its main.go;
/// returns the proxy dir and the module's `h1:` hash (Go's dirhash, computed here).
fn fixture_proxy(root: &Path, main_go: &str) -> (PathBuf, String) {
    use base64::Engine;
    let proxy = root.join("proxy");
    let vdir = proxy.join(FIXTURE_MODULE).join("@v");
    std::fs::create_dir_all(&vdir).unwrap();
    let gomod = format!("module {FIXTURE_MODULE}\n\ngo 1.21\n");
    let files = [("go.mod", gomod.as_str()), ("main.go", main_go)];
    let prefix = format!("{FIXTURE_MODULE}@v1.0.0/");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(vdir.join("v1.0.0.zip")).unwrap());
    let mut summary = String::new();
    for (name, content) in files {
        zip.start_file(
            format!("{prefix}{name}"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(content.as_bytes()).unwrap();
        summary.push_str(&format!(
            "{}  {prefix}{name}\n",
            sha256_bytes(content.as_bytes())
        ));
    }
    zip.finish().unwrap();
    std::fs::write(vdir.join("v1.0.0.mod"), gomod).unwrap();
    std::fs::write(
        vdir.join("v1.0.0.info"),
        r#"{"Version":"v1.0.0","Time":"2025-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    std::fs::write(vdir.join("list"), "v1.0.0\n").unwrap();
    let digest = sha2::Sha256::digest_bytes(summary.as_bytes());
    (
        proxy,
        format!(
            "h1:{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ),
    )
}

trait DigestBytes {
    fn digest_bytes(b: &[u8]) -> Vec<u8>;
}
impl DigestBytes for sha2::Sha256 {
    fn digest_bytes(b: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(b).to_vec()
    }
}

fn with_fixture_proxy(layout: &mut Layout, proxy: &Path) {
    layout.go_env = vec![
        ("GOPROXY".into(), format!("file://{}", proxy.display())),
        ("GOSUMDB".into(), "off".into()),
        ("GONOSUMDB".into(), FIXTURE_MODULE.into()),
    ];
}

fn fixture_config(sum: &str) -> BundleConfig {
    BundleConfig::parse(&format!(
        r#"
        [bundle]
        name = "fixture"
        version = "v0.0.1-gvisor.1"
        arch = "amd64"
        source_date_epoch = 1700000000
        [[component]]
        name = "fixture"
        version = "v1.0.0"
        source = "go"
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
    let dir = tempfile::tempdir().unwrap();
    let mut layout = layout_in(dir.path());
    let (proxy, _) = fixture_proxy(dir.path(), FIXTURE_MAIN);
    with_fixture_proxy(&mut layout, &proxy);
    let wrong_pin = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let err = fetch_go_module(FIXTURE_MODULE, "v1.0.0", wrong_pin, &layout, false).unwrap_err();
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
    let dir = tempfile::tempdir().unwrap();
    let mut layout = layout_in(dir.path());
    let (proxy, sum) = fixture_proxy(dir.path(), FIXTURE_MAIN);
    with_fixture_proxy(&mut layout, &proxy);
    // A patch that changes what the program prints proves the patched tree is what gets built.
    let patches = layout.patches("fixture");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(
        patches.join("0001-greet.patch"),
        "diff --git a/main.go b/main.go\n--- a/main.go\n+++ b/main.go\n@@ -6,2 +6,2 @@ var stamp = \"none\"\n \n-func main() { fmt.Println(\"fixture\", stamp) }\n+func main() { fmt.Println(\"patched fixture\", stamp) }\n",
    )
    .unwrap();
    let config = fixture_config(&sum);
    let opts = Options {
        offline: false,
        source: Some(SourceKind::Go),
    };
    let mut report = Report::default();
    let built =
        pipeline::build_components(&config, &layout, &opts, Variant::Patched, &mut report).unwrap();
    assert!(report.did_work());
    let out = std::process::Command::new(&built[0].binaries[0])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "patched fixture fixture-v0.0.1-gvisor.1"
    );
    // Nothing changed: the second run does no work at all, even offline.
    let mut report = Report::default();
    let opts = Options {
        offline: true,
        source: Some(SourceKind::Go),
    };
    pipeline::build_components(&config, &layout, &opts, Variant::Patched, &mut report).unwrap();
    assert!(!report.did_work(), "{:?}", report.stages);
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

/// Stage and package a tiny bundle under `root`; returns the tarball.
fn tiny_bundle(root: &Path) -> PathBuf {
    let bin = root.join("payload");
    std::fs::write(&bin, b"#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o775)).unwrap();
    let template = root.join("template");
    std::fs::create_dir_all(&template).unwrap();
    std::fs::write(template.join("README.md"), "tiny\n").unwrap();
    let manifest = Manifest {
        name: "tiny".into(),
        version: "v1".into(),
        arch: "amd64".into(),
        source_date_epoch: 1700000000,
        components: vec![crate::manifest::ComponentRecord {
            name: "payload".into(),
            version: "v1".into(),
            source: crate::manifest::SourceRecord {
                kind: "workspace".into(),
                location: "x".into(),
                hash: "sha256:0".into(),
            },
            patches: vec![],
            build_flags: vec![],
            outputs: vec![crate::manifest::OutputRecord {
                path: "bin/payload".into(),
                sha256: crate::digest::sha256_file(&bin).unwrap(),
            }],
        }],
        images: vec![],
        omitted: vec![],
    };
    let stage = root.join("stage");
    let files = [BundleFile {
        from: bin,
        to: "bin/payload".into(),
    }];
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
            matches!(h.mode().unwrap(), 0o755 | 0o644),
            "{:o}",
            h.mode().unwrap()
        );
    }
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

#[test]
fn verify_catches_a_flipped_byte_in_the_download() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    let mut bytes = std::fs::read(&t).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&t, bytes).unwrap();
    let msg = format!("{:#}", crate::verify::verify(&t).unwrap_err());
    assert!(
        msg.contains("tiny-v1.tar.gz") && msg.contains("sha256"),
        "{msg}"
    );
}

#[test]
fn verify_catches_a_flipped_byte_inside_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    rewrite(&t, |entries| {
        let payload = entries
            .iter_mut()
            .find(|(h, _)| h.path().unwrap().ends_with("bin/payload"))
            .unwrap();
        payload.1[3] ^= 0x01;
    });
    let msg = format!("{:#}", crate::verify::verify(&t).unwrap_err());
    assert!(
        msg.contains("bin/payload") && msg.contains("SHA256SUMS"),
        "{msg}"
    );
}

#[test]
fn verify_catches_an_extra_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_bundle(dir.path());
    rewrite(&t, |entries| {
        let mut h = tar::Header::new_ustar();
        h.set_path("tiny-v1/bin/extra").unwrap();
        h.set_mode(0o755);
        entries.push((h, b"evil".to_vec()));
    });
    let msg = format!("{:#}", crate::verify::verify(&t).unwrap_err());
    assert!(msg.contains("bin/extra") && msg.contains("extra"), "{msg}");
}
