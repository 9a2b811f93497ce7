//! Tap port against the real kernel: the host stack pings an address routed
//! through the tap, the test answers ARP and ICMP through `tx_batch`, and
//! `ping` succeeding proves both directions. Then the failure cases an
//! operator meets: oversize frames, the device deleted underneath, a name
//! taken by another device, a persistent tap that must survive the port.
//!
//! Needs root (CAP_NET_ADMIN and /dev/net/tun); skipped with a message
//! otherwise. Each test runs on its own thread inside a fresh network
//! namespace (`unshare(CLONE_NEWNET)` affects only that thread, and the
//! commands it spawns inherit it), so nothing is created in the host's
//! namespace and everything vanishes with the thread, even on a panic.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switch::packet::buf::MAX_FRAME;
use switch::packet::{Packet, PacketPool};
use switch::port::tap::{TapError, TapOptions, TapPort};
use switch::port::Port;

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x02];
const HOST_IP: [u8; 4] = [10, 99, 0, 1];
const PEER_IP: [u8; 4] = [10, 99, 0, 2];

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipping: tap tests need root and /dev/net/tun");
        return false;
    }
    true
}

/// Run `f` on a new thread inside a fresh network namespace with lo up.
fn in_fresh_netns(f: impl FnOnce() + Send + 'static) {
    let h = std::thread::spawn(move || {
        // SAFETY: unshare(2) with a constant flag; it changes only this
        // thread's network namespace (the thread ends with the test).
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        f()
    });
    if let Err(p) = h.join() {
        std::panic::resume_unwind(p);
    }
}

/// Run `ip ARGS` (in the calling thread's namespace), panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The kernel's view of a link: `ip -j -s link show dev NAME`.
fn link_json(name: &str) -> serde_json::Value {
    let out = ip(&["-j", "-s", "link", "show", "dev", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output is JSON");
    v[0].clone()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn tap_name(tag: &str) -> String {
    format!("fst{tag}{}", std::process::id() % 1_000_000)
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An ARP reply "PEER_IP is at PEER_MAC" to the host (RFC 826).
fn arp_reply() -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PEER_IP);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&HOST_IP);
    f
}

/// True for an ARP request from the host asking for PEER_IP.
fn is_arp_request_for_peer(f: &[u8]) -> bool {
    f.len() >= 42
        && f[12..14] == [0x08, 0x06]
        && f[20..22] == [0, 1]
        && f[6..12] == HOST_MAC
        && f[28..32] == HOST_IP
        && f[38..42] == PEER_IP
}

/// For an ICMP echo request from the host to PEER_IP, the echo reply (RFC 792).
fn echo_reply_for(f: &[u8]) -> Option<Vec<u8>> {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[0..6] != PEER_MAC {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 1 || ip[16..20] != PEER_IP || ip.len() < total || total < ihl + 8 {
        return None;
    }
    let icmp = &ip[ihl..total];
    if icmp[0] != 8 {
        return None;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(PEER_MAC, HOST_MAC)
        .ipv4(PEER_IP, HOST_IP, 64)
        .icmpv4_echo_reply(id, seq)
        .write(&mut out, &icmp[8..])
        .ok()?;
    Some(out)
}

#[test]
fn host_pings_through_the_tap_and_the_port_answers() {
    if !can_run() {
        return;
    }
    in_fresh_netns(|| {
        let name = tap_name("p");
        let opts = TapOptions {
            ifname: None,
            mtu: Some(1400),
            mac: Some(HOST_MAC),
        };
        let mut port = TapPort::open(&name, &opts).expect("create tap");
        assert_eq!(port.ifname(), name);
        assert!(!port.is_persistent(), "the port created the device");
        let link = link_json(&name);
        assert_eq!(link["mtu"], 1400);
        assert_eq!(link["address"], mac_str(HOST_MAC));
        assert!(
            link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "brought up: {link}"
        );
        ip(&["addr", "add", "10.99.0.1/24", "dev", &name]);

        let ping = Command::new("ping")
            .args(["-n", "-c", "1", "-W", "3", "10.99.0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ping (iputils-ping)");
        let mut pool = PacketPool::with_capacity(64);
        let mut rx = Vec::new();
        let (mut saw_arp, mut saw_echo) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !saw_echo && Instant::now() < deadline {
            if port.rx_batch(&mut pool, &mut rx, 32) == 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let mut tx = Vec::new();
            for p in rx.drain(..) {
                if is_arp_request_for_peer(p.data()) {
                    saw_arp = true;
                    tx.push(Packet::from_slice(&arp_reply()).unwrap());
                } else if let Some(reply) = echo_reply_for(p.data()) {
                    saw_echo = true;
                    tx.push(Packet::from_slice(&reply).unwrap());
                }
                pool.put(p);
            }
            let n = tx.len();
            assert_eq!(port.tx_batch(&mut tx, &mut pool), n, "every reply written");
        }
        let out = ping.wait_with_output().expect("wait for ping");
        assert!(saw_arp, "the host's ARP request arrived through rx_batch");
        assert!(saw_echo, "the host's echo request arrived through rx_batch");
        assert!(
            out.status.success(),
            "ping got the reply sent by tx_batch: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let s = port.counters().snapshot();
        assert!(s.rx_packets >= 2, "{s:?}");
        assert_eq!(s.tx_packets, 2, "{s:?}");
        assert_eq!(s.tx_dropped + s.rx_dropped + s.tx_errors + s.rx_errors, 0);
        // The kernel's receive counter of the tap counts what we transmitted.
        let link = link_json(&name);
        assert_eq!(link["stats64"]["rx"]["packets"], 2, "{link}");
        assert_eq!(
            link["stats64"]["rx"]["bytes"].as_u64(),
            Some(s.tx_bytes),
            "{link}"
        );
        drop(port);
        assert!(
            !link_exists(&name),
            "a created tap is removed with its port"
        );
    });
}

#[test]
fn bad_frames_are_counted_and_a_deleted_device_marks_the_port_down() {
    if !can_run() {
        return;
    }
    in_fresh_netns(|| {
        let name = tap_name("d");
        let mut port = TapPort::open(&name, &TapOptions::default()).expect("create tap");
        let up = port.link_up().clone();
        assert!(up.load(Ordering::Relaxed));
        let mut pool = PacketPool::with_capacity(8);

        let mut big = Packet::from_slice(&[0xab; MAX_FRAME]).unwrap();
        big.push_head(64).unwrap().fill(0x02);
        let runt = Packet::from_slice(&[0x02; 10]).unwrap();
        let ok = Packet::from_slice(&arp_reply()).unwrap();
        let mut tx = vec![big, runt, ok];
        assert_eq!(port.tx_batch(&mut tx, &mut pool), 1);
        assert!(tx.is_empty());
        assert_eq!(pool.available(), 11, "every buffer went back to the pool");
        let s = port.counters().snapshot();
        assert_eq!(
            s.tx_drop_reasons,
            vec![("truncated".to_string(), 1), ("oversize".to_string(), 1)]
        );

        // Administratively down: frames are port_down drops, the link is
        // still there and comes back.
        ip(&["link", "set", "dev", &name, "down"]);
        let mut tx = vec![Packet::from_slice(&arp_reply()).unwrap()];
        assert_eq!(port.tx_batch(&mut tx, &mut pool), 0);
        assert!(up.load(Ordering::Relaxed), "admin down is not gone");
        ip(&["link", "set", "dev", &name, "up"]);
        let mut tx = vec![Packet::from_slice(&arp_reply()).unwrap()];
        assert_eq!(port.tx_batch(&mut tx, &mut pool), 1);

        ip(&["link", "del", &name]);
        let mut tx = vec![Packet::from_slice(&arp_reply()).unwrap()];
        assert_eq!(port.tx_batch(&mut tx, &mut pool), 0);
        assert!(!up.load(Ordering::Relaxed), "link_up follows the device");
        let mut rx = Vec::new();
        assert_eq!(port.rx_batch(&mut pool, &mut rx, 32), 0);
        let mut tx = vec![Packet::from_slice(&arp_reply()).unwrap()];
        assert_eq!(port.tx_batch(&mut tx, &mut pool), 0);
        let s = port.counters().snapshot();
        assert!(
            s.tx_drop_reasons.contains(&("port_down".to_string(), 3)),
            "{s:?}"
        );
        assert_eq!(s.tx_packets, 2);
    });
}

#[test]
fn frames_larger_than_a_buffer_are_counted_oversize_on_rx() {
    if !can_run() {
        return;
    }
    in_fresh_netns(|| {
        // A persistent tap with a jumbo MTU made by the operator; the port
        // attaches to it without changing its MTU.
        let name = tap_name("j");
        ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
        ip(&[
            "link",
            "set",
            "dev",
            &name,
            "mtu",
            "9000",
            "address",
            &mac_str(HOST_MAC),
        ]);
        let mut port = TapPort::open(&name, &TapOptions::default()).expect("attach");
        assert!(port.is_persistent());
        ip(&["addr", "add", "10.99.0.1/24", "dev", &name]);
        ip(&[
            "neigh",
            "add",
            "10.99.0.2",
            "lladdr",
            &mac_str(PEER_MAC),
            "dev",
            &name,
        ]);
        // One 3028-byte IPv4 packet (no fragmentation at MTU 9000) and one small one.
        let send = |size: &str| {
            Command::new("ping")
                .args(["-n", "-c", "1", "-W", "1", "-s", size, "10.99.0.2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run ping");
        };
        send("3000");
        send("100");
        let mut pool = PacketPool::with_capacity(16);
        let mut rx = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut small = 0;
        while small == 0 && Instant::now() < deadline {
            port.rx_batch(&mut pool, &mut rx, 32);
            small += rx
                .iter()
                .filter(|p| p.len() == 14 + 20 + 8 + 100 && p.data()[12..14] == [8, 0])
                .count();
            rx.clear();
        }
        assert_eq!(small, 1, "the small echo request arrived");
        let s = port.counters().snapshot();
        assert_eq!(s.rx_drop_reasons, vec![("oversize".to_string(), 1)]);
        drop(port);
        assert!(link_exists(&name), "a persistent tap outlives its port");
        ip(&["tuntap", "del", "dev", &name, "mode", "tap"]);
    });
}

#[test]
fn a_name_taken_by_another_device_or_port_is_a_clear_error() {
    if !can_run() {
        return;
    }
    in_fresh_netns(|| {
        let veth = tap_name("v");
        ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            &tap_name("w"),
        ]);
        match TapPort::open(
            "x",
            &TapOptions::from_map(&[("ifname".to_string(), veth.clone())].into()).unwrap(),
        ) {
            Err(TapError::NotTap(n)) => assert_eq!(n, veth),
            other => panic!("attaching to a veth: {other:?}"),
        }
        assert!(link_exists(&veth), "the veth is untouched");

        let name = tap_name("b");
        let _first = TapPort::open(&name, &TapOptions::default()).expect("create tap");
        match TapPort::open(&name, &TapOptions::default()) {
            Err(e @ TapError::Busy(_)) => {
                assert!(e.to_string().contains("in use"), "{e}")
            }
            other => panic!("a second port on one tap: {other:?}"),
        }
    });
}
