//! End-to-end tests through the real binaries: a `switchd` started on a
//! temporary socket and state directory, driven by `flowctl` exactly as an
//! operator would, checking the text shapes (ovs-ofctl's), `--json` output,
//! exit codes and messages, file/stdin input, restart persistence, and that
//! garbage on the socket does not hurt the daemon.
//!
//! switchd is a binary of the `switch` package, so Cargo does not hand its
//! path to this package's tests; it is looked up next to flowctl (same target
//! directory). `cargo test --workspace` builds it (the `switch` package's
//! integration tests need its binaries). When it is absent (e.g. `cargo test
//! -p flowctl` on a clean tree) the daemon tests say so and are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");

fn switchd_bin() -> Option<PathBuf> {
    let p = Path::new(FLOWCTL).with_file_name("switchd");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found; build it with `cargo build -p switch` or run `cargo test --workspace`",
            p.display()
        );
        None
    }
}

/// A running switchd, killed when dropped.
struct Switchd {
    child: Option<Child>,
    sock: PathBuf,
    state: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Switchd {
    /// A switchd on a fresh temporary directory (None: binary absent, test skipped).
    fn start() -> Option<Switchd> {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Switchd::start_in(dir.path())?;
        s._dir = Some(dir);
        Some(s)
    }

    /// A switchd whose socket and state live in `dir` (left there when dropped).
    fn start_in(dir: &Path) -> Option<Switchd> {
        let bin = switchd_bin()?;
        let sock = dir.join("switchd.sock");
        let state = dir.join("state");
        let child = Command::new(bin)
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchd");
        let mut s = Switchd {
            child: Some(child),
            sock,
            state,
            _dir: None,
        };
        s.wait_ready();
        Some(s)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(e) = c.stderr.as_mut() {
                        let _ = std::io::Read::read_to_string(e, &mut err);
                    }
                    panic!("switchd exited with {st} before listening: {err}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "switchd did not listen on {}",
                self.sock.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(FLOWCTL);
        c.arg("--socket")
            .arg(&self.sock)
            .env_remove("FLOWCTL_SOCKET");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run flowctl")
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut c = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    /// Run and expect success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "flowctl {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        let v: Value = serde_json::from_str(&out).expect("--json prints JSON");
        v["ok"].clone()
    }

    /// Stop with SIGKILL (as a crash would) and wait.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Switchd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Replace each `duration=1.234s` with `duration=X`.
fn mask_durations(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("duration=") {
        out.push_str(&rest[..i + "duration=".len()]);
        rest = &rest[i + "duration=".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        assert!(
            end > 0 && rest[end..].starts_with('s'),
            "duration value in {s:?}"
        );
        out.push('X');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

const ICMP_A_TO_B: &str = "icmp,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:ff,nw_src=10.244.1.2,nw_dst=10.244.1.3,nw_ttl=64,icmp_type=8";

/// Two memory ports and a forwarding flow, as in the README walk-through.
fn two_pods(s: &Switchd) {
    assert_eq!(
        s.ok(&["add-port", "br0", "pod-a", "type=memory", "ofport=1"]),
        "pod-a: ofport 1\n"
    );
    assert_eq!(
        s.ok(&["add-port", "br0", "pod-b", "type=memory", "ofport=2"]),
        "pod-b: ofport 2\n"
    );
}

#[test]
fn help_lists_every_command() {
    let o = Command::new(FLOWCTL).arg("--help").output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8(o.stdout).unwrap();
    for c in [
        "add-flow",
        "add-flows",
        "mod-flows",
        "del-flows",
        "dump-flows",
        "replace-flows",
        "bundle",
        "dump-ports",
        "dump-tables",
        "show",
        "trace",
        "add-port",
        "del-port",
        "inject",
        "compose-packet",
        "capture",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "--help lists {c}:\n{help}"
        );
        let o = Command::new(FLOWCTL).args([c, "--help"]).output().unwrap();
        assert!(o.status.success(), "{c} --help");
    }
}

#[test]
fn usage_errors_exit_2_and_no_switchd_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody.sock");
    let run = |args: &[&str]| {
        Command::new(FLOWCTL)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["frobnicate"][..],
        &["add-flow", "br0"],
        &["add-port", "br0", "p1"],
        &["add-port", "br0", "p1", "ofport=1"],
        &["add-port", "br0", "p1", "type=memory", "ofport=one"],
        &["add-flows", "br0", "/nonexistent/flows.txt"],
        &["inject", "br0", "p1", "not a packet"],
        &["dump-flows", "br0", "--bogus"],
    ] {
        let o = run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    let o = run(&["add-port", "br0", "p1", "ofport=1"]);
    assert!(stderr(&o).contains("type=TYPE"), "{}", stderr(&o));
    let o = run(&["add-flows", "br0", "/nonexistent/flows.txt"]);
    assert!(
        stderr(&o).contains("/nonexistent/flows.txt"),
        "{}",
        stderr(&o)
    );

    // No switchd: exit 3, naming the socket and the remedy.
    let o = run(&["dump-flows", "br0"]);
    assert_eq!(code(&o), 3);
    let e = stderr(&o);
    assert!(
        e.contains(&sock.display().to_string()) && e.contains("is switchd running?"),
        "{e}"
    );
    // FLOWCTL_SOCKET selects the socket too.
    let o = Command::new(FLOWCTL)
        .env("FLOWCTL_SOCKET", &sock)
        .args(["show", "br0"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains(&sock.display().to_string()));

    // compose-packet needs no switchd.
    let o = run(&[
        "compose-packet",
        "udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,udp_dst=53",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let hex = String::from_utf8(o.stdout).unwrap();
    assert_eq!(hex.trim().len(), 2 * 60, "a minimum-size frame: {hex}");
    assert_eq!(&hex[24..28], "0800");
}

#[test]
fn switchd_errors_exit_1_with_the_caret() {
    let Some(s) = Switchd::start() else { return };
    let o = s.run(&[
        "add-flow",
        "br0",
        "priority=100,ip,nw_dstt=10.1.1.1,actions=drop",
    ]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "flowctl: unknown field \"nw_dstt\"; did you mean \"nw_dst\"?\n  priority=100,ip,nw_dstt=10.1.1.1,actions=drop\n                  ^\n"
    );
    let o = s.run(&["add-flow", "br0", "actions=dec_ttl"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).ends_with("\n  actions=dec_ttl\n          ^\n"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["dump-flows", "br9"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no bridge \"br9\""), "{}", stderr(&o));
    let o = s.run(&["del-port", "br0", "ghost"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no port \"ghost\""), "{}", stderr(&o));
    // --json: the structured error on stdout, still exit 1.
    let o = s.run(&["--json", "add-flow", "br0", "table=1,actions=goto_table:0"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "bad-flow");
    assert_eq!(v["error"]["input"], "table=1,actions=goto_table:0");
    assert_eq!(v["error"]["offset"], 16, "at goto_table");
    // A batch error names the line of the file, comments and blank lines counted.
    let o = s.run_stdin(
        &["add-flows", "br0", "-"],
        "actions=drop\n# comment\n\ntable=2,actions=output:x\n",
    );
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).starts_with("flowctl: -:4: "), "{}", stderr(&o));
    assert!(!stderr(&o).contains("(item"), "{}", stderr(&o));
    assert_eq!(s.ok(&["dump-flows", "br0"]), "", "nothing added");
}

#[test]
fn dump_flows_has_the_ovs_ofctl_shape() {
    let Some(s) = Switchd::start() else { return };
    two_pods(&s);
    s.ok(&["add-flow", "br0", "priority=100,cookie=0x5,ip,nw_dst=10.244.1.3,actions=mod_dl_dst:02:00:00:00:00:02,dec_ttl,output:2"]);
    s.ok(&[
        "add-flow",
        "br0",
        "table=1,idle_timeout=300,in_port=1,dl_vlan=5,actions=mod_vlan_vid:7,strip_vlan,output:2",
    ]);
    s.ok(&["add-flow", "br0", "arp,actions=drop"]);
    s.ok(&[
        "add-flow",
        "br0",
        "table=2,priority=0,tcp,nw_src=10.1.2.3/255.255.0.0,tp_dst=80,actions=resubmit(,3),IN_PORT",
    ]);
    assert_eq!(s.ok(&["inject", "br0", "pod-a", ICMP_A_TO_B]), "");

    let dump = s.ok(&["dump-flows", "br0"]);
    assert_eq!(
        mask_durations(&dump),
        " cookie=0x0, duration=X, table=0, n_packets=0, n_bytes=0, arp actions=drop\n\
         \x20cookie=0x5, duration=X, table=0, n_packets=1, n_bytes=60, priority=100,ip,nw_dst=10.244.1.3 actions=set_field:02:00:00:00:00:02->eth_dst,dec_ttl,output:2\n\
         \x20cookie=0x0, duration=X, table=1, n_packets=0, n_bytes=0, idle_timeout=300, in_port=1,dl_vlan=5 actions=set_field:4103->vlan_vid,pop_vlan,output:2\n\
         \x20cookie=0x0, duration=X, table=2, n_packets=0, n_bytes=0, priority=0,tcp,nw_src=10.1.0.0/16,tp_dst=80 actions=resubmit(,3),IN_PORT\n"
    );
    assert_eq!(
        s.ok(&["dump-flows", "br0", "--no-stats"]),
        " arp actions=drop\n\
         \x20cookie=0x5, priority=100,ip,nw_dst=10.244.1.3 actions=set_field:02:00:00:00:00:02->eth_dst,dec_ttl,output:2\n\
         \x20table=1, idle_timeout=300, in_port=1,dl_vlan=5 actions=set_field:4103->vlan_vid,pop_vlan,output:2\n\
         \x20table=2, priority=0,tcp,nw_src=10.1.0.0/16,tp_dst=80 actions=resubmit(,3),IN_PORT\n"
    );
    // The dump (with statistics) is valid input: save and restore round-trips.
    let nostats = s.ok(&["dump-flows", "br0", "--no-stats"]);
    let o = s.run_stdin(&["--json", "replace-flows", "br0", "-"], &dump);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["ok"],
        serde_json::json!({"added": 0, "modified": 0, "removed": 0, "unchanged": 4})
    );
    s.ok(&["del-flows", "br0"]);
    let o = s.run_stdin(&["add-flows", "br0", "-"], &dump);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.ok(&["dump-flows", "br0", "--no-stats"]), nostats);
    s.ok(&["inject", "br0", "pod-a", ICMP_A_TO_B]);

    // Filters.
    let t1 = s.ok(&["dump-flows", "br0", "table=1"]);
    assert_eq!(t1.lines().count(), 1);
    assert!(t1.contains("table=1,"), "{t1}");
    let ip = s.ok(&["dump-flows", "br0", "ip", "--no-stats"]);
    assert_eq!(ip.lines().count(), 2, "{ip}");
    assert_eq!(
        s.ok(&["dump-flows", "br0", "cookie=0x5/-1", "--no-stats"])
            .lines()
            .count(),
        1
    );
    assert_eq!(s.ok(&["dump-flows", "br0", "table=9"]), "");

    // --json carries every field.
    let v = s.json(&["dump-flows", "br0", "table=0"]);
    let flows = v["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2);
    let f = &flows[1];
    assert_eq!(f["cookie"], 5);
    assert_eq!(f["priority"], 100);
    assert_eq!(f["table"], 0);
    assert_eq!(
        (f["n_packets"].as_u64(), f["n_bytes"].as_u64()),
        (Some(1), Some(60))
    );
    assert_eq!(f["match"], "ip,nw_dst=10.244.1.3");
    assert_eq!(
        f["actions"],
        "set_field:02:00:00:00:00:02->eth_dst,dec_ttl,output:2"
    );
    assert!(f["duration"]
        .as_f64()
        .is_some_and(|d| (0.0..60.0).contains(&d)));
    assert_eq!(flows[0]["priority"], 32768);
}

#[test]
fn flows_from_files_stdin_bundles_and_mods() {
    let Some(s) = Switchd::start() else { return };
    two_pods(&s);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flows.txt");
    std::fs::write(
        &file,
        "# pod routing\n\
         table=0,priority=10,in_port=1,actions=output:2\n\
         \n\
         \x20  table=0,priority=10,in_port=2,actions=output:1   \n\
         table=1,priority=5,actions=drop\n",
    )
    .unwrap();
    assert_eq!(s.ok(&["add-flows", "br0", file.to_str().unwrap()]), "");
    let stdin = s.run_stdin(
        &["add-flows", "br0", "-"],
        "table=3,actions=drop\ntable=4,actions=drop\n",
    );
    assert!(stdin.status.success(), "{}", stderr(&stdin));
    assert_eq!(s.ok(&["dump-flows", "br0"]).lines().count(), 5);

    // mod-flows --strict touches only the exact flow.
    s.ok(&[
        "mod-flows",
        "br0",
        "--strict",
        "priority=10,in_port=1,actions=drop",
    ]);
    // non-strict without a match in the selected table does nothing.
    s.ok(&["mod-flows", "br0", "table=0,in_port=3,actions=output:2"]);
    let d = s.ok(&["dump-flows", "br0", "table=0", "--no-stats"]);
    assert_eq!(
        d,
        " priority=10,in_port=1 actions=drop\n priority=10,in_port=2 actions=output:1\n"
    );

    // del-flows: strict needs the priority, non-strict does not.
    s.ok(&["del-flows", "br0", "--strict", "table=1"]);
    assert_eq!(s.ok(&["dump-flows", "br0", "table=1"]).lines().count(), 1);
    s.ok(&["del-flows", "br0", "table=1"]);
    assert_eq!(s.ok(&["dump-flows", "br0", "table=1"]), "");

    // A bundle applies all of its mods ...
    let bundle = dir.path().join("bundle.txt");
    std::fs::write(
        &bundle,
        "flow add table=5,priority=1,actions=drop\n\
         delete table=3\n\
         modify_strict priority=10,in_port=2,actions=output:2\n",
    )
    .unwrap();
    s.ok(&["bundle", "br0", bundle.to_str().unwrap()]);
    let d = s.ok(&["dump-flows", "br0", "--no-stats"]);
    assert!(d.contains(" table=5, priority=1 actions=drop\n"), "{d}");
    assert!(!d.contains("table=3"), "{d}");
    assert!(
        d.contains(" priority=10,in_port=2 actions=output:2\n"),
        "{d}"
    );
    // ... or none.
    std::fs::write(
        &bundle,
        "# comment\ndelete table=5\n\nadd table=6,actions=goto_table:2\n",
    )
    .unwrap();
    let o = s.run(&["bundle", "br0", bundle.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    let want = format!("flowctl: {}:4: ", bundle.display());
    assert!(stderr(&o).starts_with(&want), "{}", stderr(&o));
    assert_eq!(
        s.ok(&["dump-flows", "br0", "--no-stats"]),
        d,
        "bundle applied nothing"
    );
    // A bad bundle verb is a usage error, before anything is sent.
    std::fs::write(&bundle, "frob table=5\n").unwrap();
    assert_eq!(
        code(&s.run(&["bundle", "br0", bundle.to_str().unwrap()])),
        2
    );

    // replace-flows makes the table equal to the file.
    std::fs::write(
        &file,
        "table=0,priority=10,in_port=1,actions=output:2\ntable=7,actions=drop\n",
    )
    .unwrap();
    s.ok(&["replace-flows", "br0", file.to_str().unwrap()]);
    assert_eq!(
        s.ok(&["dump-flows", "br0", "--no-stats"]),
        " priority=10,in_port=1 actions=output:2\n table=7, actions=drop\n"
    );
    // del-flows without a match empties the bridge.
    s.ok(&["del-flows", "br0"]);
    assert_eq!(s.ok(&["dump-flows", "br0"]), "");
}

#[test]
fn ports_tables_show_trace_and_capture_text() {
    let Some(s) = Switchd::start() else { return };
    two_pods(&s);
    s.ok(&["add-port", "br0", "tiny", "type=memory", "depth=1"]);
    s.ok(&[
        "add-flow",
        "br0",
        "priority=100,ip,nw_dst=10.244.1.3,actions=mod_dl_dst:02:00:00:00:00:02,dec_ttl,output:2",
    ]);
    s.ok(&["add-flow", "br0", "priority=90,ip,actions=output:3"]);
    s.ok(&["inject", "br0", "pod-a", ICMP_A_TO_B, ICMP_A_TO_B]);
    // Two frames to "tiny" (depth 1): one kept, one tx_ring_full.
    let other = ICMP_A_TO_B.replace("nw_dst=10.244.1.3", "nw_dst=10.244.1.9");
    s.ok(&["inject", "br0", "1", &other, &other]);
    // Unmatched (ARP): no_flow.
    s.ok(&["inject", "br0", "pod-a", "arp,dl_src=02:00:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,arp_spa=10.244.1.2,arp_tpa=10.244.1.3"]);

    let ports = s.ok(&["dump-ports", "br0"]);
    let masked = mask_durations(&ports);
    assert_eq!(
        masked,
        "OFPST_PORT reply (OF1.3): 3 ports\n\
         \x20 port  1 (pod-a): rx pkts=5, bytes=300, drop=1, errs=0, frame=0, over=0, crc=0\n\
         \x20                  tx pkts=0, bytes=0, drop=0, errs=0, coll=0\n\
         \x20                  rx drops: no_flow=1\n\
         \x20                  duration=X\n\
         \x20 port  2 (pod-b): rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0\n\
         \x20                  tx pkts=2, bytes=120, drop=0, errs=0, coll=0\n\
         \x20                  duration=X\n\
         \x20 port  3 (tiny): rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0\n\
         \x20                 tx pkts=1, bytes=60, drop=1, errs=0, coll=0\n\
         \x20                 tx drops: tx_ring_full=1\n\
         \x20                 duration=X\n"
    );
    let one = s.ok(&["dump-ports", "br0", "tiny"]);
    assert!(
        one.starts_with("OFPST_PORT reply (OF1.3): 1 ports\n  port  3 (tiny):"),
        "{one}"
    );

    let tables = s.ok(&["dump-tables", "br0"]);
    assert_eq!(
        tables,
        "OFPST_TABLE reply (OF1.3):\n  table 0:\n    active=2, lookup=5, matched=4\n\n  (254 other tables are empty and unused)\n"
    );

    let show = s.ok(&["show", "br0"]);
    let l: Vec<&str> = show.lines().collect();
    assert_eq!(
        l[0].split(", generation").next(),
        Some("br0: 255 tables, 2 flows"),
        "{show}"
    );
    assert_eq!(
        &l[1..4],
        [
            " 1(pod-a): type=memory state=up",
            " 2(pod-b): type=memory state=up",
            " 3(tiny): type=memory depth=1 state=up"
        ]
    );
    assert!(l[4].starts_with("pmd0: rx packets 5, "), "{show}");
    assert_eq!(l.len(), 5);

    // trace: ofproto/trace text ending with the datapath actions.
    let t = s.ok(&["trace", "br0", "in_port=1,icmp,nw_dst=10.244.1.3,nw_ttl=64"]);
    assert!(t.starts_with("Flow: icmp,in_port=1,"), "{t}");
    assert!(
        t.contains("\nbridge(\"br0\")\n-------------\n 0. ip,nw_dst=10.244.1.3, priority 100\n"),
        "{t}"
    );
    assert_eq!(
        t.lines().last(),
        Some("Datapath actions: set(eth(dst=02:00:00:00:00:02)),set(ipv4(ttl=63)),2")
    );
    let v = s.json(&[
        "trace",
        "br0",
        "in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.244.1.3,nw_ttl=64,udp_src=53,udp_dst=99",
    ]);
    let outs = v["report"]["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0]["port"], 2);
    assert_eq!(
        outs[0]["packet"],
        "udp,in_port=1,vlan_tci=0x0000,dl_src=00:00:00:00:00:00,dl_dst=02:00:00:00:00:02,nw_src=10.0.0.1,nw_dst=10.244.1.3,nw_tos=0,nw_ecn=0,nw_ttl=63,nw_frag=no,tp_src=53,tp_dst=99"
    );
    assert!(v["text"].as_str().unwrap().ends_with(&format!(
        "Datapath actions: {}",
        v["report"]["datapath_actions"].as_str().unwrap()
    )));
    // A trace that drops says so.
    let t = s.ok(&["trace", "br0", "in_port=1,arp"]);
    assert_eq!(t.lines().last(), Some("Datapath actions: drop"), "{t}");
    // A bad packet description: exit 1 with the caret.
    let o = s.run(&["trace", "br0", "in_port=1,tcp,tcp_dst=99999"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).ends_with("^\n"), "{}", stderr(&o));

    // capture: one block per frame, the parsed key, then the hex.
    let c = s.ok(&["capture", "br0", "pod-b", "--max", "1"]);
    let l: Vec<&str> = c.lines().collect();
    assert_eq!(l.len(), 2, "{c}");
    assert!(l[0].starts_with("frame 1: 60 bytes: icmp,"), "{c}");
    assert!(
        l[0].contains("dl_dst=02:00:00:00:00:02") && l[0].contains("nw_ttl=63"),
        "{c}"
    );
    assert!(l[1].starts_with("  020000000002020000000001080045"), "{c}");
    assert_eq!(
        s.ok(&["capture", "br0", "pod-b"]).lines().count(),
        2,
        "the second frame remains"
    );
    assert_eq!(s.ok(&["capture", "br0", "pod-b"]), "");
    // Inject takes hex too: the captured frame sent back in.
    let hex = l[1].trim();
    s.ok(&["inject", "br0", "pod-b", hex]);
    let v = s.json(&["dump-ports", "br0", "pod-b"]);
    assert_eq!(v["ports"][0]["stats"]["rx_packets"], 1);
}

#[test]
fn restart_keeps_ports_and_flows() {
    let Some(_) = switchd_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut s = Switchd::start_in(dir.path()).unwrap();
    two_pods(&s);
    s.ok(&[
        "add-port",
        "br0",
        "pod-z",
        "type=memory",
        "ofport=9",
        "depth=8",
    ]);
    s.ok(&["add-flow", "br0", "priority=100,cookie=0xbeef,ip,nw_dst=10.244.1.3,actions=mod_dl_dst:02:00:00:00:00:02,dec_ttl,output:2"]);
    s.ok(&[
        "add-flow",
        "br0",
        "table=1,hard_timeout=900,arp,actions=output:9",
    ]);
    let flows = s.ok(&["dump-flows", "br0", "--no-stats"]);
    let ports: Vec<String> = s
        .ok(&["show", "br0"])
        .lines()
        .skip(1)
        .take(3)
        .map(String::from)
        .collect();
    assert!(s.state.join("state.json").exists());
    // A crash (SIGKILL): everything was saved when it was applied.
    s.kill();
    assert!(s.sock.exists(), "a killed switchd leaves its socket behind");

    let s = Switchd::start_in(dir.path()).unwrap();
    assert_eq!(s.ok(&["dump-flows", "br0", "--no-stats"]), flows);
    let ports2: Vec<String> = s
        .ok(&["show", "br0"])
        .lines()
        .skip(1)
        .take(3)
        .map(String::from)
        .collect();
    assert_eq!(ports2, ports);
    assert_eq!(ports2[2], " 9(pod-z): type=memory depth=8 state=up");
    // Forwarding works without reprogramming.
    s.ok(&["inject", "br0", "pod-a", ICMP_A_TO_B]);
    let c = s.ok(&["capture", "br0", "pod-b"]);
    assert!(
        c.starts_with("frame 1: 60 bytes: icmp,") && c.contains("nw_ttl=63"),
        "{c}"
    );
    // A second switchd on the same socket is refused while the first runs.
    let o = Command::new(switchd_bin().unwrap())
        .arg("--socket")
        .arg(&s.sock)
        .arg("--state-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("already listening"), "{}", stderr(&o));
    s.ok(&["show", "br0"]);
}

#[test]
fn graceful_stop_and_corrupt_state() {
    let Some(_) = switchd_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut s = Switchd::start_in(dir.path()).unwrap();
    s.ok(&["add-flow", "br0", "actions=drop"]);
    // SIGTERM: clean exit, socket removed.
    let mut child = s.child.take().unwrap();
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "switchd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!s.sock.exists(), "socket removed on a clean stop");

    // Unusable paths: clear messages, exit 1.
    let long = dir.path().join("x".repeat(120));
    let o = Command::new(switchd_bin().unwrap())
        .arg("--socket")
        .arg(&long)
        .arg("--state-dir")
        .arg(&s.state)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("limited to 107 bytes"),
        "{}",
        stderr(&o)
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = Command::new(switchd_bin().unwrap())
        .arg("--socket")
        .arg(&s.sock)
        .arg("--state-dir")
        .arg(file.join("state"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("state directory"), "{}", stderr(&o));
    let o = Command::new(switchd_bin().unwrap())
        .args(["--socket-mode", "999"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "usage error");

    // A torn state file: switchd refuses to start, saying why and where.
    let state = s.state.join("state.json");
    std::fs::write(&state, "{\"version\":1,\"bridges\":{").unwrap();
    let o = Command::new(switchd_bin().unwrap())
        .arg("--socket")
        .arg(&s.sock)
        .arg("--state-dir")
        .arg(&s.state)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    let e = stderr(&o);
    assert!(
        e.contains("loading state") && e.contains(&state.display().to_string()),
        "{e}"
    );
}

#[test]
fn garbage_on_the_socket_gets_a_structured_error() {
    let Some(s) = Switchd::start() else { return };
    let stream = UnixStream::connect(&s.sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    for (req, code, what) in [
        ("{not json\n", "bad-request", "not valid JSON"),
        (
            "{\"cmd\":\"frobnicate\"}\n",
            "bad-request",
            "not a valid request",
        ),
        (
            "{\"cmd\":\"add-flow\",\"bridge\":\"br0\"}\n",
            "bad-request",
            "flow",
        ),
        ("[1,2,3]\n", "bad-request", "not a valid request"),
        (
            "{\"cmd\":\"add-flow\",\"bridge\":\"br0\",\"flow\":\"ip,nw_ttl=300,actions=drop\"}\n",
            "bad-flow",
            "300",
        ),
    ] {
        w.write_all(req.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(v["error"]["code"], code, "{req}: {line}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(what),
            "{req}: {line}"
        );
    }
    // Invalid UTF-8 too.
    w.write_all(b"\xff\xfe\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(
        line.contains("bad-request") && line.contains("UTF-8"),
        "{line}"
    );
    // The same connection still answers a good request, and so does a new one.
    w.write_all(b"{\"cmd\":\"hello\"}\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"]["bridges"][0], "br0", "{line}");
    // A client that disconnects mid-line does not hurt either.
    let mut half = UnixStream::connect(&s.sock).unwrap();
    half.write_all(b"{\"cmd\":\"hel").unwrap();
    drop(half);
    assert_eq!(s.ok(&["dump-flows", "br0"]), "");
    assert!(s.ok(&["show", "br0"]).starts_with("br0: "));
}

/// A stateful ACL in front of forwarding: every packet makes two datapath
/// passes (`ct(table=1)` recirculates it). `show` and `pmd-perf-show` count
/// passes, give the cache tiers' shares of passes, and `pmd-perf-show`
/// says how many recirculations the EMC hint answered, how many of those
/// ran as direct passes and how many `ct`s took the conntrack fast path;
/// `dump-flows` credits both tables whichever way the second pass ran.
#[test]
fn pmd_perf_show_counts_passes_recirculations_and_the_conntrack_fast_path() {
    let Some(s) = Switchd::start() else { return };
    two_pods(&s);
    let flows = "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)\n\
                 table=1,priority=20,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=1),output:2\n\
                 table=1,priority=20,ct_state=+trk+est,in_port=1,actions=output:2\n\
                 table=1,priority=20,ct_state=+trk+est,in_port=2,actions=output:1\n";
    let o = s.run_stdin(&["add-flows", "br0", "-"], flows);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = "udp,dl_src=02:00:00:00:00:0a,dl_dst=02:00:00:00:00:0b,nw_src=10.244.1.2,nw_dst=10.244.1.3,udp_src=4000,udp_dst=53";
    let b = "udp,dl_src=02:00:00:00:00:0b,dl_dst=02:00:00:00:00:0a,nw_src=10.244.1.3,nw_dst=10.244.1.2,udp_src=53,udp_dst=4000";
    s.ok(&["inject", "br0", "pod-a", a]);
    s.ok(&["inject", "br0", "pod-b", b]);
    // The EMC takes 1 in 100 keys (OVS's default): enough packets that the
    // first pass's key gets an entry, and the entry its hint.
    let burst: Vec<&str> = ["inject", "br0", "pod-a"]
        .into_iter()
        .chain(std::iter::repeat_n(a, 32))
        .collect();
    for _ in 0..20 {
        s.ok(&burst);
        s.ok(&["capture", "br0", "pod-b"]);
    }
    let rx = 2 + 20 * 32;
    let perf = s.json(&["pmd-perf-show", "br0"]);
    let t = &perf["pmds"][0];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k}: {t}"));
    assert_eq!(n("rx_packets"), rx, "{t}");
    assert_eq!(n("recirculations"), rx, "{t}");
    assert_eq!(n("passes"), 2 * rx, "{t}");
    assert_eq!(n("emc_hits") + n("megaflow_hits") + n("misses"), 2 * rx);
    let direct = n("direct_passes");
    assert!(direct > 0, "{t}");
    assert!(
        n("recirc_hint_hits") >= direct && n("ct_fast_hits") >= direct,
        "{t}"
    );
    let text = s.ok(&["pmd-perf-show", "br0"]);
    assert!(
        text.contains(&format!(
            "  Datapath passes:   {:>12}  (2.00 passes/pkt)\n",
            2 * rx
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  Recirculations:    {rx:>12}  ({} by hint, {direct} of them direct)\n  Conntrack fast path: {:>10}\n",
            n("recirc_hint_hits"),
            n("ct_fast_hits")
        )),
        "{text}"
    );
    let show = s.ok(&["show", "br0"]);
    assert!(
        show.contains(&format!(
            "pmd0: rx packets {rx}, datapath passes {}, emc hits ",
            2 * rx
        )),
        "{show}"
    );
    let dump = s.ok(&["dump-flows", "br0"]);
    let packets = |needle: &str| {
        let l = dump
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {dump}"));
        let v = l.split("n_packets=").nth(1).unwrap();
        v[..v.find(',').unwrap()].parse::<u64>().unwrap()
    };
    assert_eq!(packets("table=0,"), rx, "{dump}");
    assert_eq!(packets("+new+trk,in_port=1"), 1, "{dump}");
    assert_eq!(packets("+est+trk,in_port=1"), rx - 2, "{dump}");
    assert_eq!(packets("+est+trk,in_port=2"), 1, "{dump}");
}
