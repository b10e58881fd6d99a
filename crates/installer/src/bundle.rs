//! The extracted bundle: where it is, what its manifest says, and whether its files are intact.
//!
//! The bundle is read-only input. Nothing in this module writes anywhere.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// An extracted bundle directory and its parsed manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

use bundle_format::Sums;
pub use bundle_format::{ImageRecord as Image, Manifest, MANIFEST_FILE, SUMS_FILE};

impl Bundle {
    /// Finds the bundle: an explicit dir, else the parent of the `bin/` this executable sits in.
    pub fn locate(explicit: Option<&Path>) -> Result<Bundle> {
        let dir = match explicit {
            Some(dir) => dir.to_path_buf(),
            None => {
                let exe =
                    std::env::current_exe().context("cannot find the installer's own path")?;
                exe.parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .context("the installer is not inside a bundle's bin/ directory")?
            }
        };
        Bundle::open(&dir)
    }

    pub fn open(dir: &Path) -> Result<Bundle> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path).with_context(|| {
            format!(
                "{} is missing or unreadable: run ./install from the top directory of an extracted \
                 k3s-gvisor bundle (or pass --bundle DIR)",
                manifest_path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid bundle manifest: the bundle is damaged; extract it again",
                manifest_path.display()
            )
        })?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// The pod sandbox image, if the bundle ships one.
    pub fn sandbox_image(&self) -> Option<&Image> {
        self.manifest.images.iter().find(|image| image.sandbox)
    }

    /// Total size of the files listed in SHA256SUMS: what laying out the bundle can cost at most.
    pub fn total_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for entry in read_sums(&self.dir)?.entries() {
            total += fs::metadata(self.dir.join(&entry.path))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        Ok(total)
    }
}

fn read_sums(dir: &Path) -> Result<Sums> {
    let path = dir.join(SUMS_FILE);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is missing: the bundle is incomplete; download and extract it again",
            path.display()
        )
    })?;
    Ok(Sums::parse(&text)?)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks every file SHA256SUMS lists, and that the manifest itself is listed.
/// Returns one human-readable problem per bad file; empty means intact.
pub fn verify_sums(dir: &Path) -> Result<Vec<String>> {
    let sums = read_sums(dir)?;
    let mut problems = Vec::new();
    if sums.get(MANIFEST_FILE).is_none() {
        problems.push(format!("{MANIFEST_FILE} is not listed in {SUMS_FILE}"));
    }
    for entry in sums.entries() {
        let path = dir.join(&entry.path);
        if !path.is_file() {
            problems.push(format!("{} is missing", entry.path));
            continue;
        }
        let actual = sha256_file(&path)?;
        if actual != entry.sha256 {
            problems.push(format!(
                "{} has sha256 {actual}, expected {}",
                entry.path, entry.sha256
            ));
        }
    }
    Ok(problems)
}
