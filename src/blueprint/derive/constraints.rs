//! Keys, indexes and foreign keys: what the partitioned table takes over,
//! and how (a unique key gains the partition key).

use super::Acc;
use crate::blueprint::{names, ForeignKeyDef, IncomingFkDef, IndexBody, IndexDef, Key, UniqueDef};
use crate::catalog::TableInfo;
use crate::plan_file::{IncomingFk, PlanFile};
use crate::sql::{list, Ident};

pub struct Constraints {
    pub uniques: Vec<UniqueDef>,
    pub row_identity: Vec<Ident>,
    pub indexes: Vec<IndexDef>,
    pub foreign_keys: Vec<ForeignKeyDef>,
    pub incoming_fks: Vec<IncomingFkDef>,
}

pub fn derive(plan: &PlanFile, info: &TableInfo, key: &Key, acc: &mut Acc) -> Constraints {
    let (uniques, row_identity) = uniques(plan, info, key, acc);
    Constraints {
        uniques,
        row_identity,
        indexes: indexes(info, key, acc),
        foreign_keys: foreign_keys(info),
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
        if !con.plain_columns {
            acc.refuse(format!(
                "the constraint {} has INCLUDE columns, storage options or NULLS NOT DISTINCT, which are not carried over yet",
                con.name
            ));
        }
        let all_not_null = con
            .columns
            .iter()
            .all(|n| info.columns.iter().any(|c| &c.name == n && c.not_null));
        if con.kind == 'p' || (row_identity.is_none() && all_not_null) {
            row_identity = Some(con.columns.clone());
        }
        if key_appended {
            acc.warn(format!(
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
    let row_identity = row_identity.unwrap_or_else(|| {
        acc.refuse(format!(
            "{} has no primary key or unique NOT NULL constraint, which the view needs to route UPDATE and DELETE to the one row meant",
            plan.table
        ));
        Vec::new()
    });
    (uniques, row_identity)
}

/// The indexes that back no constraint.
fn indexes(info: &TableInfo, key: &Key, acc: &mut Acc) -> Vec<IndexDef> {
    let mut indexes = Vec::new();
    for ix in info.indexes.iter().filter(|i| i.constraint.is_none()) {
        if !ix.valid {
            acc.warn(format!(
                "index {} is invalid (a failed CREATE INDEX CONCURRENTLY?) and is not carried over",
                ix.name
            ));
            continue;
        }
        let body = if ix.unique {
            if ix.has_expressions || ix.has_predicate {
                acc.refuse(format!(
                    "the unique index {} uses expressions or a WHERE clause, and a unique index on a partitioned table must be on plain columns including the partition key",
                    ix.name
                ));
                continue;
            }
            let mut cols = ix.columns.clone();
            if !cols.contains(&key.column) {
                acc.warn(format!(
                    "unique index {} becomes unique on ({}, {}): uniqueness of ({}) alone is no longer enforced",
                    ix.name,
                    list(&ix.columns),
                    key.column,
                    list(&ix.columns)
                ));
                cols.push(key.column.clone());
            }
            IndexBody::Unique(cols)
        } else {
            match &ix.tail {
                Some(t) => IndexBody::Plain(t.clone()),
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
            body,
        });
    }
    indexes
}

fn foreign_keys(info: &TableInfo) -> Vec<ForeignKeyDef> {
    info.constraints
        .iter()
        .filter(|c| c.kind == 'f')
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
    match plan.spec.foreign_keys.incoming {
        IncomingFk::Refuse => {
            acc.refuse(format!(
                "foreign keys of other tables reference {table} ({names}) and cannot follow it to a partitioned table whose unique keys include the partition key; drop them first, or set foreign_keys.incoming: drop"
            ));
            Vec::new()
        }
        IncomingFk::Drop => {
            acc.warn(format!(
                "the foreign keys {names} will be dropped when the view goes live and will not exist after the swap (abort restores them)"
            ));
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
