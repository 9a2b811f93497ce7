//! Internet checksum (RFC 1071) and its incremental update (RFC 1624), used
//! by header rewrites so that a `mod_nw_dst` or `dec_ttl` costs a few
//! instructions instead of a pass over the header or payload.

/// One's-complement sum of `data` folded to 16 bits, added to `initial`
/// (not complemented).
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// The Internet checksum of `data` (complemented sum), as stored in headers.
pub fn checksum(data: &[u8]) -> u16 {
    !(sum(data, 0) as u16)
}

/// RFC 1624 eqn. 3: the new checksum when a 16-bit word of the covered data
/// changes from `old` to `new`. `check` is the checksum as stored.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// [`update16`] for a 32-bit word (an IPv4 address).
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// [`update16`] for a 128-bit word (an IPv6 address).
#[inline]
pub fn update128(check: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    let mut c = check;
    for i in 0..8 {
        let o = u16::from_be_bytes([old[2 * i], old[2 * i + 1]]);
        let n = u16::from_be_bytes([new[2 * i], new[2 * i + 1]]);
        c = update16(c, o, n);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_full() {
        // IPv4 header from RFC 1071-style example, checksum field zeroed.
        let mut hdr = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&hdr);
        assert_eq!(c, 0xb861);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
        // Rewrite the destination address incrementally.
        let old = u32::from_be_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
        let new = 0x0a00_0001u32;
        hdr[16..20].copy_from_slice(&new.to_be_bytes());
        let c2 = update32(c, old, new);
        hdr[10..12].copy_from_slice(&c2.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
        // TTL decrement: the TTL/protocol word changes.
        let old16 = u16::from_be_bytes([hdr[8], hdr[9]]);
        hdr[8] -= 1;
        let new16 = u16::from_be_bytes([hdr[8], hdr[9]]);
        let c3 = update16(c2, old16, new16);
        hdr[10..12].copy_from_slice(&c3.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
    }
}
