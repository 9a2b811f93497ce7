//! 802.1Q / 802.1ad VLAN tags (IEEE 802.1Q-2018 §9.6): a view over the four
//! bytes that follow a TPID (the TCI, then the encapsulated ethertype), and
//! `VlanRepr`.
//!
//! A tagged frame is `dst src TPID TCI [TPID TCI] ethertype payload`; the
//! Ethernet view's `ethertype()` is the outer TPID and its payload starts at
//! the TCI, which is where `VlanTag` goes. For QinQ wrap the outer tag's
//! payload again. Never copies, never panics after `new_checked`.

use super::ethernet::EtherType;
use super::{be16, put16, Field, Rest, WireError, WireResult};

mod field {
    use super::{Field, Rest};
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
    pub const PAYLOAD: Rest = 4..;
}

/// Length of a tag after its TPID (TCI + inner ethertype).
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// True for the TPIDs that introduce a VLAN tag (0x8100, 0x88a8).
#[inline(always)]
pub fn is_tpid(ethertype: u16) -> bool {
    ethertype == 0x8100 || ethertype == 0x88a8
}

/// A view over one VLAN tag (TCI + encapsulated ethertype) and what follows.
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wrap and [`Self::check_len`].
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Ok when the buffer holds TCI and ethertype.
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

    /// The whole tag control information word.
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI.start)
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator (formerly CFI).
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The ethertype of what the tag encapsulates (another TPID for QinQ).
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// What follows the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Set the whole TCI.
    pub fn set_tci(&mut self, tci: u16) {
        put16(self.buffer.as_mut(), field::TCI.start, tci);
    }

    /// Set the VID, keeping PCP and DEI.
    pub fn set_vid(&mut self, vid: u16) {
        let t = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(t);
    }

    /// Set the PCP, keeping DEI and VID.
    pub fn set_pcp(&mut self, pcp: u8) {
        let t = (self.tci() & 0x1fff) | (u16::from(pcp & 7) << 13);
        self.set_tci(t);
    }

    /// Set the encapsulated ethertype.
    pub fn set_ethertype(&mut self, t: EtherType) {
        put16(self.buffer.as_mut(), field::ETHERTYPE.start, t.into());
    }

    /// What follows the tag, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// One VLAN tag as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanRepr {
    /// Priority code point (0..=7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id (0..=4095).
    pub vid: u16,
    /// Encapsulated ethertype.
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// Read a tag.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> WireResult<VlanRepr> {
        tag.check_len()?;
        Ok(VlanRepr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.ethertype(),
        })
    }

    /// Bytes after the TPID (4).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// The TCI word.
    pub fn tci(&self) -> u16 {
        (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }

    /// Write the tag.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        tag.set_tci(self.tci());
        tag.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ethernet::EthernetFrame;

    /// A QinQ frame: S-tag vid 100 pcp 3, C-tag vid 20 pcp 0 DEI, then IPv6.
    static QINQ_BYTES: [u8; 24] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, // macs
        0x88, 0xa8, 0x60, 0x64, // S-tag
        0x81, 0x00, 0x10, 0x14, // C-tag
        0x86, 0xdd, 0xde, 0xad,
    ];

    #[test]
    fn deconstruct() {
        let eth = EthernetFrame::new_checked(&QINQ_BYTES[..]).unwrap();
        assert_eq!(eth.ethertype(), EtherType::QinQ);
        let outer = VlanTag::new_checked(eth.payload()).unwrap();
        assert_eq!((outer.pcp(), outer.dei(), outer.vid()), (3, false, 100));
        assert_eq!(outer.ethertype(), EtherType::Vlan);
        let inner = VlanTag::new_checked(outer.payload()).unwrap();
        assert_eq!((inner.pcp(), inner.dei(), inner.vid()), (0, true, 20));
        assert_eq!(inner.ethertype(), EtherType::Ipv6);
        assert_eq!(inner.payload(), &[0xde, 0xad]);
    }

    #[test]
    fn construct() {
        let mut buf = QINQ_BYTES;
        buf[14..22].fill(0);
        // The outer tag's "ethertype" is the inner tag's TPID.
        let outer = VlanRepr {
            pcp: 3,
            dei: false,
            vid: 100,
            ethertype: EtherType::Vlan,
        };
        outer.emit(&mut VlanTag::new_unchecked(&mut buf[14..]));
        let inner = VlanRepr {
            pcp: 0,
            dei: true,
            vid: 20,
            ethertype: EtherType::Ipv6,
        };
        inner.emit(&mut VlanTag::new_unchecked(&mut buf[18..]));
        assert_eq!(buf, QINQ_BYTES);
        assert_eq!(
            VlanRepr::parse(&VlanTag::new_checked(&buf[18..]).unwrap()),
            Ok(inner)
        );
        let mut t = VlanTag::new_unchecked(&mut buf[14..]);
        t.set_vid(7);
        t.set_pcp(1);
        assert_eq!(t.tci(), 0x2007);
    }

    #[test]
    fn short_tag_is_truncated() {
        assert_eq!(
            VlanTag::new_checked(&[0u8; 3][..]).unwrap_err(),
            WireError::Truncated
        );
        assert!(is_tpid(0x8100) && is_tpid(0x88a8) && !is_tpid(0x0800));
    }
}
