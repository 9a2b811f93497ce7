//! Slow-path translation: one packet key through the OpenFlow tables, with
//! OVS's semantics, into a megaflow (mask + datapath actions).
//!
//! SKELETON: the signatures are the contract; the body is filled in behind them.

use std::sync::Arc;

use super::table::{Pipeline, Rule};
use crate::datapath::DpAction;
use crate::flow::{FlowKey, FlowMask, PortNo};

/// Why translation decided to drop (or stopped early).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XlateDrop {
    /// A table miss with no earlier output (OpenFlow 1.3 table-miss = drop).
    NoMatch {
        /// The table that missed.
        table: u8,
    },
    /// `dec_ttl` on TTL 0 or 1 (OVS's invalid_ttl exception).
    InvalidTtl,
    /// Resubmit nesting deeper than 64: the whole packet is dropped.
    ResubmitDepth,
    /// The matching flow has an empty action list.
    ExplicitDrop,
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
    pub outputs: Vec<(PortNo, FlowKey)>,
    /// The packet's fields after every action ran.
    pub final_key: FlowKey,
    /// Why the packet was (partly) dropped, if it was.
    pub drop: Option<XlateDrop>,
}

/// Translate `key` through `pipeline`, starting in table 0. `ports` lists the
/// bridge's ports (for FLOOD/ALL). Never fails: a problem is a drop.
pub fn translate(pipeline: &Pipeline, ports: &[PortNo], key: &FlowKey) -> Xlation {
    let _ = ports;
    let mut mask = FlowKey::ZERO;
    mask.in_port = u32::MAX;
    let found = pipeline.lookup(0, key, &mut mask).cloned();
    Xlation {
        mask,
        actions: Vec::new(),
        tables: vec![(0, found.is_some())],
        rules: found.into_iter().collect(),
        outputs: Vec::new(),
        final_key: *key,
        drop: Some(XlateDrop::NoMatch { table: 0 }),
    }
}
