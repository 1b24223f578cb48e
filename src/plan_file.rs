//! The YAML plan file: its types, defaults and the checks that need no
//! database. Every error names the key and, where it can be found, its line.

use crate::error::Refusal;
/// Defined with the layout code, so that partition/ needs nothing from here.
pub use crate::partition::Interval;
use crate::sql::QualifiedName;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// A parsed plan, with its source kept so later checks can cite lines.
#[derive(Clone, Debug)]
pub struct PlanFile {
    pub path: String,
    pub source: String,
    pub spec: PlanSpec,
    pub table: QualifiedName,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// The table to repartition, schema-qualified.
    pub table: String,
    pub partition: PartitionSpec,
    pub method: Method,
    #[serde(default, deserialize_with = "or_default")]
    pub batch: BatchSpec,
    #[serde(default, deserialize_with = "or_default")]
    pub locks: LockSpec,
    #[serde(default, deserialize_with = "or_default")]
    pub foreign_keys: ForeignKeySpec,
    #[serde(default, deserialize_with = "or_default")]
    pub swap: SwapSpec,
    #[serde(default, deserialize_with = "or_default")]
    pub attach: AttachSpec,
    /// Shell commands run at phase boundaries, on failure and on completion.
    #[serde(default, deserialize_with = "or_default")]
    pub hooks: HooksSpec,
    /// Conditions under which the run pauses by itself.
    #[serde(default, deserialize_with = "or_default")]
    pub throttle: ThrottleSpec,
    /// For `migrate maintain`: how many periods of partitions to keep.
    #[serde(default)]
    pub retention: Option<RetentionSpec>,
    /// For `migrate maintain`: its other care of the table.
    #[serde(default, deserialize_with = "or_default")]
    pub maintain: MaintainSpec,
    /// Refusals the plan's author accepts, by code (`findings::codes`):
    /// they become warnings.
    #[serde(default)]
    pub accept: Vec<String>,
}

/// A section written with nothing under it (`batch:`) takes its defaults,
/// as if it were left out.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Commands run with `sh -c`, the migration's state in `MIGRATE_*`
/// environment variables; a failing hook is reported, never fatal.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    #[serde(default)]
    pub after_phase: Option<String>,
    #[serde(default)]
    pub on_failure: Option<String>,
    #[serde(default)]
    pub on_complete: Option<String>,
}

/// The run pauses while any of these holds, and says why in `status`; an
/// anti-wraparound autovacuum of the table being read always pauses it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// Replay lag of any replica (pg_stat_replication).
    #[serde(default)]
    pub max_replica_lag: Option<Millis>,
    /// Replay lag of any replica in bytes of WAL not yet replayed: unlike
    /// the time lag, which reads zero on an idle primary and stands still
    /// while a standby's replay is paused, it grows with what waits.
    #[serde(default)]
    pub max_replica_lag_bytes: Option<Positive>,
    /// WAL retained by any replication slot, in megabytes.
    #[serde(default)]
    pub max_slot_wal_mb: Option<Positive>,
    /// A query returning one boolean: true means "wait".
    #[serde(default)]
    pub check: Option<String>,
    /// How much slower the application may get while rows move: the run
    /// holds it by feedback (the latency module).
    #[serde(default)]
    pub latency: Option<LatencyBudget>,
}

/// `throttle.latency`: `2x` (a multiple of the commit latency measured
/// before the first batch) or `15ms` (an absolute ceiling).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "DurationText", into = "String")]
pub enum LatencyBudget {
    Times(f64),
    Ms(f64),
}

impl LatencyBudget {
    /// The probe's ceiling in milliseconds, given its baseline and the
    /// application's mean transaction time measured beside it. What the
    /// migration adds to a commit it adds to the application's as well, so
    /// a multiple allows the probe that many times the application's own
    /// time over its baseline (`baseline + (f - 1) × app`); the mean is at
    /// most the application's 99th percentile, so the allowance errs low.
    /// Without the application's figure, or below the probe's own, the
    /// probe's baseline stands in for it.
    pub fn ceiling_ms(self, baseline_ms: f64, app_ms: Option<f64>) -> f64 {
        match self {
            LatencyBudget::Times(f) => baseline_ms + (f - 1.0) * app_ms.unwrap_or(0.0).max(baseline_ms),
            LatencyBudget::Ms(ms) => ms,
        }
    }
}

impl From<LatencyBudget> for String {
    fn from(b: LatencyBudget) -> String {
        match b {
            LatencyBudget::Times(f) => format!("{f}x"),
            LatencyBudget::Ms(ms) => format!("{ms}ms"),
        }
    }
}

impl TryFrom<DurationText> for LatencyBudget {
    type Error = String;
    fn try_from(v: DurationText) -> Result<Self, String> {
        let bad = |t: &str| format!("`{t}` is not a latency budget such as 2x, 1.5x or 15ms");
        let text = match v {
            DurationText::Number(n) => return Err(bad(&n.to_string())),
            DurationText::Text(t) => t,
        };
        let t = text.trim();
        let (num, times) = if let Some(n) = t.strip_suffix('x') {
            (n, true)
        } else if let Some(n) = t.strip_suffix("ms") {
            (n, false)
        } else if let Some(n) = t.strip_suffix('s') {
            let secs: f64 = n.trim().parse().map_err(|_| bad(t))?;
            return LatencyBudget::try_from(DurationText::Text(format!("{}ms", secs * 1000.0)));
        } else {
            return Err(bad(t));
        };
        let n: f64 = num.trim().parse().map_err(|_| bad(t))?;
        if !n.is_finite() {
            return Err(bad(t));
        }
        if times {
            if n <= 1.0 {
                return Err(format!(
                    "`{t}` leaves the application no room: a multiple of its latency above 1, such as 1.5x or 2x"
                ));
            }
            Ok(LatencyBudget::Times(n))
        } else if n > 0.0 {
            Ok(LatencyBudget::Ms(n))
        } else {
            Err(format!("`{t}` must be above zero"))
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Partitions to keep: the current one and those before it.
    pub keep: Positive,
    /// Where an expired partition goes before it is dropped; dropped
    /// without a copy when absent.
    #[serde(default)]
    pub archive: Option<ArchiveSpec>,
}

/// `maintain:` in the plan.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaintainSpec {
    /// How often `maintain` analyzes the partitioned table as a whole,
    /// which autovacuum never does: its partitions it analyzes, the parent
    /// not, so the planner's estimates for the table drift from the data.
    #[serde(default = "a_day")]
    pub analyze_every: Millis,
}

fn a_day() -> Millis {
    Millis(86_400_000)
}

impl Default for MaintainSpec {
    fn default() -> Self {
        MaintainSpec { analyze_every: a_day() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    /// Moved into this schema (kept there, not dropped).
    #[serde(default)]
    pub schema: Option<String>,
    /// Written to `<directory>/<schema>.<partition>.csv.gz` with COPY, then
    /// dropped.
    #[serde(default)]
    pub directory: Option<String>,
}
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    /// For `method: attach`: the bound below which every existing row lies;
    /// the original becomes the partition holding keys below it. Default:
    /// the first partition bound after the current period and the highest
    /// key.
    #[serde(default)]
    pub cutoff: Option<Bound>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A view over both tables while rows move in batches.
    Move,
    /// Triggers mirror writes into a partitioned copy; renames swap them,
    /// reversibly.
    Sync,
    /// The original becomes the first partition; no rows move.
    Attach,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Move => "move",
            Method::Sync => "sync",
            Method::Attach => "attach",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Range,
    /// On a logical column such as `partition_id` (the GitLab CI design);
    /// for now with the attach method.
    List,
    /// By a hash of the key into `modulus` partitions; move and sync.
    Hash,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    pub by: Strategy,
    /// The partition key column.
    pub column: String,
    /// For date and time keys.
    #[serde(default)]
    pub interval: Option<Interval>,
    /// For integer keys: the width of each partition.
    #[serde(default)]
    pub step: Option<Positive>,
    /// For list partitioning: the value of every existing row (the
    /// attached original's partition): an integer, or for a text, enum,
    /// uuid or date key a string; the tool adds an integer column with
    /// this default when it does not exist.
    #[serde(default)]
    pub initial: Option<ListValue>,
    /// For hash partitioning: how many partitions.
    #[serde(default)]
    pub modulus: Option<Positive>,
    /// The time zone in which calendar bounds are computed.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The first lower bound; derived from `min(column)` when absent.
    #[serde(default)]
    pub start: Option<Bound>,
    /// Partitions to create beyond the current period (time keys) or beyond
    /// the highest key (integer keys).
    #[serde(default = "default_premake")]
    pub premake: u32,
    /// A DEFAULT partition; off unless asked for.
    #[serde(default)]
    pub default_partition: bool,
    /// Naming template for partitions; see the README for the tokens.
    #[serde(default)]
    pub naming: Option<String>,
}

/// A first bound as written: a date or timestamp string, or an integer.
pub use crate::partition::bounds::Written as Bound;

/// A list value as written: `initial: 100` stays an integer, `initial: eu`
/// (or a date, an enum label, a uuid) is a string.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ListValue {
    Integer(i64),
    Text(String),
}

impl ListValue {
    /// The value for an integer key: an integer, or a string of one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ListValue::Integer(n) => Some(*n),
            ListValue::Text(t) => t.trim().parse().ok(),
        }
    }

    /// The value as PostgreSQL would read it from a literal.
    pub fn text(&self) -> String {
        match self {
            ListValue::Integer(n) => n.to_string(),
            ListValue::Text(t) => t.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Rows per move batch (a target: batches follow heap pages). Given
    /// alone, it is kept; omitted, batches start at 5000 rows and tune
    /// themselves toward `target_duration`.
    #[serde(default)]
    pub size: Option<Positive>,
    /// Pause between batches.
    #[serde(default)]
    pub pause: Millis,
    /// Tune the batch size toward batches of this duration (between a tenth
    /// and ten times the starting size); `0` turns tuning off. Default:
    /// 100ms when `size` is not given.
    #[serde(default)]
    pub target_duration: Option<Millis>,
    /// Connections moving disjoint page ranges of the main pass at once
    /// (1 to 8; default: see `BatchSpec::workers`).
    #[serde(default)]
    pub workers: Option<u32>,
    /// `full` (default) moves flat out; `gentle` keeps batches short,
    /// commits each synchronously and rests a little after each, for the
    /// application's sake.
    #[serde(default)]
    pub mode: BatchMode,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    #[default]
    Full,
    Gentle,
}

impl BatchSpec {
    /// The starting (or fixed) batch size.
    pub fn rows(&self) -> u64 {
        self.size.map_or(DEFAULT_BATCH_ROWS, |p| p.0)
    }

    /// The batch duration the size tunes toward, if it tunes.
    pub fn target_ms(&self) -> Option<u64> {
        match (self.target_duration, self.size, self.mode) {
            (Some(Millis(0)), _, _) => None,
            (Some(d), _, _) => Some(d.0),
            (None, _, BatchMode::Gentle) => Some(GENTLE_TARGET_MS),
            (None, None, _) => Some(DEFAULT_TARGET_MS),
            (None, Some(_), _) => None,
        }
    }

    /// The main pass's connections: the plan's, or two for the move
    /// method at full speed. A move is a copy plus a delete, which one
    /// connection (one server core) runs at 0.7-0.8x the speed of the copy
    /// alone; two reach 1.1-1.5x (docs/benchmarks.md). The gentle mode
    /// keeps one, and so does sync, whose backfill already runs faster than
    /// the copy alone and whose index builds overlap it only with one.
    pub fn workers(&self, method: Method) -> u32 {
        self.workers.unwrap_or(match (method, self.mode) {
            (Method::Move, BatchMode::Full) => DEFAULT_MOVE_WORKERS,
            _ => 1,
        })
    }
}

/// The move method's main pass, at full speed, unless the plan says.
pub const DEFAULT_MOVE_WORKERS: u32 = 2;

/// Gentle batches hold their row locks and a core only briefly.
const GENTLE_TARGET_MS: u64 = 20;

/// The gentle mode's rest after each batch, in percent of the batch's time.
pub const GENTLE_REST_PERCENT: u32 = 30;

const DEFAULT_BATCH_ROWS: u64 = 5000;
/// Short enough that an application write waiting on a moving row waits
/// little, long enough that per-batch overhead stays small.
const DEFAULT_TARGET_MS: u64 = 100;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// How long any statement of the tool may wait for a lock.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Millis,
    /// How long any statement of the tool may run.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Millis,
    /// How many times a step that met a lock timeout or deadlock is retried.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForeignKeySpec {
    /// What to do with foreign keys of other tables that reference this one.
    #[serde(default)]
    pub incoming: IncomingFk,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IncomingFk {
    /// Refuse to plan while any exist.
    #[default]
    Refuse,
    /// Drop them when the view goes live (restored by `abort`).
    Drop,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwapSpec {
    /// Keep the emptied original table after the swap instead of dropping it.
    #[serde(default)]
    pub keep_old: bool,
    /// `apply` gets everything ready, keeps the two sides in step, and waits
    /// for the operator's `migrate swap` instead of swapping by itself.
    #[serde(default)]
    pub postpone: bool,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            size: None,
            pause: Millis(0),
            target_duration: None,
            workers: None,
            mode: BatchMode::Full,
        }
    }
}

impl Default for LockSpec {
    fn default() -> Self {
        LockSpec {
            lock_timeout: default_lock_timeout(),
            statement_timeout: default_statement_timeout(),
            retries: default_retries(),
        }
    }
}

fn default_time_zone() -> String {
    "UTC".into()
}
fn default_premake() -> u32 {
    3
}
fn default_lock_timeout() -> Millis {
    Millis(2000)
}
fn default_statement_timeout() -> Millis {
    Millis(60_000)
}
fn default_retries() -> u32 {
    30
}

/// A whole number above zero.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "i64")]
pub struct Positive(pub u64);

impl TryFrom<i64> for Positive {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if v > 0 {
            Ok(Positive(v as u64))
        } else {
            Err(format!("must be a whole number above zero, not {v}"))
        }
    }
}

/// A duration written as `250ms`, `2s`, `1m`, or a number of milliseconds.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "DurationText", into = "String")]
pub struct Millis(pub u64);

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl From<Millis> for String {
    fn from(m: Millis) -> String {
        format!("{}ms", m.0)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Number(i64),
    Text(String),
}

impl TryFrom<DurationText> for Millis {
    type Error = String;
    fn try_from(v: DurationText) -> Result<Self, String> {
        match v {
            DurationText::Number(n) if n >= 0 => Ok(Millis(n as u64)),
            DurationText::Number(n) => Err(format!("must not be negative, not {n}")),
            DurationText::Text(t) => parse_duration(&t).map(Millis),
        }
    }
}

pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 250ms, 2s or 1m"))?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` is not a duration such as 250ms, 2s or 1m")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

impl PlanFile {
    pub fn load(path: &Path) -> Result<PlanFile, Refusal> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| Refusal::new(format!("cannot read the plan file {}: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &source)
    }

    pub fn parse(path: &str, source: &str) -> Result<PlanFile, Refusal> {
        let spec = parse_spec(source).map_err(|e| Refusal::new(format!("{path}: {e}")))?;
        let plan = PlanFile {
            path: path.to_string(),
            source: source.to_string(),
            table: QualifiedName::parse(&spec.table).map_err(|e| Refusal::new(format!("{path}: table {e}")))?,
            spec,
        };
        plan.check()?;
        Ok(plan)
    }

    /// Checks of the plan on its own, before any database is asked.
    fn check(&self) -> Result<(), Refusal> {
        for code in &self.spec.accept {
            if !crate::findings::codes::acceptable(code) {
                return Err(self.key_error(
                    "accept",
                    &format!(
                        "names `{code}`, which is no code a plan can accept (refusals: {}; warnings: {})",
                        crate::findings::codes::REFUSALS.join(", "),
                        crate::findings::codes::WARNINGS.join(", ")
                    ),
                ));
            }
        }
        let p = &self.spec.partition;
        if p.column.is_empty() {
            return Err(self.key_error("partition.column", "must name a column"));
        }
        if p.interval.is_some() && p.step.is_some() {
            return Err(self.key_error(
                "partition.step",
                "cannot be given together with partition.interval: use interval for date and time keys, step for integer keys",
            ));
        }
        if p.by == Strategy::Hash {
            if p.interval.is_some() || p.step.is_some() || p.start.is_some() || p.initial.is_some() {
                return Err(self.key_error(
                    "partition.by",
                    "hash takes partition.modulus, not interval, step, start or initial",
                ));
            }
            match p.modulus {
                None => {
                    return Err(self.key_error(
                        "partition.by",
                        "hash needs partition.modulus: how many partitions (for example 16)",
                    ))
                }
                Some(m) if m.0 > 1024 => return Err(self.key_error("partition.modulus", "must be at most 1024")),
                _ => {}
            }
            if self.spec.method == Method::Attach {
                return Err(self.key_error(
                    "partition.by",
                    "hash cannot attach the original as one partition; use move or sync",
                ));
            }
            if p.default_partition {
                return Err(self.key_error(
                    "partition.default_partition",
                    "is refused by PostgreSQL for hash partitioning",
                ));
            }
            return self.check_common();
        }
        if p.modulus.is_some() {
            return Err(self.key_error("partition.modulus", "is for partition.by: hash"));
        }
        if p.by == Strategy::List {
            if p.interval.is_some() || p.step.is_some() || p.start.is_some() {
                return Err(self.key_error(
                    "partition.by",
                    "list takes partition.initial and partition.premake, not interval, step or start",
                ));
            }
            if p.initial.is_none() && self.spec.method == Method::Attach {
                return Err(self.key_error(
                    "partition.by",
                    "list with the attach method needs partition.initial: the value of every existing row (for example 100, or eu for a text key)",
                ));
            }
            return self.check_common();
        }
        if p.initial.is_some() {
            return Err(self.key_error("partition.initial", "is for partition.by: list"));
        }
        if p.interval.is_none() && p.step.is_none() {
            return Err(self.key_error(
                "partition",
                "needs either interval (day, week, month or year, for date and time keys) or step (for integer keys)",
            ));
        }
        self.check_common()
    }

    /// Checks that hold for every strategy.
    fn check_common(&self) -> Result<(), Refusal> {
        let p = &self.spec.partition;
        if p.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(self.key_error(
                "partition.time_zone",
                &format!(
                    "`{}` is not a known time zone name (for example UTC or Europe/Berlin)",
                    p.time_zone
                ),
            ));
        }
        if p.premake > 1000 {
            return Err(self.key_error("partition.premake", "must be at most 1000"));
        }
        if let Some(t) = &p.naming {
            crate::partition::naming::check_template(t).map_err(|e| self.key_error("partition.naming", &e))?;
        }
        if self.spec.attach.cutoff.is_some() && self.spec.method != Method::Attach {
            return Err(self.key_error("attach.cutoff", "is only for method: attach"));
        }
        if self.spec.swap.keep_old && self.spec.method != Method::Move {
            return Err(self.key_error(
                "swap.keep_old",
                "is only for method: move (sync keeps the retired original until `migrate cleanup`; attach keeps it as the first partition)",
            ));
        }
        if let Some(a) = self.spec.retention.as_ref().and_then(|r| r.archive.as_ref()) {
            if a.schema.is_some() == a.directory.is_some() {
                return Err(self.key_error("retention.archive", "takes either schema or directory"));
            }
        }
        let l = &self.spec.locks;
        if l.lock_timeout.0 == 0 {
            return Err(self.key_error(
                "locks.lock_timeout",
                "must be above zero: an untimed lock wait can block the application indefinitely",
            ));
        }
        if l.statement_timeout.0 == 0 {
            return Err(self.key_error("locks.statement_timeout", "must be above zero"));
        }
        if l.lock_timeout.0 > 60_000 {
            return Err(self.key_error(
                "locks.lock_timeout",
                "must be at most 60s: while the tool waits for a lock, the application's statements queue behind it",
            ));
        }
        if !(1..=8).contains(&self.spec.batch.workers(self.spec.method)) {
            return Err(self.key_error("batch.workers", "must be between 1 and 8"));
        }
        if self.spec.batch.rows() > 1_000_000 {
            return Err(self.key_error("batch.size", "must be at most 1000000 rows"));
        }
        Ok(())
    }

    /// A refusal naming a key of the plan and its line.
    pub fn key_error(&self, key: &str, problem: &str) -> Refusal {
        match line_of(&self.source, key) {
            Some(line) => Refusal::new(format!("{}: {key} (line {line}) {problem}", self.path)),
            None => Refusal::new(format!("{}: {key} {problem}", self.path)),
        }
    }
}

/// Parser settings for plan files. Booleans are YAML 1.2's `true` and
/// `false`, as plans have always been read, so `keep_old: yes` is refused
/// rather than guessed; merge keys are refused rather than expanded; and
/// the budget is small: a plan is a few dozen lines, so anything deeper,
/// larger or alias-heavy is a mistake or an attack.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_events: 100_000,
            max_nodes: 50_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_total_scalar_bytes: 1 << 20,
        },
        // Untagged values (`start`, durations) are buffered whole, aliases
        // expanded: cap the expansion far below what a bomb needs.
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_replay_stack_depth: 16,
        },
        strict_booleans: true,
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        with_snippet: false,
    }
}

/// A plan's settings from its YAML text, or one sentence naming the key
/// path, its line and the problem.
pub fn parse_spec(source: &str) -> Result<PlanSpec, String> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(source, yaml_options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().clone());
            e.into_inner()
        })
    })
    .map_err(|e| yaml_error(source, path.as_ref(), &e))
}

/// `key.path (line N) problem`: the path as serde followed it and the
/// line where the parser stopped; for a missing key, the line of the
/// mapping that lacks it.
fn yaml_error(source: &str, path: Option<&serde_path_to_error::Path>, e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    let mut inner = e;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let mut key = path.map(dotted).unwrap_or_default();
    let problem = match inner {
        // Found before serde sees the key, so the path stops at its mapping.
        Error::DuplicateMappingKey { key: Some(k), .. } => {
            key = if key.is_empty() {
                k.clone()
            } else {
                format!("{key}.{k}")
            };
            "is written twice".to_string()
        }
        // The crate says only `invalid u32`; users need the value and what was wanted.
        Error::InvalidScalar { ty, location } => {
            let wanted = match *ty {
                "bool" => "true or false",
                "f32" | "f64" => "a number",
                t if t.starts_with('i') || t.starts_with('u') => "a whole number",
                t => t,
            };
            match scalar_text(source, location) {
                Some(text) => format!("`{text}` is not {wanted}"),
                None => format!("is not {wanted}"),
            }
        }
        // The parser's words for the node it wanted, put as what the key takes.
        Error::Unexpected { expected, .. } if key.is_empty() && *expected == "mapping start" => {
            "the plan must be a mapping of plan keys (table, partition, method, ...)".to_string()
        }
        Error::Unexpected { expected, .. } if *expected == "mapping start" => "must be a mapping of keys".to_string(),
        Error::Unexpected { expected, .. } if *expected == "sequence start" => "must be a list".to_string(),
        Error::Unexpected { expected, .. } if *expected == "string scalar" => {
            "must be a single value, not a list or mapping".to_string()
        }
        _ => serde_saphyr::MessageFormatter::format_message(&serde_saphyr::UserMessageFormatter, inner)
            .replace('\n', " "),
    };
    let line = match inner {
        Error::SerdeMissingField { .. } => line_of(source, &key),
        _ => e.location().map(|l| l.line() as usize).filter(|l| *l > 0),
    };
    match (key.is_empty(), line) {
        (false, Some(line)) => format!("{key} (line {line}) {problem}"),
        (false, None) => format!("{key} {problem}"),
        (true, Some(line)) => format!("line {line}: {problem}"),
        (true, None) => problem,
    }
}

/// The source text of a one-line scalar an error points at, if short.
fn scalar_text<'s>(source: &'s str, at: &serde_saphyr::Location) -> Option<&'s str> {
    let span = at.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let text = source.get(start..start.checked_add(len)?)?;
    (!text.is_empty() && text.len() <= 80 && !text.contains('\n')).then_some(text)
}

/// A serde path as plan keys are written: `partition.interval`,
/// `partition.start[0]`; enum variants are not keys, and a key that is not text
/// ends the path at its mapping.
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } => {}
            Segment::Unknown => break,
        }
    }
    out
}

/// The 1-based line where a dotted key path is written, block or flow
/// style; the first, if the key is written twice.
pub fn line_of(source: &str, path: &str) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    key_lines(source).into_iter().find(|(p, _)| p == path).map(|(_, l)| l)
}

/// Every mapping key of the first document with its dotted path and line,
/// from the parser's events; a document that stops parsing yields the
/// keys before the fault.
fn key_lines(source: &str) -> Vec<(String, usize)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    /// An open collection: the path that leads to it, and for a mapping
    /// the key whose value comes next, for a sequence the next index.
    enum Open {
        Map(String, Option<String>),
        Seq(String, usize),
    }
    let mut out = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for item in Parser::new_from_str(source) {
        let Ok((event, span)) = item else { break };
        let starts = match &event {
            Event::Scalar(..) | Event::Alias(..) => false,
            Event::MappingStart(..) | Event::SequenceStart(..) => true,
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                continue;
            }
            Event::DocumentEnd | Event::StreamEnd => break,
            _ => continue,
        };
        // The path of this node, or None for a mapping key.
        let node = match stack.last_mut() {
            None => Some(String::new()),
            Some(Open::Seq(prefix, next)) => {
                *next += 1;
                Some(format!("{prefix}[{}]", *next - 1))
            }
            Some(Open::Map(prefix, pending)) => match pending.take() {
                Some(key) => Some(key),
                None => {
                    let key = match &event {
                        Event::Scalar(text, ..) => text.to_string(),
                        _ => "?".to_string(),
                    };
                    let key = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    out.push((key.clone(), span.start.line()));
                    *pending = Some(key.clone());
                    // A key that is itself a collection: its insides are no key path.
                    starts.then(|| format!("{key}?"))
                }
            },
        };
        if let (true, Some(path)) = (starts, node) {
            stack.push(match event {
                Event::MappingStart(..) => Open::Map(path, None),
                _ => Open::Seq(path, 0),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "table: public.workflow_events\npartition:\n  by: range\n  column: ts\n  interval: month\nmethod: move\nbatch:\n  size: 5000\n";

    #[test]
    fn minimal_plan_takes_defaults() {
        let p = PlanFile::parse("p.yaml", MINIMAL).unwrap();
        assert_eq!(p.spec.partition.time_zone, "UTC");
        assert_eq!(p.spec.partition.premake, 3);
        assert!(!p.spec.partition.default_partition);
        assert_eq!(p.spec.locks.lock_timeout, Millis(2000));
        assert_eq!(p.spec.batch.rows(), 5000);
        // A size given alone is kept; without one the size tunes itself.
        assert_eq!(p.spec.batch.target_ms(), None);
        let tuned = PlanFile::parse("p.yaml", &MINIMAL.replace("  size: 5000\n", "")).unwrap();
        assert_eq!(
            (tuned.spec.batch.rows(), tuned.spec.batch.target_ms()),
            (5000, Some(100))
        );
        let gentle = PlanFile::parse("p.yaml", &MINIMAL.replace("size: 5000", "mode: gentle")).unwrap();
        assert_eq!(gentle.spec.batch.target_ms(), Some(20));
        let off = PlanFile::parse("p.yaml", &MINIMAL.replace("size: 5000", "target_duration: 0")).unwrap();
        assert_eq!(off.spec.batch.target_ms(), None);
        assert_eq!(p.table.to_string(), "\"public\".\"workflow_events\"");
    }

    #[test]
    fn two_workers_move_by_default_where_rows_move_at_full_speed() {
        let workers = |src: &str| {
            let p = PlanFile::parse("p.yaml", src).unwrap();
            p.spec.batch.workers(p.spec.method)
        };
        assert_eq!(workers(MINIMAL), DEFAULT_MOVE_WORKERS);
        assert_eq!(workers(&MINIMAL.replace("size: 5000", "mode: gentle")), 1);
        assert_eq!(workers(&MINIMAL.replace("method: move", "method: sync")), 1);
        assert_eq!(workers(&MINIMAL.replace("method: move", "method: attach")), 1);
        assert_eq!(workers(&MINIMAL.replace("size: 5000", "workers: 1")), 1);
        assert_eq!(
            workers(
                &MINIMAL
                    .replace("method: move", "method: sync")
                    .replace("size: 5000", "workers: 3")
            ),
            3
        );
    }

    #[test]
    fn a_list_initial_is_an_integer_or_a_string() {
        let list = |initial: &str| {
            let src =
                format!("table: public.t\npartition:\n  by: list\n  column: k\n  initial: {initial}\nmethod: attach\n");
            PlanFile::parse("p.yaml", &src).unwrap().spec.partition.initial.unwrap()
        };
        assert_eq!(list("100"), ListValue::Integer(100));
        assert_eq!(list("-7"), ListValue::Integer(-7));
        assert_eq!(list("eu"), ListValue::Text("eu".into()));
        assert_eq!(list("2024-01-01"), ListValue::Text("2024-01-01".into()));
        assert_eq!(
            list("6f1c1a5e-0a4b-4a4e-9d55-2f0c1e0d9b11"),
            ListValue::Text("6f1c1a5e-0a4b-4a4e-9d55-2f0c1e0d9b11".into())
        );
        assert_eq!(list("\"it's\""), ListValue::Text("it's".into()));
        // A quoted number is a string, which an integer key still reads.
        let quoted = list("'100'");
        assert_eq!(quoted, ListValue::Text("100".into()));
        assert_eq!((quoted.as_int(), quoted.text()), (Some(100), "100".to_string()));
        assert_eq!((list("eu").as_int(), list("100").text()), (None, "100".to_string()));
    }

    fn err(src: &str) -> String {
        PlanFile::parse("p.yaml", src).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = err(&MINIMAL.replace("size: 5000", "size: 0"));
        assert!(e.contains("batch.size") && e.contains("line 8"), "{e}");
        let e = err(&MINIMAL.replace("size: 5000", "size: lots"));
        assert!(e.contains("batch.size") && e.contains("line 8"), "{e}");
        let e = err(&MINIMAL.replace("interval: month", "interval: monthly"));
        assert!(e.contains("partition.interval") && e.contains("line 5"), "{e}");
        let e = err(&format!("{MINIMAL}colour: blue\n"));
        assert!(e.contains("colour") && e.contains("line 9"), "{e}");
        let e = err(&format!("{MINIMAL}locks:\n  lock_timeout: 0\n"));
        assert!(e.contains("locks.lock_timeout (line 10)"), "{e}");
        let e = err(&MINIMAL.replace("public.workflow_events", "workflow_events"));
        assert!(e.contains("schema-qualified"), "{e}");
        let e = err(&MINIMAL.replace("  interval: month\n", "  interval: month\n  time_zone: Mars/Base\n"));
        assert!(e.contains("partition.time_zone (line 6)"), "{e}");
        let e = err(&MINIMAL.replace("  interval: month\n", ""));
        assert!(e.contains("needs either interval"), "{e}");
        let e = err(&format!("{MINIMAL}locks:\n  lock_timeout: 5 parsecs\n"));
        assert!(e.contains("locks.lock_timeout") && e.contains("line 10"), "{e}");
    }

    #[test]
    fn flow_style_errors_name_the_bad_key_and_its_line() {
        let e = err(&MINIMAL.replace("batch:\n  size: 5000\n", "batch: {size: 5000, pause: 3 parsecs}\n"));
        assert!(
            e.contains("batch.pause (line 7)") && e.contains("`3 parsecs` is not a duration"),
            "{e}"
        );
        let e = err(&format!(
            "{MINIMAL}retention: {{keep: 3,\n  archive: {{schema: [a]}}}}\n"
        ));
        assert!(e.contains("retention.archive.schema (line 10)"), "{e}");
    }

    #[test]
    fn block_style_error_on_the_line_after_another_key() {
        let e = err(&MINIMAL.replace("  size: 5000\n", "  size: 5000\n  pause: 3 parsecs\nswap: {}\n"));
        assert!(e.contains("batch.pause (line 9)"), "{e}");
        let e = err(&MINIMAL.replace("  size: 5000\n", "  size: 5000\n  workers: lots\n"));
        assert!(e.contains("batch.workers (line 9) `lots` is not a whole number"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path_and_line() {
        let e = err(&MINIMAL.replace("  size: 5000\n", "  size: 5000\n  colour: 3\n"));
        assert!(e.contains("batch.colour (line 9) unknown field `colour`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}retention:\n  keep: 3\n  archive:\n    schema: a\n    colour: b\n"
        ));
        assert!(e.contains("retention.archive.colour (line 13)"), "{e}");
    }

    #[test]
    fn wrong_type_nested_two_levels_deep() {
        let e = err(&format!(
            "{MINIMAL}retention:\n  keep: 3\n  archive:\n    schema: [a]\n"
        ));
        assert!(
            e.contains("retention.archive.schema (line 12) must be a single value"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("batch:\n  size: 5000\n", "batch: 5000\n"));
        assert!(e.contains("batch (line 7) must be a mapping of keys"), "{e}");
        let budget = |v: &str| {
            PlanFile::parse("p.yaml", &format!("{MINIMAL}throttle:\n  latency: {v}\n")).map(|p| p.spec.throttle.latency)
        };
        assert_eq!(budget("2x").unwrap(), Some(LatencyBudget::Times(2.0)));
        assert_eq!(budget("1.5x").unwrap(), Some(LatencyBudget::Times(1.5)));
        assert_eq!(budget("15ms").unwrap(), Some(LatencyBudget::Ms(15.0)));
        assert_eq!(budget("0.5s").unwrap(), Some(LatencyBudget::Ms(500.0)));
        for bad in ["1x", "0.5x", "fast", "0ms", "-3ms", "15"] {
            assert!(budget(bad).is_err(), "{bad} was taken");
        }
        let e = err(&format!("{MINIMAL}throttle:\n  max_slot_wal_mb: 0\n"));
        assert!(
            e.contains("throttle.max_slot_wal_mb (line 10) must be a whole number above zero"),
            "{e}"
        );
    }

    #[test]
    fn missing_duplicate_and_misplaced_keys() {
        // A missing key is cited at the mapping that lacks it; the plan itself has no line.
        let e = err(&MINIMAL.replace("  column: ts\n", ""));
        assert!(e.contains("partition (line 2) missing field `column`"), "{e}");
        let e = err(&MINIMAL.replace("method: move\n", ""));
        assert!(e.ends_with("p.yaml: missing field `method`"), "{e}");
        // A key written twice is cited where it is written again.
        let e = err(&MINIMAL.replace("  size: 5000\n", "  size: 5000\n  size: 6000\n"));
        assert!(e.contains("batch.size (line 9) is written twice"), "{e}");
        let e = err(&format!("{MINIMAL}method: sync\n"));
        assert!(e.contains("method (line 9) is written twice"), "{e}");
        let e = err("- a\n");
        assert!(e.contains("the plan must be a mapping of plan keys"), "{e}");
        // Booleans are YAML 1.2's: `yes` is not one.
        let e = err(&format!("{MINIMAL}swap:\n  keep_old: yes\n"));
        assert!(e.contains("swap.keep_old (line 10)"), "{e}");
        let e = err(&format!("<<: {{method: sync}}\n{MINIMAL}"));
        assert!(e.contains("line 1") && e.contains("merge key"), "{e}");
    }

    #[test]
    fn hostile_yaml_is_refused_in_one_line() {
        // Anchors and aliases inside one buffered value, each level eight times the last.
        let mut bomb = String::from("[&l0 [x, x, x, x, x, x, x, x]");
        for level in 1..9 {
            bomb.push_str(&format!(
                ", &l{level} [{}]",
                vec![format!("*l{}", level - 1); 8].join(", ")
            ));
        }
        bomb.push(']');
        let started = std::time::Instant::now();
        let e = err(&MINIMAL.replace("  interval: month\n", &format!("  interval: month\n  start: {bomb}\n")));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{e}");
        assert!(
            e.contains("partition.start[") && e.contains("(line 6) YAML document too large"),
            "{e}"
        );
        let deep = format!(
            "{MINIMAL}hooks:\n  on_failure: {}x{}\n",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let e = err(&deep);
        assert!(e.contains("hooks.on_failure (line 10)") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2s"), Ok(2000));
        assert_eq!(parse_duration("1m"), Ok(60_000));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn line_finder_handles_nesting() {
        let src = "a:\n  b: 1\nc:\n  b: 2\n  d:\n    e: 3\n";
        assert_eq!(line_of(src, "c.b"), Some(4));
        assert_eq!(line_of(src, "c.d.e"), Some(6));
        assert_eq!(line_of(src, "a.b"), Some(2));
        assert_eq!(line_of(src, "x"), None);
        let flow = "a: {b: 1,\n  c: [x, {d: 2}]}\n# e: 1\ne: \"x: y\"\n";
        assert_eq!(line_of(flow, "a.b"), Some(1));
        assert_eq!(line_of(flow, "a.c[1].d"), Some(2));
        assert_eq!(line_of(flow, "e"), Some(4));
        assert_eq!(line_of(flow, ""), None);
    }
}
