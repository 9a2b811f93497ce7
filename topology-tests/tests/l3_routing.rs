//! L3 routing with route tables, through the real switchd and flowctl, with
//! the Linux kernel as the independent peer: two pods in two subnets
//! (10.211.1.0/24 and 10.211.2.0/24), each with gateway `.1`, which exists on
//! no wire. The gateway ARP responder flows answer the pods' ARP for it, a
//! `route` flow routes everything sent to the router MAC through the route
//! table (connected routes plus neighbour entries), and the pods see TTL 63
//! across. Deleting a route cuts reachability (counted as `no_route`); adding
//! it back restores it; a restart restores routes from the state directory.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature (pods are veths attached as AF_XDP ports).

use std::sync::{Mutex, MutexGuard, PoisonError};

use topology_tests::{
    ping, require_root, switchd_bin, LeakGuard, Netns, PodLink, Result, Switchd, VethPair,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const ROUTER_MAC: &str = "02:00:00:00:fe:01";
const ROUTER_MAC_HEX: &str = "0x02000000fe01";

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
}

impl Pod {
    fn new(guard: &LeakGuard, name: &str, cidr: &str, mac: &str, gw: &str) -> Result<Pod> {
        let PodLink { ns, veth, host_if } = guard.pod_link(name, cidr, mac)?;
        ns.route_add("default", gw)?;
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
        })
    }

    fn attach(&self, sd: &Switchd, name: &str, ofport: u32) -> Result<()> {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            name,
            "type=afxdp",
            &format!("ifname={}", self.host_if),
            &format!("ofport={ofport}"),
        ])
        .map(drop)
    }
}

/// The ARP responder flow for gateway `gw` (dotted quad), OVS style.
fn arp_responder(gw: &str) -> String {
    let hex: String = gw
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap_or(0)))
        .collect();
    format!(
        "table=0,priority=300,arp,arp_op=1,arp_tpa={gw},actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{ROUTER_MAC},load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:{ROUTER_MAC_HEX}->NXM_NX_ARP_SHA[],load:0x{hex}->NXM_OF_ARP_SPA[],IN_PORT"
    )
}

/// The TTL of the first reply `ping` printed (`ttl=63`).
fn reply_ttl(ns: &Netns, dst: &str) -> Result<Option<u32>> {
    let out = ns.exec(&["ping", "-c", "1", "-W", "2", dst])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok()))
}

#[test]
fn pods_in_two_subnets_route_through_the_route_table() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _serial = serial();
    let guard = LeakGuard::new("l3")?;
    let a = Pod::new(
        &guard,
        "a",
        "10.211.1.2/24",
        "02:00:00:00:01:02",
        "10.211.1.1",
    )?;
    let c = Pod::new(
        &guard,
        "c",
        "10.211.2.2/24",
        "02:00:00:00:02:02",
        "10.211.2.1",
    )?;
    let mut sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    a.attach(&sd, "pod-a", 1)?;
    c.attach(&sd, "pod-c", 2)?;
    for f in [
        arp_responder("10.211.1.1"),
        arp_responder("10.211.2.1"),
        format!("table=0,priority=100,ip,dl_dst={ROUTER_MAC},actions=route"),
    ] {
        sd.flowctl_ok(&["add-flow", "br0", &f])?;
    }
    sd.flowctl_ok(&["set-router-mac", "br0", ROUTER_MAC])?;
    sd.flowctl_ok(&["add-route", "br0", "10.211.1.0/24", "port=1"])?;
    sd.flowctl_ok(&["add-route", "br0", "10.211.2.0/24", "port=2"])?;
    sd.flowctl_ok(&[
        "add-neigh",
        "br0",
        "10.211.1.2",
        "02:00:00:00:01:02",
        "port=1",
    ])?;
    sd.flowctl_ok(&[
        "add-neigh",
        "br0",
        "10.211.2.2",
        "02:00:00:00:02:02",
        "port=2",
    ])?;

    // Across subnets: the pods ARP for their gateway (answered by the
    // responder flows), the switch routes, the kernel on the far side sees
    // TTL 63 and so does the sender for the reply.
    let r = ping(Some(&a.ns), "10.211.2.2", 3)?;
    assert_eq!(r.received, 3, "ping a -> c: {r:?}\n{}", sd.log());
    assert_eq!(reply_ttl(&a.ns, "10.211.2.2")?, Some(63));
    assert_eq!(reply_ttl(&c.ns, "10.211.1.2")?, Some(63));
    let neigh = a.ns.ip(&["neigh", "show", "10.211.1.1", "dev", "eth0"])?;
    assert!(
        neigh.contains(ROUTER_MAC),
        "gateway resolved to the router MAC: {neigh}"
    );

    let routes = sd.flowctl_ok(&["dump-routes", "br0"])?;
    assert!(
        routes.contains("10.211.2.0/24 port 2 scope link"),
        "{routes}"
    );

    // Remove the route to the second subnet: unreachable, counted no_route.
    sd.flowctl_ok(&["del-route", "br0", "10.211.2.0/24"])?;
    let r = ping(Some(&a.ns), "10.211.2.2", 2)?;
    assert_eq!(r.received, 0, "no route, no reply: {r:?}");
    let ports = sd.flowctl_ok(&["dump-ports", "br0", "pod-a"])?;
    assert!(ports.contains("no_route"), "drop counted: {ports}");

    // Add it back (now as a host route via the pod itself): reachable again.
    sd.flowctl_ok(&[
        "add-route",
        "br0",
        "10.211.2.2/32",
        "via",
        "10.211.2.2",
        "port=2",
    ])?;
    let r = ping(Some(&a.ns), "10.211.2.2", 3)?;
    assert_eq!(r.received, 3, "route restored: {r:?}");

    // A restart brings the routes, neighbours and router MAC back.
    sd.restart()?;
    // The AF_XDP sockets are re-attached as switchd starts: the first echo
    // may race the attach, so one warm-up ping is not judged.
    let _ = ping(Some(&a.ns), "10.211.2.2", 1)?;
    let r = ping(Some(&a.ns), "10.211.2.2", 3)?;
    assert_eq!(r.received, 3, "after restart: {r:?}\n{}", sd.log());
    assert_eq!(reply_ttl(&a.ns, "10.211.2.2")?, Some(63));
    drop(sd);
    Ok(())
}
