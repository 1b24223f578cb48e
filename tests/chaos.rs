//! Chaos: for every method the migration runs under the application's
//! writes (an oracle records what committed) while faults chosen by a
//! seeded generator hit it: SIGKILL at a random moment or at a named point
//! (mid-batch, mid-DDL), a fast or immediate restart of PostgreSQL, the
//! migrator's backends terminated from the server, a session holding locks
//! until the lock timeout fires and the retries run out, and a second
//! `apply` at the same time. The run is then resumed. After every round the
//! table is compared with the oracle; after every cycle no object of the
//! tool is left over and the table takes writes.
//!
//! `CHAOS_SEED` replays a run, `CHAOS_FAULTS` (faults per method, default
//! 5) and `CHAOS_ROWS` (default 8000) size it; `scripts/chaos.sh` runs the
//! full form.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Move,
    Sync,
    /// Attach, then split the first partition.
    Attach,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Move => "move",
            Method::Sync => "sync",
            Method::Attach => "attach",
        }
    }

    /// The named points a run can die at, mid-batch and mid-DDL.
    fn points(self, split: bool) -> &'static [&'static str] {
        match (self, split) {
            (Method::Move, _) | (Method::Attach, true) => &[
                "prepare:before-commit",
                "prepare:after-commit",
                "route:before-commit",
                "route:after-commit",
                "batch-forward:before-commit",
                "batch-forward:after-commit",
                "move:before-sweep",
                "swap:before-commit",
                "swap:after-commit",
            ],
            (Method::Sync, _) => &[
                "prepare:before-commit",
                "prepare:after-commit",
                "batch-forward:before-commit",
                "batch-forward:after-commit",
                "verify:before-record",
                "swap:before-commit",
                "swap:after-commit",
            ],
            (Method::Attach, false) => &[
                "constrain:after-check",
                "constrain:after-index",
                "swap:before-commit",
                "swap:after-commit",
            ],
        }
    }
}

#[derive(Default)]
struct Tally {
    faults: BTreeMap<&'static str, usize>,
    exits: BTreeMap<i32, usize>,
    rows_compared: usize,
    operations: u64,
    rounds: usize,
    cycles: usize,
}

impl Tally {
    fn injected(&self) -> usize {
        self.faults.values().sum()
    }
}

/// Whether the cycle's migration (for attach: and its split) has run to
/// its end.
async fn finished(db: &Db, method: Method) -> (bool, bool) {
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT method, state = 'done' OR (method = 'sync' AND state = 'active' AND phase = 'swapped') \
             FROM repartition.migrations ORDER BY id",
            &[],
        )
        .await
        .unwrap_or_default();
    // A swapped sync migration waits for `cleanup`: its run is over.
    let done = |m: &str| rows.iter().any(|r| r.get::<_, String>(0) == m && r.get::<_, bool>(1));
    match method {
        Method::Attach => (done("attach"), done("split")),
        _ => (done(method.name()), false),
    }
}

/// The command that starts or continues the cycle's migration.
fn command(method: Method, attached: bool) -> &'static str {
    if matches!(method, Method::Attach) && attached {
        "split"
    } else {
        "apply"
    }
}

async fn migrator_backends(db: &Db) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'migrate%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map(|r| r.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// Holds row locks on some rows not yet moved, and a share lock on the
/// table, for `hold`: the tool's lock timeout fires, it retries, and may
/// run out of retries (exit 3).
async fn hold_locks(db: &Db, hold: Duration) {
    let c = db.client().await;
    let source: String = c
        .query_one(
            "SELECT CASE WHEN (SELECT relkind FROM pg_class WHERE oid = 'public.workflow_events'::regclass) = 'v' \
                    THEN 'public.workflow_events__orig' ELSE 'public.workflow_events' END",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if c.batch_execute("BEGIN").await.is_err() {
        return;
    }
    let _ = c
        .batch_execute(&format!(
            "LOCK TABLE public.workflow_events IN ACCESS SHARE MODE; \
             SELECT id FROM ONLY {source} WHERE ctid >= '(20,0)'::tid LIMIT 50 FOR UPDATE"
        ))
        .await;
    tokio::time::sleep(hold).await;
    let _ = c.batch_execute("ROLLBACK").await;
}

async fn wait_exit(child: &mut tokio::process::Child, what: &str) -> i32 {
    match tokio::time::timeout(Duration::from_secs(180), child.wait()).await {
        Ok(s) => s.unwrap().code().unwrap_or(-9),
        Err(_) => {
            let _ = child.start_kill();
            panic!("{what} did not end within 180 s");
        }
    }
}

/// One round: the application writes while the migrator runs and a fault
/// hits it; then every row is compared with the oracle.
async fn round(cluster: &Cluster, db: &Db, plan: &str, method: Method, rng: &mut fastrand::Rng, t: &mut Tally) {
    let (attached, _) = finished(db, method).await;
    let cmd = command(method, attached);
    // Until the attach is done the original refuses keys at or after the
    // cutoff, which lies just beyond the newest key when planned: the
    // application keeps its keys below it, as the attach method asks.
    let features = if matches!(method, Method::Attach) && !attached {
        Features {
            future_days: 0,
            ..Features::default()
        }
    } else {
        Features::default()
    };
    let workload = Workload::start_with(db, 3, rng.u64(..), features).await;
    let mut workload = Some(workload);
    tokio::time::sleep(Duration::from_millis(rng.u64(20..150))).await;
    let kind = rng.usize(0..10);
    let delay = Duration::from_millis(rng.u64(20..700));
    let mut restarted = false;
    let code = match kind {
        // SIGKILL at a random moment.
        0 | 1 => {
            t.faults
                .entry("sigkill at a random moment")
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let mut child = db.command(&[cmd, plan], &[]).spawn().unwrap();
            tokio::select! {
                s = child.wait() => s.unwrap().code().unwrap_or(-9),
                _ = tokio::time::sleep(delay) => {
                    let _ = child.start_kill();
                    wait_exit(&mut child, cmd).await
                }
            }
        }
        // Death at a named point, mid-batch or mid-DDL.
        2..=4 => {
            t.faults
                .entry("death at a named point")
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let points = method.points(attached);
            let point = points[rng.usize(0..points.len())];
            let spec = if point.starts_with("batch") {
                format!("{point}@{}", rng.u32(1..12))
            } else {
                point.to_string()
            };
            let mut child = db
                .command(&[cmd, plan], &[("MIGRATE_FAILPOINT", &spec)])
                .spawn()
                .unwrap();
            wait_exit(&mut child, cmd).await
        }
        // The migrator's backends terminated by the server.
        5 => {
            t.faults
                .entry("backends terminated")
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let mut child = db.command(&[cmd, plan], &[]).spawn().unwrap();
            tokio::time::sleep(delay).await;
            let c = db.client().await;
            for pid in migrator_backends(db).await {
                let _ = c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await;
            }
            wait_exit(&mut child, cmd).await
        }
        // PostgreSQL restarted under the run: the application stops first
        // (a commit cut off by the restart would leave the oracle unsure),
        // then the table must equal the oracle before and after recovery.
        6 => {
            let mode = if rng.bool() { "fast" } else { "immediate" };
            t.faults
                .entry(if mode == "fast" {
                    "restart (fast)"
                } else {
                    "restart (immediate)"
                })
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let mut child = db.command(&[cmd, plan], &[]).spawn().unwrap();
            tokio::time::sleep(delay).await;
            let report = workload.take().unwrap().stop().await;
            assert!(
                report.errors.is_empty(),
                "the application saw errors: {:?}",
                report.errors
            );
            t.operations += report.total_ops();
            t.rows_compared += compare(db, &report.oracle).await;
            cluster.restart(mode);
            restarted = true;
            t.rows_compared += compare(db, &report.oracle).await;
            wait_exit(&mut child, cmd).await
        }
        // Locks held by another session: the lock timeout fires.
        7 => {
            t.faults
                .entry("locks held (lock timeout)")
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let mut child = db.command(&[cmd, plan], &[]).spawn().unwrap();
            tokio::time::sleep(delay / 2).await;
            hold_locks(db, Duration::from_millis(rng.u64(300..2500))).await;
            wait_exit(&mut child, cmd).await
        }
        // A second runner at the same time: one of them steps back.
        8 => {
            t.faults
                .entry("second apply at once")
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let mut a = db.command(&[cmd, plan], &[]).spawn().unwrap();
            tokio::time::sleep(Duration::from_millis(rng.u64(0..200))).await;
            let mut b = db.command(&[cmd, plan], &[]).spawn().unwrap();
            let cb = wait_exit(&mut b, cmd).await;
            *t.exits.entry(cb).or_default() += 1;
            wait_exit(&mut a, cmd).await
        }
        // No fault this round.
        _ => {
            let mut child = db.command(&[cmd, plan], &[]).spawn().unwrap();
            tokio::time::sleep(delay).await;
            let _ = child.start_kill();
            wait_exit(&mut child, cmd).await
        }
    };
    *t.exits.entry(code).or_default() += 1;
    // Exit codes a run may end with under these faults; never a panic.
    assert!(
        [0, 1, 3, 4, 5, 86, -9, 137].contains(&code),
        "{cmd} ended with exit code {code}"
    );
    if let Some(w) = workload {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = w.stop().await;
        assert!(
            report.errors.is_empty(),
            "the application saw {} errors, first: {:?}",
            report.errors.len(),
            &report.errors[..report.errors.len().min(5)]
        );
        t.operations += report.total_ops();
        t.rows_compared += compare(db, &report.oracle).await;
    } else {
        assert!(restarted);
    }
    // The control table always says where the migration stands.
    let status = db.migrate(&["status", plan]).await;
    assert_eq!(status.code, 0, "status after a fault: {}", status.stderr);
    t.rounds += 1;
}

/// Runs the migration to its end, without faults.
async fn finish(db: &Db, plan: &str, method: Method) {
    for _ in 0..10 {
        match finished(db, method).await {
            (true, false) if matches!(method, Method::Attach) => {
                db.migrate(&["split", plan]).await;
            }
            (true, _) => break,
            _ => {
                db.migrate(&["apply", plan]).await;
            }
        }
    }
    let (a, b) = finished(db, method).await;
    assert!(
        a && (b || !matches!(method, Method::Attach)),
        "the migration did not finish"
    );
    if matches!(method, Method::Sync) {
        db.migrate(&["cleanup", plan]).await.ok();
    }
}

/// Nothing of the tool's is left, and the table takes writes.
async fn check_clean(db: &Db) {
    let leftovers = db
        .scalar_str(
            "SELECT string_agg(x, ', ') FROM ( \
               SELECT relname::text AS x FROM pg_class WHERE relname LIKE 'workflow\\_events\\_\\_%' \
               UNION ALL SELECT proname::text FROM pg_proc WHERE proname LIKE 'workflow\\_events\\_\\_%' \
               UNION ALL SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN \
                 (SELECT oid FROM pg_class WHERE relname LIKE 'workflow\\_events%') \
               UNION ALL SELECT 'invalid index ' || indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid \
               UNION ALL SELECT conname::text FROM pg_constraint WHERE conname LIKE '%\\_\\_cutoff') s",
        )
        .await;
    assert_eq!(leftovers, None, "objects of the tool were left over");
    assert_eq!(
        db.scalar_str("SELECT relkind::text FROM pg_class WHERE oid = 'public.workflow_events'::regclass")
            .await
            .as_deref(),
        Some("p")
    );
    let c = db.client().await;
    let id: i64 = c
        .query_one(
            "INSERT INTO workflow_events (run_id, type) SELECT min(id), 'after' FROM workflow_runs RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        c.execute("UPDATE workflow_events SET type = 'after2' WHERE id = $1", &[&id])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        c.execute("DELETE FROM workflow_events WHERE id = $1", &[&id])
            .await
            .unwrap(),
        1
    );
}

async fn chaos(method: Method) {
    let seed: u64 = env_or(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let faults: usize = env_or("CHAOS_FAULTS", 5);
    let rows: i64 = env_or("CHAOS_ROWS", 8000);
    println!(
        "chaos {}: seed {seed} (replay with CHAOS_SEED={seed}), {faults} faults, {rows} rows",
        method.name()
    );
    // Committed means durable here: the application's commits must survive
    // an immediate shutdown.
    let cluster = Cluster::start_with_settings("-c synchronous_commit=on");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = Tally::default();
    let started = Instant::now();
    while t.injected() < faults {
        let db = cluster.database().await;
        seed_rows(&db, rows).await;
        let dir = scratch();
        let text = event_plan(
            200,
            "  pause: 2ms\nlocks:\n  lock_timeout: 100ms\n  statement_timeout: 20s\n  retries: 4\n",
        )
        .replace("method: move", &format!("method: {}", method.name()));
        let plan = db.plan_file(dir.path(), "chaos.yaml", &text);
        let plan = plan.to_str().unwrap().to_string();
        loop {
            let (a, b) = finished(&db, method).await;
            if (a && (b || !matches!(method, Method::Attach))) || t.injected() >= faults {
                break;
            }
            round(&cluster, &db, &plan, method, &mut rng, &mut t).await;
        }
        finish(&db, &plan, method).await;
        check_clean(&db).await;
        t.cycles += 1;
    }
    println!(
        "chaos {}: seed {seed}; {} faults in {} rounds over {} migrations: {}; exit codes {:?}; {} application operations, 0 errors; {} rows compared with the oracle; {:.1}s",
        method.name(),
        t.injected(),
        t.rounds,
        t.cycles,
        t.faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        t.exits,
        t.operations,
        t.rows_compared,
        started.elapsed().as_secs_f64()
    );
}

async fn seed_rows(db: &Db, rows: i64) {
    seed(db, (rows / 60).max(20), rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_move() {
    chaos(Method::Move).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_sync() {
    chaos(Method::Sync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_attach() {
    chaos(Method::Attach).await;
}
