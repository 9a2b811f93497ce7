//! `FlowKey`: every header field the pipeline can match on, in one fixed-size,
//! padding-free, 8-byte aligned struct.
//!
//! Data enters through packet extraction (`packet::extract`) and through the
//! pipeline's own writes (registers, metadata, tunnel fields, set_field). The
//! same struct doubles as a *mask* (`FlowMask`): a set bit means "this bit of
//! the key matters". Because the struct is `Pod`, the classifier and the
//! datapath caches see it as `[u64; KEY_WORDS]` and hash/compare it word by
//! word, touching only the words a mask selects (OVS's miniflow idea without
//! the compression).
//!
//! Representation rules (they matter for masks and prefixes):
//! - integers (`u16`, `u32`, `u64`) hold the numeric value in host order
//!   (`nw_dst` of 10.0.0.1 is `0x0a00_0001`), so `/24` is `0xffff_ff00`;
//! - MAC addresses, IPv6 addresses and `ct_label` are network-order bytes;
//! - fields OVS overlays are overlaid the same way: ARP op in `nw_proto`,
//!   ARP spa/tpa in `nw_src`/`nw_dst`, ICMP type/code in `tp_src`/`tp_dst`;
//!   for IPv6 neighbour discovery (RFC 4861 §4.3/4.4) the source/target
//!   link-layer addresses in `arp_sha`/`arp_tha` and the link-layer option's
//!   type in `tcp_flags`, as OVS's `struct flow` does; the NS/NA reserved
//!   (R/S/O flags) word, which OVS keeps in its IPv4-only `igmp_group_ip4`,
//!   in `nw_src` (IPv4-only here too); only the ND target has its own slot;
//! - `vlan_tci` carries `VLAN_CFI` (0x1000) when the frame has an 802.1Q tag,
//!   like OVS, so "no tag" (`vlan_tci=0`) and "tag with vid 0" differ.
//!
//! Hot fields (in_port, L2, L3, L4) sit in the first 48 bytes so that the
//! common IPv4 mask touches one cache line.

use bytemuck::{Pod, Zeroable};

/// Number of 64-bit words in a [`FlowKey`].
pub const KEY_WORDS: usize = 24;

/// `vlan_tci` bit set when the frame carries an 802.1Q/802.1ad tag.
pub const VLAN_CFI: u16 = 0x1000;
/// VLAN id bits of `vlan_tci`.
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// Priority code point bits of `vlan_tci`.
pub const VLAN_PCP_MASK: u16 = 0xe000;
/// Shift of the PCP within `vlan_tci`.
pub const VLAN_PCP_SHIFT: u16 = 13;

/// `nw_frag` bit: the packet is a fragment (first or later).
pub const FRAG_ANY: u8 = 0x01;
/// `nw_frag` bit: the packet is a non-first fragment (no L4 header).
pub const FRAG_LATER: u8 = 0x02;

/// `ct_state` bits, with OVS's values (lib/packets.h `CS_*`).
pub mod ct_state {
    /// Start of a new connection.
    pub const NEW: u32 = 0x01;
    /// Part of an established connection.
    pub const EST: u32 = 0x02;
    /// Related to an established connection (e.g. an ICMP error).
    pub const REL: u32 = 0x04;
    /// In the reply direction.
    pub const RPL: u32 = 0x08;
    /// Invalid (could not be tracked, or failed a state check).
    pub const INV: u32 = 0x10;
    /// Went through conntrack.
    pub const TRK: u32 = 0x20;
    /// Source NAT applied.
    pub const SNAT: u32 = 0x40;
    /// Destination NAT applied.
    pub const DNAT: u32 = 0x80;
}

/// Well-known ethertypes (host order).
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol numbers (`nw_proto`).
pub mod ipproto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP (RFC 9260).
    pub const SCTP: u8 = 132;
}

/// IPv6 neighbour discovery constants (RFC 4861).
pub mod nd {
    /// ICMPv6 type of a neighbour solicitation (§4.3).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// ICMPv6 type of a neighbour advertisement (§4.4).
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Option type: source link-layer address (§4.6.1).
    pub const OPT_SOURCE_LINKADDR: u8 = 1;
    /// Option type: target link-layer address (§4.6.1).
    pub const OPT_TARGET_LINKADDR: u8 = 2;
    /// NA flag word (`nd_reserved`): the sender is a router (R).
    pub const NA_ROUTER: u32 = 0x8000_0000;
    /// NA flag word: sent in response to a solicitation (S).
    pub const NA_SOLICITED: u32 = 0x4000_0000;
    /// NA flag word: override an existing cache entry (O).
    pub const NA_OVERRIDE: u32 = 0x2000_0000;
}

/// The match fields of one packet (or, used as a mask, which bits matter).
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Pod, Zeroable)]
pub struct FlowKey {
    // w0
    /// OpenFlow ingress port number.
    pub in_port: u32,
    /// Connection-tracking state bits (`ct_state::*`).
    pub ct_state: u32,
    // w1, w2
    /// Ethernet destination.
    pub dl_dst: [u8; 6],
    /// Ethernet source.
    pub dl_src: [u8; 6],
    /// Ethertype after any VLAN tags (host order); 0x05ff for 802.3 frames without SNAP type.
    pub dl_type: u16,
    /// Outer VLAN TCI with `VLAN_CFI` set when tagged; 0 when untagged.
    pub vlan_tci: u16,
    // w3
    /// IPv4 source, ARP sender protocol address, or the ICMPv6 ND
    /// reserved word (NA R/S/O flags, OVS's `nd_reserved`).
    pub nw_src: u32,
    /// IPv4 destination, or ARP target protocol address.
    pub nw_dst: u32,
    // w4
    /// IP protocol / IPv6 next header after extension headers, or ARP opcode (low 8 bits).
    pub nw_proto: u8,
    /// IPv4 TOS / IPv6 traffic class byte (DSCP in the upper 6 bits, ECN in the lower 2).
    pub nw_tos: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub nw_ttl: u8,
    /// Fragment bits (`FRAG_ANY`, `FRAG_LATER`).
    pub nw_frag: u8,
    /// TCP/UDP source port, or ICMP type.
    pub tp_src: u16,
    /// TCP/UDP destination port, or ICMP code.
    pub tp_dst: u16,
    // w5
    /// TCP flags (12 bits), or the ICMPv6 ND link-layer option type
    /// (OVS's `nd_options_type`).
    pub tcp_flags: u16,
    /// Conntrack zone.
    pub ct_zone: u16,
    /// Conntrack mark.
    pub ct_mark: u32,
    // w6
    /// Tunnel id (VXLAN VNI).
    pub tun_id: u64,
    // w7
    /// Outer IPv4 source of the tunnel the packet arrived on.
    pub tun_src: u32,
    /// Outer IPv4 destination of the tunnel.
    pub tun_dst: u32,
    // w8
    /// OpenFlow metadata register.
    pub metadata: u64,
    // w9..w12
    /// Nicira registers reg0..reg7.
    pub regs: [u32; 8],
    // w13, w14
    /// ARP sender hardware address, or the ND source link-layer address (`nd_sll`).
    pub arp_sha: [u8; 6],
    /// ARP target hardware address, or the ND target link-layer address (`nd_tll`).
    pub arp_tha: [u8; 6],
    /// IPv6 flow label (20 bits).
    pub ipv6_label: u32,
    // w15..w18
    /// IPv6 source address.
    pub ipv6_src: [u8; 16],
    /// IPv6 destination address.
    pub ipv6_dst: [u8; 16],
    // w19, w20
    /// Conntrack label (128 bits, network order).
    pub ct_label: [u8; 16],
    // w21, w22
    /// IPv6 neighbour discovery target address (NS/NA, RFC 4861 §4.3).
    pub nd_target: [u8; 16],
    // w23
    /// Recirculation id (OVS's datapath `recirc_id`): 0 for a packet fresh
    /// from a port; `T + 1` for a packet that `ct(table=T)` recirculated, so
    /// the slow path resumes it in table T (see `datapath` and
    /// docs/architecture.md "Connection tracking"). Not an OpenFlow field.
    pub recirc_id: u32,
    /// Unused; always 0 (keeps the struct free of padding).
    pub pad0: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == KEY_WORDS * 8);

/// A [`FlowKey`] used as a wildcard mask: a 1 bit means "this bit matters".
pub type FlowMask = FlowKey;

impl FlowKey {
    /// All-zero key (also: the mask that matches everything).
    pub const ZERO: FlowKey = FlowKey {
        in_port: 0,
        ct_state: 0,
        dl_dst: [0; 6],
        dl_src: [0; 6],
        dl_type: 0,
        vlan_tci: 0,
        nw_src: 0,
        nw_dst: 0,
        nw_proto: 0,
        nw_tos: 0,
        nw_ttl: 0,
        nw_frag: 0,
        tp_src: 0,
        tp_dst: 0,
        tcp_flags: 0,
        ct_zone: 0,
        ct_mark: 0,
        tun_id: 0,
        tun_src: 0,
        tun_dst: 0,
        metadata: 0,
        regs: [0; 8],
        arp_sha: [0; 6],
        arp_tha: [0; 6],
        ipv6_label: 0,
        ipv6_src: [0; 16],
        ipv6_dst: [0; 16],
        ct_label: [0; 16],
        nd_target: [0; 16],
        recirc_id: 0,
        pad0: 0,
    };

    /// The key as 64-bit words (for hashing and masked comparison).
    #[inline(always)]
    pub fn words(&self) -> &[u64; KEY_WORDS] {
        bytemuck::cast_ref(self)
    }

    /// The key as mutable 64-bit words.
    #[inline(always)]
    pub fn words_mut(&mut self) -> &mut [u64; KEY_WORDS] {
        bytemuck::cast_mut(self)
    }

    /// The key as bytes (native layout).
    #[inline(always)]
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// The key as mutable bytes (native layout).
    #[inline(always)]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::bytes_of_mut(self)
    }

    /// A mask with every bit set (exact match on everything).
    pub fn all_ones() -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.words_mut().iter_mut().for_each(|w| *w = u64::MAX);
        k
    }

    /// `self & mask`, word by word.
    #[inline]
    pub fn masked(&self, mask: &FlowMask) -> FlowKey {
        let mut out = *self;
        for (o, m) in out.words_mut().iter_mut().zip(mask.words()) {
            *o &= m;
        }
        out
    }

    /// `self |= other`, word by word (accumulating wildcard masks).
    #[inline]
    pub fn or_assign(&mut self, other: &FlowKey) {
        for (o, m) in self.words_mut().iter_mut().zip(other.words()) {
            *o |= m;
        }
    }

    /// True when every bit is zero.
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.words().iter().all(|w| *w == 0)
    }

    /// Bitmap of the words that are non-zero (bit i = word i). For a mask this is
    /// the set of words a lookup has to touch.
    #[inline]
    pub fn nonzero_words(&self) -> u32 {
        let mut map = 0u32;
        for (i, w) in self.words().iter().enumerate() {
            if *w != 0 {
                map |= 1 << i;
            }
        }
        map
    }
}

/// Hash of `key & mask` over the words in `map` (a [`FlowKey::nonzero_words`]
/// bitmap of `mask`). FxHash-style multiply/rotate: about 1 ns per word, and
/// the classifier, the megaflow cache and the exact-match cache all use it.
#[inline(always)]
pub fn masked_hash(key: &FlowKey, mask: &FlowMask, map: u32) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let kw = key.words();
    let mw = mask.words();
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut m = map;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        h = (h.rotate_left(26) ^ (kw[i] & mw[i])).wrapping_mul(K);
    }
    h ^ (h >> 32)
}

/// True when `key & mask == value` over the words in `map`
/// (`value` must already be masked).
#[inline(always)]
pub fn masked_eq(key: &FlowKey, mask: &FlowMask, value: &FlowKey, map: u32) -> bool {
    let kw = key.words();
    let mw = mask.words();
    let vw = value.words();
    let mut m = map;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        if kw[i] & mw[i] != vw[i] {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_ops_agree() {
        let mut k = FlowKey::ZERO;
        k.nw_dst = 0x0a01_0203;
        k.in_port = 7;
        let mut m = FlowKey::ZERO;
        m.nw_dst = 0xffff_ff00;
        let v = k.masked(&m);
        assert_eq!(v.nw_dst, 0x0a01_0200);
        assert_eq!(v.in_port, 0);
        let map = m.nonzero_words();
        assert_eq!(map.count_ones(), 1);
        assert!(masked_eq(&k, &m, &v, map));
        let mut k2 = k;
        k2.nw_dst = 0x0a01_02ff;
        k2.in_port = 9;
        assert!(masked_eq(&k2, &m, &v, map));
        assert_eq!(masked_hash(&k, &m, map), masked_hash(&k2, &m, map));
        k2.nw_dst = 0x0a01_0300;
        assert!(!masked_eq(&k2, &m, &v, map));
    }
}
