//! CNI specification versions this plugin speaks, and which commands each one has.

use crate::error::{code, CniError, Result};

/// Versions we accept in `cniVersion`, oldest first. 0.4.0 is for older runtimes; 1.1.0 added
/// STATUS and GC.
pub const SUPPORTED: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The newest version we speak; used when a request is too broken to tell us its version.
pub const NEWEST: &str = "1.1.0";

/// A validated spec version from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecVersion {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "0.4.0" => Ok(SpecVersion::V0_4_0),
            "1.0.0" => Ok(SpecVersion::V1_0_0),
            "1.1.0" => Ok(SpecVersion::V1_1_0),
            other => Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("unsupported cniVersion {other:?}"),
                format!(
                    "this plugin supports {}; set cniVersion in the network config to one of them",
                    SUPPORTED.join(", ")
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// 0.4.0 results tag each IP with `"version": "4"|"6"`; 1.0.0 removed the field.
    pub fn ip_has_version_field(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// STATUS and GC were introduced in 1.1.0; older configs must not receive them.
    pub fn has_status_and_gc(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_versions_round_trip_and_unknown_is_code_1() {
        for v in SUPPORTED {
            assert_eq!(SpecVersion::parse(v).unwrap().as_str(), *v);
        }
        let err = SpecVersion::parse("0.3.1").unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        assert!(err.details.contains("1.1.0"));
    }
}
