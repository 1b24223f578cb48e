//! The table itself: what kind of relation it is, and what it carries
//! that the partitioned table cannot yet take over.

use crate::catalog::TableInfo;
use crate::error::Refusal;
use crate::plan_file::{Method, PlanFile};
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
    Ok(refusals)
}

/// Row-level security goes with the table: its policies, ENABLE and FORCE
/// are carried to the partitioned table. The move method's view applies
/// them to the application's role only as a `security_invoker` view
/// (PostgreSQL 15 on); and the tool's own reads and writes must see every
/// row, which FORCE denies a role that does not bypass row-level security.
pub fn row_security(
    plan: &PlanFile,
    info: &TableInfo,
    version_num: i32,
    access: Option<&crate::access::AccessFacts>,
    acc: &mut super::Acc,
) {
    let table = &plan.table;
    if !info.row_security {
        if !info.policies.is_empty() {
            acc.note(format!(
                "{table} has policies but row-level security is not enabled; they are carried over, still inactive"
            ));
        }
        return;
    }
    if plan.spec.method == Method::Move && version_num < 150_000 {
        acc.refuse(format!(
            "{table} has row-level security, and the move method's view would apply its policies to the application only as a security_invoker view, which PostgreSQL 15 brings; use method sync or attach, which carry the policies on any version"
        ));
    }
    let bypass = access.is_none_or(|a| a.bypass_rls);
    if info.force_row_security && !bypass {
        acc.refuse(format!(
            "{table} has FORCE ROW LEVEL SECURITY, so its policies bind its owner too and the tool's role would copy only the rows they let it see; run the migration as a role with BYPASSRLS"
        ));
    }
    let policies: Vec<&str> = info.policies.iter().map(|p| p.name.as_str()).collect();
    acc.note(format!(
        "row-level security{} and its {} policies ({}) are carried to the partitioned table{}",
        if info.force_row_security { " (forced)" } else { "" },
        policies.len(),
        policies.join(", "),
        match plan.spec.method {
            Method::Move => "; until the swap the view over both tables is a security_invoker view, so the policies apply to the application's role through it",
            Method::Sync => "; the mirrors write as the table's owner, and the retired original keeps its policies",
            Method::Attach => "; the original keeps its own policies as the first partition",
        }
    ));
}

/// Identity columns, triggers and rules, which the tool does not carry
/// over yet.
pub fn carried(table: &QualifiedName, info: &TableInfo) -> Vec<String> {
    let mut refusals = Vec::new();
    for c in &info.columns {
        if c.identity {
            refusals.push(format!(
                "column {} is an identity column, which cannot yet be shared between the original and the partitioned table (use a sequence default instead)",
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
