//! Test support: a hand-assembled bundle dir with the real installer, the real `install` script
//! and the real overlays, plus a manifest and SHA256SUMS computed here.

#![allow(dead_code)]

pub mod oci;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        FakeBundle::assemble_with(parent, arch, padding_bytes, |_| serde_json::json!([]))
    }

    /// Like `assemble`, with `add_runtime(bundle_dir)` copying more files in and returning the
    /// manifest's "images" array; `components` is the manifest's "components" array.
    pub fn assemble_with(
        parent: &Path,
        arch: &str,
        padding_bytes: usize,
        add_runtime: impl FnOnce(&Path) -> serde_json::Value,
    ) -> FakeBundle {
        FakeBundle::assemble_full(
            parent,
            arch,
            padding_bytes,
            serde_json::json!([]),
            add_runtime,
        )
    }

    pub fn assemble_full(
        parent: &Path,
        arch: &str,
        padding_bytes: usize,
        components: serde_json::Value,
        add_runtime: impl FnOnce(&Path) -> serde_json::Value,
    ) -> FakeBundle {
        let dir = parent.join("k3s-gvisor-0.0.0-test-linux-amd64");
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_installer"), dir.join("bin/installer")).unwrap();
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
        let manifest = serde_json::json!({
            "name": "k3s-gvisor",
            "version": "0.0.0-test",
            "arch": arch,
            "source_date_epoch": 0,
            "components": components,
            "images": images,
        });
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

    /// Writes SHA256SUMS with coreutils' sha256sum: the format the pipeline writes, and much
    /// faster than a debug build of sha2 on ~100 MB of runtime binaries.
    pub fn write_sums(&self) {
        let mut files = Vec::new();
        files_under(&self.dir, &self.dir, &mut files);
        files.retain(|f| f != "SHA256SUMS");
        files.sort();
        let output = Command::new("sha256sum")
            .args(&files)
            .current_dir(&self.dir)
            .output()
            .expect("cannot run sha256sum (coreutils)");
        assert!(output.status.success(), "sha256sum failed");
        fs::write(self.dir.join("SHA256SUMS"), output.stdout).unwrap();
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

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these installer tests need root (they mount tmpfs and run gVisor): run cargo test as root"
    );
}

/// The gVisor binary under test: $K3S_GVISOR_RUNSC, else `runsc` on PATH.
pub fn runsc() -> PathBuf {
    let name = std::env::var("K3S_GVISOR_RUNSC").unwrap_or_else(|_| "runsc".into());
    let found = if name.contains('/') {
        Path::new(&name).is_file().then(|| PathBuf::from(&name))
    } else {
        std::env::var("PATH").ok().and_then(|path| {
            path.split(':')
                .map(|dir| Path::new(dir).join(&name))
                .find(|candidate| candidate.is_file())
        })
    };
    found.unwrap_or_else(|| {
        panic!(
            "gVisor's runsc not found (K3S_GVISOR_RUNSC={name:?}): install it with \
             `apt-get install runsc` or point K3S_GVISOR_RUNSC at a runsc binary"
        )
    })
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
    let mut command = Command::new(runsc);
    command.args([
        "--network=none",
        "do",
        "-force-overlay=false",
        "/bin/sh",
        "-c",
        script,
    ]);
    let (output, stdout, stderr) = run(&mut command);
    (
        output.status.success(),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}
