//! Verification for the sync method: the original and the partitioned copy
//! are compared range by range (the partitions' ranges): row count and a
//! sum of row hashes, both read in one snapshot, so the comparison holds
//! while the application writes (the mirror writes both tables in the
//! application's transaction). A range that differs is repaired from the
//! original and compared again; if it still differs the swap is refused.

use crate::blueprint::Blueprint;
use crate::error::Refusal;
use crate::exec::tx;
use crate::method::shared::writable_columns;
use crate::method::{How, Part};
use crate::sql::{quote_literal, Statement};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use tokio_postgres::{Client, GenericClient};

/// What a verification found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ranges: usize,
    pub rows: i64,
    pub repaired: Vec<String>,
}

/// The bounds of the ranges, as one SQL array literal of the key's type.
fn bounds_array(bp: &Blueprint) -> String {
    let mut b: Vec<String> = bp.partitions.iter().map(|p| p.from.clone()).collect();
    if let Some(last) = bp.partitions.last() {
        b.push(last.to.clone());
    }
    format!(
        "ARRAY[{}]::{}[]",
        b.iter().map(|v| quote_literal(v)).collect::<Vec<_>>().join(", "),
        bp.key.type_name
    )
}

/// A list key's values, as one SQL array literal of the key's type.
fn values_array(bp: &Blueprint) -> String {
    format!(
        "ARRAY[{}]::{}[]",
        bp.partitions
            .iter()
            .map(|p| quote_literal(&p.from))
            .collect::<Vec<_>>()
            .join(", "),
        bp.key.type_name
    )
}

/// The bucket of a row: its partition's number (0 for rows no listed value
/// or range holds).
pub(crate) fn bucket_expr(bp: &Blueprint) -> String {
    if bp.key.list {
        return format!("coalesce(array_position({}, t.{}), 0)", values_array(bp), bp.key.column);
    }
    match bp.key.hash {
        Some(m) => format!(
            "(SELECT r FROM generate_series(0, {last}) r WHERE satisfies_hash_partition({oid}::regclass::oid, {m}, r, t.{k}))",
            last = m - 1,
            oid = quote_literal(&bp.shadow.to_string()),
            k = bp.key.column
        ),
        None => format!("width_bucket(t.{}, {})", bp.key.column, bounds_array(bp)),
    }
}

/// Types whose hash is their value's identity: equal hashes come only from
/// the same value, as with the text form (numeric's hash ignores its scale,
/// jsonb's its numbers' scale, interval's how it is spelled, a float's the
/// sign of zero: those are compared as text).
const HASHED_BY_VALUE: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "boolean",
    "uuid",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "time without time zone",
    "bytea",
    "oid",
];

/// Text compared byte by byte, whatever the column's collation.
const TEXT: &[&str] = &["text", "character varying"];

/// One column as the row's hash takes it: by value where its type's hash
/// is its identity, otherwise as its text.
fn hashed_column(c: &crate::blueprint::Column) -> String {
    let t = c.base_type.as_str();
    if HASHED_BY_VALUE.contains(&t) {
        format!("t.{}", c.name)
    } else if TEXT.contains(&t) {
        format!("t.{} COLLATE \"C\"", c.name)
    } else {
        format!("t.{}::text COLLATE \"C\"", c.name)
    }
}

/// Bucket → (rows, hash sum) for one relation. Each row is hashed as a
/// record of its columns named one by one, the same list on both sides (a
/// whole-row reference to the partitioned copy would keep PostgreSQL from
/// scanning its partitions in parallel); a column's value is hashed
/// directly where its type allows, which spares printing it as text
/// (2,000,000 rows of the benchmark's table: 2.1 s → 1.3 s a side).
fn digest_sql(bp: &Blueprint, from: &str, filter: &str) -> String {
    let row = bp.columns.iter().map(hashed_column).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {bucket}, count(*), coalesce(sum(hash_record_extended(ROW({row}), 0)), 0)::text \
         FROM {from} AS t {filter} GROUP BY 1",
        bucket = bucket_expr(bp)
    )
}

/// The range of bucket `i` as a WHERE condition on the key.
fn bucket_condition(bp: &Blueprint, i: i32) -> String {
    if let Some(m) = bp.key.hash {
        return format!(
            "satisfies_hash_partition({}::regclass::oid, {m}, {i}, t.{})",
            quote_literal(&bp.shadow.to_string()),
            bp.key.column
        );
    }
    if bp.key.list {
        let k = &bp.key.column;
        return match bp.partitions.get((i - 1).max(0) as usize) {
            Some(p) if i > 0 => format!("t.{k} = {}::{}", quote_literal(&p.from), bp.key.type_name),
            _ => format!("(t.{k} IS NULL OR t.{k} <> ALL ({}))", values_array(bp)),
        };
    }
    let bounds: Vec<&String> = bp
        .partitions
        .iter()
        .map(|p| &p.from)
        .chain(bp.partitions.last().map(|p| &p.to))
        .collect();
    let k = &bp.key.column;
    let ty = &bp.key.type_name;
    let lit = |v: &String| format!("{}::{ty}", quote_literal(v));
    let n = bounds.len() as i32;
    if i <= 0 {
        format!("t.{k} < {}", lit(bounds[0]))
    } else if i >= n {
        format!("t.{k} >= {}", lit(bounds[(n - 1) as usize]))
    } else {
        format!(
            "t.{k} >= {} AND t.{k} < {}",
            lit(bounds[(i - 1) as usize]),
            lit(bounds[i as usize])
        )
    }
}

type Digest = BTreeMap<i32, (i64, String)>;

async fn digest(client: &impl GenericClient, sql: &str) -> Result<Digest> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, i32>(0), (r.get::<_, i64>(1), r.get::<_, String>(2))))
        .collect())
}

/// How a range the run finds different appears in what `plan` prints.
pub const RANGE_PLACEHOLDER: &str = ":range";

/// Both digests in one snapshot: one transaction, its isolation and its
/// setting in one message, then each digest.
pub fn compare_part(bp: &Blueprint, filter: &str) -> Part {
    Part::new(
        "compare",
        How::Snapshot,
        if filter.is_empty() {
            "once, over the whole table"
        } else {
            "only for each range repaired, again"
        },
        vec![
            Statement::new("one snapshot for both sides", "START TRANSACTION"),
            Statement::new(
                "read-only, in one snapshot",
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
            ),
            Statement::new(
                "a comparison takes what the table needs",
                "SET LOCAL statement_timeout = 0",
            ),
            Statement::new(
                "a few ranges are counted in a hash table; the planner, which cannot tell how few, would sort every row",
                "SET LOCAL enable_sort = off",
            ),
            Statement::new(
                "each row is read once: compiling the hashing costs more than it saves (0.6 s of 1.9 s a side for 2,000,000 rows)",
                "SET LOCAL jit = off",
            ),
            Statement::new(
                "row count and hash sum per partition range, original",
                digest_sql(bp, &format!("ONLY {}", bp.table), filter),
            ),
            Statement::new(
                "the same, partitioned copy",
                digest_sql(bp, &bp.shadow.to_string(), filter),
            ),
            Statement::new("end the snapshot", "COMMIT"),
        ],
    )
}

/// The comparison's transaction rolls back when dropped unfinished.
async fn compare(client: &mut Client, bp: &Blueprint, filter: &str) -> Result<(Digest, Digest)> {
    let p = compare_part(bp, filter);
    let st = &p.statements;
    let tx = client.transaction().await?;
    tx.batch_execute(&tx::wire(&st[1..5])).await?;
    let a = digest(&tx, &st[5].sql).await?;
    let b = digest(&tx, &st[6].sql).await?;
    tx.commit().await?;
    Ok((a, b))
}

/// Copies one range again: its source rows are locked first, so the
/// mirror's writes to them wait for the repair.
pub fn repair_part(bp: &Blueprint, cond: &str) -> Part {
    let w = writable_columns(bp);
    Part::new(
        "repair",
        How::Transaction,
        "only for a range that differs",
        vec![
            tx::set_local_lock_timeout(bp.settings.lock_timeout_ms),
            Statement::new("a repair takes what the range needs", "SET LOCAL statement_timeout = 0"),
            Statement::new(
                "the range's rows in the original, locked: the mirror's writes to them wait",
                format!(
                    "SELECT count(*) FROM (SELECT 1 FROM ONLY {} AS t WHERE {cond} FOR SHARE) locked",
                    bp.table
                ),
            ),
            Statement::new(
                "the copy's rows of the range go",
                format!("DELETE FROM {} AS t WHERE {cond}", bp.shadow),
            ),
            Statement::new(
                "and are copied again",
                format!(
                    "INSERT INTO {} ({w}){} SELECT {w} FROM ONLY {} AS t WHERE {cond} ON CONFLICT DO NOTHING",
                    bp.shadow,
                    crate::method::shared::overriding(bp),
                    bp.table
                ),
            ),
        ],
    )
    .locking(vec![bp.table.to_string(), bp.shadow.to_string()])
}

/// What `plan` shows of the verification.
pub fn parts(bp: &Blueprint) -> Vec<Part> {
    vec![
        compare_part(bp, ""),
        repair_part(bp, RANGE_PLACEHOLDER),
        compare_part(bp, &format!("WHERE {RANGE_PLACEHOLDER}")),
    ]
}

/// Verifies, repairs what differs, and verifies the repaired ranges again.
pub async fn verify(client: &mut Client, bp: &Blueprint) -> Result<Outcome> {
    let (a, b) = compare(client, bp, "")
        .await
        .context("cannot compare the original with its copy")?;
    let mut out = Outcome {
        ranges: a.len().max(b.len()),
        rows: a.values().map(|v| v.0).sum(),
        ..Default::default()
    };
    let buckets: std::collections::BTreeSet<i32> = a.keys().chain(b.keys()).copied().collect();
    for i in buckets {
        if a.get(&i) == b.get(&i) {
            continue;
        }
        let cond = bucket_condition(bp, i);
        tracing::warn!(range = %cond, original = ?a.get(&i), copy = ?b.get(&i), "a range differs; repairing it from the original");
        repair_part(bp, &cond)
            .run(&*client, &bp.settings, "repairing a range of the copy", 0)
            .await?;
        let filter = format!("WHERE {cond}");
        let (a2, b2) = compare(client, bp, &filter).await?;
        if a2 != b2 {
            return Err(Refusal::new(format!(
                "verification failed: the range {cond} still differs after repair ({:?} rows and hash in the original, {:?} in the copy); the swap is refused",
                a2.values().next(),
                b2.values().next()
            ))
            .into());
        }
        out.repaired.push(cond);
    }
    Ok(out)
}
