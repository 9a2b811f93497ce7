//! The control protocol: newline-delimited JSON over a Unix socket.
//!
//! One request per line, one reply per line, in order. These types are the
//! only definition of the protocol: switchd, flowctl and cni-shim all use
//! them. Flows travel as ovs-ofctl text and are parsed by switchd, so an
//! error always comes back from the one parser that matters, with the
//! offending token quoted.
//!
//! A request: `{"cmd":"add-flow","bridge":"br0","flow":"priority=10,actions=drop"}`.
//! A reply: `{"ok":{...}}` or `{"error":{"code":"bad-flow","message":"...","input":"..."}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::port::PortStats;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/ferroswitch/switchd.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferroswitch";
/// Largest request line switchd accepts (a whole add-flows batch fits).
pub const MAX_REQUEST: usize = 64 << 20;

/// The flow-mod kind inside a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BundleOp {
    /// Add.
    Add,
    /// Modify (non-strict).
    Modify,
    /// Modify (strict).
    ModifyStrict,
    /// Delete (non-strict).
    Delete,
    /// Delete (strict).
    DeleteStrict,
}

/// One flow-mod of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleMod {
    /// What to do.
    pub op: BundleOp,
    /// The flow, in ovs-ofctl syntax.
    pub flow: String,
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Liveness and version.
    Hello,
    /// Add one flow.
    AddFlow {
        /// Bridge name.
        bridge: String,
        /// Flow text.
        flow: String,
    },
    /// Add several flows, all or nothing.
    AddFlows {
        /// Bridge name.
        bridge: String,
        /// Flow texts.
        flows: Vec<String>,
    },
    /// Modify flows' actions.
    ModFlows {
        /// Bridge name.
        bridge: String,
        /// Flow text (match selects, actions replace).
        flow: String,
        /// Exact match and priority instead of "covers".
        #[serde(default)]
        strict: bool,
    },
    /// Delete flows.
    DelFlows {
        /// Bridge name.
        bridge: String,
        /// Selection (None: every flow).
        #[serde(default)]
        flow: Option<String>,
        /// Exact match and priority instead of "covers".
        #[serde(default)]
        strict: bool,
    },
    /// List flows.
    DumpFlows {
        /// Bridge name.
        bridge: String,
        /// Selection (None: every flow).
        #[serde(default)]
        filter: Option<String>,
    },
    /// Make the flow table equal to `flows`, atomically.
    ReplaceFlows {
        /// Bridge name.
        bridge: String,
        /// The complete new flow set.
        flows: Vec<String>,
    },
    /// Apply several flow-mods all or nothing.
    Bundle {
        /// Bridge name.
        bridge: String,
        /// The flow-mods, in order.
        mods: Vec<BundleMod>,
    },
    /// Port counters.
    DumpPorts {
        /// Bridge name.
        bridge: String,
        /// One port (name or number), or all.
        #[serde(default)]
        port: Option<String>,
    },
    /// Table counters.
    DumpTables {
        /// Bridge name.
        bridge: String,
    },
    /// Bridge, ports and configuration.
    Show {
        /// Bridge name.
        bridge: String,
    },
    /// Trace a packet through the tables (ofproto/trace syntax).
    Trace {
        /// Bridge name.
        bridge: String,
        /// Packet description.
        packet: String,
    },
    /// Add a port.
    AddPort {
        /// Bridge name.
        bridge: String,
        /// Port name.
        name: String,
        /// Backend type (`memory`, ...).
        #[serde(rename = "type")]
        port_type: String,
        /// Requested OpenFlow port number (None: lowest free).
        #[serde(default)]
        ofport: Option<u32>,
        /// Backend options.
        #[serde(default)]
        options: BTreeMap<String, String>,
    },
    /// Remove a port.
    DelPort {
        /// Bridge name.
        bridge: String,
        /// Port name.
        name: String,
    },
    /// Hand frames to a memory port as if received on it.
    Inject {
        /// Bridge name.
        bridge: String,
        /// Port name or number.
        port: String,
        /// Frames as hex strings.
        frames: Vec<String>,
    },
    /// Take the frames a memory port transmitted.
    Capture {
        /// Bridge name.
        bridge: String,
        /// Port name or number.
        port: String,
        /// At most this many (None: all).
        #[serde(default)]
        max: Option<usize>,
    },
    /// Per polling thread: its CPU and the ports (rx queues) it polls with
    /// their share of its busy cycles (OVS `dpif-netdev/pmd-rxq-show`).
    PmdRxqShow {
        /// Bridge name.
        bridge: String,
    },
    /// Per polling thread: iterations, busy share, packets, cycles per packet,
    /// cache hit rates (OVS `dpif-netdev/pmd-perf-show`).
    PmdPerfShow {
        /// Bridge name.
        bridge: String,
    },
    /// The flows switchd's XDP program forwards in the kernel (AF_XDP
    /// ports with `xdp-offload=true`), with their counters and the offload
    /// decision counters.
    OffloadShow {
        /// Bridge name.
        bridge: String,
    },
    /// Add (or replace) a route: `[table=N] PREFIX via IP port=N [mac=MAC]
    /// [weight=W] [via ...]` (see `crate::route::Route::parse`).
    AddRoute {
        /// Bridge name.
        bridge: String,
        /// The route, in add-route syntax.
        route: String,
    },
    /// Delete a route: `[table=N] PREFIX`.
    DelRoute {
        /// Bridge name.
        bridge: String,
        /// `[table=N] PREFIX`.
        route: String,
    },
    /// List routes (one table, or all).
    DumpRoutes {
        /// Bridge name.
        bridge: String,
        /// Only this table.
        #[serde(default)]
        table: Option<u8>,
    },
    /// Add (or replace) a static neighbour.
    AddNeigh {
        /// Bridge name.
        bridge: String,
        /// Its IP address.
        ip: String,
        /// Its MAC.
        mac: String,
        /// The port it is behind (informational).
        #[serde(default)]
        port: Option<u32>,
    },
    /// Delete a neighbour.
    DelNeigh {
        /// Bridge name.
        bridge: String,
        /// Its IP address.
        ip: String,
    },
    /// List neighbours.
    DumpNeigh {
        /// Bridge name.
        bridge: String,
    },
    /// Set the router MAC routed packets leave with (per port, or the
    /// bridge default when `port` is None); `mac` None clears it.
    SetRouterMac {
        /// Bridge name.
        bridge: String,
        /// The MAC (None: clear).
        #[serde(default)]
        mac: Option<String>,
        /// The egress port (None: the default for every port).
        #[serde(default)]
        port: Option<u32>,
    },
    /// Re-assign ports to polling threads by the configured policy
    /// (OVS `dpif-netdev/pmd-rxq-rebalance`).
    PmdRxqRebalance {
        /// Bridge name.
        bridge: String,
    },
    /// The MAC learning table of NORMAL (OVS `fdb/show`).
    FdbShow {
        /// Bridge name.
        bridge: String,
    },
    /// Empty the MAC learning table (OVS `fdb/flush`).
    FdbFlush {
        /// Bridge name.
        bridge: String,
    },
    /// The connection tracker's connections (OVS `dpctl/dump-conntrack`),
    /// of one zone and/or with one address as an endpoint.
    CtShow {
        /// Bridge name.
        bridge: String,
        /// Only this zone.
        #[serde(default)]
        zone: Option<u16>,
        /// Only connections with this address as source or destination.
        #[serde(default)]
        addr: Option<String>,
    },
    /// Forget connections (OVS `dpctl/flush-conntrack`), of one zone or all.
    CtFlush {
        /// Bridge name.
        bridge: String,
        /// Only this zone.
        #[serde(default)]
        zone: Option<u16>,
    },
    /// The connection tracker's counters, limit and timeouts.
    CtStats {
        /// Bridge name.
        bridge: String,
    },
    /// Change bridge settings: `mac-aging-time` (seconds) and
    /// `mac-table-size` (entries), like OVS's bridge `other_config`.
    SetBridge {
        /// Bridge name.
        bridge: String,
        /// key → value.
        settings: BTreeMap<String, String>,
    },
    /// A group-mod in ovs-ofctl group syntax (`add-group`, `mod-group`,
    /// `insert-buckets`, `remove-buckets`, `del-groups`; see `crate::group`).
    GroupMod {
        /// Bridge name.
        bridge: String,
        /// Which command.
        op: GroupOp,
        /// The group text (`group_id=1,type=select,bucket=...`); empty for
        /// `del-groups` of every group.
        #[serde(default)]
        group: String,
    },
    /// The groups (`dump-groups`), with counters (`dump-group-stats`).
    DumpGroups {
        /// Bridge name.
        bridge: String,
        /// Only this group.
        #[serde(default)]
        group: Option<u32>,
    },
    /// The tunnel ports' underlay neighbour (ARP) caches
    /// (OVS `ovs-appctl tnl/neigh/show`).
    TnlNeighShow {
        /// Bridge name.
        bridge: String,
    },
    /// Every tunnel port: configuration, named encap/decap/ARP counters,
    /// underlay counters and neighbour cache.
    DumpTunnels {
        /// Bridge name.
        bridge: String,
    },
}

impl Request {
    /// The bridge the request is about, if any.
    pub fn bridge(&self) -> Option<&str> {
        match self {
            Request::Hello => None,
            Request::AddFlow { bridge, .. }
            | Request::AddFlows { bridge, .. }
            | Request::ModFlows { bridge, .. }
            | Request::DelFlows { bridge, .. }
            | Request::DumpFlows { bridge, .. }
            | Request::ReplaceFlows { bridge, .. }
            | Request::Bundle { bridge, .. }
            | Request::DumpPorts { bridge, .. }
            | Request::DumpTables { bridge }
            | Request::Show { bridge }
            | Request::Trace { bridge, .. }
            | Request::AddPort { bridge, .. }
            | Request::DelPort { bridge, .. }
            | Request::Inject { bridge, .. }
            | Request::Capture { bridge, .. }
            | Request::PmdRxqShow { bridge }
            | Request::PmdPerfShow { bridge }
            | Request::OffloadShow { bridge }
            | Request::PmdRxqRebalance { bridge }
            | Request::FdbShow { bridge }
            | Request::FdbFlush { bridge }
            | Request::CtShow { bridge, .. }
            | Request::CtFlush { bridge, .. }
            | Request::CtStats { bridge }
            | Request::SetBridge { bridge, .. }
            | Request::TnlNeighShow { bridge }
            | Request::DumpTunnels { bridge }
            | Request::AddRoute { bridge, .. }
            | Request::DelRoute { bridge, .. }
            | Request::DumpRoutes { bridge, .. }
            | Request::AddNeigh { bridge, .. }
            | Request::DelNeigh { bridge, .. }
            | Request::DumpNeigh { bridge }
            | Request::SetRouterMac { bridge, .. }
            | Request::GroupMod { bridge, .. }
            | Request::DumpGroups { bridge, .. } => Some(bridge),
        }
    }
}

/// What kind of error a request met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The line is not valid JSON or not a known request.
    BadRequest,
    /// A flow did not parse.
    BadFlow,
    /// A flow parsed but the flow-mod was rejected (table range, goto_table...).
    BadFlowMod,
    /// No such bridge.
    UnknownBridge,
    /// No such port.
    UnknownPort,
    /// A port with that name or number exists.
    PortExists,
    /// A port option is missing or wrong.
    BadPortConfig,
    /// The packet description or frame is invalid.
    BadPacket,
    /// A queue is full.
    Busy,
    /// A route, neighbour or router MAC request is invalid.
    BadRoute,
    /// A group-mod did not parse or was refused (OFPGMFC_*).
    BadGroup,
    /// Persisting state failed; the change was not applied.
    StateIo,
    /// Something else went wrong inside switchd.
    Internal,
}

/// A structured error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind.
    pub code: ErrorCode,
    /// Human-readable explanation, naming the problem.
    pub message: String,
    /// The offending input (flow text, port name...), quoted back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Byte offset of the offending token inside `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// Index of the offending item in a batch (add-flows, bundle, replace-flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ErrorBody {
    /// An error without input.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
            input: None,
            offset: None,
            index: None,
        }
    }

    /// Attach the offending input.
    pub fn with_input(mut self, input: impl Into<String>) -> ErrorBody {
        self.input = Some(input.into());
        self
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(i) = self.index {
            write!(f, " (item {})", i + 1)?;
        }
        if let Some(input) = &self.input {
            write!(f, "\n  {input}")?;
            if let Some(o) = self.offset {
                let col = input.get(..o).map_or(o, |s| s.chars().count());
                write!(f, "\n  {}^", " ".repeat(col))?;
            }
        }
        Ok(())
    }
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Success, with a command-specific body.
    Ok(serde_json::Value),
    /// Failure.
    Error(ErrorBody),
}

/// The group-mod command of a [`Request::GroupMod`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupOp {
    /// `add-group`.
    Add,
    /// `mod-group`.
    Modify,
    /// `insert-buckets`.
    InsertBuckets,
    /// `remove-buckets`.
    RemoveBuckets,
    /// `del-groups`.
    Delete,
}

/// One group in a dump-groups reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    /// Group id.
    pub group_id: u32,
    /// The group as ovs-ofctl dump-groups prints it.
    pub line: String,
    /// The dump-group-stats line.
    pub stats_line: String,
    /// Packets through the group.
    pub packet_count: u64,
    /// Bytes through the group.
    pub byte_count: u64,
    /// Per bucket, in order: (bucket id, packets, bytes).
    pub buckets: Vec<(u32, u64, u64)>,
    /// Flows whose actions name the group.
    pub ref_count: usize,
}

/// One flow in a dump-flows reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowEntry {
    /// Table.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Cookie.
    pub cookie: u64,
    /// Seconds since installation.
    pub duration: f64,
    /// Packets matched.
    pub n_packets: u64,
    /// Bytes matched.
    pub n_bytes: u64,
    /// idle_timeout (0 = none).
    pub idle_timeout: u16,
    /// hard_timeout (0 = none).
    pub hard_timeout: u16,
    /// Match, ovs-ofctl syntax.
    #[serde(rename = "match")]
    pub match_: String,
    /// Actions, ovs-ofctl syntax.
    pub actions: String,
    /// The whole ovs-ofctl dump-flows line.
    pub line: String,
    /// The line without statistics (`--no-stats`).
    pub line_no_stats: String,
}

/// One port in dump-ports / show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortEntry {
    /// OpenFlow port number.
    pub ofport: u32,
    /// Name.
    pub name: String,
    /// Backend type.
    #[serde(rename = "type")]
    pub port_type: String,
    /// Backend options.
    pub options: BTreeMap<String, String>,
    /// Seconds since the port was added.
    pub duration: f64,
    /// Link state (`up`, `down`).
    pub state: String,
    /// Why the port is down (absent when up): `interface X is gone`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Counters.
    pub stats: PortStats,
    /// Traffic forwarded by the XDP offload (already included in `stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloaded: Option<crate::port::PortOffload>,
    /// Backend-specific error counters by name, non-zero only (vhost_user:
    /// ring and descriptor errors, `vhost_bad_addr`...; they are also in
    /// `rx_errors`/`tx_errors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<(String, u64)>,
}

/// One table in dump-tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Table id.
    pub table: u8,
    /// Flows installed.
    pub active: usize,
    /// Lookups made.
    pub lookups: u64,
    /// Lookups that matched a flow.
    pub matched: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"add-flow","bridge":"br0","flow":"actions=drop"}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::AddFlow {
                bridge: "br0".into(),
                flow: "actions=drop".into()
            }
        );
        let r: Request = serde_json::from_str(
            r#"{"cmd":"add-port","bridge":"br0","name":"p1","type":"memory","ofport":3}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::AddPort {
                ofport: Some(3),
                ..
            }
        ));
        let e = Reply::Error(ErrorBody::new(ErrorCode::UnknownPort, "no port p9").with_input("p9"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"code":"unknown-port","message":"no port p9","input":"p9"}}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"frobnicate"}"#).is_err());
    }

    #[test]
    fn error_points_at_offset() {
        let mut e = ErrorBody::new(ErrorCode::BadFlow, "unknown field \"nw_dstt\"")
            .with_input("ip,nw_dstt=1.2.3.4");
        e.offset = Some(3);
        assert_eq!(
            e.to_string(),
            "unknown field \"nw_dstt\"\n  ip,nw_dstt=1.2.3.4\n     ^"
        );
    }
}
