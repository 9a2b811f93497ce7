//! TCP (RFC 9293 §3.1): a zero-copy view over a segment, its `Repr`, and
//! pseudo-header checksums for IPv4 and IPv6.
//!
//! Bytes enter as any `AsRef<[u8]>` buffer; after [`TcpPacket::new_checked`]
//! no accessor panics. Setters need `AsMut<[u8]>`. This module never
//! allocates and never trusts the data-offset field without checking it.

/// TCP flag bits as they appear in the low 12 bits of the data-offset/flags
/// word (RFC 9293 §3.1, RFC 3168 for ECE/CWR, RFC 3540 for NS).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronize sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push function.
    pub const PSH: u16 = 0x008;
    /// Acknowledgment field significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer field significant.
    pub const URG: u16 = 0x020;
    /// ECN echo.
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x080;
    /// ECN nonce (historic).
    pub const NS: u16 = 0x100;
}

use super::ip::PseudoHeader;
use super::{be16, be32, put16, put32, Field, WireError, WireResult};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const OFF_FLAGS: Field = 12..14;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// A view over a TCP segment. The segment is the whole buffer: wrap exactly
/// the IP payload so the checksum covers the right bytes.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wrap and [`Self::check_len`].
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the fixed header and the options (data offset) fit;
    /// `Malformed` when the data offset is below 5.
    pub fn check_len(&self) -> WireResult<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len < hl {
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

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// Header length in bytes (data offset · 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS.start] >> 4) * 4
    }

    /// The 12 flag bits ([`flags`]), reserved bits included, as OVS's
    /// `tcp_flags` field holds them.
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OFF_FLAGS.start) & 0x0fff
    }

    /// Window.
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW.start)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// Option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Segment data.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum over the whole segment verifies.
    pub fn verify_checksum(&self, ip: &PseudoHeader) -> bool {
        ip.verify(6, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT.start, p);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT.start, p);
    }

    /// Set the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ_NUM.start, v);
    }

    /// Set the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK_NUM.start, v);
    }

    /// Set the header length (bytes, multiple of 4) and the 12 flag bits.
    pub fn set_header_len_and_flags(&mut self, header_len: usize, flags: u16) {
        let w = (((header_len / 4) as u16 & 0xf) << 12) | (flags & 0x0fff);
        put16(self.buffer.as_mut(), field::OFF_FLAGS.start, w);
    }

    /// Set the window.
    pub fn set_window(&mut self, w: u16) {
        put16(self.buffer.as_mut(), field::WINDOW.start, w);
    }

    /// Set the stored checksum.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    /// Set the urgent pointer.
    pub fn set_urgent(&mut self, u: u16) {
        put16(self.buffer.as_mut(), field::URGENT.start, u);
    }

    /// Compute and store the checksum over the whole segment.
    pub fn fill_checksum(&mut self, ip: &PseudoHeader) {
        self.set_checksum(0);
        let c = ip.checksum(6, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Segment data, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// A TCP header (no options) as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits ([`flags`]).
    pub flags: u16,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
}

impl TcpRepr {
    /// Read a segment; `Malformed` when the checksum does not verify.
    /// Options are skipped.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>, ip: &PseudoHeader) -> WireResult<TcpRepr> {
        p.check_len()?;
        if !p.verify_checksum(ip) {
            return Err(WireError::Malformed);
        }
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq_number(),
            ack: p.ack_number(),
            flags: p.flags(),
            window: p.window(),
            urgent: p.urgent(),
        })
    }

    /// Header bytes (20).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into a buffer that is exactly header + data (data in
    /// place already: the checksum covers it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut TcpPacket<T>, ip: &PseudoHeader) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq);
        p.set_ack_number(self.ack);
        p.set_header_len_and_flags(HEADER_LEN, self.flags);
        p.set_window(self.window);
        p.set_urgent(self.urgent);
        p.fill_checksum(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: PseudoHeader = PseudoHeader::V4 {
        src: [10, 0, 0, 1],
        dst: [10, 0, 0, 2],
    };

    // 4000 -> 80, seq 1, ack 0, SYN, window 65535, checksum 0x2a8b (computed
    // independently with a Python one-liner), 2 bytes of data.
    static SEGMENT_BYTES: [u8; 22] = [
        0x0f, 0xa0, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff,
        0xff, 0x2a, 0x8b, 0x00, 0x00, 0x61, 0x62,
    ];

    fn repr() -> TcpRepr {
        TcpRepr {
            src_port: 4000,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: flags::SYN,
            window: 65535,
            urgent: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let p = TcpPacket::new_checked(&SEGMENT_BYTES[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.payload(), b"ab");
        assert_eq!(TcpRepr::parse(&p, &IP).unwrap(), repr());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 22];
        buf[20..].copy_from_slice(b"ab");
        repr().emit(&mut TcpPacket::new_unchecked(&mut buf[..]), &IP);
        assert_eq!(buf, SEGMENT_BYTES);
    }

    #[test]
    fn data_offset_rules() {
        let mut b = SEGMENT_BYTES;
        b[12] = 0x40; // data offset 4
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = SEGMENT_BYTES;
        b[12] = 0x60; // data offset 6: needs 24 bytes
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            TcpPacket::new_checked(&SEGMENT_BYTES[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = SEGMENT_BYTES;
        b[12] = 0x5f; // reserved + NS bits are part of the 12-bit flags
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap().flags(), 0xf02);
    }
}
