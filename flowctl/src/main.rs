//! flowctl: the ferroswitch operator CLI, shaped after ovs-ofctl.
//!
//! Every command is one request over switchd's control socket (see
//! `switch::control::proto`). Flows are sent as text and parsed by switchd,
//! so errors come back from the parser that decides, pointing at the token.
//! Output follows ovs-ofctl's shapes; `--json` prints the raw reply instead.

mod render;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switch::control::proto::{BundleMod, BundleOp, GroupOp, Reply, Request, DEFAULT_SOCKET};
use switch::control::server::Client;

/// Control a ferroswitch bridge (ovs-ofctl style).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = render::EXAMPLES)]
struct Cli {
    /// switchd's control socket (the option wins over FLOWCTL_SOCKET).
    #[arg(long, global = true, env = "FLOWCTL_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print switchd's JSON reply ({"ok":...} or {"error":...}) instead of text; exit codes are unchanged.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Add a flow: `flowctl add-flow br0 'table=0,priority=100,ip,nw_dst=10.244.1.0/24,actions=dec_ttl,goto_table:2'`.
    ///
    /// Defaults: table 0, priority 32768. A flow with the same table, match and
    /// priority is replaced; its packet and byte counters carry over (OpenFlow 1.3).
    AddFlow {
        /// Bridge name (switchd's --bridge).
        bridge: String,
        /// The flow, in ovs-ofctl syntax, ending with actions=...
        flow: String,
    },
    /// Add the flows in FILE (one per line, `#` comments; `-` for stdin), all or nothing.
    ///
    /// Every line is an add (no leading add/modify/delete word: use `bundle` for that).
    /// An error names the flow by its line in the file: `FILE:LINE: message`.
    AddFlows {
        /// Bridge name.
        bridge: String,
        /// File of flows, or `-` for standard input.
        file: String,
    },
    /// Change the actions of the flows the given match covers (`--strict`: exact match and priority).
    ///
    /// Only the actions change: cookie, timeouts, counters and duration are kept.
    /// Nothing is added when no flow is selected (OpenFlow 1.3).
    ModFlows {
        /// Bridge name.
        bridge: String,
        /// Selection (`table=`, `cookie=V/M`, a match) and the new actions=...
        flow: String,
        /// Select only the flow with exactly this match and priority (default 32768).
        #[arg(long)]
        strict: bool,
    },
    /// Delete the flows the given match covers (all flows without FLOW; `--strict`: exact match and priority).
    DelFlows {
        /// Bridge name.
        bridge: String,
        /// Selection: a match, `table=`, `cookie=V/M`, `out_port=`; no actions.
        flow: Option<String>,
        /// Select only the flow with exactly this match and priority (default 32768).
        #[arg(long)]
        strict: bool,
    },
    /// Print flows, like `ovs-ofctl -O OpenFlow13 dump-flows` (sorted by table, then priority).
    DumpFlows {
        /// Bridge name.
        bridge: String,
        /// Selection, as for del-flows (without --strict).
        flow: Option<String>,
        /// Leave out duration and counters (and cookie and table when they are 0).
        #[arg(long)]
        no_stats: bool,
    },
    /// Make the bridge's flows exactly those in FILE, applying only the difference, atomically.
    ///
    /// Unchanged flows keep their counters and duration; changed ones keep their
    /// counters. Prints nothing; `--json` gives the counts added/modified/removed/unchanged.
    ReplaceFlows {
        /// Bridge name.
        bridge: String,
        /// File of flows (as for add-flows), or `-` for standard input.
        file: String,
    },
    /// Apply the flow-mods in FILE all or nothing. Lines: `add|modify|modify_strict|delete|delete_strict FLOW`
    /// (an optional leading `flow` word is accepted, as in ovs-ofctl bundle files).
    Bundle {
        /// Bridge name.
        bridge: String,
        /// Bundle file, or `-` for standard input.
        file: String,
    },
    /// Print port counters with every drop's reason.
    DumpPorts {
        /// Bridge name.
        bridge: String,
        /// One port (name or number); all ports without it.
        port: Option<String>,
    },
    /// Print per-table counters.
    DumpTables {
        /// Bridge name.
        bridge: String,
    },
    /// Print the bridge, its ports and the polling thread's counters.
    Show {
        /// Bridge name.
        bridge: String,
    },
    /// Per polling thread: its CPU and the ports it polls, each with its share
    /// of the thread's busy cycles (`ovs-appctl dpif-netdev/pmd-rxq-show`).
    PmdRxqShow {
        /// Bridge name.
        bridge: String,
    },
    /// Per polling thread: iterations, busy share, rx packets, cycles per packet,
    /// datapath passes, EMC and megaflow hit rates, misses, recirculations
    /// and the conntrack fast path (`ovs-appctl dpif-netdev/pmd-perf-show`).
    PmdPerfShow {
        /// Bridge name.
        bridge: String,
    },
    /// The flows switchd's XDP program forwards in the kernel (AF_XDP ports
    /// with `xdp-offload=true`), their counters, and why others were not
    /// offloaded (like `ovs-appctl dpctl/dump-flows type=offloaded`).
    OffloadShow {
        /// Bridge name.
        bridge: String,
    },
    /// Re-assign ports to polling threads by switchd's --pmd-rxq-assign policy
    /// (`ovs-appctl dpif-netdev/pmd-rxq-rebalance`); prints the ports moved.
    PmdRxqRebalance {
        /// Bridge name.
        bridge: String,
    },
    /// The tunnel ports' underlay ARP caches (`ovs-appctl tnl/neigh/show`).
    TnlNeighShow {
        /// Bridge name.
        bridge: String,
    },
    /// Every vxlan port: options, encap/decap/ARP counters with every drop's
    /// reason, underlay counters and neighbour cache.
    DumpTunnels {
        /// Bridge name.
        bridge: String,
    },
    /// Trace a packet through the tables: `flowctl trace br0 'in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,tcp_dst=80'`.
    ///
    /// Prints what `ovs-appctl ofproto/trace` prints. Fields not given are zero
    /// (nw_ttl included); a protocol keyword must come before its fields; UDP ports
    /// are udp_src/udp_dst (tp_src/tp_dst mean TCP).
    Trace {
        /// Bridge name.
        bridge: String,
        /// The packet, in ofproto/trace syntax.
        packet: String,
    },
    /// Add a port: `flowctl add-port br0 p1 type=memory ofport=1 [option=value ...]`.
    ///
    /// Types: memory (option depth=N, default 1024). Without ofport=, the lowest free number.
    AddPort {
        /// Bridge name.
        bridge: String,
        /// Port name (1-64 characters, no spaces, commas or slashes).
        name: String,
        /// `type=TYPE`, `ofport=N` and backend options as `key=value`.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Remove a port.
    DelPort {
        /// Bridge name.
        bridge: String,
        /// Port name (not number).
        name: String,
    },
    /// Hand frames to a memory port as if they arrived on it. Each FRAME is hex bytes, or a
    /// packet in trace syntax (`icmp,dl_src=..,dl_dst=..,nw_src=..,nw_dst=..,nw_ttl=64`) composed into a frame.
    Inject {
        /// Bridge name.
        bridge: String,
        /// Memory port, by name or number.
        port: String,
        /// Frames: hex bytes, or packets in trace syntax.
        #[arg(required = true)]
        frames: Vec<String>,
    },
    /// Print the frame (hex) that a packet description in trace syntax stands for,
    /// like `ovs-ofctl compose-packet --bare`. Needs no switchd.
    ComposePacket {
        /// The packet, in ofproto/trace syntax (fields not given are zero).
        packet: String,
        /// Bytes of payload after the headers.
        #[arg(long, default_value_t = 0)]
        payload: usize,
    },
    /// Add or replace a route: `flowctl add-route br0 [table=N] PREFIX via IP port=N [mac=MAC] [weight=W] [via IP port=N ...]`.
    ///
    /// Several `via` next hops make an ECMP route (chosen per flow by a hash of
    /// its addresses, protocol and ports). Without `via` the route is directly
    /// connected: the destination itself is the next hop. The next hop's MAC
    /// comes from `mac=` or from the neighbour table (add-neigh).
    AddRoute {
        /// Bridge name.
        bridge: String,
        /// `[table=N] PREFIX via IP port=N [mac=MAC] [weight=W] ...`
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        route: Vec<String>,
    },
    /// Add an OpenFlow group (ovs-ofctl syntax):
    /// `flowctl add-group br0 'group_id=1,type=select,selection_method=hash,fields(ip_src,tcp_src),bucket=bucket_id:0,weight:100,actions=output:1,bucket=...'`.
    ///
    /// Types: select (one bucket per flow, by a stable hash), all, indirect,
    /// ff. A flow uses it with `actions=group:1`.
    AddGroup {
        /// Bridge name.
        bridge: String,
        /// The group.
        group: String,
    },
    /// Replace a group's type, selection method and buckets: `flowctl mod-group br0 GROUP`.
    ModGroup {
        /// Bridge name.
        bridge: String,
        /// The group.
        group: String,
    },
    /// Add buckets: `flowctl insert-buckets br0 group_id=1,command_bucket_id=last,bucket=...`
    /// (command_bucket_id: first, last, or the bucket id to insert after).
    InsertBuckets {
        /// Bridge name.
        bridge: String,
        /// `group_id=N[,command_bucket_id=ID],bucket=...`
        group: String,
    },
    /// Remove buckets: `flowctl remove-buckets br0 group_id=1,command_bucket_id=ID|first|last|all`.
    RemoveBuckets {
        /// Bridge name.
        bridge: String,
        /// `group_id=N[,command_bucket_id=ID]`
        group: String,
    },
    /// Delete groups (all, or `group_id=N`), and every flow that uses them.
    DelGroups {
        /// Bridge name.
        bridge: String,
        /// `group_id=N` (default: every group).
        group: Option<String>,
    },
    /// List groups as ovs-ofctl dump-groups does: `flowctl dump-groups br0 [N]`.
    DumpGroups {
        /// Bridge name.
        bridge: String,
        /// Only this group id (`N` or `group_id=N`).
        group: Option<String>,
    },
    /// Group and bucket counters as ovs-ofctl dump-group-stats: `flowctl dump-group-stats br0 [N]`.
    DumpGroupStats {
        /// Bridge name.
        bridge: String,
        /// Only this group id (`N` or `group_id=N`).
        group: Option<String>,
    },
    /// Delete a route: `flowctl del-route br0 [table=N] PREFIX`.
    DelRoute {
        /// Bridge name.
        bridge: String,
        /// `[table=N] PREFIX`
        #[arg(required = true, num_args = 1..)]
        route: Vec<String>,
    },
    /// List routes like `ip route show`: `flowctl dump-routes br0 [table=N]`.
    DumpRoutes {
        /// Bridge name.
        bridge: String,
        /// `table=N`: only this route table.
        table: Option<String>,
    },
    /// Add or replace a static neighbour: `flowctl add-neigh br0 IP MAC [port=N]`.
    AddNeigh {
        /// Bridge name.
        bridge: String,
        /// The neighbour's IP address.
        ip: String,
        /// Its MAC.
        mac: String,
        /// `port=N`: the port it is behind (informational).
        port: Option<String>,
    },
    /// Delete a neighbour: `flowctl del-neigh br0 IP`.
    DelNeigh {
        /// Bridge name.
        bridge: String,
        /// The neighbour's IP address.
        ip: String,
    },
    /// List neighbours like `ip neigh show`.
    DumpNeigh {
        /// Bridge name.
        bridge: String,
    },
    /// Set the source MAC of routed packets: `flowctl set-router-mac br0 MAC [port=N]`
    /// (without port=, the default for every port; MAC `none` clears it).
    SetRouterMac {
        /// Bridge name.
        bridge: String,
        /// The router MAC, or `none`.
        mac: String,
        /// `port=N`: only for packets leaving port N.
        port: Option<String>,
    },
    /// Print (and consume) the frames a memory port transmitted.
    Capture {
        /// Bridge name.
        bridge: String,
        /// Memory port, by name or number.
        port: String,
        /// Take at most this many frames (all without it).
        #[arg(long)]
        max: Option<usize>,
    },
    /// Print the MAC learning table of the NORMAL action (`ovs-appctl fdb/show`):
    /// port, VLAN, MAC and seconds since the MAC was last seen.
    FdbShow {
        /// Bridge name.
        bridge: String,
    },
    /// Empty the MAC learning table (`ovs-appctl fdb/flush`); traffic floods until relearned.
    FdbFlush {
        /// Bridge name.
        bridge: String,
    },
    /// Print tracked connections (`ovs-appctl dpctl/dump-conntrack`):
    /// `flowctl ct-show br0 [zone=N] [ADDRESS]`.
    CtShow {
        /// Bridge name.
        bridge: String,
        /// `zone=N` (only that zone) and/or an IPv4/IPv6 address (only
        /// connections with it as an endpoint).
        filters: Vec<String>,
    },
    /// Forget tracked connections (`ovs-appctl dpctl/flush-conntrack`):
    /// `flowctl ct-flush br0 [zone=N]`.
    CtFlush {
        /// Bridge name.
        bridge: String,
        /// `zone=N`: only that zone.
        zone: Option<String>,
    },
    /// Connection tracker counters (entries, limit, commits, ct_full and
    /// nat_no_port drops, expirations) and timeouts.
    CtStats {
        /// Bridge name.
        bridge: String,
    },
    /// Change bridge settings: `flowctl set-bridge br0 mac-aging-time=10 mac-table-size=4096`
    /// (OVS: `ovs-vsctl set bridge br0 other_config:mac-aging-time=10`; the
    /// `other_config:` prefix is accepted). Persisted across restarts.
    SetBridge {
        /// Bridge name.
        bridge: String,
        /// key=value: mac-aging-time (seconds, default 300), mac-table-size (entries, default 8192).
        #[arg(required = true)]
        settings: Vec<String>,
    },
}

/// The flow lines of FILE (`-`: stdin) with their 1-based line numbers in the
/// file; blank lines and `#` comments are skipped but still counted, so an
/// error can name the line an editor shows (as ovs-ofctl's `FILE:LINE:`).
fn read_lines(file: &str) -> Result<Vec<(usize, String)>, String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        text = std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?;
    }
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| (n, String::from(l)))
        .collect())
}

/// Only the flow texts of [`read_lines`]' result.
fn texts(lines: Vec<(usize, String)>) -> Vec<String> {
    lines.into_iter().map(|(_, l)| l).collect()
}

/// The file a batch command reads, if any.
fn batch_file(cmd: &Cmd) -> Option<&str> {
    match cmd {
        Cmd::AddFlows { file, .. } | Cmd::ReplaceFlows { file, .. } | Cmd::Bundle { file, .. } => {
            Some(file)
        }
        _ => None,
    }
}

fn parse_bundle(lines: Vec<(usize, String)>) -> Result<Vec<BundleMod>, String> {
    lines
        .into_iter()
        .map(|(i, l)| {
            let l = l.strip_prefix("flow ").map(str::trim_start).unwrap_or(&l).to_string();
            let (word, rest) = l.split_once(char::is_whitespace).unwrap_or((l.as_str(), ""));
            let op = match word {
                "add" => BundleOp::Add,
                "modify" => BundleOp::Modify,
                "modify_strict" => BundleOp::ModifyStrict,
                "delete" => BundleOp::Delete,
                "delete_strict" => BundleOp::DeleteStrict,
                other => {
                    return Err(format!(
                        "bundle line {i}: {other:?} is not add, modify, modify_strict, delete or delete_strict"
                    ))
                }
            };
            Ok(BundleMod { op, flow: rest.trim().to_string() })
        })
        .collect()
}

/// `port=N` (or a bare N) as a port number.
fn port_arg(s: &Option<String>) -> Result<Option<u32>, String> {
    s.as_deref()
        .map(|p| {
            let v = p.strip_prefix("port=").unwrap_or(p);
            v.parse::<u32>()
                .map_err(|_| format!("{p:?}: expected port=N with N a port number"))
        })
        .transpose()
}

#[cfg(test)]
fn request(cmd: &Cmd) -> Result<Request, String> {
    request_lines(cmd).map(|(r, _)| r)
}

/// The request for `cmd`, and for a batch read from a file the file line
/// number of each item sent.
fn request_lines(cmd: &Cmd) -> Result<(Request, Vec<usize>), String> {
    let mut nos = Vec::new();
    let mut numbered = |l: Vec<(usize, String)>| {
        nos = l.iter().map(|(n, _)| *n).collect();
        l
    };
    let req = match cmd {
        Cmd::AddFlow { bridge, flow } => Request::AddFlow {
            bridge: bridge.clone(),
            flow: flow.clone(),
        },
        Cmd::AddFlows { bridge, file } => Request::AddFlows {
            bridge: bridge.clone(),
            flows: texts(numbered(read_lines(file)?)),
        },
        Cmd::ModFlows {
            bridge,
            flow,
            strict,
        } => Request::ModFlows {
            bridge: bridge.clone(),
            flow: flow.clone(),
            strict: *strict,
        },
        Cmd::DelFlows {
            bridge,
            flow,
            strict,
        } => Request::DelFlows {
            bridge: bridge.clone(),
            flow: flow.clone(),
            strict: *strict,
        },
        Cmd::DumpFlows { bridge, flow, .. } => Request::DumpFlows {
            bridge: bridge.clone(),
            filter: flow.clone(),
        },
        Cmd::ReplaceFlows { bridge, file } => Request::ReplaceFlows {
            bridge: bridge.clone(),
            flows: texts(numbered(read_lines(file)?)),
        },
        Cmd::Bundle { bridge, file } => Request::Bundle {
            bridge: bridge.clone(),
            mods: parse_bundle(numbered(read_lines(file)?))?,
        },
        Cmd::DumpPorts { bridge, port } => Request::DumpPorts {
            bridge: bridge.clone(),
            port: port.clone(),
        },
        Cmd::DumpTables { bridge } => Request::DumpTables {
            bridge: bridge.clone(),
        },
        Cmd::Show { bridge } => Request::Show {
            bridge: bridge.clone(),
        },
        Cmd::PmdRxqShow { bridge } => Request::PmdRxqShow {
            bridge: bridge.clone(),
        },
        Cmd::PmdPerfShow { bridge } => Request::PmdPerfShow {
            bridge: bridge.clone(),
        },
        Cmd::OffloadShow { bridge } => Request::OffloadShow {
            bridge: bridge.clone(),
        },
        Cmd::PmdRxqRebalance { bridge } => Request::PmdRxqRebalance {
            bridge: bridge.clone(),
        },
        Cmd::TnlNeighShow { bridge } => Request::TnlNeighShow {
            bridge: bridge.clone(),
        },
        Cmd::DumpTunnels { bridge } => Request::DumpTunnels {
            bridge: bridge.clone(),
        },
        Cmd::Trace { bridge, packet } => Request::Trace {
            bridge: bridge.clone(),
            packet: packet.clone(),
        },
        Cmd::AddPort {
            bridge,
            name,
            settings,
        } => {
            let mut port_type = None;
            let mut ofport = None;
            let mut options = std::collections::BTreeMap::new();
            for s in settings {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| format!("{s:?}: expected key=value (e.g. type=memory)"))?;
                match k {
                    "type" => port_type = Some(v.to_string()),
                    "ofport" => {
                        ofport = Some(
                            v.parse::<u32>()
                                .map_err(|_| format!("ofport={v:?}: expected a port number"))?,
                        )
                    }
                    _ => {
                        options.insert(k.to_string(), v.to_string());
                    }
                }
            }
            let port_type = port_type.ok_or("add-port needs type=TYPE (e.g. type=memory)")?;
            Request::AddPort {
                bridge: bridge.clone(),
                name: name.clone(),
                port_type,
                ofport,
                options,
            }
        }
        Cmd::DelPort { bridge, name } => Request::DelPort {
            bridge: bridge.clone(),
            name: name.clone(),
        },
        Cmd::Inject {
            bridge,
            port,
            frames,
        } => Request::Inject {
            bridge: bridge.clone(),
            port: port.clone(),
            frames: frames
                .iter()
                .map(|f| frame_hex(f, 0))
                .collect::<Result<_, _>>()?,
        },
        Cmd::ComposePacket { .. } => unreachable!("handled locally"),
        Cmd::AddRoute { bridge, route } => Request::AddRoute {
            bridge: bridge.clone(),
            route: route.join(" "),
        },
        Cmd::AddGroup { bridge, group } => group_mod(bridge, GroupOp::Add, group),
        Cmd::ModGroup { bridge, group } => group_mod(bridge, GroupOp::Modify, group),
        Cmd::InsertBuckets { bridge, group } => group_mod(bridge, GroupOp::InsertBuckets, group),
        Cmd::RemoveBuckets { bridge, group } => group_mod(bridge, GroupOp::RemoveBuckets, group),
        Cmd::DelGroups { bridge, group } => group_mod(
            bridge,
            GroupOp::Delete,
            group.as_deref().unwrap_or_default(),
        ),
        Cmd::DumpGroups { bridge, group } | Cmd::DumpGroupStats { bridge, group } => {
            Request::DumpGroups {
                bridge: bridge.clone(),
                group: group
                    .as_deref()
                    .map(|g| {
                        let v = g.strip_prefix("group_id=").unwrap_or(g);
                        v.parse::<u32>()
                            .map_err(|_| format!("{g:?}: expected a group id (N or group_id=N)"))
                    })
                    .transpose()?,
            }
        }
        Cmd::DelRoute { bridge, route } => Request::DelRoute {
            bridge: bridge.clone(),
            route: route.join(" "),
        },
        Cmd::DumpRoutes { bridge, table } => Request::DumpRoutes {
            bridge: bridge.clone(),
            table: table
                .as_deref()
                .map(|t| {
                    t.strip_prefix("table=")
                        .unwrap_or(t)
                        .parse::<u8>()
                        .map_err(|_| format!("{t:?}: expected table=N with N from 0 to 255"))
                })
                .transpose()?,
        },
        Cmd::AddNeigh {
            bridge,
            ip,
            mac,
            port,
        } => Request::AddNeigh {
            bridge: bridge.clone(),
            ip: ip.clone(),
            mac: mac.clone(),
            port: port_arg(port)?,
        },
        Cmd::DelNeigh { bridge, ip } => Request::DelNeigh {
            bridge: bridge.clone(),
            ip: ip.clone(),
        },
        Cmd::DumpNeigh { bridge } => Request::DumpNeigh {
            bridge: bridge.clone(),
        },
        Cmd::SetRouterMac { bridge, mac, port } => Request::SetRouterMac {
            bridge: bridge.clone(),
            mac: (mac != "none").then(|| mac.clone()),
            port: port_arg(port)?,
        },
        Cmd::Capture { bridge, port, max } => Request::Capture {
            bridge: bridge.clone(),
            port: port.clone(),
            max: *max,
        },
        Cmd::FdbShow { bridge } => Request::FdbShow {
            bridge: bridge.clone(),
        },
        Cmd::FdbFlush { bridge } => Request::FdbFlush {
            bridge: bridge.clone(),
        },
        Cmd::CtShow { bridge, filters } => {
            let mut zone = None;
            let mut addr = None;
            for f in filters {
                if let Some(z) = f.strip_prefix("zone=") {
                    zone = Some(ct_zone_arg(z)?);
                } else if addr.is_none() {
                    addr = Some(f.clone());
                } else {
                    return Err(format!(
                        "{f:?}: ct-show takes at most zone=N and one address"
                    ));
                }
            }
            Request::CtShow {
                bridge: bridge.clone(),
                zone,
                addr,
            }
        }
        Cmd::CtFlush { bridge, zone } => Request::CtFlush {
            bridge: bridge.clone(),
            zone: match zone {
                Some(z) => Some(ct_zone_arg(z.strip_prefix("zone=").unwrap_or(z))?),
                None => None,
            },
        },
        Cmd::CtStats { bridge } => Request::CtStats {
            bridge: bridge.clone(),
        },
        Cmd::SetBridge { bridge, settings } => {
            let mut map = std::collections::BTreeMap::new();
            for s in settings {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| format!("{s:?}: expected key=value (e.g. mac-aging-time=10)"))?;
                map.insert(k.to_string(), v.to_string());
            }
            Request::SetBridge {
                bridge: bridge.clone(),
                settings: map,
            }
        }
    };
    Ok((req, nos))
}

fn group_mod(bridge: &str, op: GroupOp, group: &str) -> Request {
    Request::GroupMod {
        bridge: bridge.to_string(),
        op,
        group: group.to_string(),
    }
}

/// A frame argument: hex bytes as they are, or a trace-syntax packet composed into a frame.
fn frame_hex(arg: &str, payload: usize) -> Result<String, String> {
    if switch::control::bridge::decode_hex(arg).is_ok() && !arg.trim().is_empty() {
        return Ok(arg.to_string());
    }
    let key = switch::flow::trace_spec::parse_packet(arg)
        .map_err(|e| format!("{arg:?} is neither hex nor a packet: {}", e.message))?;
    let frame = switch::packet::compose::compose(&key, &vec![0u8; payload]);
    Ok(switch::control::bridge::encode_hex(&frame))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::ComposePacket { packet, payload } = &cli.cmd {
        return match frame_hex(packet, *payload) {
            Ok(h) => {
                println!("{h}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("flowctl: {e}");
                ExitCode::from(2)
            }
        };
    }
    let (req, line_nos) = match request_lines(&cli.cmd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flowctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut client = match Client::connect(&cli.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "flowctl: cannot connect to switchd at {}: {e} (is switchd running? --socket or FLOWCTL_SOCKET selects another)",
                cli.socket.display()
            );
            return ExitCode::from(3);
        }
    };
    let reply = match client.call(&req) {
        Ok(r) => at_file_line(r, &cli.cmd, &line_nos),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            eprintln!("flowctl: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!(
                "flowctl: cannot talk to switchd at {}: {e} (is switchd running? --socket or FLOWCTL_SOCKET selects another)",
                cli.socket.display()
            );
            return ExitCode::from(3);
        }
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
        return if matches!(reply, Reply::Ok(_)) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    match reply {
        Reply::Ok(body) => {
            print!("{}", render::render(&cli.cmd_name(), &body, &cli.cmd));
            ExitCode::SUCCESS
        }
        Reply::Error(e) => {
            eprintln!("flowctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A batch error names its item by index among the flows sent; say instead
/// which line of the file it was (`FILE:LINE: message`, ovs-ofctl's shape),
/// counting the blank and comment lines the request left out.
fn at_file_line(reply: Reply, cmd: &Cmd, line_nos: &[usize]) -> Reply {
    let Reply::Error(mut e) = reply else {
        return reply;
    };
    let (Some(file), Some(i)) = (batch_file(cmd), e.index) else {
        return Reply::Error(e);
    };
    if let Some(line) = line_nos.get(i) {
        e.message = format!("{file}:{line}: {}", e.message);
        e.index = None;
    }
    Reply::Error(e)
}

impl Cli {
    fn cmd_name(&self) -> String {
        format!("{:?}", self.cmd)
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// A conntrack zone argument (0..=65535).
fn ct_zone_arg(z: &str) -> Result<u16, String> {
    z.parse::<u16>()
        .map_err(|_| format!("zone={z:?}: a zone is a number from 0 to 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_lines() {
        let m = parse_bundle(vec![
            (1, "flow add priority=1,actions=drop".into()),
            (3, "delete_strict priority=1".into()),
        ])
        .unwrap();
        assert_eq!(m[0].op, BundleOp::Add);
        assert_eq!(m[0].flow, "priority=1,actions=drop");
        assert_eq!(m[1].op, BundleOp::DeleteStrict);
        let e = parse_bundle(vec![(7, "frob x".into())]).unwrap_err();
        assert!(e.contains("frob") && e.contains("line 7"), "{e}");
    }

    #[test]
    fn add_port_settings() {
        let r = request(&Cmd::AddPort {
            bridge: "br0".into(),
            name: "p1".into(),
            settings: vec!["type=memory".into(), "ofport=4".into(), "depth=64".into()],
        })
        .unwrap();
        match r {
            Request::AddPort {
                port_type,
                ofport,
                options,
                ..
            } => {
                assert_eq!(port_type, "memory");
                assert_eq!(ofport, Some(4));
                assert_eq!(options.get("depth").map(String::as_str), Some("64"));
            }
            _ => unreachable!(),
        }
        assert!(request(&Cmd::AddPort {
            bridge: "b".into(),
            name: "p".into(),
            settings: vec!["ofport=1".into()]
        })
        .unwrap_err()
        .contains("type="));
    }
}
