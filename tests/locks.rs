//! The tool yields to the application: a session holding the table makes
//! the swap wait briefly, step back and retry, and when its tries run out
//! the error names the session in the way; the application never waits
//! on the tool longer than the tool's lock timeout.

mod common;
use common::*;
use std::time::{Duration, Instant};

async fn moved_table(lock_extra: &str) -> (Cluster, Db, tempfile::TempDir, String) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 1000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(300, lock_extra));
    let plan = plan.to_str().unwrap().to_string();
    db.migrate(&["apply", &plan, "--until", "move"]).await.ok();
    (cluster, db, dir, plan)
}

/// Inserts through the table's name in a loop; returns the slowest insert.
fn inserter(
    db: &Db,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(Duration, usize, Vec<String>)> {
    let db = db.clone();
    tokio::spawn(async move {
        let c = db.client().await;
        let (mut worst, mut n, mut errors) = (Duration::ZERO, 0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            if let Err(e) = c
                .execute("INSERT INTO workflow_events (run_id, type) VALUES (1, 'probe')", &[])
                .await
            {
                errors.push(e.to_string());
            }
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (worst, n, errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_steps_back_until_the_blocker_is_gone() {
    let (_cluster, db, _dir, plan) = moved_table("locks:\n  lock_timeout: 200ms\n  retries: 50\n").await;
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM workflow_events;")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = inserter(&db, stop.clone());
    let swap = tokio::spawn({
        let db = db.clone();
        let plan = plan.clone();
        async move { db.migrate(&["swap", &plan]).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let run = swap.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, n, errors) = probe.await.unwrap();
    run.ok();
    assert!(
        run.stderr.contains("lock not available; stepping back"),
        "{}",
        run.stderr
    );
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    println!("swap behind a blocker: {n} inserts meanwhile, slowest {worst:?}");
    assert!(
        worst < Duration::from_millis(1000),
        "an insert waited {worst:?} behind the tool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_names_the_blocker_when_tries_run_out() {
    let (_cluster, db, _dir, plan) = moved_table("locks:\n  lock_timeout: 100ms\n  retries: 3\n").await;
    let blocker = db.client().await;
    let pid: i32 = blocker.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM workflow_events WHERE type = 'blocker';")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = inserter(&db, stop.clone());
    let run = db.migrate(&["swap", &plan]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, _, errors) = probe.await.unwrap();
    assert_eq!(run.code, 3, "a lock timeout has its own exit code: {}", run.stderr);
    let last = run.stderr.lines().last().unwrap();
    assert!(last.contains("swap could not get its locks in 4 tries"), "{last}");
    assert!(last.contains(&format!("pid {pid}")), "{last}");
    assert!(last.contains("idle in transaction"), "{last}");
    assert!(last.contains("WHERE type = 'blocker'"), "{last}");
    assert!(errors.is_empty(), "the application saw errors: {errors:?}");
    assert!(
        worst < Duration::from_millis(1000),
        "an insert waited {worst:?} behind the tool"
    );
    // The application's transaction is unharmed, and the migration resumes.
    blocker.batch_execute("COMMIT").await.unwrap();
    let status = db.migrate(&["status", &plan]).await;
    assert!(
        status.stdout.contains("Last error: swap could not get its locks"),
        "{}",
        status.stdout
    );
    db.migrate(&["swap", &plan]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_waits_for_a_row_the_application_holds() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 2000).await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &event_plan(300, "locks:\n  lock_timeout: 100ms\n  retries: 100\n"),
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "route"]).await.ok();
    // The application holds a row of the first batch (and its run) in an
    // open transaction.
    let app = db.client().await;
    app.batch_execute("BEGIN; UPDATE workflow_events SET n = 99 WHERE id = (SELECT min(id) FROM workflow_events);")
        .await
        .unwrap();
    let mover = tokio::spawn({
        let db = db.clone();
        let plan = plan.to_string();
        async move { db.migrate(&["resume", &plan, "--until", "move"]).await }
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The application goes on in its transaction and commits without error.
    app.batch_execute("UPDATE workflow_events SET n = 98 WHERE id = (SELECT min(id) FROM workflow_events); COMMIT;")
        .await
        .unwrap();
    let run = mover.await.unwrap();
    run.ok();
    assert!(run.stderr.contains("stepping back"), "{}", run.stderr);
    assert_eq!(
        db.scalar_i64("SELECT n::bigint FROM workflow_events WHERE id = (SELECT min(id) FROM workflow_events)")
            .await,
        98
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM ONLY workflow_events__orig").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminate_blockers_only_when_asked() {
    let (_cluster, db, _dir, plan) = moved_table("locks:\n  lock_timeout: 100ms\n  retries: 4\n").await;
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM workflow_events;")
        .await
        .unwrap();
    let run = db.migrate(&["swap", &plan]).await;
    assert_eq!(
        run.code, 3,
        "without the flag the tool waits and gives up: {}",
        run.stderr
    );
    assert!(
        blocker.execute("SELECT 1", &[]).await.is_ok(),
        "the blocker was harmed without the flag"
    );
    let run = db.migrate(&["--terminate-blockers", "swap", &plan]).await;
    run.ok();
    assert!(
        run.stderr.contains("acting on the sessions in the way"),
        "{}",
        run.stderr
    );
    assert!(
        blocker.execute("SELECT 1", &[]).await.is_err(),
        "the blocker's session should be gone"
    );
}
