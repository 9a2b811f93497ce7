//! The ovs-ofctl flow formatter: [`Match`], [`Action`] lists, [`Flow`]s and
//! packet keys in, the exact text `ovs-ofctl -O OpenFlow13 dump-flows` and
//! `ofproto/trace` print out.
//!
//! Field order and normalisation follow OVS 3.1 lib/match.c `match_format`
//! (protocol shorthand first, registers, tunnel, metadata, in_port, VLAN,
//! Ethernet, L3, L4, `tcp_flags` last), lib/ofp-actions.c `format_*` for
//! actions as decoded from OpenFlow 1.3, lib/ofp-flow.c
//! `ofputil_flow_stats_format` for the stats prefix, and lib/flow.c
//! `flow_format` for packet keys. Everything [`super::parse::parse_flow`]
//! accepts formats to text that parses back to the same flow.
//!
//! Pure functions over borrowed data; never panics.

use super::action::{ofport, Action, FieldRange, PortNo};
use super::field::{Field, Format};
use super::key::{
    ethertype, ipproto, FlowKey, FRAG_ANY, FRAG_LATER, VLAN_CFI, VLAN_PCP_MASK, VLAN_PCP_SHIFT,
    VLAN_VID_MASK,
};
use super::matches::Match;
use super::parse::{CT_STATE_NAMES, PORT_NAMES, TCP_FLAG_NAMES};
use super::{Flow, DEFAULT_PRIORITY};
use core::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const IPPROTO_IGMP: u8 = 2;
const IPPROTO_SCTP: u8 = 132;
const ETH_TYPE_RARP: u16 = 0x8035;

/// `%#x` as C prints it: `0` for zero, `0x..` otherwise (OVS `format_*_masked`, `ds_put_hex`).
fn c_hex(v: u128) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{:#x}", v)
    }
}

/// A port as `ofputil_format_port` prints it: reserved names, else decimal.
pub fn format_port(p: PortNo) -> String {
    if p > ofport::MAX {
        if let Some((n, _)) = PORT_NAMES.iter().find(|(_, v)| *v == p) {
            return (*n).to_string();
        }
    }
    p.to_string()
}

fn mac(v: u128) -> String {
    let b = v.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn mac_bytes(b: &[u8; 6]) -> u128 {
    b.iter().fold(0u128, |a, x| (a << 8) | u128::from(*x))
}

fn cidr_len(mask: u128, width: u32) -> Option<u32> {
    let all = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let inv = !mask & all;
    // A CIDR mask's complement is 2^k - 1.
    (inv & inv.wrapping_add(1) == 0).then(|| width - (inv.count_ones()))
}

/// `ip_format_masked`: `/32` dropped, CIDR as a prefix length, else a netmask.
fn ipv4_masked(v: u32, m: u32) -> String {
    let mut s = Ipv4Addr::from(v).to_string();
    if m != u32::MAX {
        match cidr_len(u128::from(m), 32) {
            Some(l) => {
                let _ = write!(s, "/{}", l);
            }
            None => {
                let _ = write!(s, "/{}", Ipv4Addr::from(m));
            }
        }
    }
    s
}

/// IPv6 text as glibc's `inet_ntop` writes it (RFC 5952, plus `::a.b.c.d`
/// for IPv4-compatible addresses, which Rust prints in hex).
fn ipv6_text(v: u128) -> String {
    let a = Ipv6Addr::from(v);
    let seg = a.segments();
    if seg[..6].iter().all(|s| *s == 0) && seg[6] != 0 {
        let o = a.octets();
        return format!("::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
    }
    a.to_string()
}

fn ipv6_masked(v: u128, m: u128) -> String {
    let mut s = ipv6_text(v);
    if m != u128::MAX {
        match cidr_len(m, 128) {
            Some(l) => {
                let _ = write!(s, "/{}", l);
            }
            None => {
                let _ = write!(s, "/{}", ipv6_text(m));
            }
        }
    }
    s
}

/// `format_flags` (exact) or `format_flags_masked` (+x-y, lowest bit first).
fn flags(value: u32, mask: u32, names: &[&str]) -> String {
    let all = (1u32 << names.len()) - 1;
    let mut s = String::new();
    if mask & all == all {
        if value == 0 {
            return "0".to_string();
        }
        let mut bad = 0u32;
        for (i, n) in names.iter().enumerate() {
            if value & (1 << i) != 0 {
                if !s.is_empty() {
                    s.push('|');
                }
                s.push_str(n);
            }
        }
        bad |= value & !all;
        if bad != 0 {
            if !s.is_empty() {
                s.push('|');
            }
            let _ = write!(s, "{:#x}", bad);
        }
        return s;
    }
    for (i, n) in names.iter().enumerate() {
        if mask & (1 << i) != 0 {
            s.push(if value & (1 << i) != 0 { '+' } else { '-' });
            s.push_str(n);
        }
    }
    s
}

struct Out(String);

impl Out {
    fn item(&mut self, s: impl AsRef<str>) {
        self.0.push_str(s.as_ref());
        self.0.push(',');
    }
    /// `format_uint32_masked` / `format_be64_masked`: `name=%#x[/%#x]`.
    fn hex_masked(&mut self, name: &str, v: u128, m: u128, full: u128) {
        if m != 0 {
            if m == full {
                self.item(format!("{}={}", name, c_hex(v)));
            } else {
                self.item(format!("{}={}/{:#x}", name, c_hex(v), m));
            }
        }
    }
    /// `format_be16_masked`: decimal value, `/0x` mask.
    fn dec16_masked(&mut self, name: &str, v: u16, m: u16) {
        if m != 0 {
            if m == u16::MAX {
                self.item(format!("{}={}", name, v));
            } else {
                self.item(format!("{}={}/{:#x}", name, v, m));
            }
        }
    }
    fn ip(&mut self, name: &str, v: u32, m: u32) {
        if m != 0 {
            self.item(format!("{}={}", name, ipv4_masked(v, m)));
        }
    }
    fn eth(&mut self, name: &str, v: &[u8; 6], m: &[u8; 6]) {
        if m.iter().any(|b| *b != 0) {
            let mut s = format!("{}={}", name, mac(mac_bytes(v)));
            if m.iter().any(|b| *b != 0xff) {
                let _ = write!(s, "/{}", mac(mac_bytes(m)));
            }
            self.item(s);
        }
    }
    fn ipv6(&mut self, name: &str, v: &[u8; 16], m: &[u8; 16]) {
        let m = u128::from_be_bytes(*m);
        if m != 0 {
            self.item(format!(
                "{}={}",
                name,
                ipv6_masked(u128::from_be_bytes(*v), m)
            ));
        }
    }
}

/// OVS `match_format` over a value/mask pair, with `priority=` first when not default.
fn format_match_prio(m: &Match, priority: u16) -> String {
    let f = m.value();
    let w = m.mask();
    let mut o = Out(String::new());
    if priority != DEFAULT_PRIORITY {
        o.item(format!("priority={}", priority));
    }
    if w.ct_state != 0 {
        let s = flags(f.ct_state, w.ct_state, CT_STATE_NAMES);
        o.item(format!("ct_state={}", s));
    }
    if w.ct_zone != 0 {
        // format_uint16_masked: decimal when exact.
        if w.ct_zone == u16::MAX {
            o.item(format!("ct_zone={}", f.ct_zone));
        } else {
            o.item(format!("ct_zone={:#x}/{:#x}", f.ct_zone, w.ct_zone));
        }
    }
    o.hex_masked(
        "ct_mark",
        f.ct_mark.into(),
        w.ct_mark.into(),
        u32::MAX.into(),
    );
    let lm = u128::from_be_bytes(w.ct_label);
    o.hex_masked("ct_label", u128::from_be_bytes(f.ct_label), lm, u128::MAX);

    let (mut skip_type, mut skip_proto) = (false, false);
    if w.dl_type != 0 {
        skip_type = true;
        let proto_known = w.nw_proto != 0;
        let name = match f.dl_type {
            ethertype::IPV4 => {
                let n = match (proto_known, f.nw_proto) {
                    (true, ipproto::ICMP) => Some("icmp"),
                    (true, IPPROTO_IGMP) => Some("igmp"),
                    (true, ipproto::TCP) => Some("tcp"),
                    (true, ipproto::UDP) => Some("udp"),
                    (true, IPPROTO_SCTP) => Some("sctp"),
                    _ => None,
                };
                skip_proto = n.is_some();
                Some(n.unwrap_or("ip"))
            }
            ethertype::IPV6 => {
                let n = match (proto_known, f.nw_proto) {
                    (true, ipproto::ICMPV6) => Some("icmp6"),
                    (true, ipproto::TCP) => Some("tcp6"),
                    (true, ipproto::UDP) => Some("udp6"),
                    (true, IPPROTO_SCTP) => Some("sctp6"),
                    _ => None,
                };
                skip_proto = n.is_some();
                Some(n.unwrap_or("ipv6"))
            }
            ethertype::ARP => Some("arp"),
            ETH_TYPE_RARP => Some("rarp"),
            0x8847 => Some("mpls"),
            0x8848 => Some("mplsm"),
            _ => None,
        };
        match name {
            Some(n) => o.item(n),
            None => skip_type = false,
        }
    }
    for i in 0..8 {
        o.hex_masked(
            &format!("reg{}", i),
            f.regs[i].into(),
            w.regs[i].into(),
            u32::MAX.into(),
        );
    }
    o.hex_masked("tun_id", f.tun_id.into(), w.tun_id.into(), u64::MAX.into());
    o.ip("tun_src", f.tun_src, w.tun_src);
    o.ip("tun_dst", f.tun_dst, w.tun_dst);
    o.hex_masked(
        "metadata",
        f.metadata.into(),
        w.metadata.into(),
        u64::MAX.into(),
    );
    if w.in_port != 0 {
        o.item(format!("in_port={}", format_port(f.in_port)));
    }
    if w.vlan_tci != 0 {
        let vid_mask = w.vlan_tci & VLAN_VID_MASK;
        let pcp_mask = w.vlan_tci & VLAN_PCP_MASK;
        let cfi = w.vlan_tci & VLAN_CFI;
        if cfi != 0
            && f.vlan_tci & VLAN_CFI != 0
            && (vid_mask == 0 || vid_mask == VLAN_VID_MASK)
            && (pcp_mask == 0 || pcp_mask == VLAN_PCP_MASK)
            && (vid_mask != 0 || pcp_mask != 0)
        {
            if vid_mask != 0 {
                o.item(format!("dl_vlan={}", f.vlan_tci & VLAN_VID_MASK));
            }
            if pcp_mask != 0 {
                o.item(format!("dl_vlan_pcp={}", f.vlan_tci >> VLAN_PCP_SHIFT));
            }
        } else if w.vlan_tci == 0xffff {
            o.item(format!("vlan_tci={:#06x}", f.vlan_tci));
        } else {
            o.item(format!("vlan_tci={:#06x}/{:#06x}", f.vlan_tci, w.vlan_tci));
        }
    }
    o.eth("dl_src", &f.dl_src, &w.dl_src);
    o.eth("dl_dst", &f.dl_dst, &w.dl_dst);
    if !skip_type && w.dl_type != 0 {
        o.item(format!("dl_type={:#06x}", f.dl_type));
    }
    let arp = f.dl_type == ethertype::ARP || f.dl_type == ETH_TYPE_RARP;
    if f.dl_type == ethertype::IPV6 {
        o.ipv6("ipv6_src", &f.ipv6_src, &w.ipv6_src);
        o.ipv6("ipv6_dst", &f.ipv6_dst, &w.ipv6_dst);
        if w.ipv6_label != 0 {
            if w.ipv6_label == 0xfffff || w.ipv6_label == u32::MAX {
                o.item(format!("ipv6_label=0x{:05x}", f.ipv6_label));
            } else {
                o.item(format!(
                    "ipv6_label=0x{:05x}/0x{:05x}",
                    f.ipv6_label, w.ipv6_label
                ));
            }
        }
    } else if arp {
        o.ip("arp_spa", f.nw_src, w.nw_src);
        o.ip("arp_tpa", f.nw_dst, w.nw_dst);
    } else {
        o.ip("nw_src", f.nw_src, w.nw_src);
        o.ip("nw_dst", f.nw_dst, w.nw_dst);
    }
    if !skip_proto && w.nw_proto != 0 {
        if arp {
            o.item(format!("arp_op={}", f.nw_proto));
        } else {
            o.item(format!("nw_proto={}", f.nw_proto));
        }
    }
    if arp {
        o.eth("arp_sha", &f.arp_sha, &w.arp_sha);
        o.eth("arp_tha", &f.arp_tha, &w.arp_tha);
    }
    if w.nw_tos & 0xfc != 0 {
        o.item(format!("nw_tos={}", f.nw_tos & 0xfc));
    }
    if w.nw_tos & 0x03 != 0 {
        o.item(format!("nw_ecn={}", f.nw_tos & 0x03));
    }
    if w.nw_ttl != 0 {
        o.item(format!("nw_ttl={}", f.nw_ttl));
    }
    let frag = f.nw_frag;
    match w.nw_frag & (FRAG_ANY | FRAG_LATER) {
        3 => o.item(format!(
            "nw_frag={}",
            match (frag & FRAG_ANY != 0, frag & FRAG_LATER != 0) {
                (true, true) => "later",
                (true, false) => "first",
                (false, true) => "<error>",
                (false, false) => "no",
            }
        )),
        FRAG_ANY => o.item(format!(
            "nw_frag={}",
            if frag & FRAG_ANY != 0 { "yes" } else { "no" }
        )),
        FRAG_LATER => o.item(format!(
            "nw_frag={}",
            if frag & FRAG_LATER != 0 {
                "later"
            } else {
                "not_later"
            }
        )),
        _ => {}
    }
    let (src, dst) = match (f.dl_type, f.nw_proto) {
        (ethertype::IPV4, ipproto::ICMP) => ("icmp_type", "icmp_code"),
        (ethertype::IPV4, IPPROTO_IGMP) => ("igmp_type", "igmp_code"),
        (ethertype::IPV6, ipproto::ICMPV6) => ("icmp_type", "icmp_code"),
        _ => ("tp_src", "tp_dst"),
    };
    o.dec16_masked(src, f.tp_src, w.tp_src);
    o.dec16_masked(dst, f.tp_dst, w.tp_dst);
    if f.dl_type == ethertype::IPV6 && f.nw_proto == ipproto::ICMPV6 {
        // lib/match.c: the ND fields follow icmp_type/icmp_code.
        o.ipv6("nd_target", &f.nd_target, &w.nd_target);
        o.eth("nd_sll", &f.arp_sha, &w.arp_sha);
        o.eth("nd_tll", &f.arp_tha, &w.arp_tha);
        if w.nw_src != 0 {
            o.item(format!("nd_reserved={}", f.nw_src));
        }
        if w.tcp_flags != 0 {
            o.item(format!("nd_options_type={}", f.tcp_flags & 0xff));
        }
    }
    let ip_any = f.dl_type == ethertype::IPV4 || f.dl_type == ethertype::IPV6;
    if ip_any && f.nw_proto == ipproto::TCP && w.tcp_flags & 0x0fff != 0 {
        o.item(format!(
            "tcp_flags={}",
            flags(
                u32::from(f.tcp_flags),
                u32::from(w.tcp_flags & 0x0fff),
                TCP_FLAG_NAMES
            )
        ));
    }
    let mut s = o.0;
    if s.ends_with(',') {
        s.pop();
    }
    s
}

/// A match as `ovs-ofctl dump-flows` prints it (lib/match.c `match_format`).
pub fn format_match(m: &Match) -> String {
    format_match_prio(m, DEFAULT_PRIORITY)
}

/// The name OVS's set_field prints for a field (meta-flow `mf->name`).
pub(crate) fn mf_name(f: Field) -> &'static str {
    match f {
        Field::EthSrc => "eth_src",
        Field::EthDst => "eth_dst",
        Field::EthType => "eth_type",
        Field::VlanPcp => "vlan_pcp",
        Field::IpSrc => "ip_src",
        Field::IpDst => "ip_dst",
        Field::NwFrag => "ip_frag",
        f => f.name(),
    }
}

/// The name `mf_format_subfield` prints: the NXM/OXM name when the field has one.
fn nxm_name(f: Field) -> &'static str {
    let info = f.info();
    info.aliases
        .iter()
        .copied()
        .find(|a| a.starts_with("NXM_") || a.starts_with("OXM_"))
        .unwrap_or(info.name)
}

/// `NAME[]`, `NAME[N]` or `NAME[A..B]`.
pub fn format_subfield(r: &FieldRange) -> String {
    let name = nxm_name(r.field);
    if r.ofs == 0 && r.n_bits == r.field.info().width {
        format!("{}[]", name)
    } else if r.n_bits == 1 {
        format!("{}[{}]", name, r.ofs)
    } else {
        format!(
            "{}[{}..{}]",
            name,
            r.ofs,
            r.ofs.saturating_add(r.n_bits.saturating_sub(1))
        )
    }
}

/// A field value as `mf_format` prints it.
pub(crate) fn field_value(field: Field, v: u128) -> String {
    let info = field.info();
    if field == Field::InPort {
        return format_port(v as u32);
    }
    match info.format {
        Format::Decimal => v.to_string(),
        Format::Mac => mac(v),
        Format::Ipv4 => Ipv4Addr::from(v as u32).to_string(),
        Format::Ipv6 => ipv6_text(v),
        _ => c_hex(v),
    }
}

fn format_action(a: &Action, s: &mut String) {
    match a {
        Action::Output(p) => match *p {
            ofport::CONTROLLER => s.push_str("CONTROLLER:65535"),
            p if p <= ofport::MAX => {
                let _ = write!(s, "output:{}", p);
            }
            p => s.push_str(&format_port(p)),
        },
        Action::SetField { field, value, mask } => {
            let full = field.info().max_value();
            let mask = mask & full;
            if mask == full {
                if *field == Field::NwTtl {
                    // OF1.1+ has OFPAT_SET_NW_TTL; OVS decodes it as mod_nw_ttl.
                    let _ = write!(s, "mod_nw_ttl:{}", value & full);
                } else {
                    let _ = write!(
                        s,
                        "set_field:{}->{}",
                        field_value(*field, value & full),
                        mf_name(*field)
                    );
                }
            } else {
                // OF1.3 carries a partial set_field as NXAST_REG_LOADs.
                let segs = super::parse::mask_segments(mask);
                if segs.is_empty() {
                    let _ = write!(
                        s,
                        "set_field:{}/0->{}",
                        c_hex(value & full),
                        mf_name(*field)
                    );
                }
                for (i, (ofs, n)) in segs.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    let seg = (value >> ofs)
                        & (if *n >= 128 {
                            u128::MAX
                        } else {
                            (1u128 << n) - 1
                        });
                    let r = FieldRange {
                        field: *field,
                        ofs: *ofs,
                        n_bits: *n,
                    };
                    let _ = write!(s, "load:{}->{}", c_hex(seg), format_subfield(&r));
                }
            }
        }
        Action::Load { dst, value } => {
            let _ = write!(s, "load:{}->{}", c_hex(*value), format_subfield(dst));
        }
        Action::Move { src, dst } => {
            let _ = write!(s, "move:{}->{}", format_subfield(src), format_subfield(dst));
        }
        Action::DecTtl => s.push_str("dec_ttl"),
        Action::Route { table: 0 } => s.push_str("route"),
        Action::Route { table } => {
            let _ = write!(s, "route(table={table})");
        }
        Action::PushVlan(t) => {
            let _ = write!(s, "push_vlan:{:#x}", t);
        }
        Action::PopVlan => s.push_str("pop_vlan"),
        Action::Resubmit { in_port, table } => match (in_port, table) {
            (Some(p), None) => {
                let _ = write!(s, "resubmit:{}", format_port(*p));
            }
            _ => {
                s.push_str("resubmit(");
                if let Some(p) = in_port {
                    s.push_str(&format_port(*p));
                }
                s.push(',');
                if let Some(t) = table {
                    let _ = write!(s, "{}", t);
                }
                s.push(')');
            }
        },
        Action::WriteMetadata { value, mask } => {
            let _ = write!(s, "write_metadata:{}", c_hex(u128::from(*value)));
            if *mask != u64::MAX {
                let _ = write!(s, "/{}", c_hex(u128::from(*mask)));
            }
        }
        Action::GotoTable(t) => {
            let _ = write!(s, "goto_table:{}", t);
        }
        Action::Group(g) => {
            let _ = write!(s, "group:{}", g);
        }
        Action::Ct(ct) => format_ct(s, ct),
        Action::CtClear => s.push_str("ct_clear"),
    }
}

/// `ct(...)` in OVS's order (lib/ofp-actions.c `format_CT`): commit,
/// table, zone, then exec(...); an empty argument list prints `ct`.
fn format_ct(s: &mut String, ct: &crate::flow::CtAction) {
    let mut parts: Vec<String> = Vec::new();
    if ct.commit {
        parts.push("commit".into());
    }
    if let Some(t) = ct.table {
        parts.push(format!("table={t}"));
    }
    match ct.zone {
        crate::flow::CtZone::Imm(0) => {}
        crate::flow::CtZone::Imm(z) => parts.push(format!("zone={z}")),
        crate::flow::CtZone::Field(r) => parts.push(format!("zone={}", format_subfield(&r))),
    }
    let mut exec: Vec<String> = Vec::new();
    let set = |v: u128, m: u128, full: u128, name: &str| {
        if m == full {
            format!("set_field:{}->{name}", c_hex(v))
        } else {
            format!("set_field:{}/{}->{name}", c_hex(v), c_hex(m))
        }
    };
    if let Some(n) = &ct.nat {
        // OVS prints nat after zone and before exec (format_CT).
        parts.push(n.format());
    }
    if let Some((v, m)) = ct.mark {
        exec.push(set(v.into(), m.into(), u32::MAX.into(), "ct_mark"));
    }
    if let Some((v, m)) = ct.label {
        exec.push(set(v, m, u128::MAX, "ct_label"));
    }
    if !exec.is_empty() {
        parts.push(format!("exec({})", exec.join(",")));
    }
    if parts.is_empty() {
        s.push_str("ct");
    } else {
        let _ = write!(s, "ct({})", parts.join(","));
    }
}

/// An action list as `ovs-ofctl -O OpenFlow13 dump-flows` prints it after
/// `actions=` (lib/ofp-actions.c `ofpacts_format`); `drop` when empty.
pub fn format_actions(a: &[Action]) -> String {
    if a.is_empty() {
        return "drop".to_string();
    }
    let mut s = String::new();
    for (i, act) in a.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        format_action(act, &mut s);
    }
    s
}

/// The flow part of `ofputil_flow_stats_format` (with or without stats).
fn flow_stats(f: &Flow, stats: Option<(Duration, u64, u64, Option<u64>)>) -> String {
    let mut s = String::new();
    if stats.is_some() || f.cookie != 0 {
        let _ = write!(s, "cookie={:#x}, ", f.cookie);
    }
    if let Some((d, _, _, _)) = stats {
        let _ = write!(s, "duration={}, ", duration(d));
    }
    if stats.is_some() || f.table != 0 {
        let _ = write!(s, "table={}, ", f.table);
    }
    if let Some((_, p, b, _)) = stats {
        let _ = write!(s, "n_packets={}, n_bytes={}, ", p, b);
    }
    if f.idle_timeout != 0 {
        let _ = write!(s, "idle_timeout={}, ", f.idle_timeout);
    }
    if f.hard_timeout != 0 {
        let _ = write!(s, "hard_timeout={}, ", f.hard_timeout);
    }
    // Flags follow the timeouts, space-separated (ofputil_flow_stats_format).
    for name in f.flags.names() {
        s.push_str(name);
        s.push(' ');
    }
    if let Some((_, _, _, Some(age))) = stats {
        let _ = write!(s, "idle_age={}, ", age);
    }
    let m = format_match_prio(&f.matches, f.priority);
    if !m.is_empty() {
        s.push_str(&m);
        s.push(' ');
    }
    s.push_str("actions=");
    s.push_str(&format_actions(&f.actions));
    s
}

/// `ofp_print_duration`: seconds, then 3 decimals when the fraction is whole
/// milliseconds, else as many as needed; no decimals for whole seconds.
fn duration(d: Duration) -> String {
    let (sec, ns) = (d.as_secs(), d.subsec_nanos());
    if ns == 0 {
        format!("{}s", sec)
    } else if ns % 1_000_000 == 0 {
        format!("{}.{:03}s", sec, ns / 1_000_000)
    } else {
        let frac = format!("{:09}", ns);
        format!("{}.{}s", sec, frac.trim_end_matches('0'))
    }
}

/// A flow as one line of `ovs-ofctl -O OpenFlow13 --no-stats dump-flows`,
/// without the leading space ovs-ofctl puts before each line:
/// `cookie=` only when non-zero, `table=` only when not 0, timeouts when set,
/// then `priority=N,` (omitted for 32768), the match, and ` actions=...`.
/// [`super::parse::parse_flow`] reads it back to the same flow.
pub fn format_flow(f: &Flow) -> String {
    flow_stats(f, None)
}

/// One line of `ovs-ofctl -O OpenFlow13 dump-flows`, leading space included:
/// ` cookie=0x0, duration=1.234s, table=0, n_packets=0, n_bytes=0, idle_timeout=10, priority=100,ip,nw_dst=10.0.0.0/8 actions=output:2`.
///
/// `idle_age` is printed (after the timeouts, as `ofputil_flow_stats_format`
/// does) only when given: OVS shows it for Nicira flow stats (OpenFlow 1.0
/// dumps) but not for OpenFlow 1.3, so pass `None` to match `-O OpenFlow13`.
pub fn format_flow_stats(
    f: &Flow,
    duration: Duration,
    n_packets: u64,
    n_bytes: u64,
    idle_age: Option<u64>,
) -> String {
    format!(
        " {}",
        flow_stats(f, Some((duration, n_packets, n_bytes, idle_age)))
    )
}

/// A packet key as `ofproto/trace` prints it on its `Flow:` line (lib/flow.c
/// `flow_format`): every field the packet's protocols make meaningful, zero
/// or not, except registers, metadata and conntrack fields that are zero.
/// Tunnel fields print when `tun_dst` or `tun_id` is set.
pub fn format_key(k: &FlowKey) -> String {
    let mut m = FlowKey::ZERO;
    m.in_port = u32::MAX;
    if k.ct_state != 0 {
        m.ct_state = 0xff;
    }
    if k.ct_zone != 0 {
        m.ct_zone = u16::MAX;
    }
    if k.ct_mark != 0 {
        m.ct_mark = u32::MAX;
    }
    if k.ct_label != [0; 16] {
        m.ct_label = [0xff; 16];
    }
    for i in 0..8 {
        if k.regs[i] != 0 {
            m.regs[i] = u32::MAX;
        }
    }
    if k.metadata != 0 {
        m.metadata = u64::MAX;
    }
    if k.tun_dst != 0 || k.tun_id != 0 {
        m.tun_id = u64::MAX;
        if k.tun_dst != 0 {
            m.tun_src = u32::MAX;
            m.tun_dst = u32::MAX;
        }
    }
    m.dl_src = [0xff; 6];
    m.dl_dst = [0xff; 6];
    m.dl_type = u16::MAX;
    m.vlan_tci = u16::MAX;
    let ip4 = k.dl_type == ethertype::IPV4;
    let ip6 = k.dl_type == ethertype::IPV6;
    if ip4 {
        m.nw_src = u32::MAX;
        m.nw_dst = u32::MAX;
    } else if ip6 {
        m.ipv6_src = [0xff; 16];
        m.ipv6_dst = [0xff; 16];
        m.ipv6_label = 0xfffff;
    } else if k.dl_type == ethertype::ARP || k.dl_type == ETH_TYPE_RARP {
        m.nw_src = u32::MAX;
        m.nw_dst = u32::MAX;
        m.nw_proto = u8::MAX;
        m.arp_sha = [0xff; 6];
        m.arp_tha = [0xff; 6];
    }
    if ip4 || ip6 {
        m.nw_proto = u8::MAX;
        m.nw_tos = u8::MAX;
        m.nw_ttl = u8::MAX;
        m.nw_frag = FRAG_ANY | FRAG_LATER;
        if k.nw_frag & FRAG_LATER == 0
            && matches!(
                k.nw_proto,
                ipproto::TCP
                    | ipproto::UDP
                    | ipproto::ICMP
                    | ipproto::ICMPV6
                    | IPPROTO_IGMP
                    | IPPROTO_SCTP
            )
        {
            m.tp_src = u16::MAX;
            m.tp_dst = u16::MAX;
            if k.nw_proto == ipproto::TCP {
                m.tcp_flags = u16::MAX;
            }
            // lib/flow.c flow_format: an NS/NA shows its ND fields.
            let nd = ip6
                && k.nw_proto == ipproto::ICMPV6
                && k.tp_dst == 0
                && matches!(k.tp_src, 135 | 136);
            if nd {
                m.nd_target = [0xff; 16];
                m.arp_sha = [0xff; 6];
                m.arp_tha = [0xff; 6];
                m.nw_src = u32::MAX;
                m.tcp_flags = 0xff;
            }
        }
    }
    format_match(&Match::new(*k, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_style_numbers_and_addresses() {
        assert_eq!(c_hex(0), "0");
        assert_eq!(c_hex(0x1f), "0x1f");
        assert_eq!(ipv4_masked(0x0a01_0000, 0xffff_0000), "10.1.0.0/16");
        assert_eq!(
            ipv4_masked(0x0a00_0200, 0xff00_ff00),
            "10.0.2.0/255.0.255.0"
        );
        assert_eq!(ipv4_masked(0x0a00_0001, u32::MAX), "10.0.0.1");
        // glibc inet_ntop prints IPv4-compatible addresses with a dotted quad.
        assert_eq!(ipv6_text(0x0102_0304), "::1.2.3.4");
        assert_eq!(ipv6_text(1), "::1");
        assert_eq!(ipv6_text(0xffff_0102_0304), "::ffff:1.2.3.4");
        assert_eq!(duration(Duration::new(1, 234_000_000)), "1.234s");
        assert_eq!(duration(Duration::new(2, 0)), "2s");
        assert_eq!(duration(Duration::new(0, 120_000)), "0.00012s");
        assert_eq!(flags(0x22, 0x23, CT_STATE_NAMES), "-new+est+trk");
        assert_eq!(flags(0, 0xff, CT_STATE_NAMES), "0");
        assert_eq!(format_port(ofport::LOCAL), "LOCAL");
        assert_eq!(format_port(7), "7");
    }

    #[test]
    fn hand_built_extremes_do_not_panic() {
        let r = FieldRange {
            field: Field::Reg0,
            ofs: u32::MAX,
            n_bits: u32::MAX,
        };
        let _ = format_subfield(&r);
        let a = Action::SetField {
            field: Field::Ipv6Src,
            value: u128::MAX,
            mask: u128::MAX - 1,
        };
        let _ = format_actions(&[a]);
        let _ = format_match(&Match::exact(&FlowKey::all_ones()));
    }
}
