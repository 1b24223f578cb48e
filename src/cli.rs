//! Command-line interface: clap types and one function per command.

use crate::control::{self, Phase};
use crate::error::exit;
use crate::exec::{Context, Outcome};
use crate::plan_file::{Method, PlanFile};
use crate::report;
use crate::runner;
use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod fleet;

/// Repartition a live PostgreSQL table with zero downtime.
///
/// The plan file names the table, the partition layout and the method;
/// every command takes it. The control schema `repartition` in the target
/// database records where each migration stands.
#[derive(Parser, Debug)]
#[command(name = "migrate", version, about, long_about = None)]
pub struct Cli {
    /// Connection string (URL or key=value); the libpq PG* variables fill in
    /// what it leaves out.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log format for non-terminal output.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// No progress bar, even on a terminal.
    #[arg(long, global = true)]
    pub quiet: bool,

    /// When half the lock retries are spent, cancel the queries of the
    /// sessions holding the tables.
    #[arg(long, global = true, conflicts_with = "terminate_blockers")]
    pub cancel_blockers: bool,

    /// When half the lock retries are spent, terminate the sessions holding
    /// the tables (also those idle in a transaction).
    #[arg(long, global = true)]
    pub terminate_blockers: bool,

    /// While a command runs a migration, serve its metrics for Prometheus
    /// at http://ADDR/metrics (such as 127.0.0.1:9187).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// While a command runs a migration, write its metrics to this file
    /// every 2 seconds (for node_exporter's textfile collector).
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Setting {
    BatchSize,
    Pause,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Text,
    /// A versioned JSON document (field `version`).
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every statement a run would execute, and what will not survive;
    /// changes nothing.
    Plan {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Refuse (exit code 2) when the plan has warnings: for CI.
        #[arg(long)]
        strict: bool,
    },
    /// Run the migration to the end, or up to a phase.
    Apply {
        plan: PathBuf,
        /// Stop once this phase is done (move: every row moved, the swap left
        /// for a separate step).
        #[arg(long, value_enum)]
        until: Option<Until>,
    },
    /// Continue a stopped migration.
    Resume {
        plan: PathBuf,
        #[arg(long, value_enum)]
        until: Option<Until>,
    },
    /// Perform only the swap (and drop the emptied original), once every row
    /// has moved.
    Swap { plan: PathBuf },
    /// Undo a migration from any phase before the swap.
    Abort { plan: PathBuf },
    /// sync: return to the retired original after a swap; writes made since
    /// the swap are in it.
    Unswap { plan: PathBuf },
    /// sync: drop the retired original and its triggers, ending the
    /// migration.
    Cleanup { plan: PathBuf },
    /// attach: break the first partition into proper partitions online
    /// (resume and abort work on it as on any migration).
    Split { plan: PathBuf },
    /// Pause a running migration at its next batch boundary (from any host).
    Pause { plan: PathBuf },
    /// Continue a paused migration.
    Continue { plan: PathBuf },
    /// Change a throttle setting of a running migration: `batch-size ROWS`
    /// or `pause DURATION` (such as 50ms).
    Set {
        plan: PathBuf,
        #[arg(value_enum)]
        setting: Setting,
        value: String,
    },
    /// Premake partitions up to the plan's horizon and apply its retention;
    /// safe from cron and from two hosts at once. Exit code 5 when the
    /// newest partition is about to run out.
    Maintain {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show the phase, rows moved and remaining, rate and ETA; for a
    /// partitioned table, its partitions.
    Status {
        plan: PathBuf,
        /// Count each partition's rows exactly (reads them all).
        #[arg(long)]
        exact: bool,
        /// Print the status again every few seconds until the migration
        /// is no longer running.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One plan across many databases: `fleet apply PLAN --targets FILE`,
    /// rolled out with --parallel, --canary and --keep-going; each
    /// database's control table keeps its own state.
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Report gaps in range coverage, rows in the default partition,
    /// partitions lacking an index the parent has, and where the partitions
    /// end. Exit code 5 when something needs attention.
    Check {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Until {
    /// attach
    Constrain,
    Prepare,
    /// move
    Route,
    /// move
    Move,
    /// sync
    Backfill,
    /// sync
    Verify,
    Swap,
}

impl Until {
    /// The phase to stop after, checked against the plan's method.
    pub(crate) fn phase(u: Option<Until>, plan: &PlanFile) -> Result<Phase> {
        let method = plan.spec.method;
        let Some(u) = u else {
            return Ok(runner::default_until(method));
        };
        let (phase, methods): (Phase, &[Method]) = match u {
            Until::Constrain => (Phase::Constrained, &[Method::Attach]),
            Until::Prepare => (Phase::Prepared, &[Method::Move, Method::Sync, Method::Attach]),
            Until::Route => (Phase::Routed, &[Method::Move]),
            Until::Move => (Phase::Moved, &[Method::Move]),
            Until::Backfill => (Phase::Backfilled, &[Method::Sync]),
            Until::Verify => (Phase::Verified, &[Method::Sync]),
            Until::Swap => (Phase::Swapped, &[Method::Move, Method::Sync, Method::Attach]),
        };
        if !methods.contains(&method) {
            return Err(crate::error::Refusal::new(format!(
                "the {} method has no phase {}",
                method.as_str(),
                phase.as_str()
            ))
            .into());
        }
        Ok(phase)
    }
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    crate::db::retry::set_blocker_action(match (cli.cancel_blockers, cli.terminate_blockers) {
        (true, _) => crate::db::retry::BlockerAction::Cancel,
        (_, true) => crate::db::retry::BlockerAction::Terminate,
        _ => crate::db::retry::BlockerAction::Wait,
    });
    if let Command::Fleet { command } = cli.command {
        if cli.metrics_listen.is_some() || cli.metrics_textfile.is_some() {
            return Err(crate::error::Refusal::new(
                "--metrics-listen and --metrics-textfile serve one database's migration; a fleet run does not take them (`fleet status --output json` reads every target)",
            )
            .into());
        }
        return fleet::run(command, cli.quiet, stop).await;
    }
    let cfg = crate::db::config(cli.database_url.as_deref(), "migrate")?;
    let metrics = crate::metrics::Options {
        listen: cli.metrics_listen,
        textfile: cli.metrics_textfile.clone(),
    };
    let ctx = Context {
        cfg,
        reporter: crate::progress::reporter(cli.quiet),
        stop,
    };
    match cli.command {
        Command::Plan { plan, output, strict } => plan_command(&ctx, &plan, output, strict).await,
        Command::Apply { plan, until } => {
            let plan = PlanFile::load(&plan)?;
            let until = Until::phase(until, &plan)?;
            migrating(
                &ctx,
                &metrics,
                &plan,
                plan.spec.method,
                runner::apply(&ctx, &plan, until),
            )
            .await
        }
        Command::Resume { plan, until } => {
            let plan = PlanFile::load(&plan)?;
            let until = Until::phase(until, &plan)?;
            migrating(
                &ctx,
                &metrics,
                &plan,
                plan.spec.method,
                runner::resume(&ctx, &plan, until),
            )
            .await
        }
        Command::Swap { plan } => {
            let plan = PlanFile::load(&plan)?;
            migrating(&ctx, &metrics, &plan, plan.spec.method, runner::swap(&ctx, &plan)).await
        }
        Command::Abort { plan } => {
            let plan = PlanFile::load(&plan)?;
            migrating(&ctx, &metrics, &plan, plan.spec.method, runner::abort(&ctx, &plan)).await
        }
        Command::Unswap { plan } => {
            let plan = PlanFile::load(&plan)?;
            migrating(&ctx, &metrics, &plan, plan.spec.method, runner::unswap(&ctx, &plan)).await
        }
        Command::Cleanup { plan } => {
            let plan = PlanFile::load(&plan)?;
            migrating(&ctx, &metrics, &plan, plan.spec.method, runner::cleanup(&ctx, &plan)).await
        }
        Command::Split { plan } => {
            let plan = PlanFile::load(&plan)?;
            migrating(&ctx, &metrics, &plan, Method::Move, runner::split(&ctx, &plan)).await
        }
        Command::Pause { plan } => control_command(&ctx, &plan, Some(true), None, None).await,
        Command::Continue { plan } => control_command(&ctx, &plan, Some(false), None, None).await,
        Command::Set { plan, setting, value } => {
            let (rows, pause) = match setting {
                Setting::BatchSize => match value.parse::<i64>() {
                    Ok(n) if n > 0 => (Some(n), None),
                    _ => {
                        return Err(crate::error::Refusal::new(format!(
                            "batch-size takes a whole number of rows above zero, not `{value}`"
                        ))
                        .into())
                    }
                },
                Setting::Pause => {
                    let ms = crate::plan_file::parse_duration(&value).map_err(crate::error::Refusal::new)?;
                    (None, Some(ms as i64))
                }
            };
            control_command(&ctx, &plan, None, rows, pause).await
        }
        Command::Maintain { plan, output } => {
            let plan = PlanFile::load(&plan)?;
            let done = crate::maintain::maintain(&ctx, &plan).await?;
            match output {
                Output::Json => out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report::maintain_json(&done))?
                )),
                Output::Text => out(&report::maintain_text(&done)),
            }
            // Warnings go to stderr in either format, where cron mails them.
            for w in &done.warnings {
                eprintln!("migrate: WARNING: {w}");
            }
            Ok(done.exit_code)
        }
        Command::Status {
            plan,
            exact,
            output,
            watch,
        } => {
            let plan = PlanFile::load(&plan)?;
            loop {
                let code = status(&ctx, &plan, exact, output).await?;
                if !watch || ctx.stopping() {
                    return Ok(code);
                }
                let client = crate::db::connect(&ctx.cfg).await?;
                if control::unfinished(&client, &plan.table.to_string()).await?.is_none() {
                    return Ok(code);
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                out("\n");
            }
        }
        Command::Fleet { .. } => unreachable!("handled above"),
        Command::Check { plan, output } => {
            let plan = PlanFile::load(&plan)?;
            let client = crate::db::connect(&ctx.cfg).await?;
            let checked = crate::inspect::check(&client, &plan).await?;
            match output {
                Output::Json => out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report::check_json(&checked))?
                )),
                Output::Text => out(&report::check_text(&checked)),
            }
            Ok(if checked.healthy { exit::OK } else { exit::RUNNING_OUT })
        }
    }
}

fn finish(ctx: &Context, method: Method, outcome: Outcome) -> Result<i32> {
    let (code, message) = report::outcome(method, &outcome, "migrate");
    ctx.reporter.done(&message);
    Ok(code)
}

/// pause, continue and set: write the operator's wish into the control
/// table, where the runner reads it between batches.
async fn control_command(
    ctx: &Context,
    plan: &std::path::Path,
    paused: Option<bool>,
    rows: Option<i64>,
    pause_ms: Option<i64>,
) -> Result<i32> {
    let plan = PlanFile::load(plan)?;
    let client = crate::db::connect(&ctx.cfg).await?;
    let table = plan.table.to_string();
    match control::set_controls(&client, &table, paused, rows, pause_ms).await? {
        Some(id) => {
            let what = match (paused, rows, pause_ms) {
                (Some(true), _, _) => "will pause at its next batch boundary".to_string(),
                (Some(false), _, _) => "continues".to_string(),
                (_, Some(n), _) => format!("moves about {n} rows per batch from its next batch on"),
                (_, _, Some(ms)) => format!("pauses {ms}ms between batches from its next batch on"),
                _ => "is unchanged".to_string(),
            };
            out(&format!("migration {id} of {table} {what}\n"));
            Ok(exit::OK)
        }
        None => Err(crate::error::Refusal::new(format!("there is no unfinished migration of {table}")).into()),
    }
}

/// `plan`: resolves the plan, adds the pre-flight findings, prints.
async fn plan_command(ctx: &Context, plan: &std::path::Path, output: Output, strict: bool) -> Result<i32> {
    let plan = PlanFile::load(plan)?;
    let client = crate::db::connect(&ctx.cfg).await?;
    let resolved = crate::preflight::resolve_with_findings(&client, &plan).await?;
    match output {
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report::plan_json(&resolved))?
        )),
        Output::Text => out(&report::plan(&resolved, &crate::db::connect::describe(&ctx.cfg))),
    }
    let failing: Vec<&str> = resolved
        .findings
        .iter()
        .filter(|f| f.fails_strict(&resolved.blueprint.settings.accepted))
        .map(|f| f.code)
        .collect();
    if strict && !failing.is_empty() {
        return Err(crate::error::Refusal::new(format!(
            "the plan has {} warning(s) it does not accept ({}), and --strict turns them into a refusal; once each is understood, name its code under `accept:` in the plan",
            failing.len(),
            failing.join(", ")
        ))
        .into());
    }
    Ok(exit::OK)
}

async fn status(ctx: &Context, plan: &PlanFile, exact: bool, output: Output) -> Result<i32> {
    let client = crate::db::connect(&ctx.cfg).await?;
    let table = plan.table.to_string();
    let latest = control::latest(&client, &table).await?;
    let partitioned: bool = client
        .query_one(
            "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)), false)",
            &[&table],
        )
        .await?
        .get(0);
    let parts = if partitioned {
        crate::inspect::partitions(&client, &plan.table, exact).await?
    } else {
        Vec::new()
    };
    let live = match &latest {
        Some(m) => Some(crate::live::live(&client, m).await?),
        None => None,
    };
    if output == Output::Json {
        let doc = report::status_json(&table, latest.as_ref().zip(live.as_ref()), &parts);
        out(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
        return Ok(exit::OK);
    }
    if !parts.is_empty() {
        out(&report::partitions_text(&parts));
    }
    let (Some(m), Some(live)) = (latest, live) else {
        out(&format!("No migration of {table} is recorded in this database.\n"));
        return Ok(exit::OK);
    };
    out(&report::status(&m, &live));
    Ok(exit::OK)
}

/// Runs a command that runs a migration, serving its metrics meanwhile
/// when asked to; the metrics are up before the run starts.
async fn migrating(
    ctx: &Context,
    metrics: &crate::metrics::Options,
    plan: &PlanFile,
    method: Method,
    run: impl std::future::Future<Output = Result<Outcome>>,
) -> Result<i32> {
    let exporter = crate::metrics::Exporter::start(&ctx.cfg, metrics, &plan.table.to_string()).await?;
    let outcome = run.await;
    if let Some(e) = exporter {
        e.finish().await;
    }
    finish(ctx, method, outcome?)
}

/// First SIGINT/SIGTERM: stop at the next batch boundary. Second: leave
/// now (the open transaction rolls back on disconnect).
fn watch_signals(stop: Arc<AtomicBool>) {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(exit::INTERRUPTED);
            }
            tracing::warn!("stopping at the next batch boundary; signal again to leave at once");
        }
    });
}

/// What a command prints, on stdout. A reader that closed its end of the
/// pipe (`migrate status | head`) ends the command quietly, with the status
/// a shell gives a process that SIGPIPE stopped, rather than a panic; the
/// tool keeps ignoring SIGPIPE itself, so that a server's closed socket is
/// an error it handles, not its end.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(exit::CLOSED_PIPE);
        }
        eprintln!("migrate: cannot write the output: {e}");
        std::process::exit(exit::INTERNAL);
    }
}
