//! PLACEHOLDER reference implementation (linear scan) of the classifier API;
//! replaced by tuple-space search. The API is the contract.

use crate::flow::key::{FlowKey, FlowMask};
use crate::flow::matches::Match;

/// Priority-ordered rule set over `Match`.
#[derive(Debug, Clone)]
pub struct Classifier<T> {
    rules: Vec<(Match, u16, u64, T)>,
    seq: u64,
}

impl<T> Default for Classifier<T> {
    fn default() -> Self {
        Classifier {
            rules: Vec::new(),
            seq: 0,
        }
    }
}

impl<T> Classifier<T> {
    /// Empty classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert; replaces (and returns) the value with the same match and priority.
    pub fn insert(&mut self, m: Match, priority: u16, v: T) -> Option<T> {
        if let Some(e) = self.rules.iter_mut().find(|e| e.0 == m && e.1 == priority) {
            return Some(core::mem::replace(&mut e.3, v));
        }
        self.seq += 1;
        self.rules.push((m, priority, self.seq, v));
        self.rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        None
    }

    /// Remove the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<T> {
        let i = self
            .rules
            .iter()
            .position(|e| e.0 == *m && e.1 == priority)?;
        Some(self.rules.remove(i).3)
    }

    /// The rule with exactly this match and priority.
    pub fn get(&self, m: &Match, priority: u16) -> Option<&T> {
        self.rules
            .iter()
            .find(|e| e.0 == *m && e.1 == priority)
            .map(|e| &e.3)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// All rules (any order).
    pub fn iter(&self) -> impl Iterator<Item = (&Match, u16, &T)> {
        self.rules.iter().map(|e| (&e.0, e.1, &e.3))
    }

    /// Highest-priority rule matching `key`. ORs into `wc` every mask bit the
    /// decision depended on, so that any key equal to `key` under `wc` gets
    /// the same answer (the megaflow contract).
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowMask) -> Option<(&Match, u16, &T)> {
        for e in &self.rules {
            wc.or_assign(e.0.mask());
            if e.0.matches(key) {
                return Some((&e.0, e.1, &e.3));
            }
        }
        None
    }
}
