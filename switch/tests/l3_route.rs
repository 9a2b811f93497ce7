//! L3 routing through the real bridge (polling thread, snapshots, caches,
//! memory ports), driven only by control requests: route tables, ECMP,
//! neighbours, the gateway ARP responder flows, TTL handling, drop reasons,
//! persistence.
//!
//! Topology (ofport: name, MAC, IP):
//! 1: pod-a  02:00:00:00:01:02 10.244.1.2 / fd00:1::2   subnet 10.244.1.0/24, gateway .1
//! 2: pod-c  02:00:00:00:02:02 10.244.2.2 / fd00:2::2   subnet 10.244.2.0/24, gateway .1
//! 3: up1    next hop 192.168.0.1 (02:00:00:00:aa:01)
//! 4: up2    next hop 192.168.0.2 (02:00:00:00:aa:02)
//! The router MAC (both gateways) is 02:00:00:00:ff:00.

use std::collections::{BTreeMap, BTreeSet};

use etherparse::{NetHeaders, PacketHeaders};
use serde_json::Value;
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{ErrorBody, ErrorCode, PortEntry, Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::packet::tcp::flags;
use switch::packet::FrameBuilder;
use switch::port::PortStats;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 1, 2];
const MAC_C: [u8; 6] = [2, 0, 0, 0, 2, 2];
const ROUTER: [u8; 6] = [2, 0, 0, 0, 0xff, 0];
const NH1: [u8; 6] = [2, 0, 0, 0, 0xaa, 1];
const NH2: [u8; 6] = [2, 0, 0, 0, 0xaa, 2];
const BCAST: [u8; 6] = [0xff; 6];
const IP_A: [u8; 4] = [10, 244, 1, 2];
const IP_C: [u8; 4] = [10, 244, 2, 2];
const IP_GW1: [u8; 4] = [10, 244, 1, 1];

/// The gateway responder and the routing entry point, as an operator writes them.
const FLOWS: &[&str] = &[
    // ARP for either gateway: answered on the ingress port with the router MAC (OVS's responder).
    "table=0,priority=300,arp,arp_op=1,arp_tpa=10.244.1.1,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:02:00:00:00:ff:00,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0x02000000ff00->NXM_NX_ARP_SHA[],load:0x0af40101->NXM_OF_ARP_SPA[],IN_PORT",
    "table=0,priority=300,arp,arp_op=1,arp_tpa=10.244.2.1,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:02:00:00:00:ff:00,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0x02000000ff00->NXM_NX_ARP_SHA[],load:0x0af40201->NXM_OF_ARP_SPA[],IN_PORT",
    // Traffic to the router MAC is routed.
    "table=0,priority=100,ip,dl_dst=02:00:00:00:ff:00,actions=route",
    "table=0,priority=100,ipv6,dl_dst=02:00:00:00:ff:00,actions=route",
];

struct Sw {
    b: Bridge,
    dir: tempfile::TempDir,
}

impl Sw {
    fn new() -> Sw {
        let dir = tempfile::tempdir().unwrap();
        let b = Sw::start(&dir);
        Sw { b, dir }
    }

    fn start(dir: &tempfile::TempDir) -> Bridge {
        let cfg = DatapathConfig {
            emc_insert_inv_prob: 1,
            ..DatapathConfig::default()
        };
        Bridge::start("br0", StateStore::open(dir.path()).unwrap(), cfg).unwrap()
    }

    /// The routed topology of the module doc.
    fn routed() -> Sw {
        let mut s = Sw::new();
        for (name, no) in [("pod-a", 1), ("pod-c", 2), ("up1", 3), ("up2", 4)] {
            s.ok(Request::AddPort {
                bridge: "br0".into(),
                name: name.into(),
                port_type: "memory".into(),
                ofport: Some(no),
                options: BTreeMap::new(),
            });
        }
        s.ok(Request::AddFlows {
            bridge: "br0".into(),
            flows: FLOWS.iter().map(|f| f.to_string()).collect(),
        });
        s.ok(Request::SetRouterMac {
            bridge: "br0".into(),
            mac: Some("02:00:00:00:ff:00".into()),
            port: None,
        });
        for r in [
            "10.244.1.0/24 port=1",
            "10.244.2.0/24 port=2",
            "fd00:1::/64 port=1",
            "fd00:2::/64 via fd00:2::2 port=2",
            "0.0.0.0/0 via 192.168.0.1 port=3 mac=02:00:00:00:aa:01 via 192.168.0.2 port=4 mac=02:00:00:00:aa:02",
        ] {
            s.route(r);
        }
        for (ip, mac, port) in [
            ("10.244.1.2", "02:00:00:00:01:02", 1),
            ("10.244.2.2", "02:00:00:00:02:02", 2),
            ("fd00:1::2", "02:00:00:00:01:02", 1),
            ("fd00:2::2", "02:00:00:00:02:02", 2),
        ] {
            s.ok(Request::AddNeigh {
                bridge: "br0".into(),
                ip: ip.into(),
                mac: mac.into(),
                port: Some(port),
            });
        }
        s
    }

    fn route(&mut self, r: &str) -> Value {
        self.ok(Request::AddRoute {
            bridge: "br0".into(),
            route: r.into(),
        })
    }

    fn ok(&mut self, req: Request) -> Value {
        let what = format!("{req:?}");
        match self.b.handle(req) {
            Reply::Ok(v) => v,
            Reply::Error(e) => panic!("{what} failed: {e}"),
        }
    }

    fn err(&mut self, req: Request) -> ErrorBody {
        let what = format!("{req:?}");
        match self.b.handle(req) {
            Reply::Ok(v) => panic!("{what} succeeded: {v}"),
            Reply::Error(e) => e,
        }
    }

    fn inject(&mut self, port: &str, frames: &[Vec<u8>]) {
        let v = self.ok(Request::Inject {
            bridge: "br0".into(),
            port: port.into(),
            frames: frames.iter().map(|f| encode_hex(f)).collect(),
        });
        assert_eq!(v["injected"], frames.len());
    }

    fn capture(&mut self, port: &str) -> Vec<Vec<u8>> {
        let v = self.ok(Request::Capture {
            bridge: "br0".into(),
            port: port.into(),
            max: None,
        });
        let frames: Vec<String> = serde_json::from_value(v["frames"].clone()).unwrap();
        frames.iter().map(|h| decode_hex(h).unwrap()).collect()
    }

    fn capture_all(&mut self) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut out = BTreeMap::new();
        for n in ["pod-a", "pod-c", "up1", "up2"] {
            let f = self.capture(n);
            if !f.is_empty() {
                out.insert(n.to_string(), f);
            }
        }
        out
    }

    fn port(&mut self, name: &str) -> PortStats {
        let v = self.ok(Request::DumpPorts {
            bridge: "br0".into(),
            port: Some(name.into()),
        });
        let p: Vec<PortEntry> = serde_json::from_value(v["ports"].clone()).unwrap();
        p[0].stats.clone()
    }

    fn routes_text(&mut self) -> Vec<String> {
        let v = self.ok(Request::DumpRoutes {
            bridge: "br0".into(),
            table: None,
        });
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_string())
            .collect()
    }
}

fn reasons(v: &[(String, u64)]) -> BTreeMap<&str, u64> {
    v.iter().map(|(r, n)| (r.as_str(), *n)).collect()
}

fn tcp(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4], ttl: u8, sport: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth(src, dst)
        .ipv4(sip, dip)
        .ttl(ttl)
        .ip_id(0x1234)
        .tcp(sport, 80, flags::SYN)
        .tcp_seq(1000, 0)
        .build()
}

/// The IPv4 header checksum is valid and the TTL is `ttl`.
fn check_ipv4(frame: &[u8], ttl: u8) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(ip.time_to_live, ttl);
}

#[test]
fn routed_between_subnets_rewrites_macs_and_decrements_ttl() {
    let mut s = Sw::routed();
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, IP_C, 64, 40000)]);
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-c"]);
    let want = tcp(ROUTER, MAC_C, IP_A, IP_C, 63, 40000);
    assert_eq!(out["pod-c"], vec![want.clone()]);
    check_ipv4(&out["pod-c"][0], 63);
    // And back (a cached megaflow must not leak into the reverse direction).
    s.inject("pod-c", &[tcp(MAC_C, ROUTER, IP_C, IP_A, 64, 80)]);
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-a"]);
    assert_eq!(out["pod-a"], vec![tcp(ROUTER, MAC_A, IP_C, IP_A, 63, 80)]);
}

#[test]
fn ipv6_is_routed_with_hop_limit_decremented() {
    let mut s = Sw::routed();
    let a6 = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let c6 = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let f = |src, dst, hl| {
        FrameBuilder::new()
            .eth(src, dst)
            .ipv6(a6, c6)
            .ttl(hl)
            .udp(5000, 53)
            .payload(b"v6")
            .build()
    };
    s.inject("pod-a", &[f(MAC_A, ROUTER, 64)]);
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-c"]);
    assert_eq!(out["pod-c"], vec![f(ROUTER, MAC_C, 63)]);
}

#[test]
fn ttl_one_is_dropped_as_ttl_exceeded_and_no_route_is_counted() {
    let mut s = Sw::routed();
    s.inject(
        "pod-a",
        &[
            tcp(MAC_A, ROUTER, IP_A, IP_C, 1, 1),
            tcp(MAC_A, ROUTER, IP_A, IP_C, 0, 2),
            // 10.244.2.3: connected route, no neighbour entry.
            tcp(MAC_A, ROUTER, IP_A, [10, 244, 2, 3], 64, 3),
        ],
    );
    assert!(s.capture_all().is_empty());
    // Without the default route, 8.8.8.8 has no route.
    s.ok(Request::DelRoute {
        bridge: "br0".into(),
        route: "0.0.0.0/0".into(),
    });
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, [8, 8, 8, 8], 64, 4)]);
    assert!(s.capture_all().is_empty());
    let a = s.port("pod-a");
    assert_eq!(
        reasons(&a.rx_drop_reasons),
        BTreeMap::from([("ttl_exceeded", 2), ("no_neighbour", 1), ("no_route", 1)])
    );
    // TTL 2 still goes through, with TTL 1.
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, IP_C, 2, 5)]);
    let out = s.capture_all();
    check_ipv4(&out["pod-c"][0], 1);
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_flow_on_one_next_hop() {
    let mut s = Sw::routed();
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| tcp(MAC_A, ROUTER, IP_A, [8, 8, 8, 8], 64, 30000 + i))
        .collect();
    let side = |s: &mut Sw| {
        let out = s.capture_all();
        let mut by_port: BTreeMap<u16, String> = BTreeMap::new();
        for (port, fs) in &out {
            for f in fs {
                let h = PacketHeaders::from_ethernet_slice(f).unwrap();
                let Some(etherparse::TransportHeader::Tcp(t)) = h.transport else {
                    panic!("tcp")
                };
                let eth = etherparse::Ethernet2Header::from_slice(f).unwrap().0;
                let want = if port == "up1" { NH1 } else { NH2 };
                assert_eq!(eth.destination, want);
                assert_eq!(eth.source, ROUTER);
                check_ipv4(f, 63);
                by_port.insert(t.source_port, port.clone());
            }
        }
        by_port
    };
    s.inject("pod-a", &frames);
    let first = side(&mut s);
    assert_eq!(first.len(), 64, "every flow forwarded once");
    let used: BTreeSet<&String> = first.values().collect();
    assert_eq!(used.len(), 2, "both next hops carry flows: {first:?}");
    let n1 = first.values().filter(|p| *p == "up1").count();
    assert!(
        (12..=52).contains(&n1),
        "roughly even spread, up1 got {n1} of 64"
    );
    // The same flows again (now from the caches): each on the same next hop.
    s.inject("pod-a", &frames);
    assert_eq!(side(&mut s), first);
    // And after a flush (a route change republishes the pipeline).
    s.route("10.99.0.0/16 via 192.168.0.1 port=3 mac=02:00:00:00:aa:01");
    s.inject("pod-a", &frames);
    assert_eq!(side(&mut s), first);
}

#[test]
fn gateway_arp_is_answered_by_the_responder_flows() {
    let mut s = Sw::routed();
    let req = FrameBuilder::new()
        .eth(MAC_A, BCAST)
        .arp_request(MAC_A, IP_A, IP_GW1)
        .build();
    s.inject("pod-a", &[req]);
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-a"]);
    let want = FrameBuilder::new()
        .eth(ROUTER, MAC_A)
        .arp_reply(ROUTER, IP_GW1, MAC_A, IP_A)
        .build();
    assert_eq!(out["pod-a"], vec![want]);
}

#[test]
fn route_add_and_delete_change_forwarding_and_survive_a_restart() {
    let mut s = Sw::routed();
    let to = [172, 16, 5, 5];
    // 172.16/16 takes the default route (ECMP) first.
    s.route("172.16.0.0/16 via 10.244.2.2 port=2");
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, to, 64, 7)]);
    let out = s.capture_all();
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["pod-c"],
        "via the neighbour 10.244.2.2"
    );
    assert_eq!(out["pod-c"], vec![tcp(ROUTER, MAC_C, IP_A, to, 63, 7)]);
    // A longer prefix wins.
    s.route("172.16.5.0/24 via 192.168.0.2 port=4 mac=02:00:00:00:aa:02");
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, to, 64, 7)]);
    assert_eq!(s.capture_all().keys().collect::<Vec<_>>(), ["up2"]);
    // Deleting it restores the /16.
    s.ok(Request::DelRoute {
        bridge: "br0".into(),
        route: "172.16.5.0/24".into(),
    });
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, to, 64, 7)]);
    assert_eq!(s.capture_all().keys().collect::<Vec<_>>(), ["pod-c"]);

    let before = s.routes_text();
    assert!(
        before.contains(&"172.16.0.0/16 via 10.244.2.2 port 2".to_string()),
        "{before:?}"
    );
    assert!(
        before.contains(&"10.244.1.0/24 port 1 scope link".to_string()),
        "{before:?}"
    );
    // Restart from the state directory: routes, neighbours and router MAC come back.
    let Sw { b, dir } = s;
    drop(b);
    let mut s = Sw {
        b: Sw::start(&dir),
        dir,
    };
    assert_eq!(s.routes_text(), before);
    s.inject("pod-a", &[tcp(MAC_A, ROUTER, IP_A, to, 64, 7)]);
    assert_eq!(
        s.capture_all()["pod-c"],
        vec![tcp(ROUTER, MAC_C, IP_A, to, 63, 7)]
    );
}

#[test]
fn bad_routing_requests_are_errors_that_change_nothing() {
    let mut s = Sw::routed();
    let before = s.routes_text();
    for r in [
        "10.0.0.1/8 via 1.1.1.1 port=1",
        "10.0.0.0/8 via 1.1.1.1",
        "10.0.0.0/8 via fd00::1 port=1",
        "bogus",
    ] {
        let e = s.err(Request::AddRoute {
            bridge: "br0".into(),
            route: r.into(),
        });
        assert_eq!(e.code, ErrorCode::BadRoute, "{r}: {e}");
    }
    let e = s.err(Request::DelRoute {
        bridge: "br0".into(),
        route: "table=3 10.0.0.0/8".into(),
    });
    assert_eq!(e.code, ErrorCode::BadRoute);
    let e = s.err(Request::AddNeigh {
        bridge: "br0".into(),
        ip: "10.0.0.1".into(),
        mac: "nope".into(),
        port: None,
    });
    assert_eq!(e.code, ErrorCode::BadRoute);
    assert_eq!(s.routes_text(), before);
    let e = s.err(Request::AddFlow {
        bridge: "br0".into(),
        flow: "actions=route".into(),
    });
    assert_eq!(e.code, ErrorCode::BadFlow, "route needs ip in the match");
    let v = s.ok(Request::DumpFlows {
        bridge: "br0".into(),
        filter: None,
    });
    let lines: Vec<&str> = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["actions"].as_str().unwrap())
        .collect();
    assert!(lines.contains(&"route"), "{lines:?}");
}

#[test]
fn trace_shows_the_route_decision() {
    let mut s = Sw::routed();
    let v = s.ok(Request::Trace {
        bridge: "br0".into(),
        packet: "in_port=1,tcp,dl_src=02:00:00:00:01:02,dl_dst=02:00:00:00:ff:00,nw_src=10.244.1.2,nw_dst=10.244.2.2,nw_ttl=64,tcp_src=1,tcp_dst=80".into(),
    });
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("route table 0: /24 matched, ttl now 63, output to port 2"),
        "{text}"
    );
    assert!(
        text.contains("set(eth(src=02:00:00:00:ff:00,dst=02:00:00:00:02:02)),set(ipv4(ttl=63)),2"),
        "{text}"
    );
}
