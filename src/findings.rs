//! What planning tells the user besides refusals: notes and warnings,
//! found by the blueprint, the access check and the pre-flight checks.
//! Each has a stable code, printed with it, that a plan may accept.

use serde::Serialize;

/// Something `plan` tells the user; refusals are errors instead.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// Stable across releases: `accept:` and `--strict` go by it.
    pub code: &'static str,
    pub message: String,
}

impl Finding {
    pub fn warning(code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            code,
            message: message.into(),
        }
    }

    pub fn note(code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Note,
            code,
            message: message.into(),
        }
    }

    /// Whether `plan --strict` fails for it: a warning the plan does not
    /// accept.
    pub fn fails_strict(&self, accepted: &[String]) -> bool {
        self.level == Level::Warning && !accepted.iter().any(|a| a == self.code)
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Note,
    Warning,
}

/// The codes of findings and of the refusals a plan may accept
/// (`accept:`). docs/plan-file.md lists them with what each means.
pub mod codes {
    // Refusals a plan may take as warnings: statements of the application's
    // that the move method's view does not serve as the table did, found in
    // pg_stat_statements.
    pub const VIEW_LOCKING_READS: &str = "view-locking-reads";
    pub const VIEW_READ_MODIFY_WRITE: &str = "view-read-modify-write";
    pub const VIEW_ON_CONFLICT: &str = "view-on-conflict";
    pub const VIEW_MERGE: &str = "view-merge";
    pub const VIEW_COPY_TO: &str = "view-copy-to";
    pub const VIEW_TRUNCATE: &str = "view-truncate";

    // Warnings: `plan --strict` fails on each the plan does not accept.
    pub const PK_GAINS_PARTITION_KEY: &str = "pk-gains-partition-key";
    pub const UNIQUE_GAINS_PARTITION_KEY: &str = "unique-gains-partition-key";
    pub const INVALID_INDEX_DROPPED: &str = "invalid-index-dropped";
    pub const INCOMING_FKS_DROPPED: &str = "incoming-fks-dropped";
    pub const LIST_VALUES_FIXED: &str = "list-values-fixed";
    pub const ROWS_IN_DEFAULT: &str = "rows-in-default";
    pub const DEFAULT_PARTITION: &str = "default-partition";
    pub const ATTACH_WINDOW: &str = "attach-window";
    pub const REPLICA_IDENTITY_NOT_INHERITED: &str = "replica-identity-not-inherited";
    pub const COLUMN_GRANTS_DROPPED: &str = "column-grants-dropped";
    pub const SLOT_DECODES_EVERYTHING: &str = "slot-decodes-everything";
    pub const SLOT_WAL_LIMIT: &str = "slot-wal-limit";
    pub const PARTITION_TOO_LARGE: &str = "partition-too-large";
    pub const ON_CONFLICT_WITHOUT_KEY: &str = "on-conflict-without-key";

    // Notes: told, never failing.
    pub const NO_UNIQUE_KEY: &str = "no-unique-key";
    pub const KEY_COLUMN_ADDED: &str = "key-column-added";
    pub const KEY_MADE_NOT_NULL: &str = "key-made-not-null";
    pub const LOCK_TIMEOUT_CAPPED: &str = "lock-timeout-capped";
    pub const LATENCY_BUDGET_METHOD_COST: &str = "latency-budget-method-cost";
    pub const POLICIES_INACTIVE: &str = "policies-inactive";
    pub const ROW_SECURITY_CARRIED: &str = "row-security-carried";
    pub const ROW_SECURITY_TOOL_POLICY: &str = "row-security-tool-policy";
    pub const TRIGGERS_CARRIED: &str = "triggers-carried";
    pub const VIEW_REBOUND: &str = "view-rebound";
    pub const MATVIEW_REBUILT: &str = "matview-rebuilt";
    pub const PUBLICATION_HANDED_OVER: &str = "publication-handed-over";
    pub const SEQUENCE_SHARED: &str = "sequence-shared";
    pub const IDENTITY_CARRIED: &str = "identity-carried";
    pub const OWNER_OWNS_OBJECTS: &str = "owner-owns-objects";
    pub const REPLICA_IDENTITY_NOTHING: &str = "replica-identity-nothing";
    pub const SLOT_RETAINS_WAL: &str = "slot-retains-wal";
    pub const STATEMENTS_NOT_CHECKED: &str = "statements-not-checked";
    pub const COPY_TO_READS_ALL: &str = "copy-to-reads-all";
    pub const NO_PRUNING: &str = "no-pruning";
    pub const PARTITION_SIZES: &str = "partition-sizes";
    pub const DISK: &str = "disk";
    pub const DURATION: &str = "duration";
    pub const WAL: &str = "wal";

    /// The refusals a plan may accept.
    pub const REFUSALS: &[&str] = &[
        VIEW_LOCKING_READS,
        VIEW_READ_MODIFY_WRITE,
        VIEW_ON_CONFLICT,
        VIEW_MERGE,
        VIEW_COPY_TO,
        VIEW_TRUNCATE,
    ];

    /// The warnings a plan may accept.
    pub const WARNINGS: &[&str] = &[
        PK_GAINS_PARTITION_KEY,
        UNIQUE_GAINS_PARTITION_KEY,
        INVALID_INDEX_DROPPED,
        INCOMING_FKS_DROPPED,
        LIST_VALUES_FIXED,
        ROWS_IN_DEFAULT,
        DEFAULT_PARTITION,
        ATTACH_WINDOW,
        REPLICA_IDENTITY_NOT_INHERITED,
        COLUMN_GRANTS_DROPPED,
        SLOT_DECODES_EVERYTHING,
        SLOT_WAL_LIMIT,
        PARTITION_TOO_LARGE,
        ON_CONFLICT_WITHOUT_KEY,
    ];

    /// Whether `accept:` may name the code.
    pub fn acceptable(code: &str) -> bool {
        REFUSALS.contains(&code) || WARNINGS.contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::{codes, Finding};

    #[test]
    fn strict_fails_on_warnings_not_accepted_and_the_docs_list_every_code() {
        let w = Finding::warning(codes::PK_GAINS_PARTITION_KEY, "x");
        assert!(w.fails_strict(&[]));
        assert!(!w.fails_strict(&[codes::PK_GAINS_PARTITION_KEY.to_string()]));
        assert!(!Finding::note(codes::DISK, "y").fails_strict(&[]));
        let all: Vec<&str> = codes::REFUSALS.iter().chain(codes::WARNINGS).copied().collect();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        let docs = include_str!("../docs/plan-file.md");
        for code in all {
            assert!(
                docs.contains(&format!("| `{code}` |")),
                "docs/plan-file.md lacks {code}"
            );
        }
    }
}
