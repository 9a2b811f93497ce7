//! A Kubernetes-style service through a select group, with the Linux kernel
//! as client and servers: the VIP 10.96.0.10:80 is served by three backend
//! pods (10.213.0.11..13) via `group:1`, whose buckets rewrite the
//! destination MAC and IP to a backend and output to it; reply flows (by
//! backend source) rewrite the source back to the VIP. No conntrack: this is
//! stateless DNAT, so what keeps a connection on its backend is the stable
//! hash, and the test checks exactly that property: many TCP connections
//! from distinct client source ports spread over all three backends, the
//! same ports land on the same backends again, and removing one backend's
//! bucket moves only the connections that were on it.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature (pods are veths attached as AF_XDP ports).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use topology_tests::{
    require_root, switchd_bin, ChildGuard, LeakGuard, Netns, PodLink, Result, Switchd, VethPair,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const VIP: &str = "10.96.0.10";
/// The MAC the client's static neighbour entry gives the VIP (no wire has it).
const VIP_MAC: &str = "02:00:00:00:fe:0a";
const CLIENT_IP: &str = "10.213.0.2";
const CLIENT_MAC: &str = "02:00:00:00:00:02";
const BACKENDS: [(&str, &str, &str, u32); 3] = [
    ("be1", "10.213.0.11", "02:00:00:00:00:11", 2),
    ("be2", "10.213.0.12", "02:00:00:00:00:12", 3),
    ("be3", "10.213.0.13", "02:00:00:00:00:13", 4),
];

/// A TCP server on port 80 that answers every connection with its name and
/// closes (so the server side holds TIME_WAIT and client ports are reusable).
const SERVER: &str = "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',80))\ns.listen(128)\nwhile True:\n    c,_=s.accept()\n    c.sendall(sys.argv[1].encode())\n    c.close()\n";

/// Connect to VIP:80 from each source port given; print `port name` lines
/// (`port -` when the connection failed).
const CLIENT: &str = "import socket,sys\nfor p in range(int(sys.argv[1]),int(sys.argv[2])):\n    s=socket.socket()\n    s.settimeout(3)\n    s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n    try:\n        s.bind((sys.argv[3],p))\n        s.connect((sys.argv[4],80))\n        d=b''\n        while True:\n            x=s.recv(64)\n            if not x: break\n            d+=x\n        print(p,d.decode() or '-')\n    except Exception as e:\n        print(p,'-')\n    s.close()\n";

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
}

fn pod(guard: &LeakGuard, name: &str, ip: &str, mac: &str) -> Result<Pod> {
    let PodLink { ns, veth, host_if } = guard.pod_link(name, &format!("{ip}/24"), mac)?;
    Ok(Pod {
        ns,
        _veth: veth,
        host_if,
    })
}

fn attach(sd: &Switchd, p: &Pod, name: &str, ofport: u32) -> Result<()> {
    sd.flowctl_ok(&[
        "add-port",
        "br0",
        name,
        "type=afxdp",
        &format!("ifname={}", p.host_if),
        &format!("ofport={ofport}"),
    ])
    .map(drop)
}

fn bucket(id: usize) -> String {
    let (_, ip, mac, port) = BACKENDS[id];
    format!(
        "bucket=bucket_id:{id},weight:100,actions=mod_dl_dst:{mac},mod_nw_dst:{ip},output:{port}"
    )
}

/// Source port → backend name, for connections from ports `from..to`.
fn connect(client: &Pod, from: u16, to: u16) -> Result<BTreeMap<u16, String>> {
    let out = client.ns.run(&[
        "python3",
        "-c",
        CLIENT,
        &from.to_string(),
        &to.to_string(),
        CLIENT_IP,
        VIP,
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (p, n) = l.split_once(' ')?;
            Some((p.parse().ok()?, n.trim().to_string()))
        })
        .collect())
}

#[test]
fn service_vip_spreads_connections_and_removal_moves_only_its_own() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _serial = serial();
    let guard = LeakGuard::new("slb")?;
    let client = pod(&guard, "cl", CLIENT_IP, CLIENT_MAC)?;
    client
        .ns
        .ip(&["route", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
    client.ns.neigh_add("eth0", VIP, VIP_MAC)?;
    let mut backends = Vec::new();
    let mut servers = Vec::new();
    for (name, ip, mac, _) in BACKENDS {
        let p = pod(&guard, name, ip, mac)?;
        p.ns.neigh_add("eth0", CLIENT_IP, CLIENT_MAC)?;
        servers.push(ChildGuard::new(
            p.ns.spawn(&["python3", "-c", SERVER, name])?,
            name,
        ));
        backends.push(p);
    }
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    attach(&sd, &client, "client", 1)?;
    for (i, (name, _, _, port)) in BACKENDS.iter().enumerate() {
        attach(&sd, &backends[i], name, *port)?;
    }
    let group = format!(
        "group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst),{},{},{}",
        bucket(0),
        bucket(1),
        bucket(2)
    );
    sd.flowctl_ok(&["add-group", "br0", &group])?;
    sd.flowctl_ok(&[
        "add-flow",
        "br0",
        &format!("table=0,priority=100,tcp,in_port=1,nw_dst={VIP},tp_dst=80,actions=group:1"),
    ])?;
    for (_, ip, _, port) in BACKENDS {
        sd.flowctl_ok(&[
            "add-flow",
            "br0",
            &format!("table=0,priority=100,tcp,in_port={port},nw_src={ip},tp_src=80,actions=mod_dl_src:{VIP_MAC},mod_nw_src:{VIP},output:1"),
        ])?;
    }
    // Give the servers a moment to listen.
    std::thread::sleep(std::time::Duration::from_millis(500));

    let first = connect(&client, 41000, 41060)?;
    assert_eq!(first.len(), 60, "{first:?}\n{}", sd.log());
    let failed: Vec<_> = first.iter().filter(|(_, b)| *b == "-").collect();
    assert!(
        failed.is_empty(),
        "connections failed: {failed:?}\n{}",
        sd.log()
    );
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for b in first.values() {
        *per.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "all three backends serve: {per:?}");
    for (b, n) in &per {
        // 20 expected each; 6..=34 is beyond 4 standard deviations.
        assert!((6..=34).contains(n), "{b} served {n} of 60: {per:?}");
    }
    // Same source ports, same backends.
    assert_eq!(connect(&client, 41000, 41060)?, first);

    let stats = sd.flowctl_ok(&["dump-group-stats", "br0"])?;
    assert!(stats.contains("group_id=1,duration="), "{stats}");
    assert!(stats.contains("ref_count=1"), "{stats}");
    let dump = sd.flowctl_ok(&["dump-groups", "br0"])?;
    assert!(
        dump.contains("group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst),bucket=bucket_id:0,weight:100,actions=set_field:02:00:00:00:00:11->eth_dst,set_field:10.213.0.11->ip_dst,output:2"),
        "{dump}"
    );

    // Take be2 out of the service: only its connections move.
    sd.flowctl_ok(&["remove-buckets", "br0", "group_id=1,command_bucket_id=1"])?;
    let after = connect(&client, 41000, 41060)?;
    for (p, b) in &first {
        let now = &after[p];
        if b == "be2" {
            assert!(now == "be1" || now == "be3", "port {p}: {now}");
        } else {
            assert_eq!(now, b, "port {p} moved although {b} stayed");
        }
    }
    drop(servers);
    Ok(())
}
