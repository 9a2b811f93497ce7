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

#[cfg(feature = "afxdp")]
pub mod afxdp;
pub mod memory;
pub mod tap;
pub mod vhost_user;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

const N_REASONS: usize = DropReason::COUNT;

use crate::packet::{Packet, PacketPool};

pub use crate::datapath::DropReason;

/// A set of named [`Counter`]s (one writer: the polling thread owning the
/// port) and its plain copy for reports: `named_counters! { /// doc
/// Counters, /// doc Stats { /// doc name, ... } }` declares both structs and
/// `Counters::snapshot`. Ports with counters beyond [`PortCounters`] (VXLAN
/// tunnels, routed uplinks) use it, so each list is written once.
macro_rules! named_counters {
    (
        $(#[$cdoc:meta])* $counters:ident,
        $(#[$sdoc:meta])* $stats:ident {
            $($(#[$doc:meta])* $name:ident,)*
        }
    ) => {
        $(#[$cdoc])*
        #[derive(Debug, Default)]
        pub struct $counters {
            $($(#[$doc])* pub $name: $crate::port::Counter,)*
        }

        $(#[$sdoc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct $stats {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl $counters {
            /// A plain copy.
            pub fn snapshot(&self) -> $stats {
                $stats { $($name: self.$name.get(),)* }
            }
        }
    };
}
pub(crate) use named_counters;

/// A counter with one writer (the owning polling thread) and any number of
/// readers. `add` is a relaxed load + store: no locked instruction.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n` (single writer only).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Overwrite with an absolute value (single writer only).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Traffic of one port forwarded by the XDP offload (port/afxdp/offload.rs),
/// credited so far by the control thread (reported by dump-ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortOffload {
    /// Frames received on the port and forwarded by the XDP program.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames the XDP program sent out of the port.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
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
    pub rx_drops: [Counter; N_REASONS],
    /// Drops of frames that were to be sent on this port, by reason (tx side).
    pub tx_drops: [Counter; N_REASONS],
    /// The datapath's drops of frames received on this port, by reason
    /// (absolute values published by the polling thread).
    pub dp_drops: [Counter; N_REASONS],
    /// Frames received with a malformed header (still forwarded as far as parsed).
    pub rx_malformed: Counter,
    /// Frames received that ended inside a header (still forwarded as far as parsed).
    pub rx_truncated: Counter,
    /// Frames transmitted without a copy (AF_XDP: a frame of the same UMEM
    /// posted as is).
    pub tx_zerocopy: Counter,
    /// Frames copied into a port-side buffer to be transmitted (AF_XDP: into
    /// a free UMEM frame).
    pub tx_copied: Counter,
    /// Transmit wakeup syscalls (AF_XDP: `sendto` kicks). Against
    /// `tx_packets` this is the kernel entries per transmitted frame.
    pub tx_kicks: Counter,
    /// Receive wakeup syscalls (AF_XDP: `poll` because the fill ring asked).
    pub rx_wakeups: Counter,
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
        let by = |arrs: &[&[Counter; N_REASONS]]| -> Vec<(String, u64)> {
            DropReason::ALL
                .iter()
                .map(|r| {
                    (
                        r.name().to_string(),
                        arrs.iter().map(|a| a[r.index()].get()).sum::<u64>(),
                    )
                })
                .filter(|(_, n)| *n != 0)
                .collect()
        };
        let rx_drop_reasons = by(&[&self.rx_drops, &self.dp_drops]);
        let tx_drop_reasons = by(&[&self.tx_drops]);
        PortStats {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            rx_errors: self.rx_errors.get(),
            tx_errors: self.tx_errors.get(),
            rx_dropped: rx_drop_reasons.iter().map(|(_, n)| n).sum(),
            tx_dropped: tx_drop_reasons.iter().map(|(_, n)| n).sum(),
            rx_malformed: self.rx_malformed.get(),
            rx_truncated: self.rx_truncated.get(),
            tx_zerocopy: self.tx_zerocopy.get(),
            tx_copied: self.tx_copied.get(),
            tx_kicks: self.tx_kicks.get(),
            rx_wakeups: self.rx_wakeups.get(),
            rx_drop_reasons,
            tx_drop_reasons,
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
    /// Frames received with a malformed header.
    pub rx_malformed: u64,
    /// Frames received that ended inside a header.
    pub rx_truncated: u64,
    /// Frames transmitted without a copy (AF_XDP zero-copy forwarding).
    #[serde(default)]
    pub tx_zerocopy: u64,
    /// Frames copied into a port-side buffer to be transmitted.
    #[serde(default)]
    pub tx_copied: u64,
    /// Transmit wakeup syscalls (AF_XDP `sendto` kicks).
    #[serde(default)]
    pub tx_kicks: u64,
    /// Receive wakeup syscalls (AF_XDP `poll` for the fill ring).
    #[serde(default)]
    pub rx_wakeups: u64,
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

    /// Finish transmit work `tx_batch` left for the end of the polling
    /// loop's iteration (AF_XDP: the `sendto` kick for descriptors posted
    /// but not yet handed to the kernel, or a kick the kernel asked to
    /// retry). `idle` says the iteration received nothing, so nothing more
    /// will join the batch soon. Returns the frames the call handed to the
    /// kernel; the polling loop counts its cycles as busy when that is not
    /// 0 (OVS counts an iteration that transmitted as busy). Default: no
    /// deferred work.
    fn tx_flush(&mut self, pool: &mut PacketPool, idle: bool) -> usize {
        let _ = (pool, idle);
        0
    }

    /// The port joins the polling thread that owns `pool` (before its first
    /// rx/tx there): a backend whose buffers belong to the thread (AF_XDP
    /// and the thread's UMEM) takes them here. Control path, not per packet.
    fn attach(&mut self, pool: &mut PacketPool) {
        let _ = pool;
    }

    /// Copy counters the kernel keeps for the port into its shared counters
    /// (AF_XDP: `getsockopt(XDP_STATISTICS)`, the frames the kernel dropped
    /// for an empty fill ring or a full rx ring). Called by the owning
    /// polling thread when it publishes statistics (every 250 ms, or when
    /// the control thread syncs, as `dump-ports` does), never per packet.
    /// Default: nothing to read.
    fn publish_stats(&mut self) {}

    /// The port leaves the thread that owns `pool` (deleted, or moving to
    /// another thread): every buffer of the thread it holds goes back to
    /// `pool`. Control path, not per packet.
    fn detach(&mut self, pool: &mut PacketPool) {
        let _ = pool;
    }

    /// The port, detached from its thread, is about to be polled by a
    /// thread whose AF_XDP UMEM is `umem` (`pmd-rxq-rebalance`): a port
    /// whose socket is bound to a UMEM re-creates it on `umem` here, on the
    /// control thread, and says so (true). Ports without an AF_XDP socket,
    /// or whose socket cannot move, return false and keep what they have.
    #[cfg(feature = "afxdp")]
    fn move_to_umem(&mut self, umem: &crate::port::afxdp::AfxdpUmem) -> bool {
        let _ = umem;
        false
    }

    /// True when [`Port::move_to_umem`] moves this port's socket (the
    /// control thread then gets the target thread's UMEM for it).
    #[cfg(feature = "afxdp")]
    fn moves_with_umem(&self) -> bool {
        false
    }
}
