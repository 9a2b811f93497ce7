//! The fast path: per-thread caches (exact match, megaflow), action
//! execution, and batch processing.
//!
//! Data enters as an rx batch of [`Packet`]s from one port
//! ([`Datapath::process_batch`]) and leaves as per-port tx batches
//! ([`TxBatches`]) that the polling loop hands to the ports; every packet not
//! sent goes back to the [`PacketPool`] and is counted under a named
//! [`DropReason`]. A batch is processed in three passes (extract every key,
//! then look every key up, then execute), so each pass stays hot in the
//! instruction cache and the megaflow lookups of a batch's EMC misses can be
//! made together, overlapping their cache misses
//! ([`MegaflowCache::lookup_batch`]). Lookup order: exact-match cache ([`emc`]), then the
//! megaflow cache ([`megaflow`]), then the slow path
//! ([`crate::pipeline::translate`]), whose answer is installed as a megaflow.
//!
//! Per packet this module never allocates, locks, makes a syscall or touches
//! an atomic: statistics are plain integers owned by the polling thread, and
//! rules' shared counters are only credited by [`Datapath::push_stats`].
//!
//! Invalidation policy (simple and correct): when a snapshot with a new
//! generation arrives ([`Datapath::set_snapshot`]), pending statistics are
//! pushed to the old snapshot's rules, then every megaflow and EMC entry is
//! flushed, since a flow-mod may change any answer. Revalidating megaflows by
//! re-translation (OVS's revalidators) is a later optimisation. The one
//! exception is L2 learning ([`fdb`]): a new MAC table view removes only the
//! NORMAL megaflows whose destination changed, checked once per batch.

pub mod actions;
pub mod emc;
pub mod execute;
pub mod fdb;
pub mod megaflow;

use std::sync::Arc;
use std::time::Instant;

pub use actions::DpAction;
pub use emc::{key_hash, Emc, EmcRef, RecircHint};
pub use execute::{apply, ExecCtx, ExecError, TunnelMeta};
pub use fdb::{DpL2, L2DpStats};
pub use megaflow::{
    Megaflow, MegaflowCache, MegaflowCounters, MegaflowHandle, MegaflowInstall, LOOKUP_BATCH,
};

use crate::conntrack::{CtToken, CtVerdict};
use crate::flow::{FlowKey, PortNo};
use crate::packet::{extract, extract_into, Layout, Packet, PacketPool, ParseStatus};
use crate::pipeline::xlate::XlateDrop;
use crate::pipeline::{Pipeline, Xlation};

/// What the control thread publishes to the polling threads: an immutable
/// pipeline and port list with a generation number. A polling thread that sees
/// a new generation between batches drops its cached megaflows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every published change.
    pub generation: u64,
    /// The flow tables.
    pub pipeline: Arc<Pipeline>,
    /// OpenFlow numbers of the bridge's ports, in a stable order; a port's index
    /// here is its dense index for per-port arrays.
    pub ports: Vec<PortNo>,
}

/// Why the datapath dropped a packet (or one copy of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Table miss (OpenFlow 1.3 table-miss drop) with no output.
    NoFlow,
    /// `dec_ttl` on TTL 0/1 with no output.
    InvalidTtl,
    /// Resubmit nesting too deep: translation dropped the packet.
    ResubmitDepth,
    /// The matching flow's actions are `drop`.
    ExplicitDrop,
    /// The actions ran but none of them output the packet.
    NoOutput,
    /// Output to a port number not in the snapshot.
    NoPort,
    /// No buffer to copy the packet into for a second output.
    PoolEmpty,
    /// The port's tx batch was full (the polling loop did not drain it).
    TxFull,
    /// An action could not be applied to a frame whose extraction found a malformed header.
    Malformed,
    /// An action could not be applied to a frame that ended inside a header.
    Truncated,
    /// An action could not be applied (header absent, no headroom).
    ActionFailed,
    /// The output port's transmit ring or queue was full.
    TxRingFull,
    /// The frame is larger than the port accepts.
    Oversize,
    /// The port is down (its interface vanished, or its peer is gone).
    PortDown,
    /// `route` on TTL / hop limit 0 or 1 (RFC 1812 §5.3.1 time exceeded).
    TtlExceeded,
    /// `route` found no route to the destination.
    NoRoute,
    /// `route`'s next hop has no known MAC (no `mac=`, no neighbour entry).
    NoNeighbour,
    /// An ICMP time exceeded was not sent: over the polling thread's rate
    /// (RFC 1812 §4.3.2.8, RFC 4443 §2.4(f)).
    IcmpRateLimited,
    /// The kernel had a frame for the port's AF_XDP socket but its fill
    /// ring was empty (XDP_STATISTICS `rx_fill_ring_empty_descs`).
    RxNoFill,
    /// The kernel had a frame for the port's AF_XDP socket but its rx ring
    /// was full: the polling thread fell behind (XDP_STATISTICS `rx_ring_full`).
    RxRingFull,
    /// `ct(commit)` found the connection table at its limit.
    CtFull,
    /// A packet was recirculated more than [`MAX_RECIRC_DEPTH`] times, or
    /// more recirculated copies were pending than the queue holds.
    RecircDepth,
    /// `ct(commit,nat(...))` found every address and port of its range
    /// taken by other connections (conntrack's NAT port allocation).
    NatNoPort,
}

impl DropReason {
    /// Number of reasons (size of per-reason counter arrays).
    pub const COUNT: usize = 23;
    /// Every reason, in counter-array order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::NoFlow,
        DropReason::InvalidTtl,
        DropReason::ResubmitDepth,
        DropReason::ExplicitDrop,
        DropReason::NoOutput,
        DropReason::NoPort,
        DropReason::PoolEmpty,
        DropReason::TxFull,
        DropReason::Malformed,
        DropReason::Truncated,
        DropReason::ActionFailed,
        DropReason::TxRingFull,
        DropReason::Oversize,
        DropReason::PortDown,
        DropReason::TtlExceeded,
        DropReason::NoRoute,
        DropReason::NoNeighbour,
        DropReason::IcmpRateLimited,
        DropReason::RxNoFill,
        DropReason::RxRingFull,
        DropReason::CtFull,
        DropReason::RecircDepth,
        DropReason::NatNoPort,
    ];

    /// The counter name operators see (`no_flow`, `invalid_ttl`...).
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::NoFlow => "no_flow",
            DropReason::InvalidTtl => "invalid_ttl",
            DropReason::ResubmitDepth => "resubmit_depth",
            DropReason::ExplicitDrop => "explicit_drop",
            DropReason::NoOutput => "no_output",
            DropReason::NoPort => "no_port",
            DropReason::PoolEmpty => "pool_empty",
            DropReason::TxFull => "tx_full",
            DropReason::Malformed => "malformed",
            DropReason::Truncated => "truncated",
            DropReason::ActionFailed => "action_failed",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::Oversize => "oversize",
            DropReason::PortDown => "port_down",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoRoute => "no_route",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::RxNoFill => "rx_no_fill",
            DropReason::RxRingFull => "rx_ring_full",
            DropReason::CtFull => "ct_full",
            DropReason::RecircDepth => "recirc_depth",
            DropReason::NatNoPort => "nat_no_port",
        }
    }

    /// Index in per-reason counter arrays.
    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason for translation's verdict.
    pub fn from_xlate(d: XlateDrop) -> DropReason {
        match d {
            XlateDrop::NoMatch { .. } => DropReason::NoFlow,
            XlateDrop::InvalidTtl => DropReason::InvalidTtl,
            XlateDrop::ResubmitDepth => DropReason::ResubmitDepth,
            XlateDrop::ExplicitDrop => DropReason::ExplicitDrop,
            XlateDrop::TtlExceeded => DropReason::TtlExceeded,
            XlateDrop::NoRoute => DropReason::NoRoute,
            XlateDrop::NoNeighbour => DropReason::NoNeighbour,
        }
    }
}

/// Counters of one ingress port (by dense index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortDpStats {
    /// The port's OpenFlow number (`ofport::ANY` for the "unknown ingress" slot).
    pub port: PortNo,
    /// Packets received from this port.
    pub rx_packets: u64,
    /// Received frames whose extraction found a malformed header (still forwarded).
    pub rx_malformed: u64,
    /// Received frames that ended inside a header (still forwarded).
    pub rx_truncated: u64,
    /// Drops by reason ([`DropReason::index`]).
    pub drops: [u64; DropReason::COUNT],
}

impl PortDpStats {
    /// Drops counted for `r`.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    /// Total drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Datapath counters, plain integers owned by the polling thread (which
/// publishes copies). Shapes follow OVS's `dpif-netdev/pmd-perf-show`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathStats {
    /// Packets received.
    pub packets: u64,
    /// Batches processed.
    pub batches: u64,
    /// Packets answered by the exact-match cache.
    pub emc_hits: u64,
    /// Of which recirculated passes answered by the previous pass's EMC
    /// entry's recirculation hint, without hashing or looking up their key.
    pub recirc_hint_hits: u64,
    /// `ct` actions answered by the established-connection fast path (a
    /// current connection token in the pass's EMC entry: no tracker lookup).
    pub ct_fast_hits: u64,
    /// Of those, first passes whose recirculation ran as a direct pass: the
    /// hint's megaflow executed at once, without building the recirculated
    /// key or using the recirculation stack.
    pub direct_passes: u64,
    /// Packets answered by the megaflow cache.
    pub megaflow_hits: u64,
    /// Packets sent to the slow path (upcalls).
    pub misses: u64,
    /// Subtables probed by megaflow lookups that hit (divide by `megaflow_hits`).
    pub megaflow_hit_probes: u64,
    /// Subtables probed by megaflow lookups that missed.
    pub megaflow_miss_probes: u64,
    /// Handles found stale between lookup and execution (evicted mid-batch) and looked up again.
    pub stale_handles: u64,
    /// Passes made by packets recirculated by `ct(table=T)`.
    pub recirculations: u64,
    /// Packets (originals and copies) put on tx batches.
    pub tx_packets: u64,
    /// Copies made for multiple outputs.
    pub copies: u64,
    /// Cycles (rdtsc; nanoseconds on non-x86) spent in `process_batch`.
    pub cycles: u64,
    /// Of which in the slow path (translation and install).
    pub slow_path_cycles: u64,
    /// Megaflow cache counters (installs, evictions, flushes), as of the last batch.
    pub megaflow: MegaflowCounters,
    /// Megaflows cached, as of the last batch.
    pub megaflows_live: u64,
    /// Per ingress port, by dense index; the last slot counts packets from a
    /// port not in the snapshot.
    pub ports: Vec<PortDpStats>,
}

impl DatapathStats {
    /// Average cycles per received packet (OVS pmd-perf-show's figure).
    pub fn cycles_per_packet(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.cycles as f64 / self.packets as f64
        }
    }

    /// Average subtables probed per megaflow hit.
    pub fn subtables_per_hit(&self) -> f64 {
        if self.megaflow_hits == 0 {
            0.0
        } else {
            self.megaflow_hit_probes as f64 / self.megaflow_hits as f64
        }
    }

    /// Drops for `r`, summed over ports.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.ports.iter().map(|p| p.drop_count(r)).sum()
    }

    /// Every drop, summed over ports and reasons.
    pub fn total_drops(&self) -> u64 {
        self.ports.iter().map(PortDpStats::total_drops).sum()
    }
}

/// Datapath tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Exact-match cache slots (rounded up to a power of two; 0 disables it).
    pub emc_entries: usize,
    /// Insert into the EMC 1 time in N (OVS `emc-insert-inv-prob`): 0 never, 1 always.
    pub emc_insert_inv_prob: u32,
    /// Maximum megaflows before eviction.
    pub megaflow_capacity: usize,
    /// Re-sort megaflow subtables by hits every this many batches.
    pub resort_interval: u32,
    /// Largest batch the scratch arrays are sized for up front (bigger ones grow them once).
    pub max_batch: usize,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            emc_entries: 8192,
            emc_insert_inv_prob: 100,
            megaflow_capacity: 65536,
            resort_interval: 1024,
            max_batch: 256,
        }
    }
}

/// Per-port tx batches, by dense port index (the snapshot's port order),
/// filled by [`Datapath::process_batch`] and drained by the polling loop.
/// A batch never grows past its capacity (a full batch is a counted drop),
/// so filling it never allocates.
#[derive(Debug, Default)]
pub struct TxBatches {
    queues: Vec<Vec<Packet>>,
    cap: usize,
    /// Always empty: what draining an unknown index yields.
    none: Vec<Packet>,
}

impl TxBatches {
    /// `n_ports` empty batches of `capacity` packets each.
    pub fn new(n_ports: usize, capacity: usize) -> TxBatches {
        TxBatches {
            queues: (0..n_ports).map(|_| Vec::with_capacity(capacity)).collect(),
            cap: capacity,
            none: Vec::new(),
        }
    }

    /// Number of ports.
    pub fn n_ports(&self) -> usize {
        self.queues.len()
    }

    /// Capacity of each batch.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Packets waiting for port `port_idx` (empty for an unknown index).
    pub fn queue(&self, port_idx: usize) -> &[Packet] {
        self.queues.get(port_idx).map_or(&[], |q| &q[..])
    }

    /// The batch of port `port_idx`, to hand to a port's tx (which takes
    /// packets out of it). None for an unknown index.
    pub fn queue_mut(&mut self, port_idx: usize) -> Option<&mut Vec<Packet>> {
        self.queues.get_mut(port_idx)
    }

    /// Take every packet waiting for port `port_idx`.
    /// An unknown index drains nothing.
    pub fn drain(&mut self, port_idx: usize) -> std::vec::Drain<'_, Packet> {
        match self.queues.get_mut(port_idx) {
            Some(q) => q.drain(..),
            None => self.none.drain(..),
        }
    }

    /// Total packets waiting.
    pub fn pending(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    /// Return every waiting packet to `pool`.
    pub fn clear_into(&mut self, pool: &mut PacketPool) {
        for q in &mut self.queues {
            for p in q.drain(..) {
                pool.put(p);
            }
        }
    }

    /// Make the batches match a port count (after a snapshot change; may
    /// allocate). Packets waiting in removed batches go back to `pool`.
    pub fn ensure_ports(&mut self, n_ports: usize, pool: &mut PacketPool) {
        if self.queues.len() == n_ports {
            return;
        }
        while self.queues.len() > n_ports {
            if let Some(q) = self.queues.pop() {
                q.into_iter().for_each(|p| pool.put(p));
            }
        }
        while self.queues.len() < n_ports {
            self.queues.push(Vec::with_capacity(self.cap));
        }
    }

    /// Queue `p` for port `idx`; gives it back when the batch is full.
    #[inline(always)]
    fn push(&mut self, idx: usize, p: Packet) -> Result<(), Packet> {
        match self.queues.get_mut(idx) {
            Some(q) if q.len() < self.cap => {
                q.push(p);
                Ok(())
            }
            _ => Err(p),
        }
    }

    /// Queue `p` for port `idx` with the tunnel metadata and next hop its
    /// output carries, set on the queued packet (after the move, so the
    /// move never waits for those narrower stores); gives it back
    /// unchanged when the batch is full.
    #[inline(always)]
    fn push_meta(
        &mut self,
        idx: usize,
        p: Packet,
        tunnel: Option<TunnelMeta>,
        nexthop: u32,
    ) -> Result<(), Packet> {
        match self.queues.get_mut(idx) {
            Some(q) if q.len() < self.cap => {
                q.push(p);
                if let Some(last) = q.last_mut() {
                    last.set_tunnel(tunnel);
                    last.set_nexthop(nexthop);
                }
                Ok(())
            }
            _ => Err(p),
        }
    }
}

/// Most passes one packet makes through the datapath: the first, plus
/// recirculations (OVS dpif-netdev `MAX_RECIRC_DEPTH`).
pub const MAX_RECIRC_DEPTH: u8 = 6;

/// Recirculated copies one packet may have pending at once.
const RECIRC_QUEUE: usize = 8;

/// Entries of the recirculation stack: the pending copies, plus the passes
/// in flight, which keep their entry (and their key, in place) until the
/// copies they queued have run: at most `MAX_RECIRC_DEPTH - 1` of them.
const RECIRC_SLOTS: usize = RECIRC_QUEUE + MAX_RECIRC_DEPTH as usize;

/// A packet waiting for its next pass (`ct(table=T)`); its key is the
/// stack's key slot of the same index ([`RecircStack`]).
#[derive(Debug)]
struct Recirc {
    /// The packet; None once its pass has started.
    pkt: Option<Packet>,
    layout: Layout,
    tunnel: Option<TunnelMeta>,
    nexthop: u32,
    /// Passes made so far.
    depth: u8,
    /// The pass's megaflow, known from the previous pass's EMC entry's
    /// [`RecircHint`] (re-validated before use); NONE: look the key up.
    hinted: MegaflowHandle,
    /// On a hint miss: the previous pass's EMC entry, to remember this
    /// pass's megaflow at (with the verdict the key was built from).
    hint_at: Option<(EmcRef, RecircHint)>,
}

/// Packets recirculated by `ct(table=T)` waiting for their next pass, LIFO
/// (OVS `dp_netdev_recirculate` runs them before the next received packet).
/// `ct` builds a recirculated key straight into `keys[entries.len()]`, and
/// the pass runs from there: the 192-byte key is never moved (it was
/// returned, pushed and popped: 10 % of the ACL benchmark's samples were
/// `memcpy`). A pass in flight keeps its entry, its packet taken, so the
/// copies it queues land above its key; the entry is popped when the loop
/// comes back to it. Never grows after construction.
#[derive(Debug)]
struct RecircStack {
    /// At most [`RECIRC_SLOTS`].
    entries: Vec<Recirc>,
    /// One more than `entries` can hold: `keys[entries.len()]` always
    /// exists, as `ct`'s place to build a key even when the stack is full.
    keys: Box<[FlowKey]>,
    /// Entries whose packet still waits.
    pending: usize,
}

impl RecircStack {
    fn new() -> RecircStack {
        RecircStack {
            entries: Vec::with_capacity(RECIRC_SLOTS),
            keys: vec![FlowKey::ZERO; RECIRC_SLOTS + 1].into_boxed_slice(),
            pending: 0,
        }
    }
}

/// Where a pass's `ct` queues recirculated copies: the stack's entries,
/// and its key slots from `base` up (those below belong to passes in
/// flight, one of which may be the pass whose actions run).
struct RecircSink<'a> {
    entries: &'a mut Vec<Recirc>,
    keys: &'a mut [FlowKey],
    base: usize,
    pending: &'a mut usize,
}

impl RecircSink<'_> {
    /// The key slot the next queued copy gets (a spare one when the stack
    /// is full: `ct` builds its key there and the copy is then dropped).
    #[inline(always)]
    fn next_key(&mut self) -> &mut FlowKey {
        let i = (self.entries.len() - self.base).min(self.keys.len() - 1);
        &mut self.keys[i]
    }

    /// Whether another copy may be queued.
    #[inline(always)]
    fn has_room(&self) -> bool {
        *self.pending < RECIRC_QUEUE && self.entries.len() < RECIRC_SLOTS
    }
}

/// What a pass's actions need beyond the packet and its megaflow: `ct`'s
/// tracker, recirculation queue, key and EMC entry, and where an ICMP
/// error goes.
struct PassEnv<'a> {
    ct: &'a crate::conntrack::Conntrack,
    now_ms: u64,
    /// Where recirculated packets wait.
    queue: RecircSink<'a>,
    /// Pass number of the packet whose actions run (1: fresh from a port).
    depth: u8,
    /// The key this pass was looked up with: while no action has changed
    /// the packet, `ct` takes its headers from here instead of extracting
    /// the frame again (the key and layout extraction would give).
    key: &'a FlowKey,
    /// The thread's EMC, for recirculation hints and connection tokens.
    emc: &'a mut Emc,
    /// The EMC entry that answered this pass with the megaflow whose
    /// actions run (NONE: none did; no hint is read or recorded).
    emc_ref: EmcRef,
    /// `ct` actions answered by the fast path (added to the stats after).
    fast_hits: u64,
    /// The thread's ICMP error budget and settings, for a TTL expired in
    /// this pass.
    icmp: IcmpOut<'a>,
}

/// The slow-path translation function the datapath calls on a miss
/// (normally [`crate::pipeline::translate`]).
pub type Translator = fn(&Pipeline, &[PortNo], &FlowKey) -> Xlation;

/// A cycle counter: the TSC on x86-64 (what OVS's pmd-perf-show counts),
/// nanoseconds since first use elsewhere.
#[inline(always)]
pub fn cycles_now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC only reads the time-stamp counter; it exists on every
        // x86-64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let e = EPOCH.get_or_init(Instant::now);
        u64::try_from(e.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Default)]
struct Scratch {
    keys: Vec<FlowKey>,
    layouts: Vec<Layout>,
    hashes: Vec<u64>,
    handles: Vec<MegaflowHandle>,
    /// The EMC entry that gave (or took) each key's handle.
    emc_refs: Vec<EmcRef>,
}

impl Scratch {
    fn ensure(&mut self, n: usize) {
        if self.keys.len() < n {
            self.keys.resize(n, FlowKey::ZERO);
            self.layouts.resize(
                n,
                Layout {
                    l3: crate::packet::extract::NO_OFFSET,
                    l4: crate::packet::extract::NO_OFFSET,
                    status: ParseStatus::Ok,
                },
            );
            self.hashes.resize(n, 0);
            self.handles.resize(n, MegaflowHandle::NONE);
            self.emc_refs.resize(n, EmcRef::NONE);
        }
    }
}

/// The fast path of one polling thread: its caches, its statistics, and the
/// snapshot they were built from.
#[derive(Debug)]
pub struct Datapath {
    snapshot: Arc<Snapshot>,
    cfg: DatapathConfig,
    emc: Emc,
    mf: MegaflowCache,
    stats: DatapathStats,
    scratch: Scratch,
    /// A replacement slow path (tests); None: translation with L2 learning.
    translator: Option<Translator>,
    /// L2 learning for NORMAL: the MAC table view and tagged megaflows.
    l2: DpL2,
    epoch: Instant,
    batches_since_resort: u32,
    /// [`cycles_now`] when `now_ms` was last read from the clock (0: never).
    clock_tsc: u64,
    /// Milliseconds since `epoch`, as of `clock_tsc`.
    now_ms: u64,
    /// This thread's ICMP error rate limit.
    icmp_bucket: crate::packet::icmp_error::TokenBucket,
    /// Packets recirculated by `ct(table=T)`, waiting for their next pass.
    recirc: RecircStack,
    /// The tracker's clock ([`crate::conntrack::Conntrack::now_ms`]), read
    /// with `now_ms`.
    ct_now_ms: u64,
}

/// Cycles between two reads of the clock for megaflow last-used times:
/// 2^20 is ~0.4 ms at 2.5 GHz (and ~1 ms where [`cycles_now`] counts ns).
const CLOCK_REFRESH_CYCLES: u64 = 1 << 20;

impl Datapath {
    /// A datapath with empty caches for `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>, cfg: DatapathConfig) -> Datapath {
        let mut scratch = Scratch::default();
        scratch.ensure(cfg.max_batch);
        // `set-bridge emc-insert-inv-prob=N` wins over the configured default.
        let inv_prob = snapshot
            .pipeline
            .emc_insert_inv_prob()
            .unwrap_or(cfg.emc_insert_inv_prob);
        let mut dp = Datapath {
            emc: Emc::new(cfg.emc_entries, inv_prob),
            mf: MegaflowCache::new(cfg.megaflow_capacity),
            stats: DatapathStats::default(),
            scratch,
            translator: None,
            l2: DpL2::default(),
            epoch: Instant::now(),
            batches_since_resort: 0,
            clock_tsc: 0,
            now_ms: 0,
            icmp_bucket: crate::packet::icmp_error::TokenBucket::default(),
            recirc: RecircStack::new(),
            ct_now_ms: 0,
            snapshot,
            cfg,
        };
        dp.stats.ports = port_stats_for(&dp.snapshot.ports, &[]);
        dp
    }

    /// Replace the slow-path function (tests, alternative pipelines).
    /// Flushes the caches, whose answers came from the old one.
    pub fn set_translator(&mut self, f: Translator) {
        self.translator = Some(f);
        self.flush();
    }

    /// Connect NORMAL to a bridge's MAC learning (its published view and
    /// learn queue); without it NORMAL floods and learns nothing.
    pub fn attach_l2(&mut self, shared: Arc<crate::pipeline::l2::L2Shared>) {
        self.l2.attach(shared);
    }

    /// This thread's L2 learning state (counters, view).
    pub fn l2(&self) -> &DpL2 {
        &self.l2
    }

    /// Every stats round: queue refreshes for the sources of NORMAL
    /// megaflows hit since the last round (see [`DpL2::refresh`]).
    pub fn l2_refresh(&mut self) {
        self.l2.refresh(&self.mf);
    }

    /// The configuration.
    pub fn config(&self) -> &DatapathConfig {
        &self.cfg
    }

    /// The snapshot the caches were built from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Counters.
    pub fn stats(&self) -> &DatapathStats {
        &self.stats
    }

    /// The megaflow cache (dumps, tests).
    pub fn megaflows(&self) -> &MegaflowCache {
        &self.mf
    }

    /// The exact-match cache (tests, occupancy).
    pub fn emc(&self) -> &Emc {
        &self.emc
    }

    /// Adopt a new snapshot. When its generation differs, pending statistics
    /// are pushed to the old snapshot's rules and both caches are flushed
    /// (the simple, correct policy: any flow-mod may change any answer).
    /// Per-port counters follow their port numbers into the new port order.
    /// Call between batches, with the tx batches drained: a dense port index
    /// means the new snapshot's port order from here on.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        if snapshot.generation == self.snapshot.generation && Arc::ptr_eq(&snapshot, &self.snapshot)
        {
            return;
        }
        self.push_stats();
        self.flush_caches();
        // The new pipeline may bring another tracker (another clock).
        self.clock_tsc = 0;
        if snapshot.ports != self.snapshot.ports {
            self.stats.ports = port_stats_for(&snapshot.ports, &self.stats.ports);
        }
        if let Some(n) = snapshot.pipeline.emc_insert_inv_prob() {
            self.emc.set_insert_inv_prob(n);
        }
        self.snapshot = snapshot;
    }

    /// Push statistics then empty both caches.
    pub fn flush(&mut self) {
        self.push_stats();
        self.flush_caches();
    }

    fn flush_caches(&mut self) {
        self.mf.flush();
        self.emc.flush();
        self.l2.clear();
    }

    /// Credit every megaflow's packets and bytes since the last push to its
    /// rules ([`crate::pipeline::RuleStats::add`]) and tables, then zero the
    /// deltas. Called by the polling loop periodically and on request, and by
    /// [`Datapath::set_snapshot`] before a flush.
    pub fn push_stats(&mut self) {
        self.mf.push_stats(&self.snapshot.pipeline, self.epoch);
    }

    /// Dense index of `port` in the snapshot.
    #[inline]
    pub fn port_index(&self, port: PortNo) -> Option<usize> {
        self.snapshot.ports.iter().position(|&p| p == port)
    }

    /// Forward one rx batch from `in_port`: every packet ends up in `tx` (for
    /// each output) or back in `pool` (counted as a drop). `batch` is left empty.
    ///
    /// Per batch: two TSC reads, and a monotonic clock read (vDSO, no
    /// syscall) for the megaflows' last-used time when ~1 ms has passed. Per packet: no allocation,
    /// lock, syscall or atomic; only a miss (translation, install) or a batch
    /// larger than any before (scratch arrays grow once) allocates.
    pub fn process_batch(
        &mut self,
        in_port: PortNo,
        batch: &mut Vec<Packet>,
        tx: &mut TxBatches,
        pool: &mut PacketPool,
    ) {
        let start = cycles_now();
        let n = batch.len();
        if n == 0 {
            return;
        }
        tx.ensure_ports(self.snapshot.ports.len(), pool);
        // A new MAC table view: drop the NORMAL megaflows it affects.
        self.l2
            .check(&mut self.mf, &self.snapshot.pipeline, self.epoch);
        // The megaflows' last-used time, in ms: reading the clock costs a
        // vDSO call (tens of ns under a hypervisor's clock source), so it
        // is re-read only when the TSC says about a millisecond has passed.
        if self.clock_tsc == 0 || start.wrapping_sub(self.clock_tsc) >= CLOCK_REFRESH_CYCLES {
            self.now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.ct_now_ms = self.snapshot.pipeline.conntrack().now_ms();
            self.clock_tsc = start;
        }
        let now_ms = self.now_ms;
        let pidx = self
            .port_index(in_port)
            .unwrap_or(self.snapshot.ports.len());
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.ensure(n);

        // Pass 1: extract every key, then hash them. Two loops, not one: a
        // key's 8-byte words were just written by narrower field stores,
        // and hashing it at once made every word's load wait for those
        // stores to commit (no store-to-load forwarding across sizes; h43's
        // profile). A batch later they have.
        {
            let ps = &mut self.stats.ports[pidx];
            ps.rx_packets += n as u64;
            for (i, p) in batch.iter().enumerate() {
                let lay = &mut scratch.layouts[i];
                extract_into(p.data(), in_port, &mut scratch.keys[i], lay);
                // A tunnel port's decapsulation left the outer header's
                // fields on the packet (RFC 7348: VNI, outer addresses).
                if let Some(t) = p.tunnel() {
                    let k = &mut scratch.keys[i];
                    k.tun_id = t.tun_id;
                    k.tun_src = t.src;
                    k.tun_dst = t.dst;
                }
                match lay.status {
                    ParseStatus::Ok => {}
                    ParseStatus::Truncated => ps.rx_truncated += 1,
                    ParseStatus::Malformed => ps.rx_malformed += 1,
                }
            }
            for (h, k) in scratch.hashes[..n].iter_mut().zip(&scratch.keys[..n]) {
                *h = key_hash(k);
            }
        }
        self.stats.packets += n as u64;

        // Pass 2: look every key up, in chunks of LOOKUP_BATCH: the EMC for
        // each key, then one batched (prefetching) megaflow lookup for the
        // EMC's misses, then the slow path for the megaflow misses (OVS
        // dp_netdev_input__: emc_processing, then fast_path_processing).
        let mut base = 0;
        while base < n {
            let m = (n - base).min(LOOKUP_BATCH);
            let mut todo = 0u32;
            for j in 0..m {
                let i = base + j;
                match self.emc.lookup_at(&scratch.keys[i], scratch.hashes[i]) {
                    Some((h, at)) if self.mf.get(h).is_some() => {
                        self.stats.emc_hits += 1;
                        scratch.handles[i] = h;
                        scratch.emc_refs[i] = at;
                    }
                    _ => todo |= 1 << j,
                }
            }
            if todo != 0 {
                self.lookup_misses(&mut scratch, base, m, todo);
            }
            base += m;
        }

        // Pass 3: execute.
        for (i, pkt) in batch.drain(..).enumerate() {
            let key = &scratch.keys[i];
            let mut h = scratch.handles[i];
            let mut emc_ref = scratch.emc_refs[i];
            if self.mf.get(h).is_none() {
                // Evicted by an install later in this batch: look up again.
                self.stats.stale_handles += 1;
                h = self.find_or_upcall(key);
                emc_ref = EmcRef::NONE;
            }
            let ctx = ExecCtx::new(key, scratch.layouts[i]);
            let mut depth = 1;
            // Plain traffic's entries have no hint: it pays one test of the
            // line the key compare has just read; the direct pass itself is
            // out of line.
            if self.emc.has_hint(emc_ref) {
                if let Some(next) = self.direct_pass(h, emc_ref, &ctx, pkt.len() as u64, now_ms) {
                    // The first pass was an established connection's `ct`:
                    // run the second pass's megaflow in its place. Its
                    // actions have no `ct`, so nothing reads its key (`key`
                    // stays the first pass's; `ExecCtx` takes only header
                    // presence from it, the same in both keys).
                    (h, emc_ref, depth) = (next, EmcRef::NONE, 2);
                }
            }
            match self.mf.hit(h, pkt.len() as u64, now_ms) {
                Some(flow) => {
                    let RecircStack {
                        entries,
                        keys,
                        pending,
                    } = &mut self.recirc;
                    let mut env = PassEnv {
                        ct: self.snapshot.pipeline.conntrack(),
                        now_ms: self.ct_now_ms,
                        queue: RecircSink {
                            entries,
                            keys,
                            base: 0,
                            pending,
                        },
                        depth,
                        key,
                        emc: &mut self.emc,
                        emc_ref,
                        fast_hits: 0,
                        icmp: IcmpOut {
                            bucket: &mut self.icmp_bucket,
                            cfg: self.snapshot.pipeline.icmp_errors(),
                            now_ms,
                            pidx,
                        },
                    };
                    run_actions(pkt, ctx, flow, tx, pool, &mut self.stats, pidx, &mut env);
                    self.stats.ct_fast_hits += env.fast_hits;
                    if !self.recirc.entries.is_empty() {
                        self.run_recirculations(tx, pool, pidx, now_ms);
                    }
                }
                None => {
                    // Unreachable (the handle was just validated or installed);
                    // never lose the buffer.
                    self.stats.ports[pidx].drops[DropReason::ActionFailed.index()] += 1;
                    pool.put(pkt);
                }
            }
        }
        self.scratch = scratch;

        self.stats.batches += 1;
        self.batches_since_resort += 1;
        if self.batches_since_resort >= self.cfg.resort_interval {
            self.batches_since_resort = 0;
            self.mf.resort();
        }
        self.stats.megaflow = self.mf.counters;
        self.stats.megaflows_live = self.mf.len() as u64;
        self.stats.cycles += cycles_now().wrapping_sub(start);
    }

    /// The established-connection direct pass: when the first pass's
    /// megaflow `h` is a lone `ct(table=T)` without `nat`, the frame parsed
    /// cleanly, its EMC entry's connection token is current and the entry's
    /// recirculation hint names a live megaflow without `ct`, that megaflow
    /// is the second pass's answer. This is the same decision `conntrack`
    /// and `run_recirculations` take on that path (the hint's verdict; its
    /// megaflow, recorded for that verdict), without building the
    /// recirculated key or going through the recirculation stack, which
    /// were about a third of the established ACL packet's cost. Credits
    /// the first pass's megaflow and counts the pass as a recirculation
    /// answered by the hint, as the stack would; returns the next pass's
    /// megaflow. None: take the stack.
    #[inline(never)]
    fn direct_pass(
        &mut self,
        h: MegaflowHandle,
        emc_ref: EmcRef,
        ctx: &ExecCtx,
        bytes: u64,
        now_ms: u64,
    ) -> Option<MegaflowHandle> {
        let hint = self.emc.hint(emc_ref)?;
        if ctx.layout.status != ParseStatus::Ok
            || !self.mf.get(h)?.sole_ct
            || self.mf.get(hint.handle)?.has_ct
            || !self
                .snapshot
                .pipeline
                .conntrack()
                .fast_refresh(hint.token, self.ct_now_ms)
        {
            return None;
        }
        self.mf.hit(h, bytes, now_ms);
        let s = &mut self.stats;
        s.ct_fast_hits += 1;
        s.recirculations += 1;
        s.emc_hits += 1;
        s.recirc_hint_hits += 1;
        s.direct_passes += 1;
        Some(hint.handle)
    }

    /// Run the packets `ct(table=T)` recirculated (and those their passes
    /// recirculate), one lookup (EMC, megaflow, slow path) and one action
    /// list each, before the next received packet: OVS dp_netdev_recirculate.
    #[cold]
    fn run_recirculations(
        &mut self,
        tx: &mut TxBatches,
        pool: &mut PacketPool,
        pidx: usize,
        now_ms: u64,
    ) {
        while let Some(top) = self.recirc.entries.len().checked_sub(1) {
            let r = &mut self.recirc.entries[top];
            let Some(pkt) = r.pkt.take() else {
                // Its pass ran, and so did the copies it queued.
                self.recirc.entries.pop();
                continue;
            };
            self.recirc.pending -= 1;
            let (layout, tunnel, nexthop, depth) = (r.layout, r.tunnel, r.nexthop, r.depth);
            let (hinted, hint_at) = (r.hinted, r.hint_at);
            self.stats.recirculations += 1;
            if depth >= MAX_RECIRC_DEPTH {
                self.stats.ports[pidx].drops[DropReason::RecircDepth.index()] += 1;
                pool.put(pkt);
                continue;
            }
            // The keys leave `self` for the pass (a pointer swap, no
            // copy), so the lookup may borrow the rest of it.
            let mut keys = std::mem::take(&mut self.recirc.keys);
            let (below, above) = keys.split_at_mut(top + 1);
            let key = &below[top];
            let (h, emc_ref) = if self.mf.get(hinted).is_some() {
                // The previous pass's EMC entry knew this key's megaflow.
                self.stats.emc_hits += 1;
                self.stats.recirc_hint_hits += 1;
                (hinted, EmcRef::NONE)
            } else {
                let (h, at) = self.lookup_one(key);
                if let Some((prev, hint)) = hint_at {
                    self.emc.set_hint(prev, RecircHint { handle: h, ..hint });
                }
                (h, at)
            };
            let mut ctx = ExecCtx::new(key, layout);
            ctx.tunnel = tunnel;
            ctx.nexthop = nexthop;
            match self.mf.hit(h, pkt.len() as u64, now_ms) {
                Some(flow) => {
                    let mut env = PassEnv {
                        ct: self.snapshot.pipeline.conntrack(),
                        now_ms: self.ct_now_ms,
                        queue: RecircSink {
                            entries: &mut self.recirc.entries,
                            keys: above,
                            base: top + 1,
                            pending: &mut self.recirc.pending,
                        },
                        depth: depth + 1,
                        key,
                        emc: &mut self.emc,
                        emc_ref,
                        fast_hits: 0,
                        icmp: IcmpOut {
                            bucket: &mut self.icmp_bucket,
                            cfg: self.snapshot.pipeline.icmp_errors(),
                            now_ms,
                            pidx,
                        },
                    };
                    run_actions(pkt, ctx, flow, tx, pool, &mut self.stats, pidx, &mut env);
                    self.stats.ct_fast_hits += env.fast_hits;
                }
                None => {
                    self.stats.ports[pidx].drops[DropReason::ActionFailed.index()] += 1;
                    pool.put(pkt);
                }
            }
            self.recirc.keys = keys;
        }
    }

    /// One key through the EMC, the megaflow cache, then the slow path,
    /// counting the tier that answered and feeding the EMC. Also returns
    /// the EMC entry that answered or took the handle (NONE: neither).
    fn lookup_one(&mut self, key: &FlowKey) -> (MegaflowHandle, EmcRef) {
        let hash = key_hash(key);
        if let Some((h, at)) = self.emc.lookup_at(key, hash) {
            if self.mf.get(h).is_some() {
                self.stats.emc_hits += 1;
                return (h, at);
            }
        }
        let h = match self.mf.lookup(key) {
            (Some(h), probed) => {
                self.stats.megaflow_hits += 1;
                self.stats.megaflow_hit_probes += u64::from(probed);
                h
            }
            (None, probed) => {
                self.stats.megaflow_miss_probes += u64::from(probed);
                self.stats.misses += 1;
                self.upcall(key)
            }
        };
        let mf = &self.mf;
        let at = self.emc.insert(key, hash, h, |x| mf.get(x).is_some());
        (h, at.unwrap_or(EmcRef::NONE))
    }

    /// The megaflow tier for the keys `base + j` of `scratch` with bit `j`
    /// set in `todo` (EMC misses; `m <= LOOKUP_BATCH` keys from `base`), then
    /// the slow path for its misses; fills their handles, counts which tier
    /// answered and feeds the EMC.
    #[inline]
    fn lookup_misses(&mut self, scratch: &mut Scratch, base: usize, m: usize, todo: u32) {
        let mut probes = [0u32; LOOKUP_BATCH];
        let found = self.mf.lookup_batch(
            &scratch.keys[base..base + m],
            todo,
            &mut scratch.handles[base..base + m],
            &mut probes,
        );
        // After an upcall in this chunk, a later key's batched answer may
        // be stale (evicted by the install) or missing (its megaflow was
        // just installed): look it up again, as a one-by-one pass would.
        let mut upcalled = false;
        let mut bits = todo;
        while bits != 0 {
            let j = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let i = base + j;
            let key = &scratch.keys[i];
            let hash = scratch.hashes[i];
            let h = scratch.handles[i];
            let (got, probed) = if found & (1 << j) != 0 && (!upcalled || self.mf.get(h).is_some())
            {
                (Some(h), probes[j])
            } else if upcalled {
                self.mf.lookup(key)
            } else {
                (None, probes[j])
            };
            let h = match got {
                Some(h) => {
                    self.stats.megaflow_hits += 1;
                    self.stats.megaflow_hit_probes += u64::from(probed);
                    h
                }
                None => {
                    self.stats.megaflow_miss_probes += u64::from(probed);
                    self.stats.misses += 1;
                    upcalled = true;
                    self.upcall(key)
                }
            };
            let mf = &self.mf;
            let at = self.emc.insert(key, hash, h, |x| mf.get(x).is_some());
            scratch.handles[i] = h;
            scratch.emc_refs[i] = at.unwrap_or(EmcRef::NONE);
        }
    }

    /// Megaflow lookup or slow path, without touching tier counters.
    fn find_or_upcall(&mut self, key: &FlowKey) -> MegaflowHandle {
        match self.mf.lookup(key).0 {
            Some(h) => h,
            None => self.upcall(key),
        }
    }

    /// The slow path: translate `key` and install the megaflow.
    fn upcall(&mut self, key: &FlowKey) -> MegaflowHandle {
        let t0 = cycles_now();
        let snap = &self.snapshot;
        let (x, l2_uses) = match self.translator {
            Some(t) => (t(&snap.pipeline, &snap.ports, key), Vec::new()),
            None => crate::pipeline::xlate::translate_l2(
                &snap.pipeline,
                &snap.ports,
                key,
                self.l2.view(),
            ),
        };
        let mut mask = x.mask;
        // The datapath's answer always depends on where the packet came from
        // (output to in_port is skipped, IN_PORT resolves to it).
        mask.in_port = u32::MAX;
        let out_idx: Box<[u32]> = x
            .actions
            .iter()
            .map(|a| match a {
                DpAction::Output(p) => snap
                    .ports
                    .iter()
                    .position(|q| q == p)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(u32::MAX),
                _ => u32::MAX,
            })
            .collect();
        // Execution stops after the last output or `ct` (whose tracking
        // and recirculation happen even when nothing is output after it).
        let last_output = x
            .actions
            .iter()
            .rposition(|a| matches!(a, DpAction::Output(_) | DpAction::Ct(_)));
        // XDP offload (port/afxdp/offload.rs): offer a plain megaflow to the
        // control thread, which decides and inserts it; slow path only.
        #[cfg(feature = "afxdp")]
        if crate::port::afxdp::offload::enabled()
            && x.group_counters.is_empty()
            && l2_uses.is_empty()
            && x.drop.is_none()
            && crate::port::afxdp::offload::quick_filter(&x.actions)
        {
            crate::port::afxdp::offload::offer(crate::port::afxdp::offload::Candidate {
                generation: snap.generation,
                key: *key,
                mask,
                actions: x.actions.clone().into_boxed_slice(),
                rules: x.rules.clone(),
                tables: x.tables.clone(),
            });
        }
        let what = MegaflowInstall {
            mask,
            actions: x.actions.into_boxed_slice(),
            out_idx,
            last_output,
            drop: x.drop.map(DropReason::from_xlate),
            rules: x.rules,
            tables: x.tables,
            groups: x.group_counters,
        };
        let h = self.mf.install(key, what, &snap.pipeline, self.epoch);
        if !l2_uses.is_empty() {
            self.l2.installed(h, &l2_uses);
        }
        self.stats.slow_path_cycles += cycles_now().wrapping_sub(t0);
        h
    }
}

/// Per-port counters for `ports` (+ the unknown-ingress slot), carrying over
/// the counters of ports already known in `old`.
fn port_stats_for(ports: &[PortNo], old: &[PortDpStats]) -> Vec<PortDpStats> {
    let mut v: Vec<PortDpStats> = ports
        .iter()
        .map(|&p| {
            old[..old.len().saturating_sub(1)]
                .iter()
                .find(|s| s.port == p)
                .copied()
                .unwrap_or(PortDpStats {
                    port: p,
                    ..PortDpStats::default()
                })
        })
        .collect();
    v.push(old.last().copied().unwrap_or(PortDpStats {
        port: crate::flow::ofport::ANY,
        ..PortDpStats::default()
    }));
    v
}

/// Where an ICMP error goes and what limits it.
struct IcmpOut<'a> {
    bucket: &'a mut crate::packet::icmp_error::TokenBucket,
    cfg: &'a crate::packet::icmp_error::IcmpErrorConfig,
    now_ms: u64,
    /// The ingress port's dense index (the error's output).
    pidx: usize,
}

/// Build an ICMP time exceeded about `pkt` (unchanged) in a buffer from the
/// pool and queue it on the ingress port, within the thread's rate. A
/// packet that came from a tunnel goes back through it to its sender VTEP.
/// Every error not sent is counted (`icmp_rate_limited`, `pool_empty`,
/// `tx_full`, `malformed`).
#[cold]
fn send_time_exceeded(
    pkt: &Packet,
    ctx: &ExecCtx,
    src: crate::packet::icmp_error::ErrorSrc,
    out: &mut IcmpOut<'_>,
    tx: &mut TxBatches,
    pool: &mut PacketPool,
    stats: &mut DatapathStats,
) {
    if out.pidx >= tx.n_ports() || out.pidx >= stats.ports.len() {
        return;
    }
    let mut dropped = |r: DropReason| stats.ports[out.pidx].drops[r.index()] += 1;
    if !out.bucket.take(out.now_ms, out.cfg.rate, out.cfg.burst) {
        dropped(DropReason::IcmpRateLimited);
        return;
    }
    let Some(mut c) = pool.get() else {
        dropped(DropReason::PoolEmpty);
        return;
    };
    let built = crate::packet::icmp_error::build_time_exceeded(
        pkt.data(),
        usize::from(ctx.layout.l3),
        src,
        c.frame_area_mut(),
    );
    let Ok(n) = built else {
        dropped(DropReason::Malformed);
        pool.put(c);
        return;
    };
    c.truncate(n);
    c.set_tunnel(pkt.tunnel().map(|t| TunnelMeta {
        tun_id: t.tun_id,
        src: 0,
        dst: t.src,
    }));
    match tx.push(out.pidx, c) {
        Ok(()) => stats.tx_packets += 1,
        Err(p) => {
            stats.ports[out.pidx].drops[DropReason::TxFull.index()] += 1;
            pool.put(p);
        }
    }
}

/// Execute a megaflow's actions on one packet: set actions in place, each
/// output but the last on a copy from the pool, the last on the original;
/// `ct` through the tracker, its recirculated copy queued in `env`.
#[inline]
#[allow(clippy::too_many_arguments)]
fn run_actions(
    mut pkt: Packet,
    mut ctx: ExecCtx,
    what: &Megaflow,
    tx: &mut TxBatches,
    pool: &mut PacketPool,
    stats: &mut DatapathStats,
    pidx: usize,
    env: &mut PassEnv<'_>,
) {
    // Translation puts an ICMP error first when the packet's TTL expired
    // (rare; in a recirculated pass too: `dec_ttl` or `route` after `ct`).
    if let Some(DpAction::IcmpTimeExceeded(src)) = what.actions.first() {
        send_time_exceeded(&pkt, &ctx, *src, &mut env.icmp, tx, pool, stats);
    }
    let DatapathStats {
        ports,
        tx_packets,
        copies,
        ..
    } = stats;
    let ps = &mut ports[pidx];
    // No action has changed the packet yet: `ct` may reuse `env.key`.
    let mut pristine = true;
    let Some(last) = what.last_output else {
        let r = what.drop.unwrap_or(DropReason::NoOutput);
        ps.drops[r.index()] += 1;
        pool.put(pkt);
        return;
    };
    for (ai, a) in what.actions.iter().enumerate().take(last + 1) {
        if let DpAction::Output(_) = a {
            let oi = what.out_idx.get(ai).copied().unwrap_or(u32::MAX);
            if oi == u32::MAX {
                ps.drops[DropReason::NoPort.index()] += 1;
                if ai == last {
                    pool.put(pkt);
                    return;
                }
                continue;
            }
            let oi = oi as usize;
            if ai == last {
                // The tunnel metadata travels with the frame to a tunnel
                // port's encapsulation; rx metadata never leaks to an output.
                // Into the batch first, then set: setting the 4- and
                // 8-byte fields and then moving the 48-byte packet made the
                // move's wide loads wait for those stores (h21's, h43's
                // profiles: a quarter of run_actions' samples).
                match tx.push_meta(oi, pkt, ctx.tunnel, ctx.nexthop) {
                    Ok(()) => *tx_packets += 1,
                    Err(p) => {
                        ps.drops[DropReason::TxFull.index()] += 1;
                        pool.put(p);
                    }
                }
                return;
            }
            let Some(mut c) = pool.get() else {
                ps.drops[DropReason::PoolEmpty.index()] += 1;
                continue;
            };
            c.copy_from(&pkt);
            *copies += 1;
            match tx.push_meta(oi, c, ctx.tunnel, ctx.nexthop) {
                Ok(()) => *tx_packets += 1,
                Err(p) => {
                    ps.drops[DropReason::TxFull.index()] += 1;
                    pool.put(p);
                }
            }
        } else if let DpAction::Ct(c) = a {
            let reuse = pristine.then_some(ctx.layout);
            // A `ct` may rewrite the packet (NAT): what follows re-extracts.
            pristine = false;
            match conntrack(&mut pkt, c, env, reuse) {
                CtStep::Continue => {}
                CtStep::Drop(r) => {
                    ps.drops[r.index()] += 1;
                    pool.put(pkt);
                    return;
                }
                CtStep::Recirculate {
                    layout,
                    hinted,
                    hint_at,
                } => {
                    let last_one = ai == last;
                    let (p, left) = if last_one {
                        (Some(pkt), None)
                    } else {
                        let Some(mut c) = pool.get() else {
                            ps.drops[DropReason::PoolEmpty.index()] += 1;
                            continue;
                        };
                        c.copy_from(&pkt);
                        *copies += 1;
                        (Some(c), Some(pkt))
                    };
                    if let Some(p) = p {
                        if env.queue.has_room() {
                            // Its key is already in place (`next_key`).
                            // `hint_at` is set on the pushed entry, not
                            // built into it: moving the 72-byte Option in
                            // with the rest made the push's 16-byte loads
                            // straddle two narrower stores and wait (h44's
                            // profile: ~10 % of run_actions' samples on the
                            // established path, where it is None).
                            env.queue.entries.push(Recirc {
                                pkt: Some(p),
                                layout,
                                tunnel: ctx.tunnel,
                                nexthop: ctx.nexthop,
                                depth: env.depth,
                                hinted,
                                hint_at: None,
                            });
                            if hint_at.is_some() {
                                if let Some(e) = env.queue.entries.last_mut() {
                                    e.hint_at = hint_at;
                                }
                            }
                            *env.queue.pending += 1;
                        } else {
                            ps.drops[DropReason::RecircDepth.index()] += 1;
                            pool.put(p);
                        }
                    }
                    match left {
                        Some(p) => pkt = p,
                        None => return,
                    }
                }
            }
        } else {
            pristine = false;
            if apply(&mut pkt, &mut ctx, a).is_err() {
                let r = match ctx.layout.status {
                    ParseStatus::Ok => DropReason::ActionFailed,
                    ParseStatus::Truncated => DropReason::Truncated,
                    ParseStatus::Malformed => DropReason::Malformed,
                };
                ps.drops[r.index()] += 1;
                pool.put(pkt);
                return;
            }
        }
    }
    // Unreachable: the loop returns at `last`. Keep the buffer regardless.
    pool.put(pkt);
}

/// `*dst = *src`, inlined: as one 192-byte assignment it became a call to
/// libc's `memmove` (above LLVM's inline-copy size), whose call, dispatch
/// and return were ~5 % of the established ACL packet's samples (h44's
/// profile); two 96-byte halves are copied with inline 16-byte moves.
#[inline(always)]
fn copy_key(dst: &mut FlowKey, src: &FlowKey) {
    type Halves = [[u64; crate::flow::key::KEY_WORDS / 2]; 2];
    let d: &mut Halves = bytemuck::cast_mut(dst);
    let s: &Halves = bytemuck::cast_ref(src);
    d[0] = s[0];
    d[1] = s[1];
}

/// What a datapath `ct` decided.
enum CtStep {
    /// Tracked; no recirculation: carry on with the next action.
    Continue,
    /// Drop the packet (e.g. `ct_full`).
    Drop(DropReason),
    /// Tracked; recirculate a copy with this layout, whose key `ct` built
    /// in the recirculation stack's next key slot.
    Recirculate {
        layout: Layout,
        /// The next pass's megaflow from a recirculation hint (NONE: none).
        hinted: MegaflowHandle,
        /// On a hint miss: where to record the hint once the next pass's
        /// megaflow is known.
        hint_at: Option<(EmcRef, RecircHint)>,
    },
}

/// Track `pkt` (OVS datapath `ct`): re-extract it as the earlier actions
/// left it (or, when none changed it, `pristine` is its layout and
/// `env.key` the key this pass was looked up with, whose headers are what
/// extraction would give), ask the tracker, and with `recirc` build the
/// next pass's key in the recirculation stack's next key slot: headers from
/// the frame, metadata from translation's frozen key, `ct_*` from the
/// verdict, `recirc_id = T + 1` (every non-header field is set here, so a
/// reused slot carries nothing of an earlier key). With `nat`, the tracker
/// translates the frame in place (OVS's datapath `ct(nat)` does too: what
/// follows, in this pass and the recirculated one, sees the translated
/// packet) and the key is extracted again.
///
/// Recirculation hint: when the pass was answered by an EMC entry, `ct` is
/// reached with the packet unchanged and without `nat` (so the next key's
/// headers are that entry's key), the next key is a pure function of the
/// entry's key, its megaflow (this action: zone, table, frozen metadata)
/// and the verdict's `ct_state`, `ct_mark` and `ct_label`. If the entry's
/// [`RecircHint`] was recorded for the same verdict, its megaflow is the
/// next pass's answer (re-validated by generation when used); otherwise the
/// next pass records it. No allocation; the tracker takes one shard lock at
/// a time (two for a NATed reply).
///
/// Established-connection fast path: the hint also carries the connection
/// token the tracker issued with its verdict. When that token is still
/// current ([`crate::conntrack::Conntrack::fast_refresh`]: same generation,
/// not expired; the frame parsed cleanly; the `ct` recirculates), the
/// tracker is not asked at all: the verdict is the hint's (no lock, no
/// hash; counted in `ct_fast_hits`). The slow path's token is stored with
/// its verdict, never apart from it.
#[inline(never)]
fn conntrack(
    pkt: &mut Packet,
    c: &actions::DpCt,
    env: &mut PassEnv<'_>,
    pristine: Option<Layout>,
) -> CtStep {
    let orig = env.key;
    let key = env.queue.next_key();
    let (v, layout, hintable) = match pristine {
        Some(l) if c.exec.nat.is_none() => {
            let hintable = env.emc_ref != EmcRef::NONE;
            // The established-connection fast path: this entry's token is
            // current, so the tracker would give the hint's verdict.
            let fast = match env.emc.hint(env.emc_ref) {
                Some(h)
                    if c.recirc.is_some()
                        && l.status == ParseStatus::Ok
                        && env.ct.fast_refresh(h.token, env.now_ms) =>
                {
                    env.fast_hits += 1;
                    Some(CtVerdict {
                        state: h.state,
                        mark: h.mark,
                        label: h.label(),
                        full: false,
                        nat_exhausted: false,
                        token: Some(h.token),
                    })
                }
                _ => None,
            };
            let v = match fast {
                Some(v) => v,
                None => env.ct.execute(pkt.data(), &l, orig, &c.exec, env.now_ms),
            };
            if c.recirc.is_some() && !v.full && !v.nat_exhausted {
                copy_key(key, orig);
            }
            (v, l, hintable)
        }
        _ => {
            let mut layout = match pristine {
                Some(l) => {
                    *key = *orig;
                    l
                }
                None => {
                    *key = FlowKey::ZERO;
                    extract(pkt.data(), c.frozen.in_port, key)
                }
            };
            let v = if c.exec.nat.is_some() {
                let (v, changed) =
                    env.ct
                        .execute_mut(pkt.data_mut(), &layout, key, &c.exec, env.now_ms);
                if changed {
                    *key = FlowKey::ZERO;
                    layout = extract(pkt.data(), c.frozen.in_port, key);
                }
                v
            } else {
                env.ct
                    .execute(pkt.data(), &layout, key, &c.exec, env.now_ms)
            };
            (v, layout, false)
        }
    };
    if v.full {
        return CtStep::Drop(DropReason::CtFull);
    }
    if v.nat_exhausted {
        return CtStep::Drop(DropReason::NatNoPort);
    }
    let Some(table) = c.recirc else {
        return CtStep::Continue;
    };
    let f = &c.frozen;
    key.in_port = f.in_port;
    key.metadata = f.metadata;
    key.regs = f.regs;
    key.tun_id = f.tun_id;
    key.tun_src = f.tun_src;
    key.tun_dst = f.tun_dst;
    key.ct_state = v.state;
    key.ct_zone = c.exec.zone;
    key.ct_mark = v.mark;
    key.ct_label = v.label.to_be_bytes();
    key.recirc_id = u32::from(table) + 1;
    let (mut hinted, mut hint_at) = (MegaflowHandle::NONE, None);
    if hintable {
        // The token is recorded with the verdict it was issued with, never
        // apart from it: a stale one (NONE when none was issued) is replaced.
        let token = v.token.unwrap_or(CtToken::NONE);
        match env.emc.hint(env.emc_ref) {
            Some(h) if h.same_verdict(v.state, v.mark, v.label) => {
                hinted = h.handle;
                if h.token != token {
                    env.emc.set_hint(env.emc_ref, RecircHint { token, ..h });
                }
            }
            _ => {
                hint_at = Some((
                    env.emc_ref,
                    RecircHint {
                        token,
                        ..RecircHint::of(MegaflowHandle::NONE, v.state, v.mark, v.label)
                    },
                ))
            }
        }
    }
    CtStep::Recirculate {
        layout,
        hinted,
        hint_at,
    }
}

#[cfg(test)]
mod key_copy_tests {
    use super::*;

    /// `ct` builds the recirculated key with `copy_key`: every byte of the
    /// pass's key must arrive (the second pass is looked up with it).
    #[test]
    fn copy_key_copies_every_byte() {
        let mut src = FlowKey::ZERO;
        for (i, b) in bytemuck::bytes_of_mut(&mut src).iter_mut().enumerate() {
            *b = (i as u8).wrapping_add(1);
        }
        let mut dst = FlowKey::ZERO;
        copy_key(&mut dst, &src);
        assert_eq!(bytemuck::bytes_of(&dst), bytemuck::bytes_of(&src));
    }
}
