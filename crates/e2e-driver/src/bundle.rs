//! The extracted bundle's manifest, as lib.sh's `image_ref` and the scripts' `jq` read it.

use std::path::Path;

use anyhow::{Context, Result};

pub fn manifest(dir: &Path) -> Result<bundle_format::Manifest> {
    let file = dir.join(bundle_format::MANIFEST_FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged", file.display()))
}

/// The version in DIR/bundle-manifest.json (a bundle, or an install's prefix).
pub fn version_of(dir: &Path) -> Result<String> {
    Ok(manifest(dir)?.version)
}

/// The reference of the bundle's image called NAME (lib.sh's `image_ref`).
pub fn image_ref(bundle: &Path, name: &str) -> Result<String> {
    manifest(bundle)?
        .images
        .into_iter()
        .find(|i| i.name == name)
        .map(|i| i.reference)
        .with_context(|| format!("the bundle has no image {name}"))
}
