//! NAT tests: real frames through extraction and [`Conntrack::execute_mut`];
//! every rewritten frame's checksums are recomputed with etherparse.

use super::tcp::flags::{ACK, SYN};
use super::*;
use crate::packet::{extract, FrameBuilder};
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};

const POD: [u8; 4] = [10, 244, 0, 5];
const POD2: [u8; 4] = [10, 244, 0, 6];
const SRV: [u8; 4] = [203, 0, 113, 9];
const NODE: [u8; 4] = [192, 0, 2, 1];
const VIP: [u8; 4] = [10, 96, 0, 10];
const BACKEND: [u8; 4] = [10, 244, 1, 5];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn tcp(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16, flags: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .tcp(sp, dp, flags)
        .payload(b"hello")
        .build()
}

fn udp(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .udp(sp, dp)
        .payload(b"query")
        .build()
}

fn echo(s: [u8; 4], d: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
    let mut f = FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .icmp_echo(id, 1)
        .build();
    if reply {
        // Echo reply (RFC 792): type 0; the checksum drops by 8 << 8.
        f[34] = 0;
        let c = u16::from_be_bytes([f[36], f[37]]);
        let c = nat_adj(c, 0x0800, 0x0000);
        f[36..38].copy_from_slice(&c.to_be_bytes());
    }
    f
}

fn nat_adj(hc: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An ICMP error (type `ty`) from `from` to `to` quoting `quoted`'s IP
/// header and 8 bytes of its payload (RFC 792).
fn icmp_error(from: [u8; 4], to: [u8; 4], ty: u8, quoted: &[u8]) -> Vec<u8> {
    FrameBuilder::new()
        .eth(MAC_B, MAC_A)
        .ipv4(from, to)
        .icmp(ty, 3)
        .payload(&quoted[14..14 + 28])
        .build()
}

fn snat(zone: u16, range: &str) -> CtExec {
    CtExec {
        zone,
        commit: true,
        nat: Some(NatSpec::parse(Some(range)).expect("nat spec")),
        ..CtExec::default()
    }
}

fn nat_lookup(zone: u16) -> CtExec {
    CtExec {
        zone,
        nat: Some(NatSpec::default()),
        ..CtExec::default()
    }
}

fn run(ct: &Conntrack, frame: &mut [u8], x: CtExec, now: u64) -> (CtVerdict, bool) {
    let mut k = FlowKey::ZERO;
    let lay = extract(frame, 1, &mut k);
    ct.execute_mut(frame, &lay, &k, &x, now)
}

/// Recompute every checksum of `f` with etherparse (the quoted IP header of
/// an ICMP error too) and compare; return (src, dst, sport, dport) with
/// the ICMP echo id as both ports.
fn check(f: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let h = PacketHeaders::from_ethernet_slice(f).expect("etherparse parses");
    let payload = h.payload.slice();
    let Some(NetHeaders::Ipv4(iph, _)) = &h.net else {
        panic!("not ipv4")
    };
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "ip checksum"
    );
    let (sp, dp) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(iph, payload).unwrap(),
                "tcp checksum"
            );
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(iph, payload).unwrap(),
                "udp checksum"
            );
            (u.source_port, u.destination_port)
        }
        Some(TransportHeader::Icmpv4(i)) => {
            assert_eq!(
                i.checksum,
                i.icmp_type.calc_checksum(payload),
                "icmp checksum"
            );
            if matches!(
                i.icmp_type,
                etherparse::Icmpv4Type::DestinationUnreachable(_)
                    | etherparse::Icmpv4Type::TimeExceeded(_)
            ) {
                let inner = etherparse::Ipv4HeaderSlice::from_slice(payload).expect("quoted ip");
                assert_eq!(
                    inner.header_checksum(),
                    inner.to_header().calc_header_checksum(),
                    "quoted ip checksum"
                );
            }
            let id = u16::from_be_bytes([f[38], f[39]]);
            (id, id)
        }
        _ => (0, 0),
    };
    (iph.source, iph.destination, sp, dp)
}

/// The quoted header of an ICMP error frame: (src, dst, sport, dport).
fn quoted(f: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let q = &f[14 + 20 + 8..];
    let a = |o: usize| [q[o], q[o + 1], q[o + 2], q[o + 3]];
    let p = |o: usize| u16::from_be_bytes([q[o], q[o + 1]]);
    (a(12), a(16), p(20), p(22))
}

const SNAT_NEW: u32 = cs::TRK | cs::NEW | cs::SNAT;

#[test]
fn snat_translates_both_directions_with_valid_checksums() {
    let ct = Conntrack::new(100);
    let mut syn = tcp(POD, 40000, SRV, 80, SYN);
    let (v, changed) = run(&ct, &mut syn, snat(7, "src=192.0.2.1"), 0);
    assert_eq!(v.state, SNAT_NEW);
    assert!(changed);
    // Masquerade keeps a free source port.
    assert_eq!(check(&syn), (NODE, SRV, 40000, 80));
    // The reply to the node address is un-NATed back to the pod: +dnat.
    let mut sa = tcp(SRV, 80, NODE, 40000, SYN | ACK);
    let (v, changed) = run(&ct, &mut sa, nat_lookup(7), 1);
    assert_eq!(v.state, cs::TRK | cs::EST | cs::RPL | cs::DNAT);
    assert!(changed);
    assert_eq!(check(&sa), (SRV, POD, 80, 40000));
    // Later packets of the pod go out translated (commit+nat again: no
    // new binding, the connection's one).
    let mut ack = tcp(POD, 40000, SRV, 80, ACK);
    let (v, _) = run(&ct, &mut ack, snat(7, "src=192.0.2.1"), 2);
    assert_eq!(v.state, cs::TRK | cs::EST | cs::SNAT);
    assert_eq!(check(&ack), (NODE, SRV, 40000, 80));
    // A ct without nat finds the connection from the reply tuple but
    // leaves the packet alone (and sets no NAT bit).
    let mut sa2 = tcp(SRV, 80, NODE, 40000, ACK);
    let (v, changed) = run(
        &ct,
        &mut sa2,
        CtExec {
            zone: 7,
            ..CtExec::default()
        },
        3,
    );
    assert_eq!(v.state, cs::TRK | cs::EST | cs::RPL);
    assert!(!changed);
    assert_eq!(check(&sa2), (SRV, NODE, 80, 40000));
    // Another zone does not know the connection.
    let mut sa3 = tcp(SRV, 80, NODE, 40000, ACK);
    assert_eq!(
        run(&ct, &mut sa3, nat_lookup(8), 3).0.state,
        cs::TRK | cs::INV
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn snat_udp_and_icmp_echo_translate_ports_and_ids() {
    let ct = Conntrack::new(100);
    let mut q = udp(POD, 5353, SRV, 53);
    assert_eq!(
        run(&ct, &mut q, snat(1, "src=192.0.2.1"), 0).0.state,
        SNAT_NEW
    );
    assert_eq!(check(&q), (NODE, SRV, 5353, 53));
    let mut r = udp(SRV, 53, NODE, 5353);
    run(&ct, &mut r, nat_lookup(1), 0);
    assert_eq!(check(&r), (SRV, POD, 53, 5353));
    // Two pods pinging the same server with the same identifier: the
    // second gets another identifier, and each reply finds its pod.
    let mut p1 = echo(POD, SRV, 7, false);
    let mut p2 = echo(POD2, SRV, 7, false);
    assert_eq!(
        run(&ct, &mut p1, snat(1, "src=192.0.2.1"), 0).0.state,
        SNAT_NEW
    );
    assert_eq!(
        run(&ct, &mut p2, snat(1, "src=192.0.2.1"), 0).0.state,
        SNAT_NEW
    );
    let (s1, _, id1, _) = check(&p1);
    let (s2, _, id2, _) = check(&p2);
    assert_eq!((s1, s2, id1), (NODE, NODE, 7));
    assert_ne!(id2, 7);
    for (id, pod) in [(id1, POD), (id2, POD2)] {
        let mut rep = echo(SRV, NODE, id, true);
        let (v, _) = run(&ct, &mut rep, nat_lookup(1), 1);
        assert_eq!(v.state, cs::TRK | cs::EST | cs::RPL | cs::DNAT);
        assert_eq!(check(&rep), (SRV, pod, 7, 7));
    }
}

#[test]
fn two_pods_with_the_same_source_port_get_distinct_reply_tuples() {
    let ct = Conntrack::new(100);
    let mut a = tcp(POD, 40000, SRV, 443, SYN);
    let mut b = tcp(POD2, 40000, SRV, 443, SYN);
    run(&ct, &mut a, snat(3, "src=192.0.2.1"), 0);
    run(&ct, &mut b, snat(3, "src=192.0.2.1"), 0);
    let (_, _, pa, _) = check(&a);
    let (_, _, pb, _) = check(&b);
    assert_eq!(pa, 40000);
    assert_ne!(pb, 40000);
    assert!(
        (1024..=65535).contains(&pb),
        "{pb} outside the ephemeral class"
    );
    for (port, pod) in [(pa, POD), (pb, POD2)] {
        let mut r = tcp(SRV, 443, NODE, port, SYN | ACK);
        run(&ct, &mut r, nat_lookup(3), 1);
        assert_eq!(check(&r), (SRV, pod, 443, 40000));
    }
    // ct-show prints the translated reply tuple, and the node address
    // finds the connection.
    let lines: Vec<String> = ct
        .dump(Some(3), Some(IpAddr::from(NODE)))
        .iter()
        .map(ConnView::to_line)
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.contains(&format!(
        "tcp,orig=(src=10.244.0.6,dst=203.0.113.9,sport=40000,dport=443),\
         reply=(src=203.0.113.9,dst=192.0.2.1,sport=443,dport={pb}),zone=3,protoinfo=(state=SYN_RECV)"
    )), "{lines:?}");
}

#[test]
fn port_allocation_under_churn_never_shares_a_reply_tuple() {
    let ct = Conntrack::new(10_000);
    ct.timeouts.set("udp_first", 1).expect("timeout");
    ct.timeouts.set("udp_stream", 1).expect("timeout");
    let x = snat(9, "src=192.0.2.1:1000-1099");
    let sources = [POD, POD2, [10, 244, 0, 7]];
    let mut seen_ports = std::collections::HashSet::new();
    for round in 0..40u64 {
        let now = round * 1000;
        // Everything of the previous round has expired: the sweep frees
        // its ports (and would anyway within a second in switchd).
        ct.sweep(now);
        let mut translated = Vec::new();
        for i in 0..60u16 {
            // Sources and ports repeat within and across rounds.
            let src = sources[usize::from(i % 3)];
            let sport = 20000 + (i + round as u16 * 7) % 25;
            let mut f = udp(src, sport, SRV, 53);
            let (v, _) = run(&ct, &mut f, x, now);
            if v.state & cs::NEW == 0 {
                // The same source and port again in this round: the same
                // connection, the same translation.
                continue;
            }
            assert!(!v.nat_exhausted, "round {round}: exhausted at {i}");
            let (s, _, p, _) = check(&f);
            assert_eq!(s, NODE);
            assert!((1000..=1099).contains(&p));
            seen_ports.insert(p);
            translated.push((src, sport, p));
        }
        let views = ct.dump(Some(9), None);
        let mut replies: Vec<_> = views
            .iter()
            .map(|c| (c.reply.src, c.reply.dst, c.reply.sport, c.reply.dport))
            .collect();
        let n = replies.len();
        replies.sort();
        replies.dedup();
        assert_eq!(
            replies.len(),
            n,
            "round {round}: two connections share a reply tuple"
        );
        assert_eq!(n, translated.len());
        // Every reply comes back to the source that owns the port.
        for (src, sport, p) in translated {
            let mut r = udp(SRV, 53, NODE, p);
            let (v, _) = run(&ct, &mut r, nat_lookup(9), now);
            assert_eq!(v.state & cs::RPL, cs::RPL);
            assert_eq!(check(&r), (SRV, src, 53, sport));
        }
    }
    // 40 rounds of up to 60 connections over 100 ports: ports were reused.
    assert!(ct.stats().commits > 1000);
    assert!(seen_ports.len() <= 100);
}

#[test]
fn an_exhausted_range_drops_with_a_named_reason_until_a_port_is_freed() {
    let ct = Conntrack::new(100);
    let x = snat(2, "src=192.0.2.1-192.0.2.2:5000-5001");
    let mut got = Vec::new();
    for sport in 0..4u16 {
        let mut f = tcp(POD, 30000 + sport, SRV, 80, SYN);
        let (v, _) = run(&ct, &mut f, x, 0);
        assert_eq!(v.state, SNAT_NEW);
        let (s, _, p, _) = check(&f);
        got.push((s, p));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (NODE, 5000),
            (NODE, 5001),
            ([192, 0, 2, 2], 5000),
            ([192, 0, 2, 2], 5001)
        ]
    );
    let mut f = tcp(POD, 30009, SRV, 80, SYN);
    let (v, changed) = run(&ct, &mut f, x, 0);
    assert!(v.nat_exhausted && !changed);
    assert_eq!(ct.stats().nat_no_port, 1);
    assert_eq!(ct.len(), 4);
    // Another destination has its own reply tuples.
    let mut g = tcp(POD, 30009, [203, 0, 113, 10], 80, SYN);
    assert!(!run(&ct, &mut g, x, 0).0.nat_exhausted);
    // A flush frees the tuples.
    ct.flush(Some(2));
    let mut f = tcp(POD, 30009, SRV, 80, SYN);
    assert_eq!(run(&ct, &mut f, x, 0).0.state, SNAT_NEW);
    // So does expiry (the sweep).
    let mut more = 0;
    for sport in 0..3u16 {
        let mut f = tcp(POD, 31000 + sport, SRV, 80, SYN);
        more += usize::from(!run(&ct, &mut f, x, 0).0.nat_exhausted);
    }
    assert_eq!(more, 3);
    let mut f = tcp(POD, 32000, SRV, 80, SYN);
    assert!(run(&ct, &mut f, x, 0).0.nat_exhausted);
    ct.sweep(121_000);
    assert!(ct.is_empty());
    let mut f = tcp(POD, 32000, SRV, 80, SYN);
    assert_eq!(run(&ct, &mut f, x, 121_000).0.state, SNAT_NEW);
}

#[test]
fn dnat_sends_to_the_backend_and_replies_come_from_the_vip() {
    let ct = Conntrack::new(100);
    let x = snat(4, "dst=10.244.1.5:8080");
    let mut syn = tcp(POD, 33000, VIP, 80, SYN);
    let (v, _) = run(&ct, &mut syn, x, 0);
    assert_eq!(v.state, cs::TRK | cs::NEW | cs::DNAT);
    assert_eq!(check(&syn), (POD, BACKEND, 33000, 8080));
    let mut sa = tcp(BACKEND, 8080, POD, 33000, SYN | ACK);
    let (v, _) = run(&ct, &mut sa, nat_lookup(4), 1);
    assert_eq!(v.state, cs::TRK | cs::EST | cs::RPL | cs::SNAT);
    assert_eq!(check(&sa), (VIP, POD, 80, 33000));
    // Later packets follow the connection whatever range the flow names.
    let mut ack = tcp(POD, 33000, VIP, 80, ACK);
    run(&ct, &mut ack, snat(4, "dst=10.244.9.9:9999"), 2);
    assert_eq!(check(&ack), (POD, BACKEND, 33000, 8080));
    let line = ct.dump(Some(4), None)[0].to_line();
    assert_eq!(
        line,
        "tcp,orig=(src=10.244.0.5,dst=10.96.0.10,sport=33000,dport=80),\
         reply=(src=10.244.1.5,dst=10.244.0.5,sport=8080,dport=33000),zone=4,protoinfo=(state=ESTABLISHED)"
    );
    // The backend's address also finds it.
    assert_eq!(ct.dump(None, Some(IpAddr::from(BACKEND))).len(), 1);
}

#[test]
fn snat_with_a_port_range_stays_inside_it() {
    let ct = Conntrack::new(100);
    let x = snat(5, "src=192.0.2.1:2000-2003");
    let mut ports = Vec::new();
    for i in 0..4u16 {
        let mut f = udp(POD, 7000 + i, SRV, 53);
        assert_eq!(run(&ct, &mut f, x, 0).0.state, SNAT_NEW);
        ports.push(check(&f).2);
    }
    ports.sort();
    assert_eq!(ports, vec![2000, 2001, 2002, 2003]);
}

#[test]
fn icmp_errors_about_natted_connections_are_translated_back() {
    let ct = Conntrack::new(100);
    // SNAT: a router tells the node its datagram could not be delivered.
    let mut q = udp(POD, 5000, SRV, 53);
    run(&ct, &mut q, snat(6, "src=192.0.2.1"), 0);
    let mut err = icmp_error([198, 51, 100, 1], NODE, 3, &q);
    let (v, changed) = run(&ct, &mut err, nat_lookup(6), 1);
    assert!(changed);
    assert_eq!(v.state, cs::TRK | cs::REL | cs::RPL | cs::DNAT);
    // Outer destination back to the pod, the router stays the source; the
    // quoted datagram is the pod's own again.
    let (s, d, _, _) = check(&err);
    assert_eq!((s, d), ([198, 51, 100, 1], POD));
    assert_eq!(quoted(&err), (POD, SRV, 5000, 53));
    // DNAT: the backend's port is closed; the client hears it from the VIP.
    let mut d = udp(POD, 6000, VIP, 53);
    run(&ct, &mut d, snat(6, "dst=10.244.1.5:5353"), 0);
    assert_eq!(check(&d), (POD, BACKEND, 6000, 5353));
    let mut err = icmp_error(BACKEND, POD, 3, &d);
    let (v, _) = run(&ct, &mut err, nat_lookup(6), 1);
    assert_eq!(v.state, cs::TRK | cs::REL | cs::RPL | cs::SNAT);
    let (s, dd, _, _) = check(&err);
    assert_eq!((s, dd), (VIP, POD));
    assert_eq!(quoted(&err), (POD, VIP, 6000, 53));
    // Without nat in the ct action the error is related but untouched.
    let mut err2 = icmp_error(BACKEND, POD, 3, &d);
    let before = err2.clone();
    let (v, changed) = run(
        &ct,
        &mut err2,
        CtExec {
            zone: 6,
            ..CtExec::default()
        },
        1,
    );
    assert_eq!(v.state, cs::TRK | cs::REL | cs::RPL);
    assert!(!changed);
    assert_eq!(err2, before);
}

#[test]
fn the_mirror_of_a_natted_tuple_is_not_the_connection() {
    let ct = Conntrack::new(100);
    let mut syn = tcp(POD, 40000, SRV, 80, SYN);
    run(&ct, &mut syn, snat(7, "src=192.0.2.1"), 0);
    // The server answering the pod's own address (not the node's) is not
    // a reply of the masqueraded connection.
    let mut f = tcp(SRV, 80, POD, 40000, SYN | ACK);
    assert_eq!(
        run(&ct, &mut f, nat_lookup(7), 1).0.state,
        cs::TRK | cs::INV
    );
}

#[test]
fn ipv6_snat_rewrites_addresses_and_ports_with_valid_checksums() {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    let pod: [u8; 16] = "fd00:10:244::5"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let srv: [u8; 16] = "2001:db8::9"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let node: [u8; 16] = "2001:db8:1::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let f6 = |s: [u8; 16], sp: u16, d: [u8; 16], dp: u16, flags: u16| {
        FrameBuilder::new()
            .eth(MAC_A, MAC_B)
            .ipv6(s, d)
            .tcp(sp, dp, flags)
            .payload(b"v6")
            .build()
    };
    let check6 = |f: &[u8]| {
        let h = PacketHeaders::from_ethernet_slice(f).expect("parses");
        let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
            panic!("not ipv6")
        };
        let Some(TransportHeader::Tcp(t)) = &h.transport else {
            panic!("not tcp")
        };
        assert_eq!(
            t.checksum,
            t.calc_checksum_ipv6(ip, h.payload.slice()).unwrap()
        );
        (ip.source, ip.destination, t.source_port, t.destination_port)
    };
    let ct = Conntrack::new(10);
    let x = snat(1, "src=[2001:db8:1::1]:3000-3001");
    let mut syn = f6(pod, 40000, srv, 443, SYN);
    assert_eq!(run(&ct, &mut syn, x, 0).0.state, SNAT_NEW);
    let (s, d, sp, dp) = check6(&syn);
    assert_eq!((s, d, dp), (node, srv, 443));
    assert!((3000..=3001).contains(&sp));
    let mut sa = f6(srv, 443, node, sp, SYN | ACK);
    let (v, _) = run(&ct, &mut sa, nat_lookup(1), 1);
    assert_eq!(v.state, cs::TRK | cs::EST | cs::RPL | cs::DNAT);
    assert_eq!(check6(&sa), (srv, pod, 443, 40000));
    // An IPv4 range does not apply to an IPv6 connection: committed,
    // untranslated.
    let mut other = f6(pod, 40001, srv, 443, SYN);
    let (v, changed) = run(&ct, &mut other, snat(1, "src=192.0.2.1"), 0);
    assert_eq!((v.state, changed), (cs::TRK | cs::NEW, false));
}
