//! The exact-match cache (EMC): full packet key → megaflow handle, in a
//! fixed-size, 2-way set-associative array indexed by a whole-key hash
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
//!   empty, and the handle); the two ways of a set sit side by side, so a
//!   probe reads both ways' tags from **one** cache line, and a miss (no tag
//!   equal) touches nothing else.
//! - **Keys**: the 24-word key alone, 192 bytes aligned to 64, exactly three
//!   cache lines, read only for a way whose tag matched.
//!
//! A hit therefore touches 1 + 3 lines. The former slot was 216 bytes padded
//! to 256 (four lines, plus the other way's first line when the key sat in the
//! second way, which used independent positions); with the 21-word key it had
//! been three. Measured: the split brought the EMC hit back to below its
//! 21-word cost (docs/perf.md). Ways in one set (rather than two positions
//! from two hash halves, OVS's layout) cost a little associativity but keep
//! the probe to one tag line; with 8192 slots and the 1/100 insertion the
//! difference in conflicts is not measurable next to the cache-line saving.
//!
//! Insertion is probabilistic like OVS's `emc-insert-inv-prob`: with many
//! flows, inserting every one would thrash the cache; inserting 1 in N means
//! only flows that keep sending get in. 0 disables insertion, 1 inserts
//! always. The random source is a per-cache xorshift, no syscall.
//!
//! Never allocates after construction, never locks.

use super::megaflow::MegaflowHandle;
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
/// 16 bytes, so four per cache line and both ways of a set in one line.
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

const _: () = assert!(core::mem::size_of::<Tag>() == 16);
const _: () = assert!(core::mem::size_of::<KeySlot>() == KEY_WORDS * 8);
const _: () = assert!(KEY_WORDS * 8 % 64 == 0);

/// The stored tag of `hash`: never 0, so 0 can mean "empty". Forcing bit 0
/// merges two hashes into one tag at worst, which only costs a key compare:
/// the key is always compared in full.
#[inline(always)]
fn tag_of(hash: u64) -> u64 {
    hash | 1
}

/// The exact-match cache of one polling thread.
pub struct Emc {
    /// `2 * sets` tags; set `s` is `tags[2s]`, `tags[2s + 1]`.
    tags: Box<[Tag]>,
    /// The keys, parallel to `tags`.
    keys: Box<[KeySlot]>,
    /// `sets - 1` (sets is a power of two).
    set_mask: usize,
    inv_prob: u32,
    rng: u64,
}

impl core::fmt::Debug for Emc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Emc")
            .field("capacity", &self.tags.len())
            .field("insert_inv_prob", &self.inv_prob)
            .finish()
    }
}

impl Emc {
    /// A cache of `entries` slots (rounded up to a power of two, at least 2;
    /// 0 disables the cache) inserting 1 in `insert_inv_prob` candidates.
    pub fn new(entries: usize, insert_inv_prob: u32) -> Emc {
        let n = if entries == 0 {
            0
        } else {
            entries.max(2).next_power_of_two()
        };
        Emc {
            tags: vec![EMPTY_TAG; n].into_boxed_slice(),
            keys: vec![KeySlot(FlowKey::ZERO); n].into_boxed_slice(),
            set_mask: (n / 2).saturating_sub(1),
            inv_prob: insert_inv_prob,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.tags.len()
    }

    /// Index of the first way of `hash`'s set (the second is the next slot).
    #[inline(always)]
    fn set(&self, hash: u64) -> usize {
        ((hash as usize) & self.set_mask) * 2
    }

    /// The handle cached for exactly `key`, whose hash is `hash` (any
    /// hash of the whole key, the same one given to [`Emc::insert`]; the
    /// datapath uses [`key_hash`]).
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<MegaflowHandle> {
        if self.tags.is_empty() {
            return None;
        }
        let s = self.set(hash);
        let t = tag_of(hash);
        // One bounds check for both ways (`s + 1 < len` since len is even).
        let (tags, keys) = (&self.tags[s..s + 2], &self.keys[s..s + 2]);
        for w in 0..2 {
            if tags[w].tag == t && same_key(&keys[w].0, key) {
                return Some(tags[w].handle);
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
        if self.tags.is_empty() || self.inv_prob == 0 {
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
        let (a, b) = (s, s + 1);
        let holds = |i: usize| self.tags[i].tag == t && same_key(&self.keys[i].0, key);
        let free = |i: usize| self.tags[i].tag == 0 || !live(self.tags[i].handle);
        let victim = if holds(a) {
            a
        } else if holds(b) {
            b
        } else if free(a) {
            a
        } else if free(b) {
            b
        } else if hash & (1 << 40) == 0 {
            a
        } else {
            b
        };
        self.tags[victim] = Tag { tag: t, handle };
        self.keys[victim] = KeySlot(*key);
    }

    /// Forget every entry (writes the tags only).
    pub fn flush(&mut self) {
        self.tags.fill(EMPTY_TAG);
    }

    /// Slots in use (valid, not necessarily live).
    pub fn occupied(&self) -> usize {
        self.tags.iter().filter(|e| e.tag != 0).count()
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
        // Two slots: every key maps to both ways.
        let mut e = Emc::new(2, 1);
        let (a, b, c) = (key(1), key(2), key(3));
        let (ha, hb, hc) = (
            MegaflowHandle::from_raw(1, 0),
            MegaflowHandle::from_raw(2, 0),
            MegaflowHandle::from_raw(3, 0),
        );
        e.insert(&a, key_hash(&a), ha, |_| true);
        e.insert(&b, key_hash(&b), hb, |_| true);
        assert_eq!(e.lookup(&a, key_hash(&a)), Some(ha));
        assert_eq!(e.lookup(&b, key_hash(&b)), Some(hb));
        // b's megaflow is gone: c takes its slot and a survives.
        e.insert(&c, key_hash(&c), hc, |h| h != hb);
        assert_eq!(e.lookup(&a, key_hash(&a)), Some(ha));
        assert_eq!(e.lookup(&c, key_hash(&c)), Some(hc));
        assert!(e.lookup(&b, key_hash(&b)).is_none());
        // Re-inserting a key updates its slot in place.
        e.insert(&a, key_hash(&a), hb, |_| true);
        assert_eq!(e.lookup(&a, key_hash(&a)), Some(hb));
        assert_eq!(e.lookup(&c, key_hash(&c)), Some(hc));
    }

    #[test]
    fn equal_hashes_are_told_apart_by_the_key() {
        // Two keys forced onto one hash share a set and a tag: both are
        // kept, one per way, and each lookup returns its own handle, never
        // the other key's.
        let mut e = Emc::new(64, 1);
        let (a, b, c) = (key(1), key(2), key(3));
        let (ha, hb) = (MegaflowHandle::from_raw(1, 0), MegaflowHandle::from_raw(2, 0));
        let h = 0x1234_5678_9abc_def0;
        e.insert(&a, h, ha, |_| true);
        e.insert(&b, h, hb, |_| true);
        assert_eq!(e.lookup(&a, h), Some(ha));
        assert_eq!(e.lookup(&b, h), Some(hb));
        assert!(e.lookup(&c, h).is_none());
        assert_eq!(e.occupied(), 2);
        // A third key on the same set evicts exactly one of them.
        e.insert(&c, h, MegaflowHandle::from_raw(3, 0), |_| true);
        assert_eq!(e.occupied(), 2);
        assert_eq!(e.lookup(&c, h), Some(MegaflowHandle::from_raw(3, 0)));
        assert!(e.lookup(&a, h).is_some() != e.lookup(&b, h).is_some());
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
        // Sequential addresses spread over the slots of both ways.
        let mut e = Emc::new(4096, 1);
        for i in 0..1024 {
            let k = key(0x0a00_0000 + i);
            e.insert(&k, key_hash(&k), MegaflowHandle::NONE, |_| true);
        }
        assert!(e.occupied() > 950, "{} of 1024 kept", e.occupied());
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
