//! The closed sets of words the bundle's writer and its readers share. Each is serialized as
//! the word it always was (`"amd64"`, `"go-proxy"`, `"native"`, ...), so manifests and state
//! files written before these types existed read back unchanged.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The architecture a bundle is built for, in Go's names (the manifest's `arch`, bundle.toml's
/// `arch`, the `linux-<arch>` of a tarball's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture bundles are built for.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The Go name of a Rust `target_arch` (`std::env::consts::ARCH`), where there is one.
    pub fn from_rust(target_arch: &str) -> Option<Arch> {
        match target_arch {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(text: &str) -> Result<Arch, String> {
        Arch::ALL
            .into_iter()
            .find(|arch| arch.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Arch::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "{text:?} is not an architecture bundles are built for (they are: {})",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a component's source was had (the manifest's `source.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// A commit archive from a mirror.
    Mirror,
    /// GitHub's commit archive.
    GithubArchive,
    /// A git fetch of the commit.
    Git,
    /// The Go module proxy.
    GoProxy,
    /// Our own crates, built from this checkout.
    Workspace,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mirror => "mirror",
            Transport::GithubArchive => "github-archive",
            Transport::Git => "git",
            Transport::GoProxy => "go-proxy",
            Transport::Workspace => "workspace",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a shipped image came from (the manifest's `images[].source`): assembled by xtask from
/// our files, or pulled by digest. Serialized as one string, `build` or
/// `registry <repository>@<digest> (<platform>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Build,
    Registry {
        repository: String,
        /// The pinned digest (of the index or manifest pulled).
        digest: String,
        /// `linux/amd64`.
        platform: String,
    },
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Build => f.write_str("build"),
            ImageSource::Registry {
                repository,
                digest,
                platform,
            } => write!(f, "registry {repository}@{digest} ({platform})"),
        }
    }
}

impl std::str::FromStr for ImageSource {
    type Err = String;

    fn from_str(text: &str) -> Result<ImageSource, String> {
        if text == "build" {
            return Ok(ImageSource::Build);
        }
        let registry = text
            .strip_prefix("registry ")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|rest| rest.rsplit_once(" ("))
            .and_then(|(pulled, platform)| {
                let (repository, digest) = pulled.split_once('@')?;
                Some(ImageSource::Registry {
                    repository: repository.to_string(),
                    digest: digest.to_string(),
                    platform: platform.to_string(),
                })
            });
        registry.ok_or_else(|| {
            format!(
                "image source {text:?} is neither `build` nor `registry <repository>@<digest> \
                 (<platform>)`"
            )
        })
    }
}

impl Serialize for ImageSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageSource, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The containerd snapshotter an install unpacks images with: the installer chooses it (it
/// fills `{{SNAPSHOTTER}}` in the bundle's containerd config template, records it in
/// state.json and passes it to `ctr images import`); xtask's image tests use `native` as the
/// sandbox does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snapshotter {
    /// Where overlayfs works on the data dir's filesystem.
    Overlayfs,
    /// Where it does not (gVisor's 9p root): plain copies.
    Native,
}

impl Snapshotter {
    pub fn as_str(self) -> &'static str {
        match self {
            Snapshotter::Overlayfs => "overlayfs",
            Snapshotter::Native => "native",
        }
    }
}

impl fmt::Display for Snapshotter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    fn back<T: for<'de> Deserialize<'de>>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn each_is_serialized_as_the_word_it_always_was() {
        for (arch, word) in [(Arch::Amd64, "\"amd64\""), (Arch::Arm64, "\"arm64\"")] {
            assert_eq!(json(&arch), word);
            assert_eq!(back::<Arch>(word), arch);
        }
        for (transport, word) in [
            (Transport::Mirror, "\"mirror\""),
            (Transport::GithubArchive, "\"github-archive\""),
            (Transport::Git, "\"git\""),
            (Transport::GoProxy, "\"go-proxy\""),
            (Transport::Workspace, "\"workspace\""),
        ] {
            assert_eq!(json(&transport), word);
            assert_eq!(format!("\"{transport}\""), word);
            assert_eq!(back::<Transport>(word), transport);
        }
        for (snapshotter, word) in [
            (Snapshotter::Native, "\"native\""),
            (Snapshotter::Overlayfs, "\"overlayfs\""),
        ] {
            assert_eq!(json(&snapshotter), word);
            assert_eq!(back::<Snapshotter>(word), snapshotter);
        }
        assert_eq!(json(&ImageSource::Build), "\"build\"");
        assert_eq!(back::<ImageSource>("\"build\""), ImageSource::Build);
        let pulled = ImageSource::Registry {
            repository: "docker.io/rancher/mirrored-coredns-coredns".into(),
            digest: "sha256:0123".into(),
            platform: "linux/amd64".into(),
        };
        let word =
            "\"registry docker.io/rancher/mirrored-coredns-coredns@sha256:0123 (linux/amd64)\"";
        assert_eq!(json(&pulled), word);
        assert_eq!(back::<ImageSource>(word), pulled);
        assert!(serde_json::from_str::<ImageSource>("\"registry\"").is_err());
        assert_eq!(Arch::from_rust("x86_64"), Some(Arch::Amd64));
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Arm64));
        let err = "riscv64".parse::<Arch>().unwrap_err();
        assert!(err.contains("they are: amd64, arm64"), "{err}");
        assert_eq!(Arch::from_rust("riscv64"), None);
    }
}
