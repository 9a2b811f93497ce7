//! Ports: where frames enter and leave the switch.
//!
//! Every backend implements [`Port`], a batch interface in the ixy.rs shape:
//! `rx_batch` fills a vector with up to N received frames, `tx_batch` sends a
//! vector of frames and hands the buffers back to the thread's pool. A port
//! object is owned by exactly one polling thread; what other threads may see
//! (counters, link state) lives in an `Arc<PortCounters>`, written by the
//! owner once per batch with plain relaxed stores (single writer: no locked
//! read-modify-write per packet).
//!
//! One folder per backend: `memory/` (in-process, for tests, demos and
//! benchmarks); AF_XDP, vhost-user, tap and VXLAN follow the same shape.

pub mod memory;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::packet::{Packet, PacketPool};

/// Why a frame was dropped. Every drop has one, so an operator can always
/// answer "where did my packet go" (`flowctl dump-ports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// No flow matched (OpenFlow table miss) and nothing was output.
    NoFlow,
    /// The matching flow's action list is empty (`actions=drop`).
    ExplicitDrop,
    /// `dec_ttl` on a TTL of 0 or 1.
    TtlExceeded,
    /// More than 64 nested resubmits.
    ResubmitDepth,
    /// Output to a port number that does not exist.
    NoPort,
    /// The transmit ring/queue of the output port was full.
    TxRingFull,
    /// No packet buffer was free for a copy (multiple outputs).
    PoolEmpty,
    /// A header was inconsistent (counted; the packet still went through the pipeline).
    Malformed,
    /// The frame ended inside a header (counted; the packet still went through the pipeline).
    Truncated,
    /// The frame is larger than the port's MTU allows.
    Oversize,
    /// An action could not be applied to the frame (too short for the header it rewrites).
    ActionFailed,
    /// The port is down (its interface vanished or its peer is gone).
    PortDown,
}

impl DropReason {
    /// Every reason, in display order.
    pub const ALL: [DropReason; 12] = [
        DropReason::NoFlow,
        DropReason::ExplicitDrop,
        DropReason::TtlExceeded,
        DropReason::ResubmitDepth,
        DropReason::NoPort,
        DropReason::TxRingFull,
        DropReason::PoolEmpty,
        DropReason::Malformed,
        DropReason::Truncated,
        DropReason::Oversize,
        DropReason::ActionFailed,
        DropReason::PortDown,
    ];

    /// The name shown by dump-ports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoFlow => "no_flow",
            DropReason::ExplicitDrop => "explicit_drop",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::ResubmitDepth => "resubmit_depth",
            DropReason::NoPort => "no_port",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::PoolEmpty => "pool_empty",
            DropReason::Malformed => "malformed",
            DropReason::Truncated => "truncated",
            DropReason::Oversize => "oversize",
            DropReason::ActionFailed => "action_failed",
            DropReason::PortDown => "port_down",
        }
    }

    /// Index into per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A counter with one writer (the owning polling thread) and any number of
/// readers. `add` is a relaxed load + store: no locked instruction.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n` (single writer only).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one port, shared between its polling thread and the control thread.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Frames transmitted.
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
    /// Receive-side errors (frames the backend could not deliver to the switch).
    pub rx_errors: Counter,
    /// Transmit-side errors.
    pub tx_errors: Counter,
    /// Drops of frames received on this port, by reason (rx side).
    pub rx_drops: [Counter; 12],
    /// Drops of frames that were to be sent on this port, by reason (tx side).
    pub tx_drops: [Counter; 12],
}

impl PortCounters {
    /// Count an rx-side drop.
    #[inline]
    pub fn rx_drop(&self, r: DropReason, n: u64) {
        self.rx_drops[r.index()].add(n);
    }

    /// Count a tx-side drop.
    #[inline]
    pub fn tx_drop(&self, r: DropReason, n: u64) {
        self.tx_drops[r.index()].add(n);
    }

    /// A plain copy, for reporting.
    pub fn snapshot(&self) -> PortStats {
        let by = |arr: &[Counter; 12]| {
            DropReason::ALL
                .iter()
                .filter(|r| arr[r.index()].get() != 0)
                .map(|r| (r.name().to_string(), arr[r.index()].get()))
                .collect()
        };
        PortStats {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            rx_errors: self.rx_errors.get(),
            tx_errors: self.tx_errors.get(),
            rx_dropped: self.rx_drops.iter().map(Counter::get).sum(),
            tx_dropped: self.tx_drops.iter().map(Counter::get).sum(),
            rx_drop_reasons: by(&self.rx_drops),
            tx_drop_reasons: by(&self.tx_drops),
        }
    }
}

/// A copy of a port's counters, as reported by dump-ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Sum of rx-side drops.
    pub rx_dropped: u64,
    /// Sum of tx-side drops.
    pub tx_dropped: u64,
    /// Non-zero rx-side drops by reason name.
    pub rx_drop_reasons: Vec<(String, u64)>,
    /// Non-zero tx-side drops by reason name.
    pub tx_drop_reasons: Vec<(String, u64)>,
}

/// A port backend, owned by one polling thread.
pub trait Port: Send + fmt::Debug {
    /// Receive up to `max` frames into `out` (appending), taking buffers from
    /// `pool` where the backend copies. Returns the number received.
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize;

    /// Send the frames in `pkts` (draining it). Frames that cannot be sent are
    /// counted as tx drops with their reason; every buffer goes back to `pool`
    /// or to the backend. Returns the number sent.
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize;

    /// The port's shared counters.
    fn counters(&self) -> &std::sync::Arc<PortCounters>;
}
