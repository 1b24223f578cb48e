//! Conditions under which a run waits by itself: replicas falling behind,
//! replication slots holding WAL, an anti-wraparound autovacuum on the
//! table being read, or the operator's own query.

use crate::plan_file::ThrottleSpec;
use crate::sql::QualifiedName;
use anyhow::{Context, Result};
use tokio_postgres::Client;

/// Why the run should wait now, if it should.
pub async fn reason(client: &Client, t: &ThrottleSpec, source: &QualifiedName) -> Result<Option<String>> {
    if let Some(max) = t.max_replica_lag {
        let lag: f64 = client
            .query_one(
                "SELECT coalesce(max(extract(epoch FROM replay_lag)) * 1000, 0)::float8 FROM pg_stat_replication",
                &[],
            )
            .await?
            .get(0);
        if lag > max.0 as f64 {
            return Ok(Some(format!(
                "a replica replays {lag:.0}ms behind (throttle.max_replica_lag is {}ms)",
                max.0
            )));
        }
    }
    if let Some(max) = t.max_replica_lag_bytes {
        let row = client
            .query_one(
                "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::float8, \
                        (SELECT application_name::text FROM pg_stat_replication \
                         ORDER BY pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) DESC NULLS LAST LIMIT 1) \
                 FROM pg_stat_replication",
                &[],
            )
            .await?;
        let behind: f64 = row.get(0);
        if behind > max.0 as f64 {
            let who: Option<String> = row.get(1);
            return Ok(Some(format!(
                "the replica {} has {} of WAL not yet replayed (throttle.max_replica_lag_bytes is {})",
                who.filter(|w| !w.is_empty()).unwrap_or_else(|| "without a name".into()),
                crate::report::bytes(behind as i64),
                crate::report::bytes(max.0 as i64)
            )));
        }
    }
    if let Some(max) = t.max_slot_wal_mb {
        let mb: f64 = client
            .query_one(
                "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 0)::float8 / 1048576 \
                 FROM pg_replication_slots WHERE restart_lsn IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if mb > max.0 as f64 {
            return Ok(Some(format!(
                "a replication slot retains {mb:.0} MB of WAL (throttle.max_slot_wal_mb is {})",
                max.0
            )));
        }
    }
    let wraparound: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a ON a.pid = v.pid \
                            WHERE v.relid = to_regclass($1) AND a.query LIKE '%to prevent wraparound%')",
            &[&source.to_string()],
        )
        .await?
        .get(0);
    if wraparound {
        return Ok(Some(format!("an anti-wraparound autovacuum is running on {source}")));
    }
    if let Some(sql) = &t.check {
        let row = client
            .query_one(sql.as_str(), &[])
            .await
            .with_context(|| format!("the throttle.check query failed: {sql}"))?;
        let wait: Option<bool> = row
            .try_get(0)
            .context("the throttle.check query must return one boolean")?;
        if wait == Some(true) {
            return Ok(Some(format!("throttle.check returned true: {sql}")));
        }
    }
    Ok(None)
}

/// Records (or clears) the reason in the control table, for `status`.
pub async fn record(client: &Client, id: i64, reason: Option<&str>) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET throttled = $2 WHERE id = $1",
            &[&id, &reason],
        )
        .await?;
    if let Some(r) = reason {
        crate::control::event(client, id, "throttled", r).await?;
    }
    Ok(())
}
