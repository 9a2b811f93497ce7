//! vhost-user ports against an in-process front-end: our own minimal
//! virtio-net driver in test code, with a memfd as guest memory (two regions
//! of one file, the second at an mmap offset, as DPDK sends them). Covers
//! negotiation, both directions, mergeable receive buffers on and off,
//! indirect descriptors, malformed descriptors and rings (counted, never a
//! panic, the port resets), disconnect/reconnect in server and client mode,
//! GET_VRING_BASE after traffic, and socket path handling. Unprivileged.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switch::packet::{Packet, PacketPool};
use switch::port::vhost_user::msg;
use switch::port::vhost_user::{VhostError, VhostOptions, VhostUserPort, VqError};
use switch::port::Port;

const F_MRG: u64 = 1 << 15;
const F_INDIRECT: u64 = 1 << 28;
const F_PROTOCOL: u64 = 1 << 30;
const F_VERSION_1: u64 = 1 << 32;
const PF_REPLY_ACK: u64 = 1 << 3;
const QSIZE: u16 = 256;
/// A descriptor to write: (index, addr, len, flags, next).
type Desc = (u16, u64, u32, u16, u16);
const MEM: usize = 4 << 20;
/// Guest-physical base of region 0 (region 1 follows it).
const GPA0: u64 = 0x4000_0000;
const SPLIT: usize = 1 << 20;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

/// Guest memory layout (offsets from GPA0): queue q's rings at q * 0x4000,
/// buffers from 0x10_0000 (in region 1, at a non-zero mmap offset).
fn ring_off(q: usize) -> usize {
    q * 0x4000
}
const BUF_OFF: usize = 0x10_0000;

struct Guest {
    sock: UnixStream,
    base: *mut u8,
    fd: OwnedFd,
    features: u64,
    avail_idx: [u16; 4],
    used_seen: [u16; 4],
    next_buf: usize,
    calls: Vec<OwnedFd>,
}

fn memfd() -> OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: resizing our own memfd.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), MEM as i64) }, 0);
    fd
}

fn eventfd() -> OwnedFd {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Guest {
    fn connect(path: &Path) -> Guest {
        let t0 = Instant::now();
        let sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect {}: {e}", path.display()),
            }
        };
        Guest::on(sock)
    }

    fn on(sock: UnixStream) -> Guest {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let fd = memfd();
        // SAFETY: mapping our own memfd, MEM bytes.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Guest {
            sock,
            base: base.cast(),
            fd,
            features: 0,
            avail_idx: [0; 4],
            used_seen: [0; 4],
            next_buf: BUF_OFF,
            calls: Vec::new(),
        }
    }

    fn send(&self, req: u32, payload: &[u8], fds: &[RawFd], ack: bool) {
        let flags = msg::FLAG_VERSION | if ack { msg::FLAG_NEED_REPLY } else { 0 };
        msg::send_msg(&self.sock, req, flags, payload, fds).unwrap();
        if ack {
            assert_eq!(self.recv_u64(req), 0, "request {req} not acked");
        }
    }

    fn recv_u64(&self, req: u32) -> u64 {
        let m = msg::recv_msg(&self.sock).unwrap();
        assert_eq!(m.request, req);
        assert_ne!(m.flags & msg::FLAG_REPLY, 0);
        m.u64_at(0).unwrap()
    }

    fn state(i: u32, n: u32) -> Vec<u8> {
        [i.to_le_bytes(), n.to_le_bytes()].concat()
    }

    /// Full negotiation, queues 0 and 1 started and enabled.
    fn negotiate(&mut self, extra: u64) {
        self.negotiate_pairs(extra, 1);
    }

    /// Full negotiation, the first `pairs` queue pairs started and enabled.
    fn negotiate_pairs(&mut self, extra: u64, pairs: u32) {
        msg::send_msg(&self.sock, msg::GET_FEATURES, 1, &[], &[]).unwrap();
        let offered = self.recv_u64(msg::GET_FEATURES);
        let want = F_VERSION_1 | F_PROTOCOL | extra;
        assert_eq!(offered & want, want, "offered {offered:#x}");
        msg::send_msg(&self.sock, msg::GET_PROTOCOL_FEATURES, 1, &[], &[]).unwrap();
        let pf = self.recv_u64(msg::GET_PROTOCOL_FEATURES);
        assert_ne!(pf & PF_REPLY_ACK, 0);
        self.send(
            msg::SET_PROTOCOL_FEATURES,
            &PF_REPLY_ACK.to_le_bytes(),
            &[],
            false,
        );
        self.send(msg::SET_OWNER, &[], &[], true);
        self.send(msg::SET_FEATURES, &want.to_le_bytes(), &[], true);
        self.features = want;
        self.send_mem_table();
        for q in 0..2 * pairs {
            self.start_queue(q, 0);
        }
    }

    fn send_mem_table(&self) {
        // Two regions of the same file: [0, SPLIT) and [SPLIT, MEM) at mmap offset SPLIT.
        let mut p = Vec::new();
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        for (gpa, size, ua, off) in [
            (GPA0, SPLIT as u64, self.base as u64, 0u64),
            (
                GPA0 + SPLIT as u64,
                (MEM - SPLIT) as u64,
                self.base as u64 + SPLIT as u64,
                SPLIT as u64,
            ),
        ] {
            for v in [gpa, size, ua, off] {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        let fd = self.fd.as_raw_fd();
        self.send(msg::SET_MEM_TABLE, &p, &[fd, fd], true);
    }

    fn start_queue(&mut self, q: u32, base: u16) {
        let r = ring_off(q as usize) as u64;
        let ua = self.base as u64;
        self.send(
            msg::SET_VRING_NUM,
            &Self::state(q, u32::from(QSIZE)),
            &[],
            true,
        );
        self.send(
            msg::SET_VRING_BASE,
            &Self::state(q, u32::from(base)),
            &[],
            true,
        );
        let mut a = Vec::new();
        a.extend_from_slice(&q.to_le_bytes());
        a.extend_from_slice(&0u32.to_le_bytes());
        for v in [ua + r, ua + r + 0x2000, ua + r + 0x1000, 0] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        self.send(msg::SET_VRING_ADDR, &a, &[], true);
        let call = eventfd();
        self.send(
            msg::SET_VRING_CALL,
            &u64::from(q).to_le_bytes(),
            &[call.as_raw_fd()],
            true,
        );
        self.calls.push(call);
        let kick = eventfd();
        self.send(
            msg::SET_VRING_KICK,
            &u64::from(q).to_le_bytes(),
            &[kick.as_raw_fd()],
            true,
        );
        self.send(msg::SET_VRING_ENABLE, &Self::state(q, 1), &[], true);
        self.avail_idx[q as usize] = base;
        self.used_seen[q as usize] = base;
    }

    fn at(&self, off: usize) -> *mut u8 {
        assert!(off < MEM);
        // SAFETY: off < MEM, inside our mapping.
        unsafe { self.base.add(off) }
    }

    fn write(&self, off: usize, b: &[u8]) {
        assert!(off + b.len() <= MEM);
        // SAFETY: bounds checked above.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.at(off), b.len()) }
    }

    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= MEM);
        let mut v = vec![0u8; len];
        // SAFETY: bounds checked above.
        unsafe { std::ptr::copy_nonoverlapping(self.at(off), v.as_mut_ptr(), len) }
        v
    }

    fn u16_at(&self, off: usize) -> u16 {
        let b = self.read(off, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn u32_at(&self, off: usize) -> u32 {
        let b = self.read(off, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn set_desc_at(&self, table_off: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::new();
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        self.write(table_off + 16 * usize::from(i), &d);
    }

    fn set_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.set_desc_at(ring_off(q), i, addr, len, flags, next);
    }

    /// Make head `head` available on queue q.
    fn make_avail(&mut self, q: usize, head: u16) {
        let r = ring_off(q) + 0x1000;
        let idx = self.avail_idx[q];
        self.write(r + 4 + 2 * usize::from(idx % QSIZE), &head.to_le_bytes());
        self.avail_idx[q] = idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.write(r + 2, &self.avail_idx[q].to_le_bytes());
    }

    /// Set the avail flags of queue q (NO_INTERRUPT = 1).
    fn set_avail_flags(&self, q: usize, f: u16) {
        self.write(ring_off(q) + 0x1000, &f.to_le_bytes());
    }

    fn used_idx(&self, q: usize) -> u16 {
        self.u16_at(ring_off(q) + 0x2000 + 2)
    }

    fn used_flags(&self, q: usize) -> u16 {
        self.u16_at(ring_off(q) + 0x2000)
    }

    /// New used entries (id, len) on queue q since the last call.
    fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let now = self.used_idx(q);
        let mut v = Vec::new();
        while self.used_seen[q] != now {
            let e = ring_off(q) + 0x2000 + 4 + 8 * usize::from(self.used_seen[q] % QSIZE);
            v.push((self.u32_at(e), self.u32_at(e + 4)));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        v
    }

    fn alloc(&mut self, len: usize) -> (usize, u64) {
        let off = self.next_buf;
        self.next_buf += len.next_multiple_of(64);
        if self.next_buf > MEM - 0x1000 {
            self.next_buf = BUF_OFF;
            return self.alloc(len);
        }
        (off, GPA0 + off as u64)
    }

    /// Transmit `frame` on queue 1 using descriptor head `head`: layout 0 =
    /// one descriptor (header + frame), 1 = header and frame split, 2 =
    /// indirect table with header and frame in two pieces.
    fn tx(&mut self, head: u16, frame: &[u8], layout: u8) {
        self.tx_on(1, head, frame, layout);
    }

    /// [`Guest::tx`] on guest-transmit queue `q` (1, 3, ...).
    fn tx_on(&mut self, q: usize, head: u16, frame: &[u8], layout: u8) {
        let mut hf = vec![0u8; 12];
        hf.extend_from_slice(frame);
        match layout {
            0 => {
                let (o, a) = self.alloc(hf.len());
                self.write(o, &hf);
                self.set_desc(q, head, a, hf.len() as u32, 0, 0);
            }
            1 => {
                let (o, a) = self.alloc(12);
                self.write(o, &hf[..12]);
                let (o2, a2) = self.alloc(frame.len());
                self.write(o2, frame);
                let nx = (head + 1) % QSIZE;
                self.set_desc(q, head, a, 12, NEXT, nx);
                self.set_desc(q, nx, a2, frame.len() as u32, 0, 0);
            }
            _ => {
                let (to, ta) = self.alloc(48);
                let cut = 12 + frame.len() / 2;
                let (o1, a1) = self.alloc(cut);
                self.write(o1, &hf[..cut]);
                let (o2, a2) = self.alloc(hf.len() - cut);
                self.write(o2, &hf[cut..]);
                self.set_desc_at(to, 0, a1, cut as u32, NEXT, 2);
                self.set_desc_at(to, 2, a2, (hf.len() - cut) as u32, 0, 0);
                self.set_desc_at(to, 1, 0, 0, 0, 0);
                self.set_desc(q, head, ta, 48, INDIRECT, 0);
            }
        }
        self.make_avail(q, head);
    }

    /// Post `n` receive buffers of `len` bytes on queue 0, heads from `first`.
    fn post_rx(&mut self, first: u16, n: u16, len: u32) -> Vec<(u16, usize)> {
        self.post_rx_on(0, first, n, len)
    }

    /// [`Guest::post_rx`] on guest-receive queue `q` (0, 2, ...).
    fn post_rx_on(&mut self, q: usize, first: u16, n: u16, len: u32) -> Vec<(u16, usize)> {
        (0..n)
            .map(|k| {
                let h = (first + k) % QSIZE;
                let (o, a) = self.alloc(len as usize);
                self.write(o, &vec![0xEE; len as usize]);
                self.set_desc(q, h, a, len, WRITE, 0);
                self.make_avail(q, h);
                (h, o)
            })
            .collect()
    }

    fn get_vring_base(&self, q: u32) -> u32 {
        msg::send_msg(&self.sock, msg::GET_VRING_BASE, 1, &Self::state(q, 0), &[]).unwrap();
        let m = msg::recv_msg(&self.sock).unwrap();
        assert_eq!(m.request, msg::GET_VRING_BASE);
        assert_eq!(m.u32_at(0), Some(q));
        m.u32_at(4).unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in Guest::on.
        unsafe {
            libc::munmap(self.base.cast(), MEM);
        }
    }
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; n];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
    }
    f
}

fn opts(path: &Path, mode: &str) -> VhostOptions {
    let mut m = BTreeMap::new();
    m.insert("socket".to_string(), path.display().to_string());
    m.insert("mode".to_string(), mode.to_string());
    VhostOptions::from_map(&m).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rx_all(port: &mut VhostUserPort, pool: &mut PacketPool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    port.rx_batch(pool, &mut out, 32);
    let v = out.iter().map(|p| p.data().to_vec()).collect();
    for p in out {
        pool.put(p);
    }
    v
}

fn tx(port: &mut VhostUserPort, pool: &mut PacketPool, frames: &[Vec<u8>]) -> usize {
    let mut v: Vec<Packet> = frames
        .iter()
        .map(|f| Packet::from_slice(f).unwrap())
        .collect();
    port.tx_batch(&mut v, pool)
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    port: VhostUserPort,
    pool: PacketPool,
}

fn server() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vhu.sock");
    let port = VhostUserPort::open("vhu0", &opts(&path, "server"))
        .unwrap()
        .remove(0);
    Setup {
        _dir: dir,
        path,
        port,
        pool: PacketPool::with_capacity(256),
    }
}

#[test]
fn negotiates_and_forwards_both_ways_without_mrg() {
    let mut s = server();
    let st = s.port.status();
    assert!(!st.link_up(), "down before any peer");
    let mut out = Vec::new();
    assert_eq!(s.port.rx_batch(&mut s.pool, &mut out, 32), 0);
    assert_eq!(tx(&mut s.port, &mut s.pool, &[frame(60, 0)]), 0);
    assert_eq!(
        s.port.counters().snapshot().tx_drop_reasons,
        vec![("port_down".to_string(), 1)]
    );

    let mut g = Guest::connect(&s.path);
    g.negotiate(F_INDIRECT);
    assert!(st.link_up());
    // The back-end polls: it tells the driver not to kick.
    assert_eq!(g.used_flags(1), 1);

    // guest -> switch, three descriptor layouts.
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(60 + 400 * i, i as u8)).collect();
    g.tx(0, &frames[0], 0);
    g.tx(10, &frames[1], 1);
    g.tx(20, &frames[2], 2);
    let got = rx_all(&mut s.port, &mut s.pool);
    assert_eq!(got, frames);
    assert_eq!(g.take_used(1), vec![(0, 0), (10, 0), (20, 0)]);
    let c = s.port.counters().snapshot();
    assert_eq!(c.rx_packets, 3);
    assert_eq!(
        c.rx_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );

    // switch -> guest, one chain per frame, header zeroed but for
    // num_buffers, which is 1 without MRG_RXBUF (virtio 1.1 §5.1.6.4; Linux
    // vhost-net was fixed to do the same).
    let bufs = g.post_rx(0, 4, 2048);
    let out_frames = vec![frame(64, 9), frame(1514, 3)];
    assert_eq!(tx(&mut s.port, &mut s.pool, &out_frames), 2);
    let used = g.take_used(0);
    assert_eq!(used, vec![(0, 12 + 64), (1, 12 + 1514)]);
    for (k, f) in out_frames.iter().enumerate() {
        let b = g.read(bufs[k].1, 12 + f.len());
        assert_eq!(
            &b[..12],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            "virtio-net header zeroed, num_buffers 1"
        );
        assert_eq!(&b[12..], &f[..]);
    }
    // Driver wants interrupts (avail flags 0): the call eventfd was written.
    let mut v = [0u8; 8];
    // SAFETY: reading 8 bytes from our eventfd into a live buffer.
    let n = unsafe { libc::read(g.calls[0].as_raw_fd(), v.as_mut_ptr().cast(), 8) };
    assert_eq!(n, 8, "guest receive queue was notified");
    // With NO_INTERRUPT set, no notification.
    g.set_avail_flags(0, 1);
    assert_eq!(tx(&mut s.port, &mut s.pool, &[frame(60, 1)]), 1);
    // SAFETY: as above.
    let n = unsafe { libc::read(g.calls[0].as_raw_fd(), v.as_mut_ptr().cast(), 8) };
    assert_eq!(n, -1, "no interrupt when the driver asked for none");

    // One remaining buffer; the second frame finds none: tx_ring_full.
    assert_eq!(
        tx(&mut s.port, &mut s.pool, &[frame(60, 1), frame(60, 2)]),
        1
    );
    let c = s.port.counters().snapshot();
    assert!(
        c.tx_drop_reasons.contains(&("tx_ring_full".to_string(), 1)),
        "{c:?}"
    );

    // Non-mergeable: a chain smaller than the frame is not consumed, the frame is an oversize drop.
    let before = g.used_idx(0);
    g.post_rx(4, 1, 256);
    assert_eq!(tx(&mut s.port, &mut s.pool, &[frame(1000, 1)]), 0);
    assert_eq!(g.used_idx(0), before);
    assert_eq!(
        tx(&mut s.port, &mut s.pool, &[frame(200, 1)]),
        1,
        "the next frame that fits uses it"
    );
    let c = s.port.counters().snapshot();
    assert!(
        c.tx_drop_reasons.contains(&("oversize".to_string(), 1)),
        "{c:?}"
    );
}

#[test]
fn mergeable_rx_buffers_spread_a_frame_and_set_num_buffers() {
    let mut s = server();
    let mut g = Guest::connect(&s.path);
    g.negotiate(F_MRG);
    let bufs = g.post_rx(0, 8, 512);
    let f = frame(1500, 5);
    assert_eq!(tx(&mut s.port, &mut s.pool, std::slice::from_ref(&f)), 1);
    // 12 + 1500 = 1512 bytes over 512-byte buffers: 512, 512, 488.
    assert_eq!(g.take_used(0), vec![(0, 512), (1, 512), (2, 488)]);
    let mut got = g.read(bufs[0].1, 512);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[..10], &[0u8; 10]);
    got.drain(..12);
    got.extend(g.read(bufs[1].1, 512));
    got.extend(g.read(bufs[2].1, 488));
    assert_eq!(got, f);
    // A small frame takes one buffer with num_buffers 1.
    assert_eq!(tx(&mut s.port, &mut s.pool, &[frame(60, 1)]), 1);
    assert_eq!(g.take_used(0), vec![(3, 72)]);
    assert_eq!(g.u16_at(bufs[3].1 + 10), 1);
    // Four buffers left (2048 bytes): a 1514-byte frame fits, then a second
    // does not and leaves the last buffer unconsumed.
    assert_eq!(
        tx(&mut s.port, &mut s.pool, &[frame(1514, 1), frame(1514, 2)]),
        1
    );
    assert_eq!(g.take_used(0).len(), 3);
    let c = s.port.counters().snapshot();
    assert!(
        c.tx_drop_reasons.contains(&("tx_ring_full".to_string(), 1)),
        "{c:?}"
    );
    assert_eq!(
        tx(&mut s.port, &mut s.pool, &[frame(100, 1)]),
        1,
        "the last buffer is still there"
    );
}

/// Post the guest memory at `off` (`len` bytes, header first) again as a
/// one-descriptor receive chain with head `h`, as a driver recycling its
/// buffers does, without touching its contents.
fn repost_rx(g: &mut Guest, h: u16, off: usize, len: u32) {
    g.set_desc(0, h, GPA0 + off as u64, len, WRITE, 0);
    g.make_avail(0, h);
}

#[test]
fn recycled_receive_buffers_get_a_correct_header_whatever_they_held() {
    // The header is stored only where it differs from what the buffer holds
    // (set_net_hdr): whatever a recycled buffer held, the guest must read a
    // zeroed header with the right num_buffers (virtio 1.1 §5.1.6.4).
    let mut s = server();
    let mut g = Guest::connect(&s.path);
    g.negotiate(F_MRG);
    let bufs = g.post_rx(0, 3, 512);
    let big = frame(1500, 7);
    assert_eq!(tx(&mut s.port, &mut s.pool, std::slice::from_ref(&big)), 1);
    assert_eq!(g.take_used(0), vec![(0, 512), (1, 512), (2, 488)]);
    assert_eq!(g.u16_at(bufs[0].1 + 10), 3);
    // Buffer 0 holds num_buffers 3, buffer 1 frame bytes where its header
    // goes, buffer 2 a header whose bytes 0-9 are right but num_buffers is
    // not; then buffer 0 again with a correct header and one stale field.
    repost_rx(&mut g, 3, bufs[0].1, 512);
    repost_rx(&mut g, 4, bufs[1].1, 512);
    g.write(bufs[2].1, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
    repost_rx(&mut g, 5, bufs[2].1, 512);
    let small: Vec<Vec<u8>> = (0..3).map(|i| frame(60, 20 + i)).collect();
    assert_eq!(tx(&mut s.port, &mut s.pool, &small), 3);
    assert_eq!(g.take_used(0), vec![(3, 72), (4, 72), (5, 72)]);
    let want_hdr = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    for (i, b) in bufs.iter().enumerate() {
        let got = g.read(b.1, 72);
        assert_eq!(got[..12], want_hdr, "buffer {i}'s header");
        assert_eq!(got[12..], small[i][..], "buffer {i}'s frame");
    }
    // Already right: stays right. One stale byte (gso_size): cleared.
    repost_rx(&mut g, 6, bufs[0].1, 512);
    g.write(bufs[1].1 + 5, &[0x80]);
    repost_rx(&mut g, 7, bufs[1].1, 512);
    assert_eq!(tx(&mut s.port, &mut s.pool, &small[..2]), 2);
    assert_eq!(g.take_used(0), vec![(6, 72), (7, 72)]);
    assert_eq!(g.read(bufs[0].1, 12), want_hdr);
    assert_eq!(g.read(bufs[1].1, 12), want_hdr);

    // The general walk (a chain of two descriptors, header alone in the
    // first) over buffers that held something else: the header is zeroed
    // and num_buffers counts the chains of this frame only.
    let (h0, a0) = g.alloc(12);
    let (f0, fa0) = g.alloc(600);
    let (h1, a1) = g.alloc(12);
    let (f1, fa1) = g.alloc(600);
    for (o, n) in [(h0, 12), (f0, 600), (h1, 12), (f1, 600)] {
        g.write(o, &vec![0x5A; n]);
    }
    g.set_desc(0, 8, a0, 12, WRITE | NEXT, 9);
    g.set_desc(0, 9, fa0, 600, WRITE, 0);
    g.make_avail(0, 8);
    g.set_desc(0, 10, a1, 12, WRITE | NEXT, 11);
    g.set_desc(0, 11, fa1, 600, WRITE, 0);
    g.make_avail(0, 10);
    let mid = frame(1000, 9);
    assert_eq!(tx(&mut s.port, &mut s.pool, std::slice::from_ref(&mid)), 1);
    assert_eq!(g.take_used(0), vec![(8, 612), (10, 400)]);
    assert_eq!(g.read(h0, 12), [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
    let mut got = g.read(f0, 600);
    got.extend(g.read(h1, 12));
    got.extend(g.read(f1, 388));
    assert_eq!(
        got, mid,
        "the second chain's first bytes are frame, not header"
    );
}

#[test]
fn bad_descriptors_are_counted_returned_and_never_crash() {
    let mut s = server();
    let st = s.port.status();
    let mut g = Guest::connect(&s.path);
    g.negotiate(F_INDIRECT);
    let good = frame(100, 1);
    let (o, a) = g.alloc(112);
    let mut hf = vec![0u8; 12];
    hf.extend_from_slice(&good);
    g.write(o, &hf);
    let mem_end = GPA0 + MEM as u64;
    // (head, descriptors (index, addr, len, flags, next)) and the error each must count.
    let cases: Vec<(Vec<Desc>, VqError)> = vec![
        (vec![(30, mem_end - 8, 112, 0, 0)], VqError::BadAddr),
        (vec![(30, 0x1000, 112, 0, 0)], VqError::BadAddr),
        (vec![(30, a, u32::MAX, 0, 0)], VqError::BadAddr),
        (vec![(30, a, 0, 0, 0)], VqError::Short),
        (vec![(30, a, 8, 0, 0)], VqError::Short),
        (
            vec![(30, a, 12, NEXT, 31), (31, a, 0, NEXT, 30)],
            VqError::Loop,
        ),
        (vec![(30, a, 12, NEXT, 999)], VqError::BadIndex),
        (vec![(30, a, 112, WRITE, 0)], VqError::BadFlags),
        (vec![(30, a, 20, INDIRECT, 0)], VqError::BadIndirect),
        (vec![(30, a, 32, INDIRECT | NEXT, 31)], VqError::BadIndirect),
        (vec![(30, mem_end - 16, 32, INDIRECT, 0)], VqError::BadAddr),
        (vec![(30, a, 2100 + 12, 0, 0)], VqError::Oversize),
    ];
    for (k, (descs, want)) in cases.iter().enumerate() {
        let before = st.error_count(*want);
        for &(i, addr, len, flags, next) in descs {
            g.set_desc(1, i, addr, len, flags, next);
        }
        g.make_avail(1, descs[0].0);
        // A good frame after it still goes through.
        g.set_desc(1, 40, a, 112, 0, 0);
        g.make_avail(1, 40);
        let got = rx_all(&mut s.port, &mut s.pool);
        assert_eq!(got, vec![good.clone()], "case {k} ({want:?})");
        assert_eq!(
            st.error_count(*want),
            before + 1,
            "case {k} ({want:?}) counted"
        );
        assert_eq!(
            g.take_used(1),
            vec![(u32::from(descs[0].0), 0), (40, 0)],
            "case {k}: both chains returned"
        );
        assert!(st.link_up());
        assert_eq!(
            s.pool.available(),
            256,
            "case {k}: the bad chain's buffer is back"
        );
    }
    // Nested indirect: an indirect table whose entry is itself indirect.
    let (to, ta) = g.alloc(16);
    g.set_desc_at(to, 0, a, 16, INDIRECT, 0);
    g.set_desc(1, 30, ta, 16, INDIRECT, 0);
    g.make_avail(1, 30);
    assert!(rx_all(&mut s.port, &mut s.pool).is_empty());
    assert_eq!(st.error_count(VqError::BadIndirect), 3);
    let c = s.port.counters().snapshot();
    assert_eq!(c.rx_packets, cases.len() as u64);
    assert_eq!(
        c.rx_errors,
        cases.len() as u64,
        "every bad chain but the oversize one is an rx error"
    );
    assert!(
        c.rx_drop_reasons.contains(&("oversize".to_string(), 1)),
        "{c:?}"
    );

    // Receive side: a read-only chain in the guest's receive queue.
    g.set_desc(0, 0, a, 2048, 0, 0);
    g.make_avail(0, 0);
    assert_eq!(tx(&mut s.port, &mut s.pool, &[frame(60, 0)]), 0);
    assert_eq!(st.error_count(VqError::BadFlags), 2);
    assert_eq!(g.take_used(0), vec![(0, 0)]);
    assert_eq!(s.port.counters().snapshot().tx_errors, 1);
}

#[test]
fn corrupt_ring_resets_the_connection_and_a_new_one_works() {
    let mut s = server();
    let st = s.port.status();
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    // The available index runs 1000 entries ahead of a 256-entry ring.
    g.write(ring_off(1) + 0x1000 + 2, &1000u16.to_le_bytes());
    assert!(rx_all(&mut s.port, &mut s.pool).is_empty());
    assert_eq!(st.error_count(VqError::BadAvailIdx), 1);
    wait_for("the reset", || st.resets() == 1 && !st.link_up());
    // The back-end closed the connection.
    let mut b = [0u8; 1];
    use std::io::Read;
    assert_eq!((&g.sock).read(&mut b).unwrap_or(0), 0);
    drop(g);
    // A broken head index also stops the queue.
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    wait_for("link up", || st.link_up());
    g.make_avail(1, 5000);
    assert!(rx_all(&mut s.port, &mut s.pool).is_empty());
    wait_for("the second reset", || st.resets() == 2);
    drop(g);
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    g.tx(0, &frame(60, 7), 0);
    assert_eq!(rx_all(&mut s.port, &mut s.pool), vec![frame(60, 7)]);
    assert_eq!(st.connects(), 3);
}

#[test]
fn disconnect_takes_the_link_down_and_a_restarted_peer_resumes() {
    let mut s = server();
    let st = s.port.status();
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    for i in 0..5u16 {
        g.tx(i, &frame(60, i as u8), 0);
    }
    assert_eq!(rx_all(&mut s.port, &mut s.pool).len(), 5);
    drop(g); // the application dies mid-stream
    wait_for("link down", || !st.link_up() && !st.connected());
    // The polling side lets go of the old memory on its next batch.
    assert!(rx_all(&mut s.port, &mut s.pool).is_empty());
    assert_eq!(tx(&mut s.port, &mut s.pool, &[frame(60, 0)]), 0);
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    g.tx(0, &frame(70, 1), 1);
    assert_eq!(rx_all(&mut s.port, &mut s.pool), vec![frame(70, 1)]);
}

#[test]
fn get_vring_base_reports_where_the_polling_thread_stopped() {
    let mut s = server();
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    for i in 0..7u16 {
        g.tx(i, &frame(60, i as u8), 0);
    }
    assert_eq!(rx_all(&mut s.port, &mut s.pool).len(), 7);
    // The front-end stops the queue while the port is being polled.
    let sock = g.sock.try_clone().unwrap();
    let h = std::thread::spawn(move || {
        msg::send_msg(&sock, msg::GET_VRING_BASE, 1, &Guest::state(1, 0), &[]).unwrap();
        let m = msg::recv_msg(&sock).unwrap();
        m.u32_at(4).unwrap()
    });
    while !h.is_finished() {
        rx_all(&mut s.port, &mut s.pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.join().unwrap(), 7);
    // Restart the queue where it stopped (as after a VM migration) and keep going.
    g.start_queue(1, 7);
    g.tx(7, &frame(80, 1), 0);
    assert_eq!(rx_all(&mut s.port, &mut s.pool), vec![frame(80, 1)]);
    assert_eq!(g.get_vring_base(0), 0);
}

#[test]
fn disabling_a_queue_and_resending_the_memory_table_keeps_the_position() {
    // DPDK virtio-user: VRING_ENABLE 0, SET_MEM_TABLE, VRING_ENABLE 1 with no
    // SET_VRING_BASE in between (../shared/BENCH.md pitfall 3).
    let mut s = server();
    let st = s.port.status();
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    for i in 0..3u16 {
        g.tx(i, &frame(60, i as u8), 0);
    }
    assert_eq!(rx_all(&mut s.port, &mut s.pool).len(), 3);
    let sock = g.sock.try_clone().unwrap();
    let fd = g.fd.try_clone().unwrap();
    let base = g.base as u64;
    let h = std::thread::spawn(move || {
        for q in 0..2u32 {
            msg::send_msg(&sock, msg::SET_VRING_ENABLE, 9, &Guest::state(q, 0), &[]).unwrap();
            assert_eq!(msg::recv_msg(&sock).unwrap().u64_at(0), Some(0));
        }
        let mut p = Vec::new();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        for v in [GPA0, MEM as u64, base, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        msg::send_msg(&sock, msg::SET_MEM_TABLE, 9, &p, &[fd.as_raw_fd()]).unwrap();
        assert_eq!(msg::recv_msg(&sock).unwrap().u64_at(0), Some(0));
        for q in 0..2u32 {
            msg::send_msg(&sock, msg::SET_VRING_ENABLE, 9, &Guest::state(q, 1), &[]).unwrap();
            assert_eq!(msg::recv_msg(&sock).unwrap().u64_at(0), Some(0));
        }
    });
    while !h.is_finished() {
        rx_all(&mut s.port, &mut s.pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    h.join().unwrap();
    assert!(st.link_up());
    g.tx(3, &frame(90, 3), 0);
    assert_eq!(rx_all(&mut s.port, &mut s.pool), vec![frame(90, 3)]);
    assert_eq!(g.take_used(1).len(), 4);
}

#[test]
fn client_mode_reconnects_when_the_application_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let mut port = VhostUserPort::open("vhuc", &opts(&path, "client"))
        .unwrap()
        .remove(0);
    let mut pool = PacketPool::with_capacity(64);
    let st = port.status();
    for round in 0..2u8 {
        // The application (server side) starts; the switch connects to it.
        let l = UnixListener::bind(&path).unwrap();
        let (c, _) = l.accept().unwrap();
        let mut g = Guest::on(c);
        g.negotiate(0);
        wait_for("link up", || st.link_up());
        g.tx(0, &frame(60, round), 0);
        assert_eq!(rx_all(&mut port, &mut pool), vec![frame(60, round)]);
        // The application exits.
        drop(g);
        drop(l);
        std::fs::remove_file(&path).unwrap();
        wait_for("link down", || !st.link_up());
    }
    assert_eq!(st.connects(), 2);
    st.shutdown();
}

#[test]
fn server_socket_paths_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file is never replaced.
    let f = dir.path().join("file");
    std::fs::write(&f, b"keep me").unwrap();
    let e = VhostUserPort::open("a", &opts(&f, "server")).unwrap_err();
    assert!(matches!(e, VhostError::NotSocket(_)), "{e}");
    assert_eq!(std::fs::read(&f).unwrap(), b"keep me");
    // A stale socket (nobody listening) is replaced.
    let p = dir.path().join("stale.sock");
    drop(UnixListener::bind(&p).unwrap());
    let port = VhostUserPort::open("b", &opts(&p, "server"))
        .unwrap()
        .remove(0);
    // A live one is refused.
    let e = VhostUserPort::open("c", &opts(&p, "server")).unwrap_err();
    assert!(matches!(e, VhostError::InUse(_)), "{e}");
    // Removing the port removes its socket.
    port.status().shutdown();
    assert!(!p.exists());
    // Owner and permissions are applied.
    let mut m = BTreeMap::new();
    let q = dir.path().join("perm.sock");
    m.insert("socket".to_string(), q.display().to_string());
    m.insert("perm".to_string(), "0640".to_string());
    let port = VhostUserPort::open("d", &VhostOptions::from_map(&m).unwrap())
        .unwrap()
        .remove(0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&q).unwrap().permissions().mode() & 0o777,
        0o640
    );
    port.status().shutdown();
}

const F_MQ: u64 = 1 << 22;

fn opts_mq(path: &Path, n: u32) -> VhostOptions {
    let mut m = BTreeMap::new();
    m.insert("socket".to_string(), path.display().to_string());
    m.insert("n_rxq".to_string(), n.to_string());
    VhostOptions::from_map(&m).unwrap()
}

/// Send one request that the back-end acknowledges while `polled` keep
/// polling (the back-end waits for the queue objects to leave a stopping
/// queue, as the polling threads would do in switchd).
fn send_while_polling(
    g: &Guest,
    req: u32,
    payload: Vec<u8>,
    polled: &mut [&mut VhostUserPort],
    pool: &mut PacketPool,
) {
    let sock = g.sock.try_clone().unwrap();
    let h = std::thread::spawn(move || {
        let flags = msg::FLAG_VERSION | msg::FLAG_NEED_REPLY;
        msg::send_msg(&sock, req, flags, &payload, &[]).unwrap();
        msg::recv_msg(&sock).unwrap().u64_at(0)
    });
    let t0 = Instant::now();
    while !h.is_finished() {
        for p in polled.iter_mut() {
            rx_all(p, pool);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.join().unwrap(), Some(0), "request {req} acked");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "the back-end did not wait for the acknowledgement timeout"
    );
}

#[test]
fn two_queue_pairs_are_two_queue_objects_each_on_its_own_rings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mq.sock");
    let mut qs = VhostUserPort::open("vhu0", &opts_mq(&path, 2)).unwrap();
    assert_eq!(qs.len(), 2);
    let mut q1 = qs.pop().unwrap();
    let mut q0 = qs.pop().unwrap();
    assert_eq!((q0.queue(), q1.queue()), (0, 1));
    let st = q0.status();
    assert_eq!(st.queue_pairs(), 2);
    let mut pool = PacketPool::with_capacity(256);

    for round in 0..2u8 {
        let mut g = Guest::connect(&path);
        msg::send_msg(&g.sock, msg::GET_QUEUE_NUM, 1, &[], &[]).unwrap();
        assert_eq!(g.recv_u64(msg::GET_QUEUE_NUM), 2);
        g.negotiate_pairs(F_MQ, 2);
        wait_for("link up", || st.link_up());

        // guest -> switch: each guest-transmit queue reaches its own object.
        let on1: Vec<Vec<u8>> = (0..5)
            .map(|i| frame(60 + i, 10 * round + i as u8))
            .collect();
        let on3: Vec<Vec<u8>> = (0..3)
            .map(|i| frame(90 + i, 100 + round + i as u8))
            .collect();
        for (i, f) in on1.iter().enumerate() {
            g.tx_on(1, i as u16, f, 0);
        }
        for (i, f) in on3.iter().enumerate() {
            g.tx_on(3, 100 + 10 * i as u16, f, 1);
        }
        // Queue object 1 polled on another thread, as a second polling
        // thread would; object 0 here.
        let h = std::thread::spawn(move || {
            let mut pool = PacketPool::with_capacity(64);
            let mut got = Vec::new();
            let t0 = Instant::now();
            while got.len() < 3 && t0.elapsed() < Duration::from_secs(5) {
                got.extend(rx_all(&mut q1, &mut pool));
            }
            (q1, got)
        });
        let got0 = rx_all(&mut q0, &mut pool);
        let (back, got1) = h.join().unwrap();
        q1 = back;
        assert_eq!(got0, on1, "round {round}: queue 1 frames, on object 0 only");
        assert_eq!(got1, on3, "round {round}: queue 3 frames, on object 1 only");
        assert_eq!(g.take_used(1).len(), 5);
        assert_eq!(g.take_used(3).len(), 3);

        // switch -> guest: each object sends on its own guest-receive queue.
        let b0 = g.post_rx_on(0, 0, 4, 2048);
        let b2 = g.post_rx_on(2, 0, 4, 2048);
        assert_eq!(tx(&mut q0, &mut pool, &[frame(64, 1), frame(65, 2)]), 2);
        assert_eq!(tx(&mut q1, &mut pool, &[frame(66, 3)]), 1);
        assert_eq!(g.take_used(0), vec![(0, 12 + 64), (1, 12 + 65)]);
        assert_eq!(g.take_used(2), vec![(0, 12 + 66)]);
        assert_eq!(&g.read(b0[1].1 + 12, 65)[..], &frame(65, 2)[..]);
        assert_eq!(&g.read(b2[0].1 + 12, 66)[..], &frame(66, 3)[..]);

        // Per-object counters: each frame counted once, by the object that moved it.
        let (c0, c1) = (q0.counters().snapshot(), q1.counters().snapshot());
        let r = u64::from(round) + 1;
        assert_eq!((c0.rx_packets, c1.rx_packets), (5 * r, 3 * r));
        assert_eq!((c0.tx_packets, c1.tx_packets), (2 * r, r));

        // The application goes away: both objects lose their rings.
        drop(g);
        wait_for("link down", || !st.link_up() && !st.connected());
        assert!(rx_all(&mut q0, &mut pool).is_empty());
        assert!(rx_all(&mut q1, &mut pool).is_empty());
        assert_eq!(tx(&mut q1, &mut pool, &[frame(60, 0)]), 0);
        let d = q1.counters().snapshot().tx_drop_reasons;
        assert_eq!(d, vec![("port_down".to_string(), r)]);
    }
    assert_eq!(st.connects(), 2);
    // The port runs while any queue object lives (one may be moving between
    // threads); the last one dropped stops it and removes the socket.
    drop(q0);
    std::thread::sleep(Duration::from_millis(150));
    assert!(path.exists(), "object 1 still holds the port");
    drop(q1);
    wait_for("the socket removed", || !path.exists());
    st.shutdown();
}

#[test]
fn a_guest_enabling_fewer_queues_gets_every_frame_on_the_enabled_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mq1.sock");
    let mut qs = VhostUserPort::open("vhu1", &opts_mq(&path, 2)).unwrap();
    let mut q1 = qs.pop().unwrap();
    let mut q0 = qs.pop().unwrap();
    let st = q0.status();
    let mut pool = PacketPool::with_capacity(256);

    // Like `testpmd --vdev net_virtio_user0,queues=1` on a port offering 2:
    // only queue pair 0 runs.
    let mut g = Guest::connect(&path);
    g.negotiate_pairs(F_MQ, 1);
    wait_for("link up", || st.link_up());
    let b0 = g.post_rx_on(0, 0, 8, 2048);
    // Object 1 has no guest-receive queue: its frames go through object 0's
    // redirect queue, sent on object 0's next poll.
    assert_eq!(tx(&mut q1, &mut pool, &[frame(70, 1), frame(71, 2)]), 0);
    assert!(g.take_used(0).is_empty(), "not sent by object 1 itself");
    assert!(rx_all(&mut q0, &mut pool).is_empty());
    assert_eq!(g.take_used(0), vec![(0, 12 + 70), (1, 12 + 71)]);
    assert_eq!(&g.read(b0[1].1 + 12, 71)[..], &frame(71, 2)[..]);
    assert_eq!(q0.counters().snapshot().tx_packets, 2);
    let c1 = q1.counters().snapshot();
    assert_eq!((c1.tx_packets, c1.tx_dropped), (0, 0), "{c1:?}");
    // Object 0's own frames still go straight out.
    assert_eq!(tx(&mut q0, &mut pool, &[frame(72, 3)]), 1);
    assert_eq!(g.take_used(0), vec![(2, 12 + 72)]);

    // The guest enables queue pair 1 at run time: object 1 sends on it.
    g.start_queue(2, 0);
    g.start_queue(3, 0);
    g.post_rx_on(2, 0, 4, 2048);
    assert_eq!(tx(&mut q1, &mut pool, &[frame(73, 4)]), 1);
    assert_eq!(g.take_used(2), vec![(0, 12 + 73)]);
    g.tx_on(3, 0, &frame(74, 5), 0);
    assert_eq!(rx_all(&mut q1, &mut pool), vec![frame(74, 5)]);

    // And disables it again: object 1 redirects once more, nothing lost.
    send_while_polling(
        &g,
        msg::SET_VRING_ENABLE,
        Guest::state(2, 0),
        &mut [&mut q0, &mut q1],
        &mut pool,
    );
    assert_eq!(tx(&mut q1, &mut pool, &[frame(75, 6)]), 0);
    rx_all(&mut q0, &mut pool);
    assert_eq!(g.take_used(0), vec![(3, 12 + 75)]);
    assert!(g.take_used(2).is_empty());

    // No guest-receive queue at all: port_down, counted by the sender.
    send_while_polling(
        &g,
        msg::SET_VRING_ENABLE,
        Guest::state(0, 0),
        &mut [&mut q0, &mut q1],
        &mut pool,
    );
    assert_eq!(tx(&mut q1, &mut pool, &[frame(76, 7)]), 0);
    assert_eq!(tx(&mut q0, &mut pool, &[frame(77, 8)]), 0);
    rx_all(&mut q0, &mut pool);
    assert!(g.take_used(0).is_empty());
    for q in [&q0, &q1] {
        let d = q.counters().snapshot().tx_drop_reasons;
        assert_eq!(d, vec![("port_down".to_string(), 1)], "queue {}", q.queue());
    }
    // The guest-transmit queues still run: receiving is unaffected.
    g.tx_on(1, 50, &frame(78, 9), 0);
    assert_eq!(rx_all(&mut q0, &mut pool), vec![frame(78, 9)]);
    drop(g);
    st.shutdown();
}

#[test]
fn a_full_redirect_queue_drops_tx_ring_full_and_a_gone_peer_gets_no_stale_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mq2.sock");
    let mut qs = VhostUserPort::open("vhu2", &opts_mq(&path, 2)).unwrap();
    let mut q1 = qs.pop().unwrap();
    let q0 = qs.pop().unwrap();
    let st = q0.status();
    let mut pool = PacketPool::with_capacity(8192);
    let mut g = Guest::connect(&path);
    g.negotiate_pairs(F_MQ, 1);
    wait_for("link up", || st.link_up());
    // Object 0 is not polled (its thread is busy): its redirect queue fills.
    let depth = switch::port::vhost_user::REDIRECT_DEPTH;
    let frames: Vec<Vec<u8>> = (0..depth + 5).map(|i| frame(60, i as u8)).collect();
    for chunk in frames.chunks(32) {
        assert_eq!(tx(&mut q1, &mut pool, chunk), 0);
    }
    let c1 = q1.counters().snapshot();
    assert_eq!(c1.tx_drop_reasons, vec![("tx_ring_full".to_string(), 5)]);
    // The peer leaves before object 0 is polled again: the waiting frames
    // are port_down drops, never sent to the next peer.
    drop(g);
    wait_for("link down", || !st.connected());
    let mut q0 = q0;
    let t0 = Instant::now();
    while rx_all(&mut q0, &mut pool).is_empty()
        && q0.counters().snapshot().tx_dropped < depth as u64
        && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let c0 = q0.counters().snapshot();
    assert_eq!(
        c0.tx_drop_reasons,
        vec![("port_down".to_string(), depth as u64)]
    );
    let mut g = Guest::connect(&path);
    g.negotiate_pairs(F_MQ, 1);
    wait_for("link up", || st.link_up());
    g.post_rx_on(0, 0, 8, 2048);
    assert!(rx_all(&mut q0, &mut pool).is_empty());
    assert!(
        g.take_used(0).is_empty(),
        "no stale frame reached the new peer"
    );
    assert_eq!(q0.counters().snapshot().tx_packets, 0);
    drop(g);
    drop(q0);
    st.shutdown();
}

/// The batched fast path (vring.rs: heads, then one-descriptor chains, then
/// copies; frames up to 128 bytes copied with fixed-size moves) must give
/// exactly what the general walk gives: every size around the small-copy
/// boundaries, one-descriptor chains mixed with split and indirect ones in
/// the same batch, more chains than one look-ahead window, and not one byte
/// written past a frame in the guest's buffer.
#[test]
fn batched_fast_path_keeps_every_size_layout_and_order() {
    let mut s = server();
    let mut g = Guest::connect(&s.path);
    g.negotiate(F_MRG | F_INDIRECT);
    let sizes = [
        14usize, 15, 16, 17, 31, 32, 33, 60, 63, 64, 65, 100, 127, 128, 129, 1514,
    ];
    let frames: Vec<Vec<u8>> = (0..45)
        .map(|k| frame(sizes[k % sizes.len()], k as u8))
        .collect();
    // Guest -> switch: 45 chains (two descriptors apart: layout 1 uses two),
    // layouts 0, 0, 1, 0, 2, ... so fast and general chains alternate.
    for (k, f) in frames.iter().enumerate() {
        let layout = [0u8, 0, 1, 0, 2][k % 5];
        g.tx(2 * k as u16, f, layout);
    }
    let mut got = rx_all(&mut s.port, &mut s.pool);
    assert_eq!(got.len(), 32, "one batch of 32 (rx_all's max)");
    got.extend(rx_all(&mut s.port, &mut s.pool));
    assert_eq!(got.len(), frames.len());
    for (k, (a, b)) in got.iter().zip(frames.iter()).enumerate() {
        assert_eq!(a, b, "frame {k} ({} bytes)", b.len());
    }
    let used = g.take_used(1);
    let heads: Vec<u32> = used.iter().map(|u| u.0).collect();
    assert_eq!(heads, (0..45).map(|k| 2 * k).collect::<Vec<u32>>());

    // Switch -> guest: 45 buffers of 2048 bytes filled with 0xEE, the same
    // frames in one tx batch (more than one look-ahead window).
    let bufs = g.post_rx(0, 45, 2048);
    assert_eq!(tx(&mut s.port, &mut s.pool, &frames), 45);
    let used = g.take_used(0);
    assert_eq!(used.len(), 45);
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(used[k], (u32::from(bufs[k].0), (12 + f.len()) as u32));
        let b = g.read(bufs[k].1, 12 + f.len() + 64);
        assert_eq!(
            &b[..12],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            "frame {k} header"
        );
        assert_eq!(
            &b[12..12 + f.len()],
            &f[..],
            "frame {k} ({} bytes)",
            f.len()
        );
        assert!(
            b[12 + f.len()..].iter().all(|&x| x == 0xEE),
            "frame {k} ({} bytes): bytes written past the frame",
            f.len()
        );
    }
    let c = s.port.counters().snapshot();
    assert_eq!((c.rx_packets, c.tx_packets), (45, 45));
    assert_eq!((c.rx_errors, c.tx_errors), (0, 0));
}

/// A head index out of range in the middle of a batch: the chains before it
/// are delivered and returned, then the queue stops (the port resets), and
/// nothing panics.
#[test]
fn bad_head_mid_batch_delivers_what_came_before_and_stops() {
    let mut s = server();
    let st = s.port.status();
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    let frames: Vec<Vec<u8>> = (0..5).map(|k| frame(60, k)).collect();
    for (k, f) in frames.iter().enumerate() {
        g.tx(k as u16, f, 0);
    }
    g.make_avail(1, QSIZE + 3); // not below the queue size
    g.tx(9, &frame(60, 9), 0);
    let got = rx_all(&mut s.port, &mut s.pool);
    assert_eq!(got, frames);
    assert_eq!(st.error_count(VqError::BadIndex), 1);
    assert_eq!(
        g.take_used(1),
        (0..5).map(|k| (k, 0)).collect::<Vec<(u32, u32)>>()
    );
    assert!(rx_all(&mut s.port, &mut s.pool).is_empty(), "queue stopped");
}

/// Every packet handed to the transmit side comes back to the pool, whether
/// it was delivered, too large for the chain on offer (`oversize`, the chain
/// given back unconsumed) or found no chain (`tx_ring_full`), with its next
/// hop cleared; the used ring gets the delivered chains in order. (The
/// transmit loop reads the batch by reference and returns it in one block,
/// h43: a packet lost or returned twice there would show here.)
#[test]
fn transmit_returns_every_packet_to_the_pool_delivered_or_dropped() {
    let mut s = server();
    let mut g = Guest::connect(&s.path);
    g.negotiate(0);
    let big = g.post_rx(0, 2, 2048);
    let small = g.post_rx(2, 1, 40);
    let frames = [
        frame(60, 1),
        frame(60, 2),
        frame(100, 3),
        frame(20, 4),
        frame(60, 5),
    ];
    let mut v: Vec<Packet> = frames
        .iter()
        .map(|f| {
            let mut p = Packet::from_slice(f).unwrap();
            p.set_nexthop(0x0a00_0001);
            p
        })
        .collect();
    let before = s.pool.available();
    assert_eq!(s.port.tx_batch(&mut v, &mut s.pool), 3);
    assert!(v.is_empty(), "the batch is drained");
    assert_eq!(
        s.pool.available(),
        before + frames.len(),
        "all five are back"
    );
    let used = g.take_used(0);
    let hdr = used[0].1 as usize - 60;
    assert!(hdr == 10 || hdr == 12, "{used:?}");
    assert_eq!(
        used,
        vec![
            (u32::from(big[0].0), (hdr + 60) as u32),
            (u32::from(big[1].0), (hdr + 60) as u32),
            (u32::from(small[0].0), (hdr + 20) as u32),
        ]
    );
    assert_eq!(&g.read(small[0].1 + hdr, 20)[..], &frames[3][..]);
    let c = s.port.counters().snapshot();
    assert_eq!(c.tx_packets, 3);
    assert!(
        c.tx_drop_reasons.contains(&("oversize".to_string(), 1)),
        "{c:?}"
    );
    assert!(
        c.tx_drop_reasons.contains(&("tx_ring_full".to_string(), 1)),
        "{c:?}"
    );
    // Nothing in the pool carries a next hop now.
    let mut all = Vec::new();
    while let Some(p) = s.pool.get() {
        assert_eq!(p.nexthop(), 0);
        assert!(p.tunnel().is_none());
        all.push(p);
    }
    assert_eq!(all.len(), before + frames.len());
}
