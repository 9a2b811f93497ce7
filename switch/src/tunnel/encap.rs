//! VXLAN encapsulation and decapsulation over IPv4 (RFC 7348), in place.
//!
//! Encapsulation ([`encap`]) prepends outer Ethernet (14) + IPv4 (20) + UDP
//! (8) + VXLAN (8) = [`ENCAP_OVERHEAD`] bytes in the packet's headroom: the
//! inner frame is never copied. Decapsulation ([`classify`] then
//! [`Packet::pull_head`]) only moves the packet's start past the outer
//! headers. The outer UDP source port comes from a hash of the inner flow
//! ([`inner_flow_hash`], RFC 7348 §5: "a hash of fields from the inner
//! packet"), scaled into 49152-65535 (the dynamic range RFC 7348 §5
//! recommends), so ECMP in the underlay spreads flows while keeping each one
//! on one path.
//!
//! Everything here is per packet: no allocation, no lock, no syscall, and no
//! panic on any input (every read is bounds-checked against the frame).

use crate::packet::checksum::checksum;
use crate::packet::ethernet::Mac;
use crate::packet::vxlan::{FLAG_I, HEADER_LEN as VXLAN_LEN};
use crate::packet::{be16, be32, put16, Packet};

/// Outer Ethernet + IPv4 (no options) + UDP + VXLAN header bytes.
pub const ENCAP_OVERHEAD: usize = 14 + 20 + 8 + VXLAN_LEN;
/// What encapsulation adds to the underlay's IP MTU accounting: the outer
/// IPv4 + UDP + VXLAN headers plus the inner Ethernet header are carried
/// inside the underlay's IP packet (RFC 7348 §4.3).
pub const IP_OVERHEAD: usize = 20 + 8 + VXLAN_LEN;
/// Lowest UDP source port used (RFC 7348 §5: 49152-65535).
pub const SRC_PORT_MIN: u16 = 49152;

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const ETH_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_SCTP: u8 = 132;

/// The outer headers of one encapsulation, fixed per destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    /// Outer Ethernet source (the underlay interface's MAC).
    pub src_mac: Mac,
    /// Outer Ethernet destination (the remote VTEP's or the gateway's MAC).
    pub dst_mac: Mac,
    /// Outer IPv4 source (the local VTEP).
    pub src_ip: u32,
    /// Outer IPv4 destination (the remote VTEP).
    pub dst_ip: u32,
    /// VXLAN network identifier (24 bits used).
    pub vni: u32,
    /// UDP destination port (4789 by default).
    pub dst_port: u16,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer TOS byte.
    pub tos: u8,
    /// Set the outer IPv4 don't-fragment bit (OVS `df_default=true`).
    pub df: bool,
}

/// Why a frame could not be encapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    /// The packet's headroom is smaller than [`ENCAP_OVERHEAD`].
    #[error("no headroom for the outer headers")]
    NoHeadroom,
    /// The inner frame is shorter than an Ethernet header.
    #[error("inner frame shorter than an Ethernet header")]
    TooShort,
    /// The encapsulated IP packet would exceed the underlay MTU.
    #[error("encapsulated frame exceeds the underlay MTU")]
    Oversize,
}

/// A 32-bit hash of the inner frame's flow: IPv4/IPv6 addresses, protocol
/// and (for TCP, UDP and SCTP first fragments) ports, after at most one
/// VLAN tag; other frames hash their MAC addresses and ethertype. Equal
/// flows always give equal hashes.
#[inline]
pub fn inner_flow_hash(f: &[u8]) -> u32 {
    #[inline(always)]
    fn mix(h: u64, v: u64) -> u64 {
        (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
    }
    if f.len() < 14 {
        return 0;
    }
    let mut off = 12;
    let mut et = be16(f, off);
    if et == ETH_VLAN && f.len() >= 18 {
        off += 4;
        et = be16(f, off);
    }
    let l3 = off + 2;
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let (proto, l4) = match et {
        ETH_IPV4 if f.len() >= l3 + 20 => {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            h = mix(h, u64::from(be32(f, l3 + 12)));
            h = mix(h, u64::from(be32(f, l3 + 16)));
            let frag = be16(f, l3 + 6) & 0x1fff != 0;
            (f[l3 + 9], (!frag && ihl >= 20).then_some(l3 + ihl))
        }
        ETH_IPV6 if f.len() >= l3 + 40 => {
            for w in (8..40).step_by(8) {
                let a = u64::from(be32(f, l3 + w));
                let b = u64::from(be32(f, l3 + w + 4));
                h = mix(h, (a << 32) | b);
            }
            (f[l3 + 6], Some(l3 + 40))
        }
        _ => {
            let a = (u64::from(be32(f, 0)) << 16) | u64::from(be16(f, 4));
            let b = (u64::from(be32(f, 6)) << 16) | u64::from(be16(f, 10));
            h = mix(mix(h, a), b);
            (0, None)
        }
    };
    h = mix(h, u64::from(proto) | (u64::from(et) << 8));
    if let Some(l4) = l4 {
        if matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) && f.len() >= l4 + 4 {
            h = mix(h, u64::from(be32(f, l4)));
        }
    }
    // Fold: every input bit reaches the low 32 bits.
    let h = h ^ (h >> 31);
    (h ^ (h >> 32)) as u32
}

/// The UDP source port for an inner-flow hash: the hash scaled into
/// 49152-65535 (RFC 7348 §5), the way OVS scales its RSS hash into its
/// tunnel port range (multiply, keep the high bits: no modulo bias).
#[inline]
pub fn src_port_for_hash(hash: u32) -> u16 {
    let span = u64::from(u16::MAX - SRC_PORT_MIN) + 1;
    // (hash * span) >> 32 < span = 16384, so the sum fits in u16.
    SRC_PORT_MIN + ((u64::from(hash) * span) >> 32) as u16
}

/// Encapsulate `pkt` (an inner Ethernet frame) for `o`, in place: the outer
/// headers go into the headroom. `ip_mtu` is the underlay's MTU (the largest
/// outer IPv4 packet); `ip_id` fills the IPv4 identification when DF is
/// clear (RFC 6864 §4.1: with DF set it may be any value, here 0).
/// The UDP checksum is 0, which RFC 7348 §5 and RFC 768 allow over IPv4.
#[inline]
pub fn encap(pkt: &mut Packet, o: &Outer, ip_mtu: usize, ip_id: u16) -> Result<(), EncapError> {
    let inner_len = pkt.len();
    if inner_len < 14 {
        return Err(EncapError::TooShort);
    }
    if inner_len + IP_OVERHEAD > ip_mtu {
        return Err(EncapError::Oversize);
    }
    let sport = src_port_for_hash(inner_flow_hash(pkt.data()));
    let d = pkt
        .push_head(ENCAP_OVERHEAD)
        .ok_or(EncapError::NoHeadroom)?;
    write_outer(d, o, inner_len, sport, ip_id);
    Ok(())
}

/// Write the [`ENCAP_OVERHEAD`] outer header bytes at the start of `d`
/// (which is at least that long) for an inner frame of `inner_len` bytes.
#[inline(always)]
fn write_outer(d: &mut [u8], o: &Outer, inner_len: usize, sport: u16, ip_id: u16) {
    // Ethernet II.
    d[0..6].copy_from_slice(&o.dst_mac);
    d[6..12].copy_from_slice(&o.src_mac);
    put16(d, 12, ETH_IPV4);
    // IPv4 (RFC 791), no options. inner_len + IP_OVERHEAD <= ip_mtu <= u16::MAX was checked.
    let total = (inner_len + IP_OVERHEAD) as u16;
    let ip = &mut d[14..34];
    ip[0] = 0x45;
    ip[1] = o.tos;
    put16(ip, 2, total);
    put16(ip, 4, if o.df { 0 } else { ip_id });
    put16(ip, 6, if o.df { 0x4000 } else { 0 });
    ip[8] = o.ttl;
    ip[9] = IPPROTO_UDP;
    put16(ip, 10, 0);
    ip[12..16].copy_from_slice(&o.src_ip.to_be_bytes());
    ip[16..20].copy_from_slice(&o.dst_ip.to_be_bytes());
    let c = checksum(ip);
    put16(ip, 10, c);
    // UDP (RFC 768): checksum 0 = none, allowed for IPv4 (RFC 7348 §5).
    let udp = &mut d[34..42];
    put16(udp, 0, sport);
    put16(udp, 2, o.dst_port);
    put16(udp, 4, total - 20);
    put16(udp, 6, 0);
    // VXLAN (RFC 7348 §5): flags I, reserved 0, VNI, reserved 0.
    let vx = &mut d[42..50];
    vx[0] = FLAG_I;
    vx[1..4].fill(0);
    vx[4..8].copy_from_slice(&((o.vni & 0x00ff_ffff) << 8).to_be_bytes());
}

/// Set the outer Ethernet destination of an encapsulated frame (used when a
/// frame waited for neighbour resolution).
#[inline]
pub fn set_outer_dst_mac(pkt: &mut Packet, mac: &Mac) {
    if let Some(d) = pkt.data_mut().get_mut(0..6) {
        d.copy_from_slice(mac);
    }
}

/// What a frame received on the underlay is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    /// VXLAN for this VTEP: strip `header_len` bytes to get the inner frame.
    Vxlan {
        /// Outer bytes before the inner Ethernet frame.
        header_len: usize,
        /// The VNI.
        vni: u32,
        /// Outer IPv4 source (the remote VTEP).
        src: u32,
        /// Outer IPv4 destination (our local_ip).
        dst: u32,
    },
    /// An ARP frame (the caller answers or learns from it).
    Arp {
        /// Offset of the ARP header.
        l3: usize,
    },
    /// Not for us (other addresses, protocols, ports).
    NotForUs,
    /// An outer IPv4 fragment: VXLAN frames are not reassembled.
    Fragment,
    /// The outer Ethernet, IPv4 or UDP header is malformed or truncated,
    /// or the IPv4 header checksum is wrong.
    BadOuter,
    /// The VXLAN header is short, lacks the I flag, or carries no inner
    /// Ethernet header.
    BadVxlan,
}

/// Classify a frame received on the underlay for the VTEP `local_ip` with
/// UDP port `dst_port` (RFC 7348 §4: the VTEP decapsulates UDP to its port
/// with the I flag set; §5: other flag bits are ignored on receipt).
#[inline]
pub fn classify(f: &[u8], local_ip: u32, dst_port: u16) -> Underlay {
    if f.len() < 14 {
        return Underlay::BadOuter;
    }
    let mut l3 = 14;
    let et = be16(f, 12);
    if et == ETH_VLAN {
        // A tagged underlay frame is not ours (the uplink is untagged).
        return Underlay::NotForUs;
    }
    if et == ETH_ARP {
        return Underlay::Arp { l3 };
    }
    if et != ETH_IPV4 {
        return Underlay::NotForUs;
    }
    if f.len() < l3 + 20 || f[l3] >> 4 != 4 {
        return Underlay::BadOuter;
    }
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    let total = usize::from(be16(f, l3 + 2));
    if ihl < 20 || total < ihl || f.len() < l3 + total {
        return Underlay::BadOuter;
    }
    if be32(f, l3 + 16) != local_ip {
        return Underlay::NotForUs;
    }
    if f[l3 + 9] != IPPROTO_UDP {
        return Underlay::NotForUs;
    }
    if be16(f, l3 + 6) & 0x3fff != 0 {
        return Underlay::Fragment;
    }
    if checksum(&f[l3..l3 + ihl]) != 0 {
        return Underlay::BadOuter;
    }
    let src = be32(f, l3 + 12);
    l3 += ihl;
    let udp = l3;
    let ip_end = udp - ihl + total;
    if ip_end < udp + 8 {
        return Underlay::BadOuter;
    }
    if be16(f, udp + 2) != dst_port {
        return Underlay::NotForUs;
    }
    let ulen = usize::from(be16(f, udp + 4));
    if ulen < 8 || udp + ulen > ip_end {
        return Underlay::BadOuter;
    }
    let vx = udp + 8;
    if ulen < 8 + VXLAN_LEN + 14 || f[vx] & FLAG_I == 0 {
        return Underlay::BadVxlan;
    }
    Underlay::Vxlan {
        header_len: vx + VXLAN_LEN,
        vni: be32(f, vx + 4) >> 8,
        src,
        dst: local_ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::FrameBuilder;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn outer() -> Outer {
        Outer {
            src_mac: [0x02, 0, 0, 0, 0x10, 1],
            dst_mac: [0x02, 0, 0, 0, 0x10, 2],
            src_ip: u32::from_be_bytes([192, 168, 10, 1]),
            dst_ip: u32::from_be_bytes([192, 168, 10, 2]),
            vni: 42,
            dst_port: 4789,
            ttl: 64,
            tos: 0,
            df: true,
        }
    }

    fn inner(sport: u16) -> Vec<u8> {
        FrameBuilder::new()
            .eth([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 2, 2])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 2])
            .udp(sport, 80)
            .payload(&[7u8; 30])
            .build()
    }

    #[test]
    fn encap_bytes_parse_as_vxlan_with_etherparse() {
        let inner = inner(1000);
        let mut p = Packet::from_slice(&inner).unwrap();
        encap(&mut p, &outer(), 1500, 0).unwrap();
        assert_eq!(p.len(), inner.len() + ENCAP_OVERHEAD);
        let s = SlicedPacket::from_ethernet(p.data()).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &s.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), outer().dst_mac);
        assert_eq!(eth.source(), outer().src_mac);
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!("not IPv4")
        };
        let h = ip.header();
        assert_eq!(h.source(), [192, 168, 10, 1]);
        assert_eq!(h.destination(), [192, 168, 10, 2]);
        assert_eq!(h.ttl(), 64);
        assert!(h.dont_fragment());
        assert_eq!(usize::from(h.total_len()), inner.len() + IP_OVERHEAD);
        // etherparse recomputes the header checksum: ours must equal it.
        let hdr = h.to_header();
        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
        let Some(TransportSlice::Udp(udp)) = &s.transport else {
            panic!("not UDP")
        };
        assert_eq!(udp.destination_port(), 4789);
        assert_eq!(udp.checksum(), 0);
        assert!(udp.source_port() >= SRC_PORT_MIN);
        assert_eq!(usize::from(udp.length()), inner.len() + 16);
        let vx = udp.payload();
        assert_eq!(&vx[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
        assert_eq!(&vx[8..], &inner[..]);
    }

    #[test]
    fn df_clear_uses_the_ip_id() {
        let mut o = outer();
        o.df = false;
        let mut p = Packet::from_slice(&inner(1)).unwrap();
        encap(&mut p, &o, 1500, 0x1234).unwrap();
        let d = p.data();
        assert_eq!(be16(d, 18), 0x1234);
        assert_eq!(be16(d, 20), 0);
        assert_eq!(checksum(&d[14..34]), 0);
    }

    #[test]
    fn decap_round_trip_strips_exactly_the_outer_headers() {
        let inner = inner(5);
        let mut p = Packet::from_slice(&inner).unwrap();
        encap(&mut p, &outer(), 1500, 0).unwrap();
        let local = u32::from_be_bytes([192, 168, 10, 2]);
        let c = classify(p.data(), local, 4789);
        let Underlay::Vxlan {
            header_len,
            vni,
            src,
            dst,
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(
            (header_len, vni, src, dst),
            (ENCAP_OVERHEAD, 42, outer().src_ip, local)
        );
        assert!(p.pull_head(header_len));
        assert_eq!(p.data(), &inner[..]);
    }

    /// A frame the kernel would build: etherparse writes the outer headers
    /// (with IP options, so the outer IHL is not 5, and a UDP checksum).
    #[test]
    fn decap_of_an_independently_built_frame() {
        use etherparse::{IpNumber, Ipv4Header, Ipv4Options, UdpHeader};
        let inner = inner(9);
        let mut payload = vec![0x08, 0, 0, 0, 0x00, 0x01, 0x02, 0x00];
        payload.extend_from_slice(&inner);
        let mut ip = Ipv4Header::new(
            (8 + payload.len()) as u16,
            64,
            IpNumber::UDP,
            [192, 168, 10, 9],
            [192, 168, 10, 1],
        )
        .unwrap();
        ip.options = Ipv4Options::from([1u8, 1, 1, 0]);
        ip.total_len = (ip.header_len() + 8 + payload.len()) as u16;
        ip.header_checksum = ip.calc_header_checksum();
        let udp = UdpHeader::with_ipv4_checksum(50000, 4789, &ip, &payload).unwrap();
        let mut f = vec![2, 0, 0, 0, 0x10, 1, 2, 0, 0, 0, 0x10, 9, 0x08, 0x00];
        ip.write(&mut f).unwrap();
        udp.write(&mut f).unwrap();
        f.extend_from_slice(&payload);
        let local = u32::from_be_bytes([192, 168, 10, 1]);
        match classify(&f, local, 4789) {
            Underlay::Vxlan {
                header_len, vni, ..
            } => {
                assert_eq!(vni, 0x102);
                assert_eq!(&f[header_len..], &inner[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn src_port_depends_on_the_inner_flow_only() {
        let a1 = inner_flow_hash(&inner(1000));
        let a2 = inner_flow_hash(&inner(1000));
        assert_eq!(a1, a2);
        let ports: std::collections::BTreeSet<u16> = (0..256u16)
            .map(|s| src_port_for_hash(inner_flow_hash(&inner(1000 + s))))
            .collect();
        // 256 flows over 16384 ports: a good hash collides rarely.
        assert!(ports.len() > 240, "only {} distinct ports", ports.len());
        assert!(ports.iter().all(|p| *p >= SRC_PORT_MIN));
        assert_eq!(src_port_for_hash(0), SRC_PORT_MIN);
        assert_eq!(src_port_for_hash(u32::MAX), u16::MAX);
        // Same flow with a different payload: same port.
        let mut other = inner(1000);
        let n = other.len();
        other[n - 1] ^= 0xff;
        assert_eq!(inner_flow_hash(&other), a1);
    }

    #[test]
    fn mtu_is_accounted_on_the_outer_ip_packet() {
        // Underlay MTU 1500: an inner frame of 1450 + 14 fits exactly.
        let fits = FrameBuilder::new()
            .eth([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 2, 2])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 2])
            .udp(1, 2)
            .payload(&[0u8; 1450 - 28])
            .build();
        assert_eq!(fits.len(), 1464);
        let mut p = Packet::from_slice(&fits).unwrap();
        assert_eq!(encap(&mut p, &outer(), 1500, 0), Ok(()));
        assert_eq!(p.len(), 1514);
        let mut big = fits.clone();
        big.push(0);
        let mut p = Packet::from_slice(&big).unwrap();
        assert_eq!(encap(&mut p, &outer(), 1500, 0), Err(EncapError::Oversize));
        assert_eq!(p.data(), &big[..], "a refused frame is left untouched");
    }

    #[test]
    fn no_headroom_and_short_inner_are_errors() {
        let mut p = Packet::from_slice(&inner(1)).unwrap();
        p.push_head(100).unwrap();
        assert_eq!(
            encap(&mut p, &outer(), 1500, 0),
            Err(EncapError::NoHeadroom)
        );
        let mut p = Packet::from_slice(&[0u8; 13]).unwrap();
        assert_eq!(encap(&mut p, &outer(), 1500, 0), Err(EncapError::TooShort));
    }

    fn encapped() -> Vec<u8> {
        let mut p = Packet::from_slice(&inner(3)).unwrap();
        encap(&mut p, &outer(), 1500, 0).unwrap();
        p.data().to_vec()
    }

    #[test]
    fn malformed_underlay_frames_are_classified_never_panic() {
        let local = u32::from_be_bytes([192, 168, 10, 2]);
        let good = encapped();
        // Every truncation of a good frame: never Vxlan with a header past the end.
        for n in 0..good.len() {
            match classify(&good[..n], local, 4789) {
                Underlay::Vxlan { header_len, .. } => assert!(header_len <= n),
                Underlay::BadOuter | Underlay::BadVxlan => {}
                other => panic!("prefix {n}: {other:?}"),
            }
        }
        // I flag clear.
        let mut f = good.clone();
        f[42] = 0;
        assert_eq!(classify(&f, local, 4789), Underlay::BadVxlan);
        // Other reserved flag bits are ignored on receipt (RFC 7348 §5).
        let mut f = good.clone();
        f[42] = 0xff;
        assert!(matches!(classify(&f, local, 4789), Underlay::Vxlan { .. }));
        // Bad IPv4 header checksum.
        let mut f = good.clone();
        f[24] ^= 1;
        assert_eq!(classify(&f, local, 4789), Underlay::BadOuter);
        // Other destination, other port, fragment.
        assert_eq!(classify(&good, local + 1, 4789), Underlay::NotForUs);
        assert_eq!(classify(&good, local, 8472), Underlay::NotForUs);
        let mut f = good.clone();
        f[20] = 0x20; // MF
        assert_eq!(classify(&f, local, 4789), Underlay::Fragment);
        // UDP length larger than the IP payload.
        let mut f = good.clone();
        put16(&mut f, 38, 2000);
        assert_eq!(classify(&f, local, 4789), Underlay::BadOuter);
        // Random bytes: no panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut f = good.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x >> 8) as usize % f.len();
                f[i] = (x >> 20) as u8;
            }
            if let Underlay::Vxlan { header_len, .. } = classify(&f, local, 4789) {
                assert!(header_len + 14 <= f.len());
            }
        }
    }
}
