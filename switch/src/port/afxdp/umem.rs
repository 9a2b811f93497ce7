//! The UMEM of one polling thread, shared by all the AF_XDP sockets that
//! thread serves, so a frame received on one of them can be transmitted on
//! another without a copy.
//!
//! One memory region of 4 KiB frames is registered with the kernel once
//! (`XDP_UMEM_REG`, kernel af_xdp.rst "UMEM"). Sockets on different
//! interfaces or queues bound to it each get their own fill and completion
//! rings (af_xdp.rst "XDP_SHARED_UMEM bind flag": since Linux 5.10 a UMEM may
//! be shared across queue ids and netdevs, one fill/completion ring pair per
//! unique (netdev, queue) pair); libxdp's `xsk_socket__create_shared` sets
//! that up and xsk-rs's `Socket::new` returns the new pair.
//!
//! **Who owns which frame.** This type only describes the region; it keeps
//! no free list. The frames belong to the polling thread's
//! [`PacketPool`](crate::packet::PacketPool), which adopts the UMEM when the
//! first AF_XDP port joins the thread ([`AfxdpUmem::adopt_into`]) and from
//! then on records where each frame is: free, in a socket's fill/rx rings, a
//! `Packet` in userspace, or in a socket's tx/completion rings. Ports take
//! frames from the pool for their fill rings and for transmit copies, and
//! give them back from the completion ring and when their socket closes. A
//! UMEM is adopted by at most one pool (`claimed`), so two threads never
//! hand out the same frame.
//!
//! Addresses: every frame is addressed by its canonical descriptor, the
//! address where received data starts (frame start + `XDP_PACKET_HEADROOM`,
//! 256). xsk-rs builds transmit descriptors only from descriptors it handed
//! out, so a frame whose data was moved (a pushed VLAN tag) is moved back to
//! that offset before it is posted (one `memmove` inside the frame).
//!
//! **The owner socket.** libxdp (xsk.c `xsk_socket__create_shared`) binds
//! the first socket created on a UMEM on the UMEM's own fd, the one
//! `XDP_UMEM_REG` registered the region on, and never closes that fd while
//! the UMEM lives (`xsk_socket__delete` skips `close` for it). Had a port
//! been that first socket, deleting the port would leave its (interface,
//! queue) bound to this UMEM for good (a re-add fails), and once every
//! other socket went, the next port would be handed the same, still bound,
//! fd (it fails). So every UMEM is created with an owner socket that
//! is that first socket and never a port: on a private network namespace's
//! loopback (`unshare(CLONE_NEWNET)` on a short-lived thread; the kernel
//! resolves a bind's ifindex in the socket's namespace, net/xdp/xsk.c
//! `xsk_bind`), copy mode, need_wakeup, no XDP program, no frame ever on its
//! rings. Every port socket is then a second socket with its own fd
//! (`XDP_SHARED_UMEM` with the owner's fd, its own fill and completion rings
//! per (netdev, queue)): deleting it closes the fd and frees the queue. The
//! namespace has no name and nothing in it but the socket: it lives as long
//! as the socket and vanishes with it, even when switchd is killed, so
//! nothing leaks into the host's namespaces. Consequence (kernel
//! `xp_assign_dev_shared`): a shared socket inherits the owner's bind
//! flags, so every port socket is copy mode with need_wakeup; a zero-copy
//! request is refused by the port (see `bind` in mod.rs).
//!
//! Created and registered on the control thread (never per packet); the
//! region is unmapped when the last clone and the last socket are gone.

use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::socket::{RxQueue, Socket, TxQueue};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::umem::Umem;
use xsk_rs::{CompQueue, FillQueue};

use super::AfxdpError;
use crate::packet::buf::{BUF_CAP, UMEM_HEADROOM};
use crate::packet::PacketPool;

/// Size of one UMEM frame: a page, so a 1500-byte MTU frame plus XDP's
/// 256-byte headroom fits with room to spare, and so is any
/// [`crate::packet::buf::MAX_FRAME`] frame.
pub const FRAME_SIZE: u32 = 4096;

/// Frames of a polling thread's UMEM by default (64 MiB): fill rings of 2048
/// for 7 ports, or of 256 for 60, plus [`fill_reserve`] for their transmit
/// copies and the packets in flight (`switchd --afxdp-umem-frames` changes it).
pub const THREAD_UMEM_FRAMES: u32 = 16384;

/// Smallest and largest thread UMEM `switchd --afxdp-umem-frames` accepts:
/// one default fill ring plus the reserve, and 1 GiB of 4 KiB frames.
pub const THREAD_UMEM_FRAMES_MIN: u32 = 4096;
/// See [`THREAD_UMEM_FRAMES_MIN`].
pub const THREAD_UMEM_FRAMES_MAX: u32 = 262_144;

/// Frames of a UMEM of `total` frames that fill rings never take: an eighth,
/// at most 1024. They stay free for transmit copies (a heap packet sent on
/// an AF_XDP port) and for the packets a polling iteration has in flight
/// (at most a batch of 32 per rx queue, tx rings emptied by `sendto`);
/// refills stop at this many free frames (`AfxdpPort::refill`).
pub fn fill_reserve(total: u32) -> u32 {
    (total / 8).min(1024)
}

/// Frames of a UMEM of `total` frames its sockets' fill rings may hold
/// together: the books of the thread's UMEM budget (`PmdSet` refuses a port
/// whose fill ring does not fit, so no port is left with an empty fill ring
/// while the kernel drops what it receives).
pub fn fill_budget(total: u32) -> u32 {
    total - fill_reserve(total)
}

/// Frames one socket keeps on its fill ring (its share of [`fill_budget`]):
/// its `n-rxq-desc`, capped by the fill ring size of the UMEM it shares.
pub fn fill_frames(umem_fill_descs: u32, n_rxq_desc: u32) -> u32 {
    umem_fill_descs.min(n_rxq_desc)
}

/// A UMEM (cheap to clone: all clones are the same region).
#[derive(Clone, Debug)]
pub struct AfxdpUmem {
    inner: Arc<Shared>,
}

/// The owner socket's rings (module documentation): held, never used.
/// Dropping the last of them deletes the socket, and with it the private
/// namespace.
#[derive(Debug)]
struct Owner {
    _tx: TxQueue,
    _rx: RxQueue,
    _fq: FillQueue,
    _cq: CompQueue,
}

/// Ring size of the owner socket (it carries nothing).
const OWNER_RING: u32 = 64;

#[derive(Debug)]
struct Shared {
    /// Declared first: dropped before `umem` (xsk-rs also keeps the UMEM
    /// alive while a socket on it lives).
    _owner: Owner,
    umem: Umem,
    /// Canonical descriptor of each frame (data at frame start + 256).
    descs: Box<[FrameDesc]>,
    /// Start of the mapping.
    base: NonNull<u8>,
    frames: u32,
    fill_descs: u32,
    comp_descs: u32,
    /// Adopted by a pool.
    claimed: AtomicBool,
}

// SAFETY: `base` is the address of the mapping `umem` owns; it is only
// dereferenced by the pool that adopted the region (one thread), under the
// frame books described in the module documentation.
unsafe impl Send for Shared {}
// SAFETY: as above; the shared fields are read-only or atomic.
unsafe impl Sync for Shared {}

impl AfxdpUmem {
    /// A UMEM of `frames` frames whose sockets get fill rings of `fill_descs`
    /// and completion rings of `comp_descs` entries (powers of two).
    pub fn new(frames: u32, fill_descs: u32, comp_descs: u32) -> Result<AfxdpUmem, AfxdpError> {
        let bad = |what: String| AfxdpError::Umem(what);
        let n =
            NonZeroU32::new(frames).ok_or_else(|| bad("a UMEM needs at least one frame".into()))?;
        let fq = QueueSize::new(fill_descs).map_err(|e| bad(format!("fill ring: {e}")))?;
        let cq = QueueSize::new(comp_descs).map_err(|e| bad(format!("completion ring: {e}")))?;
        let fs = FrameSize::new(FRAME_SIZE).map_err(|e| bad(format!("frame size: {e}")))?;
        let config = UmemConfig::builder()
            .frame_size(fs)
            .fill_queue_size(fq)
            .comp_queue_size(cq)
            .build()
            .map_err(|e| bad(format!("UMEM config: {e}")))?;
        let (umem, descs, owner) = std::thread::Builder::new()
            .name("afxdp-umem".into())
            .spawn(move || create_owned(config, n))
            .map_err(|e| bad(format!("starting the UMEM setup thread: {e}")))?
            .join()
            .map_err(|_| bad("the UMEM setup thread panicked".into()))??;
        let first = descs
            .first()
            .copied()
            .ok_or_else(|| bad("the UMEM has no frames".into()))?;
        let canonical = |i: usize, d: &FrameDesc| {
            d.addr() == i * FRAME_SIZE as usize + UMEM_HEADROOM && d.lengths().data() == 0
        };
        if !descs.iter().enumerate().all(|(i, d)| canonical(i, d)) {
            return Err(bad(
                "unexpected UMEM frame layout (data must start 256 bytes into each frame)".into(),
            ));
        }
        let mut d0 = first;
        // SAFETY: frame 0 is in no ring yet (the UMEM was just created);
        // the slice is only used for its address.
        let data0 = unsafe { umem.data_mut(&mut d0) }
            .contents_mut()
            .as_mut_ptr();
        let base = NonNull::new(data0.wrapping_sub(first.addr()))
            .ok_or_else(|| bad("the UMEM mapping is at address 0".into()))?;
        Ok(AfxdpUmem {
            inner: Arc::new(Shared {
                _owner: owner,
                umem,
                descs: descs.into_boxed_slice(),
                base,
                frames,
                fill_descs,
                comp_descs,
                claimed: AtomicBool::new(false),
            }),
        })
    }

    /// A UMEM sized for a polling thread ([`THREAD_UMEM_FRAMES`], rings of 2048).
    pub fn for_thread() -> Result<AfxdpUmem, AfxdpError> {
        AfxdpUmem::for_thread_of(THREAD_UMEM_FRAMES)
    }

    /// A polling thread's UMEM of `frames` frames, rings of 2048.
    pub fn for_thread_of(frames: u32) -> Result<AfxdpUmem, AfxdpError> {
        let d = super::options::DEFAULT_RING_DESCS;
        AfxdpUmem::new(frames, d, d)
    }

    /// Frames in the UMEM.
    pub fn frames(&self) -> u32 {
        self.inner.frames
    }

    /// Entries of each socket's fill ring.
    pub fn fill_descs(&self) -> u32 {
        self.inner.fill_descs
    }

    /// Entries of each socket's completion ring.
    pub fn comp_descs(&self) -> u32 {
        self.inner.comp_descs
    }

    /// True when both handles are the same region.
    pub fn same(&self, other: &AfxdpUmem) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// True once a pool adopted the region.
    pub fn is_claimed(&self) -> bool {
        self.inner.claimed.load(Ordering::Acquire)
    }

    /// The xsk-rs UMEM (socket creation and frame access).
    pub(super) fn umem(&self) -> &Umem {
        &self.inner.umem
    }

    /// The canonical descriptor of frame `idx`.
    #[inline(always)]
    pub(super) fn desc(&self, idx: u32) -> Option<FrameDesc> {
        self.inner.descs.get(idx as usize).copied()
    }

    /// Make `pool` the owner of every frame of this UMEM. False when the
    /// pool already owns a UMEM or this one already has an owner.
    pub fn adopt_into(&self, pool: &mut PacketPool) -> bool {
        if pool.has_frames() {
            return false;
        }
        if self
            .inner
            .claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        const _: () = assert!(FRAME_SIZE as usize >= UMEM_HEADROOM + BUF_CAP);
        let keep: Arc<dyn std::any::Any + Send + Sync> = Arc::new(self.clone());
        // SAFETY: the mapping is `frames * FRAME_SIZE` bytes at `base`, kept
        // alive by the AfxdpUmem clone in `keep`; `claimed` makes this pool
        // its only owner; sockets on it get frames only from this pool
        // (AfxdpPort), and FRAME_SIZE satisfies the size bounds (asserted).
        let adopted = unsafe {
            pool.adopt_frames(
                self.inner.base,
                FRAME_SIZE as usize,
                self.inner.frames,
                Some(keep),
            )
        };
        if !adopted {
            self.inner.claimed.store(false, Ordering::Release);
        }
        adopted
    }

    /// The UMEM `pool` adopted, if any.
    pub fn of_pool(pool: &PacketPool) -> Option<AfxdpUmem> {
        pool.frames_owner()?.downcast_ref::<AfxdpUmem>().cloned()
    }
}

/// Create the UMEM and its owner socket in a private network namespace.
/// Runs on a thread of its own, which leaves the namespace when it ends
/// (`unshare` moves only the calling thread).
fn create_owned(
    config: UmemConfig,
    frames: NonZeroU32,
) -> Result<(Umem, Vec<FrameDesc>, Owner), AfxdpError> {
    let bad = |what: String| AfxdpError::Umem(what);
    // SAFETY: unshare(2) changes only this thread's network namespace; the
    // thread makes nothing but the UMEM and its owner socket and then ends.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(bad(format!(
            "creating the private network namespace of a UMEM's owner socket: {e} \
             (AF_XDP ports need root, or CAP_SYS_ADMIN besides CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF)"
        )));
    }
    let (umem, descs) = Umem::new(config, frames, false).map_err(|e| {
        bad(format!(
            "creating a UMEM of {frames} frames: {e}{}",
            source_text(&e)
        ))
    })?;
    let ring = QueueSize::new(OWNER_RING).map_err(|e| bad(format!("owner ring: {e}")))?;
    let cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | BindFlags::XDP_COPY)
        .build();
    let lo: Interface = "lo"
        .parse()
        .map_err(|_| bad("interface name `lo`".into()))?;
    // SAFETY: the first socket on a fresh UMEM, program loading inhibited
    // (xsk-rs's requirement concerns an already bound pair).
    match unsafe { Socket::new(cfg, &umem, &lo, 0) } {
        Ok((tx, rx, Some((fq, cq)))) => Ok((
            umem,
            descs,
            Owner {
                _tx: tx,
                _rx: rx,
                _fq: fq,
                _cq: cq,
            },
        )),
        Ok((_, _, None)) => Err(bad(
            "the UMEM's owner socket got no fill and completion rings".into(),
        )),
        Err(e) => Err(bad(format!(
            "binding the UMEM's owner socket: {e}{}",
            source_text(&e)
        ))),
    }
}

/// The io::Error behind an xsk-rs error, as text (xsk-rs's Display omits it).
pub(super) fn source_text(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(s) => format!(": {s}"),
        None => String::new(),
    }
}
