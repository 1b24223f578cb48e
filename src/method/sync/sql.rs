//! The sync method's statements: the application keeps using the original table; row
//! triggers mirror every write into the partitioned copy; a backfill copies
//! the rest; a verification compares both; the swap is a rename in one
//! short transaction, after which triggers mirror writes back into the
//! retired original so that `unswap` can return to it without losing one.
//!
//! The backfill locks the rows it copies (`FOR SHARE`) in its own
//! transaction, so a concurrent UPDATE or DELETE of one of them waits for
//! the batch and then mirrors against the committed copy: a row deleted
//! meanwhile never comes back, a row whose key changed never exists twice,
//! and the mirror never meets a duplicate.

use crate::blueprint::Blueprint;
use crate::method::shared::swap::{
    identity_back, identity_to, keep_comment, not_valid, rename_keys, sequences_to, swap_locks,
};
use crate::method::shared::triggers;
use crate::method::shared::{
    drop_incoming_fks, drop_tool_policy, force_row_security, hand_publications, lock_in_mode, lock_statement,
    overriding, prepare, rebind_view, restore_incoming_fks, session_limits, settable_columns, tool_policy,
    writable_columns,
};
use crate::sql::{list, QualifiedName, Statement};

fn dollar(body: &str) -> String {
    format!("$mirror$\n{body}\n$mirror$")
}

/// A mirror function. Under row-level security it runs as the table's
/// owner (`SECURITY DEFINER`), whom the policies do not bind on the side
/// not under the name: the mirror copies every change whole, whichever
/// policies let the application's role see or write.
fn function(bp: &Blueprint, name: &QualifiedName, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql{} AS {}",
        if bp.row_security.enabled {
            " SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
        } else {
            ""
        },
        dollar(body)
    )
}

/// `t.id = OLD.id AND t.ts = OLD.ts`: the row of OLD in the other table.
fn same_row(bp: &Blueprint) -> String {
    let mut cols: Vec<_> = bp.row_identity.iter().collect();
    if !cols.contains(&&bp.key.column) {
        cols.push(&bp.key.column);
    }
    cols.iter()
        .map(|c| format!("t.{c} = OLD.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn insert_new(bp: &Blueprint, target: &str, upsert: bool) -> String {
    let w = writable_columns(bp);
    let values = list(bp.writable_columns().map(|c| format!("NEW.{}", c.name)));
    let conflict = if upsert {
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            list(&bp.row_identity),
            list(settable_columns(bp).map(|c| format!("{n} = EXCLUDED.{n}", n = c.name)))
        )
    } else {
        String::new()
    };
    format!(
        "INSERT INTO {target} ({w}){} VALUES ({values}){conflict}",
        overriding(bp)
    )
}

/// The body of a row trigger that mirrors writes into `target`.
/// An UPDATE is mirrored as an UPDATE of the other table's row, and
/// inserted only where that row is not there yet: like the application's
/// own UPDATE, it asks a foreign key's referenced row for no lock when the
/// referencing columns keep their values. (A DELETE and INSERT would, and
/// a session deleting the referenced row, whose cascade waits for this
/// one's row, would deadlock with it.) An identity ALWAYS column can take
/// no value from an UPDATE: where the application changed it (`SET id =
/// DEFAULT`), the row is deleted and inserted again.
fn mirror_body(bp: &Blueprint, target: &str, upsert: bool) -> String {
    let ins = insert_new(bp, target, upsert);
    let del = format!("DELETE FROM {target} AS t WHERE {}", same_row(bp));
    let set = list(settable_columns(bp).map(|c| format!("{n} = NEW.{n}", n = c.name)));
    let upd = format!(
        "UPDATE {target} AS t SET {set} WHERE {};\n    IF NOT FOUND THEN\n      {ins};\n    END IF",
        same_row(bp)
    );
    let fixed: Vec<_> = bp
        .writable_columns()
        .filter(|c| c.identity.as_ref().is_some_and(|i| i.always))
        .collect();
    let update = if fixed.is_empty() {
        upd
    } else {
        format!(
            "IF ({}) IS NOT DISTINCT FROM ({}) THEN\n    {upd};\n    ELSE\n    {del};\n    {ins};\n    END IF",
            list(fixed.iter().map(|c| format!("NEW.{}", c.name))),
            list(fixed.iter().map(|c| format!("OLD.{}", c.name)))
        )
    };
    format!(
        "BEGIN\n  IF TG_OP = 'INSERT' THEN\n    {ins};\n  ELSIF TG_OP = 'UPDATE' THEN\n    {update};\n  ELSE\n    {del};\n  END IF;\n  RETURN NULL;\nEND"
    )
}

/// Forward mirror, original to partitioned; part of prepare and unswap.
pub fn forward_mirror(bp: &Blueprint) -> Vec<Statement> {
    let m = &bp.mirror;
    let owner = crate::sql::quote_ident(&bp.owner);
    vec![
        Statement::new(
            "mirror every row write on the original into the partitioned table",
            function(bp, &m.function, &mirror_body(bp, &bp.shadow.to_string(), false)),
        ),
        Statement::new(
            "mirror TRUNCATE too",
            function(
                bp,
                &m.truncate_function,
                &format!("BEGIN\n  TRUNCATE {};\n  RETURN NULL;\nEND", bp.shadow),
            ),
        ),
        Statement::new(
            "the table's owner owns the mirror",
            format!("ALTER FUNCTION {}() OWNER TO {owner}", m.function),
        ),
        Statement::new(
            "the table's owner owns the mirror",
            format!("ALTER FUNCTION {}() OWNER TO {owner}", m.truncate_function),
        ),
        Statement::new(
            "fire the mirror in the application's own transaction",
            format!(
                "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
                m.trigger, bp.table, m.function
            ),
        ),
        Statement::new(
            "and for TRUNCATE",
            format!(
                "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                m.truncate_trigger, bp.table, m.truncate_function
            ),
        ),
    ]
}

fn drop_forward(bp: &Blueprint, on: &QualifiedName) -> Vec<Statement> {
    let m = &bp.mirror;
    vec![
        Statement::new("the forward mirror goes", format!("DROP TRIGGER {} ON {on}", m.trigger)),
        Statement::new(
            "the forward mirror goes",
            format!("DROP TRIGGER {} ON {on}", m.truncate_trigger),
        ),
        Statement::new(
            "the forward mirror goes",
            format!("DROP FUNCTION {}(), {}()", m.function, m.truncate_function),
        ),
    ]
}

/// Back mirror, partitioned to retired; installed by the swap.
fn back_mirror(bp: &Blueprint) -> Vec<Statement> {
    let m = &bp.mirror;
    let owner = crate::sql::quote_ident(&bp.owner);
    // A row moving between partitions fires DELETE and INSERT, in either
    // order: the insert upserts by identity, the delete matches the old key.
    vec![
        Statement::new(
            "mirror every write on the partitioned table back into the retired original, so that unswap loses nothing",
            function(bp, &m.back_function, &mirror_body(bp, &bp.old.to_string(), true)),
        ),
        Statement::new(
            "mirror TRUNCATE back too",
            function(
                bp,
                &m.back_truncate_function,
                &format!("BEGIN\n  TRUNCATE {};\n  RETURN NULL;\nEND", bp.old),
            ),
        ),
        Statement::new(
            "the table's owner owns the mirror",
            format!("ALTER FUNCTION {}() OWNER TO {owner}", m.back_function),
        ),
        Statement::new(
            "the table's owner owns the mirror",
            format!("ALTER FUNCTION {}() OWNER TO {owner}", m.back_truncate_function),
        ),
        Statement::new(
            "fire the back mirror in the application's own transaction (on every partition)",
            format!(
                "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
                m.back_trigger, bp.table, m.back_function
            ),
        ),
        Statement::new(
            "and for TRUNCATE",
            format!(
                "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                m.back_truncate_trigger, bp.table, m.back_truncate_function
            ),
        ),
    ]
}

fn drop_back(bp: &Blueprint, on: &QualifiedName) -> Vec<Statement> {
    let m = &bp.mirror;
    vec![
        Statement::new(
            "the back mirror goes",
            format!("DROP TRIGGER {} ON {on}", m.back_trigger),
        ),
        Statement::new(
            "the back mirror goes",
            format!("DROP TRIGGER {} ON {on}", m.back_truncate_trigger),
        ),
        Statement::new(
            "the back mirror goes",
            format!("DROP FUNCTION {}(), {}()", m.back_function, m.back_truncate_function),
        ),
    ]
}

/// Phase prepare: the partitioned table, then the mirror.
pub fn prepare(bp: &Blueprint) -> Vec<Statement> {
    let mut s = prepare::statements(bp);
    // Autovacuum, woken by the backfill's inserts, would take each
    // partition's lock that its index builds, the ANALYZE and the swap's
    // LOCK need, each waiting until it gives way; the swap turns it back on.
    s.extend(crate::method::moving::sql::partitions_fill_quietly(bp));
    let policy = tool_policy(bp, &bp.table);
    // The lock is taken once, in the strongest mode the transaction needs
    // on the original: a CREATE POLICY after a SHARE ROW EXCLUSIVE would
    // upgrade it, waiting for a session that holds a row lock and
    // blocking that session's next write, a deadlock.
    s.push(if policy.is_empty() {
        lock_in_mode(
            "the mirror's triggers need a brief lock on the original (writers wait, readers do not)",
            &[bp.table.to_string()],
            "SHARE ROW EXCLUSIVE",
        )
    } else {
        lock_statement(
            "the mirror's triggers and the tool's policy need a brief lock on the original (its policy needs the strongest)",
            &[bp.table.to_string()],
        )
    });
    s.extend(forward_mirror(bp));
    // The backfill and the verification read the original from now on.
    s.extend(policy);
    s
}

/// Phase swap: renames in one short transaction; the back mirror starts.
pub fn swap(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        if bp.foreign_keys.is_empty() {
            "take every lock of the swap at once: dependent views, then the original, then the partitioned table"
        } else {
            "take every lock of the swap at once: the tables the foreign keys reference, dependent views, then the original, then the partitioned table"
        },
        &sync_swap_locks(bp, &bp.table, &bp.shadow),
    ));
    s.extend(drop_incoming_fks(
        bp,
        "drop an incoming foreign key, as the plan allows (unswap restores it)",
    ));
    s.extend(hand_fks(bp, &bp.table, &bp.shadow));
    s.extend(drop_forward(bp, &bp.table));
    s.push(Statement::new(
        "the original retires, kept in step from now on",
        format!("ALTER TABLE {} RENAME TO {}", bp.table, bp.old.name),
    ));
    s.push(Statement::new(
        "the partitioned table takes the name",
        format!("ALTER TABLE {} RENAME TO {}", bp.shadow, bp.table.name),
    ));
    s.extend(rename_keys(bp, &bp.old, &bp.table, true));
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    s.extend(sequences_to(bp, &bp.table));
    s.extend(identity_to(bp, &bp.table));
    s.extend(keep_comment(bp, "TABLE"));
    s.extend(move_force(bp, &bp.old, &bp.table));
    s.extend(hand_publications(bp, &bp.old, &bp.table));
    s.extend(triggers::disable_all(bp, &bp.old));
    s.extend(triggers::create_all(bp, &bp.table));
    s.extend(back_mirror(bp));
    // The partitions are locked already: catalog updates, within the swap.
    s.extend(crate::method::moving::sql::partitions_vacuum_again(bp));
    s
}

/// Only the table under the name carries the foreign keys; the other
/// copy follows it through the mirror. Were both to cascade, a session
/// deleting a referenced row could cascade into the copy first, then wait
/// for the application's row under the name, whose update the mirror
/// carries into the copy's row the cascade already holds: a deadlock the
/// application never had. The copy's foreign keys are added per partition
/// before the swap ([`partition_fks`]); here the parent's adopts them
/// without a scan, and the table giving up the name drops its own.
fn hand_fks(bp: &Blueprint, from: &QualifiedName, to: &QualifiedName) -> Vec<Statement> {
    bp.foreign_keys
        .iter()
        .flat_map(|f| {
            [
                Statement::new(
                    "the partitioned table's foreign key, adopting its partitions' validated ones (no scan)",
                    format!("ALTER TABLE {to} ADD CONSTRAINT {} {}", f.name, f.definition),
                ),
                Statement::new(
                    "the original, retiring, gives up its foreign key: the back mirror carries the cascades into it",
                    format!("ALTER TABLE {from} DROP CONSTRAINT {}", f.name),
                ),
            ]
        })
        .collect()
}

/// The swap's and unswap's locks: the tables the foreign keys reference
/// first (the order of a cascade, parent before child), then as for every
/// method.
fn sync_swap_locks(bp: &Blueprint, a: &QualifiedName, b: &QualifiedName) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for f in &bp.foreign_keys {
        let r = f.referenced.to_string();
        if !v.contains(&r) {
            v.push(r);
        }
    }
    v.extend(swap_locks(bp, a, b));
    v
}

pub fn swap_step_locks(bp: &Blueprint) -> Vec<String> {
    sync_swap_locks(bp, &bp.table, &bp.shadow)
}

pub fn unswap_step_locks(bp: &Blueprint) -> Vec<String> {
    sync_swap_locks(bp, &bp.table, &bp.old)
}

/// Before each swap, each partition of the copy takes the original's
/// foreign keys, NOT VALID (a short lock on the partition and the
/// referenced table; skipped where a run cut short already added it):
/// until now the copy had none, so that the mirror's insert of a row not
/// yet copied asked the referenced row for no lock.
pub fn partition_fks(bp: &Blueprint) -> Vec<Statement> {
    leaf_fks(bp)
        .map(|(leaf, f)| {
            Statement::new(
                "a partition takes the foreign key, NOT VALID, unless it has it already",
                format!(
                    "DO $fk$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {}::regclass AND conname = {}) \
                     THEN ALTER TABLE {leaf} ADD CONSTRAINT {} {}; END IF; END $fk$",
                    crate::sql::quote_literal(&leaf.to_string()),
                    crate::sql::quote_literal(f.name.as_str()),
                    f.name,
                    not_valid(&f.definition)
                ),
            )
        })
        .collect()
}

/// Then each is validated: a scan under a lock that lets writers go on.
pub fn validate_partition_fks(bp: &Blueprint) -> Vec<Statement> {
    leaf_fks(bp)
        .map(|(leaf, f)| {
            Statement::new(
                "validate it (SHARE UPDATE EXCLUSIVE: writers go on)",
                format!("ALTER TABLE {leaf} VALIDATE CONSTRAINT {}", f.name),
            )
        })
        .collect()
}

/// Each partition of the copy with each of the original's foreign keys.
fn leaf_fks(bp: &Blueprint) -> impl Iterator<Item = (QualifiedName, &crate::blueprint::ForeignKeyDef)> {
    bp.leaves()
        .into_iter()
        .flat_map(move |leaf| bp.foreign_keys.iter().map(move |f| (leaf.clone(), f)))
}

/// After an unswap, the original's foreign keys it took back.
pub fn validate_original_fks(bp: &Blueprint) -> Vec<Statement> {
    bp.foreign_keys
        .iter()
        .map(|f| {
            Statement::new(
                "validate a foreign key the original took back (takes only a SHARE UPDATE EXCLUSIVE lock)",
                format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", bp.table, f.name),
            )
        })
        .collect()
}

/// FORCE ROW LEVEL SECURITY goes with the name: off on the table the
/// mirror writes into, on for the one the application uses.
fn move_force(bp: &Blueprint, from: &QualifiedName, to: &QualifiedName) -> Vec<Statement> {
    if !(bp.row_security.enabled && bp.row_security.forced) {
        return Vec::new();
    }
    vec![force_row_security(from, false), force_row_security(to, true)]
}

/// `unswap`: back to the original, which the back mirror kept current.
pub fn unswap(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        if bp.foreign_keys.is_empty() {
            "take every lock of the unswap at once: dependent views, then the partitioned table, then the retired original"
        } else {
            "take every lock of the unswap at once: the tables the foreign keys reference, dependent views, then the partitioned table, then the retired original"
        },
        &sync_swap_locks(bp, &bp.table, &bp.old),
    ));
    s.extend(bp.foreign_keys.iter().flat_map(|f| {
        [
            Statement::new(
                "the partitioned table, stepping aside, gives up its foreign key: the mirror carries its cascades from now on",
                format!("ALTER TABLE {} DROP CONSTRAINT {}", bp.table, f.name),
            ),
            Statement::new(
                "the original takes its foreign key back, NOT VALID (instant; validated afterwards, without blocking writers)",
                format!("ALTER TABLE {} ADD CONSTRAINT {} {}", bp.old, f.name, not_valid(&f.definition)),
            ),
        ]
    }));
    s.extend(drop_back(bp, &bp.table));
    s.push(Statement::new(
        "the partitioned table steps aside",
        format!("ALTER TABLE {} RENAME TO {}", bp.table, bp.shadow.name),
    ));
    s.push(Statement::new(
        "the original takes its name back",
        format!("ALTER TABLE {} RENAME TO {}", bp.old, bp.table.name),
    ));
    s.extend(rename_keys(bp, &bp.shadow, &bp.table, false));
    for v in &bp.dependent_views {
        s.push(rebind_view(v));
    }
    s.extend(sequences_to(bp, &bp.table));
    s.extend(identity_back(bp, &bp.shadow));
    s.extend(restore_incoming_fks(bp));
    s.extend(move_force(bp, &bp.shadow, &bp.table));
    s.extend(hand_publications(bp, &bp.shadow, &bp.table));
    s.extend(triggers::drop_all(
        bp,
        &bp.shadow,
        "the table's triggers leave the partitioned table, which only the tool writes again",
    ));
    s.extend(triggers::restore_all(bp, &bp.table));
    s.extend(forward_mirror(bp));
    s
}

/// `cleanup`: the retired original and the back mirror go.
pub fn cleanup(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "the back mirror's triggers go from every partition: lock the tree at once, parent first",
        &[bp.table.to_string(), bp.old.to_string()],
    ));
    s.extend(drop_back(bp, &bp.table));
    s.extend(drop_tool_policy(bp, &bp.table));
    s.push(Statement::new(
        "drop the retired original",
        format!("DROP TABLE {}", bp.old),
    ));
    s
}

/// Abort before the swap: the mirror goes first (the application stops
/// paying for it), then the partitioned table.
pub fn abort(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "the mirror's triggers go: a brief lock",
        &[bp.table.to_string()],
    ));
    s.extend(drop_forward(bp, &bp.table));
    s.extend(drop_tool_policy(bp, &bp.table));
    s
}

/// For each range of the original (its partition's number, as the
/// verification numbers them), the page by which 95 in 100 of the rows a
/// sample of the original's pages found lie; `$1` is the sample's percent
/// of pages. Not the last page: the new version of an updated row lies
/// at the heap's end, and a few of those would hold a range back to it.
pub fn last_pages(bp: &Blueprint) -> Statement {
    Statement::new(
        "where each range's rows end in the original but for a few moved by updates, from a sample of its pages",
        format!(
            "SELECT {bucket}, (percentile_disc(0.95) WITHIN GROUP (ORDER BY (t.ctid::text::point)[0]))::bigint \
             FROM ONLY {table} AS t TABLESAMPLE SYSTEM ($1) GROUP BY 1",
            bucket = super::verify::bucket_expr(bp),
            table = bp.table
        ),
    )
}
