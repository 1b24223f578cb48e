//! Abort, before the swap: new rows are routed back to the original, rows
//! move back in batches partition by partition, then the original takes its
//! name back and the partitioned table is dropped. The application keeps
//! working through the view all along.

use super::route::{insert_routing, revert_statements, InsertTarget};
use super::{lock_statement, session_limits};
use crate::blueprint::Blueprint;
use crate::sql::{QualifiedName, Statement};

/// Leaf partitions, in the order rows move back.
pub fn leaves(bp: &Blueprint) -> Vec<QualifiedName> {
    let mut v: Vec<QualifiedName> = bp.partitions.iter().map(|p| bp.table.sibling(p.name.clone())).collect();
    if let Some(d) = &bp.default_partition {
        v.push(bp.table.sibling(d.clone()));
    }
    v
}

/// Step 1: new rows go to the original from now on.
pub fn reroute(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "the view's rule changes: a brief lock",
        &[bp.table.to_string()],
    ));
    s.extend(insert_routing(bp, InsertTarget::Original));
    s
}

/// Step 2's batch, per partition.
pub fn back(bp: &Blueprint, leaf: &QualifiedName) -> Statement {
    super::moving::move_statement(bp, leaf, true, &bp.old.to_string())
}

/// Step 3: the last rows move back and the original takes its name back.
pub fn unroute(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    let mut locks: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    locks.push(bp.table.to_string());
    locks.push(bp.shadow.to_string());
    locks.push(bp.old.to_string());
    locks.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
    s.push(lock_statement("take every lock at once, outer objects first", &locks));
    let w = super::writable_columns(bp);
    s.push(Statement::new(
        "the last rows move back",
        format!(
            "WITH moved AS (DELETE FROM {} RETURNING {w}) INSERT INTO {} ({w}) SELECT {w} FROM moved",
            bp.shadow, bp.old
        ),
    ));
    s.extend(revert_statements(bp));
    s
}

/// Step 4: the empty partitioned table goes, in its own transaction.
pub fn drop_shadow(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "drop the partitioned table and its partitions",
        format!("DROP TABLE IF EXISTS {}", bp.shadow),
    ));
    s
}

/// Step 5: restored foreign keys are validated without blocking writers.
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
