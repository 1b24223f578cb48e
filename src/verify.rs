//! Verification for the sync method: the original and the partitioned copy
//! are compared range by range (the partitions' ranges): row count and a
//! sum of row hashes, both read in one snapshot, so the comparison holds
//! while the application writes (the mirror writes both tables in the
//! application's transaction). A range that differs is repaired from the
//! original and compared again; if it still differs the swap is refused.

use crate::blueprint::Blueprint;
use crate::error::Refusal;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use tokio_postgres::Client;

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
        b.iter()
            .map(|v| crate::sql::quote_literal(v))
            .collect::<Vec<_>>()
            .join(", "),
        bp.key.type_name
    )
}

/// A list key's values, as one SQL array literal of the key's type.
fn values_array(bp: &Blueprint) -> String {
    format!(
        "ARRAY[{}]::{}[]",
        bp.partitions
            .iter()
            .map(|p| crate::sql::quote_literal(&p.from))
            .collect::<Vec<_>>()
            .join(", "),
        bp.key.type_name
    )
}

/// The bucket of a row: its partition's number (0 for rows no listed value
/// or range holds).
fn bucket_expr(bp: &Blueprint) -> String {
    if bp.key.list {
        return format!("coalesce(array_position({}, t.{}), 0)", values_array(bp), bp.key.column);
    }
    match bp.key.hash {
        Some(m) => format!(
            "(SELECT r FROM generate_series(0, {last}) r WHERE satisfies_hash_partition({oid}::regclass::oid, {m}, r, t.{k}))",
            last = m - 1,
            oid = crate::sql::quote_literal(&bp.shadow.to_string()),
            k = bp.key.column
        ),
        None => format!("width_bucket(t.{}, {})", bp.key.column, bounds_array(bp)),
    }
}

/// Bucket → (rows, hash sum) for one relation.
fn digest_sql(bp: &Blueprint, from: &str, filter: &str) -> String {
    format!(
        "SELECT {bucket}, count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text \
         FROM {from} AS t {filter} GROUP BY 1",
        bucket = bucket_expr(bp)
    )
}

/// The range of bucket `i` as a WHERE condition on the key.
fn bucket_condition(bp: &Blueprint, i: i32) -> String {
    if let Some(m) = bp.key.hash {
        return format!(
            "satisfies_hash_partition({}::regclass::oid, {m}, {i}, t.{})",
            crate::sql::quote_literal(&bp.shadow.to_string()),
            bp.key.column
        );
    }
    if bp.key.list {
        let k = &bp.key.column;
        return match bp.partitions.get((i - 1).max(0) as usize) {
            Some(p) if i > 0 => format!("t.{k} = {}::{}", crate::sql::quote_literal(&p.from), bp.key.type_name),
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
    let lit = |v: &String| format!("{}::{ty}", crate::sql::quote_literal(v));
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

async fn digest(client: &Client, sql: &str) -> Result<Digest> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, i32>(0), (r.get::<_, i64>(1), r.get::<_, String>(2))))
        .collect())
}

/// Both digests in one snapshot.
async fn compare(client: &Client, bp: &Blueprint, filter: &str) -> Result<(Digest, Digest)> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = 0")
        .await?;
    let res = async {
        let a = digest(client, &digest_sql(bp, &format!("ONLY {}", bp.table), filter)).await?;
        let b = digest(client, &digest_sql(bp, &bp.shadow.to_string(), filter)).await?;
        Ok::<_, anyhow::Error>((a, b))
    }
    .await;
    let _ = client.batch_execute("COMMIT").await;
    res
}

/// Verifies, repairs what differs, and verifies the repaired ranges again.
pub async fn verify(client: &Client, bp: &Blueprint) -> Result<Outcome> {
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
        repair(client, bp, &cond).await?;
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

/// Copies one range again: its source rows are locked first, so the
/// mirror's writes to them wait for the repair.
async fn repair(client: &Client, bp: &Blueprint, cond: &str) -> Result<()> {
    let w = crate::phase::writable_columns(bp);
    let sql = format!(
        "BEGIN; SET LOCAL lock_timeout = '{lt}ms'; SET LOCAL statement_timeout = 0; \
         SELECT 1 FROM ONLY {table} AS t WHERE {cond} FOR SHARE; \
         DELETE FROM {shadow} AS t WHERE {cond}; \
         INSERT INTO {shadow} ({w}) SELECT {w} FROM ONLY {table} AS t WHERE {cond} ON CONFLICT DO NOTHING; \
         COMMIT",
        lt = bp.settings.lock_timeout_ms,
        table = bp.table,
        shadow = bp.shadow
    );
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e).context("repairing a range of the copy failed");
    }
    Ok(())
}

/// What `plan` shows for this phase.
pub fn statements(bp: &Blueprint) -> Vec<crate::sql::Statement> {
    use crate::sql::Statement;
    vec![
        Statement::new(
            "one snapshot for both sides",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        ),
        Statement::new(
            "row count and hash sum per partition range, original",
            digest_sql(bp, &format!("ONLY {}", bp.table), ""),
        ),
        Statement::new("the same, partitioned copy", digest_sql(bp, &bp.shadow.to_string(), "")),
        Statement::new("end the snapshot", "COMMIT"),
    ]
}
