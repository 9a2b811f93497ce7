//! Three Kubernetes nodes, one switchd each, in the three cluster network
//! models operators choose between: an overlay (VXLAN everywhere, like
//! Flannel or Calico VXLAN mode), flat routing without encapsulation (like
//! Calico BGP mode or kubenet) and Calico's cross-subnet hybrid
//! (encapsulate only towards a node in another underlay subnet).
//!
//! Topology: an underlay namespace `ul`. Overlay and routed: one Linux
//! bridge, nodes 192.168.10.1-3/24. Cross-subnet: two bridges with the
//! kernel routing between them (ip_forward=1), 192.168.10.254 and
//! 192.168.20.254; nodes 1 and 2 in 192.168.10.0/24, node 3 in
//! 192.168.20.0/24. Each node: a switchd with an uplink (ofport 10) on the
//! host end of a veth into `ul`, two pods 10.244.N.2 and .3 (MTU 1450 where
//! VXLAN may carry them, 1500 when routed; transmit checksum offload off
//! as a CNI sets it), gateway 10.244.N.1 answered by an ARP-responder flow.
//! The uplink per mode:
//! - overlay: `vx0 type=vxlan local_ip=192.168.10.N remote_ip=flow key=flow`;
//! - routed: `up0 type=afxdp ifname=... ip=192.168.10.N/24`, and one route
//!   per peer pod subnet `10.244.M.0/24 via 192.168.10.M port=10` used by
//!   the `route` action: switchd resolves the peer's MAC by ARP itself;
//! - cross-subnet: `vx0 ... local_ip=IP/24 gw=GW routed=true`: routes to
//!   peers in the own subnet, VXLAN (through the gateway) to the others.
//!
//! Checked per mode: ping pod to pod on one node (TTL 64) and to both other
//! nodes (TTL 63 over VXLAN, 62 routed: the sender's `route` is a hop
//! too), iperf3 TCP to both other nodes (printed, asserted non-zero), and a
//! capture on the underlay: routed traffic is plain ICMP, never VXLAN; in
//! cross-subnet mode VXLAN appears only towards the other subnet.
//!
//! The modes run one after another (a lock): each switchd busy-polls a CPU.
//! Root only; needs `cargo build --bins` with the default `afxdp` feature.

use std::sync::Mutex;
use std::time::Duration;

use topology_tests::{
    iperf3, ping, require_root, switchd_bin, ChildGuard, LeakGuard, Netns, PodLink, Result,
    Switchd, TopoError, VethPair,
};

const ROUTER_MAC: &str = "0a:58:0a:f4:00:01";
const UPLINK: u16 = 10;

static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Overlay,
    Routed,
    CrossSubnet,
}

/// Node `n`'s underlay address.
fn node_ip(mode: Mode, n: u8) -> String {
    match (mode, n) {
        (Mode::CrossSubnet, 3) => "192.168.20.3".into(),
        _ => format!("192.168.10.{n}"),
    }
}

/// The gateway of node `n`'s underlay subnet (cross-subnet mode).
fn node_gw(n: u8) -> &'static str {
    if n == 3 {
        "192.168.20.254"
    } else {
        "192.168.10.254"
    }
}

/// True when traffic from node `a` to node `b` is encapsulated.
fn encapsulated(mode: Mode, a: u8, b: u8) -> bool {
    match mode {
        Mode::Overlay => true,
        Mode::Routed => false,
        Mode::CrossSubnet => (a == 3) != (b == 3),
    }
}

struct Pod {
    link: PodLink,
    ip: String,
    mac: String,
    ofport: u16,
}

struct Node {
    sd: Switchd,
    _uplink: VethPair,
    pods: Vec<Pod>,
}

fn pod(guard: &LeakGuard, n: u8, idx: u8, mtu: u32) -> Result<Pod> {
    let ip = format!("10.244.{n}.{}", idx + 1);
    let mac = format!("02:00:00:00:{n:02x}:{idx:02x}");
    let link = guard.pod_link(&format!("p{n}{idx}"), &format!("{ip}/24"), &mac)?;
    link.ns.set_mtu("eth0", mtu)?;
    link.ns.route_add("default", &format!("10.244.{n}.1"))?;
    Ok(Pod {
        link,
        ip,
        mac,
        ofport: u16::from(idx),
    })
}

/// Node `n` with two pods, its uplink in the underlay bridge `bridge`.
fn node(guard: &LeakGuard, ul: &Netns, mode: Mode, n: u8, bridge: &str) -> Result<Node> {
    let up = guard.ifname(&format!("u{n}"))?;
    let uplink = VethPair::new(&up, None, &format!("n{n}"), Some(ul))?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{up}/disable_ipv6"), "1");
    ul.ip(&["link", "set", &format!("n{n}"), "master", bridge])?;
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path(&format!("sd{n}.sock")),
        &guard.path(&format!("state{n}")),
        &[],
    )?;
    let mtu = if mode == Mode::Routed { 1500 } else { 1450 };
    let pods = vec![pod(guard, n, 1, mtu)?, pod(guard, n, 2, mtu)?];
    for p in &pods {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            &format!("pod{}", p.ofport),
            "type=afxdp",
            &format!("ifname={}", p.link.host_if),
            &format!("ofport={}", p.ofport),
        ])?;
    }
    let me = node_ip(mode, n);
    let ofport = format!("ofport={UPLINK}");
    let underlay = format!("underlay={up}");
    match mode {
        Mode::Overlay => sd.flowctl_ok(&[
            "add-port",
            "br0",
            "vx0",
            "type=vxlan",
            &format!("local_ip={me}"),
            "remote_ip=flow",
            "key=flow",
            &underlay,
            &ofport,
        ])?,
        Mode::Routed => sd.flowctl_ok(&[
            "add-port",
            "br0",
            "up0",
            "type=afxdp",
            &format!("ifname={up}"),
            &format!("ip={me}/24"),
            &ofport,
        ])?,
        Mode::CrossSubnet => sd.flowctl_ok(&[
            "add-port",
            "br0",
            "vx0",
            "type=vxlan",
            &format!("local_ip={me}/24"),
            "remote_ip=flow",
            "key=flow",
            &format!("gw={}", node_gw(n)),
            "routed=true",
            &underlay,
            &ofport,
        ])?,
    };
    let gw = format!("10.244.{n}.1");
    let gw_hex = format!("{:08x}", u32::from_be_bytes([10, 244, n, 1]));
    let mac_hex: String = ROUTER_MAC.split(':').collect();
    let (a, b) = (&pods[0], &pods[1]);
    let mut flows = vec![
        format!(
            "priority=300,arp,arp_op=1,arp_tpa={gw},actions=\
             move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{ROUTER_MAC},\
             load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
             move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0x{mac_hex}->NXM_NX_ARP_SHA[],\
             load:0x{gw_hex}->NXM_OF_ARP_SPA[],IN_PORT"
        ),
        // From the uplink: the overlay's VNI 1, and (routed) plain IPv4 to
        // this node's pod subnet; nothing else.
        format!("priority=250,in_port={UPLINK},tun_id=1,ip,actions=goto_table:1"),
        format!(
            "priority=245,in_port={UPLINK},tun_id=0,ip,nw_dst=10.244.{n}.0/24,actions=goto_table:1"
        ),
        format!("priority=240,in_port={UPLINK},actions=drop"),
        format!("priority=150,ip,dl_dst={ROUTER_MAC},actions=goto_table:1"),
        format!(
            "priority=100,in_port={},arp,actions=output:{}",
            a.ofport, b.ofport
        ),
        format!(
            "priority=100,in_port={},arp,actions=output:{}",
            b.ofport, a.ofport
        ),
    ];
    if mode == Mode::Overlay {
        // Pure overlay: no unencapsulated traffic is accepted.
        flows.remove(2);
    }
    for p in &pods {
        flows.push(format!(
            "priority=100,dl_dst={},actions=output:{}",
            p.mac, p.ofport
        ));
        flows.push(format!(
            "table=1,priority=100,ip,nw_dst={},actions=mod_dl_src:{ROUTER_MAC},\
             mod_dl_dst:{},dec_ttl,output:{}",
            p.ip, p.mac, p.ofport
        ));
    }
    for m in (1..=3u8).filter(|m| *m != n) {
        let peer = node_ip(mode, m);
        if encapsulated(mode, n, m) {
            flows.push(format!(
                "table=1,priority=50,ip,nw_dst=10.244.{m}.0/24,actions=\
                 set_field:{peer}->tun_dst,set_field:1->tun_id,output:{UPLINK}"
            ));
        } else {
            sd.flowctl_ok(&[
                "add-route",
                "br0",
                &format!("10.244.{m}.0/24"),
                "via",
                &peer,
                &format!("port={UPLINK}"),
            ])?;
            flows.push(format!(
                "table=1,priority=50,ip,nw_dst=10.244.{m}.0/24,actions=route"
            ));
        }
    }
    for f in &flows {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }
    Ok(Node {
        sd,
        _uplink: uplink,
        pods,
    })
}

/// Packets in the capture `file` that match the BPF `filter`.
fn count(ul: &Netns, file: &str, filter: &str) -> Result<usize> {
    let out = ul.run(&["tcpdump", "-nn", "-r", file, filter])?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}

/// Start tcpdump on `dev` in `ul` writing to `file`; wait until it runs.
fn capture(ul: &Netns, dev: &str, file: &str) -> Result<ChildGuard> {
    let child = ul.spawn(&[
        "tcpdump",
        "-nn",
        "-U",
        "--immediate-mode",
        "-i",
        dev,
        "-w",
        file,
    ])?;
    let g = ChildGuard::new(child, "tcpdump");
    for _ in 0..100 {
        if std::path::Path::new(file).exists() {
            // The file exists once the capture is open; give it a moment.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(g);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(TopoError::Other(format!("tcpdump on {dev} did not start")))
}

fn run(mode: Mode, tag: &str) -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let guard = LeakGuard::new(tag)?;
    let ul = guard.netns("ul")?;
    ul.disable_ipv6()?;
    let bridges: [&str; 3] = if mode == Mode::CrossSubnet {
        ul.ip(&["link", "add", "br-a", "type", "bridge"])?;
        ul.ip(&["link", "add", "br-b", "type", "bridge"])?;
        ul.link_up("br-a")?;
        ul.link_up("br-b")?;
        ul.addr_add("br-a", "192.168.10.254/24")?;
        ul.addr_add("br-b", "192.168.20.254/24")?;
        ul.enable_ipv4_forwarding()?;
        ["br-a", "br-a", "br-b"]
    } else {
        ul.ip(&["link", "add", "br-ul", "type", "bridge"])?;
        ul.link_up("br-ul")?;
        ["br-ul"; 3]
    };
    let mut nodes = Vec::new();
    for n in 1..=3u8 {
        nodes.push(node(&guard, &ul, mode, n, bridges[usize::from(n - 1)])?);
    }
    let a1 = &nodes[0].pods[0];
    let b1 = &nodes[0].pods[1];

    // On one node: switched, no hop.
    let r = ping(Some(&a1.link.ns), &b1.ip, 3)?;
    assert_eq!(
        (r.received, r.ttl),
        (3, Some(64)),
        "{mode:?} same node: {r:?}"
    );

    // Capture node 1's uplink on the underlay while pinging across nodes.
    let pcap = guard.path("n1.pcap");
    let pcap = pcap.to_string_lossy().to_string();
    let cap = capture(&ul, "n1", &pcap)?;
    for m in [2u8, 3] {
        let dst = &nodes[usize::from(m - 1)].pods[0];
        let r = ping(Some(&a1.link.ns), &dst.ip, 5)?;
        let hops = if encapsulated(mode, 1, m) { 63 } else { 62 };
        assert!(
            r.received >= 4,
            "{mode:?} node 1 -> node {m}: {r:?}\n{}",
            nodes[0].sd.log()
        );
        assert_eq!(r.ttl, Some(hops), "{mode:?} node 1 -> node {m}: {r:?}");
        // And back, from the far pod to node 1's second pod.
        let r = ping(Some(&dst.link.ns), &b1.ip, 2)?;
        assert_eq!(r.received, 2, "{mode:?} node {m} -> node 1: {r:?}");
    }
    // Node 2 to node 3 (in cross-subnet mode: encapsulated via the gateways).
    let r = ping(Some(&nodes[1].pods[1].link.ns), &nodes[2].pods[1].ip, 2)?;
    assert_eq!(r.received, 2, "{mode:?} node 2 -> node 3: {r:?}");
    std::thread::sleep(Duration::from_millis(200));
    drop(cap);

    // What crossed node 1's uplink: inner ICMP visible as such only when
    // routed; VXLAN (UDP 4789) only towards encapsulated peers.
    for m in [2u8, 3] {
        let pod_net = format!("10.244.{m}.0/24");
        let plain = count(&ul, &pcap, &format!("icmp and net {pod_net}"))?;
        let vx = count(
            &ul,
            &pcap,
            &format!("udp port 4789 and host {}", node_ip(mode, m)),
        )?;
        if encapsulated(mode, 1, m) {
            assert!(vx >= 10, "{mode:?}: node 1 <-> {m} not VXLAN ({vx})");
            assert_eq!(plain, 0, "{mode:?}: node 1 <-> {m} leaked unencapsulated");
        } else {
            assert!(plain >= 10, "{mode:?}: node 1 <-> {m} not routed ({plain})");
            assert_eq!(vx, 0, "{mode:?}: node 1 <-> {m} was encapsulated");
        }
    }

    // The routed uplinks resolved their peers by ARP themselves.
    if mode != Mode::Overlay {
        let out = nodes[0].sd.flowctl_ok(&["--json", "dump-neigh", "br0"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| TopoError::Other(format!("dump-neigh --json: {e}: {out}")))?;
        let rows = v["ok"]["neighbours"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            rows.iter().any(|e| e["ip"] == "192.168.10.2"
                && e["state"] == "reachable"
                && e["learned"] == true
                && e["port"] == UPLINK),
            "{mode:?}: {v}"
        );
        let text = nodes[0].sd.flowctl_ok(&["dump-neigh", "br0"])?;
        assert!(
            text.contains("192.168.10.2 lladdr") && text.contains("REACHABLE"),
            "{text}"
        );
    }

    // TCP throughput across nodes (speed lives in benches: non-zero only).
    for m in [2u8, 3] {
        let dst = &nodes[usize::from(m - 1)].pods[1];
        let r = iperf3(Some(&dst.link.ns), &dst.ip, Some(&a1.link.ns), 2, &[])?;
        eprintln!(
            "iperf3 TCP {mode:?} pod node 1 -> node {m} ({}): {:.2} Gbit/s",
            if encapsulated(mode, 1, m) {
                "VXLAN"
            } else {
                "routed"
            },
            r.bits_per_second / 1e9
        );
        assert!(r.bits_per_second > 0.0, "{mode:?} node 1 -> {m}: {r:?}");
    }

    if mode == Mode::Routed {
        // No static neighbour anywhere: every next hop came from ARP, and
        // nothing waited in vain.
        let out = nodes[0].sd.flowctl_ok(&["--json", "dump-neigh", "br0"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| TopoError::Other(format!("dump-neigh --json: {e}: {out}")))?;
        let st = &v["ok"]["uplinks"][0]["stats"];
        assert!(st["tx_resolved"].as_u64() > Some(100), "{v}");
        assert!(st["arp_requests_sent"].as_u64() >= Some(2), "{v}");
        for k in [
            "tx_neigh_failed",
            "tx_neigh_queue_full",
            "tx_neigh_cache_full",
        ] {
            assert_eq!(st[k].as_u64(), Some(0), "{k}: {v}");
        }
    }
    Ok(())
}

#[test]
fn overlay_three_nodes() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    run(Mode::Overlay, "k8o")
}

#[test]
fn routed_three_nodes_no_encapsulation() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    run(Mode::Routed, "k8r")
}

#[test]
fn cross_subnet_three_nodes_encapsulates_only_across_subnets() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    run(Mode::CrossSubnet, "k8x")
}
