//! A two-node VXLAN overlay, the way a Kubernetes CNI in overlay mode
//! (Flannel or Calico VXLAN) uses one switchd per node.
//!
//! Topology: an underlay namespace `ul` with a Linux bridge; two nodes, each
//! a switchd (own socket and state directory) whose `vx0` (`type=vxlan`,
//! local_ip 192.168.10.N) has as underlay the host end of a veth into the
//! bridge; two pods per node (MTU 1450, transmit checksum offload off as a
//! CNI sets it), node 1 with 10.244.1.0/24, node 2 with 10.244.2.0/24,
//! gateway 10.244.N.1 answered by an ARP responder flow. Flows per node:
//! pods on the node are switched by MAC (and ARP between them passed
//! across); traffic to the router MAC for a local pod is routed to it;
//! traffic to the other node's pod subnet is sent over VXLAN with
//! `set_field:192.168.10.M->tun_dst,set_field:1->tun_id,output:vx0`, and
//! frames from vx0 are accepted only with `tun_id=1`.
//!
//! Checked: ping pod to pod on one node and across nodes (TTL shows the one
//! routed hop), iperf3 TCP on one node and across nodes (throughput printed,
//! asserted only to be non-zero: speed lives in benches), the underlay
//! neighbour caches, and no encapsulation drops.
//!
//! Root only; needs `cargo build --bins` with the default `afxdp` feature.

use std::time::Duration;

use topology_tests::{
    iperf3, ping, require_root, switchd_bin, LeakGuard, Netns, Result, Switchd, TopoError, VethPair,
};

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
    fn new(guard: &LeakGuard, name: &str, ip: &str, node: u8, idx: u8) -> Result<Pod> {
        let ns = guard.netns(name)?;
        ns.disable_ipv6()?;
        let host_if = guard.ifname(name)?;
        let veth = VethPair::new(&host_if, None, "eth0", Some(&ns))?;
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"),
            "1",
        );
        let mac = format!("02:00:00:00:{node:02x}:{idx:02x}");
        ns.ip(&["link", "set", "dev", "eth0", "address", &mac])?;
        ns.set_mtu("eth0", 1450)?;
        ns.addr_add("eth0", &format!("{ip}/24"))?;
        ns.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        ns.route_add("default", &format!("10.244.{node}.1"))?;
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
            ip: ip.to_string(),
            mac,
            ofport: u16::from(idx),
        })
    }
}

struct Node {
    sd: Switchd,
    _uplink: VethPair,
    pods: Vec<Pod>,
}

const VX0: u16 = 10;

/// Node `n` (1 or 2) with two pods, its uplink in the underlay bridge.
fn node(guard: &LeakGuard, ul: &Netns, n: u8) -> Result<Node> {
    let other = 3 - n;
    let up = guard.ifname(&format!("u{n}"))?;
    let uplink = VethPair::new(&up, None, &format!("n{n}"), Some(ul))?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{up}/disable_ipv6"), "1");
    ul.ip(&["link", "set", &format!("n{n}"), "master", "br-ul"])?;
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path(&format!("sd{n}.sock")),
        &guard.path(&format!("state{n}")),
        &[],
    )?;
    let pods = vec![
        Pod::new(guard, &format!("p{n}a"), &format!("10.244.{n}.2"), n, 1)?,
        Pod::new(guard, &format!("p{n}b"), &format!("10.244.{n}.3"), n, 2)?,
    ];
    for p in &pods {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            &format!("pod{}", p.ofport),
            "type=afxdp",
            &format!("ifname={}", p.host_if),
            &format!("ofport={}", p.ofport),
        ])?;
    }
    sd.flowctl_ok(&[
        "add-port",
        "br0",
        "vx0",
        "type=vxlan",
        &format!("local_ip=192.168.10.{n}"),
        "remote_ip=flow",
        "key=flow",
        &format!("underlay={up}"),
        &format!("ofport={VX0}"),
    ])?;
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
        // Only VNI 1 is this overlay.
        format!("priority=250,in_port={VX0},tun_id=1,ip,dl_dst={ROUTER_MAC},actions=goto_table:1"),
        format!("priority=240,in_port={VX0},actions=drop"),
        format!(
            "priority=200,ip,nw_dst=10.244.{other}.0/24,actions=\
             set_field:192.168.10.{other}->tun_dst,set_field:1->tun_id,output:{VX0}"
        ),
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
    for f in &flows {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }
    Ok(Node {
        sd,
        _uplink: uplink,
        pods,
    })
}

fn tunnel(sd: &Switchd) -> Result<serde_json::Value> {
    let out = sd.flowctl_ok(&["--json", "dump-tunnels", "br0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("dump-tunnels --json: {e}: {out}")))?;
    Ok(v["ok"]["tunnels"][0].clone())
}

#[test]
fn two_nodes_pods_talk_on_one_node_and_across_the_overlay() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("vxo")?;
    let ul = guard.netns("ul")?;
    ul.disable_ipv6()?;
    ul.ip(&["link", "add", "br-ul", "type", "bridge"])?;
    ul.link_up("br-ul")?;
    let n1 = node(&guard, &ul, 1)?;
    let n2 = node(&guard, &ul, 2)?;
    let (a1, b1) = (&n1.pods[0], &n1.pods[1]);
    let c2 = &n2.pods[0];

    // On one node: switched, no hop.
    let r = ping(Some(&a1.ns), &b1.ip, 3)?;
    assert_eq!((r.received, r.ttl), (3, Some(64)), "same node: {r:?}");
    // Across nodes over VXLAN: one routed hop (dec_ttl on the far node).
    let r = ping(Some(&a1.ns), &c2.ip, 5)?;
    assert!(r.received >= 4, "across nodes: {r:?}\n{}", n1.sd.log());
    assert_eq!(r.ttl, Some(63), "{r:?}");
    let r = ping(Some(&c2.ns), &b1.ip, 3)?;
    assert_eq!(r.received, 3, "back across: {r:?}");

    // Each node resolved the other's VTEP on the underlay by itself.
    for (n, other) in [(&n1, "192.168.10.2"), (&n2, "192.168.10.1")] {
        let t = tunnel(&n.sd)?;
        let neigh = &t["neighbours"];
        assert!(
            neigh
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["ip"] == other && e["state"] == "reachable"),
            "{t}"
        );
    }

    // TCP throughput: one node, and across the overlay (MTU 1450 pods).
    let local = iperf3(Some(&b1.ns), &b1.ip, Some(&a1.ns), 3, &[])?;
    let across = iperf3(Some(&c2.ns), &c2.ip, Some(&a1.ns), 3, &[])?;
    eprintln!(
        "iperf3 TCP pod->pod: same node {:.2} Gbit/s, across nodes over VXLAN {:.2} Gbit/s",
        local.bits_per_second / 1e9,
        across.bits_per_second / 1e9
    );
    assert!(local.bits_per_second > 0.0 && across.bits_per_second > 0.0);

    for n in [&n1, &n2] {
        let t = tunnel(&n.sd)?;
        let st = &t["stats"];
        assert!(st["tx_encap"].as_u64() > Some(100), "{t}");
        assert!(st["rx_decap"].as_u64() > Some(100), "{t}");
        for k in [
            "tx_oversize",
            "tx_no_remote",
            "rx_bad_vxlan",
            "rx_bad_outer",
        ] {
            assert_eq!(st[k].as_u64(), Some(0), "{k}: {t}");
        }
    }
    // Tidy up before the guard checks for leftovers.
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
