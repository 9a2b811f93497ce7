//! The AF_XDP UMEM budget of a polling thread, with the real switchd and
//! flowctl (bug h17-6): every afxdp port of a thread stocks its fill ring
//! from the thread's one UMEM, so switchd accounts each port's fill ring
//! (`n-rxq-desc` frames) at add-port time and refuses a port that does not
//! fit, instead of accepting a port that silently drops all it receives.
//!
//! - default rings (2048) on the default 16384-frame UMEM: 7 ports fit, the
//!   8th is refused with the numbers and the fixes, and leaves nothing
//!   behind; the same interface with `n-rxq-desc=256` fits; a switchd with
//!   `--afxdp-umem-frames 32768` takes 8 default ports;
//! - 20 pods with `n-rxq-desc=256` (what cni-shim adds) on one thread: every
//!   port's fill ring is stocked (pmd-perf-show) and every pod receives
//!   (a ring of pings through `actions=NORMAL`), with no `rx_no_fill` drop.
//!
//! Root only (each test passes early otherwise); needs `cargo build --bins`
//! with the default `afxdp` feature. One test at a time (a polling switchd
//! each).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use topology_tests::{
    ping, require_root, switchd_bin, LeakGuard, Netns, PodLink, Result, Switchd, TopoError,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `n` pods `p0..`: namespace, veth, 10.`net`.0.(i+2)/24 on eth0.
fn pods(guard: &LeakGuard, net: u8, n: usize) -> Result<Vec<PodLink>> {
    (0..n)
        .map(|i| {
            guard.pod_link(
                &format!("p{i}"),
                &format!("10.{net}.0.{}/24", i + 2),
                &format!("02:00:00:{net:02x}:00:{:02x}", i + 2),
            )
        })
        .collect()
}

fn switchd(guard: &LeakGuard, name: &str, extra: &[&str]) -> Result<Switchd> {
    Switchd::start(
        &switchd_bin()?,
        &guard.path(&format!("{name}.sock")),
        &guard.path(&format!("{name}-state")),
        extra,
    )
}

/// `flowctl add-port br0 NAME type=afxdp ifname=IF EXTRA...`.
fn add_port(
    sd: &Switchd,
    name: &str,
    ifname: &str,
    extra: &[&str],
) -> Result<std::process::Output> {
    let ifname = format!("ifname={ifname}");
    let mut args = vec!["add-port", "br0", name, "type=afxdp", ifname.as_str()];
    args.extend_from_slice(extra);
    sd.flowctl(&args)
}

fn json(sd: &Switchd, args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = sd.flowctl_ok(&a)?;
    serde_json::from_str(&out).map_err(|e| TopoError::Other(format!("{args:?} --json: {e}: {out}")))
}

/// The thread's UMEM books from `pmd-perf-show --json` (pmd 0).
fn umem(sd: &Switchd) -> Result<serde_json::Value> {
    Ok(json(sd, &["pmd-perf-show", "br0"])?["ok"]["pmds"][0]["umem"].clone())
}

#[test]
fn default_rings_fill_the_thread_umem_and_the_next_port_is_refused_with_the_fix() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xub")?;
    let pods = pods(&guard, 76, 8)?;
    let mut sd = switchd(&guard, "a", &[])?;
    for (i, p) in pods.iter().take(7).enumerate() {
        let o = add_port(&sd, &format!("pod{i}"), &p.host_if, &[])?;
        assert!(
            o.status.success(),
            "port {i} of 7 must fit: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let u = umem(&sd)?;
    assert_eq!(u["fill"], 7 * 2048, "every accepted port is stocked: {u}");

    // The 8th: refused, with the numbers and the ways out.
    let o = add_port(&sd, "pod7", &pods[7].host_if, &[])?;
    assert!(!o.status.success(), "an 8th default ring cannot be fed");
    let err = String::from_utf8_lossy(&o.stderr);
    for part in [
        pods[7].host_if.as_str(),
        "takes 2048 frames",
        "15360 fill-ring frames",
        "16384-frame UMEM",
        "pmd0 has 1024 left",
        "n-rxq-desc=256",
        "--afxdp-umem-frames",
        "--pmd-cpus",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    // Nothing left behind: no port, no XDP program on the interface.
    let shown = sd.flowctl_ok(&["show", "br0"])?;
    assert!(!shown.contains("pod7"), "{shown}");
    let link = Netns::host().ip(&["link", "show", "dev", &pods[7].host_if])?;
    assert!(!link.contains("xdp"), "no program left: {link}");

    // What the message proposes works: a smaller ring fits the 1024 left.
    sd.flowctl_ok(&[
        "add-port",
        "br0",
        "pod7",
        "type=afxdp",
        &format!("ifname={}", pods[7].host_if),
        "n-rxq-desc=256",
    ])?;
    assert_eq!(umem(&sd)?["fill"], 7 * 2048 + 256);
    sd.stop();

    // And so does a larger UMEM: 32768 frames take 8 default rings.
    let sd = switchd(&guard, "b", &["--afxdp-umem-frames", "32768"])?;
    for (i, p) in pods.iter().enumerate() {
        sd.flowctl_ok(&[
            "add-port",
            "br0",
            &format!("pod{i}"),
            "type=afxdp",
            &format!("ifname={}", p.host_if),
        ])?;
    }
    let u = umem(&sd)?;
    assert_eq!(
        (u["total"].as_u64(), u["fill"].as_u64()),
        (Some(32768), Some(8 * 2048)),
        "{u}"
    );
    drop(sd);
    drop(pods);
    let left = guard.cleanup()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn twenty_pods_with_small_rings_on_one_thread_all_receive() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _s = serial();
    let guard = LeakGuard::new("xu20")?;
    const N: usize = 20;
    let pods = pods(&guard, 77, N)?;
    let sd = switchd(&guard, "sd", &[])?;
    for (i, p) in pods.iter().enumerate() {
        let o = add_port(&sd, &format!("pod{i}"), &p.host_if, &["n-rxq-desc=256"])?;
        assert!(
            o.status.success(),
            "pod {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Every fill ring stocked: 20 x 256 frames, the rest free.
    let u = umem(&sd)?;
    assert_eq!(u["fill"], N as u64 * 256, "{u}");
    sd.flowctl_ok(&["add-flow", "br0", "actions=NORMAL"])?;

    // A ring of pings: pod i -> pod i+7, so every pod sends and receives.
    for (i, pod) in pods.iter().enumerate() {
        let j = (i + 7) % N;
        let dst = format!("10.77.0.{}", j + 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = ping(Some(&pod.ns), &dst, 1)?;
            if r.received == 1 {
                break;
            }
            if Instant::now() > deadline {
                return Err(TopoError::Other(format!(
                    "pod {i} cannot reach pod {j} ({dst}): {}\nUMEM: {}",
                    r.output,
                    umem(&sd)?
                )));
            }
        }
    }
    // Every port received, none lost a frame to an empty fill ring.
    let ports = json(&sd, &["dump-ports", "br0"])?;
    let list = ports["ok"]["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), N, "{ports}");
    for p in &list {
        let st = &p["stats"];
        assert!(st["rx_packets"].as_u64().unwrap_or(0) > 0, "{p}");
        let reasons = st["rx_drop_reasons"].to_string();
        assert!(!reasons.contains("rx_no_fill"), "{p}");
    }
    drop(sd);
    drop(pods);
    let left = guard.cleanup()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
