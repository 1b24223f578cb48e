//! Pre-flight analysis for `plan`: what the application runs against the
//! table (from pg_stat_statements, when installed and readable), and how
//! large the partitions would be (from a sample of the table).

use crate::blueprint::{Blueprint, Finding, Level};
use crate::plan_file::Method;
use anyhow::Result;
use tokio_postgres::Client;

/// Findings about the application's statements.
pub async fn statements(client: &Client, bp: &Blueprint) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let available: bool = client
        .query_one("SELECT to_regclass('pg_stat_statements') IS NOT NULL OR to_regclass('public.pg_stat_statements') IS NOT NULL", &[])
        .await?
        .get(0);
    if !available {
        out.push(Finding {
            level: Level::Note,
            message: "pg_stat_statements is not installed in this database: the application's statements were not checked (CREATE EXTENSION pg_stat_statements, with it in shared_preload_libraries, lets plan check them)".into(),
        });
        return Ok(out);
    }
    let view = client
        .query_one(
            "SELECT coalesce(to_regclass('pg_stat_statements'), to_regclass('public.pg_stat_statements'))::text",
            &[],
        )
        .await?
        .get::<_, String>(0);
    let name = bp.table.name.as_str();
    let rows = match client
        .query(
            &format!(
                "SELECT query, calls::bigint FROM {view} WHERE query ~* $1 AND query !~* 'repartition\\.' \
                 ORDER BY calls DESC LIMIT 200"
            ),
            &[&format!(r#"\m"?{}"?\M"#, regex_escape(name))],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding {
                level: Level::Note,
                message: format!(
                    "pg_stat_statements could not be read ({}); the application's statements were not checked",
                    crate::db::retry::message(&e)
                ),
            });
            return Ok(out);
        }
    };
    let key = bp.key.column.as_str().to_lowercase();
    for r in rows {
        let q: String = r.get(0);
        let calls: i64 = r.get(1);
        let lower = q.to_lowercase();
        let short: String = q
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(120)
            .collect();
        let mut say = |level: Level, what: &str| {
            out.push(Finding {
                level,
                message: format!("{what} ({calls} calls): {short}"),
            })
        };
        if bp.method == Method::Move {
            if lower.contains("for update") || lower.contains("for share") || lower.contains("for no key update") {
                say(Level::Warning, "this statement locks rows with FOR UPDATE/SHARE, which the move method's view runs without locking any row until the swap (two sessions can take the same row); use method sync or attach");
            }
            if lower.contains("on conflict") {
                say(Level::Warning, "this statement uses INSERT ... ON CONFLICT, which the move method's view refuses until the swap; use method sync or attach");
            }
            if lower.starts_with("truncate") {
                say(
                    Level::Warning,
                    "TRUNCATE is refused on the move method's view until the swap",
                );
            }
        }
        if lower.starts_with("copy") && lower.contains(" to ") {
            say(Level::Note, "COPY ... TO reads every partition after the swap");
        }
        let conflict_cols = lower
            .split("on conflict (")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or("");
        if lower.contains("on conflict (") && !mentions(conflict_cols, &key) {
            say(Level::Warning, &format!("ON CONFLICT names columns without {key}: after the swap no unique key matches them; name the constraint (ON CONFLICT ON CONSTRAINT) instead"));
        }
        let reads = lower.starts_with("select") || lower.starts_with("update") || lower.starts_with("delete");
        if reads && lower.contains(" where ") && !lower.split(" where ").skip(1).any(|w| mentions(w, &key)) {
            say(
                Level::Note,
                &format!(
                    "this statement does not filter on {key}: after the swap it reads every partition (no pruning)"
                ),
            );
        }
    }
    Ok(out)
}

/// Whether `word` appears in `text` as a whole identifier.
fn mentions(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '"'))
        .any(|t| t.trim_matches('"') == word)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Estimated size of each partition from a sample, with the MeshHook
/// guidance: 10-100 GB a partition is best, over 200 GB is too large.
pub async fn partition_sizes(client: &Client, bp: &Blueprint, table_bytes: i64) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    if bp.key.list || bp.key.hash.is_some() || bp.partitions.is_empty() || table_bytes <= 0 {
        return Ok(out);
    }
    let mut bounds: Vec<String> = bp.partitions.iter().map(|p| p.from.clone()).collect();
    bounds.push(bp.partitions.last().expect("partitions").to.clone());
    let array = format!(
        "ARRAY[{}]::{}[]",
        bounds
            .iter()
            .map(|b| crate::sql::quote_literal(b))
            .collect::<Vec<_>>()
            .join(", "),
        bp.key.type_name
    );
    // About a thousand pages (all of a small table, 1% of a large one).
    let pages = (table_bytes / bp.settings.block_size.max(1)).max(1) as f64;
    let percent = (100.0 * 1000.0 / pages).clamp(1.0, 100.0);
    let sql = format!(
        "SELECT width_bucket({k}, {array}), count(*) FROM ONLY {t} TABLESAMPLE SYSTEM ({percent}) GROUP BY 1",
        k = bp.key.column,
        t = bp.table
    );
    let rows = client.query(&sql, &[]).await?;
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    if total == 0 {
        return Ok(out);
    }
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    let mut largest = 0.0f64;
    let mut sizes = Vec::new();
    for r in &rows {
        let bucket: i32 = r.get(0);
        let share = r.get::<_, i64>(1) as f64 / total as f64;
        let bytes = share * table_bytes as f64;
        largest = largest.max(bytes);
        if bucket >= 1 && (bucket as usize) <= bp.partitions.len() {
            sizes.push((bp.partitions[bucket as usize - 1].name.as_str().to_string(), bytes));
        }
    }
    sizes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(n, b)| format!("{n} ~{}", crate::report::bytes(*b as i64)))
        .collect();
    out.push(Finding {
        level: Level::Note,
        message: format!(
            "estimated partition sizes from a 1% sample, largest first: {}",
            top.join(", ")
        ),
    });
    if largest > 200.0 * GB {
        out.push(Finding {
            level: Level::Warning,
            message: format!(
                "a partition would hold about {}: over 200 GB, choose a shorter interval or step",
                crate::report::bytes(largest as i64)
            ),
        });
    }
    Ok(out)
}

/// Disk space the method needs, and the duration at the rate measured by
/// earlier runs in this database, when there were any.
pub async fn estimates(client: &Client, bp: &Blueprint, rows: f64) -> Result<Vec<Finding>> {
    let total: i64 = client
        .query_one(
            "SELECT pg_total_relation_size(to_regclass($1))",
            &[&bp.table.to_string()],
        )
        .await?
        .get(0);
    let disk = match bp.method {
        Method::Move => format!("about {} more while rows move (the partitioned table and its indexes; the original only shrinks after its vacuum)", crate::report::bytes(total)),
        Method::Sync => format!("about {} more until `migrate cleanup` (a full copy with indexes)", crate::report::bytes(total)),
        Method::Attach => "the unique indexes with the key appended; no copy of the rows".into(),
    };
    let mut out = vec![Finding {
        level: Level::Note,
        message: format!("disk: {disk}"),
    }];
    let rate: Option<f64> = if crate::control::schema_version(client).await?.is_some() {
        client
            .query_one(
                "SELECT sum(rows)::float8 / nullif(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 \
                 FROM (SELECT rows, started_at, finished_at FROM repartition.batches WHERE direction = 'forward' \
                       ORDER BY finished_at DESC LIMIT 200) b",
                &[],
            )
            .await?
            .get(0)
    } else {
        None
    };
    match (rate, bp.method) {
        (_, Method::Attach) => {}
        (Some(r), _) if r > 0.0 && rows > 0.0 => out.push(Finding {
            level: Level::Note,
            message: format!(
                "duration: about {} at {:.0} rows/s, the rate of the latest batches in this database",
                crate::report::hms(rows / r),
                r
            ),
        }),
        _ => out.push(Finding {
            level: Level::Note,
            message: "duration: no batch has run in this database yet to measure a rate; `status` shows rate and ETA once rows move".into(),
        }),
    }
    Ok(out)
}
