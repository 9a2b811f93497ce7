//! Extraction of a frame into a `FlowKey` (miniflow_extract's job in OVS).
//!
//! SKELETON: only Ethernet + IPv4 + TCP/UDP so far; the signature is the contract.

use crate::flow::key::{ethertype, FlowKey};
use crate::flow::PortNo;

/// Offset value meaning "this layer is absent".
pub const NO_OFFSET: u16 = u16::MAX;

/// How far extraction got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseStatus {
    /// Every present header was complete and valid.
    Ok,
    /// The frame ended inside a header; the key holds the layers before it.
    Truncated,
    /// A header was inconsistent (bad IHL, length fields, version); the key
    /// holds the layers before it.
    Malformed,
}

/// Where the layers start in the frame, for action execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the L3 header (after VLAN tags), or `NO_OFFSET`.
    pub l3: u16,
    /// Offset of the L4 header, or `NO_OFFSET`.
    pub l4: u16,
    /// Extraction outcome.
    pub status: ParseStatus,
}

/// Reset `key` and fill it from `frame` received on `in_port`. Never panics,
/// whatever the bytes.
pub fn extract(frame: &[u8], in_port: PortNo, key: &mut FlowKey) -> Layout {
    *key = FlowKey::ZERO;
    key.in_port = in_port;
    let mut lay = Layout {
        l3: NO_OFFSET,
        l4: NO_OFFSET,
        status: ParseStatus::Ok,
    };
    if frame.len() < 14 {
        lay.status = ParseStatus::Truncated;
        return lay;
    }
    key.dl_dst.copy_from_slice(&frame[0..6]);
    key.dl_src.copy_from_slice(&frame[6..12]);
    key.dl_type = u16::from_be_bytes([frame[12], frame[13]]);
    if key.dl_type == ethertype::IPV4 {
        lay.l3 = 14;
        let ip = &frame[14..];
        if ip.len() < 20 {
            lay.status = ParseStatus::Truncated;
            return lay;
        }
        key.nw_tos = ip[1];
        key.nw_ttl = ip[8];
        key.nw_proto = ip[9];
        key.nw_src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
        key.nw_dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip.len() >= ihl + 4 && (key.nw_proto == 6 || key.nw_proto == 17) {
            lay.l4 = (14 + ihl) as u16;
            key.tp_src = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
            key.tp_dst = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
        }
    }
    lay
}
