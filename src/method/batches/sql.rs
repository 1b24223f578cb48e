//! The batches' statements. Move: batches over ranges of heap pages of the original. Each
//! batch is one transaction: lock the parents its rows reference (in key
//! order, the order the application's cascades take), move the rows with
//! `DELETE ... RETURNING` feeding an `INSERT`, record the cursor, commit.
//! A row is therefore always in exactly one table, and a resumed run starts
//! at the first page of the first uncommitted batch.
//!
//! TID ranges (PostgreSQL 14+) cost the same however many rows were moved
//! before, unlike `LIMIT` subqueries that rescan dead rows at the head of
//! the table. An UPDATE of a row not yet moved may put its new version on a
//! page already passed; sweeps after the main pass, and the swap itself,
//! move those. The sync method's backfill copies in the same batches
//! instead of moving, and an abort moves back from each partition.

use crate::blueprint::Blueprint;
use crate::method::shared::{overriding, session_limits, writable_columns};
use crate::method::{How, Part};
use crate::sql::{list, QualifiedName, Statement};

/// Everything one batch's transaction sends, for one direction: `plan`
/// prints [`BatchSql::statements`], the batch loop prepares the same.
pub struct BatchSql {
    /// Sent in one message, first in the batch's transaction.
    pub settings: Vec<Statement>,
    /// Sent there too where the role may set it.
    pub wal_compression: Statement,
    /// Prepared, with the batch's pages as parameters.
    pub parent_locks: Vec<Statement>,
    pub statement: Statement,
    pub record: Statement,
}

impl BatchSql {
    fn new(bp: &Blueprint, from: &QualifiedName, statement: Statement) -> BatchSql {
        let mut settings = session_limits(bp);
        settings.extend(batch_settings(bp));
        BatchSql {
            settings,
            wal_compression: wal_compression_setting(),
            parent_locks: parent_locks(bp, from, true),
            statement,
            record: Statement::new(
                "the batch and the cursor, in the control table, in the batch's transaction",
                crate::control::RECORD_BATCH,
            ),
        }
    }

    /// Move: the original's rows into the partitioned table.
    pub fn forward(bp: &Blueprint) -> BatchSql {
        Self::new(bp, &bp.old, move_statement(bp, &bp.old, true, &bp.shadow.to_string()))
    }

    /// Sync: a copy of the original's rows.
    pub fn backfill(bp: &Blueprint) -> BatchSql {
        Self::new(bp, &bp.table, backfill(bp))
    }

    /// Abort: a partition's rows back into the original.
    pub fn back(bp: &Blueprint, leaf: &QualifiedName) -> BatchSql {
        Self::new(bp, leaf, move_statement(bp, leaf, true, &bp.old.to_string()))
    }

    /// What one batch sends, in order.
    pub fn statements(&self) -> Vec<Statement> {
        let mut s = vec![Statement::new("one transaction per batch", "START TRANSACTION")];
        s.extend(self.settings.iter().cloned());
        s.push(self.wal_compression.clone());
        s.extend(self.parent_locks.iter().cloned());
        s.push(self.statement.clone());
        s.push(self.record.clone());
        s.push(Statement::new("the batch commits", "COMMIT"));
        s
    }
}

/// Sync, one batch over pages [$1, $2) of the original.
pub fn backfill(bp: &Blueprint) -> Statement {
    let w = writable_columns(bp);
    Statement::new(
        "copy one batch: rows on pages [$1, $2), locked FOR SHARE until the batch commits; rows the mirror wrote already are skipped",
        format!(
            "INSERT INTO {shadow} ({w}){o} SELECT {w} FROM ONLY {table} \
             WHERE ctid >= ('(' || $1::text || ',0)')::tid AND ctid < ('(' || $2::text || ',0)')::tid \
             FOR SHARE ON CONFLICT DO NOTHING",
            shadow = bp.shadow,
            table = bp.table,
            o = overriding(bp)
        ),
    )
}

/// Parameters: `$1` first page, `$2` page after the last (both as text).
pub fn move_statement(bp: &Blueprint, from: &QualifiedName, from_only: bool, to: &str) -> Statement {
    let w = writable_columns(bp);
    Statement::new(
        "move one batch: the rows on pages [$1, $2) leave one table and enter the other in one statement",
        format!(
            "WITH moved AS (DELETE FROM {only}{from} WHERE ctid >= ('(' || $1::text || ',0)')::tid AND ctid < ('(' || $2::text || ',0)')::tid RETURNING {w}) \
             INSERT INTO {to} ({w}){o} SELECT {w} FROM moved",
            only = if from_only { "ONLY " } else { "" },
            o = overriding(bp)
        ),
    )
}

/// For each outgoing foreign key: lock the referenced rows of a batch first,
/// as `FOR KEY SHARE` (what the foreign key check takes anyway), ordered,
/// so that the batch never holds row locks of its own table while waiting
/// for a parent row that an application transaction holds.
pub fn parent_locks(bp: &Blueprint, from: &QualifiedName, from_only: bool) -> Vec<Statement> {
    bp.foreign_keys
        .iter()
        .map(|f| {
            let pcols = list(f.referenced_columns.iter().map(|c| format!("p.{c}")));
            let ccols = list(f.columns.iter().map(|c| format!("o.{c}")));
            Statement::new(
                "lock the parent rows of the batch before its own rows",
                format!(
                    "SELECT 1 FROM {parent} AS p WHERE ({pcols}) IN (SELECT {ccols} FROM {only}{from} AS o \
                     WHERE o.ctid >= ('(' || $1::text || ',0)')::tid AND o.ctid < ('(' || $2::text || ',0)')::tid) \
                     ORDER BY {pcols} FOR KEY SHARE OF p",
                    parent = f.referenced,
                    only = if from_only { "ONLY " } else { "" }
                ),
            )
        })
        .collect()
}

/// The size of a table in pages.
pub fn pages_statement(rel: &QualifiedName) -> String {
    format!(
        "SELECT (pg_catalog.pg_relation_size({}::regclass) / current_setting('block_size')::bigint)::bigint",
        crate::sql::quote_literal(&rel.to_string())
    )
}

/// How each batch commits. Flat out, asynchronously: a batch is atomic
/// either way, and one lost in a server crash is simply redone. Gentle,
/// with a local flush: an asynchronous batch's WAL waits in the buffers for
/// the application's next commit to flush it, which then waits for it.
pub fn commit_setting(bp: &Blueprint) -> Statement {
    if bp.settings.throttle.latency.is_some() {
        Statement::new(
            "under a latency budget: each batch flushes its own WAL at commit, so the application's commits do not wait to flush it",
            "SET LOCAL synchronous_commit = local",
        )
    } else if bp.settings.gentle {
        Statement::new(
            "gentle: each batch flushes its own WAL at commit, so the application's commits do not wait to flush it",
            "SET LOCAL synchronous_commit = local",
        )
    } else {
        Statement::new(
            "batches run with asynchronous commit: each is atomic either way, and a batch lost in a server crash is simply redone",
            "SET LOCAL synchronous_commit = off",
        )
    }
}

/// The settings of every batch's transaction, the backfill's too.
pub fn batch_settings(bp: &Blueprint) -> Vec<Statement> {
    vec![
        commit_setting(bp),
        Statement::new(
            "the moved rows pass through the statement's tuple store: kept in memory",
            "SET LOCAL work_mem = '64MB'",
        ),
    ]
}

/// Compresses the full-page images a batch writes (the first change to a
/// page after a checkpoint logs the whole page, and a move changes every
/// page of the original); set only where the role may.
pub fn wal_compression_setting() -> Statement {
    Statement::new(
        "where the role may set it (superusers, PostgreSQL 15 and later): full-page images compressed",
        "SET LOCAL wal_compression = lz4",
    )
}

/// The VACUUM of the partitions an abort has emptied, before the last
/// rows move back under the unroute's lock with a scan of every partition.
/// The move forward needs none: its emptied original is dropped, and its
/// sweeps and swap find the rows left through the row-identity index.
pub fn vacuum_statement(rel: &QualifiedName) -> Statement {
    Statement::new(
        "once every row is back: clear the dead rows and give the emptied pages back, so the unroute reads little",
        format!("VACUUM {rel}"),
    )
}

/// The part that samples the batches' source when it was never analyzed,
/// before the first batch (the batch loop runs it).
pub fn estimate_part(rel: &QualifiedName) -> Part {
    Part::new(
        "estimate",
        How::Plain,
        "only when the original was never analyzed, before the first batch",
        vec![estimate_statement(rel)],
    )
}

/// A sample of a table never analyzed, so that progress and ETA have a
/// row estimate to go by.
pub fn estimate_statement(rel: &QualifiedName) -> Statement {
    Statement::new(
        "only for a table never analyzed: a sample gives progress and the ETA a row estimate",
        format!("ANALYZE {rel}"),
    )
}

/// The first and the last page of `rel` that hold a row, through its
/// row-identity index, with sequential scans off around it.
pub fn row_pages(bp: &Blueprint, rel: &QualifiedName) -> Vec<Statement> {
    vec![
        Statement::new(
            "find the pages through the row-identity index",
            "SET enable_seqscan = off",
        ),
        row_pages_statement(bp, rel),
        Statement::new("sequential scans as before", "RESET enable_seqscan"),
    ]
}

fn row_pages_statement(bp: &Blueprint, rel: &QualifiedName) -> Statement {
    Statement::new(
        "before each sweep, with sequential scans off: the first and the last page still holding rows, through the row-identity index, so the sweep skips the emptied pages",
        format!(
            "SELECT min(b), max(b) FROM (SELECT (ctid::text::point)[0]::int8 AS b FROM ONLY {rel} ORDER BY {}) s",
            list(&bp.row_identity)
        ),
    )
}
