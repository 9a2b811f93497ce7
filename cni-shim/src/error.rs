//! CNI errors: the spec's error object and codes (CNI SPEC.md 1.1.0 "Error").
//!
//! Every failure of the plugin becomes one [`CniError`], printed on stdout as
//! `{"cniVersion","code","msg","details"}` with a non-zero exit status. Codes
//! below 100 are the spec's well-known ones; 100 and up are ours
//! (docs/cni.md lists them). Nothing here may panic.

use serde_json::{json, Value};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in network configuration (message names key and value).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables (message names them).
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content.
pub const DECODE_FAILURE: u32 = 6;
/// Invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// The plugin is not available (cannot serve ADD).
pub const NOT_AVAILABLE: u32 = 50;
/// Not available, and existing containers may have limited connectivity.
pub const NOT_AVAILABLE_LIMITED: u32 = 51;
/// switchd rejected a request.
pub const SWITCHD_ERROR: u32 = 100;
/// The delegated IPAM plugin failed.
pub const IPAM_ERROR: u32 = 101;
/// ADD for an attachment that already exists.
pub const ATTACHMENT_EXISTS: u32 = 102;
/// CHECK found differences.
pub const CHECK_FAILED: u32 = 103;

/// A CNI error result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    /// The spec's error code.
    pub code: u32,
    /// Short message: what went wrong and what to fix.
    pub msg: String,
    /// Longer details (command output, the offending input...).
    pub details: String,
}

impl CniError {
    /// An error without details.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Add details.
    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    /// The error object in the given cniVersion (the shape is the same in
    /// every version since 0.1.0; `details` is omitted when empty).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// Shorthand for results of this crate.
pub type CniResult<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_shape() {
        let e = CniError::new(INVALID_CONFIG, "mtu must be 68..65535, got 9").details("in \"mtu\"");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion":"1.0.0","code":7,"msg":"mtu must be 68..65535, got 9","details":"in \"mtu\""})
        );
        let e = CniError::new(TRY_AGAIN_LATER, "switchd unreachable");
        let v = e.to_json("0.4.0");
        assert_eq!(v["code"], 11);
        assert!(v.get("details").is_none());
    }
}
