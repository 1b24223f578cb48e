//! `migrate fleet …`: one plan across the databases a targets file names.

use super::{out, Output, Until};
use crate::error::{exit, Refusal};
use crate::fleet::{self, Action, Rollout};
use crate::plan_file::PlanFile;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct On {
    /// The plan, the same for every target.
    pub plan: PathBuf,
    /// The targets: a file with a name and a connection string per line
    /// (`${VAR}` from the environment), or `-` for standard input.
    #[arg(long, value_name = "FILE")]
    pub targets: PathBuf,
}

#[derive(Args, Debug)]
pub struct RolloutArgs {
    /// Targets run at once.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Run the first K targets alone first; the rest start only when all
    /// of them succeeded.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub canary: u16,
    /// Keep starting targets after one failed or was refused.
    #[arg(long)]
    pub keep_going: bool,
    /// Run a target again, from its control table, after its connection was
    /// lost (a server restart, a network break), up to this many times.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub retries: u32,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl RolloutArgs {
    fn rollout(&self) -> Rollout {
        Rollout {
            parallel: self.parallel as usize,
            canary: self.canary as usize,
            keep_going: self.keep_going,
            retries: self.retries,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Plan every target (read-only, a few at once) and print one table:
    /// verdict, size, estimated duration. The fleet's CI dry run.
    Plan {
        #[command(flatten)]
        on: On,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Refuse (exit code 2) when a target has warnings its plan does not
        /// accept.
        #[arg(long)]
        strict: bool,
        /// Targets planned at once.
        #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
    },
    /// Start or continue the migration on every target, up to a phase;
    /// finished targets are skipped.
    Apply {
        #[command(flatten)]
        on: On,
        #[arg(long, value_enum)]
        until: Option<Until>,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Continue every target's unfinished migration.
    Resume {
        #[command(flatten)]
        on: On,
        #[arg(long, value_enum)]
        until: Option<Until>,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// The swap on every target whose rows have all moved.
    Swap {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Undo the unfinished migration of every target (before its swap).
    Abort {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Premake partitions and apply retention on every target.
    Maintain {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// One line per target: state, phase, rows moved, rate, ETA, throttle,
    /// last error; and a summary line.
    Status {
        #[command(flatten)]
        on: On,
        /// Print it again every few seconds while a runner works on a
        /// target.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Targets read at once.
        #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
    },
}

pub async fn run(command: FleetCommand, quiet: bool, stop: Arc<AtomicBool>) -> Result<i32> {
    let (name, on, action, rollout) = match command {
        FleetCommand::Plan {
            on,
            output,
            strict,
            parallel,
        } => return plan(&on, output, strict, parallel as usize).await,
        FleetCommand::Status {
            on,
            watch,
            output,
            parallel,
        } => return status(&on, watch, output, parallel as usize, &stop).await,
        FleetCommand::Apply { on, until, rollout } => {
            let plan = PlanFile::load(&on.plan)?;
            let until = Until::phase(until, &plan)?;
            ("apply", on, Action::Apply(until), rollout)
        }
        FleetCommand::Resume { on, until, rollout } => {
            let plan = PlanFile::load(&on.plan)?;
            let until = Until::phase(until, &plan)?;
            ("resume", on, Action::Resume(until), rollout)
        }
        FleetCommand::Swap { on, rollout } => ("swap", on, Action::Swap, rollout),
        FleetCommand::Abort { on, rollout } => ("abort", on, Action::Abort, rollout),
        FleetCommand::Maintain { on, rollout } => ("maintain", on, Action::Maintain, rollout),
    };
    let plan = PlanFile::load(&on.plan)?;
    let targets = fleet::targets::load(&on.targets)?;
    let board = crate::progress::Board::new(quiet);
    let ended = fleet::roll_out(&targets, &plan, action, rollout.rollout(), stop, &board).await?;
    let code = fleet::exit_code(&ended);
    match rollout.output {
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&crate::report::fleet::rollout_json(name, &ended, code))?
        )),
        Output::Text => out(&crate::report::fleet::rollout_text(name, &ended)),
    }
    Ok(code)
}

async fn plan(on: &On, output: Output, strict: bool, parallel: usize) -> Result<i32> {
    let plan = PlanFile::load(&on.plan)?;
    let targets = fleet::targets::load(&on.targets)?;
    let planned = fleet::plan_all(&targets, &plan, parallel).await?;
    let table = plan.table.to_string();
    match output {
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&crate::report::fleet::plan_json(&table, &planned))?
        )),
        Output::Text => out(&crate::report::fleet::plan_text(&table, &planned)),
    }
    use fleet::PlanVerdict as V;
    let count = |f: fn(&V) -> bool| planned.iter().filter(|p| f(&p.verdict)).count();
    let unreachable = count(|v| matches!(v, V::Unreachable(_)));
    let refused = count(|v| matches!(v, V::Refused(_)));
    let warned = count(|v| matches!(v, V::Warnings { failing, .. } if !failing.is_empty()));
    if unreachable > 0 {
        return Ok(exit::FLEET_FAILED);
    }
    if refused > 0 {
        return Ok(exit::REFUSED);
    }
    if strict && warned > 0 {
        return Err(Refusal::new(format!(
            "{warned} target(s) have warnings the plan does not accept, and --strict turns them into a refusal; once each is understood, name its code under `accept:` in the plan"
        ))
        .into());
    }
    Ok(exit::OK)
}

async fn status(on: &On, watch: bool, output: Output, parallel: usize, stop: &AtomicBool) -> Result<i32> {
    let plan = PlanFile::load(&on.plan)?;
    let targets = fleet::targets::load(&on.targets)?;
    let table = plan.table.to_string();
    loop {
        let seen = fleet::status_all(&targets, &plan, parallel).await?;
        match output {
            Output::Json => out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&crate::report::fleet::status_json(&table, &seen))?
            )),
            Output::Text => out(&crate::report::fleet::status_text(&table, &seen)),
        }
        if !watch || !fleet::any_running(&seen) || stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(exit::OK);
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        out("\n");
    }
}
