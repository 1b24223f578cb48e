//! Drives a migration from its control record: each call reads where the
//! migration stands and runs the phases after it, so `apply`, `resume` and
//! `swap` are the same loop with different end points.

use crate::blueprint;
use crate::control::{self, MigrationRow, Phase};
use crate::error::Refusal;
use crate::exec::{connect, Context, Flow, Outcome, Session};
use crate::method::batches::Mover;
use crate::plan_file::{Method, PlanFile, PlanSpec};
use anyhow::Result;

/// Starts a migration, or continues the unfinished one of the same plan.
pub async fn apply(ctx: &Context, plan: &PlanFile, until: Phase) -> Result<Outcome> {
    let (mut client, lock) = connect(ctx, plan).await?;
    let table = plan.table.to_string();
    let m = match control::unfinished(&**client, &table).await? {
        Some(m) => {
            check_same_plan(&m, plan)?;
            if m.state == "aborting" {
                return Err(Refusal::new(format!(
                    "an abort of {table} is in progress; run `migrate abort` again to finish it"
                ))
                .into());
            }
            ctx.reporter.phase(
                m.phase.as_str(),
                &format!("continuing the unfinished migration of {table}"),
            );
            m
        }
        None => {
            // Every check runs before the first change, the control schema
            // included.
            let resolved = blueprint::resolve(&client, plan).await?;
            accepted_hazards(&client, &resolved.blueprint).await?;
            control::bootstrap(&mut client).await?;
            let id = control::insert(&**client, &resolved.blueprint, &plan.source).await?;
            if let Some(budget) = resolved.blueprint.settings.throttle.latency {
                let probe = crate::latency::Probe::start(&ctx.cfg, resolved.blueprint.method.as_str(), id).await?;
                crate::latency::learn_baseline(ctx, &**client, id, budget, &probe).await?;
            }
            control::reload(&**client, id).await?
        }
    };
    let mut s = Session::new(client, lock, m);
    drive(ctx, &mut s, until).await
}

/// The application's statements the routing view would not serve refuse
/// the run, unless the plan accepts them: then they are logged.
async fn accepted_hazards(client: &tokio_postgres::Client, bp: &crate::blueprint::Blueprint) -> Result<()> {
    for f in crate::preflight::view_hazards(client, bp).await? {
        tracing::warn!("{}", f.message);
    }
    Ok(())
}

/// Continues the unfinished migration of the plan's table.
pub async fn resume(ctx: &Context, plan: &PlanFile, until: Phase) -> Result<Outcome> {
    let mut s = open_unfinished(ctx, plan).await?;
    if s.m.state == "aborting" {
        return Err(Refusal::new(format!(
            "an abort of {} is in progress; run `migrate abort` again to finish it",
            s.m.table_name
        ))
        .into());
    }
    drive(ctx, &mut s, until).await
}

/// Only the swap (and dropping the emptied original). When a runner waits
/// for it (a postponed swap), the order goes to that runner.
pub async fn swap(ctx: &Context, plan: &PlanFile) -> Result<Outcome> {
    let mut s = match open_unfinished(ctx, plan).await {
        Ok(s) => s,
        Err(e)
            if e.downcast_ref::<crate::error::Failure>()
                .is_some_and(|f| matches!(f, crate::error::Failure::Conflict(_))) =>
        {
            let client = crate::db::connect(&ctx.cfg).await?;
            if control::request_swap(&client, &plan.table.to_string()).await? {
                return Ok(Outcome::SwapRequested);
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    s.swap_ordered = true;
    if s.m.state == "aborting" {
        return Err(Refusal::new(format!(
            "an abort of {} is in progress; it cannot be swapped",
            s.m.table_name
        ))
        .into());
    }
    let (ready, hint, target) = match s.m.blueprint.method {
        Method::Move => (
            Phase::Moved,
            "rows are still to be moved; run `migrate resume --until move` first",
            Phase::Finished,
        ),
        Method::Sync => (
            Phase::Backfilled,
            "rows are still to be copied; run `migrate resume --until backfill` first",
            Phase::Swapped,
        ),
        Method::Attach => (
            Phase::Prepared,
            "the partitioned table is not ready; run `migrate resume --until prepare` first",
            Phase::Finished,
        ),
    };
    if s.m.phase < ready {
        return Err(Refusal::new(format!("{} is at phase {}: {hint}", s.m.table_name, s.m.phase.as_str())).into());
    }
    drive(ctx, &mut s, target).await
}

pub async fn open_unfinished(ctx: &Context, plan: &PlanFile) -> Result<Session> {
    let (client, lock) = connect(ctx, plan).await?;
    let table = plan.table.to_string();
    let Some(m) = control::unfinished(&**client, &table).await? else {
        let hint = match control::latest(&**client, &table).await? {
            Some(m) if m.state == "done" => "; its last migration is done",
            Some(m) if m.state == "aborted" => "; its last migration was aborted",
            _ => "; start one with `migrate apply`",
        };
        return Err(Refusal::new(format!("there is no unfinished migration of {table}{hint}")).into());
    };
    check_same_plan(&m, plan)?;
    Ok(Session::new(client, lock, m))
}

fn check_same_plan(m: &MigrationRow, plan: &PlanFile) -> Result<()> {
    let stored: Option<PlanSpec> = crate::plan_file::parse_spec(&m.plan_source).ok();
    if stored.as_ref() != Some(&plan.spec) {
        return Err(Refusal::new(format!(
            "the unfinished migration of {} was started with a different plan; continue it with that plan (`migrate status` shows it) or abort it",
            m.table_name
        ))
        .into());
    }
    Ok(())
}

/// Runs the phases after the recorded one, up to `until`.
pub async fn drive(ctx: &Context, s: &mut Session, until: Phase) -> Result<Outcome> {
    loop {
        let phase = s.m.phase;
        if phase >= until {
            return Ok(Outcome::Reached(phase));
        }
        if ctx.stopping() {
            return Ok(Outcome::Stopped(phase));
        }
        let id = s.m.id;
        let swap_next = matches!(
            (s.m.blueprint.method, phase, s.m.blueprint.split.is_some()),
            (Method::Move, Phase::Moved, _) | (Method::Sync, Phase::Verified, _) | (Method::Attach, Phase::Prepared, _)
        );
        if swap_next && s.m.blueprint.settings.postpone_swap && !s.swap_ordered {
            if let Flow::Stopped = wait_for_swap(ctx, s).await? {
                return Ok(Outcome::Stopped(phase));
            }
        }
        // pg_stat_activity shows who this session is and what it does.
        let app = format!("migrate {} {}: after {}", s.m.method, s.m.table_name, phase.as_str());
        let _ = s
            .client
            .batch_execute(&format!("SET application_name = {}", crate::sql::quote_literal(&app)))
            .await;
        match crate::method::run_step(ctx, s).await {
            Ok(Flow::Done) => {}
            Ok(Flow::Stopped) => return Ok(Outcome::Stopped(phase)),
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = control::set_error(&**s.client, id, &msg).await;
                crate::hooks::run(
                    s.m.blueprint.settings.hooks.on_failure.as_ref(),
                    "failure",
                    &s.m,
                    Some(&msg),
                )
                .await;
                return Err(e);
            }
        }
        s.m = control::reload(&**s.client, id).await?;
        let hooks = &s.m.blueprint.settings.hooks;
        crate::hooks::run(hooks.after_phase.as_ref(), "after_phase", &s.m, None).await;
        if s.m.phase == Phase::Finished || (s.m.phase == Phase::Swapped && s.m.blueprint.method == Method::Sync) {
            crate::hooks::run(hooks.on_complete.as_ref(), "complete", &s.m, None).await;
        }
    }
}

/// A postponed swap: everything is ready; keep the two sides in step and
/// wait for the operator's `migrate swap`.
async fn wait_for_swap(ctx: &Context, s: &mut Session) -> Result<Flow> {
    let id = s.m.id;
    control::set_waiting(&**s.client, id, true).await?;
    control::event(&**s.client, id, "waiting for swap", "").await?;
    ctx.reporter.phase(
        "ready",
        "everything is ready; waiting for `migrate swap` (the swap is postponed, as the plan says)",
    );
    let mut rounds = 0u32;
    loop {
        if ctx.stopping() {
            control::set_waiting(&**s.client, id, false).await?;
            return Ok(Flow::Stopped);
        }
        if control::swap_requested(&**s.client, id).await? {
            control::set_waiting(&**s.client, id, false).await?;
            control::event(&**s.client, id, "swap requested", "").await?;
            return Ok(Flow::Done);
        }
        rounds += 1;
        // The move method keeps the original small while it waits: rows an
        // UPDATE puts behind the cursor are swept every minute or so.
        if s.m.blueprint.method == Method::Move && rounds.is_multiple_of(30) {
            let m = s.m.clone();
            let mut mover = Mover::new(ctx, &mut s.client, &m, &m.blueprint.old).await?;
            mover.sweep_once().await?;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// attach: break the first partition into proper partitions, online.
pub async fn split(ctx: &Context, plan: &PlanFile) -> Result<Outcome> {
    let (mut client, lock) = connect(ctx, plan).await?;
    let table = plan.table.to_string();
    if plan.spec.method != Method::Attach {
        return Err(Refusal::new(
            "split breaks up the first partition of the attach method; the plan's method is not attach",
        )
        .into());
    }
    let m = match control::unfinished(&**client, &table).await? {
        Some(m) if m.method == "split" => {
            check_same_plan(&m, plan)?;
            m
        }
        Some(m) => {
            return Err(Refusal::new(format!(
                "the {} migration of {table} is not finished (phase {}); finish or abort it first",
                m.method,
                m.phase.as_str()
            ))
            .into())
        }
        None => {
            let Some(attached) = control::latest_done(&**client, &table, "attach").await? else {
                return Err(Refusal::new(format!(
                    "{table} has no finished attach migration whose first partition could be split"
                ))
                .into());
            };
            let attached = attached.blueprint;
            let bp = blueprint::resolve_split(&client, plan, &attached).await?;
            accepted_hazards(&client, &bp).await?;
            control::bootstrap(&mut client).await?;
            let id = control::insert(&**client, &bp, &plan.source).await?;
            control::reload(&**client, id).await?
        }
    };
    let mut s = Session::new(client, lock, m);
    drive(ctx, &mut s, Phase::Finished).await
}

/// sync: back to the retired original after a swap.
pub async fn unswap(ctx: &Context, plan: &PlanFile) -> Result<Outcome> {
    let s = open_unfinished(ctx, plan).await?;
    let bp = s.m.blueprint.clone();
    if bp.method != Method::Sync {
        return Err(Refusal::new(format!(
            "unswap is for the sync method; {} uses {}",
            s.m.table_name,
            bp.method.as_str()
        ))
        .into());
    }
    if s.m.phase != Phase::Swapped {
        return Err(Refusal::new(format!(
            "{} is at phase {}; unswap undoes a swap that happened",
            s.m.table_name,
            s.m.phase.as_str()
        ))
        .into());
    }
    ctx.reporter
        .phase("unswap", &format!("giving {} back to the original table", bp.table));
    let step = crate::method::sync::unswap_step(&bp);
    step.part("unswap")?
        .run(&s.client, &bp.settings, step.name, s.m.id)
        .await?;
    crate::method::abort::validate(&s.client, &bp, &step.part("validate")?.statements).await;
    Ok(Outcome::Reached(Phase::Verified))
}

/// sync: drop the retired original once the operator is sure.
pub async fn cleanup(ctx: &Context, plan: &PlanFile) -> Result<Outcome> {
    let mut s = open_unfinished(ctx, plan).await?;
    if s.m.blueprint.method != Method::Sync || s.m.phase != Phase::Swapped {
        return Err(Refusal::new(format!(
            "cleanup drops the retired original of a swapped sync migration; {} is a {} migration at phase {}",
            s.m.table_name,
            s.m.blueprint.method.as_str(),
            s.m.phase.as_str()
        ))
        .into());
    }
    drive(ctx, &mut s, Phase::Finished).await
}

/// Where `apply` and `resume` stop by default: sync keeps the retired
/// original (for unswap) until `cleanup`.
pub fn default_until(method: Method) -> Phase {
    match method {
        Method::Sync => Phase::Swapped,
        _ => Phase::Finished,
    }
}

/// `abort`: undoes a migration from any phase before the swap, leaving the
/// original table as it was.
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
    crate::method::run_abort(ctx, &mut s).await?;
    Ok(Outcome::Aborted)
}
