//! Address and port arithmetic the flows need: IPv4 prefixes, `cidr`
//! minus `except` as disjoint prefixes, and a port range as the fewest
//! `tp_dst=value/mask` matches.
//!
//! OpenFlow matches only prefixes and bit masks, not ranges or differences,
//! so both are expanded here; the results are exact (tests below check every
//! address/port against the definition).

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: u32,
    /// Prefix length 0..=32.
    pub len: u8,
}

impl Cidr {
    /// A /32.
    pub fn host(a: Ipv4Addr) -> Cidr {
        Cidr {
            addr: u32::from(a),
            len: 32,
        }
    }

    /// The mask of the prefix.
    pub fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// Parse `a.b.c.d/len` or a bare address (/32). Host bits are cleared,
    /// as Go's net.ParseCIDR (what the API server validates with) accepts
    /// them. `Ok(None)` for an IPv6 prefix.
    pub fn parse(s: &str) -> Result<Option<Cidr>, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: std::net::IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (a.b.c.d/len)"))?;
        let ip = match ip {
            std::net::IpAddr::V4(v) => v,
            std::net::IpAddr::V6(_) => {
                // Validate the length anyway so a typo is still an error.
                if let Some(l) = l {
                    match l.parse::<u8>() {
                        Ok(n) if n <= 128 => {}
                        _ => return Err(format!("{s:?}: bad prefix length")),
                    }
                }
                return Ok(None);
            }
        };
        let len = match l {
            None => 32,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= 32 => n,
                _ => return Err(format!("{s:?}: prefix length must be 0..32")),
            },
        };
        let mut c = Cidr {
            addr: u32::from(ip),
            len,
        };
        c.addr &= c.mask();
        Ok(Some(c))
    }

    /// Whether `other` lies inside this prefix.
    pub fn contains(self, other: Cidr) -> bool {
        other.len >= self.len && (other.addr & self.mask()) == self.addr
    }

    /// Whether an address lies inside.
    pub fn contains_ip(self, a: Ipv4Addr) -> bool {
        (u32::from(a) & self.mask()) == self.addr
    }

    fn overlaps(self, other: Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }

    fn halves(self) -> (Cidr, Cidr) {
        let len = self.len + 1;
        let bit = 1u32 << (32 - u32::from(len));
        (
            Cidr {
                addr: self.addr,
                len,
            },
            Cidr {
                addr: self.addr | bit,
                len,
            },
        )
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 32 {
            write!(f, "{}", Ipv4Addr::from(self.addr))
        } else {
            write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
        }
    }
}

/// `base` minus every prefix in `except`, as disjoint prefixes in address
/// order (split in halves only where an except cuts through).
pub fn subtract(base: Cidr, except: &[Cidr]) -> Vec<Cidr> {
    let mut out = Vec::new();
    sub_into(base, except, &mut out);
    out
}

fn sub_into(c: Cidr, except: &[Cidr], out: &mut Vec<Cidr>) {
    if except.iter().any(|e| e.contains(c)) {
        return;
    }
    if !except.iter().any(|e| e.overlaps(c)) {
        out.push(c);
        return;
    }
    // Some except lies strictly inside c (so c.len < 32).
    let (lo, hi) = c.halves();
    sub_into(lo, except, out);
    sub_into(hi, except, out);
}

/// The port range `lo..=hi` as `(value, mask)` pairs covering exactly it
/// (the usual greedy split into aligned power-of-two blocks).
pub fn port_masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // Largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let mask = !(size - 1) & 0xffff;
        // Both fit in 16 bits: lo <= hi <= 0xffff and mask is masked.
        out.push((lo as u16, mask as u16));
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap().unwrap()
    }

    #[test]
    fn parse_clears_host_bits_and_rejects_garbage() {
        assert_eq!(c("10.0.0.7/24").to_string(), "10.0.0.0/24");
        assert_eq!(c("10.0.0.7").to_string(), "10.0.0.7");
        assert_eq!(c("0.0.0.0/0").mask(), 0);
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("fd00::/200").is_err());
        assert_eq!(Cidr::parse("fd00::/64"), Ok(None));
    }

    #[test]
    fn subtract_is_exactly_the_difference() {
        let base = c("172.17.0.0/16");
        let ex = [c("172.17.1.0/24"), c("172.17.200.128/25")];
        let parts = subtract(base, &ex);
        // Every address of the /16 (sampled every 64) is in exactly one part
        // iff it is in no except.
        for a in (u32::from(Ipv4Addr::new(172, 17, 0, 0))
            ..=u32::from(Ipv4Addr::new(172, 17, 255, 255)))
            .step_by(64)
        {
            let ip = Ipv4Addr::from(a);
            let n = parts.iter().filter(|p| p.contains_ip(ip)).count();
            let excluded = ex.iter().any(|e| e.contains_ip(ip));
            assert_eq!(n, usize::from(!excluded), "{ip}");
        }
        assert!(subtract(base, &[c("172.0.0.0/8")]).is_empty());
        assert_eq!(subtract(base, &[c("10.0.0.0/8")]), vec![base]);
    }

    #[test]
    fn port_masks_cover_exactly_the_range() {
        for (lo, hi) in [
            (80, 80),
            (32000, 32768),
            (1, 65535),
            (0, 65535),
            (1024, 1031),
            (6379, 6380),
        ] {
            let m = port_masks(lo, hi);
            for p in 0..=65535u32 {
                let p = p as u16;
                let n = m.iter().filter(|(v, k)| p & k == *v).count();
                assert_eq!(n, usize::from(p >= lo && p <= hi), "{lo}-{hi}: {p}");
            }
        }
        assert_eq!(port_masks(80, 80), vec![(80, 0xffff)]);
        assert_eq!(port_masks(0, 65535), vec![(0, 0)]);
    }
}
