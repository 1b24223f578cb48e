//! The process dies inside every phase (mid-transaction and right after a
//! commit, mid-batch included); the table stays whole and `resume` ends
//! the migration with every row as it was.

mod common;
use common::*;

async fn crash_then_resume(point: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 25, 2500).await;
    let before = all_events(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(200, ""));
    let plan = plan.to_str().unwrap();
    let run = db.migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)]).await;
    assert_eq!(
        run.code, 86,
        "{point}: the failpoint should end the process:\n{}",
        run.stderr
    );
    // Whatever was committed, the table's name serves every row.
    assert_eq!(all_events(&db).await, before, "{point}: rows changed after the crash");
    let status = db.migrate(&["status", plan]).await;
    status.ok();
    assert!(
        status.stdout.contains("Runner: none attached"),
        "{point}: {}",
        status.stdout
    );
    let run = db.migrate(&["resume", plan]).await;
    run.ok();
    assert_eq!(
        all_events(&db).await,
        before,
        "{point}: rows changed by the resumed run"
    );
    assert_eq!(
        db.scalar_str("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.workflow_events'))")
            .await
            .as_deref(),
        Some("p"),
        "{point}"
    );
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "{point}: left behind: {left:?}");
    assert_eq!(
        db.scalar_str("SELECT state || '/' || phase FROM repartition.migrations")
            .await
            .as_deref(),
        Some("done/finished")
    );
}

macro_rules! crash_tests {
    ($($name:ident => $point:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crash_then_resume($point).await;
        }
    )*};
}

crash_tests! {
    prepare_before_commit => "prepare:before-commit",
    prepare_after_commit => "prepare:after-commit",
    route_before_commit => "route:before-commit",
    route_after_commit => "route:after-commit",
    first_batch_before_commit => "batch-forward:before-commit",
    mid_batch => "batch-forward:before-commit@4",
    between_batches => "batch-forward:after-commit@6",
    before_sweep => "move:before-sweep",
    last_batches => "batch-forward:before-commit@12",
    swap_before_commit => "swap:before-commit",
    swap_after_commit => "swap:after-commit",
    finish_before_commit => "finish:before-commit",
}
