//! `cargo xtask bundle --plan`: a [`Plan`] as text, what would run and why, stage by stage.

use super::{Decision, Plan, PlannedComponent, Stage};
use std::fmt::Write;

impl Plan {
    /// Nothing would be fetched, patched, built or packaged.
    pub fn nothing_to_do(&self) -> bool {
        self.components.iter().all(|p| p.decision.is_fresh())
            && self.crates.decision.is_fresh()
            && matches!(&self.images, Stage::Planned(i) if i.decision.is_fresh())
            && matches!(&self.package, Stage::Planned(p) if p.decision.is_fresh())
    }

    pub fn render(&self) -> String {
        let mut s = render_components(&self.components);
        let line = |s: &mut String, stage: &str, what: String, decision: String| {
            let _ = writeln!(s, "{stage:<8} {what}: {decision}");
        };
        line(
            &mut s,
            "build",
            format!("runtime crates ({} binaries)", self.crates.outputs.len()),
            said(&self.crates.decision, "build"),
        );
        match &self.images {
            Stage::Planned(i) => {
                let what = match &i.decision {
                    Decision::Fresh(outputs) => format!("{} image(s)", outputs.len()),
                    Decision::Run(_) => "images".into(),
                };
                line(&mut s, "image", what, said(&i.decision, "make"))
            }
            Stage::Later(why) => line(&mut s, "image", "images".into(), why.clone()),
        }
        match &self.package {
            Stage::Planned(p) => {
                let tarballs = p
                    .tarballs
                    .iter()
                    .map(|t| t.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ");
                line(&mut s, "package", tarballs, said(&p.decision, "write"))
            }
            Stage::Later(why) => line(&mut s, "package", "the tarballs".into(), why.clone()),
        }
        if !self.without.is_empty() {
            let _ = writeln!(s, "left out on purpose: {}", self.without.join(", "));
        }
        s.push_str(if self.nothing_to_do() {
            "nothing to do: every stage is up to date\n"
        } else {
            "(a plan only: nothing was fetched, built or written)\n"
        });
        s
    }
}

/// "up to date", or "<verb>: <why>".
fn said<T>(decision: &Decision<T>, verb: &str) -> String {
    match decision {
        Decision::Fresh(_) => "up to date".into(),
        Decision::Run(why) => format!("{verb}: {why}"),
    }
}

/// Each component's source (cached or to fetch) and its build decision.
pub fn render_components(components: &[PlannedComponent]) -> String {
    let mut s = String::new();
    for p in components {
        let c = &p.component;
        let source = match &p.source {
            Some(source) => format!(
                "cached ({}, served by {} {})",
                source.content, source.served_by.transport, source.served_by.location
            ),
            None => "not in the cache: fetch".into(),
        };
        let _ = writeln!(s, "fetch    {} {}: {source}", c.name, c.version);
        let build = match &p.decision {
            Decision::Fresh(_) => "up to date".into(),
            Decision::Run(why) => format!("patch ({} patch(es)) and build: {why}", p.patches.len()),
        };
        let _ = writeln!(s, "build    {} {}: {build}", c.name, c.version);
    }
    s
}
