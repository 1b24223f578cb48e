//! What planning knows of the catalog: gathered by [`super::gather`],
//! derived from by [`super::derive`].

use crate::access::AccessFacts;
use crate::catalog::{ServerInfo, TableInfo};
use crate::partition::KeyValue;

/// A list key's partitions beyond this many are refused: one table per
/// value does not scale to high-cardinality columns.
pub const MAX_LIST_VALUES: usize = 1000;

/// What the catalog holds, as far as the plan needs it. Gathering stops
/// early where a later fact would mean nothing (no such table, a view);
/// derivation refuses there before it needs them.
#[derive(Clone, Debug)]
pub struct Facts {
    pub server: ServerInfo,
    /// None when no relation has the plan's name.
    pub info: Option<TableInfo>,
    pub access: Option<AccessFacts>,
    /// The smallest and largest key (range keys).
    pub min: Option<KeyValue>,
    pub max: Option<KeyValue>,
    /// The highest value a sequence behind an integer range key has handed
    /// out: after retention empties a table, it runs far ahead of `max`.
    pub sequence_max: Option<i64>,
    /// The values a list key holds, ascending, at most one more than
    /// `MAX_LIST_VALUES` (move and sync).
    pub list_values: Vec<i64>,
    /// The same for a list key of text, enum, uuid or date values, as
    /// PostgreSQL prints them.
    pub list_texts: Vec<String>,
    /// Rows whose list key is not the first partition's value (attach).
    pub other_values: i64,
    /// Attach by a text, enum, uuid or date list: `partition.initial` as
    /// PostgreSQL prints it in the key's type, or why the type refuses it.
    pub list_initial: Option<Result<String, String>>,
    /// Rows below the first partition's lower bound.
    pub below_first: i64,
    /// Names the migration would create that exist already.
    pub taken: Vec<String>,
    /// What Citus's catalog says of the table, where Citus is installed:
    /// its `partmethod` and `repmodel` in `pg_dist_partition`.
    pub citus: Option<(String, String)>,
}

impl Facts {
    pub fn new(server: ServerInfo) -> Facts {
        Facts {
            server,
            info: None,
            access: None,
            min: None,
            max: None,
            sequence_max: None,
            list_values: Vec::new(),
            list_texts: Vec::new(),
            list_initial: None,
            other_values: 0,
            below_first: 0,
            taken: Vec::new(),
            citus: None,
        }
    }
}

/// What a split reads of the catalog.
#[derive(Clone, Debug)]
pub struct SplitFacts {
    pub server: ServerInfo,
    /// The first partition's bound, while it is a partition of the table.
    pub bound: Option<String>,
    /// The first partition's smallest key.
    pub min: Option<KeyValue>,
    /// The partitioned table as it is now.
    pub info: Option<TableInfo>,
    pub taken: Vec<String>,
    /// Whether the tool's role bypasses row-level security.
    pub bypass_rls: bool,
}
