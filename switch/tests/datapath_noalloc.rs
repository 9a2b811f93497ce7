//! The hot path must not allocate: once the caches are warm, processing
//! batches (EMC hits, megaflow hits, multi-output copies, drops) performs
//! zero heap allocations. Checked with a counting global allocator that only
//! counts on the thread under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use etherparse::PacketBuilder;
use switch::datapath::{Datapath, DatapathConfig, DpAction, Snapshot, TxBatches};
use switch::flow::{FlowKey, PortNo};
use switch::packet::{Packet, PacketPool};
use switch::pipeline::{Pipeline, Xlation};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only bumps a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Rewrites the IPv4 TTL and sends to ports 2 and 3 (one copy per packet),
/// except for destination 10.0.0.99, which is dropped.
fn fixed_translate(_: &Pipeline, _: &[PortNo], key: &FlowKey) -> Xlation {
    let mut mask = FlowKey::ZERO;
    mask.in_port = u32::MAX;
    mask.nw_dst = u32::MAX;
    mask.dl_type = u16::MAX;
    let actions = if key.nw_dst == 0x0a00_0063 {
        Vec::new()
    } else {
        vec![
            DpAction::SetIpv4 {
                src: None,
                dst: None,
                tos: None,
                ttl: Some(9),
            },
            DpAction::Output(2),
            DpAction::Output(3),
        ]
    };
    Xlation {
        mask,
        actions,
        rules: Vec::new(),
        tables: Vec::new(),
        outputs: Vec::new(),
        final_key: *key,
        group_counters: Vec::new(),
        drop: None,
    }
}

fn frame(dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 9, 9, 9], dst, 64)
        .udp(sport, 53)
        .write(&mut v, &[0u8; 18])
        .unwrap();
    v
}

#[test]
fn warm_batches_do_not_allocate() {
    let snap = Arc::new(Snapshot {
        generation: 1,
        pipeline: Arc::new(Pipeline::new()),
        ports: vec![1, 2, 3],
    });
    let cfg = DatapathConfig {
        emc_insert_inv_prob: 1,
        max_batch: 32,
        ..DatapathConfig::default()
    };
    let mut dp = Datapath::new(snap, cfg);
    dp.set_translator(fixed_translate);
    let mut tx = TxBatches::new(3, 256);
    let mut pool = PacketPool::with_capacity(512);
    // 32 packets: 8 flows x 4 source ports (sport is wildcarded, so some are
    // megaflow hits before they are EMC hits), one of the flows dropped.
    let frames: Vec<Vec<u8>> = (0..32u16)
        .map(|i| {
            let d = if i % 8 == 7 { 99 } else { (i % 8) as u8 };
            frame([10, 0, 0, d], 1000 + i / 8)
        })
        .collect();
    let mut batch: Vec<Packet> = Vec::with_capacity(32);
    let mut run = |dp: &mut Datapath, pool: &mut PacketPool, tx: &mut TxBatches| {
        for f in &frames {
            let mut p = pool.get().unwrap();
            p.set_data(f);
            batch.push(p);
        }
        dp.process_batch(1, &mut batch, tx, pool);
        for i in 0..3 {
            for p in tx.drain(i) {
                pool.put(p);
            }
        }
    };
    // Warm up: misses install megaflows (allocation allowed here).
    run(&mut dp, &mut pool, &mut tx);
    run(&mut dp, &mut pool, &mut tx);
    let misses = dp.stats().misses;

    COUNTING.with(|c| c.set(true));
    for _ in 0..100 {
        run(&mut dp, &mut pool, &mut tx);
    }
    dp.push_stats();
    COUNTING.with(|c| c.set(false));

    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the hot path"
    );
    let s = dp.stats();
    assert_eq!(s.misses, misses, "warm batches are all cache hits");
    assert!(s.emc_hits >= 3000);
    assert_eq!(s.copies, 102 * 28, "one copy per forwarded packet");
    assert_eq!(s.drops(switch::datapath::DropReason::NoOutput), 102 * 4);
    assert_eq!(pool.available(), 512);
}
