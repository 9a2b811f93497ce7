//! Longest-prefix-match lookup: `switch::route::lpm::Lpm` (poptrie-style
//! multibit trie with a 16-bit direct table) against two baselines measured
//! in the same run: a hash table per prefix length, probed from the longest
//! length down (what a classifier without a trie does), and at 1k routes a
//! linear scan.
//!
//! Prefixes: random, seeded. IPv4 lengths uniform in 8..=32; IPv6 lengths
//! uniform in 16..=64 plus one in ten /128 host routes. Addresses: each a
//! random prefix's network with random host bits, so every lookup finds a
//! route and walks as deep as that route is (uniformly random addresses
//! would mostly stop in the direct table and flatter the trie).
//! Each iteration looks up 1024 addresses; throughput is per lookup.
//!
//! Run: `flock /work/wt/bench.lock cargo bench -p perf --bench lpm`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switch::route::lpm::{Lpm, Prefix, NO_ROUTE};

const BATCH: usize = 1024;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mask(width: u32, len: u8) -> u128 {
    let l = u32::from(len);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if l == 0 {
        0
    } else {
        all >> (width - l) << (width - l)
    }
}

fn prefixes(width: u32, n: usize, rng: &mut Rng) -> Vec<Prefix> {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    (0..n)
        .map(|i| {
            let len = if width == 32 {
                8 + rng.below(25) as u8
            } else if rng.below(10) == 0 {
                128
            } else {
                16 + rng.below(49) as u8
            };
            Prefix {
                addr: rng.u128() & all & mask(width, len),
                len,
                value: i as u32,
            }
        })
        .collect()
}

fn addresses(width: u32, ps: &[Prefix], rng: &mut Rng) -> Vec<u128> {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    (0..BATCH)
        .map(|_| {
            let p = ps[rng.below(ps.len() as u64) as usize];
            p.addr | (rng.u128() & all & !mask(width, p.len))
        })
        .collect()
}

/// Baseline: one hash table per prefix length, probed longest first.
struct HashPerLen {
    width: u32,
    /// (length, mask, table), longest first.
    levels: Vec<(u8, u128, HashMap<u128, u32>)>,
}

impl HashPerLen {
    fn new(width: u32, ps: &[Prefix]) -> HashPerLen {
        let mut by: HashMap<u8, HashMap<u128, u32>> = HashMap::new();
        for p in ps {
            by.entry(p.len).or_default().insert(p.addr, p.value);
        }
        let mut levels: Vec<_> = by
            .into_iter()
            .map(|(l, t)| (l, mask(width, l), t))
            .collect();
        levels.sort_by_key(|l| std::cmp::Reverse(l.0));
        HashPerLen { width, levels }
    }
    fn lookup(&self, a: u128) -> u32 {
        let _ = self.width;
        for (_, m, t) in &self.levels {
            if let Some(v) = t.get(&(a & m)) {
                return *v;
            }
        }
        NO_ROUTE
    }
}

/// Baseline: scan every prefix.
fn naive(width: u32, ps: &[Prefix], a: u128) -> u32 {
    let mut best: Option<(u8, u32)> = None;
    for p in ps {
        if a & mask(width, p.len) == p.addr && best.is_none_or(|(l, _)| p.len > l) {
            best = Some((p.len, p.value));
        }
    }
    best.map_or(NO_ROUTE, |b| b.1)
}

fn bench(c: &mut Criterion) {
    for (family, width) in [("ipv4", 32u32), ("ipv6", 128)] {
        for n in [1_000usize, 100_000] {
            let mut rng = Rng(0x5eed_0000 + n as u64 + u64::from(width));
            let ps = prefixes(width, n, &mut rng);
            let addrs = addresses(width, &ps, &mut rng);
            let lpm = Lpm::build(width, &ps).expect("valid prefixes");
            let hpl = HashPerLen::new(width, &ps);
            // The three agree (last-wins duplicates aside, which random
            // prefixes of this size do not produce often; compare the trie
            // with the hash baseline, which has the same rule).
            for &a in &addrs {
                assert_eq!(lpm.lookup(a), hpl.lookup(a), "{family} {n} {a:#x}");
            }
            eprintln!(
                "lpm {family} {n}: {} prefixes, {} KiB",
                lpm.len(),
                lpm.memory() / 1024
            );
            let mut g = c.benchmark_group(format!("lpm/{family}/{}k", n / 1000));
            g.throughput(Throughput::Elements(BATCH as u64));
            g.bench_function(BenchmarkId::from_parameter("poptrie"), |b| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for &a in &addrs {
                        acc = acc.wrapping_add(lpm.lookup(black_box(a)));
                    }
                    acc
                })
            });
            g.bench_function(BenchmarkId::from_parameter("hash_per_len"), |b| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for &a in &addrs {
                        acc = acc.wrapping_add(hpl.lookup(black_box(a)));
                    }
                    acc
                })
            });
            if n <= 1_000 {
                g.bench_function(BenchmarkId::from_parameter("linear_scan"), |b| {
                    b.iter(|| {
                        let mut acc = 0u32;
                        for &a in &addrs {
                            acc = acc.wrapping_add(naive(width, &ps, black_box(a)));
                        }
                        acc
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
