//! `ofproto/trace` for ferroswitch: the walk of one packet key through the
//! tables, as a structured [`TraceReport`] (serde, for `--json`) that
//! `Display`s in the shape of OVS's `ovs-appctl ofproto/trace` output.
//!
//! Data enters as a pipeline, the bridge's ports, a key and the bridge name;
//! the walk is recorded by a [`TraceLog`] plugged into
//! [`super::xlate::translate_traced`], the very translation the datapath runs, so the trace
//! can never disagree with the megaflow the datapath would install. It
//! leaves as a report: each table visit (the rule matched, or a miss), each
//! action with what it did (skipped outputs, TTL exceptions, nested
//! resubmits), the outputs with the packet's fields at each, the final
//! fields, the megaflow and the datapath actions.
//!
//! The text layout follows OVS `ofproto/ofproto-dpif-trace.c`
//! (`oftrace_node_print_details`): a node is indented four spaces per level,
//! plus one level when it is not the last of its list; notes print as
//! ` -> detail`, ` >> warning`, ` >>>> error <<<<`.
//!
//! Keys, matches and actions print with the canonical ovs-ofctl formatter
//! (`crate::flow::format`), so a trace reads like OVS's and its matches
//! paste back into flowctl.
//!
//! Never panics; allocates freely (operator command, not per packet).

use core::fmt::{self, Display, Formatter, Write as _};
use std::sync::Arc;

use serde::Serialize;

use super::odp_format::format_dp_actions;
use super::table::{Pipeline, Rule};
use super::xlate::{ActionOutcome, TraceSink, XlateDrop};
use crate::datapath::DpAction;
use crate::flow::format::format_port;
use crate::flow::{
    format_actions, format_key, format_match, ofport, Action, Flow, FlowKey, FlowMask, Match,
    PortNo,
};

/// The rule a table visit matched.
#[derive(Clone, Debug, Serialize)]
pub struct TraceRule {
    /// Table id.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Cookie.
    pub cookie: u64,
    /// The match, as text.
    #[serde(rename = "match")]
    pub match_text: String,
    /// The actions, as text.
    pub actions: String,
    /// The flow itself.
    #[serde(skip)]
    pub flow: Flow,
}

/// One action executed, with what it did.
#[derive(Clone, Debug, Serialize)]
pub struct TraceAction {
    /// The action, as text.
    pub action: String,
    /// What it did, when notable (outputs, skips, exceptions, errors).
    pub outcomes: Vec<ActionOutcome>,
    /// For `resubmit` and `goto_table`: the table visit it caused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nested: Option<Box<TraceStep>>,
}

/// One table visit.
#[derive(Clone, Debug, Serialize)]
pub struct TraceStep {
    /// The table looked up.
    pub table: u8,
    /// Nesting level (0 = the first lookup; +1 per resubmit/goto).
    pub depth: usize,
    /// The rule matched; None = no match (drop).
    pub rule: Option<TraceRule>,
    /// The actions executed, in order (fewer than the rule's when an
    /// exception or a failure stopped it).
    pub actions: Vec<TraceAction>,
}

/// One output of the packet.
#[derive(Clone, Debug, Serialize)]
pub struct TraceOutput {
    /// Port number.
    pub port: PortNo,
    /// The packet's fields as sent.
    pub packet: String,
    /// The same, as a key.
    #[serde(skip)]
    pub key: FlowKey,
}

/// The megaflow the datapath would install.
#[derive(Clone, Debug, Serialize)]
pub struct TraceMegaflow {
    /// The masked key, as a match.
    #[serde(rename = "match")]
    pub match_text: String,
    /// The wildcard mask.
    #[serde(skip)]
    pub mask: FlowMask,
    /// The key, masked.
    #[serde(skip)]
    pub key: FlowKey,
}

/// Everything `ofproto/trace` shows about one packet.
#[derive(Clone, Debug, Serialize)]
pub struct TraceReport {
    /// Bridge name.
    pub bridge: String,
    /// The packet as given.
    pub flow: String,
    /// The packet as given, as a key.
    #[serde(skip)]
    pub key: FlowKey,
    /// The table visits from table 0 (one, with the others nested).
    pub steps: Vec<TraceStep>,
    /// The outputs, with the packet as sent.
    pub outputs: Vec<TraceOutput>,
    /// The packet after every action ran.
    pub final_flow: String,
    /// True when no action changed the packet.
    pub final_unchanged: bool,
    /// The packet after every action ran, as a key.
    #[serde(skip)]
    pub final_key: FlowKey,
    /// The megaflow.
    pub megaflow: TraceMegaflow,
    /// The datapath actions in OVS notation (`drop` when empty).
    pub datapath_actions: String,
    /// The datapath actions.
    #[serde(skip)]
    pub actions: Vec<DpAction>,
    /// Why the packet was (partly) dropped.
    pub drop: Option<XlateDrop>,
}

/// Trace `key` through `pipeline` on bridge `bridge` (its ports `ports`).
pub fn trace(pipeline: &Pipeline, ports: &[PortNo], key: &FlowKey, bridge: &str) -> TraceReport {
    trace_l2(pipeline, ports, key, bridge, &super::l2::FdbView::default())
}

/// [`trace`] with the bridge's MAC table for `NORMAL` (what the datapath
/// would do now; the trace itself learns nothing).
pub fn trace_l2(
    pipeline: &Pipeline,
    ports: &[PortNo],
    key: &FlowKey,
    bridge: &str,
    fdb: &super::l2::FdbView,
) -> TraceReport {
    let mut log = TraceLog::default();
    let x = super::xlate::translate_traced_l2(pipeline, ports, key, fdb, &mut log);
    let outputs = x
        .outputs
        .iter()
        .map(|(port, k)| TraceOutput {
            port: *port,
            packet: format_key(k),
            key: *k,
        })
        .collect();
    let mega = Match::new(*key, x.mask);
    TraceReport {
        bridge: bridge.to_string(),
        flow: format_key(key),
        key: *key,
        steps: log.into_steps(),
        outputs,
        final_flow: format_key(&x.final_key),
        final_unchanged: x.final_key == *key,
        final_key: x.final_key,
        megaflow: TraceMegaflow {
            match_text: format_match(&mega),
            mask: x.mask,
            key: *mega.value(),
        },
        datapath_actions: format_dp_actions(&x.actions),
        actions: x.actions,
        drop: x.drop,
    }
}

/// A [`TraceSink`] that builds the tree of [`TraceStep`]s.
#[derive(Debug, Default)]
pub struct TraceLog {
    open: Vec<TraceStep>,
    done: Vec<TraceStep>,
}

impl TraceLog {
    /// The finished top-level visits (open ones are closed first).
    pub fn into_steps(mut self) -> Vec<TraceStep> {
        while !self.open.is_empty() {
            self.table_end();
        }
        self.done
    }
}

impl TraceSink for TraceLog {
    fn table(&mut self, table: u8, rule: Option<&Arc<Rule>>) {
        let depth = self.open.len();
        self.open.push(TraceStep {
            table,
            depth,
            rule: rule.map(|r| TraceRule {
                table: r.flow.table,
                priority: r.flow.priority,
                cookie: r.flow.cookie,
                match_text: format_match(&r.flow.matches),
                actions: format_actions(&r.flow.actions),
                flow: r.flow.clone(),
            }),
            actions: Vec::new(),
        });
    }

    fn table_end(&mut self) {
        let Some(step) = self.open.pop() else {
            return;
        };
        match self.open.last_mut() {
            Some(parent) => match parent.actions.last_mut() {
                Some(a) if a.nested.is_none() => a.nested = Some(Box::new(step)),
                // A visit not caused by an action (cannot happen today):
                // keep it visible rather than lose it.
                _ => parent.actions.push(TraceAction {
                    action: String::new(),
                    outcomes: Vec::new(),
                    nested: Some(Box::new(step)),
                }),
            },
            None => self.done.push(step),
        }
    }

    fn action(&mut self, action: &Action) {
        if let Some(step) = self.open.last_mut() {
            step.actions.push(TraceAction {
                action: format_actions(core::slice::from_ref(action)),
                outcomes: Vec::new(),
                nested: None,
            });
        }
    }

    fn note(&mut self, outcome: ActionOutcome) {
        if let Some(a) = self.open.last_mut().and_then(|s| s.actions.last_mut()) {
            a.outcomes.push(outcome);
        }
    }
}

// ---------------------------------------------------------------------------
// Text rendering (OVS oftrace node tree).

#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Bridge,
    Table,
    Action,
    Detail,
    Warn,
    Error,
}

struct Node {
    kind: NodeKind,
    text: String,
    subs: Vec<Node>,
}

impl Node {
    fn leaf(kind: NodeKind, text: String) -> Node {
        Node {
            kind,
            text,
            subs: Vec::new(),
        }
    }
}

fn outcome_node(o: &ActionOutcome) -> Option<Node> {
    use NodeKind::{Detail, Error, Warn};
    let (kind, text) = match o {
        ActionOutcome::Output { .. } | ActionOutcome::DecTtl { .. } => return None,
        ActionOutcome::SkippedInPort { .. } => (Warn, "skipping output to input port".into()),
        // Reserved numbers by name, as OVS prints ports (`LOCAL`, not 4294967294).
        ActionOutcome::NonexistentPort { port } if *port == ofport::LOCAL => (
            Warn,
            "Nonexistent output port LOCAL (the bridge has no local port: add a tap port named after the bridge)".into(),
        ),
        ActionOutcome::NonexistentPort { port } => (
            Warn,
            format!("Nonexistent output port {}", format_port(*port)),
        ),
        ActionOutcome::UnsupportedPort { port } => (
            Warn,
            format!(
                "output to {} is not supported: this output is dropped",
                format_port(*port)
            ),
        ),
        ActionOutcome::PrereqUnmet { field } => (
            Warn,
            format!("unmet prerequisites for {field}, action ignored"),
        ),
        ActionOutcome::NotWritable { field } => {
            (Error, format!("{field} is read-only, action ignored"))
        }
        ActionOutcome::BadRange { field } => {
            (Error, format!("bit range outside {field}, action ignored"))
        }
        ActionOutcome::InvalidTtl { ipv6, .. } => (
            Warn,
            format!("IPv{} decrement TTL exception", if *ipv6 { 6 } else { 4 }),
        ),
        ActionOutcome::DecTtlNotIp => (Detail, "not an IP packet: dec_ttl does nothing".into()),
        ActionOutcome::Group {
            group,
            group_type,
            bucket,
            n_buckets,
            hashed,
        } => (
            Detail,
            match hashed {
                Some(h) => format!(
                    "group {group} ({group_type}): bucket {bucket} of {n_buckets}, chosen by hash of {h}"
                ),
                None => format!("group {group} ({group_type}): bucket {bucket} of {n_buckets}"),
            },
        ),
        ActionOutcome::GroupNoBucket { group } => (
            Warn,
            format!("group {group}: no live bucket, this copy of the packet is dropped"),
        ),
        ActionOutcome::GroupMissing { group } => {
            (Warn, format!("group {group} does not exist, action ignored"))
        }
        ActionOutcome::GroupBucketEnd { group, bucket } => (
            Detail,
            format!("end of group {group} bucket {bucket}: headers restored"),
        ),
        ActionOutcome::PopVlanUntagged => (Detail, "no VLAN tag to pop".into()),
        ActionOutcome::VlanStackFull => (Warn, "too many VLAN tags, push_vlan ignored".into()),
        ActionOutcome::BadGoto { table, current } => (
            Error,
            format!("goto_table:{table} from table {current} must go forward, ignored"),
        ),
        ActionOutcome::DepthExceeded { depth } => {
            (Error, format!("over max translation depth {depth}"))
        }
        ActionOutcome::TooManyResubmits { resubmits } => {
            (Error, format!("over {resubmits} resubmit actions"))
        }
        ActionOutcome::NormalLearn { mac, vlan, port } => (
            Detail,
            format!("learned that {mac} is on port {port} in VLAN {vlan}"),
        ),
        ActionOutcome::NormalKnown { .. } => (Detail, "forwarding to learned port".into()),
        ActionOutcome::NormalFlood { .. } => {
            (Detail, "no learned MAC for destination, flooding".into())
        }
        ActionOutcome::NormalDrop { reason } => (Warn, (*reason).into()),
        ActionOutcome::Routed {
            table,
            prefix_len,
            nexthop,
            n_nexthops,
            port,
            ttl,
        } => (
            Detail,
            if *n_nexthops > 1 {
                format!(
                    "route table {table}: /{prefix_len} matched, ECMP next hop {} of {n_nexthops} by flow hash, ttl now {ttl}, output to port {port}",
                    u32::from(*nexthop) + 1
                )
            } else {
                format!("route table {table}: /{prefix_len} matched, ttl now {ttl}, output to port {port}")
            },
        ),
        ActionOutcome::NoRoute { table } => (
            Warn,
            format!("route table {table}: no route to the destination, packet dropped (no_route)"),
        ),
        ActionOutcome::TtlExceeded { ttl } => (
            Warn,
            format!("route: ttl {ttl} would expire, packet dropped (ttl_exceeded)"),
        ),
        ActionOutcome::NoNeighbour { table } => (
            Warn,
            format!("route table {table}: next hop MAC unknown (no mac= on the route, no neighbour entry), packet dropped (no_neighbour)"),
        ),
        ActionOutcome::RouteNotIp => (Detail, "not an IP packet: route does nothing".into()),
        ActionOutcome::Conntrack {
            zone,
            commit,
            table,
            nat,
        } => {
            let nat = match nat {
                Some(n) => format!(
                    ", {n}: a packet of a NATed connection is translated (addresses and ports), a new committed one bound"
                ),
                None => String::new(),
            };
            (
                Detail,
                match table {
                    Some(t) => format!(
                        "conntrack zone {zone}{}{nat}: a copy is recirculated (recirc_id {:#x}) and resumes in table {t} with the tracker's ct_state; trace it with ct_state=... and recirc_id={} in the packet",
                        if *commit { ", commit" } else { "" },
                        u32::from(*t) + 1,
                        u32::from(*t) + 1
                    ),
                    None => format!(
                        "conntrack zone {zone}{}{nat}: no recirculation, ct_state unchanged in this pass",
                        if *commit { ", commit" } else { "" }
                    ),
                },
            )
        }
        ActionOutcome::CtClear => (Detail, "ct_state, ct_zone, ct_mark and ct_label cleared".into()),
        ActionOutcome::IcmpTimeExceeded { src } => (
            Detail,
            format!("ICMP time exceeded sent back to the source from {src}, out of the input port (rate-limited)"),
        ),
        ActionOutcome::NoIcmpError { reason } => (
            Detail,
            format!("no ICMP time exceeded: {}", reason.text()),
        ),
    };
    Some(Node::leaf(kind, text))
}

fn step_node(step: &TraceStep) -> Node {
    let mut text = format!("{:2}. ", step.table);
    let mut subs = Vec::new();
    match &step.rule {
        None => {
            text.push_str("No match.");
            subs.push(Node::leaf(NodeKind::Action, "drop".into()));
        }
        Some(r) => {
            if !r.match_text.is_empty() {
                text.push_str(&r.match_text);
                text.push_str(", ");
            }
            let _ = write!(text, "priority {}", r.priority);
            if r.cookie != 0 {
                let _ = write!(text, ", cookie {:#x}", r.cookie);
            }
            if r.flow.actions.is_empty() {
                subs.push(Node::leaf(NodeKind::Action, "drop".into()));
            }
        }
    }
    for a in &step.actions {
        if !a.action.is_empty() {
            subs.push(Node::leaf(NodeKind::Action, a.action.clone()));
        }
        subs.extend(a.outcomes.iter().filter_map(outcome_node));
        if let Some(n) = &a.nested {
            subs.push(step_node(n));
        }
    }
    Node {
        kind: NodeKind::Table,
        text,
        subs,
    }
}

fn is_terminal(k: NodeKind) -> bool {
    !matches!(k, NodeKind::Bridge | NodeKind::Table)
}

fn print_nodes(out: &mut String, nodes: &[Node], level: usize) {
    for (i, n) in nodes.iter().enumerate() {
        let more = usize::from(i + 1 < nodes.len() || is_terminal(n.kind));
        let indent = " ".repeat((level + more) * 4);
        out.push_str(&indent);
        match n.kind {
            NodeKind::Detail => {
                let _ = writeln!(out, " -> {}", n.text);
            }
            NodeKind::Warn => {
                let _ = writeln!(out, " >> {}", n.text);
            }
            NodeKind::Error => {
                let _ = writeln!(out, " >>>> {} <<<<", n.text);
            }
            NodeKind::Bridge => {
                let _ = writeln!(out, "{}", n.text);
                out.push_str(&indent);
                out.push_str(&"-".repeat(n.text.len()));
                out.push('\n');
            }
            NodeKind::Table | NodeKind::Action => {
                let _ = writeln!(out, "{}", n.text);
            }
        }
        print_nodes(out, &n.subs, level + 2 * more);
    }
}

impl Display for TraceReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let bridge = Node {
            kind: NodeKind::Bridge,
            text: format!("bridge(\"{}\")", self.bridge),
            subs: self.steps.iter().map(step_node).collect(),
        };
        let mut out = String::new();
        let _ = writeln!(out, "Flow: {}", self.flow);
        out.push('\n');
        print_nodes(&mut out, &[bridge], 0);
        out.push('\n');
        if self.final_unchanged {
            out.push_str("Final flow: unchanged\n");
        } else {
            let _ = writeln!(out, "Final flow: {}", self.final_flow);
        }
        let _ = writeln!(out, "Megaflow: {}", self.megaflow.match_text);
        let _ = write!(out, "Datapath actions: {}", self.datapath_actions);
        if self.drop == Some(XlateDrop::ResubmitDepth) {
            out.push_str("\nTranslation failed (Recursion too deep), packet is dropped.");
        }
        f.write_str(&out)
    }
}
