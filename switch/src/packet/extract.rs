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
//! - ICMPv6 neighbour discovery options (OVS's nd_target/nd_sll/nd_tll) are
//!   not extracted: the key has no nd_target field.
//! - `Layout.l3` is set once the Ethernet header (and tags, and SNAP) is
//!   complete, as OVS's l3_ofs; `Layout.l4` once the IP header (and IPv6
//!   extension headers) is complete, even when the L4 header is short.

use crate::flow::key::{ethertype, FlowKey, FRAG_ANY, FRAG_LATER, VLAN_CFI};
use crate::flow::PortNo;

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

#[inline(always)]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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
    *key = FlowKey::ZERO;
    key.in_port = in_port;
    let mut lay = Layout {
        l3: NO_OFFSET,
        l4: NO_OFFSET,
        status: ParseStatus::Ok,
    };

    // L2: IEEE 802.3 / Ethernet II.
    let Some(eth) = chunk::<14>(frame, 0) else {
        lay.status = ParseStatus::Truncated;
        return lay;
    };
    key.dl_dst.copy_from_slice(&eth[0..6]);
    key.dl_src.copy_from_slice(&eth[6..12]);
    let mut ty = rd16(eth, 12);
    let mut l3 = 14usize;

    // 802.1Q / 802.1ad: up to two tags (OVS's flow_vlan_limit default).
    if ty == ethertype::VLAN || ty == ethertype::QINQ {
        let Some(tag) = chunk::<4>(frame, 14) else {
            key.dl_type = ty;
            lay.status = ParseStatus::Truncated;
            return lay;
        };
        key.vlan_tci = rd16(tag, 0) | VLAN_CFI;
        ty = rd16(tag, 2);
        l3 = 18;
        if ty == ethertype::VLAN || ty == ethertype::QINQ {
            let Some(tag) = chunk::<4>(frame, 18) else {
                key.dl_type = ty;
                lay.status = ParseStatus::Truncated;
                return lay;
            };
            ty = rd16(tag, 2);
            l3 = 22;
        }
    }

    // 802.3 length field: LLC/SNAP (IEEE 802 §10.5 with the Ethernet OUI).
    if ty < ETH_TYPE_MIN {
        ty = DL_TYPE_NONE;
        if let Some(llc) = chunk::<8>(frame, l3) {
            let snap_type = rd16(llc, 6);
            if llc[..6] == [0xaa, 0xaa, 0x03, 0, 0, 0] && snap_type >= ETH_TYPE_MIN {
                ty = snap_type;
                l3 += 8;
            }
        }
    }
    key.dl_type = ty;
    lay.l3 = ofs(l3);

    match ty {
        ethertype::IPV4 => extract_ipv4(frame, l3, key, &mut lay),
        ethertype::IPV6 => extract_ipv6(frame, l3, key, &mut lay),
        ethertype::ARP | ETH_TYPE_RARP => extract_arp(frame, l3, key, &mut lay),
        _ => {}
    }
    lay
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
    let tot = usize::from(rd16(ip, 2));
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
    key.nw_src = rd32(ip, 12);
    key.nw_dst = rd32(ip, 16);
    let frag = rd16(ip, 6);
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
    let plen = usize::from(rd16(ip, 4));
    let start = l3 + 40;
    let Some(payload) = frame.get(start..start + plen) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    key.ipv6_src.copy_from_slice(&ip[8..24]);
    key.ipv6_dst.copy_from_slice(&ip[24..40]);
    let vtf = rd32(ip, 0);
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
                let offlg = rd16(h, 2);
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
            key.tp_src = rd16(tcp, 0);
            key.tp_dst = rd16(tcp, 2);
            key.tcp_flags = rd16(tcp, 12) & 0x0fff;
        }
        // RFC 768; SCTP (132, RFC 9260 §3.1) shares the port layout.
        17 | 132 => {
            let need = if key.nw_proto == 17 { 8 } else { 12 };
            let Some(h) = l4.get(..need).and_then(|h| h.first_chunk::<4>()) else {
                lay.status = ParseStatus::Truncated;
                return;
            };
            key.tp_src = rd16(h, 0);
            key.tp_dst = rd16(h, 2);
        }
        // ICMP (RFC 792), IGMP (RFC 2236), ICMPv6 (RFC 4443): 8-byte header.
        1 | 2 | 58 => {
            let Some(h) = chunk::<8>(l4, 0) else {
                lay.status = ParseStatus::Truncated;
                return;
            };
            key.tp_src = u16::from(h[0]);
            key.tp_dst = u16::from(h[1]);
        }
        _ => {}
    }
}

/// RFC 826, Ethernet/IPv4 only.
#[inline(always)]
fn extract_arp(frame: &[u8], l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(arp) = chunk::<28>(frame, l3) else {
        lay.status = ParseStatus::Truncated;
        return;
    };
    if rd16(arp, 0) != 1 || rd16(arp, 2) != ethertype::IPV4 || arp[4] != 6 || arp[5] != 4 {
        return;
    }
    let op = rd16(arp, 6);
    if op <= 0xff {
        key.nw_proto = op as u8;
    }
    key.arp_sha.copy_from_slice(&arp[8..14]);
    key.nw_src = rd32(arp, 14);
    key.arp_tha.copy_from_slice(&arp[18..24]);
    key.nw_dst = rd32(arp, 24);
}

/// Fuzz entry point: extract arbitrary bytes and check the layout's
/// invariants. Must never panic for any input (the invariants hold by
/// construction; a panic here is a bug in `extract`).
pub fn fuzz_extract(data: &[u8]) {
    let mut key = FlowKey::ZERO;
    let lay = extract(data, 1, &mut key);
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
