//! vhost_user ports with a real peer: DPDK `dpdk-testpmd` with virtio-user
//! ports (`--vdev net_virtio_user0,path=...`) attached to switchd, flows
//! `in_port=1 → 2` and back.
//!
//! - Frames intact: testpmd A reads a pcap file we wrote (300 UDP frames of
//!   60 to 1514 bytes, each with its sequence number and a known pattern) and
//!   forwards it (io mode) to its virtio port, switchd port 1; switchd sends
//!   it out of port 2 to testpmd B, which forwards it into a pcap file. The
//!   frames written equal the frames read, in order, and the counters of
//!   testpmd and switchd agree.
//! - Disconnect and reconnect (server mode): testpmd B is killed mid-stream;
//!   switchd marks port 2 down, counts `port_down`, keeps running; a new B
//!   on the same socket receives again.
//! - Client mode: testpmd owns the sockets (`server=1`), switchd connects;
//!   switchd restarts while both testpmds keep running and traffic resumes.
//!
//! Root only; needs dpdk-testpmd and free 2 MiB hugepages (scripts/setup.sh
//! installs and reserves them) and skips with a message otherwise. DPDK runs
//! with `--no-pci` always (the machine's own NIC is a virtio PCI device),
//! `--in-memory`, `--single-file-segments`, a `--file-prefix` unique to the
//! test process, and its lcores on CPU 0.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use topology_tests::{
    require_root, switchd_bin, ChildGuard, LeakGuard, Result, Switchd, TopoError,
};

const N_FRAMES: usize = 300;
/// Hugepages (2 MiB) each testpmd takes (`-m 128`).
const TESTPMD_MB: u32 = 128;

fn err(s: impl Into<String>) -> TopoError {
    TopoError::Other(s.into())
}

/// True when dpdk-testpmd and enough free hugepages are there; otherwise
/// says why the test is skipped.
fn have_dpdk(instances: u32) -> bool {
    if Command::new("dpdk-testpmd")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: dpdk-testpmd not installed (scripts/setup.sh installs dpdk-dev)");
        return false;
    }
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .unwrap_or(0);
    let need = instances * TESTPMD_MB / 2 + 16;
    if free < need {
        eprintln!(
            "skipping: {free} free 2 MiB hugepages, need {need} (scripts/setup.sh reserves them)"
        );
        return false;
    }
    true
}

/// One interactive dpdk-testpmd, driven through its stdin.
struct Testpmd {
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    child: ChildGuard,
    name: String,
}

impl Testpmd {
    fn start(guard: &LeakGuard, name: &str, vdevs: &[String]) -> Result<Testpmd> {
        Self::start_with(guard, name, vdevs, &[])
    }

    /// [`Testpmd::start`] with more application arguments (`--rxq=2`...).
    fn start_with(
        guard: &LeakGuard,
        name: &str,
        vdevs: &[String],
        extra: &[&str],
    ) -> Result<Testpmd> {
        let prefix = format!("fs-vhu-{name}-{}", std::process::id());
        let mut c = Command::new("stdbuf");
        c.args([
            "-oL",
            "dpdk-testpmd",
            "--lcores",
            "0@0,1@0",
            "--no-pci",
            "--in-memory",
        ])
        .args(["--single-file-segments", "-m", &TESTPMD_MB.to_string()])
        .args(["--file-prefix", &prefix, "--log-level", "lib.eal:error"]);
        for v in vdevs {
            c.args(["--vdev", v]);
        }
        c.args([
            "--",
            "-i",
            "--nb-cores=1",
            "--forward-mode=io",
            "--no-flush-rx",
            "--total-num-mbufs=8192",
        ])
        .args(extra)
        .current_dir(guard.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // stderr apart: its lines would interleave with the prompt.
        .stderr(
            std::fs::File::create(guard.path(&format!("testpmd-{name}.err")))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
        let mut child = c
            .spawn()
            .map_err(|e| err(format!("starting dpdk-testpmd: {e}")))?;
        let stdin = child.stdin.take();
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)]
        .into_iter()
        .flatten()
        {
            let o = out.clone();
            // Raw chunks, not lines: the `testpmd> ` prompt has no newline.
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = o.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let t = Testpmd {
            stdin,
            out,
            child: ChildGuard::new(child, &format!("testpmd {name}")),
            name: name.to_string(),
        };
        Ok(t)
    }

    /// Wait for the first prompt (ports configured, or in virtio-user
    /// server mode, after the switch connected).
    fn ready(&self) -> Result<()> {
        self.wait_for("testpmd> ", Duration::from_secs(60))
    }

    fn output(&self) -> String {
        self.out.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        while !self.output().contains(needle) {
            if t0.elapsed() > timeout {
                return Err(err(format!(
                    "testpmd {}: no {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn cmd(&mut self, line: &str) -> Result<()> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| err("testpmd stdin closed"))?;
        writeln!(s, "{line}").map_err(|e| err(format!("testpmd {}: {line}: {e}", self.name)))
    }

    /// (RX-packets, TX-packets) of every port, from `show port stats all`.
    fn port_stats(&mut self) -> Result<Vec<(u64, u64)>> {
        let mark = format!("fs-mark-{}", Instant::now().elapsed().as_nanos());
        let before = self.output().len();
        self.cmd("show port stats all")?;
        // An unknown command prints an error that contains our mark: the end of the stats.
        self.cmd(&mark)?;
        let t0 = Instant::now();
        loop {
            let o = self.output();
            if let Some(end) = o[before..].find(&mark) {
                let text = &o[before..before + end];
                return Ok(parse_port_stats(text));
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(err(format!("testpmd {}: no port stats:\n{o}", self.name)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// stop, quit, and wait for the process to end (pcap files are flushed).
    fn quit(mut self) -> Result<String> {
        self.cmd("stop")?;
        self.cmd("quit")?;
        self.stdin = None;
        self.child.wait_timeout(Duration::from_secs(20))?;
        Ok(self.output())
    }
}

fn parse_port_stats(text: &str) -> Vec<(u64, u64)> {
    let num = |l: &str, key: &str| -> Option<u64> {
        let i = l.find(key)? + key.len();
        l[i..].split_whitespace().next()?.parse().ok()
    };
    let mut v = Vec::new();
    for l in text.lines() {
        if l.contains("NIC statistics for port") {
            v.push((0, 0));
        }
        if let Some(last) = v.last_mut() {
            if let Some(n) = num(l, "RX-packets:") {
                last.0 = n;
            }
            if let Some(n) = num(l, "TX-packets:") {
                last.1 = n;
            }
        }
    }
    v
}

/// A test frame: Ethernet + IPv4 + UDP, `len` bytes, sequence `i` in the
/// payload and a pattern after it.
fn test_frame(i: usize, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let mut sum = 0u32;
    for k in (0..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([ip[k], ip[k + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5000u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f[42..46].copy_from_slice(&(i as u32).to_be_bytes());
    for (k, b) in f.iter_mut().enumerate().skip(46) {
        *b = (k as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    f
}

fn test_frames() -> Vec<Vec<u8>> {
    (0..N_FRAMES)
        .map(|i| test_frame(i, [60, 64, 128, 512, 1000, 1514][i % 6] + (i % 7)))
        .map(|mut f| {
            f.truncate(1514);
            f
        })
        .collect()
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    let mut b = Vec::new();
    for v in [0xa1b2c3d4u32.to_le_bytes(), [2, 0, 4, 0]] {
        b.extend_from_slice(&v);
    }
    for v in [0u32, 0, 65535, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [1u32, i as u32, f.len() as u32, f.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let b = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut v = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let caplen =
            u32::from_le_bytes([b[off + 8], b[off + 9], b[off + 10], b[off + 11]]) as usize;
        off += 16;
        if off + caplen > b.len() {
            return Err(err(format!("{}: truncated record", path.display())));
        }
        v.push(b[off..off + caplen].to_vec());
        off += caplen;
    }
    Ok(v)
}

fn port_up(sw: &Switchd, name: &str) -> Result<bool> {
    let show = sw.flowctl_ok(&["show", "br0"])?;
    Ok(show
        .lines()
        .any(|l| l.contains(&format!("({name}):")) && l.contains("state=up")))
}

fn wait_port(sw: &Switchd, name: &str, up: bool, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    while port_up(sw, name)? != up {
        if t0.elapsed() > timeout {
            return Err(err(format!(
                "port {name} not {} within {timeout:?}:\n{}\n{}",
                if up { "up" } else { "down" },
                sw.flowctl_ok(&["show", "br0"]).unwrap_or_default(),
                sw.log()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn dump_port_json(sw: &Switchd, port: &str) -> Result<serde_json::Value> {
    let out = sw.flowctl_ok(&["--json", "dump-ports", "br0", port])?;
    serde_json::from_str(&out).map_err(|e| err(format!("dump-ports json: {e}: {out}")))
}

fn stat(v: &serde_json::Value, key: &str) -> u64 {
    let p = v
        .pointer("/ports/0/stats")
        .or_else(|| v.pointer("/ok/ports/0/stats"))
        .cloned()
        .unwrap_or_default();
    p.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

fn switchd(guard: &LeakGuard) -> Result<Switchd> {
    Switchd::start(
        &switchd_bin()?,
        &guard.path("ctl.sock"),
        &guard.path("state"),
        &["--bridge", "br0"],
    )
}

fn add_ports(sw: &Switchd, guard: &LeakGuard, mode: &str) -> Result<()> {
    for (name, no) in [("a", 1), ("b", 2)] {
        let sock = guard.path(&format!("{name}.sock"));
        sw.flowctl_ok(&[
            "add-port",
            "br0",
            name,
            "type=vhost_user",
            &format!("socket={}", sock.display()),
            &format!("mode={mode}"),
            &format!("ofport={no}"),
        ])?;
    }
    sw.flowctl_ok(&["add-flow", "br0", "in_port=1,actions=output:2"])?;
    sw.flowctl_ok(&["add-flow", "br0", "in_port=2,actions=output:1"])?;
    Ok(())
}

#[test]
fn frames_cross_the_switch_intact_between_two_testpmds() -> Result<()> {
    if !require_root() || !have_dpdk(2) {
        return Ok(());
    }
    let guard = LeakGuard::new("vhu")?;
    let frames = test_frames();
    write_pcap(&guard.path("in.pcap"), &frames)?;
    write_pcap(&guard.path("empty.pcap"), &[])?;
    let sw = switchd(&guard)?;
    add_ports(&sw, &guard, "server")?;
    assert!(!port_up(&sw, "a")?, "down before any peer");

    let d = guard.dir().display().to_string();
    let mut b = Testpmd::start(
        &guard,
        "b",
        &[
            format!("net_virtio_user1,path={d}/b.sock,queue_size=1024"),
            format!("net_pcap1,rx_pcap={d}/empty.pcap,tx_pcap={d}/out.pcap"),
        ],
    )?;
    b.ready()?;
    wait_port(&sw, "b", true, Duration::from_secs(10))?;
    b.cmd("start")?;
    let mut a = Testpmd::start(
        &guard,
        "a",
        &[
            format!("net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/back.pcap"),
            format!("net_virtio_user0,path={d}/a.sock,queue_size=1024"),
        ],
    )?;
    a.ready()?;
    wait_port(&sw, "a", true, Duration::from_secs(10))?;
    a.cmd("start")?;

    let t0 = Instant::now();
    loop {
        let p2 = dump_port_json(&sw, "b")?;
        if stat(&p2, "tx_packets") >= N_FRAMES as u64 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(err(format!(
                "port b sent {} of {N_FRAMES} frames: {p2}\n{}",
                stat(&p2, "tx_packets"),
                sw.log()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sa = a.port_stats()?;
    let sb = b.port_stats()?;
    // a: port 0 pcap (rx N), port 1 virtio (tx N); b: port 0 virtio (rx N), port 1 pcap (tx N).
    assert_eq!(sa[1].1, N_FRAMES as u64, "testpmd a virtio TX: {sa:?}");
    assert_eq!(sb[0].0, N_FRAMES as u64, "testpmd b virtio RX: {sb:?}");
    let p1 = dump_port_json(&sw, "a")?;
    let p2 = dump_port_json(&sw, "b")?;
    assert_eq!(stat(&p1, "rx_packets"), N_FRAMES as u64, "{p1}");
    assert_eq!(stat(&p1, "rx_errors"), 0, "{p1}");
    assert_eq!(stat(&p2, "tx_packets"), N_FRAMES as u64, "{p2}");
    assert_eq!(stat(&p2, "tx_dropped"), 0, "{p2}");
    assert_eq!(
        stat(&p1, "rx_bytes"),
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    a.quit()?;
    b.quit()?;
    let got = read_pcap(&guard.path("out.pcap"))?;
    assert_eq!(got.len(), frames.len(), "frames written by testpmd b");
    for (i, (g, w)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g, w, "frame {i} differs");
    }
    drop(sw);
    let left = guard.cleanup()?;
    assert!(left.is_empty(), "leftovers: {left:?}");
    Ok(())
}

/// Frames testpmd `t`'s port `port` received so far.
fn rx_of(t: &mut Testpmd, port: usize) -> Result<u64> {
    Ok(t.port_stats()?.get(port).map(|s| s.0).unwrap_or(0))
}

fn wait_rx_growth(t: &mut Testpmd, port: usize, what: &str) -> Result<u64> {
    let start = rx_of(t, port)?;
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = rx_of(t, port)?;
        if now > start + 100 {
            return Ok(now);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(err(format!("{what}: testpmd received {start} -> {now}")));
        }
    }
}

#[test]
fn killed_testpmd_is_a_port_down_and_a_restarted_one_gets_traffic_again() -> Result<()> {
    if !require_root() || !have_dpdk(2) {
        return Ok(());
    }
    let guard = LeakGuard::new("vhk")?;
    write_pcap(&guard.path("in.pcap"), &test_frames()[..64])?;
    write_pcap(&guard.path("empty.pcap"), &[])?;
    let sw = switchd(&guard)?;
    add_ports(&sw, &guard, "server")?;
    let d = guard.dir().display().to_string();
    let b_vdevs = [
        format!("net_virtio_user1,path={d}/b.sock"),
        format!("net_pcap1,rx_pcap={d}/empty.pcap,tx_pcap=/dev/null"),
    ];
    let mut b = Testpmd::start(&guard, "b", &b_vdevs)?;
    b.ready()?;
    wait_port(&sw, "b", true, Duration::from_secs(10))?;
    b.cmd("start")?;
    let mut a = Testpmd::start(
        &guard,
        "a",
        &[
            format!("net_pcap0,rx_pcap={d}/in.pcap,infinite_rx=1"),
            format!("net_virtio_user0,path={d}/a.sock"),
        ],
    )?;
    a.ready()?;
    wait_port(&sw, "a", true, Duration::from_secs(10))?;
    a.cmd("start")?;
    wait_rx_growth(&mut b, 0, "before the kill")?;

    // The application dies mid-stream.
    drop(b);
    wait_port(&sw, "b", false, Duration::from_secs(10))?;
    let down0 = dump_port_json(&sw, "b")?;
    std::thread::sleep(Duration::from_millis(500));
    let down1 = dump_port_json(&sw, "b")?;
    let drops = |v: &serde_json::Value| {
        v.pointer("/ok/ports/0/stats/tx_drop_reasons")
            .or_else(|| v.pointer("/ports/0/stats/tx_drop_reasons"))
            .and_then(|r| r.as_array())
            .and_then(|r| {
                r.iter()
                    .find(|e| e.get(0).and_then(|n| n.as_str()) == Some("port_down"))
                    .and_then(|e| e.get(1).and_then(|n| n.as_u64()))
            })
            .unwrap_or(0)
    };
    assert!(
        drops(&down1) > drops(&down0),
        "port_down drops grow while b is gone: {down0} {down1}"
    );
    assert!(port_up(&sw, "a")?, "the other port is unharmed");

    // A new instance on the same socket gets traffic again.
    let mut b = Testpmd::start(&guard, "b2", &b_vdevs)?;
    b.ready()?;
    wait_port(&sw, "b", true, Duration::from_secs(10))?;
    b.cmd("start")?;
    wait_rx_growth(&mut b, 0, "after the restart")?;
    a.quit()?;
    b.quit()?;
    drop(sw);
    let left = guard.cleanup()?;
    assert!(left.is_empty(), "leftovers: {left:?}");
    Ok(())
}

#[test]
fn client_mode_ports_survive_a_switchd_restart() -> Result<()> {
    if !require_root() || !have_dpdk(2) {
        return Ok(());
    }
    let guard = LeakGuard::new("vhc")?;
    write_pcap(&guard.path("in.pcap"), &test_frames()[..64])?;
    write_pcap(&guard.path("empty.pcap"), &[])?;
    let d = guard.dir().display().to_string();
    // The applications own the sockets (virtio-user server mode) and start first.
    let mut b = Testpmd::start(
        &guard,
        "b",
        &[
            format!("net_virtio_user1,path={d}/b.sock,server=1"),
            format!("net_pcap1,rx_pcap={d}/empty.pcap,tx_pcap=/dev/null"),
        ],
    )?;
    let mut a = Testpmd::start(
        &guard,
        "a",
        &[
            format!("net_pcap0,rx_pcap={d}/in.pcap,infinite_rx=1"),
            format!("net_virtio_user0,path={d}/a.sock,server=1"),
        ],
    )?;
    let mut sw = switchd(&guard)?;
    add_ports(&sw, &guard, "client")?;
    a.ready()?;
    b.ready()?;
    wait_port(&sw, "a", true, Duration::from_secs(10))?;
    wait_port(&sw, "b", true, Duration::from_secs(10))?;
    b.cmd("start")?;
    a.cmd("start")?;
    wait_rx_growth(&mut b, 0, "before the switchd restart")?;

    // switchd restarts (state directory keeps the ports); the applications keep running.
    sw.restart()?;
    wait_port(&sw, "a", true, Duration::from_secs(15))?;
    wait_port(&sw, "b", true, Duration::from_secs(15))?;
    wait_rx_growth(&mut b, 0, "after the switchd restart")?;
    assert!(port_up(&sw, "a")?);
    drop(sw);
    a.quit()?;
    b.quit()?;
    let left = guard.cleanup()?;
    assert!(left.is_empty(), "leftovers: {left:?}");
    Ok(())
}

/// `name: N` values summed over the lines of `show port xstats PORT`
/// whose name is `key` (e.g. `rx_q1_good_packets`).
fn xstat(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

impl Testpmd {
    /// The text of `show port xstats PORT` (to the next mark).
    fn xstats(&mut self, port: u16) -> Result<String> {
        let mark = format!("fs-xmark-{}", Instant::now().elapsed().as_nanos());
        let before = self.output().len();
        self.cmd(&format!("show port xstats {port}"))?;
        self.cmd(&mark)?;
        let t0 = Instant::now();
        loop {
            let o = self.output();
            if let Some(end) = o[before..].find(&mark) {
                return Ok(o[before..before + end].to_string());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(err(format!("testpmd {}: no xstats:\n{o}", self.name)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `(thread, rx_packets)` of every listing of queue `queue` of port `name`
/// in `flowctl --json pmd-rxq-show`.
fn rxq_of(show: &serde_json::Value, name: &str, queue: u64) -> Vec<(u64, u64)> {
    let pmds = show
        .pointer("/ok/pmds")
        .or_else(|| show.get("pmds"))
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    let mut found = Vec::new();
    for t in &pmds {
        for q in t["rxqs"].as_array().into_iter().flatten() {
            if q["name"].as_str() == Some(name) && q["queue"].as_u64() == Some(queue) {
                found.push((
                    t["pmd"].as_u64().unwrap_or(u64::MAX),
                    q["rx_packets"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    found
}

fn rxq_show(sw: &Switchd) -> Result<serde_json::Value> {
    let out = sw.flowctl_ok(&["--json", "pmd-rxq-show", "br0"])?;
    serde_json::from_str(&out).map_err(|e| err(format!("pmd-rxq-show json: {e}: {out}")))
}

/// Two polling threads, vhost_user ports `a` and `b` with `n_rxq=2`; testpmd
/// A (virtio-user, `queues=2`, txonly with several flows) sends on both of
/// its queues, testpmd B (`queues=b_queues`, rxonly) receives what switchd
/// forwards. Each of port a's queue objects is polled by its own thread and
/// carries packets; the counts of testpmd A, switchd and testpmd B agree.
fn two_queue_run(tag: &str, b_queues: u32) -> Result<()> {
    let guard = LeakGuard::new(tag)?;
    let sw = Switchd::start(
        &switchd_bin()?,
        &guard.path("ctl.sock"),
        &guard.path("state"),
        &["--bridge", "br0", "--pmd-cpus", "0-1"],
    )?;
    for (name, no) in [("a", 1), ("b", 2)] {
        let sock = guard.path(&format!("{name}.sock"));
        sw.flowctl_ok(&[
            "add-port",
            "br0",
            name,
            "type=vhost_user",
            &format!("socket={}", sock.display()),
            "n_rxq=2",
            &format!("ofport={no}"),
        ])?;
    }
    sw.flowctl_ok(&["add-flow", "br0", "in_port=1,actions=output:2"])?;
    sw.flowctl_ok(&["add-flow", "br0", "in_port=2,actions=drop"])?;
    // Queue i of each port is its own rx queue, on its own thread.
    let show = rxq_show(&sw)?;
    for name in ["a", "b"] {
        let (q0, q1) = (rxq_of(&show, name, 0), rxq_of(&show, name, 1));
        assert_eq!((q0.len(), q1.len()), (1, 1), "{name}: {show}");
        assert_ne!(q0[0].0, q1[0].0, "{name}'s queues on one thread: {show}");
    }
    let text = sw.flowctl_ok(&["pmd-rxq-show", "br0"])?;
    assert!(text.contains("queue-id:  1"), "{text}");

    let d = guard.dir().display().to_string();
    let bq = format!("--rxq={b_queues}");
    let bt = format!("--txq={b_queues}");
    let mut b = Testpmd::start_with(
        &guard,
        "b",
        &[format!(
            "net_virtio_user1,path={d}/b.sock,queues={b_queues},queue_size=1024"
        )],
        &[&bq, &bt],
    )?;
    b.ready()?;
    wait_port(&sw, "b", true, Duration::from_secs(10))?;
    b.cmd("set fwd rxonly")?;
    b.cmd("start")?;
    let mut a = Testpmd::start_with(
        &guard,
        "a",
        &[format!("net_virtio_user0,path={d}/a.sock,queues=2")],
        &["--rxq=2", "--txq=2", "--txonly-multi-flow"],
    )?;
    a.ready()?;
    wait_port(&sw, "a", true, Duration::from_secs(10))?;
    a.cmd("set fwd txonly")?;
    a.cmd("start")?;
    std::thread::sleep(Duration::from_millis(1500));
    a.cmd("stop")?;

    // testpmd A put `sent` frames on its two rings; switchd takes them all.
    let xa = a.xstats(0)?;
    let sent = a.port_stats()?.first().map(|s| s.1).unwrap_or(0);
    let (tq0, tq1) = (
        xstat(&xa, "tx_q0_good_packets"),
        xstat(&xa, "tx_q1_good_packets"),
    );
    assert!(sent > 1000, "testpmd a sent {sent}");
    assert_eq!(tq0 + tq1, sent, "{xa}");
    assert!(tq0 > 0 && tq1 > 0, "testpmd a used both queues: {xa}");
    let t0 = Instant::now();
    let (pa, pb) = loop {
        let pa = dump_port_json(&sw, "a")?;
        let pb = dump_port_json(&sw, "b")?;
        let got = stat(&pa, "rx_packets");
        let out = stat(&pb, "tx_packets") + stat(&pb, "tx_dropped");
        if got == sent && out == got {
            break (pa, pb);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(err(format!(
                "testpmd a sent {sent}; switchd a received {got}, b sent or dropped {out}\n{pa}\n{pb}\n{}",
                sw.log()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stat(&pa, "rx_errors"), 0, "{pa}");
    let b_sent = stat(&pb, "tx_packets");

    // Both queue objects of a carried packets, on their two threads, and
    // their per-queue counts add up to the port's.
    let t0 = Instant::now();
    let (q0, q1) = loop {
        let show = rxq_show(&sw)?;
        let (q0, q1) = (rxq_of(&show, "a", 0)[0], rxq_of(&show, "a", 1)[0]);
        if q0.1 + q1.1 == sent || t0.elapsed() > Duration::from_secs(5) {
            break (q0, q1);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(q0.1 + q1.1, sent, "per-queue rx {q0:?} {q1:?}");
    assert_eq!(
        (q0.1, q1.1),
        (tq0, tq1),
        "ring i of testpmd = queue i of switchd"
    );
    assert_ne!(q0.0, q1.0);

    // testpmd B received exactly what switchd sent to it, on the queues it enabled.
    let t0 = Instant::now();
    loop {
        let got = b.port_stats()?.first().map(|s| s.0).unwrap_or(0);
        if got == b_sent {
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(err(format!("switchd b sent {b_sent}, testpmd b got {got}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let xb = b.xstats(0)?;
    let (rq0, rq1) = (
        xstat(&xb, "rx_q0_good_packets"),
        xstat(&xb, "rx_q1_good_packets"),
    );
    assert_eq!(rq0 + rq1, b_sent, "{xb}");
    if b_queues == 2 {
        // Thread i received a's queue i and sent on b's queue i.
        assert!(rq0 > 0 && rq1 > 0, "both of b's queues received: {xb}");
    } else {
        // b's queue object 1 has no running ring: the frames of its thread
        // went through queue object 0's redirect queue, so b sent more than
        // the a queue on queue object 0's own thread received.
        assert_eq!(rq1, 0, "{xb}");
        let show = rxq_show(&sw)?;
        let b0_thread = rxq_of(&show, "b", 0)[0].0;
        let direct = [q0, q1]
            .iter()
            .filter(|q| q.0 == b0_thread)
            .map(|q| q.1)
            .sum::<u64>();
        assert!(
            b_sent > direct,
            "frames of both threads reached b: b sent {b_sent}, a's queue on b0's thread {direct}"
        );
    }
    eprintln!(
        "{tag}: testpmd a sent {sent} ({tq0} + {tq1}); switchd b sent {b_sent} ({rq0} + {rq1} at testpmd b), dropped {}",
        stat(&pb, "tx_dropped")
    );
    a.quit()?;
    b.quit()?;
    drop(sw);
    let left = guard.cleanup()?;
    assert!(left.is_empty(), "leftovers: {left:?}");
    Ok(())
}

#[test]
fn two_queue_pairs_are_polled_by_two_threads_end_to_end() -> Result<()> {
    if !require_root() || !have_dpdk(2) {
        return Ok(());
    }
    two_queue_run("vmq", 2)
}

#[test]
fn a_peer_enabling_one_of_two_queue_pairs_receives_every_frame_on_it() -> Result<()> {
    if !require_root() || !have_dpdk(2) {
        return Ok(());
    }
    two_queue_run("vm1", 1)
}
