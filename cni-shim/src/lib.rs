//! The library half of cni-shim: what the CNI plugin (`ferroswitch`) and the
//! node agent's NetworkPolicy compiler (`ferroswitch-policy`) share.
//!
//! - [`tables`]: the OpenFlow table layout of a node (docs/cni.md);
//! - [`flows`]: the per-pod flows the plugin installs at ADD;
//! - [`policy`]: NetworkPolicy objects + a pod inventory in, ACL flows out,
//!   and the ip-masq-agent-like masquerade rules (docs/policy.md).
//!
//! Everything here is pure computation on text and values: no sockets, no
//! processes, no root (the one exception, `policy::apply`, talks to
//! switchd's control socket when asked to).

pub mod flows;
pub mod policy;
pub mod tables;
