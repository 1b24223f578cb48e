//! Errors a user must tell apart, each with its own exit code.

use std::fmt;

/// The plan or the database state does not allow the request; nothing was
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    /// A refusal is one line: values from the plan or the catalog that
    /// carry line breaks or other control characters are shown escaped.
    pub fn new(msg: impl Into<String>) -> Self {
        let msg: String = msg.into();
        if !msg.chars().any(char::is_control) {
            return Refusal(msg);
        }
        Refusal(
            msg.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Kinds of failure with documented exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A lock could not be had within the retry budget.
    #[error("{0}")]
    LockTimeout(String),
    /// Another runner holds this migration.
    #[error("{0}")]
    Conflict(String),
    /// Stopped by a signal at a safe point.
    #[error("{0} was interrupted; run it again to continue")]
    Interrupted(String),
}

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const REFUSED: i32 = 2;
    pub const LOCK_TIMEOUT: i32 = 3;
    pub const CONFLICT: i32 = 4;
    /// `maintain`: the newest partition ends within one period.
    pub const RUNNING_OUT: i32 = 5;
    /// `fleet`: a target failed (not refused: an error, a lock that could
    /// not be had, another runner).
    pub const FLEET_FAILED: i32 = 6;
    pub const INTERRUPTED: i32 = 130;
    /// The reader of the output went away (`migrate status | head`): the
    /// status a shell gives a process that SIGPIPE ended.
    pub const CLOSED_PIPE: i32 = 141;
}

/// The exit code for an error chain.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<Refusal>().is_some() {
            return exit::REFUSED;
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::LockTimeout(_) => exit::LOCK_TIMEOUT,
                Failure::Conflict(_) => exit::CONFLICT,
                Failure::Interrupted(_) => exit::INTERRUPTED,
            };
        }
    }
    exit::INTERNAL
}
