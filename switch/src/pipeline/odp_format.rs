//! OVS datapath notation for [`DpAction`]: what `ofproto/trace` prints after
//! `Datapath actions:` and `ovs-appctl dpctl/dump-flows` after `actions:`.
//!
//! Data enters as datapath actions (from translation or the megaflow cache)
//! and leaves as text, e.g. `set(eth(dst=02:00:00:00:00:02)),set(ipv4(ttl=63)),2`.
//! Only the sub-fields an action changes are printed (OVS prints masked set
//! actions the same way); ports are numbers; an empty list is `drop`.
//! `SetVlan` has no OVS counterpart (OVS pops and pushes): it prints as
//! `set(vlan(vid=V,pcp=P))`. Formatting only: never fails, never panics.

use core::fmt::{self, Display, Formatter, Write as _};
use std::net::Ipv6Addr;

use crate::datapath::DpAction;
use crate::flow::key::{VLAN_PCP_SHIFT, VLAN_VID_MASK};

/// `a,b,c` in datapath notation, or `drop` for an empty list.
pub fn format_dp_actions(actions: &[DpAction]) -> String {
    if actions.is_empty() {
        return "drop".to_string();
    }
    let mut s = String::new();
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Writing into a String cannot fail.
        let _ = write!(s, "{a}");
    }
    s
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Dotted quad of a host-order IPv4 address.
pub(crate) fn fmt_ipv4(a: u32) -> String {
    let b = a.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

/// RFC 5952 text of a network-order IPv6 address.
pub(crate) fn fmt_ipv6(a: &[u8; 16]) -> String {
    Ipv6Addr::from(*a).to_string()
}

/// Collects `name=value` parts and prints them comma-separated.
struct Parts(Vec<String>);

impl Parts {
    fn new() -> Self {
        Parts(Vec::new())
    }
    fn add<T>(&mut self, name: &str, v: Option<T>, f: impl Fn(T) -> String) {
        if let Some(v) = v {
            self.0.push(format!("{name}={}", f(v)));
        }
    }
    fn join(&self) -> String {
        self.0.join(",")
    }
}

fn tci_parts(tci: u16) -> (u16, u16) {
    (tci & VLAN_VID_MASK, tci >> VLAN_PCP_SHIFT)
}

impl Display for DpAction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            // Port numbers as the datapath uses them; reserved ones by name (LOCAL).
            DpAction::Output(p) => f.write_str(&crate::flow::format::format_port(*p)),
            DpAction::SetEth { src, dst } => {
                let mut p = Parts::new();
                p.add("src", src.as_ref(), fmt_mac);
                p.add("dst", dst.as_ref(), fmt_mac);
                write!(f, "set(eth({}))", p.join())
            }
            DpAction::SetIpv4 { src, dst, tos, ttl } => {
                let mut p = Parts::new();
                p.add("src", *src, fmt_ipv4);
                p.add("dst", *dst, fmt_ipv4);
                p.add("tos", *tos, |v| format!("{v:#x}"));
                p.add("ttl", *ttl, |v| v.to_string());
                write!(f, "set(ipv4({}))", p.join())
            }
            DpAction::SetIpv6 {
                src,
                dst,
                tclass,
                hlimit,
                label,
            } => {
                let mut p = Parts::new();
                p.add("src", src.as_ref(), fmt_ipv6);
                p.add("dst", dst.as_ref(), fmt_ipv6);
                p.add("label", *label, |v| format!("{v:#x}"));
                p.add("tclass", *tclass, |v| format!("{v:#x}"));
                p.add("hlimit", *hlimit, |v| v.to_string());
                write!(f, "set(ipv6({}))", p.join())
            }
            DpAction::SetTcp { src, dst } => {
                let mut p = Parts::new();
                p.add("src", *src, |v| v.to_string());
                p.add("dst", *dst, |v| v.to_string());
                write!(f, "set(tcp({}))", p.join())
            }
            DpAction::SetUdp { src, dst } => {
                let mut p = Parts::new();
                p.add("src", *src, |v| v.to_string());
                p.add("dst", *dst, |v| v.to_string());
                write!(f, "set(udp({}))", p.join())
            }
            DpAction::SetIcmp { icmp_type, code } => {
                let mut p = Parts::new();
                p.add("type", *icmp_type, |v| v.to_string());
                p.add("code", *code, |v| v.to_string());
                write!(f, "set(icmp({}))", p.join())
            }
            DpAction::SetNdExt {
                reserved,
                options_type,
            } => {
                let mut p = Parts::new();
                p.add("nd_reserved", *reserved, |v| format!("{v:#x}"));
                p.add("nd_options_type", *options_type, |v| v.to_string());
                write!(f, "set(nd_ext({}))", p.join())
            }
            DpAction::SetNd { target, sll, tll } => {
                let mut p = Parts::new();
                p.add("target", target.as_ref(), fmt_ipv6);
                p.add("sll", sll.as_ref(), fmt_mac);
                p.add("tll", tll.as_ref(), fmt_mac);
                write!(f, "set(nd({}))", p.join())
            }
            DpAction::SetArp {
                op,
                spa,
                tpa,
                sha,
                tha,
            } => {
                let mut p = Parts::new();
                p.add("sip", *spa, fmt_ipv4);
                p.add("tip", *tpa, fmt_ipv4);
                p.add("op", *op, |v| v.to_string());
                p.add("sha", sha.as_ref(), fmt_mac);
                p.add("tha", tha.as_ref(), fmt_mac);
                write!(f, "set(arp({}))", p.join())
            }
            DpAction::PushVlan { tpid, tci } => {
                let (vid, pcp) = tci_parts(*tci);
                if *tpid == crate::flow::key::ethertype::VLAN {
                    write!(f, "push_vlan(vid={vid},pcp={pcp})")
                } else {
                    write!(f, "push_vlan(tpid={tpid:#x},vid={vid},pcp={pcp})")
                }
            }
            DpAction::SetVlan { tci } => {
                let (vid, pcp) = tci_parts(*tci);
                write!(f, "set(vlan(vid={vid},pcp={pcp}))")
            }
            DpAction::PopVlan => f.write_str("pop_vlan"),
            DpAction::SetTunnel { tun_id, src, dst } => {
                let mut s = format!("tun_id={tun_id:#x}");
                if *src != 0 {
                    let _ = write!(s, ",src={}", fmt_ipv4(*src));
                }
                let _ = write!(s, ",dst={}", fmt_ipv4(*dst));
                write!(f, "set(tunnel({s}))")
            }
            DpAction::SetNextHop(ip) => write!(f, "set(nexthop({}))", fmt_ipv4(*ip)),
            DpAction::IcmpTimeExceeded(src) => {
                write!(f, "icmp_time_exceeded(src={})", src.ip())
            }
            DpAction::Ct(c) => {
                // OVS odp-util format_odp_conntrack_action, then recirc().
                let mut p: Vec<String> = Vec::new();
                if c.exec.commit {
                    p.push("commit".into());
                }
                if c.exec.zone != 0 {
                    p.push(format!("zone={}", c.exec.zone));
                }
                if c.exec.mark.1 != 0 {
                    p.push(format!("mark={:#x}/{:#x}", c.exec.mark.0, c.exec.mark.1));
                }
                if c.exec.label.1 != 0 {
                    p.push(format!("label={:#x}/{:#x}", c.exec.label.0, c.exec.label.1));
                }
                if p.is_empty() {
                    f.write_str("ct")?;
                } else {
                    write!(f, "ct({})", p.join(","))?;
                }
                match c.recirc {
                    Some(t) => write!(f, ",recirc({:#x})", u32::from(t) + 1),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovs_notation() {
        let acts = [
            DpAction::SetEth {
                src: None,
                dst: Some([2, 0, 0, 0, 0, 2]),
            },
            DpAction::SetIpv4 {
                src: None,
                dst: None,
                tos: None,
                ttl: Some(63),
            },
            DpAction::Output(2),
        ];
        assert_eq!(
            format_dp_actions(&acts),
            "set(eth(dst=02:00:00:00:00:02)),set(ipv4(ttl=63)),2"
        );
        assert_eq!(format_dp_actions(&[]), "drop");
        assert_eq!(
            DpAction::PushVlan {
                tpid: 0x8100,
                tci: (3 << 13) | 5
            }
            .to_string(),
            "push_vlan(vid=5,pcp=3)"
        );
        assert_eq!(
            DpAction::PushVlan {
                tpid: 0x88a8,
                tci: 10
            }
            .to_string(),
            "push_vlan(tpid=0x88a8,vid=10,pcp=0)"
        );
        assert_eq!(DpAction::PopVlan.to_string(), "pop_vlan");
        assert_eq!(
            DpAction::SetTunnel {
                tun_id: 5,
                src: 0,
                dst: 0x0a00_0002
            }
            .to_string(),
            "set(tunnel(tun_id=0x5,dst=10.0.0.2))"
        );
        assert_eq!(
            DpAction::SetIpv4 {
                src: Some(0x0a00_0001),
                dst: Some(0x0a00_0002),
                tos: Some(0x10),
                ttl: None
            }
            .to_string(),
            "set(ipv4(src=10.0.0.1,dst=10.0.0.2,tos=0x10))"
        );
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 1;
        assert_eq!(
            DpAction::SetIpv6 {
                src: None,
                dst: Some(v6),
                tclass: None,
                hlimit: Some(9),
                label: None
            }
            .to_string(),
            "set(ipv6(dst=2001::1,hlimit=9))"
        );
        assert_eq!(
            DpAction::SetUdp {
                src: None,
                dst: Some(53)
            }
            .to_string(),
            "set(udp(dst=53))"
        );
        assert_eq!(
            DpAction::SetArp {
                op: Some(2),
                spa: None,
                tpa: Some(0x0a00_0001),
                sha: None,
                tha: None
            }
            .to_string(),
            "set(arp(tip=10.0.0.1,op=2))"
        );
    }
}
