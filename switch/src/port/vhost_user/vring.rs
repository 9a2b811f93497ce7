//! The split-virtqueue fast path (virtio 1.1 §2.6): our own loop over the
//! guest's mapped rings, run by the polling thread that owns the port.
//!
//! Data enters through the guest's transmit queues ([`Vring::pop_frames`]:
//! read the available ring, walk each descriptor chain, direct or indirect,
//! skip the virtio-net header, copy the frame into a pool [`Packet`], return
//! the chain on the used ring) and leaves through its receive queues
//! ([`Vring::push_frames`]: take available chains, write a zeroed
//! virtio-net header and the frame, with `VIRTIO_NET_F_MRG_RXBUF` spreading a
//! frame over several chains and recording `num_buffers`, virtio 1.1 §5.1.6.4).
//! Each batch ends with one release-store of `used->idx` and, only if the
//! driver has not set `VRING_AVAIL_F_NO_INTERRUPT` (§2.6.7), one eventfd
//! write.
//!
//! Every descriptor is copied out of guest memory once and checked once:
//! the index against the table size, `[addr, addr + len)` against the memory
//! table, the direction flag, the chain length against the table size (a
//! loop), an indirect table's length and nesting (§2.6.5.3). A bad chain is a
//! counted [`VqError`] and is still returned to the used ring; an available
//! index that runs ahead by more than the queue size, or a head index out of
//! range, cannot be returned and marks the queue broken (the port resets).
//! Nothing here allocates, locks, or makes a syscall other than the notify.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::Arc;

use super::mem::GuestMemory;
use crate::packet::buf::MAX_FRAME;
use crate::packet::{Packet, PacketPool};
use crate::port::DropReason;

/// `VRING_DESC_F_NEXT`: the chain continues at `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE`: device-writable buffer.
pub const VRING_DESC_F_WRITE: u16 = 2;
/// `VRING_DESC_F_INDIRECT`: the buffer is a table of descriptors.
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// `VRING_USED_F_NO_NOTIFY`: the device polls, the driver need not kick.
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver polls, the device need not notify.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Largest queue size (virtio 1.1 §2.6: at most 32768, a power of 2).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// A descriptor as laid out in guest memory (virtio 1.1 §2.6.5).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// What a descriptor chain or ring did wrong. Each has a counter named by
/// [`VqError::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VqError {
    /// A descriptor's `[addr, addr + len)` is not inside guest memory.
    BadAddr,
    /// A head or `next` index is not below the table size.
    BadIndex,
    /// A chain longer than its table: a loop.
    Loop,
    /// An indirect descriptor with a bad length, with NEXT, or nested.
    BadIndirect,
    /// A device-writable buffer in a transmit chain or a read-only one in a receive chain.
    BadFlags,
    /// A chain shorter than the virtio-net header, or without a frame.
    Short,
    /// A frame larger than a packet buffer (or than the guest's receive chain).
    Oversize,
    /// The available index ran ahead of the used index by more than the queue size.
    BadAvailIdx,
}

impl VqError {
    /// Number of kinds.
    pub const COUNT: usize = 8;
    /// Every kind, in counter order.
    pub const ALL: [VqError; VqError::COUNT] = [
        VqError::BadAddr,
        VqError::BadIndex,
        VqError::Loop,
        VqError::BadIndirect,
        VqError::BadFlags,
        VqError::Short,
        VqError::Oversize,
        VqError::BadAvailIdx,
    ];

    /// The counter name operators see in dump-ports.
    pub fn name(self) -> &'static str {
        match self {
            VqError::BadAddr => "vhost_bad_addr",
            VqError::BadIndex => "vhost_bad_index",
            VqError::Loop => "vhost_desc_loop",
            VqError::BadIndirect => "vhost_bad_indirect",
            VqError::BadFlags => "vhost_bad_flags",
            VqError::Short => "vhost_short_chain",
            VqError::Oversize => "vhost_oversize",
            VqError::BadAvailIdx => "vhost_bad_avail_idx",
        }
    }

    /// Index in counter arrays.
    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-batch tallies, flushed to the port's shared counters once per batch.
#[derive(Debug, Default)]
pub struct Tally {
    /// Errors by [`VqError::index`].
    pub errors: [u64; VqError::COUNT],
    /// Frames dropped by datapath reason (tx side).
    pub drops: [u64; DropReason::COUNT],
}

impl Tally {
    #[inline(always)]
    fn err(&mut self, e: VqError) {
        self.errors[e.index()] += 1;
    }

    /// Whether nothing was tallied: OR over every counter, loads only, so
    /// the per-poll flush of an empty tally (every poll, empty ones too)
    /// costs a few vector loads instead of a store per counter.
    #[inline(always)]
    pub fn is_clear(&self) -> bool {
        self.errors
            .iter()
            .chain(self.drops.iter())
            .fold(0u64, |a, &n| a | n)
            == 0
    }
}

/// The polling thread's own position in one queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct VqLocal {
    /// Next available-ring slot to consume (== used index: chains are
    /// returned in order, in the same batch).
    pub last_avail: u16,
    /// The [`Vring::epoch`] this position belongs to.
    pub epoch: u64,
    /// The queue is in the current view and not broken.
    pub live: bool,
}

/// One started queue as published to the polling thread: host pointers
/// into the guest's rings, valid as long as the device view holding this
/// value (and its [`GuestMemory`]) lives.
#[derive(Debug)]
pub struct Vring {
    desc: *const Desc,
    avail: *const u16,
    used: *mut u16,
    size: u16,
    /// Where the polling thread starts when it first sees this queue
    /// (`SET_VRING_BASE`, or where it stopped last time).
    pub base: u16,
    /// Changes every time the queue is (re)started; a polling thread that
    /// sees a new epoch restarts from `base`.
    pub epoch: u64,
    call: Option<Arc<OwnedFd>>,
    /// The CPU executes PREFETCHW ([`has_prefetchw`]).
    prefetchw: bool,
}

// SAFETY: the raw pointers point into a GuestMemory that the device view
// holding this Vring keeps alive; only the one polling thread that owns the
// port dereferences them.
unsafe impl Send for Vring {}
// SAFETY: as above; shared references only read the pointer values.
unsafe impl Sync for Vring {}

/// Why ring addresses were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// Queue size 0, above 32768 or not a power of 2.
    #[error("queue size {0} is not a power of 2 in 1..=32768")]
    Size(u32),
    /// A ring is not inside the memory table.
    #[error("{0} ring at {1:#x} is outside the memory table")]
    Outside(&'static str, u64),
    /// A ring is misaligned (virtio 1.1 §2.6: 16, 2 and 4 bytes).
    #[error("{0} ring at {1:#x} is misaligned")]
    Align(&'static str, u64),
}

impl Vring {
    /// Check and translate ring addresses given as front-end virtual
    /// addresses (`SET_VRING_ADDR`). Marks the used ring `NO_NOTIFY`: the
    /// back-end polls, so the driver never needs to kick.
    pub fn new(
        mem: &GuestMemory,
        addrs: (u64, u64, u64),
        size: u32,
        base: u16,
        epoch: u64,
        call: Option<Arc<OwnedFd>>,
    ) -> Result<Vring, RingError> {
        if size == 0 || size > u32::from(MAX_QUEUE_SIZE) || !size.is_power_of_two() {
            return Err(RingError::Size(size));
        }
        let (d, a, u) = addrs;
        let n = u64::from(size);
        let dp = mem
            .uaddr(d, 16 * n)
            .ok_or(RingError::Outside("descriptor", d))?;
        let ap = mem
            .uaddr(a, 6 + 2 * n)
            .ok_or(RingError::Outside("available", a))?;
        let up = mem
            .uaddr(u, 6 + 8 * n)
            .ok_or(RingError::Outside("used", u))?;
        if !(dp as usize).is_multiple_of(16) {
            return Err(RingError::Align("descriptor", d));
        }
        if !(ap as usize).is_multiple_of(2) {
            return Err(RingError::Align("available", a));
        }
        if !(up as usize).is_multiple_of(4) {
            return Err(RingError::Align("used", u));
        }
        let v = Vring {
            desc: dp.cast(),
            avail: ap.cast(),
            used: up.cast(),
            size: size as u16,
            base,
            epoch,
            call,
            prefetchw: has_prefetchw(),
        };
        v.used_flags()
            .store(VRING_USED_F_NO_NOTIFY, Ordering::Release);
        Ok(v)
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    #[inline(always)]
    fn avail_idx(&self) -> &AtomicU16 {
        // SAFETY: avail + 2 is inside the checked available ring and 2-aligned;
        // the guest writes it concurrently, hence the atomic view.
        unsafe { AtomicU16::from_ptr(self.avail.add(1).cast_mut()) }
    }

    #[inline(always)]
    fn avail_flags(&self) -> &AtomicU16 {
        // SAFETY: as avail_idx, offset 0.
        unsafe { AtomicU16::from_ptr(self.avail.cast_mut()) }
    }

    #[inline(always)]
    fn used_idx(&self) -> &AtomicU16 {
        // SAFETY: used + 2 is inside the checked used ring and 2-aligned.
        unsafe { AtomicU16::from_ptr(self.used.add(1)) }
    }

    #[inline(always)]
    fn used_flags(&self) -> &AtomicU16 {
        // SAFETY: as used_idx, offset 0.
        unsafe { AtomicU16::from_ptr(self.used) }
    }

    /// The current `used->idx` (for tests and diagnostics).
    pub fn used_index(&self) -> u16 {
        self.used_idx().load(Ordering::Acquire)
    }

    #[inline(always)]
    fn avail_head(&self, slot: u16) -> u16 {
        // SAFETY: slot < size (masked by the caller); ring[slot] is inside the
        // checked available ring.
        unsafe { self.avail.add(2 + usize::from(slot)).read_volatile() }
    }

    #[inline(always)]
    fn put_used(&self, slot: u16, id: u16, len: u32) {
        // SAFETY: slot < size; the used element {u32 id, u32 len} at byte
        // 4 + 8 * slot is inside the checked, 4-aligned used ring.
        unsafe {
            let e = self
                .used
                .cast::<u8>()
                .add(4 + 8 * usize::from(slot))
                .cast::<u32>();
            e.write_volatile(u32::from(id));
            e.add(1).write_volatile(len);
        }
    }

    /// Prefetch for writing the used-ring elements `first..first + k`
    /// (slots masked): the driver reads the used ring, so its lines are
    /// shared with the other CPU and every first store into one would
    /// stall on taking it back, in the middle of the frame copies.
    #[inline(always)]
    fn prefetch_used(&self, first: u16, k: usize) {
        let mask = self.size - 1;
        // Every 4th element (32 bytes) and the last: every line the
        // elements touch, however the 4-byte offset falls.
        let mut i = 0;
        while i < k {
            self.prefetch_w(self.used_elem(first.wrapping_add(i as u16) & mask));
            i += 4;
        }
        if k > 0 {
            self.prefetch_w(self.used_elem(first.wrapping_add(k as u16 - 1) & mask));
        }
    }

    #[inline(always)]
    fn used_elem(&self, slot: u16) -> *const u8 {
        // SAFETY: slot < size (masked by the caller): element `slot` at
        // byte 4 + 8 * slot is inside the checked used ring.
        unsafe { self.used.cast::<u8>().add(4 + 8 * usize::from(slot)) }
    }

    /// Hint the CPU to load the line at `p` for writing: PREFETCHW where
    /// the CPU has it. `_mm_prefetch(_MM_HINT_ET0)` would compile to a plain
    /// read prefetch (`prefetcht0`) in a build without the `prfchw` target
    /// feature, as ours is (generic x86-64): the line then arrives shared,
    /// and the store still has to take it from the other CPU (h43 found
    /// every "prefetch for writing" in the vring was a `prefetcht0`).
    #[inline(always)]
    fn prefetch_w<T>(&self, p: *const T) {
        #[cfg(target_arch = "x86_64")]
        if self.prefetchw {
            // SAFETY: PREFETCHW is a hint: it never faults, reads or writes
            // nothing architecturally, and this CPU has it (CPUID).
            unsafe {
                core::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
            }
            return;
        }
        prefetch(p);
    }

    #[inline(always)]
    fn zero_used_len(&self, slot: u16) {
        // SAFETY: as put_used: the len word of used element `slot` < size.
        unsafe {
            let e = self
                .used
                .cast::<u8>()
                .add(8 + 8 * usize::from(slot))
                .cast::<u32>();
            e.write_volatile(0);
        }
    }

    /// Publish the used index, then notify the driver unless it asked not
    /// to be (virtio 1.1 §2.6.7.2: full barrier between the index store and
    /// reading the flags).
    #[inline]
    fn publish_used(&self, idx: u16) {
        self.used_idx().store(idx, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.avail_flags().load(Ordering::Relaxed) & VRING_AVAIL_F_NO_INTERRUPT == 0 {
            if let Some(call) = &self.call {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writing 8 bytes from a live buffer to an eventfd we own.
                // A failed write (full counter) only loses a redundant interrupt.
                unsafe {
                    libc::write(call.as_raw_fd(), one.as_ptr().cast(), 8);
                }
            }
        }
    }

    /// Guest transmit → switch: take up to `max` frames from this queue into
    /// `out`, copying from guest buffers into pool packets, and return every
    /// consumed chain in one used-index update. Returns (frames, bytes), or
    /// `false` as the third value when the ring is corrupt (the queue must stop).
    ///
    /// The available index is read once per call and the used index
    /// published once. Chains are taken [`LOOKAHEAD`] at a time in three
    /// passes so that the cache misses on guest memory (the other CPU wrote
    /// every line we read) overlap instead of following one another: read
    /// the heads and prefetch their descriptors; copy each descriptor once,
    /// and for a chain of one direct descriptor (what DPDK and Linux drivers
    /// post for a small frame) check it and prefetch its frame; then copy
    /// the frames. Any other chain takes the general walk ([`Chain`]).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn pop_frames(
        &self,
        mem: &GuestMemory,
        st: &mut VqLocal,
        hdr_len: usize,
        pool: &mut PacketPool,
        out: &mut Vec<Packet>,
        max: usize,
        t: &mut Tally,
    ) -> (usize, u64, bool) {
        let avail = self.avail_idx().load(Ordering::Acquire);
        let pending = avail.wrapping_sub(st.last_avail);
        if pending > self.size {
            t.err(VqError::BadAvailIdx);
            return (0, 0, false);
        }
        if pending == 0 {
            return (0, 0, true);
        }
        let mask = self.size - 1;
        let take = usize::from(pending).min(max);
        let (mut n, mut bytes, mut done) = (0usize, 0u64, 0usize);
        let mut broken = false;
        let mut heads = [0u16; LOOKAHEAD];
        let mut flat = [Flat::NONE; LOOKAHEAD];
        'batch: while done < take {
            let k = (take - done).min(LOOKAHEAD);
            let first = st.last_avail.wrapping_add(done as u16);
            // Pass 1: heads, and their descriptors on the way.
            let mut good = k;
            for (i, h) in heads.iter_mut().enumerate().take(k) {
                let head = self.avail_head(first.wrapping_add(i as u16) & mask);
                if head >= self.size {
                    good = i;
                    break;
                }
                *h = head;
                // SAFETY: head < size: inside the descriptor table.
                prefetch(unsafe { self.desc.add(usize::from(head)) });
            }
            self.prefetch_used(first, good);
            // Pass 2: one-descriptor chains checked, their frames on the way.
            for (f, &head) in flat.iter_mut().zip(heads.iter()).take(good) {
                *f = self.flat_tx(mem, head, hdr_len);
                if !f.ptr.is_null() {
                    prefetch(f.ptr);
                    // SAFETY: len >= 1 bytes inside the checked segment.
                    prefetch(unsafe { f.ptr.add(f.len as usize - 1) });
                }
            }
            // Pass 3: the copies.
            for i in 0..good {
                let slot = first.wrapping_add(i as u16) & mask;
                let head = heads[i];
                let Some(p) = pool.get() else {
                    break 'batch;
                };
                // Into the batch first, filled in place after: filling a
                // local and then moving it made the move's wide loads wait
                // for the narrow stores of the fill (h21's profile).
                out.push(p);
                let Some(p) = out.last_mut() else {
                    break 'batch; // just pushed: not reached
                };
                let f = flat[i];
                let r = if f.ptr.is_null() {
                    self.copy_out(mem, head, hdr_len, p)
                } else {
                    let len = f.len as usize;
                    let area = p.frame_area_mut();
                    // SAFETY: f.ptr..+len is inside guest memory (flat_tx
                    // checked it) and len <= MAX_FRAME, the area's size.
                    unsafe { copy_frame(f.ptr, area.as_mut_ptr(), len) };
                    Ok(len)
                };
                match r {
                    Ok(len) => {
                        p.truncate(len);
                        bytes += len as u64;
                        n += 1;
                    }
                    Err(e) => {
                        t.err(e);
                        if let Some(p) = out.pop() {
                            pool.put(p);
                        }
                    }
                }
                self.put_used(slot, head, 0);
                done += 1;
            }
            if good < k {
                t.err(VqError::BadIndex);
                broken = true;
                break;
            }
        }
        if done > 0 {
            st.last_avail = st.last_avail.wrapping_add(done as u16);
            self.publish_used(st.last_avail);
        }
        (n, bytes, !broken)
    }

    /// A transmit chain that is one direct, device-readable descriptor
    /// holding the virtio-net header and a frame of 1..=[`MAX_FRAME`] bytes
    /// after it: the frame's checked host pointer and length. Anything else
    /// is [`Flat::NONE`] and takes the general walk, which counts errors.
    #[inline(always)]
    fn flat_tx(&self, mem: &GuestMemory, head: u16, hdr_len: usize) -> Flat {
        // SAFETY: head < size (checked by the caller): inside the table.
        // Copied out once; only the copy is checked and used.
        let d = unsafe { self.desc.add(usize::from(head)).read_unaligned() };
        let len = d.len as usize;
        if d.flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE) != 0
            || len <= hdr_len
            || len - hdr_len > MAX_FRAME
        {
            return Flat::NONE;
        }
        match mem.gpa(d.addr, u64::from(d.len)) {
            Some(p) => Flat {
                // SAFETY: hdr_len < len: still inside the checked segment.
                ptr: unsafe { p.add(hdr_len) },
                len: (len - hdr_len) as u32,
            },
            None => Flat::NONE,
        }
    }

    /// A receive chain that is one direct, device-writable descriptor of at
    /// least `hdr_len` bytes: its checked host pointer and length.
    #[inline(always)]
    fn flat_rx(&self, mem: &GuestMemory, head: u16, hdr_len: usize) -> Flat {
        // SAFETY: head < size (checked by the caller): inside the table.
        let d = unsafe { self.desc.add(usize::from(head)).read_unaligned() };
        if d.flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)
            != VRING_DESC_F_WRITE
            || (d.len as usize) < hdr_len
            || d.len == 0
        {
            return Flat::NONE;
        }
        match mem.gpa(d.addr, u64::from(d.len)) {
            Some(p) => Flat { ptr: p, len: d.len },
            None => Flat::NONE,
        }
    }

    /// Copy one transmit chain's frame (after the `hdr_len`-byte virtio-net
    /// header) into `p`; returns its length.
    #[inline(always)]
    fn copy_out(
        &self,
        mem: &GuestMemory,
        head: u16,
        hdr_len: usize,
        p: &mut Packet,
    ) -> Result<usize, VqError> {
        let mut ch = Chain::new(mem, self.desc, self.size, head);
        let area = p.frame_area_mut();
        let mut skip = hdr_len;
        let mut off = 0usize;
        while let Some((src, len, flags)) = ch.next()? {
            if flags & VRING_DESC_F_WRITE != 0 {
                return Err(VqError::BadFlags);
            }
            let mut l = len as usize;
            let mut s = src;
            if skip > 0 {
                let k = skip.min(l);
                skip -= k;
                l -= k;
                // SAFETY: k <= len, still inside the checked segment.
                s = unsafe { s.add(k) };
            }
            if l == 0 {
                continue;
            }
            if l > MAX_FRAME - off {
                return Err(VqError::Oversize);
            }
            // SAFETY: s..s+l is inside guest memory (checked by Chain), and
            // area[off..off+l] is inside the packet buffer (checked above).
            unsafe {
                std::ptr::copy_nonoverlapping(s, area.as_mut_ptr().add(off), l);
            }
            off += l;
        }
        if skip > 0 || off == 0 {
            return Err(VqError::Short);
        }
        Ok(off)
    }

    /// Switch → guest receive: write every frame of `pkts` (draining it) into
    /// available chains, zeroed virtio-net header first. With `mrg` one frame
    /// may take several chains (`num_buffers` set in the first header), else
    /// one chain per frame. Frames that find no buffer are `tx_ring_full`
    /// drops, frames larger than a non-mergeable chain `oversize` drops.
    /// Returns (frames, bytes, ring ok); a corrupt ring stops the queue.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn push_frames(
        &self,
        mem: &GuestMemory,
        st: &mut VqLocal,
        hdr_len: usize,
        mrg: bool,
        pkts: &mut Vec<Packet>,
        pool: &mut PacketPool,
        t: &mut Tally,
    ) -> (usize, u64, bool) {
        let avail = self.avail_idx().load(Ordering::Acquire);
        let mut left = avail.wrapping_sub(st.last_avail);
        let mut broken = false;
        if left > self.size {
            t.err(VqError::BadAvailIdx);
            left = 0;
            broken = true;
        }
        let mask = self.size - 1;
        let mut cur = st.last_avail;
        let (mut n, mut bytes) = (0usize, 0u64);
        // The first LOOKAHEAD chains in two passes before any write (see
        // pop_frames): heads and their descriptors, then one-descriptor
        // chains checked and their first and last lines prefetched.
        let base = cur;
        let k = usize::from(left).min(pkts.len()).min(LOOKAHEAD);
        let mut heads = [0u16; LOOKAHEAD];
        let mut flat = [Flat::NONE; LOOKAHEAD];
        let mut good = k;
        for (i, h) in heads.iter_mut().enumerate().take(k) {
            let head = self.avail_head(base.wrapping_add(i as u16) & mask);
            if head >= self.size {
                good = i; // the general path below counts it and stops
                break;
            }
            *h = head;
            // SAFETY: head < size: inside the descriptor table.
            prefetch(unsafe { self.desc.add(usize::from(head)) });
        }
        self.prefetch_used(base, good);
        for ((f, &head), p) in flat
            .iter_mut()
            .zip(heads.iter())
            .zip(pkts.iter())
            .take(good)
        {
            *f = self.flat_rx(mem, head, hdr_len);
            let end = hdr_len + p.len();
            if !f.ptr.is_null() && end <= f.len as usize {
                // The header's line for reading (it is usually written by
                // nobody: see set_net_hdr), the frame's first and last lines
                // for writing.
                prefetch(f.ptr);
                // SAFETY: hdr_len < end <= len: inside the checked segment.
                self.prefetch_w(unsafe { f.ptr.add(hdr_len) });
                // SAFETY: end <= len: inside the checked segment.
                self.prefetch_w(unsafe { f.ptr.add(end - 1) });
            }
        }
        // By reference: every packet goes back to the pool in one block
        // after the loop (moving each out of the batch cost two 48-byte
        // copies through the stack per frame, h43).
        for p in pkts.iter() {
            if broken || left == 0 {
                t.drops[DropReason::TxRingFull.index()] += 1;
                continue;
            }
            let data = p.data();
            let i = usize::from(cur.wrapping_sub(base));
            if i < good {
                let f = flat[i];
                let total = hdr_len + data.len();
                if !f.ptr.is_null() && total <= f.len as usize && (hdr_len == 12 || hdr_len == 10) {
                    // One chain holds header and frame: the common case.
                    // SAFETY: [f.ptr, f.ptr + total) is inside the checked
                    // segment (total <= len); data is the frame.
                    unsafe {
                        if hdr_len == 12 {
                            // num_buffers (bytes 10-11) = 1: virtio 1.1 §5.1.6.4.
                            set_net_hdr(f.ptr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
                        } else {
                            set_net_hdr(f.ptr, [0u8; 10]);
                        }
                        copy_frame(data.as_ptr(), f.ptr.add(hdr_len), data.len());
                    }
                    self.put_used(cur & mask, heads[i], total as u32);
                    cur = cur.wrapping_add(1);
                    left -= 1;
                    n += 1;
                    bytes += data.len() as u64;
                    continue;
                }
            }
            let start = cur;
            let mut off = 0usize;
            let mut nbuf = 0u16;
            let mut num_buffers: *mut u8 = std::ptr::null_mut();
            let mut verdict = Verdict::Pending;
            while let Verdict::Pending = verdict {
                if left == 0 {
                    verdict = Verdict::NoRoom;
                    break;
                }
                let slot = cur & mask;
                let head = self.avail_head(slot);
                if head >= self.size {
                    t.err(VqError::BadIndex);
                    broken = true;
                    verdict = Verdict::Bad;
                    break;
                }
                if left > 1 {
                    // Overlap the next chain's descriptor miss with this copy.
                    let nh = self.avail_head(cur.wrapping_add(1) & mask);
                    if nh < self.size {
                        // SAFETY: nh < size: inside the descriptor table.
                        prefetch(unsafe { self.desc.add(usize::from(nh)) });
                    }
                }
                let first = nbuf == 0;
                match self.fill_chain(mem, head, if first { hdr_len } else { 0 }, data, &mut off) {
                    Ok((written, hdr_ptr)) => {
                        if first {
                            num_buffers = hdr_ptr;
                        }
                        self.put_used(slot, head, written);
                        cur = cur.wrapping_add(1);
                        left -= 1;
                        nbuf += 1;
                        if off == data.len() {
                            verdict = Verdict::Done;
                        } else if !mrg {
                            verdict = Verdict::TooSmall;
                        }
                    }
                    Err(e) => {
                        // The bad chain is returned empty and counted, and so
                        // are the chains this frame already filled (their used
                        // entries keep their ids, their lengths become 0).
                        t.err(e);
                        let mut s = start;
                        while s != cur {
                            self.zero_used_len(s & mask);
                            s = s.wrapping_add(1);
                        }
                        self.put_used(slot, head, 0);
                        cur = cur.wrapping_add(1);
                        left -= 1;
                        verdict = Verdict::Bad;
                    }
                }
            }
            match verdict {
                Verdict::Done => {
                    // num_buffers exists with a 12-byte header (VERSION_1 or
                    // MRG_RXBUF) and is 1 without MRG_RXBUF (§5.1.6.4).
                    if hdr_len >= 12 && !num_buffers.is_null() {
                        // SAFETY: num_buffers points at byte 10 of the header
                        // written in the first chain, 2 bytes inside its
                        // checked first segment (fill_chain guarantees it).
                        unsafe {
                            set_net_hdr(num_buffers, nbuf.to_le_bytes());
                        }
                    }
                    n += 1;
                    bytes += data.len() as u64;
                }
                Verdict::NoRoom => {
                    // Out of chains part-way (mergeable): give the chains back
                    // unconsumed; the frame is a ring-full drop.
                    cur = start;
                    left += nbuf;
                    t.drops[DropReason::TxRingFull.index()] += 1;
                }
                Verdict::TooSmall => {
                    // One chain per frame and it was too small: give it back
                    // unconsumed (the next, smaller frame may fit) and drop.
                    cur = start;
                    left += nbuf;
                    t.drops[DropReason::Oversize.index()] += 1;
                }
                Verdict::Bad | Verdict::Pending => {}
            }
        }
        pool.put_all(pkts);
        if cur != st.last_avail {
            st.last_avail = cur;
            self.publish_used(cur);
        }
        (n, bytes, !broken)
    }

    /// Write `hdr` zero bytes and then `data[*off..]` into one receive chain.
    /// Returns the bytes written and, when `hdr` > 0, a pointer to header
    /// byte 10 (`num_buffers`) inside the chain's first segment.
    #[inline(always)]
    fn fill_chain(
        &self,
        mem: &GuestMemory,
        head: u16,
        hdr: usize,
        data: &[u8],
        off: &mut usize,
    ) -> Result<(u32, *mut u8), VqError> {
        let mut ch = Chain::new(mem, self.desc, self.size, head);
        let mut written = 0usize;
        let mut nb: *mut u8 = std::ptr::null_mut();
        let mut first = true;
        while let Some((dst, len, flags)) = ch.next()? {
            if flags & VRING_DESC_F_WRITE == 0 {
                return Err(VqError::BadFlags);
            }
            let mut d = dst;
            let mut l = len as usize;
            if first && hdr > 0 {
                // The header must sit whole in the first segment (every
                // driver we know posts at least header-sized buffers).
                if l < hdr {
                    return Err(VqError::Short);
                }
                // SAFETY: hdr <= l bytes inside the checked segment.
                unsafe {
                    // Fixed-size compares and stores for the two header sizes
                    // (10, 12) instead of a memset call: 6.7 % of the polling
                    // thread's loop-64 profile was that call. With 12 bytes,
                    // num_buffers (10-11) is set once the frame is placed.
                    if hdr == 12 || hdr == 10 {
                        set_net_hdr(d, [0u8; 10]);
                    } else {
                        std::ptr::write_bytes(d, 0, hdr);
                    }
                    nb = d.add(10.min(hdr - 2));
                    d = d.add(hdr);
                }
                l -= hdr;
                written += hdr;
            }
            first = false;
            let k = l.min(data.len() - *off);
            if k > 0 {
                // SAFETY: d..d+k is inside the checked segment; data[*off..*off+k]
                // is inside the frame.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr().add(*off), d, k);
                }
                *off += k;
                written += k;
            }
            if *off == data.len() {
                break;
            }
        }
        Ok((written as u32, nb))
    }
}

/// Chains examined together before any frame is copied (pmd.rs BATCH).
const LOOKAHEAD: usize = 32;

/// A chain of one direct descriptor, checked: host pointer (null: take the
/// general walk) and length.
#[derive(Clone, Copy)]
struct Flat {
    ptr: *mut u8,
    len: u32,
}

impl Flat {
    const NONE: Flat = Flat {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
}

/// Copy a frame. Frames of 16..=128 bytes (every minimum-size frame) take
/// two overlapping fixed-size moves instead of a call into `memcpy`, whose
/// size dispatch costs as much as the copy at these sizes.
///
/// # Safety
/// `src..src+len` readable, `dst..dst+len` writable, not overlapping.
#[inline(always)]
unsafe fn copy_frame(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's ranges (all arms); each move stays inside them
    // because N <= len.
    unsafe {
        if (16..=32).contains(&len) {
            copy_two::<16>(src, dst, len);
        } else if (33..=64).contains(&len) {
            copy_two::<32>(src, dst, len);
        } else if (65..=128).contains(&len) {
            copy_two::<64>(src, dst, len);
        } else {
            std::ptr::copy_nonoverlapping(src, dst, len);
        }
    }
}

/// The first N and the last N bytes of `len` (N <= len <= 2N).
///
/// # Safety
/// As [`copy_frame`], with N <= len.
#[inline(always)]
unsafe fn copy_two<const N: usize>(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: N <= len, so both N-byte windows lie inside the ranges.
    unsafe {
        let a = src.cast::<[u8; N]>().read_unaligned();
        let b = src.add(len - N).cast::<[u8; N]>().read_unaligned();
        dst.cast::<[u8; N]>().write_unaligned(a);
        dst.add(len - N).cast::<[u8; N]>().write_unaligned(b);
    }
}

/// Make the `N` header bytes at `p` equal `want`, storing only where they
/// differ. A driver that recycles its receive buffers (DPDK's virtio PMD,
/// io forwarding) finds the zeroed header with `num_buffers` 1 we left there
/// last time, and its transmit path only clears fields that are not zero
/// already; so in steady state nothing is stored, and the header's cache
/// line (the line before the frame with DPDK's mbuf layout) stays in the
/// driver's cache instead of being pulled across to this CPU and back for
/// the driver's read of `num_buffers`. DPDK's vhost library does the same
/// (`ASSIGN_UNLESS_EQUAL` on each header field).
///
/// # Safety
/// `p..p+N` is writable guest memory inside a checked segment.
#[inline(always)]
unsafe fn set_net_hdr<const N: usize>(p: *mut u8, want: [u8; N]) {
    // SAFETY: the caller's range.
    unsafe {
        if p.cast::<[u8; N]>().read_unaligned() != want {
            p.cast::<[u8; N]>().write_unaligned(want);
        }
    }
}

/// Whether this CPU executes PREFETCHW: CPUID 8000_0001h ECX bit 8
/// (AMD's "3DNowPrefetch", which Intel also sets since Broadwell).
fn has_prefetchw() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        max >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Hint the CPU to load the cache line at `p` (no fault on a bad address).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults and reads nothing.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How writing one frame into receive chains ended.
enum Verdict {
    Pending,
    Done,
    NoRoom,
    TooSmall,
    Bad,
}

/// A walk over one descriptor chain, direct or through one indirect table,
/// yielding each segment's checked host pointer, length and flags.
struct Chain<'a> {
    mem: &'a GuestMemory,
    table: *const Desc,
    tsize: u32,
    idx: u32,
    hops: u32,
    indirect: bool,
    done: bool,
}

impl<'a> Chain<'a> {
    #[inline(always)]
    fn new(mem: &'a GuestMemory, table: *const Desc, size: u16, head: u16) -> Chain<'a> {
        Chain {
            mem,
            table,
            tsize: u32::from(size),
            idx: u32::from(head),
            hops: 0,
            indirect: false,
            done: false,
        }
    }

    #[inline(always)]
    fn next(&mut self) -> Result<Option<(*mut u8, u32, u16)>, VqError> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.idx >= self.tsize {
                return Err(VqError::BadIndex);
            }
            self.hops += 1;
            if self.hops > self.tsize {
                return Err(VqError::Loop);
            }
            // SAFETY: idx < tsize and the table (descriptor ring or indirect
            // table) holds tsize descriptors inside guest memory. Copied out
            // once: later checks use this copy, never guest memory again.
            let d = unsafe { self.table.add(self.idx as usize).read_unaligned() };
            if d.flags & VRING_DESC_F_INDIRECT != 0 {
                // virtio 1.1 §2.6.5.3.1: no nesting, no NEXT with INDIRECT,
                // a length that is a multiple of 16.
                if self.indirect
                    || d.flags & VRING_DESC_F_NEXT != 0
                    || d.len == 0
                    || !d.len.is_multiple_of(16)
                {
                    return Err(VqError::BadIndirect);
                }
                let t = self
                    .mem
                    .gpa(d.addr, u64::from(d.len))
                    .ok_or(VqError::BadAddr)?;
                self.table = t.cast();
                self.tsize = d.len / 16;
                self.idx = 0;
                self.hops = 0;
                self.indirect = true;
                continue;
            }
            if d.flags & VRING_DESC_F_NEXT == 0 {
                self.done = true;
            } else {
                self.idx = u32::from(d.next);
            }
            if d.len == 0 {
                return Ok(Some((std::ptr::null_mut(), 0, d.flags)));
            }
            let p = self
                .mem
                .gpa(d.addr, u64::from(d.len))
                .ok_or(VqError::BadAddr)?;
            return Ok(Some((p, d.len, d.flags)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-poll flush skips an empty tally: any one counter, error or
    /// drop, must make it not clear, or that count would never be flushed.
    #[test]
    fn a_tally_is_clear_only_when_every_counter_is_zero() {
        assert!(Tally::default().is_clear());
        for e in VqError::ALL {
            let mut t = Tally::default();
            t.err(e);
            assert!(!t.is_clear(), "{e:?}");
        }
        for r in DropReason::ALL {
            let mut t = Tally::default();
            t.drops[r.index()] = 1 << 40;
            assert!(!t.is_clear(), "{r:?}");
        }
    }
}
