//! Stage stamps: "these outputs were made from inputs with this hash". A stage whose stamp is
//! fresh (same input hash, every output still there with the same sha256) is skipped. A stamp
//! also keeps the stage's record of what it ran, so a skipped stage reports the same facts as
//! the run that made its outputs, and a hash of each named input, so a stale stamp can say
//! which input changed.

use crate::digest::{combine, sha256_file};
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
    /// Each named input's hash (stamps written before these were kept have none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    parts: BTreeMap<String, String>,
}

/// A stage's inputs, each with a name; their hash is the stamp's key (the hash of the values
/// in order, as `combine` makes it, so adding names left existing stamps fresh).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    parts: Vec<(String, String)>,
}

impl Inputs {
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.parts.push((name.into(), value.into()));
    }

    fn key(&self) -> String {
        combine(self.parts.iter().map(|(_, value)| value))
    }

    fn hashed(&self) -> BTreeMap<String, String> {
        self.parts
            .iter()
            .map(|(name, value)| (name.clone(), combine([value])))
            .collect()
    }
}

/// What checking a stamp found.
#[derive(Debug)]
pub enum Check<T> {
    /// Up to date: the stage's record.
    Fresh(T),
    /// The stage must run, and why.
    Stale(String),
}

pub struct Stamp {
    path: PathBuf,
    inputs: Inputs,
}

impl Stamp {
    pub fn new(dir: &Path, name: &str, inputs: Inputs) -> Self {
        Stamp {
            path: dir.join(format!("{name}.json")),
            inputs,
        }
    }

    /// Fresh (the recorded inputs equal ours, every output is intact, and the record has type
    /// `T`) with the stage's record, or stale with the reason. Hashes every output.
    pub fn check<T: DeserializeOwned>(&self) -> Check<T> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Check::Stale("never built here (no stamp)".into());
        };
        let Ok(stamp) = serde_json::from_str::<StampFile>(&text) else {
            return Check::Stale(format!("its stamp {} is unreadable", self.path.display()));
        };
        if stamp.inputs != self.inputs.key() {
            return Check::Stale(changed_inputs(&stamp.parts, &self.inputs.hashed()));
        }
        if stamp.outputs.is_empty() {
            return Check::Stale("its stamp records no output".into());
        }
        for (path, hash) in &stamp.outputs {
            match sha256_file(path) {
                Ok(h) if &h == hash => {}
                Ok(_) => {
                    return Check::Stale(format!("{} changed after it was made", path.display()))
                }
                Err(_) => return Check::Stale(format!("{} is missing", path.display())),
            }
        }
        match serde_json::from_value(stamp.record) {
            Ok(record) => Check::Fresh(record),
            Err(_) => Check::Stale("its stamp's record is unreadable".into()),
        }
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
            inputs: self.inputs.key(),
            outputs,
            record: serde_json::to_value(record)?,
            parts: self.inputs.hashed(),
        };
        std::fs::create_dir_all(self.path.parent().unwrap())?;
        crate::fsutil::write_atomic(&self.path, serde_json::to_vec_pretty(&file)?.as_slice())
            .with_context(|| format!("cannot write stamp {}", self.path.display()))
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Which named inputs differ between a stamp's and ours.
fn changed_inputs(recorded: &BTreeMap<String, String>, ours: &BTreeMap<String, String>) -> String {
    if recorded.is_empty() {
        return "its inputs changed".into();
    }
    let mut changed: Vec<&str> = ours
        .iter()
        .filter(|(name, hash)| recorded.get(*name) != Some(hash))
        .map(|(name, _)| name.as_str())
        .collect();
    let removed = recorded.keys().filter(|name| !ours.contains_key(*name));
    changed.extend(removed.map(String::as_str));
    match changed.len() {
        0 => "its inputs changed".into(),
        1..=3 => format!("changed: {}", changed.join(", ")),
        n => format!("changed: {} and {} more", changed[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_stamp_says_which_input_changed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(&out, "built").unwrap();
        let inputs = |patch: &str| {
            let mut i = Inputs::default();
            i.add("recipe", "r1");
            i.add("patches/x/0001-a.patch", patch);
            i
        };
        let stamp = Stamp::new(dir.path(), "s", inputs("one"));
        assert!(matches!(stamp.check::<()>(), Check::Stale(why) if why.contains("no stamp")));
        stamp.record(std::slice::from_ref(&out)).unwrap();
        assert!(matches!(stamp.check::<()>(), Check::Fresh(())));
        // The key is the values' hash as before names were kept.
        assert_eq!(inputs("one").key(), combine(["r1", "one"]));
        let changed = Stamp::new(dir.path(), "s", inputs("two"));
        match changed.check::<()>() {
            Check::Stale(why) => assert_eq!(why, "changed: patches/x/0001-a.patch"),
            Check::Fresh(()) => panic!("a changed patch left the stamp fresh"),
        }
        std::fs::write(&out, "touched").unwrap();
        assert!(matches!(stamp.check::<()>(), Check::Stale(why) if why.contains("changed after")));
    }
}
