//! Test support: a hand-assembled bundle dir with the real installer, the real `install` script
//! and the real overlays, plus a manifest and SHA256SUMS computed here.

#![allow(dead_code)]

pub mod oci;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bundle_format::{
    ComponentRecord, ImageRecord, Manifest, PatchRecord, SourceRecord, Sums, SUMS_FILE,
};
use sha2::{Digest, Sha256};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct FakeBundle {
    pub dir: PathBuf,
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

impl FakeBundle {
    /// Assembles a bundle under `parent` for `arch`; `padding_bytes` adds a file of that size
    /// (for the full-disk test).
    pub fn assemble(parent: &Path, arch: &str, padding_bytes: usize) -> FakeBundle {
        FakeBundle::assemble_with(parent, arch, padding_bytes, |_| Vec::new())
    }

    /// Like `assemble`, with `add_runtime(bundle_dir)` copying more files in and returning the
    /// manifest's images.
    pub fn assemble_with(
        parent: &Path,
        arch: &str,
        padding_bytes: usize,
        add_runtime: impl FnOnce(&Path) -> Vec<ImageRecord>,
    ) -> FakeBundle {
        FakeBundle::assemble_full(parent, arch, padding_bytes, Vec::new(), add_runtime)
    }

    pub fn assemble_full(
        parent: &Path,
        arch: &str,
        padding_bytes: usize,
        components: Vec<ComponentRecord>,
        add_runtime: impl FnOnce(&Path) -> Vec<ImageRecord>,
    ) -> FakeBundle {
        let dir = parent.join("k3s-gvisor-0.0.0-test-linux-amd64");
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_installer"), dir.join("bin/installer")).unwrap();
        fs::copy(keeper_binary(), dir.join("bin/keeper")).unwrap();
        fs::copy(
            repo_root().join("bundle-template/install"),
            dir.join("install"),
        )
        .unwrap();
        fs::copy(
            repo_root().join("bundle-template/README.md"),
            dir.join("README.md"),
        )
        .unwrap();
        copy_tree(&repo_root().join("overlays"), &dir.join("etc"));
        if padding_bytes > 0 {
            fs::write(dir.join("bin/padding"), vec![7u8; padding_bytes]).unwrap();
        }
        let images = add_runtime(&dir);
        let manifest = Manifest {
            name: "k3s-gvisor".into(),
            version: "0.0.0-test".into(),
            arch: arch.parse().unwrap(),
            source_date_epoch: 0,
            components,
            images,
            omitted: Vec::new(),
            not_on_this_arch: Vec::new(),
        };
        fs::write(
            dir.join("bundle-manifest.json"),
            serde_json::to_string_pretty(&manifest).unwrap(),
        )
        .unwrap();
        let bundle = FakeBundle { dir };
        bundle.write_sums();
        // Readable by anyone, so the not-root test can run it as nobody.
        for path in [parent.to_path_buf(), bundle.dir.clone()] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        bundle
    }

    /// Like `assemble_with`, the bundle also holding the pipeline's patched runc, containerd,
    /// shim and ctr, with their component records.
    pub fn assemble_with_runtime(
        parent: &Path,
        add_runtime: impl FnOnce(&Path) -> Vec<ImageRecord>,
    ) -> FakeBundle {
        let bin_dir = runtime_bin_dir();
        let components = vec![
            component_with_repo_patches("runc", "v1.3.3"),
            component_with_repo_patches("containerd", "v2.1.4"),
        ];
        FakeBundle::assemble_full(parent, "amd64", 0, components, |dir| {
            for name in RUNTIME_BINARIES {
                fs::copy(bin_dir.join(name), dir.join("bin").join(name)).unwrap();
            }
            add_runtime(dir)
        })
    }

    /// Writes SHA256SUMS as the pipeline does (bundle-format's `Sums`), over every file but
    /// itself.
    pub fn write_sums(&self) {
        let mut files = Vec::new();
        files_under(&self.dir, &self.dir, &mut files);
        files.retain(|f| f != SUMS_FILE);
        files.sort();
        let mut sums = Sums::new();
        for file in &files {
            sums.push(&sha256_of(&self.dir.join(file)), file).unwrap();
        }
        fs::write(self.dir.join(SUMS_FILE), sums.write()).unwrap();
    }

    pub fn install_script(&self) -> PathBuf {
        self.dir.join("install")
    }

    pub fn installer(&self) -> PathBuf {
        self.dir.join("bin/installer")
    }

    /// `./install --prefix PREFIX --data-dir DATA --no-start` on this host.
    pub fn install_no_start(&self, prefix: &Path, data: &Path) -> (Output, String, String) {
        run(Command::new(self.install_script())
            .arg("--prefix")
            .arg(prefix)
            .arg("--data-dir")
            .arg(data)
            .arg("--no-start"))
    }
}

/// `PREFIX/bin/installer uninstall --data-dir DATA` on this host.
pub fn uninstall(prefix: &Path, data: &Path) -> (Output, String, String) {
    run(Command::new(prefix.join("bin/installer"))
        .arg("uninstall")
        .arg("--data-dir")
        .arg(data))
}

pub fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().expect("cannot run command");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// False (skip) when not root; see testkit::root_or_skip.
pub fn require_root() -> bool {
    testkit::root_or_skip("installs into temp dirs, mounts tmpfs and cgroups, and runs gVisor")
}

#[allow(unused_imports)] // not every test binary that includes common uses it
pub use testkit::runsc;

/// The keeper every daemon runs under (crates/keeper; its own package, so cargo builds it for
/// the installer's tests only when asked): built once per test binary into the installer's
/// target dir, whose binary it then sits beside.
pub fn keeper_binary() -> PathBuf {
    static KEEPER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KEEPER.get_or_init(build_keeper).clone()
}

fn build_keeper() -> PathBuf {
    let installer = Path::new(env!("CARGO_BIN_EXE_installer"));
    let profile_dir = installer.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "--locked",
            "--package",
            "keeper",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(repo_root())
        .output()
        .expect("cannot run cargo build");
    assert!(
        output.status.success(),
        "cargo build --package keeper failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join("keeper")
}

/// `cargo xtask ARGS` from the repo root with the repo's cache; returns the last stdout line
/// (the tool and build commands print the path they produced there) or fails with both streams.
pub fn xtask_path(args: &[&str]) -> PathBuf {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("xtask")
        .args(args)
        .current_dir(repo_root())
        .env("K3S_GVISOR_CACHE", repo_root().join(".cache"))
        .output()
        .expect("cannot run cargo xtask");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo xtask {} failed:\n{stdout}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(stdout.lines().last().unwrap_or("").trim())
}

/// Runs `script` with /bin/sh inside `runsc do` (9p root, loopback-only network) and returns
/// whether it exited 0 and its stdout + stderr.
pub fn in_gvisor(runsc: &Path, script: &str) -> (bool, String) {
    let (output, stdout, stderr) = run(testkit::runsc_sh(runsc).args(["-c", script]));
    (
        output.status.success(),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// The digest of the (first) manifest the OCI layout archive at `path` names: what containerd
/// holds the image under once imported, as the pipeline records it.
fn layout_manifest_digest(path: &Path) -> String {
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("index.json") {
            let index: serde_json::Value = serde_json::from_reader(entry).unwrap();
            return index["manifests"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string();
        }
    }
    panic!("{} has no index.json", path.display())
}

/// The manifest record of an image file the test wrote into `bundle_dir`.
pub fn image_record(
    bundle_dir: &Path,
    name: &str,
    reference: &str,
    file: &str,
    sandbox: bool,
) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        reference: reference.into(),
        source: bundle_format::ImageSource::Build,
        digest: layout_manifest_digest(&bundle_dir.join(file)),
        file: file.into(),
        sha256: sha256_of(&bundle_dir.join(file)),
        sandbox,
    }
}

/// A component record carrying the repo's patches for it, as the pipeline records them
/// (file, sha256 and the blockers each declares).
pub fn component_with_repo_patches(name: &str, version: &str) -> ComponentRecord {
    let dir = repo_root().join("patches").join(name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|e| e == "patch"));
    files.sort();
    ComponentRecord {
        name: name.into(),
        version: version.into(),
        source: SourceRecord {
            // The repository's own files: as the pipeline records our crates.
            transport: bundle_format::Transport::Workspace,
            location: dir.display().to_string(),
            content: String::new(),
            repository: None,
            commit: None,
            tree: None,
        },
        patches: files
            .iter()
            .map(|f| PatchRecord {
                file: format!(
                    "patches/{name}/{}",
                    f.file_name().unwrap().to_string_lossy()
                ),
                sha256: sha256_of(f),
                handles: bundle_format::declared_blockers(&fs::read_to_string(f).unwrap()),
            })
            .collect(),
        build_flags: Vec::new(),
        outputs: Vec::new(),
        links: Vec::new(),
    }
}

/// The pipeline's runtime binaries a bundle with containerd ships.
const RUNTIME_BINARIES: [&str; 4] = ["runc", "containerd", "containerd-shim-runc-v2", "ctr"];

/// The pipeline's patched runc, containerd, shim and ctr: $K3S_GVISOR_RUNTIME_BIN, else what
/// `cargo xtask build` prints for those two components (a no-op when nothing changed). Built
/// once per test binary.
pub fn runtime_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| match std::env::var_os("K3S_GVISOR_RUNTIME_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => xtask_path(&["build", "--component", "runc", "--component", "containerd"]),
        })
        .clone();
    for name in RUNTIME_BINARIES {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: `cargo xtask build` should have built it (or set \
             K3S_GVISOR_RUNTIME_BIN to a dir holding runc, containerd, containerd-shim-runc-v2, ctr)",
            dir.join(name).display()
        );
    }
    dir
}

/// The pod sandbox image the CRI tests ship.
pub const PAUSE_REF: &str = "registry.k8s.io/pause:3.10";

/// Copies the launcher and gvisor-cni into the bundle at `dir`.
pub fn add_launcher_and_cni(dir: &Path) {
    fs::copy(workspace_bin("launcher"), dir.join("bin/launcher")).unwrap();
    fs::create_dir_all(dir.join("cni/bin")).unwrap();
    fs::copy(workspace_bin("gvisor-cni"), dir.join("cni/bin/gvisor-cni")).unwrap();
}

/// Writes the pod sandbox image into the bundle at `dir` (it only has to sleep: a busybox
/// that does) and returns its manifest record.
pub fn add_pause_image(dir: &Path) -> ImageRecord {
    oci::write_busybox_image(
        &dir.join("images/pause.oci.tar"),
        PAUSE_REF,
        &["/bin/sleep", "2147483647"],
    );
    image_record(dir, "pause", PAUSE_REF, "images/pause.oci.tar", true)
}

/// Workspace binaries built next to this package's own binary.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_installer")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p launcher -p gvisor-cni` with the same target dir \
         (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// crictl: $K3S_GVISOR_CRICTL, else the pinned tool `cargo xtask tool crictl` builds.
pub fn crictl() -> PathBuf {
    if let Some(path) = std::env::var_os("K3S_GVISOR_CRICTL") {
        return PathBuf::from(path);
    }
    static CRICTL: OnceLock<PathBuf> = OnceLock::new();
    CRICTL
        .get_or_init(|| xtask_path(&["tool", "crictl"]))
        .clone()
}

/// The current gVisor's runsc, built and cached by the pipeline's tool command.
pub fn current_runsc() -> PathBuf {
    static RUNSC: OnceLock<PathBuf> = OnceLock::new();
    RUNSC.get_or_init(|| xtask_path(&["tool", "runsc"])).clone()
}
