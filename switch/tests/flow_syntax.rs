//! ovs-ofctl flow syntax: literal OVS examples (input text -> the text
//! `ovs-ofctl -O OpenFlow13 dump-flows` prints), error reporting, and the
//! trace packet syntax.
//!
//! Sources of the expected strings are cited per case:
//! [SEM] /work/shared/OVS_SEMANTICS.md (observed against OVS 3.1);
//! [OFCTL] OVS tests/ovs-ofctl.at "ovs-ofctl parse-flows" / "-F nxm parse-flows"
//!   (flow text and the match/action text OVS prints for it);
//! [MATCH] OVS lib/match.c match_format; [ACT] lib/ofp-actions.c format_*;
//! [FLOWFMT] lib/ofp-flow.c ofputil_flow_stats_format; [TRACE] lib/flow.c flow_format.

use std::time::Duration;
use switch::flow::key::{ethertype, ipproto};
use switch::flow::{
    format_actions, format_flow, format_flow_stats, format_key, format_match, ofport, parse_flow,
    parse_packet, Action, Field, FlowKey, FlowSpec, ParseError, ParseMode,
};

fn add(text: &str) -> FlowSpec {
    match parse_flow(text, ParseMode::Add) {
        Ok(s) => s,
        Err(e) => panic!("{text:?} failed:\n{e}"),
    }
}

/// `add-flow TEXT` then `--no-stats dump-flows` (without the leading space).
fn dump(text: &str) -> String {
    format_flow(&add(text).to_flow())
}

fn add_err(text: &str) -> ParseError {
    match parse_flow(text, ParseMode::Add) {
        Ok(s) => panic!("{text:?} should fail, got {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn ovs_semantics_normalisation_examples() {
    // [SEM] Prerequisites and normalisation.
    assert_eq!(dump("ip,nw_proto=6,actions=drop"), "tcp actions=drop");
    assert_eq!(
        dump("dl_type=0x0800,nw_proto=6,actions=drop"),
        "tcp actions=drop"
    );
    assert_eq!(dump("dl_type=0x0806,actions=drop"), "arp actions=drop");
    assert_eq!(
        dump("ip,nw_src=10.1.2.3/255.255.0.0,actions=drop"),
        "ip,nw_src=10.1.0.0/16 actions=drop"
    );
    assert_eq!(
        dump("ip,nw_dst=10.0.0.1/32,actions=drop"),
        "ip,nw_dst=10.0.0.1 actions=drop"
    );
    assert_eq!(
        dump("priority=100,ip,actions="),
        "priority=100,ip actions=drop"
    );
    // [SEM] Priorities: 32768 is omitted.
    assert_eq!(dump("priority=32768,ip,actions=drop"), "ip actions=drop");
    // [SEM] Output to the ingress port is spelt in_port, printed IN_PORT.
    assert_eq!(dump("actions=in_port"), "actions=IN_PORT");
    // [SEM] VLAN encodings.
    assert_eq!(
        dump("actions=mod_vlan_vid:5"),
        "actions=push_vlan:0x8100,set_field:4101->vlan_vid"
    );
    assert_eq!(
        dump("dl_vlan=7,actions=mod_vlan_vid:5"),
        "dl_vlan=7 actions=set_field:4101->vlan_vid"
    );
    assert_eq!(
        dump("dl_vlan=7,actions=strip_vlan"),
        "dl_vlan=7 actions=pop_vlan"
    );
    assert_eq!(dump("actions=push_vlan:0x8100"), "actions=push_vlan:0x8100");
    // [SEM] goto_table/resubmit examples.
    assert_eq!(
        dump("table=0,actions=resubmit(,1),output:5"),
        "actions=resubmit(,1),output:5"
    );
    assert_eq!(
        dump("table=1,actions=output:2,goto_table:2"),
        "table=1, actions=output:2,goto_table:2"
    );
    assert_eq!(
        dump("table=0,ip,actions=output:2,resubmit(,1),output:3"),
        "ip actions=output:2,resubmit(,1),output:3"
    );
    assert_eq!(
        dump("table=1,ip,actions=dec_ttl,output:4"),
        "table=1, ip actions=dec_ttl,output:4"
    );
}

#[test]
fn ovs_ofctl_parse_flows_examples() {
    // [OFCTL] "ovs-ofctl parse-flows" and "-F nxm parse-flows" (match + action text;
    // in_port prints as LOCAL in OVS 3.x match_format, arp nw_src as arp_spa).
    let cases = [
        ("tcp,tp_src=123,actions=flood", "tcp,tp_src=123 actions=FLOOD"),
        (
            "in_port=LOCAL dl_vlan=9 dl_src=00:0A:E4:25:6B:B0 actions=drop",
            "in_port=LOCAL,dl_vlan=9,dl_src=00:0a:e4:25:6b:b0 actions=drop",
        ),
        (
            "arp,dl_src=00:0A:E4:25:6B:B0,arp_sha=00:0A:E4:25:6B:B0 actions=drop",
            "arp,dl_src=00:0a:e4:25:6b:b0,arp_sha=00:0a:e4:25:6b:b0 actions=drop",
        ),
        ("arp,nw_src=192.168.0.1 actions=NORMAL", "arp,arp_spa=192.168.0.1 actions=NORMAL"),
        ("ipv6,ipv6_src=2001:db8:3c4d:1:2:3:4:5 actions=3", "ipv6,ipv6_src=2001:db8:3c4d:1:2:3:4:5 actions=output:3"),
        ("ipv6,ipv6_src=2001:db8:3c4d:1:2:3:4:5/64 actions=4", "ipv6,ipv6_src=2001:db8:3c4d:1::/64 actions=output:4"),
        (
            "ipv6,ipv6_dst=2001:db8:3c4d:1:2:3:4:5/127 actions=5",
            "ipv6,ipv6_dst=2001:db8:3c4d:1:2:3:4:4/127 actions=output:5",
        ),
        (
            "tcp6,ipv6_src=2001:db8:3c4d:1::1,tp_dst=80 actions=drop ",
            "tcp6,ipv6_src=2001:db8:3c4d:1::1,tp_dst=80 actions=drop",
        ),
        (
            "udp6,ipv6_src=2001:db8:3c4d:1::3,tp_dst=53 actions=drop ",
            "udp6,ipv6_src=2001:db8:3c4d:1::3,tp_dst=53 actions=drop",
        ),
        (
            "in_port=3 icmp6,ipv6_src=2001:db8:3c4d:1::1,icmp_type=134 actions=drop",
            "icmp6,in_port=3,ipv6_src=2001:db8:3c4d:1::1,icmp_type=134 actions=drop",
        ),
        (
            "udp dl_vlan_pcp=7 idle_timeout=5 actions=strip_vlan output:0",
            "idle_timeout=5, udp,dl_vlan_pcp=7 actions=pop_vlan,output:0",
        ),
        (
            "cookie=0x123456789abcdef hard_timeout=10 priority=60000 actions=controller",
            "cookie=0x123456789abcdef, hard_timeout=10, priority=60000 actions=CONTROLLER:65535",
        ),
        ("tun_id=0x1234,cookie=0x5678,actions=flood", "cookie=0x5678, tun_id=0x1234 actions=FLOOD"),
        ("table=1,actions=drop", "table=1, actions=drop"),
        (
            "tun_id=0x1234000056780000/0xffff0000ffff0000,actions=drop",
            "tun_id=0x1234000056780000/0xffff0000ffff0000 actions=drop",
        ),
        (
            "reg0=123,actions=move:NXM_NX_REG0[0..5]->NXM_NX_REG1[26..31],load:55->NXM_NX_REG2[0..31],move:NXM_NX_REG0[0..31]->NXM_NX_TUN_ID[0..31],move:NXM_NX_REG0[0..15]->NXM_OF_VLAN_TCI[]",
            "reg0=0x7b actions=move:NXM_NX_REG0[0..5]->NXM_NX_REG1[26..31],load:0x37->NXM_NX_REG2[],move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],move:NXM_NX_REG0[0..15]->NXM_OF_VLAN_TCI[]",
        ),
        // [OFCTL] "parse-flows (OpenFlow 1.2)": set_field prints the OXM-style name.
        ("ip,actions=set_field:10.4.3.77->ip_src", "ip actions=set_field:10.4.3.77->ip_src"),
    ];
    for (input, want) in cases {
        assert_eq!(dump(input), want, "input {input:?}");
    }
}

#[test]
fn match_format_details() {
    // [MATCH] order: protocol, regs, tunnel, metadata, in_port, vlan, dl_*, L3, L4.
    assert_eq!(
        dump("nw_dst=10.0.0.0/8,in_port=1,reg3=5,metadata=0x10/0xff,tcp,tp_dst=80,actions=drop"),
        "tcp,reg3=0x5,metadata=0x10/0xff,in_port=1,nw_dst=10.0.0.0/8,tp_dst=80 actions=drop"
    );
    // Non-CIDR netmasks print as netmasks; MAC masks print.
    assert_eq!(
        dump("ip,nw_src=10.1.2.3/255.0.255.0,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=drop"),
        "ip,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,nw_src=10.0.2.0/255.0.255.0 actions=drop"
    );
    // Zero values in hex fields print as C's %#x does.
    assert_eq!(
        dump("reg0=0,metadata=0,actions=drop"),
        "reg0=0,metadata=0 actions=drop"
    );
    // nw_frag words.
    for w in ["no", "yes", "first", "later", "not_later"] {
        assert_eq!(
            dump(&format!("ip,nw_frag={w},actions=drop")),
            format!("ip,nw_frag={w} actions=drop")
        );
    }
    // tcp_flags: masked form lowest bit first; exact form with '|'.
    assert_eq!(
        dump("tcp,tcp_flags=+syn-ack,actions=drop"),
        "tcp,tcp_flags=+syn-ack actions=drop"
    );
    assert_eq!(
        dump("tcp,tcp_flags=-ack+syn,actions=drop"),
        "tcp,tcp_flags=+syn-ack actions=drop"
    );
    assert_eq!(
        dump("tcp,tcp_flags=0x002/0x012,actions=drop"),
        "tcp,tcp_flags=+syn-ack actions=drop"
    );
    assert_eq!(
        dump("tcp,tcp_flags=0x012,actions=drop"),
        "tcp,tcp_flags=syn|ack actions=drop"
    );
    // ct_state: +/- in bit order (new, est, rel, rpl, inv, trk, ...).
    assert_eq!(
        dump("ct_state=+trk+est-new,actions=drop"),
        "ct_state=-new+est+trk actions=drop"
    );
    assert_eq!(
        dump("ct_state=0x21,actions=drop"),
        "ct_state=new|trk actions=drop"
    );
    assert_eq!(
        dump("ct_zone=5,ct_mark=0x3/0xff,actions=drop"),
        "ct_zone=5,ct_mark=0x3/0xff actions=drop"
    );
    // VLAN forms.
    assert_eq!(
        dump("vlan_tci=0,actions=drop"),
        "vlan_tci=0x0000 actions=drop"
    );
    assert_eq!(
        dump("dl_vlan=0xffff,actions=drop"),
        "vlan_tci=0x0000 actions=drop"
    );
    assert_eq!(
        dump("vlan_tci=0x1005/0x1fff,actions=drop"),
        "dl_vlan=5 actions=drop"
    );
    assert_eq!(
        dump("vlan_vid=0x1005,actions=drop"),
        "dl_vlan=5 actions=drop"
    );
    assert_eq!(
        dump("vlan_vid=0,actions=drop"),
        "vlan_tci=0x0000/0x1fff actions=drop"
    );
    assert_eq!(
        dump("dl_vlan=5,dl_vlan_pcp=3,actions=drop"),
        "dl_vlan=5,dl_vlan_pcp=3 actions=drop"
    );
    assert_eq!(
        dump("vlan_tci=0x1000/0x1000,actions=drop"),
        "vlan_tci=0x1000/0x1000 actions=drop"
    );
    assert_eq!(
        dump("vlan_tci=0x3123,actions=drop"),
        "dl_vlan=291,dl_vlan_pcp=1 actions=drop"
    );
    assert_eq!(
        dump("vlan_tci=0x0123,actions=drop"),
        "vlan_tci=0x0123 actions=drop"
    );
    // nw_tos matches DSCP bits; nw_ecn the low bits; ip_dscp is the shifted form.
    assert_eq!(
        dump("ip,nw_tos=184,nw_ecn=2,actions=drop"),
        "ip,nw_tos=184,nw_ecn=2 actions=drop"
    );
    assert_eq!(
        dump("ip,ip_dscp=46,actions=drop"),
        "ip,nw_tos=184 actions=drop"
    );
    // ICMP names; ARP fields.
    assert_eq!(
        dump("icmp,icmp_type=8,icmp_code=0,actions=drop"),
        "icmp,icmp_type=8,icmp_code=0 actions=drop"
    );
    assert_eq!(
        dump("arp,arp_op=1,arp_tpa=10.0.0.1,arp_spa=10.0.0.2,actions=drop"),
        "arp,arp_spa=10.0.0.2,arp_tpa=10.0.0.1,arp_op=1 actions=drop"
    );
    assert_eq!(
        dump("ipv6,ipv6_label=0x12345,actions=drop"),
        "ipv6,ipv6_label=0x12345 actions=drop"
    );
    assert_eq!(
        dump("dl_type=0x88cc,actions=drop"),
        "dl_type=0x88cc actions=drop"
    );
    assert_eq!(
        dump("udp,udp_src=53,actions=drop"),
        "udp,tp_src=53 actions=drop"
    );
    assert_eq!(
        dump("ip,nw_proto=47,actions=drop"),
        "ip,nw_proto=47 actions=drop"
    );
    assert_eq!(
        dump("ct_label=0x1,actions=drop"),
        "ct_label=0x1 actions=drop"
    );
    assert_eq!(
        dump("tun_src=1.2.3.4,tun_dst=5.6.7.0/24,actions=drop"),
        "tun_src=1.2.3.4,tun_dst=5.6.7.0/24 actions=drop"
    );
    assert_eq!(
        dump("reg1[4..7]=5,actions=drop"),
        "reg1=0x50/0xf0 actions=drop"
    );
    assert_eq!(format_match(&add("actions=drop").matches), "");
}

#[test]
fn action_format_details() {
    // [ACT] format_* functions, OpenFlow 1.3 encodings.
    let cases = [
        ("actions=output:2", "output:2"),
        ("actions=2,3", "output:2,output:3"),
        (
            "actions=LOCAL,NORMAL,FLOOD,ALL,IN_PORT",
            "LOCAL,NORMAL,FLOOD,ALL,IN_PORT",
        ),
        ("actions=output:LOCAL", "LOCAL"),
        ("actions=CONTROLLER:65535", "CONTROLLER:65535"),
        ("actions=drop", "drop"),
        (
            "actions=mod_dl_src:02:00:00:00:00:01",
            "set_field:02:00:00:00:00:01->eth_src",
        ),
        (
            "actions=mod_dl_dst:2:0:0:0:0:1",
            "set_field:02:00:00:00:00:01->eth_dst",
        ),
        (
            "ip,actions=mod_nw_src:10.0.0.1,mod_nw_dst:10.0.0.2",
            "set_field:10.0.0.1->ip_src,set_field:10.0.0.2->ip_dst",
        ),
        ("ip,actions=mod_nw_tos:184", "set_field:46->ip_dscp"),
        ("ip,actions=mod_nw_ecn:2", "set_field:2->nw_ecn"),
        ("ip,actions=mod_nw_ttl:9", "mod_nw_ttl:9"),
        (
            "tcp,actions=mod_tp_src:80,mod_tp_dst:8080",
            "set_field:80->tcp_src,set_field:8080->tcp_dst",
        ),
        ("udp6,actions=mod_tp_dst:53", "set_field:53->udp_dst"),
        ("ipv6,actions=dec_ttl", "dec_ttl"),
        (
            "actions=mod_vlan_pcp:3",
            "push_vlan:0x8100,set_field:3->vlan_pcp",
        ),
        (
            "actions=mod_vlan_vid:5,mod_vlan_pcp:3",
            "push_vlan:0x8100,set_field:4101->vlan_vid,set_field:3->vlan_pcp",
        ),
        (
            "actions=push_vlan:0x88a8,pop_vlan",
            "push_vlan:0x88a8,pop_vlan",
        ),
        ("actions=set_field:0x5->reg0", "set_field:0x5->reg0"),
        ("actions=set_field:5->tun_id", "set_field:0x5->tun_id"),
        (
            "actions=set_field:0x1/0xff->reg0",
            "load:0x1->NXM_NX_REG0[0..7]",
        ),
        (
            "actions=set_field:0x10f/0xf0f->reg0",
            "load:0xf->NXM_NX_REG0[0..3],load:0x1->NXM_NX_REG0[8..11]",
        ),
        (
            "dl_vlan=1,actions=set_field:4101->vlan_vid",
            "set_field:4101->vlan_vid",
        ),
        ("actions=load:1->NXM_NX_REG0[]", "load:0x1->NXM_NX_REG0[]"),
        ("actions=load:0->reg0[5]", "load:0->NXM_NX_REG0[5]"),
        (
            "actions=load:0xffff->NXM_NX_REG0[0..15]",
            "load:0xffff->NXM_NX_REG0[0..15]",
        ),
        (
            "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
        ),
        (
            "actions=move:reg0[0..15]->reg1[16..31]",
            "move:NXM_NX_REG0[0..15]->NXM_NX_REG1[16..31]",
        ),
        // mf_format_subfield uses the NXM name (NXM_OF_IP_TOS, NXM_NX_IP_ECN) when there is one.
        (
            "ip,actions=load:0x2e->nw_tos[2..7],load:1->nw_ecn[]",
            "load:0x2e->NXM_OF_IP_TOS[2..7],load:0x1->NXM_NX_IP_ECN[]",
        ),
        (
            "actions=load:0x1->OXM_OF_METADATA[0..7]",
            "load:0x1->OXM_OF_METADATA[0..7]",
        ),
        ("actions=resubmit:3", "resubmit:3"),
        ("actions=resubmit(1,2),output:3", "resubmit(1,2),output:3"),
        ("actions=resubmit(,2)", "resubmit(,2)"),
        ("actions=resubmit(1,2)", "resubmit(1,2)"),
        ("actions=resubmit(1)", "resubmit:1"),
        ("actions=resubmit(LOCAL,)", "resubmit:LOCAL"),
        ("actions=goto_table:2", "goto_table:2"),
        ("actions=write_metadata:0x1/0xff", "write_metadata:0x1/0xff"),
        ("actions=write_metadata:0", "write_metadata:0"),
        (
            "actions=output:1,write_metadata:0x1/0xff,goto_table:3",
            "output:1,write_metadata:0x1/0xff,goto_table:3",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(format_actions(&add(input).actions), want, "input {input:?}");
    }
    // The parsed forms are the normalised ones the pipeline executes.
    let a = add("dl_vlan=7,actions=mod_vlan_vid:5").actions;
    assert_eq!(
        a,
        vec![Action::SetField {
            field: Field::VlanVid,
            value: 0x1005,
            mask: 0x1fff
        }]
    );
    let a = add("ip,actions=mod_nw_tos:184").actions;
    assert_eq!(
        a,
        vec![Action::SetField {
            field: Field::IpDscp,
            value: 46,
            mask: 0x3f
        }]
    );
    assert_eq!(
        add("actions=in_port").actions,
        vec![Action::Output(ofport::IN_PORT)]
    );
}

#[test]
fn flow_stats_line() {
    // [FLOWFMT] ofputil_flow_stats_format with show_stats, OpenFlow 1.3 (no idle_age).
    let mut f = add("idle_timeout=10,priority=100,ip,nw_dst=10.0.0.0/8,actions=output:2").to_flow();
    assert_eq!(
        format_flow_stats(&f, Duration::from_millis(1234), 0, 0, None),
        " cookie=0x0, duration=1.234s, table=0, n_packets=0, n_bytes=0, idle_timeout=10, priority=100,ip,nw_dst=10.0.0.0/8 actions=output:2"
    );
    f.table = 3;
    f.cookie = 0xab;
    f.hard_timeout = 30;
    assert_eq!(
        format_flow_stats(&f, Duration::new(5, 0), 7, 700, Some(2)),
        " cookie=0xab, duration=5s, table=3, n_packets=7, n_bytes=700, idle_timeout=10, hard_timeout=30, idle_age=2, priority=100,ip,nw_dst=10.0.0.0/8 actions=output:2"
    );
    assert_eq!(
        format_flow_stats(
            &add("actions=NORMAL").to_flow(),
            Duration::new(0, 1_500),
            1,
            2,
            None
        ),
        " cookie=0x0, duration=0.0000015s, table=0, n_packets=1, n_bytes=2, actions=NORMAL"
    );
    assert_eq!(
        format_flow_stats(
            &add("priority=0,actions=NORMAL").to_flow(),
            Duration::new(3, 10_000_000),
            0,
            0,
            None
        ),
        " cookie=0x0, duration=3.010s, table=0, n_packets=0, n_bytes=0, priority=0 actions=NORMAL"
    );
    // A dump line pasted back into add-flow gives the same flow (OVS ignores the stats keywords).
    let line = format_flow_stats(&f, Duration::new(5, 0), 7, 700, Some(2));
    assert_eq!(
        parse_flow(&line, ParseMode::Add).map(|s| s.to_flow()),
        Ok(f)
    );
}

#[test]
fn trace_packet_syntax() {
    // [SEM] Trace syntax example, and [TRACE] its Flow: line.
    let k = parse_packet(
        "in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,udp_src=53,udp_dst=99",
    )
    .unwrap();
    assert_eq!(
        (k.in_port, k.dl_type, k.nw_proto),
        (1, ethertype::IPV4, ipproto::UDP)
    );
    assert_eq!(
        (k.nw_src, k.nw_dst, k.nw_ttl, k.tp_src, k.tp_dst),
        (0x0a00_0001, 0x0a00_0002, 64, 53, 99)
    );
    assert_eq!(
        format_key(&k),
        "udp,in_port=1,vlan_tci=0x0000,dl_src=00:00:00:00:00:00,dl_dst=00:00:00:00:00:00,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=53,tp_dst=99"
    );
    let k = parse_packet("in_port=1,icmp,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,icmp_type=8").unwrap();
    assert_eq!(
        format_key(&k),
        "icmp,in_port=1,vlan_tci=0x0000,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,icmp_type=8,icmp_code=0"
    );
    // Unspecified fields are zero, nw_ttl included (as OVS's trace).
    let k = parse_packet("tcp,tcp_src=1,tcp_dst=2").unwrap();
    assert_eq!(k.nw_ttl, 0);
    assert_eq!(
        format_key(&k),
        "tcp,in_port=0,vlan_tci=0x0000,dl_src=00:00:00:00:00:00,dl_dst=00:00:00:00:00:00,nw_src=0.0.0.0,nw_dst=0.0.0.0,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,tp_src=1,tp_dst=2,tcp_flags=0"
    );
    // tp_src means TCP only in trace syntax.
    let e = parse_packet("udp,tp_src=53").unwrap_err();
    assert!(e.message.contains("tp_src"), "{e}");
    assert_eq!(e.offset, 4);
    // The protocol must come first (fields apply in order).
    let e = parse_packet("nw_src=10.0.0.1,ip").unwrap_err();
    assert_eq!((e.offset, e.token.as_str()), (0, "nw_src=10.0.0.1"));
    // ARP, VLAN, tunnel, registers.
    let k =
        parse_packet("arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_op=1,dl_vlan=5,tun_id=0x10,reg1=3")
            .unwrap();
    assert_eq!(
        (k.nw_src, k.nw_dst, k.nw_proto, k.vlan_tci, k.tun_id, k.regs[1]),
        (0x0a00_0001, 0x0a00_0002, 1, 0x1005, 0x10, 3)
    );
    assert_eq!(
        format_key(&k),
        "arp,reg1=0x3,tun_id=0x10,in_port=0,dl_vlan=5,dl_vlan_pcp=0,dl_src=00:00:00:00:00:00,dl_dst=00:00:00:00:00:00,arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_op=1,arp_sha=00:00:00:00:00:00,arp_tha=00:00:00:00:00:00"
    );
    assert!(parse_packet("ip,nw_dst=10.0.0.0/8").is_err());
    assert!(parse_packet("in_port(1),eth(src=00:00:00:00:00:01)").is_err());
    let k = parse_packet("in_port=LOCAL,dl_type=0x1234").unwrap();
    assert_eq!(format_key(&k), "in_port=LOCAL,vlan_tci=0x0000,dl_src=00:00:00:00:00:00,dl_dst=00:00:00:00:00:00,dl_type=0x1234");
    let mut k2 = FlowKey::ZERO;
    k2.in_port = ofport::LOCAL;
    k2.dl_type = 0x1234;
    assert_eq!(k, k2);
}

#[test]
fn errors_point_at_the_token() {
    let e = add_err("nw_dst=10.0.0.0/8,actions=drop");
    assert_eq!(
        e.message,
        "nw_dst=10.0.0.0/8 requires ip (or dl_type=0x0800): add \"ip,\" before it"
    );
    assert_eq!((e.offset, e.token.as_str()), (0, "nw_dst=10.0.0.0/8"));
    let shown = e.to_string();
    assert!(
        shown.contains("nw_dst=10.0.0.0/8,actions=drop\n  ^^^^^^^^^^^^^^^^^"),
        "{shown}"
    );

    let e = add_err("ip, nw_ttl=5, tcp_dst=80,actions=drop");
    assert_eq!((e.offset, e.token.as_str()), (14, "tcp_dst=80"));
    assert!(e.message.contains("add \"tcp,\""), "{}", e.message);
    let e = add_err("ipv6,tcp_dst=80,actions=drop");
    assert!(e.message.contains("add \"tcp6,\""), "{}", e.message);

    let e = add_err("ip,nw_dsst=10.0.0.1,actions=drop");
    assert_eq!((e.offset, e.token.as_str()), (3, "nw_dsst"));
    assert!(
        e.message.contains("did you mean \"nw_dst\""),
        "{}",
        e.message
    );

    let e = add_err("ip,actions=outptu:1");
    assert_eq!((e.offset, e.token.as_str()), (11, "outptu"));
    assert!(
        e.message.contains("did you mean \"output\""),
        "{}",
        e.message
    );

    let e = add_err("tcp,nw_proto=17,actions=drop");
    assert_eq!(e.token, "nw_proto=17");
    assert!(
        e.message.contains("conflicts with earlier \"tcp\""),
        "{}",
        e.message
    );
    // Same value twice is fine.
    add("ip,dl_type=0x0800,actions=drop");

    let e = add_err("tcp,tp_dst=70000,actions=drop");
    assert_eq!((e.offset, e.token.as_str()), (11, "70000"));
    let e = add_err("ip,nw_tos=5,actions=drop");
    assert_eq!(e.token, "5");
    let e = add_err("dl_vlan=4096,actions=drop");
    assert_eq!(e.token, "4096");
    let e = add_err("in_port=1/1,actions=drop");
    assert!(e.message.contains("mask"), "{}", e.message);
    let e = add_err("ip,nw_src=1.2.3.4/33,actions=drop");
    assert_eq!(e.token, "33");

    // Action prerequisites as OVS rejects them for OpenFlow 1.3.
    for (text, tok) in [
        ("actions=mod_nw_src:1.2.3.4", "mod_nw_src:1.2.3.4"),
        ("ipv6,actions=mod_nw_dst:1.2.3.4", "mod_nw_dst:1.2.3.4"),
        ("actions=dec_ttl", "dec_ttl"),
        ("actions=mod_nw_ttl:3", "mod_nw_ttl:3"),
        ("ip,actions=mod_tp_src:3", "mod_tp_src:3"),
        ("actions=strip_vlan", "strip_vlan"),
        (
            "actions=set_field:10.0.0.1->ip_dst",
            "set_field:10.0.0.1->ip_dst",
        ),
        (
            "actions=load:1->NXM_OF_TCP_DST[]",
            "load:1->NXM_OF_TCP_DST[]",
        ),
        (
            "actions=set_field:4101->vlan_vid",
            "set_field:4101->vlan_vid",
        ),
        (
            "actions=move:NXM_OF_IP_SRC[]->reg0[]",
            "move:NXM_OF_IP_SRC[]->reg0[]",
        ),
    ] {
        let e = add_err(text);
        assert_eq!(e.token, tok, "{text}: {}", e.message);
        assert_eq!(&text[e.offset..e.offset + tok.len()], tok);
    }
    let e = add_err("actions=goto_table:0");
    assert!(e.message.contains("later table"), "{}", e.message);
    let e = add_err("table=3,actions=goto_table:2");
    assert_eq!(e.token, "goto_table:2");
    let e = add_err("actions=goto_table:2,output:1");
    assert_eq!(e.token, "output:1");
    let e = add_err("actions=drop,output:1");
    assert_eq!(e.token, "drop");
    let e = add_err("actions=write_metadata:1,output:1");
    assert_eq!(e.token, "output:1");
    let e = add_err("actions=move:reg0[0..3]->reg1[0..4]");
    assert!(
        e.message.contains("4 bits wide but destination is 5"),
        "{}",
        e.message
    );
    let e = add_err("actions=load:0x100->reg0[0..7]");
    assert_eq!(e.token, "0x100");
    let e = add_err("actions=set_field:1->ip_frag");
    assert!(e.message.contains("read-only"), "{}", e.message);
    let e = add_err("actions=mod_vlan_vid:4096");
    assert_eq!(e.token, "4096");
    let e = add_err("actions=push_vlan:0x0800");
    assert_eq!(e.token, "0x0800");
    let e = add_err("actions=resubmit(,)");
    assert!(e.message.contains("at least one"), "{}", e.message);
    let e = add_err("actions=resubmit(,2");
    assert!(e.message.contains("parenthes"), "{}", e.message);
    let e = add_err("ip");
    assert!(
        e.message.contains("must specify an action"),
        "{}",
        e.message
    );
    assert_eq!(e.offset, 2);
    // SCTP ports (RFC 9260 §3.1) by either name, printed as ovs-ofctl does;
    // sctp_src needs the sctp prerequisite like tcp_src needs tcp.
    assert_eq!(dump("sctp,actions=drop"), "sctp actions=drop");
    assert_eq!(dump("ip,nw_proto=132,actions=drop"), "sctp actions=drop");
    assert_eq!(dump("rarp,actions=drop"), "rarp actions=drop");
    assert_eq!(
        dump("sctp,sctp_src=5,actions=drop"),
        "sctp,tp_src=5 actions=drop"
    );
    assert_eq!(
        dump("sctp,tp_dst=80,actions=drop"),
        "sctp,tp_dst=80 actions=drop"
    );
    let e = add_err("ip,sctp_src=5,actions=drop");
    assert!(e.token.starts_with("sctp_src"), "{e:?}");
    let e = add_err("rarp,arp_spa=1.2.3.4,actions=drop");
    assert_eq!(e.token, "arp_spa=1.2.3.4");
    let e = add_err("nsh,actions=drop");
    assert!(e.message.contains("not supported"), "{}", e.message);
    let e = add_err("in_port[0..3]=1,actions=drop");
    assert!(e.message.contains("part of its bits"), "{}", e.message);
    let e = add_err("cookie=1/1,actions=drop");
    assert!(e.message.contains("cookie mask"), "{}", e.message);
}

#[test]
fn modes_and_keywords() {
    let d = parse_flow("cookie=0x10/0xf0,out_port=2,table=1,ip", ParseMode::Delete).unwrap();
    assert_eq!(
        (d.cookie, d.cookie_mask, d.out_port, d.table),
        (0x10, 0xf0, Some(2), Some(1))
    );
    assert!(parse_flow("ip,actions=drop", ParseMode::Delete).is_err());
    assert!(parse_flow("ip,actions=drop", ParseMode::Dump).is_err());
    assert!(parse_flow("priority=5,ip", ParseMode::Delete).is_err());
    let d = parse_flow("priority=5,ip", ParseMode::DeleteStrict).unwrap();
    assert_eq!(d.priority, 5);
    assert!(parse_flow("cookie=5", ParseMode::Dump).is_err());
    assert!(parse_flow("out_port=1,actions=drop", ParseMode::Add).is_err());
    assert!(parse_flow("idle_timeout=5,ip", ParseMode::Delete).is_err());
    let m = parse_flow("cookie=0x5,ip,actions=output:1", ParseMode::Modify).unwrap();
    assert_eq!((m.cookie, m.cookie_mask, m.table), (5, 0, None));
    // OVS reads the mask with strtoull: -1 is all ones (exact cookie match),
    // the spelling ovs-ofctl(8) users (and flowctl --help) write.
    let m = parse_flow("cookie=0x5/-1,ip,actions=output:1", ParseMode::ModifyStrict).unwrap();
    assert_eq!((m.cookie, m.cookie_mask), (5, u64::MAX));
    assert!(parse_flow("cookie=0x5/-2,ip", ParseMode::Delete).is_err());
    let m = parse_flow(
        "cookie=0x5/0xffffffffffffffff,ip,actions=output:1",
        ParseMode::ModifyStrict,
    )
    .unwrap();
    assert_eq!(m.cookie_mask, u64::MAX);
    assert_eq!(
        parse_flow("", ParseMode::Dump).unwrap(),
        FlowSpec::default()
    );
    assert_eq!(
        parse_flow("table=255", ParseMode::Dump).unwrap().table,
        None
    );
    assert!(parse_flow("table=255,actions=drop", ParseMode::Add).is_err());
    // Whitespace as ovs-ofctl tolerates it.
    assert_eq!(
        add(" priority = 7 ,  ip , nw_dst = 10.0.0.1   actions = output:1 , output:2 "),
        add("priority=7,ip,nw_dst=10.0.0.1,actions=output:1,output:2")
    );
    // Every name and alias of a field is accepted.
    assert_eq!(
        add("eth_type=0x0800,ip_dst=1.2.3.4,actions=drop"),
        add("ip,nw_dst=1.2.3.4,actions=drop")
    );
    assert_eq!(
        add("tcp,NXM_OF_TCP_DST=80,actions=drop"),
        add("tcp,tp_dst=80,actions=drop")
    );
}
