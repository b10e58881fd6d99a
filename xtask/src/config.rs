//! `bundle.toml`: every pinned input of the bundle, as typed data.

use anyhow::{bail, Context, Result};
use bundle_format::Arch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::package::Format;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    pub bundle: BundleInfo,
    #[serde(default, rename = "component")]
    pub components: Vec<Component>,
    /// `[[crate]]`: our runtime crates and where each binary lands in the bundle.
    #[serde(default, rename = "crate")]
    pub crates: Vec<CrateSpec>,
    /// `[[image]]`: the images the bundle ships (xtask/src/image.rs).
    #[serde(default, rename = "image")]
    pub images: Vec<crate::image::ImageSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    pub name: String,
    pub version: String,
    pub arch: Arch,
    pub source_date_epoch: u64,
    /// The tarballs the package stage writes, all of the same tar. The `.tar.gz` is always
    /// written: it is what every tar unpacks, and what the e2e and the upgrade check read.
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
}

fn default_formats() -> Vec<Format> {
    vec![Format::TarGz]
}

impl BundleInfo {
    /// `k3s-gvisor-v1.34.1+k3s1-gvisor.1-linux-amd64`: the tarball's name and its top directory.
    /// A bundle built without k3s on purpose says so in its name.
    pub fn artifact_name(&self, without: &[String]) -> String {
        let mut name = format!("{}-{}-linux-{}", self.name, self.version, self.arch);
        for component in without {
            name.push_str(&format!("-without-{component}"));
        }
        name
    }
}

/// Which kind of transport may serve sources (`--source`); all of them, in order, by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Commit archives: the mirrors, then GitHub; verified by the git tree id.
    Archive,
    /// A git fetch of the pinned commit; verified by the git tree id.
    Git,
    /// The Go module proxy's module zip; verified by the `h1:` hash.
    Go,
}

/// One upstream Go project: where its source comes from and which binaries we build from it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    /// The release, as the project tags it (`v1.3.3`, `v1.34.1+k3s1`).
    pub version: String,
    /// `owner/repo` on GitHub: names the commit archive and the git repository.
    #[serde(default)]
    pub github: Option<String>,
    /// The full commit id of `version`'s tag.
    #[serde(default)]
    pub commit: Option<String>,
    /// The git tree id of that commit: what every archive or git transport must unpack to.
    #[serde(default)]
    pub tree: Option<String>,
    /// The Go module, for the module proxy transport (the last resort: its zip is not the git
    /// tree, so it is pinned separately by `sum`).
    #[serde(default)]
    pub module: Option<String>,
    /// The `h1:` hash the Go module proxy serves for module@version.
    #[serde(default)]
    pub sum: Option<String>,
    /// Run `go mod vendor` in the fresh tree (before patches to vendor/) and build with
    /// `-mod=vendor`, with no network at build time.
    #[serde(default)]
    pub vendor: bool,
    /// A step between patching and building that the project's own build scripts do.
    #[serde(default)]
    pub prepare: Option<Prepare>,
    /// Files the build needs from the build machine, each with the Debian package that has it;
    /// checked before a long build starts.
    #[serde(default)]
    pub build_requires: BTreeMap<String, String>,
    #[serde(default, rename = "binary")]
    pub binaries: Vec<GoBinary>,
}

/// Project-specific preparation of the patched tree (xtask/src/prepare.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prepare {
    /// k3s's scripts/build: fill pkg/deploy/embed and pkg/static/embed.
    K3sEmbed,
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
    /// Placeholders (`{version}`, `{commit}`, `{module_version:PATH}`, ...) are listed in
    /// xtask/src/build.rs.
    #[serde(default)]
    pub ldflags: Vec<String>,
    #[serde(default)]
    pub buildmode: Option<String>,
    /// Extra environment for `go build` (e.g. CGO_CFLAGS).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// False for a binary that ships only inside an image (`from = { built = NAME }`), not in
    /// the bundle's bin/.
    #[serde(default = "yes")]
    pub in_bundle: bool,
    /// Names under which the binary also answers (multicall): `bin/<link>` in the bundle is a
    /// symlink to it.
    #[serde(default)]
    pub links: Vec<String>,
    /// Run after the build; each must succeed and print `expect` (placeholders allowed).
    #[serde(default, rename = "check")]
    pub checks: Vec<BinaryCheck>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCheck {
    /// argv[0] (the binary's name or one of its links) and its arguments.
    pub run: Vec<String>,
    pub expect: String,
}

/// `[[crate]]`: one of our runtime crates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrateSpec {
    /// The cargo package (its binary has the same name).
    pub package: String,
    /// Where the binary lands in the bundle; none for a binary that ships only inside an image.
    #[serde(default)]
    pub to: Option<String>,
    /// Architectures whose bundles do not hold this crate, each with why (the manifest's
    /// `not_on_this_arch` says so in those bundles).
    #[serde(default)]
    pub not_built_for: BTreeMap<Arch, String>,
}

impl Component {
    /// The component as built for `target`: its `build_requires` with `{multiarch}` filled in
    /// (crate::target::Target::build_require). A native build's is bundle.toml's as written
    /// before the placeholder existed, so its stamps stay.
    pub fn for_target(&self, target: &crate::target::Target) -> Component {
        let mut c = self.clone();
        c.build_requires = self
            .build_requires
            .iter()
            .map(|(path, package)| target.build_require(path, package))
            .collect();
        c
    }

    /// Does the recipe put the bundle stamp (`{stamp}`: the bundle's name and version) into a
    /// binary or a check? Only such a component is rebuilt when the bundle's version changes.
    pub fn uses_stamp(&self) -> bool {
        self.binaries.iter().any(|b| {
            b.ldflags
                .iter()
                .chain(b.checks.iter().map(|check| &check.expect))
                .any(|text| text.contains("{stamp}"))
        })
    }

    fn validate(&self) -> Result<()> {
        let hex40 = |v: &str| v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit());
        match (&self.github, &self.commit, &self.tree) {
            (Some(github), Some(commit), Some(tree)) => {
                if github.split('/').count() != 2 || github.contains("github.com") {
                    bail!(
                        "component `{}`: github must be `owner/repo`, got `{github}`",
                        self.name
                    );
                }
                for (what, value) in [("commit", commit), ("tree", tree)] {
                    if !hex40(value) {
                        bail!(
                            "component `{}`: {what} must be a full 40-hex git id, got `{value}`",
                            self.name
                        );
                    }
                }
            }
            (None, None, None) => {}
            _ => bail!(
                "component `{}`: github, commit and tree go together (the commit archive is \
                 named by github and commit, and must unpack to tree)",
                self.name
            ),
        }
        match (&self.module, &self.sum) {
            (Some(_), Some(sum)) if !sum.starts_with("h1:") => bail!(
                "component `{}`: sum must be the Go module `h1:` hash, got `{sum}`",
                self.name
            ),
            (Some(_), Some(_)) | (None, None) => {}
            _ => bail!(
                "component `{}`: module and sum go together (the proxy's zip is verified by sum)",
                self.name
            ),
        }
        if self.tree.is_none() && self.module.is_none() {
            bail!(
                "component `{}` has no source: pin github/commit/tree, or module/sum",
                self.name
            );
        }
        if self.binaries.is_empty() {
            bail!(
                "component `{}` builds no binary: add a [[component.binary]]",
                self.name
            );
        }
        Ok(())
    }
}

/// A pin set (`--pins FILE`, e.g. bundle-mission.toml): other releases of some of bundle.toml's
/// components. Each entry replaces the source pin of the component of that name; its recipe
/// (binaries, vendoring, checks) and its patches stay bundle.toml's and patches/'s, so that one
/// recipe and one set of patches is tested against both releases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinSet {
    #[serde(rename = "component")]
    pub components: Vec<Pin>,
}

/// The source of one release of a component, as in a `[[component]]` of bundle.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub github: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub tree: Option<String>,
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub sum: Option<String>,
}

impl PinSet {
    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

impl BundleConfig {
    /// bundle.toml with the releases `pins` names in place of its own.
    pub fn with_pins(mut self, pins: &PinSet) -> Result<Self> {
        for pin in &pins.components {
            let Some(c) = self.components.iter_mut().find(|c| c.name == pin.name) else {
                bail!(
                    "component `{}` is not in bundle.toml: a pin set only changes the release of \
                     a component bundle.toml builds",
                    pin.name
                );
            };
            c.version = pin.version.clone();
            c.github = pin.github.clone();
            c.commit = pin.commit.clone();
            c.tree = pin.tree.clone();
            c.module = pin.module.clone();
            c.sum = pin.sum.clone();
        }
        self.validate()?;
        Ok(self)
    }

    /// Load bundle.toml and, if given, apply the pin set at `pins`.
    pub fn load_with_pins(path: &Path, pins: Option<&Path>) -> Result<Self> {
        let config = Self::load(path)?;
        let Some(pins) = pins else {
            return Ok(config);
        };
        let text = std::fs::read_to_string(pins)
            .with_context(|| format!("cannot read the pin set {}", pins.display()))?;
        PinSet::parse(&text)
            .and_then(|set| config.with_pins(&set))
            .with_context(|| format!("invalid pin set {}", pins.display()))
    }

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
        if !self.bundle.formats.contains(&Format::TarGz) {
            bail!(
                "[bundle] formats must include \"tar.gz\": it is the tarball every tar \
                 unpacks, and the one the e2e and the upgrade check read"
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.components {
            if !seen.insert(&c.name) {
                bail!("component `{}` is listed twice", c.name);
            }
            c.validate()?;
        }
        Ok(())
    }

    pub fn component(&self, name: &str) -> Result<&Component> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("no component `{name}` in bundle.toml"))
    }

    /// The crates built for the bundle's architecture.
    pub fn crates_for_arch(&self) -> impl Iterator<Item = &CrateSpec> {
        self.crates
            .iter()
            .filter(|c| !c.not_built_for.contains_key(&self.bundle.arch))
    }

    /// What building for the bundle's architecture on this machine takes (crate::target).
    pub fn target(&self) -> Result<crate::target::Target> {
        crate::target::Target::new(self.bundle.arch)
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
        // runc v1.3.7 is pinned by its module only (bundle.toml says why).
        for name in ["containerd", "k3s"] {
            let c = config.component(name).unwrap();
            assert!(c.tree.is_some(), "{name} is not pinned by its git tree");
        }
        assert!(config.bundle.version.contains("-gvisor."));
        // A version bump relinks runc and containerd (they carry the stamp), not k3s or CoreDNS.
        for (name, stamped) in [
            ("runc", true),
            ("containerd", true),
            ("k3s", false),
            ("coredns", false),
        ] {
            assert_eq!(
                config.component(name).unwrap().uses_stamp(),
                stamped,
                "{name}"
            );
        }
    }

    /// The mission's releases, pinned by their git trees, replace bundle.toml's sources and
    /// keep its recipes.
    #[test]
    fn the_mission_pin_set_replaces_sources_only() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let plain = BundleConfig::load(&repo.join("bundle.toml")).unwrap();
        let mission = BundleConfig::load_with_pins(
            &repo.join("bundle.toml"),
            Some(&repo.join("bundle-mission.toml")),
        )
        .unwrap();
        for (name, version) in [("runc", "v1.3.3"), ("containerd", "v2.1.4")] {
            let (before, after) = (
                plain.component(name).unwrap(),
                mission.component(name).unwrap(),
            );
            assert_eq!(after.version, version);
            assert!(
                after.tree.is_some(),
                "{name} {version} is not pinned by its tree"
            );
            assert_ne!(before.version, after.version);
            assert_eq!(
                format!("{:?}", before.binaries),
                format!("{:?}", after.binaries)
            );
            assert_eq!(before.vendor, after.vendor);
        }
        assert_eq!(
            plain.component("k3s").unwrap().tree,
            mission.component("k3s").unwrap().tree
        );
    }

    #[test]
    fn a_pin_for_a_component_bundle_toml_lacks_is_refused() {
        let config = parse_with("module = \"example.com/a\"\nsum = \"h1:x\"").unwrap();
        let pins = PinSet::parse("[[component]]\nname = \"b\"\nversion = \"v2\"").unwrap();
        let err = config.clone().with_pins(&pins).unwrap_err();
        assert!(
            format!("{err:#}").contains("`b` is not in bundle.toml"),
            "{err:#}"
        );
        // A pin must still name a source.
        let pins = PinSet::parse("[[component]]\nname = \"a\"\nversion = \"v2\"").unwrap();
        let err = config.with_pins(&pins).unwrap_err();
        assert!(format!("{err:#}").contains("has no source"), "{err:#}");
    }

    const BASE: &str = r#"
        [bundle]
        name = "x"
        version = "v1"
        arch = "amd64"
        source_date_epoch = 1
        [[component]]
        name = "a"
        version = "v1.0.0"
    "#;

    fn parse_with(source: &str) -> anyhow::Result<BundleConfig> {
        BundleConfig::parse(&format!(
            "{BASE}{source}\n[[component.binary]]\nname = \"a\"\npackage = \".\"\n"
        ))
    }

    #[test]
    fn formats_default_to_the_tar_gz_and_must_keep_it() {
        let tree = "0e3cc6a30898bc561dcdd4195a914e83cf422309";
        let source = format!("github = \"o/r\"\ncommit = \"{tree}\"\ntree = \"{tree}\"");
        let with = |formats: &str| {
            let text =
                format!("{BASE}{source}\n[[component.binary]]\nname = \"a\"\npackage = \".\"\n");
            BundleConfig::parse(&text.replace(
                "source_date_epoch = 1",
                &format!("source_date_epoch = 1\n{formats}"),
            ))
        };
        assert_eq!(with("").unwrap().bundle.formats, [Format::TarGz]);
        assert_eq!(
            with("formats = [\"tar.gz\", \"tar.zst\"]")
                .unwrap()
                .bundle
                .formats,
            Format::ALL
        );
        let err = with("formats = [\"tar.zst\"]").unwrap_err();
        assert!(
            format!("{err:#}").contains("must include \"tar.gz\""),
            "{err:#}"
        );
        assert!(with("formats = [\"tar.xz\"]").is_err());
    }

    #[test]
    fn a_sha256_in_place_of_an_h1_sum_is_refused() {
        let err = parse_with("module = \"example.com/a\"\nsum = \"deadbeef\"").unwrap_err();
        assert!(format!("{err:#}").contains("h1:"), "{err:#}");
    }

    #[test]
    fn a_tree_pin_needs_its_commit_and_repository() {
        let tree = "0e3cc6a30898bc561dcdd4195a914e83cf422309";
        let err = parse_with(&format!("tree = \"{tree}\"")).unwrap_err();
        assert!(format!("{err:#}").contains("go together"), "{err:#}");
        let err = parse_with(&format!(
            "github = \"o/r\"\ncommit = \"d842d77\"\ntree = \"{tree}\""
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("40-hex"), "{err:#}");
        parse_with(&format!(
            "github = \"o/r\"\ncommit = \"{tree}\"\ntree = \"{tree}\""
        ))
        .unwrap();
    }

    #[test]
    fn a_component_without_any_source_is_refused() {
        let err = parse_with("").unwrap_err();
        assert!(format!("{err:#}").contains("has no source"), "{err:#}");
    }
}
