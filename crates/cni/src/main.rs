//! gvisor-cni: a CNI plugin (type "gvisor-cni") for pods inside a gVisor sandbox.
//!
//! The runtime runs us with CNI_* variables and the network config on stdin; we print a
//! result or the spec's error JSON on stdout and exit non-zero on error. See docs/cni.md.
//!
//! Module map: `env` (CNI_* variables), `version` (spec versions), `config` (stdin config),
//! `commands` (ADD/DEL/CHECK/VERSION/STATUS/GC), `ipam` (address store), `wiring` (what is
//! done in the pod namespace), `netns` (entering the pod's namespace; links, addresses and routes
//! through the shared `netif` crate), `result`
//! (success JSON), `error` (error JSON).

mod commands;
mod config;
mod env;
mod error;
mod ipam;
mod netns;
mod result;
mod version;
mod wiring;

use crate::env::Command;
use crate::error::{CniError, Result};
use crate::version::SpecVersion;
use std::collections::HashMap;
use std::io::{Read, Write};

const HELP: &str = "gvisor-cni: a CNI plugin (spec 0.4.0, 1.0.0, 1.1.0) with host-local style IPAM.
A container runtime (or cnitool) runs it with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC,
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH in the environment and the network config
on stdin; the result or error JSON goes to stdout. Config keys: see docs/cni.md.";

fn main() {
    if matches!(std::env::args().nth(1).as_deref(), Some("-h" | "--help")) {
        println!("{HELP}");
        return;
    }
    let vars: HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let (reply_version, outcome) = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&vars, &stdin),
        Err(e) => (
            version::NEWEST.to_string(),
            Err(CniError::io("reading the network config from stdin", e)),
        ),
    };
    let (text, exit_code) = match outcome {
        Ok(Some(value)) => (value.to_string(), 0),
        Ok(None) => (String::new(), 0),
        Err(e) => (e.to_json(&reply_version), 1),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    std::process::exit(exit_code);
}

/// Returns the cniVersion to answer in, and the outcome.
fn run(
    vars: &HashMap<String, String>,
    stdin: &[u8],
) -> (String, Result<Option<serde_json::Value>>) {
    let command = match env::command(vars) {
        Ok(c) => c,
        Err(e) => return (version::NEWEST.to_string(), Err(e)),
    };
    let value: serde_json::Value = match serde_json::from_slice(stdin) {
        Ok(v) => v,
        Err(e) => {
            let err = CniError::decode(
                "the network config on stdin is not valid JSON",
                format!(
                    "{e}; the runtime must write the network config JSON to the plugin's stdin"
                ),
            );
            return (version::NEWEST.to_string(), Err(err));
        }
    };
    let requested = value
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    // VERSION answers whatever was asked: it is how callers discover what we support.
    if command == Command::Version {
        let reply = if requested.is_empty() {
            version::NEWEST.to_string()
        } else {
            requested
        };
        return (reply.clone(), Ok(Some(commands::version(&reply))));
    }
    let reply_version = if requested.is_empty() {
        version::NEWEST.to_string()
    } else {
        requested.clone()
    };
    (reply_version, dispatch(command, vars, &requested, value))
}

fn dispatch(
    command: Command,
    vars: &HashMap<String, String>,
    requested: &str,
    value: serde_json::Value,
) -> Result<Option<serde_json::Value>> {
    let version = SpecVersion::parse(requested)?;
    let conf = config::NetConf::parse(version, value)?;
    match command {
        Command::Add => commands::add(&conf, &env::attachment_env(command, vars)?).map(Some),
        Command::Del => commands::del(&conf, &env::attachment_env(command, vars)?).map(|()| None),
        Command::Check => {
            commands::check(&conf, &env::attachment_env(command, vars)?).map(|()| None)
        }
        Command::Status => {
            commands::require_1_1(version, "STATUS")?;
            commands::status(&conf).map(|()| None)
        }
        Command::Gc => {
            commands::require_1_1(version, "GC")?;
            commands::gc(&conf).map(|()| None)
        }
        Command::Version => unreachable!("answered before the config is validated"),
    }
}
