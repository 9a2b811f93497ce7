//! Slow-path translation against the OVS 3.1 behaviours in OVS_SEMANTICS.md:
//! each test builds a small pipeline the way an operator would with
//! ovs-ofctl and checks what the datapath would do with the packet.

use switch::datapath::DpAction;
use switch::flow::key::{ethertype, ipproto, VLAN_CFI};
use switch::flow::{ofport, Action, Field, FieldRange, Flow, FlowKey, Match, PortNo};
use switch::pipeline::xlate::{translate, XlateDrop, MAX_DEPTH, MAX_RESUBMITS};
use switch::pipeline::Pipeline;

const PORTS: &[PortNo] = &[1, 2, 3, 4, 5];

fn flow(table: u8, m: &[(Field, u128)], actions: Vec<Action>) -> Flow {
    let mut matches = Match::CATCHALL;
    for (f, v) in m {
        matches.set_exact(*f, *v);
    }
    Flow {
        table,
        matches,
        actions,
        ..Flow::default()
    }
}

fn pipeline(flows: Vec<Flow>) -> Pipeline {
    let mut p = Pipeline::new();
    for f in flows {
        p.add_flow(f);
    }
    p
}

fn tcp_key(in_port: PortNo, ttl: u8) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.in_port = in_port;
    k.dl_src = [2, 0, 0, 0, 0, 1];
    k.dl_dst = [2, 0, 0, 0, 0, 2];
    k.dl_type = ethertype::IPV4;
    k.nw_src = 0x0a00_0001;
    k.nw_dst = 0x0a00_0002;
    k.nw_proto = ipproto::TCP;
    k.nw_ttl = ttl;
    k.tp_src = 1234;
    k.tp_dst = 80;
    k
}

fn set(field: Field, value: u128) -> Action {
    Action::SetField {
        field,
        value,
        mask: field.info().max_value(),
    }
}

fn resubmit(table: u8) -> Action {
    Action::Resubmit {
        in_port: None,
        table: Some(table),
    }
}

fn out(p: PortNo) -> DpAction {
    DpAction::Output(p)
}

const IP: (Field, u128) = (Field::EthType, 0x0800);

#[test]
fn goto_inside_resubmit_returns_to_the_resubmitter() {
    // table=0,actions=resubmit(,1),output:5
    // table=1,actions=output:2,goto_table:2
    // table=2,actions=output:3          => 2, 3, then 5
    let p = pipeline(vec![
        flow(0, &[], vec![resubmit(1), Action::Output(5)]),
        flow(1, &[], vec![Action::Output(2), Action::GotoTable(2)]),
        flow(2, &[], vec![Action::Output(3)]),
    ]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2), out(3), out(5)]);
    assert_eq!(x.drop, None);
    assert_eq!(x.tables, vec![(0, true), (1, true), (2, true)]);
    assert_eq!(x.rules.len(), 3);
    assert_eq!(
        x.outputs.iter().map(|o| o.0).collect::<Vec<_>>(),
        vec![2, 3, 5]
    );
}

#[test]
fn dec_ttl_exception_skips_the_rest_of_the_flow_but_not_the_caller() {
    // table=0,ip,actions=output:2,resubmit(,1),output:3
    // table=1,ip,actions=dec_ttl,output:4
    let p = pipeline(vec![
        flow(
            0,
            &[IP],
            vec![Action::Output(2), resubmit(1), Action::Output(3)],
        ),
        flow(1, &[IP], vec![Action::DecTtl, Action::Output(4)]),
    ]);
    for ttl in [0, 1] {
        let x = translate(&p, PORTS, &tcp_key(1, ttl));
        assert_eq!(x.actions, vec![out(2), out(3)], "ttl {ttl}");
        assert_eq!(x.drop, Some(XlateDrop::InvalidTtl));
        assert_eq!(x.final_key.nw_ttl, ttl, "TTL is not changed");
        assert_eq!(x.mask.nw_ttl, 0xff, "dec_ttl reads the TTL");
    }
    // TTL 64: decremented, committed before output 4, and port 3 (after the
    // resubmit returns) sees the decremented packet without a second set.
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(
        x.actions,
        vec![
            out(2),
            DpAction::SetIpv4 {
                src: None,
                dst: None,
                tos: None,
                ttl: Some(63)
            },
            out(4),
            out(3)
        ]
    );
    assert_eq!(x.drop, None);
    assert_eq!(x.outputs[2].1.nw_ttl, 63);
    assert_eq!(x.final_key.nw_ttl, 63);
}

#[test]
fn ipv6_dec_ttl_uses_the_hop_limit() {
    let p = pipeline(vec![flow(
        0,
        &[(Field::EthType, 0x86dd)],
        vec![Action::DecTtl, Action::Output(2)],
    )]);
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    k.dl_type = ethertype::IPV6;
    k.nw_ttl = 9;
    let x = translate(&p, PORTS, &k);
    assert_eq!(
        x.actions,
        vec![
            DpAction::SetIpv6 {
                src: None,
                dst: None,
                tclass: None,
                hlimit: Some(8),
                label: None
            },
            out(2)
        ]
    );
    k.nw_ttl = 1;
    let x = translate(&p, PORTS, &k);
    assert!(x.actions.is_empty());
    assert_eq!(x.drop, Some(XlateDrop::InvalidTtl));
}

#[test]
fn dec_ttl_on_non_ip_does_nothing() {
    let p = pipeline(vec![flow(0, &[], vec![Action::DecTtl, Action::Output(2)])]);
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    k.dl_type = ethertype::ARP;
    let x = translate(&p, PORTS, &k);
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.drop, None);
}

#[test]
fn output_before_goto_into_an_empty_table_still_goes_out() {
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![Action::Output(2), Action::GotoTable(1)],
    )]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.drop, None);
    assert_eq!(x.tables, vec![(0, true), (1, false)]);
}

#[test]
fn table_miss_is_a_drop_with_its_table() {
    let empty = Pipeline::new();
    let x = translate(&empty, PORTS, &tcp_key(1, 64));
    assert!(x.actions.is_empty());
    assert_eq!(x.drop, Some(XlateDrop::NoMatch { table: 0 }));
    assert_eq!(x.tables, vec![(0, false)]);
    assert_eq!(x.mask.in_port, u32::MAX);

    let p = pipeline(vec![flow(0, &[], vec![Action::GotoTable(3)])]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert!(x.actions.is_empty());
    assert_eq!(x.drop, Some(XlateDrop::NoMatch { table: 3 }));
}

#[test]
fn resubmit_miss_continues_with_the_callers_actions() {
    let p = pipeline(vec![flow(0, &[], vec![resubmit(7), Action::Output(2)])]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.drop, None);
    assert_eq!(x.tables, vec![(0, true), (7, false)]);
    // A resubmit miss is not a table-miss drop.
    let p = pipeline(vec![flow(0, &[], vec![resubmit(7)])]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert!(x.actions.is_empty());
    assert_eq!(x.drop, None);
}

#[test]
fn read_only_fields_are_never_written() {
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            set(Field::EthType, 0x86dd),
            Action::Load {
                dst: FieldRange {
                    field: Field::NwProto,
                    ofs: 0,
                    n_bits: 8,
                },
                value: 17,
            },
            Action::Output(2),
        ],
    )]);
    let k = tcp_key(1, 64);
    let x = translate(&p, PORTS, &k);
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.final_key, k);
}

#[test]
fn empty_action_list_is_an_explicit_drop() {
    let p = pipeline(vec![flow(0, &[], vec![])]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert!(x.actions.is_empty());
    assert_eq!(x.drop, Some(XlateDrop::ExplicitDrop));
}

#[test]
fn resubmit_loop_drops_the_whole_packet_at_depth_64() {
    // table=0,actions=output:2,resubmit(,0): 2 was "sent" 64 times, but the
    // translation fails and nothing at all reaches the datapath.
    let p = pipeline(vec![flow(0, &[], vec![Action::Output(2), resubmit(0)])]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert!(x.actions.is_empty());
    assert!(x.outputs.is_empty());
    assert_eq!(x.drop, Some(XlateDrop::ResubmitDepth));
    // The first lookup plus 64 nested ones; the 65th is refused.
    assert_eq!(x.tables.len() as u32, 1 + MAX_DEPTH);
}

#[test]
fn resubmit_chains_to_later_tables_do_not_count_against_depth() {
    // 0 -> 1 -> ... -> 100 by resubmit: far deeper than 64 nested calls, but
    // each goes to a later table, so OVS lets it run.
    let mut flows: Vec<Flow> = (0..100u8)
        .map(|t| flow(t, &[], vec![resubmit(t + 1)]))
        .collect();
    flows.push(flow(100, &[], vec![Action::Output(4)]));
    let x = translate(&pipeline(flows), PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(4)]);
    assert_eq!(x.drop, None);
    assert_eq!(x.tables.len(), 101);
}

#[test]
fn too_many_resubmits_in_total_drop_the_packet() {
    // 70 resubmits into table 1, each doing 70 into table 2: 4970 lookups
    // without ever nesting deeper than 2, over the 4096 total limit.
    let p = pipeline(vec![
        flow(0, &[], vec![resubmit(1); 70]),
        flow(1, &[], vec![resubmit(2); 70]),
        flow(2, &[], vec![Action::Output(3)]),
    ]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert!(x.actions.is_empty());
    assert_eq!(x.drop, Some(XlateDrop::ResubmitDepth));
    assert_eq!(x.tables.len() as u32, 1 + MAX_RESUBMITS);
}

#[test]
fn output_to_in_port_is_skipped_but_in_port_sends_back() {
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            Action::Output(1),
            Action::Output(ofport::IN_PORT),
            Action::Output(1),
        ],
    )]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(1)]);
}

#[test]
fn flood_and_all_go_everywhere_but_the_ingress_port() {
    let ports = [1, 2, 3, ofport::LOCAL];
    for reserved in [ofport::FLOOD, ofport::ALL] {
        let p = pipeline(vec![flow(0, &[], vec![Action::Output(reserved)])]);
        let x = translate(&p, &ports, &tcp_key(2, 64));
        assert_eq!(x.actions, vec![out(1), out(3), out(ofport::LOCAL)]);
    }
}

#[test]
fn local_needs_a_local_port_and_unknown_ports_are_skipped() {
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            Action::Output(ofport::LOCAL),
            Action::Output(9),
            Action::Output(2),
        ],
    )]);
    let x = translate(&p, &[1, 2], &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);
    let x = translate(&p, &[1, 2, ofport::LOCAL], &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(ofport::LOCAL), out(2)]);
}

#[test]
fn controller_is_not_supported_yet_and_drops_that_output() {
    // (NORMAL is the learning switch now: tests in xlate_normal.rs.)
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![Action::Output(ofport::CONTROLLER), Action::Output(3)],
    )]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(3)]);
}

#[test]
fn resubmit_in_port_changes_the_lookup_only() {
    // resubmit(3,1): table 1 is searched as if the packet came from 3, but
    // its actions run with the real in_port (OVS rule_dpif_lookup_from_table).
    let p = pipeline(vec![
        flow(
            0,
            &[],
            vec![Action::Resubmit {
                in_port: Some(3),
                table: Some(1),
            }],
        ),
        flow(
            1,
            &[(Field::InPort, 3)],
            vec![Action::Output(1), Action::Output(3)],
        ),
    ]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(3)]);
    assert_eq!(x.final_key.in_port, 1);
}

#[test]
fn header_changes_are_committed_lazily_and_minimally() {
    let new_dst = 0x0200_0000_0099u128;
    let p = pipeline(vec![flow(
        0,
        &[IP],
        vec![
            set(Field::EthDst, new_dst),
            set(Field::IpDst, 0x0a00_0002), // same as the packet's: no action
            Action::Output(2),
            Action::Output(3), // nothing changed since: no new set
            set(Field::EthDst, 0x0200_0000_0002), // back to the original
            Action::Output(4),
            set(Field::IpSrc, 0x0b00_0001), // after the last output: never emitted
        ],
    )]);
    let k = tcp_key(1, 64);
    let x = translate(&p, PORTS, &k);
    assert_eq!(
        x.actions,
        vec![
            DpAction::SetEth {
                src: None,
                dst: Some([2, 0, 0, 0, 0, 0x99])
            },
            out(2),
            out(3),
            DpAction::SetEth {
                src: None,
                dst: Some([2, 0, 0, 0, 0, 2])
            },
            out(4),
        ]
    );
    assert_eq!(x.final_key.nw_src, 0x0b00_0001);
    assert_eq!(x.outputs[0].1.dl_dst, [2, 0, 0, 0, 0, 0x99]);
    assert_eq!(x.outputs[2].1.dl_dst, [2, 0, 0, 0, 0, 2]);
    // Committing compared dl_dst and nw_dst with the packet's originals.
    assert_eq!(x.mask.dl_dst, [0xff; 6]);
    assert_eq!(x.mask.nw_dst, u32::MAX);
    // nw_src was written after the last output: never compared.
    assert_eq!(x.mask.nw_src, 0);
}

#[test]
fn l4_arp_and_tunnel_sets_use_the_packets_protocol() {
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            set(Field::TpDst, 8080),
            set(Field::TunId, 5),
            set(Field::TunDst, 0x0a00_00fe),
            Action::Output(2),
        ],
    )]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(
        x.actions,
        vec![
            DpAction::SetTunnel {
                tun_id: 5,
                src: 0,
                dst: 0x0a00_00fe
            },
            DpAction::SetTcp {
                src: None,
                dst: Some(8080)
            },
            out(2)
        ]
    );
    assert_eq!(x.mask.nw_proto, 0xff);

    let mut udp = tcp_key(1, 64);
    udp.nw_proto = ipproto::UDP;
    let x = translate(&p, PORTS, &udp);
    assert!(x.actions.contains(&DpAction::SetUdp {
        src: None,
        dst: Some(8080)
    }));

    // tcp_dst on a UDP packet: prerequisites unmet, ignored (OVS set_field).
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![set(Field::TcpDst, 1), Action::Output(2)],
    )]);
    let x = translate(&p, PORTS, &udp);
    assert_eq!(x.actions, vec![out(2)]);

    let mut arp = FlowKey::ZERO;
    arp.in_port = 1;
    arp.dl_type = ethertype::ARP;
    arp.nw_proto = 1;
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            set(Field::ArpOp, 2),
            set(Field::ArpTpa, 0x0a00_0001),
            Action::Output(2),
        ],
    )]);
    let x = translate(&p, PORTS, &arp);
    assert_eq!(
        x.actions,
        vec![
            DpAction::SetArp {
                op: Some(2),
                spa: None,
                tpa: Some(0x0a00_0001),
                sha: None,
                tha: None
            },
            out(2)
        ]
    );
}

fn tagged(vid: u16, pcp: u16) -> FlowKey {
    let mut k = tcp_key(1, 64);
    k.vlan_tci = VLAN_CFI | (pcp << 13) | vid;
    k
}

#[test]
fn vlan_push_pop_and_modify() {
    // mod_vlan_vid:5 without dl_vlan in the match = push_vlan + set vlan_vid.
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            Action::PushVlan(0x8100),
            set(Field::VlanVid, 0x1000 | 5),
            Action::Output(2),
        ],
    )]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(
        x.actions,
        vec![
            DpAction::PushVlan {
                tpid: 0x8100,
                tci: 5
            },
            out(2)
        ]
    );
    assert_eq!(x.final_key.vlan_tci, VLAN_CFI | 5);
    // On a tagged packet the same flow adds a second tag, outer pcp 0.
    let x = translate(&p, PORTS, &tagged(7, 3));
    assert_eq!(
        x.actions,
        vec![
            DpAction::PushVlan {
                tpid: 0x8100,
                tci: 5
            },
            out(2)
        ]
    );

    // mod_vlan_vid:5 with dl_vlan in the match = modify, PCP kept.
    let p = pipeline(vec![flow(
        0,
        &[(Field::DlVlan, 7)],
        vec![set(Field::VlanVid, 0x1000 | 5), Action::Output(2)],
    )]);
    let x = translate(&p, PORTS, &tagged(7, 3));
    assert_eq!(
        x.actions,
        vec![DpAction::SetVlan { tci: (3 << 13) | 5 }, out(2)]
    );

    // strip_vlan.
    let p = pipeline(vec![flow(0, &[], vec![Action::PopVlan, Action::Output(2)])]);
    let x = translate(&p, PORTS, &tagged(7, 0));
    assert_eq!(x.actions, vec![DpAction::PopVlan, out(2)]);
    assert_eq!(x.final_key.vlan_tci, 0);
    // ... on an untagged packet: nothing to do.
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);

    // push then pop restores the packet: no VLAN action at all.
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![Action::PushVlan(0x8100), Action::PopVlan, Action::Output(2)],
    )]);
    let x = translate(&p, PORTS, &tagged(7, 2));
    assert_eq!(x.actions, vec![out(2)]);

    // pop, output, push a new tag, output: per-output commits.
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            Action::PopVlan,
            Action::Output(2),
            Action::PushVlan(0x88a8),
            set(Field::VlanVid, 0x1000 | 9),
            Action::Output(3),
        ],
    )]);
    let x = translate(&p, PORTS, &tagged(7, 0));
    assert_eq!(
        x.actions,
        vec![
            DpAction::PopVlan,
            out(2),
            DpAction::PushVlan {
                tpid: 0x88a8,
                tci: 9
            },
            out(3)
        ]
    );

    // push on a tagged packet, then pop: back to the original single tag.
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            Action::PushVlan(0x8100),
            Action::Output(2),
            Action::PopVlan,
            Action::Output(3),
        ],
    )]);
    let x = translate(&p, PORTS, &tagged(7, 1));
    assert_eq!(
        x.actions,
        vec![
            DpAction::PushVlan {
                tpid: 0x8100,
                tci: 0
            },
            out(2),
            DpAction::PopVlan,
            out(3)
        ]
    );
    assert_eq!(x.final_key.vlan_tci, VLAN_CFI | (1 << 13) | 7);
}

#[test]
fn megaflow_mask_covers_only_what_was_looked_at() {
    // ip,nw_dst=10.0.0.0/24 -> output:2
    let mut m = Match::CATCHALL;
    m.set_exact(Field::EthType, 0x0800);
    m.set_masked(Field::IpDst, 0x0a00_0000, 0xffff_ff00);
    let p = pipeline(vec![Flow {
        matches: m,
        actions: vec![Action::Output(2)],
        ..Flow::default()
    }]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);
    let mut expect = FlowKey::ZERO;
    expect.in_port = u32::MAX;
    expect.dl_type = u16::MAX;
    expect.vlan_tci = VLAN_CFI;
    expect.nw_frag = 3;
    expect.nw_dst = 0xffff_ff00;
    // Every megaflow matches the recirculation pass exactly (conntrack).
    expect.recirc_id = u32::MAX;
    assert_eq!(x.mask, expect);
}

#[test]
fn move_unwildcards_its_source_and_registers_are_never_committed() {
    // move:NXM_OF_IP_SRC[0..7]->NXM_NX_REG0[0..7], resubmit(,1)
    // table=1,reg0=0x1 -> output:2 ; table=1 (lower) -> output:3
    let p = pipeline(vec![
        flow(
            0,
            &[IP],
            vec![
                Action::Move {
                    src: FieldRange {
                        field: Field::IpSrc,
                        ofs: 0,
                        n_bits: 8,
                    },
                    dst: FieldRange {
                        field: Field::Reg0,
                        ofs: 0,
                        n_bits: 8,
                    },
                },
                resubmit(1),
            ],
        ),
        Flow {
            priority: 100,
            ..flow(1, &[(Field::Reg0, 1)], vec![Action::Output(2)])
        },
        Flow {
            priority: 1,
            ..flow(1, &[], vec![Action::Output(3)])
        },
    ]);
    let k = tcp_key(1, 64); // nw_src 10.0.0.1: low byte 1
    let x = translate(&p, PORTS, &k);
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.mask.nw_src, 0xff);
    assert_eq!(x.final_key.regs[0], 1);
    let mut k2 = k;
    k2.nw_src = 0x0a00_0005;
    assert_eq!(translate(&p, PORTS, &k2).actions, vec![out(3)]);
}

#[test]
fn load_and_write_metadata_feed_later_tables() {
    let p = pipeline(vec![
        flow(
            0,
            &[],
            vec![
                Action::Load {
                    dst: FieldRange {
                        field: Field::Reg1,
                        ofs: 8,
                        n_bits: 8,
                    },
                    value: 0xab,
                },
                Action::WriteMetadata {
                    value: 0x5,
                    mask: 0xff,
                },
                Action::GotoTable(1),
            ],
        ),
        flow(
            1,
            &[(Field::Reg1, 0xab00), (Field::Metadata, 5)],
            vec![Action::Output(4)],
        ),
    ]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(4)]);
    // A load past the field's width is ignored, not a panic.
    let p = pipeline(vec![flow(
        0,
        &[],
        vec![
            Action::Load {
                dst: FieldRange {
                    field: Field::Reg1,
                    ofs: 30,
                    n_bits: 8,
                },
                value: 1,
            },
            Action::Output(2),
        ],
    )]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.final_key.regs[1], 0);
}

#[test]
fn backward_goto_is_refused_defensively() {
    let p = pipeline(vec![
        flow(1, &[], vec![Action::Output(2), Action::GotoTable(1)]),
        flow(0, &[], vec![Action::GotoTable(1)]),
    ]);
    let x = translate(&p, PORTS, &tcp_key(1, 64));
    assert_eq!(x.actions, vec![out(2)]);
    assert_eq!(x.tables, vec![(0, true), (1, true)]);
}
