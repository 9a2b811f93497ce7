//! The OpenFlow table layout of a ferroswitch Kubernetes node, shared by the
//! CNI plugin's per-pod flows (cni-shim's `flows.rs`) and the NetworkPolicy
//! compiler (`policy`), which hooks into it.
//!
//! Nothing enters or leaves here but numbers and the pod MAC scheme: the
//! plugin and the compiler must agree on them, so they are written once.
//! docs/cni.md "Table layout" is the reference; tables must only ever be
//! added, never renumbered (node flows and running switches use them).
//!
//! Forward order (goto_table only goes to a later table, OVS semantics):
//! 0 → 1 → (2) → 3 → 20 | 30 → 40 → (41) → 42 → output. Tables 2 and 41 are
//! entered only through `ct(zone=Z,table=...)` for pods a policy selects.

use std::net::Ipv4Addr;

/// Port security and classification (cni-shim, node flows for tunnels).
pub const T_CLASSIFY: u8 = 0;
/// Egress hook: every IPv4 packet a pod sends, after port security.
/// cni-shim's default passes it on to [`T_EGRESS_OUT`]; the policy compiler
/// sends a selected pod's packets through conntrack into [`T_EGRESS_ACL`].
pub const T_EGRESS_HOOK: u8 = 1;
/// Egress ACL (policy compiler only), entered with ct_zone = the pod's zone.
pub const T_EGRESS_ACL: u8 = 2;
/// After the egress ACL: routed (dl_dst = router MAC) to [`T_ROUTE`], else
/// L2 to [`T_L2`] (cni-shim).
pub const T_EGRESS_OUT: u8 = 3;
/// ARP (cni-shim).
pub const T_ARP: u8 = 10;
/// L2 delivery by destination MAC (cni-shim, overlay mode).
pub const T_L2: u8 = 20;
/// Routing: per-pod delivery routes (cni-shim) and routes to other nodes and
/// out of the cluster (node flows).
pub const T_ROUTE: u8 = 30;
/// Ingress hook: every packet about to be delivered to a pod (dl_dst is the
/// pod's MAC). cni-shim's default delivers; the policy compiler sends a
/// selected pod's packets through conntrack into [`T_INGRESS_ACL`].
pub const T_INGRESS_HOOK: u8 = 40;
/// Ingress ACL (policy compiler only), entered with ct_zone = the pod's zone.
pub const T_INGRESS_ACL: u8 = 41;
/// Delivery after the ingress ACL (cni-shim): `output` to the pod's port.
pub const T_INGRESS_OUT: u8 = 42;
/// Masquerade decision for traffic leaving the cluster (policy compiler's
/// masquerade rules; the node's route out of the cluster goes here).
pub const T_MASQ: u8 = 50;
/// Replies to masqueraded connections, after conntrack un-NATed them.
pub const T_MASQ_RETURN: u8 = 51;
/// After the masquerade: the node's own way out (`route`, `output:N`).
pub const T_MASQ_OUT: u8 = 52;

/// Highest OpenFlow port number a pod can have (OFPP_MAX is 0xff00 in
/// OpenFlow 1.0, the range OVS allocates from). A selected pod's conntrack
/// zone is its port number, so zones above this are free for the node
/// (the masquerade zone defaults to [`DEFAULT_MASQ_ZONE`]).
pub const MAX_POD_OFPORT: u32 = 0xfeff;

/// Conntrack zone of the masquerade rules unless configured otherwise.
pub const DEFAULT_MASQ_ZONE: u16 = 0xff00;

/// Pod MAC for an IPv4 address: `0a:58:` + the address (locally
/// administered, unicast; like ovn-kubernetes). cni-shim gives every pod
/// this MAC, so the policy compiler can derive it from the pod's address.
pub fn pod_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}
