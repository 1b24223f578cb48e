//! The batch loop of the move phase, of the sweeps, of the sync method's
//! backfill and of an abort's move back. [`sql`] has the statements and
//! why they are safe.

pub mod sql;

use self::sql::BatchSql;
use crate::blueprint::Blueprint;
use crate::control::{self, MigrationRow};
use crate::db::retry::{is_contention, pg_error, Retry, RetryPolicy};
use crate::exec::Context;
use crate::plan_file::GENTLE_REST_PERCENT;
use crate::progress::MoveProgress;
use crate::sql::QualifiedName;
use anyhow::{Context as _, Result};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Statement as Prepared};

/// Sweep passes after the main pass, at most; what is left then moves at
/// the swap.
const MAX_SWEEPS: i32 = 4;
/// The widest batch in pages, for stretches of empty pages.
const MAX_PAGES: i64 = 65_536;

pub enum Pass {
    Complete,
    Stopped,
}

pub struct Mover<'a> {
    ctx: &'a Context,
    client: &'a mut Client,
    bp: &'a Blueprint,
    id: i64,
    cursor: i64,
    sweeps: i32,
    rows_moved: i64,
    pages: i64,
    rate: Rate,
    /// The plan's batch size and pause, or the operator's (`migrate set`).
    batch_rows: u64,
    pause_ms: u64,
    /// The relation batches read, for the wraparound check.
    source: QualifiedName,
    /// The operator set the batch size: auto-tuning stays out of the way.
    operator_size: bool,
    /// The worker that records the cursor and reports progress; the others
    /// of a parallel pass only move.
    primary: bool,
    /// Totals of a parallel pass, for the primary's progress.
    shared: Option<Arc<Shared>>,
    /// How long the last batch took, for the gentle mode's rest.
    last_took: Duration,
    /// `control::CONTROLS`, prepared on this mover's connection: read
    /// after every batch, so it is parsed once.
    controls: Prepared,
    /// When the throttle conditions were last checked.
    throttle_checked: Option<Instant>,
    /// The control row this mover works for, for the hooks.
    row: &'a MigrationRow,
    /// The application's statements, watched while the routing view
    /// stands, and when they were last looked at.
    watch: Option<(crate::preflight::Watch, Option<Instant>)>,
    /// Told once the main pass is nine tenths through, so that work which
    /// needs the rows almost all in (the statistics) overlaps its end.
    near_end: Option<tokio::sync::oneshot::Sender<()>>,
    /// The page a one-worker pass has reached, for work that overlaps it
    /// (the sync method's index builds of the partitions it has passed).
    reached: Option<Arc<AtomicI64>>,
    /// The latency budget's probe and feedback (the primary only; the
    /// other workers take its pace from `Shared`).
    budget: Option<Budget>,
    /// This worker's number in a parallel pass, the primary's 0.
    worker: i64,
    /// The latency probe's count of batches in flight, which every worker
    /// keeps around its batches.
    in_flight: Option<Arc<AtomicI64>>,
}

/// The latency budget while batches run.
struct Budget {
    probe: crate::latency::Probe,
    ctl: crate::latency::Controller,
    adjusted: Instant,
}

/// The throttle conditions read the statistics views, which costs more
/// than a short batch's bookkeeping should: checked at most this often.
const THROTTLE_EVERY: Duration = Duration::from_millis(500);

/// How often the application's statements are looked at while the view
/// stands.
const WATCH_EVERY: Duration = Duration::from_secs(2);

async fn prepare_controls(client: &Client) -> Result<Prepared> {
    client
        .prepare(control::CONTROLS)
        .await
        .context("cannot prepare the controls query")
}

/// Rows and pages done by all workers of a parallel pass.
#[derive(Default)]
struct Shared {
    rows: AtomicI64,
    pages: AtomicI64,
    /// The latency budget's pace, set by the primary: the batch size in
    /// rows and the rest after each batch.
    budget_rows: AtomicI64,
    budget_rest_ms: AtomicI64,
    /// How many workers run batches now (the others wait between two),
    /// while the primary's range lasts; 0 means all.
    budget_active: AtomicI64,
    /// The primary's range is done: no worker waits any more.
    primary_done: std::sync::atomic::AtomicBool,
    /// A throttle condition holds. The primary alone reads the conditions,
    /// for every worker; the others wait between two batches while it is
    /// set, and the primary records the wait once they all do, so that a
    /// run shown as throttled moves nothing.
    throttled: std::sync::atomic::AtomicBool,
    /// The other workers still on their ranges, and those of them held.
    running: Arc<AtomicI64>,
    holding: Arc<AtomicI64>,
}

/// Which statement a route's batches run.
#[derive(Clone, Copy)]
enum RouteKind {
    /// Move: DELETE from the original, INSERT into the partitioned table.
    Move,
    /// Sync: copy the original's rows into the partitioned table.
    Backfill,
}

/// A parallel pass gives each worker at least this many batches' pages.
const MIN_BATCHES_PER_WORKER: i64 = 4;

/// A direction of movement: its statements, prepared once.
struct Route {
    from: QualifiedName,
    direction: &'static str,
    limits: String,
    locks: Vec<Prepared>,
    mv: Prepared,
    /// `control::RECORD_BATCH`, prepared on this route's connection.
    record: Prepared,
}

impl<'a> Mover<'a> {
    /// A mover whose batches read `source` (for the first batch size).
    pub async fn new(
        ctx: &'a Context,
        client: &'a mut Client,
        m: &'a MigrationRow,
        source: &QualifiedName,
    ) -> Result<Mover<'a>> {
        let bp = &m.blueprint;
        // A tuned size carries over from the batches before (an earlier
        // pass, a run that crashed), rather than starting over.
        let planned = bp.settings.batch_rows;
        let batch_rows = match bp.settings.target_ms {
            Some(_) => control::chosen_batch_rows(client, m.id)
                .await?
                .filter(|n| *n > 0)
                .map_or(planned, |n| (n as u64).clamp((planned / 10).max(1), planned * 10)),
            None => planned,
        };
        let rows_per_page = rows_per_page(client, source).await?.max(1.0);
        let controls = prepare_controls(client).await?;
        let pages = ((batch_rows as f64 / rows_per_page).ceil() as i64).clamp(1, MAX_PAGES);
        Ok(Mover {
            ctx,
            client,
            bp,
            id: m.id,
            cursor: m.cursor_block,
            sweeps: m.sweeps,
            rows_moved: m.rows_moved,
            pages,
            rate: Rate::default(),
            batch_rows,
            pause_ms: bp.settings.pause_ms,
            source: source.clone(),
            operator_size: false,
            primary: true,
            shared: None,
            last_took: Duration::ZERO,
            controls,
            throttle_checked: None,
            row: m,
            watch: None,
            near_end: None,
            reached: None,
            budget: None,
            worker: 0,
            in_flight: None,
        })
    }

    async fn route_of(&self, kind: RouteKind) -> Result<Route> {
        match kind {
            RouteKind::Move => self.route(&self.bp.old, BatchSql::forward(self.bp), "forward").await,
            RouteKind::Backfill => self.route(&self.bp.table, BatchSql::backfill(self.bp), "forward").await,
        }
    }

    /// Batches over pages [self.cursor, end); returns the rows moved.
    async fn pass(&mut self, route: &Route, end: i64) -> Result<(Pass, i64)> {
        let mut moved = 0;
        while self.cursor < end {
            if self.ctx.stopping() {
                return Ok((Pass::Stopped, moved));
            }
            let to = (self.cursor + self.pages).min(end);
            let rows = self.batch(route, self.cursor, to).await?;
            moved += rows;
            self.rows_moved += rows;
            self.after_batch(rows, to, end).await?;
        }
        Ok((Pass::Complete, moved))
    }

    /// The pages [self.cursor, end) split among the plan's workers, each on
    /// its own connection with its own contiguous range; this mover takes
    /// the first range and records the cursor, so that a crash resumes from
    /// the start of the range not yet finished (the others' pages are then
    /// passed again, finding nothing or what moved behind them, like a
    /// sweep). Returns the rows moved.
    async fn parallel(&mut self, kind: RouteKind, route: &Route, end: i64) -> Result<(Pass, i64)> {
        let workers = i64::from(self.bp.settings.workers.max(1));
        let span = end - self.cursor;
        if workers < 2 || span < workers * self.pages * MIN_BATCHES_PER_WORKER {
            return self.pass(route, end).await;
        }
        let chunk = span / workers;
        let shared = Arc::new(Shared::default());
        shared.pages.store(self.cursor, Ordering::Relaxed);
        shared.rows.store(self.rows_moved, Ordering::Relaxed);
        shared.budget_rows.store(self.batch_rows as i64, Ordering::Relaxed);
        if let Some(b) = &self.budget {
            shared.budget_rest_ms.store(b.ctl.rest_ms as i64, Ordering::Relaxed);
            shared.budget_active.store(i64::from(b.ctl.active), Ordering::Relaxed);
        }
        self.shared = Some(shared.clone());
        let start = self.cursor;
        let mut clients = Vec::new();
        for w in 1..workers {
            let mut cfg = self.ctx.cfg.clone();
            cfg.application_name(format!("migrate {} (worker {})", self.bp.method.as_str(), w + 1));
            clients.push(crate::db::connect(&cfg).await?);
        }
        let mut helpers = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            let controls = prepare_controls(client).await?;
            let w = i as i64 + 1;
            let from = start + w * chunk;
            let to = if w == workers - 1 { end } else { from + chunk };
            helpers.push(
                Mover {
                    ctx: self.ctx,
                    client,
                    bp: self.bp,
                    id: self.id,
                    cursor: from,
                    sweeps: self.sweeps,
                    rows_moved: 0,
                    pages: self.pages,
                    rate: Rate::default(),
                    batch_rows: self.batch_rows,
                    pause_ms: self.pause_ms,
                    source: self.source.clone(),
                    operator_size: self.operator_size,
                    primary: false,
                    shared: Some(shared.clone()),
                    last_took: Duration::ZERO,
                    controls,
                    throttle_checked: None,
                    row: self.row,
                    watch: None,
                    near_end: None,
                    reached: None,
                    budget: None,
                    worker: w,
                    in_flight: self.in_flight.clone(),
                }
                .into_range(kind, to, Counted::new(shared.running.clone())),
            );
        }
        let first_end = start + chunk;
        let primary = async {
            let r = self.pass(route, first_end).await;
            shared.primary_done.store(true, Ordering::Relaxed);
            // The others' ranges may outlast this one: the latency budget
            // and the throttle conditions are still read here for them.
            if r.is_ok() {
                while shared.running.load(Ordering::Relaxed) > 0 && !self.ctx.stopping() {
                    self.steer().await?;
                    self.throttle().await?;
                    tokio::time::sleep(THROTTLE_EVERY).await;
                }
            }
            r
        };
        let (mine, others) = tokio::join!(primary, futures_util::future::try_join_all(helpers));
        self.shared = None;
        let (pass, mut moved) = mine?;
        let mut stopped = matches!(pass, Pass::Stopped);
        for (p, m) in others? {
            // This mover's own rows are counted by its pass already.
            self.rows_moved += m;
            moved += m;
            stopped |= matches!(p, Pass::Stopped);
        }
        if stopped {
            return Ok((Pass::Stopped, moved));
        }
        // Every range is done: the cursor jumps to the end.
        control::set_cursor(self.client, self.id, end).await?;
        self.cursor = end;
        Ok((Pass::Complete, moved))
    }

    /// A helper worker's whole range, counted in `running` until it ends.
    async fn into_range(mut self, kind: RouteKind, end: i64, _running: Counted) -> Result<(Pass, i64)> {
        let route = self.route_of(kind).await?;
        self.hold().await;
        self.parked().await;
        self.pass(&route, end).await
    }

    /// A helper worker waits here while the primary finds a throttle
    /// condition true.
    async fn hold(&self) {
        let Some(sh) = self.shared.as_ref().filter(|_| !self.primary) else {
            return;
        };
        if !sh.throttled.load(Ordering::Relaxed) {
            return;
        }
        let _held = Counted::new(sh.holding.clone());
        while sh.throttled.load(Ordering::Relaxed) && !self.ctx.stopping() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A route whose batches send `b`'s statements: its settings in one
    /// message, the rest prepared (parameters: first page, page after the
    /// last).
    async fn route(&self, from: &QualifiedName, b: BatchSql, direction: &'static str) -> Result<Route> {
        let mut begin = b.settings.clone();
        if wal_compression(self.client).await {
            begin.push(b.wal_compression.clone());
        }
        let limits = crate::exec::tx::wire(&begin);
        let mut locks = Vec::new();
        for st in &b.parent_locks {
            locks.push(
                self.client
                    .prepare(&st.sql)
                    .await
                    .context("cannot prepare the parent-lock statement")?,
            );
        }
        let mv = self
            .client
            .prepare(&b.statement.sql)
            .await
            .context("cannot prepare the move statement")?;
        let record = self
            .client
            .prepare(&b.record.sql)
            .await
            .context("cannot prepare the batch record")?;
        Ok(Route {
            from: from.clone(),
            direction,
            limits,
            locks,
            mv,
            record,
        })
    }

    /// Records the row estimate progress and ETA are measured against.
    async fn estimate(&self, source: &QualifiedName) -> Result<()> {
        if self.cursor == 0 && self.sweeps == 0 && self.rows_moved == 0 {
            if estimated_rows(self.client, source).await? < 0 {
                // Never analyzed: a sample gives progress and ETA a basis.
                self.client.batch_execute(&sql::estimate_statement(source).sql).await?;
            }
            let estimate = estimated_rows(self.client, source).await?.max(0);
            control::set_rows_total(self.client, self.id, estimate).await?;
        }
        Ok(())
    }

    /// Sync: one pass copying the original's pages into the partitioned
    /// table. Rows written meanwhile are the mirror's business, so no sweep
    /// follows.
    pub async fn run_backfill(&mut self) -> Result<Pass> {
        let source = self.bp.table.clone();
        let route = self.route_of(RouteKind::Backfill).await?;
        self.estimate(&source).await?;
        self.start_budget().await?;
        // Pages added after the backfill started hold only rows the mirror
        // has written already; the pass ends at the size it started with.
        let end = pages_of(self.client, &source).await?;
        Ok(self.parallel(RouteKind::Backfill, &route, end).await?.0)
    }

    /// With a latency budget: the probe starts, and the baseline is read
    /// back from the control table (learned there before the first step).
    async fn start_budget(&mut self) -> Result<()> {
        let Some(budget) = self.bp.settings.throttle.latency else {
            return Ok(());
        };
        if self.budget.is_some() {
            return Ok(());
        }
        let probe = crate::latency::Probe::start(&self.ctx.cfg, self.bp.method.as_str(), self.id).await?;
        let row = self
            .client
            .query_one(
                "SELECT latency_baseline_ms, latency_app_ms FROM repartition.migrations WHERE id = $1",
                &[&self.id],
            )
            .await?;
        let recorded: Option<f64> = row.get(0);
        // Learned by `apply` before the first step; here only for a run
        // stopped while it learned.
        let (baseline, app_ms) = match recorded {
            Some(ms) => (ms, row.get(1)),
            None => match crate::latency::learn_baseline(self.ctx, &*self.client, self.id, budget, &probe).await? {
                Some(learned) => learned,
                None => return Ok(()),
            },
        };
        let ctl = crate::latency::Controller::new(budget, baseline, app_ms, self.bp.settings.workers);
        tracing::info!(
            baseline_ms = baseline,
            app_ms,
            ceiling_ms = ctl.ceiling_ms(),
            "latency budget: commits of the application's kind are measured beside the batches"
        );
        self.in_flight = Some(probe.in_flight.clone());
        self.budget = Some(Budget {
            probe,
            ctl,
            adjusted: Instant::now(),
        });
        Ok(())
    }

    /// One step of the latency budget's feedback, at most every
    /// `latency::WINDOW`: the batch size and the rest from the latest
    /// measurement, recorded for `status`.
    async fn steer(&mut self) -> Result<()> {
        let Some(b) = &mut self.budget else {
            return Ok(());
        };
        if b.adjusted.elapsed() < crate::latency::WINDOW {
            return Ok(());
        }
        let Some(ms) = b.probe.tail(crate::latency::WINDOW) else {
            return Ok(());
        };
        b.adjusted = Instant::now();
        let before = b.ctl.describe();
        b.ctl.observe(ms, b.probe.tail_between_batches(crate::latency::WINDOW));
        let (scale, rest, active) = (b.ctl.scale, b.ctl.rest_ms, b.ctl.active);
        let doing = b.ctl.describe();
        let app = b
            .probe
            .application_over(crate::latency::APPLICATION_WINDOW)
            .map(|a| a.ms);
        control::set_latency(&*self.client, self.id, ms, app, &doing).await?;
        // Each change of course is kept, so that the pace's history can be
        // read after the run beside the application's own figures.
        if doing != before {
            let app = app
                .map(|a| format!(" ({})", crate::latency::application_phrase(a)))
                .unwrap_or_default();
            control::event(
                &*self.client,
                self.id,
                "latency",
                &format!("{ms:.2} ms measured{app}: {doing}"),
            )
            .await?;
        }
        if !self.operator_size {
            self.batch_rows = ((self.bp.settings.batch_rows as f64 * scale).round() as u64).max(1);
        }
        if let Some(sh) = &self.shared {
            sh.budget_rows.store(self.batch_rows as i64, Ordering::Relaxed);
            sh.budget_rest_ms.store(rest as i64, Ordering::Relaxed);
            sh.budget_active.store(i64::from(active), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The rest after a batch that the latency budget asks for.
    fn budget_rest(&self) -> Duration {
        if self.bp.settings.throttle.latency.is_none() {
            return Duration::ZERO;
        }
        let ms = match (&self.budget, &self.shared) {
            (Some(b), _) => b.ctl.rest_ms as i64,
            (None, Some(sh)) => sh.budget_rest_ms.load(Ordering::Relaxed),
            (None, None) => 0,
        };
        Duration::from_millis(ms.max(0) as u64)
    }

    /// `tx` is told once the main pass is nine tenths through its pages;
    /// dropped unsent if the pass ends (or was past that) before.
    pub fn tell_near_end(&mut self, tx: tokio::sync::oneshot::Sender<()>) {
        self.near_end = Some(tx);
    }

    /// The page this pass has reached, kept current after every batch of a
    /// pass with one worker (a parallel pass's workers reach theirs each).
    pub fn reached(&mut self) -> Arc<AtomicI64> {
        self.reached
            .get_or_insert_with(|| Arc::new(AtomicI64::new(self.cursor)))
            .clone()
    }

    /// The main pass and the sweeps, from the recorded cursor.
    pub async fn run_forward(&mut self) -> Result<Pass> {
        let r = self.forward().await;
        self.near_end = None;
        r
    }

    async fn forward(&mut self) -> Result<Pass> {
        self.watch_the_view();
        let route = self.route_of(RouteKind::Move).await?;
        self.start_budget().await?;
        self.estimate(&self.bp.old.clone()).await?;
        // A pass resumed in the middle may have moved rows before the crash:
        // count it as having moved some, so that one more sweep follows.
        let mut moved_this_pass: i64 = i64::from(self.cursor > 0);
        // Where the current sweep ends; a resumed sweep reads to the end.
        let mut sweep_end: Option<i64> = None;
        loop {
            if self.ctx.stopping() {
                return Ok(Pass::Stopped);
            }
            let size = pages_of(self.client, &self.bp.old).await?;
            let end = sweep_end.map_or(size, |e| e.min(size));
            if self.cursor >= end {
                if self.sweeps == 0 || (moved_this_pass > 0 && self.sweeps < MAX_SWEEPS) {
                    crate::failpoint::hit("move:before-sweep");
                    control::begin_sweep(self.client, self.id).await?;
                    self.sweeps += 1;
                    let (first, after) = self.rows_span(size).await?;
                    if first > 0 {
                        control::set_cursor(self.client, self.id, first).await?;
                    }
                    self.cursor = first;
                    sweep_end = Some(after);
                    moved_this_pass = 0;
                    continue;
                }
                return Ok(Pass::Complete);
            }
            // The main pass may be shared among workers; sweeps go alone.
            let (pass, rows) = if self.sweeps == 0 {
                self.parallel(RouteKind::Move, &route, end).await?
            } else {
                self.pass(&route, end).await?
            };
            if let Pass::Stopped = pass {
                return Ok(Pass::Stopped);
            }
            moved_this_pass += rows;
        }
    }

    /// One pass over the original before the swap, for rows updated behind
    /// the cursor since the move phase ended.
    pub async fn sweep_once(&mut self) -> Result<Pass> {
        self.watch_the_view();
        let route = self.route_of(RouteKind::Move).await?;
        self.start_budget().await?;
        let size = pages_of(self.client, &self.bp.old).await?;
        let (first, after) = self.rows_span(size).await?;
        self.cursor = first;
        self.sweeps = self.sweeps.max(1);
        loop {
            if self.ctx.stopping() {
                return Ok(Pass::Stopped);
            }
            let end = pages_of(self.client, &self.bp.old).await?.min(after);
            if self.cursor >= end {
                return Ok(Pass::Complete);
            }
            let to = (self.cursor + self.pages).min(end);
            let rows = self.batch(&route, self.cursor, to).await?;
            self.rows_moved += rows;
            self.after_batch(rows, to, end).await?;
        }
    }

    /// The pages a sweep of the original covers, as (first, last + 1): from
    /// the first to the last that hold a row, found through the
    /// row-identity index; (0, 0) when no row is left. VACUUM gives back
    /// only the empty pages after the last row, and none when the
    /// application keeps it from its lock, so the file may still have its
    /// former size. A split's first partition keeps its own rows: all of
    /// its `size` pages.
    async fn rows_span(&self, size: i64) -> Result<(i64, i64)> {
        if self.bp.split.is_some() {
            return Ok((0, size));
        }
        let st = sql::row_pages(self.bp, &self.bp.old);
        self.client.batch_execute(&st[0].sql).await?;
        let row = self.client.query_one(&st[1].sql, &[]).await;
        let _ = self.client.batch_execute(&st[2].sql).await;
        let row = row.context("cannot find the pages of the original that still hold rows")?;
        Ok(match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
            (Some(first), Some(last)) => (first, last + 1),
            _ => (0, 0),
        })
    }

    /// Moves every row of each partition back to the original, from the
    /// abort cursor recorded in the control table.
    pub async fn run_back(&mut self, start_leaf: usize, start_block: i64) -> Result<Pass> {
        let leaves = self.bp.leaves();
        self.rows_moved = 0;
        for (i, leaf) in leaves.iter().enumerate().skip(start_leaf) {
            let route = self.route(leaf, BatchSql::back(self.bp, leaf), "back").await?;
            self.cursor = if i == start_leaf { start_block } else { 0 };
            control::abort_step(self.client, self.id, "moving back", i as i32, self.cursor).await?;
            loop {
                if self.ctx.stopping() {
                    return Ok(Pass::Stopped);
                }
                let end = pages_of(self.client, leaf).await?;
                if self.cursor >= end {
                    break;
                }
                let to = (self.cursor + self.pages).min(end);
                let rows = self.batch(&route, self.cursor, to).await?;
                self.rows_moved += rows;
                self.after_batch(rows, to, end).await?;
            }
        }
        Ok(Pass::Complete)
    }

    async fn after_batch(&mut self, rows: i64, to: i64, end: i64) -> Result<()> {
        let pages_done = to - self.cursor;
        self.cursor = to;
        self.rate.add(rows);
        // Aim the next batch at the plan's row count; stretch over empty
        // pages quickly.
        if rows > 0 {
            let per_page = rows as f64 / self.rate.last_pages.max(1) as f64;
            self.pages = ((self.batch_rows as f64 / per_page).ceil() as i64).clamp(1, MAX_PAGES);
        } else {
            self.pages = (self.pages * 2).min(MAX_PAGES);
        }
        let (pages_done, rows_moved, rate) = match &self.shared {
            Some(sh) => {
                let p = sh.pages.fetch_add(pages_done, Ordering::Relaxed) + pages_done;
                let r = sh.rows.fetch_add(rows, Ordering::Relaxed) + rows;
                // Worker ranges start past the primary's: count from its
                // start, and the primary's rate stands for one worker of n.
                (p, r, self.rate.per_sec() * f64::from(self.bp.settings.workers))
            }
            None => {
                if let Some(r) = &self.reached {
                    r.store(to, Ordering::Relaxed);
                }
                (to, self.rows_moved, self.rate.per_sec())
            }
        };
        if self.primary && self.sweeps == 0 && pages_done * 10 >= end * 9 {
            if let Some(tx) = self.near_end.take() {
                let _ = tx.send(());
            }
        }
        if self.primary {
            self.ctx.reporter.progress(MoveProgress {
                pages_done: pages_done.max(0) as u64,
                pages_total: end.max(pages_done) as u64,
                rows_moved: rows_moved.max(0) as u64,
                rows_per_sec: rate,
                sweep: self.sweeps.max(0) as u32,
            });
        }
        self.obey_operator().await?;
        if self.pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.pause_ms)).await;
        }
        if self.bp.settings.gentle {
            // A short rest: the application gets the core and the disk to
            // itself for a while after each batch.
            tokio::time::sleep(self.last_took * GENTLE_REST_PERCENT / 100).await;
        }
        // The latency budget's pace: the primary's own, the others' from it.
        if self.bp.settings.throttle.latency.is_some() && self.budget.is_none() && !self.operator_size {
            if let Some(sh) = &self.shared {
                let n = sh.budget_rows.load(Ordering::Relaxed);
                if n > 0 {
                    self.batch_rows = n as u64;
                }
            }
        }
        let rest = self.budget_rest();
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
        self.parked().await;
        Ok(())
    }

    /// A worker the budget has stopped waits here, between two batches
    /// (or before its first), until it may run or the primary's range is
    /// done.
    async fn parked(&self) {
        while let Some(sh) = &self.shared {
            let active = sh.budget_active.load(Ordering::Relaxed);
            if self.worker == 0
                || active == 0
                || self.worker < active
                || sh.primary_done.load(Ordering::Relaxed)
                || self.ctx.stopping()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Moves the batch size toward the plan's target batch duration,
    /// within a tenth and ten times the plan's size, smoothly.
    fn tune(&mut self, rows: i64, took: chrono::Duration) {
        let (Some(target), false) = (self.bp.settings.target_ms, self.operator_size) else {
            return;
        };
        // A latency budget sets the size itself.
        if self.bp.settings.throttle.latency.is_some() {
            return;
        }
        let ms = took.num_milliseconds().max(1) as f64;
        if rows <= 0 {
            return;
        }
        let next = tuned(self.batch_rows, self.bp.settings.batch_rows, target, ms);
        if next.abs_diff(self.batch_rows) * 5 > self.batch_rows {
            tracing::info!(
                batch_rows = next,
                batch_ms = ms,
                target_ms = target,
                "batch size tuned toward the target duration"
            );
        }
        self.batch_rows = next;
    }

    /// From now on the application's statements through the routing view
    /// are watched (move and split, moving forward).
    fn watch_the_view(&mut self) {
        if self.watch.is_none() && (self.bp.method == crate::plan_file::Method::Move || self.bp.split.is_some()) {
            self.watch = Some((crate::preflight::Watch::default(), None));
        }
    }

    /// A statement of the application's that the view does not serve as
    /// the table did pauses the run, unless the plan accepts it: told in
    /// the log, in `status` and to the failure hook, so that the operator
    /// chooses between `migrate continue` and `migrate abort`.
    async fn watch_statements(&mut self) -> Result<()> {
        let Some((watch, at)) = &mut self.watch else {
            return Ok(());
        };
        if !self.primary || at.is_some_and(|t| t.elapsed() < WATCH_EVERY) {
            return Ok(());
        }
        *at = Some(Instant::now());
        let spotted = match watch.look(self.client, self.bp).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the application's statements could not be looked at");
                return Ok(());
            }
        };
        let mut stop = Vec::new();
        for s in spotted {
            if self.bp.settings.accepted.iter().any(|a| a == s.code) {
                tracing::warn!(statement = %s.line, "the application runs a statement the plan accepts through the view");
            } else {
                stop.push(s.line);
            }
        }
        if stop.is_empty() {
            return Ok(());
        }
        let reason = format!(
            "the application runs statements through the view that it does not serve as the table did: {}",
            stop.join("; ")
        );
        control::pause_by_tool(self.client, self.id, &reason).await?;
        crate::hooks::run(
            self.bp.settings.hooks.on_failure.as_ref(),
            "paused",
            self.row,
            Some(&reason),
        )
        .await;
        Ok(())
    }

    /// Reads the operator's controls: a new batch size or pause, or a
    /// pause of the whole run until `migrate continue`.
    async fn obey_operator(&mut self) -> Result<()> {
        self.watch_statements().await?;
        let mut c = control::controls(self.client, &self.controls, self.id).await?;
        if c.paused {
            // Every worker pauses; the primary tells.
            if self.primary {
                let why = control::paused_reason(self.client, self.id).await?;
                self.ctx.reporter.phase(
                    "paused",
                    &match why {
                        Some(w) => format!("{w}; `migrate continue` goes on, `migrate abort` goes back"),
                        None => "paused by the operator; `migrate continue` resumes".into(),
                    },
                );
            }
            while c.paused && !self.ctx.stopping() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                c = control::controls(self.client, &self.controls, self.id).await?;
            }
            if self.primary {
                self.ctx.reporter.phase("move", "continuing");
            }
        }
        if let Some(n) = c.batch_rows {
            self.operator_size = true;
            if n as u64 != self.batch_rows {
                tracing::info!(batch_rows = n, "batch size set by the operator");
                // From the next batch on, not the one after it.
                let pages = self.pages as f64 * n as f64 / self.batch_rows.max(1) as f64;
                self.pages = (pages.ceil() as i64).clamp(1, MAX_PAGES);
                self.batch_rows = n as u64;
            }
        }
        if let Some(p) = c.pause_ms {
            self.pause_ms = p as u64;
        }
        // Conditions that make the run wait by itself, read by the
        // primary for every worker.
        if !self.primary && self.shared.is_some() {
            self.hold().await;
            return Ok(());
        }
        if self.throttle_checked.is_some_and(|t| t.elapsed() < THROTTLE_EVERY) {
            return Ok(());
        }
        self.throttle_checked = Some(Instant::now());
        self.steer().await?;
        self.throttle().await
    }

    /// Waits while a throttle condition holds, recorded in the control
    /// table and told once every worker has stopped; the others go on
    /// afterwards, whatever happened meanwhile.
    async fn throttle(&mut self) -> Result<()> {
        let r = self.throttled().await;
        if let Some(sh) = &self.shared {
            sh.throttled.store(false, Ordering::Relaxed);
        }
        r
    }

    async fn throttled(&mut self) -> Result<()> {
        let mut waited = false;
        while let Some(why) = crate::throttle::reason(self.client, &self.bp.settings.throttle, &self.source).await? {
            if !waited {
                waited = true;
                if let Some(sh) = &self.shared {
                    sh.throttled.store(true, Ordering::Relaxed);
                    while sh.holding.load(Ordering::Relaxed) < sh.running.load(Ordering::Relaxed)
                        && !self.ctx.stopping()
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                self.ctx.reporter.phase("throttled", &why);
                crate::throttle::record(self.client, self.id, Some(&why)).await?;
            }
            if self.ctx.stopping() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        if waited {
            crate::throttle::record(self.client, self.id, None).await?;
            self.ctx
                .reporter
                .phase("move", "continuing: the throttle condition cleared");
        }
        Ok(())
    }

    /// One batch in one transaction, retried on contention; when the
    /// statement timeout fires, the batch is split.
    async fn batch(&mut self, route: &Route, from: i64, to: i64) -> Result<i64> {
        let id = self.id;
        let chosen = self.batch_rows as i64;
        let advance = self.primary;
        let mut to = to;
        let mut splits = 0;
        let relations = [route.from.to_string()];
        let policy = RetryPolicy::new(self.bp.settings.retries);
        let mut retry = Retry::new(policy, "a move batch", &relations);
        let mut started = chrono::Utc::now();
        loop {
            let _flying = self.in_flight.as_ref().map(|n| Counted::new(n.clone()));
            match one_batch(self.client, route, id, (from, to), (chosen, advance), started).await {
                Ok(rows) => {
                    self.rate.last_pages = to - from;
                    let took = chrono::Utc::now() - started;
                    self.last_took = took.to_std().unwrap_or_default();
                    self.tune(rows, took);
                    return Ok(rows);
                }
                Err(e)
                    if to - from > 1
                        && splits < 8
                        && pg_error(&e).is_some_and(crate::db::retry::is_statement_timeout) =>
                {
                    splits += 1;
                    to = from + (to - from) / 2;
                    self.pages = (to - from).max(1);
                    retry = Retry::new(policy, "a move batch", &relations);
                    started = chrono::Utc::now();
                    tracing::warn!(
                        from,
                        to,
                        "a batch hit the statement timeout; retrying with half the pages"
                    );
                    control::event(
                        &*self.client,
                        id,
                        "batch split",
                        &format!("the statement timeout fired; pages {from} to {to} next"),
                    )
                    .await?;
                }
                Err(e) => retry.failed(self.client, e).await?,
            }
        }
    }
}

/// One more in a shared count until dropped: a batch in flight (for the
/// latency probe), a worker on its range or one held by the throttle.
struct Counted(Arc<AtomicI64>);

impl Counted {
    fn new(n: Arc<AtomicI64>) -> Counted {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One batch's transaction: rolled back by the server when it fails, and
/// by the driver when it is dropped before its commit.
async fn one_batch(
    client: &mut Client,
    route: &Route,
    id: i64,
    (from, to): (i64, i64),
    (chosen, advance_cursor): (i64, bool),
    started: chrono::DateTime<chrono::Utc>,
) -> Result<i64> {
    let from_s = from.to_string();
    let to_s = to.to_string();
    let tx = client.transaction().await?;
    let res: Result<i64> = async {
        tx.batch_execute(&route.limits).await?;
        for l in &route.locks {
            tx.query(l, &[&from_s, &to_s])
                .await
                .context("locking parent rows of a batch")?;
        }
        let rows = tx
            .execute(&route.mv, &[&from_s, &to_s])
            .await
            .context("moving a batch")? as i64;
        let batch = control::BatchRecord {
            direction: route.direction,
            rows,
            from_block: from,
            to_block: to,
            chosen_rows: chosen,
            advance_cursor,
            started_at: started,
        };
        control::record_batch(&tx, &route.record, id, &batch).await?;
        Ok(rows)
    }
    .await;
    match res {
        Ok(rows) => {
            crate::failpoint::hit(&format!("batch-{}:before-commit", route.direction));
            tx.commit().await?;
            crate::failpoint::hit(&format!("batch-{}:after-commit", route.direction));
            Ok(rows)
        }
        Err(e) => {
            if pg_error(&e).is_some_and(is_contention) {
                tracing::debug!(from, to, "batch met a lock held by the application; stepping back");
            }
            Err(e)
        }
    }
}

/// VACUUM so that dead rows and emptied pages at the end go before the
/// sweeps and the swap. Best effort: a lock timeout only makes sweeps slower.
pub async fn vacuum(client: &Client, bp: &Blueprint, rel: &QualifiedName) {
    let started = Instant::now();
    match crate::exec::tx::alone(
        client,
        &bp.settings,
        crate::exec::tx::Wait::Bounded,
        &[sql::vacuum_statement(rel)],
    )
    .await
    {
        Ok(()) => tracing::info!(table = %rel, secs = started.elapsed().as_secs_f64(), "vacuumed"),
        Err(e) => tracing::warn!(table = %rel, error = %format!("{e:#}"), "vacuum did not run; continuing"),
    }
}

/// Whether this session may run `sql::wal_compression_setting`:
/// superusers may, on servers built with lz4 (PostgreSQL 15 and later).
async fn wal_compression(client: &Client) -> bool {
    let ok = client.batch_execute("SET wal_compression = lz4").await.is_ok();
    let _ = client.batch_execute("RESET wal_compression").await;
    ok
}

pub async fn pages_of(client: &Client, rel: &QualifiedName) -> Result<i64> {
    Ok(client.query_one(&sql::pages_statement(rel), &[]).await?.get(0))
}

async fn rows_per_page(client: &Client, rel: &QualifiedName) -> Result<f64> {
    let row = client
        .query_one(
            "SELECT CASE WHEN relpages > 0 AND reltuples > 0 THEN reltuples::float8 / relpages ELSE 50 END \
             FROM pg_class WHERE oid = to_regclass($1)",
            &[&rel.to_string()],
        )
        .await;
    Ok(row.map(|r| r.get(0)).unwrap_or(50.0))
}

async fn estimated_rows(client: &Client, rel: &QualifiedName) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
            &[&rel.to_string()],
        )
        .await?;
    Ok(row.get(0))
}

/// The next batch size after a batch of `current` rows took `took_ms`:
/// halfway toward the size that would have taken `target_ms`, within a
/// tenth and ten times the plan's size.
fn tuned(current: u64, planned: u64, target_ms: u64, took_ms: f64) -> u64 {
    let planned = planned as f64;
    let ideal = (current as f64 * target_ms as f64 / took_ms.max(1.0)).clamp(planned / 10.0, planned * 10.0);
    (current as f64 * 0.5 + ideal * 0.5).round().max(1.0) as u64
}

/// Rows per second over the last batches.
#[derive(Default)]
struct Rate {
    window: std::collections::VecDeque<(Instant, i64)>,
    last_pages: i64,
}

impl Rate {
    fn add(&mut self, rows: i64) {
        self.window.push_back((Instant::now(), rows));
        while self.window.len() > 30 {
            self.window.pop_front();
        }
    }

    fn per_sec(&self) -> f64 {
        match (self.window.front(), self.window.back()) {
            (Some(a), Some(b)) if self.window.len() > 1 => {
                let secs = b.0.duration_since(a.0).as_secs_f64();
                let rows: i64 = self.window.iter().skip(1).map(|(_, r)| r).sum();
                if secs > 0.0 {
                    rows as f64 / secs
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tuned;

    #[test]
    fn batches_tune_halfway_toward_the_target_within_bounds() {
        // Twice as fast as the target: halfway toward twice the size.
        assert_eq!(tuned(5000, 5000, 100, 50.0), 7500);
        // Twice as slow: halfway toward half.
        assert_eq!(tuned(5000, 5000, 100, 200.0), 3750);
        // Repeated fast batches grow past twice the start, and stop at ten times the plan's size.
        let mut n = 5000;
        for _ in 0..3 {
            n = tuned(n, 5000, 100, 10.0);
        }
        assert!(n > 10_000, "{n}");
        for _ in 0..40 {
            n = tuned(n, 5000, 100, 1.0);
        }
        assert_eq!(n, 50_000);
        // And never below a tenth of it (halving the distance, rounded).
        for _ in 0..40 {
            n = tuned(n, 5000, 100, 10_000.0);
        }
        assert!((500..=501).contains(&n), "{n}");
    }
}
