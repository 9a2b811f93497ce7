//! Stateful ACL through the whole datapath: `ct(table=1,zone=1)` tracks and
//! recirculates, table 1 matches `ct_state` / `ct_mark`, `ct(commit)` creates
//! connections. Checks what an operator relies on: A reaches B on TCP 80,
//! B's replies come back, B cannot open a connection to A, other ports and
//! invalid segments are dropped, a full table drops as `ct_full`, and the
//! caches (EMC, megaflow) never change an answer across batches. Also the
//! `ct(...)` syntax round trip and refusals.

use std::sync::Arc;

use switch::datapath::{Datapath, DatapathConfig, DropReason, Snapshot, TxBatches};
use switch::flow::{format_flow, parse_flow, FlowKey, ParseMode, PortNo};
use switch::packet::{FrameBuilder, Packet, PacketPool};
use switch::pipeline::table::{FlowMod, FlowModCommand};
use switch::pipeline::{translate, Pipeline};

const SYN: u16 = 0x002;
const ACK: u16 = 0x010;
const PSH: u16 = 0x008;
const FIN: u16 = 0x001;
const PORT_A: PortNo = 1;
const PORT_B: PortNo = 2;
const IP_A: [u8; 4] = [10, 244, 0, 5];
const IP_B: [u8; 4] = [10, 244, 0, 6];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 5];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 6];

/// The ACL of the issue: track everything IP in zone 1; A may open TCP 80
/// to B; established and related traffic flows both ways; everything else
/// new or invalid is dropped. ARP is switched without tracking.
const ACL: &[&str] = &[
    "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
    "table=0,priority=5,in_port=1,actions=output:2",
    "table=0,priority=5,in_port=2,actions=output:1",
    "table=1,priority=20,ct_state=+trk+new,tcp,in_port=1,tp_dst=80,actions=ct(commit,zone=1,exec(set_field:0x5->ct_mark)),output:2",
    "table=1,priority=15,ct_state=+trk+est+rpl,ct_mark=0x5,in_port=2,actions=output:1",
    "table=1,priority=10,ct_state=+trk+est,in_port=1,actions=output:2",
    "table=1,priority=10,ct_state=+trk+rel,in_port=2,actions=output:1",
    "table=1,priority=5,ct_state=+trk+new,actions=drop",
    "table=1,priority=5,ct_state=+trk+inv,actions=drop",
];

/// `flows` (ovs-ofctl syntax) as flow-mod adds.
fn adds(flows: &[&str]) -> Vec<FlowMod> {
    flows
        .iter()
        .map(|t| FlowMod {
            command: FlowModCommand::Add,
            spec: parse_flow(t, ParseMode::Add).unwrap_or_else(|e| panic!("{t}: {}", e.message)),
        })
        .collect()
}

fn pipeline(flows: &[&str]) -> Pipeline {
    let mut p = Pipeline::new();
    p.apply(&adds(flows)).unwrap();
    p
}

struct Rig {
    dp: Datapath,
    tx: TxBatches,
    pool: PacketPool,
    snap: Arc<Snapshot>,
}

impl Rig {
    fn new(p: Pipeline) -> Rig {
        let snap = Arc::new(Snapshot {
            generation: 1,
            pipeline: Arc::new(p),
            ports: vec![PORT_A, PORT_B],
        });
        let dp = Datapath::new(snap.clone(), DatapathConfig::default());
        Rig {
            dp,
            tx: TxBatches::new(2, 64),
            pool: PacketPool::with_capacity(256),
            snap,
        }
    }

    /// One batch from `in_port`; what each port received.
    fn send(&mut self, in_port: PortNo, frames: &[Vec<u8>]) -> [Vec<Vec<u8>>; 2] {
        let mut batch: Vec<Packet> = frames
            .iter()
            .map(|f| {
                let mut p = self.pool.get().expect("buffer");
                assert!(p.set_data(f));
                p
            })
            .collect();
        self.dp
            .process_batch(in_port, &mut batch, &mut self.tx, &mut self.pool);
        let mut out: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for (i, o) in out.iter_mut().enumerate() {
            let v: Vec<Packet> = self.tx.drain(i).collect();
            *o = v.iter().map(|p| p.data().to_vec()).collect();
            v.into_iter().for_each(|p| self.pool.put(p));
        }
        out
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.dp.stats().drops(r)
    }

    fn conns(&self) -> Vec<String> {
        self.snap
            .pipeline
            .conntrack()
            .dump(None, None)
            .iter()
            .map(|c| c.to_line())
            .collect()
    }
}

/// Source and destination MACs and addresses of a packet from A (or from B).
fn ends(from_a: bool) -> ([u8; 6], [u8; 6], [u8; 4], [u8; 4]) {
    if from_a {
        (MAC_A, MAC_B, IP_A, IP_B)
    } else {
        (MAC_B, MAC_A, IP_B, IP_A)
    }
}

fn tcp(from_a: bool, sport: u16, dport: u16, flags: u16) -> Vec<u8> {
    let (ms, md, s, d) = ends(from_a);
    FrameBuilder::new()
        .eth(ms, md)
        .ipv4(s, d)
        .tcp(sport, dport, flags)
        .payload(if flags & PSH != 0 { b"GET /" } else { b"" })
        .build()
}

#[test]
fn a_reaches_b_on_80_replies_flow_b_cannot_open_to_a() {
    let mut r = Rig::new(pipeline(ACL));
    // Handshake A -> B:80.
    let syn = tcp(true, 40000, 80, SYN);
    let out = r.send(PORT_A, std::slice::from_ref(&syn));
    assert_eq!(out[1], vec![syn.clone()], "SYN to B:80 forwarded unchanged");
    assert_eq!(
        r.conns(),
        ["tcp,orig=(src=10.244.0.5,dst=10.244.0.6,sport=40000,dport=80),reply=(src=10.244.0.6,dst=10.244.0.5,sport=80,dport=40000),zone=1,mark=5,protoinfo=(state=SYN_SENT)"]
    );
    let synack = tcp(false, 80, 40000, SYN | ACK);
    assert_eq!(
        r.send(PORT_B, std::slice::from_ref(&synack))[0],
        vec![synack.clone()]
    );
    let ack = tcp(true, 40000, 80, ACK);
    assert_eq!(
        r.send(PORT_A, std::slice::from_ref(&ack))[1],
        vec![ack.clone()]
    );
    assert!(r.conns()[0].ends_with("protoinfo=(state=ESTABLISHED)"));

    // Data both ways, several per batch, several batches: cache hits must
    // give the same answers.
    let data_a = tcp(true, 40000, 80, ACK | PSH);
    let data_b = tcp(false, 80, 40000, ACK | PSH);
    for _ in 0..3 {
        let out = r.send(PORT_A, &[data_a.clone(), data_a.clone(), data_a.clone()]);
        assert_eq!(out[1].len(), 3);
        let out = r.send(PORT_B, &[data_b.clone(), data_b.clone()]);
        assert_eq!(out[0].len(), 2);
    }
    let st = r.dp.stats();
    // 18 packets, two passes each: only the distinct (direction, flags,
    // ct_state) combinations went to the slow path; the rest hit caches.
    assert!(st.misses <= 6, "{st:?}");
    assert_eq!(st.emc_hits + st.megaflow_hits + st.misses, 36, "{st:?}");
    assert!(st.recirculations >= 14, "every IP packet recirculated once");

    // B opens a connection to A: the SYN is new in table 1 and dropped.
    let before = r.drops(DropReason::ExplicitDrop);
    let out = r.send(PORT_B, &[tcp(false, 50000, 22, SYN)]);
    assert!(out[0].is_empty() && out[1].is_empty());
    assert_eq!(r.drops(DropReason::ExplicitDrop), before + 1);
    // A to another port of B: new, not port 80: dropped.
    let out = r.send(PORT_A, &[tcp(true, 40001, 81, SYN)]);
    assert!(out[1].is_empty());
    // An ACK with no connection: +inv, dropped.
    let out = r.send(PORT_A, &[tcp(true, 40002, 80, ACK)]);
    assert!(out[1].is_empty());
    assert_eq!(r.drops(DropReason::ExplicitDrop), before + 3);
    assert_eq!(r.conns().len(), 1, "refused packets created nothing");

    // Close from A; the connection walks to TIME_WAIT and stays listed.
    r.send(PORT_A, &[tcp(true, 40000, 80, FIN | ACK)]);
    r.send(PORT_B, &[tcp(false, 80, 40000, FIN | ACK)]);
    r.send(PORT_A, &[tcp(true, 40000, 80, ACK)]);
    assert!(r.conns()[0].ends_with("protoinfo=(state=TIME_WAIT)"));

    // ARP is switched without tracking.
    let arp = FrameBuilder::new().arp_request(MAC_A, IP_A, IP_B).build();
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&arp))[1], vec![arp]);
}

#[test]
fn icmp_errors_about_a_connection_come_back_as_related() {
    let mut r = Rig::new(pipeline(ACL));
    let syn = tcp(true, 40000, 80, SYN);
    r.send(PORT_A, std::slice::from_ref(&syn));
    // B's side answers with port unreachable quoting A's SYN.
    let err = FrameBuilder::new()
        .eth(MAC_B, MAC_A)
        .ipv4(IP_B, IP_A)
        .icmp(3, 3)
        .payload(&syn[14..14 + 28])
        .build();
    assert_eq!(r.send(PORT_B, std::slice::from_ref(&err))[0], vec![err]);
    // An unrelated error is invalid: dropped.
    let other = tcp(true, 1, 2, SYN);
    let err2 = FrameBuilder::new()
        .eth(MAC_B, MAC_A)
        .ipv4(IP_B, IP_A)
        .icmp(3, 3)
        .payload(&other[14..14 + 28])
        .build();
    assert!(r.send(PORT_B, &[err2])[0].is_empty());
}

#[test]
fn full_table_drops_commits_as_ct_full() {
    let p = pipeline(ACL);
    p.conntrack().set_limit(1);
    let mut r = Rig::new(p);
    assert_eq!(r.send(PORT_A, &[tcp(true, 40000, 80, SYN)])[1].len(), 1);
    let out = r.send(PORT_A, &[tcp(true, 40001, 80, SYN)]);
    assert!(out[1].is_empty());
    assert_eq!(r.drops(DropReason::CtFull), 1);
    assert_eq!(r.snap.pipeline.conntrack().stats().ct_full, 1);
    // The tracked connection still works.
    assert_eq!(
        r.send(PORT_B, &[tcp(false, 80, 40000, SYN | ACK)])[0].len(),
        1
    );
}

#[test]
fn ct_without_table_continues_with_the_untracked_state() {
    // ct(commit) then output in the same list: the packet is committed
    // and forwarded; no recirculation, ct_state stays unset in this pass.
    let mut r = Rig::new(pipeline(&[
        "table=0,priority=10,ip,in_port=1,actions=ct(commit,zone=7),output:2",
        "table=0,priority=10,ip,in_port=2,ct_state=-trk,actions=ct(table=1,zone=7)",
        "table=1,ct_state=+trk+est+rpl,actions=output:1",
    ]));
    let syn = tcp(true, 1234, 443, SYN);
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&syn))[1], vec![syn]);
    assert_eq!(r.dp.stats().recirculations, 0);
    assert_eq!(r.conns().len(), 1);
    assert!(r.conns()[0].contains("zone=7"));
    assert_eq!(
        r.send(PORT_B, &[tcp(false, 443, 1234, SYN | ACK)])[0].len(),
        1
    );
}

#[test]
fn ct_syntax_round_trips_like_ovs_including_nat() {
    for (input, printed) in [
        (
            "table=0,ip,actions=ct(table=1,zone=1)",
            "ip actions=ct(table=1,zone=1)",
        ),
        (
            "ip,actions=ct(zone=2,commit,exec(set_field:0x5->ct_mark,set_field:0x1/0x1->ct_label)),output:2",
            "ip actions=ct(commit,zone=2,exec(set_field:0x5->ct_mark,set_field:0x1/0x1->ct_label)),output:2",
        ),
        (
            "ip,actions=ct(commit,zone=NXM_NX_REG0[0..15])",
            "ip actions=ct(commit,zone=NXM_NX_REG0[0..15])",
        ),
        ("ip,actions=ct,ct_clear,output:1", "ip actions=ct,ct_clear,output:1"),
        (
            "ct_state=+trk+est-rel,ct_zone=3,ct_mark=0x5/0xff,ip,actions=drop",
            "ct_state=+est-rel+trk,ct_zone=3,ct_mark=0x5/0xff,ip actions=drop",
        ),
        // NAT, as `ovs-ofctl -O OpenFlow13 parse-flow` prints it (OVS 3.1):
        // nat after zone, before exec; ranges collapsed; flags in OVS order.
        (
            "ip,actions=ct(commit,zone=5,nat(src=10.0.0.1),table=52)",
            "ip actions=ct(commit,table=52,zone=5,nat(src=10.0.0.1))",
        ),
        (
            "ip,actions=ct(zone=5,nat,table=51)",
            "ip actions=ct(table=51,zone=5,nat)",
        ),
        (
            "ip,actions=ct(commit,nat(dst=10.0.0.1-10.0.0.3:80-90,random))",
            "ip actions=ct(commit,nat(dst=10.0.0.1-10.0.0.3:80-90,random))",
        ),
        (
            "tcp,actions=ct(commit,nat(src=10.0.0.1:1024,hash,persistent),exec(set_field:1->ct_mark))",
            "tcp actions=ct(commit,nat(src=10.0.0.1:1024,persistent,hash),exec(set_field:0x1->ct_mark))",
        ),
        (
            "ipv6,actions=ct(commit,nat(src=[fe80::1]-[fe80::2]:10-20))",
            "ipv6 actions=ct(commit,nat(src=[fe80::1]-[fe80::2]:10-20))",
        ),
        (
            "ipv6,actions=ct(commit,nat(src=fe80::1))",
            "ipv6 actions=ct(commit,nat(src=fe80::1))",
        ),
        (
            "ip,actions=ct(commit,nat(src=10.0.0.1:80-80))",
            "ip actions=ct(commit,nat(src=10.0.0.1:80))",
        ),
        ("ip,actions=ct(commit,nat())", "ip actions=ct(commit,nat)"),
        ("ip,actions=ct(commit,nat(src))", "ip actions=ct(commit,nat(src))"),
    ] {
        let s = parse_flow(input, ParseMode::Add)
            .unwrap_or_else(|e| panic!("{input}: {}", e.message));
        let out = format_flow(&s.to_flow());
        assert_eq!(out, printed, "{input}");
        // What we print parses back to the same flow.
        let again = parse_flow(&out, ParseMode::Add).unwrap();
        assert_eq!(again.actions, s.actions);
    }
    for (bad, why) in [
        // What OVS refuses: a range without commit, a NAT without an IP
        // match or of the other family, inverted ranges, both sides.
        ("ip,actions=ct(nat(src=10.0.0.1))", "needs commit"),
        ("actions=ct(commit,nat(src=10.0.0.1))", "nat needs ip"),
        ("actions=ct(nat)", "nat needs ip or ipv6"),
        ("ipv6,actions=ct(commit,nat(src=10.0.0.1))", "nat needs ip"),
        (
            "ip,actions=ct(commit,nat(src=10.0.0.2-10.0.0.1))",
            "invalid nat range",
        ),
        (
            "ip,actions=ct(commit,nat(src=10.0.0.1:90-80))",
            "invalid nat range",
        ),
        (
            "ip,actions=ct(commit,nat(src=10.0.0.1,dst=10.0.0.2))",
            "may only specify one of",
        ),
        ("ip,actions=ct(commit,nat(random))", "flags allowed only"),
        (
            "ip,actions=ct(commit,nat(src=10.0.0.1,random,hash))",
            "both",
        ),
        (
            "ip,actions=ct(commit,nat(src=10.0.0.1),nat(dst=10.0.0.2))",
            "only one nat",
        ),
        ("ip,actions=ct(zone=70000)", "ct zone"),
        ("ip,actions=ct(exec(set_field:1->ct_mark))", "needs commit"),
        (
            "ip,actions=ct(commit,exec(set_field:1->reg0))",
            "only set ct_mark or ct_label",
        ),
        ("ip,actions=ct(bogus)", "unknown argument"),
    ] {
        let e = parse_flow(bad, ParseMode::Add).expect_err(bad);
        assert!(e.message.contains(why), "{bad}: {}", e.message);
    }
}

#[test]
fn recirculated_pass_resumes_in_the_ct_table_and_masks_ct_fields() {
    let p = pipeline(ACL);
    let ports = [PORT_A, PORT_B];
    let mut k = FlowKey::ZERO;
    switch::packet::extract(&tcp(true, 40000, 80, SYN), PORT_A, &mut k);
    let x = translate(&p, &ports, &k);
    assert_eq!(x.actions.len(), 1);
    assert_eq!(x.actions[0].to_string(), "ct(zone=1),recirc(0x2)");
    assert_eq!(x.mask.recirc_id, u32::MAX);
    // Second pass: recirc_id 2 resumes in table 1.
    k.recirc_id = 2;
    k.ct_state = 0x21; // +trk+new
    k.ct_zone = 1;
    let x = translate(&p, &ports, &k);
    assert_eq!(
        x.actions.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["ct(commit,zone=1,mark=0x5/0xffffffff)", "2"]
    );
    assert_ne!(x.mask.ct_state, 0, "the megaflow depends on ct_state");
    // An id no ct gives: nothing matches.
    k.recirc_id = 300;
    assert!(translate(&p, &ports, &k).actions.is_empty());
}

/// Addresses and ports of an IPv4 TCP frame, after etherparse recomputed
/// and compared its IP and TCP checksums.
fn checked(f: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    let h = PacketHeaders::from_ethernet_slice(f).expect("parses");
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not ipv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let Some(TransportHeader::Tcp(t)) = &h.transport else {
        panic!("not tcp")
    };
    assert_eq!(
        t.checksum,
        t.calc_checksum_ipv4(ip, h.payload.slice()).unwrap()
    );
    (ip.source, ip.destination, t.source_port, t.destination_port)
}

fn tcp_between(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16, flags: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .tcp(sp, dp, flags)
        .payload(b"data")
        .build()
}

const NODE: [u8; 4] = [192, 0, 2, 1];
const OUTSIDE: [u8; 4] = [203, 0, 113, 9];

/// Masquerade as cni-shim's compiler writes it: pod traffic from port 1
/// committed with nat(src=NODE); replies from the uplink (port 2) un-NATed
/// by ct(nat) and delivered to the pod.
const MASQ: &[&str] = &[
    "table=0,priority=10,in_port=1,ip,actions=ct(commit,zone=9,nat(src=192.0.2.1),table=1)",
    "table=1,ip,actions=output:2",
    "table=0,priority=10,in_port=2,ip,ct_state=-trk,actions=ct(zone=9,nat,table=2)",
    "table=2,priority=10,ip,ct_state=+trk+est+rpl+dnat,actions=output:1",
    "table=2,priority=5,actions=drop",
];

#[test]
fn masquerade_rewrites_pod_traffic_to_the_node_address_and_replies_back() {
    let mut r = Rig::new(pipeline(MASQ));
    // Two pods, the same source port, the same server.
    let mut ports = Vec::new();
    for (pod, n) in [(IP_A, 0), (IP_B, 1)] {
        let out = r.send(PORT_A, &[tcp_between(pod, 40000, OUTSIDE, 80, SYN)]);
        assert_eq!(out[1].len(), 1, "pod {n}");
        let (s, d, sp, dp) = checked(&out[1][0]);
        assert_eq!((s, d, dp), (NODE, OUTSIDE, 80));
        if n == 0 {
            assert_eq!(sp, 40000, "a free source port is kept");
        } else {
            assert_ne!(sp, 40000, "the second pod gets another port");
        }
        ports.push(sp);
    }
    // ct-show has the translated reply tuples.
    let conns = r.conns();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(
        conns.contains(&format!(
            "tcp,orig=(src=10.244.0.6,dst=203.0.113.9,sport=40000,dport=80),\
         reply=(src=203.0.113.9,dst=192.0.2.1,sport=80,dport={}),zone=9,protoinfo=(state=SYN_SENT)",
            ports[1]
        )),
        "{conns:?}"
    );
    // The server's answers to the node address reach the right pod, and
    // the pods' next segments (through the cached megaflow) leave
    // translated the same way.
    for (port, pod) in [(ports[0], IP_A), (ports[1], IP_B)] {
        let out = r.send(PORT_B, &[tcp_between(OUTSIDE, 80, NODE, port, SYN | ACK)]);
        assert_eq!(out[0].len(), 1);
        assert_eq!(checked(&out[0][0]), (OUTSIDE, pod, 80, 40000));
        for flags in [ACK, ACK | PSH] {
            let out = r.send(PORT_A, &[tcp_between(pod, 40000, OUTSIDE, 80, flags)]);
            assert_eq!(checked(&out[1][0]), (NODE, OUTSIDE, port, 80));
        }
    }
    // An answer to a port nobody has is not a reply: dropped.
    let out = r.send(PORT_B, &[tcp_between(OUTSIDE, 80, NODE, 9, SYN | ACK)]);
    assert!(out[0].is_empty());
}

#[test]
fn an_exhausted_nat_range_drops_as_nat_no_port() {
    let mut r = Rig::new(pipeline(&[
        "table=0,in_port=1,ip,actions=ct(commit,zone=9,nat(src=192.0.2.1:5000),table=1)",
        "table=1,ip,actions=output:2",
    ]));
    assert_eq!(
        r.send(PORT_A, &[tcp_between(IP_A, 1, OUTSIDE, 80, SYN)])[1].len(),
        1
    );
    assert!(r.send(PORT_A, &[tcp_between(IP_A, 2, OUTSIDE, 80, SYN)])[1].is_empty());
    assert_eq!(r.drops(DropReason::NatNoPort), 1);
    assert_eq!(r.snap.pipeline.conntrack().stats().nat_no_port, 1);
}

const VIP: [u8; 4] = [10, 96, 0, 10];
const BACKENDS: [[u8; 4]; 3] = [[10, 244, 1, 1], [10, 244, 1, 2], [10, 244, 1, 3]];

fn service_group(buckets: &[usize]) -> String {
    let mut g = String::from(
        "group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst)",
    );
    for &i in buckets {
        g.push_str(&format!(
            ",bucket=bucket_id:{i},actions=ct(commit,zone=5,table=2,nat(dst=10.244.1.{}:8080))",
            i + 1
        ));
    }
    g
}

/// A ClusterIP service: new connections to VIP:80 go through the select
/// group, whose bucket commits them with DNAT to a backend; later packets
/// follow the connection (`ct(nat)` in table 0); replies are un-DNATed.
const SERVICE: &[&str] = &[
    "table=0,priority=10,in_port=1,tcp,nw_dst=10.96.0.10,tp_dst=80,ct_state=-trk,actions=ct(zone=5,nat,table=1)",
    "table=1,priority=10,ct_state=+trk+new,tcp,actions=group:1",
    "table=1,priority=5,ct_state=+trk+est,tcp,actions=output:2",
    "table=2,tcp,actions=output:2",
    "table=0,priority=10,in_port=2,tcp,ct_state=-trk,actions=ct(zone=5,nat,table=3)",
    "table=3,ct_state=+trk+rpl,tcp,actions=output:1",
];

fn service_rig(buckets: &[usize]) -> Rig {
    let mut p = Pipeline::new();
    p.apply_group_mod(
        &switch::group::parse_group_mod(&service_group(buckets), switch::group::GroupCommand::Add)
            .unwrap(),
    )
    .unwrap();
    p.apply(&adds(SERVICE)).unwrap();
    Rig::new(p)
}

/// Which backend a client port's packet went to.
fn backend_of(r: &mut Rig, sport: u16, flags: u16) -> usize {
    let out = r.send(PORT_A, &[tcp_between(IP_A, sport, VIP, 80, flags)]);
    assert_eq!(out[1].len(), 1, "sport {sport}");
    let (s, d, sp, dp) = checked(&out[1][0]);
    assert_eq!((s, sp, dp), (IP_A, sport, 8080));
    BACKENDS.iter().position(|b| *b == d).expect("a backend")
}

#[test]
fn service_dnat_through_a_select_group_spreads_and_sticks_while_buckets_change() {
    let mut r = service_rig(&[0, 1, 2]);
    let mut per = [0usize; 3];
    let mut chosen = Vec::new();
    for sport in 30000..30060u16 {
        let b = backend_of(&mut r, sport, SYN);
        per[b] += 1;
        chosen.push((sport, b));
    }
    assert!(per.iter().all(|&n| n >= 5), "spread {per:?}");
    // Replies come from the VIP.
    for &(sport, b) in chosen.iter().take(12) {
        let out = r.send(
            PORT_B,
            &[tcp_between(BACKENDS[b], 8080, IP_A, sport, SYN | ACK)],
        );
        assert_eq!(out[0].len(), 1);
        assert_eq!(checked(&out[0][0]), (VIP, IP_A, 80, sport));
    }
    let b = chosen[0].1;
    // Remove that connection's own backend from the group (new snapshot,
    // same tracker): the open connection stays on it, new ones avoid it.
    let mut p = (*r.snap.pipeline).clone();
    p.apply_group_mod(
        &switch::group::parse_group_mod(
            &format!("group_id=1,command_bucket_id={b}"),
            switch::group::GroupCommand::RemoveBuckets,
        )
        .unwrap(),
    )
    .unwrap();
    let snap = Arc::new(Snapshot {
        generation: 2,
        pipeline: Arc::new(p),
        ports: vec![PORT_A, PORT_B],
    });
    r.dp.set_snapshot(snap.clone());
    r.snap = snap;
    for (sport, was) in chosen.iter().take(12) {
        assert_eq!(backend_of(&mut r, *sport, ACK), *was, "sport {sport} moved");
    }
    for sport in 31000..31030u16 {
        assert_ne!(
            backend_of(&mut r, sport, SYN),
            b,
            "a new connection went to the removed backend"
        );
    }
}

#[test]
fn ct_after_a_header_rewrite_tracks_the_rewritten_packet() {
    // A set action before `ct` changes what the tracker must see: the
    // datapath re-extracts the rewritten frame then (it reuses the lookup
    // key only while no action has touched the packet). Both passes of the
    // recirculated copy see port 8080, and the committed connection is to
    // 8080, not to the port the packet arrived with.
    let mut r = Rig::new(pipeline(&[
        "table=0,priority=10,tcp,in_port=1,ct_state=-trk,actions=mod_tp_dst:8080,ct(table=1,zone=3)",
        "table=1,priority=10,tcp,ct_state=+trk+new,tp_dst=8080,actions=ct(commit,zone=3),output:2",
        "table=1,priority=5,actions=drop",
    ]));
    let out = r.send(PORT_A, &[tcp(true, 1234, 80, SYN)]);
    assert_eq!(out[1].len(), 1, "tracked and committed as 8080");
    assert_eq!(&out[1][0][36..38], &8080u16.to_be_bytes(), "rewritten");
    let conns = r.conns();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert!(conns[0].contains("dport=8080"), "{conns:?}");
    assert!(!conns[0].contains("dport=80)"), "{conns:?}");
    // Without the rewrite (a pristine packet) the same ACL keys on port 80.
    let mut r = Rig::new(pipeline(&[
        "table=0,priority=10,tcp,in_port=1,ct_state=-trk,actions=ct(table=1,zone=3)",
        "table=1,priority=10,tcp,ct_state=+trk+new,tp_dst=80,actions=ct(commit,zone=3),output:2",
        "table=1,priority=5,actions=drop",
    ]));
    assert_eq!(r.send(PORT_A, &[tcp(true, 1234, 80, SYN)])[1].len(), 1);
    assert!(r.conns()[0].contains("dport=80)"), "{:?}", r.conns());
}

fn udp(from_a: bool, sport: u16, dport: u16) -> Vec<u8> {
    let (ms, md, s, d) = ends(from_a);
    FrameBuilder::new()
        .eth(ms, md)
        .ipv4(s, d)
        .udp(sport, dport)
        .payload(b"x")
        .build()
}

/// A rig whose EMC takes every key (the default inserts 1 in 100), so the
/// first pass of each packet below is an EMC hit and may carry a hint.
fn rig_emc_always(p: Pipeline) -> Rig {
    let mut r = Rig::new(p);
    r.dp = Datapath::new(
        r.snap.clone(),
        DatapathConfig {
            emc_insert_inv_prob: 1,
            ..DatapathConfig::default()
        },
    );
    r
}

/// The recirculation hint (the first pass's EMC entry remembering the
/// recirculated pass's megaflow) answers only for the verdict it was
/// recorded with: `+new` -> `+est` and a mark change each take the full
/// lookup and give the new verdict's answer, and a flow-mod (new snapshot
/// generation) never sees an answer of the old tables.
#[test]
fn recirculation_hint_follows_the_verdict_and_never_outlives_a_flow_mod() {
    let mut r = rig_emc_always(pipeline(&[
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
        "table=1,priority=20,udp,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=1),output:2",
        "table=1,priority=20,udp,ct_state=+trk+est+rpl,in_port=2,actions=ct(commit,zone=1,exec(set_field:0x7->ct_mark)),output:1",
        "table=1,priority=20,udp,ct_state=+trk+est-rpl,ct_mark=0,in_port=1,actions=output:2",
        "table=1,priority=20,udp,ct_state=+trk+est-rpl,ct_mark=0x7,in_port=1,actions=drop",
    ]));
    let a = udp(true, 4000, 53);
    let hints = |r: &Rig| r.dp.stats().recirc_hint_hits;
    // +new, committed: the full lookup, which records the hint.
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&a))[1].len(), 1);
    assert_eq!(hints(&r), 0);
    // Still +new (no reply yet): the hint answers.
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&a))[1].len(), 1);
    assert_eq!(hints(&r), 1);
    assert_eq!(r.conns().len(), 1);
    // The reply makes it +est and sets the mark to 7.
    assert_eq!(r.send(PORT_B, &[udp(false, 53, 4000)])[0].len(), 1);
    assert!(r.conns()[0].contains("mark=7"), "{:?}", r.conns());
    // +est with mark 7 is dropped: the +new hint must not answer.
    let h0 = hints(&r);
    let drops0 = r.drops(DropReason::ExplicitDrop);
    let out = r.send(PORT_A, std::slice::from_ref(&a));
    assert!(out[0].is_empty() && out[1].is_empty(), "{out:?}");
    assert_eq!(r.drops(DropReason::ExplicitDrop), drops0 + 1);
    assert_eq!(hints(&r), h0, "a different verdict takes the full lookup");
    // Same verdict again: the (new) hint answers, with the same outcome.
    let out = r.send(PORT_A, &[a.clone(), a.clone()]);
    assert!(out[1].is_empty());
    assert_eq!(r.drops(DropReason::ExplicitDrop), drops0 + 3);
    assert_eq!(hints(&r), h0 + 2);
    // A flow-mod (same tracker, new generation) lets mark 7 through: the
    // caches and their hints are gone, the new tables answer.
    let mut p2 = (*r.snap.pipeline).clone();
    p2.apply(&[FlowMod {
        command: FlowModCommand::ModifyStrict,
        spec: parse_flow(
            "table=1,priority=20,udp,ct_state=+trk+est-rpl,ct_mark=0x7,in_port=1,actions=output:2",
            ParseMode::ModifyStrict,
        )
        .unwrap(),
    }])
    .unwrap();
    let snap2 = Arc::new(Snapshot {
        generation: 2,
        pipeline: Arc::new(p2),
        ports: vec![PORT_A, PORT_B],
    });
    r.dp.set_snapshot(snap2);
    let h1 = hints(&r);
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&a))[1], vec![a.clone()]);
    assert_eq!(hints(&r), h1, "no hint survives the flush");
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&a))[1], vec![a.clone()]);
    assert_eq!(hints(&r), h1 + 1);
    assert_eq!(r.drops(DropReason::ExplicitDrop), drops0 + 3);
}

/// A hinted pass is the same pass as a looked-up one: a `ct` in the
/// recirculated pass (a second zone) tracks with the recirculated key's
/// headers, and recirculates again from the hinted pass.
#[test]
fn hinted_pass_runs_a_second_ct_like_a_looked_up_one() {
    let mut r = rig_emc_always(pipeline(&[
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
        "table=1,priority=10,udp,ct_state=+trk,ct_zone=1,actions=ct(table=2,zone=2)",
        "table=2,priority=10,udp,ct_state=+trk+new,ct_zone=2,actions=ct(commit,zone=2),output:2",
    ]));
    for i in 0..4u16 {
        let f = udp(true, 5000, 53);
        assert_eq!(
            r.send(PORT_A, std::slice::from_ref(&f))[1].len(),
            1,
            "packet {i}"
        );
    }
    let conns = r.conns();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert!(conns[0].contains("zone=2") && conns[0].contains("dport=53"));
    // Packets 2-4: their second pass from the hint; the third is looked up
    // (a hinted pass has no EMC entry of its own to carry the next hint).
    assert_eq!(r.dp.stats().recirc_hint_hits, 3, "{:?}", r.dp.stats());
    assert_eq!(r.dp.stats().recirculations, 8);
}

/// The established-connection fast path (the first pass's EMC entry's
/// connection token) answers only while the tracker would give the same
/// verdict: the ACK entry of an established connection skips the tracker,
/// a FIN from the other side sends the next ACK back through the state
/// machine (FIN_WAIT -> CLOSE_WAIT), and after a `ct-flush` the ACK finds
/// no connection (`+inv`, dropped) instead of a cached `+est`.
#[test]
fn established_connections_take_the_fast_path_until_the_connection_changes() {
    let mut r = rig_emc_always(pipeline(&[
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
        "table=1,priority=20,tcp,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=1),output:2",
        "table=1,priority=20,tcp,ct_state=+trk+est,in_port=1,actions=output:2",
        "table=1,priority=20,tcp,ct_state=+trk+est,in_port=2,actions=output:1",
        "table=1,priority=30,ct_state=+trk+inv,actions=drop",
    ]));
    let fast = |r: &Rig| r.dp.stats().ct_fast_hits;
    let ack = tcp(true, 4000, 80, ACK);
    assert_eq!(r.send(PORT_A, &[tcp(true, 4000, 80, SYN)])[1].len(), 1);
    assert_eq!(
        r.send(PORT_B, &[tcp(false, 80, 4000, SYN | ACK)])[0].len(),
        1
    );
    // The handshake's ACK changes the state: no token yet.
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&ack))[1].len(), 1);
    assert_eq!(fast(&r), 0);
    // The next ACK changes nothing but the expiry (token recorded), the
    // two after it take the fast path, forwarded like the others.
    let out = r.send(PORT_A, &[ack.clone(), ack.clone(), ack.clone()]);
    assert_eq!(out[1], vec![ack.clone(); 3]);
    assert_eq!(fast(&r), 2, "{:?}", r.dp.stats());
    // Table 0's megaflow is a lone `ct(table=1)`, table 1's has no `ct`:
    // both ran as direct passes (no recirculated key, no stack).
    assert_eq!(r.dp.stats().direct_passes, 2, "{:?}", r.dp.stats());
    // The server's FIN: the ACK entry's token is dead; the ACK goes through
    // the state machine (FIN_WAIT -> CLOSE_WAIT) and is still +est.
    assert_eq!(
        r.send(PORT_B, &[tcp(false, 80, 4000, FIN | ACK)])[0].len(),
        1
    );
    assert!(r.conns()[0].contains("FIN_WAIT"), "{:?}", r.conns());
    assert_eq!(r.send(PORT_A, std::slice::from_ref(&ack))[1].len(), 1);
    assert_eq!(fast(&r), 2, "a changed connection takes the slow path");
    assert!(r.conns()[0].contains("CLOSE_WAIT"), "{:?}", r.conns());
    // CLOSE_WAIT -> CLOSE_WAIT: a new token, then the fast path again.
    r.send(PORT_A, &[ack.clone(), ack.clone()]);
    assert_eq!(fast(&r), 3);
    // ct-flush: no cached +est; the lone ACK is +inv and dropped.
    r.snap.pipeline.conntrack().flush(None);
    let drops = r.drops(DropReason::ExplicitDrop);
    let out = r.send(PORT_A, std::slice::from_ref(&ack));
    assert!(out[1].is_empty(), "{out:?}");
    assert_eq!(r.drops(DropReason::ExplicitDrop), drops + 1);
    assert_eq!(fast(&r), 3);
}

/// A truncated frame whose exact key equals a tracked connection's (UDP
/// from port 0 to port 0: a UDP header cut short extracts with no ports)
/// never rides that connection's token: it is `+inv`.
#[test]
fn a_truncated_frame_sharing_an_exact_key_never_takes_the_fast_path() {
    let mut r = rig_emc_always(pipeline(&[
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
        "table=1,priority=20,udp,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=1),output:2",
        "table=1,priority=20,udp,ct_state=+trk+est,in_port=1,actions=output:2",
        "table=1,priority=20,udp,ct_state=+trk+est,in_port=2,actions=output:1",
        "table=1,priority=30,ct_state=+trk+inv,actions=drop",
    ]));
    let good = udp(true, 0, 0);
    r.send(PORT_A, std::slice::from_ref(&good));
    assert_eq!(r.send(PORT_B, &[udp(false, 0, 0)])[0].len(), 1);
    r.send(PORT_A, &[good.clone(), good.clone(), good.clone()]);
    assert!(r.dp.stats().ct_fast_hits >= 1, "{:?}", r.dp.stats());
    // The IPv4 total length says 24: 4 bytes of UDP header (RFC 768 needs 8).
    let mut cut = good[..14 + 24].to_vec();
    cut[16..18].copy_from_slice(&24u16.to_be_bytes());
    cut[24..26].copy_from_slice(&[0, 0]);
    let sum = (0..10)
        .map(|i| u32::from(u16::from_be_bytes([cut[14 + 2 * i], cut[15 + 2 * i]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    cut[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut k = FlowKey::ZERO;
    let lay = switch::packet::extract(&cut, PORT_A, &mut k);
    let mut kg = FlowKey::ZERO;
    switch::packet::extract(&good, PORT_A, &mut kg);
    assert_eq!(k, kg, "the cut frame has the good frame's exact key");
    assert_ne!(lay.status, switch::packet::ParseStatus::Ok);
    let fast = r.dp.stats().ct_fast_hits;
    let drops = r.drops(DropReason::ExplicitDrop);
    let out = r.send(PORT_A, &[cut]);
    assert!(out[1].is_empty(), "{out:?}");
    assert_eq!(r.drops(DropReason::ExplicitDrop), drops + 1, "+inv");
    assert_eq!(r.dp.stats().ct_fast_hits, fast);
    // The good frames take it again once the slow path has re-recorded
    // the entry's verdict and token (the +inv verdict replaced them).
    let out = r.send(PORT_A, &[good.clone(), good.clone(), good.clone()]);
    assert_eq!(out[1].len(), 3);
    assert_eq!(r.dp.stats().ct_fast_hits, fast + 2);
}

/// A rig whose EMC takes nothing: no entry, so no hint and no direct pass;
/// every recirculated pass goes through the recirculation stack.
fn rig_emc_never(p: Pipeline) -> Rig {
    let mut r = Rig::new(p);
    r.dp = Datapath::new(
        r.snap.clone(),
        DatapathConfig {
            emc_insert_inv_prob: 0,
            ..DatapathConfig::default()
        },
    );
    r
}

/// Every rule's (table, priority, packets, bytes), credited up to now.
fn rule_counters(r: &mut Rig) -> Vec<(u8, u16, u64, u64)> {
    use std::sync::atomic::Ordering::Relaxed;
    r.dp.push_stats();
    let mut v: Vec<_> = r
        .snap
        .pipeline
        .rules()
        .map(|x| {
            let s = &x.stats;
            (
                x.flow.table,
                x.flow.priority,
                s.n_packets.load(Relaxed),
                s.n_bytes.load(Relaxed),
            )
        })
        .collect();
    v.sort_unstable();
    v
}

/// The direct pass (an established packet's second pass run at once from
/// its first pass's EMC entry, without the recirculation stack) answers
/// exactly as the stack does: the same frames out of the same ports, the
/// same connections, the same recirculation count and the same rule
/// counters in both tables, which `dump-flows` shows. Compared over the
/// same traffic with a datapath whose EMC takes nothing.
#[test]
fn the_direct_pass_answers_and_counts_as_the_recirculation_stack_does() {
    let flows: &[&str] = &[
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
        "table=0,priority=5,actions=drop",
        "table=1,priority=20,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=1),output:2",
        "table=1,priority=20,ct_state=+trk+est,in_port=1,actions=mod_dl_src:02:00:00:00:00:aa,output:2",
        "table=1,priority=20,ct_state=+trk+est,in_port=2,actions=output:1",
        "table=1,priority=15,ct_state=+trk+new,actions=drop",
        "table=1,priority=30,ct_state=+trk+inv,actions=drop",
    ];
    let mut direct = rig_emc_always(pipeline(flows));
    let mut stack = rig_emc_never(pipeline(flows));
    let data_a = tcp(true, 4000, 80, ACK | PSH);
    let data_b = tcp(false, 80, 4000, ACK | PSH);
    let mut traffic: Vec<(PortNo, Vec<Vec<u8>>)> = vec![
        (PORT_A, vec![tcp(true, 4000, 80, SYN), udp(true, 5000, 53)]),
        (
            PORT_B,
            vec![tcp(false, 80, 4000, SYN | ACK), udp(false, 53, 5000)],
        ),
        (PORT_A, vec![tcp(true, 4000, 80, ACK)]),
    ];
    for _ in 0..4 {
        traffic.push((
            PORT_A,
            vec![data_a.clone(), udp(true, 5000, 53), data_a.clone()],
        ));
        traffic.push((PORT_B, vec![data_b.clone(), udp(false, 53, 5000)]));
    }
    // B opens to A (new from port 2: dropped), an ACK of no connection
    // (+inv: dropped), then A closes.
    traffic.push((PORT_B, vec![tcp(false, 6000, 22, SYN)]));
    traffic.push((PORT_A, vec![tcp(true, 4001, 80, ACK), data_a.clone()]));
    traffic.push((PORT_A, vec![tcp(true, 4000, 80, FIN | ACK), data_a.clone()]));
    traffic.push((PORT_B, vec![tcp(false, 80, 4000, FIN | ACK)]));
    traffic.push((PORT_A, vec![tcp(true, 4000, 80, ACK), udp(true, 5000, 53)]));
    for (i, (port, frames)) in traffic.iter().enumerate() {
        assert_eq!(
            direct.send(*port, frames),
            stack.send(*port, frames),
            "batch {i}"
        );
    }
    assert_eq!(direct.conns(), stack.conns());
    let (d, s) = (direct.dp.stats().clone(), stack.dp.stats().clone());
    assert!(
        d.direct_passes >= 8,
        "established packets went direct: {d:?}"
    );
    assert_eq!(s.direct_passes + s.emc_hits, 0, "{s:?}");
    assert_eq!(d.recirculations, s.recirculations);
    assert_eq!(d.packets, s.packets);
    assert_eq!(d.total_drops(), s.total_drops());
    assert_eq!(rule_counters(&mut direct), rule_counters(&mut stack));
}

/// A second pass with a `ct` of its own needs the key the first pass's
/// `ct` builds, so it never runs directly: the first pass still takes the
/// established-connection fast path, the second goes through the stack.
#[test]
fn a_second_pass_with_its_own_ct_takes_the_stack() {
    let mut r = rig_emc_always(pipeline(&[
        "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
        "table=1,priority=20,udp,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=1),output:2",
        "table=1,priority=20,udp,ct_state=+trk+est,in_port=1,actions=ct(commit,zone=1),output:2",
        "table=1,priority=20,udp,ct_state=+trk+est,in_port=2,actions=output:1",
    ]));
    let a = udp(true, 4000, 53);
    r.send(PORT_A, std::slice::from_ref(&a));
    assert_eq!(r.send(PORT_B, &[udp(false, 53, 4000)])[0].len(), 1);
    for _ in 0..3 {
        assert_eq!(
            r.send(PORT_A, &[a.clone(), a.clone()])[1],
            vec![a.clone(); 2]
        );
    }
    let s = r.dp.stats();
    assert!(s.ct_fast_hits >= 4, "{s:?}");
    assert!(s.recirc_hint_hits >= 4, "{s:?}");
    assert_eq!(s.direct_passes, 0, "{s:?}");
    assert_eq!(r.conns().len(), 1);
}
