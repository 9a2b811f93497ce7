//! Test support for ferroswitch's topology tests: real network namespaces,
//! veth pairs, addresses and routes, `ping` and `iperf3`, and a `switchd`
//! with its own socket and state directory, all torn down by `Drop` guards
//! so a failing (panicking) test still leaves the machine clean.
//!
//! Tests read like a runbook: build the topology, send traffic, assert what
//! an operator would check.
//!
//! ```no_run
//! use topology_tests::{ping, require_root, LeakGuard, VethPair};
//! # fn main() -> topology_tests::Result<()> {
//! if !require_root() {
//!     return Ok(());
//! }
//! let guard = LeakGuard::new("doc")?; // declared first: dropped last, checks for leftovers
//! let a = guard.netns("a")?;
//! let b = guard.netns("b")?;
//! let _link = VethPair::new("va", Some(&a), "vb", Some(&b))?;
//! a.addr_add("va", "10.200.0.1/24")?;
//! b.addr_add("vb", "10.200.0.2/24")?;
//! assert_eq!(ping(Some(&a), "10.200.0.2", 3)?.received, 3);
//! # Ok(())
//! # }
//! ```
//!
//! Data enters as shell-level commands (`ip`, `ping`, `iperf3`, `switchd`,
//! `flowctl`) and leaves as parsed results ([`PingResult`],
//! [`Iperf3Result`], [`LinkStats`], `flowctl` output). Everything this crate
//! creates carries the `fs-` prefix and the test process's pid in its name,
//! so tests running in parallel (or on a machine with other work) never
//! touch each other's namespaces, links or processes. It never touches
//! anything it did not name.

mod guard;
mod netns;
mod switchd;
mod tools;

use std::process::{Command, Output};

pub use guard::{LeakGuard, Leftovers, PodLink};
pub use netns::{LinkStats, Netns, VethPair};
pub use switchd::{bin_dir, flowctl_bin, switchd_bin, Switchd};
pub use tools::{hello_server, iperf3, ping, tcp_hello, ChildGuard, Iperf3Result, PingResult};

/// What went wrong while building or using a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopoError {
    /// A program could not be started (not installed?).
    #[error("cannot run {cmd}: {source} (scripts/setup.sh installs the tools)")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it said: its standard error (trimmed), or its standard
        /// output when it wrote nothing on standard error.
        stderr: String,
    },
    /// Output that did not parse, a timeout, a missing binary...
    #[error("{0}")]
    Other(String),
}

/// Result of topology operations.
pub type Result<T> = std::result::Result<T, TopoError>;

/// True when running as root. Otherwise prints
/// `skipping: topology tests need root` and returns false, so a test can
/// `return` early and pass on a developer's unprivileged machine.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        eprintln!("skipping: topology tests need root");
        false
    }
}

/// The command line of `c`, for messages.
pub(crate) fn describe(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `c` to completion and return its output, whatever its exit status.
pub fn output(mut c: Command) -> Result<Output> {
    c.output().map_err(|source| TopoError::Spawn {
        cmd: describe(&c),
        source,
    })
}

/// Run `c` to completion; its standard output when it exits 0, else an
/// error carrying its standard error.
pub fn checked(c: Command) -> Result<String> {
    let cmd = describe(&c);
    let o = output(c)?;
    if !o.status.success() {
        return Err(TopoError::Failed {
            cmd,
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Run `prog args...` in the host's namespace; its stdout on success.
pub fn sh(prog: &str, args: &[&str]) -> Result<String> {
    let mut c = Command::new(prog);
    c.args(args);
    checked(c)
}

/// The pid of this test process in base 36 (at most 5 characters for any
/// Linux pid), used to keep interface names within 15 bytes.
pub fn pid36() -> String {
    let mut n = std::process::id();
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}
