//! The only way a name reaches SQL: every identifier is quoted here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// A single SQL identifier, stored unquoted and rendered quoted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ident(String);

impl Ident {
    pub fn new(name: impl Into<String>) -> Self {
        Ident(name.into())
    }

    /// The raw, unquoted name (what the catalog stores).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name derived from this one by appending `suffix`, kept within
    /// PostgreSQL's 63-byte limit. When it would be too long the base is cut
    /// and a short hash of the full name keeps derived names distinct, so
    /// that PostgreSQL never truncates (and collides) them silently.
    pub fn derive(&self, suffix: &str) -> Ident {
        derive_name(&self.0, suffix)
    }
}

/// See [`Ident::derive`].
pub fn derive_name(base: &str, suffix: &str) -> Ident {
    let full = format!("{base}{suffix}");
    if full.len() <= MAX_IDENT_BYTES {
        return Ident(full);
    }
    let hash = format!("_{:08x}", fnv1a(full.as_bytes()) as u32);
    let room = MAX_IDENT_BYTES - suffix.len() - hash.len();
    let mut cut = room.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    Ident(format!("{}{hash}{suffix}", &base[..cut]))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote_ident(&self.0))
    }
}

/// A schema-qualified relation or function name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QualifiedName {
    pub schema: Ident,
    pub name: Ident,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            schema: Ident::new(schema),
            name: Ident::new(name),
        }
    }

    /// The same schema with another name.
    pub fn sibling(&self, name: Ident) -> QualifiedName {
        QualifiedName {
            schema: self.schema.clone(),
            name,
        }
    }

    /// Parses `schema.table` as written in a plan file. Double quotes may
    /// protect dots and keep case, as in SQL; an unquoted part is folded to
    /// lower case as PostgreSQL would fold it.
    pub fn parse(text: &str) -> Result<QualifiedName, String> {
        let parts = split_qualified(text)?;
        match parts.as_slice() {
            [schema, name] => Ok(QualifiedName {
                schema: schema.clone(),
                name: name.clone(),
            }),
            [_] => Err(format!(
                "`{text}` is not schema-qualified; write it as schema.table (for example public.{text})"
            )),
            _ => Err(format!(
                "`{text}` has too many dots; write it as schema.table and quote names that contain dots"
            )),
        }
    }

    /// The name as one text value, for `$1::regclass` parameters and for
    /// messages.
    pub fn to_regclass_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an identifier for SQL, always, so that reserved words, upper case,
/// spaces and quotes are safe.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a string literal. Values travel as `$n` parameters wherever the
/// protocol allows; this serves only DDL, which takes no parameters
/// (partition bounds, comments, defaults in generated text).
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let has_backslash = value.contains('\\');
    if has_backslash {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn split_qualified(text: &str) -> Result<Vec<Ident>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("`{text}` has an unterminated double quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' {
                    return Err(format!("`{text}` has a double quote inside an unquoted name"));
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
            if part.trim() != part {
                return Err(format!(
                    "`{text}` has spaces around a name; quote names that contain spaces"
                ));
            }
        }
        if part.is_empty() {
            return Err(format!("`{text}` has an empty name part"));
        }
        if part.len() > MAX_IDENT_BYTES {
            return Err(format!("`{part}` is longer than PostgreSQL's 63-byte identifier limit"));
        }
        parts.push(Ident(part));
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => return Err(format!("`{text}` has an unexpected `{c}` after a quoted name")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_everything() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }

    #[test]
    fn parses_qualified_names() {
        let q = QualifiedName::parse("public.Events").unwrap();
        assert_eq!(q.name.as_str(), "events");
        let q = QualifiedName::parse("\"My.Schema\".\"Ev\"\"x\"").unwrap();
        assert_eq!(q.schema.as_str(), "My.Schema");
        assert_eq!(q.name.as_str(), "Ev\"x");
        assert!(QualifiedName::parse("events").is_err());
        assert!(QualifiedName::parse("a.b.c").is_err());
        assert!(QualifiedName::parse("a.\"b").is_err());
        assert!(QualifiedName::parse("a.").is_err());
    }

    #[test]
    fn derived_names_fit_and_stay_distinct() {
        let long = "x".repeat(63);
        let a = derive_name(&long, "__orig");
        let b = derive_name(&long, "__part");
        assert!(a.as_str().len() <= MAX_IDENT_BYTES);
        assert_ne!(a, b);
        assert!(a.as_str().ends_with("__orig"));
        let uni = "é".repeat(40);
        assert!(derive_name(&uni, "_p20250101").as_str().len() <= MAX_IDENT_BYTES);
        assert_eq!(derive_name("t", "_x").as_str(), "t_x");
    }
}
