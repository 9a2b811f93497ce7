//! fs-pktgen through a real veth pair: N frames sent by the in-kernel
//! transmitter are exactly the N frames the XDP counter sees on the peer, in
//! another namespace, and the counter is gone when fs-pktgen exits.
//!
//! Root only: without root the test prints why and passes early. Namespaces
//! and interfaces carry this process's PID (`fs-h1pg<PID>-*`) and are deleted
//! on drop, even when an assertion fails.

use std::process::Command;

struct Pair {
    a: String,
    b: String,
    ifa: String,
    ifb: String,
}

impl Pair {
    fn new() -> Pair {
        let pid = std::process::id();
        let p = Pair {
            a: format!("fs-h1pg{pid}-a"),
            b: format!("fs-h1pg{pid}-b"),
            ifa: format!("h1pga{pid}"),
            ifb: format!("h1pgb{pid}"),
        };
        for ns in [&p.a, &p.b] {
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "link", "add", &p.ifa, "netns", &p.a, "type", "veth", "peer", "name", &p.ifb, "netns",
            &p.b,
        ]);
        ip(&["-n", &p.a, "link", "set", &p.ifa, "up"]);
        ip(&["-n", &p.b, "link", "set", &p.ifb, "up"]);
        p
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn n_frames_sent_are_n_frames_counted() {
    if !is_root() {
        eprintln!("skipped: needs root (BPF programs, network namespaces)");
        return;
    }
    let p = Pair::new();
    let n = 20_000u64;
    for (flows, size) in [(1u32, 64usize), (100, 1514)] {
        let out = Command::new(env!("CARGO_BIN_EXE_fs-pktgen"))
            .args(["run", "--netns", &p.a, "--iface", &p.ifa])
            .args(["--rx-netns", &p.b, "--rx-iface", &p.ifb])
            .args(["--count", &n.to_string(), "--flows", &flows.to_string()])
            .args(["--size", &size.to_string(), "--json"])
            .output()
            .expect("run fs-pktgen");
        assert!(
            out.status.success(),
            "fs-pktgen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: perf::pktgen::report::Report =
            serde_json::from_slice(&out.stdout).expect("fs-pktgen --json prints a Report");
        assert_eq!(r.sent, n, "{r:?}");
        assert_eq!(r.received, n, "every frame counted once: {r:?}");
        assert_eq!(r.total_received, n);
        assert_eq!((r.size, r.flows), (size, flows));
    }
    // The counter was attached through a BPF link: nothing is left on the interface.
    let link = Command::new("ip")
        .args(["-n", &p.b, "-d", "link", "show", &p.ifb])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&link.stdout);
    assert!(
        !text.contains("prog/xdp"),
        "XDP program left behind:\n{text}"
    );
}
