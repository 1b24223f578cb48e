//! The targets file: one database per line, a name and a connection
//! string, `${VAR}` taken from the environment so that secrets stay out of
//! the file.

use crate::error::Refusal;
use anyhow::Result;

/// One database of the fleet, as the targets file names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// The connection string with `${VAR}` expanded; may hold a password,
    /// so it is never printed.
    pub conn: String,
}

/// Reads the targets from a file, or from standard input for `-`.
pub fn load(path: &std::path::Path) -> Result<Vec<Target>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Refusal::new(format!("cannot read the targets from standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Refusal::new(format!("cannot read the targets file {}: {e}", path.display())))?
    };
    let env = |k: &str| std::env::var(k).ok();
    Ok(parse(&text, &env)?)
}

/// Parses the targets: `NAME CONNECTION` per line, `#` starts a comment
/// line, blank lines are skipped. The connection string is the rest of the
/// line, so `key=value` strings with spaces need no quoting.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Target>, Refusal> {
    let mut out: Vec<Target> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |msg: String| Refusal::new(format!("targets, line {}: {msg}", i + 1));
        let (name, conn) = match line.split_once(char::is_whitespace) {
            Some((n, c)) if !c.trim().is_empty() => (n, c.trim()),
            _ => {
                return Err(at(format!(
                    "`{name}` has no connection string; each line is a name and a connection string",
                    name = line.split_whitespace().next().unwrap_or(line)
                )))
            }
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)) {
            return Err(at(format!(
                "the name `{name}` may hold only letters, digits and `_ . : -`"
            )));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(at(format!("the name `{name}` is given twice")));
        }
        let conn = expand(conn, env).map_err(at)?;
        out.push(Target {
            name: name.to_string(),
            conn,
        });
    }
    if out.is_empty() {
        return Err(Refusal::new("the targets list names no database"));
    }
    Ok(out)
}

/// Expands `${VAR}`; a `$` not followed by `{` stays as it is.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err("a `${` is not closed by `}`".into());
        };
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{var}}}` is not a variable name"));
        }
        match env(var) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("the environment variable {var} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PW" => Some("s3cr$t".into()),
            "HOST" => Some("db1".into()),
            _ => None,
        }
    }

    #[test]
    fn names_connections_and_variables() {
        let t = parse(
            "# inventory\n\neu-1  postgresql://app:${PW}@${HOST}/app\nus.2\thost=db2 dbname=app user=app\n",
            &env,
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "eu-1");
        assert_eq!(t[0].conn, "postgresql://app:s3cr$t@db1/app");
        assert_eq!(t[1].conn, "host=db2 dbname=app user=app");
    }

    #[test]
    fn refusals_name_the_line() {
        let e = |text: &str| parse(text, &env).unwrap_err().0;
        assert_eq!(e("a host=x\na host=y"), "targets, line 2: the name `a` is given twice");
        assert_eq!(
            e("lonely"),
            "targets, line 1: `lonely` has no connection string; each line is a name and a connection string"
        );
        assert_eq!(
            e("a host=${NOPE}"),
            "targets, line 1: the environment variable NOPE is not set"
        );
        assert_eq!(e("a host=${HOST"), "targets, line 1: a `${` is not closed by `}`");
        assert_eq!(
            e("a/b host=x"),
            "targets, line 1: the name `a/b` may hold only letters, digits and `_ . : -`"
        );
        assert_eq!(e("# nothing\n"), "the targets list names no database");
    }

    #[test]
    fn a_lone_dollar_stays() {
        let t = parse("a password=pa$$word host=x", &env).unwrap();
        assert_eq!(t[0].conn, "password=pa$$word host=x");
    }
}
