//! Translation of the `NORMAL` action (OVS `xlate_normal`): where it sends a
//! packet for a given MAC table, that the flood leaves out the ingress port,
//! what it asks the datapath to learn, and the megaflow mask: everything
//! NORMAL read (dl_src, dl_dst, the VLAN, in_port) exact, nothing else.

use switch::datapath::DpAction;
use switch::flow::key::{ethertype, ipproto, VLAN_CFI};
use switch::flow::{ofport, Action, Flow, FlowKey, Match, PortNo};
use switch::pipeline::l2::{FdbKey, FdbView, MacTable};
use switch::pipeline::trace::trace_l2;
use switch::pipeline::xlate::translate_l2;
use switch::pipeline::Pipeline;

const PORTS: &[PortNo] = &[1, 2, 3, 4];

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

fn normal_pipeline() -> Pipeline {
    let mut p = Pipeline::new();
    p.add_flow(Flow {
        table: 0,
        matches: Match::CATCHALL,
        actions: vec![Action::Output(ofport::NORMAL)],
        ..Flow::default()
    });
    p
}

fn key(in_port: PortNo, src: [u8; 6], dst: [u8; 6], vlan_tci: u16) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.in_port = in_port;
    k.dl_src = src;
    k.dl_dst = dst;
    k.vlan_tci = vlan_tci;
    k.dl_type = ethertype::IPV4;
    k.nw_src = 0x0a00_0001;
    k.nw_dst = 0x0a00_0002;
    k.nw_proto = ipproto::UDP;
    k.nw_ttl = 64;
    k.tp_src = 1000;
    k.tp_dst = 2000;
    k
}

fn view(entries: &[(u16, u8, PortNo)]) -> FdbView {
    let mut t = MacTable::default();
    for (vlan, m, p) in entries {
        t.learn(
            FdbKey {
                vlan: *vlan,
                mac: mac(*m),
            },
            *p,
            0,
        );
    }
    t.view()
}

fn outputs(a: &[DpAction]) -> Vec<PortNo> {
    a.iter()
        .filter_map(|a| match a {
            DpAction::Output(p) => Some(*p),
            _ => None,
        })
        .collect()
}

#[test]
fn unknown_unicast_floods_every_port_but_the_ingress_and_asks_to_learn() {
    let (x, uses) = translate_l2(
        &normal_pipeline(),
        PORTS,
        &key(2, mac(1), mac(9), 0),
        &view(&[]),
    );
    assert_eq!(outputs(&x.actions), vec![1, 3, 4]);
    assert_eq!(uses.len(), 1);
    assert!(uses[0].learn);
    assert_eq!(
        uses[0].src,
        FdbKey {
            vlan: 0,
            mac: mac(1)
        }
    );
    assert_eq!(uses[0].in_port, 2);
}

#[test]
fn known_unicast_goes_to_the_learned_port_only() {
    let v = view(&[(0, 1, 2), (0, 3, 4)]);
    let (x, uses) = translate_l2(&normal_pipeline(), PORTS, &key(2, mac(1), mac(3), 0), &v);
    assert_eq!(x.actions, vec![DpAction::Output(4)]);
    assert!(!uses[0].learn, "the source is already known on its port");
    // The same source from another port: still unicast, and a move to learn.
    let (x, uses) = translate_l2(&normal_pipeline(), PORTS, &key(3, mac(1), mac(3), 0), &v);
    assert_eq!(x.actions, vec![DpAction::Output(4)]);
    assert!(uses[0].learn);
}

#[test]
fn destination_learned_on_the_ingress_port_is_dropped() {
    let v = view(&[(0, 3, 2)]);
    let (x, _) = translate_l2(&normal_pipeline(), PORTS, &key(2, mac(1), mac(3), 0), &v);
    assert!(x.actions.is_empty());
    assert!(x.outputs.is_empty());
}

#[test]
fn broadcast_and_multicast_flood_even_when_known_and_bpdus_drop() {
    let v = view(&[(0, 1, 1)]);
    let p = normal_pipeline();
    let (x, _) = translate_l2(&p, PORTS, &key(1, mac(1), [0xff; 6], 0), &v);
    assert_eq!(outputs(&x.actions), vec![2, 3, 4]);
    let (x, _) = translate_l2(&p, PORTS, &key(4, mac(1), [0x01, 0, 0x5e, 0, 0, 1], 0), &v);
    assert_eq!(outputs(&x.actions), vec![1, 2, 3]);
    let (x, _) = translate_l2(
        &p,
        PORTS,
        &key(1, mac(1), [0x01, 0x80, 0xc2, 0, 0, 0], 0),
        &v,
    );
    assert!(x.actions.is_empty(), "802.1D reserved group: not forwarded");
}

#[test]
fn a_tagged_frame_learns_and_looks_up_in_its_own_vlan_and_keeps_its_tag() {
    // MAC 3 is known in VLAN 0 only: in VLAN 10 it floods, tag untouched.
    let v = view(&[(0, 3, 4)]);
    let (x, uses) = translate_l2(
        &normal_pipeline(),
        PORTS,
        &key(1, mac(1), mac(3), VLAN_CFI | 10),
        &v,
    );
    assert_eq!(
        x.actions,
        vec![2, 3, 4]
            .into_iter()
            .map(DpAction::Output)
            .collect::<Vec<_>>()
    );
    assert_eq!(uses[0].src.vlan, 10);
    assert_eq!(uses[0].dst.vlan, 10);
    let v = view(&[(10, 3, 4)]);
    let (x, _) = translate_l2(
        &normal_pipeline(),
        PORTS,
        &key(1, mac(1), mac(3), VLAN_CFI | 10),
        &v,
    );
    assert_eq!(x.actions, vec![DpAction::Output(4)]);
}

#[test]
fn megaflow_mask_has_exactly_what_normal_read() {
    for v in [view(&[]), view(&[(0, 3, 4)])] {
        let (x, _) = translate_l2(&normal_pipeline(), PORTS, &key(1, mac(1), mac(3), 0), &v);
        let m = x.mask;
        assert_eq!(m.dl_src, [0xff; 6]);
        assert_eq!(m.dl_dst, [0xff; 6]);
        assert_eq!(m.in_port, u32::MAX);
        assert_eq!(m.vlan_tci & 0x1fff, 0x1fff, "VID and tag presence");
        // L3/L4 fields were never read: wildcarded, so one megaflow serves
        // every IP flow between the two MACs.
        assert_eq!(m.nw_src, 0);
        assert_eq!(m.nw_dst, 0);
        assert_eq!(m.tp_src, 0);
        assert_eq!(m.tp_dst, 0);
        assert_eq!(m.nw_ttl, 0);
    }
}

#[test]
fn keys_equal_under_the_mask_translate_alike() {
    // Megaflow soundness for NORMAL: vary what the mask leaves out.
    let v = view(&[(0, 3, 4), (0, 1, 1)]);
    let p = normal_pipeline();
    let base = key(1, mac(1), mac(3), 0);
    let (x0, _) = translate_l2(&p, PORTS, &base, &v);
    let mut other = base;
    other.nw_src = 0x0b00_0001;
    other.tp_dst = 53;
    other.nw_ttl = 3;
    let (x1, _) = translate_l2(&p, PORTS, &other, &v);
    assert_eq!(x0.actions, x1.actions);
    assert_eq!(x0.mask, x1.mask);
}

#[test]
fn normal_after_a_rewrite_uses_the_rewritten_destination() {
    // mod_dl_dst then NORMAL: the lookup sees the new MAC and the rewrite
    // is committed before the output.
    let mut p = Pipeline::new();
    p.add_flow(Flow {
        table: 0,
        matches: Match::CATCHALL,
        actions: vec![
            Action::SetField {
                field: switch::flow::Field::EthDst,
                value: u128::from_be_bytes({
                    let mut b = [0u8; 16];
                    b[10..].copy_from_slice(&mac(3));
                    b
                }),
                mask: (1u128 << 48) - 1,
            },
            Action::Output(ofport::NORMAL),
        ],
        ..Flow::default()
    });
    let v = view(&[(0, 3, 4)]);
    let (x, uses) = translate_l2(&p, PORTS, &key(1, mac(1), mac(9), 0), &v);
    assert_eq!(outputs(&x.actions), vec![4]);
    assert!(matches!(x.actions[0], DpAction::SetEth { .. }));
    assert_eq!(uses[0].dst.mac, mac(3));
}

#[test]
fn trace_reports_learning_and_flooding_in_ovs_words() {
    let r = trace_l2(
        &normal_pipeline(),
        PORTS,
        &key(1, mac(1), mac(9), 0),
        "br0",
        &view(&[]),
    );
    let text = r.to_string();
    assert!(
        text.contains("learned that 02:00:00:00:00:01 is on port 1 in VLAN 0"),
        "{text}"
    );
    assert!(
        text.contains("no learned MAC for destination, flooding"),
        "{text}"
    );
    let r = trace_l2(
        &normal_pipeline(),
        PORTS,
        &key(1, mac(1), mac(3), 0),
        "br0",
        &view(&[(0, 3, 4), (0, 1, 1)]),
    );
    let text = r.to_string();
    assert!(text.contains("forwarding to learned port"), "{text}");
    assert!(!text.contains("learned that"), "{text}");
}
