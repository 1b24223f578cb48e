//! The sync method: mirror triggers keep a partitioned copy in step with
//! the original, a locked backfill copies the rest, a verification
//! compares both range by range, and a reversible swap renames. [`sql`]
//! renders its statements, [`indexes`] builds the copy's deferred indexes,
//! [`verify`] compares and repairs, [`abort`] undoes it before the swap;
//! this file is its list of steps and their driver.

pub mod abort;
pub mod indexes;
pub mod sql;
pub mod verify;

use crate::blueprint::Blueprint;
use crate::control::{self, Phase};
use crate::exec::tx::Record;
use crate::exec::{Context, Flow, Session};
use crate::method::batches::sql::BatchSql;
use crate::method::batches::{Mover, Pass};
use crate::method::moving::{catch_up, prepare_relations};
use crate::method::{analyze_and_record, record_part, run_plain, How, Part, Step};
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, Ordering};

pub fn steps(bp: &Blueprint) -> Vec<Step> {
    let mut prepare_rels = prepare_relations(bp);
    prepare_rels.push(bp.table.to_string());
    let mut backfill = crate::method::latency_probe(bp);
    backfill.extend([
        crate::method::batches::sql::estimate_part(&bp.table),
        Part::new(
            "batch",
            How::Batches,
            if bp.settings.workers > 1 {
                "over the pages the original has when the backfill starts, one contiguous range of them per worker, each worker on its own connection"
            } else {
                "over the pages the original has when the backfill starts"
            },
            BatchSql::backfill(bp).statements(),
        ),
    ]);
    backfill.extend(indexes::parts(bp));
    backfill.extend(analyze_and_record(&bp.shadow, Phase::Prepared, Phase::Backfilled));
    let from = crate::method::not_null::prepare_from(bp);
    let mut steps: Vec<Step> = crate::method::not_null::step(bp).into_iter().collect();
    steps.extend([
        Step {
            name: "prepare",
            from: Some(from),
            to: Some(Phase::Prepared),
            summary: "one transaction; from its commit every write to the original is mirrored",
            parts: vec![Part::new("prepare", How::Transaction, "first", sql::prepare(bp))
                .recording(Record::Advance(from, Phase::Prepared))
                .locking(prepare_rels)],
        },
        Step {
            name: "backfill",
            from: Some(Phase::Prepared),
            to: Some(Phase::Backfilled),
            summary: "rows are copied in batches, one transaction each; then each partition's non-unique indexes, built in one pass",
            parts: backfill,
        },
        Step {
            name: "verify",
            from: Some(Phase::Backfilled),
            to: Some(Phase::Verified),
            summary: "read-only; a range that differs is copied again under row locks and compared again",
            parts: [verify::parts(bp), vec![record_part(Phase::Backfilled, Phase::Verified)]].concat(),
        },
        Step {
            name: "swap",
            from: Some(Phase::Verified),
            to: Some(Phase::Swapped),
            summary: "one short transaction; `apply` stops here, the retired original kept in step",
            parts: [
                fk_parts(bp),
                vec![
                    catch_up(bp),
                    Part::new("swap", How::Transaction, "last", sql::swap(bp))
                        .recording(Record::Advance(Phase::Verified, Phase::Swapped))
                        .locking(sql::swap_step_locks(bp)),
                ],
            ]
            .concat(),
        },
        Step {
            name: "cleanup",
            from: Some(Phase::Swapped),
            to: Some(Phase::Finished),
            summary: "only when you run `migrate cleanup`: the retired original goes",
            parts: [
                // Until now they read the retired original, which the back
                // mirror keeps in step.
                crate::method::shared::materialized::parts(bp),
                vec![Part::new("cleanup", How::Transaction, "once", sql::cleanup(bp))
                    .recording(Record::Advance(Phase::Swapped, Phase::Finished))
                    .locking(vec![bp.table.to_string(), bp.old.to_string()])],
            ]
            .concat(),
        },
    ]);
    steps
}

/// Before the swap the copy's partitions take the foreign keys, which the
/// swap hands to its parent (none while the copy is being filled).
fn fk_parts(bp: &Blueprint) -> Vec<Part> {
    if bp.foreign_keys.is_empty() {
        return Vec::new();
    }
    vec![
        Part::new(
            "foreign keys",
            How::Alone,
            "first, for each partition and foreign key",
            sql::partition_fks(bp),
        )
        .locking(bp.foreign_keys.iter().map(|f| f.referenced.to_string()).collect()),
        Part::new(
            "validate foreign keys",
            How::Waiting,
            "then each validated; the copy holds what the original holds",
            sql::validate_partition_fks(bp),
        ),
    ]
}

/// `migrate unswap`: back to the original, which the back mirror kept
/// current; restored foreign keys are validated afterwards.
pub fn unswap_step(bp: &Blueprint) -> Step {
    Step {
        name: "unswap",
        from: Some(Phase::Swapped),
        to: Some(Phase::Verified),
        summary: "one short transaction back to the original",
        parts: vec![
            Part::new("unswap", How::Transaction, "once", sql::unswap(bp))
                .recording(Record::Advance(Phase::Swapped, Phase::Verified))
                .locking(sql::unswap_step_locks(bp)),
            Part::new(
                "validate",
                How::Waiting,
                "then, for each restored foreign key; one that cannot be validated stays NOT VALID",
                [crate::method::abort::validate_fks(bp), sql::validate_original_fks(bp)].concat(),
            ),
        ],
    }
}

/// Runs one step of the sync method.
pub async fn run(ctx: &Context, s: &mut Session, step: &Step) -> Result<Flow> {
    let bp = s.m.blueprint.clone();
    let id = s.m.id;
    match step.name {
        "prepare" | "swap" | "cleanup" => run_plain(&s.client, &bp, step, id).await?,
        "constrain" => crate::method::not_null::run(ctx, &s.client, &bp, step, id).await?,
        "backfill" => {
            let backfilled = AtomicBool::new(false);
            let mut mover = Mover::new(ctx, &mut s.client, &s.m, &bp.table).await?;
            let reached = mover.reached();
            let copy = async {
                let r = mover.run_backfill().await;
                backfilled.store(true, Ordering::Relaxed);
                r
            };
            let (pass, early) = tokio::join!(
                copy,
                indexes::build_during_backfill(ctx, &bp, id, &reached, &backfilled)
            );
            if let Pass::Stopped = pass? {
                return Ok(Flow::Stopped);
            }
            if early > 0 {
                let detail = format!(
                    "{early} of {} partition indexes built while the backfill ran",
                    indexes::builds(&bp).len()
                );
                ctx.reporter.phase("indexes", &detail);
                control::event(&**s.client, id, "indexes", &detail).await?;
            }
            if !indexes::build_deferred(ctx, &s.client, &bp).await? {
                return Ok(Flow::Stopped);
            }
            for key in ["analyze", "record"] {
                step.part(key)?.run(&s.client, &bp.settings, step.name, id).await?;
            }
        }
        "verify" => {
            let out = verify::verify(&mut s.client, &bp).await?;
            let detail = format!(
                "{} rows in {} ranges compared; {} ranges repaired{}",
                out.rows,
                out.ranges,
                out.repaired.len(),
                if out.repaired.is_empty() {
                    String::new()
                } else {
                    format!(": {}", out.repaired.join("; "))
                }
            );
            ctx.reporter.phase("verify", &detail);
            control::event(&**s.client, id, "verify", &detail).await?;
            crate::failpoint::hit("verify:before-record");
            step.part("record")?.run(&s.client, &bp.settings, step.name, id).await?;
        }
        other => bail!("the sync method has no step {other}"),
    }
    Ok(Flow::Done)
}
