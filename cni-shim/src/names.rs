//! Stable names of an attachment: host veth / switchd port name, flow cookie
//! and pod MAC, all derived from (CNI_CONTAINERID, CNI_IFNAME) or the pod IP.
//!
//! DEL and GC must find what ADD created from the environment alone (no
//! prevResult, no state record), so these are pure functions of their inputs;
//! docs/cni.md documents the scheme. Interface names must fit IFNAMSIZ
//! (15 characters plus NUL, linux/if.h).

use std::net::Ipv4Addr;

/// Top byte of every cookie cni-shim installs.
pub const COOKIE_TAG: u64 = 0xf5;

/// FNV-1a 64 (the public-domain Fowler/Noll/Vo hash): stable across builds
/// and platforms, unlike std's SipHash with random keys.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash of an attachment.
pub fn attachment_hash(container_id: &str, ifname: &str) -> u64 {
    let mut s = Vec::with_capacity(container_id.len() + ifname.len() + 1);
    s.extend_from_slice(container_id.as_bytes());
    s.push(b'/');
    s.extend_from_slice(ifname.as_bytes());
    fnv1a64(&s)
}

/// Host veth name, also the switchd port name: `fs` + 12 hex digits.
pub fn port_name(container_id: &str, ifname: &str) -> String {
    format!(
        "fs{:012x}",
        attachment_hash(container_id, ifname) & 0xffff_ffff_ffff
    )
}

/// The cookie on every flow of the attachment.
pub fn cookie(container_id: &str, ifname: &str) -> u64 {
    (COOKIE_TAG << 56) | (attachment_hash(container_id, ifname) & 0x00ff_ffff_ffff_ffff)
}

/// Pod MAC for an IPv4 address: `0a:58:` + the address (locally
/// administered, unicast: bit 1 of the first byte set, bit 0 clear).
/// The scheme lives in `cni_shim::tables` so the policy compiler derives
/// the same MAC.
pub fn pod_mac(ip: Ipv4Addr) -> String {
    cni_shim::tables::pod_mac(ip)
}

/// Whether `name` is a valid Linux interface name (1..=15 bytes, no `/`,
/// whitespace or `:`; not `.` or `..`), as the kernel's dev_valid_name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = port_name("c0ffee", "eth0");
        assert_eq!(a, port_name("c0ffee", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(valid_ifname(&a));
        assert!(a.starts_with("fs"));
        // Second interface of one pod, and another pod, get other names.
        assert_ne!(a, port_name("c0ffee", "net1"));
        assert_ne!(a, port_name("c0ffef", "eth0"));
        // "ab"+"/c" vs "a"+"b/c" cannot collide: ifname has no '/'.
        assert_ne!(cookie("ab", "c"), cookie("a", "bc"));
    }

    #[test]
    fn cookie_carries_tag_and_hash() {
        let c = cookie("c0ffee", "eth0");
        assert_eq!(c >> 56, COOKIE_TAG);
        assert_eq!(
            c & 0x00ff_ffff_ffff_ffff,
            attachment_hash("c0ffee", "eth0") & 0x00ff_ffff_ffff_ffff
        );
        // The port name's 48 bits are the cookie's low 48 bits.
        let n = port_name("c0ffee", "eth0");
        assert_eq!(format!("fs{:012x}", c & 0xffff_ffff_ffff), n);
    }

    #[test]
    fn mac_from_ip() {
        assert_eq!(pod_mac(Ipv4Addr::new(10, 244, 1, 7)), "0a:58:0a:f4:01:07");
    }

    #[test]
    fn ifname_validation() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("net1"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("sixteen-chars-xx"));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a b"));
    }
}
