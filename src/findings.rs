//! What planning tells the user besides refusals: notes and warnings,
//! found by the blueprint, the access check and the pre-flight checks.

use serde::Serialize;

/// Something `plan` tells the user; refusals are errors instead.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Note,
    Warning,
}

/// Codes of the refusals a plan may accept (`accept:`): statements of the
/// application's that the move method's view does not serve as the table
/// did, found in pg_stat_statements.
pub mod codes {
    pub const VIEW_LOCKING_READS: &str = "view-locking-reads";
    pub const VIEW_READ_MODIFY_WRITE: &str = "view-read-modify-write";
    pub const VIEW_ON_CONFLICT: &str = "view-on-conflict";
    pub const VIEW_MERGE: &str = "view-merge";
    pub const VIEW_COPY_TO: &str = "view-copy-to";
    pub const VIEW_TRUNCATE: &str = "view-truncate";
    pub const ACCEPTABLE: &[&str] = &[
        VIEW_LOCKING_READS,
        VIEW_READ_MODIFY_WRITE,
        VIEW_ON_CONFLICT,
        VIEW_MERGE,
        VIEW_COPY_TO,
        VIEW_TRUNCATE,
    ];
}
