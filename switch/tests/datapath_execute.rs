//! Action execution: every set action rewrites exactly its fields, and every
//! checksum stays valid (checked with etherparse's full recomputation).

use etherparse::{EtherType, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanId};
use proptest::prelude::*;
use switch::datapath::{apply, DpAction, ExecCtx, ExecError, TunnelMeta};
use switch::flow::key::{ethertype, ipproto, FRAG_ANY, FRAG_LATER};
use switch::flow::FlowKey;
use switch::packet::extract::NO_OFFSET;
use switch::packet::{extract, Layout, Packet, ParseStatus};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn udp4(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 2000);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn tcp4(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1000, 80, 12345, 4096)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn ipv6_src() -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = 1;
    a
}

fn ipv6_dst() -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = 2;
    a
}

/// Run actions on `frame` with the context extraction gives.
fn run(frame: &[u8], actions: &[DpAction]) -> Result<(Vec<u8>, ExecCtx), ExecError> {
    let mut key = FlowKey::ZERO;
    let lay = extract(frame, 1, &mut key);
    run_ctx(frame, ExecCtx::new(&key, lay), actions)
}

fn run_ctx(
    frame: &[u8],
    mut ctx: ExecCtx,
    actions: &[DpAction],
) -> Result<(Vec<u8>, ExecCtx), ExecError> {
    let mut p = Packet::from_slice(frame).unwrap();
    for a in actions {
        apply(&mut p, &mut ctx, a)?;
    }
    Ok((p.data().to_vec(), ctx))
}

fn ctx(dl_type: u16, nw_proto: u8, l3: u16, l4: u16) -> ExecCtx {
    ExecCtx {
        layout: Layout {
            l3,
            l4,
            status: ParseStatus::Ok,
        },
        dl_type,
        nw_proto,
        nw_frag: 0,
        tunnel: None,
        nexthop: 0,
    }
}

/// Equal as one's-complement numbers (0x0000 and 0xffff are both zero).
fn csum_eq(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// Parse with etherparse and check every checksum against a full recomputation.
fn verify(frame: &[u8]) -> PacketHeaders<'_> {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let payload = h.payload.slice();
    match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), t) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            match t {
                Some(TransportHeader::Tcp(tcp)) => {
                    let c = tcp.calc_checksum_ipv4(ip, payload).unwrap();
                    assert!(
                        csum_eq(tcp.checksum, c),
                        "TCP {:04x} vs {c:04x}",
                        tcp.checksum
                    );
                }
                Some(TransportHeader::Udp(udp)) if udp.checksum != 0 => {
                    let c = udp.calc_checksum_ipv4(ip, payload).unwrap();
                    assert!(
                        csum_eq(udp.checksum, c),
                        "UDP {:04x} vs {c:04x}",
                        udp.checksum
                    );
                }
                Some(TransportHeader::Icmpv4(icmp)) => {
                    assert_eq!(icmp.checksum, icmp.icmp_type.calc_checksum(payload));
                }
                _ => {}
            }
        }
        (Some(NetHeaders::Ipv6(ip, _)), t) => match t {
            Some(TransportHeader::Tcp(tcp)) => {
                let c = tcp.calc_checksum_ipv6(ip, payload).unwrap();
                assert!(
                    csum_eq(tcp.checksum, c),
                    "TCPv6 {:04x} vs {c:04x}",
                    tcp.checksum
                );
            }
            Some(TransportHeader::Udp(udp)) if udp.checksum != 0 => {
                let c = udp.calc_checksum_ipv6(ip, payload).unwrap();
                assert!(csum_eq(udp.checksum, c), "UDPv6");
            }
            Some(TransportHeader::Icmpv6(icmp)) => {
                let c = icmp
                    .icmp_type
                    .calc_checksum(ip.source, ip.destination, payload)
                    .unwrap();
                assert_eq!(icmp.checksum, c, "ICMPv6");
            }
            _ => {}
        },
        _ => {}
    }
    h
}

fn ipv4_of<'a>(h: &'a PacketHeaders<'_>) -> &'a etherparse::Ipv4Header {
    match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => ip,
        other => panic!("not IPv4: {other:?}"),
    }
}

#[test]
fn set_eth_rewrites_addresses_only() {
    let f = udp4(b"hello");
    let (out, _) = run(
        &f,
        &[DpAction::SetEth {
            src: Some([0xaa; 6]),
            dst: Some([0xbb; 6]),
        }],
    )
    .unwrap();
    assert_eq!(&out[0..6], &[0xbb; 6]);
    assert_eq!(&out[6..12], &[0xaa; 6]);
    assert_eq!(&out[12..], &f[12..]);
    verify(&out);
}

#[test]
fn set_ipv4_addresses_ttl_tos_keep_checksums_valid() {
    for f in [udp4(b"payload bytes"), tcp4(b"GET / HTTP/1.0\r\n")] {
        let (out, _) = run(
            &f,
            &[DpAction::SetIpv4 {
                src: Some(0xc0a8_0101),
                dst: Some(0x0a01_0203),
                tos: Some(0xb8),
                ttl: Some(17),
            }],
        )
        .unwrap();
        let h = verify(&out);
        let ip = ipv4_of(&h);
        assert_eq!(ip.source, [192, 168, 1, 1]);
        assert_eq!(ip.destination, [10, 1, 2, 3]);
        assert_eq!(ip.time_to_live, 17);
        assert_eq!(out[15], 0xb8, "TOS byte");
        assert_eq!(out.len(), f.len());
    }
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let mut f = udp4(b"no checksum");
    // UDP checksum at 14 + 20 + 6.
    f[40] = 0;
    f[41] = 0;
    let (out, _) = run(
        &f,
        &[
            DpAction::SetIpv4 {
                src: Some(0x0102_0304),
                dst: None,
                tos: None,
                ttl: None,
            },
            DpAction::SetUdp {
                src: Some(7),
                dst: Some(9),
            },
        ],
    )
    .unwrap();
    assert_eq!(&out[40..42], &[0, 0]);
    let h = verify(&out);
    match h.transport {
        Some(TransportHeader::Udp(u)) => {
            assert_eq!((u.source_port, u.destination_port), (7, 9));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn set_tcp_and_udp_ports() {
    let (out, _) = run(
        &tcp4(b"abc"),
        &[DpAction::SetTcp {
            src: Some(4321),
            dst: Some(8080),
        }],
    )
    .unwrap();
    match verify(&out).transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!((t.source_port, t.destination_port), (4321, 8080));
        }
        other => panic!("{other:?}"),
    }
    let (out, _) = run(
        &udp4(b"abc"),
        &[DpAction::SetUdp {
            src: None,
            dst: Some(53),
        }],
    )
    .unwrap();
    match verify(&out).transport {
        Some(TransportHeader::Udp(u)) => {
            assert_eq!((u.source_port, u.destination_port), (1000, 53));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn set_tcp_on_udp_packet_fails_without_writing() {
    let f = udp4(b"x");
    let r = run(
        &f,
        &[DpAction::SetTcp {
            src: Some(1),
            dst: None,
        }],
    );
    assert_eq!(r.unwrap_err(), ExecError::NoHeader);
}

#[test]
fn set_icmp_type_code() {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(7, 1);
    let mut f = Vec::new();
    b.write(&mut f, b"ping data").unwrap();
    // The skeleton extractor may not locate ICMP: give the layout explicitly.
    let c = ctx(ethertype::IPV4, ipproto::ICMP, 14, 34);
    let (out, _) = run_ctx(
        &f,
        c,
        &[DpAction::SetIcmp {
            icmp_type: Some(0),
            code: Some(0),
        }],
    )
    .unwrap();
    assert_eq!(out[34], 0, "echo reply");
    verify(&out);
    let (out, _) = run_ctx(
        &f,
        c,
        &[DpAction::SetIcmp {
            icmp_type: Some(3),
            code: Some(1),
        }],
    )
    .unwrap();
    assert_eq!((out[34], out[35]), (3, 1));
    // Valid ICMP checksum over the whole message (RFC 792).
    assert_eq!(switch::packet::checksum::checksum(&out[34..]), 0);
}

#[test]
fn set_ipv6_updates_l4_checksums() {
    for proto in [ipproto::TCP, ipproto::UDP, ipproto::ICMPV6] {
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(ipv6_src(), ipv6_dst(), 64);
        let mut f = Vec::new();
        match proto {
            ipproto::TCP => b.tcp(1, 2, 3, 4).write(&mut f, b"tcp6 data").unwrap(),
            ipproto::UDP => b.udp(1, 2).write(&mut f, b"udp6 data").unwrap(),
            _ => b.icmpv6_echo_request(1, 2).write(&mut f, b"ping6").unwrap(),
        }
        verify(&f);
        let mut new_src = [0x20u8; 16];
        new_src[15] = 9;
        let mut new_dst = [0x30u8; 16];
        new_dst[0] = 0xfe;
        let (out, _) = run_ctx(
            &f,
            ctx(ethertype::IPV6, proto, 14, 54),
            &[DpAction::SetIpv6 {
                src: Some(new_src),
                dst: Some(new_dst),
                tclass: Some(0x2e),
                hlimit: Some(3),
                label: Some(0xabcde),
            }],
        )
        .unwrap();
        let h = verify(&out);
        match &h.net {
            Some(NetHeaders::Ipv6(ip, _)) => {
                assert_eq!(ip.source, new_src);
                assert_eq!(ip.destination, new_dst);
                assert_eq!(ip.traffic_class, 0x2e);
                assert_eq!(ip.hop_limit, 3);
                assert_eq!(ip.flow_label.value(), 0xabcde);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn set_arp_fields() {
    // Ethernet + ARP request, RFC 826.
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 2]);
    let (out, _) = run_ctx(
        &f,
        ctx(ethertype::ARP, 1, 14, NO_OFFSET),
        &[DpAction::SetArp {
            op: Some(2),
            spa: Some(0x0a00_0002),
            tpa: Some(0x0a00_0001),
            sha: Some(DST_MAC),
            tha: Some(SRC_MAC),
        }],
    )
    .unwrap();
    let h = PacketHeaders::from_ethernet_slice(&out).unwrap();
    match h.net {
        Some(NetHeaders::Arp(a)) => {
            assert_eq!(a.operation.0, 2);
            assert_eq!(a.sender_hw_addr(), &DST_MAC);
            assert_eq!(a.sender_protocol_addr(), &[10, 0, 0, 2]);
            assert_eq!(a.target_hw_addr(), &SRC_MAC);
            assert_eq!(a.target_protocol_addr(), &[10, 0, 0, 1]);
        }
        other => panic!("{other:?}"),
    }
    // A truncated ARP frame is an error, not a panic.
    let r = run_ctx(
        &f[..30],
        ctx(ethertype::ARP, 1, 14, NO_OFFSET),
        &[DpAction::SetArp {
            op: Some(2),
            spa: None,
            tpa: None,
            sha: None,
            tha: None,
        }],
    );
    assert_eq!(r.unwrap_err(), ExecError::TooShort);
}

#[test]
fn push_set_pop_vlan_round_trip() {
    let f = udp4(b"vlan me");
    let (tagged, c) = run(
        &f,
        &[DpAction::PushVlan {
            tpid: ethertype::VLAN,
            tci: (5 << 13) | 100,
        }],
    )
    .unwrap();
    assert_eq!(tagged.len(), f.len() + 4);
    assert_eq!(c.layout.l3, 18);
    assert_eq!(c.layout.l4, 38);
    let h = verify(&tagged);
    assert_eq!(h.link_exts.len(), 1);
    match &h.link_exts[0] {
        etherparse::LinkExtHeader::Vlan(v) => {
            assert_eq!(v.vlan_id, VlanId::try_new(100).unwrap());
            assert_eq!(v.pcp.value(), 5);
            assert_eq!(v.ether_type, EtherType::IPV4);
        }
        other => panic!("{other:?}"),
    }
    // Set the tag, then rewrite the IP header at the shifted offset, then pop.
    let (out, c2) = run_ctx(
        &tagged,
        c,
        &[
            DpAction::SetVlan { tci: 7 },
            DpAction::SetIpv4 {
                src: None,
                dst: None,
                tos: None,
                ttl: Some(9),
            },
        ],
    )
    .unwrap();
    assert_eq!(&out[14..16], &[0, 7]);
    assert_eq!(ipv4_of(&verify(&out)).time_to_live, 9);
    let (popped, c3) = run_ctx(&out, c2, &[DpAction::PopVlan]).unwrap();
    assert_eq!(c3.layout.l3, 14);
    assert_eq!(popped.len(), f.len());
    assert_eq!(&popped[..22], &f[..22]);
    let h = verify(&popped);
    assert!(h.link_exts.is_empty());
    assert_eq!(ipv4_of(&h).time_to_live, 9);
    // Popping an untagged frame fails cleanly.
    let r = run(&f, &[DpAction::PopVlan]);
    assert_eq!(r.unwrap_err(), ExecError::NoHeader);
}

#[test]
fn push_vlan_without_headroom_fails() {
    let f = udp4(b"x");
    let mut p = Packet::from_slice(&f).unwrap();
    let room = p.headroom();
    assert!(p.push_head(room).is_some());
    let mut key = FlowKey::ZERO;
    let lay = extract(p.data(), 1, &mut key);
    let mut c = ExecCtx::new(&key, lay);
    let r = apply(
        &mut p,
        &mut c,
        &DpAction::PushVlan {
            tpid: ethertype::VLAN,
            tci: 1,
        },
    );
    assert_eq!(r.unwrap_err(), ExecError::NoHeadroom);
}

#[test]
fn set_tunnel_records_metadata_only() {
    let f = udp4(b"t");
    let (out, c) = run(
        &f,
        &[DpAction::SetTunnel {
            tun_id: 42,
            src: 0,
            dst: 0x0a00_00fe,
        }],
    )
    .unwrap();
    assert_eq!(out, f);
    assert_eq!(
        c.tunnel,
        Some(TunnelMeta {
            tun_id: 42,
            src: 0,
            dst: 0x0a00_00fe
        })
    );
}

#[test]
fn non_first_fragment_l4_untouched() {
    let mut f = udp4(b"fragment payload bytes");
    // Fragment offset 8 (units of 8 bytes), recompute the IP checksum.
    f[20] = 0;
    f[21] = 8;
    f[24] = 0;
    f[25] = 0;
    let c = switch::packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let mut key = FlowKey::ZERO;
    let lay = extract(&f, 1, &mut key);
    key.nw_frag = FRAG_ANY | FRAG_LATER;
    let (out, _) = run_ctx(
        &f,
        ExecCtx::new(&key, lay),
        &[DpAction::SetIpv4 {
            src: Some(0x0b00_0001),
            dst: None,
            tos: None,
            ttl: None,
        }],
    )
    .unwrap();
    assert_eq!(&out[34..], &f[34..], "no L4 header in a later fragment");
    assert_eq!(switch::packet::checksum::checksum(&out[14..34]), 0);
    // Setting ports on a later fragment is an error.
    let r = run_ctx(
        &f,
        ExecCtx::new(&key, lay),
        &[DpAction::SetUdp {
            src: Some(1),
            dst: None,
        }],
    );
    assert_eq!(r.unwrap_err(), ExecError::NoHeader);
}

#[test]
fn short_frames_never_panic() {
    let f = tcp4(b"data");
    let actions = [
        DpAction::SetEth {
            src: Some([1; 6]),
            dst: None,
        },
        DpAction::SetIpv4 {
            src: Some(1),
            dst: Some(2),
            tos: Some(3),
            ttl: Some(4),
        },
        DpAction::SetTcp {
            src: Some(5),
            dst: Some(6),
        },
        DpAction::SetIcmp {
            icmp_type: Some(1),
            code: Some(1),
        },
        DpAction::PushVlan {
            tpid: 0x8100,
            tci: 3,
        },
        DpAction::SetVlan { tci: 4 },
        DpAction::PopVlan,
    ];
    // The context claims full headers, the frame is cut anywhere.
    let c = ctx(ethertype::IPV4, ipproto::TCP, 14, 34);
    for cut in 0..f.len() {
        for a in &actions {
            let _ = run_ctx(&f[..cut], c, std::slice::from_ref(a));
        }
    }
}

fn arb_set_action(tcp: bool) -> impl Strategy<Value = DpAction> {
    let ip = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(|(src, dst, tos, ttl)| DpAction::SetIpv4 { src, dst, tos, ttl });
    let ports = (
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(move |(src, dst)| {
            if tcp {
                DpAction::SetTcp { src, dst }
            } else {
                DpAction::SetUdp { src, dst }
            }
        });
    let eth = (
        proptest::option::of(any::<[u8; 6]>()),
        proptest::option::of(any::<[u8; 6]>()),
    )
        .prop_map(|(src, dst)| DpAction::SetEth { src, dst });
    let vlan = (any::<u16>()).prop_map(|t| DpAction::PushVlan {
        tpid: ethertype::VLAN,
        tci: t & 0xefff,
    });
    prop_oneof![4 => ip, 4 => ports, 1 => eth, 1 => vlan]
}

proptest! {
    #[test]
    fn random_rewrites_keep_checksums_valid(
        tcp in any::<bool>(),
        src in any::<[u8; 4]>(),
        dst in any::<[u8; 4]>(),
        ttl in any::<u8>(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        actions in proptest::collection::vec(arb_set_action(true), 1..6),
        uactions in proptest::collection::vec(arb_set_action(false), 1..6),
    ) {
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, ttl);
        let mut f = Vec::new();
        if tcp {
            b.tcp(sport, dport, 1, 1000).write(&mut f, &payload).unwrap();
        } else {
            b.udp(sport, dport).write(&mut f, &payload).unwrap();
        }
        // etherparse, the checker, parses at most two VLAN tags: keep at most
        // two pushes so the frame stays within what it can verify.
        let mut pushes = 0;
        let acts: Vec<DpAction> = if tcp { &actions } else { &uactions }
            .iter()
            .filter(|a| !matches!(a, DpAction::PushVlan { .. }) || { pushes += 1; pushes <= 2 })
            .cloned()
            .collect();
        let acts = &acts;
        let (out, c) = run(&f, acts).unwrap();
        let h = verify(&out);
        // Fields: the last write of each field wins.
        let ip = ipv4_of(&h);
        let mut want_src = src;
        let mut want_dst = dst;
        let mut want_ttl = ttl;
        let mut want_ports = (sport, dport);
        for a in acts {
            match a {
                DpAction::SetIpv4 { src, dst, ttl, .. } => {
                    if let Some(s) = src { want_src = s.to_be_bytes(); }
                    if let Some(d) = dst { want_dst = d.to_be_bytes(); }
                    if let Some(t) = ttl { want_ttl = *t; }
                }
                DpAction::SetTcp { src, dst } | DpAction::SetUdp { src, dst } => {
                    if let Some(s) = src { want_ports.0 = *s; }
                    if let Some(d) = dst { want_ports.1 = *d; }
                }
                _ => {}
            }
        }
        prop_assert_eq!(ip.source, want_src);
        prop_assert_eq!(ip.destination, want_dst);
        prop_assert_eq!(ip.time_to_live, want_ttl);
        let got_ports = match h.transport {
            Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
            Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
            ref other => panic!("{other:?}"),
        };
        prop_assert_eq!(got_ports, want_ports);
        prop_assert_eq!(usize::from(c.layout.l3), out.len() - f.len() + 14);
    }
}

// ---------------------------------------------------------------------------
// With the real extractor's layout: VLAN tags, IPv4 options, ICMP, ARP, IPv6.
// ---------------------------------------------------------------------------

use switch::packet::builder::FrameBuilder;

#[test]
fn extracted_layouts_drive_rewrites() {
    // ICMP echo: extract locates the ICMP header.
    let f = FrameBuilder::new()
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .icmp_echo(1, 2)
        .payload(b"abcdefgh")
        .build();
    let (out, _) = run(
        &f,
        &[
            DpAction::SetIcmp {
                icmp_type: Some(0),
                code: None,
            },
            DpAction::SetIpv4 {
                src: Some(0x0a00_0002),
                dst: Some(0x0a00_0001),
                tos: None,
                ttl: Some(63),
            },
        ],
    )
    .unwrap();
    let h = verify(&out);
    assert_eq!(ipv4_of(&h).source, [10, 0, 0, 2]);
    assert_eq!(out[34], 0);

    // ARP reply rewrite via extract's l3.
    let f = FrameBuilder::new()
        .arp_request(SRC_MAC, [10, 0, 0, 1], [10, 0, 0, 2])
        .build();
    let (out, _) = run(
        &f,
        &[DpAction::SetArp {
            op: Some(2),
            spa: Some(0x0a00_0002),
            tpa: Some(0x0a00_0001),
            sha: Some(DST_MAC),
            tha: Some(SRC_MAC),
        }],
    )
    .unwrap();
    let mut key = FlowKey::ZERO;
    extract(&out, 1, &mut key);
    assert_eq!(
        (key.nw_proto, key.nw_src, key.nw_dst),
        (2, 0x0a00_0002, 0x0a00_0001)
    );
    assert_eq!((key.arp_sha, key.arp_tha), (DST_MAC, SRC_MAC));

    // IPv6 TCP via extract.
    let f = FrameBuilder::new()
        .ipv6(ipv6_src(), ipv6_dst())
        .tcp(1, 2, 0x02)
        .payload(b"six")
        .build();
    let (out, _) = run(
        &f,
        &[
            DpAction::SetIpv6 {
                src: None,
                dst: Some([0x11; 16]),
                tclass: None,
                hlimit: Some(1),
                label: None,
            },
            DpAction::SetTcp {
                src: Some(99),
                dst: None,
            },
        ],
    )
    .unwrap();
    verify(&out);
    extract(&out, 1, &mut key);
    assert_eq!((key.ipv6_dst, key.nw_ttl, key.tp_src), ([0x11; 16], 1, 99));
}

fn arb_action_any() -> impl Strategy<Value = DpAction> {
    prop_oneof![
        4 => arb_set_action(true),
        4 => arb_set_action(false),
        1 => Just(DpAction::PopVlan),
        1 => any::<u16>().prop_map(|t| DpAction::SetVlan { tci: t & 0xefff }),
    ]
}

proptest! {
    /// Random frames (tagged or not, with or without IPv4 options, TCP or
    /// UDP) through random action lists: every action either applies or is
    /// refused cleanly, the result always re-extracts to the expected key, and
    /// every checksum verifies.
    #[test]
    fn random_frames_random_actions_stay_consistent(
        vlan in proptest::option::of((0u16..4095, 0u8..8)),
        opts in 0usize..3,
        tcp in any::<bool>(),
        src in any::<[u8; 4]>(),
        dst in any::<[u8; 4]>(),
        ttl in 1u8..=255,
        ports in any::<(u16, u16)>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        actions in proptest::collection::vec(arb_action_any(), 1..8),
    ) {
        let mut b = FrameBuilder::new();
        if let Some((vid, pcp)) = vlan {
            b = b.vlan(vid, pcp);
        }
        b = b.ipv4(src, dst).ttl(ttl).ipv4_options(&vec![1u8; opts * 4]);
        b = if tcp { b.tcp(ports.0, ports.1, 0x10) } else { b.udp(ports.0, ports.1) };
        let f = b.payload(&payload).build();
        let mut key = FlowKey::ZERO;
        let lay = extract(&f, 1, &mut key);
        prop_assert_eq!(lay.status, ParseStatus::Ok);
        let mut p = Packet::from_slice(&f).unwrap();
        let mut c = ExecCtx::new(&key, lay);
        let mut want = key;
        // Extraction parses at most two tags (as OVS's FLOW_MAX_VLAN_HEADERS):
        // keep frames within what it can check.
        let mut tags = usize::from(vlan.is_some());
        for a in &actions {
            if matches!(a, DpAction::PushVlan { .. }) {
                if tags == 2 {
                    continue;
                }
                tags += 1;
            }
            let before = p.data().to_vec();
            match apply(&mut p, &mut c, a) {
                Ok(()) => match a {
                    DpAction::SetIpv4 { src, dst, tos, ttl } => {
                        if let Some(v) = src { want.nw_src = *v; }
                        if let Some(v) = dst { want.nw_dst = *v; }
                        if let Some(v) = tos { want.nw_tos = *v; }
                        if let Some(v) = ttl { want.nw_ttl = *v; }
                    }
                    DpAction::SetTcp { src, dst } | DpAction::SetUdp { src, dst } => {
                        if let Some(v) = src { want.tp_src = *v; }
                        if let Some(v) = dst { want.tp_dst = *v; }
                    }
                    DpAction::SetEth { src, dst } => {
                        if let Some(v) = src { want.dl_src = *v; }
                        if let Some(v) = dst { want.dl_dst = *v; }
                    }
                    DpAction::PushVlan { tci, .. } | DpAction::SetVlan { tci } => {
                        want.vlan_tci = (tci & !0x1000) | 0x1000;
                    }
                    DpAction::PopVlan => {
                        tags -= 1;
                        // Extraction reports the outer tag only; after a pop
                        // the next tag (if any) becomes the outer one.
                        let mut k2 = FlowKey::ZERO;
                        extract(p.data(), 1, &mut k2);
                        want.vlan_tci = k2.vlan_tci;
                    }
                    _ => {}
                },
                Err(_) => prop_assert_eq!(p.data(), &before[..], "a refused action writes nothing"),
            }
        }
        let mut got = FlowKey::ZERO;
        let lay2 = extract(p.data(), 1, &mut got);
        prop_assert_eq!(lay2.status, ParseStatus::Ok);
        prop_assert_eq!(lay2.l3, c.layout.l3, "layout offsets follow VLAN push/pop");
        prop_assert_eq!(lay2.l4, c.layout.l4);
        // Compare the fields the actions may write (tcp_flags etc. untouched).
        prop_assert_eq!(got, want);
        verify(p.data());
    }
}
