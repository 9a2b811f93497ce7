//! L2 learning for the `NORMAL` action: the MAC table (forwarding database),
//! the read-only view translation consults, and the lock-free channel that
//! carries learning from the polling threads to the control thread.
//!
//! Semantics follow OVS `lib/mac-learning.c` and `xlate_normal` in
//! `ofproto/ofproto-dpif-xlate.c`: source MACs are learned per (VLAN, MAC) on
//! the ingress port; unicast to a learned MAC goes to its port; unknown
//! unicast, broadcast and multicast flood the bridge except the ingress port;
//! a MAC seen on another port moves there; entries age out after
//! `mac-aging-time` (default 300 s) and the table holds at most
//! `mac-table-size` entries (default 8192), evicting the least recently seen.
//!
//! How data flows (see docs/architecture.md, "L2 learning"):
//! - Translation (slow path, in a polling thread) reads an immutable
//!   [`FdbView`] and, when the source MAC is not known on the ingress port,
//!   emits a [`LearnEvent`]; the datapath pushes it into [`L2Shared`]'s bounded
//!   lock-free queue (a full queue is a counted drop, never a wait).
//! - Every 250 ms each polling thread also queues a refresh event for the
//!   source of every NORMAL megaflow used since the last round (OVS's
//!   revalidators refresh MAC entries the same way), so active hosts do not
//!   age out while their packets never reach the slow path.
//! - The control thread owns the one writable [`MacTable`]: it drains the
//!   queue (every tick, 100 ms, and before every request), expires entries,
//!   and publishes a new [`FdbView`] whose change log lets each polling thread
//!   drop exactly the NORMAL megaflows whose destination changed.
//!
//! Never: take a lock or allocate on the per-packet path (only translation
//! and the control thread touch this module), block a polling thread on a
//! full queue, or learn a multicast source address.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use serde::Serialize;

use crate::flow::key::{VLAN_CFI, VLAN_VID_MASK};
use crate::flow::{FlowKey, PortNo};

/// An Ethernet address.
pub type MacAddr = [u8; 6];

/// OVS's default idle time of a learned MAC (`MAC_ENTRY_DEFAULT_IDLE_TIME`), seconds.
pub const DEFAULT_AGING_SECS: u32 = 300;
/// OVS's default table size (`MAC_DEFAULT_MAX`).
pub const DEFAULT_MAX_ENTRIES: usize = 8192;
/// Largest accepted `mac-aging-time`, seconds (one day).
pub const MAX_AGING_SECS: u32 = 86_400;
/// Largest accepted `mac-table-size`.
pub const MAX_TABLE_SIZE: usize = 1 << 20;
/// Depth of the learn queue between polling threads and the control thread.
pub const LEARN_QUEUE_DEPTH: usize = 8192;
/// Changes a published view remembers; a polling thread further behind
/// invalidates every NORMAL megaflow instead of only the affected ones.
pub const CHANGE_LOG: usize = 4096;

/// A MAC table key: the VLAN (0 for untagged) and the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FdbKey {
    /// VLAN id (0 = untagged).
    pub vlan: u16,
    /// Ethernet address.
    pub mac: MacAddr,
}

/// The VLAN a packet belongs to for learning: its outer VID, 0 when untagged
/// (OVS maps an untagged frame on a trunk port to VLAN 0).
#[inline]
pub fn vlan_of(key: &FlowKey) -> u16 {
    if key.vlan_tci & VLAN_CFI != 0 {
        key.vlan_tci & VLAN_VID_MASK
    } else {
        0
    }
}

/// Group (multicast or broadcast) address: the I/G bit of the first octet.
#[inline]
pub fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 1 != 0
}

/// IEEE 802.1D reserved group addresses 01:80:c2:00:00:00-0f (STP BPDUs,
/// LACP, LLDP...). OVS drops these in NORMAL unless `forward-bpdu` is set
/// (`is_admissible` / `eth_addr_is_reserved`); so do we.
#[inline]
pub fn is_reserved(mac: &MacAddr) -> bool {
    mac[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && mac[5] < 0x10
}

/// Format a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &MacAddr) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// A source address seen by a polling thread, for the control thread to learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnEvent {
    /// VLAN and source MAC.
    pub key: FdbKey,
    /// The port it arrived on.
    pub port: PortNo,
    /// A refresh from a cached megaflow rather than a slow-path sighting: it
    /// keeps an entry on `port` alive (or re-creates a lost one) but never
    /// moves an entry learned on another port since, which a megaflow
    /// installed before the move would otherwise undo.
    pub refresh: bool,
}

/// What the NORMAL action read and decided, for one execution of it in a
/// translation: the datapath tags the resulting megaflow with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Use {
    /// The destination looked up (the megaflow's output depends on it).
    pub dst: FdbKey,
    /// The source and ingress port (learned or refreshed from this megaflow).
    pub src: FdbKey,
    /// Ingress port.
    pub in_port: PortNo,
    /// The source was not known on `in_port`: learn it.
    pub learn: bool,
}

/// Where NORMAL sends a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalOut {
    /// To the learned port of the destination.
    Unicast(PortNo),
    /// The destination is learned on the ingress port: dropped (OVS
    /// "learned port is input port, dropping").
    InputPort(PortNo),
    /// Unknown unicast, broadcast or multicast: every port but the ingress one.
    Flood,
    /// A reserved (802.1D) group destination: dropped.
    Reserved,
}

/// NORMAL's decision for `flow` under `view` (OVS `xlate_normal` without
/// bonds, mirrors or multicast snooping): where it goes, and what it read.
pub fn normal_decision(view: &FdbView, flow: &FlowKey) -> (NormalOut, L2Use) {
    let vlan = vlan_of(flow);
    let src = FdbKey {
        vlan,
        mac: flow.dl_src,
    };
    let dst = FdbKey {
        vlan,
        mac: flow.dl_dst,
    };
    // mac_learning_may_learn: never a group source address.
    let learn = !is_multicast(&flow.dl_src) && view.lookup(&src) != Some(flow.in_port);
    let use_ = L2Use {
        dst,
        src,
        in_port: flow.in_port,
        learn,
    };
    let out = if is_reserved(&flow.dl_dst) {
        NormalOut::Reserved
    } else if is_multicast(&flow.dl_dst) {
        NormalOut::Flood
    } else {
        match view.lookup(&dst) {
            Some(p) if p == flow.in_port => NormalOut::InputPort(p),
            Some(p) => NormalOut::Unicast(p),
            None => NormalOut::Flood,
        }
    };
    (out, use_)
}

/// An immutable copy of the MAC table for translation, with the log of
/// recent changes that polling threads use to invalidate megaflows.
#[derive(Debug, Default)]
pub struct FdbView {
    /// The table's generation when this view was taken.
    pub generation: u64,
    map: HashMap<FdbKey, PortNo>,
    /// Changes with a generation above this are all in `log`.
    log_floor: u64,
    log: Vec<(u64, FdbKey)>,
}

impl FdbView {
    /// The port `key` is learned on.
    #[inline]
    pub fn lookup(&self, key: &FdbKey) -> Option<PortNo> {
        self.map.get(key).copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Put the keys changed after generation `since` into `out` (cleared
    /// first). False when the log does not reach back that far (or the table
    /// was flushed since): then anything may have changed.
    pub fn changes_since(&self, since: u64, out: &mut HashSet<FdbKey>) -> bool {
        out.clear();
        if since < self.log_floor {
            return false;
        }
        out.extend(self.log.iter().filter(|(g, _)| *g > since).map(|(_, k)| *k));
        true
    }
}

/// Counters of the MAC table (OVS `fdb/stats-show`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FdbStats {
    /// New entries learned.
    pub learned: u64,
    /// Entries that moved to another port.
    pub moved: u64,
    /// Entries removed by aging.
    pub expired: u64,
    /// Entries evicted because the table was full (least recently seen first).
    pub evicted: u64,
    /// Entries removed by a flush or with their port.
    pub removed: u64,
}

/// What [`MacTable::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A new entry.
    Learned,
    /// The entry moved from another port.
    Moved {
        /// The port it was on.
        from: PortNo,
    },
    /// The entry was already there; its age restarts.
    Refreshed,
    /// Not learned (group source address, or a refresh for a moved entry).
    Ignored,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortNo,
    seen_ms: u64,
    lru: (u64, u64),
}

/// One row of `fdb-show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdbRow {
    /// Port number.
    pub port: PortNo,
    /// VLAN (0 = untagged).
    pub vlan: u16,
    /// Address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Seconds since the address was last seen.
    pub age: u64,
}

/// The writable MAC table, owned by the control thread.
#[derive(Debug)]
pub struct MacTable {
    entries: HashMap<FdbKey, Entry>,
    /// (last seen ms, sequence) → key: least recently seen first.
    lru: BTreeMap<(u64, u64), FdbKey>,
    seq: u64,
    aging_ms: u64,
    max_entries: usize,
    generation: u64,
    log_floor: u64,
    log: VecDeque<(u64, FdbKey)>,
    stats: FdbStats,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable::new(DEFAULT_AGING_SECS, DEFAULT_MAX_ENTRIES)
    }
}

impl MacTable {
    /// An empty table (values are clamped to 1..=[`MAX_AGING_SECS`] and
    /// 1..=[`MAX_TABLE_SIZE`]).
    pub fn new(aging_secs: u32, max_entries: usize) -> MacTable {
        MacTable {
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            aging_ms: u64::from(aging_secs.clamp(1, MAX_AGING_SECS)) * 1000,
            max_entries: max_entries.clamp(1, MAX_TABLE_SIZE),
            generation: 0,
            log_floor: 0,
            log: VecDeque::new(),
            stats: FdbStats::default(),
        }
    }

    /// Increases with every change of a (key → port) binding.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> FdbStats {
        self.stats
    }

    /// The aging time, seconds.
    pub fn aging_secs(&self) -> u32 {
        u32::try_from(self.aging_ms / 1000).unwrap_or(MAX_AGING_SECS)
    }

    /// The size limit.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The port `key` is learned on.
    pub fn lookup(&self, key: &FdbKey) -> Option<PortNo> {
        self.entries.get(key).map(|e| e.port)
    }

    fn changed(&mut self, key: FdbKey) {
        self.generation += 1;
        self.log.push_back((self.generation, key));
        while self.log.len() > CHANGE_LOG {
            if let Some((g, _)) = self.log.pop_front() {
                self.log_floor = g;
            }
        }
    }

    fn touch(&mut self, key: FdbKey, now_ms: u64) {
        self.seq += 1;
        let lru = (now_ms, self.seq);
        if let Some(e) = self.entries.get_mut(&key) {
            self.lru.remove(&e.lru);
            e.lru = lru;
            e.seen_ms = now_ms;
            self.lru.insert(lru, key);
        }
    }

    fn remove(&mut self, key: &FdbKey) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.lru.remove(&e.lru);
                self.changed(*key);
                true
            }
            None => false,
        }
    }

    /// Learn that `key` was seen on `port` at `now_ms` (OVS
    /// `update_learning_table`): a new entry (evicting the least recently
    /// seen one when the table is full), a move, or a refresh.
    pub fn learn(&mut self, key: FdbKey, port: PortNo, now_ms: u64) -> LearnOutcome {
        if is_multicast(&key.mac) {
            return LearnOutcome::Ignored;
        }
        if let Some(e) = self.entries.get_mut(&key) {
            let from = e.port;
            if from == port {
                self.touch(key, now_ms);
                return LearnOutcome::Refreshed;
            }
            e.port = port;
            self.touch(key, now_ms);
            self.changed(key);
            self.stats.moved += 1;
            return LearnOutcome::Moved { from };
        }
        while self.entries.len() >= self.max_entries {
            if !self.evict_oldest() {
                break;
            }
        }
        self.seq += 1;
        let lru = (now_ms, self.seq);
        self.entries.insert(
            key,
            Entry {
                port,
                seen_ms: now_ms,
                lru,
            },
        );
        self.lru.insert(lru, key);
        self.changed(key);
        self.stats.learned += 1;
        LearnOutcome::Learned
    }

    /// A refresh from a cached megaflow: like [`MacTable::learn`], except
    /// that an entry now on another port is left alone.
    pub fn refresh(&mut self, key: FdbKey, port: PortNo, now_ms: u64) -> LearnOutcome {
        match self.lookup(&key) {
            Some(p) if p != port => LearnOutcome::Ignored,
            _ => self.learn(key, port, now_ms),
        }
    }

    /// Apply one event from the learn queue.
    pub fn apply(&mut self, ev: &LearnEvent, now_ms: u64) -> LearnOutcome {
        if ev.refresh {
            self.refresh(ev.key, ev.port, now_ms)
        } else {
            self.learn(ev.key, ev.port, now_ms)
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.lru.iter().next().map(|(k, v)| (*k, *v)) else {
            return false;
        };
        self.remove(&key);
        self.stats.evicted += 1;
        true
    }

    /// Remove every entry not seen for the aging time (OVS `mac_learning_run`).
    /// Returns how many expired.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while let Some((&(seen, _), &key)) = self.lru.iter().next() {
            if now_ms.saturating_sub(seen) < self.aging_ms {
                break;
            }
            self.remove(&key);
            self.stats.expired += 1;
            n += 1;
        }
        n
    }

    /// Remove every entry (`fdb-flush`). Returns how many there were.
    pub fn flush(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.lru.clear();
        self.stats.removed += n as u64;
        // Every key may have changed: views tell polling threads so by a
        // log that does not reach back (invalidate every NORMAL megaflow).
        self.generation += 1;
        self.log.clear();
        self.log_floor = self.generation;
        n
    }

    /// Remove the entries learned on `port` (the port left the bridge).
    pub fn remove_port(&mut self, port: PortNo) -> usize {
        let keys: Vec<FdbKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.port == port)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.remove(k);
        }
        self.stats.removed += keys.len() as u64;
        keys.len()
    }

    /// Set the aging time (seconds, clamped to 1..=[`MAX_AGING_SECS`]).
    /// Entries older than the new time go at the next [`MacTable::expire`].
    pub fn set_aging_secs(&mut self, secs: u32) {
        self.aging_ms = u64::from(secs.clamp(1, MAX_AGING_SECS)) * 1000;
    }

    /// Set the size limit (clamped to 1..=[`MAX_TABLE_SIZE`]), evicting the
    /// least recently seen entries beyond it.
    pub fn set_max_entries(&mut self, n: usize) {
        self.max_entries = n.clamp(1, MAX_TABLE_SIZE);
        while self.entries.len() > self.max_entries {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// The rows of `fdb-show`, ordered by port, VLAN, MAC.
    pub fn rows(&self, now_ms: u64) -> Vec<FdbRow> {
        let mut v: Vec<(PortNo, FdbKey, u64)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.port, *k, now_ms.saturating_sub(e.seen_ms) / 1000))
            .collect();
        v.sort_unstable_by_key(|(p, k, _)| (*p, k.vlan, k.mac));
        v.into_iter()
            .map(|(port, k, age)| FdbRow {
                port,
                vlan: k.vlan,
                mac: format_mac(&k.mac),
                age,
            })
            .collect()
    }

    /// An immutable copy for translation.
    pub fn view(&self) -> FdbView {
        FdbView {
            generation: self.generation,
            map: self.entries.iter().map(|(k, e)| (*k, e.port)).collect(),
            log_floor: self.log_floor,
            log: self.log.iter().copied().collect(),
        }
    }
}

/// What the control thread and the polling threads of one bridge share for
/// learning: the published view and the learn queue. Lock-free both ways.
#[derive(Debug)]
pub struct L2Shared {
    view: ArcSwap<FdbView>,
    generation: AtomicU64,
    queue: ArrayQueue<LearnEvent>,
    dropped: AtomicU64,
}

impl Default for L2Shared {
    fn default() -> Self {
        L2Shared::new()
    }
}

impl L2Shared {
    /// An empty view and queue.
    pub fn new() -> L2Shared {
        L2Shared {
            view: ArcSwap::from_pointee(FdbView::default()),
            generation: AtomicU64::new(0),
            queue: ArrayQueue::new(LEARN_QUEUE_DEPTH),
            dropped: AtomicU64::new(0),
        }
    }

    /// Publish a new view (control thread).
    pub fn publish(&self, view: FdbView) {
        let g = view.generation;
        self.view.store(Arc::new(view));
        self.generation.store(g, Ordering::Release);
    }

    /// The generation of the latest view: one atomic load, so a polling
    /// thread can check it every batch.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest view.
    pub fn view(&self) -> Arc<FdbView> {
        self.view.load_full()
    }

    /// Queue a learn event (polling thread, slow path). A full queue drops
    /// the event and counts it: the next sighting or refresh retries.
    pub fn push(&self, ev: LearnEvent) -> bool {
        if self.queue.push(ev).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Take the next queued event (control thread).
    pub fn pop(&self) -> Option<LearnEvent> {
        self.queue.pop()
    }

    /// Events lost to a full queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(vlan: u16, last: u8) -> FdbKey {
        FdbKey {
            vlan,
            mac: [0x02, 0, 0, 0, 0, last],
        }
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let mut t = MacTable::default();
        assert_eq!(t.learn(k(0, 1), 1, 0), LearnOutcome::Learned);
        assert_eq!(t.lookup(&k(0, 1)), Some(1));
        let g = t.generation();
        assert_eq!(t.learn(k(0, 1), 1, 10), LearnOutcome::Refreshed);
        assert_eq!(t.generation(), g, "a refresh changes no binding");
        assert_eq!(t.learn(k(0, 1), 3, 20), LearnOutcome::Moved { from: 1 });
        assert_eq!(t.lookup(&k(0, 1)), Some(3));
        assert!(t.generation() > g);
        assert_eq!(t.stats().learned, 1);
        assert_eq!(t.stats().moved, 1);
    }

    #[test]
    fn vlans_are_separate_namespaces() {
        let mut t = MacTable::default();
        t.learn(k(0, 1), 1, 0);
        t.learn(k(10, 1), 2, 0);
        assert_eq!(t.lookup(&k(0, 1)), Some(1));
        assert_eq!(t.lookup(&k(10, 1)), Some(2));
        assert_eq!(t.lookup(&k(20, 1)), None);
    }

    #[test]
    fn group_sources_are_never_learned() {
        let mut t = MacTable::default();
        let bcast = FdbKey {
            vlan: 0,
            mac: [0xff; 6],
        };
        let mcast = FdbKey {
            vlan: 0,
            mac: [0x01, 0, 0x5e, 0, 0, 1],
        };
        assert_eq!(t.learn(bcast, 1, 0), LearnOutcome::Ignored);
        assert_eq!(t.learn(mcast, 1, 0), LearnOutcome::Ignored);
        assert!(t.is_empty());
    }

    #[test]
    fn entries_age_out_unless_seen() {
        let mut t = MacTable::new(10, 100);
        t.learn(k(0, 1), 1, 0);
        t.learn(k(0, 2), 2, 0);
        t.learn(k(0, 2), 2, 6_000); // seen again at 6 s
        assert_eq!(t.expire(9_999), 0);
        assert_eq!(t.expire(10_000), 1, "the entry idle for 10 s goes");
        assert_eq!(t.lookup(&k(0, 1)), None);
        assert_eq!(t.lookup(&k(0, 2)), Some(2));
        assert_eq!(t.expire(16_000), 1);
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn full_table_evicts_least_recently_seen() {
        let mut t = MacTable::new(300, 3);
        t.learn(k(0, 1), 1, 0);
        t.learn(k(0, 2), 1, 1);
        t.learn(k(0, 3), 1, 2);
        t.learn(k(0, 1), 1, 3); // 1 is fresh again: 2 is now the oldest
        assert_eq!(t.learn(k(0, 4), 2, 4), LearnOutcome::Learned);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(&k(0, 2)), None);
        assert!(t.lookup(&k(0, 1)).is_some());
        assert_eq!(t.stats().evicted, 1);
        t.set_max_entries(1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(&k(0, 4)), Some(2), "the newest stays");
    }

    #[test]
    fn refresh_never_moves_an_entry() {
        let mut t = MacTable::default();
        t.learn(k(0, 1), 3, 0);
        assert_eq!(t.refresh(k(0, 1), 1, 5), LearnOutcome::Ignored);
        assert_eq!(t.lookup(&k(0, 1)), Some(3));
        assert_eq!(t.refresh(k(0, 1), 3, 5), LearnOutcome::Refreshed);
        assert_eq!(t.refresh(k(0, 9), 2, 5), LearnOutcome::Learned);
    }

    #[test]
    fn views_log_changes_for_invalidation() {
        let mut t = MacTable::default();
        t.learn(k(0, 1), 1, 0);
        let g = t.generation();
        t.learn(k(0, 2), 2, 0);
        t.learn(k(0, 1), 3, 0);
        let v = t.view();
        let mut set = HashSet::new();
        assert!(v.changes_since(g, &mut set));
        assert_eq!(set, HashSet::from([k(0, 1), k(0, 2)]));
        assert!(v.changes_since(v.generation, &mut set));
        assert!(set.is_empty());
        t.flush();
        let v = t.view();
        assert!(
            !v.changes_since(g, &mut set),
            "a flush invalidates everything"
        );
        assert!(v.is_empty());
    }

    #[test]
    fn remove_port_drops_its_entries() {
        let mut t = MacTable::default();
        t.learn(k(0, 1), 1, 0);
        t.learn(k(0, 2), 2, 0);
        t.learn(k(5, 3), 2, 0);
        assert_eq!(t.remove_port(2), 2);
        assert_eq!(t.len(), 1);
    }

    fn key(in_port: PortNo, src: u8, dst: MacAddr, vlan_tci: u16) -> FlowKey {
        let mut f = FlowKey::ZERO;
        f.in_port = in_port;
        f.dl_src = [0x02, 0, 0, 0, 0, src];
        f.dl_dst = dst;
        f.vlan_tci = vlan_tci;
        f
    }

    #[test]
    fn flood_set_and_unicast_decisions() {
        let mut t = MacTable::default();
        t.learn(k(0, 2), 2, 0);
        t.learn(k(0, 1), 1, 0);
        let v = t.view();
        // Known unicast.
        let (o, u) = normal_decision(&v, &key(1, 1, k(0, 2).mac, 0));
        assert_eq!(o, NormalOut::Unicast(2));
        assert!(!u.learn, "source already known on the ingress port");
        // Unknown unicast floods and asks to learn a new source.
        let (o, u) = normal_decision(&v, &key(3, 7, k(0, 9).mac, 0));
        assert_eq!(o, NormalOut::Flood);
        assert!(u.learn);
        // Broadcast and multicast flood.
        assert_eq!(
            normal_decision(&v, &key(1, 1, [0xff; 6], 0)).0,
            NormalOut::Flood
        );
        assert_eq!(
            normal_decision(&v, &key(1, 1, [0x33, 0x33, 0, 0, 0, 1], 0)).0,
            NormalOut::Flood
        );
        // Learned on the ingress port: dropped.
        assert_eq!(
            normal_decision(&v, &key(2, 1, k(0, 2).mac, 0)).0,
            NormalOut::InputPort(2)
        );
        // Reserved group address: dropped.
        assert_eq!(
            normal_decision(&v, &key(1, 1, [0x01, 0x80, 0xc2, 0, 0, 0], 0)).0,
            NormalOut::Reserved
        );
        // A tagged frame looks up its own VLAN: MAC 2 is unknown in VLAN 10.
        let (o, u) = normal_decision(&v, &key(1, 1, k(0, 2).mac, VLAN_CFI | 10));
        assert_eq!(o, NormalOut::Flood);
        assert_eq!(u.dst.vlan, 10);
        assert!(u.learn, "source 1 is unknown in VLAN 10");
        // A source seen on a new port asks to learn (the move).
        assert!(normal_decision(&v, &key(3, 1, [0xff; 6], 0)).1.learn);
    }

    #[test]
    fn shared_queue_counts_drops() {
        let s = L2Shared::new();
        let ev = LearnEvent {
            key: k(0, 1),
            port: 1,
            refresh: false,
        };
        for _ in 0..LEARN_QUEUE_DEPTH {
            assert!(s.push(ev));
        }
        assert!(!s.push(ev));
        assert_eq!(s.dropped(), 1);
        assert_eq!(s.pop(), Some(ev));
        let mut t = MacTable::default();
        t.learn(k(0, 1), 1, 0);
        s.publish(t.view());
        assert_eq!(s.generation(), t.generation());
        assert_eq!(s.view().lookup(&k(0, 1)), Some(1));
    }
}
