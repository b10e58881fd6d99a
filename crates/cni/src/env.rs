//! The CNI_* environment: which command to run and on which attachment.

use crate::error::{CniError, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::invalid_env(
                    format!("unknown CNI_COMMAND {other:?}"),
                    "expected one of ADD, DEL, CHECK, VERSION, STATUS, GC",
                ))
            }
        })
    }
}

/// One attachment is identified by (container ID, interface name); the spec calls this the
/// attachment key, and the IPAM store is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The per-attachment part of the environment (ADD, DEL, CHECK).
#[derive(Debug, Clone)]
pub struct AttachmentEnv {
    pub attachment: Attachment,
    /// Path of the network namespace. Optional only for DEL, where the namespace may be gone.
    pub netns: Option<String>,
}

/// Reads the variables `command` needs from `vars`, validating them as the spec requires.
pub fn attachment_env(command: Command, vars: &HashMap<String, String>) -> Result<AttachmentEnv> {
    let required = |name: &str| -> Result<String> {
        match vars.get(name).map(String::as_str) {
            Some(value) if !value.is_empty() => Ok(value.to_string()),
            _ => Err(CniError::invalid_env(
                format!("{name} is not set"),
                format!("CNI_COMMAND={command:?} needs {name}; the container runtime must set it"),
            )),
        }
    };
    let container_id = required("CNI_CONTAINERID")?;
    validate_container_id(&container_id)?;
    let ifname = required("CNI_IFNAME")?;
    validate_ifname(&ifname)?;
    let netns = match command {
        Command::Del => vars.get("CNI_NETNS").filter(|v| !v.is_empty()).cloned(),
        _ => Some(required("CNI_NETNS")?),
    };
    Ok(AttachmentEnv {
        attachment: Attachment {
            container_id,
            ifname,
        },
        netns,
    })
}

/// Reads CNI_COMMAND.
pub fn command(vars: &HashMap<String, String>) -> Result<Command> {
    match vars.get("CNI_COMMAND") {
        Some(text) => Command::parse(text),
        None => Err(CniError::invalid_env(
            "CNI_COMMAND is not set",
            "this program is a CNI plugin: it is run by a container runtime (or cnitool) with CNI_COMMAND and the network config on stdin",
        )),
    }
}

/// Spec: "ASCII alphanumeric, underscore, period and hyphen, starting with an alphanumeric".
/// The IPAM store uses the ID in file names, so this check also keeps paths safe.
fn validate_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            format!("invalid CNI_CONTAINERID {id:?}"),
            "a container ID must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        ))
    }
}

/// The kernel's rules for interface names (dev_valid_name): 1..=15 bytes, not "." or "..",
/// no '/', ':' or whitespace.
fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            format!("invalid CNI_IFNAME {name:?}"),
            "an interface name must be 1 to 15 bytes without '/', ':' or whitespace, and not '.' or '..'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn add_needs_netns_but_del_does_not() {
        let base = [("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")];
        let err = attachment_env(Command::Add, &vars(&base)).unwrap_err();
        assert_eq!(err.code, crate::error::code::INVALID_ENV);
        assert!(err.msg.contains("CNI_NETNS"));
        let del = attachment_env(Command::Del, &vars(&base)).unwrap();
        assert_eq!(del.netns, None);
    }

    #[test]
    fn rejects_ids_and_names_that_could_escape_the_store() {
        for bad in ["../x", "a/b", "-a", ""] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
        for bad in ["..", "a/b", "a:b", "sixteen-chars-xx", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
        validate_container_id("cnitool-0a1b.c_d").unwrap();
        validate_ifname("eth0").unwrap();
    }
}
