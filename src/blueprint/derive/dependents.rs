//! What depends on the table: views rebound at each change of name,
//! materialized views and functions that cannot be, publications, and the
//! sequences its columns draw from.

use super::Acc;
use crate::blueprint::{SequenceDef, ViewDef};
use crate::catalog::TableInfo;
use crate::sql::QualifiedName;

pub fn views(table: &QualifiedName, info: &TableInfo, acc: &mut Acc) -> Vec<ViewDef> {
    let mut views = Vec::new();
    for d in &info.dependents {
        match d.kind {
            'v' => {
                acc.note(format!("view {} depends on {table}; it is rebound to whatever carries the name when that changes (the routing view of the move method, the partitioned table at the swap)", d.name));
                views.push(ViewDef {
                    name: d.name.clone(),
                    definition: d.definition.clone(),
                    options: d.options.clone(),
                });
            }
            'm' => acc.refuse(format!(
                "materialized view {} depends on {table} and would keep reading the original table; drop it first and create it again after the swap",
                d.name
            )),
            _ => acc.refuse(format!(
                "function {} depends on {table} through a SQL-standard body and would keep reading the original table; drop it first and create it again after the swap",
                d.name
            )),
        }
    }
    for p in &info.publications {
        acc.warn(format!("{table} is published by {p}; the partitioned table must be added to it after the swap (unless it publishes all tables)"));
    }
    views
}

/// Sequences owned by the table's columns move with the swap; the others
/// are shared as they are.
pub fn sequences(info: &TableInfo, acc: &mut Acc) -> Vec<SequenceDef> {
    let mut sequences: Vec<SequenceDef> = Vec::new();
    for s in info.sequences.iter().filter(|s| s.owned) {
        if !sequences.iter().any(|x| x.name == s.name) {
            sequences.push(SequenceDef {
                name: s.name.clone(),
                column: s.column.clone(),
            });
        }
    }
    for s in info.sequences.iter().filter(|s| !s.owned) {
        if !sequences.iter().any(|x| x.name == s.name) {
            acc.note(format!(
                "column {} draws from sequence {}, which no column owns; it is shared as it is",
                s.column, s.name
            ));
        }
    }
    sequences
}
