//! `migrate maintain`: the partitioned table's daily care, safe from cron
//! and from two hosts at once. It premakes partitions up to the plan's
//! horizon, and applies retention: each expired partition is detached
//! first (concurrently where the server allows), then archived, then
//! dropped, each step in its own transaction and recorded, so no strong
//! lock on the parent is ever held while data is archived or dropped.
//! Range partitions are handled here, list partitions in `list`; hash
//! partitions are all made up front and need no care. What a run did comes
//! back as a [`MaintainReport`]; `report::maintain_text` and
//! `report::maintain_json` render it.

mod list;

use crate::catalog;
use crate::control;
use crate::db::advisory::RunnerLock;
use crate::db::retry::{retrying, retrying_tx, RetryPolicy};
use crate::error::{exit, Failure, Refusal};
use crate::exec::{tx, Context};
use crate::partition::bounds::{self, KeyKind, KeyValue, LayoutInput};
use crate::partition::existing::{self, Bound, Existing};
use crate::plan_file::{ArchiveSpec, PlanFile};
use crate::sql::{quote_literal, Ident, QualifiedName};
use anyhow::{Context as _, Result};
use std::io::Write;
use tokio_postgres::Client;

/// What one run did to one table, for the operator.
#[derive(Debug)]
pub struct MaintainReport {
    pub table: QualifiedName,
    pub column: Ident,
    pub strategy: Strategy,
    /// Set when the run did nothing because another runner holds the
    /// table: why.
    pub not_run: Option<String>,
    /// Hash partitions only: how many there are.
    pub hash_partitions: Option<usize>,
    /// Rows moved out of the default partition into new partitions.
    pub drained: Vec<Drained>,
    pub premade: Vec<Premade>,
    /// Retention's steps, in the order they were taken.
    pub expired: Vec<Expired>,
    /// Partitions wanted but not created.
    pub skipped: Vec<Skipped>,
    /// How far the partitions reach without a gap: the upper bound of the
    /// last range, or the highest list value.
    pub reach: Option<String>,
    /// Less than one period (range) or no next value (list) is covered, or
    /// there is no partition at all.
    pub running_out: bool,
    /// Sentences for the operator's attention, printed to stderr.
    pub warnings: Vec<String>,
    pub exit_code: i32,
    /// The partitioned table was analyzed as a whole: how long it took.
    pub analyzed_ms: Option<u64>,
    /// When it was analyzed before (by maintain, the migration, or by
    /// hand), if it ever was.
    pub analyzed_before: Option<chrono::DateTime<chrono::Utc>>,
}

impl MaintainReport {
    fn new(plan: &PlanFile) -> MaintainReport {
        MaintainReport {
            table: plan.table.clone(),
            column: Ident::new(plan.spec.partition.column.clone()),
            strategy: plan.spec.partition.by.into(),
            not_run: None,
            hash_partitions: None,
            drained: Vec::new(),
            premade: Vec::new(),
            expired: Vec::new(),
            skipped: Vec::new(),
            reach: None,
            running_out: false,
            warnings: Vec::new(),
            exit_code: exit::OK,
            analyzed_ms: None,
            analyzed_before: None,
        }
    }
}

/// The key values of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Span {
    /// `[from, to)`
    Range { from: String, to: String },
    /// One list value.
    Value(i64),
}

#[derive(Debug)]
pub struct Drained {
    pub default: QualifiedName,
    pub partition: QualifiedName,
    pub span: Span,
    pub rows: i64,
}

#[derive(Debug)]
pub struct Premade {
    pub partition: QualifiedName,
    pub span: Span,
}

#[derive(Debug)]
pub enum Skipped {
    /// An existing partition (`by`) covers part of the span already.
    Covered { by: QualifiedName, span: Span },
    /// Creating the partition failed while a default partition exists,
    /// which may hold rows of the span.
    Failed {
        partition: QualifiedName,
        span: Span,
        error: String,
    },
    /// Retention left an expired partition attached, and why: another
    /// partition's detach is pending, or rows elsewhere still reference it.
    Kept { partition: QualifiedName, why: String },
}

#[derive(Debug)]
pub struct Expired {
    pub partition: QualifiedName,
    pub step: ExpiryStep,
}

#[derive(Debug)]
pub enum ExpiryStep {
    Detached,
    ArchivedToSchema { schema: String },
    ArchivedToFile { path: std::path::PathBuf, rows: u64 },
    Dropped,
}

struct Target {
    table: QualifiedName,
    column: Ident,
    kind: KeyKind,
    strategy: Strategy,
    default_partition: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Range,
    List,
    Hash,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Range => "range",
            Strategy::List => "list",
            Strategy::Hash => "hash",
        }
    }
}

impl From<crate::plan_file::Strategy> for Strategy {
    fn from(s: crate::plan_file::Strategy) -> Strategy {
        match s {
            crate::plan_file::Strategy::Range => Strategy::Range,
            crate::plan_file::Strategy::List => Strategy::List,
            crate::plan_file::Strategy::Hash => Strategy::Hash,
        }
    }
}

pub async fn maintain(ctx: &Context, plan: &PlanFile) -> Result<MaintainReport> {
    let mut report = MaintainReport::new(plan);
    let mut client = crate::db::connect(&ctx.cfg).await?;
    let limits = limits(&client, plan).await?;
    let table = plan.table.clone();
    let Some(_lock) = runner_lock(ctx, &table, &mut report).await? else {
        return Ok(report);
    };
    if let Some(m) = control::unfinished(&client, &table.to_string()).await? {
        return Err(Refusal::new(format!(
            "a {} migration of {table} is unfinished (phase {}); maintain runs on the partitioned table once it is done",
            m.method,
            m.phase.as_str()
        ))
        .into());
    }
    let target = target(&client, plan).await?;
    control::bootstrap(&mut client).await?;
    let policy = RetryPolicy::new(plan.spec.locks.retries);
    analyze(&client, plan, policy, &limits, &mut report).await?;
    match target.strategy {
        Strategy::Hash => {
            if plan.spec.retention.is_some() {
                return Err(plan
                    .key_error(
                        "retention",
                        "needs range or list partitions; hash partitions hold every age of row",
                    )
                    .into());
            }
            let n = existing::partitions(&client, &table, target.kind).await?.len();
            report.hash_partitions = Some(n);
            return Ok(report);
        }
        Strategy::List => maintain_list(&client, plan, &target, policy, &limits, &mut report).await?,
        Strategy::Range => maintain_range(&client, plan, &target, policy, &limits, &mut report).await?,
    }
    conclude(&mut report);
    Ok(report)
}

/// The partitioned table as a whole, analyzed once `maintain.analyze_every`
/// has passed since it last was: autovacuum analyzes the partitions but
/// never the parent, whose statistics the planner uses for every query
/// that reads more than one partition. From PostgreSQL 18 `ANALYZE ONLY`
/// samples the parent alone; before, the partitions are analyzed again with
/// it. Its own transaction, under the lock timeout (it waits for a vacuum
/// of a partition, as autovacuum would).
async fn analyze(
    client: &Client,
    plan: &PlanFile,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    let table = plan.table.to_string();
    let row = client
        .query_one(
            "SELECT greatest((SELECT at FROM repartition.analyzed WHERE table_name = $1), \
                             (SELECT greatest(last_analyze, last_autoanalyze) FROM pg_catalog.pg_stat_all_tables WHERE relid = to_regclass($1))), \
                    now(), current_setting('server_version_num')::int >= 180000",
            &[&table],
        )
        .await?;
    let before: Option<chrono::DateTime<chrono::Utc>> = row.get(0);
    let now: chrono::DateTime<chrono::Utc> = row.get(1);
    let only = if row.get::<_, bool>(2) { "ONLY " } else { "" };
    report.analyzed_before = before;
    let every = chrono::Duration::milliseconds(plan.spec.maintain.analyze_every.0 as i64);
    if before.is_some_and(|b| now - b < every) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let sql = format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = 0; ANALYZE {only}{}",
        limits.lock_timeout_ms, plan.table
    );
    retrying_tx(
        client,
        policy,
        "analyze the partitioned table",
        std::slice::from_ref(&table),
        &format!("BEGIN; {sql}; COMMIT"),
    )
    .await?;
    client
        .execute(
            "INSERT INTO repartition.analyzed (table_name, at) VALUES ($1, now()) \
             ON CONFLICT (table_name) DO UPDATE SET at = EXCLUDED.at",
            &[&table],
        )
        .await?;
    report.analyzed_ms = Some(started.elapsed().as_millis() as u64);
    Ok(())
}

/// The run's timeouts. As for migrations, the lock timeout stays below the
/// server's deadlock_timeout, so the tool is the one that steps back.
async fn limits(client: &Client, plan: &PlanFile) -> Result<Limits> {
    let server = catalog::server_info(client).await?;
    let lock_timeout_ms =
        crate::db::retry::lock_timeout_under_deadlock(plan.spec.locks.lock_timeout.0, server.deadlock_timeout_ms);
    Ok(Limits {
        lock_timeout_ms,
        statement_timeout_ms: plan.spec.locks.statement_timeout.0,
    })
}

/// The table's runner lock, or None (recorded in the report) when another
/// runner holds it.
async fn runner_lock(ctx: &Context, table: &QualifiedName, report: &mut MaintainReport) -> Result<Option<RunnerLock>> {
    let mut lock_cfg = ctx.cfg.clone();
    lock_cfg.application_name("migrate maintain (runner lock)");
    let lock_client = crate::db::connect(&lock_cfg).await?;
    match RunnerLock::acquire(lock_client, &table.to_string()).await {
        Ok(l) => Ok(Some(l)),
        Err(e)
            if e.downcast_ref::<Failure>()
                .is_some_and(|f| matches!(f, Failure::Conflict(_))) =>
        {
            // Another host is maintaining, or a migration runs: nothing to
            // do now, and nothing to alarm cron about.
            ctx.reporter.done(&format!("{e}; this run does nothing"));
            report.not_run = Some(e.to_string());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn maintain_list(
    client: &Client,
    plan: &PlanFile,
    target: &Target,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    if target.default_partition {
        list::drain_default(client, plan, target, policy, limits, report).await?;
    }
    let current = list::premake(client, plan, target, policy, limits, report).await?;
    if let (Some(r), Some(current)) = (&plan.spec.retention, current) {
        let expired = list::expired(client, target, current, r.keep.0).await?;
        expire_all(client, target, expired, r.archive.as_ref(), policy, limits, report).await?;
    }
    Ok(())
}

async fn maintain_range(
    client: &Client,
    plan: &PlanFile,
    target: &Target,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    if target.default_partition {
        drain_default(client, plan, target, policy, limits, report).await?;
    }
    premake(client, plan, target, policy, limits, report).await?;
    if let Some(r) = &plan.spec.retention {
        retention(
            client,
            plan,
            target,
            r.keep.0,
            r.archive.as_ref(),
            policy,
            limits,
            report,
        )
        .await?;
    }
    Ok(())
}

/// The warning and exit code 5 when the partitions run out: rows beyond
/// them would be refused, which cron must not miss.
fn conclude(report: &mut MaintainReport) {
    let (table, column) = (&report.table, &report.column);
    let warning = match (&report.reach, report.running_out) {
        (Some(_), false) => None,
        (Some(v), true) if report.strategy == Strategy::List => Some(format!(
            "the newest partition of {table} is for {column} = {v}, which already holds rows: no empty partition is left for the next value; check why partitions could not be created"
        )),
        (Some(u), true) => Some(format!(
            "the newest partition of {table} ends at {u}, within one period: rows beyond it will be refused; check why partitions could not be created"
        )),
        (None, _) => Some(format!("{table} has no {} partition", report.strategy.as_str())),
    };
    if let Some(w) = warning {
        report.warnings.push(w);
        report.running_out = true;
        report.exit_code = exit::RUNNING_OUT;
    }
}

struct Limits {
    lock_timeout_ms: u64,
    statement_timeout_ms: u64,
}

impl Limits {
    /// Both limits, for the start of a transaction's message.
    fn set_local(&self) -> String {
        tx::wire(&[
            tx::set_local_lock_timeout(self.lock_timeout_ms),
            tx::set_local_statement_timeout(self.statement_timeout_ms),
        ])
    }
}

async fn target(client: &Client, plan: &PlanFile) -> Result<Target> {
    let table = &plan.table;
    let Some(oid) = catalog::relation_oid(client, table).await? else {
        return Err(plan
            .key_error("table", &format!("names {table}, which does not exist"))
            .into());
    };
    let row = client
        .query_one(
            "SELECT c.relkind::text, \
                    (SELECT a.attname::text FROM pg_partitioned_table p JOIN pg_attribute a \
                       ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
                     WHERE p.partrelid = c.oid AND p.partnatts = 1), \
                    (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped), \
                    EXISTS (SELECT 1 FROM pg_partitioned_table p WHERE p.partrelid = c.oid AND p.partdefid <> 0), \
                    (SELECT p.partstrat::text FROM pg_partitioned_table p WHERE p.partrelid = c.oid) \
             FROM pg_class c WHERE c.oid = $1",
            &[&oid, &plan.spec.partition.column],
        )
        .await?;
    let relkind: String = row.get(0);
    let key: Option<String> = row.get(1);
    if relkind != "p" {
        return Err(Refusal::new(format!("{table} is not partitioned; `migrate apply` partitions it")).into());
    }
    let column = Ident::new(plan.spec.partition.column.clone());
    let strategy = match row.get::<_, Option<String>>(4).as_deref() {
        Some("l") => Strategy::List,
        Some("h") => Strategy::Hash,
        _ => Strategy::Range,
    };
    let named = Strategy::from(plan.spec.partition.by);
    if key.as_deref() != Some(column.as_str()) || strategy != named {
        return Err(Refusal::new(format!(
            "{table} is not partitioned by {} on the plan's column {column}, as the plan says",
            named.as_str()
        ))
        .into());
    }
    let type_name: Option<String> = row.get(2);
    let type_name = type_name.unwrap_or_default();
    let kind = if strategy == Strategy::Hash {
        Some(KeyKind::Integer)
    } else {
        KeyKind::from_type_name(&type_name)
    };
    if strategy == Strategy::List && kind != Some(KeyKind::Integer) {
        return Err(Refusal::new(format!(
            "the list key {column} of {table} has the type {type_name}; maintain handles integer list keys"
        ))
        .into());
    }
    let kind = kind.ok_or_else(|| {
        Refusal::new(format!(
            "the key {column} of {table} has the unsupported type {type_name}"
        ))
    })?;
    Ok(Target {
        table: table.clone(),
        column,
        kind,
        strategy,
        default_partition: row.get(3),
    })
}

/// The partitions the plan wants from the current period (or the highest
/// integer key) on.
async fn wanted(client: &Client, plan: &PlanFile, t: &Target, premake: u32) -> Result<Vec<bounds::Partition>> {
    let spec = &plan.spec.partition;
    let tz: chrono_tz::Tz = spec
        .time_zone
        .parse()
        .map_err(|_| plan.key_error("partition.time_zone", "is not a known time zone"))?;
    let now: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let anchor = match t.kind {
        KeyKind::Integer => {
            let max: Option<i64> = client
                .query_one(&format!("SELECT max({})::int8 FROM {}", t.column, t.table), &[])
                .await?
                .get(0);
            KeyValue::Int(max.unwrap_or(0))
        }
        KeyKind::TimestampTz => KeyValue::Instant(now),
        KeyKind::Timestamp => KeyValue::Local(now.with_timezone(&tz).naive_local()),
        KeyKind::Date => KeyValue::Day(now.with_timezone(&tz).date_naive()),
    };
    let template = spec
        .naming
        .clone()
        .unwrap_or_else(|| crate::partition::naming::default_template(spec.interval).to_string());
    crate::partition::layout(&LayoutInput {
        kind: t.kind,
        interval: spec.interval,
        step: spec.step.map(|s| s.0),
        tz,
        start: None,
        min: Some(anchor),
        max: Some(anchor),
        now,
        premake,
        template: &template,
        table: t.table.name.as_str(),
    })
    .map_err(|e| plan.key_error("partition", &e).into())
}

fn span_of(p: &bounds::Partition) -> Span {
    Span::Range {
        from: p.from.clone(),
        to: p.to.clone(),
    }
}

fn range_of(kind: KeyKind, p: &bounds::Partition) -> Option<(Bound, Bound)> {
    let tz = chrono_tz::UTC;
    Some((
        Bound::Value(bounds::bound_value(kind, tz, &p.from)?),
        Bound::Value(bounds::bound_value(kind, tz, &p.to)?),
    ))
}

async fn premake(
    client: &Client,
    plan: &PlanFile,
    t: &Target,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    let wanted = wanted(client, plan, t, plan.spec.partition.premake).await?;
    let have = existing::partitions(client, &t.table, t.kind).await?;
    let place = placement(client, t).await?;
    for p in &wanted {
        let Some(range) = range_of(t.kind, p) else { continue };
        if let Some(other) = have
            .iter()
            .find(|e| e.range.as_ref().is_some_and(|r| existing::overlaps(r, &range)))
        {
            if other.name.name.as_str() != p.name {
                report.skipped.push(Skipped::Covered {
                    by: other.name.clone(),
                    span: span_of(p),
                });
            }
            continue;
        }
        let name = t.table.sibling(Ident::new(p.name.clone()));
        let (lo, hi) = (quote_literal(&p.from), quote_literal(&p.to));
        let key = &t.column;
        let sql = premake_sql(
            limits,
            t,
            &place,
            &name,
            &format!("{key} >= {lo} AND {key} < {hi}"),
            &format!("FOR VALUES FROM ({lo}) TO ({hi})"),
        );
        let rels = [t.table.to_string()];
        let res = retrying_tx(client, policy, &format!("creating {name}"), &rels, &sql).await;
        match res {
            Ok(()) => report.premade.push(Premade {
                partition: name,
                span: span_of(p),
            }),
            Err(e) if t.default_partition => report.skipped.push(Skipped::Failed {
                partition: name,
                span: span_of(p),
                error: format!("{e:#}"),
            }),
            Err(e) => return Err(e.context(format!("cannot create the partition {name}"))),
        }
    }
    // How far the partitions reach now without a gap, from the current
    // one: a gap is as bad as an end.
    let have = existing::partitions(client, &t.table, t.kind).await?;
    if let Some(current) = wanted.first().and_then(|p| range_of(t.kind, p)) {
        let mut cover = current.0.clone();
        let mut reached = None;
        loop {
            let next = have
                .iter()
                .filter_map(|e| e.range.as_ref().map(|r| (r, &e.expr)))
                .find(|(r, _)| !existing::less(&cover, &r.0) && existing::less(&cover, &r.1));
            match next {
                Some((r, expr)) => {
                    cover = r.1.clone();
                    reached = Some(expr.clone());
                }
                None => break,
            }
        }
        report.reach = reached
            .as_deref()
            .and_then(|expr| expr.split(" TO (").nth(1))
            .map(|s| s.trim_end_matches(')').trim_matches('\'').to_string());
        // Running out: covered less than one whole period past the current
        // one, whatever premake the plan asks for.
        let ahead = self::wanted(client, plan, t, 1).await?;
        let soon = ahead.get(1).and_then(|p| range_of(t.kind, p)).map(|r| r.1);
        report.running_out = match soon {
            _ if cover == Bound::Max => false,
            Some(s) => existing::less(&cover, &s),
            None => false,
        };
    }
    Ok(())
}

/// Rows that landed in the default partition move into proper partitions,
/// one range at a time. PostgreSQL refuses a partition while the default
/// holds rows of its range, and rows must never be invisible, so each range
/// is one transaction: its rows leave the default for a new table, which is
/// then attached (its CHECK constraint spares that table's scan; the
/// default's scan, under the lock timeout, is the cost of having a
/// default).
async fn drain_default(
    client: &Client,
    plan: &PlanFile,
    t: &Target,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    let have = existing::partitions(client, &t.table, t.kind).await?;
    let Some(default) = have.iter().find(|e| e.default).map(|e| e.name.clone()) else {
        return Ok(());
    };
    let spec = &plan.spec.partition;
    let tz: chrono_tz::Tz = spec
        .time_zone
        .parse()
        .map_err(|_| plan.key_error("partition.time_zone", "is not a known time zone"))?;
    let key = &t.column;
    let (min, max) = existing::min_max(client, &default, key, t.kind).await?;
    let (Some(min), Some(max)) = (min, max) else {
        return Ok(());
    };
    let now: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let template = spec
        .naming
        .clone()
        .unwrap_or_else(|| crate::partition::naming::default_template(spec.interval).to_string());
    let ranges = crate::partition::layout(&LayoutInput {
        kind: t.kind,
        interval: spec.interval,
        step: spec.step.map(|s| s.0),
        tz,
        start: None,
        min: Some(min),
        max: Some(max),
        // Cover from the lowest to the highest key in the default, not up to
        // today: "now" is placed at the lowest key.
        now: match min {
            KeyValue::Instant(i) => i,
            KeyValue::Local(l) => chrono::TimeZone::from_utc_datetime(&chrono::Utc, &l),
            KeyValue::Day(d) => {
                chrono::TimeZone::from_utc_datetime(&chrono::Utc, &d.and_hms_opt(0, 0, 0).expect("midnight"))
            }
            KeyValue::Int(_) => now,
        },
        premake: 0,
        template: &template,
        table: t.table.name.as_str(),
    })
    .map_err(|e| plan.key_error("partition", &e))?;
    let place = placement(client, t).await?;
    let quiet = quiet(client, &t.table, &default).await?;
    for p in ranges {
        let Some(range) = range_of(t.kind, &p) else { continue };
        if have
            .iter()
            .any(|e| e.range.as_ref().is_some_and(|r| existing::overlaps(r, &range)))
        {
            continue;
        }
        let (lo, hi) = (quote_literal(&p.from), quote_literal(&p.to));
        let cond = format!("{key} >= {lo} AND {key} < {hi}");
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM ONLY {default} WHERE {cond}"), &[])
            .await?
            .get(0);
        if rows == 0 {
            continue;
        }
        let name = t.table.sibling(Ident::new(p.name.clone()));
        let sql = drain_sql(
            limits,
            t,
            &default,
            &name,
            &place,
            &cond,
            &format!("FOR VALUES FROM ({lo}) TO ({hi})"),
            &quiet,
        );
        let rels = [t.table.to_string(), default.to_string()];
        drain_tx(
            client,
            policy,
            &format!("moving rows out of {default} into {name}"),
            &rels,
            &sql,
        )
        .await
        .with_context(|| format!("cannot move the rows of [{}, {}) out of {default}", p.from, p.to))?;
        report.drained.push(Drained {
            default: default.clone(),
            partition: name,
            span: span_of(&p),
            rows,
        });
    }
    Ok(())
}

/// Where a new partition goes and whose it is: the parent's tablespace
/// (which `PARTITION OF` would give it) and owner.
struct Placement {
    owner: String,
    tablespace: Option<String>,
}

impl Placement {
    /// A new table shaped as the parent, to be attached: the same columns
    /// with their defaults, generation expressions, storage and
    /// compression, and the parent's CHECK and NOT NULL constraints, which
    /// an attach demands. Indexes, foreign keys and row triggers come with
    /// the attach, as for `PARTITION OF`.
    fn create(&self, parent: &QualifiedName, name: &QualifiedName) -> String {
        format!(
            "CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED \
             INCLUDING STORAGE INCLUDING COMPRESSION){}; ALTER TABLE {name} OWNER TO {};",
            self.tablespace
                .as_deref()
                .map(|t| format!(" TABLESPACE {}", crate::sql::quote_ident(t)))
                .unwrap_or_default(),
            crate::sql::quote_ident(&self.owner),
        )
    }
}

async fn placement(client: &Client, t: &Target) -> Result<Placement> {
    let row = client
        .query_one(
            "SELECT pg_get_userbyid(c.relowner)::text, s.spcname::text FROM pg_class c \
             LEFT JOIN pg_tablespace s ON s.oid = c.reltablespace WHERE c.oid = to_regclass($1)",
            &[&t.table.to_string()],
        )
        .await?;
    Ok(Placement {
        owner: row.get(0),
        tablespace: row.get(1),
    })
}

/// The transaction that premakes the partition `name` (`bound`: its FOR
/// VALUES; `cond`: the same as a condition on the key). `CREATE TABLE …
/// PARTITION OF` takes ACCESS EXCLUSIVE on the parent, so that behind one
/// long reader every reader and writer of the table would wait with it for
/// up to the lock timeout; a table created alone and attached takes only
/// SHARE UPDATE EXCLUSIVE on the parent, which neither reads nor writes
/// conflict with. Its CHECK of the bound spares the attach a scan; it is
/// dropped before the commit, under the lock on the new table the attach
/// holds anyway.
fn premake_sql(
    limits: &Limits,
    t: &Target,
    place: &Placement,
    name: &QualifiedName,
    cond: &str,
    bound: &str,
) -> String {
    let check = Ident::new(format!("{}_bound", name.name.as_str()));
    let key = &t.column;
    let parent = &t.table;
    format!(
        "BEGIN; {limits} {create} \
         ALTER TABLE {name} ADD CONSTRAINT {check} CHECK ({key} IS NOT NULL AND {cond}); \
         ALTER TABLE {parent} ATTACH PARTITION {name} {bound}; \
         ALTER TABLE {name} DROP CONSTRAINT {check}; \
         COMMIT",
        limits = limits.set_local(),
        create = place.create(parent, name),
    )
}

/// The transaction that moves the rows matching `cond` out of the default
/// partition into the new partition `name` (`bound`: its FOR VALUES): the
/// rows move first with no strong lock, under a CHECK that spares the
/// attach its scan of the new table; then the pause and the attach.
#[allow(clippy::too_many_arguments)]
fn drain_sql(
    limits: &Limits,
    t: &Target,
    default: &QualifiedName,
    name: &QualifiedName,
    place: &Placement,
    cond: &str,
    bound: &str,
    quiet: &Quiet,
) -> String {
    let check = Ident::new(format!("{}_drain", name.name.as_str()));
    let key = &t.column;
    let parent = &t.table;
    format!(
        "BEGIN; {limits} {rest} {create} \
         WITH moved AS (DELETE FROM ONLY {default} WHERE {cond} RETURNING *) INSERT INTO {name} SELECT * FROM moved; \
         ALTER TABLE {name} ADD CONSTRAINT {check} CHECK ({key} IS NOT NULL AND {cond}); \
         LOCK TABLE {parent} IN SHARE ROW EXCLUSIVE MODE; \
         WITH moved AS (DELETE FROM ONLY {default} WHERE {cond} RETURNING *) INSERT INTO {name} SELECT * FROM moved; \
         ALTER TABLE {parent} ATTACH PARTITION {name} {bound}; \
         ALTER TABLE {name} DROP CONSTRAINT {check}; {wake} \
         COMMIT",
        limits = limits.set_local(),
        rest = quiet.rest,
        wake = quiet.wake,
        create = place.create(parent, name),
    )
}

/// The default partition's row triggers that fire on DELETE rest while a
/// drain moves its rows (the tool's work, not the application's), and
/// take their states back before the drain commits. Resting them locks
/// the default partition; writers lock the parent before a partition, so
/// the drain takes the parent's lock first (the same order) and writes to
/// the table pause for the whole drain instead of only for its attach.
/// (Before PostgreSQL 15 a trigger cloned to a partition is marked internal,
/// and only a superuser may rest it by name.)
#[derive(Default)]
pub(super) struct Quiet {
    rest: String,
    wake: String,
}

pub(super) async fn quiet(client: &Client, parent: &QualifiedName, default: &QualifiedName) -> Result<Quiet> {
    let rows = client
        .query(
            "SELECT tgname::text, tgenabled::text FROM pg_trigger \
             WHERE tgrelid = to_regclass($1) AND tgtype & 1 = 1 AND tgtype & 8 = 8 \
               AND (NOT tgisinternal OR tgparentid <> 0) \
               AND (tgconstraint = 0 OR (SELECT contype FROM pg_constraint WHERE oid = tgconstraint) = 't') ORDER BY 1",
            &[&default.to_string()],
        )
        .await?;
    let mut q = Quiet::default();
    for r in rows {
        let name = Ident::new(r.get::<_, String>(0));
        let state = match r.get::<_, String>(1).as_str() {
            "D" => continue,
            "R" => "ENABLE REPLICA",
            "A" => "ENABLE ALWAYS",
            _ => "ENABLE",
        };
        if q.rest.is_empty() {
            q.rest = format!("LOCK TABLE {parent} IN SHARE ROW EXCLUSIVE MODE; ");
        }
        q.rest
            .push_str(&format!("ALTER TABLE {default} DISABLE TRIGGER {name}; "));
        q.wake
            .push_str(&format!("ALTER TABLE {default} {state} TRIGGER {name}; "));
    }
    Ok(q)
}

/// Runs one drain transaction. Its rows move out of the default with no
/// strong lock; then writes to the parent pause (SHARE ROW EXCLUSIVE, under
/// the lock timeout) for the rows that arrived meanwhile and the attach:
/// an insert routed to the default before the attach would otherwise fail
/// its partition check after it. Should a row still reach the default
/// (written to it directly), the attach's scan fails (23514) and the
/// transaction is simply run again.
async fn drain_tx(client: &Client, policy: RetryPolicy, what: &str, rels: &[String], sql: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        let r = retrying_tx(client, policy, what, rels, sql).await;
        let raced = r.as_ref().err().is_some_and(|e| {
            e.downcast_ref::<tokio_postgres::Error>()
                .and_then(|e| e.code())
                .is_some_and(|c| *c == tokio_postgres::error::SqlState::CHECK_VIOLATION)
        });
        if raced && tries + 1 < policy.tries {
            tries += 1;
            tracing::info!(
                what,
                tries,
                "a row arrived in the default partition meanwhile; moving again"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(tries))).await;
            continue;
        }
        return r;
    }
}

#[allow(clippy::too_many_arguments)]
async fn retention(
    client: &Client,
    plan: &PlanFile,
    t: &Target,
    keep: u64,
    archive: Option<&ArchiveSpec>,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    let wanted = wanted(client, plan, t, 0).await?;
    let Some(current) = wanted.first().and_then(|p| range_of(t.kind, p)) else {
        return Ok(());
    };
    let have = existing::partitions(client, &t.table, t.kind).await?;
    // The current partition and the keep - 1 before it stay.
    let mut older: Vec<&Existing> = have
        .iter()
        .filter(|e| e.range.as_ref().is_some_and(|r| existing::less(&r.0, &current.0)))
        .collect();
    older.reverse();
    let expired: Vec<&Existing> = older.into_iter().skip(keep.saturating_sub(1) as usize).collect();
    let expired = expired.iter().rev().map(|e| e.name.clone()).collect();
    expire_all(client, t, expired, archive, policy, limits, report).await
}

/// Finishes what an earlier run left half done, then expires `expired`,
/// oldest first.
async fn expire_all(
    client: &Client,
    t: &Target,
    expired: Vec<QualifiedName>,
    archive: Option<&ArchiveSpec>,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    let table_name = t.table.to_string();
    let pending: Vec<String> = client
        .query(
            "SELECT partition_name FROM repartition.expired_partitions WHERE table_name = $1 AND state <> 'dropped' \
               AND NOT (state = 'archived' AND archive LIKE 'schema %') ORDER BY updated_at",
            &[&table_name],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut names: Vec<QualifiedName> = pending.iter().filter_map(|p| QualifiedName::parse(p).ok()).collect();
    for e in expired {
        if !names.contains(&e) {
            names.push(e);
        }
    }
    for name in names {
        expire(client, t, &name, archive, policy, limits, report).await?;
    }
    Ok(())
}

async fn set_state(
    client: &Client,
    t: &Target,
    name: &QualifiedName,
    state: &str,
    archive: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO repartition.expired_partitions (table_name, partition_name, state, archive) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (table_name, partition_name) DO UPDATE SET state = EXCLUDED.state, \
               archive = coalesce(EXCLUDED.archive, repartition.expired_partitions.archive), updated_at = now()",
            &[&t.table.to_string(), &name.to_string(), &state, &archive],
        )
        .await?;
    Ok(())
}

async fn state_of(client: &Client, t: &Target, name: &QualifiedName) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT state FROM repartition.expired_partitions WHERE table_name = $1 AND partition_name = $2",
            &[&t.table.to_string(), &name.to_string()],
        )
        .await?
        .map(|r| r.get(0)))
}

async fn attached(client: &Client, t: &Target, name: &QualifiedName) -> Result<Option<bool>> {
    // Some(pending) while attached, None once detached.
    Ok(client
        .query_opt(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2)",
            &[&name.to_string(), &t.table.to_string()],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Why an expired partition cannot be detached now, if it cannot: a table
/// has one detach pending at a time, and an interrupted `DETACH …
/// CONCURRENTLY` of another partition (not one of this tool's, which it
/// finishes first) holds that place until someone finalizes it.
async fn not_detachable(client: &Client, t: &Target, name: &QualifiedName, pending: bool) -> Result<Option<String>> {
    if pending {
        return Ok(None);
    }
    let other: Option<QualifiedName> = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.inhparent = to_regclass($1) AND i.inhdetachpending AND i.inhrelid <> to_regclass($2) LIMIT 1",
            &[&t.table.to_string(), &name.to_string()],
        )
        .await?
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)));
    Ok(other.map(|o| {
        format!(
            "the partition {o} is pending detach (an interrupted DETACH ... CONCURRENTLY); finish it with ALTER TABLE {} DETACH PARTITION {o} FINALIZE",
            t.table
        )
    }))
}

#[allow(clippy::too_many_arguments)]
async fn expire(
    client: &Client,
    t: &Target,
    name: &QualifiedName,
    archive: Option<&ArchiveSpec>,
    policy: RetryPolicy,
    limits: &Limits,
    report: &mut MaintainReport,
) -> Result<()> {
    if catalog::relation_oid(client, name).await?.is_none() {
        set_state(client, t, name, "dropped", None).await?;
        return Ok(());
    }
    let rels = [t.table.to_string(), name.to_string()];
    // 1. Detach: the only step that touches the parent, with its own short
    //    lock; CONCURRENTLY takes none that blocks the application.
    if let Some(pending) = attached(client, t, name).await? {
        if let Some(why) = not_detachable(client, t, name, pending).await? {
            report
                .warnings
                .push(format!("kept the expired partition {name}: {why}"));
            report.skipped.push(Skipped::Kept {
                partition: name.clone(),
                why,
            });
            return Ok(());
        }
        set_state(client, t, name, "detaching", None).await?;
        let what = format!("detaching {name}");
        let mut pending = Some(pending);
        let detached = retrying(client, policy, &what, &rels, || {
            let known = pending.take();
            async move {
                // A concurrent detach whose wait for older snapshots ran
                // into the lock timeout stays pending: the next try
                // finalizes it.
                let pending = match known {
                    Some(p) => p,
                    None => attached(client, t, name).await?.unwrap_or(false),
                };
                let sql = if pending {
                    format!("ALTER TABLE {} DETACH PARTITION {name} FINALIZE", t.table)
                } else if !t.default_partition {
                    format!("ALTER TABLE {} DETACH PARTITION {name} CONCURRENTLY", t.table)
                } else {
                    // DETACH ... CONCURRENTLY is refused while a default
                    // partition exists: a plain detach, under the lock timeout.
                    format!(
                        "BEGIN; {} ALTER TABLE {} DETACH PARTITION {name}; COMMIT",
                        limits.set_local(),
                        t.table
                    )
                };
                client
                    .batch_execute(&tx::set_lock_timeout(limits.lock_timeout_ms).sql)
                    .await?;
                let r = client.batch_execute(&sql).await;
                if r.is_err() && sql.starts_with("BEGIN") {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                let _ = client.batch_execute("RESET lock_timeout").await;
                r.map_err(anyhow::Error::from)
            }
        })
        .await;
        // Rows of another table still reference the partition: the detach
        // is refused whole (nothing is left pending), and the partition
        // stays until they are gone.
        if let Err(e) = &detached {
            if let Some(db) = crate::db::retry::pg_error(e)
                .filter(|e| e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION))
            {
                let why = format!(
                    "{} (rows of other tables still reference it)",
                    crate::db::retry::message(db)
                );
                client
                    .execute(
                        "DELETE FROM repartition.expired_partitions WHERE table_name = $1 AND partition_name = $2 AND state = 'detaching'",
                        &[&t.table.to_string(), &name.to_string()],
                    )
                    .await?;
                report
                    .warnings
                    .push(format!("kept the expired partition {name}: {why}"));
                report.skipped.push(Skipped::Kept {
                    partition: name.clone(),
                    why,
                });
                return Ok(());
            }
        }
        detached.with_context(|| format!("cannot detach {name}"))?;
        crate::failpoint::hit("maintain:after-detach");
        set_state(client, t, name, "detached", None).await?;
        report.expired.push(Expired {
            partition: name.clone(),
            step: ExpiryStep::Detached,
        });
    }
    // 2. Archive, away from the parent.
    let state = state_of(client, t, name).await?.unwrap_or_default();
    match archive {
        Some(ArchiveSpec {
            schema: Some(schema), ..
        }) if state != "archived" => {
            let schema_q = crate::sql::quote_ident(schema);
            client
                .batch_execute(&format!(
                    "BEGIN; {} CREATE SCHEMA IF NOT EXISTS {schema_q}; ALTER TABLE {name} SET SCHEMA {schema_q}; COMMIT",
                    limits.set_local()
                ))
                .await
                .with_context(|| format!("cannot move {name} into the schema {schema}"))?;
            set_state(client, t, name, "archived", Some(&format!("schema {schema}"))).await?;
            report.expired.push(Expired {
                partition: name.clone(),
                step: ExpiryStep::ArchivedToSchema { schema: schema.clone() },
            });
            return Ok(());
        }
        Some(ArchiveSpec {
            directory: Some(dir), ..
        }) if state != "archived" => {
            let path =
                std::path::Path::new(dir).join(format!("{}.{}.csv.gz", name.schema.as_str(), name.name.as_str()));
            let rows = copy_out(client, name, &path).await?;
            crate::failpoint::hit("maintain:after-archive");
            set_state(client, t, name, "archived", Some(&path.display().to_string())).await?;
            report.expired.push(Expired {
                partition: name.clone(),
                step: ExpiryStep::ArchivedToFile { path, rows },
            });
        }
        _ => {}
    }
    // 3. Drop. A foreign key the partition carries goes first, each alone:
    //    dropping it locks the referenced table (ACCESS EXCLUSIVE), which
    //    the application writes, so that lock is held for one short
    //    statement rather than for the whole drop, and under a quarter of
    //    the lock timeout: behind a long reader of that table its writers
    //    queue behind the waiting lock for that long at most, each try.
    let short = Limits {
        lock_timeout_ms: (limits.lock_timeout_ms / 4).max(10),
        statement_timeout_ms: limits.statement_timeout_ms,
    };
    let fks = client
        .query(
            "SELECT c.conname::text, c.confrelid::regclass::text FROM pg_constraint c \
             WHERE c.conrelid = to_regclass($1) AND c.contype = 'f' ORDER BY 1",
            &[&name.to_string()],
        )
        .await?;
    for fk in fks {
        let (con, referenced): (String, String) = (fk.get(0), fk.get(1));
        let con = Ident::new(con);
        retrying_tx(
            client,
            policy,
            &format!("dropping the foreign key {con} of {name}"),
            &[name.to_string(), referenced],
            &format!(
                "BEGIN; {} ALTER TABLE {name} DROP CONSTRAINT {con}; COMMIT",
                short.set_local()
            ),
        )
        .await
        .with_context(|| format!("cannot drop the foreign key {con} of {name}"))?;
    }
    retrying_tx(
        client,
        policy,
        &format!("dropping {name}"),
        &[name.to_string()],
        &format!("BEGIN; {} DROP TABLE {name}; COMMIT", limits.set_local()),
    )
    .await
    .with_context(|| format!("cannot drop {name}"))?;
    set_state(client, t, name, "dropped", None).await?;
    report.expired.push(Expired {
        partition: name.clone(),
        step: ExpiryStep::Dropped,
    });
    Ok(())
}

/// COPY a table to a gzip file, written beside its final name and renamed
/// once complete, so a file that exists is whole.
async fn copy_out(client: &Client, rel: &QualifiedName, path: &std::path::Path) -> Result<u64> {
    use futures_util::StreamExt;
    std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))
        .with_context(|| format!("cannot create the archive directory for {}", path.display()))?;
    let tmp = path.with_extension("gz.partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::default());
    let stream = client
        .copy_out(&format!("COPY {rel} TO STDOUT WITH (FORMAT csv, HEADER)"))
        .await
        .with_context(|| format!("cannot read {rel}"))?;
    futures_util::pin_mut!(stream);
    let mut lines = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        gz.write_all(&chunk)?;
    }
    let file = gz
        .finish()?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot flush {}: {e}", tmp.display()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(lines.saturating_sub(1))
}
