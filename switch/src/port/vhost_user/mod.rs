//! vhost-user ports: VMs and DPDK applications (virtio-user) attached
//! through a unix socket and shared memory, like OVS's `dpdkvhostuser` and
//! `dpdkvhostuserclient` ports.
//!
//! Two halves, on several threads:
//! - the **control half** (`backend.rs`, one thread per port) owns the unix
//!   socket (server: switchd listens; client: switchd connects and reconnects
//!   with backoff), speaks the vhost-user protocol (`msg.rs`), maps the
//!   guest's memory (`mem.rs`), and publishes an immutable device view: the
//!   memory table plus, per started queue, host pointers to its rings;
//! - the **data half**: one [`VhostUserPort`] *queue object* per queue pair
//!   (`n_rxq` of them, like one AF_XDP port object per queue), each owned by
//!   the polling thread it is assigned to. Queue object `i` receives from
//!   the guest's transmit virtqueue `2i+1` and transmits on the guest's
//!   receive virtqueue `2i` (virtio 1.1 §5.1.2: receiveq N is `2N`,
//!   transmitq N is `2N+1`), and touches no other ring, so no ring is ever
//!   shared between threads. Each checks one atomic generation number per
//!   batch, and when it changed swaps to the new view (a lock taken only
//!   then), acknowledges the generation for its queue pair, and hands the
//!   old view back through a bounded queue so the control thread, not a
//!   polling thread, unmaps memory. Frames move by our own split-ring loop
//!   (`vring.rs`).
//!
//! Transmit rule (no lock per packet): a polling thread that owns a queue
//! object of the port transmits through it (the datapath's output goes to
//! the first of its queue objects of the port; threads that own none hand
//! frames over through the port's hand-off queue, see `pmd.rs`). When the
//! guest did not enable that queue object's receive virtqueue (a front-end
//! with `queues=1` on a port offering 2, or a queue disabled at run time by
//! `VHOST_USER_SET_VRING_ENABLE`), the frames go to the bounded lock-free
//! *redirect queue* of a queue pair whose receive virtqueue runs: the
//! `(i mod k)`-th of the `k` running ones, as OVS maps a tx queue id modulo
//! the enabled queues; that queue pair's object sends them on its next
//! poll. A full redirect queue drops, counted `tx_ring_full`; no running
//! receive virtqueue at all is `port_down`.
//!
//! Memory lifetime: a mapping lives as long as any view holding it; a
//! polling thread drops its reference only after it has stopped using the
//! view, so a `SET_MEM_TABLE`, a disconnect or a port removal never pulls
//! memory from under a batch. Ring positions: the queue object owns
//! `last_avail` of its two rings and stores it after every batch; when a
//! queue stops (`SET_VRING_ENABLE 0`, `GET_VRING_BASE`, disconnect) the
//! control thread publishes a view without it, waits for that queue pair's
//! acknowledgement, and only then reads the position (answering
//! `GET_VRING_BASE` with it). No lock, no allocation and no syscall per
//! packet; one eventfd write per batch only when the driver wants
//! interrupts.
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
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
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

/// Frames a queue pair's redirect queue holds (frames other queue objects
/// of the port send through it while their own receive virtqueue is off).
pub const REDIRECT_DEPTH: usize = 1024;
/// Frames a queue object sends from its redirect queue per poll.
const REDIRECT_BATCH: usize = 32;
/// Redirect batches sent per poll at most (bounds one poll's work).
const REDIRECT_ROUNDS: usize = 8;

/// State shared by a port's control thread, its queue objects (on their
/// polling threads) and the bridge (which reads the link state and the
/// error counters).
#[derive(Debug)]
pub struct VhostShared {
    gen: AtomicU64,
    /// Per queue pair: the last generation its queue object switched to.
    acked: Vec<AtomicU64>,
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
    /// Per queue pair (each written only by that pair's queue object).
    errors: Vec<[Counter; VqError::COUNT]>,
    /// Per queue pair: frames other queue objects hand to this one because
    /// their own guest-receive virtqueue is not running.
    redirect: Vec<ArrayQueue<Packet>>,
    /// Queue objects not yet dropped; the last one stops the control thread.
    objects: AtomicUsize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl VhostShared {
    fn new(n_qp: u32) -> VhostShared {
        let n = n_qp as usize;
        VhostShared {
            gen: AtomicU64::new(0),
            acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
            view: Mutex::new(None),
            retired: ArrayQueue::new(16 * n),
            last_avail: (0..2 * n).map(|_| AtomicU16::new(0)).collect(),
            broken: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            link_up: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            connects: Counter::default(),
            resets: Counter::default(),
            errors: (0..n).map(|_| Default::default()).collect(),
            redirect: (0..n).map(|_| ArrayQueue::new(REDIRECT_DEPTH)).collect(),
            objects: AtomicUsize::new(n),
            thread: Mutex::new(None),
        }
    }

    /// Queue pairs the port offers (`n_rxq`): one queue object each.
    pub fn queue_pairs(&self) -> usize {
        self.acked.len()
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

    /// Ring and descriptor errors by name over all queue pairs, non-zero
    /// only (see [`VqError::name`]).
    pub fn error_counts(&self) -> Vec<(String, u64)> {
        VqError::ALL
            .iter()
            .map(|e| (e.name().to_string(), self.error_count(*e)))
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// One error kind's count over all queue pairs.
    pub fn error_count(&self, e: VqError) -> u64 {
        self.errors.iter().map(|c| c[e.index()].get()).sum()
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

/// One queue pair of a vhost-user port as its polling thread sees it (a
/// *queue object*; a port with `n_rxq=N` has N, sharing one connection).
#[derive(Debug)]
pub struct VhostUserPort {
    shared: Arc<VhostShared>,
    counters: Arc<PortCounters>,
    dev: Option<Arc<Device>>,
    gen: u64,
    /// This object's queue pair.
    qp: usize,
    /// Ring state: `[0]` the guest-receive virtqueue `2qp` (we transmit),
    /// `[1]` the guest-transmit virtqueue `2qp+1` (we receive).
    local: [VqLocal; 2],
    broken: [bool; 2],
    /// While our guest-receive virtqueue is off: the queue pair whose
    /// redirect queue takes our frames (`None`: no receive queue runs).
    redirect_to: Option<usize>,
    /// Some receive virtqueue is off or the peer is gone, so frames may
    /// wait in our redirect queue: look at it on every poll.
    serves: bool,
    /// Frames taken from the redirect queue (capacity [`REDIRECT_BATCH`]).
    scratch: Vec<Packet>,
    tally: Tally,
}

impl VhostUserPort {
    /// Create the port's queue objects, one per queue pair (`n_rxq`), in
    /// queue order: in server mode bind the socket now (so a bad path is the
    /// caller's error), then start the port's control thread.
    pub fn open(name: &str, opts: &VhostOptions) -> Result<Vec<VhostUserPort>, VhostError> {
        let listener = match opts.mode {
            Mode::Server => Some(backend::bind(opts)?),
            Mode::Client => None,
        };
        Ok(Self::start(name, opts, listener))
    }

    fn start(
        name: &str,
        opts: &VhostOptions,
        listener: Option<UnixListener>,
    ) -> Vec<VhostUserPort> {
        let shared = Arc::new(VhostShared::new(opts.n_rxq));
        let h = backend::spawn(name, opts.clone(), shared.clone(), listener);
        if let Ok(mut t) = shared.thread.lock() {
            *t = h;
        }
        (0..opts.n_rxq as usize)
            .map(|qp| VhostUserPort {
                shared: shared.clone(),
                counters: Arc::new(PortCounters::default()),
                dev: None,
                gen: 0,
                qp,
                local: [VqLocal::default(); 2],
                broken: [false; 2],
                redirect_to: None,
                serves: false,
                scratch: Vec::with_capacity(REDIRECT_BATCH),
                tally: Tally::default(),
            })
            .collect()
    }

    /// The shared status (link state, error counters, shutdown).
    pub fn status(&self) -> Arc<VhostShared> {
        self.shared.clone()
    }

    /// This queue object's queue pair.
    pub fn queue(&self) -> usize {
        self.qp
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
        for (k, l) in self.local.iter_mut().enumerate() {
            match new
                .as_ref()
                .and_then(|d| d.queues.get(2 * self.qp + k))
                .and_then(|q| q.as_ref())
            {
                Some(q) => {
                    if l.epoch != q.epoch {
                        l.last_avail = q.base;
                        l.epoch = q.epoch;
                        self.broken[k] = false;
                    }
                    l.live = !self.broken[k];
                }
                None => l.live = false,
            }
        }
        // The guest-receive virtqueues that run in this view, in order.
        let running = |d: &Device, p: usize| d.queues.get(2 * p).is_some_and(|q| q.is_some());
        let (n_pairs, n_running) = new.as_ref().map_or((0, 0), |d| {
            let n = d.queues.len() / 2;
            (n, (0..n).filter(|p| running(d, *p)).count())
        });
        let mine = new.as_ref().is_some_and(|d| running(d, self.qp));
        // Frames may wait in our redirect queue while some receive queue is
        // off (sent, or redirected on, by the next poll) or after the peer
        // left (dropped as port_down then, never sent to a later peer).
        self.serves = new.is_none() || n_running < n_pairs;
        self.redirect_to = match new.as_ref() {
            Some(d) if !mine && n_running > 0 => (0..n_pairs)
                .filter(|p| running(d, *p))
                .nth(self.qp % n_running),
            _ => None,
        };
        if let Some(old) = std::mem::replace(&mut self.dev, new) {
            // The control thread drops it (and unmaps, when it was the last
            // reference); only if that queue is full does it drop here.
            let _ = self.shared.retired.push(old);
        }
        self.gen = g;
        if let Some(a) = self.shared.acked.get(self.qp) {
            a.store(g, Ordering::Release);
        }
    }

    fn flush_tally(&mut self, rx_side: bool) {
        if self.tally.is_clear() {
            return;
        }
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
            if let Some(c) = self.shared.errors.get(self.qp) {
                c[e.index()].add(n);
            }
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
    fn mark_broken(&mut self, k: usize) {
        self.local[k].live = false;
        self.broken[k] = true;
        self.shared.broken.store(true, Ordering::Release);
    }

    /// Send on our own guest-receive virtqueue (it is running).
    fn push_own(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        let q = 2 * self.qp;
        let Some(vr) = self
            .dev
            .as_ref()
            .and_then(|d| d.queues.get(q))
            .and_then(|r| r.as_ref())
        else {
            return self.drop_all(pkts, pool, DropReason::PortDown);
        };
        let Some(dev) = self.dev.as_ref() else {
            return 0;
        };
        let (sent, bytes, ok) = vr.push_frames(
            &dev.mem,
            &mut self.local[0],
            dev.hdr_len,
            dev.mrg,
            pkts,
            pool,
            &mut self.tally,
        );
        self.shared.last_avail[q].store(self.local[0].last_avail, Ordering::Relaxed);
        if sent > 0 {
            self.counters.tx_packets.add(sent as u64);
            self.counters.tx_bytes.add(bytes);
        }
        if !ok {
            self.mark_broken(0);
        }
        self.flush_tally(false);
        sent
    }

    /// Hand the frames to queue pair `to`'s redirect queue (another
    /// thread's, possibly): heap copies of UMEM frames, which never leave
    /// their thread. A full queue drops, counted `tx_ring_full`.
    fn redirect(&mut self, to: usize, pkts: &mut Vec<Packet>, pool: &mut PacketPool) {
        let Some(rq) = self.shared.redirect.get(to) else {
            self.drop_all(pkts, pool, DropReason::PortDown);
            return;
        };
        let (mut full, mut nobuf) = (0u64, 0u64);
        for p in pkts.drain(..) {
            let Some(p) = pool.to_heap(p) else {
                nobuf += 1;
                continue;
            };
            if let Err(p) = rq.push(p) {
                pool.put(p);
                full += 1;
            }
        }
        if full > 0 {
            self.counters.tx_drop(DropReason::TxRingFull, full);
        }
        if nobuf > 0 {
            self.counters.tx_drop(DropReason::PoolEmpty, nobuf);
        }
    }

    fn drop_all(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool, r: DropReason) -> usize {
        let n = pkts.len() as u64;
        for p in pkts.drain(..) {
            pool.put(p);
        }
        if n > 0 {
            self.counters.tx_drop(r, n);
        }
        0
    }

    /// Send what other queue objects redirected to us (bounded per poll).
    #[cold]
    fn serve_redirects(&mut self, pool: &mut PacketPool) {
        let mut batch = std::mem::take(&mut self.scratch);
        for _ in 0..REDIRECT_ROUNDS {
            let Some(rq) = self.shared.redirect.get(self.qp) else {
                break;
            };
            while batch.len() < REDIRECT_BATCH {
                match rq.pop() {
                    Some(p) => batch.push(p),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.tx_batch(&mut batch, pool);
        }
        self.scratch = batch;
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        // The last queue object stops the control thread, which notices
        // within its poll interval and exits; the bridge joins it through
        // VhostShared::shutdown.
        if self.shared.objects.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.stop.store(true, Ordering::SeqCst);
        }
    }
}

impl Port for VhostUserPort {
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        self.refresh();
        if self.serves
            && self
                .shared
                .redirect
                .get(self.qp)
                .is_some_and(|q| !q.is_empty())
        {
            self.serve_redirects(pool);
        }
        if !self.local[1].live {
            return 0;
        }
        let q = 2 * self.qp + 1;
        let Some(dev) = self.dev.as_ref() else {
            return 0;
        };
        let Some(vr) = dev.queues.get(q).and_then(|r| r.as_ref()) else {
            return 0;
        };
        let (n, bytes, ok) = vr.pop_frames(
            &dev.mem,
            &mut self.local[1],
            dev.hdr_len,
            pool,
            out,
            max,
            &mut self.tally,
        );
        self.shared.last_avail[q].store(self.local[1].last_avail, Ordering::Relaxed);
        if !ok {
            self.mark_broken(1);
        }
        if n > 0 {
            self.counters.rx_packets.add(n as u64);
            self.counters.rx_bytes.add(bytes);
        }
        self.flush_tally(true);
        n
    }

    /// Send on this queue pair's guest-receive virtqueue; while the guest
    /// has it off, redirect to a running one (see the module doc). Returns
    /// the frames this call put on a ring (redirected frames are counted by
    /// the queue object that sends them).
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        self.refresh();
        if self.local[0].live {
            return self.push_own(pkts, pool);
        }
        match self.redirect_to {
            Some(to) if to != self.qp => {
                self.redirect(to, pkts, pool);
                0
            }
            _ => self.drop_all(pkts, pool, DropReason::PortDown),
        }
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}
