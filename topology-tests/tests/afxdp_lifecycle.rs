//! AF_XDP ports come and go while traffic flows, any number of times, with
//! no switchd restart (issue 3, "Ports are added and removed while traffic
//! flows without disturbing other ports").
//!
//! What a CNI does on a node: a pod is deleted and another one is created on
//! the same veth name (or the same pod's port is re-added after a config
//! change), every pod of a node goes and new ones come, and all the while
//! the other pods keep talking. The tests check that a port re-added on the
//! interface queue a deleted port used forwards again, that a polling thread
//! whose AF_XDP ports were all deleted takes new ones, that the other pods'
//! pings lose (almost) nothing meanwhile, that no XDP program is left on a
//! deleted port's interface, and that the thread's UMEM frame books
//! (`pmd-perf-show --json`) balance at the end: every frame back in the free
//! list once the ports are gone.
//!
//! Root only (each test passes early otherwise); needs `cargo build --bins`
//! with the default `afxdp` feature. The tests of this file run one at a time.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use topology_tests::{
    ping, require_root, switchd_bin, ChildGuard, LeakGuard, Netns, PodLink, Result, Switchd,
    TopoError, VethPair,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pod: a namespace whose `eth0` is a veth; the host end is an AF_XDP port.
struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
    ip: String,
    mac: String,
    ofport: u32,
    name: String,
}

impl Pod {
    /// Pod `name` with address `net.n/24`, MAC `02:00:00:00:0a:n`, ofport `n`.
    fn new(guard: &LeakGuard, name: &str, net: &str, n: u32) -> Result<Pod> {
        let mac = format!("02:00:00:00:0a:{n:02x}");
        let ip = format!("{net}.{n}");
        let PodLink { ns, veth, host_if } = guard.pod_link(name, &format!("{ip}/24"), &mac)?;
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
            ip,
            mac,
            ofport: n,
            name: format!("pod-{name}"),
        })
    }

    /// `add-port br0 pod-NAME type=afxdp ifname=HOST_IF ofport=N` and the
    /// flow that delivers IPv4 to the pod by destination MAC.
    fn attach(&self, sd: &Switchd) -> Result<()> {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            &self.name,
            "type=afxdp",
            &format!("ifname={}", self.host_if),
            &format!("ofport={}", self.ofport),
        ])?;
        sd.flowctl_ok(&[
            "add-flow",
            "br0",
            &format!(
                "priority=100,ip,dl_dst={},actions=output:{}",
                self.mac, self.ofport
            ),
        ])
        .map(drop)
    }

    fn detach(&self, sd: &Switchd) -> Result<()> {
        sd.flowctl_ok(&["del-port", "br0", &self.name]).map(drop)
    }
}

fn switchd(guard: &LeakGuard, args: &[&str]) -> Result<Switchd> {
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        args,
    )?;
    sd.flowctl_ok(&["add-flow", "br0", "priority=50,arp,actions=FLOOD"])?;
    Ok(sd)
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

/// The id of the XDP program attached to `dev` (None: none attached).
fn xdp_prog_id(dev: &str) -> Result<Option<u64>> {
    let out = Netns::host().ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("ip -j link show {dev}: {e}")))?;
    Ok(v[0]["xdp"]["prog"]["id"].as_u64())
}

/// The UMEM frame books of `pmd-perf-show --json`, summed over threads:
/// `(total, free, fill, user, tx)`.
fn umem_frames(sd: &Switchd) -> Result<(u64, u64, u64, u64, u64)> {
    let out = sd.flowctl_ok(&["--json", "pmd-perf-show", "br0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("pmd-perf-show --json: {e}: {out}")))?;
    let mut t = (0, 0, 0, 0, 0);
    for p in v["ok"]["pmds"].as_array().into_iter().flatten() {
        let u = |k: &str| p["umem"][k].as_u64().unwrap_or(0);
        t.0 += u("total");
        t.1 += u("free");
        t.2 += u("fill");
        t.3 += u("user");
        t.4 += u("tx");
    }
    Ok(t)
}

/// Received count of a finished `ping -q` (0 when the summary is missing).
fn received(ping_out: &str) -> u32 {
    ping_out
        .split(", ")
        .find_map(|f| f.strip_suffix(" received").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Once every port is deleted, every frame of every thread's UMEM is free.
fn assert_books_empty(sd: &Switchd, what: &str) -> Result<()> {
    let (total, free, fill, user, tx) = umem_frames(sd)?;
    assert!(total > 0, "{what}: the thread has a UMEM");
    assert_eq!((free, fill, user, tx), (total, 0, 0, 0), "{what}");
    Ok(())
}

#[test]
fn a_port_deleted_and_readded_on_its_veth_forwards_while_other_pods_keep_pinging() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xlr")?;
    // One polling thread: every port shares its UMEM.
    let mut sd = switchd(&guard, &[])?;
    let net = "10.234.1";
    let pods = [
        Pod::new(&guard, "a", net, 2)?,
        Pod::new(&guard, "b", net, 3)?,
        Pod::new(&guard, "c", net, 4)?,
        Pod::new(&guard, "d", net, 5)?,
    ];
    for p in &pods {
        p.attach(&sd)?;
    }
    let [a, b, c, d] = &pods;
    wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))?;
    wait_reachable(&c.ns, &d.ip, Duration::from_secs(4))?;

    // Pod a pings pod b through the same thread all along.
    let mut a_to_b = ChildGuard::new(
        a.ns.spawn(&["ping", "-n", "-q", "-i", "0.01", "-c", "600", &b.ip])?,
        "ping a->b",
    );
    for round in 1..=5 {
        c.detach(&sd)?;
        // The deleted port's socket and XDP program are gone.
        assert_eq!(
            xdp_prog_id(&c.host_if)?,
            None,
            "round {round}: an XDP program stayed on {} after del-port",
            c.host_if
        );
        let r = ping(Some(&d.ns), &c.ip, 1)?;
        assert_eq!(r.received, 0, "round {round}: pod c answered with no port");
        // Re-added on the same veth queue: forwards again, no restart.
        c.attach(&sd)
            .map_err(|e| TopoError::Other(format!("round {round}: re-adding pod-c: {e}")))?;
        assert!(xdp_prog_id(&c.host_if)?.is_some(), "round {round}");
        wait_reachable(&d.ns, &c.ip, Duration::from_secs(4))
            .map_err(|e| TopoError::Other(format!("round {round}: {e}")))?;
        let (total, free, fill, user, tx) = umem_frames(&sd)?;
        assert_eq!(free + fill + user + tx, total, "round {round}: books");
    }
    let (_, out, _) = a_to_b.output_timeout(Duration::from_secs(30))?;
    assert!(out.contains("600 packets transmitted"), "{out}");
    assert!(
        received(&out) >= 594,
        "a->b lost more than 1% while pod-c's port came and went: {out}"
    );

    for p in &pods {
        p.detach(&sd)?;
        assert_eq!(xdp_prog_id(&p.host_if)?, None, "{}", p.host_if);
    }
    assert_books_empty(&sd, "after five re-adds and deleting every port")?;
    assert!(sd.stop().is_some_and(|s| s.success()), "{}", sd.log());
    Ok(())
}

#[test]
fn a_thread_whose_afxdp_ports_were_all_deleted_takes_new_ones() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xla")?;
    let mut sd = switchd(&guard, &[])?;
    let net = "10.234.2";
    let (a, b) = (
        Pod::new(&guard, "a", net, 2)?,
        Pod::new(&guard, "b", net, 3)?,
    );
    for cycle in 1..=3 {
        a.attach(&sd)
            .and_then(|_| b.attach(&sd))
            .map_err(|e| TopoError::Other(format!("cycle {cycle}: adding the ports: {e}")))?;
        wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))
            .map_err(|e| TopoError::Other(format!("cycle {cycle}: {e}")))?;
        let r = ping(Some(&b.ns), &a.ip, 3)?;
        assert_eq!(r.received, 3, "cycle {cycle}: {}", r.output);
        a.detach(&sd)?;
        b.detach(&sd)?;
        assert_books_empty(&sd, &format!("cycle {cycle}: both ports deleted"))?;
    }
    // New pods on new veths, on the thread that has no AF_XDP port left.
    let (c, d) = (
        Pod::new(&guard, "c", net, 4)?,
        Pod::new(&guard, "d", net, 5)?,
    );
    c.attach(&sd)?;
    d.attach(&sd)?;
    wait_reachable(&c.ns, &d.ip, Duration::from_secs(4))?;
    c.detach(&sd)?;
    d.detach(&sd)?;
    assert_books_empty(&sd, "new pods deleted")?;
    assert!(sd.stop().is_some_and(|s| s.success()), "{}", sd.log());
    Ok(())
}

/// The `ok` body of `flowctl --json ARGS...`.
fn json(sd: &Switchd, args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = sd.flowctl_ok(&a)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("flowctl --json {args:?}: {e}: {out}")))?;
    Ok(v["ok"].clone())
}

/// The threads `pmd-rxq-show` lists queue 0 of port `name` on.
fn threads_of(show: &serde_json::Value, name: &str) -> Vec<u64> {
    let mut found = Vec::new();
    for t in show["pmds"].as_array().into_iter().flatten() {
        for q in t["rxqs"].as_array().into_iter().flatten() {
            if q["name"].as_str() == Some(name) && q["queue"].as_u64() == Some(0) {
                found.push(t["pmd"].as_u64().unwrap_or(u64::MAX));
            }
        }
    }
    found
}

#[test]
fn rebalance_moves_afxdp_ports_to_another_thread_and_they_keep_forwarding() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xlm")?;
    // Two polling threads, round robin: ports 2 and 4 on pmd0, 3 and 5 on pmd1.
    let mut sd = switchd(&guard, &["--pmd-cpus", "0-1"])?;
    let net = "10.234.3";
    let pods = [
        Pod::new(&guard, "a", net, 2)?,
        Pod::new(&guard, "b", net, 3)?,
        Pod::new(&guard, "c", net, 4)?,
        Pod::new(&guard, "d", net, 5)?,
    ];
    for p in &pods {
        p.attach(&sd)?;
    }
    let [a, b, c, d] = &pods;
    let show = json(&sd, &["pmd-rxq-show", "br0"])?;
    for (p, t) in [(a, 0), (b, 1), (c, 0), (d, 1)] {
        assert_eq!(threads_of(&show, &p.name), vec![t], "{show}");
    }
    wait_reachable(&b.ns, &c.ip, Duration::from_secs(4))?;

    // Without port 2, round robin over ports 3, 4, 5 wants them on pmd0,
    // pmd1, pmd0: all three move, each socket re-created on the UMEM of
    // its new thread.
    a.detach(&sd)?;
    let moved = json(&sd, &["pmd-rxq-rebalance", "br0"])?;
    let show = json(&sd, &["pmd-rxq-show", "br0"])?;
    for (p, t) in [(b, 0), (c, 1), (d, 0)] {
        assert_eq!(threads_of(&show, &p.name), vec![t], "moves {moved}: {show}");
    }
    // They forward to each other across and within threads.
    for (from, to) in [(b, c), (c, d), (d, b)] {
        wait_reachable(&from.ns, &to.ip, Duration::from_secs(4))?;
        let r = ping(Some(&from.ns), &to.ip, 3)?;
        assert_eq!(r.received, 3, "{} -> {}: {}", from.name, to.name, r.output);
    }
    let (total, free, fill, user, tx) = umem_frames(&sd)?;
    assert_eq!(free + fill + user + tx, total, "books after the moves");

    // Moved back (port 2 again: 2, 3, 4, 5 on pmd0, pmd1, pmd0, pmd1).
    a.attach(&sd)?;
    json(&sd, &["pmd-rxq-rebalance", "br0"])?;
    let show = json(&sd, &["pmd-rxq-show", "br0"])?;
    for (p, t) in [(a, 0), (b, 1), (c, 0), (d, 1)] {
        assert_eq!(threads_of(&show, &p.name), vec![t], "{show}");
    }
    wait_reachable(&a.ns, &d.ip, Duration::from_secs(4))?;
    wait_reachable(&b.ns, &c.ip, Duration::from_secs(4))?;

    for p in &pods {
        p.detach(&sd)?;
        assert_eq!(xdp_prog_id(&p.host_if)?, None, "{}", p.host_if);
    }
    assert_books_empty(&sd, "after two rebalances and deleting every port")?;
    assert!(sd.stop().is_some_and(|s| s.success()), "{}", sd.log());
    Ok(())
}
