//! `SHA256SUMS`: one line per file, `<sha256>  <path>`, the text `sha256sum` writes and
//! `sha256sum -c` checks. [`Sums::write`] is the only writer (the bundle's list, the release's
//! list) and [`Sums::parse`] the only reader, and it is strict: it accepts exactly what `write`
//! produces, so a list that anything else wrote or edited is refused, not guessed at.

use std::collections::BTreeSet;
use std::fmt;

/// One line: a file and its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumEntry {
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// Relative to the list's directory, `/`-separated, never leaving it (`bin/runc`).
    pub path: String,
}

/// A whole list, in the order it was written (`cargo xtask bundle` writes paths sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    entries: Vec<SumEntry>,
}

/// A line [`Sums::parse`] refuses, or an entry [`Sums::push`] refuses to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumsError {
    /// 1-based line number.
    pub line: usize,
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for SumsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} is malformed ({}): {:?}",
            crate::SUMS_FILE,
            self.line,
            self.reason,
            self.text
        )
    }
}

impl std::error::Error for SumsError {}

/// Why `sha256`/`path` cannot be a line, if they cannot.
fn check(sha256: &str, path: &str) -> Result<(), &'static str> {
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("not 64 lowercase hex digits");
    }
    if path.is_empty() {
        return Err("no path");
    }
    if path.starts_with('/') {
        return Err("an absolute path");
    }
    // sha256sum escapes names with these (a leading `\`), which this format does not do.
    if path.contains(['\\', '\n', '\r']) {
        return Err("a path with a backslash or a line break");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("a path with an empty, `.` or `..` component");
    }
    Ok(())
}

impl Sums {
    pub fn new() -> Sums {
        Sums::default()
    }

    /// Adds a line; refused where [`Sums::parse`] would refuse it, or where `path` is listed
    /// already.
    pub fn push(&mut self, sha256: &str, path: &str) -> Result<(), SumsError> {
        let refuse = |reason| SumsError {
            line: self.entries.len() + 1,
            text: format!("{sha256}  {path}"),
            reason,
        };
        check(sha256, path).map_err(refuse)?;
        if self.get(path).is_some() {
            return Err(refuse("a path listed twice"));
        }
        self.entries.push(SumEntry {
            sha256: sha256.to_string(),
            path: path.to_string(),
        });
        Ok(())
    }

    pub fn entries(&self) -> &[SumEntry] {
        &self.entries
    }

    /// The sha256 listed for `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.path == path)
            .map(|e| e.sha256.as_str())
    }

    /// The file's text: `<sha256>  <path>\n` per entry, in order.
    pub fn write(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{}  {}\n", e.sha256, e.path))
            .collect()
    }

    /// Reads what [`Sums::write`] writes, and nothing else: no blank lines, no binary-mode
    /// `*` marker, no `./` prefix, no path that leaves the directory, no path twice.
    pub fn parse(text: &str) -> Result<Sums, SumsError> {
        let mut sums = Sums::new();
        let mut seen = BTreeSet::new();
        for (number, line) in text.lines().enumerate() {
            let refuse = |reason| SumsError {
                line: number + 1,
                text: line.to_string(),
                reason,
            };
            let (sha256, path) = line
                .split_once("  ")
                .ok_or_else(|| refuse("not `<sha256>  <path>`"))?;
            check(sha256, path).map_err(refuse)?;
            if !seen.insert(path) {
                return Err(refuse("a path listed twice"));
            }
            sums.entries.push(SumEntry {
                sha256: sha256.to_string(),
                path: path.to_string(),
            });
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_what_sha256sum_writes_and_parses_back() {
        let a = "a".repeat(64);
        let b = "0123456789abcdef".repeat(4);
        let mut sums = Sums::new();
        sums.push(&a, "bin/runc").unwrap();
        sums.push(&b, "etc/procsys/kernel/pid_max").unwrap();
        let text = sums.write();
        assert_eq!(
            text,
            format!("{a}  bin/runc\n{b}  etc/procsys/kernel/pid_max\n")
        );
        assert_eq!(Sums::parse(&text).unwrap(), sums);
        assert_eq!(sums.get("bin/runc"), Some(a.as_str()));
        assert_eq!(Sums::parse("").unwrap(), Sums::new());
    }

    #[test]
    fn anything_else_is_refused() {
        let hash = "b".repeat(64);
        for bad in [
            format!("{hash}  ../etc/passwd"),
            format!("{hash}  /etc/passwd"),
            format!("{hash}  bin/../../x"),
            format!("{hash}  ./bin/runc"),
            format!("{hash}  bin//runc"),
            format!("{hash}  bin/"),
            format!("{hash} *bin/runc"),
            format!("{hash} bin/runc"),
            format!("{hash}  "),
            format!("{}  bin/runc", "B".repeat(64)),
            "abc  bin/runc".to_string(),
            format!("{hash}  bin/runc\n\n{hash}  bin/ctr"),
            format!("{hash}  bin/runc\n{hash}  bin/runc"),
        ] {
            assert!(Sums::parse(&bad).is_err(), "{bad:?} was accepted");
        }
        let err = Sums::parse(&format!("{hash}  bin/ok\n{hash}  /etc/passwd")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err
            .to_string()
            .starts_with("SHA256SUMS line 2 is malformed"));
        let mut sums = Sums::new();
        assert!(sums.push(&hash, "../x").is_err());
        sums.push(&hash, "x").unwrap();
        assert!(sums.push(&hash, "x").is_err());
    }
}
