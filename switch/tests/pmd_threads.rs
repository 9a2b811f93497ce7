//! Several polling threads behind one bridge, driven only by control
//! requests the way switchd drives it: ports spread over the threads, frames
//! forwarded between ports owned by different threads (through the hand-off
//! queues) and counted exactly, `pmd-rxq-show` listing every port once,
//! `pmd-rxq-rebalance` moving ports (round robin and by measured cycles)
//! without breaking forwarding or losing counters, and `pmd-perf-show`
//! agreeing with what was injected.

use std::collections::BTreeMap;

use serde_json::Value;
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{PortEntry, Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::packet::FrameBuilder;
use switch::pmd::{PmdConfig, PmdPerf, RxqAssign};

const BR: &str = "br0";

struct Sw {
    b: Bridge,
    _dir: tempfile::TempDir,
}

impl Sw {
    fn new(n_pmds: usize, assign: RxqAssign) -> Sw {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let b = Bridge::start_with_pmds(
            BR,
            store,
            DatapathConfig::default(),
            &PmdConfig::unpinned(n_pmds, assign),
        )
        .unwrap();
        Sw { b, _dir: dir }
    }

    /// Ports p1..p4 (ofport 1..4) and a ring of flows: 1→2→3→4→1.
    fn ring(n_pmds: usize, assign: RxqAssign) -> Sw {
        let mut s = Sw::new(n_pmds, assign);
        for i in 1..=4u32 {
            s.ok(Request::AddPort {
                bridge: BR.into(),
                name: format!("p{i}"),
                port_type: "memory".into(),
                ofport: Some(i),
                options: BTreeMap::from([("depth".into(), "4096".into())]),
            });
        }
        s.ok(Request::AddFlows {
            bridge: BR.into(),
            flows: (1..=4u32)
                .map(|i| format!("in_port={i},actions=output:{}", i % 4 + 1))
                .collect(),
        });
        s
    }

    fn ok(&mut self, req: Request) -> Value {
        let what = format!("{req:?}");
        match self.b.handle(req) {
            Reply::Ok(v) => v,
            Reply::Error(e) => panic!("{what} failed: {e}"),
        }
    }

    /// Inject `n` distinct UDP frames on port `p` (distinct source ports, so
    /// the caches see misses as well as hits); returns the frames.
    fn inject(&mut self, p: u32, n: usize, tag: u16) -> Vec<Vec<u8>> {
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                FrameBuilder::new()
                    .eth([2, 0, 0, 0, 0, p as u8], [2, 0, 0, 0, 1, 1])
                    .ipv4([10, 0, 0, p as u8], [10, 0, 1, 1])
                    .udp(1000 + (i % 50) as u16, tag)
                    .payload(&(i as u32).to_be_bytes())
                    .build()
            })
            .collect();
        for chunk in frames.chunks(500) {
            let v = self.ok(Request::Inject {
                bridge: BR.into(),
                port: format!("p{p}"),
                frames: chunk.iter().map(|f| encode_hex(f)).collect(),
            });
            assert_eq!(v["injected"], chunk.len());
        }
        frames
    }

    fn capture(&mut self, p: u32) -> Vec<Vec<u8>> {
        let v = self.ok(Request::Capture {
            bridge: BR.into(),
            port: format!("p{p}"),
            max: None,
        });
        let frames: Vec<String> = serde_json::from_value(v["frames"].clone()).unwrap();
        frames.iter().map(|h| decode_hex(h).unwrap()).collect()
    }

    fn ports(&mut self) -> BTreeMap<u32, PortEntry> {
        let v = self.ok(Request::DumpPorts {
            bridge: BR.into(),
            port: None,
        });
        let ps: Vec<PortEntry> = serde_json::from_value(v["ports"].clone()).unwrap();
        ps.into_iter().map(|p| (p.ofport, p)).collect()
    }

    fn flow_packets(&mut self) -> BTreeMap<u32, u64> {
        let v = self.ok(Request::DumpFlows {
            bridge: BR.into(),
            filter: None,
        });
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let m = f["match"].as_str().unwrap();
                let port: u32 = m.trim_start_matches("in_port=").parse().unwrap();
                (port, f["n_packets"].as_u64().unwrap())
            })
            .collect()
    }

    /// Port number → owning thread, from pmd-rxq-show; asserts every port of
    /// the bridge appears exactly once.
    fn rxq_owners(&mut self) -> BTreeMap<u32, u64> {
        let v = self.ok(Request::PmdRxqShow { bridge: BR.into() });
        let mut owners = BTreeMap::new();
        for t in v["pmds"].as_array().unwrap() {
            let pmd = t["pmd"].as_u64().unwrap();
            let mut usage = 0.0;
            for q in t["rxqs"].as_array().unwrap() {
                let port = q["port"].as_u64().unwrap() as u32;
                assert_eq!(q["name"], format!("p{port}"));
                usage += q["usage_pct"].as_f64().unwrap();
                assert!(
                    owners.insert(port, pmd).is_none(),
                    "port {port} listed twice: {v}"
                );
            }
            // Shares of the thread's busy cycles add up to 100 % once it did work.
            assert!(usage == 0.0 || (usage - 100.0).abs() < 0.01, "{v}");
        }
        let all: Vec<u32> = self.ports().keys().copied().collect();
        assert_eq!(owners.keys().copied().collect::<Vec<_>>(), all, "{v}");
        owners
    }

    fn perf(&mut self) -> Vec<PmdPerf> {
        let v = self.ok(Request::PmdPerfShow { bridge: BR.into() });
        serde_json::from_value(v["pmds"].clone()).unwrap()
    }

    fn rebalance(&mut self) -> Vec<(u32, u64, u64)> {
        let v = self.ok(Request::PmdRxqRebalance { bridge: BR.into() });
        v["moves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["port"].as_u64().unwrap() as u32,
                    m["from"].as_u64().unwrap(),
                    m["to"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Inject `n` frames on every port and check each arrives, unchanged and
    /// in order, on the next port of the ring.
    fn ring_round(&mut self, n: usize, tag: u16) {
        let sent: Vec<Vec<Vec<u8>>> = (1..=4).map(|p| self.inject(p, n, tag)).collect();
        for p in 1..=4u32 {
            let from = (p + 2) % 4 + 1; // the port whose flow outputs to p
            let got = self.capture(p);
            assert_eq!(
                got.len(),
                n,
                "port {p} got {} of {n} frames from port {from}",
                got.len()
            );
            assert!(got == sent[from as usize - 1], "port {p}: frames differ");
        }
    }
}

#[test]
fn cross_thread_forwarding_is_exact() {
    let mut s = Sw::ring(2, RxqAssign::RoundRobin);
    let owners = s.rxq_owners();
    // Round robin in port order: 1,3 on pmd0, 2,4 on pmd1, so every ring hop crosses threads.
    assert_eq!(owners, BTreeMap::from([(1, 0), (2, 1), (3, 0), (4, 1)]));

    s.ring_round(300, 7);
    let ports = s.ports();
    for (no, p) in &ports {
        assert_eq!(p.stats.rx_packets, 300, "port {no}");
        assert_eq!(p.stats.tx_packets, 300, "port {no}");
        assert_eq!(p.stats.rx_dropped + p.stats.tx_dropped, 0, "port {no}");
    }
    assert_eq!(
        s.flow_packets(),
        BTreeMap::from([(1, 300), (2, 300), (3, 300), (4, 300)])
    );

    let perf = s.perf();
    assert_eq!(perf.len(), 2);
    for t in &perf {
        // Each thread polls two ports of 300 frames each, and hands all of
        // them to the other thread's ports.
        assert_eq!(t.rx_packets, 600, "{t:?}");
        assert_eq!(
            t.emc_hits + t.megaflow_hits + t.misses,
            t.rx_packets,
            "{t:?}"
        );
        assert_eq!(t.handed_off, 600, "{t:?}");
        assert_eq!(t.handoff_drops, 0);
        assert!(t.misses >= 1 && t.iterations >= t.busy_iterations && t.busy_iterations >= 1);
        assert!(
            t.cycles_per_packet > 0.0 && t.cycles_per_miss > 0.0,
            "{t:?}"
        );
        assert!((0.0..=100.0).contains(&t.busy_pct), "{t:?}");
        // No `ct(table=T)` here: one datapath pass per frame.
        assert_eq!((t.passes, t.recirculations), (t.rx_packets, 0), "{t:?}");
        let pcts = t.emc_hit_pct + t.megaflow_hit_pct + t.miss_pct;
        assert!((pcts - 100.0).abs() < 0.01, "{t:?}");
    }
    // show keeps its one-line total.
    let v = s.ok(Request::Show { bridge: BR.into() });
    assert_eq!(v["pmd"]["rx_packets"], 1200);
    assert_eq!(v["pmds"].as_array().unwrap().len(), 2);
}

#[test]
fn roundrobin_rebalance_moves_ports_and_keeps_counters() {
    let mut s = Sw::ring(2, RxqAssign::RoundRobin);
    s.ring_round(50, 1);
    // Nothing to do while the assignment already is round robin.
    assert!(s.rebalance().is_empty());

    // Remove p3 (pmd0) and re-point the ring 2→4: pmd0 keeps p1, pmd1 has p2, p4.
    s.ok(Request::DelPort {
        bridge: BR.into(),
        name: "p3".into(),
    });
    s.ok(Request::AddFlow {
        bridge: BR.into(),
        flow: "in_port=2,actions=output:4".into(),
    });
    assert_eq!(s.rxq_owners(), BTreeMap::from([(1, 0), (2, 1), (4, 1)]));
    // Ports in order 1,2,4 → pmd 0,1,0: p4 moves.
    assert_eq!(s.rebalance(), vec![(4, 1, 0)]);
    assert_eq!(s.rxq_owners(), BTreeMap::from([(1, 0), (2, 1), (4, 0)]));

    // Forwarding continues across the new assignment: 4→1 (same thread now),
    // 1→2 and 2→4 (across).
    let f4 = s.inject(4, 40, 2);
    let f1 = s.inject(1, 40, 2);
    let f2 = s.inject(2, 40, 2);
    assert!(s.capture(1) == f4);
    assert!(s.capture(2) == f1);
    assert!(s.capture(4) == f2);
    // Port counters survive the move: 50 before, 40 after.
    let ports = s.ports();
    assert_eq!(ports[&4].stats.rx_packets, 90);
    assert_eq!(ports[&4].stats.tx_packets, 90);
    assert_eq!(ports[&1].stats.rx_packets, 90);
    assert_eq!(ports[&2].stats.tx_packets, 90);
    let perf = s.perf();
    let handoff_drops: u64 = perf.iter().map(|t| t.handoff_drops).sum();
    let unpolled: u64 = perf.iter().map(|t| t.tx_unpolled).sum();
    assert_eq!((handoff_drops, unpolled), (0, 0));
}

#[test]
fn cycles_rebalance_separates_the_busy_ports() {
    let mut s = Sw::ring(2, RxqAssign::Cycles);
    // Ports added one by one go to the thread with fewest ports: 1,3 on
    // pmd0, 2,4 on pmd1. Only p1 and p3 receive, so pmd0 carries all load.
    assert_eq!(
        s.rxq_owners(),
        BTreeMap::from([(1, 0), (2, 1), (3, 0), (4, 1)])
    );
    let f1 = s.inject(1, 1000, 3);
    let f3 = s.inject(3, 1000, 3);
    assert!(s.capture(2) == f1);
    assert!(s.capture(4) == f3);

    let moves = s.rebalance();
    let owners = s.rxq_owners();
    assert_ne!(
        owners[&1], owners[&3],
        "busy ports share a thread: {moves:?}"
    );
    assert_eq!(moves.len(), 1, "{moves:?}");

    // Forwarding still exact after the move, counters continue.
    let f1 = s.inject(1, 100, 4);
    let f3 = s.inject(3, 100, 4);
    assert!(s.capture(2) == f1);
    assert!(s.capture(4) == f3);
    let ports = s.ports();
    assert_eq!(ports[&1].stats.rx_packets, 1100);
    assert_eq!(ports[&3].stats.rx_packets, 1100);
    assert_eq!(ports[&2].stats.tx_packets, 1100);
    assert_eq!(ports[&4].stats.tx_packets, 1100);
    let rx: u64 = s.perf().iter().map(|t| t.rx_packets).sum();
    assert_eq!(rx, 2200);
}

#[test]
fn more_threads_than_ports_and_one_thread_work() {
    for n in [1, 3] {
        let mut s = Sw::ring(n, RxqAssign::RoundRobin);
        s.ring_round(20, 9);
        let owners = s.rxq_owners();
        assert!(owners.values().all(|o| (*o as usize) < n));
        assert!(s.rebalance().is_empty());
        let rx: u64 = s.perf().iter().map(|t| t.rx_packets).sum();
        assert_eq!(rx, 80);
    }
}

#[test]
fn unknown_bridge_is_refused_for_pmd_requests() {
    let mut s = Sw::new(2, RxqAssign::RoundRobin);
    for req in [
        Request::PmdRxqShow {
            bridge: "brX".into(),
        },
        Request::PmdPerfShow {
            bridge: "brX".into(),
        },
        Request::PmdRxqRebalance {
            bridge: "brX".into(),
        },
    ] {
        match s.b.handle(req) {
            Reply::Error(e) => assert_eq!(e.input.as_deref(), Some("brX")),
            Reply::Ok(v) => panic!("accepted: {v}"),
        }
    }
}

#[test]
fn switchd_rejects_bad_cpu_lists() {
    let dir = tempfile::tempdir().unwrap();
    for (list, needle) in [
        ("3-1", "reversed"),
        ("a", "not a CPU number"),
        ("1023", "not present"),
        ("", "empty"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchd"))
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .arg("--state-dir")
            .arg(dir.path())
            .arg("--pmd-cpus")
            .arg(list)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{list:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--pmd-cpus") && err.contains(needle),
            "{list:?}: {err}"
        );
    }
}
