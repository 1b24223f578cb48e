//! One runner per table: a session-level advisory lock held on a dedicated
//! connection for the whole run (a pooled connection could be recycled and
//! silently release it).

use crate::error::Failure;
use anyhow::Result;
use tokio_postgres::Client;

/// The first half of the advisory lock key, naming this tool.
pub const LOCK_CLASS: i32 = 0x5250_4d47; // "RPMG"

pub struct RunnerLock {
    client: Client,
}

impl RunnerLock {
    /// Takes the lock for `table` or reports who holds it.
    pub async fn acquire(client: Client, table: &str) -> Result<RunnerLock> {
        let got: bool = client
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2))",
                &[&LOCK_CLASS, &table],
            )
            .await?
            .get(0);
        if got {
            return Ok(RunnerLock { client });
        }
        let holder = client
            .query_opt(
                "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local') \
                 FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int = $1 \
                   AND l.objid::int = pg_catalog.hashtext($2) \
                   AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
                 LIMIT 1",
                &[&LOCK_CLASS, &table],
            )
            .await?;
        let who = holder
            .map(|r| {
                format!(
                    " (server process {}, {} from {})",
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                )
            })
            .unwrap_or_default();
        Err(Failure::Conflict(format!(
            "another migrate process is already working on {table}{who}; wait for it to finish or stop it first"
        ))
        .into())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
