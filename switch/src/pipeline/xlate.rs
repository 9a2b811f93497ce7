//! Slow-path translation: one packet key through the OpenFlow tables, with
//! OVS's semantics, into a megaflow (mask + datapath actions).
//!
//! Data enters as a [`FlowKey`] (a packet that missed the datapath caches),
//! the published [`Pipeline`] and the bridge's port list; it leaves as an
//! [`Xlation`]: the wildcard mask of every bit the decision depended on, the
//! minimal datapath action list, the rules and tables to credit, and the
//! packet's fields at each output. The same code path drives
//! `ofproto/trace`-style tracing through an optional [`TraceSink`], so what a
//! trace shows is exactly what the datapath installs.
//!
//! Semantics follow OVS 3.1 `ofproto/ofproto-dpif-xlate.c` with OpenFlow 1.3
//! (see /work/shared/OVS_SEMANTICS.md):
//! - actions are apply-actions, executed at once on a working copy of the
//!   key; later tables see every change;
//! - `goto_table` and `resubmit` both look a table up and run the rule found
//!   (OVS `xlate_table_action`); a miss does nothing more (OpenFlow 1.3
//!   table-miss without a controller is a drop), a resubmit then returns to
//!   its caller's remaining actions, and `goto_table` ends its own list;
//! - the resource limits of `xlate_resubmit_resource_check`: only a lookup
//!   into the same or an earlier table deepens the recursion (limit
//!   [`MAX_DEPTH`] = 64), and at most [`MAX_RESUBMITS`] lookups happen in all;
//!   exceeding either drops the whole packet, earlier outputs included;
//! - `dec_ttl` (`compose_dec_ttl`) at TTL 0 or 1 raises the invalid_ttl
//!   exception: the TTL stays, the rest of the current flow's actions are
//!   skipped, callers continue;
//! - `output:N` to the packet's own in_port is skipped (use `IN_PORT`);
//!   output to a port the bridge does not have is skipped (OVS "Nonexistent
//!   output port"); `CONTROLLER` is not supported yet: that output is
//!   dropped and reported as [`ActionOutcome::UnsupportedPort`];
//! - `NORMAL` is a learning switch (OVS `xlate_normal`, see [`super::l2`]):
//!   it reads `dl_src`, `dl_dst`, the VLAN and `in_port` (all exact in the
//!   mask), outputs to the destination's learned port or floods every port
//!   but the ingress one, and reports the source to learn through
//!   [`translate_l2`];
//! - header changes are committed lazily, like `commit_odp_actions` in
//!   `lib/odp-util.c`: just before each output, the working key is compared
//!   with the packet as the datapath has it so far, and only the fields that
//!   differ become `Set*`/VLAN actions. Changes after the last output are
//!   never emitted.
//!
//! The megaflow mask. It starts, like OVS `xlate_wc_init`, with `in_port`,
//! `dl_type` and (for IP) `nw_frag` exact, plus the VLAN present bit
//! (`VLAN_CFI`): our `dl_type` is the ethertype after the tags, so the CFI
//! bit plays the role of the outer ethertype OVS's datapath key always
//! matches. Every table lookup ORs the bits it consulted; `move` reads its
//! source bits; `dec_ttl` reads the TTL; prerequisite checks read `nw_proto`
//! and the CFI bit. Writes alone un-wildcard nothing, but a written header
//! field is compared at commit, and that comparison depends on the packet's
//! original value, so every field with any written bit is made exact (whole
//! field, as the emitted set writes the whole field). Tunnel fields are
//! committed (as one `SetTunnel`) only when an action wrote them.
//!
//! Never: panic on any key or pipeline, allocate per packet (this runs once
//! per megaflow miss, off the per-packet path), or emit an action whose
//! value depends on a bit outside the mask.

use std::sync::Arc;

use serde::Serialize;

use super::l2::{self, FdbView, L2Use, NormalOut};
use super::table::{Pipeline, Rule};
use crate::datapath::DpAction;
use crate::flow::action::FieldRange;
use crate::flow::key::{ethertype, ipproto, FRAG_ANY, FRAG_LATER, VLAN_CFI, VLAN_VID_MASK};
use crate::flow::{ofport, Action, FlowKey, FlowMask, PortNo, Prereq};

/// Maximum nesting of lookups into the same or an earlier table (OVS `MAX_DEPTH`).
pub const MAX_DEPTH: u32 = 64;
/// Maximum number of table lookups by resubmit/goto in one translation (OVS `MAX_RESUBMITS`).
pub const MAX_RESUBMITS: u32 = MAX_DEPTH * MAX_DEPTH;
/// VLAN tags translation tracks on one packet (outermost included). A push
/// beyond this is ignored and reported ([`ActionOutcome::VlanStackFull`]).
pub const MAX_VLAN_TAGS: usize = 4;

/// TPID assumed for the tag a packet arrived with (FlowKey does not record it).
const DEFAULT_TPID: u16 = ethertype::VLAN;

/// Why translation decided to drop (or stopped early).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum XlateDrop {
    /// A table miss with no earlier output (OpenFlow 1.3 table-miss = drop).
    NoMatch {
        /// The table that missed.
        table: u8,
    },
    /// `dec_ttl` on TTL 0 or 1 (OVS's invalid_ttl exception).
    InvalidTtl,
    /// Resubmit nesting deeper than 64: the whole packet is dropped.
    /// Also used when more than [`MAX_RESUBMITS`] lookups were made.
    ResubmitDepth,
    /// The matching flow has an empty action list.
    ExplicitDrop,
    /// `route` on TTL / hop limit 0 or 1 (a router's "time exceeded").
    TtlExceeded,
    /// `route` found no route for the destination.
    NoRoute,
    /// `route` found a route whose next hop has no known MAC.
    NoNeighbour,
}

/// The result of translating one key.
#[derive(Clone, Debug)]
pub struct Xlation {
    /// Wildcard mask: every bit translation depended on (the megaflow mask).
    pub mask: FlowMask,
    /// Datapath actions (empty = drop).
    pub actions: Vec<DpAction>,
    /// Rules visited, in order, to credit with the packet's statistics.
    pub rules: Vec<Arc<Rule>>,
    /// Table lookups made: (table, found a rule), for table statistics.
    pub tables: Vec<(u8, bool)>,
    /// Each output: the port, and the packet's fields as they are at that output.
    /// Empty when the whole packet was dropped ([`XlateDrop::ResubmitDepth`]).
    pub outputs: Vec<(PortNo, FlowKey)>,
    /// The packet's fields after every action ran.
    pub final_key: FlowKey,
    /// Group and bucket counters to credit with the packet's statistics
    /// (the group's once, plus each bucket the packet went through).
    pub group_counters: Vec<Arc<crate::group::Counter>>,
    /// Why the packet was (partly) dropped, if it was.
    ///
    /// `ResubmitDepth` wins over everything (nothing is sent); otherwise
    /// `InvalidTtl` if the exception happened (the packet-in it stands for is
    /// lost even when other outputs were made); otherwise, only when nothing
    /// was output at all, the first `NoMatch` (a miss in table 0 or after
    /// `goto_table`; a resubmit miss is a no-op, not a drop) or
    /// `ExplicitDrop` met. A packet whose flows simply never output has `None`.
    pub drop: Option<XlateDrop>,
}

/// Something notable an action did, reported to a [`TraceSink`] right after
/// [`TraceSink::action`] (an action may report several, e.g. a flood).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionOutcome {
    /// The packet was sent to `port` (a datapath `Output` was emitted).
    Output {
        /// The port.
        port: PortNo,
    },
    /// `output:N` with N the packet's in_port: skipped (OpenFlow; use `IN_PORT`).
    SkippedInPort {
        /// The port.
        port: PortNo,
    },
    /// Output to a port the bridge does not have: skipped.
    NonexistentPort {
        /// The port.
        port: PortNo,
    },
    /// Output to a reserved port this switch does not implement yet
    /// (`NORMAL`, `CONTROLLER`, `TABLE`, `ANY`): that output is dropped.
    UnsupportedPort {
        /// The port.
        port: PortNo,
    },
    /// The written (or, for `move`, read) field's prerequisites do not hold
    /// for this packet: the action was ignored, as OVS does.
    PrereqUnmet {
        /// The field's name.
        field: &'static str,
    },
    /// The action writes a read-only field (`dl_type`, `nw_proto`, `ct_*`...;
    /// the flow parser rejects these): ignored.
    NotWritable {
        /// The field's name.
        field: &'static str,
    },
    /// A `load`/`move` bit range does not fit its field: ignored.
    BadRange {
        /// The field's name.
        field: &'static str,
    },
    /// `dec_ttl` decremented the TTL / hop limit to `ttl`.
    DecTtl {
        /// The new TTL.
        ttl: u8,
    },
    /// `dec_ttl` on TTL 0 or 1: the invalid_ttl exception; the rest of this
    /// flow's actions are skipped.
    InvalidTtl {
        /// The TTL found.
        ttl: u8,
        /// True for IPv6 (hop limit).
        ipv6: bool,
    },
    /// `dec_ttl` on a packet that is neither IPv4 nor IPv6: no-op.
    DecTtlNotIp,
    /// `route` matched `prefix_len` bits in `table` and chose next hop
    /// `nexthop` (of `n_nexthops`, by flow hash when more than one) on `port`.
    Routed {
        /// Route table.
        table: u8,
        /// Length of the matching prefix.
        prefix_len: u8,
        /// Index of the chosen next hop.
        nexthop: u8,
        /// Number of next hops (ECMP when more than one).
        n_nexthops: u8,
        /// Egress port.
        port: PortNo,
        /// The TTL / hop limit after the decrement.
        ttl: u8,
    },
    /// `route`: no route in `table`; the packet is dropped (`no_route`) and
    /// the rest of this flow's actions are skipped.
    NoRoute {
        /// Route table.
        table: u8,
    },
    /// On TTL expiry (`dec_ttl` or `route`): an ICMP time exceeded is sent
    /// back out of the ingress port from the router address `src` (a
    /// ferroswitch departure from OVS, whose `dec_ttl` sends a packet-in).
    IcmpTimeExceeded {
        /// The router address the error comes from.
        src: String,
    },
    /// On TTL expiry: no ICMP time exceeded is sent, and why.
    NoIcmpError {
        /// Why not.
        reason: crate::packet::icmp_error::NoError,
    },
    /// `route` on TTL / hop limit 0 or 1: dropped (`ttl_exceeded`), the rest
    /// of this flow's actions skipped.
    TtlExceeded {
        /// The TTL found.
        ttl: u8,
    },
    /// `route`: the next hop's MAC is neither on the route nor in the
    /// neighbour table: dropped (`no_neighbour`).
    NoNeighbour {
        /// Route table.
        table: u8,
    },
    /// `route` on a packet that is neither IPv4 nor IPv6: no-op.
    RouteNotIp,
    /// `group:N` chose `bucket` (a bucket id) of `n_buckets`; for a select
    /// group `hashed` names what the choice hashed. The bucket's actions
    /// follow, on a clone of the packet (changes are undone after them).
    Group {
        /// The group.
        group: u32,
        /// Its type (`select`, `all`, `indirect`, `ff`).
        group_type: &'static str,
        /// The bucket id chosen (for `all`, the bucket starting now).
        bucket: u32,
        /// Buckets in the group.
        n_buckets: usize,
        /// Select groups: the fields the choice hashed.
        #[serde(skip_serializing_if = "Option::is_none")]
        hashed: Option<String>,
    },
    /// `group:N`: the group has no bucket to run (empty, or no live bucket
    /// of non-zero weight): this copy of the packet is dropped.
    GroupNoBucket {
        /// The group.
        group: u32,
    },
    /// `group:N` names a group that does not exist (flows naming a group
    /// are deleted with it, so only a race could show this): ignored.
    GroupMissing {
        /// The group.
        group: u32,
    },
    /// A group bucket's actions ended: the packet's headers are back to
    /// what they were before `group:N` (OVS `xlate_group_bucket`).
    GroupBucketEnd {
        /// The group.
        group: u32,
        /// The bucket id.
        bucket: u32,
    },
    /// `pop_vlan` on an untagged packet: no-op.
    PopVlanUntagged,
    /// `push_vlan` with [`MAX_VLAN_TAGS`] tags already: ignored.
    VlanStackFull,
    /// `goto_table` to a table not after the current one (rejected by the
    /// flow parser; ignored here defensively).
    BadGoto {
        /// Target table.
        table: u8,
        /// Current table.
        current: u8,
    },
    /// Lookup nesting reached [`MAX_DEPTH`]: translation fails, the whole
    /// packet is dropped.
    DepthExceeded {
        /// The limit.
        depth: u32,
    },
    /// More than [`MAX_RESUBMITS`] lookups: translation fails, the whole
    /// packet is dropped.
    TooManyResubmits {
        /// The limit.
        resubmits: u32,
    },
    /// NORMAL: the source address is new on the ingress port (learned, or
    /// moved there, when the datapath forwards the packet).
    NormalLearn {
        /// The source address.
        mac: String,
        /// Its VLAN.
        vlan: u16,
        /// The ingress port.
        port: PortNo,
    },
    /// NORMAL: the destination is learned on `port`.
    NormalKnown {
        /// The learned port.
        port: PortNo,
    },
    /// NORMAL: unknown unicast, broadcast or multicast destination: flooding
    /// every port but the ingress one.
    NormalFlood {
        /// The VLAN flooded.
        vlan: u16,
    },
    /// NORMAL dropped the packet.
    NormalDrop {
        /// Why (OVS's trace wording).
        reason: &'static str,
    },
    /// `ct`: the packet goes through connection tracking in `zone`
    /// (committing when `commit`); with `table`, a copy is recirculated
    /// and resumes in that table with the tracker's `ct_*` fields.
    Conntrack {
        /// Zone.
        zone: u16,
        /// `commit`.
        commit: bool,
        /// Recirculation table.
        table: Option<u8>,
        /// The `nat(...)` argument as printed (None without nat).
        nat: Option<String>,
    },
    /// `ct_clear`: the `ct_*` fields are now zero.
    CtClear,
}

/// Receives the walk of one translation, for `ofproto/trace`. Calls nest:
/// `table` opens a table visit (a found rule or a miss) that `table_end`
/// closes; between them come the rule's `action`s, each followed by its
/// `note`s and, for `resubmit`/`goto_table`, by the nested table visit.
pub trait TraceSink {
    /// A lookup in `table` found `rule` (None: a miss). Opens a visit.
    fn table(&mut self, table: u8, rule: Option<&Arc<Rule>>);
    /// Closes the innermost open visit.
    fn table_end(&mut self);
    /// The current rule's next action starts.
    fn action(&mut self, action: &Action);
    /// What the current action did.
    fn note(&mut self, outcome: ActionOutcome);
}

/// Translate `key` through `pipeline`, starting in table 0. `ports` lists the
/// bridge's ports (for FLOOD/ALL and to skip outputs to ports that do not
/// exist). Never fails: a problem is a drop.
pub fn translate(pipeline: &Pipeline, ports: &[PortNo], key: &FlowKey) -> Xlation {
    Xlator::new(pipeline, ports, key, None).run()
}

/// [`translate`] with the bridge's MAC table for `NORMAL`: also returns what
/// every NORMAL execution read and whether its source is to be learned (the
/// datapath queues the learning and tags the megaflow with it).
pub fn translate_l2(
    pipeline: &Pipeline,
    ports: &[PortNo],
    key: &FlowKey,
    fdb: &FdbView,
) -> (Xlation, Vec<L2Use>) {
    let mut uses = Vec::new();
    let mut x = Xlator::new(pipeline, ports, key, None);
    x.fdb = Some(fdb);
    x.l2_uses = Some(&mut uses);
    (x.run(), uses)
}

/// [`translate_traced`] with the bridge's MAC table for `NORMAL`.
pub fn translate_traced_l2(
    pipeline: &Pipeline,
    ports: &[PortNo],
    key: &FlowKey,
    fdb: &FdbView,
    sink: &mut dyn TraceSink,
) -> Xlation {
    let mut x = Xlator::new(pipeline, ports, key, Some(sink));
    x.fdb = Some(fdb);
    x.run()
}

/// [`translate`], reporting every step to `sink` (the trace uses this; the
/// datapath uses [`translate`]: one code path for both).
pub fn translate_traced(
    pipeline: &Pipeline,
    ports: &[PortNo],
    key: &FlowKey,
    sink: &mut dyn TraceSink,
) -> Xlation {
    Xlator::new(pipeline, ports, key, Some(sink)).run()
}

/// One VLAN tag: (TPID, TCI with `VLAN_CFI`).
type Tag = (u16, u16);

/// The tags of a packet beyond what `FlowKey::vlan_tci` shows: the tags below
/// the outermost one (pushed by actions), innermost first, and the outermost
/// tag's TPID. The full stack is `below ++ [(top_tpid, vlan_tci)]` when
/// `vlan_tci` has `VLAN_CFI`.
#[derive(Clone, Copy, Debug)]
struct VlanStack {
    below: [Tag; MAX_VLAN_TAGS],
    n_below: usize,
    top_tpid: u16,
}

impl VlanStack {
    const EMPTY: VlanStack = VlanStack {
        below: [(0, 0); MAX_VLAN_TAGS],
        n_below: 0,
        top_tpid: DEFAULT_TPID,
    };

    /// Every tag, innermost first, given the key's `vlan_tci`.
    fn tags(&self, vlan_tci: u16) -> ([Tag; MAX_VLAN_TAGS + 1], usize) {
        let mut out = [(0u16, 0u16); MAX_VLAN_TAGS + 1];
        let n = self.n_below.min(MAX_VLAN_TAGS);
        out[..n].copy_from_slice(&self.below[..n]);
        let mut len = n;
        if vlan_tci & VLAN_CFI != 0 {
            out[len] = (self.top_tpid, vlan_tci);
            len += 1;
        }
        (out, len)
    }
}

/// How a table lookup was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The first lookup, in table 0.
    Start,
    /// `goto_table`.
    Goto,
    /// `resubmit`.
    Resubmit,
}

/// What a frame executes: a rule's actions, or a group bucket's.
#[derive(Clone)]
enum Acts {
    Rule(Arc<Rule>),
    /// Bucket `idx` of `group`; `all` = the other buckets follow (type all).
    Bucket {
        group: Arc<crate::group::Group>,
        idx: usize,
        all: bool,
    },
}

impl Acts {
    fn actions(&self) -> &[Action] {
        match self {
            Acts::Rule(r) => &r.flow.actions,
            Acts::Bucket { group, idx, .. } => group
                .desc
                .buckets
                .get(*idx)
                .map_or(&[][..], |b| &b.actions[..]),
        }
    }
}

/// The packet's headers when a group bucket starts (restored at its end).
#[derive(Clone, Copy)]
struct Saved {
    flow: FlowKey,
    vlans: VlanStack,
}

/// One rule (or group bucket) being executed (an explicit stack instead of
/// recursion, so deep resubmit chains cannot overflow the thread's stack).
struct Frame {
    acts: Acts,
    pc: usize,
    table: u8,
    deepens: bool,
    /// Group buckets: the headers to restore when the bucket ends.
    saved: Option<Saved>,
}

struct Xlator<'a> {
    pipeline: &'a Pipeline,
    ports: &'a [PortNo],
    sink: Option<&'a mut dyn TraceSink>,
    /// Working key: the packet as the OpenFlow actions have modified it.
    flow: FlowKey,
    /// The packet as the datapath actions emitted so far leave it.
    base: FlowKey,
    flow_vlans: VlanStack,
    base_vlans: VlanStack,
    /// Megaflow mask being accumulated.
    wc: FlowMask,
    /// Bits any action wrote (candidates for commit).
    written: FlowMask,
    actions: Vec<DpAction>,
    rules: Vec<Arc<Rule>>,
    tables: Vec<(u8, bool)>,
    outputs: Vec<(PortNo, FlowKey)>,
    group_counters: Vec<Arc<crate::group::Counter>>,
    stack: Vec<Frame>,
    depth: u32,
    resubmits: u32,
    /// Translation failed (resource limit): drop everything.
    failed: bool,
    invalid_ttl: bool,
    /// A `route` action dropped the packet (TtlExceeded, NoRoute, NoNeighbour).
    route_drop: Option<XlateDrop>,
    /// First NoMatch / ExplicitDrop met.
    first_drop: Option<XlateDrop>,
    /// The packet as received (ICMP errors are judged on and quote it).
    orig: FlowKey,
    /// An ICMP time exceeded to send (from this address), if the TTL expired.
    icmp_te: Option<crate::packet::icmp_error::ErrorSrc>,
    /// The MAC table NORMAL consults (None: an empty one).
    fdb: Option<&'a FdbView>,
    /// Where NORMAL records what it read (None: nobody asked).
    l2_uses: Option<&'a mut Vec<L2Use>>,
}

impl<'a> Xlator<'a> {
    fn new(
        pipeline: &'a Pipeline,
        ports: &'a [PortNo],
        key: &FlowKey,
        sink: Option<&'a mut dyn TraceSink>,
    ) -> Self {
        // OVS xlate_wc_init: fields always examined.
        let mut wc = FlowKey::ZERO;
        wc.in_port = u32::MAX;
        wc.dl_type = u16::MAX;
        wc.vlan_tci = VLAN_CFI;
        // Which pass of the packet this is (0: fresh from a port).
        wc.recirc_id = u32::MAX;
        if is_ip(key) {
            wc.nw_frag = FRAG_ANY | FRAG_LATER;
        }
        Xlator {
            pipeline,
            ports,
            sink,
            flow: *key,
            base: *key,
            flow_vlans: VlanStack::EMPTY,
            base_vlans: VlanStack::EMPTY,
            wc,
            written: FlowKey::ZERO,
            actions: Vec::new(),
            rules: Vec::new(),
            tables: Vec::new(),
            outputs: Vec::new(),
            group_counters: Vec::new(),
            stack: Vec::new(),
            depth: 0,
            resubmits: 0,
            failed: false,
            invalid_ttl: false,
            route_drop: None,
            first_drop: None,
            orig: *key,
            icmp_te: None,
            fdb: None,
            l2_uses: None,
        }
    }

    fn note(&mut self, outcome: ActionOutcome) {
        if let Some(s) = self.sink.as_deref_mut() {
            s.note(outcome);
        }
    }

    fn run(mut self) -> Xlation {
        // A packet recirculated by `ct(table=T)` carries recirc_id T + 1
        // and resumes in table T (OVS resumes from its frozen state; our
        // key already carries registers and metadata, so the table is
        // all there is to remember). An id no `ct` gives (above 255) looks
        // up the permanently empty table 255: a miss, hence a drop.
        let start = match self.flow.recirc_id {
            0 => 0,
            r => u8::try_from(r - 1).unwrap_or(u8::MAX),
        };
        self.lookup_and_enter(start, None, Via::Start);
        while !self.failed {
            let Some(top) = self.stack.last_mut() else {
                break;
            };
            if top.pc >= top.acts.actions().len() {
                self.leave_frame();
                continue;
            }
            let acts = top.acts.clone();
            let pc = top.pc;
            top.pc += 1;
            let table = top.table;
            let Some(action) = acts.actions().get(pc) else {
                continue;
            };
            if let Some(s) = self.sink.as_deref_mut() {
                s.action(action);
            }
            self.execute(action, table);
        }
        // A failure leaves frames open: close them so a trace nests properly.
        while !self.stack.is_empty() {
            self.leave_frame();
        }
        self.finish()
    }

    fn leave_frame(&mut self) {
        let Some(f) = self.stack.pop() else {
            return;
        };
        self.depth -= u32::from(f.deepens);
        match f.acts {
            Acts::Rule(_) => {
                if let Some(s) = self.sink.as_deref_mut() {
                    s.table_end();
                }
            }
            Acts::Bucket { group, idx, all } => {
                // OVS xlate_group_bucket: roll the flow back, as if each
                // bucket had worked on its own clone of the packet.
                if let Some(sv) = f.saved {
                    self.flow = sv.flow;
                    self.flow_vlans = sv.vlans;
                }
                let bucket = group.desc.buckets.get(idx).map_or(0, |b| b.id);
                self.note(ActionOutcome::GroupBucketEnd {
                    group: group.desc.id,
                    bucket,
                });
                if all && !self.failed && idx + 1 < group.desc.buckets.len() {
                    self.enter_bucket(group, idx + 1, true, f.table, f.deepens);
                }
            }
        }
    }

    /// Start executing bucket `idx` of `group` on a clone of the packet.
    fn enter_bucket(
        &mut self,
        group: Arc<crate::group::Group>,
        idx: usize,
        all: bool,
        table: u8,
        deepens: bool,
    ) {
        let Some(b) = group.desc.buckets.get(idx) else {
            return;
        };
        self.group_counters.push(Arc::clone(&b.stats));
        let hashed = (group.desc.group_type == crate::group::GroupType::Select).then(|| {
            if group.desc.fields.is_empty() {
                "5-tuple".to_string()
            } else {
                group
                    .desc
                    .fields
                    .iter()
                    .map(|f| crate::flow::format::mf_name(f.field))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        });
        self.note(ActionOutcome::Group {
            group: group.desc.id,
            group_type: group.desc.group_type.name(),
            bucket: b.id,
            n_buckets: group.desc.buckets.len(),
            hashed,
        });
        self.depth += u32::from(deepens);
        self.stack.push(Frame {
            acts: Acts::Bucket { group, idx, all },
            pc: 0,
            table,
            deepens,
            saved: Some(Saved {
                flow: self.flow,
                vlans: self.flow_vlans,
            }),
        });
    }

    /// `group:N` (OVS xlate_group_action): subject to the resubmit limits,
    /// choose the bucket(s) and run them, each on a clone of the packet.
    fn group(&mut self, id: u32, table: u8) {
        let Some(group) = self.pipeline.groups().get(id).cloned() else {
            self.note(ActionOutcome::GroupMissing { group: id });
            return;
        };
        if self.depth >= MAX_DEPTH {
            self.note(ActionOutcome::DepthExceeded { depth: MAX_DEPTH });
            self.failed = true;
            return;
        }
        if self.resubmits >= MAX_RESUBMITS {
            self.note(ActionOutcome::TooManyResubmits {
                resubmits: MAX_RESUBMITS,
            });
            self.failed = true;
            return;
        }
        self.resubmits += 1;
        let choice = group.select(&self.flow, &mut self.wc, self.ports, self.pipeline.groups());
        match choice {
            crate::group::Choice::None => {
                self.group_counters.push(Arc::clone(&group.stats));
                self.note(ActionOutcome::GroupNoBucket { group: id });
            }
            crate::group::Choice::One(i) => {
                self.group_counters.push(Arc::clone(&group.stats));
                self.enter_bucket(group, i, false, table, true);
            }
            crate::group::Choice::All => {
                self.group_counters.push(Arc::clone(&group.stats));
                if group.desc.buckets.is_empty() {
                    self.note(ActionOutcome::GroupNoBucket { group: id });
                } else {
                    self.enter_bucket(group, 0, true, table, true);
                }
            }
        }
    }

    /// End the current rule's action list (goto_table, invalid_ttl).
    fn end_current_frame(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            top.pc = usize::MAX;
        }
    }

    fn finish(self) -> Xlation {
        let mut actions = self.actions;
        if let (Some(src), false) = (self.icmp_te, self.failed) {
            // First, so it quotes the packet as received (set actions for
            // earlier outputs have not touched it yet).
            actions.insert(0, DpAction::IcmpTimeExceeded(src));
        }
        let (actions, outputs, drop) = if self.failed {
            (Vec::new(), Vec::new(), Some(XlateDrop::ResubmitDepth))
        } else if self.invalid_ttl {
            (actions, self.outputs, Some(XlateDrop::InvalidTtl))
        } else if let Some(d) = self.route_drop {
            (actions, self.outputs, Some(d))
        } else if self.outputs.is_empty() {
            (actions, self.outputs, self.first_drop)
        } else {
            (actions, self.outputs, None)
        };
        Xlation {
            mask: self.wc,
            actions,
            rules: self.rules,
            tables: self.tables,
            outputs,
            final_key: self.flow,
            group_counters: if self.failed {
                Vec::new()
            } else {
                self.group_counters
            },
            drop,
        }
    }

    /// OVS xlate_table_action: look `table` up (with `in_port` pretended for
    /// the lookup only) and start executing the rule found. Every lookup but
    /// the first is subject to the resource limits.
    fn lookup_and_enter(&mut self, table: u8, in_port: Option<PortNo>, via: Via) {
        let current = self.stack.last().map_or(0, |f| f.table);
        let checked = via != Via::Start;
        if checked {
            if self.depth >= MAX_DEPTH {
                self.note(ActionOutcome::DepthExceeded { depth: MAX_DEPTH });
                self.failed = true;
                return;
            }
            if self.resubmits >= MAX_RESUBMITS {
                self.note(ActionOutcome::TooManyResubmits {
                    resubmits: MAX_RESUBMITS,
                });
                self.failed = true;
                return;
            }
        }
        let saved_in_port = self.flow.in_port;
        if let Some(p) = in_port {
            self.flow.in_port = p;
        }
        let found = self
            .pipeline
            .lookup(table, &self.flow, &mut self.wc)
            .cloned();
        self.flow.in_port = saved_in_port;
        self.tables.push((table, found.is_some()));
        if let Some(s) = self.sink.as_deref_mut() {
            s.table(table, found.as_ref());
        }
        let Some(rule) = found else {
            // A miss in the first table or after goto_table is the OpenFlow
            // 1.3 table-miss drop; a resubmit miss is only a no-op.
            if via != Via::Resubmit && self.first_drop.is_none() {
                self.first_drop = Some(XlateDrop::NoMatch { table });
            }
            if let Some(s) = self.sink.as_deref_mut() {
                s.table_end();
            }
            return;
        };
        if rule.flow.actions.is_empty() && self.first_drop.is_none() {
            self.first_drop = Some(XlateDrop::ExplicitDrop);
        }
        if checked {
            self.resubmits += 1;
        }
        let deepens = checked && table <= current;
        self.depth += u32::from(deepens);
        self.rules.push(Arc::clone(&rule));
        self.stack.push(Frame {
            acts: Acts::Rule(rule),
            pc: 0,
            table,
            deepens,
            saved: None,
        });
    }

    fn execute(&mut self, action: &Action, table: u8) {
        match action {
            Action::Output(port) => self.output(*port),
            Action::SetField { field, value, mask } => {
                let info = field.info();
                if !info.writable {
                    self.note(ActionOutcome::NotWritable { field: info.name });
                    return;
                }
                if !self.prereq_ok(info.prereq) {
                    self.note(ActionOutcome::PrereqUnmet { field: info.name });
                    return;
                }
                let m = *mask & info.max_value();
                let old = info.get(&self.flow);
                info.set(&mut self.flow, (old & !m) | (*value & m));
                let w = info.get(&self.written);
                info.set(&mut self.written, w | m);
                // A write to the VLAN fields needs no reconciliation: the
                // outermost tag lives in `flow.vlan_tci` itself; setting CFI on
                // an untagged packet creates a tag (as OVS flow_set_vlan_vid
                // does) and clearing it removes the outermost one. Commit
                // compares whole tag stacks.
            }
            Action::Load { dst, value } => {
                if !self.range_ok(dst) {
                    return;
                }
                let info = dst.field.info();
                if !info.writable {
                    self.note(ActionOutcome::NotWritable { field: info.name });
                    return;
                }
                if !self.prereq_ok(info.prereq) {
                    self.note(ActionOutcome::PrereqUnmet { field: info.name });
                    return;
                }
                info.set_bits(&mut self.flow, dst.ofs, dst.n_bits, *value);
                info.set_bits(&mut self.written, dst.ofs, dst.n_bits, u128::MAX);
            }
            Action::Move { src, dst } => {
                if !self.range_ok(src) || !self.range_ok(dst) {
                    return;
                }
                let (si, di) = (src.field.info(), dst.field.info());
                if !di.writable {
                    self.note(ActionOutcome::NotWritable { field: di.name });
                    return;
                }
                if !self.prereq_ok(si.prereq) {
                    self.note(ActionOutcome::PrereqUnmet { field: si.name });
                    return;
                }
                if !self.prereq_ok(di.prereq) {
                    self.note(ActionOutcome::PrereqUnmet { field: di.name });
                    return;
                }
                let n = src.n_bits.min(dst.n_bits);
                let v = si.get_bits(&self.flow, src.ofs, n);
                // The result depends on the source bits: un-wildcard them.
                si.set_bits(&mut self.wc, src.ofs, n, u128::MAX);
                di.set_bits(&mut self.flow, dst.ofs, n, v);
                di.set_bits(&mut self.written, dst.ofs, n, u128::MAX);
            }
            Action::DecTtl => self.dec_ttl(),
            Action::Route { table: t } => self.route(*t),
            Action::PushVlan(tpid) => self.push_vlan(*tpid),
            Action::PopVlan => self.pop_vlan(),
            Action::Resubmit { in_port, table: t } => {
                let target = t.unwrap_or(table);
                let in_port = match in_port {
                    Some(ofport::IN_PORT) => None,
                    other => *other,
                };
                self.lookup_and_enter(target, in_port, Via::Resubmit);
            }
            Action::WriteMetadata { value, mask } => {
                self.flow.metadata = (self.flow.metadata & !mask) | (value & mask);
                self.written.metadata |= mask;
            }
            Action::Group(g) => self.group(*g, table),
            Action::Ct(ct) => self.conntrack(ct),
            Action::CtClear => {
                // OVS compose_ct_clear_action / flow_clear_conntrack.
                self.flow.ct_state = 0;
                self.flow.ct_zone = 0;
                self.flow.ct_mark = 0;
                self.flow.ct_label = [0; 16];
                self.note(ActionOutcome::CtClear);
            }
            Action::GotoTable(t) => {
                if *t <= table {
                    self.note(ActionOutcome::BadGoto {
                        table: *t,
                        current: table,
                    });
                    self.end_current_frame();
                    return;
                }
                // goto_table is the last instruction: nothing of this flow
                // runs after it, whatever the lookup finds.
                self.end_current_frame();
                self.lookup_and_enter(*t, None, Via::Goto);
            }
        }
    }

    /// OVS compose_conntrack_action: commit the header changes made so far
    /// (the tracker sees the packet as modified), emit the datapath `ct`
    /// (and `recirc`), and carry on with this pass's key unchanged: the
    /// `ct_*` fields are only known to the recirculated copy.
    fn conntrack(&mut self, ct: &crate::flow::CtAction) {
        let zone = match ct.zone {
            crate::flow::CtZone::Imm(z) => z,
            crate::flow::CtZone::Field(r) => {
                if !self.range_ok(&r) {
                    return;
                }
                let info = r.field.info();
                info.set_bits(&mut self.wc, r.ofs, r.n_bits, u128::MAX);
                u16::try_from(info.get_bits(&self.flow, r.ofs, r.n_bits.min(16))).unwrap_or(0)
            }
        };
        self.commit();
        if ct.table.is_some() {
            // The recirculated key takes these from this key (`DpCt::frozen`):
            // every packet of the megaflow must have the same ones.
            self.wc.regs = [u32::MAX; 8];
            self.wc.metadata = u64::MAX;
            self.wc.tun_id = u64::MAX;
            self.wc.tun_src = u32::MAX;
            self.wc.tun_dst = u32::MAX;
        }
        self.actions
            .push(DpAction::Ct(Box::new(crate::datapath::actions::DpCt {
                exec: crate::conntrack::CtExec {
                    zone,
                    commit: ct.commit,
                    mark: ct.mark.unwrap_or((0, 0)),
                    label: ct.label.unwrap_or((0, 0)),
                    nat: ct.nat,
                },
                recirc: ct.table,
                frozen: self.flow,
            })));
        self.note(ActionOutcome::Conntrack {
            zone,
            commit: ct.commit,
            table: ct.table,
            nat: ct.nat.map(|n| n.format()),
        });
    }

    fn range_ok(&mut self, r: &FieldRange) -> bool {
        let info = r.field.info();
        let ok = r.n_bits > 0 && r.ofs.checked_add(r.n_bits).is_some_and(|e| e <= info.width);
        if !ok {
            self.note(ActionOutcome::BadRange { field: info.name });
        }
        ok
    }

    /// OVS mf_are_prereqs_ok with a wildcard mask: the check reads
    /// `dl_type` (always exact), `nw_proto`, `nw_frag` and the CFI bit.
    fn prereq_ok(&mut self, p: Prereq) -> bool {
        match p {
            Prereq::None | Prereq::Ipv4 | Prereq::Ipv6 | Prereq::IpAny | Prereq::Arp => {
                p.satisfied_by(&self.flow)
            }
            Prereq::Vlan => {
                self.wc.vlan_tci |= VLAN_CFI;
                p.satisfied_by(&self.flow)
            }
            Prereq::Tcp
            | Prereq::Udp
            | Prereq::TcpOrUdp
            | Prereq::Sctp
            | Prereq::Icmp
            | Prereq::Icmpv6 => {
                if !is_ip(&self.flow) {
                    return false;
                }
                self.wc.nw_proto = u8::MAX;
                // A later fragment has no L4 header to read or write.
                p.satisfied_by(&self.flow) && self.flow.nw_frag & FRAG_LATER == 0
            }
            // OVS is_nd(flow, wc): reads the protocol and the ICMPv6 type and code.
            Prereq::Nd | Prereq::NdSolicit | Prereq::NdAdvert => {
                if !is_ip(&self.flow) {
                    return false;
                }
                self.wc.nw_proto = u8::MAX;
                if self.flow.dl_type == ethertype::IPV6 && self.flow.nw_proto == ipproto::ICMPV6 {
                    self.wc.tp_src = u16::MAX;
                    self.wc.tp_dst = u16::MAX;
                }
                p.satisfied_by(&self.flow) && self.flow.nw_frag & FRAG_LATER == 0
            }
        }
    }

    fn dec_ttl(&mut self) {
        // OVS compose_dec_ttl.
        if !is_ip(&self.flow) {
            self.note(ActionOutcome::DecTtlNotIp);
            return;
        }
        self.wc.nw_ttl = u8::MAX;
        let ttl = self.flow.nw_ttl;
        if ttl > 1 {
            self.flow.nw_ttl = ttl - 1;
            self.written.nw_ttl = u8::MAX;
            self.note(ActionOutcome::DecTtl { ttl: ttl - 1 });
        } else {
            self.invalid_ttl = true;
            let ipv6 = self.flow.dl_type == ethertype::IPV6;
            self.note(ActionOutcome::InvalidTtl { ttl, ipv6 });
            self.time_exceeded();
            self.end_current_frame();
        }
    }

    /// The TTL expired: decide whether an ICMP time exceeded goes back
    /// (RFC 1812 §5.3.1, RFC 4443 §3.3), judged on the packet as received.
    /// One error per packet, however many expiries a pipeline meets.
    fn time_exceeded(&mut self) {
        if self.icmp_te.is_some() {
            return;
        }
        let cfg = *self.pipeline.icmp_errors();
        match crate::packet::icmp_error::eligible(&self.orig, &cfg, &mut self.wc) {
            Ok(src) => {
                self.icmp_te = Some(src);
                self.note(ActionOutcome::IcmpTimeExceeded {
                    src: src.ip().to_string(),
                });
            }
            // Without a router address the feature is off: the trace stays
            // exactly OVS's.
            Err(crate::packet::icmp_error::NoError::NoRouterAddress) => {}
            Err(reason) => self.note(ActionOutcome::NoIcmpError { reason }),
        }
    }

    /// The `route` action (see `crate::route`). Un-wildcards exactly the
    /// destination bits that decided the longest-prefix match (all of them
    /// for a directly connected route, whose next hop is the destination
    /// itself), the 5-tuple when ECMP hashed it, and the TTL.
    fn route(&mut self, table: u8) {
        if !is_ip(&self.flow) {
            self.note(ActionOutcome::RouteNotIp);
            return;
        }
        let routes = self.pipeline.routes_arc();
        let v6 = self.flow.dl_type == ethertype::IPV6;
        let hit = if v6 {
            routes.lookup_v6(table, self.flow.ipv6_dst)
        } else {
            routes.lookup_v4(table, self.flow.nw_dst)
        };
        if v6 {
            let m = if hit.bits == 0 {
                0
            } else {
                u128::MAX << (128 - hit.bits.min(128))
            };
            let w = u128::from_be_bytes(self.wc.ipv6_dst) | m;
            self.wc.ipv6_dst = w.to_be_bytes();
        } else if hit.bits > 0 {
            self.wc.nw_dst |= u32::MAX << (32 - hit.bits.min(32));
        }
        let Some(route) = hit.route else {
            self.note(ActionOutcome::NoRoute { table });
            self.route_drop.get_or_insert(XlateDrop::NoRoute);
            self.end_current_frame();
            return;
        };
        let (idx, hop) = if route.nexthops.len() > 1 {
            crate::route::ecmp_hash_mask(&self.flow, &mut self.wc);
            let h = crate::route::ecmp_hash(&self.flow);
            let Some(hop) = route.select(h) else {
                return;
            };
            let idx = route.nexthops.iter().position(|x| x == hop).unwrap_or(0);
            (idx, hop.clone())
        } else {
            let Some(hop) = route.nexthops.first() else {
                return;
            };
            (0, hop.clone())
        };
        // RFC 1812 §5.3.1 / RFC 8200 §3: a router never forwards a packet
        // whose TTL / hop limit would reach 0.
        self.wc.nw_ttl = u8::MAX;
        let ttl = self.flow.nw_ttl;
        if ttl <= 1 {
            self.note(ActionOutcome::TtlExceeded { ttl });
            self.time_exceeded();
            self.route_drop.get_or_insert(XlateDrop::TtlExceeded);
            self.end_current_frame();
            return;
        }
        let dst_mac = match (hop.mac, hop.via) {
            (Some(m), _) => Some(m),
            (None, Some(gw)) => routes.neighbour(gw),
            (None, None) => {
                // Connected: the destination itself is the neighbour.
                if v6 {
                    self.wc.ipv6_dst = [0xff; 16];
                    routes.neighbour(crate::route::v6(self.flow.ipv6_dst))
                } else {
                    self.wc.nw_dst = u32::MAX;
                    routes.neighbour(crate::route::v4(self.flow.nw_dst))
                }
            }
        };
        // No static MAC: a port that resolves next hops itself (ARP on a
        // routed uplink, `route::uplink`) gets the IPv4 next hop and writes
        // the MAC per packet from its own cache; static entries win.
        let resolve_at_port = if dst_mac.is_none() && !v6 && routes.resolves(hop.port) {
            match hop.via {
                Some(std::net::IpAddr::V4(gw)) => Some(u32::from(gw)),
                Some(std::net::IpAddr::V6(_)) => None,
                None => Some(self.flow.nw_dst),
            }
        } else {
            None
        };
        if let Some(nh) = resolve_at_port {
            self.flow.nw_ttl = ttl - 1;
            self.written.nw_ttl = u8::MAX;
            if let Some(src) = routes.router_mac(hop.port) {
                self.flow.dl_src = src;
                self.written.dl_src = [0xff; 6];
            }
            self.note(ActionOutcome::Routed {
                table,
                prefix_len: route.len,
                nexthop: u8::try_from(idx).unwrap_or(u8::MAX),
                n_nexthops: u8::try_from(route.nexthops.len()).unwrap_or(u8::MAX),
                port: hop.port,
                ttl: ttl - 1,
            });
            self.commit();
            self.actions.push(DpAction::SetNextHop(nh));
            self.emit_output(hop.port);
            // Later outputs of the same packet carry no next hop.
            self.actions.push(DpAction::SetNextHop(0));
            return;
        }
        let Some(dst_mac) = dst_mac else {
            self.note(ActionOutcome::NoNeighbour { table });
            self.route_drop.get_or_insert(XlateDrop::NoNeighbour);
            self.end_current_frame();
            return;
        };
        self.flow.nw_ttl = ttl - 1;
        self.written.nw_ttl = u8::MAX;
        if let Some(src) = routes.router_mac(hop.port) {
            self.flow.dl_src = src;
            self.written.dl_src = [0xff; 6];
        }
        self.flow.dl_dst = dst_mac;
        self.written.dl_dst = [0xff; 6];
        self.note(ActionOutcome::Routed {
            table,
            prefix_len: route.len,
            nexthop: u8::try_from(idx).unwrap_or(u8::MAX),
            n_nexthops: u8::try_from(route.nexthops.len()).unwrap_or(u8::MAX),
            port: hop.port,
            ttl: ttl - 1,
        });
        // A router may send a packet back out of the port it came in on
        // (two subnets behind one port): no in_port check here.
        self.emit_output(hop.port);
    }

    fn push_vlan(&mut self, tpid: u16) {
        // OVS: a new outermost tag with vid 0, pcp 0, the old tag kept below.
        self.written.vlan_tci = u16::MAX;
        let v = &mut self.flow_vlans;
        if self.flow.vlan_tci & VLAN_CFI != 0 {
            if v.n_below >= MAX_VLAN_TAGS - 1 {
                self.note(ActionOutcome::VlanStackFull);
                return;
            }
            v.below[v.n_below] = (v.top_tpid, self.flow.vlan_tci);
            v.n_below += 1;
        }
        v.top_tpid = tpid;
        self.flow.vlan_tci = VLAN_CFI;
    }

    fn pop_vlan(&mut self) {
        self.written.vlan_tci = u16::MAX;
        let v = &mut self.flow_vlans;
        if self.flow.vlan_tci & VLAN_CFI == 0 {
            if v.n_below == 0 {
                self.note(ActionOutcome::PopVlanUntagged);
            } else {
                v.n_below -= 1;
            }
            return;
        }
        if v.n_below > 0 {
            v.n_below -= 1;
            let (tpid, tci) = v.below[v.n_below];
            v.top_tpid = tpid;
            self.flow.vlan_tci = tci;
        } else {
            v.top_tpid = DEFAULT_TPID;
            self.flow.vlan_tci = 0;
        }
    }

    fn output(&mut self, port: PortNo) {
        match port {
            ofport::IN_PORT => self.emit_output(self.flow.in_port),
            ofport::FLOOD | ofport::ALL => {
                let ports = self.ports;
                for &p in ports {
                    if p != self.flow.in_port {
                        self.emit_output(p);
                    }
                }
            }
            ofport::NORMAL => self.normal(),
            ofport::CONTROLLER | ofport::TABLE | ofport::ANY => {
                self.note(ActionOutcome::UnsupportedPort { port });
            }
            p if p == self.flow.in_port => self.note(ActionOutcome::SkippedInPort { port: p }),
            p => self.emit_output(p),
        }
    }

    fn emit_output(&mut self, port: PortNo) {
        if !self.ports.contains(&port) {
            self.note(ActionOutcome::NonexistentPort { port });
            return;
        }
        self.commit();
        self.actions.push(DpAction::Output(port));
        self.outputs.push((port, self.flow));
        self.note(ActionOutcome::Output { port });
    }

    /// OVS commit_odp_actions: make the datapath's packet equal to the working
    /// key, with the fewest set actions, in OVS's order (tunnel, Ethernet,
    /// L3, L4, VLAN).
    fn commit(&mut self) {
        self.commit_tunnel();
        let eth_src = self.commit_field(|k| &mut k.dl_src, [0xff; 6]);
        let eth_dst = self.commit_field(|k| &mut k.dl_dst, [0xff; 6]);
        if eth_src.is_some() || eth_dst.is_some() {
            self.actions.push(DpAction::SetEth {
                src: eth_src,
                dst: eth_dst,
            });
        }
        match self.flow.dl_type {
            ethertype::IPV4 => {
                let src = self.commit_field(|k| &mut k.nw_src, u32::MAX);
                let dst = self.commit_field(|k| &mut k.nw_dst, u32::MAX);
                let tos = self.commit_field(|k| &mut k.nw_tos, u8::MAX);
                let ttl = self.commit_field(|k| &mut k.nw_ttl, u8::MAX);
                if src.is_some() || dst.is_some() || tos.is_some() || ttl.is_some() {
                    self.actions.push(DpAction::SetIpv4 { src, dst, tos, ttl });
                }
            }
            ethertype::IPV6 => {
                let src = self.commit_field(|k| &mut k.ipv6_src, [0xff; 16]);
                let dst = self.commit_field(|k| &mut k.ipv6_dst, [0xff; 16]);
                let tclass = self.commit_field(|k| &mut k.nw_tos, u8::MAX);
                let hlimit = self.commit_field(|k| &mut k.nw_ttl, u8::MAX);
                let label = self.commit_field(|k| &mut k.ipv6_label, 0x000f_ffff);
                if src.is_some()
                    || dst.is_some()
                    || tclass.is_some()
                    || hlimit.is_some()
                    || label.is_some()
                {
                    self.actions.push(DpAction::SetIpv6 {
                        src,
                        dst,
                        tclass,
                        hlimit,
                        label,
                    });
                }
                self.commit_nd();
            }
            ethertype::ARP => {
                let op = self.commit_field(|k| &mut k.nw_proto, u8::MAX);
                let spa = self.commit_field(|k| &mut k.nw_src, u32::MAX);
                let tpa = self.commit_field(|k| &mut k.nw_dst, u32::MAX);
                let sha = self.commit_field(|k| &mut k.arp_sha, [0xff; 6]);
                let tha = self.commit_field(|k| &mut k.arp_tha, [0xff; 6]);
                if op.is_some() || spa.is_some() || tpa.is_some() || sha.is_some() || tha.is_some()
                {
                    self.actions.push(DpAction::SetArp {
                        op: op.map(u16::from),
                        spa,
                        tpa,
                        sha,
                        tha,
                    });
                }
            }
            _ => {}
        }
        self.commit_l4();
        self.commit_vlan();
    }

    /// OVS commit_set_nd_extensions_action then commit_set_nd_action (ND
    /// extensions first, so an option type changed from source to target
    /// link-layer address receives `nd_tll`): only for an ICMPv6 NS/NA
    /// whose L4 header is present; the fields overlay `nw_src`,
    /// `tcp_flags`, `arp_sha` and `arp_tha` (see `flow::key`).
    fn commit_nd(&mut self) {
        let w = &self.written;
        if w.nd_target == [0; 16]
            && w.arp_sha == [0; 6]
            && w.arp_tha == [0; 6]
            && w.nw_src == 0
            && w.tcp_flags == 0
        {
            return;
        }
        if !self.prereq_ok(Prereq::Nd) {
            return;
        }
        let reserved = self.commit_field(|k| &mut k.nw_src, u32::MAX);
        let options_type = self.commit_field(|k| &mut k.tcp_flags, u16::MAX);
        if reserved.is_some() || options_type.is_some() {
            self.actions.push(DpAction::SetNdExt {
                reserved,
                options_type: options_type.map(low_byte),
            });
        }
        let target = self.commit_field(|k| &mut k.nd_target, [0xff; 16]);
        let sll = self.commit_field(|k| &mut k.arp_sha, [0xff; 6]);
        let tll = self.commit_field(|k| &mut k.arp_tha, [0xff; 6]);
        if target.is_some() || sll.is_some() || tll.is_some() {
            self.actions.push(DpAction::SetNd { target, sll, tll });
        }
    }

    /// Compare one written field of the working key with the datapath's
    /// packet. Un-wildcards the field (the comparison reads the original
    /// value); returns the new value when it differs, and records it as
    /// committed.
    fn commit_field<T: Copy + PartialEq + Default>(
        &mut self,
        slot: impl Fn(&mut FlowKey) -> &mut T,
        ones: T,
    ) -> Option<T> {
        if *slot(&mut self.written) == T::default() {
            return None;
        }
        *slot(&mut self.wc) = ones;
        let new = *slot(&mut self.flow);
        let base = slot(&mut self.base);
        if *base == new {
            return None;
        }
        *base = new;
        Some(new)
    }

    fn commit_tunnel(&mut self) {
        let w = &self.written;
        if w.tun_id == 0 && w.tun_src == 0 && w.tun_dst == 0 {
            return;
        }
        self.wc.tun_id = u64::MAX;
        self.wc.tun_src = u32::MAX;
        self.wc.tun_dst = u32::MAX;
        let (f, b) = (&self.flow, &mut self.base);
        if f.tun_id != b.tun_id || f.tun_src != b.tun_src || f.tun_dst != b.tun_dst {
            b.tun_id = f.tun_id;
            b.tun_src = f.tun_src;
            b.tun_dst = f.tun_dst;
            self.actions.push(DpAction::SetTunnel {
                tun_id: f.tun_id,
                src: f.tun_src,
                dst: f.tun_dst,
            });
        }
    }

    /// OVS commit_set_port_action / commit_set_icmp_action.
    fn commit_l4(&mut self) {
        if self.written.tp_src == 0 && self.written.tp_dst == 0 {
            return;
        }
        if !is_ip(&self.flow) || self.flow.nw_frag & FRAG_LATER != 0 {
            return;
        }
        self.wc.nw_proto = u8::MAX;
        let proto = self.flow.nw_proto;
        let icmp = (self.flow.dl_type == ethertype::IPV4 && proto == ipproto::ICMP)
            || (self.flow.dl_type == ethertype::IPV6 && proto == ipproto::ICMPV6);
        if proto != ipproto::TCP && proto != ipproto::UDP && !icmp {
            return;
        }
        let src = self.commit_field(|k| &mut k.tp_src, u16::MAX);
        let dst = self.commit_field(|k| &mut k.tp_dst, u16::MAX);
        if src.is_none() && dst.is_none() {
            return;
        }
        let a = if proto == ipproto::TCP {
            DpAction::SetTcp { src, dst }
        } else if proto == ipproto::UDP {
            DpAction::SetUdp { src, dst }
        } else {
            DpAction::SetIcmp {
                icmp_type: src.map(low_byte),
                code: dst.map(low_byte),
            }
        };
        self.actions.push(a);
    }

    /// OVS commit_vlan_action, with a `SetVlan` when only the outermost tag's
    /// TCI changed (OVS emits pop_vlan,push_vlan there; one rewrite is the
    /// same packet for less work).
    fn commit_vlan(&mut self) {
        if self.written.vlan_tci == 0 {
            return;
        }
        self.wc.vlan_tci = u16::MAX;
        let (w, wn) = self.flow_vlans.tags(self.flow.vlan_tci);
        let (b, bn) = self.base_vlans.tags(self.base.vlan_tci);
        let mut common = 0;
        while common < wn && common < bn && w[common] == b[common] {
            common += 1;
        }
        if common == wn && common == bn {
            return;
        }
        if wn == bn && common + 1 == wn && w[common].0 == b[common].0 {
            self.actions.push(DpAction::SetVlan {
                tci: w[common].1 & !VLAN_CFI,
            });
        } else {
            for _ in common..bn {
                self.actions.push(DpAction::PopVlan);
            }
            for &(tpid, tci) in &w[common..wn] {
                self.actions.push(DpAction::PushVlan {
                    tpid,
                    tci: tci & !VLAN_CFI,
                });
            }
        }
        self.base_vlans = self.flow_vlans;
        self.base.vlan_tci = self.flow.vlan_tci;
    }
}

impl Xlator<'_> {
    /// OVS `xlate_normal`: learn the source, forward to the destination's
    /// learned port or flood the bridge except the ingress port. Bonds,
    /// mirrors, per-port VLAN modes and multicast snooping do not exist here:
    /// every port carries every VLAN (an OVS port without `tag`/`trunks`),
    /// so a tagged frame learns and floods in its own VLAN with its tag.
    fn normal(&mut self) {
        // What NORMAL reads, all exact in the megaflow: both addresses, the
        // VLAN (VID and presence) and the ingress port.
        self.wc.dl_src = [0xff; 6];
        self.wc.dl_dst = [0xff; 6];
        self.wc.vlan_tci |= VLAN_CFI | VLAN_VID_MASK;
        self.wc.in_port = u32::MAX;
        let empty;
        let fdb = match self.fdb {
            Some(f) => f,
            None => {
                empty = FdbView::default();
                &empty
            }
        };
        let (out, use_) = l2::normal_decision(fdb, &self.flow);
        if let Some(u) = self.l2_uses.as_deref_mut() {
            u.push(use_);
        }
        if use_.learn {
            self.note(ActionOutcome::NormalLearn {
                mac: l2::format_mac(&use_.src.mac),
                vlan: use_.src.vlan,
                port: use_.in_port,
            });
        }
        match out {
            NormalOut::Unicast(p) => {
                self.note(ActionOutcome::NormalKnown { port: p });
                self.emit_output(p);
            }
            NormalOut::InputPort(_) => self.note(ActionOutcome::NormalDrop {
                reason: "learned port is input port, dropping",
            }),
            NormalOut::Reserved => self.note(ActionOutcome::NormalDrop {
                reason: "dropping frame to a reserved (802.1D) group address",
            }),
            NormalOut::Flood => {
                self.note(ActionOutcome::NormalFlood {
                    vlan: use_.dst.vlan,
                });
                let ports = self.ports;
                for &p in ports {
                    if p != self.flow.in_port {
                        self.emit_output(p);
                    }
                }
            }
        }
    }
}

fn is_ip(k: &FlowKey) -> bool {
    k.dl_type == ethertype::IPV4 || k.dl_type == ethertype::IPV6
}

fn low_byte(v: u16) -> u8 {
    v.to_be_bytes()[1]
}
