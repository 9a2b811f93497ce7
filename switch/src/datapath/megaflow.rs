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
//! Each subtable is our own compact open-addressing index rather than a
//! general hash map, laid out for a batched, prefetching lookup (OVS's
//! `dpcls_lookup` over its cmap, `lib/dpif-netdev-lookup-generic.c`):
//! 64-byte buckets of 8 (32-bit hash tag, row) slots, linear probing bucket
//! by bucket, and a dense array of 64-byte-aligned *rows*, one per megaflow,
//! holding only the masked key words the subtable's mask looks at plus the
//! slab index and generation. A lookup therefore touches one bucket line and
//! one row line, never the ~320-byte slab entry, and
//! [`MegaflowCache::lookup_batch`] hashes a whole batch of keys and
//! prefetches all their buckets, then all their candidate rows, before
//! comparing anything, so the memory latencies of up to 32 keys overlap
//! instead of adding up.
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

use hashbrown::HashMap;

use super::actions::DpAction;
use crate::flow::key::masked_hash;
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
    /// Group and bucket counters to credit (`group:N`).
    pub groups: Vec<Arc<crate::group::Counter>>,
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
    /// Group and bucket counters to credit (`group:N`).
    pub groups: Vec<Arc<crate::group::Counter>>,
    /// The actions are one `ct(table=T)` without `nat`: an established
    /// packet whose EMC entry holds a current connection token and a
    /// recirculation hint goes straight to the next pass's megaflow
    /// (`Datapath::direct_pass`).
    pub sole_ct: bool,
    /// Some action is a `ct`: its pass needs its own key, built by the
    /// previous pass's `ct` (so it is never run as a direct pass).
    pub has_ct: bool,
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
    row: u32,
    referenced: bool,
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    flow: Option<Megaflow>,
}

/// Bucket slot value: never used since the last rehash (ends a probe).
const EMPTY: u32 = u32::MAX;
/// Bucket slot value: removed entry (a probe continues past it).
const TOMB: u32 = u32::MAX - 1;
/// Slots per bucket (one 64-byte line: 8 tags then 8 rows).
const BUCKET_SLOTS: usize = 8;
/// Keys per [`MegaflowCache::lookup_batch`] call (a datapath batch).
pub const LOOKUP_BATCH: usize = 32;

/// One cache line of the subtable index: 8 slots of (hash tag, row).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tags: [u32; BUCKET_SLOTS],
    rows: [u32; BUCKET_SLOTS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    tags: [0; BUCKET_SLOTS],
    rows: [EMPTY; BUCKET_SLOTS],
};

/// One cache line of rows.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Line([u64; 8]);

/// Hint the CPU to fetch the line at `p` into all cache levels.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults (not even on an invalid
    // address), has no architectural effect, and SSE is baseline on x86_64.
    // `p` points into a live Vec anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The megaflows of one mask: an open-addressing index of 64-byte buckets
/// over dense rows of masked key words.
#[derive(Debug)]
struct Subtable {
    mask: FlowMask,
    map: u32,
    /// Words of a row: the masked key words in `map` order, then
    /// `slab index | generation << 32`.
    n_words: usize,
    /// Lines per row.
    row_lines: usize,
    /// Power-of-two length (or 0 before the first insert).
    buckets: Vec<Bucket>,
    /// Non-EMPTY slots (live + tombstones).
    used: usize,
    /// Live entries.
    live: usize,
    rows: Vec<Line>,
    /// Full hash of each row's key (for rehashing).
    row_hash: Vec<u64>,
    free_rows: Vec<u32>,
    hits: u64,
}

impl Subtable {
    fn new(mask: FlowMask) -> Subtable {
        let map = mask.nonzero_words();
        let n_words = map.count_ones() as usize;
        Subtable {
            mask,
            map,
            n_words,
            row_lines: (n_words + 1).div_ceil(8),
            buckets: Vec::new(),
            used: 0,
            live: 0,
            rows: Vec::new(),
            row_hash: Vec::new(),
            free_rows: Vec::new(),
            hits: 0,
        }
    }

    #[inline(always)]
    fn word(&self, row: u32, j: usize) -> u64 {
        self.rows[row as usize * self.row_lines + j / 8].0[j % 8]
    }

    #[inline(always)]
    fn set_word(&mut self, row: u32, j: usize, v: u64) {
        self.rows[row as usize * self.row_lines + j / 8].0[j % 8] = v;
    }

    /// The handle stored in `row`.
    #[inline(always)]
    fn handle(&self, row: u32) -> MegaflowHandle {
        let m = self.word(row, self.n_words);
        MegaflowHandle {
            idx: m as u32,
            gen: (m >> 32) as u32,
        }
    }

    /// True when `key & mask` equals the masked words of `row`.
    #[inline(always)]
    fn row_matches(&self, row: u32, key: &FlowKey) -> bool {
        let kw = key.words();
        let mw = self.mask.words();
        let base = row as usize * self.row_lines;
        let Some(lines) = self.rows.get(base..base + self.row_lines) else {
            return false;
        };
        let mut m = self.map;
        let mut j = 0;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            if kw[i] & mw[i] != lines[j / 8].0[j % 8] {
                return false;
            }
            j += 1;
        }
        true
    }

    #[inline(always)]
    fn bucket_of(&self, hash: u64) -> usize {
        (hash as usize) & (self.buckets.len().wrapping_sub(1))
    }

    /// The row of the entry with hash `hash` for which `eq` holds, and its
    /// (bucket, slot).
    #[inline]
    fn find(&self, hash: u64, eq: impl Fn(u32) -> bool) -> Option<(u32, usize, usize)> {
        let nb = self.buckets.len();
        if nb == 0 {
            return None;
        }
        let tag = (hash >> 32) as u32;
        let mut bi = self.bucket_of(hash);
        for _ in 0..nb {
            let b = &self.buckets[bi];
            let mut saw_empty = false;
            for s in 0..BUCKET_SLOTS {
                let r = b.rows[s];
                if r == EMPTY {
                    saw_empty = true;
                } else if r != TOMB && b.tags[s] == tag && eq(r) {
                    return Some((r, bi, s));
                }
            }
            // Slots never go back to EMPTY, so an entry is never placed past
            // a bucket that had a free slot when it was inserted.
            if saw_empty {
                return None;
            }
            bi = (bi + 1) & (nb - 1);
        }
        None
    }

    /// Put (hash, row) in the first free slot of its probe sequence (the
    /// caller made sure there is room).
    fn place(&mut self, hash: u64, row: u32) {
        let nb = self.buckets.len();
        let tag = (hash >> 32) as u32;
        let mut bi = self.bucket_of(hash);
        for _ in 0..nb {
            let b = &mut self.buckets[bi];
            for s in 0..BUCKET_SLOTS {
                let r = b.rows[s];
                if r == EMPTY || r == TOMB {
                    if r == EMPTY {
                        self.used += 1;
                    }
                    b.rows[s] = row;
                    b.tags[s] = tag;
                    return;
                }
            }
            bi = (bi + 1) & (nb - 1);
        }
    }

    /// Rebuild the index with room for the live entries plus one at a load
    /// of at most 1/2 (drops the tombstones). Slow path.
    fn rehash(&mut self) {
        let want = ((self.live + 1) * 2)
            .div_ceil(BUCKET_SLOTS)
            .next_power_of_two();
        let live_rows: Vec<u32> = self
            .buckets
            .iter()
            .flat_map(|b| b.rows)
            .filter(|&r| r < TOMB)
            .collect();
        self.buckets.clear();
        self.buckets.resize(want, EMPTY_BUCKET);
        self.used = 0;
        for r in live_rows {
            let h = self.row_hash[r as usize];
            self.place(h, r);
        }
    }

    /// Add the masked `key` (hash `hash`) for slab entry `h`; returns its row.
    fn insert(&mut self, key: &FlowKey, hash: u64, h: MegaflowHandle) -> u32 {
        let cap = self.buckets.len() * BUCKET_SLOTS;
        if (self.used + 1) * 4 > cap * 3 {
            self.rehash();
        }
        let row = match self.free_rows.pop() {
            Some(r) => r,
            None => {
                let r = self.row_hash.len() as u32;
                self.row_hash.push(0);
                self.rows
                    .extend(std::iter::repeat_n(Line([0; 8]), self.row_lines));
                r
            }
        };
        self.row_hash[row as usize] = hash;
        let kw = key.words();
        let mask = self.mask;
        let mw = mask.words();
        let mut m = self.map;
        let mut j = 0;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            self.set_word(row, j, kw[i] & mw[i]);
            j += 1;
        }
        self.set_word(
            row,
            self.n_words,
            u64::from(h.idx) | (u64::from(h.gen) << 32),
        );
        self.place(hash, row);
        self.live += 1;
        row
    }

    /// Remove `row` (hash `hash`) from the index and free it.
    fn remove(&mut self, hash: u64, row: u32) {
        if let Some((_, bi, s)) = self.find(hash, |r| r == row) {
            self.buckets[bi].rows[s] = TOMB;
            self.live -= 1;
            self.free_rows.push(row);
        }
    }
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
            if let Some((r, _, _)) = st.find(hash, |r| st.row_matches(r, key)) {
                st.hits += 1;
                return (Some(st.handle(r)), probed);
            }
        }
        (None, probed)
    }

    /// Look up the keys `keys[i]` for each bit `i` set in `todo` (at most
    /// [`LOOKUP_BATCH`] keys; bits past `keys`, `out` or `probes` are
    /// ignored), with the same answers as [`MegaflowCache::lookup`] on each.
    /// Returns the bitmap of keys found; for each, `out[i]` is its handle.
    /// `probes[i]` is set to the subtables probed for every key in `todo`.
    ///
    /// Per subtable (most-hit first) it hashes every key still unanswered and
    /// prefetches its bucket, then finds each key's first tag match and
    /// prefetches that row, then compares: the cache misses of the batch
    /// overlap (OVS `dpcls_lookup`). Never allocates.
    pub fn lookup_batch(
        &mut self,
        keys: &[FlowKey],
        todo: u32,
        out: &mut [MegaflowHandle],
        probes: &mut [u32],
    ) -> u32 {
        let n = keys
            .len()
            .min(out.len())
            .min(probes.len())
            .min(LOOKUP_BATCH);
        let mut todo = todo
            & if n == LOOKUP_BATCH {
                u32::MAX
            } else {
                (1u32 << n) - 1
            };
        let mut bits = todo;
        while bits != 0 {
            probes[bits.trailing_zeros() as usize] = 0;
            bits &= bits - 1;
        }
        let mut found = 0u32;
        let mut hashes = [0u64; LOOKUP_BATCH];
        let mut cand = [EMPTY; LOOKUP_BATCH];
        for &si in &self.order {
            if todo == 0 {
                break;
            }
            let st = &mut self.subtables[si as usize];
            let nb = st.buckets.len();
            // Pass 1: hash every key, prefetch its home bucket.
            let mut bits = todo;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                probes[i] += 1;
                let h = masked_hash(&keys[i], &st.mask, st.map);
                hashes[i] = h;
                if nb != 0 {
                    prefetch(&st.buckets[st.bucket_of(h)]);
                }
            }
            if nb == 0 || st.live == 0 {
                continue;
            }
            // Pass 2: the first tag match in the home bucket; prefetch its row.
            let mut bits = todo;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let h = hashes[i];
                let tag = (h >> 32) as u32;
                let b = &st.buckets[st.bucket_of(h)];
                cand[i] = EMPTY;
                for s in 0..BUCKET_SLOTS {
                    if b.tags[s] == tag && b.rows[s] < TOMB {
                        let r = b.rows[s];
                        cand[i] = r;
                        if let Some(line) = st.rows.get(r as usize * st.row_lines) {
                            prefetch(line);
                        }
                        break;
                    }
                }
            }
            // Pass 3: compare; anything else (tag collision, an entry pushed
            // to a later bucket) takes the ordinary probe.
            let mut hits = 0;
            let mut bits = todo;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let key = &keys[i];
                let c = cand[i];
                let row = if c != EMPTY && st.row_matches(c, key) {
                    Some(c)
                } else {
                    st.find(hashes[i], |r| st.row_matches(r, key))
                        .map(|(r, _, _)| r)
                };
                if let Some(r) = row {
                    out[i] = st.handle(r);
                    found |= 1 << i;
                    todo &= !(1 << i);
                    hits += 1;
                }
            }
            st.hits += hits;
        }
        found
    }

    /// [`MegaflowCache::lookup_batch`] over any number of keys, in chunks of
    /// [`LOOKUP_BATCH`]: `out[i]` becomes the handle of the megaflow matching
    /// `keys[i]`, or None (for `i < min(keys.len(), out.len())`).
    pub fn lookup_many(&mut self, keys: &[FlowKey], out: &mut [Option<MegaflowHandle>]) {
        let mut handles = [MegaflowHandle::NONE; LOOKUP_BATCH];
        let mut probes = [0u32; LOOKUP_BATCH];
        for (ks, os) in keys.chunks(LOOKUP_BATCH).zip(out.chunks_mut(LOOKUP_BATCH)) {
            let found = self.lookup_batch(ks, u32::MAX, &mut handles, &mut probes);
            for (i, o) in os.iter_mut().enumerate() {
                *o = (found & (1 << i) != 0).then_some(handles[i]);
            }
        }
    }

    /// Re-sort subtables by hits (most-hit first), dropping empty ones, and
    /// halve the hit counts so the order follows recent traffic. Cheap: a
    /// sort of a handful of indices; call every few batches.
    pub fn resort(&mut self) {
        let subs = &self.subtables;
        self.order.retain(|&i| subs[i as usize].live != 0);
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
                self.subtables.push(Subtable::new(mask));
                self.by_mask.insert(mask, si);
                si
            }
        };
        if !self.order.contains(&si) {
            self.order.push(si);
        }
        let st = &self.subtables[si as usize];
        let masked = key.masked(&st.mask);
        let hash = masked_hash(key, &st.mask, st.map);
        if let Some((r, _, _)) = st.find(hash, |r| st.row_matches(r, key)) {
            return st.handle(r);
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
            groups,
        } = what;
        let sole_ct = matches!(&*actions,
            [DpAction::Ct(c)] if c.recirc.is_some() && c.exec.nat.is_none());
        let has_ct = actions.iter().any(|a| matches!(a, DpAction::Ct(_)));
        let flow = Megaflow {
            key: masked,
            sole_ct,
            has_ct,
            actions,
            out_idx,
            last_output,
            drop,
            rules,
            tables,
            groups,
            packets: 0,
            bytes: 0,
            used_ms: 0,
            total_packets: 0,
            subtable: si,
            hash,
            row: 0,
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
        let h = MegaflowHandle {
            idx,
            gen: self.slots[idx as usize].gen,
        };
        let row = self.subtables[si as usize].insert(key, hash, h);
        if let Some(f) = self.slots[idx as usize].flow.as_mut() {
            f.row = row;
        }
        self.live += 1;
        self.counters.installed += 1;
        h
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
        self.subtables[f.subtable as usize].remove(f.hash, f.row);
        self.free.push(idx);
        self.live -= 1;
    }

    /// Remove the entry behind `h`, if it is still live, crediting its
    /// statistics to `pipeline` first (targeted invalidation: a learned MAC
    /// changed the answer of the NORMAL megaflows that depend on it).
    /// Counted as flushed. False when `h` was already stale.
    pub fn invalidate(&mut self, h: MegaflowHandle, pipeline: &Pipeline, epoch: Instant) -> bool {
        if self.get(h).is_none() {
            return false;
        }
        self.remove(h.idx, pipeline, epoch);
        self.counters.flushed += 1;
        true
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
    for g in &f.groups {
        g.add(f.packets, f.bytes);
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
            groups: Vec::new(),
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

    /// The answer by brute force over every live megaflow.
    fn brute(c: &MegaflowCache, k: &FlowKey) -> Option<*const Megaflow> {
        c.iter()
            .find(|(m, f)| k.masked(m) == f.key)
            .map(|(_, f)| f as *const Megaflow)
    }

    #[test]
    fn batched_and_single_lookups_agree_through_growth_and_eviction() {
        let p = Pipeline::new();
        let epoch = Instant::now();
        // Small capacity: thousands of evictions leave tombstones and force
        // rehashes while lookups keep answering.
        let mut c = MegaflowCache::new(700);
        let mut masks = [FlowKey::ZERO; 3];
        for m in &mut masks {
            m.in_port = u32::MAX;
        }
        masks[0].nw_dst = u32::MAX;
        masks[1].nw_dst = 0xffff_ff00;
        masks[1].tp_dst = u16::MAX;
        masks[2] = FlowKey::all_ones();
        let mut x = 0x9e37_79b9_u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40 {
            for _ in 0..100 {
                let r = rnd();
                let k = key(
                    1 + (r % 3) as u32,
                    (r >> 8) as u32 % 3000,
                    (r >> 40) as u16 % 4,
                );
                // Megaflows never overlap: each in_port has its own mask.
                let m = masks[(k.in_port - 1) as usize];
                c.install(&k, install_for(m), &p, epoch);
            }
            if round % 7 == 6 {
                c.resort();
            }
            let keys: Vec<FlowKey> = (0..45)
                .map(|_| {
                    let r = rnd();
                    key(
                        1 + (r % 3) as u32,
                        (r >> 8) as u32 % 3000,
                        (r >> 40) as u16 % 4,
                    )
                })
                .collect();
            let mut out = vec![None; keys.len()];
            c.lookup_many(&keys, &mut out);
            let mut hits = 0;
            for (k, o) in keys.iter().zip(&out) {
                let single = c.lookup(k).0;
                assert_eq!(*o, single, "batched == single for {k:?}");
                let want = brute(&c, k);
                assert_eq!(o.and_then(|h| c.get(h)).map(|f| f as *const _), want);
                hits += usize::from(o.is_some());
            }
            assert!(round < 10 || hits > 0, "a warm cache answers some keys");
        }
        assert!(c.counters.evicted > 1000);
        assert_eq!(c.len(), 700);
        // The bitmap interface: only the keys asked for are answered.
        let keys: Vec<FlowKey> = c.iter().take(3).map(|(_, f)| f.key).collect();
        let mut out = [MegaflowHandle::NONE; 3];
        let mut probes = [99u32; 3];
        let found = c.lookup_batch(&keys, 0b101, &mut out, &mut probes);
        assert_eq!(found, 0b101);
        assert_eq!(probes[1], 99, "key 1 was not asked for");
        assert!(probes[0] >= 1 && probes[2] >= 1);
        assert_eq!(Some(out[2]), c.lookup(&keys[2]).0);
    }
}
