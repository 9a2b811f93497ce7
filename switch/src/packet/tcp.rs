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
