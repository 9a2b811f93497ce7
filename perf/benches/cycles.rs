//! Cycles per packet, the figure OVS's `dpif-netdev/pmd-perf-show` prints:
//! the same LoopPort runs as the `pipeline` bench, timed with the TSC around
//! whole rounds of batches (and the datapath's own
//! `DatapathStats::cycles_per_packet`, which covers `process_batch` only),
//! bare forward and 4-table pipeline interleaved round by round so that both
//! see the same machine load. Prints medians and min-max over the rounds.
//!
//! `taskset -c 1 cargo bench -p perf --bench cycles`

use std::hint::black_box;
use std::time::Instant;

use switch::datapath::cycles_now;

const ROUNDS: usize = 31;
const BATCHES_PER_ROUND: usize = 4000;

fn median_min_max(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn tsc_ghz() -> f64 {
    let (t0, c0) = (Instant::now(), cycles_now());
    while t0.elapsed().as_millis() < 200 {
        std::hint::spin_loop();
    }
    let c = cycles_now().wrapping_sub(c0) as f64;
    c / t0.elapsed().as_nanos() as f64
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this
    // binary without it: check the rig works, measure nothing.
    if !std::env::args().any(|a| a == "--bench") {
        let mut rig = perf::Rig::new(perf::udp_frames(4), perf::l3_pipeline(4));
        rig.warm(4);
        assert_eq!(rig.dp.stats().total_drops(), 0);
        return;
    }
    let ghz = tsc_ghz();
    println!("TSC: {ghz:.3} GHz");
    for flows in [1u32, 1000] {
        let mut rig = perf::Rig::new(perf::udp_frames(flows), perf::l3_pipeline(1000));
        rig.warm(64 + 4 * flows as usize / perf::BATCH);
        let warm = rig.dp.stats().clone();
        // The like-for-like baseline: the same frames through the datapath
        // with the one-flow in_port pipeline, interleaved round by round too.
        let mut simple = perf::Rig::new(perf::udp_frames(flows), perf::in_port_pipeline());
        simple.warm(64 + 4 * flows as usize / perf::BATCH);
        let (mut bare, mut full, mut dp_only, mut ratio) = (vec![], vec![], vec![], vec![]);
        let (mut inport, mut ratio_inport) = (vec![], vec![]);
        for _ in 0..ROUNDS {
            let c0 = cycles_now();
            let mut n = 0;
            for _ in 0..BATCHES_PER_ROUND {
                n += black_box(perf::forward_batch(&mut simple));
            }
            let ip = cycles_now().wrapping_sub(c0) as f64 / n as f64;
            let c0 = cycles_now();
            let mut n = 0;
            for _ in 0..BATCHES_PER_ROUND {
                n += black_box(perf::bare_forward_batch(&mut rig));
            }
            let b = cycles_now().wrapping_sub(c0) as f64 / n as f64;
            let s0 = rig.dp.stats().clone();
            let c0 = cycles_now();
            let mut n = 0;
            for _ in 0..BATCHES_PER_ROUND {
                n += black_box(perf::forward_batch(&mut rig));
            }
            let f = cycles_now().wrapping_sub(c0) as f64 / n as f64;
            let s1 = rig.dp.stats();
            dp_only.push((s1.cycles - s0.cycles) as f64 / (s1.packets - s0.packets) as f64);
            bare.push(b);
            full.push(f);
            ratio.push(f / b);
            inport.push(ip);
            ratio_inport.push(f / ip);
        }
        assert_eq!(simple.dp.stats().total_drops(), 0);
        let s = rig.dp.stats();
        assert_eq!(s.misses, warm.misses, "measured on cache hits only");
        let hits = (s.emc_hits - warm.emc_hits) + (s.megaflow_hits - warm.megaflow_hits);
        let emc_pct = 100.0 * (s.emc_hits - warm.emc_hits) as f64 / hits as f64;
        println!("flows={flows} ({ROUNDS} rounds x {BATCHES_PER_ROUND} batches of {}; EMC {emc_pct:.1} % of hits, megaflow {:.1} %)", perf::BATCH, 100.0 - emc_pct);
        for (name, v) in [
            ("bare forward (rx+tx)", &mut bare),
            ("in_port pipeline (rx+dp+tx)", &mut inport),
            ("4-table pipeline (rx+dp+tx)", &mut full),
            ("  of which process_batch", &mut dp_only),
        ] {
            let (m, lo, hi) = median_min_max(v);
            println!(
                "  {name:30} {m:7.1} cycles/pkt (min {lo:.1}, max {hi:.1})  = {:.1} ns/pkt, {:.2} Mpps",
                m / ghz,
                ghz * 1e3 / m
            );
        }
        let (m, lo, hi) = median_min_max(&mut ratio);
        println!("  pipeline / bare, per round     {m:.2}x (min {lo:.2}, max {hi:.2})");
        let (m, lo, hi) = median_min_max(&mut ratio_inport);
        println!("  pipeline / in_port, per round  {m:.2}x (min {lo:.2}, max {hi:.2})");
    }
}
