//! ICMP "time exceeded" errors a router sends back when it drops a packet
//! whose TTL / hop limit expired: ICMPv4 type 11 code 0 (RFC 792, RFC 1812
//! §4.3.2.2 and §5.3.1) and ICMPv6 type 3 code 0 (RFC 4443 §3.3).
//!
//! Three pieces, used by the slow path and the datapath:
//! - [`eligible`]: the RFC 1812 §4.3.2.7 / RFC 4443 §2.4(e) rules on a
//!   [`FlowKey`] (never about an ICMP error, a non-first fragment, a
//!   link-layer or IP broadcast/multicast, or from an address that does not
//!   name one host), recording in the megaflow mask every bit it read;
//! - [`build_time_exceeded`]: writes the error frame into a fresh buffer
//!   from the dropped frame: Ethernet addresses swapped (the error comes
//!   from the MAC the sender addressed, i.e. the router MAC), any VLAN tags
//!   kept, a new IP header from the router address to the sender, and as
//!   much of the expired datagram as fits 576 bytes (IPv4, RFC 1812
//!   §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4(c)), checksums computed;
//! - [`TokenBucket`]: the per-polling-thread rate limit (RFC 1812 §4.3.2.8,
//!   RFC 4443 §2.4(f)); plain integers owned by one thread, no lock, no atomic.
//!
//! Data enters as the dropped frame's bytes and its L3 offset; it leaves as
//! a frame in the caller's buffer. Nothing here allocates or panics on any
//! input: a frame too short for what its headers claim is refused.

use std::net::IpAddr;

use super::checksum;
use super::ip::PseudoHeader;
use super::{be16, put16};
use crate::flow::key::{ethertype, ipproto, FlowKey, FRAG_LATER};

/// ICMPv4 time exceeded (RFC 792).
pub const ICMPV4_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 time exceeded (RFC 4443 §3.3).
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// Largest IPv4 datagram an ICMPv4 error may make (RFC 1812 §4.3.2.3).
pub const IPV4_ERROR_MAX: usize = 576;
/// Largest IPv6 packet an ICMPv6 error may make (RFC 4443 §2.4(c): the
/// IPv6 minimum MTU).
pub const IPV6_ERROR_MAX: usize = 1280;
/// TTL / hop limit of the errors we send (Linux's default, 64).
pub const ERROR_TTL: u8 = 64;
/// Default rate of ICMP errors per polling thread, per second (Linux's
/// `icmp_msgs_per_sec` default is 1000).
pub const DEFAULT_RATE: u32 = 1000;
/// Default burst (Linux's `icmp_msgs_burst` default is 50).
pub const DEFAULT_BURST: u32 = 50;

/// Where the bridge's ICMP errors come from and how many may leave:
/// `set-bridge router-ip=... router-ipv6=... icmp-rate=...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorConfig {
    /// Source of ICMPv4 errors (None: no ICMPv4 errors are sent).
    pub src_v4: Option<u32>,
    /// Source of ICMPv6 errors (None: no ICMPv6 errors are sent).
    pub src_v6: Option<[u8; 16]>,
    /// Errors per second per polling thread (0: none are sent).
    pub rate: u32,
    /// Bucket depth (errors sent back to back after a quiet period).
    pub burst: u32,
}

impl Default for IcmpErrorConfig {
    fn default() -> Self {
        IcmpErrorConfig {
            src_v4: None,
            src_v6: None,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// The router address an error is sent from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorSrc {
    /// ICMPv4 from this address.
    V4(u32),
    /// ICMPv6 from this address.
    V6([u8; 16]),
}

impl ErrorSrc {
    /// As a std address (for printing).
    pub fn ip(&self) -> IpAddr {
        match self {
            ErrorSrc::V4(a) => IpAddr::from(a.to_be_bytes()),
            ErrorSrc::V6(a) => IpAddr::from(*a),
        }
    }
}

/// Why no error is sent about a packet whose TTL expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoError {
    /// No router address is configured for the packet's IP version.
    NoRouterAddress,
    /// The packet is itself an ICMP error (RFC 1812 §4.3.2.7).
    IcmpError,
    /// A fragment other than the first.
    LaterFragment,
    /// Sent to a link-layer or IP broadcast or multicast address.
    Multicast,
    /// Its source does not name one host (unspecified, loopback,
    /// broadcast, multicast).
    BadSource,
}

impl NoError {
    /// Short text for traces.
    pub fn text(&self) -> &'static str {
        match self {
            NoError::NoRouterAddress => {
                "no router address for this IP version (set-bridge router-ip / router-ipv6)"
            }
            NoError::IcmpError => "the packet is an ICMP error",
            NoError::LaterFragment => "the packet is a non-first fragment",
            NoError::Multicast => "the packet was sent to a broadcast or multicast address",
            NoError::BadSource => "the packet's source is not one host",
        }
    }
}

/// ICMPv4 informational types (RFC 792, RFC 950, RFC 1256): everything
/// else, unknown types included, is treated as an error and never answered
/// with an error (as Linux does).
fn icmpv4_informational(t: u16) -> bool {
    matches!(t, 0 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// May an ICMP time exceeded be sent about `key` (an IPv4 or IPv6 packet),
/// and from which address? ORs every bit it reads into `wc`.
pub fn eligible(
    key: &FlowKey,
    cfg: &IcmpErrorConfig,
    wc: &mut FlowKey,
) -> Result<ErrorSrc, NoError> {
    let v6 = key.dl_type == ethertype::IPV6;
    let src = if v6 {
        cfg.src_v6.map(ErrorSrc::V6)
    } else {
        cfg.src_v4.map(ErrorSrc::V4)
    }
    .ok_or(NoError::NoRouterAddress)?;
    wc.dl_dst[0] |= 1;
    if key.dl_dst[0] & 1 != 0 {
        return Err(NoError::Multicast);
    }
    wc.nw_frag |= FRAG_LATER;
    if key.nw_frag & FRAG_LATER != 0 {
        return Err(NoError::LaterFragment);
    }
    wc.nw_proto = u8::MAX;
    if v6 {
        wc.ipv6_dst[0] = 0xff;
        if key.ipv6_dst[0] == 0xff {
            return Err(NoError::Multicast);
        }
        wc.ipv6_src = [0xff; 16];
        let s = u128::from_be_bytes(key.ipv6_src);
        if s == 0 || s == 1 || key.ipv6_src[0] == 0xff {
            return Err(NoError::BadSource);
        }
        if key.nw_proto == ipproto::ICMPV6 {
            // RFC 4443 §2.1: types 0-127 are errors.
            wc.tp_src = u16::MAX;
            if key.tp_src < 128 {
                return Err(NoError::IcmpError);
            }
        }
    } else {
        wc.nw_dst = u32::MAX;
        if key.nw_dst >> 28 == 0xe || key.nw_dst == u32::MAX {
            return Err(NoError::Multicast);
        }
        wc.nw_src = u32::MAX;
        let s = key.nw_src;
        if s == 0 || s >> 24 == 127 || s >> 28 >= 0xe {
            return Err(NoError::BadSource);
        }
        if key.nw_proto == ipproto::ICMP {
            wc.tp_src = u16::MAX;
            if !icmpv4_informational(key.tp_src) {
                return Err(NoError::IcmpError);
            }
        }
    }
    Ok(src)
}

/// Why a frame could not be turned into an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The frame ends before the headers it claims (or has no IP header).
    #[error("frame too short or not IP")]
    Malformed,
    /// The error would not fit the output buffer.
    #[error("output buffer too small")]
    NoRoom,
}

/// Write into `out` an ICMP time exceeded (code 0: TTL exceeded in
/// transit) about `frame`, whose IPv4/IPv6 header starts at `l3`, from
/// `src`. Returns the error frame's length. Any Ethernet/VLAN header
/// (`frame[..l3]`) is kept with the two MAC addresses swapped.
pub fn build_time_exceeded(
    frame: &[u8],
    l3: usize,
    src: ErrorSrc,
    out: &mut [u8],
) -> Result<usize, BuildError> {
    if l3 < 14 || frame.len() < l3 + 20 {
        return Err(BuildError::Malformed);
    }
    // The expired datagram, without link-layer padding.
    let (ip_len, hdr, max) = match src {
        ErrorSrc::V4(_) => {
            if frame[l3] >> 4 != 4 {
                return Err(BuildError::Malformed);
            }
            (usize::from(be16(frame, l3 + 2)), 20, IPV4_ERROR_MAX)
        }
        ErrorSrc::V6(_) => {
            if frame.len() < l3 + 40 || frame[l3] >> 4 != 6 {
                return Err(BuildError::Malformed);
            }
            (40 + usize::from(be16(frame, l3 + 4)), 40, IPV6_ERROR_MAX)
        }
    };
    let datagram = &frame[l3..];
    let datagram = &datagram[..ip_len.min(datagram.len())];
    let quote = datagram.len().min(max - hdr - 8);
    let icmp_len = 8 + quote;
    let total = l3 + hdr + icmp_len;
    if out.len() < total {
        return Err(BuildError::NoRoom);
    }
    // Link layer: back to the sender, from the address it sent to.
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..l3].copy_from_slice(&frame[12..l3]);
    let ip = l3;
    let ic = l3 + hdr;
    out[ic + 8..ic + 8 + quote].copy_from_slice(&datagram[..quote]);
    out[ic + 4..ic + 8].fill(0);
    match src {
        ErrorSrc::V4(s) => {
            // RFC 791 header; TOS 0xc0 (internetwork control) as Linux's
            // icmp_send uses for errors; no options; DF clear.
            let h = &mut out[ip..ic];
            h[0] = 0x45;
            h[1] = 0xc0;
            put16(h, 2, u16::try_from(hdr + icmp_len).unwrap_or(u16::MAX));
            h[4..8].fill(0);
            h[8] = ERROR_TTL;
            h[9] = ipproto::ICMP;
            h[10..12].fill(0);
            h[12..16].copy_from_slice(&s.to_be_bytes());
            h[16..20].copy_from_slice(&frame[l3 + 12..l3 + 16]);
            let c = checksum::checksum(h);
            put16(h, 10, c);
            let m = &mut out[ic..ic + icmp_len];
            m[0] = ICMPV4_TIME_EXCEEDED;
            m[1] = 0;
            m[2..4].fill(0);
            let c = checksum::checksum(m);
            put16(m, 2, c);
        }
        ErrorSrc::V6(s) => {
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&frame[l3 + 8..l3 + 24]);
            let h = &mut out[ip..ic];
            h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
            put16(h, 4, u16::try_from(icmp_len).unwrap_or(u16::MAX));
            h[6] = ipproto::ICMPV6;
            h[7] = ERROR_TTL;
            h[8..24].copy_from_slice(&s);
            h[24..40].copy_from_slice(&dst);
            let m = &mut out[ic..ic + icmp_len];
            m[0] = ICMPV6_TIME_EXCEEDED;
            m[1] = 0;
            m[2..4].fill(0);
            let c = PseudoHeader::V6 { src: s, dst }.checksum(ipproto::ICMPV6, m);
            put16(m, 2, c);
        }
    }
    Ok(total)
}

/// A token bucket counted in milli-tokens, refilled from a millisecond
/// clock the caller passes in (the datapath's per-batch clock). One per
/// polling thread: no sharing, no lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Milli-tokens available.
    milli: u64,
    /// The clock at the last refill (None: never used, starts full).
    last_ms: Option<u64>,
}

impl TokenBucket {
    /// Take one token at `now_ms` with `rate` tokens per second and
    /// `burst` tokens of depth; false when the bucket is empty.
    pub fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let cap = u64::from(burst.max(1)) * 1000;
        match self.last_ms {
            None => self.milli = cap,
            Some(last) => {
                let dt = now_ms.saturating_sub(last);
                self.milli = self
                    .milli
                    .saturating_add(dt.saturating_mul(u64::from(rate)))
                    .min(cap);
            }
        }
        self.last_ms = Some(now_ms);
        if rate == 0 || self.milli < 1000 {
            return false;
        }
        self.milli -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::extract::extract;
    use crate::packet::FrameBuilder;

    const POD: [u8; 6] = [2, 0, 0, 0, 1, 2];
    const RMAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0, 1];
    const GW: u32 = 0x0af4_0101; // 10.244.1.1

    fn cfg() -> IcmpErrorConfig {
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&[0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1]);
        v6[15] = 1;
        IcmpErrorConfig {
            src_v4: Some(GW),
            src_v6: Some(v6),
            ..IcmpErrorConfig::default()
        }
    }

    fn udp4(ttl: u8, payload: usize) -> Vec<u8> {
        FrameBuilder::new()
            .eth(POD, RMAC)
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3])
            .ttl(ttl)
            .udp(33434, 33435)
            .payload(&vec![0x5a; payload])
            .build()
    }

    fn scratch() -> FlowKey {
        FlowKey::ZERO
    }

    fn key(frame: &[u8]) -> FlowKey {
        let mut k = FlowKey::ZERO;
        extract(frame, 1, &mut k);
        k
    }

    #[test]
    fn ipv4_time_exceeded_quotes_the_datagram_with_valid_checksums() {
        let f = udp4(1, 30);
        let mut out = [0u8; 2048];
        let n = build_time_exceeded(&f, 14, ErrorSrc::V4(GW), &mut out).unwrap();
        let e = &out[..n];
        // Ethernet: to the pod, from the router MAC it addressed.
        assert_eq!(&e[..6], &POD);
        assert_eq!(&e[6..12], &RMAC);
        assert_eq!(be16(e, 12), ethertype::IPV4);
        let ip = &e[14..34];
        assert_eq!(checksum::checksum(ip), 0, "IPv4 header checksum");
        assert_eq!(ip[9], ipproto::ICMP);
        assert_eq!(ip[8], ERROR_TTL);
        assert_eq!(&ip[12..16], &GW.to_be_bytes());
        assert_eq!(&ip[16..20], &[10, 244, 1, 2]);
        assert_eq!(usize::from(be16(ip, 2)), n - 14);
        let icmp = &e[34..];
        assert_eq!((icmp[0], icmp[1]), (11, 0));
        assert_eq!(checksum::checksum(icmp), 0, "ICMP checksum");
        // The whole expired datagram (20 + 8 + 30), TTL as received.
        assert_eq!(&icmp[8..], &f[14..]);
        assert_eq!(icmp[8 + 8], 1);
        // And our own parser reads it as ICMP type 11 code 0.
        let k = key(e);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (ipproto::ICMP, 11, 0));
    }

    #[test]
    fn ipv4_quote_is_cut_to_576_bytes_and_padding_is_not_quoted() {
        let f = udp4(1, 1000);
        let mut out = [0u8; 2048];
        let n = build_time_exceeded(&f, 14, ErrorSrc::V4(GW), &mut out).unwrap();
        assert_eq!(n - 14, IPV4_ERROR_MAX);
        assert_eq!(checksum::checksum(&out[34..n]), 0);
        // A minimum-size frame with Ethernet padding after a short datagram.
        let mut small = udp4(1, 0);
        small.resize(60, 0xee);
        let n = build_time_exceeded(&small, 14, ErrorSrc::V4(GW), &mut out).unwrap();
        assert_eq!(n, 14 + 20 + 8 + 28, "quote = IP total length only");
    }

    #[test]
    fn ipv6_time_exceeded_has_pseudo_header_checksum() {
        let c = cfg();
        let src6 = c.src_v6.unwrap();
        let pod6 = [0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst6 = [0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3];
        let f = FrameBuilder::new()
            .eth(POD, RMAC)
            .ipv6(pod6, dst6)
            .ttl(1)
            .udp(33434, 33435)
            .payload(&[1; 2000])
            .build();
        let mut out = [0u8; 4096];
        let n = build_time_exceeded(&f, 14, ErrorSrc::V6(src6), &mut out).unwrap();
        assert_eq!(n - 14, IPV6_ERROR_MAX);
        let e = &out[..n];
        assert_eq!(be16(e, 12), ethertype::IPV6);
        assert_eq!(e[14] >> 4, 6);
        assert_eq!(usize::from(be16(e, 18)), n - 54);
        assert_eq!((e[20], e[21]), (ipproto::ICMPV6, ERROR_TTL));
        assert_eq!(&e[22..38], &src6);
        assert_eq!(&e[38..54], &pod6);
        let m = &e[54..];
        assert_eq!((m[0], m[1]), (3, 0));
        let ph = PseudoHeader::V6 {
            src: src6,
            dst: pod6,
        };
        assert!(ph.verify(ipproto::ICMPV6, m), "ICMPv6 checksum");
        assert_eq!(&m[8..], &f[14..14 + m.len() - 8]);
        let k = key(e);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (ipproto::ICMPV6, 3, 0));
    }

    #[test]
    fn vlan_tags_are_kept() {
        let f = FrameBuilder::new()
            .eth(POD, RMAC)
            .vlan(7, 0)
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3])
            .ttl(1)
            .udp(1, 2)
            .build();
        let mut out = [0u8; 2048];
        let n = build_time_exceeded(&f, 18, ErrorSrc::V4(GW), &mut out).unwrap();
        assert_eq!(&out[12..18], &f[12..18]);
        assert_eq!(checksum::checksum(&out[18..38]), 0);
        assert_eq!(checksum::checksum(&out[38..n]), 0);
    }

    #[test]
    fn malformed_frames_are_refused_not_panicked_on() {
        let mut out = [0u8; 2048];
        let f = udp4(1, 10);
        for cut in 0..34 {
            assert!(build_time_exceeded(&f[..cut], 14, ErrorSrc::V4(GW), &mut out).is_err());
        }
        assert_eq!(
            build_time_exceeded(&f, 14, ErrorSrc::V6([0; 16]), &mut out),
            Err(BuildError::Malformed)
        );
        let mut tiny = [0u8; 40];
        assert_eq!(
            build_time_exceeded(&f, 14, ErrorSrc::V4(GW), &mut tiny),
            Err(BuildError::NoRoom)
        );
    }

    #[test]
    fn eligibility_follows_rfc1812_and_rfc4443() {
        let c = cfg();
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            eligible(&key(&udp4(1, 0)), &c, &mut wc),
            Ok(ErrorSrc::V4(GW))
        );
        assert_eq!(wc.nw_ttl, 0, "the caller owns the TTL bits");
        assert_eq!(wc.nw_src, u32::MAX);
        // Not about ICMP errors; echo requests are fine.
        let err = FrameBuilder::new()
            .eth(POD, RMAC)
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3])
            .icmp(3, 1)
            .build();
        assert_eq!(
            eligible(&key(&err), &c, &mut scratch()),
            Err(NoError::IcmpError)
        );
        let echo = FrameBuilder::new()
            .eth(POD, RMAC)
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3])
            .icmp(8, 0)
            .build();
        assert!(eligible(&key(&echo), &c, &mut scratch()).is_ok());
        // Not about later fragments, multicast, broadcast, bad sources.
        let mut k = key(&udp4(1, 0));
        k.nw_frag |= FRAG_LATER | crate::flow::key::FRAG_ANY;
        assert_eq!(
            eligible(&k, &c, &mut scratch()),
            Err(NoError::LaterFragment)
        );
        let mut k = key(&udp4(1, 0));
        k.nw_dst = 0xe000_00fb;
        assert_eq!(eligible(&k, &c, &mut scratch()), Err(NoError::Multicast));
        let mut k = key(&udp4(1, 0));
        k.dl_dst = [0xff; 6];
        assert_eq!(eligible(&k, &c, &mut scratch()), Err(NoError::Multicast));
        let mut k = key(&udp4(1, 0));
        k.nw_src = 0;
        assert_eq!(eligible(&k, &c, &mut scratch()), Err(NoError::BadSource));
        // No address configured for the version: nothing.
        let none = IcmpErrorConfig::default();
        assert_eq!(
            eligible(&key(&udp4(1, 0)), &none, &mut scratch()),
            Err(NoError::NoRouterAddress)
        );
        // ICMPv6 errors (type < 128) are not answered; echo (128) is.
        let v6 = |t: u8| {
            let mut k = FlowKey::ZERO;
            k.dl_type = ethertype::IPV6;
            k.dl_dst = RMAC;
            k.ipv6_src[0] = 0xfd;
            k.ipv6_src[15] = 2;
            k.ipv6_dst[0] = 0xfd;
            k.nw_proto = ipproto::ICMPV6;
            k.tp_src = u16::from(t);
            k
        };
        assert_eq!(
            eligible(&v6(1), &c, &mut scratch()),
            Err(NoError::IcmpError)
        );
        assert!(eligible(&v6(128), &c, &mut scratch()).is_ok());
        let mut m = v6(128);
        m.ipv6_dst[0] = 0xff;
        assert_eq!(eligible(&m, &c, &mut scratch()), Err(NoError::Multicast));
    }

    #[test]
    fn token_bucket_limits_to_burst_then_rate() {
        let mut b = TokenBucket::default();
        let sent = (0..100).filter(|_| b.take(1000, 10, 5)).count();
        assert_eq!(sent, 5, "a full bucket gives the burst");
        assert!(!b.take(1050, 10, 5), "half a token after 50 ms at 10/s");
        assert!(b.take(1100, 10, 5), "one token after 100 ms");
        assert!(!b.take(1100, 10, 5));
        // A long quiet period refills to the burst, not beyond.
        let sent = (0..100).filter(|_| b.take(100_000, 10, 5)).count();
        assert_eq!(sent, 5);
        let mut off = TokenBucket::default();
        assert!(!off.take(0, 0, 5), "rate 0 sends nothing");
    }
}
