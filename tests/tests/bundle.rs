//! The real pipeline on the real pinned inputs: `cargo xtask bundle` from the repository's
//! bundle.toml (k3s included: its source comes from a mirror, K3S_GVISOR_MIRROR, which
//! scripts/test.sh sets), then what the tarball holds, a warm no-op re-run, and a second
//! checkout in another directory producing the same bytes.
//!
//! One test function, because every step needs the previous one's bundle and the steps are
//! minutes long on two cores.

use k3s_gvisor_tests::{check, repo, sha256_file, xtask, xtask_with_env};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn bundle_builds_runs_is_a_warm_noop_and_is_reproducible() {
    let repo = repo();

    // Cold (or whatever state the cache is in): a tarball comes out.
    let out = xtask(&repo, &["bundle", "--timings"]);
    let text = check(&out, "cargo xtask bundle");
    let tarball = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let tarball = Path::new(&tarball);
    assert!(tarball.is_file(), "bundle printed {tarball:?}\n{text}");
    check(
        &xtask(&repo, &["verify", tarball.to_str().unwrap()]),
        "cargo xtask verify",
    );

    // The binaries inside run and say who they are.
    let x = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(x.path())
        .status()
        .unwrap();
    assert!(status.success());
    let top = std::fs::read_dir(x.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join("bundle-manifest.json")).unwrap()).unwrap();
    let stamp_version = manifest["version"].as_str().unwrap().to_string();
    let component = |name: &str| {
        manifest["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("the bundle has no {name}: {manifest:#}"))
            .clone()
    };
    // Every upstream is recorded with who served it and what verified it, as bundle.toml pins
    // it: its commit and git tree, or, pinned by its Go module only (runc v1.3.7: bundle.toml
    // says why), that module at its version and its h1: hash.
    let pins: toml::Table = std::fs::read_to_string(repo.join("bundle.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for name in ["runc", "containerd", "k3s"] {
        let source = &component(name)["source"];
        let pin = pins["component"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("bundle.toml pins no {name}"));
        assert!(source["transport"].as_str().is_some(), "{name}: {source:#}");
        match pin.get("tree").and_then(|t| t.as_str()) {
            Some(tree) => assert!(
                source["tree"] == tree
                    && source["commit"].as_str() == pin["commit"].as_str()
                    && source["commit"].as_str().is_some_and(|c| c.len() == 40),
                "{name}: bundle.toml pins tree {tree}, the manifest records {source:#}"
            ),
            None => {
                let module = pin["module"].as_str().unwrap();
                let version = pin["version"].as_str().unwrap();
                assert!(
                    source["transport"] == "go-proxy"
                        && source["location"] == format!("{module}@{version}").as_str()
                        && source["content"].as_str() == pin["sum"].as_str()
                        && source["content"].as_str().is_some_and(|s| s.starts_with("h1:")),
                    "{name}: bundle.toml pins {module}@{version} by its module hash, the manifest records {source:#}"
                );
            }
        }
    }
    assert!(
        manifest["omitted"].as_array().is_none_or(|o| o.is_empty()),
        "{manifest:#}"
    );
    // k3s, and the multicall names users type.
    let run = |argv: &[&str]| {
        check(
            &Command::new(top.join(argv[0]))
                .args(&argv[1..])
                .output()
                .unwrap(),
            &argv.join(" "),
        )
    };
    let k3s = run(&["bin/k3s", "--version"]);
    assert!(k3s.contains("v1.34.1+k3s1 (24fc436e)"), "{k3s}");
    for kubectl in [&["bin/k3s", "kubectl"][..], &["bin/kubectl"][..]] {
        let argv: Vec<&str> = kubectl
            .iter()
            .copied()
            .chain(["version", "--client"])
            .collect();
        let out = run(&argv);
        assert!(out.contains("Client Version: v1.34.1+k3s1"), "{out}");
    }
    assert!(run(&["bin/crictl", "--version"]).contains("crictl"));
    assert!(run(&["bin/ctr", "--version"]).contains("v2.1.9"));
    let runc = check(
        &Command::new(top.join("bin/runc"))
            .arg("--version")
            .output()
            .unwrap(),
        "runc --version",
    );
    assert!(
        runc.contains("runc version 1.3.7") && runc.contains(&stamp_version),
        "{runc}"
    );
    let containerd = check(
        &Command::new(top.join("bin/containerd"))
            .arg("--version")
            .output()
            .unwrap(),
        "containerd --version",
    );
    assert!(
        containerd.contains("v2.1.9") && containerd.contains(&stamp_version.replace(' ', "-")),
        "{containerd}"
    );

    // Warm: nothing changed, so no fetch, patch, build or package work: no stage writes any
    // of its outputs (binaries, image archives, the tarball) again. Its time is reported, not
    // asserted (BENCHMARKS.md).
    let work = std::env::var_os("K3S_GVISOR_WORK")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("target/k3s-gvisor"));
    // bundle.toml packages the same tar as a .tar.zst beside the .tar.gz.
    let zst = tarball.with_extension("zst");
    assert!(zst.is_file(), "no {} beside the tarball", zst.display());
    let before = modification_times(&[&work.join("out"), tarball, &zst]);
    let start = Instant::now();
    let out = xtask(&repo, &["bundle", "--timings"]);
    let warm = start.elapsed();
    let text = check(&out, "warm cargo xtask bundle");
    assert!(text.contains("nothing changed"), "{text}");
    assert!(
        !text.contains("built in") && !text.contains("downloaded"),
        "{text}"
    );
    assert_eq!(
        modification_times(&[&work.join("out"), tarball, &zst]),
        before,
        "the warm run rewrote outputs\n{text}"
    );
    eprintln!("warm no-op bundle: {warm:.1?}\n{text}");

    // Another checkout in another directory, its own work dir, the same inputs: same bytes.
    let other = tempfile::tempdir().unwrap();
    copy_checkout(&repo, other.path());
    // xtask itself is built in this checkout's target dir, and the runtime crates in this
    // checkout's cargo dir for them: their dependencies (the same crates from the same
    // registry, the same RUSTFLAGS) compile once, which saves CI minutes; the second
    // checkout's own crates still build from its own path, and its work dir (Go builds, images,
    // tarballs) is its own (target/k3s-gvisor under it).
    let target = repo.join("target");
    let crates_target = work.join("cargo");
    let out = xtask_with_env(
        other.path(),
        &["bundle"],
        &[
            ("CARGO_TARGET_DIR", target.as_os_str()),
            ("K3S_GVISOR_CARGO_TARGET", crates_target.as_os_str()),
        ],
    );
    check(&out, "cargo xtask bundle in a second checkout");
    let other_tarball = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let other_tarball = Path::new(&other_tarball);
    for (ours, theirs) in [
        (tarball.to_path_buf(), other_tarball.to_path_buf()),
        (zst.clone(), other_tarball.with_extension("zst")),
    ] {
        assert_eq!(
            sha256_file(&ours),
            sha256_file(&theirs),
            "two checkouts built different bundles from the same inputs: {} and {}",
            ours.display(),
            theirs.display()
        );
    }

    // The two checkouts shared one target/debug/xtask; this checkout's `cargo xtask` must still
    // work on this checkout, not on the (now deleted) other one.
    drop(other);
    let out = xtask(&repo, &["bundle"]);
    let again = check(&out, "cargo xtask bundle after the second checkout");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tarball.to_str().unwrap(),
        "after the second checkout, cargo xtask bundle here built elsewhere\n{again}"
    );
}

/// Every file under `roots` (files or directories) with its modification time.
fn modification_times(
    roots: &[&Path],
) -> std::collections::BTreeMap<std::path::PathBuf, std::time::SystemTime> {
    let mut times = std::collections::BTreeMap::new();
    let mut todo: Vec<std::path::PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            times.insert(path, meta.modified().unwrap());
        }
    }
    times
}

/// Copy the tracked and untracked-but-not-ignored files of the checkout (what a clone has).
fn copy_checkout(from: &Path, to: &Path) {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(from)
        .output()
        .unwrap();
    for rel in out.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let rel = std::str::from_utf8(rel).unwrap();
        let src = from.join(rel);
        if !src.is_file() {
            continue;
        }
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dest).unwrap();
    }
}
