//! The megaflow cache: wildcarded (key, mask) → datapath actions, looked up by
//! tuple-space search (one hash table per distinct mask, as in OVS's
//! `lib/dpif-netdev.c` dpcls).
//!
//! Data enters through [`MegaflowCache::install`] (slow path, after a
//! translation) and leaves through [`MegaflowCache::lookup`] (a handle) and
//! [`MegaflowCache::get`] (the entry behind a handle). Megaflows never overlap
//! (every translation's mask covers every bit its answer depended on), so a
//! lookup may stop at the first subtable that matches: there are no
//! priorities. Subtables are probed in order of hit count, re-sorted every
//! few batches ([`MegaflowCache::resort`]).
//!
//! Entries live in a slab (`Vec`) and are named by [`MegaflowHandle`]s
//! carrying a generation number, so the exact-match cache can hold handles
//! and detect, with one compare, that an entry was evicted or flushed.
//!
//! The cache belongs to one polling thread: its per-entry statistics are
//! plain integers. It must never allocate on a hit, and never take a lock.
//!
//! Eviction: the cache is bounded ([`MegaflowCache::capacity`]). When an
//! install finds it full, a CLOCK (second-chance) hand sweeps the slab: an
//! entry hit since the hand last passed gets its reference bit cleared and is
//! spared; the first entry not hit is evicted (its unpushed statistics are
//! first credited to its rules). This approximates LRU at O(1) amortised cost
//! with one plain bool per entry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashTable};

use super::actions::DpAction;
use crate::flow::key::{masked_eq, masked_hash};
use crate::flow::{FlowKey, FlowMask, N_TABLES};
use crate::pipeline::{Pipeline, Rule};

/// A reference to a megaflow entry; stale once the entry is evicted or flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MegaflowHandle {
    idx: u32,
    gen: u32,
}

impl MegaflowHandle {
    /// A handle from raw parts (tests of the caches).
    #[cfg(test)]
    pub(crate) const fn from_raw(idx: u32, gen: u32) -> MegaflowHandle {
        MegaflowHandle { idx, gen }
    }

    /// A handle that never names a live entry (used for empty EMC slots).
    pub const NONE: MegaflowHandle = MegaflowHandle {
        idx: u32::MAX,
        gen: u32::MAX,
    };
}

/// What a megaflow does, as installed from a translation.
#[derive(Debug)]
pub struct MegaflowInstall {
    /// Wildcard mask (must include `in_port`).
    pub mask: FlowMask,
    /// Datapath actions.
    pub actions: Box<[DpAction]>,
    /// Dense tx index of each action's output port (same length as `actions`;
    /// `u32::MAX` for non-outputs and for ports outside the snapshot).
    pub out_idx: Box<[u32]>,
    /// Index in `actions` of the last `Output`, if any.
    pub last_output: Option<usize>,
    /// Drop reason recorded by translation (used when nothing is output).
    pub drop: Option<super::DropReason>,
    /// Rules to credit.
    pub rules: Vec<Arc<Rule>>,
    /// Table lookups to credit: (table, matched).
    pub tables: Vec<(u8, bool)>,
}

/// One cached megaflow. Its mask lives in its subtable (see
/// [`MegaflowCache::iter`]), shared by every megaflow with that mask.
#[derive(Debug)]
pub struct Megaflow {
    /// The masked key.
    pub key: FlowKey,
    /// Datapath actions.
    pub actions: Box<[DpAction]>,
    /// Dense tx index of each action's output port (`u32::MAX` for
    /// non-outputs and ports outside the snapshot).
    pub out_idx: Box<[u32]>,
    /// Index in `actions` of the last `Output`, if any.
    pub last_output: Option<usize>,
    /// Drop reason recorded by translation (used when nothing is output).
    pub drop: Option<super::DropReason>,
    /// Rules to credit.
    pub rules: Vec<Arc<Rule>>,
    /// Table lookups to credit: (table, matched).
    pub tables: Vec<(u8, bool)>,
    /// Packets since the last stats push.
    pub packets: u64,
    /// Bytes since the last stats push.
    pub bytes: u64,
    /// Milliseconds since the cache's epoch of the last hit.
    pub used_ms: u64,
    /// Packets over the entry's life (for dumps).
    pub total_packets: u64,
    subtable: u32,
    hash: u64,
    referenced: bool,
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    flow: Option<Megaflow>,
}

#[derive(Debug)]
struct Subtable {
    mask: FlowMask,
    map: u32,
    table: HashTable<u32>,
    hits: u64,
}

/// Cache counters (plain integers, owned by the polling thread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MegaflowCounters {
    /// Entries installed.
    pub installed: u64,
    /// Entries evicted because the cache was full.
    pub evicted: u64,
    /// Entries removed by flushes.
    pub flushed: u64,
}

/// The megaflow cache of one polling thread.
pub struct MegaflowCache {
    slots: Vec<Slot>,
    free: Vec<u32>,
    subtables: Vec<Subtable>,
    by_mask: HashMap<FlowMask, u32>,
    /// Subtable indices, most-hit first.
    order: Vec<u32>,
    live: usize,
    capacity: usize,
    clock: usize,
    /// Counters.
    pub counters: MegaflowCounters,
}

impl core::fmt::Debug for MegaflowCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MegaflowCache")
            .field("live", &self.live)
            .field("capacity", &self.capacity)
            .field("subtables", &self.subtables.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl MegaflowCache {
    /// An empty cache holding at most `capacity` megaflows (at least 1).
    pub fn new(capacity: usize) -> MegaflowCache {
        let capacity = capacity.clamp(1, u32::MAX as usize - 1);
        MegaflowCache {
            slots: Vec::new(),
            free: Vec::new(),
            subtables: Vec::new(),
            by_mask: HashMap::new(),
            order: Vec::new(),
            live: 0,
            capacity,
            clock: 0,
            counters: MegaflowCounters::default(),
        }
    }

    /// Maximum number of megaflows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Megaflows cached.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no megaflow is cached.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Distinct masks (subtables).
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The entry behind `h`, if it is still live.
    #[inline(always)]
    pub fn get(&self, h: MegaflowHandle) -> Option<&Megaflow> {
        let s = self.slots.get(h.idx as usize)?;
        if s.gen != h.gen {
            return None;
        }
        s.flow.as_ref()
    }

    /// Account one packet of `bytes` bytes at `now_ms` to the entry behind
    /// `h` and return it; None when `h` is stale.
    #[inline(always)]
    pub fn hit(&mut self, h: MegaflowHandle, bytes: u64, now_ms: u64) -> Option<&Megaflow> {
        let s = self.slots.get_mut(h.idx as usize)?;
        if s.gen != h.gen {
            return None;
        }
        let f = s.flow.as_mut()?;
        f.packets += 1;
        f.bytes += bytes;
        f.total_packets += 1;
        f.used_ms = now_ms;
        f.referenced = true;
        Some(f)
    }

    /// Find the megaflow matching `key`. Returns its handle and the number of
    /// subtables probed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> (Option<MegaflowHandle>, u32) {
        let mut probed = 0;
        for &si in &self.order {
            probed += 1;
            let st = &mut self.subtables[si as usize];
            let hash = masked_hash(key, &st.mask, st.map);
            let slots = &self.slots;
            let found = st.table.find(hash, |&i| {
                slots[i as usize]
                    .flow
                    .as_ref()
                    .is_some_and(|f| masked_eq(key, &st.mask, &f.key, st.map))
            });
            if let Some(&i) = found {
                st.hits += 1;
                let gen = self.slots[i as usize].gen;
                return (Some(MegaflowHandle { idx: i, gen }), probed);
            }
        }
        (None, probed)
    }

    /// Re-sort subtables by hits (most-hit first), dropping empty ones, and
    /// halve the hit counts so the order follows recent traffic. Cheap: a
    /// sort of a handful of indices; call every few batches.
    pub fn resort(&mut self) {
        let subs = &self.subtables;
        self.order.retain(|&i| !subs[i as usize].table.is_empty());
        self.order
            .sort_by(|a, b| subs[*b as usize].hits.cmp(&subs[*a as usize].hits));
        for s in &mut self.subtables {
            s.hits /= 2;
        }
    }

    /// Install a megaflow for `key` (slow path: may allocate). When the cache
    /// is full, one entry is evicted first (its statistics pushed to
    /// `pipeline`'s rules and tables). If a live entry already covers `key`
    /// under the same mask, its handle is returned unchanged.
    pub fn install(
        &mut self,
        key: &FlowKey,
        what: MegaflowInstall,
        pipeline: &Pipeline,
        epoch: Instant,
    ) -> MegaflowHandle {
        let mask = what.mask;
        let si = match self.by_mask.get(&mask) {
            Some(&si) => si,
            None => {
                let si = self.subtables.len() as u32;
                self.subtables.push(Subtable {
                    mask,
                    map: mask.nonzero_words(),
                    table: HashTable::new(),
                    hits: 0,
                });
                self.by_mask.insert(mask, si);
                si
            }
        };
        if !self.order.contains(&si) {
            self.order.push(si);
        }
        let st = &self.subtables[si as usize];
        let (smask, smap) = (st.mask, st.map);
        let masked = key.masked(&smask);
        let hash = masked_hash(key, &smask, smap);
        {
            let slots = &self.slots;
            if let Some(&i) = self.subtables[si as usize].table.find(hash, |&i| {
                slots[i as usize]
                    .flow
                    .as_ref()
                    .is_some_and(|f| f.key == masked)
            }) {
                return MegaflowHandle {
                    idx: i,
                    gen: self.slots[i as usize].gen,
                };
            }
        }
        if self.live >= self.capacity {
            self.evict_one(pipeline, epoch);
        }
        let MegaflowInstall {
            mask: _,
            actions,
            out_idx,
            last_output,
            drop,
            rules,
            tables,
        } = what;
        let flow = Megaflow {
            key: masked,
            actions,
            out_idx,
            last_output,
            drop,
            rules,
            tables,
            packets: 0,
            bytes: 0,
            used_ms: 0,
            total_packets: 0,
            subtable: si,
            hash,
            referenced: true,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].flow = Some(flow);
                i
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    flow: Some(flow),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.subtables[si as usize]
            .table
            .insert_unique(hash, idx, |&i| {
                slots[i as usize].flow.as_ref().map_or(0, |f| f.hash)
            });
        self.live += 1;
        self.counters.installed += 1;
        MegaflowHandle {
            idx,
            gen: self.slots[idx as usize].gen,
        }
    }

    /// CLOCK sweep: evict the first entry not referenced since the hand passed.
    fn evict_one(&mut self, pipeline: &Pipeline, epoch: Instant) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        // Two full turns always find a victim: the first clears every bit.
        for _ in 0..2 * n + 1 {
            let i = self.clock % n;
            self.clock = (i + 1) % n;
            let Some(f) = self.slots[i].flow.as_mut() else {
                continue;
            };
            if f.referenced {
                f.referenced = false;
                continue;
            }
            self.remove(i as u32, pipeline, epoch);
            self.counters.evicted += 1;
            return;
        }
    }

    fn remove(&mut self, idx: u32, pipeline: &Pipeline, epoch: Instant) {
        let slot = &mut self.slots[idx as usize];
        let Some(mut f) = slot.flow.take() else {
            return;
        };
        slot.gen = slot.gen.wrapping_add(1);
        credit(&mut f, pipeline, epoch);
        let st = &mut self.subtables[f.subtable as usize];
        if let Ok(e) = st.table.find_entry(f.hash, |&i| i == idx) {
            e.remove();
        }
        self.free.push(idx);
        self.live -= 1;
    }

    /// Credit every entry's statistics since the last push to its rules and
    /// tables in `pipeline`, then zero the deltas.
    pub fn push_stats(&mut self, pipeline: &Pipeline, epoch: Instant) {
        for s in &mut self.slots {
            if let Some(f) = s.flow.as_mut() {
                credit(f, pipeline, epoch);
            }
        }
    }

    /// Remove every megaflow (their statistics must have been pushed first if
    /// they matter). Keeps the slab's allocation; every handle becomes stale.
    pub fn flush(&mut self) {
        for s in &mut self.slots {
            if s.flow.take().is_some() {
                s.gen = s.gen.wrapping_add(1);
                self.counters.flushed += 1;
            }
        }
        self.free.clear();
        self.free.extend((0..self.slots.len() as u32).rev());
        self.subtables.clear();
        self.by_mask.clear();
        self.order.clear();
        self.live = 0;
        self.clock = 0;
    }

    /// Every live megaflow with its mask (for dumps and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&FlowMask, &Megaflow)> {
        self.slots.iter().filter_map(|s| {
            let f = s.flow.as_ref()?;
            Some((&self.subtables[f.subtable as usize].mask, f))
        })
    }
}

/// Push one entry's deltas to its rules and tables (OVS: the revalidator's
/// stats push, xlate_push_stats).
fn credit(f: &mut Megaflow, pipeline: &Pipeline, epoch: Instant) {
    if f.packets == 0 {
        return;
    }
    let used = epoch + Duration::from_millis(f.used_ms);
    for r in &f.rules {
        let ms = used.saturating_duration_since(r.installed).as_millis();
        // A hit at the install instant would read as 0 = "never"; count it as 1 ms.
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).max(1);
        r.stats.add(f.packets, f.bytes, ms);
    }
    for &(t, matched) in &f.tables {
        if usize::from(t) >= N_TABLES {
            continue;
        }
        let ts = &pipeline.table(t).stats;
        ts.lookups.fetch_add(f.packets, Ordering::Relaxed);
        if matched {
            ts.matched.fetch_add(f.packets, Ordering::Relaxed);
        }
    }
    f.packets = 0;
    f.bytes = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install_for(mask: FlowMask) -> MegaflowInstall {
        MegaflowInstall {
            mask,
            actions: vec![DpAction::Output(1)].into_boxed_slice(),
            out_idx: vec![0].into_boxed_slice(),
            last_output: Some(0),
            drop: None,
            rules: Vec::new(),
            tables: Vec::new(),
        }
    }

    fn key(in_port: u32, nw_dst: u32, tp_dst: u16) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.in_port = in_port;
        k.nw_dst = nw_dst;
        k.tp_dst = tp_dst;
        k
    }

    #[test]
    fn lookup_respects_masks_and_handles_go_stale() {
        let p = Pipeline::new();
        let epoch = Instant::now();
        let mut c = MegaflowCache::new(16);
        let mut m24 = FlowKey::ZERO;
        m24.in_port = u32::MAX;
        m24.nw_dst = 0xffff_ff00;
        let h = c.install(&key(1, 0x0a00_0001, 80), install_for(m24), &p, epoch);
        // Same /24, other port number: hit; other /24: miss.
        assert_eq!(c.lookup(&key(1, 0x0a00_00fe, 443)).0, Some(h));
        assert_eq!(c.lookup(&key(1, 0x0a00_0101, 80)).0, None);
        assert_eq!(c.lookup(&key(2, 0x0a00_0001, 80)).0, None);
        // Installing the same masked key again returns the same entry.
        let h2 = c.install(&key(1, 0x0a00_0077, 1), install_for(m24), &p, epoch);
        assert_eq!(h, h2);
        assert_eq!(c.len(), 1);
        // A second mask makes a second subtable.
        let mut m32 = m24;
        m32.nw_dst = u32::MAX;
        m32.tp_dst = u16::MAX;
        let h3 = c.install(&key(1, 0x0a00_0101, 80), install_for(m32), &p, epoch);
        assert_eq!(c.n_subtables(), 2);
        assert_eq!(c.lookup(&key(1, 0x0a00_0101, 80)).0, Some(h3));
        assert!(c.hit(h3, 100, 5).is_some());
        c.flush();
        assert!(c.get(h).is_none() && c.get(h3).is_none());
        assert!(c.hit(h3, 100, 5).is_none());
        assert_eq!(c.lookup(&key(1, 0x0a00_0001, 80)).0, None);
        // Slots are reused after a flush, with new generations.
        let h4 = c.install(&key(1, 0x0a00_0001, 80), install_for(m24), &p, epoch);
        assert!(c.get(h4).is_some());
        assert!(c.get(h).is_none());
    }

    #[test]
    fn clock_eviction_spares_recently_hit_entries() {
        let p = Pipeline::new();
        let epoch = Instant::now();
        let mut c = MegaflowCache::new(3);
        let all = FlowKey::all_ones();
        let hs: Vec<_> = (0..3)
            .map(|i| c.install(&key(1, i, 0), install_for(all), &p, epoch))
            .collect();
        // First eviction sweep clears every reference bit and evicts slot 0.
        c.install(&key(1, 10, 0), install_for(all), &p, epoch);
        assert_eq!(c.len(), 3);
        assert!(c.get(hs[0]).is_none());
        // Entry 1 is hit again: the next eviction takes entry 2 instead.
        c.hit(hs[1], 1, 1);
        c.install(&key(1, 11, 0), install_for(all), &p, epoch);
        assert!(c.get(hs[1]).is_some());
        assert!(c.get(hs[2]).is_none());
        assert_eq!(c.counters.evicted, 2);
    }

    #[test]
    fn resort_puts_the_hottest_subtable_first() {
        let p = Pipeline::new();
        let epoch = Instant::now();
        let mut c = MegaflowCache::new(16);
        let mut ma = FlowKey::ZERO;
        ma.in_port = u32::MAX;
        ma.tp_dst = u16::MAX;
        let mut mb = FlowKey::ZERO;
        mb.in_port = u32::MAX;
        mb.nw_dst = u32::MAX;
        c.install(&key(1, 0, 80), install_for(ma), &p, epoch);
        c.install(&key(1, 7, 0), install_for(mb), &p, epoch);
        for _ in 0..10 {
            assert_eq!(
                c.lookup(&key(1, 7, 0)).1,
                2,
                "second subtable before resort"
            );
        }
        c.resort();
        assert_eq!(c.lookup(&key(1, 7, 0)).1, 1, "first after resort");
    }
}
