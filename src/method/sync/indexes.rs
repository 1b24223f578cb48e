//! The sync method's deferred indexes. The partitioned copy is not read by
//! the application before the swap, so its non-unique indexes need not be
//! kept up to date row by row during the backfill: prepare creates each on
//! the parent only (`ON ONLY`, invalid), and after the backfill each
//! partition's index is built in one sorted pass (`CONCURRENTLY`, so the
//! mirror's writes never wait) and attached, which makes the parent's
//! valid. Unique indexes stay from the start: the mirror and the backfill's
//! `ON CONFLICT` need them. Each build is judged from the catalog, so a
//! run that died half-way continues where it stopped: an index already
//! attached is skipped, an invalid one left by a crash is dropped and
//! built again.

use super::sql;
use crate::blueprint::{names, Blueprint, IndexBody, IndexDef};
use crate::control;
use crate::exec::Context;
use crate::method::shared::prepare::deferred_indexes;
use crate::method::shared::session_limits;
use crate::method::{How, Part};
use crate::sql::{QualifiedName, Statement};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::Client;

/// One partition's index: built, then attached to the parent's.
pub struct Build {
    pub leaf: QualifiedName,
    pub parent: QualifiedName,
    pub child: QualifiedName,
    /// Only for an index a crash left invalid.
    pub drop: Part,
    pub create: Part,
    pub attach: Part,
}

fn plain(bp: &Blueprint) -> impl Iterator<Item = (usize, &IndexDef, &String)> {
    bp.indexes.iter().enumerate().filter_map(|(k, i)| match &i.body {
        IndexBody::Plain(tail) => Some((k + 1, i, tail)),
        IndexBody::Unique(_) => None,
    })
}

pub fn builds(bp: &Blueprint) -> Vec<Build> {
    if !deferred_indexes(bp) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for leaf in bp.leaves() {
        for (k, i, tail) in plain(bp) {
            let child = leaf.sibling(names::partition_index(&leaf.name, k));
            let parent = bp.table.sibling(i.shadow_name.clone());
            let mut attach = session_limits(bp);
            attach.push(Statement::new(
                "attached to the parent's index, which is valid once every partition's is",
                format!("ALTER INDEX {parent} ATTACH PARTITION {child}"),
            ));
            out.push(Build {
                drop: Part::new(
                    "index drop",
                    How::Waiting,
                    "only for an index a crash left invalid",
                    vec![Statement::new(
                        "an invalid index a crash left goes",
                        format!("DROP INDEX CONCURRENTLY IF EXISTS {child}"),
                    )],
                ),
                // An index is created in its table's schema: named bare.
                create: Part::new(
                    "index build",
                    How::Waiting,
                    "unless it is built already",
                    vec![Statement::new(
                        "a partition's index, built in one sorted pass without blocking the mirror's writes",
                        format!("CREATE INDEX CONCURRENTLY {} ON {leaf} USING {tail}", child.name),
                    )],
                ),
                attach: Part::new(
                    "index attach",
                    How::Transaction,
                    "unless it is attached already",
                    attach,
                )
                .locking(vec![parent.to_string(), leaf.to_string()]),
                leaf: leaf.clone(),
                parent,
                child,
            });
        }
    }
    out
}

/// The builds grouped by partition, in the order of the partitions.
fn by_leaf(builds: &[Build]) -> Vec<Vec<&Build>> {
    let mut out: Vec<Vec<&Build>> = Vec::new();
    for b in builds {
        match out.iter_mut().find(|g| g[0].leaf == b.leaf) {
            Some(g) => g.push(b),
            None => out.push(vec![b]),
        }
    }
    out
}

/// One partition's builds, each judged from the catalog first: attached
/// already, skipped; left invalid by a crash, dropped and built again.
/// Returns how many were built.
async fn build_leaf(client: &Client, bp: &Blueprint, builds: &[&Build]) -> Result<usize> {
    let s = &bp.settings;
    let mut built = 0;
    for b in builds {
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
        if valid == Some(false) {
            b.drop
                .run(client, s, "indexes", 0)
                .await
                .with_context(|| format!("cannot drop the invalid index {}", b.child))?;
        }
        if valid != Some(true) {
            b.create
                .run(client, s, "indexes", 0)
                .await
                .with_context(|| format!("cannot build the index {} on {}", b.child, b.leaf))?;
            crate::failpoint::hit("indexes:after-create");
        }
        b.attach
            .run(client, s, &format!("attaching {}", b.child), 0)
            .await
            .with_context(|| format!("cannot attach {} to {}", b.child, b.parent))?;
        built += 1;
    }
    Ok(built)
}

/// One connection's share: the next partition not taken by the other lane,
/// until none is left; false when stopped by a signal.
async fn lane(ctx: &Context, client: &Client, bp: &Blueprint, queue: &Mutex<VecDeque<Vec<&Build>>>) -> Result<bool> {
    loop {
        if ctx.stopping() {
            return Ok(false);
        }
        let Some(next) = queue
            .lock()
            .map_err(|_| anyhow!("the index queue was poisoned"))?
            .pop_front()
        else {
            return Ok(true);
        };
        build_leaf(client, bp, &next).await?;
    }
}

/// Whether the builds of the partitions the backfill has passed overlap
/// it. Only a one-worker backfill leaves a core idle for them; a throttle,
/// the gentle mode or a latency budget ask for the load of the batches
/// alone; and only a range key says from a row's page which partitions are
/// behind (rows of a range mostly lie together in insertion order).
fn overlaps(bp: &Blueprint) -> bool {
    deferred_indexes(bp)
        && bp.settings.workers <= 1
        && !bp.settings.gentle
        && bp.settings.throttle == Default::default()
        && !bp.key.list
        && bp.key.hash.is_none()
        && !bp.partitions.is_empty()
}

/// Pages of the original a sample reads, about: enough to place each
/// range's last rows within a few batches.
const SAMPLE_PAGES: f64 = 2_000.0;
/// How often the backfill's position is looked at.
const POLL: Duration = Duration::from_millis(200);

/// During a one-worker backfill, on a connection of its own: each range
/// partition's indexes are built once the backfill has passed the page by
/// which most rows of its range that a sample found lie, so the build and
/// the copy of later pages run on two cores at once. What the sample
/// missed (rows of an early range on a late page) is still copied, into a
/// partition whose index then takes it as any insert; correctness never
/// rests on the sample. Returns the builds made. A failure only ends the
/// overlap: what is not built is built after the backfill, and an invalid
/// index left is dropped and built again there.
pub async fn build_during_backfill(
    ctx: &Context,
    bp: &Blueprint,
    id: i64,
    reached: &AtomicI64,
    backfilled: &AtomicBool,
) -> usize {
    if !overlaps(bp) {
        return 0;
    }
    match overlap(ctx, bp, id, reached, backfilled).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "the partition indexes wait for the end of the backfill"
            );
            0
        }
    }
}

async fn overlap(
    ctx: &Context,
    bp: &Blueprint,
    id: i64,
    reached: &AtomicI64,
    backfilled: &AtomicBool,
) -> Result<usize> {
    let builds = builds(bp);
    let mut cfg = ctx.cfg.clone();
    cfg.application_name("migrate sync (indexes)");
    let client = crate::db::connect(&cfg)
        .await
        .context("cannot open a connection for the index builds")?;
    let pages: i64 = client
        .query_one(&crate::method::batches::sql::pages_statement(&bp.table), &[])
        .await?
        .get(0);
    let percent = (100.0 * SAMPLE_PAGES / pages.max(1) as f64).clamp(1.0, 100.0);
    // A page the sample read stands for 100/percent pages: a range is
    // behind once the backfill is past its sampled page by that much.
    let stride = (100.0 / percent).ceil() as i64;
    let last: HashMap<i32, i64> = client
        .query(&sql::last_pages(bp).sql, &[&(percent as f32)])
        .await
        .context("cannot sample where the original's ranges lie")?
        .iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
        .collect();
    // A range the sample found no row of is empty or nearly: at once.
    let behind_from: Vec<(i64, Vec<&Build>)> = by_leaf(&builds)
        .into_iter()
        .filter_map(|g| {
            let k = bp
                .partitions
                .iter()
                .position(|p| bp.table.sibling(p.name.clone()) == g[0].leaf)?;
            Some((last.get(&(k as i32 + 1)).map_or(0, |p| p + 1 + stride), g))
        })
        .collect();
    let controls = client.prepare(control::CONTROLS).await?;
    let mut done = vec![false; behind_from.len()];
    let mut built = 0;
    loop {
        if ctx.stopping() || backfilled.load(Ordering::Relaxed) {
            return Ok(built);
        }
        let at = reached.load(Ordering::Relaxed);
        let paused = control::controls(&client, &controls, id).await?.paused;
        let next = done
            .iter()
            .zip(&behind_from)
            .position(|(d, (from, _))| !d && at >= *from);
        match next {
            Some(k) if !paused => {
                built += build_leaf(&client, bp, &behind_from[k].1).await?;
                done[k] = true;
            }
            _ if done.iter().all(|d| *d) => return Ok(built),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// What `plan` shows of the builds.
pub fn parts(bp: &Blueprint) -> Vec<Part> {
    let mut out = Vec::new();
    if overlaps(bp) {
        out.push(Part::new(
            "index sample",
            How::Plain,
            "with one worker, beside the first batches: each partition's indexes are built as soon as the backfill has passed the page by which 95 in 100 of its range's sampled rows lie, the rest after the last batch",
            vec![sql::last_pages(bp)],
        ));
    }
    out.extend(builds(bp).into_iter().flat_map(|b| [b.drop, b.create, b.attach]));
    out
}

/// Builds every partition's index and attaches it; returns false when
/// stopped by a signal before the end. The partitions are shared between
/// two connections, a partition's indexes on one of them, so that two
/// builds run at once: a build is one backend's sort and two scans, and a
/// concurrent build's waits for older snapshots do not wait for another
/// build in its waiting phase (four partitions' 12 indexes took 3.5–3.9 s
/// this way against 4.8–4.9 s one by one, on 2 cores).
pub async fn build_deferred(ctx: &Context, client: &Client, bp: &Blueprint) -> Result<bool> {
    let builds = builds(bp);
    if builds.is_empty() {
        return Ok(true);
    }
    ctx.reporter.phase(
        "indexes",
        &format!("building {} partition indexes of {}", builds.len(), bp.shadow),
    );
    let started = std::time::Instant::now();
    let groups = by_leaf(&builds);
    let two = groups.len() > 1;
    let queue = Mutex::new(VecDeque::from(groups));
    let done = if two {
        let other = crate::db::connect(&ctx.cfg)
            .await
            .context("cannot open a second connection for the index builds")?;
        let (a, b) = tokio::join!(lane(ctx, client, bp, &queue), lane(ctx, &other, bp, &queue));
        a? && b?
    } else {
        lane(ctx, client, bp, &queue).await?
    };
    if !done {
        return Ok(false);
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
