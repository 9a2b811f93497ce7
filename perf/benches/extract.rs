//! Per-packet key extraction (`switch::packet::extract`) on three frame
//! shapes, with etherparse's `SlicedPacket` on the same UDP frame as a
//! reference in the same group.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switch::flow::FlowKey;
use switch::packet::extract;

fn bench_extract(c: &mut Criterion) {
    let udp = perf::udp_frame(0);
    let vlan_tcp = perf::vlan_tcp_frame();
    let ipv6 = perf::ipv6_udp_frame();
    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in [
        ("udp4_60B", &udp),
        ("vlan_tcp4", &vlan_tcp),
        ("udp6", &ipv6),
    ] {
        g.bench_function(name, |b| {
            let mut key = FlowKey::ZERO;
            b.iter(|| {
                let lay = extract(black_box(frame), 1, &mut key);
                black_box((&key, lay));
            })
        });
    }
    g.bench_function("etherparse_sliced_udp4_60B", |b| {
        b.iter(|| {
            let s = etherparse::SlicedPacket::from_ethernet(black_box(&udp));
            let _ = black_box(s);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_extract
}
criterion_main!(benches);
