//! Signals: what the launcher receives goes to the command; how the command ended is how the
//! launcher ends.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};

/// Signals a supervisor or terminal sends to stop, reload or resize a program.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

static COMMAND_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = COMMAND_PID.load(Ordering::Relaxed);
    // pid 0 or -1 would signal a whole group: never do that.
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// From now on, the forwarded signals go to `pid`. SA_RESTART keeps waitpid going.
pub fn forward_to(pid: i32) -> nix::Result<()> {
    COMMAND_PID.store(pid, Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &sig in FORWARDED {
        // SAFETY: the handler only loads an atomic and calls kill.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// Ends the launcher the way the command ended: killed by `sig` (re-raised on ourselves with
/// the default action, without a core dump of the launcher), or, if that does not kill us,
/// with the shell's convention 128+sig.
pub fn die_like(sig: i32) -> ! {
    // SAFETY: plain libc calls on our own process.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}
