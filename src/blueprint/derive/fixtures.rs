//! Facts written by hand, for tests of planning and rendering that need
//! no database: an event log in a schema and under a name that need
//! quoting.

use super::*;
use crate::blueprint::facts::Facts;
use crate::catalog::{
    ColumnInfo, ConstraintInfo, DependentInfo, GrantInfo, IndexInfo, SequenceInfo, ServerInfo, TableInfo,
};
use crate::partition::KeyValue;
use chrono::{TimeZone, Utc};

pub fn id(s: &str) -> Ident {
    Ident::new(s.to_string())
}

pub fn qn(schema: &str, name: &str) -> QualifiedName {
    QualifiedName::parse(&format!(
        "{}.{}",
        crate::sql::quote_ident(schema),
        crate::sql::quote_ident(name)
    ))
    .unwrap()
}

pub fn column(name: &str, ty: &str) -> ColumnInfo {
    ColumnInfo {
        name: id(name),
        type_name: ty.into(),
        base_type: ty.into(),
        not_null: true,
        default: None,
        generated: false,
        identity: false,
        has_equality: true,
        category: if ty == "text" { "S" } else { "N" }.into(),
    }
}

pub fn server() -> ServerInfo {
    ServerInfo {
        version_num: 150_004,
        now: Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap(),
        deadlock_timeout_ms: 1000,
        block_size: 8192,
    }
}

/// An event log in an awkward schema and name: a serial key, a timestamp,
/// a primary key on the id alone, an index, a dependent view.
pub fn table(schema: &str, name: &str) -> TableInfo {
    let t = qn(schema, name);
    let mut idc = column("id", "bigint");
    idc.default = Some(format!("nextval('{name}_id_seq'::regclass)"));
    TableInfo {
        oid: 16_384,
        name: t.clone(),
        relkind: "r".into(),
        persistence: "p".into(),
        is_partition: false,
        has_inheritance: false,
        row_security: false,
        force_row_security: false,
        owner: "app owner".into(),
        comment: Some("it's the log".into()),
        estimated_rows: 1000.0,
        bytes: 1 << 20,
        reloptions: vec!["fillfactor=90".into()],
        tablespace: None,
        columns: vec![
            idc,
            column("ts", "timestamp with time zone"),
            column("Kind", "integer"),
            column("payload", "jsonb"),
        ],
        constraints: vec![ConstraintInfo {
            name: id(&format!("{name}_pkey")),
            kind: 'p',
            columns: vec![id("id")],
            definition: "PRIMARY KEY (id)".into(),
            index: Some(id(&format!("{name}_pkey"))),
            deferrable: false,
            deferred: false,
            referenced: None,
            referenced_columns: Vec::new(),
            clauses: Default::default(),
        }],
        indexes: vec![IndexInfo {
            name: id("by kind"),
            tail: Some("btree (\"Kind\")".into()),
            unique: false,
            valid: true,
            has_expressions: false,
            has_predicate: false,
            predicate: None,
            tablespace: None,
            columns: vec![id("Kind")],
            constraint: None,
        }],
        incoming_fks: Vec::new(),
        materialized: Vec::new(),
        dependents: vec![DependentInfo {
            name: qn(schema, "recent events"),
            kind: 'v',
            definition: format!(" SELECT id, ts FROM {t};"),
            options: Vec::new(),
        }],
        triggers: Vec::new(),
        trigger_defs: Vec::new(),
        rules: Vec::new(),
        policies: Vec::new(),
        publications: Vec::new(),
        grants: vec![GrantInfo {
            grantee: Some("reader".into()),
            privilege: "SELECT".into(),
            grantable: false,
        }],
        sequences: vec![SequenceInfo {
            name: qn(schema, &format!("{name}_id_seq")),
            column: id("id"),
            owned: true,
        }],
        identities: Vec::new(),
    }
}

pub fn facts(info: TableInfo) -> Facts {
    let mut f = Facts::new(server());
    f.info = Some(info);
    f.min = Some(KeyValue::Instant(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()));
    f.max = Some(KeyValue::Instant(Utc.with_ymd_and_hms(2026, 6, 15, 11, 0, 0).unwrap()));
    f
}

pub fn plan(table: &str, method: &str, partition: &str) -> PlanFile {
    PlanFile::parse(
        "p.yaml",
        &format!("table: {table}\npartition:\n{partition}method: {method}\nbatch:\n  size: 1000\n"),
    )
    .unwrap()
}

pub const MONTHLY: &str = "  by: range\n  column: ts\n  interval: month\n";

/// The table's owner, with every privilege the run needs but BYPASSRLS.
pub fn owner_without_bypass() -> crate::access::AccessFacts {
    crate::access::AccessFacts {
        me: "owner".into(),
        owner: "owner".into(),
        member: true,
        schema_create: true,
        db_create: true,
        database: "app".into(),
        ..Default::default()
    }
}

/// The table with row-level security enabled and forced, under one
/// permissive policy for the application's role.
pub fn forced_row_security(mut info: TableInfo) -> TableInfo {
    info.row_security = true;
    info.force_row_security = true;
    info.policies = vec![crate::catalog::PolicyInfo {
        name: id("tenant"),
        permissive: true,
        command: '*',
        roles: vec![Some("app".into())],
        using: Some("(tenant = 1)".into()),
        check: None,
    }];
    info
}
