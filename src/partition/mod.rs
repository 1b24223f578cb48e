//! Partition layout: which partitions a table gets, their bounds and names.
//! Pure computation, so that `plan` and tests need no database for it.

pub mod bounds;
pub mod existing;
pub mod interval;
pub mod naming;

pub use bounds::{layout, KeyKind, KeyValue, LayoutInput, Partition};
pub use interval::Interval;
