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

/// Before the swap, outside its locks: every owned sequence (and every
/// identity's) past the highest key `over` holds (rows written with
/// explicit keys included), so the swap transaction need not read the
/// table.
pub fn sequences_catch_up(bp: &Blueprint, over: &QualifiedName) -> Vec<Statement> {
    let owned = bp.sequences.iter().map(|s| (&s.name, &s.column));
    let identities = bp.identities.iter().map(|i| (&i.sequence, &i.column));
    owned
        .chain(identities)
        .map(|(name, column)| {
            Statement::new(
                "before the swap: the sequence past every key in the table",
                format!(
                    "SELECT pg_catalog.setval({seq}::regclass, s.m) FROM (SELECT max({column})::bigint AS m FROM {over}) s \
                     WHERE s.m > (SELECT last_value FROM {name})",
                    seq = quote_literal(&name.to_string()),
                ),
            )
        })
        .collect()
}

/// The swap hands each identity to `to`, the table that now carries the
/// name (it has none: `LIKE` copies no identity). The original's sequence
/// steps aside and the new identity takes its name, kind and options; it
/// continues exactly where the original's stands: its `last_value` counts
/// every value handed out, those sessions hold in their caches too, and no
/// value of it is drawn after this transaction (the name reaches the new
/// table from its commit on). A DDL takes no expression for its START, but
/// `setval` does, so no dynamic SQL is needed and the whole stays one
/// message under the swap's locks.
pub fn identity_to(bp: &Blueprint, to: &QualifiedName) -> Vec<Statement> {
    let mut s = Vec::new();
    for i in &bp.identities {
        s.push(Statement::new(
            "the original's identity sequence steps aside",
            format!("ALTER SEQUENCE {} RENAME TO {}", i.sequence, i.stepped_aside.name),
        ));
        s.push(Statement::new(
            "the table that carries the name gets an identity of the same kind and options, under the sequence's name (no scan: the column is NOT NULL)",
            format!(
                "ALTER TABLE {to} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY (SEQUENCE NAME {} INCREMENT BY {} MINVALUE {} MAXVALUE {} {}CYCLE CACHE {})",
                i.column,
                if i.always { "ALWAYS" } else { "BY DEFAULT" },
                i.sequence,
                i.increment,
                i.min,
                i.max,
                if i.cycle { "" } else { "NO " },
                i.cache
            ),
        ));
        s.push(Statement::new(
            "the new identity continues where the original's stopped: no value is handed out twice",
            format!(
                "SELECT pg_catalog.setval({}::regclass, s.last_value, s.is_called) FROM {} s",
                quote_literal(&i.sequence.to_string()),
                i.stepped_aside
            ),
        ));
    }
    s
}

/// Unswap: the identity goes back to the original, whose sequence first
/// moves to where the partitioned table's stands (past every value it
/// handed out); the partitioned table's identity goes (its values stay)
/// and the original's sequence takes its name back.
pub fn identity_back(bp: &Blueprint, from: &QualifiedName) -> Vec<Statement> {
    let mut s = Vec::new();
    for i in &bp.identities {
        s.push(Statement::new(
            "the original's identity continues past every value the partitioned table's handed out",
            format!(
                "SELECT pg_catalog.setval({}::regclass, s.last_value, s.is_called) FROM {} s",
                quote_literal(&i.stepped_aside.to_string()),
                i.sequence
            ),
        ));
        s.push(Statement::new(
            "the partitioned table's identity goes, with its sequence; its values stay",
            format!("ALTER TABLE {from} ALTER COLUMN {} DROP IDENTITY", i.column),
        ));
        s.push(Statement::new(
            "the original's sequence takes its name back",
            format!("ALTER SEQUENCE {} RENAME TO {}", i.stepped_aside, i.sequence.name),
        ));
    }
    s
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
