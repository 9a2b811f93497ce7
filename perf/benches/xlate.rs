//! Slow-path translation (`switch::pipeline::translate`) through the
//! 4-table L3 pipeline of `perf::l3_flows` (in_port → L2 → L3 with dec_ttl
//! and MAC rewrite → output), with 1 and 1000 /32 routes in table 2.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switch::datapath::DpAction;
use switch::flow::FlowKey;
use switch::packet::extract;
use switch::pipeline::translate;

fn bench_xlate(c: &mut Criterion) {
    let mut g = c.benchmark_group("xlate");
    g.throughput(Throughput::Elements(1));
    for routes in [1u32, 1000] {
        let p = perf::l3_pipeline(routes);
        let keys: Vec<FlowKey> = (0..routes)
            .map(|i| {
                let mut k = FlowKey::ZERO;
                extract(&perf::udp_frame(i), perf::IN_PORT, &mut k);
                k
            })
            .collect();
        // Sanity: the fixture really routes (an empty answer would bench a drop).
        let x = translate(&p, &perf::PORTS, &keys[0]);
        assert!(
            x.actions.contains(&DpAction::Output(perf::OUT_PORT)) && x.drop.is_none(),
            "the fixture routes: {:?}",
            x.actions
        );
        g.bench_with_input(BenchmarkId::new("4_tables", routes), &keys, |b, keys| {
            let mut i = 0;
            b.iter(|| {
                let k = &keys[i];
                i = (i + 1) % keys.len();
                black_box(translate(&p, &perf::PORTS, black_box(k)))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_xlate
}
criterion_main!(benches);
