//! The Prometheus text exposition of a running migration: the figures of
//! `status --output json`, read from the control table at each scrape,
//! and the counters of this process's locks.

use super::rows_remaining;
use crate::control::{MigrationRow, Phase};
use crate::inspect::Live;
pub use crate::lock_counts::LockCounters;
use std::fmt::Write;

/// The latest committed batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LastBatch {
    pub rows: i64,
    pub seconds: f64,
}

/// What one scrape shows.
pub struct Scrape<'a> {
    pub table: &'a str,
    pub migration: Option<(&'a MigrationRow, &'a Live)>,
    pub last_batch: Option<LastBatch>,
    pub locks: LockCounters,
}

const PHASES: &[Phase] = &[
    Phase::Planned,
    Phase::Constrained,
    Phase::Prepared,
    Phase::Routed,
    Phase::Backfilled,
    Phase::Verified,
    Phase::Moved,
    Phase::Swapped,
    Phase::Finished,
];
const STATES: &[&str] = &["active", "aborting", "done", "aborted"];

/// A label value as the exposition format quotes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra: &str, value: f64) {
        let sep = if extra.is_empty() { "" } else { "," };
        let _ = writeln!(self.text, "{name}{{{}{sep}{extra}}} {value}", self.labels);
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.family(name, "gauge", help);
            self.sample(name, "", v);
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "counter", help);
        self.sample(name, "", value);
    }
}

/// The scrape as Prometheus text (format 0.0.4). Every series carries the
/// table; the migration's series also its id and method.
pub fn metrics_text(s: &Scrape) -> String {
    let mut o = Out {
        text: String::new(),
        labels: format!("table=\"{}\"", label(s.table)),
    };
    o.gauge(
        "repartition_runner_up",
        "1 while this process runs a migration of the table.",
        Some(1.0),
    );
    if let Some((m, live)) = s.migration {
        o.labels = format!(
            "table=\"{}\",migration=\"{}\",method=\"{}\"",
            label(s.table),
            m.id,
            label(&m.method)
        );
        let (remaining, eta) = rows_remaining(m, live);
        o.family(
            "repartition_phase",
            "gauge",
            "1 for the last phase the migration completed.",
        );
        for p in PHASES {
            o.sample(
                "repartition_phase",
                &format!("phase=\"{}\"", p.as_str()),
                f64::from(u8::from(*p == m.phase)),
            );
        }
        o.family("repartition_state", "gauge", "1 for the migration's state.");
        for st in STATES {
            o.sample(
                "repartition_state",
                &format!("state=\"{st}\""),
                f64::from(u8::from(*st == m.state)),
            );
        }
        o.counter(
            "repartition_rows_moved_total",
            "Rows moved (move, split) or copied (sync) so far.",
            m.rows_moved as f64,
        );
        o.gauge(
            "repartition_rows_total",
            "The estimate of the table's rows when rows started to move.",
            m.rows_total.map(|n| n as f64),
        );
        o.gauge(
            "repartition_rows_remaining",
            "Rows still to move.",
            remaining.map(|n| n as f64),
        );
        o.gauge(
            "repartition_rate_rows_per_second",
            "Rows per second over the latest 50 batches.",
            live.rate,
        );
        o.gauge(
            "repartition_eta_seconds",
            "Seconds until every row has moved, at that rate.",
            eta,
        );
        o.counter("repartition_batches_total", "Batches committed.", m.batches as f64);
        if let Some(b) = s.last_batch {
            o.gauge(
                "repartition_batch_rows",
                "Rows of the latest batch.",
                Some(b.rows as f64),
            );
            o.gauge(
                "repartition_batch_duration_seconds",
                "How long the latest batch took, from its start to its commit.",
                Some(b.seconds),
            );
        }
        o.gauge(
            "repartition_paused",
            "1 while the runner waits for `migrate continue`.",
            Some(f64::from(u8::from(m.paused))),
        );
        o.family(
            "repartition_throttled",
            "gauge",
            "1 while the runner waits by itself; the label says why.",
        );
        match &m.throttled {
            Some(why) => o.sample("repartition_throttled", &format!("reason=\"{}\"", label(why)), 1.0),
            None => o.sample("repartition_throttled", "reason=\"\"", 0.0),
        }
        o.gauge(
            "repartition_waiting_for_swap",
            "1 while the runner waits for `migrate swap`.",
            Some(f64::from(u8::from(m.waiting_for_swap))),
        );
        if let Some(l) = &m.last_lock {
            o.family(
                "repartition_last_lock_hold_seconds",
                "gauge",
                "How long the latest strong-lock section held its locks.",
            );
            o.sample(
                "repartition_last_lock_hold_seconds",
                &format!("step=\"{}\"", label(&l.step)),
                l.held_ms / 1000.0,
            );
            o.family(
                "repartition_last_lock_wait_seconds",
                "gauge",
                "How long the latest strong-lock section's LOCK waited.",
            );
            o.sample(
                "repartition_last_lock_wait_seconds",
                &format!("step=\"{}\"", label(&l.step)),
                l.wait_ms / 1000.0,
            );
        }
    }
    o.counter(
        "repartition_lock_sections_total",
        "Strong-lock sections this process committed.",
        s.locks.sections as f64,
    );
    o.counter(
        "repartition_lock_hold_seconds_total",
        "Time those sections held their locks.",
        s.locks.held_seconds,
    );
    o.counter(
        "repartition_lock_wait_seconds_total",
        "Time their LOCK statements waited.",
        s.locks.waited_seconds,
    );
    o.counter(
        "repartition_lock_retries_total",
        "Lock timeouts and deadlocks this process stepped back from and retried.",
        s.locks.retries as f64,
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_quoted_and_every_series_names_the_table() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let text = metrics_text(&Scrape {
            table: "public.\"odd\"",
            migration: None,
            last_batch: None,
            locks: LockCounters {
                sections: 2,
                held_seconds: 0.5,
                waited_seconds: 0.25,
                retries: 3,
            },
        });
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("{table=\"public.\\\"odd\\\"\""), "{line}");
        }
        assert!(text.contains("repartition_lock_retries_total{table=\"public.\\\"odd\\\"\"} 3\n"));
        assert!(text.contains("# TYPE repartition_lock_hold_seconds_total counter\n"));
    }
}
