//! The ovs-ofctl flow parser: `ovs-ofctl -O OpenFlow13 add-flow/mod-flows/
//! del-flows/dump-flows` text in, a [`FlowSpec`] out.
//!
//! Data enters as one flow string (`table=1,priority=100,ip,nw_dst=10.0.0.0/8
//! actions=dec_ttl,output:2`) plus the command it is for ([`ParseMode`]); it
//! leaves as a [`FlowSpec`] whose match is normalised the way OVS stores it
//! (values pre-masked, `mod_vlan_vid` expanded from the match, masked
//! `set_field` turned into `load`s as OVS encodes them for OpenFlow 1.3), or
//! as a [`ParseError`] that names the offending token and its byte offset.
//!
//! Semantics follow OVS 3.1 (lib/ofp-flow.c `parse_ofp_str__`,
//! lib/ofp-actions.c `parse_*`/`check_*`, lib/meta-flow.c `mf_parse`,
//! lib/match.c `match_set_*`), with one deliberate difference: a match field
//! whose prerequisite the match does not guarantee (`nw_dst=` without `ip`) is
//! an error here, where OVS silently drops it and the flow matches everything.
//!
//! This module must never panic on any input: every slice is cut at an ASCII
//! delimiter and every number is range-checked.

use super::action::{ofport, Action, CtAction, CtZone, FieldRange, PortNo};
use super::field::{Field, FieldInfo, Format, Prereq, ALL_FIELDS};
use super::key::{ethertype, ipproto, FlowKey, VLAN_CFI, VLAN_PCP_MASK, VLAN_VID_MASK};
use super::matches::Match;
use super::FlowSpec;
use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Which command a flow string is parsed for; it decides which keywords are
/// allowed (OVS `parse_ofp_str__`: `F_ACTIONS`, `F_TIMEOUT`, `F_PRIORITY`,
/// `F_OUT_PORT`) and whether `cookie=` sets or selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseMode {
    /// `add-flow`: actions required; `cookie=V` sets the cookie, a cookie mask is an error.
    Add,
    /// `mod-flows`: actions required; `cookie=V/M` selects, `cookie=V` sets.
    Modify,
    /// `mod-flows --strict`.
    ModifyStrict,
    /// `del-flows`: no actions, no priority, `out_port=` allowed.
    Delete,
    /// `del-flows --strict`: like delete, plus `priority=`.
    DeleteStrict,
    /// `dump-flows` filter: like delete.
    Dump,
}

impl ParseMode {
    fn has_actions(self) -> bool {
        matches!(
            self,
            ParseMode::Add | ParseMode::Modify | ParseMode::ModifyStrict
        )
    }
    fn has_priority(self) -> bool {
        !matches!(self, ParseMode::Delete | ParseMode::Dump)
    }
    fn has_out_port(self) -> bool {
        matches!(
            self,
            ParseMode::Delete | ParseMode::DeleteStrict | ParseMode::Dump
        )
    }
    fn name(self) -> &'static str {
        match self {
            ParseMode::Add => "add-flow",
            ParseMode::Modify => "mod-flows",
            ParseMode::ModifyStrict => "mod-flows --strict",
            ParseMode::Delete => "del-flows",
            ParseMode::DeleteStrict => "del-flows --strict",
            ParseMode::Dump => "dump-flows",
        }
    }
}

/// A flow-syntax error: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Human-readable explanation (names the token and, where possible, the fix).
    pub message: String,
    /// Byte offset of the offending token in the input.
    pub offset: usize,
    /// The offending token (may be empty when something is missing at the end).
    pub token: String,
    /// The whole input, for the caret display.
    pub input: String,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>, offset: usize, token: &str) -> ParseError {
        ParseError {
            message: message.into(),
            offset,
            token: token.to_string(),
            input: String::new(),
        }
    }
}

impl fmt::Display for ParseError {
    /// `message at "token"`, then the input with a caret line under the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (at \"{}\")", self.message, self.token)?;
        let line: String = self
            .input
            .chars()
            .map(|c| {
                if c == '\n' || c == '\r' || c == '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        writeln!(f, "  {}", line)?;
        let col = self
            .input
            .get(..self.offset)
            .map(|p| p.chars().count())
            .unwrap_or(self.offset);
        let width = self.token.chars().count().max(1);
        write!(f, "  {}{}", " ".repeat(col), "^".repeat(width))
    }
}

impl std::error::Error for ParseError {}

type PResult<T> = Result<T, ParseError>;

// ---------------------------------------------------------------------------
// Lexer: OVS `ofputil_parse_key_value`, with whitespace tolerated around '='.
// ---------------------------------------------------------------------------

/// One `key[=value]`, `key:value` or `key(value)` item.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub key: &'a str,
    pub key_off: usize,
    pub value: Option<&'a str>,
    pub value_off: usize,
    pub delim: u8,
}

impl<'a> Token<'a> {
    /// The whole token text as written (for error messages); `src` is the
    /// string the token was lexed from, starting at byte `base`.
    pub fn whole(&self, src: &'a str, base: usize) -> &'a str {
        let start = self.key_off - base;
        let end = match self.value {
            Some(v) => self.value_off - base + v.len(),
            None => start + self.key.len(),
        };
        src.get(start..end).unwrap_or(self.key)
    }
}

fn is_sep(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'\t' | b'\r' | b'\n')
}

/// Split `s` (which starts at byte `base` of the whole input) into tokens.
pub(crate) fn lex(s: &str, base: usize) -> PResult<Vec<Token<'_>>> {
    let b = s.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < n && is_sep(b[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(out);
        }
        let ks = i;
        while i < n && !is_sep(b[i]) && !matches!(b[i], b':' | b'=' | b'(') {
            i += 1;
        }
        let key = &s[ks..i];
        let mut delim = if i < n { b[i] } else { 0 };
        if matches!(delim, b' ' | b'\t') {
            // `nw_dst = 10.0.0.1`: whitespace before '='.
            let mut j = i;
            while j < n && matches!(b[j], b' ' | b'\t') {
                j += 1;
            }
            if j < n && b[j] == b'=' {
                delim = b'=';
                i = j;
            }
        }
        if !matches!(delim, b':' | b'=' | b'(') {
            out.push(Token {
                key,
                key_off: base + ks,
                value: None,
                value_off: base + i,
                delim: 0,
            });
            if i < n {
                i += 1;
            }
            continue;
        }
        i += 1;
        if delim == b'=' {
            while i < n && matches!(b[i], b' ' | b'\t') {
                i += 1;
            }
        }
        let vs = i;
        if delim == b'(' {
            // The value extends to the matching ')'.
            let mut level = 1usize;
            while i < n {
                match b[i] {
                    b'(' => level += 1,
                    b')' => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if i >= n {
                return Err(ParseError::new(
                    format!("unbalanced parentheses: \"{}(\" has no matching ')'", key),
                    base + ks,
                    &s[ks..],
                ));
            }
            out.push(Token {
                key,
                key_off: base + ks,
                value: Some(&s[vs..i]),
                value_off: base + vs,
                delim,
            });
            i += 1;
            continue;
        }
        while i < n && !is_sep(b[i]) {
            if b[i] == b'(' {
                let mut level = 0usize;
                loop {
                    if i >= n {
                        return Err(ParseError::new(
                            "unbalanced parentheses: missing ')'",
                            base + vs,
                            &s[vs..],
                        ));
                    }
                    match b[i] {
                        b'(' => level += 1,
                        b')' => level = level.saturating_sub(1),
                        _ => {}
                    }
                    i += 1;
                    if level == 0 {
                        break;
                    }
                }
            } else {
                i += 1;
            }
        }
        out.push(Token {
            key,
            key_off: base + ks,
            value: Some(&s[vs..i]),
            value_off: base + vs,
            delim,
        });
        if i < n {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Value parsers (lib/meta-flow.c mf_from_*_string, lib/packets.c).
// ---------------------------------------------------------------------------

/// Decimal or `0x` hexadecimal, up to 128 bits.
pub(crate) fn parse_uint(s: &str) -> Option<u128> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(digits, radix).ok()
}

fn err_value(field: &str, v: &str, off: usize, why: &str) -> ParseError {
    ParseError::new(
        format!("\"{}\" is not a valid value for {}: {}", v, field, why),
        off,
        v,
    )
}

/// An integer no larger than `max`.
pub(crate) fn parse_uint_max(s: &str, max: u128, what: &str, off: usize) -> PResult<u128> {
    match parse_uint(s) {
        Some(v) if v <= max => Ok(v),
        Some(_) => Err(ParseError::new(
            format!(
                "value \"{}\" of {} is out of range (maximum {:#x} = {})",
                s, what, max, max
            ),
            off,
            s,
        )),
        None => Err(err_value(
            what,
            s,
            off,
            "expected a decimal or 0x-hex integer",
        )),
    }
}

/// Reserved port names, as `ofputil_port_from_string` accepts them (case-insensitive).
pub(crate) const PORT_NAMES: &[(&str, PortNo)] = &[
    ("IN_PORT", ofport::IN_PORT),
    ("TABLE", ofport::TABLE),
    ("NORMAL", ofport::NORMAL),
    ("FLOOD", ofport::FLOOD),
    ("ALL", ofport::ALL),
    ("CONTROLLER", ofport::CONTROLLER),
    ("LOCAL", ofport::LOCAL),
    ("ANY", ofport::ANY),
    ("NONE", ofport::ANY),
];

/// An OpenFlow port: a number or a reserved name. OpenFlow 1.0 reserved
/// numbers (0xfff8..0xffff) map to their 1.1+ values as `ofputil_port_from_string` does.
pub(crate) fn parse_port(s: &str, off: usize) -> PResult<PortNo> {
    if let Some((_, p)) = PORT_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok(*p);
    }
    let v = parse_uint(s).ok_or_else(|| {
        ParseError::new(
            format!(
                "\"{}\" is not a valid OpenFlow port (a number, or one of IN_PORT, LOCAL, NORMAL, FLOOD, ALL, CONTROLLER)",
                s
            ),
            off,
            s,
        )
    })?;
    match v {
        0..=0xfeff => Ok(v as PortNo),
        0xfff8..=0xffff => Ok(v as PortNo + 0xffff_0000),
        0x1_0000..=0xffff_ff00 => Ok(v as PortNo),
        0xffff_fff8..=0xffff_ffff => Ok(v as PortNo),
        _ => Err(ParseError::new(
            format!(
                "port {} is outside the supported range 0 through 0xfeff, 0x10000 through 0xffffff00, or a reserved port",
                s
            ),
            off,
            s,
        )),
    }
}

/// `aa:bb:cc:dd:ee:ff` (1 or 2 hex digits per octet) as a 48-bit number.
pub(crate) fn parse_mac(s: &str) -> Option<u128> {
    let mut v: u128 = 0;
    let mut n = 0;
    for part in s.split(':') {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        v = (v << 8) | u128::from(u8::from_str_radix(part, 16).ok()?);
        n += 1;
    }
    (n == 6).then_some(v)
}

fn prefix_mask(len: u32, width: u32) -> u128 {
    let all = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if len == 0 {
        0
    } else if len >= width {
        all
    } else {
        all & !((1u128 << (width - len)) - 1)
    }
}

fn parse_ipv4(s: &str) -> Option<u128> {
    s.parse::<Ipv4Addr>().ok().map(|a| u128::from(u32::from(a)))
}

fn parse_ipv6(s: &str) -> Option<u128> {
    s.parse::<Ipv6Addr>().ok().map(u128::from)
}

/// Parses an address into its numeric value.
type AddrParser = fn(&str) -> Option<u128>;

/// Value and optional mask text of `v[/m]`.
fn split_mask(s: &str) -> (&str, Option<&str>) {
    match s.find('/') {
        Some(p) => (&s[..p], Some(&s[p + 1..])),
        None => (s, None),
    }
}

/// TCP flag names, bit 0 first (lib/packets.c `packet_tcp_flag_to_string`).
pub(crate) const TCP_FLAG_NAMES: &[&str] = &[
    "fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns", "[200]", "[400]", "[800]",
];
/// Conntrack state names, bit 0 first (lib/odp-util.c `ct_state_to_string`).
pub(crate) const CT_STATE_NAMES: &[&str] =
    &["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];

/// `+syn-ack` (mask = named bits), `syn|ack` (exact), or `V[/M]` numbers
/// (lib/flow.c `parse_flags`).
fn parse_flags(s: &str, names: &[&str], what: &str, off: usize) -> PResult<(u128, u128)> {
    let all = (1u128 << names.len()) - 1;
    if s.bytes().next().is_some_and(|c| c.is_ascii_digit()) {
        let (v, m) = split_mask(s);
        let value = parse_uint_max(v, all, what, off)?;
        let mask = match m {
            Some(m) => parse_uint_max(m, all, what, off)?,
            None => all,
        };
        return Ok((value & mask, mask));
    }
    let lookup = |name: &str| -> PResult<u128> {
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| 1u128 << i)
            .ok_or_else(|| {
                ParseError::new(
                    format!(
                        "unknown {} flag \"{}\" (known: {})",
                        what,
                        name,
                        names.join(", ")
                    ),
                    off,
                    s,
                )
            })
    };
    if s.starts_with('+') || s.starts_with('-') {
        let (mut value, mut mask) = (0u128, 0u128);
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let set = b[i] == b'+';
            if !set && b[i] != b'-' {
                return Err(err_value(what, s, off, "expected +flag or -flag"));
            }
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j] != b'+' && b[j] != b'-' {
                j += 1;
            }
            let bit = lookup(&s[start..j])?;
            if mask & bit != 0 {
                return Err(ParseError::new(
                    format!("{}: flag \"{}\" given twice", what, &s[start..j]),
                    off,
                    s,
                ));
            }
            mask |= bit;
            if set {
                value |= bit;
            }
            i = j;
        }
        return Ok((value, mask));
    }
    let mut value = 0u128;
    for name in s.split('|') {
        value |= lookup(name)?;
    }
    Ok((value, all))
}

/// `nw_frag` words (lib/meta-flow.c `mf_from_frag_string`): (value, mask) over 2 bits.
fn parse_frag(s: &str, off: usize) -> PResult<(u128, u128)> {
    Ok(match s {
        "no" => (0, 3),
        "yes" => (1, 1),
        "first" => (1, 3),
        "later" => (3, 3),
        "not_later" => (0, 2),
        _ => {
            return Err(err_value(
                "nw_frag",
                s,
                off,
                "expected one of no, yes, first, later, not_later",
            ))
        }
    })
}

/// Parse `text` as a value (and mask, if given) of `info`, in the field's own
/// right-aligned units. Masks on non-maskable fields are an error.
pub(crate) fn parse_field_value(info: &FieldInfo, text: &str, off: usize) -> PResult<(u128, u128)> {
    let max = info.max_value();
    let name = info.name;
    match info.format {
        Format::Frag => return parse_frag(text, off),
        Format::CtState => return parse_flags(text, CT_STATE_NAMES, name, off),
        Format::TcpFlags => return parse_flags(text, TCP_FLAG_NAMES, name, off),
        _ => {}
    }
    if text.is_empty() {
        return Err(ParseError::new(
            format!("field {} is missing its value", name),
            off,
            text,
        ));
    }
    let (vtext, mtext) = split_mask(text);
    if mtext.is_some() && !info.maskable {
        return Err(ParseError::new(
            format!("field {} does not support masks (\"{}\")", name, text),
            off,
            text,
        ));
    }
    if info.field == Field::InPort {
        return Ok((u128::from(parse_port(text, off)?), max));
    }
    let moff = off + vtext.len() + 1;
    let (value, mask) = match info.format {
        Format::Mac => {
            let v = parse_mac(vtext).ok_or_else(|| {
                err_value(
                    name,
                    vtext,
                    off,
                    "expected an Ethernet address like 02:00:00:00:00:01",
                )
            })?;
            let m = match mtext {
                Some(m) => parse_mac(m).ok_or_else(|| {
                    err_value(
                        name,
                        m,
                        moff,
                        "expected an Ethernet mask like ff:ff:ff:00:00:00",
                    )
                })?,
                None => max,
            };
            (v, m)
        }
        Format::Ipv4 | Format::Ipv6 => {
            let (parse, what, width): (AddrParser, &str, u32) = if info.format == Format::Ipv4 {
                (parse_ipv4, "an IPv4 address like 10.0.0.1", 32)
            } else {
                (parse_ipv6, "an IPv6 address like 2001:db8::1", 128)
            };
            let v = parse(vtext)
                .ok_or_else(|| err_value(name, vtext, off, &format!("expected {}", what)))?;
            let m = match mtext {
                None => max,
                Some(m) if !m.is_empty() && m.bytes().all(|c| c.is_ascii_digit()) => {
                    match m.parse::<u32>() {
                        Ok(len) if len <= width => prefix_mask(len, width),
                        _ => {
                            return Err(err_value(
                                name,
                                m,
                                moff,
                                &format!("prefix length must be 0 to {}", width),
                            ))
                        }
                    }
                }
                Some(m) => parse(m).ok_or_else(|| {
                    err_value(
                        name,
                        m,
                        moff,
                        &format!("expected a prefix length or a netmask ({})", what),
                    )
                })?,
            };
            (v, m)
        }
        _ => {
            let v = parse_uint_max(vtext, max, name, off)?;
            let m = match mtext {
                Some(m) => parse_uint_max(m, max, &format!("{} mask", name), moff)?,
                None => max,
            };
            (v, m)
        }
    };
    Ok((value & mask, mask))
}

// ---------------------------------------------------------------------------
// Subfields: NAME[], NAME[N], NAME[A..B] (lib/nx-match.c mf_parse_subfield).
// ---------------------------------------------------------------------------

pub(crate) fn parse_subfield(s: &str, off: usize) -> PResult<FieldRange> {
    let (name, range) = match s.find('[') {
        Some(p) => {
            let rest = &s[p + 1..];
            let inner = rest.strip_suffix(']').ok_or_else(|| {
                ParseError::new(
                    format!("subfield \"{}\" is missing its closing ']'", s),
                    off,
                    s,
                )
            })?;
            (&s[..p], Some(inner))
        }
        None => (s, None),
    };
    let field = lookup_field(name, off)?;
    let width = field.info().width;
    let (ofs, n_bits) = match range {
        None | Some("") => (0, width),
        Some(r) => {
            let (a, b) = match r.find("..") {
                Some(p) => (&r[..p], &r[p + 2..]),
                None => (r, r),
            };
            let bad = || {
                ParseError::new(
                    format!(
                        "subfield \"{}\": bad bit range \"[{}]\" (expected [N] or [A..B])",
                        s, r
                    ),
                    off,
                    s,
                )
            };
            let a: u32 = a.parse().map_err(|_| bad())?;
            let b: u32 = b.parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            if b >= width {
                return Err(ParseError::new(
                    format!(
                        "subfield \"{}\": bit {} is beyond the {}-bit field {}",
                        s, b, width, name
                    ),
                    off,
                    s,
                ));
            }
            (a, b - a + 1)
        }
    };
    Ok(FieldRange { field, ofs, n_bits })
}

// ---------------------------------------------------------------------------
// Names and suggestions.
// ---------------------------------------------------------------------------

const PROTOCOLS: &[(&str, u16, Option<u8>)] = &[
    ("ip", ethertype::IPV4, None),
    ("ipv4", ethertype::IPV4, None),
    ("icmp", ethertype::IPV4, Some(ipproto::ICMP)),
    ("tcp", ethertype::IPV4, Some(ipproto::TCP)),
    ("udp", ethertype::IPV4, Some(ipproto::UDP)),
    ("ipv6", ethertype::IPV6, None),
    ("ip6", ethertype::IPV6, None),
    ("icmp6", ethertype::IPV6, Some(ipproto::ICMPV6)),
    ("tcp6", ethertype::IPV6, Some(ipproto::TCP)),
    ("udp6", ethertype::IPV6, Some(ipproto::UDP)),
    ("arp", ethertype::ARP, None),
    // SCTP: ports as `tp_src`/`tp_dst` or `sctp_src`/`sctp_dst` (RFC 9260 §3.1).
    ("sctp", ethertype::IPV4, Some(ipproto::SCTP)),
    ("sctp6", ethertype::IPV6, Some(ipproto::SCTP)),
    // Matched by ethertype / IP protocol only: ferroswitch has no fields for
    // their headers (no RARP-specific fields, no MPLS label), but dump-flows
    // prints these names for such matches, so they must parse back.
    ("rarp", 0x8035, None),
    ("igmp", ethertype::IPV4, Some(2)),
    ("mpls", 0x8847, None),
    ("mplsm", 0x8848, None),
];

/// Protocol keywords OVS knows that ferroswitch does not implement.
const UNSUPPORTED_PROTOCOLS: &[&str] = &["nsh"];

/// The (dl_type, nw_proto) a protocol keyword stands for.
pub(crate) fn protocol(name: &str) -> Option<(u16, Option<u8>)> {
    PROTOCOLS.iter().find(|p| p.0 == name).map(|p| (p.1, p.2))
}

fn unsupported_protocol(name: &str, off: usize) -> Option<ParseError> {
    UNSUPPORTED_PROTOCOLS.contains(&name).then(|| {
        ParseError::new(
            format!(
                "protocol \"{}\" is not supported by ferroswitch (it does not parse those headers)",
                name
            ),
            off,
            name,
        )
    })
}

const FLOW_KEYWORDS: &[&str] = &[
    "table",
    "priority",
    "cookie",
    "idle_timeout",
    "hard_timeout",
    "out_port",
    "actions",
    "eth",
];

/// Flow-mod flags (ovs-ofctl(8) "Flow Syntax": written bare, like a protocol keyword).
const FLOW_FLAGS: &[&str] = &[
    "send_flow_rem",
    "check_overlap",
    "reset_counts",
    "no_packet_counts",
    "no_byte_counts",
];

const ACTION_NAMES: &[&str] = &[
    "output",
    "drop",
    "resubmit",
    "group",
    "set_field",
    "load",
    "move",
    "mod_dl_src",
    "mod_dl_dst",
    "mod_nw_src",
    "mod_nw_dst",
    "mod_nw_tos",
    "mod_nw_ecn",
    "mod_nw_ttl",
    "mod_tp_src",
    "mod_tp_dst",
    "dec_ttl",
    "route",
    "mod_vlan_vid",
    "mod_vlan_pcp",
    "push_vlan",
    "strip_vlan",
    "pop_vlan",
    "goto_table",
    "write_metadata",
    "ct",
    "ct_clear",
    "normal",
    "flood",
    "all",
    "local",
    "in_port",
    "controller",
];

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest known name to `word`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.len() > 64 {
        return None;
    }
    let lw = word.to_ascii_lowercase();
    let best = candidates
        .map(|c| (edit_distance(&lw, &c.to_ascii_lowercase()), c))
        .min_by_key(|(d, _)| *d)?;
    let limit = (word.chars().count() / 3).max(2);
    (best.0 <= limit).then_some(best.1)
}

fn all_field_names() -> impl Iterator<Item = &'static str> {
    ALL_FIELDS
        .iter()
        .flat_map(|f| core::iter::once(f.info().name).chain(f.info().aliases.iter().copied()))
}

fn suggest(word: &str, extra: &[&'static str]) -> String {
    let cands = all_field_names()
        .chain(extra.iter().copied())
        .chain(PROTOCOLS.iter().map(|p| p.0));
    match closest(word, cands) {
        Some(c) => format!("; did you mean \"{}\"?", c),
        None => String::new(),
    }
}

/// A field by any of its names, or an error suggesting the closest one.
pub(crate) fn lookup_field(name: &str, off: usize) -> PResult<Field> {
    Field::from_name(name).ok_or_else(|| {
        ParseError::new(
            format!("unknown field \"{}\"{}", name, suggest(name, &[])),
            off,
            name,
        )
    })
}

/// Flow syntax that satisfies `p`, for "add ... before it" hints.
pub(crate) fn prereq_keyword(p: Prereq, k: &FlowKey) -> &'static str {
    let v6 = k.dl_type == ethertype::IPV6;
    match p {
        Prereq::None => "",
        Prereq::Vlan => "vlan_tci=0x1000/0x1000",
        Prereq::Ipv4 => "ip",
        Prereq::Ipv6 => "ipv6",
        Prereq::IpAny => {
            if v6 {
                "ipv6"
            } else {
                "ip"
            }
        }
        Prereq::Arp => "arp",
        Prereq::Tcp | Prereq::TcpOrUdp => {
            if v6 {
                "tcp6"
            } else {
                "tcp"
            }
        }
        Prereq::Udp => {
            if v6 {
                "udp6"
            } else {
                "udp"
            }
        }
        Prereq::Sctp => {
            if v6 {
                "sctp6"
            } else {
                "sctp"
            }
        }
        Prereq::Icmp => "icmp",
        Prereq::Icmpv6 => "icmp6",
        Prereq::Nd | Prereq::NdSolicit => "icmp6,icmp_type=135",
        Prereq::NdAdvert => "icmp6,icmp_type=136",
    }
}

// ---------------------------------------------------------------------------
// Match fields.
// ---------------------------------------------------------------------------

/// What one match token contributes: key-level value and mask.
#[derive(Clone, Copy)]
pub(crate) struct Contribution {
    pub value: FlowKey,
    pub mask: FlowKey,
    /// The prerequisite to check (None for protocol keywords and self-implying fields).
    pub prereq: Prereq,
    /// The field, when the token names one.
    pub field: Option<Field>,
}

impl Contribution {
    fn empty() -> Contribution {
        Contribution {
            value: FlowKey::ZERO,
            mask: FlowKey::ZERO,
            prereq: Prereq::None,
            field: None,
        }
    }

    fn set(&mut self, field: Field, value: u128, mask: u128) {
        let info = field.info();
        info.set(&mut self.value, value & mask);
        info.set(&mut self.mask, mask);
    }
}

pub(crate) fn protocol_contribution(dl_type: u16, nw_proto: Option<u8>) -> Contribution {
    let mut c = Contribution::empty();
    c.set(Field::EthType, u128::from(dl_type), 0xffff);
    if let Some(p) = nw_proto {
        c.set(Field::NwProto, u128::from(p), 0xff);
    }
    c
}

/// Parse `field=text` into its key-level contribution, applying OVS's
/// per-field encodings (`match_set_dl_vlan`, `match_set_dl_vlan_pcp`,
/// `nw_tos` as DSCP bits, ICMP type/code over the whole `tp_src`/`tp_dst`).
pub(crate) fn field_contribution(field: Field, text: &str, off: usize) -> PResult<Contribution> {
    let info = field.info();
    let mut c = Contribution::empty();
    c.field = Some(field);
    c.prereq = info.prereq;
    match field {
        Field::DlVlan => {
            // lib/match.c match_set_dl_vlan: VID + CFI; 0xffff (OFP10_VLAN_NONE) = no tag.
            if text.contains('/') {
                return Err(ParseError::new(
                    "field dl_vlan does not support masks",
                    off,
                    text,
                ));
            }
            let v = parse_uint_max(text, 0xffff, "dl_vlan", off)?;
            if v == 0xffff {
                c.set(Field::VlanTci, 0, 0xffff);
            } else if v > u128::from(VLAN_VID_MASK) {
                return Err(ParseError::new(
                    format!(
                        "dl_vlan {} is out of range (0 to 4095, or 0xffff for no tag)",
                        text
                    ),
                    off,
                    text,
                ));
            } else {
                c.set(
                    Field::VlanTci,
                    v | u128::from(VLAN_CFI),
                    u128::from(VLAN_VID_MASK | VLAN_CFI),
                );
            }
            c.prereq = Prereq::None;
        }
        Field::VlanPcp => {
            // lib/match.c match_set_dl_vlan_pcp: PCP + CFI.
            if text.contains('/') {
                return Err(ParseError::new(
                    "field dl_vlan_pcp does not support masks",
                    off,
                    text,
                ));
            }
            let v = parse_uint_max(text, 7, "dl_vlan_pcp", off)?;
            c.set(
                Field::VlanTci,
                (v << 13) | u128::from(VLAN_CFI),
                u128::from(VLAN_PCP_MASK | VLAN_CFI),
            );
            c.prereq = Prereq::None;
        }
        Field::NwTos => {
            // OVS's nw_tos is MFF_IP_DSCP: the DSCP bits of the TOS byte (mask 0xfc);
            // mf_is_value_valid rejects values with the ECN bits set.
            if text.contains('/') {
                return Err(ParseError::new(
                    "field nw_tos does not support masks",
                    off,
                    text,
                ));
            }
            let v = parse_uint_max(text, 0xff, "nw_tos", off)?;
            if v & 3 != 0 {
                return Err(ParseError::new(
                    format!(
                        "nw_tos={} has ECN bits set: nw_tos matches the DSCP bits only, so it must be a multiple of 4 (use nw_ecn= for the low bits)",
                        text
                    ),
                    off,
                    text,
                ));
            }
            c.set(Field::IpDscp, v >> 2, 0x3f);
        }
        Field::IcmpType | Field::IcmpCode | Field::Icmpv6Type | Field::Icmpv6Code => {
            let (v, _) = parse_field_value(info, text, off)?;
            let slot = if matches!(field, Field::IcmpType | Field::Icmpv6Type) {
                Field::TpSrc
            } else {
                Field::TpDst
            };
            c.set(slot, v, 0xffff);
        }
        _ => {
            let (v, m) = parse_field_value(info, text, off)?;
            c.set(field, v, m);
        }
    }
    Ok(c)
}

/// Accumulates match contributions, detecting conflicts between tokens.
pub(crate) struct MatchBuilder {
    pub value: FlowKey,
    pub mask: FlowKey,
    entries: Vec<(String, usize, Contribution)>,
}

impl MatchBuilder {
    pub fn new() -> MatchBuilder {
        MatchBuilder {
            value: FlowKey::ZERO,
            mask: FlowKey::ZERO,
            entries: Vec::new(),
        }
    }

    /// Merge `c` (from token `tok` at `off`); conflicting bits are an error.
    pub fn add(&mut self, tok: &str, off: usize, c: Contribution) -> PResult<()> {
        for (etok, _, e) in &self.entries {
            let clash = e
                .mask
                .words()
                .iter()
                .zip(c.mask.words())
                .zip(e.value.words().iter().zip(c.value.words()))
                .any(|((em, cm), (ev, cv))| em & cm & (ev ^ cv) != 0);
            if clash {
                return Err(ParseError::new(
                    format!("\"{}\" conflicts with earlier \"{}\" (they require different values of the same bits)", tok, etok),
                    off,
                    tok,
                ));
            }
        }
        let vw = *c.value.words();
        let mw = *c.mask.words();
        for ((v, m), (cv, cm)) in self
            .value
            .words_mut()
            .iter_mut()
            .zip(self.mask.words_mut().iter_mut())
            .zip(vw.iter().zip(mw.iter()))
        {
            *v = (*v & !cm) | cv;
            *m |= cm;
        }
        self.entries.push((tok.to_string(), off, c));
        Ok(())
    }

    /// Check every field's prerequisite against the complete match (order does not matter).
    pub fn check_prereqs(&self) -> PResult<()> {
        let k = self.value;
        for (tok, off, c) in &self.entries {
            if c.prereq == Prereq::None || c.prereq.satisfied_by(&k) {
                continue;
            }
            // OVS stores ARP spa/tpa/op in nw_src/nw_dst/nw_proto, so `arp,nw_src=`
            // and `arp,nw_proto=` mean arp_spa / arp_op (and print that way).
            if k.dl_type == ethertype::ARP
                && matches!(c.field, Some(Field::IpSrc | Field::IpDst | Field::NwProto))
            {
                continue;
            }
            // icmp_type/icmp_code and icmpv6_type/code share tp_src/tp_dst; OVS
            // accepts either spelling for ICMPv4 and ICMPv6 (tests/ovs-ofctl.at:
            // `icmp6,icmp_type=134`).
            if (Prereq::Icmp.satisfied_by(&k) || Prereq::Icmpv6.satisfied_by(&k))
                && matches!(
                    c.field,
                    Some(Field::IcmpType | Field::IcmpCode | Field::Icmpv6Type | Field::Icmpv6Code)
                )
            {
                continue;
            }
            return Err(prereq_error(tok, *off, c.prereq, &k));
        }
        Ok(())
    }

    pub fn to_match(&self) -> Match {
        Match::new(self.value, self.mask)
    }
}

fn prereq_error(tok: &str, off: usize, p: Prereq, k: &FlowKey) -> ParseError {
    ParseError::new(
        format!(
            "{} requires {}: add \"{},\" before it",
            tok,
            p.suggestion(),
            prereq_keyword(p, k)
        ),
        off,
        tok,
    )
}

// ---------------------------------------------------------------------------
// The flow parser.
// ---------------------------------------------------------------------------

/// Parse one flow in ovs-ofctl syntax for `mode`.
///
/// `table=`, `priority=`, `cookie=V[/M]`, `idle_timeout=`, `hard_timeout=`,
/// `out_port=`, the flags (`send_flow_rem`, `check_overlap`, `reset_counts`,
/// `no_packet_counts`, `no_byte_counts`), protocol keywords, every field of
/// the registry by any name,
/// `FIELD[a..b]=V` subfield matches, then `actions=...` (last). The
/// statistics keywords dump-flows prints (`duration`, `n_packets`,
/// `n_bytes`, `idle_age`, `hard_age`) are ignored, so a dump line can be
/// pasted back, as ovs-ofctl allows.
pub fn parse_flow(text: &str, mode: ParseMode) -> Result<FlowSpec, ParseError> {
    parse_flow_inner(text, mode).map_err(|mut e| {
        e.input = text.to_string();
        e
    })
}

fn set_once<T: PartialEq + Copy + fmt::Debug>(
    slot: &mut Option<T>,
    v: T,
    tok: &str,
    off: usize,
) -> PResult<()> {
    match slot {
        Some(old) if *old != v => Err(ParseError::new(
            format!("\"{}\" conflicts with an earlier value ({:?})", tok, old),
            off,
            tok,
        )),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

fn parse_flow_inner(text: &str, mode: ParseMode) -> PResult<FlowSpec> {
    // ofp_extract_actions: everything after "action[s]=" is the action list.
    let (match_text, actions) = match text.find("action") {
        Some(p) => {
            let b = text.as_bytes();
            let mut q = p + "action".len();
            if q < b.len() && b[q] == b's' {
                q += 1;
            }
            while q < b.len() && matches!(b[q], b' ' | b'\t') {
                q += 1;
            }
            if q >= b.len() || !matches!(b[q], b'=' | b':') {
                return Err(ParseError::new(
                    "expected \"actions=\" followed by the action list",
                    p,
                    &text[p..q.min(b.len())],
                ));
            }
            if !mode.has_actions() {
                return Err(ParseError::new(
                    format!(
                        "actions are not allowed in {} (only a match selects flows there)",
                        mode.name()
                    ),
                    p,
                    &text[p..q],
                ));
            }
            (&text[..p], Some((&text[q + 1..], q + 1)))
        }
        None => {
            if mode.has_actions() {
                return Err(ParseError::new(
                    "must specify an action (end the flow with actions=..., or actions=drop)",
                    text.len(),
                    "",
                ));
            }
            (text, None)
        }
    };

    let mut spec = FlowSpec::default();
    let mut mb = MatchBuilder::new();
    let (mut table, mut priority, mut cookie, mut cookie_mask) = (None, None, None, None);
    let (mut idle, mut hard, mut out_port) = (None, None, None);
    let mut flags = super::FlowFlags::NONE;

    for t in lex(match_text, 0)? {
        let tok = t.whole(match_text, 0);
        let key = t.key;
        let off = t.key_off;
        if key.is_empty() {
            return Err(ParseError::new(
                "missing field name before the value",
                off,
                tok,
            ));
        }
        if let Some((dl_type, proto)) = protocol(key) {
            if t.value.is_some() {
                return Err(ParseError::new(
                    format!("protocol keyword \"{}\" takes no value", key),
                    off,
                    tok,
                ));
            }
            mb.add(tok, off, protocol_contribution(dl_type, proto))?;
            continue;
        }
        if let Some(e) = unsupported_protocol(key, off) {
            return Err(e);
        }
        if key == "eth" && t.value.is_none() {
            // OVS: packet_type=eth; every ferroswitch packet is Ethernet.
            continue;
        }
        let voff = t.value_off;
        if key.contains('[') {
            let v = t.value.ok_or_else(|| {
                ParseError::new(
                    format!("subfield match \"{}\" needs a value", key),
                    off,
                    tok,
                )
            })?;
            let sf = parse_subfield(key, off)?;
            let val = parse_uint(v)
                .filter(|x| sf.n_bits >= 128 || *x >> sf.n_bits == 0)
                .ok_or_else(|| {
                    ParseError::new(
                        format!(
                            "{}: value \"{}\" is not an integer that fits in {} bits",
                            key, v, sf.n_bits
                        ),
                        voff,
                        v,
                    )
                })?;
            let mut c = Contribution::empty();
            let info = sf.field.info();
            if !info.maskable && sf.n_bits != info.width {
                return Err(ParseError::new(
                    format!(
                        "field {} cannot be matched on part of its bits (it does not support masks)",
                        info.name
                    ),
                    off,
                    key,
                ));
            }
            let m = prefix_mask(sf.n_bits, sf.n_bits) << sf.ofs;
            c.set(sf.field, val << sf.ofs, m);
            c.prereq = info.prereq;
            c.field = Some(sf.field);
            mb.add(tok, off, c)?;
            continue;
        }
        if let Some(field) = Field::from_name(key) {
            let v = t.value.ok_or_else(|| {
                ParseError::new(
                    format!("field {} is missing its value ({}=VALUE)", key, key),
                    off,
                    tok,
                )
            })?;
            let c = field_contribution(field, v, voff)?;
            mb.add(tok, off, c)?;
            continue;
        }
        if FLOW_FLAGS.contains(&key) {
            // OVS parse_ofp_str__: flags are accepted by add, modify and
            // modify_strict (F_FLAGS), bare, without a value.
            if !mode.has_actions() {
                return Err(ParseError::new(
                    format!("{} is not allowed in {}", key, mode.name()),
                    off,
                    tok,
                ));
            }
            if t.value.is_some() {
                return Err(ParseError::new(
                    format!("{key} is a flag and takes no value (write just {key})"),
                    off,
                    tok,
                ));
            }
            flags.set(key);
            continue;
        }
        let Some(v) = t.value else {
            return Err(ParseError::new(
                format!("unknown keyword \"{}\"{}", key, suggest(key, FLOW_KEYWORDS)),
                off,
                key,
            ));
        };
        let not_here = |what: &str| {
            ParseError::new(
                format!("{} is not allowed in {}", what, mode.name()),
                off,
                tok,
            )
        };
        match key {
            "table" => {
                let n = parse_uint_max(v, 255, "table", voff)?;
                let t = if n == 255 {
                    if mode == ParseMode::Add {
                        return Err(ParseError::new(
                            "table 255 means \"all tables\" and cannot receive a flow (use 0 to 254)",
                            voff,
                            v,
                        ));
                    }
                    None
                } else {
                    Some(n as u8)
                };
                set_once(&mut table, t, tok, off)?;
            }
            "priority" => {
                if !mode.has_priority() {
                    return Err(not_here("priority (use the --strict form)"));
                }
                let n = parse_uint_max(v, 0xffff, "priority", voff)? as u16;
                set_once(&mut priority, n, tok, off)?;
            }
            "idle_timeout" | "hard_timeout" => {
                if !mode.has_actions() {
                    return Err(not_here(key));
                }
                let n = parse_uint_max(v, 0xffff, key, voff)? as u16;
                let slot = if key == "idle_timeout" {
                    &mut idle
                } else {
                    &mut hard
                };
                set_once(slot, n, tok, off)?;
            }
            "out_port" => {
                if !mode.has_out_port() {
                    return Err(not_here("out_port"));
                }
                let p = parse_port(v, voff)?;
                set_once(&mut out_port, p, tok, off)?;
            }
            "cookie" => {
                let (cv, cm) = split_mask(v);
                let val = parse_uint_max(cv, u128::from(u64::MAX), "cookie", voff)? as u64;
                match cm {
                    Some(m) => {
                        if mode == ParseMode::Add {
                            return Err(ParseError::new(
                                "flow additions cannot use a cookie mask (cookie=VALUE sets the cookie)",
                                off,
                                tok,
                            ));
                        }
                        // ovs-ofctl(8): "a mask of -1 ... exact match" (OVS reads
                        // the mask with strtoull, so -1 is all ones).
                        let mask = if m == "-1" {
                            u64::MAX
                        } else {
                            parse_uint_max(
                                m,
                                u128::from(u64::MAX),
                                "cookie mask",
                                voff + cv.len() + 1,
                            )? as u64
                        };
                        set_once(&mut cookie, val & mask, tok, off)?;
                        set_once(&mut cookie_mask, mask, tok, off)?;
                    }
                    None => {
                        if !mode.has_actions() {
                            return Err(ParseError::new(
                                format!(
                                    "cannot set a cookie in {}: select flows with cookie=VALUE/MASK",
                                    mode.name()
                                ),
                                off,
                                tok,
                            ));
                        }
                        set_once(&mut cookie, val, tok, off)?;
                    }
                }
            }
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" => {}
            "importance" | "out_group" => {
                return Err(ParseError::new(
                    format!("\"{}\" is not supported by ferroswitch", key),
                    off,
                    tok,
                ))
            }
            _ => {
                return Err(ParseError::new(
                    format!("unknown field \"{}\"{}", key, suggest(key, FLOW_KEYWORDS)),
                    off,
                    key,
                ))
            }
        }
    }
    mb.check_prereqs()?;

    spec.table = table.flatten();
    spec.priority = priority.unwrap_or(super::DEFAULT_PRIORITY);
    spec.cookie = cookie.unwrap_or(0);
    spec.cookie_mask = cookie_mask.unwrap_or(0);
    spec.idle_timeout = idle.unwrap_or(0);
    spec.hard_timeout = hard.unwrap_or(0);
    spec.out_port = out_port;
    spec.flags = flags;
    spec.matches = mb.to_match();
    if let Some((atext, base)) = actions {
        let goto_floor = match (spec.table, mode) {
            (Some(t), _) => Some(t),
            (None, ParseMode::Add) => Some(0),
            (None, _) => None,
        };
        spec.actions = parse_actions(atext, base, &spec.matches, goto_floor)?;
    }
    Ok(spec)
}

// ---------------------------------------------------------------------------
// Actions (lib/ofp-actions.c parse_* and check_*).
// ---------------------------------------------------------------------------

struct ActionCtx {
    /// The flow as the actions see it (OVS ofpact_check's `match->flow`):
    /// the match's values, with VLAN pushes/pops applied as actions go.
    flow: FlowKey,
    /// Parsing a group bucket's actions: there is no match to check
    /// prerequisites against (OVS checks buckets against a catch-all match
    /// and only narrows the usable protocols), so the checks are left to
    /// translation, which skips an action whose prerequisites a packet
    /// does not meet (`PrereqUnmet`), as OVS does.
    bucket: bool,
}

impl ActionCtx {
    fn has_vlan(&self) -> bool {
        self.flow.vlan_tci & VLAN_CFI != 0
    }
    fn ip_any(&self) -> bool {
        Prereq::IpAny.satisfied_by(&self.flow)
    }
    fn need(&self, ok: bool, tok: &str, off: usize, what: &str, kw: &str) -> PResult<()> {
        if ok || self.bucket {
            Ok(())
        } else {
            Err(ParseError::new(
                format!(
                    "{} requires {} in the match (OpenFlow 1.3 rejects it otherwise): add \"{},\" to the match",
                    tok, what, kw
                ),
                off,
                tok,
            ))
        }
    }
    /// check_SET_FIELD / mf_check_dst: the field's prerequisites must hold, and
    /// a VLAN field needs a VLAN header.
    fn check_field(&self, field: Field, tok: &str, off: usize) -> PResult<()> {
        if self.bucket {
            return Ok(());
        }
        let p = field.info().prereq;
        if !p.satisfied_by(&self.flow) {
            return Err(ParseError::new(
                format!(
                    "{}: field {} requires {} in the match: add \"{},\" to the match",
                    tok,
                    field.name(),
                    p.suggestion(),
                    prereq_keyword(p, &self.flow)
                ),
                off,
                tok,
            ));
        }
        if matches!(field, Field::VlanVid | Field::DlVlan | Field::VlanPcp) && !self.has_vlan() {
            return Err(ParseError::new(
                format!(
                    "{}: setting {} needs a VLAN header: match one (dl_vlan=VID) or push one first (push_vlan:0x8100, or use mod_vlan_vid)",
                    tok,
                    field.name()
                ),
                off,
                tok,
            ));
        }
        Ok(())
    }
}

fn value_of<'a>(t: &Token<'a>, tok: &str) -> PResult<&'a str> {
    match t.value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ParseError::new(
            format!("action \"{}\" needs an argument", t.key),
            t.key_off,
            tok,
        )),
    }
}

fn split_arrow<'a>(v: &'a str, voff: usize, tok: &str) -> PResult<(&'a str, &'a str, usize)> {
    match v.find("->") {
        Some(p) => Ok((&v[..p], &v[p + 2..], voff + p + 2)),
        None => Err(ParseError::new(
            format!(
                "\"{}\" is missing \"->\" (expected VALUE->FIELD or SRC->DST)",
                tok
            ),
            voff,
            v,
        )),
    }
}

/// `mask`'s runs of contiguous one bits, lowest first, as (ofs, n_bits)
/// (OVS `next_load_segment`).
pub(crate) fn mask_segments(mask: u128) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut m = mask;
    while m != 0 {
        let ofs = m.trailing_zeros();
        let n = (m >> ofs).trailing_ones();
        out.push((ofs, n));
        if ofs + n >= 128 {
            break;
        }
        m &= !(prefix_mask(n, n) << ofs);
    }
    out
}

fn parse_actions(
    text: &str,
    base: usize,
    m: &Match,
    goto_floor: Option<u8>,
) -> PResult<Vec<Action>> {
    parse_actions_ctx(
        text,
        base,
        ActionCtx {
            flow: *m.value(),
            bucket: false,
        },
        goto_floor,
    )
}

/// Parse the action list of a group bucket (`bucket=...,actions=LIST`, see
/// `crate::group`): the flow action syntax, without instructions
/// (`goto_table`, `write_metadata`) and with prerequisites checked per
/// packet at translation instead of against a match. `base` is the byte
/// offset of `text` in the whole input (for error positions).
pub fn parse_bucket_actions(text: &str, base: usize) -> Result<Vec<Action>, ParseError> {
    parse_actions_ctx(
        text,
        base,
        ActionCtx {
            flow: FlowKey::ZERO,
            bucket: true,
        },
        None,
    )
}

fn parse_actions_ctx(
    text: &str,
    base: usize,
    mut ctx: ActionCtx,
    goto_floor: Option<u8>,
) -> PResult<Vec<Action>> {
    let mut acts: Vec<Action> = Vec::new();
    let mut drop_at: Option<(usize, String)> = None;
    let mut metadata_at: Option<String> = None;
    let mut goto_at: Option<String> = None;
    let tokens = lex(text, base)?;
    for t in &tokens {
        let tok = t.whole(text, base);
        let off = t.key_off;
        if let Some(g) = &goto_at {
            return Err(ParseError::new(
                format!(
                    "\"{}\" must be the last instruction, but \"{}\" follows it",
                    g, tok
                ),
                off,
                tok,
            ));
        }
        let name = t.key.to_ascii_lowercase();
        let is_instruction = matches!(name.as_str(), "goto_table" | "write_metadata");
        if is_instruction && ctx.bucket {
            return Err(ParseError::new(
                format!(
                    "\"{}\" is an instruction: a group bucket holds actions only (use resubmit(,N) to continue in a table)",
                    t.key
                ),
                off,
                tok,
            ));
        }
        if !is_instruction && name != "drop" {
            if let Some(w) = &metadata_at {
                return Err(ParseError::new(
                    format!("actions must come before the \"{}\" instruction", w),
                    off,
                    tok,
                ));
            }
        }
        match name.as_str() {
            "" => return Err(ParseError::new("empty action", off, tok)),
            "drop" => {
                if t.value.is_some() {
                    return Err(ParseError::new("drop takes no argument", off, tok));
                }
                drop_at = Some((off, tok.to_string()));
            }
            "output" => {
                let v = value_of(t, tok)?;
                if v.contains('[') {
                    return Err(ParseError::new(
                        "output to a field (output:NXM_...[]) is not supported",
                        t.value_off,
                        v,
                    ));
                }
                acts.push(Action::Output(output_port(v, t.value_off)?));
            }
            "controller" => {
                if let Some(v) = t.value {
                    if v != "65535" && !v.eq_ignore_ascii_case("max_len=65535") {
                        return Err(ParseError::new(
                            "controller options (max_len, reason, id...) are not supported; use CONTROLLER",
                            t.value_off,
                            v,
                        ));
                    }
                }
                acts.push(Action::Output(ofport::CONTROLLER));
            }
            "resubmit" => {
                let v = value_of(t, tok)?;
                acts.push(parse_resubmit(v, t.value_off, t.delim, tok, off)?);
            }
            "group" => {
                // OpenFlow 1.3 OFPAT_GROUP; group ids above OFPG_MAX
                // (0xffffff00) are reserved (OFPG_ALL, OFPG_ANY).
                let v = value_of(t, tok)?;
                let g = parse_uint_max(v, 0xffff_ff00, "group", t.value_off)?;
                acts.push(Action::Group(u32::try_from(g).unwrap_or(u32::MAX)));
            }
            "set_field" => {
                let v = value_of(t, tok)?;
                let (val, fname, foff) = split_arrow(v, t.value_off, tok)?;
                let field = lookup_field(fname, foff)?;
                parse_set_field(&mut ctx, &mut acts, field, val, t.value_off, tok, off)?;
            }
            "load" => {
                let v = value_of(t, tok)?;
                let (val, dst, doff) = split_arrow(v, t.value_off, tok)?;
                let dst = parse_subfield(dst, doff)?;
                check_writable(dst.field, tok, off)?;
                ctx.check_field(dst.field, tok, off)?;
                let value = parse_uint(val)
                    .filter(|x| dst.n_bits >= 128 || *x >> dst.n_bits == 0)
                    .ok_or_else(|| {
                        ParseError::new(
                            format!(
                                "load: value \"{}\" is not an integer that fits in {} bits",
                                val, dst.n_bits
                            ),
                            t.value_off,
                            val,
                        )
                    })?;
                acts.push(Action::Load { dst, value });
            }
            "move" => {
                let v = value_of(t, tok)?;
                let (s, d, doff) = split_arrow(v, t.value_off, tok)?;
                let src = parse_subfield(s, t.value_off)?;
                let dst = parse_subfield(d, doff)?;
                if src.n_bits != dst.n_bits {
                    return Err(ParseError::new(
                        format!(
                            "move: source field is {} bits wide but destination is {} bits wide",
                            src.n_bits, dst.n_bits
                        ),
                        off,
                        tok,
                    ));
                }
                check_writable(dst.field, tok, off)?;
                ctx.check_field(src.field, tok, off)?;
                ctx.check_field(dst.field, tok, off)?;
                acts.push(Action::Move { src, dst });
            }
            "mod_dl_src" | "mod_dl_dst" => {
                let v = value_of(t, tok)?;
                let mac = parse_mac(v).ok_or_else(|| {
                    err_value(&name, v, t.value_off, "expected an Ethernet address")
                })?;
                let field = if name == "mod_dl_src" {
                    Field::EthSrc
                } else {
                    Field::EthDst
                };
                acts.push(set_full(field, mac));
            }
            "mod_nw_src" | "mod_nw_dst" => {
                let v = value_of(t, tok)?;
                ctx.need(ctx.flow.dl_type == ethertype::IPV4, tok, off, "IPv4", "ip")?;
                let ip = parse_ipv4(v)
                    .ok_or_else(|| err_value(&name, v, t.value_off, "expected an IPv4 address"))?;
                let field = if name == "mod_nw_src" {
                    Field::IpSrc
                } else {
                    Field::IpDst
                };
                acts.push(set_full(field, ip));
            }
            "mod_nw_tos" => {
                let v = value_of(t, tok)?;
                ctx.need(ctx.ip_any(), tok, off, "IPv4 or IPv6", "ip")?;
                let tos = parse_uint_max(v, 0xff, "mod_nw_tos", t.value_off)?;
                if tos & 3 != 0 {
                    return Err(ParseError::new(
                        format!("mod_nw_tos:{} is not a valid TOS: the ECN bits must be zero (a multiple of 4; use mod_nw_ecn)", v),
                        t.value_off,
                        v,
                    ));
                }
                acts.push(set_full(Field::IpDscp, tos >> 2));
            }
            "mod_nw_ecn" => {
                let v = value_of(t, tok)?;
                ctx.need(ctx.ip_any(), tok, off, "IPv4 or IPv6", "ip")?;
                let ecn = parse_uint_max(v, 3, "mod_nw_ecn", t.value_off)?;
                acts.push(set_full(Field::IpEcn, ecn));
            }
            "mod_nw_ttl" => {
                let v = value_of(t, tok)?;
                ctx.need(ctx.ip_any(), tok, off, "IPv4 or IPv6", "ip")?;
                let ttl = parse_uint_max(v, 0xff, "mod_nw_ttl", t.value_off)?;
                acts.push(set_full(Field::NwTtl, ttl));
            }
            "mod_tp_src" | "mod_tp_dst" if ctx.bucket => {
                return Err(ParseError::new(
                    format!("{} in a group bucket: there is no match to tell TCP from UDP; use set_field:PORT->tcp_dst (or udp_dst, tcp_src, udp_src)", name),
                    off,
                    tok,
                ));
            }
            "mod_tp_src" | "mod_tp_dst" => {
                let v = value_of(t, tok)?;
                let field = l4_field(&ctx, name == "mod_tp_src").ok_or_else(|| {
                    ParseError::new(
                        format!("{} requires tcp or udp (tcp6/udp6) in the match: add \"tcp,\" or \"udp,\" to the match", tok),
                        off,
                        tok,
                    )
                })?;
                let port = parse_uint_max(v, 0xffff, &name, t.value_off)?;
                acts.push(set_full(field, port));
            }
            "dec_ttl" => {
                if let Some(v) = t.value {
                    if !v.is_empty() && v != "0" {
                        return Err(ParseError::new(
                            "dec_ttl controller ids are not supported (use plain dec_ttl)",
                            t.value_off,
                            v,
                        ));
                    }
                }
                ctx.need(ctx.ip_any(), tok, off, "IPv4 or IPv6", "ip")?;
                acts.push(Action::DecTtl);
            }
            "route" => {
                ctx.need(ctx.ip_any(), tok, off, "IPv4 or IPv6", "ip")?;
                acts.push(parse_route_action(t.value, t.value_off)?);
            }
            "mod_vlan_vid" => {
                let v = value_of(t, tok)?;
                let vid = parse_uint_max(v, 0xffff, "mod_vlan_vid", t.value_off)?;
                if vid > u128::from(VLAN_VID_MASK) {
                    return Err(ParseError::new(
                        format!("mod_vlan_vid:{} is not a valid VLAN VID (0 to 4095)", v),
                        t.value_off,
                        v,
                    ));
                }
                // encode_SET_VLAN_VID for OF1.2+: push a tag when the match has none.
                if !ctx.has_vlan() {
                    acts.push(Action::PushVlan(ethertype::VLAN));
                }
                acts.push(set_full(Field::VlanVid, vid | u128::from(VLAN_CFI)));
                ctx.flow.vlan_tci = (ctx.flow.vlan_tci & !VLAN_VID_MASK) | vid as u16 | VLAN_CFI;
            }
            "mod_vlan_pcp" => {
                let v = value_of(t, tok)?;
                let pcp = parse_uint_max(v, 0xff, "mod_vlan_pcp", t.value_off)?;
                if pcp > 7 {
                    return Err(ParseError::new(
                        format!("mod_vlan_pcp:{} is not a valid VLAN PCP (0 to 7)", v),
                        t.value_off,
                        v,
                    ));
                }
                if !ctx.has_vlan() {
                    acts.push(Action::PushVlan(ethertype::VLAN));
                }
                acts.push(set_full(Field::VlanPcp, pcp));
                ctx.flow.vlan_tci |= VLAN_CFI;
            }
            "push_vlan" => {
                let v = value_of(t, tok)?;
                let et = parse_uint_max(v, 0xffff, "push_vlan", t.value_off)? as u16;
                if et != ethertype::VLAN && et != ethertype::QINQ {
                    return Err(ParseError::new(
                        format!(
                            "push_vlan:{} is not a valid VLAN ethertype (0x8100 or 0x88a8)",
                            v
                        ),
                        t.value_off,
                        v,
                    ));
                }
                acts.push(Action::PushVlan(et));
                ctx.flow.vlan_tci = VLAN_CFI;
            }
            "strip_vlan" | "pop_vlan" => {
                if t.value.is_some() {
                    return Err(ParseError::new(
                        format!("{} takes no argument", name),
                        off,
                        tok,
                    ));
                }
                if !ctx.has_vlan() {
                    return Err(ParseError::new(
                        format!(
                            "{} requires a VLAN in the match (OpenFlow 1.3 rejects it otherwise): add \"dl_vlan=VID,\" or \"vlan_tci=0x1000/0x1000,\" to the match",
                            tok
                        ),
                        off,
                        tok,
                    ));
                }
                acts.push(Action::PopVlan);
                ctx.flow.vlan_tci = 0;
            }
            "goto_table" => {
                let v = value_of(t, tok)?;
                let n = parse_uint_max(v, 254, "goto_table", t.value_off)? as u8;
                if let Some(floor) = goto_floor {
                    if n <= floor {
                        return Err(ParseError::new(
                            format!(
                                "goto_table:{} must go to a later table than this flow's table {} (use resubmit(,{}) to go back)",
                                n, floor, n
                            ),
                            off,
                            tok,
                        ));
                    }
                }
                acts.push(Action::GotoTable(n));
                goto_at = Some(tok.to_string());
            }
            "ct" => {
                let ct = parse_ct(t.value, t.value_off, off, tok)?;
                if let Some(n) = &ct.nat {
                    check_nat_match(n, &ctx, off, tok)?;
                }
                acts.push(Action::Ct(Box::new(ct)));
            }
            "ct_clear" => {
                if t.value.is_some() {
                    return Err(ParseError::new("ct_clear takes no argument", off, tok));
                }
                acts.push(Action::CtClear);
            }
            "write_metadata" => {
                let v = value_of(t, tok)?;
                if let Some(w) = &metadata_at {
                    return Err(ParseError::new(
                        format!("write_metadata may be given only once (already \"{}\")", w),
                        off,
                        tok,
                    ));
                }
                let (mv, mm) = split_mask(v);
                let value =
                    parse_uint_max(mv, u128::from(u64::MAX), "write_metadata", t.value_off)? as u64;
                let mask = match mm {
                    Some(mm) => parse_uint_max(
                        mm,
                        u128::from(u64::MAX),
                        "write_metadata mask",
                        t.value_off + mv.len() + 1,
                    )? as u64,
                    None => u64::MAX,
                };
                acts.push(Action::WriteMetadata {
                    value: value & mask,
                    mask,
                });
                metadata_at = Some(tok.to_string());
            }
            _ => {
                // A bare port number or reserved name is an output (ofpacts_parse__).
                if t.value.is_none() {
                    if let Ok(p) = parse_port(t.key, off) {
                        acts.push(Action::Output(output_port_check(p, t.key, off)?));
                        continue;
                    }
                }
                let hint = match closest(t.key, ACTION_NAMES.iter().copied()) {
                    Some(c) => format!("; did you mean \"{}\"?", c),
                    None => String::new(),
                };
                return Err(ParseError::new(
                    format!("unknown action \"{}\"{}", t.key, hint),
                    off,
                    t.key,
                ));
            }
        }
    }
    if let Some((off, tok)) = drop_at {
        if !acts.is_empty() {
            return Err(ParseError::new(
                "\"drop\" must not be accompanied by any other action or instruction",
                off,
                &tok,
            ));
        }
    }
    Ok(acts)
}

fn set_full(field: Field, value: u128) -> Action {
    Action::SetField {
        field,
        value,
        mask: field.info().max_value(),
    }
}

fn check_writable(field: Field, tok: &str, off: usize) -> PResult<()> {
    if field.info().writable {
        Ok(())
    } else {
        Err(ParseError::new(
            format!("{}: field {} is read-only", tok, field.name()),
            off,
            tok,
        ))
    }
}

/// TCP or UDP port field for `mod_tp_*` / `set_field:..->tp_*` from the match's
/// protocol (check_set_l4_port; later fragments have no L4 header).
fn l4_field(ctx: &ActionCtx, src: bool) -> Option<Field> {
    if !ctx.ip_any() || ctx.flow.nw_frag & super::key::FRAG_LATER != 0 {
        return None;
    }
    match (ctx.flow.nw_proto, src) {
        (ipproto::TCP, true) => Some(Field::TcpSrc),
        (ipproto::TCP, false) => Some(Field::TcpDst),
        (ipproto::UDP, true) => Some(Field::UdpSrc),
        (ipproto::UDP, false) => Some(Field::UdpDst),
        _ => None,
    }
}

fn output_port_check(p: PortNo, s: &str, off: usize) -> PResult<PortNo> {
    if p == ofport::ANY || p == ofport::TABLE {
        return Err(ParseError::new(
            format!("cannot output to port {} in a flow", s),
            off,
            s,
        ));
    }
    Ok(p)
}

fn output_port(v: &str, off: usize) -> PResult<PortNo> {
    // `CONTROLLER:65535` is how dump-flows prints an output to the controller.
    if let Some((name, len)) = v.split_once(':') {
        if name.eq_ignore_ascii_case("CONTROLLER") && len == "65535" {
            return Ok(ofport::CONTROLLER);
        }
    }
    let p = parse_port(v, off)?;
    output_port_check(p, v, off)
}

fn parse_resubmit(v: &str, voff: usize, delim: u8, tok: &str, off: usize) -> PResult<Action> {
    let port_of = |s: &str, o: usize| -> PResult<Option<PortNo>> {
        if s.is_empty() {
            return Ok(None);
        }
        let p = parse_port(s, o)?;
        Ok((p != ofport::IN_PORT).then_some(p))
    };
    let (in_port, table) = if delim == b'(' {
        let mut parts = v.splitn(3, ',');
        let ps = parts.next().unwrap_or("").trim();
        let ts = parts.next().unwrap_or("").trim();
        if let Some(extra) = parts.next() {
            return Err(ParseError::new(
                format!("resubmit option \"{}\" is not supported", extra),
                voff,
                v,
            ));
        }
        let tsoff = voff + v.find(',').map_or(0, |p| p + 1);
        let table = if ts.is_empty() {
            None
        } else {
            let n = parse_uint_max(ts, 255, "resubmit table", tsoff)?;
            (n != 255).then_some(n as u8)
        };
        (port_of(ps, voff)?, table)
    } else {
        (port_of(v, voff)?, None)
    };
    if in_port.is_none() && table.is_none() {
        return Err(ParseError::new(
            "at least one \"in_port\" or \"table\" must be specified on resubmit",
            off,
            tok,
        ));
    }
    Ok(Action::Resubmit { in_port, table })
}

fn parse_set_field(
    ctx: &mut ActionCtx,
    acts: &mut Vec<Action>,
    field: Field,
    val: &str,
    voff: usize,
    tok: &str,
    off: usize,
) -> PResult<()> {
    check_writable(field, tok, off)?;
    // Normalise OVS aliases onto what the action really writes.
    let field = match field {
        Field::TpSrc | Field::TpDst => l4_field(ctx, field == Field::TpSrc).ok_or_else(|| {
            ParseError::new(
                format!("{} requires tcp or udp (tcp6/udp6) in the match: add \"tcp,\" or \"udp,\" to the match", tok),
                off,
                tok,
            )
        })?,
        f => f,
    };
    let (field, value, mask) = if field == Field::NwTos {
        // OVS's nw_tos is the DSCP bits (MFF_IP_DSCP).
        let v = parse_uint_max(val, 0xff, "nw_tos", voff)?;
        if v & 3 != 0 {
            return Err(ParseError::new(
                format!(
                    "{} is not a valid value for nw_tos: the ECN bits must be zero",
                    val
                ),
                voff,
                val,
            ));
        }
        (Field::IpDscp, v >> 2, 0x3f)
    } else {
        let info = field.info();
        let (v, m) = parse_field_value(info, val, voff)?;
        (field, v, m)
    };
    ctx.check_field(field, tok, off)?;
    let full = field.info().max_value();
    if mask == full {
        acts.push(Action::SetField { field, value, mask });
    } else if mask == 0 {
        return Err(ParseError::new(
            format!("{}: the mask is zero, so it would write nothing", tok),
            off,
            tok,
        ));
    } else {
        // encode_SET_FIELD for OF1.2-1.4: a partial set_field becomes one
        // NXAST_REG_LOAD per contiguous run of mask bits; dump-flows shows loads.
        for (ofs, n_bits) in mask_segments(mask) {
            acts.push(Action::Load {
                dst: FieldRange { field, ofs, n_bits },
                value: (value >> ofs) & prefix_mask(n_bits, n_bits),
            });
        }
    }
    if matches!(field, Field::VlanVid | Field::VlanTci) {
        let tci = (ctx.flow.vlan_tci & !(VLAN_VID_MASK | VLAN_CFI)) | (value as u16 & 0x1fff);
        ctx.flow.vlan_tci = if field == Field::VlanTci {
            value as u16
        } else {
            tci
        };
    }
    Ok(())
}

/// `ct`, `ct()` or `ct(commit,zone=Z,table=T,exec(...),nat...)`
/// (ovs-actions(7) "The ct action"; lib/ofp-actions.c `parse_CT`).
fn parse_ct(v: Option<&str>, voff: usize, off: usize, tok: &str) -> PResult<CtAction> {
    let mut ct = CtAction {
        commit: false,
        zone: CtZone::Imm(0),
        table: None,
        mark: None,
        label: None,
        nat: None,
    };
    let Some(v) = v else {
        return Ok(ct);
    };
    for a in lex(v, voff)? {
        let name = a.key.to_ascii_lowercase();
        let whole = a.whole(v, voff);
        match name.as_str() {
            "commit" if a.value.is_none() => ct.commit = true,
            "force" => {
                return Err(ParseError::new(
                    "ct(force) is not supported yet",
                    a.key_off,
                    whole,
                ))
            }
            "table" => {
                let tv = value_of(&a, whole)?;
                let t = parse_table_id(tv, a.value_off)?;
                ct.table = Some(t);
            }
            "zone" => {
                let zv = value_of(&a, whole)?;
                ct.zone = if zv.contains('[') {
                    let r = parse_subfield(zv, a.value_off)?;
                    if r.n_bits != 16 {
                        return Err(ParseError::new(
                            format!("ct: zone={zv} must be a 16-bit subfield, got {} bits", r.n_bits),
                            a.value_off,
                            zv,
                        ));
                    }
                    CtZone::Field(r)
                } else {
                    CtZone::Imm(parse_uint_max(zv, 0xffff, "ct zone", a.value_off)? as u16)
                };
            }
            "exec" => {
                let ev = a.value.unwrap_or("");
                parse_ct_exec(&mut ct, ev, a.value_off)?;
            }
            "nat" => {
                if ct.nat.is_some() {
                    return Err(ParseError::new(
                        "ct: only one nat(...) per ct action",
                        a.key_off,
                        whole,
                    ));
                }
                let n = crate::conntrack::nat::NatSpec::parse(a.value)
                    .map_err(|e| ParseError::new(format!("ct: {e}"), a.key_off, whole))?;
                ct.nat = Some(n);
            }
            "alg" => {
                return Err(ParseError::new(
                    "ct: alg (FTP/TFTP helpers) is not supported",
                    a.key_off,
                    whole,
                ))
            }
            _ => {
                return Err(ParseError::new(
                    format!(
                        "ct: unknown argument \"{whole}\" (known: commit, zone=, table=, exec(...), nat)"
                    ),
                    a.key_off,
                    whole,
                ))
            }
        }
    }
    if !ct.commit && ct.nat.is_some_and(|n| n.addrs.is_some()) {
        return Err(ParseError::new(
            "ct: nat with an address range needs commit (OVS: OFPBAC_BAD_ARGUMENT); use plain ct(nat) to apply an existing translation",
            off,
            tok,
        ));
    }
    if !ct.commit && (ct.mark.is_some() || ct.label.is_some()) {
        return Err(ParseError::new(
            "ct: exec(...) needs commit (OVS only writes ct_mark/ct_label of a committed connection)",
            off,
            tok,
        ));
    }
    Ok(ct)
}

/// OVS refuses `nat` in a flow whose match does not make the packet IP
/// (and an IPv4 range without `ip`, an IPv6 range without `ipv6`):
/// OFPBAC_MATCH_INCONSISTENT. A group bucket has no match: translation
/// skips the rewrite of a packet of the other family.
fn check_nat_match(
    n: &crate::conntrack::nat::NatSpec,
    ctx: &ActionCtx,
    off: usize,
    tok: &str,
) -> PResult<()> {
    if ctx.bucket {
        return Ok(());
    }
    let dl = ctx.flow.dl_type;
    let ok = match n.addrs {
        Some(a) if a.v6 => dl == crate::flow::key::ethertype::IPV6,
        Some(_) => dl == crate::flow::key::ethertype::IPV4,
        None => matches!(
            dl,
            crate::flow::key::ethertype::IPV4 | crate::flow::key::ethertype::IPV6
        ),
    };
    if ok {
        return Ok(());
    }
    let want = match n.addrs {
        Some(a) if a.v6 => "ipv6",
        Some(_) => "ip",
        None => "ip or ipv6",
    };
    Err(ParseError::new(
        format!(
            "ct: nat needs {want} in the match (OVS: actions are invalid with specified match)"
        ),
        off,
        tok,
    ))
}

fn parse_table_id(tv: &str, off: usize) -> PResult<u8> {
    Ok(parse_uint_max(tv, 254, "ct table", off)? as u8)
}

/// The `exec(...)` actions of `ct`: only `set_field` (and `load`) on
/// `ct_mark` and `ct_label`, as OVS allows.
fn parse_ct_exec(ct: &mut CtAction, v: &str, voff: usize) -> PResult<()> {
    for a in lex(v, voff)? {
        let whole = a.whole(v, voff);
        let name = a.key.to_ascii_lowercase();
        let (field, value, mask) = match name.as_str() {
            "set_field" => {
                let sv = value_of(&a, whole)?;
                let (val, fname, foff) = split_arrow(sv, a.value_off, whole)?;
                let field = lookup_field(fname, foff)?;
                if !matches!(field, Field::CtMark | Field::CtLabel) {
                    return Err(ParseError::new(
                        format!("ct: exec may only set ct_mark or ct_label, not {fname}"),
                        foff,
                        fname,
                    ));
                }
                let (v, m) = parse_field_value(field.info(), val, a.value_off)?;
                (field, v, m)
            }
            "load" => {
                let lv = value_of(&a, whole)?;
                let (val, dst, doff) = split_arrow(lv, a.value_off, whole)?;
                let r = parse_subfield(dst, doff)?;
                if !matches!(r.field, Field::CtMark | Field::CtLabel) {
                    return Err(ParseError::new(
                        format!("ct: exec may only load into ct_mark or ct_label, not {dst}"),
                        doff,
                        dst,
                    ));
                }
                let value = parse_uint(val)
                    .filter(|x| r.n_bits >= 128 || *x >> r.n_bits == 0)
                    .ok_or_else(|| {
                        ParseError::new(
                            format!("load: value \"{val}\" does not fit in {} bits", r.n_bits),
                            a.value_off,
                            val,
                        )
                    })?;
                let ones = if r.n_bits >= 128 {
                    u128::MAX
                } else {
                    (1u128 << r.n_bits) - 1
                };
                (r.field, value << r.ofs, ones << r.ofs)
            }
            _ => {
                return Err(ParseError::new(
                    format!("ct: exec may only contain set_field or load on ct_mark/ct_label, not \"{whole}\""),
                    a.key_off,
                    whole,
                ))
            }
        };
        if field == Field::CtMark {
            let (ov, om) = ct.mark.unwrap_or((0, 0));
            let (v, m) = (value as u32, mask as u32);
            ct.mark = Some(((ov & !m) | (v & m), om | m));
        } else {
            let (ov, om) = ct.label.unwrap_or((0, 0));
            ct.label = Some(((ov & !mask) | (value & mask), om | mask));
        }
    }
    Ok(())
}

/// `route`, `route()` or `route(table=N)` (the ferroswitch routing action).
fn parse_route_action(v: Option<&str>, off: usize) -> Result<Action, ParseError> {
    let v = v.unwrap_or("").trim();
    if v.is_empty() {
        return Ok(Action::Route { table: 0 });
    }
    let t = v.strip_prefix("table=").unwrap_or(v);
    let table = t.parse::<u8>().map_err(|_| {
        ParseError::new(
            format!("route({v}): expected route(table=N) with N from 0 to 255"),
            off,
            v,
        )
    })?;
    Ok(Action::Route { table })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` parsed as an add, printed back as dump-flows does.
    fn sctp_dump(text: &str) -> String {
        match parse_flow(text, ParseMode::Add) {
            Ok(spec) => crate::flow::format_flow(&spec.to_flow()),
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn sctp_ports_parse_and_print_as_ovs_ofctl() {
        // ovs-ofctl prints SCTP ports as tp_src/tp_dst after the `sctp`
        // shorthand (lib/match.c match_format), whatever name was used.
        for (text, want) in [
            ("sctp,tp_dst=80,actions=drop", "sctp,tp_dst=80 actions=drop"),
            (
                "sctp,sctp_dst=80,actions=drop",
                "sctp,tp_dst=80 actions=drop",
            ),
            (
                "sctp,sctp_src=5000,sctp_dst=0x50/0xfff0,actions=drop",
                "sctp,tp_src=5000,tp_dst=80/0xfff0 actions=drop",
            ),
            (
                "sctp6,ipv6_dst=2001:db8::2,tp_dst=38412,actions=drop",
                "sctp6,ipv6_dst=2001:db8::2,tp_dst=38412 actions=drop",
            ),
            (
                "ip,nw_proto=132,OXM_OF_SCTP_DST=9,actions=drop",
                "sctp,tp_dst=9 actions=drop",
            ),
            ("sctp,actions=drop", "sctp actions=drop"),
        ] {
            let out = sctp_dump(text);
            assert!(out.ends_with(want), "{text:?} printed {out:?}");
            // And the printed form parses back to the same match.
            let again = sctp_dump(&out.replace(" actions=", ",actions="));
            assert_eq!(again, out, "{text:?} round trip");
        }
        let spec = match parse_flow("sctp,tp_src=1,tp_dst=2,actions=drop", ParseMode::Add) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let f = spec.to_flow();
        let mut k = FlowKey::ZERO;
        k.dl_type = ethertype::IPV4;
        k.nw_proto = ipproto::SCTP;
        k.tp_src = 1;
        k.tp_dst = 2;
        assert!(f.matches.matches(&k), "an SCTP packet 1->2 matches");
        k.nw_proto = ipproto::UDP;
        assert!(!f.matches.matches(&k), "a UDP packet 1->2 does not");
    }

    #[test]
    fn sctp_port_prerequisites_are_errors_naming_the_fix() {
        for (text, needle) in [
            (
                "sctp_dst=80,actions=drop",
                "sctp_dst=80 requires sctp or sctp6: add \"sctp,\"",
            ),
            ("ip,sctp_src=80,actions=drop", "requires sctp or sctp6"),
            ("tcp,sctp_dst=80,actions=drop", "requires sctp or sctp6"),
            ("ipv6,sctp_dst=80,actions=drop", "add \"sctp6,\""),
            ("sctp,tcp_dst=80,actions=drop", "requires tcp or tcp6"),
            ("sctp,udp_src=80,actions=drop", "requires udp or udp6"),
            (
                "ip,tp_dst=80,actions=drop",
                "requires tcp, udp, sctp, tcp6, udp6 or sctp6",
            ),
            ("sctp,tp_dst=65536,actions=drop", "65536"),
        ] {
            match parse_flow(text, ParseMode::Add) {
                Ok(_) => panic!("{text:?} parsed"),
                Err(e) => assert!(e.to_string().contains(needle), "{text:?}: {e}"),
            }
        }
        // Rewriting an SCTP port would need its CRC32c recomputed: refused.
        for text in [
            "sctp,actions=set_field:1->sctp_dst",
            "sctp,actions=mod_tp_dst:1",
            "sctp,actions=set_field:1->tp_dst",
        ] {
            assert!(parse_flow(text, ParseMode::Add).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn lexer_offsets_and_nesting() {
        let t = lex("ip, nw_dst = 10.0.0.1 resubmit(1,(2)),x:y", 0).unwrap();
        let keys: Vec<_> = t
            .iter()
            .map(|t| (t.key, t.key_off, t.value, t.value_off))
            .collect();
        assert_eq!(keys[0], ("ip", 0, None, 2));
        assert_eq!(keys[1], ("nw_dst", 4, Some("10.0.0.1"), 13));
        assert_eq!(keys[2], ("resubmit", 22, Some("1,(2)"), 31));
        assert_eq!(keys[3], ("x", 38, Some("y"), 40));
        assert!(lex("a(b", 0).is_err());
        assert!(lex("a=b(c", 0).is_err());
    }

    #[test]
    fn numbers_masks_and_names() {
        assert_eq!(parse_uint("0x1F"), Some(31));
        assert_eq!(parse_uint("12"), Some(12));
        assert_eq!(parse_uint("-1"), None);
        assert_eq!(parse_uint("0x"), None);
        assert_eq!(parse_mac("0:a:b:c:d:e"), Some(0x000a_0b0c_0d0e));
        assert_eq!(parse_mac("00:0a:0b:0c:0d"), None);
        assert_eq!(mask_segments(0xf0f), vec![(0, 4), (8, 4)]);
        assert_eq!(mask_segments(u128::MAX), vec![(0, 128)]);
        assert_eq!(parse_port("local", 0), Ok(ofport::LOCAL));
        assert_eq!(parse_port("65534", 0), Ok(ofport::LOCAL));
        assert!(parse_port("65280", 0).is_err());
        assert_eq!(
            closest("nw_dsst", ["nw_dst", "nw_src"].into_iter()),
            Some("nw_dst")
        );
        assert_eq!(closest("zzzzzzzz", ["nw_dst"].into_iter()), None);
        assert_eq!(
            parse_flags("+trk-new", CT_STATE_NAMES, "ct_state", 0),
            Ok((0x20, 0x21))
        );
        assert!(parse_flags("+trk+trk", CT_STATE_NAMES, "ct_state", 0).is_err());
        assert!(parse_flags("+bogus", TCP_FLAG_NAMES, "tcp_flags", 0).is_err());
    }
}
