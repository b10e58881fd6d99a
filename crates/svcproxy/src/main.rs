//! svcproxy: the service proxy of k3s-gvisor. See `svcproxy --help`, docs/services.md, and
//! ARCHITECTURE.md for why it exists and how it was chosen.
//!
//! Modules, one job each:
//! - `cli`: the command line;
//! - `proxy`: the process's life (connect, wait, sync loop, signals);
//! - `watch`: Services and EndpointSlices mirrored from the API;
//! - `model`: API objects to per-port plans and the sockets they need (pure, unit-tested);
//! - `loadbalancer`: LoadBalancer Services' status (node addresses), as k3s's servicelb;
//! - `reconcile`: one sync, the node made to match the plans;
//! - `addresses`: ClusterIPs on the bridge (through the shared `netif` crate), node addresses;
//! - `limits`: the caps on UDP flows and TCP connections;
//! - `listeners`: the running sockets; `tcp`, `udp`: the forwarding; `balancer`: endpoint picks;
//! - `status`: the --status-file; `log`: logging and throttled warnings.

mod addresses;
mod balancer;
mod cli;
mod limits;
mod listeners;
mod loadbalancer;
mod log;
mod model;
mod proxy;
mod reconcile;
mod status;
mod tcp;
mod udp;
mod watch;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    if let Err(e) = log::init(&args.log_level) {
        eprintln!("svcproxy: {e:#}");
        std::process::exit(2);
    }
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("svcproxy: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(proxy::run(args)) {
        eprintln!("svcproxy: error: {}", log::one_line(e.as_ref()));
        std::process::exit(1);
    }
}

/// Every proxied TCP connection holds two descriptors and every UDP flow one; the usual soft
/// limit of 1024 would cap the proxy at a few hundred connections. Raise it to the hard limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The open-file soft limit now (after raise_open_file_limit).
pub fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}
