//! A polling thread's side of L2 learning (the `NORMAL` action): the MAC
//! table view its translations read, the megaflows NORMAL produced, and the
//! learn and refresh events it queues for the control thread.
//!
//! Data enters as a published [`FdbView`] (checked once per batch with one
//! atomic load of the view's generation) and as the [`L2Use`]s of each
//! NORMAL translation ([`DpL2::installed`]); it leaves as [`LearnEvent`]s in
//! the bridge's lock-free queue ([`L2Shared`]) and as invalidated megaflows.
//! This is OVS's tag-based revalidation reduced to what NORMAL needs: a
//! NORMAL megaflow's output depends only on where its destination
//! (VLAN, MAC) is learned, so when a new view arrives, exactly the megaflows
//! whose destination appears in the view's change log are removed, and the
//! next packet re-translates (a new learn stops the flooding, a move or an
//! age-out stops unicast to the old port). If the log does not reach back
//! (a flush, or this thread was far behind) every NORMAL megaflow goes.
//!
//! Never: work per packet (only per batch, per miss and per 250 ms round),
//! block on the queue, or keep a megaflow whose destination binding changed
//! after the next batch starts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::megaflow::{MegaflowCache, MegaflowHandle};
use crate::flow::PortNo;
use crate::pipeline::l2::{is_multicast, FdbKey, FdbView, L2Shared, L2Use, LearnEvent};
use crate::pipeline::Pipeline;

/// Counters of one polling thread's learning work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct L2DpStats {
    /// Learn events queued from translations (new or moved sources).
    pub learn_queued: u64,
    /// Refresh events queued for sources of active NORMAL megaflows.
    pub refresh_queued: u64,
    /// Events the full queue refused.
    pub queue_full: u64,
    /// NORMAL megaflows removed because their destination's binding changed.
    pub invalidated: u64,
    /// New views adopted.
    pub views: u64,
}

#[derive(Clone, Copy, Debug)]
struct Tagged {
    h: MegaflowHandle,
    use_: L2Use,
    /// The megaflow's lifetime packets at the last refresh round.
    seen: u64,
}

/// One polling thread's learning state.
#[derive(Debug, Default)]
pub struct DpL2 {
    shared: Option<Arc<L2Shared>>,
    view: Arc<FdbView>,
    generation: u64,
    flows: Vec<Tagged>,
    changed: HashSet<FdbKey>,
    refreshed: HashSet<(FdbKey, PortNo)>,
    stats: L2DpStats,
}

impl DpL2 {
    /// Connect to a bridge's learning (its view and queue).
    pub fn attach(&mut self, shared: Arc<L2Shared>) {
        self.view = shared.view();
        self.generation = self.view.generation;
        self.shared = Some(shared);
        self.flows.clear();
    }

    /// True when attached to a bridge.
    pub fn attached(&self) -> bool {
        self.shared.is_some()
    }

    /// The view translations read.
    pub fn view(&self) -> &FdbView {
        &self.view
    }

    /// Counters.
    pub fn stats(&self) -> L2DpStats {
        self.stats
    }

    /// NORMAL megaflows tracked (live or not yet pruned).
    pub fn tracked(&self) -> usize {
        self.flows.len()
    }

    /// Forget every tracked megaflow (the cache was flushed).
    pub fn clear(&mut self) {
        self.flows.clear();
    }

    /// Per batch: adopt a newer view if one was published, removing the
    /// NORMAL megaflows whose destination changed. One atomic load when
    /// nothing changed.
    #[inline]
    pub fn check(&mut self, mf: &mut MegaflowCache, pipeline: &Pipeline, epoch: Instant) {
        let Some(shared) = &self.shared else {
            return;
        };
        if shared.generation() == self.generation {
            return;
        }
        self.adopt(mf, pipeline, epoch);
    }

    #[cold]
    fn adopt(&mut self, mf: &mut MegaflowCache, pipeline: &Pipeline, epoch: Instant) {
        let Some(shared) = &self.shared else {
            return;
        };
        let view = shared.view();
        let targeted = view.changes_since(self.generation, &mut self.changed);
        let changed = &self.changed;
        let mut invalidated = 0u64;
        self.flows.retain(|t| {
            if targeted && !changed.contains(&t.use_.dst) {
                return true;
            }
            invalidated += u64::from(mf.invalidate(t.h, pipeline, epoch));
            false
        });
        self.stats.invalidated += invalidated;
        self.stats.views += 1;
        self.generation = view.generation;
        self.view = view;
    }

    /// After the slow path installed megaflow `h` from a translation whose
    /// NORMAL executions read `uses`: queue the sources to learn, and tag the
    /// megaflow with its destinations.
    pub fn installed(&mut self, h: MegaflowHandle, uses: &[L2Use]) {
        let Some(shared) = &self.shared else {
            return;
        };
        for u in uses {
            if u.learn {
                let ev = LearnEvent {
                    key: u.src,
                    port: u.in_port,
                    refresh: false,
                };
                if shared.push(ev) {
                    self.stats.learn_queued += 1;
                } else {
                    self.stats.queue_full += 1;
                }
            }
            self.flows.push(Tagged {
                h,
                use_: *u,
                seen: 0,
            });
        }
    }

    /// Every stats round (250 ms): prune megaflows that are gone, and queue
    /// one refresh per (source, port) of the NORMAL megaflows hit since the
    /// last round, so the control thread keeps those MACs from aging out
    /// (OVS's revalidators refresh learned MACs the same way).
    pub fn refresh(&mut self, mf: &MegaflowCache) {
        let Some(shared) = &self.shared else {
            return;
        };
        self.refreshed.clear();
        let mut queued = 0u64;
        let mut full = 0u64;
        let refreshed = &mut self.refreshed;
        self.flows.retain_mut(|t| {
            let Some(f) = mf.get(t.h) else {
                return false;
            };
            if f.total_packets != t.seen {
                t.seen = f.total_packets;
                let src = t.use_.src;
                if !is_multicast(&src.mac) && refreshed.insert((src, t.use_.in_port)) {
                    let ev = LearnEvent {
                        key: src,
                        port: t.use_.in_port,
                        refresh: true,
                    };
                    if shared.push(ev) {
                        queued += 1;
                    } else {
                        full += 1;
                    }
                }
            }
            true
        });
        self.stats.refresh_queued += queued;
        self.stats.queue_full += full;
    }
}
