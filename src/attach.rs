//! Drives the attach method. Its constrain phase runs several transactions
//! (VALIDATE and CREATE INDEX CONCURRENTLY cannot share one); each step
//! first looks at the catalog, so a resumed run skips what is done and
//! rebuilds an index a crash left invalid.

use crate::control::Phase;
use crate::db::retry::{retrying, RetryPolicy};
use crate::phase::{self, attach as sql};
use crate::runner::{ddl, record, Context, Record, Session, Step};
use anyhow::{bail, Context as _, Result};
use tokio_postgres::Client;

pub async fn step(ctx: &Context, s: &mut Session) -> Result<Step> {
    let bp = s.m.blueprint.clone();
    let id = s.m.id;
    let c = &s.client;
    match s.m.phase {
        Phase::Planned => {
            let a = sql::def(&bp);
            ctx.reporter.phase(
                "constrain",
                &format!("proving every row of {} lies below {}", bp.table, a.cutoff),
            );
            if def_has_column_to_add(&bp) && !column_exists(c, &bp).await? {
                let rels = [bp.table.to_string()];
                retrying(
                    c,
                    RetryPolicy::new(bp.settings.retries),
                    "constrain (column)",
                    &rels,
                    || async { simple_tx(c, &sql::add_column(&bp)).await },
                )
                .await?;
            }
            if !constraint_exists(c, &bp).await? {
                let rels = [bp.table.to_string()];
                retrying(c, RetryPolicy::new(bp.settings.retries), "constrain", &rels, || async {
                    simple_tx(c, &sql::add_check(&bp)).await
                })
                .await?;
            }
            crate::failpoint::hit("constrain:after-check");
            ctx.reporter.phase(
                "constrain",
                "validating the bound while the application reads and writes",
            );
            let rels = [bp.table.to_string()];
            retrying(c, RetryPolicy::new(bp.settings.retries), "validate", &rels, || async {
                unbounded(c, &bp, &sql::validate_check(&bp).sql).await
            })
            .await?;
            for (k, st) in sql::def(&bp).key_indexes.iter().zip(sql::key_indexes(&bp)) {
                match index_state(c, &bp, &k.name).await? {
                    Some(true) => continue,
                    Some(false) => {
                        // A crash during CREATE INDEX CONCURRENTLY leaves it invalid.
                        unbounded(
                            c,
                            &bp,
                            &format!("DROP INDEX CONCURRENTLY {}", bp.table.sibling(k.name.clone())),
                        )
                        .await?;
                    }
                    None => {}
                }
                ctx.reporter.phase(
                    "constrain",
                    &format!("building the unique index {} concurrently", k.name),
                );
                retrying(
                    c,
                    RetryPolicy::new(bp.settings.retries),
                    "constrain (index)",
                    &rels,
                    || async { unbounded(c, &bp, &st.sql).await },
                )
                .await?;
                crate::failpoint::hit("constrain:after-index");
            }
            record(c, id, &Record::Advance(Phase::Planned, Phase::Constrained)).await?;
        }
        Phase::Constrained => {
            ctx.reporter.phase(
                "prepare",
                &format!(
                    "creating {} with {} partitions from the cutoff on",
                    bp.shadow,
                    bp.partitions.len()
                ),
            );
            let rels: Vec<String> = bp.foreign_keys.iter().map(|f| f.referenced.to_string()).collect();
            ddl(
                c,
                &bp,
                "prepare",
                &sql::prepare(&bp),
                &rels,
                id,
                Record::Advance(Phase::Constrained, Phase::Prepared),
            )
            .await?;
        }
        Phase::Prepared => {
            ctx.reporter.phase(
                "swap",
                "attaching the original as the first partition and taking the name, in one short transaction",
            );
            crate::runner::catch_up_sequences(c, &bp).await?;
            let rels = phase::sync::swap_locks(&bp, &bp.table, &bp.shadow);
            ddl(
                c,
                &bp,
                "swap",
                &sql::swap(&bp),
                &rels,
                id,
                Record::Advance(Phase::Prepared, Phase::Swapped),
            )
            .await?;
        }
        Phase::Swapped => {
            ctx.reporter.phase("finish", "statistics for the partitioned table");
            crate::mover::analyze(c, &bp.table).await?;
            record(c, id, &Record::Advance(Phase::Swapped, Phase::Finished)).await?;
        }
        other => bail!("the attach method has no phase {}", other.as_str()),
    }
    Ok(Step::Done)
}

fn def_has_column_to_add(bp: &crate::blueprint::Blueprint) -> bool {
    sql::def(bp).add_column.is_some()
}

async fn column_exists(c: &Client, bp: &crate::blueprint::Blueprint) -> Result<bool> {
    Ok(c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)",
            &[&bp.table.to_string(), &bp.key.column.as_str()],
        )
        .await?
        .get(0))
}

async fn constraint_exists(c: &Client, bp: &crate::blueprint::Blueprint) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
        &[&bp.table.to_string(), &sql::def(bp).check.as_str()],
    )
    .await?
    .get(0))
}

/// Some(valid) when the index exists.
async fn index_state(c: &Client, bp: &crate::blueprint::Blueprint, name: &crate::sql::Ident) -> Result<Option<bool>> {
    Ok(c.query_opt(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
        &[&bp.table.sibling(name.clone()).to_string()],
    )
    .await?
    .map(|r| r.get(0)))
}

/// Statements in one transaction, with no control record.
pub async fn simple_tx(c: &Client, stmts: &[crate::sql::Statement]) -> Result<()> {
    c.batch_execute("BEGIN").await?;
    for st in stmts {
        if let Err(e) = c.batch_execute(&st.sql).await {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(e).with_context(|| format!("failed at the step \"{}\"", st.why));
        }
    }
    c.batch_execute("COMMIT").await?;
    Ok(())
}

/// A long statement outside a transaction: no statement timeout (a
/// validation or an index build takes as long as the table needs), but the
/// lock timeout holds for the lock it waits for first.
pub async fn unbounded(c: &Client, bp: &crate::blueprint::Blueprint, sql: &str) -> Result<()> {
    c.batch_execute(&format!("SET lock_timeout = '{}ms'", bp.settings.lock_timeout_ms))
        .await?;
    c.batch_execute("SET statement_timeout = 0").await?;
    let res = c.batch_execute(sql).await;
    let _ = c.batch_execute("RESET lock_timeout").await;
    let _ = c.batch_execute("RESET statement_timeout").await;
    res.with_context(|| format!("failed: {sql}"))
}
