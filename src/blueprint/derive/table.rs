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
        let restrictive: Vec<String> = info
            .policies
            .iter()
            .filter(|p| !p.permissive)
            .map(|p| p.name.to_string())
            .collect();
        if !restrictive.is_empty() {
            acc.refuse(format!(
                "{table} has FORCE ROW LEVEL SECURITY and the restrictive policies {}, which bind the tool's role too (no permissive policy can lift them), so the tool would move only the rows they let it see; run the migration as a role with BYPASSRLS",
                restrictive.join(", ")
            ));
        } else if plan.spec.method != Method::Attach && !sees_every_row_a_home(plan) {
            acc.refuse(format!(
                "{table} has FORCE ROW LEVEL SECURITY, which binds the tool's role too: `plan` reads the keys only of the rows the policies let it see, so a row it cannot see might find no partition; set partition.default_partition: true (such rows then land there, and `maintain` moves them into partitions), or run the migration as a role with BYPASSRLS"
            ));
        } else if let Some(role) = tool_role(plan, info, access) {
            acc.note(
                codes::ROW_SECURITY_TOOL_POLICY,
                format!(
                    "{table} has FORCE ROW LEVEL SECURITY and the tool's role {} cannot bypass it: for the migration a permissive policy {} for that role lets only the tool's own sessions (which set repartition.tool) see and write every row, on the original and the partitioned table; the role owns the table and could lift FORCE itself, so it gains nothing, and every other role's policies are unchanged. The partitions are planned from the rows the policies let `plan` see; a row with another key lands in the default partition. The policy goes {}",
                    crate::sql::quote_ident(&role),
                    crate::blueprint::names::tool_policy(table),
                    match plan.spec.method {
                        Method::Move => "in the swap's transaction, or with the abort",
                        _ => "with `migrate cleanup`, or with the abort",
                    }
                ),
            );
        }
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

/// The role the tool's policy is for: FORCE ROW LEVEL SECURITY binds the
/// tool's role, which has no BYPASSRLS, and no restrictive policy would
/// still filter it. The attach method reads no row of the table, so it
/// needs none.
pub fn tool_role(plan: &PlanFile, info: &TableInfo, access: Option<&crate::access::AccessFacts>) -> Option<String> {
    let a = access?;
    let wanted = info.row_security
        && info.force_row_security
        && !a.bypass_rls
        && plan.spec.method != Method::Attach
        && sees_every_row_a_home(plan)
        && info.policies.iter().all(|p| p.permissive);
    wanted.then(|| a.me.clone())
}

/// Whether every row has a partition whatever its key: a default
/// partition, or hash partitioning.
fn sees_every_row_a_home(plan: &PlanFile) -> bool {
    plan.spec.partition.default_partition || plan.spec.partition.by == crate::plan_file::Strategy::Hash
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
