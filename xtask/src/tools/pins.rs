//! tests/tools.toml: which Go module, version and package each test tool is built from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One pinned tool, as written in tests/tools.toml.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolPin {
    /// Go module path, e.g. `gvisor.dev/gvisor`.
    pub module: String,
    /// Exact module version (release tag or pseudo-version).
    pub version: String,
    /// The module's `h1:` content hash.
    pub sum: String,
    /// Package to build, relative to the module root (`./runsc`).
    pub package: String,
    /// CGO_ENABLED for the build.
    #[serde(default)]
    pub cgo: bool,
    /// Go variable that `-ldflags -X` sets to `version`.
    #[serde(default)]
    pub version_var: Option<String>,
    /// GOTOOLCHAIN for the build (`go1.21.13`): an old tree that builds only with the Go it
    /// was written for. The go command fetches that toolchain through the module proxy.
    /// Default: the local Go (`GOTOOLCHAIN=local`).
    #[serde(default)]
    pub toolchain: Option<String>,
    /// Flags the tool needs on every call (`["--platform=ptrace"]` for a gVisor whose default
    /// platform hangs on these hosts). The tool is then installed as `<name>.bin` next to a
    /// `<name>` shell wrapper that puts these flags first, so every caller that is handed the
    /// tool's path gets them.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Patch files applied in order to the module's tree before the build, relative to the
    /// pin file's directory and under its `tools/` (a gVisor changed to stand in for a
    /// provider's build: the `seeds` host). Hashed into the tool's cache path.
    #[serde(default)]
    pub patches: Vec<String>,
}

impl ToolPin {
    /// The patch files of this pin, as paths next to `pin_file`.
    pub fn patch_paths(&self, pin_file: &Path) -> Vec<PathBuf> {
        let dir = pin_file.parent().unwrap_or(Path::new("."));
        self.patches.iter().map(|p| dir.join(p)).collect()
    }
}

/// The pin file that ships with the repository.
pub fn default_pin_file() -> PathBuf {
    crate::repo_root().join("tests").join("tools.toml")
}

/// Reads and checks every pin in `path`, keyed by tool name.
pub fn load(path: &Path) -> Result<BTreeMap<String, ToolPin>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tool pin file {}", path.display()))?;
    parse(&text).with_context(|| format!("bad tool pin file {}", path.display()))
}

/// Parses pin-file text and rejects pins that could not be built reproducibly.
pub fn parse(text: &str) -> Result<BTreeMap<String, ToolPin>> {
    let pins: BTreeMap<String, ToolPin> = toml::from_str(text)?;
    for (name, pin) in &pins {
        check(name, pin).with_context(|| format!("tool `{name}`"))?;
    }
    Ok(pins)
}

fn check(name: &str, pin: &ToolPin) -> Result<()> {
    let safe_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !safe_name {
        bail!("the name must be letters, digits, `-` or `_` (it becomes a file name)");
    }
    // A branch name or `latest` would make the build depend on the day it runs.
    let exact = pin.version.starts_with('v')
        && pin.version[1..].starts_with(|c: char| c.is_ascii_digit())
        && !pin.version.contains('/');
    if !exact {
        bail!(
            "version `{}` is not an exact module version; resolve it with \
             `go list -m -json {}@{}` and pin the \"Version\" it prints",
            pin.version,
            pin.module,
            pin.version
        );
    }
    if !pin.sum.starts_with("h1:") || pin.sum.len() != 3 + 44 {
        bail!(
            "sum `{}` is not an h1 hash; copy \"Sum\" from `go mod download -json {}@{}`",
            pin.sum,
            pin.module,
            pin.version
        );
    }
    if !(pin.package == "." || pin.package.starts_with("./")) || pin.package.contains("..") {
        bail!(
            "package `{}` must be a path inside the module starting with `./`",
            pin.package
        );
    }
    if let Some(toolchain) = &pin.toolchain {
        // Only an exact release: `auto`, `path` or `go1.21` would pick a toolchain by machine
        // or by day.
        let numbers: Vec<&str> = toolchain
            .strip_prefix("go")
            .unwrap_or("")
            .split('.')
            .collect();
        let exact = numbers.len() == 3
            && numbers
                .iter()
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !exact {
            bail!(
                "toolchain `{toolchain}` is not an exact Go release such as `go1.21.13` \
                 (it becomes GOTOOLCHAIN for the build)"
            );
        }
    }
    for flag in &pin.flags {
        // Written unquoted into a shell wrapper: only plain `--name` or `--name=value`.
        let plain = flag.starts_with("--")
            && flag.len() > 2
            && flag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,/".contains(c));
        if !plain {
            bail!("flag `{flag}` must look like `--name` or `--name=value` (letters, digits, `-_=.,/`)");
        }
    }
    for patch in &pin.patches {
        // Inside the repository's tests/tools/, so the pin file names everything the build
        // takes; a `.patch`, so a stray file is not applied by mistake.
        let inside = patch.starts_with("tools/")
            && patch.ends_with(".patch")
            && !patch
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        if !inside {
            bail!(
                "patch `{patch}` must be a `.patch` file under tools/ next to the pin file \
                 (e.g. tools/{name}/0001-what-it-changes.patch)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [demo]
        module = "example.com/demo"
        version = "v1.2.3"
        sum = "h1:ldRicUReouLstdS9NiOU2K6sWwLlZHaHuqOsvKEraDE="
        package = "./cmd/demo"
    "#;

    #[test]
    fn repository_pins_are_complete_and_exact() {
        let pins = load(&default_pin_file()).unwrap();
        for name in ["runsc", "cnitool", "crictl", "actionlint"] {
            assert!(pins.contains_key(name), "tests/tools.toml lacks `{name}`");
        }
        assert!(!pins["runsc"].cgo, "runsc must be built with CGO_ENABLED=0");
        assert!(
            pins["runsc"].version.starts_with("v0.0.0-"),
            "gVisor tags no Go releases: runsc is pinned by pseudo-version"
        );
        // The older gVisors users run (docs/gvisor-generations.md): each builds only with the
        // Go it was written for.
        for name in ["runsc-2023", "runsc-2025"] {
            let pin = &pins[name];
            assert_eq!(pin.module, "gvisor.dev/gvisor", "{name}");
            assert!(pin.toolchain.is_some(), "{name} needs its own Go toolchain");
        }
        assert_eq!(pins["runsc-2023"].flags, ["--platform=ptrace"]);
        // The seeds' stand-in: gvisor-2025's tree, patched.
        let (seeds, base) = (&pins["runsc-seeds"], &pins["runsc-2025"]);
        assert_eq!((&seeds.version, &seeds.sum), (&base.version, &base.sum));
        assert!(!seeds.patches.is_empty());
        for patch in seeds.patch_paths(&default_pin_file()) {
            assert!(patch.is_file(), "{} is missing", patch.display());
        }
    }

    #[test]
    fn patches_must_be_patch_files_under_tools() {
        let ok = format!("{GOOD}patches = [\"tools/demo/0001-x.patch\"]\n");
        let pins = parse(&ok).unwrap();
        assert_eq!(
            pins["demo"].patch_paths(Path::new("/repo/tests/tools.toml")),
            [PathBuf::from("/repo/tests/tools/demo/0001-x.patch")]
        );
        for bad in [
            "/etc/x.patch",
            "tools/../x.patch",
            "tools//x.patch",
            "other/x.patch",
            "tools/demo/x.diff",
        ] {
            let text = format!("{GOOD}patches = [\"{bad}\"]\n");
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(
                err.contains("must be a `.patch` file under tools/"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn toolchains_must_be_exact_go_releases() {
        let ok = format!("{GOOD}toolchain = \"go1.21.13\"\n");
        assert_eq!(
            parse(&ok).unwrap()["demo"].toolchain.as_deref(),
            Some("go1.21.13")
        );
        for bad in [
            "auto",
            "local",
            "go1.21",
            "1.21.13",
            "go1.21.13+auto",
            "go1..3",
        ] {
            let text = format!("{GOOD}toolchain = \"{bad}\"\n");
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains("not an exact Go release"), "{bad}: {err}");
        }
    }

    #[test]
    fn flags_must_be_plain_long_options() {
        let ok = format!("{GOOD}flags = [\"--platform=ptrace\"]\n");
        assert_eq!(parse(&ok).unwrap()["demo"].flags, ["--platform=ptrace"]);
        for bad in ["-x", "--", "--a=$(reboot)", "--a b", "do"] {
            let text = format!("{GOOD}flags = [\"{bad}\"]\n");
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains("must look like `--name`"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_apply() {
        let pins = parse(GOOD).unwrap();
        assert!(!pins["demo"].cgo);
        assert_eq!(pins["demo"].version_var, None);
        assert_eq!(pins["demo"].toolchain, None);
        assert!(pins["demo"].flags.is_empty());
        assert!(pins["demo"].patches.is_empty());
    }

    #[test]
    fn branch_names_and_latest_are_refused() {
        for bad in ["go", "latest", "master"] {
            let text = GOOD.replace("v1.2.3", bad);
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains("not an exact module version"), "{err}");
        }
    }

    #[test]
    fn non_h1_sums_are_refused() {
        let text = GOOD.replace("h1:ldRic", "sha256:ldRic");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("is not an h1 hash"), "{err}");
    }

    #[test]
    fn packages_outside_the_module_are_refused() {
        let text = GOOD.replace("./cmd/demo", "../other");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("must be a path inside the module"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{GOOD}\nchecksum = \"x\"\n");
        assert!(parse(&text).is_err());
    }
}
