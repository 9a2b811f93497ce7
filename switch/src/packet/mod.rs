//! Wire formats: zero-copy views and builders per protocol, and extraction of
//! a frame into a `FlowKey`.
//!
//! Frames enter as byte slices (or [`Packet`] buffers). Each protocol file
//! offers a smoltcp-style view (`EthernetFrame<T>`, `Ipv4Packet<T>`, ...) over
//! any `AsRef<[u8]>` buffer: `new_checked()` validates the lengths once, after
//! which no accessor panics; setters need `AsMut<[u8]>`. `*Repr` types parse
//! a view into plain values and emit them back (slow path, tests). The hot
//! path uses [`extract()`] only, which never allocates and never panics.
//! [`builder::FrameBuilder`] makes complete, checksummed frames in one line.

pub mod arp;
pub mod buf;
pub mod builder;
pub mod checksum;
pub mod compose;
pub mod ethernet;
pub mod extract;
pub mod icmp;
pub mod icmp_error;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

pub use buf::{Packet, PacketPool};
pub use builder::FrameBuilder;
pub use extract::{extract, extract_into, fuzz_extract, Layout, ParseStatus};

/// Why a view or a `Repr` refused a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or the length it announces) does.
    #[error("buffer too short for the header")]
    Truncated,
    /// A header field is inconsistent (version, header length, length field).
    #[error("malformed header")]
    Malformed,
    /// The header is well formed but of a kind this `Repr` does not represent
    /// (e.g. ARP for a hardware type other than Ethernet).
    #[error("unsupported header variant")]
    Unsupported,
}

/// Result of wire parsing.
pub type WireResult<T> = core::result::Result<T, WireError>;

/// A byte range inside a header.
pub(crate) type Field = core::ops::Range<usize>;
/// The bytes from an offset to the end of a header.
pub(crate) type Rest = core::ops::RangeFrom<usize>;

/// Big-endian read of two bytes at `at` (callers have checked the length).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Big-endian read of four bytes at `at` (callers have checked the length).
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Big-endian write of two bytes at `at` (callers have checked the length).
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Big-endian write of four bytes at `at` (callers have checked the length).
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
