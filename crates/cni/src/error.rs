//! The CNI error result: a code from the spec, a message and details.
//!
//! Every failure the plugin can hit is turned into one of these and printed on stdout as the
//! spec's error JSON, then the process exits non-zero. The codes are the ones the CNI spec
//! reserves (SPEC.md, "Error"); callers such as libcni and containerd branch on them.

use serde::Serialize;
use std::fmt;

/// Error codes reserved by the CNI specification (the whole table, for reference; not every
/// one has a cause in this plugin).
#[allow(dead_code)]
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

pub type Result<T> = std::result::Result<T, CniError>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn invalid_env(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg, details)
    }

    pub fn invalid_config(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg, details)
    }

    pub fn decode(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(code::DECODE_FAILURE, msg, details)
    }

    /// An I/O failure on `what` (a path or an operation), keeping the OS error text.
    pub fn io(what: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self::new(
            code::IO_FAILURE,
            format!("I/O error: {what}"),
            err.to_string(),
        )
    }

    /// The error JSON the spec defines. `cniVersion` is the version the caller asked for
    /// (or the newest we speak when the request could not even be decoded).
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&wire).expect("error JSON always serializes")
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
