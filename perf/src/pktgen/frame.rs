//! The generator's frames: Ethernet II / IPv4 / UDP with a magic payload.
//!
//! One template frame is built here ([`FrameSpec::build`]); the in-kernel
//! transmit program then only rewrites the UDP source port per frame to
//! spread traffic over `flows` flows ([`FrameSpec::sport_of_flow`] is the rule
//! it follows). The UDP checksum is 0 ("no checksum", RFC 768, allowed over
//! IPv4) so that rewrite needs no checksum update; the IPv4 header checksum
//! is computed (RFC 791 / RFC 1071). The payload starts with [`MAGIC`] at
//! [`MAGIC_OFFSET`], which the receive program checks, so the receiver counts
//! only the generator's frames and never ARP, IPv6 or a neighbour's traffic.

use std::net::Ipv4Addr;

/// Marks the generator's frames (the first 8 payload bytes, big-endian "FSPKTGN1").
pub const MAGIC: [u8; 8] = *b"FSPKTGN1";
/// Byte offset of [`MAGIC`]: right after the Ethernet, IPv4 and UDP headers.
pub const MAGIC_OFFSET: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// Byte offset of the UDP source port (what the transmit program rewrites).
pub const UDP_SPORT_OFFSET: usize = ETH_LEN + IPV4_LEN;
/// Smallest frame: headers plus the magic.
pub const MIN_FRAME: usize = MAGIC_OFFSET + MAGIC.len();
/// Largest frame: a 1500-byte MTU plus the Ethernet header (what "1518-byte
/// frames" are on a veth, without the 4-byte FCS the wire would add).
pub const MAX_FRAME: usize = 1514;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;

/// What the generated frames look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// Source MAC.
    pub smac: [u8; 6],
    /// IPv4 source.
    pub sip: Ipv4Addr,
    /// IPv4 destination.
    pub dip: Ipv4Addr,
    /// UDP source port of flow 0; flow `i` uses `sport + i`.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// Frame length in bytes, without the FCS ([`MIN_FRAME`]..=[`MAX_FRAME`]).
    pub size: usize,
    /// Number of distinct flows (UDP source ports), at least 1.
    pub flows: u32,
}

/// Why a [`FrameSpec`] cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Frame size outside [`MIN_FRAME`]..=[`MAX_FRAME`].
    #[error("frame size {0} is outside {MIN_FRAME}..={MAX_FRAME} bytes (without FCS)")]
    Size(usize),
    /// Zero flows, or source ports that would run past 65535.
    #[error("{flows} flows starting at UDP source port {sport} do not fit in 1..=65535")]
    Flows {
        /// Requested flow count.
        flows: u32,
        /// First source port.
        sport: u16,
    },
}

impl FrameSpec {
    /// Check the spec: size in range, flows >= 1, every source port <= 65535.
    pub fn validate(&self) -> Result<(), FrameError> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.size) {
            return Err(FrameError::Size(self.size));
        }
        let last = u32::from(self.sport) + self.flows.saturating_sub(1);
        if self.flows == 0 || last > 65535 {
            return Err(FrameError::Flows {
                flows: self.flows,
                sport: self.sport,
            });
        }
        Ok(())
    }

    /// The UDP source port of flow `i` (taken modulo the flow count), the
    /// rule the transmit program applies to its frame counter.
    pub fn sport_of_flow(&self, i: u64) -> u16 {
        let n = u64::from(self.flows.max(1));
        // validate() guarantees sport + flows - 1 <= 65535, so this fits.
        u16::try_from(u64::from(self.sport) + i % n).unwrap_or(u16::MAX)
    }

    /// The template frame (flow 0).
    pub fn build(&self) -> Result<Vec<u8>, FrameError> {
        self.validate()?;
        Ok(self.build_flow(0))
    }

    /// The frame of flow `i` exactly as the transmit program leaves it.
    pub fn build_flow(&self, i: u64) -> Vec<u8> {
        let mut f = vec![0u8; self.size];
        f[0..6].copy_from_slice(&self.dmac);
        f[6..12].copy_from_slice(&self.smac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = u16::try_from(self.size - ETH_LEN).unwrap_or(u16::MAX);
        let ip = &mut f[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45; // version 4, IHL 5
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&self.sip.octets());
        ip[16..20].copy_from_slice(&self.dip.octets());
        let c = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp_len = ip_len - 20;
        let u = UDP_SPORT_OFFSET;
        f[u..u + 2].copy_from_slice(&self.sport_of_flow(i).to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&self.dport.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
        // f[u + 6..u + 8]: checksum 0 = none (RFC 768).
        f[MAGIC_OFFSET..MIN_FRAME].copy_from_slice(&MAGIC);
        f
    }
}

/// The Internet checksum of a header (RFC 1071).
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = hdr
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address like 02:00:00:00:00:01"));
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address like 02:00:00:00:00:01"))?;
    }
    Ok(m)
}

/// True when `frame` carries the generator's magic (what the receive program checks).
pub fn is_generated(frame: &[u8]) -> bool {
    frame.get(MAGIC_OFFSET..MIN_FRAME) == Some(&MAGIC[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn spec() -> FrameSpec {
        FrameSpec {
            dmac: [2, 0, 0, 0, 0x0b, 1],
            smac: [2, 0, 0, 0, 0x0a, 1],
            sip: Ipv4Addr::new(198, 18, 0, 1),
            dip: Ipv4Addr::new(198, 18, 0, 2),
            sport: 1000,
            dport: 9,
            size: 64,
            flows: 100,
        }
    }

    #[test]
    fn frame_parses_as_the_udp_packet_asked_for() {
        for size in [MIN_FRAME, 64, 512, MAX_FRAME] {
            let s = FrameSpec { size, ..spec() };
            let f = s.build().unwrap();
            assert_eq!(f.len(), size);
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            let h = ip.header();
            assert_eq!(h.source_addr(), s.sip);
            assert_eq!(h.destination_addr(), s.dip);
            assert_eq!(usize::from(h.total_len()), size - 14);
            assert_eq!(h.ttl(), 64);
            // The checksum field is right: recomputing over the header gives 0.
            assert_eq!(ipv4_checksum(&f[14..34]), 0);
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
            let Some(TransportSlice::Udp(u)) = p.transport else {
                panic!("not UDP")
            };
            assert_eq!(u.source_port(), 1000);
            assert_eq!(u.destination_port(), 9);
            assert_eq!(usize::from(u.length()), size - 34);
            assert!(is_generated(&f));
        }
    }

    #[test]
    fn flows_vary_only_the_source_port_and_wrap() {
        let s = spec();
        let f0 = s.build_flow(0);
        // 1000 = 0x03e8, 1099 = 0x044b: both port bytes change, nothing else.
        let f99 = s.build_flow(99);
        let diff: Vec<usize> = (0..f0.len()).filter(|&i| f0[i] != f99[i]).collect();
        assert_eq!(diff, vec![UDP_SPORT_OFFSET, UDP_SPORT_OFFSET + 1]);
        assert_eq!(u16::from_be_bytes([f99[34], f99[35]]), 1099);
        assert_eq!(s.sport_of_flow(100), 1000);
        assert_eq!(s.sport_of_flow(199), 1099);
        let distinct: std::collections::HashSet<u16> =
            (0..1000).map(|i| s.sport_of_flow(i)).collect();
        assert_eq!(distinct.len(), 100);
        let one = FrameSpec { flows: 1, ..spec() };
        assert!((0..10).all(|i| one.sport_of_flow(i) == 1000));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(
            FrameSpec { size: 49, ..spec() }.build(),
            Err(FrameError::Size(49))
        );
        assert_eq!(
            FrameSpec {
                size: 1515,
                ..spec()
            }
            .build(),
            Err(FrameError::Size(1515))
        );
        assert!(FrameSpec { flows: 0, ..spec() }.build().is_err());
        assert!(FrameSpec {
            sport: 65000,
            flows: 536,
            ..spec()
        }
        .build()
        .is_ok());
        assert!(FrameSpec {
            sport: 65000,
            flows: 537,
            ..spec()
        }
        .build()
        .is_err());
    }

    #[test]
    fn magic_check_rejects_other_frames() {
        let mut f = spec().build().unwrap();
        assert!(is_generated(&f));
        f[MAGIC_OFFSET] ^= 1;
        assert!(!is_generated(&f));
        assert!(!is_generated(&f[..MAGIC_OFFSET + 3]));
    }

    #[test]
    fn macs_parse_or_fail_clearly() {
        assert_eq!(parse_mac("02:00:00:00:0a:01"), Ok([2, 0, 0, 0, 10, 1]));
        assert!(parse_mac("02:00:00:00:0a").is_err());
        assert!(parse_mac("02:00:00:00:0a:zz").is_err());
    }
}
