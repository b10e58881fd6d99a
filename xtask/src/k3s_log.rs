//! The error lines k3s writes to its log, checked against docs/k3s-log.md, whose table lists the
//! known ones with the reason each is harmless: a row is `| \`pattern\` | when | why it is
//! harmless |`, and a log line is documented when it contains a row's pattern.
//!
//! What fails a run (the `k3s-log-errors` step) is what matters: an undocumented fatal or panic
//! line, or an undocumented error that keeps coming back, `PERSISTENT_LINES` times or more over
//! at least `PERSISTENT_SPAN_SECS` (a steady-state fault, not a race). Start-up and restart races
//! (the e2e stops, restarts, kills and upgrades k3s on purpose) are reported and counted in the
//! step's line and the run's output, never a failure by themselves: a gate that failed on each
//! new harmless race failed CI once per race.

use e2e_steps::{Status, Step};
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

/// An undocumented error counts as persistent from this many lines...
pub const PERSISTENT_LINES: usize = 10;
/// ...spread over at least this long.
pub const PERSISTENT_SPAN_SECS: u32 = 300;

/// The time of day of a klog (`E1128 06:58:46.132650 ...`) or logrus (`time="...T06:58:46Z"`)
/// line, in seconds; None when it has none.
fn seconds_of_day(line: &str) -> Option<u32> {
    let clock = if let Some(rest) = line.split_once("time=\"") {
        rest.1.split_once('T')?.1.get(..8)?
    } else {
        line.split_whitespace().nth(1)?.get(..8)?
    };
    let mut parts = clock.split(':').map(|p| p.parse::<u32>().ok());
    Some(parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??)
}

fn is_fatal(line: &str) -> bool {
    let klog_fatal = line.starts_with('F') && line[1..].starts_with(|c: char| c.is_ascii_digit());
    line.contains("level=fatal") || klog_fatal || line.contains("panic:")
}

/// Why the undocumented lines fail a run, if they do: a fatal or panic line, or a message that
/// keeps coming back (see the module doc).
pub fn failing(unknown_lines: &[String]) -> Option<String> {
    if let Some(fatal) = unknown_lines.iter().find(|l| is_fatal(l)) {
        return Some(format!("fatal: {fatal}"));
    }
    for line in unknown_lines {
        let same: Vec<&String> = unknown_lines
            .iter()
            .filter(|l| same_message(l, line))
            .collect();
        let times: Vec<u32> = same.iter().filter_map(|l| seconds_of_day(l)).collect();
        // A run that crosses midnight only makes the span look longer: never shorter.
        let span = match (times.iter().min(), times.iter().max()) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        };
        if same.len() >= PERSISTENT_LINES && span >= PERSISTENT_SPAN_SECS {
            return Some(format!(
                "repeats: {} times over {span}s: {line}",
                same.len()
            ));
        }
    }
    None
}

/// The `k3s-log-errors` step of an e2e run: FAIL on an undocumented fatal line or an
/// undocumented error that persists; undocumented races are counted in an ok line.
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
    let unknown_lines: Vec<String> = lines
        .iter()
        .filter(|line| !patterns.iter().any(|p| line.contains(p.as_str())))
        .cloned()
        .collect();
    let name = document.file_name().unwrap_or_default().to_string_lossy();
    Ok(match (failing(&unknown_lines), unknown.first()) {
        (Some(why), _) => (
            Step::K3sLogErrors.to_string(),
            Status::Fail.to_string(),
            format!("undocumented in {name}, and not a passing race: {why}"),
        ),
        (None, None) => (
            Step::K3sLogErrors.to_string(),
            Status::Ok.to_string(),
            format!("{} error line(s), each documented in {name}", lines.len()),
        ),
        (None, Some(first)) => (
            Step::K3sLogErrors.to_string(),
            Status::Ok.to_string(),
            format!(
                "{} error line(s); {} undocumented message(s), none fatal or persistent (races \
                 of a start, restart or kill: add them to {name}); first: {first}",
                lines.len(),
                unknown.len()
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

    fn klog(clock: &str, message: &str) -> String {
        format!("E1206 {clock}.000001      55 x.go:1] {message}")
    }

    #[test]
    fn only_fatal_or_persistent_undocumented_errors_fail() {
        // A burst of a race (many lines, seconds apart): reported, not a failure.
        let burst: Vec<String> = (0..30)
            .map(|i| klog(&format!("02:10:{:02}", i), "lease"))
            .collect();
        assert_eq!(failing(&burst), None);
        // The same message over ten minutes: a steady-state fault.
        let steady: Vec<String> = (0..12)
            .map(|i| klog(&format!("02:{:02}:00", 10 + i), "sync"))
            .collect();
        assert!(failing(&steady)
            .unwrap()
            .starts_with("repeats: 12 times over 660s"));
        // Rare but spread out: still a race.
        let rare: Vec<String> = (0..3)
            .map(|i| klog(&format!("02:{:02}:00", 10 + 5 * i), "rare"))
            .collect();
        assert_eq!(failing(&rare), None);
        let fatal = vec![
            "time=\"2026-12-06T02:10:00Z\" level=fatal msg=\"starting kubernetes: boom\""
                .to_string(),
        ];
        assert!(failing(&fatal).unwrap().starts_with("fatal: "));
        assert_eq!(seconds_of_day(&fatal[0]), Some(2 * 3600 + 600));
        assert_eq!(seconds_of_day(&klog("01:02:03", "x")), Some(3723));
    }

    #[test]
    fn the_step_is_ok_with_a_count_for_races_and_fails_on_what_persists() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("k3s-log.md");
        std::fs::write(&doc, DOC).unwrap();
        let race = vec![klog("02:10:00", "new race")];
        let (_, status, detail) = step(&race, &doc).unwrap();
        assert_eq!(status, "ok");
        assert!(detail.contains("1 undocumented message(s)"), "{detail}");
        let steady: Vec<String> = (0..12)
            .map(|i| klog(&format!("02:{:02}:00", 10 + i), "sync"))
            .collect();
        assert_eq!(step(&steady, &doc).unwrap().1, "FAIL");
    }
}
