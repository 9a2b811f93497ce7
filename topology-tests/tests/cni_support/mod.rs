//! A container runtime in miniature, for the end-to-end tests of the
//! `ferroswitch` CNI plugin (tests/cni*.rs).
//!
//! It drives plugins exactly as the CNI specification 1.1.0 (§2, "Execution
//! Protocol") says a runtime does, and as libcni does it: the plugin binary
//! is looked up by its `type` in a CNI_PATH directory, run with the
//! parameters in the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
//! CNI_IFNAME, CNI_ARGS, CNI_PATH) and the network configuration on stdin;
//! its stdout is the result (exit 0) or the error object `{cniVersion, code,
//! msg, details}` (exit non-zero). A configuration list (§1, "chaining") runs
//! its plugins in order for ADD and CHECK with `prevResult` injected (§4
//! "Chained Plugins"), in reverse order for DEL, with the runtime's cached
//! result as `prevResult`.
//!
//! The CNI_PATH directory sits in the test's [`LeakGuard`] directory and
//! holds `ferroswitch` (the workspace's build: `cargo build -p cni-shim`)
//! beside symbolic links to Debian's reference plugins in /usr/lib/cni
//! (`host-local`, `tuning`). host-local's `dataDir` is in the same scratch
//! directory, so the tests read its reservations and nothing reaches
//! /var/lib/cni. What goes in is JSON and environment; what comes out is a
//! [`Reply`]. Nothing here panics on a plugin's output: a hung plugin is
//! killed after [`PLUGIN_TIMEOUT`] and reported as an error.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use topology_tests::{bin_dir, ChildGuard, LeakGuard, Netns, Result, Switchd, TopoError};

/// How long one plugin invocation may take before the test calls it hung
/// (generous: the plugin serialises invocations on a lock, so the last of
/// 20 parallel ADDs waits for the 19 others).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(240);

/// Where Debian's containernetworking-plugins are installed.
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";

/// The bridge of the test switchd (switchd's default `--bridge`).
pub const BRIDGE: &str = "br0";

/// An error of the harness.
pub fn err(s: impl Into<String>) -> TopoError {
    TopoError::Other(s.into())
}

/// True when the plugin binary and Debian's plugins are there; otherwise
/// says why the test is skipped (a developer's machine without the
/// package), or fails when only our binary is missing (a build step
/// forgotten is a failure, not a skip).
pub fn have_plugins() -> Result<bool> {
    for p in ["host-local", "tuning"] {
        if !Path::new(SYSTEM_CNI_DIR).join(p).is_file() {
            eprintln!(
                "skipping: {SYSTEM_CNI_DIR}/{p} missing (scripts/setup.sh installs \
                 containernetworking-plugins)"
            );
            return Ok(false);
        }
    }
    ferroswitch_bin()?;
    Ok(true)
}

/// The plugin binary of this workspace.
pub fn ferroswitch_bin() -> Result<PathBuf> {
    let p = bin_dir()?.join("ferroswitch");
    if p.is_file() {
        Ok(p)
    } else {
        Err(err(format!(
            "{} not found: run `cargo build -p cni-shim` (or `cargo build --bins`) \
             before the CNI tests",
            p.display()
        )))
    }
}

/// The path a runtime passes as CNI_NETNS for the namespace `ns`
/// (`ip netns add` bind-mounts it there).
pub fn netns_path(ns: &Netns) -> String {
    format!("/var/run/netns/{}", ns.name())
}

/// One attachment of a container to a network: what a runtime puts in the
/// environment besides the command.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS (None: left out of the environment).
    pub netns: Option<String>,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`, plus `IP=`...).
    pub args: String,
}

impl Attachment {
    /// The attachment of Kubernetes pod `default/<pod>` in `ns` as `ifname`,
    /// with a container id unique to this test process.
    pub fn pod(pod: &str, ns: &Netns, ifname: &str) -> Attachment {
        Attachment {
            container_id: format!("{pod}-{:08x}", std::process::id()),
            netns: Some(netns_path(ns)),
            ifname: ifname.to_string(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};\
                 K8S_POD_INFRA_CONTAINER_ID={pod}-{:08x}",
                std::process::id()
            ),
        }
    }

    /// The same attachment with `extra` (`IP=10.244.1.77`) appended to CNI_ARGS.
    pub fn with_arg(mut self, extra: &str) -> Attachment {
        self.args = format!("{};{extra}", self.args);
        self
    }
}

/// What a plugin printed and how it exited.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The command line-ish description (`ferroswitch ADD pod-a eth0`), for messages.
    pub what: String,
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output (result or error JSON).
    pub stdout: String,
    /// Standard error (the plugin's log).
    pub stderr: String,
}

impl Reply {
    /// Standard output parsed as JSON (None: empty or not JSON).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }

    /// The result of a successful call: exit 0 and a JSON object on stdout.
    pub fn result(&self) -> Result<Value> {
        if !self.status.success() {
            return Err(err(format!(
                "{} failed ({}): stdout {} stderr {}",
                self.what,
                self.status,
                self.stdout.trim(),
                self.stderr.trim()
            )));
        }
        match self.json() {
            Some(v) if v.is_object() => Ok(v),
            _ => Err(err(format!(
                "{}: exit 0 but stdout is not a JSON object: {:?} (stderr {})",
                self.what,
                self.stdout,
                self.stderr.trim()
            ))),
        }
    }

    /// A successful call with no result (DEL, STATUS, GC, CHECK print
    /// nothing on success, §2: "the plugin should not output anything").
    pub fn ok_empty(&self) -> Result<()> {
        if !self.status.success() {
            return Err(err(format!(
                "{} failed ({}): stdout {} stderr {}",
                self.what,
                self.status,
                self.stdout.trim(),
                self.stderr.trim()
            )));
        }
        Ok(())
    }

    /// The error of a failed call: non-zero exit and an error object with a
    /// numeric `code` and a non-empty `msg` (§2 "Error"). `(code, msg,
    /// details)`.
    pub fn error(&self) -> Result<(u64, String, String)> {
        if self.status.success() {
            return Err(err(format!(
                "{} succeeded where an error was expected: {}",
                self.what,
                self.stdout.trim()
            )));
        }
        let v = self.json().ok_or_else(|| {
            err(format!(
                "{} failed ({}) without an error object on stdout: {:?} (stderr {})",
                self.what, self.status, self.stdout, self.stderr
            ))
        })?;
        let code = v["code"]
            .as_u64()
            .ok_or_else(|| err(format!("{}: error without a numeric code: {v}", self.what)))?;
        let msg = v["msg"].as_str().unwrap_or_default().to_string();
        if msg.trim().is_empty() {
            return Err(err(format!("{}: error without msg: {v}", self.what)));
        }
        let details = v["details"].as_str().unwrap_or_default().to_string();
        Ok((code, msg, details))
    }
}

/// The runtime's side of one node: the CNI_PATH directory, host-local's
/// data directory and the switchd the plugin talks to.
#[derive(Debug)]
pub struct Runtime {
    /// CNI_PATH: ferroswitch and links to Debian's plugins.
    pub cni_path: PathBuf,
    /// host-local's dataDir.
    pub ipam_dir: PathBuf,
    /// The plugin's own state directory (pending cleanups...).
    pub state_dir: PathBuf,
    /// Directory for vhost-user sockets (the config's socket directory).
    pub sock_dir: PathBuf,
    /// switchd's control socket.
    pub socket: PathBuf,
}

impl Runtime {
    /// Lay out the runtime's directories in `guard`'s scratch directory for
    /// a switchd listening on `socket`.
    pub fn new(guard: &LeakGuard, socket: &Path) -> Result<Runtime> {
        let rt = Runtime {
            cni_path: guard.path("cni-bin"),
            ipam_dir: guard.path("ipam"),
            state_dir: guard.path("cni-state"),
            sock_dir: guard.path("vhu"),
            socket: socket.to_path_buf(),
        };
        for d in [&rt.cni_path, &rt.ipam_dir, &rt.state_dir, &rt.sock_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| err(format!("creating {}: {e}", d.display())))?;
        }
        let link = |from: &Path, name: &str| -> Result<()> {
            std::os::unix::fs::symlink(from, rt.cni_path.join(name))
                .map_err(|e| err(format!("linking {} into CNI_PATH: {e}", from.display())))
        };
        link(&ferroswitch_bin()?, "ferroswitch")?;
        for p in ["host-local", "tuning", "loopback"] {
            link(&Path::new(SYSTEM_CNI_DIR).join(p), p)?;
        }
        Ok(rt)
    }

    /// Run plugin `ty` with `command`, the attachment's environment (None:
    /// only CNI_COMMAND and CNI_PATH, as for VERSION, STATUS and GC) and
    /// `stdin`. The environment is cleared first except PATH (the plugin
    /// finds `ip` and friends there), as a runtime's would not carry test
    /// noise.
    pub fn exec(
        &self,
        ty: &str,
        command: &str,
        att: Option<&Attachment>,
        stdin: &str,
    ) -> Result<Reply> {
        self.exec_env(ty, command, att, stdin, &[])
    }

    /// As [`Runtime::exec`], with `extra` environment variables (or
    /// overrides) last.
    pub fn exec_env(
        &self,
        ty: &str,
        command: &str,
        att: Option<&Attachment>,
        stdin: &str,
        extra: &[(&str, &str)],
    ) -> Result<Reply> {
        let bin = self.cni_path.join(ty);
        let mut c = Command::new(&bin);
        c.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", &self.cni_path);
        if let Some(a) = att {
            c.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", &a.args);
            if let Some(n) = &a.netns {
                c.env("CNI_NETNS", n);
            }
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = match att {
            Some(a) => format!("{ty} {command} {} {}", a.container_id, a.ifname),
            None => format!("{ty} {command}"),
        };
        let mut child = c
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", bin.display())))?;
        let input = child.stdin.take();
        let mut guard = ChildGuard::new(child, &what);
        if let Some(mut i) = input {
            // A plugin that exits before reading stdin (a VERSION without
            // input) closes the pipe: not an error of the runtime.
            let _ = i.write_all(stdin.as_bytes());
        }
        let (status, stdout, stderr) = guard.output_timeout(PLUGIN_TIMEOUT)?;
        Ok(Reply {
            what,
            status,
            stdout,
            stderr,
        })
    }

    /// host-local IPAM for `subnet` with `gateway`, its data in this
    /// runtime's `ipam_dir`, and a default route (the pod's way out).
    pub fn host_local(&self, subnet: &str, gateway: &str) -> Value {
        json!({
            "type": "host-local",
            "dataDir": self.ipam_dir,
            "ranges": [[{ "subnet": subnet, "gateway": gateway }]],
            "routes": [{ "dst": "0.0.0.0/0" }]
        })
    }

    /// A `ferroswitch` plugin configuration (no name or cniVersion: the
    /// list adds them) for this runtime's switchd, with `ipam`, merged with
    /// `extra` (keys of `extra` win).
    pub fn ferroswitch_conf(&self, ipam: Value, extra: Value) -> Value {
        let mut c = json!({
            "type": "ferroswitch",
            "socket": self.socket,
            "bridge": BRIDGE,
            "mode": "overlay",
            "stateDir": self.state_dir,
            "socketDir": self.sock_dir,
            "ipam": ipam,
        });
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Names of the IP addresses host-local has reserved for network
    /// `net` (the files named after an address in `dataDir/net/`), each
    /// with the file's content (container id and interface name).
    pub fn reservations(&self, net: &str) -> Result<Vec<(IpAddr, String)>> {
        let dir = self.ipam_dir.join(net);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(format!("reading {}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(ip) = name.parse::<IpAddr>() {
                let content = std::fs::read_to_string(e.path()).unwrap_or_default();
                out.push((ip, content));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A configuration list (§1): a name, a cniVersion and plugins, run as a
/// runtime runs it.
#[derive(Clone, Debug)]
pub struct NetList {
    /// The network name (`name`).
    pub name: String,
    /// The list's cniVersion.
    pub cni_version: String,
    /// The plugins' configurations, in order.
    pub plugins: Vec<Value>,
}

impl NetList {
    /// A list of one plugin.
    pub fn single(name: &str, version: &str, plugin: Value) -> NetList {
        NetList {
            name: name.to_string(),
            cni_version: version.to_string(),
            plugins: vec![plugin],
        }
    }

    /// The configuration plugin `i` gets on stdin: its own keys, plus the
    /// list's `name` and `cniVersion`, plus `prevResult` when given (§3
    /// "Deriving execution configuration from plugin configuration").
    pub fn plugin_conf(&self, i: usize, prev: Option<&Value>) -> Value {
        let mut c = self.plugins.get(i).cloned().unwrap_or_else(|| json!({}));
        if let Some(m) = c.as_object_mut() {
            m.insert("name".into(), json!(self.name));
            m.insert("cniVersion".into(), json!(self.cni_version));
            if let Some(p) = prev {
                m.insert("prevResult".into(), p.clone());
            }
        }
        c
    }

    fn ty(&self, i: usize) -> String {
        self.plugins
            .get(i)
            .and_then(|p| p["type"].as_str())
            .unwrap_or("")
            .to_string()
    }

    /// ADD: every plugin in order, each given the previous one's result;
    /// the last result is the attachment's (§4). Stops at the first error
    /// and returns that plugin's reply as the error.
    pub fn add(&self, rt: &Runtime, att: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let conf = self.plugin_conf(i, prev.as_ref());
            let r = rt.exec(&self.ty(i), "ADD", Some(att), &conf.to_string())?;
            prev = Some(r.result()?);
        }
        prev.ok_or_else(|| err(format!("network {} has no plugins", self.name)))
    }

    /// ADD that is expected to fail: the failing plugin's reply.
    pub fn add_reply(&self, rt: &Runtime, att: &Attachment) -> Result<Reply> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let conf = self.plugin_conf(i, prev.as_ref());
            let r = rt.exec(&self.ty(i), "ADD", Some(att), &conf.to_string())?;
            if !r.status.success() || i + 1 == self.plugins.len() {
                return Ok(r);
            }
            prev = Some(r.result()?);
        }
        Err(err(format!("network {} has no plugins", self.name)))
    }

    /// DEL: every plugin in reverse order, each given the cached result of
    /// the ADD (`prev`, None when the runtime lost it). Every plugin runs
    /// even when one fails, and the first failure is returned (libcni).
    pub fn del(&self, rt: &Runtime, att: &Attachment, prev: Option<&Value>) -> Result<()> {
        let mut first_err = None;
        for i in (0..self.plugins.len()).rev() {
            let conf = self.plugin_conf(i, prev);
            let r = rt.exec(&self.ty(i), "DEL", Some(att), &conf.to_string())?;
            if let Err(e) = r.ok_empty() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK: every plugin in order with the cached result; the first
    /// failing plugin's reply, or the last (successful) one.
    pub fn check(&self, rt: &Runtime, att: &Attachment, prev: &Value) -> Result<Reply> {
        let mut last = None;
        for i in 0..self.plugins.len() {
            let conf = self.plugin_conf(i, Some(prev));
            let r = rt.exec(&self.ty(i), "CHECK", Some(att), &conf.to_string())?;
            if !r.status.success() {
                return Ok(r);
            }
            last = Some(r);
        }
        last.ok_or_else(|| err(format!("network {} has no plugins", self.name)))
    }

    /// GC (1.1.0, §2 "GC"): each plugin gets its configuration with
    /// `cni.dev/valid-attachments` (and the older spelling
    /// `cni.dev/attachments`, as libcni sends both) listing `valid`.
    pub fn gc(&self, rt: &Runtime, valid: &[&Attachment]) -> Result<Vec<Reply>> {
        self.gc_keys(
            rt,
            valid,
            &["cni.dev/valid-attachments", "cni.dev/attachments"],
        )
    }

    /// GC with the list under the given keys only (one spelling or both).
    pub fn gc_keys(
        &self,
        rt: &Runtime,
        valid: &[&Attachment],
        keys: &[&str],
    ) -> Result<Vec<Reply>> {
        let list: Vec<Value> = valid
            .iter()
            .map(|a| json!({ "containerID": a.container_id, "ifname": a.ifname }))
            .collect();
        let mut out = Vec::new();
        for i in 0..self.plugins.len() {
            let mut conf = self.plugin_conf(i, None);
            if let Some(m) = conf.as_object_mut() {
                for k in keys {
                    m.insert((*k).to_string(), json!(list));
                }
            }
            out.push(rt.exec(&self.ty(i), "GC", None, &conf.to_string())?);
        }
        Ok(out)
    }

    /// STATUS (1.1.0): each plugin's reply.
    pub fn status(&self, rt: &Runtime) -> Result<Vec<Reply>> {
        (0..self.plugins.len())
            .map(|i| {
                let conf = self.plugin_conf(i, None);
                rt.exec(&self.ty(i), "STATUS", None, &conf.to_string())
            })
            .collect()
    }
}

/// The interfaces of a result inside the sandbox (`sandbox` set), by name,
/// each with its index in `interfaces`.
pub fn sandbox_ifaces(result: &Value) -> Vec<(usize, Value)> {
    result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, i)| i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
        .map(|(n, i)| (n, i.clone()))
        .collect()
}

/// The host-side interfaces of a result (no `sandbox`): the veth ends the
/// plugin left in the host's namespace.
pub fn host_ifaces(result: &Value) -> Vec<String> {
    result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["sandbox"].as_str().is_none_or(str::is_empty))
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect()
}

/// The first IPv4 address of a result, without prefix length.
pub fn first_ip(result: &Value) -> Result<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .find(|a| !a.contains(':'))
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| err(format!("no IPv4 address in result {result}")))
}

/// True when `dev` exists in the host's namespace.
pub fn host_link_exists(dev: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", dev])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Host links whose name starts with one of `prefixes`.
pub fn host_links_with_prefix(prefixes: &[&str]) -> Result<BTreeSet<String>> {
    Ok(Netns::host()
        .links()?
        .into_iter()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .collect())
}

/// The names of the switch ports `flowctl show` lists (`N(NAME): ...`,
/// LOCAL excluded).
pub fn switch_ports(sd: &Switchd) -> Result<BTreeSet<String>> {
    let out = sd.flowctl_ok(&["show", BRIDGE])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (num, rest) = l.split_once('(')?;
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (name, _) = rest.split_once("):")?;
            Some(name.to_string())
        })
        .collect())
}

/// Every flow as `(cookie, line without counters)` from `flowctl --json
/// dump-flows`.
pub fn flows(sd: &Switchd) -> Result<Vec<(u64, String)>> {
    let out = sd.flowctl_ok(&["--json", "dump-flows", BRIDGE])?;
    let v: Value =
        serde_json::from_str(&out).map_err(|e| err(format!("dump-flows --json: {e}: {out}")))?;
    let arr = v["ok"]["flows"]
        .as_array()
        .ok_or_else(|| err(format!("dump-flows --json: no flows array: {out}")))?;
    Ok(arr
        .iter()
        .map(|f| {
            (
                f["cookie"].as_u64().unwrap_or(0),
                f["line_no_stats"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// The cookies of `after` that `before` does not have: what one ADD installed.
pub fn new_cookies(before: &[(u64, String)], after: &[(u64, String)]) -> BTreeSet<u64> {
    let old: BTreeSet<u64> = before.iter().map(|(c, _)| *c).collect();
    after
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !old.contains(c))
        .collect()
}

/// Flows whose cookie is in `cookies`.
pub fn flows_with_cookies(sd: &Switchd, cookies: &BTreeSet<u64>) -> Result<Vec<String>> {
    Ok(flows(sd)?
        .into_iter()
        .filter(|(c, _)| cookies.contains(c))
        .map(|(c, l)| format!("cookie={c:#x} {l}"))
        .collect())
}

/// Ping until one reply comes back (the first ARP exchange and an AF_XDP
/// socket's first fill may cost a packet), for at most `within`.
pub fn wait_reachable(from: &Netns, dst: &str, within: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let r = topology_tests::ping(Some(from), dst, 1)?;
        if r.received == 1 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(err(format!(
                "{dst} not reachable from {} within {within:?}: {}",
                from.name(),
                r.output
            )));
        }
    }
}

/// `ip -j addr show dev IFNAME` inside `ns`: the IPv4 addresses as
/// `a.b.c.d/len`.
pub fn pod_addrs(ns: &Netns, ifname: &str) -> Result<Vec<String>> {
    let out = ns.ip(&["-j", "-4", "addr", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| err(format!("ip -j addr show {ifname}: {e}: {out}")))?;
    Ok(v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some(format!(
                "{}/{}",
                a["local"].as_str()?,
                a["prefixlen"].as_u64()?
            ))
        })
        .collect())
}

/// The default route's gateway inside `ns` (None: no default route).
pub fn pod_default_gw(ns: &Netns) -> Result<Option<String>> {
    let out = ns.ip(&["-j", "-4", "route", "show", "default"])?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| err(format!("ip -j route show default: {e}: {out}")))?;
    Ok(v[0]["gateway"].as_str().map(str::to_string))
}

/// One node under test: a switchd of its own and the runtime's
/// directories. Fields drop in order: switchd is stopped, then the guard
/// checks that nothing of the test's tag is left.
#[derive(Debug)]
pub struct Node {
    /// The switchd the plugin attaches pods to.
    pub sd: Switchd,
    /// The runtime's side (CNI_PATH, IPAM data, plugin state).
    pub rt: Runtime,
    /// The test's leak guard (dropped last).
    pub guard: LeakGuard,
}

impl Node {
    /// Start switchd (socket `sd.sock`, state `sd-state/`) under a new
    /// guard `tag` and lay out the runtime.
    pub fn start(tag: &str) -> Result<Node> {
        let guard = LeakGuard::new(tag)?;
        let sd = Switchd::start(
            &topology_tests::switchd_bin()?,
            &guard.path("sd.sock"),
            &guard.path("sd-state"),
            &[],
        )?;
        let rt = Runtime::new(&guard, sd.socket())?;
        Ok(Node { sd, rt, guard })
    }

    /// A pod namespace `name` of this node's guard.
    pub fn netns(&self, name: &str) -> Result<Netns> {
        self.guard.netns(name)
    }
}

/// A pod as the runtime sees it: its namespace, its attachment to one
/// network, the cached ADD result and the cookies of the flows its ADD
/// installed.
#[derive(Debug)]
pub struct Pod {
    /// The pod's attachment (container id, netns, ifname, args).
    pub att: Attachment,
    /// The cached result of the ADD (None before ADD or after DEL).
    pub result: Option<Value>,
    /// Cookies of the flows that appeared with this pod's ADD.
    pub cookies: BTreeSet<u64>,
    /// Switch ports that appeared with this pod's ADD.
    pub ports: BTreeSet<String>,
}

impl Pod {
    /// ADD `att` to `net` through the runtime, recording the new flows'
    /// cookies and the new switch ports.
    pub fn add(node: &Node, net: &NetList, att: Attachment) -> Result<Pod> {
        let flows_before = flows(&node.sd)?;
        let ports_before = switch_ports(&node.sd)?;
        let result = net.add(&node.rt, &att)?;
        let cookies = new_cookies(&flows_before, &flows(&node.sd)?);
        let ports = switch_ports(&node.sd)?
            .difference(&ports_before)
            .cloned()
            .collect();
        Ok(Pod {
            att,
            result: Some(result),
            cookies,
            ports,
        })
    }

    /// The cached result (an error before ADD).
    pub fn result(&self) -> Result<&Value> {
        self.result
            .as_ref()
            .ok_or_else(|| err(format!("{} has no result", self.att.container_id)))
    }

    /// The pod's IPv4 address.
    pub fn ip(&self) -> Result<String> {
        first_ip(self.result()?)
    }
}

/// FNV-1a 64 of `CONTAINERID "/" IFNAME`: the attachment hash docs/cni.md
/// ("Names, MACs and cookies") derives names and cookies from.
fn attachment_hash(att: &Attachment) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in att
        .container_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(att.ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The host veth and switch port name of an attachment (docs/cni.md):
/// `fs` + the hash's low 48 bits in 12 hex digits.
pub fn attachment_name(att: &Attachment) -> String {
    format!("fs{:012x}", attachment_hash(att) & 0xffff_ffff_ffff)
}

/// The cookie of an attachment's flows (docs/cni.md): `0xf5` in the top
/// byte, the hash's low 56 bits below.
pub fn attachment_cookie(att: &Attachment) -> u64 {
    (0xf5 << 56) | (attachment_hash(att) & 0x00ff_ffff_ffff_ffff)
}

/// True for a host link named as the plugin names its veths (`fs` + 12
/// lower-case hex digits): how a test spots one it did not expect.
pub fn is_plugin_veth(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("fs")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
