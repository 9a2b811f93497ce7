//! Host and pod network plumbing through `ip`, `ethtool`, `sysctl` and
//! `nsenter`.
//!
//! Every change inside the pod's namespace runs as a child process under
//! `nsenter --net=NETNS`, so this (possibly multithreaded) process never
//! calls setns(2), which moves only the calling thread. A failed command is
//! an I/O error (code 5) quoting the command and its stderr. Nothing here
//! panics.

use std::process::Command;

use serde_json::Value;

use crate::error::*;

/// Run `prog args...`; stdout on success.
pub fn run(prog: &str, args: &[&str]) -> CniResult<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| CniError::new(IO_FAILURE, format!("cannot run {prog}: {e}")))?;
    if !out.status.success() {
        return Err(CniError::new(
            IO_FAILURE,
            format!(
                "`{prog} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `prog args...` inside the network namespace at `netns`.
pub fn run_in(netns: &str, prog: &str, args: &[&str]) -> CniResult<String> {
    let ns = format!("--net={netns}");
    let mut a: Vec<&str> = vec![&ns, prog];
    a.extend_from_slice(args);
    run("nsenter", &a)
}

/// `ip -j link show dev NAME` (in `netns`, or the host), parsed; None when
/// the interface does not exist.
pub fn link_show(netns: Option<&str>, name: &str) -> CniResult<Option<Value>> {
    let args = ["-j", "link", "show", "dev", name];
    let r = match netns {
        Some(ns) => run_in(ns, "ip", &args),
        None => run("ip", &args),
    };
    match r {
        Ok(out) => {
            let v: Value = serde_json::from_str(&out)
                .map_err(|e| CniError::new(IO_FAILURE, format!("`ip -j link show {name}`: {e}")))?;
            Ok(v.as_array().and_then(|a| a.first()).cloned())
        }
        Err(e) if e.msg.contains("does not exist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// `ip -j -4 addr show dev NAME` in `netns`: the CIDRs.
pub fn addrs(netns: &str, name: &str) -> CniResult<Vec<String>> {
    let out = run_in(netns, "ip", &["-j", "-4", "addr", "show", "dev", name])?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| CniError::new(IO_FAILURE, format!("`ip -j addr show {name}`: {e}")))?;
    let mut r = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if let (Some(ip), Some(p)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                r.push(format!("{ip}/{p}"));
            }
        }
    }
    Ok(r)
}

/// `ip -j -4 route show dev NAME` in `netns`: (dst, gateway) pairs, with
/// `default` spelled `0.0.0.0/0` and host routes given their `/32`.
pub fn routes(netns: &str, name: &str) -> CniResult<Vec<(String, Option<String>)>> {
    let out = run_in(netns, "ip", &["-j", "-4", "route", "show", "dev", name])?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| CniError::new(IO_FAILURE, format!("`ip -j route show {name}`: {e}")))?;
    let mut r = Vec::new();
    for rt in v.as_array().into_iter().flatten() {
        let Some(dst) = rt["dst"].as_str() else {
            continue;
        };
        let dst = match dst {
            "default" => "0.0.0.0/0".to_string(),
            d if d.contains('/') => d.to_string(),
            d => format!("{d}/32"),
        };
        r.push((dst, rt["gateway"].as_str().map(str::to_string)));
    }
    Ok(r)
}

/// Whether `path` names a network namespace we can enter.
pub fn netns_exists(path: &str) -> bool {
    std::fs::metadata(path).is_ok()
}

/// Delete a host interface; Ok when it is already gone.
pub fn link_del(name: &str) -> CniResult<()> {
    match run("ip", &["link", "del", "dev", name]) {
        Ok(_) => Ok(()),
        Err(e) if e.msg.contains("Cannot find device") || e.msg.contains("does not exist") => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
