//! Traffic tools: `ping` (iputils) and `iperf3`, run inside namespaces, with
//! their output parsed into what a test asserts on.
//!
//! Every child process is held by a [`ChildGuard`], which kills and reaps it
//! on `Drop` and bounds every wait with a deadline: a hung tool fails the
//! test with a timeout instead of hanging it.

use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::netns::kill9;
use crate::{Netns, Result, TopoError};

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Guard `child`; `what` names it in messages.
    pub fn new(child: Child, what: &str) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            what: what.to_string(),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Wait up to `timeout` for the child to exit; kill it and return an
    /// error when it does not.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Err(TopoError::Other(format!(
                "{} was already reaped",
                self.what
            )));
        };
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Ok(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TopoError::Other(format!(
                        "{} did not finish within {timeout:?}",
                        self.what
                    )));
                }
                Err(e) => return Err(TopoError::Other(format!("waiting for {}: {e}", self.what))),
            }
        }
    }

    /// Wait (bounded) and collect the child's piped stdout and stderr.
    pub fn output_timeout(&mut self, timeout: Duration) -> Result<(ExitStatus, String, String)> {
        // Drain the pipes on threads so a chatty child never blocks on a
        // full pipe while we wait for it.
        let (mut out, mut err) = (String::new(), String::new());
        let so = self.child.as_mut().and_then(|c| c.stdout.take());
        let se = self.child.as_mut().and_then(|c| c.stderr.take());
        let to = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = so {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let te = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = se {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let st = self.wait_timeout(timeout)?;
        if let Ok(s) = to.join() {
            out = s;
        }
        if let Ok(s) = te.join() {
            err = s;
        }
        Ok((st, out, err))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                kill9(c.id());
            }
            let _ = c.wait();
        }
    }
}

/// What `ping` reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PingResult {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// The TTL of the first reply, when one came back.
    pub ttl: Option<u8>,
    /// ping's standard output, for failure messages.
    pub output: String,
}

impl PingResult {
    /// Parse iputils-ping output: `N packets transmitted, M received` and the
    /// first `ttl=T`.
    pub fn parse(out: &str) -> Result<PingResult> {
        let summary = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| TopoError::Other(format!("no ping summary in {out:?}")))?;
        let num_before = |word: &str| -> Option<u32> {
            let i = summary.find(word)?;
            summary[..i].split_whitespace().last()?.parse().ok()
        };
        let transmitted = num_before(" packets transmitted")
            .ok_or_else(|| TopoError::Other(format!("bad ping summary {summary:?}")))?;
        let received = num_before(" received")
            .ok_or_else(|| TopoError::Other(format!("bad ping summary {summary:?}")))?;
        let ttl = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ttl=")?.parse().ok());
        Ok(PingResult {
            transmitted,
            received,
            ttl,
            output: out.to_string(),
        })
    }
}

/// Ping `dst` `count` times from `ns` (None: the host), 0.2 s apart, one
/// second's wait for the last reply. A ping that gets no reply is a result
/// (received 0); one that cannot send at all (no route) is an error with
/// ping's message.
pub fn ping(ns: Option<&Netns>, dst: &str, count: u32) -> Result<PingResult> {
    let host = Netns::host();
    let ns = ns.unwrap_or(&host);
    let c = count.to_string();
    let o = ns.exec(&["ping", "-n", "-c", &c, "-i", "0.2", "-W", "1", dst])?;
    PingResult::parse(&String::from_utf8_lossy(&o.stdout)).map_err(|e| {
        TopoError::Other(format!(
            "ping {dst}: {e}; stderr: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    })
}

/// What an iperf3 client measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Iperf3Result {
    /// Throughput seen by the receiver, bits per second.
    pub bits_per_second: f64,
    /// Bytes the receiver got.
    pub bytes: u64,
    /// TCP retransmissions at the sender (None for UDP).
    pub retransmits: Option<u64>,
}

impl Iperf3Result {
    /// Parse `iperf3 -J` output (the `end.sum_received` of a TCP test, or
    /// `end.sum` of a UDP one).
    pub fn parse(json: &str) -> Result<Iperf3Result> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| TopoError::Other(format!("iperf3 -J output: {e}")))?;
        if let Some(e) = v["error"].as_str() {
            return Err(TopoError::Other(format!("iperf3: {e}")));
        }
        let end = &v["end"];
        let sum = if end["sum_received"].is_object() {
            &end["sum_received"]
        } else {
            &end["sum"]
        };
        let bits_per_second = sum["bits_per_second"]
            .as_f64()
            .ok_or_else(|| TopoError::Other("iperf3 -J: no end.sum*.bits_per_second".into()))?;
        Ok(Iperf3Result {
            bits_per_second,
            bytes: sum["bytes"].as_u64().unwrap_or(0),
            retransmits: end["sum_sent"]["retransmits"].as_u64(),
        })
    }
}

/// A port for the next iperf3 server of this process (distinct per call, so
/// parallel tests sharing a namespace never collide).
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 20000) as u16;
    base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) % 1000)
}

/// Run one iperf3 TCP test: a one-shot server (`-s -1`) bound to
/// `server_ip` in `server_ns`, a client in `client_ns` for `seconds`
/// (plus `client_args`, e.g. `["-u", "-b", "100M"]`). Both processes are
/// guarded: killed if they outlive the test's deadline.
pub fn iperf3(
    server_ns: Option<&Netns>,
    server_ip: &str,
    client_ns: Option<&Netns>,
    seconds: u32,
    client_args: &[&str],
) -> Result<Iperf3Result> {
    let host = Netns::host();
    let sns = server_ns.unwrap_or(&host);
    let cns = client_ns.unwrap_or(&host);
    let port = next_port().to_string();
    let mut sc = sns.command("iperf3");
    sc.args(["-s", "-1", "-B", server_ip, "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = sc.spawn().map_err(|source| TopoError::Spawn {
        cmd: crate::describe(&sc),
        source,
    })?;
    let mut server = ChildGuard::new(server, "iperf3 server");
    // Wait until the server listens (ss from iproute2, in its namespace).
    let filter = format!("sport = :{port}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let o = sns.exec(&["ss", "-Hltn", &filter])?;
        if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(TopoError::Other(format!(
                "iperf3 server on {server_ip}:{port} never listened"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = seconds.max(1).to_string();
    let mut cmd = vec!["iperf3", "-c", server_ip, "-p", &port, "-t", &secs, "-J"];
    cmd.extend_from_slice(client_args);
    let mut client = ChildGuard::new(cns.spawn(&cmd)?, "iperf3 client");
    let limit = Duration::from_secs(u64::from(seconds.max(1)) + 5);
    let (_st, out, err) = client.output_timeout(limit)?;
    let r = Iperf3Result::parse(&out).map_err(|e| TopoError::Other(format!("{e}; stderr: {err}")));
    // The one-shot server exits after the test; the guard reaps or kills it.
    let _ = server.wait_timeout(Duration::from_secs(2));
    r
}

/// A TCP server on `argv[1]` answering every connection with "hello" (90 s
/// at most; [`hello_server`]'s guard kills it sooner).
const HELLO_SERVER: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(8)
s.settimeout(90)
t = time.time()
while time.time() - t < 90:
    try:
        c, _ = s.accept()
        c.sendall(b'hello\n')
        c.close()
    except Exception:
        break
"#;

/// Connect to argv[1]:argv[2] (3 s timeout) and print what the server says.
const HELLO_CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print('got', c.recv(64).decode().strip())
except Exception as e:
    print('failed', type(e).__name__)
"#;

/// Start a TCP server in `ns` on `port` that answers every connection with
/// "hello", and return once it listens (python3 can take seconds to start
/// on a loaded machine). The guard kills it.
pub fn hello_server(ns: &Netns, port: u16) -> Result<ChildGuard> {
    let p = port.to_string();
    let g = ChildGuard::new(
        ns.spawn(&["python3", "-c", HELLO_SERVER, &p])?,
        "hello server",
    );
    ns.wait_listening(port, Duration::from_secs(20))?;
    Ok(g)
}

/// Connect from `ns` to `ip:port` (3 s timeout): "got hello" from a
/// [`hello_server`], or "failed <python exception>" (e.g. "failed timeout"
/// when a SYN is dropped, "failed ConnectionRefusedError").
pub fn tcp_hello(ns: &Netns, ip: &str, port: u16) -> Result<String> {
    let out = ns.exec(&["python3", "-c", HELLO_CLIENT, ip, &port.to_string()])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_ping_output() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.2: icmp_seq=1 ttl=63 time=0.061 ms\n\
                   64 bytes from 10.0.0.2: icmp_seq=2 ttl=63 time=0.050 ms\n\n\
                   --- 10.0.0.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 2002ms\n";
        let r = PingResult::parse(out).unwrap();
        assert_eq!((r.transmitted, r.received, r.ttl), (3, 2, Some(63)));
        let lost = "--- 10.0.0.9 ping statistics ---\n\
                    2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n";
        let r = PingResult::parse(lost).unwrap();
        assert_eq!((r.transmitted, r.received, r.ttl), (2, 0, None));
        assert!(PingResult::parse("ping: connect: Network is unreachable\n").is_err());
    }

    #[test]
    fn parses_iperf3_json() {
        let tcp = r#"{"end":{"sum_sent":{"bytes":1000,"bits_per_second":8000.0,"retransmits":3},
                     "sum_received":{"bytes":990,"bits_per_second":7920.0}}}"#;
        let r = Iperf3Result::parse(tcp).unwrap();
        assert_eq!(r.bits_per_second, 7920.0);
        assert_eq!((r.bytes, r.retransmits), (990, Some(3)));
        let udp = r#"{"end":{"sum":{"bytes":500,"bits_per_second":4000.0}}}"#;
        assert_eq!(Iperf3Result::parse(udp).unwrap().bits_per_second, 4000.0);
        let e = Iperf3Result::parse(r#"{"error":"unable to connect to server"}"#).unwrap_err();
        assert!(e.to_string().contains("unable to connect"));
        assert!(Iperf3Result::parse("not json").is_err());
    }
}
