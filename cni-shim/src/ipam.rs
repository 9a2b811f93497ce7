//! IPAM delegation (CNI SPEC.md "Delegated plugins"): exec the plugin named
//! by `ipam.type` from CNI_PATH with our environment (CNI_COMMAND replaced,
//! CNI_ARGS such as `IP=` passed through) and our configuration on stdin.
//!
//! The IPAM plugin may speak older versions than the configuration (Debian's
//! host-local 1.1.1 stops at 1.0.0): it is asked VERSION first and the
//! request goes out in the configuration's version if it supports it, else
//! in the newest version both support; the answer is decoded whatever its
//! version. An IPAM error is passed on with its message (code 101).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::config::{supported, version_cmp, SUPPORTED_VERSIONS};
use crate::error::*;
use crate::result::CniResultBody;

/// Find `plugin` in the `:`-separated CNI_PATH.
pub fn find_plugin(cni_path: &str, plugin: &str) -> CniResult<PathBuf> {
    for dir in cni_path.split(':').filter(|d| !d.is_empty()) {
        let p = PathBuf::from(dir).join(plugin);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(CniError::new(
        INVALID_CONFIG,
        format!("IPAM plugin {plugin:?} not found in CNI_PATH {cni_path:?}"),
    ))
}

/// Run a plugin with `command` and `stdin`; its stdout parsed, or its error.
fn exec(bin: &PathBuf, command: &str, stdin: &Value, env: &[(&str, &str)]) -> CniResult<Value> {
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(IO_FAILURE, format!("cannot run {}: {e}", bin.display())))?;
    let input = serde_json::to_vec(stdin).unwrap_or_default();
    if let Some(mut s) = child.stdin.take() {
        // A plugin that exits without reading stdin makes this fail with
        // EPIPE; its exit status and output below say what happened.
        let _ = s.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(IO_FAILURE, format!("{}: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(text.trim()).ok();
    if !out.status.success() {
        let (msg, details) = match &parsed {
            Some(v) => (
                v["msg"].as_str().unwrap_or("failed").to_string(),
                v["details"].as_str().unwrap_or_default().to_string(),
            ),
            None => (
                format!("exited with {}", out.status),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ),
        };
        return Err(CniError::new(
            IPAM_ERROR,
            format!("IPAM plugin {} {command}: {msg}", bin.display()),
        )
        .details(details));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    parsed.ok_or_else(|| {
        CniError::new(
            DECODE_FAILURE,
            format!(
                "IPAM plugin {} {command} printed invalid JSON",
                bin.display()
            ),
        )
        .details(text.into_owned())
    })
}

/// The version to delegate in: `want` when the IPAM plugin supports it,
/// else the newest version both it and we support.
pub fn pick_version(want: &str, theirs: &[String]) -> CniResult<String> {
    if theirs.iter().any(|v| v == want) {
        return Ok(want.to_string());
    }
    theirs
        .iter()
        .filter(|v| supported(v))
        .max_by(|a, b| version_cmp(a, b))
        .cloned()
        .ok_or_else(|| {
            CniError::new(
                INCOMPATIBLE_VERSION,
                format!(
                    "the IPAM plugin supports {theirs:?}, none of ours ({})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )
        })
}

/// A delegated IPAM plugin.
#[derive(Debug)]
pub struct Ipam {
    bin: PathBuf,
    version: String,
}

impl Ipam {
    /// Find the plugin and agree a version with it.
    pub fn new(cni_path: &str, plugin: &str, want: &str) -> CniResult<Ipam> {
        let bin = find_plugin(cni_path, plugin)?;
        let v = exec(&bin, "VERSION", &json!({ "cniVersion": want }), &[])?;
        let theirs: Vec<String> = v["supportedVersions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let version = pick_version(want, &theirs)?;
        Ok(Ipam { bin, version })
    }

    /// The configuration to hand over: ours with `cniVersion` replaced.
    pub fn conf(&self, raw: &Value) -> Value {
        let mut c = raw.clone();
        c["cniVersion"] = json!(self.version);
        c
    }

    /// ADD: the addresses.
    pub fn add(&self, raw: &Value) -> CniResult<CniResultBody> {
        let v = exec(&self.bin, "ADD", &self.conf(raw), &[])?;
        CniResultBody::decode(&v, "the IPAM result")
    }

    /// DEL: release. `attachment`: (container id, ifname) when releasing
    /// another attachment than this invocation's (GC).
    pub fn del(&self, raw: &Value, attachment: Option<(&str, &str)>) -> CniResult<()> {
        let env: Vec<(&str, &str)> = match attachment {
            Some((c, i)) => vec![("CNI_CONTAINERID", c), ("CNI_IFNAME", i)],
            None => Vec::new(),
        };
        exec(&self.bin, "DEL", &self.conf(raw), &env).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation() {
        let hl: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(pick_version("1.1.0", &hl).unwrap(), "1.0.0");
        assert_eq!(pick_version("0.4.0", &hl).unwrap(), "0.4.0");
        assert_eq!(pick_version("1.0.0", &hl).unwrap(), "1.0.0");
        let old = vec!["0.1.0".to_string(), "0.2.0".to_string()];
        assert_eq!(
            pick_version("1.0.0", &old).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
    }

    #[test]
    fn plugin_lookup_walks_cni_path() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join("host-local"), b"").unwrap();
        let path = format!("{}:{}", d1.path().display(), d2.path().display());
        assert_eq!(
            find_plugin(&path, "host-local").unwrap(),
            d2.path().join("host-local")
        );
        assert_eq!(
            find_plugin(&path, "static").unwrap_err().code,
            INVALID_CONFIG
        );
    }
}
