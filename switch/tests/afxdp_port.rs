//! AF_XDP ports against real kernel interfaces.
//!
//! Each test builds its own topology: a veth pair whose host end stays in the
//! root namespace (the port binds there) and whose peer goes into a private
//! network namespace `fsx-<pid>-<n>`, with fixed MACs and an address. Frames
//! are sent and captured on the namespace side with python3 AF_PACKET
//! sockets, so every byte is checked. A guard deletes the namespace and the
//! veth even when an assertion fails.
//!
//! Needs root (AF_XDP, netns) and bpffs; without root each test says so and
//! returns.
#![cfg(feature = "afxdp")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use switch::packet::buf::{umem_packets_dropped, FrameCounts};
use switch::packet::{Packet, PacketPool};
use switch::port::afxdp::{
    xdp_program_ids, AfxdpError, AfxdpOptions, AfxdpPort, AfxdpUmem, XdpMode,
};
use switch::port::{DropReason, Port};

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// IEEE local experimental ethertype: no stack on either side reacts to it.
const ETHERTYPE: u16 = 0x88b5;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("skipping: needs root");
    }
    r
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ensure_bpffs() {
    let _ = Command::new("sh")
        .args([
            "-c",
            "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
        ])
        .status();
}

/// A veth pair: `host` in the root namespace, `peer` in namespace `ns`.
struct Topo {
    host: String,
    peer: String,
    ns: String,
}

impl Topo {
    fn new(mtu: u32) -> Topo {
        ensure_bpffs();
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let t = Topo {
            host: format!("fx{pid}h{n}"),
            peer: format!("fx{pid}p{n}"),
            ns: format!("fsx-{pid}-{n}"),
        };
        let mtu = mtu.to_string();
        let (h, p, ns) = (t.host.as_str(), t.peer.as_str(), t.ns.as_str());
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "link", "add", h, "type", "veth", "peer", "name", p]);
        sh(&["ip", "link", "set", p, "netns", ns]);
        sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{h}.disable_ipv6=1"),
        ]);
        sh(&[
            "ip",
            "link",
            "set",
            h,
            "address",
            "02:00:00:00:00:01",
            "mtu",
            &mtu,
            "up",
        ]);
        let nsx = |a: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(a);
            sh(&v);
        };
        nsx(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{p}.disable_ipv6=1"),
        ]);
        nsx(&[
            "ip",
            "link",
            "set",
            p,
            "address",
            "02:00:00:00:00:02",
            "mtu",
            &mtu,
            "up",
        ]);
        nsx(&["ip", "addr", "add", "10.99.0.2/24", "dev", p]);
        nsx(&[
            "ip",
            "neigh",
            "add",
            "10.99.0.1",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            p,
            "nud",
            "permanent",
        ]);
        t
    }

    fn opts(&self) -> AfxdpOptions {
        AfxdpOptions::new(&self.host)
    }

    /// Send raw frames out of the namespace end (they arrive on `host`).
    fn send_from_ns(&self, frames: &[Vec<u8>]) {
        let hexes: Vec<String> = frames.iter().map(|f| hex(f)).collect();
        let script = "import socket,sys\n\
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
s.bind((sys.argv[1],0))\n\
for h in sys.argv[2:]: s.send(bytes.fromhex(h))\n";
        let mut args = vec![
            "netns", "exec", &self.ns, "python3", "-c", script, &self.peer,
        ];
        args.extend(hexes.iter().map(String::as_str));
        let out = Command::new("ip").args(&args).output().expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start capturing, in the namespace, the first frame of our ethertype
    /// that contains `marker`; returns once the socket is bound.
    fn capture_in_ns(&self, marker: &[u8]) -> Capture {
        // A plain multi-line literal: Python needs the indentation kept.
        let script = "import socket,sys
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x88b5))
s.bind((sys.argv[1],0))
s.settimeout(3)
m=bytes.fromhex(sys.argv[2])
print('ready',flush=True)
while True:
  f=s.recv(4096)
  if m in f:
    print(f.hex(),flush=True)
    break
";
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "python3",
                "-c",
                script,
                &self.peer,
                &hex(marker),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready", "capture did not start");
        Capture { child, out }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Deleting the namespace deletes the peer, and with it the host end.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .stderr(Stdio::null())
            .status();
    }
}

struct Capture {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Capture {
    /// The captured frame (None when nothing matched within 3 s).
    fn frame(mut self) -> Option<Vec<u8>> {
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        let _ = self.child.wait();
        unhex(line.trim())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// An Ethernet frame of our ethertype carrying `payload`, padded to `len`.
fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8], len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    while f.len() < len {
        f.push((f.len() % 251) as u8);
    }
    f
}

/// Poll `port` until `want` frames of our ethertype arrived or 2 s passed.
fn receive(port: &mut AfxdpPort, pool: &mut PacketPool, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    let mut batch = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        port.rx_batch(pool, &mut batch, 32);
        for p in batch.drain(..) {
            if p.data().get(12..14) == Some(&ETHERTYPE.to_be_bytes()[..]) {
                got.push(p.data().to_vec());
            }
            pool.put(p);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    got
}

fn drops(port: &AfxdpPort, rx: bool, r: DropReason) -> u64 {
    let c = port.counters();
    if rx {
        c.rx_drops[r.index()].get()
    } else {
        c.tx_drops[r.index()].get()
    }
}

#[test]
fn open_on_missing_interface_is_a_clear_error() {
    // No root needed: the name is checked before anything is allocated.
    let err = AfxdpPort::open(&AfxdpOptions::new("fsx-nonexist0")).unwrap_err();
    assert!(matches!(err, AfxdpError::NoSuchInterface(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("no interface named `fsx-nonexist0`"),
        "{err}"
    );
    let m: BTreeMap<String, String> = [("ifname".to_string(), "x".to_string())].into();
    assert!(AfxdpOptions::from_map(&m).is_ok());
}

#[test]
fn receives_frames_sent_in_the_namespace_and_transmits_into_it() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    let mut port = AfxdpPort::open(&t.opts()).expect("open");
    let mut pool = PacketPool::with_capacity(256);
    // Joining a pool stocks the fill ring (switchd: when a thread takes the port).
    port.attach(&mut pool);
    let (mode, zc) = port.attached_mode();
    assert!(matches!(mode, XdpMode::Native | XdpMode::Generic));
    assert!(!zc, "veth has no zero-copy");
    let ids = xdp_program_ids(&t.host).unwrap();
    assert!(
        ids != (0, 0),
        "an XDP program is attached while the port is open"
    );

    // rx: three frames of different sizes, byte for byte.
    let sent: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            frame(
                HOST_MAC,
                PEER_MAC,
                format!("fsx-rx-{i}").as_bytes(),
                60 + i * 700,
            )
        })
        .collect();
    t.send_from_ns(&sent);
    let got = receive(&mut port, &mut pool, 3);
    assert_eq!(got, sent, "frames arrive whole and in order");
    let c = port.counters().snapshot();
    assert!(c.rx_packets >= 3);
    assert!(c.rx_bytes >= sent.iter().map(|f| f.len() as u64).sum::<u64>());

    // tx: a frame sent on the port arrives in the namespace unchanged.
    let out = frame(PEER_MAC, HOST_MAC, b"fsx-tx-0", 200);
    let cap = t.capture_in_ns(b"fsx-tx-0");
    let mut batch = vec![Packet::from_slice(&out).unwrap()];
    let free_before = pool.available();
    assert_eq!(port.tx_batch(&mut batch, &mut pool), 1);
    assert!(batch.is_empty());
    assert_eq!(pool.available(), free_before + 1, "buffer back in the pool");
    assert_eq!(cap.frame().as_deref(), Some(&out[..]));
    let c = port.counters().snapshot();
    assert_eq!((c.tx_packets, c.tx_bytes, c.tx_dropped), (1, 200, 0));

    // A burst larger than one ring batch: all sent, frames all come back.
    let mut batch: Vec<Packet> = (0..100)
        .map(|i| Packet::from_slice(&frame(PEER_MAC, HOST_MAC, &[i as u8], 64)).unwrap())
        .collect();
    assert_eq!(port.tx_batch(&mut batch, &mut pool), 100);
    assert!(port.is_up());
    eprintln!(
        "afxdp {mode:?} on veth: rx wakeups {}, tx wakeups {}, tx batches {}",
        port.stats().rx_wakeups.get(),
        port.stats().tx_wakeups.get(),
        port.stats().tx_batches.get()
    );
    assert!(
        port.stats().tx_wakeups.get() <= port.stats().tx_batches.get(),
        "at most one sendto per batch"
    );
    // dump-ports shows the same syscall counts; copy mode transmits only
    // from sendto, at most 32 frames per call: 101 frames need >= 4 kicks.
    let c = port.counters().snapshot();
    assert_eq!(c.tx_kicks, port.stats().tx_wakeups.get());
    assert_eq!(c.rx_wakeups, port.stats().rx_wakeups.get());
    if !port.attached_mode().1 {
        assert!(c.tx_kicks >= 4, "{} kicks for 101 frames", c.tx_kicks);
    }

    drop(port);
    assert_eq!(
        xdp_program_ids(&t.host).unwrap(),
        (0, 0),
        "the program is removed with the port"
    );
}

#[test]
fn generic_mode_no_pool_buffer_and_oversize_are_counted_drops() {
    if !root() {
        return;
    }
    let t = Topo::new(3000);
    let mut o = t.opts();
    o.xdp_mode = XdpMode::Generic;
    o.n_rxq_desc = 64;
    o.n_txq_desc = 64;
    o.umem_frames = 256;
    let mut port = AfxdpPort::open(&o).expect("open generic");
    assert_eq!(port.attached_mode(), (XdpMode::Generic, false));
    let (_, skb) = xdp_program_ids(&t.host).unwrap();
    assert_ne!(skb, 0, "generic-mode program attached");

    // Zero-copy receive needs no heap buffer: an empty heap pool still receives.
    let mut pool = PacketPool::default();
    port.attach(&mut pool);
    t.send_from_ns(&[
        frame(HOST_MAC, PEER_MAC, b"fsx-nobuf-0", 60),
        frame(HOST_MAC, PEER_MAC, b"fsx-nobuf-1", 60),
    ]);
    assert_eq!(receive(&mut port, &mut pool, 2).len(), 2);
    assert_eq!(drops(&port, true, DropReason::PoolEmpty), 0);

    // A 2500-byte frame does not fit a Packet (MAX_FRAME 2048): oversize drop.
    t.send_from_ns(&[
        frame(HOST_MAC, PEER_MAC, b"fsx-big", 2500),
        frame(HOST_MAC, PEER_MAC, b"fsx-small", 100),
    ]);
    let got = receive(&mut port, &mut pool, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][14..23], b"fsx-small");
    assert_eq!(drops(&port, true, DropReason::Oversize), 1);

    // More frames than the ring holds still flow: the fill ring is refilled.
    let many: Vec<Vec<u8>> = (0..150)
        .map(|i| frame(HOST_MAC, PEER_MAC, format!("fsx-m{i:03}").as_bytes(), 60))
        .collect();
    for chunk in many.chunks(50) {
        t.send_from_ns(chunk);
        let got = receive(&mut port, &mut pool, chunk.len());
        assert_eq!(got, chunk);
    }
    port.detach(&mut pool);
    let c = pool.check_frames().unwrap();
    assert_eq!(
        (c.free, c.total),
        (256, 256),
        "oversize frames went back too"
    );
}

#[test]
fn interface_deleted_under_an_open_port_marks_it_down() {
    if !root() {
        return;
    }
    let mut pool = PacketPool::with_capacity(64);

    // Detected on transmit (sendto fails with ENXIO).
    let t = Topo::new(1500);
    let mut port = AfxdpPort::open(&t.opts()).expect("open");
    let link = port.link_state();
    assert!(port.is_up());
    sh(&["ip", "link", "del", &t.host]);
    let mut batch = vec![Packet::from_slice(&frame(PEER_MAC, HOST_MAC, b"x", 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut batch, &mut pool), 0);
    assert!(!port.is_up());
    assert!(!link.load(Ordering::Relaxed), "the shared flag follows");
    assert_eq!(drops(&port, false, DropReason::PortDown), 1);
    let mut batch = vec![Packet::from_slice(&frame(PEER_MAC, HOST_MAC, b"y", 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut batch, &mut pool), 0);
    assert_eq!(drops(&port, false, DropReason::PortDown), 2);
    let mut rx = Vec::new();
    assert_eq!(port.rx_batch(&mut pool, &mut rx, 32), 0);
    drop(port);
    drop(t);

    // Detected while only receiving (the socket error, checked when idle).
    let mut pool2 = PacketPool::with_capacity(0);
    let t = Topo::new(1500);
    let mut port = AfxdpPort::open(&t.opts()).expect("open");
    sh(&["ip", "link", "del", &t.host]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while port.is_up() && Instant::now() < deadline {
        assert_eq!(port.rx_batch(&mut pool2, &mut rx, 32), 0);
    }
    assert!(!port.is_up(), "an idle port notices its interface vanished");
    assert_eq!(
        pool.available(),
        66,
        "no buffer lost (64 + the two dropped frames)"
    );
}

/// Helper for `stale_program_is_replaced`: opens a port and dies by SIGKILL,
/// as a killed switchd would, leaving its XDP program on the interface.
#[test]
#[ignore = "run as a child process by stale_program_is_replaced"]
fn helper_open_and_get_killed() {
    let Ok(ifname) = std::env::var("FSX_AFXDP_HELPER_IF") else {
        return;
    };
    let port = AfxdpPort::open(&AfxdpOptions::new(&ifname)).expect("helper open");
    println!("opened {:?}", port.attached_mode());
    // SAFETY: kill on our own pid; SIGKILL ends the process here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[test]
fn stale_program_is_replaced() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "helper_open_and_get_killed",
            "--nocapture",
        ])
        .env("FSX_AFXDP_HELPER_IF", &t.host)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("opened"),
        "helper: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        xdp_program_ids(&t.host).unwrap() != (0, 0),
        "the killed process left its program behind"
    );
    let mut port = AfxdpPort::open(&t.opts()).expect("open over a stale program");
    let mut pool = PacketPool::with_capacity(16);
    port.attach(&mut pool);
    let f = frame(HOST_MAC, PEER_MAC, b"fsx-after-stale", 60);
    t.send_from_ns(std::slice::from_ref(&f));
    assert_eq!(receive(&mut port, &mut pool, 1), vec![f]);
    drop(port);
    assert_eq!(xdp_program_ids(&t.host).unwrap(), (0, 0));
}

/// Two ports on one UMEM, attached to one pool (as on one polling thread).
fn zc_pair(a: &Topo, b: &Topo, frames: u32) -> (AfxdpPort, AfxdpPort, AfxdpUmem) {
    let umem = AfxdpUmem::new(frames, 256, 256).expect("umem");
    let mut o = a.opts();
    (o.n_rxq_desc, o.n_txq_desc) = (256, 256);
    let pa = AfxdpPort::open_shared(&o, &umem).expect("port a");
    let mut o = b.opts();
    (o.n_rxq_desc, o.n_txq_desc) = (256, 256);
    let pb = AfxdpPort::open_shared(&o, &umem).expect("port b on the same UMEM");
    (pa, pb, umem)
}

fn books(pool: &PacketPool) -> FrameCounts {
    pool.check_frames().expect("frame books add up")
}

/// Poll `port` until `want` of our frames arrived (others go back to the pool).
fn receive_packets(port: &mut AfxdpPort, pool: &mut PacketPool, want: usize) -> Vec<Packet> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    let mut batch = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        port.rx_batch(pool, &mut batch, 32);
        for p in batch.drain(..) {
            if p.data().get(12..14) == Some(&ETHERTYPE.to_be_bytes()[..]) {
                got.push(p);
            } else {
                pool.put(p);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    got
}

#[test]
fn forwarding_between_two_ports_of_one_umem_does_not_copy() {
    if !root() {
        return;
    }
    let (a, b) = (Topo::new(1500), Topo::new(1500));
    let (mut pa, mut pb, umem) = zc_pair(&a, &b, 1024);
    let mut pool = PacketPool::with_capacity(64);
    pa.attach(&mut pool);
    pb.attach(&mut pool);
    assert!(umem.is_claimed(), "the pool owns the UMEM's frames");
    let c = books(&pool);
    assert_eq!((c.total, c.fill), (1024, 512), "both fill rings filled");

    // a's namespace sends; the frame arrives on pa as a UMEM packet and
    // leaves pb without a copy, byte for byte.
    let fa = frame(PEER_MAC, HOST_MAC, b"fsx-zc-a", 200);
    a.send_from_ns(std::slice::from_ref(&fa));
    let mut got = receive_packets(&mut pa, &mut pool, 1);
    let cap = b.capture_in_ns(b"fsx-zc-a");
    assert_eq!(got.len(), 1);
    assert!(got[0].is_umem(), "received without a copy");
    assert_eq!(got[0].data(), &fa[..]);
    assert_eq!(books(&pool).user, 1);
    assert_eq!(pb.tx_batch(&mut got, &mut pool), 1);
    assert_eq!(cap.frame().as_deref(), Some(&fa[..]));
    let s = pb.counters().snapshot();
    assert_eq!((s.tx_zerocopy, s.tx_copied, s.tx_packets), (1, 0, 1));

    // A heap packet (from a tap or memory port) is copied into a frame.
    let fh = frame(PEER_MAC, HOST_MAC, b"fsx-zc-heap", 90);
    let cap = b.capture_in_ns(b"fsx-zc-heap");
    let mut batch = vec![Packet::from_slice(&fh).unwrap()];
    assert_eq!(pb.tx_batch(&mut batch, &mut pool), 1);
    assert_eq!(cap.frame().as_deref(), Some(&fh[..]));
    let s = pb.counters().snapshot();
    assert_eq!((s.tx_zerocopy, s.tx_copied), (1, 1));

    // A pushed header (a VLAN tag) moves the frame's start: it is moved back
    // inside the frame and still sent without taking another frame.
    let fv = frame(PEER_MAC, HOST_MAC, b"fsx-zc-vlan", 100);
    a.send_from_ns(std::slice::from_ref(&fv));
    let mut got = receive_packets(&mut pa, &mut pool, 1);
    let cap = b.capture_in_ns(b"fsx-zc-vlan");
    assert_eq!(got.len(), 1);
    {
        let p = &mut got[0];
        let d = p.push_head(4).expect("headroom for a tag");
        d.copy_within(4..16, 0);
        d[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x00]);
    }
    let tagged = got[0].data().to_vec();
    assert_eq!(pb.tx_batch(&mut got, &mut pool), 1);
    // The peer sees the tag (AF_PACKET may strip it into metadata, so check
    // the payload and marker only).
    let seen = cap.frame().expect("tagged frame arrives");
    assert!(seen.windows(11).any(|w| w == b"fsx-zc-vlan"));
    assert_eq!(tagged.len(), 104);
    assert_eq!(pb.stats().tx_realigned.get(), 1);
    assert_eq!(pb.counters().snapshot().tx_zerocopy, 2);

    // Heavy traffic: 600 frames, a third dropped by "the datapath", a third
    // copied to the heap (another thread's port), a third forwarded zero-copy.
    let many: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            frame(
                PEER_MAC,
                HOST_MAC,
                format!("fsx-zh{i:04}").as_bytes(),
                60 + i % 300,
            )
        })
        .collect();
    let mut forwarded = 0;
    for chunk in many.chunks(100) {
        a.send_from_ns(chunk);
        let got = receive_packets(&mut pa, &mut pool, chunk.len());
        assert_eq!(got.len(), chunk.len(), "every frame arrives");
        let mut out = Vec::new();
        for (k, p) in got.into_iter().enumerate() {
            match k % 3 {
                0 => pool.put(p),
                1 => {
                    let h = pool.to_heap(p).expect("heap buffer");
                    assert!(!h.is_umem());
                    pool.put(h);
                }
                _ => out.push(p),
            }
        }
        forwarded += out.len();
        pb.tx_batch(&mut out, &mut pool);
        books(&pool);
    }
    let s = pb.counters().snapshot();
    assert_eq!(s.tx_zerocopy as usize, 2 + forwarded);
    assert_eq!(s.tx_dropped, 0);
    // Completions come back; nothing stays in userspace.
    let deadline = Instant::now() + Duration::from_secs(2);
    while pb.frames_in_kernel().1 > 0 && Instant::now() < deadline {
        pb.tx_batch(&mut Vec::new(), &mut pool);
        let mut rx = Vec::new();
        pb.rx_batch(&mut pool, &mut rx, 32);
        rx.into_iter().for_each(|p| pool.put(p));
    }
    let c = books(&pool);
    assert_eq!(c.user, 0);
    assert_eq!(c.refused, 0);

    // Port deletion: every frame a socket held comes back.
    pa.detach(&mut pool);
    drop(pa);
    pb.detach(&mut pool);
    drop(pb);
    let c = books(&pool);
    assert_eq!((c.free, c.total), (1024, 1024), "no frame leaked: {c:?}");
    assert_eq!(umem_packets_dropped(), 0);
}

#[test]
fn a_port_moved_to_another_pool_rebinds_on_its_umem() {
    if !root() {
        return;
    }
    let (a, b) = (Topo::new(1500), Topo::new(1500));
    // Thread 1 owns a UMEM with port a; port b starts on thread 1 too.
    let (mut pa, mut pb, u1) = zc_pair(&a, &b, 1024);
    let mut pool1 = PacketPool::with_capacity(16);
    pa.attach(&mut pool1);
    pb.attach(&mut pool1);
    // Thread 2 has a UMEM of its own (its first port was elsewhere).
    let u2 = AfxdpUmem::new(512, 256, 256).unwrap();
    let mut pool2 = PacketPool::with_capacity(16);
    assert!(u2.adopt_into(&mut pool2));
    assert!(!u1.adopt_into(&mut pool2), "a pool owns one UMEM");

    // Move b: detach from thread 1 (socket closed, frames swept back),
    // attach to thread 2 (socket re-created on u2).
    pb.detach(&mut pool1);
    let c = books(&pool1);
    assert_eq!(c.fill, 256, "only a's fill ring holds frames now");
    pb.attach(&mut pool2);
    assert!(pb.umem().same(&u2));
    assert_eq!(pb.stats().rebinds.get(), 1);
    assert!(pb.is_up());
    assert_eq!(books(&pool2).fill, 256);

    // b still receives, now into thread 2's frames, and a frame from a
    // (thread 1's UMEM) is copied, not posted, on b.
    let fb = frame(PEER_MAC, HOST_MAC, b"fsx-moved-b", 80);
    b.send_from_ns(std::slice::from_ref(&fb));
    let got = receive_packets(&mut pb, &mut pool2, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), &fb[..]);
    got.into_iter().for_each(|p| pool2.put(p));
    let fa = frame(PEER_MAC, HOST_MAC, b"fsx-moved-a", 80);
    a.send_from_ns(std::slice::from_ref(&fa));
    let got = receive_packets(&mut pa, &mut pool1, 1);
    let cap = b.capture_in_ns(b"fsx-moved-a");
    assert_eq!(got.len(), 1);
    // Across threads a UMEM packet travels as a heap copy (pmd hand-off).
    let mut batch: Vec<Packet> = got.into_iter().map(|p| pool1.to_heap(p).unwrap()).collect();
    assert_eq!(pb.tx_batch(&mut batch, &mut pool2), 1);
    assert_eq!(cap.frame().as_deref(), Some(&fa[..]));
    let s = pb.counters().snapshot();
    assert_eq!((s.tx_zerocopy, s.tx_copied), (0, 1));

    pa.detach(&mut pool1);
    pb.detach(&mut pool2);
    assert_eq!(books(&pool1).free, 1024);
    assert_eq!(books(&pool2).free, 512);
    drop(pa);
    drop(pb);
    assert_eq!(xdp_program_ids(&a.host).unwrap(), (0, 0));
    assert_eq!(xdp_program_ids(&b.host).unwrap(), (0, 0));
}

#[test]
fn second_socket_on_the_same_queue_is_refused() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    let _p = AfxdpPort::open(&t.opts()).expect("open");
    let err = AfxdpPort::open(&t.opts()).unwrap_err();
    assert!(matches!(err, AfxdpError::Busy { .. }), "{err:?}");
}

#[test]
fn administratively_down_interface_drops_then_recovers() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    let mut port = AfxdpPort::open(&t.opts()).expect("open");
    let mut pool = PacketPool::with_capacity(8);
    sh(&["ip", "link", "set", &t.host, "down"]);
    let mut batch = vec![Packet::from_slice(&frame(PEER_MAC, HOST_MAC, b"down-0", 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut batch, &mut pool), 0);
    assert!(!port.is_up(), "sendto said ENETDOWN");
    let mut batch = vec![Packet::from_slice(&frame(PEER_MAC, HOST_MAC, b"down-1", 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut batch, &mut pool), 0);
    assert_eq!(drops(&port, false, DropReason::PortDown), 2);

    sh(&["ip", "link", "set", &t.host, "up"]);
    // Carrier comes back asynchronously; the port recovers on its next batch.
    let out = frame(PEER_MAC, HOST_MAC, b"fsx-up-again", 60);
    let cap = t.capture_in_ns(b"fsx-up-again");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut batch = vec![Packet::from_slice(&out).unwrap()];
        if port.tx_batch(&mut batch, &mut pool) == 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(port.is_up());
    assert_eq!(cap.frame().as_deref(), Some(&out[..]));
}

#[test]
fn two_queues_of_one_interface_keep_the_program_until_the_last_closes() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    // A second pair with two queues on the host end.
    let pid = std::process::id();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let (h, p) = (format!("fx{pid}q{n}"), format!("fx{pid}r{n}"));
    sh(&[
        "ip",
        "link",
        "add",
        &h,
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        &p,
        "netns",
        &t.ns,
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
    ]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _del = Del(h.clone());
    sh(&["ip", "link", "set", &h, "up"]);
    let mut o = AfxdpOptions::new(&h);
    let q0 = AfxdpPort::open(&o).expect("queue 0");
    o.queue = 1;
    let q1 = AfxdpPort::open(&o).expect("queue 1 next to queue 0");
    drop(q0);
    assert_ne!(
        xdp_program_ids(&h).unwrap(),
        (0, 0),
        "queue 1 still needs it"
    );
    drop(q1);
    assert_eq!(xdp_program_ids(&h).unwrap(), (0, 0));
    o.queue = 2;
    let err = AfxdpPort::open(&o).unwrap_err();
    eprintln!("queue 2 of a 2-queue veth: {err}");
    assert!(err.to_string().contains("queue 2"), "{err}");
}

#[test]
fn zero_copy_request_on_veth_fails_clearly_and_leaves_nothing_behind() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    let mut o = t.opts();
    o.xdp_mode = XdpMode::NativeWithZerocopy;
    let err = AfxdpPort::open(&o).unwrap_err();
    eprintln!("native-with-zerocopy on veth: {err}");
    assert!(matches!(err, AfxdpError::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains("native-with-zerocopy"), "{err}");
    assert_eq!(xdp_program_ids(&t.host).unwrap(), (0, 0), "no program left");
    // The interface is free for a copy-mode port afterwards.
    o.xdp_mode = XdpMode::BestEffort;
    let port = AfxdpPort::open(&o).expect("best-effort after a failed zero-copy open");
    assert_eq!(port.attached_mode(), (XdpMode::Native, false));
}

/// The UMEM's owner socket (umem.rs) is never a port: a port deleted and
/// opened again on the same queue of the same UMEM binds, and so does a
/// port on a UMEM whose every port socket went. Neither was possible while
/// a port could be libxdp's first socket on the UMEM's own fd (never closed).
#[test]
fn a_queue_is_free_again_on_its_umem_once_its_port_is_gone() {
    if !root() {
        return;
    }
    let (a, b) = (Topo::new(1500), Topo::new(1500));
    let umem = AfxdpUmem::new(1024, 256, 256).expect("umem");
    let mut pool = PacketPool::with_capacity(16);
    assert!(umem.adopt_into(&mut pool));
    let opts = |t: &Topo| {
        let mut o = t.opts();
        (o.n_rxq_desc, o.n_txq_desc) = (256, 256);
        o
    };
    let mut pb = AfxdpPort::open_shared(&opts(&b), &umem).expect("port b");
    pb.attach(&mut pool);
    for round in 0..3 {
        // The first port of the UMEM included: deleted, its queue frees.
        let mut pa = AfxdpPort::open_shared(&opts(&a), &umem)
            .unwrap_or_else(|e| panic!("round {round}: port a on its queue again: {e}"));
        pa.attach(&mut pool);
        let fa = frame(PEER_MAC, HOST_MAC, b"fsx-again", 80);
        a.send_from_ns(std::slice::from_ref(&fa));
        let got = receive_packets(&mut pa, &mut pool, 1);
        assert_eq!(got.len(), 1, "round {round}");
        assert_eq!(got[0].data(), &fa[..]);
        got.into_iter().for_each(|p| pool.put(p));
        pa.detach(&mut pool);
        drop(pa);
        assert_eq!(xdp_program_ids(&a.host).unwrap(), (0, 0), "round {round}");
    }
    // Every port socket of the UMEM gone, then a new one: it binds.
    pb.detach(&mut pool);
    drop(pb);
    assert_eq!(books(&pool).free, 1024);
    let mut pb = AfxdpPort::open_shared(&opts(&b), &umem).expect("a port after all went");
    pb.attach(&mut pool);
    let fb = frame(PEER_MAC, HOST_MAC, b"fsx-after-all", 80);
    b.send_from_ns(std::slice::from_ref(&fb));
    let got = receive_packets(&mut pb, &mut pool, 1);
    assert_eq!(got.len(), 1);
    got.into_iter().for_each(|p| pool.put(p));
    pb.detach(&mut pool);
    drop(pb);
    assert_eq!(books(&pool).free, 1024, "no frame leaked");
    assert_eq!(xdp_program_ids(&b.host).unwrap(), (0, 0));
}

/// `pmd-rxq-rebalance`'s path: the control thread moves a released port's
/// socket onto the target thread's UMEM (not yet adopted by any pool), and
/// the target thread's pool adopts that UMEM when the port attaches there.
#[test]
fn move_to_umem_rebinds_on_the_target_umem_before_the_port_attaches() {
    if !root() {
        return;
    }
    let (a, b) = (Topo::new(1500), Topo::new(1500));
    let (mut pa, mut pb, _u1) = zc_pair(&a, &b, 1024);
    let mut pool1 = PacketPool::with_capacity(16);
    pa.attach(&mut pool1);
    pb.attach(&mut pool1);
    assert!(pb.moves_with_umem());
    // Attached ports do not move.
    let u2 = AfxdpUmem::new(512, 256, 256).unwrap();
    assert!(!pb.move_to_umem(&u2));
    pb.detach(&mut pool1);
    assert!(pb.move_to_umem(&u2), "re-created on the target UMEM");
    assert!(pb.umem().same(&u2));
    assert_eq!(pb.stats().rebinds.get(), 1);
    let mut pool2 = PacketPool::with_capacity(16);
    pb.attach(&mut pool2);
    assert!(
        u2.is_claimed(),
        "the target pool adopted the port's new UMEM"
    );
    assert_eq!(pb.stats().rebinds.get(), 1, "no second bind on attach");
    let fb = frame(PEER_MAC, HOST_MAC, b"fsx-move-to", 80);
    b.send_from_ns(std::slice::from_ref(&fb));
    let got = receive_packets(&mut pb, &mut pool2, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), &fb[..]);
    got.into_iter().for_each(|p| pool2.put(p));
    pa.detach(&mut pool1);
    pb.detach(&mut pool2);
    assert_eq!(books(&pool1).free, 1024);
    assert_eq!(books(&pool2).free, 512);
    drop(pa);
    drop(pb);
    assert_eq!(xdp_program_ids(&a.host).unwrap(), (0, 0));
    assert_eq!(xdp_program_ids(&b.host).unwrap(), (0, 0));
}

#[test]
fn frames_the_kernel_drops_for_an_empty_fill_ring_are_counted_rx_no_fill() {
    if !root() {
        return;
    }
    let t = Topo::new(1500);
    // Bound but not attached to a pool: the XDP program already redirects
    // the queue to the socket, whose fill ring is still empty (as a port
    // whose thread's UMEM has no frame left for it would be).
    let mut port = AfxdpPort::open(&t.opts()).expect("open");
    let lost: Vec<Vec<u8>> = (0..5)
        .map(|i| frame(HOST_MAC, PEER_MAC, format!("fsx-nofill-{i}").as_bytes(), 80))
        .collect();
    t.send_from_ns(&lost);
    // Read at stats time (what the polling thread does when it publishes).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        port.publish_stats();
        if drops(&port, true, DropReason::RxNoFill) >= 5 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(port.kernel_drops().no_fill, 5, "one per frame, copy mode");
    assert_eq!(drops(&port, true, DropReason::RxNoFill), 5);
    let s = port.counters().snapshot();
    assert_eq!(s.rx_packets, 0);
    assert!(
        s.rx_drop_reasons.contains(&("rx_no_fill".to_string(), 5)),
        "dump-ports shows the reason: {:?}",
        s.rx_drop_reasons
    );
    assert_eq!(s.rx_dropped, 5);

    // Stocked, the port receives and the count stays.
    let mut pool = PacketPool::with_capacity(256);
    port.attach(&mut pool);
    let sent = vec![frame(HOST_MAC, PEER_MAC, b"fsx-nofill-ok", 80)];
    t.send_from_ns(&sent);
    assert_eq!(receive(&mut port, &mut pool, 1), sent);
    port.publish_stats();
    assert_eq!(drops(&port, true, DropReason::RxNoFill), 5);
    assert_eq!(drops(&port, true, DropReason::RxRingFull), 0);

    // Closing the socket (the port leaving its thread) keeps the count:
    // the next socket's kernel counters start at 0.
    port.detach(&mut pool);
    port.attach(&mut pool);
    port.publish_stats();
    assert_eq!(port.kernel_drops().no_fill, 5);
    assert_eq!(drops(&port, true, DropReason::RxNoFill), 5);
    port.detach(&mut pool);
}
