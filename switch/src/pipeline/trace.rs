//! `ofproto/trace` for ferroswitch: the walk of one packet key through the
//! tables, as a structured [`TraceReport`] (serde, for `--json`) that
//! `Display`s in the shape of OVS's `ovs-appctl ofproto/trace` output.
//!
//! Data enters as a pipeline, the bridge's ports, a key and the bridge name;
//! the walk is recorded by a [`TraceLog`] plugged into
//! [`translate_traced`], the very translation the datapath runs, so the trace
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
//! Never panics; allocates freely (operator command, not per packet).

use core::fmt::{self, Display, Formatter, Write as _};
use std::sync::Arc;

use serde::Serialize;

use super::odp_format::{fmt_ipv4, fmt_ipv6, fmt_mac, format_dp_actions};
use super::table::{Pipeline, Rule};
use super::xlate::{translate_traced, ActionOutcome, TraceSink, XlateDrop};
use crate::datapath::DpAction;
use crate::flow::field::{Field, Format};
use crate::flow::key::{ethertype, ipproto};
use crate::flow::{ofport, Action, Flow, FlowKey, FlowMask, Match, PortNo};

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
    let mut log = TraceLog::default();
    let x = translate_traced(pipeline, ports, key, &mut log);
    let outputs = x
        .outputs
        .iter()
        .map(|(port, k)| TraceOutput {
            port: *port,
            packet: format_key_text(k),
            key: *k,
        })
        .collect();
    let mega = Match::new(*key, x.mask);
    TraceReport {
        bridge: bridge.to_string(),
        flow: format_key_text(key),
        key: *key,
        steps: log.into_steps(),
        outputs,
        final_flow: format_key_text(&x.final_key),
        final_unchanged: x.final_key == *key,
        final_key: x.final_key,
        megaflow: TraceMegaflow {
            match_text: format_match_text(&mega),
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
                match_text: format_match_text(&r.flow.matches),
                actions: format_actions_text(&r.flow.actions),
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
                action: format_action_text(action),
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
        ActionOutcome::NonexistentPort { port } => {
            (Warn, format!("Nonexistent output port {port}"))
        }
        ActionOutcome::UnsupportedPort { port } => (
            Warn,
            format!(
                "output to {} is not supported: this output is dropped",
                port_name(*port)
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

// ---------------------------------------------------------------------------
// Simple formatters for keys, matches and actions (ovs-ofctl-like).

fn prefix_len(mask: u128, width: u32) -> Option<u32> {
    let ones = mask.count_ones();
    let shift = width - ones;
    let expect = if ones == 0 {
        0
    } else {
        (u128::MAX >> (128 - ones)) << shift
    };
    (mask == expect).then_some(ones)
}

fn mac_of(v: u128) -> [u8; 6] {
    let b = v.to_be_bytes();
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[10..16]);
    m
}

fn ipv4_of(v: u128) -> u32 {
    u32::try_from(v & u128::from(u32::MAX)).unwrap_or(0)
}

const CT_NAMES: [&str; 8] = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];
const TCP_NAMES: [&str; 9] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"];

fn flag_text(names: &[&str], v: u128, m: u128) -> String {
    let full = (1u128 << names.len()) - 1;
    if m & full == full {
        let set: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| v >> i & 1 == 1)
            .map(|(_, n)| *n)
            .collect();
        return if set.is_empty() {
            "0".into()
        } else {
            set.join("|")
        };
    }
    let mut s = String::new();
    for (i, n) in names.iter().enumerate() {
        if m >> i & 1 == 1 {
            s.push(if v >> i & 1 == 1 { '+' } else { '-' });
            s.push_str(n);
        }
    }
    s
}

/// A field's value (with its mask when not exact) as ovs-ofctl writes it.
fn value_text(field: Field, v: u128, m: u128) -> String {
    let info = field.info();
    let exact = m == info.max_value();
    if field == Field::VlanTci {
        // ovs-ofctl always prints the TCI as four hex digits.
        return if exact {
            format!("{v:#06x}")
        } else {
            format!("{v:#06x}/{m:#06x}")
        };
    }
    match info.format {
        Format::Decimal if exact => v.to_string(),
        Format::Decimal | Format::Hex => {
            if exact {
                format!("{v:#x}")
            } else {
                format!("{v:#x}/{m:#x}")
            }
        }
        Format::Mac => {
            if exact {
                fmt_mac(&mac_of(v))
            } else {
                format!("{}/{}", fmt_mac(&mac_of(v)), fmt_mac(&mac_of(m)))
            }
        }
        Format::Ipv4 => match prefix_len(m, 32) {
            Some(32) => fmt_ipv4(ipv4_of(v)),
            Some(n) => format!("{}/{n}", fmt_ipv4(ipv4_of(v))),
            None => format!("{}/{}", fmt_ipv4(ipv4_of(v)), fmt_ipv4(ipv4_of(m))),
        },
        Format::Ipv6 => {
            let a = v.to_be_bytes();
            match prefix_len(m, 128) {
                Some(128) => fmt_ipv6(&a),
                Some(n) => format!("{}/{n}", fmt_ipv6(&a)),
                None => format!("{}/{}", fmt_ipv6(&a), fmt_ipv6(&m.to_be_bytes())),
            }
        }
        Format::Frag => match (v & m, m & 3) {
            (0, 3) => "no".into(),
            (1, 3) => "first".into(),
            (3, 3) => "later".into(),
            (0, 1) => "no".into(),
            (1, 1) => "yes".into(),
            (0, 2) => "not_later".into(),
            (2, 2) => "later".into(),
            _ => format!("{v:#x}/{m:#x}"),
        },
        Format::CtState => flag_text(&CT_NAMES, v, m),
        Format::TcpFlags => flag_text(&TCP_NAMES, v, m),
    }
}

/// `ip`, `tcp6`, `arp`...: the protocol keyword a match starts with, and
/// whether it covers `nw_proto`.
fn proto_keyword(m: &Match) -> (Option<String>, bool) {
    let Some((dl_type, _)) = m.get(Field::EthType) else {
        return (None, false);
    };
    let proto = m
        .get(Field::NwProto)
        .filter(|(_, mask)| *mask == 0xff)
        .map(|(v, _)| v);
    let (word, covers) = match (u16::try_from(dl_type).unwrap_or(0), proto) {
        (ethertype::IPV4, Some(1)) => ("icmp", true),
        (ethertype::IPV4, Some(6)) => ("tcp", true),
        (ethertype::IPV4, Some(17)) => ("udp", true),
        (ethertype::IPV4, _) => ("ip", false),
        (ethertype::IPV6, Some(58)) => ("icmp6", true),
        (ethertype::IPV6, Some(6)) => ("tcp6", true),
        (ethertype::IPV6, Some(17)) => ("udp6", true),
        (ethertype::IPV6, _) => ("ipv6", false),
        (ethertype::ARP, _) => ("arp", false),
        _ => return (Some(format!("dl_type={dl_type:#06x}")), false),
    };
    (Some(word.to_string()), covers)
}

/// A match as text, ovs-ofctl style (`tcp,in_port=1,nw_dst=10.0.0.0/24`);
/// empty for the catch-all match.
pub fn format_match_text(m: &Match) -> String {
    let mut parts: Vec<String> = Vec::new();
    let (kw, covers_proto) = proto_keyword(m);
    if let Some(k) = kw {
        parts.push(k);
    }
    let dl_type = m.value().dl_type;
    let put = |parts: &mut Vec<String>, f: Field, name: &str| {
        if let Some((v, mask)) = m.get(f) {
            parts.push(format!("{name}={}", value_text(f, v, mask)));
        }
    };
    for f in [Field::TunId, Field::TunSrc, Field::TunDst] {
        put(&mut parts, f, f.name());
    }
    for f in [Field::CtState, Field::CtZone, Field::CtMark, Field::CtLabel] {
        put(&mut parts, f, f.name());
    }
    for f in [
        Field::Reg0,
        Field::Reg1,
        Field::Reg2,
        Field::Reg3,
        Field::Reg4,
        Field::Reg5,
        Field::Reg6,
        Field::Reg7,
        Field::Metadata,
        Field::InPort,
        Field::VlanTci,
        Field::EthSrc,
        Field::EthDst,
    ] {
        put(&mut parts, f, f.name());
    }
    let is_v4 = dl_type == ethertype::IPV4;
    let is_v6 = dl_type == ethertype::IPV6;
    let is_arp = dl_type == ethertype::ARP;
    if is_arp {
        for f in [
            Field::ArpSpa,
            Field::ArpTpa,
            Field::ArpOp,
            Field::ArpSha,
            Field::ArpTha,
        ] {
            put(&mut parts, f, f.name());
        }
    } else {
        for f in [Field::IpSrc, Field::IpDst] {
            put(&mut parts, f, f.name());
        }
        if !is_v4 {
            for f in [Field::Ipv6Src, Field::Ipv6Dst, Field::Ipv6Label] {
                put(&mut parts, f, f.name());
            }
        }
        if !covers_proto {
            put(&mut parts, Field::NwProto, "nw_proto");
        }
        if let Some((v, mask)) = m.get(Field::NwTos) {
            if mask & 0xfc != 0 {
                parts.push(format!("nw_tos={}", v & 0xfc));
            }
            if mask & 0x03 != 0 {
                parts.push(format!("nw_ecn={}", v & 0x03));
            }
        }
        put(&mut parts, Field::NwTtl, "nw_ttl");
        put(&mut parts, Field::NwFrag, "nw_frag");
        let proto = m.value().nw_proto;
        let icmp = (is_v4 && proto == ipproto::ICMP) || (is_v6 && proto == ipproto::ICMPV6);
        if icmp {
            put(&mut parts, Field::IcmpType, "icmp_type");
            put(&mut parts, Field::IcmpCode, "icmp_code");
        } else {
            put(&mut parts, Field::TpSrc, "tp_src");
            put(&mut parts, Field::TpDst, "tp_dst");
        }
        put(&mut parts, Field::TcpFlags, "tcp_flags");
    }
    // Anything else matched that the layout above did not cover (a match on
    // ARP fields of a non-ARP packet, say) still shows.
    for f in [Field::ArpSha, Field::ArpTha] {
        if !is_arp {
            put(&mut parts, f, f.name());
        }
    }
    parts.join(",")
}

/// The fields that mean something for a packet like `k`: what a `Flow:` line shows.
fn relevant_mask(k: &FlowKey) -> FlowMask {
    let mut m = FlowKey::ZERO;
    m.in_port = u32::MAX;
    m.dl_src = [0xff; 6];
    m.dl_dst = [0xff; 6];
    m.dl_type = u16::MAX;
    m.vlan_tci = u16::MAX;
    if k.tun_id != 0 || k.tun_src != 0 || k.tun_dst != 0 {
        m.tun_id = u64::MAX;
        m.tun_src = u32::MAX;
        m.tun_dst = u32::MAX;
    }
    if k.metadata != 0 {
        m.metadata = u64::MAX;
    }
    for (i, r) in k.regs.iter().enumerate() {
        if *r != 0 {
            m.regs[i] = u32::MAX;
        }
    }
    if k.ct_state != 0 {
        m.ct_state = 0xff;
        m.ct_zone = u16::MAX;
        m.ct_mark = u32::MAX;
    }
    match k.dl_type {
        ethertype::IPV4 | ethertype::IPV6 => {
            if k.dl_type == ethertype::IPV4 {
                m.nw_src = u32::MAX;
                m.nw_dst = u32::MAX;
            } else {
                m.ipv6_src = [0xff; 16];
                m.ipv6_dst = [0xff; 16];
                m.ipv6_label = 0x000f_ffff;
            }
            m.nw_proto = u8::MAX;
            m.nw_tos = u8::MAX;
            m.nw_ttl = u8::MAX;
            m.nw_frag = 3;
            let icmp = k.nw_proto == ipproto::ICMP || k.nw_proto == ipproto::ICMPV6;
            if k.nw_proto == ipproto::TCP || k.nw_proto == ipproto::UDP || icmp {
                if icmp {
                    m.tp_src = 0xff;
                    m.tp_dst = 0xff;
                } else {
                    m.tp_src = u16::MAX;
                    m.tp_dst = u16::MAX;
                }
            }
            if k.nw_proto == ipproto::TCP {
                m.tcp_flags = 0x0fff;
            }
        }
        ethertype::ARP => {
            m.nw_proto = u8::MAX;
            m.nw_src = u32::MAX;
            m.nw_dst = u32::MAX;
            m.arp_sha = [0xff; 6];
            m.arp_tha = [0xff; 6];
        }
        _ => {}
    }
    m
}

/// A packet key as text, like the `Flow:` line of ofproto/trace.
pub fn format_key_text(k: &FlowKey) -> String {
    format_match_text(&Match::new(*k, relevant_mask(k)))
}

fn port_name(p: PortNo) -> String {
    match p {
        ofport::IN_PORT => "IN_PORT".into(),
        ofport::TABLE => "TABLE".into(),
        ofport::NORMAL => "NORMAL".into(),
        ofport::FLOOD => "FLOOD".into(),
        ofport::ALL => "ALL".into(),
        ofport::CONTROLLER => "CONTROLLER".into(),
        ofport::LOCAL => "LOCAL".into(),
        ofport::ANY => "ANY".into(),
        p => p.to_string(),
    }
}

/// The NXM/OXM name `load`/`move` print for a field.
fn nxm_name(f: Field) -> &'static str {
    let info = f.info();
    info.aliases
        .iter()
        .find(|a| a.starts_with("NXM_") || a.starts_with("OXM_"))
        .copied()
        .unwrap_or(info.name)
}

fn range_text(r: &crate::flow::FieldRange) -> String {
    if r.ofs == 0 && r.n_bits == r.field.info().width {
        format!("{}[]", nxm_name(r.field))
    } else {
        let end = (r.ofs + r.n_bits).saturating_sub(1);
        format!("{}[{}..{}]", nxm_name(r.field), r.ofs, end)
    }
}

/// One action as ovs-ofctl prints it (OpenFlow 1.3 dump-flows).
pub fn format_action_text(a: &Action) -> String {
    match a {
        Action::Output(p) if *p > ofport::MAX => match *p {
            ofport::CONTROLLER => "CONTROLLER:65535".into(),
            p => port_name(p),
        },
        Action::Output(p) => format!("output:{p}"),
        Action::SetField { field, value, mask } => {
            let info = field.info();
            let name = match field {
                Field::EthSrc => "eth_src",
                Field::EthDst => "eth_dst",
                Field::IpSrc => "ip_src",
                Field::IpDst => "ip_dst",
                f => f.name(),
            };
            let m = *mask & info.max_value();
            let v = if m == info.max_value() {
                value_text(*field, *value & m, m)
            } else {
                match info.format {
                    Format::Decimal => format!("{:#x}/{m:#x}", *value & m),
                    _ => value_text(*field, *value & m, m),
                }
            };
            format!("set_field:{v}->{name}")
        }
        Action::Load { dst, value } => format!("load:{value:#x}->{}", range_text(dst)),
        Action::Move { src, dst } => format!("move:{}->{}", range_text(src), range_text(dst)),
        Action::DecTtl => "dec_ttl".into(),
        Action::PushVlan(t) => format!("push_vlan:{t:#06x}"),
        Action::PopVlan => "pop_vlan".into(),
        Action::Resubmit { in_port, table } => {
            let port = match in_port {
                None | Some(ofport::IN_PORT) => String::new(),
                Some(p) => port_name(*p),
            };
            match table {
                Some(t) => format!("resubmit({port},{t})"),
                None => format!("resubmit:{port}"),
            }
        }
        Action::WriteMetadata { value, mask } => {
            if *mask == u64::MAX {
                format!("write_metadata:{value:#x}")
            } else {
                format!("write_metadata:{value:#x}/{mask:#x}")
            }
        }
        Action::GotoTable(t) => format!("goto_table:{t}"),
    }
}

/// An action list as text; `drop` when empty.
pub fn format_actions_text(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    actions
        .iter()
        .map(format_action_text)
        .collect::<Vec<_>>()
        .join(",")
}
