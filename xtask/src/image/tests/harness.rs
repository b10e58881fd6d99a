//! Real tools the image tests drive: Debian's `docker-registry`, `skopeo`, and the pipeline's
//! containerd/ctr. A missing tool fails the test with the package or command that provides it.

use anyhow::{bail, Context, Result};
use bundle_format::Snapshotter;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The repository checkout: found by walking up from this crate to the directory that holds
/// crates/pause (K3S_GVISOR_REPO overrides).
pub fn repo_root() -> PathBuf {
    if let Ok(repo) = std::env::var("K3S_GVISOR_REPO") {
        return PathBuf::from(repo);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("crates/pause/Cargo.toml").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no crates/pause above {}; set K3S_GVISOR_REPO",
                here.display()
            )
        })
        .to_path_buf()
}

pub fn require_tool(name: &str, apt_package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH: install the Debian package {apt_package}")
        })
}

/// `cargo build --release -p pause` for the gnu target with a static C runtime (the way the
/// pipeline builds it), run in `checkout` into `target_dir`; the binary's path.
fn build_static_pause(checkout: &Path, target_dir: &Path, extra_args: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(checkout)
        .args(["build", "--release", "-p", "pause"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(extra_args)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the static pause binary in {} failed:\n{}",
        checkout.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("x86_64-unknown-linux-gnu/release/pause")
}

/// The pause binary built the way the pipeline builds it (static, release, gnu target), once per
/// test run, in its own target directory so it never waits on the outer cargo's lock.
pub fn static_pause_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let repo = repo_root();
            build_static_pause(&repo, &repo.join("target/image-tests"), &[])
        })
        .clone()
}

/// The pause binary built again from a copy of its sources in another directory (a one-member
/// workspace with the same Cargo.lock and profiles; `--offline` because cargo prunes the lock file
/// to the one member, which `--locked` would refuse), to show the build does not depend on where
/// the checkout lives.
pub fn static_pause_binary_from_a_copy(dir: &Path) -> PathBuf {
    let repo = repo_root();
    let copy = dir.join("elsewhere/checkout");
    let crate_dir = copy.join("crates/pause");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    for file in ["Cargo.toml", "src/main.rs"] {
        std::fs::copy(repo.join("crates/pause").join(file), crate_dir.join(file)).unwrap();
    }
    // pause's dev-dependency: cargo loads it even for a release build of the binary.
    copy_dir(&repo.join("crates/testkit"), &copy.join("crates/testkit"));
    std::fs::copy(repo.join("Cargo.lock"), copy.join("Cargo.lock")).unwrap();
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let manifest: Vec<String> = manifest
        .lines()
        .map(|line| match line.trim_start().starts_with("members") {
            true => r#"members = ["crates/pause"]"#.to_string(),
            false => line.to_string(),
        })
        .collect();
    std::fs::write(copy.join("Cargo.toml"), manifest.join("\n")).unwrap();
    build_static_pause(&copy, &dir.join("elsewhere/target"), &["--offline"])
}

/// Copy a directory tree of plain files.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} did not come up within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A child process killed when the guard is dropped (only the one we started).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's `docker-registry` (distribution v2) on a loopback port, storing into a temp dir.
pub struct Registry {
    pub host: String,
    pub storage: PathBuf,
    process: Option<Killed>,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Result<Registry> {
        Registry::start_with(None)
    }

    /// With `tokens`, the registry demands bearer tokens from that issuer, as Docker Hub does.
    pub fn start_with(tokens: Option<&super::token_server::TokenServer>) -> Result<Registry> {
        let binary = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir()?;
        let storage = dir.path().join("storage");
        let port = testkit::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth}",
                storage.display(),
                auth = tokens.map_or(String::new(), |t| format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    t.realm,
                    super::token_server::SERVICE,
                    super::token_server::ISSUER,
                    t.cert.display()
                )),
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        let registry = Registry {
            host: format!("127.0.0.1:{port}"),
            storage,
            process: Some(Killed(child)),
            _dir: dir,
        };
        wait_for("docker-registry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(registry)
    }

    /// Push an OCI archive with skopeo; returns the digest the registry stores it under.
    pub fn push(&self, archive: &Path, repository_and_tag: &str, all: bool) -> Result<String> {
        self.push_as(archive, repository_and_tag, all, None)
    }

    /// `push`, converting manifests to `format` on the way ("v2s2": Docker's schema 2, as most of
    /// Docker Hub, rancher/mirrored-pause included, still serves).
    pub fn push_as(
        &self,
        archive: &Path,
        repository_and_tag: &str,
        all: bool,
        format: Option<&str>,
    ) -> Result<String> {
        let skopeo = require_tool("skopeo", "skopeo");
        let digest_file = tempfile::NamedTempFile::new()?;
        let mut command = Command::new(skopeo);
        command.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        if all {
            command.arg("--all");
        }
        if let Some(format) = format {
            command.args(["--format", format]);
        }
        let out = command
            .arg("--digestfile")
            .arg(digest_file.path())
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repository_and_tag}", self.host))
            .output()?;
        if !out.status.success() {
            bail!(
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(std::fs::read_to_string(digest_file.path())?
            .trim()
            .to_string())
    }

    /// The file the registry keeps a blob's bytes in.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The HTTP status of an unauthenticated GET.
    pub fn status_of(&self, path: &str) -> Result<u16> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.host)?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.host)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .context("empty HTTP response")?;
        Ok(status.parse()?)
    }

    pub fn stop(&mut self) {
        self.process.take();
    }
}

/// Where the pipeline puts containerd and ctr (`cargo xtask build`); K3S_GVISOR_BIN_DIR overrides.
pub fn containerd_bin_dir() -> PathBuf {
    let dir = std::env::var_os("K3S_GVISOR_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/k3s-gvisor/out/patched/bin"));
    for binary in ["containerd", "ctr"] {
        assert!(
            dir.join(binary).is_file(),
            "{} is missing: run `cargo xtask build` first (it builds containerd and ctr into \
             target/k3s-gvisor/out/patched/bin), or point K3S_GVISOR_BIN_DIR at a directory \
             holding containerd and ctr",
            dir.join(binary).display()
        );
    }
    dir
}

/// containerd's config for a private instance under `dir`: own root, state and socket.
/// Imports unpack into the `native` snapshotter, as in the sandbox (no overlayfs on 9p); the
/// transfer service must be told so, or `ctr images import` fails with "no unpack platforms".
pub fn containerd_config(dir: &Path) -> String {
    format!(
        "version = 3\nroot = \"{root}\"\nstate = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n\
         platform = \"linux/amd64\"\n  snapshotter = \"{snapshotter}\"\n",
        snapshotter = Snapshotter::Native,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = dir.join("containerd.sock").display()
    )
}

/// Held while a test's containerd runs. Every containerd creates this host's /run/containerd
/// (its shim socket directory is hard-coded), a sandboxed one over 9p too, and two creating it
/// at once can make one fail with "mkdir /run/containerd: file exists" (seen in the installer's
/// tests).
pub fn one_containerd_at_a_time() -> MutexGuard<'static, ()> {
    static HOST_RUN_CONTAINERD: Mutex<()> = Mutex::new(());
    HOST_RUN_CONTAINERD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A private containerd: own root, state and socket, CRI off (only the image store is needed).
pub struct Containerd {
    bin: PathBuf,
    address: PathBuf,
    _process: Killed,
    dir: tempfile::TempDir,
    /// Last, so it is released after the process is killed.
    _one: MutexGuard<'static, ()>,
}

impl Containerd {
    pub fn start() -> Result<Containerd> {
        let one = one_containerd_at_a_time();
        let bin = containerd_bin_dir();
        let dir = tempfile::tempdir()?;
        let address = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, containerd_config(dir.path()))?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let child = Command::new(bin.join("containerd"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start containerd")?;
        let containerd = Containerd {
            bin,
            address,
            _process: Killed(child),
            dir,
            _one: one,
        };
        wait_for("containerd", Duration::from_secs(30), || {
            containerd.ctr(&["version"]).is_ok()
        })
        .with_context(|| containerd.log())?;
        Ok(containerd)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Run `ctr --address <ours> <args>`; stdout on success.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("ctr"))
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Import an archive into the k8s.io namespace as the installer does; returns the
    /// (name, target digest) rows of `ctr -n k8s.io images ls`.
    pub fn import(&self, archive: &Path) -> Result<Vec<(String, String)>> {
        let archive = archive.to_str().unwrap();
        self.ctr(&[
            "-n",
            "k8s.io",
            "images",
            "import",
            "--snapshotter",
            Snapshotter::Native.as_str(),
            archive,
        ])?;
        let listing = self.ctr(&["-n", "k8s.io", "images", "ls"])?;
        // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS
        Ok(listing
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut columns = line.split_whitespace();
                let name = columns.next()?.to_string();
                let digest = columns.nth(1)?.to_string();
                Some((name, digest))
            })
            .collect())
    }
}

/// The runsc to test under: $K3S_GVISOR_RUNSC, or `runsc` on PATH.
pub fn runsc() -> PathBuf {
    match std::env::var_os("K3S_GVISOR_RUNSC") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "K3S_GVISOR_RUNSC={} does not exist",
                path.display()
            );
            path
        }
        None => require_tool(
            "runsc",
            "runsc (or set K3S_GVISOR_RUNSC to a current runsc)",
        ),
    }
}

/// Run a shell script inside a gVisor sandbox (host root over 9p, loopback-only network).
pub fn run_in_gvisor(script: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(crate::tools::runsc_sh(&runsc())
        .args(["-c", script, "sh"])
        .args(args)
        .output()?)
}
