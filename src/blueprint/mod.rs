//! The blueprint: a plan file resolved against the live catalog into every
//! name, bound and definition the phases need. It is computed once, by
//! read-only queries, stored in the control table when a run starts, and
//! from then on every phase renders its SQL from it alone; so a resumed run
//! does exactly what the first one planned, whatever the catalog looks like
//! mid-migration.

pub mod names;

pub use crate::findings::{Finding, Level};

use crate::catalog::{self, GrantInfo, ServerInfo, TableInfo};
use crate::error::Refusal;
use crate::partition::{self, bounds, KeyKind, KeyValue, LayoutInput};
use crate::plan_file::{IncomingFk, Method, PlanFile};
use crate::sql::{Ident, QualifiedName};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// Bumped when the stored shape changes; an older binary refuses a newer one.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Blueprint {
    pub format: u32,
    pub method: Method,
    pub table: QualifiedName,
    pub shadow: QualifiedName,
    pub old: QualifiedName,
    /// The name the routing view takes for a moment during the swap.
    pub retired_view: QualifiedName,
    pub owner: String,
    pub columns: Vec<Column>,
    pub key: Key,
    /// Columns that find one row (the primary key, or a unique key).
    pub row_identity: Vec<Ident>,
    pub partitions: Vec<PartitionDef>,
    pub default_partition: Option<Ident>,
    pub uniques: Vec<UniqueDef>,
    pub indexes: Vec<IndexDef>,
    pub foreign_keys: Vec<ForeignKeyDef>,
    pub incoming_fks: Vec<IncomingFkDef>,
    pub dependent_views: Vec<ViewDef>,
    pub grants: Vec<GrantInfo>,
    pub comment: Option<String>,
    /// The original's storage parameters, given to each partition.
    pub storage: Vec<String>,
    pub sequences: Vec<SequenceDef>,
    pub routing: Routing,
    pub mirror: Mirror,
    pub attach: Option<AttachDef>,
    /// Set when this is the split of an attached first partition: the move
    /// machinery with the partitioned table as target and the first
    /// partition as source.
    #[serde(default)]
    pub split: Option<SplitDef>,
    pub settings: Settings,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplitDef {
    /// The first partition's upper bound.
    pub cutoff: String,
    /// The CHECK constraint an abort adds to re-attach it without a scan.
    pub check: Ident,
}

/// Names of the sync method's triggers: forward (original to partitioned)
/// before the swap, back (partitioned to retired) after it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mirror {
    pub function: QualifiedName,
    pub trigger: Ident,
    pub truncate_function: QualifiedName,
    pub truncate_trigger: Ident,
    pub back_function: QualifiedName,
    pub back_trigger: Ident,
    pub back_truncate_function: QualifiedName,
    pub back_truncate_trigger: Ident,
}

/// The attach method: the original becomes the partition of keys below
/// `cutoff`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AttachDef {
    /// Range: the first partition holds keys below this. List: the first
    /// partition's value.
    pub cutoff: String,
    /// List: the key column is added to the original, with the first
    /// partition's value as its default, in this type.
    #[serde(default)]
    pub add_column: Option<String>,
    /// The CHECK constraint that proves every row lies below the cutoff.
    pub check: Ident,
    /// Unique indexes built concurrently on the original so that it can
    /// carry the partitioned table's unique keys (which include the key).
    pub key_indexes: Vec<KeyIndex>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyIndex {
    pub name: Ident,
    pub columns: Vec<Ident>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Column {
    pub name: Ident,
    /// False for generated columns, which are computed, never written.
    pub writable: bool,
    pub has_equality: bool,
    pub default: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Key {
    pub column: Ident,
    pub kind: KeyKind,
    pub type_name: String,
    pub time_zone: String,
    /// List partitioning on this key (one value per partition); range
    /// otherwise.
    #[serde(default)]
    pub list: bool,
    /// Hash partitioning into this many partitions.
    #[serde(default)]
    pub hash: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartitionDef {
    pub name: Ident,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UniqueDef {
    /// The original constraint's name, which the new one takes at the swap.
    pub name: Ident,
    pub primary: bool,
    pub columns: Vec<Ident>,
    pub key_appended: bool,
    /// Its name on the shadow table until the swap.
    pub shadow_name: Ident,
    /// The name the original's constraint takes at the swap.
    pub old_rename: Ident,
    pub deferrable: bool,
    pub deferred: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexDef {
    pub name: Ident,
    pub shadow_name: Ident,
    pub old_rename: Ident,
    /// Method, keys and clauses (`btree (run_id) WHERE ...`), or for a
    /// unique index the key columns to which the partition key is added.
    pub body: IndexBody,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum IndexBody {
    Plain(String),
    Unique(Vec<Ident>),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ForeignKeyDef {
    pub name: Ident,
    pub definition: String,
    pub referenced: QualifiedName,
    pub columns: Vec<Ident>,
    pub referenced_columns: Vec<Ident>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IncomingFkDef {
    pub name: Ident,
    pub table: QualifiedName,
    pub definition: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ViewDef {
    pub name: QualifiedName,
    pub definition: String,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SequenceDef {
    pub name: QualifiedName,
    pub column: Ident,
}

/// Names of the routing objects on the view.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Routing {
    pub insert_rule: Ident,
    pub insert_function: QualifiedName,
    pub update_function: QualifiedName,
    pub delete_function: QualifiedName,
    pub insert_trigger: Ident,
    pub update_trigger: Ident,
    pub delete_trigger: Ident,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub batch_rows: u64,
    pub pause_ms: u64,
    /// The plan's lock timeout, capped below the server's deadlock_timeout
    /// so that in any lock cycle with the application the tool's wait ends
    /// first and the tool is the one that steps back.
    pub lock_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub retries: u32,
    pub keep_old: bool,
    pub block_size: i64,
    #[serde(default)]
    pub target_ms: Option<u64>,
    #[serde(default)]
    pub throttle: crate::plan_file::ThrottleSpec,
    #[serde(default)]
    pub hooks: crate::plan_file::HooksSpec,
    #[serde(default)]
    pub postpone_swap: bool,
    /// Connections moving the main pass at once.
    #[serde(default = "one")]
    pub workers: u32,
    /// Rest after each batch as long as it took.
    #[serde(default)]
    pub gentle: bool,
}

fn one() -> u32 {
    1
}

/// A blueprint and what planning found.
pub struct Resolved {
    pub blueprint: Blueprint,
    pub findings: Vec<Finding>,
    pub info: TableInfo,
    pub server: ServerInfo,
}

impl Blueprint {
    pub fn writable_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.writable)
    }

    pub fn key_type_is_time(&self) -> bool {
        self.key.kind.is_time()
    }

    /// The partitioned table's leaf partitions, in the order an abort
    /// moves their rows back.
    pub fn leaves(&self) -> Vec<QualifiedName> {
        let mut v: Vec<QualifiedName> = self
            .partitions
            .iter()
            .map(|p| self.table.sibling(p.name.clone()))
            .collect();
        if let Some(d) = &self.default_partition {
            v.push(self.table.sibling(d.clone()));
        }
        v
    }
}

/// Resolves a plan against the catalog: every check that can refuse runs
/// here, before anything changes.
pub async fn resolve(client: &Client, plan: &PlanFile) -> Result<Resolved> {
    let server = catalog::server_info(client).await?;
    if server.version_num < 140000 {
        return Err(Refusal::new(format!(
            "the server runs PostgreSQL {}.{}, and this tool needs 14 or newer (it moves rows by TID ranges)",
            server.version_num / 10000,
            server.version_num % 10000 / 100
        ))
        .into());
    }
    let table = &plan.table;
    let Some(oid) = catalog::relation_oid(client, table).await? else {
        return Err(plan
            .key_error("table", &format!("names {table}, which does not exist"))
            .into());
    };
    let info = catalog::table_info(client, oid).await?;
    let mut refusals: Vec<String> = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();

    match info.relkind.as_str() {
        "r" => {}
        "p" => return Err(Refusal::new(format!("{table} is already partitioned")).into()),
        "v" => return Err(Refusal::new(format!("{table} is a view, not a table; if it is the view of an unfinished migration, use `migrate resume` or `migrate status`")).into()),
        "m" => return Err(Refusal::new(format!("{table} is a materialized view, not a table")).into()),
        "f" => return Err(Refusal::new(format!("{table} is a foreign table, which cannot be repartitioned here")).into()),
        k => return Err(Refusal::new(format!("{table} is not an ordinary table (relkind {k})")).into()),
    }
    if info.persistence == "t" {
        // Its rows are readable by its own session only: nothing further
        // can even be checked.
        return Err(Refusal::new(format!(
            "{table} is a temporary table, which only the session that created it can read"
        ))
        .into());
    }
    if info.persistence == "u" {
        refusals.push(format!(
            "{table} is unlogged, and its partitioned replacement could not be"
        ));
    }
    if info.is_partition || info.has_inheritance {
        refusals.push(format!("{table} takes part in inheritance or is a partition already"));
    }
    if info.row_security {
        refusals.push(format!(
            "{table} has row-level security enabled, which the routing view would bypass"
        ));
    }

    let access = crate::access::check(client, table, info.oid, plan.spec.method == Method::Move).await?;
    refusals.extend(access.refusals);
    findings.extend(access.findings);

    // The partition key.
    let spec = &plan.spec.partition;
    let key_col = info.columns.iter().find(|c| c.name.as_str() == spec.column);
    let list = spec.by == crate::plan_file::Strategy::List;
    let key = match key_col {
        None if list && plan.spec.method == Method::Attach => Key {
            column: Ident::new(spec.column.clone()),
            kind: KeyKind::Integer,
            type_name: "bigint".into(),
            time_zone: spec.time_zone.clone(),
            list,
            hash: None,
        },
        Some(c) if list && KeyKind::from_type_name(&c.type_name) != Some(KeyKind::Integer) => {
            return Err(plan
                .key_error(
                    "partition.column",
                    &format!(
                        "names `{}` of type {}; a list key must be smallint, integer or bigint",
                        spec.column, c.type_name
                    ),
                )
                .into())
        }
        None if list => {
            return Err(plan
                .key_error(
                    "partition.column",
                    &format!("names `{}`, which is not a column of {table}; the attach method adds a list key column, move and sync partition on an existing one", spec.column),
                )
                .into())
        }
        None => {
            return Err(plan
                .key_error(
                    "partition.column",
                    &format!("names `{}`, which is not a column of {table}", spec.column),
                )
                .into())
        }
        Some(c) if spec.by == crate::plan_file::Strategy::Hash => {
            if c.generated {
                refusals.push(format!("the partition key {} is a generated column", c.name));
            }
            Key {
                column: c.name.clone(),
                kind: KeyKind::Integer,
                type_name: c.type_name.clone(),
                time_zone: spec.time_zone.clone(),
                list: false,
                hash: spec.modulus.map(|m| m.0 as u32),
            }
        }
        Some(c) => {
            let Some(kind) = KeyKind::from_type_name(&c.type_name) else {
                return Err(plan
                    .key_error(
                        "partition.column",
                        &format!("names `{}` of type {}; a range key must be timestamptz, timestamp, date, smallint, integer or bigint", spec.column, c.type_name),
                    )
                    .into());
            };
            if !c.not_null {
                refusals.push(format!(
                    "the partition key {} may be NULL; no partition would hold a NULL key (add NOT NULL, after making sure no row has NULL)",
                    c.name
                ));
            }
            if c.generated {
                refusals.push(format!("the partition key {} is a generated column", c.name));
            }
            Key {
                column: c.name.clone(),
                kind,
                type_name: c.type_name.clone(),
                time_zone: spec.time_zone.clone(),
                list,
                hash: spec.modulus.map(|m| m.0 as u32),
            }
        }
    };
    if key.kind == KeyKind::Integer && spec.interval.is_some() {
        return Err(plan
            .key_error(
                "partition.interval",
                &format!(
                    "is for date and time keys, and {} is {}; use partition.step",
                    key.column, key.type_name
                ),
            )
            .into());
    }
    if key.kind.is_time() && spec.step.is_some() {
        return Err(plan
            .key_error(
                "partition.step",
                &format!(
                    "is for integer keys, and {} is {}; use partition.interval",
                    key.column, key.type_name
                ),
            )
            .into());
    }

    for c in &info.columns {
        if c.identity {
            refusals.push(format!(
                "column {} is an identity column, which cannot yet be shared between the original and the partitioned table (use a sequence default instead)",
                c.name
            ));
        }
    }
    if !info.triggers.is_empty() {
        refusals.push(format!(
            "{table} has triggers ({}) that would stop firing for rows in the new table; drop them now and create them on the partitioned table after the swap",
            info.triggers.join(", ")
        ));
    }
    if !info.rules.is_empty() {
        refusals.push(format!("{table} has rules ({})", info.rules.join(", ")));
    }

    // Uniqueness: primary key and unique constraints get the key appended.
    let mut uniques = Vec::new();
    let mut row_identity: Option<Vec<Ident>> = None;
    for con in info.constraints.iter().filter(|c| matches!(c.kind, 'p' | 'u')) {
        let mut columns = con.columns.clone();
        let key_appended = !columns.contains(&key.column);
        if key_appended {
            columns.push(key.column.clone());
        }
        if !con.plain_columns {
            refusals.push(format!(
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
            warn(&mut findings, format!(
                "{} becomes {} ({}) on the partitioned table: PostgreSQL requires the partition key in every unique constraint, so uniqueness of ({}) alone is no longer enforced by the database",
                con.name,
                if con.kind == 'p' { "PRIMARY KEY" } else { "UNIQUE" },
                crate::sql::list(&columns),
                crate::sql::list(&con.columns),
            ));
        }
        uniques.push(UniqueDef {
            name: con.name.clone(),
            primary: con.kind == 'p',
            columns,
            key_appended,
            shadow_name: names::on_shadow(&con.index.clone().unwrap_or_else(|| con.name.clone())),
            old_rename: names::stepped_aside(&con.index.clone().unwrap_or_else(|| con.name.clone())),
            deferrable: con.deferrable,
            deferred: con.deferred,
        });
    }
    if let Some(pos) = uniques.iter().position(|u| u.primary) {
        let pk = uniques.remove(pos);
        uniques.insert(0, pk);
    }
    for con in info.constraints.iter().filter(|c| c.kind == 'x') {
        refusals.push(format!(
            "the exclusion constraint {} cannot be carried over to a partitioned table",
            con.name
        ));
    }
    let row_identity = match row_identity {
        Some(r) => r,
        None => {
            refusals.push(format!(
                "{table} has no primary key or unique NOT NULL constraint, which the view needs to route UPDATE and DELETE to the one row meant"
            ));
            Vec::new()
        }
    };

    // Other indexes.
    let mut indexes = Vec::new();
    for ix in info.indexes.iter().filter(|i| i.constraint.is_none()) {
        if !ix.valid {
            warn(
                &mut findings,
                format!(
                    "index {} is invalid (a failed CREATE INDEX CONCURRENTLY?) and is not carried over",
                    ix.name
                ),
            );
            continue;
        }
        let body = if ix.unique {
            if ix.has_expressions || ix.has_predicate {
                refusals.push(format!(
                    "the unique index {} uses expressions or a WHERE clause, and a unique index on a partitioned table must be on plain columns including the partition key",
                    ix.name
                ));
                continue;
            }
            let mut cols = ix.columns.clone();
            if !cols.contains(&key.column) {
                warn(
                    &mut findings,
                    format!(
                        "unique index {} becomes unique on ({}, {}): uniqueness of ({}) alone is no longer enforced",
                        ix.name,
                        crate::sql::list(&ix.columns),
                        key.column,
                        crate::sql::list(&ix.columns)
                    ),
                );
                cols.push(key.column.clone());
            }
            IndexBody::Unique(cols)
        } else {
            match &ix.tail {
                Some(t) => IndexBody::Plain(t.clone()),
                None => {
                    refusals.push(format!("the definition of index {} could not be read", ix.name));
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

    // Foreign keys.
    let foreign_keys: Vec<ForeignKeyDef> = info
        .constraints
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
        .collect();
    let mut incoming_fks = Vec::new();
    if !info.incoming_fks.is_empty() {
        let names = info
            .incoming_fks
            .iter()
            .map(|f| format!("{} on {}", f.name, f.table))
            .collect::<Vec<_>>()
            .join(", ");
        match plan.spec.foreign_keys.incoming {
            IncomingFk::Refuse => refusals.push(format!(
                "foreign keys of other tables reference {table} ({names}) and cannot follow it to a partitioned table whose unique keys include the partition key; drop them first, or set foreign_keys.incoming: drop"
            )),
            IncomingFk::Drop => {
                warn(&mut findings, format!(
                    "the foreign keys {names} will be dropped when the view goes live and will not exist after the swap (abort restores them)"
                ));
                incoming_fks = info
                    .incoming_fks
                    .iter()
                    .map(|f| IncomingFkDef { name: f.name.clone(), table: f.table.clone(), definition: f.definition.clone() })
                    .collect();
            }
        }
    }

    // Dependent objects.
    let mut dependent_views = Vec::new();
    for d in &info.dependents {
        match d.kind {
            'v' => {
                findings.push(Finding {
                    level: Level::Note,
                    message: format!("view {} depends on {table}; it is rebound to whatever carries the name when that changes (the routing view of the move method, the partitioned table at the swap)", d.name),
                });
                dependent_views.push(ViewDef { name: d.name.clone(), definition: d.definition.clone(), options: d.options.clone() });
            }
            'm' => refusals.push(format!(
                "materialized view {} depends on {table} and would keep reading the original table; drop it first and create it again after the swap",
                d.name
            )),
            _ => refusals.push(format!(
                "function {} depends on {table} through a SQL-standard body and would keep reading the original table; drop it first and create it again after the swap",
                d.name
            )),
        }
    }
    for p in &info.publications {
        findings.push(Finding {
            level: Level::Warning,
            message: format!("{table} is published by {p}; the partitioned table must be added to it after the swap (unless it publishes all tables)"),
        });
    }

    // Sequences: those owned by the table's columns move with the swap.
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
            findings.push(Finding {
                level: Level::Note,
                message: format!(
                    "column {} draws from sequence {}, which no column owns; it is shared as it is",
                    s.column, s.name
                ),
            });
        }
    }

    // Partition layout.
    let tz: chrono_tz::Tz = spec
        .time_zone
        .parse()
        .map_err(|_| plan.key_error("partition.time_zone", "is not a known time zone"))?;
    let method = plan.spec.method;
    let (min, max) = if list || key.hash.is_some() {
        (None, None)
    } else {
        key_range(client, table, &key).await?
    };
    let start = match (&spec.start, &plan.spec.attach.cutoff) {
        (_, Some(c)) if method == Method::Attach => {
            Some(bounds::parse_start(key.kind, tz, c).map_err(|e| plan.key_error("attach.cutoff", &e))?)
        }
        (Some(b), _) => Some(bounds::parse_start(key.kind, tz, b).map_err(|e| plan.key_error("partition.start", &e))?),
        (None, _) => None,
    };
    let template = spec.naming.clone().unwrap_or_else(|| {
        if list {
            "{table}_p{VALUE}".to_string()
        } else {
            partition::naming::default_template(spec.interval).to_string()
        }
    });
    let initial = spec.initial.unwrap_or_default();
    let layout = if let Some(m) = key.hash {
        let template = spec.naming.clone().unwrap_or_else(|| "{table}_h{VALUE}".to_string());
        (0..i64::from(m))
            .map(|r| partition::Partition {
                name: partition::naming::render(
                    &template,
                    table.name.as_str(),
                    &partition::naming::TokenValues {
                        value: Some(r),
                        ..Default::default()
                    },
                ),
                from: r.to_string(),
                to: m.to_string(),
            })
            .collect()
    } else if list {
        // Attach: the original is the partition of `initial`, and the
        // partitions for the values after it are made. Move and sync: one
        // partition for each value the table holds, and the plan's premade
        // values after the highest.
        let values: Vec<i64> = if method == Method::Attach {
            (1..=i64::from(spec.premake.max(1))).map(|i| initial + i).collect()
        } else {
            let mut held = distinct_values(client, table, &key).await?;
            if held.len() > MAX_LIST_VALUES {
                refusals.push(format!(
                    "{} holds more than {MAX_LIST_VALUES} distinct values of {}; list partitioning makes one partition per value (use hash, or range on it)",
                    table, key.column
                ));
                held.truncate(MAX_LIST_VALUES);
            }
            if spec.initial.is_some() && !held.contains(&initial) {
                held.push(initial);
                held.sort_unstable();
            }
            let top = held.last().copied().unwrap_or(initial);
            held.extend((1..=i64::from(spec.premake)).map(|i| top + i));
            if held.is_empty() {
                held.push(initial);
            }
            held
        };
        values
            .into_iter()
            .map(|v| partition::Partition {
                name: partition::naming::render(
                    &template,
                    table.name.as_str(),
                    &partition::naming::TokenValues {
                        value: Some(v),
                        ..Default::default()
                    },
                ),
                from: v.to_string(),
                to: v.to_string(),
            })
            .collect()
    } else {
        partition::layout(&LayoutInput {
            kind: key.kind,
            interval: spec.interval,
            step: spec.step.map(|s| s.0),
            tz,
            start,
            min,
            max,
            now: server.now,
            premake: spec.premake,
            template: &template,
            table: table.name.as_str(),
        })
        .map_err(|e| plan.key_error("partition", &e))?
    };
    // Attach: the original keeps every existing key as the first
    // partition; new partitions start at the cutoff.
    let mut layout = layout;
    let mut attach = None;
    if method == Method::Attach && list {
        let add_column = match key_col {
            None => Some(key.type_name.clone()),
            Some(_) => {
                let other: i64 = client
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM ONLY {table} WHERE {k} IS DISTINCT FROM {initial}",
                            k = key.column
                        ),
                        &[],
                    )
                    .await?
                    .get(0);
                if other > 0 {
                    refusals.push(format!(
                        "{other} existing rows have {} other than {initial}; the original can only become the partition of that one value",
                        key.column
                    ));
                }
                None
            }
        };
        if add_column.is_some() {
            findings.push(Finding {
                level: Level::Note,
                message: format!(
                    "the column {} bigint NOT NULL DEFAULT {initial} is added to {table} (no rewrite: the default is stored once); the application sets it for rows of later partitions",
                    key.column
                ),
            });
        }
        warn(
            &mut findings,
            format!(
                "between the constrain and swap phases the original refuses rows with {} other than {initial}",
                key.column
            ),
        );
        attach = Some(AttachDef {
            key_indexes: key_indexes(&uniques),
            cutoff: initial.to_string(),
            add_column,
            check: names::cutoff_check(table),
        });
    } else if method == Method::Attach {
        if plan.spec.attach.cutoff.is_none() {
            let now = match key.kind {
                KeyKind::TimestampTz => KeyValue::Instant(server.now),
                KeyKind::Timestamp => KeyValue::Local(server.now.with_timezone(&tz).naive_local()),
                KeyKind::Date => KeyValue::Day(server.now.with_timezone(&tz).date_naive()),
                KeyKind::Integer => KeyValue::Int(i64::MIN),
            };
            let newest = match max {
                Some(m) if key_less(now, m) => m,
                _ => now,
            };
            let first_after = layout
                .iter()
                .position(|p| bounds::first_bound_value(key.kind, tz, p).is_some_and(|b| key_less(newest, b)))
                .unwrap_or(layout.len().saturating_sub(1));
            layout.drain(..first_after);
        }
        let cutoff = layout[0].from.clone();
        if let (Some(m), Some(c)) = (max, bounds::first_bound_value(key.kind, tz, &layout[0])) {
            if !key_less(m, c) {
                refusals.push(format!(
                    "existing rows have keys at or after the cutoff {cutoff}; the original can only become the partition of keys below it"
                ));
            }
        }
        warn(
            &mut findings,
            format!(
                "between the constrain and swap phases the original refuses rows with {} at or after {cutoff}; the cutoff must lie beyond every key the application writes until the swap",
                key.column
            ),
        );
        attach = Some(AttachDef {
            cutoff,
            add_column: None,
            check: names::cutoff_check(table),
            key_indexes: key_indexes(&uniques),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for p in &layout {
        if !seen.insert(p.name.clone()) {
            return Err(plan
                .key_error(
                    "partition.naming",
                    &format!(
                        "gives two partitions the name {}; add a token that tells them apart",
                        p.name
                    ),
                )
                .into());
        }
        if p.name.len() > crate::sql::ident::MAX_IDENT_BYTES {
            return Err(plan
                .key_error(
                    "partition.naming",
                    &format!(
                        "gives the name {} which is longer than PostgreSQL's 63-byte limit",
                        p.name
                    ),
                )
                .into());
        }
    }
    let first = bounds::first_bound_value(key.kind, tz, &layout[0]);
    let below = match (first, min) {
        _ if method == Method::Attach || key.hash.is_some() => 0,
        (Some(f), Some(m)) if key_less(m, f) => count_below(client, table, &key, &layout[0].from).await?,
        _ => 0,
    };
    let default_partition = spec.default_partition.then(|| names::default_partition(table));
    if below > 0 {
        if default_partition.is_some() {
            warn(
                &mut findings,
                format!(
                    "{below} existing rows have keys below the first bound {} and will land in the default partition",
                    layout[0].from
                ),
            );
        } else {
            refusals.push(format!(
                "{below} existing rows have keys below the first bound {} and no partition would hold them; move partition.start back or set partition.default_partition: true",
                layout[0].from
            ));
        }
    }
    if spec.default_partition {
        warn(&mut findings, "a DEFAULT partition makes every later partition creation scan it under a strong lock, and forbids DETACH ... CONCURRENTLY".into());
    }

    // Names the tool will create must be free.
    let shadow = names::shadow(table);
    // Where the original goes when it steps aside: behind the view (move),
    // retired but kept in sync (sync), or the first partition (attach).
    let old = match method {
        Method::Move | Method::Sync => names::old(table, method),
        // A list partition is named for its value, as the others are.
        Method::Attach if list => table.sibling(Ident::new(partition::naming::render(
            &template,
            table.name.as_str(),
            &partition::naming::TokenValues {
                value: Some(initial),
                ..Default::default()
            },
        ))),
        Method::Attach => names::old(table, method),
    };
    let mirror = names::mirror(table);
    let retired_view = names::retired_view(table);
    let routing = names::routing(table);
    let mut relations: Vec<QualifiedName> = vec![shadow.clone(), old.clone(), retired_view.clone()];
    relations.extend(layout.iter().map(|p| table.sibling(Ident::new(p.name.clone()))));
    relations.extend(default_partition.iter().map(|d| table.sibling(d.clone())));
    for u in &uniques {
        relations.push(table.sibling(u.shadow_name.clone()));
        relations.push(table.sibling(u.old_rename.clone()));
    }
    for i in &indexes {
        relations.push(table.sibling(i.shadow_name.clone()));
        relations.push(table.sibling(i.old_rename.clone()));
    }
    for k in attach.iter().flat_map(|a| &a.key_indexes) {
        relations.push(table.sibling(k.name.clone()));
    }
    if method == Method::Sync {
        // The partitions' deferred indexes (method::sync::indexes).
        let leaves = layout
            .iter()
            .map(|p| Ident::new(p.name.clone()))
            .chain(default_partition.clone());
        for leaf in leaves {
            for (k, i) in indexes.iter().enumerate() {
                if matches!(i.body, IndexBody::Plain(_)) {
                    relations.push(table.sibling(names::partition_index(&leaf, k + 1)));
                }
            }
        }
    }
    let mut taken = Vec::new();
    for r in &relations {
        if catalog::relation_oid(client, r).await?.is_some() {
            taken.push(r.to_string());
        }
    }
    for f in [
        &routing.insert_function,
        &routing.update_function,
        &routing.delete_function,
        &mirror.function,
        &mirror.truncate_function,
        &mirror.back_function,
        &mirror.back_truncate_function,
    ] {
        if catalog::function_exists(client, f).await? {
            taken.push(format!("{f}()"));
        }
    }
    if !taken.is_empty() {
        refusals.push(format!(
            "names the migration needs are taken already: {} (left over from an earlier attempt? `migrate status` tells)",
            taken.join(", ")
        ));
    }

    if !refusals.is_empty() {
        return Err(Refusal::new(format!("cannot migrate {table}: {}", refusals.join("; "))).into());
    }

    let lock_timeout_ms = plan
        .spec
        .locks
        .lock_timeout
        .0
        .min((server.deadlock_timeout_ms.max(100) / 2) as u64)
        .max(10);
    if lock_timeout_ms < plan.spec.locks.lock_timeout.0 {
        findings.push(Finding {
            level: Level::Note,
            message: format!(
                "lock_timeout is capped at {lock_timeout_ms}ms, half the server's deadlock_timeout, so that the tool, not the application, steps back from any lock conflict"
            ),
        });
    }
    let columns = info
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            writable: !c.generated,
            has_equality: c.has_equality,
            default: c.default.clone(),
        })
        .collect();
    let blueprint = Blueprint {
        format: FORMAT,
        method,
        table: table.clone(),
        shadow,
        old,
        retired_view,
        owner: info.owner.clone(),
        columns,
        key,
        row_identity,
        partitions: layout
            .into_iter()
            .map(|p| PartitionDef {
                name: Ident::new(p.name),
                from: p.from,
                to: p.to,
            })
            .collect(),
        default_partition,
        uniques,
        indexes,
        foreign_keys,
        incoming_fks,
        dependent_views,
        grants: info.grants.clone(),
        comment: info.comment.clone(),
        storage: info.reloptions.clone(),
        sequences,
        routing,
        mirror,
        attach,
        split: None,
        settings: Settings {
            batch_rows: plan.spec.batch.rows(),
            pause_ms: plan.spec.batch.pause.0,
            lock_timeout_ms,
            statement_timeout_ms: plan.spec.locks.statement_timeout.0,
            retries: plan.spec.locks.retries,
            keep_old: plan.spec.swap.keep_old,
            block_size: server.block_size,
            // A batch holds its row locks for its whole duration: kept well
            // under deadlock_timeout, the application never loses a lock
            // cycle to it (see db::retry).
            target_ms: plan
                .spec
                .batch
                .target_ms()
                .map(|d| d.min((server.deadlock_timeout_ms.max(100) / 4) as u64)),
            throttle: plan.spec.throttle.clone(),
            hooks: plan.spec.hooks.clone(),
            postpone_swap: plan.spec.swap.postpone,
            workers: plan.spec.batch.workers(),
            gentle: plan.spec.batch.mode == crate::plan_file::BatchMode::Gentle,
        },
    };
    Ok(Resolved {
        blueprint,
        findings,
        info,
        server,
    })
}

/// Attach: a unique key that already holds the partition key is adopted as
/// it is; the others get an index with the key appended, built concurrently.
fn key_indexes(uniques: &[UniqueDef]) -> Vec<KeyIndex> {
    uniques
        .iter()
        .filter(|u| u.key_appended)
        .map(|u| KeyIndex {
            name: names::key_index(&u.name),
            columns: u.columns.clone(),
        })
        .collect()
}

fn warn(findings: &mut Vec<Finding>, message: String) {
    findings.push(Finding {
        level: Level::Warning,
        message,
    });
}

fn key_less(a: KeyValue, b: KeyValue) -> bool {
    match (a, b) {
        (KeyValue::Instant(a), KeyValue::Instant(b)) => a < b,
        (KeyValue::Local(a), KeyValue::Local(b)) => a < b,
        (KeyValue::Day(a), KeyValue::Day(b)) => a < b,
        (KeyValue::Int(a), KeyValue::Int(b)) => a < b,
        _ => false,
    }
}

/// The smallest and largest key, typed for the layout.
async fn key_range(client: &Client, table: &QualifiedName, key: &Key) -> Result<(Option<KeyValue>, Option<KeyValue>)> {
    crate::partition::existing::min_max(client, table, &key.column, key.kind).await
}

/// A list key's partitions beyond this many are refused: one table per
/// value does not scale to high-cardinality columns.
const MAX_LIST_VALUES: usize = 1000;

/// The distinct values of a list key, ascending: a skip scan where an index
/// leads with the key (each step one index probe), one scan otherwise.
/// At most one more than the cap is read.
async fn distinct_values(client: &Client, table: &QualifiedName, key: &Key) -> Result<Vec<i64>> {
    let k = &key.column;
    let indexed: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND a.attname = $2 AND i.indpred IS NULL)",
            &[&table.to_string(), &k.as_str()],
        )
        .await?
        .get(0);
    let limit = MAX_LIST_VALUES as i64 + 1;
    let sql = if indexed {
        format!(
            "WITH RECURSIVE v(x) AS ( \
               (SELECT {k} FROM ONLY {table} WHERE {k} IS NOT NULL ORDER BY {k} LIMIT 1) \
               UNION ALL \
               SELECT (SELECT {k} FROM ONLY {table} WHERE {k} > v.x ORDER BY {k} LIMIT 1) FROM v WHERE v.x IS NOT NULL) \
             SELECT x::int8 FROM v WHERE x IS NOT NULL LIMIT {limit}"
        )
    } else {
        format!("SELECT DISTINCT {k}::int8 FROM ONLY {table} WHERE {k} IS NOT NULL ORDER BY 1 LIMIT {limit}")
    };
    Ok(client.query(&sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

async fn count_below(client: &Client, table: &QualifiedName, key: &Key, first: &str) -> Result<i64> {
    let sql = format!(
        "SELECT count(*) FROM ONLY {table} WHERE {k} < $1::text::{ty}",
        k = key.column,
        ty = key.type_name
    );
    Ok(client.query_one(&sql, &[&first]).await?.get(0))
}

/// The blueprint of a split: the move machinery with the attached first
/// partition (`old`) as source and the partitioned table (renamed to
/// `shadow` while the view carries the name) as target, gaining proper
/// partitions for the first partition's range.
pub async fn resolve_split(client: &Client, plan: &PlanFile, attached: &Blueprint) -> Result<Blueprint> {
    let table = &attached.table;
    let Some(a) = &attached.attach else {
        return Err(Refusal::new(format!(
            "the last migration of {table} was not an attach; there is no first partition to split"
        ))
        .into());
    };
    let zero = &attached.old;
    let bound: Option<String> = client
        .query_opt(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
             WHERE c.oid = to_regclass($1) AND i.inhparent = to_regclass($2)",
            &[&zero.to_string(), &table.to_string()],
        )
        .await?
        .map(|r| r.get(0));
    if bound.is_none() {
        return Err(Refusal::new(format!(
            "{zero} is not a partition of {table} any more; there is nothing to split"
        ))
        .into());
    }
    let spec = &plan.spec.partition;
    let tz: chrono_tz::Tz = spec
        .time_zone
        .parse()
        .map_err(|_| plan.key_error("partition.time_zone", "is not a known time zone"))?;
    let key = attached.key.clone();
    let (min, _) = key_range(client, zero, &key).await?;
    let Some(min) = min else {
        return Err(Refusal::new(format!("{zero} is empty; detach and drop it instead of splitting it")).into());
    };
    let cutoff = bounds::bound_value(key.kind, tz, &a.cutoff)
        .ok_or_else(|| anyhow::anyhow!("the stored cutoff {} cannot be read", a.cutoff))?;
    let server = catalog::server_info(client).await?;
    if key.list {
        return Err(Refusal::new(format!(
            "{table} is partitioned by list; its first partition holds one value and has nothing to split"
        ))
        .into());
    }
    let template = spec
        .naming
        .clone()
        .unwrap_or_else(|| partition::naming::default_template(spec.interval).to_string());
    let layout = partition::layout(&LayoutInput {
        kind: key.kind,
        interval: spec.interval,
        step: spec.step.map(|s| s.0),
        tz,
        start: None,
        min: Some(min),
        max: Some(cutoff),
        now: server.now,
        premake: 0,
        template: &template,
        table: table.name.as_str(),
    })
    .map_err(|e| plan.key_error("partition", &e))?;
    let mut partitions = Vec::new();
    for p in layout {
        let from = bounds::first_bound_value(key.kind, tz, &p);
        let to = bounds::bound_value(key.kind, tz, &p.to);
        match (from, to) {
            (Some(f), _) if !key_less(f, cutoff) => break,
            (_, Some(t)) if key_less(cutoff, t) => {
                partitions.push(PartitionDef {
                    name: Ident::new(p.name),
                    from: p.from,
                    to: a.cutoff.clone(),
                });
            }
            _ => partitions.push(PartitionDef {
                name: Ident::new(p.name),
                from: p.from,
                to: p.to,
            }),
        }
    }
    let mut bp = attached.clone();
    bp.method = Method::Move;
    bp.shadow = names::shadow(table);
    bp.partitions = partitions;
    bp.default_partition = None;
    bp.incoming_fks = Vec::new();
    bp.settings.keep_old = false;
    // The first partition's rows are found by the partitioned key.
    bp.row_identity = attached
        .uniques
        .iter()
        .find(|u| u.primary)
        .map(|u| u.columns.clone())
        .unwrap_or(attached.row_identity.clone());
    bp.split = Some(SplitDef {
        cutoff: a.cutoff.clone(),
        check: names::cutoff_check(table),
    });
    bp.attach = None;
    // Dependent views as they are now.
    if let Some(oid) = catalog::relation_oid(client, table).await? {
        let info = catalog::table_info(client, oid).await?;
        bp.dependent_views = info
            .dependents
            .iter()
            .filter(|d| d.kind == 'v')
            .map(|d| ViewDef {
                name: d.name.clone(),
                definition: d.definition.clone(),
                options: d.options.clone(),
            })
            .collect();
        bp.grants = info.grants.clone();
        bp.comment = info.comment.clone();
    }
    let mut taken = Vec::new();
    let mut names: Vec<QualifiedName> = vec![bp.shadow.clone(), bp.retired_view.clone()];
    names.extend(bp.partitions.iter().map(|p| table.sibling(p.name.clone())));
    for r in &names {
        if catalog::relation_oid(client, r).await?.is_some() {
            taken.push(r.to_string());
        }
    }
    if !taken.is_empty() {
        return Err(Refusal::new(format!("names the split needs are taken already: {}", taken.join(", "))).into());
    }
    Ok(bp)
}
