//! `launcher --procsys DIR [--log FILE] -- COMMAND ARGS...`
//!
//! Runs COMMAND so that every access to `/proc/sys/X` by it or any descendant is served from
//! `DIR/X` when that exists. Only path-taking syscalls stop the tracee (a seccomp filter returns
//! SECCOMP_RET_TRACE for them); everything else runs at native speed.
//!
//! Map of the code:
//! - [`syscalls`]: which syscalls are traced, their argument layout, the BPF filter;
//! - [`spawn`]: fork, PTRACE_SEIZE, install the filter, exec;
//! - [`tracer`]: the waitpid loop and the handling of each kind of stop;
//! - [`redirect`]: at a path syscall's stop, which path (if any) replaces the tracee's;
//! - [`procsys_path`] / [`procsys_dir`]: is a path in /proc/sys, and what replaces it in DIR;
//! - [`fs_context`]: what is remembered about each thread's root and cwd, and until when;
//! - [`scratch`] / [`tracee_memory`]: where the new path is written in the tracee;
//! - [`signals`]: forwarding signals to the command and ending like it did.

mod fs_context;
mod log;
mod procsys_dir;
mod procsys_path;
mod redirect;
mod scratch;
mod signals;
mod spawn;
mod syscalls;
mod tracee_memory;
mod tracer;

use anyhow::{Context, Result};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

/// Set (to anything) to access tracee memory with PTRACE_PEEKDATA/POKEDATA only, instead of
/// process_vm_readv/writev.
const PEEK_POKE_ENV: &str = "LAUNCHER_PEEK_POKE";

#[derive(Parser)]
#[command(
    version,
    about = "Run a command with /proc/sys/X served from DIR/X where that exists (ptrace + seccomp)"
)]
struct Cli {
    /// Replacement tree: /proc/sys/X is redirected to DIR/X when DIR/X exists.
    #[arg(long, value_name = "DIR")]
    procsys: PathBuf,
    /// Append one line per redirect (and refused redirect) to FILE.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The command to run, and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(tracer::Exit::Code(code)) => std::process::exit(code),
        Ok(tracer::Exit::Signal(sig)) => signals::die_like(sig),
        Err(e) => {
            eprintln!("launcher: {e:#}");
            std::process::exit(127);
        }
    }
}

fn run(cli: Cli) -> Result<tracer::Exit> {
    let dir = procsys_dir::ProcSysDir::new(&cli.procsys)?;
    let mut log = log::Log::open(cli.log.as_deref())?;
    if std::env::var_os(PEEK_POKE_ENV).is_some() {
        tracee_memory::force_peek_poke();
    }
    let filter = syscalls::build_filter()?;
    let child = spawn::spawn_traced(&cli.command, &filter)?;
    if let Some(note) = child.filter_install.fallback_note() {
        log.line(format_args!("{note}"));
    }
    signals::forward_to(child.pid.as_raw()).context("installing signal forwarding")?;
    let exit = tracer::Tracer::new(dir, log, child.pid)?.run()?;
    if exit == tracer::Exit::Code(127) {
        if let Some(reason) = child.startup_error() {
            anyhow::bail!("{reason}");
        }
    }
    Ok(exit)
}
