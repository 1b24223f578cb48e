//! Chaos: for every method the migration runs under the application's
//! writes (an oracle records what committed) while faults chosen by a
//! seeded generator hit it: kills (SIGKILL at a random moment, or death at
//! a named point mid-batch or mid-DDL, the points taken in turn so that
//! every phase is hit), a fast or immediate restart of PostgreSQL, the
//! migrator's backends terminated from the server, a session holding locks
//! until the lock timeout fires and the retries run out, and a second
//! `apply` at the same time. A fault counts only once it has happened (the
//! process was killed, the point was reached). Each fault names the exit
//! codes it explains; any other fails the round with what the run printed.
//! After every round the table is compared with the oracle (as a multiset:
//! a duplicate fails) and the objects present must match the phase the
//! control table records; after every cycle no object of the tool is left
//! over and the table takes writes.
//!
//! `CHAOS_SEED` replays a run; `CHAOS_KILLS` (kills per method, default 4),
//! `CHAOS_FAULTS` (other faults per method, default 4) and `CHAOS_ROWS`
//! (default 8000) size it; `scripts/chaos.sh` runs the full form.

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

    /// The named points a run can die at, mid-batch and mid-DDL, each with
    /// the phase the control table records while the run passes it.
    fn points(self, split: bool) -> &'static [(&'static str, &'static str)] {
        match (self, split) {
            (Method::Move, _) | (Method::Attach, true) => &[
                ("prepare:before-commit", "planned"),
                ("prepare:after-commit", "planned"),
                ("route:before-commit", "prepared"),
                ("route:after-commit", "prepared"),
                ("batch-forward:before-commit", "routed"),
                ("batch-forward:after-commit", "routed"),
                ("move:before-sweep", "routed"),
                ("swap:before-commit", "moved"),
                ("swap:after-commit", "moved"),
                ("finish:before-commit", "swapped"),
            ],
            (Method::Sync, _) => &[
                ("prepare:before-commit", "planned"),
                ("prepare:after-commit", "planned"),
                ("batch-forward:before-commit", "prepared"),
                ("batch-forward:after-commit", "prepared"),
                ("indexes:after-create", "prepared"),
                ("verify:before-record", "backfilled"),
                ("swap:before-commit", "verified"),
                ("swap:after-commit", "verified"),
            ],
            (Method::Attach, false) => &[
                ("constrain:after-check", "planned"),
                ("constrain:after-index", "planned"),
                ("prepare:before-commit", "constrained"),
                ("swap:before-commit", "prepared"),
                ("swap:after-commit", "prepared"),
            ],
        }
    }
}

/// The phases in the order a migration passes them.
const PHASES: &[&str] = &[
    "planned",
    "constrained",
    "prepared",
    "routed",
    "backfilled",
    "verified",
    "moved",
    "swapped",
    "finished",
];

fn phase_order(phase: &str) -> usize {
    PHASES.iter().position(|p| *p == phase).unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    faults: BTreeMap<&'static str, usize>,
    /// Kills by the phase the control table recorded when they hit.
    kills_by_phase: BTreeMap<String, usize>,
    /// Faults tried that did not happen (the run ended first, the point
    /// was not reached), not counted.
    missed: usize,
    exits: BTreeMap<i32, usize>,
    rows_compared: usize,
    operations: u64,
    rounds: usize,
    cycles: usize,
    kills: usize,
    others: usize,
    /// The next named point and the next other fault, taken in turn.
    next_point: usize,
    next_other: usize,
    /// Tries of the current other fault that did not happen; after three
    /// the next kind is taken.
    other_misses: usize,
}

impl Tally {
    fn count(&mut self, fault: &'static str) {
        *self.faults.entry(fault).or_default() += 1;
    }
}

/// A fault this round, with the exit codes it explains.
struct Fault {
    name: &'static str,
    kill: bool,
    explains: &'static [i32],
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

/// A run of the binary whose output is read as it comes (so that a full
/// pipe never holds it up), for the message of a round that fails.
struct Run {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl Run {
    fn start(db: &Db, args: &[&str], env: &[(&str, &str)]) -> Run {
        use tokio::io::AsyncReadExt;
        let mut child = db.command(args, env).spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Run { child, stderr }
    }

    async fn wait(&mut self, what: &str) -> i32 {
        wait_exit(&mut self.child, what).await
    }

    /// Kills the run after `delay` unless it ends first; whether it was
    /// killed.
    async fn kill_after(&mut self, delay: Duration, what: &str) -> (i32, bool) {
        tokio::select! {
            s = self.child.wait() => (s.unwrap().code().unwrap_or(-9), false),
            _ = tokio::time::sleep(delay) => {
                let _ = self.child.start_kill();
                (wait_exit(&mut self.child, what).await, true)
            }
        }
    }

    async fn stderr(self) -> String {
        self.stderr.await.unwrap_or_default()
    }
}

/// The latest migration's method, state and phase, if one is recorded.
async fn latest(db: &Db) -> Option<(String, String, String)> {
    db.client()
        .await
        .query_opt(
            "SELECT method, state, phase FROM repartition.migrations ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// The objects present are those of the phase the control table records:
/// the table's kind, the partitioned copy, the original kept aside, the
/// triggers and constraints each phase adds.
async fn check_phase_objects(db: &Db) {
    let kind = |rel: &'static str| async move { db.relkind(rel).await };
    let table = kind("public.workflow_events").await;
    let part = kind("public.workflow_events__part").await;
    let orig = kind("public.workflow_events__orig").await;
    let retired = kind("public.workflow_events__retired").await;
    let mirror = db
        .scalar_i64(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('public.workflow_events') \
             AND tgname::text LIKE 'workflow\\_events\\_\\_mirror%'",
        )
        .await;
    let cutoff = db
        .scalar_str(
            "SELECT (SELECT convalidated::text FROM pg_constraint WHERE conrelid = to_regclass('public.workflow_events') \
             AND conname = 'workflow_events__cutoff')",
        )
        .await;
    let at = latest(db).await;
    let r = Some("r".to_string());
    let p = Some("p".to_string());
    let v = Some("v".to_string());
    let seen = format!(
        "{at:?}: table {table:?}, __part {part:?}, __orig {orig:?}, __retired {retired:?}, mirror triggers {mirror}, cutoff valid {cutoff:?}"
    );
    let Some((method, state, phase)) = at.clone() else {
        assert!(table == r && part.is_none() && orig.is_none(), "{seen}");
        return;
    };
    let ok = match (method.as_str(), state.as_str(), phase.as_str()) {
        (_, "aborting" | "aborted", _) => true,
        ("move", "active", "planned") => table == r && part.is_none() && orig.is_none(),
        ("move", "active", "prepared") => table == r && part == p && orig.is_none(),
        ("move", "active", "routed" | "moved") => table == v && part == p && orig == r,
        ("move", "active", "swapped") => table == p && part.is_none() && orig == r,
        ("move", "done", _) => table == p && part.is_none() && orig.is_none(),
        ("sync", "active", "planned") => table == r && part.is_none() && mirror == 0,
        ("sync", "active", "prepared" | "backfilled" | "verified") => {
            table == r && part == p && mirror > 0 && retired.is_none()
        }
        ("sync", "active", "swapped") => table == p && part.is_none() && retired == r,
        ("sync", "done", _) => table == p && part.is_none() && retired.is_none(),
        ("attach", "active", "planned") => table == r && part.is_none(),
        ("attach", "active", "constrained") => table == r && part.is_none() && cutoff.as_deref() == Some("true"),
        ("attach", "active", "prepared") => table == r && part == p && cutoff.as_deref() == Some("true"),
        ("attach", "active", "swapped") | ("attach", "done", _) => table == p && part.is_none(),
        // The split works on the first partition: the table stays
        // partitioned, and the view in front of the partition's rows
        // lives only from route to swap.
        ("split", "active", "routed" | "moved") => table == p || table == v,
        ("split", _, _) => table == p,
        _ => false,
    };
    assert!(
        ok,
        "the objects do not match the phase the control table records: {seen}"
    );
}

/// One round: the application writes while the migrator runs and a fault
/// hits it; then every row is compared with the oracle and the objects
/// with the recorded phase.
async fn round(
    cluster: &Cluster,
    db: &Db,
    plan: &str,
    method: Method,
    rng: &mut fastrand::Rng,
    t: &mut Tally,
    wanted: (usize, usize),
) {
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
    let (kills_left, others_left) = (wanted.0 - t.kills.min(wanted.0), wanted.1 - t.others.min(wanted.1));
    let kill = kills_left > 0 && (others_left == 0 || rng.usize(0..kills_left + others_left) < kills_left);
    let delay = Duration::from_millis(rng.u64(20..700));
    let before = latest(db).await.map(|l| l.2).unwrap_or_else(|| "planned".into());
    // The points still ahead of the run, taken in turn.
    let ahead: Vec<&(&str, &str)> = method
        .points(attached)
        .iter()
        .filter(|(_, phase)| phase_order(phase) >= phase_order(&before))
        .collect();
    let mut restarted = false;
    let mut second: Option<(i32, String)> = None;
    // Kills alternate between a random moment and the next named point.
    let (fault, happened, code, stderr) = if kill && (ahead.is_empty() || t.kills.is_multiple_of(2)) {
        let fault = Fault {
            name: "kill: SIGKILL at a random moment",
            kill: true,
            explains: &[-9],
        };
        let mut run = Run::start(db, &[cmd, plan], &[]);
        let (code, killed) = run.kill_after(delay, cmd).await;
        (fault, killed, code, run.stderr().await)
    } else if kill {
        let (point, _) = ahead[t.next_point % ahead.len()];
        t.next_point += 1;
        let spec = if point.starts_with("batch") {
            format!("{point}@{}", rng.u32(1..12))
        } else {
            point.to_string()
        };
        let fault = Fault {
            name: "kill: death at a named point",
            kill: true,
            explains: &[86],
        };
        let mut run = Run::start(db, &[cmd, plan], &[("MIGRATE_FAILPOINT", &spec)]);
        let code = run.wait(cmd).await;
        (fault, code == 86, code, run.stderr().await)
    } else {
        let which = t.next_other % 4;
        match which {
            // The migrator's backends terminated by the server: the run
            // loses its connection and says so (exit 1).
            0 => {
                let fault = Fault {
                    name: "backends terminated",
                    kill: false,
                    explains: &[1],
                };
                let mut run = Run::start(db, &[cmd, plan], &[]);
                tokio::time::sleep(delay).await;
                let c = db.client().await;
                let mut terminated = 0;
                for pid in migrator_backends(db).await {
                    if c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.is_ok() {
                        terminated += 1;
                    }
                }
                let code = run.wait(cmd).await;
                (fault, terminated > 0 && code != 0, code, run.stderr().await)
            }
            // PostgreSQL restarted under the run: the application stops
            // first (a commit cut off by the restart would leave the oracle
            // unsure), then the table must equal the oracle before and
            // after recovery.
            1 => {
                let mode = if rng.bool() { "fast" } else { "immediate" };
                let fault = Fault {
                    name: if mode == "fast" {
                        "restart (fast)"
                    } else {
                        "restart (immediate)"
                    },
                    kill: false,
                    explains: &[1],
                };
                let mut run = Run::start(db, &[cmd, plan], &[]);
                tokio::time::sleep(delay).await;
                let report = workload.take().unwrap().stop().await;
                report.assert_no_errors("");
                t.operations += report.total_ops();
                t.rows_compared += compare(db, &report.oracle).await;
                cluster.restart(mode);
                restarted = true;
                t.rows_compared += compare(db, &report.oracle).await;
                let code = run.wait(cmd).await;
                (fault, code != 0, code, run.stderr().await)
            }
            // Locks held by another session: the lock timeout fires, and
            // the retries may run out (exit 3).
            2 => {
                let fault = Fault {
                    name: "locks held (lock timeout)",
                    kill: false,
                    explains: &[3],
                };
                let mut run = Run::start(db, &[cmd, plan], &[]);
                tokio::time::sleep(delay / 2).await;
                hold_locks(db, Duration::from_millis(rng.u64(300..2500))).await;
                let code = run.wait(cmd).await;
                (fault, true, code, run.stderr().await)
            }
            // A second runner at the same time: one of them steps back
            // (exit 4) while the other goes on.
            _ => {
                let fault = Fault {
                    name: "second apply at once",
                    kill: false,
                    explains: &[4],
                };
                let mut a = Run::start(db, &[cmd, plan], &[]);
                tokio::time::sleep(Duration::from_millis(rng.u64(0..200))).await;
                let mut b = Run::start(db, &[cmd, plan], &[]);
                let cb = b.wait(cmd).await;
                *t.exits.entry(cb).or_default() += 1;
                let cb_err = b.stderr().await;
                let code = a.wait(cmd).await;
                second = Some((cb, cb_err));
                (fault, true, code, a.stderr().await)
            }
        }
    };
    *t.exits.entry(code).or_default() += 1;
    // Every exit code is explained: by the fault, or by a run that ended
    // well (0). A run that fails for a reason the fault does not give
    // fails the round, with what it printed.
    assert!(
        code == 0 || fault.explains.contains(&code),
        "{cmd} under the fault `{}` ended with exit code {code}:\n{stderr}",
        fault.name
    );
    if let Some((cb, cb_err)) = &second {
        // The second runner steps back while the first holds the table
        // (4), or finds the migration the first has just finished: a table
        // already partitioned is refused (2).
        let finished_first = *cb == 2 && code == 0 && cb_err.contains("is already partitioned");
        assert!(
            ([0, 4].contains(cb) || finished_first) && !(*cb == 4 && code == 4),
            "the second {cmd} ended with exit code {cb} (the first with {code}):\n{cb_err}"
        );
    }
    if happened {
        t.count(fault.name);
        if fault.kill {
            t.kills += 1;
            let at = latest(db).await.map(|l| l.2).unwrap_or_else(|| "planned".into());
            *t.kills_by_phase.entry(format!("{} (after {at})", cmd)).or_default() += 1;
        } else {
            t.others += 1;
        }
    } else {
        t.missed += 1;
    }
    // Each other fault is tried until it happens (or thrice), so that a
    // run meets every kind.
    if !fault.kill {
        if happened || t.other_misses >= 2 {
            t.next_other += 1;
            t.other_misses = 0;
        } else {
            t.other_misses += 1;
        }
    }
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
    check_phase_objects(db).await;
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
    let kills: usize = env_or("CHAOS_KILLS", 4);
    let others: usize = env_or("CHAOS_FAULTS", 4);
    let rows: i64 = env_or("CHAOS_ROWS", 8000);
    println!(
        "chaos {}: seed {seed} (replay with CHAOS_SEED={seed}), {kills} kills and {others} other faults, {rows} rows",
        method.name()
    );
    // Committed means durable here: the application's commits must survive
    // an immediate shutdown.
    let cluster = Cluster::start_with_settings("-c synchronous_commit=on");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = Tally::default();
    let started = Instant::now();
    let done = |t: &Tally| t.kills >= kills && t.others >= others;
    while !done(&t) {
        let db = cluster.database().await;
        seed_rows(&db, rows).await;
        let dir = scratch();
        // Few retries, so that a held lock can exhaust them (exit 3); not
        // so few that the application's own traffic does: a swap that
        // locks the referenced table first meets the application's child
        // inserts, which lock it last, and steps back from each such cycle.
        let text = event_plan(
            200,
            "  pause: 2ms\nlocks:\n  lock_timeout: 100ms\n  statement_timeout: 20s\n  retries: 8\n",
        )
        .replace("method: move", &format!("method: {}", method.name()));
        let plan = db.plan_file(dir.path(), "chaos.yaml", &text);
        let plan = plan.to_str().unwrap().to_string();
        loop {
            let (a, b) = finished(&db, method).await;
            if (a && (b || !matches!(method, Method::Attach))) || done(&t) {
                break;
            }
            round(&cluster, &db, &plan, method, &mut rng, &mut t, (kills, others)).await;
        }
        finish(&db, &plan, method).await;
        check_phase_objects(&db).await;
        check_clean(&db).await;
        t.cycles += 1;
    }
    println!(
        "chaos {}: seed {seed}; {} kills and {} other faults in {} rounds over {} migrations ({} tried that did not happen): {}; kills by phase: {}; exit codes {:?}; {} application operations, 0 errors; {} rows compared with the oracle; {:.1}s",
        method.name(),
        t.kills,
        t.others,
        t.rounds,
        t.cycles,
        t.missed,
        t.faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        t.kills_by_phase
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

/// The statement timeout fires in the mover: a batch slower than it (an
/// index whose function is slow while a flag is set, for the tool's
/// sessions only) is split in halves until it fits, under the
/// application's writes; the run is killed while batches split, resumed,
/// and no row is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_over_the_statement_timeout_is_split_and_nothing_is_lost() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed_rows(&db, 8000).await;
    db.exec(
        "CREATE TABLE public.slow (active boolean NOT NULL); INSERT INTO slow VALUES (true);
         CREATE FUNCTION public.slow_for_the_tool(n int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
         BEGIN
           IF current_setting('application_name') LIKE 'migrate%' AND (SELECT active FROM public.slow) THEN
             PERFORM pg_sleep(0.004);
           END IF;
           RETURN n;
         END $$;
         CREATE INDEX workflow_events_slow ON public.workflow_events (public.slow_for_the_tool(n));",
    )
    .await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &event_plan(200, "  pause: 5ms\nlocks:\n  statement_timeout: 300ms\n"),
    );
    let plan = plan.to_str().unwrap().to_string();
    let workload = Workload::start_with(&db, 3, 7, Features::default()).await;
    let mut run = Run::start(&db, &["apply", &plan], &[]);
    let splits = || async {
        // Nothing before the control schema exists.
        db.client()
            .await
            .query_one(
                "SELECT count(*) FROM repartition.events WHERE kind = 'batch split'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    // Both workers of the main pass split theirs: the kill waits for a
    // split batch to have committed too.
    let committed = || async {
        db.client()
            .await
            .query_one("SELECT count(*) FROM repartition.batches", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let start = Instant::now();
    while splits().await < 3 || committed().await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no batch was split, or none committed after splitting: {:?}",
            latest(&db).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, killed) = run.kill_after(Duration::from_millis(10), "apply").await;
    assert!(killed && code == -9, "exit {code}:\n{}", run.stderr().await);
    let batches_before = db.scalar_i64("SELECT count(*) FROM repartition.batches").await;
    db.exec("UPDATE slow SET active = false").await;
    db.migrate(&["resume", &plan]).await.ok();
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    let rows = compare(&db, &report.oracle).await;
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("p"));
    check_phase_objects(&db).await;
    println!(
        "{} batch splits on the statement timeout, {batches_before} batches before the kill, {rows} rows compared",
        splits().await
    );
}
