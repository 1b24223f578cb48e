//! The swap's tail, shared by the methods: constraint and index names
//! change sides, sequences follow the name, the comment stays, and the
//! sequences catch up before the swap.

use crate::blueprint::Blueprint;
use crate::sql::{quote_literal, QualifiedName, Statement};

/// Renames of unique constraints and indexes between two tables: `from`
/// gives up the original names, `to` takes them.
pub fn rename_keys(bp: &Blueprint, giver: &QualifiedName, taker: &QualifiedName, forward: bool) -> Vec<Statement> {
    let mut s = Vec::new();
    for u in &bp.uniques {
        let (give_to, take_from) = if forward {
            (&u.old_rename, &u.shadow_name)
        } else {
            (&u.shadow_name, &u.old_rename)
        };
        s.push(Statement::new(
            "a unique constraint steps aside",
            format!("ALTER TABLE {giver} RENAME CONSTRAINT {} TO {give_to}", u.name),
        ));
        s.push(Statement::new(
            "the other table's constraint takes the name (ON CONFLICT ON CONSTRAINT keeps working)",
            format!("ALTER TABLE {taker} RENAME CONSTRAINT {take_from} TO {}", u.name),
        ));
    }
    s.extend(rename_indexes(bp, forward));
    s
}

/// Index names between the two tables: forward, the original's indexes
/// step aside and the partitioned table's take their names; backward, the
/// reverse.
pub fn rename_indexes(bp: &Blueprint, forward: bool) -> Vec<Statement> {
    let mut s = Vec::new();
    for i in &bp.indexes {
        let (give_to, take_from) = if forward {
            (&i.old_rename, &i.shadow_name)
        } else {
            (&i.shadow_name, &i.old_rename)
        };
        s.push(Statement::new(
            "an index steps aside",
            format!("ALTER INDEX {} RENAME TO {give_to}", bp.table.sibling(i.name.clone())),
        ));
        s.push(Statement::new(
            "the other table's index takes the name",
            format!(
                "ALTER INDEX {} RENAME TO {}",
                bp.table.sibling(take_from.clone()),
                i.name
            ),
        ));
    }
    s
}

pub fn sequences_to(bp: &Blueprint, owner_table: &QualifiedName) -> Vec<Statement> {
    bp.sequences
        .iter()
        .map(|seq| {
            Statement::new(
                "the sequence belongs to the table that carries the name",
                format!("ALTER SEQUENCE {} OWNED BY {owner_table}.{}", seq.name, seq.column),
            )
        })
        .collect()
}

/// Before the swap, outside its locks: every owned sequence past the
/// highest key `over` holds (rows written with explicit keys included), so
/// the swap transaction need not read the table.
pub fn sequences_catch_up(bp: &Blueprint, over: &QualifiedName) -> Vec<Statement> {
    bp.sequences
        .iter()
        .map(|seq| {
            Statement::new(
                "before the swap: the sequence past every key in the table",
                format!(
                    "SELECT pg_catalog.setval({seq}::regclass, s.m) FROM (SELECT max({col})::bigint AS m FROM {over}) s \
                     WHERE s.m > (SELECT last_value FROM {name})",
                    seq = quote_literal(&seq.name.to_string()),
                    col = seq.column,
                    name = seq.name
                ),
            )
        })
        .collect()
}

/// Locks of the swap and unswap, outer objects first.
pub fn swap_locks(bp: &Blueprint, a: &QualifiedName, b: &QualifiedName) -> Vec<String> {
    let mut v: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    v.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
    v.push(a.to_string());
    v.push(b.to_string());
    v
}

/// The table's comment, kept on whatever now carries the name.
pub fn keep_comment(bp: &Blueprint, kind: &str) -> Option<Statement> {
    bp.comment.as_ref().map(|c| {
        Statement::new(
            "keep the table's comment",
            format!("COMMENT ON {kind} {} IS {}", bp.table, quote_literal(c)),
        )
    })
}

pub fn not_valid(def: &str) -> String {
    if def.contains("NOT VALID") {
        def.to_string()
    } else {
        format!("{def} NOT VALID")
    }
}
