//! The execution layer under the methods' drivers: the context every
//! command shares, the session a run holds (its connection, the runner
//! lock and the migration's record), and the one transaction executor
//! ([`tx`]). It knows nothing of the methods, the runner or the CLI.

pub mod tx;

use crate::control::{MigrationRow, Phase};
use crate::db::advisory::RunnerLock;
use crate::plan_file::PlanFile;
use crate::progress::Reporter;
use anyhow::{Context as _, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use tx::Record;

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

/// Whether a step ran to its end or was stopped by a signal.
pub enum Flow {
    Done,
    Stopped,
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

impl Session {
    pub fn new(client: deadpool_postgres::Object, lock: RunnerLock, m: MigrationRow) -> Session {
        Session {
            client,
            _lock: lock,
            m,
            swap_ordered: false,
        }
    }
}

/// Opens the worker connection and the lock connection.
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
