//! Readers that lock rows, and read-modify-write updates, during a
//! migration. PostgreSQL runs `SELECT … FOR UPDATE` on a `UNION ALL` view
//! without locking a row; the move method's view is built so that such a
//! statement fails instead. A job queue whose workers claim with
//! `FOR UPDATE SKIP LOCKED` is the judge: under sync no job is ever taken
//! twice; under move `plan` and `apply` refuse while pg_stat_statements
//! shows the claims, and once the plan accepts them the claims fail through
//! the view rather than hand one job to two workers. A read-modify-write
//! UPDATE arriving at the view pauses the move until the operator decides.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the claiming workers did.
#[derive(Default, Debug)]
struct Claims {
    /// Job id → the workers that claimed it (more than one is the bug).
    by_job: BTreeMap<i64, Vec<usize>>,
    /// Claims that failed, by the error's message.
    failed: BTreeMap<String, u64>,
}

impl Claims {
    fn taken(&self) -> usize {
        self.by_job.values().map(Vec::len).sum()
    }
    fn twice(&self) -> usize {
        self.by_job.values().filter(|w| w.len() > 1).count()
    }
}

/// `workers` connections claiming one job at a time through the table's
/// name until `stop`: the oldest unclaimed row, locked with FOR UPDATE SKIP
/// LOCKED, marked with the worker's number in the same transaction. The
/// claim holds its lock a moment, as a worker does while it starts the job.
async fn claim_jobs(db: &Db, workers: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Claims> {
    let mut clients = Vec::new();
    for _ in 0..workers {
        clients.push(db.client().await);
    }
    tokio::spawn(async move {
        let mut handles = Vec::new();
        for (w, c) in clients.into_iter().enumerate() {
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                let mut mine = Claims::default();
                while !stop.load(Ordering::Relaxed) {
                    let claim = async {
                        c.batch_execute("BEGIN").await?;
                        let row = c
                            .query_opt(
                                "SELECT id FROM public.workflow_events WHERE claimed_by IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                                &[],
                            )
                            .await?;
                        let Some(row) = row else {
                            c.batch_execute("ROLLBACK").await?;
                            return Ok::<_, tokio_postgres::Error>(None);
                        };
                        let id: i64 = row.get(0);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        c.execute(
                            "UPDATE public.workflow_events SET claimed_by = $2 WHERE id = $1",
                            &[&id, &(w as i32)],
                        )
                        .await?;
                        c.batch_execute("COMMIT").await?;
                        Ok(Some(id))
                    }
                    .await;
                    match claim {
                        Ok(Some(id)) => mine.by_job.entry(id).or_default().push(w),
                        Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Err(e) => {
                            let _ = c.batch_execute("ROLLBACK").await;
                            *mine.failed.entry(workload::db_message(&e)).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                mine
            }));
        }
        let mut all = Claims::default();
        for h in handles {
            let c = h.await.unwrap();
            for (job, ws) in c.by_job {
                all.by_job.entry(job).or_default().extend(ws);
            }
            for (e, n) in c.failed {
                *all.failed.entry(e).or_default() += n;
            }
        }
        all
    })
}

/// The events table as a job queue: a nullable claim column.
async fn seed_queue(db: &Db, runs: i64, events: i64) {
    seed(db, runs, events).await;
    db.exec("ALTER TABLE workflow_events ADD COLUMN claimed_by integer")
        .await;
}

/// The claims through the table's name, the claims the table records, and
/// no job taken twice.
async fn judge(db: &Db, claims: &Claims, what: &str) {
    println!(
        "{what}: {} claims of {} jobs, {} taken twice, failed claims {:?}",
        claims.taken(),
        claims.by_job.len(),
        claims.twice(),
        claims.failed
    );
    assert_eq!(claims.twice(), 0, "{what}: a job was handed to two workers");
    // Every job still in the table is marked by the one worker that
    // claimed it, and none is marked that no worker claimed.
    let marked: BTreeMap<i64, i32> = db
        .client()
        .await
        .query(
            "SELECT id, claimed_by FROM public.workflow_events WHERE claimed_by IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (id, w) in &marked {
        assert_eq!(
            claims.by_job.get(id).map(|ws| ws[0] as i32),
            Some(*w),
            "{what}: job {id} is marked by worker {w}"
        );
    }
    assert!(!marked.is_empty(), "{what}: no job is marked");
}

/// Sync keeps the application on its own table: a job queue through it,
/// killed and resumed, never hands a job to two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_queue_under_sync_takes_every_job_once() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed_queue(&db, 40, 20_000).await;
    let dir = scratch();
    let yaml = event_plan(500, "").replace("method: move", "method: sync");
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let claimers = claim_jobs(&db, 4, stop.clone()).await;
    let workload = Workload::start_with(&db, 2, 31, Features::for_method("sync")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = db
        .migrate_env(
            &["apply", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@3")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let claims = claimers.await.unwrap();
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{:#?}",
        &report.errors[..report.errors.len().min(8)]
    );
    compare(&db, &report.oracle).await;
    assert!(claims.taken() > 100, "too few claims to judge: {claims:?}");
    assert!(
        claims.failed.is_empty(),
        "claims failed under sync: {:?}",
        claims.failed
    );
    judge(&db, &claims, "sync").await;
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("p"));
}

/// Move: refused while pg_stat_statements shows the claims; accepted, the
/// claims fail through the view and no job is taken twice; a
/// read-modify-write UPDATE pauses the move until `migrate continue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_queue_under_move_is_refused_or_fails_loudly() {
    let cluster = Cluster::start_with_settings("-c shared_preload_libraries=pg_stat_statements");
    let db = cluster.database().await;
    seed_queue(&db, 40, 20_000).await;
    db.exec("CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset();")
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let claimers = claim_jobs(&db, 3, stop.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = scratch();
    let hooked = dir.path().join("hook.txt");
    // Batches 100 ms apart keep the view up for seconds on two workers:
    // the watch looks every 2 s.
    let hooks = format!(
        "  pause: 100ms\nhooks:\n  on_failure: 'echo \"$MIGRATE_EVENT: $MIGRATE_ERROR\" >> {}'\n",
        hooked.display()
    );
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(200, &hooks));
    let plan = plan.to_str().unwrap();

    // Refused by plan and by apply, naming the claim and its code.
    let shown = db.migrate(&["plan", plan]).await;
    assert_eq!(shown.code, 2, "{}\n{}", shown.stdout, shown.stderr);
    assert!(
        shown.stderr.contains("FOR UPDATE SKIP LOCKED") && shown.stderr.contains("[view-locking-reads]"),
        "{}",
        shown.stderr
    );
    let run = db.migrate(&["apply", plan]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("r"));

    // Accepted: the move runs; the claims through the view fail.
    let accepted = db.plan_file(
        dir.path(),
        "a.yaml",
        &format!("{}accept: [view-locking-reads]\n", event_plan(200, &hooks)),
    );
    let accepted = accepted.to_str().unwrap();
    let shown = db.migrate(&["plan", accepted]).await;
    shown.ok();
    assert!(shown.stdout.contains("accepted by the plan"), "{}", shown.stdout);
    let mut apply = db.command(&["apply", accepted], &[]).spawn().unwrap();
    // The view stands: a claim fails rather than lock nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db.relkind("public.workflow_events").await.as_deref() != Some("v") {
        assert!(tokio::time::Instant::now() < deadline, "the view never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = db.client().await;
    let e = c
        .query(
            "SELECT id FROM public.workflow_events ORDER BY id LIMIT 1 FOR UPDATE",
            &[],
        )
        .await
        .expect_err("FOR UPDATE through the view must fail");
    assert!(
        workload::db_message(&e).contains("FOR UPDATE is not allowed"),
        "{}",
        workload::db_message(&e)
    );
    assert_eq!(
        c.query("SELECT count(*) FROM public.workflow_events", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    // A read-modify-write UPDATE through the view: the move pauses itself.
    let rmw = c
        .prepare("UPDATE public.workflow_events SET n = n + 1 WHERE id = $1")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        c.execute(&rmw, &[&1i64]).await.unwrap();
        let paused = db
            .scalar_str("SELECT paused_reason FROM repartition.migrations WHERE state = 'active'")
            .await;
        if let Some(why) = paused {
            assert!(
                why.contains("SET n = n +") && why.contains("[view-read-modify-write]"),
                "{why}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the move never paused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = db.migrate(&["status", accepted]).await;
    assert!(status.stdout.contains("Paused by itself"), "{}", status.stdout);
    let moved = db
        .scalar_i64("SELECT rows_moved FROM repartition.migrations WHERE state = 'active'")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        db.scalar_i64("SELECT rows_moved FROM repartition.migrations WHERE state = 'active'")
            .await,
        moved,
        "the move went on while paused"
    );
    let hook = std::fs::read_to_string(&hooked).unwrap_or_default();
    assert!(
        hook.contains("paused: ") && hook.contains("view-read-modify-write"),
        "{hook}"
    );
    // The operator goes on; the move ends with the swap.
    db.migrate(&["continue", accepted]).await.ok();
    let done = tokio::time::timeout(Duration::from_secs(300), apply.wait())
        .await
        .expect("apply finishes after continue")
        .unwrap();
    assert!(done.success());
    stop.store(true, Ordering::Relaxed);
    let claims = claimers.await.unwrap();
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("p"));
    let failed_through_view: u64 = claims
        .failed
        .iter()
        .filter(|(e, _)| e.contains("FOR UPDATE is not allowed"))
        .map(|(_, n)| n)
        .sum();
    assert!(failed_through_view > 0, "no claim ran through the view: {claims:?}");
    judge(&db, &claims, "move").await;
}
