//! The application keeps writing through the table's name for the whole
//! migration (inserts with RETURNING, prepared statements, updates of the
//! partition key, deletes, cascading deletes of parent rows, transactions
//! over both tables) while the migrator is killed with SIGKILL mid-move and
//! resumed. An oracle of what committed is compared with every row after.

mod common;
use common::workload::{compare, Workload};
use common::*;
use std::time::{Duration, Instant};

async fn rows_moved(db: &Db) -> i64 {
    let c = db.client().await;
    match c
        .query_one(
            "SELECT coalesce(sum(rows_moved), 0)::bigint FROM repartition.migrations",
            &[],
        )
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => 0,
    }
}

async fn wait_for_rows(db: &Db, n: i64, limit: Duration) {
    let start = Instant::now();
    while rows_moved(db).await < n {
        assert!(start.elapsed() < limit, "the move did not reach {n} rows in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn figures(label: &str, report: &common::workload::Report, compared: usize, elapsed: Duration) {
    println!(
        "{label}: {} operations by the application in {:.1}s, {} errors seen by clients, {} rows compared with the oracle",
        report.total_ops(),
        elapsed.as_secs_f64(),
        report.errors.len(),
        compared
    );
    for (op, n) in &report.ops {
        println!("  {op}: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_workload_through_kill_and_resume() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 240, 30_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(150, "  pause: 3ms\n"));
    let plan = plan.to_str().unwrap();
    let started = Instant::now();
    let workload = Workload::start(&db, 4, 7).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The first run is killed with SIGKILL in the middle of the move.
    let mut first = db.command(&["apply", plan], &[]).spawn().unwrap();
    wait_for_rows(&db, 8_000, Duration::from_secs(120)).await;
    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success());
    // Free space in pages the mover has passed becomes known to the free
    // space map: the application's updates of rows not yet moved now land
    // behind the cursor, and only the sweeps and the swap can find them.
    // Rows grown through the view (in a column the oracle does not track,
    // while the workers update the others) no longer fit their pages.
    db.exec("VACUUM public.workflow_events__orig").await;
    let cursor = db.scalar_i64("SELECT cursor_block FROM repartition.migrations").await;
    // One row per statement, as an application would: a statement that
    // held thousands of row locks at once could deadlock with the
    // workload's cascading deletes, whose order no plan promises.
    let c = db.client().await;
    let ahead: Vec<i64> = c
        .query(
            &format!("SELECT id FROM ONLY public.workflow_events__orig WHERE ctid >= '({cursor},0)'::tid LIMIT 3000"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let grow = c
        .prepare("UPDATE public.workflow_events SET note = json_build_object('pad', repeat('y', 300)) WHERE id = $1")
        .await
        .unwrap();
    for id in ahead {
        c.execute(&grow, &[&id]).await.unwrap();
    }
    let behind: i64 = db
        .scalar_i64(&format!(
            "SELECT count(*) FROM ONLY public.workflow_events__orig WHERE ctid < '({cursor},0)'::tid"
        ))
        .await;
    assert!(
        behind > 100,
        "the test meant to put rows behind the cursor, but put {behind}"
    );
    println!("rows updated behind the mover's cursor while it was down: {behind}");

    // Resumed to the end while the application goes on.
    let run = db.migrate(&["resume", plan]).await;
    run.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "the application saw {} errors, first: {:#?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(&db, &report.oracle).await;
    figures("kill and resume under load", &report, compared, started.elapsed());
    assert!(
        report.total_ops() > 1000,
        "the workload ran too little to mean anything"
    );
    assert!(report.ops.get("delete run (cascade)").copied().unwrap_or(0) > 0);
    assert_eq!(
        db.scalar_str("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.workflow_events'))")
            .await
            .as_deref(),
        Some("p")
    );
    assert_eq!(
        db.scalar_str("SELECT state FROM repartition.migrations")
            .await
            .as_deref(),
        Some("done")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_workload_through_abort() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 160, 12_000).await;
    let objects = db.objects().await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(150, "  pause: 2ms\n"));
    let plan = plan.to_str().unwrap();
    let started = Instant::now();
    let workload = Workload::start(&db, 4, 11).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.migrate(&["apply", plan, "--until", "move"]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.migrate(&["abort", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "the application saw {} errors, first: {:#?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(&db, &report.oracle).await;
    figures("move then abort under load", &report, compared, started.elapsed());
    assert_eq!(db.objects().await, objects);
}

/// Two workers move disjoint page ranges of the main pass at once, with
/// move and with sync, under the application's writes; the migrator is
/// killed mid-pass (with the second worker's range partly done) and
/// resumed; every row is compared with the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_under_load_through_kill_and_resume() {
    let cluster = Cluster::start();
    for method in ["move", "sync"] {
        let db = cluster.database().await;
        seed(&db, 200, 30_000).await;
        let dir = scratch();
        let plan = db.plan_file(
            dir.path(),
            "p.yaml",
            &event_plan(200, "  pause: 2ms\n  workers: 2\n").replace("method: move", &format!("method: {method}")),
        );
        let plan = plan.to_str().unwrap();
        let started = Instant::now();
        let workload = Workload::start(&db, 3, 19).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let run = db
            .migrate_env(
                &["apply", plan],
                &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@30")],
            )
            .await;
        assert_eq!(run.code, 86, "{method}: {}", run.stderr);
        // Both workers had moved batches: ranges far apart interleave.
        let (first_half_last, second_half_first) = {
            let c = db.client().await;
            let half: i64 = c
                .query_one("SELECT (max(to_block) / 2)::int8 FROM repartition.batches", &[])
                .await
                .unwrap()
                .get(0);
            let r = c
                .query_one(
                    "SELECT max(batch_no) FILTER (WHERE to_block <= $1), min(batch_no) FILTER (WHERE from_block >= $1) FROM repartition.batches",
                    &[&half],
                )
                .await
                .unwrap();
            (
                r.get::<_, Option<i64>>(0).unwrap_or(0),
                r.get::<_, Option<i64>>(1).unwrap_or(i64::MAX),
            )
        };
        assert!(
            second_half_first < first_half_last,
            "{method}: the second worker's range did not move alongside the first ({second_half_first} vs {first_half_last})"
        );
        db.migrate(&["resume", plan]).await.ok();
        if method == "sync" {
            db.migrate(&["cleanup", plan]).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = workload.stop().await;
        assert!(
            report.errors.is_empty(),
            "{method}: the application saw {} errors, first: {:#?}",
            report.errors.len(),
            &report.errors[..report.errors.len().min(8)]
        );
        let compared = compare(&db, &report.oracle).await;
        figures(
            &format!("two workers, {method}, kill and resume"),
            &report,
            compared,
            started.elapsed(),
        );
        assert_eq!(
            db.scalar_str("SELECT state FROM repartition.migrations")
                .await
                .as_deref(),
            Some("done"),
            "{method}"
        );
    }
}
