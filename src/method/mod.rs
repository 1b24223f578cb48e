//! The methods. Each is a folder holding its pure SQL (`sql.rs`) beside
//! its driver (`mod.rs`) and its abort; [`shared`] holds the statement
//! builders more than one method renders, [`batches`] the batch loop
//! that moves or copies rows, and [`not_null`] the parts every method
//! begins with for a key that may be NULL.
//!
//! Every method is one list of [`Step`]s, rendered from the blueprint
//! without I/O: `plan` prints the list, and the runner executes it, each
//! step's statements exactly as rendered. A step moves the migration from
//! one phase to the next; its parts say how their statements run.

pub mod abort;
pub mod attach;
pub mod batches;
pub mod moving;
pub mod not_null;
pub mod shared;
pub mod sync;

#[cfg(test)]
mod lock_order;

use crate::blueprint::{Blueprint, Settings};
use crate::control::Phase;
use crate::exec::tx::{self, Record};
use crate::exec::{Context, Flow, Session};
use crate::plan_file::Method;
use crate::sql::Statement;
use anyhow::{bail, Result};
use serde::Serialize;
use tokio_postgres::Client;

/// How a part of a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// One transaction, sent as one message with the control record.
    Transaction,
    /// Each statement on its own, outside any transaction, under the
    /// plan's lock timeout and no statement timeout.
    Alone,
    /// The same, waiting for locks as long as it takes: for builds
    /// `CONCURRENTLY`, which wait for older transactions on any table and
    /// block nobody meanwhile.
    Waiting,
    /// Each statement on its own, as shown.
    Plain,
    /// Repeated for each batch of heap pages, one transaction per batch;
    /// `$1` and `$2` are the batch's first page and the page after its
    /// last.
    Batches,
    /// Read in one snapshot.
    Snapshot,
}

impl How {
    pub fn describe(self) -> &'static str {
        match self {
            How::Transaction => "one transaction, sent as one message",
            How::Alone => "each statement alone, outside a transaction",
            How::Waiting => "each statement alone, outside a transaction, waiting as long as it takes",
            How::Plain => "each statement on its own",
            How::Batches => "once per batch of heap pages, one transaction each",
            How::Snapshot => "one read-only snapshot",
        }
    }
}

/// A part of a step: statements that run the same way.
#[derive(Clone, Debug)]
pub struct Part {
    /// What the driver knows the part by.
    pub key: &'static str,
    pub how: How,
    /// When the part runs, for `plan`.
    pub when: &'static str,
    pub statements: Vec<Statement>,
    /// The control record the part's transaction writes.
    pub record: Option<Record>,
    /// The relations whose lock holders are named when retries run out.
    pub relations: Vec<String>,
}

impl Part {
    pub fn new(key: &'static str, how: How, when: &'static str, statements: Vec<Statement>) -> Part {
        Part {
            key,
            how,
            when,
            statements,
            record: None,
            relations: Vec::new(),
        }
    }

    pub fn recording(mut self, r: Record) -> Part {
        self.record = Some(r);
        self
    }

    pub fn locking(mut self, relations: Vec<String>) -> Part {
        self.relations = relations;
        self
    }

    /// Exactly what is sent for this part (with the migration's id named
    /// where it is not known).
    pub fn rendered(&self, s: &Settings, id: Option<i64>) -> Vec<Statement> {
        match self.how {
            How::Transaction => tx::message(&self.statements, self.record.as_ref().map(|r| r.statement(id)).as_ref()),
            How::Alone => tx::alone_statements(s, tx::Wait::Bounded, &self.statements),
            How::Waiting => tx::alone_statements(s, tx::Wait::Unbounded, &self.statements),
            How::Plain | How::Batches | How::Snapshot => self.statements.clone(),
        }
    }

    /// Runs a transaction or statements alone; the other kinds (plain
    /// statements among a driver's own reads, batches, snapshots) belong to
    /// the method's driver.
    pub async fn run(&self, client: &Client, s: &Settings, what: &str, id: i64) -> Result<()> {
        match self.how {
            How::Transaction => {
                let rec = self.record.clone().map(|r| (id, r));
                tx::transaction(client, s, what, &self.statements, &self.relations, rec).await
            }
            How::Alone => {
                let policy = crate::db::retry::RetryPolicy::new(s.retries);
                crate::db::retry::retrying(client, policy, what, &self.relations, || {
                    tx::alone(client, s, tx::Wait::Bounded, &self.statements)
                })
                .await
            }
            // No lock timeout to retry after; and a build CONCURRENTLY that
            // failed leaves an invalid index that its driver must drop
            // before building again.
            How::Waiting => tx::alone(client, s, tx::Wait::Unbounded, &self.statements).await,
            other => bail!(
                "{what}: a part that runs {} needs its method's driver",
                other.describe()
            ),
        }
    }
}

/// A step of a method: from one phase to the next.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: &'static str,
    /// The phases it moves the migration from and to; none for the steps
    /// of an abort, which record their own progress.
    pub from: Option<Phase>,
    pub to: Option<Phase>,
    /// How the step runs, in a sentence, for `plan`.
    pub summary: &'static str,
    pub parts: Vec<Part>,
}

impl Step {
    pub fn part(&self, key: &str) -> Result<&Part> {
        match self.parts.iter().find(|p| p.key == key) {
            Some(p) => Ok(p),
            None => bail!("the step {} has no part {key}", self.name),
        }
    }
}

/// Steps run only when the operator asks (abort, unswap), for `plan`.
pub struct Extra {
    pub command: &'static str,
    pub summary: &'static str,
    pub steps: Vec<Step>,
}

/// The method's steps, in order.
pub fn steps(bp: &Blueprint) -> Vec<Step> {
    match (bp.method, bp.split.is_some()) {
        (Method::Move, false) => moving::steps(bp),
        (Method::Move, true) => attach::split::steps(bp),
        (Method::Sync, _) => sync::steps(bp),
        (Method::Attach, _) => attach::steps(bp),
    }
}

/// What the operator may run besides: abort, and the sync method's unswap.
pub fn extras(bp: &Blueprint) -> Vec<Extra> {
    let mut v = Vec::new();
    if bp.method == Method::Sync {
        v.push(Extra {
            command: "unswap",
            summary: "only if you run `migrate unswap` after the swap: back to the original, which the back mirror kept current",
            steps: vec![sync::unswap_step(bp)],
        });
    }
    v.push(Extra {
        command: "abort",
        summary: "only if you run `migrate abort` before the swap: each step that applies at the phase reached",
        steps: abort_steps(bp),
    });
    v
}

/// The steps of the blueprint's abort, for `plan`.
pub fn abort_steps(bp: &Blueprint) -> Vec<Step> {
    match (bp.method, bp.split.is_some()) {
        (Method::Move, false) => moving::abort::steps(bp),
        (Method::Move, true) => attach::split::abort_steps(bp),
        (Method::Sync, _) => sync::abort::steps(bp),
        (Method::Attach, _) => attach::abort::steps(bp),
    }
}

/// Runs the abort of the session's migration, from wherever it stands.
pub async fn run_abort(ctx: &Context, s: &mut Session) -> Result<()> {
    let bp = &s.m.blueprint;
    match (bp.method, bp.split.is_some()) {
        (Method::Move, false) => moving::abort::run(ctx, s).await,
        (Method::Move, true) => attach::split::abort(ctx, s).await,
        (Method::Sync, _) => sync::abort::run(ctx, s).await,
        (Method::Attach, _) => attach::abort::run(ctx, s).await,
    }
}

/// The step that leaves `phase`.
pub fn step_from(bp: &Blueprint, phase: Phase) -> Result<Step> {
    match steps(bp).into_iter().find(|s| s.from == Some(phase)) {
        Some(s) => Ok(s),
        None => bail!(
            "the {} method has no step after phase {}",
            bp.method.as_str(),
            phase.as_str()
        ),
    }
}

/// Runs the step after the recorded phase.
pub async fn run_step(ctx: &Context, s: &mut Session) -> Result<Flow> {
    let step = step_from(&s.m.blueprint, s.m.phase)?;
    ctx.reporter.phase(step.name, step.summary);
    match s.m.blueprint.method {
        // A split moves rows the way the move method does.
        Method::Move => moving::run(ctx, s, &step).await,
        Method::Sync => sync::run(ctx, s, &step).await,
        Method::Attach => attach::run(ctx, s, &step).await,
    }
}

/// Runs every part of a step that needs no driver, in order; the step's
/// own control record is in its last part.
pub async fn run_plain(client: &Client, bp: &Blueprint, step: &Step, id: i64) -> Result<()> {
    for p in &step.parts {
        p.run(client, &bp.settings, step.name, id).await?;
    }
    Ok(())
}

/// Statistics for the partitioned table, then the step's record: how the
/// steps that fill it end.
pub fn analyze_and_record(rel: &crate::sql::QualifiedName, from: Phase, to: Phase) -> Vec<Part> {
    vec![
        Part::new(
            "analyze",
            How::Alone,
            "then",
            vec![Statement::new(
                "statistics for the partitioned table, so the planner knows it from the first query (autovacuum never analyzes a partitioned parent)",
                format!("ANALYZE {rel}"),
            )],
        )
        .locking(vec![rel.to_string()]),
        record_part(from, to),
    ]
}

/// With `throttle.latency`: the probe the budget goes by, beside the
/// batches of a step that moves or copies rows (`crate::latency`).
pub fn latency_probe(bp: &Blueprint) -> Vec<Part> {
    if bp.settings.throttle.latency.is_none() {
        return Vec::new();
    }
    vec![Part::new(
        "latency probe",
        How::Plain,
        "with throttle.latency: twenty times a second on a connection of its own, beside the batches; its first 240 (12 seconds), before the first step changes anything, are the baseline",
        vec![
            Statement::new(
                "a row of its own written and committed, waiting for the WAL flush as the application's writes do: the latency the budget holds",
                crate::latency::PROBE,
            ),
            Statement::new(
                "then the application's statements in flight and the database's transactions: over the baseline, the application's mean transaction time, which a multiple of the baseline allows the probe over it",
                crate::latency::APPLICATION,
            ),
        ],
    )]
}

/// Whether a constraint of that name is on the relation.
pub async fn constraint_on(c: &Client, rel: &crate::sql::QualifiedName, name: &crate::sql::Ident) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
        &[&rel.to_string(), &name.as_str()],
    )
    .await?
    .get(0))
}

/// A part that only writes the step's control record.
pub fn record_part(from: Phase, to: Phase) -> Part {
    Part::new("record", How::Transaction, "last", Vec::new()).recording(Record::Advance(from, to))
}
