//! Property tests for the flow syntax:
//! - round trip: for random valid flows built from the field registry
//!   (prerequisites respected), `parse(format(parse(text)))` is the same flow
//!   and `format` is a fixed point;
//! - robustness: no input, however malformed, panics the parser, the trace
//!   parser or the formatter of whatever they accept.

use proptest::prelude::*;
use switch::flow::field::{Format, ALL_FIELDS};
use switch::flow::key::{ethertype, ipproto};
use switch::flow::{
    format_flow, format_key, parse_flow, parse_packet, Field, FlowKey, ParseMode, Prereq,
};

/// Deterministic generator driven by a proptest seed (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn bits(&mut self, width: u32) -> u128 {
        let v = (u128::from(self.next()) << 64) | u128::from(self.next());
        if width >= 128 {
            v
        } else {
            v & ((1u128 << width) - 1)
        }
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

fn int_text(r: &mut Rng, v: u128) -> String {
    if r.chance(50) {
        format!("{:#x}", v)
    } else {
        v.to_string()
    }
}

fn mac_text(v: u128) -> String {
    let b = v.to_be_bytes();
    format!(
        "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
        b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn random_mask(r: &mut Rng, width: u32) -> u128 {
    if r.chance(50) {
        // Prefix mask.
        let len = r.below(u64::from(width) + 1) as u32;
        let all = if width >= 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        if len == 0 {
            0
        } else {
            all & !(if width - len >= 128 {
                u128::MAX
            } else {
                (1u128 << (width - len)) - 1
            })
        }
    } else {
        r.bits(width)
    }
}

fn port_text(r: &mut Rng) -> String {
    match r.below(4) {
        0 => "LOCAL".into(),
        1 => r
            .pick(&["IN_PORT", "NORMAL", "FLOOD", "ALL", "CONTROLLER"])
            .to_string(),
        2 => (1 + r.below(0xfeff)).to_string(),
        _ => (0x10000 + r.below(0xffff_ff00 - 0x10000)).to_string(),
    }
}

/// Text for `field=VALUE[/MASK]` valid for the field.
fn value_text(r: &mut Rng, f: Field, for_set_field: bool) -> String {
    let info = f.info();
    match f {
        Field::InPort => return port_text(r),
        Field::DlVlan => return r.below(4096).to_string(),
        Field::VlanPcp => return r.below(8).to_string(),
        Field::NwTos => return (r.below(64) * 4).to_string(),
        Field::VlanVid if for_set_field => return (0x1000 | r.below(4096)).to_string(),
        Field::VlanTci if for_set_field => return format!("{:#x}", 0x1000 | r.below(0x10000)),
        _ => {}
    }
    let w = info.width;
    let masked = info.maskable && r.chance(40);
    // A set_field mask must select at least one bit; a match mask may be empty.
    let floor: u128 = if for_set_field { 1 << (w - 1) } else { 0 };
    match info.format {
        Format::Frag => r
            .pick(&["no", "yes", "first", "later", "not_later"])
            .to_string(),
        Format::CtState | Format::TcpFlags => {
            let names: &[&str] = if info.format == Format::CtState {
                &["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"]
            } else {
                &["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"]
            };
            match r.below(3) {
                0 => {
                    let mut s = String::new();
                    for n in names {
                        if r.chance(30) {
                            s.push(if r.chance(50) { '+' } else { '-' });
                            s.push_str(n);
                        }
                    }
                    if s.is_empty() {
                        format!("+{}", names[0])
                    } else {
                        s
                    }
                }
                1 => format!("{:#x}/{:#x}", r.bits(w), r.bits(w)),
                _ => format!("{:#x}", r.bits(w)),
            }
        }
        Format::Mac => {
            let mut s = mac_text(r.bits(48));
            if masked {
                s = format!("{}/{}", s, mac_text(random_mask(r, 48) | floor));
            }
            s
        }
        Format::Ipv4 => {
            let v = r.bits(32) as u32;
            let mut s = std::net::Ipv4Addr::from(v).to_string();
            if masked {
                if r.chance(50) {
                    s = format!("{}/{}", s, r.below(33).max(u64::from(for_set_field)));
                } else {
                    s = format!(
                        "{}/{}",
                        s,
                        std::net::Ipv4Addr::from((r.bits(32) | floor) as u32)
                    );
                }
            }
            s
        }
        Format::Ipv6 => {
            let v = if r.chance(20) {
                r.bits(32)
            } else {
                r.bits(128)
            };
            let mut s = std::net::Ipv6Addr::from(v).to_string();
            if masked {
                if r.chance(50) {
                    s = format!("{}/{}", s, r.below(129).max(u64::from(for_set_field)));
                } else {
                    s = format!(
                        "{}/{}",
                        s,
                        std::net::Ipv6Addr::from(random_mask(r, 128) | floor)
                    );
                }
            }
            s
        }
        Format::Decimal | Format::Hex => {
            let max = info.max_value();
            let v = if matches!(
                f,
                Field::IcmpType | Field::IcmpCode | Field::Icmpv6Type | Field::Icmpv6Code
            ) {
                r.bits(8)
            } else {
                r.bits(w) & max
            };
            let mut s = int_text(r, v);
            if masked {
                s = format!("{}/{:#x}", s, random_mask(r, w) | floor);
            }
            s
        }
    }
}

const PROTOS: &[(&str, u16, u8)] = &[
    ("", 0, 0),
    ("ip", ethertype::IPV4, 0),
    ("ipv6", ethertype::IPV6, 0),
    ("arp", ethertype::ARP, 0),
    ("tcp", ethertype::IPV4, ipproto::TCP),
    ("udp", ethertype::IPV4, ipproto::UDP),
    ("icmp", ethertype::IPV4, ipproto::ICMP),
    ("tcp6", ethertype::IPV6, ipproto::TCP),
    ("udp6", ethertype::IPV6, ipproto::UDP),
    ("icmp6", ethertype::IPV6, ipproto::ICMPV6),
    ("sctp", ethertype::IPV4, 132),
];

fn overlaps(a: &FlowKey, b: &FlowKey) -> bool {
    a.words().iter().zip(b.words()).any(|(x, y)| x & y != 0)
}

/// A random valid add-flow string.
fn random_flow(seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let (proto, dl_type, nw_proto) = *r.pick(PROTOS);
    let mut key = FlowKey::ZERO;
    key.dl_type = dl_type;
    key.nw_proto = nw_proto;
    let mut parts: Vec<String> = Vec::new();
    let table = r.below(250) as u8;
    if r.chance(50) {
        parts.push(format!("table={}", table));
    }
    if r.chance(50) {
        parts.push(format!("priority={}", r.below(65536)));
    }
    if r.chance(30) {
        parts.push(format!("cookie={:#x}", r.next()));
    }
    if r.chance(20) {
        parts.push(format!("idle_timeout={}", r.below(65536)));
    }
    if r.chance(20) {
        parts.push(format!("hard_timeout={}", r.below(65536)));
    }
    if !proto.is_empty() {
        parts.push(proto.to_string());
    }
    // Protocol slots are taken by the keyword.
    let mut used = FlowKey::ZERO;
    used.dl_type = 0xffff;
    if nw_proto != 0 {
        used.nw_proto = 0xff;
    }
    let mut has_vlan = false;
    let n_fields = r.below(8);
    for _ in 0..n_fields {
        let f = *r.pick(ALL_FIELDS);
        if matches!(f, Field::EthType | Field::NwProto) {
            continue;
        }
        let p = f.info().prereq;
        let ok = match f {
            Field::DlVlan | Field::VlanPcp => true,
            _ => p.satisfied_by(&key) && p != Prereq::Vlan,
        };
        if !ok {
            continue;
        }
        let m = if matches!(f, Field::IcmpType | Field::Icmpv6Type) {
            Field::TpSrc.full_mask()
        } else if matches!(f, Field::IcmpCode | Field::Icmpv6Code) {
            Field::TpDst.full_mask()
        } else if matches!(f, Field::DlVlan | Field::VlanPcp | Field::VlanVid) {
            Field::VlanTci.full_mask()
        } else {
            f.full_mask()
        };
        if overlaps(&m, &used) {
            continue;
        }
        used.or_assign(&m);
        if matches!(f, Field::DlVlan | Field::VlanPcp) {
            has_vlan = true;
        }
        let name = if r.chance(70) || f.info().aliases.is_empty() {
            f.info().name
        } else {
            r.pick(f.info().aliases)
        };
        parts.push(format!("{}={}", name, value_text(&mut r, f, false)));
    }
    // Actions, tracking what OVS's ofpacts_check would see.
    let frag_later = parts.iter().any(|p| p.ends_with("=later"));
    let ip_any = dl_type == ethertype::IPV4 || dl_type == ethertype::IPV6;
    let mut acts: Vec<String> = Vec::new();
    let n_acts = r.below(7);
    for _ in 0..n_acts {
        match r.below(14) {
            0 => acts.push(format!("output:{}", 1 + r.below(1000))),
            1 => acts.push(
                r.pick(&[
                    "LOCAL",
                    "NORMAL",
                    "FLOOD",
                    "ALL",
                    "IN_PORT",
                    "CONTROLLER",
                    "in_port",
                    "7",
                ])
                .to_string(),
            ),
            2 => {
                let f = *r.pick(ALL_FIELDS);
                let info = f.info();
                let vlan_field = matches!(
                    f,
                    Field::VlanVid | Field::DlVlan | Field::VlanPcp | Field::VlanTci
                );
                if !info.writable || !info.prereq.satisfied_by(&key) || (vlan_field && !has_vlan) {
                    continue;
                }
                if matches!(f, Field::TpSrc | Field::TpDst)
                    && ((nw_proto != ipproto::TCP && nw_proto != ipproto::UDP) || frag_later)
                {
                    continue;
                }
                acts.push(format!(
                    "set_field:{}->{}",
                    value_text(&mut r, f, true),
                    info.name
                ));
            }
            3 => {
                let f = *r.pick(ALL_FIELDS);
                let info = f.info();
                if !info.writable || !info.prereq.satisfied_by(&key) {
                    continue;
                }
                if matches!(f, Field::VlanVid | Field::DlVlan | Field::VlanPcp) && !has_vlan {
                    continue;
                }
                let n = 1 + r.below(u64::from(info.width)) as u32;
                let ofs = r.below(u64::from(info.width - n) + 1) as u32;
                let v = r.bits(n);
                acts.push(format!(
                    "load:{:#x}->{}[{}..{}]",
                    v,
                    info.name,
                    ofs,
                    ofs + n - 1
                ));
            }
            4 => {
                let a = *r.pick(ALL_FIELDS);
                let b = *r.pick(ALL_FIELDS);
                let (ai, bi) = (a.info(), b.info());
                let vlan = |f: Field| matches!(f, Field::VlanVid | Field::DlVlan | Field::VlanPcp);
                if !bi.writable
                    || !ai.prereq.satisfied_by(&key)
                    || !bi.prereq.satisfied_by(&key)
                    || ((vlan(a) || vlan(b)) && !has_vlan)
                {
                    continue;
                }
                let n = 1 + r.below(u64::from(ai.width.min(bi.width))) as u32;
                let ao = r.below(u64::from(ai.width - n) + 1) as u32;
                let bo = r.below(u64::from(bi.width - n) + 1) as u32;
                acts.push(format!(
                    "move:{}[{}..{}]->{}[{}..{}]",
                    ai.name,
                    ao,
                    ao + n - 1,
                    bi.name,
                    bo,
                    bo + n - 1
                ));
            }
            5 => acts.push(format!("mod_dl_src:{}", mac_text(r.bits(48)))),
            6 if dl_type == ethertype::IPV4 => acts.push(format!(
                "mod_nw_dst:{}",
                std::net::Ipv4Addr::from(r.bits(32) as u32)
            )),
            7 if ip_any => acts.push(match r.below(4) {
                0 => format!("mod_nw_tos:{}", r.below(64) * 4),
                1 => format!("mod_nw_ecn:{}", r.below(4)),
                2 => format!("mod_nw_ttl:{}", r.below(256)),
                _ => "dec_ttl".to_string(),
            }),
            8 if (nw_proto == ipproto::TCP || nw_proto == ipproto::UDP) && !frag_later => {
                acts.push(format!("mod_tp_src:{}", r.below(65536)))
            }
            9 => {
                acts.push(format!("mod_vlan_vid:{}", r.below(4096)));
                has_vlan = true;
            }
            10 => {
                acts.push(format!("mod_vlan_pcp:{}", r.below(8)));
                has_vlan = true;
            }
            11 => {
                if has_vlan && r.chance(50) {
                    acts.push("strip_vlan".into());
                    has_vlan = false;
                } else {
                    acts.push(format!("push_vlan:{}", r.pick(&["0x8100", "0x88a8"])));
                    has_vlan = true;
                }
            }
            12 => acts.push(match r.below(3) {
                0 => format!("resubmit:{}", 1 + r.below(100)),
                1 => format!("resubmit(,{})", r.below(255)),
                _ => format!("resubmit({},{})", 1 + r.below(100), r.below(254)),
            }),
            _ => {}
        }
    }
    if r.chance(20) {
        acts.push(format!("write_metadata:{:#x}/{:#x}", r.next(), r.next()));
    }
    if r.chance(20) && table < 254 {
        acts.push(format!(
            "goto_table:{}",
            table + 1 + r.below(u64::from(254 - table)) as u8
        ));
    }
    let a = if acts.is_empty() {
        "drop".to_string()
    } else {
        acts.join(",")
    };
    let sep = if r.chance(50) { "," } else { " " };
    let mut text = parts.join(if r.chance(50) { "," } else { ", " });
    if !text.is_empty() {
        text.push_str(sep);
    }
    text.push_str("actions=");
    text.push_str(&a);
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn format_then_parse_is_identity(seed in any::<u64>()) {
        let text = random_flow(seed);
        let spec = parse_flow(&text, ParseMode::Add)
            .map_err(|e| TestCaseError::fail(format!("generated flow rejected:\n{e}")))?;
        let flow = spec.to_flow();
        let printed = format_flow(&flow);
        let again = parse_flow(&printed, ParseMode::Add)
            .map_err(|e| TestCaseError::fail(format!("{text}\nformatted as\n{printed}\nwhich does not parse:\n{e}")))?;
        prop_assert_eq!(&again.to_flow(), &flow, "{} -> {}", text, printed);
        prop_assert_eq!(format_flow(&again.to_flow()), printed);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
        for mode in [ParseMode::Add, ParseMode::Modify, ParseMode::ModifyStrict,
                     ParseMode::Delete, ParseMode::DeleteStrict, ParseMode::Dump] {
            if let Ok(spec) = parse_flow(&s, mode) {
                let _ = format_flow(&spec.to_flow());
            } else if let Err(e) = parse_flow(&s, mode) {
                prop_assert!(e.offset <= s.len());
                let _ = e.to_string();
            }
        }
        if let Ok(k) = parse_packet(&s) {
            let _ = format_key(&k);
        }
    }

    #[test]
    fn flowish_text_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("ip"), Just("tcp"), Just("arp"), Just("ipv6"), Just(","), Just(" "), Just("="),
        Just(":"), Just("("), Just(")"), Just("/"), Just("->"), Just("["), Just("]"),
        Just(".."), Just("actions"), Just("nw_dst"), Just("10.0.0.1"), Just("reg0"),
        Just("load"), Just("move"), Just("set_field"), Just("resubmit"), Just("output"),
        Just("0x"), Just("ff"), Just("65535"), Just("1"), Just("dl_vlan"), Just("ct_state"),
        Just("+trk"), Just("-"), Just("|"), Just("goto_table"), Just("drop"), Just("é"),
        Just("ipv6_src"), Just("::1"), Just("tcp_flags"), Just("mod_vlan_vid"),
    ], 0..24)) {
        let s: String = parts.concat();
        for mode in [ParseMode::Add, ParseMode::Delete, ParseMode::Modify] {
            match parse_flow(&s, mode) {
                Ok(spec) => {
                    // Anything accepted formats and reparses to the same flow.
                    if mode == ParseMode::Add {
                        let printed = format_flow(&spec.to_flow());
                        let again = parse_flow(&printed, ParseMode::Add)
                            .map_err(|e| TestCaseError::fail(format!("{s} -> {printed}: {e}")))?;
                        prop_assert_eq!(again.to_flow(), spec.to_flow());
                    }
                }
                Err(e) => {
                    prop_assert!(e.offset <= s.len());
                    let _ = e.to_string();
                }
            }
        }
        if let Ok(k) = parse_packet(&s) {
            let _ = format_key(&k);
        }
    }

    #[test]
    fn trace_key_format_is_stable(seed in any::<u64>()) {
        // A packet described field by field prints every field back in flow_format order,
        // and that Flow: line (a valid packet description) parses to the same key.
        let mut r = Rng(seed | 1);
        let (proto, _, _) = *r.pick(&PROTOS[..10]);
        let mut text = String::new();
        if !proto.is_empty() {
            text.push_str(proto);
        }
        text.push_str(&format!(",in_port={},dl_src={},nw_ttl={}", 1 + r.below(100), mac_text(r.bits(48)),
            r.below(256)).replace(",nw_ttl", if matches!(proto, "" | "arp") { ",reg0" } else { ",nw_ttl" }));
        let k = parse_packet(&text).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let mut line = format_key(&k);
        if proto.starts_with("udp") {
            // Trace syntax spells UDP ports udp_src/udp_dst; flow_format prints tp_src/tp_dst.
            line = line.replace("tp_src=", "udp_src=").replace("tp_dst=", "udp_dst=");
        }
        let k2 = parse_packet(&line).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
        prop_assert_eq!(k, k2);
    }
}
