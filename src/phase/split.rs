//! Split: breaks the attached first partition into proper partitions
//! online, with the move machinery. In one short transaction the first
//! partition is detached, partitions for its range are created, the
//! partitioned table steps aside and the routing view takes the name over
//! it and the detached partition; rows then move in batches; the swap gives
//! the partitioned table its name back and the emptied first partition is
//! dropped.

use super::route::{routing_statements, view_statements, InsertTarget};
use super::{lock_statement, options_clause, rebind_view, session_limits, writable_columns};
use crate::blueprint::{Blueprint, SplitDef};
use crate::sql::{quote_literal, Statement};

fn def(bp: &Blueprint) -> &SplitDef {
    bp.split.as_ref().expect("a split blueprint has its split part")
}

fn locks(bp: &Blueprint, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    v.push(bp.table.to_string());
    v.extend(extra.iter().cloned());
    v
}

fn partitions(bp: &Blueprint, parent: &crate::sql::QualifiedName) -> Vec<Statement> {
    let owner = crate::sql::quote_ident(&bp.owner);
    let storage = options_clause(&bp.storage);
    let mut s = Vec::new();
    for p in &bp.partitions {
        let name = bp.table.sibling(p.name.clone());
        s.push(Statement::new(
            "a partition for part of the first partition's range",
            format!(
                "CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM ({}) TO ({}){storage}",
                quote_literal(&p.from),
                quote_literal(&p.to)
            ),
        ));
        s.push(Statement::new(
            "the table's owner owns its partitions",
            format!("ALTER TABLE {name} OWNER TO {owner}"),
        ));
    }
    s
}

/// Route: detach, new partitions, the view, in one short transaction.
pub fn route(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "take every lock at once: dependent views, then the partitioned table and its partitions",
        &locks(bp, &[]),
    ));
    s.push(Statement::new(
        "the first partition leaves the partitioned table (its rows stay visible through the view below)",
        format!("ALTER TABLE {} DETACH PARTITION {}", bp.table, bp.old),
    ));
    s.extend(partitions(bp, &bp.table));
    s.push(Statement::new(
        "the partitioned table steps aside for the view",
        format!("ALTER TABLE {} RENAME TO {}", bp.table, bp.shadow.name),
    ));
    s.push(Statement::new(
        "no autovacuum on the first partition while it empties",
        format!("ALTER TABLE {} SET (autovacuum_enabled = false)", bp.old),
    ));
    s.extend(view_statements(bp));
    s.extend(routing_statements(bp, InsertTarget::Shadow));
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    s
}

/// Swap: the partitioned table takes its name back.
pub fn swap(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(super::swap::locks(bp));
    s.extend(super::swap::stragglers(bp));
    s.extend(super::swap::hand_name_to(
        bp,
        &bp.shadow,
        "the partitioned table takes its name back",
    ));
    s
}

/// Abort, before re-attaching: the bound that spares the attach its scan.
pub fn abort_check(bp: &Blueprint) -> Vec<Statement> {
    let d = def(bp);
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "the first partition's bound, so that it can be attached again without a scan",
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} < {}::{}) NOT VALID",
            bp.old,
            d.check,
            bp.key.column,
            quote_literal(&d.cutoff),
            bp.key.type_name
        ),
    ));
    s
}

pub fn abort_validate(bp: &Blueprint) -> Statement {
    Statement::new(
        "validate the bound under a lock that lets reads and writes go on",
        format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", bp.old, def(bp).check),
    )
}

/// Abort: the last rows of the range move back, the view goes, the new
/// partitions go, the first partition is attached again.
pub fn unroute(bp: &Blueprint) -> Vec<Statement> {
    let d = def(bp);
    let mut s = session_limits(bp);
    s.push(super::swap::locks(bp));
    let w = writable_columns(bp);
    s.push(Statement::new(
        "the last rows of the first partition's range move back",
        format!(
            "WITH moved AS (DELETE FROM {shadow} WHERE {k} < {c}::{ty} RETURNING {w}) INSERT INTO {old} ({w}) SELECT {w} FROM moved",
            shadow = bp.shadow,
            k = bp.key.column,
            c = quote_literal(&d.cutoff),
            ty = bp.key.type_name,
            old = bp.old
        ),
    ));
    s.extend(super::swap::hand_name_to(
        bp,
        &bp.shadow,
        "the partitioned table takes its name back",
    ));
    for p in &bp.partitions {
        s.push(Statement::new(
            "an emptied partition of the split goes",
            format!("DROP TABLE {}", bp.table.sibling(p.name.clone())),
        ));
    }
    s.push(Statement::new(
        "the first partition is attached again; its validated bound spares the scan",
        format!(
            "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (MINVALUE) TO ({})",
            bp.table,
            bp.old,
            quote_literal(&d.cutoff)
        ),
    ));
    s.push(Statement::new(
        "the bound is the partition's now",
        format!("ALTER TABLE {} DROP CONSTRAINT {}", bp.old, d.check),
    ));
    s.push(Statement::new(
        "autovacuum as before",
        format!("ALTER TABLE {} RESET (autovacuum_enabled)", bp.old),
    ));
    s
}
