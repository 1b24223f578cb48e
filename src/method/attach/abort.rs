//! The attach method's abort, before the swap: the bound (and a column the
//! tool added) go, then the indexes built for the partitioned table, then
//! the partitioned table.

use super::sql;
use crate::blueprint::Blueprint;
use crate::exec::{Context, Session};
use crate::method::{abort, How, Part, Step};
use anyhow::Result;

pub fn steps(bp: &Blueprint) -> Vec<Step> {
    // A check on a key that may be NULL goes too; a key made NOT NULL
    // stays so.
    let mut parts: Vec<Part> = crate::method::not_null::abort_part(bp).into_iter().collect();
    parts.extend([
        Part::new("constraint", How::Transaction, "first", sql::abort_constraint(bp))
            .locking(vec![bp.table.to_string()]),
        Part::new("indexes", How::Alone, "then", sql::abort_indexes(bp)).locking(vec![bp.table.to_string()]),
    ]);
    vec![
        abort::step(
            "abort (constraint)",
            "the cutoff constraint and the built indexes go",
            parts,
        ),
        abort::drop_step(bp),
    ]
}

pub async fn run(ctx: &Context, s: &Session) -> Result<()> {
    let steps = steps(&s.m.blueprint);
    abort::run_named(ctx, s, &steps, "abort (constraint)").await?;
    abort::run_named(ctx, s, &steps, "abort (drop)").await
}
