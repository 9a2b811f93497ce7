//! The polling threads ("PMDs", after OVS's poll-mode driver threads): each
//! owns some of the bridge's ports, a packet pool and its own datapath
//! caches, and loops rx → datapath → tx. [`PmdSet`] is the control thread's
//! view of all of them: it starts one thread per configured CPU (pinned with
//! `sched_setaffinity`, named `pmdN`), assigns every rx queue (a port has
//! one, or `n_rxq` for a multi-queue AF_XDP or vhost_user port: one port object per queue)
//! to exactly one thread, moves rx queues between threads on rebalance, and
//! reports `pmd-rxq-show` / `pmd-perf-show` statistics.
//!
//! A multi-queue port: each queue object is polled by the thread it is
//! assigned to, and a thread that owns a queue of a port transmits to that
//! port through its own queue object (each queue's socket has its own tx
//! ring: no lock, no sharing). The datapath counts drops per port number per
//! thread; those are published into the counters of one queue object per
//! port per thread (the first, "the carrier"), so summing a port's queue
//! counters gives each drop once.
//!
//! A thread talks to the control thread through lock-free channels only:
//! - a bounded command queue (add/remove/release a port) drained between
//!   batches. [`PmdCommand::ReleasePort`] hands the port object back through
//!   the thread's bounded *return queue*, which is how a port moves to another
//!   thread without being closed and re-opened (an AF_XDP socket or tap fd
//!   keeps its rings and counters);
//! - the published [`Snapshot`] (an `ArcSwap`), checked once per iteration by
//!   generation number, so a flow-mod never stalls forwarding;
//! - the published tx directory (an `ArcSwap` of port number → hand-off
//!   queue), see below;
//! - a sync request/ack counter pair: the control thread bumps `sync_req` and
//!   waits until `sync_ack` reaches it, which the thread stores only at the
//!   end of an iteration that *started* after the request. By then the caches
//!   have pushed their statistics to the rules and everything queued on
//!   memory ports before the request has been processed. [`PmdSet::sync`]
//!   syncs every thread twice when there are several, so frames one thread
//!   handed to another's port are transmitted too.
//!
//! Transmit to a port owned by another thread: a port object has exactly one
//! owner, and only the owner calls its `tx_batch` (no backend needs to be
//! thread-safe). Every port has one bounded lock-free hand-off queue
//! (crossbeam `ArrayQueue`, multi-producer, [`HANDOFF_DEPTH`] frames) that
//! lives as long as the port, independent of which thread owns it. A thread
//! whose datapath outputs to a port it does not own pushes the frames there;
//! the owner drains the queue every iteration and transmits. A full queue
//! drops the frame, counted as `tx_ring_full` in the sender's
//! [`PmdStats::handoff_drops`]. While a port is moving, frames wait in its
//! queue and the new owner sends them. Buffers that cross threads come back
//! to the sender's side through a shared bounded free queue: a thread whose
//! pool grows past [`POOL_SPILL`] buffers spills the excess, a thread short of
//! buffers refills from it, so one-way traffic cannot starve a pool.
//!
//! Nothing here allocates, locks or makes a syscall per packet. Statistics are
//! published under a mutex at most every 250 ms (or when a sync asks), never
//! per packet, and never waited for (`try_lock`: a busy mutex postpones the
//! publication by one iteration rather than putting the thread to sleep).
//! When idle a thread spins for [`IDLE_SPIN`] of measured idle time, then
//! takes short sleeps ([`Backoff`]), so an idle switch does not burn its
//! cores and a loaded one never leaves its CPU on its own.
//!
//! Busy cycles (pmd-perf-show, pmd-rxq-show) are the cycles of rx batches
//! that returned frames and their processing, of transmitting them, of
//! frames handed over by other threads, and of transmit work a port
//! finished at the end of the iteration ([`Port::tx_flush`], e.g. an AF_XDP
//! `sendto` retry): as in OVS, an iteration's tx work is busy time wherever
//! the syscall happens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};

use crate::datapath::{cycles_now, Datapath, DatapathConfig, PortDpStats, Snapshot, TxBatches};
use crate::flow::PortNo;
use crate::packet::{Packet, PacketPool};
use crate::pipeline::l2::L2Shared;
use crate::port::{DropReason, Port};

/// Frames received per port per iteration (OVS's NETDEV_MAX_BURST).
pub const BATCH: usize = 32;
/// How often rule statistics are pushed without being asked.
const STATS_PERIOD: Duration = Duration::from_millis(250);
/// Frames one tx queue holds before it must be flushed.
const TX_CAPACITY: usize = 1024;
/// Frames a port's cross-thread hand-off queue holds.
pub const HANDOFF_DEPTH: usize = 4096;
/// Buffers a thread keeps before spilling the excess to the shared free queue.
/// Below twice a thread's starting pool (4096): with two threads and one-way
/// cross-thread traffic (hand-off, vhost_user redirect) the receiving thread
/// ends with at most 8192 and must spill, or the sender starves for good
/// with frames left in its rx ring.
pub const POOL_SPILL: usize = 6144;
/// Below this many buffers a thread refills from the shared free queue.
const POOL_REFILL: usize = 2048;
/// Capacity of the shared free queue.
const SHARED_FREE: usize = 16384;
/// Buffers moved to or from the shared free queue per iteration at most.
const POOL_MOVE: usize = 256;
/// Largest CPU number `--pmd-cpus` accepts (the size of a `cpu_set_t`).
pub const MAX_CPU: usize = 1024;
/// Idle time a polling thread spins through before it starts sleeping.
pub const IDLE_SPIN: Duration = Duration::from_millis(1);
/// Idle time after which the short sleeps become long ones.
pub const IDLE_DEEP: Duration = Duration::from_millis(100);
/// The short and the long idle sleep.
const SLEEP_SHORT: Duration = Duration::from_micros(50);
const SLEEP_LONG: Duration = Duration::from_micros(500);
/// At most this much of one iteration counts as idle time: a longer
/// iteration was preempted (or slept), and time off the CPU is not idleness.
const IDLE_STEP_CAP: Duration = Duration::from_micros(100);

/// The polling loop's idle back-off: spin, then short sleeps, then long
/// ones. Idle time is measured, not counted in iterations (an empty
/// iteration lasts 0.1-1 µs depending on the ports), and each iteration adds
/// at most [`IDLE_STEP_CAP`], so a thread preempted for milliseconds under
/// load (the CPU shared with other tasks) does not come back and sleep. It
/// never yields: `sched_yield` hands the CPU to any runnable task for a
/// whole slice, which under load is where a polling thread's packets are lost
/// (docs/perf.md, AF_XDP over veth).
#[derive(Debug, Default)]
pub struct Backoff {
    idle: Duration,
}

impl Backoff {
    /// Account one iteration that did (`worked`) or did not find work and
    /// lasted `took`; returns how long to sleep now, if at all.
    pub fn after(&mut self, worked: bool, took: Duration) -> Option<Duration> {
        if worked {
            self.idle = Duration::ZERO;
            return None;
        }
        self.idle = self.idle.saturating_add(took.min(IDLE_STEP_CAP));
        if self.idle < IDLE_SPIN {
            None
        } else if self.idle < IDLE_DEEP {
            Some(SLEEP_SHORT)
        } else {
            Some(SLEEP_LONG)
        }
    }
}

/// A request to a polling thread.
#[derive(Debug)]
pub enum PmdCommand {
    /// Start polling a port (its queue 0).
    AddPort(PortNo, Box<dyn Port>),
    /// Start polling queue `.1` of a port.
    AddRxq(PortNo, u32, Box<dyn Port>),
    /// Stop polling a port and drop it.
    DelPort(PortNo),
    /// Stop polling a port and hand the object back through the thread's
    /// return queue (its counters updated first), to be added to another
    /// thread.
    ReleasePort(PortNo, u32),
}

/// One rx queue: a port number and the queue id within the port.
pub type RxqId = (PortNo, u32);

/// How ports' rx queues are spread over the polling threads
/// (OVS `other_config:pmd-rxq-assign`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxqAssign {
    /// In port-number order, one thread after another.
    #[default]
    RoundRobin,
    /// By measured busy cycles: the busiest port first, each to the thread
    /// with the least load assigned so far.
    Cycles,
}

impl std::str::FromStr for RxqAssign {
    type Err = String;
    fn from_str(s: &str) -> Result<RxqAssign, String> {
        match s {
            "roundrobin" => Ok(RxqAssign::RoundRobin),
            "cycles" => Ok(RxqAssign::Cycles),
            _ => Err(format!(
                "unknown rxq assignment {s:?} (known: roundrobin, cycles)"
            )),
        }
    }
}

impl std::fmt::Display for RxqAssign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RxqAssign::RoundRobin => "roundrobin",
            RxqAssign::Cycles => "cycles",
        })
    }
}

/// How many polling threads to run and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PmdConfig {
    /// One entry per thread: the CPU it is pinned to, or None (unpinned).
    pub cpus: Vec<Option<usize>>,
    /// The rx queue assignment policy.
    pub assign: RxqAssign,
    /// Frames of each thread's AF_XDP UMEM (`switchd --afxdp-umem-frames`);
    /// None: `port::afxdp::umem::THREAD_UMEM_FRAMES`.
    pub afxdp_umem_frames: Option<u32>,
}

impl Default for PmdConfig {
    /// One unpinned thread, round robin.
    fn default() -> PmdConfig {
        PmdConfig {
            cpus: vec![None],
            assign: RxqAssign::RoundRobin,
            afxdp_umem_frames: None,
        }
    }
}

impl PmdConfig {
    /// `n` unpinned threads (tests).
    pub fn unpinned(n: usize, assign: RxqAssign) -> PmdConfig {
        PmdConfig {
            cpus: vec![None; n.max(1)],
            assign,
            afxdp_umem_frames: None,
        }
    }

    /// One thread pinned to each CPU of `list` (Linux cpulist syntax such as
    /// `1`, `2-5`, `0,2-3`); every CPU must be one this process may run on.
    pub fn pinned(list: &str, assign: RxqAssign) -> Result<PmdConfig, String> {
        let cpus = parse_cpu_list(list)?;
        let allowed = allowed_cpus().map_err(|e| format!("reading CPU affinity: {e}"))?;
        if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
            return Err(format!(
                "CPU {c} in --pmd-cpus {list:?} is not present or not allowed (available: {})",
                format_cpu_list(&allowed)
            ));
        }
        Ok(PmdConfig {
            cpus: cpus.into_iter().map(Some).collect(),
            assign,
            afxdp_umem_frames: None,
        })
    }
}

/// Parse a Linux cpulist (`0`, `2-5`, `0,2-3`) into sorted, distinct CPU
/// numbers. Empty lists, reversed ranges and numbers of [`MAX_CPU`] or more
/// are errors.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    let num = |t: &str| -> Result<usize, String> {
        let t = t.trim();
        let n = t
            .parse::<usize>()
            .map_err(|_| format!("{t:?} is not a CPU number in CPU list {s:?}"))?;
        if n >= MAX_CPU {
            return Err(format!(
                "CPU {n} in {s:?} is too large (max {})",
                MAX_CPU - 1
            ));
        }
        Ok(n)
    };
    for part in s.split(',') {
        if part.trim().is_empty() {
            return Err(format!("empty item in CPU list {s:?}"));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} in CPU list {s:?} is reversed"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The cpulist text of sorted CPU numbers (`0,2-3`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The CPUs the calling thread may run on (`sched_getaffinity`).
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is valid; the
    // kernel writes at most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        set
    };
    // SAFETY: CPU_ISSET only reads bit `c` of the set; c < MAX_CPU = CPU_SETSIZE.
    Ok((0..MAX_CPU)
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect())
}

/// Pin the calling thread to `cpus` (`sched_setaffinity`).
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() || cpus.iter().any(|c| *c >= MAX_CPU) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty CPU set or CPU number out of range",
        ));
    }
    // SAFETY: all-zero is a valid empty cpu_set_t; CPU_SET writes bit c < CPU_SETSIZE
    // (checked above); sched_setaffinity reads size_of::<cpu_set_t>() bytes of `set`.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cpus {
            libc::CPU_SET(*c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Load and traffic of one rx queue (port) on its polling thread.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxqStats {
    /// The port.
    pub port: PortNo,
    /// The queue id within the port (0 for single-queue ports).
    #[serde(default)]
    pub queue: u32,
    /// Frames received since the port joined this thread.
    pub rx_packets: u64,
    /// Cycles spent receiving and processing its batches since then.
    pub busy_cycles: u64,
}

/// Statistics a polling thread publishes (pmd-perf-show style).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PmdStats {
    /// Thread index (`pmdN`).
    pub pmd: usize,
    /// The CPU it is pinned to (None: unpinned).
    pub cpu: Option<usize>,
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
    /// Megaflow subtables probed by lookups that hit.
    pub megaflow_hit_probes: u64,
    /// Passes made by recirculated packets (`ct(table=T)`).
    #[serde(default)]
    pub recirculations: u64,
    /// Of those, answered by the previous pass's recirculation hint.
    #[serde(default)]
    pub recirc_hint_hits: u64,
    /// Of those, run as direct passes (no recirculated key, no stack).
    #[serde(default)]
    pub direct_passes: u64,
    /// `ct` actions answered by the established-connection fast path.
    #[serde(default)]
    pub ct_fast_hits: u64,
    /// Cycles the datapath spent processing batches (DatapathStats.cycles).
    pub dp_cycles: u64,
    /// Of those, cycles in the slow path.
    pub slow_path_cycles: u64,
    /// Cycles since the thread started (busy + idle, sleeps included).
    pub total_cycles: u64,
    /// Cycles spent on iterations' rx + processing of non-empty batches.
    pub busy_cycles: u64,
    /// Frames queued for a port this thread does not poll and no thread owns (dropped).
    pub tx_unpolled: u64,
    /// Frames output to a port number that does not exist (dropped).
    pub tx_no_port: u64,
    /// Frames handed to another thread's port.
    pub handed_off: u64,
    /// Frames dropped because a port's hand-off queue was full (`tx_ring_full`).
    pub handoff_drops: u64,
    /// Per-port load on this thread.
    pub rxqs: Vec<RxqStats>,
    /// The thread's AF_XDP UMEM frames by where they are (all 0 until an
    /// AF_XDP port joined the thread).
    #[serde(default)]
    pub umem: UmemFrames,
}

/// Where a thread's UMEM frames are (see `packet/buf.rs`): the four counts
/// always add up to the total; a leak would show as frames that never come
/// back to `free` once traffic stops and the ports are gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UmemFrames {
    /// Frames in the UMEM.
    pub total: u32,
    /// In the thread's free list.
    pub free: u32,
    /// In sockets' fill and rx rings.
    pub fill: u32,
    /// Packets in userspace (batches, tx queues).
    pub user: u32,
    /// In sockets' tx and completion rings.
    pub tx: u32,
}

impl PmdStats {
    /// Sum of several threads' counters (`pmd`, `cpu` and `rxqs` of the first;
    /// rxqs concatenated).
    pub fn total(all: &[PmdStats]) -> PmdStats {
        let mut t = PmdStats::default();
        for s in all {
            t.iterations += s.iterations;
            t.busy_iterations += s.busy_iterations;
            t.rx_packets += s.rx_packets;
            t.emc_hits += s.emc_hits;
            t.megaflow_hits += s.megaflow_hits;
            t.misses += s.misses;
            t.megaflow_hit_probes += s.megaflow_hit_probes;
            t.recirculations += s.recirculations;
            t.recirc_hint_hits += s.recirc_hint_hits;
            t.direct_passes += s.direct_passes;
            t.ct_fast_hits += s.ct_fast_hits;
            t.dp_cycles += s.dp_cycles;
            t.slow_path_cycles += s.slow_path_cycles;
            t.total_cycles += s.total_cycles;
            t.busy_cycles += s.busy_cycles;
            t.tx_unpolled += s.tx_unpolled;
            t.tx_no_port += s.tx_no_port;
            t.handed_off += s.handed_off;
            t.handoff_drops += s.handoff_drops;
            t.rxqs.extend(s.rxqs.iter().cloned());
            t.umem.total += s.umem.total;
            t.umem.free += s.umem.free;
            t.umem.fill += s.umem.fill;
            t.umem.user += s.umem.user;
            t.umem.tx += s.umem.tx;
        }
        t
    }
}

/// One row of `pmd-rxq-show`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RxqShow {
    /// Thread index.
    pub pmd: usize,
    /// Pinned CPU (None: unpinned).
    pub cpu: Option<usize>,
    /// Busy cycles / total cycles of the thread, percent.
    pub busy_pct: f64,
    /// The ports it polls, by port number.
    pub rxqs: Vec<RxqShowPort>,
}

/// One port in a `pmd-rxq-show` row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RxqShowPort {
    /// OpenFlow port number.
    pub port: PortNo,
    /// The queue id within the port.
    #[serde(default)]
    pub queue: u32,
    /// Frames received on this thread.
    pub rx_packets: u64,
    /// Busy cycles on this thread.
    pub busy_cycles: u64,
    /// Share of the thread's busy cycles, percent (OVS's "pmd usage").
    pub usage_pct: f64,
}

/// A port's cross-thread tx path: its hand-off queue.
type Handoff = Arc<ArrayQueue<Packet>>;

/// Port number → hand-off queue, published to every thread.
#[derive(Debug, Default)]
struct TxDirectory {
    queues: Vec<(PortNo, Handoff)>,
}

/// State shared between a polling thread and the control thread.
#[derive(Debug)]
pub struct PmdShared {
    sync_req: AtomicU64,
    sync_ack: AtomicU64,
    stop: AtomicBool,
    stats: Mutex<PmdStats>,
    returned: ArrayQueue<(PortNo, u32, Box<dyn Port>)>,
}

/// The control thread's handle on one polling thread.
#[derive(Debug)]
pub struct PmdHandle {
    cmds: Arc<ArrayQueue<PmdCommand>>,
    shared: Arc<PmdShared>,
    thread: Option<JoinHandle<()>>,
}

struct Wiring {
    snapshot: Arc<ArcSwap<Snapshot>>,
    dir: Arc<ArcSwap<TxDirectory>>,
    free: Arc<ArrayQueue<Packet>>,
    /// The bridge's L2 learning (NORMAL): MAC table view and learn queue.
    l2: Arc<L2Shared>,
}

impl PmdHandle {
    /// Start a lone polling thread (`pmd0`, unpinned) reading snapshots from
    /// `snapshot`; it transmits only to ports it owns.
    pub fn spawn(
        snapshot: Arc<ArcSwap<Snapshot>>,
        cfg: DatapathConfig,
    ) -> std::io::Result<PmdHandle> {
        let w = Wiring {
            snapshot,
            dir: Arc::new(ArcSwap::from_pointee(TxDirectory::default())),
            free: Arc::new(ArrayQueue::new(SHARED_FREE)),
            l2: Arc::new(L2Shared::new()),
        };
        PmdHandle::spawn_on(0, None, w, cfg)
    }

    fn spawn_on(
        index: usize,
        cpu: Option<usize>,
        w: Wiring,
        cfg: DatapathConfig,
    ) -> std::io::Result<PmdHandle> {
        let cmds = Arc::new(ArrayQueue::new(256));
        let shared = Arc::new(PmdShared {
            sync_req: AtomicU64::new(0),
            sync_ack: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stats: Mutex::new(PmdStats {
                pmd: index,
                cpu,
                ..PmdStats::default()
            }),
            returned: ArrayQueue::new(256),
        });
        let (c2, s2) = (cmds.clone(), shared.clone());
        // Pin inside the thread and report failure back before returning.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let thread = std::thread::Builder::new()
            .name(format!("pmd{index}"))
            .spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = pin_current_thread(&[c]) {
                        let _ = ready_tx.send(Err(format!("pinning pmd{index} to CPU {c}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                run(index, cpu, w, cfg, c2, s2)
            })?;
        let mut h = PmdHandle {
            cmds,
            shared,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(h),
            Ok(Err(m)) => {
                if let Some(t) = h.thread.take() {
                    let _ = t.join();
                }
                Err(std::io::Error::other(m))
            }
            Err(_) => Err(std::io::Error::other(format!(
                "pmd{index} exited during start"
            ))),
        }
    }

    /// Queue a command; fails only when 256 commands are already pending.
    pub fn send(&self, cmd: PmdCommand) -> Result<(), PmdCommand> {
        self.cmds.push(cmd)
    }

    /// Start a sync; returns the ticket [`Self::wait`] waits for.
    fn request(&self) -> u64 {
        self.shared.sync_req.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn wait(&self, want: u64, deadline: Instant) -> bool {
        while self.shared.sync_ack.load(Ordering::SeqCst) < want {
            if Instant::now() > deadline || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// Wait until the thread has completed an iteration that started after
    /// this call (statistics pushed, pending commands and queued frames
    /// handled). False on timeout.
    pub fn sync(&self, timeout: Duration) -> bool {
        let want = self.request();
        self.wait(want, Instant::now() + timeout)
    }

    /// The latest published statistics.
    pub fn stats(&self) -> PmdStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// A port queue handed back by [`PmdCommand::ReleasePort`], if one is waiting.
    pub fn take_returned(&self) -> Option<(PortNo, u32, Box<dyn Port>)> {
        self.shared.returned.pop()
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

/// One port moved by a rebalance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMove {
    /// The port.
    pub port: PortNo,
    /// The rx queue of the port that moved.
    #[serde(default)]
    pub queue: u32,
    /// Thread it left.
    pub from: usize,
    /// Thread it joined.
    pub to: usize,
}

/// An rx queue `pmd-rxq-rebalance` left where it was because moving it would
/// have overcommitted the target thread's AF_XDP UMEM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRxq {
    /// The port.
    pub port: PortNo,
    /// Its rx queue.
    pub queue: u32,
    /// The thread it stays on.
    pub pmd: usize,
    /// The thread the policy wanted it on.
    pub wanted: usize,
    /// UMEM frames its fill ring takes.
    pub frames: u32,
    /// Fill-ring frames the wanted thread had left.
    pub left: u32,
}

/// What `pmd-rxq-rebalance` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// The queues moved, in the order they moved.
    pub moves: Vec<PortMove>,
    /// The queues the policy wanted to move that stayed (no room in the
    /// target thread's UMEM).
    pub kept: Vec<KeptRxq>,
}

/// All polling threads of a bridge, and which one owns which port.
#[derive(Debug)]
pub struct PmdSet {
    pmds: Vec<PmdHandle>,
    cpus: Vec<Option<usize>>,
    owner: BTreeMap<RxqId, usize>,
    queues: BTreeMap<PortNo, Handoff>,
    dir: Arc<ArcSwap<TxDirectory>>,
    assign: RxqAssign,
    /// L2 learning shared by every thread and the control thread.
    l2: Arc<L2Shared>,
    /// Ports whose rx queues stay on the thread they were given to: AF_XDP
    /// sockets are bound to their thread's UMEM, and libxdp keeps a UMEM's
    /// first socket bound for the UMEM's life, so a moved queue could not
    /// always bind again on another thread (docs/architecture.md).
    pinned: std::collections::BTreeSet<PortNo>,
    /// Each thread's AF_XDP UMEM, created when its first AF_XDP port is
    /// opened (the thread's pool adopts it when that port attaches).
    #[cfg(feature = "afxdp")]
    umems: Vec<Option<crate::port::afxdp::AfxdpUmem>>,
    /// Frames of each thread's AF_XDP UMEM.
    #[cfg(feature = "afxdp")]
    umem_frames: u32,
    /// UMEM frames each rx queue's fill ring takes from its thread's UMEM
    /// (AF_XDP sockets; absent: none). The books of the UMEM budget: the
    /// queues of one thread never promise more than
    /// `port::afxdp::fill_budget` of its frames.
    umem_need: BTreeMap<RxqId, u32>,
}

impl PmdSet {
    /// Start the threads `pcfg` asks for, each reading snapshots from `snapshot`.
    pub fn spawn(
        snapshot: Arc<ArcSwap<Snapshot>>,
        cfg: DatapathConfig,
        pcfg: &PmdConfig,
    ) -> std::io::Result<PmdSet> {
        let dir = Arc::new(ArcSwap::from_pointee(TxDirectory::default()));
        let free = Arc::new(ArrayQueue::new(SHARED_FREE));
        let l2 = Arc::new(L2Shared::new());
        let cpus = if pcfg.cpus.is_empty() {
            vec![None]
        } else {
            pcfg.cpus.clone()
        };
        let mut pmds = Vec::with_capacity(cpus.len());
        #[cfg(feature = "afxdp")]
        let cpus_len = cpus.len();
        for (i, cpu) in cpus.iter().enumerate() {
            let w = Wiring {
                snapshot: snapshot.clone(),
                dir: dir.clone(),
                free: free.clone(),
                l2: l2.clone(),
            };
            pmds.push(PmdHandle::spawn_on(i, *cpu, w, cfg)?);
        }
        Ok(PmdSet {
            l2,
            pinned: Default::default(),
            pmds,
            cpus,
            owner: BTreeMap::new(),
            queues: BTreeMap::new(),
            dir,
            assign: pcfg.assign,
            #[cfg(feature = "afxdp")]
            umems: vec![None; cpus_len],
            #[cfg(feature = "afxdp")]
            umem_frames: pcfg
                .afxdp_umem_frames
                .unwrap_or(crate::port::afxdp::umem::THREAD_UMEM_FRAMES),
            umem_need: BTreeMap::new(),
        })
    }

    /// The bridge's L2 learning channel: the control thread drains its learn
    /// queue and publishes MAC table views through it.
    pub fn l2(&self) -> &Arc<L2Shared> {
        &self.l2
    }

    /// Number of threads.
    pub fn len(&self) -> usize {
        self.pmds.len()
    }

    /// Always false: a set has at least one thread.
    pub fn is_empty(&self) -> bool {
        self.pmds.is_empty()
    }

    /// The assignment policy.
    pub fn assign(&self) -> RxqAssign {
        self.assign
    }

    /// Which thread polls `port` (its lowest queue).
    pub fn owner(&self, port: PortNo) -> Option<usize> {
        self.queue_owners(port).first().map(|(_, o)| *o)
    }

    /// Every rx queue of `port` and the thread polling it, by queue id.
    pub fn queue_owners(&self, port: PortNo) -> Vec<(u32, usize)> {
        self.owner
            .range((port, 0)..=(port, u32::MAX))
            .map(|((_, q), o)| (*q, *o))
            .collect()
    }

    fn publish_dir(&self) {
        let queues = self.queues.iter().map(|(n, q)| (*n, q.clone())).collect();
        self.dir.store(Arc::new(TxDirectory { queues }));
    }

    /// The thread the next [`Self::add_rxq`] gives its rx queue to: the one
    /// with the fewest rx queues (lowest index on ties).
    pub fn next_target(&self) -> usize {
        self.next_targets(1).first().copied().unwrap_or(0)
    }

    /// The threads the next `n` calls of [`Self::add_rxq`] give their queues
    /// to, in order (so a multi-queue port can open each queue's socket on
    /// the UMEM of the thread that will poll it).
    pub fn next_targets(&self, n: usize) -> Vec<usize> {
        let mut count = vec![0usize; self.pmds.len()];
        for o in self.owner.values() {
            count[*o] += 1;
        }
        (0..n)
            .map(|_| {
                let t = (0..count.len())
                    .min_by_key(|i| (count[*i], *i))
                    .unwrap_or(0);
                if let Some(c) = count.get_mut(t) {
                    *c += 1;
                }
                t
            })
            .collect()
    }

    /// The AF_XDP UMEM of thread `pmd` (created on first use), on which a
    /// port for that thread must be opened so that forwarding between its
    /// AF_XDP ports needs no copy.
    #[cfg(feature = "afxdp")]
    pub fn afxdp_umem(
        &mut self,
        pmd: usize,
    ) -> Result<crate::port::afxdp::AfxdpUmem, crate::port::afxdp::AfxdpError> {
        let slot = self.umems.get_mut(pmd).ok_or_else(|| {
            crate::port::afxdp::AfxdpError::Umem(format!("no polling thread {pmd}"))
        })?;
        if let Some(u) = slot {
            return Ok(u.clone());
        }
        let u = crate::port::afxdp::AfxdpUmem::for_thread_of(self.umem_frames)?;
        *slot = Some(u.clone());
        Ok(u)
    }

    /// Frames of each thread's AF_XDP UMEM.
    #[cfg(feature = "afxdp")]
    pub fn afxdp_umem_frames(&self) -> u32 {
        self.umem_frames
    }

    /// UMEM frames the fill ring of a socket with `n_rxq_desc` takes from
    /// its thread's UMEM (whose fill rings are 2048 deep).
    #[cfg(feature = "afxdp")]
    pub fn afxdp_fill_need(&self, n_rxq_desc: u32) -> u32 {
        crate::port::afxdp::fill_frames(crate::port::afxdp::options::DEFAULT_RING_DESCS, n_rxq_desc)
    }

    /// Frames of a thread's UMEM its rx queues' fill rings may take together.
    #[cfg(feature = "afxdp")]
    fn umem_budget(&self) -> u64 {
        u64::from(crate::port::afxdp::fill_budget(self.umem_frames))
    }

    /// Without AF_XDP no queue takes UMEM frames.
    #[cfg(not(feature = "afxdp"))]
    fn umem_budget(&self) -> u64 {
        u64::MAX
    }

    /// Frames of thread `pmd`'s UMEM promised to the fill rings of its rx queues.
    pub fn umem_committed(&self, pmd: usize) -> u64 {
        self.owner
            .iter()
            .filter(|(_, o)| **o == pmd)
            .filter_map(|(id, _)| self.umem_need.get(id))
            .map(|n| u64::from(*n))
            .sum()
    }

    /// The threads the next rx queues, whose fill rings take `needs` UMEM
    /// frames each, go to: like [`Self::next_targets`] (fewest rx queues,
    /// lowest index) among the threads whose UMEM still has that many
    /// frames unpromised. An error naming the numbers and the fixes when a
    /// queue fits on no thread: AF_XDP ports are refused rather than left
    /// with an empty fill ring (the kernel would drop all they receive).
    pub fn afxdp_place(&self, needs: &[u32]) -> Result<Vec<usize>, String> {
        let n = self.pmds.len();
        let budget = self.umem_budget();
        let mut count = vec![0usize; n];
        for o in self.owner.values() {
            count[*o] += 1;
        }
        let mut used: Vec<u64> = (0..n).map(|t| self.umem_committed(t)).collect();
        let mut out = Vec::with_capacity(needs.len());
        for (q, need) in needs.iter().enumerate() {
            let need64 = u64::from(*need);
            let t = (0..n)
                .filter(|t| used[*t] + need64 <= budget)
                .min_by_key(|t| (count[*t], *t));
            let Some(t) = t else {
                let left: Vec<String> = used
                    .iter()
                    .enumerate()
                    .map(|(t, u)| format!("pmd{t} has {} left", budget.saturating_sub(*u)))
                    .collect();
                let which = if needs.len() > 1 {
                    format!("queue {q} of {}", needs.len())
                } else {
                    "the port".to_string()
                };
                return Err(self.umem_full_text(&which, *need, &left.join(", ")));
            };
            count[t] += 1;
            used[t] += need64;
            out.push(t);
        }
        Ok(out)
    }

    /// The refusal text of [`Self::afxdp_place`].
    fn umem_full_text(&self, which: &str, need: u32, left: &str) -> String {
        #[cfg(feature = "afxdp")]
        {
            let frames = self.umem_frames;
            let budget = crate::port::afxdp::fill_budget(frames);
            let reserve = crate::port::afxdp::fill_reserve(frames);
            format!(
                "no polling thread's AF_XDP UMEM has room for the fill ring of {which}: \
                 it takes {need} frames (n-rxq-desc) and of the {budget} fill-ring frames \
                 of each thread ({frames}-frame UMEM, {reserve} kept free for transmit) \
                 {left}. Use a smaller n-rxq-desc (n-rxq-desc=256 takes 256 frames), \
                 start switchd with a larger --afxdp-umem-frames, or with more polling \
                 threads (--pmd-cpus)"
            )
        }
        #[cfg(not(feature = "afxdp"))]
        format!("no polling thread has room for {which} ({need} frames; {left})")
    }

    /// Give a new port to the thread with the fewest rx queues (lowest index
    /// on ties, [`Self::next_target`]), which is round robin for ports added
    /// one by one. On a full command queue the port comes back.
    pub fn add_port(&mut self, no: PortNo, port: Box<dyn Port>) -> Result<usize, Box<dyn Port>> {
        self.add_rxq(no, 0, port)
    }

    /// Give rx queue `queue` of port `no` (its own port object) to
    /// [`Self::next_target`]: the queues of a multi-queue port added one
    /// after another spread over the threads.
    pub fn add_rxq(
        &mut self,
        no: PortNo,
        queue: u32,
        port: Box<dyn Port>,
    ) -> Result<usize, Box<dyn Port>> {
        let target = self.next_target();
        self.add_rxq_on(no, queue, port, target, 0)
    }

    /// Give rx queue `queue` of port `no` to thread `target` (chosen by
    /// [`Self::afxdp_place`]), recording that its fill ring takes
    /// `umem_need` frames of that thread's UMEM.
    pub fn add_rxq_on(
        &mut self,
        no: PortNo,
        queue: u32,
        port: Box<dyn Port>,
        target: usize,
        umem_need: u32,
    ) -> Result<usize, Box<dyn Port>> {
        if target >= self.pmds.len() {
            return Err(port);
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.queues.entry(no) {
            e.insert(Arc::new(ArrayQueue::new(HANDOFF_DEPTH)));
            self.publish_dir();
        }
        match self.pmds[target].send(PmdCommand::AddRxq(no, queue, port)) {
            Ok(()) => {
                self.owner.insert((no, queue), target);
                if umem_need > 0 {
                    self.umem_need.insert((no, queue), umem_need);
                } else {
                    self.umem_need.remove(&(no, queue));
                }
                Ok(target)
            }
            Err(PmdCommand::AddRxq(_, _, p)) => Err(p),
            Err(_) => unreachable!("send returns the command it was given"),
        }
    }

    /// Keep every rx queue of `no` on the thread it was given to (`true`):
    /// rebalance plans around it (its load still counts on its thread).
    /// Set when a port is added; a port number reused by another kind of
    /// port is set again then.
    pub fn set_pinned(&mut self, no: PortNo, pinned: bool) {
        if pinned {
            self.pinned.insert(no);
        } else {
            self.pinned.remove(&no);
        }
    }

    /// Stop polling `no` and drop it. False when the command queue is full
    /// (nothing changed) or no thread owns it.
    pub fn del_port(&mut self, no: PortNo) -> bool {
        let owners = self.queue_owners(no);
        if owners.is_empty() {
            return false;
        }
        let mut threads: Vec<usize> = owners.iter().map(|(_, o)| *o).collect();
        threads.sort_unstable();
        threads.dedup();
        for (i, o) in threads.iter().enumerate() {
            if self.pmds[*o].send(PmdCommand::DelPort(no)).is_err() {
                if i == 0 {
                    return false;
                }
                // Some threads dropped their queues already: forget the port
                // on this side too, so a retry does not find half of it.
                // The queues left on `o` stay polled until its command
                // queue drains; `o` is retried once after a short wait.
                std::thread::sleep(Duration::from_millis(10));
                let _ = self.pmds[*o].send(PmdCommand::DelPort(no));
            }
        }
        for (q, _) in owners {
            self.owner.remove(&(no, q));
            self.umem_need.remove(&(no, q));
        }
        if self.queues.remove(&no).is_some() {
            self.publish_dir();
        }
        true
    }

    /// Wait until every thread has completed an iteration that started after
    /// this call, twice over when there are several threads (frames handed
    /// from one thread to another's port are sent by then). False on timeout.
    pub fn sync(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let rounds = if self.pmds.len() > 1 { 2 } else { 1 };
        for _ in 0..rounds {
            let wants: Vec<u64> = self.pmds.iter().map(|p| p.request()).collect();
            for (p, w) in self.pmds.iter().zip(wants) {
                if !p.wait(w, deadline) {
                    return false;
                }
            }
        }
        true
    }

    /// Every thread's latest statistics, in thread order.
    pub fn stats(&self) -> Vec<PmdStats> {
        self.pmds.iter().map(|p| p.stats()).collect()
    }

    /// The `pmd-rxq-show` view: per thread its CPU, busy share and ports
    /// (each current port listed exactly once, under its owner).
    pub fn rxq_show(&self) -> Vec<RxqShow> {
        self.stats()
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mine: Vec<RxqId> = self
                    .owner
                    .iter()
                    .filter(|(_, o)| **o == i)
                    .map(|(n, _)| *n)
                    .collect();
                let busy: u64 = s
                    .rxqs
                    .iter()
                    .filter(|r| mine.contains(&(r.port, r.queue)))
                    .map(|r| r.busy_cycles)
                    .sum();
                let rxqs = mine
                    .iter()
                    .map(|(n, q)| {
                        let r = s.rxqs.iter().find(|r| r.port == *n && r.queue == *q);
                        let c = r.map_or(0, |r| r.busy_cycles);
                        RxqShowPort {
                            port: *n,
                            queue: *q,
                            rx_packets: r.map_or(0, |r| r.rx_packets),
                            busy_cycles: c,
                            usage_pct: pct(c, busy),
                        }
                    })
                    .collect();
                RxqShow {
                    pmd: i,
                    cpu: self.cpus.get(i).copied().flatten(),
                    busy_pct: pct(s.busy_cycles, s.total_cycles),
                    rxqs,
                }
            })
            .collect()
    }

    /// The assignment the policy wants now: rx queue → thread.
    fn plan(&self) -> BTreeMap<RxqId, usize> {
        let n = self.pmds.len();
        let mut plan = BTreeMap::new();
        // Pinned queues stay where they are; the others are planned around them.
        for (id, o) in &self.owner {
            if self.pinned.contains(&id.0) {
                plan.insert(*id, *o);
            }
        }
        let free = || self.owner.keys().filter(|id| !self.pinned.contains(&id.0));
        match self.assign {
            RxqAssign::RoundRobin => {
                for (i, no) in free().enumerate() {
                    plan.insert(*no, i % n);
                }
            }
            RxqAssign::Cycles => {
                let stats = self.stats();
                let load_of = |(no, q): RxqId| -> u64 {
                    self.owner
                        .get(&(no, q))
                        .and_then(|o| stats.get(*o))
                        .and_then(|s| s.rxqs.iter().find(|r| r.port == no && r.queue == q))
                        .map_or(0, |r| r.busy_cycles)
                };
                let mut load = vec![(0u64, 0usize); n];
                for (id, t) in &plan {
                    if let Some(l) = load.get_mut(*t) {
                        l.0 += load_of(*id);
                        l.1 += 1;
                    }
                }
                let mut ports: Vec<(u64, RxqId)> = free().map(|no| (load_of(*no), *no)).collect();
                // Busiest first; equal loads in port order (OVS sorts rxqs by cycles).
                ports.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                for (c, no) in ports {
                    let t = (0..n).min_by_key(|i| (load[*i], *i)).unwrap_or(0);
                    load[t].0 += c;
                    load[t].1 += 1;
                    plan.insert(no, t);
                }
            }
        }
        plan
    }

    /// Re-assign every port by the policy, moving ports whose thread changes
    /// (release on the old thread, add on the new one; frames sent to a port
    /// meanwhile wait in its hand-off queue). Returns the moves made.
    pub fn rebalance(&mut self, timeout: Duration) -> Result<Vec<PortMove>, String> {
        self.rebalance_report(timeout).map(|r| r.moves)
    }

    /// [`Self::rebalance`], within each thread's AF_XDP UMEM budget: a move
    /// is made only when the target thread's UMEM has room for the queue's
    /// fill ring at that point (moves that free room go first), so no
    /// thread is ever overcommitted, not even between two moves. A queue
    /// that cannot move stays and is reported in [`Rebalance::kept`].
    /// `timeout` bounds each queue's release by its old thread; a release
    /// that misses it ends the rebalance with an error (moves already made
    /// stay made).
    pub fn rebalance_report(&mut self, timeout: Duration) -> Result<Rebalance, String> {
        let plan = self.plan();
        let wanted: Vec<PortMove> = plan
            .iter()
            .filter_map(|(id, to)| {
                let from = *self.owner.get(id)?;
                (from != *to).then_some(PortMove {
                    port: id.0,
                    queue: id.1,
                    from,
                    to: *to,
                })
            })
            .collect();
        let budget = self.umem_budget();
        let mut used: Vec<u64> = (0..self.pmds.len())
            .map(|t| self.umem_committed(t))
            .collect();
        let need = |m: &PortMove| self.umem_need.get(&(m.port, m.queue)).copied().unwrap_or(0);
        let (mut moves, mut pending) = (Vec::new(), wanted);
        loop {
            let before = pending.len();
            let mut rest = Vec::new();
            for m in pending {
                let n = u64::from(need(&m));
                if used[m.to] + n <= budget {
                    used[m.to] += n;
                    used[m.from] = used[m.from].saturating_sub(n);
                    moves.push(m);
                } else {
                    rest.push(m);
                }
            }
            pending = rest;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        let kept: Vec<KeptRxq> = pending
            .iter()
            .map(|m| KeptRxq {
                port: m.port,
                queue: m.queue,
                pmd: m.from,
                wanted: m.to,
                frames: need(m),
                left: u32::try_from(budget.saturating_sub(used[m.to])).unwrap_or(u32::MAX),
            })
            .collect();
        let mut done = Vec::new();
        for m in moves {
            // Each release gets the whole timeout: the old thread closes
            // the queue's AF_XDP socket, which waits for the kernel (an RCU
            // grace period), so under load a shared deadline ran out after
            // the first moves.
            let deadline = Instant::now() + timeout;
            if self.pmds[m.from]
                .send(PmdCommand::ReleasePort(m.port, m.queue))
                .is_err()
            {
                return Err(format!(
                    "pmd{} command queue is full; moved {} ports",
                    m.from,
                    done.len()
                ));
            }
            let port = loop {
                if let Some((no, q, p)) = self.pmds[m.from].take_returned() {
                    if (no, q) == (m.port, m.queue) {
                        break p;
                    }
                    // Not ours (cannot happen: one release at a time); put it back where it was.
                    let _ = self.pmds[m.from].send(PmdCommand::AddRxq(no, q, p));
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "pmd{} did not release port {} queue {} in time",
                        m.from, m.port, m.queue
                    ));
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            // An AF_XDP socket moves to the target thread's UMEM here, on
            // the control thread (its old socket closed when the old thread
            // detached it); traffic to it is lost only meanwhile.
            #[cfg(feature = "afxdp")]
            let port = {
                let mut port = port;
                if port.moves_with_umem() {
                    match self.afxdp_umem(m.to) {
                        Ok(u) => {
                            port.move_to_umem(&u);
                        }
                        // attach on the target thread tries again.
                        Err(e) => eprintln!("pmd{}: AF_XDP UMEM: {e}", m.to),
                    }
                }
                port
            };
            self.owner.remove(&(m.port, m.queue));
            if let Err(PmdCommand::AddRxq(no, q, p)) =
                self.pmds[m.to].send(PmdCommand::AddRxq(m.port, m.queue, port))
            {
                // The target is saturated with commands: give it back to its old thread.
                let _ = self.pmds[m.from].send(PmdCommand::AddRxq(no, q, p));
                self.owner.insert((no, q), m.from);
                return Err(format!("pmd{} command queue is full", m.to));
            }
            self.owner.insert((m.port, m.queue), m.to);
            done.push(m);
        }
        Ok(Rebalance { moves: done, kept })
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Where a dense port's tx queue goes in one thread.
#[derive(Clone, Debug)]
enum TxTarget {
    /// A port this thread owns (index into its port list).
    Local(usize),
    /// Another thread's port: its hand-off queue.
    Remote(Handoff),
    /// Nobody polls it.
    None,
}

struct OwnedPort {
    no: PortNo,
    /// Queue id within the port.
    queue: u32,
    /// The first of this thread's queues of the port: its counters carry
    /// the datapath's per-port drops for this thread.
    carrier: bool,
    port: Box<dyn Port>,
    handoff: Option<Handoff>,
    /// Datapath counters when the port joined this thread.
    at_add: PortDpStats,
    /// The port's published datapath counters when it joined (carried over a move).
    carried: PortDpStats,
    rx_packets: u64,
    busy_cycles: u64,
}

fn run(
    index: usize,
    cpu: Option<usize>,
    w: Wiring,
    cfg: DatapathConfig,
    cmds: Arc<ArrayQueue<PmdCommand>>,
    shared: Arc<PmdShared>,
) {
    let Wiring {
        snapshot: snap,
        dir,
        free,
        l2,
    } = w;
    let mut current = snap.load_full();
    let mut cur_dir = dir.load_full();
    let mut dp = Datapath::new(current.clone(), cfg);
    dp.attach_l2(l2);
    let mut pool = PacketPool::with_capacity(4096);
    let mut ports: Vec<OwnedPort> = Vec::new();
    // dense snapshot index -> where its frames go
    let mut targets: Vec<TxTarget> = Vec::new();
    let mut tx = TxBatches::new(current.ports.len(), TX_CAPACITY);
    let mut batch: Vec<Packet> = Vec::with_capacity(BATCH);
    let mut drain: Vec<Packet> = Vec::with_capacity(BATCH);
    let mut stats = PmdStats {
        pmd: index,
        cpu,
        ..PmdStats::default()
    };
    let mut backoff = Backoff::default();
    let mut iter_start = Instant::now();
    let mut last_push = Instant::now();
    let started = cycles_now();
    let mut remap = true;

    while !shared.stop.load(Ordering::Relaxed) {
        let req = shared.sync_req.load(Ordering::SeqCst);
        while let Some(cmd) = cmds.pop() {
            match cmd {
                PmdCommand::AddPort(no, p) => {
                    add_rxq(&dp, &current, &mut ports, &mut pool, no, 0, p);
                }
                PmdCommand::AddRxq(no, q, p) => {
                    add_rxq(&dp, &current, &mut ports, &mut pool, no, q, p);
                }
                PmdCommand::DelPort(no) => {
                    // Every frame a queue object holds comes back before it goes.
                    let mut i = 0;
                    while i < ports.len() {
                        if ports[i].no == no {
                            ports.remove(i).port.detach(&mut pool);
                        } else {
                            i += 1;
                        }
                    }
                    elect_carriers(&dp, &current, &mut ports);
                }
                PmdCommand::ReleasePort(no, q) => {
                    // tx is empty here: every iteration flushes what it queued.
                    if let Some(i) = ports.iter().position(|o| o.no == no && o.queue == q) {
                        dp.push_stats();
                        publish_port_counters(&dp, &mut ports);
                        let o = ports.remove(i);
                        let mut port = o.port;
                        // Its buffers stay with this thread; the next owner
                        // attaches it to its own (AF_XDP: a new socket on
                        // that thread's UMEM).
                        port.detach(&mut pool);
                        if let Err((no, q, port)) = shared.returned.push((o.no, o.queue, port)) {
                            // The return queue is full (the control thread
                            // releases one queue at a time, so not in practice):
                            // keep polling it rather than lose it.
                            add_rxq(&dp, &current, &mut ports, &mut pool, no, q, port);
                        }
                        elect_carriers(&dp, &current, &mut ports);
                    }
                }
            }
            remap = true;
        }
        if snap.load().generation != current.generation {
            let next = snap.load_full();
            // Counters carry over only for numbers in both snapshots.
            for o in ports.iter_mut() {
                if !(current.ports.contains(&o.no) && next.ports.contains(&o.no)) {
                    o.at_add = PortDpStats::default();
                }
            }
            current = next;
            dp.set_snapshot(current.clone());
            tx.clear_into(&mut pool);
            remap = true;
        }
        if !Arc::ptr_eq(&dir.load(), &cur_dir) {
            cur_dir = dir.load_full();
            remap = true;
        }
        if remap {
            let find = |no: &PortNo| {
                cur_dir
                    .queues
                    .iter()
                    .find(|(n, _)| n == no)
                    .map(|(_, q)| q.clone())
            };
            for o in ports.iter_mut() {
                o.handoff = find(&o.no);
            }
            targets = current
                .ports
                .iter()
                .map(|no| match ports.iter().position(|o| o.no == *no) {
                    Some(li) => TxTarget::Local(li),
                    None => find(no).map_or(TxTarget::None, TxTarget::Remote),
                })
                .collect();
            remap = false;
        }

        // Frames other threads handed to our ports (busy time when any).
        let mut worked = false;
        for o in ports.iter_mut() {
            let Some(q) = &o.handoff else { continue };
            if q.is_empty() {
                continue;
            }
            let t0 = cycles_now();
            while !q.is_empty() {
                while drain.len() < BATCH {
                    match q.pop() {
                        Some(p) => drain.push(p),
                        None => break,
                    }
                }
                o.port.tx_batch(&mut drain, &mut pool);
            }
            stats.busy_cycles += cycles_now().wrapping_sub(t0);
            worked = true;
        }

        let mut got = 0usize;
        for i in 0..ports.len() {
            let t0 = cycles_now();
            let o = &mut ports[i];
            let n = o.port.rx_batch(&mut pool, &mut batch, BATCH);
            if n == 0 {
                continue;
            }
            got += n;
            dp.process_batch(o.no, &mut batch, &mut tx, &mut pool);
            if tx.pending() >= TX_CAPACITY / 2 {
                flush(&mut tx, &targets, &mut ports, &mut pool, &mut stats);
            }
            let c = cycles_now().wrapping_sub(t0);
            let o = &mut ports[i];
            o.rx_packets += n as u64;
            o.busy_cycles += c;
            stats.busy_cycles += c;
        }
        if got > 0 {
            let t0 = cycles_now();
            flush(&mut tx, &targets, &mut ports, &mut pool, &mut stats);
            stats.busy_cycles += cycles_now().wrapping_sub(t0);
            stats.busy_iterations += 1;
            stats.rx_packets += got as u64;
            worked = true;
        }
        // Transmit work ports left for the end of the iteration (AF_XDP:
        // a kick to retry): busy time where it happens.
        for o in ports.iter_mut() {
            let t0 = cycles_now();
            if o.port.tx_flush(&mut pool, got == 0) > 0 {
                let c = cycles_now().wrapping_sub(t0);
                o.busy_cycles += c;
                stats.busy_cycles += c;
                worked = true;
            }
        }
        stats.iterations += 1;

        // Keep the pool between the water marks through the shared free queue.
        if pool.available() > POOL_SPILL {
            for _ in 0..POOL_MOVE.min(pool.available() - POOL_SPILL) {
                match pool.get() {
                    Some(p) => {
                        if let Err(p) = free.push(p) {
                            pool.put(p);
                            break;
                        }
                    }
                    None => break,
                }
            }
        } else if pool.available() < POOL_REFILL {
            for _ in 0..POOL_MOVE {
                match free.pop() {
                    Some(p) => pool.put(p),
                    None => break,
                }
            }
        }

        let asked = shared.sync_ack.load(Ordering::Relaxed) < req;
        if asked || last_push.elapsed() >= STATS_PERIOD {
            dp.push_stats();
            dp.l2_refresh();
            // Counters the kernel keeps (AF_XDP XDP_STATISTICS): one
            // syscall per port per publication, never per packet.
            for o in ports.iter_mut() {
                o.port.publish_stats();
            }
            publish_port_counters(&dp, &mut ports);
            let d = dp.stats();
            stats.tx_no_port = d
                .ports
                .iter()
                .map(|p| p.drops[DropReason::NoPort.index()])
                .sum::<u64>();
            stats.emc_hits = d.emc_hits;
            stats.megaflow_hits = d.megaflow_hits;
            stats.misses = d.misses;
            stats.megaflow_hit_probes = d.megaflow_hit_probes;
            stats.recirculations = d.recirculations;
            stats.recirc_hint_hits = d.recirc_hint_hits;
            stats.direct_passes = d.direct_passes;
            stats.ct_fast_hits = d.ct_fast_hits;
            stats.dp_cycles = d.cycles;
            stats.slow_path_cycles = d.slow_path_cycles;
            stats.total_cycles = cycles_now().wrapping_sub(started);
            stats.rxqs.clear();
            stats.rxqs.extend(ports.iter().map(|o| RxqStats {
                port: o.no,
                queue: o.queue,
                rx_packets: o.rx_packets,
                busy_cycles: o.busy_cycles,
            }));
            let fc = pool.frame_counts();
            stats.umem = UmemFrames {
                total: fc.total,
                free: fc.free,
                fill: fc.fill,
                user: fc.user,
                tx: fc.tx,
            };
            // Never wait for the control thread reading the last copy:
            // try again next iteration (and ack a sync only once published).
            match shared.stats.try_lock() {
                Ok(mut s) => {
                    s.clone_from(&stats);
                    last_push = Instant::now();
                    shared.sync_ack.store(req, Ordering::SeqCst);
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    p.into_inner().clone_from(&stats);
                    last_push = Instant::now();
                    shared.sync_ack.store(req, Ordering::SeqCst);
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        } else {
            shared.sync_ack.store(req, Ordering::SeqCst);
        }

        // Adaptive idle back-off (measured idle time; never yields).
        let now = Instant::now();
        let took = now.duration_since(iter_start);
        iter_start = now;
        if let Some(d) = backoff.after(worked, took) {
            std::thread::sleep(d);
        }
    }
}

/// Start polling queue `q` of port `no` on this thread (replacing an object
/// for the same queue, if any). The port's counters already hold what it
/// carried in (zero when new; its old thread's counts after a move).
fn add_rxq(
    dp: &Datapath,
    current: &Snapshot,
    ports: &mut Vec<OwnedPort>,
    pool: &mut PacketPool,
    no: PortNo,
    q: u32,
    mut p: Box<dyn Port>,
) {
    if let Some(i) = ports.iter().position(|o| o.no == no && o.queue == q) {
        ports.remove(i).port.detach(pool);
    }
    // Buffers the port needs from this thread (AF_XDP: the thread's UMEM
    // frames) are taken here.
    p.attach(pool);
    let c = p.counters();
    let mut carried = PortDpStats {
        port: no,
        rx_malformed: c.rx_malformed.get(),
        rx_truncated: c.rx_truncated.get(),
        ..PortDpStats::default()
    };
    for r in DropReason::ALL {
        carried.drops[r.index()] = c.dp_drops[r.index()].get();
    }
    ports.push(OwnedPort {
        no,
        queue: q,
        carrier: false,
        port: p,
        handoff: None,
        at_add: PortDpStats::default(),
        carried,
        rx_packets: 0,
        busy_cycles: 0,
    });
    elect_carriers(dp, current, ports);
}

/// Make the first queue object of each port on this thread its carrier of
/// the datapath's per-port counters. A queue that becomes the carrier starts
/// counting from the datapath's present counts for the port (the datapath
/// keeps them by port number for as long as the number stays in
/// consecutive snapshots), so nothing is counted twice. A carrier that stops
/// being one keeps what it published (call after [`publish_port_counters`]).
fn elect_carriers(dp: &Datapath, current: &Snapshot, ports: &mut [OwnedPort]) {
    for i in 0..ports.len() {
        let first = ports.iter().position(|o| o.no == ports[i].no) == Some(i);
        let o = &mut ports[i];
        if first && !o.carrier {
            o.carrier = true;
            o.at_add = dp
                .stats()
                .ports
                .iter()
                .find(|s| s.port == o.no && current.ports.contains(&o.no))
                .copied()
                .unwrap_or_default();
        } else if !first && o.carrier {
            o.carrier = false;
            let c = o.port.counters();
            o.carried.rx_malformed = c.rx_malformed.get();
            o.carried.rx_truncated = c.rx_truncated.get();
            for r in DropReason::ALL {
                o.carried.drops[r.index()] = c.dp_drops[r.index()].get();
            }
        }
    }
}

/// Publish each port's datapath counters (rx-side drops by reason,
/// malformed, truncated) into its shared counters: what it carried in plus
/// what this thread's datapath counted since the port arrived.
fn publish_port_counters(dp: &Datapath, ports: &mut [OwnedPort]) {
    let d = dp.stats();
    for o in ports.iter() {
        let now = d
            .ports
            .iter()
            .find(|s| s.port == o.no)
            .copied()
            .unwrap_or_default();
        // Only the carrier adds this thread's counts; other queues of the
        // port keep what they carried in.
        let since = |n: u64, base: u64| if o.carrier { n.saturating_sub(base) } else { 0 };
        let c = o.port.counters();
        for r in DropReason::ALL {
            let i = r.index();
            c.dp_drops[i].set(o.carried.drops[i] + since(now.drops[i], o.at_add.drops[i]));
        }
        c.rx_malformed
            .set(o.carried.rx_malformed + since(now.rx_malformed, o.at_add.rx_malformed));
        c.rx_truncated
            .set(o.carried.rx_truncated + since(now.rx_truncated, o.at_add.rx_truncated));
    }
}

/// Hand every queued frame to its port: directly for ports this thread owns,
/// through the hand-off queue for other threads' ports (a full queue drops,
/// counted), back to the pool (counted) for ports nobody polls.
fn flush(
    tx: &mut TxBatches,
    targets: &[TxTarget],
    ports: &mut [OwnedPort],
    pool: &mut PacketPool,
    stats: &mut PmdStats,
) {
    for (dense, target) in targets.iter().enumerate() {
        let Some(q) = tx.queue_mut(dense) else {
            continue;
        };
        if q.is_empty() {
            continue;
        }
        match target {
            TxTarget::Local(li) => {
                if let Some(o) = ports.get_mut(*li) {
                    o.port.tx_batch(q, pool);
                } else {
                    stats.tx_unpolled += q.len() as u64;
                    for p in q.drain(..) {
                        pool.put(p);
                    }
                }
            }
            TxTarget::Remote(h) => {
                for p in q.drain(..) {
                    // UMEM frames never leave their thread: a heap copy goes.
                    let Some(p) = pool.to_heap(p) else {
                        stats.handoff_drops += 1;
                        continue;
                    };
                    match h.push(p) {
                        Ok(()) => stats.handed_off += 1,
                        Err(p) => {
                            stats.handoff_drops += 1;
                            pool.put(p);
                        }
                    }
                }
            }
            TxTarget::None => {
                stats.tx_unpolled += q.len() as u64;
                for p in q.drain(..) {
                    pool.put(p);
                }
            }
        }
    }
}

/// One thread in `pmd-perf-show`: the raw counters and the ratios OVS prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PmdPerf {
    /// Thread index.
    pub pmd: usize,
    /// Pinned CPU (None: unpinned).
    pub cpu: Option<usize>,
    /// Loop iterations.
    pub iterations: u64,
    /// Iterations that received frames.
    pub busy_iterations: u64,
    /// Busy cycles / total cycles, percent.
    pub busy_pct: f64,
    /// Frames received.
    pub rx_packets: u64,
    /// Datapath cycles per received frame.
    pub cycles_per_packet: f64,
    /// Busy cycles (rx, processing, tx and the tx syscalls) per received
    /// frame: the figure OVS's pmd-perf-show prints as cycles/pkt.
    #[serde(default)]
    pub busy_cycles_per_packet: f64,
    /// Datapath passes: frames received plus recirculations (OVS's
    /// "Datapath passes"); the hit and miss percentages are of passes.
    #[serde(default)]
    pub passes: u64,
    /// Passes per received frame.
    #[serde(default)]
    pub passes_per_packet: f64,
    /// Passes made by recirculated packets (`ct(table=T)`).
    #[serde(default)]
    pub recirculations: u64,
    /// Of those, answered by the previous pass's recirculation hint.
    #[serde(default)]
    pub recirc_hint_hits: u64,
    /// Of those, run as direct passes (no recirculated key, no stack).
    #[serde(default)]
    pub direct_passes: u64,
    /// `ct` actions answered by the established-connection fast path.
    #[serde(default)]
    pub ct_fast_hits: u64,
    /// Exact-match cache hits (recirculation hint hits included).
    pub emc_hits: u64,
    /// EMC hits / passes, percent.
    pub emc_hit_pct: f64,
    /// Megaflow cache hits.
    pub megaflow_hits: u64,
    /// Megaflow hits / passes, percent.
    pub megaflow_hit_pct: f64,
    /// Megaflow subtables probed per megaflow hit.
    pub megaflow_lookups_per_hit: f64,
    /// Slow-path translations.
    pub misses: u64,
    /// Misses / passes, percent.
    pub miss_pct: f64,
    /// Slow-path cycles per miss.
    pub cycles_per_miss: f64,
    /// Frames handed to other threads' ports.
    pub handed_off: u64,
    /// Frames dropped on a full hand-off queue (`tx_ring_full`).
    pub handoff_drops: u64,
    /// Frames for a port no thread polls (dropped).
    pub tx_unpolled: u64,
    /// Raw busy cycles (rx, processing and tx of iterations that received frames): with
    /// `rx_packets` from two snapshots, a window's busy cycles per packet, which is the figure
    /// OVS's pmd-perf-show prints (perf/pvp compares the two).
    #[serde(default)]
    pub busy_cycles: u64,
    /// Raw cycles since the thread started (busy + idle).
    #[serde(default)]
    pub total_cycles: u64,
    /// The thread's AF_XDP UMEM frames by where they are.
    #[serde(default)]
    pub umem: UmemFrames,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl From<&PmdStats> for PmdPerf {
    fn from(s: &PmdStats) -> PmdPerf {
        let passes = s.rx_packets + s.recirculations;
        PmdPerf {
            pmd: s.pmd,
            cpu: s.cpu,
            iterations: s.iterations,
            busy_iterations: s.busy_iterations,
            busy_pct: pct(s.busy_cycles, s.total_cycles),
            rx_packets: s.rx_packets,
            cycles_per_packet: ratio(s.dp_cycles, s.rx_packets),
            busy_cycles_per_packet: ratio(s.busy_cycles, s.rx_packets),
            passes,
            passes_per_packet: ratio(passes, s.rx_packets),
            recirculations: s.recirculations,
            recirc_hint_hits: s.recirc_hint_hits,
            direct_passes: s.direct_passes,
            ct_fast_hits: s.ct_fast_hits,
            emc_hits: s.emc_hits,
            emc_hit_pct: pct(s.emc_hits, passes),
            megaflow_hits: s.megaflow_hits,
            megaflow_hit_pct: pct(s.megaflow_hits, passes),
            megaflow_lookups_per_hit: ratio(s.megaflow_hit_probes, s.megaflow_hits),
            misses: s.misses,
            miss_pct: pct(s.misses, passes),
            cycles_per_miss: ratio(s.slow_path_cycles, s.misses),
            handed_off: s.handed_off,
            handoff_drops: s.handoff_drops,
            tx_unpolled: s.tx_unpolled,
            busy_cycles: s.busy_cycles,
            total_cycles: s.total_cycles,
            umem: s.umem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_linux_cpulists() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("2-5").unwrap(), vec![2, 3, 4, 5]);
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_cpu_list(" 3 , 1,1-2").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_cpu_list("7-7").unwrap(), vec![7]);
        for bad in [
            "", ",", "1,", "a", "1-", "-1", "3-1", "1-2-3", "1024", "0x1", "-",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_cpu_list("3-1").unwrap_err().contains("reversed"));
        assert!(parse_cpu_list("99999999999999999999").is_err());
    }

    #[cfg(feature = "afxdp")]
    fn budget_set(threads: usize, frames: Option<u32>) -> PmdSet {
        let snap = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let mut cfg = PmdConfig::unpinned(threads, RxqAssign::RoundRobin);
        cfg.afxdp_umem_frames = frames;
        PmdSet::spawn(snap, DatapathConfig::default(), &cfg).unwrap()
    }

    /// Add port `no` (a memory port standing in for an AF_XDP socket whose
    /// fill ring takes `need` frames) where `afxdp_place` puts it.
    #[cfg(feature = "afxdp")]
    fn place(set: &mut PmdSet, no: PortNo, need: u32) -> Result<usize, String> {
        use crate::port::memory::MemoryPort;
        let t = set.afxdp_place(&[need])?[0];
        set.add_rxq_on(no, 0, Box::new(MemoryPort::new(8).0), t, need)
            .map_err(|_| "command queue full".to_string())
    }

    #[cfg(feature = "afxdp")]
    #[test]
    fn add_port_is_refused_once_the_thread_umem_cannot_stock_its_fill_ring() {
        // Default UMEM: 16384 frames, 1024 kept free, 15360 for fill rings.
        let mut set = budget_set(1, None);
        assert_eq!(set.afxdp_fill_need(2048), 2048);
        assert_eq!(set.afxdp_fill_need(256), 256);
        assert_eq!(
            set.afxdp_fill_need(4096),
            2048,
            "capped by the UMEM's fill ring"
        );
        for no in 1..=7 {
            assert_eq!(place(&mut set, no, 2048), Ok(0));
        }
        assert_eq!(set.umem_committed(0), 7 * 2048);
        let e = place(&mut set, 8, 2048).unwrap_err();
        for part in [
            "takes 2048 frames",
            "15360 fill-ring frames",
            "16384-frame UMEM",
            "1024 kept free",
            "pmd0 has 1024 left",
            "n-rxq-desc=256",
            "--afxdp-umem-frames",
            "--pmd-cpus",
        ] {
            assert!(e.contains(part), "{part:?} missing from: {e}");
        }
        // Small rings still fit in what is left: 4 x 256.
        for no in 8..=11 {
            assert_eq!(place(&mut set, no, 256), Ok(0));
        }
        assert!(place(&mut set, 12, 256).is_err());
        // A deleted port gives its frames back.
        assert!(set.del_port(1));
        assert_eq!(place(&mut set, 12, 2048), Ok(0));
        // Queues that take no UMEM frames (memory, tap, vhost) always fit.
        assert_eq!(place(&mut set, 13, 0), Ok(0));
        // A larger UMEM: 65536 frames -> 64512 for fill rings, 31 default rings.
        let mut big = budget_set(1, Some(65536));
        for no in 1..=31 {
            assert_eq!(place(&mut big, no, 2048), Ok(0), "port {no}");
        }
        assert!(place(&mut big, 32, 2048)
            .unwrap_err()
            .contains("pmd0 has 1024 left"));
    }

    #[cfg(feature = "afxdp")]
    #[test]
    fn a_queue_goes_to_a_thread_with_room_when_the_least_loaded_is_full() {
        let mut set = budget_set(2, None);
        // Alternating adds: pmd0 gets 7 default rings (full), pmd1 7 small ones.
        for i in 0..7u32 {
            assert_eq!(place(&mut set, 2 * i + 1, 2048), Ok(0));
            assert_eq!(place(&mut set, 2 * i + 2, 256), Ok(1));
        }
        // Both have 7 queues; pmd0 would win the tie but has no room.
        assert_eq!(set.afxdp_place(&[2048, 2048]), Ok(vec![1, 1]));
        assert_eq!(set.afxdp_place(&[2048]), Ok(vec![1]));
        // Small enough for pmd0's last 1024 frames: the tie goes to pmd0.
        assert_eq!(set.afxdp_place(&[1024]), Ok(vec![0]));
        assert_eq!(set.afxdp_place(&[256]), Ok(vec![0]));
        // More than both have left: refused, each thread's room named.
        let e = set.afxdp_place(&[2048; 7]).unwrap_err();
        assert!(e.contains("queue 6 of 7"), "{e}");
        assert!(e.contains("pmd0 has 1024 left, pmd1 has"), "{e}");
    }

    #[cfg(feature = "afxdp")]
    #[test]
    fn rebalance_moves_a_queue_only_where_its_fill_ring_fits() {
        // 4096 frames: 512 kept free, 3584 for fill rings per thread.
        let t = Duration::from_secs(10);
        let mut set = budget_set(2, Some(4096));
        let add = |set: &mut PmdSet, no: PortNo, pmd: usize, need: u32| {
            use crate::port::memory::MemoryPort;
            set.add_rxq_on(no, 0, Box::new(MemoryPort::new(8).0), pmd, need)
                .unwrap();
        };
        // pmd0: ports 1 (512), 2 (1536); pmd1: ports 3 (1536), 4 (1024).
        add(&mut set, 1, 0, 512);
        add(&mut set, 2, 0, 1536);
        add(&mut set, 3, 1, 1536);
        add(&mut set, 4, 1, 1024);
        // Round robin wants 2 -> pmd1 and 3 -> pmd0. Port 2 first would put
        // pmd1 at 4096; port 3 first fits (pmd0 at 3584), then port 2 does.
        let r = set.rebalance_report(t).unwrap();
        let order: Vec<(PortNo, usize, usize)> =
            r.moves.iter().map(|m| (m.port, m.from, m.to)).collect();
        assert_eq!(order, vec![(3, 1, 0), (2, 0, 1)]);
        assert!(r.kept.is_empty());
        assert_eq!((set.umem_committed(0), set.umem_committed(1)), (2048, 2560));

        // Now a move that can never fit: pmd0 {1: 2048, 2: 0},
        // pmd1 {3: 2048, 4: 1024}; round robin wants 3 -> pmd0 (4096).
        let mut set = budget_set(2, Some(4096));
        add(&mut set, 1, 0, 2048);
        add(&mut set, 2, 0, 0);
        add(&mut set, 3, 1, 2048);
        add(&mut set, 4, 1, 1024);
        let r = set.rebalance_report(t).unwrap();
        let order: Vec<(PortNo, usize, usize)> =
            r.moves.iter().map(|m| (m.port, m.from, m.to)).collect();
        assert_eq!(order, vec![(2, 0, 1)]);
        assert_eq!(
            r.kept,
            vec![KeptRxq {
                port: 3,
                queue: 0,
                pmd: 1,
                wanted: 0,
                frames: 2048,
                left: 1536,
            }]
        );
        assert_eq!(set.owner(3), Some(1));
        assert!(set.umem_committed(0) <= 3584 && set.umem_committed(1) <= 3584);
    }

    #[test]
    fn rebalance_plans_around_pinned_ports() {
        use crate::port::memory::MemoryPort;
        let snap = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let mut set = PmdSet::spawn(
            snap,
            DatapathConfig::default(),
            &PmdConfig::unpinned(2, RxqAssign::RoundRobin),
        )
        .unwrap();
        // Ports 1, 2, 3 land on pmd 0, 1, 0. Delete 1: round robin over 2, 3
        // would move both (2 -> 0, 3 -> 1).
        for no in 1..=3u32 {
            set.add_port(no, Box::new(MemoryPort::new(8).0)).unwrap();
        }
        assert!(set.del_port(1));
        assert_eq!(set.owner(2), Some(1));
        assert_eq!(set.owner(3), Some(0));
        // Pinned, port 2 stays on pmd 1 and port 3 is planned around it.
        set.set_pinned(2, true);
        let plan = set.plan();
        assert_eq!(plan.get(&(2, 0)), Some(&1));
        assert_eq!(plan.get(&(3, 0)), Some(&0));
        // Unpinned again, round robin in port order moves both.
        set.set_pinned(2, false);
        let plan = set.plan();
        assert_eq!(plan.get(&(2, 0)), Some(&0));
        assert_eq!(plan.get(&(3, 0)), Some(&1));
    }

    #[test]
    fn cpu_lists_format_back() {
        for s in ["1", "2-5", "0,2-3", "0-1,4,6-9"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(s).unwrap()), s);
        }
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn pinned_config_refuses_absent_cpus() {
        let e = PmdConfig::pinned("1023", RxqAssign::RoundRobin).unwrap_err();
        assert!(e.contains("not present"), "{e}");
        let allowed = allowed_cpus().unwrap();
        let first = allowed[0];
        let c = PmdConfig::pinned(&first.to_string(), RxqAssign::Cycles).unwrap();
        assert_eq!(c.cpus, vec![Some(first)]);
    }

    /// A port that never receives and whose end-of-iteration transmit work
    /// (as an AF_XDP kick retry) burns `spin` cycles on its first `left`
    /// calls and reports work; after that it has nothing to do.
    #[derive(Debug)]
    struct FlushOnly {
        counters: Arc<crate::port::PortCounters>,
        left: Arc<AtomicU64>,
        spin: u64,
    }

    impl Port for FlushOnly {
        fn rx_batch(&mut self, _: &mut PacketPool, _: &mut Vec<Packet>, _: usize) -> usize {
            0
        }
        fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
            for p in pkts.drain(..) {
                pool.put(p);
            }
            0
        }
        fn counters(&self) -> &Arc<crate::port::PortCounters> {
            &self.counters
        }
        fn tx_flush(&mut self, _: &mut PacketPool, _: bool) -> usize {
            if self.left.load(Ordering::SeqCst) == 0 {
                return 0;
            }
            let t0 = cycles_now();
            while cycles_now().wrapping_sub(t0) < self.spin {
                std::hint::spin_loop();
            }
            self.left.fetch_sub(1, Ordering::SeqCst);
            1
        }
    }

    #[test]
    fn deferred_tx_work_counts_as_busy_and_idle_polls_do_not() {
        let snap = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let h = PmdHandle::spawn(snap, DatapathConfig::default()).unwrap();
        let (times, spin) = (20u64, 1_000_000u64);
        let left = Arc::new(AtomicU64::new(times));
        let port = FlushOnly {
            counters: Arc::default(),
            left: left.clone(),
            spin,
        };
        h.send(PmdCommand::AddPort(1, Box::new(port))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while left.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(left.load(Ordering::SeqCst), 0, "the port was never flushed");
        assert!(h.sync(Duration::from_secs(10)));
        let s = h.stats();
        // The port never received a frame: before tx_flush was counted, all
        // of this was idle time and busy_cycles stayed 0.
        assert_eq!(s.rx_packets, 0);
        assert!(
            s.busy_cycles >= times * spin,
            "busy {} < {} cycles of tx work",
            s.busy_cycles,
            times * spin
        );
        let rxq = s.rxqs.iter().find(|r| r.port == 1).unwrap();
        assert!(rxq.busy_cycles >= times * spin);
        // Iterations with nothing to do add no busy cycles.
        let before = s.busy_cycles;
        std::thread::sleep(Duration::from_millis(50));
        assert!(h.sync(Duration::from_secs(10)));
        let after = h.stats();
        assert!(after.iterations > s.iterations);
        assert_eq!(after.busy_cycles, before, "idle iterations counted as busy");
        assert!(after.total_cycles > s.total_cycles);
    }

    #[test]
    fn backoff_spins_then_sleeps_and_ignores_preemption() {
        let us = Duration::from_micros;
        let mut b = Backoff::default();
        // Short empty iterations: spin until IDLE_SPIN of them, then sleep.
        let mut spun = Duration::ZERO;
        while spun + us(1) < IDLE_SPIN {
            assert_eq!(b.after(false, us(1)), None);
            spun += us(1);
        }
        assert_eq!(b.after(false, us(2)), Some(SLEEP_SHORT));
        // Work resets it.
        assert_eq!(b.after(true, us(1)), None);
        assert_eq!(b.after(false, us(1)), None);
        // A thread preempted for 5 ms under load counts at most
        // IDLE_STEP_CAP per iteration: it keeps spinning on return.
        let mut b = Backoff::default();
        let cap_steps = IDLE_SPIN.as_micros() / IDLE_STEP_CAP.as_micros();
        for _ in 0..cap_steps - 1 {
            assert_eq!(b.after(false, Duration::from_millis(5)), None);
        }
        // Long idleness: short sleeps, then long ones.
        let mut b = Backoff::default();
        let mut last = None;
        let mut t = Duration::ZERO;
        while t < IDLE_DEEP + us(200) {
            last = b.after(false, us(100));
            t += us(100);
            if t < IDLE_SPIN {
                assert_eq!(last, None);
            } else if t < IDLE_DEEP {
                assert_eq!(last, Some(SLEEP_SHORT), "at {t:?}");
            }
        }
        assert_eq!(last, Some(SLEEP_LONG));
    }

    #[test]
    fn rxq_assign_names() {
        assert_eq!("roundrobin".parse::<RxqAssign>(), Ok(RxqAssign::RoundRobin));
        assert_eq!("cycles".parse::<RxqAssign>(), Ok(RxqAssign::Cycles));
        assert!("group".parse::<RxqAssign>().is_err());
        assert_eq!(RxqAssign::Cycles.to_string(), "cycles");
    }
}
