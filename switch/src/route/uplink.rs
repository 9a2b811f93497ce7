//! The routed uplink: a node's own address on its uplink port, with ARP
//! (RFC 826) done by the switch, so routed (unencapsulated) pod traffic can
//! leave for a peer node without a static neighbour entry.
//!
//! [`UplinkPort`] wraps the port that owns the uplink interface (an AF_XDP
//! socket on the node's uplink veth or NIC; a memory port in tests), like
//! VPP's interface address plus its ARP/adjacency nodes or the Linux
//! neighbour table under a routed CNI (Calico BGP mode, kubenet). It is
//! configured with `flowctl add-port br0 up0 type=afxdp ifname=eth1
//! ip=192.168.10.1/24`.
//!
//! Data enters from the wire through `rx_batch`: ARP requests for the node
//! address are answered in place, ARP replies and requests teach the
//! [`NeighCache`] (the one the VXLAN port uses), unicast frames for another
//! MAC are dropped and counted (a NIC outside promiscuous mode), and every
//! other frame goes up to the pipeline unchanged. Data enters from the
//! datapath through `tx_batch`: a frame that carries a next hop (set by the
//! `route` action's `SetNextHop` for a route whose next hop has no static
//! MAC) gets the uplink MAC as source and the next hop's MAC as destination
//! from the cache; while ARP runs up to `queue_len` frames wait per next hop
//! (more are dropped, counted as `no_neighbour`). A frame without a next hop
//! is sent as the pipeline left it.
//!
//! One polling thread owns the port; the control thread sees
//! [`UplinkHandle`] (named counters and the published neighbour table, as
//! `flowctl dump-neigh` shows). Per packet nothing allocates, locks or makes
//! a syscall: one cache lookup and two 6-byte writes; the clock is read once
//! per batch and the table republished (`try_lock`, never waiting) only when
//! it changed. It must never forward ARP for its own address to the
//! pipeline, nor answer ARP for any address but its own.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::packet::ethernet::Mac;
use crate::packet::{be16, be32, Packet, PacketPool};
use crate::port::{DropReason, Port, PortCounters};
use crate::tunnel::neigh::{
    aged_views, arp_reply_in_place, arp_request_frame, NeighCache, NeighConfig, NeighDrop,
    NeighView, Resolve, TickOutcome,
};

/// How often the neighbour cache's timers run.
const TICK: Duration = Duration::from_millis(100);

const ETH_ARP: u16 = 0x0806;

/// The node address of a routed uplink: `ip=ADDR/LEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    /// The node's IPv4 address on the uplink.
    pub ip: u32,
    /// Prefix length of the uplink subnet (on-link peers).
    pub len: u8,
}

impl NodeAddr {
    /// Parse `ADDR/LEN` (LEN 1 to 32; `ADDR` alone means /32). The address
    /// must be unicast and not the subnet's network or broadcast address.
    pub fn parse(s: &str) -> Result<NodeAddr, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let ip: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("ip: {a:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| (1..=32).contains(l))
            .ok_or_else(|| format!("ip: prefix length {l:?} must be 1 to 32"))?;
        let ip = u32::from(ip);
        let n = NodeAddr { ip, len };
        let host = ip & !n.mask();
        if ip == 0
            || Ipv4Addr::from(ip).is_multicast()
            || Ipv4Addr::from(ip).is_broadcast()
            || (len < 31 && (host == 0 || host == !n.mask()))
        {
            return Err(format!(
                "ip: {s:?} must be a unicast host address of its subnet"
            ));
        }
        Ok(n)
    }

    /// The subnet mask.
    pub fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.len.clamp(1, 32)))
    }

    /// True when `ip` is in the uplink subnet.
    pub fn on_link(&self, ip: u32) -> bool {
        (ip ^ self.ip) & self.mask() == 0
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.ip), self.len)
    }
}

crate::port::named_counters! {
    /// Named counters of one routed uplink (one writer: its polling thread).
    UplinkCounters,
    /// A copy of [`UplinkCounters`].
    UplinkStats {
        /// ARP requests for the node address answered.
        arp_replies_sent,
        /// ARP frames that created or refreshed a neighbour entry.
        arp_learned,
        /// ARP frames neither for the node address nor about a known neighbour.
        arp_ignored,
        /// ARP frames that were not Ethernet/IPv4 ARP or were truncated.
        arp_malformed,
        /// ARP requests sent for next hops.
        arp_requests_sent,
        /// Unicast frames for another MAC (dropped, as a non-promiscuous NIC does).
        rx_not_for_us,
        /// Frames sent with a next-hop MAC from the cache.
        tx_resolved,
        /// Frames that waited for ARP resolution.
        tx_neigh_queued,
        /// Frames dropped because the next hop's queue was full.
        tx_neigh_queue_full,
        /// Frames dropped because the next hop did not answer ARP.
        tx_neigh_failed,
        /// Frames dropped because the neighbour cache was full.
        tx_neigh_cache_full,
        /// Buffers the pool could not give for ARP requests.
        pool_empty,
    }
}

#[derive(Debug)]
struct Shared {
    addr: NodeAddr,
    mac: Mac,
    counters: UplinkCounters,
    neigh: Mutex<(Instant, Vec<NeighView>)>,
}

/// The control thread's view of a routed uplink.
#[derive(Clone, Debug)]
pub struct UplinkHandle(Arc<Shared>);

impl UplinkHandle {
    /// The node address.
    pub fn addr(&self) -> NodeAddr {
        self.0.addr
    }

    /// The uplink MAC.
    pub fn mac(&self) -> Mac {
        self.0.mac
    }

    /// Named counters.
    pub fn stats(&self) -> UplinkStats {
        self.0.counters.snapshot()
    }

    /// The learned neighbour table, ages as of now.
    pub fn neighbours(&self) -> Vec<NeighView> {
        aged_views(&self.0.neigh)
    }
}

/// A port with the node's address on it (see the module documentation).
#[derive(Debug)]
pub struct UplinkPort {
    inner: Box<dyn Port>,
    addr: NodeAddr,
    mac: Mac,
    shared: Arc<Shared>,
    neigh: NeighCache,
    published: u64,
    /// Frames received from the wire, being sorted.
    rx: Vec<Packet>,
    /// Frames for the wire (data, ARP replies and requests).
    tx: Vec<Packet>,
    released: Vec<Packet>,
    tick: TickOutcome,
    last_tick: Instant,
}

/// Write the next hop's MAC as destination and ours as source.
#[inline]
fn rewrite(p: &mut Packet, dst: &Mac, src: &Mac) {
    let d = p.data_mut();
    if d.len() >= 12 {
        d[0..6].copy_from_slice(dst);
        d[6..12].copy_from_slice(src);
    }
}

impl UplinkPort {
    /// Wrap `inner` (which owns the uplink interface, MAC `mac`) with the
    /// node address `addr`.
    pub fn new(inner: Box<dyn Port>, addr: NodeAddr, mac: Mac, cfg: NeighConfig) -> UplinkPort {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            addr,
            mac,
            counters: UplinkCounters::default(),
            neigh: Mutex::new((now, Vec::new())),
        });
        UplinkPort {
            inner,
            addr,
            mac,
            shared,
            neigh: NeighCache::new(cfg),
            published: 0,
            rx: Vec::with_capacity(64),
            tx: Vec::with_capacity(256),
            released: Vec::with_capacity(64),
            tick: TickOutcome::default(),
            last_tick: now,
        }
    }

    /// The control thread's handle.
    pub fn handle(&self) -> UplinkHandle {
        UplinkHandle(self.shared.clone())
    }

    /// The neighbour cache (tests).
    pub fn neigh(&self) -> &NeighCache {
        &self.neigh
    }

    fn publish_neigh(&mut self, now: Instant) {
        if self.neigh.version() == self.published {
            return;
        }
        if let Ok(mut g) = self.shared.neigh.try_lock() {
            *g = (now, self.neigh.view(now));
            self.published = self.neigh.version();
        }
    }

    /// Queue an ARP request (RFC 826) for `ip`, from the node address.
    fn arp_request(&mut self, ip: u32, pool: &mut PacketPool) {
        let Some(mut p) = pool.get() else {
            self.shared.counters.pool_empty.add(1);
            return;
        };
        let f = arp_request_frame(self.mac, self.addr.ip, ip);
        p.set_data(&f);
        self.tx.push(p);
        self.shared.counters.arp_requests_sent.add(1);
    }

    /// Answer or learn from an ARP frame; the buffer is reused for the
    /// reply or returned to `pool`.
    fn on_arp(&mut self, mut p: Packet, pool: &mut PacketPool, now: Instant) {
        const L3: usize = 14;
        let c = &self.shared.counters;
        let f = p.data();
        // RFC 826, Ethernet/IPv4: htype 1, ptype 0x0800, hlen 6, plen 4.
        if f.len() < L3 + 28 || f[L3..L3 + 6] != [0, 1, 8, 0, 6, 4] {
            c.arp_malformed.add(1);
            pool.put(p);
            return;
        }
        let op = be16(f, L3 + 6);
        let mut sha = [0u8; 6];
        sha.copy_from_slice(&f[L3 + 8..L3 + 14]);
        let spa = be32(f, L3 + 14);
        let tpa = be32(f, L3 + 24);
        let local = self.addr.ip;
        let for_us = tpa == local && spa != local;
        let before = self.released.len();
        // RFC 826 merge: update a known sender; add it when we are the target.
        self.neigh.learn(spa, sha, for_us, now, &mut self.released);
        let learned = self.neigh.peek(spa) == Some(sha);
        let mac = self.mac;
        for mut r in self.released.drain(before..) {
            rewrite(&mut r, &sha, &mac);
            self.tx.push(r);
            c.tx_resolved.add(1);
        }
        if learned {
            c.arp_learned.add(1);
        }
        if for_us && op == 1 {
            // Turn the request into the reply in place.
            arp_reply_in_place(p.data_mut(), L3, sha, spa, mac, local);
            self.tx.push(p);
            c.arp_replies_sent.add(1);
            return;
        }
        if !learned {
            c.arp_ignored.add(1);
        }
        pool.put(p);
    }

    fn maintain(&mut self, pool: &mut PacketPool, now: Instant) {
        if now.saturating_duration_since(self.last_tick) < TICK {
            return;
        }
        self.last_tick = now;
        let mut t = std::mem::take(&mut self.tick);
        self.neigh.tick(now, &mut t);
        for ip in t.requests.drain(..) {
            self.arp_request(ip, pool);
        }
        let n = t.dropped.len() as u64;
        if n > 0 {
            self.shared.counters.tx_neigh_failed.add(n);
            self.inner.counters().tx_drop(DropReason::NoNeighbour, n);
            t.dropped.drain(..).for_each(|p| pool.put(p));
        }
        self.tick = t;
    }

    fn flush(&mut self, pool: &mut PacketPool) {
        if !self.tx.is_empty() {
            let mut tx = std::mem::take(&mut self.tx);
            self.inner.tx_batch(&mut tx, pool);
            self.tx = tx;
        }
    }

    /// Resolve a frame's next hop and queue it for the wire.
    fn send_routed(&mut self, nh: u32, p: Packet, pool: &mut PacketPool, now: Instant) {
        let mac = self.mac;
        match self.neigh.resolve(nh, p, now) {
            Resolve::Ready(dst, mut p) => {
                rewrite(&mut p, &dst, &mac);
                self.tx.push(p);
                self.shared.counters.tx_resolved.add(1);
                if self.neigh.take_probe(nh) {
                    self.arp_request(nh, pool);
                }
            }
            Resolve::Queued { request } => {
                self.shared.counters.tx_neigh_queued.add(1);
                if request {
                    self.arp_request(nh, pool);
                }
            }
            Resolve::Dropped(why, p) => {
                let c = &self.shared.counters;
                match why {
                    NeighDrop::QueueFull => c.tx_neigh_queue_full.add(1),
                    NeighDrop::Failed => c.tx_neigh_failed.add(1),
                    NeighDrop::CacheFull => c.tx_neigh_cache_full.add(1),
                }
                self.inner.counters().tx_drop(DropReason::NoNeighbour, 1);
                pool.put(p);
            }
        }
    }
}

impl Port for UplinkPort {
    fn attach(&mut self, pool: &mut PacketPool) {
        self.inner.attach(pool);
    }

    fn detach(&mut self, pool: &mut PacketPool) {
        let mut dropped = Vec::new();
        self.neigh.clear(&mut dropped);
        dropped.into_iter().for_each(|p| pool.put(p));
        self.tx.drain(..).for_each(|p| pool.put(p));
        self.inner.detach(pool);
    }

    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        let now = Instant::now();
        self.maintain(pool, now);
        let mut rx = std::mem::take(&mut self.rx);
        self.inner.rx_batch(pool, &mut rx, max);
        let mut got = 0usize;
        for p in rx.drain(..) {
            let d = p.data();
            if d.len() >= 14 && be16(d, 12) == ETH_ARP {
                self.on_arp(p, pool, now);
                continue;
            }
            // Unicast to another MAC: not ours (group bit clear, other address).
            if d.len() >= 6 && d[0] & 1 == 0 && d[0..6] != self.mac {
                self.shared.counters.rx_not_for_us.add(1);
                pool.put(p);
                continue;
            }
            out.push(p);
            got += 1;
        }
        self.rx = rx;
        self.flush(pool);
        self.publish_neigh(now);
        got
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let now = Instant::now();
        for mut p in pkts.drain(..) {
            let nh = p.nexthop();
            if nh == 0 {
                self.tx.push(p);
            } else {
                p.set_nexthop(0);
                self.send_routed(nh, p, pool, now);
            }
        }
        let n = self.tx.len();
        self.flush(pool);
        self.publish_neigh(now);
        n
    }

    fn counters(&self) -> &Arc<PortCounters> {
        self.inner.counters()
    }

    fn publish_stats(&mut self) {
        self.inner.publish_stats();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::{MemoryPort, MemoryPortHandle};

    const LOCAL: [u8; 4] = [192, 168, 10, 1];
    const PEER: [u8; 4] = [192, 168, 10, 2];
    const MAC_L: Mac = [2, 0, 0, 0, 0x10, 1];
    const MAC_P: Mac = [2, 0, 0, 0, 0x10, 2];

    fn port(queue_len: usize) -> (UplinkPort, MemoryPortHandle) {
        let (u, h) = MemoryPort::new(256);
        let addr = NodeAddr::parse("192.168.10.1/24").unwrap();
        let cfg = NeighConfig {
            queue_len,
            ..NeighConfig::default()
        };
        (UplinkPort::new(Box::new(u), addr, MAC_L, cfg), h)
    }

    fn routed(tag: u8, nh: [u8; 4]) -> Packet {
        let f = crate::packet::FrameBuilder::new()
            .eth([0x0a, 0x58, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0])
            .ipv4([10, 244, 1, 2], [10, 244, 2, tag])
            .icmp_echo(1, 1)
            .payload(&[tag; 32])
            .build();
        let mut p = Packet::from_slice(&f).unwrap();
        p.set_nexthop(u32::from_be_bytes(nh));
        p
    }

    fn arp(op: u16, sha: Mac, spa: [u8; 4], tpa: [u8; 4], dst: Mac) -> Packet {
        let mut f = [0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&sha);
        f[12..14].copy_from_slice(&[8, 6]);
        f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f[22..28].copy_from_slice(&sha);
        f[28..32].copy_from_slice(&spa);
        f[38..42].copy_from_slice(&tpa);
        Packet::from_slice(&f).unwrap()
    }

    fn rx(p: &mut UplinkPort, pool: &mut PacketPool) -> Vec<Packet> {
        let mut out = Vec::new();
        p.rx_batch(pool, &mut out, 32);
        out
    }

    #[test]
    fn node_addr_parse() {
        let a = NodeAddr::parse("192.168.10.1/24").unwrap();
        assert_eq!(a.to_string(), "192.168.10.1/24");
        assert!(a.on_link(u32::from_be_bytes(PEER)));
        assert!(!a.on_link(u32::from_be_bytes([192, 168, 20, 3])));
        assert_eq!(NodeAddr::parse("10.0.0.1").unwrap().len, 32);
        for bad in [
            "x/24",
            "192.168.10.1/0",
            "192.168.10.1/33",
            "192.168.10.0/24",
            "192.168.10.255/24",
            "224.0.0.1/4",
            "0.0.0.0/8",
        ] {
            assert!(NodeAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unresolved_next_hop_queues_arps_and_releases_with_both_macs() {
        let (mut p, h) = port(2);
        let mut pool = PacketPool::with_capacity(64);
        let mut b = vec![routed(1, PEER), routed(2, PEER), routed(3, PEER)];
        p.tx_batch(&mut b, &mut pool);
        let req = h.capture().expect("an ARP request");
        assert!(h.capture().is_none(), "nothing else until the reply");
        assert_eq!(&req.data()[0..6], &[0xff; 6]);
        assert_eq!(&req.data()[28..32], &LOCAL, "sent from the node address");
        assert_eq!(&req.data()[38..42], &PEER);
        let s = p.handle().stats();
        assert_eq!((s.tx_neigh_queued, s.tx_neigh_queue_full), (2, 1));
        let ps = p.counters().snapshot();
        assert_eq!(ps.tx_drop_reasons, vec![("no_neighbour".to_string(), 1)]);
        // The reply releases the two queued frames in order.
        h.inject(arp(2, MAC_P, PEER, LOCAL, MAC_L)).unwrap();
        assert!(rx(&mut p, &mut pool).is_empty(), "ARP never goes up");
        for tag in [1u8, 2] {
            let f = h.capture().expect("released");
            assert_eq!(
                (&f.data()[0..6], &f.data()[6..12]),
                (&MAC_P[..], &MAC_L[..])
            );
            assert_eq!(f.data()[33], tag);
        }
        // Resolved: straight out, no request.
        let mut b = vec![routed(4, PEER)];
        p.tx_batch(&mut b, &mut pool);
        assert_eq!(&h.capture().unwrap().data()[0..6], &MAC_P);
        let v = p.handle().neighbours();
        assert_eq!(
            (v[0].ip.as_str(), v[0].mac.as_str()),
            ("192.168.10.2", "02:00:00:00:10:02")
        );
        assert_eq!(p.handle().stats().arp_requests_sent, 1);
    }

    #[test]
    fn answers_arp_for_its_address_only_and_filters_other_unicast() {
        let (mut p, h) = port(4);
        let mut pool = PacketPool::with_capacity(64);
        h.inject(arp(1, MAC_P, PEER, LOCAL, [0xff; 6])).unwrap();
        h.inject(arp(1, MAC_P, PEER, [192, 168, 10, 9], [0xff; 6]))
            .unwrap();
        let data = crate::packet::FrameBuilder::new()
            .eth(MAC_P, MAC_L)
            .ipv4([10, 244, 2, 2], [10, 244, 1, 2])
            .icmp_echo(1, 1)
            .build();
        h.inject(Packet::from_slice(&data).unwrap()).unwrap();
        let other = crate::packet::FrameBuilder::new()
            .eth(MAC_P, [2, 0, 0, 0, 0x10, 9])
            .ipv4([10, 244, 2, 2], [10, 244, 1, 2])
            .icmp_echo(1, 1)
            .build();
        h.inject(Packet::from_slice(&other).unwrap()).unwrap();
        let up = rx(&mut p, &mut pool);
        assert_eq!(up.len(), 1, "only the data frame for our MAC goes up");
        assert_eq!(up[0].data(), &data[..]);
        let rep = h.capture().expect("reply");
        assert!(h.capture().is_none(), "one reply only");
        let d = rep.data();
        assert_eq!((&d[0..6], &d[6..12]), (&MAC_P[..], &MAC_L[..]));
        assert_eq!(be16(d, 20), 2);
        assert_eq!((&d[22..28], &d[28..32]), (&MAC_L[..], &LOCAL[..]));
        assert_eq!((&d[32..38], &d[38..42]), (&MAC_P[..], &PEER[..]));
        let s = p.handle().stats();
        assert_eq!(
            (s.arp_replies_sent, s.arp_learned, s.rx_not_for_us),
            (1, 2, 1)
        );
        // The asker was learned: no request needed.
        let mut b = vec![routed(1, PEER)];
        p.tx_batch(&mut b, &mut pool);
        assert_eq!(&h.capture().unwrap().data()[0..6], &MAC_P);
        // A frame without a next hop goes out untouched.
        let mut plain = routed(5, PEER);
        plain.set_nexthop(0);
        let before = plain.data().to_vec();
        let mut b = vec![plain];
        p.tx_batch(&mut b, &mut pool);
        assert_eq!(h.capture().unwrap().data(), &before[..]);
    }

    #[test]
    fn malformed_arp_is_counted_not_fatal() {
        let (mut p, h) = port(4);
        let mut pool = PacketPool::with_capacity(64);
        let mut short = [0u8; 20];
        short[12..14].copy_from_slice(&[8, 6]);
        short[0] = 0xff;
        h.inject(Packet::from_slice(&short).unwrap()).unwrap();
        let mut bad = arp(1, MAC_P, PEER, LOCAL, [0xff; 6]);
        bad.data_mut()[15] = 6; // htype 6
        h.inject(bad).unwrap();
        assert!(rx(&mut p, &mut pool).is_empty());
        assert_eq!(p.handle().stats().arp_malformed, 2);
        assert!(h.capture().is_none());
    }
}
