//! Runbook hooks: the plan's shell commands, run at phase boundaries, on
//! failure and on completion, with the migration's state in their
//! environment. A hook that fails or hangs is reported and the run goes on:
//! a notification must never break a migration.

use crate::control::MigrationRow;
use std::time::Duration;

const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(command: Option<&String>, event: &str, m: &MigrationRow, error: Option<&str>) {
    let Some(command) = command else { return };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("MIGRATE_EVENT", event)
        .env("MIGRATE_TABLE", &m.table_name)
        .env("MIGRATE_METHOD", &m.method)
        .env("MIGRATE_PHASE", m.phase.as_str())
        .env("MIGRATE_STATE", &m.state)
        .env("MIGRATE_MIGRATION_ID", m.id.to_string())
        .env("MIGRATE_ROWS_MOVED", m.rows_moved.to_string())
        .env("MIGRATE_ERROR", error.unwrap_or(""))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(HOOK_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => tracing::info!(hook = event, "hook ran"),
        Ok(Ok(out)) => tracing::warn!(
            hook = event,
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "a hook failed; the migration goes on"
        ),
        Ok(Err(e)) => tracing::warn!(hook = event, error = %e, "a hook could not be started; the migration goes on"),
        Err(_) => tracing::warn!(
            hook = event,
            "a hook ran longer than 60s and was stopped; the migration goes on"
        ),
    }
}
