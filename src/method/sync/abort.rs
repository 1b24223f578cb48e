//! The sync method's abort, before the swap: the mirror goes first (the
//! application stops paying for it), then the partitioned table.

use super::sql;
use crate::blueprint::Blueprint;
use crate::control::Phase;
use crate::exec::tx::Record;
use crate::exec::{Context, Session};
use crate::method::{abort, How, Part, Step};
use anyhow::Result;

pub fn steps(bp: &Blueprint) -> Vec<Step> {
    let mut v: Vec<Step> = abort::key_check_step(bp).into_iter().collect();
    v.extend([
        abort::step(
            "abort (mirror)",
            "one short transaction, from the prepare on: the mirror triggers go",
            vec![Part::new("mirror", How::Transaction, "once", sql::abort(bp))
                .recording(Record::AbortStep("unmirrored"))
                .locking(vec![bp.table.to_string()])],
        ),
        abort::drop_step(bp),
    ]);
    v
}

pub async fn run(ctx: &Context, s: &Session) -> Result<()> {
    let steps = steps(&s.m.blueprint);
    if s.m.phase < Phase::Prepared {
        return abort::before_prepare(ctx, s, &steps).await;
    }
    if s.m.abort_step.is_none() {
        abort::run_named(ctx, s, &steps, "abort (mirror)").await?;
    }
    abort::run_named(ctx, s, &steps, "abort (drop)").await
}
