//! The table itself: what kind of relation it is, and what it carries
//! that the partitioned table cannot yet take over.

use crate::catalog::TableInfo;
use crate::error::Refusal;
use crate::findings::codes;
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
            acc.note(
                codes::POLICIES_INACTIVE,
                format!(
                    "{table} has policies but row-level security is not enabled; they are carried over, still inactive"
                ),
            );
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
    acc.note(codes::ROW_SECURITY_CARRIED, format!(
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

/// Rules, which the tool does not carry over yet, and an identity column
/// whose sequence cannot be found. (Identity columns are carried:
/// `dependents::identities`; triggers: `triggers` below.)
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
    if !info.rules.is_empty() {
        refusals.push(format!("{table} has rules ({})", info.rules.join(", ")));
    }
    refusals
}

/// Why the routing view in front of the table (the move method's, the
/// split's) cannot fire `t` as the table did, if it cannot: a statement
/// trigger fires on the view, which cannot have transition tables; one on
/// INSERT alone stays on the tables, which the view's rule reaches in one
/// statement, except under row-level security, where the view inserts row
/// by row.
pub fn view_refuses(t: &crate::catalog::TriggerInfo, row_security: bool) -> Option<String> {
    let transition = t.old_table.is_some() || t.new_table.is_some();
    let name = &t.name;
    if t.row() || !transition {
        None
    } else if t.kind & (8 | 16) != 0 {
        Some(format!(
            "the statement trigger {name} has transition tables and fires on UPDATE or DELETE, which reach the table through the routing view row by row; PostgreSQL does not allow transition tables on the view's own trigger"
        ))
    } else if t.kind & 4 != 0 && row_security {
        Some(format!(
            "the statement trigger {name} has transition tables and fires on INSERT, which under row-level security reaches the table through the routing view row by row; PostgreSQL does not allow transition tables on the view's own trigger"
        ))
    } else {
        None
    }
}

/// The table's own triggers go with it (see `method::shared::triggers`);
/// what PostgreSQL or the move method's view cannot keep as it was is
/// refused, naming the method that keeps it.
pub fn triggers(plan: &PlanFile, info: &TableInfo, acc: &mut super::Acc) {
    let table = &plan.table;
    let by_view = plan.spec.method == Method::Move;
    for t in &info.trigger_defs {
        let name = &t.name;
        if t.row() && (t.old_table.is_some() || t.new_table.is_some()) {
            acc.refuse(format!(
                "the row trigger {name} has transition tables, which PostgreSQL does not allow on a partitioned table; make it a statement trigger"
            ));
        } else if by_view {
            if let Some(why) = view_refuses(t, info.row_security) {
                acc.refuse(format!("{why}; use method sync or attach"));
            }
        }
    }
    if info.trigger_defs.is_empty() {
        return;
    }
    let names: Vec<&str> = info.trigger_defs.iter().map(|t| t.name.as_str()).collect();
    acc.note(codes::TRIGGERS_CARRIED, format!(
        "the triggers of {table} ({}) go with it to the partitioned table and fire for the application's writes only, never for the tool's: {}",
        names.join(", "),
        match plan.spec.method {
            Method::Move => "until the swap they are on both tables, silent for the tool's sessions (a guard in their WHEN clause), statement triggers fire on the view once per statement, and all take back their own definitions at the swap",
            Method::Sync => "they stay on the table under the name; the side only the tool writes has them resting",
            Method::Attach => "the swap moves them to the partitioned table, which clones its row triggers to every partition",
        }
    ));
}
