//! Two pods reach each other through ferroswitch: each pod's namespace holds
//! a tap device whose other side is a [`TapPort`] polled by the real polling
//! thread ([`PmdHandle`]) with real flows (`in_port=1 → output:2` and back).
//! ping and iperf3 between the pods cross the switch; its port counters and
//! the pods' kernel counters agree.
//!
//! switchd does not create tap ports yet (the `type=tap` branch of
//! `create_port` is wired later), so this test builds the bridge's pieces
//! directly from the library. Root only.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switch::datapath::{DatapathConfig, Snapshot};
use switch::flow::parse::{parse_flow, ParseMode};
use switch::pipeline::table::{FlowMod, FlowModCommand};
use switch::pipeline::Pipeline;
use switch::pmd::{PmdCommand, PmdHandle};
use switch::port::tap::{TapOptions, TapPort};
use switch::port::Port;
use topology_tests::{iperf3, ping, require_root, LeakGuard, Netns, Result, TopoError};

/// A tap port for `ifname`, created in the host's namespace and then moved
/// into `pod` with `cidr` on it (the port's descriptor stays attached).
fn pod_tap(ifname: &str, pod: &Netns, cidr: &str) -> Result<TapPort> {
    let port = TapPort::open(ifname, &TapOptions::default())
        .map_err(|e| TopoError::Other(format!("tap {ifname}: {e}")))?;
    Netns::host().ip(&["link", "set", "dev", ifname, "netns", pod.name()])?;
    pod.addr_add(ifname, cidr)?;
    pod.link_up(ifname)?;
    Ok(port)
}

fn pipeline(flows: &[&str]) -> Result<Pipeline> {
    let mut p = Pipeline::new();
    let mods = flows
        .iter()
        .map(|f| {
            parse_flow(f, ParseMode::Add)
                .map(|spec| FlowMod {
                    command: FlowModCommand::Add,
                    spec,
                })
                .map_err(|e| TopoError::Other(format!("{f}: {}", e.message)))
        })
        .collect::<Result<Vec<_>>>()?;
    p.apply(&mods)
        .map_err(|e| TopoError::Other(format!("flows: {e}")))?;
    Ok(p)
}

#[test]
fn two_pods_reach_each_other_through_tap_ports_and_the_polling_thread() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let guard = LeakGuard::new("tp")?;
    let a = guard.netns("a")?;
    let b = guard.netns("b")?;
    a.disable_ipv6()?;
    b.disable_ipv6()?;
    let (ifa, ifb) = (guard.ifname("a")?, guard.ifname("b")?);
    let pa = pod_tap(&ifa, &a, "10.203.0.1/24")?;
    let pb = pod_tap(&ifb, &b, "10.203.0.2/24")?;
    let (ca, cb) = (pa.counters().clone(), pb.counters().clone());

    let snap = Snapshot {
        generation: 1,
        pipeline: Arc::new(pipeline(&[
            "table=0,priority=10,in_port=1,actions=output:2",
            "table=0,priority=10,in_port=2,actions=output:1",
        ])?),
        ports: vec![1, 2],
    };
    let pmd = PmdHandle::spawn(
        Arc::new(ArcSwap::from_pointee(snap)),
        DatapathConfig::default(),
    )
    .map_err(|e| TopoError::Other(format!("pmd: {e}")))?;
    for (no, p) in [(1, pa), (2, pb)] {
        pmd.send(PmdCommand::AddPort(no, Box::new(p)))
            .map_err(|_| TopoError::Other("pmd command queue full".into()))?;
    }
    assert!(pmd.sync(Duration::from_secs(2)));

    let r = ping(Some(&a), "10.203.0.2", 3)?;
    assert_eq!((r.transmitted, r.received), (3, 3), "{}", r.output);
    assert_eq!(r.ttl, Some(64), "a switch does not touch the TTL");
    let t = iperf3(Some(&b), "10.203.0.2", Some(&a), 1, &[])?;
    assert!(t.bits_per_second > 10e6, "{t:?}");
    eprintln!(
        "pod a -> pod b through two tap ports: {:.0} Mbit/s",
        t.bits_per_second / 1e6
    );

    assert!(pmd.sync(Duration::from_secs(2)));
    let (sa, sb) = (ca.snapshot(), cb.snapshot());
    // What pod a sent (its tap's tx) entered the switch on port 1 and left on
    // port 2 into pod b's stack (its tap's rx), and the other way round.
    let ka = a.link_stats(&ifa)?;
    let kb = b.link_stats(&ifb)?;
    assert_eq!(sa.rx_packets, ka.tx_packets, "port 1 rx = pod a's tx");
    assert_eq!(sb.tx_packets, kb.rx_packets, "port 2 tx = pod b's rx");
    assert!(sa.rx_packets >= 3 && sb.rx_packets >= 3, "{sa:?} {sb:?}");
    assert_eq!(sa.rx_dropped + sb.rx_dropped, 0, "{sa:?} {sb:?}");

    // Stopping the polling thread drops the ports, and the taps vanish.
    drop(pmd);
    assert!(!a.links()?.contains(&ifa), "tap removed with its port");
    assert!(!b.links()?.contains(&ifb), "tap removed with its port");
    Ok(())
}
