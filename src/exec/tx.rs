//! The one transaction executor. A step's transaction is sent as one
//! simple-query message: its statements, then its control record, which
//! PostgreSQL runs as one implicit transaction. A strong lock it takes is
//! therefore held for one round trip whatever the network's latency, and
//! an error anywhere rolls everything back on the server at once, before
//! the client hears of it: no transaction is ever left open on the
//! connection. Statements that cannot run in a transaction (`CONCURRENTLY`,
//! `VACUUM`, a validation that must not hold a transaction open) run
//! [`alone`], under the session's limits set around them.
//!
//! `plan` prints what [`message`] and [`alone_statements`] render, so what
//! it shows is what is sent.

use crate::blueprint::Settings;
use crate::control::{self, Phase};
use crate::db::retry::{retrying, RetryPolicy};
use crate::sql::{quote_literal, Statement};
use anyhow::{Context as _, Result};
use tokio_postgres::{Client, SimpleQueryMessage};

/// What a step records in the control table, in its own transaction.
#[derive(Clone, Debug)]
pub enum Record {
    /// The migration moves from one phase to the next.
    Advance(Phase, Phase),
    /// An abort reached a step.
    AbortStep(&'static str),
    /// The abort is complete.
    Aborted,
}

/// How the migration's id appears in what `plan` prints.
pub const ID_PLACEHOLDER: &str = ":migration_id";

impl Record {
    /// The record as one statement; it fails, and so rolls back its
    /// transaction, when another runner moved the record meanwhile.
    /// `id` is None for `plan`, which names the parameter instead.
    pub fn statement(&self, id: Option<i64>) -> Statement {
        let id = id.map_or(ID_PLACEHOLDER.to_string(), |i| i.to_string());
        let (why, update, guard, kind) = match self {
            Record::Advance(from, to) => (
                "the control record, in the same transaction: the migration moves to the next phase",
                format!(
                    "UPDATE repartition.migrations SET phase = {to}, updated_at = now(), last_error = NULL, \
                     finished_at = CASE WHEN {to} = 'finished' THEN now() END, \
                     state = CASE WHEN {to} = 'finished' THEN 'done' ELSE state END, \
                     move_started_at = CASE WHEN {to} = 'routed' THEN now() ELSE move_started_at END \
                     WHERE id = {id} AND phase = {from} AND state = 'active'",
                    to = quote_literal(to.as_str()),
                    from = quote_literal(from.as_str()),
                ),
                format!(
                    "the control record of migration {id} is no longer at phase {} (another runner?)",
                    from.as_str()
                ),
                to.as_str(),
            ),
            Record::AbortStep(step) => (
                "the control record, in the same transaction: the abort's step",
                format!(
                    "UPDATE repartition.migrations SET abort_step = {s}, abort_partition = 0, abort_block = 0, updated_at = now() \
                     WHERE id = {id} AND state = 'aborting'",
                    s = quote_literal(step)
                ),
                format!("migration {id} is no longer being aborted (another runner?)"),
                *step,
            ),
            Record::Aborted => (
                "the control record, in the same transaction: the abort is complete",
                format!(
                    "UPDATE repartition.migrations SET state = 'aborted', finished_at = now(), updated_at = now() \
                     WHERE id = {id} AND state = 'aborting'"
                ),
                format!("migration {id} is no longer being aborted (another runner?)"),
                "aborted",
            ),
        };
        Statement::new(
            why,
            format!(
                "DO $record$\nBEGIN\n  {update};\n  IF NOT FOUND THEN\n    RAISE EXCEPTION {};\n  END IF;\n  \
                 INSERT INTO repartition.events (migration_id, kind, detail) VALUES ({id}, {}, '');\nEND\n$record$",
                quote_literal(&guard),
                quote_literal(kind)
            ),
        )
    }
}

/// Set just before a step's LOCK (the application's statements queue
/// behind the request from then on) and just after it (from then on the
/// locks are held).
fn lock_mark(setting: &str, why: &'static str) -> Statement {
    Statement::new(
        why,
        format!("SELECT pg_catalog.set_config('repartition.{setting}', pg_catalog.clock_timestamp()::text, true)"),
    )
}

/// The hold and the LOCK's wait, in milliseconds, read last. Without a
/// LOCK, the hold counts from the message's start.
fn timing() -> Statement {
    Statement::new(
        "how long the locks were held and how long the LOCK waited, in milliseconds",
        "SELECT (extract(epoch FROM pg_catalog.clock_timestamp() - l.granted) * 1000)::float8::text, \
         (extract(epoch FROM l.granted - l.asked) * 1000)::float8::text \
         FROM (SELECT coalesce(nullif(pg_catalog.current_setting('repartition.locked_at', true), '')::timestamptz, \
         pg_catalog.statement_timestamp()) AS granted, \
         coalesce(nullif(pg_catalog.current_setting('repartition.lock_asked', true), '')::timestamptz, \
         pg_catalog.statement_timestamp()) AS asked) l",
    )
}

/// Everything a step's transaction sends, in order: its statements (with
/// the grant time marked after its LOCK), its control record, the timing.
pub fn message(stmts: &[Statement], record: Option<&Statement>) -> Vec<Statement> {
    let mut out = Vec::with_capacity(stmts.len() + 3);
    for st in stmts {
        let lock = st.sql.starts_with("LOCK TABLE");
        if lock {
            out.push(lock_mark(
                "lock_asked",
                "when the locks were asked for, for the LOCK's wait the tool records",
            ));
        }
        out.push(st.clone());
        if lock {
            out.push(lock_mark(
                "locked_at",
                "when the locks were granted, for the hold time the tool records",
            ));
        }
    }
    out.extend(record.cloned());
    out.push(timing());
    out
}

/// The text of one simple-query message.
pub fn wire(stmts: &[Statement]) -> String {
    stmts.iter().map(|s| format!("{};\n", s.sql)).collect()
}

/// `SET LOCAL lock_timeout`; every form in which the tool sets its limits
/// is written here.
pub fn set_local_lock_timeout(ms: u64) -> Statement {
    Statement::new(
        "never wait long for a lock: the application's statements would queue behind the wait",
        format!("SET LOCAL lock_timeout = {}", quote_literal(&format!("{ms}ms"))),
    )
}

pub fn set_local_statement_timeout(ms: u64) -> Statement {
    Statement::new(
        "bound every statement of the tool",
        format!("SET LOCAL statement_timeout = {}", quote_literal(&format!("{ms}ms"))),
    )
}

/// The session's lock timeout, for statements outside a transaction.
pub fn set_lock_timeout(ms: u64) -> Statement {
    Statement::new(
        "outside a transaction: the lock timeout still bounds the wait for a lock",
        format!("SET lock_timeout = {}", quote_literal(&format!("{ms}ms"))),
    )
}

/// The `SET LOCAL` lines every transaction of the tool starts with.
pub fn local_limits(s: &Settings) -> Vec<Statement> {
    vec![
        set_local_lock_timeout(s.lock_timeout_ms),
        set_local_statement_timeout(s.statement_timeout_ms),
    ]
}

/// How long a statement run alone may wait for a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The plan's lock timeout.
    Bounded,
    /// As long as it takes: for builds `CONCURRENTLY`, whose waits block
    /// nobody.
    Unbounded,
}

/// What a statement that runs outside any transaction is sent with: the
/// lock timeout holds for the lock it waits for first (unless `wait` says
/// otherwise), and no statement timeout (a validation or an index build
/// takes what the table needs).
pub fn alone_statements(s: &Settings, wait: Wait, stmts: &[Statement]) -> Vec<Statement> {
    let lock = match wait {
        Wait::Bounded => set_lock_timeout(s.lock_timeout_ms),
        Wait::Unbounded => Statement::new(
            "it waits for older transactions on any table, blocking nobody meanwhile: no lock timeout",
            "SET lock_timeout = 0",
        ),
    };
    let mut out = vec![
        lock,
        Statement::new(
            "and no statement timeout: it takes as long as the table needs",
            "SET statement_timeout = 0",
        ),
    ];
    out.extend(stmts.iter().cloned());
    out.push(Statement::new(
        "the session's limits as they were",
        "RESET lock_timeout",
    ));
    out.push(Statement::new(
        "the session's limits as they were",
        "RESET statement_timeout",
    ));
    out
}

/// Runs statements that cannot share a transaction, each in its own round
/// trip, framed by [`alone_statements`]; the limits are reset even when
/// one fails.
pub async fn alone(client: &Client, s: &Settings, wait: Wait, stmts: &[Statement]) -> Result<()> {
    let all = alone_statements(s, wait, stmts);
    let (set, rest) = all.split_at(2);
    let (body, reset) = rest.split_at(rest.len() - 2);
    let res = async {
        for st in set.iter().chain(body) {
            client
                .batch_execute(&st.sql)
                .await
                .with_context(|| format!("failed at the step \"{}\"", st.why))?;
        }
        Ok(())
    }
    .await;
    for st in reset {
        let _ = client.batch_execute(&st.sql).await;
    }
    res
}

/// Writes a control record on its own.
pub async fn record(client: &Client, id: i64, rec: &Record) -> Result<()> {
    client
        .batch_execute(&rec.statement(Some(id)).sql)
        .await
        .context("cannot write the control record")
}

/// Runs a step's statements and its control record as one transaction in
/// one message, retried on lock contention, and records how long its
/// locks were held: from the grant to its last statement (the commit's WAL
/// flush comes after). The failpoint `WHAT:before-commit` ends the process
/// before the message is sent (and so before every try of it), `after-commit`
/// once it has committed.
pub async fn transaction(
    client: &Client,
    s: &Settings,
    what: &str,
    stmts: &[Statement],
    relations: &[String],
    record: Option<(i64, Record)>,
) -> Result<()> {
    let rec = record.as_ref().map(|(id, r)| r.statement(Some(*id)));
    let sql = wire(&message(stmts, rec.as_ref()));
    let policy = RetryPolicy::new(s.retries);
    let sql = &sql;
    let (held_ms, lock_wait_ms) = retrying(client, policy, what, relations, || async move {
        crate::failpoint::hit(&format!("{what}:before-commit"));
        let out = client
            .simple_query(sql)
            .await
            .with_context(|| format!("{what} failed"))?;
        Ok(timing_of(&out))
    })
    .await?;
    crate::failpoint::hit(&format!("{what}:after-commit"));
    let has_lock = stmts.iter().any(|st| st.sql.starts_with("LOCK TABLE"));
    let mut detail = format!("{what}: {held_ms:.1} ms");
    if has_lock {
        crate::lock_counts::section(held_ms, lock_wait_ms);
        tracing::info!(phase = what, held_ms, lock_wait_ms, "committed");
        detail.push_str(&format!(" (its LOCK waited {lock_wait_ms:.1} ms)"));
    } else {
        tracing::info!(phase = what, held_ms, "committed");
    }
    if let (Some((id, _)), false) = (record, stmts.is_empty()) {
        let _ = if has_lock {
            control::lock_held(client, id, what, held_ms, lock_wait_ms, &detail).await
        } else {
            control::event(client, id, "held", &detail).await
        };
    }
    Ok(())
}

/// The two figures of [`timing`], from the message's last row.
fn timing_of(out: &[SimpleQueryMessage]) -> (f64, f64) {
    let row = out.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let num = |i: usize| {
        row.and_then(|r| r.get(i))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (num(0), num(1).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_marked_and_the_record_comes_last_but_the_timing() {
        let stmts = vec![
            Statement::new("a", "SET LOCAL lock_timeout = '1ms'"),
            Statement::new("b", "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"),
            Statement::new("c", "ALTER TABLE t RENAME TO u"),
        ];
        let rec = Record::Advance(Phase::Prepared, Phase::Routed).statement(Some(7));
        let m = message(&stmts, Some(&rec));
        let sqls: Vec<&str> = m.iter().map(|s| s.sql.as_str()).collect();
        assert!(sqls[1].contains("repartition.lock_asked"));
        assert_eq!(sqls[2], "LOCK TABLE t IN ACCESS EXCLUSIVE MODE");
        assert!(sqls[3].contains("repartition.locked_at"));
        assert_eq!(sqls[4], "ALTER TABLE t RENAME TO u");
        assert!(sqls[5].starts_with("DO $record$") && sqls[5].contains("WHERE id = 7 AND phase = 'prepared'"));
        assert!(sqls[6].contains("statement_timestamp"));
        assert!(wire(&m).ends_with(";\n"));
    }

    #[test]
    fn plan_names_the_id() {
        let r = Record::Aborted.statement(None);
        assert!(r.sql.contains(ID_PLACEHOLDER));
    }
}
