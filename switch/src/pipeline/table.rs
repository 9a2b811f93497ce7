//! Flow tables and the OpenFlow flow-mod semantics over them.
//!
//! SKELETON: the signatures here are the contract other modules build on;
//! the flow-mod semantics (modify/delete strict and not, cookie masks,
//! timeouts, atomic batches) are filled in behind them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::classifier::Classifier;
use crate::flow::{Flow, FlowKey, FlowMask, N_TABLES};

/// Per-flow counters, shared by every snapshot the rule lives in and updated
/// by the datapath when it pushes megaflow statistics.
#[derive(Debug, Default)]
pub struct RuleStats {
    /// Packets matched.
    pub n_packets: AtomicU64,
    /// Bytes matched.
    pub n_bytes: AtomicU64,
    /// Milliseconds since the rule's `installed` instant of the last hit (0 = never hit).
    pub last_used_ms: AtomicU64,
}

impl RuleStats {
    /// Account `packets`/`bytes` hits at `now`.
    pub fn add(&self, packets: u64, bytes: u64, now_ms: u64) {
        self.n_packets.fetch_add(packets, Ordering::Relaxed);
        self.n_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// An installed flow.
#[derive(Debug)]
pub struct Rule {
    /// The flow as the user gave it (normalised).
    pub flow: Flow,
    /// Counters (kept across mod-flows, as OVS does without reset_counts).
    pub stats: Arc<RuleStats>,
    /// When the rule was added (for duration and hard_timeout).
    pub installed: Instant,
}

/// Lookup counters of one table (dump-tables).
#[derive(Debug, Default)]
pub struct TableStats {
    /// Lookups.
    pub lookups: AtomicU64,
    /// Lookups that found a rule.
    pub matched: AtomicU64,
}

/// One flow table.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// The rules.
    pub classifier: Classifier<Arc<Rule>>,
    /// Counters, shared across snapshots.
    pub stats: Arc<TableStats>,
}

/// All tables of a bridge: an immutable snapshot once published.
#[derive(Debug, Clone)]
pub struct Pipeline {
    tables: Vec<Table>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            tables: (0..N_TABLES).map(|_| Table::default()).collect(),
        }
    }
}

impl Pipeline {
    /// An empty pipeline (255 empty tables).
    pub fn new() -> Self {
        Self::default()
    }

    /// Table `id`.
    pub fn table(&self, id: u8) -> &Table {
        &self.tables[usize::from(id)]
    }

    /// Highest-priority rule of table `id` matching `key`; ORs the consulted
    /// bits into `wc` (see `Classifier::lookup`). Does not touch counters.
    pub fn lookup(&self, id: u8, key: &FlowKey, wc: &mut FlowMask) -> Option<&Arc<Rule>> {
        self.tables
            .get(usize::from(id))?
            .classifier
            .lookup(key, wc)
            .map(|(_, _, r)| r)
    }

    /// Add a flow (replacing one with the same table, match and priority,
    /// whose counters are then reset, as OVS does).
    pub fn add_flow(&mut self, flow: Flow) {
        let t = &mut self.tables[usize::from(flow.table)];
        let rule = Rule {
            stats: Arc::default(),
            installed: Instant::now(),
            flow,
        };
        let (m, p) = (rule.flow.matches, rule.flow.priority);
        t.classifier.insert(m, p, Arc::new(rule));
    }

    /// Every rule of every table, table by table.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.tables
            .iter()
            .flat_map(|t| t.classifier.iter().map(|(_, _, r)| r))
    }
}
