//! Lock-timeout retries. Every step that takes a strong lock runs under
//! `SET LOCAL lock_timeout`; when it times out (or is chosen as a deadlock
//! victim) the tool steps back, waits with jittered exponential backoff and
//! tries again, within a bounded number of tries. There is no untimed last
//! try. When the tries run out, the error names the sessions in the way.

use crate::error::Failure;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// What to do with sessions that keep the tool from its locks, once half
/// its tries are spent: nothing unless the operator asked (`--cancel-blockers`
/// or `--terminate-blockers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockerAction {
    #[default]
    Wait,
    Cancel,
    Terminate,
}

static BLOCKERS: std::sync::OnceLock<BlockerAction> = std::sync::OnceLock::new();

/// Set once by the command line.
pub fn set_blocker_action(a: BlockerAction) {
    let _ = BLOCKERS.set(a);
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub tries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(retries: u32) -> Self {
        RetryPolicy {
            tries: retries + 1,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
        }
    }

    /// The wait before try `n + 1`: exponential, capped, with jitter so
    /// that retries do not line up with the application's own rhythm.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << n.min(16));
        let ceiling = exp.min(self.cap);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
    }
}

/// The lock timeout the tool runs under: the plan's, capped at half the
/// server's deadlock_timeout, so that in any lock cycle with the
/// application the tool's wait ends first and the tool steps back.
pub fn lock_timeout_under_deadlock(plan_ms: u64, deadlock_timeout_ms: i64) -> u64 {
    plan_ms.min((deadlock_timeout_ms.max(100) / 2) as u64).max(10)
}

/// Whether an error means "someone else holds what we need": the tool
/// yields and tries again.
pub fn is_contention(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Whether an error is `statement_timeout` firing (or a cancel).
pub fn is_statement_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::QUERY_CANCELED)
}

/// The database error inside an error chain, if any.
pub fn pg_error(e: &anyhow::Error) -> Option<&tokio_postgres::Error> {
    e.chain().find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
}

/// Whether an error chain holds a contention error.
pub fn is_contention_chain(e: &anyhow::Error) -> bool {
    pg_error(e).is_some_and(is_contention)
}

/// The tries of one step: after each failed try, [`Retry::failed`] waits
/// with backoff when the failure was lock contention and tries are left,
/// and otherwise gives the error to stop with; when the tries run out, it
/// names the sessions holding locks on `relations`.
pub struct Retry<'r> {
    policy: RetryPolicy,
    what: &'r str,
    relations: &'r [String],
    n: u32,
}

impl<'r> Retry<'r> {
    pub fn new(policy: RetryPolicy, what: &'r str, relations: &'r [String]) -> Retry<'r> {
        Retry {
            policy,
            what,
            relations,
            n: 0,
        }
    }

    /// Ok once it has waited for the next try; the error to stop with
    /// otherwise.
    pub async fn failed(&mut self, client: &Client, e: anyhow::Error) -> anyhow::Result<()> {
        if !is_contention_chain(&e) {
            return Err(e);
        }
        let last = pg_error(&e).map(message).unwrap_or_default();
        if self.n + 1 >= self.policy.tries {
            let blockers = blockers(client, self.relations).await.unwrap_or_default();
            return Err(Failure::LockTimeout(format!(
                "{} could not get its locks in {} tries ({last}){}",
                self.what,
                self.policy.tries,
                if blockers.is_empty() {
                    String::new()
                } else {
                    format!("; sessions holding locks on the tables: {}", blockers.join("; "))
                }
            ))
            .into());
        }
        let action = BLOCKERS.get().copied().unwrap_or_default();
        if action != BlockerAction::Wait && self.n + 1 >= self.policy.tries / 2 {
            act_on_blockers(client, self.relations, action).await;
        }
        let wait = self.policy.backoff(self.n);
        crate::lock_counts::retry();
        tracing::info!(step = self.what, attempt = self.n + 1, wait_ms = wait.as_millis() as u64, reason = %last, "lock not available; stepping back");
        tokio::time::sleep(wait).await;
        self.n += 1;
        Ok(())
    }
}

/// Runs `step` until it succeeds, fails for a reason other than lock
/// contention, or the tries run out (see [`Retry`]). `step` must leave no
/// transaction open when it fails.
pub async fn retrying<T, F, Fut>(
    client: &Client,
    policy: RetryPolicy,
    what: &str,
    relations: &[String],
    mut step: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut retry = Retry::new(policy, what, relations);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) => retry.failed(client, e).await?,
        }
    }
}

/// The server's message for a database error, else the error itself.
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// pg_locks shows the locks of every database of the server, and a
/// relation's OID can be the same in two of them.
const THIS_DATABASE: &str = "(SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())";

/// Cancels the queries of, or terminates, the sessions holding locks on
/// the relations, naming each in the log.
async fn act_on_blockers(client: &Client, relations: &[String], action: BlockerAction) {
    let function = match action {
        BlockerAction::Cancel => "pg_cancel_backend",
        BlockerAction::Terminate => "pg_terminate_backend",
        BlockerAction::Wait => return,
    };
    let sql = format!(
        "SELECT DISTINCT l.pid, pg_catalog.{function}(l.pid) FROM pg_catalog.pg_locks l \
         WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND l.database = {THIS_DATABASE} \
           AND l.relation IN (SELECT pg_catalog.to_regclass(r) FROM pg_catalog.unnest($1::text[]) r)"
    );
    let who = blockers(client, relations).await.unwrap_or_default();
    match client.query(&sql, &[&relations]).await {
        Ok(rows) if !rows.is_empty() => {
            tracing::warn!(action = function, sessions = %who.join("; "), "acting on the sessions in the way, as asked");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %message(&e), "could not act on the sessions in the way"),
    }
}

/// Sessions other than ours that hold locks on the given relations.
pub async fn blockers(client: &Client, relations: &[String]) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT a.pid, coalesce(a.usename::text, ''), coalesce(a.state, ''), \
                    coalesce(extract(epoch FROM now() - a.xact_start)::float8, 0), \
                    left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 160), l.mode \
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND l.database = {THIS_DATABASE} \
               AND l.relation IN (SELECT pg_catalog.to_regclass(r) FROM pg_catalog.unnest($1::text[]) r) \
             ORDER BY 1"
            ),
            &[&relations],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "pid {} ({}, {}, {} held for {:.1}s): {}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(5),
                r.get::<_, f64>(3),
                r.get::<_, String>(4)
            )
        })
        .collect())
}

/// Runs `sql`, one whole transaction (`BEGIN; ...; COMMIT`) in one round
/// trip, retried like any step on lock timeouts; a failed try is rolled
/// back so that the next starts clean.
pub async fn retrying_tx(
    client: &Client,
    policy: RetryPolicy,
    what: &str,
    relations: &[String],
    sql: &str,
) -> anyhow::Result<()> {
    retrying(client, policy, what, relations, || async {
        let r = client.batch_execute(sql).await;
        if r.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        r.map_err(anyhow::Error::from)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::new(10);
        for n in 0..20 {
            let d = p.backoff(n);
            assert!(d <= p.cap);
        }
        assert!(p.backoff(0) <= Duration::from_millis(50));
        assert!(p.backoff(10) >= Duration::from_millis(2500));
    }
}
