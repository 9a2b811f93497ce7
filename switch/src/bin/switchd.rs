//! switchd: the ferroswitch daemon. One bridge, its polling threads
//! (`--pmd-cpus`: one per listed CPU, pinned; default one unpinned), and the
//! control socket served on the main thread, which is pinned to the CPUs not
//! given to polling threads so control work never steals a PMD core.
//!
//! Start-up order: open the state directory, start the polling threads,
//! restore ports and flows, and only then bind the control socket. The
//! socket's existence therefore means "fully restored"; switchd must never
//! answer a client from a half-restored bridge.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use switch::control::bridge::Bridge;
use switch::control::proto::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use switch::control::server::Server;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::pmd::{allowed_cpus, format_cpu_list, pin_current_thread, PmdConfig, RxqAssign};

/// ferroswitch userspace switch daemon.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Control socket path.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory for persistent state (ports and flows).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Name of the bridge.
    #[arg(long, default_value = "br0")]
    bridge: String,
    /// Permissions of the control socket (octal).
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    socket_mode: u32,
    /// CPUs for polling threads, one thread pinned to each (cpulist syntax:
    /// `1`, `2-5`, `0,2-3`). Default: one unpinned thread.
    #[arg(long)]
    pmd_cpus: Option<String>,
    /// How ports are assigned to polling threads: `roundrobin` or `cycles`.
    #[arg(long, default_value = "roundrobin")]
    pmd_rxq_assign: RxqAssign,
    /// Frames (4 KiB each) of each polling thread's AF_XDP UMEM, shared by
    /// the thread's afxdp ports: their fill rings (n-rxq-desc frames each)
    /// must fit in it, less an eighth (at most 1024) kept for transmit, or
    /// add-port is refused. Default 16384 (64 MiB): 7 ports with the default
    /// n-rxq-desc=2048, 60 with n-rxq-desc=256. 4096 to 262144.
    #[arg(long, value_parser = parse_umem_frames)]
    afxdp_umem_frames: Option<u32>,
}

/// The thread UMEM sizes `--afxdp-umem-frames` accepts.
#[cfg(feature = "afxdp")]
const UMEM_FRAMES: (u32, u32) = (
    switch::port::afxdp::umem::THREAD_UMEM_FRAMES_MIN,
    switch::port::afxdp::umem::THREAD_UMEM_FRAMES_MAX,
);
/// Without AF_XDP the option is accepted and unused.
#[cfg(not(feature = "afxdp"))]
const UMEM_FRAMES: (u32, u32) = (4096, 262_144);

fn parse_umem_frames(s: &str) -> Result<u32, String> {
    let (min, max) = UMEM_FRAMES;
    s.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{s:?} is not a number of frames from {min} to {max}"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 600"))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C"` function that only performs an
        // atomic store, which is async-signal-safe; `sa` is fully initialised
        // (zeroed, then the handler set) before sigaction reads it.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    install_signal_handlers();
    let store = match StateStore::open(&args.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchd: state directory {}: {e}", args.state_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut pcfg = match &args.pmd_cpus {
        None => PmdConfig {
            assign: args.pmd_rxq_assign,
            ..PmdConfig::default()
        },
        Some(list) => match PmdConfig::pinned(list, args.pmd_rxq_assign) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchd: --pmd-cpus: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    pcfg.afxdp_umem_frames = args.afxdp_umem_frames;
    // Keep the control thread (and threads it starts later) off PMD cores,
    // when any other CPU is available. Polling threads pin themselves.
    if args.pmd_cpus.is_some() {
        let pmd: Vec<usize> = pcfg.cpus.iter().flatten().copied().collect();
        match allowed_cpus() {
            Ok(all) => {
                let rest: Vec<usize> = all.into_iter().filter(|c| !pmd.contains(c)).collect();
                if rest.is_empty() {
                    eprintln!(
                        "switchd: every CPU runs a polling thread; the control thread shares them"
                    );
                } else if let Err(e) = pin_current_thread(&rest) {
                    eprintln!(
                        "switchd: pinning the control thread to CPUs {}: {e}",
                        format_cpu_list(&rest)
                    );
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("switchd: reading CPU affinity: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut bridge =
        match Bridge::start_with_pmds(&args.bridge, store, DatapathConfig::default(), &pcfg) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("switchd: bridge {}: {e}", args.bridge);
                return ExitCode::FAILURE;
            }
        };
    // Listen only now that every port and flow is restored: a client that
    // finds the socket finds the whole switch (a script's "wait for the
    // socket" means "ready"), and a restore that fails leaves no socket.
    let mut server = match Server::bind(&args.socket, args.socket_mode) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchd: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "switchd: bridge {} ready; control socket {}; state {}",
        args.bridge,
        args.socket.display(),
        args.state_dir.display()
    );
    if let Err(e) = server.run(&mut bridge, &STOP, Duration::from_millis(100)) {
        eprintln!("switchd: control loop: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("switchd: stopping");
    ExitCode::SUCCESS
}
