//! One plan across many databases. The fleet keeps no state of its own:
//! each target's control table says where its migration stands, so a
//! fleet command run again resumes every target from there and skips the
//! finished ones. This module rolls a command out (parallelism, canary,
//! the stop at the first failure, retries of a target whose server went
//! away) and gathers what `fleet plan` and `fleet status` show.

pub mod targets;

use crate::control::{self, MigrationRow, Phase};
use crate::error::{exit, Refusal};
use crate::exec::Context;
use crate::inspect::Live;
use crate::plan_file::PlanFile;
use crate::progress::Board;
use anyhow::{Context as _, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub use targets::Target;

/// How a command is rolled out over the targets.
#[derive(Clone, Copy, Debug)]
pub struct Rollout {
    /// Targets run at once.
    pub parallel: usize,
    /// The first targets that run alone; the rest start only when each of
    /// them succeeded.
    pub canary: usize,
    /// Start the remaining targets after a failure, too.
    pub keep_going: bool,
    /// Times a target is run again after its connection was lost (a
    /// server restarting, a network break): it resumes from its control
    /// table.
    pub retries: u32,
}

/// What a rolled-out command does on each target.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Start the migration or continue the unfinished one, up to a phase.
    Apply(Phase),
    Resume(Phase),
    Swap,
    Abort,
    Maintain,
}

/// How a target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Done,
    /// `maintain`: the partitions run out within one period.
    Attention,
    Refused,
    Failed,
    Interrupted,
    NotStarted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Done => "done",
            Verdict::Attention => "attention",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
            Verdict::Interrupted => "interrupted",
            Verdict::NotStarted => "not started",
        }
    }

    /// Stops the rollout of further targets, unless `--keep-going`.
    fn stops_rollout(self) -> bool {
        matches!(self, Verdict::Refused | Verdict::Failed)
    }
}

/// One target's end.
#[derive(Clone, Debug)]
pub struct Ended {
    pub name: String,
    pub verdict: Verdict,
    pub message: String,
    /// Runs of the command on this target: 1, or more after lost
    /// connections.
    pub attempts: u32,
    pub seconds: f64,
}

/// The fleet's exit code: interrupted before failed, failed before refused,
/// refused before attention.
pub fn exit_code(ended: &[Ended]) -> i32 {
    let any = |v: Verdict| ended.iter().any(|e| e.verdict == v);
    if any(Verdict::Interrupted) {
        exit::INTERRUPTED
    } else if any(Verdict::Failed) {
        exit::FLEET_FAILED
    } else if any(Verdict::Refused) {
        exit::REFUSED
    } else if any(Verdict::Attention) {
        exit::RUNNING_OUT
    } else {
        exit::OK
    }
}

/// Runs the action on every target under the rollout's rules; returns one
/// end per target, in the targets' order.
pub async fn roll_out(
    targets: &[Target],
    plan: &PlanFile,
    action: Action,
    rollout: Rollout,
    stop: Arc<AtomicBool>,
    board: &Board,
) -> Result<Vec<Ended>> {
    let configs = configs(targets)?;
    let canary = rollout.canary.min(targets.len());
    let mut ended = Vec::new();
    let mut halt: Option<String> = None;
    let waves: [&[usize]; 2] = [
        &(0..canary).collect::<Vec<_>>(),
        &(canary..targets.len()).collect::<Vec<_>>(),
    ];
    for (w, wave) in waves.into_iter().enumerate() {
        let mut queue = wave.iter().copied();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < rollout.parallel.max(1) && halt.is_none() && !stop.load(Ordering::Relaxed) {
                let Some(i) = queue.next() else { break };
                let ctx = Context {
                    cfg: configs[i].clone(),
                    reporter: board.reporter(&targets[i].name),
                    stop: stop.clone(),
                };
                let name = targets[i].name.clone();
                let span = tracing::info_span!("fleet", target = %name);
                running.push(one(ctx, name, plan, action, rollout.retries).instrument(span));
            }
            let Some(e) = running.next().await else { break };
            if e.verdict.stops_rollout() && !rollout.keep_going && halt.is_none() {
                halt = Some(format!("not started: {} ended {} first", e.name, e.verdict.as_str()));
            }
            ended.push(e);
        }
        let why = match (&halt, stop.load(Ordering::Relaxed)) {
            (_, true) => Some("not started: the fleet run was interrupted".to_string()),
            (Some(h), _) => Some(h.clone()),
            (None, false) => None,
        };
        for i in queue {
            ended.push(Ended {
                name: targets[i].name.clone(),
                verdict: Verdict::NotStarted,
                message: why.clone().unwrap_or_default(),
                attempts: 0,
                seconds: 0.0,
            });
        }
        // The canary must succeed as a whole before the rest start, even
        // with --keep-going.
        if w == 0 && canary > 0 && halt.is_none() {
            if let Some(bad) = ended
                .iter()
                .find(|e| !matches!(e.verdict, Verdict::Done | Verdict::Attention))
            {
                halt = Some(format!(
                    "not started: the canary {} ended {}",
                    bad.name,
                    bad.verdict.as_str()
                ));
            }
        }
    }
    ended.sort_by_key(|e| targets.iter().position(|t| t.name == e.name));
    Ok(ended)
}

/// Each target's connection settings; one fleet run uses one TLS setting
/// for all its targets (the connector is the process's), so targets that
/// ask for different ones are refused before anything runs.
pub fn configs(targets: &[Target]) -> Result<Vec<tokio_postgres::Config>> {
    let mut tls: Option<(String, String)> = None;
    let mut out = Vec::new();
    for t in targets {
        let this = crate::db::connect::tls_setting(Some(&t.conn))
            .map_err(|e| Refusal::new(format!("target {}: {e:#}", t.name)))?;
        match &tls {
            Some((first, setting)) if *setting != this => {
                return Err(Refusal::new(format!(
                    "targets {first} and {} ask for different TLS settings (sslmode, sslrootcert); one fleet run uses one: split the targets by TLS setting",
                    t.name
                ))
                .into())
            }
            Some(_) => {}
            None => tls = Some((t.name.clone(), this)),
        }
        out.push(
            crate::db::config(Some(&t.conn), "migrate")
                .map_err(|e| Refusal::new(format!("target {}: {e:#}", t.name)))?,
        );
    }
    Ok(out)
}

/// Runs the action on one target, again after a lost connection while
/// retries are left.
async fn one(ctx: Context, name: String, plan: &PlanFile, action: Action, retries: u32) -> Ended {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = act(&ctx, plan, action).await;
        let (verdict, message) = match result {
            Ok((code, message)) => (
                match code {
                    exit::OK => Verdict::Done,
                    exit::RUNNING_OUT => Verdict::Attention,
                    exit::INTERRUPTED => Verdict::Interrupted,
                    _ => Verdict::Failed,
                },
                message,
            ),
            Err(e) if lost_connection(&e) && attempts <= retries && !ctx.stopping() => {
                let wait = Duration::from_secs(1 << attempts.min(5));
                let message = format!(
                    "{e:#}; the connection was lost: running it again in {} s ({} of {retries})",
                    wait.as_secs(),
                    attempts
                );
                tracing::warn!("{message}");
                ctx.reporter.phase("retry", &message);
                let until = Instant::now() + wait;
                while Instant::now() < until && !ctx.stopping() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if !ctx.stopping() {
                    continue;
                }
                (Verdict::Interrupted, format!("{e:#}; interrupted before it ran again"))
            }
            Err(e) => (
                match crate::error::exit_code(&e) {
                    exit::REFUSED => Verdict::Refused,
                    exit::INTERRUPTED => Verdict::Interrupted,
                    _ => Verdict::Failed,
                },
                format!("{e:#}"),
            ),
        };
        if verdict != Verdict::Done {
            tracing::warn!("{}: {message}", verdict.as_str());
        }
        ctx.reporter.done(&message);
        return Ended {
            name,
            verdict,
            message,
            attempts,
            seconds: started.elapsed().as_secs_f64(),
        };
    }
}

/// Whether an error is the loss of the server (a restart, a crash, a
/// network break) rather than anything the command decided.
pub fn lost_connection(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut from_postgres = false;
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            // A server restarting removes its socket file for a moment.
            let socket_gone = from_postgres && io.kind() == K::NotFound;
            if socket_gone
                || matches!(
                    io.kind(),
                    K::ConnectionRefused
                        | K::ConnectionReset
                        | K::ConnectionAborted
                        | K::NotConnected
                        | K::BrokenPipe
                        | K::UnexpectedEof
                        | K::TimedOut
                )
            {
                return true;
            }
        }
        let pg = match cause.downcast_ref::<deadpool_postgres::PoolError>() {
            Some(deadpool_postgres::PoolError::Backend(pg)) => Some(pg),
            Some(deadpool_postgres::PoolError::Timeout(_)) => return true,
            _ => cause.downcast_ref::<tokio_postgres::Error>(),
        };
        if let Some(pg) = pg {
            from_postgres = true;
            // admin_shutdown, crash_shutdown, cannot_connect_now, and the
            // connection exceptions.
            let code = pg.code().map(|c| c.code()).unwrap_or_default();
            if pg.is_closed()
                || matches!(code, "57P01" | "57P02" | "57P03")
                || code.starts_with("08")
                || pg.to_string().starts_with("timeout waiting for server")
            {
                return true;
            }
        }
    }
    false
}

/// The action on one target, skipping what its control table says is done.
async fn act(ctx: &Context, plan: &PlanFile, action: Action) -> Result<(i32, String)> {
    let table = plan.table.to_string();
    let (unfinished, latest) = {
        let client = crate::db::connect(&ctx.cfg).await?;
        (
            control::unfinished(&client, &table).await?,
            control::latest(&client, &table).await?,
        )
    };
    let finished = unfinished.is_none() && latest.as_ref().is_some_and(|m| m.state == "done");
    let method = plan.spec.method;
    let outcome = match action {
        Action::Apply(_) | Action::Resume(_) | Action::Swap if finished => {
            return Ok((exit::OK, format!("already done: {table} is partitioned")));
        }
        Action::Apply(until) => crate::runner::apply(ctx, plan, until).await?,
        Action::Resume(until) => crate::runner::resume(ctx, plan, until).await?,
        Action::Swap => crate::runner::swap(ctx, plan).await?,
        Action::Abort if unfinished.is_none() => {
            if finished {
                return Err(Refusal::new(format!(
                    "the migration of {table} is finished; abort undoes a migration only before the swap"
                ))
                .into());
            }
            return Ok((exit::OK, "nothing to abort: no unfinished migration".into()));
        }
        Action::Abort => crate::runner::abort(ctx, plan).await?,
        Action::Maintain => {
            let done = crate::maintain::maintain(ctx, plan).await?;
            let mut said: Vec<String> = crate::report::maintain_text(&done)
                .lines()
                .map(str::to_string)
                .collect();
            said.extend(done.warnings.iter().map(|w| format!("WARNING: {w}")));
            return Ok((done.exit_code, said.join("; ")));
        }
    };
    Ok(crate::report::outcome(method, &outcome, "migrate fleet"))
}

/// What `fleet plan` found on one target.
pub struct Planned {
    pub name: String,
    pub verdict: PlanVerdict,
    /// The migration recorded there, if any: state and phase.
    pub migration: Option<(String, Phase)>,
    pub bytes: Option<i64>,
    pub estimated_rows: Option<i64>,
    /// Rows per second measured by earlier batches in that database.
    pub measured_rate: Option<f64>,
}

pub enum PlanVerdict {
    Ready,
    /// Warnings: the failing ones' codes (not accepted by the plan), and
    /// the accepted ones'.
    Warnings {
        failing: Vec<&'static str>,
        accepted: Vec<&'static str>,
    },
    Refused(String),
    Unreachable(String),
}

/// Plans every target, read-only, a few at once; in the targets' order.
pub async fn plan_all(targets: &[Target], plan: &PlanFile, parallel: usize) -> Result<Vec<Planned>> {
    let configs = configs(targets)?;
    let work = targets.iter().zip(configs).map(|(t, cfg)| async move {
        plan_one(&t.name, &cfg, plan)
            .await
            .unwrap_or_else(|e| not_planned(&t.name, &e, None, None))
    });
    Ok(futures_util::stream::iter(work)
        .buffered(parallel.max(1))
        .collect()
        .await)
}

/// A target `plan` could not plan: refused, or unreachable for any other
/// error.
fn not_planned(
    name: &str,
    e: &anyhow::Error,
    migration: Option<(String, Phase)>,
    measured_rate: Option<f64>,
) -> Planned {
    Planned {
        name: name.to_string(),
        verdict: if crate::error::exit_code(e) == exit::REFUSED {
            PlanVerdict::Refused(format!("{e:#}"))
        } else {
            PlanVerdict::Unreachable(format!("{e:#}"))
        },
        migration,
        bytes: None,
        estimated_rows: None,
        measured_rate,
    }
}

async fn plan_one(name: &str, cfg: &tokio_postgres::Config, plan: &PlanFile) -> Result<Planned> {
    let client = crate::db::connect(cfg).await?;
    let table = plan.table.to_string();
    let migration = control::latest(&client, &table).await?.map(|m| (m.state, m.phase));
    let measured_rate = crate::preflight::measured_rate(&client).await?;
    let resolved = match crate::preflight::resolve_with_findings(&client, plan).await {
        Ok(r) => r,
        Err(e) => return Ok(not_planned(name, &e, migration, measured_rate)),
    };
    let accepted = &resolved.blueprint.settings.accepted;
    let warnings = resolved
        .findings
        .iter()
        .filter(|f| f.level == crate::findings::Level::Warning);
    let failing: Vec<&'static str> = warnings
        .clone()
        .filter(|f| f.fails_strict(accepted))
        .map(|f| f.code)
        .collect();
    let accepted: Vec<&'static str> = warnings.filter(|f| !f.fails_strict(accepted)).map(|f| f.code).collect();
    Ok(Planned {
        name: name.to_string(),
        verdict: if failing.is_empty() && accepted.is_empty() {
            PlanVerdict::Ready
        } else {
            PlanVerdict::Warnings { failing, accepted }
        },
        migration,
        bytes: Some(resolved.info.bytes),
        estimated_rows: Some(resolved.info.estimated_rows.max(0.0) as i64),
        measured_rate,
    })
}

/// What `fleet status` read from one target.
pub struct Seen {
    pub name: String,
    pub state: FleetState,
    pub migration: Option<(MigrationRow, Live)>,
    pub error: Option<String>,
}

/// A target's place in the rollout, as its control table and the runner's
/// lock show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetState {
    Done,
    /// sync: swapped, the retired original kept until `cleanup`.
    Swapped,
    /// A runner is attached and working.
    Running,
    /// A runner is attached and waits (paused, or for the swap).
    Waiting,
    /// Unfinished, no runner, no error: resumable.
    Stopped,
    /// Unfinished, no runner, the last run ended with an error.
    Failed,
    Aborted,
    NotStarted,
    Unreachable,
}

impl FleetState {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetState::Done => "done",
            FleetState::Swapped => "swapped",
            FleetState::Running => "running",
            FleetState::Waiting => "waiting",
            FleetState::Stopped => "stopped",
            FleetState::Failed => "failed",
            FleetState::Aborted => "aborted",
            FleetState::NotStarted => "not started",
            FleetState::Unreachable => "unreachable",
        }
    }

    pub const ALL: [FleetState; 9] = [
        FleetState::Done,
        FleetState::Swapped,
        FleetState::Running,
        FleetState::Waiting,
        FleetState::Stopped,
        FleetState::Failed,
        FleetState::Aborted,
        FleetState::NotStarted,
        FleetState::Unreachable,
    ];
}

/// Reads every target's migration, a few at once; in the targets' order.
pub async fn status_all(targets: &[Target], plan: &PlanFile, parallel: usize) -> Result<Vec<Seen>> {
    let configs = configs(targets)?;
    let work = targets.iter().zip(configs).map(|(t, cfg)| async move {
        match status_one(&cfg, plan).await {
            Ok(migration) => Seen {
                name: t.name.clone(),
                state: state_of(migration.as_ref()),
                migration,
                error: None,
            },
            Err(e) => Seen {
                name: t.name.clone(),
                state: FleetState::Unreachable,
                migration: None,
                error: Some(format!("{e:#}")),
            },
        }
    });
    Ok(futures_util::stream::iter(work)
        .buffered(parallel.max(1))
        .collect()
        .await)
}

async fn status_one(cfg: &tokio_postgres::Config, plan: &PlanFile) -> Result<Option<(MigrationRow, Live)>> {
    let client = crate::db::connect(cfg).await?;
    let Some(m) = control::latest(&client, &plan.table.to_string())
        .await
        .context("cannot read the control table")?
    else {
        return Ok(None);
    };
    let live = crate::live::live(&client, &m)
        .await
        .context("cannot read the runner's lock and the rows left")?;
    Ok(Some((m, live)))
}

fn state_of(m: Option<&(MigrationRow, Live)>) -> FleetState {
    let Some((m, live)) = m else {
        return FleetState::NotStarted;
    };
    match m.state.as_str() {
        "done" => FleetState::Done,
        "aborted" => FleetState::Aborted,
        _ if live.runner.is_some() && (m.paused || m.waiting_for_swap) => FleetState::Waiting,
        _ if live.runner.is_some() => FleetState::Running,
        _ if m.last_error.is_some() => FleetState::Failed,
        _ if m.phase == Phase::Swapped && m.blueprint.method == crate::plan_file::Method::Sync => FleetState::Swapped,
        _ => FleetState::Stopped,
    }
}

/// Whether `fleet status --watch` has more to watch.
pub fn any_running(seen: &[Seen]) -> bool {
    seen.iter()
        .any(|s| matches!(s.state, FleetState::Running | FleetState::Waiting))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(v: &[Verdict]) -> Vec<Ended> {
        v.iter()
            .map(|&verdict| Ended {
                name: String::new(),
                verdict,
                message: String::new(),
                attempts: 1,
                seconds: 0.0,
            })
            .collect()
    }

    #[test]
    fn exit_codes() {
        use Verdict::*;
        assert_eq!(exit_code(&ended(&[Done, Done])), exit::OK);
        assert_eq!(exit_code(&ended(&[Done, Attention])), exit::RUNNING_OUT);
        assert_eq!(exit_code(&ended(&[Done, Refused, NotStarted])), exit::REFUSED);
        assert_eq!(exit_code(&ended(&[Refused, Failed])), exit::FLEET_FAILED);
        assert_eq!(exit_code(&ended(&[Failed, Interrupted, NotStarted])), exit::INTERRUPTED);
    }

    #[test]
    fn a_closed_socket_is_a_lost_connection_and_a_refusal_is_not() {
        let io = |kind| anyhow::Error::new(std::io::Error::new(kind, "said"));
        assert!(lost_connection(
            &io(std::io::ErrorKind::ConnectionReset).context("moving rows")
        ));
        assert!(!lost_connection(&anyhow::Error::new(Refusal::new("no"))));
        // A hook or an archive file that is missing is not the server.
        assert!(!lost_connection(&io(std::io::ErrorKind::NotFound)));
    }
}
