//! Megaflow soundness of the `route` action: for random route sets (nested
//! prefixes, ECMP routes, connected routes, missing neighbours) and random
//! packets, every packet that agrees with the translated packet on the bits
//! of the megaflow mask must translate to the same datapath actions and the
//! same drop verdict. This is what makes the prefix-tree un-wildcarding
//! (`route::lpm`) safe: un-wildcard a bit too few and some other prefix could
//! route a packet the cached megaflow covers.
//!
//! A second property checks that the mask is also tight: the number of
//! destination bits un-wildcarded equals the naive minimum over every
//! prefix (`max min(lcp + 1, len)`) for single-next-hop routed packets.

use std::net::IpAddr;

use proptest::prelude::*;

use switch::flow::key::{ethertype, ipproto, KEY_WORDS};
use switch::flow::{Action, Field, Flow, FlowKey, Match, PortNo};
use switch::pipeline::xlate::translate;
use switch::pipeline::Pipeline;
use switch::route::{NextHop, Route, RouteSet};

const PORTS: &[PortNo] = &[1, 2, 3, 4];

/// IPv4 addresses from a few clusters, so prefixes nest.
fn v4_addr() -> impl Strategy<Value = u32> {
    (
        prop::sample::select(vec![0x0a00_0000u32, 0x0a01_0200, 0xc0a8_0000, 0]),
        any::<u32>(),
        0u32..33,
    )
        .prop_map(|(base, r, keep)| {
            // Keep the top `keep` bits of the base, random below.
            let m = if keep == 0 {
                0
            } else {
                u32::MAX << (32 - keep)
            };
            (base & m) | (r & !m)
        })
}

fn v6_addr() -> impl Strategy<Value = [u8; 16]> {
    (v4_addr(), any::<u64>()).prop_map(|(hi, lo)| {
        let x = (u128::from(0xfd00_0000u32 | (hi >> 8)) << 96) | u128::from(lo);
        x.to_be_bytes()
    })
}

#[derive(Clone, Debug)]
struct RouteGen {
    v6: bool,
    v4: u32,
    a6: [u8; 16],
    len: u8,
    hops: Vec<(u8, u32, bool)>,
    table: u8,
}

fn route_gen() -> impl Strategy<Value = RouteGen> {
    (
        any::<bool>(),
        v4_addr(),
        v6_addr(),
        0u8..=32,
        prop::collection::vec((0u8..4, 1u32..=3, any::<bool>()), 1..4),
        0u8..2,
        any::<bool>(),
    )
        .prop_map(|(v6, v4, a6, len, hops, table, connected)| RouteGen {
            v6,
            v4,
            a6,
            // IPv6 prefixes: lengths in the interesting region (near /8../40).
            len: if v6 { len + 8 } else { len },
            hops: if connected { hops[..1].to_vec() } else { hops },
            table,
        })
}

fn build_routes(gens: &[RouteGen], connected_mask: u8) -> RouteSet {
    let mut rs = RouteSet::new();
    for (i, g) in gens.iter().enumerate() {
        let connected = g.hops.len() == 1 && (connected_mask >> (i % 8)) & 1 == 1;
        let (addr, len) = if g.v6 {
            let l = u32::from(g.len);
            let x = u128::from_be_bytes(g.a6);
            let m = if l == 0 { 0 } else { u128::MAX << (128 - l) };
            (IpAddr::from((x & m).to_be_bytes()), g.len)
        } else {
            let l = u32::from(g.len);
            let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            (IpAddr::from((g.v4 & m).to_be_bytes()), g.len)
        };
        let nexthops = g
            .hops
            .iter()
            .enumerate()
            .map(|(j, (port, w, with_mac))| NextHop {
                via: (!connected).then(|| {
                    if g.v6 {
                        IpAddr::from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, *port, j as u8])
                    } else {
                        IpAddr::from([192, 168, *port, j as u8])
                    }
                }),
                port: u32::from(*port) + 1,
                mac: with_mac.then_some([2, 0, 0, 0, *port, j as u8]),
                weight: *w,
            })
            .collect();
        let _ = rs.add_route(Route {
            table: g.table,
            addr,
            len,
            nexthops,
        });
    }
    // Some neighbours: gateways with even last byte, and a few destinations.
    for p in 0u8..4 {
        rs.add_neighbour(IpAddr::from([192, 168, p, 0]), [2, 0, 0, 1, p, 0], None);
        rs.add_neighbour(
            IpAddr::from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, p, 0]),
            [2, 0, 0, 1, p, 0],
            None,
        );
    }
    rs.add_neighbour(IpAddr::from([10, 0, 0, 1]), [2, 0, 0, 2, 0, 1], None);
    rs.set_router_mac(None, Some([2, 0, 0, 0, 0xff, 0xff]));
    rs.set_router_mac(Some(2), Some([2, 0, 0, 0, 0xff, 2]));
    rs
}

fn pipeline(rs: RouteSet) -> Pipeline {
    let mut p = Pipeline::new();
    let mut ip = Match::CATCHALL;
    ip.set_masked(Field::EthType, 0x0800, 0xffff);
    let mut ip6 = Match::CATCHALL;
    ip6.set_masked(Field::EthType, 0x86dd, 0xffff);
    let mut ten = ip;
    ten.set_masked(Field::IpSrc, 0x0a00_0000, 0xff00_0000);
    for (m, prio, actions) in [
        (ip, 10, vec![Action::Route { table: 0 }]),
        (ip6, 10, vec![Action::Route { table: 0 }, Action::Output(4)]),
        // Sources in 10/8 use table 1, and a copy goes to port 1 first.
        (ten, 20, vec![Action::Output(1), Action::Route { table: 1 }]),
    ] {
        p.add_flow(Flow {
            table: 0,
            priority: prio,
            matches: m,
            actions,
            ..Flow::default()
        });
    }
    p.set_routes(rs);
    p
}

fn key() -> impl Strategy<Value = FlowKey> {
    (
        (
            1u32..=4,
            prop::sample::select(vec![ethertype::IPV4, ethertype::IPV6, ethertype::ARP]),
            v4_addr(),
            v4_addr(),
            v6_addr(),
        ),
        (
            prop::sample::select(vec![0u8, 1, 2, 64]),
            prop::sample::select(vec![ipproto::TCP, ipproto::UDP, ipproto::ICMP]),
            any::<u16>(),
            any::<u16>(),
            prop::sample::select(vec![0u8, 1, 3]),
        ),
    )
        .prop_map(
            |((in_port, dl_type, src, dst, d6), (ttl, proto, sp, dp, frag))| {
                let mut k = FlowKey::ZERO;
                k.in_port = in_port;
                k.dl_type = dl_type;
                k.dl_dst = [2, 0, 0, 0, 0xff, 0xff];
                k.dl_src = [2, 0, 0, 0, 0, 1];
                k.nw_src = src;
                k.nw_dst = dst;
                k.ipv6_src = [0xfd, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                k.ipv6_dst = d6;
                k.nw_ttl = ttl;
                k.nw_proto = proto;
                k.nw_frag = frag;
                k.tp_src = sp;
                k.tp_dst = dp;
                k
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn route_megaflow_is_sound(
        gens in prop::collection::vec(route_gen(), 0..24),
        connected in any::<u8>(),
        k in key(),
        noise in prop::array::uniform32(any::<u64>()), // >= KEY_WORDS
        near in any::<u32>(),
    ) {
        let p = pipeline(build_routes(&gens, connected));
        let x = translate(&p, PORTS, &k);
        // key2: the same bits under the mask; elsewhere either random, or
        // the original with one bit flipped (neighbours in address space are
        // where a too-wide mask shows).
        let mut k2 = k;
        let mw = *x.mask.words();
        for (i, w) in k2.words_mut().iter_mut().enumerate().take(KEY_WORDS) {
            let n = if near % 2 == 0 { noise[i] } else { *w ^ (1u64 << ((near >> 1) % 64)) };
            *w = (*w & mw[i]) | (n & !mw[i]);
        }
        let x2 = translate(&p, PORTS, &k2);
        prop_assert_eq!(&x.actions, &x2.actions, "mask {:?}\nkey {:?}\nkey2 {:?}", x.mask, k, k2);
        prop_assert_eq!(x.drop, x2.drop);
    }

    #[test]
    fn route_mask_is_minimal_for_a_plain_route(
        gens in prop::collection::vec(route_gen(), 1..12),
        k in key(),
    ) {
        // Only IPv4, single next hop with a MAC, TTL 64, table 0, source
        // outside 10/8: the destination mask is exactly the LPM's deciding bits.
        let gens: Vec<RouteGen> = gens
            .into_iter()
            .map(|mut g| {
                g.v6 = false;
                g.len = g.len.min(32);
                g.table = 0;
                g.hops.truncate(1);
                g.hops[0].2 = true;
                g
            })
            .collect();
        let rs = build_routes(&gens, 0);
        let mut k = k;
        k.dl_type = ethertype::IPV4;
        k.nw_ttl = 64;
        k.nw_src = 0x0b00_0001;
        let p = pipeline(rs);
        let x = translate(&p, PORTS, &k);
        // Naive: max over prefixes of min(lcp + 1, len).
        let mut want = 0u32;
        for r in p.routes().routes() {
            let IpAddr::V4(a) = r.addr else { continue };
            let lcp = (u32::from(a) ^ k.nw_dst).leading_zeros();
            want = want.max((lcp + 1).min(u32::from(r.len)));
        }
        prop_assert_eq!(x.mask.nw_dst.count_ones(), want, "key {:?}", k);
        prop_assert_eq!(x.mask.nw_dst.leading_ones(), want);
    }
}
