//! AF_XDP ports: the switch sends and receives on a kernel interface through
//! an AF_XDP socket bound to one of its queues (kernel
//! Documentation/networking/af_xdp.rst), as OVS's `type=afxdp` does.
//!
//! **Buffers: the polling thread's UMEM, zero-copy between its ports.** Every
//! AF_XDP port served by one polling thread binds its socket to that thread's
//! [`AfxdpUmem`], whose frames the thread's
//! [`PacketPool`] owns (see `umem.rs` and `packet/buf.rs` for the books).
//! - rx: the kernel's XDP program (switchd's own, fastpath.rs, attached by the
//!   interface's first socket; libxdp's default program is never loaded)
//!   redirects each frame of the queue into a UMEM frame userspace put
//!   on the fill ring; [`AfxdpPort::rx_batch`] turns each rx descriptor into
//!   a [`Packet`] that *is* that frame (no copy) and tops the fill ring up
//!   from the pool's free frames.
//! - tx of a packet that is a frame of the same UMEM (received on any AF_XDP
//!   port of this thread): its descriptor goes straight onto this socket's tx
//!   ring (counted `tx_zerocopy`); the frame comes back on this socket's
//!   completion ring, which returns it to the pool's free list. A frame whose
//!   data start moved (a pushed or popped header) is first moved back to the
//!   canonical offset inside the frame (xsk-rs posts only canonical
//!   addresses).
//! - tx of any other packet (a heap packet from a tap or memory port, a
//!   datapath copy for a multi-output action, a frame handed over from
//!   another thread, which arrives as a heap copy): copied into a free frame
//!   (counted `tx_copied`), as a NIC driver would DMA it.
//! - A packet the datapath drops, or sends to a port that keeps or copies
//!   packets, goes back to the pool and its frame to the free list.
//!
//! In veth copy mode the kernel still copies between the skb and the UMEM at
//! rx and tx; what zero-copy removes is the userspace copy in between.
//!
//! **Joining and leaving a thread.** A port is opened (bound) on the control
//! thread, on the UMEM of the polling thread it is assigned to, with empty
//! rings. [`Port::attach`] on the polling thread gives it an identity in the
//! pool's books and fills its fill ring. [`Port::detach`] (port deleted or
//! moving to another thread) closes the socket, so the kernel lets go of
//! every frame in its four rings, and sweeps exactly those frames back to the
//! pool. A port moved by `pmd-rxq-rebalance` gets its socket re-created on
//! the target thread's UMEM by the control thread between the two
//! ([`Port::move_to_umem`]); one that still joins a thread whose UMEM is
//! not the one it is bound to re-creates its socket during `attach`
//! (control-path syscalls once, never per packet). If that fails (the
//! interface vanished) the port is marked down. A deleted port's queue is
//! free again at once: port sockets are never the UMEM's first socket,
//! which libxdp keeps bound for the UMEM's life (see the owner socket in
//! `umem.rs`).
//!
//! Syscalls follow `XDP_USE_NEED_WAKEUP` (af_xdp.rst "XDP_USE_NEED_WAKEUP
//! bind flag"): the rx path polls the socket only when it found nothing and
//! the fill ring's flag asks for a wakeup; the tx path calls `sendto` once per
//! batch of at most 32 descriptors, and only when the tx ring's flag is set.
//! No path makes a syscall per packet. In copy mode the kernel transmits only
//! from `sendto`, so there the tx flag is always set: one syscall per batch.
//! A kick the kernel refuses for now (`EAGAIN`: its copy-mode budget of 32
//! frames per call, net/xdp/xsk.c `TX_BATCH_SIZE`, or a full completion
//! ring) is retried by [`Port::tx_flush`] at the end of the same polling
//! iteration, where the polling loop counts it as busy time. Every kick and
//! every rx wakeup is counted in the port's `tx_kicks` / `rx_wakeups`
//! (`flowctl dump-ports`), so kernel entries per frame are visible.
//!
//! An interface that vanishes unbinds the socket (the kernel's xsk_notifier
//! sets `ENETDOWN` as the socket error on `NETDEV_UNREGISTER`; `sendto` then
//! fails with `ENXIO`). The port notices on its next transmit, or within a
//! few thousand idle receive polls by reading `SO_ERROR`, marks itself down
//! for good ([`AfxdpPort::is_up`], and the shared flag from
//! [`AfxdpPort::link_state`]) and from then on counts every frame handed to
//! it as a `port_down` drop. It never panics and never blocks.
//!
//! This module must never allocate, lock or make a syscall per packet, and
//! never let a UMEM frame be both in a kernel ring and in userspace.

pub mod fastpath;
pub mod offload;
pub mod options;
pub mod umem;
pub mod xdp_prog;

pub use options::{AfxdpOptions, XdpMode};
pub use umem::{fill_budget, fill_frames, fill_reserve, AfxdpUmem};
pub use xdp_prog::xdp_program_ids;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig};
use xsk_rs::socket::{RxQueue, Socket, TxQueue};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::{CompQueue, FillQueue};

use super::{Counter, DropReason, Port, PortCounters};
use crate::packet::buf::{MAX_FRAME, UMEM_HEADROOM};
use crate::packet::{Packet, PacketPool};
use umem::FRAME_SIZE;

/// Descriptors moved per ring operation (af_xdp.rst examples and OVS use 32;
/// the kernel's copy-mode transmit handles at most 32 per `sendto`).
pub const BATCH: usize = 32;

/// Empty receive polls between two checks of the socket's error state.
const IDLE_CHECK_EVERY: u32 = 1024;

/// Why an AF_XDP port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    /// The options were invalid.
    #[error("{0}")]
    Options(String),
    /// No interface of that name exists in this network namespace.
    #[error("afxdp: no interface named `{0}` (create it first, or check the namespace)")]
    NoSuchInterface(String),
    /// This process already has a socket on that interface queue.
    #[error("afxdp: {ifname} queue {queue} is already bound by another port of this switch")]
    Busy {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
    },
    /// An XDP program already on the interface could not be removed.
    #[error("afxdp: could not remove the XDP program already on {ifname}: {err}")]
    StaleProgram {
        /// Interface.
        ifname: String,
        /// The netlink error.
        err: std::io::Error,
    },
    /// The UMEM could not be created, or has too few free frames.
    #[error("afxdp: {0}")]
    Umem(String),
    /// The socket could not be created or bound in any allowed mode.
    #[error("afxdp: cannot bind {ifname} queue {queue}: {detail}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// What each attempted mode reported.
        detail: String,
    },
}

/// AF_XDP-specific state shared with the control thread: link state and
/// how many wakeup syscalls the port made (to check that need_wakeup works).
#[derive(Debug)]
pub struct AfxdpStats {
    /// True while the port can send and receive. Cleared when the interface
    /// vanished (for good) or is administratively down.
    pub link_up: Arc<AtomicBool>,
    /// `poll` calls made because the fill ring asked for a wakeup.
    pub rx_wakeups: Counter,
    /// `sendto` calls made because the tx ring asked for a wakeup.
    pub tx_wakeups: Counter,
    /// Transmit batches posted to the tx ring.
    pub tx_batches: Counter,
    /// Frames whose data start had moved (pushed/popped header) and were
    /// moved back inside their frame before a zero-copy transmit.
    pub tx_realigned: Counter,
    /// Times the socket was re-created on another UMEM (the port moved to
    /// another polling thread).
    pub rebinds: Counter,
}

/// The rings of one bound socket. Dropping all four deletes the socket.
#[derive(Debug)]
struct Rings {
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
}

/// One AF_XDP socket on one interface queue, as a switch port.
#[derive(Debug)]
pub struct AfxdpPort {
    opts: AfxdpOptions,
    mode: XdpMode,
    zerocopy: bool,
    // Declared before `umem` and `claim`; taken in Drop so the socket is
    // deleted before the UMEM handle goes and the program is detached.
    rings: Option<Rings>,
    /// The UMEM the socket is bound to.
    umem: AfxdpUmem,
    /// This socket's identity in the books of the pool it is attached to
    /// (0: not attached; it then holds no frame).
    me: u32,
    /// Frames the kernel holds for receiving (fill ring + rx ring).
    in_fill: usize,
    /// Target for `in_fill`: the fill ring's size.
    fill_target: usize,
    /// Frames posted on the tx ring not yet back on the completion ring.
    tx_outstanding: usize,
    scratch: Vec<FrameDesc>,
    idx: Vec<u32>,
    /// A `sendto` left frames in the tx ring (EAGAIN/EBUSY/ENOBUFS): kick again.
    kick_pending: bool,
    /// The socket is unbound (interface vanished): nothing will ever work again.
    dead: bool,
    idle_polls: u32,
    counters: Arc<PortCounters>,
    stats: Arc<AfxdpStats>,
    /// No other socket of this process used the interface when it was claimed.
    sole: bool,
    claim: Option<xdp_prog::Claim>,
    /// Kernel drops (`rx_no_fill`, `rx_ring_full`) counted by the sockets
    /// this port closed (the kernel's counters start at 0 on each socket).
    kernel_base: KernelDrops,
}

/// The receive drops the kernel counts per AF_XDP socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// Frames dropped because the fill ring was empty
    /// (`rx_fill_ring_empty_descs`; copy mode counts one per frame).
    pub no_fill: u64,
    /// Frames dropped because the rx ring was full (`rx_ring_full`).
    pub ring_full: u64,
}

/// `struct xdp_statistics` (include/uapi/linux/if_xdp.h), with the fields
/// Linux 5.9 added. Only the two receive drop counters are read; the rest
/// is there for the layout.
#[repr(C)]
#[derive(Debug, Default)]
#[allow(dead_code)]
struct XdpStatistics {
    rx_dropped: u64,
    rx_invalid_descs: u64,
    tx_invalid_descs: u64,
    rx_ring_full: u64,
    rx_fill_ring_empty_descs: u64,
    tx_ring_empty_descs: u64,
}

/// The kernel's receive drop counters of socket `fd`
/// (`getsockopt(SOL_XDP, XDP_STATISTICS)`, net/xdp/xsk.c `xsk_getsockopt`).
/// None when the call fails or the kernel predates the 5.9 fields.
fn kernel_drops(fd: std::os::fd::RawFd) -> Option<KernelDrops> {
    let mut st = XdpStatistics::default();
    let mut len = std::mem::size_of::<XdpStatistics>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `st`, a repr(C)
    // struct of that size whose every bit pattern is valid.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut st as *mut XdpStatistics).cast(),
            &mut len,
        )
    };
    if ret != 0 || (len as usize) < std::mem::size_of::<XdpStatistics>() {
        return None;
    }
    Some(KernelDrops {
        no_fill: st.rx_fill_ring_empty_descs,
        ring_full: st.rx_ring_full,
    })
}

/// What a wakeup syscall told us.
enum Kick {
    Done,
    Retry,
    LinkDown,
    Gone,
    Error,
}

impl AfxdpPort {
    /// Open a port with a UMEM of its own (`opts.umem_frames` frames); the
    /// pool it is first used with adopts that UMEM.
    pub fn open(opts: &AfxdpOptions) -> Result<AfxdpPort, AfxdpError> {
        // Check the interface before allocating anything.
        if xdp_prog::ifindex(&opts.ifname).is_none() {
            return Err(AfxdpError::NoSuchInterface(opts.ifname.clone()));
        }
        let umem = AfxdpUmem::new(opts.umem_frames, opts.n_rxq_desc, opts.n_txq_desc)?;
        AfxdpPort::open_shared(opts, &umem)
    }

    /// Open a port on a UMEM shared with other ports of the same polling
    /// thread (the thread's pool owns its frames; the port takes them when
    /// it is attached). The UMEM's fill and completion ring sizes apply
    /// (`n-rxq-desc` sizes only the rx ring).
    pub fn open_shared(opts: &AfxdpOptions, umem: &AfxdpUmem) -> Result<AfxdpPort, AfxdpError> {
        let ifindex = xdp_prog::ifindex(&opts.ifname)
            .ok_or_else(|| AfxdpError::NoSuchInterface(opts.ifname.clone()))?;
        let fill_target = umem::fill_frames(umem.fill_descs(), opts.n_rxq_desc) as usize;
        if umem.frames() as usize <= fill_target {
            return Err(AfxdpError::Umem(format!(
                "a UMEM of {} frames leaves no frame for transmit (the fill ring takes {fill_target})",
                umem.frames()
            )));
        }
        let claim = xdp_prog::Claim::new(ifindex, opts.queue).map_err(|e| match e {
            xdp_prog::ClaimError::Busy => AfxdpError::Busy {
                ifname: opts.ifname.clone(),
                queue: opts.queue,
            },
            xdp_prog::ClaimError::Detach(err) => AfxdpError::StaleProgram {
                ifname: opts.ifname.clone(),
                err,
            },
        })?;
        let sole = claim.first();
        let (rings, mode, zerocopy) = bind_retrying(opts, umem, sole)?;
        Ok(AfxdpPort {
            opts: opts.clone(),
            mode,
            zerocopy,
            rings: Some(rings),
            umem: umem.clone(),
            me: 0,
            in_fill: 0,
            fill_target,
            tx_outstanding: 0,
            scratch: vec![FrameDesc::default(); BATCH.max(64)],
            idx: vec![0; BATCH.max(64)],
            kick_pending: false,
            dead: false,
            idle_polls: 0,
            counters: Arc::new(PortCounters::default()),
            stats: Arc::new(AfxdpStats {
                link_up: Arc::new(AtomicBool::new(true)),
                rx_wakeups: Counter::default(),
                tx_wakeups: Counter::default(),
                tx_batches: Counter::default(),
                tx_realigned: Counter::default(),
                rebinds: Counter::default(),
            }),
            sole,
            claim: Some(claim),
            kernel_base: KernelDrops::default(),
        })
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.opts.ifname
    }

    /// The port's options.
    pub fn options(&self) -> &AfxdpOptions {
        &self.opts
    }

    /// Queue id.
    pub fn queue(&self) -> u32 {
        self.opts.queue
    }

    /// The mode the socket actually bound in (`Native` or `Generic`; a
    /// best-effort request resolves to one of them) and whether it is zero-copy.
    pub fn attached_mode(&self) -> (XdpMode, bool) {
        (self.mode, self.zerocopy)
    }

    /// True while the port can send and receive.
    pub fn is_up(&self) -> bool {
        self.stats.link_up.load(Ordering::Relaxed)
    }

    /// The link flag the control thread reads (false once the interface
    /// vanished, or while it is administratively down).
    pub fn link_state(&self) -> Arc<AtomicBool> {
        self.stats.link_up.clone()
    }

    /// Link state and wakeup counts, shared with the control thread.
    pub fn stats(&self) -> &Arc<AfxdpStats> {
        &self.stats
    }

    /// The UMEM the socket is bound to.
    pub fn umem(&self) -> &AfxdpUmem {
        &self.umem
    }

    /// Frames this socket holds in the kernel: `(fill + rx rings, tx +
    /// completion rings)` (for tests and diagnostics).
    pub fn frames_in_kernel(&self) -> (usize, usize) {
        (self.in_fill, self.tx_outstanding)
    }

    /// The kernel's receive drops on this port's sockets so far (the
    /// closed ones' and the current one's). Control path: a syscall.
    pub fn kernel_drops(&self) -> KernelDrops {
        let now = self
            .rings
            .as_ref()
            .and_then(|r| kernel_drops(r.rx.fd().as_raw_fd()))
            .unwrap_or_default();
        KernelDrops {
            no_fill: self.kernel_base.no_fill + now.no_fill,
            ring_full: self.kernel_base.ring_full + now.ring_full,
        }
    }

    /// Publish [`Self::kernel_drops`] as the `rx_no_fill` and
    /// `rx_ring_full` drop counters.
    fn publish_kernel_drops(&mut self) -> KernelDrops {
        let k = self.kernel_drops();
        self.counters.rx_drops[DropReason::RxNoFill.index()].set(k.no_fill);
        self.counters.rx_drops[DropReason::RxRingFull.index()].set(k.ring_full);
        k
    }

    /// Close the socket (dropping its rings), keeping its kernel drop counts.
    fn close_socket(&mut self) {
        if self.rings.is_some() {
            self.kernel_base = self.publish_kernel_drops();
        }
        self.rings = None;
    }

    fn set_link(&self, up: bool) {
        self.stats.link_up.store(up, Ordering::Relaxed);
    }

    fn mark_dead(&mut self) {
        self.dead = true;
        self.set_link(false);
    }

    /// Close the socket and bind a new one on `umem` (a port moving to a
    /// thread with another UMEM). Control path only.
    fn rebind(&mut self, umem: AfxdpUmem) {
        self.close_socket();
        self.stats.rebinds.add(1);
        match bind_retrying(&self.opts, &umem, self.sole) {
            Ok((rings, mode, zc)) => {
                self.rings = Some(rings);
                (self.mode, self.zerocopy) = (mode, zc);
                self.fill_target =
                    umem::fill_frames(umem.fill_descs(), self.opts.n_rxq_desc) as usize;
            }
            Err(e) => {
                eprintln!(
                    "afxdp {} queue {}: re-creating the socket on the new thread's UMEM failed, port down: {e}",
                    self.opts.ifname, self.opts.queue
                );
                self.mark_dead();
            }
        }
        self.umem = umem;
    }

    /// Top the fill ring up to its target from the pool's free frames.
    fn refill(&mut self, pool: &mut PacketPool) {
        // Leave the reserve free for transmit copies (umem::fill_reserve).
        let reserve = fill_reserve(self.umem.frames()) as usize;
        let Some(r) = self.rings.as_mut() else { return };
        while self.in_fill < self.fill_target {
            let want = (self.fill_target - self.in_fill).min(self.idx.len());
            let n = pool.frames_to_fill(self.me, &mut self.idx[..want], reserve);
            if n == 0 {
                break;
            }
            for (d, i) in self.scratch.iter_mut().zip(&self.idx[..n]) {
                // Frames of the pool are frames of this UMEM (attach checks).
                *d = self.umem.desc(*i).unwrap_or_default();
            }
            // SAFETY: the frames were free in the pool's books, so in no ring
            // and no packet; they belong to the UMEM the fill ring belongs to.
            let done = unsafe { r.fq.produce(&self.scratch[..n]) };
            if done < n {
                // produce is all-or-nothing: give back what was not posted.
                for i in &self.idx[done..n] {
                    pool.fill_to_free(self.me, *i);
                }
                self.in_fill += done;
                break;
            }
            self.in_fill += n;
        }
    }

    /// Drain the completion ring: transmitted frames become free again.
    fn reclaim(&mut self, pool: &mut PacketPool) {
        let Some(r) = self.rings.as_mut() else { return };
        while self.tx_outstanding > 0 {
            // SAFETY: the completion ring only returns frames this socket
            // posted on its tx ring, which belong to the ring's UMEM.
            let n = unsafe { r.cq.consume(&mut self.scratch) };
            if n == 0 {
                break;
            }
            for d in &self.scratch[..n] {
                let idx = u32::try_from(d.addr() / FRAME_SIZE as usize).unwrap_or(u32::MAX);
                pool.tx_complete(self.me, idx);
            }
            self.tx_outstanding = self.tx_outstanding.saturating_sub(n);
        }
    }

    /// `sendto` on the socket: the tx wakeup (af_xdp.rst need_wakeup).
    fn kick(&mut self) -> Kick {
        let Some(r) = self.rings.as_ref() else {
            return Kick::Gone;
        };
        self.stats.tx_wakeups.add(1);
        self.counters.tx_kicks.add(1);
        // SAFETY: a zero-length sendto with null buffers and address is the
        // documented AF_XDP tx wakeup; the fd is open while `r` lives.
        let ret = unsafe {
            libc::sendto(
                r.tx.fd().as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if ret >= 0 {
            return Kick::Done;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Kick::Retry,
            Some(libc::ENETDOWN) => Kick::LinkDown,
            Some(libc::ENXIO) => Kick::Gone,
            _ => Kick::Error,
        }
    }

    /// Read and clear the socket error: `ENETDOWN` there means the interface
    /// was unregistered and the socket unbound (net/xdp/xsk.c xsk_notifier).
    fn check_socket_error(&mut self) {
        let Some(r) = self.rings.as_ref() else { return };
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `err`.
        let ret = unsafe {
            libc::getsockopt(
                r.rx.fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if ret == 0 && (err == libc::ENETDOWN || err == libc::ENXIO) {
            self.mark_dead();
        }
    }

    /// Drop a whole batch as `port_down`, returning the buffers.
    fn drop_all_down(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) {
        let n = pkts.len() as u64;
        for p in pkts.drain(..) {
            pool.put(p);
        }
        self.counters.tx_drop(DropReason::PortDown, n);
    }

    /// Post `scratch[..n]` (frames `idx[..n]`) on the tx ring and kick the
    /// kernel if it asks. Returns how the kick went and how many were posted.
    fn post(&mut self, pool: &mut PacketPool, n: usize) -> (Kick, usize) {
        if n == 0 {
            return (Kick::Done, 0);
        }
        let Some(r) = self.rings.as_mut() else {
            for i in &self.idx[..n] {
                pool.tx_complete(self.me, *i);
            }
            return (Kick::Gone, 0);
        };
        // SAFETY: frames of this UMEM in state `tx` for this socket: in no
        // other ring and in no packet.
        let posted = unsafe { r.tx.produce(&self.scratch[..n]) };
        if posted < n {
            // `nb_free` said there was room; never lose frames if the kernel
            // disagrees.
            for i in &self.idx[posted..n] {
                pool.tx_complete(self.me, *i);
            }
        }
        if posted == 0 {
            return (Kick::Done, 0);
        }
        self.tx_outstanding += posted;
        self.stats.tx_batches.add(1);
        let wake = r.tx.needs_wakeup();
        (if wake { self.kick() } else { Kick::Done }, posted)
    }
}

/// [`bind`], retried for up to two seconds while the kernel says the queue
/// is busy: it frees a closed socket's hold on its queue after an RCU grace
/// period, in a deferred work item (net/xdp/xsk_buff_pool.c
/// `xp_release_deferred`), so a bind right after a port on the same queue
/// was deleted (or moved to another thread) may see EBUSY for a while:
/// usually not at all, ~30 ms now and then, longer on a loaded machine.
/// A queue held by another process is reported after those two seconds.
/// Control path only.
fn bind_retrying(
    opts: &AfxdpOptions,
    umem: &AfxdpUmem,
    sole: bool,
) -> Result<(Rings, XdpMode, bool), AfxdpError> {
    let mut res = bind(opts, umem, sole);
    for _ in 0..400 {
        match &res {
            Err(AfxdpError::Bind { detail, .. }) if detail.contains("busy") => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                res = bind(opts, umem, sole);
            }
            _ => break,
        }
    }
    res
}

/// Create and bind the socket in the mode(s) `opts.xdp_mode` allows.
///
/// `sole` says no other socket of this process uses the interface, so a
/// program a failed attempt left behind may be removed before the next mode.
fn bind(
    opts: &AfxdpOptions,
    umem: &AfxdpUmem,
    sole: bool,
) -> Result<(Rings, XdpMode, bool), AfxdpError> {
    let attempts: &[(XdpMode, bool)] = match opts.xdp_mode {
        XdpMode::BestEffort => &[(XdpMode::Native, false), (XdpMode::Generic, false)],
        XdpMode::NativeWithZerocopy => &[(XdpMode::Native, true)],
        XdpMode::Native => &[(XdpMode::Native, false)],
        XdpMode::Generic => &[(XdpMode::Generic, false)],
    };
    let fail = |detail: String| AfxdpError::Bind {
        ifname: opts.ifname.clone(),
        queue: opts.queue,
        detail,
    };
    let iface: Interface = opts
        .ifname
        .parse()
        .map_err(|_| fail("interface name contains a NUL byte".into()))?;
    let rxq = QueueSize::new(opts.n_rxq_desc).map_err(|e| fail(e.to_string()))?;
    let txq = QueueSize::new(opts.n_txq_desc).map_err(|e| fail(e.to_string()))?;
    let ifindex = xdp_prog::ifindex(&opts.ifname)
        .ok_or_else(|| AfxdpError::NoSuchInterface(opts.ifname.clone()))?;
    let mut errors = Vec::new();
    for &(mode, zc) in attempts {
        // switchd's XDP program (fastpath.rs) replaces libxdp's default one:
        // attached here in this mode by the interface's first socket, shared
        // by the others (whatever mode it got), never loaded by libxdp.
        let prog = match xdp_prog::program_for(ifindex, mode, opts.offload_entries) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{}: {e}", mode_name(mode, zc)));
                if sole {
                    let _ = xdp_prog::detach_all(ifindex);
                }
                continue;
            }
        };
        let copy = if zc {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        };
        let config = SocketConfig::builder()
            .rx_queue_size(rxq)
            .tx_queue_size(txq)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | copy)
            .build();
        // SAFETY: program loading is inhibited (xsk-rs's requirement for a
        // UMEM with a socket on the same pair); the Claim taken by the
        // caller guarantees this process has no other socket there.
        match unsafe { Socket::new(config, umem.umem(), &iface, opts.queue) } {
            Ok((tx, rx, Some((fq, cq)))) => {
                // A socket sharing the thread's UMEM takes the bind flags of
                // the UMEM's owner socket (copy mode, umem.rs), not its own:
                // ask the kernel what it got.
                let got_zc = socket_zerocopy(rx.fd().as_raw_fd());
                if zc && !got_zc {
                    drop((tx, rx, fq, cq));
                    errors.push(format!(
                        "{}: the socket shares its polling thread's UMEM, whose owner \
                         socket is copy mode, so the kernel bound it in copy mode \
                         (use xdp-mode=native or best-effort)",
                        mode_name(mode, zc)
                    ));
                } else {
                    match prog.add_socket(opts.queue, rx.fd().as_raw_fd()) {
                        Ok(()) => return Ok((Rings { tx, rx, fq, cq }, prog.mode(), got_zc)),
                        Err(e) => {
                            drop((tx, rx, fq, cq));
                            errors.push(format!("{}: {e}", mode_name(mode, zc)));
                        }
                    }
                }
            }
            Ok((_, _, None)) => {
                errors.push(format!(
                    "{}: the UMEM is already bound to this queue",
                    mode_name(mode, zc)
                ));
            }
            Err(e) => {
                let mut msg = format!("{}: {e}{}", mode_name(mode, zc), umem::source_text(&e));
                if let Some(io) =
                    std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>())
                {
                    match io.raw_os_error() {
                        Some(libc::EPERM) => {
                            msg.push_str(" (needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF)")
                        }
                        Some(libc::EINVAL) => msg.push_str(" (is the queue id valid?)"),
                        Some(libc::EBUSY) => msg.push_str(" (another program or socket holds it)"),
                        _ => {}
                    }
                }
                errors.push(msg);
            }
        }
        // A failed bind of the interface's only socket takes the program
        // down before the next mode, unless another socket of ours uses it.
        drop(prog);
        if sole {
            xdp_prog::unload(ifindex);
            let _ = xdp_prog::detach_all(ifindex);
        }
    }
    Err(fail(errors.join("; ")))
}

/// True when the kernel bound socket `fd` in zero-copy mode
/// (`getsockopt(XDP_OPTIONS)`, include/uapi/linux/if_xdp.h).
fn socket_zerocopy(fd: std::os::fd::RawFd) -> bool {
    let mut opts: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `opts` (struct
    // xdp_options is one __u32).
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut u32).cast(),
            &mut len,
        )
    };
    ret == 0 && opts & libc::XDP_OPTIONS_ZEROCOPY != 0
}

fn mode_name(mode: XdpMode, zc: bool) -> &'static str {
    match (mode, zc) {
        (XdpMode::Native, true) => "native-with-zerocopy",
        (m, _) => m.name(),
    }
}

impl Port for AfxdpPort {
    fn attach(&mut self, pool: &mut PacketPool) {
        if self.me != 0 {
            return;
        }
        match AfxdpUmem::of_pool(pool) {
            Some(u) if u.same(&self.umem) => {}
            Some(u) => self.rebind(u),
            None => {
                if !self.umem.adopt_into(pool) {
                    // Our UMEM belongs to another thread's pool (a move) and
                    // this thread has none yet: give it one of the same size.
                    let fresh = AfxdpUmem::new(
                        self.umem.frames(),
                        self.umem.fill_descs(),
                        self.umem.comp_descs(),
                    );
                    match fresh {
                        Ok(u) if u.adopt_into(pool) => self.rebind(u),
                        Ok(_) => self.mark_dead(),
                        Err(e) => {
                            eprintln!("afxdp {}: {e}; port down", self.opts.ifname);
                            self.mark_dead();
                        }
                    }
                }
            }
        }
        if self.rings.is_none() && !self.dead {
            // Detached earlier on this thread: a new socket on the same UMEM.
            self.rebind(self.umem.clone());
        }
        self.me = pool.new_frame_user();
        (self.in_fill, self.tx_outstanding, self.kick_pending) = (0, 0, false);
        self.refill(pool);
    }

    fn detach(&mut self, pool: &mut PacketPool) {
        if self.me == 0 {
            return;
        }
        // Deleting the socket makes the kernel let go of its four rings;
        // then every frame they held is this socket's to sweep back.
        self.close_socket();
        pool.sweep(self.me);
        self.me = 0;
        (self.in_fill, self.tx_outstanding, self.kick_pending) = (0, 0, false);
    }

    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        if self.me == 0 {
            self.attach(pool);
        }
        if self.dead {
            return 0;
        }
        self.reclaim(pool);
        let Some(r) = self.rings.as_mut() else {
            return 0;
        };
        let (mut got, mut bytes, mut seen) = (0usize, 0u64, 0usize);
        let (mut oversize, mut bad) = (0u64, 0u64);
        let fs = FRAME_SIZE as usize;
        while got < max {
            let want = (max - got).min(BATCH);
            // SAFETY: the rx ring only returns frames this socket put on its
            // fill ring, all from the UMEM this ring belongs to.
            let n = unsafe { r.rx.consume(&mut self.scratch[..want]) };
            if n == 0 {
                break;
            }
            seen += n;
            self.in_fill = self.in_fill.saturating_sub(n);
            for d in &self.scratch[..n] {
                let (addr, len) = (d.addr(), d.lengths().data());
                let idx = u32::try_from(addr / fs).unwrap_or(u32::MAX);
                if len > MAX_FRAME {
                    oversize += 1;
                    pool.fill_to_free(self.me, idx);
                    continue;
                }
                // The frame becomes the packet: no copy.
                match pool.rx_frame(self.me, idx, addr % fs, len) {
                    Some(p) => {
                        bytes += len as u64;
                        out.push(p);
                        got += 1;
                    }
                    None => bad += 1,
                }
            }
            if n < want {
                break;
            }
        }
        if got > 0 {
            self.counters.rx_packets.add(got as u64);
            self.counters.rx_bytes.add(bytes);
        }
        if oversize > 0 {
            self.counters.rx_drop(DropReason::Oversize, oversize);
        }
        if bad > 0 {
            self.counters.rx_errors.add(bad);
        }
        if self.in_fill < self.fill_target {
            self.refill(pool);
        }
        if seen == 0 {
            // need_wakeup: only when the ring is empty and the kernel asks.
            let (fd, wake) = match self.rings.as_ref() {
                Some(r) => (r.rx.fd().as_raw_fd(), r.fq.needs_wakeup()),
                None => return got,
            };
            if wake {
                self.stats.rx_wakeups.add(1);
                self.counters.rx_wakeups.add(1);
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout (never blocks).
                unsafe { libc::poll(&mut pfd, 1, 0) };
            }
            self.idle_polls += 1;
            if self.idle_polls >= IDLE_CHECK_EVERY {
                self.idle_polls = 0;
                self.check_socket_error();
            }
        } else {
            self.idle_polls = 0;
        }
        got
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        if self.me == 0 {
            self.attach(pool);
        }
        if self.dead {
            self.drop_all_down(pkts, pool);
            return 0;
        }
        if !self.is_up() {
            // Administratively down: probe once per batch, not per packet.
            match self.kick() {
                Kick::Done | Kick::Retry => self.set_link(true),
                Kick::Gone => self.mark_dead(),
                Kick::LinkDown | Kick::Error => {}
            }
            if !self.is_up() {
                self.drop_all_down(pkts, pool);
                return 0;
            }
        }
        self.reclaim(pool);
        let (mut sent, mut sent_bytes) = (0u64, 0u64);
        let (mut full, mut no_frame, mut down) = (0u64, 0u64, 0u64);
        let (mut zc, mut copied, mut realigned) = (0u64, 0u64, 0u64);
        let (mut n, mut room, mut bytes) = (0usize, 0usize, 0u64);
        let mut stopped = false;
        let total = pkts.len();
        for (i, mut p) in pkts.drain(..).enumerate() {
            if stopped {
                down += 1;
                pool.put(p);
                continue;
            }
            if n == 0 {
                let left = (total - i).min(BATCH);
                room = match self.rings.as_mut() {
                    Some(r) => (r.tx.nb_free(left as u32) as usize).min(left),
                    None => 0,
                };
            }
            if n >= room {
                full += 1;
                pool.put(p);
                continue;
            }
            let len = p.len();
            let idx = if pool.own_frame(&p).is_some() {
                // Zero-copy: the packet is a frame of this UMEM. Descriptors
                // start at the canonical offset; move the data there if a
                // header was pushed or popped (always fits: len <= BUF_CAP).
                if p.headroom() != UMEM_HEADROOM {
                    if !p.set_headroom(UMEM_HEADROOM) {
                        full += 1;
                        pool.put(p);
                        continue;
                    }
                    realigned += 1;
                }
                match pool.frame_to_tx(self.me, p) {
                    Ok((idx, _, _)) => {
                        zc += 1;
                        idx
                    }
                    Err(p) => {
                        pool.put(p);
                        continue;
                    }
                }
            } else {
                // Copy into a free frame of this UMEM.
                let Some(idx) = pool.free_to_tx(self.me) else {
                    no_frame += 1;
                    pool.put(p);
                    continue;
                };
                let Some(dst) = pool.frame_ptr(idx) else {
                    pool.tx_complete(self.me, idx);
                    no_frame += 1;
                    pool.put(p);
                    continue;
                };
                // SAFETY: frame `idx` is in state `tx` for this socket and not
                // yet posted: nobody else reads or writes it; UMEM_HEADROOM +
                // len <= UMEM_HEADROOM + BUF_CAP <= FRAME_SIZE.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        p.data().as_ptr(),
                        dst.as_ptr().add(UMEM_HEADROOM),
                        p.len(),
                    );
                }
                copied += 1;
                pool.put(p);
                idx
            };
            let mut d = self.umem.desc(idx).unwrap_or_default();
            // SAFETY: frame `idx` is this socket's (state `tx`, not posted
            // yet); the view is used only to set the descriptor's length
            // (capped at the frame's data capacity, 3840 >= len).
            unsafe { self.umem.umem().data_mut(&mut d) }
                .cursor()
                .set_pos(len);
            self.scratch[n] = d;
            self.idx[n] = idx;
            n += 1;
            bytes += len as u64;
            if n == room || i + 1 == total {
                let (outcome, posted) = self.post(pool, n);
                full += (n - posted) as u64;
                if posted < n {
                    bytes = 0;
                }
                match outcome {
                    Kick::Done | Kick::Error | Kick::Retry => {
                        if matches!(outcome, Kick::Error) {
                            self.counters.tx_errors.add(1);
                        }
                        if matches!(outcome, Kick::Retry) {
                            self.kick_pending = true;
                        }
                        sent += posted as u64;
                        sent_bytes += bytes;
                    }
                    Kick::LinkDown => {
                        self.set_link(false);
                        down += posted as u64;
                        stopped = true;
                    }
                    Kick::Gone => {
                        self.mark_dead();
                        down += posted as u64;
                        stopped = true;
                    }
                }
                (n, bytes) = (0, 0);
            }
        }
        // Frames a failed kick left in the tx ring are swept back when the
        // socket closes (detach); the port is down, so none are reused meanwhile.
        self.counters.tx_packets.add(sent);
        self.counters.tx_bytes.add(sent_bytes);
        self.counters.tx_zerocopy.add(zc);
        self.counters.tx_copied.add(copied);
        if realigned > 0 {
            self.stats.tx_realigned.add(realigned);
        }
        if full > 0 {
            self.counters.tx_drop(DropReason::TxRingFull, full);
        }
        if no_frame > 0 {
            self.counters.tx_drop(DropReason::PoolEmpty, no_frame);
        }
        if down > 0 {
            self.counters.tx_drop(DropReason::PortDown, down);
        }
        sent as usize
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }

    /// The kernel's drops for an empty fill ring or a full rx ring, read
    /// with one `getsockopt(XDP_STATISTICS)` (not per packet).
    fn publish_stats(&mut self) {
        self.publish_kernel_drops();
    }

    fn move_to_umem(&mut self, umem: &AfxdpUmem) -> bool {
        if self.me != 0 || self.dead {
            // Still attached (never the case after a release), or gone for
            // good: nothing to move.
            return false;
        }
        if !umem.same(&self.umem) {
            self.rebind(umem.clone());
        }
        !self.dead
    }

    fn moves_with_umem(&self) -> bool {
        true
    }

    /// Retry a kick the kernel refused for now (`EAGAIN`: the copy-mode
    /// transmit stopped after its per-call budget of 32 frames or found
    /// the completion ring full; `EBUSY`/`ENOBUFS`): once per iteration,
    /// after the completion ring was drained, so the frames left in the tx
    /// ring go out without waiting for this port's next transmit batch. The
    /// polling loop counts the syscall as busy time.
    fn tx_flush(&mut self, pool: &mut PacketPool, idle: bool) -> usize {
        let _ = idle;
        if !self.kick_pending || self.dead {
            return 0;
        }
        self.kick_pending = false;
        self.reclaim(pool);
        if !self.rings.as_ref().is_some_and(|r| r.tx.needs_wakeup()) {
            return 0;
        }
        match self.kick() {
            Kick::Retry => self.kick_pending = true,
            Kick::Gone => self.mark_dead(),
            Kick::LinkDown => self.set_link(false),
            Kick::Done | Kick::Error => {}
        }
        // One syscall: work to count, whatever it moved.
        1
    }
}

impl Drop for AfxdpPort {
    fn drop(&mut self) {
        // Delete the socket first (the kernel lets go of every frame of ours
        // in its rings), then release the interface (which detaches the
        // program when this was its last socket). Frames it held stay marked
        // in its pool's books unless it was detached first (the polling
        // thread always detaches before dropping a port).
        self.rings = None;
        self.claim = None;
    }
}
