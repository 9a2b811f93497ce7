//! The topology framework proves itself against the real kernel and the real
//! switchd: namespaces joined by veth pairs (directly and through a router)
//! ping each other with the TTLs and MTUs an operator expects, iperf3
//! measures a throughput, switchd serves flowctl and brings its ports and
//! flows back after a restart, and nothing outlives a test, not even one
//! that panics.
//!
//! Root only: each test returns early (and passes) otherwise. Needs
//! `cargo build --bins` first for the switchd test.

use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use topology_tests::{
    iperf3, ping, require_root, switchd_bin, LeakGuard, Result, Switchd, VethPair,
};

#[test]
fn namespaces_on_veths_ping_directly_and_through_a_router() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("rt")?;
    let a = guard.netns("a")?;
    let r = guard.netns("r")?;
    let b = guard.netns("b")?;
    let _ar = VethPair::new("a0", Some(&a), "r0", Some(&r))?;
    let _rb = VethPair::new("r1", Some(&r), "b0", Some(&b))?;
    a.addr_add("a0", "10.200.1.2/24")?;
    r.addr_add("r0", "10.200.1.1/24")?;
    r.addr_add("r1", "10.200.2.1/24")?;
    b.addr_add("b0", "10.200.2.2/24")?;
    a.route_add("10.200.2.0/24", "10.200.1.1")?;
    b.route_add("default", "10.200.2.1")?;
    r.enable_ipv4_forwarding()?;

    let direct = ping(Some(&a), "10.200.1.1", 2)?;
    assert_eq!(
        (direct.transmitted, direct.received),
        (2, 2),
        "{}",
        direct.output
    );
    assert_eq!(direct.ttl, Some(64), "one hop: Linux's default TTL");

    let routed = ping(Some(&a), "10.200.2.2", 3)?;
    assert_eq!(
        (routed.transmitted, routed.received),
        (3, 3),
        "{}",
        routed.output
    );
    assert_eq!(
        routed.ttl,
        Some(63),
        "the router decremented the reply's TTL"
    );

    let silent = ping(Some(&a), "10.200.2.99", 1)?;
    assert_eq!(
        (silent.transmitted, silent.received, silent.ttl),
        (1, 0, None)
    );
    let no_route = ping(Some(&a), "10.200.9.9", 1).unwrap_err();
    assert!(no_route.to_string().contains("unreachable"), "{no_route}");

    // Counters: b saw at least the three echo requests.
    let stats = b.link_stats("b0")?;
    assert!(stats.rx_packets >= 3, "{stats:?}");

    // MTU: with 1280 on a's link, a 1300-byte don't-fragment ping cannot leave.
    a.set_mtu("a0", 1280)?;
    assert_eq!(a.mtu("a0")?, 1280);
    let big = a.exec(&[
        "ping",
        "-n",
        "-c",
        "1",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1300",
        "10.200.1.1",
    ])?;
    assert!(
        !big.status.success(),
        "a 1328-byte DF packet on a 1280 MTU link"
    );
    let fits = a.exec(&[
        "ping",
        "-n",
        "-c",
        "1",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1200",
        "10.200.1.1",
    ])?;
    assert!(
        fits.status.success(),
        "{}",
        String::from_utf8_lossy(&fits.stdout)
    );

    // Neighbours: a permanent entry is installed as such.
    let bmac = b.mac("b0")?;
    r.neigh_add("r1", "10.200.2.77", &bmac)?;
    let n = r.ip(&["neigh", "show", "10.200.2.77", "dev", "r1"])?;
    assert!(n.contains(&bmac) && n.contains("PERMANENT"), "{n}");
    Ok(())
}

#[test]
fn iperf3_measures_throughput_across_a_veth() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("ip")?;
    let srv = guard.netns("s")?;
    let cli = guard.netns("c")?;
    let _l = VethPair::new("s0", Some(&srv), "c0", Some(&cli))?;
    srv.addr_add("s0", "10.201.0.1/24")?;
    cli.addr_add("c0", "10.201.0.2/24")?;
    let r = iperf3(Some(&srv), "10.201.0.1", Some(&cli), 1, &[])?;
    // A veth moves gigabits per second even on a loaded 2-CPU machine.
    assert!(r.bits_per_second > 100e6, "{r:?}");
    assert!(r.bytes > 10_000_000, "{r:?}");
    Ok(())
}

#[test]
fn switchd_serves_flowctl_and_keeps_ports_and_flows_across_a_restart() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("sw")?;
    let mut sd = Switchd::start(
        &switchd_bin()?,
        &guard.path("sd.sock"),
        &guard.path("state"),
        &[],
    )?;
    let show = sd.flowctl_ok(&["show", "br0"])?;
    assert!(show.contains("br0"), "{show}");
    sd.flowctl_ok(&["add-port", "br0", "pod1", "type=memory", "ofport=1"])?;
    let flow = "table=0,priority=10,ip,nw_dst=10.244.2.3,actions=output:1";
    sd.flowctl_ok(&["add-flow", "br0", flow])?;
    // A bad flow is refused with flowctl's documented exit code 1.
    let bad = sd.flowctl(&[
        "add-flow",
        "br0",
        "priority=5,nw_dst=10.0.0.1,actions=output:1",
    ])?;
    assert_eq!(bad.status.code(), Some(1));

    let before = sd.pid();
    sd.restart()?;
    assert_ne!(sd.pid(), before, "a new process");
    let flows = sd.flowctl_ok(&["dump-flows", "br0"])?;
    assert!(
        flows.contains("priority=10,ip,nw_dst=10.244.2.3 actions=output:1"),
        "{flows}"
    );
    assert_eq!(flows.lines().count(), 1, "only the flow we added: {flows}");
    let show = sd.flowctl_ok(&["show", "br0"])?;
    assert!(show.contains("pod1"), "the port came back: {show}");

    let st = sd.stop().expect("switchd was running");
    assert!(st.success(), "SIGTERM is a clean stop: {st} {}", sd.log());
    let gone = sd.flowctl(&["show", "br0"])?;
    assert_eq!(
        gone.status.code(),
        Some(3),
        "flowctl reports an unreachable switchd"
    );
    Ok(())
}

#[test]
fn the_leak_guard_finds_and_removes_what_a_test_left_behind() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("lk")?;
    assert!(guard.leftovers()?.is_empty());
    let ns = guard.netns("x")?;
    let host_end = guard.ifname("h")?;
    let link = VethPair::new(&host_end, None, "in0", Some(&ns))?;
    let mut sleeper = ns.spawn(&["sleep", "30"])?;
    let ns_name = ns.name().to_string();
    std::mem::forget(link);
    std::mem::forget(ns);

    let left = guard.leftovers()?;
    assert_eq!(left.netns, vec![ns_name.clone()]);
    assert_eq!(left.links, vec![host_end.clone()]);
    assert!(left.pids.contains(&sleeper.id()), "{left:?}");
    assert_eq!(guard.cleanup()?, left);
    assert!(guard.leftovers()?.is_empty());
    let st = sleeper
        .wait()
        .map_err(|e| topology_tests::TopoError::Other(e.to_string()))?;
    assert_eq!(
        st.signal(),
        Some(9),
        "the leaked process was killed (SIGKILL)"
    );

    // A guard whose test leaked fails that test (after cleaning up).
    let inner = LeakGuard::new("lk2")?;
    std::mem::forget(inner.netns("y")?);
    let failed = catch_unwind(AssertUnwindSafe(move || drop(inner)));
    assert!(failed.is_err(), "dropping a guard with leftovers panics");
    assert!(!topology_tests::Netns::host()
        .run(&["ip", "netns", "list"])?
        .contains(&format!("fs-lk2-y-{}", std::process::id())));
    Ok(())
}

#[test]
fn teardown_happens_even_when_a_test_panics() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("pn")?;
    let mut switchd_pid = 0;
    let host_end = guard.ifname("h")?;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let ns = guard.netns("p").expect("netns");
        let _v = VethPair::new(&host_end, None, "p0", Some(&ns)).expect("veth");
        let sd = Switchd::start(
            &switchd_bin().expect("switchd built"),
            &guard.path("sd.sock"),
            &guard.path("state"),
            &[],
        )
        .expect("switchd");
        switchd_pid = sd.pid();
        panic!("the test fails half-way");
    }));
    assert!(r.is_err());
    assert_ne!(switchd_pid, 0);
    assert!(
        !std::path::Path::new(&format!("/proc/{switchd_pid}")).exists(),
        "switchd was stopped and reaped"
    );
    let left = guard.leftovers()?;
    assert!(left.is_empty(), "{left:?}");
    let list = topology_tests::Netns::host().run(&["ip", "netns", "list"])?;
    assert!(
        !list.contains(&format!("fs-pn-p-{}", std::process::id())),
        "{list}"
    );
    Ok(())
}
