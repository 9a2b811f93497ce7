//! Tracker tests: real frames through extraction and [`Conntrack::execute`].
//! The frame builders and verdict helpers are shared with `token_tests`.

use super::tcp::flags::{ACK, FIN, RST, SYN};
use super::*;
use crate::packet::{extract, FrameBuilder};

pub(super) const A: [u8; 4] = [10, 0, 0, 1];
pub(super) const B: [u8; 4] = [10, 0, 0, 2];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub(super) fn tcp(from_a: bool, sport: u16, dport: u16, flags: u16) -> Vec<u8> {
    let (s, d) = if from_a { (A, B) } else { (B, A) };
    FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .tcp(sport, dport, flags)
        .build()
}

pub(super) fn udp(from_a: bool, sport: u16, dport: u16) -> Vec<u8> {
    let (s, d) = if from_a { (A, B) } else { (B, A) };
    FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .udp(sport, dport)
        .build()
}

pub(super) fn echo(from_a: bool, id: u16, reply: bool) -> Vec<u8> {
    let (s, d) = if from_a { (A, B) } else { (B, A) };
    let mut f = FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .icmp_echo(id, 1)
        .build();
    if reply {
        f[34] = 0; // echo reply type (RFC 792)
    }
    f
}

pub(super) const EST: u32 = cs::TRK | cs::EST;
pub(super) const NEW: u32 = cs::TRK | cs::NEW;
pub(super) const RPL: u32 = cs::TRK | cs::EST | cs::RPL;
pub(super) const INV: u32 = cs::TRK | cs::INV;

pub(super) fn run(ct: &Conntrack, frame: &[u8], x: CtExec, now: u64) -> CtVerdict {
    let mut k = FlowKey::ZERO;
    let lay = extract(frame, 1, &mut k);
    ct.execute(frame, &lay, &k, &x, now)
}

pub(super) fn commit(zone: u16) -> CtExec {
    CtExec {
        zone,
        commit: true,
        ..CtExec::default()
    }
}

pub(super) fn look(zone: u16) -> CtExec {
    CtExec {
        zone,
        ..CtExec::default()
    }
}

#[test]
fn uncommitted_packets_are_new_and_leave_nothing() {
    let ct = Conntrack::new(10);
    let syn = tcp(true, 1000, 80, SYN);
    assert_eq!(run(&ct, &syn, look(0), 0).state, NEW);
    assert_eq!(run(&ct, &syn, look(0), 0).state, NEW);
    assert!(ct.is_empty());
    // Without a committed connection, the SYN+ACK is invalid.
    assert_eq!(
        run(&ct, &tcp(false, 80, 1000, SYN | ACK), look(0), 0).state,
        INV
    );
}

#[test]
fn tcp_handshake_data_and_close_give_ovs_states() {
    let ct = Conntrack::new(10);
    assert_eq!(run(&ct, &tcp(true, 1000, 80, SYN), commit(1), 0).state, NEW);
    assert_eq!(ct.len(), 1);
    // Retransmitted SYN before any reply: still new.
    assert_eq!(run(&ct, &tcp(true, 1000, 80, SYN), look(1), 1).state, NEW);
    assert_eq!(
        run(&ct, &tcp(false, 80, 1000, SYN | ACK), look(1), 2).state,
        RPL
    );
    assert_eq!(run(&ct, &tcp(true, 1000, 80, ACK), look(1), 3).state, EST);
    assert_eq!(run(&ct, &tcp(false, 80, 1000, ACK), look(1), 4).state, RPL);
    let v = ct.dump(None, None);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].state, Some("ESTABLISHED"));
    assert_eq!(
        v[0].to_line(),
        "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1000,dport=80),\
         reply=(src=10.0.0.2,dst=10.0.0.1,sport=80,dport=1000),zone=1,\
         protoinfo=(state=ESTABLISHED)"
    );
    // Another zone does not see the connection.
    assert_eq!(run(&ct, &tcp(true, 1000, 80, ACK), look(2), 5).state, INV);
    // Close.
    run(&ct, &tcp(true, 1000, 80, FIN | ACK), look(1), 6);
    run(&ct, &tcp(false, 80, 1000, FIN | ACK), look(1), 7);
    assert_eq!(run(&ct, &tcp(true, 1000, 80, ACK), look(1), 8).state, EST);
    assert_eq!(ct.dump(None, None)[0].state, Some("TIME_WAIT"));
}

#[test]
fn invalid_tcp_segments_are_inv_and_change_nothing() {
    let ct = Conntrack::new(10);
    // ACK, SYN+FIN and RST without a connection.
    for f in [ACK, SYN | FIN, RST, FIN | ACK] {
        assert_eq!(run(&ct, &tcp(true, 1, 2, f), commit(0), 0).state, INV);
    }
    assert!(ct.is_empty());
    run(&ct, &tcp(true, 1000, 80, SYN), commit(0), 0);
    run(&ct, &tcp(false, 80, 1000, SYN | ACK), look(0), 0);
    run(&ct, &tcp(true, 1000, 80, ACK), look(0), 0);
    // SYN+FIN inside an established connection: invalid, state kept.
    assert_eq!(
        run(&ct, &tcp(true, 1000, 80, SYN | FIN), look(0), 1).state,
        INV
    );
    assert_eq!(ct.dump(None, None)[0].state, Some("ESTABLISHED"));
}

#[test]
fn rst_then_new_syn_reopens() {
    let ct = Conntrack::new(10);
    run(&ct, &tcp(true, 1000, 80, SYN), commit(0), 0);
    run(&ct, &tcp(false, 80, 1000, RST | ACK), look(0), 1);
    assert_eq!(ct.dump(None, None)[0].state, Some("CLOSE"));
    // A new SYN from the originator starts over (not yet replied: new).
    assert_eq!(run(&ct, &tcp(true, 1000, 80, SYN), commit(0), 2).state, NEW);
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.dump(None, None)[0].state, Some("SYN_SENT"));
}

#[test]
fn udp_and_icmp_echo_track_both_directions() {
    let ct = Conntrack::new(10);
    assert_eq!(run(&ct, &udp(true, 5000, 53), commit(0), 0).state, NEW);
    assert_eq!(run(&ct, &udp(true, 5000, 53), look(0), 0).state, NEW);
    assert_eq!(run(&ct, &udp(false, 53, 5000), look(0), 0).state, RPL);
    assert_eq!(run(&ct, &udp(true, 5000, 53), look(0), 0).state, EST);
    // A different source port is another connection.
    assert_eq!(run(&ct, &udp(false, 53, 5001), look(0), 0).state, NEW);

    assert_eq!(run(&ct, &echo(true, 7, false), commit(0), 0).state, NEW);
    assert_eq!(run(&ct, &echo(false, 7, true), look(0), 0).state, RPL);
    assert_eq!(run(&ct, &echo(true, 7, false), look(0), 0).state, EST);
    // A reply with another identifier, or with no request: invalid.
    assert_eq!(run(&ct, &echo(false, 8, true), look(0), 0).state, INV);
    // A request travelling in the reply direction is not a reply.
    assert_eq!(run(&ct, &echo(false, 7, false), look(0), 0).state, INV);
    let lines: Vec<String> = ct.dump(None, None).iter().map(|c| c.to_line()).collect();
    assert!(lines.contains(
        &"icmp,orig=(src=10.0.0.1,dst=10.0.0.2,id=7,type=8,code=0),\
          reply=(src=10.0.0.2,dst=10.0.0.1,id=7,type=0,code=0)"
            .to_string()
    ));
    assert!(lines.contains(
        &"udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=5000,dport=53),\
          reply=(src=10.0.0.2,dst=10.0.0.1,sport=53,dport=5000)"
            .to_string()
    ));
}

/// An ICMP error from `router` to the sender of `quoted` (an IPv4 frame).
fn icmp_error(to_a: bool, ty: u8, quoted: &[u8]) -> Vec<u8> {
    let router = [192, 168, 0, 1];
    let dst = if to_a { A } else { B };
    FrameBuilder::new()
        .eth(MAC_B, MAC_A)
        .ipv4(router, dst)
        .icmp(ty, 0)
        .payload(&quoted[14..14 + 28])
        .build()
}

/// An SCTP packet (RFC 9260 §3.1 common header: ports, verification tag,
/// checksum; then one DATA chunk header).
fn sctp(from_a: bool, sport: u16, dport: u16) -> Vec<u8> {
    let (s, d) = if from_a { (A, B) } else { (B, A) };
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    l4.extend_from_slice(&[0, 3, 0, 16, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 46]);
    FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(s, d)
        .ip_proto(ipproto::SCTP)
        .payload(&l4)
        .build()
}

#[test]
fn sctp_associations_are_told_apart_by_port() {
    let ct = Conntrack::new(10);
    assert_eq!(run(&ct, &sctp(true, 5000, 9), commit(1), 0).state, NEW);
    assert_eq!(run(&ct, &sctp(false, 9, 5000), look(1), 0).state, RPL);
    assert_eq!(run(&ct, &sctp(true, 5000, 9), look(1), 0).state, EST);
    // Another destination port between the same two hosts: a new association.
    assert_eq!(run(&ct, &sctp(true, 5000, 10), look(1), 0).state, NEW);
    assert_eq!(run(&ct, &sctp(true, 5001, 9), look(1), 0).state, NEW);
    assert_eq!(ct.len(), 1);
}

#[test]
fn icmp_errors_about_tracked_connections_are_related() {
    let ct = Conntrack::new(10);
    run(&ct, &udp(true, 5000, 53), commit(0), 0);
    // Port unreachable back to A about A's datagram: related, reply direction.
    let e = icmp_error(true, 3, &udp(true, 5000, 53));
    assert_eq!(run(&ct, &e, look(0), 1).state, cs::TRK | cs::REL | cs::RPL);
    // Time exceeded back to B about B's reply: related, original direction.
    let e = icmp_error(false, 11, &udp(false, 53, 5000));
    assert_eq!(run(&ct, &e, look(0), 1).state, cs::TRK | cs::REL);
    // About an unknown connection: invalid.
    let e = icmp_error(true, 3, &udp(true, 5001, 53));
    assert_eq!(run(&ct, &e, look(0), 1).state, INV);
    // Other ICMP messages (timestamp): invalid.
    let ts = FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(A, B)
        .icmp(13, 0)
        .payload(&[0; 12])
        .build();
    assert_eq!(run(&ct, &ts, look(0), 1).state, INV);
}

#[test]
fn non_ip_and_fragments_are_invalid() {
    let ct = Conntrack::new(10);
    let arp = FrameBuilder::new().arp_request(MAC_A, A, B).build();
    assert_eq!(run(&ct, &arp, commit(0), 0).state, INV);
    let frag = FrameBuilder::new()
        .eth(MAC_A, MAC_B)
        .ipv4(A, B)
        .frag(0, true)
        .udp(1, 2)
        .build();
    assert_eq!(run(&ct, &frag, commit(0), 0).state, INV);
    let mut short = udp(true, 1, 2);
    short.truncate(14 + 20 + 4);
    assert_eq!(run(&ct, &short, commit(0), 0).state, INV);
    assert!(ct.is_empty());
}

#[test]
fn commit_sets_mark_and_label_seen_by_both_directions() {
    let ct = Conntrack::new(10);
    let x = CtExec {
        zone: 3,
        commit: true,
        mark: (0x12, 0xff),
        label: (0xabcd << 64, u128::MAX),
        nat: None,
    };
    let v = run(&ct, &udp(true, 1, 2), x, 0);
    assert_eq!((v.state, v.mark, v.label), (NEW, 0x12, 0xabcd << 64));
    let v = run(&ct, &udp(false, 2, 1), look(3), 0);
    assert_eq!((v.state, v.mark, v.label), (RPL, 0x12, 0xabcd << 64));
    // A later commit changes only the masked bits.
    let x2 = CtExec {
        mark: (0x300, 0xf00),
        ..x
    };
    let v = run(&ct, &udp(true, 1, 2), x2, 0);
    assert_eq!(v.mark, 0x312);
    assert_eq!(ct.dump(Some(3), None)[0].mark, 0x312);
}

#[test]
fn limit_refuses_commits_as_ct_full() {
    let ct = Conntrack::new(2);
    assert!(!run(&ct, &udp(true, 1, 2), commit(0), 0).full);
    assert!(!run(&ct, &udp(true, 3, 2), commit(0), 0).full);
    let v = run(&ct, &udp(true, 4, 2), commit(0), 0);
    assert!(v.full);
    assert_eq!(ct.len(), 2);
    assert_eq!(ct.stats().ct_full, 1);
    // Existing connections still work; a look-up without commit is fine.
    assert_eq!(run(&ct, &udp(false, 2, 1), look(0), 0).state, RPL);
    assert!(!run(&ct, &udp(true, 4, 2), look(0), 0).full);
    ct.set_limit(3);
    assert!(!run(&ct, &udp(true, 4, 2), commit(0), 0).full);
}

#[test]
fn connections_expire_by_protocol_timeout_and_are_swept() {
    let ct = Conntrack::new(10);
    run(&ct, &udp(true, 1, 2), commit(0), 0);
    run(&ct, &tcp(true, 1000, 80, SYN), commit(0), 0);
    // UDP unreplied: 30 s; TCP SYN_SENT: 120 s.
    assert_eq!(run(&ct, &udp(false, 2, 1), look(0), 29_999).state, RPL);
    // The reply made it a stream (120 s from the last packet).
    assert_eq!(run(&ct, &udp(true, 1, 2), look(0), 149_000).state, EST);
    assert_eq!(ct.sweep(119_999), 0);
    assert_eq!(ct.sweep(149_500), 1, "the TCP SYN_SENT connection expired");
    assert_eq!(ct.len(), 1);
    // An expired connection is absent at once, before any sweep.
    assert_eq!(run(&ct, &udp(false, 2, 1), look(0), 269_001).state, NEW);
    // (the look-up removed it already)
    assert!(ct.is_empty());
    assert_eq!(ct.sweep(269_001), 0);
    assert_eq!(ct.stats().expired, 2);
}

#[test]
fn timeouts_are_configurable_by_name() {
    let ct = Conntrack::new(10);
    ct.timeouts.set("udp_first", 5).unwrap();
    assert!(ct.timeouts.set("udp_frist", 5).is_err());
    assert!(ct.timeouts.set("icmp", 0).is_err());
    run(&ct, &udp(true, 1, 2), commit(0), 0);
    assert_eq!(ct.sweep(4_999), 0);
    assert_eq!(ct.sweep(5_000), 1);
}

#[test]
fn flush_by_zone_and_dump_by_address() {
    let ct = Conntrack::new(10);
    run(&ct, &udp(true, 1, 2), commit(1), 0);
    run(&ct, &udp(true, 3, 4), commit(2), 0);
    let b: IpAddr = IpAddr::from(B);
    let other: IpAddr = "10.9.9.9".parse().unwrap();
    assert_eq!(ct.dump(None, Some(b)).len(), 2);
    assert_eq!(ct.dump(None, Some(other)).len(), 0);
    assert_eq!(ct.dump(Some(2), None).len(), 1);
    assert_eq!(ct.flush(Some(1)), 1);
    assert_eq!(ct.dump(None, None)[0].zone, 2);
    assert_eq!(ct.flush(None), 1);
    assert!(ct.is_empty());
}

#[test]
fn garbage_frames_never_panic() {
    let ct = Conntrack::new(4);
    let base = tcp(true, 1, 2, SYN);
    for cut in 0..base.len() {
        let _ = run(&ct, &base[..cut], commit(0), 0);
    }
    let mut e = icmp_error(true, 3, &udp(true, 1, 2));
    for i in 34..e.len() {
        e[i] ^= 0xa5;
        let _ = run(&ct, &e, commit(0), 0);
    }
}

#[test]
fn canonical_key_hashes_spread_over_shards_and_buckets() {
    // The hash's top byte picks the shard, its low bits the bucket: 64k
    // connections that differ only in the client's port, then only in the
    // client's address (v4 and v6), must all hash apart, in both
    // directions alike, and fill shards and buckets evenly.
    let cases: [&dyn Fn(u32) -> Tuple; 3] = [
        &|i| Tuple {
            v6: false,
            src: 0x0af4_0005,
            dst: 0x0af4_0006,
            sport: i as u16,
            dport: 80,
            proto: ipproto::TCP,
        },
        &|i| Tuple {
            v6: false,
            src: 0x0a00_0000 + u128::from(i),
            dst: 0x0a60_0001,
            sport: 40000,
            dport: 53,
            proto: ipproto::UDP,
        },
        &|i| Tuple {
            v6: true,
            src: 0xfd00_0000_0000_0000_0000_0000_0000_0000 + u128::from(i),
            dst: 0xfd00_0000_0000_0000_0000_0000_0000_0001 << 64,
            sport: 40000,
            dport: 443,
            proto: ipproto::TCP,
        },
    ];
    for (n, case) in cases.iter().enumerate() {
        let mut shards = [0u32; N_SHARDS];
        let mut buckets = vec![0u32; 4096];
        let mut seen = std::collections::HashSet::new();
        for i in 0..65536u32 {
            let t = case(i);
            let h = t.canon(1).0.hash();
            assert_eq!(h, t.mirror().canon(1).0.hash(), "case {n}: both directions");
            assert_ne!(h, t.canon(2).0.hash(), "case {n}: zones apart");
            seen.insert(h);
            shards[(h >> 56) as usize & (N_SHARDS - 1)] += 1;
            buckets[h as usize & 4095] += 1;
        }
        assert_eq!(seen.len(), 65536, "case {n}: no two hashes equal");
        // 256 per shard and 16 per bucket on average.
        assert!(
            shards.iter().all(|c| (128..=384).contains(c)),
            "case {n}: {shards:?}"
        );
        let (lo, hi) = (buckets.iter().min(), buckets.iter().max());
        assert!(lo >= Some(&1) && hi <= Some(&48), "case {n}: {lo:?}-{hi:?}");
    }
}
