//! NAT for connection tracking: the `nat(...)` argument of `ct`, its
//! parsing and printing in ovs-ofctl's syntax, and the header rewrites that
//! apply a connection's translation to a frame.
//!
//! Data enters as the text inside `ct(...,nat(...))` ([`NatSpec::parse`],
//! from the flow parser) and, per packet, as a frame plus the tuple the
//! packet has and the tuple it must get ([`rewrite`], [`rewrite_related`],
//! called by the tracker after it released its shard lock). The choice of
//! address and port for a new connection (port allocation) lives in the
//! tracker (`super::Conntrack`), because it probes the connection table.
//!
//! Semantics follow ovs-actions(7) "The ct action" / "nat" and OVS's
//! userspace tracker (lib/conntrack.c `nat_packet`, `reverse_nat_packet`,
//! the ICMP-inner handling): addresses and TCP/UDP ports (ICMP echo
//! identifier for ICMP) are rewritten with incremental checksum updates
//! (RFC 1624); an ICMP error about a translated connection gets its quoted
//! header translated back, with the quoted IP checksum, the ICMP checksum
//! and the outer IP checksum fixed. Never: panic on a short or malformed
//! frame (a rewrite that does not fit is skipped), allocate, or lock.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::key::ipproto;
use crate::packet::Layout;

/// `nat(...)` flags (OVS `NX_NAT_F_*`).
pub mod flags {
    /// `persistent`: the address choice depends on the addresses only.
    pub const PERSISTENT: u8 = 0x1;
    /// `hash`: the start of the port probe is a hash of the connection.
    pub const HASH: u8 = 0x2;
    /// `random`: the start of the port probe is pseudo-random.
    pub const RANDOM: u8 = 0x4;
}

/// Which side of a connection `nat(...)` translates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Plain `nat`: apply an existing connection's translation, create none.
    #[default]
    Apply,
    /// `nat(src=...)`: source NAT (SNAT; masquerade with the node address).
    Src,
    /// `nat(dst=...)`: destination NAT (DNAT; services).
    Dst,
}

/// An address range of `nat(src=A-B)`; IPv4 addresses are stored in the
/// low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrRange {
    /// True for IPv6.
    pub v6: bool,
    /// First address.
    pub min: u128,
    /// Last address (`>= min`).
    pub max: u128,
}

/// The `nat` argument of a `ct` action (OVS `struct ofpact_nat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatSpec {
    /// `src`, `dst`, or plain `nat`.
    pub kind: NatKind,
    /// The address range (None: `nat(src)` without one, which translates
    /// nothing new, like plain `nat`).
    pub addrs: Option<AddrRange>,
    /// The port range `:P` / `:P-Q` (None: keep the port when it is free).
    pub ports: Option<(u16, u16)>,
    /// [`flags`] bits.
    pub flags: u8,
}

impl NatSpec {
    /// True when a new connection committed with this spec gets a
    /// translation (`nat(src=...)` / `nat(dst=...)` with an address range).
    pub fn binds(&self) -> bool {
        self.kind != NatKind::Apply && self.addrs.is_some()
    }

    /// Parse the inside of `nat(...)` (None for a bare `nat`), as OVS's
    /// `parse_NAT` does: `src=IP[-IP][:PORT[-PORT]]` or `dst=...`, IPv6 in
    /// brackets when a port follows, flags `persistent`, `hash`, `random`.
    pub fn parse(v: Option<&str>) -> Result<NatSpec, String> {
        let mut n = NatSpec::default();
        let Some(v) = v else { return Ok(n) };
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, val) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (part, None),
            };
            match key {
                "src" | "dst" => {
                    if n.kind != NatKind::Apply {
                        return Err("nat: may only specify one of \"src\" or \"dst\"".into());
                    }
                    n.kind = if key == "src" {
                        NatKind::Src
                    } else {
                        NatKind::Dst
                    };
                    if let Some(r) = val {
                        let (a, p) = parse_range(r)?;
                        n.addrs = Some(a);
                        n.ports = p;
                    }
                }
                "persistent" if val.is_none() => n.flags |= flags::PERSISTENT,
                "hash" if val.is_none() => n.flags |= flags::HASH,
                "random" if val.is_none() => n.flags |= flags::RANDOM,
                _ => {
                    return Err(format!(
                        "nat: unknown argument \"{part}\" (known: src=, dst=, persistent, hash, random)"
                    ))
                }
            }
        }
        if n.flags != 0 && n.kind == NatKind::Apply {
            return Err("nat: flags allowed only with \"src\" or \"dst\"".into());
        }
        if n.flags & flags::HASH != 0 && n.flags & flags::RANDOM != 0 {
            return Err("nat: both \"hash\" and \"random\" are not allowed".into());
        }
        Ok(n)
    }

    /// The text `ovs-ofctl dump-flows` prints (lib/ofp-actions.c
    /// `format_NAT`): `nat`, `nat(src)`, `nat(src=10.0.0.1-10.0.0.2:1024-2048,persistent,random)`,
    /// `nat(dst=[fd00::1]:80)`.
    pub fn format(&self) -> String {
        let mut s = String::from("nat");
        let side = match self.kind {
            NatKind::Apply => return s,
            NatKind::Src => "src",
            NatKind::Dst => "dst",
        };
        let _ = write!(s, "({side}");
        if let Some(a) = self.addrs {
            let br = a.v6 && self.ports.is_some();
            let ip = |x: u128| {
                let t = ip_of(a.v6, x).to_string();
                if br {
                    format!("[{t}]")
                } else {
                    t
                }
            };
            let _ = write!(s, "={}", ip(a.min));
            if a.max != a.min {
                let _ = write!(s, "-{}", ip(a.max));
            }
            if let Some((p, q)) = self.ports {
                let _ = write!(s, ":{p}");
                if q != p {
                    let _ = write!(s, "-{q}");
                }
            }
        }
        for (bit, name) in [
            (flags::PERSISTENT, "persistent"),
            (flags::HASH, "hash"),
            (flags::RANDOM, "random"),
        ] {
            if self.flags & bit != 0 {
                let _ = write!(s, ",{name}");
            }
        }
        s.push(')');
        s
    }
}

fn ip_of(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

fn parse_ip(s: &str, whole: &str) -> Result<(bool, u128), String> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok((false, u128::from(u32::from(a)))),
        Ok(IpAddr::V6(a)) => Ok((true, u128::from(a))),
        Err(_) => Err(format!(
            "nat: invalid address \"{s}\" in \"{whole}\" (expected IP[-IP][:PORT[-PORT]], IPv6 in brackets before a port)"
        )),
    }
}

/// `IP[-IP][:PORT[-PORT]]`, `[IP6][-[IP6]][:PORT[-PORT]]` or `IP6[-IP6]`.
fn parse_range(r: &str) -> Result<(AddrRange, Option<(u16, u16)>), String> {
    let bad = || format!("nat: invalid nat range \"{r}\"");
    // Split off the port part: after the last ']' for bracketed IPv6, at the
    // only ':' for IPv4; bare IPv6 (several ':') has no ports.
    let (addrs, ports) = if r.contains('[') {
        let close = r.rfind(']').ok_or_else(bad)?;
        match r[close + 1..].strip_prefix(':') {
            Some(p) => (&r[..=close], Some(p)),
            None if r[close + 1..].is_empty() => (r, None),
            None => return Err(bad()),
        }
    } else if r.matches(':').count() == 1 {
        let (a, p) = r.split_once(':').ok_or_else(bad)?;
        (a, Some(p))
    } else {
        (r, None)
    };
    let (lo, hi) = match addrs.split_once("-") {
        // An IPv6 address has no '-', so the first one splits the range.
        Some((a, b)) => (a, Some(b)),
        None => (addrs, None),
    };
    let (v6, min) = parse_ip(lo, r)?;
    let max = match hi {
        Some(h) => {
            let (v6b, m) = parse_ip(h, r)?;
            if v6b != v6 {
                return Err(format!("nat: \"{r}\" mixes IPv4 and IPv6"));
            }
            m
        }
        None => min,
    };
    if max < min {
        return Err(bad());
    }
    let ports = match ports {
        None => None,
        Some(p) => {
            let num = |x: &str| x.trim().parse::<u16>().map_err(|_| bad());
            let (a, b) = match p.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let a = num(p)?;
                    (a, a)
                }
            };
            if a == 0 && b == 0 {
                // OVS prints `:0` as no port range.
                None
            } else if a == 0 || b < a {
                return Err(bad());
            } else {
                Some((a, b))
            }
        }
    };
    Ok((AddrRange { v6, min, max }, ports))
}

/// One direction's addresses and ports as the rewrite sees them (ports are
/// the ICMP echo identifier for ICMP echo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ends {
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
}

/// Ones'-complement sum of 16-bit big-endian words (RFC 1071), unfolded.
fn sum16(b: &[u8]) -> u32 {
    let mut s: u32 = 0;
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        s = s.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [x] = it.remainder() {
        s = s.wrapping_add(u32::from(*x) << 8);
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for one 16-bit word.
fn adj(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

fn adj_addr(mut hc: u16, v6: bool, old: u128, new: u128) -> u16 {
    let n = if v6 { 8 } else { 2 };
    for i in 0..n {
        let sh = 16 * i;
        hc = adj(hc, (old >> sh) as u16, (new >> sh) as u16);
    }
    hc
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    let s = b.get_mut(at..at + 2)?;
    s.copy_from_slice(&v.to_be_bytes());
    Some(())
}

fn addr_len(v6: bool) -> usize {
    if v6 {
        16
    } else {
        4
    }
}

fn put_addr(b: &mut [u8], at: usize, v6: bool, a: u128) -> Option<()> {
    let s = b.get_mut(at..at + addr_len(v6))?;
    if v6 {
        s.copy_from_slice(&a.to_be_bytes());
    } else {
        s.copy_from_slice(&(a as u32).to_be_bytes());
    }
    Some(())
}

/// Offsets of the source and destination addresses in an IP header.
fn addr_offsets(v6: bool) -> (usize, usize) {
    if v6 {
        (8, 24)
    } else {
        (12, 16)
    }
}

/// Rewrite the IP header at `l3` from `from` to `to` addresses (IPv4
/// header checksum updated) and the transport header at `l4` (ports or
/// echo id; checksum updated, pseudo-header included). `quoted`: the
/// headers are inside an ICMP error, where only the first 8 transport bytes
/// are guaranteed (a checksum beyond the frame is left alone).
fn rewrite_at(
    b: &mut [u8],
    l3: usize,
    l4: usize,
    v6: bool,
    proto: u8,
    from: &Ends,
    to: &Ends,
) -> Option<()> {
    let (so, d_o) = addr_offsets(v6);
    // Check the fixed parts exist before changing anything.
    b.get(l3..l3 + d_o + addr_len(v6))?;
    b.get(l4..l4 + 8)?;
    if !v6 {
        let mut c = get16(b, l3 + 10)?;
        c = adj_addr(c, false, from.src, to.src);
        c = adj_addr(c, false, from.dst, to.dst);
        put16(b, l3 + 10, c)?;
    }
    put_addr(b, l3 + so, v6, to.src)?;
    put_addr(b, l3 + d_o, v6, to.dst)?;
    // Where the transport checksum is, whether the pseudo-header counts,
    // and which words are ports / identifiers.
    let (csum_at, pseudo, ports): (usize, bool, &[(usize, u16, u16)]) = match proto {
        ipproto::TCP => (
            16,
            true,
            &[(0, from.sport, to.sport), (2, from.dport, to.dport)],
        ),
        ipproto::UDP => (
            6,
            true,
            &[(0, from.sport, to.sport), (2, from.dport, to.dport)],
        ),
        ipproto::ICMP if !v6 => (2, false, &[(4, from.sport, to.sport)]),
        ipproto::ICMPV6 if v6 => (2, true, &[(4, from.sport, to.sport)]),
        _ => (usize::MAX, false, &[]),
    };
    for &(at, _, new) in ports {
        put16(b, l4 + at, new)?;
    }
    if csum_at == usize::MAX {
        return Some(());
    }
    let Some(mut c) = get16(b, l4 + csum_at) else {
        return Some(());
    };
    if proto == ipproto::UDP && !v6 && c == 0 {
        // No UDP checksum (RFC 768): nothing to update.
        return Some(());
    }
    if pseudo {
        c = adj_addr(c, v6, from.src, to.src);
        c = adj_addr(c, v6, from.dst, to.dst);
    }
    for &(_, old, new) in ports {
        c = adj(c, old, new);
    }
    if proto == ipproto::UDP && c == 0 {
        // RFC 768: a computed zero is sent as all ones.
        c = 0xffff;
    }
    put16(b, l4 + csum_at, c)
}

/// Translate a packet of a connection: its addresses and ports go from
/// `from` to `to`. Returns false (frame untouched or partly touched only
/// if it is shorter than its layout says, which extraction rules out) when
/// the headers do not fit.
pub(super) fn rewrite(
    frame: &mut [u8],
    layout: &Layout,
    v6: bool,
    proto: u8,
    from: &Ends,
    to: &Ends,
) -> bool {
    let (l3, l4) = (usize::from(layout.l3), usize::from(layout.l4));
    rewrite_at(frame, l3, l4, v6, proto, from, to).is_some()
}

/// Translate an ICMP error related to a NATed connection (RFC 792 / RFC
/// 4443 §2.4; OVS `reverse_nat_packet` with `related`): the quoted
/// header goes from `inner_from` to `inner_to` (quoted IP checksum and, if
/// quoted, the transport checksum updated), the outer source / destination
/// become `outer_src` / `outer_dst` when given, then the ICMP checksum is
/// recomputed over the whole message and the outer IPv4 checksum updated.
#[allow(clippy::too_many_arguments)]
pub(super) fn rewrite_related(
    frame: &mut [u8],
    layout: &Layout,
    v6: bool,
    inner_proto: u8,
    inner_from: &Ends,
    inner_to: &Ends,
    outer_src: Option<u128>,
    outer_dst: Option<u128>,
) -> bool {
    related_at(
        frame,
        usize::from(layout.l3),
        usize::from(layout.l4),
        v6,
        inner_proto,
        inner_from,
        inner_to,
        outer_src,
        outer_dst,
    )
    .is_some()
}

#[allow(clippy::too_many_arguments)]
fn related_at(
    b: &mut [u8],
    l3: usize,
    l4: usize,
    v6: bool,
    inner_proto: u8,
    inner_from: &Ends,
    inner_to: &Ends,
    outer_src: Option<u128>,
    outer_dst: Option<u128>,
) -> Option<()> {
    let il3 = l4 + 8;
    let il4 = if v6 {
        il3 + 40
    } else {
        il3 + usize::from(*b.get(il3)? & 0x0f) * 4
    };
    // The ICMP message's end: the IP payload length, bounded by the frame.
    let end = if v6 {
        l3 + 40 + usize::from(get16(b, l3 + 4)?)
    } else {
        l3 + usize::from(get16(b, l3 + 2)?)
    }
    .min(b.len());
    if end < il4 + 8 {
        return None;
    }
    // The quoted transport header may be cut short (8 bytes guaranteed):
    // rewrite within the ICMP message only.
    rewrite_at(
        &mut b[..end],
        il3,
        il4,
        v6,
        inner_proto,
        inner_from,
        inner_to,
    )?;
    let (so, d_o) = addr_offsets(v6);
    let old_src = read_addr(b, l3 + so, v6)?;
    let old_dst = read_addr(b, l3 + d_o, v6)?;
    let new_src = outer_src.unwrap_or(old_src);
    let new_dst = outer_dst.unwrap_or(old_dst);
    if !v6 {
        let mut c = get16(b, l3 + 10)?;
        c = adj_addr(c, false, old_src, new_src);
        c = adj_addr(c, false, old_dst, new_dst);
        put16(b, l3 + 10, c)?;
    }
    put_addr(b, l3 + so, v6, new_src)?;
    put_addr(b, l3 + d_o, v6, new_dst)?;
    // ICMP checksum over the whole message (and, for ICMPv6, the RFC 4443
    // §2.3 pseudo-header), recomputed: errors are rare and short.
    put16(b, l4 + 2, 0)?;
    let mut s = sum16(b.get(l4..end)?);
    if v6 {
        s = s
            .wrapping_add(sum16(b.get(l3 + 8..l3 + 40)?))
            .wrapping_add((end - l4) as u32)
            .wrapping_add(u32::from(ipproto::ICMPV6));
    }
    put16(b, l4 + 2, !fold(s))
}

fn read_addr(b: &[u8], at: usize, v6: bool) -> Option<u128> {
    let s = b.get(at..at + addr_len(v6))?;
    Some(if v6 {
        let mut x = [0u8; 16];
        x.copy_from_slice(s);
        u128::from_be_bytes(x)
    } else {
        u128::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip_like_ovs_ofctl() {
        // (input, what ovs-ofctl -O OpenFlow13 parse-flow prints)
        for (i, o) in [
            ("", "nat"),
            ("src", "nat(src)"),
            ("src=10.0.0.1", "nat(src=10.0.0.1)"),
            ("src=10.0.0.1-10.0.0.1", "nat(src=10.0.0.1)"),
            (
                "dst=10.0.0.1-10.0.0.3:80-90,random",
                "nat(dst=10.0.0.1-10.0.0.3:80-90,random)",
            ),
            ("src=10.0.0.1:80-80", "nat(src=10.0.0.1:80)"),
            ("src=10.0.0.1:0", "nat(src=10.0.0.1)"),
            (
                "src=10.0.0.1:1024,hash,persistent",
                "nat(src=10.0.0.1:1024,persistent,hash)",
            ),
            (
                "src=10.0.0.1,random,persistent",
                "nat(src=10.0.0.1,persistent,random)",
            ),
            (
                "src=[fe80::1]-[fe80::2]:10-20",
                "nat(src=[fe80::1]-[fe80::2]:10-20)",
            ),
            ("src=fe80::1", "nat(src=fe80::1)"),
            ("src=fe80::1-fe80::2", "nat(src=fe80::1-fe80::2)"),
            ("src=[fe80::1]:80", "nat(src=[fe80::1]:80)"),
            ("src=[fe80::1]", "nat(src=fe80::1)"),
        ] {
            let v = if i.is_empty() { None } else { Some(i) };
            let n = NatSpec::parse(v).unwrap_or_else(|e| panic!("{i}: {e}"));
            assert_eq!(n.format(), o, "{i}");
            // Printing is a fixed point.
            let inner = o.strip_prefix("nat(").and_then(|x| x.strip_suffix(')'));
            assert_eq!(NatSpec::parse(inner).expect("reparse"), n, "{o}");
        }
    }

    #[test]
    fn bad_nat_arguments_are_refused_as_ovs_does() {
        for bad in [
            "src=10.0.0.2-10.0.0.1",
            "src=10.0.0.1:90-80",
            "src=10.0.0.1:0-100",
            "src=10.0.0.1,dst=10.0.0.2",
            "random",
            "src=10.0.0.1,random,hash",
            "src=10.0.0.1-fe80::1",
            "src=banana",
            "src=10.0.0.1:99999",
            "src=[fe80::1",
            "frob",
        ] {
            assert!(NatSpec::parse(Some(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn incremental_checksum_matches_recomputation() {
        // RFC 1624's example property: updating word by word equals a full
        // recomputation.
        let mut h = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = !fold(sum16(&h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let c2 = adj_addr(c, false, 0x0a00_0001, 0xc0a8_0107);
        h[12..16].copy_from_slice(&[192, 168, 1, 7]);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(c2, !fold(sum16(&h)));
    }
}
