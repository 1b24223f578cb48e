//! Phase 4, swap: one short transaction under the tool's lock timeout.
//! Stragglers move, the partitioned table takes the name, names of
//! constraints and indexes follow, dependent views rebind, the view and its
//! routing go, sequences change owner.

use super::sync::{rename_keys, sequences_to};
use super::{lock_statement, rebind_view, session_limits};
use crate::blueprint::Blueprint;
use crate::sql::{list, quote_literal, Statement};

/// The swap's locks: dependent views, the view, the tables behind it.
pub fn locks(bp: &Blueprint) -> Statement {
    let mut locks: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    locks.push(bp.table.to_string());
    locks.push(bp.shadow.to_string());
    locks.push(bp.old.to_string());
    lock_statement(
        "take every lock of the swap at once, in the order the application takes them: dependent views, the view, then the tables behind it",
        &locks,
    )
}

/// The rows an UPDATE put behind the mover's cursor, found through the
/// row-identity index rather than by reading every emptied page.
pub fn stragglers(bp: &Blueprint) -> Vec<Statement> {
    let w = super::writable_columns(bp);
    let ident = list(&bp.row_identity);
    vec![
        Statement::new(
            "find the last stragglers through the row-identity index, not by reading every emptied page",
            "SET LOCAL enable_seqscan = off",
        ),
        Statement::new(
            "move the rows that an UPDATE put behind the mover's cursor",
            format!(
                "WITH moved AS (DELETE FROM ONLY {old} WHERE ({ident}) IN (SELECT {ident} FROM ONLY {old}) RETURNING {w}) \
                 INSERT INTO {shadow} ({w}) SELECT {w} FROM moved",
                old = bp.old,
                shadow = bp.shadow
            ),
        ),
    ]
}

/// The routing view steps aside, `heir` takes the table's name, dependent
/// views follow it, and the view and its routing go.
pub fn hand_name_to(bp: &Blueprint, heir: &crate::sql::QualifiedName, why: &'static str) -> Vec<Statement> {
    let r = &bp.routing;
    let mut s = vec![
        Statement::new(
            "the view steps aside (dependent views still bind to it)",
            format!("ALTER VIEW {} RENAME TO {}", bp.table, bp.retired_view.name),
        ),
        Statement::new(why, format!("ALTER TABLE {heir} RENAME TO {}", bp.table.name)),
    ];
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    s.push(Statement::new(
        "the view and its rule and triggers go",
        format!("DROP VIEW {}", bp.retired_view),
    ));
    s.push(Statement::new(
        "the routing functions go",
        format!(
            "DROP FUNCTION {}(), {}(), {}()",
            r.insert_function, r.update_function, r.delete_function
        ),
    ));
    s
}

pub fn statements(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(locks(bp));
    s.extend(stragglers(bp));
    s.extend(hand_name_to(bp, &bp.shadow, "the partitioned table takes the name"));
    // The original (renamed) gives up its constraint and index names to the
    // partitioned table, which now carries the table's name.
    s.extend(rename_keys(bp, &bp.old, &bp.table, true));
    s.extend(sequences_to(bp, &bp.table));
    if let Some(c) = &bp.comment {
        s.push(Statement::new(
            "keep the table's comment",
            format!("COMMENT ON TABLE {} IS {}", bp.table, quote_literal(c)),
        ));
    }
    s
}
