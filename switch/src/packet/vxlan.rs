//! VXLAN (RFC 7348 §5): a view over the 8-byte header that follows the
//! outer UDP header (port 4789), and `VxlanRepr`.
//!
//! Layout: flags (8 bits, the I bit 0x08 must be set for a valid VNI),
//! 24 reserved bits, VNI (24 bits), 8 reserved bits. The payload is the
//! inner Ethernet frame. Never copies, never panics after `new_checked`.

use super::{be32, put32, Field, Rest, WireError, WireResult};

mod field {
    use super::{Field, Rest};
    pub const FLAGS: usize = 0;
    pub const VNI: Field = 4..8;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// The I flag: the VNI is valid (RFC 7348 §5).
pub const FLAG_I: u8 = 0x08;
/// The IANA-assigned UDP destination port.
pub const UDP_PORT: u16 = 4789;

/// A view over a VXLAN header and the inner frame.
#[derive(Debug, Clone)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
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

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True when the I flag is set (the VNI is valid).
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VNI.start) >> 8
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Set the flags byte (the reserved bytes after it are zeroed).
    pub fn set_flags(&mut self, flags: u8) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = flags;
        b[1..4].fill(0);
    }

    /// Set the VNI (low 24 bits), zeroing the reserved byte after it.
    pub fn set_vni(&mut self, vni: u32) {
        put32(
            self.buffer.as_mut(),
            field::VNI.start,
            (vni & 0x00ff_ffff) << 8,
        );
    }

    /// The inner frame, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A VXLAN header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanRepr {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
}

impl VxlanRepr {
    /// Read a header; `Malformed` when the I flag is clear (RFC 7348 §5:
    /// the VNI is then not valid).
    pub fn parse<T: AsRef<[u8]>>(p: &VxlanPacket<T>) -> WireResult<VxlanRepr> {
        p.check_len()?;
        if !p.has_vni() {
            return Err(WireError::Malformed);
        }
        Ok(VxlanRepr { vni: p.vni() })
    }

    /// Header bytes (8).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut VxlanPacket<T>) {
        p.set_flags(FLAG_I);
        p.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HEADER_BYTES: [u8; 10] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa, 0xbb];

    #[test]
    fn deconstruct() {
        let p = VxlanPacket::new_checked(&HEADER_BYTES[..]).unwrap();
        assert!(p.has_vni());
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert_eq!(VxlanRepr::parse(&p).unwrap(), VxlanRepr { vni: 0x123456 });
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 10];
        buf[8..].copy_from_slice(&[0xaa, 0xbb]);
        VxlanRepr { vni: 0x123456 }.emit(&mut VxlanPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HEADER_BYTES);
    }

    #[test]
    fn missing_i_flag_and_short_header() {
        let mut b = HEADER_BYTES;
        b[0] = 0;
        let p = VxlanPacket::new_checked(&b[..]).unwrap();
        assert_eq!(VxlanRepr::parse(&p).unwrap_err(), WireError::Malformed);
        assert_eq!(
            VxlanPacket::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }
}
