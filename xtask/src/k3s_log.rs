//! The error lines k3s writes to its log, checked against docs/k3s-log.md: every error a
//! working install leaves there must be listed in that document with the reason it is harmless
//! (or be fixed). The document's table is the only list: a row is
//! `| \`pattern\` | when | why it is harmless |`, and a log line is documented when it contains
//! a row's pattern.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The backticked first cell of every table row in the document.
pub fn patterns(document: &str) -> Vec<String> {
    document
        .lines()
        .filter_map(|line| {
            let cell = line.trim().strip_prefix('|')?.split('|').next()?.trim();
            let pattern = cell.strip_prefix('`')?.strip_suffix('`')?;
            (!pattern.is_empty()).then(|| pattern.to_string())
        })
        .collect()
}

/// The lines no pattern matches, each once, in first-seen order.
pub fn undocumented(lines: &[String], patterns: &[String]) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    for line in lines {
        let known = patterns.iter().any(|p| line.contains(p.as_str()));
        if !known && !unknown.iter().any(|u| same_message(u, line)) {
            unknown.push(line.clone());
        }
    }
    unknown
}

/// Two log lines say the same when they match after their timestamp and pid (klog:
/// `E1128 06:58:46.132650      55 file.go:404] ...`; logrus: `time="..." level=error ...`).
fn same_message(a: &str, b: &str) -> bool {
    fn message(line: &str) -> &str {
        if let Some((_, rest)) = line.split_once("] ") {
            return rest;
        }
        line.split_once(" level=").map_or(line, |(_, rest)| rest)
    }
    message(a) == message(b)
}

/// The `k3s-log-errors` step of an e2e run: ok when every error line is documented.
pub fn step(lines: &[String], document: &Path) -> Result<(String, String, String)> {
    let text = std::fs::read_to_string(document)
        .with_context(|| format!("cannot read {}", document.display()))?;
    let patterns = patterns(&text);
    if patterns.is_empty() {
        bail!(
            "{} lists no error pattern (rows like | `pattern` | when | why |)",
            document.display()
        );
    }
    let unknown = undocumented(lines, &patterns);
    Ok(match unknown.first() {
        None => (
            "k3s-log-errors".into(),
            "ok".into(),
            format!(
                "{} error line(s), each documented in {}",
                lines.len(),
                document.file_name().unwrap_or_default().to_string_lossy()
            ),
        ),
        Some(first) => (
            "k3s-log-errors".into(),
            "FAIL".into(),
            format!(
                "{} undocumented ({}); first: {first}",
                unknown.len(),
                document.display()
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# k3s log

| pattern | when | why harmless |
|---|---|---|
| `Failed to set sysctl: open /proc/sys/net/ipv4/conf/all/forwarding` | start | gVisor |
| `imagefs device is not found` | start | 9p |
| no backticks | x | y |
";

    #[test]
    fn patterns_come_from_the_first_cell_in_backticks() {
        assert_eq!(
            patterns(DOC),
            [
                "Failed to set sysctl: open /proc/sys/net/ipv4/conf/all/forwarding",
                "imagefs device is not found"
            ]
        );
    }

    #[test]
    fn undocumented_lines_are_reported_once_per_message() {
        let lines: Vec<String> = [
            "time=\"2026-11-28T06:58:41Z\" level=error msg=\"Failed to set sysctl: open /proc/sys/net/ipv4/conf/all/forwarding: no such file or directory\"",
            "E1128 06:58:46.108277      55 eviction_manager.go:259] \"x\" err=\"imagefs device is not found\"",
            "E1128 06:58:47.000001      55 new.go:1] something new",
            "E1128 06:59:47.000002      55 new.go:1] something new",
        ]
        .map(String::from)
        .to_vec();
        let unknown = undocumented(&lines, &patterns(DOC));
        assert_eq!(unknown, [lines[2].clone()]);
    }
}
