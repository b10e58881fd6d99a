//! `cargo xtask outdated`: for every pinned component (bundle.toml) and test tool
//! (tests/tools.toml), the newest release of its line (same major.minor) that the Go module
//! proxy offers, beside the pin; so that the next security release is one command away from
//! being seen.
//!
//! Where the versions come from is a `ReleaseSource`: the real one asks the Go module proxy
//! (`go list -m -versions`, and `@latest` for a pseudo-version pin: a commit of a branch, no
//! release line); tests feed a fixed list. The mirrors hold commit archives named by commit id,
//! which say nothing of releases, so a component the proxy refuses (k3s) is listed as such.

use crate::config::BundleConfig;
use crate::tools::pins::ToolPin;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One pinned input: where it is pinned, its name, its Go module (if it has one) and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `bundle.toml` or `tests/tools.toml`.
    pub file: &'static str,
    pub name: String,
    pub module: Option<String>,
    pub version: String,
}

/// What can list the releases of a Go module.
pub trait ReleaseSource {
    /// Every tagged release the source offers for `module` (any order).
    fn versions(&self, module: &str) -> Result<Vec<String>>;
    /// The version `module@latest` resolves to (for pseudo-version pins).
    fn latest(&self, module: &str) -> Result<String>;
    /// Does the source serve `module@version`? The proxy's list can leave releases out (it
    /// lists no v1.12.x of CoreDNS, yet serves v1.12.4), so the next patch releases are asked
    /// for by name too.
    fn has(&self, module: &str, version: &str) -> Result<bool>;
}

/// How many patch releases past the newest listed one are asked for by name, at most.
const PROBES: u64 = 30;

/// A version as Go modules spell it: `v1.3.7`, `v1.34.1+k3s1`, `v2.0.0-rc.1`,
/// `v0.0.0-20260905035102-160fafc42237` (pseudo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The pre-release after `-` (empty for a release).
    pub pre: String,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let rest = text.strip_prefix('v')?;
        let rest = rest.split('+').next()?;
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, pre.to_string()),
            None => (rest, String::new()),
        };
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }
        Some(Version {
            major,
            minor,
            patch,
            pre,
        })
    }

    /// A pseudo-version names a commit, not a release: its pre-release ends in a 14-digit
    /// timestamp and a 12-hex commit prefix.
    pub fn is_pseudo(&self) -> bool {
        let parts: Vec<&str> = self.pre.rsplitn(2, '-').collect();
        let (hash, before) = match parts.as_slice() {
            [hash, before] => (*hash, *before),
            _ => return false,
        };
        let stamp = before.rsplit(['.', '-']).next().unwrap_or("");
        hash.len() == 12
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && stamp.len() == 14
            && stamp.bytes().all(|b| b.is_ascii_digit())
    }

    fn is_release(&self) -> bool {
        self.pre.is_empty()
    }
}

/// The newest release of `pinned`'s line (same major.minor) among `offered`; pre-releases and
/// unparsable versions are left out. None if the line has no release there.
pub fn newest_in_line<'a>(pinned: &Version, offered: &'a [String]) -> Option<&'a str> {
    offered
        .iter()
        .filter_map(|v| Version::parse(v).map(|parsed| (parsed, v.as_str())))
        .filter(|(v, _)| v.is_release() && (v.major, v.minor) == (pinned.major, pinned.minor))
        .max_by_key(|(v, _)| v.patch)
        .map(|(_, text)| text)
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub file: &'static str,
    pub name: String,
    pub pinned: String,
    /// The newest of the line, or what was found instead.
    pub newest: String,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    UpToDate,
    /// A newer release of the same line exists.
    Behind,
    /// A pseudo-version pin, and the branch has moved on.
    NewerCommit,
    /// Not listed, with the reason.
    Unknown(String),
}

impl Status {
    fn text(&self) -> String {
        match self {
            Status::UpToDate => "up to date".into(),
            Status::Behind => "NEWER RELEASE".into(),
            Status::NewerCommit => "newer commit (pseudo-version pin)".into(),
            Status::Unknown(why) => format!("not listed: {why}"),
        }
    }
}

/// Every pin of bundle.toml's components, then tests/tools.toml's tools.
pub fn pins(config: &BundleConfig, tools: &BTreeMap<String, ToolPin>) -> Vec<Pinned> {
    let components = config.components.iter().map(|c| Pinned {
        file: "bundle.toml",
        name: c.name.clone(),
        module: c.module.clone(),
        version: c.version.clone(),
    });
    let tools = tools.iter().map(|(name, t)| Pinned {
        file: "tests/tools.toml",
        name: name.clone(),
        module: Some(t.module.clone()),
        version: t.version.clone(),
    });
    components.chain(tools).collect()
}

/// Compare every pin with what `source` offers. A source error is reported on its row, not
/// fatal: one unreachable module must not hide the others.
pub fn rows(pins: &[Pinned], source: &dyn ReleaseSource) -> Vec<Row> {
    pins.iter()
        .map(|p| {
            let row = |newest: String, status| Row {
                file: p.file,
                name: p.name.clone(),
                pinned: p.version.clone(),
                newest,
                status,
            };
            let Some(module) = &p.module else {
                return row(
                    "-".into(),
                    Status::Unknown(
                        "no Go module: the proxy refuses it, and mirrors hold commit archives, \
                         not release lists (see the project's releases page)"
                            .into(),
                    ),
                );
            };
            let Some(pinned) = Version::parse(&p.version) else {
                return row(
                    "-".into(),
                    Status::Unknown(format!("`{}` is not a Go module version", p.version)),
                );
            };
            if pinned.is_pseudo() {
                return match source.latest(module) {
                    Ok(latest) if latest == p.version => row(latest, Status::UpToDate),
                    Ok(latest) => row(latest, Status::NewerCommit),
                    Err(e) => row("-".into(), Status::Unknown(format!("{e:#}"))),
                };
            }
            let offered = match source.versions(module) {
                Ok(offered) => offered,
                Err(e) => return row("-".into(), Status::Unknown(format!("{e:#}"))),
            };
            // The newest listed release of the line (the pin itself if none is listed), then
            // the patch releases after it that the source serves by name, up to the first gap.
            let listed = newest_in_line(&pinned, &offered)
                .and_then(Version::parse)
                .map_or(pinned.patch, |v| v.patch.max(pinned.patch));
            let mut newest = listed;
            for patch in listed + 1..=listed + PROBES {
                let name = format!("v{}.{}.{patch}", pinned.major, pinned.minor);
                match source.has(module, &name) {
                    Ok(true) => newest = patch,
                    Ok(false) => break,
                    Err(e) => return row("-".into(), Status::Unknown(format!("{e:#}"))),
                }
            }
            let status = if newest > pinned.patch {
                Status::Behind
            } else {
                Status::UpToDate
            };
            row(
                format!("v{}.{}.{newest}", pinned.major, pinned.minor),
                status,
            )
        })
        .collect()
}

/// The report as an aligned plain-text table, a summary line last.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "pinned in",
        "name",
        "pinned",
        "newest of its line",
        "status",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.file.to_string(),
                r.name.clone(),
                r.pinned.clone(),
                r.newest.clone(),
                r.status.text(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &cells {
        line(row);
    }
    let behind = rows.iter().filter(|r| r.status == Status::Behind).count();
    let _ = writeln!(
        out,
        "{behind} pin(s) behind the newest release of their line"
    );
    out
}

/// The Go module proxy, through the go command (GOPROXY as the environment sets it).
pub struct GoProxy<'a> {
    pub go: &'a crate::go::Go,
}

impl GoProxy<'_> {
    fn list(&self, args: &[&str]) -> Result<String> {
        let out = self
            .go
            .command()
            .args(["list", "-m"])
            .args(args)
            .env("GOFLAGS", "-mod=mod")
            .current_dir(std::env::temp_dir())
            .output()
            .context("cannot run `go`: install the Go toolchain and put it on PATH")?;
        if !out.status.success() {
            bail!(
                "go list -m {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl ReleaseSource for GoProxy<'_> {
    fn versions(&self, module: &str) -> Result<Vec<String>> {
        // `go list -m -versions M` prints `M v1 v2 ...`.
        let text = self.list(&["-versions", module])?;
        Ok(text.split_whitespace().skip(1).map(String::from).collect())
    }

    fn latest(&self, module: &str) -> Result<String> {
        self.list(&["-f", "{{.Version}}", &format!("{module}@latest")])
    }

    fn has(&self, module: &str, version: &str) -> Result<bool> {
        // `-e`: an unknown version is reported in .Error instead of failing the command, so a
        // network failure (non-zero exit) is told apart from "no such version".
        let text = self.list(&[
            "-e",
            "-f",
            "{{if .Error}}missing{{else}}{{.Version}}{{end}}",
            &format!("{module}@{version}"),
        ])?;
        Ok(text == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy that knows a fixed list per module and its `@latest`, serves the `module@version`s
    /// of its second field without listing them, and fails for any other module.
    struct Fake(
        BTreeMap<&'static str, (Vec<&'static str>, &'static str)>,
        Vec<&'static str>,
    );

    impl ReleaseSource for Fake {
        fn versions(&self, module: &str) -> Result<Vec<String>> {
            match self.0.get(module) {
                Some((versions, _)) => Ok(versions.iter().map(|v| v.to_string()).collect()),
                None => bail!("{module}: 404 Not Found"),
            }
        }
        fn latest(&self, module: &str) -> Result<String> {
            match self.0.get(module) {
                Some((_, latest)) => Ok(latest.to_string()),
                None => bail!("{module}: 404 Not Found"),
            }
        }
        fn has(&self, module: &str, version: &str) -> Result<bool> {
            let listed = self.versions(module)?;
            let key = format!("{module}@{version}");
            Ok(listed.iter().any(|v| v == version) || self.1.contains(&key.as_str()))
        }
    }

    fn pin(name: &str, module: Option<&str>, version: &str) -> Pinned {
        Pinned {
            file: "bundle.toml",
            name: name.into(),
            module: module.map(String::from),
            version: version.into(),
        }
    }

    #[test]
    fn versions_parse_with_pre_releases_builds_and_pseudo_versions() {
        let v = Version::parse("v1.34.1+k3s1").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.pre.as_str()), (1, 34, 1, ""));
        let v = Version::parse("v2.2.0-rc.1").unwrap();
        assert_eq!((v.minor, v.pre.as_str(), v.is_pseudo()), (2, "rc.1", false));
        assert!(Version::parse("v0.0.0-20260905035102-160fafc42237")
            .unwrap()
            .is_pseudo());
        assert!(Version::parse("v1.2.4-0.20250101000000-abcdefabcdef")
            .unwrap()
            .is_pseudo());
        for bad in ["1.3.7", "v1.3", "vx.1.2", "v1.2.3.4", "latest"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_newest_of_a_line_is_numeric_same_major_minor_and_no_pre_release() {
        let offered: Vec<String> = [
            "v1.3.3",
            "v1.3.10",
            "v1.3.9",
            "v1.4.0",
            "v1.3.11-rc.1",
            "v2.3.1",
            "junk",
        ]
        .map(String::from)
        .to_vec();
        let pinned = Version::parse("v1.3.3").unwrap();
        assert_eq!(newest_in_line(&pinned, &offered), Some("v1.3.10"));
        let pinned = Version::parse("v1.5.0").unwrap();
        assert_eq!(newest_in_line(&pinned, &offered), None);
    }

    #[test]
    fn rows_say_behind_up_to_date_newer_commit_and_not_listed() {
        let fake = Fake(
            BTreeMap::from([
                (
                    "github.com/opencontainers/runc",
                    (vec!["v1.3.3", "v1.3.7", "v1.4.3", "v1.3.8-rc.1"], ""),
                ),
                (
                    "github.com/containerd/containerd/v2",
                    (vec!["v2.1.4", "v2.1.9", "v2.2.9"], ""),
                ),
                (
                    "gvisor.dev/gvisor",
                    (vec![], "v0.0.0-20261101000000-aaaaaaaaaaaa"),
                ),
                // The proxy lists no 1.12.x of CoreDNS but serves them.
                (
                    "github.com/coredns/coredns",
                    (vec!["v1.11.1", "v1.14.7"], ""),
                ),
            ]),
            vec![
                "github.com/coredns/coredns@v1.12.4",
                "github.com/coredns/coredns@v1.12.5",
                // A gap ends the probe: v1.12.7 without v1.12.6 is not seen.
                "github.com/coredns/coredns@v1.12.7",
            ],
        );
        let pins = vec![
            pin("runc", Some("github.com/opencontainers/runc"), "v1.3.3"),
            pin(
                "containerd",
                Some("github.com/containerd/containerd/v2"),
                "v2.1.9",
            ),
            pin("k3s", None, "v1.34.1+k3s1"),
            pin(
                "runsc",
                Some("gvisor.dev/gvisor"),
                "v0.0.0-20260905035102-160fafc42237",
            ),
            pin("gone", Some("example.com/gone"), "v1.0.0"),
            pin("coredns", Some("github.com/coredns/coredns"), "v1.12.3"),
        ];
        let rows = rows(&pins, &fake);
        let by_name = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(by_name("runc").newest, "v1.3.7");
        assert_eq!(by_name("runc").status, Status::Behind);
        assert_eq!(by_name("containerd").status, Status::UpToDate);
        assert!(
            matches!(by_name("k3s").status, Status::Unknown(ref why) if why.contains("no Go module"))
        );
        assert_eq!(by_name("runsc").status, Status::NewerCommit);
        assert_eq!(
            by_name("runsc").newest,
            "v0.0.0-20261101000000-aaaaaaaaaaaa"
        );
        assert!(matches!(by_name("gone").status, Status::Unknown(ref why) if why.contains("404")));
        assert_eq!(by_name("coredns").newest, "v1.12.5");
        assert_eq!(by_name("coredns").status, Status::Behind);
        let table = render(&rows);
        assert!(table.contains("NEWER RELEASE"), "{table}");
        assert!(
            table.ends_with("2 pin(s) behind the newest release of their line\n"),
            "{table}"
        );
        let runc_line = table.lines().find(|l| l.contains(" runc ")).unwrap();
        assert!(
            runc_line.contains("v1.3.3") && runc_line.contains("v1.3.7"),
            "{table}"
        );
    }

    /// The repository's own pins all take part: every bundle.toml component and every tool.
    #[test]
    fn every_pin_of_the_repository_is_listed() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let config = BundleConfig::load(&repo.join("bundle.toml")).unwrap();
        let tools = crate::tools::pins::load(&repo.join("tests/tools.toml")).unwrap();
        let pins = pins(&config, &tools);
        assert_eq!(pins.len(), config.components.len() + tools.len());
        for name in ["runc", "containerd", "k3s", "runsc", "crictl"] {
            assert!(pins.iter().any(|p| p.name == name), "{name}");
        }
    }
}
