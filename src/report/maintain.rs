//! The text and JSON of `maintain`.

use crate::maintain::{ExpiryStep, MaintainReport, Skipped, Span, Strategy};
use crate::sql::Ident;
use serde_json::{json, Value};
use std::fmt::Write;

fn span_text(column: &Ident, span: &Span) -> String {
    match span {
        Span::Range { from, to } => format!("[{from}, {to})"),
        Span::Value(v) => format!("{column} = {v}"),
    }
}

/// What the run did, a line each, for stdout; the warnings, which go to
/// stderr, are `r.warnings`.
pub fn maintain_text(r: &MaintainReport) -> String {
    let mut o = String::new();
    let col = &r.column;
    if let Some(n) = r.hash_partitions {
        let _ = writeln!(
            o,
            "{}: {n} hash partitions, made up front; nothing to premake or expire",
            r.table
        );
    }
    for d in &r.drained {
        let _ = writeln!(
            o,
            "moved {} rows of {} out of {} into the new partition {}",
            d.rows,
            span_text(col, &d.span),
            d.default,
            d.partition
        );
    }
    for p in &r.premade {
        let _ = writeln!(o, "created {} for {}", p.partition, span_text(col, &p.span));
    }
    for e in &r.expired {
        let name = &e.partition;
        let _ = match &e.step {
            ExpiryStep::Detached => writeln!(o, "detached {name}"),
            ExpiryStep::ArchivedToSchema { schema } => writeln!(o, "archived {name} into the schema {schema}"),
            ExpiryStep::ArchivedToFile { path, rows } => {
                writeln!(o, "archived {name} ({rows} rows) to {}", path.display())
            }
            ExpiryStep::Dropped => writeln!(o, "dropped {name}"),
        };
    }
    for s in &r.skipped {
        let _ = match s {
            Skipped::Covered { by, span } => {
                writeln!(o, "kept {by}: it covers part of {} already", span_text(col, span))
            }
            Skipped::Kept { partition, why } => writeln!(o, "kept {partition} attached though it has expired: {why}"),
            Skipped::Failed { partition, span, error } => writeln!(
                o,
                "could not create {partition}: {error} (the default partition may hold rows of {}; they must be moved out first)",
                match span {
                    Span::Range { .. } => "its range".to_string(),
                    Span::Value(v) => v.to_string(),
                }
            ),
        };
    }
    if let Some(ms) = r.analyzed_ms {
        let _ = writeln!(
            o,
            "analyzed {} as a whole in {ms} ms (before: {})",
            r.table,
            r.analyzed_before
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "never".into())
        );
    }
    if let (Some(reach), false) = (&r.reach, r.running_out) {
        let _ = match r.strategy {
            Strategy::List => writeln!(o, "{}: partitions reach up to {col} = {reach}", r.table),
            _ => writeln!(o, "{}: partitions reach up to {reach}", r.table),
        };
    }
    o
}

/// A partition's key values as JSON fields: `from` and `to`, or `value`.
fn with_span(mut doc: Value, span: &Span) -> Value {
    if let Some(o) = doc.as_object_mut() {
        match span {
            Span::Range { from, to } => {
                o.insert("from".into(), from.as_str().into());
                o.insert("to".into(), to.as_str().into());
            }
            Span::Value(v) => {
                o.insert("value".into(), (*v).into());
            }
        }
    }
    doc
}

fn expired_json(partition: String, step: &ExpiryStep) -> Value {
    match step {
        ExpiryStep::Detached => json!({"partition": partition, "step": "detached"}),
        ExpiryStep::ArchivedToSchema { schema } => {
            json!({"partition": partition, "step": "archived", "schema": schema})
        }
        ExpiryStep::ArchivedToFile { path, rows } => json!({
            "partition": partition,
            "step": "archived",
            "file": path.display().to_string(),
            "rows": rows,
        }),
        ExpiryStep::Dropped => json!({"partition": partition, "step": "dropped"}),
    }
}

fn skipped_json(s: &Skipped) -> Value {
    match s {
        Skipped::Covered { by, span } => with_span(json!({"reason": "covered", "covered_by": by.to_string()}), span),
        Skipped::Kept { partition, why } => {
            json!({"reason": "kept", "partition": partition.to_string(), "error": why})
        }
        Skipped::Failed { partition, span, error } => with_span(
            json!({"reason": "failed", "partition": partition.to_string(), "error": error}),
            span,
        ),
    }
}

/// `maintain --output json`: the report, versioned.
pub fn maintain_json(r: &MaintainReport) -> Value {
    json!({
        "version": super::JSON_VERSION,
        "table": r.table.to_string(),
        "strategy": r.strategy.as_str(),
        "column": r.column.as_str(),
        "not_run": r.not_run,
        "hash_partitions": r.hash_partitions,
        "drained": r.drained.iter().map(|d| with_span(json!({
            "partition": d.partition.to_string(),
            "default": d.default.to_string(),
            "rows": d.rows,
        }), &d.span)).collect::<Vec<_>>(),
        "premade": r.premade.iter().map(|p| with_span(json!({"partition": p.partition.to_string()}), &p.span)).collect::<Vec<_>>(),
        "expired": r.expired.iter().map(|e| expired_json(e.partition.to_string(), &e.step)).collect::<Vec<_>>(),
        "skipped": r.skipped.iter().map(skipped_json).collect::<Vec<_>>(),
        "analyzed_ms": r.analyzed_ms,
        "analyzed_before": r.analyzed_before,
        "reach": r.reach,
        "running_out": r.running_out,
        "warnings": r.warnings,
        "exit_code": r.exit_code,
    })
}
