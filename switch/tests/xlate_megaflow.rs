//! Megaflow soundness: for random small pipelines and random packets, every
//! packet that agrees with the translated packet on the bits of the
//! megaflow mask must translate to the same datapath actions. If this fails,
//! the datapath would apply one packet's actions to another packet that the
//! tables treat differently.

use proptest::prelude::*;

use switch::flow::key::{ethertype, ipproto, KEY_WORDS};
use switch::flow::{ofport, Action, Field, FieldRange, Flow, FlowKey, Match, PortNo};
use switch::pipeline::xlate::translate;
use switch::pipeline::Pipeline;

const PORTS: &[PortNo] = &[1, 2, 3, 4, 5];
const N_TABLES: u8 = 4;

/// One match clause: a field, a value and a mask.
fn match_clause() -> impl Strategy<Value = (Field, u128, u128)> {
    prop_oneof![
        (1u128..=4).prop_map(|v| (Field::InPort, v, u128::from(u32::MAX))),
        prop::sample::select(vec![0x0800u128, 0x86dd, 0x0806]).prop_map(|v| (
            Field::EthType,
            v,
            0xffff
        )),
        (
            prop::sample::select(vec![0x0a00_0001u128, 0x0a00_0002, 0x0a00_0102]),
            prop::sample::select(vec![0xffff_ffffu128, 0xffff_ff00, 0xffff_0000, 0x1]),
        )
            .prop_map(|(v, m)| (Field::IpDst, v, m)),
        prop::sample::select(vec![0u128, 1, 2, 64]).prop_map(|v| (Field::NwTtl, v, 0xff)),
        prop::sample::select(vec![6u128, 17, 1]).prop_map(|v| (Field::NwProto, v, 0xff)),
        prop::sample::select(vec![80u128, 443]).prop_map(|v| (Field::TpDst, v, 0xffff)),
        (0u128..3, prop::sample::select(vec![0xffff_ffffu128, 0x1])).prop_map(|(v, m)| (
            Field::Reg0,
            v,
            m
        )),
        (0u128..3).prop_map(|v| (Field::Reg1, v, 0xff)),
        prop::sample::select(vec![0u128, 0x1000]).prop_map(|v| (Field::VlanTci, v, 0x1000)),
        (0u128..8).prop_map(|v| (Field::VlanTci, 0x1000 | v, 0x1fff)),
        prop::sample::select(vec![0u128, 5]).prop_map(|v| (Field::Metadata, v, 0xff)),
        prop::sample::select(vec![0x0200_0000_0002u128, 0x0200_0000_0009]).prop_map(|v| (
            Field::EthDst,
            v,
            0xffff_ffff_ffff
        )),
    ]
}

fn set(field: Field, value: u128) -> Action {
    Action::SetField {
        field,
        value,
        mask: field.info().max_value(),
    }
}

fn range(field: Field, ofs: u32, n_bits: u32) -> FieldRange {
    FieldRange { field, ofs, n_bits }
}

/// One action (goto_table is added separately, as the last one).
fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => prop::sample::select(vec![1u32, 2, 3, 4, 5, 9, ofport::IN_PORT, ofport::FLOOD, ofport::NORMAL])
            .prop_map(Action::Output),
        1 => prop::sample::select(vec![0x0200_0000_0002u128, 0x0200_0000_0009]).prop_map(|v| set(Field::EthDst, v)),
        1 => prop::sample::select(vec![0x0a00_0001u128, 0x0a00_0002, 0x0b00_0001]).prop_map(|v| set(Field::IpDst, v)),
        1 => prop::sample::select(vec![1u128, 64]).prop_map(|v| set(Field::NwTtl, v)),
        1 => (0u128..3).prop_map(|v| set(Field::Reg0, v)),
        1 => prop::sample::select(vec![80u128, 8080]).prop_map(|v| set(Field::TpDst, v)),
        1 => (0u128..4).prop_map(|v| set(Field::VlanVid, 0x1000 | v)),
        1 => (0u128..2).prop_map(|v| set(Field::VlanPcp, v)),
        1 => (0u128..3).prop_map(|v| set(Field::TunId, v)),
        1 => (0u128..4).prop_map(|v| set(Field::IpDscp, v)),
        1 => (0u128..4).prop_map(|v| Action::SetField { field: Field::EthSrc, value: v, mask: 0xff }),
        1 => (0u128..4).prop_map(|v| Action::Load { dst: range(Field::Reg0, 0, 2), value: v }),
        1 => Just(Action::Move { src: range(Field::IpDst, 0, 8), dst: range(Field::Reg0, 0, 8) }),
        1 => Just(Action::Move { src: range(Field::Reg0, 0, 16), dst: range(Field::Reg1, 0, 16) }),
        1 => Just(Action::Move { src: range(Field::TpDst, 0, 16), dst: range(Field::Reg1, 0, 16) }),
        1 => Just(Action::Move { src: range(Field::Reg0, 0, 8), dst: range(Field::NwTtl, 0, 8) }),
        1 => Just(Action::Move { src: range(Field::IpSrc, 0, 32), dst: range(Field::IpDst, 0, 32) }),
        1 => Just(Action::Move { src: range(Field::Metadata, 0, 8), dst: range(Field::TpSrc, 0, 8) }),
        2 => Just(Action::DecTtl),
        1 => Just(Action::PushVlan(0x8100)),
        1 => Just(Action::PopVlan),
        3 => (0..N_TABLES, prop::option::of(prop::sample::select(vec![1u32, 2, 3, ofport::IN_PORT])))
            .prop_map(|(t, in_port)| Action::Resubmit { in_port, table: Some(t) }),
        1 => Just(Action::Resubmit { in_port: None, table: None }),
        1 => (0u64..8).prop_map(|v| Action::WriteMetadata { value: v, mask: 0x7 }),
    ]
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        0..N_TABLES,
        prop::sample::select(vec![1u16, 10, 100]),
        prop::collection::vec(match_clause(), 0..3),
        prop::collection::vec(action(), 0..5),
        prop::option::of(1..=N_TABLES),
    )
        .prop_map(|(table, priority, clauses, mut actions, goto)| {
            let mut matches = Match::CATCHALL;
            for (f, v, m) in clauses {
                matches.set_masked(f, v, m);
            }
            if let Some(t) = goto {
                if t > table {
                    actions.push(Action::GotoTable(t));
                }
            }
            Flow {
                table,
                priority,
                matches,
                actions,
                ..Flow::default()
            }
        })
}

fn key() -> impl Strategy<Value = FlowKey> {
    (
        (
            1u32..=5,
            prop::sample::select(vec![ethertype::IPV4, ethertype::IPV6, ethertype::ARP]),
            prop::sample::select(vec![0x0a00_0001u32, 0x0a00_0002, 0x0a00_0102, 0x0c00_0001]),
            prop::sample::select(vec![0u8, 1, 2, 64]),
            prop::sample::select(vec![ipproto::TCP, ipproto::UDP, ipproto::ICMP]),
        ),
        (
            prop::sample::select(vec![80u16, 443, 22]),
            prop::sample::select(vec![0u16, 0x1005, 0x3007, 0x1000]),
            0u32..3,
            prop::sample::select(vec![0u64, 5]),
            prop::sample::select(vec![0u8, 1, 3]),
            prop::sample::select(vec![[2u8, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 9]]),
        ),
    )
        .prop_map(
            |((in_port, dl_type, nw_dst, ttl, proto), (tp_dst, tci, reg0, md, frag, dst))| {
                let mut k = FlowKey::ZERO;
                k.in_port = in_port;
                k.dl_type = dl_type;
                k.dl_dst = dst;
                k.dl_src = [2, 0, 0, 0, 0, 1];
                k.nw_src = 0x0a00_0063;
                k.nw_dst = nw_dst;
                k.nw_ttl = ttl;
                k.nw_proto = proto;
                k.nw_frag = frag;
                k.tp_src = 1000;
                k.tp_dst = tp_dst;
                k.vlan_tci = tci;
                k.regs[0] = reg0;
                k.metadata = md;
                k
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn megaflow_is_sound(
        flows in prop::collection::vec(flow(), 1..14),
        k in key(),
        noise in prop::array::uniform32(any::<u64>()), // >= KEY_WORDS
    ) {
        let mut p = Pipeline::new();
        for f in flows {
            p.add_flow(f);
        }
        let x = translate(&p, PORTS, &k);
        // key2: the same bits under the mask, anything elsewhere.
        let mut k2 = k;
        let mw = *x.mask.words();
        for (i, w) in k2.words_mut().iter_mut().enumerate().take(KEY_WORDS) {
            *w = (*w & mw[i]) | (noise[i] & !mw[i]);
        }
        let x2 = translate(&p, PORTS, &k2);
        prop_assert_eq!(&x.actions, &x2.actions, "mask {:?}\nkey {:?}\nkey2 {:?}", x.mask, k, k2);
        prop_assert_eq!(x.drop, x2.drop);
        prop_assert_eq!(&x.tables, &x2.tables);
    }
}
