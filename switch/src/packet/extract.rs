//! Extraction of a frame into a `FlowKey` (miniflow_extract's job in OVS,
//! lib/flow.c), the first thing every packet goes through.
//!
//! Bytes enter as one Ethernet frame; the key leaves reset and filled, with a
//! [`Layout`] giving the L3/L4 offsets for action execution and how far
//! parsing got. This is hot-path code: fixed offsets, one bounds check per
//! layer (a slice is taken as a fixed-size array once, after which field
//! reads are check-free), no allocation, never a panic whatever the bytes.
//!
//! Semantics (OVS's, with the deliberate differences marked *):
//! - Ethernet: < 14 bytes → `Truncated` with only `in_port` set.
//! - VLAN: up to two tags (0x8100 or 0x88a8) are parsed; the outer TCI goes
//!   to `vlan_tci` with `VLAN_CFI` set (so the DEI bit is not visible), the
//!   inner tag is skipped and `dl_type` is the innermost ethertype. A tag cut
//!   short leaves `dl_type` = the TPID, like OVS, and reports `Truncated`.
//! - 802.3 length (< 0x0600): LLC/SNAP with OUI 0 gives the SNAP type, else
//!   `dl_type` = 0x05ff (OVS's FLOW_DL_TYPE_NONE).
//! - IPv4: version ≠ 4 (*: OVS does not check), IHL < 5 or total length <
//!   IHL·4 → `Malformed`; shorter than 20, IHL·4 or total length →
//!   `Truncated`; in both cases no L3 field is set (as in OVS). Options are
//!   skipped via IHL; Ethernet padding after the total length is ignored
//!   (*: OVS also rejects frames with more than 255 padding bytes, an
//!   artefact of its u8 pad counter; we accept them). `nw_frag` = FRAG_ANY
//!   when MF or offset ≠ 0, plus FRAG_LATER when offset ≠ 0, and then no L4.
//! - IPv6: shorter than 40 or than the payload length → `Truncated`, version
//!   ≠ 6 → `Malformed` (*), both with no L3 field. Extension headers (0, 43,
//!   44, 51, 60) are skipped to the final `nw_proto`; if one is cut short
//!   the status is `Truncated` and, as in OVS, `ipv6_src/dst/label` are set
//!   but `nw_proto/tos/ttl` are not. A fragment header with a non-zero
//!   offset/flags word sets FRAG_ANY; a non-zero offset adds FRAG_LATER,
//!   stops there and reports `nw_proto` = 44, like OVS.
//! - L4 (not for later fragments): TCP (20 bytes and the whole data-offset
//!   header (*: OVS only needs 20), data offset < 5 → `Malformed` (*: OVS
//!   does not check)): ports and the 12 flag bits; UDP (8): ports; SCTP
//!   (12): ports; ICMP, ICMPv6, IGMP (8): type and code in `tp_src`/`tp_dst`.
//!   A short L4 header → `Truncated` with no L4 field (OVS: silently none).
//! - ARP/RARP: fewer than 28 bytes → `Truncated`; Ethernet/IPv4 ARP sets
//!   `nw_src` = spa, `nw_dst` = tpa, `arp_sha`, `arp_tha` and `nw_proto` =
//!   opcode when it is ≤ 0xff; other hardware/protocol types set nothing.
//! - ICMPv6 neighbour discovery (RFC 4861 §4.3/4.4), as OVS's parse_icmpv6:
//!   for code 0 of type 135 (NS) or 136 (NA), the reserved word (NA R/S/O
//!   flags) goes to `nw_src` (`nd_reserved`), the target to `nd_target`,
//!   and the options (§4.6) are walked: an 8-byte source (1) / target (2)
//!   link-layer option sets `arp_sha` (`nd_sll`) / `arp_tha` (`nd_tll`)
//!   and its type `tcp_flags` (`nd_options_type`); other options are
//!   skipped; trailing bytes shorter than an option are ignored. An option
//!   of length 0, one running past the message, or a second option of the
//!   same link-layer kind → `Malformed` with no ND field (type and code
//!   stay), like OVS's `invalid:` path (*: OVS does not report it). A
//!   message too short for the target → `Truncated` with no ND field
//!   (*: OVS keeps the reserved word).
//! - `Layout.l3` is set once the Ethernet header (and tags, and SNAP) is
//!   complete, as OVS's l3_ofs; `Layout.l4` once the IP header (and IPv6
//!   extension headers) is complete, even when the L4 header is short.

use crate::flow::key::{ethertype, ipproto, nd, FlowKey, FRAG_ANY, FRAG_LATER, VLAN_CFI};
use crate::flow::PortNo;
use crate::packet::{be16, be32};

/// Offset value meaning "this layer is absent".
pub const NO_OFFSET: u16 = u16::MAX;

/// `dl_type` of an 802.3 frame without a SNAP type (OVS's FLOW_DL_TYPE_NONE).
pub const DL_TYPE_NONE: u16 = 0x05ff;

/// RARP ethertype (extracted like ARP, as OVS does).
const ETH_TYPE_RARP: u16 = 0x8035;
/// Smallest value of the type field that is an ethertype, not a length.
const ETH_TYPE_MIN: u16 = 0x0600;

/// How far extraction got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseStatus {
    /// Every present header was complete and valid.
    Ok,
    /// The frame ended inside a header; the key holds the layers before it.
    Truncated,
    /// A header was inconsistent (bad IHL, length fields, version); the key
    /// holds the layers before it.
    Malformed,
}

/// Where the layers start in the frame, for action execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the L3 header (after VLAN tags), or `NO_OFFSET`.
    pub l3: u16,
    /// Offset of the L4 header, or `NO_OFFSET`.
    pub l4: u16,
    /// Extraction outcome.
    pub status: ParseStatus,
}

/// `N` bytes of `b` from `at` as a fixed-size array (one bounds check; field
/// reads from the array then need none).
#[inline(always)]
fn chunk<const N: usize>(b: &[u8], at: usize) -> Option<&[u8; N]> {
    b.get(at..)?.first_chunk::<N>()
}

/// Offsets fit in u16 because frames never exceed 64 KiB in this switch
/// (buf::MAX_FRAME); a larger slice saturates to `NO_OFFSET - 1` rather than
/// wrap.
#[inline(always)]
fn ofs(o: usize) -> u16 {
    if o < usize::from(NO_OFFSET) {
        o as u16
    } else {
        NO_OFFSET - 1
    }
}

/// Reset `key` and fill it from `frame` received on `in_port`. Never panics,
/// whatever the bytes.
#[inline]
pub fn extract(frame: &[u8], in_port: PortNo, key: &mut FlowKey) -> Layout {
    let mut lay = Layout {
        l3: NO_OFFSET,
        l4: NO_OFFSET,
        status: ParseStatus::Ok,
    };
    extract_into(frame, in_port, key, &mut lay);
    lay
}

/// [`extract`] writing the layout through `lay` (overwritten whatever it
/// held), for the datapath's per-packet pass: returning the 6-byte `Layout`
/// by value packs it into a register with a 4-byte load over the 1-byte
/// `status` store just made, a load the store buffer cannot forward, so
/// every packet waited for its key's stores to commit (h43's profile: 42 %
/// of `extract`'s samples in oneway-64). Written in place, the layout is
/// read again only in the execute pass, long after.
#[inline]
pub fn extract_into(frame: &[u8], in_port: PortNo, key: &mut FlowKey, lay: &mut Layout) {
    *key = FlowKey::ZERO;
    key.in_port = in_port;
    *lay = Layout {
        l3: NO_OFFSET,
        l4: NO_OFFSET,
        status: ParseStatus::Ok,
    };

    // L2: IEEE 802.3 / Ethernet II.
    let Some(eth) = chunk::<14>(frame, 0) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    key.dl_dst.copy_from_slice(&eth[0..6]);
    key.dl_src.copy_from_slice(&eth[6..12]);
    let mut ty = be16(eth, 12);
    let mut l3 = 14usize;

    // 802.1Q / 802.1ad: up to two tags (OVS's flow_vlan_limit default).
    if ty == ethertype::VLAN || ty == ethertype::QINQ {
        let Some(tag) = chunk::<4>(frame, 14) else {
            key.dl_type = ty;
            lay.status = ParseStatus::Truncated;
            return;
        };
        key.vlan_tci = be16(tag, 0) | VLAN_CFI;
        ty = be16(tag, 2);
        l3 = 18;
        if ty == ethertype::VLAN || ty == ethertype::QINQ {
            let Some(tag) = chunk::<4>(frame, 18) else {
                key.dl_type = ty;
                lay.status = ParseStatus::Truncated;
                return;
            };
            ty = be16(tag, 2);
            l3 = 22;
        }
    }

    // 802.3 length field: LLC/SNAP (IEEE 802 §10.5 with the Ethernet OUI).
    if ty < ETH_TYPE_MIN {
        ty = DL_TYPE_NONE;
        if let Some(llc) = chunk::<8>(frame, l3) {
            let snap_type = be16(llc, 6);
            if llc[..6] == [0xaa, 0xaa, 0x03, 0, 0, 0] && snap_type >= ETH_TYPE_MIN {
                ty = snap_type;
                l3 += 8;
            }
        }
    }
    key.dl_type = ty;
    lay.l3 = ofs(l3);

    match ty {
        ethertype::IPV4 => extract_ipv4(frame, l3, key, lay),
        ethertype::IPV6 => extract_ipv6(frame, l3, key, lay),
        ethertype::ARP | ETH_TYPE_RARP => extract_arp(frame, l3, key, lay),
        _ => {}
    }
}

/// RFC 791 §3.1.
#[inline(always)]
fn extract_ipv4(frame: &[u8], l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(ip) = chunk::<20>(frame, l3) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    let avail = frame.len() - l3;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        lay.status = ParseStatus::Malformed;
        return;
    }
    if avail < ihl {
        lay.status = ParseStatus::Truncated;
        return;
    }
    let tot = usize::from(be16(ip, 2));
    if tot < ihl {
        lay.status = ParseStatus::Malformed;
        return;
    }
    if tot > avail {
        lay.status = ParseStatus::Truncated;
        return;
    }
    key.nw_tos = ip[1];
    key.nw_ttl = ip[8];
    key.nw_proto = ip[9];
    key.nw_src = be32(ip, 12);
    key.nw_dst = be32(ip, 16);
    let frag = be16(ip, 6);
    if frag & 0x3fff != 0 {
        key.nw_frag = FRAG_ANY;
        if frag & 0x1fff != 0 {
            key.nw_frag |= FRAG_LATER;
        }
    }
    let l4 = l3 + ihl;
    lay.l4 = ofs(l4);
    if key.nw_frag & FRAG_LATER != 0 {
        return;
    }
    // Never read the Ethernet padding beyond the total length.
    extract_l4(&frame[l4..l3 + tot], key, lay);
}

/// RFC 8200 §3–4.
#[inline(always)]
fn extract_ipv6(frame: &[u8], l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(ip) = chunk::<40>(frame, l3) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    if ip[0] >> 4 != 6 {
        lay.status = ParseStatus::Malformed;
        return;
    }
    let plen = usize::from(be16(ip, 4));
    let start = l3 + 40;
    let Some(payload) = frame.get(start..start + plen) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    key.ipv6_src.copy_from_slice(&ip[8..24]);
    key.ipv6_dst.copy_from_slice(&ip[24..40]);
    let vtf = be32(ip, 0);
    key.ipv6_label = vtf & 0x000f_ffff;
    let mut proto = ip[6];
    let mut off = 0usize;
    let mut frag = 0u8;
    // Extension headers (RFC 8200 §4; AH per RFC 4302 §2.2), as OVS's
    // parse_ipv6_ext_hdrs: each is at least 8 bytes.
    while matches!(proto, 0 | 43 | 44 | 51 | 60) {
        let Some(h) = chunk::<8>(payload, off) else {
            lay.status = ParseStatus::Truncated;
            return;
        };
        let len = match proto {
            44 => {
                let offlg = be16(h, 2);
                if offlg != 0 {
                    frag = FRAG_ANY;
                    if offlg & 0xfff8 != 0 {
                        frag |= FRAG_LATER;
                    }
                }
                8
            }
            51 => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        if payload.len() < off + len {
            lay.status = ParseStatus::Truncated;
            return;
        }
        off += len;
        if frag & FRAG_LATER != 0 {
            // OVS keeps 44 as nw_proto for a non-first fragment.
            break;
        }
        proto = h[0];
    }
    key.nw_tos = (vtf >> 20) as u8;
    key.nw_ttl = ip[7];
    key.nw_proto = proto;
    key.nw_frag = frag;
    lay.l4 = ofs(start + off);
    if frag & FRAG_LATER != 0 {
        return;
    }
    extract_l4(&payload[off..], key, lay);
}

/// The transport header, `l4` bounded by the IP length.
#[inline(always)]
fn extract_l4(l4: &[u8], key: &mut FlowKey, lay: &mut Layout) {
    match key.nw_proto {
        // RFC 9293 §3.1.
        6 => {
            let Some(tcp) = chunk::<20>(l4, 0) else {
                lay.status = ParseStatus::Truncated;
                return;
            };
            let doff = usize::from(tcp[12] >> 4) * 4;
            if doff < 20 {
                lay.status = ParseStatus::Malformed;
                return;
            }
            if l4.len() < doff {
                lay.status = ParseStatus::Truncated;
                return;
            }
            key.tp_src = be16(tcp, 0);
            key.tp_dst = be16(tcp, 2);
            key.tcp_flags = be16(tcp, 12) & 0x0fff;
        }
        // RFC 768; SCTP (132, RFC 9260 §3.1) shares the port layout.
        17 | 132 => {
            let need = if key.nw_proto == 17 { 8 } else { 12 };
            let Some(h) = l4.get(..need).and_then(|h| h.first_chunk::<4>()) else {
                lay.status = ParseStatus::Truncated;
                return;
            };
            key.tp_src = be16(h, 0);
            key.tp_dst = be16(h, 2);
        }
        // ICMP (RFC 792), IGMP (RFC 2236), ICMPv6 (RFC 4443): 8-byte header.
        1 | 2 | 58 => {
            let Some(h) = chunk::<8>(l4, 0) else {
                lay.status = ParseStatus::Truncated;
                return;
            };
            key.tp_src = u16::from(h[0]);
            key.tp_dst = u16::from(h[1]);
            if key.nw_proto == ipproto::ICMPV6
                && key.dl_type == ethertype::IPV6
                && h[1] == 0
                && (h[0] == nd::NEIGHBOR_SOLICIT || h[0] == nd::NEIGHBOR_ADVERT)
            {
                extract_nd(be32(h, 4), &l4[8..], key, lay);
            }
        }
        _ => {}
    }
}

/// RFC 4861 §4.3/4.4/4.6: the NS/NA body after the 8-byte ICMPv6 header
/// (`body` bounded by the IPv6 payload length). Out of line: ND is rare and
/// the common path should stay small.
#[inline(never)]
fn extract_nd(reserved: u32, body: &[u8], key: &mut FlowKey, lay: &mut Layout) {
    let Some(target) = chunk::<16>(body, 0) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    let (mut sll, mut tll, mut opt_type) = ([0u8; 6], [0u8; 6], 0u8);
    let mut off = 16usize;
    // Each option is at least 8 bytes (§4.6); its length is in units of 8.
    while let Some(o) = chunk::<8>(body, off) {
        let len = usize::from(o[1]) * 8;
        if len == 0 || len > body.len() - off {
            lay.status = ParseStatus::Malformed;
            return;
        }
        if len == 8 {
            let slot = match o[0] {
                nd::OPT_SOURCE_LINKADDR => Some(&mut sll),
                nd::OPT_TARGET_LINKADDR => Some(&mut tll),
                _ => None,
            };
            if let Some(slot) = slot {
                // OVS: the same link-layer option twice makes the message invalid.
                if *slot != [0; 6] {
                    lay.status = ParseStatus::Malformed;
                    return;
                }
                slot.copy_from_slice(&o[2..8]);
                opt_type = o[0];
            }
        }
        off += len;
    }
    key.nw_src = reserved;
    key.nd_target = *target;
    key.arp_sha = sll;
    key.arp_tha = tll;
    key.tcp_flags = u16::from(opt_type);
}

/// RFC 826, Ethernet/IPv4 only.
#[inline(always)]
fn extract_arp(frame: &[u8], l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(arp) = chunk::<28>(frame, l3) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    if be16(arp, 0) != 1 || be16(arp, 2) != ethertype::IPV4 || arp[4] != 6 || arp[5] != 4 {
        return;
    }
    let op = be16(arp, 6);
    if op <= 0xff {
        key.nw_proto = op as u8;
    }
    key.arp_sha.copy_from_slice(&arp[8..14]);
    key.nw_src = be32(arp, 14);
    key.arp_tha.copy_from_slice(&arp[18..24]);
    key.nw_dst = be32(arp, 24);
}

/// [`extract`] over a stale key, and [`extract_into`] over a stale key and
/// a stale layout whose every field differs from a fresh one: both must
/// give the same answer, which is returned.
fn extract_both(data: &[u8], in_port: PortNo) -> (FlowKey, Layout) {
    let mut key = FlowKey::all_ones();
    let lay = extract(data, in_port, &mut key);
    let mut key2 = FlowKey::all_ones();
    let mut lay2 = Layout {
        l3: 1,
        l4: 2,
        status: ParseStatus::Malformed,
    };
    extract_into(data, in_port, &mut key2, &mut lay2);
    assert_eq!(
        (key2, lay2),
        (key, lay),
        "extract_into differs from extract"
    );
    (key, lay)
}

/// Fuzz entry point: extract arbitrary bytes and check the layout's
/// invariants. Must never panic for any input (the invariants hold by
/// construction; a panic here is a bug in `extract`).
pub fn fuzz_extract(data: &[u8]) {
    let (key, lay) = extract_both(data, 1);
    assert_eq!(key.in_port, 1);
    if lay.l3 != NO_OFFSET {
        assert!(usize::from(lay.l3) <= data.len());
    }
    if lay.l4 != NO_OFFSET {
        assert!(lay.l3 != NO_OFFSET && lay.l4 > lay.l3);
        assert!(usize::from(lay.l4) <= data.len());
    }
    if data.len() < 14 {
        assert_eq!(lay.status, ParseStatus::Truncated);
        assert_eq!(key, {
            let mut k = FlowKey::ZERO;
            k.in_port = 1;
            k
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::ipproto;
    use crate::packet::builder::FrameBuilder;
    use crate::packet::tcp::flags;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

    /// Both extraction forms over stale contents (they must reset them).
    fn run(f: &[u8]) -> (FlowKey, Layout) {
        extract_both(f, 7)
    }

    fn l2_only(k: &FlowKey) -> FlowKey {
        let mut e = FlowKey::ZERO;
        e.in_port = k.in_port;
        e.dl_dst = k.dl_dst;
        e.dl_src = k.dl_src;
        e.dl_type = k.dl_type;
        e.vlan_tci = k.vlan_tci;
        e
    }

    #[test]
    fn tcp_over_vlan_ipv4() {
        let f = FrameBuilder::new()
            .eth(A, B)
            .vlan(100, 5)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .tos(0xb9)
            .ttl(33)
            .tcp(1234, 80, flags::SYN | flags::ACK)
            .build();
        let (k, l) = run(&f);
        assert_eq!(
            l,
            Layout {
                l3: 18,
                l4: 38,
                status: ParseStatus::Ok
            }
        );
        assert_eq!(k.in_port, 7);
        assert_eq!((k.dl_src, k.dl_dst), (A, B));
        assert_eq!(k.vlan_tci, VLAN_CFI | (5 << 13) | 100);
        assert_eq!(k.dl_type, ethertype::IPV4);
        assert_eq!((k.nw_src, k.nw_dst), (0x0a00_0001, 0x0a00_0002));
        assert_eq!(
            (k.nw_proto, k.nw_tos, k.nw_ttl, k.nw_frag),
            (6, 0xb9, 33, 0)
        );
        assert_eq!((k.tp_src, k.tp_dst, k.tcp_flags), (1234, 80, 0x12));
        assert_eq!(k.ipv6_src, [0; 16]);
    }

    #[test]
    fn qinq_uses_outer_tci_and_inner_ethertype() {
        let f = FrameBuilder::new()
            .vlan(10, 1)
            .vlan(20, 2)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .udp(5, 6)
            .build();
        let (k, l) = run(&f);
        assert_eq!(k.vlan_tci, VLAN_CFI | (1 << 13) | 10);
        assert_eq!(k.dl_type, ethertype::IPV4);
        assert_eq!((l.l3, l.l4, l.status), (22, 42, ParseStatus::Ok));
        assert_eq!((k.tp_src, k.tp_dst), (5, 6));
        // A VID-0 priority tag is still "tagged".
        let (k, _) = run(&FrameBuilder::new()
            .vlan(0, 0)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .build());
        assert_eq!(k.vlan_tci, VLAN_CFI);
    }

    #[test]
    fn ieee8023_llc_and_snap() {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&B);
        f[6..12].copy_from_slice(&A);
        f[12..14].copy_from_slice(&46u16.to_be_bytes());
        f[14..17].copy_from_slice(&[0x42, 0x42, 0x03]); // STP LLC
        let (k, l) = run(&f);
        assert_eq!(
            (k.dl_type, l.l3, l.status),
            (DL_TYPE_NONE, 14, ParseStatus::Ok)
        );
        f[14..22].copy_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x06]);
        let arp = FrameBuilder::new()
            .arp_request(A, [10, 0, 0, 1], [10, 0, 0, 9])
            .build();
        f[22..50].copy_from_slice(&arp[14..42]);
        let (k, l) = run(&f);
        assert_eq!((k.dl_type, l.l3), (ethertype::ARP, 22));
        assert_eq!(
            (k.nw_src, k.nw_dst, k.nw_proto),
            (0x0a00_0001, 0x0a00_0009, 1)
        );
        // A SNAP header with a non-Ethernet OUI is not decoded.
        f[19] = 1;
        assert_eq!(run(&f).0.dl_type, DL_TYPE_NONE);
    }

    #[test]
    fn ipv4_options_fragments_and_padding() {
        let f = FrameBuilder::new()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1])
            .udp(53, 99)
            .build();
        let (k, l) = run(&f);
        assert_eq!(
            (l.l4, k.tp_src, k.tp_dst, l.status),
            (42, 53, 99, ParseStatus::Ok)
        );
        let first = FrameBuilder::new()
            .ipv4([1, 0, 0, 1], [1, 0, 0, 2])
            .frag(0, true)
            .udp(1, 2)
            .build();
        let (k, _) = run(&first);
        assert_eq!((k.nw_frag, k.tp_src), (FRAG_ANY, 1));
        let later = FrameBuilder::new()
            .ipv4([1, 0, 0, 1], [1, 0, 0, 2])
            .frag(5, false)
            .udp(1, 2)
            .build();
        let (k, l) = run(&later);
        assert_eq!(
            (k.nw_frag, k.tp_src, k.tp_dst, k.nw_proto),
            (FRAG_ANY | FRAG_LATER, 0, 0, 17)
        );
        assert_eq!((l.l4, l.status), (34, ParseStatus::Ok));
        // Padding is not L4: a TCP header that only "fits" thanks to padding is truncated.
        let mut short = FrameBuilder::new()
            .ipv4([1, 0, 0, 1], [1, 0, 0, 2])
            .ip_proto(6)
            .payload(&[0; 4])
            .build();
        short[16..18].copy_from_slice(&24u16.to_be_bytes()); // 20 + 4 bytes of TCP
        let (k, l) = run(&short);
        assert_eq!(short.len(), 60);
        assert_eq!(
            (l.status, k.tp_src, k.nw_proto),
            (ParseStatus::Truncated, 0, 6)
        );
    }

    #[test]
    fn ipv4_malformed_and_truncated_keep_only_l2() {
        let good = FrameBuilder::new()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .udp(1, 2)
            .build();
        for (i, v, st) in [
            (14, 0x44u8, ParseStatus::Malformed), // IHL 4
            (14, 0x55, ParseStatus::Malformed),   // version 5
            (17, 10, ParseStatus::Malformed),     // total length 10 < 20
            (17, 200, ParseStatus::Truncated),    // total length beyond the frame
            (14, 0x4f, ParseStatus::Truncated),   // IHL 15 = 60 bytes, frame has 46
        ] {
            let mut f = good.clone();
            f[i] = v;
            let (k, l) = run(&f);
            assert_eq!(l.status, st, "byte {i} = {v:#x}");
            assert_eq!(k, l2_only(&k), "byte {i} = {v:#x}");
            assert_eq!((l.l3, l.l4), (14, NO_OFFSET));
        }
        let (k, l) = run(&good[..33]);
        assert_eq!((l.status, k.nw_src), (ParseStatus::Truncated, 0));
    }

    #[test]
    fn tcp_data_offset_rules() {
        let f = FrameBuilder::new()
            .ipv4([1, 0, 0, 1], [1, 0, 0, 2])
            .tcp(1, 2, flags::FIN)
            .build();
        let mut bad = f.clone();
        bad[46] = 0x40; // data offset 4
        let (k, l) = run(&bad);
        assert_eq!(
            (l.status, k.tp_src, k.tcp_flags, k.nw_proto),
            (ParseStatus::Malformed, 0, 0, 6)
        );
        let mut long = f.clone();
        long[46] = 0x60; // 24-byte header in a 20-byte segment
        assert_eq!(run(&long).1.status, ParseStatus::Truncated);
        let mut all = f;
        all[46] = 0x5f;
        all[47] = 0xff;
        assert_eq!(run(&all).0.tcp_flags, 0x0fff);
    }

    #[test]
    fn icmp_and_icmpv6_type_code() {
        let (k, _) = run(&FrameBuilder::new()
            .ipv4([1, 0, 0, 1], [1, 0, 0, 2])
            .icmp(3, 4)
            .build());
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (ipproto::ICMP, 3, 4));
        let (k, l) = run(&FrameBuilder::new()
            .ipv6([1; 16], [2; 16])
            .icmp_echo(1, 2)
            .build());
        assert_eq!(
            (k.nw_proto, k.tp_src, k.tp_dst, l.l4),
            (ipproto::ICMPV6, 128, 0, 54)
        );
    }

    const POD6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05];
    const GW6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];

    fn sll(mac: [u8; 6]) -> Vec<u8> {
        let mut o = vec![nd::OPT_SOURCE_LINKADDR, 1];
        o.extend_from_slice(&mac);
        o
    }

    fn ns(options: &[u8]) -> Vec<u8> {
        FrameBuilder::new()
            .eth(A, B)
            .ipv6(POD6, [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1])
            .ttl(255)
            .nd(nd::NEIGHBOR_SOLICIT, 0, GW6, options)
            .build()
    }

    #[test]
    fn neighbour_solicitation_fields() {
        // A nonce option (14, RFC 7527) before the SLL is skipped.
        let mut opts = vec![14, 1, 1, 2, 3, 4, 5, 6];
        opts.extend(sll(A));
        let (k, l) = run(&ns(&opts));
        assert_eq!(l.status, ParseStatus::Ok);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (ipproto::ICMPV6, 135, 0));
        assert_eq!(k.nd_target, GW6);
        assert_eq!((k.arp_sha, k.arp_tha), (A, [0; 6]));
        assert_eq!((k.tcp_flags, k.nw_src), (1, 0));
        // Without options: the target only.
        let (k, l) = run(&ns(&[]));
        assert_eq!(l.status, ParseStatus::Ok);
        assert_eq!((k.nd_target, k.arp_sha, k.tcp_flags), (GW6, [0; 6], 0));
    }

    #[test]
    fn neighbour_advertisement_fields() {
        let mut tll = vec![nd::OPT_TARGET_LINKADDR, 1];
        tll.extend_from_slice(&B);
        let flags = nd::NA_ROUTER | nd::NA_SOLICITED | nd::NA_OVERRIDE;
        let f = FrameBuilder::new()
            .ipv6(GW6, POD6)
            .nd(nd::NEIGHBOR_ADVERT, flags, GW6, &tll)
            .build();
        let (k, l) = run(&f);
        assert_eq!(l.status, ParseStatus::Ok);
        assert_eq!((k.tp_src, k.nd_target, k.arp_tha), (136, GW6, B));
        assert_eq!((k.arp_sha, k.tcp_flags, k.nw_src), ([0; 6], 2, 0xe000_0000));
    }

    #[test]
    fn malformed_neighbour_discovery_sets_no_nd_field() {
        let mut zero_len = sll(A);
        zero_len[1] = 0;
        let mut too_long = sll(A);
        too_long[1] = 2; // 16 bytes, only 8 there
        let mut twice = sll(A);
        twice.extend(sll(B));
        for (what, opts) in [
            ("option length 0", zero_len),
            ("option past the end", too_long),
            ("two source link-layer options", twice),
        ] {
            let (k, l) = run(&ns(&opts));
            assert_eq!(l.status, ParseStatus::Malformed, "{what}");
            assert_eq!((k.tp_src, k.tp_dst), (135, 0), "{what}: type/code stay");
            assert_eq!(
                (k.nd_target, k.arp_sha, k.tcp_flags, k.nw_src),
                ([0; 16], [0; 6], 0, 0),
                "{what}"
            );
        }
        // The message cut inside the target (payload length says so too).
        let mut cut = ns(&[]);
        cut.truncate(14 + 40 + 8 + 10);
        cut[18..20].copy_from_slice(&18u16.to_be_bytes());
        let (k, l) = run(&cut);
        assert_eq!(
            (l.status, k.tp_src, k.nd_target),
            (ParseStatus::Truncated, 135, [0; 16])
        );
        // Trailing bytes shorter than an option are ignored, as in OVS.
        let mut opts = sll(A);
        opts.extend_from_slice(&[9, 9, 9, 9]);
        let (k, l) = run(&ns(&opts));
        assert_eq!((l.status, k.arp_sha), (ParseStatus::Ok, A));
        // Code 0 only; other ICMPv6 types carry no ND fields.
        let mut code1 = ns(&sll(A));
        code1[14 + 40 + 1] = 1;
        let (k, l) = run(&code1);
        assert_eq!(
            (l.status, k.tp_dst, k.nd_target, k.arp_sha),
            (ParseStatus::Ok, 1, [0; 16], [0; 6])
        );
        // Every prefix of a valid NS extracts without panicking.
        let full = ns(&sll(A));
        for n in 0..full.len() {
            fuzz_extract(&full[..n]);
        }
    }

    #[test]
    fn arp_fields() {
        let f = FrameBuilder::new()
            .eth(A, [0xff; 6])
            .arp_reply(A, [10, 0, 0, 1], B, [10, 0, 0, 2])
            .build();
        let (k, l) = run(&f);
        assert_eq!(
            l,
            Layout {
                l3: 14,
                l4: NO_OFFSET,
                status: ParseStatus::Ok
            }
        );
        assert_eq!(
            (k.nw_proto, k.nw_src, k.nw_dst),
            (2, 0x0a00_0001, 0x0a00_0002)
        );
        assert_eq!((k.arp_sha, k.arp_tha), (A, B));
        let big = FrameBuilder::new()
            .arp(0x100, A, [1, 1, 1, 1], B, [2, 2, 2, 2])
            .build();
        let (k, _) = run(&big);
        assert_eq!(
            (k.nw_proto, k.nw_src),
            (0, 0x0101_0101),
            "opcodes > 0xff leave nw_proto 0"
        );
        let mut other = f.clone();
        other[15] = 6; // htype 6 (IEEE 802)
        let (k, l) = run(&other);
        assert_eq!((k, l.status), (l2_only(&k), ParseStatus::Ok));
        let (k, l) = run(&f[..41]);
        assert_eq!((k, l.status), (l2_only(&k), ParseStatus::Truncated));
    }

    #[test]
    fn ipv6_fields_and_extension_headers() {
        let mut s = [0u8; 16];
        s[0] = 0x20;
        s[15] = 1;
        let mut d = s;
        d[15] = 2;
        let f = FrameBuilder::new()
            .ipv6(s, d)
            .tos(0xfe)
            .ttl(3)
            .flow_label(0xabcde)
            .ipv6_ext(0)
            .ipv6_ext(43)
            .ipv6_ext(51)
            .ipv6_ext(60)
            .udp(7, 8)
            .build();
        let (k, l) = run(&f);
        assert_eq!(
            l,
            Layout {
                l3: 14,
                l4: 14 + 40 + 8 + 8 + 16 + 8,
                status: ParseStatus::Ok
            }
        );
        assert_eq!((k.ipv6_src, k.ipv6_dst, k.ipv6_label), (s, d, 0xabcde));
        assert_eq!(
            (k.nw_tos, k.nw_ttl, k.nw_proto, k.tp_src, k.tp_dst),
            (0xfe, 3, 17, 7, 8)
        );
        // Cut inside the AH header: addresses kept (as OVS), proto/ttl not.
        let (k, l) = run(&f[..14 + 40 + 16 + 10]);
        assert_eq!(l.status, ParseStatus::Truncated);
        assert_eq!(
            (k.ipv6_src, k.nw_proto, k.nw_ttl),
            ([0; 16], 0, 0),
            "payload length exceeds the frame"
        );
        let mut cut = f.clone();
        cut[18..20].copy_from_slice(&26u16.to_be_bytes()); // payload ends inside the AH header
        let (k, l) = run(&cut);
        assert_eq!(l.status, ParseStatus::Truncated);
        assert_eq!(
            (k.ipv6_src, k.nw_proto, k.nw_ttl, l.l4),
            (s, 0, 0, NO_OFFSET)
        );
        let first = FrameBuilder::new()
            .ipv6(s, d)
            .frag(0, true)
            .tcp(1, 2, 0)
            .build();
        let (k, _) = run(&first);
        assert_eq!((k.nw_frag, k.nw_proto, k.tp_dst), (FRAG_ANY, 6, 2));
        let later = FrameBuilder::new()
            .ipv6(s, d)
            .frag(9, true)
            .tcp(1, 2, 0)
            .build();
        let (k, l) = run(&later);
        assert_eq!(
            (k.nw_frag, k.nw_proto, k.tp_dst),
            (FRAG_ANY | FRAG_LATER, 44, 0)
        );
        assert_eq!(l.l4, 14 + 48);
        let mut v4 = first;
        v4[14] = 0x40;
        assert_eq!(run(&v4).1.status, ParseStatus::Malformed);
    }

    #[test]
    fn short_frames_and_vlan_cut() {
        for n in 0..14 {
            let (k, l) = run(&[0xab; 14][..n]);
            assert_eq!(l.status, ParseStatus::Truncated);
            assert_eq!((l.l3, l.l4), (NO_OFFSET, NO_OFFSET));
            let mut e = FlowKey::ZERO;
            e.in_port = 7;
            assert_eq!(k, e);
        }
        let f = FrameBuilder::new()
            .vlan(5, 0)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .build();
        let (k, l) = run(&f[..16]);
        assert_eq!(
            (k.dl_type, k.vlan_tci, l.status, l.l3),
            (0x8100, 0, ParseStatus::Truncated, NO_OFFSET)
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    }

    #[test]
    fn sctp_ports_from_real_frames() {
        // Built with scapy: IPv4 SCTP INIT 10.0.0.1:5000 -> 10.0.0.2:80
        // (verification tag 0, CRC32c set), and IPv6 SCTP DATA
        // [2001:db8::1]:36412 -> [2001:db8::2]:38412 (S1AP/NGAP ports).
        // RFC 9260 §3.1: source and destination port are the first two
        // 16-bit words of the 12-byte common header.
        let v4 = unhex(concat!(
            "0200000000bb0200000000aa08004500003400010000408466430a0000010a000002",
            "138800500000000011e9891901000014112233440000ffff000a000a00000001"
        ));
        let (k, l) = run(&v4);
        assert_eq!(l.status, ParseStatus::Ok);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (ipproto::SCTP, 5000, 80));
        assert_eq!((k.tcp_flags, l.l4), (0, 34));
        let v6 = unhex(concat!(
            "0200000000bb0200000000aa86dd600000000020844020010db80000000000000000",
            "0000000120010db80000000000000000000000028e3c960c010203046a824b150000",
            "001400000007000000000000002e70696e67"
        ));
        let (k, l) = run(&v6);
        assert_eq!(l.status, ParseStatus::Ok);
        assert_eq!(
            (k.nw_proto, k.tp_src, k.tp_dst),
            (ipproto::SCTP, 36412, 38412)
        );
        // A common header cut short (11 of its 12 bytes): truncated, no ports.
        let mut short = v4[..34 + 11].to_vec();
        short[16..18].copy_from_slice(&31u16.to_be_bytes()); // 20 + 11
        let (k, l) = run(&short);
        assert_eq!(l.status, ParseStatus::Truncated);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (ipproto::SCTP, 0, 0));
    }

    #[test]
    fn fuzz_entry_handles_odd_inputs() {
        fuzz_extract(&[]);
        fuzz_extract(&[0x81; 100]);
        fuzz_extract(&[0x88; 3]);
        let mut f = FrameBuilder::new()
            .ipv6([1; 16], [2; 16])
            .ipv6_ext(0)
            .udp(1, 2)
            .build();
        f[55] = 0xff; // hop-by-hop length 255: 2048 bytes
        fuzz_extract(&f);
        assert_eq!(run(&f).1.status, ParseStatus::Truncated);
    }
}
