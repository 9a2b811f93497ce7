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
//! Insertion is probabilistic like OVS's `emc-insert-inv-prob`: with many
//! flows, inserting every one would thrash the cache; inserting 1 in N means
//! only flows that keep sending get in. 0 disables insertion, 1 inserts
//! always. The random source is a per-cache xorshift, no syscall.
//!
//! An entry can also carry a [`RecircHint`]: the megaflow that answered
//! the *next* pass of a packet with this exact key after its `ct(table=T)`
//! recirculated it, and the conntrack verdict that pass was looked up with.
//! The next pass's key is a pure function of this entry's key, the entry's
//! megaflow (whose `ct` action fixes zone, table and the frozen metadata)
//! and the verdict, so while the hint's megaflow is live and the verdict is
//! the same, the datapath can skip hashing and looking up the recirculated
//! key (`datapath::conntrack`). A re-insert clears the hint; [`EmcRef`]
//! (slot and insertion tag) makes sure a hint is only ever attached to the
//! entry whose megaflow ran.
//!
//! Never allocates after construction, never locks.

use super::megaflow::MegaflowHandle;
use crate::conntrack::CtToken;
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

/// What a recirculated pass was answered by (see the module documentation):
/// the megaflow, and the conntrack verdict (`ct_state`, `ct_mark`,
/// `ct_label`) the recirculated key was built with; and the connection
/// token the tracker issued with that verdict ([`CtToken::NONE`]: none),
/// which lets the next packet skip the tracker's lookup while the token is
/// current (`datapath::conntrack`). Token and verdict are always written
/// together, so a token never vouches for another verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecircHint {
    /// The recirculated pass's megaflow (re-validated before use).
    pub handle: MegaflowHandle,
    /// The verdict's `ct_state`.
    pub state: u32,
    /// The verdict's `ct_mark`.
    pub mark: u32,
    /// The verdict's `ct_label`, as two words (no 16-byte alignment, so
    /// the hint fits in the slot's padding).
    pub label: [u64; 2],
    /// The connection token issued with this verdict.
    pub token: CtToken,
}

impl RecircHint {
    /// No hint.
    pub const NONE: RecircHint = RecircHint {
        handle: MegaflowHandle::NONE,
        state: 0,
        mark: 0,
        label: [0; 2],
        token: CtToken::NONE,
    };

    /// The verdict fields in hint form (no token).
    #[inline(always)]
    pub fn of(handle: MegaflowHandle, state: u32, mark: u32, label: u128) -> RecircHint {
        RecircHint {
            handle,
            state,
            mark,
            label: [label as u64, (label >> 64) as u64],
            token: CtToken::NONE,
        }
    }

    /// The verdict's `ct_label`.
    #[inline(always)]
    pub fn label(&self) -> u128 {
        u128::from(self.label[1]) << 64 | u128::from(self.label[0])
    }

    /// Whether this hint was recorded for this verdict.
    #[inline(always)]
    pub fn same_verdict(&self, state: u32, mark: u32, label: u128) -> bool {
        ((self.state ^ state) | (self.mark ^ mark)) == 0
            && ((self.label[0] ^ label as u64) | (self.label[1] ^ (label >> 64) as u64)) == 0
    }
}

/// Where one lookup or insert found or put a key: a slot and the tag of
/// the insertion that filled it, so that a later [`Emc::hint`] or
/// [`Emc::set_hint`] acts only if the slot still holds that insertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmcRef {
    slot: u32,
    tag: u32,
}

impl EmcRef {
    /// No slot.
    pub const NONE: EmcRef = EmcRef {
        slot: u32::MAX,
        tag: 0,
    };
}

/// One slot, cache-line aligned, with everything a probe checks before
/// comparing keys (`valid`, `hash`, and the answer) in its first line, so a
/// probe of the wrong way touches one line. With the 24-word key a slot is
/// 216 bytes padded to 256 (four lines; three with the 21-word key): the EMC
/// hit got 1.24-1.36x slower (docs/perf.md "FlowKey 21 -> 24 words"). A
/// split into a tag array (4 ways per 64-byte line) and a 3-line key array
/// was built and measured in PVP (h30): no gain in the 64-byte cases, the
/// routing cases slower, so it was reverted (docs/perf.md, same section).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct EmcEntry {
    hash: u64,
    handle: MegaflowHandle,
    /// Which insertion filled the slot ([`EmcRef`]).
    tag: u32,
    valid: bool,
    key: FlowKey,
    /// The recirculation hint and connection token, in the padding after
    /// the key (bytes 216-256): the probe and key compare read exactly the
    /// bytes they read without it, and the hint shares the key's last
    /// line, which a hit has just read.
    hint: RecircHint,
}

const _: () = assert!(core::mem::size_of::<EmcEntry>() == 256);

const EMPTY: EmcEntry = EmcEntry {
    hash: 0,
    handle: MegaflowHandle::NONE,
    tag: 0,
    valid: false,
    hint: RecircHint::NONE,
    key: FlowKey::ZERO,
};

/// The exact-match cache of one polling thread.
pub struct Emc {
    entries: Box<[EmcEntry]>,
    mask: usize,
    inv_prob: u32,
    rng: u64,
    /// Insertions so far (wrapping): the next entry's tag.
    inserts: u32,
}

impl core::fmt::Debug for Emc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Emc")
            .field("capacity", &self.entries.len())
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
            entries: vec![EMPTY; n].into_boxed_slice(),
            mask: n.saturating_sub(1),
            inv_prob: insert_inv_prob,
            rng: 0x2545_f491_4f6c_dd1d,
            inserts: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    #[inline(always)]
    fn ways(&self, hash: u64) -> [usize; 2] {
        let a = (hash as usize) & self.mask;
        let b = ((hash >> 32) as usize ^ 1) & self.mask;
        [a, if b == a { a ^ 1 } else { b }]
    }

    /// The handle cached for exactly `key`, whose hash is `hash` (any
    /// hash of the whole key, the same one given to [`Emc::insert`]; the
    /// datapath uses [`key_hash`]).
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<MegaflowHandle> {
        self.lookup_at(key, hash).map(|(h, _)| h)
    }

    /// [`Emc::lookup`], also saying where the entry is (for its hint).
    #[inline(always)]
    pub fn lookup_at(&self, key: &FlowKey, hash: u64) -> Option<(MegaflowHandle, EmcRef)> {
        if self.entries.is_empty() {
            return None;
        }
        for w in self.ways(hash) {
            let e = &self.entries[w];
            if e.valid && e.hash == hash && same_key(&e.key, key) {
                return Some((
                    e.handle,
                    EmcRef {
                        slot: w as u32,
                        tag: e.tag,
                    },
                ));
            }
        }
        None
    }

    /// The entry at `at`, if it still holds the insertion `at` names.
    #[inline(always)]
    fn at(&self, at: EmcRef) -> Option<&EmcEntry> {
        self.entries
            .get(at.slot as usize)
            .filter(|e| e.valid && e.tag == at.tag)
    }

    /// The recirculation hint of the entry at `at` (None when the slot
    /// was refilled since, or holds no hint). The caller re-validates the
    /// hint's handle and compares its verdict.
    #[inline(always)]
    pub fn hint(&self, at: EmcRef) -> Option<RecircHint> {
        self.at(at)
            .map(|e| e.hint)
            .filter(|h| h.handle != MegaflowHandle::NONE)
    }

    /// Whether the entry at `at` still holds that insertion and a hint: the
    /// cheap test before [`Emc::hint`] (no copy of the hint).
    #[inline(always)]
    pub fn has_hint(&self, at: EmcRef) -> bool {
        self.at(at)
            .is_some_and(|e| e.hint.handle != MegaflowHandle::NONE)
    }

    /// Attach `hint` to the entry at `at`, if the slot still holds that
    /// insertion (otherwise the entry it was meant for is gone: nothing).
    #[inline]
    pub fn set_hint(&mut self, at: EmcRef, hint: RecircHint) {
        if self.at(at).is_some() {
            if let Some(e) = self.entries.get_mut(at.slot as usize) {
                e.hint = hint;
            }
        }
    }

    /// Maybe cache `key` → `handle`, per the insertion probability.
    /// `live` says whether a slot's current handle is still live (stale slots
    /// are replaced first). Returns where the entry went (None: not
    /// inserted); the entry starts without a hint.
    #[inline]
    pub fn insert(
        &mut self,
        key: &FlowKey,
        hash: u64,
        handle: MegaflowHandle,
        live: impl Fn(MegaflowHandle) -> bool,
    ) -> Option<EmcRef> {
        if self.entries.is_empty() || self.inv_prob == 0 {
            return None;
        }
        if self.inv_prob > 1 {
            // xorshift64 (Marsaglia 2003).
            let mut x = self.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng = x;
            if !x.is_multiple_of(u64::from(self.inv_prob)) {
                return None;
            }
        }
        let [a, b] = self.ways(hash);
        let victim = if self.entries[a].valid
            && self.entries[a].hash == hash
            && same_key(&self.entries[a].key, key)
        {
            a
        } else if self.entries[b].valid
            && self.entries[b].hash == hash
            && same_key(&self.entries[b].key, key)
        {
            b
        } else if !self.entries[a].valid || !live(self.entries[a].handle) {
            a
        } else if !self.entries[b].valid || !live(self.entries[b].handle) {
            b
        } else if hash & (1 << 40) == 0 {
            a
        } else {
            b
        };
        self.inserts = self.inserts.wrapping_add(1);
        let tag = self.inserts;
        self.entries[victim] = EmcEntry {
            hash,
            key: *key,
            handle,
            tag,
            valid: true,
            hint: RecircHint::NONE,
        };
        Some(EmcRef {
            slot: victim as u32,
            tag,
        })
    }

    /// Insert 1 in `n` candidates from now on (0: insert none; the entries
    /// already cached stay until replaced or flushed).
    pub fn set_insert_inv_prob(&mut self, n: u32) {
        self.inv_prob = n;
    }

    /// Forget every entry.
    pub fn flush(&mut self) {
        self.entries.iter_mut().for_each(|e| e.valid = false);
    }

    /// Slots in use (valid, not necessarily live).
    pub fn occupied(&self) -> usize {
        self.entries.iter().filter(|e| e.valid).count()
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

    #[test]
    fn hints_stay_with_the_insertion_they_were_set_on() {
        let mut e = Emc::new(2, 1);
        let a = key(1);
        let (h1, h2) = (
            MegaflowHandle::from_raw(1, 0),
            MegaflowHandle::from_raw(2, 0),
        );
        let at = e.insert(&a, key_hash(&a), h1, |_| true).expect("inserted");
        assert_eq!(e.lookup_at(&a, key_hash(&a)), Some((h1, at)));
        assert_eq!(e.hint(at), None, "a new entry has no hint");
        let hint = RecircHint::of(h2, 0x22, 7, 1 << 100 | 5);
        e.set_hint(at, hint);
        assert_eq!(e.hint(at), Some(hint));
        assert!(hint.same_verdict(0x22, 7, 1 << 100 | 5));
        assert!(!hint.same_verdict(0x21, 7, 1 << 100 | 5));
        assert!(!hint.same_verdict(0x22, 6, 1 << 100 | 5));
        assert!(!hint.same_verdict(0x22, 7, 5));
        assert!(!hint.same_verdict(0x22, 7, 1 << 100 | 4));
        // Re-inserting the same key (e.g. its megaflow was replaced) starts
        // over without the hint, and the old reference is dead.
        let at2 = e.insert(&a, key_hash(&a), h2, |_| true).expect("inserted");
        assert_ne!(at, at2);
        assert_eq!(e.hint(at2), None);
        assert_eq!(e.hint(at), None);
        e.set_hint(at, hint);
        assert_eq!(e.hint(at2), None, "a stale reference writes nothing");
        // Another key taking the slot: same. (Two slots, every slot's
        // megaflow dead: new keys replace a's entry within a few inserts.)
        e.set_hint(at2, hint);
        assert_eq!(e.hint(at2), Some(hint));
        let mut i = 10;
        while e.lookup(&a, key_hash(&a)).is_some() && i < 200 {
            let k = key(i);
            let _ = e.insert(&k, key_hash(&k), h1, |_| false);
            i += 1;
        }
        assert_eq!(e.lookup(&a, key_hash(&a)), None, "a was replaced");
        assert_eq!(e.hint(at2), None);
        // A flush forgets entries and hints.
        let at3 = e.insert(&a, key_hash(&a), h1, |_| true).expect("inserted");
        e.set_hint(at3, hint);
        e.flush();
        assert_eq!(e.hint(at3), None);
        assert_eq!(e.hint(EmcRef::NONE), None);
    }
}
