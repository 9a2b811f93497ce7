//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443): one view for both (same header
//! layout: type, code, checksum, 4 bytes of "rest of header"), checksum
//! fill/verify (ICMPv4 over the message; ICMPv6 with the RFC 8200 §8.1
//! pseudo-header), and `IcmpRepr`.
//!
//! After [`IcmpPacket::new_checked`] (8 bytes, the length OVS also requires
//! before reading type/code) no accessor panics.

use super::checksum;
use super::ip::PseudoHeader;
use super::{be16, put16, Field, WireError, WireResult};

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
}

/// Length of an ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::REST.end;

/// ICMPv4 echo reply.
pub const ICMPV4_ECHO_REPLY: u8 = 0;
/// ICMPv4 destination unreachable.
pub const ICMPV4_DEST_UNREACH: u8 = 3;
/// ICMPv4 echo request.
pub const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 time exceeded.
pub const ICMPV4_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 echo request.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 neighbor solicitation.
pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 neighbor advertisement.
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;

/// Which ICMP: the checksum differs (ICMPv6 covers a pseudo-header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpVersion {
    /// ICMP for IPv4 (protocol 1).
    V4,
    /// ICMP for IPv6 (next header 58), with the addresses its checksum covers.
    V6(PseudoHeader),
}

/// A view over an ICMP or ICMPv6 message. The message is the whole buffer.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wrap and [`Self::check_len`].
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the 8-byte header fits.
    pub fn check_len(&self) -> WireResult<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The 4 "rest of header" bytes.
    pub fn rest(&self) -> [u8; 4] {
        let mut r = [0; 4];
        r.copy_from_slice(&self.buffer.as_ref()[field::REST]);
        r
    }

    /// Echo identifier (first half of the rest of header).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::REST.start)
    }

    /// Echo sequence number (second half of the rest of header).
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::REST.start + 2)
    }

    /// Data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum verifies.
    pub fn verify_checksum(&self, v: &IcmpVersion) -> bool {
        match v {
            IcmpVersion::V4 => checksum::checksum(self.buffer.as_ref()) == 0,
            IcmpVersion::V6(ip) => ip.verify(58, self.buffer.as_ref()),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Set the type.
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Set the code.
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Set the stored checksum.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    /// Set the rest of header.
    pub fn set_rest(&mut self, r: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&r);
    }

    /// Compute and store the checksum over the whole message.
    pub fn fill_checksum(&mut self, v: &IcmpVersion) {
        self.set_checksum(0);
        let c = match v {
            IcmpVersion::V4 => checksum::checksum(self.buffer.as_ref()),
            IcmpVersion::V6(ip) => ip.checksum(58, self.buffer.as_ref()),
        };
        self.set_checksum(c);
    }

    /// Data after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An ICMP header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpRepr {
    /// Type.
    pub msg_type: u8,
    /// Code.
    pub msg_code: u8,
    /// Rest of header (echo: identifier and sequence number).
    pub rest: [u8; 4],
}

impl IcmpRepr {
    /// An echo request for `v` (type 8 or 128).
    pub fn echo_request(v: &IcmpVersion, ident: u16, seq: u16) -> IcmpRepr {
        let mut rest = [0; 4];
        rest[..2].copy_from_slice(&ident.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        let msg_type = match v {
            IcmpVersion::V4 => ICMPV4_ECHO_REQUEST,
            IcmpVersion::V6(_) => ICMPV6_ECHO_REQUEST,
        };
        IcmpRepr {
            msg_type,
            msg_code: 0,
            rest,
        }
    }

    /// Read a message; `Malformed` when the checksum does not verify.
    pub fn parse<T: AsRef<[u8]>>(p: &IcmpPacket<T>, v: &IcmpVersion) -> WireResult<IcmpRepr> {
        p.check_len()?;
        if !p.verify_checksum(v) {
            return Err(WireError::Malformed);
        }
        Ok(IcmpRepr {
            msg_type: p.msg_type(),
            msg_code: p.msg_code(),
            rest: p.rest(),
        })
    }

    /// Header bytes (8).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into a buffer that is exactly the message (data in
    /// place already).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut IcmpPacket<T>, v: &IcmpVersion) {
        p.set_msg_type(self.msg_type);
        p.set_msg_code(self.msg_code);
        p.set_rest(self.rest);
        p.fill_checksum(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request id 0x1234 seq 1 with 4 bytes of data; checksum 0x482d
    // computed independently with a Python one-liner.
    static ECHO_BYTES: [u8; 12] = [
        0x08, 0x00, 0x48, 0x2d, 0x12, 0x34, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn deconstruct() {
        let p = IcmpPacket::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!((p.msg_type(), p.msg_code()), (8, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert!(p.verify_checksum(&IcmpVersion::V4));
        assert_eq!(
            IcmpRepr::parse(&p, &IcmpVersion::V4).unwrap(),
            IcmpRepr::echo_request(&IcmpVersion::V4, 0x1234, 1)
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        IcmpRepr::echo_request(&IcmpVersion::V4, 0x1234, 1).emit(
            &mut IcmpPacket::new_unchecked(&mut buf[..]),
            &IcmpVersion::V4,
        );
        assert_eq!(buf, ECHO_BYTES);
    }

    #[test]
    fn icmpv6_checksum_covers_the_addresses() {
        let v6 = IcmpVersion::V6(PseudoHeader::V6 {
            src: [1; 16],
            dst: [2; 16],
        });
        let mut buf = [0u8; 12];
        IcmpRepr::echo_request(&v6, 7, 9).emit(&mut IcmpPacket::new_unchecked(&mut buf[..]), &v6);
        let p = IcmpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.msg_type(), ICMPV6_ECHO_REQUEST);
        assert!(p.verify_checksum(&v6));
        let other = IcmpVersion::V6(PseudoHeader::V6 {
            src: [1; 16],
            dst: [3; 16],
        });
        assert!(!p.verify_checksum(&other));
        assert!(IcmpPacket::new_checked(&buf[..7]).is_err());
    }
}
