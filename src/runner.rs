//! Drives a migration from its control record: each call reads where the
//! migration stands and runs the phases after it, so `apply`, `resume` and
//! `swap` are the same loop with different end points.

use crate::blueprint::{self, Blueprint};
use crate::control::{self, MigrationRow, Phase};
use crate::db::advisory::RunnerLock;
use crate::db::retry::{retrying, RetryPolicy};
use crate::error::Refusal;
use crate::mover::{self, Mover};
use crate::phase;
use crate::plan_file::{Method, PlanFile, PlanSpec};
use crate::progress::Reporter;
use crate::sql::Statement;
use anyhow::{bail, Context as _, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_postgres::Client;

/// What every command needs.
pub struct Context {
    pub cfg: tokio_postgres::Config,
    pub reporter: Box<dyn Reporter>,
    /// Set on SIGINT/SIGTERM: stop at the next batch boundary.
    pub stop: Arc<AtomicBool>,
}

impl Context {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached this phase, as asked.
    Reached(Phase),
    /// Stopped by a signal; resumable.
    Stopped(Phase),
    Aborted,
    /// A waiting runner was asked to swap.
    SwapRequested,
}

/// A connection, the runner lock, and the migration's record.
pub struct Session {
    pub client: deadpool_postgres::Object,
    _lock: RunnerLock,
    pub m: MigrationRow,
    /// The operator ordered the swap (`migrate swap`): a postponed swap
    /// does not wait.
    pub swap_ordered: bool,
}

/// What to record in the control table in a phase's own transaction.
pub enum Record {
    Advance(Phase, Phase),
    AbortStep(&'static str),
    Aborted,
}

/// Opens the worker connection and the lock connection, and creates the
/// control schema if needed.
pub async fn connect(ctx: &Context, plan: &PlanFile) -> Result<(deadpool_postgres::Object, RunnerLock)> {
    let pool = crate::db::connect::pool(&ctx.cfg, 2)?;
    let client = pool
        .get()
        .await
        .with_context(|| format!("cannot connect to the {}", crate::db::connect::describe(&ctx.cfg)))?;
    let mut lock_cfg = ctx.cfg.clone();
    lock_cfg.application_name("migrate (runner lock)");
    let lock_client = crate::db::connect(&lock_cfg).await?;
    let lock = RunnerLock::acquire(lock_client, &plan.table.to_string()).await?;
    Ok((client, lock))
}

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
            control::bootstrap(&mut client).await?;
            let id = control::insert(&**client, &resolved.blueprint, &plan.source).await?;
            control::reload(&**client, id).await?
        }
    };
    let mut s = Session {
        client,
        _lock: lock,
        m,
        swap_ordered: false,
    };
    drive(ctx, &mut s, until).await
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
    Ok(Session {
        client,
        _lock: lock,
        m,
        swap_ordered: false,
    })
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
            if let Step::Stopped = wait_for_swap(ctx, s).await? {
                return Ok(Outcome::Stopped(phase));
            }
        }
        // pg_stat_activity shows who this session is and what it does.
        let app = format!("migrate {} {}: after {}", s.m.method, s.m.table_name, phase.as_str());
        let _ = s
            .client
            .batch_execute(&format!("SET application_name = {}", crate::sql::quote_literal(&app)))
            .await;
        let result = match s.m.blueprint.method {
            Method::Move => step_move(ctx, s).await,
            Method::Sync => step_sync(ctx, s).await,
            Method::Attach => crate::attach::step(ctx, s).await,
        };
        match result {
            Ok(Step::Done) => {}
            Ok(Step::Stopped) => return Ok(Outcome::Stopped(phase)),
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
async fn wait_for_swap(ctx: &Context, s: &mut Session) -> Result<Step> {
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
            return Ok(Step::Stopped);
        }
        if control::swap_requested(&**s.client, id).await? {
            control::set_waiting(&**s.client, id, false).await?;
            control::event(&**s.client, id, "swap requested", "").await?;
            return Ok(Step::Done);
        }
        rounds += 1;
        // The move method keeps the original small while it waits: rows an
        // UPDATE puts behind the cursor are swept every minute or so.
        if s.m.blueprint.method == Method::Move && rounds.is_multiple_of(30) {
            let m = s.m.clone();
            let mut mover = Mover::new(ctx, &s.client, &m, &m.blueprint.old).await?;
            mover.sweep_once().await?;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The result of one step of a method.
pub enum Step {
    Done,
    Stopped,
}

async fn step_move(ctx: &Context, s: &mut Session) -> Result<Step> {
    let bp = s.m.blueprint.clone();
    let id = s.m.id;
    let c = &s.client;
    match s.m.phase {
        Phase::Planned if bp.split.is_some() => {
            // A split creates its partitions once the first partition has
            // left the table, in the route transaction.
            ddl(
                c,
                &bp,
                "prepare",
                &[],
                &[],
                id,
                Record::Advance(Phase::Planned, Phase::Prepared),
            )
            .await?;
        }
        Phase::Planned => {
            ctx.reporter.phase(
                "prepare",
                &format!("creating {} with {} partitions", bp.shadow, bp.partitions.len()),
            );
            let rels = prepare_relations(&bp);
            ddl(
                c,
                &bp,
                "prepare",
                &phase::prepare::statements(&bp),
                &rels,
                id,
                Record::Advance(Phase::Planned, Phase::Prepared),
            )
            .await?;
        }
        Phase::Prepared => {
            let (what, stmts) = match bp.split {
                Some(_) => (
                    format!(
                        "detaching {} and putting the view in front of it and {}",
                        bp.old, bp.table
                    ),
                    phase::split::route(&bp),
                ),
                None => (
                    format!("putting the view in front of {}", bp.table),
                    phase::route::statements(&bp),
                ),
            };
            ctx.reporter.phase("route", &what);
            let rels = route_relations(&bp);
            ddl(
                c,
                &bp,
                "route",
                &stmts,
                &rels,
                id,
                Record::Advance(Phase::Prepared, Phase::Routed),
            )
            .await?;
        }
        Phase::Routed => {
            ctx.reporter
                .phase("move", &format!("moving rows from {} to {}", bp.old, bp.shadow));
            let mut mover = Mover::new(ctx, c, &s.m, &bp.old).await?;
            if let mover::Pass::Stopped = mover.run_forward().await? {
                return Ok(Step::Stopped);
            }
            mover::analyze(c, &bp.shadow).await?;
            record(c, id, &Record::Advance(Phase::Routed, Phase::Moved)).await?;
        }
        Phase::Moved => {
            ctx.reporter.phase(
                "swap",
                "moving stragglers, then swapping names in one short transaction",
            );
            let mut mover = Mover::new(ctx, c, &s.m, &bp.old).await?;
            if let mover::Pass::Stopped = mover.sweep_once().await? {
                return Ok(Step::Stopped);
            }
            catch_up_sequences(c, &bp).await?;
            let rels = swap_relations(&bp);
            ddl(
                c,
                &bp,
                "swap",
                &if bp.split.is_some() {
                    phase::split::swap(&bp)
                } else {
                    phase::swap::statements(&bp)
                },
                &rels,
                id,
                Record::Advance(Phase::Moved, Phase::Swapped),
            )
            .await?;
        }
        Phase::Swapped => finish(ctx, c, &bp, id).await?,
        other => bail!("the move method has no phase {}", other.as_str()),
    }
    Ok(Step::Done)
}

/// Moves owned sequences past the highest key before the swap, outside its
/// locks; the table's name still reaches every row then.
pub async fn catch_up_sequences(c: &Client, bp: &Blueprint) -> Result<()> {
    for st in phase::sync::sequences_catch_up(bp, &bp.table) {
        c.batch_execute(&st.sql)
            .await
            .context("cannot move the sequence past the highest key")?;
    }
    Ok(())
}

/// Drops the emptied original after the swap (move and attach's split).
async fn finish(ctx: &Context, c: &Client, bp: &Blueprint, id: i64) -> Result<()> {
    ctx.reporter.phase(
        "finish",
        if bp.settings.keep_old {
            "keeping the emptied original, as the plan says"
        } else {
            "dropping the emptied original"
        },
    );
    let rels: Vec<String> = bp
        .foreign_keys
        .iter()
        .map(|f| f.referenced.to_string())
        .chain([bp.old.to_string()])
        .collect();
    ddl(
        c,
        bp,
        "finish",
        &phase::finish::statements(bp),
        &rels,
        id,
        Record::Advance(Phase::Swapped, Phase::Finished),
    )
    .await
}

async fn step_sync(ctx: &Context, s: &mut Session) -> Result<Step> {
    let bp = s.m.blueprint.clone();
    let id = s.m.id;
    let c = &s.client;
    match s.m.phase {
        Phase::Planned => {
            ctx.reporter.phase(
                "prepare",
                &format!("creating {} and the mirror triggers on {}", bp.shadow, bp.table),
            );
            let mut rels = prepare_relations(&bp);
            rels.push(bp.table.to_string());
            ddl(
                c,
                &bp,
                "prepare",
                &phase::sync::prepare(&bp),
                &rels,
                id,
                Record::Advance(Phase::Planned, Phase::Prepared),
            )
            .await?;
        }
        Phase::Prepared => {
            ctx.reporter
                .phase("backfill", &format!("copying rows from {} to {}", bp.table, bp.shadow));
            let mut mover = Mover::new(ctx, c, &s.m, &bp.table).await?;
            if let mover::Pass::Stopped = mover.run_backfill().await? {
                return Ok(Step::Stopped);
            }
            if !crate::indexer::build_deferred(ctx, c, &bp).await? {
                return Ok(Step::Stopped);
            }
            mover::analyze(c, &bp.shadow).await?;
            record(c, id, &Record::Advance(Phase::Prepared, Phase::Backfilled)).await?;
        }
        Phase::Backfilled => {
            ctx.reporter
                .phase("verify", "comparing row counts and checksums per partition range");
            let out = crate::verify::verify(c, &bp).await?;
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
            control::event(&***c, id, "verify", &detail).await?;
            crate::failpoint::hit("verify:before-record");
            record(c, id, &Record::Advance(Phase::Backfilled, Phase::Verified)).await?;
        }
        Phase::Verified => {
            ctx.reporter.phase(
                "swap",
                "renaming in one short transaction; the original stays in step behind it",
            );
            catch_up_sequences(c, &bp).await?;
            let rels = phase::sync::swap_locks(&bp, &bp.table, &bp.shadow);
            ddl(
                c,
                &bp,
                "swap",
                &phase::sync::swap(&bp),
                &rels,
                id,
                Record::Advance(Phase::Verified, Phase::Swapped),
            )
            .await?;
        }
        Phase::Swapped => {
            ctx.reporter
                .phase("cleanup", &format!("dropping the retired original {}", bp.old));
            let rels = vec![bp.table.to_string(), bp.old.to_string()];
            ddl(
                c,
                &bp,
                "cleanup",
                &phase::sync::cleanup(&bp),
                &rels,
                id,
                Record::Advance(Phase::Swapped, Phase::Finished),
            )
            .await?;
        }
        other => bail!("the sync method has no phase {}", other.as_str()),
    }
    Ok(Step::Done)
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
            control::bootstrap(&mut client).await?;
            let id = control::insert(&**client, &bp, &plan.source).await?;
            control::reload(&**client, id).await?
        }
    };
    let mut s = Session {
        client,
        _lock: lock,
        m,
        swap_ordered: false,
    };
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
    let rels = phase::sync::swap_locks(&bp, &bp.table, &bp.old);
    ddl(
        &s.client,
        &bp,
        "unswap",
        &phase::sync::unswap(&bp),
        &rels,
        s.m.id,
        Record::Advance(Phase::Swapped, Phase::Verified),
    )
    .await?;
    for st in phase::abort::validate_fks(&bp) {
        if let Err(e) = s.client.batch_execute(&st.sql).await {
            tracing::warn!(error = %crate::db::retry::message(&e), "a restored foreign key could not be validated; it stays NOT VALID");
        }
    }
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

fn prepare_relations(bp: &Blueprint) -> Vec<String> {
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

pub fn swap_relations(bp: &Blueprint) -> Vec<String> {
    bp.dependent_views
        .iter()
        .map(|v| v.name.to_string())
        .chain([bp.table.to_string(), bp.shadow.to_string(), bp.old.to_string()])
        .collect()
}

/// Writes a control record in the current transaction.
pub async fn record(client: &Client, id: i64, r: &Record) -> Result<()> {
    match r {
        Record::Advance(from, to) => control::advance(client, id, *from, *to).await,
        Record::AbortStep(step) => control::abort_step(client, id, step, 0, 0).await,
        Record::Aborted => control::aborted(client, id).await,
    }
}

/// Runs statements and their control record in one transaction, retried
/// on lock contention.
pub async fn ddl(
    client: &Client,
    bp: &Blueprint,
    what: &str,
    stmts: &[Statement],
    relations: &[String],
    id: i64,
    rec: Record,
) -> Result<()> {
    let policy = RetryPolicy::new(bp.settings.retries);
    let rec = &rec;
    retrying(client, policy, what, relations, || async move {
        in_tx(client, what, stmts, id, rec).await
    })
    .await
}

async fn in_tx(client: &Client, what: &str, stmts: &[Statement], id: i64, rec: &Record) -> Result<()> {
    client.batch_execute("BEGIN").await?;
    // Strong locks are taken by the phase's LOCK statement and held to the
    // end: from then on is how long the application may wait on them. The
    // LOCK's own wait (bounded by lock_timeout) is recorded too: the
    // application's statements queue behind a waiting strong lock request.
    let mut started = std::time::Instant::now();
    let mut lock_wait = None;
    let res: Result<()> = async {
        for st in stmts {
            let before = std::time::Instant::now();
            client
                .batch_execute(&st.sql)
                .await
                .with_context(|| format!("{what} failed at the step \"{}\"", st.why))?;
            if st.sql.starts_with("LOCK TABLE") {
                started = std::time::Instant::now();
                lock_wait = Some(started - before);
            }
        }
        record(client, id, rec).await
    }
    .await;
    match res {
        Ok(()) => {
            crate::failpoint::hit(&format!("{what}:before-commit"));
            client
                .batch_execute("COMMIT")
                .await
                .with_context(|| format!("{what} could not commit"))?;
            crate::failpoint::hit(&format!("{what}:after-commit"));
            let held_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut detail = format!("{what}: {held_ms:.1} ms");
            match lock_wait {
                Some(w) => {
                    let lock_wait_ms = w.as_secs_f64() * 1000.0;
                    tracing::info!(phase = what, held_ms, lock_wait_ms, "committed");
                    detail.push_str(&format!(" (its LOCK waited {lock_wait_ms:.1} ms)"));
                }
                None => tracing::info!(phase = what, held_ms, "committed"),
            }
            let _ = control::event(client, id, "held", &detail).await;
            Ok(())
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
