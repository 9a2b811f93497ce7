//! The polling thread ("PMD", after OVS's poll-mode driver threads): owns its
//! ports, packet pool and datapath caches, and loops rx → datapath → tx.
//!
//! It talks to the control thread through three lock-free channels only:
//! - a bounded command queue (add/remove a port) drained between batches;
//! - the published [`Snapshot`] (an `ArcSwap`), checked once per iteration by
//!   generation number, so a flow-mod never stalls forwarding;
//! - a sync request/ack counter pair: the control thread bumps `sync_req` and
//!   waits until `sync_ack` reaches it, which the thread stores only at the
//!   end of an iteration that *started* after the request. By then the caches
//!   have pushed their statistics to the rules and everything queued on
//!   memory ports before the request has been processed.
//!
//! Nothing here allocates, locks or makes a syscall per packet. When idle the
//! thread backs off from spinning to yielding to short sleeps, so an idle
//! switch does not burn a core.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use serde::Serialize;

use crate::datapath::{Datapath, DatapathConfig, PortDpStats, Snapshot, TxBatches};
use crate::flow::PortNo;
use crate::packet::{Packet, PacketPool};
use crate::port::{DropReason, Port};

/// Frames received per port per iteration (OVS's NETDEV_MAX_BURST).
pub const BATCH: usize = 32;
/// How often rule statistics are pushed without being asked.
const STATS_PERIOD: Duration = Duration::from_millis(250);
/// Frames one tx queue holds before it must be flushed.
const TX_CAPACITY: usize = 1024;

/// A request to a polling thread.
#[derive(Debug)]
pub enum PmdCommand {
    /// Start polling a port.
    AddPort(PortNo, Box<dyn Port>),
    /// Stop polling a port and drop it.
    DelPort(PortNo),
}

/// Statistics a polling thread publishes (pmd-perf-show style).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PmdStats {
    /// Loop iterations.
    pub iterations: u64,
    /// Iterations that received at least one frame.
    pub busy_iterations: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Exact-match cache hits.
    pub emc_hits: u64,
    /// Megaflow cache hits.
    pub megaflow_hits: u64,
    /// Slow-path translations (cache misses).
    pub misses: u64,
    /// Frames queued for a port this thread does not poll (dropped).
    pub tx_unpolled: u64,
    /// Frames output to a port number that does not exist (dropped).
    pub tx_no_port: u64,
}

/// State shared between a polling thread and the control thread.
#[derive(Debug, Default)]
pub struct PmdShared {
    sync_req: AtomicU64,
    sync_ack: AtomicU64,
    stop: AtomicBool,
    stats: Mutex<PmdStats>,
}

/// The control thread's handle on a polling thread.
#[derive(Debug)]
pub struct PmdHandle {
    cmds: Arc<ArrayQueue<PmdCommand>>,
    shared: Arc<PmdShared>,
    thread: Option<JoinHandle<()>>,
}

impl PmdHandle {
    /// Start a polling thread reading snapshots from `snapshot`.
    pub fn spawn(
        snapshot: Arc<ArcSwap<Snapshot>>,
        cfg: DatapathConfig,
    ) -> std::io::Result<PmdHandle> {
        let cmds = Arc::new(ArrayQueue::new(256));
        let shared = Arc::new(PmdShared::default());
        let (c2, s2) = (cmds.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("pmd0".into())
            .spawn(move || run(snapshot, cfg, c2, s2))?;
        Ok(PmdHandle {
            cmds,
            shared,
            thread: Some(thread),
        })
    }

    /// Queue a command; fails only when 256 commands are already pending.
    pub fn send(&self, cmd: PmdCommand) -> Result<(), PmdCommand> {
        self.cmds.push(cmd)
    }

    /// Wait until the thread has completed an iteration that started after
    /// this call (statistics pushed, pending commands and queued frames
    /// handled). False on timeout.
    pub fn sync(&self, timeout: Duration) -> bool {
        let want = self.shared.sync_req.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = Instant::now() + timeout;
        while self.shared.sync_ack.load(Ordering::SeqCst) < want {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// The latest published statistics.
    pub fn stats(&self) -> PmdStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for PmdHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    snap: Arc<ArcSwap<Snapshot>>,
    cfg: DatapathConfig,
    cmds: Arc<ArrayQueue<PmdCommand>>,
    shared: Arc<PmdShared>,
) {
    let mut current = snap.load_full();
    let mut dp = Datapath::new(current.clone(), cfg);
    let mut pool = PacketPool::with_capacity(4096);
    let mut ports: Vec<(PortNo, Box<dyn Port>)> = Vec::new();
    // dense snapshot index -> position in `ports`
    let mut by_dense: Vec<Option<usize>> = Vec::new();
    let mut tx = TxBatches::new(current.ports.len(), TX_CAPACITY);
    let mut batch: Vec<Packet> = Vec::with_capacity(BATCH);
    let mut stats = PmdStats::default();
    let mut idle_iters = 0u32;
    let mut last_push = Instant::now();
    let mut remap = true;
    // The datapath keeps per-port counters by port number for as long as the
    // number stays in consecutive snapshots. A port removed and re-added with
    // the same number before this thread loads a snapshot without it would
    // inherit its predecessor's counts, so each port object reports the
    // datapath's counters minus those present when it was added (`base`),
    // reset to zero whenever the datapath starts the number afresh.
    let mut bases: Vec<(PortNo, PortDpStats)> = Vec::new();

    while !shared.stop.load(Ordering::Relaxed) {
        let req = shared.sync_req.load(Ordering::SeqCst);
        while let Some(cmd) = cmds.pop() {
            match cmd {
                PmdCommand::AddPort(no, p) => {
                    ports.retain(|(n, _)| *n != no);
                    ports.push((no, p));
                    let base = dp
                        .stats()
                        .ports
                        .iter()
                        .find(|s| s.port == no && current.ports.contains(&no))
                        .copied()
                        .unwrap_or_default();
                    bases.retain(|(n, _)| *n != no);
                    bases.push((no, base));
                }
                PmdCommand::DelPort(no) => {
                    ports.retain(|(n, _)| *n != no);
                    bases.retain(|(n, _)| *n != no);
                }
            }
            remap = true;
        }
        if snap.load().generation != current.generation {
            let next = snap.load_full();
            // Counters carry over only for numbers in both snapshots.
            for (no, base) in bases.iter_mut() {
                if !(current.ports.contains(no) && next.ports.contains(no)) {
                    *base = PortDpStats::default();
                }
            }
            current = next;
            dp.set_snapshot(current.clone());
            tx.clear_into(&mut pool);
            remap = true;
        }
        if remap {
            by_dense = current
                .ports
                .iter()
                .map(|no| ports.iter().position(|(n, _)| n == no))
                .collect();
            remap = false;
        }

        let mut got = 0usize;
        for i in 0..ports.len() {
            let (no, port) = &mut ports[i];
            let n = port.rx_batch(&mut pool, &mut batch, BATCH);
            if n == 0 {
                continue;
            }
            got += n;
            dp.process_batch(*no, &mut batch, &mut tx, &mut pool);
            if tx.pending() >= TX_CAPACITY / 2 {
                flush(&mut tx, &by_dense, &mut ports, &mut pool, &mut stats);
            }
        }
        if got > 0 {
            flush(&mut tx, &by_dense, &mut ports, &mut pool, &mut stats);
            stats.busy_iterations += 1;
            stats.rx_packets += got as u64;
            idle_iters = 0;
        } else {
            idle_iters = idle_iters.saturating_add(1);
        }
        stats.iterations += 1;

        let asked = shared.sync_ack.load(Ordering::Relaxed) < req;
        if asked || last_push.elapsed() >= STATS_PERIOD {
            dp.push_stats();
            let d = dp.stats();
            for ps in &d.ports {
                let Some((_, p)) = ports.iter().find(|(n, _)| *n == ps.port) else {
                    continue;
                };
                let base = bases
                    .iter()
                    .find(|(n, _)| *n == ps.port)
                    .map(|(_, b)| *b)
                    .unwrap_or_default();
                let c = p.counters();
                for r in DropReason::ALL {
                    let i = r.index();
                    c.dp_drops[i].set(ps.drops[i].saturating_sub(base.drops[i]));
                }
                c.rx_malformed
                    .set(ps.rx_malformed.saturating_sub(base.rx_malformed));
                c.rx_truncated
                    .set(ps.rx_truncated.saturating_sub(base.rx_truncated));
            }
            stats.tx_no_port = d
                .ports
                .iter()
                .map(|p| p.drops[DropReason::NoPort.index()])
                .sum::<u64>();
            stats.emc_hits = d.emc_hits;
            stats.megaflow_hits = d.megaflow_hits;
            stats.misses = d.misses;
            if let Ok(mut s) = shared.stats.lock() {
                *s = stats.clone();
            }
            last_push = Instant::now();
        }
        shared.sync_ack.store(req, Ordering::SeqCst);

        // Adaptive idle back-off: spin briefly, then yield, then sleep.
        if idle_iters > 1024 {
            std::thread::sleep(Duration::from_micros(if idle_iters > 8192 {
                500
            } else {
                50
            }));
        } else if idle_iters > 64 {
            std::thread::yield_now();
        }
    }
}

/// Hand every queued frame to its port; frames for a port this thread does
/// not poll (removed between snapshot and command) go back to the pool, counted.
fn flush(
    tx: &mut TxBatches,
    by_dense: &[Option<usize>],
    ports: &mut [(PortNo, Box<dyn Port>)],
    pool: &mut PacketPool,
    stats: &mut PmdStats,
) {
    for (dense, local) in by_dense.iter().enumerate() {
        let Some(q) = tx.queue_mut(dense) else {
            continue;
        };
        if q.is_empty() {
            continue;
        }
        match local {
            Some(li) => {
                ports[*li].1.tx_batch(q, pool);
            }
            None => {
                stats.tx_unpolled += q.len() as u64;
                for p in q.drain(..) {
                    pool.put(p);
                }
            }
        }
    }
}
