//! The memory-port suite: a Kubernetes-like four-table pipeline run through
//! the real [`Bridge`] (its polling thread, snapshot publication, datapath
//! caches and memory ports), driven only by control requests, the way switchd
//! drives it.
//!
//! Frames are built with [`FrameBuilder`], injected on a pod's port, and the
//! frames captured on the other ports are compared byte for byte with a
//! FrameBuilder-built expectation (rewritten MACs, decremented TTL), with every
//! checksum recomputed by etherparse. Flow counters come from DumpFlows, port
//! counters and drop reasons from DumpPorts.
//!
//! Topology (ofport: name, MAC, IP):
//! 1: pod-a 02:00:00:00:01:02 10.244.1.2  \ subnet 10.244.1.0/24, gateway 10.244.1.1 (02:00:00:00:ff:01)
//! 2: pod-b 02:00:00:00:01:03 10.244.1.3  /
//! 3: pod-c 02:00:00:00:02:02 10.244.2.2  - subnet 10.244.2.0/24, gateway 10.244.2.1 (02:00:00:00:ff:02)
//! 4: uplink (no flows match it: its traffic is a table miss)

use std::collections::BTreeMap;

use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use serde_json::Value;
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{ErrorBody, ErrorCode, FlowEntry, PortEntry, Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::packet::tcp::flags;
use switch::packet::FrameBuilder;
use switch::port::PortStats;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 1, 2];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 1, 3];
const MAC_C: [u8; 6] = [2, 0, 0, 0, 2, 2];
const GW1: [u8; 6] = [2, 0, 0, 0, 0xff, 1];
const GW2: [u8; 6] = [2, 0, 0, 0, 0xff, 2];
const BCAST: [u8; 6] = [0xff; 6];
const IP_A: [u8; 4] = [10, 244, 1, 2];
const IP_B: [u8; 4] = [10, 244, 1, 3];
const IP_C: [u8; 4] = [10, 244, 2, 2];
const IP_GW1: [u8; 4] = [10, 244, 1, 1];

/// The pipeline, in ovs-ofctl syntax, as an operator (or a CNI plugin) would write it.
const K8S_FLOWS: &[&str] = &[
    // table 0: classification and port security
    "table=0,priority=300,arp,arp_op=1,arp_tpa=10.244.1.1,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:02:00:00:00:ff:01,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0x02000000ff01->NXM_NX_ARP_SHA[],load:0x0af40101->NXM_OF_ARP_SPA[],IN_PORT",
    "table=0,priority=200,in_port=1,ip,dl_src=02:00:00:00:01:02,nw_src=10.244.1.2,actions=goto_table:1",
    "table=0,priority=200,in_port=1,arp,dl_src=02:00:00:00:01:02,arp_spa=10.244.1.2,actions=goto_table:1",
    "table=0,priority=200,in_port=2,ip,dl_src=02:00:00:00:01:03,nw_src=10.244.1.3,actions=goto_table:1",
    "table=0,priority=200,in_port=2,arp,dl_src=02:00:00:00:01:03,arp_spa=10.244.1.3,actions=goto_table:1",
    "table=0,priority=200,in_port=3,ip,dl_src=02:00:00:00:02:02,nw_src=10.244.2.2,actions=goto_table:1",
    "table=0,priority=200,in_port=3,arp,dl_src=02:00:00:00:02:02,arp_spa=10.244.2.2,actions=goto_table:1",
    "table=0,priority=100,in_port=1,actions=drop",
    "table=0,priority=100,in_port=2,actions=drop",
    "table=0,priority=100,in_port=3,actions=drop",
    // table 1: L2 switching inside a subnet, routing via the gateway MACs
    "table=1,priority=100,dl_dst=02:00:00:00:01:02,actions=output:1",
    "table=1,priority=100,dl_dst=02:00:00:00:01:03,actions=output:2",
    "table=1,priority=100,dl_dst=02:00:00:00:02:02,actions=output:3",
    "table=1,priority=100,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:1,output:2,output:3",
    "table=1,priority=90,dl_dst=02:00:00:00:ff:01,actions=goto_table:2",
    "table=1,priority=90,dl_dst=02:00:00:00:ff:02,actions=goto_table:2",
    // table 2: L3 routing between the two pod subnets
    "table=2,priority=200,ip,nw_dst=10.244.2.2,actions=mod_dl_src:02:00:00:00:ff:02,mod_dl_dst:02:00:00:00:02:02,dec_ttl,load:0x3->NXM_NX_REG0[],goto_table:3",
    "table=2,priority=200,ip,nw_dst=10.244.1.2,actions=mod_dl_src:02:00:00:00:ff:01,mod_dl_dst:02:00:00:00:01:02,dec_ttl,load:0x1->NXM_NX_REG0[],goto_table:3",
    "table=2,priority=200,ip,nw_dst=10.244.1.3,actions=mod_dl_src:02:00:00:00:ff:01,mod_dl_dst:02:00:00:00:01:03,dec_ttl,goto_table:3",
    // table 3: output by register, else by destination MAC
    "table=3,priority=200,reg0=1,actions=output:1",
    "table=3,priority=200,reg0=3,actions=output:3",
    "table=3,priority=100,dl_dst=02:00:00:00:01:03,actions=output:2",
];

/// A bridge in a temporary state directory, driven through `Handler::handle`.
struct Sw {
    b: Bridge,
    _dir: tempfile::TempDir,
}

impl Sw {
    fn new() -> Sw {
        // EMC insertion on every miss, so a second identical frame is an
        // exact-match hit and cache invalidation is really exercised.
        let cfg = DatapathConfig {
            emc_insert_inv_prob: 1,
            ..DatapathConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let b = Bridge::start("br0", store, cfg).unwrap();
        Sw { b, _dir: dir }
    }

    /// The four-port Kubernetes-like bridge with [`K8S_FLOWS`] installed.
    fn k8s() -> Sw {
        let mut s = Sw::new();
        for (name, no) in [("pod-a", 1), ("pod-b", 2), ("pod-c", 3), ("uplink", 4)] {
            s.add_port(name, no, &[]);
        }
        s.add_flows(K8S_FLOWS);
        s
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

    fn add_port(&mut self, name: &str, ofport: u32, options: &[(&str, &str)]) {
        let v = self.ok(Request::AddPort {
            bridge: "br0".into(),
            name: name.into(),
            port_type: "memory".into(),
            ofport: Some(ofport),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        });
        assert_eq!(v["ofport"], ofport);
    }

    fn add_flows(&mut self, flows: &[&str]) {
        self.ok(Request::AddFlows {
            bridge: "br0".into(),
            flows: flows.iter().map(|f| f.to_string()).collect(),
        });
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

    /// Every port's captured frames, by port name (ports that sent nothing left out).
    fn capture_all(&mut self) -> BTreeMap<String, Vec<Vec<u8>>> {
        let names: Vec<String> = self.ports().into_iter().map(|p| p.name).collect();
        let mut out = BTreeMap::new();
        for n in names {
            let f = self.capture(&n);
            if !f.is_empty() {
                out.insert(n, f);
            }
        }
        out
    }

    fn flows(&mut self, filter: Option<&str>) -> Vec<FlowEntry> {
        let v = self.ok(Request::DumpFlows {
            bridge: "br0".into(),
            filter: filter.map(String::from),
        });
        serde_json::from_value(v["flows"].clone()).unwrap()
    }

    /// The one flow whose dump-flows match text is `m` in `table`.
    fn flow(&mut self, table: u8, m: &str) -> FlowEntry {
        let all = self.flows(None);
        let found: Vec<_> = all
            .iter()
            .filter(|f| f.table == table && f.match_ == m)
            .cloned()
            .collect();
        assert_eq!(found.len(), 1, "flow table={table} {m:?} in {all:#?}");
        found[0].clone()
    }

    fn ports(&mut self) -> Vec<PortEntry> {
        let v = self.ok(Request::DumpPorts {
            bridge: "br0".into(),
            port: None,
        });
        serde_json::from_value(v["ports"].clone()).unwrap()
    }

    fn port(&mut self, name: &str) -> PortStats {
        let v = self.ok(Request::DumpPorts {
            bridge: "br0".into(),
            port: Some(name.into()),
        });
        let p: Vec<PortEntry> = serde_json::from_value(v["ports"].clone()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, name);
        p[0].stats.clone()
    }
}

/// Equal as one's-complement numbers (0x0000 and 0xffff are both zero).
fn csum_eq(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// Parse `frame` with etherparse and check every checksum against a full recomputation.
fn verify_checksums(frame: &[u8]) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let payload = h.payload.slice();
    if let Some(NetHeaders::Ipv4(ip, _)) = &h.net {
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 header checksum"
        );
        match &h.transport {
            Some(TransportHeader::Tcp(t)) => {
                let c = t.calc_checksum_ipv4(ip, payload).unwrap();
                assert!(csum_eq(t.checksum, c), "TCP {:04x} vs {c:04x}", t.checksum);
            }
            Some(TransportHeader::Udp(u)) => {
                assert_ne!(u.checksum, 0, "the builder fills the UDP checksum");
                let c = u.calc_checksum_ipv4(ip, payload).unwrap();
                assert!(csum_eq(u.checksum, c), "UDP {:04x} vs {c:04x}", u.checksum);
            }
            Some(TransportHeader::Icmpv4(i)) => {
                assert_eq!(i.checksum, i.icmp_type.calc_checksum(payload), "ICMP");
            }
            other => panic!("unexpected transport {other:?}"),
        }
    }
}

fn tcp_frame(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4], ttl: u8) -> FrameBuilder {
    FrameBuilder::new()
        .eth(src, dst)
        .ipv4(sip, dip)
        .ttl(ttl)
        .ip_id(0x1234)
        .tcp(40000, 80, flags::SYN)
        .tcp_seq(1000, 0)
}

fn udp_frame(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4], ttl: u8) -> FrameBuilder {
    FrameBuilder::new()
        .eth(src, dst)
        .ipv4(sip, dip)
        .ttl(ttl)
        .udp(5353, 53)
        .payload(&[0xab; 100])
}

fn icmp_frame(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4], ttl: u8) -> FrameBuilder {
    FrameBuilder::new()
        .eth(src, dst)
        .ipv4(sip, dip)
        .ttl(ttl)
        .icmp_echo(7, 1)
        .payload(b"ping payload 0123456789")
}

fn reasons(v: &[(String, u64)]) -> BTreeMap<&str, u64> {
    v.iter().map(|(r, n)| (r.as_str(), *n)).collect()
}

#[test]
fn same_subnet_l2_forwarding_is_byte_identical_and_counted() {
    let mut s = Sw::k8s();
    let f = tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    s.inject("pod-a", &[f.clone(), f.clone()]);
    let out = s.capture_all();
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["pod-b"],
        "only pod-b receives"
    );
    assert_eq!(
        out["pod-b"],
        vec![f.clone(), f.clone()],
        "L2 forwarding changes nothing"
    );
    verify_checksums(&out["pod-b"][0]);

    let len = f.len() as u64;
    let sec = s.flow(0, "ip,in_port=1,dl_src=02:00:00:00:01:02,nw_src=10.244.1.2");
    assert_eq!((sec.n_packets, sec.n_bytes), (2, 2 * len));
    let l2 = s.flow(1, "dl_dst=02:00:00:00:01:03");
    assert_eq!((l2.n_packets, l2.n_bytes), (2, 2 * len));
    assert_eq!(s.flow(1, "dl_dst=02:00:00:00:01:02").n_packets, 0);
    assert_eq!(s.flow(2, "ip,nw_dst=10.244.1.3").n_packets, 0, "no routing");

    let a = s.port("pod-a");
    assert_eq!((a.rx_packets, a.rx_bytes, a.tx_packets), (2, 2 * len, 0));
    let b = s.port("pod-b");
    assert_eq!((b.rx_packets, b.tx_packets, b.tx_bytes), (0, 2, 2 * len));
    assert_eq!((b.tx_dropped, a.rx_dropped), (0, 0));
}

#[test]
fn routed_between_subnets_rewrites_macs_and_ttl_with_valid_checksums() {
    let mut s = Sw::k8s();
    // a -> c over UDP: table 0 -> 1 (gateway MAC) -> 2 (route, reg0=3) -> 3 (output by reg)
    let udp = udp_frame(MAC_A, GW1, IP_A, IP_C, 64).build();
    // c -> a over TCP: output by reg0=1
    let tcp = tcp_frame(MAC_C, GW2, IP_C, IP_A, 17).build();
    // c -> b over ICMP: table 3 outputs by dl_dst
    let icmp = icmp_frame(MAC_C, GW2, IP_C, IP_B, 2).build();
    s.inject("pod-a", std::slice::from_ref(&udp));
    s.inject("pod-c", &[tcp.clone(), icmp.clone()]);

    let want_udp = udp_frame(GW2, MAC_C, IP_A, IP_C, 63).build();
    let want_tcp = tcp_frame(GW1, MAC_A, IP_C, IP_A, 16).build();
    let want_icmp = icmp_frame(GW1, MAC_B, IP_C, IP_B, 1).build();
    let out = s.capture_all();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out["pod-c"], vec![want_udp.clone()]);
    assert_eq!(out["pod-a"], vec![want_tcp.clone()]);
    assert_eq!(out["pod-b"], vec![want_icmp.clone()]);
    for f in [&want_udp, &want_tcp, &want_icmp] {
        verify_checksums(f);
    }
    // The expectation is not trivially equal to the input.
    assert_ne!(udp, want_udp);

    let r = s.flow(2, "ip,nw_dst=10.244.2.2");
    assert_eq!((r.n_packets, r.n_bytes), (1, udp.len() as u64));
    assert_eq!(s.flow(3, "reg0=0x3").n_packets, 1);
    assert_eq!(s.flow(3, "reg0=0x1").n_packets, 1);
    let by_mac = s.flow(3, "dl_dst=02:00:00:00:01:03");
    assert_eq!((by_mac.n_packets, by_mac.n_bytes), (1, icmp.len() as u64));
    assert_eq!(s.flow(1, "dl_dst=02:00:00:00:ff:02").n_packets, 2);

    let c = s.port("pod-c");
    assert_eq!(
        (c.rx_packets, c.rx_bytes),
        (2, (tcp.len() + icmp.len()) as u64)
    );
    assert_eq!((c.tx_packets, c.tx_bytes), (1, want_udp.len() as u64));
}

#[test]
fn arp_for_the_gateway_is_answered_and_other_arp_is_flooded() {
    let mut s = Sw::k8s();
    let req_gw = FrameBuilder::new()
        .eth(MAC_A, BCAST)
        .arp_request(MAC_A, IP_A, IP_GW1)
        .build();
    s.inject("pod-a", &[req_gw]);
    let want = FrameBuilder::new()
        .eth(GW1, MAC_A)
        .arp_reply(GW1, IP_GW1, MAC_A, IP_A)
        .build();
    let out = s.capture_all();
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["pod-a"],
        "answered on the ingress port only"
    );
    assert_eq!(out["pod-a"], vec![want]);

    // ARP for a pod: flooded by the broadcast flow (output:1,output:2,output:3),
    // skipping the ingress port, every copy identical to the request.
    let req_b = FrameBuilder::new()
        .eth(MAC_A, BCAST)
        .arp_request(MAC_A, IP_A, IP_B)
        .build();
    s.inject("pod-a", std::slice::from_ref(&req_b));
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-b", "pod-c"]);
    assert_eq!(out["pod-b"], vec![req_b.clone()]);
    assert_eq!(out["pod-c"], vec![req_b.clone()]);
    let flood = s.flow(1, "dl_dst=ff:ff:ff:ff:ff:ff");
    assert_eq!((flood.n_packets, flood.n_bytes), (1, req_b.len() as u64));
    assert_eq!(
        s.flow(
            0,
            "arp,in_port=1,dl_src=02:00:00:00:01:02,arp_spa=10.244.1.2"
        )
        .n_packets,
        1
    );
    let a = s.port("pod-a");
    assert_eq!((a.rx_packets, a.tx_packets), (2, 1));
}

#[test]
fn flood_copies_are_identical_and_counted_per_port() {
    let mut s = Sw::k8s();
    // A broadcast UDP frame from pod-c: copies on 1 and 2 (3 is the ingress port).
    let f = udp_frame(MAC_C, BCAST, IP_C, [10, 244, 2, 255], 64).build();
    s.inject("pod-c", &[f.clone(), f.clone(), f.clone()]);
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-a", "pod-b"]);
    assert_eq!(out["pod-a"], vec![f.clone(); 3]);
    assert_eq!(out["pod-b"], vec![f.clone(); 3]);
    let len = f.len() as u64;
    for p in ["pod-a", "pod-b"] {
        let st = s.port(p);
        assert_eq!((st.tx_packets, st.tx_bytes), (3, 3 * len), "{p}");
    }
    let c = s.port("pod-c");
    assert_eq!((c.rx_packets, c.tx_packets, c.rx_dropped), (3, 0, 0));
    assert_eq!(s.flow(1, "dl_dst=ff:ff:ff:ff:ff:ff").n_packets, 3);
}

#[test]
fn drops_are_counted_with_their_reason() {
    let mut s = Sw::k8s();
    // The uplink matches no flow in table 0: a table miss.
    let miss = tcp_frame(MAC_C, MAC_A, IP_C, IP_A, 64).build();
    s.inject("uplink", &[miss.clone(), miss.clone()]);
    // pod-a spoofing pod-c's address: port security's explicit drop.
    let spoof = tcp_frame(MAC_A, MAC_B, IP_C, IP_B, 64).build();
    s.inject("pod-a", &[spoof]);
    // Routed with TTL 1: dec_ttl's invalid_ttl exception; nothing is output.
    let ttl1 = udp_frame(MAC_A, GW1, IP_A, IP_C, 1).build();
    // TTL 0 as well.
    let ttl0 = udp_frame(MAC_A, GW1, IP_A, IP_C, 0).build();
    s.inject("pod-a", &[ttl1, ttl0]);
    // A pod-a frame to an unknown MAC: table 1 miss.
    let unknown = tcp_frame(MAC_A, [2, 0, 0, 0, 9, 9], IP_A, IP_B, 64).build();
    s.inject("pod-a", &[unknown]);

    assert!(s.capture_all().is_empty(), "everything was dropped");
    let up = s.port("uplink");
    assert_eq!(up.rx_packets, 2);
    assert_eq!(
        reasons(&up.rx_drop_reasons),
        BTreeMap::from([("no_flow", 2)])
    );
    assert_eq!(up.rx_dropped, 2);
    let a = s.port("pod-a");
    assert_eq!(a.rx_packets, 4);
    assert_eq!(
        reasons(&a.rx_drop_reasons),
        BTreeMap::from([("explicit_drop", 1), ("invalid_ttl", 2), ("no_flow", 1)])
    );
    assert_eq!(a.rx_dropped, 4);
    // The routing flow matched (and counted) the TTL-1 packets; table 3 never saw them.
    assert_eq!(s.flow(2, "ip,nw_dst=10.244.2.2").n_packets, 2);
    assert_eq!(s.flow(3, "reg0=0x3").n_packets, 0);
    assert_eq!(s.flow(0, "in_port=1").n_packets, 1, "the spoofed frame");
}

#[test]
fn full_capture_queue_is_a_tx_ring_full_drop() {
    let mut s = Sw::new();
    s.add_port("in", 1, &[]);
    s.add_port("small", 2, &[("depth", "2")]);
    s.add_flows(&["in_port=1,actions=output:2"]);
    let frames: Vec<Vec<u8>> = (0..5u16)
        .map(|i| tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).ip_id(i).build())
        .collect();
    s.inject("in", &frames);
    let st = s.port("small");
    assert_eq!(st.tx_packets, 2);
    assert_eq!(
        reasons(&st.tx_drop_reasons),
        BTreeMap::from([("tx_ring_full", 3)])
    );
    assert_eq!(st.tx_dropped, 3);
    assert_eq!(s.port("in").rx_dropped, 0, "the drop is on the tx side");
    // The queue kept the oldest frames, in order; after draining it, traffic flows again.
    assert_eq!(s.capture("small"), frames[..2].to_vec());
    s.inject("in", &frames[4..]);
    assert_eq!(s.capture("small"), frames[4..].to_vec());
    assert_eq!(s.port("small").tx_packets, 3);
}

#[test]
fn vlan_push_modify_and_pop() {
    let mut s = Sw::new();
    for (n, no) in [("access", 1), ("trunk", 2), ("other", 3)] {
        s.add_port(n, no, &[]);
    }
    s.add_flows(&[
        // untagged in on 1: push VLAN 10 (mod_vlan_vid without dl_vlan pushes)
        "in_port=1,actions=mod_vlan_vid:10,output:2",
        // tagged 10 in on 2: pop and deliver untagged
        "in_port=2,dl_vlan=10,actions=strip_vlan,output:1",
        // tagged 20 in on 2: rewrite the VID (pcp kept) and send to 3
        "in_port=2,dl_vlan=20,actions=mod_vlan_vid:30,output:3",
        // in on 3: push_vlan (vid 0, pcp 0) even on a tagged frame, then output to 2
        "in_port=3,actions=push_vlan:0x8100,output:2",
    ]);
    // Frames well above the 60-byte minimum, so padding plays no part: a push
    // inserts exactly 4 bytes after the MACs, a pop removes them.
    let body = |b: FrameBuilder| b.payload(&[0x5a; 40]);
    let plain = body(tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64)).build();
    let tagged10 = body(tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).vlan(10, 0)).build();
    assert_eq!(tagged10.len(), plain.len() + 4);
    s.inject("access", std::slice::from_ref(&plain));
    assert_eq!(s.capture("trunk"), vec![tagged10.clone()]);

    s.inject("trunk", std::slice::from_ref(&tagged10));
    assert_eq!(s.capture("access"), vec![plain.clone()]);

    let tagged20 = body(tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).vlan(20, 5)).build();
    s.inject("trunk", &[tagged20]);
    let want30 = body(tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).vlan(30, 5)).build();
    assert_eq!(s.capture("other"), vec![want30.clone()]);

    s.inject("other", std::slice::from_ref(&want30));
    let double = body(
        tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64)
            .vlan_tpid(0x8100, 0, 0)
            .vlan_tpid(0x8100, 30, 5),
    )
    .build();
    assert_eq!(s.capture("trunk"), vec![double]);
    assert!(s.capture_all().is_empty());
    assert_eq!(s.flow(0, "in_port=2,dl_vlan=10").n_packets, 1);
}

#[test]
fn flow_mod_between_injections_changes_forwarding() {
    let mut s = Sw::k8s();
    let f = tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    // Warm the caches: the second and third frames are cache hits.
    s.inject("pod-a", std::slice::from_ref(&f));
    s.inject("pod-a", &[f.clone(), f.clone()]);
    assert_eq!(s.capture("pod-b").len(), 3);

    // Redirect pod-b's MAC to pod-c: the next frame must follow the new flow.
    s.ok(Request::ModFlows {
        bridge: "br0".into(),
        flow: "table=1,priority=100,dl_dst=02:00:00:00:01:03,actions=output:3".into(),
        strict: true,
    });
    s.inject("pod-a", std::slice::from_ref(&f));
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["pod-c"], "{out:?}");
    assert_eq!(out["pod-c"], vec![f.clone()]);
    // mod-flows keeps the counters and adds the new packet.
    assert_eq!(s.flow(1, "dl_dst=02:00:00:00:01:03").n_packets, 4);

    // A higher-priority flow added later wins too.
    s.ok(Request::AddFlow {
        bridge: "br0".into(),
        flow: "table=1,priority=150,tcp,tcp_dst=80,actions=drop".into(),
    });
    s.inject("pod-a", std::slice::from_ref(&f));
    assert!(s.capture_all().is_empty());
    // Deleting it restores the previous path.
    s.ok(Request::DelFlows {
        bridge: "br0".into(),
        flow: Some("table=1,tcp".into()),
        strict: false,
    });
    s.inject("pod-a", std::slice::from_ref(&f));
    assert_eq!(s.capture("pod-c"), vec![f.clone()]);
    // Deleting table 1 entirely: a table miss.
    s.ok(Request::DelFlows {
        bridge: "br0".into(),
        flow: Some("table=1".into()),
        strict: false,
    });
    s.inject("pod-a", std::slice::from_ref(&f));
    assert!(s.capture_all().is_empty());
    let a = s.port("pod-a");
    assert_eq!(
        reasons(&a.rx_drop_reasons),
        BTreeMap::from([("explicit_drop", 1), ("no_flow", 1)])
    );
}

#[test]
fn port_removal_and_re_add_keeps_forwarding_consistent() {
    let mut s = Sw::k8s();
    let f = tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    s.inject("pod-a", std::slice::from_ref(&f));
    assert_eq!(s.capture("pod-b"), vec![f.clone()]);
    s.ok(Request::DelPort {
        bridge: "br0".into(),
        name: "pod-b".into(),
    });
    // Output to a port that no longer exists: translation skips it (as OVS
    // does for a nonexistent port), so the packet has no output; counted.
    s.inject("pod-a", std::slice::from_ref(&f));
    let a = s.port("pod-a");
    assert_eq!(a.rx_packets, 2);
    assert_eq!(
        reasons(&a.rx_drop_reasons),
        BTreeMap::from([("no_output", 1)])
    );
    let t = s.ok(Request::Trace {
        bridge: "br0".into(),
        packet: "in_port=1,tcp,dl_src=02:00:00:00:01:02,dl_dst=02:00:00:00:01:03,nw_src=10.244.1.2,nw_dst=10.244.1.3,nw_ttl=64".into(),
    });
    assert_eq!(t["report"]["outputs"], serde_json::json!([]), "{t}");
    s.add_port("pod-b2", 2, &[]);
    s.inject("pod-a", std::slice::from_ref(&f));
    assert_eq!(s.capture("pod-b2"), vec![f.clone()]);
}

#[test]
fn malformed_and_truncated_frames_are_counted_and_never_crash() {
    let mut s = Sw::k8s();
    let good = tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    // Every prefix of a valid frame, including the empty frame.
    for n in 0..good.len() {
        frames.push(good[..n].to_vec());
    }
    // Bad IPv4 version / IHL, total length beyond the frame, TCP data offset < 5.
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x41;
    let mut bad_ver = good.clone();
    bad_ver[14] = 0x65;
    let mut long_len = good.clone();
    long_len[16..18].copy_from_slice(&1500u16.to_be_bytes());
    let mut bad_doff = good.clone();
    bad_doff[14 + 20 + 12] = 0x20;
    frames.extend([bad_ihl, bad_ver, long_len, bad_doff]);
    // Random garbage.
    let mut x = 0x1234_5678u32;
    for len in [1usize, 13, 14, 15, 33, 60, 200, 1514] {
        frames.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
    }
    let n = frames.len() as u64;
    s.inject("pod-a", &frames);
    s.inject("uplink", &frames);
    let a = s.port("pod-a");
    assert_eq!(a.rx_packets, n);
    // The 54 prefixes shorter than the 54 bytes of headers end inside a header;
    // the bad IHL, version and TCP data offset are malformed.
    assert_eq!(good.len(), 60);
    assert!(a.rx_truncated >= 54, "{a:?}");
    assert!(a.rx_malformed >= 3, "{a:?}");
    // Conservation: each frame was either dropped (with a reason) or delivered.
    let delivered = s.capture("pod-b").len() as u64;
    assert_eq!(a.rx_dropped + delivered, n, "{a:?}");
    assert!(delivered >= 4, "the complete frames pass port security");
    let up = s.port("uplink");
    assert_eq!(up.rx_packets, n);
    assert_eq!(
        up.rx_dropped, n,
        "the uplink has no flows: every frame is a counted drop"
    );
    assert!(s.capture_all().is_empty());
    // The switch still forwards.
    s.inject("pod-a", std::slice::from_ref(&good));
    assert_eq!(s.capture("pod-b"), vec![good.clone()]);

    // An oversize frame is refused at the control socket with a clear error.
    let e = s.err(Request::Inject {
        bridge: "br0".into(),
        port: "pod-a".into(),
        frames: vec![encode_hex(&vec![0u8; 70_000])],
    });
    assert_eq!(e.code, ErrorCode::BadPacket);
    assert!(e.message.contains("70000 bytes"), "{e}");
    let e = s.err(Request::Inject {
        bridge: "br0".into(),
        port: "pod-a".into(),
        frames: vec!["0g".into()],
    });
    assert_eq!(e.code, ErrorCode::BadPacket);
    assert_eq!(
        s.port("pod-a").rx_packets,
        n + 1,
        "refused frames are not injected"
    );
}

#[test]
fn trace_agrees_with_forwarding() {
    let mut s = Sw::k8s();
    let v = s.ok(Request::Trace {
        bridge: "br0".into(),
        packet: "in_port=1,udp,dl_src=02:00:00:00:01:02,dl_dst=02:00:00:00:ff:01,nw_src=10.244.1.2,nw_dst=10.244.2.2,nw_ttl=64,udp_src=5353,udp_dst=53".into(),
    });
    let outputs = v["report"]["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{v}");
    assert_eq!(outputs[0]["port"], 3);
    let pkt = outputs[0]["packet"].as_str().unwrap();
    for want in [
        "dl_src=02:00:00:00:ff:02",
        "dl_dst=02:00:00:00:02:02",
        "nw_ttl=63",
    ] {
        assert!(pkt.contains(want), "{pkt}");
    }
    let text = v["text"].as_str().unwrap();
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("Datapath actions: "),
        "{text}"
    );
    // Trace does not touch counters or forward anything.
    assert_eq!(s.flow(2, "ip,nw_dst=10.244.2.2").n_packets, 0);
    assert!(s.capture_all().is_empty());
}

#[test]
fn a_re_added_port_starts_with_zero_counters() {
    let mut s = Sw::k8s();
    let f = tcp_frame(MAC_C, MAC_A, IP_C, IP_A, 64).build();
    let mut garbage = f.clone();
    garbage.truncate(20);
    for round in 0..5 {
        s.inject("uplink", &[f.clone(), garbage.clone()]);
        let up = s.port("uplink");
        assert_eq!(
            (up.rx_packets, up.rx_dropped, up.rx_truncated),
            (2, 2, 1),
            "round {round}: {up:?}"
        );
        // Remove and re-add the same number at once: the new port's counters
        // must not inherit the old port's datapath drops.
        s.ok(Request::DelPort {
            bridge: "br0".into(),
            name: "uplink".into(),
        });
        s.add_port("uplink", 4, &[]);
        let up = s.port("uplink");
        assert_eq!(up, PortStats::default(), "round {round}");
    }
}

/// A bridge with ports p1..p5 (ofports 1..5) and `flows`.
fn five_ports(flows: &[&str]) -> Sw {
    let mut s = Sw::new();
    for i in 1..=5u32 {
        s.add_port(&format!("p{i}"), i, &[]);
    }
    s.add_flows(flows);
    s
}

#[test]
fn ovs_semantics_hold_on_real_frames() {
    let f = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    let ttl1 = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1).build();

    // Each output sees the packet as modified so far; later changes do not leak back.
    let mut s = five_ports(&["in_port=1,ip,actions=output:2,mod_dl_dst:02:00:00:00:00:99,dec_ttl,output:3,mod_nw_dst:10.9.9.9,output:4"]);
    s.inject("p1", std::slice::from_ref(&f));
    let out = s.capture_all();
    let m3 = udp_frame(MAC_A, [2, 0, 0, 0, 0, 0x99], IP_A, IP_B, 63).build();
    let m4 = udp_frame(MAC_A, [2, 0, 0, 0, 0, 0x99], IP_A, [10, 9, 9, 9], 63).build();
    assert_eq!(out["p2"], vec![f.clone()]);
    assert_eq!(out["p3"], vec![m3.clone()]);
    assert_eq!(out["p4"], vec![m4.clone()]);
    verify_checksums(&m4);
    assert_eq!(out.len(), 3);

    // Outputs before a goto into an empty table stay; output to in_port is skipped; IN_PORT sends back.
    let mut s = five_ports(&["in_port=1,actions=output:1,output:2,IN_PORT,goto_table:1"]);
    s.inject("p1", std::slice::from_ref(&f));
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["p1", "p2"]);
    assert_eq!((out["p1"].len(), out["p2"].len()), (1, 1));
    assert!(s.port("p1").rx_drop_reasons.is_empty());

    // OVS_SEMANTICS dec_ttl example: ttl 1 outputs on 2 and 3 (not 4), unchanged.
    let mut s = five_ports(&[
        "table=0,ip,actions=output:2,resubmit(,1),output:3",
        "table=1,ip,actions=dec_ttl,output:4",
    ]);
    s.inject("p1", std::slice::from_ref(&ttl1));
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["p2", "p3"]);
    assert_eq!(out["p2"], vec![ttl1.clone()]);
    assert_eq!(out["p3"], vec![ttl1.clone()]);
    // ...and with ttl 64 on 2, 4 (ttl 63) and 3 (ttl 63: modifications stay).
    s.inject("p1", std::slice::from_ref(&f));
    let out = s.capture_all();
    let t63 = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 63).build();
    assert_eq!(out["p2"], vec![f.clone()]);
    assert_eq!(out["p4"], vec![t63.clone()]);
    assert_eq!(out["p3"], vec![t63.clone()]);

    // resubmit/goto_table ordering example: outputs on 2, 3, then 5.
    let mut s = five_ports(&[
        "table=0,actions=resubmit(,1),output:5",
        "table=1,actions=output:2,goto_table:2",
        "table=2,actions=output:3",
    ]);
    s.inject("p1", std::slice::from_ref(&f));
    let out = s.capture_all();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["p2", "p3", "p5"]);

    // A resubmit loop drops the whole packet, earlier outputs included.
    let mut s = five_ports(&["table=0,actions=output:2,resubmit(,0)"]);
    s.inject("p1", std::slice::from_ref(&f));
    assert!(s.capture_all().is_empty());
    assert_eq!(
        reasons(&s.port("p1").rx_drop_reasons),
        BTreeMap::from([("resubmit_depth", 1)])
    );

    // A flow with no actions is an explicit drop; actions without an output are no_output.
    let mut s = five_ports(&["in_port=1,actions=drop", "in_port=2,ip,actions=dec_ttl"]);
    s.inject("p1", std::slice::from_ref(&f));
    s.inject("p2", std::slice::from_ref(&f));
    assert!(s.capture_all().is_empty());
    assert_eq!(
        reasons(&s.port("p1").rx_drop_reasons),
        BTreeMap::from([("explicit_drop", 1)])
    );
    assert_eq!(
        reasons(&s.port("p2").rx_drop_reasons),
        BTreeMap::from([("no_output", 1)])
    );
}

#[test]
fn sustained_multi_output_traffic_does_not_run_out_of_buffers() {
    // Every frame is output twice: the first output is a copy from the polling
    // thread's buffer pool. Those copies leave the thread through the memory
    // ports' capture queues; the pool must not drain because of it.
    let mut s = five_ports(&["in_port=1,actions=output:2,output:3"]);
    let f = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    let chunk = vec![f.clone(); 500];
    let rounds = 12; // 6000 frames, more than the pool's 4096 buffers
    for round in 0..rounds {
        s.inject("p1", &chunk);
        let (a, b) = (s.capture("p2").len(), s.capture("p3").len());
        assert_eq!((a, b), (500, 500), "round {round}: {:?}", s.port("p1"));
    }
    let p1 = s.port("p1");
    assert_eq!((p1.rx_packets, p1.rx_dropped), (500 * rounds, 0), "{p1:?}");
}

#[test]
fn inject_larger_than_the_rx_queue_waits_for_room() {
    let mut s = Sw::new();
    s.add_port("narrow", 1, &[("depth", "1")]);
    s.add_port("out", 2, &[]);
    s.add_flows(&["in_port=1,actions=output:2"]);
    let frames: Vec<Vec<u8>> = (0..50u16)
        .map(|i| tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).ip_id(i).build())
        .collect();
    s.inject("narrow", &frames);
    assert_eq!(s.capture("out"), frames, "all delivered, in order");
    assert_eq!(s.port("narrow").rx_packets, 50);
}

#[test]
fn a_frame_injected_after_a_flow_mod_always_sees_it() {
    // The reply to a flow-mod means the tables changed: a frame injected
    // afterwards must never be forwarded by the previous tables, however the
    // polling thread's iterations fall.
    let mut s = five_ports(&["in_port=1,actions=output:2"]);
    let f = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 64).build();
    for i in 0..150u32 {
        let to = 2 + (i % 3);
        s.ok(Request::ModFlows {
            bridge: "br0".into(),
            flow: format!("in_port=1,actions=output:{to}"),
            strict: false,
        });
        s.inject("p1", std::slice::from_ref(&f));
        let out = s.capture_all();
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            [format!("p{to}").as_str()],
            "iteration {i}"
        );
    }
}
