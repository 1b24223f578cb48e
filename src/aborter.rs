//! `abort`: undoes a migration from any phase before the swap, leaving the
//! original table as it was. Each step is recorded, so an abort that is
//! itself interrupted continues where it stopped.

use crate::control::{self, Phase};
use crate::error::Refusal;
use crate::mover::{self, Mover, Pass};
use crate::phase::abort as steps;
use crate::plan_file::PlanFile;
use crate::runner::{ddl, open_unfinished, swap_relations, Context, Outcome, Record};
use anyhow::Result;

pub async fn abort(ctx: &Context, plan: &PlanFile) -> Result<Outcome> {
    let mut s = open_unfinished(ctx, plan).await?;
    if s.m.phase >= Phase::Swapped {
        return Err(Refusal::new(format!(
            "{} is already swapped; abort undoes a migration only before the swap",
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
    let client = &s.client;
    match s.m.phase {
        Phase::Planned => {
            ctx.reporter.phase("abort", "nothing was changed yet");
            control::aborted(&***client, id).await?;
        }
        Phase::Prepared => {
            ctx.reporter.phase("abort", &format!("dropping {}", bp.shadow));
            ddl(
                client,
                &bp,
                "abort",
                &steps::drop_shadow(&bp),
                &[bp.shadow.to_string()],
                id,
                Record::Aborted,
            )
            .await?;
        }
        Phase::Routed | Phase::Moved => {
            let mut step = s.m.abort_step.clone().unwrap_or_default();
            if step.is_empty() {
                ctx.reporter.phase("abort", "routing new rows to the original table");
                ddl(
                    client,
                    &bp,
                    "abort (reroute)",
                    &steps::reroute(&bp),
                    &[bp.table.to_string()],
                    id,
                    Record::AbortStep("rerouted"),
                )
                .await?;
                step = "rerouted".into();
            }
            if step == "rerouted" || step == "moving back" {
                ctx.reporter.phase("abort", &format!("moving rows back to {}", bp.old));
                let mut mover = Mover::new(ctx, client, &s.m).await?;
                let (leaf, block) = if step == "moving back" {
                    (s.m.abort_partition.max(0) as usize, s.m.abort_block)
                } else {
                    (0, 0)
                };
                if let Pass::Stopped = mover.run_back(leaf, block).await? {
                    return Ok(Outcome::Stopped(s.m.phase));
                }
                mover::vacuum(client, &bp, &bp.shadow).await;
                control::abort_step(&***client, id, "moved back", 0, 0).await?;
                step = "moved back".into();
            }
            if step == "moved back" {
                ctx.reporter
                    .phase("abort", &format!("giving {} its name back", bp.table));
                let mut rels = swap_relations(&bp);
                rels.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
                ddl(
                    client,
                    &bp,
                    "abort (unroute)",
                    &steps::unroute(&bp),
                    &rels,
                    id,
                    Record::AbortStep("unrouted"),
                )
                .await?;
                step = "unrouted".into();
            }
            if step == "unrouted" {
                ctx.reporter.phase("abort", &format!("dropping {}", bp.shadow));
                let rels: Vec<String> = bp
                    .foreign_keys
                    .iter()
                    .map(|f| f.referenced.to_string())
                    .chain([bp.shadow.to_string()])
                    .collect();
                ddl(
                    client,
                    &bp,
                    "abort (drop)",
                    &steps::drop_shadow(&bp),
                    &rels,
                    id,
                    Record::Aborted,
                )
                .await?;
                for st in steps::validate_fks(&bp) {
                    if let Err(e) = client.batch_execute(&st.sql).await {
                        tracing::warn!(error = %e, "a restored foreign key could not be validated; it stays NOT VALID");
                    }
                }
            }
        }
        Phase::Swapped | Phase::Finished => unreachable!("checked above"),
    }
    Ok(Outcome::Aborted)
}
