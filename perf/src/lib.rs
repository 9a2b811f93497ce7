//! ferroswitch benchmarks and harnesses: the fixtures every bench shares.
//!
//! The benches in `perf/benches/` measure the switch's per-packet core
//! (extraction, the caches, slow-path translation, and a whole rx →
//! datapath → tx run over [`LoopPort`]s). They all build their inputs here,
//! so every bench sees the same frames and the same 4-table pipeline, and
//! `docs/perf.md` can describe them once.
//!
//! Nothing here is on a measured path except [`forward_batch`] and
//! [`bare_forward_batch`], which mirror the polling thread's loop
//! (`switch::pmd`) for one port pair: receive at most [`BATCH`] frames, run
//! them through the datapath (or not at all), hand the tx batch to the
//! output port. They never allocate once warm.
//!
//! [`pktgen`] is the engine of the `fs-pktgen` packet generator (an
//! in-kernel XDP transmitter and an XDP frame counter) used by the veth
//! forwarding harness in `perf/veth/`; [`pvp`] generates the flows and parses
//! the statistics of the PVP harness against OVS-DPDK in `perf/pvp/`.
//!
//! [`LoopPort`]: switch::port::memory::LoopPort

pub mod pktgen;
pub mod pvp;

use std::net::Ipv4Addr;
use std::sync::Arc;

use switch::datapath::{Datapath, DatapathConfig, Snapshot, TxBatches};
use switch::flow::{parse_flow, ParseMode, PortNo};
use switch::packet::{FrameBuilder, Packet, PacketPool};
use switch::pipeline::Pipeline;
use switch::port::memory::LoopPort;
use switch::port::Port;

/// Frames received per port per iteration, as the polling thread (`switch::pmd::BATCH`).
pub const BATCH: usize = switch::pmd::BATCH;

/// The port traffic enters on.
pub const IN_PORT: PortNo = 1;
/// The port routed traffic leaves on.
pub const OUT_PORT: PortNo = 2;
/// The bridge's ports, in snapshot (dense index) order.
pub const PORTS: [PortNo; 2] = [IN_PORT, OUT_PORT];

/// The router's MAC: table 1 (L2) only passes frames addressed to it.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// Source MAC of the generated frames.
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The `i`-th destination address of the routing table: 10.(i>>16).(i>>8).(i), offset by one
/// so that no route ends in .0.
pub fn route_dst(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + i + 1)
}

/// The next-hop MAC the route to `route_dst(i)` rewrites the destination to.
pub fn next_hop_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x00, b[0], b[1], b[2], b[3]]
}

/// The 4-table pipeline of the benches, in ovs-ofctl syntax:
///
/// ```text
/// table=0  classify by in_port:   in_port=1 → load:1->reg0, goto_table:1   (miss: drop)
/// table=1  L2:                    dl_dst=ROUTER_MAC → goto_table:2          (miss: drop)
/// table=2  L3, `routes` /32s:     ip,nw_dst=10.x.y.z → dec_ttl, mod_dl_src:ROUTER_MAC,
///                                 mod_dl_dst:<next hop>, load:2->reg1, goto_table:3
/// table=3  output:                reg1=2 → output:2
/// ```
pub fn l3_flows(routes: u32) -> Vec<String> {
    l3_flows_at(0, routes)
}

/// [`l3_flows`] with its tables moved up by `first` (table `t` becomes
/// `first + t`, every `goto_table` with it), so another stage (the ACL
/// benches' conntrack tables) can sit in front of it.
pub fn l3_flows_at(first: u8, routes: u32) -> Vec<String> {
    let t = |n: u8| first + n;
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut v = vec![
        format!(
            "table={},priority=100,in_port={IN_PORT},actions=load:1->NXM_NX_REG0[],goto_table:{}",
            t(0),
            t(1)
        ),
        format!("table={},priority=0,actions=drop", t(0)),
        format!(
            "table={},priority=100,dl_dst={},actions=goto_table:{}",
            t(1),
            mac(ROUTER_MAC),
            t(2)
        ),
        format!("table={},priority=0,actions=drop", t(1)),
        format!(
            "table={},priority=100,reg1={OUT_PORT},actions=output:{OUT_PORT}",
            t(3)
        ),
    ];
    for i in 0..routes {
        v.push(format!(
            "table={},priority=100,ip,nw_dst={},actions=dec_ttl,mod_dl_src:{},mod_dl_dst:{},load:{OUT_PORT}->NXM_NX_REG1[],goto_table:{}",
            t(2),
            route_dst(i),
            mac(ROUTER_MAC),
            mac(next_hop_mac(i)),
            t(3),
        ));
    }
    v
}

/// The first table of the L3 pipeline behind the ACL stage ([`acl_flows`]).
pub const ACL_NEXT_TABLE: u8 = 10;

/// A commit-and-forward ACL in front of the L3 pipeline (tables 0 and 1),
/// what `ferroswitch-policy` emits for allowed traffic:
///
/// ```text
/// table=0  ip,ct_state=-trk            → ct(table=1,zone=1)   (anything else: drop)
/// table=1  ip,ct_state=+trk+new        → ct(commit,zone=1), goto_table:10
///          ip,ct_state=+trk+est        → goto_table:10
///          (anything else: drop)
/// table=10.. the L3 pipeline of [`l3_flows`], moved to start at table 10
/// ```
pub fn acl_flows(routes: u32) -> Vec<String> {
    let next = ACL_NEXT_TABLE;
    let mut v = vec![
        "table=0,priority=100,ip,ct_state=-trk,actions=ct(table=1,zone=1)".to_string(),
        "table=0,priority=0,actions=drop".to_string(),
        format!(
            "table=1,priority=100,ip,ct_state=+trk+new,actions=ct(commit,zone=1),goto_table:{next}"
        ),
        format!("table=1,priority=100,ip,ct_state=+trk+est,actions=goto_table:{next}"),
        "table=1,priority=0,actions=drop".to_string(),
    ];
    v.extend(l3_flows_at(next, routes));
    v
}

/// The L3 pipeline with `routes` routes behind the conntrack ACL ([`acl_flows`]).
pub fn acl_pipeline(routes: u32) -> Pipeline {
    pipeline_from(&acl_flows(routes))
}

/// The reply to [`udp_frame`]`(i)` (from the route's address back to the
/// host), for establishing its connection in the tracker.
pub fn udp_reply_frame(i: u32) -> Vec<u8> {
    FrameBuilder::new()
        .eth(ROUTER_MAC, HOST_MAC)
        .ipv4(route_dst(i), Ipv4Addr::new(192, 168, 0, 1))
        .ttl(64)
        .udp(5001, 1024)
        .build()
}

/// `n` UDP frames to route 0, each a new 5-tuple: source 172.16.x.y, source
/// port from 1024 (for the new-connections bench: one connection per frame).
pub fn new_connection_frames(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|j| {
            FrameBuilder::new()
                .eth(HOST_MAC, ROUTER_MAC)
                .ipv4(
                    Ipv4Addr::new(172, 16, (j >> 8) as u8, j as u8),
                    route_dst(0),
                )
                .ttl(64)
                .udp(1024 + (j >> 16) as u16, 5001)
                .build()
        })
        .collect()
}

/// Build a pipeline from ovs-ofctl flow strings. Panics on a bad flow: the
/// fixtures are fixed text, so that is a bug in this file.
pub fn pipeline_from(flows: &[String]) -> Pipeline {
    let mut p = Pipeline::new();
    for f in flows {
        match parse_flow(f, ParseMode::Add) {
            Ok(spec) => p.add_flow(spec.to_flow()),
            Err(e) => panic!("bench fixture flow {f:?}: {e}"),
        }
    }
    p
}

/// The 4-table L3 pipeline with `routes` /32 routes.
pub fn l3_pipeline(routes: u32) -> Pipeline {
    pipeline_from(&l3_flows(routes))
}

/// A snapshot of `pipeline` over [`PORTS`].
pub fn snapshot(pipeline: Pipeline) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        generation: 1,
        pipeline: Arc::new(pipeline),
        ports: PORTS.to_vec(),
    })
}

/// A 60-byte UDP/IPv4 frame from the host to the router, for route `i`.
pub fn udp_frame(i: u32) -> Vec<u8> {
    FrameBuilder::new()
        .eth(HOST_MAC, ROUTER_MAC)
        .ipv4(Ipv4Addr::new(192, 168, 0, 1), route_dst(i))
        .ttl(64)
        .udp(1024, 5001)
        .build()
}

/// A VLAN-tagged (vid 100, pcp 3) TCP/IPv4 SYN frame.
pub fn vlan_tcp_frame() -> Vec<u8> {
    FrameBuilder::new()
        .eth(HOST_MAC, ROUTER_MAC)
        .vlan(100, 3)
        .ipv4(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(10, 0, 0, 1))
        .tcp(40000, 80, 0x002)
        .build()
}

/// A UDP/IPv6 frame.
pub fn ipv6_udp_frame() -> Vec<u8> {
    FrameBuilder::new()
        .eth(HOST_MAC, ROUTER_MAC)
        .ipv6(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap_or(std::net::Ipv6Addr::LOCALHOST),
            "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap_or(std::net::Ipv6Addr::LOCALHOST),
        )
        .udp(1024, 5001)
        .build()
}

/// `flows` distinct UDP frames (routes 0..flows).
pub fn udp_frames(flows: u32) -> Vec<Vec<u8>> {
    (0..flows).map(udp_frame).collect()
}

/// A datapath configuration for the benches: the defaults, except that the
/// EMC inserts every candidate (so a warm run measures steady-state hits
/// without waiting for the 1-in-100 insertion lottery).
pub fn bench_config() -> DatapathConfig {
    DatapathConfig {
        emc_insert_inv_prob: 1,
        ..DatapathConfig::default()
    }
}

/// Everything one polling thread owns for a two-port run.
#[derive(Debug)]
pub struct Rig {
    /// Receives the replayed frames.
    pub rx_port: LoopPort,
    /// Sinks the forwarded frames.
    pub tx_port: LoopPort,
    /// The thread's buffers.
    pub pool: PacketPool,
    /// The rx batch.
    pub batch: Vec<Packet>,
    /// The datapath (unused by the bare forward).
    pub dp: Datapath,
    /// Per-port tx batches.
    pub tx: TxBatches,
}

impl Rig {
    /// A rig replaying `frames` into a datapath over `pipeline`.
    pub fn new(frames: Vec<Vec<u8>>, pipeline: Pipeline) -> Rig {
        let snap = snapshot(pipeline);
        Rig {
            rx_port: LoopPort::new(frames),
            tx_port: LoopPort::new(Vec::new()),
            pool: PacketPool::with_capacity(4 * BATCH),
            batch: Vec::with_capacity(BATCH),
            dp: Datapath::new(snap, bench_config()),
            tx: TxBatches::new(PORTS.len(), 1024),
        }
    }

    /// Run `n` batches through the datapath (warms the caches).
    pub fn warm(&mut self, n: usize) {
        for _ in 0..n {
            forward_batch(self);
        }
    }
}

/// The simplest switch pipeline: one flow, `in_port=1,actions=output:2`
/// (BENCH.md's "in_port forwarding" anchor). Through the datapath it costs
/// extraction, a cache hit and an output: the like-for-like baseline for the
/// 4-table pipeline on cache hits.
pub fn in_port_pipeline() -> Pipeline {
    pipeline_from(&[format!(
        "table=0,in_port={IN_PORT},actions=output:{OUT_PORT}"
    )])
}

/// One polling-loop iteration for one port pair: rx up to [`BATCH`] frames
/// from `rx_port`, `Datapath::process_batch`, tx the output port's batch to
/// `tx_port`. Returns the frames transmitted.
#[inline]
pub fn forward_batch(r: &mut Rig) -> usize {
    r.rx_port.rx_batch(&mut r.pool, &mut r.batch, BATCH);
    r.dp.process_batch(IN_PORT, &mut r.batch, &mut r.tx, &mut r.pool);
    let mut sent = 0;
    if let Some(q) = r.tx.queue_mut(1) {
        sent = r.tx_port.tx_batch(q, &mut r.pool);
    }
    // Anything routed elsewhere (nothing, in these fixtures) goes back too.
    r.tx.clear_into(&mut r.pool);
    sent
}

/// The same iteration without a switch: rx up to [`BATCH`] frames from
/// `rx_port` and tx them straight to `tx_port` (the port-to-port floor).
#[inline]
pub fn bare_forward_batch(r: &mut Rig) -> usize {
    r.rx_port.rx_batch(&mut r.pool, &mut r.batch, BATCH);
    r.tx_port.tx_batch(&mut r.batch, &mut r.pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::flow::FlowKey;
    use switch::packet::extract;

    #[test]
    fn pipeline_routes_and_rewrites() {
        let mut r = Rig::new(udp_frames(4), l3_pipeline(4));
        let sent: usize = (0..4).map(|_| forward_batch(&mut r)).sum();
        assert_eq!(sent, 4 * BATCH, "every frame is routed to port 2");
        let s = r.dp.stats();
        assert_eq!(s.total_drops(), 0);
        assert_eq!(s.misses, 4, "one upcall per route");
        assert_eq!(r.dp.megaflows().len(), 4);
        // The route's actions really ran: check one forwarded frame.
        r.rx_port.rx_batch(&mut r.pool, &mut r.batch, 1);
        r.dp.process_batch(IN_PORT, &mut r.batch, &mut r.tx, &mut r.pool);
        let out = &r.tx.queue(1)[0];
        let mut k = FlowKey::ZERO;
        extract(out.data(), OUT_PORT, &mut k);
        assert_eq!(k.nw_ttl, 63, "dec_ttl");
        assert_eq!(k.dl_src, ROUTER_MAC);
        assert_eq!(k.dl_dst, next_hop_mac(0));
        r.tx.clear_into(&mut r.pool);
    }

    #[test]
    fn bare_forward_moves_whole_batches() {
        let mut r = Rig::new(udp_frames(1), l3_pipeline(1));
        assert_eq!(bare_forward_batch(&mut r), BATCH);
        assert_eq!(r.pool.available(), 4 * BATCH, "no buffer leaked");
    }

    #[test]
    fn fixture_frames_are_what_the_benches_claim() {
        assert_eq!(udp_frame(0).len(), 60);
        let mut k = FlowKey::ZERO;
        extract(&vlan_tcp_frame(), 1, &mut k);
        assert_eq!(k.vlan_tci & 0x0fff, 100);
        assert_eq!(k.nw_proto, 6);
        extract(&ipv6_udp_frame(), 1, &mut k);
        assert_eq!(k.dl_type, 0x86dd);
        assert_eq!(k.nw_proto, 17);
    }
}
