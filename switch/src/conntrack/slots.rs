//! Stable per-connection slots: the small part of a connection that the
//! datapath's established-connection fast path reads without a lock.
//!
//! A connection's state lives in its shard's hash table and moves when the
//! table grows; its *slot* does not. A slot is a 16-byte [`Cell`] in a
//! chunk that, once allocated, stays at the same address until the tracker
//! is dropped: chunk `k` holds `BASE << k` cells, allocated on the first
//! commit that needs it (so slot numbers reach `u32::MAX - 1` with
//! [`N_CHUNKS`] chunks and a small tracker stays small). Freed slots go on
//! a lock-free free list (a Treiber stack whose head carries a tag against
//! ABA) and are reused before new ones are taken.
//!
//! A cell's `life` word packs the connection's **generation** (high 32
//! bits) and its **fast expiry** in whole seconds of the tracker's clock
//! (low 32 bits). The generation changes whenever the slot's connection is
//! removed (so when the slot is reused) and whenever anything a `ct` verdict
//! depends on changes (the tracker bumps it: see `Conntrack::update`).
//! Everything but `life`, `kind` and `next` is written only under the
//! owning shard's lock, as before; these three are atomics.
//!
//! Data enters from the tracker (under a shard lock: [`Slots::alloc`],
//! [`Slots::free`], [`Cell::publish`]) and leaves to the datapath's fast path
//! ([`Slots::get`], [`Cell::life`]). Never: lock, allocate outside
//! [`Slots::alloc`] (a new chunk), free a chunk while the tracker lives.

use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::OnceLock;

/// Cells in chunk 0 (chunk `k` holds `BASE << k`).
const BASE_BITS: u32 = 10;
const BASE: u64 = 1 << BASE_BITS;

/// No slot: [`Slots::alloc`] never hands this number out, and
/// [`Slots::free`] ignores it.
pub const NONE: u32 = u32::MAX;

/// Chunks: enough for every slot number below `u32::MAX`.
pub const N_CHUNKS: usize = 23;

/// One connection slot (see the module documentation).
#[derive(Debug, Default)]
pub struct Cell {
    /// Generation (high 32 bits) and fast expiry in seconds (low 32 bits).
    life: AtomicU64,
    /// The connection's timeout class (`TimeoutKind as u32`), written under
    /// the shard lock before the `life` word that publishes it.
    kind: AtomicU32,
    /// Free-list link: the next free slot plus one (0: none).
    next: AtomicU32,
}

/// The generation of a `life` word.
#[inline(always)]
pub fn gen_of(life: u64) -> u32 {
    (life >> 32) as u32
}

/// The fast expiry (seconds) of a `life` word.
#[inline(always)]
pub fn exp_s_of(life: u64) -> u32 {
    life as u32
}

/// A `life` word.
#[inline(always)]
pub fn life_word(gen: u32, exp_s: u32) -> u64 {
    u64::from(gen) << 32 | u64::from(exp_s)
}

impl Cell {
    /// The `life` word (Acquire: the `kind` written before it is visible).
    #[inline(always)]
    pub fn life(&self) -> u64 {
        self.life.load(Acquire)
    }

    /// The timeout class published with the current generation.
    #[inline(always)]
    pub fn kind(&self) -> u32 {
        self.kind.load(Relaxed)
    }

    /// Under the shard lock: publish generation `gen` (the connection
    /// keeps its own copy, so this never reads the cell: on the slow path a
    /// 1M-connection table would otherwise pay one more cache miss per
    /// packet), its timeout class and fast expiry.
    #[inline]
    pub fn publish(&self, gen: u32, kind: u32, exp_s: u32) {
        self.kind.store(kind, Relaxed);
        // A plain store: a fast-path refresh racing with it either lands
        // before (and is overwritten by this exact expiry) or fails its
        // compare-exchange (the word changed) and takes the slow path.
        self.life.store(life_word(gen, exp_s), Release);
    }

    /// The fast path's refresh: move the expiry of generation `gen` from
    /// `old` to `exp_s`. False when the word changed meanwhile (another
    /// refresh, a verdict change, a removal): the caller takes the slow path.
    #[inline]
    pub fn refresh(&self, old: u64, exp_s: u32) -> bool {
        self.life
            .compare_exchange(old, life_word(gen_of(old), exp_s), AcqRel, Relaxed)
            .is_ok()
    }
}

/// Slot `i`'s chunk and offset in it.
#[inline(always)]
fn locate(i: u32) -> (usize, usize) {
    let x = u64::from(i) + BASE;
    let k = (63 - x.leading_zeros()) - BASE_BITS;
    (k as usize, (x - (BASE << k)) as usize)
}

/// The tracker's slots (see the module documentation).
#[derive(Debug, Default)]
pub struct Slots {
    chunks: [OnceLock<Box<[Cell]>>; N_CHUNKS],
    /// Slots ever handed out (the next fresh one).
    fresh: AtomicU32,
    /// Free-list head: tag (high 32 bits) and slot plus one (0: empty).
    free: AtomicU64,
}

impl Slots {
    /// The cell of slot `i`, if it was ever allocated.
    #[inline(always)]
    pub fn get(&self, i: u32) -> Option<&Cell> {
        let (k, off) = locate(i);
        self.chunks.get(k)?.get()?.get(off)
    }

    /// A slot for a new connection: a freed one, else a fresh one (which
    /// may allocate its chunk). None only when every slot number is used.
    pub fn alloc(&self) -> Option<u32> {
        let mut head = self.free.load(Acquire);
        while head as u32 != 0 {
            let i = head as u32 - 1;
            let next = self.get(i).map_or(0, |c| c.next.load(Relaxed));
            let new = (head & !0xffff_ffff).wrapping_add(1 << 32) | u64::from(next);
            match self.free.compare_exchange_weak(head, new, AcqRel, Acquire) {
                Ok(_) => return Some(i),
                Err(h) => head = h,
            }
        }
        let i = self
            .fresh
            .fetch_update(AcqRel, Relaxed, |n| (n < u32::MAX - 1).then_some(n + 1))
            .ok()?;
        let (k, _) = locate(i);
        self.chunks[k].get_or_init(|| (0..BASE << k).map(|_| Cell::default()).collect());
        Some(i)
    }

    /// Release slot `i` (its connection was removed under its shard's
    /// lock): bump its generation, so every token naming it is dead, then
    /// put it on the free list.
    pub fn free(&self, i: u32) {
        if i == NONE {
            return;
        }
        let Some(c) = self.get(i) else { return };
        c.life.fetch_add(1 << 32, AcqRel);
        let mut head = self.free.load(Acquire);
        loop {
            c.next.store(head as u32, Relaxed);
            let new = (head & !0xffff_ffff).wrapping_add(1 << 32) | u64::from(i + 1);
            match self.free.compare_exchange_weak(head, new, AcqRel, Acquire) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Slots ever allocated (the high-water mark of connections).
    pub fn allocated(&self) -> u32 {
        self.fresh.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_slot_numbers_without_overlap() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        let (k, off) = locate(u32::MAX - 1);
        assert!(k < N_CHUNKS && (off as u64) < BASE << k);
    }

    #[test]
    fn freed_slots_are_reused_with_a_new_generation() {
        let s = Slots::default();
        let a = s.alloc().unwrap();
        let b = s.alloc().unwrap();
        assert_ne!(a, b);
        let g = gen_of(s.get(a).unwrap().life());
        s.get(a).unwrap().publish(g, 3, 10);
        s.free(a);
        let c = s.alloc().unwrap();
        assert_eq!(c, a, "a freed slot is reused first");
        assert_ne!(gen_of(s.get(c).unwrap().life()), g);
        assert_eq!(s.allocated(), 2);
        // Across a chunk boundary.
        for _ in 0..2000 {
            s.alloc().unwrap();
        }
        assert!(s.get(2001).is_some());
        assert!(s.get(1 << 20).is_none());
    }

    #[test]
    fn a_refresh_loses_to_a_generation_change() {
        let s = Slots::default();
        let i = s.alloc().unwrap();
        let c = s.get(i).unwrap();
        c.publish(0, 0, 5);
        let w = c.life();
        assert!(c.refresh(w, 9));
        assert_eq!(exp_s_of(c.life()), 9);
        let w = c.life();
        c.publish(1, 0, 9);
        assert!(!c.refresh(w, 20), "stale word");
        s.free(i);
        assert_ne!(gen_of(c.life()), gen_of(w));
    }
}
