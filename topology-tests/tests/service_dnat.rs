//! A ClusterIP service through conntrack DNAT on the real switchd, with the
//! Linux kernel as client and backends: VIP 10.96.31.10:80 over three
//! backend pods (10.214.31.11..13, serving on 8080). The first packet of a
//! connection goes through `ct(zone=31,nat,table=1)`, is `+new`, and goes
//! to select group 1, whose hashed bucket commits it with
//! `nat(dst=BACKEND:8080)`; later packets are translated by `ct(nat)` from
//! the connection's entry, whatever the group's buckets are by then;
//! replies are un-DNATed (they come from the VIP:80, or the client's kernel
//! would reset them).
//!
//! Checked: 60 connections spread over all three backends; a long-lived
//! TCP connection keeps talking to its backend while another backend's
//! bucket is removed (`remove-buckets`) and while its own backend leaves
//! the group (`mod-group`), as kube-proxy's conntrack keeps it; new
//! connections avoid removed backends; on the client side every packet of
//! that connection comes from VIP:80 (tcpdump + tshark); `ct-show` shows
//! its reply tuple from the backend.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature, tcpdump and tshark.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use topology_tests::{
    require_root, switchd_bin, ChildGuard, LeakGuard, Netns, PodLink, Result, Switchd, TopoError,
    VethPair,
};

const VIP: &str = "10.96.31.10";
const VIP_MAC: &str = "02:00:00:00:31:fa";
const CLIENT_IP: &str = "10.214.31.2";
const CLIENT_MAC: &str = "02:00:00:00:31:02";
const ZONE: u16 = 31;
const BACKENDS: [(&str, &str, &str, u32); 3] = [
    ("be1", "10.214.31.11", "02:00:00:00:31:11", 2),
    ("be2", "10.214.31.12", "02:00:00:00:31:12", 3),
    ("be3", "10.214.31.13", "02:00:00:00:31:13", 4),
];

/// A threaded TCP server on 8080: sends its name and a newline, then
/// answers every line with `name:line` until the client closes.
const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
def serve(c):
    try:
        c.sendall((name + '\n').encode())
        f = c.makefile('rb')
        while True:
            l = f.readline()
            if not l:
                break
            c.sendall((name + ':' + l.decode()).encode())
    except Exception:
        pass
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080))
s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Connect to VIP:80 from each source port of argv[1]..argv[2]; print
/// `port name` (`port -` when the connection failed).
const SPREAD: &str = r#"
import socket, sys
for p in range(int(sys.argv[1]), int(sys.argv[2])):
    s = socket.socket()
    s.settimeout(3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('0.0.0.0', p))
        s.connect((sys.argv[3], 80))
        print(p, s.makefile('rb').readline().decode().strip() or '-')
    except Exception:
        print(p, '-')
    s.close()
"#;

/// One long-lived connection from source port argv[1] to argv[3]:80; the
/// backend's greeting goes to file DIR/name0; then, each time DIR/goN
/// appears (N = 1, 2), one `ping` line and the answer to DIR/respN.
const LONG: &str = r#"
import socket, sys, os, time
sport, d, vip = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def put(n, v):
    open(os.path.join(d, n + '.tmp'), 'w').write(v)
    os.rename(os.path.join(d, n + '.tmp'), os.path.join(d, n))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(5)
try:
    s.bind(('0.0.0.0', sport))
    s.connect((vip, 80))
    f = s.makefile('rb')
    put('name0', f.readline().decode().strip())
except Exception as e:
    put('name0', 'failed ' + type(e).__name__)
    sys.exit(0)
for i in (1, 2):
    end = time.time() + 60
    while not os.path.exists(os.path.join(d, 'go%d' % i)) and time.time() < end:
        time.sleep(0.05)
    try:
        s.sendall(b'ping\n')
        put('resp%d' % i, f.readline().decode().strip())
    except Exception as e:
        put('resp%d' % i, 'failed ' + type(e).__name__)
s.close()
"#;

const LONG_PORT: u16 = 43000;

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

fn bucket(i: usize) -> String {
    format!(
        "bucket=bucket_id:{i},actions=ct(commit,zone={ZONE},table=2,nat(dst={}:8080))",
        BACKENDS[i].1
    )
}

/// Source port → backend name, for connections from ports `from..to`.
fn spread(client: &Pod, from: u16, to: u16) -> Result<BTreeMap<u16, String>> {
    let out = client.ns.run(&[
        "python3",
        "-c",
        SPREAD,
        &from.to_string(),
        &to.to_string(),
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

/// The contents of `p` once it exists (at most 60 s: a loaded machine).
fn wait_file(p: &Path) -> Result<String> {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Ok(s) = std::fs::read_to_string(p) {
            return Ok(s.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(TopoError::Other(format!("{} never appeared", p.display())))
}

fn go(dir: &Path, n: u32) -> Result<()> {
    std::fs::write(dir.join(format!("go{n}")), "")
        .map_err(|e| TopoError::Other(format!("go{n}: {e}")))
}

#[test]
fn service_dnat_spreads_and_keeps_open_connections_on_their_backend() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("sdn")?;
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
    sd.flowctl_ok(&[
        "add-group",
        "br0",
        &format!(
            "group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst),{},{},{}",
            bucket(0),
            bucket(1),
            bucket(2)
        ),
    ])?;
    let mut flows = vec![
        // Client to the VIP: through conntrack (translating an existing
        // connection), new ones to the group.
        format!("table=0,priority=100,tcp,in_port=1,nw_dst={VIP},tp_dst=80,ct_state=-trk,actions=ct(zone={ZONE},nat,table=1)"),
        "table=1,priority=10,ct_state=+trk+new,tcp,actions=group:1".to_string(),
        "table=1,priority=5,ct_state=+trk+est,tcp,actions=goto_table:2".to_string(),
        // Backends' answers: un-DNAT, then to the client.
        format!("table=0,priority=90,tcp,ct_state=-trk,actions=ct(zone={ZONE},nat,table=3)"),
        format!("table=3,priority=10,ct_state=+trk+rpl,tcp,actions=mod_dl_src:{VIP_MAC},mod_dl_dst:{CLIENT_MAC},output:1"),
    ];
    // Table 2: deliver a translated packet to its backend.
    for (_, ip, mac, port) in BACKENDS {
        flows.push(format!(
            "table=2,priority=10,tcp,nw_dst={ip},actions=mod_dl_dst:{mac},output:{port}"
        ));
    }
    for f in &flows {
        sd.flowctl_ok(&["add-flow", "br0", f])?;
    }
    for b in &backends {
        b.ns.wait_listening(8080, Duration::from_secs(20))?;
    }

    // Spread.
    let first = spread(&client, 42000, 42060)?;
    assert_eq!(first.len(), 60, "{first:?}\n{}", sd.log());
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for b in first.values() {
        *per.entry(b.as_str()).or_default() += 1;
    }
    assert!(
        !per.contains_key("-"),
        "connections failed: {first:?}\n{}",
        sd.log()
    );
    assert_eq!(per.len(), 3, "all three backends serve: {per:?}");
    for (b, n) in &per {
        // 20 expected each; 6..=34 is beyond 4 standard deviations.
        assert!((6..=34).contains(n), "{b} served {n} of 60: {per:?}");
    }

    // A long-lived connection, captured on the client side.
    let pcap = guard.path("client.pcap");
    let pcap_s = pcap.to_string_lossy().to_string();
    let mut cap = client.ns.command("tcpdump");
    cap.args([
        "-i",
        "eth0",
        "-U",
        "-n",
        "-w",
        &pcap_s,
        &format!("tcp port {LONG_PORT}"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let tcpdump = ChildGuard::new(
        cap.spawn()
            .map_err(|e| TopoError::Other(format!("tcpdump: {e}")))?,
        "tcpdump",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let dir = guard.path("long");
    std::fs::create_dir_all(&dir).map_err(|e| TopoError::Other(format!("{e}")))?;
    let dir_s = dir.to_string_lossy().to_string();
    let mut long = ChildGuard::new(
        client
            .ns
            .spawn(&["python3", "-c", LONG, &LONG_PORT.to_string(), &dir_s, VIP])?,
        "long-lived client",
    );
    let mine = match wait_file(&dir.join("name0")) {
        Ok(m) => m,
        Err(e) => {
            let out = long.output_timeout(Duration::from_secs(1));
            return Err(TopoError::Other(format!(
                "{e}; client: {out:?}\n{}",
                sd.log()
            )));
        }
    };
    let own = BACKENDS
        .iter()
        .position(|b| b.0 == mine)
        .ok_or_else(|| TopoError::Other(format!("long-lived connection: {mine}\n{}", sd.log())))?;
    let other = (own + 1) % 3;
    let last = (own + 2) % 3;
    let shown = sd.flowctl_ok(&["ct-show", "br0", &format!("zone={ZONE}")])?;
    let want = format!(
        "tcp,orig=(src={CLIENT_IP},dst={VIP},sport={LONG_PORT},dport=80),reply=(src={},dst={CLIENT_IP},sport=8080,dport={LONG_PORT}),zone={ZONE},protoinfo=(state=ESTABLISHED)",
        BACKENDS[own].1
    );
    assert!(shown.lines().any(|l| l == want), "{want}\nnot in:\n{shown}");

    // Another backend leaves: the connection stays; new ones avoid it.
    sd.flowctl_ok(&[
        "remove-buckets",
        "br0",
        &format!("group_id=1,command_bucket_id={other}"),
    ])?;
    go(&dir, 1)?;
    assert_eq!(wait_file(&dir.join("resp1"))?, format!("{mine}:ping"));
    let second = spread(&client, 44000, 44030)?;
    assert!(
        second.values().all(|b| b != BACKENDS[other].0 && b != "-"),
        "after removing {}: {second:?}",
        BACKENDS[other].0
    );

    // Its own backend leaves the group (mod-group with the last bucket
    // only): conntrack keeps the open connection there.
    sd.flowctl_ok(&[
        "mod-group",
        "br0",
        &format!(
            "group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst),{}",
            bucket(last)
        ),
    ])?;
    go(&dir, 2)?;
    assert_eq!(wait_file(&dir.join("resp2"))?, format!("{mine}:ping"));
    let third = spread(&client, 44100, 44120)?;
    assert!(
        third.values().all(|b| b == BACKENDS[last].0),
        "only {} is left: {third:?}",
        BACKENDS[last].0
    );
    long.wait_timeout(Duration::from_secs(10))?;

    // On the client side, everything of the long-lived connection came
    // from the VIP:80.
    std::thread::sleep(Duration::from_millis(300));
    drop(tcpdump);
    let seen = client.ns.run(&[
        "tshark",
        "-r",
        &pcap_s,
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
    ])?;
    let mut inbound = 0;
    for l in seen.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(2) == Some(&CLIENT_IP) {
            inbound += 1;
            assert_eq!(
                &f[..2],
                &[VIP, "80"],
                "a reply not from the VIP: {l}\n{seen}"
            );
        } else {
            assert_eq!(&f[2..], &[VIP, "80"], "{l}");
        }
    }
    // SYN+ACK, the greeting and the two answers at least (the close may be
    // the client's RST, which the server does not answer).
    assert!(inbound >= 4, "{seen}");
    drop(servers);
    Ok(())
}
