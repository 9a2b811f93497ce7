//! ICMP time exceeded from the pod gateway, checked with the kernel's own
//! `ping -t 1` as the independent peer: two pods in two subnets
//! (10.212.1.0/24 and 10.212.2.0/24, gateways `.1` answered by ARP responder
//! flows), routed by a `route` flow; the bridge has `router-ip=10.212.1.1`.
//! A ping with TTL 1 across subnets expires in the switch, and the pod's ping
//! prints "From 10.212.1.1 ... Time to live exceeded"; the drop is counted as
//! `ttl_exceeded` on the pod's port; a normal ping still gets through.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature.

use topology_tests::{
    ping, require_root, switchd_bin, LeakGuard, Netns, PodLink, Result, Switchd, VethPair,
};

const ROUTER_MAC: &str = "02:00:00:00:fe:02";
const ROUTER_MAC_HEX: &str = "0x02000000fe02";

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
}

fn pod(guard: &LeakGuard, name: &str, cidr: &str, mac: &str, gw: &str) -> Result<Pod> {
    let PodLink { ns, veth, host_if } = guard.pod_link(name, cidr, mac)?;
    ns.route_add("default", gw)?;
    Ok(Pod {
        ns,
        _veth: veth,
        host_if,
    })
}

fn arp_responder(gw: &str) -> String {
    let hex: String = gw
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap_or(0)))
        .collect();
    format!(
        "table=0,priority=300,arp,arp_op=1,arp_tpa={gw},actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{ROUTER_MAC},load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:{ROUTER_MAC_HEX}->NXM_NX_ARP_SHA[],load:0x{hex}->NXM_OF_ARP_SPA[],IN_PORT"
    )
}

#[test]
fn ping_with_ttl_1_gets_time_exceeded_from_the_gateway() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("icte")?;
    let a = pod(
        &guard,
        "a",
        "10.212.1.2/24",
        "02:00:00:00:01:02",
        "10.212.1.1",
    )?;
    let c = pod(
        &guard,
        "c",
        "10.212.2.2/24",
        "02:00:00:00:02:02",
        "10.212.2.1",
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
    for f in [
        arp_responder("10.212.1.1"),
        arp_responder("10.212.2.1"),
        format!("table=0,priority=100,ip,dl_dst={ROUTER_MAC},actions=route"),
    ] {
        sd.flowctl_ok(&["add-flow", "br0", &f])?;
    }
    sd.flowctl_ok(&["set-router-mac", "br0", ROUTER_MAC])?;
    sd.flowctl_ok(&["add-route", "br0", "10.212.1.0/24", "port=1"])?;
    sd.flowctl_ok(&["add-route", "br0", "10.212.2.0/24", "port=2"])?;
    sd.flowctl_ok(&[
        "add-neigh",
        "br0",
        "10.212.1.2",
        "02:00:00:00:01:02",
        "port=1",
    ])?;
    sd.flowctl_ok(&[
        "add-neigh",
        "br0",
        "10.212.2.2",
        "02:00:00:00:02:02",
        "port=2",
    ])?;
    sd.flowctl_ok(&["set-bridge", "br0", "router-ip=10.212.1.1"])?;

    let r = ping(Some(&a.ns), "10.212.2.2", 3)?;
    assert_eq!(r.received, 3, "ping a -> c: {r:?}\n{}", sd.log());

    // TTL 1: expires in the switch; the kernel's ping reports who said so.
    let out = a.ns.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.3",
        "-W",
        "2",
        "-t",
        "1",
        "10.212.2.2",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("From 10.212.1.1") && text.contains("Time to live exceeded"),
        "ping -t 1 output:\n{text}\n{}",
        sd.log()
    );
    let trace = sd.flowctl_ok(&[
        "trace",
        "br0",
        "in_port=1,icmp,dl_src=02:00:00:00:01:02,dl_dst=02:00:00:00:fe:02,nw_src=10.212.1.2,nw_dst=10.212.2.2,nw_ttl=1,icmp_type=8,icmp_code=0",
    ])?;
    assert!(
        trace.contains("ICMP time exceeded sent back to the source from 10.212.1.1"),
        "{trace}"
    );
    let ports = sd.flowctl_ok(&["--json", "dump-ports", "br0", "pod-a"])?;
    assert!(ports.contains("ttl_exceeded"), "{ports}");
    // c never saw the expired probes: its ping still works and nothing else.
    let r = ping(Some(&c.ns), "10.212.1.2", 2)?;
    assert_eq!(r.received, 2, "ping c -> a: {r:?}");
    Ok(())
}
