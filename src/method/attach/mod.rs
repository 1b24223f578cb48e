//! The attach method ("partition zero"): no row moves; the original
//! becomes the first partition of a new partitioned table. [`sql`] renders
//! its statements, [`split`] breaks the first partition up later with the
//! move machinery, [`abort`] undoes it before the swap; this file is its
//! list of steps and their driver. The constrain step runs several
//! transactions (VALIDATE and CREATE INDEX CONCURRENTLY cannot share one);
//! each part first looks at the catalog, so a resumed run skips what is
//! done and rebuilds an index a crash left invalid.

pub mod abort;
pub mod split;
pub mod sql;

use crate::blueprint::{Blueprint, KeyIndex};
use crate::control::Phase;
use crate::exec::tx::Record;
use crate::exec::{Context, Flow, Session};
use crate::method::moving::catch_up;
use crate::method::shared::swap::swap_locks;
use crate::method::{analyze_and_record, record_part, run_plain, How, Part, Step};
use crate::sql::Statement;
use anyhow::{bail, Result};
use tokio_postgres::Client;

/// The parts of one unique index built with the key: an invalid one left
/// by a crash goes first.
fn key_index_parts(bp: &Blueprint, k: &KeyIndex, build: Statement) -> [Part; 2] {
    let rels = vec![bp.table.to_string()];
    [
        Part::new(
            "key index drop",
            How::Alone,
            "only for an index a crash left invalid",
            vec![Statement::new(
                "the invalid index goes, without blocking writes",
                format!("DROP INDEX CONCURRENTLY {}", bp.table.sibling(k.name.clone())),
            )],
        )
        .locking(rels.clone()),
        // Waiting, as every CONCURRENTLY build: cancelled by a lock
        // timeout it would leave an invalid index that its retry trips on.
        Part::new("key index", How::Waiting, "unless it is built already", vec![build]).locking(rels),
    ]
}

pub fn steps(bp: &Blueprint) -> Vec<Step> {
    let table = vec![bp.table.to_string()];
    // A key that may be NULL is made NOT NULL first: the bound then proves
    // the first partition's constraint, which holds no NULL.
    let mut constrain = crate::method::not_null::parts(bp);
    constrain.extend([
        Part::new(
            "column",
            How::Transaction,
            "list keys only, unless the column exists already",
            sql::add_column(bp),
        )
        .locking(table.clone()),
        Part::new(
            "check",
            How::Transaction,
            "unless it exists already",
            sql::add_check(bp),
        )
        .locking(table.clone()),
        Part::new("validate", How::Alone, "then", vec![sql::validate_check(bp)]).locking(table.clone()),
    ]);
    for (k, st) in sql::def(bp).key_indexes.iter().zip(sql::key_indexes(bp)) {
        constrain.extend(key_index_parts(bp, k, st));
    }
    constrain.push(record_part(Phase::Planned, Phase::Constrained));
    vec![
        Step {
            name: "constrain",
            from: Some(Phase::Planned),
            to: Some(Phase::Constrained),
            summary: "a brief lock to add the constraint, then validation and index builds that let the application read and write",
            parts: constrain,
        },
        Step {
            name: "prepare",
            from: Some(Phase::Constrained),
            to: Some(Phase::Prepared),
            summary: "one transaction: the partitioned table, with partitions from the cutoff on",
            parts: vec![Part::new("prepare", How::Transaction, "once", sql::prepare(bp))
                .recording(Record::Advance(Phase::Constrained, Phase::Prepared))
                .locking(bp.foreign_keys.iter().map(|f| f.referenced.to_string()).collect())],
        },
        Step {
            name: "swap",
            from: Some(Phase::Prepared),
            to: Some(Phase::Swapped),
            summary: "the sequences catch up first, outside any lock; then one short transaction; no row moves",
            parts: vec![
                catch_up(bp),
                Part::new("swap", How::Transaction, "last", sql::swap(bp))
                    .recording(Record::Advance(Phase::Prepared, Phase::Swapped))
                    .locking(swap_locks(bp, &bp.table, &bp.shadow)),
            ],
        },
        Step {
            name: "finish",
            from: Some(Phase::Swapped),
            to: Some(Phase::Finished),
            summary: "statistics for the partitioned table",
            parts: [
                crate::method::shared::materialized::parts(bp),
                analyze_and_record(&bp.table, Phase::Swapped, Phase::Finished),
            ]
            .concat(),
        },
    ]
}

/// Runs one step of the attach method.
pub async fn run(ctx: &Context, s: &mut Session, step: &Step) -> Result<Flow> {
    let bp = s.m.blueprint.clone();
    let id = s.m.id;
    let c = &s.client;
    match step.name {
        "constrain" => constrain(ctx, c, &bp, step, id).await?,
        "prepare" | "swap" | "finish" => run_plain(c, &bp, step, id).await?,
        other => bail!("the attach method has no step {other}"),
    }
    Ok(Flow::Done)
}

async fn constrain(ctx: &Context, c: &Client, bp: &Blueprint, step: &Step, id: i64) -> Result<()> {
    let s = &bp.settings;
    let what = step.name;
    crate::method::not_null::run(ctx, c, bp, step, id).await?;
    if sql::def(bp).add_column.is_some() && !column_exists(c, bp).await? {
        step.part("column")?.run(c, s, "constrain (column)", id).await?;
    }
    if !constraint_exists(c, bp).await? {
        step.part("check")?.run(c, s, what, id).await?;
    }
    crate::failpoint::hit("constrain:after-check");
    ctx.reporter.phase(
        "constrain",
        "validating the bound while the application reads and writes",
    );
    step.part("validate")?.run(c, s, "validate", id).await?;
    let drops = step.parts.iter().filter(|p| p.key == "key index drop");
    let builds = step.parts.iter().filter(|p| p.key == "key index");
    for ((k, drop), build) in sql::def(bp).key_indexes.iter().zip(drops).zip(builds) {
        match index_state(c, bp, k).await? {
            Some(true) => continue,
            // A crash during CREATE INDEX CONCURRENTLY leaves it invalid.
            Some(false) => drop.run(c, s, "constrain (index)", id).await?,
            None => {}
        }
        ctx.reporter.phase(
            "constrain",
            &format!("building the unique index {} concurrently", k.name),
        );
        build.run(c, s, "constrain (index)", id).await?;
        crate::failpoint::hit("constrain:after-index");
    }
    step.part("record")?.run(c, s, what, id).await
}

async fn column_exists(c: &Client, bp: &Blueprint) -> Result<bool> {
    Ok(c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)",
            &[&bp.table.to_string(), &bp.key.column.as_str()],
        )
        .await?
        .get(0))
}

async fn constraint_exists(c: &Client, bp: &Blueprint) -> Result<bool> {
    crate::method::constraint_on(c, &bp.table, &sql::def(bp).check).await
}

/// Some(valid) when the index exists.
async fn index_state(c: &Client, bp: &Blueprint, k: &KeyIndex) -> Result<Option<bool>> {
    Ok(c.query_opt(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
        &[&bp.table.sibling(k.name.clone()).to_string()],
    )
    .await?
    .map(|r| r.get(0)))
}
