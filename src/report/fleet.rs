//! What the fleet commands print: a table with a line per target and a
//! summary line, or a versioned JSON document.

use super::{bytes, hms, rows_remaining, thousands, JSON_VERSION};
use crate::fleet::{Ended, FleetState, PlanVerdict, Planned, Seen, Verdict};
use serde_json::{json, Value};
use std::fmt::Write;

/// Columns padded to their widest cell; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        let _ = writeln!(o, "{}", l.trim_end());
    };
    line(&mut o, header.to_vec());
    for r in rows {
        line(&mut o, r.iter().map(String::as_str).collect());
    }
    o
}

/// `12 targets: 10 done, 2 refused`, counts in the order given.
fn summary<'a>(total: usize, counts: impl Iterator<Item = (&'a str, usize)>) -> String {
    let parts: Vec<String> = counts
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| format!("{n} {w}"))
        .collect();
    format!(
        "{total} target{}: {}\n",
        if total == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

const VERDICTS: [Verdict; 6] = [
    Verdict::Done,
    Verdict::Attention,
    Verdict::Refused,
    Verdict::Failed,
    Verdict::Interrupted,
    Verdict::NotStarted,
];

/// How a rolled-out command ended on each target.
pub fn rollout_text(command: &str, ended: &[Ended]) -> String {
    let rows: Vec<Vec<String>> = ended
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.verdict.as_str().to_string(),
                if e.attempts == 0 {
                    "-".into()
                } else {
                    e.attempts.to_string()
                },
                if e.attempts == 0 { "-".into() } else { hms(e.seconds) },
                e.message.clone(),
            ]
        })
        .collect();
    let mut o = format!("fleet {command}\n");
    o.push_str(&table(&["TARGET", "RESULT", "RUNS", "TIME", "MESSAGE"], &rows));
    o.push_str(&summary(
        ended.len(),
        VERDICTS
            .iter()
            .map(|v| (v.as_str(), ended.iter().filter(|e| e.verdict == *v).count())),
    ));
    o
}

pub fn rollout_json(command: &str, ended: &[Ended], exit_code: i32) -> Value {
    json!({
        "version": JSON_VERSION,
        "command": command,
        "exit_code": exit_code,
        "targets": ended.iter().map(|e| json!({
            "name": e.name,
            "result": e.verdict,
            "runs": e.attempts,
            "seconds": (e.seconds * 10.0).round() / 10.0,
            "message": e.message,
        })).collect::<Vec<_>>(),
        "summary": VERDICTS.iter().map(|v| (v.as_str().replace(' ', "_"), Value::from(ended.iter().filter(|e| e.verdict == *v).count()))).collect::<serde_json::Map<_, _>>(),
    })
}

/// The rate a target's duration is estimated at: its own database's, else
/// the median of those measured on the other targets (marked).
fn rate_for(p: &Planned, all: &[Planned]) -> Option<(f64, bool)> {
    if let Some(r) = p.measured_rate.filter(|r| *r > 0.0) {
        return Some((r, false));
    }
    let mut rates: Vec<f64> = all
        .iter()
        .filter_map(|q| q.measured_rate)
        .filter(|r| *r > 0.0)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).map(|r| (*r, true))
}

fn verdict_word(v: &PlanVerdict) -> &'static str {
    match v {
        PlanVerdict::Ready => "ready",
        PlanVerdict::Warnings { failing, .. } if failing.is_empty() => "accepted",
        PlanVerdict::Warnings { .. } => "warnings",
        PlanVerdict::Refused(_) => "refused",
        PlanVerdict::Unreachable(_) => "unreachable",
    }
}

fn verdict_note(v: &PlanVerdict) -> String {
    match v {
        PlanVerdict::Ready => String::new(),
        PlanVerdict::Warnings { failing, accepted } => {
            let mut parts = Vec::new();
            if !failing.is_empty() {
                parts.push(failing.join(", "));
            }
            if !accepted.is_empty() {
                parts.push(format!("accepted: {}", accepted.join(", ")));
            }
            parts.join("; ")
        }
        PlanVerdict::Refused(s) | PlanVerdict::Unreachable(s) => s.clone(),
    }
}

/// `fleet plan`: a line per target, then the verdicts counted.
pub fn plan_text(table_name: &str, planned: &[Planned]) -> String {
    let mut borrowed = false;
    let rows: Vec<Vec<String>> = planned
        .iter()
        .map(|p| {
            let duration = match (p.estimated_rows, rate_for(p, planned)) {
                (Some(rows), Some((rate, other))) => {
                    borrowed |= other;
                    format!("{}{}", hms(rows as f64 / rate), if other { " *" } else { "" })
                }
                (Some(_), None) => "unknown".into(),
                _ => "-".into(),
            };
            vec![
                p.name.clone(),
                verdict_word(&p.verdict).to_string(),
                p.bytes.map(bytes).unwrap_or_else(|| "-".into()),
                p.estimated_rows.map(thousands).unwrap_or_else(|| "-".into()),
                duration,
                p.migration
                    .as_ref()
                    .map(|(state, phase)| format!("{state} {}", phase.as_str()))
                    .unwrap_or_else(|| "-".into()),
                one_line(&verdict_note(&p.verdict), 160),
            ]
        })
        .collect();
    let mut o = format!("fleet plan of {table_name}\n");
    o.push_str(&table(
        &[
            "TARGET",
            "VERDICT",
            "SIZE",
            "ROWS (EST.)",
            "DURATION (EST.)",
            "MIGRATION",
            "FINDINGS",
        ],
        &rows,
    ));
    if borrowed {
        o.push_str(
            "* no batch has run in that database yet: estimated at the median rate measured on the other targets\n",
        );
    }
    if planned.iter().all(|p| rate_for(p, planned).is_none()) {
        o.push_str("durations: no batch has run on any target yet to measure a rate; `fleet status` shows rates once rows move\n");
    }
    let words = ["ready", "accepted", "warnings", "refused", "unreachable"];
    o.push_str(&summary(
        planned.len(),
        words
            .iter()
            .map(|w| (*w, planned.iter().filter(|p| verdict_word(&p.verdict) == *w).count())),
    ));
    o
}

pub fn plan_json(table_name: &str, planned: &[Planned]) -> Value {
    json!({
        "version": JSON_VERSION,
        "table": table_name,
        "targets": planned.iter().map(|p| {
            let rate = rate_for(p, planned);
            let (failing, accepted) = match &p.verdict {
                PlanVerdict::Warnings { failing, accepted } => (failing.clone(), accepted.clone()),
                _ => (Vec::new(), Vec::new()),
            };
            json!({
                "name": p.name,
                "verdict": verdict_word(&p.verdict),
                "message": match &p.verdict {
                    PlanVerdict::Refused(s) | PlanVerdict::Unreachable(s) => Some(s.clone()),
                    _ => None,
                },
                "warnings": failing,
                "accepted_warnings": accepted,
                "bytes": p.bytes,
                "estimated_rows": p.estimated_rows,
                "estimated_seconds": p.estimated_rows.zip(rate).map(|(rows, (r, _))| (rows as f64 / r).round() as i64),
                "rate_measured_here": rate.map(|(_, other)| !other),
                "migration": p.migration.as_ref().map(|(state, phase)| json!({"state": state, "phase": phase.as_str()})),
            })
        }).collect::<Vec<_>>(),
    })
}

fn throttle_of(s: &Seen) -> String {
    let Some((m, _)) = &s.migration else {
        return "-".into();
    };
    if m.state != "active" && m.state != "aborting" {
        return "-".into();
    }
    if m.paused {
        return match &m.paused_reason {
            Some(r) => format!("paused: {r}"),
            None => "paused".into(),
        };
    }
    if m.waiting_for_swap {
        return "waiting for swap".into();
    }
    if let Some(t) = &m.throttled {
        return t.clone();
    }
    m.latency_doing.clone().unwrap_or_else(|| "-".into())
}

/// `fleet status`: a line per target, then the states counted.
pub fn status_text(table_name: &str, seen: &[Seen]) -> String {
    let rows: Vec<Vec<String>> = seen
        .iter()
        .map(|s| {
            let (phase, moved, rate, eta) = match &s.migration {
                Some((m, live)) => {
                    let (_, eta) = rows_remaining(m, live);
                    let running = matches!(s.state, FleetState::Running | FleetState::Waiting);
                    (
                        format!("{} {}", m.method, m.phase.as_str()),
                        thousands(m.rows_moved),
                        live.rate
                            .filter(|_| running)
                            .map(|r| format!("{r:.0}/s"))
                            .unwrap_or_else(|| "-".into()),
                        eta.filter(|_| running).map(hms).unwrap_or_else(|| "-".into()),
                    )
                }
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let error = match (&s.error, &s.migration) {
                (Some(e), _) => e.clone(),
                (None, Some((m, _))) if s.state != FleetState::Done => m.last_error.clone().unwrap_or_default(),
                _ => String::new(),
            };
            vec![
                s.name.clone(),
                s.state.as_str().to_string(),
                phase,
                moved,
                rate,
                eta,
                throttle_of(s),
                one_line(&error, 120),
            ]
        })
        .collect();
    let mut o = format!("fleet status of {table_name}\n");
    o.push_str(&table(
        &[
            "TARGET",
            "STATE",
            "PHASE",
            "ROWS MOVED",
            "RATE",
            "ETA",
            "THROTTLE",
            "LAST ERROR",
        ],
        &rows,
    ));
    o.push_str(&summary(
        seen.len(),
        FleetState::ALL
            .iter()
            .map(|st| (st.as_str(), seen.iter().filter(|s| s.state == *st).count())),
    ));
    o
}

pub fn status_json(table_name: &str, seen: &[Seen]) -> Value {
    json!({
        "version": JSON_VERSION,
        "table": table_name,
        "targets": seen.iter().map(|s| {
            let m = s.migration.as_ref().map(|(m, live)| {
                let (remaining, eta) = rows_remaining(m, live);
                json!({
                    "id": m.id,
                    "method": m.method,
                    "state": m.state,
                    "phase": m.phase.as_str(),
                    "rows_moved": m.rows_moved,
                    "rows_remaining": remaining,
                    "rate_rows_per_second": live.rate,
                    "eta_seconds": eta.map(|s| s.round() as i64),
                    "runner_attached": live.runner.is_some(),
                    "paused": m.paused,
                    "throttled": m.throttled,
                    "waiting_for_swap": m.waiting_for_swap,
                    "last_error": m.last_error,
                    "updated_at": m.updated_at,
                })
            });
            json!({
                "name": s.name,
                "state": s.state,
                "error": s.error,
                "migration": m,
            })
        }).collect::<Vec<_>>(),
        "summary": FleetState::ALL.iter().map(|st| (st.as_str().replace(' ', "_"), Value::from(seen.iter().filter(|s| s.state == *st).count()))).collect::<serde_json::Map<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_summary_counts() {
        let ended = vec![
            Ended {
                name: "eu-1".into(),
                verdict: Verdict::Done,
                message: "migration finished: the table is partitioned".into(),
                attempts: 1,
                seconds: 12.0,
            },
            Ended {
                name: "us-east-12".into(),
                verdict: Verdict::NotStarted,
                message: "not started: eu-1 ended failed first".into(),
                attempts: 0,
                seconds: 0.0,
            },
        ];
        insta::assert_snapshot!(rollout_text("apply", &ended), @r"
        fleet apply
        TARGET      RESULT       RUNS  TIME      MESSAGE
        eu-1        done         1     00:00:12  migration finished: the table is partitioned
        us-east-12  not started  -     -         not started: eu-1 ended failed first
        2 targets: 1 done, 1 not started
        ");
        let doc = rollout_json("apply", &ended, 6);
        assert_eq!(doc["summary"]["not_started"], 1);
    }
}
