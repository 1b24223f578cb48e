//! `status` and `check` for a partitioned table, whoever partitioned it:
//! what each partition holds, and what needs attention.

use crate::partition::bounds::KeyKind;
use crate::partition::existing;
use crate::plan_file::PlanFile;
use crate::sql::QualifiedName;
use anyhow::Result;
use serde::Serialize;
use tokio_postgres::Client;

#[derive(Debug, Serialize)]
pub struct PartitionStat {
    pub name: String,
    pub bounds: String,
    pub estimated_rows: i64,
    pub exact_rows: Option<i64>,
    pub bytes: i64,
    pub last_vacuum: Option<chrono::DateTime<chrono::Utc>>,
    pub last_analyze: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every partition of `table` with its size and maintenance times.
pub async fn partitions(client: &Client, table: &QualifiedName, exact: bool) -> Result<Vec<PartitionStat>> {
    let rows = client
        .query(
            "SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid), greatest(c.reltuples, 0)::bigint, \
                    pg_total_relation_size(c.oid), greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE i.inhparent = to_regclass($1) ORDER BY c.relname",
            &[&table.to_string()],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let exact_rows = if exact {
            Some(
                client
                    .query_one(&format!("SELECT count(*) FROM ONLY {name}"), &[])
                    .await?
                    .get(0),
            )
        } else {
            None
        };
        out.push(PartitionStat {
            name,
            bounds: r.get(1),
            estimated_rows: r.get(2),
            exact_rows,
            bytes: r.get(3),
            last_vacuum: r.get(4),
            last_analyze: r.get(5),
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub table: String,
    /// Ranges no partition covers, between the first and the last bound.
    pub gaps: Vec<String>,
    pub default_partition: Option<String>,
    pub default_rows: i64,
    /// "partition lacks index" findings.
    pub missing_indexes: Vec<String>,
    /// Where the partitions end, without a gap from the newest lower bound.
    pub last_bound: Option<String>,
    pub healthy: bool,
}

pub async fn check(client: &Client, plan: &PlanFile) -> Result<CheckReport> {
    let table = &plan.table;
    let mut r = CheckReport {
        table: table.to_string(),
        ..Default::default()
    };
    let relkind: Option<String> = client
        .query_opt(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
            &[&table.to_string()],
        )
        .await?
        .map(|row| row.get(0));
    if relkind.as_deref() != Some("p") {
        return Err(crate::error::Refusal::new(format!("{table} is not a partitioned table")).into());
    }
    let type_name: Option<String> = client
        .query_one(
            "SELECT (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2)",
            &[&table.to_string(), &plan.spec.partition.column],
        )
        .await?
        .get(0);
    let kind = type_name
        .as_deref()
        .and_then(KeyKind::from_type_name)
        .unwrap_or(KeyKind::Integer);
    let parts = existing::partitions(client, table, kind).await?;
    // Partitions come sorted by lower bound; bounds are shown as
    // PostgreSQL writes them.
    let ranged: Vec<&existing::Existing> = parts.iter().filter(|p| p.range.is_some()).collect();
    let upper = |e: &existing::Existing| {
        e.expr
            .split(" TO (")
            .nth(1)
            .map(|s| s.trim_end_matches(')').to_string())
            .unwrap_or_default()
    };
    let lower = |e: &existing::Existing| {
        e.expr
            .strip_prefix("FOR VALUES FROM (")
            .and_then(|s| s.split(") TO (").next())
            .unwrap_or_default()
            .to_string()
    };
    for w in ranged.windows(2) {
        let (a, b) = (w[0].range.as_ref().unwrap(), w[1].range.as_ref().unwrap());
        if a.1 != b.0 {
            r.gaps.push(format!(
                "[{}, {}) between {} and {}",
                upper(w[0]),
                lower(w[1]),
                w[0].name,
                w[1].name
            ));
        }
    }
    r.last_bound = ranged
        .iter()
        .max_by(|a, b| {
            if existing::less(&a.range.as_ref().unwrap().1, &b.range.as_ref().unwrap().1) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        })
        .map(|e| upper(e).trim_matches('\'').to_string())
        // List partitions: the highest value with a partition.
        .or_else(|| parts.iter().flat_map(|e| e.values.iter()).max().map(|v| v.to_string()));
    if let Some(d) = parts.iter().find(|p| p.default) {
        r.default_partition = Some(d.name.to_string());
        r.default_rows = client
            .query_one(&format!("SELECT count(*) FROM ONLY {}", d.name), &[])
            .await?
            .get(0);
    }
    r.missing_indexes = client
        .query(
            "SELECT c.oid::regclass::text || ' lacks an index for ' || pi.indexrelid::regclass::text \
             FROM pg_index pi JOIN pg_inherits i ON i.inhparent = pi.indrelid JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE pi.indrelid = to_regclass($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_index ci JOIN pg_inherits ii ON ii.inhrelid = ci.indexrelid \
                               WHERE ci.indrelid = c.oid AND ii.inhparent = pi.indexrelid) \
             ORDER BY 1",
            &[&table.to_string()],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    r.healthy = r.gaps.is_empty() && r.default_rows == 0 && r.missing_indexes.is_empty();
    Ok(r)
}

/// Live figures for `status`, read next to the control row.
pub struct Live {
    pub runner: Option<Runner>,
    pub pages_left: Option<i64>,
    pub rate: Option<f64>,
    pub back_rate: Option<f64>,
}

/// The session of the runner attached to a migration.
pub struct Runner {
    pub pid: i32,
    pub client: String,
    pub since: chrono::DateTime<chrono::Utc>,
}
