//! The move method's abort, before the swap: new rows are routed back to
//! the original, rows move back in batches partition by partition, then
//! the original takes its name back and the partitioned table is dropped.
//! The application keeps working through the view all along. Each step
//! is recorded, so an abort that is itself interrupted continues where it
//! stopped.

use super::{sql, swap_relations};
use crate::blueprint::Blueprint;
use crate::control::{self, Phase};
use crate::exec::tx::Record;
use crate::exec::{Context, Session};
use crate::method::batches::sql::{vacuum_statement, BatchSql};
use crate::method::batches::{self, Mover, Pass};
use crate::method::{abort, How, Part, Step};
use anyhow::Result;

/// Moving rows back: a batch part per partition, then the VACUUM.
pub fn back_parts(bp: &Blueprint) -> Vec<Part> {
    let mut v: Vec<Part> = bp
        .leaves()
        .iter()
        .map(|leaf| {
            Part::new(
                "batch back",
                How::Batches,
                "only for a partition that holds rows: over its pages, into the original",
                BatchSql::back(bp, leaf).statements(),
            )
        })
        .collect();
    v.push(Part::new(
        "vacuum",
        How::Alone,
        "once every row is back (best effort)",
        vec![vacuum_statement(&bp.shadow)],
    ));
    v
}

/// The step that routes new rows to the original.
pub fn reroute_step(bp: &Blueprint) -> Step {
    abort::step(
        "abort (reroute)",
        "one short transaction: new rows go to the original from now on",
        vec![
            Part::new("reroute", How::Transaction, "from the route on", sql::reroute(bp))
                .recording(Record::AbortStep("rerouted"))
                .locking(vec![bp.table.to_string()]),
        ],
    )
}

/// The step that moves every row back.
pub fn back_step(bp: &Blueprint) -> Step {
    abort::step(
        "abort (move back)",
        "rows move back in batches, one transaction each; the application works through the view",
        back_parts(bp),
    )
}

pub fn steps(bp: &Blueprint) -> Vec<Step> {
    let mut unroute_rels = swap_relations(bp);
    unroute_rels.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
    let mut v: Vec<Step> = abort::key_check_step(bp).into_iter().collect();
    v.extend([
        reroute_step(bp),
        back_step(bp),
        abort::step(
            "abort (unroute)",
            "one short transaction: the last rows move back and the original takes its name back",
            vec![
                Part::new("unroute", How::Transaction, "once every row is back", sql::unroute(bp))
                    .recording(Record::AbortStep("unrouted"))
                    .locking(unroute_rels),
            ],
        ),
        abort::drop_step(bp),
        abort::validate_step(bp),
    ]);
    v
}

/// Moves the rows back from the recorded abort cursor.
pub async fn move_back(ctx: &Context, s: &mut Session, resume: bool) -> Result<()> {
    let bp = &s.m.blueprint;
    ctx.reporter.phase("abort", &format!("moving rows back to {}", bp.old));
    let mut mover = Mover::new(ctx, &mut s.client, &s.m, &bp.shadow).await?;
    let (leaf, block) = if resume {
        (s.m.abort_partition.max(0) as usize, s.m.abort_block)
    } else {
        (0, 0)
    };
    if let Pass::Stopped = mover.run_back(leaf, block).await? {
        return Err(crate::error::Failure::Interrupted("the abort".into()).into());
    }
    batches::vacuum(&s.client, bp, &bp.shadow).await;
    control::abort_step(&**s.client, s.m.id, "moved back", 0, 0).await
}

pub async fn run(ctx: &Context, s: &mut Session) -> Result<()> {
    let bp = s.m.blueprint.clone();
    let bp = &bp;
    match s.m.phase {
        Phase::Planned | Phase::Constrained => abort::before_prepare(ctx, s, &steps(bp)).await,
        Phase::Prepared => abort::run_named(ctx, s, &steps(bp), "abort (drop)").await,
        _ => {
            let steps = steps(bp);
            let mut step = s.m.abort_step.clone().unwrap_or_default();
            if step.is_empty() {
                abort::run_named(ctx, s, &steps, "abort (reroute)").await?;
                step = "rerouted".into();
            }
            if step == "rerouted" || step == "moving back" {
                move_back(ctx, s, step == "moving back").await?;
                step = "moved back".into();
            }
            if step == "moved back" {
                abort::run_named(ctx, s, &steps, "abort (unroute)").await?;
                step = "unrouted".into();
            }
            if step == "unrouted" {
                abort::run_named(ctx, s, &steps, "abort (drop)").await?;
                abort::validate(&s.client, bp, &abort::validate_fks(bp)).await;
            }
            Ok(())
        }
    }
}
