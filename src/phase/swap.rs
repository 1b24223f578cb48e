//! Phase 4, swap: one short transaction under the tool's lock timeout.
//! Stragglers move, the partitioned table takes the name, names of
//! constraints and indexes follow, dependent views rebind, the view and its
//! routing go, sequences change owner.

use super::{lock_statement, rebind_view, session_limits};
use crate::blueprint::Blueprint;
use crate::sql::{list, quote_literal, Statement};

pub fn statements(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    let mut locks: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    locks.push(bp.table.to_string());
    locks.push(bp.shadow.to_string());
    locks.push(bp.old.to_string());
    s.push(lock_statement(
        "take every lock of the swap at once, in the order the application takes them: dependent views, the view, then the tables behind it",
        &locks,
    ));
    s.push(Statement::new(
        "find the last stragglers through the row-identity index, not by reading every emptied page",
        "SET LOCAL enable_seqscan = off",
    ));
    let w = super::writable_columns(bp);
    let ident = list(&bp.row_identity);
    s.push(Statement::new(
        "move the rows that an UPDATE put behind the mover's cursor",
        format!(
            "WITH moved AS (DELETE FROM ONLY {old} WHERE ({ident}) IN (SELECT {ident} FROM ONLY {old}) RETURNING {w}) \
             INSERT INTO {shadow} ({w}) SELECT {w} FROM moved",
            old = bp.old,
            shadow = bp.shadow
        ),
    ));
    s.push(Statement::new(
        "the view steps aside (dependent views still bind to it)",
        format!("ALTER VIEW {} RENAME TO {}", bp.table, bp.retired_view.name),
    ));
    s.push(Statement::new(
        "the partitioned table takes the name",
        format!("ALTER TABLE {} RENAME TO {}", bp.shadow, bp.table.name),
    ));
    for u in &bp.uniques {
        s.push(Statement::new(
            "the original's constraint steps aside",
            format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                bp.old, u.name, u.old_rename
            ),
        ));
        s.push(Statement::new(
            "the new constraint takes the original's name (ON CONFLICT ON CONSTRAINT keeps working)",
            format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                bp.table, u.shadow_name, u.name
            ),
        ));
    }
    for i in &bp.indexes {
        s.push(Statement::new(
            "the original's index steps aside",
            format!(
                "ALTER INDEX {} RENAME TO {}",
                bp.table.sibling(i.name.clone()),
                i.old_rename
            ),
        ));
        s.push(Statement::new(
            "the new index takes the original's name",
            format!(
                "ALTER INDEX {} RENAME TO {}",
                bp.table.sibling(i.shadow_name.clone()),
                i.name
            ),
        ));
    }
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    let r = &bp.routing;
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
    for seq in &bp.sequences {
        s.push(Statement::new(
            "the sequence now belongs to the new table, so dropping the original cannot take it along",
            format!("ALTER SEQUENCE {} OWNED BY {}.{}", seq.name, bp.table, seq.column),
        ));
        s.push(Statement::new(
            "make sure the sequence is past every key in the table",
            format!(
                "SELECT pg_catalog.setval({seq}::regclass, s.m) FROM (SELECT max({col})::bigint AS m FROM {table}) s \
                 WHERE s.m > (SELECT last_value FROM {name})",
                seq = quote_literal(&seq.name.to_string()),
                col = seq.column,
                table = bp.table,
                name = seq.name
            ),
        ));
    }
    if let Some(c) = &bp.comment {
        s.push(Statement::new(
            "keep the table's comment",
            format!("COMMENT ON TABLE {} IS {}", bp.table, quote_literal(c)),
        ));
    }
    s
}
