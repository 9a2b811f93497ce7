//! XDP offload (issue 3): flows between AF_XDP ports with `xdp-offload=true`
//! are forwarded by switchd's XDP program in the kernel, and still behave
//! and count as the flow table says.
//!
//! Each pod is a namespace whose `eth0` is a veth end (as in afxdp_pods.rs)
//! with GRO turned on: a veth only takes XDP redirects into its peer when
//! that peer runs NAPI (GRO or an XDP program, kernel >= 5.13), which is
//! the contract `xdp-offload=true` states (docs/architecture.md "XDP
//! offload"). The tests check L2 switching and routing (MAC rewrite,
//! dec_ttl: the TTL the pods see), TCP through iperf3, that entries exist
//! (`flowctl offload-show`), that dump-flows and dump-ports count offloaded
//! packets, that deleting a flow stops its traffic (the entries are
//! flushed), and the program's life: ours on the interface while a port is
//! there, gone after del-port and after switchd exits, a stale one left by
//! a killed switchd replaced at restart; and that a peer breaking the
//! contract (no NAPI) loses the redirected frames visibly.
//!
//! Root only (each test passes early otherwise); needs `cargo build --bins`.
//! One test at a time (see afxdp_pods.rs).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use topology_tests::{
    iperf3, ping, require_root, switchd_bin, LeakGuard, Netns, PodLink, Result, Switchd, TopoError,
    VethPair,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const ROUTER_MAC: &str = "0a:58:0a:f4:00:01";

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
    ip: String,
    mac: String,
    ofport: u16,
}

impl Pod {
    fn new(
        guard: &LeakGuard,
        name: &str,
        cidr: &str,
        mac: &str,
        gw: Option<&str>,
        ofport: u16,
    ) -> Result<Pod> {
        let PodLink { ns, veth, host_if } = guard.pod_link(name, cidr, mac)?;
        if let Some(gw) = gw {
            ns.route_add("default", gw)?;
        }
        // The offload contract: the pod side runs NAPI (GRO on).
        ns.run(&["ethtool", "-K", "eth0", "gro", "on"])?;
        Pod::finish(ns, veth, host_if, cidr, mac, ofport)
    }

    /// A pod whose eth0 has GRO off (no NAPI): breaks the offload contract.
    fn without_napi(
        guard: &LeakGuard,
        name: &str,
        cidr: &str,
        mac: &str,
        ofport: u16,
    ) -> Result<Pod> {
        let PodLink { ns, veth, host_if } = guard.pod_link(name, cidr, mac)?;
        ns.run(&["ethtool", "-K", "eth0", "gro", "off"])?;
        Pod::finish(ns, veth, host_if, cidr, mac, ofport)
    }

    fn finish(
        ns: Netns,
        veth: VethPair,
        host_if: String,
        cidr: &str,
        mac: &str,
        ofport: u16,
    ) -> Result<Pod> {
        let ip = cidr.split('/').next().unwrap_or(cidr).to_string();
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
            ip,
            mac: mac.to_string(),
            ofport,
        })
    }

    fn attach(&self, sd: &Switchd, name: &str) -> Result<()> {
        let ifname = format!("ifname={}", self.host_if);
        let ofport = format!("ofport={}", self.ofport);
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            name,
            "type=afxdp",
            &ifname,
            &ofport,
            "xdp-offload=true",
        ])
        .map(drop)
    }
}

fn switchd(guard: &LeakGuard) -> Result<Switchd> {
    Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )
}

fn add_flows(sd: &Switchd, flows: &[String]) -> Result<()> {
    for f in flows {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }
    Ok(())
}

fn wait_reachable(from: &Netns, dst: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = ping(Some(from), dst, 1)?;
        if r.received == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TopoError::Other(format!(
                "{dst} not reachable from {} within {within:?}: {}",
                from.name(),
                r.output
            )));
        }
    }
}

fn json_ok(sd: &Switchd, args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = sd.flowctl_ok(&a)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("{args:?} --json: {e}: {out}")))?;
    Ok(v["ok"].clone())
}

/// `flowctl --json offload-show br0`.
fn offload_show(sd: &Switchd) -> Result<serde_json::Value> {
    json_ok(sd, &["offload-show", "br0"])
}

fn entries(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// The kernel-forwarded frames of every program (`hit`).
fn hits(v: &serde_json::Value) -> u64 {
    v["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["hit"].as_u64().unwrap_or(0))
        .sum()
}

fn port_json(sd: &Switchd, port: &str) -> Result<serde_json::Value> {
    let v = json_ok(sd, &["dump-ports", "br0", port])?;
    v["ports"][0]
        .as_object()
        .map(|o| serde_json::Value::Object(o.clone()))
        .ok_or_else(|| TopoError::Other(format!("dump-ports: no port {port}: {v}")))
}

/// n_packets of the flows of `dump-flows br0 FILTER`, summed.
fn flow_packets(sd: &Switchd, filter: &str) -> Result<u64> {
    let v = json_ok(sd, &["dump-flows", "br0", filter])?;
    Ok(v["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["n_packets"].as_u64().unwrap_or(0))
        .sum())
}

fn xdp_prog_id(dev: &str) -> Result<Option<u64>> {
    let out = Netns::host().ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("ip -j link show {dev}: {e}")))?;
    Ok(v[0]["xdp"]["prog"]["id"].as_u64())
}

/// A veth's `ethtool -S` counters whose name ends with `suffix`, summed
/// over queues (`tx_queue_0_xdp_xmit`, `tx_queue_0_xdp_xmit_errors`).
fn ethtool_stat(ns: &Netns, dev: &str, suffix: &str) -> u64 {
    let out = ns.run(&["ethtool", "-S", dev]).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.trim().ends_with(suffix))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

fn arp_responder(gw: &str) -> Result<String> {
    let ip: std::net::Ipv4Addr = gw
        .parse()
        .map_err(|e| TopoError::Other(format!("{gw}: {e}")))?;
    let mac_hex: String = ROUTER_MAC.split(':').collect();
    Ok(format!(
        "priority=100,arp,arp_op=1,arp_tpa={gw},actions=\
         move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{ROUTER_MAC},\
         load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
         move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0x{mac_hex}->NXM_NX_ARP_SHA[],\
         load:0x{:08x}->NXM_OF_ARP_SPA[],IN_PORT",
        u32::from(ip)
    ))
}

fn route_to(to: &Pod) -> String {
    format!(
        "priority=100,ip,dl_dst={ROUTER_MAC},nw_dst={},actions=mod_dl_src:{ROUTER_MAC},\
         mod_dl_dst:{},dec_ttl,output:{}",
        to.ip, to.mac, to.ofport
    )
}

/// Wait (control tick) until offload-show lists at least `n` entries.
fn wait_entries(sd: &Switchd, n: usize) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = offload_show(sd)?;
        if entries(&v).len() >= n || Instant::now() > deadline {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn routed_flows_are_offloaded_with_ttl_counters_and_flushed_on_delete() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xor")?;
    let sd = switchd(&guard)?;
    let a = Pod::new(
        &guard,
        "a",
        "10.247.1.2/24",
        "02:00:0a:f7:01:02",
        Some("10.247.1.1"),
        1,
    )?;
    let b = Pod::new(
        &guard,
        "b",
        "10.247.2.2/24",
        "02:00:0a:f7:02:02",
        Some("10.247.2.1"),
        2,
    )?;
    a.attach(&sd, "pod-a")?;
    b.attach(&sd, "pod-b")?;
    add_flows(
        &sd,
        &[
            arp_responder("10.247.1.1")?,
            arp_responder("10.247.2.1")?,
            route_to(&a),
            route_to(&b),
        ],
    )?;
    wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))?;
    // The first echo of each direction is an upcall; its megaflow is then
    // offloaded within a control tick.
    let v = wait_entries(&sd, 2)?;
    let es = entries(&v);
    assert!(es.len() >= 2, "both directions offloaded: {v}");
    assert!(
        es.iter().all(|e| e["actions"]
            .as_str()
            .unwrap_or("")
            .contains("set(ipv4(ttl=63))")),
        "dec_ttl became a TTL set: {v}"
    );
    let hits0 = hits(&v);

    // Echoes now cross in the kernel, one routed hop each way.
    let r = ping(Some(&a.ns), &b.ip, 5)?;
    assert_eq!((r.transmitted, r.received), (5, 5), "{}", r.output);
    assert_eq!(r.ttl, Some(63), "one routed hop: {}", r.output);
    let v = offload_show(&sd)?;
    assert!(
        hits(&v) >= hits0 + 10,
        "requests and replies forwarded by the XDP program: {v}"
    );

    let t = iperf3(Some(&b.ns), &b.ip, Some(&a.ns), 2, &[])?;
    eprintln!(
        "iperf3 TCP routed, offloaded: {:.0} Mbit/s ({} bytes, {:?} retransmits)",
        t.bits_per_second / 1e6,
        t.bytes,
        t.retransmits
    );
    assert!(t.bits_per_second > 50e6, "{t:?}");
    eprintln!("{}", sd.flowctl_ok(&["offload-show", "br0"])?);
    eprintln!("{}", sd.flowctl_ok(&["dump-ports", "br0"])?);
    let v = offload_show(&sd)?;
    assert_eq!(v["programs"][0]["redirect_fail"].as_u64(), Some(0), "{v}");
    // The frames went out of b's veth as XDP transmits (veth_xdp_xmit), and
    // none was refused (a peer without NAPI would count them here).
    let host = Netns::host();
    let xmit = ethtool_stat(&host, &b.host_if, "_xdp_xmit");
    assert!(xmit > 1000, "XDP redirects into pod b's veth: {xmit}");
    // A peer without NAPI refuses every redirect; a peer with NAPI refuses
    // only what finds its 256-entry ring full, which a TCP burst at line
    // rate can do now and then (TCP retransmits them, as after any full
    // ring). So: errors, if any, are a small fraction of the transmits.
    let errs = ethtool_stat(&host, &b.host_if, "_xdp_xmit_errors")
        + ethtool_stat(&host, &a.host_if, "_xdp_xmit_errors");
    assert!(
        errs * 100 < xmit,
        "XDP transmit errors on the veths ({errs}) are ring-full drops, not refusals ({xmit} sent)"
    );

    // The rule and the ports count what the kernel forwarded.
    let pa = port_json(&sd, "pod-a")?;
    let off_rx = pa["offloaded"]["rx_packets"].as_u64().unwrap_or(0);
    assert!(off_rx > 1000, "pod a's offloaded rx: {pa}");
    assert!(
        pa["stats"]["rx_packets"].as_u64().unwrap_or(0) >= off_rx,
        "dump-ports rx includes offloaded frames: {pa}"
    );
    let pb = port_json(&sd, "pod-b")?;
    assert!(
        pb["offloaded"]["tx_packets"].as_u64().unwrap_or(0) >= off_rx,
        "what a sent offloaded, b transmitted offloaded: {pb}"
    );
    let to_b = flow_packets(&sd, &format!("ip,nw_dst={}", b.ip))?;
    assert!(
        to_b >= off_rx,
        "the route's n_packets ({to_b}) includes the {off_rx} offloaded frames"
    );

    // Deleting the route to b stops the traffic: its entries are flushed.
    sd.flowctl_ok(&[
        "del-flows",
        "--strict",
        "br0",
        &format!("priority=100,ip,dl_dst={ROUTER_MAC},nw_dst={}", b.ip),
    ])?;
    let r = ping(Some(&a.ns), &b.ip, 3)?;
    assert_eq!(r.received, 0, "no route, no reply: {}", r.output);
    let v = offload_show(&sd)?;
    assert!(
        entries(&v).iter().all(|e| !e["match"]
            .as_str()
            .unwrap_or("")
            .contains("nw_dst=10.247.2.2")),
        "no entry toward b after the flow went: {v}"
    );
    assert!(v["flushed"].as_u64().unwrap_or(0) >= 2, "{v}");
    Ok(())
}

#[test]
fn l2_offload_and_the_program_lifecycle() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xol")?;
    let mut sd = switchd(&guard)?;
    let a = Pod::new(&guard, "a", "10.247.3.2/24", "02:00:00:f7:03:02", None, 1)?;
    let b = Pod::new(&guard, "b", "10.247.3.3/24", "02:00:00:f7:03:03", None, 2)?;
    a.attach(&sd, "pod-a")?;
    b.attach(&sd, "pod-b")?;
    add_flows(
        &sd,
        &[
            "priority=100,arp,in_port=1,actions=output:2".to_string(),
            "priority=100,arp,in_port=2,actions=output:1".to_string(),
            format!("priority=100,ip,dl_dst={},actions=output:2", b.mac),
            format!("priority=100,ip,dl_dst={},actions=output:1", a.mac),
        ],
    )?;
    let id_a = xdp_prog_id(&a.host_if)?;
    assert!(id_a.is_some(), "switchd's program is on pod a's veth");
    wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))?;
    let v = wait_entries(&sd, 2)?;
    assert!(entries(&v).len() >= 2, "{v}");
    let r = ping(Some(&a.ns), &b.ip, 3)?;
    assert_eq!((r.transmitted, r.received), (3, 3), "{}", r.output);
    assert_eq!(r.ttl, Some(64), "a switch does not touch the TTL");
    let t = iperf3(Some(&b.ns), &b.ip, Some(&a.ns), 2, &[])?;
    eprintln!(
        "iperf3 TCP L2, offloaded: {:.0} Mbit/s ({} bytes)",
        t.bits_per_second / 1e6,
        t.bytes
    );
    assert!(t.bits_per_second > 50e6, "{t:?}");
    assert!(hits(&offload_show(&sd)?) > 1000);

    // A killed switchd leaves its program behind; the restart replaces it
    // (a fresh program, fresh empty offload table) and traffic flows again.
    let pid = sd.pid().to_string();
    topology_tests::sh("kill", &["-9", &pid])?;
    std::thread::sleep(Duration::from_millis(200));
    let stale = xdp_prog_id(&a.host_if)?;
    assert!(stale.is_some(), "the killed switchd's program stayed");
    sd.restart()?;
    let fresh = xdp_prog_id(&a.host_if)?;
    assert!(
        fresh.is_some() && fresh != stale,
        "restart replaced the stale program: {stale:?} -> {fresh:?}"
    );
    wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))?;

    // del-port takes the program off the interface.
    sd.flowctl_ok(&["del-port", "br0", "pod-a"])?;
    assert_eq!(xdp_prog_id(&a.host_if)?, None, "no program after del-port");
    let v = offload_show(&sd)?;
    assert!(
        entries(&v).is_empty(),
        "entries involving the deleted port were flushed: {v}"
    );
    // switchd's exit takes the last program.
    sd.stop();
    assert_eq!(xdp_prog_id(&b.host_if)?, None, "no program after exit");
    Ok(())
}

/// The rule `xdp-offload=true` states: a veth takes XDP redirects into its
/// peer only when the peer runs NAPI. A pod with GRO off (and no XDP
/// program) breaks it: once its flow is offloaded, the frames redirected to
/// it are lost. What shows it: offload-show's `hit` grows while the
/// output veth's `ethtool -S` `tx_queue_N_xdp_xmit` does not.
#[test]
fn an_offload_port_whose_peer_has_no_napi_loses_the_redirected_frames() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xon")?;
    let sd = switchd(&guard)?;
    let a = Pod::new(&guard, "a", "10.247.4.2/24", "02:00:00:f7:04:02", None, 1)?;
    let b = Pod::without_napi(&guard, "b", "10.247.4.3/24", "02:00:00:f7:04:03", 2)?;
    a.attach(&sd, "pod-a")?;
    b.attach(&sd, "pod-b")?;
    add_flows(
        &sd,
        &[
            "priority=100,arp,in_port=1,actions=output:2".to_string(),
            "priority=100,arp,in_port=2,actions=output:1".to_string(),
            format!("priority=100,ip,dl_dst={},actions=output:2", b.mac),
            format!("priority=100,ip,dl_dst={},actions=output:1", a.mac),
        ],
    )?;
    // The first echo crosses the slow path (userspace transmit works).
    wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))?;
    let v = wait_entries(&sd, 2)?;
    assert!(entries(&v).len() >= 2, "{v}");
    let host = Netns::host();
    let (hits0, xmit0) = (hits(&v), ethtool_stat(&host, &b.host_if, "_xdp_xmit"));
    let r = ping(Some(&a.ns), &b.ip, 3)?;
    let v = offload_show(&sd)?;
    let (hits1, xmit1) = (hits(&v), ethtool_stat(&host, &b.host_if, "_xdp_xmit"));
    assert_eq!(r.received, 0, "redirects into b are lost: {}", r.output);
    // The program redirected the requests (hit), the veth transmitted none
    // of them (veth_xdp_xmit refuses without NAPI: -ENXIO, counted only by
    // the xdp:xdp_devmap_xmit tracepoint): hit - xdp_xmit is the loss.
    assert!(hits1 >= hits0 + 3, "the requests were redirected: {v}");
    assert_eq!(xmit1, xmit0, "and none reached pod b's veth");
    Ok(())
}
