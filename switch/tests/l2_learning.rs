//! L2 learning through the datapath: the NORMAL action with memory ports.
//!
//! Part one drives a [`Datapath`] directly, with the control thread's step
//! (drain the learn queue, age, publish) done by hand, so every step of the
//! learn → publish → invalidate chain is observable: unknown unicast floods,
//! the flood stops at the first batch after the destination is learned
//! (the cached flood megaflow is invalidated), a moved MAC follows its new
//! port, refreshes from active megaflows keep entries alive, and an aged-out
//! entry floods again.
//!
//! Part two goes through the real [`Bridge`] (polling thread, control
//! requests): port counters show flood then unicast, `fdb-show` lists the
//! table in OVS's shape, a short `mac-aging-time` empties it, `fdb-flush`
//! empties it, and `set-bridge` validates and persists its settings.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switch::control::bridge::{encode_hex, Bridge};
use switch::control::proto::{ErrorCode, Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::{Datapath, DatapathConfig, Snapshot, TxBatches};
use switch::flow::parse::{parse_flow, ParseMode};
use switch::flow::PortNo;
use switch::packet::{FrameBuilder, Packet, PacketPool};
use switch::pipeline::l2::{FdbKey, L2Shared, MacTable};
use switch::pipeline::Pipeline;

const PORTS: &[PortNo] = &[1, 2, 3];
const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    FrameBuilder::new()
        .eth(src, dst)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .udp(1000, 2000)
        .build()
}

struct Rig {
    dp: Datapath,
    l2: Arc<L2Shared>,
    table: MacTable,
    tx: TxBatches,
    pool: PacketPool,
    /// Frames sent per port so far.
    sent: [u64; 4],
}

impl Rig {
    fn new(aging_secs: u32) -> Rig {
        let mut p = Pipeline::new();
        p.add_flow(
            parse_flow("actions=NORMAL", ParseMode::Add)
                .unwrap()
                .to_flow(),
        );
        let snap = Arc::new(Snapshot {
            generation: 1,
            pipeline: Arc::new(p),
            ports: PORTS.to_vec(),
        });
        let mut dp = Datapath::new(snap, DatapathConfig::default());
        let l2 = Arc::new(L2Shared::new());
        dp.attach_l2(l2.clone());
        Rig {
            dp,
            l2,
            table: MacTable::new(aging_secs, 8192),
            tx: TxBatches::new(PORTS.len(), 64),
            pool: PacketPool::with_capacity(256),
            sent: [0; 4],
        }
    }

    /// Forward one frame; returns the ports it went out on.
    fn send(&mut self, in_port: PortNo, src: [u8; 6], dst: [u8; 6]) -> Vec<PortNo> {
        let mut p = self.pool.get().unwrap();
        assert!(p.set_data(&frame(src, dst)));
        let mut batch: Vec<Packet> = vec![p];
        self.dp
            .process_batch(in_port, &mut batch, &mut self.tx, &mut self.pool);
        let mut out = Vec::new();
        for (i, &port) in PORTS.iter().enumerate() {
            for pkt in self.tx.drain(i).collect::<Vec<_>>() {
                out.push(port);
                self.sent[port as usize] += 1;
                self.pool.put(pkt);
            }
        }
        out
    }

    /// The control thread's learning step, at `now_ms`.
    fn control_step(&mut self, now_ms: u64) {
        while let Some(ev) = self.l2.pop() {
            self.table.apply(&ev, now_ms);
        }
        self.table.expire(now_ms);
        if self.table.generation() != self.l2.generation() {
            self.l2.publish(self.table.view());
        }
    }
}

fn at(mac: [u8; 6]) -> FdbKey {
    FdbKey { vlan: 0, mac }
}

#[test]
fn flood_until_learned_then_unicast_at_the_next_batch() {
    let mut r = Rig::new(300);
    // A → B, B unknown: flooded to 2 and 3, twice (the second from the cache).
    assert_eq!(r.send(1, A, B), vec![2, 3]);
    assert_eq!(r.send(1, A, B), vec![2, 3]);
    assert_eq!(
        r.dp.stats().misses,
        1,
        "the second flood came from the megaflow"
    );
    r.control_step(0);
    assert_eq!(r.table.lookup(&at(A)), Some(1));
    // B answers: A is known, so only port 1.
    assert_eq!(r.send(2, B, A), vec![1]);
    r.control_step(10);
    assert_eq!(r.table.lookup(&at(B)), Some(2));
    // The cached flood megaflow for A → B must not survive B's learning:
    // the very next batch goes to port 2 only.
    assert_eq!(r.send(1, A, B), vec![2]);
    assert!(r.dp.l2().stats().invalidated >= 1);
    for _ in 0..10 {
        assert_eq!(r.send(1, A, B), vec![2]);
        assert_eq!(r.send(2, B, A), vec![1]);
    }
    assert_eq!(r.sent[3], 2, "port 3 only saw the two floods");
    assert_eq!(r.sent[2], 13);
}

#[test]
fn a_moved_mac_is_followed_and_old_megaflows_do_not_move_it_back() {
    let mut r = Rig::new(300);
    r.send(1, A, B);
    r.send(2, B, A);
    r.control_step(0);
    assert_eq!(r.send(1, A, B), vec![2]);
    // B's MAC now speaks from port 3.
    r.send(3, B, A);
    r.control_step(10);
    assert_eq!(r.table.lookup(&at(B)), Some(3));
    assert_eq!(r.table.stats().moved, 1);
    assert_eq!(r.send(1, A, B), vec![3], "unicast follows the move at once");
    // The megaflow B → A from port 2 was used before the move; its refresh
    // must not drag B back to port 2.
    r.dp.l2_refresh();
    r.control_step(20);
    assert_eq!(r.table.lookup(&at(B)), Some(3));
    assert_eq!(r.send(1, A, B), vec![3]);
}

#[test]
fn active_macs_are_refreshed_and_idle_ones_age_out_and_flood_again() {
    let mut r = Rig::new(1);
    r.send(1, A, B);
    r.send(2, B, A);
    r.control_step(0);
    assert_eq!(r.send(1, A, B), vec![2]);
    // At 800 ms only A keeps sending (from the cache: no slow path).
    r.dp.l2_refresh(); // round boundary: both megaflows hit so far
    r.control_step(100);
    r.send(1, A, B);
    r.dp.l2_refresh();
    r.control_step(800);
    // At 1.5 s B has been idle for 1.4 s (> 1 s): gone; A was seen at 0.8 s.
    r.control_step(1_500);
    assert_eq!(r.table.lookup(&at(B)), None);
    assert_eq!(r.table.lookup(&at(A)), Some(1));
    // B aged out: A → B floods again, from the very next batch.
    assert_eq!(r.send(1, A, B), vec![2, 3]);
    r.control_step(2_500);
    assert!(r.table.is_empty());
    assert!(r.table.stats().expired >= 2);
}

#[test]
fn flush_invalidates_every_normal_megaflow() {
    let mut r = Rig::new(300);
    r.send(1, A, B);
    r.send(2, B, A);
    r.control_step(0);
    assert_eq!(r.send(1, A, B), vec![2]);
    r.table.flush();
    r.control_step(1);
    assert_eq!(r.send(1, A, B), vec![2, 3]);
    assert_eq!(r.send(2, B, A), vec![1, 3]);
}

// ---------------------------------------------------------------------------
// Through the bridge and its polling thread.
// ---------------------------------------------------------------------------

const BR: &str = "br0";

fn ok(b: &mut Bridge, req: Request) -> Value {
    let what = format!("{req:?}");
    match b.handle(req) {
        Reply::Ok(v) => v,
        Reply::Error(e) => panic!("{what} failed: {e}"),
    }
}

fn start(dir: &Path) -> Bridge {
    Bridge::start(
        BR,
        StateStore::open(dir).unwrap(),
        DatapathConfig::default(),
    )
    .unwrap()
}

fn setup(b: &mut Bridge) {
    for (name, no) in [("pa", 1), ("pb", 2), ("pc", 3)] {
        ok(
            b,
            Request::AddPort {
                bridge: BR.into(),
                name: name.into(),
                port_type: "memory".into(),
                ofport: Some(no),
                options: BTreeMap::new(),
            },
        );
    }
    ok(
        b,
        Request::AddFlow {
            bridge: BR.into(),
            flow: "actions=NORMAL".into(),
        },
    );
}

fn inject(b: &mut Bridge, port: &str, src: [u8; 6], dst: [u8; 6]) {
    ok(
        b,
        Request::Inject {
            bridge: BR.into(),
            port: port.into(),
            frames: vec![encode_hex(&frame(src, dst))],
        },
    );
}

fn tx(b: &mut Bridge, port: &str) -> u64 {
    let v = ok(
        b,
        Request::DumpPorts {
            bridge: BR.into(),
            port: Some(port.into()),
        },
    );
    v["ports"][0]["stats"]["tx_packets"].as_u64().unwrap()
}

fn fdb(b: &mut Bridge) -> Value {
    ok(b, Request::FdbShow { bridge: BR.into() })
}

#[test]
fn bridge_floods_learns_shows_and_ages_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path());
    setup(&mut b);
    inject(&mut b, "pa", A, B);
    assert_eq!((tx(&mut b, "pb"), tx(&mut b, "pc")), (1, 1), "flooded");
    assert_eq!(tx(&mut b, "pa"), 0, "never back to the ingress port");
    inject(&mut b, "pb", B, A);
    assert_eq!(tx(&mut b, "pa"), 1);
    assert_eq!(tx(&mut b, "pc"), 1, "A was known: no flood");
    for _ in 0..5 {
        inject(&mut b, "pa", A, B);
    }
    assert_eq!(tx(&mut b, "pb"), 6);
    assert_eq!(tx(&mut b, "pc"), 1, "after learning, nothing more to pc");

    let v = fdb(&mut b);
    let text = v["text"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], " port  VLAN  MAC                Age");
    assert!(
        lines[1].starts_with("    1     0  02:00:00:00:00:0a  "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("    2     0  02:00:00:00:00:0b  "),
        "{text}"
    );
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["mac-aging-time"], 300);
    assert_eq!(v["mac-table-size"], 8192);

    // Move B to pc.
    inject(&mut b, "pc", B, A);
    let v = fdb(&mut b);
    assert_eq!(v["entries"][1]["port"], 3, "{v}");
    assert_eq!(v["stats"]["moved"], 1);
    let before = tx(&mut b, "pb");
    inject(&mut b, "pa", A, B);
    assert_eq!(tx(&mut b, "pb"), before, "nothing to the old port");
    assert_eq!(tx(&mut b, "pc"), 2);

    // A short aging time empties the table once traffic stops.
    ok(
        &mut b,
        Request::SetBridge {
            bridge: BR.into(),
            settings: BTreeMap::from([("mac-aging-time".into(), "1".into())]),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fdb(&mut b)["entries"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "entries never aged out");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fdb(&mut b)["stats"]["expired"].as_u64().unwrap() >= 2);
    // Unknown again: floods.
    let c = tx(&mut b, "pc");
    inject(&mut b, "pa", A, B);
    assert_eq!(tx(&mut b, "pc"), c + 1);
}

#[test]
fn fdb_flush_and_port_removal_forget_macs() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path());
    setup(&mut b);
    inject(&mut b, "pa", A, B);
    inject(&mut b, "pb", B, A);
    assert_eq!(fdb(&mut b)["entries"].as_array().unwrap().len(), 2);
    let v = ok(&mut b, Request::FdbFlush { bridge: BR.into() });
    assert_eq!(v["flushed"], 2);
    assert_eq!(v["text"], "table successfully flushed\n");
    assert!(fdb(&mut b)["entries"].as_array().unwrap().is_empty());
    let c = tx(&mut b, "pc");
    inject(&mut b, "pa", A, B);
    assert_eq!(tx(&mut b, "pc"), c + 1, "flushed: floods again");
    inject(&mut b, "pb", B, A);
    ok(
        &mut b,
        Request::DelPort {
            bridge: BR.into(),
            name: "pb".into(),
        },
    );
    let v = fdb(&mut b);
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e.len(), 1, "{v}");
    assert_eq!(e[0]["port"], 1);
}

#[test]
fn set_bridge_validates_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut b = start(dir.path());
        for (k, v) in [
            ("mac-aging-time", "0"),
            ("mac-aging-time", "ten"),
            ("mac-table-size", "0"),
            ("mac-learning", "on"),
        ] {
            match b.handle(Request::SetBridge {
                bridge: BR.into(),
                settings: BTreeMap::from([(k.into(), v.into())]),
            }) {
                Reply::Error(e) => {
                    assert_eq!(e.code, ErrorCode::BadRequest);
                    assert_eq!(e.input.as_deref(), Some(format!("{k}={v}").as_str()));
                }
                Reply::Ok(v) => panic!("{k}={v} accepted"),
            }
        }
        let v = ok(
            &mut b,
            Request::SetBridge {
                bridge: BR.into(),
                settings: BTreeMap::from([
                    ("other_config:mac-aging-time".into(), "42".into()),
                    ("mac-table-size".into(), "100".into()),
                ]),
            },
        );
        assert_eq!(v["mac-aging-time"], 42);
        assert_eq!(v["mac-table-size"], 100);
    }
    let mut b = start(dir.path());
    let v = fdb(&mut b);
    assert_eq!(v["mac-aging-time"], 42, "restored after a restart");
    assert_eq!(v["mac-table-size"], 100);
}
