//! What `plan` and `status` show. Rendering only: the data come from the
//! blueprint and the control table.

use crate::blueprint::{Blueprint, Level, Resolved};
use crate::control::{MigrationRow, Phase};
use crate::method::{self, Step};
use crate::plan_file::Method;
use std::fmt::Write;

mod inspect;
pub use inspect::{check_json, check_text, partitions_text};
pub mod fleet;
mod maintain;
pub mod metrics;
pub use maintain::{maintain_json, maintain_text};

/// The JSON shapes' version; bumped on any incompatible change.
pub const JSON_VERSION: u32 = 1;

/// Application statements a `UNION ALL` view cannot serve as a table would.
pub const VIEW_LIMITS: &[&str] = &[
    "INSERT ... ON CONFLICT (PostgreSQL refuses it on a view with rules or INSTEAD OF triggers)",
    "SELECT ... FOR UPDATE / FOR SHARE / SKIP LOCKED: they fail (\"FOR UPDATE is not allowed with GROUP BY clause\"); PostgreSQL would run them on a plain UNION ALL view without locking a row, so the view is built to refuse them rather than let two sessions take the same row (a job queue hand one job to two workers); use the sync method for them",
    "TRUNCATE (refused on a view), COPY ... TO of the table itself (COPY (SELECT ...) TO works), and MERGE (refused on a view before PostgreSQL 17, a read-modify-write from 17 on)",
    "concurrent read-modify-write UPDATEs of the same row (SET n = n + 1, or a claim guarded by WHERE status = ...): the view's routing applies the new value the statement computed, so one of two racing increments can be lost; updates of different columns of a row are merged correctly",
    "UPDATE or DELETE ... WHERE CURRENT OF a cursor",
];

/// The exit code and the closing sentence of a run that ended as
/// `outcome` says; `cli` is the command line that continues it (`migrate`,
/// or `migrate fleet` with its plan and targets).
pub fn outcome(method: Method, outcome: &crate::exec::Outcome, cli: &str) -> (i32, String) {
    use crate::error::exit;
    use crate::exec::Outcome;
    match outcome {
        Outcome::Reached(Phase::Finished) => (exit::OK, "migration finished: the table is partitioned".into()),
        Outcome::Reached(Phase::Swapped) if method == Method::Sync => (exit::OK, format!("swapped: the partitioned table carries the name; the retired original is kept in step until `{cli} cleanup` (or `{cli} unswap` to go back)")),
        Outcome::Reached(Phase::Verified) if method == Method::Sync => (exit::OK, format!("the original table carries the name again and is mirrored into the partitioned copy; `{cli} swap` swaps again, `{cli} abort` ends the migration")),
        Outcome::Reached(p) => (
            exit::OK,
            format!(
                "stopped after phase {}, as asked; continue with `{cli} resume` or `{cli} swap`",
                p.as_str()
            ),
        ),
        Outcome::Stopped(p) => (
            exit::INTERRUPTED,
            format!("interrupted during the phase after {}; every committed batch is recorded: continue with `{cli} resume`", p.as_str()),
        ),
        Outcome::SwapRequested => (
            exit::OK,
            format!("the waiting runner was asked to swap; `{cli} status` shows when it has"),
        ),
        Outcome::Aborted => (exit::OK, "migration aborted: the original table is back under its name".into()),
    }
}

/// One step as `plan` prints it: its parts, each with what is sent.
fn step_text(o: &mut String, bp: &Blueprint, step: &Step) {
    for p in &step.parts {
        let _ = writeln!(o, "-- [{}] {}: {}", p.key, p.when, p.how.describe());
        let rendered = p.rendered(&bp.settings, None);
        if rendered.is_empty() {
            let _ = writeln!(o, "-- nothing: the plan keeps the emptied original {}", bp.old);
        }
        for st in &rendered {
            let _ = writeln!(o, "{st}");
        }
    }
}

/// Every step `plan` prints, with what each part sends, then what the
/// operator may run besides.
pub fn steps_text(bp: &Blueprint) -> String {
    let mut o = String::new();
    let all = method::steps(bp);
    for (i, step) in all.iter().enumerate() {
        let _ = writeln!(
            o,
            "== Phase {} of {}: {} ({}) ==",
            i + 1,
            all.len(),
            step.name,
            step.summary
        );
        step_text(&mut o, bp, step);
        let _ = writeln!(o);
    }
    for extra in method::extras(bp) {
        let _ = writeln!(o, "== If you run `migrate {}`: {} ==", extra.command, extra.summary);
        for step in &extra.steps {
            let _ = writeln!(o, "== {} ({}) ==", step.name, step.summary);
            step_text(&mut o, bp, step);
        }
        let _ = writeln!(o);
    }
    o
}

/// What the operator may run besides, for `plan --output json`: abort and
/// unswap, and after an attach by range its split and the split's abort.
fn extras_json(r: &Resolved) -> serde_json::Value {
    let extra = |bp: &Blueprint, e: &method::Extra, command: &str| {
        serde_json::json!({
            "command": command,
            "how": e.summary,
            "steps": e.steps.iter().map(|s| step_json(bp, s)).collect::<Vec<_>>(),
        })
    };
    let bp = &r.blueprint;
    let mut v: Vec<serde_json::Value> = method::extras(bp).iter().map(|e| extra(bp, e, e.command)).collect();
    if let Some(split) = &r.split {
        v.push(serde_json::json!({
            "command": "split",
            "how": "after the attach: the first partition is broken up online (as the table is now)",
            "steps": method::steps(split).iter().map(|s| step_json(split, s)).collect::<Vec<_>>(),
        }));
        for e in method::extras(split) {
            v.push(extra(split, &e, &format!("{} (split)", e.command)));
        }
    }
    serde_json::Value::Array(v)
}

fn step_json(bp: &Blueprint, step: &Step) -> serde_json::Value {
    serde_json::json!({
        "name": step.name,
        "from": step.from,
        "to": step.to,
        "how": step.summary,
        "statements": step.parts.iter().flat_map(|p| p.rendered(&bp.settings, None)).collect::<Vec<_>>(),
        "parts": step.parts.iter().map(|p| serde_json::json!({
            "key": p.key,
            "how": p.how,
            "when": p.when,
            "statements": p.rendered(&bp.settings, None),
        })).collect::<Vec<_>>(),
    })
}

/// What the application can and cannot do, method by method.
pub fn application_notes(bp: &Blueprint) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    match bp.method {
        Method::Move => {
            v.push("From route to swap the table's name is a view. SELECT, INSERT (with RETURNING, and COPY), UPDATE and DELETE (with RETURNING and correct row counts) keep working, prepared statements included. Not served by the view:".into());
            v.extend(VIEW_LIMITS.iter().map(|l| format!("  - {l}")));
        }
        Method::Sync => {
            v.push("Until the swap the application uses the original table itself: every statement works, INSERT ... ON CONFLICT, SELECT ... FOR UPDATE, COPY and TRUNCATE included.".into());
            v.push("Every write to the original also writes the partitioned copy in the same transaction (a row trigger): writes cost about twice as much until the swap.".into());
            v.push("After the swap every write is mirrored back into the retired original until `migrate cleanup`, so that `migrate unswap` loses nothing.".into());
        }
        Method::Attach => {
            let a = method::attach::sql::def(bp);
            v.push("No row moves and the application uses its table throughout: every statement works.".into());
            if bp.key.list {
                v.push(format!(
                    "From the constrain phase until the swap the original refuses rows with {} other than {}; afterwards rows go to the partition of their value.",
                    bp.key.column, a.cutoff
                ));
            } else {
                v.push(format!(
                    "From the constrain phase until the swap the original refuses rows with {} at or after {}.",
                    bp.key.column, a.cutoff
                ));
            }
            v.push(
                "All existing rows stay in one large first partition; `split` work to break it up is separate.".into(),
            );
        }
    }
    if bp.key.list && bp.default_partition.is_none() && bp.method != Method::Attach {
        if let Some(last) = bp.partitions.last() {
            v.push(format!(
                "Rows whose {} has no partition are refused by the partitioned table from the start (the view and the mirror write into it): partitions exist for the values the table holds and up to {}; `migrate maintain` keeps creating them ahead.",
                bp.key.column, last.from
            ));
        }
    }
    if !bp.key.list && bp.key.hash.is_none() && bp.default_partition.is_none() {
        if let Some(last) = bp.partitions.last() {
            v.push(format!(
                "Rows whose {} has no partition are refused by the partitioned table: from the start for move and sync (the view and the mirror write into it), after the swap for attach. The partitions reach up to {}; `migrate maintain` keeps creating them ahead.",
                bp.key.column, last.to
            ));
        }
    }
    v.push(format!(
        "After the swap the table is partitioned: INSERT ... ON CONFLICT must name a unique key that includes {} (ON CONFLICT ON CONSTRAINT <name> keeps working, names are kept); RETURNING xmax is refused on partitioned tables; queries without {} in WHERE read every partition.",
        bp.key.column, bp.key.column
    ));
    v
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn bytes(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// The `plan` report.
pub fn plan(r: &Resolved, where_: &str) -> String {
    let bp = &r.blueprint;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Plan: repartition {} by {} on {} ({}) with the {} method",
        bp.table,
        if bp.key.hash.is_some() {
            "hash"
        } else if bp.key.list {
            "list"
        } else {
            "range"
        },
        bp.key.column,
        bp.key.type_name,
        bp.method.as_str()
    );
    let _ = writeln!(o, "Target: {where_}, PostgreSQL {}", r.server.version_num);
    let rows = if r.info.estimated_rows < 0.0 {
        "an unknown number of rows (never analyzed)".to_string()
    } else {
        format!("about {} rows", thousands(r.info.estimated_rows as i64))
    };
    let wal = match bp.method {
        Method::Move => format!("the move writes roughly {} of WAL (about 3.4 times the table)", bytes((r.info.bytes as f64 * 3.4) as i64)),
        Method::Sync => "the backfill writes the table and its indexes again, and the mirror doubles every write's WAL until cleanup".into(),
        Method::Attach => "no row is written; the unique index builds write their own size".into(),
    };
    let _ = writeln!(o, "Table: {rows}, {}; {wal}", bytes(r.info.bytes));
    let first = bp.partitions.first().map(|p| p.from.as_str()).unwrap_or("?");
    let last = bp.partitions.last().map(|p| p.to.as_str()).unwrap_or("?");
    let (first, last) = if bp.key.list {
        (
            bp.partitions.first().map(|p| p.from.as_str()).unwrap_or("?"),
            bp.partitions.last().map(|p| p.from.as_str()).unwrap_or("?"),
        )
    } else {
        (first, last)
    };
    if let Some(m) = bp.key.hash {
        let _ = writeln!(
            o,
            "Partitions: {m} by a hash of {} (remainders 0 to {})",
            bp.key.column,
            m - 1
        );
    } else if bp.partitions.is_empty() {
        // Attach by a text-like list: the original is the only partition.
        let _ = writeln!(
            o,
            "Partitions: none made ahead besides the original{}",
            match &bp.default_partition {
                Some(d) => format!(", default partition {d}"),
                None => ", no default partition".into(),
            }
        );
    } else {
        let _ = writeln!(
            o,
            "Partitions: {} from {first} to {last}{}{}",
            bp.partitions.len(),
            if bp.key.kind.is_time() {
                format!(", bounds computed in {}", bp.key.time_zone)
            } else {
                String::new()
            },
            match &bp.default_partition {
                Some(d) => format!(", default partition {d}"),
                None => ", no default partition".into(),
            }
        );
    }
    let _ = writeln!(
        o,
        "Batches: {}, pause {}ms{}{}; lock_timeout {}ms, statement_timeout {}ms, {} retries",
        match bp.settings.target_ms {
            Some(t) => format!(
                "from about {} rows, tuned toward {t}ms each (between a tenth and ten times that)",
                bp.settings.batch_rows
            ),
            None => format!("about {} rows each", bp.settings.batch_rows),
        },
        bp.settings.pause_ms,
        if bp.settings.gentle {
            format!(
                ", gentle: each batch commits synchronously and is followed by a rest of {}% of its time",
                crate::plan_file::GENTLE_REST_PERCENT
            )
        } else {
            String::new()
        },
        if bp.settings.workers > 1 {
            format!(
                "; the main pass on {} connections at once, each over its own range of pages (batch.workers)",
                bp.settings.workers
            )
        } else {
            String::new()
        },
        bp.settings.lock_timeout_ms,
        bp.settings.statement_timeout_ms,
        bp.settings.retries
    );
    let _ = writeln!(o);
    if !r.findings.is_empty() {
        let _ = writeln!(o, "Findings:");
        for f in &r.findings {
            let level = match f.level {
                Level::Warning => "warning",
                Level::Note => "note",
            };
            let accepted = if f.level == Level::Warning && !f.fails_strict(&bp.settings.accepted) {
                ", accepted"
            } else {
                ""
            };
            let _ = writeln!(o, "  {level} [{}{accepted}]: {}", f.code, f.message);
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "What the application can do:");
    for l in application_notes(bp) {
        let _ = writeln!(o, "  {l}");
    }
    let _ = writeln!(o);
    o.push_str(&steps_text(bp));
    if let Some(split) = &r.split {
        let _ = writeln!(
            o,
            "== If you run `migrate split` after the attach: the first partition is broken up online, with the move machinery (as the table is now; `split` plans again when it runs) =="
        );
        o.push_str(&steps_text(split));
    }
    let _ = writeln!(o, "Nothing was changed.");
    o
}

pub use crate::inspect::{Live, Runner};

/// Rows still to move, and the seconds they take at the recent rate while
/// rows move; none for a method that moves no rows (attach) or an abort.
pub fn rows_remaining(m: &MigrationRow, live: &Live) -> (Option<i64>, Option<f64>) {
    let moving = m.state == "active"
        && match m.blueprint.method {
            Method::Sync => m.phase == Phase::Prepared,
            Method::Attach => false,
            Method::Move => m.phase == Phase::Routed,
        };
    let rows = match (m.state.as_str(), m.blueprint.method, m.rows_total) {
        (_, Method::Attach, _) | ("aborting" | "aborted", _, _) => None,
        ("done", _, _) => Some(0),
        (_, _, Some(total)) if moving || m.phase < Phase::Routed => Some((total - m.rows_moved).max(0)),
        (_, _, Some(_)) => Some(0),
        (_, _, None) => None,
    };
    let eta = match (rows, live.rate) {
        (Some(r), Some(rate)) if moving && rate > 0.0 => Some(r as f64 / rate),
        _ => None,
    };
    (rows, eta)
}

/// `status --output json`: the latest migration, with its live figures,
/// and the partitions. The shape is in docs/json.md.
pub fn status_json(
    table: &str,
    latest: Option<(&MigrationRow, &Live)>,
    parts: &[crate::inspect::PartitionStat],
) -> serde_json::Value {
    serde_json::json!({
        "version": JSON_VERSION,
        "table": table,
        "migration": latest.map(|(m, live)| {
            let (rows_remaining, eta) = rows_remaining(m, live);
            serde_json::json!({
                "id": m.id,
                "method": m.method,
                "state": m.state,
                "phase": m.phase.as_str(),
                "doing": doing(m),
                "rows_moved": m.rows_moved,
                "rows_total": m.rows_total,
                "rows_remaining": rows_remaining,
                "pages_remaining": live.pages_left,
                "rate_rows_per_second": live.rate,
                "eta_seconds": eta.map(|s| s.round() as i64),
                "batches": m.batches,
                "batch_rows": m.batch_rows_chosen,
                "batch_size_source": batch_size_source(m),
                "created_at": m.created_at,
                "updated_at": m.updated_at,
                "finished_at": m.finished_at,
                "last_error": m.last_error,
                "paused": m.paused,
                "paused_reason": m.paused_reason,
                "paused_by": m.paused.then_some(m.paused_by.as_deref()).flatten(),
                "paused_at": m.paused.then_some(m.paused_at).flatten(),
                "throttled": m.throttled,
                "runner": live.runner.as_ref().map(|r| serde_json::json!({
                    "pid": r.pid,
                    "client": r.client,
                    "since": r.since,
                })),
                "waiting_for_swap": m.waiting_for_swap,
                "swap_requested": m.swap_requested,
                "last_lock": m.last_lock,
                "latency": m.blueprint.settings.throttle.latency.map(|b| serde_json::json!({
                    "budget": String::from(b),
                    "baseline_ms": m.latency_baseline_ms,
                    "application_ms": m.latency_app_ms,
                    "ceiling_ms": m.latency_baseline_ms.map(|ms| b.ceiling_ms(ms, m.latency_app_ms)),
                    "measured_ms": m.latency_ms,
                    "application_now_ms": m.latency_app_now_ms,
                    "doing": m.latency_doing,
                })),
                "operator_settings": {
                    "batch_rows": m.batch_rows_override,
                    "pause_ms": m.pause_ms_override,
                },
                "abort": (m.state == "aborting").then(|| serde_json::json!({
                    "step": m.abort_step,
                    "rows_moved_back": m.rows_moved_back,
                    "rate_rows_per_second": live.back_rate,
                })),
            })
        }),
        "partitions": parts,
    })
}

/// The latency budget in `status`: the budget, what the probe measures
/// against it, and what the run does about it.
fn latency_line(b: crate::plan_file::LatencyBudget, m: &MigrationRow) -> String {
    let budget = String::from(b);
    let app = m
        .latency_app_ms
        .map(|a| format!("; {}", crate::latency::application_phrase(a)))
        .unwrap_or_default();
    match (m.latency_baseline_ms, m.latency_ms) {
        (None, _) => format!("Latency budget: {budget}; the baseline is learned before the first step"),
        (Some(base), None) => format!(
            "Latency budget: {budget} (commits {base:.2} ms before the first step{app}; ceiling {:.2} ms)",
            b.ceiling_ms(base, m.latency_app_ms)
        ),
        (Some(base), Some(now)) => format!(
            "Latency budget: {budget} (baseline {base:.2} ms{app}; ceiling {:.2} ms): commits take {now:.2} ms now{}; {}",
            b.ceiling_ms(base, m.latency_app_ms),
            m.latency_app_now_ms
                .map(|a| format!(", {}", crate::latency::application_phrase(a)))
                .unwrap_or_default(),
            m.latency_doing.as_deref().unwrap_or("")
        ),
    }
}

/// Why the batch size is what it is.
pub fn batch_size_source(m: &MigrationRow) -> String {
    match (m.batch_rows_override, m.blueprint.settings.target_ms) {
        (Some(_), _) => "set by the operator".into(),
        (None, _) if m.blueprint.settings.throttle.latency.is_some() => "set by the latency budget".into(),
        (None, Some(t)) => format!("tuned toward batches of {t}ms"),
        (None, None) => "as the plan fixes it".into(),
    }
}

/// Where the migration stands, in words, and what comes next.
fn doing(m: &MigrationRow) -> &'static str {
    match (m.state.as_str(), m.phase) {
        ("done", _) => "done",
        ("aborted", _) => "aborted; the original table is back as it was",
        ("aborting", _) => "aborting",
        (_, Phase::Planned)
            if m.blueprint.method == crate::plan_file::Method::Attach || m.blueprint.key.made_not_null =>
        {
            "planned; next: constrain"
        }
        (_, Phase::Planned) => "planned; next: prepare",
        (_, Phase::Constrained) => "constrained; next: prepare the partitioned table",
        (_, Phase::Prepared) if m.blueprint.method == crate::plan_file::Method::Sync => {
            "prepared, mirroring writes; next: backfill"
        }
        (_, Phase::Prepared) if m.blueprint.method == crate::plan_file::Method::Attach => {
            "prepared; next: swap (attach)"
        }
        (_, Phase::Backfilled) => "backfilled, mirroring writes; next: verify",
        (_, Phase::Verified) => "verified, mirroring writes; waiting for the swap (`migrate swap`)",
        (_, Phase::Swapped) if m.blueprint.method == crate::plan_file::Method::Sync => {
            "swapped; the retired original is kept in step (`migrate unswap` to go back, `migrate cleanup` to drop it)"
        }
        (_, Phase::Prepared) => "prepared; next: route (the view goes live)",
        (_, Phase::Routed) => "routed; moving rows",
        (_, Phase::Moved) => "all rows moved; waiting for the swap (`migrate swap` or `migrate resume`)",
        (_, Phase::Swapped) => "swapped; next: drop the emptied original",
        (_, Phase::Finished) => "finished",
    }
}

/// The `Remaining:` line of a migration moving rows: pages, rows, rate
/// and ETA.
fn remaining(o: &mut String, m: &MigrationRow, live: &Live) {
    let (Some(pages), (Some(rows), eta)) = (live.pages_left, rows_remaining(m, live)) else {
        return;
    };
    if m.batches == 0 {
        return;
    }
    let _ = write!(
        o,
        "Remaining: {} pages, about {} rows",
        thousands(pages),
        thousands(rows)
    );
    match (live.rate, eta) {
        (Some(r), Some(secs)) => {
            let _ = writeln!(
                o,
                "; rate {} rows/s over recent batches; ETA {}",
                thousands(r as i64),
                hms(secs)
            );
        }
        _ => {
            let _ = writeln!(o);
        }
    }
}

pub fn status(m: &MigrationRow, live: &Live) -> String {
    let mut o = String::new();
    let doing = doing(m);
    let _ = writeln!(
        o,
        "Migration {} of {}: {} (phase {})",
        m.id,
        m.table_name,
        doing,
        m.phase.as_str()
    );
    match &live.runner {
        Some(r) => {
            let _ = writeln!(
                o,
                "Runner: attached (server process {}, from {}, since {})",
                r.pid,
                r.client,
                r.since.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        None if m.state == "active" && m.phase == Phase::Swapped && m.blueprint.method == Method::Sync => {}
        None if m.state == "active" || m.state == "aborting" => {
            let _ = writeln!(
                o,
                "Runner: none attached; continue with `migrate resume` (or `migrate abort`)"
            );
        }
        None => {}
    }
    let total = m.rows_total.unwrap_or(0);
    let pct = if total > 0 {
        format!(" ({:.1}%)", (m.rows_moved as f64 / total as f64 * 100.0).min(100.0))
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "Rows moved: {} of about {}{pct} in {} batches{}",
        thousands(m.rows_moved),
        thousands(total),
        thousands(m.batches),
        if m.sweeps > 0 {
            format!(", sweep {}", m.sweeps)
        } else {
            String::new()
        }
    );
    remaining(&mut o, m, live);
    if let Some(n) = m.batch_rows_chosen {
        if m.state == "active" && matches!(m.phase, Phase::Routed | Phase::Prepared) {
            let _ = writeln!(o, "Batch size: {} rows, {}", thousands(n), batch_size_source(m));
        }
    }
    if let Some(b) = m.blueprint.settings.throttle.latency {
        let _ = writeln!(o, "{}", latency_line(b, m));
    }
    match (&m.paused_reason, m.paused) {
        (Some(why), true) => {
            let _ = writeln!(
                o,
                "Paused by itself: {why}\n  `migrate continue` goes on, `migrate abort` goes back"
            );
        }
        (None, true) => {
            let who = m
                .paused_by
                .as_deref()
                .and_then(|b| b.strip_prefix("operator "))
                .map(|b| format!(" {b}"))
                .unwrap_or_default();
            let since = m
                .paused_at
                .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default();
            let _ = writeln!(o, "Paused by the operator{who}{since}: `migrate continue` resumes");
        }
        _ => {}
    }
    if m.waiting_for_swap {
        let _ = writeln!(
            o,
            "Ready: waiting for `migrate swap` (the plan postpones the swap){}",
            if m.swap_requested {
                "; the swap was requested"
            } else {
                ""
            }
        );
    }
    if let Some(why) = &m.throttled {
        let _ = writeln!(o, "Waiting by itself: {why}");
    }
    if m.batch_rows_override.is_some() || m.pause_ms_override.is_some() {
        let _ = writeln!(
            o,
            "Operator settings: batch size {}, pause {}",
            m.batch_rows_override
                .map(|n| format!("{n} rows"))
                .unwrap_or_else(|| "as planned".into()),
            m.pause_ms_override
                .map(|n| format!("{n}ms"))
                .unwrap_or_else(|| "as planned".into())
        );
    }
    if m.state == "aborting" {
        let _ = writeln!(
            o,
            "Abort: step {}, {} rows moved back{}",
            m.abort_step.as_deref().unwrap_or("starting"),
            thousands(m.rows_moved_back),
            live.back_rate
                .map(|r| format!(", {} rows/s", thousands(r as i64)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        o,
        "Started: {}; last update: {}",
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        m.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(f) = m.finished_at {
        let _ = writeln!(o, "Finished: {}", f.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    if let Some(l) = &m.last_lock {
        let _ = writeln!(
            o,
            "Last strong lock: {} held it {:.1} ms (its LOCK waited {:.1} ms) at {}",
            l.step,
            l.held_ms,
            l.wait_ms,
            l.at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if let Some(e) = &m.last_error {
        let _ = writeln!(o, "Last error: {e}");
    }
    o
}

pub fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The `plan` report as a versioned JSON document.
pub fn plan_json(r: &Resolved) -> serde_json::Value {
    let bp = &r.blueprint;
    serde_json::json!({
        "version": JSON_VERSION,
        "table": bp.table.to_string(),
        "method": bp.method.as_str(),
        "key": { "column": bp.key.column.as_str(), "type": bp.key.type_name, "list": bp.key.list, "time_zone": bp.key.time_zone },
        "server_version_num": r.server.version_num,
        "estimated_rows": r.info.estimated_rows.max(0.0) as i64,
        "bytes": r.info.bytes,
        "partitions": bp.partitions.iter().map(|p| serde_json::json!({"name": p.name.as_str(), "from": p.from, "to": p.to})).collect::<Vec<_>>(),
        "findings": r.findings.iter().map(|f| serde_json::json!({
            "level": f.level,
            "code": f.code,
            "message": f.message,
            "accepted": f.level == Level::Warning && !f.fails_strict(&bp.settings.accepted),
        })).collect::<Vec<_>>(),
        "application": application_notes(bp),
        "phases": method::steps(bp).iter().map(|s| step_json(bp, s)).collect::<Vec<_>>(),
        "extras": extras_json(r),
    })
}

#[cfg(test)]
mod snapshots;

#[cfg(test)]
mod tests {
    #[test]
    fn numbers() {
        assert_eq!(super::thousands(1234567), "1,234,567");
        assert_eq!(super::thousands(12), "12");
        assert_eq!(super::bytes(2048), "2.0 kB");
        assert_eq!(super::hms(3725.0), "01:02:05");
    }
}
