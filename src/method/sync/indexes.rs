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

use crate::blueprint::{names, Blueprint, IndexBody, IndexDef};
use crate::exec::Context;
use crate::method::shared::prepare::deferred_indexes;
use crate::method::shared::session_limits;
use crate::method::{How, Part};
use crate::sql::{QualifiedName, Statement};
use anyhow::{bail, Context as _, Result};
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

/// The partitions, in the order of their builds.
fn leaves_of(builds: &[Build]) -> Vec<&QualifiedName> {
    let mut out: Vec<&QualifiedName> = Vec::new();
    for b in builds {
        if !out.contains(&&b.leaf) {
            out.push(&b.leaf);
        }
    }
    out
}

/// One connection's builds, each judged from the catalog first: attached
/// already, skipped; left invalid by a crash, dropped and built again.
async fn lane(ctx: &Context, client: &Client, bp: &Blueprint, builds: &[&Build]) -> Result<bool> {
    let s = &bp.settings;
    for b in builds {
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
    }
    Ok(true)
}

/// What `plan` shows of the builds.
pub fn parts(bp: &Blueprint) -> Vec<Part> {
    builds(bp)
        .into_iter()
        .flat_map(|b| [b.drop, b.create, b.attach])
        .collect()
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
    let leaves: Vec<&QualifiedName> = leaves_of(&builds);
    let lane_of = |b: &Build| leaves.iter().position(|l| **l == b.leaf).unwrap_or(0) % 2;
    let (first, second): (Vec<&Build>, Vec<&Build>) = builds.iter().partition(|b| lane_of(b) == 0);
    let done = if second.is_empty() {
        lane(ctx, client, bp, &first).await?
    } else {
        let other = crate::db::connect(&ctx.cfg)
            .await
            .context("cannot open a second connection for the index builds")?;
        let (a, b) = tokio::join!(lane(ctx, client, bp, &first), lane(ctx, &other, bp, &second));
        a? && b?
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
