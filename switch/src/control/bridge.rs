//! A bridge as the control thread sees it: the master copy of the flow
//! tables and the port configuration, the polling thread it feeds, and the
//! request handler behind the control socket.
//!
//! Every change follows one path: validate and apply to a *copy* of the
//! tables (all or nothing), persist the new state atomically, then publish a
//! new immutable [`Snapshot`] that the polling thread picks up between
//! batches. A request that fails at any step changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;

use super::proto::{
    BundleOp, ErrorBody, ErrorCode, FlowEntry, PortEntry, Reply, Request, TableEntry,
};
use super::server::Handler;
use super::state::{BridgeState, PortConfig, State, StateStore, STATE_VERSION};
use crate::datapath::{DatapathConfig, Snapshot};
use crate::flow::format::{format_actions, format_flow, format_flow_stats, format_match};
use crate::flow::parse::{parse_flow, ParseError, ParseMode};
use crate::flow::trace_spec::parse_packet;
use crate::flow::{ofport, Flow, PortNo};
use crate::packet::Packet;
use crate::pipeline::l2::{self, MacTable};
use crate::pipeline::table::{FlowMod, FlowModCommand};
use crate::pipeline::Pipeline;
use crate::pmd::{PmdConfig, PmdPerf, PmdSet, PmdStats};
use crate::port::memory::{MemoryPort, MemoryPortHandle};
use crate::port::tap::{TapError, TapOptions, TapPort};
use crate::port::vhost_user::{VhostOptions, VhostShared, VhostUserPort};
use crate::port::{DropReason, Port, PortCounters, PortStats};
use std::sync::atomic::{AtomicBool, Ordering};

/// How long a request waits for the polling thread to acknowledge a sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a polling thread has to hand back one port queue in a
/// rebalance: an operator's command, not a hot path, and closing an AF_XDP
/// socket waits for the kernel, which a loaded machine can stretch.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Port types this build can create.
pub const PORT_TYPES: &[&str] = &[
    "memory",
    "tap",
    "vhost_user",
    #[cfg(feature = "afxdp")]
    "afxdp",
    #[cfg(feature = "afxdp")]
    "vxlan",
];

struct PortRt {
    cfg: PortConfig,
    /// One per rx queue (one port object per queue); summed for reports.
    counters: Vec<Arc<PortCounters>>,
    added: Instant,
    memory: Option<MemoryPortHandle>,
    /// vhost_user ports: link state, ring error counters, control thread.
    vhost: Option<Arc<VhostShared>>,
    /// The backend's link flags (false once its interface vanished or went down).
    links: Vec<Arc<AtomicBool>>,
    /// The kernel interface behind the port, checked when reporting its state.
    ifname: Option<String>,
    /// The control view of a vxlan port (counters, neighbour table).
    tunnel: Option<crate::tunnel::VxlanHandle>,
    /// A routed uplink (`ip=` on an afxdp port): node address, ARP cache.
    uplink: Option<crate::route::uplink::UplinkHandle>,
    /// The port resolves route next hops itself (routed uplink, or a
    /// `routed=true` vxlan port): see `RouteSet::set_resolver`.
    resolves: bool,
}

/// A port's state as `show` and `dump-ports` report it: `up`, or `down` with why.
fn port_state(p: &PortRt) -> (String, Option<String>) {
    let down = |why: String| ("down".to_string(), Some(why));
    if let Some(ifname) = &p.ifname {
        // The port's own view first (an AF_XDP socket unbound by a vanished
        // interface), then the kernel's (ip link / operstate), as OVS's
        // netdev_get_flags / carrier decide ofport state LINK_DOWN.
        let sys = std::path::Path::new("/sys/class/net").join(ifname);
        if !sys.exists() {
            return down(format!("interface {ifname} is gone"));
        }
        let oper = std::fs::read_to_string(sys.join("operstate")).unwrap_or_default();
        if matches!(oper.trim(), "down" | "lowerlayerdown" | "notpresent") {
            return down(format!("interface {ifname} is {}", oper.trim()));
        }
    }
    if p.links.iter().any(|l| !l.load(Ordering::Relaxed)) {
        return down("the port lost its interface".to_string());
    }
    if let Some(v) = &p.vhost {
        if !v.link_up() {
            return down("no vhost-user front-end with a running queue".to_string());
        }
    }
    ("up".to_string(), None)
}

/// One report over the counters of every queue of a port.
fn sum_stats(counters: &[Arc<PortCounters>]) -> PortStats {
    let mut t = PortStats::default();
    let merge = |into: &mut Vec<(String, u64)>, from: &[(String, u64)]| {
        for (r, n) in from {
            match into.iter_mut().find(|(x, _)| x == r) {
                Some((_, m)) => *m += n,
                None => into.push((r.clone(), *n)),
            }
        }
    };
    for c in counters {
        // Destructured in full so a new counter cannot be left out of the sum.
        let PortStats {
            rx_packets,
            rx_bytes,
            tx_packets,
            tx_bytes,
            rx_errors,
            tx_errors,
            rx_dropped,
            tx_dropped,
            rx_malformed,
            rx_truncated,
            tx_zerocopy,
            tx_copied,
            tx_kicks,
            rx_wakeups,
            rx_drop_reasons,
            tx_drop_reasons,
        } = c.snapshot();
        t.rx_packets += rx_packets;
        t.rx_bytes += rx_bytes;
        t.tx_packets += tx_packets;
        t.tx_bytes += tx_bytes;
        t.rx_errors += rx_errors;
        t.tx_errors += tx_errors;
        t.rx_dropped += rx_dropped;
        t.tx_dropped += tx_dropped;
        t.rx_malformed += rx_malformed;
        t.rx_truncated += rx_truncated;
        t.tx_zerocopy += tx_zerocopy;
        t.tx_copied += tx_copied;
        t.tx_kicks += tx_kicks;
        t.rx_wakeups += rx_wakeups;
        merge(&mut t.rx_drop_reasons, &rx_drop_reasons);
        merge(&mut t.tx_drop_reasons, &tx_drop_reasons);
    }
    // Reasons in DropReason order, as a single port's snapshot lists them.
    let order = |r: &str| DropReason::ALL.iter().position(|d| d.name() == r);
    t.rx_drop_reasons.sort_by_key(|(r, _)| order(r));
    t.tx_drop_reasons.sort_by_key(|(r, _)| order(r));
    t
}

/// One bridge and its polling thread.
pub struct Bridge {
    name: String,
    pipeline: Pipeline,
    ports: BTreeMap<PortNo, PortRt>,
    generation: u64,
    /// The newest generation the polling thread is known to have loaded.
    pmd_generation: u64,
    published: Arc<ArcSwap<Snapshot>>,
    pmd: PmdSet,
    store: StateStore,
    /// L2 learning for NORMAL: the one writable MAC table.
    fdb: MacTable,
    /// The MAC table generation last published to the polling threads.
    fdb_published: u64,
    /// Time base of the MAC table's ages.
    fdb_epoch: Instant,
    /// `set-bridge` settings, persisted as given.
    other_config: BTreeMap<String, String>,
    /// XDP offload of flows between `xdp-offload=true` AF_XDP ports.
    #[cfg(feature = "afxdp")]
    offload: crate::port::afxdp::offload::Offloader,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("name", &self.name)
            .field("ports", &self.ports.len())
            .finish()
    }
}

fn bad_flow(e: ParseError, input: &str, index: Option<usize>) -> ErrorBody {
    ErrorBody {
        code: ErrorCode::BadFlow,
        message: e.message.clone(),
        input: Some(input.to_string()),
        offset: Some(e.offset),
        index,
    }
}

/// The text a flow is persisted as: ovs-ofctl `--no-stats` syntax, which
/// parses back (ParseMode::Add) to the same flow (a property test holds the
/// formatter to that).
pub fn flow_to_text(f: &Flow) -> String {
    format_flow(f)
}

impl Bridge {
    /// Create the bridge `name`, restore its state from `store`, and start its
    /// polling thread (one, unpinned).
    pub fn start(name: &str, store: StateStore, cfg: DatapathConfig) -> Result<Bridge, String> {
        Bridge::start_with_pmds(name, store, cfg, &PmdConfig::default())
    }

    /// Like [`Bridge::start`] with the polling threads `pcfg` asks for.
    pub fn start_with_pmds(
        name: &str,
        store: StateStore,
        cfg: DatapathConfig,
        pcfg: &PmdConfig,
    ) -> Result<Bridge, String> {
        let state = store.load().map_err(|e| format!("loading state: {e}"))?;
        let published = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let pmd = PmdSet::spawn(published.clone(), cfg, pcfg)
            .map_err(|e| format!("starting polling threads: {e}"))?;
        let mut b = Bridge {
            name: name.to_string(),
            pipeline: Pipeline::new(),
            ports: BTreeMap::new(),
            generation: 0,
            pmd_generation: 0,
            published,
            pmd,
            store,
            fdb: MacTable::default(),
            fdb_published: 0,
            fdb_epoch: Instant::now(),
            other_config: BTreeMap::new(),
            #[cfg(feature = "afxdp")]
            offload: Default::default(),
        };
        if let Some(bs) = state.bridges.get(name) {
            let (aging, size) = parse_bridge_settings(&bs.other_config)
                .map_err(|e| format!("restoring bridge settings: {}", e.message))?;
            b.apply_bridge_settings(aging, size);
            let icmp = parse_icmp_settings(&bs.other_config, *b.pipeline.icmp_errors())
                .map_err(|e| format!("restoring bridge settings: {}", e.message))?;
            b.pipeline.set_icmp_errors(icmp);
            let emc = parse_emc_setting(&bs.other_config)
                .map_err(|e| format!("restoring bridge settings: {}", e.message))?;
            b.pipeline.set_emc_insert_inv_prob(emc);
            parse_ct_settings(&bs.other_config)
                .map_err(|e| format!("restoring bridge settings: {}", e.message))?
                .apply(b.pipeline.conntrack());
            b.other_config = bs.other_config.clone();
            for pc in &bs.ports {
                // A port whose kernel interface vanished while switchd was
                // down (a pod deleted, a node rebooted) must not keep switchd
                // from starting: like OVS, which keeps running and logs
                // "could not open network device", we start without that port
                // (its flows stay; the next state write drops the port). Any
                // other restore error (bad type, bad options) stays fatal.
                let gone = pc
                    .options
                    .get("ifname")
                    .is_some_and(|i| !std::path::Path::new("/sys/class/net").join(i).exists());
                match b.create_port(pc.clone()) {
                    Ok(_) => {}
                    Err(e) if gone => eprintln!(
                        "switchd: bridge {name}: port {} not restored: {}",
                        pc.name, e.message
                    ),
                    Err(e) => return Err(format!("restoring port {}: {}", pc.name, e.message)),
                }
            }
            // Groups first: flows may name them (OFPBAC_BAD_OUT_GROUP otherwise).
            // Chained groups were saved in id order; retry until no progress.
            let mut pending: Vec<&String> = bs.groups.iter().collect();
            while !pending.is_empty() {
                let before = pending.len();
                let mut last_err = None;
                pending.retain(|text| {
                    let res = crate::group::parse_group_mod(text, crate::group::GroupCommand::Add)
                        .and_then(|gm| b.pipeline.apply_group_mod(&gm));
                    match res {
                        Ok(_) => false,
                        Err(e) => {
                            last_err = Some(format!("restoring group {text:?}: {e}"));
                            true
                        }
                    }
                });
                if pending.len() == before {
                    return Err(last_err.unwrap_or_default());
                }
            }
            let mut mods = Vec::new();
            for (i, text) in bs.flows.iter().enumerate() {
                let spec = parse_flow(text, ParseMode::Add)
                    .map_err(|e| format!("restoring flow {} {text:?}: {}", i + 1, e.message))?;
                mods.push(FlowMod {
                    command: FlowModCommand::Add,
                    spec,
                });
            }
            b.pipeline
                .apply(&mods)
                .map_err(|e| format!("restoring flows: {e}"))?;
            let routes = crate::route::RouteSet::from_state(&bs.routing)
                .map_err(|e| format!("restoring routes: {e} ({:?})", e.token))?;
            b.pipeline.set_routes(routes);
            b.mark_resolvers();
        }
        b.publish();
        Ok(b)
    }

    /// Tell the route action which ports resolve next hops themselves
    /// (routed uplinks): recomputed from the ports after every port change.
    fn mark_resolvers(&mut self) {
        let mut rs = self.pipeline.routes().clone();
        let mut changed = false;
        for (no, p) in &self.ports {
            if rs.resolves(*no) != p.resolves {
                rs.set_resolver(*no, p.resolves);
                changed = true;
            }
        }
        let stale: Vec<u32> = rs
            .resolver_ports()
            .filter(|n| !self.ports.contains_key(n))
            .collect();
        for n in stale {
            rs.set_resolver(n, false);
            changed = true;
        }
        if changed {
            self.pipeline.set_routes(rs);
        }
    }

    /// The bridge name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn publish(&mut self) {
        // Any published change may change an offload decision: credit the
        // offloaded entries' statistics and remove them (offload.rs).
        #[cfg(feature = "afxdp")]
        self.offload.flush(&self.pipeline);
        self.generation += 1;
        let snap = Snapshot {
            generation: self.generation,
            pipeline: Arc::new(self.pipeline.clone()),
            ports: self.ports.keys().copied().collect(),
        };
        self.published.store(Arc::new(snap));
    }

    fn state(&self, pipeline: &Pipeline) -> State {
        let mut bridges = BTreeMap::new();
        bridges.insert(
            self.name.clone(),
            BridgeState {
                ports: self.ports.values().map(|p| p.cfg.clone()).collect(),
                flows: pipeline.rules().map(|r| flow_to_text(&r.flow)).collect(),
                groups: pipeline
                    .groups()
                    .iter()
                    .map(|g| crate::group::format_group(&g.desc))
                    .collect(),
                other_config: self.other_config.clone(),
                routing: pipeline.routes().to_state(),
            },
        );
        State {
            version: STATE_VERSION,
            bridges,
        }
    }

    /// Persist `pipeline` (with the current ports) and make it current.
    fn commit(&mut self, pipeline: Pipeline) -> Result<(), ErrorBody> {
        self.store.save(&self.state(&pipeline)).map_err(|e| {
            ErrorBody::new(
                ErrorCode::StateIo,
                format!("saving state: {e}; change not applied"),
            )
        })?;
        self.pipeline = pipeline;
        self.publish();
        Ok(())
    }

    fn apply_mods(
        &mut self,
        mods: &[(FlowModCommand, &str, ParseMode)],
    ) -> Result<serde_json::Value, ErrorBody> {
        let mut fms = Vec::with_capacity(mods.len());
        for (i, (cmd, text, mode)) in mods.iter().enumerate() {
            let idx = (mods.len() > 1).then_some(i);
            let spec = parse_flow(text, *mode).map_err(|e| bad_flow(e, text, idx))?;
            fms.push(FlowMod {
                command: *cmd,
                spec,
            });
        }
        let mut next = self.pipeline.clone();
        let out = next.apply(&fms).map_err(|e| {
            let mut b = ErrorBody::new(ErrorCode::BadFlowMod, e.to_string());
            let i = e.index();
            b.input = mods.get(i).map(|m| m.1.to_string());
            b.index = (mods.len() > 1).then_some(i);
            b
        })?;
        self.commit(next)?;
        Ok(serde_json::to_value(out).unwrap_or(json!({})))
    }

    fn port_by(&self, key: &str) -> Result<PortNo, ErrorBody> {
        if let Some((no, _)) = self.ports.iter().find(|(_, p)| p.cfg.name == key) {
            return Ok(*no);
        }
        if let Ok(n) = key.parse::<PortNo>() {
            if self.ports.contains_key(&n) {
                return Ok(n);
            }
        }
        Err(ErrorBody::new(
            ErrorCode::UnknownPort,
            format!("bridge {} has no port {key:?}", self.name),
        )
        .with_input(key))
    }

    fn create_port(&mut self, cfg: PortConfig) -> Result<(), ErrorBody> {
        let mut vhost = None;
        // Only the afxdp arm has link flags to push.
        #[cfg_attr(not(feature = "afxdp"), allow(unused_mut))]
        let mut links = Vec::new();
        let mut ifname = None;
        #[allow(unused_mut)]
        let mut tunnel = None;
        #[allow(unused_mut)]
        let mut uplink = None;
        #[allow(unused_mut)]
        let mut resolves = false;
        // AF_XDP sockets: the thread each queue goes to and the UMEM frames
        // its fill ring takes there (PmdSet::afxdp_place, the UMEM budget).
        #[allow(unused_mut)]
        let mut placed: Option<Vec<(usize, u32)>> = None;
        // One port object per rx queue (several for a multi-queue afxdp or vhost_user port).
        let (ports, memory): (Vec<Box<dyn Port>>, Option<MemoryPortHandle>) = match cfg
            .port_type
            .as_str()
        {
            "memory" => {
                let depth = match cfg.options.get("depth") {
                    None => 1024,
                    Some(d) => d
                        .parse::<usize>()
                        .ok()
                        .filter(|d| (1..=1 << 20).contains(d))
                        .ok_or_else(|| {
                            ErrorBody::new(
                                ErrorCode::BadPortConfig,
                                format!("depth must be 1..1048576, got {d:?}"),
                            )
                        })?,
                };
                if let Some(k) = cfg.options.keys().find(|k| k.as_str() != "depth") {
                    return Err(ErrorBody::new(
                        ErrorCode::BadPortConfig,
                        format!("memory ports take no option {k:?} (known: depth)"),
                    ));
                }
                let (p, h) = MemoryPort::new(depth);
                (vec![Box::new(p)], Some(h))
            }
            #[cfg(feature = "afxdp")]
            "afxdp" => {
                use crate::port::afxdp::{AfxdpOptions, AfxdpPort};
                let bad = |e: String| ErrorBody::new(ErrorCode::BadPortConfig, e);
                // `ip=ADDR/LEN`: the node's address on this uplink (route::uplink).
                let mut amap = cfg.options.clone();
                let node_addr = match amap.remove("ip") {
                    None => None,
                    Some(v) => Some(crate::route::uplink::NodeAddr::parse(&v).map_err(bad)?),
                };
                let opts = AfxdpOptions::from_map(&amap).map_err(bad)?;
                if node_addr.is_some() && opts.n_rxq > 1 {
                    return Err(bad(
                        "afxdp: ip= (a routed uplink, one ARP cache) needs n_rxq=1".into(),
                    ));
                }
                if opts.n_rxq > 1 {
                    // OVS netdev-afxdp: n_rxq beyond the interface's channels is refused.
                    if let Some(have) = rx_channels(&opts.ifname).filter(|h| opts.n_rxq > *h) {
                        return Err(bad(format!(
                            "afxdp: n_rxq={} but {} has {have} rx queue{} (ethtool -l {}; a veth takes numrxqueues N when created)",
                            opts.n_rxq,
                            opts.ifname,
                            if have == 1 { "" } else { "s" },
                            opts.ifname
                        )));
                    }
                }
                if crate::port::afxdp::xdp_prog::ifindex(&opts.ifname).is_none() {
                    return Err(bad(crate::port::afxdp::AfxdpError::NoSuchInterface(
                        opts.ifname.clone(),
                    )
                    .to_string()));
                }
                let mut ps: Vec<Box<dyn Port>> = Vec::new();
                let queues = opts.per_queue();
                // Every queue's fill ring must fit in its thread's UMEM, or
                // the port is refused (it would drop all it receives).
                let needs: Vec<u32> = queues
                    .iter()
                    .map(|o| self.pmd.afxdp_fill_need(o.n_rxq_desc))
                    .collect();
                let targets = self
                    .pmd
                    .afxdp_place(&needs)
                    .map_err(|e| bad(format!("afxdp: {}: {e}", opts.ifname)))?;
                placed = Some(targets.iter().copied().zip(needs).collect());
                for (o, &t) in queues.iter().zip(&targets) {
                    // Each queue's socket on the UMEM of the thread that will
                    // poll it (add_rxq hands queues out in this order), so
                    // AF_XDP ports of one thread forward without a copy.
                    // An error drops the sockets already opened (and their claims).
                    let umem = self.pmd.afxdp_umem(t).map_err(|e| bad(e.to_string()))?;
                    let p = AfxdpPort::open_shared(o, &umem).map_err(|e| bad(e.to_string()))?;
                    links.push(p.link_state());
                    ps.push(Box::new(p));
                }
                ifname = Some(opts.ifname.clone());
                if let Some(addr) = node_addr {
                    let path = format!("/sys/class/net/{}/address", opts.ifname);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| bad(format!("ip=: reading {path}: {e}")))?;
                    let mac = crate::route::parse_mac(text.trim())
                        .ok_or_else(|| bad(format!("ip=: bad MAC {:?} in {path}", text.trim())))?;
                    ps = ps
                        .into_iter()
                        .map(|p| {
                            let u = crate::route::uplink::UplinkPort::new(
                                p,
                                addr,
                                mac,
                                crate::tunnel::NeighConfig::default(),
                            );
                            uplink = Some(u.handle());
                            Box::new(u) as Box<dyn Port>
                        })
                        .collect();
                    resolves = true;
                }
                (ps, None)
            }
            #[cfg(feature = "afxdp")]
            "vxlan" => {
                use crate::tunnel::{VxlanOptions, VxlanPort};
                let bad = |e: String| ErrorBody::new(ErrorCode::BadPortConfig, e);
                let opts = VxlanOptions::from_map(&cfg.options).map_err(bad)?;
                if let Some((_, other)) = self.ports.iter().find(|(_, p)| {
                    p.cfg.options.get("underlay") == Some(&opts.underlay)
                        || p.cfg.options.get("ifname") == Some(&opts.underlay)
                }) {
                    return Err(bad(format!(
                        "underlay {:?} is already used by port {:?}",
                        opts.underlay, other.cfg.name
                    )));
                }
                // On the UMEM of the thread that will poll it (see the afxdp
                // arm), within that UMEM's budget (a default 2048 fill ring).
                let need = self
                    .pmd
                    .afxdp_fill_need(crate::port::afxdp::options::DEFAULT_RING_DESCS);
                let target = self
                    .pmd
                    .afxdp_place(&[need])
                    .map_err(|e| bad(format!("vxlan: underlay {}: {e}", opts.underlay)))?
                    .first()
                    .copied()
                    .unwrap_or(0);
                placed = Some(vec![(target, need)]);
                let umem = self
                    .pmd
                    .afxdp_umem(target)
                    .map_err(|e| bad(e.to_string()))?;
                resolves = opts.routed;
                let p = VxlanPort::open(opts, &umem).map_err(bad)?;
                tunnel = Some(p.handle());
                (vec![Box::new(p)], None)
            }
            "tap" => {
                let bad = |e: TapError| ErrorBody::new(ErrorCode::BadPortConfig, e.to_string());
                let opts = TapOptions::from_map(&cfg.options).map_err(bad)?;
                let p = TapPort::open(&cfg.name, &opts).map_err(bad)?;
                ifname = Some(p.ifname().to_string());
                (vec![Box::new(p)], None)
            }
            "vhost_user" => {
                let bad = |e: String| ErrorBody::new(ErrorCode::BadPortConfig, e);
                let opts = VhostOptions::from_map(&cfg.options).map_err(bad)?;
                // One queue object per queue pair (n_rxq), spread over the
                // polling threads like afxdp queues; all share one connection.
                let qs = VhostUserPort::open(&cfg.name, &opts).map_err(|e| bad(e.to_string()))?;
                vhost = qs.first().map(|p| p.status());
                let ps: Vec<Box<dyn Port>> = qs
                    .into_iter()
                    .map(|p| Box::new(p) as Box<dyn Port>)
                    .collect();
                (ps, None)
            }
            other => {
                return Err(ErrorBody::new(
                    ErrorCode::BadPortConfig,
                    format!(
                        "unknown port type {other:?} (this build supports: {})",
                        PORT_TYPES.join(", ")
                    ),
                )
                .with_input(other.to_string()))
            }
        };
        let counters: Vec<Arc<PortCounters>> = ports.iter().map(|p| p.counters().clone()).collect();
        // A vxlan port's underlay socket is bound to its thread's UMEM:
        // rebalance leaves it where it is. An afxdp port's socket moves to
        // the target thread's UMEM (Port::move_to_umem), so it is not pinned.
        self.pmd
            .set_pinned(cfg.ofport, matches!(cfg.port_type.as_str(), "vxlan"));
        for (q, port) in (0u32..).zip(ports) {
            let added = match placed.as_ref().and_then(|p| p.get(q as usize)) {
                Some(&(t, need)) => self.pmd.add_rxq_on(cfg.ofport, q, port, t, need),
                None => self.pmd.add_rxq(cfg.ofport, q, port),
            };
            if added.is_err() {
                if let Some(v) = &vhost {
                    v.shutdown();
                }
                if q > 0 {
                    self.pmd.del_port(cfg.ofport);
                }
                return Err(ErrorBody::new(
                    ErrorCode::Busy,
                    "polling thread command queue is full; retry",
                ));
            }
        }
        self.ports.insert(
            cfg.ofport,
            PortRt {
                cfg,
                counters,
                added: Instant::now(),
                memory,
                vhost,
                links,
                ifname,
                tunnel,
                uplink,
                resolves,
            },
        );
        self.mark_resolvers();
        Ok(())
    }

    fn add_port(
        &mut self,
        name: String,
        port_type: String,
        ofport: Option<u32>,
        options: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ErrorBody> {
        if name.is_empty()
            || name.len() > 64
            || name
                .chars()
                .any(|c| c.is_whitespace() || c == ',' || c == '/')
        {
            return Err(ErrorBody::new(
                ErrorCode::BadPortConfig,
                "port names are 1-64 characters without spaces, commas or slashes",
            )
            .with_input(name));
        }
        if self.ports.values().any(|p| p.cfg.name == name) {
            return Err(ErrorBody::new(
                ErrorCode::PortExists,
                format!("port {name:?} already exists"),
            )
            .with_input(name));
        }
        let no = match ofport {
            Some(n) if n == 0 || n >= ofport::MAX => {
                return Err(ErrorBody::new(
                    ErrorCode::BadPortConfig,
                    format!("ofport must be 1..{}, got {n}", ofport::MAX - 1),
                ))
            }
            Some(n) if self.ports.contains_key(&n) => {
                return Err(ErrorBody::new(
                    ErrorCode::PortExists,
                    format!("ofport {n} is taken by {:?}", self.ports[&n].cfg.name),
                ))
            }
            Some(n) => n,
            // Like OVS's bridge-internal port: a tap port named after the
            // bridge is the bridge's LOCAL port (`output:LOCAL`, `in_port=LOCAL`).
            None if port_type == "tap" && name == self.name => {
                if let Some(p) = self.ports.get(&ofport::LOCAL) {
                    return Err(ErrorBody::new(
                        ErrorCode::PortExists,
                        format!("the LOCAL port is taken by {:?}", p.cfg.name),
                    ));
                }
                ofport::LOCAL
            }
            None => (1..ofport::MAX)
                .find(|n| !self.ports.contains_key(n))
                .unwrap_or(ofport::MAX - 1),
        };
        let cfg = PortConfig {
            name,
            port_type,
            ofport: no,
            options,
        };
        self.create_port(cfg)?;
        if let Err(e) = self.store.save(&self.state(&self.pipeline)) {
            self.pmd.del_port(no);
            self.ports.remove(&no);
            return Err(ErrorBody::new(
                ErrorCode::StateIo,
                format!("saving state: {e}; port not added"),
            ));
        }
        self.publish();
        Ok(json!({ "ofport": no }))
    }

    fn del_port(&mut self, name: &str) -> Result<serde_json::Value, ErrorBody> {
        let no = self
            .ports
            .iter()
            .find(|(_, p)| p.cfg.name == name)
            .map(|(n, _)| *n)
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::UnknownPort,
                    format!("bridge {} has no port {name:?}", self.name),
                )
                .with_input(name)
            })?;
        if !self.pmd.del_port(no) {
            return Err(ErrorBody::new(
                ErrorCode::Busy,
                "polling thread command queue is full; retry",
            ));
        }
        // The polling threads drop the port object (an AF_XDP socket, its
        // claim on the queue and its XDP program) when they read DelPort:
        // wait for that, so del-port returns with the interface released
        // and an add-port right after it finds the queue free.
        self.pmd.sync(SYNC_TIMEOUT);
        let rt = self.ports.remove(&no);
        if let Some(v) = rt.as_ref().and_then(|r| r.vhost.as_ref()) {
            // Close the connection and remove the socket now, so the same
            // path can be added again at once.
            v.shutdown();
        }
        // OVS flushes a deleted port's MACs (mac_learning_flush_port... via
        // bundle removal): traffic to them floods again.
        self.fdb.remove_port(no);
        self.l2_publish();
        self.mark_resolvers();
        if let Err(e) = self.store.save(&self.state(&self.pipeline)) {
            // The port object is gone from the polling thread; recreate it so state and reality agree.
            if let Some(rt) = rt {
                let _ = self.create_port(rt.cfg);
            }
            return Err(ErrorBody::new(
                ErrorCode::StateIo,
                format!("saving state: {e}; port not removed"),
            ));
        }
        self.publish();
        Ok(json!({ "ofport": no }))
    }

    fn dump_flows(&mut self, filter: Option<&str>) -> Result<serde_json::Value, ErrorBody> {
        let spec = match filter {
            Some(t) => parse_flow(t, ParseMode::Dump).map_err(|e| bad_flow(e, t, None))?,
            None => Default::default(),
        };
        self.pmd.sync(SYNC_TIMEOUT);
        #[cfg(feature = "afxdp")]
        self.offload.credit(&self.pipeline);
        let now = Instant::now();
        let flows: Vec<FlowEntry> = self
            .pipeline
            .select(&spec, false)
            .into_iter()
            .map(|r| {
                let f = &r.flow;
                // OVS reports flow durations with millisecond precision.
                let dur = Duration::from_millis(
                    now.saturating_duration_since(r.installed).as_millis() as u64,
                );
                let np = r.stats.n_packets.load(std::sync::atomic::Ordering::Relaxed);
                let nb = r.stats.n_bytes.load(std::sync::atomic::Ordering::Relaxed);
                let used = r
                    .stats
                    .last_used_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                let idle_age = (used > 0).then(|| dur.as_secs().saturating_sub(used / 1000));
                let _ = idle_age; // OpenFlow 1.3 dumps do not print idle_age (OVS prints it only for Nicira stats)
                FlowEntry {
                    table: f.table,
                    priority: f.priority,
                    cookie: f.cookie,
                    duration: dur.as_secs_f64(),
                    n_packets: np,
                    n_bytes: nb,
                    idle_timeout: f.idle_timeout,
                    hard_timeout: f.hard_timeout,
                    match_: format_match(&f.matches),
                    actions: format_actions(&f.actions),
                    line: format_flow_stats(f, dur, np, nb, None),
                    line_no_stats: format!(" {}", format_flow(f)),
                }
            })
            .collect();
        Ok(json!({ "flows": flows }))
    }

    fn port_entries(&self, only: Option<PortNo>) -> Vec<PortEntry> {
        let now = Instant::now();
        self.ports
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o == **n))
            .map(|(n, p)| {
                let (state, state_reason) = port_state(p);
                let mut stats = sum_stats(&p.counters);
                let offloaded = self.port_offloaded(*n);
                if let Some(o) = &offloaded {
                    stats.rx_packets += o.rx_packets;
                    stats.rx_bytes += o.rx_bytes;
                    stats.tx_packets += o.tx_packets;
                    stats.tx_bytes += o.tx_bytes;
                }
                PortEntry {
                    ofport: *n,
                    name: p.cfg.name.clone(),
                    port_type: p.cfg.port_type.clone(),
                    options: p.cfg.options.clone(),
                    duration: now.saturating_duration_since(p.added).as_secs_f64(),
                    state,
                    state_reason,
                    stats,
                    offloaded,
                    errors: p
                        .vhost
                        .as_ref()
                        .map(|v| v.error_counts())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The offload view of this bridge's ports: AF_XDP ports with their
    /// interface index and whether they have `xdp-offload=true`.
    #[cfg(feature = "afxdp")]
    fn offload_ports(&self) -> BTreeMap<PortNo, crate::port::afxdp::offload::PortInfo> {
        self.ports
            .iter()
            .filter(|(_, p)| p.cfg.port_type == "afxdp")
            .filter_map(|(n, p)| {
                let ifindex = crate::port::afxdp::xdp_prog::ifindex(p.ifname.as_deref()?)?;
                let offload = p.cfg.options.get("xdp-offload").map(String::as_str) == Some("true");
                Some((
                    *n,
                    crate::port::afxdp::offload::PortInfo { ifindex, offload },
                ))
            })
            .collect()
    }

    /// Every tick: offers on while some port has `xdp-offload=true`, then
    /// decide the polling threads' candidates and credit the entries.
    #[cfg(feature = "afxdp")]
    fn offload_service(&mut self) {
        use crate::port::afxdp::offload;
        let on = self
            .ports
            .values()
            .any(|p| p.cfg.options.get("xdp-offload").map(String::as_str) == Some("true"));
        offload::set_enabled(on);
        if !on && self.offload.is_empty() {
            return;
        }
        let ports = self.offload_ports();
        self.offload
            .poll(self.generation, &|n: PortNo| ports.get(&n).copied());
        self.offload.credit(&self.pipeline);
    }

    #[cfg(feature = "afxdp")]
    fn offload_show(&mut self) -> Result<serde_json::Value, ErrorBody> {
        self.pmd.sync(SYNC_TIMEOUT);
        self.offload_service();
        let o = &self.offload;
        let progs: Vec<serde_json::Value> = self
            .offload_ports()
            .into_iter()
            .filter_map(|(n, info)| {
                let fp = crate::port::afxdp::xdp_prog::fastpath(info.ifindex)?;
                let c = fp.counters();
                Some(json!({
                    "port": n,
                    "xdp_offload": info.offload,
                    "prog_id": fp.prog_id(),
                    "mode": fp.mode().name(),
                    "capacity": fp.capacity(),
                    "hit": c.hit, "miss": c.miss, "unparsed": c.unparsed,
                    "ttl": c.ttl, "no_port": c.no_port, "redirect_fail": c.redirect_fail,
                }))
            })
            .collect();
        Ok(json!({
            "entries": o.show(),
            "programs": progs,
            "inserted": o.inserted,
            "flushed": o.flushed,
            "table_full": o.table_full,
            "masks_full": o.masks_full,
            "stale": o.stale,
            "errors": o.errors,
            "queue_full": o.queue_full(),
            "refused": o.refused,
        }))
    }

    #[cfg(not(feature = "afxdp"))]
    fn offload_show(&mut self) -> Result<serde_json::Value, ErrorBody> {
        Ok(json!({ "entries": [], "programs": [] }))
    }

    /// Offloaded traffic of port `n` (None when it is not an AF_XDP port
    /// with `xdp-offload=true` and nothing was ever offloaded through it).
    fn port_offloaded(&self, n: PortNo) -> Option<crate::port::PortOffload> {
        #[cfg(feature = "afxdp")]
        {
            let o = self.offload.port(n);
            let on = self.ports.get(&n).is_some_and(|p| {
                p.cfg.options.get("xdp-offload").map(String::as_str) == Some("true")
            });
            if on || o != crate::port::PortOffload::default() {
                return Some(o);
            }
        }
        let _ = n;
        None
    }

    /// Milliseconds on the MAC table's clock.
    fn fdb_now(&self) -> u64 {
        u64::try_from(self.fdb_epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Publish the MAC table to the polling threads if it changed.
    fn l2_publish(&mut self) {
        if self.fdb.generation() != self.fdb_published {
            self.fdb_published = self.fdb.generation();
            self.pmd.l2().publish(self.fdb.view());
        }
    }

    /// Learning's control step (every tick and before every request): apply
    /// the polling threads' learn and refresh events, age entries out, and
    /// publish a new view when a binding changed.
    fn l2_service(&mut self) {
        let now = self.fdb_now();
        let shared = self.pmd.l2().clone();
        // Bounded: at most one queue's worth per step, so a flood of new
        // sources cannot stall the control thread.
        for _ in 0..l2::LEARN_QUEUE_DEPTH {
            let Some(ev) = shared.pop() else { break };
            self.fdb.apply(&ev, now);
        }
        self.fdb.expire(now);
        self.l2_publish();
    }

    /// `fdb-show`: the table in OVS `fdb/show` shape, with counters.
    fn fdb_show(&mut self) -> serde_json::Value {
        // Let every polling thread finish what it received and queue its
        // refreshes, so the table reflects traffic already forwarded.
        self.pmd.sync(SYNC_TIMEOUT);
        self.l2_service();
        let rows = self.fdb.rows(self.fdb_now());
        let mut text = String::from(" port  VLAN  MAC                Age\n");
        for r in &rows {
            // OVS prints the OpenFlow port number (ofputil_port_to_string).
            text.push_str(&format!(
                "{:>5}  {:>4}  {}  {:>3}\n",
                r.port, r.vlan, r.mac, r.age
            ));
        }
        json!({
            "entries": rows,
            "text": text,
            "stats": self.fdb.stats(),
            "mac-aging-time": self.fdb.aging_secs(),
            "mac-table-size": self.fdb.max_entries(),
            "learn_queue_full": self.pmd.l2().dropped(),
        })
    }

    fn apply_bridge_settings(&mut self, aging: Option<u32>, size: Option<usize>) {
        if let Some(a) = aging {
            self.fdb.set_aging_secs(a);
        }
        if let Some(n) = size {
            self.fdb.set_max_entries(n);
        }
        let now = self.fdb_now();
        self.fdb.expire(now);
        self.l2_publish();
    }

    /// `set-bridge`: validate every setting, persist, then apply.
    fn set_bridge(
        &mut self,
        settings: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ErrorBody> {
        let (aging, size) = parse_bridge_settings(&settings)?;
        let icmp = parse_icmp_settings(&settings, *self.pipeline.icmp_errors())?;
        let ct = parse_ct_settings(&settings)?;
        let emc = parse_emc_setting(&settings)?;
        let mut next = self.other_config.clone();
        for (k, v) in &settings {
            next.insert(k.trim_start_matches("other_config:").to_string(), v.clone());
        }
        let old = std::mem::replace(&mut self.other_config, next);
        if let Err(e) = self.store.save(&self.state(&self.pipeline)) {
            self.other_config = old;
            return Err(ErrorBody::new(
                ErrorCode::StateIo,
                format!("saving state: {e}; settings not applied"),
            ));
        }
        self.apply_bridge_settings(aging, size);
        ct.apply(self.pipeline.conntrack());
        let emc = emc.or(self.pipeline.emc_insert_inv_prob());
        if icmp != *self.pipeline.icmp_errors() || emc != self.pipeline.emc_insert_inv_prob() {
            self.pipeline.set_icmp_errors(icmp);
            self.pipeline.set_emc_insert_inv_prob(emc);
            // A new snapshot: the polling threads take the settings with it.
            self.publish();
        }
        Ok(json!({
            "mac-aging-time": self.fdb.aging_secs(),
            "mac-table-size": self.fdb.max_entries(),
            "emc-insert-inv-prob": self.pipeline.emc_insert_inv_prob(),
        }))
    }

    fn handle_inner(&mut self, req: Request) -> Result<serde_json::Value, ErrorBody> {
        self.l2_service();
        if let Some(b) = req.bridge() {
            if b != self.name {
                return Err(ErrorBody::new(
                    ErrorCode::UnknownBridge,
                    format!("no bridge {b:?} (this switchd runs {:?})", self.name),
                )
                .with_input(b));
            }
        }
        match req {
            Request::Hello => {
                Ok(json!({ "version": env!("CARGO_PKG_VERSION"), "bridges": [self.name] }))
            }
            Request::AddFlow { flow, .. } => {
                self.apply_mods(&[(FlowModCommand::Add, &flow, ParseMode::Add)])
            }
            Request::AddFlows { flows, .. } => {
                let mods: Vec<_> = flows
                    .iter()
                    .map(|f| (FlowModCommand::Add, f.as_str(), ParseMode::Add))
                    .collect();
                self.apply_mods(&mods)
            }
            Request::ModFlows { flow, strict, .. } => {
                let (c, m) = if strict {
                    (FlowModCommand::ModifyStrict, ParseMode::ModifyStrict)
                } else {
                    (FlowModCommand::Modify, ParseMode::Modify)
                };
                self.apply_mods(&[(c, &flow, m)])
            }
            Request::DelFlows { flow, strict, .. } => {
                let (c, m) = if strict {
                    (FlowModCommand::DeleteStrict, ParseMode::DeleteStrict)
                } else {
                    (FlowModCommand::Delete, ParseMode::Delete)
                };
                self.apply_mods(&[(c, flow.as_deref().unwrap_or(""), m)])
            }
            Request::Bundle { mods, .. } => {
                let ms: Vec<_> = mods
                    .iter()
                    .map(|m| match m.op {
                        BundleOp::Add => (FlowModCommand::Add, m.flow.as_str(), ParseMode::Add),
                        BundleOp::Modify => {
                            (FlowModCommand::Modify, m.flow.as_str(), ParseMode::Modify)
                        }
                        BundleOp::ModifyStrict => (
                            FlowModCommand::ModifyStrict,
                            m.flow.as_str(),
                            ParseMode::ModifyStrict,
                        ),
                        BundleOp::Delete => {
                            (FlowModCommand::Delete, m.flow.as_str(), ParseMode::Delete)
                        }
                        BundleOp::DeleteStrict => (
                            FlowModCommand::DeleteStrict,
                            m.flow.as_str(),
                            ParseMode::DeleteStrict,
                        ),
                    })
                    .collect();
                self.apply_mods(&ms)
            }
            Request::ReplaceFlows { flows, .. } => {
                let mut parsed = Vec::with_capacity(flows.len());
                for (i, t) in flows.iter().enumerate() {
                    let spec =
                        parse_flow(t, ParseMode::Add).map_err(|e| bad_flow(e, t, Some(i)))?;
                    parsed.push(spec.to_flow());
                }
                let mut next = self.pipeline.clone();
                let diff = next.replace_flows(parsed).map_err(|e| {
                    let mut b = ErrorBody::new(ErrorCode::BadFlowMod, e.to_string())
                        .with_input(flows.get(e.index()).cloned().unwrap_or_default());
                    b.index = Some(e.index());
                    b
                })?;
                self.commit(next)?;
                Ok(json!({
                    "added": diff.added.len(),
                    "modified": diff.modified.len(),
                    "removed": diff.removed.len(),
                    "unchanged": diff.unchanged,
                }))
            }
            Request::DumpFlows { filter, .. } => self.dump_flows(filter.as_deref()),
            Request::DumpPorts { port, .. } => {
                let only = port.as_deref().map(|p| self.port_by(p)).transpose()?;
                self.pmd.sync(SYNC_TIMEOUT);
                #[cfg(feature = "afxdp")]
                self.offload.credit(&self.pipeline);
                Ok(json!({ "ports": self.port_entries(only) }))
            }
            Request::DumpTables { .. } => {
                self.pmd.sync(SYNC_TIMEOUT);
                let tables: Vec<TableEntry> = (0..=254u8)
                    .filter_map(|t| {
                        let tb = self.pipeline.table(t);
                        let active = tb.classifier.len();
                        let lookups = tb.stats.lookups.load(std::sync::atomic::Ordering::Relaxed);
                        let matched = tb.stats.matched.load(std::sync::atomic::Ordering::Relaxed);
                        (t == 0 || active > 0 || lookups > 0).then_some(TableEntry {
                            table: t,
                            active,
                            lookups,
                            matched,
                        })
                    })
                    .collect();
                Ok(json!({ "tables": tables }))
            }
            Request::Show { .. } => {
                self.pmd.sync(SYNC_TIMEOUT);
                Ok(json!({
                "bridge": self.name,
                "n_tables": crate::flow::N_TABLES,
                "n_flows": self.pipeline.rules().count(),
                "generation": self.generation,
                "ports": self.port_entries(None),
                "pmd": PmdStats::total(&self.pmd.stats()),
                "pmds": self.pmd.stats(),
                }))
            }
            Request::Trace { packet, .. } => {
                let key = parse_packet(&packet).map_err(|e| ErrorBody {
                    code: ErrorCode::BadPacket,
                    message: e.message.clone(),
                    input: Some(packet.clone()),
                    offset: Some(e.offset),
                    index: None,
                })?;
                let ports: Vec<PortNo> = self.ports.keys().copied().collect();
                let report = crate::pipeline::trace::trace_l2(
                    &self.pipeline,
                    &ports,
                    &key,
                    &self.name,
                    &self.fdb.view(),
                );
                Ok(json!({ "text": report.to_string(), "report": report }))
            }
            Request::AddPort {
                name,
                port_type,
                ofport,
                options,
                ..
            } => self.add_port(name, port_type, ofport, options),
            Request::DelPort { name, .. } => self.del_port(&name),
            Request::Inject { port, frames, .. } => {
                let no = self.port_by(&port)?;
                let h = self.ports[&no].memory.clone().ok_or_else(|| {
                    ErrorBody::new(ErrorCode::BadPortConfig, format!("port {port:?} is not a memory port; only memory ports take injected frames"))
                })?;
                let mut pkts = Vec::with_capacity(frames.len());
                for (i, hex) in frames.iter().enumerate() {
                    let bytes = decode_hex(hex).map_err(|m| {
                        let mut e = ErrorBody::new(ErrorCode::BadPacket, m).with_input(hex.clone());
                        e.index = Some(i);
                        e
                    })?;
                    let p = Packet::from_slice(&bytes).ok_or_else(|| {
                        ErrorBody::new(
                            ErrorCode::BadPacket,
                            format!(
                                "frame {} is {} bytes; the largest is {}",
                                i + 1,
                                bytes.len(),
                                crate::packet::buf::MAX_FRAME
                            ),
                        )
                    })?;
                    pkts.push(p);
                }
                // A frame injected after a change was acknowledged must meet the
                // new tables and ports: wait until the polling thread has begun an
                // iteration (and so loaded the snapshot) after the last publish.
                if self.pmd_generation != self.generation && self.pmd.sync(SYNC_TIMEOUT) {
                    self.pmd_generation = self.generation;
                }
                let total = pkts.len();
                let mut queued = 0;
                for p in pkts {
                    // Wait for the polling thread to make room rather than lose frames.
                    let mut p = p;
                    let deadline = Instant::now() + SYNC_TIMEOUT;
                    loop {
                        match h.inject(p) {
                            Ok(()) => break,
                            Err(back) if Instant::now() < deadline => {
                                p = back;
                                std::thread::sleep(Duration::from_micros(100));
                            }
                            Err(_) => {
                                return Err(ErrorBody::new(ErrorCode::Busy, format!("rx queue of {port:?} stayed full; {queued} of {total} frames injected")));
                            }
                        }
                    }
                    queued += 1;
                }
                // Let the polling thread drain the queue so the caller sees the result.
                let deadline = Instant::now() + SYNC_TIMEOUT;
                while h.rx_pending() > 0 && Instant::now() < deadline {
                    self.pmd.sync(SYNC_TIMEOUT);
                }
                self.pmd.sync(SYNC_TIMEOUT);
                Ok(json!({ "injected": queued }))
            }
            Request::TnlNeighShow { .. } => {
                let mut rows = Vec::new();
                for p in self.ports.values() {
                    let Some(t) = &p.tunnel else { continue };
                    for n in t.neighbours() {
                        let mut v = serde_json::to_value(&n).unwrap_or(json!({}));
                        v["port"] = json!(p.cfg.name);
                        rows.push(v);
                    }
                }
                Ok(json!({ "neighbours": rows }))
            }
            Request::DumpTunnels { .. } => {
                self.pmd.sync(SYNC_TIMEOUT);
                let tunnels: Vec<serde_json::Value> = self
                    .ports
                    .iter()
                    .filter_map(|(no, p)| {
                        let t = p.tunnel.as_ref()?;
                        Some(json!({
                            "name": p.cfg.name,
                            "ofport": no,
                            "type": p.cfg.port_type,
                            "info": t.info(),
                            "stats": t.stats(),
                            "port": sum_stats(&p.counters),
                            "underlay": t.underlay_stats(),
                            "neighbours": t.neighbours(),
                        }))
                    })
                    .collect();
                Ok(json!({ "tunnels": tunnels }))
            }
            Request::PmdRxqShow { .. } => {
                self.pmd.sync(SYNC_TIMEOUT);
                let pmds: Vec<serde_json::Value> = self
                    .pmd
                    .rxq_show()
                    .into_iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(&r).unwrap_or(json!({}));
                        // Name each port as well as its number.
                        if let Some(list) = v["rxqs"].as_array_mut() {
                            for q in list {
                                let no = q["port"].as_u64().and_then(|n| u32::try_from(n).ok());
                                let name = no
                                    .and_then(|n| self.ports.get(&n))
                                    .map(|p| p.cfg.name.clone());
                                q["name"] = json!(name);
                            }
                        }
                        v
                    })
                    .collect();
                Ok(json!({ "assign": self.pmd.assign(), "pmds": pmds }))
            }
            Request::OffloadShow { .. } => self.offload_show(),
            Request::PmdPerfShow { .. } => {
                self.pmd.sync(SYNC_TIMEOUT);
                let pmds: Vec<PmdPerf> = self.pmd.stats().iter().map(PmdPerf::from).collect();
                Ok(json!({ "pmds": pmds }))
            }
            Request::PmdRxqRebalance { .. } => {
                // Measure first, so the cycles policy sees current loads.
                self.pmd.sync(SYNC_TIMEOUT);
                // Within each thread's AF_XDP UMEM budget: a queue that
                // would overcommit its target stays, listed in `kept`.
                let r = self
                    .pmd
                    .rebalance_report(RELEASE_TIMEOUT)
                    .map_err(|m| ErrorBody::new(ErrorCode::Busy, m))?;
                // Frames injected after the reply meet the new assignment.
                self.pmd.sync(SYNC_TIMEOUT);
                Ok(json!({ "assign": self.pmd.assign(), "moves": r.moves, "kept": r.kept }))
            }
            Request::FdbShow { .. } => Ok(self.fdb_show()),
            Request::FdbFlush { .. } => {
                let n = self.fdb.flush();
                self.l2_publish();
                Ok(json!({ "flushed": n, "text": "table successfully flushed\n" }))
            }
            Request::CtShow { zone, addr, .. } => ct_show(&self.pipeline, zone, addr.as_deref()),
            Request::CtFlush { zone, .. } => {
                let n = self.pipeline.conntrack().flush(zone);
                Ok(json!({ "flushed": n, "text": format!("{n} connections flushed\n") }))
            }
            Request::CtStats { .. } => {
                let st = self.pipeline.conntrack().stats();
                let mut text = format!(
                    "entries: {}\nlimit: {}\ncommits: {}\ndrops: ct_full={} nat_no_port={}\nexpired: {}\nflushed: {}\ntimeouts:\n",
                    st.entries, st.limit, st.commits, st.ct_full, st.nat_no_port, st.expired, st.flushed
                );
                for (n, v) in &st.timeouts {
                    text.push_str(&format!("  {n}: {v}s\n"));
                }
                let mut v = serde_json::to_value(&st).unwrap_or_default();
                v["text"] = json!(text);
                Ok(v)
            }
            Request::SetBridge { settings, .. } => self.set_bridge(settings),
            Request::AddRoute { .. }
            | Request::DelRoute { .. }
            | Request::DumpRoutes { .. }
            | Request::AddNeigh { .. }
            | Request::DelNeigh { .. }
            | Request::DumpNeigh { .. }
            | Request::SetRouterMac { .. } => self.routing_request(req),
            Request::GroupMod { op, group, .. } => self.group_mod(op, &group),
            Request::DumpGroups { group, .. } => Ok(self.dump_groups(group)),
            Request::Capture { port, max, .. } => {
                let no = self.port_by(&port)?;
                let h = self.ports[&no].memory.clone().ok_or_else(|| {
                    ErrorBody::new(
                        ErrorCode::BadPortConfig,
                        format!("port {port:?} is not a memory port; only memory ports capture"),
                    )
                })?;
                self.pmd.sync(SYNC_TIMEOUT);
                let mut frames = Vec::new();
                while max.is_none_or(|m| frames.len() < m) {
                    match h.capture() {
                        Some(p) => {
                            frames.push(encode_hex(p.data()));
                            // Back to the polling thread's pool: multi-output
                            // copies come from it and would otherwise drain it.
                            h.recycle(p);
                        }
                        None => break,
                    }
                }
                Ok(json!({ "frames": frames }))
            }
        }
    }
}

impl Bridge {
    /// Apply a group-mod, persist, publish. Reply: how many flows a
    /// del-groups took with it.
    fn group_mod(
        &mut self,
        op: super::proto::GroupOp,
        text: &str,
    ) -> Result<serde_json::Value, ErrorBody> {
        use super::proto::GroupOp;
        use crate::group::{GroupCommand, GroupModError};
        let cmd = match op {
            GroupOp::Add => GroupCommand::Add,
            GroupOp::Modify => GroupCommand::Modify,
            GroupOp::InsertBuckets => GroupCommand::InsertBuckets,
            GroupOp::RemoveBuckets => GroupCommand::RemoveBuckets,
            GroupOp::Delete => GroupCommand::Delete,
        };
        let err = |e: GroupModError| {
            let mut b = ErrorBody::new(ErrorCode::BadGroup, e.to_string()).with_input(text);
            if let GroupModError::Parse(p) = &e {
                b.message = format!("{} (at \"{}\")", p.message, p.token);
                b.offset = Some(p.offset);
            }
            b
        };
        let gm = crate::group::parse_group_mod(text, cmd).map_err(err)?;
        let mut next = self.pipeline.clone();
        let flows_deleted = next.apply_group_mod(&gm).map_err(err)?;
        self.commit(next)?;
        Ok(json!({ "flows_deleted": flows_deleted }))
    }

    /// Every group (or one) with fresh counters.
    fn dump_groups(&mut self, only: Option<u32>) -> serde_json::Value {
        self.pmd.sync(SYNC_TIMEOUT);
        let now = Instant::now();
        let groups: Vec<super::proto::GroupEntry> = self
            .pipeline
            .groups()
            .iter()
            .filter(|g| only.is_none_or(|id| id == g.desc.id))
            .map(|g| {
                let (p, b) = g.stats.get();
                let refs = self.pipeline.group_ref_count(g.desc.id);
                super::proto::GroupEntry {
                    group_id: g.desc.id,
                    line: crate::group::format_group(&g.desc),
                    stats_line: g.stats_line(refs, now),
                    packet_count: p,
                    byte_count: b,
                    buckets: g
                        .desc
                        .buckets
                        .iter()
                        .map(|bk| {
                            let (p, b) = bk.stats.get();
                            (bk.id, p, b)
                        })
                        .collect(),
                    ref_count: refs,
                }
            })
            .collect();
        json!({ "groups": groups })
    }
}

fn bad_route(e: crate::route::RouteError, input: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRoute, e.message).with_input(input)
}

impl Bridge {
    /// Route, neighbour and router-MAC requests: applied to a copy of the
    /// routing state, persisted, then published with the pipeline.
    fn routing_request(&mut self, req: Request) -> Result<serde_json::Value, ErrorBody> {
        use crate::route::{parse_mac, parse_prefix, Route, RouteSet};
        let mut rs: RouteSet = self.pipeline.routes().clone();
        let reply = match req {
            Request::AddRoute { route, .. } => {
                let r = Route::parse(&route).map_err(|e| bad_route(e, &route))?;
                let text = r.ip_route_text();
                let replaced = rs.add_route(r).map_err(|e| bad_route(e, &route))?;
                json!({ "route": text, "replaced": replaced })
            }
            Request::DelRoute { route, .. } => {
                let mut table = 0u8;
                let mut prefix = None;
                for t in route.split_whitespace() {
                    if let Some(v) = t.strip_prefix("table=") {
                        table = v.parse().map_err(|_| {
                            ErrorBody::new(
                                ErrorCode::BadRoute,
                                format!("table {v:?} must be 0 to 255"),
                            )
                            .with_input(route.clone())
                        })?;
                    } else if prefix.is_none() {
                        prefix = Some(parse_prefix(t).map_err(|e| bad_route(e, &route))?);
                    } else {
                        return Err(ErrorBody::new(
                            ErrorCode::BadRoute,
                            format!("del-route takes [table=N] PREFIX; unexpected {t:?}"),
                        )
                        .with_input(route.clone()));
                    }
                }
                let (addr, len) = prefix.ok_or_else(|| {
                    ErrorBody::new(ErrorCode::BadRoute, "del-route needs a prefix")
                        .with_input(route.clone())
                })?;
                if !rs
                    .del_route(table, addr, len)
                    .map_err(|e| bad_route(e, &route))?
                {
                    return Err(ErrorBody::new(
                        ErrorCode::BadRoute,
                        format!("no route {addr}/{len} in table {table}"),
                    )
                    .with_input(route));
                }
                json!({ "deleted": format!("{addr}/{len}"), "table": table })
            }
            Request::DumpRoutes { table, .. } => {
                let routes: Vec<serde_json::Value> = rs
                    .routes()
                    .filter(|r| table.is_none_or(|t| t == r.table))
                    .map(|r| {
                        json!({
                            "table": r.table,
                            "prefix": r.prefix(),
                            "nexthops": r.nexthops.iter().map(|h| json!({
                                "via": h.via.map(|v| v.to_string()),
                                "port": h.port,
                                "mac": h.mac.map(|m| crate::route::format_mac(&m)),
                                "weight": h.weight,
                            })).collect::<Vec<_>>(),
                            "text": r.ip_route_text(),
                            "spec": r.to_string(),
                        })
                    })
                    .collect();
                let macs: Vec<serde_json::Value> = rs
                    .router_macs()
                    .map(|(p, m)| json!({ "port": p, "mac": crate::route::format_mac(&m) }))
                    .collect();
                return Ok(json!({ "routes": routes, "router_macs": macs }));
            }
            Request::AddNeigh { ip, mac, port, .. } => {
                let addr: std::net::IpAddr = ip.parse().map_err(|_| {
                    ErrorBody::new(ErrorCode::BadRoute, format!("{ip:?} is not an IP address"))
                        .with_input(ip.clone())
                })?;
                let m = parse_mac(&mac).ok_or_else(|| {
                    ErrorBody::new(ErrorCode::BadRoute, format!("{mac:?} is not a MAC address"))
                        .with_input(mac.clone())
                })?;
                rs.add_neighbour(addr, m, port);
                json!({ "ip": addr.to_string(), "mac": crate::route::format_mac(&m) })
            }
            Request::DelNeigh { ip, .. } => {
                let addr: std::net::IpAddr = ip.parse().map_err(|_| {
                    ErrorBody::new(ErrorCode::BadRoute, format!("{ip:?} is not an IP address"))
                        .with_input(ip.clone())
                })?;
                if !rs.del_neighbour(addr) {
                    return Err(ErrorBody::new(
                        ErrorCode::BadRoute,
                        format!("no neighbour {addr}"),
                    )
                    .with_input(ip));
                }
                json!({ "deleted": addr.to_string() })
            }
            Request::DumpNeigh { .. } => {
                // Static entries first (they win), then what each port that
                // resolves next hops itself learned by ARP, with state and age.
                let mut rows: Vec<serde_json::Value> = rs
                    .neighbours()
                    .map(|n| {
                        let mut v = serde_json::to_value(n).unwrap_or(json!({}));
                        v["state"] = json!("permanent");
                        v
                    })
                    .collect();
                self.pmd.sync(SYNC_TIMEOUT);
                for (no, p) in &self.ports {
                    let learned = match (&p.uplink, &p.tunnel) {
                        (Some(u), _) => u.neighbours(),
                        (None, Some(t)) if p.resolves => t.neighbours(),
                        _ => continue,
                    };
                    for n in learned {
                        let mut v = serde_json::to_value(&n).unwrap_or(json!({}));
                        v["port"] = json!(no);
                        v["port_name"] = json!(p.cfg.name);
                        v["learned"] = json!(true);
                        rows.push(v);
                    }
                }
                // Each routed uplink's address and ARP/resolution counters.
                let uplinks: Vec<serde_json::Value> = self
                    .ports
                    .iter()
                    .filter_map(|(no, p)| {
                        let u = p.uplink.as_ref()?;
                        Some(json!({
                            "port": no,
                            "port_name": p.cfg.name,
                            "ip": u.addr().to_string(),
                            "mac": crate::route::format_mac(&u.mac()),
                            "stats": u.stats(),
                        }))
                    })
                    .collect();
                return Ok(json!({ "neighbours": rows, "uplinks": uplinks }));
            }
            Request::SetRouterMac { mac, port, .. } => {
                let m = match &mac {
                    None => None,
                    Some(t) => Some(parse_mac(t).ok_or_else(|| {
                        ErrorBody::new(ErrorCode::BadRoute, format!("{t:?} is not a MAC address"))
                            .with_input(t.clone())
                    })?),
                };
                rs.set_router_mac(port, m);
                json!({ "port": port, "mac": m.map(|m| crate::route::format_mac(&m)) })
            }
            _ => return Err(ErrorBody::new(ErrorCode::Internal, "not a routing request")),
        };
        let mut next = self.pipeline.clone();
        next.set_routes(rs);
        self.commit(next)?;
        Ok(reply)
    }
}

impl Handler for Bridge {
    fn handle(&mut self, req: Request) -> Reply {
        match self.handle_inner(req) {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }

    fn tick(&mut self) {
        self.l2_service();
        #[cfg(feature = "afxdp")]
        self.offload_service();
        // Expired connections leave the tracker here, off the packet path.
        self.pipeline.conntrack().maybe_sweep();
        let mut next = self.pipeline.clone();
        if next.expire(Instant::now()).is_empty() {
            return;
        }
        if let Err(e) = self.commit(next) {
            eprintln!("switchd: expiring flows: {e}");
        }
    }
}

#[cfg(feature = "afxdp")]
/// The rx queues (channels) interface `ifname` has: the `rx-N` entries of
/// /sys/class/net/IFNAME/queues, i.e. the kernel's real_num_rx_queues,
/// which `ethtool -l` reports as RX channels for veth. None when unknown.
fn rx_channels(ifname: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues")).ok()?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// Validate `set-bridge` settings: `mac-aging-time` (seconds,
/// 1..=[`l2::MAX_AGING_SECS`]) and `mac-table-size` (entries,
/// 1..=[`l2::MAX_TABLE_SIZE`]), optionally spelled with OVS's
/// `other_config:` prefix.
pub fn parse_bridge_settings(
    settings: &BTreeMap<String, String>,
) -> Result<(Option<u32>, Option<usize>), ErrorBody> {
    let mut aging = None;
    let mut size = None;
    for (k, v) in settings {
        let bad =
            |m: String| ErrorBody::new(ErrorCode::BadRequest, m).with_input(format!("{k}={v}"));
        match k.trim_start_matches("other_config:") {
            "mac-aging-time" => {
                aging = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=l2::MAX_AGING_SECS).contains(n))
                        .ok_or_else(|| {
                            bad(format!(
                                "mac-aging-time must be 1..{} seconds, got {v:?}",
                                l2::MAX_AGING_SECS
                            ))
                        })?,
                )
            }
            "mac-table-size" => {
                size = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=l2::MAX_TABLE_SIZE).contains(n))
                        .ok_or_else(|| {
                            bad(format!(
                                "mac-table-size must be 1..{} entries, got {v:?}",
                                l2::MAX_TABLE_SIZE
                            ))
                        })?,
                )
            }
            // Validated by parse_icmp_settings.
            "router-ip" | "router-ipv6" | "icmp-rate" | "icmp-burst" => {}
            // Validated by parse_emc_setting.
            "emc-insert-inv-prob" => {}
            // Validated by parse_ct_settings.
            c if c == "ct-limit" || c.starts_with("ct-timeout-") => {}
            _ => {
                return Err(bad(format!(
                    "unknown bridge setting {k:?} (known: mac-aging-time, mac-table-size, \
                     router-ip, router-ipv6, icmp-rate, icmp-burst, ct-limit, ct-timeout-NAME, \
                     emc-insert-inv-prob)"
                )))
            }
        }
    }
    Ok((aging, size))
}

/// Validate `emc-insert-inv-prob` of `set-bridge` (OVS's `other_config`
/// key of the same name: the EMC inserts 1 in N flows' packets; 1 inserts
/// every one, 0 none, which disables the EMC; 0..=4294967295, default
/// 100). None when the settings do not name it.
pub fn parse_emc_setting(settings: &BTreeMap<String, String>) -> Result<Option<u32>, ErrorBody> {
    let mut out = None;
    for (k, v) in settings {
        if k.trim_start_matches("other_config:") == "emc-insert-inv-prob" {
            out = Some(v.parse::<u32>().map_err(|_| {
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("emc-insert-inv-prob must be 0..4294967295, got {v:?}"),
                )
                .with_input(format!("{k}={v}"))
            })?);
        }
    }
    Ok(out)
}

/// Connection tracker settings of `set-bridge`, validated.
#[derive(Debug, Default)]
pub struct CtSettings {
    limit: Option<usize>,
    timeouts: Vec<(String, u32)>,
}

impl CtSettings {
    /// Apply to a tracker (validated already: cannot fail).
    pub fn apply(&self, ct: &crate::conntrack::Conntrack) {
        if let Some(l) = self.limit {
            ct.set_limit(l);
        }
        for (n, v) in &self.timeouts {
            let _ = ct.timeouts.set(n, *v);
        }
    }
}

/// Validate the conntrack settings of `set-bridge`: `ct-limit` (most
/// connections, 1..=100000000) and `ct-timeout-NAME` (seconds, 1..=2^31,
/// NAME one of [`crate::conntrack::TIMEOUTS`]: tcp_syn_sent,
/// tcp_established, udp_first, udp_stream, icmp, ...).
pub fn parse_ct_settings(settings: &BTreeMap<String, String>) -> Result<CtSettings, ErrorBody> {
    let mut out = CtSettings::default();
    for (k, v) in settings {
        let bad =
            |m: String| ErrorBody::new(ErrorCode::BadRequest, m).with_input(format!("{k}={v}"));
        let k = k.trim_start_matches("other_config:");
        if k == "ct-limit" {
            out.limit = Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100_000_000).contains(n))
                    .ok_or_else(|| bad(format!("ct-limit must be 1..100000000, got {v:?}")))?,
            );
        } else if let Some(name) = k.strip_prefix("ct-timeout-") {
            if !crate::conntrack::TIMEOUTS.iter().any(|(n, _)| *n == name) {
                let known: Vec<&str> = crate::conntrack::TIMEOUTS.iter().map(|(n, _)| *n).collect();
                return Err(bad(format!(
                    "unknown conntrack timeout {name:?} (known: {})",
                    known.join(", ")
                )));
            }
            let secs = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=(1 << 31)).contains(n))
                .ok_or_else(|| bad(format!("{k} must be 1..2147483648 seconds, got {v:?}")))?;
            out.timeouts.push((name.to_string(), secs));
        }
    }
    Ok(out)
}

/// `ct-show`: the connections as JSON and as `dpctl/dump-conntrack` lines.
fn ct_show(
    pipeline: &Pipeline,
    zone: Option<u16>,
    addr: Option<&str>,
) -> Result<serde_json::Value, ErrorBody> {
    let addr = match addr {
        Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| {
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("ct-show: {a:?} is not an IPv4 or IPv6 address"),
            )
            .with_input(a)
        })?),
        None => None,
    };
    let conns = pipeline.conntrack().dump(zone, addr);
    let mut text = String::new();
    for c in &conns {
        text.push_str(&c.to_line());
        text.push('\n');
    }
    Ok(json!({ "connections": conns, "text": text }))
}

/// Validate the ICMP error settings of `set-bridge` on top of `base`:
/// `router-ip` (IPv4 source of ICMP time exceeded, `none` to stop them),
/// `router-ipv6` (the same for ICMPv6), `icmp-rate` (errors per second per
/// polling thread, 0..=1000000, 0 = none) and `icmp-burst` (1..=100000).
pub fn parse_icmp_settings(
    settings: &BTreeMap<String, String>,
    base: crate::packet::icmp_error::IcmpErrorConfig,
) -> Result<crate::packet::icmp_error::IcmpErrorConfig, ErrorBody> {
    let mut cfg = base;
    for (k, v) in settings {
        let bad =
            |m: String| ErrorBody::new(ErrorCode::BadRequest, m).with_input(format!("{k}={v}"));
        match k.trim_start_matches("other_config:") {
            "router-ip" => {
                cfg.src_v4 = if v == "none" {
                    None
                } else {
                    let a: std::net::Ipv4Addr = v.parse().map_err(|_| {
                        bad(format!(
                            "router-ip must be an IPv4 address or none, got {v:?}"
                        ))
                    })?;
                    Some(u32::from(a))
                }
            }
            "router-ipv6" => {
                cfg.src_v6 = if v == "none" {
                    None
                } else {
                    let a: std::net::Ipv6Addr = v.parse().map_err(|_| {
                        bad(format!(
                            "router-ipv6 must be an IPv6 address or none, got {v:?}"
                        ))
                    })?;
                    Some(a.octets())
                }
            }
            "icmp-rate" => {
                cfg.rate = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 1_000_000)
                    .ok_or_else(|| {
                        bad(format!(
                            "icmp-rate must be 0..1000000 per second, got {v:?}"
                        ))
                    })?
            }
            "icmp-burst" => {
                cfg.burst = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| bad(format!("icmp-burst must be 1..100000, got {v:?}")))?
            }
            _ => {}
        }
    }
    Ok(cfg)
}

/// Lowercase hex of `b`.
pub fn encode_hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(H[usize::from(x >> 4)]));
        s.push(char::from(H[usize::from(x & 15)]));
    }
    s
}

/// Parse hex (whitespace, `:` and a leading `0x` tolerated).
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim().trim_start_matches("0x");
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, d)| {
            let v = |c: u8| (c as char).to_digit(16);
            match (v(d[0]), v(d[1])) {
                (Some(a), Some(b)) => Ok((a * 16 + b) as u8),
                _ => Err(format!(
                    "not a hex digit at byte {}: {:?}",
                    i,
                    String::from_utf8_lossy(d)
                )),
            }
        })
        .collect()
}
