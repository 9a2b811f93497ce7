//! The L3 pipeline with and without a commit-and-forward conntrack ACL in
//! front of it, in one criterion group so the ratio comes from one run
//! (issue 7: "at most 1.5x the cost"). A whole run over `LoopPort`s, per
//! packet, batches of 32, as `pipeline.rs`:
//!
//! - `l3_pipeline/{1,1000}`: the 4-table L3 pipeline of `pipeline.rs`
//!   (1000 routes), cache hits;
//! - `l3_with_acl/{1,1000}`: the same frames through `perf::acl_flows`:
//!   table 0 sends IP through `ct(table=1,zone=1)`, table 1 commits
//!   `+trk+new` and lets `+trk+est` on to the same L3 pipeline (tables
//!   10-13), what `ferroswitch-policy` emits for allowed traffic. Every
//!   connection is established beforehand (its reply went through the
//!   tracker), so each packet is one EMC hit, one `ct` answered by the
//!   EMC entry's connection token (the established-connection fast path:
//!   no tracker lookup), one recirculation whose second pass is answered
//!   by the entry's recirculation hint and run directly (no recirculated
//!   key, no recirculation stack); `assert_fast_path` checks all three,
//!   untimed;
//! - `new_connections/1`: every packet a new UDP 5-tuple (to one route)
//!   through the ACL pipeline: `ct` lookup (+new), recirculation, `ct(commit)`
//!   inserting the connection, the L3 pipeline, output. New connections per
//!   second = 1 / the time per packet. The tracker is flushed (untimed) every
//!   16384 connections, when the frames start over, so it holds 0-16k.
//!
//! Run: `flock /work/wt/bench.lock taskset -c 1 cargo bench -p perf --bench acl`.
//!
//! `cargo bench -p perf --bench acl -- interleaved` instead measures the same
//! rigs with the TSC, round by round (31 rounds; in each, 1000 batches
//! without the ACL, then 1000 with it, then 512 batches of new connections),
//! so that both sides of each ratio see the same machine load, and prints
//! per-packet medians, min-max and the median of the per-round ratios: on a
//! shared machine the criterion figures, measured seconds apart, can move 2x
//! from one function to the next.

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::sync::Arc;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use switch::conntrack::{Conntrack, CtExec};
use switch::datapath::cycles_now;
use switch::flow::FlowKey;
use switch::packet::extract;

/// Distinct connections the new-connection case replays before a flush.
const NEW_CHUNK: u32 = 16_384;

/// The L3 pipeline over `flows` flows, warm: every flow has its megaflow.
fn plain_rig(flows: u32) -> perf::Rig {
    let mut plain = perf::Rig::new(perf::udp_frames(flows), perf::l3_pipeline(1000));
    plain.warm(64 + 4 * flows as usize / perf::BATCH);
    assert_eq!(plain.dp.stats().misses, u64::from(flows));
    plain
}

/// The same behind the ACL, every flow's connection established and its
/// megaflows (pass 1, +new, +est) installed.
fn acl_rig(flows: u32) -> (perf::Rig, Arc<Conntrack>) {
    let warm = 64 + 4 * flows as usize / perf::BATCH;
    let pipeline = perf::acl_pipeline(1000);
    let ct = pipeline.conntrack_arc();
    let mut acl = perf::Rig::new(perf::udp_frames(flows), pipeline);
    // First packets: +new, committed.
    acl.warm(warm);
    assert_eq!(ct.len(), flows as usize, "one connection per flow");
    // The replies make them established (Linux/OVS: +est once a reply
    // was seen), then warm the +est megaflows.
    let look = CtExec {
        zone: 1,
        ..CtExec::default()
    };
    for i in 0..flows {
        let f = perf::udp_reply_frame(i);
        let mut k = FlowKey::ZERO;
        let lay = extract(&f, perf::OUT_PORT, &mut k);
        let v = ct.execute(&f, &lay, &k, &look, ct.now_ms());
        assert_ne!(
            v.state & switch::flow::key::ct_state::RPL,
            0,
            "reply of flow {i}"
        );
    }
    acl.warm(warm);
    // One megaflow for pass 1 (ct), one per flow for +new, one per flow for +est.
    assert_eq!(acl.dp.stats().misses, 1 + 2 * u64::from(flows));
    assert_fast_path(&mut acl);
    (acl, ct)
}

/// What `l3_with_acl` claims to measure, checked untimed: the packets of a
/// few more batches took the established-connection fast path (a current
/// connection token: no tracker lookup) and their second pass the
/// recirculation hint (no second EMC lookup), run as a direct pass (no
/// recirculated key, no recirculation stack). All of them with one flow;
/// with 1000, the 2000 keys of both passes share the 8192-slot 2-way EMC
/// and a few collide (their flows take the megaflow and the slow `ct`), so
/// at least 99 %.
fn assert_fast_path(acl: &mut perf::Rig) {
    let s0 = acl.dp.stats().clone();
    acl.warm(32);
    let s = acl.dp.stats();
    let packets = s.packets - s0.packets;
    let fast = s.ct_fast_hits - s0.ct_fast_hits;
    let hinted = s.recirc_hint_hits - s0.recirc_hint_hits;
    let direct = s.direct_passes - s0.direct_passes;
    let enough = |n: u64| n <= packets && 100 * n >= 99 * packets;
    assert!(enough(fast), "{fast} of {packets} ct fast: {s:?}");
    assert!(enough(hinted), "{hinted} of {packets} hinted: {s:?}");
    assert!(enough(direct), "{direct} of {packets} direct: {s:?}");
    if s.misses == 3 {
        assert_eq!(
            (fast, hinted, direct),
            (packets, packets, packets),
            "one flow: all of them"
        );
    }
}

/// The new-connection rig: [`NEW_CHUNK`] distinct tuples, megaflows
/// installed, the tracker empty.
fn new_conn_rig() -> (perf::Rig, Arc<Conntrack>) {
    let pipeline = perf::acl_pipeline(1000);
    let ct = pipeline.conntrack_arc();
    let mut rig = perf::Rig::new(perf::new_connection_frames(NEW_CHUNK), pipeline);
    rig.warm(2);
    assert_eq!(
        ct.len(),
        2 * perf::BATCH,
        "every packet committed its own connection"
    );
    assert_eq!(rig.dp.stats().misses, 2, "pass 1 and pass 2 megaflows");
    ct.flush(Some(1));
    (rig, ct)
}

fn bench_acl(c: &mut Criterion) {
    let mut g = c.benchmark_group("acl");
    g.throughput(Throughput::Elements(perf::BATCH as u64));
    for flows in [1u32, 1000] {
        let mut plain = plain_rig(flows);
        let plain_misses = plain.dp.stats().misses;
        let (mut acl, ct) = acl_rig(flows);
        let acl_misses = acl.dp.stats().misses;
        let recirc0 = acl.dp.stats().recirculations;

        g.bench_function(BenchmarkId::new("l3_pipeline", flows), |b| {
            b.iter(|| black_box(perf::forward_batch(&mut plain)))
        });
        g.bench_function(BenchmarkId::new("l3_with_acl", flows), |b| {
            b.iter(|| black_box(perf::forward_batch(&mut acl)))
        });
        let (p, a) = (plain.dp.stats(), acl.dp.stats());
        assert_eq!(
            p.misses, plain_misses,
            "the measured batches were cache hits"
        );
        assert_eq!(a.misses, acl_misses, "the measured batches were cache hits");
        assert_eq!(p.total_drops(), 0);
        assert_eq!(a.total_drops(), 0);
        assert!(
            a.recirculations - recirc0 >= a.packets - a.recirculations,
            "every measured packet was recirculated once"
        );
        assert_eq!(ct.len(), flows as usize, "no connection was added");
        assert_fast_path(&mut acl);
    }

    // New connections through the whole pipeline.
    let (mut rig, ct) = new_conn_rig();
    let batches = (NEW_CHUNK as usize) / perf::BATCH;
    // The port replays from the start after `batches` batches.
    let mut pos = 2usize;
    let tx0 = rig.dp.stats().tx_packets;
    g.bench_function(BenchmarkId::new("new_connections", 1), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let m = (iters - done).min((batches - pos) as u64);
                let t = Instant::now();
                for _ in 0..m {
                    black_box(perf::forward_batch(&mut rig));
                }
                total += t.elapsed();
                done += m;
                pos += m as usize;
                if pos == batches {
                    // The frames start over: forget their connections
                    // (untimed) so they are new again.
                    ct.flush(Some(1));
                    pos = 0;
                }
            }
            total
        })
    });
    let s = rig.dp.stats();
    assert_eq!(s.misses, 2, "every measured packet hit the megaflows");
    assert_eq!(s.total_drops(), 0);
    assert_eq!(
        ct.stats().commits,
        s.tx_packets - tx0 + 2 * perf::BATCH as u64,
        "every forwarded packet committed a connection"
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench_acl
}

const ROUNDS: usize = 31;
const BATCHES_PER_ROUND: usize = 1000;

fn median_min_max(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// TSC cycles per packet of `n` batches through `rig`.
fn cycles_per_packet(rig: &mut perf::Rig, n: usize) -> f64 {
    let c0 = cycles_now();
    let mut sent = 0;
    for _ in 0..n {
        sent += black_box(perf::forward_batch(rig));
    }
    let c = cycles_now().wrapping_sub(c0) as f64;
    assert_eq!(sent, n * perf::BATCH, "every packet forwarded");
    c / sent as f64
}

/// The interleaved measurement (see the file header).
fn interleaved() {
    let (t0, c0) = (Instant::now(), cycles_now());
    while t0.elapsed().as_millis() < 200 {
        std::hint::spin_loop();
    }
    let ghz = cycles_now().wrapping_sub(c0) as f64 / t0.elapsed().as_nanos() as f64;
    println!("TSC: {ghz:.3} GHz; {ROUNDS} rounds; ns per packet, median [min-max]");
    let (mut newc, ct_new) = new_conn_rig();
    let new_batches = NEW_CHUNK as usize / perf::BATCH;
    for flows in [1u32, 1000] {
        let mut plain = plain_rig(flows);
        let (mut acl, _ct) = acl_rig(flows);
        let (mut p, mut a, mut r, mut n) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let pc = cycles_per_packet(&mut plain, BATCHES_PER_ROUND);
            let ac = cycles_per_packet(&mut acl, BATCHES_PER_ROUND);
            let nc = cycles_per_packet(&mut newc, new_batches);
            ct_new.flush(Some(1));
            p.push(pc / ghz);
            a.push(ac / ghz);
            n.push(nc / ghz);
            r.push(ac / pc);
        }
        for (name, v) in [
            ("l3_pipeline", &mut p),
            ("l3_with_acl", &mut a),
            ("new_connections (1 route)", &mut n),
        ] {
            let (m, lo, hi) = median_min_max(v);
            println!("{name}/{flows}: {m:.1} ns [{lo:.1}-{hi:.1}]");
        }
        let (m, lo, hi) = median_min_max(&mut r);
        println!("ratio with/without ACL/{flows}: {m:.2} [{lo:.2}-{hi:.2}]");
        let s = acl.dp.stats();
        assert_eq!(s.misses, 1 + 2 * u64::from(flows), "all cache hits");
        assert_eq!(s.total_drops(), 0);
        assert_fast_path(&mut acl);
    }
    assert_eq!(newc.dp.stats().total_drops(), 0);
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "interleaved") {
        interleaved();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
