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
use crate::pipeline::table::{FlowMod, FlowModCommand};
use crate::pipeline::Pipeline;
use crate::pmd::{PmdConfig, PmdPerf, PmdSet, PmdStats};
use crate::port::memory::{MemoryPort, MemoryPortHandle};
use crate::port::tap::{TapError, TapOptions, TapPort};
use crate::port::{Port, PortCounters};

/// How long a request waits for the polling thread to acknowledge a sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Port types this build can create.
pub const PORT_TYPES: &[&str] = &[
    "memory",
    "tap",
    #[cfg(feature = "afxdp")]
    "afxdp",
];

struct PortRt {
    cfg: PortConfig,
    counters: Arc<PortCounters>,
    added: Instant,
    memory: Option<MemoryPortHandle>,
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
        };
        if let Some(bs) = state.bridges.get(name) {
            for pc in &bs.ports {
                b.create_port(pc.clone())
                    .map_err(|e| format!("restoring port {}: {}", pc.name, e.message))?;
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
        }
        b.publish();
        Ok(b)
    }

    /// The bridge name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn publish(&mut self) {
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
        let (port, memory): (Box<dyn Port>, Option<MemoryPortHandle>) = match cfg.port_type.as_str()
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
                (Box::new(p), Some(h))
            }
            #[cfg(feature = "afxdp")]
            "afxdp" => {
                use crate::port::afxdp::{AfxdpOptions, AfxdpPort};
                let opts = AfxdpOptions::from_map(&cfg.options)
                    .map_err(|e| ErrorBody::new(ErrorCode::BadPortConfig, e))?;
                // On the UMEM of the thread that will poll it (the one
                // add_port picks), so AF_XDP ports of one thread forward
                // without a copy.
                let bad = |e: crate::port::afxdp::AfxdpError| {
                    ErrorBody::new(ErrorCode::BadPortConfig, e.to_string())
                };
                if crate::port::afxdp::xdp_prog::ifindex(&opts.ifname).is_none() {
                    return Err(bad(crate::port::afxdp::AfxdpError::NoSuchInterface(
                        opts.ifname.clone(),
                    )));
                }
                let umem = self.pmd.afxdp_umem(self.pmd.next_target()).map_err(bad)?;
                let p = AfxdpPort::open_shared(&opts, &umem).map_err(bad)?;
                (Box::new(p), None)
            }
            "tap" => {
                let bad = |e: TapError| ErrorBody::new(ErrorCode::BadPortConfig, e.to_string());
                let opts = TapOptions::from_map(&cfg.options).map_err(bad)?;
                let p = TapPort::open(&cfg.name, &opts).map_err(bad)?;
                (Box::new(p), None)
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
        let counters = port.counters().clone();
        self.pmd.add_port(cfg.ofport, port).map_err(|_| {
            ErrorBody::new(
                ErrorCode::Busy,
                "polling thread command queue is full; retry",
            )
        })?;
        self.ports.insert(
            cfg.ofport,
            PortRt {
                cfg,
                counters,
                added: Instant::now(),
                memory,
            },
        );
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
        let rt = self.ports.remove(&no);
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
            .map(|(n, p)| PortEntry {
                ofport: *n,
                name: p.cfg.name.clone(),
                port_type: p.cfg.port_type.clone(),
                options: p.cfg.options.clone(),
                duration: now.saturating_duration_since(p.added).as_secs_f64(),
                state: "up".into(),
                stats: p.counters.snapshot(),
            })
            .collect()
    }

    fn handle_inner(&mut self, req: Request) -> Result<serde_json::Value, ErrorBody> {
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
                let report =
                    crate::pipeline::trace::trace(&self.pipeline, &ports, &key, &self.name);
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
            Request::PmdPerfShow { .. } => {
                self.pmd.sync(SYNC_TIMEOUT);
                let pmds: Vec<PmdPerf> = self.pmd.stats().iter().map(PmdPerf::from).collect();
                Ok(json!({ "pmds": pmds }))
            }
            Request::PmdRxqRebalance { .. } => {
                // Measure first, so the cycles policy sees current loads.
                self.pmd.sync(SYNC_TIMEOUT);
                let moves = self
                    .pmd
                    .rebalance(SYNC_TIMEOUT)
                    .map_err(|m| ErrorBody::new(ErrorCode::Busy, m))?;
                // Frames injected after the reply meet the new assignment.
                self.pmd.sync(SYNC_TIMEOUT);
                Ok(json!({ "assign": self.pmd.assign(), "moves": moves }))
            }
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

impl Handler for Bridge {
    fn handle(&mut self, req: Request) -> Reply {
        match self.handle_inner(req) {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }

    fn tick(&mut self) {
        let mut next = self.pipeline.clone();
        if next.expire(Instant::now()).is_empty() {
            return;
        }
        if let Err(e) = self.commit(next) {
            eprintln!("switchd: expiring flows: {e}");
        }
    }
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
