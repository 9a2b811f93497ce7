//! The packet classifier of one OpenFlow table: tuple-space search (TSS).
//!
//! Rules (a [`Match`], a priority and a payload `T`) enter through
//! [`Classifier::insert`] / [`Classifier::remove`] on the control thread; the
//! slow path asks [`Classifier::lookup`] for the highest-priority rule that
//! matches a packet key, and learns through the `wc` argument which key bits
//! the answer depended on (the megaflow mask). `lookup` never allocates,
//! locks or blocks, and it never returns a rule that does not match.
//!
//! # Design (after OVS `lib/classifier.c`, written from scratch)
//! - One **subtable** per distinct mask. A subtable is a `hashbrown`
//!   [`HashTable`] of buckets keyed by the masked value; the hash and the
//!   comparison touch only the words the mask has set
//!   ([`FlowKey::nonzero_words`], [`masked_hash`], [`masked_eq`]), so a
//!   subtable probe costs one hash over a few words plus one compare.
//! - A bucket holds every rule with that exact (mask, value), sorted by
//!   priority descending (then insertion order), so its best rule is `rules[0]`.
//! - Each subtable knows the highest priority among its rules; subtables are
//!   kept sorted by that maximum, descending. Lookup walks them in order and
//!   **stops early** as soon as the next subtable's maximum priority is below
//!   the best rule found: nothing there could win.
//! - **Ties**: among matching rules of equal priority (undefined in OpenFlow),
//!   the earliest inserted wins; replacing a rule (same match and priority)
//!   keeps its place. To make that deterministic the early stop only skips
//!   subtables whose maximum is strictly below the best priority, so the
//!   result is always exactly the one [`LinearClassifier`] gives.
//! - **Staged lookup** (OVS's `cls_subtable` stages): a subtable's mask is
//!   split into field groups, metadata → L2 → L3 → L4. The bucket hash is a
//!   chain of per-stage hashes, and for every stage but the last the
//!   subtable keeps a counted set of the chained hashes of its rules' values.
//!   A probe hashes stage by stage and gives up at the first stage whose hash
//!   is not in the set: no rule can match, and only the stages hashed so far
//!   are unwildcarded. So a packet from another in_port than every rule's
//!   does not drag L3/L4 bits into its megaflow.
//! - **Megaflow contract**: `lookup` ORs into `wc` the stages each probed
//!   subtable hashed (its whole mask when the final probe was made) and
//!   nothing else; a subtable skipped by the early stop adds nothing. Every
//!   key equal to `key` under the resulting `wc` computes the same stage
//!   hashes in the same subtables, so it probes the same subtables with the
//!   same outcome and gets the same answer (hash collisions in a stage set
//!   only make a probe go further, identically for such keys).
//! - Not done: OVS's prefix tries (which unwildcard only the prefix bits of
//!   `nw_src`/`nw_dst` a miss needed) and ports-trie; our `wc` keeps whole
//!   stage masks, so it can be wider than OVS's for tables with many
//!   different IP prefix lengths.
//!
//! Control-path cost: insert/remove find the subtable by a linear scan over
//! subtables (there are few distinct masks per table in practice) and re-sort
//! the subtable list only when a subtable's maximum priority changes.

use hashbrown::HashTable;

use crate::flow::key::{masked_eq, masked_hash, FlowKey, FlowMask};
use crate::flow::matches::Match;

/// One rule inside a bucket.
#[derive(Debug, Clone)]
struct Entry<T> {
    priority: u16,
    /// Insertion sequence number: the tie-breaker among equal priorities.
    seq: u64,
    value: T,
}

/// All rules with one exact (mask, value).
#[derive(Debug, Clone)]
struct Bucket<T> {
    m: Match,
    hash: u64,
    /// Never empty; sorted by priority descending, then `seq` ascending.
    rules: Vec<Entry<T>>,
}

/// The field groups of staged lookup, in lookup order (OVS's flow segments):
/// metadata (in_port, registers, metadata, tunnel, conntrack), L2, L3, and
/// L4 (everything else, so that the groups always cover every key bit).
fn stage_groups() -> [FlowMask; N_STAGES] {
    let mut meta = FlowKey::ZERO;
    meta.in_port = u32::MAX;
    meta.ct_state = u32::MAX;
    meta.ct_zone = u16::MAX;
    meta.ct_mark = u32::MAX;
    meta.tun_id = u64::MAX;
    meta.tun_src = u32::MAX;
    meta.tun_dst = u32::MAX;
    meta.metadata = u64::MAX;
    meta.regs = [u32::MAX; 8];
    meta.ct_label = [0xff; 16];
    let mut l2 = FlowKey::ZERO;
    l2.dl_dst = [0xff; 6];
    l2.dl_src = [0xff; 6];
    l2.dl_type = u16::MAX;
    l2.vlan_tci = u16::MAX;
    let mut l3 = FlowKey::ZERO;
    l3.nw_src = u32::MAX;
    l3.nw_dst = u32::MAX;
    l3.nw_proto = u8::MAX;
    l3.nw_tos = u8::MAX;
    l3.nw_ttl = u8::MAX;
    l3.nw_frag = u8::MAX;
    l3.arp_sha = [0xff; 6];
    l3.arp_tha = [0xff; 6];
    l3.ipv6_label = u32::MAX;
    l3.ipv6_src = [0xff; 16];
    l3.ipv6_dst = [0xff; 16];
    let mut l4 = FlowKey::all_ones();
    for g in [&meta, &l2, &l3] {
        for (w, gw) in l4.words_mut().iter_mut().zip(g.words()) {
            *w &= !gw;
        }
    }
    [meta, l2, l3, l4]
}

/// Number of staged-lookup field groups.
const N_STAGES: usize = 4;

/// One stage of a subtable: the part of its mask inside one field group.
#[derive(Debug, Clone)]
struct Stage {
    mask: FlowMask,
    map: u32,
}

/// Chain a stage's hash onto the hash of the stages before it.
#[inline(always)]
fn chain(h: u64, stage_hash: u64) -> u64 {
    let x = (h.rotate_left(26) ^ stage_hash).wrapping_mul(0xf135_7aea_2e62_a9c5);
    x ^ (x >> 32)
}

/// OR `mask`'s words listed in `map` into `wc`.
#[inline(always)]
fn unwildcard(wc: &mut FlowMask, mask: &FlowMask, map: u32) {
    let ww = wc.words_mut();
    let mw = mask.words();
    let mut m = map;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        ww[i] |= mw[i];
    }
}

/// All rules sharing one mask.
#[derive(Debug, Clone)]
struct Subtable<T> {
    mask: FlowMask,
    /// `mask.nonzero_words()`.
    map: u32,
    /// Highest priority of any rule in the subtable.
    max_priority: u16,
    n_rules: usize,
    /// Keyed by the chained stage hash of the bucket's value.
    buckets: HashTable<Bucket<T>>,
    /// The non-empty stages, in lookup order; together they are `mask`.
    stages: Vec<Stage>,
    /// For every stage but the last: (chained hash of the values through
    /// that stage, number of buckets with it). A miss there proves no rule
    /// can match, having looked only at the stages so far.
    indexes: Vec<HashTable<(u64, u32)>>,
}

impl<T> Subtable<T> {
    fn new(mask: FlowMask) -> Self {
        let stages: Vec<Stage> = stage_groups()
            .iter()
            .map(|g| {
                let sm = mask.masked(g);
                Stage {
                    map: sm.nonzero_words(),
                    mask: sm,
                }
            })
            .filter(|s| s.map != 0)
            .collect();
        let indexes = (1..stages.len()).map(|_| HashTable::new()).collect();
        Subtable {
            map: mask.nonzero_words(),
            mask,
            max_priority: 0,
            n_rules: 0,
            buckets: HashTable::new(),
            stages,
            indexes,
        }
    }

    /// Chained hashes of `value` through each stage; the last is the bucket hash.
    fn stage_hashes(&self, value: &FlowKey) -> [u64; N_STAGES] {
        let mut out = [0u64; N_STAGES];
        let mut h = 0u64;
        for (i, st) in self.stages.iter().enumerate() {
            h = chain(h, masked_hash(value, &st.mask, st.map));
            out[i] = h;
        }
        out
    }

    /// The bucket hash of `value` (0 for the catch-all subtable).
    fn hash_of(&self, value: &FlowKey) -> u64 {
        self.stages
            .len()
            .checked_sub(1)
            .map_or(0, |last| self.stage_hashes(value)[last])
    }

    /// Account a new bucket (`add`) or a removed one in the stage indexes.
    fn index_bucket(&mut self, value: &FlowKey, add: bool) {
        let hs = self.stage_hashes(value);
        for (idx, &h) in self.indexes.iter_mut().zip(hs.iter()) {
            match idx.find_entry(h, |e| e.0 == h) {
                Ok(mut occ) => {
                    if add {
                        occ.get_mut().1 += 1;
                    } else if occ.get().1 <= 1 {
                        occ.remove();
                    } else {
                        occ.get_mut().1 -= 1;
                    }
                }
                Err(_) => {
                    if add {
                        idx.insert_unique(h, (h, 1), |e| e.0);
                    }
                }
            }
        }
    }

    /// Staged probe: the bucket whose value equals `key & mask`. ORs into
    /// `wc` the stages it hashed: all of them when the final probe was made,
    /// only those up to the first stage whose index misses otherwise.
    #[inline(always)]
    fn probe(&self, key: &FlowKey, wc: &mut FlowMask) -> Option<&Bucket<T>> {
        let mut h = 0u64;
        for (i, st) in self.stages.iter().enumerate() {
            h = chain(h, masked_hash(key, &st.mask, st.map));
            unwildcard(wc, &st.mask, st.map);
            if let Some(idx) = self.indexes.get(i) {
                idx.find(h, |e| e.0 == h)?;
            }
        }
        self.buckets
            .find(h, |b| masked_eq(key, &self.mask, b.m.value(), self.map))
    }

    fn recompute_max(&mut self) {
        self.max_priority = self
            .buckets
            .iter()
            .map(|b| b.rules[0].priority)
            .max()
            .unwrap_or(0);
    }
}

/// Priority-ordered rule set over `Match`, searched by tuple-space search.
#[derive(Debug, Clone)]
pub struct Classifier<T> {
    /// Sorted by `max_priority` descending (stable: older subtables first).
    subtables: Vec<Subtable<T>>,
    n_rules: usize,
    seq: u64,
}

impl<T> Default for Classifier<T> {
    fn default() -> Self {
        Classifier {
            subtables: Vec::new(),
            n_rules: 0,
            seq: 0,
        }
    }
}

impl<T> Classifier<T> {
    /// Empty classifier.
    pub fn new() -> Self {
        Self::default()
    }

    fn subtable_index(&self, mask: &FlowMask) -> Option<usize> {
        self.subtables.iter().position(|s| s.mask == *mask)
    }

    fn resort(&mut self) {
        // Stable: subtables with equal maxima keep their relative order.
        self.subtables
            .sort_by_key(|s| core::cmp::Reverse(s.max_priority));
    }

    /// Insert with an explicit sequence number (`None`: a fresh one).
    /// Replacing keeps the old entry's sequence number.
    fn insert_inner(&mut self, m: Match, priority: u16, v: T, seq: Option<u64>) -> Option<T> {
        let idx = match self.subtable_index(m.mask()) {
            Some(i) => i,
            None => {
                self.subtables.push(Subtable::new(*m.mask()));
                self.subtables.len() - 1
            }
        };
        let seq = seq.unwrap_or_else(|| {
            self.seq += 1;
            self.seq
        });
        // Keep the counter ahead of any restored number.
        self.seq = self.seq.max(seq);
        let st = &mut self.subtables[idx];
        let h = st.hash_of(m.value());
        let entry = Entry {
            priority,
            seq,
            value: v,
        };
        match st.buckets.find_mut(h, |b| b.m == m) {
            Some(b) => {
                if let Some(e) = b.rules.iter_mut().find(|e| e.priority == priority) {
                    return Some(core::mem::replace(&mut e.value, entry.value));
                }
                let pos = b
                    .rules
                    .iter()
                    .position(|e| {
                        (e.priority, core::cmp::Reverse(e.seq))
                            < (priority, core::cmp::Reverse(seq))
                    })
                    .unwrap_or(b.rules.len());
                b.rules.insert(pos, entry);
            }
            None => {
                st.index_bucket(m.value(), true);
                st.buckets.insert_unique(
                    h,
                    Bucket {
                        m,
                        hash: h,
                        rules: vec![entry],
                    },
                    |b| b.hash,
                );
            }
        }
        st.n_rules += 1;
        self.n_rules += 1;
        if st.n_rules == 1 || priority > st.max_priority {
            st.max_priority = priority;
            self.resort();
        }
        None
    }

    /// Insert; replaces (and returns) the value with the same match and priority.
    /// A replaced rule keeps its position among equal-priority rules.
    pub fn insert(&mut self, m: Match, priority: u16, v: T) -> Option<T> {
        self.insert_inner(m, priority, v, None)
    }

    /// Remove the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<T> {
        self.take(m, priority).map(|(_, v)| v)
    }

    /// Remove, returning the rule's insertion sequence number too, so that
    /// [`Classifier::restore`] can put it back exactly where it was (used to
    /// roll back a failed flow-mod batch).
    pub(crate) fn take(&mut self, m: &Match, priority: u16) -> Option<(u64, T)> {
        let idx = self.subtable_index(m.mask())?;
        let st = &mut self.subtables[idx];
        let h = st.hash_of(m.value());
        let mut occ = st.buckets.find_entry(h, |b| b.m == *m).ok()?;
        let b = occ.get_mut();
        let pos = b.rules.iter().position(|e| e.priority == priority)?;
        let e = b.rules.remove(pos);
        if b.rules.is_empty() {
            occ.remove();
            st.index_bucket(m.value(), false);
        }
        st.n_rules -= 1;
        self.n_rules -= 1;
        if st.n_rules == 0 {
            // Vec::remove keeps the others sorted.
            self.subtables.remove(idx);
        } else if priority == st.max_priority {
            st.recompute_max();
            if st.max_priority != priority {
                self.resort();
            }
        }
        Some((e.seq, e.value))
    }

    /// Put back a rule taken by [`Classifier::take`] with its old sequence number.
    pub(crate) fn restore(&mut self, m: Match, priority: u16, seq: u64, v: T) -> Option<T> {
        self.insert_inner(m, priority, v, Some(seq))
    }

    /// The rule with exactly this match and priority.
    pub fn get(&self, m: &Match, priority: u16) -> Option<&T> {
        let st = &self.subtables[self.subtable_index(m.mask())?];
        let h = st.hash_of(m.value());
        st.buckets
            .find(h, |b| b.m == *m)?
            .rules
            .iter()
            .find(|e| e.priority == priority)
            .map(|e| &e.value)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.n_rules
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Number of subtables (distinct masks); for statistics and tests.
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// All rules (any order: subtable by subtable).
    pub fn iter(&self) -> impl Iterator<Item = (&Match, u16, &T)> {
        self.subtables.iter().flat_map(|st| {
            st.buckets
                .iter()
                .flat_map(|b| b.rules.iter().map(move |e| (&b.m, e.priority, &e.value)))
        })
    }

    /// Highest-priority rule matching `key` (earliest inserted among equal
    /// priorities). ORs into `wc` the stages of every subtable probed, so that
    /// any key equal to `key` under `wc` gets the same answer (the megaflow
    /// contract). Hot path: no allocation.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowMask) -> Option<(&Match, u16, &T)> {
        let mut best: Option<(&Bucket<T>, &Entry<T>)> = None;
        for st in &self.subtables {
            if let Some((_, e)) = best {
                // Early stop: sorted by max priority, nothing further can win.
                if st.max_priority < e.priority {
                    break;
                }
            }
            if let Some(b) = st.probe(key, wc) {
                let e = &b.rules[0];
                let better = match best {
                    None => true,
                    Some((_, be)) => {
                        e.priority > be.priority || (e.priority == be.priority && e.seq < be.seq)
                    }
                };
                if better {
                    best = Some((b, e));
                }
            }
        }
        best.map(|(b, e)| (&b.m, e.priority, &e.value))
    }
}

/// The reference classifier: a priority-sorted list scanned linearly. Same
/// API and same answers as [`Classifier`] (ties: earliest inserted wins);
/// its `wc` is the OR of every mask it looked at before the winner. Used as
/// the oracle of the property tests and as the baseline in benches.
#[derive(Debug, Clone)]
pub struct LinearClassifier<T> {
    rules: Vec<(Match, u16, u64, T)>,
    seq: u64,
}

impl<T> Default for LinearClassifier<T> {
    fn default() -> Self {
        LinearClassifier {
            rules: Vec::new(),
            seq: 0,
        }
    }
}

impl<T> LinearClassifier<T> {
    /// Empty classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert; replaces (and returns) the value with the same match and priority.
    pub fn insert(&mut self, m: Match, priority: u16, v: T) -> Option<T> {
        if let Some(e) = self.rules.iter_mut().find(|e| e.0 == m && e.1 == priority) {
            return Some(core::mem::replace(&mut e.3, v));
        }
        self.seq += 1;
        self.rules.push((m, priority, self.seq, v));
        self.rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        None
    }

    /// Remove the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<T> {
        let i = self
            .rules
            .iter()
            .position(|e| e.0 == *m && e.1 == priority)?;
        Some(self.rules.remove(i).3)
    }

    /// The rule with exactly this match and priority.
    pub fn get(&self, m: &Match, priority: u16) -> Option<&T> {
        self.rules
            .iter()
            .find(|e| e.0 == *m && e.1 == priority)
            .map(|e| &e.3)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// All rules, highest priority first.
    pub fn iter(&self) -> impl Iterator<Item = (&Match, u16, &T)> {
        self.rules.iter().map(|e| (&e.0, e.1, &e.3))
    }

    /// Highest-priority rule matching `key`; ORs every mask examined into `wc`.
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowMask) -> Option<(&Match, u16, &T)> {
        for e in &self.rules {
            wc.or_assign(e.0.mask());
            if e.0.matches(key) {
                return Some((&e.0, e.1, &e.3));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::field::Field;

    fn ip_dst(prefix: u32, len: u32) -> Match {
        let mut m = Match::CATCHALL;
        m.set_exact(Field::EthType, 0x0800);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        m.set_masked(Field::IpDst, u128::from(prefix), u128::from(mask));
        m
    }

    fn key(dst: u32) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.dl_type = 0x0800;
        k.nw_dst = dst;
        k
    }

    #[test]
    fn subtables_sorted_and_max_priority_tracked() {
        let mut c = Classifier::new();
        c.insert(ip_dst(0x0a00_0000, 8), 10, 'a');
        c.insert(ip_dst(0x0a01_0000, 16), 20, 'b');
        c.insert(ip_dst(0x0b00_0000, 8), 30, 'c');
        assert_eq!(c.n_subtables(), 2);
        assert_eq!(c.subtables[0].max_priority, 30);
        assert_eq!(c.subtables[1].max_priority, 20);
        assert_eq!(c.remove(&ip_dst(0x0b00_0000, 8), 30), Some('c'));
        assert_eq!(c.subtables[0].max_priority, 20);
        assert_eq!(c.subtables[1].max_priority, 10);
        c.remove(&ip_dst(0x0a00_0000, 8), 10);
        assert_eq!(c.n_subtables(), 1);
    }

    #[test]
    fn take_restore_keeps_tie_order() {
        let mut c = Classifier::new();
        let wide = Match::CATCHALL;
        c.insert(ip_dst(0x0a00_0000, 8), 5, 'x');
        c.insert(wide, 5, 'y');
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            c.lookup(&key(0x0a00_0001), &mut wc).map(|r| *r.2),
            Some('x')
        );
        let (seq, v) = c.take(&ip_dst(0x0a00_0000, 8), 5).unwrap();
        assert_eq!(
            c.lookup(&key(0x0a00_0001), &mut wc).map(|r| *r.2),
            Some('y')
        );
        c.restore(ip_dst(0x0a00_0000, 8), 5, seq, v);
        assert_eq!(
            c.lookup(&key(0x0a00_0001), &mut wc).map(|r| *r.2),
            Some('x')
        );
    }

    #[test]
    fn stage_groups_partition_the_key() {
        let g = stage_groups();
        let mut union = FlowKey::ZERO;
        for (i, a) in g.iter().enumerate() {
            for b in &g[i + 1..] {
                assert!(a.masked(b).is_zero(), "groups overlap");
            }
            union.or_assign(a);
        }
        assert_eq!(union, FlowKey::all_ones());
    }

    /// `in_port=1,ip,nw_dst=10.0.0.1,tp_dst=80`
    fn web_rule() -> Match {
        let mut m = Match::CATCHALL;
        m.set_exact(Field::InPort, 1);
        m.set_exact(Field::EthType, 0x0800);
        m.set_exact(Field::IpDst, 0x0a00_0001);
        m.set_exact(Field::NwProto, 6);
        m.set_exact(Field::TcpDst, 80);
        m
    }

    #[test]
    fn staged_lookup_unwildcards_only_the_stages_it_needed() {
        let mut c = Classifier::new();
        c.insert(web_rule(), 10, "web");
        let mut k = key(0x0a00_0001);
        k.in_port = 2;
        k.nw_proto = 6;
        k.tp_dst = 80;
        // Misses in the metadata stage: only in_port matters.
        let mut wc = FlowKey::ZERO;
        assert!(c.lookup(&k, &mut wc).is_none());
        let mut want = FlowKey::ZERO;
        want.in_port = u32::MAX;
        assert_eq!(wc, want);
        // Misses in L2: in_port and dl_type.
        k.in_port = 1;
        k.dl_type = 0x0806;
        let mut wc = FlowKey::ZERO;
        assert!(c.lookup(&k, &mut wc).is_none());
        want.dl_type = u16::MAX;
        assert_eq!(wc, want);
        // Misses in L3: no L4 bits.
        k.dl_type = 0x0800;
        k.nw_dst = 0x0a00_0002;
        let mut wc = FlowKey::ZERO;
        assert!(c.lookup(&k, &mut wc).is_none());
        assert_eq!((wc.nw_dst, wc.nw_proto, wc.tp_dst), (u32::MAX, u8::MAX, 0));
        // Misses in the last stage, or hits: the whole mask.
        k.nw_dst = 0x0a00_0001;
        k.tp_dst = 81;
        let mut wc = FlowKey::ZERO;
        assert!(c.lookup(&k, &mut wc).is_none());
        assert_eq!(wc, *web_rule().mask());
        k.tp_dst = 80;
        let mut wc = FlowKey::ZERO;
        assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("web"));
        assert_eq!(wc, *web_rule().mask());
    }

    #[test]
    fn stage_indexes_are_counted() {
        // Two rules share the in_port stage; removing one keeps the other reachable.
        let mut c = Classifier::new();
        let a = web_rule();
        let mut b = web_rule();
        b.set_exact(Field::TcpDst, 443);
        c.insert(a, 10, "a");
        c.insert(b, 10, "b");
        c.remove(&a, 10);
        let mut k = FlowKey::ZERO;
        k.in_port = 1;
        k.dl_type = 0x0800;
        k.nw_dst = 0x0a00_0001;
        k.nw_proto = 6;
        k.tp_dst = 443;
        let mut wc = FlowKey::ZERO;
        assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("b"));
        c.remove(&b, 10);
        assert_eq!(c.n_subtables(), 0);
        c.insert(b, 10, "b2");
        assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("b2"));
        assert_eq!(
            c.subtables[0]
                .indexes
                .iter()
                .map(HashTable::len)
                .sum::<usize>(),
            3
        );
    }
}
