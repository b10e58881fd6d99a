//! `cargo xtask bench`: what the launcher costs a traced program, with every baseline measured
//! in the same run (natively, under the same seccomp filter with no tracer, under a tracer that
//! only resumes each stop, and under `strace --seccomp-bpf`), on this host or inside any runsc.
//!
//! Workloads (crates/launcher/benches/syscall_loops.c, timed around the loop only):
//! - (a) a `getppid` loop: the filter lets it through, no stop; its floor is the same filter
//!   with no tracer (benches/filter_only.c);
//! - (b) `openat`+`close` of a file outside /proc/sys by absolute path, (b2) by a relative one:
//!   one stop, no redirect;
//! - (c) `openat`+`close` of /proc/sys/kernel/pid_max, which the launcher redirects to DIR;
//! - the floor of (b), (b2), (c): the same loop under benches/null_tracer.c, the launcher's
//!   design (same filter, one `PTRACE_EVENT_SECCOMP` stop per path syscall) with a tracer that
//!   does nothing at a stop but `wait4` and `PTRACE_CONT`. No `SECCOMP_RET_TRACE` tracer can be
//!   cheaper.
//!
//! Runners take turns within each round and the best round counts: other load only ever slows
//! a run down. The report is JSON (`--json`) and a markdown table; `--update FILE` replaces the
//! table between `<!-- bench:<host> -->` and `<!-- /bench:<host> -->` in FILE (BENCHMARKS.md),
//! so the figures there are regenerated, never typed.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to measure and where.
pub struct BenchOptions<'a> {
    /// The launcher binary (the pipeline's static build).
    pub launcher: &'a Path,
    /// None: on this host; else inside this runsc (`runsc do`).
    pub runsc: Option<&'a Path>,
    /// A name for the report (`plain-linux`, `gvisor-current`, ...).
    pub label: &'a str,
    /// The `--host` value that measures here again.
    pub host: &'a str,
    /// Run everything (tracer, tracee, runsc) on this CPU (`taskset -c`).
    pub pin: Option<u32>,
    pub rounds: u32,
    pub n_syscall: u64,
    pub n_open: u64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub label: String,
    pub host: String,
    pub measured_at: String,
    pub kernel: String,
    pub runsc_version: Option<String>,
    pub pinned_cpu: Option<u32>,
    pub rounds: u32,
    pub load_average: String,
    pub rows: Vec<Row>,
    /// Whether the sandbox offers SECCOMP_RET_USER_NOTIF (the one alternative to ptrace stops).
    pub user_notif: String,
    /// The launcher's own syscalls per stop, counted with `strace -c` (host only).
    pub syscalls_per_stop: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub native_ns: f64,
    pub launcher_ns: f64,
    pub strace_ns: f64,
    pub floor: String,
    pub floor_ns: f64,
}

impl Row {
    /// The launcher's cost relative to the best any tracer of its design can do.
    pub fn launcher_over_floor(&self) -> f64 {
        self.launcher_ns / self.floor_ns
    }
}

/// The programs the benchmark runs, compiled into `dir`.
struct Programs {
    dir: PathBuf,
}

impl Programs {
    fn compile(sources: &Path, dir: &Path) -> Result<Self> {
        // Static where the program runs under filter_only or in a sandbox without our loader.
        compile_syscall_loops(sources, dir)?;
        for (name, link) in [
            ("filter_only", None),
            ("null_tracer", None),
            ("user_notif_probe", Some("-static")),
        ] {
            compile_c(sources, dir, name, link)?;
        }
        Ok(Programs {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// `dir/syscall_loops`, static: it also runs in containers and sandboxes (bench_stack.rs).
pub fn compile_syscall_loops(sources: &Path, dir: &Path) -> Result<PathBuf> {
    compile_c(sources, dir, "syscall_loops", Some("-static"))
}

fn compile_c(sources: &Path, dir: &Path, name: &str, link: Option<&str>) -> Result<PathBuf> {
    let sh = xshell::Shell::new()?;
    let (out, src) = (dir.join(name), sources.join(format!("{name}.c")));
    xshell::cmd!(sh, "cc -O2 {link...} -o {out} {src}")
        .quiet()
        .run()
        .with_context(|| format!("cannot compile {name}.c (apt-get install gcc)"))?;
    Ok(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Runner {
    Native,
    Launcher,
    Strace,
    /// The filter with no tracer: (a)'s floor.
    FilterOnly,
    /// A tracer that only resumes: the floor of path syscalls.
    NullTracer,
}

struct Bench<'a> {
    opts: &'a BenchOptions<'a>,
    programs: Programs,
    work: PathBuf,
}

impl Bench<'_> {
    /// One shell command, on the host or in a fresh sandbox; its stdout. Pinned, the shell
    /// (or runsc) starts under `taskset`, so everything in it inherits the CPU.
    fn sh(&self, script: &str) -> Result<String> {
        let shell = match self.opts.runsc {
            Some(runsc) => crate::tools::runsc_sh(runsc),
            None => Command::new("/bin/sh"),
        };
        let mut cmd = match self.opts.pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c")
                    .arg(cpu.to_string())
                    .arg(shell.get_program())
                    .args(shell.get_args());
                c
            }
            None => shell,
        };
        let out = cmd
            .arg("-c")
            .arg(script)
            .output()
            .context("cannot start the benchmark shell")?;
        if !out.status.success() {
            bail!(
                "benchmark command failed ({}): {script}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// ns per iteration of one run of `loops ARGS` under `runner`.
    fn run_once(&self, runner: Runner, args: &str) -> Result<f64> {
        let procsys = self.work.join("procsys");
        let prefix = match runner {
            Runner::Native => String::new(),
            Runner::Launcher => format!(
                "{} --procsys {} --",
                self.opts.launcher.display(),
                procsys.display()
            ),
            Runner::Strace => "strace -f --seccomp-bpf -e trace=openat -o /dev/null".into(),
            Runner::FilterOnly => self.programs.path("filter_only"),
            Runner::NullTracer => self.programs.path("null_tracer"),
        };
        let out = self.sh(&format!(
            "cd {} && {prefix} {} {args}",
            self.work.display(),
            self.programs.path("syscall_loops")
        ))?;
        out.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the loop printed `{}`", out.trim()))
    }

    /// The best of `rounds` for each runner, runners interleaved within a round. `untraced`
    /// replaces the arguments for every runner but the launcher (a file that only the launcher
    /// can reach at `args`' path).
    fn row(
        &self,
        workload: &str,
        floor: Runner,
        floor_name: &str,
        args: &str,
        untraced: Option<&str>,
    ) -> Result<Row> {
        let runners = [Runner::Native, Runner::Launcher, Runner::Strace, floor];
        let mut best = [f64::INFINITY; 4];
        for _ in 0..self.opts.rounds {
            for (i, runner) in runners.iter().enumerate() {
                let a = match (runner, untraced) {
                    (Runner::Launcher, _) | (_, None) => args,
                    (_, Some(u)) => u,
                };
                best[i] = best[i].min(self.run_once(*runner, a)?);
            }
        }
        Ok(Row {
            workload: workload.into(),
            native_ns: best[0],
            launcher_ns: best[1],
            strace_ns: best[2],
            floor: floor_name.into(),
            floor_ns: best[3],
        })
    }

    /// `strace -c` on the launcher itself (not -f: the launcher traces the command): each
    /// syscall it makes at least once per iteration, per iteration.
    fn syscalls_per_stop(&self, name: &str, path: &str) -> Result<String> {
        let n = 10_000;
        let count = self.work.join("count");
        let out = Command::new("strace")
            .arg("-c")
            .arg("-o")
            .arg(&count)
            .arg(self.opts.launcher)
            .arg("--procsys")
            .arg(self.work.join("procsys"))
            .arg("--")
            .arg(self.programs.path("syscall_loops"))
            .args(["open", path, &n.to_string()])
            .current_dir(&self.work)
            .output()?;
        if !out.status.success() {
            bail!("strace -c on the launcher failed");
        }
        let mut total = 0.0;
        let mut list = Vec::new();
        for line in std::fs::read_to_string(&count)?.lines() {
            // columns: % seconds usecs/call calls [errors] syscall
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(calls), Some(name)) = (fields.get(3), fields.last()) else {
                continue;
            };
            let Ok(calls) = calls.parse::<f64>() else {
                continue;
            };
            if *name != "total" && calls >= n as f64 {
                total += calls / n as f64;
                list.push(format!("{name} {:.2}", calls / n as f64));
            }
        }
        Ok(format!("{name}: {total:.2} per stop: {}", list.join(", ")))
    }
}

pub fn run(opts: &BenchOptions, sources: &Path) -> Result<BenchReport> {
    for tool in ["cc", "strace"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("the benchmark needs `{tool}` on PATH: apt-get install gcc strace");
        }
    }
    let work = tempfile::Builder::new()
        .prefix("launcher-bench")
        .tempdir()?;
    let programs = Programs::compile(sources, work.path())?;
    std::fs::create_dir_all(work.path().join("procsys/kernel"))?;
    std::fs::write(work.path().join("procsys/kernel/pid_max"), "4194304\n")?;
    std::fs::write(work.path().join("existing-file"), "bench\n")?;
    let bench = Bench {
        opts,
        programs,
        work: work.path().to_path_buf(),
    };
    let existing = work.path().join("existing-file").display().to_string();
    let null = "floor: same, under a tracer that only resumes each stop";
    let (n_sys, n_open) = (opts.n_syscall, opts.n_open);
    let mut rows = vec![
        bench.row(
            "(a) getppid loop (no path)",
            Runner::FilterOnly,
            "(a) floor: same loop under a bare seccomp filter, no tracer",
            &format!("getppid {n_sys}"),
            None,
        )?,
        bench.row(
            "(b) open+close existing file outside /proc/sys",
            Runner::NullTracer,
            &format!("(b) {null}"),
            &format!("open {existing} {n_open}"),
            None,
        )?,
        bench.row(
            "(b2) same, by a relative path (cwd outside /proc)",
            Runner::NullTracer,
            &format!("(b2) {null}"),
            &format!("open existing-file {n_open}"),
            None,
        )?,
    ];
    // (c): where the sandbox lacks the file, the untraced runners open DIR's copy directly.
    let pid_max = "/proc/sys/kernel/pid_max";
    let has_pid_max = bench
        .sh(&format!(
            "{} open {pid_max} 1",
            bench.programs.path("syscall_loops")
        ))
        .is_ok();
    let dir_copy = format!(
        "open {}/procsys/kernel/pid_max {n_open}",
        work.path().display()
    );
    rows.push(bench.row(
        &format!(
            "(c) open+close {pid_max} (redirected by the launcher{})",
            if has_pid_max {
                ""
            } else {
                "; missing here, so the others open DIR/kernel/pid_max"
            }
        ),
        Runner::NullTracer,
        &format!("(c) {null} (no redirect)"),
        &format!("open {pid_max} {n_open}"),
        (!has_pid_max).then_some(dir_copy.as_str()),
    )?);
    let user_notif = bench
        .sh(&bench.programs.path("user_notif_probe"))?
        .trim()
        .to_string();
    let mut syscalls_per_stop = Vec::new();
    if opts.runsc.is_none() {
        syscalls_per_stop.push(bench.syscalls_per_stop("(b) absolute path", &existing)?);
        syscalls_per_stop.push(bench.syscalls_per_stop("(b2) relative path", "existing-file")?);
        syscalls_per_stop.push(bench.syscalls_per_stop("(c) redirected", pid_max)?);
    }
    let sh = xshell::Shell::new()?;
    let first_line = |cmd: xshell::Cmd| {
        cmd.quiet()
            .read()
            .map(|o| o.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    Ok(BenchReport {
        label: opts.label.into(),
        host: opts.host.into(),
        measured_at: first_line(xshell::cmd!(sh, "date -u +%Y-%m-%dT%H:%MZ")),
        kernel: first_line(xshell::cmd!(sh, "uname -r")),
        runsc_version: opts
            .runsc
            .map(|runsc| first_line(xshell::cmd!(sh, "{runsc} --version"))),
        pinned_cpu: opts.pin,
        rounds: opts.rounds,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        rows,
        user_notif,
        syscalls_per_stop,
    })
}

/// The report as the markdown BENCHMARKS.md carries.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Measured {} on {}, {}, load {}, in {}; best of {} rounds (runners interleaved). \
         Regenerate: `cargo xtask bench --host {} --update BENCHMARKS.md{}`.\n",
        r.measured_at,
        r.kernel,
        r.pinned_cpu.map_or("not pinned".to_string(), |c| format!(
            "everything pinned to CPU {c}"
        )),
        r.load_average,
        r.runsc_version.as_deref().unwrap_or("the host"),
        r.rounds,
        r.host,
        r.pinned_cpu
            .map_or(String::new(), |c| format!(" --pin {c}")),
    );
    let _ = writeln!(
        s,
        "| workload | native ns/op | launcher ns/op | launcher/native | floor ns/op | floor/native | launcher/floor | strace ns/op | strace/native |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.2}x | **{:.2}x** | {:.1} | {:.2}x |",
            row.workload,
            row.native_ns,
            row.launcher_ns,
            row.launcher_ns / row.native_ns,
            row.floor_ns,
            row.floor_ns / row.native_ns,
            row.launcher_over_floor(),
            row.strace_ns,
            row.strace_ns / row.native_ns
        );
    }
    let _ = writeln!(
        s,
        "\nFloors: {}.",
        r.rows
            .iter()
            .map(|row| row.floor.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(s, "\nSECCOMP_RET_USER_NOTIF here: {}", r.user_notif);
    if !r.syscalls_per_stop.is_empty() {
        let _ = writeln!(
            s,
            "\nThe launcher's syscalls per stop (`strace -c` on the launcher, 10000 iterations):\n"
        );
        for line in &r.syscalls_per_stop {
            let _ = writeln!(s, "- {line}");
        }
    }
    s
}

/// Replace the text between `<!-- bench:LABEL -->` and `<!-- /bench:LABEL -->` in `file`.
pub fn update(file: &Path, label: &str, table: &str) -> Result<()> {
    crate::fsutil::replace_between_markers(file, &format!("bench:{label}"), table)
}
