//! `bundle.toml`: every pinned input of the bundle, as typed data.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    pub bundle: BundleInfo,
    #[serde(default, rename = "component")]
    pub components: Vec<Component>,
    #[serde(default)]
    pub crates: Crates,
    /// `[[image]]`: the images the bundle ships (xtask/src/image.rs).
    #[serde(default, rename = "image")]
    pub images: Vec<crate::image::ImageSpec>,
    /// `[k3s]`: how the bundle gets its k3s (xtask/src/k3s.rs).
    #[serde(default)]
    pub k3s: Option<crate::k3s::K3sPin>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source_date_epoch: u64,
}

impl BundleInfo {
    /// `k3s-gvisor-v1.34.1+k3s1-gvisor.1-linux-amd64`: the tarball's name and its top directory.
    pub fn artifact_name(&self) -> String {
        format!("{}-{}-linux-{}", self.name, self.version, self.arch)
    }
}

/// Where a component's source comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The Go module proxy (`go mod download`), pinned by the `h1:` hash.
    Go,
    /// A release archive over HTTP(S), pinned by sha256.
    Archive,
}

/// One upstream Go project: where its source comes from and which binaries we build from it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    pub version: String,
    pub source: SourceKind,
    pub module: String,
    /// The `h1:` hash the Go module proxy serves for module@version.
    pub sum: String,
    #[serde(default)]
    pub archive_url: String,
    #[serde(default)]
    pub archive_sha256: String,
    /// Run `go mod vendor` in the fresh tree before patching and build with `-mod=vendor`.
    #[serde(default)]
    pub vendor: bool,
    #[serde(default, rename = "binary")]
    pub binaries: Vec<GoBinary>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GoBinary {
    pub name: String,
    pub package: String,
    #[serde(default)]
    pub cgo: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `{version}` and `{stamp}` are replaced by the component version and the bundle stamp.
    #[serde(default)]
    pub ldflags: Vec<String>,
    #[serde(default)]
    pub buildmode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Crates {
    #[serde(default)]
    pub packages: Vec<String>,
}

impl BundleConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: BundleConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if let Some(k3s) = &self.k3s {
            k3s.validate()?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.components {
            if !seen.insert(&c.name) {
                bail!("component `{}` is listed twice", c.name);
            }
            if !c.sum.starts_with("h1:") {
                bail!(
                    "component `{}`: sum must be the Go module `h1:` hash, got `{}`",
                    c.name,
                    c.sum
                );
            }
            if c.binaries.is_empty() {
                bail!(
                    "component `{}` builds no binary: add a [[component.binary]]",
                    c.name
                );
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn component(&self, name: &str) -> Result<&Component> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("no component `{name}` in bundle.toml"))
    }

    /// The text every binary carries to say which bundle it belongs to.
    pub fn stamp(&self) -> String {
        format!("{} {}", self.bundle.name, self.bundle.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_bundle_toml_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bundle.toml");
        let config = BundleConfig::load(&path).unwrap();
        assert!(config.component("runc").is_ok());
        assert!(config.component("containerd").is_ok());
        assert!(config.bundle.version.contains("-gvisor."));
    }

    #[test]
    fn a_sha256_in_place_of_an_h1_sum_is_refused() {
        let text = r#"
            [bundle]
            name = "x"
            version = "v1"
            arch = "amd64"
            source_date_epoch = 1
            [[component]]
            name = "a"
            version = "v1.0.0"
            source = "go"
            module = "example.com/a"
            sum = "deadbeef"
            [[component.binary]]
            name = "a"
            package = "."
        "#;
        let err = BundleConfig::parse(text).unwrap_err();
        assert!(format!("{err:#}").contains("h1:"), "{err:#}");
    }
}
