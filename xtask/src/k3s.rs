//! k3s for the bundle, two ways:
//!
//! - **from source** (the default): the k3s Go module at the pinned commit, `cmd/server` built the
//!   way k3s's own `scripts/build` builds its release binary (same build tags, same version
//!   stamps, static cgo link for sqlite), with k3s's manifests embedded and the Helm charts that
//!   k3s downloads from GitHub at build time left out;
//! - **release binary**: the upstream `k3s` release asset, pinned by URL and sha256.
//!
//! The stages, in the order the pipeline calls them:
//!
//! | function | job |
//! |---|---|
//! | [`fetch_k3s_source`] | the pristine k3s tree: Go module proxy (h1-verified) or a local checkout at the pinned commit |
//! | [`prepare_source`] | a writable copy with `pkg/deploy/embed` and `pkg/static/embed` filled as `scripts/build` does |
//! | [`build_k3s`] | `go build ./cmd/server` → `k3s`, skipped when its stamp is fresh |
//! | [`place_release_binary`] | release mode: download (sha256-verified, cached) and install as `k3s` |
//! | [`check_version`], [`check_multicall`] | ask the binary what it is |
//! | [`control_plane_smoke`] | `k3s server --disable-agent` must answer /readyz, on Linux or in runsc |

mod build;
mod release;
mod smoke;
mod source;
mod verify;
mod version_flags;

#[cfg(test)]
mod tests;

pub use build::{build_k3s, K3sBuild};
pub use release::place_release_binary;
pub use smoke::{control_plane_smoke, ControlPlaneSmoke, Host};
pub use source::K3sOrigin;
pub use source::{fetch_k3s_source, local_source_override, prepare_source};
pub use verify::{check_multicall, check_version, is_static_elf};
#[cfg(test)]
pub use {
    smoke::{SmokeReport, RUNSC_ENV},
    source::LOCAL_SOURCE_ENV,
    version_flags::BUILD_TAGS,
};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[k3s]` in bundle.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K3sPin {
    /// Build from source (default) or install the upstream release binary.
    #[serde(default)]
    pub mode: K3sMode,
    /// The k3s release, exactly as `k3s --version` prints it: `v1.34.1+k3s1`.
    pub version: String,
    /// The full commit id of that release's git tag; stamped into the binary.
    pub commit: String,
    pub source: K3sSourcePin,
    /// Required when `mode = "release"`.
    #[serde(default)]
    pub release: Option<K3sReleasePin>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum K3sMode {
    #[default]
    Source,
    Release,
}

/// `[k3s.source]`: the k3s Go module at the release commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSourcePin {
    /// `github.com/k3s-io/k3s`.
    pub module: String,
    /// What the module proxy is asked for. k3s tags carry build metadata (`+k3s1`), which Go
    /// strips, so the tag itself cannot be asked for: this is the commit id or the pseudo-version
    /// the proxy resolves it to. Either way it names `commit`.
    pub version: String,
    /// The `h1:` hash of the module zip. Empty until first measured: the fetch then fails and
    /// prints the hash the proxy served, to be checked and pinned.
    #[serde(default)]
    pub sum: String,
}

/// `[k3s.release]`: the upstream release binary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K3sReleasePin {
    /// e.g. `https://github.com/k3s-io/k3s/releases/download/v1.34.1%2Bk3s1/k3s`
    pub url: String,
    /// sha256 of that file, as in the release's `sha256sum-amd64.txt`.
    pub sha256: String,
}

impl K3sPin {
    /// Catch pins that cannot describe one k3s release before any download or build.
    pub fn validate(&self) -> Result<()> {
        if !self.version.starts_with('v') || !self.version.contains("+k3s") {
            bail!(
                "[k3s] version must be a k3s release such as `v1.34.1+k3s1`, got `{}`",
                self.version
            );
        }
        if self.commit.len() != 40 || !self.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "[k3s] commit must be the full 40-hex commit id of tag {}, got `{}`",
                self.version,
                self.commit
            );
        }
        let short = &self.commit[..12];
        if self.source.version != self.commit && !self.source.version.ends_with(short) {
            bail!(
                "[k3s.source] version `{}` does not name commit {}: use the commit id itself or \
                 the pseudo-version ending in `-{short}`",
                self.source.version,
                self.commit
            );
        }
        if !self.source.sum.is_empty() && !self.source.sum.starts_with("h1:") {
            bail!(
                "[k3s.source] sum must be an `h1:` hash, got `{}`",
                self.source.sum
            );
        }
        if self.mode == K3sMode::Release {
            let Some(release) = &self.release else {
                bail!("[k3s] mode = \"release\" needs a [k3s.release] table with url and sha256");
            };
            if release.sha256.len() != 64 || !release.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                bail!(
                    "[k3s.release] sha256 must be 64 hex digits (the `k3s` line of the release's \
                     sha256sum-amd64.txt), got `{}`",
                    release.sha256
                );
            }
        }
        Ok(())
    }

    /// The 8-hex short commit k3s prints after its version: `v1.34.1+k3s1 (24fc436e)`.
    pub fn short_commit(&self) -> &str {
        &self.commit[..8]
    }
}
