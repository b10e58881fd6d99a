//! Logging: one line per event on stderr (the installer sends it to a log file), and a
//! throttle so that a fault repeated by every connection (an endpoint that refuses, a full
//! flow table) is logged once per period, with the count of what was not logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;

/// `level` is a tracing filter (`info`, `debug`, `svcproxy=debug,kube=warn`, ...). The kube
/// client's own logs are kept at warn unless the filter names them.
pub fn init(level: &str) -> anyhow::Result<()> {
    let filter = if level.contains('=') {
        EnvFilter::try_new(level)
    } else {
        EnvFilter::try_new(format!("warn,svcproxy={level}"))
    }
    .map_err(|e| anyhow::anyhow!("--log-level {level:?} is not a valid filter: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    Ok(())
}

/// Lets one message through per `period`; counts the rest.
pub struct Throttle {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(period: Duration) -> Self {
        Throttle {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a message may be logged now, `n` being how many were held back since the
    /// last one; `None` when this one should be dropped.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap();
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if at.elapsed() < self.period => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(Instant::now());
                Some(std::mem::take(suppressed))
            }
        }
    }
}

/// An error and its causes on one line, each cause once (many errors repeat their source in
/// their own message).
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_passes_one_message_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_millis(100));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(throttle.allow(), Some(2));
    }
}
