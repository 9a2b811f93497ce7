//! switchd: the ferroswitch daemon. One bridge, one polling thread, and the
//! control socket served on the main thread.

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
    let mut server = match Server::bind(&args.socket, args.socket_mode) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bridge = match Bridge::start(&args.bridge, store, DatapathConfig::default()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("switchd: bridge {}: {e}", args.bridge);
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
