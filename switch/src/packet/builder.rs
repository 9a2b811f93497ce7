//! `FrameBuilder`: correct Ethernet frames in one line, for tests, the
//! switchd demo, benchmarks and the slow path.
//!
//! Data enters as typed header values through chained calls and leaves as a
//! `Vec<u8>` (or a [`Packet`]) with every length field and checksum filled
//! (IPv4 header checksum RFC 791 §3.1, TCP/UDP/ICMPv6 pseudo-header checksums
//! RFC 9293 §3.1 / RFC 768 / RFC 8200 §8.1, ICMPv4 RFC 792) and padded to the
//! 60-byte Ethernet minimum (IEEE 802.3 §4.2.3.3, FCS excluded). It allocates
//! and is therefore never used per packet on the hot path.
//!
//! ```
//! use switch::packet::builder::FrameBuilder;
//! use switch::packet::tcp::flags;
//! let mac_a = [2, 0, 0, 0, 0, 1];
//! let mac_b = [2, 0, 0, 0, 0, 2];
//! // UDP over IPv4 in VLAN 10
//! let f = FrameBuilder::new()
//!     .eth(mac_a, mac_b)
//!     .vlan(10, 0)
//!     .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
//!     .ttl(64)
//!     .udp(1234, 53)
//!     .payload(b"hello")
//!     .build();
//! assert_eq!(f.len(), 60); // 14 + 4 + 20 + 8 + 5 = 51, padded to the 60-byte minimum
//! // TCP SYN over IPv6
//! let mut v6 = [0u8; 16];
//! v6[15] = 1;
//! let f = FrameBuilder::new().ipv6(v6, v6).tcp(4000, 80, flags::SYN).build();
//! assert_eq!(f.len(), 14 + 40 + 20);
//! // ARP request, VXLAN-encapsulated
//! let inner = FrameBuilder::new()
//!     .eth(mac_a, [0xff; 6])
//!     .arp_request(mac_a, [10, 0, 0, 1], [10, 0, 0, 2])
//!     .build();
//! let outer = FrameBuilder::new()
//!     .ipv4([192, 168, 0, 1], [192, 168, 0, 2])
//!     .vxlan(5000, &inner)
//!     .build();
//! assert_eq!(outer.len(), 14 + 20 + 8 + 8 + inner.len());
//! ```
//!
//! Rules, so the result is never surprising:
//! - Call order among modifiers does not matter (`.ttl(5).ipv4(..)` works);
//!   the last call of a kind wins (`.ipv4` after `.ipv6` makes an IPv4 frame).
//! - Defaults: source MAC 02:00:00:00:00:01, destination 02:00:00:00:00:02,
//!   TTL/hop limit 64, TOS 0, IPv4 id 0, no DF, no fragmentation, no payload.
//! - `.vlan()` called twice makes a QinQ frame: the first call is the outer
//!   tag (TPID 0x88a8, 802.1ad), the second the inner (0x8100).
//!   `.vlan_tpid()` sets the TPID explicitly.
//! - `.icmp_echo()` is ICMPv4 echo request over IPv4 and ICMPv6 echo request
//!   (type 128) over IPv6.
//! - `.frag(offset, more)` on IPv6 inserts a fragment header (RFC 8200 §4.5)
//!   after any other extension headers.
//! - Nothing is validated beyond what the wire format can carry: a builder is
//!   also how tests make odd (but well-checksummed) frames.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::buf::Packet;
use super::checksum;
use super::ip::PseudoHeader as Pseudo;

/// Default source MAC when `.eth()` is not called.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC when `.eth()` is not called.
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Minimum Ethernet frame length without the FCS.
pub const MIN_FRAME_LEN: usize = 60;
/// The IANA VXLAN UDP port (RFC 7348 §5).
pub const VXLAN_PORT: u16 = 4789;

#[derive(Clone, Debug)]
enum L3 {
    None,
    EtherType(u16),
    Ipv4 {
        src: [u8; 4],
        dst: [u8; 4],
    },
    Ipv6 {
        src: [u8; 16],
        dst: [u8; 16],
    },
    Arp {
        op: u16,
        sha: [u8; 6],
        spa: [u8; 4],
        tha: [u8; 6],
        tpa: [u8; 4],
    },
}

#[derive(Clone, Debug)]
enum L4 {
    None,
    Udp {
        src: u16,
        dst: u16,
    },
    Tcp {
        src: u16,
        dst: u16,
        flags: u16,
    },
    /// ICMPv4 or ICMPv6 (chosen by L3): type, code, 4 bytes of "rest of header".
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
        /// Echo request: type chosen by L3 (8 for v4, 128 for v6).
        echo: bool,
    },
    Vxlan {
        vni: u32,
        src: Option<u16>,
        inner: Vec<u8>,
    },
    Proto(u8),
}

/// Builds one Ethernet frame. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    src: [u8; 6],
    dst: [u8; 6],
    tags: Vec<(Option<u16>, u16)>,
    l3: L3,
    l4: L4,
    ttl: u8,
    tos: u8,
    ip_id: u16,
    df: bool,
    frag_offset: u16,
    more_frags: bool,
    ipv4_options: Vec<u8>,
    flow_label: u32,
    ipv6_ext: Vec<u8>,
    tcp_seq: u32,
    tcp_ack: u32,
    tcp_window: u16,
    payload: Vec<u8>,
    pad: bool,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        FrameBuilder::new()
    }
}

impl FrameBuilder {
    /// A builder for an Ethernet frame with default addresses and nothing above L2.
    pub fn new() -> FrameBuilder {
        FrameBuilder {
            src: DEFAULT_SRC_MAC,
            dst: DEFAULT_DST_MAC,
            tags: Vec::new(),
            l3: L3::None,
            l4: L4::None,
            ttl: 64,
            tos: 0,
            ip_id: 0,
            df: false,
            frag_offset: 0,
            more_frags: false,
            ipv4_options: Vec::new(),
            flow_label: 0,
            ipv6_ext: Vec::new(),
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_window: 65535,
            payload: Vec::new(),
            pad: true,
        }
    }

    /// Ethernet source and destination addresses.
    pub fn eth(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src = src;
        self.dst = dst;
        self
    }

    /// Add a VLAN tag with 12-bit `vid` and 3-bit `pcp` (higher bits are
    /// masked off). The first call is the outermost tag. With one tag the TPID
    /// is 0x8100; with two or more the outermost is 0x88a8 (802.1ad QinQ) and
    /// the rest 0x8100.
    pub fn vlan(mut self, vid: u16, pcp: u8) -> Self {
        self.tags.push((None, tci(vid, pcp)));
        self
    }

    /// Add a VLAN tag with an explicit TPID (0x8100, 0x88a8, or anything).
    pub fn vlan_tpid(mut self, tpid: u16, vid: u16, pcp: u8) -> Self {
        self.tags.push((Some(tpid), tci(vid, pcp)));
        self
    }

    /// A raw ethertype with no L3 header built; the payload follows the
    /// Ethernet (and VLAN) header directly.
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.l3 = L3::EtherType(ethertype);
        self
    }

    /// An IPv4 header (RFC 791), 20 bytes plus [`Self::ipv4_options`].
    pub fn ipv4(mut self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Self {
        self.l3 = L3::Ipv4 {
            src: src.into().octets(),
            dst: dst.into().octets(),
        };
        self
    }

    /// An IPv6 header (RFC 8200), 40 bytes plus [`Self::ipv6_ext`] headers.
    pub fn ipv6(mut self, src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Self {
        self.l3 = L3::Ipv6 {
            src: src.into().octets(),
            dst: dst.into().octets(),
        };
        self
    }

    /// IPv4 TTL or IPv6 hop limit (default 64).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 TOS byte or IPv6 traffic class (DSCP << 2 | ECN).
    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    /// IPv4 identification, also the IPv6 fragment header's identification.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.ip_id = id;
        self
    }

    /// Set the IPv4 don't-fragment bit.
    pub fn dont_frag(mut self) -> Self {
        self.df = true;
        self
    }

    /// Mark the packet as a fragment: `offset` in 8-byte units (13 bits),
    /// `more` = MF. IPv4 puts it in the header; IPv6 adds a fragment header.
    pub fn frag(mut self, offset: u16, more: bool) -> Self {
        self.frag_offset = offset & 0x1fff;
        self.more_frags = more;
        self
    }

    /// Raw IPv4 options (RFC 791 §3.1), padded with end-of-list zeros to a
    /// 4-byte boundary; at most 40 bytes are kept.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options[..options.len().min(40)].to_vec();
        while !self.ipv4_options.len().is_multiple_of(4) {
            self.ipv4_options.push(0);
        }
        self
    }

    /// IPv6 flow label (20 bits).
    pub fn flow_label(mut self, label: u32) -> Self {
        self.flow_label = label & 0xf_ffff;
        self
    }

    /// Append a minimal IPv6 extension header of kind `next_header`:
    /// 0 (hop-by-hop) and 60 (destination options): 8 bytes with a PadN
    /// option; 43 (routing): 8 bytes, type 253 (experimental), segments left 0;
    /// 51 (AH, RFC 4302): 16 bytes with a 4-byte ICV. Other values are emitted
    /// as an 8-byte header in the generic RFC 8200 §4 layout. Call several
    /// times for a chain, in order.
    pub fn ipv6_ext(mut self, next_header: u8) -> Self {
        self.ipv6_ext.push(next_header);
        self
    }

    /// A UDP header (RFC 768).
    pub fn udp(mut self, src: u16, dst: u16) -> Self {
        self.l4 = L4::Udp { src, dst };
        self
    }

    /// A 20-byte TCP header (RFC 9293) with `flags` from [`super::tcp::flags`]
    /// (12 bits), window 65535, seq/ack from [`Self::tcp_seq`].
    pub fn tcp(mut self, src: u16, dst: u16, flags: u16) -> Self {
        self.l4 = L4::Tcp {
            src,
            dst,
            flags: flags & 0x0fff,
        };
        self
    }

    /// TCP sequence and acknowledgment numbers.
    pub fn tcp_seq(mut self, seq: u32, ack: u32) -> Self {
        self.tcp_seq = seq;
        self.tcp_ack = ack;
        self
    }

    /// TCP window.
    pub fn tcp_window(mut self, window: u16) -> Self {
        self.tcp_window = window;
        self
    }

    /// An echo request: ICMPv4 type 8 over IPv4, ICMPv6 type 128 over IPv6.
    pub fn icmp_echo(mut self, id: u16, seq: u16) -> Self {
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        self.l4 = L4::Icmp {
            ty: 0,
            code: 0,
            rest,
            echo: true,
        };
        self
    }

    /// Any ICMP message: ICMPv4 over IPv4, ICMPv6 over IPv6. The 4 bytes after
    /// the checksum are zero; put the rest in the payload.
    pub fn icmp(mut self, ty: u8, code: u8) -> Self {
        self.l4 = L4::Icmp {
            ty,
            code,
            rest: [0; 4],
            echo: false,
        };
        self
    }

    /// An ICMPv6 neighbour solicitation (type 135) or advertisement (136),
    /// RFC 4861 §4.3/4.4: `reserved` is the flag word (NA: R/S/O in the top
    /// bits), then the target, then `options` as given (§4.6; e.g. `[1, 1,
    /// mac...]` for a source link-layer address). Needs `.ipv6()`; the
    /// checksum covers the pseudo-header.
    pub fn nd(
        mut self,
        ty: u8,
        reserved: u32,
        target: impl Into<Ipv6Addr>,
        options: &[u8],
    ) -> Self {
        self.l4 = L4::Icmp {
            ty,
            code: 0,
            rest: reserved.to_be_bytes(),
            echo: false,
        };
        self.payload = target.into().octets().to_vec();
        self.payload.extend_from_slice(options);
        self
    }

    /// An L4 protocol number with no header built: the payload is the L4 data.
    pub fn ip_proto(mut self, proto: u8) -> Self {
        self.l4 = L4::Proto(proto);
        self
    }

    /// VXLAN (RFC 7348 §5): UDP to port 4789 carrying an 8-byte VXLAN header
    /// (I flag, 24-bit `vni`) and `inner`, a complete Ethernet frame (usually
    /// from another `FrameBuilder`). The UDP source port is a hash of the
    /// inner frame's first 34 bytes in 49152..=65535, as RFC 7348 §5
    /// recommends, unless [`Self::vxlan_src_port`] sets it. Needs `.ipv4()`
    /// or `.ipv6()` for the outer header.
    pub fn vxlan(mut self, vni: u32, inner: &[u8]) -> Self {
        self.l4 = L4::Vxlan {
            vni: vni & 0x00ff_ffff,
            src: None,
            inner: inner.to_vec(),
        };
        self
    }

    /// Fix the outer UDP source port of a `.vxlan()` frame (call after it).
    pub fn vxlan_src_port(mut self, port: u16) -> Self {
        if let L4::Vxlan { src, .. } = &mut self.l4 {
            *src = Some(port);
        }
        self
    }

    /// ARP request (RFC 826, Ethernet/IPv4): opcode 1, target hardware address zero.
    pub fn arp_request(
        mut self,
        sha: [u8; 6],
        spa: impl Into<Ipv4Addr>,
        tpa: impl Into<Ipv4Addr>,
    ) -> Self {
        self.l3 = L3::Arp {
            op: 1,
            sha,
            spa: spa.into().octets(),
            tha: [0; 6],
            tpa: tpa.into().octets(),
        };
        self
    }

    /// ARP reply (RFC 826, Ethernet/IPv4): opcode 2.
    pub fn arp_reply(
        mut self,
        sha: [u8; 6],
        spa: impl Into<Ipv4Addr>,
        tha: [u8; 6],
        tpa: impl Into<Ipv4Addr>,
    ) -> Self {
        self.l3 = L3::Arp {
            op: 2,
            sha,
            spa: spa.into().octets(),
            tha,
            tpa: tpa.into().octets(),
        };
        self
    }

    /// ARP with any opcode (Ethernet/IPv4 addresses).
    pub fn arp(
        mut self,
        op: u16,
        sha: [u8; 6],
        spa: impl Into<Ipv4Addr>,
        tha: [u8; 6],
        tpa: impl Into<Ipv4Addr>,
    ) -> Self {
        self.l3 = L3::Arp {
            op,
            sha,
            spa: spa.into().octets(),
            tha,
            tpa: tpa.into().octets(),
        };
        self
    }

    /// Data after the innermost header built (replaces any earlier payload).
    pub fn payload(mut self, data: &[u8]) -> Self {
        self.payload = data.to_vec();
        self
    }

    /// Do not pad the frame to 60 bytes (e.g. for a frame to be embedded or
    /// to test exact lengths).
    pub fn no_padding(mut self) -> Self {
        self.pad = false;
        self
    }

    /// The frame, padded with zeros to 60 bytes unless [`Self::no_padding`].
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.payload.len());
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        let ntags = self.tags.len();
        for (i, (tpid, tci)) in self.tags.iter().enumerate() {
            let tpid = tpid.unwrap_or(if ntags > 1 && i == 0 { 0x88a8 } else { 0x8100 });
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
            // The ethertype of the tag's payload is written by the next
            // iteration's TPID or by the final ethertype below: the layout is
            // TPID TCI TPID TCI ... ETHERTYPE.
        }
        match &self.l3 {
            L3::None => {
                // No L3: an "experimental" ethertype so the frame is still valid.
                out.extend_from_slice(&0x88b5u16.to_be_bytes());
                out.extend_from_slice(&self.l4_bytes(None));
            }
            L3::EtherType(t) => {
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&self.l4_bytes(None));
            }
            L3::Arp {
                op,
                sha,
                spa,
                tha,
                tpa,
            } => {
                out.extend_from_slice(&0x0806u16.to_be_bytes());
                out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
                out.extend_from_slice(&op.to_be_bytes());
                out.extend_from_slice(sha);
                out.extend_from_slice(spa);
                out.extend_from_slice(tha);
                out.extend_from_slice(tpa);
                out.extend_from_slice(&self.payload);
            }
            L3::Ipv4 { src, dst } => {
                out.extend_from_slice(&0x0800u16.to_be_bytes());
                let ip = Pseudo::V4 {
                    src: *src,
                    dst: *dst,
                };
                let l4 = self.l4_bytes(Some(&ip));
                let hlen = 20 + self.ipv4_options.len();
                let total = (hlen + l4.len()).min(0xffff) as u16;
                let start = out.len();
                out.push(0x40 | (hlen / 4) as u8);
                out.push(self.tos);
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(&self.ip_id.to_be_bytes());
                let mut ff = self.frag_offset;
                if self.df {
                    ff |= 0x4000;
                }
                if self.more_frags {
                    ff |= 0x2000;
                }
                out.extend_from_slice(&ff.to_be_bytes());
                out.push(self.ttl);
                out.push(self.l4_proto(false));
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(src);
                out.extend_from_slice(dst);
                out.extend_from_slice(&self.ipv4_options);
                let c = checksum::checksum(&out[start..start + hlen]);
                out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&l4);
            }
            L3::Ipv6 { src, dst } => {
                out.extend_from_slice(&0x86ddu16.to_be_bytes());
                let ip = Pseudo::V6 {
                    src: *src,
                    dst: *dst,
                };
                let l4 = self.l4_bytes(Some(&ip));
                // Extension header chain, fragment header last.
                let mut kinds = self.ipv6_ext.clone();
                if self.frag_offset != 0 || self.more_frags {
                    kinds.push(44);
                }
                let mut ext = Vec::new();
                for (i, kind) in kinds.iter().enumerate() {
                    let next = kinds.get(i + 1).copied().unwrap_or(self.l4_proto(true));
                    ext.extend_from_slice(&self.ext_header(*kind, next));
                }
                let first = kinds.first().copied().unwrap_or(self.l4_proto(true));
                let plen = (ext.len() + l4.len()).min(0xffff) as u16;
                let vtf = (6u32 << 28) | (u32::from(self.tos) << 20) | self.flow_label;
                out.extend_from_slice(&vtf.to_be_bytes());
                out.extend_from_slice(&plen.to_be_bytes());
                out.push(first);
                out.push(self.ttl);
                out.extend_from_slice(src);
                out.extend_from_slice(dst);
                out.extend_from_slice(&ext);
                out.extend_from_slice(&l4);
            }
        }
        if self.pad && out.len() < MIN_FRAME_LEN {
            out.resize(MIN_FRAME_LEN, 0);
        }
        out
    }

    /// The frame in a [`Packet`] buffer; None when it exceeds `buf::MAX_FRAME`.
    pub fn build_packet(&self) -> Option<Packet> {
        Packet::from_slice(&self.build())
    }

    fn l4_proto(&self, v6: bool) -> u8 {
        match &self.l4 {
            L4::None => 59, // IPv6 "no next header"; also reserved-ish for v4 tests
            L4::Udp { .. } | L4::Vxlan { .. } => 17,
            L4::Tcp { .. } => 6,
            L4::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Proto(p) => *p,
        }
    }

    fn ext_header(&self, kind: u8, next: u8) -> Vec<u8> {
        match kind {
            // RFC 8200 §4.5 fragment header.
            44 => {
                let mut h = vec![next, 0];
                let om = (self.frag_offset << 3) | u16::from(self.more_frags);
                h.extend_from_slice(&om.to_be_bytes());
                h.extend_from_slice(&u32::from(self.ip_id).to_be_bytes());
                h
            }
            // RFC 4302 §2.2: payload length in 4-byte units minus 2; 12 fixed
            // bytes + 4-byte ICV = 16 (a multiple of 8 as IPv6 needs).
            51 => vec![
                next, 2, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd,
            ],
            // RFC 8200 §4.4 routing header, type 253, segments left 0.
            43 => vec![next, 0, 253, 0, 0, 0, 0, 0],
            // Hop-by-hop / destination options with one PadN (type 1, len 4).
            _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
        }
    }

    fn l4_bytes(&self, ip: Option<&Pseudo>) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(64 + self.payload.len());
        match &self.l4 {
            L4::None | L4::Proto(_) => {
                l4.extend_from_slice(&self.payload);
                return l4;
            }
            L4::Udp { src, dst } => {
                l4.extend_from_slice(&src.to_be_bytes());
                l4.extend_from_slice(&dst.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                l4.extend_from_slice(&self.payload);
            }
            L4::Vxlan { vni, src, inner } => {
                let sport = src.unwrap_or_else(|| vxlan_src_port(inner));
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&VXLAN_PORT.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                l4.extend_from_slice(&[0x08, 0, 0, 0]);
                l4.extend_from_slice(&(vni << 8).to_be_bytes());
                l4.extend_from_slice(inner);
            }
            L4::Tcp { src, dst, flags } => {
                l4.extend_from_slice(&src.to_be_bytes());
                l4.extend_from_slice(&dst.to_be_bytes());
                l4.extend_from_slice(&self.tcp_seq.to_be_bytes());
                l4.extend_from_slice(&self.tcp_ack.to_be_bytes());
                l4.extend_from_slice(&((5u16 << 12) | flags).to_be_bytes());
                l4.extend_from_slice(&self.tcp_window.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                l4.extend_from_slice(&self.payload);
            }
            L4::Icmp {
                ty,
                code,
                rest,
                echo,
            } => {
                let v6 = matches!(ip, Some(Pseudo::V6 { .. }));
                let ty = match (echo, v6) {
                    (true, true) => 128,
                    (true, false) => 8,
                    (false, _) => *ty,
                };
                l4.extend_from_slice(&[ty, *code, 0, 0]);
                l4.extend_from_slice(rest);
                l4.extend_from_slice(&self.payload);
            }
        }
        // Checksums.
        let proto = self.l4_proto(matches!(ip, Some(Pseudo::V6 { .. })));
        let (coff, pseudo) = match (&self.l4, ip) {
            (L4::Udp { .. } | L4::Vxlan { .. }, _) => (6, true),
            (L4::Tcp { .. }, _) => (16, true),
            (L4::Icmp { .. }, Some(Pseudo::V6 { .. })) => (2, true),
            (L4::Icmp { .. }, _) => (2, false),
            _ => return l4,
        };
        if matches!(self.l4, L4::Udp { .. } | L4::Vxlan { .. }) {
            let len = (l4.len().min(0xffff) as u16).to_be_bytes();
            l4[4..6].copy_from_slice(&len);
        }
        let init = match (pseudo, ip) {
            (true, Some(p)) => p.sum(proto, u32::try_from(l4.len()).unwrap_or(u32::MAX)),
            _ => 0,
        };
        let mut c = !(checksum::sum(&l4, init) as u16);
        if c == 0 && proto == 17 {
            // RFC 768: a computed zero is sent as all ones.
            c = 0xffff;
        }
        l4[coff..coff + 2].copy_from_slice(&c.to_be_bytes());
        l4
    }
}

fn tci(vid: u16, pcp: u8) -> u16 {
    (u16::from(pcp & 7) << 13) | (vid & 0x0fff)
}

/// RFC 7348 §5: source port from a hash of the inner frame, in the dynamic range.
fn vxlan_src_port(inner: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in inner.iter().take(34) {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    49152 | (h as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp::flags;
    use etherparse::{
        LinkExtHeader, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanHeader,
    };

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
    const V6A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// Parse `frame` with etherparse and recompute every checksum it carries;
    /// returns the parsed headers for further assertions.
    fn verify(frame: &[u8]) -> PacketHeaders<'_> {
        let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
        let payload = h.payload.slice();
        match (&h.net, &h.transport) {
            (Some(NetHeaders::Ipv4(ip, _)), t) => {
                assert_eq!(
                    ip.header_checksum,
                    ip.calc_header_checksum(),
                    "ipv4 header checksum"
                );
                match t {
                    Some(TransportHeader::Udp(u)) => {
                        assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap())
                    }
                    Some(TransportHeader::Tcp(tc)) => {
                        assert_eq!(tc.checksum, tc.calc_checksum_ipv4(ip, payload).unwrap())
                    }
                    Some(TransportHeader::Icmpv4(i)) => {
                        assert_eq!(i.checksum, i.icmp_type.calc_checksum(payload))
                    }
                    _ => {}
                }
            }
            (Some(NetHeaders::Ipv6(ip, _)), t) => match t {
                Some(TransportHeader::Udp(u)) => {
                    assert_eq!(u.checksum, u.calc_checksum_ipv6(ip, payload).unwrap())
                }
                Some(TransportHeader::Tcp(tc)) => {
                    assert_eq!(tc.checksum, tc.calc_checksum_ipv6(ip, payload).unwrap())
                }
                Some(TransportHeader::Icmpv6(i)) => assert_eq!(
                    i.checksum,
                    i.icmp_type
                        .calc_checksum(ip.source, ip.destination, payload)
                        .unwrap()
                ),
                _ => {}
            },
            _ => {}
        }
        h
    }

    #[test]
    fn udp_ipv4_matches_etherparse_bytes() {
        let ours = FrameBuilder::new()
            .eth(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .dont_frag()
            .ttl(17)
            .udp(1234, 53)
            .payload(&[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            ])
            .build();
        let mut theirs = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17)
            .udp(1234, 53)
            .write(
                &mut theirs,
                &[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                ],
            )
            .unwrap();
        assert_eq!(ours, theirs);
        verify(&ours);
    }
    #[test]
    fn tcp_ipv6_matches_etherparse_bytes() {
        let ours = FrameBuilder::new()
            .eth(A, B)
            .ipv6(V6A, V6B)
            .ttl(9)
            .tcp(4000, 80, flags::SYN)
            .tcp_seq(77, 0)
            .tcp_window(1000)
            .payload(b"abc")
            .build();
        let mut theirs = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6(V6A, V6B, 9)
            .tcp(4000, 80, 77, 1000)
            .syn()
            .write(&mut theirs, b"abc")
            .unwrap();
        assert_eq!(ours, theirs);
        verify(&ours);
    }

    #[test]
    fn icmp_echo_v4_and_v6_match_etherparse_bytes() {
        let ours = FrameBuilder::new()
            .eth(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8])
            .dont_frag()
            .icmp_echo(7, 9)
            .payload(&[0x55; 32])
            .build();
        let mut theirs = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .icmpv4_echo_request(7, 9)
            .write(&mut theirs, &[0x55; 32])
            .unwrap();
        assert_eq!(ours, theirs);
        let ours = FrameBuilder::new()
            .eth(A, B)
            .ipv6(V6A, V6B)
            .icmp_echo(7, 9)
            .payload(&[0x55; 32])
            .build();
        let mut theirs = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6(V6A, V6B, 64)
            .icmpv6_echo_request(7, 9)
            .write(&mut theirs, &[0x55; 32])
            .unwrap();
        assert_eq!(ours, theirs);
        verify(&ours);
    }

    #[test]
    fn short_frames_are_padded_and_checksums_ignore_padding() {
        let f = FrameBuilder::new()
            .vlan(100, 5)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .tos(0xb8)
            .udp(1, 2)
            .build();
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0xa0, 100]);
        let h = verify(&f);
        match h.vlan() {
            Some(VlanHeader::Single(v)) => {
                assert_eq!(v.vlan_id.value(), 100);
                assert_eq!(v.pcp.value(), 5);
            }
            other => panic!("expected one tag, got {other:?}"),
        }
        match h.net {
            Some(NetHeaders::Ipv4(ip, _)) => {
                assert_eq!(ip.total_len, 28);
                assert_eq!(ip.dscp.value(), 0xb8 >> 2);
            }
            other => panic!("expected ipv4, got {other:?}"),
        }
        let unpadded = FrameBuilder::new()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .udp(1, 2)
            .no_padding()
            .build();
        assert_eq!(unpadded.len(), 14 + 20 + 8);
    }

    #[test]
    fn qinq_outer_is_8021ad() {
        let f = FrameBuilder::new()
            .vlan(10, 1)
            .vlan(20, 2)
            .ipv6(V6A, V6B)
            .udp(5, 6)
            .build();
        assert_eq!(
            &f[12..22],
            &[0x88, 0xa8, 0x20, 10, 0x81, 0x00, 0x40, 20, 0x86, 0xdd]
        );
        let h = verify(&f);
        assert_eq!(h.link_exts.len(), 2);
        assert!(matches!(h.link_exts[0], LinkExtHeader::Vlan(ref v) if v.vlan_id.value() == 10));
        assert!(matches!(h.link_exts[1], LinkExtHeader::Vlan(ref v) if v.vlan_id.value() == 20));
        assert!(matches!(h.transport, Some(TransportHeader::Udp(_))));
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let f = FrameBuilder::new()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .ipv4_options(&[0x94, 0x04, 0, 0, 1]) // router alert + a NOP, padded to 8
            .frag(0, true)
            .ip_id(0x1234)
            .udp(1, 2)
            .payload(&[9; 40])
            .build();
        let h = verify(&f);
        match &h.net {
            Some(NetHeaders::Ipv4(ip, _)) => {
                assert_eq!(ip.ihl(), 7);
                assert!(ip.more_fragments);
                assert_eq!(ip.fragment_offset.value(), 0);
                assert_eq!(ip.identification, 0x1234);
            }
            other => panic!("expected ipv4, got {other:?}"),
        }
        let later = FrameBuilder::new()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .frag(100, false)
            .ip_proto(17)
            .payload(&[1; 16])
            .build();
        assert_eq!(&later[20..22], &100u16.to_be_bytes());
        let h = PacketHeaders::from_ethernet_slice(&later).unwrap();
        assert!(h.transport.is_none(), "a later fragment has no L4 header");
    }

    #[test]
    fn ipv6_extension_chain_is_walkable() {
        let f = FrameBuilder::new()
            .ipv6(V6A, V6B)
            .ipv6_ext(0)
            .ipv6_ext(60)
            .ipv6_ext(43)
            .ipv6_ext(51)
            .tcp(1, 2, flags::ACK | flags::PSH)
            .payload(b"xyz")
            .build();
        let h = verify(&f);
        match &h.net {
            Some(NetHeaders::Ipv6(ip, exts)) => {
                assert_eq!(ip.next_header.0, 0);
                assert!(exts.hop_by_hop_options.is_some());
                assert!(exts.auth.is_some());
                assert_eq!(usize::from(ip.payload_length), 8 + 8 + 8 + 16 + 20 + 3);
            }
            other => panic!("expected ipv6, got {other:?}"),
        }
        assert!(matches!(h.transport, Some(TransportHeader::Tcp(ref t)) if t.ack && t.psh));
        // IPv6 fragment header goes last.
        let f = FrameBuilder::new()
            .ipv6(V6A, V6B)
            .ipv6_ext(0)
            .frag(3, true)
            .ip_id(5)
            .udp(1, 2)
            .build();
        let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
        match &h.net {
            Some(NetHeaders::Ipv6(_, exts)) => {
                let fr = exts.fragment.as_ref().expect("fragment header");
                assert_eq!(fr.fragment_offset.value(), 3);
                assert!(fr.more_fragments);
                assert_eq!(fr.identification, 5);
            }
            other => panic!("expected ipv6, got {other:?}"),
        }
    }

    #[test]
    fn arp_request_and_reply() {
        let f = FrameBuilder::new()
            .eth(A, [0xff; 6])
            .arp_request(A, [10, 0, 0, 1], [10, 0, 0, 2])
            .build();
        assert_eq!(f.len(), 60);
        let h = verify(&f);
        match &h.net {
            Some(NetHeaders::Arp(a)) => {
                assert_eq!(a.operation, etherparse::ArpOperation::REQUEST);
                assert_eq!(a.sender_hw_addr(), &A);
                assert_eq!(a.sender_protocol_addr(), &[10, 0, 0, 1]);
                assert_eq!(a.target_hw_addr(), &[0; 6]);
                assert_eq!(a.target_protocol_addr(), &[10, 0, 0, 2]);
            }
            other => panic!("expected arp, got {other:?}"),
        }
        let f = FrameBuilder::new()
            .eth(B, A)
            .arp_reply(B, [10, 0, 0, 2], A, [10, 0, 0, 1])
            .build();
        match &PacketHeaders::from_ethernet_slice(&f).unwrap().net {
            Some(NetHeaders::Arp(a)) => {
                assert_eq!(a.operation, etherparse::ArpOperation::REPLY);
                assert_eq!(a.target_hw_addr(), &A);
            }
            other => panic!("expected arp, got {other:?}"),
        }
    }

    #[test]
    fn vxlan_wraps_inner_frame() {
        let inner = FrameBuilder::new()
            .eth(A, B)
            .ipv4([172, 16, 0, 1], [172, 16, 0, 2])
            .tcp(1000, 22, flags::SYN)
            .build();
        let outer = FrameBuilder::new()
            .ipv4([192, 168, 0, 1], [192, 168, 0, 2])
            .vxlan(0x123456, &inner)
            .build();
        let h = verify(&outer);
        match &h.transport {
            Some(TransportHeader::Udp(u)) => {
                assert_eq!(u.destination_port, VXLAN_PORT);
                assert!(u.source_port >= 49152);
                assert_eq!(usize::from(u.length), 8 + 8 + inner.len());
            }
            other => panic!("expected udp, got {other:?}"),
        }
        let vx = h.payload.slice();
        assert_eq!(&vx[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&vx[8..], &inner[..]);
        verify(&vx[8..]);
        let fixed = FrameBuilder::new()
            .ipv6(V6A, V6B)
            .vxlan(1, &inner)
            .vxlan_src_port(5555)
            .build();
        verify(&fixed);
        assert_eq!(&fixed[54..56], &5555u16.to_be_bytes());
        // Same inner frame, same source port (flow entropy is deterministic).
        let again = FrameBuilder::new()
            .ipv4([192, 168, 0, 1], [192, 168, 0, 2])
            .vxlan(0x123456, &inner)
            .build();
        assert_eq!(outer, again);
    }

    #[test]
    fn udp_zero_checksum_becomes_ffff() {
        // Search a payload word that makes the computed checksum zero.
        let base = FrameBuilder::new()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
            .udp(1, 2);
        let f = base.clone().payload(&[0, 0]).no_padding().build();
        let c = u16::from_be_bytes([f[40], f[41]]);
        // Adding !c as payload word drives the one's-complement sum to 0xffff,
        // i.e. a computed checksum of 0 (the UDP length is unchanged).
        let word = c.to_be_bytes();
        let f = base.payload(&word).no_padding().build();
        assert_eq!(&f[40..42], &[0xff, 0xff]);
        verify(&f);
    }
}
