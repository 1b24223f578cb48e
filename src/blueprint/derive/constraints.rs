//! Keys, indexes and foreign keys: what the partitioned table takes over,
//! and how (a unique key gains the partition key).

use super::Acc;
use crate::blueprint::{names, ForeignKeyDef, IncomingFkDef, IndexBody, IndexDef, Key, UniqueDef};
use crate::catalog::TableInfo;
use crate::findings::codes;
use crate::plan_file::{IncomingFk, PlanFile};
use crate::sql::{list, Ident};

pub struct Constraints {
    pub uniques: Vec<UniqueDef>,
    pub row_identity: Vec<Ident>,
    pub indexes: Vec<IndexDef>,
    pub foreign_keys: Vec<ForeignKeyDef>,
    pub incoming_fks: Vec<IncomingFkDef>,
}

pub fn derive(plan: &PlanFile, info: &TableInfo, key: &Key, version_num: i32, acc: &mut Acc) -> Constraints {
    let (uniques, row_identity) = uniques(plan, info, key, acc);
    Constraints {
        uniques,
        row_identity,
        indexes: indexes(info, key, acc),
        foreign_keys: foreign_keys(plan, info, version_num, acc),
        incoming_fks: incoming(plan, info, acc),
    }
}

/// The primary key first, then the unique constraints, each with the
/// partition key appended where it lacks it; and the columns that find one
/// row.
fn uniques(plan: &PlanFile, info: &TableInfo, key: &Key, acc: &mut Acc) -> (Vec<UniqueDef>, Vec<Ident>) {
    let mut uniques = Vec::new();
    let mut row_identity: Option<Vec<Ident>> = None;
    for con in info.constraints.iter().filter(|c| matches!(c.kind, 'p' | 'u')) {
        let mut columns = con.columns.clone();
        let key_appended = !columns.contains(&key.column);
        if key_appended {
            columns.push(key.column.clone());
        }
        let all_not_null = con
            .columns
            .iter()
            .all(|n| info.columns.iter().any(|c| &c.name == n && c.not_null));
        if con.kind == 'p' || (row_identity.is_none() && all_not_null) {
            row_identity = Some(con.columns.clone());
        }
        if key_appended {
            let code = if con.kind == 'p' {
                codes::PK_GAINS_PARTITION_KEY
            } else {
                codes::UNIQUE_GAINS_PARTITION_KEY
            };
            acc.warn(code, format!(
                "{} becomes {} ({}) on the partitioned table: PostgreSQL requires the partition key in every unique constraint, so uniqueness of ({}) alone is no longer enforced by the database",
                con.name,
                if con.kind == 'p' { "PRIMARY KEY" } else { "UNIQUE" },
                list(&columns),
                list(&con.columns),
            ));
        }
        let index = con.index.clone().unwrap_or_else(|| con.name.clone());
        uniques.push(UniqueDef {
            name: con.name.clone(),
            primary: con.kind == 'p',
            columns,
            key_appended,
            shadow_name: names::on_shadow(&index),
            old_rename: names::stepped_aside(&index),
            deferrable: con.deferrable,
            deferred: con.deferred,
            clauses: con.clauses.clone(),
        });
    }
    if let Some(pos) = uniques.iter().position(|u| u.primary) {
        let pk = uniques.remove(pos);
        uniques.insert(0, pk);
    }
    for con in info.constraints.iter().filter(|c| c.kind == 'x') {
        acc.refuse(format!(
            "the exclusion constraint {} cannot be carried over to a partitioned table",
            con.name
        ));
    }
    // A unique index on NOT NULL columns finds one row as well as a
    // constraint does.
    let row_identity = row_identity.or_else(|| {
        info.indexes
            .iter()
            .filter(|i| i.unique && i.valid && !i.has_expressions && i.predicate.is_none() && i.constraint.is_none())
            .find(|i| {
                i.columns
                    .iter()
                    .all(|n| info.columns.iter().any(|c| &c.name == n && c.not_null))
            })
            .map(|i| i.columns.clone())
    });
    let row_identity = row_identity.unwrap_or_else(|| {
        match plan.spec.method {
            crate::plan_file::Method::Move => acc.refuse(format!(
                "{} has no primary key or unique key on NOT NULL columns, which the move method's view needs to route UPDATE and DELETE to the one row meant; add one, or use method attach, which needs none",
                plan.table
            )),
            crate::plan_file::Method::Sync => acc.refuse(format!(
                "{} has no primary key or unique key on NOT NULL columns, which the sync method's mirror needs to find the row an UPDATE or DELETE changed; add one, or use method attach, which needs none",
                plan.table
            )),
            crate::plan_file::Method::Attach => acc.note(codes::NO_UNIQUE_KEY, format!(
                "{} has no primary key or unique key on NOT NULL columns: attach needs none, but a later `migrate split` routes through a view that does",
                plan.table
            )),
        }
        Vec::new()
    });
    (uniques, row_identity)
}

/// The indexes that back no constraint.
fn indexes(info: &TableInfo, key: &Key, acc: &mut Acc) -> Vec<IndexDef> {
    let mut indexes = Vec::new();
    for ix in info.indexes.iter().filter(|i| i.constraint.is_none()) {
        if !ix.valid {
            acc.warn(
                codes::INVALID_INDEX_DROPPED,
                format!(
                    "index {} is invalid (a failed CREATE INDEX CONCURRENTLY?) and is not carried over",
                    ix.name
                ),
            );
            continue;
        }
        let mut unique_tail = None;
        let body = if ix.unique {
            // A WHERE clause is kept: PostgreSQL accepts a partial unique
            // index on a partitioned table once its columns hold the key.
            if ix.has_expressions {
                acc.refuse(format!(
                    "the unique index {} is on expressions, and a unique index on a partitioned table must be on plain columns including the partition key (index the columns the expressions read, or drop it)",
                    ix.name
                ));
                continue;
            }
            let Some(tail) = &ix.tail else {
                acc.refuse(format!("the definition of index {} could not be read", ix.name));
                continue;
            };
            let mut cols = ix.columns.clone();
            let appended = if cols.contains(&key.column) {
                Some(tail.clone())
            } else {
                with_key(tail, &key.column)
            };
            let Some(appended) = appended else {
                acc.refuse(format!("the definition of index {} could not be read", ix.name));
                continue;
            };
            unique_tail = Some(in_tablespace(
                &appended,
                ix.predicate.as_deref(),
                ix.tablespace.as_deref(),
            ));
            if !cols.contains(&key.column) {
                acc.warn(
                    codes::UNIQUE_GAINS_PARTITION_KEY,
                    format!(
                        "unique index {} becomes unique on ({}, {}): uniqueness of ({}) alone is no longer enforced",
                        ix.name,
                        list(&ix.columns),
                        key.column,
                        list(&ix.columns)
                    ),
                );
                cols.push(key.column.clone());
            }
            IndexBody::Unique(cols)
        } else {
            match &ix.tail {
                Some(t) => IndexBody::Plain(in_tablespace(t, ix.predicate.as_deref(), ix.tablespace.as_deref())),
                None => {
                    acc.refuse(format!("the definition of index {} could not be read", ix.name));
                    continue;
                }
            }
        };
        indexes.push(IndexDef {
            name: ix.name.clone(),
            shadow_name: names::on_shadow(&ix.name),
            old_rename: names::stepped_aside(&ix.name),
            unique_tail,
            body,
        });
    }
    indexes
}

/// The table's own foreign keys, carried to the partitioned table. One
/// that references the table itself is handled with the incoming ones.
fn foreign_keys(plan: &PlanFile, info: &TableInfo, version_num: i32, acc: &mut Acc) -> Vec<ForeignKeyDef> {
    let own = |c: &&crate::catalog::ConstraintInfo| c.kind == 'f' && c.referenced.as_ref() != Some(&info.name);
    for c in info
        .constraints
        .iter()
        .filter(own)
        .filter(|c| c.definition.ends_with("NOT VALID"))
    {
        let fix = format!(
            "validate it first (ALTER TABLE {} VALIDATE CONSTRAINT {}: a scan under a lock that lets writers go on) or drop it",
            plan.table, c.name
        );
        if plan.spec.method != crate::plan_file::Method::Attach {
            acc.refuse(format!(
                "the foreign key {} is NOT VALID, and every row this method copies is checked against it; {fix}",
                c.name
            ));
        } else if version_num < 180_000 {
            acc.refuse(format!(
                "the foreign key {} is NOT VALID, which a partitioned table can hold from PostgreSQL 18 on; {fix}",
                c.name
            ));
        }
    }
    info.constraints
        .iter()
        .filter(own)
        .filter_map(|c| {
            Some(ForeignKeyDef {
                name: c.name.clone(),
                definition: c.definition.clone(),
                referenced: c.referenced.clone()?,
                columns: c.columns.clone(),
                referenced_columns: c.referenced_columns.clone(),
            })
        })
        .collect()
}

/// Foreign keys of other tables: refused, or dropped as the plan allows.
fn incoming(plan: &PlanFile, info: &TableInfo, acc: &mut Acc) -> Vec<IncomingFkDef> {
    if info.incoming_fks.is_empty() {
        return Vec::new();
    }
    let table = &plan.table;
    let names = info
        .incoming_fks
        .iter()
        .map(|f| format!("{} on {}", f.name, f.table))
        .collect::<Vec<_>>()
        .join(", ");
    let when = match plan.spec.method {
        crate::plan_file::Method::Move => "when the view goes live (route)",
        _ => "at the swap",
    };
    let undo = match plan.spec.method {
        crate::plan_file::Method::Sync => "unswap and abort restore them",
        _ => "abort restores them",
    };
    match plan.spec.foreign_keys.incoming {
        IncomingFk::Refuse => {
            acc.refuse(format!(
                "foreign keys reference {table} ({names}) and cannot follow it to a partitioned table, whose unique keys include the partition key{}; drop them first, or set foreign_keys.incoming: drop",
                if info.incoming_fks.iter().any(|f| f.table == info.name) {
                    " (a foreign key of the table to itself included: it would keep pointing at the original)"
                } else {
                    ""
                }
            ));
            Vec::new()
        }
        IncomingFk::Drop => {
            acc.warn(
                codes::INCOMING_FKS_DROPPED,
                format!("the foreign keys {names} will be dropped {when} and will not exist after the swap ({undo})"),
            );
            info.incoming_fks
                .iter()
                .map(|f| IncomingFkDef {
                    name: f.name.clone(),
                    table: f.table.clone(),
                    definition: f.definition.clone(),
                })
                .collect()
        }
    }
}

/// `btree (a, b DESC) INCLUDE (c)` with `, "key"` closing its column list:
/// the list is the first parenthesis, and its columns are plain names
/// (an index on expressions is refused before).
fn with_key(tail: &str, key: &Ident) -> Option<String> {
    let open = tail.find('(')?;
    let mut depth = 0;
    let mut quoted = false;
    for (i, ch) in tail.char_indices().skip_while(|(i, _)| *i < open) {
        match ch {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(format!("{}, {key}{}", &tail[..i], &tail[i..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// An index's tail with its tablespace, which comes before the WHERE
/// clause.
fn in_tablespace(tail: &str, predicate: Option<&str>, tablespace: Option<&str>) -> String {
    let Some(ts) = tablespace else { return tail.to_string() };
    let ts = crate::sql::quote_ident(ts);
    let at = match predicate.map(|p| format!(" WHERE {p}")) {
        Some(w) if tail.ends_with(&w) => Some(tail.len() - w.len()),
        // An index predicate holds no subquery: its first WHERE is it.
        Some(_) => tail.find(" WHERE "),
        None => None,
    };
    match at {
        Some(i) => format!("{} TABLESPACE {ts}{}", &tail[..i], &tail[i..]),
        None => format!("{tail} TABLESPACE {ts}"),
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn the_key_closes_the_column_list_and_the_tablespace_comes_before_where() {
        let k = Ident::new("ts");
        assert_eq!(
            with_key("btree (a, \"b)\" DESC) INCLUDE (c) WHERE (d > 0)", &k).unwrap(),
            "btree (a, \"b)\" DESC, \"ts\") INCLUDE (c) WHERE (d > 0)"
        );
        assert_eq!(
            in_tablespace("btree (a) WHERE (d > 0)", Some("(d > 0)"), Some("fast")),
            "btree (a) TABLESPACE \"fast\" WHERE (d > 0)"
        );
        assert_eq!(
            in_tablespace("btree (a)", None, Some("fast")),
            "btree (a) TABLESPACE \"fast\""
        );
    }
}
