//! switchd's start-up order, through the real binary: the control socket
//! appears only after the state directory's ports and flows are restored, so
//! a client (or a script waiting for the socket) never meets a half-restored
//! switch, and a restore that fails leaves no socket behind.
//!
//! The restore is held at a known point by making `state.json` a FIFO:
//! switchd's read of the state blocks until the test writes it, which is
//! exactly "restore in progress", with no timing guess.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SWITCHD: &str = env!("CARGO_BIN_EXE_switchd");

/// A switchd child, killed when dropped (even when an assertion fails).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

fn start(dir: &Path) -> (Daemon, PathBuf) {
    let sock = dir.join("sd.sock");
    let child = Command::new(SWITCHD)
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchd");
    (Daemon(child), sock)
}

/// A state file with one memory port and `n` flows.
fn state_json(n: usize) -> String {
    let flows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "\"table=0, priority=100, ip,nw_dst=10.{}.{}.0/24 actions=output:1\"",
                i / 256,
                i % 256
            )
        })
        .collect();
    format!(
        r#"{{"version":1,"bridges":{{"br0":{{"ports":[{{"name":"p1","type":"memory","ofport":1}}],"flows":[{}]}}}}}}"#,
        flows.join(",")
    )
}

/// One request on the socket; the raw reply line.
fn call(sock: &Path, req: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn socket_appears_only_after_the_state_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let fifo = dir.path().join("state/state.json");
    mkfifo(&fifo);
    let (mut d, sock) = start(dir.path());
    // switchd is blocked reading its state: the restore has begun and not
    // finished. Give it ample time to (wrongly) create the socket.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        assert!(
            !sock.exists(),
            "control socket exists while the state is still being restored"
        );
        assert!(d.0.try_wait().unwrap().is_none(), "switchd exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Release the restore: 2000 flows and a port.
    std::fs::write(&fifo, state_json(2000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "switchd never opened its socket");
        assert!(d.0.try_wait().unwrap().is_none(), "switchd exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The very first answer sees the whole restored switch.
    let show = call(&sock, r#"{"cmd":"show","bridge":"br0"}"#);
    assert!(show.contains(r#""n_flows":2000"#), "{show}");
    assert!(show.contains(r#""name":"p1""#), "{show}");
}

#[test]
fn a_failed_restore_leaves_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    // The second flow does not parse: the restore fails.
    std::fs::write(
        dir.path().join("state/state.json"),
        r#"{"version":1,"bridges":{"br0":{"ports":[],"flows":["actions=drop","table=0,actions=frobnicate"]}}}"#,
    )
    .unwrap();
    let (mut d, sock) = start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        assert!(
            !sock.exists(),
            "control socket opened before the restore finished"
        );
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "switchd did not give up");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(!status.success());
    assert!(!sock.exists());
}
