//! vhost-user ports: VMs and DPDK applications (virtio-user) attached
//! through a unix socket and shared memory, like OVS's `dpdkvhostuser` and
//! `dpdkvhostuserclient` ports.
//!
//! Two halves, on two threads:
//! - the **control half** (`backend.rs`, one thread per port) owns the unix
//!   socket (server: switchd listens; client: switchd connects and reconnects
//!   with backoff), speaks the vhost-user protocol (`msg.rs`), maps the
//!   guest's memory (`mem.rs`), and publishes an immutable device view: the
//!   memory table plus, per started queue, host pointers to its rings;
//! - the **data half** ([`VhostUserPort`], owned by one polling thread) checks
//!   one atomic generation number per batch, and when it changed swaps to the
//!   new view (a lock taken only then), acknowledges the generation, and
//!   hands the old view back through a bounded queue so the control thread,
//!   not the polling thread, unmaps memory. Frames move by our own split-ring
//!   loop (`vring.rs`).
//!
//! Memory lifetime: a mapping lives as long as any view holding it; the
//! polling thread drops its reference only after it has stopped using the
//! view, so a `SET_MEM_TABLE`, a disconnect or a port removal never pulls
//! memory from under a batch. Ring positions: the polling thread owns
//! `last_avail` and stores it after every batch; when a queue stops
//! (`SET_VRING_ENABLE 0`, `GET_VRING_BASE`, disconnect) the control thread
//! publishes a view without it, waits for the acknowledgement, and only then
//! reads the position (answering `GET_VRING_BASE` with it). No lock, no
//! allocation and no syscall per packet; one eventfd write per batch only
//! when the driver wants interrupts.
//!
//! A misbehaving peer is counted, never fatal: bad descriptors are named
//! errors ([`VqError`]), a corrupt ring stops that queue and the control
//! thread resets the connection; another port is never affected.

mod backend;
pub mod mem;
pub mod msg;
mod options;
pub mod vring;

use std::io;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_queue::ArrayQueue;

pub use options::{Mode, VhostOptions, MAX_QUEUE_PAIRS, SUN_PATH_MAX, VHOST_OPTION_KEYS};
pub use vring::VqError;

use self::mem::GuestMemory;
use self::vring::{Tally, VqLocal, Vring};
use super::{Counter, DropReason, Port, PortCounters};
use crate::packet::{Packet, PacketPool};

/// Why a vhost_user port could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// A bad option.
    #[error("{0}")]
    Option(String),
    /// The socket path exists and is not a socket.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotSocket(String),
    /// Another process is listening on the socket path.
    #[error("{0}: another process is listening on this socket")]
    InUse(String),
    /// Creating, binding or configuring the socket failed.
    #[error("{path}: {err}")]
    Socket {
        /// The socket path.
        path: String,
        /// The error.
        err: io::Error,
    },
}

/// The device view the control thread publishes.
#[derive(Debug)]
pub struct Device {
    mem: Arc<GuestMemory>,
    /// Started queues by virtqueue index (even: guest receive, odd: guest transmit).
    queues: Vec<Option<Vring>>,
    /// virtio-net header length: 12 with `VERSION_1` or `MRG_RXBUF`, else 10.
    hdr_len: usize,
    /// `VIRTIO_NET_F_MRG_RXBUF` negotiated.
    mrg: bool,
}

/// State shared by a port's control thread, its polling thread and the
/// bridge (which reads the link state and the error counters).
#[derive(Debug)]
pub struct VhostShared {
    gen: AtomicU64,
    acked: AtomicU64,
    view: Mutex<Option<Arc<Device>>>,
    retired: ArrayQueue<Arc<Device>>,
    last_avail: Vec<AtomicU16>,
    broken: AtomicBool,
    stop: AtomicBool,
    link_up: AtomicBool,
    connected: AtomicBool,
    /// Connections accepted or made (control thread only).
    connects: Counter,
    /// Connections reset because a queue's ring was corrupt (control thread only).
    resets: Counter,
    errors: [Counter; VqError::COUNT],
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl VhostShared {
    fn new(n_qp: u32) -> VhostShared {
        VhostShared {
            gen: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            view: Mutex::new(None),
            retired: ArrayQueue::new(16),
            last_avail: (0..2 * n_qp).map(|_| AtomicU16::new(0)).collect(),
            broken: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            link_up: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            connects: Counter::default(),
            resets: Counter::default(),
            errors: Default::default(),
            thread: Mutex::new(None),
        }
    }

    /// True while a peer is connected and at least one queue pair runs.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed)
    }

    /// True while a peer is connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connections made or accepted so far.
    pub fn connects(&self) -> u64 {
        self.connects.get()
    }

    /// Connections reset after a ring error.
    pub fn resets(&self) -> u64 {
        self.resets.get()
    }

    /// Ring and descriptor errors by name, non-zero only (see [`VqError::name`]).
    pub fn error_counts(&self) -> Vec<(String, u64)> {
        VqError::ALL
            .iter()
            .map(|e| (e.name().to_string(), self.errors[e.index()].get()))
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// One error kind's count.
    pub fn error_count(&self, e: VqError) -> u64 {
        self.errors[e.index()].get()
    }

    /// Stop the control thread and wait for it (closes the connection and,
    /// in server mode, removes the socket file). Idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let h = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

/// A vhost-user port as its polling thread sees it.
#[derive(Debug)]
pub struct VhostUserPort {
    shared: Arc<VhostShared>,
    counters: Arc<PortCounters>,
    dev: Option<Arc<Device>>,
    gen: u64,
    local: Vec<VqLocal>,
    broken: Vec<bool>,
    next_rxq: usize,
    tally: Tally,
}

impl VhostUserPort {
    /// Create the port: in server mode bind the socket now (so a bad path is
    /// the caller's error), then start the port's control thread.
    pub fn open(name: &str, opts: &VhostOptions) -> Result<VhostUserPort, VhostError> {
        let listener = match opts.mode {
            Mode::Server => Some(backend::bind(opts)?),
            Mode::Client => None,
        };
        Ok(Self::start(name, opts, listener))
    }

    fn start(name: &str, opts: &VhostOptions, listener: Option<UnixListener>) -> VhostUserPort {
        let shared = Arc::new(VhostShared::new(opts.n_rxq));
        let n = 2 * opts.n_rxq as usize;
        let h = backend::spawn(name, opts.clone(), shared.clone(), listener);
        if let Ok(mut t) = shared.thread.lock() {
            *t = h;
        }
        VhostUserPort {
            shared,
            counters: Arc::new(PortCounters::default()),
            dev: None,
            gen: 0,
            local: vec![VqLocal::default(); n],
            broken: vec![false; n],
            next_rxq: 0,
            tally: Tally::default(),
        }
    }

    /// The shared status (link state, error counters, shutdown).
    pub fn status(&self) -> Arc<VhostShared> {
        self.shared.clone()
    }

    /// Swap to a newer device view if the control thread published one.
    #[inline(always)]
    fn refresh(&mut self) {
        let g = self.shared.gen.load(Ordering::Acquire);
        if g != self.gen {
            self.switch_view(g);
        }
    }

    #[cold]
    fn switch_view(&mut self, g: u64) {
        let new = self.shared.view.lock().ok().and_then(|v| v.clone());
        for (i, l) in self.local.iter_mut().enumerate() {
            match new
                .as_ref()
                .and_then(|d| d.queues.get(i))
                .and_then(|q| q.as_ref())
            {
                Some(q) => {
                    if l.epoch != q.epoch {
                        l.last_avail = q.base;
                        l.epoch = q.epoch;
                        self.broken[i] = false;
                    }
                    l.live = !self.broken[i];
                }
                None => l.live = false,
            }
        }
        if let Some(old) = std::mem::replace(&mut self.dev, new) {
            // The control thread drops it (and unmaps, when it was the last
            // reference); only if that queue is full does it drop here.
            let _ = self.shared.retired.push(old);
        }
        self.gen = g;
        self.shared.acked.store(g, Ordering::Release);
    }

    fn flush_tally(&mut self, rx_side: bool) {
        let t = &mut self.tally;
        let mut errs = 0;
        for e in VqError::ALL {
            let n = std::mem::take(&mut t.errors[e.index()]);
            if n == 0 {
                continue;
            }
            if e == VqError::Oversize && rx_side {
                self.counters.rx_drop(DropReason::Oversize, n);
            } else {
                errs += n;
            }
            self.shared.errors[e.index()].add(n);
        }
        if errs > 0 {
            if rx_side {
                self.counters.rx_errors.add(errs);
            } else {
                self.counters.tx_errors.add(errs);
            }
        }
        for r in DropReason::ALL {
            let n = std::mem::take(&mut t.drops[r.index()]);
            if n > 0 {
                self.counters.tx_drop(r, n);
            }
        }
    }

    #[cold]
    fn mark_broken(&mut self, q: usize) {
        self.local[q].live = false;
        self.broken[q] = true;
        self.shared.broken.store(true, Ordering::Release);
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        // The control thread notices within its poll interval and exits; the
        // bridge joins it through VhostShared::shutdown.
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Port for VhostUserPort {
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        self.refresh();
        let Some(dev) = self.dev.as_ref() else {
            return 0;
        };
        let nq = dev.queues.len() / 2;
        let (mut n, mut bytes) = (0usize, 0u64);
        let mut bad = None;
        for k in 0..nq {
            let qp = (self.next_rxq + k) % nq;
            let q = 2 * qp + 1;
            if !self.local[q].live {
                continue;
            }
            let Some(vr) = dev.queues[q].as_ref() else {
                continue;
            };
            let (c, b, ok) = vr.pop_frames(
                &dev.mem,
                &mut self.local[q],
                dev.hdr_len,
                pool,
                out,
                max - n,
                &mut self.tally,
            );
            self.shared.last_avail[q].store(self.local[q].last_avail, Ordering::Relaxed);
            n += c;
            bytes += b;
            if !ok {
                bad = Some(q);
            }
            if n >= max {
                break;
            }
        }
        if nq > 1 {
            self.next_rxq = (self.next_rxq + 1) % nq;
        }
        if let Some(q) = bad {
            self.mark_broken(q);
        }
        if n > 0 {
            self.counters.rx_packets.add(n as u64);
            self.counters.rx_bytes.add(bytes);
        }
        self.flush_tally(true);
        n
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        self.refresh();
        // Guest receive queues are the even ones; the owning thread uses the
        // first running one (one polling thread per port, see docs).
        let q = self
            .dev
            .as_ref()
            .and_then(|d| (0..d.queues.len()).step_by(2).find(|&q| self.local[q].live));
        let (Some(dev), Some(q)) = (self.dev.as_ref(), q) else {
            let n = pkts.len() as u64;
            for p in pkts.drain(..) {
                pool.put(p);
            }
            self.counters.tx_drop(DropReason::PortDown, n);
            return 0;
        };
        let Some(vr) = dev.queues[q].as_ref() else {
            return 0;
        };
        let (sent, bytes, ok) = vr.push_frames(
            &dev.mem,
            &mut self.local[q],
            dev.hdr_len,
            dev.mrg,
            pkts,
            pool,
            &mut self.tally,
        );
        self.shared.last_avail[q].store(self.local[q].last_avail, Ordering::Relaxed);
        if sent > 0 {
            self.counters.tx_packets.add(sent as u64);
            self.counters.tx_bytes.add(bytes);
        }
        if !ok {
            self.mark_broken(q);
        }
        self.flush_tally(false);
        sent
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}
