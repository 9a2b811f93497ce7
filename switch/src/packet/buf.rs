//! `Packet`: one frame and its buffer, and `PacketPool`: the per-thread
//! free lists the hot path takes buffers from and gives them back to, so it
//! never allocates.
//!
//! A `Packet` is backed by one of two kinds of storage, invisible to
//! everything that only reads or edits the frame (`data`, `data_mut`,
//! `push_head`, ...):
//! - a **heap buffer** (`HEADROOM` + `MAX_FRAME` bytes, allocated once when a
//!   pool is created and then recycled), used by every port type that copies
//!   (memory, tap) and for the datapath's multi-output copies;
//! - a **UMEM frame** of the polling thread's AF_XDP UMEM: the frame an
//!   AF_XDP socket received into, wrapped without a copy. Its headroom is
//!   what XDP left in front of the data (`XDP_PACKET_HEADROOM`, 256 bytes;
//!   kernel af_xdp.rst), so pushed VLAN and VXLAN headers fit as in a heap
//!   buffer.
//!
//! **Frame ownership.** A pool that adopted a UMEM ([`PacketPool::adopt_frames`])
//! owns every one of its frames and records, per frame, where it is:
//! `free` (in the pool's free list), `fill` (handed to one socket's fill ring,
//! or already in its rx ring: the kernel holds it), `user` (a `Packet` in
//! userspace) or `tx` (posted on one socket's tx ring, not yet back on its
//! completion ring). Only the transitions below exist, each made by exactly
//! one call, so a frame can never be in two places or lost:
//! `free → fill` ([`PacketPool::frames_to_fill`]), `fill → user`
//! ([`PacketPool::rx_frame`]), `fill → free` ([`PacketPool::fill_to_free`],
//! a received frame dropped before it became a packet), `user → tx`
//! ([`PacketPool::frame_to_tx`], zero-copy transmit), `free → tx`
//! ([`PacketPool::free_to_tx`], transmit of a copy), `tx → free`
//! ([`PacketPool::tx_complete`], the completion ring; also an undone post),
//! `user → free` ([`PacketPool::put`]), and `fill|tx → free` for everything a
//! socket held when it is closed ([`PacketPool::sweep`]).
//! [`PacketPool::check_frames`] verifies the books: free + fill + user + tx =
//! total, and the free list holds each free frame exactly once.
//!
//! UMEM packets never leave their polling thread: a port that keeps packets
//! (memory ports), the cross-thread hand-off queue and an AF_XDP socket on
//! another UMEM get a copy ([`PacketPool::to_heap`], or the AF_XDP port's own
//! copy into one of its frames), and the frame goes back to the free list.
//! A UMEM packet dropped without going back to its pool leaks its frame; that
//! is a bug, counted in [`umem_packets_dropped`] and caught by the frame
//! accounting tests.
//!
//! Nothing here allocates, locks or makes a syscall per packet.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::datapath::TunnelMeta;

/// Bytes reserved in front of the frame for pushed headers (VLAN tags, VXLAN's 50-byte outer headers).
pub const HEADROOM: usize = 128;
/// Largest frame a buffer holds (an MTU-9000 jumbo frame does not fit; MTU 1500 + tags + encap does).
pub const MAX_FRAME: usize = 2048;
/// Total heap buffer size, and the largest a frame may grow to in any buffer
/// (so every packet can always be copied into a heap buffer).
pub const BUF_CAP: usize = HEADROOM + MAX_FRAME;
/// Where received data starts in a UMEM frame: the kernel's
/// `XDP_PACKET_HEADROOM` (include/uapi/linux/bpf.h), with no user headroom.
pub const UMEM_HEADROOM: usize = 256;

/// `frame` of a heap packet.
const NO_FRAME: u32 = u32::MAX;

static UMEM_PACKETS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// UMEM-backed packets dropped without being returned to their pool, process
/// wide (each one is a leaked frame: a bug; tests assert it stays 0).
pub fn umem_packets_dropped() -> u64 {
    UMEM_PACKETS_DROPPED.load(Ordering::Relaxed)
}

/// One frame.
pub struct Packet {
    /// Start of the buffer: a leaked `Box<[u8; BUF_CAP]>`, or a UMEM frame.
    ptr: NonNull<u8>,
    head: u16,
    len: u16,
    /// Tunnel metadata (OVS `pkt_metadata.tunnel`): set by a tunnel port on
    /// decapsulation (read into the `FlowKey`), and by the datapath on output
    /// after `SetTunnel` (read by the tunnel port's encapsulation). Cleared
    /// whenever the buffer is refilled or returned to a pool.
    tunnel: Option<TunnelMeta>,
    /// The IPv4 next hop a `route` action chose for a port that resolves
    /// next hops itself (0: none). Set by the datapath on output after
    /// `SetNextHop`, read by that port (`route::uplink`, a `routed=true`
    /// vxlan port); cleared with the tunnel metadata.
    nexthop: u32,
    /// Buffer size (`BUF_CAP`, or the UMEM frame size).
    cap: u16,
    /// UMEM frame index, or `NO_FRAME` for a heap buffer.
    frame: u32,
}

// SAFETY: a Packet exclusively owns its buffer: a heap box nobody else points
// to, or a UMEM frame its pool marked `user` and handed to this packet alone.
// The UMEM mapping outlives every packet of it: the pool keeps it alive and,
// if it is dropped while packets are still out, leaks it (see
// `Frames::drop`). So moving a Packet to another thread is sound.
unsafe impl Send for Packet {}
// SAFETY: `&Packet` only reads the buffer; writes need `&mut Packet`.
unsafe impl Sync for Packet {}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Packet")
            .field("head", &self.head)
            .field("len", &self.len)
            .field("frame", &(self.frame != NO_FRAME).then_some(self.frame))
            .finish()
    }
}

impl Default for Packet {
    fn default() -> Self {
        Packet::new()
    }
}

impl Clone for Packet {
    /// A heap copy (allocates), whatever the original's storage.
    fn clone(&self) -> Self {
        let mut p = Packet::new();
        p.copy_from(self);
        p
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        if self.frame == NO_FRAME {
            // SAFETY: heap packets' `ptr` comes from `Box::into_raw` of a
            // `Box<[u8; BUF_CAP]>` in `Packet::new`, owned by this packet alone.
            drop(unsafe { Box::from_raw(self.ptr.as_ptr().cast::<[u8; BUF_CAP]>()) });
        } else {
            UMEM_PACKETS_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Packet {
    /// An empty heap buffer (allocates; call at pool creation, not per packet).
    pub fn new() -> Packet {
        let b: Box<[u8; BUF_CAP]> = Box::new([0u8; BUF_CAP]);
        // SAFETY: Box::into_raw never returns null.
        let ptr = unsafe { NonNull::new_unchecked(Box::into_raw(b).cast::<u8>()) };
        Packet {
            ptr,
            head: HEADROOM as u16,
            len: 0,
            tunnel: None,
            nexthop: 0,
            cap: BUF_CAP as u16,
            frame: NO_FRAME,
        }
    }

    /// A buffer holding a copy of `frame` (allocates; for tests and the control path).
    /// None when the frame is larger than [`MAX_FRAME`].
    pub fn from_slice(frame: &[u8]) -> Option<Packet> {
        let mut p = Packet::new();
        p.set_data(frame).then_some(p)
    }

    /// True when the packet is a UMEM frame (received by AF_XDP without a copy).
    #[inline(always)]
    pub fn is_umem(&self) -> bool {
        self.frame != NO_FRAME
    }

    /// The headroom a fresh frame of this buffer's kind starts with.
    #[inline]
    fn default_head(&self) -> usize {
        if self.is_umem() {
            UMEM_HEADROOM
        } else {
            HEADROOM
        }
    }

    /// Replace the contents with a copy of `frame`, resetting the headroom.
    /// False (and unchanged) when the frame does not fit.
    pub fn set_data(&mut self, frame: &[u8]) -> bool {
        let head = self.default_head();
        if frame.len() > MAX_FRAME || head + frame.len() > usize::from(self.cap) {
            return false;
        }
        self.head = head as u16;
        self.len = frame.len() as u16;
        self.tunnel = None;
        self.nexthop = 0;
        self.data_mut().copy_from_slice(frame);
        true
    }

    /// Reset the headroom and expose the whole frame area ([`MAX_FRAME`] bytes,
    /// stale contents) for a backend that gathers a frame from several
    /// segments; it then calls [`Packet::truncate`] with the length it wrote.
    #[inline(always)]
    pub fn frame_area_mut(&mut self) -> &mut [u8; MAX_FRAME] {
        // Every buffer holds its default headroom plus MAX_FRAME (heap:
        // BUF_CAP = HEADROOM + MAX_FRAME; UMEM: UMEM_HEADROOM + MAX_FRAME <= frame size).
        self.head = self.default_head() as u16;
        self.len = MAX_FRAME as u16;
        self.tunnel = None;
        self.nexthop = 0;
        match self.data_mut().try_into() {
            Ok(a) => a,
            Err(_) => unreachable!("len was just set to MAX_FRAME"),
        }
    }

    /// Copy another packet's frame into this buffer (keeps this buffer's
    /// storage). The headroom is kept where it fits, so a copy of a UMEM
    /// frame (256 bytes of headroom) into a heap buffer keeps as much of it
    /// as the buffer allows, never less than the frame needs.
    pub fn copy_from(&mut self, other: &Packet) {
        let len = other.len();
        // Every frame fits BUF_CAP (push_head/push_tail keep it so), and every
        // buffer is at least BUF_CAP long.
        let head = usize::from(other.head).min(usize::from(self.cap) - len);
        self.head = head as u16;
        self.len = other.len;
        self.tunnel = other.tunnel;
        self.nexthop = other.nexthop;
        self.data_mut().copy_from_slice(other.data());
    }

    /// The frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // SAFETY: `head + len <= cap` always holds (every mutator keeps it),
        // and the buffer of `cap` bytes at `ptr` is owned by this packet.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(usize::from(self.head)),
                usize::from(self.len),
            )
        }
    }

    /// The frame, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(usize::from(self.head)),
                usize::from(self.len),
            )
        }
    }

    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for a zero-length frame.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        usize::from(self.head)
    }

    /// Grow the frame by `n` bytes at the front; returns the whole new frame,
    /// or None when the headroom is too small (or the frame would exceed
    /// [`BUF_CAP`]).
    #[inline]
    pub fn push_head(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > usize::from(self.head) || usize::from(self.len) + n > BUF_CAP {
            return None;
        }
        self.head -= n as u16;
        self.len += n as u16;
        Some(self.data_mut())
    }

    /// Remove `n` bytes from the front; false when the frame is shorter.
    #[inline]
    pub fn pull_head(&mut self, n: usize) -> bool {
        if n > usize::from(self.len) {
            return false;
        }
        self.head += n as u16;
        self.len -= n as u16;
        true
    }

    /// Grow the frame at the back by `n` zero bytes; false when it would not
    /// fit the buffer (or exceed [`BUF_CAP`]).
    pub fn push_tail(&mut self, n: usize) -> bool {
        let end = usize::from(self.head) + usize::from(self.len);
        if end + n > usize::from(self.cap) || usize::from(self.len) + n > BUF_CAP {
            return false;
        }
        let old = usize::from(self.len);
        self.len += n as u16;
        self.data_mut()[old..].fill(0);
        true
    }

    /// The tunnel metadata (see the field's documentation).
    #[inline(always)]
    pub fn tunnel(&self) -> Option<&TunnelMeta> {
        self.tunnel.as_ref()
    }

    /// Set or clear the tunnel metadata.
    #[inline(always)]
    pub fn set_tunnel(&mut self, t: Option<TunnelMeta>) {
        self.tunnel = t;
    }

    /// The next hop a `route` action chose (0: none; see the field).
    #[inline(always)]
    pub fn nexthop(&self) -> u32 {
        self.nexthop
    }

    /// Set (0: clear) the next hop.
    #[inline(always)]
    pub fn set_nexthop(&mut self, ip: u32) {
        self.nexthop = ip;
    }

    /// Take the tunnel metadata, leaving none.
    #[inline(always)]
    pub fn take_tunnel(&mut self) -> Option<TunnelMeta> {
        self.tunnel.take()
    }

    /// Shorten the frame to `n` bytes (no-op when already shorter).
    pub fn truncate(&mut self, n: usize) {
        if n < usize::from(self.len) {
            self.len = n as u16;
        }
    }

    /// Move the frame inside its buffer so that it starts `head` bytes in
    /// (AF_XDP transmit: a descriptor must start where the received frame
    /// did). False when it would not fit.
    pub fn set_headroom(&mut self, head: usize) -> bool {
        let (old, len) = (usize::from(self.head), usize::from(self.len));
        if head == old {
            return true;
        }
        if head + len > usize::from(self.cap) {
            return false;
        }
        // SAFETY: both ranges lie inside the `cap`-byte buffer this packet
        // owns; `copy` handles the overlap (memmove).
        unsafe {
            let base = self.ptr.as_ptr();
            std::ptr::copy(base.add(old), base.add(head), len);
        }
        self.head = head as u16;
        true
    }

    /// The UMEM frame index, None for a heap packet.
    #[inline(always)]
    pub fn umem_frame(&self) -> Option<u32> {
        self.is_umem().then_some(self.frame)
    }

    /// Give up the packet without dropping its storage (its frame changes
    /// hands through the pool's books).
    #[inline(always)]
    fn forget(self) {
        std::mem::forget(self);
    }
}

/// Where a UMEM frame is (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameState {
    /// In the pool's free list.
    Free = 0,
    /// Handed to a socket's fill ring, or in its rx ring (the kernel holds it).
    Fill = 1,
    /// A `Packet` in userspace.
    User = 2,
    /// Posted on a socket's tx ring, not yet back on its completion ring.
    Tx = 3,
}

/// Frames per state, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames in the UMEM.
    pub total: u32,
    /// In the pool's free list.
    pub free: u32,
    /// In fill or rx rings.
    pub fill: u32,
    /// Packets in userspace.
    pub user: u32,
    /// In tx or completion rings.
    pub tx: u32,
    /// Transitions refused because the frame was not where the caller said
    /// (a ring handed back a frame we did not give it): the frame stays put.
    pub refused: u64,
}

/// The UMEM frames a pool owns.
struct Frames {
    base: NonNull<u8>,
    frame_size: usize,
    total: u32,
    free: Vec<u32>,
    state: Box<[FrameState]>,
    owner: Box<[u32]>,
    counts: [u32; 4],
    refused: u64,
    /// Keeps the mapping alive (the AF_XDP UMEM object).
    keep: Option<Arc<dyn Any + Send + Sync>>,
}

impl Drop for Frames {
    fn drop(&mut self) {
        if self.counts[FrameState::User as usize] != 0 {
            // Packets of this UMEM still exist somewhere (a bug, or a thread
            // torn down mid-batch): keep the mapping so they never dangle.
            std::mem::forget(self.keep.take());
        }
    }
}

impl Frames {
    #[inline(always)]
    fn set(&mut self, idx: u32, to: FrameState, who: u32) {
        let i = idx as usize;
        let from = self.state[i];
        self.counts[from as usize] -= 1;
        self.counts[to as usize] += 1;
        self.state[i] = to;
        self.owner[i] = who;
    }

    /// True when frame `idx` is in state `s` (and, for kernel states, held by `who`).
    #[inline(always)]
    fn is(&self, idx: u32, s: FrameState, who: Option<u32>) -> bool {
        let i = idx as usize;
        i < self.state.len() && self.state[i] == s && who.is_none_or(|w| self.owner[i] == w)
    }
}

impl core::fmt::Debug for Frames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frames")
            .field("total", &self.total)
            .field("counts", &self.counts)
            .finish()
    }
}

/// Free lists owned by one thread: heap buffers, and the frames of the
/// thread's UMEM once one is adopted.
#[derive(Debug, Default)]
pub struct PacketPool {
    free: Vec<Packet>,
    frames: Option<Frames>,
}

static NEXT_FRAME_USER: AtomicU64 = AtomicU64::new(1);

impl PacketPool {
    /// A pool with `n` heap buffers allocated up front (and no UMEM).
    pub fn with_capacity(n: usize) -> PacketPool {
        PacketPool {
            free: (0..n).map(|_| Packet::new()).collect(),
            frames: None,
        }
    }

    /// Take a heap buffer (its contents are stale, its metadata clear). None
    /// when the pool is empty: the caller counts a drop, it never allocates
    /// on the hot path.
    ///
    /// Writes nothing: every packet in the free list is already clear
    /// ([`Packet::new`], or [`PacketPool::put`] cleared it). Clearing fields
    /// of the popped value here, just before moving all 48 bytes of it to the
    /// caller, made that move's wide loads wait for the narrow stores
    /// (no store-to-load forwarding across sizes; docs/perf.md, h21's profile).
    #[inline]
    pub fn get(&mut self) -> Option<Packet> {
        let p = self.free.pop()?;
        debug_assert!(p.tunnel.is_none() && p.nexthop == 0);
        Some(p)
    }

    /// Return every packet of `pkts` (left empty) as [`PacketPool::put`]
    /// would. Heap buffers move into the free list in one block copy and
    /// are cleared in place after: a transmit path that returned each sent
    /// packet with `put` moved every 48-byte `Packet` out of its batch and
    /// into the free list one at a time (h43's profile of `push_frames`).
    #[inline]
    pub fn put_all(&mut self, pkts: &mut Vec<Packet>) {
        if pkts.iter().any(Packet::is_umem) {
            for p in pkts.drain(..) {
                self.put(p);
            }
            return;
        }
        let start = self.free.len();
        self.free.append(pkts);
        for q in &mut self.free[start..] {
            q.tunnel = None;
            q.nexthop = 0;
        }
    }

    /// Return a buffer: a heap buffer to the heap free list, a UMEM frame to
    /// the frame free list (its tunnel metadata is cleared, so a reused buffer
    /// never carries a previous packet's tunnel).
    #[inline]
    pub fn put(&mut self, mut p: Packet) {
        if !p.is_umem() {
            // Move first, clear in place after: clearing `p` before the move
            // stalled the move's loads (see `get`).
            self.free.push(p);
            if let Some(q) = self.free.last_mut() {
                q.tunnel = None;
                q.nexthop = 0;
            }
            return;
        }
        p.tunnel = None;
        p.nexthop = 0;
        let idx = p.frame;
        match self.frames.as_mut() {
            Some(f) if f.is(idx, FrameState::User, None) && f.frame_ptr_ok(idx, &p) => {
                f.set(idx, FrameState::Free, 0);
                f.free.push(idx);
                p.forget();
            }
            // Not one of ours: never adopt a stranger's frame. Dropping it
            // counts it in umem_packets_dropped.
            _ => drop(p),
        }
    }

    /// Heap buffers available.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// A heap copy of `p` for a destination that keeps packets or belongs to
    /// another thread; a UMEM frame goes back to the free list. A heap packet
    /// is returned as is. None (and the buffer recycled) when no heap buffer
    /// is free.
    #[inline]
    pub fn to_heap(&mut self, p: Packet) -> Option<Packet> {
        if !p.is_umem() {
            return Some(p);
        }
        let Some(mut h) = self.get() else {
            self.put(p);
            return None;
        };
        h.copy_from(&p);
        self.put(p);
        Some(h)
    }

    /// Make this pool the owner of every frame of a UMEM: `frames` frames of
    /// `frame_size` bytes starting at `base`, all free. `keep` keeps the
    /// mapping alive for as long as the pool (or any packet of it) lives.
    /// False when the pool already owns a UMEM (nothing changes).
    ///
    /// # Safety
    /// `base .. base + frames * frame_size` must be one mapping that lives as
    /// long as `keep`, that no other pool owns and that nothing else reads or
    /// writes except through this pool's books (sockets get frames only from
    /// it). `frame_size` must be at least [`UMEM_HEADROOM`] + [`BUF_CAP`] and
    /// at most 65535.
    pub unsafe fn adopt_frames(
        &mut self,
        base: NonNull<u8>,
        frame_size: usize,
        frames: u32,
        keep: Option<Arc<dyn Any + Send + Sync>>,
    ) -> bool {
        if self.frames.is_some() {
            return false;
        }
        let n = frames as usize;
        self.frames = Some(Frames {
            base,
            frame_size,
            total: frames,
            // Popped from the back: hand out low frames first.
            free: (0..frames).rev().collect(),
            state: vec![FrameState::Free; n].into_boxed_slice(),
            owner: vec![0; n].into_boxed_slice(),
            counts: [frames, 0, 0, 0],
            refused: 0,
            keep,
        });
        true
    }

    /// The object keeping the adopted UMEM alive (the AF_XDP layer stores its
    /// UMEM handle there), None when no UMEM is adopted.
    pub fn frames_owner(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.frames.as_ref().and_then(|f| f.keep.as_ref())
    }

    /// True when this pool owns a UMEM.
    pub fn has_frames(&self) -> bool {
        self.frames.is_some()
    }

    /// A new identity for a socket that will hold frames of this pool (so
    /// that closing it can sweep exactly its frames back). Unique process-wide.
    pub fn new_frame_user(&mut self) -> u32 {
        let id = NEXT_FRAME_USER.fetch_add(1, Ordering::Relaxed);
        u32::try_from(id % u64::from(u32::MAX)).unwrap_or(1).max(1)
    }

    /// Frames in the free list.
    #[inline]
    pub fn free_frames(&self) -> usize {
        self.frames.as_ref().map_or(0, |f| f.free.len())
    }

    /// Pointer to the start of frame `idx` (None when out of range or no UMEM).
    #[inline]
    pub fn frame_ptr(&self, idx: u32) -> Option<NonNull<u8>> {
        let f = self.frames.as_ref()?;
        if idx >= f.total {
            return None;
        }
        // SAFETY: idx < total, so the offset stays inside the adopted mapping.
        Some(unsafe { f.base.add(idx as usize * f.frame_size) })
    }

    /// `free → fill`: take up to `out.len()` free frames for `who`'s fill
    /// ring, leaving `reserve` in the free list. Returns how many were taken.
    #[inline]
    pub fn frames_to_fill(&mut self, who: u32, out: &mut [u32], reserve: usize) -> usize {
        let Some(f) = self.frames.as_mut() else {
            return 0;
        };
        let n = out.len().min(f.free.len().saturating_sub(reserve));
        for slot in out.iter_mut().take(n) {
            let Some(idx) = f.free.pop() else { break };
            f.set(idx, FrameState::Fill, who);
            *slot = idx;
        }
        n
    }

    /// `fill → free`: frames taken for a fill ring that the ring did not
    /// accept, or received frames dropped before becoming packets.
    #[inline]
    pub fn fill_to_free(&mut self, who: u32, idx: u32) -> bool {
        let Some(f) = self.frames.as_mut() else {
            return false;
        };
        if !f.is(idx, FrameState::Fill, Some(who)) {
            f.refused += 1;
            return false;
        }
        f.set(idx, FrameState::Free, 0);
        f.free.push(idx);
        true
    }

    /// `fill → user`: frame `idx`, which `who` had put on its fill ring and
    /// got back on its rx ring with `len` bytes at offset `head`, as a packet
    /// (no copy). None when the frame was not `who`'s to receive into or the
    /// offsets do not fit (the frame is then left alone, counted as refused).
    #[inline]
    pub fn rx_frame(&mut self, who: u32, idx: u32, head: usize, len: usize) -> Option<Packet> {
        let f = self.frames.as_mut()?;
        let fs = f.frame_size;
        if !f.is(idx, FrameState::Fill, Some(who)) || head + len > fs || len > BUF_CAP {
            f.refused += 1;
            return None;
        }
        f.set(idx, FrameState::User, 0);
        // SAFETY: idx < total (checked by `is`), so the frame lies in the mapping.
        let ptr = unsafe { f.base.add(idx as usize * fs) };
        Some(Packet {
            ptr,
            head: head as u16,
            len: len as u16,
            cap: fs as u16,
            frame: idx,
            tunnel: None,
            nexthop: 0,
        })
    }

    /// If `p` is a frame of this pool's UMEM: its frame index.
    #[inline]
    pub fn own_frame(&self, p: &Packet) -> Option<u32> {
        let f = self.frames.as_ref()?;
        let idx = p.umem_frame()?;
        (f.is(idx, FrameState::User, None) && f.frame_ptr_ok(idx, p)).then_some(idx)
    }

    /// `user → tx`: hand packet `p` (a frame of this pool, see
    /// [`Self::own_frame`]) to `who`'s tx ring; returns `(frame, head, len)`.
    /// Err(p) when it is not a frame of this pool.
    #[inline]
    pub fn frame_to_tx(&mut self, who: u32, p: Packet) -> Result<(u32, usize, usize), Packet> {
        let Some(idx) = self.own_frame(&p) else {
            return Err(p);
        };
        let (head, len) = (p.headroom(), p.len());
        if let Some(f) = self.frames.as_mut() {
            f.set(idx, FrameState::Tx, who);
        }
        p.forget();
        Ok((idx, head, len))
    }

    /// `free → tx`: a free frame for `who` to copy a frame into and post.
    #[inline]
    pub fn free_to_tx(&mut self, who: u32) -> Option<u32> {
        let f = self.frames.as_mut()?;
        let idx = f.free.pop()?;
        f.set(idx, FrameState::Tx, who);
        Some(idx)
    }

    /// `tx → free`: a frame back from `who`'s completion ring (or a post undone).
    #[inline]
    pub fn tx_complete(&mut self, who: u32, idx: u32) -> bool {
        let Some(f) = self.frames.as_mut() else {
            return false;
        };
        if !f.is(idx, FrameState::Tx, Some(who)) {
            f.refused += 1;
            return false;
        }
        f.set(idx, FrameState::Free, 0);
        f.free.push(idx);
        true
    }

    /// `fill|tx → free` for every frame `who` holds: its socket is closed, so
    /// the kernel let go of its rings. Returns how many came back.
    pub fn sweep(&mut self, who: u32) -> usize {
        let Some(f) = self.frames.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for idx in 0..f.total {
            let i = idx as usize;
            if f.owner[i] == who && matches!(f.state[i], FrameState::Fill | FrameState::Tx) {
                f.set(idx, FrameState::Free, 0);
                f.free.push(idx);
                n += 1;
            }
        }
        n
    }

    /// Frames per state (all zero without a UMEM).
    pub fn frame_counts(&self) -> FrameCounts {
        self.frames
            .as_ref()
            .map_or_else(FrameCounts::default, |f| FrameCounts {
                total: f.total,
                free: f.counts[FrameState::Free as usize],
                fill: f.counts[FrameState::Fill as usize],
                user: f.counts[FrameState::User as usize],
                tx: f.counts[FrameState::Tx as usize],
                refused: f.refused,
            })
    }

    /// Audit the frame books (tests, diagnostics; walks every frame): the
    /// per-state counts match the state table and add up to the total, and
    /// the free list holds exactly the free frames, each once.
    pub fn check_frames(&self) -> Result<FrameCounts, String> {
        let c = self.frame_counts();
        let Some(f) = self.frames.as_ref() else {
            return Ok(c);
        };
        let mut by = [0u32; 4];
        for s in f.state.iter() {
            by[*s as usize] += 1;
        }
        if by != f.counts {
            return Err(format!("state table {by:?} != counters {:?}", f.counts));
        }
        if c.free + c.fill + c.user + c.tx != c.total {
            return Err(format!("frames do not add up: {c:?}"));
        }
        let mut seen = vec![false; f.total as usize];
        for idx in &f.free {
            let i = *idx as usize;
            if i >= seen.len() || seen[i] || f.state[i] != FrameState::Free {
                return Err(format!("free list entry {idx} is bad (dup or not free)"));
            }
            seen[i] = true;
        }
        if f.free.len() != c.free as usize {
            return Err(format!(
                "free list has {} frames, {} are free",
                f.free.len(),
                c.free
            ));
        }
        Ok(c)
    }
}

impl Frames {
    /// True when `p`'s buffer really is frame `idx` of this mapping.
    #[inline(always)]
    fn frame_ptr_ok(&self, idx: u32, p: &Packet) -> bool {
        idx < self.total
            && usize::from(p.cap) == self.frame_size
            && p.ptr.as_ptr() as usize
                == self.base.as_ptr() as usize + idx as usize * self.frame_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_head() {
        let mut p = Packet::from_slice(&[1, 2, 3]).unwrap();
        let d = p.push_head(2).unwrap();
        d[0] = 9;
        d[1] = 8;
        assert_eq!(p.data(), &[9, 8, 1, 2, 3]);
        assert!(p.pull_head(2));
        assert_eq!(p.data(), &[1, 2, 3]);
        assert!(p.push_head(HEADROOM + 1).is_none());
        assert!(Packet::from_slice(&[0; MAX_FRAME + 1]).is_none());
        assert!(p.push_tail(4));
        assert_eq!(p.data(), &[1, 2, 3, 0, 0, 0, 0]);
        assert!(!p.push_tail(BUF_CAP));
    }

    #[test]
    fn a_pool_never_hands_out_a_previous_packets_tunnel_or_next_hop() {
        // `get` writes nothing: `put` must leave every pooled packet clear.
        let mut pool = PacketPool::with_capacity(2);
        let mut held = Vec::new();
        while let Some(mut p) = pool.get() {
            assert!(p.tunnel().is_none() && p.nexthop() == 0, "fresh packet");
            p.set_tunnel(Some(TunnelMeta {
                tun_id: 5,
                src: 1,
                dst: 2,
            }));
            p.set_nexthop(0x0a00_0001);
            held.push(p);
        }
        // Back, plus one from outside the pool (a datapath copy).
        let mut extra = Packet::from_slice(&[1; 60]).unwrap();
        extra.set_nexthop(7);
        held.push(extra);
        for p in held {
            pool.put(p);
        }
        assert_eq!(pool.available(), 3);
        while let Some(p) = pool.get() {
            assert!(p.tunnel().is_none(), "tunnel carried over");
            assert_eq!(p.nexthop(), 0, "next hop carried over");
        }
    }

    #[test]
    fn put_all_returns_a_whole_batch_clear_and_leaves_it_empty() {
        let mut pool = PacketPool::with_capacity(4);
        let mut batch: Vec<Packet> = Vec::with_capacity(8);
        while let Some(mut p) = pool.get() {
            p.set_tunnel(Some(TunnelMeta {
                tun_id: 9,
                src: 3,
                dst: 4,
            }));
            p.set_nexthop(0x0a00_0002);
            batch.push(p);
        }
        let mut extra = Packet::from_slice(&[2; 60]).unwrap();
        extra.set_nexthop(7);
        batch.push(extra);
        let cap = batch.capacity();
        pool.put_all(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(batch.capacity(), cap, "the batch keeps its buffer");
        assert_eq!(pool.available(), 5);
        let mut n = 0;
        while let Some(p) = pool.get() {
            assert!(p.tunnel().is_none(), "tunnel carried over");
            assert_eq!(p.nexthop(), 0, "next hop carried over");
            n += 1;
        }
        assert_eq!(n, 5);
        // Nothing to return: nothing changes.
        pool.put_all(&mut batch);
        assert_eq!(pool.available(), 0);
    }

    const FS: usize = 4096;

    /// A fake UMEM: page-aligned heap memory standing in for the mapping,
    /// and a fake kernel moving frames between rings.
    struct Fake {
        mem: Arc<Vec<u64>>,
    }

    impl Fake {
        fn pool(frames: u32) -> (PacketPool, Fake) {
            let mem = Arc::new(vec![0u64; frames as usize * FS / 8]);
            let mut pool = PacketPool::with_capacity(16);
            let base = NonNull::new(mem.as_ptr() as *mut u8).unwrap();
            let keep: Arc<dyn Any + Send + Sync> = mem.clone();
            // SAFETY: the Vec lives as long as `keep`; only the pool hands it out.
            assert!(unsafe { pool.adopt_frames(base, FS, frames, Some(keep)) });
            (pool, Fake { mem })
        }
    }

    fn ok(pool: &PacketPool) -> FrameCounts {
        pool.check_frames().expect("frame books")
    }

    #[test]
    fn frames_move_through_every_state_and_add_up() {
        let (mut pool, _fake) = Fake::pool(64);
        let (a, b) = (pool.new_frame_user(), pool.new_frame_user());
        assert_ne!(a, b);
        let mut fill = [0u32; 16];
        assert_eq!(pool.frames_to_fill(a, &mut fill, 40), 16);
        assert_eq!(
            pool.frames_to_fill(b, &mut [0u32; 32], 40),
            8,
            "reserve kept"
        );
        let c = ok(&pool);
        assert_eq!((c.free, c.fill, c.user, c.tx), (40, 24, 0, 0));

        // "Kernel" receives into a's frames: packets without a copy.
        let mut pkts: Vec<Packet> = fill[..4]
            .iter()
            .map(|i| pool.rx_frame(a, *i, UMEM_HEADROOM, 60).unwrap())
            .collect();
        assert!(pkts.iter().all(Packet::is_umem));
        pkts[0].data_mut().copy_from_slice(&[7; 60]);
        assert_eq!(pkts[0].headroom(), UMEM_HEADROOM);
        // b may not receive into a's frame, nor a twice into one.
        assert!(pool.rx_frame(b, fill[5], UMEM_HEADROOM, 60).is_none());
        assert!(pool.rx_frame(a, fill[0], UMEM_HEADROOM, 60).is_none());
        assert_eq!(ok(&pool).refused, 2);
        assert_eq!(ok(&pool).user, 4);

        // Zero-copy tx on b: user -> tx, then completion -> free.
        let p0 = pkts.remove(0);
        let (idx, head, len) = pool.frame_to_tx(b, p0).unwrap();
        assert_eq!((idx, head, len), (fill[0], UMEM_HEADROOM, 60));
        let c = ok(&pool);
        assert_eq!((c.user, c.tx), (3, 1));
        assert!(
            !pool.tx_complete(a, idx),
            "only b's completion ring returns it"
        );
        assert!(pool.tx_complete(b, idx));
        assert!(!pool.tx_complete(b, idx), "never twice");

        // A heap packet is not a frame of the pool; a copy takes a free frame.
        let h = Packet::from_slice(&[1; 60]).unwrap();
        assert!(pool.own_frame(&h).is_none());
        let h = pool.frame_to_tx(b, h).unwrap_err();
        pool.put(h);
        let t = pool.free_to_tx(b).unwrap();
        assert_eq!(ok(&pool).tx, 1);

        // Drop a packet (datapath drop): straight back to the free list.
        let p = pkts.pop().unwrap();
        pool.put(p);
        // Leave the rest as a clone source and a to_heap conversion.
        let p = pkts.pop().unwrap();
        let c2 = p.clone();
        assert!(!c2.is_umem());
        assert_eq!(c2.data(), p.data());
        let h = pool.to_heap(p).unwrap();
        assert!(!h.is_umem());
        pool.put(h);
        pool.put(c2);
        let c = ok(&pool);
        assert_eq!((c.user, c.tx), (1, 1));

        // Socket b closes: its tx frame and fill frames come back; a's stay.
        assert_eq!(pool.sweep(b), 1 + 8);
        let c = ok(&pool);
        assert_eq!((c.fill, c.tx, c.user), (16 - 4, 0, 1));
        assert!(!pool.tx_complete(b, t), "swept frames are free now");
        let last = pkts.pop().unwrap();
        pool.put(last);
        assert_eq!(pool.sweep(a), 12);
        let c = ok(&pool);
        assert_eq!((c.free, c.total), (64, 64));
        assert_eq!(umem_packets_dropped(), 0);
    }

    #[test]
    fn put_all_gives_umem_frames_back_to_the_frame_free_list() {
        let (mut pool, _fake) = Fake::pool(64);
        let a = pool.new_frame_user();
        let mut fill = [0u32; 4];
        assert_eq!(pool.frames_to_fill(a, &mut fill, 0), 4);
        let heap_before = pool.available();
        let mut batch: Vec<Packet> = fill[..2]
            .iter()
            .map(|i| pool.rx_frame(a, *i, UMEM_HEADROOM, 60).unwrap())
            .collect();
        batch.push(Packet::from_slice(&[3; 60]).unwrap());
        let c = ok(&pool);
        assert_eq!((c.user, c.fill), (2, 2));
        pool.put_all(&mut batch);
        assert!(batch.is_empty());
        let c = ok(&pool);
        assert_eq!(
            (c.user, c.fill, c.free),
            (0, 2, 62),
            "frames are free again"
        );
        assert_eq!(pool.available(), heap_before + 1, "the heap packet is back");
    }

    #[test]
    fn umem_packets_edit_like_heap_packets() {
        let (mut pool, fake) = Fake::pool(4);
        let who = pool.new_frame_user();
        let mut f = [0u32; 1];
        assert_eq!(pool.frames_to_fill(who, &mut f, 0), 1);
        let mut p = pool.rx_frame(who, f[0], UMEM_HEADROOM, 4).unwrap();
        p.data_mut().copy_from_slice(&[1, 2, 3, 4]);
        // VLAN-sized and VXLAN-sized pushes fit the XDP headroom.
        p.push_head(4).unwrap()[..4].copy_from_slice(&[9, 9, 9, 9]);
        assert_eq!(p.data(), &[9, 9, 9, 9, 1, 2, 3, 4]);
        assert!(p.push_head(50).is_some());
        assert!(p.pull_head(54));
        assert_eq!(p.headroom(), UMEM_HEADROOM);
        assert!(p.push_tail(2));
        assert_eq!(p.data(), &[1, 2, 3, 4, 0, 0]);
        assert!(p.set_headroom(10));
        assert_eq!(p.data(), &[1, 2, 3, 4, 0, 0]);
        assert!(p.set_headroom(UMEM_HEADROOM + 3));
        assert_eq!(p.data(), &[1, 2, 3, 4, 0, 0]);
        assert!(!p.set_headroom(FS));
        assert!(p.push_tail(BUF_CAP - 6));
        assert!(!p.push_tail(1), "never beyond what a heap copy holds");
        // Bytes really live in the frame.
        let off = f[0] as usize * FS + UMEM_HEADROOM + 3;
        // SAFETY: the test's fake mapping; `p` is not borrowed here.
        let first = unsafe { *(fake.mem.as_ptr() as *const u8).add(off) };
        assert_eq!(first, 1);
        let mut h = Packet::new();
        h.copy_from(&p);
        assert_eq!(h.data(), p.data());
        pool.put(p);
        pool.put(h);
        assert_eq!(ok(&pool).free, 4);
    }

    #[test]
    fn strangers_and_out_of_range_frames_are_refused() {
        let (mut pool, _fake) = Fake::pool(8);
        let (mut other, _f2) = Fake::pool(8);
        let who = other.new_frame_user();
        let mut f = [0u32; 1];
        other.frames_to_fill(who, &mut f, 0);
        let stranger = other.rx_frame(who, f[0], UMEM_HEADROOM, 60).unwrap();
        assert!(pool.own_frame(&stranger).is_none(), "another UMEM's frame");
        let me = pool.new_frame_user();
        let stranger = pool.frame_to_tx(me, stranger).unwrap_err();
        other.put(stranger);
        assert!(pool.rx_frame(me, 99, UMEM_HEADROOM, 60).is_none());
        assert!(!pool.tx_complete(me, 99));
        assert!(!pool.fill_to_free(me, 3));
        let mut all = [0u32; 8];
        assert_eq!(pool.frames_to_fill(me, &mut all, 0), 8);
        assert!(
            pool.free_to_tx(me).is_none(),
            "no free frame: None, no panic"
        );
        assert!(
            pool.rx_frame(me, all[0], FS - 10, 60).is_none(),
            "offsets past the frame"
        );
        assert!(pool.fill_to_free(me, all[0]));
        assert_eq!(ok(&pool).refused, 4);
        assert_eq!(ok(&other).free, 8);
        assert_eq!(umem_packets_dropped(), 0);
    }
}
