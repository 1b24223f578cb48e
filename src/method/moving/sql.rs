//! The move method's own statements. Route: in one short transaction the
//! original steps aside and the routing view takes its name. Swap: one
//! short transaction under the tool's lock timeout: stragglers move, the
//! partitioned table takes the name, names of constraints and indexes
//! follow, dependent views rebind, the view and its routing go, sequences
//! change owner. Finish: the emptied original is dropped in its own
//! transaction after the swap (or kept, as the plan says); dropping it
//! removes its foreign keys' triggers from the referenced tables, which
//! takes a lock there, but no application statement waits on the emptied
//! table, so this wait can form no cycle with the application.

use crate::blueprint::Blueprint;
use crate::method::shared::routing::{
    hand_name_to, insert_routing, stragglers, view_goes_live, view_locks, InsertTarget,
};
use crate::method::shared::swap::{identity_to, keep_comment, rename_keys, sequences_to};
use crate::method::shared::triggers::{self, Side};
use crate::method::shared::{
    drop_tool_policy, lock_statement, overriding, restore_incoming_fks, session_limits, tool_policy, writable_columns,
};
use crate::sql::{quote_literal, QualifiedName, Statement};

/// Route: the original steps aside and the view takes its name.
pub fn route(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    let mut locks: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    locks.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
    locks.push(bp.table.to_string());
    s.push(lock_statement(
        "take every lock of this phase at once, outer objects first; this blocks the table's users for the rest of this short transaction",
        &locks,
    ));
    s.extend(crate::method::shared::drop_incoming_fks(
        bp,
        "drop an incoming foreign key, as the plan allows (abort restores it)",
    ));
    s.extend(triggers::drop_all(
        bp,
        &bp.table,
        "the table's own trigger gives way to its guarded copy",
    ));
    s.push(Statement::new(
        "the original steps aside; it keeps its rows, indexes and sequences until the swap",
        format!("ALTER TABLE {} RENAME TO {}", bp.table, bp.old.name),
    ));
    s.extend(triggers::on_tables(bp, &bp.old, Side::Old));
    s.push(Statement::new(
        "no autovacuum on the original while it empties: it is dropped after the swap, and an autovacuum would compete with the batches and make the swap wait",
        format!("ALTER TABLE {} SET (autovacuum_enabled = false)", bp.old),
    ));
    // The batches read and empty it from now on.
    s.extend(tool_policy(bp, &bp.old));
    s.extend(view_goes_live(bp));
    s
}

/// Prepare's addition: no autovacuum on the partitions while they fill.
/// Filling partitions give autovacuum work all the way, which competes
/// with the batches for the server's cores, and a vacuum still running on
/// one makes the swap's lock wait (a lock timeout per try, until it ends);
/// the tool analyzes them itself before the swap, and `finish` (which a
/// resumed run completes) turns autovacuum back on.
pub fn partitions_fill_quietly(bp: &Blueprint) -> Vec<Statement> {
    bp.leaves()
        .into_iter()
        .map(|leaf| {
            Statement::new(
                "no autovacuum on a partition while rows move in: it would compete with the batches and make the swap wait",
                format!("ALTER TABLE {leaf} SET (autovacuum_enabled = false)"),
            )
        })
        .collect()
}

/// After the swap, in the finish's transaction (a lock that blocks no
/// reader or writer, and none of the swap's time): each partition's
/// autovacuum as the original's storage parameters say.
pub fn partitions_vacuum_again(bp: &Blueprint) -> Vec<Statement> {
    bp.leaves()
        .iter()
        .map(|leaf| autovacuum_as_the_original(bp, leaf, "autovacuum on the partition as on the original"))
        .collect()
}

/// `rel`'s autovacuum as the original's storage parameters had it.
fn autovacuum_as_the_original(bp: &Blueprint, rel: &QualifiedName, why: &'static str) -> Statement {
    let setting = bp.storage.iter().find_map(|o| o.strip_prefix("autovacuum_enabled="));
    Statement::new(
        why,
        match setting {
            Some(v) => format!("ALTER TABLE {rel} SET (autovacuum_enabled = {})", quote_literal(v)),
            None => format!("ALTER TABLE {rel} RESET (autovacuum_enabled)"),
        },
    )
}

/// Swap: the last stragglers move and the partitioned table takes the name.
pub fn swap(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(view_locks(bp));
    s.extend(stragglers(bp));
    s.extend(hand_name_to(bp, &bp.shadow, "the partitioned table takes the name"));
    s.extend(triggers::off_tables(bp, &bp.table, Side::Shadow));
    // The emptied original keeps its foreign keys until it is dropped: a
    // cascade would still fire a statement trigger there.
    s.extend(triggers::off_tables(bp, &bp.old, Side::Old));
    s.extend(triggers::create_all(bp, &bp.table));
    // The original (renamed) gives up its constraint and index names to the
    // partitioned table, which now carries the table's name.
    s.extend(rename_keys(bp, &bp.old, &bp.table, true));
    s.extend(sequences_to(bp, &bp.table));
    s.extend(identity_to(bp, &bp.table));
    s.extend(keep_comment(bp, "TABLE"));
    // Every row has moved: the tool reads neither table any more.
    s.extend(drop_tool_policy(bp, &bp.table));
    s.extend(drop_tool_policy(bp, &bp.old));
    s
}

/// Finish: the emptied original goes, in its own transaction.
pub fn finish(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    // A split's partitions never had theirs turned off.
    if bp.split.is_none() {
        s.extend(partitions_vacuum_again(bp));
    }
    if !bp.settings.keep_old {
        s.push(Statement::new(
            "drop the emptied original",
            format!("DROP TABLE {}", bp.old),
        ));
    }
    s
}

/// Abort, step 1: new rows go to the original from now on.
pub fn reroute(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    s.push(lock_statement(
        "the view's rule changes: a brief lock",
        &[bp.table.to_string()],
    ));
    s.extend(insert_routing(bp, InsertTarget::Original));
    s
}

/// Abort, step 3: the last rows move back and the original takes its name
/// back.
pub fn unroute(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    let mut locks: Vec<String> = bp.dependent_views.iter().map(|v| v.name.to_string()).collect();
    locks.push(bp.table.to_string());
    locks.push(bp.shadow.to_string());
    locks.push(bp.old.to_string());
    locks.extend(bp.incoming_fks.iter().map(|f| f.table.to_string()));
    s.push(lock_statement("take every lock at once, outer objects first", &locks));
    let w = writable_columns(bp);
    s.push(Statement::new(
        "the last rows move back",
        format!(
            "WITH moved AS (DELETE FROM {} RETURNING {w}) INSERT INTO {} ({w}){} SELECT {w} FROM moved",
            bp.shadow,
            bp.old,
            overriding(bp)
        ),
    ));
    s.extend(revert(bp));
    s.extend(drop_tool_policy(bp, &bp.table));
    s
}

/// What undoes the route once the original holds every row again: the
/// original takes its name back, dependents follow it, the view and its
/// routing go, dropped foreign keys come back.
fn revert(bp: &Blueprint) -> Vec<Statement> {
    let mut s = vec![autovacuum_as_the_original(bp, &bp.old, "autovacuum as it was")];
    s.extend(hand_name_to(bp, &bp.old, "the original takes its name back"));
    s.extend(triggers::off_tables(bp, &bp.table, Side::Old));
    s.extend(triggers::create_all(bp, &bp.table));
    s.extend(restore_incoming_fks(bp));
    s
}
