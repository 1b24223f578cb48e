//! The blueprint: a plan file resolved against the live catalog into every
//! name, bound and definition the phases need. It is computed once, by
//! read-only queries ([`gather`]) and a derivation without I/O
//! ([`derive`]), stored in the control table when a run starts, and
//! from then on every phase renders its SQL from it alone; so a resumed run
//! does exactly what the first one planned, whatever the catalog looks like
//! mid-migration.

pub mod derive;
pub mod facts;
pub mod gather;
pub mod names;

pub use crate::findings::{Finding, Level};

use crate::catalog::{GrantInfo, ServerInfo, TableInfo};
use crate::partition::KeyKind;
use crate::plan_file::{Method, PlanFile};
use crate::sql::{Ident, QualifiedName};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// Bumped when the stored shape changes; an older binary refuses a newer one.
pub const FORMAT: u32 = 2;

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
    /// The publications that list the table by name: the swap hands them
    /// to the partitioned table.
    #[serde(default)]
    pub publications: Vec<PublicationDef>,
    pub grants: Vec<GrantInfo>,
    pub comment: Option<String>,
    /// The original's storage parameters, given to each partition.
    pub storage: Vec<String>,
    /// The original's tablespace, given to the partitioned table and each
    /// partition.
    #[serde(default)]
    pub tablespace: Option<String>,
    pub sequences: Vec<SequenceDef>,
    /// Identity columns the swap hands from one table to the other.
    #[serde(default)]
    pub identities: Vec<IdentityDef>,
    pub routing: Routing,
    pub mirror: Mirror,
    pub attach: Option<AttachDef>,
    /// Set when this is the split of an attached first partition: the move
    /// machinery with the partitioned table as target and the first
    /// partition as source.
    #[serde(default)]
    pub split: Option<SplitDef>,
    /// The original's row-level security, carried to the partitioned table.
    #[serde(default)]
    pub row_security: RowSecurity,
    /// The original's user triggers, carried to the partitioned table.
    #[serde(default)]
    pub triggers: Vec<crate::catalog::TriggerInfo>,
    /// Materialized views that read the table, rebuilt on the partitioned
    /// table after the swap.
    #[serde(default)]
    pub materialized: Vec<crate::catalog::MatViewInfo>,
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
    #[serde(default)]
    pub clauses: IndexClauses,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Column {
    pub name: Ident,
    /// False for generated columns, which are computed, never written.
    pub writable: bool,
    pub has_equality: bool,
    /// For an identity column, the nextval of its sequence: the routing
    /// view's default for it.
    pub default: Option<String>,
    #[serde(default)]
    pub identity: Option<ColumnIdentity>,
    /// The type without its modifier (`format_type(atttypid, NULL)`): the
    /// verification hashes some types by value. Empty in a blueprint
    /// recorded before it was kept, which hashes every column as text.
    #[serde(default)]
    pub base_type: String,
}

/// An identity column as the tool's own writes see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ColumnIdentity {
    /// GENERATED ALWAYS: the tool's inserts say `OVERRIDING SYSTEM VALUE`
    /// and no UPDATE of the tool sets it.
    pub always: bool,
    /// The sequence the table's name draws from.
    pub sequence: QualifiedName,
    /// Roles (None: PUBLIC) that may insert into the table but not use the
    /// sequence: the routing view's default needs them to, so they are
    /// given USAGE while the view stands.
    #[serde(default)]
    pub grant: Vec<Option<String>>,
}

/// The identity the swap gives the table that takes the name: same kind
/// and options, under the original sequence's name, continuing where the
/// original's sequence stands; the original's sequence steps aside to
/// `stepped_aside`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdentityDef {
    pub column: Ident,
    pub always: bool,
    pub sequence: QualifiedName,
    pub stepped_aside: QualifiedName,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub cycle: bool,
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
    /// A list key whose values are not integers (text, enum, uuid, date):
    /// its partitions are the values the table holds, none made ahead.
    #[serde(default)]
    pub list_text: bool,
    /// The key column may be NULL: the run makes it NOT NULL first
    /// (`method::not_null`).
    #[serde(default)]
    pub made_not_null: bool,
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
    #[serde(default)]
    pub clauses: IndexClauses,
}

/// What a key's index has beyond its columns (read from the catalog),
/// carried to the partitioned table's key and to the attach method's index.
pub use crate::catalog::IndexClauses;

/// ENABLE and FORCE ROW LEVEL SECURITY, and the policies.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RowSecurity {
    pub enabled: bool,
    pub forced: bool,
    pub policies: Vec<crate::catalog::PolicyInfo>,
    /// FORCE binds the tool's role, which cannot bypass row-level
    /// security: for the migration a permissive policy for this role lets
    /// the tool's own sessions see and write every row
    /// (`shared::tool_policy`).
    #[serde(default)]
    pub tool_role: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexDef {
    pub name: Ident,
    pub shadow_name: Ident,
    pub old_rename: Ident,
    /// Method, keys and clauses (`btree (run_id) WHERE ...`), or for a
    /// unique index the key columns to which the partition key is added.
    pub body: IndexBody,
    /// A unique index's definition after `USING`, the partition key
    /// appended to its columns: its method, opclasses, collations,
    /// orderings, INCLUDE, NULLS NOT DISTINCT, storage parameters,
    /// tablespace and WHERE clause as on the original.
    #[serde(default)]
    pub unique_tail: Option<String>,
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

/// A publication of the table, with its row filter and column list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PublicationDef {
    pub name: Ident,
    pub row_filter: Option<String>,
    pub columns: Vec<Ident>,
    /// It publishes partitions through their root already.
    pub via_root: bool,
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
    /// The refusals the plan accepts (`findings::codes`), which the watch
    /// of the application's statements reports without pausing.
    #[serde(default)]
    pub accepted: Vec<String>,
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
    /// The attach method by range: the split that can follow it, as the
    /// table is now, for `plan` to show.
    pub split: Option<Blueprint>,
}

impl Blueprint {
    pub fn writable_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.writable)
    }

    /// Whether a column is GENERATED ALWAYS AS IDENTITY, so that the tool's
    /// inserts must override it.
    pub fn has_always_identity(&self) -> bool {
        self.columns
            .iter()
            .any(|c| c.identity.as_ref().is_some_and(|i| i.always))
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
/// here, before anything changes. The catalog is read first, then the
/// blueprint is derived from what it said, without I/O.
pub async fn resolve(client: &Client, plan: &PlanFile) -> Result<Resolved> {
    let facts = gather::gather(client, plan).await?;
    derive::derive(plan, &facts)
}

/// The blueprint of a split: the move machinery with the attached first
/// partition (`old`) as source and the partitioned table (renamed to
/// `shadow` while the view carries the name) as target, gaining proper
/// partitions for the first partition's range.
pub async fn resolve_split(client: &Client, plan: &PlanFile, attached: &Blueprint) -> Result<Blueprint> {
    let facts = gather::split_facts(client, plan, attached).await?;
    derive::split::split(plan, attached, &facts)
}
