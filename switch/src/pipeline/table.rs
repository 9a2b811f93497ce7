//! Flow tables and the OpenFlow 1.3 flow-mod semantics over them, as OVS
//! (`ofproto/ofproto.c`) implements them.
//!
//! Data enters from the control thread: a batch of [`FlowMod`]s through
//! [`Pipeline::apply`], a whole flow set through [`Pipeline::replace_flows`],
//! or the clock through [`Pipeline::expire`]. The control thread then clones
//! the pipeline and publishes the clone as an immutable snapshot; polling
//! threads only read snapshots ([`Pipeline::lookup`]) and bump the shared
//! atomic counters ([`RuleStats`], [`TableStats`]). Nothing here runs per
//! packet except `lookup`, which never allocates or locks.
//!
//! Semantics (OpenFlow 1.3 as `ovs-ofctl -O OpenFlow13` drives OVS):
//! - **add**: a flow with the same table, match and priority is replaced.
//!   OpenFlow 1.3 without the `reset_counts` flag (which ovs-ofctl only sets
//!   when asked) carries the packet/byte counters over to the new flow
//!   (OVS `ofputil_decode_flow_mod_flags`: only OF1.0/1.1 adds reset counts;
//!   `replace_rule_finish` forwards them); the duration and the idle timer
//!   restart (OVS also forwards the last-used time; we do not). Cookie,
//!   actions and timeouts come from the new flow.
//! - **modify** (loose): every flow of the selected table(s) whose match is
//!   covered by the spec's match and whose cookie agrees under `cookie_mask`
//!   gets the new actions; cookie, timeouts, counters and duration are kept
//!   (OVS `replace_rule_start` for non-add commands). `out_port` is ignored
//!   (OVS passes OFPP_ANY for modify). When nothing is selected nothing is
//!   added: OVS's `modify_may_add_flow` is false for OF1.1+ flow-mods, whose
//!   decoded `new_cookie` is all-ones. **modify strict**: the same, on the
//!   flow with exactly that match and priority.
//! - **delete** (loose): covered match, cookie under mask, `out_port`
//!   (a flow outputs to a port when one of its `Output` actions names it);
//!   **delete strict**: exact match and priority, plus cookie and `out_port`.
//! - `table` None (or 255, OFPTT_ALL) selects every table for modify, delete
//!   and dump; an add without a table goes to table 0, an add to 255 is an
//!   error.
//! - A batch is all or nothing: every mutation is recorded in an undo log and
//!   rolled back (rules restored at their old tie-break position) on error.
//! - Timeouts (`ofproto-dpif.c rule_expire`): hard after `hard_timeout`
//!   seconds since installation, idle after `idle_timeout` seconds since the
//!   last hit (or installation if never hit); both strictly greater, as OVS
//!   compares `now > used + timeout`. Deviation: OVS restarts the hard timeout
//!   on modify (it measures from `modified`); we measure from `installed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::classifier::Classifier;
use crate::flow::{ofport, Action, Flow, FlowKey, FlowMask, FlowSpec, Match, PortNo, N_TABLES};

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

    /// Fresh counters starting at `old`'s packet and byte counts (never used).
    fn carried_from(old: &RuleStats) -> RuleStats {
        RuleStats {
            n_packets: AtomicU64::new(old.n_packets.load(Ordering::Relaxed)),
            n_bytes: AtomicU64::new(old.n_bytes.load(Ordering::Relaxed)),
            last_used_ms: AtomicU64::new(0),
        }
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

impl Rule {
    /// True when one of the rule's `Output` actions names `port`
    /// (OVS `ofproto_rule_has_out_port`, restricted to our actions).
    pub fn outputs_to(&self, port: PortNo) -> bool {
        self.flow
            .actions
            .iter()
            .any(|a| matches!(a, Action::Output(p) if *p == port))
    }

    /// True when the rule's idle or hard timeout has elapsed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        let Some(age) = now.checked_duration_since(self.installed) else {
            return false;
        };
        let hard = self.flow.hard_timeout;
        if hard != 0 && age > Duration::from_secs(u64::from(hard)) {
            return true;
        }
        let idle = self.flow.idle_timeout;
        if idle != 0 {
            let used = Duration::from_millis(self.stats.last_used_ms.load(Ordering::Relaxed));
            return age.saturating_sub(used) > Duration::from_secs(u64::from(idle));
        }
        false
    }
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

/// A flow-mod command (OpenFlow 1.3 `ofp_flow_mod_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    /// OFPFC_ADD (`add-flow`).
    Add,
    /// OFPFC_MODIFY (`mod-flows`).
    Modify,
    /// OFPFC_MODIFY_STRICT (`mod-flows --strict`).
    ModifyStrict,
    /// OFPFC_DELETE (`del-flows`).
    Delete,
    /// OFPFC_DELETE_STRICT (`del-flows --strict`).
    DeleteStrict,
}

/// One flow-mod: a command and the flow (or selection) it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMod {
    /// What to do.
    pub command: FlowModCommand,
    /// The flow to add, or the selection and new actions.
    pub spec: FlowSpec,
}

/// What a successful [`Pipeline::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyOutcome {
    /// Flows installed by add (including those that replaced an existing flow).
    pub added: usize,
    /// Of `added`, how many replaced a flow with the same table, match and priority.
    pub replaced: usize,
    /// Flows whose actions a modify rewrote.
    pub modified: usize,
    /// Flows removed by delete.
    pub deleted: usize,
}

impl FlowModError {
    /// Position of the offending flow-mod (or flow) in the batch.
    pub fn index(&self) -> usize {
        match self {
            FlowModError::TableOutOfRange { index, .. }
            | FlowModError::GotoTableOutOfRange { index, .. }
            | FlowModError::GotoTableNotForward { index, .. }
            | FlowModError::GotoTableNotLast { index }
            | FlowModError::Overlap { index, .. }
            | FlowModError::BadOutGroup { index, .. } => *index,
        }
    }
}

/// Why a flow-mod batch (or a replace-flows set) was rejected. `index` is the
/// position of the offending flow-mod (or flow) in the input; nothing was
/// changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowModError {
    /// The flow's table is not 0..=254 (255 means "all tables" and is not valid for add).
    #[error("table {table} out of range (an add needs a table 0..=254; 255 means all tables)")]
    TableOutOfRange {
        /// Offending flow-mod.
        index: usize,
        /// The table given.
        table: u8,
    },
    /// `goto_table` names a table beyond the last one (254).
    #[error("goto_table:{target} out of range (last table is 254)")]
    GotoTableOutOfRange {
        /// Offending flow-mod.
        index: usize,
        /// The goto target.
        target: u8,
    },
    /// `goto_table` does not go forward (OpenFlow 1.3 §5.1: only to a greater table).
    #[error("goto_table:{target} must name a table greater than the flow's table {table}")]
    GotoTableNotForward {
        /// Offending flow-mod.
        index: usize,
        /// The flow's table.
        table: u8,
        /// The goto target.
        target: u8,
    },
    /// `goto_table` is not the last instruction, or appears twice.
    #[error("goto_table must be the last instruction, and appear once")]
    GotoTableNotLast {
        /// Offending flow-mod.
        index: usize,
    },
    /// A `group:N` action names a group the bridge does not have (OpenFlow
    /// 1.3 §6.4 `OFPBAC_BAD_OUT_GROUP`, as OVS `ofproto_check_ofpacts` reports it).
    #[error("OFPBAC_BAD_OUT_GROUP: group:{group} names a group that does not exist (add it first with add-group)")]
    BadOutGroup {
        /// Offending flow-mod.
        index: usize,
        /// The missing group.
        group: u32,
    },
    /// An add with `check_overlap` overlaps a flow of the same priority in
    /// the same table (OpenFlow 1.3 §6.4 `OFPFMFC_OVERLAP`, as OVS reports it).
    #[error("OFPFMFC_OVERLAP: check_overlap: the flow overlaps an existing flow of the same table and priority:{existing}")]
    Overlap {
        /// Offending flow-mod.
        index: usize,
        /// The existing flow, as dump-flows --no-stats prints it.
        existing: String,
    },
}

/// What [`Pipeline::replace_flows`] changed, each list sorted by table then
/// priority descending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaceDiff {
    /// Flows that did not exist (by table, match and priority) and were added.
    pub added: Vec<Flow>,
    /// Flows that existed with other actions, cookie or timeouts: the new versions
    /// (re-added as OVS's replace-flows does, so counters carry over).
    pub modified: Vec<Flow>,
    /// Flows that were removed.
    pub removed: Vec<Flow>,
    /// Flows left untouched (their counters and duration kept).
    pub unchanged: usize,
}

impl ReplaceDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// One row of dump-tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSummary {
    /// Table id.
    pub id: u8,
    /// Installed flows.
    pub active: usize,
    /// Lookups so far.
    pub lookups: u64,
    /// Lookups that found a flow.
    pub matched: u64,
}

/// One step of the undo log of a flow-mod batch.
enum Undo {
    /// A slot was written by insert; put `old` back (or empty the slot).
    Inserted {
        table: u8,
        m: Match,
        priority: u16,
        old: Option<Arc<Rule>>,
    },
    /// A rule was taken out; restore it with its tie-break sequence number.
    Removed {
        table: u8,
        m: Match,
        priority: u16,
        seq: u64,
        rule: Arc<Rule>,
    },
}

/// All tables of a bridge: an immutable snapshot once published.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `N_TABLES` real tables plus one permanently empty slot at index 255
    /// (OFPTT_ALL is not a table), so `table(255)` and `lookup(255, ..)`
    /// answer "empty" instead of panicking.
    tables: Vec<Table>,
    /// Route tables, neighbours and router MACs for the `route` action
    /// (shared between snapshots until a routing change replaces them).
    routes: Arc<crate::route::RouteSet>,
    /// Router addresses and rate of the ICMP time exceeded errors sent on
    /// TTL expiry (`set-bridge router-ip=...`).
    icmp_errors: crate::packet::icmp_error::IcmpErrorConfig,
    /// The EMC's insertion inverse probability set by `set-bridge
    /// emc-insert-inv-prob=N` (None: the datapath's configured default).
    emc_insert_inv_prob: Option<u32>,
    /// OpenFlow groups for `group:N` (shared between snapshots until a
    /// group-mod replaces them).
    groups: Arc<crate::group::GroupTable>,
    /// The bridge's connection tracker for `ct` (shared by every snapshot:
    /// a flow-mod never loses connections).
    conntrack: Arc<crate::conntrack::Conntrack>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            tables: (0..=N_TABLES).map(|_| Table::default()).collect(),
            groups: Arc::default(),
            routes: Arc::default(),
            icmp_errors: crate::packet::icmp_error::IcmpErrorConfig::default(),
            emc_insert_inv_prob: None,
            conntrack: Arc::default(),
        }
    }
}

/// True when `spec`'s cookie selects `rule` (OpenFlow 1.3 §6.4 cookie_mask).
fn cookie_selects(spec: &FlowSpec, rule: &Rule) -> bool {
    (rule.flow.cookie ^ spec.cookie) & spec.cookie_mask == 0
}

/// True when `spec`'s out_port selects `rule` (None / ANY: every rule).
fn out_port_selects(spec: &FlowSpec, rule: &Rule) -> bool {
    match spec.out_port {
        None | Some(ofport::ANY) => true,
        Some(p) => rule.outputs_to(p),
    }
}

/// Check the instructions of a flow that will live in `table` (None: a
/// modify over every table, where only the table-independent checks apply
/// here and the forward check is made per selected flow).
fn validate_actions(
    index: usize,
    table: Option<u8>,
    actions: &[Action],
) -> Result<(), FlowModError> {
    let last = actions.len().saturating_sub(1);
    for (i, a) in actions.iter().enumerate() {
        if let Action::GotoTable(target) = *a {
            if i != last {
                return Err(FlowModError::GotoTableNotLast { index });
            }
            if usize::from(target) >= N_TABLES {
                return Err(FlowModError::GotoTableOutOfRange { index, target });
            }
            if let Some(table) = table.filter(|t| target <= *t) {
                return Err(FlowModError::GotoTableNotForward {
                    index,
                    table,
                    target,
                });
            }
        }
    }
    Ok(())
}

/// Validate a flow to be added.
fn validate_flow(index: usize, flow: &Flow) -> Result<(), FlowModError> {
    if usize::from(flow.table) >= N_TABLES {
        return Err(FlowModError::TableOutOfRange {
            index,
            table: flow.table,
        });
    }
    validate_actions(index, Some(flow.table), &flow.actions)
}

/// Dump order: table ascending, priority descending, then the match words
/// (so equal-priority flows print in a stable order whatever their history).
fn flow_order(a: &Flow, b: &Flow) -> core::cmp::Ordering {
    a.table
        .cmp(&b.table)
        .then(b.priority.cmp(&a.priority))
        .then_with(|| a.matches.mask().words().cmp(b.matches.mask().words()))
        .then_with(|| a.matches.value().words().cmp(b.matches.value().words()))
}

impl Pipeline {
    /// An empty pipeline (255 empty tables).
    pub fn new() -> Self {
        Self::default()
    }

    /// The routing state the `route` action consults.
    pub fn routes(&self) -> &crate::route::RouteSet {
        &self.routes
    }

    /// The routing state, shared.
    pub fn routes_arc(&self) -> Arc<crate::route::RouteSet> {
        Arc::clone(&self.routes)
    }

    /// Replace the routing state.
    pub fn set_routes(&mut self, routes: crate::route::RouteSet) {
        self.routes = Arc::new(routes);
    }

    /// The bridge's groups.
    pub fn groups(&self) -> &crate::group::GroupTable {
        &self.groups
    }

    /// Flows whose actions name group `id` (dump-group-stats `ref_count`).
    pub fn group_ref_count(&self, id: u32) -> usize {
        self.rules()
            .filter(|r| r.flow.actions.contains(&Action::Group(id)))
            .count()
    }

    /// Apply one group-mod. Deleting a group also deletes every flow whose
    /// actions name it (OpenFlow 1.3 §6.5; OVS `delete_group_start`).
    /// Returns how many flows went with it. On error nothing changed.
    pub fn apply_group_mod(
        &mut self,
        gm: &crate::group::GroupMod,
    ) -> Result<usize, crate::group::GroupModError> {
        let mut groups = (*self.groups).clone();
        let gone = groups.apply(gm)?;
        // A group another group's bucket forwards to cannot go alone
        // (OpenFlow 1.3 §7.3.4.2 OFPGMFC_CHAINED_GROUP).
        for id in &gone {
            if let Some(g) = groups.iter().find(|g| {
                g.desc
                    .buckets
                    .iter()
                    .any(|b| b.actions.contains(&Action::Group(*id)))
            }) {
                return Err(crate::group::GroupModError::StillChained {
                    group: *id,
                    by: g.desc.id,
                });
            }
        }
        let mut deleted = 0;
        if !gone.is_empty() {
            let doomed: Vec<(u8, Match, u16)> = self
                .rules()
                .filter(|r| {
                    r.flow
                        .actions
                        .iter()
                        .any(|a| matches!(a, Action::Group(g) if gone.contains(g)))
                })
                .map(|r| (r.flow.table, r.flow.matches, r.flow.priority))
                .collect();
            let mut undo = Vec::new();
            for (t, m, p) in doomed {
                if self.uninstall(t, &m, p, &mut undo).is_some() {
                    deleted += 1;
                }
            }
        }
        self.groups = Arc::new(groups);
        Ok(deleted)
    }

    /// Every `group:N` in `actions` must name an existing group.
    fn check_groups(&self, index: usize, actions: &[Action]) -> Result<(), FlowModError> {
        for a in actions {
            if let Action::Group(g) = a {
                if self.groups.get(*g).is_none() {
                    return Err(FlowModError::BadOutGroup { index, group: *g });
                }
            }
        }
        Ok(())
    }

    /// The bridge's connection tracker.
    pub fn conntrack(&self) -> &crate::conntrack::Conntrack {
        &self.conntrack
    }

    /// The connection tracker, shared (control thread: ct-show, sweeps).
    pub fn conntrack_arc(&self) -> Arc<crate::conntrack::Conntrack> {
        Arc::clone(&self.conntrack)
    }

    /// Where ICMP time exceeded errors come from (router addresses, rate).
    pub fn icmp_errors(&self) -> &crate::packet::icmp_error::IcmpErrorConfig {
        &self.icmp_errors
    }

    /// Replace the ICMP error settings.
    pub fn set_icmp_errors(&mut self, cfg: crate::packet::icmp_error::IcmpErrorConfig) {
        self.icmp_errors = cfg;
    }

    /// The EMC insertion inverse probability the polling threads apply
    /// with this snapshot (None: keep their configured one).
    pub fn emc_insert_inv_prob(&self) -> Option<u32> {
        self.emc_insert_inv_prob
    }

    /// Set it (`set-bridge emc-insert-inv-prob=N`).
    pub fn set_emc_insert_inv_prob(&mut self, n: Option<u32>) {
        self.emc_insert_inv_prob = n;
    }

    /// Table `id` (255, which is not a table, is always empty).
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

    /// Add a flow with add semantics (see the module doc), without
    /// validating its instructions: for trusted callers and tests. A flow
    /// for table 255 (not a table) is not installed; use [`Pipeline::apply`]
    /// to get errors for bad input.
    pub fn add_flow(&mut self, flow: Flow) {
        if usize::from(flow.table) < N_TABLES {
            self.install(flow, Instant::now(), &mut Vec::new());
        }
    }

    /// Every rule of every table, table by table.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.tables
            .iter()
            .flat_map(|t| t.classifier.iter().map(|(_, _, r)| r))
    }

    /// Total number of installed flows.
    pub fn n_rules(&self) -> usize {
        self.tables.iter().map(|t| t.classifier.len()).sum()
    }

    /// Ids of the tables holding at least one flow, ascending.
    pub fn table_ids_in_use(&self) -> Vec<u8> {
        (0..N_TABLES)
            .filter(|&i| !self.tables[i].classifier.is_empty())
            .filter_map(|i| u8::try_from(i).ok())
            .collect()
    }

    /// Number of flows in table `id` (0 for 255).
    pub fn n_active(&self, id: u8) -> usize {
        self.table(id).classifier.len()
    }

    /// dump-tables: one row per table 0..=254.
    pub fn table_summaries(&self) -> Vec<TableSummary> {
        self.tables[..N_TABLES]
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                Some(TableSummary {
                    id: u8::try_from(i).ok()?,
                    active: t.classifier.len(),
                    lookups: t.stats.lookups.load(Ordering::Relaxed),
                    matched: t.stats.matched.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// The tables a modify/delete/dump `table` filter selects.
    fn selected_tables(table: Option<u8>) -> core::ops::Range<usize> {
        match table {
            Some(t) if usize::from(t) < N_TABLES => usize::from(t)..usize::from(t) + 1,
            _ => 0..N_TABLES,
        }
    }

    /// Flows selected by `spec` as dump-flows and del-flows select them:
    /// the table filter (None or 255 = all), the match (`strict`: exactly
    /// this match and priority; loose: every flow whose match `spec.matches`
    /// covers), the cookie under `cookie_mask` and `out_port`.
    ///
    /// Sorted by table ascending, then priority descending (then match, for
    /// stability). OVS prints in classifier iteration order, which is only
    /// roughly that; this is the order operators read dumps in.
    pub fn select(&self, spec: &FlowSpec, strict: bool) -> Vec<&Arc<Rule>> {
        let mut out: Vec<&Arc<Rule>> = Vec::new();
        for t in &self.tables[Self::selected_tables(spec.table)] {
            if strict {
                if let Some(r) = t.classifier.get(&spec.matches, spec.priority) {
                    if cookie_selects(spec, r) && out_port_selects(spec, r) {
                        out.push(r);
                    }
                }
            } else {
                out.extend(t.classifier.iter().filter_map(|(m, _, r)| {
                    (spec.matches.covers(m) && cookie_selects(spec, r) && out_port_selects(spec, r))
                        .then_some(r)
                }));
            }
        }
        out.sort_by(|a, b| flow_order(&a.flow, &b.flow));
        out
    }

    /// Install `flow` (already validated) with add semantics; log the undo.
    /// Returns true when it replaced a flow.
    fn install(&mut self, flow: Flow, now: Instant, undo: &mut Vec<Undo>) -> bool {
        let table = flow.table;
        let t = &mut self.tables[usize::from(table)];
        let (m, priority) = (flow.matches, flow.priority);
        let stats = match t.classifier.get(&m, priority) {
            // OF1.3 add without reset_counts: counters carry over.
            Some(old) => RuleStats::carried_from(&old.stats),
            None => RuleStats::default(),
        };
        let rule = Arc::new(Rule {
            flow,
            stats: Arc::new(stats),
            installed: now,
        });
        let old = t.classifier.insert(m, priority, rule);
        let replaced = old.is_some();
        undo.push(Undo::Inserted {
            table,
            m,
            priority,
            old,
        });
        replaced
    }

    /// Give the installed flow with `flow`'s table, match and priority fresh
    /// zero counters (an add with `reset_counts` that replaced a flow: OVS
    /// replace_rule_start does not carry the old counters over then).
    fn reset_counts(&mut self, flow: &Flow) {
        let t = &mut self.tables[usize::from(flow.table)];
        if let Some(r) = t.classifier.get(&flow.matches, flow.priority) {
            let rule = Arc::new(Rule {
                flow: r.flow.clone(),
                stats: Arc::new(RuleStats::default()),
                installed: r.installed,
            });
            t.classifier.insert(flow.matches, flow.priority, rule);
        }
    }

    /// Remove one flow, logging the undo.
    fn uninstall(
        &mut self,
        table: u8,
        m: &Match,
        priority: u16,
        undo: &mut Vec<Undo>,
    ) -> Option<Arc<Rule>> {
        let (seq, rule) = self.tables[usize::from(table)]
            .classifier
            .take(m, priority)?;
        undo.push(Undo::Removed {
            table,
            m: *m,
            priority,
            seq,
            rule: Arc::clone(&rule),
        });
        Some(rule)
    }

    /// Undo every logged step, newest first.
    fn rollback(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Inserted {
                    table,
                    m,
                    priority,
                    old,
                } => {
                    let c = &mut self.tables[usize::from(table)].classifier;
                    match old {
                        // Replacing keeps the sequence number: position restored.
                        Some(old) => {
                            c.insert(m, priority, old);
                        }
                        None => {
                            c.remove(&m, priority);
                        }
                    }
                }
                Undo::Removed {
                    table,
                    m,
                    priority,
                    seq,
                    rule,
                } => {
                    self.tables[usize::from(table)]
                        .classifier
                        .restore(m, priority, seq, rule);
                }
            }
        }
    }

    /// Apply a batch of flow-mods, all or nothing (see the module doc for the
    /// semantics of each command). On error nothing has changed.
    pub fn apply(&mut self, mods: &[FlowMod]) -> Result<ApplyOutcome, FlowModError> {
        let now = Instant::now();
        let mut undo = Vec::new();
        let mut out = ApplyOutcome::default();
        for (index, fm) in mods.iter().enumerate() {
            if let Err(e) = self.apply_one(index, fm, now, &mut undo, &mut out) {
                self.rollback(undo);
                return Err(e);
            }
        }
        Ok(out)
    }

    fn apply_one(
        &mut self,
        index: usize,
        fm: &FlowMod,
        now: Instant,
        undo: &mut Vec<Undo>,
        out: &mut ApplyOutcome,
    ) -> Result<(), FlowModError> {
        let spec = &fm.spec;
        match fm.command {
            FlowModCommand::Add => {
                let flow = spec.to_flow();
                validate_flow(index, &flow)?;
                self.check_groups(index, &flow.actions)?;
                if spec.flags.check_overlap {
                    // OVS add_flow_start: classifier_rule_overlaps, i.e. a
                    // rule of the same priority some packet could match too
                    // (an identical match counts).
                    let t = &self.tables[usize::from(flow.table)];
                    if let Some((_, _, r)) = t
                        .classifier
                        .iter()
                        .find(|(m, p, _)| *p == flow.priority && m.overlaps(&flow.matches))
                    {
                        return Err(FlowModError::Overlap {
                            index,
                            existing: format!(" {}", crate::flow::format_flow(&r.flow)),
                        });
                    }
                }
                out.added += 1;
                if self.install(flow, now, undo) {
                    if spec.flags.reset_counts {
                        self.reset_counts(&spec.to_flow());
                    }
                    out.replaced += 1;
                }
            }
            FlowModCommand::Modify | FlowModCommand::ModifyStrict => {
                let strict = fm.command == FlowModCommand::ModifyStrict;
                // Checked even when nothing gets selected, as OVS checks the
                // instructions against the flow-mod's table when decoding it.
                let table = spec.table.filter(|t| usize::from(*t) < N_TABLES);
                validate_actions(index, table, &spec.actions)?;
                self.check_groups(index, &spec.actions)?;
                // OVS ignores out_port for modify.
                let sel = FlowSpec {
                    out_port: None,
                    ..spec.clone()
                };
                let targets: Vec<Arc<Rule>> =
                    self.select(&sel, strict).into_iter().cloned().collect();
                for old in targets {
                    validate_actions(index, Some(old.flow.table), &spec.actions)?;
                    let flow = Flow {
                        actions: spec.actions.clone(),
                        ..old.flow.clone()
                    };
                    // OVS modify_flows: counters are kept unless reset_counts.
                    let stats = if spec.flags.reset_counts {
                        Arc::new(RuleStats::default())
                    } else {
                        Arc::clone(&old.stats)
                    };
                    let rule = Arc::new(Rule {
                        flow,
                        stats,
                        installed: old.installed,
                    });
                    let (table, m, priority) =
                        (old.flow.table, old.flow.matches, old.flow.priority);
                    let prev = self.tables[usize::from(table)]
                        .classifier
                        .insert(m, priority, rule);
                    undo.push(Undo::Inserted {
                        table,
                        m,
                        priority,
                        old: prev,
                    });
                    out.modified += 1;
                }
            }
            FlowModCommand::Delete | FlowModCommand::DeleteStrict => {
                let strict = fm.command == FlowModCommand::DeleteStrict;
                let keys: Vec<(u8, Match, u16)> = self
                    .select(spec, strict)
                    .into_iter()
                    .map(|r| (r.flow.table, r.flow.matches, r.flow.priority))
                    .collect();
                for (table, m, priority) in keys {
                    if self.uninstall(table, &m, priority, undo).is_some() {
                        out.deleted += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Remove every rule whose hard or idle timeout has elapsed at `now`
    /// (see [`Rule::is_expired`]); returns them, in dump order.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<Rule>> {
        let mut gone: Vec<Arc<Rule>> = self
            .rules()
            .filter(|r| r.is_expired(now))
            .cloned()
            .collect();
        for r in &gone {
            self.tables[usize::from(r.flow.table)]
                .classifier
                .remove(&r.flow.matches, r.flow.priority);
        }
        gone.sort_by(|a, b| flow_order(&a.flow, &b.flow));
        gone
    }

    /// Make the flow set equal to `flows` (ovs-ofctl replace-flows): flows
    /// identical in table, match, priority, actions, cookie and timeouts are
    /// kept with their counters and duration; changed ones are re-added (add
    /// semantics: counters carry over, duration restarts); missing ones are
    /// added, extra ones removed. When `flows` holds the same table, match and
    /// priority twice the later one wins (as ovs-ofctl's file reader does).
    /// Atomic: every flow is validated first; on error nothing changed and the
    /// error's `index` is the flow's position in `flows`.
    pub fn replace_flows(&mut self, flows: Vec<Flow>) -> Result<ReplaceDiff, FlowModError> {
        for (index, f) in flows.iter().enumerate() {
            validate_flow(index, f)?;
            self.check_groups(index, &f.actions)?;
        }
        let mut wanted: HashMap<(u8, Match, u16), Flow> = HashMap::with_capacity(flows.len());
        for f in flows {
            wanted.insert((f.table, f.matches, f.priority), f);
        }
        let mut diff = ReplaceDiff::default();
        let mut to_remove: Vec<Arc<Rule>> = Vec::new();
        for r in self.rules() {
            let key = (r.flow.table, r.flow.matches, r.flow.priority);
            match wanted.get(&key) {
                Some(f) if *f == r.flow => {
                    wanted.remove(&key);
                    diff.unchanged += 1;
                }
                Some(_) => {}
                None => to_remove.push(Arc::clone(r)),
            }
        }
        let now = Instant::now();
        let mut undo = Vec::new();
        for r in &to_remove {
            self.uninstall(r.flow.table, &r.flow.matches, r.flow.priority, &mut undo);
            diff.removed.push(r.flow.clone());
        }
        let mut rest: Vec<Flow> = wanted.into_values().collect();
        rest.sort_by(flow_order);
        for f in rest {
            if self.install(f.clone(), now, &mut undo) {
                diff.modified.push(f);
            } else {
                diff.added.push(f);
            }
        }
        diff.removed.sort_by(flow_order);
        Ok(diff)
    }
}
