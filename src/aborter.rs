//! `abort`: undoes a migration from any phase before the swap, leaving the
//! original table as it was. Each step is recorded, so an abort that is
//! itself interrupted continues where it stopped.

use crate::blueprint::Blueprint;
use crate::control::{self, Phase};
use crate::db::retry::{retrying, RetryPolicy};
use crate::error::Refusal;
use crate::mover::{self, Mover, Pass};
use crate::phase::{abort as steps, attach as attach_sql, split as split_sql, sync as sync_sql};
use crate::plan_file::{Method, PlanFile};
use crate::runner::{ddl, open_unfinished, swap_relations, Context, Outcome, Record, Session};
use anyhow::Result;

pub async fn abort(ctx: &Context, plan: &PlanFile) -> Result<Outcome> {
    let mut s = open_unfinished(ctx, plan).await?;
    if s.m.phase >= Phase::Swapped {
        let hint = if s.m.blueprint.method == Method::Sync {
            " (`migrate unswap` returns to the original)"
        } else {
            ""
        };
        return Err(Refusal::new(format!(
            "{} is already swapped; abort undoes a migration only before the swap{hint}",
            s.m.table_name
        ))
        .into());
    }
    let id = s.m.id;
    if s.m.state == "active" {
        control::begin_abort(&**s.client, id).await?;
        s.m = control::reload(&**s.client, id).await?;
    }
    let bp = s.m.blueprint.clone();
    match bp.method {
        Method::Move => abort_move(ctx, &s, &bp).await?,
        Method::Sync => abort_sync(ctx, &s, &bp).await?,
        Method::Attach => abort_attach(ctx, &s, &bp).await?,
    }
    Ok(Outcome::Aborted)
}

async fn drop_shadow(ctx: &Context, s: &Session, bp: &Blueprint) -> Result<()> {
    ctx.reporter.phase("abort", &format!("dropping {}", bp.shadow));
    let rels: Vec<String> = bp
        .foreign_keys
        .iter()
        .map(|f| f.referenced.to_string())
        .chain([bp.shadow.to_string()])
        .collect();
    ddl(
        &s.client,
        bp,
        "abort (drop)",
        &steps::drop_shadow(bp),
        &rels,
        s.m.id,
        Record::Aborted,
    )
    .await
}

async fn abort_sync(ctx: &Context, s: &Session, bp: &Blueprint) -> Result<()> {
    if s.m.phase >= Phase::Prepared && s.m.abort_step.is_none() {
        ctx.reporter
            .phase("abort", &format!("removing the mirror triggers from {}", bp.table));
        ddl(
            &s.client,
            bp,
            "abort (mirror)",
            &sync_sql::abort(bp),
            &[bp.table.to_string()],
            s.m.id,
            Record::AbortStep("unmirrored"),
        )
        .await?;
    }
    drop_shadow(ctx, s, bp).await
}

async fn abort_attach(ctx: &Context, s: &Session, bp: &Blueprint) -> Result<()> {
    ctx.reporter.phase(
        "abort",
        &format!("removing the cutoff constraint and built indexes from {}", bp.table),
    );
    crate::attach::simple_tx(&s.client, &attach_sql::abort_constraint(bp)).await?;
    for st in attach_sql::abort_indexes(bp) {
        crate::attach::unbounded(&s.client, bp, &st.sql).await?;
    }
    drop_shadow(ctx, s, bp).await
}

async fn abort_move(ctx: &Context, s: &Session, bp: &Blueprint) -> Result<()> {
    let id = s.m.id;
    let client = &s.client;
    match s.m.phase {
        Phase::Planned => {
            ctx.reporter.phase("abort", "nothing was changed yet");
            control::aborted(&***client, id).await?;
        }
        Phase::Prepared if bp.split.is_some() => {
            ctx.reporter.phase("abort", "nothing was changed yet");
            control::aborted(&***client, id).await?;
        }
        Phase::Prepared => drop_shadow(ctx, s, bp).await?,
        _ => {
            let mut step = s.m.abort_step.clone().unwrap_or_default();
            if step.is_empty() {
                ctx.reporter.phase("abort", "routing new rows to the original table");
                ddl(
                    client,
                    bp,
                    "abort (reroute)",
                    &steps::reroute(bp),
                    &[bp.table.to_string()],
                    id,
                    Record::AbortStep("rerouted"),
                )
                .await?;
                step = "rerouted".into();
            }
            if step == "rerouted" || step == "moving back" {
                ctx.reporter.phase("abort", &format!("moving rows back to {}", bp.old));
                let mut mover = Mover::new(ctx, client, &s.m, &bp.shadow).await?;
                let (leaf, block) = if step == "moving back" {
                    (s.m.abort_partition.max(0) as usize, s.m.abort_block)
                } else {
                    (0, 0)
                };
                if let Pass::Stopped = mover.run_back(leaf, block).await? {
                    return Err(crate::error::Failure::Interrupted("the abort".into()).into());
                }
                mover::vacuum(client, bp, &bp.shadow).await;
                control::abort_step(&***client, id, "moved back", 0, 0).await?;
                step = "moved back".into();
            }
            if step == "moved back" && bp.split.is_some() {
                ctx.reporter
                    .phase("abort", &format!("attaching {} again as the first partition", bp.old));
                let rels = [bp.old.to_string()];
                let check = bp
                    .split
                    .as_ref()
                    .map(|d| d.check.as_str().to_string())
                    .unwrap_or_default();
                let exists: bool = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
                        &[&bp.old.to_string(), &check],
                    )
                    .await?
                    .get(0);
                if !exists {
                    retrying(
                        client,
                        RetryPolicy::new(bp.settings.retries),
                        "abort (bound)",
                        &rels,
                        || async { crate::attach::simple_tx(client, &split_sql::abort_check(bp)).await },
                    )
                    .await?;
                }
                crate::attach::unbounded(client, bp, &split_sql::abort_validate(bp).sql).await?;
                let mut rels = swap_relations(bp);
                rels.push(bp.old.to_string());
                ddl(
                    client,
                    bp,
                    "abort (unroute)",
                    &split_sql::unroute(bp),
                    &rels,
                    id,
                    Record::Aborted,
                )
                .await?;
                return Ok(());
            }
            if step == "moved back" {
                ctx.reporter
                    .phase("abort", &format!("giving {} its name back", bp.table));
                let mut rels = swap_relations(bp);
                rels.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
                ddl(
                    client,
                    bp,
                    "abort (unroute)",
                    &steps::unroute(bp),
                    &rels,
                    id,
                    Record::AbortStep("unrouted"),
                )
                .await?;
                step = "unrouted".into();
            }
            if step == "unrouted" {
                drop_shadow(ctx, s, bp).await?;
                for st in steps::validate_fks(bp) {
                    if let Err(e) = client.batch_execute(&st.sql).await {
                        tracing::warn!(error = %crate::db::retry::message(&e), "a restored foreign key could not be validated; it stays NOT VALID");
                    }
                }
            }
        }
    }
    Ok(())
}
