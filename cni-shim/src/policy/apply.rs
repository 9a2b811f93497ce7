//! Installing compiled flows in switchd, atomically.
//!
//! One connection to the control socket (switch::control::proto, the JSON
//! lines flowctl speaks), a `dump-flows` of the previous generation (by its
//! cookie tag), then one `bundle` request: `delete_strict` each old flow
//! whose table, priority and match are not in the new set, `add` every new
//! flow. An add that meets a flow with the same table, match and priority
//! replaces it keeping its counters (OpenFlow 1.3 without reset_counts), so
//! per-policy `n_packets` survive a re-apply that leaves a flow as it was.
//! When a new flow cannot be put in switchd's canonical form locally (this
//! build's parser lacks something switchd has), the bundle falls back to
//! deleting the whole generation by cookie and adding the new flows.
//! switchd applies a bundle all or nothing and publishes one new pipeline,
//! so packets see either the old policy or the new one, never a mix and
//! never a moment without default deny. Also resolves pod port names to OpenFlow
//! port numbers (`show`). The CNI plugin has a client of its own with CNI
//! error codes; this one reports [`PolicyError`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use std::collections::HashSet;

use serde_json::Value;
use switch::control::proto::{BundleMod, BundleOp, FlowEntry, Reply, Request};
use switch::flow::{format_match, parse_flow, ParseMode};

use super::compile::Flow;
use super::model::Inventory;
use super::PolicyError;

/// A request may wait for switchd to publish a pipeline; never forever.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to switchd.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connect to the control socket.
    pub fn connect(path: &str) -> Result<Client, PolicyError> {
        let un = |e: std::io::Error| PolicyError::Unreachable(format!("{path}: {e}"));
        let stream = UnixStream::connect(path).map_err(un)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(un)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(un)?;
        let reader = BufReader::new(stream.try_clone().map_err(un)?);
        Ok(Client { stream, reader })
    }

    /// One request; switchd's `ok` body.
    pub fn call(&mut self, req: &Request) -> Result<Value, PolicyError> {
        let un = |e: std::io::Error| PolicyError::Unreachable(e.to_string());
        let mut line = serde_json::to_vec(req).map_err(|e| PolicyError::Input(e.to_string()))?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(un)?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp).map_err(un)? == 0 {
            return Err(PolicyError::Unreachable(
                "switchd closed the connection".into(),
            ));
        }
        match serde_json::from_str::<Reply>(&resp) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Error(e)) => Err(PolicyError::Switchd(e.to_string())),
            Err(e) => Err(PolicyError::Unreachable(format!(
                "switchd's reply could not be decoded: {e}"
            ))),
        }
    }
}

/// Fill in `ofport` of local pods that name their switchd `port`, from
/// switchd's port list. A named port switchd does not have is an error (a
/// pod being deleted: the node agent should retry after the CNI DEL).
pub fn resolve_ports(
    client: &mut Client,
    bridge: &str,
    inv: &mut Inventory,
) -> Result<(), PolicyError> {
    if !inv
        .pods
        .iter()
        .any(|p| p.ofport.is_none() && p.port.is_some())
    {
        return Ok(());
    }
    let show = client.call(&Request::Show {
        bridge: bridge.to_string(),
    })?;
    let ports = show["ports"].as_array().cloned().unwrap_or_default();
    for pod in inv.pods.iter_mut().filter(|p| p.ofport.is_none()) {
        let Some(name) = pod.port.clone() else {
            continue;
        };
        let no = ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name.as_str()))
            .and_then(|p| p["ofport"].as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                PolicyError::Input(format!(
                    "pod {}: switchd has no port {name:?} on bridge {bridge}",
                    pod.id()
                ))
            })?;
        pod.ofport = Some(no);
    }
    Ok(())
}

/// The bundle replacing every flow whose cookie matches `cookie/mask` with
/// `flows`.
pub fn replace_bundle(cookie: u64, mask: u64, flows: &[Flow]) -> Vec<BundleMod> {
    let mut mods = vec![BundleMod {
        op: BundleOp::Delete,
        flow: format!("cookie={cookie:#x}/{mask:#x}"),
    }];
    mods.extend(flows.iter().map(|f| BundleMod {
        op: BundleOp::Add,
        flow: f.to_string(),
    }));
    mods
}

/// (table, priority, match) of a flow as switchd prints it.
type FlowKey = (u8, u16, String);

fn key_of(f: &Flow) -> Option<FlowKey> {
    let spec = parse_flow(&f.to_string(), ParseMode::Add).ok()?;
    Some((
        spec.table.unwrap_or(0),
        spec.priority,
        format_match(&spec.matches),
    ))
}

/// The bundle that turns `current` (switchd's flows of the generation)
/// into `flows`, keeping the counters of flows that stay: delete_strict
/// the ones that go, add all. `None` when a new flow cannot be keyed
/// locally (then use [`replace_bundle`]).
pub fn diff_bundle(current: &[FlowEntry], flows: &[Flow]) -> Option<Vec<BundleMod>> {
    let keys: HashSet<FlowKey> = flows.iter().map(key_of).collect::<Option<_>>()?;
    let mut mods: Vec<BundleMod> = current
        .iter()
        .filter(|c| !keys.contains(&(c.table, c.priority, c.match_.clone())))
        .map(|c| {
            let mut f = format!(
                "table={},priority={},cookie={:#x}/-1",
                c.table, c.priority, c.cookie
            );
            if !c.match_.is_empty() {
                f.push(',');
                f.push_str(&c.match_);
            }
            BundleMod {
                op: BundleOp::DeleteStrict,
                flow: f,
            }
        })
        .collect();
    mods.extend(flows.iter().map(|f| BundleMod {
        op: BundleOp::Add,
        flow: f.to_string(),
    }));
    Some(mods)
}

/// Replace, in one bundle, the flows of `cookie/mask` with `flows`;
/// switchd's counts (`added`, `deleted`...).
pub fn replace(
    client: &mut Client,
    bridge: &str,
    cookie: u64,
    mask: u64,
    flows: &[Flow],
) -> Result<Value, PolicyError> {
    let dumped = client.call(&Request::DumpFlows {
        bridge: bridge.to_string(),
        filter: Some(format!("cookie={cookie:#x}/{mask:#x}")),
    })?;
    let current: Vec<FlowEntry> = serde_json::from_value(dumped["flows"].clone())
        .map_err(|e| PolicyError::Unreachable(format!("dump-flows reply: {e}")))?;
    let mods = diff_bundle(&current, flows).unwrap_or_else(|| replace_bundle(cookie, mask, flows));
    client.call(&Request::Bundle {
        bridge: bridge.to_string(),
        mods,
    })
}
