//! fs-pktgen: an in-kernel UDP packet generator and XDP frame counter for
//! measuring data planes between network namespaces (docs/perf.md, "AF_XDP
//! over veth").
//!
//! `run` sends frames out of `--iface` (in `--netns`) with an XDP program run
//! by `BPF_PROG_TEST_RUN` in live-frames mode, optionally counting them on
//! `--rx-iface` (in `--rx-netns`) with an XDP counting program, and reports
//! frames sent and received and the rates over a window that starts after
//! `--warmup`. `rx` only counts. `summarize` turns the veth harness's
//! samples file into medians, min-max and ratios. Programs are attached
//! through BPF links, so they disappear when fs-pktgen exits, however it
//! exits. Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for setns).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use perf::pktgen::bpf::{self, Fd};
use perf::pktgen::frame::{parse_mac, FrameSpec};
use perf::pktgen::pacing::{Pacer, Step};
use perf::pktgen::progs::{self, RX_MAGIC, RX_OTHER, RX_SLOTS};
use perf::pktgen::report::{ratios, summarize, Report};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "In-kernel (XDP live frames) UDP generator and XDP frame counter"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send frames (and count them at a receiver, if given); print a report.
    Run(RunArgs),
    /// Only count generator frames arriving on an interface, for --duration.
    Rx(RxArgs),
    /// Summarize a samples file (dp<TAB>metric<TAB>rep<TAB>value): median, min-max, ratios.
    Summarize {
        /// The samples file.
        file: std::path::PathBuf,
        /// Print ratios of this data plane's medians over every other data plane's.
        #[arg(long)]
        ratio_to: Option<String>,
    },
}

#[derive(Args, Debug)]
struct RxSide {
    /// Network namespace of the receiving interface (name in /run/netns or a path).
    #[arg(long)]
    rx_netns: Option<String>,
    /// Receiving interface: an XDP program there counts (and drops) the generator's frames.
    #[arg(long)]
    rx_iface: Option<String>,
    /// XDP attach mode of the counter: drv (native) or skb (generic).
    #[arg(long, default_value = "drv", value_parser = ["drv", "skb"])]
    rx_mode: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Network namespace to send from (name in /run/netns or a path).
    #[arg(long)]
    netns: Option<String>,
    /// Interface to send out of.
    #[arg(long)]
    iface: String,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:0b:01")]
    dmac: String,
    /// Source MAC.
    #[arg(long, default_value = "02:00:00:00:0a:01")]
    smac: String,
    /// Source IPv4 address.
    #[arg(long, default_value = "198.18.0.1")]
    sip: Ipv4Addr,
    /// Destination IPv4 address.
    #[arg(long, default_value = "198.18.0.2")]
    dip: Ipv4Addr,
    /// UDP source port of flow 0 (flow i uses sport + i).
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    /// UDP destination port.
    #[arg(long, default_value_t = 9)]
    dport: u16,
    /// Frame size in bytes without FCS (50..=1514).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Number of flows (distinct UDP source ports), sent round-robin.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Frames per second, 0 = as fast as the kernel can.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to measure after the warm-up (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to send before the measurement window starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Send exactly this many frames, then stop (the window is the whole run).
    #[arg(long)]
    count: Option<u64>,
    /// Frames per live-frames batch (kernel: 1..=256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch: u32,
    /// Seconds to wait after sending before the final receive count.
    #[arg(long, default_value_t = 0.2)]
    drain: f64,
    #[command(flatten)]
    rx: RxSide,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RxArgs {
    #[command(flatten)]
    rx: RxSide,
    /// Seconds to count.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The attached receive counter; detached on drop.
struct Counter {
    map: Fd,
    _prog: Fd,
    _link: Fd,
    ncpus: usize,
}

impl Counter {
    fn attach(rx: &RxSide) -> Result<Option<Counter>, String> {
        let Some(iface) = &rx.rx_iface else {
            return Ok(None);
        };
        if let Some(ns) = &rx.rx_netns {
            bpf::enter_netns(ns).map_err(|e| e.to_string())?;
        }
        let idx = bpf::ifindex(iface).map_err(|e| e.to_string())?;
        let map = bpf::counter_map(RX_SLOTS, true).map_err(|e| format!("rx map: {e}"))?;
        let insns = progs::count_program(map.as_raw_fd()).map_err(|e| e.to_string())?;
        let prog = bpf::load_xdp("fspg_count", &insns).map_err(|e| e.to_string())?;
        let flags = if rx.rx_mode == "skb" {
            bpf::XDP_FLAGS_SKB_MODE
        } else {
            bpf::XDP_FLAGS_DRV_MODE
        };
        let link = bpf::attach_xdp(&prog, idx, flags).map_err(|e| {
            format!(
                "attaching the counter to {iface} ({} mode): {e} (another XDP program there?)",
                rx.rx_mode
            )
        })?;
        let ncpus = bpf::possible_cpus().map_err(|e| e.to_string())?;
        Ok(Some(Counter {
            map,
            _prog: prog,
            _link: link,
            ncpus,
        }))
    }

    fn read(&self) -> (u64, u64) {
        let r = |k| bpf::read_counter(&self.map, k, self.ncpus).unwrap_or(0);
        (r(RX_MAGIC), r(RX_OTHER))
    }
}

extern "C" fn on_wake(_: libc::c_int) {}

/// SIGUSR1 interrupts the sender's test-run call (no SA_RESTART: it returns EINTR).
fn install_wake_handler() {
    // SAFETY: the handler does nothing (async-signal-safe); `sa` is zeroed and
    // then fully set up before sigaction reads it.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_wake as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e6))
}

fn run(a: &RunArgs) -> Result<Report, String> {
    let spec = FrameSpec {
        dmac: parse_mac(&a.dmac)?,
        smac: parse_mac(&a.smac)?,
        sip: a.sip,
        dip: a.dip,
        sport: a.sport,
        dport: a.dport,
        size: a.size,
        flows: a.flows,
    };
    let frame = spec.build().map_err(|e| e.to_string())?;
    // The receiver first (its netns), then the sender's netns for the rest.
    let counter = Counter::attach(&a.rx)?;
    if let Some(ns) = &a.netns {
        bpf::enter_netns(ns).map_err(|e| e.to_string())?;
    }
    let idx = bpf::ifindex(&a.iface).map_err(|e| e.to_string())?;
    let txmap = bpf::counter_map(1, false).map_err(|e| format!("tx map: {e}"))?;
    let insns =
        progs::tx_program(txmap.as_raw_fd(), a.sport, a.flows).map_err(|e| e.to_string())?;
    let prog = bpf::load_xdp("fspg_tx", &insns).map_err(|e| e.to_string())?;
    let sent = || bpf::read_counter(&txmap, 0, 1).unwrap_or(0);
    let rx = || counter.as_ref().map(Counter::read).unwrap_or((0, 0));

    install_wake_handler();
    let stop = Arc::new(AtomicBool::new(false));
    let err = Arc::new(AtomicU64::new(0));
    let pacer = Pacer {
        rate: a.rate,
        count: a.count.unwrap_or(u64::MAX),
    };
    let batch = a.batch;
    let t0 = Instant::now();
    let tx = {
        let (stop, err) = (stop.clone(), err.clone());
        let txmap_fd = txmap.try_clone().map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("fs-pktgen-tx".into())
            .spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let done = bpf::read_counter(&txmap_fd, 0, 1).unwrap_or(0);
                    let el = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    match pacer.next(done, el) {
                        Step::Done => break,
                        Step::Sleep(ns) => std::thread::sleep(Duration::from_nanos(ns)),
                        Step::Send(n) => match bpf::run_live(&prog, &frame, idx, n, batch) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                err.store(e.raw_os_error().unwrap_or(-1) as u64, Ordering::Relaxed);
                                eprintln!("fs-pktgen: BPF_PROG_TEST_RUN on {idx}: {e}");
                                break;
                            }
                        },
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };
    let (w0, s0, r0, o0, w1, s1, r1, o1);
    if a.count.is_some() {
        (w0, s0, r0, o0) = (t0, 0, 0, 0);
        while !tx.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(secs(a.drain));
        w1 = Instant::now();
        s1 = sent();
        (r1, o1) = rx();
    } else {
        std::thread::sleep(secs(a.warmup));
        w0 = Instant::now();
        s0 = sent();
        (r0, o0) = rx();
        std::thread::sleep(secs(a.duration));
        w1 = Instant::now();
        s1 = sent();
        (r1, o1) = rx();
    }
    stop.store(true, Ordering::Relaxed);
    let pt = tx.as_pthread_t();
    while !tx.is_finished() {
        // SAFETY: `pt` names the sender thread, which is still running (not
        // joined, not finished), so its pthread_t is valid.
        unsafe { libc::pthread_kill(pt, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = tx.join();
    if err.load(Ordering::Relaxed) != 0 {
        return Err(format!("sending on {} failed (see above)", a.iface));
    }
    std::thread::sleep(secs(a.drain));
    let total_sent = sent();
    let total_received = rx().0;
    let window = if a.count.is_some() {
        (w1 - w0).as_secs_f64() - a.drain
    } else {
        (w1 - w0).as_secs_f64()
    };
    Ok(Report::new(
        a.size,
        a.flows,
        a.rate,
        window,
        s1 - s0,
        r1 - r0,
        o1 - o0,
        total_sent,
        total_received,
    ))
}

fn rx_only(a: &RxArgs) -> Result<Report, String> {
    let c = Counter::attach(&a.rx)?.ok_or("rx needs --rx-iface")?;
    let (r0, o0) = c.read();
    let t0 = Instant::now();
    std::thread::sleep(secs(a.duration));
    let (r1, o1) = c.read();
    let w = t0.elapsed().as_secs_f64();
    Ok(Report::new(0, 0, 0, w, 0, r1 - r0, o1 - o0, 0, r1))
}

fn print(r: &Report, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("fs-pktgen: {e}"),
        }
    } else {
        println!("{r}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Run(a) => run(a).map(|r| print(&r, a.json)),
        Cmd::Rx(a) => rx_only(a).map(|r| print(&r, a.json)),
        Cmd::Summarize { file, ratio_to } => std::fs::read_to_string(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|s| summarize(&s))
            .map(|stats| {
                for s in &stats {
                    let samples: Vec<String> = s.samples.iter().map(|v| format!("{v}")).collect();
                    println!(
                        "RESULT dp={} metric={} value={:.3} min={:.3} max={:.3} n={} samples={}",
                        s.dp,
                        s.metric,
                        s.median,
                        s.min,
                        s.max,
                        s.samples.len(),
                        samples.join(",")
                    );
                }
                if let Some(dp) = ratio_to {
                    for (other, metric, r) in ratios(&stats, dp) {
                        println!("RATIO {dp}/{other} metric={metric} value={r:.3}");
                    }
                }
            }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fs-pktgen: {e}");
            ExitCode::FAILURE
        }
    }
}
