//! Release automation: the GitHub Actions workflows in ci/ pass actionlint (with shellcheck on
//! their `run:` scripts), and `cargo xtask release --dry-run` on the real bundle writes exactly
//! the assets the workflow uploads, notes with the real versions and patches, and a CycloneDX
//! SBOM that validates against the official CycloneDX 1.5 JSON schema and matches the manifest.
//!
//! Needs: shellcheck (apt), python3 with venv (apt: python3-venv), and PyPI reachable the first
//! time (the schema and validator come from the `cyclonedx-python-lib` package, installed into
//! a venv under target/; later runs reuse it offline).

use k3s_gvisor_tests::{check, repo, tool, xtask};
use std::path::{Path, PathBuf};
use std::process::Command;

/// PyPI package that ships CycloneDX's JSON schemas (bom-1.5, spdx, jsf) and a validator over
/// `jsonschema` that resolves the schemas' references from those local files (no network).
const CYCLONEDX_LIB: &str = "cyclonedx-python-lib[json-validation]==11.12.0";

#[test]
fn ci_workflows_pass_actionlint_and_shellcheck() {
    let repo = repo();
    let actionlint = tool("actionlint");
    assert!(
        actionlint.is_file(),
        "cargo xtask tool actionlint printed no binary path: {actionlint:?}"
    );
    let shellcheck = which("shellcheck").unwrap_or_else(|| {
        panic!("shellcheck is missing: `apt-get install shellcheck` (actionlint runs it on every `run:` script)")
    });

    let workflows: Vec<PathBuf> = std::fs::read_dir(repo.join("ci"))
        .expect("ci/ is missing")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    let names: Vec<String> = workflows
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for expected in ["release.yml", "pr.yml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "ci/{expected} is missing (found {names:?})"
        );
    }
    let lint = |files: &[PathBuf]| {
        Command::new(&actionlint)
            .arg("-no-color")
            .arg(format!("-shellcheck={}", shellcheck.display()))
            .args(files)
            .output()
            .expect("cannot run actionlint")
    };
    let out = lint(&workflows);
    check(&out, "actionlint ci/*.yml");

    // The lint really looks: a wrong permission value and an unquoted expansion are caught.
    let release = std::fs::read_to_string(repo.join("ci/release.yml")).unwrap();
    let broken = release
        .replacen("contents: write", "contents: wrte", 1)
        .replacen("-c -- *.tar.gz.sha256", "-c $SUMS", 1);
    assert_ne!(
        broken, release,
        "ci/release.yml changed shape; update this test's deliberate breakage"
    );
    let dir = tempfile::tempdir().unwrap();
    let broken_path = dir.path().join("release.yml");
    std::fs::write(&broken_path, broken).unwrap();
    let out = lint(&[broken_path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "actionlint accepted a broken workflow:\n{text}"
    );
    assert!(
        text.contains("\"wrte\" is invalid") && text.contains("SC2086"),
        "actionlint did not name both faults:\n{text}"
    );

    // The release workflow's shape: the pipeline commands, and write access in one job only.
    for needle in [
        "tags: [\"v*\"]",
        "scripts/install-deps.sh",
        "arch: [amd64, arm64]",
        "cargo xtask --arch \"$ARCH\" bundle",
        "cargo xtask verify",
        "cargo xtask release --dry-run",
        "--tarball \"dist/k3s-gvisor-$GITHUB_REF_NAME-linux-arm64.tar.gz\"",
        "--tag \"$GITHUB_REF_NAME\"",
        "--repository \"$GITHUB_REPOSITORY\"",
        "gh release create",
        "\"${files[@]/#/release/assets/}\"",
        "actions/attest-build-provenance@",
        "subject-checksums: release/assets/SHA256SUMS",
        "sigstore/cosign-installer@",
        "cosign sign-blob --yes --bundle \"$name.sigstore.json\" \"$name\"",
        "cargo fetch --locked",
    ] {
        assert!(release.contains(needle), "ci/release.yml lacks {needle:?}");
    }
    assert_eq!(
        release.matches("contents: write").count(),
        1,
        "only the publish job may write"
    );
    // Only the sign job may mint an OIDC token (sign, attest): never the job that runs builds.
    assert_eq!(
        release.matches("id-token: write").count(),
        1,
        "only the sign job may have id-token: write"
    );
    let sign_job = release
        .split("\n  sign:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  publish:\n").next())
        .expect("ci/release.yml has a sign job before publish");
    assert!(
        sign_job.contains("id-token: write") && sign_job.contains("attestations: write"),
        "{sign_job}"
    );
    assert!(
        !sign_job.contains("actions/checkout") && !sign_job.contains("cargo "),
        "the sign job runs no repository code:\n{sign_job}"
    );
    assert!(
        release.contains("permissions:\n  contents: read"),
        "the workflow's default must be read-only"
    );
    let pr = std::fs::read_to_string(repo.join("ci/pr.yml")).unwrap();
    assert!(
        pr.contains("pull_request") && pr.contains("scripts/test.sh"),
        "ci/pr.yml must run scripts/test.sh on pull requests"
    );
}

#[test]
fn release_dry_run_of_the_real_bundle() {
    let repo = repo();
    // After tests/tests/bundle.rs this is a warm no-op; alone, it builds the bundle.
    // K3S_GVISOR_BUNDLE=<tarball> releases that bundle instead (e.g. one built elsewhere).
    let built_here = std::env::var_os("K3S_GVISOR_BUNDLE").is_none();
    let tarball = match std::env::var_os("K3S_GVISOR_BUNDLE") {
        Some(path) => PathBuf::from(path),
        None => {
            let out = xtask(&repo, &["bundle"]);
            check(&out, "cargo xtask bundle");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    assert!(tarball.is_file(), "no bundle at {}", tarball.display());
    let file_name = tarball.file_name().unwrap().to_string_lossy().to_string();
    let stem = file_name.strip_suffix(".tar.gz").unwrap().to_string();
    // bundle.toml packages the same tar as a .tar.zst too; a bundle from elsewhere may lack it.
    let zst_name = format!("{stem}.tar.zst");
    let zst = tarball.with_file_name(&zst_name);
    assert!(
        zst.is_file() || !built_here,
        "cargo xtask bundle wrote no {}",
        zst.display()
    );
    let with_zst = zst.is_file();

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("release");
    let out = xtask(
        &repo,
        &[
            "release",
            "--dry-run",
            "--tarball",
            tarball.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
    );
    let printed = check(&out, "cargo xtask release --dry-run");
    eprintln!("{printed}");

    // Exactly the files the workflow uploads, and the printed asset list names each.
    let assets = out_dir.join("assets");
    let mut names: Vec<String> = std::fs::read_dir(&assets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let mut expected = vec![
        "SHA256SUMS".to_string(),
        format!("{stem}.cdx.json"),
        format!("{stem}.tar.gz"),
        format!("{stem}.tar.gz.sha256"),
    ];
    if with_zst {
        expected.extend([zst_name.clone(), format!("{zst_name}.sha256")]);
    }
    assert_eq!(names, expected);
    assert!(
        printed.contains(&format!("assets ({}):", expected.len())),
        "{printed}"
    );
    for name in &expected {
        assert!(
            printed.contains(&assets.join(name).display().to_string()),
            "asset list lacks {name}:\n{printed}"
        );
    }
    assert_eq!(
        std::fs::read(&tarball).unwrap(),
        std::fs::read(assets.join(&file_name)).unwrap()
    );
    let sums = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{file_name}.sha256"))
        .current_dir(&assets)
        .output()
        .unwrap();
    check(&sums, "sha256sum -c on the released .sha256");
    // The signed files: the tarballs and the SBOM.
    let mut signed = vec![format!("{stem}.tar.gz")];
    if with_zst {
        assert_eq!(
            std::fs::read(&zst).unwrap(),
            std::fs::read(assets.join(&zst_name)).unwrap()
        );
        signed.push(zst_name.clone());
    }
    signed.push(format!("{stem}.cdx.json"));
    let sums = Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(&assets)
        .output()
        .unwrap();
    let text = check(&sums, "sha256sum -c on the release's SHA256SUMS");
    assert_eq!(
        text.lines().map(str::to_string).collect::<Vec<_>>(),
        signed
            .iter()
            .map(|f| format!("{f}: OK"))
            .collect::<Vec<_>>(),
        "SHA256SUMS lists the signed files, the tarballs and the SBOM"
    );

    // The signing plan: what the workflow signs and attests, as which identity (a dry run
    // signs nothing). No --repository and no GITHUB_REPOSITORY here: a placeholder, said so.
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("signing-plan.json")).unwrap()).unwrap();
    let version = stem
        .strip_prefix("k3s-gvisor-")
        .and_then(|s| s.strip_suffix("-linux-amd64"))
        .unwrap();
    let identity = plan["identity"]["certificate_identity"].as_str().unwrap();
    assert!(
        identity.ends_with(&format!(
            "/.github/workflows/release.yml@refs/tags/{version}"
        )),
        "{identity}"
    );
    assert_eq!(
        plan["identity"]["certificate_oidc_issuer"],
        "https://token.actions.githubusercontent.com"
    );
    let subjects: Vec<&str> = plan["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, signed);
    assert!(
        printed.contains("signing plan:") && printed.contains(identity),
        "{printed}"
    );

    // `cargo xtask verify` on the released tarball checks SHA256SUMS and the SBOM offline and
    // names what it cannot check (no signatures beside it yet; the signature and provenance
    // need the network).
    let out = xtask(
        &repo,
        &["verify", assets.join(&file_name).to_str().unwrap()],
    );
    let text = check(&out, "cargo xtask verify of the released tarball");
    for needle in [
        format!("checked: {stem}.tar.gz: sha256 as SHA256SUMS says"),
        format!("checked: {stem}.cdx.json: describes this tarball (its sha256)"),
        format!("not checked here: {stem}.tar.gz.sigstore.json: no signature beside"),
        "cosign verify-blob".to_string(),
        "gh attestation verify".to_string(),
    ] {
        assert!(text.contains(&needle), "verify lacks {needle:?}:\n{text}");
    }
    // The .tar.zst verifies the same way, and is held to the SBOM through the tar it shares
    // with the .tar.gz.
    if with_zst {
        let out = xtask(&repo, &["verify", assets.join(&zst_name).to_str().unwrap()]);
        let text = check(&out, "cargo xtask verify of the released .tar.zst");
        for needle in [
            format!("checked: {zst_name}: sha256 as SHA256SUMS says"),
            format!(
                "checked: {stem}.cdx.json: describes {stem}.tar.gz (its sha256), which holds \
                 the same tar as {zst_name}"
            ),
        ] {
            assert!(text.contains(&needle), "verify lacks {needle:?}:\n{text}");
        }
    }

    // The manifest inside the tarball: what the notes and the SBOM must agree with.
    let manifest = dir.path().join("bundle-manifest.json");
    let extracted = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-O")
        .arg(format!("{stem}/bundle-manifest.json"))
        .output()
        .unwrap();
    check(&extracted, "tar: extract bundle-manifest.json");
    std::fs::write(&manifest, &extracted.stdout).unwrap();
    let manifest_text = String::from_utf8_lossy(&extracted.stdout).to_string();

    // The notes: real versions, every patch of this checkout with its subject.
    let notes = std::fs::read_to_string(out_dir.join("release-notes.md")).unwrap();
    assert!(
        printed.contains(notes.trim()),
        "the command did not print the notes"
    );
    for needle in [
        "| runc | v1.3.7 |",
        "| containerd | v2.1.9 |",
        "| k3s | v1.34.1+k3s1 |",
        "- upstream: https://github.com/containerd/containerd commit `926009266892d80087b532f7f17ea14b43c4f23d`",
        "- upstream: https://github.com/k3s-io/k3s commit `24fc436e6ea59c56ebc37727baa4e6c9a201ee01`",
    ] {
        assert!(notes.contains(needle), "notes lack {needle:?}:\n{notes}");
    }
    // Every patch of this checkout that built the bundle, with its subject. A bundle built by
    // this test from this checkout must carry all of them.
    let mut patch_count = 0;
    for dir in std::fs::read_dir(repo.join("patches")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for patch in std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        {
            let rel = patch.strip_prefix(&repo).unwrap().display().to_string();
            if !manifest_text.contains(&format!("\"{rel}\"")) {
                assert!(
                    !built_here,
                    "{rel}: in the checkout but not in the bundle's manifest"
                );
                continue; // K3S_GVISOR_BUNDLE names an older bundle
            }
            let text = std::fs::read_to_string(&patch).unwrap();
            let subject = first_subject_line(&text).unwrap_or_else(|| panic!("{rel}: no Subject"));
            assert!(
                notes.contains(&format!("`{rel}`: {subject}")),
                "notes lack patch {rel} with subject {subject:?}:\n{notes}"
            );
            patch_count += 1;
        }
    }
    assert!(
        patch_count >= 3,
        "expected the runc patches at least, found {patch_count}"
    );

    // The SBOM: valid CycloneDX 1.5 and faithful to the manifest.
    let sbom_path = assets.join(format!("{stem}.cdx.json"));
    let sbom = std::fs::read_to_string(&sbom_path).unwrap();
    let python = validator_python();
    let validate = |path: &Path| {
        Command::new(&python)
            .arg("-c")
            .arg(VALIDATE_SBOM)
            .arg(path)
            .arg(&manifest)
            .output()
            .expect("cannot run python")
    };
    let text = check(&validate(&sbom_path), "SBOM validation");
    assert!(text.contains("valid: CycloneDX 1.5"), "{text}");

    // A schema violation is rejected (an unknown hash algorithm)...
    let broken = dir.path().join("broken-schema.cdx.json");
    std::fs::write(&broken, sbom.replacen("\"SHA-256\"", "\"SHA-257\"", 1)).unwrap();
    let out = validate(&broken);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("SHA-257"),
        "a schema-invalid SBOM passed:\n{text}"
    );
    // ...and so is a schema-valid SBOM whose hash for bin/runc is not the shipped binary's.
    let runc_sha = notes
        .split("`bin/runc`: sha256 `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .expect("notes name bin/runc's sha256");
    let broken = dir.path().join("broken-hash.cdx.json");
    std::fs::write(&broken, sbom.replace(runc_sha, &"0".repeat(64))).unwrap();
    let out = validate(&broken);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("bin/runc: SBOM sha256"),
        "an SBOM with a wrong hash passed:\n{text}"
    );
}

/// The first line of a format-patch `Subject:` without its `[PATCH n/m]` prefix (a folded
/// subject continues on the next line; the notes unfold it, so the first line is a prefix).
fn first_subject_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Subject:"))?
        .trim();
    Some(match line.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.1.trim().to_string(),
        None => line.to_string(),
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// A venv under target/ with the pinned CycloneDX library; created once (needs PyPI), then reused.
fn validator_python() -> PathBuf {
    let venv = repo().join("target/sbom-validator-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("installed {}", CYCLONEDX_LIB.replace('/', "_")));
    if marker.is_file() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is missing ({e}): `apt-get install python3 python3-venv`")
        });
    assert!(
        out.status.success(),
        "python3 -m venv failed (install Debian's python3-venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            CYCLONEDX_LIB,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install {CYCLONEDX_LIB} failed (the SBOM schema comes from this PyPI package; is PyPI reachable?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&marker, "").unwrap();
    python
}

/// argv: SBOM path, bundle-manifest.json path. Prints `valid: ...` and exits 0, or prints every
/// problem and exits 1. The schema check is the library's strict validator (format checks on);
/// the rest checks that the SBOM says what the manifest says.
const VALIDATE_SBOM: &str = r#"
import json, sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

sbom_path, manifest_path = sys.argv[1], sys.argv[2]
text = open(sbom_path).read()
errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text, all_errors=True)
problems = ["schema: " + str(e).splitlines()[0] for e in (errors or [])]

sbom = json.loads(text)
manifest = json.load(open(manifest_path))
if sbom.get("specVersion") != "1.5":
    problems.append("specVersion is not 1.5")
by_ref = {c.get("bom-ref"): c for c in sbom.get("components", [])}
def sha256s(c):
    return [h.get("content") for h in c.get("hashes", []) if h.get("alg") == "SHA-256"]
def props(c):
    return {(p.get("name"), p.get("value")) for p in c.get("properties", [])}

for comp in manifest["components"]:
    for out in comp["outputs"]:
        path = out["path"]
        c = by_ref.get(path)
        if c is None:
            problems.append(f"{path}: shipped but not in the SBOM")
            continue
        if sha256s(c) != [out["sha256"]]:
            problems.append(f"{path}: SBOM sha256 {sha256s(c)} is not the manifest's {out['sha256']}")
        if c.get("version") != comp["version"]:
            problems.append(f"{path}: SBOM version {c.get('version')} is not {comp['version']}")
        if ("k3s-gvisor:source-location", comp["source"]["location"]) not in props(c):
            problems.append(f"{path}: upstream source {comp['source']['location']} not named")
        if comp["source"]["transport"] == "workspace":
            continue
        pedigree = c.get("pedigree", {})
        ancestors = pedigree.get("ancestors", [])
        source = comp["source"]
        if source["transport"] == "go-proxy":
            want = "pkg:golang/" + source["location"]
        else:
            want = "pkg:github/" + source["repository"].removeprefix("https://github.com/") + "@" + source["commit"]
            for key in ("commit", "tree"):
                if ("k3s-gvisor:source-" + key, source[key]) not in props(c):
                    problems.append(f"{path}: source {key} {source[key]} not recorded")
        if [a.get("purl") for a in ancestors] != [want]:
            problems.append(f"{path}: ancestor purl is not {want}")
        if not ancestors or not ancestors[0].get("externalReferences"):
            problems.append(f"{path}: no upstream source URL")
        urls = [p.get("diff", {}).get("url") for p in pedigree.get("patches", [])]
        if urls != [p["file"] for p in comp["patches"]]:
            problems.append(f"{path}: SBOM patches {urls} are not the manifest's")
        for p in comp["patches"]:
            if ("k3s-gvisor:patch", f"{p['file']} sha256:{p['sha256']}") not in props(c):
                problems.append(f"{path}: patch {p['file']} sha256 not recorded")

for image in manifest.get("images", []):
    c = by_ref.get(image["file"])
    if c is None or sha256s(c) != [image["sha256"]]:
        problems.append(f"{image['file']}: image missing from the SBOM or with another sha256")

for p in problems:
    print("invalid:", p)
if problems:
    sys.exit(1)
print(f"valid: CycloneDX 1.5, {len(by_ref)} components, every shipped file matches the manifest")
"#;
