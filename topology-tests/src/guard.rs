//! The leak check every topology test starts with.
//!
//! A [`LeakGuard`] owns a tag (unique per test) and the names derived from
//! it: namespaces `fs-<tag>-<name>-<pid>`, host interfaces
//! `f<pid36>.<tag>-<suffix>` and a scratch directory `/tmp/fs-<tag>-<pid>`
//! for sockets and state. Declared first in a test, it is dropped last; its
//! `Drop` then looks for anything of its tag still alive (namespaces,
//! host interfaces, processes inside those namespaces or running with its
//! directory on their command line), removes it, and fails the test when
//! there was something (unless the test is already failing). It never
//! touches a name it did not derive.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::{destroy_netns, kill9, list_netns, netns_pids};
use crate::{pid36, Netns, Result, TopoError, VethPair};

/// What a test left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Namespaces of the guard's tag.
    pub netns: Vec<String>,
    /// Host interfaces of the guard's tag.
    pub links: Vec<String>,
    /// Processes of the guard's tag.
    pub pids: Vec<u32>,
}

impl Leftovers {
    /// True when nothing was left.
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.links.is_empty() && self.pids.is_empty()
    }
}

/// Checks (and cleans) on drop that a test left nothing behind.
#[derive(Debug)]
pub struct LeakGuard {
    tag: String,
    dir: PathBuf,
}

impl LeakGuard {
    /// A guard for `tag` (1..=4 ASCII letters or digits, unique per test in
    /// the crate). Creates its scratch directory.
    pub fn new(tag: &str) -> Result<LeakGuard> {
        if tag.is_empty() || tag.len() > 4 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TopoError::Other(format!(
                "leak guard tag {tag:?} must be 1..4 letters or digits"
            )));
        }
        let dir = std::env::temp_dir().join(format!("fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| TopoError::Other(format!("creating {}: {e}", dir.display())))?;
        Ok(LeakGuard {
            tag: tag.to_string(),
            dir,
        })
    }

    /// The scratch directory (removed on drop): control sockets, state dirs, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A namespace `fs-<tag>-<name>-<pid>` (see [`Netns::new`]).
    pub fn netns(&self, name: &str) -> Result<Netns> {
        Netns::new(&format!("{}-{name}", self.tag))
    }

    /// A host interface name of this guard: `f<pid36>.<tag>-<suffix>`, at
    /// most 15 bytes (an error when the suffix makes it longer).
    pub fn ifname(&self, suffix: &str) -> Result<String> {
        let n = format!("{}-{suffix}", self.link_prefix());
        if n.len() > 15 {
            return Err(TopoError::Other(format!(
                "interface name {n:?} is longer than 15 bytes; use a shorter suffix"
            )));
        }
        Ok(n)
    }

    /// A pod's network as a CNI would set it up: namespace `name`, a veth
    /// with `eth0` inside and [`Self::ifname`]`(name)` outside (IPv6 off on
    /// both ends, so no chatter reaches the switch), `mac` and `cidr` on eth0,
    /// and the pod's transmit checksum offload off (AF_XDP on veth needs
    /// full checksums). Routes and switch ports are the caller's.
    pub fn pod_link(&self, name: &str, cidr: &str, mac: &str) -> Result<PodLink> {
        let ns = self.netns(name)?;
        ns.disable_ipv6()?;
        let host_if = self.ifname(name)?;
        let veth = VethPair::new(&host_if, None, "eth0", Some(&ns))?;
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"),
            "1",
        );
        ns.ip(&["link", "set", "dev", "eth0", "address", mac])?;
        ns.addr_add("eth0", cidr)?;
        ns.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        Ok(PodLink { ns, veth, host_if })
    }

    fn link_prefix(&self) -> String {
        format!("f{}.{}", pid36(), self.tag)
    }

    /// Everything of this guard's tag that still exists.
    pub fn leftovers(&self) -> Result<Leftovers> {
        let ns_prefix = format!("fs-{}-", self.tag);
        let ns_suffix = format!("-{}", std::process::id());
        let netns: Vec<String> = list_netns()?
            .into_iter()
            .filter(|n| n.starts_with(&ns_prefix) && n.ends_with(&ns_suffix))
            .collect();
        let link_prefix = format!("{}-", self.link_prefix());
        let links: Vec<String> = Netns::host()
            .links()?
            .into_iter()
            .filter(|l| l.starts_with(&link_prefix))
            .collect();
        let mut pids: Vec<u32> = netns.iter().flat_map(|n| netns_pids(n)).collect();
        pids.extend(processes_mentioning(&format!("{}/", self.dir.display())));
        pids.sort_unstable();
        pids.dedup();
        Ok(Leftovers { netns, links, pids })
    }

    /// Remove everything [`LeakGuard::leftovers`] finds; what was found.
    pub fn cleanup(&self) -> Result<Leftovers> {
        let l = self.leftovers()?;
        for p in &l.pids {
            kill9(*p);
        }
        for n in &l.netns {
            destroy_netns(n);
        }
        for link in &l.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        Ok(l)
    }
}

/// Pids (not ours) whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        // A zombie (exited, not yet reaped) is not a leak of a live process.
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                        .unwrap_or(true)
                })
                .unwrap_or(false)
        })
        .collect()
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        let found = self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
        match found {
            Ok(l) if l.is_empty() => {}
            Ok(l) if !std::thread::panicking() => {
                panic!("test {:?} leaked (now cleaned): {l:?}", self.tag)
            }
            Ok(l) => eprintln!("topology-tests: {:?} leaked (now cleaned): {l:?}", self.tag),
            Err(e) => eprintln!("topology-tests: leak check {:?}: {e}", self.tag),
        }
    }
}

/// What [`LeakGuard::pod_link`] made. Fields drop in order: the namespace
/// first, then the veth.
#[derive(Debug)]
pub struct PodLink {
    /// The pod's namespace (`eth0` inside).
    pub ns: Netns,
    /// The veth pair.
    pub veth: VethPair,
    /// The veth end in the host's namespace.
    pub host_if: String,
}
