//! Egress masquerade through conntrack NAT on the real switchd: two pods
//! (AF_XDP ports 1 and 2) reach an "outside" host (a plain veth in its own
//! namespace, the switch's side attached as AF_XDP port 3, the uplink)
//! with the node's address as their source, the way an operator sets it
//! up: the masquerade flows are the ones `ferroswitch-policy masq`
//! compiles from an ip-masq-agent-like configuration, plus the node's own
//! flows (pod traffic to table 50, delivery to pods in table 30).
//!
//! The outside host knows nothing of the pod network (no route to it):
//! only a translated packet can be answered at all. tcpdump in the outside
//! namespace records everything while the pods ping it, open TCP
//! connections (both pods from the same source port 40000: the second
//! must get another port) and exchange UDP datagrams; the servers answer
//! with the address and port they saw. Then: the capture holds only the
//! node's and the outside host's addresses, with good checksums (tshark);
//! `flowctl ct-show` shows each connection's translated reply tuple.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature, tcpdump and tshark.

use std::process::Stdio;
use std::time::Duration;

use topology_tests::{
    bin_dir, ping, require_root, ChildGuard, LeakGuard, Netns, PodLink, Result, Switchd, TopoError,
    VethPair,
};

const NODE_IP: &str = "198.18.0.2";
const NODE_MAC: &str = "02:00:00:00:31:01";
const OUT_IP: &str = "198.18.0.1";
const OUT_MAC: &str = "02:00:00:00:31:02";
const GW_IP: &str = "10.233.31.1";
const GW_MAC: &str = "02:00:00:00:31:fe";
const PODS: [(&str, &str, &str, u16); 2] = [
    ("a", "10.233.31.10", "02:00:00:00:31:0a", 1),
    ("b", "10.233.31.11", "02:00:00:00:31:0b", 2),
];
const ZONE: u16 = 65280;

/// Answer each TCP connection on 8080 and each UDP datagram on 5353 with
/// the peer address and port seen (2 minutes at most; killed when the test
/// ends).
const SERVER: &str = r#"
import socket, select, time
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(('0.0.0.0', 8080))
t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('0.0.0.0', 5353))
end = time.time() + 120
while time.time() < end:
    r, _, _ = select.select([t, u], [], [], 0.5)
    for s in r:
        if s is t:
            c, a = t.accept()
            c.sendall(('%s:%d\n' % a).encode())
            c.close()
        else:
            d, a = u.recvfrom(64)
            u.sendto(('%s:%d' % a).encode(), a)
"#;

/// argv: proto (tcp|udp), dst, dport, sport. Prints "got ADDR:PORT" (what
/// the server saw) or "failed ERROR".
const CLIENT: &str = r#"
import socket, sys
proto, dst, dport, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
try:
    if proto == 'tcp':
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(3)
        s.bind(('0.0.0.0', sport))
        s.connect((dst, dport))
        print('got', s.recv(64).decode().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.bind(('0.0.0.0', sport))
        s.sendto(b'q', (dst, dport))
        print('got', s.recv(64).decode().strip())
except Exception as e:
    print('failed', type(e).__name__)
"#;

struct Host {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
}

fn host(guard: &LeakGuard, name: &str, cidr: &str, mac: &str) -> Result<Host> {
    let PodLink { ns, veth, host_if } = guard.pod_link(name, cidr, mac)?;
    Ok(Host {
        ns,
        _veth: veth,
        host_if,
    })
}

fn attach(sd: &Switchd, h: &Host, name: &str, ofport: u16) -> Result<()> {
    sd.flowctl_ok(&[
        "add-port",
        "br0",
        name,
        "type=afxdp",
        &format!("ifname={}", h.host_if),
        &format!("ofport={ofport}"),
    ])
    .map(drop)
}

fn client(h: &Host, proto: &str, dport: u16, sport: u16) -> Result<String> {
    let out = h.ns.exec(&[
        "python3",
        "-c",
        CLIENT,
        proto,
        OUT_IP,
        &dport.to_string(),
        &sport.to_string(),
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The masquerade flows as `ferroswitch-policy masq` prints them.
fn masq_flows(guard: &LeakGuard) -> Result<Vec<String>> {
    let cfg = guard.path("masq.yaml");
    std::fs::write(
        &cfg,
        format!(
            "nodeIP: {NODE_IP}\nclusterCIDR: 10.233.0.0/16\nnonMasqueradeCIDRs: []\n\
             uplinkPort: 3\nzone: {ZONE}\n\
             output: \"mod_dl_src:{NODE_MAC},mod_dl_dst:{OUT_MAC},output:3\"\n"
        ),
    )
    .map_err(|e| TopoError::Other(format!("writing {}: {e}", cfg.display())))?;
    let out = std::process::Command::new(bin_dir()?.join("ferroswitch-policy"))
        .arg("masq")
        .arg(&cfg)
        .output()
        .map_err(|e| TopoError::Other(format!("ferroswitch-policy: {e}")))?;
    if !out.status.success() {
        return Err(TopoError::Other(format!(
            "ferroswitch-policy masq: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("table="))
        .map(str::to_string)
        .collect())
}

#[test]
fn masquerade_hides_pods_behind_the_node_address() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("nms")?;
    let sd = Switchd::start(
        &topology_tests::switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    let pods: Vec<Host> = PODS
        .iter()
        .map(|(n, ip, mac, _)| host(&guard, n, &format!("{ip}/24"), mac))
        .collect::<Result<_>>()?;
    let out = host(&guard, "out", &format!("{OUT_IP}/24"), OUT_MAC)?;
    for (p, (n, _, _, port)) in pods.iter().zip(PODS) {
        attach(&sd, p, &format!("pod-{n}"), port)?;
        p.ns.neigh_add("eth0", GW_IP, GW_MAC)?;
        p.ns.route_add("default", GW_IP)?;
    }
    attach(&sd, &out, "uplink", 3)?;
    // The outside host answers the node address; it has no route to pods.
    out.ns.neigh_add("eth0", NODE_IP, NODE_MAC)?;

    let mut flows = masq_flows(&guard)?;
    assert!(
        flows.iter().any(|f| f.contains("nat(src=198.18.0.2)")),
        "{flows:?}"
    );
    for (_, ip, mac, port) in PODS {
        flows.push(format!(
            "table=0,priority=10,ip,in_port={port},actions=goto_table:50"
        ));
        flows.push(format!(
            "table=30,priority=10,ip,nw_dst={ip},actions=mod_dl_src:{GW_MAC},mod_dl_dst:{mac},output:{port}"
        ));
    }
    for f in &flows {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }

    let pcap = guard.path("out.pcap");
    let pcap_s = pcap.to_string_lossy().to_string();
    let mut cap = out.ns.command("tcpdump");
    cap.args(["-i", "eth0", "-U", "-n", "-w", &pcap_s, "ip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let tcpdump = ChildGuard::new(
        cap.spawn()
            .map_err(|e| TopoError::Other(format!("tcpdump: {e}")))?,
        "tcpdump",
    );
    let _server = ChildGuard::new(out.ns.spawn(&["python3", "-c", SERVER])?, "server");
    out.ns.wait_listening(8080, Duration::from_secs(20))?;
    // tcpdump's start.
    std::thread::sleep(Duration::from_millis(1000));

    // Ping: requests leave as the node, replies find the pod.
    for p in &pods {
        let r = ping(Some(&p.ns), OUT_IP, 3)?;
        assert_eq!(r.received, 3, "ping from a pod: {r:?}\n{}", sd.log());
    }
    // TCP from both pods with the same source port: the server sees the
    // node address, pod a keeps 40000, pod b gets another port.
    let ta = client(&pods[0], "tcp", 8080, 40000)?;
    let tb = client(&pods[1], "tcp", 8080, 40000)?;
    assert_eq!(ta, format!("got {NODE_IP}:40000"), "{}", sd.log());
    assert!(tb.starts_with(&format!("got {NODE_IP}:")), "{tb}");
    assert_ne!(tb, ta, "two pods share one translated tuple");
    // UDP.
    let ua = client(&pods[0], "udp", 5353, 5000)?;
    assert_eq!(ua, format!("got {NODE_IP}:5000"));
    let ub = client(&pods[1], "udp", 5353, 5000)?;
    assert!(
        ub.starts_with(&format!("got {NODE_IP}:")) && ub != ua,
        "{ub}"
    );

    // ct-show: the translated reply tuples, found by the node address too.
    let shown = sd.flowctl_ok(&["ct-show", "br0", &format!("zone={ZONE}")])?;
    let b_port = tb.rsplit(':').next().unwrap_or("?").to_string();
    for want in [
        format!(
            "tcp,orig=(src={},dst={OUT_IP},sport=40000,dport=8080),reply=(src={OUT_IP},dst={NODE_IP},sport=8080,dport=40000)",
            PODS[0].1
        ),
        format!(
            "tcp,orig=(src={},dst={OUT_IP},sport=40000,dport=8080),reply=(src={OUT_IP},dst={NODE_IP},sport=8080,dport={b_port})",
            PODS[1].1
        ),
        format!(
            "udp,orig=(src={},dst={OUT_IP},sport=5000,dport=5353),reply=(src={OUT_IP},dst={NODE_IP},sport=5353,dport=5000)",
            PODS[0].1
        ),
        format!("icmp,orig=(src={},dst={OUT_IP},", PODS[1].1),
    ] {
        assert!(shown.lines().any(|l| l.starts_with(&want)), "{want}\nnot in:\n{shown}");
    }
    let by_node = sd.flowctl_ok(&["ct-show", "br0", NODE_IP])?;
    assert!(by_node.lines().count() >= 6, "{by_node}");
    let stats = sd.flowctl_ok(&["ct-stats", "br0"])?;
    assert!(stats.contains("nat_no_port=0"), "{stats}");

    // What the outside saw: only the node and itself, every checksum good.
    std::thread::sleep(Duration::from_millis(300));
    drop(tcpdump);
    let seen = out.ns.run(&[
        "tshark", "-r", &pcap_s, "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
    ])?;
    let pairs: Vec<&str> = seen.lines().filter(|l| !l.trim().is_empty()).collect();
    // 6 pings and replies, 2 TCP exchanges, 2 UDP exchanges at least.
    assert!(pairs.len() >= 12 + 10 + 4, "capture too small:\n{seen}");
    for l in &pairs {
        let mut it = l.split_whitespace();
        let (s, d) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        assert!(
            (s == NODE_IP && d == OUT_IP) || (s == OUT_IP && d == NODE_IP),
            "the outside saw {s} -> {d}:\n{seen}"
        );
    }
    let bad = out.ns.run(&[
        "tshark",
        "-r",
        &pcap_s,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-Y",
        "ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0 || icmp.checksum.status == 0",
    ])?;
    assert!(bad.trim().is_empty(), "bad checksums:\n{bad}");
    Ok(())
}
