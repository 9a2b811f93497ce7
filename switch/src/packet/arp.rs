//! ARP (RFC 826): a view over the packet and `ArpRepr` for the one variant a
//! switch cares about, Ethernet hardware addresses over IPv4 (htype 1,
//! ptype 0x0800, hlen 6, plen 4).
//!
//! [`ArpPacket::check_len`] checks the fixed part and the address lengths the
//! packet announces; the address accessors read the Ethernet/IPv4 layout and
//! are only meaningful when [`ArpPacket::is_eth_ipv4`] holds, but never panic
//! after `check_len`.

use super::ethernet::Mac;
use super::{be16, put16, Field, WireError, WireResult};

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    // Ethernet/IPv4 layout.
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const ETH_IPV4_LEN: usize = field::TPA.end;

/// ARP operation codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Request (1).
    Request,
    /// Reply (2).
    Reply,
    /// Anything else (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            o => ArpOperation::Unknown(o),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(o: ArpOperation) -> u16 {
        match o {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

/// A view over an ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wrap and [`Self::check_len`].
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the buffer holds the fixed header, the four addresses at the
    /// lengths the header announces, and at least the Ethernet/IPv4 layout.
    pub fn check_len(&self) -> WireResult<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::OPER.end {
            return Err(WireError::Truncated);
        }
        let need =
            field::OPER.end + 2 * (usize::from(b[field::HLEN]) + usize::from(b[field::PLEN]));
        if b.len() < need.max(ETH_IPV4_LEN) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 = Ethernet).
    pub fn htype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// Protocol type (0x0800 = IPv4).
    pub fn ptype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE.start)
    }

    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(be16(self.buffer.as_ref(), field::OPER.start))
    }

    /// True for Ethernet/IPv4 ARP (the layout the address accessors read).
    pub fn is_eth_ipv4(&self) -> bool {
        self.htype() == 1 && self.ptype() == 0x0800 && self.hlen() == 6 && self.plen() == 4
    }

    /// Sender hardware address.
    pub fn sha(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        m
    }

    /// Sender protocol address.
    pub fn spa(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::SPA]);
        a
    }

    /// Target hardware address.
    pub fn tha(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        m
    }

    /// Target protocol address.
    pub fn tpa(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::TPA]);
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Set htype, ptype, hlen, plen for Ethernet/IPv4.
    pub fn set_eth_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, field::HTYPE.start, 1);
        put16(b, field::PTYPE.start, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Set the operation.
    pub fn set_operation(&mut self, op: ArpOperation) {
        put16(self.buffer.as_mut(), field::OPER.start, op.into());
    }

    /// Set the sender hardware address.
    pub fn set_sha(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m);
    }

    /// Set the sender protocol address.
    pub fn set_spa(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a);
    }

    /// Set the target hardware address.
    pub fn set_tha(&mut self, m: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m);
    }

    /// Set the target protocol address.
    pub fn set_tpa(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a);
    }
}

/// An Ethernet/IPv4 ARP packet as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: Mac,
    /// Target protocol address.
    pub tpa: [u8; 4],
}

impl ArpRepr {
    /// Read a packet; `Unsupported` unless it is Ethernet/IPv4.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> WireResult<ArpRepr> {
        p.check_len()?;
        if !p.is_eth_ipv4() {
            return Err(WireError::Unsupported);
        }
        Ok(ArpRepr {
            operation: p.operation(),
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        })
    }

    /// Bytes emitted (28).
    pub const fn buffer_len(&self) -> usize {
        ETH_IPV4_LEN
    }

    /// Write into a buffer of at least 28 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut ArpPacket<T>) {
        p.set_eth_ipv4();
        p.set_operation(self.operation);
        p.set_sha(self.sha);
        p.set_spa(self.spa);
        p.set_tha(self.tha);
        p.set_tpa(self.tpa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKET_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // eth/ipv4 request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
    ];

    fn repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            sha: [2, 0, 0, 0, 0, 1],
            spa: [10, 0, 0, 1],
            tha: [0; 6],
            tpa: [10, 0, 0, 2],
        }
    }

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert!(p.is_eth_ipv4());
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(ArpRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 28];
        repr().emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn lengths_and_variants_are_checked() {
        assert_eq!(
            ArpPacket::new_checked(&PACKET_BYTES[..27]).unwrap_err(),
            WireError::Truncated
        );
        let mut long = [0u8; 40];
        long[..28].copy_from_slice(&PACKET_BYTES);
        long[4] = 16; // claims 16-byte hardware addresses: needs 8 + 2*20 bytes
        assert_eq!(
            ArpPacket::new_checked(&long[..]).unwrap_err(),
            WireError::Truncated
        );
        let mut other = PACKET_BYTES;
        other[1] = 6; // IEEE 802 hardware type
        let p = ArpPacket::new_checked(&other[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap_err(), WireError::Unsupported);
    }
}
