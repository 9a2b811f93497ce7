//! The `route` action towards a port that resolves next hops itself (a
//! routed uplink, `route::uplink`): translation hands the port the IPv4 next
//! hop (`SetNextHop`) instead of a destination MAC, static neighbours still
//! win, other ports still drop as `no_neighbour`, and executing the actions
//! leaves the next hop on the packet for the port.

use switch::datapath::{apply, DpAction, ExecCtx};
use switch::flow::key::{ethertype, ipproto};
use switch::flow::{Action, Field, Flow, FlowKey, Match, PortNo};
use switch::packet::extract::extract;
use switch::packet::{FrameBuilder, Packet};
use switch::pipeline::xlate::{translate, XlateDrop};
use switch::pipeline::Pipeline;
use switch::route::{Route, RouteSet};

const PORTS: &[PortNo] = &[1, 2, 3];
const UPLINK: PortNo = 3;
const NH: u32 = 0xc0a8_0a02; // 192.168.10.2

fn pipeline(rs: RouteSet) -> Pipeline {
    let mut p = Pipeline::new();
    let mut ip = Match::CATCHALL;
    ip.set_masked(Field::EthType, 0x0800, 0xffff);
    p.add_flow(Flow {
        table: 0,
        priority: 10,
        matches: ip,
        actions: vec![Action::Route { table: 0 }],
        ..Flow::default()
    });
    p.set_routes(rs);
    p
}

fn routes(resolver: bool) -> RouteSet {
    let mut rs = RouteSet::new();
    rs.add_route(Route::parse("10.244.2.0/24 via 192.168.10.2 port=3").unwrap())
        .unwrap();
    rs.add_route(Route::parse("192.168.10.0/24 port=3").unwrap())
        .unwrap();
    rs.set_resolver(UPLINK, resolver);
    rs
}

fn key(dst: u32) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    k.dl_type = ethertype::IPV4;
    k.dl_src = [2, 0, 0, 0, 1, 1];
    k.dl_dst = [0x0a, 0x58, 0, 0, 0, 1];
    k.nw_src = 0x0af4_0102;
    k.nw_dst = dst;
    k.nw_ttl = 64;
    k.nw_proto = ipproto::ICMP;
    k
}

fn nexthop_before_output(actions: &[DpAction]) -> Option<u32> {
    let out = actions
        .iter()
        .position(|a| *a == DpAction::Output(UPLINK))?;
    actions[..out].iter().rev().find_map(|a| match a {
        DpAction::SetNextHop(ip) => Some(*ip),
        _ => None,
    })
}

#[test]
fn resolving_port_gets_the_next_hop_not_a_mac() {
    let p = pipeline(routes(true));
    let x = translate(&p, PORTS, &key(0x0af4_0202));
    assert_eq!(x.drop, None, "{:?}", x.actions);
    assert_eq!(
        nexthop_before_output(&x.actions),
        Some(NH),
        "{:?}",
        x.actions
    );
    // TTL decremented; the destination MAC is left to the port.
    assert!(x
        .actions
        .iter()
        .any(|a| matches!(a, DpAction::SetIpv4 { ttl: Some(63), .. })));
    assert!(
        !x.actions
            .iter()
            .any(|a| matches!(a, DpAction::SetEth { dst: Some(_), .. })),
        "{:?}",
        x.actions
    );
    // The megaflow covers the whole /24 (the via next hop does not depend
    // on the host bits).
    assert_eq!(x.mask.nw_dst, 0xffff_ff00);

    // Connected route: the destination itself is the next hop (exact match).
    let x = translate(&p, PORTS, &key(0xc0a8_0a07));
    assert_eq!(nexthop_before_output(&x.actions), Some(0xc0a8_0a07));
    assert_eq!(x.mask.nw_dst, u32::MAX);
}

#[test]
fn static_neighbour_wins_and_other_ports_still_drop() {
    let mut rs = routes(true);
    rs.add_neighbour("192.168.10.2".parse().unwrap(), [2, 0, 0, 0, 0x10, 2], None);
    let x = translate(&pipeline(rs), PORTS, &key(0x0af4_0202));
    assert_eq!(nexthop_before_output(&x.actions), None, "{:?}", x.actions);
    assert!(x.actions.iter().any(|a| matches!(
        a,
        DpAction::SetEth {
            dst: Some([2, 0, 0, 0, 0x10, 2]),
            ..
        }
    )));

    let x = translate(&pipeline(routes(false)), PORTS, &key(0x0af4_0202));
    assert_eq!(x.drop, Some(XlateDrop::NoNeighbour));
    assert!(!x.actions.contains(&DpAction::Output(UPLINK)));
}

#[test]
fn executing_the_actions_leaves_the_next_hop_for_the_port() {
    let p = pipeline(routes(true));
    let frame = FrameBuilder::new()
        .eth([2, 0, 0, 0, 1, 1], [0x0a, 0x58, 0, 0, 0, 1])
        .ipv4([10, 244, 1, 2], [10, 244, 2, 2])
        .icmp_echo(1, 1)
        .build();
    let mut pkt = Packet::from_slice(&frame).unwrap();
    let mut k = FlowKey::ZERO;
    let lay = extract(pkt.data(), 1, &mut k);
    let x = translate(&p, PORTS, &k);
    let mut ctx = ExecCtx::new(&k, lay);
    let mut nexthop_at_output = None;
    for a in &x.actions {
        if let DpAction::Output(o) = a {
            assert_eq!(*o, UPLINK);
            nexthop_at_output = Some(ctx.nexthop);
            break;
        }
        apply(&mut pkt, &mut ctx, a).unwrap();
    }
    assert_eq!(nexthop_at_output, Some(NH));
    assert_eq!(pkt.data()[22], 63, "TTL written");
}
