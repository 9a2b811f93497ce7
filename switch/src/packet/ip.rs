//! What IPv4 and IPv6 share: the protocol-number enum and the pseudo-header
//! used by TCP, UDP and ICMPv6 checksums (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1).
//!
//! Pure functions over plain values; nothing here touches a frame or allocates.

use super::checksum;

/// IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// IPv6 hop-by-hop options (0).
    HopByHop,
    /// ICMP (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6 routing header (43).
    Ipv6Route,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// Authentication header (51).
    Ah,
    /// ICMPv6 (58).
    Icmpv6,
    /// IPv6 no next header (59).
    Ipv6NoNxt,
    /// IPv6 destination options (60).
    Ipv6Opts,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            0 => IpProtocol::HopByHop,
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            43 => IpProtocol::Ipv6Route,
            44 => IpProtocol::Ipv6Frag,
            51 => IpProtocol::Ah,
            58 => IpProtocol::Icmpv6,
            59 => IpProtocol::Ipv6NoNxt,
            60 => IpProtocol::Ipv6Opts,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Ah => 51,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Unknown(v) => v,
        }
    }
}

/// The addresses an upper-layer checksum covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoHeader {
    /// IPv4 source and destination.
    V4 {
        /// Source address.
        src: [u8; 4],
        /// Destination address.
        dst: [u8; 4],
    },
    /// IPv6 source and destination (the final destination when a routing
    /// header is present, RFC 8200 §8.1; the caller chooses).
    V6 {
        /// Source address.
        src: [u8; 16],
        /// Destination address.
        dst: [u8; 16],
    },
}

impl PseudoHeader {
    /// One's-complement sum (not complemented) of the pseudo-header for an
    /// upper-layer packet of `len` bytes carrying `proto`.
    pub fn sum(&self, proto: u8, len: u32) -> u32 {
        match self {
            PseudoHeader::V4 { src, dst } => {
                // RFC 9293 §3.1: src, dst, zero, protocol, TCP length (16 bits).
                let s = checksum::sum(src, 0);
                let s = checksum::sum(dst, s);
                checksum::sum(&[0, proto], s + (len & 0xffff))
            }
            PseudoHeader::V6 { src, dst } => {
                // RFC 8200 §8.1: src, dst, 32-bit length, 3 zero bytes, next header.
                let s = checksum::sum(src, 0);
                let s = checksum::sum(dst, s);
                let s = checksum::sum(&len.to_be_bytes(), s);
                checksum::sum(&[0, proto], s)
            }
        }
    }

    /// The checksum to store for `data` (checksum field zeroed) under this
    /// pseudo-header. Does not apply UDP's zero-to-0xffff rule.
    pub fn checksum(&self, proto: u8, data: &[u8]) -> u16 {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        !(checksum::sum(data, self.sum(proto, len)) as u16)
    }

    /// True when `data` (checksum field included) sums to all ones.
    pub fn verify(&self, proto: u8, data: &[u8]) -> bool {
        self.checksum(proto, data) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_numbers_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
    }
}
