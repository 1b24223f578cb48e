//! Pre-flight analysis for `plan`: what the application runs against the
//! table (from pg_stat_statements, when installed and readable), and how
//! large the partitions would be (from a sample of the table).

use crate::blueprint::{Blueprint, Finding, Level};
use crate::findings::codes;
use crate::plan_file::Method;
use anyhow::Result;
use tokio_postgres::Client;

/// The pg_stat_statements view of this database, when it is installed
/// and readable.
async fn statements_view(client: &Client) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "SELECT coalesce(to_regclass('pg_stat_statements'), to_regclass('public.pg_stat_statements'))::text",
            &[],
        )
        .await?
        .get::<_, Option<String>>(0))
}

/// One statement of the application's on the table, as pg_stat_statements
/// has it.
pub struct Seen {
    pub queryid: i64,
    pub query: String,
    pub calls: i64,
}

/// The statements of this database that name the table (the tool's own
/// left out), most called first; `None` when pg_stat_statements is not
/// there to ask, or cannot be read (the reason).
pub async fn seen(client: &Client, bp: &Blueprint) -> Result<Result<Vec<Seen>, String>> {
    let Some(view) = statements_view(client).await? else {
        return Ok(Err("pg_stat_statements is not installed in this database".into()));
    };
    let name = bp.table.name.as_str();
    match client
        .query(
            &format!(
                "SELECT coalesce(queryid, 0)::bigint, query, calls::bigint FROM {view} \
                 WHERE dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
                 AND query ~* $1 AND query !~* 'repartition\\.' ORDER BY calls DESC LIMIT 500"
            ),
            &[&format!(r#"\m"?{}"?\M"#, regex_escape(name))],
        )
        .await
    {
        Ok(rows) => Ok(Ok(rows
            .iter()
            .map(|r| Seen {
                queryid: r.get(0),
                query: r.get(1),
                calls: r.get(2),
            })
            .collect())),
        Err(e) => Ok(Err(format!(
            "pg_stat_statements could not be read ({})",
            crate::db::retry::message(&e)
        ))),
    }
}

/// A statement the move method's view does not serve as the table did:
/// its refusal code and why.
fn hazard(bp: &Blueprint, query: &str) -> Option<(&'static str, &'static str)> {
    use crate::findings::codes::*;
    let lower = without_literals(&query.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase());
    let locking = [" for update", " for no key update", " for share", " for key share"];
    if locking.iter().any(|l| lower.contains(l)) {
        return Some((
            VIEW_LOCKING_READS,
            "it locks rows (FOR UPDATE/SHARE), which fails on the move method's view until the swap: PostgreSQL would run it there without locking a row, so the view is built to refuse it",
        ));
    }
    if lower.starts_with("merge") {
        return Some((
            VIEW_MERGE,
            "it is a MERGE, which the move method's view refuses before PostgreSQL 17 and from 17 on serves as a read-modify-write that can lose a concurrent update",
        ));
    }
    if lower.starts_with("copy ") && !lower.starts_with("copy (") && lower.contains(" to ") {
        return Some((
            VIEW_COPY_TO,
            "it is COPY ... TO of the table itself, which fails on the move method's view until the swap (COPY (SELECT ...) TO works)",
        ));
    }
    if lower.starts_with("truncate") {
        return Some((
            VIEW_TRUNCATE,
            "it is a TRUNCATE, which fails on the move method's view until the swap",
        ));
    }
    if lower.contains(" on conflict") {
        return Some((
            VIEW_ON_CONFLICT,
            "it is INSERT ... ON CONFLICT, which fails on the move method's view until the swap",
        ));
    }
    if lower.starts_with("update") && reads_the_row(bp, &lower) {
        return Some((
            VIEW_READ_MODIFY_WRITE,
            "it sets a column from the row's own values (SET n = n + 1), which through the move method's view can lose a concurrent update of the same row until the swap: the view routes the new values computed from an unlocked read",
        ));
    }
    None
}

/// The first statement in `text` (one statement, or a string of them as
/// pg_stat_activity shows a simple query) that names the table and that
/// its view does not serve as the table did. Statements naming only other
/// relations (the original under its new name, say) are none of the view's.
pub fn hazard_in(bp: &Blueprint, text: &str) -> Option<(&'static str, &'static str)> {
    let name = bp.table.name.as_str().to_lowercase();
    statements_of(text)
        .into_iter()
        .filter(|q| mentions(&without_literals(&q.to_lowercase()), &name))
        .find_map(|q| hazard(bp, q))
}

/// A statement as the watch tells it once, whichever way it was seen:
/// pg_stat_activity shows `n = n + 1` where pg_stat_statements has
/// `n = n + $2`, so literals, numbers and parameters all read as `?`.
fn fingerprint(q: &str) -> String {
    let lower = q.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let (mut quoted, mut prev) = (false, ' ');
    let mut chars = lower.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if !quoted {
                out.push('?');
            }
            quoted = !quoted;
        } else if quoted {
            continue;
        } else if (c == '$' || c.is_ascii_digit()) && !(prev.is_alphanumeric() || prev == '_') {
            while chars.peek().is_some_and(|d| d.is_ascii_digit() || *d == '.') {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// The statements of a query string, split at the semicolons outside
/// string literals.
fn statements_of(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter().map(str::trim).filter(|q| !q.is_empty()).collect()
}

/// The statement with its string literals emptied, so that a word inside
/// one (pg_stat_activity shows them; pg_stat_statements has `$1`) is not
/// taken for a clause or a column.
fn without_literals(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut quoted = false;
    for c in q.chars() {
        if c == '\'' {
            // '' inside a literal closes and reopens it: the same either way.
            quoted = !quoted;
            out.push(c);
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// Whether an UPDATE's SET list computes a value from the row's columns.
fn reads_the_row(bp: &Blueprint, lower: &str) -> bool {
    let Some(i) = lower.find(" set ") else { return false };
    let set = &lower[i + 5..];
    let end = [" where ", " from ", " returning "]
        .iter()
        .filter_map(|k| set.find(k))
        .min()
        .unwrap_or(set.len());
    let mut depth = 0;
    let mut parts = vec![String::new()];
    for c in set[..end].chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("one part").push(c);
    }
    let columns: Vec<String> = bp.columns.iter().map(|c| c.name.as_str().to_lowercase()).collect();
    parts.iter().any(|a| {
        a.split_once('=')
            .is_some_and(|(_, value)| columns.iter().any(|c| mentions(value, c)))
    })
}

/// The statements pg_stat_statements has seen on the table that the move
/// method's view does not serve as the table did: refused, naming them,
/// unless the plan accepts their code, then warnings. Other methods serve
/// every statement.
pub async fn view_hazards(client: &Client, bp: &Blueprint) -> Result<Vec<Finding>> {
    if bp.method != Method::Move && bp.split.is_none() {
        return Ok(Vec::new());
    }
    let Ok(seen) = seen(client, bp).await? else {
        return Ok(Vec::new());
    };
    let mut refused = Vec::new();
    let mut out = Vec::new();
    for s in &seen {
        let Some((code, why)) = hazard_in(bp, &s.query) else {
            continue;
        };
        let line = format!("{} ({} calls): {why}", short(&s.query), s.calls);
        if bp.settings.accepted.iter().any(|a| a == code) {
            out.push(Finding {
                level: Level::Warning,
                code,
                message: format!("accepted by the plan: {line}"),
            });
        } else {
            refused.push(format!("{line} [{code}]"));
        }
    }
    if !refused.is_empty() {
        return Err(crate::error::Refusal::new(format!(
            "the application runs statements on {} that the move method's view does not serve as the table did:\n  {}\nuse method sync, which serves every statement; or, knowing what fails or races until the swap, name the codes in brackets under `accept:` in the plan",
            bp.table,
            refused.join("\n  ")
        ))
        .into());
    }
    Ok(out)
}

/// A statement on one line, cut to a readable length.
pub fn short(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect()
}

/// Findings about the application's statements.
pub async fn statements(client: &Client, bp: &Blueprint) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let seen = match seen(client, bp).await? {
        Ok(s) => s,
        Err(why) => {
            out.push(Finding {
                level: Level::Note,
                code: codes::STATEMENTS_NOT_CHECKED,
                message: format!("{why}: the application's statements were not checked (CREATE EXTENSION pg_stat_statements, with it in shared_preload_libraries, lets plan check them)"),
            });
            return Ok(out);
        }
    };
    let key = bp.key.column.as_str().to_lowercase();
    for s in seen {
        let lower = s.query.to_lowercase();
        let calls = s.calls;
        let short = short(&s.query);
        let mut say = |level: Level, code: &'static str, what: &str| {
            out.push(Finding {
                level,
                code,
                message: format!("{what} ({calls} calls): {short}"),
            })
        };
        if lower.starts_with("copy") && lower.contains(" to ") {
            say(
                Level::Note,
                codes::COPY_TO_READS_ALL,
                "COPY ... TO reads every partition after the swap",
            );
        }
        let conflict_cols = lower
            .split("on conflict (")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or("");
        if lower.contains("on conflict (") && !mentions(conflict_cols, &key) {
            say(Level::Warning, codes::ON_CONFLICT_WITHOUT_KEY, &format!("ON CONFLICT names columns without {key}: after the swap no unique key matches them; name the constraint (ON CONFLICT ON CONSTRAINT) instead"));
        }
        let reads = lower.starts_with("select") || lower.starts_with("update") || lower.starts_with("delete");
        if reads && lower.contains(" where ") && !lower.split(" where ").skip(1).any(|w| mentions(w, &key)) {
            say(
                Level::Note,
                codes::NO_PRUNING,
                &format!(
                    "this statement does not filter on {key}: after the swap it reads every partition (no pruning)"
                ),
            );
        }
    }
    Ok(out)
}

/// Whether `word` appears in `text` as a whole identifier.
fn mentions(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '"'))
        .any(|t| t.trim_matches('"') == word)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Estimated size of each partition from a sample, with the MeshHook
/// guidance: 10-100 GB a partition is best, over 200 GB is too large.
pub async fn partition_sizes(client: &Client, bp: &Blueprint, table_bytes: i64) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    if bp.key.list || bp.key.hash.is_some() || bp.partitions.is_empty() || table_bytes <= 0 {
        return Ok(out);
    }
    let mut bounds: Vec<String> = bp.partitions.iter().map(|p| p.from.clone()).collect();
    bounds.push(bp.partitions.last().expect("partitions").to.clone());
    let array = format!(
        "ARRAY[{}]::{}[]",
        bounds
            .iter()
            .map(|b| crate::sql::quote_literal(b))
            .collect::<Vec<_>>()
            .join(", "),
        bp.key.type_name
    );
    // About a thousand pages (all of a small table, 1% of a large one).
    let pages = (table_bytes / bp.settings.block_size.max(1)).max(1) as f64;
    let percent = (100.0 * 1000.0 / pages).clamp(1.0, 100.0);
    let sql = format!(
        "SELECT width_bucket({k}, {array}), count(*) FROM ONLY {t} TABLESAMPLE SYSTEM ({percent}) WHERE {k} IS NOT NULL GROUP BY 1",
        k = bp.key.column,
        t = bp.table
    );
    let rows = client.query(&sql, &[]).await?;
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    if total == 0 {
        return Ok(out);
    }
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    let mut largest = 0.0f64;
    let mut sizes = Vec::new();
    for r in &rows {
        let bucket: i32 = r.get(0);
        let share = r.get::<_, i64>(1) as f64 / total as f64;
        let bytes = share * table_bytes as f64;
        largest = largest.max(bytes);
        if bucket >= 1 && (bucket as usize) <= bp.partitions.len() {
            sizes.push((bp.partitions[bucket as usize - 1].name.as_str().to_string(), bytes));
        }
    }
    sizes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(n, b)| format!("{n} ~{}", crate::report::bytes(*b as i64)))
        .collect();
    out.push(Finding {
        level: Level::Note,
        code: codes::PARTITION_SIZES,
        message: format!(
            "estimated partition sizes from a 1% sample, largest first: {}",
            top.join(", ")
        ),
    });
    if largest > 200.0 * GB {
        out.push(Finding {
            level: Level::Warning,
            code: codes::PARTITION_TOO_LARGE,
            message: format!(
                "a partition would hold about {}: over 200 GB, choose a shorter interval or step",
                crate::report::bytes(largest as i64)
            ),
        });
    }
    Ok(out)
}

/// The rows per second of the latest batches in this database, if any ran.
pub async fn measured_rate(client: &Client) -> Result<Option<f64>> {
    if crate::control::schema_version(client).await?.is_none() {
        return Ok(None);
    }
    Ok(client
        .query_one(
            "SELECT sum(rows)::float8 / nullif(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 \
             FROM (SELECT rows, started_at, finished_at FROM repartition.batches WHERE direction = 'forward' \
                   ORDER BY finished_at DESC LIMIT 200) b",
            &[],
        )
        .await?
        .get(0))
}

/// What `plan` shows: the plan resolved against the catalog, with every
/// pre-flight finding.
pub async fn resolve_with_findings(
    client: &Client,
    plan: &crate::plan_file::PlanFile,
) -> Result<crate::blueprint::Resolved> {
    let mut resolved = crate::blueprint::resolve(client, plan).await?;
    let bp = &resolved.blueprint;
    let mut extra = view_hazards(client, bp).await?;
    extra.extend(statements(client, bp).await?);
    extra.extend(partition_sizes(client, bp, resolved.info.bytes).await?);
    extra.extend(estimates(client, bp, resolved.info.estimated_rows).await?);
    resolved.findings.extend(extra);
    Ok(resolved)
}

/// Disk space the method needs, and the duration at the rate measured by
/// earlier runs in this database, when there were any.
pub async fn estimates(client: &Client, bp: &Blueprint, rows: f64) -> Result<Vec<Finding>> {
    let total: i64 = client
        .query_one(
            "SELECT pg_total_relation_size(to_regclass($1))",
            &[&bp.table.to_string()],
        )
        .await?
        .get(0);
    let disk = match bp.method {
        Method::Move => format!("about {} more while rows move (the partitioned table and its indexes; the original only shrinks after its vacuum)", crate::report::bytes(total)),
        Method::Sync => format!("about {} more until `migrate cleanup` (a full copy with indexes)", crate::report::bytes(total)),
        Method::Attach => "the unique indexes with the key appended; no copy of the rows".into(),
    };
    let mut out = vec![Finding {
        level: Level::Note,
        code: codes::DISK,
        message: format!("disk: {disk}"),
    }];
    out.extend(wal(client, bp, total).await?);
    let rate = measured_rate(client).await?;
    match (rate, bp.method) {
        (_, Method::Attach) => {}
        (Some(r), _) if r > 0.0 && rows > 0.0 => out.push(Finding {
            level: Level::Note,
            code: codes::DURATION,
            message: format!(
                "duration: about {} at {:.0} rows/s, the rate of the latest batches in this database",
                crate::report::hms(rows / r),
                r
            ),
        }),
        _ => out.push(Finding {
            level: Level::Note,
            code: codes::DURATION,
            message: "duration: no batch has run in this database yet to measure a rate; `status` shows rate and ETA once rows move".into(),
        }),
    }
    Ok(out)
}

/// WAL a migration writes, per byte of the table with its indexes, as
/// measured by `scripts/bench/wal-per-byte.sh` (docs/benchmarks.md): the
/// move writes each row into the partitioned table and its indexes and
/// deletes it from the original, the sync method copies it and builds the
/// indexes after.
const WAL_PER_BYTE_MOVE: f64 = 2.1;
const WAL_PER_BYTE_SYNC: f64 = 1.9;

/// What the migration sends to each standby and each replication slot
/// keeps until it is read; a slot whose `max_slot_wal_keep_size` would be
/// passed is warned of, before it is invalidated mid-run.
async fn wal(client: &Client, bp: &Blueprint, total: i64) -> Result<Vec<Finding>> {
    let estimate = match bp.method {
        Method::Move => (total as f64 * WAL_PER_BYTE_MOVE) as i64,
        Method::Sync => (total as f64 * WAL_PER_BYTE_SYNC) as i64,
        // The unique indexes built again with the key.
        Method::Attach => client
            .query_one(
                "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0)::bigint FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique",
                &[&bp.table.to_string()],
            )
            .await?
            .get(0),
    };
    let standbys: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE backend_xmin IS NOT NULL OR state = 'streaming'",
            &[],
        )
        .await?
        .get(0);
    let slots = client
        .query(
            "SELECT slot_name::text, slot_type, safe_wal_size FROM pg_replication_slots WHERE NOT temporary ORDER BY 1",
            &[],
        )
        .await?;
    let mut out = vec![Finding {
        level: Level::Note,
        code: codes::WAL,
        message: format!(
            "WAL: about {}, which {} and {}",
            crate::report::bytes(estimate),
            match standbys {
                0 => "no standby streams now".to_string(),
                1 => "the one standby streaming now replays".to_string(),
                n => format!("each of the {n} standbys streaming now replays"),
            },
            match slots.len() {
                0 => "no replication slot retains".to_string(),
                _ => format!(
                    "each replication slot ({}) retains until its consumer reads it",
                    slots
                        .iter()
                        .map(|s| s.get::<_, String>(0))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        ),
    }];
    for s in &slots {
        let name: String = s.get(0);
        let safe: Option<i64> = s.get(2);
        if let Some(safe) = safe.filter(|safe| *safe < estimate) {
            out.push(Finding {
                level: Level::Warning,
                code: codes::SLOT_WAL_LIMIT,
                message: format!(
                    "the {} replication slot {name} can retain only {} more WAL before max_slot_wal_keep_size invalidates it, and the migration writes about {}: its consumer must keep up (throttle.max_slot_wal_mb makes the run wait for it), or max_slot_wal_keep_size must rise",
                    s.get::<_, String>(1),
                    crate::report::bytes(safe.max(0)),
                    crate::report::bytes(estimate)
                ),
            });
        }
    }
    Ok(out)
}

/// The application's statements on the table while the routing view stands
/// (move, split): from the growth of pg_stat_statements' counts since the
/// first look and from samples of pg_stat_activity. A statement the view
/// does not serve as the table did is told once.
#[derive(Default)]
pub struct Watch {
    calls: std::collections::HashMap<i64, i64>,
    started: bool,
    told: std::collections::HashSet<String>,
}

/// One statement the watch found: its code, and what to tell.
pub struct Spotted {
    pub code: &'static str,
    pub line: String,
}

impl Watch {
    /// What arrived since the last look.
    pub async fn look(&mut self, client: &Client, bp: &Blueprint) -> Result<Vec<Spotted>> {
        let mut out = Vec::new();
        if let Ok(seen) = seen(client, bp).await? {
            for s in seen {
                let before = self.calls.insert(s.queryid, s.calls).unwrap_or(0);
                if !self.started || s.calls <= before {
                    continue;
                }
                if let Some((code, why)) = hazard_in(bp, &s.query) {
                    self.tell(
                        &mut out,
                        code,
                        format!(
                            "{} (ran {} times since the last look): {why}",
                            short(&s.query),
                            s.calls - before
                        ),
                        fingerprint(&s.query),
                    );
                }
            }
        }
        self.started = true;
        let running = client
            .query(
                "SELECT query FROM pg_catalog.pg_stat_activity \
                 WHERE datname = pg_catalog.current_database() AND pid <> pg_catalog.pg_backend_pid() \
                 AND backend_type = 'client backend' AND state <> 'idle' AND query ~* $1 AND query !~* 'repartition\\.'",
                &[&format!(r#"\m"?{}"?\M"#, regex_escape(bp.table.name.as_str()))],
            )
            .await?;
        for r in running {
            let q: String = r.get(0);
            if let Some((code, why)) = hazard_in(bp, &q) {
                self.tell(
                    &mut out,
                    code,
                    format!("{} (seen running): {why}", short(&q)),
                    fingerprint(&q),
                );
            }
        }
        Ok(out)
    }

    fn tell(&mut self, out: &mut Vec<Spotted>, code: &'static str, line: String, key: String) {
        if self.told.insert(key) {
            out.push(Spotted {
                code,
                line: format!("{line} [{code}]"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fingerprint, hazard, hazard_in};
    use crate::blueprint::derive::{derive, fixtures::*};
    use crate::findings::codes::*;

    #[test]
    fn the_statements_the_view_does_not_serve_are_told_apart() {
        let p = plan("public.events", "move", MONTHLY);
        let bp = derive(&p, &facts(table("public", "events"))).unwrap().blueprint;
        let code = |q: &str| hazard(&bp, q).map(|(c, _)| c);
        assert_eq!(
            code("SELECT id FROM events WHERE id = $1 FOR UPDATE SKIP LOCKED"),
            Some(VIEW_LOCKING_READS)
        );
        assert_eq!(code("select * from events for  share"), Some(VIEW_LOCKING_READS));
        assert_eq!(code("UPDATE events SET payload = $2, n = $3 WHERE id = $1"), None);
        assert_eq!(
            code("UPDATE events SET \"Kind\" = \"Kind\" + $1 WHERE id = $2"),
            Some(VIEW_READ_MODIFY_WRITE)
        );
        assert_eq!(
            code("UPDATE events SET payload = payload || $1 WHERE id = $2"),
            Some(VIEW_READ_MODIFY_WRITE)
        );
        assert_eq!(
            code("UPDATE events SET payload = coalesce(payload, $1), ts = $2 WHERE id = $3"),
            Some(VIEW_READ_MODIFY_WRITE)
        );
        assert_eq!(code("UPDATE events SET ts = now() RETURNING n"), None);
        assert_eq!(
            code("INSERT INTO events (id) VALUES ($1) ON CONFLICT DO NOTHING"),
            Some(VIEW_ON_CONFLICT)
        );
        assert_eq!(code("COPY events TO STDOUT"), Some(VIEW_COPY_TO));
        assert_eq!(code("COPY (SELECT * FROM events) TO STDOUT"), None);
        assert_eq!(
            code("MERGE INTO events e USING x ON e.id = x.id WHEN MATCHED THEN DELETE"),
            Some(VIEW_MERGE)
        );
        assert_eq!(code("TRUNCATE events"), Some(VIEW_TRUNCATE));
        assert_eq!(code("SELECT count(*) FROM events WHERE ts > $1"), None);
        assert_eq!(code("UPDATE events SET kind = 'payload for update' WHERE id = 5"), None);
        assert_eq!(
            code("UPDATE events SET payload = '{\"touched\": true}' WHERE id = 5"),
            None
        );
        // A string of statements, as pg_stat_activity shows a simple query:
        // only those naming the table itself are the view's.
        let within = |q: &str| hazard_in(&bp, q).map(|(c, _)| c);
        assert_eq!(
            within("LOCK TABLE public.events IN ACCESS SHARE MODE; SELECT id FROM ONLY public.events__orig LIMIT 5 FOR UPDATE"),
            None
        );
        assert_eq!(
            within("SELECT 1; SELECT id FROM public.events WHERE note = 'a;b' FOR UPDATE"),
            Some(VIEW_LOCKING_READS)
        );
        assert_eq!(within("SELECT * FROM other_events FOR UPDATE"), None);
        // Told once, whether running or counted by pg_stat_statements.
        assert_eq!(
            fingerprint("UPDATE events  SET n = n + 1, v = 'x' WHERE id = 42"),
            fingerprint("update events SET n = n + $2, v = $3 WHERE id = $1")
        );
        assert_ne!(fingerprint("SELECT a1 FROM t2"), fingerprint("SELECT a2 FROM t2"));
    }
}
