//! The move method: a `UNION ALL` view with routing takes the table's
//! name in front of the original and the partitioned table, rows move in
//! atomic `DELETE … RETURNING` batches, and one short transaction swaps.
//! [`sql`] renders its statements, [`abort`] undoes it before the swap;
//! this file is its list of steps and their driver.

pub mod abort;
pub mod sql;

use crate::blueprint::Blueprint;
use crate::control::Phase;
use crate::exec::tx::Record;
use crate::exec::{Context, Flow, Session};
use crate::method::batches::sql::{estimate_part, row_pages, BatchSql};
use crate::method::batches::{Mover, Pass};
use crate::method::shared::{prepare, swap::sequences_catch_up};
use crate::method::{analyze_and_record, run_plain, How, Part, Step};
use anyhow::{bail, Result};

/// The relations a prepare locks: the tables its foreign keys reference,
/// and the table `LIKE` reads.
pub fn prepare_relations(bp: &Blueprint) -> Vec<String> {
    bp.foreign_keys
        .iter()
        .map(|f| f.referenced.to_string())
        .chain([bp.table.to_string()])
        .collect()
}

fn route_relations(bp: &Blueprint) -> Vec<String> {
    bp.dependent_views
        .iter()
        .map(|v| v.name.to_string())
        .chain(bp.incoming_fks.iter().map(|f| f.table.to_string()))
        .chain([bp.table.to_string()])
        .collect()
}

/// The view's dependents, the view and both tables behind it.
pub fn swap_relations(bp: &Blueprint) -> Vec<String> {
    bp.dependent_views
        .iter()
        .map(|v| v.name.to_string())
        .chain([bp.table.to_string(), bp.shadow.to_string(), bp.old.to_string()])
        .collect()
}

/// The main pass's parts: batches and the span of each sweep.
pub fn move_parts(bp: &Blueprint) -> Vec<Part> {
    let mut v = crate::method::latency_probe(bp);
    v.extend([
        estimate_part(&bp.old),
        Part::new(
            "batch",
            How::Batches,
            if bp.settings.workers > 1 {
                "over the pages of the original, one contiguous range of them per worker, each worker on its own connection (a table of a few batches goes on one); then sweeps, on one, over the pages that still hold rows"
            } else {
                "over the pages of the original, then sweeps over the pages that still hold rows"
            },
            BatchSql::forward(bp).statements(),
        ),
    ]);
    if bp.split.is_none() {
        v.push(Part::new(
            "sweep span",
            How::Plain,
            "before each sweep",
            row_pages(bp, &bp.old),
        ));
    }
    v
}

/// The parts before the swap's transaction: one more sweep, then the
/// sequences catch up outside any lock.
pub fn before_swap(bp: &Blueprint) -> Vec<Part> {
    let mut v: Vec<Part> = move_parts(bp).into_iter().filter(|p| p.key != "estimate").collect();
    for p in &mut v {
        p.when = match p.key {
            "batch" => "one more sweep for rows updated behind the cursor since the main pass",
            "latency probe" => p.when,
            _ => "before that sweep",
        };
    }
    v.push(catch_up(bp));
    v
}

/// Owned sequences past the highest key, outside the swap's locks (the
/// table's name still reaches every row then).
pub fn catch_up(bp: &Blueprint) -> Part {
    Part::new(
        "catch-up",
        How::Alone,
        "before the swap, outside its locks",
        sequences_catch_up(bp, &bp.table),
    )
    .locking(vec![bp.table.to_string()])
}

/// The parts of the move and the swap, shared with the attach method's
/// split: only the SQL of route and swap differs.
pub fn steps_with(bp: &Blueprint, route: Part, swap: Part) -> Vec<Step> {
    vec![
        Step {
            name: "route",
            from: Some(Phase::Prepared),
            to: Some(Phase::Routed),
            summary: "one short transaction: the view takes the table's name",
            parts: vec![route],
        },
        Step {
            name: "move",
            from: Some(Phase::Routed),
            to: Some(Phase::Moved),
            summary: "rows move in batches, one transaction each, while the application works through the view",
            parts: [move_parts(bp), statistics_and_record(bp)].concat(),
        },
        Step {
            name: "swap",
            from: Some(Phase::Moved),
            to: Some(Phase::Swapped),
            summary: "a last sweep, then one short transaction: the partitioned table takes the name",
            parts: [before_swap(bp), vec![swap]].concat(),
        },
        Step {
            name: "finish",
            from: Some(Phase::Swapped),
            to: Some(Phase::Finished),
            summary: match (bp.settings.keep_old, bp.split.is_some()) {
                (true, false) => "its own transaction after the swap: autovacuum back on the partitions; the emptied original is kept, as the plan says",
                (false, false) => "its own transaction after the swap: autovacuum back on the partitions, and the emptied original goes",
                (true, true) => "the emptied original is kept, as the plan says",
                (false, true) => "its own transaction after the swap: the emptied original goes",
            },
            parts: [crate::method::shared::materialized::parts(bp), vec![finish(bp)]].concat(),
        },
    ]
}

/// The partitioned table's statistics, beside the main pass's end, then
/// the step's record.
fn statistics_and_record(bp: &Blueprint) -> Vec<Part> {
    let mut v = analyze_and_record(&bp.shadow, Phase::Routed, Phase::Moved);
    v[0].when = "on a connection of its own once the main pass is nine tenths through, beside its last batches and the sweeps (after them when a resumed run is past that point)";
    v
}

fn finish(bp: &Blueprint) -> Part {
    let rels = bp
        .foreign_keys
        .iter()
        .map(|f| f.referenced.to_string())
        .chain([bp.old.to_string()])
        .chain(bp.leaves().iter().filter(|_| bp.split.is_none()).map(|l| l.to_string()))
        .collect();
    Part::new("finish", How::Transaction, "after the swap", sql::finish(bp))
        .recording(Record::Advance(Phase::Swapped, Phase::Finished))
        .locking(rels)
}

pub fn steps(bp: &Blueprint) -> Vec<Step> {
    let from = crate::method::not_null::prepare_from(bp);
    let prepare = Step {
        name: "prepare",
        from: Some(from),
        to: Some(Phase::Prepared),
        summary: "one transaction: the partitioned table, empty, with its partitions, keys and indexes",
        parts: vec![Part::new(
            "prepare",
            How::Transaction,
            "first",
            [prepare::statements(bp), sql::partitions_fill_quietly(bp)].concat(),
        )
        .recording(Record::Advance(from, Phase::Prepared))
        .locking(prepare_relations(bp))],
    };
    let route = Part::new("route", How::Transaction, "once", sql::route(bp))
        .recording(Record::Advance(Phase::Prepared, Phase::Routed))
        .locking(route_relations(bp));
    let swap = Part::new("swap", How::Transaction, "last", sql::swap(bp))
        .recording(Record::Advance(Phase::Moved, Phase::Swapped))
        .locking(swap_relations(bp));
    let mut v: Vec<Step> = crate::method::not_null::step(bp).into_iter().collect();
    v.push(prepare);
    v.extend(steps_with(bp, route, swap));
    v
}

/// The statistics part on a connection of its own, beside the batches.
async fn analyze_aside(ctx: &Context, bp: &Blueprint, part: &Part, step: &str, id: i64) -> Result<()> {
    let mut cfg = ctx.cfg.clone();
    cfg.application_name(format!("migrate {} (statistics)", bp.method.as_str()));
    let client = crate::db::connect(&cfg).await?;
    part.run(&client, &bp.settings, step, id).await
}

/// Runs one step of the move method (or of a split, which moves the same
/// way).
pub async fn run(ctx: &Context, s: &mut Session, step: &Step) -> Result<Flow> {
    let bp = s.m.blueprint.clone();
    let id = s.m.id;
    match step.name {
        "prepare" | "route" | "finish" => run_plain(&s.client, &bp, step, id).await?,
        "constrain" => crate::method::not_null::run(ctx, &s.client, &bp, step, id).await?,
        "move" => {
            let analyze = step.part("analyze")?;
            let mut mover = Mover::new(ctx, &mut s.client, &s.m, &bp.old).await?;
            let (near_end, told) = tokio::sync::oneshot::channel();
            mover.tell_near_end(near_end);
            // The statistics overlap the main pass's last tenth and the
            // sweeps, on a connection of their own.
            let early = async {
                if told.await.is_err() {
                    return None;
                }
                Some(analyze_aside(ctx, &bp, analyze, step.name, id).await)
            };
            let (pass, analyzed) = tokio::join!(mover.run_forward(), early);
            drop(mover);
            if let Pass::Stopped = pass? {
                return Ok(Flow::Stopped);
            }
            match analyzed {
                Some(r) => r?,
                None => analyze.run(&s.client, &bp.settings, step.name, id).await?,
            }
            step.part("record")?.run(&s.client, &bp.settings, step.name, id).await?;
        }
        "swap" => {
            let mut mover = Mover::new(ctx, &mut s.client, &s.m, &bp.old).await?;
            if let Pass::Stopped = mover.sweep_once().await? {
                return Ok(Flow::Stopped);
            }
            for key in ["catch-up", "swap"] {
                step.part(key)?.run(&s.client, &bp.settings, step.name, id).await?;
            }
        }
        other => bail!("the move method has no step {other}"),
    }
    Ok(Flow::Done)
}
