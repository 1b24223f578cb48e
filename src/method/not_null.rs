//! A partition key that may be NULL, made NOT NULL before anything else
//! changes (no partition would hold a NULL key, and the move's view and the
//! sync's mirror would fail the application's write of one): a CHECK added
//! NOT VALID under a brief lock, validated while the application reads and
//! writes, then `SET NOT NULL`, whose scan the valid check spares, with the
//! check dropped in the same brief transaction. An abort leaves the column
//! NOT NULL once it is, and drops a check left before that.

use crate::blueprint::{names, Blueprint};
use crate::control::Phase;
use crate::exec::tx::Record;
use crate::exec::Context;
use crate::method::{How, Part, Step};
use crate::sql::{Ident, Statement};
use anyhow::Result;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The CHECK constraint that proves the key has no NULL.
pub fn check(bp: &Blueprint) -> Ident {
    names::key_not_null_check(&bp.table)
}

/// The phase the method's prepare starts from: `constrained` after this
/// step, `planned` for a key that is NOT NULL already.
pub fn prepare_from(bp: &Blueprint) -> Phase {
    if bp.key.made_not_null {
        Phase::Constrained
    } else {
        Phase::Planned
    }
}

/// The step of move and sync, for a key that may be NULL; none otherwise.
pub fn step(bp: &Blueprint) -> Option<Step> {
    if !bp.key.made_not_null {
        return None;
    }
    let mut parts = parts(bp);
    if let Some(last) = parts.last_mut() {
        last.record = Some(Record::Advance(Phase::Planned, Phase::Constrained));
    }
    Some(Step {
        name: "constrain",
        from: Some(Phase::Planned),
        to: Some(Phase::Constrained),
        summary: "the key may be NULL: a brief lock to add a check, its validation while the application reads and writes, then a brief lock to make the key NOT NULL",
        parts,
    })
}

/// The check dropped: once the key is NOT NULL, and by an abort before.
fn drop_check(bp: &Blueprint, why: &'static str) -> Statement {
    Statement::new(
        why,
        format!("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}", bp.table, check(bp)),
    )
}

/// The parts, without a record: attach's constrain step begins with them.
pub fn parts(bp: &Blueprint) -> Vec<Part> {
    if !bp.key.made_not_null {
        return Vec::new();
    }
    let (t, k, c) = (&bp.table, &bp.key.column, check(bp));
    let rels = vec![t.to_string()];
    let mut add = super::shared::session_limits(bp);
    add.push(Statement::new(
        "no new row may have a NULL key from now on: checked for new rows at once, validated for old ones next",
        format!("ALTER TABLE {t} ADD CONSTRAINT {c} CHECK ({k} IS NOT NULL) NOT VALID"),
    ));
    let mut set = super::shared::session_limits(bp);
    set.extend([
        Statement::new(
            "the key NOT NULL: the valid check proves it, so no scan under the lock",
            format!("ALTER TABLE {t} ALTER COLUMN {k} SET NOT NULL"),
        ),
        drop_check(bp, "the check has done its work"),
    ]);
    vec![
        Part::new("not null check", How::Transaction, "unless it exists already", add).locking(rels.clone()),
        Part::new(
            "not null validate",
            How::Alone,
            "then",
            vec![Statement::new(
                "no row has a NULL key: a scan under a lock that lets the application read and write",
                format!("ALTER TABLE {t} VALIDATE CONSTRAINT {c}"),
            )],
        )
        .locking(rels.clone()),
        Part::new("not null", How::Transaction, "then", set).locking(rels),
    ]
}

/// Runs the step's parts: the check unless a stopped run added it, its
/// validation, and the NOT NULL (with move's and sync's record). Nothing
/// for a key that is NOT NULL.
pub async fn run(ctx: &Context, c: &Client, bp: &Blueprint, step: &Step, id: i64) -> Result<()> {
    if !bp.key.made_not_null {
        return Ok(());
    }
    let s = &bp.settings;
    if !super::constraint_on(c, &bp.table, &check(bp)).await? {
        step.part("not null check")?.run(c, s, "constrain", id).await?;
    }
    crate::failpoint::hit("constrain:after-not-null-check");
    ctx.reporter.phase(
        "constrain",
        &format!(
            "validating that no row has a NULL {} while the application reads and writes",
            bp.key.column
        ),
    );
    if let Err(e) = step.part("not null validate")?.run(c, s, "validate", id).await {
        let violated = e
            .chain()
            .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
            .any(|pg| pg.code() == Some(&SqlState::CHECK_VIOLATION));
        if violated {
            return Err(crate::error::Refusal::new(format!(
                "rows of {t} have a NULL {k}, which no partition would hold: give them a key, then `migrate resume`; \
                 meanwhile the check {c} refuses new rows with a NULL {k}, as the partitioned table will (`migrate abort` drops it)",
                t = bp.table,
                k = bp.key.column,
                c = check(bp)
            ))
            .into());
        }
        return Err(e);
    }
    step.part("not null")?.run(c, s, "constrain", id).await
}

/// For an abort before the key is NOT NULL: the check goes, and the
/// application may write a NULL key again.
pub fn abort_part(bp: &Blueprint) -> Option<Part> {
    if !bp.key.made_not_null {
        return None;
    }
    let mut stmts = super::shared::session_limits(bp);
    stmts.push(drop_check(
        bp,
        "the check on the key goes (a key made NOT NULL stays so)",
    ));
    Some(Part::new("not null check", How::Transaction, "first", stmts).locking(vec![bp.table.to_string()]))
}
