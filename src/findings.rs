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
