//! The fast path: per-thread caches (exact match, megaflow), action
//! execution, and batch processing.

pub mod actions;

use std::sync::Arc;

pub use actions::DpAction;

use crate::flow::PortNo;
use crate::pipeline::Pipeline;

/// What the control thread publishes to the polling threads: an immutable
/// pipeline and port list with a generation number. A polling thread that sees
/// a new generation between batches drops its cached megaflows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every published change.
    pub generation: u64,
    /// The flow tables.
    pub pipeline: Arc<Pipeline>,
    /// OpenFlow numbers of the bridge's ports, in a stable order; a port's index
    /// here is its dense index for per-port arrays.
    pub ports: Vec<PortNo>,
}
