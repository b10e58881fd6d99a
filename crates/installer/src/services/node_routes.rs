//! Starting `installer node-routes`, the daemon that keeps routes to the other nodes' pod
//! ranges (its own code is crate::node_routes).

use anyhow::Result;

use super::{daemon, daemon_env, NODE_ROUTES};
use crate::paths::Paths;

/// Starts `installer node-routes` (if not running).
pub fn start(paths: &Paths) -> Result<()> {
    let daemon = daemon(paths, NODE_ROUTES);
    if let Some(pid) = daemon.running_pid() {
        println!("node-routes already running (pid {pid})");
        return Ok(());
    }
    let args = vec![
        "node-routes".to_string(),
        "--data-dir".to_string(),
        paths.data_dir.display().to_string(),
    ];
    let pid = daemon.start(&paths.bin("installer"), &args, &daemon_env(paths))?;
    println!(
        "node-routes started (pid {pid}): routes other nodes' pod ranges via their node IPs, \
         log {}",
        daemon.log_file.display()
    );
    Ok(())
}
