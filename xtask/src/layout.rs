//! Where every stage reads and writes. One struct so that no path is spelled twice.

use bundle_format::Arch;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    /// The repository checkout (bundle.toml, patches/, overlays/, bundle-template/, crates/).
    pub repo: PathBuf,
    /// Verified source trees and the Go module cache; safe to share between checkouts.
    pub cache: PathBuf,
    /// Build state of this checkout: patched trees, binaries, logs, stamps, staging tree.
    pub work: PathBuf,
    /// Where finished tarballs go.
    pub dist: PathBuf,
    /// Extra environment for every `go` command (tests point GOPROXY at a fixture proxy).
    pub go_env: Vec<(String, String)>,
    /// Where the runtime crates compile when not in the work dir (--cargo-target-dir).
    pub shared_cargo_target: Option<PathBuf>,
}

/// Upstream binaries are built twice when asked: with our patches (what ships) and without
/// (what the patch proofs compare against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Patched,
    Unpatched,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Patched => "patched",
            Variant::Unpatched => "unpatched",
        }
    }
}

impl Layout {
    pub fn new(repo: &Path, cache: Option<PathBuf>, work: Option<PathBuf>) -> Self {
        let repo = repo.to_path_buf();
        Layout {
            cache: cache.unwrap_or_else(|| repo.join(".cache")),
            work: work.unwrap_or_else(|| repo.join("target/k3s-gvisor")),
            dist: repo.join("dist"),
            go_env: Vec::new(),
            shared_cargo_target: None,
            repo,
        }
    }

    /// The work dir of a bundle for `arch`, given amd64's: amd64 keeps the one it always had
    /// (its stamps and outputs stay valid); another architecture gets `linux-<arch>` below it, so
    /// that neither overwrites the other's trees, binaries, stamps or staging tree. (Tarballs
    /// carry the architecture in their names, so both share `dist`.)
    pub fn work_for_arch(amd64_work: &Path, arch: Arch) -> PathBuf {
        match arch {
            Arch::Amd64 => amd64_work.to_path_buf(),
            other => amd64_work.join(format!("linux-{other}")),
        }
    }

    pub fn patches(&self, component: &str) -> PathBuf {
        self.repo.join("patches").join(component)
    }
    pub fn gomodcache(&self) -> PathBuf {
        self.cache.join("gomod")
    }
    pub fn trees(&self) -> PathBuf {
        self.cache.join("trees")
    }
    pub fn src(&self, component: &str, variant: Variant) -> PathBuf {
        self.work.join("src").join(variant.as_str()).join(component)
    }
    pub fn out_bin(&self, variant: Variant) -> PathBuf {
        self.work.join("out").join(variant.as_str()).join("bin")
    }
    pub fn crates_bin(&self) -> PathBuf {
        self.work.join("out/crates/bin")
    }
    pub fn cargo_target(&self) -> PathBuf {
        self.shared_cargo_target
            .clone()
            .unwrap_or_else(|| self.work.join("cargo"))
    }
    pub fn logs(&self) -> PathBuf {
        self.work.join("logs")
    }
    pub fn stamps(&self) -> PathBuf {
        self.work.join("stamps")
    }
    pub fn stage(&self) -> PathBuf {
        self.work.join("stage")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_has_its_own_work_dir_and_amd64_keeps_its_own() {
        let work = Path::new("/r/target/k3s-gvisor");
        assert_eq!(Layout::work_for_arch(work, Arch::Amd64), work);
        assert_eq!(
            Layout::work_for_arch(work, Arch::Arm64),
            Path::new("/r/target/k3s-gvisor/linux-arm64")
        );
    }
}
