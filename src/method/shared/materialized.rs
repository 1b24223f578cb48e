//! Materialized views that read the table: built again on the partitioned
//! table after the swap under another name, with their indexes, grants and
//! comment (outside any lock, for as long as the query takes), then given
//! the name in one short transaction, so that their readers never find them
//! missing.

use crate::blueprint::{names, Blueprint};
use crate::sql::{quote_ident, quote_literal, Statement};

/// Each view built again under its temporary name; run again from the
/// start after a crash.
pub fn build(bp: &Blueprint) -> Vec<Statement> {
    let mut s = Vec::new();
    for m in &bp.materialized {
        let new = names::rebuilt(&m.name);
        s.push(Statement::new(
            "a build a crash left goes",
            format!("DROP MATERIALIZED VIEW IF EXISTS {new}"),
        ));
        s.push(Statement::new(
            "the materialized view built again, now reading the partitioned table (outside any lock)",
            format!(
                "CREATE MATERIALIZED VIEW {new} AS {} WITH {}DATA",
                m.definition.trim_end().trim_end_matches(';'),
                if m.populated { "" } else { "NO " }
            ),
        ));
        s.push(Statement::new(
            "its owner, as before",
            format!("ALTER MATERIALIZED VIEW {new} OWNER TO {}", quote_ident(&m.owner)),
        ));
        for (index, unique, tail) in &m.indexes {
            s.push(Statement::new(
                "its index, as before",
                format!(
                    "CREATE {}INDEX {} ON {new} USING {tail}",
                    if *unique { "UNIQUE " } else { "" },
                    names::rebuilt_index(index)
                ),
            ));
        }
        s.extend(super::grants_of(&m.grants, "TABLE", &new.to_string()));
        if let Some(c) = &m.comment {
            s.push(Statement::new(
                "its comment, as before",
                format!("COMMENT ON MATERIALIZED VIEW {new} IS {}", quote_literal(c)),
            ));
        }
    }
    s
}

/// One short transaction: the old views go and the new ones take their
/// names and their indexes' names.
pub fn put_in_place(bp: &Blueprint) -> Vec<Statement> {
    if bp.materialized.is_empty() {
        return Vec::new();
    }
    // LOCK TABLE takes no materialized view: the DROP takes its lock
    // (readers wait for this short transaction), under the lock timeout.
    let mut s = super::session_limits(bp);
    for m in &bp.materialized {
        let new = names::rebuilt(&m.name);
        s.push(Statement::new(
            "the materialized view that reads the original goes",
            format!("DROP MATERIALIZED VIEW {}", m.name),
        ));
        s.push(Statement::new(
            "the one built on the partitioned table takes its name",
            format!("ALTER MATERIALIZED VIEW {new} RENAME TO {}", m.name.name),
        ));
        for (index, _, _) in &m.indexes {
            s.push(Statement::new(
                "its index takes the old index's name",
                format!(
                    "ALTER INDEX {} RENAME TO {index}",
                    m.name.sibling(names::rebuilt_index(index))
                ),
            ));
        }
    }
    s
}

/// The parts that do it, at the start of the step after the swap; none
/// when no materialized view reads the table.
pub fn parts(bp: &Blueprint) -> Vec<crate::method::Part> {
    use crate::method::{How, Part};
    if bp.materialized.is_empty() {
        return Vec::new();
    }
    let rels: Vec<String> = bp.materialized.iter().map(|m| m.name.to_string()).collect();
    vec![
        Part::new(
            "materialized views (build)",
            How::Alone,
            "only when materialized views read the table: first, as long as their queries take",
            build(bp),
        )
        .locking(vec![bp.table.to_string()]),
        Part::new(
            "materialized views (in place)",
            How::Transaction,
            "only when materialized views read the table: then",
            put_in_place(bp),
        )
        .locking(rels),
    ]
}
