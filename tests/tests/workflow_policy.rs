//! The release's supply-chain rules, checked on the files themselves (issue 29), fast and
//! offline:
//!
//! - every `uses:` in ci/*.yml is pinned to a 40-hex commit, with the tag in a comment (a tag
//!   can be moved to other code; a commit id cannot);
//! - every checkout drops its token (`persist-credentials: false`), so build code cannot push;
//! - no `run:` script expands `${{ ... }}` (step outputs and inputs reach scripts through
//!   `env:`, where the shell cannot mistake them for code);
//! - the release workflow restores no stage output from a cache (target/, .cache/'s stamps and
//!   trees, the cargo home, Go's build cache): a cache written by another run would then ship
//!   binaries never built from the tag. Only downloads re-verified on every use may be cached,
//!   and today none is;
//! - the release uploads an explicit list of files, not a glob;
//! - the `cargo xtask` alias builds xtask with `--locked` (Cargo.lock, not whatever resolves).
//!
//! Each rule is also shown failing on a deliberately broken copy, so the checker cannot pass by
//! looking at nothing.
//!
//! The workflows are read line by line (the test crate has no YAML parser): keys are found by
//! their indentation, which is how GitHub's own YAML reads them too.

use k3s_gvisor_tests::repo;

/// Paths a release job may restore from a cache: downloads that the pipeline re-verifies on
/// every use. `.cache/trees/` is re-hashed to its pinned git tree id on every fetch
/// (xtask/src/fetch.rs). The release workflow caches nothing today; this names what would be
/// allowed, so that adding a cache of anything else fails here.
const RELEASE_CACHE_ALLOWED: &[&str] = &[".cache/trees/"];

#[test]
fn workflows_are_pinned_least_privilege_and_release_restores_no_stage_output() {
    let repo = repo();
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo.join("ci")).expect("ci/ is missing") {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        problems.extend(workflow_problems(&name, &text));
        names.push(name);
    }
    assert!(
        names.iter().any(|n| n == "release.yml"),
        "ci/release.yml is missing ({names:?})"
    );
    let cargo_config = std::fs::read_to_string(repo.join(".cargo/config.toml")).unwrap();
    problems.extend(alias_problems(&cargo_config));
    assert!(
        problems.is_empty(),
        "the workflows break the release rules:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker catches each fault on its own, in a workflow that is otherwise fine.
#[test]
fn each_rule_fails_on_a_broken_workflow() {
    let good = r#"name: release
on:
  push:
    tags: ["v*"]
permissions:
  contents: read
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1
        with:
          persist-credentials: false
      - uses: actions/setup-go@b7ad1dad31e06c5925ef5d2fc7ad053ef454303e # v7.0.0
        with:
          go-version: "1.26.8"
          cache: false
      - name: Bundle
        id: bundle
        run: echo "tarball=x" >> "$GITHUB_OUTPUT"
      - name: Verify
        env:
          TARBALL: ${{ steps.bundle.outputs.tarball }}
        run: |
          cargo xtask verify "$TARBALL"
  publish:
    needs: build
    runs-on: ubuntu-latest
    permissions:
      contents: write
    steps:
      - name: Publish
        run: >-
          gh release create "$GITHUB_REF_NAME"
          release/assets/a.tar.gz
          release/assets/a.tar.gz.sha256
"#;
    assert_eq!(workflow_problems("release.yml", good), Vec::<String>::new());

    let broken = |from: &str, to: &str, expect: &str| {
        assert!(good.contains(from), "fixture lacks {from:?}");
        let text = good.replacen(from, to, 1);
        let found = workflow_problems("release.yml", &text);
        assert!(
            found.iter().any(|p| p.contains(expect)),
            "{from:?} -> {to:?} was not caught as {expect:?}: {found:?}"
        );
    };
    // A tag, a branch, a short id, a pinned id without its tag comment.
    broken(
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "actions/checkout@v4",
        "not pinned to a 40-hex commit",
    );
    broken(
        "actions/setup-go@b7ad1dad31e06c5925ef5d2fc7ad053ef454303e # v7.0.0",
        "actions/setup-go@main",
        "not pinned to a 40-hex commit",
    );
    broken(
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "actions/checkout@3d3c42e",
        "not pinned to a 40-hex commit",
    );
    broken(
        "@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "names no tag in a comment",
    );
    broken(
        "persist-credentials: false",
        "persist-credentials: true",
        "persist-credentials: false",
    );
    broken(
        "cargo xtask verify \"$TARBALL\"",
        "cargo xtask verify \"${{ steps.bundle.outputs.tarball }}\"",
        "expands ${{",
    );
    broken(
        "          release/assets/a.tar.gz.sha256\n",
        "          release/assets/*\n",
        "explicit list",
    );
    broken("cache: false", "cache: true", "setup-go's cache");
    // Cache restores of stage outputs, in the release job.
    let cache_step = |paths: &str| {
        format!(
            "      - uses: actions/cache@27d5ce7f107fe9357f9df03efb73ab90386fccae # v5.0.5\n        with:\n          path: {paths}\n          key: k\n      - name: Bundle\n"
        )
    };
    for paths in [
        "target/",
        "|\n            ~/.cargo/registry\n            target/",
        ".cache/",
        ".cache/stamps",
        "target/k3s-gvisor/stamps",
        "~/.cache/go-build",
    ] {
        broken("      - name: Bundle\n", &cache_step(paths), "restores");
    }
    // ... while the allowed, re-verified download cache passes.
    let allowed = good.replacen("      - name: Bundle\n", &cache_step(".cache/trees/"), 1);
    assert_eq!(
        workflow_problems("release.yml", &allowed),
        Vec::<String>::new()
    );
    // Another workflow (pull requests) may cache build outputs: it publishes nothing.
    let pr = good.replacen("      - name: Bundle\n", &cache_step("target/"), 1);
    assert_eq!(workflow_problems("pr.yml", &pr), Vec::<String>::new());

    // The alias.
    assert_eq!(
        alias_problems("[alias]\nxtask = \"run --locked --quiet --package xtask --\"\n"),
        Vec::<String>::new()
    );
    let found = alias_problems("[alias]\nxtask = \"run --quiet --package xtask --\"\n");
    assert!(found.iter().any(|p| p.contains("--locked")), "{found:?}");
    let found = alias_problems("[build]\njobs = 2\n");
    assert!(
        found.iter().any(|p| p.contains("no `xtask` alias")),
        "{found:?}"
    );
}

/// Every rule above that `name` (a file in ci/) breaks, one line each.
fn workflow_problems(name: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    let release = name == "release.yml";
    for (i, line) in lines.iter().enumerate() {
        let at = format!("ci/{name}:{}", i + 1);
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(value) = trimmed.strip_prefix("uses:") {
            let (action, comment) = match value.split_once('#') {
                Some((a, c)) => (a.trim(), c.trim()),
                None => (value.trim(), ""),
            };
            if action.starts_with("./") {
                continue; // an action in this repository: pinned by the checkout itself
            }
            let pinned = action
                .rsplit_once('@')
                .is_some_and(|(_, r)| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()));
            if !pinned {
                problems.push(format!(
                    "{at}: `uses: {action}` is not pinned to a 40-hex commit (a tag can be moved)"
                ));
            } else if !comment.starts_with('v') {
                problems.push(format!(
                    "{at}: `uses: {action}` names no tag in a comment (`# vX.Y.Z`)"
                ));
            }
            let block = block_of(&lines, i);
            if action.starts_with("actions/checkout@")
                && !block
                    .iter()
                    .any(|l| l.trim() == "persist-credentials: false")
            {
                problems.push(format!(
                    "{at}: checkout without `persist-credentials: false` leaves the token in \
                     .git/config for every later step"
                ));
            }
            if release
                && action.starts_with("actions/setup-go@")
                && !block.iter().any(|l| l.trim() == "cache: false")
            {
                problems.push(format!(
                    "{at}: setup-go's cache (Go's module and build caches) must be `cache: \
                     false` in the release workflow"
                ));
            }
            if release && action.starts_with("Swatinem/rust-cache@") {
                problems.push(format!("{at}: rust-cache restores target/ in the release"));
            }
            if release && action.starts_with("actions/cache") {
                for path in cache_paths(&block) {
                    let allowed = RELEASE_CACHE_ALLOWED
                        .iter()
                        .any(|a| path.trim_end_matches('/') == a.trim_end_matches('/'));
                    if !allowed {
                        problems.push(format!(
                            "{at}: the release restores `{path}` from a cache: only downloads \
                             re-verified on every use may be cached ({RELEASE_CACHE_ALLOWED:?}), \
                             never stage outputs, stamps or build caches"
                        ));
                    }
                }
            }
        }
        if let Some(value) = trimmed.strip_prefix("run:") {
            let script: Vec<&str> = if matches!(value.trim(), "|" | ">" | "|-" | ">-") {
                block_below(&lines, i)
            } else {
                vec![value]
            };
            if script.iter().any(|l| l.contains("${{")) {
                problems.push(format!(
                    "{at}: a `run:` script expands ${{{{ ... }}}}; pass the value through `env:`"
                ));
            }
            let joined = script.join(" ");
            if joined.contains("gh release create") && joined.contains('*') {
                problems.push(format!(
                    "{at}: `gh release create` uploads a glob; name an explicit list of files"
                ));
            }
        }
    }
    problems
}

/// The `run --locked` rule for `.cargo/config.toml`'s xtask alias.
fn alias_problems(config: &str) -> Vec<String> {
    let Some(line) = config
        .lines()
        .find(|l| l.trim_start().starts_with("xtask") && l.contains('='))
    else {
        return vec![".cargo/config.toml: no `xtask` alias".into()];
    };
    if line
        .split_whitespace()
        .any(|w| w.trim_matches('"') == "--locked")
    {
        Vec::new()
    } else {
        vec![format!(
            ".cargo/config.toml: `{}` builds xtask without --locked (Cargo.lock would not bind it)",
            line.trim()
        )]
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The step (`- ` list item) that line `i` belongs to: from its `- ` line to the next line
/// indented no deeper than that dash.
fn block_of<'a>(lines: &[&'a str], i: usize) -> Vec<&'a str> {
    let start = (0..=i)
        .rev()
        .find(|&j| lines[j].trim_start().starts_with("- "))
        .unwrap_or(i);
    let dash = indent(lines[start]);
    let mut block = vec![lines[start]];
    for l in &lines[start + 1..] {
        if !l.trim().is_empty() && indent(l) <= dash {
            break;
        }
        block.push(l);
    }
    block
}

/// The lines indented deeper than line `i` that follow it (a block scalar's content, or a
/// key's children).
fn block_below<'a>(lines: &[&'a str], i: usize) -> Vec<&'a str> {
    // `- run: |`: the key sits two columns right of the dash.
    let mut key = indent(lines[i]);
    if lines[i].trim_start().starts_with("- ") {
        key += 2;
    }
    lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > key)
        .copied()
        .collect()
}

/// The paths of an actions/cache step's `path:` (one value, or a block of lines).
fn cache_paths(block: &[&str]) -> Vec<String> {
    let Some(i) = block
        .iter()
        .position(|l| l.trim_start().starts_with("path:"))
    else {
        return vec!["(no path)".into()];
    };
    let value = block[i].trim_start()["path:".len()..].trim();
    if matches!(value, "|" | ">" | "|-" | ">-") {
        block_below(block, i)
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        vec![value.to_string()]
    }
}
