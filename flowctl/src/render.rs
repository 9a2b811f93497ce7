//! Text output in ovs-ofctl's shapes, from switchd's JSON replies.

use std::fmt::Write;

use serde_json::Value;
use switch::control::bridge::decode_hex;
use switch::control::proto::{FlowEntry, PortEntry, TableEntry};

use crate::Cmd;

/// Examples shown by `flowctl --help`.
pub const EXAMPLES: &str = "\
Examples:
  flowctl add-port br0 p1 type=memory ofport=1
  flowctl add-flow br0 'table=0,priority=100,ip,nw_dst=10.244.1.0/24,actions=dec_ttl,goto_table:2'
  flowctl add-flows br0 flows.txt
  flowctl dump-flows br0 'table=0,ip'
  flowctl mod-flows --strict br0 'table=1,priority=10,ip,nw_dst=10.244.2.3,actions=output:2'
  flowctl del-flows br0 'cookie=0x5/0xffffffffffffffff'
  flowctl trace br0 'in_port=1,icmp,nw_src=10.244.1.2,nw_dst=10.244.2.3,nw_ttl=64'
  flowctl inject br0 p1 'icmp,nw_src=10.244.1.2,nw_dst=10.244.2.3,nw_ttl=64'
  flowctl capture br0 p2
  flowctl dump-ports br0
  flowctl --json trace br0 'in_port=1,udp,nw_dst=10.0.0.1,udp_dst=53'
Exit codes: 0 ok, 1 switchd rejected the request, 2 usage or local error, 3 switchd unreachable.
See docs/flowctl.md for every command.";

fn opt<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Vec<T> {
    v.get(key)
        .and_then(|x| serde_json::from_value(x.clone()).ok())
        .unwrap_or_default()
}

/// Render a successful reply for a command.
pub fn render(_name: &str, body: &Value, cmd: &Cmd) -> String {
    let mut out = String::new();
    match cmd {
        Cmd::DumpFlows { no_stats, .. } => {
            for f in opt::<FlowEntry>(body, "flows") {
                let _ = writeln!(
                    out,
                    "{}",
                    if *no_stats { &f.line_no_stats } else { &f.line }
                );
            }
        }
        Cmd::DumpPorts { .. } => {
            let ports = opt::<PortEntry>(body, "ports");
            let _ = writeln!(out, "OFPST_PORT reply (OF1.3): {} ports", ports.len());
            for p in ports {
                let s = &p.stats;
                let no = switch::flow::format::format_port(p.ofport);
                let _ = writeln!(
                    out,
                    "  port {:>2} ({}): rx pkts={}, bytes={}, drop={}, errs={}, frame=0, over=0, crc=0",
                    no, p.name, s.rx_packets, s.rx_bytes, s.rx_dropped, s.rx_errors
                );
                let pad = " ".repeat(format!("  port {:>2} ({}): ", no, p.name).len());
                let _ = writeln!(
                    out,
                    "{pad}tx pkts={}, bytes={}, drop={}, errs={}, coll=0",
                    s.tx_packets, s.tx_bytes, s.tx_dropped, s.tx_errors
                );
                let reasons = |v: &[(String, u64)]| {
                    v.iter()
                        .map(|(r, n)| format!("{r}={n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if s.rx_malformed + s.rx_truncated > 0 {
                    let _ = writeln!(
                        out,
                        "{pad}rx malformed={}, truncated={} (forwarded as far as parsed)",
                        s.rx_malformed, s.rx_truncated
                    );
                }
                if let Some(o) = &p.offloaded {
                    let _ = writeln!(
                        out,
                        "{pad}offloaded: rx pkts={}, bytes={}, tx pkts={}, bytes={} (included above)",
                        o.rx_packets, o.rx_bytes, o.tx_packets, o.tx_bytes
                    );
                }
                if !s.rx_drop_reasons.is_empty() {
                    let _ = writeln!(out, "{pad}rx drops: {}", reasons(&s.rx_drop_reasons));
                }
                if !s.tx_drop_reasons.is_empty() {
                    let _ = writeln!(out, "{pad}tx drops: {}", reasons(&s.tx_drop_reasons));
                }
                if !p.errors.is_empty() {
                    let _ = writeln!(out, "{pad}errors: {}", reasons(&p.errors));
                }
                if p.state != "up" {
                    // ovs-ofctl show's `state: LINK_DOWN`, with the reason.
                    let why = p.state_reason.as_deref().unwrap_or("link down");
                    let _ = writeln!(out, "{pad}state: LINK_DOWN ({why})");
                }
                if s.tx_zerocopy + s.tx_copied > 0 {
                    let _ = writeln!(
                        out,
                        "{pad}tx zerocopy={}, copied={}",
                        s.tx_zerocopy, s.tx_copied
                    );
                }
                if s.tx_kicks + s.rx_wakeups > 0 {
                    // Kernel entries per frame: the syscall pattern of an AF_XDP port.
                    let per = if s.tx_kicks > 0 {
                        format!(
                            " ({:.1} tx pkts/kick)",
                            // Offloaded frames never took a kick.
                            s.tx_packets
                                .saturating_sub(p.offloaded.map_or(0, |o| o.tx_packets))
                                as f64
                                / s.tx_kicks as f64
                        )
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "{pad}tx kicks={}{per}, rx wakeups={}",
                        s.tx_kicks, s.rx_wakeups
                    );
                }
                let _ = writeln!(out, "{pad}duration={:.3}s", p.duration);
            }
        }
        Cmd::DumpTables { .. } => {
            let _ = writeln!(out, "OFPST_TABLE reply (OF1.3):");
            let tables = opt::<TableEntry>(body, "tables");
            for t in &tables {
                let _ = writeln!(out, "  table {}:", t.table);
                let _ = writeln!(
                    out,
                    "    active={}, lookup={}, matched={}",
                    t.active, t.lookups, t.matched
                );
                let _ = writeln!(out);
            }
            let _ = writeln!(
                out,
                "  ({} other tables are empty and unused)",
                255 - tables.len()
            );
        }
        Cmd::Show { .. } => {
            let _ = writeln!(
                out,
                "{}: {} tables, {} flows, generation {}",
                body["bridge"].as_str().unwrap_or("?"),
                body["n_tables"],
                body["n_flows"],
                body["generation"]
            );
            for p in opt::<PortEntry>(body, "ports") {
                let opts: String = p.options.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                let why = p
                    .state_reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(" (LINK_DOWN: {r})"));
                let _ = writeln!(
                    out,
                    " {}({}): type={}{} state={}{why}",
                    switch::flow::format::format_port(p.ofport),
                    p.name,
                    p.port_type,
                    opts,
                    p.state
                );
            }
            let pmd = &body["pmd"];
            let n = |k: &str| pmd[k].as_u64().unwrap_or(0);
            let rx = n("rx_packets");
            // Each recirculation (`ct(table=T)`) is one more datapath pass,
            // answered by one of the tiers: percentages are of passes.
            let passes = rx + n("recirculations");
            let pct = |x: u64| {
                if passes == 0 {
                    0.0
                } else {
                    100.0 * x as f64 / passes as f64
                }
            };
            let _ = write!(out, "pmd0: rx packets {rx}, ");
            if passes != rx {
                let _ = write!(out, "datapath passes {passes}, ");
            }
            let _ = writeln!(
                out,
                "emc hits {} ({:.1}%), megaflow hits {} ({:.1}%), misses {} ({:.1}%), busy iterations {}/{}",
                n("emc_hits"),
                pct(n("emc_hits")),
                n("megaflow_hits"),
                pct(n("megaflow_hits")),
                n("misses"),
                pct(n("misses")),
                n("busy_iterations"),
                n("iterations")
            );
        }
        Cmd::Trace { .. }
        | Cmd::FdbShow { .. }
        | Cmd::FdbFlush { .. }
        | Cmd::CtShow { .. }
        | Cmd::CtFlush { .. }
        | Cmd::CtStats { .. } => {
            out += body["text"].as_str().unwrap_or_default();
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        Cmd::Capture { .. } => {
            for (i, hex) in opt::<String>(body, "frames").iter().enumerate() {
                let summary = match decode_hex(hex) {
                    Ok(bytes) => {
                        let mut key = switch::flow::FlowKey::ZERO;
                        let lay = switch::packet::extract(&bytes, 0, &mut key);
                        let mut s = format!(
                            "{} bytes: {}",
                            bytes.len(),
                            switch::flow::format::format_key(&key)
                        );
                        if lay.status != switch::packet::ParseStatus::Ok {
                            let _ = write!(s, " ({:?})", lay.status);
                        }
                        s
                    }
                    Err(e) => e,
                };
                let _ = writeln!(out, "frame {}: {summary}\n  {hex}", i + 1);
            }
        }
        Cmd::PmdRxqShow { .. } => {
            for t in body["pmds"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let _ = writeln!(
                    out,
                    "pmd thread pmd{} core_id {}:",
                    t["pmd"],
                    core(&t["cpu"])
                );
                for q in t["rxqs"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let name = q["name"]
                        .as_str()
                        .map_or_else(|| q["port"].to_string(), str::to_string);
                    let _ = writeln!(
                        out,
                        "  port: {name:<16} queue-id: {:>2}   pmd usage: {:>3.0} %",
                        q["queue"].as_u64().unwrap_or(0),
                        q["usage_pct"].as_f64().unwrap_or(0.0)
                    );
                }
                let _ = writeln!(
                    out,
                    "  busy: {:>3.0} %",
                    t["busy_pct"].as_f64().unwrap_or(0.0)
                );
            }
        }
        Cmd::OffloadShow { .. } => {
            let entries = body["entries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let _ = writeln!(out, "offloaded flows: {}", entries.len());
            for e in entries {
                let _ = writeln!(
                    out,
                    "  {}, packets:{}, bytes:{}, age:{:.1}s, actions:{}",
                    e["match"].as_str().unwrap_or(""),
                    e["packets"].as_u64().unwrap_or(0),
                    e["bytes"].as_u64().unwrap_or(0),
                    e["age"].as_f64().unwrap_or(0.0),
                    e["actions"].as_str().unwrap_or("")
                );
            }
            for p in body["programs"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let n = |k: &str| p[k].as_u64().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "  port {} xdp prog {} ({}, offload {}, table {}): hit={} miss={} unparsed={} ttl={} no_port={} redirect_fail={}",
                    n("port"),
                    n("prog_id"),
                    p["mode"].as_str().unwrap_or("?"),
                    if p["xdp_offload"].as_bool().unwrap_or(false) { "on" } else { "off" },
                    n("capacity"),
                    n("hit"),
                    n("miss"),
                    n("unparsed"),
                    n("ttl"),
                    n("no_port"),
                    n("redirect_fail")
                );
            }
            let n = |k: &str| body[k].as_u64().unwrap_or(0);
            let refused = body["refused"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_u64().unwrap_or(0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  inserted={} flushed={} table_full={} masks_full={} stale={} errors={} queue_full={} refused: {}",
                n("inserted"),
                n("flushed"),
                n("table_full"),
                n("masks_full"),
                n("stale"),
                n("errors"),
                n("queue_full"),
                if refused.is_empty() { "none".to_string() } else { refused }
            );
        }
        Cmd::PmdPerfShow { .. } => {
            for t in body["pmds"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let n = |k: &str| t[k].as_u64().unwrap_or(0);
                let f = |k: &str| t[k].as_f64().unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "pmd thread pmd{} core_id {}:\n\
                     \x20 Iterations:        {:>12}  ({} busy)\n\
                     \x20 - busy cycles:     {:>11.1} %\n\
                     \x20 Rx packets:        {:>12}  ({:.0} busy cycles/pkt, {:.0} in the datapath)\n\
                     \x20 Datapath passes:   {:>12}  ({:.2} passes/pkt)\n\
                     \x20 - EMC hits:        {:>12}  ({:5.1} %)\n\
                     \x20 - Megaflow hits:   {:>12}  ({:5.1} %, {:.2} subtbl lookups/hit)\n\
                     \x20 - Misses:          {:>12}  ({:5.1} %, {:.0} cycles/miss)\n\
                     \x20 Recirculations:    {:>12}  ({} by hint, {} of them direct)\n\
                     \x20 Conntrack fast path: {:>10}\n\
                     \x20 Handed to other pmds: {:>9}  ({} dropped: tx_ring_full)",
                    n("pmd"),
                    core(&t["cpu"]),
                    n("iterations"),
                    n("busy_iterations"),
                    f("busy_pct"),
                    n("rx_packets"),
                    f("busy_cycles_per_packet"),
                    f("cycles_per_packet"),
                    n("passes"),
                    f("passes_per_packet"),
                    n("emc_hits"),
                    f("emc_hit_pct"),
                    n("megaflow_hits"),
                    f("megaflow_hit_pct"),
                    f("megaflow_lookups_per_hit"),
                    n("misses"),
                    f("miss_pct"),
                    f("cycles_per_miss"),
                    n("recirculations"),
                    n("recirc_hint_hits"),
                    n("direct_passes"),
                    n("ct_fast_hits"),
                    n("handed_off"),
                    n("handoff_drops"),
                );
                let u = |k: &str| t["umem"][k].as_u64().unwrap_or(0);
                if u("total") > 0 {
                    let _ = writeln!(
                        out,
                        "  AF_XDP UMEM frames: {} (free {}, fill/rx {}, in use {}, tx/comp {})",
                        u("total"),
                        u("free"),
                        u("fill"),
                        u("user"),
                        u("tx")
                    );
                }
            }
        }
        Cmd::TnlNeighShow { .. } => {
            let _ = writeln!(
                out,
                "{:<16} {:<17} {:<10} {:>6} {:>6}  Port",
                "IP", "MAC", "State", "Age", "Queued"
            );
            let _ = writeln!(out, "{}", "=".repeat(68));
            for n in body["neighbours"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                neigh_row(&mut out, n, n["port"].as_str().unwrap_or("?"));
            }
        }
        Cmd::DumpTunnels { .. } => {
            for t in body["tunnels"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let i = &t["info"];
                let s = |k: &str| i[k].as_str().unwrap_or("?").to_string();
                let _ = writeln!(
                    out,
                    "{} (ofport {}): vxlan local_ip={} remote_ip={} key={} dst_port={}\n  \
                     underlay {} ({}, mtu {}, next hop {}): largest inner frame {} bytes",
                    t["name"].as_str().unwrap_or("?"),
                    t["ofport"],
                    s("local_ip"),
                    s("remote_ip"),
                    s("key"),
                    i["dst_port"],
                    s("underlay"),
                    s("underlay_mac"),
                    i["underlay_mtu"],
                    s("gw"),
                    i["max_inner_frame"],
                );
                let kv = |v: &Value, prefix: &str| -> String {
                    v.as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(k, _)| k.starts_with(prefix))
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default()
                };
                let st = &t["stats"];
                let _ = writeln!(out, "  rx: {}", kv(st, "rx_"));
                let _ = writeln!(out, "  tx: {}", kv(st, "tx_"));
                let _ = writeln!(
                    out,
                    "  arp: {} pool_empty={}",
                    kv(st, "arp_"),
                    st["pool_empty"]
                );
                let u = &t["underlay"];
                let _ = writeln!(
                    out,
                    "  underlay: rx pkts={} bytes={} drop={}, tx pkts={} bytes={} drop={}",
                    u["rx_packets"],
                    u["rx_bytes"],
                    u["rx_dropped"],
                    u["tx_packets"],
                    u["tx_bytes"],
                    u["tx_dropped"]
                );
                let ns = t["neighbours"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let _ = writeln!(out, "  neighbours: {}", ns.len());
                for n in ns {
                    let _ = write!(out, "    ");
                    neigh_row(&mut out, n, "");
                }
            }
        }
        Cmd::PmdRxqRebalance { .. } => {
            let moves = body["moves"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if moves.is_empty() {
                let _ = writeln!(
                    out,
                    "no port moved ({})",
                    body["assign"].as_str().unwrap_or("?")
                );
            }
            for m in moves {
                let _ = writeln!(
                    out,
                    "port {} queue {}: pmd{} -> pmd{}",
                    m["port"],
                    m["queue"].as_u64().unwrap_or(0),
                    m["from"],
                    m["to"]
                );
            }
            // Queues the policy wanted to move whose fill ring did not fit
            // the target thread's AF_XDP UMEM.
            for k in body["kept"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "port {} queue {}: stays on pmd{} (pmd{}'s AF_XDP UMEM has {} fill-ring frames left, the queue needs {})",
                    k["port"],
                    k["queue"].as_u64().unwrap_or(0),
                    k["pmd"],
                    k["wanted"],
                    k["left"],
                    k["frames"]
                );
            }
        }
        Cmd::AddPort { name, .. } => {
            let _ = writeln!(out, "{name}: ofport {}", body["ofport"]);
        }
        Cmd::DumpGroups { .. } => {
            // ovs-ofctl -O OpenFlow15 dump-groups: a header, one group per line.
            let _ = writeln!(out, "OFPST_GROUP_DESC reply (OF1.5):");
            for g in body["groups"].as_array().into_iter().flatten() {
                let _ = writeln!(out, " {}", g["line"].as_str().unwrap_or_default());
            }
        }
        Cmd::DumpGroupStats { .. } => {
            let _ = writeln!(out, "OFPST_GROUP reply (OF1.5):");
            for g in body["groups"].as_array().into_iter().flatten() {
                let _ = writeln!(out, " {}", g["stats_line"].as_str().unwrap_or_default());
            }
        }
        Cmd::DelGroups { .. } => {
            let n = body["flows_deleted"].as_u64().unwrap_or(0);
            if n > 0 {
                let _ = writeln!(out, "{n} flow(s) using the deleted group(s) deleted");
            }
        }
        Cmd::DumpRoutes { .. } => {
            for r in body["routes"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "{}", r["text"].as_str().unwrap_or_default());
            }
            for m in body["router_macs"].as_array().into_iter().flatten() {
                let port = m["port"]
                    .as_u64()
                    .map_or_else(|| "default".to_string(), |p| format!("port {p}"));
                let _ = writeln!(
                    out,
                    "router mac {} ({port})",
                    m["mac"].as_str().unwrap_or_default()
                );
            }
        }
        Cmd::DumpNeigh { .. } => {
            for n in body["neighbours"].as_array().into_iter().flatten() {
                let _ = write!(
                    out,
                    "{} lladdr {}",
                    n["ip"].as_str().unwrap_or_default(),
                    n["mac"].as_str().unwrap_or_default()
                );
                if let Some(p) = n["port"].as_u64() {
                    let _ = write!(out, " port {p}");
                }
                // Learned entries (a routed uplink's ARP cache): state and
                // age, as `ip neigh` shows them; static ones are PERMANENT.
                match n["state"].as_str() {
                    Some(st) if st != "permanent" => {
                        let _ = writeln!(
                            out,
                            " {} age {}s{}",
                            st.to_uppercase(),
                            n["age_s"].as_u64().unwrap_or(0),
                            match n["queued"].as_u64() {
                                Some(q) if q > 0 => format!(" queued {q}"),
                                _ => String::new(),
                            }
                        );
                    }
                    _ => {
                        let _ = writeln!(out, " PERMANENT");
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// A pinned CPU number, or "unpinned".
fn core(cpu: &Value) -> String {
    cpu.as_u64()
        .map_or_else(|| "unpinned".to_string(), |c| c.to_string())
}

/// One neighbour row (`tnl-neigh-show`, `dump-tunnels`).
fn neigh_row(out: &mut String, n: &Value, port: &str) {
    let _ = writeln!(
        out,
        "{:<16} {:<17} {:<10} {:>5}s {:>6}  {port}",
        n["ip"].as_str().unwrap_or("?"),
        n["mac"].as_str().unwrap_or("?"),
        n["state"].as_str().unwrap_or("?"),
        n["age_s"].as_u64().unwrap_or(0),
        n["queued"].as_u64().unwrap_or(0),
    );
}
