//! The latency budget (`throttle.latency`): how much slower the
//! application may get while rows move. The run measures it itself, learns
//! the baseline before the first step changes anything, and sets the
//! batches' size and the rest after each so that the measurement stays
//! under the budget.
//!
//! What it measures: a probe transaction of its own, on a connection of
//! its own, twenty times a second, that commits as the application's
//! writes do: it updates a row of its own, so its commit waits for the WAL
//! flush the server's `synchronous_commit` asks for. (A transaction that
//! only takes an id writes no WAL before its commit record, and PostgreSQL
//! commits it without a flush: such a probe measured 2.7-4.3 ms while the
//! application's p99 rose to 49 ms.) While rows move, the application's
//! statements wait on WAL in most samples (docs/benchmarks.md), and the
//! probe waits on the same flushes.
//!
//! Beside it, on each tick, the application's own statements in flight are
//! counted in `pg_stat_activity`, and its transactions in
//! `pg_stat_database`: over the baseline their ratio is the application's
//! mean transaction time (Little's law). A multiple of the baseline is an
//! allowance of that many times the application's time (`LatencyBudget::
//! ceiling_ms`): a probe that commits in 1 ms and an application whose
//! transactions take 4 ms both pay what the batches add to a commit, and
//! a 2x budget for the application is not a 2x budget for the probe.

use crate::plan_file::LatencyBudget;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The probe's transaction: one row of its own written and committed.
pub const PROBE: &str = "UPDATE repartition.latency_probes SET probed_at = clock_timestamp() WHERE migration_id = $1";
/// Its row, made before the first probe.
const PROBE_ROW: &str = "INSERT INTO repartition.latency_probes (migration_id) VALUES ($1) ON CONFLICT DO NOTHING";
/// The application's statements in flight (none of the tool's, none
/// waiting on its own client, none running for more than a second: the
/// budget is about its transactions, not its reports), and the database's
/// transactions so far. Both err low where the role may not see other
/// roles' sessions: fewer in flight, the same transactions.
pub const APPLICATION: &str = "SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity AS a \
     WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.state = 'active' \
     AND a.pid <> pg_catalog.pg_backend_pid() AND a.application_name <> 'migrate' \
     AND a.application_name NOT LIKE 'migrate %' AND a.wait_event_type IS DISTINCT FROM 'Client' \
     AND a.query_start > clock_timestamp() - interval '1 second')::int4, \
     (SELECT d.xact_commit + d.xact_rollback FROM pg_catalog.pg_stat_database AS d \
     WHERE d.datname = current_database())::int8";
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// The probes the baseline is learned from, before the first step: four
/// measurements' worth.
pub const BASELINE_SAMPLES: usize = 240;
/// The measurement the feedback goes by: the probes of the last seconds,
/// enough of them for a 99th percentile to be more than the worst one.
pub const WINDOW: Duration = Duration::from_secs(3);
/// The percentile measured: the budget is about the application's tail
/// (its p99), and the slow commits while rows move are the few.
pub const PERCENTILE: f64 = 0.99;
/// The application's mean transaction time while rows move, over this
/// long: its transactions are read from statistics that each session
/// reports about once a second, too coarse for the probe's 3 seconds.
pub const APPLICATION_WINDOW: Duration = Duration::from_secs(10);
const KEEP: usize = 400;

/// When each probe ran, how long it took, and whether a batch was in
/// flight when it started.
type Samples = Arc<Mutex<VecDeque<(Instant, f64, bool)>>>;
/// When each count of the application ran, its statements in flight, and
/// the database's transactions so far.
type Counts = Arc<Mutex<VecDeque<(Instant, i32, i64)>>>;

/// The probe, running beside the batches until dropped.
pub struct Probe {
    samples: Samples,
    counts: Counts,
    /// Batches in flight, counted by every worker around each batch.
    pub in_flight: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    pub async fn start(cfg: &tokio_postgres::Config, method: &str, id: i64) -> Result<Probe> {
        let mut cfg = cfg.clone();
        cfg.application_name(format!("migrate {method} (latency probe)"));
        let client = crate::db::connect(&cfg).await?;
        client
            .execute(PROBE_ROW, &[&id])
            .await
            .context("cannot make the latency probe's row")?;
        let probe = client.prepare(PROBE).await?;
        let count = client
            .prepare(APPLICATION)
            .await
            .context("cannot prepare the count of the application's statements")?;
        let samples: Samples = Arc::default();
        let into = samples.clone();
        let counts: Counts = Arc::default();
        let counts_into = counts.clone();
        let in_flight = Arc::new(AtomicI64::new(0));
        let busy = in_flight.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let during_batch = busy.load(Ordering::Relaxed) > 0;
                let t = Instant::now();
                if let Err(e) = client.execute(&probe, &[&id]).await {
                    tracing::warn!(error = %e, "the latency probe stopped; the budget goes by its last measurements");
                    return;
                }
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                keep(&into, (Instant::now(), ms, during_batch));
                // A count that fails (a view the role may not read) leaves
                // the probe alone: the budget then goes by the probe only.
                if let Ok(row) = client.query_one(&count, &[]).await {
                    keep(&counts_into, (Instant::now(), row.get(0), row.get(1)));
                }
            }
        });
        Ok(Probe {
            samples,
            counts,
            in_flight,
            task,
        })
    }

    /// The number of probes so far.
    pub fn count(&self) -> usize {
        self.samples.lock().map_or(0, |q| q.len())
    }

    /// The `PERCENTILE` of the probes of the last `window`, once there
    /// are at least five.
    pub fn tail(&self, window: Duration) -> Option<f64> {
        self.tail_where(window, |_| true)
    }

    /// The same over the probes that started while no batch was in
    /// flight: what the application's commits cost without the batches.
    pub fn tail_between_batches(&self, window: Duration) -> Option<f64> {
        self.tail_where(window, |during_batch| !during_batch)
    }

    /// The baseline: the median of the `PERCENTILE`s of consecutive
    /// measurements' worth of probes, compared like with like with what the
    /// feedback measures; a stall of the machine's in one of them does not
    /// set it (a single 99th percentile of the first 100 probes came to
    /// 1.1-18.2 ms in runs of the same table on the same machine).
    pub fn baseline(&self) -> Option<f64> {
        let q = self.samples.lock().ok()?;
        let v: Vec<f64> = q.iter().map(|(_, ms, _)| *ms).collect();
        windowed_median(&v, per_window())
    }

    /// The application over the counts so far (the baseline's, when
    /// asked before the first step).
    pub fn application(&self) -> Option<Application> {
        self.application_over(Duration::MAX)
    }

    /// The application over the counts of the last `window`.
    pub fn application_over(&self, window: Duration) -> Option<Application> {
        let q = self.counts.lock().ok()?;
        let kept: Vec<&(Instant, i32, i64)> = q.iter().filter(|(at, _, _)| at.elapsed() <= window).collect();
        let first = kept.first()?.0;
        let v: Vec<(f64, i32, i64)> = kept
            .iter()
            .map(|(at, n, x)| (at.duration_since(first).as_secs_f64(), *n, *x))
            .collect();
        little(&v)
    }

    fn tail_where(&self, window: Duration, keep: impl Fn(bool) -> bool) -> Option<f64> {
        let q = self.samples.lock().ok()?;
        let v: Vec<f64> = q
            .iter()
            .filter(|(at, _, during)| at.elapsed() <= window && keep(*during))
            .map(|(_, ms, _)| *ms)
            .collect();
        percentile(v, PERCENTILE)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Appends to one of the probe's records, keeping the latest `KEEP`.
fn keep<T>(q: &Mutex<VecDeque<T>>, v: T) {
    let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
    q.push_back(v);
    while q.len() > KEEP {
        q.pop_front();
    }
}

/// The application's transactions beside the probe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Application {
    /// Their mean time, in flight on average over transactions a second.
    pub ms: f64,
    pub in_flight: f64,
    pub per_s: f64,
}

/// Little's law over counts taken `(seconds since the first, statements in
/// flight, transactions so far)`. Between the first and the last count
/// the tool committed two transactions a tick of its own (a probe and a
/// count), which are not the application's. `None` with too few counts
/// or too few of the application's transactions to tell.
fn little(v: &[(f64, i32, i64)]) -> Option<Application> {
    let (first, last) = (v.first()?, v.last()?);
    let secs = last.0 - first.0;
    if v.len() < 20 || secs < 2.0 {
        return None;
    }
    let ours = 2 * (v.len() as i64 - 1);
    let theirs = (last.2 - first.2 - ours) as f64;
    if theirs < 50.0 {
        return None;
    }
    let in_flight = v.iter().map(|(_, n, _)| f64::from(*n)).sum::<f64>() / v.len() as f64;
    let per_s = theirs / secs;
    Some(Application {
        ms: in_flight / per_s * 1000.0,
        in_flight,
        per_s,
    })
}

/// Probes in one measurement's window.
fn per_window() -> usize {
    (WINDOW.as_millis() / PROBE_EVERY.as_millis()) as usize
}

/// The median of the `PERCENTILE` of each run of `per` samples; of all of
/// them when there are fewer.
fn windowed_median(v: &[f64], per: usize) -> Option<f64> {
    let mut tails: Vec<f64> = v
        .chunks_exact(per.max(1))
        .filter_map(|c| percentile(c.to_vec(), PERCENTILE))
        .collect();
    if tails.is_empty() {
        return percentile(v.to_vec(), PERCENTILE);
    }
    tails.sort_by(f64::total_cmp);
    let n = tails.len();
    Some(if n % 2 == 1 {
        tails[n / 2]
    } else {
        (tails[n / 2 - 1] + tails[n / 2]) / 2.0
    })
}

fn percentile(mut v: Vec<f64>, p: f64) -> Option<f64> {
    if v.len() < 5 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

/// The slowest pace: batches this fraction of the plan's size…
pub const MIN_SCALE: f64 = 0.05;
/// …and this long a rest after each.
pub const MAX_REST_MS: u64 = 2_000;

/// Between batches at least this share of the measurement over all the
/// probes: the batches add little to it.
pub const BATCHES_ADD_LITTLE: f64 = 0.7;

/// Measurements in a row well under the budget before the pace quickens.
pub const CALM: u32 = 2;

/// What the feedback does about the measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doing {
    /// Under the budget with room: as fast as the plan allows.
    FullSpeed,
    /// Over it: smaller batches and longer rests.
    SlowingDown,
    /// Under it again: speeding back up.
    SpeedingUp,
    /// Within it: keeping the pace.
    Holding,
    /// Over it at the slowest pace: the method's own cost is above the
    /// budget, which cannot be held.
    OverAtSlowest,
    /// Over it between batches as well, and nearly as much as over all
    /// the probes: the excess is not the batches' (the application's own
    /// load, or the method's standing cost), so a slower pace would not
    /// lower it; the pace holds.
    OverBetweenBatches,
}

/// The feedback: from each measurement, the batch size (as a fraction of
/// the plan's), the workers of a parallel pass that run batches, and the
/// rest after each batch.
#[derive(Clone, Debug)]
pub struct Controller {
    pub budget: LatencyBudget,
    pub baseline_ms: f64,
    /// The application's mean transaction time beside the baseline.
    pub app_ms: Option<f64>,
    pub scale: f64,
    pub rest_ms: u64,
    /// The plan's workers, and how many of them run batches now.
    pub workers: u32,
    pub active: u32,
    pub measured_ms: Option<f64>,
    /// The same between batches, when enough probes fell there.
    pub between_batches_ms: Option<f64>,
    pub doing: Doing,
    /// Measurements in a row well under the budget.
    pub calm: u32,
}

impl Controller {
    pub fn new(budget: LatencyBudget, baseline_ms: f64, app_ms: Option<f64>, workers: u32) -> Controller {
        let workers = workers.max(1);
        Controller {
            budget,
            baseline_ms,
            app_ms,
            scale: 1.0,
            rest_ms: 0,
            workers,
            // A parallel pass starts on one worker; the others join while
            // the application stays well within the budget.
            active: 1,
            measured_ms: None,
            between_batches_ms: None,
            doing: if workers > 1 { Doing::Holding } else { Doing::FullSpeed },
            calm: 0,
        }
    }

    pub fn ceiling_ms(&self) -> f64 {
        self.budget.ceiling_ms(self.baseline_ms, self.app_ms)
    }

    /// One step of feedback. Over the budget, let one worker fewer run
    /// first (the largest step: the load of a whole connection), then
    /// halve the batches (a shorter batch writes less WAL at once), then
    /// double the rest; well under it, the same back: shorten the rest,
    /// let the batches grow, let one more worker run, but only after
    /// `CALM` measurements in a row well under it: one calm window among
    /// slow ones is the noise of the tail, and speeding up on it kept the
    /// pace from ever reaching the rests. Halving the batches before
    /// parking a worker took five windows (15 s) to halve the load: the
    /// two workers' main pass of 2,000,000 rows was nearly over by then.
    pub fn observe(&mut self, ms: f64, between_batches_ms: Option<f64>) {
        self.measured_ms = Some(ms);
        self.between_batches_ms = between_batches_ms;
        let ceiling = self.ceiling_ms();
        self.calm = if ms < ceiling * 0.7 { self.calm + 1 } else { 0 };
        let full_speed = self.rest_ms == 0 && self.active == self.workers && self.scale >= 1.0;
        // Probes between short batches are over an absolute ceiling of a
        // few microseconds too; what tells the batches apart is how much
        // more the probes measure with them.
        if ms > ceiling && between_batches_ms.is_some_and(|b| b > ceiling && b >= ms * BATCHES_ADD_LITTLE) {
            self.doing = Doing::OverBetweenBatches;
        } else if ms > ceiling {
            if self.active > 1 {
                self.active -= 1;
                self.doing = Doing::SlowingDown;
            } else if self.scale > MIN_SCALE {
                self.scale = (self.scale * 0.5).max(MIN_SCALE);
                self.doing = Doing::SlowingDown;
            } else if self.rest_ms < MAX_REST_MS {
                self.rest_ms = (self.rest_ms * 2).clamp(20, MAX_REST_MS);
                self.doing = Doing::SlowingDown;
            } else {
                self.doing = Doing::OverAtSlowest;
            }
        } else if self.calm > 0 && full_speed {
            self.doing = Doing::FullSpeed;
        } else if self.calm >= CALM {
            if self.rest_ms > 0 {
                self.rest_ms = if self.rest_ms <= 20 { 0 } else { self.rest_ms * 2 / 3 };
                self.doing = Doing::SpeedingUp;
            } else if self.scale < 1.0 {
                self.scale = (self.scale * 1.25).min(1.0);
                self.doing = Doing::SpeedingUp;
            } else {
                self.active += 1;
                self.doing = Doing::SpeedingUp;
            }
        } else {
            self.doing = Doing::Holding;
        }
    }

    /// The sentence `status` shows.
    pub fn describe(&self) -> String {
        let workers = if self.workers > 1 {
            format!(", {} of {} workers", self.active, self.workers)
        } else {
            String::new()
        };
        let pace = format!(
            "batches at {:.0}% of the plan's size{workers}, {} ms of rest after each",
            self.scale * 100.0,
            self.rest_ms
        );
        match self.doing {
            Doing::FullSpeed => "under the budget: as fast as the plan allows".into(),
            Doing::SlowingDown => format!("over the budget: slowing down ({pace})"),
            Doing::SpeedingUp => format!("under the budget: speeding up ({pace})"),
            Doing::Holding => format!("within the budget: holding the pace ({pace})"),
            Doing::OverAtSlowest => format!(
                "over the budget at the slowest pace ({pace}): the method's own cost is above what the budget allows"
            ),
            Doing::OverBetweenBatches => format!(
                "over the budget between batches too ({:.2} ms): the excess is not the batches' (the application's own load, or the method's standing cost), so the pace holds ({pace})",
                self.between_batches_ms.unwrap_or_default()
            ),
        }
    }
}

/// The baseline the budget multiplies, from the probe's first
/// `BASELINE_SAMPLES` (`Probe::baseline`), learned before the migration changes anything
/// (the move's view and the sync's triggers are part of what the
/// application may pay), recorded in the control table with an event so
/// that a resumed run keeps it; with it the application's mean
/// transaction time (`Probe::application`). `None` when the run is stopped
/// meanwhile.
pub async fn learn_baseline(
    ctx: &crate::exec::Context,
    client: &impl tokio_postgres::GenericClient,
    id: i64,
    budget: LatencyBudget,
    probe: &Probe,
) -> Result<Option<(f64, Option<f64>)>> {
    ctx.reporter.phase(
        "latency",
        "learning the application's commit latency before anything changes",
    );
    while probe.count() < BASELINE_SAMPLES {
        if ctx.stopping() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ms = probe.baseline().unwrap_or(1.0).max(0.05);
    let app = probe.application();
    crate::control::set_latency_baseline(client, id, ms, app.map(|a| a.ms)).await?;
    crate::control::event(client, id, "latency", &baseline_event(ms, app, budget, probe.count())).await?;
    Ok(Some((ms, app.map(|a| a.ms))))
}

/// The application's mean transaction time as every report of it words it.
pub fn application_phrase(ms: f64) -> String {
    format!("the application's transactions {ms:.2} ms on average")
}

/// The baseline as its event says it.
fn baseline_event(ms: f64, app: Option<Application>, budget: LatencyBudget, probes: usize) -> String {
    let app_text = match app {
        Some(a) => format!(
            "{} ({:.2} in flight, {:.0} a second)",
            application_phrase(a.ms),
            a.in_flight,
            a.per_s
        ),
        None => "too few of the application's transactions to measure".into(),
    };
    format!(
        "baseline {ms:.2} ms (the median of the 99th percentiles of {probes} probes, 3 seconds at a time); {app_text}; ceiling {:.2} ms",
        budget.ceiling_ms(ms, app.map(|a| a.ms))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_parks_workers_then_halves_the_batches_then_rests_longer_and_says_when_it_cannot_hold() {
        let mut c = Controller::new(LatencyBudget::Times(2.0), 1.0, None, 2);
        // The second worker runs only once the application is calm.
        assert_eq!(c.active, 1);
        c.active = 2;
        c.observe(5.0, None);
        assert_eq!((c.active, c.scale, c.rest_ms, c.doing), (1, 1.0, 0, Doing::SlowingDown));
        assert!(c.describe().contains("1 of 2 workers"), "{}", c.describe());
        c.observe(5.0, None);
        assert_eq!((c.active, c.scale), (1, 0.5));
        for _ in 0..4 {
            c.observe(5.0, None);
        }
        assert_eq!((c.scale, c.active, c.rest_ms), (MIN_SCALE, 1, 0));
        c.observe(5.0, None);
        assert_eq!(c.rest_ms, 20);
        for _ in 0..10 {
            c.observe(5.0, None);
        }
        assert_eq!((c.rest_ms, c.doing), (MAX_REST_MS, Doing::OverAtSlowest));
        assert!(c.describe().contains("the method's own cost"), "{}", c.describe());
    }

    #[test]
    fn over_budget_between_batches_too_holds_the_pace() {
        let mut c = Controller::new(LatencyBudget::Times(2.0), 1.0, None, 1);
        c.observe(5.0, None);
        assert_eq!(c.scale, 0.5);
        c.observe(5.0, Some(4.0));
        assert_eq!((c.scale, c.rest_ms, c.doing), (0.5, 0, Doing::OverBetweenBatches));
        assert!(c.describe().contains("not the batches'"), "{}", c.describe());
        // Between batches over the ceiling but well under the whole: the
        // batches add most of it.
        c.observe(5.0, Some(3.0));
        assert_eq!((c.scale, c.doing), (0.25, Doing::SlowingDown));
        // Between batches under the ceiling: the batches are the cause.
        c.observe(5.0, Some(1.5));
        assert_eq!((c.scale, c.doing), (0.125, Doing::SlowingDown));
    }

    #[test]
    fn under_budget_rests_less_first_then_grows_the_batches_back_then_lets_the_workers_run() {
        let mut c = Controller::new(LatencyBudget::Ms(10.0), 1.0, None, 2);
        c.scale = 0.25;
        c.rest_ms = 90;
        c.active = 1;
        // One calm measurement holds; the second in a row speeds up.
        c.observe(2.0, None);
        assert_eq!((c.rest_ms, c.doing), (90, Doing::Holding));
        c.observe(2.0, None);
        assert_eq!((c.scale, c.rest_ms), (0.25, 60));
        // 40, 26, 17, then none.
        for _ in 0..4 {
            c.observe(2.0, None);
        }
        assert_eq!((c.rest_ms, c.active), (0, 1));
        c.observe(2.0, None);
        assert_eq!((c.active, c.scale), (1, 0.3125));
        for _ in 0..6 {
            c.observe(2.0, None);
        }
        assert_eq!((c.active, c.scale), (1, 1.0));
        c.observe(2.0, None);
        assert_eq!((c.active, c.doing), (2, Doing::SpeedingUp));
        c.observe(2.0, None);
        assert_eq!((c.scale, c.doing), (1.0, Doing::FullSpeed));
        c.observe(8.0, None);
        assert_eq!(c.doing, Doing::Holding);
    }

    #[test]
    fn one_calm_measurement_among_slow_ones_does_not_speed_up() {
        let mut c = Controller::new(LatencyBudget::Times(2.0), 1.0, None, 1);
        for _ in 0..5 {
            c.observe(5.0, None);
        }
        assert_eq!(c.scale, MIN_SCALE);
        c.observe(1.0, None);
        assert_eq!((c.scale, c.doing), (MIN_SCALE, Doing::Holding));
        c.observe(5.0, None);
        assert_eq!((c.rest_ms, c.doing), (20, Doing::SlowingDown));
    }

    #[test]
    fn the_baseline_is_the_median_window_and_a_stall_in_one_does_not_set_it() {
        assert_eq!(per_window(), 60);
        let mut v = Vec::new();
        for (w, ms) in [1.0, 1.2, 1.1, 1.3].into_iter().enumerate() {
            let mut win = vec![0.5; 58];
            win.extend([ms, ms]);
            if w == 2 {
                // A stall of 40 ms: four probes wait behind it.
                win[10..14].copy_from_slice(&[40.0; 4]);
            }
            v.extend(win);
        }
        // The windows' 99th percentiles: 1.0, 1.2, 40.0, 1.3.
        assert_eq!(windowed_median(&v, 60), Some(1.25));
        assert_eq!(windowed_median(&v[..30], 60), percentile(v[..30].to_vec(), PERCENTILE));
    }

    #[test]
    fn the_applications_mean_time_is_its_statements_in_flight_over_its_transactions_a_second() {
        // 240 counts over 12 seconds: 0.4 statements in flight on average,
        // and 200 of the application's transactions a second beside the
        // tool's two a tick.
        let v: Vec<(f64, i32, i64)> = (0..240)
            .map(|i| (i as f64 * 0.05, i32::from(i % 5 < 2), 1_000 + i64::from(i) * (10 + 2)))
            .collect();
        let a = little(&v).unwrap();
        assert!((a.in_flight - 0.4).abs() < 1e-9, "{a:?}");
        assert!((a.per_s - 200.0).abs() < 1e-6, "{a:?}");
        assert!((a.ms - 0.4 / a.per_s * 1000.0).abs() < 1e-9, "{a:?}");
        // Only the tool's own transactions, or too few counts: nothing to tell.
        let idle: Vec<(f64, i32, i64)> = (0..240).map(|i| (i as f64 * 0.05, 0, i64::from(i) * 2)).collect();
        assert_eq!(little(&idle), None);
        assert_eq!(little(&v[..10]), None);
    }

    #[test]
    fn a_multiple_allows_the_probe_that_many_times_the_applications_time() {
        let b = LatencyBudget::Times(2.0);
        // The application's transactions take 4 ms, the probe's 1 ms: the
        // probe may take 1 + 4 ms before the application takes 8.
        assert_eq!(b.ceiling_ms(1.0, Some(4.0)), 5.0);
        // Without the application's figure, or below the probe's own, the
        // probe's baseline stands in for it.
        assert_eq!(b.ceiling_ms(1.0, None), 2.0);
        assert_eq!(b.ceiling_ms(1.0, Some(0.3)), 2.0);
        assert_eq!(LatencyBudget::Times(1.5).ceiling_ms(2.0, Some(6.0)), 5.0);
        assert_eq!(LatencyBudget::Ms(15.0).ceiling_ms(1.0, Some(4.0)), 15.0);
        let c = Controller::new(b, 1.0, Some(4.0), 1);
        assert_eq!(c.ceiling_ms(), 5.0);
        let e = baseline_event(
            1.0,
            Some(Application {
                ms: 4.0,
                in_flight: 0.8,
                per_s: 200.0,
            }),
            b,
            240,
        );
        assert!(
            e.contains("the application's transactions 4.00 ms on average (0.80 in flight, 200 a second)"),
            "{e}"
        );
        assert!(e.ends_with("ceiling 5.00 ms"), "{e}");
    }

    #[test]
    fn the_percentile_needs_five_samples() {
        assert_eq!(percentile(vec![1.0, 2.0, 3.0, 4.0], 0.95), None);
        assert_eq!(percentile((1..=100).map(f64::from).collect(), 0.95), Some(95.0));
    }
}
