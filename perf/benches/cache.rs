//! The datapath caches and the slow path's classifier, per lookup, on hits:
//! - `emc/hit`: exact-match cache, `key_hash` (the datapath's EMC hash) + lookup, keys cycling over 1
//!   and 1000 cached flows (8192-slot EMC, as the datapath's default);
//! - `megaflow/{1,1000,100000}`: megaflow lookup with N megaflows installed
//!   under one mask (the mask the 4-table L3 pipeline really produces:
//!   in_port, dl_dst, dl_type, nw_dst/32, nw_ttl...), i.e. N distinct /32
//!   destinations; probe keys visit every installed flow in a shuffled order,
//!   so at 100k the working set is the whole cache, as with 100k live flows;
//! - `megaflow/1_mask_1k_active/100000`: 100k installed, probes visiting 1000
//!   of them (a big cache whose active set is small: shows the hash table's
//!   own scaling apart from the memory hierarchy);
//! - `megaflow/4_masks/100000`: 100k megaflows spread over 4 masks (the L3
//!   mask, plus tp_dst, plus nw_src, plus tp_src), probes as above;
//! - `megaflow/<case>_batch32/<N>`: the same cases through
//!   `MegaflowCache::lookup_batch`, 32 keys per call (per key figures), as
//!   the datapath looks up a batch's EMC misses;
//! - `classifier/tss/{1000,100000}` vs `classifier/linear/1000`: one
//!   OpenFlow table of LPM-style rules, 80 % nw_dst /32 (priority 32), 10 %
//!   /24 (priority 24), 10 % /16 (priority 16), looked up with keys that each
//!   hit a random rule (a /24 or /16 hit probes 2 or 3 subtables).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switch::datapath::{key_hash, DpAction, Emc, MegaflowCache, MegaflowHandle, MegaflowInstall};
use switch::flow::{FlowKey, FlowMask, Match};
use switch::packet::extract;
use switch::pipeline::classifier::{Classifier, LinearClassifier};
use switch::pipeline::{translate, Pipeline};

/// Deterministic xorshift64 for shuffles.
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
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The key of the bench's UDP frame to destination `dst` (host order).
fn key_to(dst: u32) -> FlowKey {
    let mut k = FlowKey::ZERO;
    extract(&perf::udp_frame(0), perf::IN_PORT, &mut k);
    k.nw_dst = dst;
    k
}

/// The megaflow mask the 4-table pipeline produces for a routed packet
/// (plus in_port, which the datapath always adds).
fn l3_megaflow_mask() -> FlowMask {
    let p = perf::l3_pipeline(1);
    let x = translate(&p, &perf::PORTS, &key_to(u32::from(perf::route_dst(0))));
    let mut m = x.mask;
    m.in_port = u32::MAX;
    m
}

fn install(
    mf: &mut MegaflowCache,
    key: &FlowKey,
    mask: FlowMask,
    p: &Pipeline,
    epoch: Instant,
) -> MegaflowHandle {
    mf.install(
        key,
        MegaflowInstall {
            mask,
            actions: vec![DpAction::Output(perf::OUT_PORT)].into_boxed_slice(),
            out_idx: vec![1].into_boxed_slice(),
            last_output: Some(0),
            drop: None,
            rules: Vec::new(),
            tables: Vec::new(),
            groups: Vec::new(),
        },
        p,
        epoch,
    )
}

fn bench_emc(c: &mut Criterion) {
    let mut g = c.benchmark_group("emc");
    g.throughput(Throughput::Elements(1));
    let p = Pipeline::new();
    let epoch = Instant::now();
    let mask = l3_megaflow_mask();
    for flows in [1u32, 1000] {
        let mut mf = MegaflowCache::new(65536);
        let mut emc = Emc::new(8192, 1);
        let mut keys: Vec<FlowKey> = (0..flows).map(|i| key_to(0x0a00_0001 + i)).collect();
        for k in &keys {
            let h = install(&mut mf, k, mask, &p, epoch);
            emc.insert(k, key_hash(k), h, |_| true);
        }
        // Keep the keys the 2-way cache kept (a few collide at 1000 in 8192).
        keys.retain(|k| emc.lookup(k, key_hash(k)).is_some());
        assert!(keys.len() as u32 >= flows * 9 / 10);
        Rng(7).shuffle(&mut keys);
        g.bench_function(BenchmarkId::new("hit", flows), |b| {
            let mut i = 0;
            b.iter(|| {
                let k = &keys[i];
                i = (i + 1) % keys.len();
                black_box(emc.lookup(k, key_hash(black_box(k))))
            })
        });
    }
    g.finish();
}

fn bench_megaflow(c: &mut Criterion) {
    let mut g = c.benchmark_group("megaflow");
    g.throughput(Throughput::Elements(1));
    let p = Pipeline::new();
    let epoch = Instant::now();
    let l3 = l3_megaflow_mask();
    let mut extra = [l3; 4];
    extra[1].tp_dst = u16::MAX;
    extra[2].nw_src = u32::MAX;
    extra[3].tp_src = u16::MAX;
    // (name, megaflows installed, masks, flows the probes visit)
    let cases: [(&str, u32, &[FlowMask], u32); 5] = [
        ("1_mask", 1, &extra[..1], 1),
        ("1_mask", 1000, &extra[..1], 1000),
        ("1_mask", 100_000, &extra[..1], 100_000),
        ("1_mask_1k_active", 100_000, &extra[..1], 1000),
        ("4_masks", 100_000, &extra[..], 100_000),
    ];
    for (name, n, masks, active) in cases {
        let mut mf = MegaflowCache::new(200_000);
        let mut keys: Vec<FlowKey> = (0..n).map(|i| key_to(0x0a00_0001 + i)).collect();
        for (i, k) in keys.iter().enumerate() {
            install(&mut mf, k, masks[i % masks.len()], &p, epoch);
        }
        assert_eq!(mf.len(), n as usize);
        assert_eq!(mf.n_subtables(), masks.len());
        Rng(11).shuffle(&mut keys);
        keys.truncate(active as usize);
        // Vary a field no mask looks at, so hits are on wildcarded megaflows.
        for (i, k) in keys.iter_mut().enumerate() {
            k.tcp_flags = (i & 0xfff) as u16;
        }
        let mut probes = 0u64;
        for k in &keys {
            let (h, pr) = mf.lookup(k);
            assert!(h.is_some(), "every probe key hits");
            probes += u64::from(pr);
        }
        eprintln!(
            "megaflow {name}/{n}: {:.2} subtables probed per hit",
            probes as f64 / keys.len() as f64
        );
        mf.resort();
        g.bench_function(BenchmarkId::new(name, n), |b| {
            let mut i = 0;
            b.iter(|| {
                let k = &keys[i];
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                black_box(mf.lookup(black_box(k)))
            })
        });
        // Batched: 32 keys per `lookup_batch` (a datapath batch of EMC
        // misses), reported per key. Batches of 32 consecutive shuffled
        // keys, wrapping around the key list.
        let mut ring = keys.clone();
        while ring.len() < keys.len() + 32 {
            let more: Vec<FlowKey> = keys.iter().take(32).copied().collect();
            ring.extend(more);
        }
        let mut out = [MegaflowHandle::NONE; 32];
        let mut probes = [0u32; 32];
        assert_eq!(
            mf.lookup_batch(&ring[..32], u32::MAX, &mut out, &mut probes),
            u32::MAX,
            "every batched probe key hits"
        );
        g.throughput(Throughput::Elements(32));
        g.bench_function(BenchmarkId::new(format!("{name}_batch32"), n), |b| {
            let mut i = 0;
            b.iter(|| {
                let ks = &ring[i..i + 32];
                i = (i + 32) % keys.len();
                black_box(mf.lookup_batch(black_box(ks), u32::MAX, &mut out, &mut probes));
                black_box(&out);
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

/// LPM-style rules: (match, priority) and a key that hits each.
fn lpm_rules(n: u32) -> (Vec<(Match, u16)>, Vec<FlowKey>) {
    let base = key_to(0);
    let mut m32 = FlowKey::ZERO;
    m32.dl_type = u16::MAX;
    m32.nw_dst = u32::MAX;
    let (mut m24, mut m16) = (m32, m32);
    m24.nw_dst = 0xffff_ff00;
    m16.nw_dst = 0xffff_0000;
    let mut rules = Vec::new();
    let mut keys = Vec::new();
    for i in 0..n {
        // j numbers the /24s and the /16s: at most 10k of each, so
        // 11.0.0.0 + j*256 and 32.0.0.0 + j*65536 never overlap or wrap.
        let j = i / 10;
        let (mask, prio, dst, probe) = match i % 10 {
            8 => {
                let d = 0x0b00_0000 + (j << 8);
                (m24, 24, d, d + 7)
            }
            9 => {
                let d = 0x2000_0000 + (j << 16);
                (m16, 16, d, d + 0x0107)
            }
            _ => {
                let d = 0x0a00_0000 + i + 1;
                (m32, 32, d, d)
            }
        };
        let mut v = base;
        v.nw_dst = dst;
        rules.push((Match::new(v, mask), prio));
        let mut k = base;
        k.nw_dst = probe;
        keys.push(k);
    }
    Rng(13).shuffle(&mut keys);
    (rules, keys)
}

fn bench_classifier(c: &mut Criterion) {
    let mut g = c.benchmark_group("classifier");
    g.throughput(Throughput::Elements(1));
    for n in [1000u32, 100_000] {
        let (rules, keys) = lpm_rules(n);
        let mut cls = Classifier::new();
        for (i, (m, p)) in rules.iter().enumerate() {
            cls.insert(*m, *p, i as u32);
        }
        assert_eq!(cls.n_subtables(), 3);
        assert_eq!(cls.len(), n as usize, "every rule distinct");
        for k in &keys {
            assert!(cls.lookup(k, &mut FlowKey::default()).is_some());
        }
        g.bench_function(BenchmarkId::new("tss", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let k = &keys[i];
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                let mut wc = FlowKey::ZERO;
                black_box(cls.lookup(black_box(k), &mut wc).map(|r| *r.2));
                black_box(wc);
            })
        });
        if n == 1000 {
            let mut lin = LinearClassifier::new();
            for (i, (m, p)) in rules.iter().enumerate() {
                lin.insert(*m, *p, i as u32);
            }
            for k in keys.iter().take(50) {
                let mut w1 = FlowKey::ZERO;
                assert_eq!(
                    lin.lookup(k, &mut w1).map(|r| *r.2),
                    cls.lookup(k, &mut FlowKey::default()).map(|r| *r.2),
                    "TSS and linear agree"
                );
            }
            g.bench_function(BenchmarkId::new("linear", n), |b| {
                let mut i = 0;
                b.iter(|| {
                    let k = &keys[i];
                    i = if i + 1 == keys.len() { 0 } else { i + 1 };
                    let mut wc = FlowKey::ZERO;
                    black_box(lin.lookup(black_box(k), &mut wc).map(|r| *r.2));
                    black_box(wc);
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_emc, bench_megaflow, bench_classifier
}
criterion_main!(benches);
