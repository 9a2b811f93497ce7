//! The connection tracker per packet (`Conntrack::execute`, what the
//! datapath's `ct` action costs on top of re-extraction):
//! - `lookup/{1000,1000000}`: an established UDP connection's packet, with N
//!   connections committed, probes cycling over all N in a shuffled order
//!   (at 1M the working set is the whole table, as with 1M live flows);
//! - `commit_existing/{1000,1000000}`: the same with `commit` and a mark
//!   write (the ACL's commit-and-forward on a known connection);
//! - `new_connection/{1000,1000000}`: commit of a connection not yet in the
//!   table (new connections per second = 1 / this time), on a table holding
//!   N; each iteration commits a fresh tuple (in zone 2), and zone 2 is
//!   flushed between chunks of at most min(N/5, 200k) (at least 200) so the
//!   table stays between N and 1.2 N (the first version used 200k chunks for
//!   every N, so `new_connection/1000` ran on a table of up to 201k).
//!
//! Run: `flock /work/wt/bench.lock cargo bench -p perf --bench conntrack`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switch::conntrack::{Conntrack, CtExec};
use switch::flow::FlowKey;
use switch::packet::{extract, FrameBuilder, Layout};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// UDP packet number `i`: 10.a.b.c:sport -> 10.200.0.1:53 (distinct per i).
fn packet(i: u32) -> (Vec<u8>, Layout, FlowKey) {
    let src = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    let f = FrameBuilder::new()
        .eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 200, 0, 1])
        .udp(1024 + (i % 60000) as u16, 53)
        .build();
    let mut k = FlowKey::ZERO;
    let lay = extract(&f, 1, &mut k);
    (f, lay, k)
}

fn filled(n: u32) -> (Conntrack, Vec<(Vec<u8>, Layout, FlowKey)>) {
    let ct = Conntrack::new(4_000_000);
    let commit = CtExec {
        zone: 1,
        commit: true,
        ..CtExec::default()
    };
    let mut pkts: Vec<_> = (0..n).map(packet).collect();
    for (f, l, k) in &pkts {
        ct.execute(f, l, k, &commit, 0);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in (1..pkts.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        pkts.swap(i, j);
    }
    (ct, pkts)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(30);
    let look = CtExec {
        zone: 1,
        ..CtExec::default()
    };
    let commit = CtExec {
        zone: 1,
        commit: true,
        mark: (1, 1),
        label: (0, 0),
        nat: None,
    };
    let commit_new = CtExec { zone: 2, ..commit };
    for n in [1000u32, 1_000_000] {
        let (ct, pkts) = filled(n);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("lookup", n), &n, |b, _| {
            b.iter(|| {
                let (f, l, k) = &pkts[i % pkts.len()];
                i += 1;
                black_box(ct.execute(f, l, k, &look, 1))
            })
        });
        g.bench_with_input(BenchmarkId::new("commit_existing", n), &n, |b, _| {
            b.iter(|| {
                let (f, l, k) = &pkts[i % pkts.len()];
                i += 1;
                black_box(ct.execute(f, l, k, &commit, 1))
            })
        });
        // Fresh tuples: destination port varies, so no collision with the
        // N committed ones (all to port 53).
        let chunk = u64::from(n / 5).clamp(200, 200_000);
        g.bench_with_input(BenchmarkId::new("new_connection", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let frames: Vec<_> = (0..iters.min(chunk))
                    .map(|j| {
                        let f = FrameBuilder::new()
                            .eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                            .ipv4([10, 250, (j >> 8) as u8, j as u8], [10, 200, 0, 2])
                            .udp(1024 + (j >> 16) as u16, 80)
                            .build();
                        let mut k = FlowKey::ZERO;
                        let lay = extract(&f, 1, &mut k);
                        (f, lay, k)
                    })
                    .collect();
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let m = (iters - done).min(frames.len() as u64) as usize;
                    let t = Instant::now();
                    for (f, l, k) in &frames[..m] {
                        black_box(ct.execute(f, l, k, &commit_new, 1));
                    }
                    total += t.elapsed();
                    done += m as u64;
                    // Back to N connections (untimed): forget the new ones
                    // (zone 2), keep the N of zone 1.
                    ct.flush(Some(2));
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
