//! Stage stamps: "these outputs were made from inputs with this hash". A stage whose stamp is
//! fresh (same input hash, every output still there with the same sha256) is skipped.

use crate::digest::sha256_file;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct StampFile {
    inputs: String,
    outputs: BTreeMap<PathBuf, String>,
}

pub struct Stamp {
    path: PathBuf,
    inputs: String,
}

impl Stamp {
    pub fn new(dir: &Path, name: &str, inputs: String) -> Self {
        Stamp {
            path: dir.join(format!("{name}.json")),
            inputs,
        }
    }

    /// True when the recorded inputs equal ours and every recorded output is intact.
    pub fn is_fresh(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return false;
        };
        let Ok(stamp) = serde_json::from_str::<StampFile>(&text) else {
            return false;
        };
        stamp.inputs == self.inputs
            && !stamp.outputs.is_empty()
            && stamp
                .outputs
                .iter()
                .all(|(path, hash)| sha256_file(path).map(|h| &h == hash).unwrap_or(false))
    }

    pub fn record(&self, outputs: &[PathBuf]) -> Result<()> {
        let outputs = outputs
            .iter()
            .map(|p| Ok((p.clone(), sha256_file(p)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let file = StampFile {
            inputs: self.inputs.clone(),
            outputs,
        };
        std::fs::create_dir_all(self.path.parent().unwrap())?;
        crate::fsutil::write_atomic(&self.path, serde_json::to_vec_pretty(&file)?.as_slice())
            .with_context(|| format!("cannot write stamp {}", self.path.display()))
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
