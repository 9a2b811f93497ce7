//! `fs-pktgen`'s engine: an in-kernel UDP generator and an XDP frame counter.
//!
//! Transmit: the frame from [`frame::FrameSpec`] is handed to the kernel with
//! `BPF_PROG_TEST_RUN` + `BPF_F_TEST_XDP_LIVE_FRAMES` ([`bpf::run_live`]);
//! the kernel runs [`progs::tx_program`] on it again and again and transmits
//! each result (`XDP_TX`) out of the sending interface, 1-7 Mpps on one CPU
//! here, where trafgen or `iperf3 -u` stop near 0.3 Mpps (BENCH.md). The
//! program varies the UDP source port over the configured flows; a rate is
//! kept by [`pacing::Pacer`] choosing how many frames each call sends.
//! On a veth the peer must have NAPI (an XDP program, or GRO on), otherwise
//! veth drops every frame (`tx_dropped`).
//!
//! Receive: [`progs::count_program`] on the sink interface counts frames that
//! carry [`frame::MAGIC`] (and drops them) and lets everything else through.
//! The counts live in BPF maps that [`bpf::read_counter`] reads at any time,
//! so the measurement window is cut in userspace without stopping traffic.
//!
//! Nothing here allocates or calls into the kernel per packet; the per-packet
//! work is the kernel's. Every object is closed (and every program detached)
//! when its fd drops.

pub mod bpf;
pub mod frame;
pub mod insn;
pub mod pacing;
pub mod progs;
pub mod report;
