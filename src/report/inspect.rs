//! The text of `check` and of the partition table `status` shows for a
//! partitioned table.

use crate::inspect::{CheckReport, PartitionStat};
use std::fmt::Write;

pub fn check_text(r: &CheckReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {}",
        r.table,
        if r.healthy { "healthy" } else { "needs attention" }
    );
    for g in &r.gaps {
        let _ = writeln!(o, "  gap in range coverage: {g}");
    }
    if let Some(d) = &r.default_partition {
        let _ = writeln!(o, "  default partition {d}: {} rows", r.default_rows);
    }
    for m in &r.missing_indexes {
        let _ = writeln!(o, "  {m}");
    }
    if let Some(b) = &r.last_bound {
        let _ = writeln!(o, "  next boundary: the partitions end at {b}");
    }
    o
}

pub fn partitions_text(parts: &[PartitionStat]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<40} {:>12} {:>12} {:>10}  {:<20} {:<20}  bounds",
        "partition", "est. rows", "rows", "size", "last vacuum", "last analyze"
    );
    for p in parts {
        let t = |d: &Option<chrono::DateTime<chrono::Utc>>| {
            d.map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            o,
            "{:<40} {:>12} {:>12} {:>10}  {:<20} {:<20}  {}",
            p.name,
            p.estimated_rows,
            p.exact_rows.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            super::bytes(p.bytes),
            t(&p.last_vacuum),
            t(&p.last_analyze),
            p.bounds
        );
    }
    o
}

/// `check --output json`: the report, versioned.
pub fn check_json(r: &CheckReport) -> serde_json::Value {
    let mut doc = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = doc.as_object_mut() {
        o.insert("version".into(), super::JSON_VERSION.into());
    }
    doc
}
