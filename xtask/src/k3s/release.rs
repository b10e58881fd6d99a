//! Release mode: the upstream `k3s` release binary, downloaded once into the cache
//! (content-addressed by its sha256) and installed as `out_bin/k3s`.

use super::{K3sMode, K3sPin};
use crate::layout::Layout;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Download (unless cached) the pinned release binary, check its sha256 again, install it as
/// `out_bin/k3s` (mode 0755) and check that `k3s --version` names the pinned release.
pub fn place_release_binary(
    pin: &K3sPin,
    layout: &Layout,
    out_bin: &Path,
    offline: bool,
) -> Result<PathBuf> {
    pin.validate()?;
    let Some(release) = pin
        .release
        .as_ref()
        .filter(|_| pin.mode == K3sMode::Release)
    else {
        bail!("[k3s] mode is not \"release\": nothing to place (build from source instead)");
    };
    let sha256 = release.sha256.to_ascii_lowercase();
    let cached = layout.downloads().join(format!("sha256-{sha256}"));
    let what = format!("k3s {} release binary", pin.version);
    if !cached.is_file() {
        if offline {
            bail!(
                "{what} is not in the cache ({}) and --offline forbids downloading it",
                cached.display()
            );
        }
        crate::fetch::download_verified(&what, &release.url, &sha256, &cached)?;
    }
    // The cache is shared and long-lived: a file changed there since its download must not ship.
    let actual = crate::digest::sha256_file(&cached)?;
    if actual != sha256 {
        let _ = std::fs::remove_file(&cached);
        bail!(
            "{what}: the cached file {} has sha256 {actual}, not the pinned {sha256}; it was \
             removed, run again to download it afresh",
            cached.display()
        );
    }

    std::fs::create_dir_all(out_bin)?;
    let binary = out_bin.join("k3s");
    let partial = out_bin.join(".k3s.partial");
    std::fs::copy(&cached, &partial)
        .with_context(|| format!("cannot copy {} to {}", cached.display(), partial.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, &binary)?;
    super::check_version(&binary, pin)?;
    Ok(binary)
}
