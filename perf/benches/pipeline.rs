//! A whole run over `LoopPort`s, per packet, batches of 32: frames rx'd from
//! a LoopPort (copied into pool buffers), `Datapath::process_batch` through
//! the 4-table L3 pipeline on cache hits, tx to a LoopPort sink; and, in the
//! same group, the bare port-to-port forward (same ports, same batching, no
//! datapath), and the one-flow in_port pipeline through the datapath, so the
//! ratios are measured in one run. Variants: one
//! flow, and 1000 flows (1000 destination IPs, 1000 routes, 1000 megaflows).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(perf::BATCH as u64));
    for flows in [1u32, 1000] {
        // 1000 routes in table 2 either way: the same pipeline as OVS's anchor.
        let mut rig = perf::Rig::new(perf::udp_frames(flows), perf::l3_pipeline(1000));
        rig.warm(64 + 4 * flows as usize / perf::BATCH);
        let misses = rig.dp.stats().misses;
        assert_eq!(
            misses,
            u64::from(flows),
            "one upcall per flow, then cache hits"
        );
        g.bench_function(BenchmarkId::new("bare_forward", flows), |b| {
            b.iter(|| black_box(perf::bare_forward_batch(&mut rig)))
        });
        // The same frames through the datapath with the one-flow in_port
        // pipeline: what the 4-table pipeline costs on cache hits over the
        // simplest switching job (OVS anchor: "in_port forwarding").
        let mut simple = perf::Rig::new(perf::udp_frames(flows), perf::in_port_pipeline());
        simple.warm(64 + 4 * flows as usize / perf::BATCH);
        assert_eq!(
            simple.dp.stats().misses,
            1,
            "one megaflow covers every frame"
        );
        g.bench_function(BenchmarkId::new("in_port_forward", flows), |b| {
            b.iter(|| black_box(perf::forward_batch(&mut simple)))
        });
        assert_eq!(simple.dp.stats().total_drops(), 0);
        g.bench_function(BenchmarkId::new("4_table_pipeline", flows), |b| {
            b.iter(|| black_box(perf::forward_batch(&mut rig)))
        });
        let s = rig.dp.stats();
        assert_eq!(s.misses, misses, "the measured batches were all cache hits");
        assert_eq!(s.total_drops(), 0);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench_pipeline
}
criterion_main!(benches);
