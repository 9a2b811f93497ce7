//! Network namespaces and veth pairs with the helpers a topology needs:
//! addresses, routes, MTU, neighbours, forwarding, link counters.
//!
//! A [`Netns`] is `ip netns add fs-<prefix>-<pid>` with loopback up; on
//! `Drop` it kills whatever still runs inside and deletes the namespace. A
//! [`VethPair`] is deleted on `Drop`. Helpers run `ip -n <ns> ...` (or plain
//! `ip` for the host's namespace, [`Netns::host`]) and turn a failure into an
//! error carrying ip's message. Nothing here panics.

use std::process::{Child, Command, Output, Stdio};

use crate::{checked, output, Result, TopoError};

/// A network namespace (or the host's own, see [`Netns::host`]).
#[derive(Debug)]
pub struct Netns {
    /// None for the host's namespace.
    name: Option<String>,
    /// True when this value created the namespace and deletes it on drop.
    owned: bool,
}

/// Interface counters, from `ip -j -s link show`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames dropped on receive.
    pub rx_dropped: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames dropped on transmit.
    pub tx_dropped: u64,
}

/// The full name of the namespace with `prefix` in this process.
pub(crate) fn netns_name(prefix: &str) -> String {
    format!("fs-{prefix}-{}", std::process::id())
}

/// Names in `ip netns list`.
pub(crate) fn list_netns() -> Result<Vec<String>> {
    let mut c = Command::new("ip");
    c.args(["netns", "list"]);
    let out = checked(c)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Pids of the processes inside the namespace `name`.
pub(crate) fn netns_pids(name: &str) -> Vec<u32> {
    let mut c = Command::new("ip");
    c.args(["netns", "pids", name]);
    checked(c)
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kill every process inside `name`, then delete it. Errors are reported on
/// stderr, not returned: this runs from `Drop`.
pub(crate) fn destroy_netns(name: &str) {
    for pid in netns_pids(name) {
        kill9(pid);
    }
    let mut c = Command::new("ip");
    c.args(["netns", "del", name]);
    if let Err(e) = checked(c) {
        eprintln!("topology-tests: deleting netns {name}: {e}");
    }
}

/// SIGKILL `pid` (ignoring a process that is already gone).
pub(crate) fn kill9(pid: u32) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a positive pid with a constant signal; no memory involved.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

impl Netns {
    /// Create `fs-<prefix>-<pid>` with loopback up. A stale namespace of the
    /// same name (a previous process with this pid that was killed) is
    /// removed first.
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = netns_name(prefix);
        if list_netns()?.contains(&name) {
            destroy_netns(&name);
        }
        let mut c = Command::new("ip");
        c.args(["netns", "add", &name]);
        checked(c)?;
        let ns = Netns {
            name: Some(name),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The host's (this process's) namespace: the same helpers, nothing
    /// created and nothing deleted on drop.
    pub fn host() -> Netns {
        Netns {
            name: None,
            owned: false,
        }
    }

    /// A handle on an existing namespace (None: the host's) that is never
    /// deleted on drop.
    pub fn handle(name: Option<&str>) -> Netns {
        Netns {
            name: name.map(str::to_string),
            owned: false,
        }
    }

    /// The namespace's name (`fs-<prefix>-<pid>`); "" for the host.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// A command that runs `prog` inside the namespace (`ip netns exec`).
    pub fn command(&self, prog: &str) -> Command {
        match &self.name {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n, prog]);
                c
            }
            None => Command::new(prog),
        }
    }

    /// Run `cmd[0] cmd[1..]` inside the namespace to completion; its output
    /// whatever the exit status.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output> {
        let (prog, args) = cmd
            .split_first()
            .ok_or_else(|| TopoError::Other("exec: empty command".into()))?;
        let mut c = self.command(prog);
        c.args(args);
        output(c)
    }

    /// Run a command inside the namespace; its stdout, or an error when it
    /// does not exit 0.
    pub fn run(&self, cmd: &[&str]) -> Result<String> {
        let (prog, args) = cmd
            .split_first()
            .ok_or_else(|| TopoError::Other("run: empty command".into()))?;
        let mut c = self.command(prog);
        c.args(args);
        checked(c)
    }

    /// Start a command inside the namespace, stdout and stderr piped.
    pub fn spawn(&self, cmd: &[&str]) -> Result<Child> {
        let (prog, args) = cmd
            .split_first()
            .ok_or_else(|| TopoError::Other("spawn: empty command".into()))?;
        let mut c = self.command(prog);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().map_err(|source| TopoError::Spawn {
            cmd: crate::describe(&c),
            source,
        })
    }

    /// Wait (at most `within`) until something in the namespace listens on
    /// TCP `port`: a server just spawned (python3 on a loaded machine can
    /// take seconds to start) is ready only then, and a fixed sleep before
    /// connecting is a flaky test.
    pub fn wait_listening(&self, port: u16, within: std::time::Duration) -> Result<()> {
        let end = std::time::Instant::now() + within;
        let filter = format!("sport = :{port}");
        loop {
            if !self.run(&["ss", "-Hltn", &filter])?.trim().is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= end {
                return Err(TopoError::Other(format!(
                    "nothing listens on TCP {port} in {} after {within:?}",
                    self.name()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `ip ARGS` in this namespace (`ip -n NAME ARGS`).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        if let Some(n) = &self.name {
            c.args(["-n", n]);
        }
        c.args(args);
        checked(c)
    }

    /// Add an address (`10.0.0.1/24`, `fd00::1/64`) to `dev`.
    pub fn addr_add(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Route `dst` (`10.0.1.0/24`, `default`) via the gateway `via`.
    pub fn route_add(&self, dst: &str, via: &str) -> Result<()> {
        self.ip(&["route", "add", dst, "via", via]).map(drop)
    }

    /// Route `dst` straight out of `dev` (on-link).
    pub fn route_add_dev(&self, dst: &str, dev: &str) -> Result<()> {
        self.ip(&["route", "add", dst, "dev", dev]).map(drop)
    }

    /// Set `dev`'s MTU.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        self.ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Bring `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", "dev", dev, "up"]).map(drop)
    }

    /// A permanent neighbour entry: `ip` is at `mac` on `dev`.
    pub fn neigh_add(&self, dev: &str, ip: &str, mac: &str) -> Result<()> {
        self.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .map(drop)
    }

    /// Turn IPv4 forwarding on (the namespace becomes a router).
    pub fn enable_ipv4_forwarding(&self) -> Result<()> {
        self.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            .map(drop)
    }

    /// Turn IPv6 off for every current and future interface of the
    /// namespace, so the kernel's own IPv6 chatter (router solicitations,
    /// MLD reports) does not disturb exact counter checks.
    pub fn disable_ipv6(&self) -> Result<()> {
        self.run(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .map(drop)
    }

    /// One link's `ip -j -s link show dev` object.
    fn link_json(&self, dev: &str) -> Result<serde_json::Value> {
        let out = self.ip(&["-j", "-s", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| TopoError::Other(format!("ip -j link show {dev}: {e}")))?;
        Ok(v[0].clone())
    }

    /// `dev`'s MAC address (`aa:bb:cc:dd:ee:ff`).
    pub fn mac(&self, dev: &str) -> Result<String> {
        self.link_json(dev)?["address"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| TopoError::Other(format!("{dev} has no link address")))
    }

    /// `dev`'s MTU.
    pub fn mtu(&self, dev: &str) -> Result<u32> {
        self.link_json(dev)?["mtu"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| TopoError::Other(format!("{dev} has no mtu")))
    }

    /// `dev`'s counters.
    pub fn link_stats(&self, dev: &str) -> Result<LinkStats> {
        let v = self.link_json(dev)?;
        let s = &v["stats64"];
        let n = |dir: &str, k: &str| -> Result<u64> {
            s[dir][k]
                .as_u64()
                .ok_or_else(|| TopoError::Other(format!("{dev}: no stats64.{dir}.{k}")))
        };
        Ok(LinkStats {
            rx_packets: n("rx", "packets")?,
            rx_bytes: n("rx", "bytes")?,
            rx_dropped: n("rx", "dropped")?,
            tx_packets: n("tx", "packets")?,
            tx_bytes: n("tx", "bytes")?,
            tx_dropped: n("tx", "dropped")?,
        })
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        let out = self.ip(&["-j", "link", "show"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| TopoError::Other(format!("ip -j link show: {e}")))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let (true, Some(n)) = (self.owned, &self.name) {
            destroy_netns(n);
        }
    }
}

/// A veth pair: `a` in `ns_a`, `b` in `ns_b` (None: the host's namespace),
/// both up. Deleted (both ends) on `Drop`.
#[derive(Debug)]
pub struct VethPair {
    a: String,
    ns_a: Option<String>,
    b: String,
    ns_b: Option<String>,
}

impl VethPair {
    /// Create the pair with each end directly in its namespace (so names
    /// need only be unique inside that namespace) and bring both ends up.
    /// Names are at most 15 bytes.
    pub fn new(
        name_a: &str,
        ns_a: Option<&Netns>,
        name_b: &str,
        ns_b: Option<&Netns>,
    ) -> Result<VethPair> {
        VethPair::with_queues(name_a, ns_a, name_b, ns_b, None)
    }

    /// As [`VethPair::new`], each end with `queues` rx and tx queues when
    /// given (`ip link add ... numtxqueues N numrxqueues N type veth peer
    /// ... numtxqueues N numrxqueues N`): what a multi-queue AF_XDP port
    /// binds, and what spreads a pod's flows over queues by hash.
    pub fn with_queues(
        name_a: &str,
        ns_a: Option<&Netns>,
        name_b: &str,
        ns_b: Option<&Netns>,
        queues: Option<u32>,
    ) -> Result<VethPair> {
        let q = queues.map(|n| n.to_string());
        let qargs: Vec<&str> = match &q {
            Some(n) => vec!["numtxqueues", n, "numrxqueues", n],
            None => Vec::new(),
        };
        for n in [name_a, name_b] {
            if n.is_empty() || n.len() > 15 {
                return Err(TopoError::Other(format!(
                    "interface name {n:?} must be 1..15 bytes"
                )));
            }
        }
        let ns_a = ns_a.and_then(|n| n.name.clone());
        let ns_b = ns_b.and_then(|n| n.name.clone());
        let mut c = Command::new("ip");
        c.args(["link", "add", name_a]);
        if let Some(n) = &ns_a {
            c.args(["netns", n]);
        }
        c.args(&qargs);
        c.args(["type", "veth", "peer", "name", name_b]);
        if let Some(n) = &ns_b {
            c.args(["netns", n]);
        }
        c.args(&qargs);
        checked(c)?;
        let pair = VethPair {
            a: name_a.to_string(),
            ns_a,
            b: name_b.to_string(),
            ns_b,
        };
        pair.end_a().link_up(name_a)?;
        pair.end_b().link_up(name_b)?;
        Ok(pair)
    }

    fn end_a(&self) -> Netns {
        Netns::handle(self.ns_a.as_deref())
    }

    fn end_b(&self) -> Netns {
        Netns::handle(self.ns_b.as_deref())
    }

    /// The name of end a.
    pub fn a(&self) -> &str {
        &self.a
    }

    /// The name of end b.
    pub fn b(&self) -> &str {
        &self.b
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting one end deletes both. The namespace may already be gone
        // (and the pair with it): then there is nothing to do.
        let mut c = Command::new("ip");
        if let Some(n) = &self.ns_a {
            if !list_netns().unwrap_or_default().contains(n) {
                return;
            }
            c.args(["-n", n]);
        }
        c.args(["link", "del", &self.a]);
        let _ = output(c);
    }
}
