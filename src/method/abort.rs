//! Abort, before the swap: what the methods' aborts share. Each method's
//! own abort lives in its folder; `method::abort_steps` and
//! `method::run_abort` choose it.

use crate::blueprint::Blueprint;
use crate::control;
use crate::exec::tx::Record;
use crate::exec::{Context, Session};
use crate::method::{How, Part, Step};
use crate::sql::Statement;
use anyhow::{bail, Result};
use tokio_postgres::Client;

/// An abort step: it moves no phase, its record is the abort's own.
pub fn step(name: &'static str, summary: &'static str, parts: Vec<Part>) -> Step {
    Step {
        name,
        from: None,
        to: None,
        summary,
        parts,
    }
}

/// The empty partitioned table goes, in its own transaction; the abort is
/// complete.
pub fn drop_step(bp: &Blueprint) -> Step {
    let rels: Vec<String> = bp
        .foreign_keys
        .iter()
        .map(|f| f.referenced.to_string())
        .chain([bp.shadow.to_string()])
        .collect();
    let mut stmts = crate::method::shared::session_limits(bp);
    stmts.push(Statement::new(
        "drop the partitioned table and its partitions",
        format!("DROP TABLE IF EXISTS {}", bp.shadow),
    ));
    step(
        "abort (drop)",
        "its own transaction: the partitioned table goes",
        vec![Part::new("drop", How::Transaction, "last", stmts)
            .recording(Record::Aborted)
            .locking(rels)],
    )
}

/// For a key the run makes NOT NULL: the check it adds first goes, if
/// it is still there.
pub fn key_check_step(bp: &Blueprint) -> Option<Step> {
    let part = crate::method::not_null::abort_part(bp)?;
    Some(step(
        "abort (key check)",
        "before the key is NOT NULL: one short transaction, the check on it goes",
        vec![part],
    ))
}

/// An abort before the prepare, for a key that may be NULL: a check left
/// on it goes (a key made NOT NULL stays so), then the drop step, which
/// has nothing to drop, records the abort as `plan` printed it.
pub async fn before_prepare(ctx: &Context, s: &Session, steps: &[Step]) -> Result<()> {
    let bp = &s.m.blueprint;
    if !bp.key.made_not_null {
        return nothing_changed(ctx, s).await;
    }
    if s.m.phase == crate::control::Phase::Planned {
        run_named(ctx, s, steps, "abort (key check)").await?;
    } else {
        let detail = format!("{} was made NOT NULL and stays so", bp.key.column);
        ctx.reporter.phase("abort", &detail);
        control::event(&**s.client, s.m.id, "abort", &detail).await?;
    }
    run_named(ctx, s, steps, "abort (drop)").await
}

/// Foreign keys restored NOT VALID are validated without blocking writers.
pub fn validate_step(bp: &Blueprint) -> Step {
    step(
        "abort (validate)",
        "after the abort: restored foreign keys are validated; one that cannot be stays NOT VALID",
        vec![Part::new(
            "validate",
            How::Waiting,
            "after the abort, for each restored foreign key",
            validate_fks(bp),
        )],
    )
}

/// Validation of the restored incoming foreign keys (SHARE UPDATE
/// EXCLUSIVE: writers go on).
pub fn validate_fks(bp: &Blueprint) -> Vec<Statement> {
    bp.incoming_fks
        .iter()
        .map(|f| {
            Statement::new(
                "validate a restored foreign key (takes only a SHARE UPDATE EXCLUSIVE lock)",
                format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", f.table, f.name),
            )
        })
        .collect()
}

/// Validates the restored foreign keys; one that fails stays NOT VALID,
/// with a warning. A validation blocks no writer, so it waits for its
/// lock as long as it takes (an autovacuum in its way is cancelled by the
/// server after deadlock_timeout).
pub async fn validate(client: &Client, bp: &Blueprint, statements: &[Statement]) {
    for st in statements.iter().cloned() {
        if let Err(e) = crate::exec::tx::alone(client, &bp.settings, crate::exec::tx::Wait::Unbounded, &[st]).await {
            tracing::warn!(error = %format!("{e:#}"), "a restored foreign key could not be validated; it stays NOT VALID");
        }
    }
}

/// Runs the abort step of that name.
pub async fn run_named(ctx: &Context, s: &Session, steps: &[Step], name: &str) -> Result<()> {
    let Some(step) = steps.iter().find(|st| st.name == name) else {
        bail!("the abort has no step {name}");
    };
    ctx.reporter.phase("abort", step.summary);
    crate::method::run_plain(&s.client, &s.m.blueprint, step, s.m.id).await
}

/// Nothing was changed before this phase: the abort only says so.
pub async fn nothing_changed(ctx: &Context, s: &Session) -> Result<()> {
    ctx.reporter.phase("abort", "nothing was changed yet");
    crate::exec::tx::record(&s.client, s.m.id, &Record::Aborted).await?;
    let _ = control::reload(&**s.client, s.m.id).await?;
    Ok(())
}
