//! The bundle's format, the contract between `cargo xtask bundle` (which writes the tarball)
//! and everything that reads it (the installer, `cargo xtask verify`, the release notes, the
//! SBOM). `bundle-manifest.json`: what is in the bundle and where each piece came from; all
//! read this one record, through these types. `SHA256SUMS` ([`Sums`]): every file's sha256.
//! [`paths`]: where the files both sides name lie in the bundle. The words both sides spell:
//! [`Arch`], [`Transport`], [`ImageSource`], [`Snapshotter`].

mod kinds;
pub mod paths;
mod sums;

use serde::{Deserialize, Serialize};

pub use kinds::{Arch, ImageSource, Snapshotter, Transport};
pub use sums::{SumEntry, Sums, SumsError};

/// The manifest's name inside the bundle.
pub const MANIFEST_FILE: &str = "bundle-manifest.json";
/// `sha256sum -c` format, one line per file in the bundle.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// The trailer by which a patch declares a gVisor blocker it handles, in its commit message:
/// `Handles-blocker: cap-last-cap-missing`. The installer's blocker table uses the same ids, so
/// `doctor` finds what handles a blocker without guessing from file names.
pub const HANDLES_TRAILER: &str = "Handles-blocker:";

/// The blockers a patch (`git format-patch` text) declares it handles: its `Handles-blocker:`
/// trailers, read from the commit message only (before the first `---` line).
pub fn declared_blockers(patch: &str) -> Vec<String> {
    patch
        .lines()
        .take_while(|line| *line != "---")
        .filter_map(|line| line.strip_prefix(HANDLES_TRAILER))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub arch: Arch,
    pub source_date_epoch: u64,
    pub components: Vec<ComponentRecord>,
    #[serde(default)]
    pub images: Vec<ImageRecord>,
    /// Components left out on purpose (`cargo xtask bundle --without-k3s`), and why.
    #[serde(default)]
    pub omitted: Vec<OmittedRecord>,
    /// What bundles of other architectures hold and this one's cannot (arm64 has no launcher),
    /// and why. Not a gap in this bundle, as `omitted` is: a release ships it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_on_this_arch: Vec<OmittedRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OmittedRecord {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentRecord {
    pub name: String,
    pub version: String,
    pub source: SourceRecord,
    pub patches: Vec<PatchRecord>,
    pub build_flags: Vec<String>,
    pub outputs: Vec<OutputRecord>,
    /// Other names of an output (multicall binaries): symlinks in the bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceRecord {
    /// How the source was had: `mirror`, `github-archive`, `git`, `go-proxy`, or `workspace`
    /// (our own crates).
    pub transport: Transport,
    /// The URL, `module@version`, or workspace path.
    pub location: String,
    /// What was verified: `git-tree:<id>`, a Go module's `h1:...`, or `sha256-tree:...`.
    pub content: String,
    /// The upstream repository, its commit, and the git tree id it is pinned by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkRecord {
    /// Path inside the bundle, e.g. `bin/kubectl`.
    pub path: String,
    /// What it points to, relative to its directory, e.g. `k3s`.
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchRecord {
    pub file: String,
    pub sha256: String,
    /// The blockers it declares it handles ([`declared_blockers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputRecord {
    /// Path inside the bundle, e.g. `bin/runc`.
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub name: String,
    /// The name containerd knows the image by after import.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `build` or `registry <repository>@<digest> (<platform>)`.
    pub source: ImageSource,
    pub digest: String,
    /// Path inside the bundle, e.g. `images/pause.oci.tar`.
    pub file: String,
    pub sha256: String,
    /// The pod sandbox (pause) image that containerd's CRI is configured with.
    #[serde(default)]
    pub sandbox: bool,
}

impl Manifest {
    /// The patches (`component/file`) that declare they handle the blocker `id`.
    pub fn patches_handling(&self, id: &str) -> Vec<String> {
        self.components
            .iter()
            .flat_map(|c| c.patches.iter().map(move |p| (c, p)))
            .filter(|(_, p)| p.handles.iter().any(|h| h == id))
            .map(|(c, p)| {
                let name = p.file.rsplit('/').next().unwrap_or(&p.file);
                format!("{} patch {name}", c.name)
            })
            .collect()
    }

    /// Every (bundle path, sha256) the manifest vouches for.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.components
            .iter()
            .flat_map(|c| {
                c.outputs
                    .iter()
                    .map(|o| (o.path.as_str(), o.sha256.as_str()))
            })
            .chain(
                self.images
                    .iter()
                    .map(|i| (i.file.as_str(), i.sha256.as_str())),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_are_read_from_the_message_only() {
        let patch = "Subject: [PATCH] x\n\nWhy.\n\nHandles-blocker: cap-last-cap-missing\n\
                     Handles-blocker:  devices-cgroup-missing \n---\n+Handles-blocker: in-the-diff\n";
        assert_eq!(
            declared_blockers(patch),
            vec!["cap-last-cap-missing", "devices-cgroup-missing"]
        );
        assert!(declared_blockers("no trailer\n---\n").is_empty());
    }
}
