//! The `vxlan` port: a logical OpenFlow port that carries its frames over an
//! underlay port (an AF_XDP socket on the node's uplink) in VXLAN (RFC 7348).
//!
//! Data enters in two ways. `rx_batch` polls the underlay: VXLAN frames to
//! `local_ip`:`dst_port` are decapsulated in place (the packet start moves
//! past the outer headers) and returned with their tunnel metadata (VNI,
//! outer source and destination) attached to the [`Packet`], which the
//! datapath copies into the `FlowKey`'s `tun_id`/`tun_src`/`tun_dst`; ARP on
//! the underlay is answered (requests for `local_ip`) or learned from
//! (replies, and requests from neighbours); every other frame is dropped and
//! counted by name. `tx_batch` takes the datapath's frames for this port,
//! encapsulates each in its headroom with the VNI and remote VTEP from the
//! packet's tunnel metadata (`set_field:...->tun_id/tun_dst`) or the port's
//! fixed `key=`/`remote_ip=`, resolves the next hop's MAC through the
//! [`NeighCache`] (queueing a few frames while ARP runs) and sends on the
//! underlay.
//!
//! The port object and its underlay belong to one polling thread, like every
//! port; the control thread sees only [`VxlanHandle`] (named counters, the
//! published neighbour table). Per packet nothing allocates, locks or makes a
//! syscall; per batch one clock read. The neighbour view is republished under
//! a mutex (`try_lock`, never waiting) only when the cache changed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::encap::{classify, encap, set_outer_dst_mac, EncapError, Outer, Underlay};
use super::neigh::{
    aged_views, arp_reply_in_place, arp_request_frame, NeighCache, NeighConfig, NeighDrop,
    NeighView, Resolve, TickOutcome,
};
use super::options::{FromFlow, VxlanOptions};
use crate::datapath::TunnelMeta;
use crate::packet::ethernet::Mac;
use crate::packet::{be16, be32, Packet, PacketPool};
use crate::port::{DropReason, Port, PortCounters, PortStats};

/// How often the neighbour cache's timers run.
const TICK: Duration = Duration::from_millis(100);

crate::port::named_counters! {
    /// Named counters of one vxlan port (one writer: its polling thread).
    VxlanCounters,
    /// A copy of [`VxlanCounters`], as reported by `dump-tunnels`.
    VxlanStats {
        /// VXLAN frames decapsulated and handed to the pipeline.
        rx_decap,
        /// Underlay frames not for this VTEP (other MAC, address, protocol or UDP port).
        rx_not_for_us,
        /// Underlay frames whose outer Ethernet/IPv4/UDP header was malformed or
        /// truncated, or whose IPv4 header checksum was wrong.
        rx_bad_outer,
        /// VXLAN frames with a short header, the I flag clear, or no inner Ethernet header.
        rx_bad_vxlan,
        /// Outer IPv4 fragments (VXLAN is not reassembled: the underlay MTU must fit).
        rx_fragment,
        /// ARP requests for local_ip answered.
        arp_replies_sent,
        /// ARP frames that created or refreshed a neighbour entry (replies,
        /// requests for local_ip, gratuitous ARP of a known neighbour).
        arp_learned,
        /// ARP frames neither for local_ip nor about a known neighbour.
        arp_ignored,
        /// ARP frames that were not Ethernet/IPv4 ARP or were truncated.
        arp_malformed,
        /// ARP requests sent for next hops.
        arp_requests_sent,
        /// Frames encapsulated and sent on the underlay.
        tx_encap,
        /// Frames whose encapsulation would exceed the underlay MTU (dropped).
        tx_oversize,
        /// Frames without a remote VTEP (remote_ip=flow and no tun_dst set; dropped).
        tx_no_remote,
        /// Frames without headroom for the outer headers, or shorter than Ethernet (dropped).
        tx_encap_failed,
        /// Frames that waited for ARP resolution.
        tx_neigh_queued,
        /// Frames dropped because the next hop's queue was full.
        tx_neigh_queue_full,
        /// Frames dropped because the next hop did not answer ARP.
        tx_neigh_failed,
        /// Frames dropped because the neighbour cache was full.
        tx_neigh_cache_full,
        /// Buffers the pool could not give for ARP frames.
        pool_empty,
        /// `routed=true`: unencapsulated frames for the underlay MAC handed to the pipeline.
        rx_routed,
        /// `routed=true`: frames the `route` action sent unencapsulated to a next hop.
        tx_routed,
    }
}

/// Fixed facts about a vxlan port, for `dump-tunnels`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    /// Local VTEP.
    pub local_ip: String,
    /// `flow` or the fixed remote VTEP.
    pub remote_ip: String,
    /// `flow` or the fixed VNI.
    pub key: String,
    /// UDP destination port.
    pub dst_port: u16,
    /// Underlay interface.
    pub underlay: String,
    /// Underlay MAC.
    pub underlay_mac: String,
    /// Underlay MTU (largest outer IPv4 packet).
    pub underlay_mtu: usize,
    /// Next hop for every VTEP (`on-link` when none).
    pub gw: String,
    /// Largest inner frame that fits (underlay MTU - 36), without FCS.
    pub max_inner_frame: usize,
}

#[derive(Debug)]
struct Shared {
    info: VxlanInfo,
    counters: VxlanCounters,
    underlay: Arc<PortCounters>,
    /// The neighbour table as of the given instant.
    neigh: Mutex<(Instant, Vec<NeighView>)>,
}

/// The control thread's view of a vxlan port.
#[derive(Clone, Debug)]
pub struct VxlanHandle(Arc<Shared>);

impl VxlanHandle {
    /// Configuration facts.
    pub fn info(&self) -> &VxlanInfo {
        &self.0.info
    }

    /// Named counters.
    pub fn stats(&self) -> VxlanStats {
        self.0.counters.snapshot()
    }

    /// The underlay port's counters.
    pub fn underlay_stats(&self) -> PortStats {
        self.0.underlay.snapshot()
    }

    /// The neighbour table, ages as of now.
    pub fn neighbours(&self) -> Vec<NeighView> {
        aged_views(&self.0.neigh)
    }
}

/// A VXLAN tunnel port over an underlay port (see the module documentation).
#[derive(Debug)]
pub struct VxlanPort {
    opts: VxlanOptions,
    underlay: Box<dyn Port>,
    outer: Outer,
    ip_mtu: usize,
    counters: Arc<PortCounters>,
    shared: Arc<Shared>,
    neigh: NeighCache,
    published: u64,
    /// Frames received from the underlay, being classified.
    urx: Vec<Packet>,
    /// Frames for the underlay (encapsulated data and ARP).
    utx: Vec<Packet>,
    released: Vec<Packet>,
    tick: TickOutcome,
    last_tick: Instant,
    ip_id: u16,
}

fn fmt_ip(ip: u32) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

impl VxlanPort {
    /// A vxlan port over an already open `underlay` whose interface has MAC
    /// `mac` and MTU `ip_mtu` (tests and benches use a memory underlay).
    pub fn with_underlay(
        opts: VxlanOptions,
        underlay: Box<dyn Port>,
        mac: Mac,
        ip_mtu: usize,
        neigh: NeighConfig,
    ) -> VxlanPort {
        let outer = Outer {
            src_mac: mac,
            dst_mac: [0; 6],
            src_ip: opts.local_ip,
            dst_ip: 0,
            vni: 0,
            dst_port: opts.dst_port,
            ttl: opts.ttl,
            tos: opts.tos,
            df: opts.df,
        };
        let info = VxlanInfo {
            local_ip: fmt_ip(opts.local_ip),
            remote_ip: match opts.remote_ip {
                FromFlow::Flow => "flow".into(),
                FromFlow::Fixed(r) => fmt_ip(r),
            },
            key: match opts.key {
                FromFlow::Flow => "flow".into(),
                FromFlow::Fixed(k) => k.to_string(),
            },
            dst_port: opts.dst_port,
            underlay: opts.underlay.clone(),
            underlay_mac: super::neigh::format_mac(&mac),
            underlay_mtu: ip_mtu,
            gw: opts.gw.map_or("on-link".into(), fmt_ip),
            max_inner_frame: ip_mtu.saturating_sub(super::encap::IP_OVERHEAD),
        };
        let now = Instant::now();
        let shared = Arc::new(Shared {
            info,
            counters: VxlanCounters::default(),
            underlay: underlay.counters().clone(),
            neigh: Mutex::new((now, Vec::new())),
        });
        VxlanPort {
            opts,
            underlay,
            outer,
            ip_mtu,
            counters: Arc::new(PortCounters::default()),
            shared,
            neigh: NeighCache::new(neigh),
            published: 0,
            urx: Vec::with_capacity(64),
            utx: Vec::with_capacity(256),
            released: Vec::with_capacity(64),
            tick: TickOutcome::default(),
            last_tick: now,
            ip_id: 0,
        }
    }

    /// Open the underlay interface `opts.underlay` with AF_XDP on `umem`
    /// (the UMEM of the polling thread that will own the port, so the
    /// socket need not be re-created there; its MAC and MTU read from sysfs
    /// unless overridden) and build the port.
    #[cfg(feature = "afxdp")]
    pub fn open(
        opts: VxlanOptions,
        umem: &crate::port::afxdp::AfxdpUmem,
    ) -> Result<VxlanPort, String> {
        use crate::port::afxdp::{AfxdpOptions, AfxdpPort, XdpMode};
        let sys = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{}/{f}", opts.underlay))
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("underlay {:?}: reading {f}: {e}", opts.underlay))
        };
        let mac = match opts.underlay_mac {
            Some(m) => m,
            None => {
                let s = sys("address")?;
                super::options::parse_mac(&s)
                    .ok_or_else(|| format!("underlay {:?}: bad MAC {s:?}", opts.underlay))?
            }
        };
        let mtu = match opts.underlay_mtu {
            Some(m) => m as usize,
            None => {
                let s = sys("mtu")?;
                s.parse::<usize>()
                    .map_err(|_| format!("underlay {:?}: bad MTU {s:?}", opts.underlay))?
            }
        };
        let mut ao = AfxdpOptions::new(&opts.underlay);
        if let Some(m) = &opts.underlay_xdp_mode {
            ao.xdp_mode = XdpMode::parse(m)
                .ok_or_else(|| format!("underlay_xdp_mode: unknown mode {m:?}"))?;
        }
        let u = AfxdpPort::open_shared(&ao, umem).map_err(|e| format!("underlay: {e}"))?;
        Ok(VxlanPort::with_underlay(
            opts,
            Box::new(u),
            mac,
            mtu,
            NeighConfig::default(),
        ))
    }

    /// The control thread's handle.
    pub fn handle(&self) -> VxlanHandle {
        VxlanHandle(self.shared.clone())
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

    /// Queue an ARP request (RFC 826) for `ip` on the underlay.
    fn arp_request(&mut self, ip: u32, pool: &mut PacketPool) {
        let Some(mut p) = pool.get() else {
            self.shared.counters.pool_empty.add(1);
            return;
        };
        let f = arp_request_frame(self.outer.src_mac, self.opts.local_ip, ip);
        p.set_data(&f);
        self.utx.push(p);
        self.shared.counters.arp_requests_sent.add(1);
    }

    /// Answer or learn from an ARP frame received on the underlay; the
    /// buffer is reused for the reply or returned to `pool`.
    fn on_arp(&mut self, mut p: Packet, l3: usize, pool: &mut PacketPool, now: Instant) {
        let c = &self.shared.counters;
        let f = p.data();
        // RFC 826, Ethernet/IPv4: htype 1, ptype 0x0800, hlen 6, plen 4.
        if f.len() < l3 + 28 || f[l3..l3 + 6] != [0, 1, 8, 0, 6, 4] {
            c.arp_malformed.add(1);
            pool.put(p);
            return;
        }
        let op = be16(f, l3 + 6);
        let mut sha = [0u8; 6];
        sha.copy_from_slice(&f[l3 + 8..l3 + 14]);
        let spa = be32(f, l3 + 14);
        let tpa = be32(f, l3 + 24);
        let local = self.opts.local_ip;
        let for_us = tpa == local && spa != local;
        let before = self.released.len();
        // RFC 826 merge: update a known sender; add it when we are the target.
        self.neigh.learn(spa, sha, for_us, now, &mut self.released);
        let learned = self.neigh.peek(spa) == Some(sha);
        for mut r in self.released.drain(before..) {
            set_outer_dst_mac(&mut r, &sha);
            self.utx.push(r);
        }
        if learned {
            c.arp_learned.add(1);
        }
        if for_us && op == 1 {
            // Turn the request into the reply in place.
            let local_mac = self.outer.src_mac;
            arp_reply_in_place(p.data_mut(), l3, sha, spa, local_mac, local);
            self.utx.push(p);
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
            self.counters.tx_errors.add(n);
            t.dropped.drain(..).for_each(|p| pool.put(p));
        }
        self.tick = t;
    }

    fn flush_underlay(&mut self, pool: &mut PacketPool) {
        if !self.utx.is_empty() {
            self.underlay.tx_batch(&mut self.utx, pool);
        }
    }

    /// `routed=true`: send a frame the `route` action gave a next hop
    /// unencapsulated, with the underlay MAC as source and the next hop's
    /// MAC (from the same ARP cache as the VTEPs') as destination.
    fn send_routed(&mut self, mut p: Packet, pool: &mut PacketPool, now: Instant) -> bool {
        let nh = p.nexthop();
        p.set_nexthop(0);
        let len = p.len() as u64;
        if p.len() < 14 {
            self.shared.counters.tx_encap_failed.add(1);
            self.counters.tx_drop(DropReason::ActionFailed, 1);
            pool.put(p);
            return false;
        }
        let src = self.outer.src_mac;
        p.data_mut()[6..12].copy_from_slice(&src);
        match self.neigh.resolve(nh, p, now) {
            Resolve::Ready(mac, mut p) => {
                set_outer_dst_mac(&mut p, &mac);
                self.utx.push(p);
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
                self.counters.tx_drop(DropReason::NoNeighbour, 1);
                pool.put(p);
                return false;
            }
        }
        self.shared.counters.tx_routed.add(1);
        self.counters.tx_bytes.add(len);
        true
    }

    /// Encapsulate one frame and hand it to neighbour resolution.
    #[inline]
    fn send_one(&mut self, mut p: Packet, pool: &mut PacketPool, now: Instant) -> bool {
        if self.opts.routed && p.tunnel().is_none() && p.nexthop() != 0 {
            return self.send_routed(p, pool, now);
        }
        let c = &self.shared.counters;
        let meta: Option<TunnelMeta> = p.take_tunnel();
        let dst = match self.opts.remote_ip {
            FromFlow::Fixed(r) => r,
            FromFlow::Flow => match meta.map(|m| m.dst).filter(|d| *d != 0) {
                Some(d) => d,
                None => {
                    c.tx_no_remote.add(1);
                    self.counters.tx_drop(DropReason::ActionFailed, 1);
                    pool.put(p);
                    return false;
                }
            },
        };
        let vni = match self.opts.key {
            FromFlow::Fixed(k) => k,
            // Only the low 24 bits of tun_id are a VNI (RFC 7348 §5).
            FromFlow::Flow => meta.map_or(0, |m| (m.tun_id & 0x00ff_ffff) as u32),
        };
        let mut o = self.outer;
        o.dst_ip = dst;
        o.vni = vni;
        if !o.df {
            self.ip_id = self.ip_id.wrapping_add(1);
        }
        let inner_len = p.len() as u64;
        if let Err(e) = encap(&mut p, &o, self.ip_mtu, self.ip_id) {
            match e {
                EncapError::Oversize => {
                    c.tx_oversize.add(1);
                    self.counters.tx_drop(DropReason::Oversize, 1);
                }
                EncapError::NoHeadroom | EncapError::TooShort => {
                    c.tx_encap_failed.add(1);
                    self.counters.tx_drop(DropReason::ActionFailed, 1);
                }
            }
            pool.put(p);
            return false;
        }
        // A VTEP in the underlay subnet (local_ip=ADDR/LEN) is on-link;
        // any other goes through gw: its MAC is resolved, not the VTEP's.
        let on_link = self
            .opts
            .local_len
            .is_some_and(|l| (dst ^ self.opts.local_ip) & (u32::MAX << (32 - u32::from(l))) == 0);
        let nh = match self.opts.gw {
            Some(g) if !on_link => g,
            _ => dst,
        };
        match self.neigh.resolve(nh, p, now) {
            Resolve::Ready(mac, mut p) => {
                set_outer_dst_mac(&mut p, &mac);
                self.utx.push(p);
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
                self.counters.tx_errors.add(1);
                pool.put(p);
                return false;
            }
        }
        self.shared.counters.tx_encap.add(1);
        self.counters.tx_bytes.add(inner_len);
        true
    }
}

impl Port for VxlanPort {
    /// The underlay joins the thread too: an AF_XDP underlay takes its frames
    /// from (and binds its socket to) the thread's UMEM.
    fn attach(&mut self, pool: &mut PacketPool) {
        self.underlay.attach(pool);
    }

    /// Every frame the underlay holds goes back to the thread's pool.
    fn detach(&mut self, pool: &mut PacketPool) {
        self.underlay.detach(pool);
    }

    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        let now = Instant::now();
        self.maintain(pool, now);
        let mut urx = std::mem::take(&mut self.urx);
        self.underlay.rx_batch(pool, &mut urx, max);
        let (mut got, mut bytes) = (0usize, 0u64);
        let local = self.opts.local_ip;
        let local_mac = self.outer.src_mac;
        for mut p in urx.drain(..) {
            let c = &self.shared.counters;
            match classify(p.data(), local, self.opts.dst_port) {
                Underlay::Vxlan {
                    header_len,
                    vni,
                    src,
                    dst,
                } if p.data()[0..6] == local_mac => {
                    if !p.pull_head(header_len) {
                        c.rx_bad_vxlan.add(1);
                        pool.put(p);
                        continue;
                    }
                    p.set_tunnel(Some(TunnelMeta {
                        tun_id: u64::from(vni),
                        src,
                        dst,
                    }));
                    bytes += p.len() as u64;
                    c.rx_decap.add(1);
                    out.push(p);
                    got += 1;
                }
                Underlay::Arp { l3 } => self.on_arp(p, l3, pool, now),
                // routed=true: unencapsulated traffic to our MAC goes up
                // without tunnel metadata (tun_id=0, tun_src=0).
                Underlay::NotForUs if self.opts.routed && p.data()[0..6] == local_mac => {
                    bytes += p.len() as u64;
                    c.rx_routed.add(1);
                    out.push(p);
                    got += 1;
                }
                Underlay::Vxlan { .. } | Underlay::NotForUs => {
                    c.rx_not_for_us.add(1);
                    pool.put(p);
                }
                Underlay::Fragment => {
                    c.rx_fragment.add(1);
                    self.counters.rx_drop(DropReason::Malformed, 1);
                    pool.put(p);
                }
                Underlay::BadOuter => {
                    c.rx_bad_outer.add(1);
                    self.counters.rx_drop(DropReason::Malformed, 1);
                    pool.put(p);
                }
                Underlay::BadVxlan => {
                    c.rx_bad_vxlan.add(1);
                    self.counters.rx_drop(DropReason::Malformed, 1);
                    pool.put(p);
                }
            }
        }
        self.urx = urx;
        self.flush_underlay(pool);
        self.publish_neigh(now);
        if got > 0 {
            self.counters.rx_packets.add(got as u64);
            self.counters.rx_bytes.add(bytes);
        }
        got
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let mut sent = 0usize;
        for p in pkts.drain(..) {
            if self.send_one(p, pool, now) {
                sent += 1;
            }
        }
        self.counters.tx_packets.add(sent as u64);
        self.flush_underlay(pool);
        self.publish_neigh(now);
        sent
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }

    /// The underlay's kernel counters (its own counters, dump-tunnels).
    fn publish_stats(&mut self) {
        self.underlay.publish_stats();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::{MemoryPort, MemoryPortHandle};
    use std::collections::BTreeMap;

    const LOCAL: [u8; 4] = [192, 168, 10, 1];
    const REMOTE: [u8; 4] = [192, 168, 10, 2];
    const MAC_L: Mac = [2, 0, 0, 0, 0x10, 1];
    const MAC_R: Mac = [2, 0, 0, 0, 0x10, 2];

    fn port(extra: &[(&str, &str)]) -> (VxlanPort, MemoryPortHandle) {
        let mut m: BTreeMap<String, String> = [
            ("local_ip", "192.168.10.1"),
            ("remote_ip", "flow"),
            ("key", "flow"),
            ("underlay", "u0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        let opts = VxlanOptions::from_map(&m).unwrap();
        let (u, h) = MemoryPort::new(256);
        let cfg = NeighConfig::default();
        (
            VxlanPort::with_underlay(opts, Box::new(u), MAC_L, 1500, cfg),
            h,
        )
    }

    fn inner() -> Vec<u8> {
        crate::packet::FrameBuilder::new()
            .eth([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 2, 2])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 2])
            .icmp_echo(1, 1)
            .payload(&[1u8; 56])
            .build()
    }

    fn tunnelled(meta: Option<TunnelMeta>) -> Packet {
        let mut p = Packet::from_slice(&inner()).unwrap();
        p.set_tunnel(meta);
        p
    }

    fn meta(vni: u64) -> Option<TunnelMeta> {
        Some(TunnelMeta {
            tun_id: vni,
            src: 0,
            dst: u32::from_be_bytes(REMOTE),
        })
    }

    fn arp(op: u16, sha: Mac, spa: [u8; 4], tha: Mac, tpa: [u8; 4], dst: Mac) -> Packet {
        let mut f = [0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&sha);
        f[12..14].copy_from_slice(&[8, 6]);
        f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f[22..28].copy_from_slice(&sha);
        f[28..32].copy_from_slice(&spa);
        f[32..38].copy_from_slice(&tha);
        f[38..42].copy_from_slice(&tpa);
        Packet::from_slice(&f).unwrap()
    }

    fn rx(p: &mut VxlanPort, pool: &mut PacketPool) -> Vec<Packet> {
        let mut out = Vec::new();
        p.rx_batch(pool, &mut out, 32);
        out
    }

    #[test]
    fn first_frame_arps_then_goes_out_encapsulated_when_the_reply_arrives() {
        let (mut p, h) = port(&[]);
        let mut pool = PacketPool::with_capacity(64);
        let mut b = vec![tunnelled(meta(42)), tunnelled(meta(42))];
        assert_eq!(p.tx_batch(&mut b, &mut pool), 2);
        // One ARP request on the underlay, nothing else yet.
        let req = h.capture().expect("an ARP request");
        assert!(h.capture().is_none());
        let r = etherparse::SlicedPacket::from_ethernet(req.data()).unwrap();
        let Some(etherparse::NetSlice::Arp(a)) = r.net else {
            panic!("not ARP: {:?}", req.data())
        };
        assert_eq!(a.operation(), etherparse::ArpOperation::REQUEST);
        assert_eq!(a.sender_protocol_addr(), &LOCAL);
        assert_eq!(a.target_protocol_addr(), &REMOTE);
        assert_eq!(a.sender_hw_addr(), &MAC_L);
        assert_eq!(p.handle().stats().tx_neigh_queued, 2);
        // The reply releases both frames, with the learned MAC.
        h.inject(arp(2, MAC_R, REMOTE, MAC_L, LOCAL, MAC_L))
            .unwrap();
        assert!(rx(&mut p, &mut pool).is_empty());
        for _ in 0..2 {
            let f = h.capture().expect("released frame");
            assert_eq!(&f.data()[0..6], &MAC_R);
            let Underlay::Vxlan {
                vni, header_len, ..
            } = classify(f.data(), u32::from_be_bytes(REMOTE), 4789)
            else {
                panic!("not VXLAN")
            };
            assert_eq!(vni, 42);
            assert_eq!(&f.data()[header_len..], &inner()[..]);
        }
        // Next frame: straight out, VNI 7 from the flow.
        let mut b = vec![tunnelled(meta(7))];
        p.tx_batch(&mut b, &mut pool);
        let f = h.capture().unwrap();
        assert_eq!(be32(f.data(), 46) >> 8, 7);
        let s = p.handle().stats();
        assert_eq!((s.tx_encap, s.arp_requests_sent, s.arp_learned), (3, 1, 1));
        let n = p.handle().neighbours();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].mac, "02:00:00:00:10:02");
    }

    #[test]
    fn answers_arp_for_local_ip_and_learns_the_asker() {
        let (mut p, h) = port(&[]);
        let mut pool = PacketPool::with_capacity(64);
        h.inject(arp(1, MAC_R, REMOTE, [0; 6], LOCAL, [0xff; 6]))
            .unwrap();
        // A request for another address: ignored, not answered.
        h.inject(arp(1, MAC_R, REMOTE, [0; 6], [192, 168, 10, 9], [0xff; 6]))
            .unwrap();
        assert!(rx(&mut p, &mut pool).is_empty());
        let rep = h.capture().expect("ARP reply");
        assert!(h.capture().is_none(), "only one reply");
        let r = etherparse::SlicedPacket::from_ethernet(rep.data()).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &r.link else {
            panic!("not Ethernet II")
        };
        assert_eq!((eth.destination(), eth.source()), (MAC_R, MAC_L));
        let Some(etherparse::NetSlice::Arp(a)) = r.net else {
            panic!()
        };
        assert_eq!(a.operation(), etherparse::ArpOperation::REPLY);
        assert_eq!(
            (a.sender_hw_addr(), a.sender_protocol_addr()),
            (&MAC_L[..], &LOCAL[..])
        );
        assert_eq!(
            (a.target_hw_addr(), a.target_protocol_addr()),
            (&MAC_R[..], &REMOTE[..])
        );
        assert_eq!(p.neigh().peek(u32::from_be_bytes(REMOTE)), Some(MAC_R));
        let s = p.handle().stats();
        assert_eq!(
            (s.arp_replies_sent, s.arp_learned, s.arp_ignored),
            (1, 2, 0)
        );
        // The asker was learned: a frame to it needs no request.
        let mut b = vec![tunnelled(meta(1))];
        p.tx_batch(&mut b, &mut pool);
        assert_eq!(&h.capture().unwrap().data()[0..6], &MAC_R);
    }

    #[test]
    fn decap_sets_tunnel_metadata_and_counts_what_is_not_ours() {
        let (mut p, h) = port(&[]);
        let mut pool = PacketPool::with_capacity(64);
        let o = Outer {
            src_mac: MAC_R,
            dst_mac: MAC_L,
            src_ip: u32::from_be_bytes(REMOTE),
            dst_ip: u32::from_be_bytes(LOCAL),
            vni: 42,
            dst_port: 4789,
            ttl: 64,
            tos: 0,
            df: true,
        };
        let mk = |o: &Outer| {
            let mut q = Packet::from_slice(&inner()).unwrap();
            encap(&mut q, o, 1500, 0).unwrap();
            q
        };
        h.inject(mk(&o)).unwrap();
        let mut other = o;
        other.dst_ip += 1;
        h.inject(mk(&other)).unwrap();
        let mut other_mac = o;
        other_mac.dst_mac = MAC_R;
        h.inject(mk(&other_mac)).unwrap();
        let mut bad = mk(&o);
        bad.data_mut()[42] = 0; // I flag clear
        h.inject(bad).unwrap();
        h.inject(Packet::from_slice(&[0u8; 10]).unwrap()).unwrap();
        let got = rx(&mut p, &mut pool);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data(), &inner()[..]);
        assert_eq!(
            got[0].tunnel(),
            Some(&TunnelMeta {
                tun_id: 42,
                src: u32::from_be_bytes(REMOTE),
                dst: u32::from_be_bytes(LOCAL),
            })
        );
        let s = p.handle().stats();
        assert_eq!(
            (s.rx_decap, s.rx_not_for_us, s.rx_bad_vxlan, s.rx_bad_outer),
            (1, 2, 1, 1)
        );
        let ps = p.counters().snapshot();
        assert_eq!(ps.rx_packets, 1);
        assert_eq!(ps.rx_drop_reasons, vec![("malformed".to_string(), 2)]);
    }

    #[test]
    fn oversize_no_remote_and_fixed_options() {
        let (mut p, h) = port(&[]);
        let mut pool = PacketPool::with_capacity(64);
        // Learn the remote first so frames go straight out.
        h.inject(arp(1, MAC_R, REMOTE, [0; 6], LOCAL, [0xff; 6]))
            .unwrap();
        rx(&mut p, &mut pool);
        while h.capture().is_some() {}
        let big = crate::packet::FrameBuilder::new()
            .eth([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 2, 2])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 2])
            .udp(1, 2)
            .payload(&[0u8; 1500 - 28])
            .build();
        let mut q = Packet::from_slice(&big).unwrap();
        q.set_tunnel(meta(1));
        let mut b = vec![q, tunnelled(None)];
        assert_eq!(p.tx_batch(&mut b, &mut pool), 0);
        assert!(h.capture().is_none());
        let s = p.handle().stats();
        assert_eq!((s.tx_oversize, s.tx_no_remote), (1, 1));
        let ps = p.counters().snapshot();
        assert!(ps.tx_drop_reasons.contains(&("oversize".to_string(), 1)));

        // Fixed remote_ip and key: the port's values win over the flow's.
        let (mut p, h) = port(&[("remote_ip", "192.168.10.2"), ("key", "99")]);
        h.inject(arp(1, MAC_R, REMOTE, [0; 6], LOCAL, [0xff; 6]))
            .unwrap();
        rx(&mut p, &mut pool);
        while h.capture().is_some() {}
        let mut b = vec![tunnelled(None)];
        assert_eq!(p.tx_batch(&mut b, &mut pool), 1);
        let f = h.capture().unwrap();
        assert_eq!(be32(f.data(), 30), u32::from_be_bytes(REMOTE));
        assert_eq!(be32(f.data(), 46) >> 8, 99);
    }

    #[test]
    fn local_prefix_keeps_on_link_vteps_off_the_gateway() {
        let (mut p, h) = port(&[("gw", "192.168.10.254"), ("local_ip", "192.168.10.1/24")]);
        let mut pool = PacketPool::with_capacity(64);
        // 192.168.10.2 is on-link: its own MAC is resolved.
        let mut b = vec![tunnelled(meta(1))];
        p.tx_batch(&mut b, &mut pool);
        assert_eq!(&h.capture().unwrap().data()[38..42], &REMOTE);
        // 192.168.20.3 is not: the gateway's MAC is resolved.
        let mut far = tunnelled(None);
        far.set_tunnel(Some(TunnelMeta {
            tun_id: 1,
            src: 0,
            dst: u32::from_be_bytes([192, 168, 20, 3]),
        }));
        let mut b = vec![far];
        p.tx_batch(&mut b, &mut pool);
        assert_eq!(&h.capture().unwrap().data()[38..42], &[192, 168, 10, 254]);
    }

    #[test]
    fn routed_true_carries_plain_frames_both_ways() {
        let (mut p, h) = port(&[("routed", "true")]);
        let mut pool = PacketPool::with_capacity(64);
        // A frame with a next hop and no tunnel metadata: ARP, then plain.
        let mut plain = Packet::from_slice(&inner()).unwrap();
        plain.set_nexthop(u32::from_be_bytes(REMOTE));
        let mut b = vec![plain];
        assert_eq!(p.tx_batch(&mut b, &mut pool), 1);
        let req = h.capture().expect("ARP request");
        assert_eq!(&req.data()[38..42], &REMOTE);
        h.inject(arp(2, MAC_R, REMOTE, MAC_L, LOCAL, MAC_L))
            .unwrap();
        assert!(rx(&mut p, &mut pool).is_empty());
        let f = h.capture().expect("released frame");
        assert_eq!(
            (&f.data()[0..6], &f.data()[6..12]),
            (&MAC_R[..], &MAC_L[..])
        );
        assert_eq!(&f.data()[12..], &inner()[12..], "not encapsulated");
        // Plain IPv4 to our MAC goes up without tunnel metadata; to another
        // MAC it does not.
        let mut up = inner();
        up[0..6].copy_from_slice(&MAC_L);
        h.inject(Packet::from_slice(&up).unwrap()).unwrap();
        let mut other = inner();
        other[0..6].copy_from_slice(&MAC_R);
        h.inject(Packet::from_slice(&other).unwrap()).unwrap();
        let got = rx(&mut p, &mut pool);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data(), &up[..]);
        assert!(got[0].tunnel().is_none());
        let s = p.handle().stats();
        assert_eq!((s.rx_routed, s.tx_routed, s.rx_not_for_us), (1, 1, 1));
        // Without routed=true the same frame is not sent (no remote VTEP).
        let (mut p, h) = port(&[]);
        let mut plain = Packet::from_slice(&inner()).unwrap();
        plain.set_nexthop(u32::from_be_bytes(REMOTE));
        let mut b = vec![plain];
        assert_eq!(p.tx_batch(&mut b, &mut pool), 0);
        assert!(h.capture().is_none());
        assert_eq!(p.handle().stats().tx_no_remote, 1);
    }

    #[test]
    fn gateway_is_resolved_instead_of_the_remote_vtep() {
        let (mut p, h) = port(&[("gw", "192.168.10.254")]);
        let mut pool = PacketPool::with_capacity(64);
        let mut b = vec![tunnelled(meta(1))];
        p.tx_batch(&mut b, &mut pool);
        let req = h.capture().unwrap();
        assert_eq!(&req.data()[38..42], &[192, 168, 10, 254]);
    }
}
