//! A port whose interface vanishes, or whose link goes down, is reported
//! down (`flowctl show`: `state=down (LINK_DOWN: ...)`, like ovs-ofctl
//! show's `state: LINK_DOWN`; `dump-ports` and its `--json`), switchd keeps
//! running and the other pods keep forwarding.
//!
//! Runbook: three pods on AF_XDP ports, L2 flows, pings running from pod a
//! to pods b and c. Delete pod b's veth in the middle of it: switchd is
//! still there, pod-b reads down (interface gone), frames still sent to it
//! are counted as `port_down` drops, pod a and pod c still ping each other.
//! Then set pod c's host end administratively down: pod-c reads down; set it
//! up again: pod-c reads up and forwards again.
//!
//! Root only (passes early otherwise); needs `cargo build --bins`.

use std::time::{Duration, Instant};

use serde_json::Value;
use topology_tests::{
    ping, require_root, switchd_bin, ChildGuard, LeakGuard, Netns, PodLink, Result, Switchd,
    TopoError, VethPair,
};

struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
    ip: String,
    mac: String,
    ofport: u32,
}

impl Pod {
    fn new(guard: &LeakGuard, name: &str, n: u32) -> Result<Pod> {
        let mac = format!("02:00:00:00:03:{n:02x}");
        let ip = format!("10.233.1.{n}");
        let PodLink { ns, veth, host_if } = guard.pod_link(name, &format!("{ip}/24"), &mac)?;
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
            ip,
            mac,
            ofport: n,
        })
    }
}

/// Port `name`'s object in `flowctl --json dump-ports br0 NAME`.
fn port(sd: &Switchd, name: &str) -> Result<Value> {
    let out = sd.flowctl_ok(&["--json", "dump-ports", "br0", name])?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("dump-ports --json: {e}: {out}")))?;
    Ok(v["ok"]["ports"][0].clone())
}

fn tx_drops(p: &Value, reason: &str) -> u64 {
    p["stats"]["tx_drop_reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e[0].as_str() == Some(reason))
        .and_then(|e| e[1].as_u64())
        .unwrap_or(0)
}

/// Wait until port `name` reads `state`; its dump-ports object then.
fn wait_state(sd: &Switchd, name: &str, state: &str, within: Duration) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let p = port(sd, name)?;
        if p["state"] == state {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(TopoError::Other(format!(
                "{name} did not read {state} within {within:?}: {p}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_reachable(from: &Netns, dst: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if ping(Some(from), dst, 1)?.received == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TopoError::Other(format!("{dst} not reachable")));
        }
    }
}

#[test]
fn a_vanished_or_downed_interface_reads_down_and_the_other_pods_keep_forwarding() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("xdn")?;
    let mut sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    let pods = [
        Pod::new(&guard, "a", 2)?,
        Pod::new(&guard, "b", 3)?,
        Pod::new(&guard, "c", 4)?,
    ];
    let [a, b, c] = &pods;
    for (p, name) in [(a, "pod-a"), (b, "pod-b"), (c, "pod-c")] {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            name,
            "type=afxdp",
            &format!("ifname={}", p.host_if),
            &format!("ofport={}", p.ofport),
        ])?;
        sd.flowctl_ok(&[
            "add-flow",
            "br0",
            &format!(
                "priority=100,ip,dl_dst={},actions=output:{}",
                p.mac, p.ofport
            ),
        ])?;
    }
    sd.flowctl_ok(&["add-flow", "br0", "priority=50,arp,actions=FLOOD"])?;
    wait_reachable(&a.ns, &b.ip, Duration::from_secs(4))?;
    wait_reachable(&a.ns, &c.ip, Duration::from_secs(4))?;
    let show = sd.flowctl_ok(&["show", "br0"])?;
    assert!(show.contains("3(pod-b): type=afxdp"), "{show}");
    assert!(!show.contains("state=down"), "{show}");

    // Pings to both pods run while pod b's veth is deleted.
    let to_b = ChildGuard::new(
        a.ns.spawn(&["ping", "-n", "-q", "-i", "0.01", "-c", "300", &b.ip])?,
        "ping a->b",
    );
    let mut to_c = ChildGuard::new(
        a.ns.spawn(&["ping", "-n", "-q", "-i", "0.01", "-c", "300", &c.ip])?,
        "ping a->c",
    );
    std::thread::sleep(Duration::from_millis(800));
    // The pod's veth goes away (both ends), as when a CNI tears a pod down.
    topology_tests::sh("ip", &["link", "del", &b.host_if])?;
    let (_, out, _) = to_c.output_timeout(Duration::from_secs(15))?;
    drop(to_b);

    // switchd survived and says why pod-b is down.
    let pb = wait_state(&sd, "pod-b", "down", Duration::from_secs(5))?;
    let why = pb["state_reason"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("gone"), "{pb}");
    let show = sd.flowctl_ok(&["show", "br0"])?;
    assert!(
        show.contains("3(pod-b): type=afxdp") && show.contains("state=down (LINK_DOWN: interface"),
        "{show}"
    );
    let text = sd.flowctl_ok(&["dump-ports", "br0", "pod-b"])?;
    assert!(text.contains("state: LINK_DOWN (interface"), "{text}");
    // Frames the flows still sent to pod-b were counted, not lost silently.
    let pb = port(&sd, "pod-b")?;
    assert!(tx_drops(&pb, "port_down") > 0, "{pb}");
    // Pod a kept reaching pod c all along (a lost reply or two at most).
    assert!(out.contains("300 packets transmitted"), "{out}");
    let received: u32 = out
        .split(", ")
        .find_map(|f| f.strip_suffix(" received").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    assert!(received >= 295, "a->c during the deletion: {out}");
    assert_eq!(port(&sd, "pod-a")?["state"], "up");
    assert_eq!(port(&sd, "pod-c")?["state"], "up");
    let r = ping(Some(&c.ns), &a.ip, 3)?;
    assert_eq!(r.received, 3, "{}", r.output);

    // Link down on pod c's host end: down; up again: up, and forwarding.
    topology_tests::sh("ip", &["link", "set", "dev", &c.host_if, "down"])?;
    let pc = wait_state(&sd, "pod-c", "down", Duration::from_secs(5))?;
    assert!(
        pc["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("down"),
        "{pc}"
    );
    topology_tests::sh("ip", &["link", "set", "dev", &c.host_if, "up"])?;
    wait_state(&sd, "pod-c", "up", Duration::from_secs(5))?;
    wait_reachable(&a.ns, &c.ip, Duration::from_secs(5))?;

    // Deleting the dead port is clean, and switchd is still healthy.
    sd.flowctl_ok(&["del-port", "br0", "pod-b"])?;
    assert!(sd.stop().is_some_and(|s| s.success()), "{}", sd.log());
    Ok(())
}
