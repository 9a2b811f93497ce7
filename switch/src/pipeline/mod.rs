//! OpenFlow tables: the classifier, flow tables, and slow-path translation.

pub mod classifier;
pub mod l2;
pub mod odp_format;
pub mod table;
pub mod trace;
pub mod xlate;

pub use table::{Pipeline, Rule, RuleStats};
pub use xlate::{translate, Xlation};
