//! `compose`: a frame from a `FlowKey`, like `ovs-ofctl compose-packet`.
//!
//! The operator describes a packet in ofproto/trace syntax
//! (`flow::trace_spec::parse_packet`) and gets real bytes whose extraction
//! gives back the same key (for the fields a frame can carry), so the demo,
//! `flowctl inject` and tests can say "an ICMP echo from pod A to pod B"
//! instead of writing hex. Control path only: it allocates.

use super::builder::FrameBuilder;
use crate::flow::key::{
    ethertype, ipproto, nd, FlowKey, FRAG_ANY, FRAG_LATER, VLAN_CFI, VLAN_PCP_SHIFT, VLAN_VID_MASK,
};

/// Build a frame carrying `key`'s header fields, with `payload` after the
/// L4 header (or after L3 when there is none). Fields a frame cannot carry
/// (in_port, metadata, registers, tunnel and conntrack fields) are ignored.
/// An ICMPv6 NS/NA (type 135/136, code 0) carries `nd_reserved`,
/// `nd_target` and, when non-zero, an 8-byte source (`nd_sll`) or target
/// (`nd_tll`) link-layer address option (RFC 4861 §4.6.1), with
/// `payload` after them.
pub fn compose(key: &FlowKey, payload: &[u8]) -> Vec<u8> {
    let is_nd = key.dl_type == ethertype::IPV6
        && key.nw_proto == ipproto::ICMPV6
        && key.nw_frag & FRAG_LATER == 0
        && key.tp_dst == 0
        && (key.tp_src == u16::from(nd::NEIGHBOR_SOLICIT)
            || key.tp_src == u16::from(nd::NEIGHBOR_ADVERT));
    let mut body = Vec::new();
    if is_nd {
        body.extend_from_slice(&key.nd_target);
        for (ty, mac) in [
            (nd::OPT_SOURCE_LINKADDR, key.arp_sha),
            (nd::OPT_TARGET_LINKADDR, key.arp_tha),
        ] {
            if mac != [0; 6] {
                body.extend_from_slice(&[ty, 1]);
                body.extend_from_slice(&mac);
            }
        }
    }
    body.extend_from_slice(payload);
    let mut b = FrameBuilder::new().eth(key.dl_src, key.dl_dst);
    if key.vlan_tci & VLAN_CFI != 0 {
        b = b.vlan(
            key.vlan_tci & VLAN_VID_MASK,
            (key.vlan_tci >> VLAN_PCP_SHIFT) as u8,
        );
    }
    let l4 = |b: FrameBuilder, v6: bool| -> FrameBuilder {
        if key.nw_frag & FRAG_LATER != 0 {
            return b.ip_proto(key.nw_proto);
        }
        match key.nw_proto {
            ipproto::TCP => b.tcp(key.tp_src, key.tp_dst, key.tcp_flags),
            ipproto::UDP => b.udp(key.tp_src, key.tp_dst),
            ipproto::ICMP if !v6 => b.icmp(key.tp_src as u8, key.tp_dst as u8),
            ipproto::ICMPV6 if v6 && is_nd => {
                b.nd(key.tp_src as u8, key.nw_src, key.nd_target, &[])
            }
            ipproto::ICMPV6 if v6 => b.icmp(key.tp_src as u8, key.tp_dst as u8),
            p => b.ip_proto(p),
        }
    };
    b = match key.dl_type {
        ethertype::IPV4 => {
            let b = b
                .ipv4(key.nw_src.to_be_bytes(), key.nw_dst.to_be_bytes())
                .ttl(key.nw_ttl)
                .tos(key.nw_tos);
            let b = if key.nw_frag & FRAG_ANY != 0 {
                b.frag(
                    if key.nw_frag & FRAG_LATER != 0 { 1 } else { 0 },
                    key.nw_frag & FRAG_LATER == 0,
                )
            } else {
                b
            };
            l4(b, false)
        }
        ethertype::IPV6 => {
            let b = b
                .ipv6(key.ipv6_src, key.ipv6_dst)
                .ttl(key.nw_ttl)
                .tos(key.nw_tos)
                .flow_label(key.ipv6_label);
            l4(b, true)
        }
        ethertype::ARP => b.arp(
            u16::from(key.nw_proto),
            key.arp_sha,
            key.nw_src.to_be_bytes(),
            key.arp_tha,
            key.nw_dst.to_be_bytes(),
        ),
        0 => b,
        other => b.ethertype(other),
    };
    b.payload(&body).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::extract;

    fn roundtrip(mut key: FlowKey) {
        key.in_port = 3;
        let frame = compose(&key, b"ferroswitch");
        let mut got = FlowKey::ZERO;
        let lay = extract(&frame, 3, &mut got);
        assert_eq!(lay.status, crate::packet::ParseStatus::Ok);
        assert_eq!(got, key, "frame {frame:02x?}");
    }

    #[test]
    fn compose_then_extract_gives_the_key_back() {
        let mut k = FlowKey::ZERO;
        k.dl_src = [2, 0, 0, 0, 0, 0xa];
        k.dl_dst = [2, 0, 0, 0, 0, 0xb];
        k.dl_type = ethertype::IPV4;
        k.nw_src = 0x0af4_0102;
        k.nw_dst = 0x0af4_0203;
        k.nw_ttl = 64;
        k.nw_proto = ipproto::ICMP;
        k.tp_src = 8;
        roundtrip(k);
        k.nw_proto = ipproto::TCP;
        k.tp_src = 40000;
        k.tp_dst = 80;
        k.tcp_flags = 0x002;
        k.nw_tos = 0xb8;
        roundtrip(k);
        k.vlan_tci = VLAN_CFI | (5 << VLAN_PCP_SHIFT) | 100;
        k.nw_proto = ipproto::UDP;
        k.tcp_flags = 0;
        roundtrip(k);
        let mut a = FlowKey::ZERO;
        a.dl_src = [2, 0, 0, 0, 0, 0xa];
        a.dl_dst = [0xff; 6];
        a.dl_type = ethertype::ARP;
        a.nw_proto = 1;
        a.nw_src = 0x0af4_0102;
        a.nw_dst = 0x0af4_0101;
        a.arp_sha = a.dl_src;
        roundtrip(a);
        let mut v6 = FlowKey::ZERO;
        v6.dl_type = ethertype::IPV6;
        v6.ipv6_src[15] = 1;
        v6.ipv6_dst[15] = 2;
        v6.nw_ttl = 64;
        v6.nw_proto = ipproto::ICMPV6;
        v6.tp_src = 128;
        v6.ipv6_label = 0x12345;
        roundtrip(v6);
    }

    #[test]
    fn neighbour_discovery_messages_compose_with_their_options() {
        let mut k = FlowKey::ZERO;
        k.in_port = 3;
        k.dl_type = ethertype::IPV6;
        k.ipv6_src = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        k.ipv6_dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];
        k.nw_ttl = 255;
        k.nw_proto = ipproto::ICMPV6;
        k.tp_src = u16::from(nd::NEIGHBOR_SOLICIT);
        k.nd_target = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        k.arp_sha = [2, 0, 0, 0, 1, 2];
        k.tcp_flags = u16::from(nd::OPT_SOURCE_LINKADDR);
        for key in [k, {
            let mut na = k;
            na.tp_src = u16::from(nd::NEIGHBOR_ADVERT);
            na.nw_src = nd::NA_ROUTER | nd::NA_SOLICITED;
            na.arp_tha = na.arp_sha;
            na.arp_sha = [0; 6];
            na.tcp_flags = u16::from(nd::OPT_TARGET_LINKADDR);
            na
        }] {
            let frame = compose(&key, &[]);
            let mut got = FlowKey::ZERO;
            let lay = extract(&frame, 3, &mut got);
            assert_eq!(lay.status, crate::packet::ParseStatus::Ok);
            assert_eq!(got, key, "frame {frame:02x?}");
            let ip = crate::packet::ip::PseudoHeader::V6 {
                src: key.ipv6_src,
                dst: key.ipv6_dst,
            };
            assert!(ip.verify(ipproto::ICMPV6, &frame[54..]), "ICMPv6 checksum");
        }
    }
}
