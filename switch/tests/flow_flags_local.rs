//! Flow-mod flags and the LOCAL port, as an operator pasting from
//! `ovs-ofctl -O OpenFlow13` meets them:
//! - `send_flow_rem`, `no_packet_counts`, `no_byte_counts` are accepted, kept
//!   with the flow and printed by dump-flows where OVS prints them (after the
//!   timeouts, space separated); `check_overlap` refuses an overlapping add
//!   with `OFPFMFC_OVERLAP`; `reset_counts` zeroes the counters an add or a
//!   modify would otherwise carry over. Flags are not allowed in delete.
//! - `output:LOCAL` goes to the bridge's LOCAL port when there is one and is
//!   reported by name (never as 4294967294) when there is none.

use std::sync::atomic::Ordering;

use switch::flow::{format_flow, format_flow_stats, ofport, parse_flow, FlowKey, ParseMode};
use switch::pipeline::table::{FlowMod, FlowModCommand, FlowModError, Pipeline};
use switch::pipeline::trace::trace;

fn fm(cmd: FlowModCommand, mode: ParseMode, text: &str) -> FlowMod {
    FlowMod {
        command: cmd,
        spec: parse_flow(text, mode).unwrap_or_else(|e| panic!("{text}: {}", e.message)),
    }
}

fn add(text: &str) -> FlowMod {
    fm(FlowModCommand::Add, ParseMode::Add, text)
}

fn dump(p: &Pipeline) -> Vec<String> {
    p.rules()
        .map(|r| format!(" {}", format_flow(&r.flow)))
        .collect()
}

#[test]
fn state_flags_are_kept_and_printed_like_ovs() {
    let mut p = Pipeline::new();
    p.apply(&[add(
        "priority=5,ip,send_flow_rem,no_byte_counts,no_packet_counts,idle_timeout=10,actions=drop",
    )])
    .unwrap();
    // OVS: flags after the timeouts, in its fixed order, before the match.
    assert_eq!(
        dump(&p),
        [" idle_timeout=10, send_flow_rem no_packet_counts no_byte_counts priority=5,ip actions=drop"]
    );
    let r = p.rules().next().unwrap();
    let line = format_flow_stats(
        &r.flow,
        std::time::Duration::from_millis(1500),
        3,
        180,
        None,
    );
    assert_eq!(
        line,
        " cookie=0x0, duration=1.500s, table=0, n_packets=3, n_bytes=180, idle_timeout=10, send_flow_rem no_packet_counts no_byte_counts priority=5,ip actions=drop"
    );
    // The --no-stats line (also what the state file keeps) parses back to the same flow.
    let again = parse_flow(&format_flow(&r.flow), ParseMode::Add)
        .unwrap()
        .to_flow();
    assert_eq!(again, r.flow);
    // check_overlap and reset_counts act on one flow-mod only: not kept.
    let mut p = Pipeline::new();
    p.apply(&[add("check_overlap,reset_counts,priority=1,actions=drop")])
        .unwrap();
    assert_eq!(dump(&p), [" priority=1 actions=drop"]);
}

#[test]
fn flags_are_refused_where_ovs_refuses_them() {
    for (text, mode) in [
        ("send_flow_rem,ip", ParseMode::Delete),
        ("check_overlap", ParseMode::DeleteStrict),
        ("no_byte_counts", ParseMode::Dump),
    ] {
        let e = parse_flow(text, mode).unwrap_err();
        assert!(
            e.message.contains("is not allowed in"),
            "{text}: {}",
            e.message
        );
    }
    let e = parse_flow("send_flow_rem=1,actions=drop", ParseMode::Add).unwrap_err();
    assert!(e.message.contains("takes no value"), "{}", e.message);
    // Modify takes them (OVS F_FLAGS for modify and modify_strict).
    assert!(parse_flow("reset_counts,ip,actions=drop", ParseMode::Modify).is_ok());
    assert!(parse_flow("reset_counts,ip,actions=drop", ParseMode::ModifyStrict).is_ok());
}

#[test]
fn check_overlap_refuses_an_overlapping_add() {
    let mut p = Pipeline::new();
    p.apply(&[add("priority=10,ip,nw_dst=10.0.0.0/8,actions=output:1")])
        .unwrap();
    // Same priority, a packet (10.1.2.3, tcp) matches both: refused, nothing changes.
    let e = p
        .apply(&[add(
            "check_overlap,priority=10,tcp,nw_dst=10.1.0.0/16,actions=output:2",
        )])
        .unwrap_err();
    assert!(matches!(e, FlowModError::Overlap { index: 0, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("OFPFMFC_OVERLAP"), "{msg}");
    assert!(msg.contains("priority=10,ip,nw_dst=10.0.0.0/8"), "{msg}");
    assert_eq!(p.rules().count(), 1);
    // An identical match overlaps too.
    assert!(p
        .apply(&[add(
            "check_overlap,priority=10,ip,nw_dst=10.0.0.0/8,actions=output:3"
        )])
        .is_err());
    // Another priority, a disjoint match or another table: no overlap.
    p.apply(&[
        add("check_overlap,priority=11,tcp,nw_dst=10.1.0.0/16,actions=output:2"),
        add("check_overlap,priority=10,ip,nw_dst=11.0.0.0/8,actions=output:2"),
        add("check_overlap,priority=10,arp,actions=output:2"),
        add("check_overlap,table=1,priority=10,ip,actions=output:2"),
    ])
    .unwrap();
    assert_eq!(p.rules().count(), 5);
    // Without check_overlap the same add is fine (OpenFlow: undefined which wins).
    p.apply(&[add("priority=10,tcp,nw_dst=10.1.0.0/16,actions=output:2")])
        .unwrap();
    assert_eq!(p.rules().count(), 6);
}

#[test]
fn reset_counts_zeroes_what_add_and_modify_carry_over() {
    let mut p = Pipeline::new();
    p.apply(&[add("priority=10,ip,actions=output:1")]).unwrap();
    let bump = |p: &Pipeline| {
        let r = p.rules().next().unwrap();
        r.stats.n_packets.store(7, Ordering::Relaxed);
        r.stats.n_bytes.store(700, Ordering::Relaxed);
    };
    let packets = |p: &Pipeline| {
        p.rules()
            .next()
            .unwrap()
            .stats
            .n_packets
            .load(Ordering::Relaxed)
    };
    bump(&p);
    // Plain add replacing it: counters carry over (OpenFlow 1.3).
    p.apply(&[add("priority=10,ip,actions=output:2")]).unwrap();
    assert_eq!(packets(&p), 7);
    // Plain modify: kept.
    p.apply(&[fm(
        FlowModCommand::Modify,
        ParseMode::Modify,
        "ip,actions=output:3",
    )])
    .unwrap();
    assert_eq!(packets(&p), 7);
    // Modify with reset_counts: zero.
    p.apply(&[fm(
        FlowModCommand::Modify,
        ParseMode::Modify,
        "reset_counts,ip,actions=output:4",
    )])
    .unwrap();
    assert_eq!(packets(&p), 0);
    // Add with reset_counts replacing the flow: zero, bytes too.
    bump(&p);
    p.apply(&[add("reset_counts,priority=10,ip,actions=output:5")])
        .unwrap();
    assert_eq!(packets(&p), 0);
    assert_eq!(
        p.rules()
            .next()
            .unwrap()
            .stats
            .n_bytes
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(dump(&p), [" priority=10,ip actions=output:5"]);
}

fn icmp_from(in_port: u32) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.in_port = in_port;
    k.dl_type = 0x0800;
    k.nw_proto = 1;
    k.nw_ttl = 64;
    k
}

#[test]
fn output_to_local_is_named_and_delivered_when_the_port_exists() {
    let mut p = Pipeline::new();
    p.apply(&[add("priority=10,ip,actions=output:LOCAL,output:2")])
        .unwrap();
    // No LOCAL port: the output is skipped, reported by name with a hint.
    let t = trace(&p, &[1, 2], &icmp_from(1), "br0").to_string();
    assert!(t.contains("Nonexistent output port LOCAL"), "{t}");
    assert!(!t.contains("4294967294"), "{t}");
    assert!(t.contains("Datapath actions: 2"), "{t}");
    // With the bridge's LOCAL port (a tap named after the bridge): delivered,
    // the datapath action names it.
    let t = trace(&p, &[1, 2, ofport::LOCAL], &icmp_from(1), "br0").to_string();
    assert!(!t.contains("Nonexistent"), "{t}");
    assert!(t.contains("Datapath actions: LOCAL,2"), "{t}");
    // From LOCAL to LOCAL: the ingress port rule (OVS_SEMANTICS "Output to the
    // ingress port") skips it, like any other port.
    let t = trace(&p, &[1, 2, ofport::LOCAL], &icmp_from(ofport::LOCAL), "br0").to_string();
    assert!(t.contains("skipping output to input port"), "{t}");
    assert!(t.contains("Datapath actions: 2"), "{t}");
    assert!(t.contains("in_port=LOCAL"), "{t}");
}
