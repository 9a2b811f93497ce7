//! The `ferroswitch` CNI plugin under a node's harder days, driven as a
//! runtime drives it (tests/cni_support):
//!
//! - 20 pods ADDed and DELed concurrently (a node starting a ReplicaSet):
//!   distinct addresses, one port and one cookie per pod, traffic between
//!   a sample of them, and after the concurrent DELs no port, flow, veth or
//!   IP reservation left.
//! - switchd down during DEL: DEL still succeeds (veth and IP released, the
//!   switchd part recorded); once switchd is back, the next invocation
//!   removes the port and flows and reports it (docs/cni.md, DEL).
//! - GC with `cni.dev/valid-attachments` listing some attachments removes
//!   the others, and only of its own network.
//!
//! Root only (each test passes early otherwise); needs `cargo build --bins`
//! (switchd, flowctl, ferroswitch) and containernetworking-plugins. The
//! tests run one at a time: each has a polling switchd of its own.

mod cni_support;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cni_support::{
    attachment_cookie, attachment_name, err, first_ip, flows, flows_with_cookies, have_plugins,
    host_link_exists, switch_ports, wait_reachable, Attachment, NetList, Node, Pod,
};
use serde_json::{json, Value};
use topology_tests::{ping, require_root, Netns, Result};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn runnable() -> Result<bool> {
    Ok(require_root() && have_plugins()?)
}

/// The pod network `10.248.N.0/24` (gateway `.1`): ferroswitch in overlay
/// mode with host-local.
fn pod_net(node: &Node, name: &str, n: u8) -> NetList {
    let ipam = node
        .rt
        .host_local(&format!("10.248.{n}.0/24"), &format!("10.248.{n}.1"));
    NetList::single(name, "1.1.0", node.rt.ferroswitch_conf(ipam, json!({})))
}

/// Flows whose cookie has the plugin's mark (`0xf5` in the top byte).
fn plugin_flows(node: &Node) -> Result<Vec<(u64, String)>> {
    Ok(flows(&node.sd)?
        .into_iter()
        .filter(|(c, _)| c >> 56 == 0xf5)
        .collect())
}

#[test]
fn twenty_pods_added_and_deleted_concurrently_get_distinct_ips_and_leak_nothing() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn6")?;
    let net = pod_net(&node, "fs-cn6", 6);
    const N: usize = 20;
    let nss: Vec<Netns> = (0..N)
        .map(|i| node.netns(&format!("p{i}")))
        .collect::<Result<_>>()?;
    let atts: Vec<Attachment> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| Attachment::pod(&format!("p{i}"), ns, "eth0"))
        .collect();

    let t0 = std::time::Instant::now();
    let results: Vec<Result<Value>> = std::thread::scope(|s| {
        let hs: Vec<_> = atts
            .iter()
            .map(|a| s.spawn(|| net.add(&node.rt, a)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(err("an ADD thread panicked")))
            })
            .collect()
    });
    eprintln!("{N} concurrent ADDs took {:?}", t0.elapsed());
    let mut res = Vec::new();
    for (a, r) in atts.iter().zip(results) {
        res.push(r.map_err(|e| err(format!("ADD {}: {e}", a.container_id)))?);
    }
    let ips: Vec<String> = res.iter().map(first_ip).collect::<Result<_>>()?;
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), N, "distinct addresses: {ips:?}");
    let names: BTreeSet<String> = atts.iter().map(attachment_name).collect();
    assert_eq!(switch_ports(&node.sd)?, names, "one port per pod");
    let cookies: BTreeSet<u64> = atts.iter().map(attachment_cookie).collect();
    let by_cookie: BTreeSet<u64> = plugin_flows(&node)?.iter().map(|(c, _)| *c).collect();
    assert_eq!(by_cookie, cookies, "every pod's flows, and no one else's");
    let reserved = node.rt.reservations("fs-cn6")?;
    assert_eq!(reserved.len(), N, "{reserved:?}");
    for (a, ip) in atts.iter().zip(&ips) {
        assert!(
            reserved
                .iter()
                .any(|(r, who)| r.to_string() == *ip && who.contains(&a.container_id)),
            "{ip} reserved for {}",
            a.container_id
        );
    }
    // Pods added in a crowd work: a sample of pairs ping each other.
    for (from, to) in [(0, N - 1), (N - 1, 0), (7, 13), (3, 16)] {
        if let Err(e) = wait_reachable(&nss[from], &ips[to], Duration::from_secs(5)) {
            let names = [attachment_name(&atts[from]), attachment_name(&atts[to])];
            for n in &names {
                let o = node.sd.flowctl(&["dump-ports", cni_support::BRIDGE, n])?;
                eprintln!("{}", String::from_utf8_lossy(&o.stdout));
                eprintln!(
                    "{}",
                    Netns::host().ip(&["-d", "-s", "link", "show", "dev", n])?
                );
            }
            for i in [from, to] {
                eprintln!("{}", nss[i].ip(&["-s", "link", "show", "dev", "eth0"])?);
            }
            let o = node.sd.flowctl(&["pmd-perf-show", cni_support::BRIDGE])?;
            eprintln!("{}", String::from_utf8_lossy(&o.stdout));
            return Err(e);
        }
        let r = ping(Some(&nss[from]), &ips[to], 2)?;
        assert_eq!(r.received, 2, "p{from} -> p{to}: {}", r.output);
    }

    let dels: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = atts
            .iter()
            .zip(&res)
            .map(|(a, r)| s.spawn(|| net.del(&node.rt, a, Some(r))))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(err("a DEL thread panicked")))
            })
            .collect()
    });
    eprintln!("{N} concurrent DELs done after {:?}", t0.elapsed());
    for (a, d) in atts.iter().zip(dels) {
        d.map_err(|e| err(format!("DEL {}: {e}", a.container_id)))?;
    }
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new(), "ports gone");
    assert_eq!(plugin_flows(&node)?, vec![], "flows gone");
    assert_eq!(node.rt.reservations("fs-cn6")?, vec![], "IPs released");
    for n in &names {
        assert!(!host_link_exists(n), "veth {n} gone");
    }
    Ok(())
}

#[test]
fn del_while_switchd_is_down_succeeds_and_the_next_call_finishes_the_cleanup() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let mut node = Node::start("cn7")?;
    let net = pod_net(&node, "fs-cn7", 7);
    let (ns_a, ns_b) = (node.netns("a")?, node.netns("b")?);
    let a = Pod::add(&node, &net, Attachment::pod("a", &ns_a, "eth0"))?;
    let b = Pod::add(&node, &net, Attachment::pod("b", &ns_b, "eth0"))?;
    let a_name = attachment_name(&a.att);

    node.sd.stop();
    net.del(&node.rt, &a.att, a.result.as_ref())?;
    // What does not need switchd is done at once.
    assert!(!host_link_exists(&a_name), "veth {a_name} removed");
    let reserved = node.rt.reservations("fs-cn7")?;
    assert_eq!(reserved.len(), 1, "a's IP released: {reserved:?}");
    let pending = node.rt.state_dir.join("pending");
    let recorded = std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0);
    assert!(
        recorded > 0,
        "the switchd part is recorded in {}",
        pending.display()
    );
    // A repeated DEL while switchd is still down succeeds as well.
    net.del(&node.rt, &a.att, a.result.as_ref())?;
    // An ADD while switchd is down is "try again later" (11), and takes
    // nothing: no veth, no address.
    let ns_x = node.netns("x")?;
    let x = Attachment::pod("x", &ns_x, "eth0");
    let r = net.add_reply(&node.rt, &x)?;
    let (code, msg, _) = r.error()?;
    assert_eq!(code, 11, "ADD with switchd down: {msg}");
    assert!(
        !host_link_exists(&attachment_name(&x)),
        "no veth left by the failed ADD"
    );
    assert_eq!(
        ns_x.links()?,
        vec!["lo".to_string()],
        "nothing left in the pod"
    );
    assert_eq!(
        node.rt.reservations("fs-cn7")?.len(),
        1,
        "the failed ADD's IP released"
    );

    node.sd.restart()?;
    let show = node.sd.flowctl_ok(&["show", cni_support::BRIDGE])?;
    eprintln!("after restart, before any plugin call:\n{show}");
    // The next invocation that reaches switchd does the rest and says so.
    let st = net.status(&node.rt)?;
    st[0].ok_empty()?;
    eprintln!("STATUS stderr: {}", st[0].stderr.trim());
    let ports = switch_ports(&node.sd)?;
    assert!(!ports.contains(&a_name), "a's port removed: {ports:?}");
    assert!(ports.contains(&attachment_name(&b.att)), "b's port kept");
    assert_eq!(
        flows_with_cookies(&node.sd, &a.cookies)?,
        Vec::<String>::new()
    );
    assert!(
        !flows_with_cookies(&node.sd, &b.cookies)?.is_empty(),
        "b's flows kept"
    );
    let left = std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "nothing pending any more");
    let log = std::fs::read_to_string(node.rt.state_dir.join("cleanup.log")).unwrap_or_default();
    assert!(
        log.contains(&a_name),
        "the deferred cleanup is reported in cleanup.log: {log:?}"
    );
    assert!(
        st[0].stderr.contains(&a_name),
        "and on stderr of the call that did it: {:?}",
        st[0].stderr
    );

    // The switch is healthy: b and a new pod ping each other.
    let ns_c = node.netns("c")?;
    let c = Pod::add(&node, &net, Attachment::pod("c", &ns_c, "eth0"))?;
    wait_reachable(&ns_c, &b.ip()?, Duration::from_secs(5))?;
    for p in [&b, &c] {
        net.del(&node.rt, &p.att, p.result.as_ref())?;
    }
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new());
    assert_eq!(plugin_flows(&node)?, vec![]);
    assert_eq!(node.rt.reservations("fs-cn7")?, vec![]);
    Ok(())
}

#[test]
fn gc_removes_the_attachments_not_listed_as_valid() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn8")?;
    let net = pod_net(&node, "fs-cn8", 8);
    let nss: Vec<Netns> = ["a", "b", "c"]
        .iter()
        .map(|n| node.netns(n))
        .collect::<Result<_>>()?;
    let mut pods = Vec::new();
    for (n, ns) in ["a", "b", "c"].iter().zip(&nss) {
        pods.push(Pod::add(&node, &net, Attachment::pod(n, ns, "eth0"))?);
    }
    // GC of another network touches none of ours.
    let other = pod_net(&node, "fs-cn8-other", 9);
    for r in other.gc(&node.rt, &[])? {
        r.ok_empty()?;
    }
    assert_eq!(switch_ports(&node.sd)?.len(), 3);
    assert_eq!(node.rt.reservations("fs-cn8")?.len(), 3);

    // The older spelling alone (`cni.dev/attachments`, what the first 1.1
    // runtimes sent) lists a and b: c is stale and goes.
    for r in net.gc_keys(
        &node.rt,
        &[&pods[0].att, &pods[1].att],
        &["cni.dev/attachments"],
    )? {
        r.ok_empty()?;
    }
    let c_name = attachment_name(&pods[2].att);
    assert!(
        !switch_ports(&node.sd)?.contains(&c_name),
        "GC removed c's port"
    );
    assert_eq!(node.rt.reservations("fs-cn8")?.len(), 2);
    // The spec's key alone: only a is still valid, b goes too.
    for r in net.gc_keys(&node.rt, &[&pods[0].att], &["cni.dev/valid-attachments"])? {
        r.ok_empty()?;
    }
    let a_name = attachment_name(&pods[0].att);
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::from([a_name.clone()]));
    for p in &pods[1..] {
        let n = attachment_name(&p.att);
        assert!(!host_link_exists(&n), "GC removed veth {n}");
        assert_eq!(
            flows_with_cookies(&node.sd, &p.cookies)?,
            Vec::<String>::new()
        );
    }
    let reserved = node.rt.reservations("fs-cn8")?;
    assert_eq!(
        reserved
            .iter()
            .map(|(ip, _)| ip.to_string())
            .collect::<Vec<_>>(),
        vec![pods[0].ip()?],
        "GC released b's and c's addresses"
    );
    // a is untouched and passes CHECK.
    assert!(host_link_exists(&a_name));
    net.check(&node.rt, &pods[0].att, pods[0].result()?)?
        .ok_empty()?;
    // DEL of a GC'ed attachment is still a success.
    net.del(&node.rt, &pods[1].att, pods[1].result.as_ref())?;
    net.del(&node.rt, &pods[0].att, pods[0].result.as_ref())?;
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new());
    assert_eq!(plugin_flows(&node)?, vec![]);
    assert_eq!(node.rt.reservations("fs-cn8")?, vec![]);
    Ok(())
}

/// Hugepages (2 MiB) the DPDK pod's testpmd takes (`-m 128`).
const TESTPMD_MB: u32 = 128;

/// True when dpdk-testpmd and enough free hugepages are there; otherwise
/// says why the test is skipped.
fn have_dpdk() -> bool {
    if std::process::Command::new("dpdk-testpmd")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipping: dpdk-testpmd not installed (scripts/setup.sh installs dpdk-dev)");
        return false;
    }
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .unwrap_or(0);
    let need = TESTPMD_MB / 2 + 16;
    if free < need {
        eprintln!(
            "skipping: {free} free 2 MiB hugepages, need {need} (scripts/setup.sh reserves them)"
        );
        return false;
    }
    true
}

#[test]
fn a_dpdk_pod_on_vhost_user_answers_a_veth_pod_through_the_switch() -> Result<()> {
    if !runnable()? || !have_dpdk() {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn9")?;
    let net = pod_net(&node, "fs-cn9", 9);
    // The DPDK pod: same network (so host-local hands out from one pool),
    // vhost-user interface, sockets in the runtime's shared directory.
    let dpdk_net = NetList::single(
        "fs-cn9",
        "1.1.0",
        node.rt.ferroswitch_conf(
            node.rt.host_local("10.248.9.0/24", "10.248.9.1"),
            json!({ "interfaceType": "vhost-user", "socketDir": node.rt.sock_dir }),
        ),
    );
    let (ns_v, ns_d) = (node.netns("v")?, node.netns("d")?);
    let v = Pod::add(&node, &net, Attachment::pod("v", &ns_v, "eth0"))?;
    let d = Pod::add(&node, &dpdk_net, Attachment::pod("d", &ns_d, "eth0"))?;
    let r = d.result()?;
    let iface = &r["interfaces"][0];
    let sock = iface["socketPath"]
        .as_str()
        .ok_or_else(|| err(format!("no interfaces[0].socketPath in {r}")))?
        .to_string();
    let mac = iface["mac"]
        .as_str()
        .ok_or_else(|| err(format!("no interfaces[0].mac in {r}")))?
        .to_string();
    assert!(
        sock.starts_with(&node.rt.sock_dir.to_string_lossy().into_owned()),
        "the socket is in socketDir: {sock}"
    );
    assert!(
        std::path::Path::new(&sock).exists(),
        "switchd listens on {sock}"
    );
    assert_eq!(
        ns_d.links()?,
        vec!["lo".to_string()],
        "no veth for a DPDK pod"
    );
    let d_ip = d.ip()?;
    assert_eq!(
        d.ports,
        BTreeSet::from([attachment_name(&d.att)]),
        "one vhost-user port"
    );

    // The pod's application: testpmd on a virtio-user port (the client of
    // switchd's socket) with the MAC from the result, answering ARP and
    // ICMP echo (`--forward-mode=icmpecho`). Never without --no-pci: the
    // machine's own NIC is a virtio PCI device.
    let log = node.guard.path("testpmd.log");
    let mut c = ns_d.command("dpdk-testpmd");
    c.args([
        "--lcores",
        "0@0,1@0",
        "--no-pci",
        "--in-memory",
        "--single-file-segments",
    ])
    .args(["-m", &TESTPMD_MB.to_string()])
    .args(["--file-prefix", &format!("fs-cn9-{}", std::process::id())])
    .args(["--log-level", "lib.eal:error"])
    .args(["--vdev", &format!("net_virtio_user0,path={sock},mac={mac}")])
    .args([
        "--",
        "--nb-cores=1",
        "--forward-mode=icmpecho",
        "--total-num-mbufs=4096",
    ])
    .current_dir(node.guard.dir())
    .stdin(std::process::Stdio::piped())
    .stdout(
        std::fs::File::create(&log)
            .map(std::process::Stdio::from)
            .map_err(|e| err(format!("{}: {e}", log.display())))?,
    )
    .stderr(std::process::Stdio::null());
    // stdin stays open: non-interactive testpmd forwards until it reads a line.
    let mut child = c
        .spawn()
        .map_err(|e| err(format!("starting dpdk-testpmd: {e}")))?;
    let _stdin = child.stdin.take();
    let mut testpmd = topology_tests::ChildGuard::new(child, "testpmd (DPDK pod)");

    let reach = wait_reachable(&ns_v, &d_ip, Duration::from_secs(30));
    if let Err(e) = reach {
        let o = node.sd.flowctl(&["dump-ports", cni_support::BRIDGE])?;
        return Err(err(format!(
            "{e}\nswitch ports:\n{}\ntestpmd:\n{}",
            String::from_utf8_lossy(&o.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        )));
    }
    let p = ping(Some(&ns_v), &d_ip, 3)?;
    assert_eq!((p.transmitted, p.received), (3, 3), "{}", p.output);
    let n = ns_v.ip(&["neigh", "show", &d_ip, "dev", "eth0"])?;
    assert!(
        n.contains(&mac),
        "the DPDK pod answered ARP with its MAC: {n}"
    );
    drop(_stdin);
    let _ = testpmd.wait_timeout(Duration::from_secs(10));

    net.del(&node.rt, &v.att, v.result.as_ref())?;
    dpdk_net.del(&node.rt, &d.att, d.result.as_ref())?;
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new());
    assert_eq!(plugin_flows(&node)?, vec![]);
    assert_eq!(node.rt.reservations("fs-cn9")?, vec![]);
    assert!(
        !std::path::Path::new(&sock).exists(),
        "{sock} removed with the port"
    );
    Ok(())
}
