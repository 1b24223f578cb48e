//! What depends on the table: views rebound at each change of name,
//! materialized views and functions that cannot be, publications, and the
//! sequences its columns draw from.

use super::Acc;
use crate::blueprint::{names, ColumnIdentity, IdentityDef, PublicationDef, SequenceDef, ViewDef};
use crate::catalog::IdentityInfo;
use crate::catalog::TableInfo;
use crate::findings::codes;
use crate::plan_file::Method;
use crate::sql::QualifiedName;

pub fn views(table: &QualifiedName, info: &TableInfo, acc: &mut Acc) -> Vec<ViewDef> {
    let mut views = Vec::new();
    for d in &info.dependents {
        match d.kind {
            'v' => {
                acc.note(codes::VIEW_REBOUND, format!("view {} depends on {table}; it is rebound to whatever carries the name when that changes (the routing view of the move method, the partitioned table at the swap)", d.name));
                views.push(ViewDef {
                    name: d.name.clone(),
                    definition: d.definition.clone(),
                    options: d.options.clone(),
                });
            }
            'm' => match info.materialized.iter().find(|m| m.name == d.name) {
                Some(m) if m.readers.is_empty() => acc.note(codes::MATVIEW_REBUILT, format!(
                    "materialized view {} reads {table}; after the swap it is built again under another name on the partitioned table, with its indexes, grants and comment, and takes the name in one short transaction (its readers never see it missing; a REFRESH between the swap and then reads the original)",
                    d.name
                )),
                Some(m) => acc.refuse(format!(
                    "materialized view {} reads {table}, and views read it in turn ({}), which would have to be built again with it; drop them first, or the materialized view",
                    d.name,
                    m.readers.join(", ")
                )),
                None => acc.refuse(format!("the materialized view {} could not be read from the catalog", d.name)),
            },
            _ => acc.refuse(format!(
                "function {} depends on {table} through a SQL-standard body and would keep reading the original table; drop it first and create it again after the swap",
                d.name
            )),
        }
    }
    views
}

/// Publications follow the table's OID, not its name. Sync and attach hand
/// each one that lists the table to the partitioned table in the swap,
/// published through its root so that subscribers keep one table name;
/// the move method's rows reach subscribers as a DELETE and an INSERT each,
/// and a publication of all tables (or of the schema) would publish the
/// tool's own tables: refused.
pub fn publications(plan: &crate::plan_file::PlanFile, info: &TableInfo, acc: &mut Acc) -> Vec<PublicationDef> {
    let table = &plan.table;
    let mut v = Vec::new();
    for p in &info.publications {
        let name = &p.name;
        if p.wholesale {
            acc.refuse(format!(
                "{table} is published by {name}, which publishes all tables (or every table of its schema): the tool's control tables and the partitioned copy would reach its subscribers, which lack them, and stop their replication; publish the table by name (a publication FOR TABLE) for the migration"
            ));
            continue;
        }
        if plan.spec.method == Method::Move {
            acc.refuse(format!(
                "{table} is published by {name}: the move method moves every row with a DELETE and an INSERT, which its subscribers would receive as changes; use method sync, which hands the publication to the partitioned table in its swap and sends subscribers the application's changes only"
            ));
            continue;
        }
        if !p.via_root && p.lists_partitions {
            acc.refuse(format!(
                "{table} is published by {name}, which also lists other partitioned tables or partitions: publishing the partitioned table under its own name needs publish_via_partition_root, which would change how {name} publishes those"
            ));
            continue;
        }
        if !p.columns.is_empty() && !p.columns.iter().any(|c| c.as_str() == plan.spec.partition.column) {
            acc.refuse(format!(
                "{table} is published by {name} with a column list without the partition key {}, which the partitioned table's replica identity needs; add it to the list",
                plan.spec.partition.column
            ));
            continue;
        }
        acc.note(codes::PUBLICATION_HANDED_OVER, format!(
            "{table} is published by {name}: the swap hands the publication to the partitioned table (publish_via_partition_root{}), so that subscribers receive its changes under the table's name with nothing to do; the tool writes only unpublished tables",
            if p.via_root { ", as it is" } else { " set on it" }
        ));
        v.push(PublicationDef {
            name: name.clone(),
            row_filter: p.row_filter.clone(),
            columns: p.columns.clone(),
            via_root: p.via_root,
        });
    }
    v
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
            acc.note(
                codes::SEQUENCE_SHARED,
                format!(
                    "column {} draws from sequence {}, which no column owns; it is shared as it is",
                    s.column, s.name
                ),
            );
        }
    }
    sequences
}

/// Identity columns: during the migration new rows keep drawing from the
/// original's sequence; the swap gives the table that takes the name an
/// identity of the same kind and options under the sequence's name,
/// continuing where the original's stands (see docs/methods.md, "Identity
/// columns").
pub fn identities(method: Method, version_num: i32, info: &TableInfo, acc: &mut Acc) -> Vec<IdentityDef> {
    let mut v = Vec::new();
    for i in &info.identities {
        let kind = if i.always { "ALWAYS" } else { "BY DEFAULT" };
        let during = match method {
            Method::Move => "new rows draw from it through the routing view's default (and the tool's own copies say OVERRIDING SYSTEM VALUE)",
            Method::Sync => "the application keeps inserting into the original, and the mirror copies the values it drew",
            Method::Attach => "the application keeps inserting into the original",
        };
        let swap = match method {
            Method::Attach => "the swap gives the partitioned table an identity of the same kind and options under that sequence's name, continuing where the original's stands, and the first partition loses its own identity (PostgreSQL 17 attaches no table with one)",
            _ => "the swap gives the partitioned table an identity of the same kind and options under that sequence's name, continuing where the original's stands; the original's sequence steps aside",
        };
        let back = match method {
            Method::Sync => "; unswap moves the original's sequence past every value the partitioned table's handed out and gives the identity back to the original",
            _ => "",
        };
        let partitions = if version_num < 170_000 {
            "; on PostgreSQL 14 to 16 partitions do not share a parent's identity: an INSERT straight into a partition (not through the table) must give the column a value"
        } else {
            ""
        };
        acc.note(
            codes::IDENTITY_CARRIED,
            format!(
                "column {} is GENERATED {kind} AS IDENTITY (sequence {}): {during}; {swap}{back}{partitions}",
                i.column, i.sequence
            ),
        );
        v.push(IdentityDef {
            column: i.column.clone(),
            always: i.always,
            sequence: i.sequence.clone(),
            stepped_aside: i.sequence.sibling(names::stepped_aside(&i.sequence.name)),
            increment: i.increment,
            min: i.min,
            max: i.max,
            cache: i.cache,
            cycle: i.cycle,
        });
    }
    v
}

/// An identity column as the tool's writes and the routing view see it:
/// the roles that may insert into the table but may not use the sequence
/// (an identity asks no privilege, the view's nextval does).
pub fn column_identity(info: &TableInfo, i: &IdentityInfo) -> ColumnIdentity {
    let mut grant: Vec<Option<String>> = Vec::new();
    let public_uses = i.usage.iter().any(|u| u.is_none());
    for g in info.grants.iter().filter(|g| g.privilege == "INSERT") {
        if !public_uses && !i.usage.contains(&g.grantee) && !grant.contains(&g.grantee) {
            grant.push(g.grantee.clone());
        }
    }
    ColumnIdentity {
        always: i.always,
        sequence: i.sequence.clone(),
        grant,
    }
}
