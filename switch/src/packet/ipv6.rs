//! IPv6 (RFC 8200 §3) with extension-header walking (§4: hop-by-hop 0,
//! routing 43, fragment 44, destination options 60; AH 51 from RFC 4302),
//! and `Ipv6Repr`.
//!
//! [`Ipv6Packet::check_len`] checks the fixed header and the payload length
//! against the buffer; `payload()` stops at the payload length so Ethernet
//! padding is ignored. [`walk_ext_headers`] follows the next-header chain
//! over a payload without allocating and reports where the upper layer starts.

use super::ip::IpProtocol;
use super::{be16, be32, put16, put32, Field, Rest, WireError, WireResult};

mod field {
    use super::{Field, Rest};
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
    pub const PAYLOAD: Rest = 40..;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view over an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wrap and [`Self::check_len`].
    pub fn new_checked(buffer: T) -> WireResult<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the fixed header and the announced payload fit in the buffer.
    pub fn check_len(&self) -> WireResult<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class byte (DSCP << 2 | ECN).
    pub fn traffic_class(&self) -> u8 {
        (be32(self.buffer.as_ref(), field::VER_TC_FLOW.start) >> 20) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The first next-header value.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// The payload (extension headers and upper layer), padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set version 6, traffic class and flow label at once.
    pub fn set_version_tc_label(&mut self, traffic_class: u8, label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (label & 0x000f_ffff);
        put32(self.buffer.as_mut(), field::VER_TC_FLOW.start, w);
    }

    /// Set the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Set the first next header.
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.into();
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Where the extension-header chain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtWalk {
    /// The upper-layer protocol (or the header the walk stopped at).
    pub protocol: u8,
    /// Offset of the upper layer within the walked payload.
    pub offset: usize,
    /// The fragment header, if one was crossed: (offset in 8-byte units, M flag).
    pub fragment: Option<(u16, bool)>,
    /// True when a non-first fragment stopped the walk (OVS reports the
    /// protocol as 44 then, since the upper-layer header is not present).
    pub later_fragment: bool,
}

/// True for the next-header values [`walk_ext_headers`] steps over.
#[inline(always)]
pub fn is_ext_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60)
}

/// Walk the extension headers of `payload` starting with next header `first`.
///
/// Lengths per RFC 8200 §4.3–4.6 ((len + 1)·8 for hop-by-hop, routing and
/// destination options; 8 for fragment) and RFC 4302 §2.2 ((len + 2)·4 for
/// AH). Like OVS's `parse_ipv6_ext_hdrs`, a fragment header whose
/// offset/flags word is non-zero marks a fragment, and a non-zero offset ends
/// the walk with protocol 44. `Truncated` when a header does not fit.
pub fn walk_ext_headers(first: u8, payload: &[u8]) -> WireResult<ExtWalk> {
    let mut next = first;
    let mut off = 0usize;
    let mut fragment = None;
    while is_ext_header(next) {
        // Every extension header is at least 8 bytes.
        let h = payload.get(off..off + 8).ok_or(WireError::Truncated)?;
        let len = match next {
            44 => {
                let offlg = be16(h, 2);
                if offlg != 0 {
                    let frag_off = offlg >> 3;
                    fragment = Some((frag_off, offlg & 1 != 0));
                    if frag_off != 0 {
                        return Ok(ExtWalk {
                            protocol: 44,
                            offset: off + 8,
                            fragment,
                            later_fragment: true,
                        });
                    }
                }
                8
            }
            51 => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        if payload.len() < off + len {
            return Err(WireError::Truncated);
        }
        next = h[0];
        off += len;
    }
    Ok(ExtWalk {
        protocol: next,
        offset: off,
        fragment,
        later_fragment: false,
    })
}

/// An IPv6 fixed header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// First next header.
    pub next_header: IpProtocol,
    /// Payload length (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Read a packet; `Malformed` for a version other than 6.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> WireResult<Ipv6Repr> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Header bytes emitted (40).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into a buffer of at least 40 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        p.set_version_tc_label(self.traffic_class, self.flow_label);
        p.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKET_BYTES: [u8; 52] = [
        0x6b, 0x81, 0x23, 0x45, // version 6, tc 0xb8, label 0x12345
        0x00, 0x0c, 0x11, 0x40, // plen 12, UDP, hop limit 64
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // src fe80::1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // dst fe80::2
        0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn repr() -> Ipv6Repr {
        let mut src = [0u8; 16];
        src[0] = 0xfe;
        src[1] = 0x80;
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        Ipv6Repr {
            src,
            dst,
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Ipv6Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 52];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        p.payload_mut()[..4].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn truncated_payload() {
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET_BYTES[..51]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET_BYTES[..39]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn ext_header_walk() {
        // hop-by-hop (8) -> AH (len 2: 16 bytes) -> dest opts (len 1: 16) -> TCP
        let mut chain = vec![51, 0, 1, 4, 0, 0, 0, 0];
        chain.extend_from_slice(&[60, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 9, 9, 9, 9]);
        chain.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        chain.extend_from_slice(&[0xab; 20]);
        let w = walk_ext_headers(0, &chain).unwrap();
        assert_eq!((w.protocol, w.offset, w.fragment), (6, 40, None));
        assert_eq!(
            walk_ext_headers(0, &chain[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            walk_ext_headers(0, &chain[..7]).unwrap_err(),
            WireError::Truncated
        );
        // First fragment (offset 0, M) keeps walking; a later one stops with 44.
        let first = [17, 0, 0x00, 0x01, 0, 0, 0, 7, 0xcc, 0xcc];
        let w = walk_ext_headers(44, &first).unwrap();
        assert_eq!(
            (w.protocol, w.offset, w.fragment, w.later_fragment),
            (17, 8, Some((0, true)), false)
        );
        let later = [17, 0, 0x00, 0x28, 0, 0, 0, 7];
        let w = walk_ext_headers(44, &later).unwrap();
        assert_eq!(
            (w.protocol, w.fragment, w.later_fragment),
            (44, Some((5, false)), true)
        );
        // An atomic fragment (all zero) is not a fragment.
        let atomic = [17, 0, 0, 0, 0, 0, 0, 7];
        assert_eq!(walk_ext_headers(44, &atomic).unwrap().fragment, None);
    }
}
