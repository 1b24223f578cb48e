//! SQL text: identifier quoting and the statement type phases render.

pub mod ident;

pub use ident::{quote_ident, quote_literal, Ident, QualifiedName};

use serde::Serialize;
use std::fmt;

/// One statement a phase would run, with a short reason shown by `plan`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub why: &'static str,
}

impl Statement {
    pub fn new(why: &'static str, sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), why }
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-- {}\n{};", self.why, self.sql)
    }
}

/// Joins rendered pieces with `, `.
pub fn list<I, T>(items: I) -> String
where
    I: IntoIterator<Item = T>,
    T: fmt::Display,
{
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}
