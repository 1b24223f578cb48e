//! Planning without I/O: the plan and the catalog's facts become the
//! blueprint, or the refusals that stop the run. Split by topic: the
//! table itself, the key, the constraints, the dependents, the layout;
//! the access check's derivation lives with its gathering in `access`.

pub mod constraints;
pub mod dependents;
pub mod key;
pub mod layout;
pub mod split;
pub mod table;

use super::facts::Facts;
use super::{names, Blueprint, Column, PartitionDef, Resolved, Settings, FORMAT};
use crate::error::Refusal;
use crate::findings::{codes, Finding};
use crate::plan_file::{Method, PlanFile};
use crate::sql::{Ident, QualifiedName};
use anyhow::Result;

/// The oldest server the tool runs on: it moves rows by TID ranges.
pub const MIN_VERSION: i32 = 140000;

/// Refusals and findings, in the order they are found.
#[derive(Default)]
pub struct Acc {
    pub refusals: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Acc {
    pub fn refuse(&mut self, message: String) {
        self.refusals.push(message);
    }

    pub fn warn(&mut self, code: &'static str, message: String) {
        self.findings.push(Finding::warning(code, message));
    }

    pub fn note(&mut self, code: &'static str, message: String) {
        self.findings.push(Finding::note(code, message));
    }
}

/// What derivation makes of the plan and the facts before its refusals
/// stop the run, and what it needs the catalog to say besides.
pub struct Draft {
    pub blueprint: Blueprint,
    pub findings: Vec<Finding>,
    pub refusals: Vec<String>,
    /// The relations and functions the migration creates: none may exist.
    pub relations: Vec<QualifiedName>,
    pub functions: Vec<QualifiedName>,
    /// The first partition's lower bound, when rows may lie below it.
    pub below: Option<String>,
}

/// Resolves the plan: the blueprint, or one refusal naming every reason.
pub fn derive(plan: &PlanFile, facts: &Facts) -> Result<Resolved> {
    let d = draft(plan, facts)?;
    if !d.refusals.is_empty() {
        return Err(Refusal::new(format!("cannot migrate {}: {}", plan.table, d.refusals.join("; "))).into());
    }
    let info = facts.info.clone().expect("a draft has the table's facts");
    let split = split_preview(plan, facts, &d.blueprint);
    Ok(Resolved {
        blueprint: d.blueprint,
        findings: d.findings,
        info,
        server: facts.server.clone(),
        split,
    })
}

/// The split an attach by range allows later, derived from the table as
/// it is now: its first partition will hold the rows the table holds.
fn split_preview(plan: &PlanFile, facts: &Facts, attach: &Blueprint) -> Option<Blueprint> {
    if attach.method != Method::Attach || attach.key.list {
        return None;
    }
    let f = super::facts::SplitFacts {
        server: facts.server.clone(),
        bound: Some(String::new()),
        min: facts.min,
        info: facts.info.clone(),
        taken: Vec::new(),
        bypass_rls: facts.access.as_ref().is_none_or(|a| a.bypass_rls),
    };
    split::split(plan, attach, &f).ok()
}

/// A table Citus manages lives as shards on other servers, or is kept in
/// step by Citus: a view, triggers or renames on the coordinator's table
/// would not reach them. docs/scale-out.md says what support would take.
fn citus_refusal(table: &crate::sql::QualifiedName, method: &str, model: &str) -> String {
    let kind = match (method, model) {
        ("n", "t") => "a Citus reference table (a copy on every node)",
        ("n", _) => "a Citus local table (in Citus's metadata on the coordinator)",
        _ => "a Citus distributed table (its rows live in shards on the worker nodes)",
    };
    format!(
        "{table} is {kind}; this tool migrates tables of one PostgreSQL server and does not support Citus tables: the view, triggers and renames it uses would not reach the shards (docs/scale-out.md)"
    )
}

/// The blueprint with its refusals, in the order the checks run.
pub fn draft(plan: &PlanFile, facts: &Facts) -> Result<Draft> {
    let server = &facts.server;
    if server.version_num < MIN_VERSION {
        return Err(Refusal::new(format!(
            "the server runs PostgreSQL {}.{}, and this tool needs 14 or newer (it moves rows by TID ranges)",
            server.version_num / 10000,
            server.version_num % 10000 / 100
        ))
        .into());
    }
    let table = &plan.table;
    let Some(info) = &facts.info else {
        return Err(plan
            .key_error("table", &format!("names {table}, which does not exist"))
            .into());
    };
    if let Some((method, model)) = &facts.citus {
        return Err(Refusal::new(citus_refusal(table, method, model)).into());
    }
    let mut acc = Acc {
        refusals: table::kind(table, info)?,
        ..Acc::default()
    };
    if let Some(a) = &facts.access {
        let a = crate::access::check(table, a);
        acc.refusals.extend(a.refusals);
        acc.findings.extend(a.findings);
    }
    let (key, refusals) = key::key(plan, info)?;
    acc.refusals.extend(refusals);
    if key.made_not_null {
        acc.note(codes::KEY_MADE_NOT_NULL, format!(
            "the partition key {k} may be NULL, and no partition would hold a NULL key: the run first adds CHECK ({k} IS NOT NULL) NOT VALID under a brief lock (from then on the application's writes of a NULL {k} fail, as they will on the partitioned table), validates it while the application reads and writes, then makes {k} NOT NULL, which the valid check spares a scan; rows with a NULL {k} stop the run there; {k} stays NOT NULL after an abort",
            k = key.column
        ));
    }
    acc.refusals.extend(table::carried(table, info));
    table::row_security(plan, info, facts.server.version_num, facts.access.as_ref(), &mut acc);
    table::triggers(plan, info, &mut acc);
    let c = constraints::derive(plan, info, &key, facts.server.version_num, &mut acc);
    let dependent_views = dependents::views(table, info, &mut acc);
    let publications = dependents::publications(plan, info, &mut acc);
    let sequences = dependents::sequences(info, &mut acc);
    let identities = dependents::identities(plan.spec.method, server.version_num, info, &mut acc);
    let l = layout::derive(plan, facts, info, &key, &c.uniques, &mut acc)?;
    if !facts.taken.is_empty() {
        acc.refuse(format!(
            "names the migration needs are taken already: {} (left over from an earlier attempt? `migrate status` tells)",
            facts.taken.join(", ")
        ));
    }
    let settings = settings(plan, facts, &mut acc);
    let blueprint = Blueprint {
        format: FORMAT,
        method: plan.spec.method,
        table: table.clone(),
        shadow: names::shadow(table),
        old: l.old,
        retired_view: names::retired_view(table),
        owner: info.owner.clone(),
        columns: columns(info),
        key,
        row_identity: c.row_identity,
        partitions: l
            .partitions
            .into_iter()
            .map(|p| PartitionDef {
                name: Ident::new(p.name),
                from: p.from,
                to: p.to,
            })
            .collect(),
        default_partition: l.default_partition,
        uniques: c.uniques,
        indexes: c.indexes,
        foreign_keys: c.foreign_keys,
        incoming_fks: c.incoming_fks,
        dependent_views,
        publications,
        grants: info.grants.clone(),
        comment: info.comment.clone(),
        storage: info.reloptions.clone(),
        tablespace: info.tablespace.clone(),
        sequences,
        identities,
        routing: names::routing(table),
        mirror: names::mirror(table),
        attach: l.attach,
        split: None,
        row_security: crate::blueprint::RowSecurity {
            enabled: info.row_security,
            forced: info.force_row_security,
            policies: info.policies.clone(),
            tool_role: table::tool_role(plan, info, facts.access.as_ref()),
        },
        triggers: info.trigger_defs.clone(),
        materialized: info
            .materialized
            .iter()
            .filter(|m| m.readers.is_empty())
            .cloned()
            .collect(),
        settings,
    };
    let (relations, functions) = created(&blueprint);
    Ok(Draft {
        blueprint,
        findings: acc.findings,
        refusals: acc.refusals,
        relations,
        functions,
        below: l.below,
    })
}

fn columns(info: &crate::catalog::TableInfo) -> Vec<Column> {
    info.columns
        .iter()
        .map(|c| {
            let identity = info
                .identities
                .iter()
                .find(|i| i.column == c.name)
                .map(|i| dependents::column_identity(info, i));
            Column {
                name: c.name.clone(),
                writable: !c.generated,
                has_equality: c.has_equality,
                // An identity has no default expression; the routing view
                // needs one to draw from the same sequence.
                default: match &identity {
                    Some(i) => Some(format!(
                        "nextval({}::regclass)",
                        crate::sql::quote_literal(&i.sequence.to_string())
                    )),
                    None => c.default.clone(),
                },
                identity,
                base_type: c.base_type.clone(),
            }
        })
        .collect()
}

/// Every relation and function the migration creates, whose names must be
/// free.
fn created(bp: &Blueprint) -> (Vec<QualifiedName>, Vec<QualifiedName>) {
    let table = &bp.table;
    let mut relations: Vec<QualifiedName> = vec![bp.shadow.clone(), bp.old.clone(), bp.retired_view.clone()];
    relations.extend(bp.partitions.iter().map(|p| table.sibling(p.name.clone())));
    relations.extend(bp.default_partition.iter().map(|d| table.sibling(d.clone())));
    for u in &bp.uniques {
        relations.push(table.sibling(u.shadow_name.clone()));
        relations.push(table.sibling(u.old_rename.clone()));
    }
    for i in &bp.indexes {
        relations.push(table.sibling(i.shadow_name.clone()));
        relations.push(table.sibling(i.old_rename.clone()));
    }
    relations.extend(bp.identities.iter().map(|i| i.stepped_aside.clone()));
    for m in &bp.materialized {
        relations.push(names::rebuilt(&m.name));
        relations.extend(
            m.indexes
                .iter()
                .map(|(i, _, _)| m.name.sibling(names::rebuilt_index(i))),
        );
    }
    for k in bp.attach.iter().flat_map(|a| &a.key_indexes) {
        relations.push(table.sibling(k.name.clone()));
    }
    if bp.method == Method::Sync {
        // The partitions' deferred indexes (method::sync::indexes).
        let leaves = bp
            .partitions
            .iter()
            .map(|p| p.name.clone())
            .chain(bp.default_partition.clone());
        for leaf in leaves {
            for (k, i) in bp.indexes.iter().enumerate() {
                if matches!(i.body, super::IndexBody::Plain(_)) {
                    relations.push(table.sibling(names::partition_index(&leaf, k + 1)));
                }
            }
        }
    }
    let (r, m) = (&bp.routing, &bp.mirror);
    let functions = [
        &r.insert_function,
        &r.update_function,
        &r.delete_function,
        &m.function,
        &m.truncate_function,
        &m.back_function,
        &m.back_truncate_function,
    ]
    .into_iter()
    .cloned()
    .collect();
    (relations, functions)
}

/// What the method costs the application whatever the pace of its
/// batches, when a latency budget is tighter than that: the budget holds
/// the application's commits, and this cost is on its statements.
fn budget_note(spec: &crate::plan_file::PlanSpec) -> Option<String> {
    use crate::plan_file::LatencyBudget;
    let budget = spec.throttle.latency?;
    let tight = |f: f64| matches!(budget, LatencyBudget::Times(t) if t < f);
    match spec.method {
        Method::Move if tight(2.1) => Some(format!(
            "throttle.latency {} is held on the application's commits; the view in front of the table costs its statements on its own, with no row moving (1.1 to 2.1 times at the 99th percentile in the benchmark), which no pace of the batches lowers",
            String::from(budget)
        )),
        Method::Sync if tight(2.0) => Some(format!(
            "throttle.latency {} is held on the application's commits; the mirror triggers write each of its changes twice from the prepare to the swap, which no pace of the backfill lowers",
            String::from(budget)
        )),
        Method::Attach => Some(format!(
            "throttle.latency {}: attach moves no rows; the budget paces a later `migrate split`",
            String::from(budget)
        )),
        _ => None,
    }
}

/// The run's settings from the plan, its lock timeout capped below the
/// server's deadlock_timeout.
fn settings(plan: &PlanFile, facts: &Facts, acc: &mut Acc) -> Settings {
    let spec = &plan.spec;
    let deadlock_ms = facts.server.deadlock_timeout_ms.max(100);
    let lock_timeout_ms = crate::db::retry::lock_timeout_under_deadlock(spec.locks.lock_timeout.0, deadlock_ms);
    if lock_timeout_ms < spec.locks.lock_timeout.0 {
        acc.note(codes::LOCK_TIMEOUT_CAPPED, format!(
            "lock_timeout is capped at {lock_timeout_ms}ms, half the server's deadlock_timeout, so that the tool, not the application, steps back from any lock conflict"
        ));
    }
    if let Some(note) = budget_note(spec) {
        acc.note(codes::LATENCY_BUDGET_METHOD_COST, note);
    }
    Settings {
        batch_rows: spec.batch.rows(),
        pause_ms: spec.batch.pause.0,
        lock_timeout_ms,
        statement_timeout_ms: spec.locks.statement_timeout.0,
        retries: spec.locks.retries,
        keep_old: spec.swap.keep_old,
        block_size: facts.server.block_size,
        // A batch holds its row locks for its whole duration: kept well
        // under deadlock_timeout, the application never loses a lock cycle
        // to it (see db::retry).
        target_ms: spec.batch.target_ms().map(|d| d.min((deadlock_ms / 4) as u64)),
        throttle: spec.throttle.clone(),
        hooks: spec.hooks.clone(),
        postpone_swap: spec.swap.postpone,
        workers: spec.batch.workers(spec.method),
        gentle: spec.batch.mode == crate::plan_file::BatchMode::Gentle,
        accepted: plan.spec.accept.clone(),
    }
}

#[cfg(test)]
pub mod fixtures;
#[cfg(test)]
mod tests;
