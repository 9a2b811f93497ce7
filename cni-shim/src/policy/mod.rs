//! The NetworkPolicy compiler and the masquerade rules of a node
//! (docs/policy.md is the user reference, docs/cni.md "Table layout" the
//! tables it fills).
//!
//! Data enters as text (NetworkPolicy objects, an inventory of pods and
//! namespaces, a masquerade configuration; YAML or JSON) and leaves as flows
//! in ovs-ofctl syntax, each carrying a cookie that names its policy, so
//! `flowctl dump-flows br0 cookie=C/-1` shows what a policy allowed and
//! dropped. [`apply`] installs them through switchd's control socket in
//! one atomic bundle. Bad input is an error naming the object; nothing here
//! panics on input or needs root.

pub mod apply;
pub mod compile;
pub mod masq;
pub mod model;
pub mod net;

#[cfg(test)]
mod eval;
#[cfg(test)]
mod tests;

pub use compile::{compile, Compiled, Flow};
pub use masq::MasqConfig;
pub use model::{load_inventory, load_policies, Inventory, NetworkPolicy};

/// Top byte of every cookie the compiler writes (cni-shim's per-pod flows
/// use 0xf5): `del-flows cookie=0xf6../0xff..` selects all of them.
pub const COOKIE_TAG: u64 = 0xf6;
/// Mask selecting the tag byte.
pub const COOKIE_TAG_MASK: u64 = 0xff00_0000_0000_0000;
/// Cookie of the shared plumbing (hooks, established/related, commits of
/// pods not isolated in a direction, invalid drops).
pub const BASE_COOKIE: u64 = COOKIE_TAG << 56;
/// Cookie of the masquerade rules: a tag of its own (0xf7), so applying
/// policies (which replaces every 0xf6 cookie) leaves them alone.
pub const MASQ_COOKIE: u64 = 0xf7 << 56;

/// The cookie of a policy: the tag byte, then the low 56 bits of FNV-1a 64
/// of `namespace/name` (stable across runs and nodes, so a cookie seen on
/// one node names the same policy everywhere). The base value is
/// skipped.
pub fn policy_cookie(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let c = BASE_COOKIE | (h & 0x00ff_ffff_ffff_ffff);
    if c == BASE_COOKIE {
        c ^ 1
    } else {
        c
    }
}

/// Why compiling or applying failed.
#[derive(Debug)]
pub enum PolicyError {
    /// Unreadable or malformed input (file, document, inventory).
    Input(String),
    /// A policy the API server would reject (policy id, reason).
    Policy(String, String),
    /// switchd could not be reached.
    Unreachable(String),
    /// switchd refused the change (nothing changed).
    Switchd(String),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::Input(m) => write!(f, "{m}"),
            PolicyError::Policy(id, m) => write!(f, "NetworkPolicy {id}: {m}"),
            PolicyError::Unreachable(m) => write!(f, "switchd is unreachable: {m}"),
            PolicyError::Switchd(m) => write!(f, "switchd refused the flows: {m}"),
        }
    }
}

impl std::error::Error for PolicyError {}
