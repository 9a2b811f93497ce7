//! AF_XDP ports: the switch sends and receives on a kernel interface through
//! an AF_XDP socket bound to one of its queues (kernel
//! Documentation/networking/af_xdp.rst), as OVS's `type=afxdp` does.
//!
//! Data enters through the rx ring: the kernel's XDP program (libxdp's
//! default, attached when the socket binds) redirects every frame of the
//! queue into UMEM frames that userspace handed it on the fill ring;
//! [`AfxdpPort::rx_batch`] copies each into a [`Packet`] from the thread's
//! pool and puts the frame straight back on the fill ring. Data leaves
//! through the tx ring: [`AfxdpPort::tx_batch`] copies each `Packet` into a
//! free UMEM frame, posts the descriptors, and kicks the kernel; frames come
//! back on the completion ring, drained on every call.
//!
//! **Current design: one copy each way.** A `Packet` owns a boxed buffer, so
//! frames are copied between UMEM and `Packet` at rx and tx, like a NIC's
//! DMA into host memory. Forwarding between two AF_XDP ports of one thread
//! without any copy would need `Packet` to be able to borrow a UMEM frame
//! (a buffer kind whose storage is a frame of the thread's shared
//! [`AfxdpUmem`], returned to the right fill ring or posted on another port's
//! tx ring when sent, with headroom taken from the frame's own headroom).
//!
//! Syscalls follow `XDP_USE_NEED_WAKEUP` (af_xdp.rst "XDP_USE_NEED_WAKEUP
//! bind flag"): the rx path polls the socket only when it found nothing and
//! the fill ring's flag asks for a wakeup; the tx path calls `sendto` once per
//! batch of at most 32 descriptors, and only when the tx ring's flag is set.
//! No path makes a syscall per packet. In copy mode the kernel transmits only
//! from `sendto`, so there the tx flag is always set: one syscall per batch.
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

pub mod options;
pub mod umem;
pub mod xdp_prog;

pub use options::{AfxdpOptions, XdpMode};
pub use umem::AfxdpUmem;
pub use xdp_prog::xdp_program_ids;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xsk_rs::config::{BindFlags, Interface, QueueSize, SocketConfig, XdpFlags};
use xsk_rs::socket::{RxQueue, Socket, TxQueue};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::{CompQueue, FillQueue};

use super::{Counter, DropReason, Port, PortCounters};
use crate::packet::buf::MAX_FRAME;
use crate::packet::{Packet, PacketPool};

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
    ifname: String,
    queue: u32,
    mode: XdpMode,
    zerocopy: bool,
    // Declared before `umem` and `claim`; taken in Drop so the socket is
    // deleted before the frames go back and the program is detached.
    rings: Option<Rings>,
    umem: AfxdpUmem,
    /// Every frame this port took from the UMEM (returned on drop).
    owned: Vec<FrameDesc>,
    /// Frames in userspace, free for tx or for the fill ring.
    free: Vec<FrameDesc>,
    /// Frames the kernel holds for receiving (fill ring + rx ring).
    in_fill: usize,
    /// Target for `in_fill`: the fill ring's size.
    fill_target: usize,
    /// Frames posted on the tx ring not yet back on the completion ring.
    tx_outstanding: usize,
    scratch: Vec<FrameDesc>,
    /// A `sendto` left frames in the tx ring (EAGAIN/EBUSY/ENOBUFS): kick again.
    kick_pending: bool,
    /// The socket is unbound (interface vanished): nothing will ever work again.
    dead: bool,
    idle_polls: u32,
    counters: Arc<PortCounters>,
    stats: Arc<AfxdpStats>,
    claim: Option<xdp_prog::Claim>,
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
    /// Open a port with a UMEM of its own (`opts.umem_frames` frames).
    pub fn open(opts: &AfxdpOptions) -> Result<AfxdpPort, AfxdpError> {
        // Check the interface before allocating anything.
        if xdp_prog::ifindex(&opts.ifname).is_none() {
            return Err(AfxdpError::NoSuchInterface(opts.ifname.clone()));
        }
        let umem = AfxdpUmem::new(opts.umem_frames, opts.n_rxq_desc, opts.n_txq_desc)?;
        AfxdpPort::open_shared(opts, &umem)
    }

    /// Open a port on a UMEM shared with other ports of the same polling
    /// thread, taking `opts.umem_frames` of its frames. The UMEM's fill and
    /// completion ring sizes apply (`n-rxq-desc` sizes only the rx ring).
    pub fn open_shared(opts: &AfxdpOptions, umem: &AfxdpUmem) -> Result<AfxdpPort, AfxdpError> {
        let ifindex = xdp_prog::ifindex(&opts.ifname)
            .ok_or_else(|| AfxdpError::NoSuchInterface(opts.ifname.clone()))?;
        let want = opts.umem_frames as usize;
        let fill_target = (umem.fill_descs() as usize).min(opts.n_rxq_desc as usize);
        if want <= fill_target {
            return Err(AfxdpError::Umem(format!(
                "umem-frames={want} leaves no frame for transmit (the fill ring takes {fill_target})"
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
        let frames = umem.take(want).ok_or_else(|| {
            AfxdpError::Umem(format!(
                "the shared UMEM has {} free frames, {} wanted for {}",
                umem.free_frames(),
                want,
                opts.ifname
            ))
        })?;
        let (rings, mode, zerocopy) = match bind(opts, umem, claim.first()) {
            Ok(r) => r,
            Err(e) => {
                umem.give_back(frames);
                return Err(e);
            }
        };
        let mut port = AfxdpPort {
            ifname: opts.ifname.clone(),
            queue: opts.queue,
            mode,
            zerocopy,
            rings: Some(rings),
            umem: umem.clone(),
            owned: frames.clone(),
            free: frames,
            in_fill: 0,
            fill_target,
            tx_outstanding: 0,
            scratch: vec![FrameDesc::default(); BATCH.max(64)],
            kick_pending: false,
            dead: false,
            idle_polls: 0,
            counters: Arc::new(PortCounters::default()),
            stats: Arc::new(AfxdpStats {
                link_up: Arc::new(AtomicBool::new(true)),
                rx_wakeups: Counter::default(),
                tx_wakeups: Counter::default(),
                tx_batches: Counter::default(),
            }),
            claim: Some(claim),
        };
        port.refill();
        Ok(port)
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Queue id.
    pub fn queue(&self) -> u32 {
        self.queue
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

    /// Frames currently free in userspace (for tests and diagnostics).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    fn set_link(&self, up: bool) {
        self.stats.link_up.store(up, Ordering::Relaxed);
    }

    fn mark_dead(&mut self) {
        self.dead = true;
        self.set_link(false);
    }

    /// Top the fill ring up to its target from the free frames.
    fn refill(&mut self) {
        let Some(r) = self.rings.as_mut() else { return };
        while self.in_fill < self.fill_target && !self.free.is_empty() {
            let n = (self.fill_target - self.in_fill)
                .min(self.free.len())
                .min(self.scratch.len());
            let at = self.free.len() - n;
            // SAFETY: the frames come from this port's share of the UMEM the
            // fill queue belongs to, and are in no ring (they are in `free`).
            let done = unsafe { r.fq.produce(&self.free[at..]) };
            if done == 0 {
                break;
            }
            self.free.truncate(at);
            self.in_fill += done;
        }
    }

    /// Drain the completion ring: transmitted frames become free again.
    fn reclaim(&mut self) {
        let Some(r) = self.rings.as_mut() else { return };
        while self.tx_outstanding > 0 {
            // SAFETY: the completion ring only returns frames this port posted
            // on its tx ring, which belong to the UMEM the ring belongs to.
            let n = unsafe { r.cq.consume(&mut self.scratch) };
            if n == 0 {
                break;
            }
            self.free.extend_from_slice(&self.scratch[..n]);
            self.tx_outstanding = self.tx_outstanding.saturating_sub(n);
        }
    }

    /// `sendto` on the socket: the tx wakeup (af_xdp.rst need_wakeup).
    fn kick(&mut self) -> Kick {
        let Some(r) = self.rings.as_ref() else {
            return Kick::Gone;
        };
        self.stats.tx_wakeups.add(1);
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
    let mut errors = Vec::new();
    for &(mode, zc) in attempts {
        let xdp = match mode {
            XdpMode::Generic => XdpFlags::XDP_FLAGS_SKB_MODE,
            _ => XdpFlags::XDP_FLAGS_DRV_MODE,
        };
        let copy = if zc {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        };
        let config = SocketConfig::builder()
            .rx_queue_size(rxq)
            .tx_queue_size(txq)
            .xdp_flags(xdp)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | copy)
            .build();
        // SAFETY: xsk-rs requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD only when
        // this UMEM already has a socket on the same (interface, queue); the
        // Claim taken by the caller guarantees this process has none there.
        match unsafe { Socket::new(config, umem.umem(), &iface, opts.queue) } {
            Ok((tx, rx, Some((fq, cq)))) => return Ok((Rings { tx, rx, fq, cq }, mode, zc)),
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
        // A failed attach may leave a program behind; clear it before the
        // next mode, unless another socket of ours relies on it.
        if sole {
            if let Some(i) = xdp_prog::ifindex(&opts.ifname) {
                let _ = xdp_prog::detach_all(i);
            }
        }
    }
    Err(fail(errors.join("; ")))
}

fn mode_name(mode: XdpMode, zc: bool) -> &'static str {
    match (mode, zc) {
        (XdpMode::Native, true) => "native-with-zerocopy",
        (m, _) => m.name(),
    }
}

impl Port for AfxdpPort {
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        if self.dead {
            return 0;
        }
        self.reclaim();
        if self.kick_pending {
            self.kick_pending = false;
            let pending = self.rings.as_ref().is_some_and(|r| r.tx.needs_wakeup());
            if pending {
                match self.kick() {
                    Kick::Retry => self.kick_pending = true,
                    Kick::Gone => self.mark_dead(),
                    _ => {}
                }
            }
        }
        let Some(r) = self.rings.as_mut() else {
            return 0;
        };
        let umem = self.umem.umem();
        let (mut got, mut bytes, mut seen) = (0usize, 0u64, 0usize);
        let (mut oversize, mut no_buf) = (0u64, 0u64);
        while got < max {
            let want = (max - got).min(BATCH);
            // SAFETY: the rx ring only returns frames this port put on its
            // fill ring, all from the UMEM this ring belongs to.
            let n = unsafe { r.rx.consume(&mut self.scratch[..want]) };
            if n == 0 {
                break;
            }
            seen += n;
            for d in &self.scratch[..n] {
                // SAFETY: `d` came off the rx ring, so userspace owns the frame
                // until it goes back on the fill ring below; nobody writes it meanwhile.
                let data = unsafe { umem.data(d) };
                let frame = data.contents();
                if frame.len() > MAX_FRAME {
                    oversize += 1;
                    continue;
                }
                let Some(mut p) = pool.get() else {
                    no_buf += 1;
                    continue;
                };
                if !p.set_data(frame) {
                    pool.put(p);
                    oversize += 1;
                    continue;
                }
                bytes += frame.len() as u64;
                out.push(p);
                got += 1;
            }
            // The frames were copied: hand them straight back to the kernel.
            // SAFETY: same frames, same UMEM, no longer referenced.
            let back = unsafe { r.fq.produce(&self.scratch[..n]) };
            if back == 0 {
                self.free.extend_from_slice(&self.scratch[..n]);
                self.in_fill = self.in_fill.saturating_sub(n);
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
        if no_buf > 0 {
            self.counters.rx_drop(DropReason::PoolEmpty, no_buf);
        }
        if self.in_fill < self.fill_target {
            self.refill();
        }
        if seen == 0 {
            // need_wakeup: only when the ring is empty and the kernel asks.
            let (fd, wake) = match self.rings.as_ref() {
                Some(r) => (r.rx.fd().as_raw_fd(), r.fq.needs_wakeup()),
                None => return got,
            };
            if wake {
                self.stats.rx_wakeups.add(1);
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
        self.reclaim();
        let (mut sent, mut sent_bytes) = (0u64, 0u64);
        let (mut full, mut oversize, mut down) = (0u64, 0u64, 0u64);
        let mut i = 0;
        while i < pkts.len() {
            let end = (i + BATCH).min(pkts.len());
            if self.free.len() < end - i {
                self.reclaim();
            }
            let Some(r) = self.rings.as_mut() else { break };
            let room = (r.tx.nb_free((end - i) as u32) as usize).min(end - i);
            let umem = self.umem.umem();
            let (mut n, mut bytes) = (0usize, 0u64);
            for p in &pkts[i..end] {
                let len = p.len();
                if n >= room {
                    full += 1;
                    continue;
                }
                let Some(mut d) = self.free.pop() else {
                    full += 1;
                    continue;
                };
                // SAFETY: `d` is a free frame of this port (in no ring), of
                // the UMEM this port's tx ring belongs to.
                let mut data = unsafe { umem.data_mut(&mut d) };
                let mut cur = data.cursor();
                cur.set_pos(0);
                if len > cur.buf_len() || cur.write_all(p.data()).is_err() {
                    self.free.push(d);
                    oversize += 1;
                    continue;
                }
                self.scratch[n] = d;
                n += 1;
                bytes += len as u64;
            }
            let posted = if n > 0 {
                // SAFETY: frames of this port's UMEM share, filled above and in no ring.
                unsafe { r.tx.produce(&self.scratch[..n]) }
            } else {
                0
            };
            if posted < n {
                // produce is all-or-nothing; `room` said there was space, but
                // never lose frames if the kernel disagrees.
                self.free.extend_from_slice(&self.scratch[..n]);
                full += n as u64;
                bytes = 0;
            }
            if posted > 0 {
                self.tx_outstanding += posted;
                self.stats.tx_batches.add(1);
                let wake = r.tx.needs_wakeup();
                let outcome = if wake { self.kick() } else { Kick::Done };
                match outcome {
                    Kick::Done | Kick::Error => {
                        if matches!(outcome, Kick::Error) {
                            self.counters.tx_errors.add(1);
                        }
                        sent += posted as u64;
                        sent_bytes += bytes;
                    }
                    Kick::Retry => {
                        self.kick_pending = true;
                        sent += posted as u64;
                        sent_bytes += bytes;
                    }
                    Kick::LinkDown => {
                        self.set_link(false);
                        down += posted as u64;
                    }
                    Kick::Gone => {
                        self.mark_dead();
                        down += posted as u64;
                    }
                }
            }
            i = end;
            if self.dead || !self.is_up() {
                down += (pkts.len() - i) as u64;
                break;
            }
        }
        for p in pkts.drain(..) {
            pool.put(p);
        }
        self.counters.tx_packets.add(sent);
        self.counters.tx_bytes.add(sent_bytes);
        if full > 0 {
            self.counters.tx_drop(DropReason::TxRingFull, full);
        }
        if oversize > 0 {
            self.counters.tx_drop(DropReason::Oversize, oversize);
        }
        if down > 0 {
            self.counters.tx_drop(DropReason::PortDown, down);
        }
        sent as usize
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}

impl Drop for AfxdpPort {
    fn drop(&mut self) {
        // Delete the socket first (the kernel lets go of every frame of ours
        // in its rings), then return the frames, then release the interface
        // (which detaches the program when this was its last socket).
        self.rings = None;
        self.umem.give_back(std::mem::take(&mut self.owned));
        self.claim = None;
    }
}
