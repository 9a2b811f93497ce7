//! The control half of a vhost-user port: one thread per port that owns the
//! unix socket, runs the vhost-user protocol as the back-end, and publishes
//! device views for the port's queue objects (one per queue pair).
//!
//! Data enters as protocol messages (`msg.rs`) from the front-end (DPDK
//! virtio-user, QEMU, the in-process test front-end); what leaves is replies
//! on the socket and, through [`VhostShared`], a new immutable [`Device`] each
//! time the set of running queues, their rings or the memory table change.
//! Server mode binds the socket at port creation (a stale socket nobody
//! listens on is replaced; a live one or a non-socket file is an error) and
//! accepts one front-end at a time; client mode connects to the
//! application's socket and reconnects with a 100 ms..1 s backoff whenever
//! the application goes away, as OVS's `dpdkvhostuserclient` does.
//!
//! This thread never touches packets. It waits for the acknowledgement of
//! the queue object that polls a stopped queue (one per queue pair, on
//! whichever polling thread owns it) before reading the queue's position,
//! and it drops retired views (unmapping memory) so no polling thread does.
//! A protocol error, or a ring a polling thread found corrupt, resets the
//! connection: the port goes down and (in client mode) reconnects.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mem::GuestMemory;
use super::msg::{self, Msg, MsgError};
use super::vring::Vring;
use super::{Device, Mode, VhostError, VhostOptions, VhostShared};

/// `VIRTIO_NET_F_MRG_RXBUF` (virtio 1.1 §5.1.3).
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// `VIRTIO_NET_F_MQ`.
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;
/// `VIRTIO_RING_F_INDIRECT_DESC` (virtio 1.1 §6).
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_IN_ORDER`: we always return chains in the order they were made
/// available, in the same batch.
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
/// Every virtio feature we offer.
pub const FEATURES: u64 = VIRTIO_NET_F_MRG_RXBUF
    | VIRTIO_NET_F_MQ
    | VIRTIO_RING_F_INDIRECT_DESC
    | VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_F_VERSION_1
    | VIRTIO_F_IN_ORDER;
/// `VHOST_USER_PROTOCOL_F_MQ`.
pub const PROTOCOL_F_MQ: u64 = 1 << 0;
/// `VHOST_USER_PROTOCOL_F_REPLY_ACK`.
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;
/// Every protocol feature we offer.
pub const PROTOCOL_FEATURES: u64 = PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK;

/// How often the thread looks at its stop and broken flags while waiting.
const POLL_MS: i32 = 50;
/// How long a stop waits for the polling thread to leave a queue.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Client-mode reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Create the server socket at `opts.socket`: replace a stale socket, refuse
/// a live one or a non-socket file, apply owner and permissions.
pub(super) fn bind(opts: &VhostOptions) -> Result<UnixListener, VhostError> {
    let path = &opts.socket;
    let shown = path.display().to_string();
    let sock_err = |err: io::Error| VhostError::Socket {
        path: shown.clone(),
        err,
    };
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(VhostError::InUse(shown));
            }
            std::fs::remove_file(path).map_err(sock_err)?;
        }
        Ok(_) => return Err(VhostError::NotSocket(shown)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let l = UnixListener::bind(path).map_err(sock_err)?;
    let cleanup = |e: io::Error| {
        let _ = std::fs::remove_file(path);
        sock_err(e)
    };
    if let Some((uid, gid)) = opts.owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(cleanup)?;
    }
    if let Some(perm) = opts.perm {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm)).map_err(cleanup)?;
    }
    l.set_nonblocking(true).map_err(cleanup)?;
    Ok(l)
}

/// Start the port's control thread.
pub(super) fn spawn(
    name: &str,
    opts: VhostOptions,
    shared: Arc<VhostShared>,
    listener: Option<UnixListener>,
) -> Option<JoinHandle<()>> {
    let tname: String = format!("vhu-{name}").chars().take(15).collect();
    let port = name.to_string();
    std::thread::Builder::new()
        .name(tname)
        .spawn(move || run(&port, &opts, &shared, listener))
        .map_err(|e| eprintln!("switchd: vhost_user {name}: starting control thread: {e}"))
        .ok()
}

/// Wait until `fd` is readable or `ms` passed. True when readable (or hung up).
fn readable(fd: &impl AsRawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0
}

fn sleep_unless_stopped(shared: &VhostShared, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(POLL_MS as u64).min(d));
    }
}

fn run(port: &str, opts: &VhostOptions, shared: &VhostShared, listener: Option<UnixListener>) {
    let ino = std::fs::symlink_metadata(&opts.socket)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let mut backoff = BACKOFF_MIN;
    let mut epoch_seq = 0u64;
    let mut said_waiting = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let conn = match (&listener, opts.mode) {
            (Some(l), _) => {
                if !readable(l, POLL_MS) {
                    continue;
                }
                match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => continue,
                }
            }
            (None, _) => match UnixStream::connect(&opts.socket) {
                Ok(c) => {
                    backoff = BACKOFF_MIN;
                    said_waiting = false;
                    c
                }
                Err(e) => {
                    if !said_waiting {
                        eprintln!(
                            "switchd: vhost_user {port}: connecting to {}: {e}; retrying",
                            opts.socket.display()
                        );
                        said_waiting = true;
                    }
                    sleep_unless_stopped(shared, backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        if conn.set_nonblocking(false).is_err() {
            continue;
        }
        shared.connects.add(1);
        shared.connected.store(true, Ordering::Relaxed);
        let mut b = Backend::new(shared, opts.n_rxq as usize, &mut epoch_seq);
        let why = b.serve(&conn);
        b.teardown();
        shared.connected.store(false, Ordering::Relaxed);
        if let Some(why) = why {
            eprintln!("switchd: vhost_user {port}: connection reset: {why}");
        }
        drop(conn);
        if opts.mode == Mode::Client && !shared.stop.load(Ordering::Relaxed) {
            // The application restarted or is restarting: wait a little so a
            // closing socket is not reconnected at once.
            sleep_unless_stopped(shared, BACKOFF_MIN);
        }
    }
    if let Some(l) = listener {
        drop(l);
        // Remove our socket file, but not one a newer port bound at the same path.
        let now = std::fs::symlink_metadata(&opts.socket)
            .map(|m| (m.dev(), m.ino()))
            .ok();
        if now.is_some() && now == ino {
            let _ = std::fs::remove_file(&opts.socket);
        }
    }
}

#[derive(Debug, Default)]
struct VqCfg {
    num: u32,
    /// (desc, avail, used) front-end virtual addresses.
    addr: Option<(u64, u64, u64)>,
    base: u16,
    kicked: bool,
    enabled: bool,
    restart: bool,
    call: Option<Arc<OwnedFd>>,
}

/// One connection's protocol state.
struct Backend<'a> {
    shared: &'a VhostShared,
    epoch_seq: &'a mut u64,
    features: u64,
    proto: u64,
    mem: Option<Arc<GuestMemory>>,
    vqs: Vec<VqCfg>,
    live: Vec<bool>,
    epochs: Vec<u64>,
}

type Res = Result<Option<u64>, String>;

impl<'a> Backend<'a> {
    fn new(shared: &'a VhostShared, n_qp: usize, epoch_seq: &'a mut u64) -> Backend<'a> {
        Backend {
            shared,
            epoch_seq,
            features: 0,
            proto: 0,
            mem: None,
            vqs: (0..2 * n_qp).map(|_| VqCfg::default()).collect(),
            live: vec![false; 2 * n_qp],
            epochs: vec![0; 2 * n_qp],
        }
    }

    /// Serve until the peer goes away, an error, a broken ring or a stop.
    /// Returns why, when it is worth a log line.
    fn serve(&mut self, conn: &UnixStream) -> Option<String> {
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return None;
            }
            if self.shared.broken.swap(false, Ordering::AcqRel) {
                self.shared.resets.add(1);
                return Some("a queue's ring is corrupt (see the vhost_* error counters)".into());
            }
            self.drain_retired();
            if !readable(conn, POLL_MS) {
                continue;
            }
            let m = match msg::recv_msg(conn) {
                Ok(m) => m,
                Err(MsgError::Closed) => return None,
                Err(e) => return Some(e.to_string()),
            };
            let need_ack = m.need_reply() && self.proto & PROTOCOL_F_REPLY_ACK != 0;
            let req = m.request;
            match self.handle(m, conn) {
                Ok(reply) => {
                    if let Some(v) = reply {
                        if msg::reply_u64(conn, req, v).is_err() {
                            return None;
                        }
                    } else if need_ack && msg::reply_u64(conn, req, 0).is_err() {
                        return None;
                    }
                }
                Err(e) => {
                    if need_ack {
                        let _ = msg::reply_u64(conn, req, 1);
                    }
                    return Some(format!("request {req}: {e}"));
                }
            }
        }
    }

    fn vq_index(&self, m: &Msg) -> Result<usize, String> {
        let i = m.u32_at(0).ok_or("payload too short")? as usize;
        if i >= self.vqs.len() {
            return Err(format!(
                "queue {i} out of range (this port offers {} queue pairs; see n_rxq)",
                self.vqs.len() / 2
            ));
        }
        Ok(i)
    }

    /// Handle one message. `Ok(Some(v))` is a u64 reply; GET_VRING_BASE
    /// replies itself.
    fn handle(&mut self, m: Msg, conn: &UnixStream) -> Res {
        match m.request {
            msg::GET_FEATURES => Ok(Some(FEATURES)),
            msg::SET_FEATURES => {
                let f = m.u64_at(0).ok_or("payload too short")?;
                if f & !FEATURES != 0 {
                    return Err(format!(
                        "features {f:#x} include bits we did not offer ({FEATURES:#x})"
                    ));
                }
                self.features = f;
                self.publish();
                Ok(None)
            }
            msg::SET_OWNER | msg::SEND_RARP | msg::NET_SET_MTU | msg::SET_VRING_ERR => Ok(None),
            msg::RESET_OWNER => {
                self.teardown();
                Ok(None)
            }
            msg::GET_PROTOCOL_FEATURES => Ok(Some(PROTOCOL_FEATURES)),
            msg::SET_PROTOCOL_FEATURES => {
                self.proto = m.u64_at(0).ok_or("payload too short")? & PROTOCOL_FEATURES;
                Ok(None)
            }
            msg::GET_QUEUE_NUM => Ok(Some(self.vqs.len() as u64 / 2)),
            msg::SET_MEM_TABLE => {
                let mem = GuestMemory::from_msg(&m).map_err(|e| e.to_string())?;
                self.mem = Some(Arc::new(mem));
                self.publish();
                Ok(None)
            }
            msg::SET_VRING_NUM => {
                let i = self.vq_index(&m)?;
                let n = m.u32_at(4).ok_or("payload too short")?;
                if n == 0 || n > 32768 || !n.is_power_of_two() {
                    return Err(format!(
                        "queue {i}: size {n} is not a power of 2 in 1..=32768"
                    ));
                }
                self.vqs[i].num = n;
                Ok(None)
            }
            msg::SET_VRING_ADDR => {
                let i = self.vq_index(&m)?;
                let f = |o| m.u64_at(o).ok_or("payload too short");
                let (desc, used, avail) = (f(8)?, f(16)?, f(24)?);
                self.vqs[i].addr = Some((desc, avail, used));
                self.vqs[i].restart = true;
                self.publish();
                Ok(None)
            }
            msg::SET_VRING_BASE => {
                let i = self.vq_index(&m)?;
                let b = m.u32_at(4).ok_or("payload too short")?;
                self.vqs[i].base = b as u16;
                self.vqs[i].restart = true;
                self.publish();
                Ok(None)
            }
            msg::GET_VRING_BASE => {
                // Stops the ring (vhost-user spec); the answer is where the
                // polling thread stopped.
                let i = self.vq_index(&m)?;
                self.vqs[i].kicked = false;
                self.publish();
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(i as u32).to_le_bytes());
                p[4..].copy_from_slice(&u32::from(self.vqs[i].base).to_le_bytes());
                msg::reply(conn, msg::GET_VRING_BASE, &p).map_err(|e| e.to_string())?;
                Ok(None)
            }
            msg::SET_VRING_KICK | msg::SET_VRING_CALL => {
                let v = m.u64_at(0).ok_or("payload too short")?;
                let i = (v & 0xff) as usize;
                if i >= self.vqs.len() {
                    return Err(format!("queue {i} out of range"));
                }
                let nofd = v & 0x100 != 0;
                let mut fds = m.fds;
                let fd = if nofd { None } else { fds.pop() };
                if !nofd && fd.is_none() {
                    return Err("descriptor missing".into());
                }
                if m.request == msg::SET_VRING_KICK {
                    // We poll: the kick descriptor is not needed (dropped here).
                    self.vqs[i].kicked = true;
                } else {
                    self.vqs[i].call = fd.map(Arc::new);
                }
                self.publish();
                Ok(None)
            }
            msg::SET_VRING_ENABLE => {
                let i = self.vq_index(&m)?;
                self.vqs[i].enabled = m.u32_at(4).ok_or("payload too short")? != 0;
                self.publish();
                Ok(None)
            }
            msg::GET_STATUS => Ok(Some(0)),
            other => {
                // Requests behind features we never offered; a front-end that
                // sends them anyway gets a failure answer when it wants one.
                if m.need_reply() {
                    return Err(format!("unsupported request {other}"));
                }
                eprintln!("switchd: vhost_user: ignoring unsupported request {other}");
                Ok(None)
            }
        }
    }

    fn enabled(&self, v: &VqCfg) -> bool {
        // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled.
        self.features & VHOST_USER_F_PROTOCOL_FEATURES == 0 || v.enabled
    }

    /// Compute and publish the device view for the current state; for every
    /// queue that stopped, wait for the polling thread to leave it and take
    /// its position as the queue's base.
    fn publish(&mut self) {
        let mut went_down = Vec::new();
        let mut queues = Vec::with_capacity(self.vqs.len());
        for i in 0..self.vqs.len() {
            let v = &self.vqs[i];
            let want = self.mem.is_some() && v.addr.is_some() && v.kicked && self.enabled(v);
            let mut ring = None;
            if let (true, Some(mem), Some(addr)) = (want, self.mem.as_ref(), v.addr) {
                let epoch = if !self.live[i] || v.restart {
                    *self.epoch_seq += 1;
                    *self.epoch_seq
                } else {
                    self.epochs[i]
                };
                match Vring::new(mem, addr, v.num, v.base, epoch, v.call.clone()) {
                    Ok(mut r) => {
                        if epoch != self.epochs[i] {
                            // A front-end that reconnects keeps its rings but
                            // sends base 0 (DPDK virtio-user in server mode):
                            // the used index in guest memory is the truth, as
                            // DPDK's vhost library decides too
                            // (translate_ring_addresses: last_used_idx mismatch).
                            let used = r.used_index();
                            if used != r.base {
                                eprintln!(
                                    "switchd: vhost_user: queue {i}: base {} but used index {used}; resuming at {used}",
                                    r.base
                                );
                                r.base = used;
                                self.vqs[i].base = used;
                            }
                            self.shared.last_avail[i].store(r.base, Ordering::Relaxed);
                        }
                        self.epochs[i] = epoch;
                        ring = Some(r);
                    }
                    Err(e) => eprintln!("switchd: vhost_user: queue {i} not started: {e}"),
                }
            }
            self.vqs[i].restart = false;
            if ring.is_none() && self.live[i] {
                went_down.push(i);
            }
            self.live[i] = ring.is_some();
            queues.push(ring);
        }
        let dev = match (&self.mem, self.live.iter().any(|l| *l)) {
            (Some(mem), true) => Some(Arc::new(Device {
                mem: mem.clone(),
                queues,
                hdr_len: if self.features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF) != 0 {
                    12
                } else {
                    10
                },
                mrg: self.features & VIRTIO_NET_F_MRG_RXBUF != 0,
            })),
            _ => None,
        };
        let gen = self.shared.gen.load(Ordering::Relaxed) + 1;
        if let Ok(mut v) = self.shared.view.lock() {
            *v = dev;
        }
        self.shared.gen.store(gen, Ordering::Release);
        if !went_down.is_empty() {
            // Only the queue objects of the pairs that lost a queue must
            // have left it (queue object i touches virtqueues 2i and 2i+1
            // only); the others switch views at their own pace.
            let t0 = Instant::now();
            let behind = |i: &usize| {
                self.shared
                    .acked
                    .get(i / 2)
                    .is_some_and(|a| a.load(Ordering::Acquire) < gen)
            };
            while went_down.iter().any(behind)
                && t0.elapsed() < ACK_TIMEOUT
                && !self.shared.stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            for i in went_down {
                self.vqs[i].base = self.shared.last_avail[i].load(Ordering::Relaxed);
            }
        }
        let up = (0..self.live.len() / 2).any(|p| self.live[2 * p] && self.live[2 * p + 1]);
        self.shared.link_up.store(up, Ordering::Relaxed);
        self.drain_retired();
    }

    fn drain_retired(&self) {
        while self.shared.retired.pop().is_some() {}
    }

    /// Forget the connection: stop every queue, unmap memory once the
    /// polling thread has let go.
    fn teardown(&mut self) {
        self.mem = None;
        for v in &mut self.vqs {
            *v = VqCfg::default();
        }
        self.features = 0;
        self.publish();
        self.drain_retired();
    }
}
