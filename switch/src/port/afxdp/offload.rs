//! XDP offload of megaflows between AF_XDP ports: which megaflows switchd's
//! XDP program may forward in the kernel ([`decide`]), and the control
//! thread's book of what it offloaded ([`Offloader`]).
//!
//! Data enters from a polling thread's upcall: when offload is on
//! ([`enabled`]: some port has `xdp-offload=true`) and the new megaflow is
//! plain (no group, no NORMAL learning, no drop reason) and its actions pass
//! [`quick_filter`], the upcall [`offer`]s a [`Candidate`] (the packet's key,
//! the mask, the actions, the rules) on a bounded lock-free queue; a full
//! queue is a counted refusal, never a wait. Nothing else happens on the
//! polling thread. The control thread ([`Offloader::poll`], every tick)
//! drains the queue, drops candidates of an older flow-table generation,
//! runs [`decide`], and inserts the packet's exact [`FpKey`] -> [`FpAction`]
//! in the ingress interface's `fp_flows` map (fastpath.rs). Data leaves as
//! statistics: [`Offloader::credit`] reads each entry's counters and credits
//! the increase to the megaflow's rules and tables (so dump-flows,
//! idle timeouts and table stats count offloaded packets) and to the ports'
//! offloaded counters (dump-ports). [`Offloader::flush`] credits and then
//! deletes every entry: the bridge calls it on every change that may change
//! a decision (a new flow-table generation: flow-mods, group-mods, port
//! add/del), as OVS's revalidators do for hardware-offloaded flows.
//!
//! [`decide`] offloads a megaflow only when the XDP program would do exactly
//! what the slow path's actions do for every packet that can hit the entry
//! (reasons in [`Refusal`]). This module must never block or allocate on a
//! polling thread beyond the one candidate of an upcall, and never let an
//! offload entry outlive the flow-table generation it was decided under by
//! more than one control tick.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;

use super::fastpath::{FpAction, FpKey, FP_SET_ETH_DST, FP_SET_ETH_SRC, FP_SET_TTL, MAX_MASKS};
use super::xdp_prog;
use crate::datapath::DpAction;
use crate::flow::{FlowKey, FlowMask, PortNo};
use crate::pipeline::{Pipeline, Rule};
use crate::port::PortOffload;

/// Candidates waiting for the control thread, at most.
pub const QUEUE_LEN: usize = 4096;

/// A megaflow a polling thread just installed, offered for offload.
#[derive(Debug)]
pub struct Candidate {
    /// The flow-table generation it was translated under.
    pub generation: u64,
    /// The packet's key (the entry's exact key comes from it).
    pub key: FlowKey,
    /// The megaflow mask.
    pub mask: FlowMask,
    /// The datapath actions.
    pub actions: Box<[DpAction]>,
    /// Rules to credit with the entry's packets.
    pub rules: Vec<Arc<Rule>>,
    /// Table lookups to credit: (table, matched).
    pub tables: Vec<(u8, bool)>,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static QUEUE: OnceLock<ArrayQueue<Candidate>> = OnceLock::new();
static QUEUE_FULL: AtomicU64 = AtomicU64::new(0);

/// True when some port has `xdp-offload=true` (read by upcalls).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turn offers on or off (the bridge, when ports change).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

fn queue() -> &'static ArrayQueue<Candidate> {
    QUEUE.get_or_init(|| ArrayQueue::new(QUEUE_LEN))
}

/// The cheap part of [`decide`], run by the upcall before it builds a
/// candidate: only `set(eth)`, `set(ipv4(ttl))` and one final output.
pub fn quick_filter(actions: &[DpAction]) -> bool {
    let Some((DpAction::Output(_), rest)) = actions.split_last() else {
        return false;
    };
    rest.iter().all(|a| {
        matches!(
            a,
            DpAction::SetEth { .. }
                | DpAction::SetIpv4 {
                    src: None,
                    dst: None,
                    tos: None,
                    ttl: Some(_),
                }
        )
    })
}

/// Offer a candidate (slow path of a polling thread). Never blocks: a
/// full queue drops it and counts `queue_full`.
pub fn offer(c: Candidate) {
    if queue().push(c).is_err() {
        QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
    }
}

/// What [`decide`] needs to know about a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's interface index (AF_XDP ports only).
    pub ifindex: u32,
    /// The port has `xdp-offload=true`.
    pub offload: bool,
}

/// Why a megaflow is not offloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The packet is not untagged IPv4 (the program parses nothing else).
    NotIpv4,
    /// A VLAN-tagged packet.
    Vlan,
    /// An IPv4 fragment (the program leaves fragments to userspace).
    Fragment,
    /// The mask covers a field the XDP key does not hold, with a value a
    /// wire packet may not have at ingress (the field is named).
    Mask(&'static str),
    /// An action other than set(eth), set(ipv4(ttl)) and one final output.
    Action,
    /// No output, or more than one.
    Outputs,
    /// Output to the ingress port.
    Hairpin,
    /// The ingress port is not an AF_XDP port with xdp-offload=true.
    InPort,
    /// The output port is not an AF_XDP port with xdp-offload=true.
    OutPort,
    /// dec_ttl on a TTL that would expire (the slow path sends the ICMP error).
    Ttl,
}

impl Refusal {
    /// Short name, for counters.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotIpv4 => "not_ipv4",
            Refusal::Vlan => "vlan",
            Refusal::Fragment => "fragment",
            Refusal::Mask(_) => "mask",
            Refusal::Action => "action",
            Refusal::Outputs => "outputs",
            Refusal::Hairpin => "hairpin",
            Refusal::InPort => "in_port",
            Refusal::OutPort => "out_port",
            Refusal::Ttl => "ttl",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotIpv4 => f.write_str("not an untagged IPv4 packet"),
            Refusal::Vlan => f.write_str("VLAN-tagged"),
            Refusal::Fragment => f.write_str("IPv4 fragment"),
            Refusal::Mask(field) => write!(
                f,
                "the megaflow matches {field}, which the XDP key does not hold"
            ),
            Refusal::Action => {
                f.write_str("an action other than set eth src/dst, dec_ttl and output")
            }
            Refusal::Outputs => f.write_str("not exactly one output"),
            Refusal::Hairpin => f.write_str("output to the ingress port"),
            Refusal::InPort => f.write_str("the ingress port is not offload-enabled AF_XDP"),
            Refusal::OutPort => f.write_str("the output port is not offload-enabled AF_XDP"),
            Refusal::Ttl => f.write_str("the TTL would expire"),
        }
    }
}

/// ethertype IPv4.
const ETH_IPV4: u16 = 0x0800;

/// What [`decide`] offloads: the packet's XDP key, the megaflow's mask in
/// XDP key terms, the entry's actions and the output port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The packet's key (unmasked).
    pub key: FpKey,
    /// The mask ([`fp_mask`]).
    pub mask: FpKey,
    /// The actions.
    pub action: FpAction,
    /// The output port.
    pub out: PortNo,
}

/// Decide whether the megaflow (`mask`, `actions`) installed for the packet
/// `key` can be offloaded as a masked entry of the XDP program (the
/// megaflow itself: every packet the entry matches matches the megaflow).
///
/// Holds when (every packet that hits the entry would get the same actions
/// from the slow path, and the program applies them exactly):
/// - the packet is untagged, unfragmented IPv4 (what the program parses);
/// - every field the mask covers is in the XDP key ([`FpKey`]), or is
///   matched on 0 and every frame the program looks up has it at 0
///   (conntrack state, registers, metadata, tunnel fields of a non-tunnel
///   port, IPv6/ARP fields, fragment bits and VLAN of the untagged,
///   unfragmented IPv4 frames it parses); TCP flags change per packet, so
///   they may be matched only on a megaflow that also matches a non-TCP
///   `nw_proto` (whose packets all have them at 0);
/// - the actions are only set(eth(src,dst)), set(ipv4(ttl)) (what dec_ttl
///   and mod_dl_src/dst become) and one final output to another port, and
///   a TTL set only happens on a TTL > 1 (the ICMP time exceeded of an
///   expiring TTL stays in the slow path);
/// - both ports are AF_XDP ports with `xdp-offload=true`.
///
/// The caller checked what the actions do not show: no group, no NORMAL
/// (MAC learning must see packets), no drop reason, no conntrack.
pub fn decide(
    key: &FlowKey,
    mask: &FlowMask,
    actions: &[DpAction],
    port: &dyn Fn(PortNo) -> Option<PortInfo>,
) -> Result<Decision, Refusal> {
    if key.dl_type != ETH_IPV4 {
        return Err(Refusal::NotIpv4);
    }
    if key.vlan_tci != 0 {
        return Err(Refusal::Vlan);
    }
    if key.nw_frag != 0 {
        return Err(Refusal::Fragment);
    }
    // Fields outside the XDP key: covered only with the value 0 that every
    // packet hitting the entry has.
    let zero_u8 = |m: &[u8], k: &[u8]| m.iter().all(|&b| b == 0) || k.iter().all(|&b| b == 0);
    let outside: [(&'static str, bool); 17] = [
        ("ct_state", mask.ct_state == 0 || key.ct_state == 0),
        ("ct_zone", mask.ct_zone == 0 || key.ct_zone == 0),
        ("ct_mark", mask.ct_mark == 0 || key.ct_mark == 0),
        ("ct_label", zero_u8(&mask.ct_label, &key.ct_label)),
        ("tun_id", mask.tun_id == 0 || key.tun_id == 0),
        ("tun_src", mask.tun_src == 0 || key.tun_src == 0),
        ("tun_dst", mask.tun_dst == 0 || key.tun_dst == 0),
        ("metadata", mask.metadata == 0 || key.metadata == 0),
        (
            "reg",
            mask.regs
                .iter()
                .zip(&key.regs)
                .all(|(m, k)| *m == 0 || *k == 0),
        ),
        ("arp_sha", zero_u8(&mask.arp_sha, &key.arp_sha)),
        ("arp_tha", zero_u8(&mask.arp_tha, &key.arp_tha)),
        ("ipv6_label", mask.ipv6_label == 0 || key.ipv6_label == 0),
        ("ipv6_src", zero_u8(&mask.ipv6_src, &key.ipv6_src)),
        ("ipv6_dst", zero_u8(&mask.ipv6_dst, &key.ipv6_dst)),
        (
            "tcp_flags",
            mask.tcp_flags == 0
                || (key.tcp_flags == 0 && key.nw_proto != 6 && mask.nw_proto == u8::MAX),
        ),
        ("nw_frag", true),
        ("vlan_tci", true),
    ];
    if let Some((name, _)) = outside.iter().find(|(_, ok)| !ok) {
        return Err(Refusal::Mask(name));
    }
    let Some((DpAction::Output(out), rest)) = actions.split_last() else {
        let any_output = actions.iter().any(|a| matches!(a, DpAction::Output(_)));
        return Err(if any_output || actions.is_empty() {
            Refusal::Outputs
        } else {
            Refusal::Action
        });
    };
    let mut act = FpAction::default();
    for a in rest {
        match a {
            DpAction::SetEth { src, dst } => {
                if let Some(s) = src {
                    act.flags |= FP_SET_ETH_SRC;
                    act.eth_src = *s;
                }
                if let Some(d) = dst {
                    act.flags |= FP_SET_ETH_DST;
                    act.eth_dst = *d;
                }
            }
            DpAction::SetIpv4 {
                src: None,
                dst: None,
                tos: None,
                ttl: Some(t),
            } => {
                act.flags |= FP_SET_TTL;
                act.ttl = *t;
            }
            DpAction::Output(_) => return Err(Refusal::Outputs),
            _ => return Err(Refusal::Action),
        }
    }
    if act.flags & FP_SET_TTL != 0 && key.nw_ttl <= 1 {
        return Err(Refusal::Ttl);
    }
    if *out == key.in_port {
        return Err(Refusal::Hairpin);
    }
    let inp = port(key.in_port)
        .filter(|p| p.offload)
        .ok_or(Refusal::InPort)?;
    let outp = port(*out).filter(|p| p.offload).ok_or(Refusal::OutPort)?;
    act.out_ifindex = outp.ifindex;
    Ok(Decision {
        key: fp_key(inp.ifindex, key),
        mask: fp_mask(mask),
        action: act,
        out: *out,
    })
}

/// The XDP mask of megaflow mask `m`: its bits on the fields the XDP key
/// holds; the ingress interface always (the datapath always matches in_port).
pub fn fp_mask(m: &FlowMask) -> FpKey {
    FpKey {
        ifindex: u32::MAX,
        ..fp_key(0, m)
    }
}

/// `key` AND `mask`, tagged with the mask's slot (the lookup key the
/// program builds for that slot).
pub fn masked(key: &FpKey, mask: &FpKey, slot: u8) -> FpKey {
    let and = |a: &[u8], b: &[u8], out: &mut [u8]| {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = x & y;
        }
    };
    let mut k = FpKey {
        ifindex: key.ifindex & mask.ifindex,
        nw_proto: key.nw_proto & mask.nw_proto,
        nw_tos: key.nw_tos & mask.nw_tos,
        nw_ttl: key.nw_ttl & mask.nw_ttl,
        pad: [slot, 0, 0],
        ..FpKey::default()
    };
    and(&key.dl_dst, &mask.dl_dst, &mut k.dl_dst);
    and(&key.dl_src, &mask.dl_src, &mut k.dl_src);
    and(&key.dl_type, &mask.dl_type, &mut k.dl_type);
    and(&key.nw_src, &mask.nw_src, &mut k.nw_src);
    and(&key.nw_dst, &mask.nw_dst, &mut k.nw_dst);
    and(&key.tp_src, &mask.tp_src, &mut k.tp_src);
    and(&key.tp_dst, &mask.tp_dst, &mut k.tp_dst);
    k
}

/// The XDP key of packet `key` arriving on interface `ifindex`.
pub fn fp_key(ifindex: u32, key: &FlowKey) -> FpKey {
    FpKey {
        ifindex,
        dl_dst: key.dl_dst,
        dl_src: key.dl_src,
        dl_type: key.dl_type.to_be_bytes(),
        nw_proto: key.nw_proto,
        nw_tos: key.nw_tos,
        nw_ttl: key.nw_ttl,
        pad: [0; 3],
        nw_src: key.nw_src.to_be_bytes(),
        nw_dst: key.nw_dst.to_be_bytes(),
        tp_src: key.tp_src.to_be_bytes(),
        tp_dst: key.tp_dst.to_be_bytes(),
    }
}

/// One offloaded entry, as the control thread remembers it.
#[derive(Debug)]
struct Entry {
    in_port: PortNo,
    out_port: PortNo,
    /// The XDP mask (for offload-show).
    mask: FpKey,
    rules: Vec<Arc<Rule>>,
    tables: Vec<(u8, bool)>,
    /// Counters already credited.
    packets: u64,
    bytes: u64,
    installed: Instant,
}

/// One line of `flowctl offload-show`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShownEntry {
    /// Ingress port.
    pub in_port: PortNo,
    /// Output port.
    pub out_port: PortNo,
    /// The exact match, ovs-ofctl style.
    #[serde(rename = "match")]
    pub match_: String,
    /// The actions, datapath style.
    pub actions: String,
    /// Frames forwarded by the entry.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Seconds since it was offloaded.
    pub age: f64,
}

/// The control thread's offload state (one per bridge).
#[derive(Debug, Default)]
pub struct Offloader {
    /// By masked key (which holds the ingress ifindex and the mask slot).
    entries: BTreeMap<FpKey, Entry>,
    /// The masks in use per ingress ifindex, by slot.
    masks: BTreeMap<u32, [Option<FpKey>; MAX_MASKS as usize]>,
    ports: BTreeMap<PortNo, PortOffload>,
    /// Entries inserted so far.
    pub inserted: u64,
    /// Entries removed by flushes.
    pub flushed: u64,
    /// Candidates refused, by reason name.
    pub refused: BTreeMap<&'static str, u64>,
    /// Candidates not offloaded because the table was full.
    pub table_full: u64,
    /// Candidates not offloaded because every mask slot was taken.
    pub masks_full: u64,
    /// Candidates of an older generation, dropped.
    pub stale: u64,
    /// Map errors (insert or program missing).
    pub errors: u64,
}

impl Offloader {
    /// Drain the candidate queue: decide and insert (control thread).
    pub fn poll(&mut self, generation: u64, port: &dyn Fn(PortNo) -> Option<PortInfo>) {
        let q = queue();
        while let Some(c) = q.pop() {
            if c.generation != generation {
                self.stale += 1;
                continue;
            }
            let d = match decide(&c.key, &c.mask, &c.actions, port) {
                Ok(x) => x,
                Err(r) => {
                    *self.refused.entry(r.name()).or_default() += 1;
                    continue;
                }
            };
            let ifindex = d.key.ifindex;
            let Some(fp) = xdp_prog::fastpath(ifindex) else {
                self.errors += 1;
                continue;
            };
            let slots = self.masks.entry(ifindex).or_default();
            let slot = match slots.iter().position(|m| *m == Some(d.mask)) {
                Some(i) => i,
                None => match slots.iter().position(Option::is_none) {
                    Some(i) => {
                        if fp.set_mask(i as u32, Some(&d.mask)).is_err() {
                            self.errors += 1;
                            continue;
                        }
                        slots[i] = Some(d.mask);
                        i
                    }
                    None => {
                        self.masks_full += 1;
                        continue;
                    }
                },
            };
            let k = masked(&d.key, &d.mask, slot as u8);
            if self.entries.contains_key(&k) {
                continue;
            }
            if fp.add_output(d.action.out_ifindex).is_err() {
                self.errors += 1;
                continue;
            }
            match fp.insert(&k, &d.action) {
                Ok(true) => {
                    self.inserted += 1;
                    self.entries.insert(
                        k,
                        Entry {
                            in_port: c.key.in_port,
                            out_port: d.out,
                            mask: d.mask,
                            rules: c.rules,
                            tables: c.tables,
                            packets: 0,
                            bytes: 0,
                            installed: Instant::now(),
                        },
                    );
                }
                Ok(false) => self.table_full += 1,
                Err(_) => self.errors += 1,
            }
        }
    }

    /// Credit every entry's new packets and bytes to its rules, tables and
    /// ports (control thread, every tick and before a flush or a dump).
    pub fn credit(&mut self, pipeline: &Pipeline) {
        let mut gone = Vec::new();
        let mut progs = BTreeMap::new();
        for (k, e) in self.entries.iter_mut() {
            let fp = progs
                .entry(k.ifindex)
                .or_insert_with(|| xdp_prog::fastpath(k.ifindex));
            let Some(fp) = fp else {
                gone.push(*k);
                continue;
            };
            let Some(v) = fp.entry(k) else {
                gone.push(*k);
                continue;
            };
            credit_entry(e, v.packets, v.bytes, pipeline, &mut self.ports);
        }
        for k in gone {
            self.entries.remove(&k);
        }
    }

    /// Credit, then delete every entry (a change that may change decisions).
    pub fn flush(&mut self, pipeline: &Pipeline) {
        let entries = std::mem::take(&mut self.entries);
        for (k, mut e) in entries {
            if let Some(fp) = xdp_prog::fastpath(k.ifindex) {
                if let Some(v) = fp.remove(&k) {
                    credit_entry(&mut e, v.packets, v.bytes, pipeline, &mut self.ports);
                }
            }
            self.flushed += 1;
        }
        // Then the masks: no entry refers to them any more.
        for (ifindex, slots) in std::mem::take(&mut self.masks) {
            if let Some(fp) = xdp_prog::fastpath(ifindex) {
                for (i, m) in slots.iter().enumerate() {
                    if m.is_some() {
                        let _ = fp.set_mask(i as u32, None);
                    }
                }
            }
        }
    }

    /// Offloaded traffic credited to `port` so far.
    pub fn port(&self, port: PortNo) -> PortOffload {
        self.ports.get(&port).copied().unwrap_or_default()
    }

    /// Entries offloaded now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is offloaded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The offloaded entries with their counters (call [`Self::credit`] first).
    pub fn show(&self) -> Vec<ShownEntry> {
        let now = Instant::now();
        self.entries
            .iter()
            .map(|(k, e)| ShownEntry {
                in_port: e.in_port,
                out_port: e.out_port,
                match_: format_key(e.in_port, k, &e.mask),
                actions: xdp_prog::fastpath(k.ifindex)
                    .and_then(|fp| fp.entry(k))
                    .map(|a| format_action(e.out_port, &a))
                    .unwrap_or_default(),
                packets: e.packets,
                bytes: e.bytes,
                age: now.saturating_duration_since(e.installed).as_secs_f64(),
            })
            .collect()
    }

    /// Candidates dropped because the queue was full (process-wide).
    pub fn queue_full(&self) -> u64 {
        QUEUE_FULL.load(Ordering::Relaxed)
    }
}

fn credit_entry(
    e: &mut Entry,
    packets: u64,
    bytes: u64,
    pipeline: &Pipeline,
    ports: &mut BTreeMap<PortNo, PortOffload>,
) {
    let (dp, db) = (
        packets.saturating_sub(e.packets),
        bytes.saturating_sub(e.bytes),
    );
    if dp == 0 {
        return;
    }
    (e.packets, e.bytes) = (packets, bytes);
    let now = Instant::now();
    for r in &e.rules {
        let ms = now.saturating_duration_since(r.installed).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).max(1);
        r.stats.add(dp, db, ms);
    }
    for &(t, matched) in &e.tables {
        if usize::from(t) >= crate::flow::N_TABLES {
            continue;
        }
        let ts = &pipeline.table(t).stats;
        ts.lookups.fetch_add(dp, Ordering::Relaxed);
        if matched {
            ts.matched.fetch_add(dp, Ordering::Relaxed);
        }
    }
    let i = ports.entry(e.in_port).or_default();
    i.rx_packets += dp;
    i.rx_bytes += db;
    let o = ports.entry(e.out_port).or_default();
    o.tx_packets += dp;
    o.tx_bytes += db;
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The entry as an ovs-ofctl style match: only the fields its mask covers
/// (a partial mask as value/mask).
fn format_key(in_port: PortNo, k: &FpKey, m: &FpKey) -> String {
    let mut v = vec![format!("in_port={in_port}")];
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let field = |v: &mut Vec<String>, name: &str, val: String, mask: &[u8], full: bool| {
        if mask.iter().all(|&b| b == 0) {
            return;
        }
        if full {
            v.push(format!("{name}={val}"));
        } else {
            v.push(format!("{name}={val}/0x{}", hex(mask)));
        }
    };
    let ones = |b: &[u8]| b.iter().all(|&x| x == 0xff);
    field(&mut v, "dl_src", mac(&k.dl_src), &m.dl_src, ones(&m.dl_src));
    field(&mut v, "dl_dst", mac(&k.dl_dst), &m.dl_dst, ones(&m.dl_dst));
    v.push("ip".to_string());
    let ip = |a: &[u8; 4], m: &[u8; 4]| {
        let bits = u32::from_be_bytes(*m);
        let a = std::net::Ipv4Addr::from(*a);
        if bits == u32::MAX {
            a.to_string()
        } else if bits.leading_ones() + bits.trailing_zeros() == 32 {
            format!("{a}/{}", bits.leading_ones())
        } else {
            format!("{a}/{}", std::net::Ipv4Addr::from(*m))
        }
    };
    field(&mut v, "nw_src", ip(&k.nw_src, &m.nw_src), &m.nw_src, true);
    field(&mut v, "nw_dst", ip(&k.nw_dst, &m.nw_dst), &m.nw_dst, true);
    field(
        &mut v,
        "nw_proto",
        k.nw_proto.to_string(),
        &[m.nw_proto],
        ones(&[m.nw_proto]),
    );
    field(
        &mut v,
        "nw_tos",
        k.nw_tos.to_string(),
        &[m.nw_tos],
        ones(&[m.nw_tos]),
    );
    field(
        &mut v,
        "nw_ttl",
        k.nw_ttl.to_string(),
        &[m.nw_ttl],
        ones(&[m.nw_ttl]),
    );
    let port = |p: [u8; 2]| u16::from_be_bytes(p).to_string();
    field(&mut v, "tp_src", port(k.tp_src), &m.tp_src, ones(&m.tp_src));
    field(&mut v, "tp_dst", port(k.tp_dst), &m.tp_dst, ones(&m.tp_dst));
    v.join(",")
}

fn format_action(out: PortNo, a: &FpAction) -> String {
    let mut v = Vec::new();
    if a.flags & (FP_SET_ETH_SRC | FP_SET_ETH_DST) != 0 {
        let mut parts = Vec::new();
        if a.flags & FP_SET_ETH_SRC != 0 {
            parts.push(format!("src={}", mac(&a.eth_src)));
        }
        if a.flags & FP_SET_ETH_DST != 0 {
            parts.push(format!("dst={}", mac(&a.eth_dst)));
        }
        v.push(format!("set(eth({}))", parts.join(",")));
    }
    if a.flags & FP_SET_TTL != 0 {
        v.push(format!("set(ipv4(ttl={}))", a.ttl));
    }
    v.push(out.to_string());
    v.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const R: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

    fn ports(p: PortNo) -> Option<PortInfo> {
        match p {
            1 => Some(PortInfo {
                ifindex: 11,
                offload: true,
            }),
            2 => Some(PortInfo {
                ifindex: 12,
                offload: true,
            }),
            3 => Some(PortInfo {
                ifindex: 13,
                offload: false,
            }),
            _ => None,
        }
    }

    fn udp_key() -> FlowKey {
        FlowKey {
            in_port: 1,
            dl_src: A,
            dl_dst: B,
            dl_type: 0x0800,
            nw_src: 0x0a00_0001,
            nw_dst: 0x0a00_0102,
            nw_proto: 17,
            nw_ttl: 64,
            tp_src: 1234,
            tp_dst: 5201,
            ..FlowKey::default()
        }
    }

    /// The mask of `in_port=1,actions=output:2` (what xlate unwildcards).
    fn l2_mask() -> FlowMask {
        FlowMask {
            in_port: u32::MAX,
            ..FlowMask::default()
        }
    }

    fn routed() -> (FlowMask, Vec<DpAction>) {
        let mask = FlowMask {
            in_port: u32::MAX,
            dl_type: u16::MAX,
            nw_dst: 0xffff_ff00,
            nw_ttl: 0xff,
            ..FlowMask::default()
        };
        let actions = vec![
            DpAction::SetEth {
                src: Some(R),
                dst: Some(B),
            },
            DpAction::SetIpv4 {
                src: None,
                dst: None,
                tos: None,
                ttl: Some(63),
            },
            DpAction::Output(2),
        ];
        (mask, actions)
    }

    #[test]
    fn plain_output_between_offload_ports_qualifies() {
        let k = udp_key();
        let d = decide(&k, &l2_mask(), &[DpAction::Output(2)], &ports).unwrap();
        let (fk, a, out) = (d.key, d.action, d.out);
        assert_eq!(out, 2);
        assert_eq!(a.out_ifindex, 12);
        assert_eq!(a.flags, 0);
        assert_eq!(fk.ifindex, 11);
        assert_eq!(fk.nw_src, [10, 0, 0, 1]);
        assert_eq!(fk.tp_dst, 5201u16.to_be_bytes());
        assert_eq!(fk.dl_type, [8, 0]);
        assert!(quick_filter(&[DpAction::Output(2)]));
        // The megaflow matched only in_port: so does the entry, for every
        // IPv4 frame the program parses on that interface.
        assert_eq!(
            d.mask,
            FpKey {
                ifindex: u32::MAX,
                ..FpKey::default()
            }
        );
        let other = fp_key(
            11,
            &FlowKey {
                nw_proto: 6,
                tp_src: 80,
                ..udp_key()
            },
        );
        assert_eq!(masked(&fk, &d.mask, 3), masked(&other, &d.mask, 3));
        assert_eq!(masked(&fk, &d.mask, 3).pad, [3, 0, 0]);
        assert_ne!(masked(&fk, &d.mask, 3), masked(&fk, &d.mask, 4));
    }

    #[test]
    fn routed_mac_rewrite_and_dec_ttl_qualify() {
        let (mask, actions) = routed();
        assert!(quick_filter(&actions));
        let d = decide(&udp_key(), &mask, &actions, &ports).unwrap();
        let (fk, a) = (d.key, d.action);
        // Matches what the route matched: destination /24 and the TTL.
        let m = masked(&fk, &d.mask, 0);
        assert_eq!(m.nw_dst, [10, 0, 1, 0]);
        assert_eq!((m.nw_ttl, m.nw_src, m.tp_dst), (64, [0; 4], [0; 2]));
        assert_eq!(a.flags, FP_SET_ETH_SRC | FP_SET_ETH_DST | FP_SET_TTL);
        assert_eq!((a.eth_src, a.eth_dst, a.ttl), (R, B, 63));
        // The key is the packet's, before the actions.
        assert_eq!((fk.dl_src, fk.dl_dst, fk.nw_ttl), (A, B, 64));
    }

    #[test]
    fn expiring_ttl_stays_in_the_slow_path() {
        let (mask, actions) = routed();
        let k = FlowKey {
            nw_ttl: 1,
            ..udp_key()
        };
        assert_eq!(decide(&k, &mask, &actions, &ports), Err(Refusal::Ttl));
    }

    #[test]
    fn ports_must_both_be_offload_enabled_and_distinct() {
        let k = udp_key();
        let m = l2_mask();
        assert_eq!(
            decide(&k, &m, &[DpAction::Output(3)], &ports),
            Err(Refusal::OutPort)
        );
        assert_eq!(
            decide(&k, &m, &[DpAction::Output(9)], &ports),
            Err(Refusal::OutPort)
        );
        let k3 = FlowKey { in_port: 3, ..k };
        assert_eq!(
            decide(&k3, &m, &[DpAction::Output(2)], &ports),
            Err(Refusal::InPort)
        );
        assert_eq!(
            decide(&k, &m, &[DpAction::Output(1)], &ports),
            Err(Refusal::Hairpin)
        );
    }

    #[test]
    fn other_actions_refuse() {
        let k = udp_key();
        let m = l2_mask();
        let two = [DpAction::Output(2), DpAction::Output(2)];
        assert_eq!(decide(&k, &m, &two, &ports), Err(Refusal::Outputs));
        assert!(!quick_filter(&two));
        assert_eq!(decide(&k, &m, &[], &ports), Err(Refusal::Outputs));
        let vlan = [
            DpAction::PushVlan {
                tpid: 0x8100,
                tci: 5,
            },
            DpAction::Output(2),
        ];
        assert_eq!(decide(&k, &m, &vlan, &ports), Err(Refusal::Action));
        assert!(!quick_filter(&vlan));
        let nat = [
            DpAction::SetIpv4 {
                src: Some(1),
                dst: None,
                tos: None,
                ttl: None,
            },
            DpAction::Output(2),
        ];
        assert_eq!(decide(&k, &m, &nat, &ports), Err(Refusal::Action));
        assert!(!quick_filter(&nat));
        let after = [DpAction::Output(2), DpAction::PopVlan];
        assert_eq!(decide(&k, &m, &after, &ports), Err(Refusal::Outputs));
        let tp = [
            DpAction::SetUdp {
                src: Some(1),
                dst: None,
            },
            DpAction::Output(2),
        ];
        assert_eq!(decide(&k, &m, &tp, &ports), Err(Refusal::Action));
    }

    #[test]
    fn only_untagged_unfragmented_ipv4() {
        let m = l2_mask();
        let o = [DpAction::Output(2)];
        let arp = FlowKey {
            dl_type: 0x0806,
            ..udp_key()
        };
        assert_eq!(decide(&arp, &m, &o, &ports), Err(Refusal::NotIpv4));
        let v6 = FlowKey {
            dl_type: 0x86dd,
            ..udp_key()
        };
        assert_eq!(decide(&v6, &m, &o, &ports), Err(Refusal::NotIpv4));
        let tagged = FlowKey {
            vlan_tci: 0x1000 | 10,
            ..udp_key()
        };
        assert_eq!(decide(&tagged, &m, &o, &ports), Err(Refusal::Vlan));
        let frag = FlowKey {
            nw_frag: 1,
            ..udp_key()
        };
        assert_eq!(decide(&frag, &m, &o, &ports), Err(Refusal::Fragment));
    }

    #[test]
    fn mask_outside_the_key_only_on_ingress_zero_values() {
        let o = [DpAction::Output(2)];
        // ct_state=0 / reg0=0 / metadata=0 matched: every wire packet has them.
        let m = FlowMask {
            ct_state: u32::MAX,
            metadata: u64::MAX,
            regs: [u32::MAX; 8],
            ..l2_mask()
        };
        assert!(decide(&udp_key(), &m, &o, &ports).is_ok());
        // A packet seen with reg0=5 (after a recirculation) is not one a
        // wire packet can be.
        let k = FlowKey {
            regs: [5, 0, 0, 0, 0, 0, 0, 0],
            ..udp_key()
        };
        assert_eq!(decide(&k, &m, &o, &ports), Err(Refusal::Mask("reg")));
        let k = FlowKey {
            ct_state: 0x21,
            ..udp_key()
        };
        assert_eq!(decide(&k, &m, &o, &ports), Err(Refusal::Mask("ct_state")));
        // TCP flags change per packet: never on TCP; on UDP only when the
        // megaflow also matches nw_proto (else a TCP frame could hit it).
        let m = FlowMask {
            tcp_flags: 0x0fff,
            ..l2_mask()
        };
        assert_eq!(
            decide(&udp_key(), &m, &o, &ports),
            Err(Refusal::Mask("tcp_flags"))
        );
        let m = FlowMask {
            tcp_flags: 0x0fff,
            nw_proto: u8::MAX,
            ..l2_mask()
        };
        assert!(decide(&udp_key(), &m, &o, &ports).is_ok());
        let tcp = FlowKey {
            nw_proto: 6,
            tcp_flags: 0x10,
            ..udp_key()
        };
        assert_eq!(
            decide(&tcp, &m, &o, &ports),
            Err(Refusal::Mask("tcp_flags"))
        );
        let tcp0 = FlowKey {
            nw_proto: 6,
            tcp_flags: 0,
            ..udp_key()
        };
        assert_eq!(
            decide(&tcp0, &m, &o, &ports),
            Err(Refusal::Mask("tcp_flags"))
        );
        // Fields the key holds may be matched with any value.
        let m = FlowMask {
            tp_src: u16::MAX,
            nw_tos: u8::MAX,
            dl_src: [0xff; 6],
            ..l2_mask()
        };
        assert!(decide(&udp_key(), &m, &o, &ports).is_ok());
    }

    #[test]
    fn icmp_type_and_code_go_in_the_port_fields() {
        let k = FlowKey {
            nw_proto: 1,
            tp_src: 8,
            tp_dst: 0,
            ..udp_key()
        };
        let fk = decide(&k, &l2_mask(), &[DpAction::Output(2)], &ports)
            .unwrap()
            .key;
        assert_eq!(fk.tp_src, [0, 8]);
        assert_eq!(fk.tp_dst, [0, 0]);
    }

    #[test]
    fn refusals_have_names_and_messages() {
        for r in [
            Refusal::NotIpv4,
            Refusal::Vlan,
            Refusal::Fragment,
            Refusal::Mask("reg"),
            Refusal::Action,
            Refusal::Outputs,
            Refusal::Hairpin,
            Refusal::InPort,
            Refusal::OutPort,
            Refusal::Ttl,
        ] {
            assert!(!r.name().is_empty());
            assert!(!r.to_string().is_empty());
        }
        assert!(Refusal::Mask("tcp_flags").to_string().contains("tcp_flags"));
    }

    #[test]
    fn formats_for_offload_show() {
        let (mask, actions) = routed();
        let d = decide(&udp_key(), &mask, &actions, &ports).unwrap();
        let (a, out) = (d.action, d.out);
        let m = format_key(1, &masked(&d.key, &d.mask, 0), &d.mask);
        assert_eq!(m, "in_port=1,ip,nw_dst=10.0.1.0/24,nw_ttl=64");
        assert_eq!(
            format_action(out, &a),
            "set(eth(src=02:00:00:00:00:fe,dst=02:00:00:00:00:02)),set(ipv4(ttl=63)),2"
        );
    }
}
