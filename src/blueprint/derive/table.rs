//! The table itself: what kind of relation it is, and what it carries
//! that the partitioned table cannot yet take over.

use crate::catalog::TableInfo;
use crate::error::Refusal;
use crate::sql::QualifiedName;
use anyhow::Result;

/// Relations that are no ordinary table are refused outright; the other
/// refusals are collected.
pub fn kind(table: &QualifiedName, info: &TableInfo) -> Result<Vec<String>> {
    let refuse = |m: String| -> Result<Vec<String>> { Err(Refusal::new(m).into()) };
    match info.relkind.as_str() {
        "r" => {}
        "p" => return refuse(format!("{table} is already partitioned")),
        "v" => return refuse(format!("{table} is a view, not a table; if it is the view of an unfinished migration, use `migrate resume` or `migrate status`")),
        "m" => return refuse(format!("{table} is a materialized view, not a table")),
        "f" => return refuse(format!("{table} is a foreign table, which cannot be repartitioned here")),
        k => return refuse(format!("{table} is not an ordinary table (relkind {k})")),
    }
    if info.persistence == "t" {
        // Its rows are readable by its own session only: nothing further
        // can even be checked.
        return refuse(format!(
            "{table} is a temporary table, which only the session that created it can read"
        ));
    }
    let mut refusals = Vec::new();
    if info.persistence == "u" {
        refusals.push(format!(
            "{table} is unlogged, and its partitioned replacement could not be"
        ));
    }
    if info.is_partition || info.has_inheritance {
        refusals.push(format!("{table} takes part in inheritance or is a partition already"));
    }
    if info.row_security {
        refusals.push(format!(
            "{table} has row-level security enabled, which the routing view would bypass"
        ));
    }
    Ok(refusals)
}

/// Triggers and rules, which the tool does not carry over yet. (Identity
/// columns are carried: `dependents::identities`.)
pub fn carried(table: &QualifiedName, info: &TableInfo) -> Vec<String> {
    let mut refusals = Vec::new();
    for c in &info.columns {
        if c.identity && !info.identities.iter().any(|i| i.column == c.name) {
            refusals.push(format!(
                "column {} is an identity column whose sequence cannot be found in the catalog",
                c.name
            ));
        }
    }
    if !info.triggers.is_empty() {
        refusals.push(format!(
            "{table} has triggers ({}) that would stop firing for rows in the new table; drop them now and create them on the partitioned table after the swap",
            info.triggers.join(", ")
        ));
    }
    if !info.rules.is_empty() {
        refusals.push(format!("{table} has rules ({})", info.rules.join(", ")));
    }
    refusals
}
