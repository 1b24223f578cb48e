//! The control table: where each migration stands, in the target database.
//! Every phase updates it in the same transaction as its own DDL, so the
//! record and the schema can never disagree.

use crate::blueprint::Blueprint;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres::{Client, GenericClient};

const SCHEMA_SQL: &str = include_str!("schema.sql");
pub const SCHEMA_VERSION: i32 = 1;
/// Serialises control-schema creation between concurrent runners.
const BOOTSTRAP_LOCK: (i32, i32) = (0x5250_4d47, 0);

/// Phases in order; the control row records the last one completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Planned,
    /// attach: the cutoff constraint is validated and the unique indexes
    /// that include the key are built; every method: a key that could be
    /// NULL is NOT NULL.
    Constrained,
    Prepared,
    /// move: the view is in front of both tables.
    Routed,
    /// sync: every row is copied and triggers keep the copy in step.
    Backfilled,
    /// sync: the copy was compared with the original, range by range.
    Verified,
    /// move: every row is in the partitioned table.
    Moved,
    Swapped,
    Finished,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Constrained => "constrained",
            Phase::Prepared => "prepared",
            Phase::Backfilled => "backfilled",
            Phase::Verified => "verified",
            Phase::Routed => "routed",
            Phase::Moved => "moved",
            Phase::Swapped => "swapped",
            Phase::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Result<Phase> {
        Ok(match s {
            "planned" => Phase::Planned,
            "constrained" => Phase::Constrained,
            "prepared" => Phase::Prepared,
            "backfilled" => Phase::Backfilled,
            "verified" => Phase::Verified,
            "routed" => Phase::Routed,
            "moved" => Phase::Moved,
            "swapped" => Phase::Swapped,
            "finished" => Phase::Finished,
            other => bail!("the control table holds an unknown phase `{other}`"),
        })
    }
}

#[derive(Clone, Debug)]
pub struct MigrationRow {
    pub id: i64,
    pub method: String,
    pub table_name: String,
    pub state: String,
    pub phase: Phase,
    pub blueprint: Blueprint,
    pub plan_source: String,
    pub cursor_block: i64,
    pub sweeps: i32,
    pub rows_moved: i64,
    pub rows_total: Option<i64>,
    pub batches: i64,
    pub abort_step: Option<String>,
    pub abort_partition: i32,
    pub abort_block: i64,
    pub rows_moved_back: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub move_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub paused: bool,
    /// Why the runner paused itself, when it did.
    pub paused_reason: Option<String>,
    pub batch_rows_override: Option<i64>,
    pub pause_ms_override: Option<i64>,
    /// The batch size of the latest batch.
    pub batch_rows_chosen: Option<i64>,
    pub throttled: Option<String>,
    pub waiting_for_swap: bool,
    pub swap_requested: bool,
    pub paused_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `operator (ROLE from HOST)` or `migrate` when the runner paused itself.
    pub paused_by: Option<String>,
    /// The latest section that took a strong lock on the table.
    pub last_lock: Option<LockHold>,
    /// The latency budget's baseline, latest measurement and action.
    pub latency_baseline_ms: Option<f64>,
    /// The application's mean transaction time beside the baseline, when
    /// it could be measured.
    pub latency_app_ms: Option<f64>,
    pub latency_ms: Option<f64>,
    /// The application's mean transaction time over the latest seconds.
    pub latency_app_now_ms: Option<f64>,
    pub latency_doing: Option<String>,
}

/// A section that took a strong lock: how long it held it, how long its
/// `LOCK` waited, and when it committed.
#[derive(Clone, Debug, Serialize)]
pub struct LockHold {
    pub step: String,
    pub held_ms: f64,
    pub wait_ms: f64,
    pub at: chrono::DateTime<chrono::Utc>,
}

const COLUMNS: &str = "id, method, table_name, state, phase, blueprint, plan_source, cursor_block, sweeps, rows_moved, rows_total, \
    batches, abort_step, abort_partition, abort_block, rows_moved_back, created_at, updated_at, move_started_at, finished_at, last_error, \
    paused, paused_reason, batch_rows_override, pause_ms_override, batch_rows_chosen, throttled, waiting_for_swap, swap_requested, \
    paused_at, paused_by, last_lock_step, last_lock_held_ms, last_lock_wait_ms, last_lock_at, \
    latency_baseline_ms, latency_app_ms, latency_ms, latency_app_now_ms, latency_doing";

fn from_row(r: &tokio_postgres::Row) -> Result<MigrationRow> {
    let bp: serde_json::Value = r.get("blueprint");
    let format = bp.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format > u64::from(crate::blueprint::FORMAT) {
        bail!("this migration was started by a newer version of the tool (blueprint format {format}); use that version to continue it");
    }
    Ok(MigrationRow {
        id: r.get("id"),
        method: r.get("method"),
        table_name: r.get("table_name"),
        state: r.get("state"),
        phase: Phase::parse(r.get("phase"))?,
        blueprint: serde_json::from_value(bp).context("the stored blueprint cannot be read")?,
        plan_source: r.get("plan_source"),
        cursor_block: r.get("cursor_block"),
        sweeps: r.get("sweeps"),
        rows_moved: r.get("rows_moved"),
        rows_total: r.get("rows_total"),
        batches: r.get("batches"),
        abort_step: r.get("abort_step"),
        abort_partition: r.get("abort_partition"),
        abort_block: r.get("abort_block"),
        rows_moved_back: r.get("rows_moved_back"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        move_started_at: r.get("move_started_at"),
        finished_at: r.get("finished_at"),
        last_error: r.get("last_error"),
        paused: r.get("paused"),
        paused_reason: r.get("paused_reason"),
        batch_rows_override: r.get("batch_rows_override"),
        pause_ms_override: r.get("pause_ms_override"),
        batch_rows_chosen: r.get("batch_rows_chosen"),
        throttled: r.get("throttled"),
        waiting_for_swap: r.get("waiting_for_swap"),
        swap_requested: r.get("swap_requested"),
        paused_at: r.get("paused_at"),
        paused_by: r.get("paused_by"),
        last_lock: r.get::<_, Option<String>>("last_lock_step").map(|step| LockHold {
            step,
            held_ms: r.get::<_, Option<f64>>("last_lock_held_ms").unwrap_or(0.0),
            wait_ms: r.get::<_, Option<f64>>("last_lock_wait_ms").unwrap_or(0.0),
            at: r
                .get::<_, Option<chrono::DateTime<chrono::Utc>>>("last_lock_at")
                .unwrap_or_default(),
        }),
        latency_baseline_ms: r.get("latency_baseline_ms"),
        latency_app_ms: r.get("latency_app_ms"),
        latency_app_now_ms: r.get("latency_app_now_ms"),
        latency_ms: r.get("latency_ms"),
        latency_doing: r.get("latency_doing"),
    })
}

/// The latency budget's baseline, once learned, and the application's
/// mean transaction time beside it.
pub async fn set_latency_baseline(client: &impl GenericClient, id: i64, ms: f64, app_ms: Option<f64>) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET latency_baseline_ms = $2, latency_app_ms = $3 WHERE id = $1",
            &[&id, &ms, &app_ms],
        )
        .await
        .context("cannot record the latency baseline")?;
    Ok(())
}

/// The latency budget's latest measurement, the application's mean
/// transaction time beside it, and what the run does about it.
pub async fn set_latency(
    client: &impl GenericClient,
    id: i64,
    ms: f64,
    app_ms: Option<f64>,
    doing: &str,
) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET latency_ms = $2, latency_app_now_ms = $3, latency_doing = $4 WHERE id = $1",
            &[&id, &ms, &app_ms, &doing],
        )
        .await
        .context("cannot record the latency measurement")?;
    Ok(())
}

/// Creates or upgrades the control schema.
pub async fn bootstrap(client: &mut Client) -> Result<()> {
    if let Some(v) = schema_version(client).await? {
        if v > SCHEMA_VERSION {
            bail!("the control schema `repartition` has version {v}, newer than this tool knows ({SCHEMA_VERSION}); use a newer version of the tool");
        }
        // Every statement of the schema is idempotent: running it again
        // adds what a newer build of the same version brought.
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[&BOOTSTRAP_LOCK.0, &BOOTSTRAP_LOCK.1],
    )
    .await?;
    tx.batch_execute(SCHEMA_SQL)
        .await
        .context("cannot create the control schema `repartition` (the tool's role needs CREATE on the database)")?;
    tx.commit().await?;
    Ok(())
}

/// The control schema's version, if it exists.
pub async fn schema_version(client: &impl GenericClient) -> Result<Option<i32>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('repartition.meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT schema_version FROM repartition.meta", &[])
        .await?;
    Ok(Some(row.get(0)))
}

/// The unfinished migration of a table, if any.
pub async fn unfinished(client: &impl GenericClient, table: &str) -> Result<Option<MigrationRow>> {
    if schema_version(client).await?.is_none() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM repartition.migrations WHERE table_name = $1 AND state IN ('active', 'aborting')"
    );
    client
        .query_opt(&sql, &[&table])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The most recent migration of a table, finished or not.
pub async fn latest(client: &impl GenericClient, table: &str) -> Result<Option<MigrationRow>> {
    if schema_version(client).await?.is_none() {
        return Ok(None);
    }
    let sql = format!("SELECT {COLUMNS} FROM repartition.migrations WHERE table_name = $1 ORDER BY id DESC LIMIT 1");
    client
        .query_opt(&sql, &[&table])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The most recent finished migration of a table by a method.
pub async fn latest_done(client: &impl GenericClient, table: &str, method: &str) -> Result<Option<MigrationRow>> {
    if schema_version(client).await?.is_none() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM repartition.migrations WHERE table_name = $1 AND method = $2 AND state = 'done' ORDER BY id DESC LIMIT 1"
    );
    client
        .query_opt(&sql, &[&table, &method])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn reload(client: &impl GenericClient, id: i64) -> Result<MigrationRow> {
    let sql = format!("SELECT {COLUMNS} FROM repartition.migrations WHERE id = $1");
    from_row(&client.query_one(&sql, &[&id]).await?)
}

/// Records a new migration, phase `planned`.
pub async fn insert(client: &impl GenericClient, bp: &Blueprint, plan_source: &str) -> Result<i64> {
    let method = if bp.split.is_some() {
        "split"
    } else {
        bp.method.as_str()
    };
    let json = serde_json::to_value(bp)?;
    let row = client
        .query_one(
            "INSERT INTO repartition.migrations (table_name, method, phase, blueprint, plan_source) \
             VALUES ($1, $4, 'planned', $2, $3) RETURNING id",
            &[&bp.table.to_string(), &json, &plan_source, &method],
        )
        .await
        .context("cannot record the migration in the control table")?;
    let id: i64 = row.get(0);
    event(client, id, "planned", "").await?;
    Ok(id)
}

/// One committed batch, as the control table records it.
pub struct BatchRecord<'a> {
    pub direction: &'a str,
    pub rows: i64,
    pub from_block: i64,
    pub to_block: i64,
    /// The batch size the runner chose (tuned, planned or the operator's).
    pub chosen_rows: i64,
    /// The batch moves the recorded cursor (the primary worker's do).
    pub advance_cursor: bool,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// Records one committed batch (parameters in `record_batch`'s order),
/// prepared once per connection.
pub const RECORD_BATCH: &str = "WITH m AS (UPDATE repartition.migrations SET \
                 batches = batches + 1, updated_at = now(), batch_rows_chosen = $8, \
                 cursor_block = CASE WHEN $6::bool AND $9::bool THEN $5::bigint ELSE cursor_block END, \
                 rows_moved = rows_moved + CASE WHEN $6::bool THEN $3::bigint ELSE 0 END, \
                 abort_block = CASE WHEN $6::bool THEN abort_block ELSE $5::bigint END, \
                 rows_moved_back = rows_moved_back + CASE WHEN $6::bool THEN 0 ELSE $3::bigint END \
               WHERE id = $1 RETURNING batches) \
             INSERT INTO repartition.batches (migration_id, batch_no, direction, rows, from_block, to_block, started_at) \
             SELECT $1, batches, $2::text, $3::bigint::int, $4::bigint, $5::bigint, $7::timestamptz FROM m";

/// Records one committed batch; runs inside the batch's transaction.
/// `statement` is `RECORD_BATCH`, prepared.
pub async fn record_batch(
    client: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    id: i64,
    b: &BatchRecord<'_>,
) -> Result<()> {
    let forward = b.direction == "forward";
    client
        .execute(
            statement,
            &[
                &id,
                &b.direction,
                &b.rows,
                &b.from_block,
                &b.to_block,
                &forward,
                &b.started_at,
                &b.chosen_rows,
                &b.advance_cursor,
            ],
        )
        .await?;
    Ok(())
}

/// The batch size the last recorded batch chose, if any batch ran.
pub async fn chosen_batch_rows(client: &impl GenericClient, id: i64) -> Result<Option<i64>> {
    let row = client
        .query_one(
            "SELECT batch_rows_chosen FROM repartition.migrations WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.get(0))
}

/// Moves the recorded cursor to the end of a pass shared among workers.
pub async fn set_cursor(client: &impl GenericClient, id: i64, block: i64) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET cursor_block = $2, updated_at = now() WHERE id = $1",
            &[&id, &block],
        )
        .await?;
    Ok(())
}

pub async fn event(client: &impl GenericClient, id: i64, kind: &str, detail: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO repartition.events (migration_id, kind, detail) VALUES ($1, $2, $3)",
            &[&id, &kind, &detail],
        )
        .await?;
    Ok(())
}

/// A section that took a strong lock committed: its event, and the
/// migration's latest hold, in one statement.
pub async fn lock_held(
    client: &impl GenericClient,
    id: i64,
    step: &str,
    held_ms: f64,
    wait_ms: f64,
    detail: &str,
) -> Result<()> {
    client
        .execute(
            "WITH e AS (INSERT INTO repartition.events (migration_id, kind, detail) VALUES ($1, 'held', $5)) \
             UPDATE repartition.migrations SET last_lock_step = $2, last_lock_held_ms = $3, last_lock_wait_ms = $4, \
                 last_lock_at = clock_timestamp() WHERE id = $1",
            &[&id, &step, &held_ms, &wait_ms, &detail],
        )
        .await?;
    Ok(())
}

pub async fn set_error(client: &impl GenericClient, id: i64, error: &str) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET last_error = $2, updated_at = now() WHERE id = $1",
            &[&id, &error],
        )
        .await?;
    event(client, id, "error", error).await
}

/// The rows of the latest batch and the seconds it took.
pub async fn last_batch(client: &impl GenericClient, id: i64) -> Result<Option<(i64, f64)>> {
    let row = client
        .query_opt(
            "SELECT rows::int8, extract(epoch FROM finished_at - started_at)::float8 FROM repartition.batches \
             WHERE migration_id = $1 ORDER BY batch_no DESC LIMIT 1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Rate over the recent batches in rows per second, and the time of the
/// last batch.
pub async fn recent_rate(client: &impl GenericClient, id: i64, direction: &str) -> Result<Option<f64>> {
    let row = client
        .query_one(
            "SELECT sum(rows)::float8 / nullif(extract(epoch FROM max(finished_at) - min(started_at)), 0)::float8 \
             FROM (SELECT rows, started_at, finished_at FROM repartition.batches \
                   WHERE migration_id = $1 AND direction = $2 ORDER BY batch_no DESC LIMIT 50) b",
            &[&id, &direction],
        )
        .await?;
    Ok(row.get(0))
}

/// Starts an abort: the record says so before anything is undone.
pub async fn begin_abort(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET state = 'aborting', updated_at = now() WHERE id = $1 AND state = 'active'",
            &[&id],
        )
        .await?;
    event(client, id, "abort", "").await
}

/// Records an abort step, optionally with the move-back cursor.
pub async fn abort_step(client: &impl GenericClient, id: i64, step: &str, partition: i32, block: i64) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET abort_step = $2, abort_partition = $3, abort_block = $4, updated_at = now() \
             WHERE id = $1 AND state = 'aborting'",
            &[&id, &step, &partition, &block],
        )
        .await?;
    event(client, id, step, "").await
}

/// Starts a sweep pass: the cursor goes back to the first page.
pub async fn begin_sweep(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET sweeps = sweeps + 1, cursor_block = 0, updated_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
    event(client, id, "sweep", "").await
}

/// Sets the row estimate used for progress.
pub async fn set_rows_total(client: &impl GenericClient, id: i64, rows: i64) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET rows_total = $2 WHERE id = $1",
            &[&id, &rows],
        )
        .await?;
    Ok(())
}

/// The operator's controls, as the runner reads them between batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    pub paused: bool,
    pub batch_rows: Option<i64>,
    pub pause_ms: Option<i64>,
}

/// The operator's controls of migration `$1`; the runner prepares it once.
pub const CONTROLS: &str =
    "SELECT paused, batch_rows_override, pause_ms_override FROM repartition.migrations WHERE id = $1";

/// `statement` is `CONTROLS`, prepared.
pub async fn controls(client: &impl GenericClient, statement: &tokio_postgres::Statement, id: i64) -> Result<Controls> {
    let r = client.query_one(statement, &[&id]).await?;
    Ok(Controls {
        paused: r.get(0),
        batch_rows: r.get(1),
        pause_ms: r.get(2),
    })
}

/// Sets the operator's controls of the unfinished migration of a table.
pub async fn set_controls(
    client: &impl GenericClient,
    table: &str,
    paused: Option<bool>,
    batch_rows: Option<i64>,
    pause_ms: Option<i64>,
) -> Result<Option<i64>> {
    let row = client
        .query_opt(
            "UPDATE repartition.migrations SET paused = coalesce($2, paused), \
                 paused_reason = CASE WHEN $2 IS NULL THEN paused_reason END, \
                 paused_at = CASE WHEN $2 IS NULL THEN paused_at WHEN $2 THEN now() END, \
                 paused_by = CASE WHEN $2 IS NULL THEN paused_by WHEN $2 THEN \
                     format('operator (%s from %s)', session_user, coalesce(host(inet_client_addr()), 'local')) END, \
                 batch_rows_override = coalesce($3, batch_rows_override), \
                 pause_ms_override = coalesce($4, pause_ms_override), updated_at = now() \
             WHERE table_name = $1 AND state IN ('active', 'aborting') RETURNING id",
            &[&table, &paused, &batch_rows, &pause_ms],
        )
        .await?;
    let id = row.map(|r| r.get::<_, i64>(0));
    if let Some(id) = id {
        let detail = format!("paused={paused:?} batch_rows={batch_rows:?} pause_ms={pause_ms:?}");
        event(client, id, "control", &detail).await?;
    }
    Ok(id)
}

/// The runner pauses itself, for a reason the operator reads in `status`;
/// `migrate continue` goes on as after an operator's pause.
pub async fn pause_by_tool(client: &impl GenericClient, id: i64, reason: &str) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET paused = true, paused_reason = $2, paused_at = now(), paused_by = 'migrate', \
                 updated_at = now() WHERE id = $1",
            &[&id, &reason],
        )
        .await?;
    event(client, id, "paused", reason).await
}

/// Why the runner paused itself, if it did.
pub async fn paused_reason(client: &impl GenericClient, id: i64) -> Result<Option<String>> {
    Ok(client
        .query_one("SELECT paused_reason FROM repartition.migrations WHERE id = $1", &[&id])
        .await?
        .get(0))
}

/// Postponed swap: the runner says it waits, or stops waiting.
pub async fn set_waiting(client: &impl GenericClient, id: i64, waiting: bool) -> Result<()> {
    client
        .execute(
            "UPDATE repartition.migrations SET waiting_for_swap = $2, swap_requested = swap_requested AND $2 WHERE id = $1",
            &[&id, &waiting],
        )
        .await?;
    Ok(())
}

/// The operator asks a waiting runner to swap; false when none waits.
pub async fn request_swap(client: &impl GenericClient, table: &str) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE repartition.migrations SET swap_requested = true WHERE table_name = $1 AND state = 'active' AND waiting_for_swap",
            &[&table],
        )
        .await?;
    Ok(n == 1)
}

pub async fn swap_requested(client: &impl GenericClient, id: i64) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT swap_requested FROM repartition.migrations WHERE id = $1",
            &[&id],
        )
        .await?
        .get(0))
}
