//! `keeper --name NAME --log FILE --status FILE -- PROGRAM ARGS...`: keeps PROGRAM running
//! (lib.rs says how). The installer starts one per daemon; not meant to be run by hand.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Keep one daemon of a k3s-gvisor install running: restart it when it exits, rotate its log
/// (run by `./install start` for every daemon; not meant to be run by hand).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The daemon's name, in the keeper's log lines.
    #[arg(long)]
    name: String,
    /// Where the daemon's output goes (rotated by size).
    #[arg(long)]
    log: PathBuf,
    /// Where the keeper writes the daemon's pid, restarts and last exit (JSON), for `status`.
    #[arg(long)]
    status: PathBuf,
    /// The first wait before a restart (doubles up to --max-backoff-ms); for tests.
    #[arg(long, default_value_t = keeper::FIRST_BACKOFF.as_millis() as u64)]
    first_backoff_ms: u64,
    #[arg(long, default_value_t = keeper::MAX_BACKOFF.as_millis() as u64)]
    max_backoff_ms: u64,
    /// The daemon and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    keeper::run(&keeper::Keep {
        name: args.name,
        log_file: args.log,
        status_file: args.status,
        program: PathBuf::from(&args.command[0]),
        args: args.command[1..].to_vec(),
        first_backoff: Duration::from_millis(args.first_backoff_ms),
        max_backoff: Duration::from_millis(args.max_backoff_ms),
    })
}
