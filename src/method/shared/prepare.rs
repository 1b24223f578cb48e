//! Prepare, for every method: the partitioned shadow table with its partitions,
//! constraints, indexes, foreign keys and privileges. It is empty, so every
//! statement is quick; its strongest lock on another table is the one a
//! foreign key takes on the table it references.

use super::{grants, options_clause, session_limits};
use crate::blueprint::{Blueprint, IndexBody};
use crate::sql::{list, quote_literal, Statement};

pub fn statements(bp: &Blueprint) -> Vec<Statement> {
    let mut s = session_limits(bp);
    let shadow = &bp.shadow;
    let owner = crate::sql::quote_ident(&bp.owner);
    // The original's storage parameters (fillfactor, autovacuum tuning)
    // apply to each partition; a partitioned parent takes none.
    let storage = options_clause(&bp.storage);
    s.push(Statement::new(
        "the partitioned table: same columns, defaults (sharing the original's sequences), NOT NULL and CHECK constraints",
        format!(
            "CREATE TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED \
             INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS INCLUDING COMPRESSION) PARTITION BY {strategy} ({key}){ts}",
            ts = tablespace(bp),
            table = bp.table,
            key = bp.key.column,
            strategy = if bp.key.hash.is_some() {
                "HASH"
            } else if bp.key.list {
                "LIST"
            } else {
                "RANGE"
            }
        ),
    ));
    s.push(Statement::new(
        "the table's owner owns the new table",
        format!("ALTER TABLE {shadow} OWNER TO {owner}"),
    ));
    for p in &bp.partitions {
        let name = bp.table.sibling(p.name.clone());
        s.push(Statement::new(
            "a partition",
            format!(
                "CREATE TABLE {name} PARTITION OF {shadow} {}{storage}{}",
                bound_clause(bp, p),
                tablespace(bp)
            ),
        ));
        s.push(Statement::new(
            "the table's owner owns its partitions",
            format!("ALTER TABLE {name} OWNER TO {owner}"),
        ));
    }
    if let Some(d) = &bp.default_partition {
        let name = bp.table.sibling(d.clone());
        s.push(Statement::new(
            "the default partition, as the plan asks",
            format!(
                "CREATE TABLE {name} PARTITION OF {shadow} DEFAULT{storage}{}",
                tablespace(bp)
            ),
        ));
        s.push(Statement::new(
            "the table's owner owns its partitions",
            format!("ALTER TABLE {name} OWNER TO {owner}"),
        ));
    }
    for u in &bp.uniques {
        let deferral = match (u.deferrable, u.deferred) {
            (true, true) => " DEFERRABLE INITIALLY DEFERRED",
            (true, false) => " DEFERRABLE",
            _ => "",
        };
        s.push(Statement::new(
            if u.key_appended {
                "the unique key, with the partition key appended as PostgreSQL requires"
            } else {
                "the unique key"
            },
            format!(
                "ALTER TABLE {shadow} ADD CONSTRAINT {} {}{} ({}){}{deferral}",
                u.shadow_name,
                if u.primary { "PRIMARY KEY" } else { "UNIQUE" },
                if u.clauses.nulls_not_distinct {
                    " NULLS NOT DISTINCT"
                } else {
                    ""
                },
                list(&u.columns),
                constraint_clauses(&u.clauses)
            ),
        ));
    }
    for i in &bp.indexes {
        let sql = match &i.body {
            // Sync builds these on the partitions after the backfill.
            IndexBody::Plain(tail) if deferred_indexes(bp) => {
                format!("CREATE INDEX {} ON ONLY {shadow} USING {tail}", i.shadow_name)
            }
            IndexBody::Plain(tail) => {
                format!("CREATE INDEX {} ON {shadow} USING {tail}", i.shadow_name)
            }
            IndexBody::Unique(cols) => match &i.unique_tail {
                Some(tail) => format!("CREATE UNIQUE INDEX {} ON {shadow} USING {tail}", i.shadow_name),
                None => format!("CREATE UNIQUE INDEX {} ON {shadow} ({})", i.shadow_name, list(cols)),
            },
        };
        s.push(Statement::new("an index of the original, on every partition", sql));
    }
    // The sync method's copy takes them only before its swap: until then
    // the mirror carries every cascade (see sync's `partition_fks`).
    let fks = if bp.method == crate::plan_file::Method::Sync {
        &[][..]
    } else {
        &bp.foreign_keys[..]
    };
    for f in fks {
        s.push(Statement::new(
            "the original's foreign key, so that cascades reach rows already moved",
            format!("ALTER TABLE {shadow} ADD CONSTRAINT {} {}", f.name, f.definition),
        ));
    }
    s.extend(grants(bp, "TABLE", &shadow.to_string()));
    s.extend(super::row_security(
        bp,
        shadow,
        bp.method != crate::plan_file::Method::Sync,
    ));
    s.extend(super::tool_policy(bp, shadow));
    // The move method's view writes the partitioned table from the route
    // on: the table's triggers are there, silent for the tool.
    if bp.method == crate::plan_file::Method::Move && bp.split.is_none() {
        s.extend(super::triggers::on_tables(bp, shadow, super::triggers::Side::Shadow));
    }
    s
}

/// INCLUDE, WITH and USING INDEX TABLESPACE of a key, as on the original.
fn constraint_clauses(c: &crate::blueprint::IndexClauses) -> String {
    let mut s = String::new();
    if !c.include.is_empty() {
        s.push_str(&format!(" INCLUDE ({})", list(&c.include)));
    }
    s.push_str(&options_clause(&c.options));
    if let Some(t) = &c.tablespace {
        s.push_str(&format!(" USING INDEX TABLESPACE {}", crate::sql::quote_ident(t)));
    }
    s
}

/// The same clauses in the form of CREATE INDEX (the attach method's key
/// index, which the partitioned table's key adopts).
pub fn index_clauses(c: &crate::blueprint::IndexClauses) -> String {
    let mut s = String::new();
    if !c.include.is_empty() {
        s.push_str(&format!(" INCLUDE ({})", list(&c.include)));
    }
    if c.nulls_not_distinct {
        s.push_str(" NULLS NOT DISTINCT");
    }
    s.push_str(&options_clause(&c.options));
    if let Some(t) = &c.tablespace {
        s.push_str(&format!(" TABLESPACE {}", crate::sql::quote_ident(t)));
    }
    s
}

/// ` TABLESPACE x` of the original, or nothing.
fn tablespace(bp: &Blueprint) -> String {
    bp.tablespace
        .as_ref()
        .map(|t| format!(" TABLESPACE {}", crate::sql::quote_ident(t)))
        .unwrap_or_default()
}

/// `FOR VALUES ...` of one partition.
pub fn bound_clause(bp: &Blueprint, p: &crate::blueprint::PartitionDef) -> String {
    if let Some(m) = bp.key.hash {
        format!("FOR VALUES WITH (MODULUS {m}, REMAINDER {})", p.from)
    } else if bp.key.list {
        format!("FOR VALUES IN ({})", quote_literal(&p.from))
    } else {
        format!(
            "FOR VALUES FROM ({}) TO ({})",
            quote_literal(&p.from),
            quote_literal(&p.to)
        )
    }
}

/// Whether the blueprint builds its non-unique indexes after the copy
/// (the sync method: its copy is not read before the swap), so prepare
/// creates them on the parent only.
pub fn deferred_indexes(bp: &Blueprint) -> bool {
    bp.method == crate::plan_file::Method::Sync
}
