//! Datapath actions: the minimal, final list of operations a megaflow applies
//! to a packet, produced by slow-path translation and executed per packet.
//!
//! Like OVS, header changes are committed lazily: translation tracks the
//! packet's fields as the OpenFlow actions modify them and emits a `Set*`
//! only just before an output, only for fields that changed since the last
//! commit. Changes after the last output never reach the datapath.
//! `Display` prints OVS's datapath notation (what `ofproto/trace` prints after
//! `Datapath actions:`), e.g. `set(eth(dst=02:00:00:00:00:02)),set(ipv4(ttl=63)),2`.

use crate::flow::PortNo;

/// One datapath action. Fields set to `None` are left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DpAction {
    /// Send a copy of the packet, as modified so far, to a port.
    Output(PortNo),
    /// Rewrite Ethernet addresses.
    SetEth {
        /// New source.
        src: Option<[u8; 6]>,
        /// New destination.
        dst: Option<[u8; 6]>,
    },
    /// Rewrite IPv4 header fields (checksums updated incrementally, including
    /// the TCP/UDP pseudo-header part for address changes).
    SetIpv4 {
        /// New source.
        src: Option<u32>,
        /// New destination.
        dst: Option<u32>,
        /// New TOS byte.
        tos: Option<u8>,
        /// New TTL.
        ttl: Option<u8>,
    },
    /// Rewrite IPv6 header fields.
    SetIpv6 {
        /// New source.
        src: Option<[u8; 16]>,
        /// New destination.
        dst: Option<[u8; 16]>,
        /// New traffic class.
        tclass: Option<u8>,
        /// New hop limit.
        hlimit: Option<u8>,
        /// New flow label.
        label: Option<u32>,
    },
    /// Rewrite TCP ports.
    SetTcp {
        /// New source port.
        src: Option<u16>,
        /// New destination port.
        dst: Option<u16>,
    },
    /// Rewrite UDP ports.
    SetUdp {
        /// New source port.
        src: Option<u16>,
        /// New destination port.
        dst: Option<u16>,
    },
    /// Rewrite ICMP type/code.
    SetIcmp {
        /// New type.
        icmp_type: Option<u8>,
        /// New code.
        code: Option<u8>,
    },
    /// Rewrite ARP fields.
    SetArp {
        /// New opcode.
        op: Option<u16>,
        /// New sender protocol address.
        spa: Option<u32>,
        /// New target protocol address.
        tpa: Option<u32>,
        /// New sender hardware address.
        sha: Option<[u8; 6]>,
        /// New target hardware address.
        tha: Option<[u8; 6]>,
    },
    /// Rewrite the ICMPv6 neighbour discovery reserved word and the type of
    /// the first option (OVS's `set(nd_ext(...))`, RFC 4861 §4.3/4.4/4.6);
    /// committed before [`DpAction::SetNd`] so that a type change from
    /// source (1) to target (2) link-layer address lets `SetNd` write the
    /// target address into it, as OVS does. ICMPv6 checksum patched.
    SetNdExt {
        /// New reserved word (NA: R/S/O flags in the top three bits).
        reserved: Option<u32>,
        /// New type of the first option.
        options_type: Option<u8>,
    },
    /// Rewrite ICMPv6 neighbour discovery fields (OVS's `set(nd(...))`): the
    /// target address and the MAC in the first source or target link-layer
    /// option, whichever the message carries. ICMPv6 checksum patched.
    SetNd {
        /// New target address.
        target: Option<[u8; 16]>,
        /// New source link-layer address (written into an SLL option).
        sll: Option<[u8; 6]>,
        /// New target link-layer address (written into a TLL option).
        tll: Option<[u8; 6]>,
    },
    /// Push an outer VLAN tag.
    PushVlan {
        /// TPID (0x8100 or 0x88a8).
        tpid: u16,
        /// TCI without the CFI/present bit: pcp << 13 | vid.
        tci: u16,
    },
    /// Rewrite the outer VLAN tag's TCI (vid and pcp).
    SetVlan {
        /// New TCI (pcp << 13 | vid).
        tci: u16,
    },
    /// Pop the outer VLAN tag.
    PopVlan,
    /// Set the tunnel metadata used by a later output to a tunnel port.
    SetTunnel {
        /// VNI.
        tun_id: u64,
        /// Outer source (0 = the port's local_ip).
        src: u32,
        /// Outer destination (remote VTEP).
        dst: u32,
    },
    /// Record the IPv4 next hop for a later output to a port that resolves
    /// next hops itself (ARP on the uplink, `route::uplink`); 0 clears it.
    /// Emitted by the `route` action when the next hop has no static MAC.
    SetNextHop(u32),
    /// Send an ICMP time exceeded about the packet, as received, back out
    /// of its ingress port from this router address (rate-limited per
    /// polling thread; see `crate::packet::icmp_error`). Translation puts
    /// it first in the list; it leaves the packet itself unchanged.
    IcmpTimeExceeded(crate::packet::icmp_error::ErrorSrc),
    /// Connection tracking (OVS datapath `ct(...)`, then `recirc(id)` when
    /// the OpenFlow `ct` had `table=`). Boxed: rare and large.
    Ct(Box<DpCt>),
}

/// A datapath `ct` action: track the packet as it is at this point; with
/// `recirc`, run a copy through the datapath again with the tracker's
/// answer in its key (the original continues with the following actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpCt {
    /// Zone, commit, mark and label writes.
    pub exec: crate::conntrack::CtExec,
    /// `table=T`: recirculate with `recirc_id = T + 1`.
    pub recirc: Option<u8>,
    /// The packet's metadata as translation had it at the `ct` (in_port,
    /// registers, metadata, tunnel fields): the recirculated key takes
    /// these, with headers re-extracted from the frame and the `ct_*`
    /// fields from the tracker. Translation makes every field it takes
    /// from the megaflow's key exact, so it is the same for every packet
    /// of the megaflow.
    pub frozen: crate::flow::FlowKey,
}
