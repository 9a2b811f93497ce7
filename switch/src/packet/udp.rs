//! UDP (RFC 768): a zero-copy view, pseudo-header checksum fill/verify for
//! IPv4 and IPv6 (RFC 8200 §8.1: mandatory over IPv6), and `UdpRepr`.
//!
//! After [`UdpPacket::new_checked`] (buffer ≥ 8 bytes and ≥ the length
//! field, length field ≥ 8) no accessor panics.

use super::ip::PseudoHeader;
use super::{be16, put16, Field, WireError, WireResult};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view over a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wrap and [`Self::check_len`].
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the header and the datagram length fit; `Malformed` when the
    /// length field is below 8.
    pub fn check_len(&self) -> WireResult<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len < l {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field (header + data).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// True when the length field says there is no data.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum as stored (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Data, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// True when the checksum is valid, or absent (0) over IPv4.
    pub fn verify_checksum(&self, ip: &PseudoHeader) -> bool {
        if self.checksum() == 0 && matches!(ip, PseudoHeader::V4 { .. }) {
            return true;
        }
        ip.verify(17, &self.buffer.as_ref()[..usize::from(self.len())])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT.start, p);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT.start, p);
    }

    /// Set the length field.
    pub fn set_len(&mut self, l: u16) {
        put16(self.buffer.as_mut(), field::LENGTH.start, l);
    }

    /// Set the stored checksum.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    /// Compute and store the checksum over header and data (to the length
    /// field); a computed zero is stored as 0xffff (RFC 768).
    pub fn fill_checksum(&mut self, ip: &PseudoHeader) {
        self.set_checksum(0);
        let l = usize::from(self.len());
        let c = ip.checksum(17, &self.buffer.as_ref()[..l]);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Data, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..l]
    }
}

/// A UDP header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Data length (length field − 8).
    pub payload_len: usize,
}

impl UdpRepr {
    /// Read a datagram; `Malformed` when the checksum does not verify.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>, ip: &PseudoHeader) -> WireResult<UdpRepr> {
        p.check_len()?;
        if !p.verify_checksum(ip) {
            return Err(WireError::Malformed);
        }
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.len()) - HEADER_LEN,
        })
    }

    /// Header bytes (8).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into a buffer holding header + data (the data must
    /// already be in place: the checksum covers it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut UdpPacket<T>, ip: &PseudoHeader) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(u16::try_from(HEADER_LEN + self.payload_len).unwrap_or(u16::MAX));
        p.fill_checksum(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: PseudoHeader = PseudoHeader::V4 {
        src: [192, 168, 1, 1],
        dst: [192, 168, 1, 2],
    };

    // 1234 -> 53, 4 bytes of data; checksum 0xd9dd over the pseudo-header
    // (computed independently with a Python one-liner).
    static PACKET_BYTES: [u8; 12] = [
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0xd9, 0xdd, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn deconstruct() {
        let p = UdpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (1234, 53, 12));
        assert!(p.verify_checksum(&IP));
        assert_eq!(
            UdpRepr::parse(&p, &IP).unwrap(),
            UdpRepr {
                src_port: 1234,
                dst_port: 53,
                payload_len: 4
            }
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        UdpRepr {
            src_port: 1234,
            dst_port: 53,
            payload_len: 4,
        }
        .emit(&mut p, &IP);
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn lengths_and_checksums() {
        let mut b = PACKET_BYTES;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        assert_eq!(
            UdpPacket::new_checked(&PACKET_BYTES[..11]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = PACKET_BYTES;
        b[9] ^= 1;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum(&IP));
        let mut b = PACKET_BYTES;
        b[6..8].fill(0);
        assert!(
            UdpPacket::new_checked(&b[..]).unwrap().verify_checksum(&IP),
            "zero = none over IPv4"
        );
        let v6 = PseudoHeader::V6 {
            src: [1; 16],
            dst: [2; 16],
        };
        assert!(
            !UdpPacket::new_checked(&b[..]).unwrap().verify_checksum(&v6),
            "mandatory over IPv6"
        );
    }
}
