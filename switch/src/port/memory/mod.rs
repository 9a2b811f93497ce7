//! In-process ports: no kernel, no privileges, fully deterministic.
//!
//! [`MemoryPort`] connects the switch to the control thread (or a test)
//! through two bounded lock-free queues: frames *injected* by the control
//! side are received by the switch, frames the switch transmits are
//! *captured* for the control side to read. A full capture queue is a counted
//! `tx_ring_full` drop, never a block.
//!
//! Buffers cross threads here: every frame the switch transmits leaves the
//! polling thread's pool, including the copies it made from that pool for
//! multiple outputs. So that sustained multi-output traffic does not drain the
//! pool, the control side hands captured buffers back with
//! [`MemoryPortHandle::recycle`] through a third bounded queue, which the port
//! empties into the pool once per receive call (never per packet).
//!
//! [`LoopPort`] is for benchmarks: its rx side replays a fixed set of frames
//! (copying each into a pool buffer, as a NIC would DMA it) and its tx side is
//! a sink that counts and recycles buffers, so a whole rx → pipeline → tx run
//! can be measured without any I/O.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::{DropReason, Port, PortCounters};
use crate::packet::{Packet, PacketPool};

/// Buffers a polling thread keeps at most; beyond this, buffers that arrived
/// from another thread (injected frames) are freed instead of pooled.
const POOL_HIGH_WATER: usize = 8192;
/// Buffers above the high water freed per receive call (more than a batch, so
/// the pool cannot outgrow it however many injected frames are dropped).
const POOL_TRIM_PER_CALL: usize = 64;

/// The switch side of a memory port.
#[derive(Debug)]
pub struct MemoryPort {
    rx: Arc<ArrayQueue<Packet>>,
    tx: Arc<ArrayQueue<Packet>>,
    free: Arc<ArrayQueue<Packet>>,
    counters: Arc<PortCounters>,
}

/// The control/test side of a memory port.
#[derive(Debug, Clone)]
pub struct MemoryPortHandle {
    rx: Arc<ArrayQueue<Packet>>,
    tx: Arc<ArrayQueue<Packet>>,
    free: Arc<ArrayQueue<Packet>>,
    counters: Arc<PortCounters>,
}

impl MemoryPort {
    /// A port whose queues hold `depth` frames each.
    pub fn new(depth: usize) -> (MemoryPort, MemoryPortHandle) {
        let rx = Arc::new(ArrayQueue::new(depth.max(1)));
        let tx = Arc::new(ArrayQueue::new(depth.max(1)));
        let free = Arc::new(ArrayQueue::new(depth.max(1)));
        let counters = Arc::new(PortCounters::default());
        let h = MemoryPortHandle {
            rx: rx.clone(),
            tx: tx.clone(),
            free: free.clone(),
            counters: counters.clone(),
        };
        (
            MemoryPort {
                rx,
                tx,
                free,
                counters,
            },
            h,
        )
    }
}

impl MemoryPortHandle {
    /// Queue a frame as if it arrived on the port. Returns it back when the
    /// rx queue is full (the caller reports the error; nothing is lost silently).
    pub fn inject(&self, p: Packet) -> Result<(), Packet> {
        self.rx.push(p)
    }

    /// Take the oldest frame the switch transmitted on this port. Hand the
    /// buffer back with [`Self::recycle`] when done with it.
    pub fn capture(&self) -> Option<Packet> {
        self.tx.pop()
    }

    /// Give a captured buffer back to the polling thread's pool (through a
    /// bounded queue; when that is full the buffer is simply freed).
    pub fn recycle(&self, p: Packet) {
        let _ = self.free.push(p);
    }

    /// Frames waiting to be received by the switch.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// The port's counters.
    pub fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}

impl Port for MemoryPort {
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        // Buffers the control side handed back: into the pool, up to its high water.
        while pool.available() < POOL_HIGH_WATER {
            match self.free.pop() {
                Some(p) => pool.put(p),
                None => break,
            }
        }
        // Injected frames arrive in buffers from outside the pool and join it
        // when they are dropped: free the excess so the pool stays bounded.
        let excess = pool
            .available()
            .saturating_sub(POOL_HIGH_WATER)
            .min(POOL_TRIM_PER_CALL);
        for _ in 0..excess {
            drop(pool.get());
        }
        let mut n = 0;
        let mut bytes = 0;
        while n < max {
            match self.rx.pop() {
                Some(p) => {
                    bytes += p.len() as u64;
                    out.push(p);
                    n += 1;
                }
                None => break,
            }
        }
        if n > 0 {
            self.counters.rx_packets.add(n as u64);
            self.counters.rx_bytes.add(bytes);
        }
        n
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        let (mut sent, mut bytes, mut full) = (0u64, 0u64, 0u64);
        for p in pkts.drain(..) {
            let len = p.len() as u64;
            // The queue is read on another thread and keeps packets: a UMEM
            // frame (AF_XDP zero-copy rx) never goes there, a heap copy does.
            let Some(p) = pool.to_heap(p) else {
                self.counters.tx_drop(DropReason::PoolEmpty, 1);
                continue;
            };
            match self.tx.push(p) {
                Ok(()) => {
                    sent += 1;
                    bytes += len;
                }
                Err(p) => {
                    full += 1;
                    if pool.available() < POOL_HIGH_WATER {
                        pool.put(p);
                    }
                }
            }
        }
        self.counters.tx_packets.add(sent);
        self.counters.tx_bytes.add(bytes);
        if full > 0 {
            self.counters.tx_drop(DropReason::TxRingFull, full);
        }
        sent as usize
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}

/// A benchmark port: rx replays `frames` round-robin forever, tx is a sink.
#[derive(Debug)]
pub struct LoopPort {
    frames: Vec<Vec<u8>>,
    next: usize,
    counters: Arc<PortCounters>,
}

impl LoopPort {
    /// A port that receives copies of `frames`, cycling through them.
    pub fn new(frames: Vec<Vec<u8>>) -> LoopPort {
        LoopPort {
            frames,
            next: 0,
            counters: Arc::new(PortCounters::default()),
        }
    }
}

impl Port for LoopPort {
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        if self.frames.is_empty() {
            return 0;
        }
        let mut n = 0;
        while n < max {
            let Some(mut p) = pool.get() else {
                self.counters.rx_drop(DropReason::PoolEmpty, 1);
                break;
            };
            let f = &self.frames[self.next];
            self.next = (self.next + 1) % self.frames.len();
            if !p.set_data(f) {
                pool.put(p);
                self.counters.rx_drop(DropReason::Oversize, 1);
                continue;
            }
            out.push(p);
            n += 1;
        }
        self.counters.rx_packets.add(n as u64);
        n
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        let n = pkts.len();
        let mut bytes = 0u64;
        for p in pkts.drain(..) {
            bytes += p.len() as u64;
            pool.put(p);
        }
        self.counters.tx_packets.add(n as u64);
        self.counters.tx_bytes.add(bytes);
        n
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_receive_transmit_capture() {
        let (mut port, h) = MemoryPort::new(2);
        let mut pool = PacketPool::with_capacity(4);
        h.inject(Packet::from_slice(&[1; 60]).unwrap()).unwrap();
        h.inject(Packet::from_slice(&[2; 60]).unwrap()).unwrap();
        assert!(
            h.inject(Packet::from_slice(&[3; 60]).unwrap()).is_err(),
            "rx queue bounded"
        );
        let mut batch = Vec::new();
        assert_eq!(port.rx_batch(&mut pool, &mut batch, 32), 2);
        assert_eq!(h.counters().rx_packets.get(), 2);
        batch.push(Packet::from_slice(&[4; 60]).unwrap());
        assert_eq!(port.tx_batch(&mut batch, &mut pool), 2);
        assert!(batch.is_empty());
        let s = h.counters().snapshot();
        assert_eq!(s.tx_packets, 2);
        assert_eq!(s.tx_dropped, 1);
        assert_eq!(s.tx_drop_reasons, vec![("tx_ring_full".to_string(), 1)]);
        assert_eq!(h.capture().unwrap().data()[0], 1);
        assert_eq!(h.capture().unwrap().data()[0], 2);
        assert!(h.capture().is_none());
    }

    #[test]
    fn recycled_buffers_return_to_the_pool() {
        let (mut port, h) = MemoryPort::new(4);
        let mut pool = PacketPool::with_capacity(0);
        let mut batch = Vec::new();
        assert_eq!(port.rx_batch(&mut pool, &mut batch, 32), 0);
        assert_eq!(pool.available(), 0);
        for _ in 0..6 {
            h.recycle(Packet::new());
        }
        assert_eq!(port.rx_batch(&mut pool, &mut batch, 32), 0);
        assert_eq!(pool.available(), 4, "bounded by the queue depth");
    }

    #[test]
    fn pool_above_high_water_is_trimmed() {
        let (mut port, _h) = MemoryPort::new(4);
        let mut pool = PacketPool::with_capacity(POOL_HIGH_WATER + 100);
        let mut batch = Vec::new();
        port.rx_batch(&mut pool, &mut batch, 32);
        assert_eq!(pool.available(), POOL_HIGH_WATER + 100 - POOL_TRIM_PER_CALL);
        port.rx_batch(&mut pool, &mut batch, 32);
        assert_eq!(pool.available(), POOL_HIGH_WATER);
        port.rx_batch(&mut pool, &mut batch, 32);
        assert_eq!(pool.available(), POOL_HIGH_WATER);
    }

    #[test]
    fn loop_port_replays_and_sinks() {
        let mut port = LoopPort::new(vec![vec![7; 64], vec![8; 64]]);
        let mut pool = PacketPool::with_capacity(3);
        let mut batch = Vec::new();
        assert_eq!(
            port.rx_batch(&mut pool, &mut batch, 32),
            3,
            "limited by the pool"
        );
        assert_eq!(batch[1].data()[0], 8);
        assert_eq!(port.counters().snapshot().rx_dropped, 1);
        port.tx_batch(&mut batch, &mut pool);
        assert_eq!(pool.available(), 3);
    }
}
