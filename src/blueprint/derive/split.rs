//! The blueprint of a split, from the attach migration's blueprint and
//! what the catalog says now.

use super::layout::key_less;
use crate::blueprint::facts::SplitFacts;
use crate::blueprint::{names, Blueprint, PartitionDef, SplitDef, ViewDef};
use crate::error::Refusal;
use crate::partition::{self, bounds, LayoutInput};
use crate::plan_file::{Method, PlanFile};
use crate::sql::{Ident, QualifiedName};
use anyhow::Result;

pub fn split(plan: &PlanFile, attached: &Blueprint, facts: &SplitFacts) -> Result<Blueprint> {
    let table = &attached.table;
    let Some(a) = &attached.attach else {
        return Err(Refusal::new(format!(
            "the last migration of {table} was not an attach; there is no first partition to split"
        ))
        .into());
    };
    let zero = &attached.old;
    if facts.bound.is_none() {
        return Err(Refusal::new(format!(
            "{zero} is not a partition of {table} any more; there is nothing to split"
        ))
        .into());
    }
    let spec = &plan.spec.partition;
    let tz: chrono_tz::Tz = spec
        .time_zone
        .parse()
        .map_err(|_| plan.key_error("partition.time_zone", "is not a known time zone"))?;
    let key = attached.key.clone();
    if key.list {
        return Err(Refusal::new(format!(
            "{table} is partitioned by list; its first partition holds one value and has nothing to split"
        ))
        .into());
    }
    let Some(min) = facts.min else {
        return Err(Refusal::new(format!("{zero} is empty; detach and drop it instead of splitting it")).into());
    };
    let cutoff = bounds::bound_value(key.kind, tz, &a.cutoff)
        .ok_or_else(|| anyhow::anyhow!("the stored cutoff {} cannot be read", a.cutoff))?;
    let template = spec
        .naming
        .clone()
        .unwrap_or_else(|| partition::naming::default_template(spec.interval).to_string());
    let layout = partition::layout(&LayoutInput {
        kind: key.kind,
        interval: spec.interval,
        step: spec.step.map(|s| s.0),
        tz,
        start: None,
        min: Some(min),
        max: Some(cutoff),
        now: facts.server.now,
        premake: 0,
        template: &template,
        table: table.name.as_str(),
    })
    .map_err(|e| plan.key_error("partition", &e))?;
    let mut partitions = Vec::new();
    for p in layout {
        let from = bounds::first_bound_value(key.kind, tz, &p);
        let to = bounds::bound_value(key.kind, tz, &p.to);
        match (from, to) {
            (Some(f), _) if !key_less(f, cutoff) => break,
            (_, Some(t)) if key_less(cutoff, t) => partitions.push(PartitionDef {
                name: Ident::new(p.name),
                from: p.from,
                to: a.cutoff.clone(),
            }),
            _ => partitions.push(PartitionDef {
                name: Ident::new(p.name),
                from: p.from,
                to: p.to,
            }),
        }
    }
    let mut bp = attached.clone();
    bp.method = Method::Move;
    bp.shadow = names::shadow(table);
    bp.partitions = partitions;
    bp.default_partition = None;
    bp.incoming_fks = Vec::new();
    // The attach rebuilt them on the partitioned table already.
    bp.materialized = Vec::new();
    bp.settings.keep_old = false;
    // The first partition's rows are found by the partitioned key.
    bp.row_identity = attached
        .uniques
        .iter()
        .find(|u| u.primary)
        .map(|u| u.columns.clone())
        .unwrap_or(attached.row_identity.clone());
    if bp.row_security.enabled && facts.server.version_num < 150_000 {
        return Err(Refusal::new(format!(
            "{table} has row-level security, and the split's view over its partitions would apply the policies to the application only as a security_invoker view, which PostgreSQL 15 brings"
        ))
        .into());
    }
    // The first partition keeps the original's own policies: under FORCE
    // they would hide rows from a tool that cannot bypass them, and the
    // split reads that partition directly.
    if bp.row_security.enabled && bp.row_security.forced && !facts.bypass_rls {
        return Err(Refusal::new(format!(
            "{table} has FORCE ROW LEVEL SECURITY, and its first partition keeps the original's policies, which bind the tool's role too: the split would move only the rows they let it see; run the split as a role with BYPASSRLS"
        ))
        .into());
    }
    // The triggers as they are now; the split's view passes UPDATE and
    // DELETE on row by row, as the move method's does.
    if let Some(info) = &facts.info {
        bp.triggers = info.trigger_defs.clone();
        // Published through its root, the partitioned table's changes carry
        // the name it has while the split's view stands in for it, which no
        // subscriber knows, and every row of the first partition would
        // reach them as a DELETE and an INSERT.
        if let Some(p) = info.publications.first() {
            return Err(Refusal::new(format!(
                "{table} is published by {}: the split moves the first partition's rows with a DELETE and an INSERT each, and renames the partitioned table while it does, which its subscribers would receive; a split needs the table out of its publications",
                p.name
            ))
            .into());
        }
    }
    if let Some(why) = bp
        .triggers
        .iter()
        .find_map(|t| super::table::view_refuses(t, bp.row_security.enabled))
    {
        return Err(Refusal::new(format!("{why}; drop it for the split")).into());
    }
    if bp.row_identity.is_empty() {
        return Err(Refusal::new(format!(
            "{table} has no primary key or unique key on NOT NULL columns, which the split's routing view needs to route UPDATE and DELETE to the one row meant; add one first"
        ))
        .into());
    }
    bp.split = Some(SplitDef {
        cutoff: a.cutoff.clone(),
        check: names::cutoff_check(table),
    });
    bp.attach = None;
    // The partitioned table keeps its identity through a split; the view's
    // default draws from it under the same sequence name.
    bp.identities = Vec::new();
    // Dependent views as they are now.
    if let Some(info) = &facts.info {
        bp.dependent_views = info
            .dependents
            .iter()
            .filter(|d| d.kind == 'v')
            .map(|d| ViewDef {
                name: d.name.clone(),
                definition: d.definition.clone(),
                options: d.options.clone(),
            })
            .collect();
        bp.grants = info.grants.clone();
        bp.comment = info.comment.clone();
        // The view's default draws from the partitioned table's identity
        // now, whose privileges are its own.
        for c in &mut bp.columns {
            if let Some(i) = info.identities.iter().find(|i| i.column == c.name) {
                c.identity = Some(super::dependents::column_identity(info, i));
            }
        }
    }
    if !facts.taken.is_empty() {
        return Err(Refusal::new(format!(
            "names the split needs are taken already: {}",
            facts.taken.join(", ")
        ))
        .into());
    }
    Ok(bp)
}

/// The relations a split creates, whose names must be free.
pub fn created(bp: &Blueprint) -> Vec<QualifiedName> {
    let mut names: Vec<QualifiedName> = vec![bp.shadow.clone(), bp.retired_view.clone()];
    names.extend(bp.partitions.iter().map(|p| bp.table.sibling(p.name.clone())));
    names
}
