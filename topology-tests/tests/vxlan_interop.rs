//! VXLAN interop with the Linux kernel as the independent remote VTEP.
//!
//! Topology: a pod (namespace, `eth0` MTU 1450 on a veth whose host end is
//! an AF_XDP port of switchd) and switchd's `vx0` (`type=vxlan`,
//! local_ip 192.168.10.1) whose underlay is the host end of a veth into the
//! namespace `k`. In `k` the kernel owns 192.168.10.2 on `eth1` and a VXLAN
//! device `vxk` (VNI 42, remote 192.168.10.1, port 4789) carrying
//! 10.244.1.10/24. Nothing else is configured on the node's uplink: switchd
//! answers the kernel's ARP for 192.168.10.1 and resolves 192.168.10.2 itself.
//!
//! Checked: ping both ways (so the kernel accepts our frames and we accept
//! its frames); tcpdump in `k` captures our frames and tshark decodes them
//! as VXLAN with VNI 42 carrying ICMP; `flowctl tnl-neigh-show` and
//! `dump-tunnels` show the learned neighbour and the ARP reply we sent; a
//! flow matching another VNI does not take the kernel's frames.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature, tcpdump and tshark.

use std::time::Duration;

use topology_tests::{
    ping, require_root, switchd_bin, ChildGuard, LeakGuard, Result, Switchd, TopoError, VethPair,
};

const POD_MAC: &str = "02:00:00:00:01:02";

fn dump_tunnels(sd: &Switchd) -> Result<serde_json::Value> {
    let out = sd.flowctl_ok(&["--json", "dump-tunnels", "br0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("dump-tunnels --json: {e}: {out}")))?;
    v["ok"]["tunnels"]
        .get(0)
        .cloned()
        .ok_or_else(|| TopoError::Other(format!("dump-tunnels: no tunnel: {out}")))
}

#[test]
fn kernel_vxlan_vtep_and_switchd_ping_both_ways() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("vxi")?;
    // The pod.
    let pod = guard.netns("pod")?;
    pod.disable_ipv6()?;
    let pod_if = guard.ifname("pod")?;
    let _pv = VethPair::new(&pod_if, None, "eth0", Some(&pod))?;
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{pod_if}/disable_ipv6"),
        "1",
    );
    pod.ip(&["link", "set", "dev", "eth0", "address", POD_MAC])?;
    pod.set_mtu("eth0", 1450)?;
    pod.addr_add("eth0", "10.244.1.2/24")?;
    pod.run(&["ethtool", "-K", "eth0", "tx", "off"])?;

    // The kernel VTEP.
    let k = guard.netns("k")?;
    k.disable_ipv6()?;
    let up_if = guard.ifname("up")?;
    let _uv = VethPair::new(&up_if, None, "eth1", Some(&k))?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{up_if}/disable_ipv6"), "1");
    k.addr_add("eth1", "192.168.10.2/24")?;
    k.ip(&[
        "link",
        "add",
        "vxk",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "192.168.10.2",
        "remote",
        "192.168.10.1",
        "dstport",
        "4789",
        "dev",
        "eth1",
    ])?;
    k.set_mtu("vxk", 1450)?;
    k.addr_add("vxk", "10.244.1.10/24")?;
    k.link_up("vxk")?;

    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    sd.flowctl_ok(&[
        "add-port",
        "br0",
        "pod",
        "type=afxdp",
        &format!("ifname={pod_if}"),
        "ofport=1",
    ])?;
    sd.flowctl_ok(&[
        "add-port",
        "br0",
        "vx0",
        "type=vxlan",
        "local_ip=192.168.10.1",
        "remote_ip=flow",
        "key=flow",
        &format!("underlay={up_if}"),
        "ofport=2",
    ])?;
    for f in [
        "table=0,priority=100,in_port=1,actions=set_field:42->tun_id,set_field:192.168.10.2->tun_dst,output:2",
        "table=0,priority=100,in_port=2,tun_id=42,tun_src=192.168.10.2,actions=output:1",
        // Another VNI must not reach the pod.
        "table=0,priority=100,in_port=2,tun_id=43,actions=output:1",
    ] {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }

    // Capture our encapsulated frames on the kernel side.
    let pcap = guard.path("vx.pcap");
    let pcap_s = pcap.to_string_lossy().to_string();
    let mut cap = k.command("tcpdump");
    cap.args([
        "-i",
        "eth1",
        "-U",
        "-c",
        "5",
        "-w",
        &pcap_s,
        "src host 192.168.10.1 and udp dst port 4789",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut tcpdump = ChildGuard::new(
        cap.spawn()
            .map_err(|e| TopoError::Other(format!("tcpdump: {e}")))?,
        "tcpdump",
    );
    std::thread::sleep(Duration::from_millis(1500));

    // Pod -> kernel: our frames are accepted by the kernel's VXLAN device.
    let r = ping(Some(&pod), "10.244.1.10", 3)?;
    assert!(r.received >= 2, "pod -> kernel VTEP: {r:?}\n{}", sd.log());
    // Kernel -> pod: the kernel's frames are accepted by switchd.
    let r = ping(Some(&k), "10.244.1.2", 3)?;
    assert_eq!(r.received, 3, "kernel VTEP -> pod: {r:?}");

    tcpdump.wait_timeout(Duration::from_secs(10))?;
    // The pod's ARP request, then ICMP: decode the ICMP ones.
    let out = k.run(&[
        "tshark",
        "-r",
        &pcap_s,
        "-d",
        "udp.port==4789,vxlan",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        "vxlan && icmp",
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-E",
        "aggregator=/",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "vxlan.vni",
        "-e",
        "eth.src",
        "-e",
        "ip.checksum.status",
    ])?;
    let rows: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        rows.len() >= 3,
        "tshark decoded {} VXLAN/ICMP frames: {out}",
        rows.len()
    );
    for row in &rows {
        // This tshark prints the '/' aggregator as '\\'; accept either.
        let row = row.replace('\\', "/");
        let f: Vec<&str> = row.split(';').collect();
        assert_eq!(f.len(), 7, "{row}");
        // Outer then inner values, '/'-separated.
        assert!(f[0].starts_with("192.168.10.1/10.244.1.2"), "{row}");
        assert!(f[1].starts_with("192.168.10.2/10.244.1.10"), "{row}");
        let sport: u16 = f[2].parse().unwrap_or(0);
        assert!(sport >= 49152, "UDP source port from the flow hash: {row}");
        assert_eq!(f[3], "4789", "{row}");
        assert_eq!(f[4], "42", "VNI: {row}");
        assert!(f[5].ends_with(POD_MAC), "inner source MAC: {row}");
        // 1 = good (outer, then inner).
        assert!(
            f[6].starts_with("1"),
            "outer IPv4 checksum verified good: {row}"
        );
    }

    // The neighbour cache and the counters, as an operator sees them.
    let k_mac = k.mac("eth1")?;
    let neigh = sd.flowctl_ok(&["tnl-neigh-show", "br0"])?;
    assert!(
        neigh.lines().any(|l| l.starts_with("192.168.10.2")
            && l.contains(&k_mac)
            && l.contains("reachable")),
        "{neigh}"
    );
    // The kernel learned our MAC from our own request; make it ask (and
    // rely on our ARP responder for local_ip) by flushing its entry.
    k.ip(&["neigh", "flush", "dev", "eth1"])?;
    let r = ping(Some(&k), "10.244.1.2", 2)?;
    assert_eq!(r.received, 2, "after the kernel re-ARPed for us: {r:?}");
    let t = dump_tunnels(&sd)?;
    let st = &t["stats"];
    assert!(st["arp_replies_sent"].as_u64() >= Some(1), "{t}");
    assert!(st["rx_decap"].as_u64() >= Some(8), "{t}");
    assert!(st["tx_encap"].as_u64() >= Some(8), "{t}");
    assert_eq!(st["rx_bad_vxlan"].as_u64(), Some(0), "{t}");
    assert_eq!(st["tx_oversize"].as_u64(), Some(0), "{t}");
    // The kernel learned our MAC for 192.168.10.1 from our ARP reply.
    let kn = k.ip(&["neigh", "show", "192.168.10.1", "dev", "eth1"])?;
    assert!(
        kn.contains(
            &t["info"]["underlay_mac"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        ),
        "{kn}"
    );

    // Oversize: a 1450-byte inner IP packet + 14 fits the 1500 underlay;
    // a pod that sends larger (MTU raised past the overlay's) is counted.
    pod.set_mtu("eth0", 1500)?;
    let _ = pod.exec(&[
        "ping",
        "-n",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1472",
        "10.244.1.10",
    ])?;
    let t = dump_tunnels(&sd)?;
    assert!(t["stats"]["tx_oversize"].as_u64() >= Some(2), "{t}");
    let r = ping(Some(&pod), "10.244.1.10", 2)?;
    assert!(r.received >= 1, "small frames still pass: {r:?}");
    Ok(())
}
