//! The attach method ("partition zero"): no row moves. A CHECK constraint
//! proves that every existing row lies below a cutoff (added NOT VALID,
//! then validated under a lock that lets reads and writes go on), unique
//! indexes that include the key are built concurrently, the partitioned
//! table is created with partitions from the cutoff on, and one short
//! transaction attaches the original as the partition of everything below
//! the cutoff (PostgreSQL skips the scan, the constraint proves the bound)
//! and gives the partitioned table the name.

use crate::blueprint::{AttachDef, Blueprint};
use crate::method::shared::swap::{identity_to, keep_comment, rename_indexes, sequences_to, swap_locks};
use crate::method::shared::{drop_incoming_fks, lock_statement, prepare, rebind_view, session_limits, triggers};
use crate::sql::{list, quote_literal, Statement};

pub fn def(bp: &Blueprint) -> &AttachDef {
    bp.attach.as_ref().expect("an attach blueprint has its attach part")
}

/// List: the logical key column, with the first partition's value as its
/// default; PostgreSQL stores a constant default once, so no row is
/// rewritten (brief strong lock).
pub fn add_column(bp: &Blueprint) -> Vec<Statement> {
    let a = def(bp);
    let Some(ty) = &a.add_column else { return Vec::new() };
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "the logical partition key, every existing row holding the first partition's value, without a rewrite",
        format!(
            "ALTER TABLE {} ADD COLUMN {} {ty} NOT NULL DEFAULT {}",
            bp.table,
            bp.key.column,
            quote_literal(&a.cutoff)
        ),
    ));
    s
}

/// The condition every row of the first partition meets.
fn bound_condition(bp: &Blueprint) -> String {
    let a = def(bp);
    let op = if bp.key.list { "=" } else { "<" };
    format!(
        "{} {op} {}::{}",
        bp.key.column,
        quote_literal(&a.cutoff),
        bp.key.type_name
    )
}

/// Constrain, step 1: the bound, not yet validated (brief strong lock).
pub fn add_check(bp: &Blueprint) -> Vec<Statement> {
    let a = def(bp);
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "every existing row lies in the first partition: checked for new rows at once, validated for old ones next",
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({}) NOT VALID",
            bp.table,
            a.check,
            bound_condition(bp)
        ),
    ));
    s
}

/// The first partition's bound.
fn first_bound(bp: &Blueprint) -> String {
    let a = def(bp);
    if bp.key.list_text {
        // In the key's type, as the constraint that spares the scan reads it.
        format!("FOR VALUES IN ({}::{})", quote_literal(&a.cutoff), bp.key.type_name)
    } else if bp.key.list {
        format!("FOR VALUES IN ({})", quote_literal(&a.cutoff))
    } else {
        format!("FOR VALUES FROM (MINVALUE) TO ({})", quote_literal(&a.cutoff))
    }
}

/// Constrain, step 2: validation scans under SHARE UPDATE EXCLUSIVE, which
/// lets reads and writes go on.
pub fn validate_check(bp: &Blueprint) -> Statement {
    Statement::new(
        "validate the bound: a scan under a lock that lets the application read and write",
        format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", bp.table, def(bp).check),
    )
}

/// Constrain, step 3: the unique keys of the partitioned table, built on
/// the original without blocking writes.
pub fn key_indexes(bp: &Blueprint) -> Vec<Statement> {
    def(bp)
        .key_indexes
        .iter()
        .map(|k| {
            Statement::new(
                "a unique index with the partition key, built concurrently, for the partitioned table's unique key to adopt",
                format!(
                    "CREATE UNIQUE INDEX CONCURRENTLY {} ON {} ({}){}",
                    k.name,
                    bp.table,
                    list(&k.columns),
                    prepare::index_clauses(&k.clauses)
                ),
            )
        })
        .collect()
}

/// Swap: attach, rename, in one short transaction.
pub fn swap(bp: &Blueprint) -> Vec<Statement> {
    let a = def(bp);
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "take every lock of the swap at once: dependent views, the original, the partitioned table",
        &swap_locks(bp, &bp.table, &bp.shadow),
    ));
    s.extend(drop_incoming_fks(
        bp,
        "drop an incoming foreign key, as the plan allows",
    ));
    // PostgreSQL adopts a partition's index for the parent's unique key
    // only when a constraint uses it; otherwise ATTACH would build a new
    // index under its lock. The indexes built concurrently become
    // constraints here, which is instant.
    for (u, k) in bp.uniques.iter().filter(|u| u.key_appended).zip(&a.key_indexes) {
        if u.primary {
            s.push(Statement::new(
                "a table has one primary key: the original's gives way to one on the index built with the key",
                format!("ALTER TABLE {} DROP CONSTRAINT {}", bp.table, u.name),
            ));
            s.push(Statement::new(
                "the index built with the key becomes the primary key, for the partitioned table's to adopt",
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY USING INDEX {}",
                    bp.table, u.old_rename, k.name
                ),
            ));
        } else {
            s.push(Statement::new(
                "the index built with the key becomes a unique constraint, for the partitioned table's to adopt",
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}",
                    bp.table, k.name, k.name
                ),
            ));
        }
    }
    // The partitioned table clones its row triggers to every partition,
    // the original included, which must not have them twice.
    s.extend(triggers::drop_all(
        bp,
        &bp.table,
        "the table's own trigger moves to the partitioned table",
    ));
    // The partitioned table takes the identity before the attach: from
    // PostgreSQL 17 a table with an identity of its own cannot be
    // attached, and on 14 to 16 the first partition keeping its own would
    // hand out the values the parent's hands out.
    s.extend(identity_to(bp, &bp.shadow));
    for i in &bp.identities {
        s.push(Statement::new(
            "the first partition loses its own identity and its sequence (its values stay); the partitioned table's continues past it",
            format!("ALTER TABLE {} ALTER COLUMN {} DROP IDENTITY", bp.table, i.column),
        ));
    }
    s.push(Statement::new(
        "the original becomes the partition of every key below the cutoff; its validated constraint spares the scan",
        format!(
            "ALTER TABLE {} ATTACH PARTITION {} {}",
            bp.shadow,
            bp.table,
            first_bound(bp)
        ),
    ));
    s.push(Statement::new(
        "the partition bound enforces the cutoff from now on",
        format!("ALTER TABLE {} DROP CONSTRAINT {}", bp.table, a.check),
    ));
    s.push(Statement::new(
        "the original takes its partition name",
        format!("ALTER TABLE {} RENAME TO {}", bp.table, bp.old.name),
    ));
    s.push(Statement::new(
        "the partitioned table takes the name",
        format!("ALTER TABLE {} RENAME TO {}", bp.shadow, bp.table.name),
    ));
    for u in &bp.uniques {
        if !(u.primary && u.key_appended) {
            s.push(Statement::new(
                "the first partition's own unique constraint steps aside",
                format!(
                    "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                    bp.old, u.name, u.old_rename
                ),
            ));
        }
        s.push(Statement::new(
            "the partitioned table's constraint takes the name (ON CONFLICT ON CONSTRAINT keeps working)",
            format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                bp.table, u.shadow_name, u.name
            ),
        ));
    }
    s.extend(rename_indexes(bp, true));
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    s.extend(sequences_to(bp, &bp.table));
    s.extend(keep_comment(bp, "TABLE"));
    s.extend(crate::method::shared::hand_publications(bp, &bp.old, &bp.table));
    s.extend(triggers::create_all(bp, &bp.table));
    s
}

/// Abort before the swap: the bound (and a column the tool added) go.
pub fn abort_constraint(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "the bound goes",
        format!("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}", bp.table, def(bp).check),
    ));
    if def(bp).add_column.is_some() {
        s.push(Statement::new(
            "the column the tool added goes (no rewrite)",
            format!("ALTER TABLE {} DROP COLUMN IF EXISTS {}", bp.table, bp.key.column),
        ));
    }
    s
}

pub fn abort_indexes(bp: &Blueprint) -> Vec<Statement> {
    def(bp)
        .key_indexes
        .iter()
        .map(|k| {
            Statement::new(
                "the index built for the partitioned table goes, without blocking writes",
                format!("DROP INDEX CONCURRENTLY IF EXISTS {}", bp.table.sibling(k.name.clone())),
            )
        })
        .collect()
}

/// Prepare: the partitioned table as for the other methods, without the
/// cutoff constraint that LIKE copies from the original (the new
/// partitions lie above the cutoff).
pub fn prepare(bp: &Blueprint) -> Vec<Statement> {
    let mut s = prepare::statements(bp);
    let create = format!("CREATE TABLE {} (LIKE", bp.shadow);
    let at = s
        .iter()
        .position(|st| st.sql.starts_with(&create))
        .map_or(s.len(), |i| i + 1);
    s.insert(
        at,
        Statement::new(
            "LIKE copied the cutoff constraint; the partitioned table must not have it",
            format!("ALTER TABLE {} DROP CONSTRAINT {}", bp.shadow, def(bp).check),
        ),
    );
    s
}
