//! Shared helpers for the launcher's integration tests: building real tracees, a replacement
//! tree, and running commands on plain Linux (with /proc/sys/kernel emptied) or inside runsc.
#![allow(dead_code)] // each test binary uses a different subset

pub mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The launcher under test: $K3S_GVISOR_LAUNCHER (for example the static binary from a bundle),
/// else the one cargo built for this test run.
pub fn launcher() -> String {
    match std::env::var("K3S_GVISOR_LAUNCHER") {
        Ok(p) if !p.is_empty() => p,
        _ => env!("CARGO_BIN_EXE_launcher").to_string(),
    }
}

/// The replacement files every tracee reads, and the values they must see.
pub const PROCSYS_FILES: &[(&str, &str)] = &[
    ("kernel/pid_max", "launcher-test-pid_max"),
    ("kernel/panic_on_oops", "launcher-test-panic_on_oops"),
    ("kernel/keys/root_maxkeys", "launcher-test-root_maxkeys"),
];
/// The file the tracees write "7\n" to.
pub const WRITTEN_FILE: &str = "kernel/panic";

/// A directory removed at drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "launcher-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Panics with a message naming the missing tool and the Debian package that has it.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}` on PATH: install it (Debian: apt-get install {package})"
    );
}

/// Creates DIR with [`PROCSYS_FILES`] and [`WRITTEN_FILE`] (initially "0").
pub fn make_procsys_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("procsys");
    for (file, value) in PROCSYS_FILES {
        let p = dir.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{value}\n")).unwrap();
    }
    std::fs::write(dir.join(WRITTEN_FILE), "0\n").unwrap();
    dir
}

fn tracee_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tracees")
        .join(name)
}

/// Where compiled tracees live: under target/ (the host filesystem, which `runsc do` shares),
/// named by a hash of their source, so reruns reuse them and edits rebuild them.
fn built_path(source: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(source).unwrap().hash(&mut h);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("launcher-tracees");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = source.file_stem().unwrap().to_str().unwrap();
    let language = source.extension().unwrap().to_str().unwrap();
    dir.join(format!("{stem}-{language}-{:016x}", h.finish()))
}

/// Tests run in parallel threads: one build at a time within a test binary; across test
/// binaries, each builds to a private name and renames into place (atomic).
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds tests/tracees/<file> once with `tool ARGS -o OUT SOURCE` (`tool` comes with the Debian
/// package `package`); returns the binary.
fn build(file: &str, tool: &str, package: &str, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    require_tool(tool, package);
    let source = tracee_source(file);
    let out = built_path(&source);
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if out.exists() {
        return out;
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let what = format!("{tool} {} {file}", args.join(" "));
    let result = Command::new(tool)
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .arg(&source)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        result.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Compiles tests/tracees/<name>.c with cc; returns the binary.
pub fn build_c(name: &str) -> PathBuf {
    build(&format!("{name}.c"), "cc", "gcc", &["-O2", "-pthread"], &[])
}

/// Builds tests/tracees/<name>.go with the Go toolchain; returns the binary.
pub fn build_go(name: &str) -> PathBuf {
    build(
        &format!("{name}.go"),
        "go",
        "golang-go (or a Go toolchain from go.dev on PATH)",
        &["build"],
        &[("GOFLAGS", "-buildvcs=false"), ("CGO_ENABLED", "0")],
    )
}

/// `exec launcher --procsys DIR -- COMMAND`, as a shell line.
pub fn launcher_script(dir: &Path, command: &str) -> String {
    format!(
        "exec {} --procsys {} -- {command}",
        sh_quote(&launcher()),
        sh_quote(dir.to_str().unwrap())
    )
}

/// Shell-quotes one argument.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `script` with sh in a private mount namespace where an empty tmpfs covers
/// /proc/sys/kernel, so that kernel/* files are missing as they are in gVisor.
pub fn run_with_empty_proc_sys_kernel(script: &str) -> Output {
    require_tool("unshare", "util-linux");
    let wrapped = format!("mount -t tmpfs launcher-test /proc/sys/kernel && {script}");
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &wrapped])
        .output()
        .expect("running unshare")
}

pub use testkit::runsc;

/// Runs `script` with /bin/sh inside a gVisor sandbox sharing the host filesystem (9p).
pub fn run_in_runsc(script: &str) -> Output {
    testkit::runsc_sh(runsc())
        .args(["-c", script])
        .output()
        .expect("running runsc")
}

/// Where a test runs the launcher: the redirect scenarios (`scenarios`) run in both.
#[derive(Clone, Copy)]
pub enum Host {
    /// Plain Linux, with /proc/sys/kernel emptied ([`run_with_empty_proc_sys_kernel`]).
    Linux,
    /// A gVisor sandbox ([`run_in_runsc`]).
    Runsc,
}

impl Host {
    /// Runs `launcher --procsys DIR -- COMMAND` (COMMAND a shell line) here.
    pub fn run(self, dir: &Path, command: &str) -> Output {
        let script = launcher_script(dir, command);
        match self {
            Host::Linux => run_with_empty_proc_sys_kernel(&script),
            Host::Runsc => run_in_runsc(&script),
        }
    }

    /// A word for temporary directory names.
    pub fn name(self) -> &'static str {
        match self {
            Host::Linux => "linux",
            Host::Runsc => "runsc",
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `out` printed exactly `lines`.
pub fn assert_stdout_lines(out: &Output, lines: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        lines,
        "{}",
        describe(out)
    );
}

/// Checks the output of a procsys_reader tracee: every line naming a file of
/// [`PROCSYS_FILES`] shows its DIR value, each `who` in `expected_who` appears for every file,
/// and the write succeeded and landed in DIR.
pub fn check_reader_output(out: &Output, dir: &Path, expected_who: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tracee failed\n{}", describe(out));
    for who in expected_who {
        for (file, value) in PROCSYS_FILES {
            let lines: Vec<&str> = stdout
                .lines()
                .filter(|l| l.starts_with(&format!("{who} ")) && l.split(' ').nth(2) == Some(file))
                .collect();
            assert!(
                !lines.is_empty(),
                "no `{who}` read of {file}\n{}",
                describe(out)
            );
            for line in lines {
                assert_eq!(
                    line.split(' ').nth(3),
                    Some(*value),
                    "`{line}`: expected the DIR value {value}\n{}",
                    describe(out)
                );
            }
        }
    }
    assert!(
        stdout.contains("write kernel/panic ok"),
        "write failed\n{}",
        describe(out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(WRITTEN_FILE)).unwrap(),
        "7\n",
        "the write to /proc/sys/{WRITTEN_FILE} must land in DIR"
    );
}
