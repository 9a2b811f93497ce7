//! Tunnels: the `vxlan` port (RFC 7348) and what it needs around it.
//!
//! - [`encap`]: in-place VXLAN/UDP/IPv4/Ethernet encapsulation into the
//!   packet's headroom, classification and decapsulation of underlay frames,
//!   the inner-flow hash behind the UDP source port.
//! - [`neigh`]: an IPv4 neighbour cache (ARP) with aging, retries and a
//!   bounded queue per unresolved neighbour; reusable by routed mode.
//! - [`options`]: the `type=vxlan` port options (OVS names).
//! - [`port`]: [`port::VxlanPort`], a [`crate::port::Port`] that owns its
//!   underlay port (AF_XDP on the uplink), answers ARP there, decapsulates
//!   on rx and encapsulates on tx.
//!
//! Frames enter from the datapath (tx, with tunnel metadata set by
//! `set_field:...->tun_id/tun_dst`) and from the underlay (rx); they leave
//! to the underlay and to the datapath (with `tun_id`/`tun_src`/`tun_dst`
//! for the `FlowKey`). Nothing here allocates, locks or makes a syscall per
//! packet, and no input makes it panic.

pub mod encap;
pub mod neigh;
pub mod options;
pub mod port;

pub use neigh::{NeighCache, NeighConfig, NeighView};
pub use options::VxlanOptions;
pub use port::{VxlanHandle, VxlanPort, VxlanStats};
