//! Stage stamps: "these outputs were made from inputs with this hash". A stage whose stamp is
//! fresh (same input hash, every output still there with the same sha256) is skipped. A stamp
//! also keeps the stage's record of what it ran, so a skipped stage reports the same facts as
//! the run that made its outputs.

use crate::digest::sha256_file;
use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct StampFile {
    inputs: String,
    outputs: BTreeMap<PathBuf, String>,
    #[serde(default)]
    record: serde_json::Value,
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
        self.fresh_file().is_some()
    }

    /// The stage's record, when the stamp is fresh and its record has type `T`.
    pub fn fresh_record<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.fresh_file()?.record).ok()
    }

    fn fresh_file(&self) -> Option<StampFile> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let stamp = serde_json::from_str::<StampFile>(&text).ok()?;
        let intact = stamp
            .outputs
            .iter()
            .all(|(path, hash)| sha256_file(path).map(|h| &h == hash).unwrap_or(false));
        (stamp.inputs == self.inputs && !stamp.outputs.is_empty() && intact).then_some(stamp)
    }

    pub fn record(&self, outputs: &[PathBuf]) -> Result<()> {
        self.record_with(outputs, &())
    }

    /// Record the outputs and what the stage ran to make them.
    pub fn record_with(&self, outputs: &[PathBuf], record: &impl Serialize) -> Result<()> {
        let outputs = outputs
            .iter()
            .map(|p| Ok((p.clone(), sha256_file(p)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let file = StampFile {
            inputs: self.inputs.clone(),
            outputs,
            record: serde_json::to_value(record)?,
        };
        std::fs::create_dir_all(self.path.parent().unwrap())?;
        crate::fsutil::write_atomic(&self.path, serde_json::to_vec_pretty(&file)?.as_slice())
            .with_context(|| format!("cannot write stamp {}", self.path.display()))
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
