//! The password file (`PGPASSFILE`, else `~/.pgpass`), as libpq reads it:
//! `host:port:database:username:password` lines, `*` matching anything,
//! `\\` escaping `:` and `\\`, the first matching line winning. A socket
//! connection matches the host `localhost`.

/// The password for a connection, if a line matches.
pub fn lookup(contents: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in contents.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], database)
            && matches(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("a field").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("a field").push(c),
        }
    }
    fields
}

/// The file's contents, if it exists and is private: libpq ignores a
/// password file that others can read, and so does this tool.
pub fn read() -> Option<String> {
    let path = match std::env::var("PGPASSFILE") {
        Ok(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => std::path::PathBuf::from(std::env::var("HOME").ok()?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the password file can be read by others and is ignored (chmod 0600 it)");
            return None;
        }
    }
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let file = "# comment\ndb.example:5432:app:alice:s3cret\n*:*:*:bob:pa\\:ss\\\\word\nlocalhost:*:*:*:local\n";
        assert_eq!(
            lookup(file, "db.example", 5432, "app", "alice").as_deref(),
            Some("s3cret")
        );
        assert_eq!(lookup(file, "db.example", 5433, "app", "alice"), None);
        assert_eq!(lookup(file, "anywhere", 1, "x", "bob").as_deref(), Some("pa:ss\\word"));
        assert_eq!(lookup(file, "localhost", 5432, "x", "carol").as_deref(), Some("local"));
    }
}
