//! OpenFlow groups (OpenFlow 1.3 §5.6, with OVS's OpenFlow 1.5 bucket
//! commands and its `selection_method` extension): what a `group:N` action
//! runs, and the per-bridge group table the control thread edits.
//!
//! Data enters from the control thread as group-mod text in ovs-ofctl syntax
//! ([`parse::parse_group_mod`]), applied to a [`GroupTable`] with
//! [`GroupTable::apply`]; the table is part of the published
//! [`crate::pipeline::Pipeline`] snapshot. It leaves through translation
//! (`pipeline::xlate`), which asks [`Group::select`] for the bucket(s) a
//! packet takes, and through dump-groups / dump-group-stats
//! ([`parse::format_group`], [`Group::stats_line`]).
//!
//! Group types: `all` (every bucket gets a clone of the packet),
//! `select` (one bucket by a hash of the flow), `indirect` (the one
//! bucket), `ff` / `fast_failover` (the first live bucket).
//!
//! Bucket choice for `select` is **weighted rendezvous hashing**
//! (highest-random-weight, Thaler & Ravishankar 1998, with the logarithmic
//! weighting of Schindelhauer & Schomaker 2005): every bucket scores
//! `-ln(u) / weight` where `u` in (0,1) is a hash of the flow hash and the
//! bucket's id, and the lowest score wins. Why: removing a bucket moves
//! exactly the flows that were on it (every other flow's winner is
//! unchanged), adding one moves only the flows it now wins (an expected
//! `weight / total` share), and a flow's bucket depends on bucket ids, not
//! on positions, so `insert-buckets`/`remove-buckets` and a `mod-group` that
//! keeps ids disturb nothing else. OVS's `group_best_live_bucket` is the
//! same idea with a cruder weighting (`(hash & 0xffff) * weight`, which is
//! not proportional to the weight); a 256-slot table or Maglev would be O(1)
//! per choice but moves some unrelated flows on every change. The O(buckets)
//! cost is paid once per megaflow miss, never per packet.
//!
//! The flow hash: `selection_method=hash` hashes exactly the listed
//! `fields(...)` (masked, skipping a field whose prerequisites the packet
//! does not meet, as OVS `pick_hash_fields_select_group`), mixed with
//! `selection_method_param`; the default method and `dp_hash` hash the
//! 5-tuple (addresses, protocol, TCP/UDP ports; [`crate::route::ecmp_hash`]).
//! Translation un-wildcards exactly the bits hashed, so the megaflow is as
//! wide as the choice allows. (OVS's default hashes the symmetric L4 tuple
//! with the Ethernet addresses, and `dp_hash` recirculates to let the
//! datapath hash; our 5-tuple is a megaflow that does not split per MAC.)
//!
//! Bucket liveness (`select`, `ff`): a bucket whose `watch_port` is not a
//! port of the bridge, or whose `watch_group` does not exist, is dead; link
//! state is not consulted. A bucket of weight 0 is never selected.
//!
//! Never: allocate or lock per packet (selection runs on the slow path
//! only; the counters are atomics bumped when the datapath pushes megaflow
//! statistics), or panic on any group-mod text.

pub mod parse;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::flow::{Action, Field, FlowKey, FlowMask, PortNo};

pub use parse::{format_group, parse_group_mod, GroupModError};

/// A group id (OpenFlow 1.3: 32 bits; 0..=0xffffff00 are usable).
pub type GroupId = u32;

/// Largest usable group id (OFPG_MAX).
pub const OFPG_MAX: GroupId = 0xffff_ff00;
/// Largest usable bucket id (OFPG15_BUCKET_MAX).
pub const BUCKET_MAX: u32 = 0xffff_ff00;

/// The group type (OpenFlow 1.3 `ofp_group_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupType {
    /// OFPGT_ALL: every bucket, each on a clone of the packet.
    All,
    /// OFPGT_SELECT: one bucket, chosen by a hash of the flow.
    Select,
    /// OFPGT_INDIRECT: the single bucket.
    Indirect,
    /// OFPGT_FF: the first live bucket.
    FastFailover,
}

impl GroupType {
    /// The ovs-ofctl name.
    pub fn name(self) -> &'static str {
        match self {
            GroupType::All => "all",
            GroupType::Select => "select",
            GroupType::Indirect => "indirect",
            GroupType::FastFailover => "ff",
        }
    }
}

/// How a select group hashes (OVS's NTR `selection_method` property).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectionMethod {
    /// Not given: the 5-tuple.
    Default,
    /// `selection_method=hash`: the `fields(...)` listed.
    Hash,
    /// `selection_method=dp_hash`: the 5-tuple (the datapath's hash in OVS).
    DpHash,
}

/// One field of `fields(...)`, with the bits that enter the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashField {
    /// The field.
    pub field: Field,
    /// Bits hashed (the field's all-ones value when unmasked).
    pub mask: u128,
}

/// Packet and byte counters (shared by every snapshot the group lives in).
#[derive(Debug, Default)]
pub struct Counter {
    /// Packets.
    pub packets: AtomicU64,
    /// Bytes.
    pub bytes: AtomicU64,
}

impl Counter {
    /// Credit `packets` and `bytes`.
    pub fn add(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// (packets, bytes) now.
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// One bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Bucket id (OpenFlow 1.5; assigned 0, 1, ... in order when not given).
    pub id: u32,
    /// Relative weight for select groups (default 1; 0 = never selected).
    pub weight: u16,
    /// `watch_port`: the bucket is dead when this port is not on the bridge.
    pub watch_port: Option<PortNo>,
    /// `watch_group`: the bucket is dead when this group does not exist.
    pub watch_group: Option<GroupId>,
    /// Actions, run on a clone of the packet.
    pub actions: Vec<Action>,
    /// Counters (kept across mod-group for a bucket id that stays).
    pub stats: Arc<Counter>,
}

impl PartialEq for Bucket {
    fn eq(&self, o: &Bucket) -> bool {
        self.id == o.id
            && self.weight == o.weight
            && self.watch_port == o.watch_port
            && self.watch_group == o.watch_group
            && self.actions == o.actions
    }
}

/// A group as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupDesc {
    /// Group id.
    pub id: GroupId,
    /// Type.
    pub group_type: GroupType,
    /// Select groups: how the flow is hashed.
    pub method: SelectionMethod,
    /// `selection_method_param`: a hash basis.
    pub method_param: u64,
    /// `fields(...)`: what `selection_method=hash` hashes.
    pub fields: Vec<HashField>,
    /// Buckets, in order.
    pub buckets: Vec<Bucket>,
}

/// A group in the table: its description, counters and age.
#[derive(Debug)]
pub struct Group {
    /// What it is.
    pub desc: GroupDesc,
    /// Group-level counters (a packet counts once however many buckets run).
    pub stats: Arc<Counter>,
    /// When it was added (dump-group-stats `duration`).
    pub created: Instant,
}

/// Which buckets a packet takes through a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// No bucket (no live bucket, or an empty group): the packet's copy
    /// going through the group is dropped.
    None,
    /// One bucket (select, indirect, ff), by index.
    One(usize),
    /// Every bucket, in order (all).
    All,
}

/// Mix one 64-bit word into a hash state (the mixer of `route::ecmp_hash`).
fn mix(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 32)
}

/// A 64-bit finalizer (splitmix64), so nearby inputs give unrelated outputs.
fn finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of bucket `id` with weight `weight` for flow hash
/// `h`: lower wins. `-ln(u) / w` is exponentially distributed with rate
/// `w`, so the minimum over buckets falls on bucket `i` with probability
/// `w_i / sum(w)`.
fn score(h: u64, id: u32, weight: u16) -> f64 {
    let x = finish(h ^ finish(u64::from(id).wrapping_add(0x9e37_79b9_7f4a_7c15)));
    // 53 random bits, shifted off zero: u in (0, 1).
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -u.ln() / f64::from(weight)
}

impl Group {
    /// A new group with fresh counters.
    pub fn new(desc: GroupDesc) -> Group {
        Group {
            desc,
            stats: Arc::default(),
            created: Instant::now(),
        }
    }

    /// Whether bucket `b` may be chosen: its watched port is on the bridge
    /// and its watched group exists.
    fn live(b: &Bucket, ports: &[PortNo], groups: &GroupTable) -> bool {
        b.watch_port.is_none_or(|p| ports.contains(&p))
            && b.watch_group.is_none_or(|g| groups.get(g).is_some())
    }

    /// The flow hash a select group uses for `key`, with every bit it read
    /// set in `wc` (see the module documentation).
    pub fn flow_hash(&self, key: &FlowKey, wc: &mut FlowMask) -> u64 {
        match self.desc.method {
            SelectionMethod::Hash => {
                let mut h = mix(0x9e37_79b9_7f4a_7c15, self.desc.method_param);
                for hf in &self.desc.fields {
                    let info = hf.field.info();
                    // The prerequisite check reads dl_type (always exact)
                    // and, for L4 fields, nw_proto and nw_frag.
                    if !matches!(
                        info.prereq,
                        crate::flow::Prereq::None
                            | crate::flow::Prereq::Ipv4
                            | crate::flow::Prereq::Ipv6
                            | crate::flow::Prereq::IpAny
                            | crate::flow::Prereq::Arp
                    ) {
                        wc.nw_proto = u8::MAX;
                    }
                    if info.prereq == crate::flow::Prereq::Vlan {
                        wc.vlan_tci |= crate::flow::key::VLAN_CFI;
                    }
                    if !info.prereq.satisfied_by(key) {
                        continue;
                    }
                    let v = info.get(key) & hf.mask;
                    h = mix(h, v as u64);
                    h = mix(h, (v >> 64) as u64);
                    let old = info.get(wc);
                    info.set(wc, old | hf.mask);
                }
                h
            }
            SelectionMethod::Default | SelectionMethod::DpHash => {
                crate::route::ecmp_hash_mask(key, wc);
                u64::from(crate::route::ecmp_hash(key))
            }
        }
    }

    /// The bucket(s) a packet with `key` takes; `wc` gains every bit the
    /// choice read. `ports` are the bridge's ports (liveness), `groups` the
    /// table this group lives in (watch_group).
    pub fn select(
        &self,
        key: &FlowKey,
        wc: &mut FlowMask,
        ports: &[PortNo],
        groups: &GroupTable,
    ) -> Choice {
        let buckets = &self.desc.buckets;
        match self.desc.group_type {
            GroupType::All => Choice::All,
            GroupType::Indirect => {
                if buckets.is_empty() {
                    Choice::None
                } else {
                    Choice::One(0)
                }
            }
            GroupType::FastFailover => buckets
                .iter()
                .position(|b| Self::live(b, ports, groups))
                .map_or(Choice::None, Choice::One),
            GroupType::Select => {
                if !buckets
                    .iter()
                    .any(|b| b.weight > 0 && Self::live(b, ports, groups))
                {
                    return Choice::None;
                }
                let h = self.flow_hash(key, wc);
                self.pick(h, |b| Self::live(b, ports, groups))
            }
        }
    }

    /// Weighted rendezvous choice among the buckets `alive` accepts.
    pub fn pick(&self, h: u64, alive: impl Fn(&Bucket) -> bool) -> Choice {
        let mut best: Option<(usize, f64)> = None;
        for (i, b) in self.desc.buckets.iter().enumerate() {
            if b.weight == 0 || !alive(b) {
                continue;
            }
            let s = score(h, b.id, b.weight);
            if best.is_none_or(|(_, bs)| s < bs) {
                best = Some((i, s));
            }
        }
        best.map_or(Choice::None, |(i, _)| Choice::One(i))
    }

    /// The dump-group-stats line (OVS `ofputil_group_stats_format`):
    /// `group_id=1,duration=2.5s,ref_count=1,packet_count=..,byte_count=..,bucket0:packet_count=..,byte_count=..`.
    pub fn stats_line(&self, ref_count: usize, now: Instant) -> String {
        let (p, b) = self.stats.get();
        let d = now.saturating_duration_since(self.created);
        let mut s = format!(
            "group_id={},duration={}.{:03}s,ref_count={},packet_count={},byte_count={}",
            self.desc.id,
            d.as_secs(),
            d.subsec_millis(),
            ref_count,
            p,
            b
        );
        for (i, bk) in self.desc.buckets.iter().enumerate() {
            let (p, b) = bk.stats.get();
            s.push_str(&format!(",bucket{i}:packet_count={p},byte_count={b}"));
        }
        s
    }
}

/// Where `insert-buckets` puts new buckets / which `remove-buckets` removes
/// (OpenFlow 1.5 `command_bucket_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandBucket {
    /// `first` (OFPG15_BUCKET_FIRST).
    First,
    /// `last` (OFPG15_BUCKET_LAST).
    Last,
    /// `all` (OFPG15_BUCKET_ALL; remove only).
    All,
    /// A bucket id: insert after it, or remove it.
    Id(u32),
}

/// A group-mod command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupCommand {
    /// OFPGC_ADD (`add-group`).
    Add,
    /// OFPGC_MODIFY (`mod-group`): replace type, method and buckets.
    Modify,
    /// OFPGC15_INSERT_BUCKET (`insert-buckets`).
    InsertBuckets,
    /// OFPGC15_REMOVE_BUCKET (`remove-buckets`).
    RemoveBuckets,
    /// OFPGC_DELETE (`del-groups`).
    Delete,
}

/// A parsed group-mod.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMod {
    /// What to do.
    pub command: GroupCommand,
    /// The group (None: `del-groups` of every group, `group_id=all`).
    pub id: Option<GroupId>,
    /// The group as given (add, modify; for insert, the buckets to insert).
    pub desc: GroupDesc,
    /// `command_bucket_id` (insert-buckets, remove-buckets).
    pub command_bucket: Option<CommandBucket>,
}

/// The groups of one bridge.
#[derive(Clone, Debug, Default)]
pub struct GroupTable {
    groups: BTreeMap<GroupId, Arc<Group>>,
}

impl GroupTable {
    /// Group `id`, if it exists.
    pub fn get(&self, id: GroupId) -> Option<&Arc<Group>> {
        self.groups.get(&id)
    }

    /// Every group, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when there is no group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Apply one group-mod (OVS `ofproto.c` add_group / modify_group /
    /// delete_group semantics). Returns the ids of the groups deleted (the
    /// caller deletes the flows that output to them, as OpenFlow 1.3 §6.5
    /// and OVS do). Nothing changes on error.
    pub fn apply(&mut self, gm: &GroupMod) -> Result<Vec<GroupId>, GroupModError> {
        match gm.command {
            GroupCommand::Add => {
                let id = gm.id.ok_or(GroupModError::NeedGroupId)?;
                if self.groups.contains_key(&id) {
                    return Err(GroupModError::GroupExists(id));
                }
                self.check_chain(&gm.desc)?;
                self.groups
                    .insert(id, Arc::new(Group::new(gm.desc.clone())));
                Ok(Vec::new())
            }
            GroupCommand::Modify => {
                let id = gm.id.ok_or(GroupModError::NeedGroupId)?;
                let old = self
                    .groups
                    .get(&id)
                    .ok_or(GroupModError::UnknownGroup(id))?;
                self.check_chain(&gm.desc)?;
                let mut desc = gm.desc.clone();
                carry_bucket_stats(&old.desc.buckets, &mut desc.buckets);
                let g = Group {
                    desc,
                    stats: Arc::clone(&old.stats),
                    created: old.created,
                };
                self.groups.insert(id, Arc::new(g));
                Ok(Vec::new())
            }
            GroupCommand::InsertBuckets => {
                let id = gm.id.ok_or(GroupModError::NeedGroupId)?;
                let old = self
                    .groups
                    .get(&id)
                    .ok_or(GroupModError::UnknownGroup(id))?;
                let mut desc = old.desc.clone();
                let mut new = gm.desc.buckets.clone();
                // New buckets without an explicit id continue after the
                // highest id in use.
                let mut next = desc.buckets.iter().map(|b| b.id + 1).max().unwrap_or(0);
                for (b, explicit) in new.iter_mut().zip(gm_explicit_ids(gm)) {
                    if !explicit {
                        b.id = next;
                        next += 1;
                    }
                }
                for b in &new {
                    if desc.buckets.iter().any(|o| o.id == b.id) {
                        return Err(GroupModError::BucketExists(b.id));
                    }
                }
                let pos = match gm.command_bucket.unwrap_or(CommandBucket::Last) {
                    CommandBucket::First => 0,
                    CommandBucket::Last => desc.buckets.len(),
                    CommandBucket::All => return Err(GroupModError::BadCommandBucket),
                    CommandBucket::Id(after) => {
                        desc.buckets
                            .iter()
                            .position(|b| b.id == after)
                            .ok_or(GroupModError::UnknownBucket(after))?
                            + 1
                    }
                };
                desc.buckets.splice(pos..pos, new);
                if desc.group_type == GroupType::Indirect && desc.buckets.len() > 1 {
                    return Err(GroupModError::IndirectBuckets);
                }
                self.check_chain(&desc)?;
                let g = Group {
                    desc,
                    stats: Arc::clone(&old.stats),
                    created: old.created,
                };
                self.groups.insert(id, Arc::new(g));
                Ok(Vec::new())
            }
            GroupCommand::RemoveBuckets => {
                let id = gm.id.ok_or(GroupModError::NeedGroupId)?;
                let old = self
                    .groups
                    .get(&id)
                    .ok_or(GroupModError::UnknownGroup(id))?;
                let mut desc = old.desc.clone();
                match gm.command_bucket.unwrap_or(CommandBucket::All) {
                    CommandBucket::All => desc.buckets.clear(),
                    CommandBucket::First => {
                        if !desc.buckets.is_empty() {
                            desc.buckets.remove(0);
                        }
                    }
                    CommandBucket::Last => {
                        desc.buckets.pop();
                    }
                    CommandBucket::Id(b) => {
                        let i = desc
                            .buckets
                            .iter()
                            .position(|x| x.id == b)
                            .ok_or(GroupModError::UnknownBucket(b))?;
                        desc.buckets.remove(i);
                    }
                }
                let g = Group {
                    desc,
                    stats: Arc::clone(&old.stats),
                    created: old.created,
                };
                self.groups.insert(id, Arc::new(g));
                Ok(Vec::new())
            }
            GroupCommand::Delete => match gm.id {
                None => {
                    let ids: Vec<GroupId> = self.groups.keys().copied().collect();
                    self.groups.clear();
                    Ok(ids)
                }
                // Deleting a group that does not exist is not an error
                // (OVS delete_group: nothing to do).
                Some(id) => Ok(self
                    .groups
                    .remove(&id)
                    .map(|_| vec![id])
                    .unwrap_or_default()),
            },
        }
    }

    /// Bucket actions may name only existing groups (OFPGMFC_CHAINING /
    /// BAD_OUT_GROUP), and never the group itself directly.
    fn check_chain(&self, desc: &GroupDesc) -> Result<(), GroupModError> {
        for b in &desc.buckets {
            for a in &b.actions {
                if let Action::Group(g) = a {
                    if *g == desc.id {
                        return Err(GroupModError::Loop(*g));
                    }
                    if !self.groups.contains_key(g) {
                        return Err(GroupModError::UnknownOutGroup(*g));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which buckets of an insert-buckets had their id given in the text
/// (`bucket_id:` present); the parser records an implicit id as `u32::MAX`.
fn gm_explicit_ids(gm: &GroupMod) -> impl Iterator<Item = bool> + '_ {
    gm.desc.buckets.iter().map(|b| b.id != u32::MAX)
}

/// Keep the counters of buckets whose id survives a modify.
fn carry_bucket_stats(old: &[Bucket], new: &mut [Bucket]) {
    for b in new {
        if let Some(o) = old.iter().find(|o| o.id == b.id) {
            b.stats = Arc::clone(&o.stats);
        }
    }
}

#[cfg(test)]
mod tests;
