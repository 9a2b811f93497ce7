//! ferroswitch: the CNI plugin that attaches pods to switchd (CNI SPEC.md
//! 1.1.0, also reading 0.3.x, 0.4.0 and 1.0.0 configurations).
//!
//! A runtime execs this binary with CNI_COMMAND and the other `CNI_*`
//! variables set and the network configuration on stdin. The result (ADD,
//! VERSION) or error object goes to stdout, in the configuration's
//! cniVersion; diagnostics go to stderr. The exit status is 0 on success and
//! 1 on any error. The binary must never panic on input: every failure is a
//! CNI error with the spec's code. docs/cni.md is the user reference.

mod cmd;
mod config;
mod error;
mod ipam;
mod names;
mod result;
mod state;
mod switchd;
mod sys;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{json, Value};

// The per-pod flows live in the library (the policy compiler tests run them).
use cni_shim::flows;
use config::{Env, NetConf, SUPPORTED_VERSIONS};
use error::*;

/// Run one command; the JSON to print on success (None: print nothing).
fn run(env: &Env, stdin: &[u8]) -> CniResult<Option<Value>> {
    match env.command.as_str() {
        "VERSION" => {
            // The runtime says which version it speaks; answer in it.
            let want = serde_json::from_slice::<Value>(stdin)
                .ok()
                .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
                .unwrap_or_else(|| "1.1.0".into());
            Ok(Some(json!({
                "cniVersion": want,
                "supportedVersions": SUPPORTED_VERSIONS,
            })))
        }
        "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" => {
            let v = config::decode(stdin)?;
            let need_ipam = env.command != "STATUS";
            let conf = NetConf::parse(v, need_ipam)?;
            match env.command.as_str() {
                "ADD" => cmd::add(&conf, env).map(Some),
                "DEL" => cmd::del(&conf, env).map(|_| None),
                "CHECK" => cmd::check(&conf, env).map(|_| None),
                "GC" => cmd::gc(&conf, env).map(|_| None),
                _ => cmd::status(&conf).map(|_| None),
            }
        }
        "" => Err(CniError::new(
            INVALID_ENV,
            "CNI_COMMAND is not set (ADD, DEL, CHECK, GC, STATUS or VERSION)",
        )),
        other => Err(CniError::new(
            INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )),
    }
}

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are written in the configuration's version when it has one we
    // know, else in our newest.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| config::supported(v))
        .unwrap_or_else(|| "1.1.0".into());
    let outcome = match read {
        Err(e) => Err(CniError::new(IO_FAILURE, format!("cannot read stdin: {e}"))),
        Ok(_) => run(&env, &stdin),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferroswitch {}: {e}", env.command);
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
