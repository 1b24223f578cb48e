//! `abort` from every phase before the swap leaves the original table as
//! it was: same objects, same names, every row (including rows written
//! through the view meanwhile).

mod common;
use common::*;

/// Runs the migration up to a point, writes through the view, aborts, and
/// checks that the database is as before plus those writes.
async fn abort_from(
    until: &[&str],
    failpoint: Option<&str>,
    abort_failpoint: Option<&str>,
    extra_setup: &str,
    plan_extra: &str,
) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 2000).await;
    db.exec("ALTER TABLE workflow_events SET (fillfactor = 90)").await;
    if !extra_setup.is_empty() {
        db.exec(extra_setup).await;
    }
    let objects = db.objects().await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(150, plan_extra));
    let plan = plan.to_str().unwrap();
    let mut args = vec!["apply", plan];
    args.extend_from_slice(until);
    match failpoint {
        Some(fp) => assert_eq!(db.migrate_env(&args, &[("MIGRATE_FAILPOINT", fp)]).await.code, 86),
        None => {
            db.migrate(&args).await.ok();
        }
    }
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO workflow_events (run_id, type) VALUES (3, 'during'), (4, 'during');
         UPDATE workflow_events SET n = 42 WHERE id IN (10, 20, 30);
         DELETE FROM workflow_events WHERE id = 40;",
    )
    .await
    .unwrap();
    let expected = all_events(&db).await;
    if let Some(fp) = abort_failpoint {
        let run = db.migrate_env(&["abort", plan], &[("MIGRATE_FAILPOINT", fp)]).await;
        assert_eq!(run.code, 86, "{}", run.stderr);
        assert_eq!(all_events(&db).await, expected, "rows changed by the interrupted abort");
        let status = db.migrate(&["status", plan]).await;
        assert!(status.stdout.contains("aborting"), "{}", status.stdout);
        let resumed = db.migrate(&["resume", plan]).await;
        assert_eq!(resumed.code, 2, "resume must not continue an abort");
    }
    let run = db.migrate(&["abort", plan]).await;
    run.ok();
    assert!(run.stderr.contains("migration aborted"), "{}", run.stderr);
    assert_eq!(all_events(&db).await, expected);
    assert_eq!(db.objects().await, objects, "abort left the database different");
    assert_eq!(
        db.scalar_str("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.workflow_events'))")
            .await
            .as_deref(),
        Some("r")
    );
    assert_eq!(
        db.scalar_str("SELECT state FROM repartition.migrations")
            .await
            .as_deref(),
        Some("aborted")
    );
    // A new migration can start afterwards, and finishes.
    db.migrate(&["apply", plan]).await.ok();
    assert_eq!(all_events(&db).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_prepare() {
    abort_from(&["--until", "prepare"], None, None, "", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_route() {
    abort_from(&["--until", "route"], None, None, "", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_in_the_middle_of_the_move() {
    abort_from(&[], Some("batch-forward:after-commit@5"), None, "", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_move() {
    abort_from(&["--until", "move"], None, None, "", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_interrupted_while_moving_back() {
    abort_from(&["--until", "move"], None, Some("batch-back:before-commit@3"), "", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_interrupted_at_unroute() {
    abort_from(
        &["--until", "move"],
        None,
        Some("abort (unroute):before-commit"),
        "",
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_restores_dropped_incoming_foreign_keys() {
    abort_from(
        &["--until", "route"],
        None,
        None,
        "CREATE TABLE event_refs (event_id bigint REFERENCES workflow_events (id)); INSERT INTO event_refs VALUES (1), (2);",
        "foreign_keys:\n  incoming: drop\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_the_swap_is_refused() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(100, ""));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "swap"]).await.ok();
    let run = db.migrate(&["abort", plan]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("already swapped"), "{}", run.stderr);
    db.migrate(&["resume", plan]).await.ok();
}
