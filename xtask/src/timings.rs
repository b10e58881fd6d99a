//! `--timings`: this run's stages, and this run's total against the last run that did work
//! (cold) so a warm no-op is visible as such.

use crate::layout::Layout;
use crate::pipeline::Report;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// Total seconds of the last run that fetched, patched, built or packaged something.
    pub last_cold_secs: Option<f64>,
    /// Total seconds of the last run that found everything up to date.
    pub last_warm_secs: Option<f64>,
}

pub fn record(layout: &Layout, total: Duration, did_work: bool) -> Result<History> {
    let path = layout.work.join("timings.json");
    let mut h: History = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if did_work {
        h.last_cold_secs = Some(total.as_secs_f64());
    } else {
        h.last_warm_secs = Some(total.as_secs_f64());
    }
    crate::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&h)?)?;
    Ok(h)
}

pub fn render(report: &Report, total: Duration, h: &History) -> String {
    let mut s = String::from("\nstage                          time      work\n");
    for (name, d, worked) in &report.stages {
        s.push_str(&format!(
            "{name:<30} {:>8.1}s  {}\n",
            d.as_secs_f64(),
            if *worked { "yes" } else { "no" }
        ));
    }
    s.push_str(&format!(
        "{:<30} {:>8.1}s\n",
        "total (this run)",
        total.as_secs_f64()
    ));
    let fmt = |v: Option<f64>| {
        v.map(|v| format!("{v:.1}s"))
            .unwrap_or_else(|| "not measured yet".into())
    };
    s.push_str(&format!(
        "cold (last run that did work): {}\nwarm (last no-op run):         {}\n",
        fmt(h.last_cold_secs),
        fmt(h.last_warm_secs)
    ));
    s
}
