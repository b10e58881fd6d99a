//! Tests of the k3s stage. The real k3s tree cannot be fetched on CI's network (the module proxy
//! refuses github.com/k3s-io/k3s), so the build path is exercised on a small tree shaped like
//! k3s: same module path, `cmd/server`, `manifests/`, the two `//go:embed embed/*` packages, the
//! version variables k3s stamps, and cgo code that links libsqlite3 and libseccomp statically
//! as k3s's `libsqlite3` and `seccomp` tags do. It proves the flags, the embedding, the static
//! link, the stamp cache and the error paths; the real binary is checked by `cargo xtask e2e`.

use super::version_flags::{self, ModuleVersions};
use super::*;
use crate::layout::Layout;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

fn pin_for(commit: &str) -> K3sPin {
    K3sPin {
        mode: K3sMode::Source,
        version: "v1.34.1+k3s1".into(),
        commit: commit.into(),
        source: K3sSourcePin {
            module: "github.com/k3s-io/k3s".into(),
            version: commit.into(),
            sum: String::new(),
        },
        release: None,
    }
}

const REAL_COMMIT: &str = "24fc436e6ea59c56ebc37727baa4e6c9a201ee01";

/// A test that needs a tool fails, naming it, rather than skipping.
fn require_tool(tool: &str, package: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("version").output().is_ok();
    assert!(
        found,
        "this test needs `{tool}` on PATH (Debian package: {package})"
    );
}

fn require_build_tools() {
    require_tool("go", "Go toolchain, see scripts/install-deps.sh");
    if let Err(err) = super::build::check_build_prerequisites() {
        panic!("{err:#}");
    }
}

// ---------------------------------------------------------------- pins

#[test]
fn the_real_pin_validates() {
    pin_for(REAL_COMMIT).validate().unwrap();
}

#[test]
fn a_short_commit_is_refused() {
    let err = pin_for("24fc436e").validate().unwrap_err();
    assert!(format!("{err}").contains("40-hex"), "{err}");
}

#[test]
fn a_proxy_version_naming_another_commit_is_refused() {
    let mut pin = pin_for(REAL_COMMIT);
    pin.source.version = "v1.34.1-0.20250922000000-aaaaaaaaaaaa".into();
    let err = pin.validate().unwrap_err();
    assert!(format!("{err}").contains("-24fc436e6ea5"), "{err}");
    pin.source.version = "v1.34.1-0.20250922000000-24fc436e6ea5".into();
    pin.validate().unwrap();
}

#[test]
fn release_mode_needs_a_sha256() {
    let mut pin = pin_for(REAL_COMMIT);
    pin.mode = K3sMode::Release;
    assert!(format!("{}", pin.validate().unwrap_err()).contains("[k3s.release]"));
    pin.release = Some(K3sReleasePin {
        url: "http://x/k3s".into(),
        sha256: "abc".into(),
    });
    assert!(format!("{}", pin.validate().unwrap_err()).contains("64 hex"));
}

#[test]
fn the_pin_reads_from_toml() {
    let pin: K3sPin = toml::from_str(&format!(
        r#"
        version = "v1.34.1+k3s1"
        commit = "{REAL_COMMIT}"
        [source]
        module = "github.com/k3s-io/k3s"
        version = "{REAL_COMMIT}"
        [release]
        url = "https://github.com/k3s-io/k3s/releases/download/v1.34.1%2Bk3s1/k3s"
        sha256 = "{}"
        "#,
        "0".repeat(64)
    ))
    .unwrap();
    assert_eq!(pin.mode, K3sMode::Source);
    assert_eq!(pin.short_commit(), "24fc436e");
    pin.validate().unwrap();
}

#[test]
fn a_proxy_refusal_names_the_ways_out() {
    let pin = pin_for(REAL_COMMIT);
    let refused = anyhow::anyhow!(
        "go mod download github.com/k3s-io/k3s@{REAL_COMMIT}: reading https://proxy.golang.org/...: \
         403 Forbidden\n\tserver response: This module version is not available."
    );
    let text = format!("{:#}", super::source::explain_fetch_error(&pin, refused));
    assert!(text.contains(LOCAL_SOURCE_ENV), "{text}");
    assert!(text.contains("git clone --branch v1.34.1+k3s1"), "{text}");
    assert!(text.contains("mode = \"release\""), "{text}");
    assert!(
        text.contains("403 Forbidden"),
        "the proxy's own words must stay: {text}"
    );

    let mismatch = anyhow::anyhow!("hash mismatch: bundle.toml pins , the download has h1:abc=");
    let text = format!("{:#}", super::source::explain_fetch_error(&pin, mismatch));
    assert!(
        text.contains("sum is not pinned yet") && text.contains("h1:abc="),
        "{text}"
    );
}

// ---------------------------------------------------------------- version flags

#[test]
fn build_dates_are_rfc3339_utc() {
    assert_eq!(version_flags::rfc3339_utc(0), "1970-01-01T00:00:00Z");
    // The build date k3s v1.34.1+k3s1 reports.
    assert_eq!(
        version_flags::rfc3339_utc(1_758_577_183),
        "2025-09-22T21:39:43Z"
    );
    assert_eq!(
        version_flags::rfc3339_utc(951_782_400),
        "2000-02-29T00:00:00Z"
    );
}

#[test]
fn version_flags_follow_replacements_as_version_sh_does() {
    let listed = br#"
    {"Path":"github.com/containerd/containerd/v2","Version":"v2.1.4",
     "Replace":{"Path":"github.com/k3s-io/containerd/v2","Version":"v2.1.4-k3s2"}}
    {"Path":"sigs.k8s.io/cri-tools","Version":"v0.0.0",
     "Replace":{"Path":"github.com/k3s-io/cri-tools","Version":"v1.34.0-k3s2"}}
    {"Path":"github.com/Mirantis/cri-dockerd","Error":{"Err":"not a known dependency"}}
    "#;
    let modules = ModuleVersions::parse(listed).unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("scripts/airgap")).unwrap();
    std::fs::write(
        tree.path().join("scripts/airgap/image-list.txt"),
        "docker.io/rancher/mirrored-pause:3.6\ndocker.io/rancher/klipper-helm:v0.9.8-build20250709\n",
    )
    .unwrap();
    let flags =
        version_flags::version_ldflags(&pin_for(REAL_COMMIT), &modules, tree.path(), "go1.26.8", 0);
    for want in [
        "-X github.com/k3s-io/k3s/pkg/version.Version=v1.34.1+k3s1",
        "-X github.com/k3s-io/k3s/pkg/version.GitCommit=24fc436e",
        "-X github.com/k3s-io/k3s/pkg/version.UpstreamGolang=go1.26.8",
        "-X k8s.io/component-base/version.gitCommit=24fc436e6ea59c56ebc37727baa4e6c9a201ee01",
        "-X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z",
        "-X github.com/containerd/containerd/v2/version.Version=v2.1.4-k3s2",
        "-X github.com/containerd/containerd/v2/version.Package=github.com/k3s-io/containerd/v2",
        "-X sigs.k8s.io/cri-tools/pkg/version.Version=v1.34.0-k3s2",
        "-X github.com/Mirantis/cri-dockerd/cmd/version.Version=v0.0.0",
        "-X github.com/k3s-io/helm-controller/pkg/controllers/chart.DefaultJobImage=rancher/klipper-helm:v0.9.8-build20250709",
    ] {
        assert!(flags.iter().any(|f| f == want), "missing `{want}` in {flags:#?}");
    }
    let all = version_flags::ldflags(&flags);
    assert!(
        all.ends_with("-extldflags '-static -lm -ldl -lz -lpthread'"),
        "{all}"
    );
}

#[test]
fn without_an_image_list_the_helm_job_image_keeps_its_default() {
    let modules = ModuleVersions::parse(b"").unwrap();
    let tree = tempfile::tempdir().unwrap();
    let flags =
        version_flags::version_ldflags(&pin_for(REAL_COMMIT), &modules, tree.path(), "go1.26.8", 0);
    assert!(
        !flags.iter().any(|f| f.contains("DefaultJobImage")),
        "{flags:#?}"
    );
}

#[test]
fn a_dynamic_executable_is_told_apart() {
    // /bin/sh on Debian is dynamically linked (dash, against glibc).
    assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
    let not_elf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_elf.path(), "#!/bin/sh\n").unwrap();
    assert!(is_static_elf(not_elf.path()).is_err());
}

// ---------------------------------------------------------------- a k3s-shaped tree

const MAIN_GO: &str = r#"package main

import (
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/k3s-io/k3s/pkg/deploy"
	"github.com/k3s-io/k3s/pkg/static"
	"github.com/k3s-io/k3s/pkg/version"
	cbversion "k8s.io/component-base/version"
)

// Filled by one tag_*.go file per build tag.
var tags []string

// Filled by the cgo files (libsqlite3 and seccomp tags).
var linked []string

func list(f fs.FS) {
	fs.WalkDir(f, "embed", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fmt.Println(strings.TrimPrefix(p, "embed/"))
		}
		return nil
	})
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("k3s version %s (%s)\ngo version %s\n", version.Version, version.GitCommit, runtime.Version())
		return
	}
	switch os.Args[1] {
	case "tags":
		sort.Strings(tags)
		fmt.Println(strings.Join(tags, " "))
	case "linked":
		fmt.Println(strings.Join(linked, " "))
	case "stamps":
		// k3s's ValidateGolang: the stamped Go must be the Go the binary runs with.
		goOK := version.UpstreamGolang == strings.SplitN(runtime.Version(), " ", 2)[0]
		fmt.Println(cbversion.GitVersion(), cbversion.GitCommit(), cbversion.BuildDate(), "upstream-golang-ok:", goOK)
	case "kubectl":
		fmt.Println("Client Version: " + version.Version + " args=" + strings.Join(os.Args[2:], ","))
	case "crictl", "ctr":
		fmt.Println(os.Args[1] + " version " + version.Version + " args=" + strings.Join(os.Args[2:], ","))
	case "manifests":
		list(deploy.FS)
	case "static":
		list(static.FS)
	}
}
"#;

const CGO_SQLITE_GO: &str = r#"//go:build libsqlite3

package main

// #cgo LDFLAGS: -lsqlite3
// #include <sqlite3.h>
import "C"

func init() { linked = append(linked, "sqlite-"+C.GoString(C.sqlite3_libversion())) }
"#;

const CGO_SECCOMP_GO: &str = r#"//go:build seccomp

package main

// #cgo LDFLAGS: -lseccomp
// #include <seccomp.h>
import "C"

func init() {
	if C.seccomp_version() != nil {
		linked = append(linked, "seccomp")
	}
}
"#;

const COMPONENT_BASE_GO: &str = r#"package version

var (
	gitVersion = "v0.0.0-master+$Format:%H$"
	gitCommit  = ""
	buildDate  = "1970-01-01T00:00:00Z"
)

func GitVersion() string { return gitVersion }
func GitCommit() string  { return gitCommit }
func BuildDate() string  { return buildDate }
"#;

/// Write the k3s-shaped tree into `dir` and commit it; returns the commit id.
fn write_k3s_shaped_checkout(dir: &Path) -> String {
    let files: Vec<(String, String)> = vec![
        (
            "go.mod".into(),
            "module github.com/k3s-io/k3s\n\ngo 1.22\n\nrequire k8s.io/component-base v0.0.0\n\n\
             replace k8s.io/component-base => ./staging/component-base\n"
                .into(),
        ),
        ("staging/component-base/go.mod".into(), "module k8s.io/component-base\n\ngo 1.22\n".into()),
        ("staging/component-base/version/version.go".into(), COMPONENT_BASE_GO.into()),
        (
            "pkg/version/version.go".into(),
            "package version\n\nvar (\n\tVersion        = \"dev\"\n\tGitCommit      = \"HEAD\"\n\tUpstreamGolang = \"\"\n)\n".into(),
        ),
        (
            "pkg/deploy/stage.go".into(),
            "package deploy\n\nimport \"embed\"\n\n//go:embed embed/*\nvar FS embed.FS\n".into(),
        ),
        (
            "pkg/static/stage.go".into(),
            "package static\n\nimport \"embed\"\n\n//go:embed embed/*\nvar FS embed.FS\n".into(),
        ),
        ("cmd/server/main.go".into(), MAIN_GO.into()),
        ("cmd/server/sqlite.go".into(), CGO_SQLITE_GO.into()),
        ("cmd/server/seccomp.go".into(), CGO_SECCOMP_GO.into()),
        ("manifests/coredns.yaml".into(), "kind: Deployment\n".into()),
        ("manifests/metrics-server/metrics-server-deployment.yaml".into(), "kind: Deployment\n".into()),
        (
            "manifests/traefik.yaml".into(),
            "kind: HelmChart\nspec:\n  chart: https://%{KUBERNETES_API}%/static/charts/traefik-34.2.1+up34.2.0.tgz\n"
                .into(),
        ),
        (
            "scripts/airgap/image-list.txt".into(),
            "docker.io/rancher/klipper-helm:v0.9.8-build20250709\n".into(),
        ),
    ];
    let mut files = files;
    for tag in BUILD_TAGS {
        files.push((
            format!("cmd/server/tag_{tag}.go"),
            format!("//go:build {tag}\n\npackage main\n\nfunc init() {{ tags = append(tags, \"{tag}\") }}\n"),
        ));
    }
    for (path, text) in &files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    commit_all(dir)
}

fn commit_all(dir: &Path) -> String {
    let repo = git2::Repository::init(dir).unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::new(
        "test",
        "test@example.com",
        &git2::Time::new(1_700_000_000, 0),
    )
    .unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "k3s-shaped tree",
        &tree,
        &parent_refs,
    )
    .unwrap()
    .to_string()
}

fn run(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_k3s_shaped_tree_builds_with_k3s_flags_and_is_cached() {
    require_build_tools();
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("k3s");
    let commit = write_k3s_shaped_checkout(&checkout);
    let pin = pin_for(&commit);
    let layout = Layout::new(
        tmp.path(),
        Some(tmp.path().join("cache")),
        Some(tmp.path().join("work")),
    );

    let pristine = fetch_k3s_source(&pin, &layout, Some(&checkout), true).unwrap();
    assert_eq!(pristine.content_id, format!("git:{commit}"));
    let src = layout.work.join("src/k3s");
    let prepared = prepare_source(&pristine.dir, &src).unwrap();
    assert_eq!(prepared.left_out_manifests, vec!["traefik.yaml"]);
    assert_eq!(
        prepared.embedded_manifests,
        vec![
            "coredns.yaml",
            "metrics-server/metrics-server-deployment.yaml"
        ]
    );
    assert!(
        !src.join(".git").exists(),
        "the build tree must not carry the checkout's .git"
    );

    let out_bin = layout.work.join("out/bin");
    let log = layout.work.join("logs/k3s-build.log");
    let sde = 1_758_577_183;
    let build = K3sBuild {
        layout: &layout,
        pin: &pin,
        src: &src,
        out_bin: &out_bin,
        source_date_epoch: sde,
        log: &log,
        offline: true,
    };
    let built = build_k3s(&build).unwrap();
    assert!(built.rebuilt);
    assert_eq!(
        built.version_line,
        format!("k3s version v1.34.1+k3s1 ({})", &commit[..8])
    );
    assert!(
        is_static_elf(&built.binary).unwrap(),
        "k3s must be statically linked"
    );
    let shipped: Vec<_> = std::fs::read_dir(&out_bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        shipped,
        vec!["k3s"],
        "out/bin ships as it is: nothing but the binary belongs there"
    );

    let mut want_tags: Vec<&str> = BUILD_TAGS.to_vec();
    want_tags.sort();
    assert_eq!(run(&built.binary, &["tags"]).trim(), want_tags.join(" "));
    let linked = run(&built.binary, &["linked"]);
    assert!(
        linked.contains("sqlite-3.") && linked.contains("seccomp"),
        "{linked}"
    );
    assert_eq!(
        run(&built.binary, &["stamps"]).trim(),
        format!("v1.34.1+k3s1 {commit} 2025-09-22T21:39:43Z upstream-golang-ok: true")
    );
    assert_eq!(
        run(&built.binary, &["manifests"])
            .lines()
            .collect::<Vec<_>>(),
        vec![
            "coredns.yaml",
            "metrics-server/metrics-server-deployment.yaml"
        ]
    );
    assert_eq!(run(&built.binary, &["static"]).trim(), "README.k3s-gvisor");
    let multicall = check_multicall(&built.binary).unwrap();
    assert_eq!(
        multicall,
        vec![
            (
                "kubectl version --client".to_string(),
                "Client Version: v1.34.1+k3s1 args=version,--client".to_string()
            ),
            (
                "crictl --version".to_string(),
                "crictl version v1.34.1+k3s1 args=--version".to_string()
            ),
            (
                "ctr --version".to_string(),
                "ctr version v1.34.1+k3s1 args=--version".to_string()
            ),
        ]
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("go build ./cmd/server") || log_text.contains("\"build\""),
        "{log_text}"
    );

    // Nothing changed: the stamp is fresh and nothing is rebuilt.
    let again = build_k3s(&build).unwrap();
    assert!(!again.rebuilt, "an unchanged tree must not be rebuilt");
    assert_eq!(again.build_flags, built.build_flags);

    // A changed source file is a new input.
    std::fs::write(src.join("manifests/extra.yaml"), "kind: ConfigMap\n").unwrap();
    assert!(build_k3s(&build).unwrap().rebuilt);
}

#[test]
fn a_compile_error_is_reported_with_the_log_tail() {
    require_build_tools();
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("k3s");
    write_k3s_shaped_checkout(&checkout);
    std::fs::write(
        checkout.join("cmd/server/broken.go"),
        "package main\n\nvar _ = undefinedThing\n",
    )
    .unwrap();
    let commit = commit_all(&checkout);
    let pin = pin_for(&commit);
    let layout = Layout::new(
        tmp.path(),
        Some(tmp.path().join("cache")),
        Some(tmp.path().join("work")),
    );
    let pristine = fetch_k3s_source(&pin, &layout, Some(&checkout), true).unwrap();
    let src = layout.work.join("src/k3s");
    prepare_source(&pristine.dir, &src).unwrap();
    let out_bin = layout.work.join("out/bin");
    let log = layout.work.join("logs/k3s-build.log");
    let build = K3sBuild {
        layout: &layout,
        pin: &pin,
        src: &src,
        out_bin: &out_bin,
        source_date_epoch: 1,
        log: &log,
        offline: true,
    };
    let err = format!("{:#}", build_k3s(&build).unwrap_err());
    assert!(err.contains("go build ./cmd/server failed"), "{err}");
    assert!(
        err.contains("undefinedThing"),
        "the error must show the compiler's message: {err}"
    );
    assert!(!out_bin.join("k3s").exists());
}

#[test]
fn a_checkout_at_another_commit_or_with_changes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("k3s");
    let commit = write_k3s_shaped_checkout(&checkout);
    let layout = Layout::new(
        tmp.path(),
        Some(tmp.path().join("cache")),
        Some(tmp.path().join("work")),
    );

    let err = fetch_k3s_source(&pin_for(REAL_COMMIT), &layout, Some(&checkout), true).unwrap_err();
    assert!(
        format!("{err}").contains("checkout 24fc436e6ea59c56ebc37727baa4e6c9a201ee01"),
        "{err}"
    );

    std::fs::write(checkout.join("cmd/server/main.go"), "package main\n").unwrap();
    let err = fetch_k3s_source(&pin_for(&commit), &layout, Some(&checkout), true).unwrap_err();
    assert!(format!("{err}").contains("cmd/server/main.go"), "{err}");

    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("go.mod"), "module example.com/other\n").unwrap();
    let err = fetch_k3s_source(&pin_for(&commit), &layout, Some(&other), true).unwrap_err();
    assert!(
        format!("{err}").contains("not `github.com/k3s-io/k3s`"),
        "{err}"
    );
}

// ---------------------------------------------------------------- release mode

/// Serves `body` at /k3s and 404 elsewhere, for `requests` connections, on 127.0.0.1.
fn serve(body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            let request = String::from_utf8_lossy(&buf[..n]);
            let head = if request.starts_with("GET /k3s ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            stream.write_all(head.as_bytes()).unwrap();
            if head.starts_with("HTTP/1.1 200") {
                stream.write_all(&body).unwrap();
            }
        }
    });
    (format!("http://{addr}"), handle)
}

#[test]
fn the_release_binary_is_downloaded_verified_cached_and_placed() {
    let script =
        "#!/bin/sh\necho 'k3s version v1.34.1+k3s1 (24fc436e)'\necho 'go version go1.24.6'\n"
            .as_bytes()
            .to_vec();
    let sha = crate::digest::sha256_bytes(&script);
    let (base, server) = serve(script, 2);
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(
        tmp.path(),
        Some(tmp.path().join("cache")),
        Some(tmp.path().join("work")),
    );
    let out_bin = tmp.path().join("bin");
    let mut pin = pin_for(REAL_COMMIT);
    pin.mode = K3sMode::Release;

    // A wrong pin: refused, nothing cached, nothing placed.
    pin.release = Some(K3sReleasePin {
        url: format!("{base}/k3s"),
        sha256: "1".repeat(64),
    });
    let err = format!(
        "{:#}",
        place_release_binary(&pin, &layout, &out_bin, false).unwrap_err()
    );
    assert!(err.contains("hash mismatch"), "{err}");
    assert!(!out_bin.join("k3s").exists());

    pin.release = Some(K3sReleasePin {
        url: format!("{base}/k3s"),
        sha256: sha.clone(),
    });
    let binary = place_release_binary(&pin, &layout, &out_bin, false).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    server.join().unwrap();

    // The server is gone: the second placement is served from the cache, offline.
    std::fs::remove_file(&binary).unwrap();
    place_release_binary(&pin, &layout, &out_bin, true).unwrap();

    // A binary that is some other k3s is refused even though its hash is pinned.
    let other = b"#!/bin/sh\necho 'k3s version v1.33.0+k3s1 (deadbeef)'\n".to_vec();
    let other_sha = crate::digest::sha256_bytes(&other);
    let (base, server) = serve(other, 1);
    pin.release = Some(K3sReleasePin {
        url: format!("{base}/k3s"),
        sha256: other_sha,
    });
    let err = format!(
        "{:#}",
        place_release_binary(&pin, &layout, &out_bin, false).unwrap_err()
    );
    assert!(err.contains("not the pinned k3s"), "{err}");
    server.join().unwrap();
}

// ---------------------------------------------------------------- control-plane smoke check
//
// These run the smoke script against stand-ins for k3s that behave like a server that becomes
// ready, one that dies, and one that never gets ready: they prove the script, the marker
// protocol, the time limit and the log tail, on plain Linux and inside runsc. Whether the real
// k3s reaches /readyz is the same function called on the real binary.

/// A stand-in `k3s` whose server part runs `server_body` and whose `kubectl get --raw /readyz`
/// succeeds once the server has created `$DATA/ready`.
fn fake_k3s(dir: &Path, server_body: &str) -> std::path::PathBuf {
    let path = dir.join("k3s");
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = kubectl ]; then
    KC="$3"
    [ -f "$(dirname "$KC")/ready" ] || {{ echo "connection refused" >&2; exit 1; }}
    echo ok; exit 0
fi
shift
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA="$2"; shift ;;
        --write-kubeconfig) KC="$2"; shift ;;
    esac
    shift
done
{server_body}
"#
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

const BECOMES_READY: &str =
    "echo 'starting'; touch \"$KC\"; sleep 2; touch \"$DATA/ready\"; exec sleep 300";

fn smoke(k3s: &Path, data: &Path, host: Host, limit: u64) -> anyhow::Result<SmokeReport> {
    control_plane_smoke(&ControlPlaneSmoke {
        k3s,
        data_dir: data,
        host,
        server_args: &["--disable=traefik".to_string()],
        time_limit: std::time::Duration::from_secs(limit),
    })
}

#[test]
fn the_smoke_check_reports_ready_dead_and_stuck_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let ready = fake_k3s(&mkdir(tmp.path().join("a")), BECOMES_READY);
    let report = smoke(&ready, &tmp.path().join("a/data"), Host::Plain, 30).unwrap();
    assert_eq!(report.readyz, "ok");
    assert!((1..30).contains(&report.seconds_to_ready), "{report:?}");

    // The smoke check's error for a fake k3s running `script` in `tmp/name`.
    let failure = |name: &str, script: &str, limit: u64| {
        let k3s = fake_k3s(&mkdir(tmp.path().join(name)), script);
        let data = tmp.path().join(name).join("data");
        format!("{:#}", smoke(&k3s, &data, Host::Plain, limit).unwrap_err())
    };

    let err = failure(
        "b",
        "echo 'level=fatal msg=\"starting kubernetes: preparing server: no such file\"'; exit 1",
        30,
    );
    assert!(err.contains("exited with status 1"), "{err}");
    assert!(
        err.contains("preparing server: no such file"),
        "the log tail must be shown: {err}"
    );

    let err = failure("c", "touch \"$KC\"; exec sleep 300", 2);
    assert!(err.contains("did not answer ok within"), "{err}");
    assert!(
        err.contains("connection refused"),
        "the last /readyz answer must be shown: {err}"
    );
}

#[test]
fn the_smoke_check_runs_inside_runsc() {
    let host = Host::runsc_from_env();
    let Host::Runsc(runsc) = &host else {
        unreachable!()
    };
    assert!(
        Command::new(runsc).arg("--version").output().is_ok(),
        "this test needs gVisor's runsc: apt-get install runsc, or set {RUNSC_ENV} to a runsc binary"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ready = fake_k3s(&mkdir(tmp.path().join("a")), BECOMES_READY);
    let report = smoke(&ready, &tmp.path().join("a/data"), host.clone(), 60).unwrap();
    assert_eq!(report.readyz, "ok");
    // The server's log was written from inside the sandbox onto the host's filesystem.
    let log = std::fs::read_to_string(tmp.path().join("a/data/k3s-server.log")).unwrap();
    assert!(log.contains("starting"), "{log}");
}

/// Create `path` and hand it on.
fn mkdir(path: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::create_dir_all(&path).unwrap();
    path
}
