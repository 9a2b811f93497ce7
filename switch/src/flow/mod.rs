//! Flows: the key every packet is reduced to, matches over it, actions, and
//! the ovs-ofctl flow syntax (parse and format).

pub mod action;
pub mod field;
pub mod format;
pub mod key;
pub mod matches;
pub mod parse;
pub mod trace_spec;

pub use action::{ofport, Action, CtAction, CtZone, FieldRange, PortNo};
pub use field::{Field, Prereq};
pub use format::{format_actions, format_flow, format_flow_stats, format_key, format_match};
pub use key::{FlowKey, FlowMask};
pub use matches::Match;
pub use parse::{parse_flow, ParseError, ParseMode};
pub use trace_spec::parse_packet;

/// Number of OpenFlow tables (0..=254).
pub const N_TABLES: usize = 255;
/// Default flow priority (OFP_DEFAULT_PRIORITY); dump-flows omits it.
pub const DEFAULT_PRIORITY: u16 = 32768;

/// One flow as installed: where, how specific, what it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Table id.
    pub table: u8,
    /// Priority (higher wins).
    pub priority: u16,
    /// Opaque controller cookie.
    pub cookie: u64,
    /// The match.
    pub matches: Match,
    /// Actions and instructions, in order; empty = drop.
    pub actions: Vec<Action>,
    /// Seconds without a hit before removal (0 = never).
    pub idle_timeout: u16,
    /// Seconds after installation before removal (0 = never).
    pub hard_timeout: u16,
    /// The flow-mod flags kept with the flow ([`FlowFlags::state`]).
    pub flags: FlowFlags,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            matches: Match::CATCHALL,
            actions: Vec::new(),
            idle_timeout: 0,
            hard_timeout: 0,
            flags: FlowFlags::NONE,
        }
    }
}

/// A flow as given to a flow-mod or a dump filter: like [`Flow`], plus what
/// only selection needs. Produced by the flow parser, consumed by the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// `table=N`; None = every table (del-flows, dump-flows, mod-flows without `table=`).
    /// An add without `table=` goes to table 0.
    pub table: Option<u8>,
    /// Priority (default 32768); used by add and the strict commands.
    pub priority: u16,
    /// Cookie: the new flow's cookie for add; the value to select for del/mod/dump
    /// when `cookie_mask` is non-zero.
    pub cookie: u64,
    /// `cookie=V/M`: the bits of `cookie` that select flows (0 = select regardless of cookie).
    pub cookie_mask: u64,
    /// The match.
    pub matches: Match,
    /// Actions (add and modify).
    pub actions: Vec<Action>,
    /// `idle_timeout=`.
    pub idle_timeout: u16,
    /// `hard_timeout=`.
    pub hard_timeout: u16,
    /// `out_port=N`: select only flows that output to this port (del/dump).
    pub out_port: Option<PortNo>,
    /// Flow-mod flags given (add and modify).
    pub flags: FlowFlags,
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            table: None,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            cookie_mask: 0,
            matches: Match::CATCHALL,
            actions: Vec::new(),
            idle_timeout: 0,
            hard_timeout: 0,
            out_port: None,
            flags: FlowFlags::NONE,
        }
    }
}

impl FlowSpec {
    /// The flow an add installs from this spec.
    pub fn to_flow(&self) -> Flow {
        Flow {
            table: self.table.unwrap_or(0),
            priority: self.priority,
            cookie: self.cookie,
            matches: self.matches,
            actions: self.actions.clone(),
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            flags: self.flags.state(),
        }
    }
}

/// OpenFlow flow-mod flags (OpenFlow 1.3.5 §7.3.4.1 `ofp_flow_mod_flags`),
/// spelled as ovs-ofctl spells them. Following OVS (`OFPUTIL_FF_STATE` in
/// include/openvswitch/ofp-flow.h), `send_flow_rem`, `no_packet_counts` and
/// `no_byte_counts` are kept with the flow and printed by dump-flows;
/// `check_overlap` and `reset_counts` only change how one flow-mod is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowFlags {
    /// `send_flow_rem`: tell the controller when the flow is removed (there
    /// is no controller here, so nothing is sent; the flag is kept and shown).
    pub send_flow_rem: bool,
    /// `check_overlap`: refuse an add that overlaps a flow of the same
    /// priority in the same table (`OFPFMFC_OVERLAP`).
    pub check_overlap: bool,
    /// `reset_counts`: the added or modified flow starts with zero counters.
    pub reset_counts: bool,
    /// `no_packet_counts`: the switch need not count packets (OVS still counts; so do we).
    pub no_packet_counts: bool,
    /// `no_byte_counts`: the switch need not count bytes (OVS still counts; so do we).
    pub no_byte_counts: bool,
}

impl FlowFlags {
    /// No flag set.
    pub const NONE: FlowFlags = FlowFlags {
        send_flow_rem: false,
        check_overlap: false,
        reset_counts: false,
        no_packet_counts: false,
        no_byte_counts: false,
    };

    /// The flags a flow keeps once installed.
    pub fn state(self) -> FlowFlags {
        FlowFlags {
            check_overlap: false,
            reset_counts: false,
            ..self
        }
    }

    /// The set flags' names, in the order OVS prints them (`ofp_print_flow_flags`).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (self.send_flow_rem, "send_flow_rem"),
            (self.check_overlap, "check_overlap"),
            (self.reset_counts, "reset_counts"),
            (self.no_packet_counts, "no_packet_counts"),
            (self.no_byte_counts, "no_byte_counts"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }

    /// Set the flag called `name`; false when there is no such flag.
    pub fn set(&mut self, name: &str) -> bool {
        let slot = match name {
            "send_flow_rem" => &mut self.send_flow_rem,
            "check_overlap" => &mut self.check_overlap,
            "reset_counts" => &mut self.reset_counts,
            "no_packet_counts" => &mut self.no_packet_counts,
            "no_byte_counts" => &mut self.no_byte_counts,
            _ => return false,
        };
        *slot = true;
        true
    }
}
