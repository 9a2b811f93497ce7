//! A `switchd` under test: started with its own control socket and state
//! directory, driven with `flowctl`, stopped (SIGTERM, then SIGKILL) and
//! reaped on `Drop`.
//!
//! The binaries are the ones cargo built for this workspace: the test
//! executable lives in `target/<profile>/deps/`, so `switchd` and `flowctl`
//! are in its parent's parent. Build them first (`cargo build --bins`);
//! `FERROSWITCH_BIN_DIR` overrides the directory.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{output, Netns, Result, TopoError};

/// How long switchd may take to open its socket, and to stop on SIGTERM.
/// Starting means restoring the state directory's ports first (UMEMs,
/// XDP programs): seconds when another job hogs both CPUs, as in a CI run
/// beside a benchmark. The wait polls, so a quick start costs nothing.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("FERROSWITCH_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(|e| TopoError::Other(format!("current_exe: {e}")))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| TopoError::Other(format!("no target dir above {}", exe.display())))
}

fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(TopoError::Other(format!(
            "{} not found: run `cargo build --bins` before the topology tests \
             (or set FERROSWITCH_BIN_DIR)",
            p.display()
        )))
    }
}

/// The switchd binary.
pub fn switchd_bin() -> Result<PathBuf> {
    binary("switchd")
}

/// The flowctl binary.
pub fn flowctl_bin() -> Result<PathBuf> {
    binary("flowctl")
}

/// A running switchd.
#[derive(Debug)]
pub struct Switchd {
    child: Option<Child>,
    bin: PathBuf,
    ns: Option<String>,
    socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
}

impl Switchd {
    /// Start `bin --socket SOCKET --state-dir STATE_DIR EXTRA...` in the
    /// host's namespace and wait until its control socket accepts
    /// connections. Its stderr goes to `SOCKET.log` (see [`Switchd::log`]).
    pub fn start(
        bin: &Path,
        socket: &Path,
        state_dir: &Path,
        extra_args: &[&str],
    ) -> Result<Switchd> {
        Switchd::start_in(None, bin, socket, state_dir, extra_args)
    }

    /// As [`Switchd::start`], inside the namespace `ns` (its ports' devices
    /// are then created there).
    pub fn start_in(
        ns: Option<&Netns>,
        bin: &Path,
        socket: &Path,
        state_dir: &Path,
        extra_args: &[&str],
    ) -> Result<Switchd> {
        let mut d = Switchd {
            child: None,
            bin: bin.to_path_buf(),
            ns: ns.map(|n| n.name().to_string()).filter(|n| !n.is_empty()),
            socket: socket.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            log: socket.with_extension("log"),
            extra: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        d.launch()?;
        Ok(d)
    }

    fn launch(&mut self) -> Result<()> {
        let ns = Netns::handle(self.ns.as_deref());
        let mut c = ns.command(&self.bin.to_string_lossy());
        c.arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra);
        let log = File::create(&self.log)
            .map_err(|e| TopoError::Other(format!("creating {}: {e}", self.log.display())))?;
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = c.spawn().map_err(|source| TopoError::Spawn {
            cmd: crate::describe(&c),
            source,
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Err(TopoError::Other(format!(
                        "switchd exited ({st}) before serving {}: {}",
                        self.socket.display(),
                        self.log()
                    )));
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(TopoError::Other(format!(
                    "switchd did not open {} within {START_TIMEOUT:?}: {}",
                    self.socket.display(),
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What switchd wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `flowctl --socket SOCKET ARGS...`; its output whatever the exit code.
    pub fn flowctl(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new(flowctl_bin()?);
        c.arg("--socket").arg(&self.socket).args(args);
        output(c)
    }

    /// Run flowctl and require exit 0; its stdout. On failure the error
    /// carries what flowctl said: its stderr, or its stdout when stderr is
    /// empty (with `--json`, flowctl prints the error object on stdout).
    pub fn flowctl_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.flowctl(args)?;
        if !o.status.success() {
            let said = if o.stderr.iter().all(u8::is_ascii_whitespace) {
                &o.stdout
            } else {
                &o.stderr
            };
            return Err(TopoError::Failed {
                cmd: format!("flowctl {}", args.join(" ")),
                status: o.status.to_string(),
                stderr: String::from_utf8_lossy(said).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Stop the daemon: SIGTERM, then SIGKILL if it has not exited within
    /// 3 s. Its exit status (None when it was not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: kill(2) on our own child's pid (not yet reaped, so the
            // pid cannot have been reused) with a constant signal.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = c.kill();
                    return c.wait().ok();
                }
            }
        }
    }

    /// Stop and start again with the same socket, state directory and
    /// arguments (what an operator's restart does).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Switchd {
    fn drop(&mut self) {
        self.stop();
    }
}
