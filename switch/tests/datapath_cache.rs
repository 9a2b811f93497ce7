//! The datapath's caches must never change an answer: whatever the pipeline
//! and whatever the sequence of flow-mods and packets, the ports receive
//! exactly what an uncached translate + execute would send. Also: hit
//! counters, per-rule statistics, and named drop counters.
//!
//! Besides the real `pipeline::translate`, these tests use a small reference
//! translator (`ref_translate`, below) that implements the OVS semantics the
//! random pipelines need (output, set_field, dec_ttl, goto_table, resubmit)
//! with sound wildcard masks, so the megaflow machinery is exercised with
//! non-trivial actions whatever state the real translator is in.

use std::sync::Arc;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use switch::datapath::{
    apply, Datapath, DatapathConfig, DpAction, DropReason, ExecCtx, Snapshot, TxBatches,
};
use switch::flow::key::{ethertype, ipproto};
use switch::flow::{Action, Field, Flow, FlowKey, FlowMask, Match, PortNo};
use switch::packet::{extract, Packet, PacketPool};
use switch::pipeline::xlate::XlateDrop;
use switch::pipeline::{translate, Pipeline, Rule, Xlation};

// ---------------------------------------------------------------------------
// Reference translator (test fixture): OVS semantics for the subset used here.
// ---------------------------------------------------------------------------

struct Ctx<'a> {
    pipeline: &'a Pipeline,
    cur: FlowKey,
    committed: FlowKey,
    mask: FlowMask,
    actions: Vec<DpAction>,
    rules: Vec<Arc<Rule>>,
    tables: Vec<(u8, bool)>,
    outputs: Vec<(PortNo, FlowKey)>,
    drop: Option<XlateDrop>,
    depth_exceeded: bool,
}

impl Ctx<'_> {
    fn commit(&mut self) {
        let (c, k) = (self.committed, self.cur);
        if c.dl_src != k.dl_src || c.dl_dst != k.dl_dst {
            self.actions.push(DpAction::SetEth {
                src: (c.dl_src != k.dl_src).then_some(k.dl_src),
                dst: (c.dl_dst != k.dl_dst).then_some(k.dl_dst),
            });
        }
        if k.dl_type == ethertype::IPV4
            && (c.nw_src != k.nw_src || c.nw_dst != k.nw_dst || c.nw_ttl != k.nw_ttl)
        {
            self.actions.push(DpAction::SetIpv4 {
                src: (c.nw_src != k.nw_src).then_some(k.nw_src),
                dst: (c.nw_dst != k.nw_dst).then_some(k.nw_dst),
                tos: None,
                ttl: (c.nw_ttl != k.nw_ttl).then_some(k.nw_ttl),
            });
        }
        if k.dl_type == ethertype::IPV4 && (c.tp_src != k.tp_src || c.tp_dst != k.tp_dst) {
            let src = (c.tp_src != k.tp_src).then_some(k.tp_src);
            let dst = (c.tp_dst != k.tp_dst).then_some(k.tp_dst);
            match k.nw_proto {
                ipproto::TCP => self.actions.push(DpAction::SetTcp { src, dst }),
                ipproto::UDP => self.actions.push(DpAction::SetUdp { src, dst }),
                _ => {}
            }
        }
        self.committed = k;
    }

    /// Run table `t`; false on a miss.
    fn table(&mut self, t: u8, depth: u32) -> bool {
        if depth > 64 {
            self.depth_exceeded = true;
            return false;
        }
        let Some(rule) = self.pipeline.lookup(t, &self.cur, &mut self.mask).cloned() else {
            self.tables.push((t, false));
            return false;
        };
        self.tables.push((t, true));
        self.rules.push(rule.clone());
        if rule.flow.actions.is_empty() && self.outputs.is_empty() {
            self.drop = Some(XlateDrop::ExplicitDrop);
        }
        for a in &rule.flow.actions {
            if self.depth_exceeded {
                return true;
            }
            match a {
                // Output to the ingress port is skipped (OVS semantics).
                Action::Output(p) if *p != self.cur.in_port => {
                    self.commit();
                    self.actions.push(DpAction::Output(*p));
                    self.outputs.push((*p, self.cur));
                }
                Action::SetField { field, value, .. } => {
                    field.set(&mut self.cur, *value);
                    self.mask.or_assign(&field.full_mask());
                    self.mask.dl_type = u16::MAX;
                    self.mask.nw_proto = u8::MAX;
                }
                Action::DecTtl => {
                    self.mask.dl_type = u16::MAX;
                    self.mask.nw_ttl = u8::MAX;
                    if self.cur.dl_type == ethertype::IPV4 {
                        if self.cur.nw_ttl <= 1 {
                            self.drop = Some(XlateDrop::InvalidTtl);
                            return true;
                        }
                        self.cur.nw_ttl -= 1;
                    }
                }
                Action::GotoTable(n) => {
                    let hit = self.table(*n, depth);
                    if !hit && !self.depth_exceeded {
                        self.drop = Some(XlateDrop::NoMatch { table: *n });
                    }
                }
                Action::Resubmit { table, .. } => {
                    let _ = self.table(table.unwrap_or(t), depth + 1);
                }
                _ => {}
            }
        }
        true
    }
}

fn ref_translate(pipeline: &Pipeline, _ports: &[PortNo], key: &FlowKey) -> Xlation {
    let mut mask = FlowKey::ZERO;
    mask.in_port = u32::MAX;
    let mut c = Ctx {
        pipeline,
        cur: *key,
        committed: *key,
        mask,
        actions: Vec::new(),
        rules: Vec::new(),
        tables: Vec::new(),
        outputs: Vec::new(),
        drop: None,
        depth_exceeded: false,
    };
    if !c.table(0, 0) && !c.depth_exceeded {
        c.drop = Some(XlateDrop::NoMatch { table: 0 });
    }
    if c.depth_exceeded {
        c.actions.clear();
        c.outputs.clear();
        c.drop = Some(XlateDrop::ResubmitDepth);
    }
    Xlation {
        mask: c.mask,
        actions: c.actions,
        rules: c.rules,
        tables: c.tables,
        outputs: c.outputs,
        final_key: c.cur,
        group_counters: Vec::new(),
        drop: c.drop,
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const PORTS: [PortNo; 3] = [1, 2, 3];

fn mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, i]
}

#[derive(Clone, Copy, Debug)]
struct Pkt {
    dst_mac: u8,
    nw_dst: u32,
    tcp: bool,
    sport: u16,
    dport: u16,
    ttl: u8,
    len: usize,
}

fn frame(p: &Pkt) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(100), mac(p.dst_mac)).ipv4(
        [10, 9, 9, 9],
        p.nw_dst.to_be_bytes(),
        p.ttl,
    );
    let payload = vec![0x5a; p.len];
    let mut v = Vec::new();
    if p.tcp {
        b.tcp(p.sport, p.dport, 1, 100)
            .write(&mut v, &payload)
            .unwrap();
    } else {
        b.udp(p.sport, p.dport).write(&mut v, &payload).unwrap();
    }
    v
}

fn snapshot(gen: u64, pipeline: Pipeline) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        generation: gen,
        pipeline: Arc::new(pipeline),
        ports: PORTS.to_vec(),
    })
}

fn cfg(emc: usize, inv_prob: u32, megaflows: usize) -> DatapathConfig {
    DatapathConfig {
        emc_entries: emc,
        emc_insert_inv_prob: inv_prob,
        megaflow_capacity: megaflows,
        resort_interval: 3,
        max_batch: 8,
    }
}

/// What the uncached path sends for one frame: (port, bytes) in order.
fn reference(
    tr: fn(&Pipeline, &[PortNo], &FlowKey) -> Xlation,
    snap: &Snapshot,
    in_port: PortNo,
    f: &[u8],
) -> Vec<(PortNo, Vec<u8>)> {
    let mut key = FlowKey::ZERO;
    let lay = extract(f, in_port, &mut key);
    let x = tr(&snap.pipeline, &snap.ports, &key);
    let mut p = Packet::from_slice(f).unwrap();
    let mut ctx = ExecCtx::new(&key, lay);
    let mut out = Vec::new();
    for a in &x.actions {
        match a {
            DpAction::Output(port) => {
                if snap.ports.contains(port) {
                    out.push((*port, p.data().to_vec()));
                }
            }
            _ => {
                if apply(&mut p, &mut ctx, a).is_err() {
                    break;
                }
            }
        }
    }
    out
}

/// Run one batch through the datapath; returns what each port got, in order.
fn run_batch(
    dp: &mut Datapath,
    in_port: PortNo,
    frames: &[Vec<u8>],
    tx: &mut TxBatches,
    pool: &mut PacketPool,
) -> Vec<Vec<Vec<u8>>> {
    let mut batch: Vec<Packet> = frames
        .iter()
        .map(|f| {
            let mut p = pool.get().expect("pool has buffers");
            assert!(p.set_data(f));
            p
        })
        .collect();
    dp.process_batch(in_port, &mut batch, tx, pool);
    assert!(batch.is_empty());
    (0..tx.n_ports())
        .map(|i| {
            let v: Vec<Packet> = tx.drain(i).collect();
            let bytes = v.iter().map(|p| p.data().to_vec()).collect();
            v.into_iter().for_each(|p| pool.put(p));
            bytes
        })
        .collect()
}

// ---------------------------------------------------------------------------
// (a) cached == uncached, property test
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum FlowAct {
    Out(PortNo),
    SetEthDst(u8),
    SetNwDst(u32),
    SetTpDst(u16),
    DecTtl,
    Resubmit(u8),
}

#[derive(Clone, Debug)]
struct FlowGen {
    table: u8,
    priority: u16,
    in_port: Option<PortNo>,
    dl_dst: Option<u8>,
    nw_dst: Option<(u32, u8)>,
    tp_dst: Option<(bool, u16)>,
    acts: Vec<FlowAct>,
    goto: bool,
}

fn build_flow(g: &FlowGen) -> Flow {
    let mut m = Match::CATCHALL;
    if let Some(p) = g.in_port {
        m.set_exact(Field::InPort, u128::from(p));
    }
    if let Some(d) = g.dl_dst {
        m.set_exact(
            Field::EthDst,
            u128::from_be_bytes({
                let mut b = [0u8; 16];
                b[10..].copy_from_slice(&mac(d));
                b
            }),
        );
    }
    let ip = g.nw_dst.is_some()
        || g.tp_dst.is_some()
        || g.acts.iter().any(|a| {
            matches!(
                a,
                FlowAct::SetNwDst(_) | FlowAct::DecTtl | FlowAct::SetTpDst(_)
            )
        });
    if ip {
        m.set_exact(Field::EthType, u128::from(ethertype::IPV4));
    }
    if let Some((v, plen)) = g.nw_dst {
        let mask = if plen == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(plen))
        };
        m.set_masked(Field::IpDst, u128::from(v), u128::from(mask));
    }
    let l4 = g.tp_dst.or_else(|| {
        g.acts
            .iter()
            .any(|a| matches!(a, FlowAct::SetTpDst(_)))
            .then_some((true, 0))
            .map(|(t, _)| (t, u16::MAX))
    });
    if let Some((tcp, port)) = l4 {
        m.set_exact(
            Field::NwProto,
            u128::from(if tcp { ipproto::TCP } else { ipproto::UDP }),
        );
        if port != u16::MAX {
            m.set_exact(Field::TpDst, u128::from(port));
        }
    }
    let mut actions: Vec<Action> = g
        .acts
        .iter()
        .map(|a| match a {
            FlowAct::Out(p) => Action::Output(*p),
            FlowAct::SetEthDst(d) => Action::SetField {
                field: Field::EthDst,
                value: u128::from_be_bytes({
                    let mut b = [0u8; 16];
                    b[10..].copy_from_slice(&mac(*d));
                    b
                }),
                mask: Field::EthDst.info().max_value(),
            },
            FlowAct::SetNwDst(v) => Action::SetField {
                field: Field::IpDst,
                value: u128::from(*v),
                mask: u128::from(u32::MAX),
            },
            FlowAct::SetTpDst(v) => Action::SetField {
                field: Field::TpDst,
                value: u128::from(*v),
                mask: 0xffff,
            },
            FlowAct::DecTtl => Action::DecTtl,
            FlowAct::Resubmit(t) => Action::Resubmit {
                in_port: None,
                table: Some(*t),
            },
        })
        .collect();
    if g.goto && g.table < 2 {
        actions.push(Action::GotoTable(g.table + 1));
    }
    Flow {
        table: g.table,
        priority: g.priority,
        matches: m,
        actions,
        ..Flow::default()
    }
}

const NW_DSTS: [u32; 4] = [0x0a00_0001, 0x0a00_0101, 0x0a01_0001, 0xc0a8_0001];

fn arb_flow() -> impl Strategy<Value = FlowGen> {
    let act = prop_oneof![
        4 => (1u32..=4).prop_map(FlowAct::Out),
        1 => (1u8..=3).prop_map(FlowAct::SetEthDst),
        1 => prop::sample::select(NW_DSTS.to_vec()).prop_map(FlowAct::SetNwDst),
        1 => prop::sample::select(vec![80u16, 443, 53]).prop_map(FlowAct::SetTpDst),
        1 => Just(FlowAct::DecTtl),
        1 => (0u8..3).prop_map(FlowAct::Resubmit),
    ];
    (
        0u8..3,
        prop::sample::select(vec![1u16, 10, 100]),
        proptest::option::of(1u32..=3),
        proptest::option::of(1u8..=3),
        proptest::option::of((
            prop::sample::select(NW_DSTS.to_vec()),
            prop::sample::select(vec![8u8, 16, 24, 32]),
        )),
        proptest::option::of((any::<bool>(), prop::sample::select(vec![80u16, 443, 53]))),
        proptest::collection::vec(act, 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(table, priority, in_port, dl_dst, nw_dst, tp_dst, acts, goto)| FlowGen {
                table,
                priority,
                in_port,
                dl_dst,
                nw_dst,
                tp_dst,
                acts,
                goto,
            },
        )
}

fn arb_pkt() -> impl Strategy<Value = Pkt> {
    (
        1u8..=3,
        prop::sample::select(NW_DSTS.to_vec()),
        any::<bool>(),
        prop::sample::select(vec![1000u16, 2000]),
        prop::sample::select(vec![80u16, 443, 53]),
        prop::sample::select(vec![1u8, 2, 64]),
        0usize..40,
    )
        .prop_map(|(dst_mac, nw_dst, tcp, sport, dport, ttl, len)| Pkt {
            dst_mac,
            nw_dst,
            tcp,
            sport,
            dport,
            ttl,
            len,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Add(FlowGen),
    /// Modify the i-th existing flow (same match and priority, new actions).
    Modify(usize, Vec<FlowAct>),
    /// Delete the i-th existing flow.
    Delete(usize),
    Publish,
    Packets(PortNo, Vec<Pkt>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => arb_flow().prop_map(Op::Add),
        1 => (any::<usize>(), proptest::collection::vec((1u32..=4).prop_map(FlowAct::Out), 0..3))
            .prop_map(|(i, a)| Op::Modify(i, a)),
        1 => any::<usize>().prop_map(Op::Delete),
        2 => Just(Op::Publish),
        6 => ((1u32..=4), proptest::collection::vec(arb_pkt(), 1..8)).prop_map(|(p, v)| Op::Packets(p, v)),
    ]
}

fn rebuild(flows: &[Flow]) -> Pipeline {
    let mut p = Pipeline::new();
    for f in flows {
        p.add_flow(f.clone());
    }
    p
}

fn check_agreement(
    tr: fn(&Pipeline, &[PortNo], &FlowKey) -> Xlation,
    config: DatapathConfig,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut flows: Vec<Flow> = Vec::new();
    let mut gen = 1;
    let mut snap = snapshot(gen, Pipeline::new());
    let mut dp = Datapath::new(snap.clone(), config);
    dp.set_translator(tr);
    // Room for every output of every packet: resubmit loops can output one
    // packet dozens of times, and a full tx batch or an empty pool is a
    // (counted) drop the uncached reference does not model.
    const BUFS: usize = 2048;
    let mut tx = TxBatches::new(PORTS.len(), BUFS);
    let mut pool = PacketPool::with_capacity(BUFS);
    let mut sent = 0u64;
    for op in ops {
        match op {
            Op::Add(g) => {
                let f = build_flow(g);
                flows.retain(|o| {
                    !(o.table == f.table && o.priority == f.priority && o.matches == f.matches)
                });
                flows.push(f);
            }
            Op::Modify(i, acts) if !flows.is_empty() => {
                let n = flows.len();
                let f = &mut flows[i % n];
                f.actions = acts
                    .iter()
                    .map(|a| match a {
                        FlowAct::Out(p) => Action::Output(*p),
                        _ => unreachable!(),
                    })
                    .collect();
            }
            Op::Delete(i) if !flows.is_empty() => {
                let n = flows.len();
                flows.remove(i % n);
            }
            Op::Modify(..) | Op::Delete(_) => {}
            Op::Publish => {
                gen += 1;
                snap = snapshot(gen, rebuild(&flows));
                dp.set_snapshot(snap.clone());
            }
            Op::Packets(in_port, pkts) => {
                let frames: Vec<Vec<u8>> = pkts.iter().map(frame).collect();
                let got = run_batch(&mut dp, *in_port, &frames, &mut tx, &mut pool);
                let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PORTS.len()];
                for f in &frames {
                    for (port, bytes) in reference(tr, &snap, *in_port, f) {
                        let i = PORTS.iter().position(|p| *p == port).unwrap();
                        want[i].push(bytes);
                    }
                }
                prop_assert_eq!(got, want, "in_port {} packets {:?}", in_port, pkts);
                sent += frames.len() as u64;
            }
        }
        prop_assert_eq!(pool.available(), BUFS, "no buffer leaked or lost");
    }
    let s = dp.stats();
    prop_assert_eq!(
        s.drops(DropReason::TxFull) + s.drops(DropReason::PoolEmpty),
        0
    );
    prop_assert_eq!(s.packets, sent);
    prop_assert_eq!(s.emc_hits + s.megaflow_hits + s.misses, sent);
    prop_assert!(dp.megaflows().len() <= config.megaflow_capacity);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn cached_forwarding_equals_uncached(
        ops in proptest::collection::vec(arb_op(), 1..40),
        small in any::<bool>(),
        inv_prob in prop::sample::select(vec![1u32, 2, 100]),
    ) {
        // A small cache forces EMC collisions and megaflow evictions.
        let config = if small { cfg(4, inv_prob, 3) } else { cfg(1024, inv_prob, 1024) };
        check_agreement(ref_translate, config, &ops)?;
    }

    #[test]
    fn cached_forwarding_equals_uncached_real_translate(
        ops in proptest::collection::vec(arb_op(), 1..30),
        small in any::<bool>(),
    ) {
        let config = if small { cfg(4, 1, 3) } else { cfg(1024, 1, 1024) };
        check_agreement(translate, config, &ops)?;
    }
}

// ---------------------------------------------------------------------------
// (b) hit counters
// ---------------------------------------------------------------------------

fn flow(table: u8, priority: u16, m: Match, actions: Vec<Action>) -> Flow {
    Flow {
        table,
        priority,
        matches: m,
        actions,
        ..Flow::default()
    }
}

fn ip_dst_match(v: u32, plen: u32) -> Match {
    let mut m = Match::CATCHALL;
    m.set_exact(Field::EthType, u128::from(ethertype::IPV4));
    m.set_masked(
        Field::IpDst,
        u128::from(v),
        u128::from(u32::MAX << (32 - plen)),
    );
    m
}

fn pkt(nw_dst: u32, sport: u16) -> Vec<u8> {
    frame(&Pkt {
        dst_mac: 1,
        nw_dst,
        tcp: false,
        sport,
        dport: 53,
        ttl: 64,
        len: 10,
    })
}

#[test]
fn emc_then_megaflow_hits() {
    let mut p = Pipeline::new();
    p.add_flow(flow(
        0,
        10,
        ip_dst_match(0x0a00_0000, 24),
        vec![Action::Output(2)],
    ));
    p.add_flow(flow(
        0,
        5,
        ip_dst_match(0x0a00_0000, 8),
        vec![Action::Output(3)],
    ));
    let mut dp = Datapath::new(snapshot(1, p), cfg(1024, 1, 1024));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 32);
    let mut pool = PacketPool::with_capacity(32);

    let got = run_batch(&mut dp, 1, &[pkt(0x0a00_0005, 1000)], &mut tx, &mut pool);
    assert_eq!(got[1].len(), 1, "first packet forwarded to port 2");
    assert_eq!(
        (
            dp.stats().misses,
            dp.stats().emc_hits,
            dp.stats().megaflow_hits
        ),
        (1, 0, 0)
    );

    // Same flow again: exact-match cache.
    run_batch(&mut dp, 1, &[pkt(0x0a00_0005, 1000)], &mut tx, &mut pool);
    assert_eq!(
        (
            dp.stats().misses,
            dp.stats().emc_hits,
            dp.stats().megaflow_hits
        ),
        (1, 1, 0)
    );

    // Differs only in a field nobody looked at (UDP source port): megaflow hit.
    let got = run_batch(&mut dp, 1, &[pkt(0x0a00_0005, 2000)], &mut tx, &mut pool);
    assert_eq!(got[1].len(), 1);
    assert_eq!(
        (
            dp.stats().misses,
            dp.stats().emc_hits,
            dp.stats().megaflow_hits
        ),
        (1, 1, 1)
    );
    assert!(dp.stats().subtables_per_hit() >= 1.0);

    // Differs in a looked-at field (another /24 inside 10/8): a new megaflow.
    let got = run_batch(&mut dp, 1, &[pkt(0x0a00_0105, 1000)], &mut tx, &mut pool);
    assert_eq!(got[2].len(), 1, "the /8 flow outputs on port 3");
    assert_eq!(dp.stats().misses, 2);
    assert_eq!(dp.megaflows().len(), 2);

    // Same flow from another in_port: in_port is always in the mask.
    run_batch(&mut dp, 3, &[pkt(0x0a00_0005, 1000)], &mut tx, &mut pool);
    assert_eq!(dp.stats().misses, 3);
    assert!(dp.stats().cycles > 0);
    assert_eq!(dp.stats().packets, 5);

    // A new generation flushes both caches.
    let mut p2 = Pipeline::new();
    p2.add_flow(flow(
        0,
        10,
        ip_dst_match(0x0a00_0000, 24),
        vec![Action::Output(3)],
    ));
    dp.set_snapshot(snapshot(2, p2));
    assert_eq!(dp.megaflows().len(), 0);
    let got = run_batch(&mut dp, 1, &[pkt(0x0a00_0005, 1000)], &mut tx, &mut pool);
    assert_eq!(
        got[2].len(),
        1,
        "the new pipeline's answer, not the cached one"
    );
    assert_eq!(dp.stats().misses, 4);
}

#[test]
fn emc_insert_probability_zero_never_inserts() {
    let mut p = Pipeline::new();
    p.add_flow(flow(0, 10, Match::CATCHALL, vec![Action::Output(2)]));
    let mut dp = Datapath::new(snapshot(1, p), cfg(1024, 0, 1024));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 32);
    let mut pool = PacketPool::with_capacity(32);
    let frames = vec![pkt(0x0a00_0005, 1000); 4];
    run_batch(&mut dp, 1, &frames, &mut tx, &mut pool);
    let s = dp.stats();
    assert_eq!((s.misses, s.emc_hits, s.megaflow_hits), (1, 0, 3));
    assert_eq!(dp.emc().occupied(), 0);
}

#[test]
fn megaflow_cache_is_bounded_and_evicts() {
    let mut p = Pipeline::new();
    // Matching on the UDP source port makes one megaflow per port.
    let mut m = Match::CATCHALL;
    m.set_exact(Field::EthType, u128::from(ethertype::IPV4));
    m.set_exact(Field::NwProto, u128::from(ipproto::UDP));
    m.set_exact(Field::TpSrc, 7);
    p.add_flow(flow(0, 10, m, vec![Action::Output(3)]));
    p.add_flow(flow(0, 1, Match::CATCHALL, vec![Action::Output(2)]));
    let mut dp = Datapath::new(snapshot(1, p), cfg(0, 1, 4));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 32);
    let mut pool = PacketPool::with_capacity(32);
    for sport in 0..20u16 {
        let got = run_batch(&mut dp, 1, &[pkt(0x0a00_0005, sport)], &mut tx, &mut pool);
        let want_port = if sport == 7 { 2 } else { 1 };
        assert_eq!(got[want_port].len(), 1, "sport {sport}");
        assert!(dp.megaflows().len() <= 4);
    }
    assert!(dp.megaflows().counters.evicted >= 16);
}

// ---------------------------------------------------------------------------
// (c) per-rule statistics
// ---------------------------------------------------------------------------

#[test]
fn rule_stats_after_push_equal_packets_sent() {
    let mut p = Pipeline::new();
    p.add_flow(flow(
        0,
        10,
        ip_dst_match(0x0a00_0000, 24),
        vec![Action::Output(2), Action::GotoTable(1)],
    ));
    p.add_flow(flow(0, 5, Match::CATCHALL, vec![Action::Output(3)]));
    p.add_flow(flow(
        1,
        5,
        Match::CATCHALL,
        vec![Action::DecTtl, Action::Output(3)],
    ));
    let snap = snapshot(1, p);
    let mut dp = Datapath::new(snap.clone(), cfg(1024, 1, 1024));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 64);
    let mut pool = PacketPool::with_capacity(64);

    let a = pkt(0x0a00_0005, 1);
    let b = pkt(0x0b00_0005, 1);
    let mut frames = Vec::new();
    for i in 0..10 {
        frames.push(a.clone());
        if i % 2 == 0 {
            frames.push(b.clone());
        }
    }
    for chunk in frames.chunks(4) {
        run_batch(&mut dp, 1, chunk, &mut tx, &mut pool);
    }
    let rules: Vec<Arc<Rule>> = snap.pipeline.rules().cloned().collect();
    let get = |table: u8, prio: u16| {
        rules
            .iter()
            .find(|r| r.flow.table == table && r.flow.priority == prio)
            .unwrap()
            .stats
            .clone()
    };
    use std::sync::atomic::Ordering::Relaxed;
    // Nothing is credited before a push.
    assert_eq!(get(0, 10).n_packets.load(Relaxed), 0);
    dp.push_stats();
    assert_eq!(get(0, 10).n_packets.load(Relaxed), 10);
    assert_eq!(get(0, 10).n_bytes.load(Relaxed), 10 * a.len() as u64);
    assert_eq!(get(1, 5).n_packets.load(Relaxed), 10);
    assert_eq!(get(0, 5).n_packets.load(Relaxed), 5);
    assert_eq!(get(0, 5).n_bytes.load(Relaxed), 5 * b.len() as u64);
    assert!(get(0, 10).last_used_ms.load(Relaxed) > 0);
    let t0 = &snap.pipeline.table(0).stats;
    let t1 = &snap.pipeline.table(1).stats;
    assert_eq!(t0.lookups.load(Relaxed), 15);
    assert_eq!(t0.matched.load(Relaxed), 15);
    assert_eq!(t1.lookups.load(Relaxed), 10);

    // A second push without traffic adds nothing.
    dp.push_stats();
    assert_eq!(get(0, 10).n_packets.load(Relaxed), 10);

    // A new snapshot pushes pending stats before flushing.
    run_batch(&mut dp, 1, &[a.clone(), a.clone()], &mut tx, &mut pool);
    let next = Arc::new(Snapshot {
        generation: 2,
        pipeline: Arc::new((*snap.pipeline).clone()),
        ports: PORTS.to_vec(),
    });
    dp.set_snapshot(next);
    assert_eq!(get(0, 10).n_packets.load(Relaxed), 12);
    assert_eq!(dp.megaflows().len(), 0);
}

#[test]
fn evicted_megaflow_stats_are_not_lost() {
    let mut p = Pipeline::new();
    let mut m = Match::CATCHALL;
    m.set_exact(Field::EthType, u128::from(ethertype::IPV4));
    m.set_exact(Field::NwProto, u128::from(ipproto::UDP));
    m.set_exact(Field::TpSrc, 7);
    p.add_flow(flow(0, 10, m, vec![Action::Output(3)]));
    p.add_flow(flow(0, 1, Match::CATCHALL, vec![Action::Output(2)]));
    let snap = snapshot(1, p);
    let mut dp = Datapath::new(snap.clone(), cfg(0, 1, 2));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 32);
    let mut pool = PacketPool::with_capacity(32);
    for sport in 0..30u16 {
        run_batch(&mut dp, 1, &[pkt(0x0a00_0005, sport)], &mut tx, &mut pool);
    }
    dp.push_stats();
    let total: u64 = snap
        .pipeline
        .rules()
        .map(|r| r.stats.n_packets.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(total, 30);
}

// ---------------------------------------------------------------------------
// (d) drop reasons
// ---------------------------------------------------------------------------

fn drops(dp: &Datapath, port: PortNo, r: DropReason) -> u64 {
    let i = dp.port_index(port).unwrap_or(PORTS.len());
    dp.stats().ports[i].drop_count(r)
}

#[test]
fn drop_reasons_are_counted_per_ingress_port() {
    let mut p = Pipeline::new();
    // 10.0.0.1: no flow. 10.0.1.x: explicit drop. 10.0.2.x: dec_ttl then output.
    // 10.0.3.x: output to a port not in the snapshot. 10.0.4.x: resubmit loop.
    p.add_flow(flow(0, 10, ip_dst_match(0x0a00_0100, 24), vec![]));
    p.add_flow(flow(
        0,
        10,
        ip_dst_match(0x0a00_0200, 24),
        vec![Action::DecTtl, Action::Output(2)],
    ));
    p.add_flow(flow(
        0,
        10,
        ip_dst_match(0x0a00_0300, 24),
        vec![Action::Output(9)],
    ));
    p.add_flow(flow(
        0,
        10,
        ip_dst_match(0x0a00_0400, 24),
        vec![
            Action::Output(2),
            Action::Resubmit {
                in_port: None,
                table: Some(0),
            },
        ],
    ));
    let mut dp = Datapath::new(snapshot(1, p), cfg(1024, 1, 1024));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 32);
    let mut pool = PacketPool::with_capacity(32);

    run_batch(&mut dp, 1, &[pkt(0x0a00_0001, 1)], &mut tx, &mut pool);
    assert_eq!(drops(&dp, 1, DropReason::NoFlow), 1);
    run_batch(
        &mut dp,
        2,
        &[pkt(0x0a00_0101, 1), pkt(0x0a00_0101, 2)],
        &mut tx,
        &mut pool,
    );
    assert_eq!(drops(&dp, 2, DropReason::ExplicitDrop), 2);
    assert_eq!(drops(&dp, 1, DropReason::ExplicitDrop), 0);

    let mut ttl1 = Pkt {
        dst_mac: 1,
        nw_dst: 0x0a00_0201,
        tcp: true,
        sport: 1,
        dport: 80,
        ttl: 1,
        len: 0,
    };
    let got = run_batch(&mut dp, 1, &[frame(&ttl1)], &mut tx, &mut pool);
    assert!(got.iter().all(Vec::is_empty));
    assert_eq!(drops(&dp, 1, DropReason::InvalidTtl), 1);
    ttl1.ttl = 64;
    let got = run_batch(&mut dp, 1, &[frame(&ttl1)], &mut tx, &mut pool);
    assert_eq!(got[1].len(), 1);
    assert_eq!(got[1][0][22], 63, "TTL decremented on the wire");

    run_batch(&mut dp, 3, &[pkt(0x0a00_0301, 1)], &mut tx, &mut pool);
    assert_eq!(drops(&dp, 3, DropReason::NoPort), 1);

    let got = run_batch(&mut dp, 1, &[pkt(0x0a00_0401, 1)], &mut tx, &mut pool);
    assert!(
        got.iter().all(Vec::is_empty),
        "resubmit loop drops the whole packet"
    );
    assert_eq!(drops(&dp, 1, DropReason::ResubmitDepth), 1);

    // An ingress port not in the snapshot lands in the last slot.
    run_batch(&mut dp, 77, &[pkt(0x0a00_0001, 1)], &mut tx, &mut pool);
    assert_eq!(
        dp.stats()
            .ports
            .last()
            .unwrap()
            .drop_count(DropReason::NoFlow),
        1
    );
    assert_eq!(dp.stats().drops(DropReason::NoFlow), 2);
    assert_eq!(DropReason::NoFlow.name(), "no_flow");
    assert_eq!(DropReason::InvalidTtl.name(), "invalid_ttl");
    assert_eq!(pool.available(), 32);
}

#[test]
fn pool_empty_and_tx_full_are_counted() {
    let mut p = Pipeline::new();
    p.add_flow(flow(
        0,
        10,
        Match::CATCHALL,
        vec![Action::Output(2), Action::Output(3)],
    ));
    let mut dp = Datapath::new(snapshot(1, p), cfg(1024, 1, 1024));
    dp.set_translator(ref_translate);
    let mut tx = TxBatches::new(3, 1);
    let mut pool = PacketPool::with_capacity(0);
    // Two packets, pool empty: copies for port 2 fail; port 3's batch (capacity 1)
    // takes the first original, the second is a tx_full drop.
    let mut batch = vec![
        Packet::from_slice(&pkt(0x0a00_0001, 1)).unwrap(),
        Packet::from_slice(&pkt(0x0a00_0001, 2)).unwrap(),
    ];
    dp.process_batch(1, &mut batch, &mut tx, &mut pool);
    assert_eq!(drops(&dp, 1, DropReason::PoolEmpty), 2);
    assert_eq!(drops(&dp, 1, DropReason::TxFull), 1);
    assert_eq!(tx.queue(1).len(), 0);
    assert_eq!(tx.queue(2).len(), 1);
    assert_eq!(
        pool.available(),
        1,
        "the tx_full packet went back to the pool"
    );
}

fn bad_translate(_: &Pipeline, _: &[PortNo], key: &FlowKey) -> Xlation {
    let mut mask = FlowKey::ZERO;
    mask.in_port = u32::MAX;
    Xlation {
        mask,
        actions: vec![
            DpAction::SetIpv4 {
                src: None,
                dst: Some(0x0102_0304),
                tos: None,
                ttl: None,
            },
            DpAction::Output(2),
        ],
        rules: Vec::new(),
        tables: Vec::new(),
        outputs: Vec::new(),
        final_key: *key,
        group_counters: Vec::new(),
        drop: None,
    }
}

#[test]
fn truncated_and_unfit_frames_are_counted_drops() {
    let mut dp = Datapath::new(snapshot(1, Pipeline::new()), cfg(1024, 1, 1024));
    dp.set_translator(bad_translate);
    let mut tx = TxBatches::new(3, 8);
    let mut pool = PacketPool::with_capacity(8);
    let full = pkt(0x0a00_0001, 1);
    // Cut inside the IPv4 header: extraction says Truncated, SetIpv4 cannot apply.
    let got = run_batch(&mut dp, 1, &[full[..20].to_vec()], &mut tx, &mut pool);
    assert!(got.iter().all(Vec::is_empty));
    let ps = dp.stats().ports[0];
    assert_eq!(ps.rx_truncated, 1);
    assert_eq!(ps.drop_count(DropReason::Truncated), 1);
    // An ARP frame: parses fine, but has no IPv4 header to rewrite.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&mac(1));
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    run_batch(&mut dp, 1, &[arp], &mut tx, &mut pool);
    assert_eq!(dp.stats().ports[0].drop_count(DropReason::ActionFailed), 1);
    // A complete frame is rewritten and sent.
    let got = run_batch(&mut dp, 1, &[full], &mut tx, &mut pool);
    assert_eq!(&got[1][0][30..34], &[1, 2, 3, 4]);
    assert_eq!(pool.available(), 8);
}
