//! What the pipeline tells the person running it: one line per step, progress bars only on a
//! terminal, and nothing animated when output goes to a log or CI.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A stage's one-line report: `[fetch] runc v1.3.3: cached`.
pub fn step(stage: &str, msg: impl AsRef<str>) {
    eprintln!("[{stage}] {}", msg.as_ref());
}

/// A byte-counting bar for downloads; hidden when stderr is not a terminal.
pub fn bytes_bar(len: Option<u64>, label: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if !is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// A spinner for long work without a measurable size (go build, go mod download).
pub fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if is_terminal() {
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    bar.set_message(label.to_string());
    bar
}
