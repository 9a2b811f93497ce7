//! Action execution: applies the header-rewrite [`DpAction`]s of a megaflow to
//! one packet, in place, without allocating.
//!
//! Data enters as a [`Packet`] plus an [`ExecCtx`] (the layer offsets from
//! extraction and the few key fields that say which headers are present) and
//! leaves as the same buffer, rewritten. `Output` is not executed here: the
//! datapath decides between copying and moving the packet (see `mod.rs`).
//!
//! Checksums are patched incrementally (RFC 1624 eqn. 3 via
//! [`crate::packet::checksum`]): the IPv4 header checksum (RFC 791) for any
//! IPv4 field change; the TCP/UDP checksum for port changes and, through the
//! pseudo-header (RFC 793 §3.1, RFC 768, RFC 8200 §8.1), for address changes;
//! the ICMP checksum for type/code changes; the ICMPv6 checksum for neighbour
//! discovery fields (target, reserved word, option type and MAC). A UDP checksum of 0 means "no
//! checksum" (RFC 768) and stays 0; a computed 0 is sent as 0xffff. Non-first
//! IPv4 fragments carry no L4 header, so their L4 is never touched.
//!
//! Every write is bounds-checked against the frame: an action that does not
//! fit the frame returns an [`ExecError`] (the datapath counts a drop); this
//! module never panics on packet contents.

use super::actions::DpAction;
use crate::flow::key::{ethertype, ipproto, nd, FlowKey, FRAG_LATER, VLAN_CFI};
use crate::packet::checksum::{update128, update16, update32};
use crate::packet::extract::{Layout, NO_OFFSET};
use crate::packet::Packet;
use crate::packet::{be16, be32, put16};

/// Tunnel metadata recorded by `SetTunnel`, consumed by a tunnel port's
/// encapsulation (RFC 7348) when the packet is output there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelMeta {
    /// VNI.
    pub tun_id: u64,
    /// Outer IPv4 source (0 = the tunnel port's local address).
    pub src: u32,
    /// Outer IPv4 destination (remote VTEP).
    pub dst: u32,
}

/// Per-packet execution state: where the headers are and what they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecCtx {
    /// Layer offsets (updated by VLAN push/pop).
    pub layout: Layout,
    /// Ethertype after VLAN tags (from the key).
    pub dl_type: u16,
    /// IP protocol (from the key).
    pub nw_proto: u8,
    /// Fragment bits (from the key).
    pub nw_frag: u8,
    /// Tunnel metadata set by `SetTunnel`, if any.
    pub tunnel: Option<TunnelMeta>,
    /// Next hop set by `SetNextHop` (0: none).
    pub nexthop: u32,
}

impl ExecCtx {
    /// Context for a packet whose extraction gave `key` and `layout`.
    #[inline]
    pub fn new(key: &FlowKey, layout: Layout) -> ExecCtx {
        ExecCtx {
            layout,
            dl_type: key.dl_type,
            nw_proto: key.nw_proto,
            nw_frag: key.nw_frag,
            tunnel: None,
            nexthop: 0,
        }
    }

    /// Offset of the L4 header when the packet has one we may rewrite
    /// (not a non-first fragment).
    #[inline]
    fn l4(&self) -> Option<usize> {
        if self.layout.l4 == NO_OFFSET || self.nw_frag & FRAG_LATER != 0 {
            None
        } else {
            Some(usize::from(self.layout.l4))
        }
    }

    #[inline]
    fn l3(&self) -> Option<usize> {
        (self.layout.l3 != NO_OFFSET).then_some(usize::from(self.layout.l3))
    }
}

/// Why an action could not be applied (the packet is then dropped and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The frame is too short for the header the action rewrites.
    #[error("frame too short for the action")]
    TooShort,
    /// The header the action rewrites is absent (e.g. set TCP on a non-TCP packet).
    #[error("the header the action rewrites is absent")]
    NoHeader,
    /// Not enough headroom to push a VLAN tag.
    #[error("no headroom to push a header")]
    NoHeadroom,
}

/// Where the L4 checksum of this packet lives, and whether 0 means "none" (UDP).
#[inline]
fn l4_csum_offset(ctx: &ExecCtx, len: usize) -> Option<(usize, bool)> {
    let l4 = ctx.l4()?;
    let (off, udp) = match ctx.nw_proto {
        ipproto::TCP => (l4 + 16, false),
        ipproto::UDP => (l4 + 6, true),
        // ICMPv6's checksum covers the IPv6 pseudo-header (RFC 4443 §2.3);
        // ICMPv4's does not (RFC 792), so it is not listed for addresses.
        ipproto::ICMPV6 if ctx.dl_type == ethertype::IPV6 => (l4 + 2, false),
        _ => return None,
    };
    (off + 2 <= len).then_some((off, udp))
}

/// Patch the L4 checksum at `off` with `f`, honouring UDP's "0 = none".
#[inline]
fn patch_l4(d: &mut [u8], off: usize, udp: bool, f: impl FnOnce(u16) -> u16) {
    let old = be16(d, off);
    if udp && old == 0 {
        return;
    }
    let mut new = f(old);
    if udp && new == 0 {
        new = 0xffff;
    }
    put16(d, off, new);
}

/// Apply one action to `pkt`. `Output` is a no-op here (the caller handles it).
pub fn apply(pkt: &mut Packet, ctx: &mut ExecCtx, action: &DpAction) -> Result<(), ExecError> {
    match action {
        DpAction::Output(_) => Ok(()),
        DpAction::SetEth { src, dst } => {
            let d = pkt.data_mut();
            if d.len() < 12 {
                return Err(ExecError::TooShort);
            }
            if let Some(dst) = dst {
                d[0..6].copy_from_slice(dst);
            }
            if let Some(src) = src {
                d[6..12].copy_from_slice(src);
            }
            Ok(())
        }
        DpAction::SetIpv4 { src, dst, tos, ttl } => set_ipv4(pkt, ctx, *src, *dst, *tos, *ttl),
        DpAction::SetIpv6 {
            src,
            dst,
            tclass,
            hlimit,
            label,
        } => set_ipv6(
            pkt,
            ctx,
            src.as_ref(),
            dst.as_ref(),
            *tclass,
            *hlimit,
            *label,
        ),
        DpAction::SetTcp { src, dst } => set_ports(pkt, ctx, ipproto::TCP, *src, *dst),
        DpAction::SetUdp { src, dst } => set_ports(pkt, ctx, ipproto::UDP, *src, *dst),
        DpAction::SetIcmp { icmp_type, code } => set_icmp(pkt, ctx, *icmp_type, *code),
        DpAction::SetNdExt {
            reserved,
            options_type,
        } => set_nd_ext(pkt, ctx, *reserved, *options_type),
        DpAction::SetNd { target, sll, tll } => {
            set_nd(pkt, ctx, target.as_ref(), sll.as_ref(), tll.as_ref())
        }
        DpAction::SetArp {
            op,
            spa,
            tpa,
            sha,
            tha,
        } => {
            if ctx.dl_type != ethertype::ARP {
                return Err(ExecError::NoHeader);
            }
            let l3 = ctx.l3().ok_or(ExecError::NoHeader)?;
            let d = pkt.data_mut();
            // RFC 826 layout for Ethernet/IPv4: op at 6, sha 8, spa 14, tha 18, tpa 24.
            if d.len() < l3 + 28 {
                return Err(ExecError::TooShort);
            }
            if let Some(op) = op {
                put16(d, l3 + 6, *op);
            }
            if let Some(sha) = sha {
                d[l3 + 8..l3 + 14].copy_from_slice(sha);
            }
            if let Some(spa) = spa {
                d[l3 + 14..l3 + 18].copy_from_slice(&spa.to_be_bytes());
            }
            if let Some(tha) = tha {
                d[l3 + 18..l3 + 24].copy_from_slice(tha);
            }
            if let Some(tpa) = tpa {
                d[l3 + 24..l3 + 28].copy_from_slice(&tpa.to_be_bytes());
            }
            Ok(())
        }
        // Built on a copy by the datapath (`send_time_exceeded`).
        DpAction::IcmpTimeExceeded(_) => Ok(()),
        // Executed by the datapath itself (it needs the tracker and the
        // recirculation queue): see `datapath::run_actions`.
        DpAction::Ct(_) => Ok(()),
        DpAction::PushVlan { tpid, tci } => push_vlan(pkt, ctx, *tpid, *tci),
        DpAction::SetVlan { tci } => {
            let d = pkt.data_mut();
            if d.len() < 16 {
                return Err(ExecError::TooShort);
            }
            let tpid = be16(d, 12);
            if tpid != ethertype::VLAN && tpid != ethertype::QINQ {
                return Err(ExecError::NoHeader);
            }
            // The key's CFI bit means "tag present"; on the wire that bit is
            // DEI and is written as 0, as OVS does.
            put16(d, 14, tci & !VLAN_CFI);
            Ok(())
        }
        DpAction::PopVlan => pop_vlan(pkt, ctx),
        DpAction::SetTunnel { tun_id, src, dst } => {
            ctx.tunnel = Some(TunnelMeta {
                tun_id: *tun_id,
                src: *src,
                dst: *dst,
            });
            Ok(())
        }
        DpAction::SetNextHop(ip) => {
            ctx.nexthop = *ip;
            Ok(())
        }
    }
}

fn set_ipv4(
    pkt: &mut Packet,
    ctx: &ExecCtx,
    src: Option<u32>,
    dst: Option<u32>,
    tos: Option<u8>,
    ttl: Option<u8>,
) -> Result<(), ExecError> {
    if ctx.dl_type != ethertype::IPV4 {
        return Err(ExecError::NoHeader);
    }
    let l3 = ctx.l3().ok_or(ExecError::NoHeader)?;
    let d = pkt.data_mut();
    if d.len() < l3 + 20 {
        return Err(ExecError::TooShort);
    }
    let l4 = l4_csum_offset(ctx, d.len());
    let mut ipc = be16(d, l3 + 10);
    // The new 16-bit words are computed, not read back after a byte store:
    // reading a word that overlaps a just-stored byte defeats store-to-load
    // forwarding and stalls the pipeline for every packet.
    if let Some(tos) = tos {
        let old = be16(d, l3);
        let new = (old & 0xff00) | u16::from(tos);
        put16(d, l3, new);
        ipc = update16(ipc, old, new);
    }
    if let Some(ttl) = ttl {
        let old = be16(d, l3 + 8);
        let new = (u16::from(ttl) << 8) | (old & 0x00ff);
        put16(d, l3 + 8, new);
        ipc = update16(ipc, old, new);
    }
    for (new, at) in [(src, l3 + 12), (dst, l3 + 16)] {
        let Some(new) = new else { continue };
        let old = be32(d, at);
        if old == new {
            continue;
        }
        d[at..at + 4].copy_from_slice(&new.to_be_bytes());
        ipc = update32(ipc, old, new);
        if let Some((off, udp)) = l4 {
            patch_l4(d, off, udp, |c| update32(c, old, new));
        }
    }
    put16(d, l3 + 10, ipc);
    Ok(())
}

fn set_ipv6(
    pkt: &mut Packet,
    ctx: &ExecCtx,
    src: Option<&[u8; 16]>,
    dst: Option<&[u8; 16]>,
    tclass: Option<u8>,
    hlimit: Option<u8>,
    label: Option<u32>,
) -> Result<(), ExecError> {
    if ctx.dl_type != ethertype::IPV6 {
        return Err(ExecError::NoHeader);
    }
    let l3 = ctx.l3().ok_or(ExecError::NoHeader)?;
    let d = pkt.data_mut();
    if d.len() < l3 + 40 {
        return Err(ExecError::TooShort);
    }
    let l4 = l4_csum_offset(ctx, d.len());
    // RFC 8200 §3: version(4) | traffic class(8) | flow label(20).
    let mut w0 = be32(d, l3);
    if let Some(tc) = tclass {
        w0 = (w0 & 0xf00f_ffff) | (u32::from(tc) << 20);
    }
    if let Some(label) = label {
        w0 = (w0 & 0xfff0_0000) | (label & 0x000f_ffff);
    }
    d[l3..l3 + 4].copy_from_slice(&w0.to_be_bytes());
    if let Some(h) = hlimit {
        d[l3 + 7] = h;
    }
    for (new, at) in [(src, l3 + 8), (dst, l3 + 24)] {
        let Some(new) = new else { continue };
        let mut old = [0u8; 16];
        old.copy_from_slice(&d[at..at + 16]);
        if old == *new {
            continue;
        }
        d[at..at + 16].copy_from_slice(new);
        if let Some((off, udp)) = l4 {
            patch_l4(d, off, udp, |c| update128(c, &old, new));
        }
    }
    Ok(())
}

fn set_ports(
    pkt: &mut Packet,
    ctx: &ExecCtx,
    proto: u8,
    src: Option<u16>,
    dst: Option<u16>,
) -> Result<(), ExecError> {
    let ip = ctx.dl_type == ethertype::IPV4 || ctx.dl_type == ethertype::IPV6;
    if !ip || ctx.nw_proto != proto {
        return Err(ExecError::NoHeader);
    }
    let l4 = ctx.l4().ok_or(ExecError::NoHeader)?;
    let (off, udp) = if proto == ipproto::TCP {
        (l4 + 16, false)
    } else {
        (l4 + 6, true)
    };
    let d = pkt.data_mut();
    if d.len() < off + 2 {
        return Err(ExecError::TooShort);
    }
    for (new, at) in [(src, l4), (dst, l4 + 2)] {
        let Some(new) = new else { continue };
        let old = be16(d, at);
        put16(d, at, new);
        patch_l4(d, off, udp, |c| update16(c, old, new));
    }
    Ok(())
}

fn set_icmp(
    pkt: &mut Packet,
    ctx: &ExecCtx,
    icmp_type: Option<u8>,
    code: Option<u8>,
) -> Result<(), ExecError> {
    let ok = (ctx.dl_type == ethertype::IPV4 && ctx.nw_proto == ipproto::ICMP)
        || (ctx.dl_type == ethertype::IPV6 && ctx.nw_proto == ipproto::ICMPV6);
    if !ok {
        return Err(ExecError::NoHeader);
    }
    let l4 = ctx.l4().ok_or(ExecError::NoHeader)?;
    let d = pkt.data_mut();
    if d.len() < l4 + 4 {
        return Err(ExecError::TooShort);
    }
    let old = be16(d, l4);
    let mut new = old;
    if let Some(t) = icmp_type {
        new = (new & 0x00ff) | (u16::from(t) << 8);
    }
    if let Some(c) = code {
        new = (new & 0xff00) | u16::from(c);
    }
    put16(d, l4, new);
    let c = update16(be16(d, l4 + 2), old, new);
    put16(d, l4 + 2, c);
    Ok(())
}

/// The NS/NA message of an IPv6 packet: its L4 offset and end (bounded by
/// the IPv6 payload length, so Ethernet padding is never touched), after
/// checking it is ICMPv6 type 135 or 136 with the 24-byte fixed part
/// (RFC 4861 §4.3/4.4).
fn nd_message(d: &[u8], ctx: &ExecCtx) -> Result<(usize, usize), ExecError> {
    if ctx.dl_type != ethertype::IPV6 || ctx.nw_proto != ipproto::ICMPV6 {
        return Err(ExecError::NoHeader);
    }
    let l3 = ctx.l3().ok_or(ExecError::NoHeader)?;
    let l4 = ctx.l4().ok_or(ExecError::NoHeader)?;
    if d.len() < l3 + 40 || d.len() < l4 + 24 {
        return Err(ExecError::TooShort);
    }
    let end = (l3 + 40 + usize::from(be16(d, l3 + 4))).min(d.len());
    if end < l4 + 24 {
        return Err(ExecError::TooShort);
    }
    if d[l4] != nd::NEIGHBOR_SOLICIT && d[l4] != nd::NEIGHBOR_ADVERT {
        return Err(ExecError::NoHeader);
    }
    Ok((l4, end))
}

/// OVS packet_set_nd_ext: the reserved word, and the type of the first
/// option when there is one (a message without options is left as is).
fn set_nd_ext(
    pkt: &mut Packet,
    ctx: &ExecCtx,
    reserved: Option<u32>,
    options_type: Option<u8>,
) -> Result<(), ExecError> {
    let d = pkt.data_mut();
    let (l4, end) = nd_message(d, ctx)?;
    let mut c = be16(d, l4 + 2);
    if let Some(r) = reserved {
        let old = be32(d, l4 + 4);
        d[l4 + 4..l4 + 8].copy_from_slice(&r.to_be_bytes());
        c = update32(c, old, r);
    }
    let opt = l4 + 24;
    if let Some(t) = options_type {
        if opt + 8 <= end {
            let old = be16(d, opt);
            let new = (u16::from(t) << 8) | (old & 0x00ff);
            put16(d, opt, new);
            c = update16(c, old, new);
        }
    }
    put16(d, l4 + 2, c);
    Ok(())
}

/// OVS packet_set_nd: the target, and the MAC of the first 8-byte source
/// (for `sll`) or target (for `tll`) link-layer option (RFC 4861 §4.6.1);
/// the walk stops at the first such option or at an option of length 0.
fn set_nd(
    pkt: &mut Packet,
    ctx: &ExecCtx,
    target: Option<&[u8; 16]>,
    sll: Option<&[u8; 6]>,
    tll: Option<&[u8; 6]>,
) -> Result<(), ExecError> {
    let d = pkt.data_mut();
    let (l4, end) = nd_message(d, ctx)?;
    let mut c = be16(d, l4 + 2);
    if let Some(t) = target {
        let mut old = [0u8; 16];
        old.copy_from_slice(&d[l4 + 8..l4 + 24]);
        d[l4 + 8..l4 + 24].copy_from_slice(t);
        c = update128(c, &old, t);
    }
    if sll.is_some() || tll.is_some() {
        let mut opt = l4 + 24;
        while opt + 8 <= end && d[opt + 1] != 0 {
            let new = match (d[opt], d[opt + 1]) {
                (nd::OPT_SOURCE_LINKADDR, 1) => Some(sll),
                (nd::OPT_TARGET_LINKADDR, 1) => Some(tll),
                _ => None,
            };
            if let Some(new) = new {
                if let Some(mac) = new {
                    for i in (0..6).step_by(2) {
                        let at = opt + 2 + i;
                        let old = be16(d, at);
                        let w = u16::from_be_bytes([mac[i], mac[i + 1]]);
                        put16(d, at, w);
                        c = update16(c, old, w);
                    }
                }
                // A message carries one link-layer option (OVS stops here too).
                break;
            }
            opt += usize::from(d[opt + 1]) * 8;
        }
    }
    put16(d, l4 + 2, c);
    Ok(())
}

#[inline]
fn shift_offset(off: &mut u16, up: bool) {
    if *off != NO_OFFSET {
        *off = if up {
            off.saturating_add(4)
        } else {
            off.saturating_sub(4)
        };
    }
}

/// IEEE 802.1Q §9.3: insert TPID + TCI after the two MAC addresses, using
/// headroom (the 12 MAC bytes move 4 bytes forward; the payload stays put).
fn push_vlan(pkt: &mut Packet, ctx: &mut ExecCtx, tpid: u16, tci: u16) -> Result<(), ExecError> {
    if pkt.len() < 12 {
        return Err(ExecError::TooShort);
    }
    let d = pkt.push_head(4).ok_or(ExecError::NoHeadroom)?;
    d.copy_within(4..16, 0);
    put16(d, 12, tpid);
    put16(d, 14, tci & !VLAN_CFI);
    shift_offset(&mut ctx.layout.l3, true);
    shift_offset(&mut ctx.layout.l4, true);
    Ok(())
}

/// Remove the outer tag: the MAC addresses move 4 bytes back over it.
fn pop_vlan(pkt: &mut Packet, ctx: &mut ExecCtx) -> Result<(), ExecError> {
    let d = pkt.data_mut();
    if d.len() < 18 {
        return Err(ExecError::TooShort);
    }
    let tpid = be16(d, 12);
    if tpid != ethertype::VLAN && tpid != ethertype::QINQ {
        return Err(ExecError::NoHeader);
    }
    d.copy_within(0..12, 4);
    if !pkt.pull_head(4) {
        return Err(ExecError::TooShort);
    }
    shift_offset(&mut ctx.layout.l3, false);
    shift_offset(&mut ctx.layout.l4, false);
    Ok(())
}
