//! Flows: the key every packet is reduced to, matches over it, actions, and
//! the ovs-ofctl flow syntax (parse and format).

pub mod action;
pub mod field;
pub mod key;
pub mod matches;

pub use action::{ofport, Action, FieldRange, PortNo};
pub use field::{Field, Prereq};
pub use key::{FlowKey, FlowMask};
pub use matches::Match;

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
        }
    }
}
