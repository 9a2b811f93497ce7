//! The field registry: every matchable and writable field, where it lives in
//! a [`FlowKey`], how wide it is, and what it needs (its prerequisite).
//!
//! One generic mechanism serves the flow parser, the formatter, `set_field`,
//! `load`/`move` on bit ranges, and the slow path: a field is a bit range of
//! one storage slot of `FlowKey`, read and written as a `u128`. MAC and IPv6
//! slots are network-order byte arrays read big-endian, so a MAC is the 48-bit
//! number its colon form spells; integer slots are host-order integers.

use super::key::{ethertype, ipproto, nd, FlowKey, VLAN_CFI};
use core::mem::offset_of;

/// How a slot is stored in `FlowKey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A native-endian integer of `size` bytes.
    Int,
    /// A network-order byte array of `size` bytes.
    Bytes,
}

/// How values of a field are written by the formatter and accepted by the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimal, or `0x` hex when masked.
    Decimal,
    /// Always `0x` hex.
    Hex,
    /// `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// Dotted quad, masks as prefix lengths where possible.
    Ipv4,
    /// RFC 5952 text, masks as prefix lengths where possible.
    Ipv6,
    /// `nw_frag` words: no, yes, first, later, not_later.
    Frag,
    /// `ct_state` flags: +trk-new...
    CtState,
    /// TCP flag names: +syn-ack...
    TcpFlags,
}

/// What a packet must be for a field to be meaningful (OVS's prerequisites).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prereq {
    /// Always meaningful.
    None,
    /// The frame carries a VLAN tag (`vlan_tci` CFI bit).
    Vlan,
    /// `dl_type=0x0800`.
    Ipv4,
    /// `dl_type=0x86dd`.
    Ipv6,
    /// IPv4 or IPv6.
    IpAny,
    /// `dl_type=0x0806`.
    Arp,
    /// IPv4 or IPv6 with `nw_proto=6`.
    Tcp,
    /// IPv4 or IPv6 with `nw_proto=17`.
    Udp,
    /// IPv4 or IPv6 with `nw_proto` 6, 17 or 132 (the generic
    /// `tp_src`/`tp_dst`: TCP, UDP or SCTP ports, as in ovs-ofctl).
    TcpOrUdp,
    /// IPv4 or IPv6 with `nw_proto=132` (SCTP, RFC 9260).
    Sctp,
    /// IPv4 with `nw_proto=1`.
    Icmp,
    /// IPv6 with `nw_proto=58`.
    Icmpv6,
    /// ICMPv6 neighbour solicitation or advertisement: `icmp6` with
    /// `icmp_type` 135 or 136 and `icmp_code` 0 (OVS's MFP_ND).
    Nd,
    /// ICMPv6 neighbour solicitation (`icmp_type=135`, OVS's MFP_ND_SOLICIT).
    NdSolicit,
    /// ICMPv6 neighbour advertisement (`icmp_type=136`, OVS's MFP_ND_ADVERT).
    NdAdvert,
}

impl Prereq {
    /// What a user should add to satisfy this prerequisite, as flow syntax.
    pub fn suggestion(self) -> &'static str {
        match self {
            Prereq::None => "",
            Prereq::Vlan => "dl_vlan=VID (or vlan_tci=0x1000/0x1000)",
            Prereq::Ipv4 => "ip (or dl_type=0x0800)",
            Prereq::Ipv6 => "ipv6 (or dl_type=0x86dd)",
            Prereq::IpAny => "ip or ipv6",
            Prereq::Arp => "arp (or dl_type=0x0806)",
            Prereq::Tcp => "tcp or tcp6",
            Prereq::Udp => "udp or udp6",
            Prereq::TcpOrUdp => "tcp, udp, sctp, tcp6, udp6 or sctp6",
            Prereq::Sctp => "sctp or sctp6",
            Prereq::Icmp => "icmp",
            Prereq::Icmpv6 => "icmp6",
            Prereq::Nd => "icmp6 with icmp_type=135 or icmp_type=136",
            Prereq::NdSolicit => "icmp6,icmp_type=135",
            Prereq::NdAdvert => "icmp6,icmp_type=136",
        }
    }

    /// True when a packet whose key is `k` satisfies the prerequisite.
    pub fn satisfied_by(self, k: &FlowKey) -> bool {
        let ip4 = k.dl_type == ethertype::IPV4;
        let ip6 = k.dl_type == ethertype::IPV6;
        let ip = ip4 || ip6;
        match self {
            Prereq::None => true,
            Prereq::Vlan => k.vlan_tci & VLAN_CFI != 0,
            Prereq::Ipv4 => ip4,
            Prereq::Ipv6 => ip6,
            Prereq::IpAny => ip,
            Prereq::Arp => k.dl_type == ethertype::ARP,
            Prereq::Tcp => ip && k.nw_proto == ipproto::TCP,
            Prereq::Udp => ip && k.nw_proto == ipproto::UDP,
            Prereq::TcpOrUdp => {
                ip && matches!(k.nw_proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP)
            }
            Prereq::Sctp => ip && k.nw_proto == ipproto::SCTP,
            Prereq::Icmp => ip4 && k.nw_proto == ipproto::ICMP,
            Prereq::Icmpv6 => ip6 && k.nw_proto == ipproto::ICMPV6,
            Prereq::Nd => is_nd(k, None),
            Prereq::NdSolicit => is_nd(k, Some(nd::NEIGHBOR_SOLICIT)),
            Prereq::NdAdvert => is_nd(k, Some(nd::NEIGHBOR_ADVERT)),
        }
    }
}

/// OVS `is_nd`: ICMPv6 code 0 of type NS or NA (or exactly `ty` when given).
fn is_nd(k: &FlowKey, ty: Option<u8>) -> bool {
    k.dl_type == ethertype::IPV6
        && k.nw_proto == ipproto::ICMPV6
        && k.tp_dst == 0
        && match ty {
            Some(t) => k.tp_src == u16::from(t),
            None => {
                k.tp_src == u16::from(nd::NEIGHBOR_SOLICIT)
                    || k.tp_src == u16::from(nd::NEIGHBOR_ADVERT)
            }
        }
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $var:ident = {
        name: $name:literal, aliases: [$($alias:literal),*], slot: $slot:ident $([$idx:literal])?,
        kind: $kind:ident, shift: $shift:literal, width: $width:literal, maskable: $maskable:literal,
        writable: $writable:literal, prereq: $prereq:ident, format: $format:ident } ),* $(,)?) => {
        /// A matchable / writable field.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field { $( $(#[$doc])* $var ),* }

        /// Every field, in registry order (the order dump-flows prints matches in).
        pub const ALL_FIELDS: &[Field] = &[ $( Field::$var ),* ];

        impl Field {
            /// The field's description.
            pub fn info(self) -> &'static FieldInfo {
                match self {
                    $( Field::$var => {
                        const INFO: FieldInfo = FieldInfo {
                            field: Field::$var,
                            name: $name,
                            aliases: &[$($alias),*],
                            offset: offset_of!(FlowKey, $slot) $(+ $idx * 4)?,
                            size: fields!(@size $slot $([$idx])?),
                            storage: Storage::$kind,
                            shift: $shift,
                            width: $width,
                            maskable: $maskable,
                            writable: $writable,
                            prereq: Prereq::$prereq,
                            format: Format::$format,
                        };
                        &INFO
                    } ),*
                }
            }
        }
    };
    (@size $slot:ident [$idx:literal]) => { 4 };
    (@size $slot:ident) => { core::mem::size_of_val(&FlowKey::ZERO.$slot) };
}

/// Static description of a [`Field`].
#[derive(Debug)]
pub struct FieldInfo {
    /// The field.
    pub field: Field,
    /// The name dump-flows prints (ovs-ofctl's preferred name).
    pub name: &'static str,
    /// Other accepted names (OXM / NXM / ovs-ofctl aliases), case-sensitive as OVS.
    pub aliases: &'static [&'static str],
    /// Byte offset of the storage slot in `FlowKey`.
    pub offset: usize,
    /// Size of the storage slot in bytes.
    pub size: usize,
    /// Integer or byte-array storage.
    pub storage: Storage,
    /// Bit offset of the field within its slot value.
    pub shift: u32,
    /// Width of the field in bits.
    pub width: u32,
    /// Whether an arbitrary bitwise mask may be given in a match.
    pub maskable: bool,
    /// Whether `set_field` / `load` / `move` may write it.
    pub writable: bool,
    /// What the packet must be for the field to be meaningful.
    pub prereq: Prereq,
    /// Text format.
    pub format: Format,
}

impl FieldInfo {
    /// All-ones value of the field's width.
    pub fn max_value(&self) -> u128 {
        if self.width >= 128 {
            u128::MAX
        } else {
            (1u128 << self.width) - 1
        }
    }

    fn read_slot(&self, k: &FlowKey) -> u128 {
        let b = &k.as_bytes()[self.offset..self.offset + self.size];
        match self.storage {
            Storage::Int => {
                let mut buf = [0u8; 16];
                buf[..self.size].copy_from_slice(b);
                u128::from_le_bytes(buf) // FlowKey is only built for little-endian targets
            }
            Storage::Bytes => b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x)),
        }
    }

    fn write_slot(&self, k: &mut FlowKey, v: u128) {
        let b = &mut k.as_bytes_mut()[self.offset..self.offset + self.size];
        match self.storage {
            Storage::Int => b.copy_from_slice(&v.to_le_bytes()[..self.size]),
            Storage::Bytes => {
                let be = v.to_be_bytes();
                b.copy_from_slice(&be[16 - self.size..]);
            }
        }
    }

    /// The field's value in `k` (right-aligned).
    pub fn get(&self, k: &FlowKey) -> u128 {
        (self.read_slot(k) >> self.shift) & self.max_value()
    }

    /// Write `v` (truncated to the field's width) into `k`, leaving other bits alone.
    pub fn set(&self, k: &mut FlowKey, v: u128) {
        let m = self.max_value() << self.shift;
        let old = self.read_slot(k);
        self.write_slot(k, (old & !m) | ((v << self.shift) & m));
    }

    /// Write bits `[ofs, ofs+n_bits)` of the field from the low bits of `v` (NXM `load`).
    pub fn set_bits(&self, k: &mut FlowKey, ofs: u32, n_bits: u32, v: u128) {
        let m = if n_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << n_bits) - 1
        };
        let cur = self.get(k);
        self.set(k, (cur & !(m << ofs)) | ((v & m) << ofs));
    }

    /// Read bits `[ofs, ofs+n_bits)` of the field, right-aligned.
    pub fn get_bits(&self, k: &FlowKey, ofs: u32, n_bits: u32) -> u128 {
        let m = if n_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << n_bits) - 1
        };
        (self.get(k) >> ofs) & m
    }
}

#[cfg(target_endian = "big")]
compile_error!(
    "FlowKey integer slots are read as little-endian; big-endian targets are not supported"
);

fields! {
    /// OpenFlow ingress port.
    InPort = { name: "in_port", aliases: ["NXM_OF_IN_PORT", "OXM_OF_IN_PORT"], slot: in_port,
        kind: Int, shift: 0, width: 32, maskable: false, writable: true, prereq: None, format: Decimal },
    /// OpenFlow metadata.
    Metadata = { name: "metadata", aliases: ["OXM_OF_METADATA"], slot: metadata,
        kind: Int, shift: 0, width: 64, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 0.
    Reg0 = { name: "reg0", aliases: ["NXM_NX_REG0"], slot: regs[0],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 1.
    Reg1 = { name: "reg1", aliases: ["NXM_NX_REG1"], slot: regs[1],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 2.
    Reg2 = { name: "reg2", aliases: ["NXM_NX_REG2"], slot: regs[2],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 3.
    Reg3 = { name: "reg3", aliases: ["NXM_NX_REG3"], slot: regs[3],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 4.
    Reg4 = { name: "reg4", aliases: ["NXM_NX_REG4"], slot: regs[4],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 5.
    Reg5 = { name: "reg5", aliases: ["NXM_NX_REG5"], slot: regs[5],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 6.
    Reg6 = { name: "reg6", aliases: ["NXM_NX_REG6"], slot: regs[6],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Register 7.
    Reg7 = { name: "reg7", aliases: ["NXM_NX_REG7"], slot: regs[7],
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Hex },
    /// Tunnel id (VNI).
    TunId = { name: "tun_id", aliases: ["tunnel_id", "NXM_NX_TUN_ID", "OXM_OF_TUNNEL_ID"], slot: tun_id,
        kind: Int, shift: 0, width: 64, maskable: true, writable: true, prereq: None, format: Hex },
    /// Tunnel outer IPv4 source.
    TunSrc = { name: "tun_src", aliases: ["NXM_NX_TUN_IPV4_SRC"], slot: tun_src,
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Ipv4 },
    /// Tunnel outer IPv4 destination.
    TunDst = { name: "tun_dst", aliases: ["NXM_NX_TUN_IPV4_DST"], slot: tun_dst,
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: None, format: Ipv4 },
    /// Ethernet source.
    EthSrc = { name: "dl_src", aliases: ["eth_src", "NXM_OF_ETH_SRC", "OXM_OF_ETH_SRC"], slot: dl_src,
        kind: Bytes, shift: 0, width: 48, maskable: true, writable: true, prereq: None, format: Mac },
    /// Ethernet destination.
    EthDst = { name: "dl_dst", aliases: ["eth_dst", "NXM_OF_ETH_DST", "OXM_OF_ETH_DST"], slot: dl_dst,
        kind: Bytes, shift: 0, width: 48, maskable: true, writable: true, prereq: None, format: Mac },
    /// Ethertype.
    EthType = { name: "dl_type", aliases: ["eth_type", "NXM_OF_ETH_TYPE", "OXM_OF_ETH_TYPE"], slot: dl_type,
        kind: Int, shift: 0, width: 16, maskable: false, writable: false, prereq: None, format: Hex },
    /// Whole VLAN TCI with the CFI/present bit (Nicira `vlan_tci`).
    VlanTci = { name: "vlan_tci", aliases: ["NXM_OF_VLAN_TCI"], slot: vlan_tci,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: None, format: Hex },
    /// OpenFlow 1.3 `vlan_vid`: VID plus the 0x1000 present bit.
    VlanVid = { name: "vlan_vid", aliases: ["OXM_OF_VLAN_VID"], slot: vlan_tci,
        kind: Int, shift: 0, width: 13, maskable: true, writable: true, prereq: None, format: Decimal },
    /// ovs-ofctl `dl_vlan`: the 12-bit VID (implies a tag).
    DlVlan = { name: "dl_vlan", aliases: [], slot: vlan_tci,
        kind: Int, shift: 0, width: 12, maskable: false, writable: true, prereq: Vlan, format: Decimal },
    /// VLAN priority (implies a tag).
    VlanPcp = { name: "dl_vlan_pcp", aliases: ["vlan_pcp", "OXM_OF_VLAN_PCP"], slot: vlan_tci,
        kind: Int, shift: 13, width: 3, maskable: false, writable: true, prereq: Vlan, format: Decimal },
    /// IPv4 source.
    IpSrc = { name: "nw_src", aliases: ["ip_src", "ipv4_src", "NXM_OF_IP_SRC", "OXM_OF_IPV4_SRC"], slot: nw_src,
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: Ipv4, format: Ipv4 },
    /// IPv4 destination.
    IpDst = { name: "nw_dst", aliases: ["ip_dst", "ipv4_dst", "NXM_OF_IP_DST", "OXM_OF_IPV4_DST"], slot: nw_dst,
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: Ipv4, format: Ipv4 },
    /// IP protocol / IPv6 next header.
    NwProto = { name: "nw_proto", aliases: ["ip_proto", "NXM_OF_IP_PROTO", "OXM_OF_IP_PROTO"], slot: nw_proto,
        kind: Int, shift: 0, width: 8, maskable: false, writable: false, prereq: IpAny, format: Decimal },
    /// TOS byte (ovs-ofctl `nw_tos` matches its DSCP bits, i.e. mask 0xfc).
    NwTos = { name: "nw_tos", aliases: ["NXM_OF_IP_TOS"], slot: nw_tos,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: IpAny, format: Decimal },
    /// DSCP (upper six bits of the TOS byte).
    IpDscp = { name: "ip_dscp", aliases: ["OXM_OF_IP_DSCP"], slot: nw_tos,
        kind: Int, shift: 2, width: 6, maskable: false, writable: true, prereq: IpAny, format: Decimal },
    /// ECN (lower two bits of the TOS byte).
    IpEcn = { name: "nw_ecn", aliases: ["ip_ecn", "NXM_NX_IP_ECN", "OXM_OF_IP_ECN"], slot: nw_tos,
        kind: Int, shift: 0, width: 2, maskable: false, writable: true, prereq: IpAny, format: Decimal },
    /// IPv4 TTL / IPv6 hop limit.
    NwTtl = { name: "nw_ttl", aliases: ["NXM_NX_IP_TTL"], slot: nw_ttl,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: IpAny, format: Decimal },
    /// Fragment bits.
    NwFrag = { name: "nw_frag", aliases: ["ip_frag", "NXM_NX_IP_FRAG"], slot: nw_frag,
        kind: Int, shift: 0, width: 2, maskable: true, writable: false, prereq: IpAny, format: Frag },
    /// ARP opcode.
    ArpOp = { name: "arp_op", aliases: ["NXM_OF_ARP_OP", "OXM_OF_ARP_OP"], slot: nw_proto,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: Arp, format: Decimal },
    /// ARP sender protocol address.
    ArpSpa = { name: "arp_spa", aliases: ["NXM_OF_ARP_SPA", "OXM_OF_ARP_SPA"], slot: nw_src,
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: Arp, format: Ipv4 },
    /// ARP target protocol address.
    ArpTpa = { name: "arp_tpa", aliases: ["NXM_OF_ARP_TPA", "OXM_OF_ARP_TPA"], slot: nw_dst,
        kind: Int, shift: 0, width: 32, maskable: true, writable: true, prereq: Arp, format: Ipv4 },
    /// ARP sender hardware address.
    ArpSha = { name: "arp_sha", aliases: ["NXM_NX_ARP_SHA", "OXM_OF_ARP_SHA"], slot: arp_sha,
        kind: Bytes, shift: 0, width: 48, maskable: true, writable: true, prereq: Arp, format: Mac },
    /// ARP target hardware address.
    ArpTha = { name: "arp_tha", aliases: ["NXM_NX_ARP_THA", "OXM_OF_ARP_THA"], slot: arp_tha,
        kind: Bytes, shift: 0, width: 48, maskable: true, writable: true, prereq: Arp, format: Mac },
    /// IPv6 source.
    Ipv6Src = { name: "ipv6_src", aliases: ["NXM_NX_IPV6_SRC", "OXM_OF_IPV6_SRC"], slot: ipv6_src,
        kind: Bytes, shift: 0, width: 128, maskable: true, writable: true, prereq: Ipv6, format: Ipv6 },
    /// IPv6 destination.
    Ipv6Dst = { name: "ipv6_dst", aliases: ["NXM_NX_IPV6_DST", "OXM_OF_IPV6_DST"], slot: ipv6_dst,
        kind: Bytes, shift: 0, width: 128, maskable: true, writable: true, prereq: Ipv6, format: Ipv6 },
    /// IPv6 flow label.
    Ipv6Label = { name: "ipv6_label", aliases: ["NXM_NX_IPV6_LABEL", "OXM_OF_IPV6_FLABEL"], slot: ipv6_label,
        kind: Int, shift: 0, width: 20, maskable: true, writable: true, prereq: Ipv6, format: Hex },
    /// Generic L4 source port (ovs-ofctl `tp_src`, TCP, UDP or SCTP).
    TpSrc = { name: "tp_src", aliases: [], slot: tp_src,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: TcpOrUdp, format: Decimal },
    /// Generic L4 destination port (ovs-ofctl `tp_dst`, TCP, UDP or SCTP).
    TpDst = { name: "tp_dst", aliases: [], slot: tp_dst,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: TcpOrUdp, format: Decimal },
    /// TCP source port.
    TcpSrc = { name: "tcp_src", aliases: ["NXM_OF_TCP_SRC", "OXM_OF_TCP_SRC"], slot: tp_src,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: Tcp, format: Decimal },
    /// TCP destination port.
    TcpDst = { name: "tcp_dst", aliases: ["NXM_OF_TCP_DST", "OXM_OF_TCP_DST"], slot: tp_dst,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: Tcp, format: Decimal },
    /// UDP source port.
    UdpSrc = { name: "udp_src", aliases: ["NXM_OF_UDP_SRC", "OXM_OF_UDP_SRC"], slot: tp_src,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: Udp, format: Decimal },
    /// UDP destination port.
    UdpDst = { name: "udp_dst", aliases: ["NXM_OF_UDP_DST", "OXM_OF_UDP_DST"], slot: tp_dst,
        kind: Int, shift: 0, width: 16, maskable: true, writable: true, prereq: Udp, format: Decimal },
    /// SCTP source port (RFC 9260 §3.1). Not writable: rewriting it would
    /// need the CRC32c checksum recomputed, which ferroswitch does not do.
    SctpSrc = { name: "sctp_src", aliases: ["OXM_OF_SCTP_SRC"], slot: tp_src,
        kind: Int, shift: 0, width: 16, maskable: true, writable: false, prereq: Sctp, format: Decimal },
    /// SCTP destination port (RFC 9260 §3.1). Not writable (see `sctp_src`).
    SctpDst = { name: "sctp_dst", aliases: ["OXM_OF_SCTP_DST"], slot: tp_dst,
        kind: Int, shift: 0, width: 16, maskable: true, writable: false, prereq: Sctp, format: Decimal },
    /// TCP flags.
    TcpFlags = { name: "tcp_flags", aliases: ["NXM_NX_TCP_FLAGS", "OXM_OF_TCP_FLAGS"], slot: tcp_flags,
        kind: Int, shift: 0, width: 12, maskable: true, writable: false, prereq: Tcp, format: TcpFlags },
    /// ICMP type.
    IcmpType = { name: "icmp_type", aliases: ["NXM_OF_ICMP_TYPE", "OXM_OF_ICMPV4_TYPE"], slot: tp_src,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: Icmp, format: Decimal },
    /// ICMP code.
    IcmpCode = { name: "icmp_code", aliases: ["NXM_OF_ICMP_CODE", "OXM_OF_ICMPV4_CODE"], slot: tp_dst,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: Icmp, format: Decimal },
    /// ICMPv6 type.
    Icmpv6Type = { name: "icmpv6_type", aliases: ["NXM_NX_ICMPV6_TYPE", "OXM_OF_ICMPV6_TYPE"], slot: tp_src,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: Icmpv6, format: Decimal },
    /// ICMPv6 code.
    Icmpv6Code = { name: "icmpv6_code", aliases: ["NXM_NX_ICMPV6_CODE", "OXM_OF_ICMPV6_CODE"], slot: tp_dst,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: Icmpv6, format: Decimal },
    /// IPv6 ND target address (NS/NA).
    NdTarget = { name: "nd_target", aliases: ["NXM_NX_ND_TARGET", "OXM_OF_IPV6_ND_TARGET"], slot: nd_target,
        kind: Bytes, shift: 0, width: 128, maskable: true, writable: true, prereq: Nd, format: Ipv6 },
    /// IPv6 ND source link-layer address option (NS), sharing `arp_sha` as in OVS.
    NdSll = { name: "nd_sll", aliases: ["NXM_NX_ND_SLL", "OXM_OF_IPV6_ND_SLL"], slot: arp_sha,
        kind: Bytes, shift: 0, width: 48, maskable: true, writable: true, prereq: NdSolicit, format: Mac },
    /// IPv6 ND target link-layer address option (NA), sharing `arp_tha` as in OVS.
    NdTll = { name: "nd_tll", aliases: ["NXM_NX_ND_TLL", "OXM_OF_IPV6_ND_TLL"], slot: arp_tha,
        kind: Bytes, shift: 0, width: 48, maskable: true, writable: true, prereq: NdAdvert, format: Mac },
    /// IPv6 ND reserved word (NA: R/S/O flags in the top 3 bits), OVS 2.11+.
    NdReserved = { name: "nd_reserved", aliases: ["ERICOXM_OF_ICMPV6_ND_RESERVED"], slot: nw_src,
        kind: Int, shift: 0, width: 32, maskable: false, writable: true, prereq: Nd, format: Decimal },
    /// Type of the ND link-layer option (1 = source, 2 = target), OVS 2.11+.
    NdOptionsType = { name: "nd_options_type", aliases: ["ERICOXM_OF_ICMPV6_ND_OPTIONS_TYPE"], slot: tcp_flags,
        kind: Int, shift: 0, width: 8, maskable: false, writable: true, prereq: Nd, format: Decimal },
    /// Conntrack state.
    CtState = { name: "ct_state", aliases: ["NXM_NX_CT_STATE"], slot: ct_state,
        kind: Int, shift: 0, width: 8, maskable: true, writable: false, prereq: None, format: CtState },
    /// Conntrack zone.
    CtZone = { name: "ct_zone", aliases: ["NXM_NX_CT_ZONE"], slot: ct_zone,
        kind: Int, shift: 0, width: 16, maskable: false, writable: false, prereq: None, format: Hex },
    /// Conntrack mark.
    CtMark = { name: "ct_mark", aliases: ["NXM_NX_CT_MARK"], slot: ct_mark,
        kind: Int, shift: 0, width: 32, maskable: true, writable: false, prereq: None, format: Hex },
    /// Conntrack label.
    CtLabel = { name: "ct_label", aliases: ["NXM_NX_CT_LABEL"], slot: ct_label,
        kind: Bytes, shift: 0, width: 128, maskable: true, writable: false, prereq: None, format: Hex },
}

impl Field {
    /// Look a field up by any of its names.
    pub fn from_name(name: &str) -> Option<Field> {
        ALL_FIELDS.iter().copied().find(|f| {
            let i = f.info();
            i.name == name || i.aliases.contains(&name)
        })
    }

    /// The name dump-flows prints.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Value of this field in `k`.
    pub fn get(self, k: &FlowKey) -> u128 {
        self.info().get(k)
    }

    /// Set this field in `k`.
    pub fn set(self, k: &mut FlowKey, v: u128) {
        self.info().set(k, v)
    }

    /// A mask with exactly this field's bits set.
    pub fn full_mask(self) -> FlowKey {
        let mut m = FlowKey::ZERO;
        let i = self.info();
        i.set(&mut m, i.max_value());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_roundtrip_every_field() {
        for f in ALL_FIELDS {
            let i = f.info();
            let mut k = FlowKey::ZERO;
            let v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128 & i.max_value();
            i.set(&mut k, v);
            assert_eq!(i.get(&k), v, "{:?}", f);
            assert_eq!(Field::from_name(i.name), Some(*f));
        }
    }

    #[test]
    fn slots_are_where_they_claim() {
        let mut k = FlowKey::ZERO;
        Field::IpDst.set(&mut k, 0x0a00_0001);
        assert_eq!(k.nw_dst, 0x0a00_0001);
        Field::EthSrc.set(&mut k, 0x0200_0000_0001);
        assert_eq!(k.dl_src, [2, 0, 0, 0, 0, 1]);
        Field::Reg3.set(&mut k, 7);
        assert_eq!(k.regs[3], 7);
        Field::VlanPcp.set(&mut k, 5);
        assert_eq!(k.vlan_tci, 5 << 13);
        Field::IpDscp.set(&mut k, 0x2e);
        assert_eq!(k.nw_tos, 0xb8);
        Field::Ipv6Dst.set(&mut k, 1);
        assert_eq!(k.ipv6_dst[15], 1);
        let m = Field::TcpDst.full_mask();
        assert_eq!(m.tp_dst, 0xffff);
        assert_eq!(m.nonzero_words().count_ones(), 1);
    }

    #[test]
    fn load_bit_ranges() {
        let mut k = FlowKey::ZERO;
        let i = Field::Reg0.info();
        i.set_bits(&mut k, 8, 8, 0xab);
        assert_eq!(k.regs[0], 0xab00);
        assert_eq!(i.get_bits(&k, 8, 4), 0xb);
    }
}
