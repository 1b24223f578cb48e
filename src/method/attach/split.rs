//! Split: breaks the attached first partition into proper partitions
//! online, with the move machinery. Prepare makes the partitions of the
//! first partition's range as tables of their own; in one short
//! transaction the first partition is detached, those tables are
//! attached, the partitioned table steps aside and the routing view takes
//! the name over it and the detached partition; rows then move in batches;
//! the swap gives the partitioned table its name back and the emptied
//! first partition is dropped.

use crate::blueprint::{Blueprint, SplitDef};
use crate::control::Phase;
use crate::exec::tx::Record;
use crate::exec::{Context, Session};
use crate::method::moving::{self, abort::back_step, abort::reroute_step, swap_relations};
use crate::method::shared::routing::{hand_name_to, stragglers, view_goes_live, view_locks};
use crate::method::shared::triggers::Side;
use crate::method::shared::{lock_statement, options_clause, overriding, session_limits, triggers, writable_columns};
use crate::method::{abort as aborts, How, Part, Step};
use crate::sql::{quote_literal, Statement};
use anyhow::Result;

fn def(bp: &Blueprint) -> &SplitDef {
    bp.split.as_ref().expect("a split blueprint has its split part")
}

fn locks(bp: &Blueprint, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    v.push(bp.table.to_string());
    v.extend(extra.iter().cloned());
    v
}

/// Prepare: the partitions of the first partition's range, made ahead as
/// tables of their own with the partitioned table's columns, constraints
/// and indexes, so that the route only attaches them: creating them under
/// its lock (each with its indexes and foreign keys) would hold it several
/// times as long.
pub fn prepare(bp: &Blueprint) -> Vec<Statement> {
    let owner = crate::sql::quote_ident(&bp.owner);
    let storage = options_clause(&bp.storage);
    let mut s = session_limits(bp);
    for p in &bp.partitions {
        let name = bp.table.sibling(p.name.clone());
        s.push(Statement::new(
            "a partition-to-be for part of the first partition's range, with the partitioned table's columns, constraints and indexes",
            format!(
                "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED \
                 INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS INCLUDING COMPRESSION INCLUDING INDEXES){storage}",
                table = bp.table
            ),
        ));
        s.push(Statement::new(
            "the table's owner owns its partitions",
            format!("ALTER TABLE {name} OWNER TO {owner}"),
        ));
    }
    s
}

/// Inside the route: each table made by prepare becomes a partition; its
/// indexes are adopted, its foreign keys cloned; it is empty, so the
/// bound's check reads nothing.
fn attach_partitions(bp: &Blueprint) -> Vec<Statement> {
    bp.partitions
        .iter()
        .map(|p| {
            Statement::new(
                "a partition for part of the first partition's range",
                format!(
                    "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})",
                    bp.table,
                    bp.table.sibling(p.name.clone()),
                    quote_literal(&p.from),
                    quote_literal(&p.to)
                ),
            )
        })
        .collect()
}

/// Abort before the route: the tables prepare made go.
fn drop_prepared(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.extend(bp.partitions.iter().map(|p| {
        Statement::new(
            "a table made for the split goes",
            format!("DROP TABLE IF EXISTS {}", bp.table.sibling(p.name.clone())),
        )
    }));
    s
}

/// Route: detach, new partitions, the view, in one short transaction.
pub fn route(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "take every lock at once: dependent views, then the partitioned table and its partitions",
        &locks(bp, &[]),
    ));
    // The table's triggers, cloned to every partition, give way to guarded
    // copies on both sides of the view: the moves are the tool's.
    s.extend(triggers::drop_all(
        bp,
        &bp.table,
        "the table's own trigger gives way to its guarded copies",
    ));
    s.push(Statement::new(
        "the first partition leaves the partitioned table (its rows stay visible through the view below)",
        format!("ALTER TABLE {} DETACH PARTITION {}", bp.table, bp.old),
    ));
    s.extend(attach_partitions(bp));
    s.push(Statement::new(
        "the partitioned table steps aside for the view",
        format!("ALTER TABLE {} RENAME TO {}", bp.table, bp.shadow.name),
    ));
    s.push(Statement::new(
        "no autovacuum on the first partition while it empties",
        format!("ALTER TABLE {} SET (autovacuum_enabled = false)", bp.old),
    ));
    s.extend(triggers::on_tables(bp, &bp.shadow, Side::Shadow));
    s.extend(triggers::on_tables(bp, &bp.old, Side::Old));
    s.extend(view_goes_live(bp));
    s
}

/// Swap: the partitioned table takes its name back.
pub fn swap(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(view_locks(bp));
    s.extend(stragglers(bp));
    s.extend(hand_name_to(
        bp,
        &bp.shadow,
        "the partitioned table takes its name back",
    ));
    s.extend(triggers::off_tables(bp, &bp.table, Side::Shadow));
    // The emptied first partition keeps its foreign keys until it is
    // dropped: a cascade would still fire a statement trigger there.
    s.extend(triggers::off_tables(bp, &bp.old, Side::Old));
    s.extend(triggers::create_all(bp, &bp.table));
    s
}

/// Abort, before re-attaching: the bound that spares the attach its scan.
pub fn abort_check(bp: &Blueprint) -> Vec<Statement> {
    let d = def(bp);
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "the first partition's bound, so that it can be attached again without a scan",
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} < {}::{}) NOT VALID",
            bp.old,
            d.check,
            bp.key.column,
            quote_literal(&d.cutoff),
            bp.key.type_name
        ),
    ));
    s
}

pub fn abort_validate(bp: &Blueprint) -> Statement {
    Statement::new(
        "validate the bound under a lock that lets reads and writes go on",
        format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", bp.old, def(bp).check),
    )
}

/// Abort: the last rows of the range move back, the view goes, the new
/// partitions go, the first partition is attached again.
pub fn unroute(bp: &Blueprint) -> Vec<Statement> {
    let d = def(bp);
    let mut s = session_limits(bp);
    s.push(view_locks(bp));
    let w = writable_columns(bp);
    s.push(Statement::new(
        "the last rows of the first partition's range move back",
        format!(
            "WITH moved AS (DELETE FROM {shadow} WHERE {k} < {c}::{ty} RETURNING {w}) INSERT INTO {old} ({w}){o} SELECT {w} FROM moved",
            shadow = bp.shadow,
            k = bp.key.column,
            c = quote_literal(&d.cutoff),
            ty = bp.key.type_name,
            old = bp.old,
            o = overriding(bp)
        ),
    ));
    s.extend(hand_name_to(
        bp,
        &bp.shadow,
        "the partitioned table takes its name back",
    ));
    for p in &bp.partitions {
        s.push(Statement::new(
            "an emptied partition of the split goes",
            format!("DROP TABLE {}", bp.table.sibling(p.name.clone())),
        ));
    }
    // The partitioned table's own triggers, cloned to the first partition
    // again by the attach.
    s.extend(triggers::off_tables(bp, &bp.table, Side::Shadow));
    s.extend(triggers::off_tables(bp, &bp.old, Side::Old));
    s.push(Statement::new(
        "the first partition is attached again; its validated bound spares the scan",
        format!(
            "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (MINVALUE) TO ({})",
            bp.table,
            bp.old,
            quote_literal(&d.cutoff)
        ),
    ));
    s.push(Statement::new(
        "the bound is the partition's now",
        format!("ALTER TABLE {} DROP CONSTRAINT {}", bp.old, d.check),
    ));
    s.push(Statement::new(
        "autovacuum as before",
        format!("ALTER TABLE {} RESET (autovacuum_enabled)", bp.old),
    ));
    s.extend(triggers::create_all(bp, &bp.table));
    s
}

/// A split's steps: the move method's, with its own prepare, route and
/// swap.
pub fn steps(bp: &Blueprint) -> Vec<Step> {
    let prepare = Step {
        name: "prepare",
        from: Some(Phase::Planned),
        to: Some(Phase::Prepared),
        summary: "one transaction: the partitions of the first partition's range, as tables of their own, for the route to attach",
        parts: vec![Part::new("prepare", How::Transaction, "first", prepare(bp))
            .recording(Record::Advance(Phase::Planned, Phase::Prepared))
            .locking(vec![bp.table.to_string()])],
    };
    let mut route_rels: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    route_rels.push(bp.table.to_string());
    let route_part = Part::new("route", How::Transaction, "once", route(bp))
        .recording(Record::Advance(Phase::Prepared, Phase::Routed))
        .locking(route_rels);
    let swap_part = Part::new("swap", How::Transaction, "last", swap(bp))
        .recording(Record::Advance(Phase::Moved, Phase::Swapped))
        .locking(swap_relations(bp));
    let mut v = vec![prepare];
    v.extend(moving::steps_with(bp, route_part, swap_part));
    v
}

pub fn abort_steps(bp: &Blueprint) -> Vec<Step> {
    let mut unroute_rels = swap_relations(bp);
    unroute_rels.push(bp.old.to_string());
    vec![
        aborts::step(
            "abort (drop partitions)",
            "before the route: the tables prepare made go",
            vec![Part::new(
                "drop",
                How::Transaction,
                "when the route has not run yet",
                drop_prepared(bp),
            )
            .recording(Record::Aborted)
            .locking(vec![bp.table.to_string()])],
        ),
        reroute_step(bp),
        back_step(bp),
        aborts::step(
            "abort (unroute)",
            "the first partition's bound is proved, then one short transaction attaches it again",
            vec![
                Part::new("bound", How::Transaction, "unless it exists already", abort_check(bp))
                    .locking(vec![bp.old.to_string()]),
                Part::new("validate", How::Alone, "then", vec![abort_validate(bp)]).locking(vec![bp.old.to_string()]),
                Part::new("unroute", How::Transaction, "last", unroute(bp))
                    .recording(Record::Aborted)
                    .locking(unroute_rels),
            ],
        ),
    ]
}

/// A split's abort from wherever it stands.
pub async fn abort(ctx: &Context, s: &mut Session) -> Result<()> {
    let bp = s.m.blueprint.clone();
    let bp = &bp;
    let steps = abort_steps(bp);
    match s.m.phase {
        Phase::Planned => return aborts::nothing_changed(ctx, s).await,
        Phase::Prepared => return aborts::run_named(ctx, s, &steps, "abort (drop partitions)").await,
        _ => {}
    }
    let mut step = s.m.abort_step.clone().unwrap_or_default();
    if step.is_empty() {
        aborts::run_named(ctx, s, &steps, "abort (reroute)").await?;
        step = "rerouted".into();
    }
    if step == "rerouted" || step == "moving back" {
        moving::abort::move_back(ctx, s, step == "moving back").await?;
    }
    ctx.reporter
        .phase("abort", &format!("attaching {} again as the first partition", bp.old));
    let Some(unroute) = steps.iter().find(|st| st.name == "abort (unroute)") else {
        anyhow::bail!("the split's abort has no unroute step");
    };
    let (c, set, id) = (&s.client, &bp.settings, s.m.id);
    if !crate::method::constraint_on(c, &bp.old, &def(bp).check).await? {
        unroute.part("bound")?.run(c, set, "abort (bound)", id).await?;
    }
    unroute.part("validate")?.run(c, set, "abort (bound)", id).await?;
    unroute.part("unroute")?.run(c, set, unroute.name, id).await
}
