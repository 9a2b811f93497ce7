//! ferroswitch: a userspace, polling-mode virtual switch.
//!
//! Data path: port rx batch → [`packet`] extraction into a [`flow::FlowKey`] →
//! datapath cache (exact match, then megaflow) → actions → port tx batch. On a
//! miss, the slow path runs the [`pipeline`] tables and installs a megaflow.

pub mod conntrack;
pub mod control;
pub mod datapath;
pub mod flow;
pub mod group;
pub mod packet;
pub mod pipeline;
pub mod pmd;
pub mod port;
pub mod route;
pub mod tunnel;
