//! The fast path: per-thread caches (exact match, megaflow), action
//! execution, and batch processing.

pub mod actions;

pub use actions::DpAction;
