//! IPv6 gateway neighbour discovery, with the Linux kernel as the independent
//! peer: two pods in two IPv6 subnets (fd00:213:1::/64 and fd00:213:2::/64),
//! each with a default route via its gateway `::1`, an address that exists
//! on no wire. The switch answers the kernel's neighbour solicitations for
//! the gateways with the plain OVS-style responder flows of docs/flowctl.md
//! ("IPv6 gateway ND responder"), and routes between the subnets with a
//! `route` flow. `ping -6` across the subnets works, and the pod's
//! neighbour table shows the gateway at the router MAC, flagged `router`
//! (the NA's R flag).
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature.

use topology_tests::{
    ping, require_root, switchd_bin, LeakGuard, Netns, PodLink, Result, Switchd, VethPair,
};

const ROUTER_MAC: &str = "02:00:00:00:fe:06";

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
}

/// A pod with IPv6 on: the framework's pod link turns IPv6 off to keep the
/// switch quiet, so it is turned back on for the pod's eth0 only, without
/// duplicate address detection (nothing else answers here, and the test
/// should not wait for it).
fn pod(guard: &LeakGuard, name: &str, cidr6: &str, mac: &str, gw6: &str) -> Result<Pod> {
    // A v4 address the framework needs; v4 is not routed in this test.
    let PodLink { ns, veth, host_if } = guard.pod_link(name, "192.0.2.1/32", mac)?;
    ns.run(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.eth0.accept_dad=0",
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.eth0.disable_ipv6=0",
    ])?;
    ns.ip(&["-6", "addr", "add", cidr6, "dev", "eth0", "nodad"])?;
    ns.ip(&["-6", "route", "add", "default", "via", gw6, "dev", "eth0"])?;
    Ok(Pod {
        ns,
        _veth: veth,
        host_if,
    })
}

/// The responder of docs/flowctl.md for gateway `gw`: table 0 turns the NS
/// into an NA, table 40 (reached by `resubmit`, where the packet already is
/// an NA, as `nd_tll` requires) writes the router MAC into the option.
fn nd_responder(gw: &str) -> [String; 2] {
    [
        format!(
            "table=0,priority=300,icmp6,icmp_type=135,icmp_code=0,nd_target={gw},actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{ROUTER_MAC}->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:{gw}->ipv6_src,set_field:255->nw_ttl,set_field:136->icmpv6_type,set_field:0xe0000000->nd_reserved,set_field:2->nd_options_type,resubmit(,40)"
        ),
        format!(
            "table=40,icmp6,icmp_type=136,icmp_code=0,nd_target={gw},actions=set_field:{ROUTER_MAC}->nd_tll,IN_PORT"
        ),
    ]
}

#[test]
fn ping6_across_subnets_resolves_the_gateway_with_our_nd_responder() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("nd6")?;
    let a = pod(
        &guard,
        "a",
        "fd00:213:1::2/64",
        "02:00:00:00:01:02",
        "fd00:213:1::1",
    )?;
    let c = pod(
        &guard,
        "c",
        "fd00:213:2::2/64",
        "02:00:00:00:02:02",
        "fd00:213:2::1",
    )?;
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    for (p, name, no) in [(&a, "pod-a", "1"), (&c, "pod-c", "2")] {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            name,
            "type=afxdp",
            &format!("ifname={}", p.host_if),
            &format!("ofport={no}"),
        ])?;
    }
    let mut flows: Vec<String> = Vec::new();
    flows.extend(nd_responder("fd00:213:1::1"));
    flows.extend(nd_responder("fd00:213:2::1"));
    flows.push(format!(
        "table=0,priority=100,ipv6,dl_dst={ROUTER_MAC},actions=route"
    ));
    for f in &flows {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }
    sd.flowctl_ok(&["set-router-mac", "br0", ROUTER_MAC])?;
    sd.flowctl_ok(&["add-route", "br0", "fd00:213:1::/64", "port=1"])?;
    sd.flowctl_ok(&["add-route", "br0", "fd00:213:2::/64", "port=2"])?;
    for (ip, mac, port) in [
        ("fd00:213:1::2", "02:00:00:00:01:02", "port=1"),
        ("fd00:213:2::2", "02:00:00:00:02:02", "port=2"),
    ] {
        sd.flowctl_ok(&["add-neigh", "br0", ip, mac, port])?;
    }

    let r = ping(Some(&a.ns), "fd00:213:2::2", 3)?;
    assert_eq!(
        r.received,
        3,
        "ping -6 a -> c: {r:?}\n{}\n{}",
        sd.flowctl_ok(&["dump-flows", "br0"])?,
        sd.log()
    );
    // The kernel learnt the gateway from our NA: router MAC, R flag.
    for (p, gw) in [(&a, "fd00:213:1::1"), (&c, "fd00:213:2::1")] {
        let neigh = p.ns.ip(&["-6", "neigh", "show", "dev", "eth0"])?;
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{gw} ")))
            .unwrap_or_default();
        assert!(
            line.contains(&format!("lladdr {ROUTER_MAC}")) && line.contains("router"),
            "gateway {gw} in `ip -6 neigh`:\n{neigh}"
        );
        assert!(
            !line.contains("FAILED") && !line.contains("INCOMPLETE"),
            "{neigh}"
        );
    }
    // The responder flows counted the solicitations they answered.
    let dump = sd.flowctl_ok(&["dump-flows", "br0", "table=40"])?;
    assert!(
        dump.contains("nd_target=fd00:213:1::1") && !dump.contains("n_packets=0,"),
        "{dump}"
    );
    Ok(())
}
