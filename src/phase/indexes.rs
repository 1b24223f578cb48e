//! The sync method's deferred indexes. The partitioned copy is not read by
//! the application before the swap, so its non-unique indexes need not be
//! kept up to date row by row during the backfill: prepare creates each on
//! the parent only (`ON ONLY`, invalid), and after the backfill each
//! partition's index is built in one sorted pass (`CONCURRENTLY`, so the
//! mirror's writes never wait) and attached, which makes the parent's
//! valid. Unique indexes stay from the start: the mirror and the backfill's
//! `ON CONFLICT` need them.

use crate::blueprint::{Blueprint, IndexBody, IndexDef};
use crate::plan_file::Method;
use crate::sql::{Ident, QualifiedName, Statement};

/// Whether the blueprint builds its non-unique indexes after the backfill.
pub fn deferred(bp: &Blueprint) -> bool {
    bp.method == Method::Sync
}

/// The index of partition `leaf` for the `k`-th deferred index.
pub fn child_name(leaf: &Ident, k: usize) -> Ident {
    leaf.derive(&format!("_{k}_idx"))
}

/// One partition's index: built, then attached to the parent's.
pub struct Build {
    pub leaf: QualifiedName,
    pub parent: QualifiedName,
    pub child: QualifiedName,
    pub create: String,
    pub attach: String,
}

fn plain(bp: &Blueprint) -> impl Iterator<Item = (usize, &IndexDef, &String)> {
    bp.indexes.iter().enumerate().filter_map(|(k, i)| match &i.body {
        IndexBody::Plain(tail) => Some((k + 1, i, tail)),
        IndexBody::Unique(_) => None,
    })
}

pub fn builds(bp: &Blueprint) -> Vec<Build> {
    if !deferred(bp) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for leaf in super::abort::leaves(bp) {
        for (k, i, tail) in plain(bp) {
            let child = leaf.sibling(child_name(&leaf.name, k));
            let parent = bp.table.sibling(i.shadow_name.clone());
            out.push(Build {
                // An index is created in its table's schema: named bare.
                create: format!("CREATE INDEX CONCURRENTLY {} ON {leaf} USING {tail}", child.name),
                attach: format!("ALTER INDEX {parent} ATTACH PARTITION {child}"),
                leaf: leaf.clone(),
                parent,
                child,
            });
        }
    }
    out
}

/// What `plan` shows of the build.
pub fn statements(bp: &Blueprint) -> Vec<Statement> {
    let mut s = Vec::new();
    for b in builds(bp) {
        s.push(Statement::new(
            "a partition's index, built in one sorted pass without blocking the mirror's writes (an invalid one left by a crash is dropped and built again)",
            b.create,
        ));
        s.push(Statement::new(
            "attached to the parent's index, which is valid once every partition's is",
            b.attach,
        ));
    }
    s
}
