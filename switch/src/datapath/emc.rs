//! The exact-match cache (EMC): full packet key → megaflow handle, in a
//! fixed-size, 4-way set-associative array indexed by a whole-key hash
//! ([`key_hash`] in the datapath), as OVS's `emc_cache` in `lib/dpif-netdev.c`.
//!
//! Data enters through [`Emc::insert`] (after a megaflow hit or install,
//! subject to the insertion probability) and leaves through
//! [`Emc::lookup`], which yields a [`MegaflowHandle`]; the caller re-validates
//! the handle against the megaflow cache (generation compare), so entries
//! pointing at evicted or flushed megaflows are simply ignored.
//!
//! Layout (docs/perf.md "FlowKey 21 -> 24 words", "EMC split"): two parallel
//! arrays instead of one array of `{hash, handle, valid, key}` slots.
//! - **Tags**: 16 bytes per slot (the hash with bit 0 forced on, 0 meaning
//!   empty, and the handle); the four ways of a set fill one aligned cache
//!   line, so a probe reads every way's tag from **one** line, and a miss (no
//!   tag equal) touches nothing else.
//! - **Keys**: the 24-word key alone, 192 bytes aligned to 64, exactly three
//!   cache lines, read only for a way whose tag matched.
//!
//! A hit therefore touches 1 + 3 lines. The former slot was 216 bytes padded
//! to 256 (four lines, and the other way's first line too when the key sat
//! in the second way); with the 21-word key it had been three.
//!
//! Four ways in one set, where the former layout (and OVS's) had two ways at
//! two independent positions taken from two halves of the hash: two ways in
//! one set lost ~1 % of 1000 flows to conflicts in an 8192-slot cache (the
//! `cycles` harness showed 98.8 % EMC hits instead of 100 %); four ways in
//! one tag line keep them all (a set overflows when 5 of ~1000 keys land in
//! one of 2048 sets) at the same one-line probe. Measured A/B against the
//! former layout: docs/perf.md "FlowKey 21 -> 24 words".
//!
//! Insertion is probabilistic like OVS's `emc-insert-inv-prob`: with many
//! flows, inserting every one would thrash the cache; inserting 1 in N means
//! only flows that keep sending get in. 0 disables insertion, 1 inserts
//! always. The random source is a per-cache xorshift, no syscall.
//!
//! Never allocates after construction, never locks.

use super::megaflow::{prefetch, MegaflowHandle};
use crate::flow::key::KEY_WORDS;
use crate::flow::FlowKey;

/// Seeds of [`key_hash`], one per word pair (hex digits of pi, so no pair
/// shares a seed and swapping two pairs changes the hash).
const SEEDS: [u64; KEY_WORDS / 2 + 1] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
    0xc0ac_29b7_c97c_50dd,
    0x3f84_d5b5_b547_0917,
    0x9216_d5d9_8979_fb1b,
    0xd131_0ba6_98df_b5ac,
    0x2ffd_72db_d01a_dfb7,
    0xb8e1_afed_6a26_7e96,
    0xba7c_9045_f12c_7f99,
];

/// 64x64 → 128-bit multiply, high and low halves folded (the mixing step
/// of foldhash/wyhash).
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The exact-match cache's hash of a whole key, computed once per packet.
///
/// Chaining all the key's words through one multiply each (as `masked_hash` does
/// over a mask's few words) would be a ~100-cycle dependency chain; this folds word *pairs*
/// through independent 128-bit multiplies that the CPU overlaps, then mixes
/// the sum once: about 5x cheaper on the EMC hit path, which hashes every
/// packet. Only the EMC uses it, and the EMC always compares the whole key,
/// so its quality only matters for spreading keys over slots.
#[inline(always)]
pub fn key_hash(key: &FlowKey) -> u64 {
    let w = key.words();
    let mut acc = 0u64;
    let mut i = 0;
    while i + 1 < KEY_WORDS {
        let s = SEEDS[i / 2];
        acc = acc.wrapping_add(fold_mul(w[i] ^ s, w[i + 1] ^ s.rotate_left(32) ^ SEEDS[10]));
        i += 2;
    }
    if KEY_WORDS % 2 == 1 {
        acc ^= w[KEY_WORDS - 1];
    }
    let h = fold_mul(acc ^ SEEDS[0], 0x9e37_79b9_7f4a_7c15 ^ (acc >> 32));
    h ^ (h >> 32)
}

/// Whole-key equality without early exit: XOR-OR over the words, which the
/// compiler turns into a few vector instructions instead of a field-by-field
/// compare with a branch per field.
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    a.words()
        .iter()
        .zip(b.words())
        .fold(0u64, |d, (x, y)| d | (x ^ y))
        == 0
}

/// The tag half of a slot: which hash it holds (`0` = empty) and the answer.
/// 16 bytes, so the four ways of a set are one cache line.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
struct Tag {
    /// `hash | 1` of the key in this slot, or 0 when the slot is empty.
    tag: u64,
    handle: MegaflowHandle,
}

const EMPTY_TAG: Tag = Tag {
    tag: 0,
    handle: MegaflowHandle::NONE,
};

/// The key half of a slot: exactly three cache lines (192 bytes, aligned).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct KeySlot(FlowKey);

/// The tags of one set: one aligned cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct TagSet([Tag; WAYS]);

const _: () = assert!(core::mem::size_of::<TagSet>() == 64);
const _: () = assert!(core::mem::size_of::<KeySlot>() == KEY_WORDS * 8);

/// Ways per set: four 16-byte tags are one 64-byte cache line.
const WAYS: usize = 4;

/// The stored tag of `hash`: never 0, so 0 can mean "empty". Forcing bit 0
/// merges two hashes into one tag at worst, which only costs a key compare:
/// the key is always compared in full.
#[inline(always)]
fn tag_of(hash: u64) -> u64 {
    hash | 1
}

/// The exact-match cache of one polling thread.
pub struct Emc {
    /// One line of tags per set.
    tags: Box<[TagSet]>,
    /// The keys: way `w` of set `s` is `keys[WAYS * s + w]`.
    keys: Box<[KeySlot]>,
    /// `sets - 1` (sets is a power of two).
    set_mask: usize,
    inv_prob: u32,
    rng: u64,
}

impl core::fmt::Debug for Emc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Emc")
            .field("capacity", &self.keys.len())
            .field("insert_inv_prob", &self.inv_prob)
            .finish()
    }
}

impl Emc {
    /// A cache of `entries` slots (rounded up to a power of two, at least 4;
    /// 0 disables the cache) inserting 1 in `insert_inv_prob` candidates.
    pub fn new(entries: usize, insert_inv_prob: u32) -> Emc {
        let n = if entries == 0 {
            0
        } else {
            entries.max(WAYS).next_power_of_two()
        };
        Emc {
            tags: vec![TagSet([EMPTY_TAG; WAYS]); n / WAYS].into_boxed_slice(),
            keys: vec![KeySlot(FlowKey::ZERO); n].into_boxed_slice(),
            set_mask: (n / WAYS).saturating_sub(1),
            inv_prob: insert_inv_prob,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// Index of `hash`'s set.
    #[inline(always)]
    fn set(&self, hash: u64) -> usize {
        (hash as usize) & self.set_mask
    }

    /// Start fetching the tag line of `hash`'s set, so that a later
    /// [`Emc::lookup`] of that hash finds it in L1 and its only possible cache
    /// miss is the key's (three adjacent lines). The datapath calls it right
    /// after hashing each packet of a batch, a whole batch before the
    /// lookups: with the tags and keys in separate arrays, a cold hit would
    /// otherwise wait for two misses in a row (tag, then key) where a slot
    /// holding both waited for one.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        if let Some(set) = self.tags.get(self.set(hash)) {
            prefetch(set);
        }
    }

    /// The handle cached for exactly `key`, whose hash is `hash` (any
    /// hash of the whole key, the same one given to [`Emc::insert`]; the
    /// datapath uses [`key_hash`]).
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<MegaflowHandle> {
        if self.keys.is_empty() {
            return None;
        }
        let s = self.set(hash);
        let t = tag_of(hash);
        let tags = &self.tags[s].0;
        // One bounds check for the set's keys.
        let keys = &self.keys[s * WAYS..(s + 1) * WAYS];
        for (tag, k) in tags.iter().zip(keys) {
            if tag.tag == t && same_key(&k.0, key) {
                return Some(tag.handle);
            }
        }
        None
    }

    /// Maybe cache `key` → `handle`, per the insertion probability.
    /// `live` says whether a slot's current handle is still live (stale slots
    /// are replaced first).
    #[inline]
    pub fn insert(
        &mut self,
        key: &FlowKey,
        hash: u64,
        handle: MegaflowHandle,
        live: impl Fn(MegaflowHandle) -> bool,
    ) {
        if self.keys.is_empty() || self.inv_prob == 0 {
            return;
        }
        if self.inv_prob > 1 {
            // xorshift64 (Marsaglia 2003).
            let mut x = self.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng = x;
            if !x.is_multiple_of(u64::from(self.inv_prob)) {
                return;
            }
        }
        let s = self.set(hash);
        let t = tag_of(hash);
        let tags = &self.tags[s].0;
        let holds = |w: usize| tags[w].tag == t && same_key(&self.keys[s * WAYS + w].0, key);
        let free = |w: usize| tags[w].tag == 0 || !live(tags[w].handle);
        // The way already holding this key, else an empty or stale way, else
        // a pseudo-random one (hash bits the set index does not use).
        let w = (0..WAYS)
            .find(|&w| holds(w))
            .or_else(|| (0..WAYS).find(|&w| free(w)))
            .unwrap_or((hash >> 40) as usize & (WAYS - 1));
        self.tags[s].0[w] = Tag { tag: t, handle };
        self.keys[s * WAYS + w] = KeySlot(*key);
    }

    /// Forget every entry (writes the tags only).
    pub fn flush(&mut self) {
        self.tags.fill(TagSet([EMPTY_TAG; WAYS]));
    }

    /// Slots in use (valid, not necessarily live).
    pub fn occupied(&self) -> usize {
        self.tags
            .iter()
            .flat_map(|set| &set.0)
            .filter(|e| e.tag != 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.nw_dst = i;
        k
    }

    #[test]
    fn insert_lookup_and_flush() {
        let mut e = Emc::new(8, 1);
        let h = MegaflowHandle::NONE;
        let k = key(1);
        let hash = key_hash(&k);
        assert!(e.lookup(&k, hash).is_none());
        e.insert(&k, hash, h, |_| true);
        assert_eq!(e.lookup(&k, hash), Some(h));
        assert!(e.lookup(&key(2), key_hash(&key(2))).is_none());
        e.flush();
        assert!(e.lookup(&k, hash).is_none());
    }

    #[test]
    fn stale_slots_are_replaced_first() {
        // Four slots, one set: every key maps to all four ways.
        let mut e = Emc::new(4, 1);
        assert_eq!(e.capacity(), 4);
        let keys: Vec<FlowKey> = (1..=5).map(key).collect();
        let hs: Vec<MegaflowHandle> = (1..=5).map(|i| MegaflowHandle::from_raw(i, 0)).collect();
        for i in 0..4 {
            e.insert(&keys[i], key_hash(&keys[i]), hs[i], |_| true);
        }
        for i in 0..4 {
            assert_eq!(e.lookup(&keys[i], key_hash(&keys[i])), Some(hs[i]));
        }
        // Key 2's megaflow is gone: key 5 takes its slot, the others survive.
        e.insert(&keys[4], key_hash(&keys[4]), hs[4], |h| h != hs[1]);
        assert!(e.lookup(&keys[1], key_hash(&keys[1])).is_none());
        for i in [0, 2, 3, 4] {
            assert_eq!(e.lookup(&keys[i], key_hash(&keys[i])), Some(hs[i]));
        }
        // Re-inserting a key updates its slot in place.
        e.insert(&keys[0], key_hash(&keys[0]), hs[1], |_| true);
        assert_eq!(e.lookup(&keys[0], key_hash(&keys[0])), Some(hs[1]));
        assert_eq!(e.occupied(), 4);
        // A full set of live entries: the newcomer evicts exactly one.
        e.insert(&keys[1], key_hash(&keys[1]), hs[1], |_| true);
        assert_eq!(e.lookup(&keys[1], key_hash(&keys[1])), Some(hs[1]));
        let kept = keys
            .iter()
            .filter(|k| e.lookup(k, key_hash(k)).is_some())
            .count();
        assert_eq!(kept, 4);
    }

    #[test]
    fn equal_hashes_are_told_apart_by_the_key() {
        // Keys forced onto one hash share a set and a tag: all are kept, one
        // per way, and each lookup returns its own handle, never another
        // key's.
        let mut e = Emc::new(64, 1);
        let h = 0x1234_5678_9abc_def0;
        let keys: Vec<FlowKey> = (1..=5).map(key).collect();
        for (i, k) in keys.iter().enumerate().take(4) {
            e.insert(k, h, MegaflowHandle::from_raw(i as u32, 0), |_| true);
        }
        for (i, k) in keys.iter().enumerate().take(4) {
            assert_eq!(e.lookup(k, h), Some(MegaflowHandle::from_raw(i as u32, 0)));
        }
        assert!(e.lookup(&keys[4], h).is_none());
        assert_eq!(e.occupied(), 4);
        // A fifth key on the same set evicts exactly one of them.
        e.insert(&keys[4], h, MegaflowHandle::from_raw(4, 0), |_| true);
        assert_eq!(e.occupied(), 4);
        assert_eq!(e.lookup(&keys[4], h), Some(MegaflowHandle::from_raw(4, 0)));
        let kept = keys.iter().filter(|k| e.lookup(k, h).is_some()).count();
        assert_eq!(kept, 4);
    }

    #[test]
    fn key_hash_sees_every_word_and_spreads_keys() {
        // Any single-bit change anywhere in the key changes the hash.
        let base = key(0x0a00_0001);
        let h0 = key_hash(&base);
        for word in 0..KEY_WORDS {
            for bit in [0, 17, 63] {
                let mut k = base;
                k.words_mut()[word] ^= 1 << bit;
                assert_ne!(key_hash(&k), h0, "word {word} bit {bit}");
            }
        }
        // Sequential addresses spread over the sets and their ways.
        let mut e = Emc::new(4096, 1);
        for i in 0..1024 {
            let k = key(0x0a00_0000 + i);
            e.insert(&k, key_hash(&k), MegaflowHandle::NONE, |_| true);
        }
        assert!(e.occupied() > 1010, "{} of 1024 kept", e.occupied());
    }

    #[test]
    fn insertion_probability_is_about_one_in_n() {
        let mut e = Emc::new(1 << 16, 100);
        for i in 0..20_000 {
            let k = key(i);
            e.insert(&k, key_hash(&k), MegaflowHandle::NONE, |_| true);
        }
        let n = e.occupied();
        assert!((100..=300).contains(&n), "{n} inserted of 20000 at 1/100");
        let mut never = Emc::new(64, 0);
        never.insert(&key(1), key_hash(&key(1)), MegaflowHandle::NONE, |_| true);
        assert_eq!(never.occupied(), 0);
        let mut disabled = Emc::new(0, 1);
        disabled.insert(&key(1), key_hash(&key(1)), MegaflowHandle::NONE, |_| true);
        assert!(disabled.lookup(&key(1), key_hash(&key(1))).is_none());
    }
}
