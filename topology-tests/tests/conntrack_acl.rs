//! A stateful ACL with connection tracking on the real switchd, two pods
//! over AF_XDP ports, checked with real TCP connections and `flowctl
//! ct-show`, the way an operator would.
//!
//! The runbook: pods a (port 1) and b (port 2); table 0 sends all IP
//! through `ct(table=1,zone=1)` and switches ARP by port; table 1 lets a
//! open TCP connections to b:80 (`ct(commit)`), lets established traffic
//! through both ways, and drops every other new or invalid packet. Both
//! pods run a small TCP server on port 80 (python3) that answers "hello".
//! Then: a connects to b:80 and reads the answer (the replies flow); a's
//! connection to b:81 times out (its SYN is dropped, not refused); b cannot
//! open a connection to a:80; `ct-show zone=1` lists a's connection to b:80
//! and `ct-flush` empties the table.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature.

use topology_tests::{
    hello_server, require_root, switchd_bin, tcp_hello, LeakGuard, Netns, PodLink, Result, Switchd,
    VethPair,
};

const MAC_A: &str = "02:00:00:00:23:0a";
const MAC_B: &str = "02:00:00:00:23:0b";
const IP_A: &str = "10.233.0.10";
const IP_B: &str = "10.233.0.11";

const ACL: &[&str] = &[
    "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)",
    "table=0,priority=5,in_port=1,actions=output:2",
    "table=0,priority=5,in_port=2,actions=output:1",
    "table=1,priority=20,ct_state=+trk+new,tcp,in_port=1,tp_dst=80,actions=ct(commit,zone=1),output:2",
    "table=1,priority=10,ct_state=+trk+est,in_port=1,actions=output:2",
    "table=1,priority=10,ct_state=+trk+est,in_port=2,actions=output:1",
    "table=1,priority=5,ct_state=+trk+new,actions=drop",
    "table=1,priority=5,ct_state=+trk+inv,actions=drop",
];

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
}

impl Pod {
    fn new(guard: &LeakGuard, name: &str, ip: &str, mac: &str) -> Result<Pod> {
        let PodLink { ns, veth, host_if } = guard.pod_link(name, &format!("{ip}/24"), mac)?;
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
        })
    }

    fn attach(&self, sd: &Switchd, name: &str, ofport: u16) -> Result<()> {
        let ifname = format!("ifname={}", self.host_if);
        let ofport = format!("ofport={ofport}");
        sd.flowctl_ok(&["add-port", "br0", name, "type=afxdp", &ifname, &ofport])
            .map(drop)
    }

    /// Connect to `ip:port` from this pod: "got hello" or "failed ...".
    fn connect(&self, ip: &str, port: u16) -> Result<String> {
        tcp_hello(&self.ns, ip, port)
    }
}

#[test]
fn acl_allows_a_to_b_80_replies_flow_b_cannot_open_to_a() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("cta")?;
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    let a = Pod::new(&guard, "a", IP_A, MAC_A)?;
    let b = Pod::new(&guard, "b", IP_B, MAC_B)?;
    a.attach(&sd, "pod-a", 1)?;
    b.attach(&sd, "pod-b", 2)?;
    for f in ACL {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }
    a.ns.neigh_add("eth0", IP_B, MAC_B)?;
    b.ns.neigh_add("eth0", IP_A, MAC_A)?;
    let _srv_b = hello_server(&b.ns, 80)?;
    let _srv_a = hello_server(&a.ns, 80)?;

    // a -> b:80 is allowed, and b's replies (SYN+ACK, data, FIN) come back.
    let r = a.connect(IP_B, 80)?;
    assert_eq!(r, "got hello", "a -> b:80: {r}\n{}", sd.log());
    let shown = sd.flowctl_ok(&["ct-show", "br0", "zone=1"])?;
    let want = format!("tcp,orig=(src={IP_A},dst={IP_B},");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with(&want) && l.contains("dport=80),")),
        "ct-show lists a's connection to b:80:\n{shown}"
    );
    assert!(shown.contains("zone=1"), "{shown}");
    let by_addr = sd.flowctl_ok(&["ct-show", "br0", IP_B])?;
    assert!(by_addr.contains(&want), "{by_addr}");
    let other = sd.flowctl_ok(&["ct-show", "br0", "zone=2"])?;
    assert!(other.trim().is_empty(), "zone 2 is empty: {other}");

    // a -> b:81: the SYN is new and not allowed: dropped, so a times out
    // (no RST from b ever reaches a).
    let r = a.connect(IP_B, 81)?;
    assert!(
        r.starts_with("failed") && r.contains("imeout"),
        "a -> b:81: {r}"
    );

    // b -> a:80: b may not open connections.
    let r = b.connect(IP_A, 80)?;
    assert!(
        r.starts_with("failed") && r.contains("imeout"),
        "b -> a:80: {r}"
    );

    let stats = sd.flowctl_ok(&["ct-stats", "br0"])?;
    assert!(stats.contains("drops: ct_full=0"), "{stats}");
    let flushed = sd.flowctl_ok(&["ct-flush", "br0"])?;
    assert!(flushed.contains("connections flushed"), "{flushed}");
    let after = sd.flowctl_ok(&["ct-show", "br0"])?;
    assert!(after.trim().is_empty(), "after ct-flush: {after}");
    // Still allowed after the flush (a new connection).
    let r = a.connect(IP_B, 80)?;
    assert_eq!(r, "got hello", "{r}");
    // The servers, pods, switchd and then the guard drop here; the guard
    // fails the test if anything it named is left behind.
    Ok(())
}
