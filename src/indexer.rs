//! Builds the sync method's deferred indexes after the backfill (see
//! `phase::indexes`). Each step is judged from the catalog, so a run that
//! died half-way continues where it stopped: an index already attached is
//! skipped, an invalid one left by a crash is dropped and built again.

use crate::blueprint::Blueprint;
use crate::db::retry::{retrying_tx, RetryPolicy};
use crate::phase::indexes;
use crate::runner::Context;
use anyhow::{bail, Context as _, Result};
use tokio_postgres::Client;

/// Returns false when stopped by a signal before the end.
pub async fn build_deferred(ctx: &Context, client: &Client, bp: &Blueprint) -> Result<bool> {
    let builds = indexes::builds(bp);
    if builds.is_empty() {
        return Ok(true);
    }
    ctx.reporter.phase(
        "indexes",
        &format!("building {} partition indexes of {}", builds.len(), bp.shadow),
    );
    let started = std::time::Instant::now();
    for b in &builds {
        if ctx.stopping() {
            return Ok(false);
        }
        let attached: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid \
                 WHERE i.inhparent = to_regclass($1) AND x.indrelid = to_regclass($2))",
                &[&b.parent.to_string(), &b.leaf.to_string()],
            )
            .await?
            .get(0);
        if attached {
            continue;
        }
        let valid: Option<bool> = client
            .query_opt(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
                &[&b.child.to_string()],
            )
            .await?
            .map(|r| r.get(0));
        // CONCURRENTLY waits for transactions older than the build, on
        // whatever table: untimed here, as it blocks nobody (its lock on
        // the partition conflicts only with DDL and VACUUM).
        let unbounded = |sql: String| async move {
            client
                .batch_execute("SET lock_timeout = 0; SET statement_timeout = 0")
                .await?;
            let r = client.batch_execute(&sql).await;
            let _ = client
                .batch_execute("RESET lock_timeout; RESET statement_timeout")
                .await;
            r
        };
        if valid == Some(false) {
            unbounded(format!("DROP INDEX CONCURRENTLY IF EXISTS {}", b.child))
                .await
                .with_context(|| format!("cannot drop the invalid index {}", b.child))?;
        }
        if valid != Some(true) {
            unbounded(b.create.clone())
                .await
                .with_context(|| format!("cannot build the index {} on {}", b.child, b.leaf))?;
            crate::failpoint::hit("indexes:after-create");
        }
        let sql = format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'; {}; COMMIT",
            bp.settings.lock_timeout_ms, b.attach
        );
        let rels = [b.parent.to_string(), b.leaf.to_string()];
        retrying_tx(
            client,
            RetryPolicy::new(bp.settings.retries),
            &format!("attaching {}", b.child),
            &rels,
            &sql,
        )
        .await
        .with_context(|| format!("cannot attach {} to {}", b.child, b.parent))?;
    }
    let invalid: Vec<String> = client
        .query(
            "SELECT x.indexrelid::regclass::text FROM pg_index x WHERE x.indrelid = to_regclass($1) AND NOT x.indisvalid",
            &[&bp.shadow.to_string()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !invalid.is_empty() {
        bail!(
            "the indexes {} of {} are still not valid after every partition's was attached",
            invalid.join(", "),
            bp.shadow
        );
    }
    tracing::info!(
        indexes = builds.len(),
        secs = started.elapsed().as_secs_f64(),
        "partition indexes built"
    );
    Ok(true)
}
