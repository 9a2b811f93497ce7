//! L2 learning (`actions=NORMAL`) with three pods on one bridge of the real
//! switchd, over AF_XDP ports, checked with the switch's own port counters
//! and `flowctl fdb-show`, the way an operator would.
//!
//! The runbook: three pods a, b, c (namespaces, veths, host ends attached as
//! AF_XDP ports 1, 2, 3) and one flow, `actions=NORMAL`. Pods get permanent
//! neighbour entries, so no ARP broadcast muddies the counters: the first
//! ping from a to b is unknown unicast and must flood (pod c's port
//! transmits it); once b has answered, a ↔ b traffic goes to one port only
//! (pod c's counter stays still, within a bounded time of the answer); b's
//! MAC then appears on c's interface and is relearned there (replies follow
//! it, b's port stays still); and with `mac-aging-time=2` the table empties
//! once traffic stops.
//!
//! Root only (passes early otherwise); needs `cargo build --bins` with the
//! default `afxdp` feature.

use std::time::{Duration, Instant};

use topology_tests::{
    ping, require_root, switchd_bin, LeakGuard, Netns, PodLink, Result, Switchd, TopoError,
    VethPair,
};

const MAC_A: &str = "02:00:00:00:05:0a";
const MAC_B: &str = "02:00:00:00:05:0b";
const MAC_C: &str = "02:00:00:00:05:0c";

/// A pod: a namespace whose `eth0` is a veth; the host end is an AF_XDP port.
struct Pod {
    ns: Netns,
    _veth: VethPair,
    host_if: String,
    ip: String,
}

impl Pod {
    fn new(guard: &LeakGuard, name: &str, ip: &str, mac: &str) -> Result<Pod> {
        let PodLink { ns, veth, host_if } = guard.pod_link(name, &format!("{ip}/24"), mac)?;
        Ok(Pod {
            ns,
            _veth: veth,
            host_if,
            ip: ip.to_string(),
        })
    }

    fn attach(&self, sd: &Switchd, name: &str, ofport: u16) -> Result<()> {
        let ifname = format!("ifname={}", self.host_if);
        let ofport = format!("ofport={ofport}");
        sd.flowctl_ok(&["add-port", "br0", name, "type=afxdp", &ifname, &ofport])
            .map(drop)
    }
}

/// `tx_packets` of a switch port (what the switch sent towards the pod).
fn tx_packets(sd: &Switchd, port: &str) -> Result<u64> {
    let out = sd.flowctl_ok(&["--json", "dump-ports", "br0", port])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("dump-ports --json: {e}: {out}")))?;
    v["ok"]["ports"][0]["stats"]["tx_packets"]
        .as_u64()
        .ok_or_else(|| TopoError::Other(format!("dump-ports {port}: no tx_packets: {out}")))
}

/// `fdb-show --json` entries as (port, mac).
fn fdb(sd: &Switchd) -> Result<Vec<(u64, String)>> {
    let out = sd.flowctl_ok(&["--json", "fdb-show", "br0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TopoError::Other(format!("fdb-show --json: {e}: {out}")))?;
    Ok(v["ok"]["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["port"].as_u64().unwrap_or(0),
                e["mac"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn fails(what: String) -> TopoError {
    TopoError::Other(what)
}

#[test]
fn normal_floods_unknown_learns_moves_and_ages_out() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("l2l")?;
    let sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    let a = Pod::new(&guard, "a", "10.232.0.10", MAC_A)?;
    let b = Pod::new(&guard, "b", "10.232.0.11", MAC_B)?;
    let c = Pod::new(&guard, "c", "10.232.0.12", MAC_C)?;
    a.attach(&sd, "pod-a", 1)?;
    b.attach(&sd, "pod-b", 2)?;
    c.attach(&sd, "pod-c", 3)?;
    sd.flowctl_ok(&["add-flow", "br0", "actions=NORMAL"])?;
    // No ARP: every frame below is unicast, so counters move only by NORMAL's choices.
    a.ns.neigh_add("eth0", &b.ip, MAC_B)?;
    b.ns.neigh_add("eth0", &a.ip, MAC_A)?;
    assert!(fdb(&sd)?.is_empty());

    // 1. a → b, b unknown: the echo request floods, pod c's port sends it.
    let c0 = tx_packets(&sd, "pod-c")?;
    let r = ping(Some(&a.ns), &b.ip, 1)?;
    assert_eq!(r.received, 1, "{}", r.output);
    let c1 = tx_packets(&sd, "pod-c")?;
    assert!(
        c1 > c0,
        "unknown unicast was flooded to pod c ({c0} -> {c1})"
    );
    let table = fdb(&sd)?;
    assert!(table.contains(&(1, MAC_A.into())), "{table:?}");
    assert!(table.contains(&(2, MAC_B.into())), "{table:?}");

    // 2. Learned: within a bounded time (the control step runs every
    // 100 ms) a ↔ b goes to one port only; pod c's counter stays still.
    std::thread::sleep(Duration::from_millis(500));
    let c2 = tx_packets(&sd, "pod-c")?;
    let b2 = tx_packets(&sd, "pod-b")?;
    let r = ping(Some(&a.ns), &b.ip, 10)?;
    assert_eq!(r.received, 10, "{}", r.output);
    assert_eq!(
        tx_packets(&sd, "pod-c")?,
        c2,
        "learned traffic must not reach pod c"
    );
    assert!(tx_packets(&sd, "pod-b")? >= b2 + 10);

    // 3. b's MAC moves to c's interface: c takes MAC_B and talks to a.
    c.ns.ip(&["link", "set", "dev", "eth0", "address", MAC_B])?;
    c.ns.neigh_add("eth0", &a.ip, MAC_A)?;
    a.ns.neigh_add("eth0", &c.ip, MAC_B)?;
    let b3 = tx_packets(&sd, "pod-b")?;
    let r = ping(Some(&c.ns), &a.ip, 5)?;
    assert!(
        r.received >= 4,
        "a's replies follow MAC_B to pod c: {}",
        r.output
    );
    let table = fdb(&sd)?;
    assert!(
        table.contains(&(3, MAC_B.into())),
        "MAC_B relearned on pod c's port: {table:?}"
    );
    assert!(!table.contains(&(2, MAC_B.into())), "{table:?}");
    // The first reply may race the relearning by one control step; after
    // it, nothing more goes to b's port.
    let b4 = tx_packets(&sd, "pod-b")?;
    assert!(
        b4 <= b3 + 1,
        "replies to MAC_B left b's port ({b3} -> {b4})"
    );
    let r = ping(Some(&c.ns), &a.ip, 5)?;
    assert_eq!(r.received, 5, "{}", r.output);
    assert_eq!(tx_packets(&sd, "pod-b")?, b4, "nothing to the old port");

    // 4. Aging: with a 2 s aging time and no traffic, the table empties.
    sd.flowctl_ok(&["set-bridge", "br0", "mac-aging-time=2"])?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = fdb(&sd)?;
        if t.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(fails(format!("entries never aged out: {t:?}")));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let text = sd.flowctl_ok(&["fdb-show", "br0"])?;
    assert_eq!(text, " port  VLAN  MAC                Age\n");
    // Aged out: a → c (MAC_B) is unknown again and floods to b's port too.
    let b5 = tx_packets(&sd, "pod-b")?;
    let r = ping(Some(&a.ns), &c.ip, 1)?;
    assert_eq!(r.received, 1, "{}", r.output);
    assert!(tx_packets(&sd, "pod-b")? > b5, "aged-out MAC floods again");
    // The pods, switchd and then the guard drop here; the guard fails the
    // test if anything it named is left behind.
    Ok(())
}
